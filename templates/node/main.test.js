// Tests of {{name}}'s handlers, with no server: run `node --test` in this folder.
//
// The handlers are plain functions: call them with an input (or an event) and a stand-in for
// the context. (To play the whole protocol instead, `fn.serve({ input, output, log })` runs the
// function over any streams; see the SDK's own tests.)

'use strict';

const test = require('node:test');
const assert = require('node:assert/strict');

const { greet, onPing } = require('./main.js');

/** Stands in for the SDK's context: records what a handler logs and publishes. */
function fakeContext() {
  return {
    requestId: 'test-request',
    function: '{{name}}',
    method: 'invoke',
    logged: [],
    published: [],
    log(...parts) {
      this.logged.push(parts.join(' '));
    },
    async publish(type, payload) {
      this.published.push([type, payload]);
      return { published: true, event_id: 'test-event', delivered: 0, errors: [] };
    },
    publishNoWait(type, payload) {
      this.published.push([type, payload]);
    },
  };
}

test('greets by name', async () => {
  const ctx = fakeContext();
  assert.deepEqual(await greet({ name: 'Ada' }, ctx), { message: 'Hello, Ada!' });
  assert.deepEqual(ctx.logged, ['greeting Ada']);
});

test('greets the world without a name', async () => {
  assert.deepEqual(await greet({}, fakeContext()), { message: 'Hello, world!' });
  assert.deepEqual(await greet([1, 2], fakeContext()), { message: 'Hello, world!' });
  assert.deepEqual(await greet(null, fakeContext()), { message: 'Hello, world!' });
});

test('answers a ping', async () => {
  const event = {
    id: 'ev-1', type: '{{name}}.ping', source: '/http', time: '2026-01-01T00:00:00.000Z', payload: {},
  };
  const ctx = fakeContext();
  assert.deepEqual(await onPing(event, ctx), { pong: true });
  assert.match(ctx.logged[0], /^ping ev-1 from \/http/);
});
