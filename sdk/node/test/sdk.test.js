// Tests of shs-sdk with no supervisor: the test plays the supervisor over in-memory streams and
// checks every line the function writes.
//
// Run: node --test sdk/node/test/

'use strict';

const assert = require('node:assert/strict');
const { PassThrough } = require('node:stream');
const { test } = require('node:test');

const shs = require('..');

const INIT = { jsonrpc: '2.0', id: 1, method: 'initialize', params: { function: 'f', protocol: 1 } };

function invoke(id, input, requestId) {
  return {
    jsonrpc: '2.0', id, method: 'invoke',
    params: { input, context: { request_id: requestId ?? `req-${id}`, function: 'f' } },
  };
}

function event(id, type, payload = null) {
  return {
    jsonrpc: '2.0', id, method: 'event',
    params: {
      event: { id: `ev-${id}`, type, source: '/http', time: '2026-01-01T00:00:00.000Z', payload },
      context: { request_id: `del-${id}`, function: 'f' },
    },
  };
}

const result = (id, value) => ({ jsonrpc: '2.0', id, result: value });
const published = (eventId) => ({ published: true, event_id: eventId, delivered: 1, errors: [] });

/** Plays the supervisor over in-memory streams. */
class Supervisor {
  constructor(fn) {
    this.input = new PassThrough();
    this.output = new PassThrough();
    this.logStream = new PassThrough();
    this.logText = '';
    this.logStream.on('data', (chunk) => { this.logText += chunk; });
    this.lines = [];
    this.waiters = [];
    let pending = '';
    this.output.on('data', (chunk) => {
      pending += chunk;
      let end;
      while ((end = pending.indexOf('\n')) >= 0) {
        const line = pending.slice(0, end);
        pending = pending.slice(end + 1);
        const message = JSON.parse(line);
        const waiter = this.waiters.shift();
        if (waiter) waiter(message);
        else this.lines.push(message);
      }
    });
    this.status = fn.serve({ input: this.input, output: this.output, log: this.logStream });
  }

  send(message) {
    this.input.write(`${typeof message === 'string' ? message : JSON.stringify(message)}\n`);
  }

  read(timeoutMs = 5000) {
    if (this.lines.length > 0) return Promise.resolve(this.lines.shift());
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`nothing written for ${timeoutMs} ms; log:\n${this.logText}`)), timeoutMs);
      this.waiters.push((message) => {
        clearTimeout(timer);
        resolve(message);
      });
    });
  }

  async nothingMore(ms = 100) {
    await new Promise((resolve) => setTimeout(resolve, ms));
    return this.lines.length === 0;
  }

  /** Closes stdin; resolves to the exit status. */
  close() {
    this.input.end();
    return this.status;
  }
}

/** Runs fn over a script of lines; resolves to {lines, status, log}. */
async function script(fn, messages) {
  const sup = new Supervisor(fn);
  for (const message of messages) sup.send(message);
  const status = await sup.close();
  await new Promise((resolve) => setImmediate(resolve));
  return { lines: sup.lines, status, log: sup.logText };
}

function echoFunction() {
  return shs.createFunction().invoke((input, ctx) => ({
    input, requestId: ctx.requestId, function: ctx.function, method: ctx.method,
  }));
}

function callingFunction() {
  return shs.createFunction().invoke(async (input, ctx) => {
    const type = input.type ?? 't.x';
    switch (input.action) {
      case 'publish': return { publish: await ctx.publish(type, input.payload) };
      case 'nowait': ctx.publishNoWait(type, input.payload); return 'sent';
      case 'subscribe': return { sub: await ctx.subscribe(type), unsub: await ctx.unsubscribe(type) };
      default: return { echo: input };
    }
  });
}

test('a secret is read from $SHS_SECRETS, and a missing one is a clear error', () => {
  const fs = require('node:fs');
  const os = require('node:os');
  const path = require('node:path');
  const folder = fs.mkdtempSync(path.join(os.tmpdir(), 'shs-sdk-secrets-'));
  const saved = process.env.SHS_SECRETS;
  try {
    fs.writeFileSync(path.join(folder, 'api-token'), 's3cret');
    delete process.env.SHS_SECRETS;
    assert.throws(() => shs.secret('api-token'), /secrets = \["api-token"\]/);
    process.env.SHS_SECRETS = folder;
    assert.equal(shs.secret('api-token'), 's3cret');
    assert.throws(() => shs.secret('other'), { name: 'ShsError', message: /no secret "other"/ });
    assert.throws(() => shs.secret('../api-token'), /not a secret name/);
  } finally {
    if (saved === undefined) delete process.env.SHS_SECRETS; else process.env.SHS_SECRETS = saved;
    fs.rmSync(folder, { recursive: true });
  }
});

test('answers initialize, then invokes', async () => {
  const { lines, status } = await script(echoFunction(), [INIT, invoke(2, { a: 1 }), invoke(7, [1, 'x'])]);
  assert.equal(status, 0);
  assert.deepEqual(lines, [
    result(1, { concurrency: 16 }),
    result(2, { input: { a: 1 }, requestId: 'req-2', function: 'f', method: 'invoke' }),
    result(7, { input: [1, 'x'], requestId: 'req-7', function: 'f', method: 'invoke' }),
  ]);
});

test('a scheduled invoke reads context.schedule', async () => {
  const fn = shs.createFunction().invoke((input, ctx) => ({ schedule: ctx.schedule }));
  const schedule = { cron: '0 */5 * * * *', time: '2026-12-06T03:05:00.000Z' };
  const scheduled = {
    jsonrpc: '2.0', id: 3, method: 'invoke',
    params: { input: {}, context: { request_id: 'r', function: 'f', schedule } },
  };
  const { lines, status } = await script(fn, [INIT, scheduled, invoke(4, {})]);
  assert.equal(status, 0);
  assert.deepEqual(lines[1], result(3, { schedule }));
  assert.deepEqual(lines[2], result(4, { schedule: null }));
});

test('unknown methods, notifications, stray answers and bad lines', async () => {
  const { lines, status, log } = await script(echoFunction(), [
    { jsonrpc: '2.0', id: 2, method: 'frobnicate' },
    { jsonrpc: '2.0', method: 'frobnicate' },
    result(99, {}),
    'not json',
    '[1]',
    '',
    `${JSON.stringify(invoke(3, 1))}\r`,
  ]);
  assert.equal(status, 0);
  assert.deepEqual(lines.map((l) => l.id), [2, 3]);
  assert.equal(lines[0].error.code, shs.METHOD_NOT_FOUND);
  assert.equal(lines[1].result.input, 1);
  assert.match(log, /nobody waits for: 99/);
  assert.match(log, /not JSON/);
});

test('no invoke handler, no event handler', async () => {
  const { lines } = await script(shs.createFunction(), [invoke(2, {}), event(3, 'a.b')]);
  assert.equal(lines[0].error.code, -32601);
  assert.equal(lines[1].error.code, -32601);
  assert.match(lines[1].error.message, /a\.b/);
});

test('errors are structured', async () => {
  const fn = shs.createFunction().invoke(async (input) => {
    if (input === 'fail') throw new shs.ShsError('nope', { code: 4242, data: { why: 'because' } });
    if (input === 'crash') throw new TypeError('boom');
    if (input === 'string') throw 'just a string'; // eslint-disable-line no-throw-literal
    if (input === 'bigint') return { n: 1n };
    return undefined;
  });
  const { lines, status, log } = await script(fn, [
    invoke(2, 'fail'), invoke(3, 'crash'), invoke(4, 'string'), invoke(5, 'bigint'), invoke(6, 'undefined'),
  ]);
  assert.equal(status, 0);
  const byId = Object.fromEntries(lines.map((l) => [l.id, l]));
  assert.deepEqual(byId[2], { jsonrpc: '2.0', id: 2, error: { code: 4242, message: 'nope', data: { why: 'because' } } });
  assert.deepEqual(byId[3].error, { code: -32000, message: 'boom', data: { exception: 'TypeError' } });
  assert.match(log, /TypeError: boom\n\s+at /);
  assert.deepEqual(byId[4].error, { code: -32000, message: 'just a string', data: { exception: 'string' } });
  assert.equal(byId[5].error.code, -32000);
  assert.match(byId[5].error.message, /not JSON/);
  assert.deepEqual(byId[6], result(6, null));
});

function eventFunction(options) {
  return shs.createFunction({ subscribe: ['audit.>'], ...options })
    .on(['user.created', 'user.updated'], (ev, ctx) => ({
      handler: 'user', id: ev.id, type: ev.type, payload: ev.payload, requestId: ctx.requestId, method: ctx.method,
    }))
    .on('quiet.thing', () => ({ handler: 'quiet' }), { subscribe: false })
    .onAny((ev) => ({ handler: 'any', type: ev.type, source: ev.source }));
}

test('events go to the handler of their type or to the catch-all', async () => {
  const { lines } = await script(eventFunction(), [
    event(2, 'user.created', { name: 'Ada' }),
    event(3, 'user.updated'),
    event(4, 'audit.login', 1),
    event(5, 'quiet.thing'),
    { jsonrpc: '2.0', id: 6, method: 'event', params: {} },
  ]);
  const byId = Object.fromEntries(lines.map((l) => [l.id, l]));
  assert.deepEqual(byId[2].result, {
    handler: 'user', id: 'ev-2', type: 'user.created', payload: { name: 'Ada' }, requestId: 'del-2', method: 'event',
  });
  assert.equal(byId[3].result.type, 'user.updated');
  assert.deepEqual(byId[4].result, { handler: 'any', type: 'audit.login', source: '/http' });
  assert.deepEqual(byId[5].result, { handler: 'quiet' });
  assert.equal(byId[6].error.code, -32602);
});

test('on() wants types and a handler', () => {
  const fn = shs.createFunction();
  assert.throws(() => fn.on(() => {}), TypeError);
  assert.throws(() => fn.on([], () => {}), TypeError);
  assert.throws(() => fn.on('a.b'), TypeError);
});

test('start-up subscriptions come before the initialize answer', async () => {
  let seen;
  const fn = eventFunction().setup(async (ctx) => {
    seen = [ctx.function, ctx.method, ctx.requestId];
    ctx.publishNoWait('f.started', {});
  });
  const sup = new Supervisor(fn);
  sup.send(INIT);
  let id = 0;
  for (const pattern of ['audit.>', 'user.created', 'user.updated']) {
    id += 1;
    assert.deepEqual(await sup.read(), { jsonrpc: '2.0', id, method: 'subscribe', params: { type: pattern } });
    sup.send(result(id, { subscribed: true, type: pattern }));
  }
  assert.deepEqual(await sup.read(), { jsonrpc: '2.0', method: 'publish', params: { type: 'f.started', payload: {} } });
  assert.deepEqual(await sup.read(), result(1, { concurrency: 16 }));
  assert.deepEqual(seen, ['f', 'initialize', null]);
  assert.equal(await sup.close(), 0);
});

test('a refused start-up subscription stops the function', async () => {
  const sup = new Supervisor(shs.createFunction({ subscribe: ['a b'] }));
  sup.send(INIT);
  const request = await sup.read();
  sup.send({ jsonrpc: '2.0', id: request.id, error: { code: -32602, message: 'invalid event type "a b"' } });
  // serve() ends without waiting for the end of input, and without answering initialize:
  // exiting before it is what makes the start a failed one.
  assert.equal(await sup.status, 1);
  assert.ok(await sup.nothingMore());
  assert.match(sup.logText, /start-up failed: subscribe failed: invalid event type/);
});

test('a failing setup stops the function', async () => {
  const fn = shs.createFunction().setup(() => { throw new Error('no database'); });
  const sup = new Supervisor(fn);
  sup.send(INIT);
  assert.equal(await sup.status, 1);
  assert.ok(await sup.nothingMore());
  assert.match(sup.logText, /start-up failed: no database/);
  assert.match(sup.logText, /Error: no database\n\s+at /);
});

test('publish waits for its answer and names the request', async () => {
  const sup = new Supervisor(callingFunction());
  sup.send(invoke(5, { action: 'publish', type: 'order.placed', payload: { n: 1 } }));
  assert.deepEqual(await sup.read(), {
    jsonrpc: '2.0', id: 1, method: 'publish', params: { type: 'order.placed', payload: { n: 1 }, request_id: 'req-5' },
  });
  assert.ok(await sup.nothingMore());
  sup.send(result(1, published('e-1')));
  assert.deepEqual(await sup.read(), result(5, { publish: published('e-1') }));
  assert.equal(await sup.close(), 0);
});

test('a refused publish is an error', async () => {
  const sup = new Supervisor(callingFunction());
  sup.send(invoke(5, { action: 'publish', type: 'a b' }));
  const request = await sup.read();
  sup.send({ jsonrpc: '2.0', id: request.id, error: { code: -32602, message: 'invalid event type' } });
  assert.deepEqual((await sup.read()).error, {
    code: -32000,
    message: 'publish failed: invalid event type',
    data: { error: { code: -32602, message: 'invalid event type' } },
  });
  assert.equal(await sup.close(), 0);
});

test('fire-and-forget is a notification', async () => {
  const { lines } = await script(callingFunction(), [invoke(5, { action: 'nowait', type: 'a.b', payload: 1 })]);
  assert.deepEqual(lines, [
    { jsonrpc: '2.0', method: 'publish', params: { type: 'a.b', payload: 1, request_id: 'req-5' } },
    result(5, 'sent'),
  ]);
});

test('subscribe and unsubscribe from a handler', async () => {
  const sup = new Supervisor(callingFunction());
  sup.send(invoke(5, { action: 'subscribe', type: 'x.*' }));
  let request = await sup.read();
  assert.equal(request.method, 'subscribe');
  sup.send(result(request.id, { subscribed: true, type: 'x.*' }));
  request = await sup.read();
  assert.equal(request.method, 'unsubscribe');
  sup.send(result(request.id, { unsubscribed: true, type: 'x.*' }));
  assert.deepEqual((await sup.read()).result, {
    sub: { subscribed: true, type: 'x.*' }, unsub: { unsubscribed: true, type: 'x.*' },
  });
  assert.equal(await sup.close(), 0);
});

test('answers are matched by id, not by order, with several requests in flight', async () => {
  let arrived = 0;
  let release;
  const allArrived = new Promise((resolve) => { release = resolve; });
  const fn = shs.createFunction().invoke(async (input, ctx) => {
    if (input.action !== 'publish') return { echo: input };
    arrived += 1;
    if (arrived === 3) release();
    await allArrived; // only passes if the 3 are handled at once
    return { n: input.n, publish: await ctx.publish('t.x', input.n) };
  });
  const sup = new Supervisor(fn);
  for (const n of [10, 11, 12]) sup.send(invoke(n, { action: 'publish', n }));
  const requests = [await sup.read(), await sup.read(), await sup.read()];
  assert.deepEqual(requests.map((r) => r.params.request_id).sort(), ['req-10', 'req-11', 'req-12']);
  sup.send(invoke(13, { n: 13 }));
  assert.deepEqual(await sup.read(), result(13, { echo: { n: 13 } }));
  for (const request of [...requests].reverse()) {
    sup.send(result(request.id, published(`ev-for-${request.params.payload}`)));
  }
  const answers = [await sup.read(), await sup.read(), await sup.read()].sort((a, b) => a.id - b.id);
  assert.deepEqual(answers.map((a) => [a.id, a.result.publish.event_id]),
    [[10, 'ev-for-10'], [11, 'ev-for-11'], [12, 'ev-for-12']]);
  assert.equal(await sup.close(), 0);
});

test('the end of input fails a waiting call, and the request is still answered', async () => {
  const sup = new Supervisor(callingFunction());
  sup.send(invoke(5, { action: 'publish' }));
  assert.equal((await sup.read()).method, 'publish');
  const status = sup.close();
  const answer = await sup.read();
  assert.equal(answer.id, 5);
  assert.match(answer.error.message, /stdin is closed/);
  assert.equal(await status, 0);
});

test('the end of input waits for requests in flight', async () => {
  const fn = shs.createFunction().invoke(async (input) => {
    await new Promise((resolve) => setTimeout(resolve, 100));
    return input;
  });
  const { lines, status } = await script(fn, [invoke(2, 'a'), invoke(3, 'b')]);
  assert.equal(status, 0);
  assert.deepEqual(lines.map((l) => l.id).sort(), [2, 3]);
});

test('the module-level API drives a default function', () => {
  assert.equal(typeof shs.invoke, 'function');
  assert.ok(shs.invoke(() => 1) instanceof shs.ShsFunction);
  assert.ok(shs.on('a.b', () => 1) instanceof shs.ShsFunction);
});

test('the package is packable with what it needs', () => {
  const pkg = require('../package.json');
  assert.equal(pkg.name, 'shs-sdk');
  assert.equal(pkg.main, 'index.js');
  assert.deepEqual(pkg.dependencies ?? {}, {});
  assert.ok(pkg.files.includes('index.js') && pkg.files.includes('index.d.ts'));
});

test('eventData gives bytes for data_base64, else the payload', () => {
  const bytes = shs.eventData({ id: 'e', type: 't', payload: null, data_base64: '/wBoaQ==' });
  assert.ok(Buffer.isBuffer(bytes));
  assert.deepEqual([...bytes], [0xff, 0x00, 0x68, 0x69]);
  assert.deepEqual(shs.eventData({ id: 'e', type: 't', payload: { n: 1 } }), { n: 1 });
  assert.equal(shs.eventData({ id: 'e', type: 't', payload: 'hi', datacontenttype: 'text/plain' }), 'hi');
});

function httpInvoke(id, input, http) {
  const message = invoke(id, input);
  message.params.http = http;
  return message;
}

test('initialize declares the concurrency, 16 unless told', async () => {
  for (const [options, expected] of [[undefined, 16], [{ concurrency: 3 }, 3]]) {
    const fn = shs.createFunction(options);
    fn.invoke((input) => input);
    const sup = new Supervisor(fn);
    sup.send(INIT);
    assert.deepEqual((await sup.read()).result, { concurrency: expected });
    await sup.close();
  }
  for (const bad of [0, -1, 1.5, 65537, '4']) {
    assert.throws(() => shs.createFunction({ concurrency: bad }), /concurrency must be/);
  }
});

test('the HTTP request is read with its form, query and bytes', async () => {
  const fn = shs.createFunction();
  fn.invoke((input, ctx) => ({
    method: ctx.http.method, path: ctx.http.path, args: ctx.http.args, form: ctx.http.form,
    type: ctx.http.header('Content-Type'), bytes: [...ctx.http.body], input,
  }));
  const sup = new Supervisor(fn);
  sup.send(INIT);
  assert.deepEqual((await sup.read()).result, { concurrency: 16 });
  sup.send(httpInvoke(2, null, {
    method: 'POST', path: '/a', query: 'x=1&y=two&x=3',
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body: 'a=1&b=two+words&c=%C3%A9', remote_addr: '127.0.0.1',
  }));
  const got = (await sup.read()).result;
  assert.deepEqual(got.args, { x: '3', y: 'two' });
  assert.deepEqual(got.form, { a: '1', b: 'two words', c: 'é' });
  assert.equal(got.type, 'application/x-www-form-urlencoded');
  sup.send(httpInvoke(3, null, { method: 'PUT', path: '/', query: '', headers: {}, body_base64: 'AAH/' }));
  const blob = (await sup.read()).result;
  assert.deepEqual(blob.bytes, [0, 1, 255]);
  assert.deepEqual(blob.form, {});
  assert.equal(await sup.close(), 0);
});

test('a Response becomes an http_response, and rawBody is asked for', async () => {
  const fn = shs.createFunction({ rawBody: true });
  fn.invoke((input) => {
    if (input.kind === 'text') {
      return new shs.Response('<p>hi</p>', { status: 201, contentType: 'text/html', headers: { 'set-cookie': ['a=1', 'b=2'] } });
    }
    if (input.kind === 'bytes') return new shs.Response(Buffer.from([0, 255]));
    if (input.kind === 'json') return new shs.Response({ a: 1 }, { status: 202 });
    return shs.Response.redirect('/x');
  });
  const sup = new Supervisor(fn);
  sup.send(INIT);
  assert.deepEqual((await sup.read()).result, { concurrency: 16, raw_body: true });
  sup.send(invoke(2, { kind: 'text' }));
  assert.deepEqual((await sup.read()).result, { http_response: {
    status: 201, headers: { 'set-cookie': ['a=1', 'b=2'], 'content-type': 'text/html' }, body: '<p>hi</p>',
  } });
  sup.send(invoke(3, { kind: 'bytes' }));
  assert.equal((await sup.read()).result.http_response.body_base64, 'AP8=');
  sup.send(invoke(4, { kind: 'json' }));
  assert.deepEqual((await sup.read()).result.http_response, { status: 202, headers: { 'content-type': 'application/json' }, body: '{"a":1}' });
  sup.send(invoke(5, { kind: 'go' }));
  assert.deepEqual((await sup.read()).result.http_response, { status: 302, headers: { location: '/x' } });
  assert.equal(await sup.close(), 0);
});

test('streaming, server-sent events and cancel', async () => {
  const fn = shs.createFunction();
  fn.invoke(async (input, ctx) => {
    if (input.sse) {
      ctx.sse({ n: 1 }, { event: 'tick', id: '1' });
      ctx.sse('two\nlines');
      return null;
    }
    ctx.stream('a', { status: 201, headers: { x: 'y' } });
    ctx.stream(Buffer.from([0]));
    await new Promise((resolve) => ctx.signal.addEventListener('abort', resolve));
    return { cancelled: ctx.cancelled };
  });
  const sup = new Supervisor(fn);
  sup.send(INIT);
  await sup.read();
  sup.send(invoke(7, { sse: true }));
  assert.deepEqual(await sup.read(), { jsonrpc: '2.0', method: 'stream', params: {
    id: 7, chunk: 'event: tick\nid: 1\ndata: {"n":1}\n\n',
    headers: { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' },
  } });
  assert.deepEqual((await sup.read()).params, { id: 7, chunk: 'data: two\ndata: lines\n\n' });
  assert.equal((await sup.read()).id, 7);
  sup.send(invoke(8, {}));
  assert.deepEqual((await sup.read()).params, { id: 8, chunk: 'a', status: 201, headers: { x: 'y' } });
  assert.deepEqual((await sup.read()).params, { id: 8, chunk_base64: 'AA==' });
  sup.send({ jsonrpc: '2.0', method: 'cancel', params: { id: 8 } });
  assert.deepEqual(await sup.read(), { jsonrpc: '2.0', id: 8, result: { cancelled: true } });
  assert.equal(await sup.close(), 0);
});
