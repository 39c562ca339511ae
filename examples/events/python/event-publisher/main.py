#!/usr/bin/env python3
"""event-publisher: publish an event each time it is invoked.

Input (the body of POST /run/event-publisher, all of it optional):
    {"type": "user.created", "payload": {"name": "Ada"}}
  - "type" is the event type; the default is "user.created".
  - "payload" is the event's data; without it, the whole input minus "type" is
    the payload (so {"name": "Ada"} publishes {"name": "Ada"}).

Output: {"published": <the supervisor's answer to publish>}, for example
    {"published": {"published": true, "event_id": "...", "delivered": 1, "errors": []}}

Publishing is synchronous: the answer comes once every subscriber has
answered, failed or timed out, and each failure is listed in "errors".

Deploy, from the repository root (shs_sdk.py first: the function starts as soon
as its main.py appears):
    mkdir -p functions/event-publisher
    cp sdk/python/shs_sdk.py examples/events/python/event-publisher/main.py functions/event-publisher/
"""

import shs_sdk

DEFAULT_TYPE = "user.created"

app = shs_sdk.Function()  # subscribes to nothing: it only publishes


@app.invoke
def publish_one(input, ctx):
    """POST /run/event-publisher: publish one event, answer what publish said."""
    if isinstance(input, dict):
        event_type = input.get("type", DEFAULT_TYPE)
        if "payload" in input:
            payload = input["payload"]
        else:
            payload = {key: value for key, value in input.items() if key != "type"}
    elif input is None:
        event_type, payload = DEFAULT_TYPE, {}
    else:  # a bare string, number or list is published as it is
        event_type, payload = DEFAULT_TYPE, input

    if not isinstance(event_type, str) or not event_type:
        # A structured error: POST /run answers 500 with this code, message and data.
        raise shs_sdk.Error('"type" must be a non-empty string',
                            code=shs_sdk.INVALID_PARAMS, data={"type": event_type})

    result = ctx.publish(event_type, payload)  # waits for every subscriber
    ctx.log(f"published {event_type} as {result['event_id']}: delivered to {result['delivered']}, "
            f"{len(result['errors'])} error(s)")
    return {"published": result}


app.run()
