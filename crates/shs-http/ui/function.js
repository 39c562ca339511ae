// One function: state, charts, the invoke playground, live logs, processes, subscriptions,
// schedules (when the server has them) and the configuration in force. Follows `function:NAME` and `logs:NAME`.

import { api, json } from './api.js';
import { h, fill, ms, count, ago, stateBadge, pretty } from './dom.js';
import { bars, latency } from './chart.js';

/** The most log lines kept on the page. */
const MAX_LINES = 2000;

const METHODS = ['POST', 'GET', 'PUT', 'PATCH', 'DELETE'];

function section(id, title, ...children) {
  return h('section', { id, 'aria-labelledby': `${id}-title` }, h('h2', { id: `${id}-title` }, title), ...children);
}

function stat(label, value, field) {
  return h('div', { class: 'stat' }, h('div', { class: 'stat-label' }, label),
    h('div', { class: 'stat-value', dataset: { field } }, value));
}

function definitions(pairs) {
  return h('dl', { class: 'defs' }, pairs.filter(([, v]) => v !== undefined).map(([k, v]) =>
    [h('dt', {}, k), h('dd', {}, v === null ? '–' : Array.isArray(v) ? (v.length ? v.join(', ') : '–') : String(v))]));
}

function seconds(v) {
  return v === null || v === undefined ? 'never' : `${v} s`;
}

/** A shell word: 'text', with every ' closed and escaped. */
function quote(text) {
  return `'${String(text).replace(/'/g, `'\\''`)}'`;
}

/** The playground: a request in, the answer out, and the same as a curl command. */
function playground(name) {
  const method = h('select', { id: 'pg-method', 'aria-label': 'Method' }, METHODS.map((m) => h('option', { value: m }, m)));
  const path = h('input', { id: 'pg-path', type: 'text', placeholder: '/ (optional sub-path)', 'aria-label': 'Sub-path after /run/NAME', spellcheck: 'false' });
  const headers = h('textarea', { id: 'pg-headers', rows: 3, spellcheck: 'false', placeholder: 'Content-Type: application/json\nX-Request-Id: my-request' });
  const body = h('textarea', { id: 'pg-body', rows: 6, spellcheck: 'false', value: '{}' });
  const send = h('button', { type: 'submit', id: 'pg-send', class: 'primary' }, 'Send');
  const copy = h('button', { type: 'button', id: 'pg-copy' }, 'Copy as curl');
  const note = h('p', { class: 'note', id: 'pg-note', hidden: true });
  const curl = h('pre', { class: 'curl', id: 'pg-curl', hidden: true, tabindex: 0 });
  const out = h('div', { class: 'pg-out', id: 'pg-out', 'aria-live': 'polite' });

  const url = () => {
    let sub = path.value.trim();
    if (sub && !sub.startsWith('/')) sub = '/' + sub;
    return `/run/${encodeURIComponent(name)}${sub === '/' ? '' : sub}`;
  };
  const headerList = () => {
    const list = [];
    headers.value.split('\n').forEach((line, i) => {
      if (!line.trim()) return;
      const colon = line.indexOf(':');
      if (colon < 1) throw new Error(`header line ${i + 1} is not "Name: value"`);
      list.push([line.slice(0, colon).trim(), line.slice(colon + 1).trim()]);
    });
    // A JSON body with no Content-Type goes as JSON (a browser would label it text/plain,
    // which the function would get as text, with `input` null).
    const sendsBody = method.value !== 'GET' && method.value !== 'HEAD';
    if (sendsBody && !list.some(([k]) => k.toLowerCase() === 'content-type')) {
      try {
        JSON.parse(body.value);
        list.push(['Content-Type', 'application/json']);
      } catch (_) { /* not JSON: sent as the browser labels it */ }
    }
    return list;
  };
  const explain = () => {
    const reasons = [];
    if (method.value === 'GET' || method.value === 'HEAD') reasons.push(`${method.value} sends no body`);
    note.hidden = !reasons.length;
    note.textContent = reasons.length ? `${reasons.join('; ')}: the body is not sent.` : '';
  };
  method.addEventListener('change', explain);
  path.addEventListener('input', explain);

  const form = h('form', { class: 'playground', id: 'playground' },
    h('div', { class: 'pg-line' }, method, h('code', { class: 'pg-base' }, `/run/${name}`), path),
    h('label', { for: 'pg-headers' }, 'Headers'), headers,
    h('label', { for: 'pg-body' }, 'Body'), body,
    note,
    h('div', { class: 'actions' }, send, copy, h('span', { class: 'muted small' }, 'Ctrl+Enter sends')),
    curl, out);

  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    let list;
    try {
      list = headerList();
    } catch (error) {
      fill(out, h('p', { class: 'problem' }, error.message));
      return;
    }
    send.disabled = true;
    fill(out, h('p', { class: 'muted' }, 'Sending…'));
    const init = { method: method.value, headers: list };
    if (method.value !== 'GET' && method.value !== 'HEAD') init.body = body.value;
    const began = performance.now();
    try {
      const response = await api(url(), init);
      const text = await response.text();
      const took = performance.now() - began;
      const ok = response.ok ? 'ok' : 'bad';
      fill(out,
        h('p', { class: `pg-status ${ok}` }, h('strong', { dataset: { field: 'status' } }, `${response.status} ${response.statusText}`),
          h('span', { class: 'muted', dataset: { field: 'time' } }, ` · ${ms(took)}`)),
        h('details', {}, h('summary', {}, 'Response headers'),
          definitions([...response.headers.entries()])),
        h('pre', { class: 'pg-body', id: 'pg-response', tabindex: 0 }, pretty(text)));
    } catch (error) {
      fill(out, h('p', { class: 'problem' }, `The request failed in the browser: ${error.message}`));
    } finally {
      send.disabled = false;
    }
  });
  body.addEventListener('keydown', (event) => {
    if (event.key === 'Enter' && (event.ctrlKey || event.metaKey)) form.requestSubmit();
  });
  copy.addEventListener('click', async () => {
    let list;
    try {
      list = headerList();
    } catch (error) {
      fill(out, h('p', { class: 'problem' }, error.message));
      return;
    }
    const parts = ['curl', '-i', '-X', method.value, quote(location.origin + url())];
    for (const [k, v] of list) parts.push('-H', quote(`${k}: ${v}`));
    parts.push('-H', '"X-API-Key: $SHS_API_KEY"');
    if (method.value !== 'GET' && body.value) parts.push('--data-raw', quote(body.value));
    const command = parts.join(' ');
    curl.hidden = false;
    curl.textContent = command;
    try {
      await navigator.clipboard.writeText(command);
      copy.textContent = 'Copied';
    } catch {
      copy.textContent = 'Select it below to copy';
    }
    setTimeout(() => { copy.textContent = 'Copy as curl'; }, 2500);
  });
  explain();
  return form;
}

/** The live log: follow (scroll to the end), pause, filter by request id. */
function logView() {
  const lines = [];
  let held = [];
  let paused = false;
  const list = h('div', { class: 'log', id: 'log', role: 'log', 'aria-live': 'off', tabindex: 0 });
  const followBox = h('input', { type: 'checkbox', id: 'log-follow', checked: true });
  const pause = h('button', { type: 'button', id: 'log-pause', 'aria-pressed': 'false' }, 'Pause');
  const filter = h('input', { type: 'search', id: 'log-filter', placeholder: 'Request id', 'aria-label': 'Show only the lines of this request id', spellcheck: 'false', dataset: { filter: '' } });
  const clear = h('button', { type: 'button', id: 'log-clear' }, 'Clear');
  const state = h('span', { class: 'muted small', id: 'log-state', role: 'status' });

  const matches = (line) => !filter.value.trim() || (line.request_id || '').includes(filter.value.trim());
  const row = (line) => {
    if (line.skipped) {
      return h('div', { class: 'log-line log-skipped' }, `… ${line.skipped} lines skipped: the stream fell behind the log`);
    }
    const rid = line.request_id
      ? h('button', { type: 'button', class: 'rid', title: 'Show only this request', onclick: () => { filter.value = line.request_id; render(); } }, line.request_id.slice(0, 12))
      : h('span', { class: 'rid' }, '');
    return h('div', { class: `log-line log-${line.stream}`, dataset: { seq: line.seq, requestId: line.request_id || '' } },
      h('span', { class: 'log-time' }, (line.time || '').slice(11, 23)),
      h('span', { class: 'log-pid' }, String(line.pid)), rid,
      h('span', { class: 'log-message' }, line.stream === 'shs' ? `shs: ${line.message}` : line.message));
  };
  const scroll = () => {
    if (followBox.checked) list.scrollTop = list.scrollHeight;
  };
  const render = () => {
    fill(list, lines.filter((l) => l.skipped || matches(l)).map(row));
    state.textContent = paused ? `Paused: ${held.length} new lines held` : `${lines.length} lines`;
    scroll();
  };
  const add = (line) => {
    if (paused) {
      held.push(line);
      if (held.length > MAX_LINES) held.shift();
      state.textContent = `Paused: ${held.length} new lines held`;
      return;
    }
    if (!line.skipped && lines.some((l) => l.seq === line.seq && l.pid === line.pid && l.time === line.time)) return;
    lines.push(line);
    if (lines.length > MAX_LINES) {
      lines.shift();
      list.firstChild?.remove();
    }
    if (line.skipped || matches(line)) list.append(row(line));
    state.textContent = `${lines.length} lines`;
    scroll();
  };
  pause.addEventListener('click', () => {
    paused = !paused;
    pause.textContent = paused ? 'Resume' : 'Pause';
    pause.setAttribute('aria-pressed', String(paused));
    if (!paused) {
      const taken = held;
      held = [];
      taken.forEach(add);
    }
    render();
  });
  filter.addEventListener('input', render);
  clear.addEventListener('click', () => {
    lines.length = 0;
    held = [];
    render();
  });
  followBox.addEventListener('change', scroll);
  const view = h('div', {},
    h('div', { class: 'toolbar' },
      h('label', {}, followBox, ' Follow'), pause, filter, clear, state),
    list);
  return { view, add };
}

export function mount(main, [name], ctx) {
  ctx.title(name);
  const banner = h('p', { class: 'problem', id: 'banner', role: 'alert', hidden: true });
  const head = h('div', { class: 'page-head' }, h('h1', {}, name), h('span', { id: 'head-state' }));
  const stats = h('div', { class: 'stats', id: 'stats' });
  const problem = h('div', { id: 'problem' });
  const charts = h('div', { class: 'charts', id: 'charts' });
  const processes = h('div', { id: 'processes' });
  const subscriptions = h('div', { id: 'subscriptions' });
  const schedules = h('div', { id: 'schedules-list' });
  const schedulesSection = section('schedules', 'Schedules', schedules);
  schedulesSection.hidden = true;
  const config = h('div', { id: 'config' });
  const logs = logView();
  fill(main,
    h('p', { class: 'crumbs' }, h('a', { href: '#/functions' }, 'Functions'), ' / ', name),
    head, banner,
    h('nav', { class: 'jump', 'aria-label': 'Sections' },
      ['activity', 'invoke', 'logs', 'processes', 'subscriptions', 'configuration'].map((id) =>
        h('a', { href: `#/functions/${encodeURIComponent(name)}`, dataset: { jump: id }, onclick: (e) => {
          e.preventDefault();
          document.getElementById(id)?.scrollIntoView();
          document.getElementById(`${id}-title`)?.focus();
        } }, id))),
    stats, problem,
    section('activity', 'Last 15 minutes', charts),
    section('invoke', 'Invoke', playground(name)),
    section('logs', 'Logs', logs.view),
    section('processes', 'Processes', processes),
    section('subscriptions', 'Subscriptions', subscriptions),
    schedulesSection,
    section('configuration', 'Configuration in force', config));
  for (const title of main.querySelectorAll('h2')) title.setAttribute('tabindex', '-1');

  const show = (f) => {
    banner.hidden = true;
    fill(head.querySelector('#head-state'), stateBadge(f.state), ' ', h('span', { class: 'muted' }, f.mode));
    const m = f.metrics || {};
    const a = f.activity || { points: [] };
    fill(stats,
      stat('Processes', f.config ? `${f.processes} / ${f.config.instances}` : String(f.processes), 'processes'),
      stat('Queue', count(f.queued ?? 0), 'queued'),
      stat('Invocations', count(m.invocations), 'invocations'),
      stat('Deliveries', count(m.deliveries), 'deliveries'),
      stat('Errors', count(m.error_count), 'errors'),
      stat('p50 (15 min)', ms(a.p50_ms), 'p50'),
      stat('p99 (15 min)', ms(a.p99_ms), 'p99'),
      stat('Cold starts', count(f.cold_starts ?? 0), 'cold-starts'));
    fill(problem, f.error ? [
      h('p', { class: 'problem', dataset: { field: 'error' } }, f.error,
        f.next_try ? ` (next try at ${new Date(f.next_try).toLocaleTimeString()})` : ''),
      f.stderr?.length ? h('pre', { class: 'stderr' }, f.stderr.join('\n')) : null,
    ] : []);
    fill(charts,
      bars('Requests', a.points, (p) => p.requests, 'bar-requests'),
      bars('Errors', a.points, (p) => p.errors, 'bar-errors'),
      latency('Latency', a.points));
    const list = f.process_list || [];
    fill(processes, list.length
      ? h('table', { class: 'grid' },
        h('thead', {}, h('tr', {}, ['PID', 'Up for', 'Requests', 'In flight'].map((c) => h('th', { scope: 'col' }, c)))),
        h('tbody', {}, list.map((p) => h('tr', { dataset: { pid: p.pid } },
          h('td', { class: 'num' }, p.pid), h('td', { title: p.started }, ago(p.uptime_seconds)),
          h('td', { class: 'num' }, count(p.requests)), h('td', { class: 'num' }, p.in_flight)))))
      : h('p', { class: 'muted' }, f.mode === 'exec' ? 'Mode exec: a process per request.' : 'No process is running.'));
    const declared = new Set(f.config?.subscribe || []);
    fill(subscriptions, f.subscriptions.length
      ? h('ul', { class: 'tags' }, f.subscriptions.map((s) => h('li', {}, h('code', {}, s),
        h('span', { class: 'muted small' }, declared.has(s) ? ' function.toml' : ' subscribed at run time'))))
      : h('p', { class: 'muted' }, 'None. (Schedules are not supported yet.)'));
    const c = f.config;
    fill(config, c ? [
      definitions([
        ['Folder', c.dir], ['Command', c.command.join(' ')], ['Mode', c.mode],
        ['Timeout', seconds(c.timeout_seconds)], ['Start timeout', seconds(c.start_timeout_seconds)],
        ['Instances', c.instances], ['Concurrency', c.concurrency], ['Queue', c.queue],
        ['Min instances', c.min_instances], ['Idle timeout', seconds(c.idle_timeout_seconds)],
        ['Subscribe', c.subscribe], ['Environment (names)', c.env],
        ['Memory limit', c.limits.memory], ['CPU seconds', c.limits.cpu_seconds],
        ['Open files', c.limits.open_files], ['Processes limit', c.limits.processes],
        ['User', c.user ? `uid ${c.user.uid}, gid ${c.user.gid}` : null],
        ['Max attempts', c.max_attempts], ['Retry backoff', seconds(c.retry_backoff_seconds)],
        ['Ordered', c.ordered ? 'yes' : 'no'],
      ]),
      h('h3', {}, 'function.toml'),
      f.manifest ? h('pre', { class: 'manifest' }, f.manifest) : h('p', { class: 'muted' }, 'None: every setting is a default.'),
    ] : h('p', { class: 'problem' }, 'It cannot be run, so no configuration is in force.'));
  };

  // Its schedules (`GET /schedules`), every 5 s; none, or a server without schedules: no section.
  let stopped = false;
  const loadSchedules = async () => {
    let list;
    try {
      list = ((await json('/schedules')).schedules || []).filter((s) => s.function === name);
    } catch {
      list = [];
    }
    if (stopped) return;
    schedulesSection.hidden = list.length === 0;
    fill(schedules, list.length ? h('table', { class: 'grid' },
      h('thead', {}, h('tr', {}, ['Cron', 'Time zone', 'Next', 'Last', 'Outcome', 'Input'].map((c) => h('th', { scope: 'col' }, c)))),
      h('tbody', {}, list.map((s) => h('tr', { dataset: { cron: s.cron } },
        h('td', {}, h('code', {}, s.cron)),
        h('td', {}, s.timezone || 'UTC'),
        h('td', { class: 'nowrap' }, s.next || '–'),
        h('td', { class: 'nowrap' }, s.last?.time || '–'),
        h('td', {}, s.last?.state ? h('span', { class: `chip chip-${s.last.state === 'succeeded' ? 'delivered' : s.last.state === 'failed' ? 'dead' : 'pending'}`, title: s.last.invocation_id || '' }, s.last.state) : '–'),
        h('td', { class: 'wrap' }, s.input === undefined || s.input === null ? '' : h('code', {}, JSON.stringify(s.input))))))) : null);
  };
  loadSchedules();
  const scheduleTimer = setInterval(loadSchedules, 5000);

  ctx.follow([`function:${name}`, `logs:${name}`], (event) => {
    const data = JSON.parse(event.data);
    if (event.event === 'function') show(data);
    else if (event.event === 'log') logs.add(data);
    else if (event.event === 'skipped') logs.add({ skipped: data.lines });
    else if (event.event === 'gone') {
      banner.hidden = false;
      banner.textContent = `${name} is no longer deployed.`;
    }
  }, (state, message, status) => {
    if (state === 'error') {
      banner.hidden = false;
      banner.textContent = status === 404 ? `No function named “${name}” is deployed (yet): ${message}` : message;
    }
  });
  return () => {
    stopped = true;
    clearInterval(scheduleTimer);
  };
}
