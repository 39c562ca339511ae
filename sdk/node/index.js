/*
 * shs-sdk: write shs functions in Node.js, without knowing the protocol.
 *
 * No dependencies; CommonJS; Node 18+.
 *
 *   const shs = require('shs-sdk');
 *
 *   shs.invoke(async (input, ctx) => {
 *     const result = await ctx.publish('greeting.sent', { name: input.name }); // waits for subscribers
 *     return { message: `Hello, ${input.name}!`, delivered: result.delivered };
 *   });
 *
 *   shs.on('user.created', async (event, ctx) => {   // also subscribes at start-up
 *     ctx.log('welcome,', event.payload.name);
 *   });
 *
 *   shs.run();
 *
 * What the SDK does for you:
 * - answers `initialize`, after making the start-up subscriptions (the types of your event
 *   handlers, and those given to `subscribe(...)`) and running your `setup` function, so that
 *   they are in force before the first event;
 * - calls your handlers: `invoke` for POST /run/NAME, `on(type)` for events of exactly that
 *   type, `onAny` for any other (pattern subscriptions);
 * - gives each handler a Context to publish (`ctx.publish` waits for the subscribers,
 *   `ctx.publishNoWait` does not), subscribe, unsubscribe and log;
 * - turns what a handler returns (or resolves to) into the answer, a thrown ShsError into a
 *   JSON-RPC error {code, message, data}, and any other exception into code -32000 with its
 *   message (and the stack in the log);
 * - handles requests concurrently (each handler is its own promise) and gives each waiting
 *   call its own answer, matched by id;
 * - exits with status 0 when the supervisor closes stdin, after the requests in flight are done.
 *
 * stdout carries the protocol: do not console.log() to it. Log with ctx.log(...), shs.log(...)
 * or console.error(...).
 */

'use strict';

const fs = require('node:fs');
const path = require('node:path');
const readline = require('node:readline');
const util = require('node:util');

/** The conventional code of a function's own failure. */
const FUNCTION_ERROR = -32000;
/** The code for parameters that do not fit. */
const INVALID_PARAMS = -32602;
/** The code for a method (or event type) nobody handles. */
const METHOD_NOT_FOUND = -32601;
/**
 * Requests a process takes at once, declared in the answer to initialize: each handler is its
 * own promise, so one that awaits (a publish, I/O) holds up nobody.
 */
const DEFAULT_CONCURRENCY = 16;

// Marks ShsErrors, so that one thrown by another copy of this module is recognised too.
const MARK = Symbol.for('shs-sdk.error');

/**
 * An error to answer with: `throw new ShsError('no such order', { code: 404, data: {...} })`.
 * POST /run/NAME answers it as a 500 with this code, message and data. ctx.publish and the
 * other calls throw it too when the supervisor answers with an error.
 */
class ShsError extends Error {
  constructor(message, { code = FUNCTION_ERROR, data } = {}) {
    super(message);
    this.name = 'ShsError';
    this.code = Number.isInteger(code) ? code : FUNCTION_ERROR;
    this.data = data;
    Object.defineProperty(this, MARK, { value: true });
  }

  /** The wire form, {code, message, data?}. */
  toJSON() {
    const error = { code: this.code, message: this.message };
    if (this.data !== undefined) error.data = this.data;
    return error;
  }
}

function isShsError(err) {
  return err instanceof ShsError || (err !== null && typeof err === 'object' && err[MARK] === true);
}

function closedError(method) {
  return new ShsError(
    `${method} failed: stdin is closed, no answer can come (the supervisor is stopping this process)`,
  );
}

/** The streams and the calls waiting for an answer, by id. */
class Connection {
  constructor(output, log) {
    this.output = output;
    this.logStream = log;
    this.pending = new Map();
    this.nextId = 0;
    this.closed = false;
  }

  /** Writes one message as one line. Throws (before writing) if it is not JSON. */
  send(message) {
    const line = JSON.stringify(message);
    this.output.write(`${line}\n`);
  }

  log(text) {
    try {
      this.logStream.write(`${text}\n`);
    } catch (_) {
      // Nowhere to say it.
    }
  }

  /** Sends a request; resolves to its result, or rejects with a ShsError. */
  call(method, params) {
    if (this.closed) return Promise.reject(closedError(method));
    this.nextId += 1;
    const id = this.nextId;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject, method });
      try {
        this.send({ jsonrpc: '2.0', id, method, params });
      } catch (err) {
        this.pending.delete(id);
        reject(err);
      }
    });
  }

  notify(method, params) {
    this.send({ jsonrpc: '2.0', method, params });
  }

  /** Hands an answer to the call waiting for its id. */
  resolve(answer) {
    const waiting = this.pending.get(answer.id);
    if (waiting === undefined) {
      this.log(`shs-sdk: ignoring an answer with an id nobody waits for: ${JSON.stringify(answer.id)}`);
      return;
    }
    this.pending.delete(answer.id);
    if ('error' in answer) {
      const error = answer.error !== null && typeof answer.error === 'object' ? answer.error : {};
      waiting.reject(new ShsError(`${waiting.method} failed: ${error.message ?? 'unknown error'}`, {
        data: { error },
      }));
    } else {
      waiting.resolve(answer.result);
    }
  }

  /** The end of input: every call still waiting fails. */
  close() {
    this.closed = true;
    for (const waiting of this.pending.values()) waiting.reject(closedError(waiting.method));
    this.pending.clear();
  }
}

/**
 * The HTTP request an invoke came with (`ctx.http`; null for other invokes): `method` (HEAD
 * arrives as GET), `path` (after /run/NAME, '/' when none), `query` (raw), `headers` (lower-case
 * names, repeated values joined with ', '), `body` (a Buffer: the raw bytes; empty for a JSON
 * body unless the function asked for rawBody), `remoteAddr`.
 */
class Request {
  constructor(http) {
    this.method = http.method ?? '';
    this.path = http.path ?? '/';
    this.query = http.query ?? '';
    this.headers = isObject(http.headers) ? { ...http.headers } : {};
    this.remoteAddr = http.remote_addr ?? null;
    this.body = typeof http.body_base64 === 'string'
      ? Buffer.from(http.body_base64, 'base64')
      : Buffer.from(typeof http.body === 'string' ? http.body : '', 'utf8');
  }

  /** A header's value, by name in any case. */
  header(name) {
    return this.headers[String(name).toLowerCase()];
  }

  /** The body as text (UTF-8). */
  get text() {
    return this.body.toString('utf8');
  }

  /** The query's parameters: an object of name -> value (the last one, when repeated). */
  get args() {
    return Object.fromEntries(new URLSearchParams(this.query));
  }

  /** The fields of an application/x-www-form-urlencoded body (the last value of each); {} otherwise. */
  get form() {
    const type = (this.header('content-type') ?? '').split(';')[0].trim().toLowerCase();
    if (type !== 'application/x-www-form-urlencoded') return {};
    return Object.fromEntries(new URLSearchParams(this.text));
  }
}

/**
 * An HTTP answer: return it from an invoke handler. `body`: a string (text, default
 * text/plain; charset=utf-8), a Buffer/Uint8Array (default application/octet-stream), anything
 * else JSON can encode (application/json), or null for none. `headers`: name -> string, or ->
 * an array of strings for a header sent several times (set-cookie).
 */
class Response {
  constructor(body = null, { status = 200, headers = {}, contentType } = {}) {
    this.body = body;
    this.status = status;
    this.headers = { ...headers };
    if (contentType !== undefined) this.headers['content-type'] = contentType;
  }

  /** A redirect to `location`. */
  static redirect(location, status = 302) {
    return new Response(null, { status, headers: { location } });
  }

  /** The {http_response: {...}} result this stands for. */
  toJSON() {
    const response = { status: this.status, headers: { ...this.headers } };
    const hasType = Object.keys(this.headers).some((k) => k.toLowerCase() === 'content-type');
    if (this.body instanceof Uint8Array) {
      response.body_base64 = Buffer.from(this.body).toString('base64');
    } else if (typeof this.body === 'string') {
      response.body = this.body;
    } else if (this.body !== null && this.body !== undefined) {
      response.body = JSON.stringify(this.body);
      if (!hasType) response.headers['content-type'] = 'application/json';
    }
    return { http_response: response };
  }
}

/** One server-sent event as text: data (a string, or JSON), optional event, id, retry (ms). */
function sseEvent(data, { event, id, retry } = {}) {
  const text = typeof data === 'string' ? data : JSON.stringify(data);
  const lines = [];
  if (event !== undefined) lines.push(`event: ${event}`);
  if (id !== undefined) lines.push(`id: ${id}`);
  if (retry !== undefined) lines.push(`retry: ${Math.trunc(retry)}`);
  for (const line of text.split('\n')) lines.push(`data: ${line}`);
  return `${lines.join('\n')}\n\n`;
}

/**
 * The request being handled, and the way to talk to the supervisor while handling it.
 * `requestId` (for an HTTP invoke, its X-Request-Id; null in setup), `function` (the
 * function's name), `method` ('invoke', 'event' or 'initialize'), `http` (the Request of an
 * invoke made over HTTP, else null), `signal` (an AbortSignal aborted when the HTTP client went
 * away).
 */
class Context {
  #connection;
  #callId;
  #streaming = false;
  #abort = new AbortController();

  constructor(connection, requestId, functionName, method, callId = null, http = null, schedule = null) {
    this.#connection = connection;
    this.#callId = callId;
    this.requestId = requestId ?? null;
    this.function = functionName ?? null;
    this.method = method;
    this.http = isObject(http) ? new Request(http) : null;
    this.schedule = isObject(schedule) ? schedule : null;
    this.signal = this.#abort.signal;
  }

  /** Whether the HTTP client went away. */
  get cancelled() {
    return this.signal.aborted;
  }

  /** @internal the supervisor sent cancel for this invoke. */
  cancel() {
    this.#abort.abort();
  }

  /**
   * Sends a chunk of a streamed answer (a string or a Buffer) to the HTTP client now. The first
   * call starts the answer, with `status` and `headers` if given; the handler's return ends it.
   */
  stream(chunk, { status, headers } = {}) {
    if (this.#callId === null) throw new ShsError('only an invoke can stream');
    const params = { id: this.#callId };
    if (chunk instanceof Uint8Array) params.chunk_base64 = Buffer.from(chunk).toString('base64');
    else params.chunk = String(chunk);
    if (!this.#streaming) {
      if (status !== undefined) params.status = status;
      if (headers !== undefined) params.headers = headers;
    }
    this.#streaming = true;
    this.#connection.notify('stream', params);
  }

  /** Sends one server-sent event (see sseEvent); the first starts a text/event-stream answer. */
  sse(data, options) {
    const headers = this.#streaming
      ? undefined
      : { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' };
    this.stream(sseEvent(data, options), { headers });
  }

  #params(type, payload) {
    const params = { type, payload: payload === undefined ? null : payload };
    // Lets the supervisor attribute the publish to this request when several are in flight:
    // hop counting and cycle detection then follow the right chain.
    if (this.requestId) params.request_id = this.requestId;
    return params;
  }

  /**
   * Publishes an event and waits until every subscriber has taken it (or failed). Resolves to
   * {published: true, event_id, delivered, errors: [{function, message}]}.
   */
  publish(type, payload) {
    return this.#connection.call('publish', this.#params(type, payload));
  }

  /** Publishes an event without waiting for anything (fire-and-forget). */
  publishNoWait(type, payload) {
    this.#connection.notify('publish', this.#params(type, payload));
  }

  /** Subscribes the function to an event type or pattern; resolves to {subscribed, type}. */
  subscribe(pattern) {
    return this.#connection.call('subscribe', { type: pattern });
  }

  /** Drops the subscription to exactly this pattern; resolves to {unsubscribed, type}. */
  unsubscribe(pattern) {
    return this.#connection.call('unsubscribe', { type: pattern });
  }

  /** Writes one line to the function's log (stderr), formatted like console.log. */
  log(...parts) {
    this.#connection.log(util.format(...parts));
  }
}

function isObject(value) {
  return value !== null && typeof value === 'object' && !Array.isArray(value);
}

/** A function: its handlers and subscriptions. Register handlers, then run(). */
class ShsFunction {
  /**
   * @param {object} [options]
   * @param {string[]} [options.subscribe] event types or patterns to subscribe to at start-up
   * @param {boolean} [options.autoSubscribe=true] whether on(type) subscribes to type at start-up
   * @param {boolean} [options.rawBody=false] get the raw body of HTTP requests (ctx.http.body)
   *   even when it is JSON
   * @param {number} [options.concurrency=16] requests it takes at once, declared to shs in the
   *   answer to initialize (a `concurrency` in function.toml wins)
   */
  #running = new Map(); // invoke id -> Context, for cancel

  constructor({ subscribe = [], autoSubscribe = true, rawBody = false, concurrency = DEFAULT_CONCURRENCY } = {}) {
    if (!Number.isInteger(concurrency) || concurrency < 1 || concurrency > 65536) {
      throw new RangeError(`concurrency must be a whole number from 1 to 65536, not ${concurrency}`);
    }
    this.concurrency = concurrency;
    this.autoSubscribe = autoSubscribe;
    this.rawBody = rawBody;
    this.subscriptions = [];
    this.invokeHandler = null;
    this.eventHandlers = new Map();
    this.anyEventHandler = null;
    this.setupHandler = null;
    this.subscribe(...subscribe);
  }

  /** handler(input, ctx) answers POST /run/NAME: input is the body, the result the response. */
  invoke(handler) {
    this.invokeHandler = handler;
    return this;
  }

  /**
   * handler(event, ctx) handles events of exactly this type (or these types), and subscribes
   * to them at start-up unless {subscribe: false}.
   */
  on(types, handler, { subscribe } = {}) {
    const list = Array.isArray(types) ? types : [types];
    if (list.length === 0 || !list.every((t) => typeof t === 'string') || typeof handler !== 'function') {
      throw new TypeError('use on("some.type", handler) (or on(["a", "b"], handler)); onAny(handler) takes every other event');
    }
    for (const type of list) {
      this.eventHandlers.set(type, handler);
      if (subscribe ?? this.autoSubscribe) this.subscribe(type);
    }
    return this;
  }

  /** handler(event, ctx) handles every event no on(type) handler takes. */
  onAny(handler) {
    this.anyEventHandler = handler;
    return this;
  }

  /** Subscribes to these event types or patterns at start-up. */
  subscribe(...patterns) {
    for (const pattern of patterns) {
      if (typeof pattern !== 'string') throw new TypeError(`an event type or pattern is a string, not ${pattern}`);
      if (!this.subscriptions.includes(pattern)) this.subscriptions.push(pattern);
    }
    return this;
  }

  /**
   * handler(ctx) runs at start-up, before the function answers initialize (after the start-up
   * subscriptions). If it throws, the process logs why and exits with status 1.
   */
  setup(handler) {
    this.setupHandler = handler;
    return this;
  }

  /**
   * Serves over process.stdin and process.stdout until stdin closes, then exits: with status 0,
   * or 1 if start-up failed.
   */
  async run() {
    const code = await this.serve();
    // Exit even if a handler left a timer or a socket behind; stdout first.
    process.stdout.write('', () => process.exit(code));
  }

  /**
   * Serves over the given streams until the end of input. Resolves to the exit status: 0, or 1
   * if start-up failed.
   */
  serve({ input = process.stdin, output = process.stdout, log = process.stderr } = {}) {
    return new Promise((resolveServe) => {
      const connection = new Connection(output, log);
      const inFlight = new Set();
      const lines = readline.createInterface({ input, crlfDelay: Infinity });
      let done = false;
      const finish = async (code) => {
        if (done) return;
        done = true;
        lines.close();
        connection.close();
        await Promise.allSettled([...inFlight]);
        resolveServe(code);
      };
      lines.on('line', (line) => {
        if (done) return;
        const message = parse(connection, line);
        if (message === null) return;
        if (!('method' in message)) {
          connection.resolve(message);
          return;
        }
        if (message.method === 'cancel' && !('id' in message)) {
          const target = isObject(message.params) ? message.params.id : undefined;
          this.#running.get(target)?.cancel();
          return;
        }
        const task = this.#handle(connection, message).then(
          (ok) => {
            if (ok === false) finish(1);
          },
          (err) => connection.log(`shs-sdk: ${err instanceof Error ? err.stack : String(err)}`),
        );
        inFlight.add(task);
        task.finally(() => inFlight.delete(task));
      });
      lines.on('close', () => finish(0));
    });
  }

  /** Handles one request or notification; resolves to false if start-up failed. */
  async #handle(connection, message) {
    const { method } = message;
    if (!('id' in message) || message.id === null) {
      connection.log(`shs-sdk: ignoring a notification ${JSON.stringify(method)}`);
      return true;
    }
    const params = isObject(message.params) ? message.params : {};
    if (method === 'initialize') return this.#initialize(connection, message.id, params);
    let outcome;
    if (method === 'invoke') outcome = await this.#runInvoke(connection, params, message.id);
    else if (method === 'event') outcome = await this.#runEvent(connection, params);
    else outcome = new ShsError(`method not found: ${JSON.stringify(method)}`, { code: METHOD_NOT_FOUND });
    answer(connection, message.id, outcome);
    return true;
  }

  async #runInvoke(connection, params, callId) {
    if (this.invokeHandler === null) {
      return new ShsError('method not found: "invoke" (this function has no invoke handler)', { code: METHOD_NOT_FOUND });
    }
    const about = isObject(params.context) ? params.context : {};
    const ctx = new Context(connection, about.request_id, about.function, 'invoke', callId, params.http, about.schedule);
    this.#running.set(callId, ctx);
    try {
      const outcome = await guarded(connection, this.invokeHandler, params.input === undefined ? null : params.input, ctx);
      return outcome instanceof Response ? outcome.toJSON() : outcome;
    } finally {
      this.#running.delete(callId);
    }
  }

  #runEvent(connection, params) {
    const { event } = params;
    if (!isObject(event)) return new ShsError('invalid params: no event', { code: INVALID_PARAMS });
    const handler = this.eventHandlers.get(event.type) ?? this.anyEventHandler;
    if (handler === null || handler === undefined) {
      return new ShsError(`no handler for event type ${JSON.stringify(event.type)}`, { code: METHOD_NOT_FOUND });
    }
    return guarded(connection, handler, event, context(connection, params, 'event'));
  }

  async #initialize(connection, id, params) {
    const ctx = new Context(connection, null, params.function, 'initialize');
    try {
      for (const pattern of this.subscriptions) await ctx.subscribe(pattern);
      if (this.setupHandler !== null) await this.setupHandler(ctx);
    } catch (err) {
      if (!isShsError(err)) connection.log(err instanceof Error ? err.stack : String(err));
      // No answer: a process that exits before it answers initialize is a failed start,
      // which the supervisor reports with the last lines of the log (this one).
      connection.log(`shs-sdk: start-up failed: ${err instanceof Error ? err.message : String(err)}`);
      return false;
    }
    // Declares how many requests it takes at once (each handler is its own promise).
    answer(connection, id, this.rawBody ? { concurrency: this.concurrency, raw_body: true } : { concurrency: this.concurrency });
    return true;
  }
}

function context(connection, params, method) {
  const ctx = isObject(params.context) ? params.context : {};
  return new Context(connection, ctx.request_id, ctx.function, method);
}

/** Runs a handler: resolves to its result, or to the ShsError to answer with. */
async function guarded(connection, handler, argument, ctx) {
  try {
    return await handler(argument, ctx);
  } catch (err) {
    if (isShsError(err)) return err;
    connection.log(err instanceof Error ? err.stack : `uncaught: ${util.inspect(err)}`);
    const message = err instanceof Error ? err.message || err.name : String(err);
    return new ShsError(message, {
      data: { exception: err instanceof Error ? err.name : typeof err },
    });
  }
}

function answer(connection, id, outcome) {
  const message = isShsError(outcome)
    ? { jsonrpc: '2.0', id, error: ShsError.prototype.toJSON.call(outcome) }
    : { jsonrpc: '2.0', id, result: outcome === undefined ? null : outcome };
  try {
    connection.send(message);
  } catch (err) { // a BigInt, a cycle, ...: the result is not JSON
    connection.log(`shs-sdk: the answer is not JSON: ${err.message}`);
    connection.send({
      jsonrpc: '2.0',
      id,
      error: { code: FUNCTION_ERROR, message: `the handler's result is not JSON: ${err.message}` },
    });
  }
}

function parse(connection, line) {
  if (!line.trim()) return null;
  let message;
  try {
    message = JSON.parse(line);
  } catch (err) {
    connection.log(`shs-sdk: ignoring a stdin line that is not JSON: ${err.message}`);
    return null;
  }
  if (!isObject(message)) {
    connection.log('shs-sdk: ignoring a stdin line that is not a JSON object');
    return null;
  }
  if (!('method' in message) && !('result' in message) && !('error' in message)) {
    connection.log('shs-sdk: ignoring a stdin line that is not a JSON-RPC message');
    return null;
  }
  return message;
}

/** Creates a function object, for those who prefer one to the module-level functions. */
function createFunction(options) {
  return new ShsFunction(options);
}

/**
 * The data of an event whatever its content type: a Buffer when the supervisor sent it as
 * `data_base64` (data that is neither JSON nor UTF-8 text, e.g. application/octet-stream), else
 * its `payload` (JSON as it is, text as a string, null when there is none).
 */
function eventData(event) {
  if (isObject(event) && typeof event.data_base64 === 'string') {
    return Buffer.from(event.data_base64, 'base64');
  }
  return isObject(event) ? event.payload : undefined;
}

/**
 * The value of secret `name`: a file of the folder `$SHS_SECRETS`, which holds the secrets the
 * function names in `secrets = [...]` of its function.toml. Throws an `ShsError` (never showing
 * a value) when the function has no such secret.
 */
function secret(name) {
  const folder = process.env.SHS_SECRETS;
  if (!folder) {
    throw new ShsError(`no secrets: name them in function.toml, e.g. secrets = [${JSON.stringify(String(name))}]`);
  }
  if (typeof name !== 'string' || !name || name.includes('/') || name.startsWith('.')) {
    throw new ShsError(`${JSON.stringify(name)} is not a secret name`);
  }
  try {
    return fs.readFileSync(path.join(folder, name), 'utf8');
  } catch (err) {
    if (err.code === 'ENOENT') {
      throw new ShsError(`no secret ${JSON.stringify(name)}: name it in secrets = [...] of function.toml`);
    }
    throw err;
  }
}

/** Writes one line to the function's log (stderr), formatted like console.log. */
function log(...parts) {
  process.stderr.write(`${util.format(...parts)}\n`);
}

// The module-level API works on one default function.
const defaultFunction = new ShsFunction();

module.exports = {
  invoke: (handler) => defaultFunction.invoke(handler),
  on: (types, handler, options) => defaultFunction.on(types, handler, options),
  onAny: (handler) => defaultFunction.onAny(handler),
  subscribe: (...patterns) => defaultFunction.subscribe(...patterns),
  setup: (handler) => defaultFunction.setup(handler),
  run: () => defaultFunction.run(),
  serve: (streams) => defaultFunction.serve(streams),
  log,
  secret,
  eventData,
  createFunction,
  ShsFunction,
  ShsError,
  Context,
  Request,
  Response,
  sseEvent,
  FUNCTION_ERROR,
  INVALID_PARAMS,
  METHOD_NOT_FOUND,
};
