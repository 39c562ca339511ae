//! What a function can reach of the supervisor: its session and terminal, its descriptors,
//! its environment, its zombies. The `inspect` function answers what it sees of itself.

use serde_json::{Value, json};

use crate::harness::{Server, ServerBuilder};

/// Answers each `invoke` with its pid, session and group, the descriptors it holds and its
/// environment.
const INSPECT: &str = r#"
import json, os, sys
for line in sys.stdin:
    msg = json.loads(line)
    if "id" not in msg or "method" not in msg:
        continue
    if msg["method"] == "invoke":
        fds = sorted(int(fd) for fd in os.listdir("/proc/self/fd"))
        result = {"pid": os.getpid(), "sid": os.getsid(0), "pgid": os.getpgid(0),
                  "fds": fds, "env": dict(os.environ)}
    else:
        result = {}
    sys.stdout.write(json.dumps({"jsonrpc": "2.0", "id": msg["id"], "result": result}) + "\n")
    sys.stdout.flush()
"#;

/// What `inspect` sees of itself.
async fn inspect(server: &Server) -> Value {
    let answer = server.run("inspect", json!({})).await;
    assert_eq!(answer.status, 200, "{answer:?}; log:\n{}", server.logs());
    answer.body
}

/// The session of process `pid`.
fn session_of(pid: u32) -> i64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    let (_, rest) = stat.rsplit_once(") ").expect("stat format");
    // state, ppid, pgrp, session
    rest.split_whitespace()
        .nth(3)
        .and_then(|s| s.parse().ok())
        .expect("session field")
}

#[tokio::test]
async fn a_function_runs_in_a_session_of_its_own() {
    let mut server = ServerBuilder::new()
        .file("inspect", "main.py", INSPECT)
        .start()
        .await;
    server.wait_ready().await;
    let seen = inspect(&server).await;
    let pid = seen["pid"].as_i64().expect("pid");
    // The leader of its own session and group: no controlling terminal, none of shs's.
    assert_eq!(seen["sid"], pid, "{seen}");
    assert_eq!(seen["pgid"], pid, "{seen}");
    assert_ne!(seen["sid"], session_of(server.pid()), "{seen}");
    server.stop_and_check();
}
