// Recent events, newest first (`GET /events`): filter by type pattern, function and time, page
// back with "Older", follow new ones while the first page is shown. The filters are in the
// link (#/events?type=orders.*&function=billing&since=1h).

import { json, ApiError } from './api.js';
import { h, fill, link, functionPath } from './dom.js';

const SINCE = [['', 'Any time'], ['15m', 'Last 15 min'], ['1h', 'Last hour'], ['24h', 'Last 24 h'], ['7days', 'Last 7 days']];

/** Who published an event, as a link to the function or "HTTP". */
export function publisher(origin) {
  if (origin && origin.kind === 'function') return link(functionPath(origin.function), origin.function);
  return h('span', { class: 'muted' }, 'HTTP');
}

export function eventPath(id) {
  return '/events/' + encodeURIComponent(id);
}

/** The deliveries of an event in brief: one chip per function, coloured by state. */
export function deliveryChips(deliveries) {
  if (!deliveries.length) return h('span', { class: 'muted' }, 'nobody');
  return h('span', { class: 'chips' }, deliveries.map((d) => h('span', {
    class: `chip chip-${d.state}`,
    title: `${d.function}: ${d.state}, ${d.attempts} attempt${d.attempts === 1 ? '' : 's'}`,
  }, d.function, ' ', h('span', { class: 'chip-state' }, d.state))));
}

export function mount(main, params, ctx) {
  ctx.title('Events');
  const typeInput = h('input', { type: 'search', id: 'ev-type', 'aria-label': 'Type pattern', placeholder: 'Type pattern (orders.*)', value: ctx.query.get('type') || '', dataset: { filter: '' }, spellcheck: 'false' });
  const fnInput = h('input', { type: 'search', id: 'ev-function', 'aria-label': 'Function', placeholder: 'Function', value: ctx.query.get('function') || '', spellcheck: 'false' });
  const since = h('select', { id: 'ev-since', 'aria-label': 'Since' },
    SINCE.map(([value, label]) => h('option', { value }, label)));
  since.value = SINCE.some(([v]) => v === ctx.query.get('since')) ? ctx.query.get('since') : '';
  const followBox = h('input', { type: 'checkbox', id: 'ev-follow', checked: true });
  const status = h('p', { id: 'ev-status', role: 'status', class: 'muted' }, 'Loading…');
  const body = h('tbody');
  const older = h('button', { type: 'button', id: 'ev-older', hidden: true }, 'Older events');
  let events = [];
  let next = null;
  let stopped = false;
  let loading = false;

  const form = h('form', { class: 'toolbar' }, typeInput, fnInput, since, h('button', { type: 'submit' }, 'Filter'),
    h('label', { class: 'check' }, followBox, ' Follow new events'));
  fill(main,
    h('div', { class: 'page-head' }, h('h1', {}, 'Events')),
    h('p', { class: 'muted' }, 'Events kept by the bus, newest first. A type pattern takes * for one token and a last > for the rest.'),
    form,
    status,
    h('div', { class: 'scroll' }, h('table', { class: 'grid', id: 'events' },
      h('thead', {}, h('tr', {}, ['Stored', 'Type', 'Event', 'Published by', 'Caused by', 'Deliveries'].map((c) => h('th', { scope: 'col' }, c)))),
      body)),
    h('div', { class: 'actions' }, older));

  const row = (e) => h('tr', { dataset: { event: e.id } },
    h('td', { class: 'nowrap' }, e.stored_at.replace('T', ' ').replace('Z', '')),
    h('td', {}, h('code', {}, e.type)),
    h('td', { class: 'wrap' }, link(eventPath(e.id), e.id, { class: 'event-link' })),
    h('td', {}, publisher(e.published_by)),
    h('td', { class: 'wrap' }, e.caused_by ? link(eventPath(e.caused_by), e.caused_by) : ''),
    h('td', {}, deliveryChips(e.deliveries || [])));

  const query = (before) => {
    const q = new URLSearchParams();
    if (typeInput.value.trim()) q.set('type', typeInput.value.trim());
    if (fnInput.value.trim()) q.set('function', fnInput.value.trim());
    if (since.value) q.set('since', since.value);
    q.set('limit', '100');
    if (before) q.set('before', before);
    return q;
  };

  const show = () => {
    fill(body, events.map(row));
    older.hidden = !next;
    status.textContent = events.length ? `${events.length} events${next ? ' (older ones below)' : ''}` : 'No events match.';
  };

  /** The newest page (again); `more` appends the page after the last one instead. */
  const load = async (more = false) => {
    if (loading) return;
    loading = true;
    try {
      const answer = await json(more && next ? next : `/events?${query()}`);
      if (stopped) return;
      if (more) {
        const seen = new Set(events.map((e) => e.id));
        events = events.concat(answer.events.filter((e) => !seen.has(e.id)));
        next = answer.next;
      } else if (!next || events.length <= 100) {
        events = answer.events;
        next = answer.next;
      } else {
        // Older pages are shown: keep them, put the new ones on top.
        const seen = new Set(answer.events.map((e) => e.id));
        events = answer.events.concat(events.filter((e) => !seen.has(e.id)));
      }
      show();
    } catch (error) {
      status.textContent = error instanceof ApiError ? `The server answered ${error.status}: ${error.message}` : String(error.message || error);
    } finally {
      loading = false;
    }
  };

  form.addEventListener('submit', (event) => {
    event.preventDefault();
    const q = query();
    q.delete('limit');
    history.replaceState(null, '', '#/events' + (q.toString() ? `?${q}` : ''));
    next = null;
    load();
  });
  since.addEventListener('change', () => form.requestSubmit());
  older.addEventListener('click', () => load(true));
  load();
  const timer = setInterval(() => {
    if (followBox.checked && !document.hidden) load();
  }, 2000);
  return () => {
    stopped = true;
    clearInterval(timer);
  };
}
