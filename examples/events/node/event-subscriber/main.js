#!/usr/bin/env node
/*
 * event-subscriber: subscribe to the event type it is asked to, and log every event.
 *
 * Input (the body of POST /run/event-subscriber):
 *     {"event_type": "user.created"}
 *   "event_type" (a string, required) is an event type, or a pattern such as
 *   "user.*" or "orders.>": the function subscribes to it then and there, at run
 *   time, and answers
 *     {"subscribed": true, "event_type": "user.created"}
 *   Without a string "event_type" it answers an error, which POST /run answers
 *   with status 500 and the message "event_type is required and must be a string".
 *
 * The subscription belongs to the function, not to this process: it lasts until
 * the function is removed, across restarts of its process.
 *
 * It also subscribes to process.completed at start-up, before the supervisor
 * sends it anything, so it sees the end of the three-step chain (process-step1).
 *
 * On each event, of any type it is subscribed to, it writes one line to its log,
 *     Received event: user.created with payload: {"user_id":123,"name":"John Doe"}
 * and answers {"received": true}. Read the log with
 * `GET /functions/event-subscriber/logs` (or `shs logs event-subscriber`); the
 * server's own log shows the line too.
 *
 * Deploy, from the repository root (the SDK first: the function starts as soon
 * as its main.js appears):
 *     mkdir -p functions/event-subscriber/node_modules/shs-sdk
 *     cp sdk/node/package.json sdk/node/index.js functions/event-subscriber/node_modules/shs-sdk/
 *     cp examples/events/node/event-subscriber/main.js functions/event-subscriber/
 */

'use strict';

const shs = require('shs-sdk');

// process.completed from start-up; the rest at run time, when asked.
shs.subscribe('process.completed');

// POST /run/event-subscriber: subscribe to the type asked for.
shs.invoke(async (input, ctx) => {
  const eventType = input !== null && typeof input === 'object' ? input.event_type : undefined;
  if (typeof eventType !== 'string') {
    throw new shs.ShsError('event_type is required and must be a string', { code: shs.INVALID_PARAMS });
  }
  await ctx.subscribe(eventType); // throws a ShsError if the supervisor refuses the pattern
  return { subscribed: true, event_type: eventType };
});

// Every event, whichever subscription brought it.
shs.onAny((event, ctx) => {
  ctx.log(`Received event: ${event.type} with payload: ${JSON.stringify(event.payload)}`);
  return { received: true };
});

shs.run();
