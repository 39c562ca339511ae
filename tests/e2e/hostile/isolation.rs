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

#[tokio::test]
async fn descriptors_shs_inherited_do_not_reach_a_function() {
    // shs starts with descriptors 7 and 8 open, as a parent could leave them.
    let mut server = ServerBuilder::new()
        .file("inspect", "main.py", INSPECT)
        .wrap(&["sh", "-c", r#"exec 7</dev/null 8>&2; exec "$@""#, "sh"])
        .start()
        .await;
    server.wait_ready().await;
    let shs_fds: Vec<String> = std::fs::read_dir(format!("/proc/{}/fd", server.pid()))
        .expect("shs's descriptors")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        shs_fds.iter().any(|fd| fd == "7") && shs_fds.iter().any(|fd| fd == "8"),
        "shs inherited 7 and 8: {shs_fds:?}"
    );
    let seen = inspect(&server).await;
    // 0, 1, 2, and the one Python's listdir opened to list them.
    let fds: Vec<i64> = seen["fds"]
        .as_array()
        .expect("fds")
        .iter()
        .filter_map(Value::as_i64)
        .collect();
    assert_eq!(fds.len(), 4, "{fds:?}");
    assert_eq!(fds[..3], [0, 1, 2], "{fds:?}");
    server.stop_and_check();
}

#[tokio::test]
async fn inherit_env_never_passes_shs_s_own_settings() {
    let mut server = ServerBuilder::new()
        .file("inspect", "main.py", INSPECT)
        .env("SHS_API_KEY", "secret-key-1,secret-key-2")
        .env("SHS_BUS", "nats://user:secret@127.0.0.1:4222")
        .env("SHS_INHERIT_ENV", "true")
        .env("SOME_SETTING", "passed")
        .args(&["--bus", "local"])
        .start()
        .await;
    let answer = server
        .request(
            reqwest::Method::POST,
            "/run/inspect",
            Some("{}".to_owned()),
            &[("authorization", "Bearer secret-key-1")],
        )
        .await;
    assert_eq!(answer.status, 200, "{answer:?}; log:\n{}", server.logs());
    let env = answer.body["env"].as_object().expect("env");
    // The rest of the environment is inherited...
    assert_eq!(env.get("SOME_SETTING"), Some(&json!("passed")), "{env:?}");
    // ...but no SHS_* setting but the two shs sets for the function.
    let mut shs: Vec<&String> = env.keys().filter(|k| k.starts_with("SHS_")).collect();
    shs.sort();
    assert_eq!(shs, ["SHS_FUNCTION", "SHS_URL"], "{env:?}");
    let text = answer.body["env"].to_string();
    assert!(!text.contains("secret"), "{text}");
    server.stop_and_check();
}
