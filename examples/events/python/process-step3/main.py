#!/usr/bin/env python3
"""process-step3: the last step of the three-step chain (see process-step1).

Subscribes to process.step2.completed explicitly, with ctx.subscribe in a setup
hook: @app.setup runs at start-up, before the function answers `initialize`,
so the subscription is in force before the first event. (process-step2 lets
the SDK subscribe for it, from its event handler.)

On process.step2.completed: publishes process.completed with the same payload
and "step3" appended to "steps", and answers the event with
    {"step": 3, "publish": <the supervisor's answer to publish>}

Deploy, from the repository root (shs_sdk.py first: the function starts as soon
as its main.py appears):
    mkdir -p functions/process-step3
    cp sdk/python/shs_sdk.py examples/events/python/process-step3/main.py functions/process-step3/
"""

import shs_sdk

STEP = 3
LISTENS_TO = "process.step2.completed"
PUBLISHES = "process.completed"

app = shs_sdk.Function()


@app.setup
def start(ctx):
    answer = ctx.subscribe(LISTENS_TO)  # {"subscribed": true, "type": "process.step2.completed"}
    ctx.log(f"{ctx.function} ready, subscribed to {answer['type']}")


def next_payload(payload, step):
    """A copy of the previous step's payload with `step` appended to "steps"."""
    if not isinstance(payload, dict):
        payload = {"order": payload}
    steps = payload.get("steps")
    return {**payload, "steps": (steps if isinstance(steps, list) else []) + [step]}


@app.event(LISTENS_TO, subscribe=False)  # subscribed in start() above
def step3(event, ctx):
    # ... the real work of step 3 would go here ...
    result = ctx.publish(PUBLISHES, next_payload(event.payload, "step3"))
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
    return {"step": STEP, "message": f"process-step3 runs on {LISTENS_TO} events; "
                                     "start the chain with POST /run/process-step1"}


app.run()
