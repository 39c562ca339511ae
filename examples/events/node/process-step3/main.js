#!/usr/bin/env node
/*
 * process-step3: the last step of the three-step chain (see process-step1).
 *
 * Subscribes to process.step2.completed explicitly, with ctx.subscribe in a setup
 * hook: shs.setup runs at start-up, before the function answers `initialize`, so
 * the subscription is in force before the first event. (process-step2 lets the
 * SDK subscribe for it, from its event handler.)
 *
 * On process.step2.completed: publishes process.completed with the same payload
 * and "step3" appended to "steps", and answers the event with
 *     {"step": 3, "publish": <the supervisor's answer to publish>}
 *
 * Deploy, from the repository root (the SDK first: the function starts as soon
 * as its main.js appears):
 *     mkdir -p functions/process-step3/node_modules/shs-sdk
 *     cp sdk/node/package.json sdk/node/index.js functions/process-step3/node_modules/shs-sdk/
 *     cp examples/events/node/process-step3/main.js functions/process-step3/
 */

'use strict';

const shs = require('shs-sdk');

const STEP = 3;
const LISTENS_TO = 'process.step2.completed';
const PUBLISHES = 'process.completed';

shs.setup(async (ctx) => {
  const answer = await ctx.subscribe(LISTENS_TO); // {subscribed: true, type: 'process.step2.completed'}
  ctx.log(`${ctx.function} ready, subscribed to ${answer.type}`);
});

/** A copy of the previous step's payload with `step` appended to "steps". */
function nextPayload(payload, step) {
  const previous = payload !== null && typeof payload === 'object' && !Array.isArray(payload)
    ? payload
    : { order: payload ?? null };
  const steps = Array.isArray(previous.steps) ? previous.steps : [];
  return { ...previous, steps: [...steps, step] };
}

// Handles process.step2.completed; { subscribe: false } because setup subscribed.
shs.on(LISTENS_TO, async (event, ctx) => {
  // ... the real work of step 3 would go here ...
  const result = await ctx.publish(PUBLISHES, nextPayload(event.payload, 'step3'));
  ctx.log(`${event.id} -> published ${PUBLISHES} as ${result.event_id}: delivered to ${result.delivered}`);
  return { step: STEP, publish: result };
}, { subscribe: false });

// Any other event (one subscribed to in function.toml, say): take it, do nothing.
shs.onAny((event, ctx) => {
  ctx.log(`ignoring ${event.type} ${event.id}`);
  return { step: STEP, ignored: event.type ?? null };
});

// This step is driven by events; an invoke only says so.
shs.invoke(() => ({
  step: STEP,
  message: `process-step3 runs on ${LISTENS_TO} events; start the chain with POST /run/process-step1`,
}));

shs.run();
