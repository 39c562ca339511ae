#!/usr/bin/env python3
"""process-step1: start a three-step chain of events.

    POST /run/process-step1 {"order": {"id": 42}}
      -> process-step1 publishes process.step1.completed
      -> process-step2 publishes process.step2.completed
      -> process-step3 publishes process.completed
      -> event-subscriber (and anyone else subscribed) receives it

The payload travels down the chain and each step appends itself to "steps":
    {"order": {"id": 42}, "steps": ["step1"]}                    (from step 1)
    {"order": {"id": 42}, "steps": ["step1", "step2", "step3"]}  (process.completed)

Input: {"order": ...}; without an "order" key, the whole input is the order.
Output: {"step": 1, "publish": <the supervisor's answer to publish>}. Because
publishing is synchronous, this answer comes after the whole chain has run.

Deploy, from the repository root (shs_sdk.py first: the function starts as soon
as its main.py appears):
    mkdir -p functions/process-step1
    cp sdk/python/shs_sdk.py examples/events/python/process-step1/main.py functions/process-step1/
"""

import shs_sdk

PUBLISHES = "process.step1.completed"

app = shs_sdk.Function()  # subscribes to nothing: an invoke starts it


@app.invoke
def step1(input, ctx):
    """POST /run/process-step1: do step 1, then tell the next step."""
    order = input["order"] if isinstance(input, dict) and "order" in input else input
    # ... the real work of step 1 would go here ...
    result = ctx.publish(PUBLISHES, {"order": order, "steps": ["step1"]})
    ctx.log(f"published {PUBLISHES} as {result['event_id']}: delivered to {result['delivered']}")
    return {"step": 1, "publish": result}


app.run()
