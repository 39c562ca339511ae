// Topology: who publishes which event types and who subscribes to them, drawn as a graph in
// three columns (publishers, event types, subscribers) with the counts of the window on the
// edges (`GET /topology`), refreshed every 2 s.

import { json, ApiError } from './api.js';
import { h, svg, fill, functionPath, count, keepFocus } from './dom.js';

const SINCE = [['15m', 'Last 15 min'], ['1h', 'Last hour'], ['24h', 'Last 24 h']];
const COL_W = 190;
const GAP = 170;
const NODE_H = 34;
const ROW = 46;

/** Whether a subscription pattern matches a type (the table's rules: `*` one token, last `>` the rest). */
export function matches(pattern, type) {
  const parts = pattern.split('.');
  const tokens = type.split('.');
  for (let i = 0; i < parts.length; i += 1) {
    if (parts[i] === '>' && i === parts.length - 1) return tokens.length > i;
    if (i >= tokens.length) return false;
    if (parts[i] !== '*' && parts[i] !== tokens[i]) return false;
  }
  return parts.length === tokens.length;
}

function clip(text, n = 24) {
  const s = String(text ?? '');
  return s.length > n ? s.slice(0, n - 1) + '…' : s;
}

/** The graph's columns and edges from the topology and the functions. */
export function model(topology, functions) {
  const traffic = topology.traffic;
  const types = new Map(); // type -> {pattern: bool}
  const addType = (t, pattern = false) => {
    if (!types.has(t)) types.set(t, { pattern });
  };
  for (const p of traffic.publishes) addType(p.type);
  for (const d of traffic.deliveries) addType(d.type);
  for (const f of functions) for (const t of Array.isArray(f.publishes) ? f.publishes : []) if (typeof t === 'string') addType(t);
  // A pattern no type seen in the window matches stands for itself.
  for (const s of topology.subscriptions) {
    if (![...types.keys()].some((t) => !types.get(t).pattern && matches(s.type, t))) addType(s.type, true);
  }
  const publishers = new Map();
  const pubEdges = [];
  for (const p of traffic.publishes) {
    const key = p.function === null ? 'http' : `fn:${p.function}`;
    publishers.set(key, p.function);
    pubEdges.push({ from: key, to: `type:${p.type}`, events: p.events });
  }
  for (const f of functions) {
    for (const t of Array.isArray(f.publishes) ? f.publishes : []) {
      if (typeof t !== 'string') continue;
      const key = `fn:${f.name}`;
      publishers.set(key, f.name);
      if (!pubEdges.some((e) => e.from === key && e.to === `type:${t}`)) pubEdges.push({ from: key, to: `type:${t}`, events: 0 });
    }
  }
  const subscribers = new Set(functions.map((f) => f.name));
  const subEdges = [];
  for (const [t, { pattern }] of types) {
    const taking = new Set(topology.subscriptions.filter((s) => (pattern ? s.type === t : matches(s.type, t))).map((s) => s.function));
    for (const d of traffic.deliveries.filter((d) => d.type === t)) taking.add(d.function);
    for (const fn of taking) {
      subscribers.add(fn);
      const c = traffic.deliveries.find((d) => d.type === t && d.function === fn) || { delivered: 0, failed: 0, pending: 0, dead: 0 };
      subEdges.push({ from: `type:${t}`, to: `sub:${fn}`, counts: c, pattern });
    }
  }
  return { types, publishers, subscribers: [...subscribers].sort(), pubEdges, subEdges };
}

/** The height of the edges' curve (control points level with each end) at `t` of the way. */
function along(y1, y2, t) {
  return y1 + (y2 - y1) * (3 * t * t - 2 * t * t * t);
}

function edgeLabel(edge) {
  if (edge.events !== undefined) return edge.events ? `${count(edge.events)}` : '';
  const c = edge.counts;
  const parts = [];
  if (c.delivered) parts.push(`${count(c.delivered)} ✓`);
  if (c.failed + c.dead) parts.push(`${count(c.failed + c.dead)} ✗`);
  if (c.pending) parts.push(`${count(c.pending)} …`);
  return parts.join(' ');
}

function draw(m) {
  const cols = [
    [...m.publishers.entries()].sort(([a], [b]) => (a === 'http' ? -1 : b === 'http' ? 1 : a.localeCompare(b)))
      .map(([key, fn]) => ({ key, label: fn === null ? 'HTTP (POST /events)' : fn, href: fn === null ? null : functionPath(fn), kind: fn === null ? 'http' : 'function' })),
    [...m.types.entries()].sort(([a], [b]) => a.localeCompare(b))
      .map(([t, { pattern }]) => ({ key: `type:${t}`, label: t, href: pattern ? null : `/events?type=${encodeURIComponent(t)}`, kind: pattern ? 'pattern' : 'type' })),
    m.subscribers.map((fn) => ({ key: `sub:${fn}`, label: fn, href: functionPath(fn), kind: 'function' })),
  ];
  const rows = Math.max(1, ...cols.map((c) => c.length));
  const height = rows * ROW + 30;
  const pos = new Map();
  cols.forEach((col, i) => {
    const offset = ((rows - col.length) * ROW) / 2 + 24;
    col.forEach((node, j) => {
      node.x = i * (COL_W + GAP);
      node.y = offset + j * ROW;
      pos.set(node.key, node);
    });
  });
  const width = 3 * COL_W + 2 * GAP + 2;
  const edges = [...m.pubEdges, ...m.subEdges].map((e) => {
    const a = pos.get(e.from);
    const b = pos.get(e.to);
    if (!a || !b) return null;
    const x1 = a.x + COL_W;
    const y1 = a.y + NODE_H / 2;
    const x2 = b.x;
    const y2 = b.y + NODE_H / 2;
    const mid = (x1 + x2) / 2;
    const label = edgeLabel(e);
    const bad = e.counts && e.counts.failed + e.counts.dead > 0;
    const idle = e.events === 0 || (e.counts && !label);
    return svg('g', { class: `flow${bad ? ' flow-bad' : ''}${idle ? ' flow-idle' : ''}`, dataset: { edge: `${e.from}>${e.to}`, count: label } },
      svg('title', {}, `${a.label} → ${b.label}${label ? `: ${label}` : ''}`),
      svg('path', { class: 'edge', d: `M${x1},${y1} C${mid},${y1} ${mid},${y2} ${x2 - 6},${y2}`, 'marker-end': 'url(#topo-arrow)' }),
      label ? svg('text', { class: 'edge-label', x: x1 + (x2 - x1) * (1.5 * 0.75 * 0.25 + 0.75 ** 3), y: along(y1, y2, 0.75) - 4, 'text-anchor': 'middle' }, label) : null);
  });
  const nodes = cols.flat().map((n) => {
    const box = svg('g', { class: `node node-${n.kind}`, dataset: { node: n.key } },
      svg('title', {}, n.label),
      svg('rect', { x: n.x, y: n.y, width: COL_W, height: NODE_H, rx: n.kind === 'function' ? 17 : 5 }),
      svg('text', { x: n.x + 12, y: n.y + 22, class: 'node-title' }, clip(n.label)));
    return n.href ? svg('a', { href: '#' + n.href, class: 'node-link', 'aria-label': `${n.kind} ${n.label}`, dataset: { focus: n.key } }, box) : box;
  });
  const heads = ['Publishers', 'Event types', 'Subscribers'].map((t, i) =>
    svg('text', { class: 'col-head', x: i * (COL_W + GAP), y: 12 }, t));
  return svg('svg', { class: 'topology', id: 'topology', width, height, viewBox: `-1 -1 ${width} ${height}`, role: 'group', 'aria-label': 'Topology' },
    svg('defs', {}, svg('marker', { id: 'topo-arrow', viewBox: '0 0 10 10', refX: 9, refY: 5, markerWidth: 7, markerHeight: 7, orient: 'auto-start-reverse' },
      svg('path', { d: 'M0,0 L10,5 L0,10 z', class: 'arrow' }))),
    heads, edges, nodes);
}

export function mount(main, params, ctx) {
  ctx.title('Topology');
  const since = h('select', { id: 'topo-since', 'aria-label': 'Counts over' }, SINCE.map(([v, l]) => h('option', { value: v }, l)));
  since.value = SINCE.some(([v]) => v === ctx.query.get('since')) ? ctx.query.get('since') : '15m';
  const status = h('p', { id: 'topo-status', role: 'status', class: 'muted' }, 'Loading…');
  const box = h('div', { class: 'graph-box scroll' });
  fill(main,
    h('div', { class: 'page-head' }, h('h1', {}, 'Topology'), h('label', { class: 'check' }, 'Counts over ', since)),
    h('p', { class: 'muted' }, 'Who publishes which event types, and who subscribes to them. Edges carry the events published, and the deliveries made (✓), failed or dead (✗) and pending (…), in the window; refreshed every 2 s.'),
    status, box);
  let stopped = false;
  let functions = [];
  let lastFunctions = 0;
  const load = async () => {
    try {
      if (Date.now() - lastFunctions > 10000) {
        functions = (await json('/functions')).functions || [];
        lastFunctions = Date.now();
      }
      const topology = await json(`/topology?since=${encodeURIComponent(since.value)}`);
      if (stopped) return;
      const m = model(topology, functions);
      keepFocus(box, () => fill(box, draw(m)));
      const t = topology.traffic;
      status.textContent = `${count(t.events)} events since ${topology.since.replace('T', ' ').replace(/\.\d+Z$/, ' UTC')}`
        + (t.complete ? '' : ' (the newest 100,000 counted)') + '.';
    } catch (error) {
      status.textContent = error instanceof ApiError ? `The server answered ${error.status}: ${error.message}` : String(error.message || error);
    }
  };
  since.addEventListener('change', () => {
    history.replaceState(null, '', `#/topology?since=${encodeURIComponent(since.value)}`);
    load();
  });
  load();
  const timer = setInterval(() => {
    if (!document.hidden) load();
  }, 2000);
  return () => {
    stopped = true;
    clearInterval(timer);
  };
}
