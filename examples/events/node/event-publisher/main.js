#!/usr/bin/env node
/*
 * event-publisher: publish the event it is asked to, each time it is invoked.
 *
 * Input (the body of POST /run/event-publisher), both fields required:
 *     {"event_type": "user.created", "payload": {"user_id": 123, "name": "John Doe"}}
 *   - "event_type" (a string) is the type of the event to publish;
 *   - "payload" (an object) is the event's data.
 *
 * Output: {"published": true, "event_type": "user.created", "errors": [...]}, where
 * "errors" lists the subscribers that did not take the event, each as
 * {"function": NAME, "message": "what happened"} (empty when all of them did).
 *
 * Publishing is synchronous: the answer comes once every subscriber has
 * answered, failed or timed out.
 *
 * Without a string "event_type", or without an object "payload", it answers an
 * error, which POST /run answers with status 500 and the message
 * "event_type is required and must be a string" (or "payload is required and
 * must be an object").
 *
 * Deploy, from the repository root (the SDK first: the function starts as soon
 * as its main.js appears):
 *     mkdir -p functions/event-publisher/node_modules/shs-sdk
 *     cp sdk/node/package.json sdk/node/index.js functions/event-publisher/node_modules/shs-sdk/
 *     cp examples/events/node/event-publisher/main.js functions/event-publisher/
 */

'use strict';

const shs = require('shs-sdk');

const isObject = (value) => value !== null && typeof value === 'object' && !Array.isArray(value);

// POST /run/event-publisher: publish one event, say whether every subscriber took it.
// (This function subscribes to nothing: it only publishes.)
shs.invoke(async (input, ctx) => {
  const fields = isObject(input) ? input : {};

  const eventType = fields.event_type;
  if (typeof eventType !== 'string') {
    // An error answer: POST /run answers 500 with this message and code.
    throw new shs.ShsError('event_type is required and must be a string', { code: shs.INVALID_PARAMS });
  }
  const { payload } = fields;
  if (!isObject(payload)) {
    throw new shs.ShsError('payload is required and must be an object', { code: shs.INVALID_PARAMS });
  }

  const result = await ctx.publish(eventType, payload); // waits for every subscriber
  ctx.log(`published ${eventType} as ${result.event_id}: delivered to ${result.delivered}, ${result.errors.length} error(s)`);
  return { published: true, event_type: eventType, errors: result.errors };
});

shs.run();
