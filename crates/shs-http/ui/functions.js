// The home page: every function with its state, processes, queue, counts and latency,
// updated live from the `functions` topic.

import { h, fill, link, functionPath, ms, count, stateBadge, keepFocus } from './dom.js';

const COLUMNS = ['Function', 'Mode', 'State', 'Processes', 'Concurrency', 'Queue',
  'Invocations', 'Errors', 'p50', 'p99', 'Cold starts'];

function rows(f) {
  const m = f.metrics || {};
  const recent = f.recent || {};
  const processes = f.instances !== undefined ? `${f.processes} / ${f.instances}` : String(f.processes);
  const row = h('tr', { dataset: { function: f.name } },
    h('th', { scope: 'row' }, link(functionPath(f.name), f.name, { dataset: { focus: f.name } })),
    h('td', {}, f.mode),
    h('td', {}, stateBadge(f.state), f.state === 'backing_off' && f.next_try
      ? h('span', { class: 'muted' }, ` until ${new Date(f.next_try).toLocaleTimeString()}` ) : null),
    h('td', { class: 'num', dataset: { field: 'processes' } }, processes,
      f.starting ? h('span', { class: 'muted' }, ` (+${f.starting} starting)`) : null),
    h('td', { class: 'num' }, f.concurrency ?? '–'),
    h('td', { class: 'num', dataset: { field: 'queued' } }, count(f.queued ?? 0)),
    h('td', { class: 'num', dataset: { field: 'invocations' }, title: `${count(m.deliveries)} event deliveries besides` }, count(m.invocations)),
    h('td', { class: 'num', dataset: { field: 'errors' } }, count(m.error_count)),
    h('td', { class: 'num', title: 'median of the last 15 minutes' }, ms(recent.p50_ms)),
    h('td', { class: 'num', title: '99th percentile of the last 15 minutes' }, ms(recent.p99_ms)),
    h('td', { class: 'num' }, count(f.cold_starts ?? m.cold_start_count)));
  if (!f.error) return [row];
  const problem = h('tr', { class: 'problem-row', dataset: { problemOf: f.name } },
    h('td', { colspan: COLUMNS.length },
      h('p', { class: 'problem' }, f.error,
        f.failures ? h('span', { class: 'muted' }, ` (${f.failures} failed starts in a row)`) : null),
      f.stderr && f.stderr.length ? h('pre', { class: 'stderr', 'aria-label': 'last lines of stderr' }, f.stderr.join('\n')) : null));
  return [row, problem];
}

export function mount(main, params, ctx) {
  ctx.title('Functions');
  const filter = h('input', {
    type: 'search', placeholder: 'Filter by name  ( / )', 'aria-label': 'Filter functions by name',
    value: ctx.query.get('q') || '', dataset: { filter: '' },
  });
  const body = h('tbody');
  const table = h('table', { class: 'grid', id: 'functions' },
    h('thead', {}, h('tr', {}, COLUMNS.map((c) => h('th', { scope: 'col' }, c)))), body);
  const note = h('p', { class: 'muted', role: 'status' }, 'Waiting for the server…');
  fill(main,
    h('div', { class: 'page-head' }, h('h1', {}, 'Functions'), filter),
    note,
    h('div', { class: 'scroll' }, table),
    h('p', { class: 'muted small' }, 'p50 and p99: invokes and event deliveries of the last 15 minutes. ',
      'Counts since the server started.'));

  let functions = [];
  const render = () => {
    const q = filter.value.trim().toLowerCase();
    const shown = functions.filter((f) => f.name.toLowerCase().includes(q));
    keepFocus(body, () => fill(body, shown.map(rows)));
    if (!functions.length) {
      note.textContent = 'No functions are deployed. Put a folder in the functions folder: it is live within 2 seconds.';
    } else if (!shown.length) {
      note.textContent = `No function matches “${filter.value}”.`;
    } else {
      const failing = functions.filter((f) => f.state === 'failed' || f.state === 'backing_off').length;
      note.textContent = `${functions.length} functions` + (failing ? `, ${failing} failing` : '');
    }
  };
  filter.addEventListener('input', () => {
    const q = filter.value.trim();
    history.replaceState(null, '', '#/functions' + (q ? `?q=${encodeURIComponent(q)}` : ''));
    render();
  });
  ctx.follow(['functions'], (event) => {
    if (event.event !== 'functions') return;
    functions = JSON.parse(event.data).functions || [];
    render();
  }, (state, message) => {
    if (state === 'error') note.textContent = `The server refused the stream: ${message}`;
  });
}
