"""{{name}}: an shs function in Python, on the shs Python SDK (shs_sdk.py, next to this file).

Invoke:  shs invoke {{name}} '{"name": "Ada"}'      -> {"message": "Hello, Ada!"}
Event:   shs publish {{name}}.ping '{"from": "me"}'
Test:    python3 -m unittest                      (runs test_main.py)
Logs:    shs logs {{name}} -f

The SDK speaks the shs protocol for you: JSON-RPC 2.0, one message per line, over stdin and
stdout (see docs/protocol.md in the shs repository). So stdout is not yours: never print() to
it. Log with ctx.log(...) or print(..., file=sys.stderr); the server keeps those lines
(`shs logs {{name}}`). Processes come and go: keep nothing in memory between requests that you
cannot lose.
"""

import json

import shs_sdk

app = shs_sdk.Function()


@app.invoke
def greet(input, ctx):  # noqa: A002 (the SDK's name for it)
    """POST /run/{{name}}: `input` is the request body (any JSON); the return value is the
    response. Raise shs_sdk.Error(message, code=..., data=...) to answer with an error."""
    name = input.get("name") if isinstance(input, dict) else None
    if not isinstance(name, str) or not name:
        name = "world"
    ctx.log("greeting", name)
    # To tell other functions, publish an event (waits until every subscriber has taken it):
    #   ctx.publish("greeting.sent", {"name": name})
    return {"message": "Hello, %s!" % name}


@app.event("{{name}}.ping")  # subscribes to {{name}}.ping at start-up
def on_ping(event, ctx):
    """Events of type {{name}}.ping, e.g. from `shs publish {{name}}.ping '{}'`. The value
    returned is not used; raising makes the delivery fail (listed in the publisher's errors)."""
    ctx.log("ping", event.id, "from", event.source, "with", json.dumps(event.payload))
    return {"pong": True}


if __name__ == "__main__":
    app.run()
