#!/usr/bin/env python3
"""process-step3: the last step of the three-step chain (see process-step1).

Subscribes to process.step2.completed with a `subscribe` request sent at
start-up, before it answers `initialize` (process-step2 shows the other way).

On process.step2.completed: publishes process.completed with the same payload
and "step3" appended to "steps", and answers the event with
    {"step": 3, "publish": <the supervisor's answer to publish>}

Deploy: mkdir -p functions/process-step3 && cp main.py functions/process-step3/
Runs as `python3 main.py` in its folder; standard library only, Python 3.8+.
"""

import json
import sys
import traceback
from collections import deque

# ---------------------------------------------------------------------------
# Protocol plumbing: the same in every example, copy it as it is.
#
# stdout carries protocol messages only: one JSON object per line, flushed at
# once. Anything else you want to say goes to stderr with log(), which shs
# captures line by line as this function's log. (print() writes to stdout, so
# do not use it for logging here.)
# ---------------------------------------------------------------------------

FUNCTION_ERROR = -32000  # the usual code for "the function itself failed"
INVALID_PARAMS = -32602
METHOD_NOT_FOUND = -32601


class RpcError(Exception):
    """A JSON-RPC error: one the supervisor answered us, or one we answer it."""

    def __init__(self, code, message, data=None):
        Exception.__init__(self, message)
        self.code = code
        self.message = message
        self.data = data


class StdinClosed(Exception):
    """The supervisor closed our stdin: it wants us to exit."""


def log(message):
    """Write one line to the function's log (stderr)."""
    sys.stderr.write(str(message) + "\n")
    sys.stderr.flush()


def send(message):
    """Write one protocol message to stdout, as one line, and flush it."""
    line = json.dumps(message, allow_nan=False)  # raises before writing anything
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def read_message():
    """Read the next JSON object from stdin. Raises StdinClosed at the end."""
    while True:
        line = sys.stdin.buffer.readline()
        if not line:
            raise StdinClosed()
        if not line.strip():
            continue
        try:
            message = json.loads(line.decode("utf-8"))
        except ValueError as exc:  # not JSON, or not UTF-8
            log(f"ignoring a line that is not JSON: {exc}")
            continue
        if isinstance(message, dict):
            return message
        log("ignoring a line that is not a JSON object")


_next_id = 0
# Requests from the supervisor that arrived while we were waiting for the
# answer to one of ours. With the default concurrency of 1 this never happens
# (the supervisor then sends us nothing but answers); with `concurrency = N` it
# can, and the main loop handles them once the current request is done.
_pending = deque()


def call(method, params):
    """Send a request to the supervisor and wait for its answer.

    Returns the answer's `result`, or raises RpcError with its `error`.
    """
    global _next_id
    _next_id += 1
    request_id = _next_id
    send({"jsonrpc": "2.0", "id": request_id, "method": method, "params": params})
    while True:
        message = read_message()
        if "method" in message:
            log(f"{message['method']} request arrived while waiting for {method}; handling it later")
            _pending.append(message)
        elif message.get("id") == request_id and "error" in message:
            error = message["error"] if isinstance(message["error"], dict) else {}
            # Re-raised as this function's own failure, keeping the original
            # error in `data`, so that a handler that lets it through answers
            # "publish failed: ..." rather than the supervisor's error code.
            raise RpcError(FUNCTION_ERROR, f"{method} failed: {error.get('message', 'unknown error')}",
                           {"error": error})
        elif message.get("id") == request_id and "result" in message:
            return message["result"]
        else:
            log(f"ignoring an answer nobody is waiting for: {json.dumps(message)}")


def publish(event_type, payload):
    """Publish an event and wait until every subscriber has answered.

    Returns {"published": true, "event_id": str, "delivered": int,
    "errors": [{"function": str, "message": str}, ...]}.
    (Sending the same message without an "id" would be fire-and-forget.)
    """
    return call("publish", {"type": event_type, "payload": payload})


def subscribe(event_type):
    """Subscribe this function to an event type; returns {"subscribed": true, "type": str}."""
    return call("subscribe", {"type": event_type})


def serve(handlers):
    """Answer the supervisor's requests with `handlers` until stdin closes.

    `handlers` maps a method name ("initialize", "invoke", "event") to a
    function that takes the request's params and returns the result. An
    exception in a handler becomes an error answer; the process goes on.
    """
    while True:
        message = _pending.popleft() if _pending else read_message()
        method = message.get("method")
        if not isinstance(method, str):
            log(f"ignoring a message that is not a request: {json.dumps(message)}")
            continue
        is_request = "id" in message  # no id: a notification, never answered
        handler = handlers.get(method)
        if handler is None:
            if is_request:
                send({"jsonrpc": "2.0", "id": message["id"],
                      "error": {"code": METHOD_NOT_FOUND, "message": f"method not found: {method}"}})
            else:
                log(f"ignoring notification {method}")
            continue
        params = message.get("params")
        if not isinstance(params, dict):
            params = {}
        try:
            answer = {"result": handler(params)}
        except StdinClosed:
            raise
        except RpcError as exc:
            error = {"code": exc.code, "message": exc.message}
            if exc.data is not None:
                error["data"] = exc.data
            answer = {"error": error}
        except Exception as exc:  # a bug or bad input: answer an error, keep running
            log(traceback.format_exc().rstrip())
            answer = {"error": {"code": FUNCTION_ERROR, "message": f"{method} failed: {exc}",
                                "data": {"exception": type(exc).__name__}}}
        if not is_request:
            continue
        reply = {"jsonrpc": "2.0", "id": message["id"]}
        reply.update(answer)
        try:
            send(reply)
        except (TypeError, ValueError) as exc:  # the result cannot be written as JSON
            log(f"{method} returned a result that is not JSON: {exc}")
            send({"jsonrpc": "2.0", "id": message["id"],
                  "error": {"code": FUNCTION_ERROR, "message": f"{method} failed: its result is not JSON: {exc}"}})


def run(handlers):
    """serve() until the supervisor closes stdin, then exit 0."""
    try:
        serve(handlers)
    except (StdinClosed, KeyboardInterrupt):
        pass
    sys.exit(0)


# ---------------------------------------------------------------------------
# The function itself.
# ---------------------------------------------------------------------------

STEP = 3
LISTENS_TO = "process.step2.completed"
PUBLISHES = "process.completed"


def next_payload(payload, step):
    """A copy of the previous step's payload with `step` appended to "steps"."""
    if not isinstance(payload, dict):
        payload = {"order": payload}
    steps = payload.get("steps")
    if not isinstance(steps, list):
        steps = []
    result = dict(payload)
    result["steps"] = steps + [step]
    return result


def on_initialize(params):
    """Subscribe before answering: the supervisor answers this request while it
    waits for ours, and sends no event before we have answered."""
    answer = subscribe(LISTENS_TO)
    log(f"{params.get('function')} ready, subscribed to {answer.get('type', LISTENS_TO)}")
    return {}


def on_event(params):
    """process.step2.completed arrived: do step 3, then announce the end."""
    event = params.get("event")
    if not isinstance(event, dict):
        raise RpcError(INVALID_PARAMS, "params.event must be an object")
    if event.get("type") != LISTENS_TO:
        log(f"ignoring {event.get('type')} {event.get('id')}")
        return {"step": STEP, "ignored": event.get("type")}
    # ... the real work of step 3 would go here ...
    payload = next_payload(event.get("payload"), "step3")
    result = publish(PUBLISHES, payload)
    log(f"{event.get('id')} -> published {PUBLISHES} as {result.get('event_id')}: "
        f"delivered to {result.get('delivered')}")
    return {"step": STEP, "publish": result}


def on_invoke(params):
    """This step is driven by events; an invoke only says so."""
    return {"step": STEP,
            "message": f"process-step3 runs on {LISTENS_TO} events; "
                       "start the chain with POST /run/process-step1"}


if __name__ == "__main__":
    run({"initialize": on_initialize, "event": on_event, "invoke": on_invoke})
