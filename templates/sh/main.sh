#!/bin/sh
# {{name}}: an shs function in POSIX sh, speaking the protocol by hand.
#
# Invoke:  shs invoke {{name}} '{"name": "Ada"}'      -> {"message":"Hello, Ada!"}
# Event:   shs publish {{name}}.ping '{"from": "me"}'
# Logs:    shs logs {{name}} -f
#
# The protocol (docs/protocol.md in the shs repository): the server writes one JSON-RPC 2.0
# request per line to stdin, and the function answers each with one line on stdout, with the
# same id. The server writes compact JSON that starts {"jsonrpc":"2.0","id":N,"method":"...",
# so sed can take the id and the method from the start of the line. stdout carries the
# protocol only: log to stderr (>&2); the server keeps those lines (`shs logs {{name}}`).
#
# sh has no JSON parser: this reads "name" with sed, which is fine for a greeting. For real
# JSON work, use jq, or write the function in Python, Node or Rust on an SDK
# (`shs new NAME --lang python`).

while IFS= read -r line; do
  id=$(printf '%s\n' "$line" | sed -n 's/^{"jsonrpc":"2.0","id":\([0-9][0-9]*\),.*/\1/p')
  method=$(printf '%s\n' "$line" | sed -n 's/^{"jsonrpc":"2.0","id":[0-9][0-9]*,"method":"\([a-z]*\)".*/\1/p')
  [ -n "$id" ] || continue  # an answer or a notification: nothing to answer
  case "$method" in
    initialize)
      # Subscribe at start-up by answering initialize with the types to subscribe to.
      printf '{"jsonrpc":"2.0","id":%s,"result":{"subscribe":["{{name}}.ping"]}}\n' "$id"
      ;;
    invoke)
      # POST /run/{{name}}: params.input is the request body; take its "name", still escaped
      # as a JSON string, so that it can go back into one as it is.
      name=$(printf '%s\n' "$line" | sed -n 's/.*"input":{.*"name"[[:space:]]*:[[:space:]]*"\([^"\\]*\(\\.[^"\\]*\)*\)".*/\1/p')
      [ -n "$name" ] || name=world
      printf 'greeting %s\n' "$name" >&2
      printf '{"jsonrpc":"2.0","id":%s,"result":{"message":"Hello, %s!"}}\n' "$id" "$name"
      ;;
    event)
      # An event of a type it subscribed to ({{name}}.ping): params.event has id, type,
      # source, time and payload. Any result counts as delivered.
      printf 'ping: %s\n' "$line" >&2
      printf '{"jsonrpc":"2.0","id":%s,"result":{"pong":true}}\n' "$id"
      ;;
    *)
      printf '{"jsonrpc":"2.0","id":%s,"error":{"code":-32601,"message":"method not found: %s"}}\n' "$id" "$method"
      ;;
  esac
done
# stdin closed: the server wants the function to stop.
