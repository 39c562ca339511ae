#!/usr/bin/env python3
"""event-subscriber: subscribe to events and remember the ones that arrive.

At start-up, before it answers `initialize`, this function sends one
`subscribe` request per event type (user.created and process.completed) and
waits for each answer, so the subscriptions are in force before the first
event. It is the first of the two ways to subscribe; process-step2 shows the
other (listing the types in the answer to `initialize`).

On each event: logs one line to stderr, keeps the event in memory (the last
100) and answers {"ok": true}.

Invoke it (POST /run/event-subscriber, any body) to see what arrived:
    {"received": [{"id": "...", "type": "user.created", "source": "...",
                   "time": "...", "payload": {...}}, ...]}
oldest first. The memory is this process's: it is empty again after a restart.

Deploy: mkdir -p functions/event-subscriber && cp main.py functions/event-subscriber/
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

SUBSCRIBE_TO = ["user.created", "process.completed"]
KEEP = 100

received = deque(maxlen=KEEP)  # the last KEEP events, oldest first


def on_initialize(params):
    """Subscribe before answering: the supervisor answers these requests while
    it waits for ours, and sends no event before we have answered."""
    for event_type in SUBSCRIBE_TO:
        answer = subscribe(event_type)
        log(f"subscribed to {answer.get('type', event_type)}")
    return {}


def on_event(params):
    """One event: {"event": {"id", "type", "source", "time", "payload"}, ...}."""
    event = params.get("event")
    if not isinstance(event, dict):
        raise RpcError(INVALID_PARAMS, "params.event must be an object")
    received.append(event)
    log(f"received {event.get('type')} {event.get('id')} from {event.get('source')}: "
        f"{json.dumps(event.get('payload'))}")
    return {"ok": True}


def on_invoke(params):
    """POST /run/event-subscriber: what arrived so far, oldest first."""
    return {"received": list(received)}


if __name__ == "__main__":
    run({"initialize": on_initialize, "event": on_event, "invoke": on_invoke})
