#!/usr/bin/env python3
"""hello: the smallest useful shs function.

shs starts this file with `python3 main.py` and speaks JSON-RPC 2.0 with it, one JSON object
per line: requests arrive on stdin, answers go to stdout, logs go to stderr.

    curl -s -X POST localhost:8080/run/hello -d '{"name": "Ada"}'
    {"message": "Hello, Ada!"}
"""
import json
import sys


def reply(message_id, result=None, error=None):
    answer = {"jsonrpc": "2.0", "id": message_id}
    if error is not None:
        answer["error"] = error
    else:
        answer["result"] = result
    sys.stdout.write(json.dumps(answer) + "\n")
    sys.stdout.flush()


def hello(params):
    data = params.get("input") or {}
    name = data.get("name", "world") if isinstance(data, dict) else "world"
    return {"message": "Hello, %s!" % name}


for line in sys.stdin:
    try:
        message = json.loads(line)
    except ValueError:
        print("ignoring a line that is not JSON", file=sys.stderr)
        continue
    method, message_id = message.get("method"), message.get("id")
    if method is None or message_id is None:
        continue  # an answer or a notification: hello sends no requests of its own
    if method == "initialize":
        reply(message_id, {})
    elif method == "invoke":
        reply(message_id, hello(message.get("params") or {}))
    else:
        reply(message_id, error={"code": -32601, "message": "method not found: %s" % method})
