//! Rogue functions: a function that forges answers to other processes' calls, subscribes to
//! 100,000 types, publishes in a tight loop, holds many megabytes of publishes in flight, or
//! writes a 1 GB line without a newline. After each, the supervisor's memory stays bounded, its
//! descriptors come back to where they were, and another function still answers correctly.

use serde_json::{Value, json};

use crate::harness::{Server, ServerBuilder, poll};

/// How much the supervisor's resident memory may grow through one attack, in KiB. Far below
/// what the attacks would cost without bounds (100,000 subscriptions, 1 GB of line, hundreds of
/// megabytes of payloads).
const RSS_SLACK_KIB: u64 = 64 * 1024;

/// Answers `{"n": n}` with `{"n": n, "pid": ...}`, after `{"sleep": s}` seconds if asked.
const HONEST: &str = r#"
import json, os, sys, time
for line in sys.stdin:
    msg = json.loads(line)
    if "id" not in msg or "method" not in msg:
        continue
    result = {}
    if msg["method"] == "invoke":
        data = msg["params"].get("input") or {}
        time.sleep(data.get("sleep", 0))
        result = {"n": data.get("n"), "pid": os.getpid()}
    elif msg["method"] == "event":
        time.sleep(float(os.environ.get("EVENT_SLEEP", "0")))
    sys.stdout.write(json.dumps({"jsonrpc": "2.0", "id": msg["id"], "result": result}) + "\n")
    sys.stdout.flush()
"#;

/// On `invoke`, does what its input asks, writing the lines by hand:
/// - `forge`: answers every call id within 200 of its own (but its own) with a forged result;
/// - `subscribe`: sends that many `subscribe` requests at once, then reads every answer;
/// - `flood`: sends that many `publish` notifications in a tight loop;
/// - `inflight`: sends that many 1 MiB synchronous publishes at once, then reads the answers;
/// - `huge`: writes that many MiB on stdout with no newline.
///
/// Then answers its own call with what it saw.
const ROGUE: &str = r#"
import json, sys, threading

def send(obj):
    sys.stdout.write(json.dumps(obj) + "\n")

def in_background(lines):
    # Written by another thread while this one reads the answers: the supervisor stops
    # reading a function that does not read its answers.
    def write():
        for line in lines:
            send(line)
        sys.stdout.flush()
    thread = threading.Thread(target=write)
    thread.start()
    return thread

def answers(n):
    out = []
    while len(out) < n:
        msg = json.loads(sys.stdin.readline())
        if "method" not in msg:
            out.append(msg)
    return out

for line in sys.stdin:
    msg = json.loads(line)
    if "id" not in msg or "method" not in msg:
        continue
    result = {}
    if msg["method"] == "invoke":
        data = msg["params"].get("input") or {}
        me = msg["id"]
        if "forge" in data:
            for other in range(me - 200, me + 200):
                if other != me:
                    send({"jsonrpc": "2.0", "id": other, "result": {"forged": True}})
            sys.stdout.flush()
        if "subscribe" in data:
            n = data["subscribe"]
            writer = in_background({"jsonrpc": "2.0", "id": "s%d" % i, "method": "subscribe",
                                    "params": {"type": "rogue.t%d" % i}} for i in range(n))
            codes = {}
            for a in answers(n):
                key = str(a["error"]["code"]) if "error" in a else "ok"
                codes[key] = codes.get(key, 0) + 1
                if "error" in a:
                    result["error"] = a["error"]["message"]
            result["codes"] = codes
            writer.join()
        if "flood" in data:
            for i in range(data["flood"]):
                send({"jsonrpc": "2.0", "method": "publish",
                      "params": {"type": "rogue.flood", "payload": i}})
            sys.stdout.flush()
        if "inflight" in data:
            n = data["inflight"]
            payload = "x" * (1 << 20)
            writer = in_background({"jsonrpc": "2.0", "id": "p%d" % i, "method": "publish",
                                    "params": {"type": "rogue.slow", "payload": payload}}
                                   for i in range(n))
            codes = {}
            for a in answers(n):
                key = str(a["error"]["code"]) if "error" in a else "ok"
                codes[key] = codes.get(key, 0) + 1
                if "error" in a:
                    result["error"] = a["error"]["message"]
            result["codes"] = codes
            writer.join()
        if "huge" in data:
            chunk = "x" * (1 << 20)
            for _ in range(data["huge"]):
                sys.stdout.write(chunk)
            sys.stdout.flush()
    send({"jsonrpc": "2.0", "id": msg["id"], "result": result})
    sys.stdout.flush()
"#;

/// A server with the rogue and an honest function.
async fn server(extra: impl FnOnce(ServerBuilder) -> ServerBuilder) -> Server {
    let builder = ServerBuilder::new()
        .file("rogue", "main.py", ROGUE)
        .toml("rogue", "instances = 1\ntimeout = 60\n")
        .file("honest", "main.py", HONEST)
        .toml("honest", "instances = 2\nconcurrency = 4\n");
    let server = extra(builder).start().await;
    server.wait_ready().await;
    server
}

/// The supervisor's state before an attack.
struct Baseline {
    rss_kib: u64,
    fds: usize,
}

/// Warms every function up, then notes the supervisor's memory and descriptors.
async fn baseline(server: &Server) -> Baseline {
    for name in ["rogue", "honest"] {
        assert_eq!(server.run(name, json!({})).await.status, 200, "{name}");
    }
    honest_answers(server).await;
    Baseline {
        rss_kib: server.rss_kib(),
        fds: server.open_fds(),
    }
}

/// The honest function answers twenty requests at once, each with its own answer.
async fn honest_answers(server: &Server) {
    let answers = futures::future::join_all(
        (0..20).map(|n| async move { (n, server.run("honest", json!({"n": n})).await) }),
    )
    .await;
    for (n, answer) in answers {
        assert_eq!(answer.status, 200, "{answer:?}");
        assert_eq!(answer.body["n"], n, "{answer:?}");
    }
}

/// After an attack: memory bounded, descriptors back to the baseline, the honest function
/// answering correctly.
async fn check_after(server: &Server, before: &Baseline, attack: &str) {
    honest_answers(server).await;
    let rss = server.rss_kib();
    assert!(
        rss <= before.rss_kib + RSS_SLACK_KIB,
        "{attack}: the supervisor grew from {} KiB to {rss} KiB",
        before.rss_kib
    );
    let back = poll(|| async { server.open_fds() <= before.fds }).await;
    assert!(
        back,
        "{attack}: {} descriptors before, {} after",
        before.fds,
        server.open_fds()
    );
}

#[tokio::test]
async fn answers_forged_for_other_processes_calls_reach_nobody() {
    let mut server = server(|b| b).await;
    let before = baseline(&server).await;
    // The honest function's calls are in flight (ids near the rogue's own) while the rogue
    // answers every id around its own.
    let honest = futures::future::join_all((0..8).map(|n| {
        let server = &server;
        async move { server.run("honest", json!({"n": n, "sleep": 0.5})).await }
    }));
    let rogue = async {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        server.run("rogue", json!({"forge": true})).await
    };
    let (honest, rogue) = tokio::join!(honest, rogue);
    assert_eq!(rogue.status, 200, "{rogue:?}");
    assert_eq!(rogue.body, json!({}), "its own answer: {rogue:?}");
    for (n, answer) in honest.iter().enumerate() {
        assert_eq!(answer.status, 200, "{answer:?}");
        assert_eq!(answer.body["n"], n, "not forged: {answer:?}");
        assert!(answer.body.get("forged").is_none(), "{answer:?}");
    }
    check_after(&server, &before, "forged answers").await;
    server.stop_and_check();
}

#[tokio::test]
async fn a_function_subscribing_to_100000_types_is_stopped_at_the_limit() {
    let mut server = server(|b| b).await;
    let before = baseline(&server).await;
    let answer = server.run("rogue", json!({"subscribe": 100_000})).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(
        answer.body["codes"],
        json!({"ok": 1000, "-32001": 99_000}),
        "{answer:?}"
    );
    let message = answer.body["error"].as_str().unwrap_or_default();
    assert!(
        message.contains("subscribed to 1000 patterns, the most a function may have"),
        "{message}"
    );
    let subscriptions = server.subscriptions().await;
    assert_eq!(
        subscriptions.iter().filter(|(_, f)| f == "rogue").count(),
        1000
    );
    check_after(&server, &before, "100,000 subscriptions").await;
    server.stop_and_check();
}

#[tokio::test]
async fn a_function_publishing_in_a_tight_loop_hurts_nobody() {
    let mut server = server(|b| b).await;
    let before = baseline(&server).await;
    let (flood, ()) = tokio::join!(
        server.run("rogue", json!({"flood": 200_000})),
        honest_answers(&server)
    );
    assert_eq!(flood.status, 200, "{flood:?}");
    check_after(&server, &before, "a publish flood").await;
    server.stop_and_check();
}

#[tokio::test]
async fn a_function_holding_many_megabytes_of_publishes_in_flight_is_told_to_wait() {
    // A subscriber that takes 1 s per event holds every synchronous publish in flight.
    let mut server = server(|b| {
        b.file("slow", "main.py", HONEST).toml(
            "slow",
            "subscribe = [\"rogue.slow\"]\ninstances = 1\nqueue = 1000\ntimeout = 60\nenv = { EVENT_SLEEP = \"1\" }\n",
        )
    })
    .await;
    let before = baseline(&server).await;
    // 64 publishes of 1 MiB at once: 16 MiB may wait (a few more pass as the first are
    // answered), the rest is refused at once.
    let answer = server.run("rogue", json!({"inflight": 64})).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    let codes = &answer.body["codes"];
    let refused = codes["-32001"].as_u64().unwrap_or(0);
    let taken = codes["ok"].as_u64().unwrap_or(0);
    assert!(refused >= 32, "{answer:?}");
    assert!(taken >= 1, "{answer:?}");
    let message = answer.body["error"].as_str().unwrap_or_default();
    assert!(
        message.contains("too many bytes of publishes in flight"),
        "{message}"
    );
    check_after(&server, &before, "64 MiB of publishes in flight").await;
    server.stop_and_check();
}

#[tokio::test]
async fn a_function_writing_a_1_gb_line_is_stopped_at_max_line() {
    let mut server = server(|b| b).await;
    let before = baseline(&server).await;
    let answer = server.run("rogue", json!({"huge": 1024})).await;
    assert_eq!(answer.status, 502, "{answer:?}");
    assert!(
        answer.message().contains("stdout line longer than"),
        "{answer:?}"
    );
    check_after(&server, &before, "a 1 GB line").await;
    // The rogue is started again, and serves.
    let again = poll(|| async { server.run("rogue", json!({})).await.status == 200 }).await;
    assert!(again, "the rogue serves again; log:\n{}", server.logs());
    let _: Value = server.run("rogue", json!({})).await.body;
    server.stop_and_check();
}
