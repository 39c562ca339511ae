#!/usr/bin/env node
/*
 * process-step2: the middle of the three-step chain (see process-step1).
 *
 * Subscribes to process.step1.completed by declaring a handler for it:
 * shs.on(TYPE, handler) also subscribes to TYPE at start-up, before the function
 * answers `initialize`, so the subscription is in force before the first event.
 * (process-step3 subscribes explicitly instead, in a setup hook.)
 *
 * On process.step1.completed: publishes process.step2.completed with the same
 * payload and "step2" appended to "steps", and answers the event with
 *     {"step": 2, "publish": <the supervisor's answer to publish>}
 *
 * Deploy, from the repository root (the SDK first: the function starts as soon
 * as its main.js appears):
 *     mkdir -p functions/process-step2/node_modules/shs-sdk
 *     cp sdk/node/package.json sdk/node/index.js functions/process-step2/node_modules/shs-sdk/
 *     cp examples/events/node/process-step2/main.js functions/process-step2/
 */

'use strict';

const shs = require('shs-sdk');

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

// Handles process.step1.completed, and subscribes to it.
shs.on(LISTENS_TO, async (event, ctx) => {
  // ... the real work of step 2 would go here ...
  const result = await ctx.publish(PUBLISHES, nextPayload(event.payload, 'step2'));
  ctx.log(`${event.id} -> published ${PUBLISHES} as ${result.event_id}: delivered to ${result.delivered}`);
  return { step: STEP, publish: result };
});

// Any other event (one subscribed to in function.toml, say): take it, do nothing.
shs.onAny((event, ctx) => {
  ctx.log(`ignoring ${event.type} ${event.id}`);
  return { step: STEP, ignored: event.type ?? null };
});

// This step is driven by events; an invoke only says so.
shs.invoke(() => ({
  step: STEP,
  message: `process-step2 runs on ${LISTENS_TO} events; start the chain with POST /run/process-step1`,
}));

shs.run();
