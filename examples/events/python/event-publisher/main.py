#!/usr/bin/env python3
"""event-publisher: publish the event it is asked to, each time it is invoked.

Input (the body of POST /run/event-publisher), both fields required:
    {"event_type": "user.created", "payload": {"user_id": 123, "name": "John Doe"}}
  - "event_type" (a string) is the type of the event to publish;
  - "payload" (an object) is the event's data.

Output: {"published": true, "event_type": "user.created", "errors": [...]}, where
"errors" lists the subscribers that did not take the event, each as
{"function": NAME, "message": "what happened"} (empty when all of them did).

Publishing is synchronous: the answer comes once every subscriber has
answered, failed or timed out.

Without a string "event_type", or without an object "payload", it answers an
error, which POST /run answers with status 500 and the message
"event_type is required and must be a string" (or "payload is required and
must be an object").

Deploy, from the repository root (shs_sdk.py first: the function starts as soon
as its main.py appears):
    mkdir -p functions/event-publisher
    cp sdk/python/shs_sdk.py examples/events/python/event-publisher/main.py functions/event-publisher/
"""

import shs_sdk

app = shs_sdk.Function()  # subscribes to nothing: it only publishes


@app.invoke
def publish(input, ctx):
    """POST /run/event-publisher: publish one event, say whether every subscriber took it."""
    fields = input if isinstance(input, dict) else {}

    event_type = fields.get("event_type")
    if not isinstance(event_type, str):
        # An error answer: POST /run answers 500 with this message and code.
        raise shs_sdk.Error("event_type is required and must be a string",
                            code=shs_sdk.INVALID_PARAMS)
    payload = fields.get("payload")
    if not isinstance(payload, dict):
        raise shs_sdk.Error("payload is required and must be an object",
                            code=shs_sdk.INVALID_PARAMS)

    result = ctx.publish(event_type, payload)  # waits for every subscriber
    ctx.log(f"published {event_type} as {result['event_id']}: delivered to "
            f"{result['delivered']}, {len(result['errors'])} error(s)")
    return {"published": True, "event_type": event_type, "errors": result["errors"]}


app.run()
