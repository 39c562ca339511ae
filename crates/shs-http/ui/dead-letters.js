// Dead letters: deliveries of events, and asynchronous invocations, that failed for good.
// Filter (function, event type, kind), inspect, retry and delete, one or many at a time.

import { json, ApiError } from './api.js';
import { h, fill, link, functionPath, pretty, keepFocus } from './dom.js';

/** A base64 body as text, when it is UTF-8; else says how many bytes it holds. */
function decodeBody(base64) {
  try {
    const bytes = Uint8Array.from(atob(base64), (c) => c.charCodeAt(0));
    try {
      return new TextDecoder('utf-8', { fatal: true }).decode(bytes);
    } catch {
      return `(${bytes.length} bytes, not UTF-8 text)`;
    }
  } catch {
    return '(not base64)';
  }
}

export function mount(main, params, ctx) {
  ctx.title('Dead letters');
  const fnInput = h('input', { type: 'search', id: 'dl-function', 'aria-label': 'Function', placeholder: 'Function', value: ctx.query.get('function') || '', dataset: { filter: '' }, spellcheck: 'false' });
  const typeInput = h('input', { type: 'search', id: 'dl-type', 'aria-label': 'Event type', placeholder: 'Event type', value: ctx.query.get('type') || '', spellcheck: 'false' });
  const kindSelect = h('select', { id: 'dl-kind', 'aria-label': 'Kind' },
    h('option', { value: '' }, 'Events and invocations'), h('option', { value: 'event' }, 'Events'), h('option', { value: 'invocation' }, 'Invocations'));
  kindSelect.value = ['event', 'invocation'].includes(ctx.query.get('kind')) ? ctx.query.get('kind') : '';
  const apply = h('button', { type: 'submit' }, 'Filter');
  const refresh = h('button', { type: 'button', id: 'dl-refresh' }, 'Refresh');
  const all = h('input', { type: 'checkbox', id: 'dl-all', 'aria-label': 'Select all' });
  const retry = h('button', { type: 'button', id: 'dl-retry', disabled: true }, 'Retry selected');
  const remove = h('button', { type: 'button', id: 'dl-delete', class: 'danger', disabled: true }, 'Delete selected');
  const status = h('p', { id: 'dl-status', role: 'status', class: 'muted' }, 'Loading…');
  const body = h('tbody');
  const inspector = h('section', { id: 'dl-inspect', 'aria-label': 'Dead letter', hidden: true });
  const selected = new Set();
  let letters = [];
  let confirming = false;
  let stopped = false;

  const form = h('form', { class: 'toolbar' }, fnInput, typeInput, kindSelect, apply, refresh);
  fill(main,
    h('div', { class: 'page-head' }, h('h1', {}, 'Dead letters')),
    h('p', { class: 'muted' }, 'Asynchronous deliveries of events, and asynchronous invocations, that failed every attempt. Retrying one starts its attempts again.'),
    form,
    h('div', { class: 'toolbar' }, retry, remove),
    status,
    h('div', { class: 'scroll' }, h('table', { class: 'grid', id: 'dead-letters' },
      h('thead', {}, h('tr', {}, h('th', { scope: 'col' }, all),
        ['Dead since', 'Function', 'What', 'Attempts', 'Last error', ''].map((c) => h('th', { scope: 'col' }, c)))),
      body)),
    inspector);

  const buttons = () => {
    const n = selected.size;
    retry.disabled = remove.disabled = n === 0;
    retry.textContent = n ? `Retry selected (${n})` : 'Retry selected';
    remove.textContent = confirming ? `Really delete ${n}?` : n ? `Delete selected (${n})` : 'Delete selected';
    all.checked = n > 0 && n === letters.length;
  };

  const inspect = (letter) => {
    inspector.hidden = false;
    const last = letter.attempts[letter.attempts.length - 1];
    const invocation = letter.kind === 'invocation';
    fill(inspector,
      h('h2', { tabindex: '-1', id: 'dl-inspect-title' }, invocation ? 'Failed invocation ' : 'Dead letter ', h('code', {}, letter.id)),
      h('dl', { class: 'defs' },
        invocation
          ? [h('dt', {}, 'Invocation'), h('dd', {}, h('code', {}, letter.invocation_id || letter.id))]
          : [h('dt', {}, 'Event'), h('dd', {}, link(`/events/${encodeURIComponent(letter.event_id)}`, letter.event_id)),
            h('dt', {}, 'Type'), h('dd', {}, letter.event_type)],
        h('dt', {}, 'Function'), h('dd', {}, link(functionPath(letter.function), letter.function)),
        h('dt', {}, 'Dead since'), h('dd', {}, letter.dead_at),
        h('dt', {}, 'Last error'), h('dd', {}, last ? last.error : '–')),
      h('h3', {}, 'Attempts'),
      h('table', { class: 'grid' }, h('thead', {}, h('tr', {}, ['#', 'Time', 'Status', 'Error'].map((c) => h('th', { scope: 'col' }, c)))),
        h('tbody', {}, letter.attempts.map((a) => h('tr', {}, h('td', { class: 'num' }, a.attempt), h('td', {}, a.time),
          h('td', { class: 'num' }, a.status), h('td', { class: 'wrap' }, a.error))))),
      invocation && letter.request?.http?.body_base64 !== undefined
        ? [h('h3', {}, 'Request body'), h('pre', { class: 'payload', id: 'dl-body', tabindex: 0 }, pretty(decodeBody(letter.request.http.body_base64)))]
        : null,
      h('h3', {}, invocation ? 'Request' : 'Event'),
      h('pre', { class: 'payload', id: 'dl-event', tabindex: 0 }, pretty(JSON.stringify(invocation ? letter.request : letter.event))));
    inspector.querySelector('h2').focus();
  };

  const render = () => {
    keepFocus(body, () => fill(body, letters.map((letter) => {
      const last = letter.attempts[letter.attempts.length - 1];
      const box = h('input', { type: 'checkbox', checked: selected.has(letter.id), 'aria-label': `Select ${letter.id}`, dataset: { focus: `box-${letter.id}` } });
      box.addEventListener('change', () => {
        if (box.checked) selected.add(letter.id);
        else selected.delete(letter.id);
        confirming = false;
        buttons();
      });
      return h('tr', { dataset: { letter: letter.id } },
        h('td', {}, box),
        h('td', {}, letter.dead_at),
        h('td', {}, link(functionPath(letter.function), letter.function)),
        h('td', {}, letter.kind === 'invocation'
          ? h('span', { class: 'chip', dataset: { kind: 'invocation' } }, 'invocation')
          : h('code', {}, letter.event_type)),
        h('td', { class: 'num' }, letter.attempts.length),
        h('td', { class: 'wrap clip' }, last ? last.error : ''),
        h('td', {}, h('button', { type: 'button', class: 'inspect', dataset: { focus: `inspect-${letter.id}` }, onclick: () => inspect(letter) }, 'Inspect')));
    })));
    buttons();
  };

  const load = async () => {
    const query = new URLSearchParams();
    if (fnInput.value.trim()) query.set('function', fnInput.value.trim());
    if (typeInput.value.trim()) query.set('type', typeInput.value.trim());
    if (kindSelect.value) query.set('kind', kindSelect.value);
    query.set('limit', '500');
    try {
      const answer = await json(`/events/dead-letters?${query}`);
      if (stopped) return;
      letters = answer.dead_letters || [];
      for (const id of [...selected]) if (!letters.some((l) => l.id === id)) selected.delete(id);
      status.textContent = letters.length ? `${letters.length} dead letters` : 'No dead letters.';
      render();
    } catch (error) {
      status.textContent = error instanceof ApiError ? `The server answered ${error.status}: ${error.message}` : String(error.message || error);
    }
  };

  const each = async (verb, method, path) => {
    const ids = [...selected];
    let done = 0;
    const failed = [];
    for (const id of ids) {
      try {
        await json(path(id), { method });
        done += 1;
        selected.delete(id);
      } catch (error) {
        failed.push(`${id}: ${error.message}`);
      }
    }
    status.textContent = `${verb} ${done} of ${ids.length}.` + (failed.length ? ` Failed: ${failed.join('; ')}` : '');
    await load();
    status.textContent = `${verb} ${done} of ${ids.length}.` + (failed.length ? ` Failed: ${failed.join('; ')}` : '') + ` ${letters.length} left.`;
  };

  form.addEventListener('submit', (event) => {
    event.preventDefault();
    const q = new URLSearchParams();
    if (fnInput.value.trim()) q.set('function', fnInput.value.trim());
    if (typeInput.value.trim()) q.set('type', typeInput.value.trim());
    if (kindSelect.value) q.set('kind', kindSelect.value);
    history.replaceState(null, '', '#/dead-letters' + (q.toString() ? `?${q}` : ''));
    load();
  });
  refresh.addEventListener('click', load);
  kindSelect.addEventListener('change', () => form.requestSubmit());
  all.addEventListener('change', () => {
    selected.clear();
    if (all.checked) letters.forEach((l) => selected.add(l.id));
    confirming = false;
    render();
  });
  retry.addEventListener('click', () => each('Retried', 'POST', (id) => `/events/dead-letters/${encodeURIComponent(id)}/retry`));
  remove.addEventListener('click', () => {
    if (!confirming) {
      confirming = true;
      buttons();
      return;
    }
    confirming = false;
    each('Deleted', 'DELETE', (id) => `/events/dead-letters/${encodeURIComponent(id)}`);
  });
  load();
  const timer = setInterval(load, 5000);
  return () => {
    stopped = true;
    clearInterval(timer);
  };
}
