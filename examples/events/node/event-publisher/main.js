#!/usr/bin/env node
/*
 * event-publisher: publish an event each time it is invoked.
 *
 * Input (the body of POST /run/event-publisher, all of it optional):
 *     {"type": "user.created", "payload": {"name": "Ada"}}
 *   - "type" is the event type; the default is "user.created".
 *   - "payload" is the event's data; without it, the whole input minus "type" is
 *     the payload (so {"name": "Ada"} publishes {"name": "Ada"}).
 *
 * Output: {"published": <the supervisor's answer to publish>}, for example
 *     {"published": {"published": true, "event_id": "...", "delivered": 1, "errors": []}}
 *
 * Publishing is synchronous: the answer comes once every subscriber has
 * answered, failed or timed out, and each failure is listed in "errors".
 *
 * Deploy, from the repository root (the SDK first: the function starts as soon
 * as its main.js appears):
 *     mkdir -p functions/event-publisher/node_modules/shs-sdk
 *     cp sdk/node/package.json sdk/node/index.js functions/event-publisher/node_modules/shs-sdk/
 *     cp examples/events/node/event-publisher/main.js functions/event-publisher/
 */

'use strict';

const shs = require('shs-sdk');

const DEFAULT_TYPE = 'user.created';

// POST /run/event-publisher: publish one event, answer what publish said.
// (This function subscribes to nothing: it only publishes.)
shs.invoke(async (input, ctx) => {
  let type = DEFAULT_TYPE;
  let payload;
  if (input !== null && typeof input === 'object' && !Array.isArray(input)) {
    const { type: given, ...rest } = input;
    if ('type' in input) type = given;
    payload = 'payload' in input ? input.payload : rest;
  } else if (input === null) {
    payload = {};
  } else { // a bare string, number or array is published as it is
    payload = input;
  }

  if (typeof type !== 'string' || type === '') {
    // A structured error: POST /run answers 500 with this code, message and data.
    throw new shs.ShsError('"type" must be a non-empty string', { code: shs.INVALID_PARAMS, data: { type } });
  }

  const result = await ctx.publish(type, payload); // waits for every subscriber
  ctx.log(`published ${type} as ${result.event_id}: delivered to ${result.delivered}, ${result.errors.length} error(s)`);
  return { published: result };
});

shs.run();
