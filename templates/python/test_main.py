"""Tests of {{name}}'s handlers, with no server: run `python3 -m unittest` in this folder.

The handlers are plain functions: call them with an input (or an event) and a stand-in for the
context. (To play the whole protocol instead, `main.app.serve(stdin, stdout, stderr)` runs the
function over any streams; see the SDK's own tests.)
"""

import unittest

import main
import shs_sdk


class FakeContext:
    """Stands in for the SDK's context: records what a handler logs and publishes."""

    request_id = "test-request"
    function = "{{name}}"
    method = "invoke"

    def __init__(self):
        self.logged = []
        self.published = []

    def log(self, *parts):
        self.logged.append(" ".join(str(p) for p in parts))

    def publish(self, event_type, payload=None):
        self.published.append((event_type, payload))
        return {"published": True, "event_id": "test-event", "delivered": 0, "errors": []}

    def publish_nowait(self, event_type, payload=None):
        self.published.append((event_type, payload))


class GreetTest(unittest.TestCase):
    def test_greets_by_name(self):
        ctx = FakeContext()
        self.assertEqual(main.greet({"name": "Ada"}, ctx), {"message": "Hello, Ada!"})
        self.assertEqual(ctx.logged, ["greeting Ada"])

    def test_greets_the_world_without_a_name(self):
        self.assertEqual(main.greet({}, FakeContext()), {"message": "Hello, world!"})
        self.assertEqual(main.greet([1, 2], FakeContext()), {"message": "Hello, world!"})


class PingTest(unittest.TestCase):
    def test_answers_a_ping(self):
        event = shs_sdk.Event("ev-1", "{{name}}.ping", "/http", "2026-01-01T00:00:00.000Z",
                              {"from": "test"})
        ctx = FakeContext()
        self.assertEqual(main.on_ping(event, ctx), {"pong": True})
        self.assertTrue(ctx.logged[0].startswith("ping ev-1 from /http"), ctx.logged)


if __name__ == "__main__":
    unittest.main()
