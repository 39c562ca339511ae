#!/usr/bin/env python3
"""event-subscriber: subscribe to events and remember the ones that arrive.

Subscribes to user.created and process.completed by declaring one handler for
both: the SDK subscribes to the types of its event handlers at start-up, before
it answers `initialize`, so the subscriptions are in force before the first
event. (process-step3 subscribes explicitly, in a setup hook.)

On each event: logs one line, keeps the event in memory (the last 100) and
answers {"ok": true}.

Invoke it (POST /run/event-subscriber, any body) to see what arrived:
    {"received": [{"id": "...", "type": "user.created", "source": "...",
                   "time": "...", "payload": {...}}, ...]}
oldest first. The memory is this process's: it is empty again after a restart.

Deploy, from the repository root (shs_sdk.py first: the function starts as soon
as its main.py appears):
    mkdir -p functions/event-subscriber
    cp sdk/python/shs_sdk.py examples/events/python/event-subscriber/main.py functions/event-subscriber/
"""

import json
from collections import deque

import shs_sdk

app = shs_sdk.Function()
received = deque(maxlen=100)  # the last 100 events, oldest first


@app.event("user.created", "process.completed")
def remember(event, ctx):
    received.append(event.to_dict())
    ctx.log(f"received {event.type} {event.id} from {event.source}: {json.dumps(event.payload)}")
    return {"ok": True}


@app.invoke
def show(input, ctx):
    """POST /run/event-subscriber: what arrived so far, oldest first."""
    return {"received": list(received)}


app.run()
