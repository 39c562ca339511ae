// One event (`GET /events/{id}`): its attributes, its lineage drawn as a graph (the events that
// caused it, each delivery with its attempts, the events each delivery published, down the
// chain; every event in it a link), its deliveries with every attempt, and the event as stored.

import { json } from './api.js';
import { h, svg, fill, link, functionPath, pretty } from './dom.js';
import { publisher, eventPath } from './events.js';

/** How far the graph goes up (causes) and how many events it holds at most. */
const MAX_UP = 16;
const MAX_EVENTS = 60;

const NODE_W = 168;
const NODE_H = 48;
const COL_GAP = 34;
const ROW_GAP = 14;

/** The event `id`, or a stand-in when it is gone (pruned) or cannot be read. */
async function fetchEvent(id) {
  try {
    return await json(eventPath(id));
  } catch (error) {
    return { missing: true, id, error: error.message };
  }
}

function idOf(info) {
  return info.missing ? info.id : info.event?.id;
}

/** The lineage around `info`: its causes up to MAX_UP, then everything down from the top. */
async function lineage(info) {
  const known = new Map([[idOf(info), info]]);
  let top = info;
  for (let up = 0; up < MAX_UP && top.caused_by && !known.has(top.caused_by); up += 1) {
    const cause = await fetchEvent(top.caused_by);
    known.set(top.caused_by, cause);
    if (cause.missing) {
      top = cause;
      break;
    }
    top = cause;
  }
  // Down the chain, breadth first, a level at a time.
  let level = [top];
  const walked = new Set();
  let truncated = false;
  while (level.length) {
    level.forEach((e) => walked.add(idOf(e)));
    const ids = level.flatMap((e) => e.caused || []).filter((id) => !walked.has(id));
    const wanted = ids.filter((id) => !known.has(id));
    const room = MAX_EVENTS - known.size;
    if (wanted.length > room) truncated = true;
    const fetched = await Promise.all(wanted.slice(0, Math.max(0, room)).map(fetchEvent));
    fetched.forEach((e, i) => known.set(wanted[i], e));
    level = ids.map((id) => known.get(id)).filter((e) => e && !e.missing);
  }
  return { top, known, truncated };
}

function clip(text, n = 22) {
  const s = String(text ?? '');
  return s.length > n ? s.slice(0, n - 1) + '…' : s;
}

/**
 * Lays the lineage out as a tree from left to right: event, its deliveries, the events each
 * delivery published (an event published by a function that is none of its cause's deliveries
 * hangs on the event itself). Returns nodes {kind, x, y, ...} and edges [from, to].
 */
function layout({ top, known }, current) {
  const nodes = [];
  const edges = [];
  let row = 0;
  const place = (node, depth, children) => {
    node.x = depth * (NODE_W + COL_GAP);
    nodes.push(node);
    if (!children.length) {
      node.y = row * (NODE_H + ROW_GAP);
      row += 1;
      return node;
    }
    const placed = children.map(([child, grandchildren, d]) => place(child, d, grandchildren));
    node.y = (placed[0].y + placed[placed.length - 1].y) / 2;
    for (const child of placed) edges.push([node, child]);
    return node;
  };
  const eventTree = (info, depth, seen) => {
    const id = idOf(info);
    const node = { kind: 'event', id, info, current: id === current };
    if (info.missing || seen.has(id)) return [node, [], depth];
    seen.add(id);
    const caused = (info.caused || []).map((c) => known.get(c)).filter(Boolean);
    const byFunction = new Map();
    const loose = [];
    for (const child of caused) {
      const fn = child.published_by?.kind === 'function' ? child.published_by.function : null;
      if (fn && (info.deliveries || []).some((d) => d.function === fn)) {
        if (!byFunction.has(fn)) byFunction.set(fn, []);
        byFunction.get(fn).push(child);
      } else {
        loose.push(child);
      }
    }
    const more = (info.caused || []).filter((c) => !known.has(c)).length;
    const children = (info.deliveries || []).map((d) => [
      { kind: 'delivery', delivery: d, event: id },
      (byFunction.get(d.function) || []).map((child) => eventTree(child, depth + 2, seen)),
      depth + 1,
    ]);
    for (const child of loose) children.push(eventTree(child, depth + 2, seen));
    if (more) children.push([{ kind: 'more', count: more }, [], depth + 1]);
    return [node, children, depth];
  };
  const [root, children] = eventTree(top, 0, new Set());
  place(root, 0, children);
  return { nodes, edges };
}

function attemptsText(d) {
  const n = (d.attempts || []).length;
  const last = (d.attempts || [])[n - 1];
  return `${n} attempt${n === 1 ? '' : 's'}${last && last.status !== 200 ? `, last ${last.status}` : ''}`;
}

function drawNode(node) {
  const g = [];
  if (node.kind === 'event') {
    const info = node.info;
    const type = info.missing ? '(gone)' : info.event?.type;
    const title = info.missing ? `${node.id}: ${info.error}` : `${type}\n${node.id}`;
    const box = svg('g', { class: `node node-event${node.current ? ' node-current' : ''}${info.missing ? ' node-missing' : ''}`, dataset: { event: node.id } },
      svg('title', {}, title),
      svg('rect', { x: node.x, y: node.y, width: NODE_W, height: NODE_H, rx: 6 }),
      svg('text', { x: node.x + 10, y: node.y + 19, class: 'node-title' }, clip(type)),
      svg('text', { x: node.x + 10, y: node.y + 37, class: 'node-sub' }, clip(node.id, 23)));
    g.push(node.current ? box : svg('a', { href: '#' + eventPath(node.id), class: 'node-link', 'aria-label': `Event ${type} ${node.id}` }, box));
  } else if (node.kind === 'delivery') {
    const d = node.delivery;
    const lines = (d.attempts || []).map((a) => `#${a.attempt} ${a.time} ${a.status}${a.error ? ` ${a.error}` : ''}`);
    const box = svg('g', { class: `node node-delivery node-${d.state}`, dataset: { delivery: `${node.event}/${d.function}` } },
      svg('title', {}, `${d.function}: ${d.state}\n${lines.join('\n')}`),
      svg('rect', { x: node.x, y: node.y, width: NODE_W, height: NODE_H, rx: 20 }),
      svg('text', { x: node.x + 14, y: node.y + 19, class: 'node-title' }, clip(d.function, 14), ' ', svg('tspan', { class: 'node-state' }, d.state)),
      svg('text', { x: node.x + 14, y: node.y + 37, class: 'node-sub' }, attemptsText(d)));
    g.push(svg('a', { href: '#' + functionPath(d.function), class: 'node-link', 'aria-label': `Delivery to ${d.function}: ${d.state}, ${attemptsText(d)}` }, box));
  } else {
    g.push(svg('g', { class: 'node node-more' },
      svg('rect', { x: node.x, y: node.y, width: NODE_W, height: NODE_H, rx: 6 }),
      svg('text', { x: node.x + 10, y: node.y + 29, class: 'node-sub' }, `${node.count} more not shown`)));
  }
  return g;
}

function graph(tree, current) {
  const { nodes, edges } = layout(tree, current);
  const width = Math.max(...nodes.map((n) => n.x)) + NODE_W + 2;
  const height = Math.max(...nodes.map((n) => n.y)) + NODE_H + 2;
  const paths = edges.map(([a, b]) => {
    const x1 = a.x + NODE_W;
    const y1 = a.y + NODE_H / 2;
    const x2 = b.x;
    const y2 = b.y + NODE_H / 2;
    const mid = (x1 + x2) / 2;
    return svg('path', { class: 'edge', d: `M${x1},${y1} C${mid},${y1} ${mid},${y2} ${x2 - 6},${y2}`, 'marker-end': 'url(#arrow)' });
  });
  return svg('svg', { class: 'lineage', id: 'lineage', width, height, viewBox: `-1 -1 ${width} ${height}`, role: 'group', 'aria-label': 'Lineage' },
    svg('defs', {}, svg('marker', { id: 'arrow', viewBox: '0 0 10 10', refX: 9, refY: 5, markerWidth: 7, markerHeight: 7, orient: 'auto-start-reverse' },
      svg('path', { d: 'M0,0 L10,5 L0,10 z', class: 'arrow' }))),
    paths, nodes.map(drawNode));
}

function deliveriesTable(deliveries) {
  if (!deliveries.length) return h('p', { class: 'muted' }, 'No function took it.');
  return h('table', { class: 'grid', id: 'deliveries' },
    h('thead', {}, h('tr', {}, ['Function', 'State', '#', 'Time', 'Status', 'Error'].map((c) => h('th', { scope: 'col' }, c)))),
    h('tbody', {}, deliveries.flatMap((d) => {
      const attempts = d.attempts && d.attempts.length ? d.attempts : [null];
      return attempts.map((a, i) => h('tr', { dataset: { function: d.function } },
        i === 0 ? h('td', { rowspan: attempts.length }, link(functionPath(d.function), d.function)) : null,
        i === 0 ? h('td', { rowspan: attempts.length }, h('span', { class: `chip chip-${d.state}` }, d.state),
          d.next_attempt ? h('div', { class: 'small muted' }, `next at ${d.next_attempt}`) : null,
          d.dead_letter ? h('div', { class: 'small' }, link(`/dead-letters?function=${encodeURIComponent(d.function)}`, 'dead letter')) : null) : null,
        h('td', { class: 'num' }, a ? a.attempt : '–'),
        h('td', { class: 'nowrap' }, a ? a.time : ''),
        h('td', { class: 'num' }, a ? a.status : ''),
        h('td', { class: 'wrap' }, a ? a.error : '')));
    })));
}

export function mount(main, [id], ctx) {
  ctx.title(`Event ${id}`);
  const body = h('div', {}, h('p', { class: 'muted' }, 'Loading…'));
  fill(main,
    h('p', { class: 'crumbs' }, link('/events', 'Events'), ' / ', id),
    h('div', { class: 'page-head' }, h('h1', {}, 'Event ', h('code', {}, id))),
    body);
  let stopped = false;
  json(eventPath(id)).then(async (info) => {
    const event = info.event || {};
    const graphBox = h('div', { class: 'graph-box' }, h('p', { class: 'muted' }, 'Following the chain…'));
    fill(body,
      h('dl', { class: 'defs', id: 'event-facts' },
        h('dt', {}, 'Type'), h('dd', {}, h('code', {}, event.type)),
        h('dt', {}, 'Source'), h('dd', {}, event.source),
        h('dt', {}, 'Time'), h('dd', {}, event.time || '–'),
        h('dt', {}, 'Mode'), h('dd', {}, info.mode === 'async' ? 'asynchronous' : 'synchronous'),
        h('dt', {}, 'Published by'), h('dd', {}, publisher(info.published_by),
          info.published_by?.request_id ? h('span', { class: 'muted' }, ' in request ', h('code', {}, info.published_by.request_id)) : null),
        h('dt', {}, 'Caused by'), h('dd', {}, info.caused_by ? link(eventPath(info.caused_by), info.caused_by) : '–'),
        h('dt', {}, 'Caused'), h('dd', {}, (info.caused || []).length
          ? (info.caused || []).map((c, i) => [i ? ', ' : '', link(eventPath(c), c)]) : '–'),
        info.payload_omitted ? [h('dt', {}, 'Data'), h('dd', {}, `not kept: ${info.payload_omitted}`)] : null),
      h('h2', {}, 'Lineage'),
      h('p', { class: 'muted small' }, 'Events (squares) and deliveries (rounded), from the first cause down the chain. Select an event to go to it, a delivery to its function.'),
      graphBox,
      h('h2', {}, 'Deliveries and attempts'),
      deliveriesTable(info.deliveries || []),
      h('h2', {}, 'As stored'),
      h('pre', { class: 'payload', id: 'event-json', tabindex: 0 }, pretty(JSON.stringify(info.event))));
    const tree = await lineage(info);
    if (stopped) return;
    fill(graphBox, h('div', { class: 'scroll' }, graph(tree, idOf(info))),
      tree.truncated ? h('p', { class: 'note' }, `The chain holds more than ${MAX_EVENTS} events; the rest is not drawn.`) : null);
  }, (error) => {
    fill(body, h('p', { class: 'problem' }, error.message));
  });
  return () => {
    stopped = true;
  };
}
