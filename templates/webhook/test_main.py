"""Tests of {{name}}'s handler, with no server: run `python3 -m unittest` in this folder.

The signature is shs's business (it checks it before the handler runs); these test what the
handler makes of a payload.
"""

import unittest

import main


class FakeContext:
    request_id = "test-request"
    function = "{{name}}"
    method = "invoke"

    def __init__(self):
        self.logged = []

    def log(self, *parts):
        self.logged.append(" ".join(str(p) for p in parts))


class HandleTest(unittest.TestCase):
    def test_a_ping(self):
        answer = main.handle({"zen": "Design for failure.", "hook_id": 1}, FakeContext())
        self.assertEqual(answer, {"received": True, "event": "ping", "zen": "Design for failure."})

    def test_a_push(self):
        payload = {"ref": "refs/heads/main", "commits": [{}, {}],
                   "repository": {"full_name": "octo/hello"}}
        answer = main.handle(payload, FakeContext())
        self.assertEqual(answer["event"], "push")
        self.assertEqual(answer["commits"], 2)
        self.assertEqual(answer["repository"], "octo/hello")

    def test_anything_else(self):
        self.assertEqual(main.handle([1], FakeContext())["event"], "unknown")
        self.assertEqual(main.handle({"action": "created"}, FakeContext())["event"], "other")


if __name__ == "__main__":
    unittest.main()
