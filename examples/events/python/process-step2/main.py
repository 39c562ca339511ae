#!/usr/bin/env python3
"""process-step2: the middle of the three-step chain (see process-step1).

Subscribes to process.step1.completed by declaring a handler for it:
@app.event(TYPE) also subscribes to TYPE at start-up, before the function
answers `initialize`, so the subscription is in force before the first event.
(process-step3 subscribes explicitly instead, in a setup hook.)

On process.step1.completed: publishes process.step2.completed with the same
payload and "step2" appended to "steps", and answers the event with
    {"step": 2, "publish": <the supervisor's answer to publish>}

Deploy, from the repository root (shs_sdk.py first: the function starts as soon
as its main.py appears):
    mkdir -p functions/process-step2
    cp sdk/python/shs_sdk.py examples/events/python/process-step2/main.py functions/process-step2/
"""

import shs_sdk

STEP = 2
LISTENS_TO = "process.step1.completed"
PUBLISHES = "process.step2.completed"

app = shs_sdk.Function()


def next_payload(payload, step):
    """A copy of the previous step's payload with `step` appended to "steps"."""
    if not isinstance(payload, dict):
        payload = {"order": payload}
    steps = payload.get("steps")
    return {**payload, "steps": (steps if isinstance(steps, list) else []) + [step]}


@app.event(LISTENS_TO)  # handles process.step1.completed, and subscribes to it
def step2(event, ctx):
    # ... the real work of step 2 would go here ...
    result = ctx.publish(PUBLISHES, next_payload(event.payload, "step2"))
    ctx.log(f"{event.id} -> published {PUBLISHES} as {result['event_id']}: "
            f"delivered to {result['delivered']}")
    return {"step": STEP, "publish": result}


@app.any_event
def other(event, ctx):
    """Any other event (one subscribed to in function.toml, say): take it, do nothing."""
    ctx.log(f"ignoring {event.type} {event.id}")
    return {"step": STEP, "ignored": event.type}


@app.invoke
def explain(input, ctx):
    """This step is driven by events; an invoke only says so."""
    return {"step": STEP, "message": f"process-step2 runs on {LISTENS_TO} events; "
                                     "start the chain with POST /run/process-step1"}


app.run()
