#!/usr/bin/env python3
"""event-subscriber: subscribe to the event type it is asked to, and log every event.

Input (the body of POST /run/event-subscriber):
    {"event_type": "user.created"}
  "event_type" (a string, required) is an event type, or a pattern such as
  "user.*" or "orders.>": the function subscribes to it then and there, at run
  time, and answers
    {"subscribed": true, "event_type": "user.created"}
  Without a string "event_type" it answers an error, which POST /run answers
  with status 500 and the message "event_type is required and must be a string".

The subscription belongs to the function, not to this process: it lasts until
the function is removed, across restarts of its process.

It also subscribes to process.completed at start-up, before the supervisor
sends it anything, so it sees the end of the three-step chain (process-step1).

On each event, of any type it is subscribed to, it writes one line to its log,
    Received event: user.created with payload: {"user_id":123,"name":"John Doe"}
and answers {"received": true}. Read the log with
`GET /functions/event-subscriber/logs` (or `shs logs event-subscriber`); the
server's own log shows the line too.

Deploy, from the repository root (shs_sdk.py first: the function starts as soon
as its main.py appears):
    mkdir -p functions/event-subscriber
    cp sdk/python/shs_sdk.py examples/events/python/event-subscriber/main.py functions/event-subscriber/
"""

import json

import shs_sdk

# process.completed from start-up; the rest at run time, when asked.
app = shs_sdk.Function(subscribe=["process.completed"])


@app.invoke
def subscribe(input, ctx):
    """POST /run/event-subscriber: subscribe to the type asked for."""
    event_type = input.get("event_type") if isinstance(input, dict) else None
    if not isinstance(event_type, str):
        raise shs_sdk.Error("event_type is required and must be a string",
                            code=shs_sdk.INVALID_PARAMS)
    ctx.subscribe(event_type)  # raises shs_sdk.Error if the supervisor refuses the pattern
    return {"subscribed": True, "event_type": event_type}


@app.any_event  # every event, whichever subscription brought it
def received(event, ctx):
    payload = json.dumps(event.payload, separators=(",", ":"), ensure_ascii=False)
    ctx.log(f"Received event: {event.type} with payload: {payload}")
    return {"received": True}


app.run()
