#!/usr/bin/env node
/*
 * process-step1: start a three-step chain of events.
 *
 *     POST /run/process-step1 {"order": {"id": 42}}
 *       -> process-step1 publishes process.step1.completed
 *       -> process-step2 publishes process.step2.completed
 *       -> process-step3 publishes process.completed
 *       -> event-subscriber (and anyone else subscribed) receives it
 *
 * The payload travels down the chain and each step appends itself to "steps":
 *     {"order": {"id": 42}, "steps": ["step1"]}                    (from step 1)
 *     {"order": {"id": 42}, "steps": ["step1", "step2", "step3"]}  (process.completed)
 *
 * Input: {"order": ...}; without an "order" key, the whole input is the order.
 * Output: {"step": 1, "publish": <the supervisor's answer to publish>}. Because
 * publishing is synchronous, this answer comes after the whole chain has run.
 *
 * Deploy, from the repository root (the SDK first: the function starts as soon
 * as its main.js appears):
 *     mkdir -p functions/process-step1/node_modules/shs-sdk
 *     cp sdk/node/package.json sdk/node/index.js functions/process-step1/node_modules/shs-sdk/
 *     cp examples/events/node/process-step1/main.js functions/process-step1/
 */

'use strict';

const shs = require('shs-sdk');

const PUBLISHES = 'process.step1.completed';

// POST /run/process-step1: do step 1, then tell the next step.
// (This function subscribes to nothing: an invoke starts it.)
shs.invoke(async (input, ctx) => {
  const hasOrder = input !== null && typeof input === 'object' && !Array.isArray(input) && 'order' in input;
  const order = hasOrder ? input.order : input;
  // ... the real work of step 1 would go here ...
  const result = await ctx.publish(PUBLISHES, { order, steps: ['step1'] });
  ctx.log(`published ${PUBLISHES} as ${result.event_id}: delivered to ${result.delivered}`);
  return { step: 1, publish: result };
});

shs.run();
