/*
 * {{name}}: an shs function in Node.js, on the shs Node SDK (node_modules/shs-sdk).
 *
 * Invoke:  shs invoke {{name}} '{"name": "Ada"}'      -> {"message": "Hello, Ada!"}
 * Event:   shs publish {{name}}.ping '{"from": "me"}'
 * Test:    node --test                             (runs main.test.js)
 * Logs:    shs logs {{name}} -f
 *
 * The SDK speaks the shs protocol for you: JSON-RPC 2.0, one message per line, over stdin and
 * stdout (see docs/protocol.md in the shs repository). So stdout is not yours: never
 * console.log() to it. Log with ctx.log(...) or console.error(...); the server keeps those
 * lines (`shs logs {{name}}`). Processes come and go: keep nothing in memory between requests
 * that you cannot lose.
 */

'use strict';

const shs = require('shs-sdk');

/**
 * POST /run/{{name}}: `input` is the request body (any JSON); the (awaited) return value is the
 * response. Throw new shs.ShsError(message, { code, data }) to answer with an error.
 */
async function greet(input, ctx) {
  let name = input !== null && typeof input === 'object' ? input.name : undefined;
  if (typeof name !== 'string' || name === '') name = 'world';
  ctx.log('greeting', name);
  // To tell other functions, publish an event (waits until every subscriber has taken it):
  //   await ctx.publish('greeting.sent', { name });
  return { message: `Hello, ${name}!` };
}

/**
 * Events of type {{name}}.ping, e.g. from `shs publish {{name}}.ping '{}'`. The value returned
 * is not used; throwing makes the delivery fail (listed in the publisher's errors).
 */
async function onPing(event, ctx) {
  ctx.log('ping', event.id, 'from', event.source, 'with', JSON.stringify(event.payload));
  return { pong: true };
}

const fn = shs.createFunction()
  .invoke(greet)
  .on('{{name}}.ping', onPing); // subscribes to {{name}}.ping at start-up

module.exports = { fn, greet, onPing };

if (require.main === module) fn.run();
