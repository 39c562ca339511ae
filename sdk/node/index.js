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
 * The request being handled, and the way to talk to the supervisor while handling it.
 * `requestId` (for an HTTP invoke, its X-Request-Id; null in setup), `function` (the
 * function's name), `method` ('invoke', 'event' or 'initialize').
 */
class Context {
  #connection;

  constructor(connection, requestId, functionName, method) {
    this.#connection = connection;
    this.requestId = requestId ?? null;
    this.function = functionName ?? null;
    this.method = method;
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
   */
  constructor({ subscribe = [], autoSubscribe = true } = {}) {
    this.autoSubscribe = autoSubscribe;
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
    if (method === 'invoke') outcome = await this.#runInvoke(connection, params);
    else if (method === 'event') outcome = await this.#runEvent(connection, params);
    else outcome = new ShsError(`method not found: ${JSON.stringify(method)}`, { code: METHOD_NOT_FOUND });
    answer(connection, message.id, outcome);
    return true;
  }

  #runInvoke(connection, params) {
    if (this.invokeHandler === null) {
      return new ShsError('method not found: "invoke" (this function has no invoke handler)', { code: METHOD_NOT_FOUND });
    }
    const ctx = context(connection, params, 'invoke');
    return guarded(connection, this.invokeHandler, params.input === undefined ? null : params.input, ctx);
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
    answer(connection, id, {});
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
  FUNCTION_ERROR,
  INVALID_PARAMS,
  METHOD_NOT_FOUND,
};
