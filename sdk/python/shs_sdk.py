"""shs_sdk: write shs functions in Python, without knowing the protocol.

One module, standard library only, Python 3.8+. Copy it next to your ``main.py`` or install it
with ``pip install ./sdk/python``.

    import shs_sdk

    app = shs_sdk.Function()

    @app.invoke
    def handle(input, ctx):
        name = input.get("name", "world")
        result = ctx.publish("greeting.sent", {"name": name})   # waits for the subscribers
        return {"message": "Hello, %s!" % name, "delivered": result["delivered"]}

    @app.event("user.created")              # also subscribes to user.created at start-up
    def on_user(event, ctx):
        ctx.log("welcome,", event.payload["name"])

    app.run()

What the SDK does for you:

- answers ``initialize``, after making the start-up subscriptions (the types of your event
  handlers, and those given to ``Function(subscribe=...)`` or ``app.subscribe(...)``) and
  running your ``@app.setup`` function, so that they are in force before the first event;
- calls your handlers: ``@app.invoke`` for ``POST /run/NAME``, ``@app.event(TYPE)`` for events
  of exactly that type, ``@app.any_event`` for any other (pattern subscriptions);
- gives each handler a :class:`Context` to publish (``ctx.publish`` waits for the subscribers,
  ``ctx.publish_nowait`` does not), subscribe, unsubscribe and log;
- turns what a handler returns into the answer, an :class:`Error` it raises into a JSON-RPC
  error ``{code, message, data}``, and any other exception into code -32000 with its message
  (and the traceback in the log);
- with ``Function(concurrency=N)`` handles up to N requests at once on N threads, and gives each
  waiting ``ctx.publish`` its own answer, matched by id;
- exits with status 0 when the supervisor closes stdin, after the requests in flight are done.

stdout carries the protocol: do not ``print()`` to it. Log with ``ctx.log(...)``,
``shs_sdk.log(...)`` or ``print(..., file=sys.stderr)``.
"""

import base64
import json
import os
import sys
import threading
import traceback
import urllib.parse
from concurrent.futures import ThreadPoolExecutor

__all__ = [
    "Function",
    "Context",
    "Event",
    "Error",
    "log",
    "FUNCTION_ERROR",
    "INVALID_PARAMS",
    "METHOD_NOT_FOUND",
]
__version__ = "0.1.0"

#: The conventional code of a function's own failure.
FUNCTION_ERROR = -32000
#: The code for parameters that do not fit.
INVALID_PARAMS = -32602
#: The code for a method (or event type) nobody handles.
METHOD_NOT_FOUND = -32601

_PROTOCOL_METHODS = ("initialize", "invoke", "event")


class Error(Exception):
    """An error to answer with: ``raise shs_sdk.Error("no such order", code=404, data={...})``.

    ``POST /run/NAME`` answers it as a 500 with this ``code``, ``message`` and ``data``; an event
    handler's error is listed in the publisher's ``errors``. ``ctx.publish`` and the other calls
    raise it too when the supervisor answers with an error.
    """

    def __init__(self, message, code=FUNCTION_ERROR, data=None):
        Exception.__init__(self, message)
        self.message = str(message)
        self.code = int(code)
        self.data = data

    def to_dict(self):
        """The wire form, ``{"code", "message", "data"?}``."""
        error = {"code": self.code, "message": self.message}
        if self.data is not None:
            error["data"] = self.data
        return error

    def __repr__(self):
        return "Error(%r, code=%r, data=%r)" % (self.message, self.code, self.data)


class Event:
    """An event as a handler receives it: ``id``, ``type``, ``source``, ``time``, ``payload``,
    and ``attributes``, a dict of every other CloudEvents attribute the supervisor sent
    (``specversion``, ``datacontenttype``, ``shshops``, ``shscause``, ``traceparent``, and
    any extension of the publisher).

    ``event["payload"]`` works as well as ``event.payload``, and ``event["shshops"]`` as well
    as ``event.attributes["shshops"]``.

    ``event.data`` is the data whatever its content type: ``bytes`` when the supervisor sent it
    as ``data_base64`` (data that is neither JSON nor UTF-8 text, e.g.
    ``application/octet-stream``), else the ``payload`` (JSON as it is, text as a ``str``).
    """

    FIELDS = ("id", "type", "source", "time", "payload")
    __slots__ = FIELDS + ("attributes",)

    def __init__(self, id, type, source=None, time=None, payload=None, attributes=None):  # noqa: A002
        self.id = id
        self.type = type
        self.source = source
        self.time = time
        self.payload = payload
        self.attributes = dict(attributes or {})

    @classmethod
    def from_dict(cls, event):
        attributes = {k: v for k, v in event.items() if k not in cls.FIELDS}
        return cls(event.get("id"), event.get("type"), event.get("source"), event.get("time"),
                   event.get("payload"), attributes)

    @property
    def data(self):
        """The data: ``bytes`` for data sent as ``data_base64``, else ``payload``."""
        encoded = self.attributes.get("data_base64")
        if isinstance(encoded, str):
            return base64.b64decode(encoded)
        return self.payload

    def to_dict(self):
        """The event object as it was delivered."""
        d = {name: getattr(self, name) for name in self.FIELDS}
        d.update(self.attributes)
        return d

    def __getitem__(self, key):
        if key in self.FIELDS:
            return getattr(self, key)
        return self.attributes[key]

    def get(self, key, default=None):
        if key in self.FIELDS:
            return getattr(self, key)
        return self.attributes.get(key, default)

    def __repr__(self):
        return "Event(id=%r, type=%r, source=%r, time=%r, payload=%r, attributes=%r)" % (
            self.id, self.type, self.source, self.time, self.payload, self.attributes)

    def __eq__(self, other):
        return isinstance(other, Event) and self.to_dict() == other.to_dict()


class Request:
    """The HTTP request an invoke came with (``ctx.http``; ``None`` for other invokes).

    Attributes: ``method`` (``"GET"``, ...; HEAD arrives as GET), ``path`` (after
    ``/run/NAME``, ``"/"`` when none), ``query`` (the raw query string), ``headers`` (a dict,
    lower-case names, repeated values joined with ``", "``), ``body`` (the raw bytes; empty for
    a JSON body unless the function asked for ``raw_body``), ``remote_addr``.
    """

    def __init__(self, http):
        self.method = http.get("method", "")
        self.path = http.get("path", "/")
        self.query = http.get("query", "")
        self.headers = dict(http.get("headers") or {})
        self.remote_addr = http.get("remote_addr")
        if "body_base64" in http:
            self.body = base64.b64decode(http["body_base64"])
        else:
            self.body = http.get("body", "").encode("utf-8")

    def header(self, name, default=None):
        """A header's value, by name in any case."""
        return self.headers.get(name.lower(), default)

    @property
    def text(self):
        """The body as text (UTF-8, undecodable bytes replaced)."""
        return self.body.decode("utf-8", "replace")

    @property
    def args(self):
        """The query's parameters: a dict of name -> value (the last one, when repeated)."""
        return dict(urllib.parse.parse_qsl(self.query, keep_blank_values=True))

    @property
    def form(self):
        """The fields of an ``application/x-www-form-urlencoded`` body: a dict of name ->
        value (the last one, when repeated); empty for any other body."""
        content_type = self.header("content-type", "").split(";")[0].strip().lower()
        if content_type != "application/x-www-form-urlencoded":
            return {}
        return dict(urllib.parse.parse_qsl(self.text, keep_blank_values=True))

    def __repr__(self):
        return "Request(method=%r, path=%r, query=%r)" % (self.method, self.path, self.query)


class Response:
    """An HTTP answer: return it from an invoke handler.

    ``body`` is ``str`` (text, default ``text/plain; charset=utf-8``), ``bytes`` (default
    ``application/octet-stream``), or anything else JSON can encode (sent as JSON,
    ``application/json``); ``None`` for no body. ``headers``: a dict of name -> str, or -> a
    list of str for a header sent several times (``set-cookie``).
    """

    def __init__(self, body=None, status=200, headers=None, content_type=None):
        self.body = body
        self.status = int(status)
        self.headers = dict(headers or {})
        if content_type is not None:
            self.headers["content-type"] = content_type

    @classmethod
    def redirect(cls, location, status=302):
        """A redirect to ``location``."""
        return cls(status=status, headers={"location": location})

    def to_dict(self):
        """The ``{"http_response": {...}}`` result this stands for."""
        response = {"status": self.status, "headers": dict(self.headers)}
        has_type = any(k.lower() == "content-type" for k in self.headers)
        if isinstance(self.body, (bytes, bytearray)):
            response["body_base64"] = base64.b64encode(bytes(self.body)).decode("ascii")
        elif isinstance(self.body, str):
            response["body"] = self.body
        elif self.body is not None:
            response["body"] = json.dumps(self.body, ensure_ascii=False)
            if not has_type:
                response["headers"]["content-type"] = "application/json"
        return {"http_response": response}

    def __repr__(self):
        return "Response(status=%r)" % (self.status,)


def sse_event(data, event=None, id=None, retry=None):  # noqa: A002
    """One server-sent event as text: ``data`` (str, or JSON for anything else; one
    ``data:`` line per line), optional ``event``, ``id``, ``retry`` (ms), then a blank line."""
    if not isinstance(data, str):
        data = json.dumps(data, ensure_ascii=False)
    lines = []
    if event is not None:
        lines.append("event: %s" % event)
    if id is not None:
        lines.append("id: %s" % id)
    if retry is not None:
        lines.append("retry: %d" % int(retry))
    lines.extend("data: %s" % line for line in data.split("\n"))
    return "\n".join(lines) + "\n\n"


class Context:
    """The request being handled, and the way to talk to the supervisor while handling it.

    Attributes: ``request_id`` (the request's id: for an HTTP invoke its ``X-Request-Id``;
    ``None`` in setup), ``function`` (the function's name), ``method`` (``"invoke"``,
    ``"event"`` or ``"initialize"``), ``http`` (the :class:`Request` of an invoke made over
    HTTP, else ``None``), ``cancelled`` (a ``threading.Event`` set when the HTTP client went
    away), ``schedule`` (for an occurrence of a schedule: ``{"cron": str, "time": str}``, the
    time in RFC 3339; else ``None``).
    """

    def __init__(self, connection, request_id, function, method, call_id=None, http=None,
                 schedule=None):
        self._connection = connection
        self._call_id = call_id
        self._streaming = False
        self.request_id = request_id
        self.function = function
        self.method = method
        self.http = Request(http) if isinstance(http, dict) else None
        self.schedule = schedule if isinstance(schedule, dict) else None
        self.cancelled = threading.Event()

    def stream(self, chunk, status=None, headers=None):
        """Sends a chunk of a streamed answer (``str`` or ``bytes``) to the HTTP client now.
        The first call starts the answer, with ``status`` and ``headers`` if given; returning
        from the handler ends it (the return value is then not used)."""
        if self._call_id is None:
            raise Error("only an invoke can stream")
        params = {"id": self._call_id}
        if isinstance(chunk, (bytes, bytearray)):
            params["chunk_base64"] = base64.b64encode(bytes(chunk)).decode("ascii")
        else:
            params["chunk"] = str(chunk)
        if not self._streaming:
            if status is not None:
                params["status"] = int(status)
            if headers:
                params["headers"] = dict(headers)
        self._streaming = True
        self._connection.notify("stream", params)

    def sse(self, data, event=None, id=None, retry=None):  # noqa: A002
        """Sends one server-sent event (see :func:`sse_event`); the first one starts a
        ``text/event-stream`` answer."""
        headers = None if self._streaming else {"content-type": "text/event-stream",
                                                 "cache-control": "no-cache"}
        self.stream(sse_event(data, event, id, retry), headers=headers)

    def _params(self, event_type, payload):
        params = {"type": event_type, "payload": payload}
        if self.request_id:
            # Lets the supervisor attribute the publish to this request when several are in
            # flight: hop counting and cycle detection then follow the right chain.
            params["request_id"] = self.request_id
        return params

    def publish(self, event_type, payload=None):
        """Publishes an event and waits until every subscriber has taken it (or failed).

        Returns the supervisor's answer: ``{"published": True, "event_id": str,
        "delivered": int, "errors": [{"function": str, "message": str}, ...]}``. Raises
        :class:`Error` if the supervisor refuses it (an invalid type, for example).
        """
        return self._connection.call("publish", self._params(event_type, payload))

    def publish_nowait(self, event_type, payload=None):
        """Publishes an event without waiting for anything (fire-and-forget). Returns None."""
        self._connection.notify("publish", self._params(event_type, payload))

    #: Another name for :meth:`publish_nowait`.
    publish_async = publish_nowait

    def subscribe(self, pattern):
        """Subscribes the function to an event type or pattern (``user.*``, ``orders.>``).

        Returns ``{"subscribed": True, "type": pattern}``.
        """
        return self._connection.call("subscribe", {"type": pattern})

    def unsubscribe(self, pattern):
        """Drops the function's subscription to exactly this pattern.

        Returns ``{"unsubscribed": True, "type": pattern}``.
        """
        return self._connection.call("unsubscribe", {"type": pattern})

    def log(self, *parts):
        """Writes one line to the function's log (stderr), like ``print``."""
        self._connection.log(" ".join(str(p) for p in parts))

    def __repr__(self):
        return "Context(request_id=%r, function=%r, method=%r)" % (
            self.request_id, self.function, self.method)


def log(*parts):
    """Writes one line to the function's log (stderr), like ``print``."""
    sys.stderr.write(" ".join(str(p) for p in parts) + "\n")
    sys.stderr.flush()


def secret(name):
    """The value of secret ``name``: a file of the folder ``$SHS_SECRETS``, which holds the
    secrets the function names in ``secrets = [...]`` of its function.toml. Raises ``Error``
    (never showing a value) when the function has no such secret."""
    folder = os.environ.get("SHS_SECRETS")
    if not folder:
        raise Error("no secrets: name them in function.toml, e.g. secrets = [%s]"
                    % json.dumps(str(name)))
    if not isinstance(name, str) or not name or "/" in name or name.startswith("."):
        raise Error("%r is not a secret name" % (name,))
    try:
        with open(os.path.join(folder, name), "rb") as f:
            return f.read().decode("utf-8")
    except FileNotFoundError:
        raise Error("no secret %s: name it in secrets = [...] of function.toml"
                    % json.dumps(name)) from None


def _dumps(message):
    try:
        text = json.dumps(message, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
        return text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate: let json escape it
        return json.dumps(message, separators=(",", ":"), allow_nan=False).encode("ascii")


class _Closed(Exception):
    """stdin is closed: no answer can come any more."""


class _Connection:
    """The streams, the calls waiting for an answer (by id), and the locks that keep lines
    whole."""

    def __init__(self, stdin, stdout, stderr):
        self.stdin = stdin
        self.stdout = stdout
        self.stderr = stderr
        self._write_lock = threading.Lock()
        self._log_lock = threading.Lock()
        self._pending_lock = threading.Lock()
        self._pending = {}  # id -> [threading.Event, message]
        self._next_id = 0
        self._closed = False

    # -- writing ------------------------------------------------------------------------------

    def send(self, message):
        """Writes one message as one line. Raises TypeError/ValueError (before writing
        anything) when it is not JSON."""
        data = _dumps(message) + b"\n"
        with self._write_lock:
            view = memoryview(data)
            while view:
                written = self.stdout.write(view)
                if written is None:  # a non-blocking raw stream that could not take it
                    written = 0
                view = view[written:]
            self.stdout.flush()

    def log(self, text):
        with self._log_lock:
            try:
                self.stderr.write(text + "\n")
                self.stderr.flush()
            except (OSError, ValueError):
                pass

    # -- the function's own requests ----------------------------------------------------------

    def call(self, method, params):
        """Sends a request and waits for its answer; returns its result or raises Error."""
        slot = [threading.Event(), None]
        with self._pending_lock:
            if self._closed:
                raise Error("%s failed: stdin is closed, no answer can come "
                            "(the supervisor is stopping this process)" % method)
            self._next_id += 1
            request_id = self._next_id
            self._pending[request_id] = slot
        try:
            self.send({"jsonrpc": "2.0", "id": request_id, "method": method, "params": params})
        except BaseException:
            with self._pending_lock:
                self._pending.pop(request_id, None)
            raise
        slot[0].wait()
        answer = slot[1]
        if answer is None:
            raise Error("%s failed: stdin is closed, no answer can come "
                        "(the supervisor is stopping this process)" % method)
        if "error" in answer:
            error = answer["error"] if isinstance(answer["error"], dict) else {}
            raise Error("%s failed: %s" % (method, error.get("message", "unknown error")),
                        FUNCTION_ERROR, {"error": error})
        return answer.get("result")

    def notify(self, method, params):
        self.send({"jsonrpc": "2.0", "method": method, "params": params})

    def resolve(self, answer):
        """Hands an answer to the call waiting for its id."""
        with self._pending_lock:
            slot = self._pending.pop(answer.get("id"), None)
        if slot is None:
            self.log("shs_sdk: ignoring an answer with an id nobody waits for: %r"
                     % (answer.get("id"),))
            return
        slot[1] = answer
        slot[0].set()

    def close(self):
        """The end of input: every call still waiting fails."""
        with self._pending_lock:
            self._closed = True
            slots = list(self._pending.values())
            self._pending.clear()
        for slot in slots:
            slot[0].set()


def _binary(stream):
    """The binary layer of a text stream (sys.stdin, sys.stdout), or the stream itself."""
    if hasattr(stream, "buffer"):
        return stream.buffer
    return stream


class Function:
    """A function: its handlers and subscriptions. Register handlers, then :meth:`run`.

    ``concurrency``: how many requests are handled at once, on that many threads (default 1).
    It is declared to shs in the answer to ``initialize`` (``"concurrency": N``), so shs sends
    the process that many requests at once without a ``function.toml``; a ``concurrency`` in
    ``function.toml`` wins, and should then match. With fewer threads than that, requests
    wait for a free thread, and a handler that waits for another request of its own process
    (publishing an event the function itself subscribes to) waits for its timeout.

    ``subscribe``: event types or patterns to subscribe to at start-up.

    ``auto_subscribe``: whether each ``@app.event(TYPE)`` type is subscribed to at start-up
    (default True).

    ``raw_body``: get the raw body of HTTP requests (``ctx.http.body``) even when it is JSON.
    """

    def __init__(self, concurrency=1, subscribe=(), auto_subscribe=True, raw_body=False):
        if int(concurrency) < 1:
            raise ValueError("concurrency must be at least 1")
        self.concurrency = int(concurrency)
        self.raw_body = bool(raw_body)
        self._running = {}  # invoke id -> Context, for cancel
        self._running_lock = threading.Lock()
        self.auto_subscribe = auto_subscribe
        self._subscriptions = []
        self._invoke = None
        self._events = {}
        self._any_event = None
        self._setup = None
        self.subscribe(*subscribe)

    # -- registration -------------------------------------------------------------------------

    def invoke(self, handler):
        """Decorator: ``handler(input, ctx)`` answers ``POST /run/NAME``; ``input`` is the
        request body (any JSON), the return value (any JSON) is the response body."""
        self._invoke = handler
        return handler

    def event(self, *event_types, subscribe=None):
        """Decorator: ``handler(event, ctx)`` handles events of exactly these types.

        The types are subscribed to at start-up unless ``subscribe=False`` (or
        ``Function(auto_subscribe=False)``). The return value is the answer to the delivery,
        which the supervisor does not use; raising makes the delivery a failure, listed in the
        publisher's ``errors``.
        """
        if not event_types or not all(isinstance(t, str) for t in event_types):
            raise TypeError("use @app.event(\"some.type\", ...) with one or more event types; "
                            "@app.any_event takes every other event")

        def register(handler):
            for event_type in event_types:
                self._events[event_type] = handler
                if subscribe if subscribe is not None else self.auto_subscribe:
                    self.subscribe(event_type)
            return handler

        return register

    def any_event(self, handler):
        """Decorator: ``handler(event, ctx)`` handles every event no ``@app.event`` handler
        takes (types subscribed to by pattern, in ``function.toml``, or later)."""
        self._any_event = handler
        return handler

    def setup(self, handler):
        """Decorator: ``handler(ctx)`` runs at start-up, before the function answers
        ``initialize`` (after the start-up subscriptions). It may publish, subscribe and
        unsubscribe. If it raises, the process logs why and exits with status 1."""
        self._setup = handler
        return handler

    def subscribe(self, *patterns):
        """Subscribes to these event types or patterns at start-up."""
        for pattern in patterns:
            if not isinstance(pattern, str):
                raise TypeError("an event type or pattern is a string, not %r" % (pattern,))
            if pattern not in self._subscriptions:
                self._subscriptions.append(pattern)
        return self

    # -- running ------------------------------------------------------------------------------

    def run(self):
        """Serves the supervisor over stdin and stdout until stdin closes, then returns (and
        the script ends with status 0). Exits with status 1 if start-up fails."""
        code = self.serve()
        if code:
            # Not sys.exit: the thread reading stdin may still hold it, and the interpreter
            # would wait for it at shutdown.
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)

    def serve(self, stdin=None, stdout=None, stderr=None):
        """Serves over the given streams (binary, or text with a ``buffer``; default the
        process's own) until the end of input. Returns the exit status: 0, or 1 if start-up
        failed."""
        connection = _Connection(
            _binary(stdin if stdin is not None else sys.stdin),
            _binary(stdout if stdout is not None else sys.stdout),
            stderr if stderr is not None else sys.stderr,
        )
        finished = threading.Event()
        state = {"fatal": False, "busy": 0, "warned": False}
        state_lock = threading.Lock()
        pool = ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="shs-handler")

        def handle(message):
            try:
                if state["fatal"]:
                    return  # start-up failed: we are stopping
                if self._handle(connection, message) is False:
                    state["fatal"] = True
                    finished.set()
            finally:
                with state_lock:
                    state["busy"] -= 1

        def read():
            try:
                while not finished.is_set():
                    line = connection.stdin.readline()
                    if not line:
                        break
                    message = self._parse(connection, line)
                    if message is None:
                        continue
                    if "method" not in message:
                        connection.resolve(message)
                        continue
                    if message.get("method") == "cancel" and "id" not in message:
                        # At once, on this thread: the handler it is for holds a thread.
                        self._handle(connection, message)
                        continue
                    with state_lock:
                        state["busy"] += 1
                        crowded = state["busy"] > self.concurrency and not state["warned"]
                        if crowded:
                            state["warned"] = True
                    if crowded:
                        connection.log(
                            "shs_sdk: more requests in flight than Function(concurrency=%d): "
                            "they wait for a free thread; set concurrency to match "
                            "function.toml" % self.concurrency)
                    pool.submit(handle, message)
            except (OSError, ValueError) as exc:  # stdin broke: as good as closed
                connection.log("shs_sdk: reading stdin failed: %s" % exc)
            except RuntimeError:  # the pool is shut down: start-up failed, we are stopping
                pass
            finally:
                finished.set()

        reader = threading.Thread(target=read, name="shs-reader", daemon=True)
        reader.start()
        try:
            finished.wait()
        except KeyboardInterrupt:
            pass
        connection.close()
        pool.shutdown(wait=True)
        return 1 if state["fatal"] else 0

    # -- handling one message -----------------------------------------------------------------

    @staticmethod
    def _parse(connection, line):
        line = line.strip()
        if not line:
            return None
        try:
            message = json.loads(line.decode("utf-8") if isinstance(line, bytes) else line)
        except ValueError as exc:
            connection.log("shs_sdk: ignoring a stdin line that is not JSON: %s" % exc)
            return None
        if not isinstance(message, dict):
            connection.log("shs_sdk: ignoring a stdin line that is not a JSON object")
            return None
        if "method" not in message and "result" not in message and "error" not in message:
            connection.log("shs_sdk: ignoring a stdin line that is not a JSON-RPC message")
            return None
        return message

    def _handle(self, connection, message):
        """Handles one request or notification; returns False if start-up failed."""
        method = message.get("method")
        if method == "cancel" and "id" not in message:
            params = message.get("params")
            target = params.get("id") if isinstance(params, dict) else None
            with self._running_lock:
                ctx = self._running.get(target)
            if ctx is not None:
                ctx.cancelled.set()
            return True
        if "id" not in message or message["id"] is None:
            connection.log("shs_sdk: ignoring a notification %r" % (method,))
            return True
        request_id = message["id"]
        params = message.get("params")
        if not isinstance(params, dict):
            params = {}
        if method == "initialize":
            return self._initialize(connection, request_id, params)
        if method == "invoke":
            outcome = self._run_invoke(connection, params, request_id)
        elif method == "event":
            outcome = self._run_event(connection, params)
        else:
            outcome = Error("method not found: %r" % (method,), METHOD_NOT_FOUND)
        self._answer(connection, request_id, outcome)
        return True

    @staticmethod
    def _context(connection, params, method):
        context = params.get("context")
        if not isinstance(context, dict):
            context = {}
        return Context(connection, context.get("request_id"), context.get("function"), method)

    def _run_invoke(self, connection, params, call_id=None):
        if self._invoke is None:
            return Error("method not found: 'invoke' (this function has no invoke handler)",
                         METHOD_NOT_FOUND)
        context = params.get("context")
        if not isinstance(context, dict):
            context = {}
        ctx = Context(connection, context.get("request_id"), context.get("function"), "invoke",
                      call_id, params.get("http"), context.get("schedule"))
        with self._running_lock:
            self._running[call_id] = ctx
        try:
            outcome = self._guarded(connection, self._invoke, params.get("input"), ctx)
        finally:
            with self._running_lock:
                self._running.pop(call_id, None)
        if isinstance(outcome, Response):
            return outcome.to_dict()
        return outcome

    def _run_event(self, connection, params):
        event = params.get("event")
        if not isinstance(event, dict):
            return Error("invalid params: no event", INVALID_PARAMS)
        handler = self._events.get(event.get("type"), self._any_event)
        if handler is None:
            return Error("no handler for event type %r" % (event.get("type"),), METHOD_NOT_FOUND)
        ctx = self._context(connection, params, "event")
        return self._guarded(connection, handler, Event.from_dict(event), ctx)

    @staticmethod
    def _guarded(connection, handler, argument, ctx):
        """Runs a handler: its result, or the Error to answer with."""
        try:
            return handler(argument, ctx)
        except Error as exc:
            return exc
        except Exception as exc:  # the function's own failure: answer it, keep serving
            connection.log(traceback.format_exc().rstrip())
            return Error(str(exc) or type(exc).__name__, FUNCTION_ERROR,
                         {"exception": type(exc).__name__})

    @staticmethod
    def _answer(connection, request_id, outcome):
        if isinstance(outcome, Error):
            message = {"jsonrpc": "2.0", "id": request_id, "error": outcome.to_dict()}
        else:
            message = {"jsonrpc": "2.0", "id": request_id, "result": outcome}
        try:
            connection.send(message)
        except (TypeError, ValueError) as exc:  # the result (or data) is not JSON
            connection.log("shs_sdk: the answer is not JSON: %s" % exc)
            connection.send({"jsonrpc": "2.0", "id": request_id,
                             "error": {"code": FUNCTION_ERROR,
                                       "message": "the handler's result is not JSON: %s" % exc}})
        except OSError as exc:
            connection.log("shs_sdk: cannot write to stdout: %s" % exc)

    def _initialize(self, connection, request_id, params):
        ctx = Context(connection, None, params.get("function"), "initialize")
        try:
            for pattern in self._subscriptions:
                ctx.subscribe(pattern)
            if self._setup is not None:
                self._setup(ctx)
        except Exception as exc:  # start-up failed: say why, then exit
            if isinstance(exc, Error):
                reason = exc.message
            else:
                connection.log(traceback.format_exc().rstrip())
                reason = str(exc) or type(exc).__name__
            # No answer: a process that exits before it answers initialize is a failed
            # start, which the supervisor reports with the last lines of the log (this one).
            connection.log("shs_sdk: start-up failed: %s" % reason)
            return False
        # Declares what it handles at once: as many requests as it runs threads.
        answer = {"concurrency": self.concurrency}
        if self.raw_body:
            answer["raw_body"] = True
        self._answer(connection, request_id, answer)
        return True
