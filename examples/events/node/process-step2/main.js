#!/usr/bin/env node
/*
 * process-step2: the middle of the three-step chain (see process-step1).
 *
 * Subscribes to process.step1.completed by ANSWERING `initialize` with
 *     {"subscribe": ["process.step1.completed"]}
 * the second way to subscribe at start-up (event-subscriber and process-step3
 * send `subscribe` requests instead). Either way the subscription is in force
 * as soon as the function has started, before the first event.
 *
 * On process.step1.completed: publishes process.step2.completed with the same
 * payload and "step2" appended to "steps", and answers the event with
 *     {"step": 2, "publish": <the supervisor's answer to publish>}
 *
 * Deploy: mkdir -p functions/process-step2 && cp main.js functions/process-step2/
 * Runs as `node main.js` in its folder; no dependencies, Node 18+.
 */

'use strict';

const readline = require('node:readline');

// ---------------------------------------------------------------------------
// Protocol plumbing: the same in every example, copy it as it is.
//
// stdout carries protocol messages only: one JSON object per line. Anything
// else you want to say goes to stderr with log(), which shs captures line by
// line as this function's log. (console.log() writes to stdout, so do not use
// it for logging here.)
// ---------------------------------------------------------------------------

const FUNCTION_ERROR = -32000; // the usual code for "the function itself failed"
const INVALID_PARAMS = -32602;
const METHOD_NOT_FOUND = -32601;

/** A JSON-RPC error: one the supervisor answered us, or one we answer it. */
class RpcError extends Error {
  constructor(code, message, data) {
    super(message);
    this.code = code;
    this.data = data;
  }
}

/** The supervisor closed our stdin: it wants us to exit. */
class StdinClosed extends Error {}

/** Write one line to the function's log (stderr). */
function log(message) {
  process.stderr.write(`${message}\n`);
}

/** Write one protocol message to stdout, as one line. */
function send(message) {
  const line = JSON.stringify(message); // throws before writing anything
  process.stdout.write(`${line}\n`);
}

// stdin, one line at a time: `await lines.next()` gives the next line.
const stdin = readline.createInterface({ input: process.stdin, crlfDelay: Infinity });
const lines = stdin[Symbol.asyncIterator]();

/** Read the next JSON object from stdin. Throws StdinClosed at the end. */
async function readMessage() {
  for (;;) {
    const { value, done } = await lines.next();
    if (done) throw new StdinClosed('stdin closed');
    if (!value.trim()) continue;
    let message;
    try {
      message = JSON.parse(value);
    } catch (err) {
      log(`ignoring a line that is not JSON: ${err.message}`);
      continue;
    }
    if (message !== null && typeof message === 'object' && !Array.isArray(message)) return message;
    log('ignoring a line that is not a JSON object');
  }
}

let nextId = 0;
// Requests from the supervisor that arrived while we were waiting for the
// answer to one of ours. With the default concurrency of 1 this never happens
// (the supervisor then sends us nothing but answers); with `concurrency = N` it
// can, and the main loop handles them once the current request is done.
const pending = [];

/**
 * Send a request to the supervisor and wait for its answer.
 * Resolves to the answer's `result`, or throws RpcError with its `error`.
 */
async function call(method, params) {
  nextId += 1;
  const id = nextId;
  send({ jsonrpc: '2.0', id, method, params });
  for (;;) {
    const message = await readMessage();
    if ('method' in message) {
      log(`${message.method} request arrived while waiting for ${method}; handling it later`);
      pending.push(message);
    } else if (message.id === id && 'error' in message) {
      const error = message.error !== null && typeof message.error === 'object' ? message.error : {};
      // Thrown as this function's own failure, keeping the original error in
      // `data`, so that a handler that lets it through answers
      // "publish failed: ..." rather than the supervisor's error code.
      throw new RpcError(FUNCTION_ERROR, `${method} failed: ${error.message ?? 'unknown error'}`, { error });
    } else if (message.id === id && 'result' in message) {
      return message.result;
    } else {
      log(`ignoring an answer nobody is waiting for: ${JSON.stringify(message)}`);
    }
  }
}

/**
 * Publish an event and wait until every subscriber has answered.
 * Resolves to {published: true, event_id, delivered, errors: [{function, message}, ...]}.
 * (Sending the same message without an `id` would be fire-and-forget.)
 */
function publish(type, payload) {
  return call('publish', { type, payload });
}

/** Subscribe this function to an event type; resolves to {subscribed: true, type}. */
function subscribe(type) {
  return call('subscribe', { type });
}

/**
 * Answer the supervisor's requests with `handlers` until stdin closes.
 * `handlers` maps a method name ('initialize', 'invoke', 'event') to an
 * (async) function that takes the request's params and returns the result.
 * An exception in a handler becomes an error answer; the process goes on.
 */
async function serve(handlers) {
  for (;;) {
    const message = pending.length > 0 ? pending.shift() : await readMessage();
    const { method } = message;
    if (typeof method !== 'string') {
      log(`ignoring a message that is not a request: ${JSON.stringify(message)}`);
      continue;
    }
    const isRequest = 'id' in message; // no id: a notification, never answered
    const handler = Object.prototype.hasOwnProperty.call(handlers, method) ? handlers[method] : undefined;
    if (handler === undefined) {
      if (isRequest) {
        send({ jsonrpc: '2.0', id: message.id,
               error: { code: METHOD_NOT_FOUND, message: `method not found: ${method}` } });
      } else {
        log(`ignoring notification ${method}`);
      }
      continue;
    }
    const params = message.params !== null && typeof message.params === 'object' && !Array.isArray(message.params)
      ? message.params
      : {};
    const reply = { jsonrpc: '2.0', id: message.id };
    try {
      const result = await handler(params);
      reply.result = result === undefined ? null : result; // JSON has no undefined
    } catch (err) {
      if (err instanceof StdinClosed) throw err;
      if (err instanceof RpcError) {
        reply.error = { code: err.code, message: err.message };
        if (err.data !== undefined) reply.error.data = err.data;
      } else { // a bug or bad input: answer an error, keep running
        log(err instanceof Error ? err.stack : String(err));
        reply.error = {
          code: FUNCTION_ERROR,
          message: `${method} failed: ${err instanceof Error ? err.message : String(err)}`,
          data: { exception: err instanceof Error ? err.name : typeof err },
        };
      }
    }
    if (!isRequest) continue;
    try {
      send(reply);
    } catch (err) { // the result cannot be written as JSON (a BigInt, a cycle, ...)
      log(`${method} returned a result that is not JSON: ${err.message}`);
      send({ jsonrpc: '2.0', id: message.id,
             error: { code: FUNCTION_ERROR, message: `${method} failed: its result is not JSON: ${err.message}` } });
    }
  }
}

/** serve() until the supervisor closes stdin, then exit 0. */
function run(handlers) {
  serve(handlers)
    .catch((err) => {
      if (err instanceof StdinClosed) return; // the normal way out
      log(err instanceof Error ? err.stack : String(err));
      process.exitCode = 1;
    })
    // Nothing is left for the event loop: node exits on its own, after stdout
    // has drained, with code 0 (unless set to 1 just above).
    .finally(() => stdin.close());
}

// ---------------------------------------------------------------------------
// The function itself.
// ---------------------------------------------------------------------------

const STEP = 2;
const LISTENS_TO = 'process.step1.completed';
const PUBLISHES = 'process.step2.completed';

/** A copy of the previous step's payload with `step` appended to "steps". */
function nextPayload(payload, step) {
  const previous = payload !== null && typeof payload === 'object' && !Array.isArray(payload)
    ? payload
    : { order: payload ?? null };
  const steps = Array.isArray(previous.steps) ? previous.steps : [];
  return { ...previous, steps: [...steps, step] };
}

/** Answer with the event types to subscribe to. */
function onInitialize(params) {
  log(`${params.function} ready, subscribing to ${LISTENS_TO}`);
  return { subscribe: [LISTENS_TO] };
}

/** process.step1.completed arrived: do step 2, then tell the next step. */
async function onEvent(params) {
  const { event } = params;
  if (event === null || typeof event !== 'object' || Array.isArray(event)) {
    throw new RpcError(INVALID_PARAMS, 'params.event must be an object');
  }
  if (event.type !== LISTENS_TO) {
    log(`ignoring ${event.type} ${event.id}`);
    return { step: STEP, ignored: event.type ?? null };
  }
  // ... the real work of step 2 would go here ...
  const payload = nextPayload(event.payload, 'step2');
  const result = await publish(PUBLISHES, payload);
  log(`${event.id} -> published ${PUBLISHES} as ${result.event_id}: delivered to ${result.delivered}`);
  return { step: STEP, publish: result };
}

/** This step is driven by events; an invoke only says so. */
function onInvoke() {
  return {
    step: STEP,
    message: `process-step2 runs on ${LISTENS_TO} events; start the chain with POST /run/process-step1`,
  };
}

run({ initialize: onInitialize, event: onEvent, invoke: onInvoke });
