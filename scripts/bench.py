#!/usr/bin/env python3
"""The shs benchmark suite: run with scripts/bench (see --help).

Builds everything in release mode, starts the baselines (crates/bench) and shs on free ports
with temporary function folders, runs every load scenario with wrk several times, interleaved
(round 1: A B C ..., round 2: A B C ...), and writes BENCHMARKS.md and benchmarks.png at the
repository root. Every figure that is compared is a ratio of two scenarios measured in the same
round, because the machine is shared and noisy.

To add a scenario: add its functions in `write_functions`, a `Scenario` to `SCENARIOS`, and,
if it is compared with something, a `Ratio` to `RATIOS` (with its target, if it has one).
Scenarios that cannot run yet are listed in `PENDING`.

Not a wrk load: `nats-node-loss` (`node_loss`), once per round when `/usr/sbin/nats-server`
exists, measures how fast three supervisors on a private NATS server recover when the one
holding an ordered delivery is killed with SIGKILL (`--node-loss-only` runs just that).
"""

from __future__ import annotations

import argparse
import atexit
import datetime
import http.client
import json
import os
import platform
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RELEASE = ROOT / "target" / "release"
BUILD = ["cargo", "build", "--release", "--workspace", "--bins", "--examples"]

# The request body of the echo scenarios: 62 bytes of JSON, as in the issue's measurements.
BODY = '{"message":"hello, benchmark","n":12345,"items":[1,2,3,4,5,6]}'
assert len(BODY) == 62, len(BODY)


def event_body(event_type: str) -> str:
    return json.dumps({"type": event_type, "payload": json.loads(BODY)}, separators=(",", ":"))


# ---------------------------------------------------------------------------------------------
# What is measured


@dataclass
class Scenario:
    """One wrk load: a server, a path, a body, a number of connections."""

    key: str  # short id, used by ratios and in the plot
    title: str  # for the table
    server: str  # "echo", "spawn" or "shs"
    path: str
    body: str
    connections: int
    expect: str | None = None  # the body every answer must have (checked once before load)
    setup: str = ""  # the function settings, for the report
    prefer: str = ""  # a Prefer header (respond-async: asynchronous publishing)
    delivered_by: str = ""  # a function whose deliveries are counted after the load
    method: str = "POST"  # GET sends no body
    expect_text: bool = False  # `expect` is text, not JSON


@dataclass
class Ratio:
    """numerator / denominator of one metric, both measured in the same round."""

    key: str
    title: str
    numerator: str
    denominator: str
    metric: str  # "rps", "p50" or "p99"
    target: str = ""  # as written in the issue
    check: object = None  # function of the median ratio -> bool (None: no target)


# The settings of the shs functions (function.toml), reported in BENCHMARKS.md.
ECHO_RS_TOML = {"instances": 2, "concurrency": 16, "queue": 256}
ECHO_PY_TOML = {"instances": 2, "concurrency": 16, "queue": 256}
CAT_TOML = {"mode": "exec", "command": ["cat"], "instances": 64}
# The same with the program's full path (see "What limits it" in BENCHMARKS.md).
CAT_PATH_TOML = {"mode": "exec", "command": [shutil.which("cat") or "/bin/cat"], "instances": 64}
SUB_TOML = {"instances": 2, "concurrency": 16, "queue": 256}
# The HTTP functions: an http_response to a GET with a query, and streamed answers.
HTTP_RS_TOML = {"instances": 2, "concurrency": 16, "queue": 256}
STREAM_RS_TOML = {"instances": 2, "concurrency": 16, "queue": 256}
# GET /run/http-rs with this query is answered `query: ` and the query, as text/plain.
HTTP_QUERY = "name=Ada&n=3"
# The subscriber of asynchronous events: deliveries of one type may overlap (ordered = false).
ASYNC_SUB_TOML = {"instances": 2, "concurrency": 16, "queue": 256, "ordered": False}
PUBLISHER_TOML = {"instances": 8, "concurrency": 1, "queue": 256}
COLD_TOML = {"instances": 1, "min_instances": 0, "idle_timeout": 0.2}
# The idle functions: the Rust echo, scaled to zero (what is measured is the supervisor).
IDLE_TOML = {"min_instances": 0, "idle_timeout": 0.2}
IDLE_FUNCTIONS = 1000
# Steps 2 and 3 of the cold chain, and the Python cold start it is measured in.
CHAIN_COLD_TOML = {"min_instances": 0, "idle_timeout": 0.2}
CHAIN_STEPS = ["process-step1", "process-step2", "process-step3"]
# The functions with no function.toml, what a user gets first (see `write_functions`).
BARE = {
    "bare-rs": "`main`: a copy of `bench-echo-fn`, declaring nothing",
    "decl-rs": "`main`: `exec bench-echo-fn --concurrency 16` (declares `{\"concurrency\": 16}` "
               "in `initialize`)",
    "sdk-rs": "`main`: a copy of the Rust SDK's `examples/echo.rs`",
    "sdk-py": "`main.py`: the Python SDK echo (`SDK_PY_ECHO`) and `shs_sdk.py`",
}


def toml_text(settings: dict) -> str:
    lines = []
    for key, value in settings.items():
        lines.append(f"{key} = {json.dumps(value)}")
    return "\n".join(lines) + "\n"


def describe(settings: dict) -> str:
    # The command is shown unless it is one of the workspace's binaries or sys.executable.
    def shown(key, value):
        return key != "command" or not any(str(ROOT) in v or v == sys.executable for v in value)

    return ", ".join(f"`{k} = {json.dumps(v)}`" for k, v in settings.items() if shown(k, v))


SCENARIOS = [
    Scenario("echo-1", "raw actix echo (baseline), 1 conn", "echo", "/run/echo", BODY, 1, BODY),
    Scenario("rs-1", "shs warm invoke, Rust echo, 1 conn", "shs", "/run/echo-rs", BODY, 1, BODY,
             describe(ECHO_RS_TOML)),
    Scenario("echo-32", "raw actix echo (baseline), 32 conns", "echo", "/run/echo", BODY, 32, BODY),
    Scenario("rs-32", "shs warm invoke, Rust echo, 32 conns", "shs", "/run/echo-rs", BODY, 32,
             BODY, describe(ECHO_RS_TOML)),
    Scenario("py-32", "shs warm invoke, Python echo, 32 conns", "shs", "/run/echo-py", BODY, 32,
             BODY, describe(ECHO_PY_TOML)),
    Scenario("http-get-32", "shs GET with a query, answered with an `http_response` (Rust), "
             "32 conns", "shs", f"/run/http-rs/items?{HTTP_QUERY}", "", 32,
             f"query: {HTTP_QUERY}", describe(HTTP_RS_TOML), method="GET", expect_text=True),
    Scenario("bare-32", "shs warm invoke, Rust echo, no function.toml, 32 conns", "shs",
             "/run/bare-rs", BODY, 32, BODY, "none (" + BARE["bare-rs"] + ")"),
    Scenario("decl-32", "shs warm invoke, Rust echo declaring concurrency 16, no function.toml, "
             "32 conns", "shs", "/run/decl-rs", BODY, 32, BODY, "none (" + BARE["decl-rs"] + ")"),
    Scenario("sdk-rs-32", "shs warm invoke, Rust SDK echo, no function.toml, 32 conns", "shs",
             "/run/sdk-rs", BODY, 32, BODY, "none (" + BARE["sdk-rs"] + ")"),
    Scenario("sdk-py-32", "shs warm invoke, Python SDK echo, no function.toml, 32 conns", "shs",
             "/run/sdk-py", BODY, 32, BODY, "none (" + BARE["sdk-py"] + ")"),
    Scenario("spawn-32", "one-shot `cat` per request (baseline), 32 conns", "spawn", "/run/cat",
             BODY, 32, BODY),
    Scenario("exec-32", "shs mode exec `cat`, 32 conns", "shs", "/run/cat", BODY, 32, BODY,
             describe(CAT_TOML)),
    Scenario("exec-path-32", "shs mode exec `cat` by full path, 32 conns", "shs", "/run/cat-path",
             BODY, 32, BODY, describe(CAT_PATH_TOML)),
    Scenario("ev1-1", "shs POST /events, 1 subscriber, 1 conn", "shs", "/events",
             event_body("bench.one"), 1, None, describe(SUB_TOML)),
    Scenario("ev10-1", "shs POST /events, 10 subscribers, 1 conn", "shs", "/events",
             event_body("bench.ten"), 1, None, describe(SUB_TOML)),
    Scenario("ev1-32", "shs POST /events, 1 subscriber, 32 conns", "shs", "/events",
             event_body("bench.one"), 32, None, describe(SUB_TOML)),
    Scenario("ev10-32", "shs POST /events, 10 subscribers, 32 conns", "shs", "/events",
             event_body("bench.ten"), 32, None, describe(SUB_TOML)),
    Scenario("pub-32", "shs invoke that publishes (1 subscriber), 32 conns", "shs",
             "/run/publisher", BODY, 32, BODY, describe(PUBLISHER_TOML)),
    Scenario("async-32", "shs POST /events async (embedded store), 1 subscriber, 32 conns",
             "shs", "/events", event_body("bench.async"), 32, None,
             describe(ASYNC_SUB_TOML) + "; `Prefer: respond-async`", "respond-async", "async-sub"),
    Scenario("nats-async-32", "shs POST /events async (NATS JetStream), 1 subscriber, 32 conns",
             "shs-nats", "/events", event_body("bench.async"), 32, None,
             describe(ASYNC_SUB_TOML) + "; `Prefer: respond-async`; `--bus nats://`",
             "respond-async", "async-sub"),
]
SCENARIO = {s.key: s for s in SCENARIOS}
# What `--compare` runs unless `--only` says otherwise: the warm-invoke and event paths.
COMPARE_DEFAULT = ["rs-1", "rs-32", "bare-32", "decl-32", "py-32", "ev1-32", "pub-32"]

RATIOS = [
    Ratio("r-bare-32", "warm invoke Rust, no function.toml, no declaration / raw echo, 32 conns, "
          "req/s", "bare-32", "echo-32", "rps", ">= 0.45x (issue 14)", lambda r: r >= 0.45),
    Ratio("r-decl-32", "warm invoke Rust declaring concurrency 16 in `initialize`, no "
          "function.toml / raw echo, 32 conns, req/s", "decl-32", "echo-32", "rps",
          ">= 0.70x (issue 14)", lambda r: r >= 0.70),
    Ratio("r-rs-32", "warm invoke Rust, function.toml `instances = 2`, `concurrency = 16` / raw "
          "echo, 32 conns, req/s", "rs-32", "echo-32", "rps", ">= 0.80x (issue 14)",
          lambda r: r >= 0.80),
    Ratio("r-rs-1", "warm invoke Rust / raw echo, 1 conn, req/s", "rs-1", "echo-1", "rps",
          ">= 0.85x (issue 14)", lambda r: r >= 0.85),
    Ratio("r-sdk-rs-32", "warm invoke Rust SDK echo, no function.toml / raw echo, 32 conns, req/s",
          "sdk-rs-32", "echo-32", "rps", ">= 0.70x (issue 14)", lambda r: r >= 0.70),
    Ratio("r-sdk-py-32", "warm invoke Python SDK echo, no function.toml / raw echo, 32 conns, "
          "req/s", "sdk-py-32", "echo-32", "rps", ">= 0.45x (issue 14)", lambda r: r >= 0.45),
    Ratio("r-py-32", "warm invoke Python / raw echo, 32 conns, req/s", "py-32", "echo-32", "rps",
          ">= 0.35x (issue 6)", lambda r: r >= 0.35),
    Ratio("r-exec", "mode exec `cat` / one-shot spawn loop, 32 conns, req/s", "exec-32",
          "spawn-32", "rps", ">= 0.9x (issue 6)", lambda r: r >= 0.9),
    Ratio("r-exec-path", "mode exec `cat` by full path / one-shot spawn loop, 32 conns, req/s",
          "exec-path-32", "spawn-32", "rps"),
    Ratio("r-ev1-32", "events, 1 subscriber / warm invoke Rust, 32 conns, req/s", "ev1-32",
          "rs-32", "rps", ">= 0.85x (issue 14)", lambda r: r >= 0.85),
    Ratio("r-ev1-1", "events, 1 subscriber / warm invoke Rust, 1 conn, req/s", "ev1-1", "rs-1",
          "rps"),
    Ratio("r-ev10-p50", "events p50, 10 subscribers / 1 subscriber, 1 conn", "ev10-1", "ev1-1",
          "p50", "<= 3x (issue 6)", lambda r: r <= 3.0),
    Ratio("r-ev10-p50-32", "events p50, 10 subscribers / 1 subscriber, 32 conns", "ev10-32",
          "ev1-32", "p50"),
    Ratio("r-pub", "invoke that publishes synchronously to 1 subscriber / warm invoke Rust, "
          "32 conns, req/s", "pub-32", "rs-32", "rps", ">= 0.50x (issue 14)",
          lambda r: r >= 0.50),
    Ratio("r-http-get", "GET with a query answered with an `http_response` / warm invoke Rust "
          "(JSON), 32 conns, req/s", "http-get-32", "rs-32", "rps"),
]

# Streamed answers (`stream_round`, with curl): the function `stream-rs` streams N chunks of
# S bytes, M ms apart. Time to first byte: STREAM_TTFB (the answer takes about 90 ms in all),
# STREAM_TTFB_REPS times a round; throughput: one answer of STREAM_BULK a round.
STREAM_TTFB = {"chunks": 10, "size": 1024, "every_ms": 10}
STREAM_TTFB_REPS = 20
STREAM_BULK = {"chunks": 4096, "size": 65536}

# What follows this line in BENCHMARKS.md is written by hand, and kept when the script runs again.
NOTES_MARKER = "<!-- Written by hand below this line; scripts/bench keeps it when it runs again. -->"
DEFAULT_NOTES = "\n## What limits it\n\n(Observations and profiles go here.)\n"

# Scenarios of the issue that cannot be measured yet.
PENDING: list = []

# Absolute throughputs with a target (events/s; the issue gives these as rates, not ratios).
THROUGHPUTS = [
    ("async-32", "accepted", "asynchronous publishing, embedded store: events/s accepted durably, "
     "32 conns", ">= 20,000 events/s", lambda v: v >= 20_000),
    ("async-32", "delivered", "asynchronous publishing, embedded store: events/s delivered end to "
     "end, 1 subscriber", ">= 10,000 events/s", lambda v: v >= 10_000),
    ("nats-async-32", "accepted", "asynchronous publishing, NATS JetStream: events/s accepted "
     "durably, 32 conns", "", None),
    ("nats-async-32", "delivered", "asynchronous publishing, NATS JetStream: events/s delivered end "
     "to end, 1 subscriber", "", None),
]

# Node loss on NATS: the target of issue 11 (all events handled within 10 s of the kill).
NODE_LOSS_EVENTS = 1000
NODE_LOSS_TARGET = 10.0
NATS_SERVER = "/usr/sbin/nats-server"

# The function of the node-loss scenario: appends "id time" to $OUT for every event, after
# $DELAY seconds; while the file $HOLD exists it says so in $HOLD.holding and keeps the event
# (until its supervisor is gone).
LOSS_PY = r'''import json, os, sys, time
out, hold, delay = os.environ["OUT"], os.environ.get("HOLD", ""), float(os.environ["DELAY"])
parent = os.getppid()
for line in sys.stdin:
    msg = json.loads(line)
    if "id" not in msg or "method" not in msg:
        continue
    result = {}
    if msg["method"] == "initialize":
        result = {"subscribe": ["loss.job"]}
    elif msg["method"] == "event":
        if hold and os.path.exists(hold):
            open(hold + ".holding", "w").close()
            while os.getppid() == parent:
                time.sleep(0.01)
            sys.exit(0)
        time.sleep(delay)
        with open(out, "a") as f:
            f.write(msg["params"]["event"]["id"] + " " + repr(time.time()) + "\n")
    sys.stdout.write(json.dumps({"jsonrpc": "2.0", "id": msg["id"], "result": result}) + "\n")
    sys.stdout.flush()
'''

# ---------------------------------------------------------------------------------------------
# Processes: everything started is stopped at exit, whatever happens.

STARTED: list[subprocess.Popen] = []


def log(message: str) -> None:
    print(f"[bench] {message}", flush=True)


def stop_all() -> None:
    for proc in reversed(STARTED):
        if proc.poll() is None:
            try:
                proc.send_signal(signal.SIGTERM)
            except ProcessLookupError:
                pass
    deadline = time.monotonic() + 15
    for proc in reversed(STARTED):
        try:
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            log(f"pid {proc.pid} did not stop on SIGTERM: SIGKILL")
            proc.kill()
            proc.wait()
    STARTED.clear()


def on_signal(signum, _frame):
    log(f"signal {signum}: stopping the servers")
    sys.exit(128 + signum)


def run(cmd: list[str], **kwargs) -> subprocess.CompletedProcess:
    log("$ " + shlex.join(cmd))
    return subprocess.run(cmd, check=True, **kwargs)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def request(method: str, url: str, body: str | None = None, timeout: float = 10,
            headers: dict | None = None):
    """(status, body) of one request; never raises on an HTTP error status."""
    data = body.encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method,
                                 headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def wait_until(what: str, check, timeout: float = 60, every: float = 0.05):
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = check()
            if value:
                return value
        except (OSError, http.client.HTTPException, ValueError):
            pass
        if time.monotonic() > deadline:
            raise SystemExit(f"[bench] timed out waiting for {what}")
        time.sleep(every)


@dataclass
class Server:
    name: str
    url: str
    proc: subprocess.Popen
    log_path: Path


def start(name: str, cmd: list[str], log_dir: Path, env: dict | None = None) -> Server:
    port = free_port()
    cmd = [c.replace("{port}", str(port)) for c in cmd]
    log_path = log_dir / f"{name}.log"
    log(f"starting {name}: {shlex.join(cmd)}")
    with open(log_path, "wb") as out:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                                env={**os.environ, **(env or {})})
    STARTED.append(proc)
    return Server(name, f"http://127.0.0.1:{port}", proc, log_path)


def check_alive(server: Server) -> None:
    if server.proc.poll() is not None:
        tail = server.log_path.read_text(errors="replace")[-3000:]
        raise SystemExit(f"[bench] {server.name} exited ({server.proc.returncode}):\n{tail}")


def rss_kib(pid: int, key: str = "VmRSS") -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise ValueError(f"no {key} for pid {pid}")


def functions(server: Server) -> dict:
    status, body = request("GET", server.url + "/functions")
    if status != 200:
        raise ValueError(f"GET /functions: {status}")
    return {f["name"]: f for f in json.loads(body)["functions"]}


# ---------------------------------------------------------------------------------------------
# Set-up


def ensure_wrk() -> str:
    wrk = shutil.which("wrk")
    if wrk:
        return wrk
    log("wrk is missing: installing it from Debian (apt-get install -y wrk)")
    apt = ["apt-get", "install", "-y", "wrk"]
    if os.geteuid() != 0:
        apt = ["sudo"] + apt
    try:
        run(apt)
    except subprocess.CalledProcessError:
        run((["sudo"] if os.geteuid() != 0 else []) + ["apt-get", "update"])
        run(apt)
    wrk = shutil.which("wrk")
    if not wrk:
        raise SystemExit("[bench] wrk is still missing after apt-get install")
    return wrk


def plotter() -> str | None:
    """'matplotlib', 'gnuplot', or None; installs matplotlib with pip when missing."""
    probe = [sys.executable, "-c", "import matplotlib"]
    if subprocess.run(probe, capture_output=True).returncode == 0:
        return "matplotlib"
    log("matplotlib is missing: installing it with pip")
    try:
        run([sys.executable, "-m", "pip", "install", "--quiet", "matplotlib"])
        if subprocess.run(probe, capture_output=True).returncode == 0:
            return "matplotlib"
    except subprocess.CalledProcessError:
        log("pip install matplotlib failed; trying gnuplot")
    if not shutil.which("gnuplot"):
        try:
            run(["apt-get", "install", "-y", "gnuplot-nox"])
        except (subprocess.CalledProcessError, FileNotFoundError):
            pass
    if shutil.which("gnuplot"):
        return "gnuplot"
    log("no plotting tool: benchmarks.png is not made")
    return None


PY_ECHO = '''\
# A minimal hand-written shs echo function: answers invoke with its input, anything else {}.
import json
import sys

for line in sys.stdin:
    msg = json.loads(line)
    if "id" not in msg or "method" not in msg:
        continue
    result = msg["params"]["input"] if msg["method"] == "invoke" else {}
    sys.stdout.write(json.dumps({"jsonrpc": "2.0", "id": msg["id"], "result": result}) + "\\n")
    sys.stdout.flush()
'''


# The Python SDK echo: what a user writes first (no function.toml; the SDK declares what it
# handles).
SDK_PY_ECHO = '''\
import shs_sdk

app = shs_sdk.Function()


@app.invoke
def echo(input, ctx):
    return input


app.run()
'''

SDK_PY = ROOT / "sdk" / "python" / "shs_sdk.py"
EVENT_EXAMPLES = ROOT / "examples" / "events" / "python"


def write_bare(folder: Path, main: Path | None = None, script: str | None = None,
               files: dict | None = None) -> None:
    """A function folder with no function.toml: an executable `main` (a copy of `main`, or a
    shell script) or the given files."""
    folder.mkdir(parents=True)
    if main is not None:
        shutil.copy(main, folder / "main")
    if script is not None:
        (folder / "main").write_text(script)
        (folder / "main").chmod(0o755)
    for name, text in (files or {}).items():
        (folder / name).write_text(text)


def write_chain(root: Path) -> None:
    """The seed's three-step chain (Python SDK): steps 2 and 3 scale to zero."""
    sdk = SDK_PY.read_text()
    for step in CHAIN_STEPS:
        files = {"main.py": (EVENT_EXAMPLES / step / "main.py").read_text(), "shs_sdk.py": sdk}
        if step != CHAIN_STEPS[0]:
            files["function.toml"] = toml_text(CHAIN_COLD_TOML)
        write_bare(root / step, files=files)
    # The unit the chain is measured in: the cold start of a Python SDK function.
    write_bare(root / "cold-py", files={"main.py": SDK_PY_ECHO, "shs_sdk.py": sdk,
                                        "function.toml": toml_text(CHAIN_COLD_TOML)})


def write_function(folder: Path, settings: dict, main_py: str | None = None) -> None:
    folder.mkdir(parents=True)
    (folder / "function.toml").write_text(toml_text(settings))
    if main_py is not None:
        (folder / "main.py").write_text(main_py)


def write_functions(root: Path) -> None:
    """The functions of the main shs server."""
    echo_fn = str(RELEASE / "bench-echo-fn")
    python = sys.executable
    write_function(root / "echo-rs", {"command": [echo_fn], **ECHO_RS_TOML})
    write_function(root / "echo-py", {"command": [python, "main.py"], **ECHO_PY_TOML}, PY_ECHO)
    write_function(root / "cat", CAT_TOML)
    write_function(root / "cat-path", CAT_PATH_TOML)
    for i in range(10):
        subscribe = ["bench.ten"] + (["bench.one", "bench.pub"] if i == 0 else [])
        write_function(root / f"sub-{i}", {"command": [echo_fn], "subscribe": subscribe,
                                           **SUB_TOML})
    write_function(root / "publisher", {"command": [echo_fn, "--publish", "bench.pub"],
                                        **PUBLISHER_TOML})
    write_function(root / "cold", {"command": [echo_fn], **COLD_TOML})
    write_function(root / "async-sub", {"command": [echo_fn], "subscribe": ["bench.async"],
                                        **ASYNC_SUB_TOML})
    write_function(root / "http-rs", {"command": [echo_fn, "--http-response"], **HTTP_RS_TOML})
    write_function(root / "stream-rs", {"command": [echo_fn, "--stream"], **STREAM_RS_TOML})
    write_bare(root / "bare-rs", main=Path(echo_fn))
    write_bare(root / "decl-rs", script=f"#!/bin/sh\nexec {shlex.quote(echo_fn)} --concurrency 16\n")
    write_bare(root / "sdk-rs", main=RELEASE / "examples" / "echo")
    write_bare(root / "sdk-py", files={"main.py": SDK_PY_ECHO, "shs_sdk.py": SDK_PY.read_text()})
    write_chain(root)


def write_idle_functions(root: Path) -> None:
    echo_fn = str(RELEASE / "bench-echo-fn")
    for i in range(IDLE_FUNCTIONS):
        write_function(root / f"echo-{i:04}", {"command": [echo_fn], **IDLE_TOML})


def describe_machine() -> dict:
    model = "unknown"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    rustc = subprocess.run(["rustc", "--version"], capture_output=True, text=True).stdout.strip()
    wrk = subprocess.run(["wrk", "--version"], capture_output=True, text=True)
    return {
        "nproc": os.cpu_count(),
        "cpu": model,
        "kernel": f"{platform.system()} {platform.release()}",
        "rustc": rustc,
        "wrk": (wrk.stdout or wrk.stderr).splitlines()[0].strip(),
        "python": platform.python_version(),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "load": " ".join(Path("/proc/loadavg").read_text().split()[:3]),
    }


# ---------------------------------------------------------------------------------------------
# Measuring

WRK_LUA = '''\
-- POSTs BENCH_BODY as JSON (or sends BENCH_METHOD, e.g. GET, with no body); counts answers
-- whose status is not 2xx; prints a JSON summary.
wrk.method = os.getenv("BENCH_METHOD") or "POST"
if wrk.method == "POST" then
  wrk.body = os.getenv("BENCH_BODY") or "{}"
  wrk.headers["Content-Type"] = "application/json"
end
local prefer = os.getenv("BENCH_PREFER")
if prefer and prefer ~= "" then wrk.headers["Prefer"] = prefer end

local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args) non2xx = 0 end
function response(status, headers, body)
  if status < 200 or status > 299 then non2xx = non2xx + 1 end
end
function done(summary, latency, requests)
  local bad = 0
  for _, t in ipairs(threads) do bad = bad + t:get("non2xx") end
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests":%d,"duration_us":%d,"non2xx":%d,"connect":%d,"read":%d,' ..
    '"write":%d,"timeout":%d,"p50":%d,"p75":%d,"p90":%d,"p99":%d,"mean":%.1f,"max":%d}\\n',
    summary.requests, summary.duration, bad, e.connect, e.read, e.write, e.timeout,
    latency:percentile(50), latency:percentile(75), latency:percentile(90),
    latency:percentile(99), latency.mean, latency.max))
end
'''


@dataclass
class Sample:
    rps: float
    p50: float  # ms
    p75: float
    p90: float
    p99: float
    errors: int  # non-2xx answers + socket errors
    requests: int


@dataclass
class Results:
    samples: dict = field(default_factory=dict)  # scenario key -> [Sample per round]
    cold: list = field(default_factory=list)  # per round: (median cold ms, median warm ms)
    cold_all: list = field(default_factory=list)  # every cold latency, ms
    warm_all: list = field(default_factory=list)
    cold_internal: list = field(default_factory=list)  # shs's own last_cold_start_ms
    rss_load: list = field(default_factory=list)  # peak VmRSS KiB per round, during rs-32
    rss_idle: list = field(default_factory=list)  # VmRSS KiB samples, IDLE_FUNCTIONS at zero
    ready_idle: list = field(default_factory=list)  # s from start to /ready, IDLE_FUNCTIONS
    # per round: (median cold chain ms, median warm chain ms, median cold Python SDK request ms,
    # median warm one)
    chain: list = field(default_factory=list)
    commands: list = field(default_factory=list)  # (kind: "server" or "load", name, command)
    # scenario key -> {"accepted": [events/s per round], "delivered": [events/s per round]}
    throughput: dict = field(default_factory=dict)
    # nats-node-loss, per round: (s from the kill to the first event handled after it,
    # s from the kill until every event was handled, duplicates)
    node_loss: list = field(default_factory=list)
    # streamed answers, per round: median time to first byte and to the end (ms) of
    # STREAM_TTFB, and the throughput of STREAM_BULK (MiB/s)
    stream_ttfb: list = field(default_factory=list)
    stream_total: list = field(default_factory=list)
    stream_mibps: list = field(default_factory=list)


def wrk_cmd(wrk: str, lua: Path, scenario: Scenario, url: str, seconds: float) -> list[str]:
    threads = 1 if scenario.connections == 1 else 2
    return [wrk, f"-t{threads}", f"-c{scenario.connections}", f"-d{seconds:g}s", "--latency",
            "-s", str(lua), url + scenario.path]


def run_wrk(cmd: list[str], body: str, log_file, prefer: str = "", method: str = "POST") -> Sample:
    proc = subprocess.run(cmd, capture_output=True, text=True,
                          env={**os.environ, "BENCH_BODY": body, "BENCH_PREFER": prefer,
                               "BENCH_METHOD": method})
    log_file.write("$ " + shlex.join(cmd) + "\n" + proc.stdout + proc.stderr + "\n")
    log_file.flush()
    if proc.returncode != 0:
        raise SystemExit(f"[bench] wrk failed: {proc.stderr}")
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("BENCH_JSON ")), None)
    if line is None:
        raise SystemExit(f"[bench] wrk printed no summary:\n{proc.stdout}")
    d = json.loads(line.split(" ", 1)[1])
    errors = d["non2xx"] + d["connect"] + d["read"] + d["write"] + d["timeout"]
    return Sample(rps=d["requests"] / (d["duration_us"] / 1e6), p50=d["p50"] / 1e3,
                  p75=d["p75"] / 1e3, p90=d["p90"] / 1e3, p99=d["p99"] / 1e3, errors=errors,
                  requests=d["requests"])


class RssSampler:
    """Peak VmRSS of a process, sampled every 50 ms while running."""

    def __init__(self, pid: int):
        self.pid = pid
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            try:
                self.peak = max(self.peak, rss_kib(self.pid))
            except (OSError, ValueError):
                return
            self._stop.wait(0.05)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def verify(servers: dict, scenario: Scenario) -> None:
    """One request before the load: the status and the answer must be right."""
    headers = {"Prefer": scenario.prefer} if scenario.prefer else None
    status, body = request(scenario.method, servers[scenario.server].url + scenario.path,
                           scenario.body if scenario.method == "POST" else None, headers=headers)
    if scenario.prefer:
        if status != 202:
            raise SystemExit(f"[bench] {scenario.key}: unexpected answer {status} {body[:500]}")
        return
    ok = status == 200
    if ok and scenario.expect is not None and scenario.expect_text:
        ok = body == scenario.expect
    elif ok and scenario.expect is not None:
        ok = json.loads(body) == json.loads(scenario.expect)
    if ok and scenario.path == "/events":
        answer = json.loads(body)
        want = 10 if "bench.ten" in scenario.body else 1
        ok = answer.get("delivered") == want and not answer.get("errors")
    if not ok:
        raise SystemExit(f"[bench] {scenario.key}: unexpected answer {status} {body[:500]}")


class TimedClient:
    """Times single requests on one keep-alive connection."""

    def __init__(self, url: str):
        host, port = url.removeprefix("http://").split(":")
        self.conn = http.client.HTTPConnection(host, int(port), timeout=30)

    def post(self, path: str, body: str, check=None) -> float:
        """Times one POST; the answer must be 200 and, unless `check` (a function of the
        decoded answer) says otherwise, the body itself."""
        start = time.perf_counter()
        self.conn.request("POST", path, body, {"Content-Type": "application/json"})
        resp = self.conn.getresponse()
        data = resp.read()
        elapsed = (time.perf_counter() - start) * 1e3
        ok = resp.status == 200
        if ok:
            answer = json.loads(data)
            ok = check(answer) if check else answer == json.loads(body)
        if not ok:
            raise SystemExit(f"[bench] POST {path}: {resp.status} {data[:300]!r}")
        return elapsed


def cold_round(shs: Server, reps: int, results: Results) -> None:
    client = TimedClient(shs.url)
    cold, warm = [], []
    for _ in range(reps):
        wait_until("cold to scale to zero",
                   lambda: functions(shs)["cold"]["processes"] == 0, timeout=30, every=0.02)
        time.sleep(0.05)
        cold.append(client.post("/run/cold", BODY))
        internal = functions(shs)["cold"].get("last_cold_start_ms")
        if internal is not None:
            results.cold_internal.append(internal)
        for _ in range(3):
            warm.append(client.post("/run/echo-rs", BODY))
    results.cold.append((statistics.median(cold), statistics.median(warm)))
    results.cold_all += cold
    results.warm_all += warm


def curl_stream(url: str, ask: dict) -> tuple[float, float, int]:
    """POSTs `ask` to a streaming function with curl: (s to the first byte, s in all, bytes)."""
    proc = subprocess.run(
        ["curl", "-sS", "-o", "/dev/null", "-H", "Content-Type: application/json",
         "--data-binary", json.dumps(ask), "-w", "%{http_code} %{time_starttransfer} "
         "%{time_total} %{size_download}", url], capture_output=True, text=True, timeout=300)
    code, first, total, size = proc.stdout.split()
    if proc.returncode != 0 or code != "200":
        raise SystemExit(f"[bench] streaming {url}: {proc.returncode} {proc.stdout} "
                         f"{proc.stderr}")
    return float(first), float(total), int(size)


def stream_round(shs: Server, results: Results) -> None:
    """Streamed answers: time to first byte (and to the end) of a slow stream, and the
    throughput of a large one."""
    url = shs.url + "/run/stream-rs"
    want = STREAM_TTFB["chunks"] * STREAM_TTFB["size"]
    firsts, totals = [], []
    for _ in range(STREAM_TTFB_REPS):
        first, total, size = curl_stream(url, STREAM_TTFB)
        if size != want:
            raise SystemExit(f"[bench] stream-rs sent {size} bytes, not {want}")
        firsts.append(first * 1e3)
        totals.append(total * 1e3)
    results.stream_ttfb.append(statistics.median(firsts))
    results.stream_total.append(statistics.median(totals))
    first, total, size = curl_stream(url, STREAM_BULK)
    if size != STREAM_BULK["chunks"] * STREAM_BULK["size"]:
        raise SystemExit(f"[bench] stream-rs sent {size} bytes")
    results.stream_mibps.append(size / (1 << 20) / total)
    log(f"  streamed: first byte {results.stream_ttfb[-1]:.2f} ms (end "
        f"{results.stream_total[-1]:.1f} ms); {results.stream_mibps[-1]:.0f} MiB/s")
def chain_done(answer) -> bool:
    """process-step1's answer once the whole chain ran: its publish reached step 2."""
    publish = answer.get("publish") if isinstance(answer, dict) else None
    return answer.get("step") == 1 and isinstance(publish, dict) and publish.get("delivered") == 1


def chain_round(shs: Server, reps: int, results: Results) -> None:
    """The seed's chain with steps 2 and 3 at zero processes, then warm; and the cold start
    of a Python SDK function, the unit the chain's extra latency is given in."""
    client = TimedClient(shs.url)
    order = json.dumps({"order": {"id": 42}})
    cold, warm, py_cold, py_warm = [], [], [], []

    def at_zero(*names):
        rows = functions(shs)
        return all(rows[n]["processes"] == 0 and rows[n]["starting"] == 0 for n in names)

    try:
        for _ in range(reps):
            wait_until("the chain's steps 2 and 3 to scale to zero",
                       lambda: at_zero(*CHAIN_STEPS[1:]), timeout=30, every=0.02)
            time.sleep(0.05)
            cold.append(client.post("/run/process-step1", order, chain_done))
            for _ in range(3):
                warm.append(client.post("/run/process-step1", order, chain_done))
            wait_until("cold-py to scale to zero", lambda: at_zero("cold-py"), timeout=30,
                       every=0.02)
            time.sleep(0.05)
            py_cold.append(client.post("/run/cold-py", BODY))
            for _ in range(3):
                py_warm.append(client.post("/run/cold-py", BODY))
    except SystemExit as e:
        # The rest of the run is worth keeping: the chain is reported as not measured.
        log(f"  cold chain not measured: {e}")
        return
    results.chain.append((statistics.median(cold), statistics.median(warm),
                          statistics.median(py_cold), statistics.median(py_warm)))


def chain_units(row) -> float:
    """The cold chain's extra latency over the warm chain, in Python SDK cold starts."""
    cold, warm, py_cold, py_warm = row
    return (cold - warm) / (py_cold - py_warm) if py_cold > py_warm else float("nan")


def idle_rss(args, work: Path, results: Results) -> None:
    folder = work / "idle-functions"
    write_idle_functions(folder)
    cmd = [str(RELEASE / "shs"), "serve", "--functions-dir", str(folder),
           "--listen", "127.0.0.1:{port}", "--workers", str(args.workers), "--no-watch"]
    results.commands.append(("server", f"shs with {IDLE_FUNCTIONS} idle functions",
                             shlex.join(cmd).replace(str(work), "$WORK")))
    started = time.perf_counter()
    shs = start(f"shs-idle{IDLE_FUNCTIONS}", cmd, work)
    wait_until(f"shs ({IDLE_FUNCTIONS} functions) to be ready",
               lambda: request("GET", shs.url + "/ready")[0] == 200, timeout=300, every=0.02)
    results.ready_idle.append(time.perf_counter() - started)
    check_alive(shs)

    def all_idle():
        rows = functions(shs)
        return len(rows) == IDLE_FUNCTIONS and all(r["processes"] == 0 for r in rows.values())

    wait_until(f"{IDLE_FUNCTIONS} functions to scale to zero", all_idle, timeout=300, every=0.2)
    time.sleep(1.0)
    for _ in range(3):
        results.rss_idle.append(rss_kib(shs.proc.pid))
        time.sleep(0.3)
    failed = [n for n, r in functions(shs).items() if r["state"] == "failed"]
    if failed:
        raise SystemExit(f"[bench] idle functions failed: {failed}")
    shs.proc.send_signal(signal.SIGTERM)
    shs.proc.wait(timeout=30)


def deliveries(server: Server, function: str) -> int:
    status, body = request("GET", f"{server.url}/metrics/{function}")
    if status != 200:
        raise SystemExit(f"[bench] GET /metrics/{function}: {status} {body[:300]}")
    return json.loads(body)["metrics"]["deliveries"]


def nats_available() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 4222), timeout=1):
            return True
    except OSError:
        return False


def delete_nats_streams(namespace: str) -> None:
    """Deletes the streams the NATS scenario made (speaking the NATS protocol directly)."""
    upper = namespace.upper()
    try:
        with socket.create_connection(("127.0.0.1", 4222), timeout=5) as sock:
            f = sock.makefile("rwb")
            f.readline()
            f.write(b'CONNECT {"verbose":false}\r\n')
            for suffix in ("EVENTS", "DEAD", "SUBSCRIPTIONS", "ATTEMPTS"):
                f.write(f"PUB $JS.API.STREAM.DELETE.{upper}_{suffix} 0\r\n\r\n".encode())
            f.write(b"PING\r\n")
            f.flush()
            f.readline()
    except OSError as e:
        log(f"could not delete the NATS streams of {namespace}: {e}")


def node_loss(args, work: Path, results: Results, round_no: int) -> None:
    """Three supervisors on a private NATS server run one ordered function; with
    NODE_LOSS_EVENTS events accepted, the supervisor holding the delivery in flight is killed
    with SIGKILL. Recovery: from the kill to the first event handled after it (the type stalls
    meanwhile); also the time until every event is handled, and the duplicates."""
    base = work / f"node-loss-{round_no}"
    base.mkdir()
    port = free_port()
    nats = subprocess.Popen([NATS_SERVER, "-js", "-a", "127.0.0.1", "-p", str(port), "-sd",
                             str(base / "nats")], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    STARTED.append(nats)
    wait_until("nats-server", lambda: socket.create_connection(("127.0.0.1", port), 1).close()
               or True, timeout=20)
    out = base / "handled.log"
    hold = base / "hold"
    nodes = []
    for name in ("a", "b", "c"):
        fns = base / name
        env = {"OUT": str(out), "DELAY": "0.002", "HOLD": str(hold) if name == "c" else ""}
        write_function(fns / "loss", {"command": [sys.executable, "main.py"]}, LOSS_PY)
        with open(fns / "loss" / "function.toml", "a") as toml:
            toml.write("[env]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in env.items()))
        cmd = [str(RELEASE / "shs"), "serve", "--functions-dir", str(fns), "--listen",
               "127.0.0.1:{port}", "--workers", "1", "--no-watch", "--bus",
               f"nats://127.0.0.1:{port}", "--bus-namespace", "loss"]
        if round_no == 0 and name == "a":
            results.commands.append(("server", "shs-nats-loss (three of them, one NATS server "
                                     "of their own)", shlex.join(cmd).replace(str(work), "$WORK")))
        nodes.append(start(f"shs-loss-{round_no}-{name}", cmd, base))
    for node in nodes:
        wait_until(f"{node.name} to be ready",
                   lambda n=node: request("GET", n.url + "/ready")[0] == 200, timeout=60)
        wait_until(f"{node.name} to see the subscription",
                   lambda n=node: "loss.job" in request("GET", n.url + "/subscriptions")[1],
                   timeout=30)

    def handled() -> list[tuple[str, float]]:
        if not out.exists():
            return []
        rows = []
        for line in out.read_text().splitlines():
            parts = line.split()
            if len(parts) == 2:
                rows.append((parts[0], float(parts[1])))
        return rows

    body = event_body("loss.job")
    for n in range(NODE_LOSS_EVENTS):
        status, text = request("POST", nodes[n % 2].url + "/events", body,
                               headers={"Prefer": "respond-async"})
        if status != 202:
            raise SystemExit(f"[bench] node loss: publish answered {status} {text[:300]}")
    wait_until("100 events handled", lambda: len(handled()) >= 100, timeout=120)
    hold.write_text("")
    wait_until("c to hold a delivery", lambda: Path(str(hold) + ".holding").exists(),
               timeout=120, every=0.005)
    victim = nodes[2]
    victim.proc.kill()
    killed = time.time()
    victim.proc.wait()
    wait_until("every event handled",
               lambda: len({i for i, _ in handled()}) >= NODE_LOSS_EVENTS, timeout=300)
    rows = handled()
    after = [t for _, t in rows if t > killed]
    first = min(after) - killed if after else float("nan")
    last = max(t for _, t in rows) - killed
    duplicates = len(rows) - len({i for i, _ in rows})
    results.node_loss.append((first, last, duplicates))
    log(f"  nats-node-loss: first event {first:.2f} s after the kill, all {NODE_LOSS_EVENTS} "
        f"handled {last:.2f} s after it, {duplicates} duplicates")
    for node in nodes[:2]:
        node.proc.send_signal(signal.SIGTERM)
        node.proc.wait(timeout=30)
    nats.send_signal(signal.SIGTERM)
    nats.wait(timeout=30)


def measure(args, wrk: str) -> tuple[Results, dict]:
    work = Path(tempfile.mkdtemp(prefix="shs-bench-"))
    atexit.register(shutil.rmtree, work, True)
    log(f"work folder: {work}")
    lua = work / "bench.lua"
    lua.write_text(WRK_LUA)
    fns = work / "functions"
    write_functions(fns)
    results = Results()
    workers = str(args.workers)

    commands = {
        "echo": [str(RELEASE / "bench-echo"), "--listen", "127.0.0.1:{port}",
                 "--workers", workers],
        "spawn": [str(RELEASE / "bench-spawn"), "--listen", "127.0.0.1:{port}",
                  "--workers", workers],
        "shs": [str(RELEASE / "shs"), "serve", "--functions-dir", str(fns),
                "--listen", "127.0.0.1:{port}", "--workers", workers, "--no-watch",
                "--data-dir", str(work / "data")],
    }
    if nats_available():
        namespace = f"bench{os.getpid()}"
        nats_fns = work / "nats-functions"
        write_function(nats_fns / "async-sub", {"command": [str(RELEASE / "bench-echo-fn")],
                                                "subscribe": ["bench.async"], **ASYNC_SUB_TOML})
        commands["shs-nats"] = [str(RELEASE / "shs"), "serve", "--functions-dir", str(nats_fns),
                                "--listen", "127.0.0.1:{port}", "--workers", workers,
                                "--no-watch", "--data-dir", str(work / "nats-data"),
                                "--bus", "nats://127.0.0.1:4222", "--bus-namespace", namespace]
        atexit.register(delete_nats_streams, namespace)
    else:
        log("no NATS server on 127.0.0.1:4222: the JetStream scenario is skipped")
    servers = {name: start(name, cmd, work) for name, cmd in commands.items()}
    for name, cmd in commands.items():
        results.commands.append(("server", name, shlex.join(cmd).replace(str(work), "$WORK")))
    shs = servers["shs"]
    wait_until("shs to be ready", lambda: request("GET", shs.url + "/ready")[0] == 200)
    for server in servers.values():
        check_alive(server)
    broken = {n: r for n, r in functions(shs).items() if r["state"] == "failed"}
    if broken:
        raise SystemExit(f"[bench] functions failed to start: {json.dumps(broken)[:2000]}")
    scenarios = [s for s in SCENARIOS if s.server in servers]
    for scenario in scenarios:
        if scenario.server == "shs-nats":
            wait_until("shs on NATS to be ready",
                       lambda: request("GET", servers["shs-nats"].url + "/ready")[0] == 200)
        wait_until(f"{scenario.server} to answer",
                   lambda s=scenario: verify(servers, s) is None, timeout=20)
    log("every scenario answers correctly; measuring")

    wrk_log = open(work / "wrk.log", "w")
    for key in SCENARIO:
        results.samples[key] = []
    for r in range(args.rounds):
        log(f"round {r + 1} of {args.rounds}")
        for scenario in scenarios:
            server = servers[scenario.server]
            check_alive(server)
            if args.warmup > 0:
                run_wrk(wrk_cmd(wrk, lua, scenario, server.url, args.warmup), scenario.body,
                        wrk_log, scenario.prefer, scenario.method)
            cmd = wrk_cmd(wrk, lua, scenario, server.url, args.duration)
            if r == 0:
                env = (f"BENCH_BODY='{scenario.body}' " if scenario.method == "POST"
                       else f"BENCH_METHOD={scenario.method} ")
                results.commands.append(("load", scenario.key, env
                                         + shlex.join(cmd).replace(str(work), "$WORK")))
            if scenario.key == "rs-32":
                with RssSampler(shs.proc.pid) as sampler:
                    sample = run_wrk(cmd, scenario.body, wrk_log)
                results.rss_load.append(sampler.peak)
            elif scenario.delivered_by:
                # Asynchronous: events accepted during the load, then delivered end to end
                # (from the start of the load to the last delivery).
                fn = scenario.delivered_by
                before = deliveries(server, fn)
                started = time.perf_counter()
                sample = run_wrk(cmd, scenario.body, wrk_log, scenario.prefer)
                wait_until(f"{fn} to take every accepted event",
                           lambda: deliveries(server, fn) >= before + sample.requests,
                           timeout=300, every=0.05)
                took = time.perf_counter() - started
                rates = results.throughput.setdefault(scenario.key, {"accepted": [],
                                                                     "delivered": []})
                rates["accepted"].append(sample.rps)
                rates["delivered"].append(sample.requests / took)
                log(f"  {scenario.key:9} delivered end to end: {sample.requests / took:10.0f} "
                    "events/s")
            else:
                sample = run_wrk(cmd, scenario.body, wrk_log, scenario.prefer, scenario.method)
            results.samples[scenario.key].append(sample)
            flag = f"  ERRORS: {sample.errors}" if sample.errors else ""
            log(f"  {scenario.key:9} {sample.rps:10.0f} req/s  p50 {sample.p50:7.3f} ms  "
                f"p99 {sample.p99:7.3f} ms{flag}")
        if Path(NATS_SERVER).exists():
            node_loss(args, work, results, r)
        stream_round(shs, results)
        cold_round(shs, args.cold_reps, results)
        cold, warm = results.cold[-1]
        log(f"  cold start: {cold:.2f} ms, warm {warm:.2f} ms: extra {cold - warm:.2f} ms")
        chain_round(shs, args.chain_reps, results)
        if results.chain:
            cold, warm, py_cold, py_warm = results.chain[-1]
            log(f"  cold chain: {cold:.1f} ms, warm {warm:.1f} ms; Python cold start "
                f"{py_cold:.1f} ms, warm {py_warm:.1f} ms: "
                f"{chain_units(results.chain[-1]):.2f} cold starts")
    wrk_log.close()
    shutil.copy(work / "wrk.log", ROOT / "target" / "bench-wrk.log")
    for server in servers.values():
        check_alive(server)
    log(f"supervisor RSS with {IDLE_FUNCTIONS} idle functions")
    idle_rss(args, work, results)
    stop_all()
    for server in servers.values():
        shutil.copy(server.log_path, ROOT / "target" / f"bench-{server.name}.log")
    return results, servers


def measure_compare(args, wrk: str) -> str:
    """`--compare BASE`: this build's shs against another shs binary, side by side.

    Both servers serve the same function folder; every selected scenario runs on one and then
    the other, in an order that alternates each round, and each row is the ratio of the two
    figures of the same round. Returns the report (Markdown).
    """
    base = Path(args.compare).resolve()
    if not os.access(base, os.X_OK):
        raise SystemExit(f"[bench] --compare: {base} is not an executable")
    work = Path(tempfile.mkdtemp(prefix="shs-bench-compare-"))
    atexit.register(shutil.rmtree, work, True)
    lua = work / "bench.lua"
    lua.write_text(WRK_LUA)
    fns = work / "functions"
    write_functions(fns)
    workers = str(args.workers)

    def serve(binary: Path, data: str) -> list[str]:
        return [str(binary), "serve", "--functions-dir", str(fns), "--listen",
                "127.0.0.1:{port}", "--workers", workers, "--no-watch", "--data-dir",
                str(work / data)]

    servers = {"shs": start("shs", serve(RELEASE / "shs", "data"), work),
               "base": start("base", serve(base, "base-data"), work)}
    for server in servers.values():
        wait_until(f"{server.name} to be ready",
                   lambda s=server: request("GET", s.url + "/ready")[0] == 200)
    keys = args.only.split(",") if args.only else COMPARE_DEFAULT
    unknown = [k for k in keys if k not in SCENARIO]
    if unknown:
        raise SystemExit(f"[bench] unknown scenarios {unknown}; known: {', '.join(SCENARIO)}")
    scenarios = [SCENARIO[k] for k in keys]
    unfit = [s.key for s in scenarios if s.server != "shs" or s.delivered_by]
    if unfit:
        raise SystemExit(f"[bench] --compare takes synchronous shs scenarios only, not {unfit}")
    for scenario in scenarios:
        for name in servers:
            wait_until(f"{name} to answer {scenario.key}",
                       lambda n=name, s=scenario: verify({"shs": servers[n]}, s) is None,
                       timeout=20)
    samples = {(k, n): [] for k in keys for n in servers}
    wrk_log = open(work / "wrk.log", "w")
    for r in range(args.rounds):
        log(f"round {r + 1} of {args.rounds}")
        order = list(servers) if r % 2 == 0 else list(reversed(list(servers)))
        for scenario in scenarios:
            for name in order:
                server = servers[name]
                check_alive(server)
                if args.warmup > 0:
                    run_wrk(wrk_cmd(wrk, lua, scenario, server.url, args.warmup), scenario.body,
                            wrk_log, method=scenario.method)
                sample = run_wrk(wrk_cmd(wrk, lua, scenario, server.url, args.duration),
                                 scenario.body, wrk_log, method=scenario.method)
                samples[(scenario.key, name)].append(sample)
                log(f"  {scenario.key:9} {name:4} {sample.rps:10.0f} req/s  "
                    f"p50 {sample.p50:7.3f} ms  p99 {sample.p99:7.3f} ms")
    wrk_log.close()
    stop_all()

    out = ["# shs: this build against a baseline\n",
           f"Written by `{shlex.join(['scripts/bench'] + sys.argv[1:])}` on "
           f"{datetime.date.today()}: {args.rounds} rounds of {args.duration} s per scenario, "
           "the two servers alternating. Each figure is this build / the baseline, measured in "
           "the same round: the median of the rounds and, in brackets, the lowest and highest.\n",
           f"- this build: `{RELEASE / 'shs'}`", f"- baseline: `{base}`\n",
           "| scenario | req/s | p50 | p99 | errors |", "|---|---|---|---|---|"]
    for scenario in scenarios:
        mine, theirs = samples[(scenario.key, "shs")], samples[(scenario.key, "base")]

        def ratio(metric: str, mine=mine, theirs=theirs) -> str:
            values = [getattr(a, metric) / getattr(b, metric)
                      for a, b in zip(mine, theirs) if getattr(b, metric) > 0]
            return med_range(values, ".3f") + "x"

        errors = sum(x.errors for x in mine + theirs)
        out.append(f"| {scenario.title} | {ratio('rps')} | {ratio('p50')} | {ratio('p99')} | "
                   f"{errors} |")
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------------------------------------
# Report


def med_range(values: list[float], fmt: str) -> str:
    if not values:
        return "n/a"
    med = statistics.median(values)
    if len(values) == 1:
        return format(med, fmt)
    return f"{format(med, fmt)} ({format(min(values), fmt)}–{format(max(values), fmt)})"


def ratio_values(results: Results, ratio: Ratio) -> list[float]:
    num = results.samples[ratio.numerator]
    den = results.samples[ratio.denominator]
    return [getattr(n, ratio.metric) / getattr(d, ratio.metric)
            for n, d in zip(num, den) if getattr(d, ratio.metric) > 0]


def verdict(ok: bool) -> str:
    return "**PASS**" if ok else "**MISS**"


def write_report(args, machine: dict, results: Results, plot_ok: bool) -> str:
    out = []
    w = out.append
    w("# shs benchmarks\n")
    w("Written by `scripts/bench` (run it again rather than editing the figures; the notes at "
      "the end are kept). Each load scenario ran "
      f"{args.rounds} times for {args.duration:g} s (after a {args.warmup:g} s warm-up), "
      "interleaved: round 1 runs every scenario in the order of the table, then round 2, and so "
      "on. The machine is shared and noisy, so each comparison is a **ratio of two figures "
      "measured in the same round**; the table gives the median of the rounds and, in "
      "brackets, the lowest and highest. Absolute numbers are for orientation only.\n")
    w("## Machine\n")
    w(f"- CPUs (nproc): {machine['nproc']}; CPU: {machine['cpu']}")
    w(f"- kernel: {machine['kernel']}; load average (1, 5, 15 min) at the start: "
      f"{machine['load']}, at the end: {machine.get('load_end', '?')} (other work shares the "
      "machine)")
    w(f"- {machine['rustc']}; {machine['wrk']}; Python {machine['python']}")
    w(f"- date: {machine['date']}")
    w(f"- run: `{shlex.join(['scripts/bench'] + sys.argv[1:])}`: {args.rounds} rounds of "
      f"{args.duration} s per scenario, {args.cold_reps} cold starts per round; HTTP workers "
      f"of shs and of both baselines: {args.workers}\n")

    w("## Targets\n")
    w("| target (issue) | measured: median (min–max) | result |")
    w("|---|---|---|")
    for ratio in RATIOS:
        if ratio.check is None:
            continue
        values = ratio_values(results, ratio)
        med = statistics.median(values) if values else float("nan")
        extra = ""
        ok = bool(values) and ratio.check(med)
        if ratio.key == "r-rs-32":
            p99 = [s.p99 for s in results.samples["rs-32"]]
            p99_ok = statistics.median(p99) < 2.0
            extra = f"; p99 {med_range(p99, '.2f')} ms (target < 2 ms)"
            ok = ok and p99_ok
        w(f"| {ratio.title}: {ratio.target}{'; p99 < 2 ms' if extra else ''} | "
          f"{med_range(values, '.2f')}x{extra} | {verdict(ok)} |")
    units = [chain_units(row) for row in results.chain]
    w(f"| cold 3-step chain (Python SDK, steps 2 and 3 at zero processes): extra latency over "
      f"the warm chain <= 1.2 Python cold starts (issue 14) | {med_range(units, '.2f')} cold "
      f"starts | {verdict(bool(units) and statistics.median(units) <= 1.2)} |")
    extras = [c - wm for c, wm in results.cold]
    w(f"| cold start of a Rust function at zero processes: <= 1.5 ms more than a warm request "
      f"(issue 14) | {med_range(extras, '.2f')} ms extra | "
      f"{verdict(bool(extras) and statistics.median(extras) <= 1.5)} |")
    idle = [k / 1024 for k in results.rss_idle]
    w(f"| supervisor RSS idle, {IDLE_FUNCTIONS:,} functions at zero processes: < 40 MiB "
      f"(issue 14) | {med_range(idle, '.1f')} MiB | "
      f"{verdict(bool(idle) and statistics.median(idle) < 40)} |")
    load = [k / 1024 for k in results.rss_load]
    w(f"| supervisor RSS under load (peak during Rust echo, 32 conns): < 48 MiB (issue 14) | "
      f"{med_range(load, '.1f')} MiB | {verdict(bool(load) and max(load) < 48)} |")
    for key, kind, title, target, check in THROUGHPUTS:
        if check is None:
            continue
        values = results.throughput.get(key, {}).get(kind, [])
        ok = bool(values) and check(statistics.median(values))
        w(f"| {title}: {target} | {med_range(values, ',.0f')} events/s | {verdict(ok)} |")
    if results.node_loss:
        stall = [r[0] for r in results.node_loss]
        w(f"| NATS node loss: the events of a killed supervisor handled within "
          f"{NODE_LOSS_TARGET:g} s of the kill (first event after it) | "
          f"{med_range(stall, '.2f')} s | "
          f"{verdict(statistics.median(stall) <= NODE_LOSS_TARGET)} |")
    for title, target, status in PENDING:
        w(f"| {title}{': ' + target if target else ''} | {status} | — |")
    w("")

    w("## Load scenarios\n")
    w("wrk, `-t1` for 1 connection and `-t2` for 32; a 62-byte JSON body "
      f"(`{BODY}`); events carry it as their payload; the GET has no body. Latencies in ms.\n")
    w("| scenario | req/s | p50 | p99 | non-2xx / socket errors | shs settings |")
    w("|---|---|---|---|---|---|")
    for s in SCENARIOS:
        samples = results.samples[s.key]
        errors = sum(x.errors for x in samples)
        total = sum(x.requests for x in samples)
        err = f"**{errors} of {total}** ⚠" if errors else f"0 of {total}"
        w(f"| {s.title} | {med_range([x.rps for x in samples], ',.0f')} | "
          f"{med_range([x.p50 for x in samples], '.3f')} | "
          f"{med_range([x.p99 for x in samples], '.3f')} | {err} | {s.setup} |")
    w("")
    w("## Asynchronous publishing\n")
    w("`POST /events` with `Prefer: respond-async` under wrk (32 connections): **accepted** is "
      "the rate of 202 answers (each one after the event and its pending delivery were "
      "committed); **delivered** is the number of events accepted in the run divided by the time "
      "from the start of the load until the subscriber (the Rust echo function) had taken the "
      "last of them, read from `GET /metrics/async-sub`.\n")
    w("| figure | events/s: median (min–max) | target | result |")
    w("|---|---|---|---|")
    for key, kind, title, target, check in THROUGHPUTS:
        values = results.throughput.get(key, {}).get(kind, [])
        result = verdict(check(statistics.median(values))) if check and values else "—"
        shown = med_range(values, ',.0f') if values else "not measured (no NATS server)"
        w(f"| {title} | {shown} | {target or '—'} | {result} |")
    w("")
    if results.node_loss:
        w("## Node loss on NATS\n")
        w(f"`nats-node-loss`: three supervisors share a private `nats-server -js`; each runs "
          f"the Python function `loss` (`LOSS_PY`: records each event's id and time, 2 ms an "
          f"event; `ordered`, so one delivery in flight across the three). "
          f"{NODE_LOSS_EVENTS:,} events are published asynchronously; once 100 are handled, "
          "the next delivery that supervisor c takes is held, and c is killed with SIGKILL. "
          "The held event waits for JetStream's ack wait (4 s, kept alive by progress acks "
          "while a supervisor lives) and goes to a or b.\n")
        w("| figure | median (min–max) over rounds |")
        w("|---|---|")
        w(f"| from the kill to the first event handled after it, s | "
          f"{med_range([r[0] for r in results.node_loss], '.2f')} |")
        w(f"| from the kill until all {NODE_LOSS_EVENTS:,} were handled, s | "
          f"{med_range([r[1] for r in results.node_loss], '.2f')} |")
        w(f"| events handled twice | "
          f"{med_range([float(r[2]) for r in results.node_loss], '.0f')} |")
        w("")
    w("## Ratios (same round)\n")
    w("| ratio | median (min–max) | target | result |")
    w("|---|---|---|---|")
    for ratio in RATIOS:
        values = ratio_values(results, ratio)
        result = "—"
        if ratio.check is not None and values:
            result = verdict(ratio.check(statistics.median(values)))
        w(f"| {ratio.title} | {med_range(values, '.2f')}x | {ratio.target or '—'} | {result} |")
    w("")
    w("## Cold start, memory\n")
    cold = [c for c, _ in results.cold]
    warm = [wm for _, wm in results.cold]
    w(f"Cold start: the function `cold` (the Rust echo, {describe(COLD_TOML)}) is left until "
      "`GET /functions` shows 0 processes, then one `POST /run/cold` is timed; then 3 warm "
      f"requests to `echo-rs`. {args.cold_reps} repetitions per round, one keep-alive "
      "connection (Python `http.client`). Per round: median(cold) − median(warm).\n")
    w("| figure | median (min–max) over rounds |")
    w("|---|---|")
    w(f"| cold request, ms | {med_range(cold, '.2f')} |")
    w(f"| warm request, ms | {med_range(warm, '.3f')} |")
    w(f"| cold start extra, ms | {med_range(extras, '.2f')} |")
    if results.cold_internal:
        w(f"| shs's own `last_cold_start_ms` (spawn to `initialize` answered), all "
          f"repetitions | {med_range(results.cold_internal, '.2f')} |")
    w(f"| supervisor VmRSS, {IDLE_FUNCTIONS:,} Rust echo functions at 0 processes "
      f"({describe(IDLE_TOML)}), MiB | {med_range(idle, '.1f')} |")
    w(f"| time from the start of `shs serve` to `/ready` with those {IDLE_FUNCTIONS:,} "
      f"functions, s | {med_range(results.ready_idle, '.2f')} |")
    w(f"| supervisor peak VmRSS during the Rust echo at 32 conns (all functions of the table "
      f"deployed), MiB | {med_range(load, '.1f')} |")
    w("")
    w("## Cold chain\n")
    w("The seed's chain (`examples/events/python/process-step{1,2,3}`, Python SDK, synchronous "
      "publishes): `POST /run/process-step1` answers once step 2 and step 3 have run. Steps 2 "
      f"and 3 have {describe(CHAIN_COLD_TOML)}; each repetition waits until both are at 0 "
      "processes, times one chain (cold), then 3 more (warm). The unit: the cold start of a "
      f"Python SDK echo (`cold-py`, {describe(CHAIN_COLD_TOML)}), cold request − warm request. "
      f"{args.chain_reps} repetitions per round; per round, medians.\n")
    w("| figure | median (min–max) over rounds |")
    w("|---|---|")
    w(f"| cold chain, ms | {med_range([r[0] for r in results.chain], '.1f')} |")
    w(f"| warm chain, ms | {med_range([r[1] for r in results.chain], '.1f')} |")
    w(f"| Python SDK cold start extra, ms | "
      f"{med_range([r[2] - r[3] for r in results.chain], '.1f')} |")
    w(f"| cold chain extra / Python cold start extra | {med_range(units, '.2f')} |")
    w("")
    w("## Streamed answers\n")
    w(f"The function `stream-rs` (`bench-echo-fn --stream`, {describe(STREAM_RS_TOML)}) sends "
      "its answer as `stream` notifications; curl (`-w %{time_starttransfer} %{time_total}`) "
      f"reads it. Time to first byte: {STREAM_TTFB['chunks']} chunks of "
      f"{STREAM_TTFB['size']:,} bytes, {STREAM_TTFB['every_ms']} ms apart, {STREAM_TTFB_REPS} "
      "times a round (median per round); the first byte comes with the first chunk, long "
      "before the end. Throughput: one answer of "
      f"{STREAM_BULK['chunks']:,} chunks of {STREAM_BULK['size']:,} bytes "
      f"({STREAM_BULK['chunks'] * STREAM_BULK['size'] / (1 << 20):,.0f} MiB) a round.\n")
    w("| figure | median (min–max) over rounds |")
    w("|---|---|")
    w(f"| time to first byte, ms | {med_range(results.stream_ttfb, '.2f')} |")
    w(f"| time to the end of the same answer, ms | {med_range(results.stream_total, '.1f')} |")
    w(f"| throughput of a large streamed answer, MiB/s | "
      f"{med_range(results.stream_mibps, ',.0f')} |")
    w("")
    if plot_ok:
        w("## Latency percentiles\n")
        w("![latency percentiles per scenario](benchmarks.png)\n")
        w("p50, p75, p90 and p99 of each scenario (median over the rounds), log scale.\n")
    w("## Commands\n")
    w("Build: `" + shlex.join(BUILD) + "`. Servers (`{port}` is a free port):\n")
    w("```sh")
    for kind, name, cmd in results.commands:
        if kind == "server":
            w(f"# {name}\n{cmd.replace(str(ROOT), '.')}")
    w("```\n")
    w("Load (`$WORK/bench.lua` is the `WRK_LUA` script in `scripts/bench.py`: POSTs "
      "`$BENCH_BODY`, counts non-2xx answers, prints a JSON summary):\n")
    w("```sh")
    for kind, _name, cmd in results.commands:
        if kind == "load":
            w(cmd.replace(str(ROOT), "."))
    w("```\n")
    w("The functions (`function.toml` in a temporary folder; `bench-echo-fn` is "
      "`crates/bench/src/bin/bench-echo-fn.rs`, the Python echo is `PY_ECHO` in "
      "`scripts/bench.py`):\n")
    w("| function | what | function.toml |")
    w("|---|---|---|")
    w(f"| `echo-rs` | `bench-echo-fn` | {describe(ECHO_RS_TOML)} |")
    w(f"| `echo-py` | minimal Python echo | {describe(ECHO_PY_TOML)} |")
    w(f"| `cat` | `cat` | {describe(CAT_TOML)} |")
    w(f"| `cat-path` | `cat` by full path | {describe(CAT_PATH_TOML)} |")
    w(f"| `sub-0` … `sub-9` | `bench-echo-fn`; all subscribe `bench.ten`, `sub-0` also "
      f"`bench.one` and `bench.pub` | {describe(SUB_TOML)} |")
    w(f"| `publisher` | `bench-echo-fn --publish bench.pub` (publishes the input, waits for the "
      f"answer, then answers) | {describe(PUBLISHER_TOML)} |")
    w(f"| `cold` | `bench-echo-fn` | {describe(COLD_TOML)} |")
    w(f"| `http-rs` | `bench-echo-fn --http-response` (answers an `http_response`: 200, "
      f"`text/plain`, `query: ` and the query) | {describe(HTTP_RS_TOML)} |")
    w(f"| `stream-rs` | `bench-echo-fn --stream` (streams `chunks` chunks of `size` bytes, "
      f"`every_ms` apart) | {describe(STREAM_RS_TOML)} |")
    for name, what in BARE.items():
        w(f"| `{name}` | {what} | none |")
    w(f"| `process-step1` … `process-step3` | the seed's chain, Python SDK | none; steps 2 and "
      f"3: {describe(CHAIN_COLD_TOML)} |")
    w(f"| `cold-py` | the Python SDK echo | {describe(CHAIN_COLD_TOML)} |")
    w("")
    return "\n".join(out) + "\n"


def plot(results: Results, tool: str, path: Path) -> bool:
    rows = []
    for s in SCENARIOS:
        samples = results.samples[s.key]
        if not samples:
            continue
        rows.append((s.key, [statistics.median(getattr(x, p) for x in samples)
                             for p in ("p50", "p75", "p90", "p99")]))
    if tool == "matplotlib":
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(12, 5.5))
        width = 0.2
        for i, name in enumerate(("p50", "p75", "p90", "p99")):
            xs = [j + (i - 1.5) * width for j in range(len(rows))]
            ax.bar(xs, [r[1][i] for r in rows], width, label=name)
        ax.set_xticks(range(len(rows)), [r[0] for r in rows], rotation=30, ha="right")
        ax.set_yscale("log")
        ax.set_ylabel("latency (ms, log scale)")
        ax.set_title("shs benchmarks: latency percentiles per scenario (wrk; median of rounds)")
        ax.grid(axis="y", which="both", alpha=0.3)
        ax.legend()
        fig.tight_layout()
        fig.savefig(path, dpi=100)
        return True
    if tool == "gnuplot":
        data = path.with_suffix(".dat")
        data.write_text("".join(f"{k} {' '.join(map(str, v))}\n" for k, v in rows))
        script = (f"set terminal pngcairo size 1200,550; set output '{path}';"
                  "set style data histogram; set style histogram clustered; set style fill solid;"
                  "set logscale y; set ylabel 'latency (ms)'; set xtics rotate by -30;"
                  f"plot '{data}' using 2:xtic(1) title 'p50', '' using 3 title 'p75',"
                  " '' using 4 title 'p90', '' using 5 title 'p99'")
        ok = subprocess.run(["gnuplot", "-e", script]).returncode == 0
        data.unlink()
        return ok
    return False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="a short run: 2 rounds of 2 s, fewer cold starts")
    parser.add_argument("--rounds", type=int, help="rounds of every scenario (default 3)")
    parser.add_argument("--duration", type=int, help="seconds per wrk run (default 5)")
    parser.add_argument("--warmup", type=int, help="seconds of warm-up before each run (1)")
    parser.add_argument("--cold-reps", type=int, help="cold starts per round (default 15)")
    parser.add_argument("--chain-reps", type=int,
                        help="cold chains (and Python cold starts) per round (default 5)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                        help="HTTP workers of shs and of the baselines (default: nproc)")
    parser.add_argument("--no-build", action="store_true", help="use the binaries as they are")
    parser.add_argument("--node-loss-only", action="store_true",
                        help="run only nats-node-loss (--rounds times) and print its figures")
    parser.add_argument("--output", type=Path, default=ROOT / "BENCHMARKS.md",
                        help="where to write the report (the plot goes next to it)")
    parser.add_argument("--compare", metavar="SHS",
                        help="compare this build's shs with another shs binary, side by side "
                        "(writes target/bench-compare.md, not BENCHMARKS.md)")
    parser.add_argument("--only", metavar="KEYS",
                        help="with --compare: the scenario keys to run, comma-separated "
                        f"(default {','.join(COMPARE_DEFAULT)})")
    args = parser.parse_args()
    quick = {"rounds": 2, "duration": 2, "warmup": 1, "cold_reps": 5, "chain_reps": 2}
    full = {"rounds": 3, "duration": 5, "warmup": 1, "cold_reps": 15, "chain_reps": 5}
    for key, value in (quick if args.quick else full).items():
        if getattr(args, key) is None:
            setattr(args, key, value)

    started = time.monotonic()
    atexit.register(stop_all)
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    os.chdir(ROOT)
    if not args.no_build:
        run(BUILD)
    if args.node_loss_only:
        work = Path(tempfile.mkdtemp(prefix="shs-bench-"))
        atexit.register(shutil.rmtree, work, True)
        results = Results()
        for r in range(args.rounds):
            node_loss(args, work, results, r)
        stall = [r[0] for r in results.node_loss]
        everything = [r[1] for r in results.node_loss]
        log(f"nats-node-loss over {args.rounds} rounds: first event after the kill "
            f"{med_range(stall, '.2f')} s; all handled {med_range(everything, '.2f')} s; "
            f"duplicates {[r[2] for r in results.node_loss]}")
        return
    wrk = ensure_wrk()
    if args.compare:
        report = measure_compare(args, wrk)
        path = ROOT / "target" / "bench-compare.md"
        path.write_text(report)
        print(report)
        log(f"wrote {path} in {time.monotonic() - started:.0f} s")
        return
    tool = plotter()
    machine = describe_machine()
    results, _servers = measure(args, wrk)
    machine["load_end"] = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    png = args.output.with_name("benchmarks.png")
    plot_ok = bool(tool) and plot(results, tool, png)
    notes = DEFAULT_NOTES
    if args.output.exists():
        old = args.output.read_text()
        if NOTES_MARKER in old:
            notes = old.split(NOTES_MARKER, 1)[1]
    report = write_report(args, machine, results, plot_ok)
    args.output.write_text(report + NOTES_MARKER + notes)
    log(f"wrote {args.output}" + (f" and {png}" if plot_ok else ""))
    log(f"done in {time.monotonic() - started:.0f} s")
    errors = sum(x.errors for samples in results.samples.values() for x in samples)
    if errors:
        log(f"WARNING: {errors} requests failed (non-2xx or socket errors); see the table")
        sys.exit(1)


if __name__ == "__main__":
    main()
