// One event: what `GET /events/{id}` knows of it (its deliveries and their attempts, what
// caused it), as text. The lineage graph comes with the event listing.

import { json } from './api.js';
import { h, fill, link, functionPath, pretty } from './dom.js';

export function mount(main, [id], ctx) {
  ctx.title(`Event ${id}`);
  const body = h('div', {}, h('p', { class: 'muted' }, 'Loading…'));
  fill(main, h('div', { class: 'page-head' }, h('h1', {}, 'Event ', h('code', {}, id))), body);
  json(`/events/${encodeURIComponent(id)}`).then((info) => {
    const deliveries = info.deliveries || [];
    fill(body,
      h('h2', {}, 'Deliveries'),
      deliveries.length ? h('table', { class: 'grid', id: 'deliveries' },
        h('thead', {}, h('tr', {}, ['Function', 'State', 'Attempts', 'Last error'].map((c) => h('th', { scope: 'col' }, c)))),
        h('tbody', {}, deliveries.map((d) => {
          const last = (d.attempts || [])[d.attempts.length - 1];
          return h('tr', {}, h('td', {}, link(functionPath(d.function), d.function)), h('td', {}, d.state),
            h('td', { class: 'num' }, (d.attempts || []).length), h('td', { class: 'wrap' }, last ? last.error : ''));
        }))) : h('p', { class: 'muted' }, 'No function took it.'),
      h('h2', {}, 'As stored'),
      h('pre', { class: 'payload', tabindex: 0 }, pretty(JSON.stringify(info))));
  }, (error) => {
    fill(body, h('p', { class: 'problem' }, error.message));
  });
}
