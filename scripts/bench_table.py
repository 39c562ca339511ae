#!/usr/bin/env python3
"""The scale of the table: shs with many functions (1,000 by default) in its folder.

Measures, on the release build: the time from `shs serve` to `/ready` and the supervisor's
RSS, on a first start (an empty store: every function runs once, 8 at a time, to learn its
start-up subscriptions, and is stopped again since it needs no process) and after a restart
(what was learned is in the store: nothing is started); then the RSS under load (cold starts
of 100 different functions, then requests spread over them from 16 threads) and idle again.

    cargo build --release -p shs -p shs-bench
    scripts/bench_table.py [--functions 1000] [--shs target/release/shs]

Standard library only. Prints a Markdown table; exits 1 if a request fails.
"""
import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def get(url: str, timeout: float = 10.0):
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()
    except OSError:
        return 0, b""


def post(url: str, body: bytes, timeout: float = 30.0):
    req = urllib.request.Request(url, data=body, method="POST",
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def write_functions(folder: Path, n: int, echo: Path | None) -> str:
    """n echo functions: the Rust protocol echo of crates/bench when built, else Python."""
    for i in range(n):
        d = folder / f"fn-{i:04}"
        d.mkdir(parents=True)
        if echo is not None:
            (d / "function.toml").write_text(f"command = [{json.dumps(str(echo))}]\n")
        else:
            (d / "main.py").write_text(PY_ECHO)
    return "Rust (bench-echo-fn)" if echo is not None else "Python"


PY_ECHO = """import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if "id" not in m or "method" not in m:
        continue
    r = m["params"].get("input") if m["method"] == "invoke" else {}
    print(json.dumps({"jsonrpc": "2.0", "id": m["id"], "result": r}), flush=True)
"""


class Shs:
    def __init__(self, binary: Path, folder: Path, data: Path, log: Path):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = open(log, "ab")
        self.started = time.perf_counter()
        self.proc = subprocess.Popen(
            [str(binary), "serve", "--functions-dir", str(folder), "--data-dir", str(data),
             "--listen", f"127.0.0.1:{self.port}", "--no-watch", "--secrets-dir",
             str(data / "secrets")],
            stdout=self.log, stderr=self.log)

    def ready_after(self, limit: float = 600.0) -> float:
        deadline = time.perf_counter() + limit
        while time.perf_counter() < deadline:
            if self.proc.poll() is not None:
                sys.exit(f"shs exited with {self.proc.returncode}; see its log")
            if get(self.url + "/ready", 1.0)[0] == 200:
                return time.perf_counter() - self.started
            time.sleep(0.005)
        sys.exit("shs was not ready in time")

    def running(self) -> int:
        status, body = get(self.url + "/functions")
        if status != 200:
            return -1
        return sum(f["processes"] for f in json.loads(body)["functions"])

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=60)
        self.log.close()


def wait_idle(shs: Shs, limit: float = 300.0) -> float:
    began = time.perf_counter()
    while time.perf_counter() - began < limit:
        if shs.running() == 0:
            return time.perf_counter() - began
        time.sleep(0.05)
    sys.exit("the functions did not all stop")


def load(shs: Shs, functions: int, seconds: float) -> tuple[int, int, int]:
    """Cold starts of `functions` functions, then requests over them from 16 threads; returns
    (requests, failures, peak RSS KiB)."""
    counts = {"ok": 0, "failed": 0}
    lock = threading.Lock()
    peak = [rss_kib(shs.proc.pid)]
    stop = time.perf_counter() + seconds

    def client(k: int):
        i = k
        while time.perf_counter() < stop:
            status, _ = post(f"{shs.url}/run/fn-{i % functions:04}", b'{"n": 1}')
            with lock:
                counts["ok" if status == 200 else "failed"] += 1
            i += 16

    threads = [threading.Thread(target=client, args=(k,)) for k in range(16)]
    for t in threads:
        t.start()
    while any(t.is_alive() for t in threads):
        peak[0] = max(peak[0], rss_kib(shs.proc.pid))
        time.sleep(0.05)
    return counts["ok"], counts["failed"], peak[0]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--functions", type=int, default=1000)
    parser.add_argument("--shs", type=Path, default=ROOT / "target/release/shs")
    parser.add_argument("--load-functions", type=int, default=100)
    parser.add_argument("--load-seconds", type=float, default=10.0)
    parser.add_argument("--python", action="store_true", help="Python functions, not Rust")
    args = parser.parse_args()
    echo = ROOT / "target/release/bench-echo-fn"
    echo = None if args.python or not echo.exists() else echo
    work = Path(tempfile.mkdtemp(prefix="shs-bench-table-"))
    try:
        folder, data = work / "functions", work / "data"
        folder.mkdir()
        data.mkdir()
        (data / "secrets").mkdir(mode=0o700)
        kind = write_functions(folder, args.functions, echo)
        rows = []

        shs = Shs(args.shs, folder, data, work / "shs.log")
        ready = shs.ready_after()
        idle_in = wait_idle(shs)
        time.sleep(1.0)
        rows.append(("first start (empty store: each function run once to learn, 8 at a time)",
                     f"{ready:.2f}", f"{idle_in:.2f}", f"{rss_kib(shs.proc.pid) / 1024:.1f}"))
        shs.stop()

        shs = Shs(args.shs, folder, data, work / "shs.log")
        ready = shs.ready_after()
        time.sleep(1.0)
        started = shs.running()
        rows.append((f"restart (learned: nothing started; {started} processes)",
                     f"{ready:.2f}", "0", f"{rss_kib(shs.proc.pid) / 1024:.1f}"))
        ok, failed, peak = load(shs, args.load_functions, args.load_seconds)
        rows.append((f"under load: {args.load_functions} functions, 16 clients, "
                     f"{ok} requests, {failed} failed", "", "", f"{peak / 1024:.1f} (peak)"))
        shs.stop()

        print(f"{args.functions:,} {kind} functions, shs {args.shs} "
              f"({os.cpu_count()} CPUs, load {open('/proc/loadavg').read().split()[0]})\n")
        print("| run | to /ready, s | to all at zero, s | supervisor RSS, MiB |")
        print("|---|---|---|---|")
        for row in rows:
            print("| " + " | ".join(row) + " |")
        if failed:
            sys.exit(1)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
