"""Tests of shs_sdk with no supervisor: the test plays the supervisor over pipes (or feeds a
script from memory) and checks every line the function writes.

Run: python3 -m unittest discover sdk/python/tests
"""

import io
import json
import os
import queue
import re
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import shs_sdk  # noqa: E402

INIT = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {"function": "f", "protocol": 1}}


def invoke(id, input, request_id=None):  # noqa: A002
    return {"jsonrpc": "2.0", "id": id, "method": "invoke",
            "params": {"input": input,
                       "context": {"request_id": request_id or "req-%s" % id, "function": "f"}}}


def event(id, event_type, payload=None):  # noqa: A002
    return {"jsonrpc": "2.0", "id": id, "method": "event",
            "params": {"event": {"id": "ev-%s" % id, "type": event_type, "source": "/http",
                                 "time": "2026-01-01T00:00:00.000Z", "payload": payload},
                       "context": {"request_id": "del-%s" % id, "function": "f"}}}


def result(id, value):  # noqa: A002
    return {"jsonrpc": "2.0", "id": id, "result": value}


def published(event_id):
    return {"published": True, "event_id": event_id, "delivered": 1, "errors": []}


def script(app, messages):
    """Runs app over a script of lines; returns (lines written, exit status, log)."""
    text = "".join((m if isinstance(m, str) else json.dumps(m)) + "\n" for m in messages)
    stdout, stderr = io.BytesIO(), io.StringIO()
    status = app.serve(io.BytesIO(text.encode()), stdout, stderr)
    lines = [json.loads(line) for line in stdout.getvalue().decode().splitlines()]
    return lines, status, stderr.getvalue()


class Supervisor:
    """Plays the supervisor over real pipes, with the function serving in a thread."""

    def __init__(self, app):
        in_r, in_w = os.pipe()
        out_r, out_w = os.pipe()
        self.to_function = os.fdopen(in_w, "wb")
        self.from_function = os.fdopen(out_r, "rb")
        self.log = io.StringIO()
        self.lines = queue.Queue()
        self.status = None
        self.function_in = os.fdopen(in_r, "rb")
        function_out = os.fdopen(out_w, "wb")

        def serve():
            self.status = app.serve(self.function_in, function_out, self.log)
            function_out.close()

        def read():
            with self.from_function:
                for line in self.from_function:
                    self.lines.put(json.loads(line))

        self.server = threading.Thread(target=serve, daemon=True)
        self.server.start()
        threading.Thread(target=read, daemon=True).start()

    def send(self, message):
        self.to_function.write((json.dumps(message) + "\n").encode())
        self.to_function.flush()

    def read(self, timeout=5):
        try:
            return self.lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError("the function wrote nothing for %ss; log:\n%s"
                                 % (timeout, self.log.getvalue()))

    def nothing_more(self, wait=0.2):
        time.sleep(wait)
        return self.lines.empty()

    def close(self):
        """Closes stdin; returns the exit status."""
        if not self.to_function.closed:
            self.to_function.close()
        self.server.join(5)
        if self.server.is_alive():
            raise AssertionError("the function did not stop at the end of input")
        self.function_in.close()  # once the function's reader has seen the end of input
        return self.status


def echo_app(**options):
    app = shs_sdk.Function(**options)

    @app.invoke
    def handle(input, ctx):  # noqa: A002
        return {"input": input, "request_id": ctx.request_id, "function": ctx.function,
                "method": ctx.method}

    return app


def calling_app(**options):
    """An app whose invoke handler calls the supervisor as its input says."""
    app = shs_sdk.Function(**options)

    @app.invoke
    def handle(input, ctx):  # noqa: A002
        action = input.get("action")
        event_type = input.get("type", "t.x")
        if action == "publish":
            return {"publish": ctx.publish(event_type, input.get("payload"))}
        if action == "nowait":
            ctx.publish_nowait(event_type, input.get("payload"))
            return "sent"
        if action == "async":
            ctx.publish_async(event_type, input.get("payload"))
            return "sent"
        if action == "subscribe":
            return {"sub": ctx.subscribe(event_type), "unsub": ctx.unsubscribe(event_type)}
        return {"echo": input}

    return app


class Secrets(unittest.TestCase):
    def setUp(self):
        import tempfile
        self.folder = tempfile.TemporaryDirectory()
        with open(os.path.join(self.folder.name, "api-token"), "w") as f:
            f.write("s3cret")
        self.saved = os.environ.get("SHS_SECRETS")

    def tearDown(self):
        if self.saved is None:
            os.environ.pop("SHS_SECRETS", None)
        else:
            os.environ["SHS_SECRETS"] = self.saved
        self.folder.cleanup()

    def test_a_secret_is_read_from_its_folder(self):
        os.environ["SHS_SECRETS"] = self.folder.name
        self.assertEqual(shs_sdk.secret("api-token"), "s3cret")
        with self.assertRaisesRegex(shs_sdk.Error, 'no secret "other"'):
            shs_sdk.secret("other")
        with self.assertRaisesRegex(shs_sdk.Error, "not a secret name"):
            shs_sdk.secret("../api-token")

    def test_without_secrets_the_error_says_how_to_name_them(self):
        os.environ.pop("SHS_SECRETS", None)
        with self.assertRaisesRegex(shs_sdk.Error, r'secrets = \["api-token"\]'):
            shs_sdk.secret("api-token")


class Basics(unittest.TestCase):
    def test_initialize_then_invokes(self):
        lines, status, _ = script(echo_app(), [INIT, invoke(2, {"a": 1}), invoke(7, [1, "x"])])
        self.assertEqual(status, 0)
        self.assertEqual(lines, [
            result(1, {"concurrency": 1}),
            result(2, {"input": {"a": 1}, "request_id": "req-2", "function": "f",
                       "method": "invoke"}),
            result(7, {"input": [1, "x"], "request_id": "req-7", "function": "f",
                       "method": "invoke"}),
        ])

    def test_a_scheduled_invoke_reads_context_schedule(self):
        app = shs_sdk.Function()

        @app.invoke
        def handle(input, ctx):  # noqa: A002
            return {"schedule": ctx.schedule}

        schedule = {"cron": "0 */5 * * * *", "time": "2026-12-06T03:05:00.000Z"}
        scheduled = {"jsonrpc": "2.0", "id": 3, "method": "invoke",
                     "params": {"input": {}, "context": {"request_id": "r", "function": "f",
                                                         "schedule": schedule}}}
        lines, status, _ = script(app, [INIT, scheduled, invoke(4, {})])
        self.assertEqual(status, 0)
        self.assertEqual(lines[1], result(3, {"schedule": schedule}))
        self.assertEqual(lines[2], result(4, {"schedule": None}))

    def test_lines_are_compact_utf8(self):
        stdout = io.BytesIO()
        app = echo_app()
        app.serve(io.BytesIO((json.dumps(invoke(2, "é")) + "\n").encode()), stdout, io.StringIO())
        self.assertIn('"input":"é"'.encode(), stdout.getvalue())
        self.assertTrue(stdout.getvalue().endswith(b"\n"))
        self.assertNotIn(b": ", stdout.getvalue())

    def test_unknown_methods_notifications_stray_answers_and_bad_lines(self):
        lines, status, log = script(echo_app(), [
            {"jsonrpc": "2.0", "id": 2, "method": "frobnicate"},
            {"jsonrpc": "2.0", "method": "frobnicate"},
            result(99, {}),
            "not json",
            "[1]",
            "",
            json.dumps(invoke(3, 1)) + "\r",
        ])
        self.assertEqual(status, 0)
        self.assertEqual([line["id"] for line in lines], [2, 3])
        self.assertEqual(lines[0]["error"]["code"], shs_sdk.METHOD_NOT_FOUND)
        self.assertEqual(lines[1]["result"]["input"], 1)
        self.assertIn("nobody waits for: 99", log)
        self.assertIn("not JSON", log)

    def test_no_invoke_handler_and_no_event_handler(self):
        lines, _, _ = script(shs_sdk.Function(), [invoke(2, {}), event(3, "a.b")])
        self.assertEqual(lines[0]["error"]["code"], -32601)
        self.assertEqual(lines[1]["error"]["code"], -32601)
        self.assertIn("a.b", lines[1]["error"]["message"])

    def test_version_matches_pyproject(self):
        here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        with open(os.path.join(here, "pyproject.toml")) as f:
            version = re.search(r'^version = "(.*)"$', f.read(), re.M).group(1)
        self.assertEqual(version, shs_sdk.__version__)


class Errors(unittest.TestCase):
    def app(self):
        app = shs_sdk.Function()

        @app.invoke
        def handle(input, ctx):  # noqa: A002
            if input == "fail":
                raise shs_sdk.Error("nope", code=4242, data={"why": "because"})
            if input == "crash":
                raise ValueError("boom")
            if input == "not json":
                return {1, 2}
            return float("nan")

        return app

    def test_errors_are_structured(self):
        lines, status, log = script(self.app(), [
            invoke(2, "fail"), invoke(3, "crash"), invoke(4, "not json"), invoke(5, "nan")])
        self.assertEqual(status, 0)
        self.assertEqual(lines[0], {"jsonrpc": "2.0", "id": 2, "error": {
            "code": 4242, "message": "nope", "data": {"why": "because"}}})
        self.assertEqual(lines[1]["error"], {"code": -32000, "message": "boom",
                                             "data": {"exception": "ValueError"}})
        self.assertIn("Traceback", log)
        self.assertIn("ValueError: boom", log)
        for line in lines[2:]:
            self.assertEqual(line["error"]["code"], -32000)
            self.assertIn("not JSON", line["error"]["message"])

    def test_error_object(self):
        error = shs_sdk.Error("m")
        self.assertEqual(error.to_dict(), {"code": -32000, "message": "m"})
        self.assertEqual(str(error), "m")


class Events(unittest.TestCase):
    def app(self, **options):
        app = shs_sdk.Function(subscribe=["audit.>"], **options)

        @app.event("user.created", "user.updated")
        def on_user(event, ctx):
            return {"handler": "user", "id": event.id, "type": event["type"],
                    "payload": event.payload, "request_id": ctx.request_id,
                    "method": ctx.method}

        @app.event("quiet.thing", subscribe=False)
        def on_quiet(event, ctx):
            return {"handler": "quiet"}

        @app.any_event
        def on_any(event, ctx):
            return {"handler": "any", "type": event.type, "event": event.to_dict()}

        return app

    def test_events_go_to_their_handler_or_to_the_catch_all(self):
        lines, _, _ = script(self.app(), [
            event(2, "user.created", {"name": "Ada"}),
            event(3, "user.updated"),
            event(4, "audit.login", 1),
            event(5, "quiet.thing"),
            {"jsonrpc": "2.0", "id": 6, "method": "event", "params": {}},
        ])
        self.assertEqual(lines[0]["result"], {
            "handler": "user", "id": "ev-2", "type": "user.created", "payload": {"name": "Ada"},
            "request_id": "del-2", "method": "event"})
        self.assertEqual(lines[1]["result"]["type"], "user.updated")
        self.assertEqual(lines[2]["result"]["handler"], "any")
        self.assertEqual(lines[2]["result"]["event"]["source"], "/http")
        self.assertEqual(lines[3]["result"], {"handler": "quiet"})
        self.assertEqual(lines[4]["error"]["code"], -32602)

    def test_event_needs_types(self):
        app = shs_sdk.Function()
        with self.assertRaises(TypeError):
            app.event(lambda event, ctx: None)
        with self.assertRaises(TypeError):
            app.event()

    def test_start_up_subscriptions_come_before_the_initialize_answer(self):
        app = self.app()
        seen = {}

        @app.setup
        def setup(ctx):
            seen["ctx"] = (ctx.function, ctx.method, ctx.request_id)
            ctx.publish_nowait("f.started", {})

        sup = Supervisor(app)
        sup.send(INIT)
        for n, pattern in enumerate(["audit.>", "user.created", "user.updated"], start=1):
            request = sup.read()
            self.assertEqual(request, {"jsonrpc": "2.0", "id": n, "method": "subscribe",
                                       "params": {"type": pattern}})
            sup.send(result(n, {"subscribed": True, "type": pattern}))
        self.assertEqual(sup.read(), {"jsonrpc": "2.0", "method": "publish",
                                      "params": {"type": "f.started", "payload": {}}})
        self.assertEqual(sup.read(), result(1, {"concurrency": 1}))
        self.assertEqual(seen["ctx"], ("f", "initialize", None))
        self.assertEqual(sup.close(), 0)

    def test_a_refused_start_up_subscription_stops_the_function(self):
        app = shs_sdk.Function(subscribe=["a b"])
        sup = Supervisor(app)
        sup.send(INIT)
        request = sup.read()
        sup.send({"jsonrpc": "2.0", "id": request["id"],
                  "error": {"code": -32602, "message": "invalid event type \"a b\""}})
        sup.server.join(5)
        self.assertFalse(sup.server.is_alive(), "serve() returns without waiting for stdin")
        self.assertEqual(sup.status, 1)
        self.assertIn("start-up failed: subscribe failed: invalid event type",
                      sup.log.getvalue())
        # No answer to initialize: exiting before it is what makes the start a failed one.
        self.assertTrue(sup.nothing_more())
        self.assertEqual(sup.close(), 1)

    def test_a_failing_setup_stops_the_function(self):
        app = shs_sdk.Function()

        @app.setup
        def setup(ctx):
            raise RuntimeError("no database")

        lines, status, log = script(app, [INIT, invoke(2, {})])
        self.assertEqual(status, 1)
        self.assertEqual(lines, [])
        self.assertIn("RuntimeError: no database", log)


class Calls(unittest.TestCase):
    def test_publish_waits_for_its_answer_and_names_the_request(self):
        sup = Supervisor(calling_app())
        sup.send(invoke(5, {"action": "publish", "type": "order.placed", "payload": {"n": 1}}))
        request = sup.read()
        self.assertEqual(request, {"jsonrpc": "2.0", "id": 1, "method": "publish",
                                   "params": {"type": "order.placed", "payload": {"n": 1},
                                              "request_id": "req-5"}})
        self.assertTrue(sup.nothing_more())
        sup.send(result(1, published("e-1")))
        self.assertEqual(sup.read(), result(5, {"publish": published("e-1")}))
        self.assertEqual(sup.close(), 0)

    def test_a_refused_publish_is_an_error(self):
        sup = Supervisor(calling_app())
        sup.send(invoke(5, {"action": "publish", "type": "a b"}))
        request = sup.read()
        sup.send({"jsonrpc": "2.0", "id": request["id"],
                  "error": {"code": -32602, "message": "invalid event type"}})
        self.assertEqual(sup.read()["error"], {
            "code": -32000, "message": "publish failed: invalid event type",
            "data": {"error": {"code": -32602, "message": "invalid event type"}}})
        self.assertEqual(sup.close(), 0)

    def test_fire_and_forget_is_a_notification(self):
        lines, _, _ = script(calling_app(), [
            invoke(5, {"action": "nowait", "type": "a.b", "payload": 1}),
            invoke(6, {"action": "async", "type": "a.c"}),
        ])
        self.assertEqual(lines, [
            {"jsonrpc": "2.0", "method": "publish",
             "params": {"type": "a.b", "payload": 1, "request_id": "req-5"}},
            result(5, "sent"),
            {"jsonrpc": "2.0", "method": "publish",
             "params": {"type": "a.c", "payload": None, "request_id": "req-6"}},
            result(6, "sent"),
        ])

    def test_subscribe_and_unsubscribe_from_a_handler(self):
        sup = Supervisor(calling_app())
        sup.send(invoke(5, {"action": "subscribe", "type": "x.*"}))
        request = sup.read()
        self.assertEqual(request["method"], "subscribe")
        sup.send(result(request["id"], {"subscribed": True, "type": "x.*"}))
        request = sup.read()
        self.assertEqual(request["method"], "unsubscribe")
        sup.send(result(request["id"], {"unsubscribed": True, "type": "x.*"}))
        self.assertEqual(sup.read()["result"], {
            "sub": {"subscribed": True, "type": "x.*"},
            "unsub": {"unsubscribed": True, "type": "x.*"}})
        sup.close()

    def test_the_end_of_input_fails_a_waiting_call_and_still_answers(self):
        sup = Supervisor(calling_app())
        sup.send(invoke(5, {"action": "publish"}))
        self.assertEqual(sup.read()["method"], "publish")
        sup.to_function.close()
        answer = sup.read()
        self.assertEqual(answer["id"], 5)
        self.assertIn("stdin is closed", answer["error"]["message"])
        self.assertEqual(sup.close(), 0)


class Concurrency(unittest.TestCase):
    def test_answers_are_matched_by_id_not_by_order(self):
        app = calling_app(concurrency=4)
        barrier = threading.Barrier(3, timeout=5)

        @app.invoke
        def handle(input, ctx):  # noqa: A002
            if input.get("wait"):
                barrier.wait()  # only passes if 3 handlers run at once
            if input.get("action") == "publish":
                return {"n": input["n"], "publish": ctx.publish("t.x", input["n"])}
            return {"echo": input}

        sup = Supervisor(app)
        for n in (10, 11, 12):
            sup.send(invoke(n, {"action": "publish", "n": n, "wait": True}))
        requests = [sup.read() for _ in range(3)]
        self.assertEqual(sorted(r["params"]["request_id"] for r in requests),
                         ["req-10", "req-11", "req-12"])
        # While those three wait, a fourth request is served.
        sup.send(invoke(13, {"n": 13}))
        self.assertEqual(sup.read(), result(13, {"echo": {"n": 13}}))
        # Answer the publishes in reverse order: each handler gets its own.
        for request in reversed(requests):
            sup.send(result(request["id"], published("ev-for-%s" % request["params"]["payload"])))
        answers = sorted((sup.read() for _ in range(3)), key=lambda a: a["id"])
        for answer, n in zip(answers, (10, 11, 12)):
            self.assertEqual(answer["id"], n)
            self.assertEqual(answer["result"]["publish"]["event_id"], "ev-for-%s" % n)
        self.assertEqual(sup.close(), 0)

    def test_too_few_threads_is_logged(self):
        app = shs_sdk.Function(concurrency=1)
        release = threading.Event()

        @app.invoke
        def handle(input, ctx):  # noqa: A002
            release.wait(5)
            return input

        sup = Supervisor(app)
        sup.send(invoke(2, 1))
        sup.send(invoke(3, 2))
        time.sleep(0.2)
        release.set()
        self.assertEqual({sup.read()["id"], sup.read()["id"]}, {2, 3})
        sup.close()
        self.assertIn("more requests in flight than Function(concurrency=1)",
                      sup.log.getvalue())

    def test_the_end_of_input_waits_for_requests_in_flight(self):
        app = shs_sdk.Function(concurrency=2)

        @app.invoke
        def handle(input, ctx):  # noqa: A002
            time.sleep(0.3)
            return input

        sup = Supervisor(app)
        sup.send(invoke(2, "a"))
        sup.send(invoke(3, "b"))
        time.sleep(0.05)
        self.assertEqual(sup.close(), 0)
        self.assertEqual({sup.read()["id"], sup.read()["id"]}, {2, 3})


class EventTest(unittest.TestCase):
    def test_every_attribute_is_kept(self):
        delivered = {"id": "e1", "type": "t", "source": "/s", "time": "2026-01-01T00:00:00Z",
                     "payload": {"n": 1}, "specversion": "1.0", "shshops": 2, "shscause": "e0",
                     "traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}
        event = shs_sdk.Event.from_dict(delivered)
        self.assertEqual(event.payload, {"n": 1})
        self.assertEqual(event["shshops"], 2)
        self.assertEqual(event.get("shscause"), "e0")
        self.assertEqual(event.get("missing", "x"), "x")
        self.assertEqual(event.attributes["specversion"], "1.0")
        self.assertEqual(event.to_dict(), delivered)
        with self.assertRaises(KeyError):
            event["missing"]
        self.assertEqual(event.data, {"n": 1})

    def test_bytes_come_as_data(self):
        delivered = {"id": "e2", "type": "t", "source": "/s", "time": "2026-01-01T00:00:00Z",
                     "payload": None, "specversion": "1.0",
                     "datacontenttype": "application/octet-stream", "data_base64": "/wBoaQ==",
                     "shshops": 0}
        event = shs_sdk.Event.from_dict(delivered)
        self.assertEqual(event.data, b"\xff\x00hi")
        self.assertIsNone(event.payload)
        self.assertEqual(event.to_dict(), delivered)
        text = shs_sdk.Event.from_dict(dict(delivered, payload="hi", datacontenttype="text/plain",
                                            data_base64=None))
        self.assertEqual(text.data, "hi")


def http_invoke(id, input, http):  # noqa: A002
    message = invoke(id, input)
    message["params"]["http"] = http
    return message


class Http(unittest.TestCase):
    def test_the_request_is_read_with_its_form_query_and_bytes(self):
        app = shs_sdk.Function()

        @app.invoke
        def handle(input, ctx):  # noqa: A002
            r = ctx.http
            return {"method": r.method, "path": r.path, "args": r.args, "form": r.form,
                    "type": r.header("Content-Type"), "text": r.text, "input": input,
                    "bytes": list(r.body)}

        form = {"method": "POST", "path": "/a", "query": "x=1&y=two&x=3",
                "headers": {"content-type": "application/x-www-form-urlencoded"},
                "body": "a=1&b=two+words&c=%C3%A9", "remote_addr": "127.0.0.1"}
        blob = {"method": "PUT", "path": "/", "query": "", "headers": {},
                "body_base64": "AAH/"}
        lines, _, _ = script(app, [INIT, http_invoke(2, None, form), http_invoke(3, None, blob)])
        self.assertEqual(lines[0]["result"], {"concurrency": 1})
        got = lines[1]["result"]
        self.assertEqual(got["args"], {"x": "3", "y": "two"})
        self.assertEqual(got["form"], {"a": "1", "b": "two words", "c": "\u00e9"})
        self.assertEqual((got["method"], got["path"]), ("POST", "/a"))
        self.assertEqual(got["type"], "application/x-www-form-urlencoded")
        self.assertEqual(lines[2]["result"]["bytes"], [0, 1, 255])
        self.assertEqual(lines[2]["result"]["form"], {})

    def test_initialize_declares_the_concurrency_it_runs(self):
        for n in (1, 4):
            app = shs_sdk.Function(concurrency=n)
            lines, _, _ = script(app, [INIT])
            self.assertEqual(lines[0]["result"], {"concurrency": n})
        with self.assertRaises(ValueError):
            shs_sdk.Function(concurrency=0)

    def test_a_response_becomes_an_http_response(self):
        app = shs_sdk.Function(raw_body=True)

        @app.invoke
        def handle(input, ctx):  # noqa: A002
            kind = input["kind"]
            if kind == "text":
                return shs_sdk.Response("<p>hi</p>", status=201, content_type="text/html",
                                        headers={"set-cookie": ["a=1", "b=2"]})
            if kind == "bytes":
                return shs_sdk.Response(b"\x00\xff")
            if kind == "json":
                return shs_sdk.Response({"a": 1}, status=202)
            return shs_sdk.Response.redirect("/x")

        lines, _, _ = script(app, [INIT] + [invoke(i, {"kind": k}) for i, k in
                                            enumerate(["text", "bytes", "json", "go"], 2)])
        self.assertEqual(lines[0]["result"], {"concurrency": 1, "raw_body": True})
        self.assertEqual(lines[1]["result"], {"http_response": {
            "status": 201, "headers": {"set-cookie": ["a=1", "b=2"], "content-type": "text/html"},
            "body": "<p>hi</p>"}})
        self.assertEqual(lines[2]["result"]["http_response"]["body_base64"], "AP8=")
        self.assertEqual(lines[3]["result"]["http_response"],
                         {"status": 202, "headers": {"content-type": "application/json"},
                          "body": "{\"a\": 1}"})
        self.assertEqual(lines[4]["result"]["http_response"],
                         {"status": 302, "headers": {"location": "/x"}})

    def test_streaming_and_sse_and_cancel(self):
        app = shs_sdk.Function()
        started = threading.Event()

        @app.invoke
        def handle(input, ctx):  # noqa: A002
            if input.get("sse"):
                ctx.sse({"n": 1}, event="tick", id="1")
                ctx.sse("two\nlines")
                return None
            ctx.stream("a", status=201, headers={"x": "y"})
            ctx.stream(b"\x00")
            started.set()
            ctx.cancelled.wait(5)
            return {"cancelled": ctx.cancelled.is_set()}

        sup = Supervisor(app)
        sup.send(INIT)
        sup.read()
        sup.send(invoke(7, {"sse": True}))
        first, second, end = sup.read(), sup.read(), sup.read()
        self.assertEqual(first, {"jsonrpc": "2.0", "method": "stream", "params": {
            "id": 7, "chunk": 'event: tick\nid: 1\ndata: {"n": 1}\n\n',
            "headers": {"content-type": "text/event-stream", "cache-control": "no-cache"}}})
        self.assertEqual(second["params"], {"id": 7, "chunk": "data: two\ndata: lines\n\n"})
        self.assertEqual(end["id"], 7)
        sup.send(invoke(8, {}))
        self.assertEqual(sup.read()["params"],
                         {"id": 8, "chunk": "a", "status": 201, "headers": {"x": "y"}})
        self.assertEqual(sup.read()["params"], {"id": 8, "chunk_base64": "AA=="})
        self.assertTrue(started.wait(5))
        # The one thread is busy; the cancel still reaches the handler.
        sup.send({"jsonrpc": "2.0", "method": "cancel", "params": {"id": 8}})
        self.assertEqual(sup.read(), {"jsonrpc": "2.0", "id": 8, "result": {"cancelled": True}})
        self.assertEqual(sup.close(), 0)


if __name__ == "__main__":
    unittest.main()
