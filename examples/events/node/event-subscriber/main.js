#!/usr/bin/env node
/*
 * event-subscriber: subscribe to events and remember the ones that arrive.
 *
 * Subscribes to user.created and process.completed by declaring one handler for
 * both: the SDK subscribes to the types of its event handlers at start-up, before
 * it answers `initialize`, so the subscriptions are in force before the first
 * event. (process-step3 subscribes explicitly, in a setup hook.)
 *
 * On each event: logs one line, keeps the event in memory (the last 100) and
 * answers {"ok": true}.
 *
 * Invoke it (POST /run/event-subscriber, any body) to see what arrived:
 *     {"received": [{"id": "...", "type": "user.created", "source": "...",
 *                    "time": "...", "payload": {...}}, ...]}
 * oldest first. The memory is this process's: it is empty again after a restart.
 *
 * Deploy, from the repository root (the SDK first: the function starts as soon
 * as its main.js appears):
 *     mkdir -p functions/event-subscriber/node_modules/shs-sdk
 *     cp sdk/node/package.json sdk/node/index.js functions/event-subscriber/node_modules/shs-sdk/
 *     cp examples/events/node/event-subscriber/main.js functions/event-subscriber/
 */

'use strict';

const shs = require('shs-sdk');

const KEEP = 100;
const received = []; // the last KEEP events, oldest first

shs.on(['user.created', 'process.completed'], (event, ctx) => {
  received.push(event);
  if (received.length > KEEP) received.shift();
  ctx.log(`received ${event.type} ${event.id} from ${event.source}: ${JSON.stringify(event.payload)}`);
  return { ok: true };
});

// POST /run/event-subscriber: what arrived so far, oldest first.
shs.invoke(() => ({ received }));

shs.run();
