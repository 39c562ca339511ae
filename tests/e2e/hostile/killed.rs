//! Function processes killed from outside with SIGKILL, idle or in the middle of a request:
//! the supervisor gives back everything it held for them (descriptors above all), and the
//! processes started in their place serve as before.

use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::{Value, json};

use crate::harness::{Server, ServerBuilder, poll};

/// Answers `{"sleep": s}` after `s` seconds, with its pid.
const SLEEPER: &str = r#"
import json, os, sys, time
for line in sys.stdin:
    msg = json.loads(line)
    if "id" not in msg or "method" not in msg:
        continue
    if msg["method"] == "invoke":
        time.sleep((msg["params"].get("input") or {}).get("sleep", 0))
    result = {"pid": os.getpid()}
    sys.stdout.write(json.dumps({"jsonrpc": "2.0", "id": msg["id"], "result": result}) + "\n")
    sys.stdout.flush()
"#;

const FUNCTIONS: [&str; 4] = ["f1", "f2", "f3", "f4"];

async fn pid_of(server: &Server, name: &str) -> u32 {
    let answer = server.run(name, json!({})).await;
    assert_eq!(answer.status, 200, "{name}: {answer:?}");
    u32::try_from(answer.body["pid"].as_u64().expect("pid")).expect("pid")
}

fn kill9(pid: u32) {
    kill(
        Pid::from_raw(i32::try_from(pid).expect("pid")),
        Signal::SIGKILL,
    )
    .expect("kill");
}

#[tokio::test]
async fn functions_killed_with_sigkill_give_back_their_descriptors() {
    let mut builder = ServerBuilder::new();
    for name in FUNCTIONS {
        builder = builder
            .file(name, "main.py", SLEEPER)
            .toml(name, "instances = 1\n");
    }
    let mut server = builder.start().await;
    server.wait_ready().await;
    let mut pids = Vec::new();
    for name in FUNCTIONS {
        pids.push(pid_of(&server, name).await);
    }
    let baseline = server.open_fds();

    for round in 0..2 {
        // f1 and f2 killed idle; f3 and f4 in the middle of a request (502).
        for (i, name) in FUNCTIONS.iter().enumerate() {
            if i < 2 {
                kill9(pids[i]);
                continue;
            }
            let busy = {
                let server = &server;
                async move { server.run(name, json!({"sleep": 30})).await }
            };
            let pid = pids[i];
            let killer = async move {
                // The request is in the function's hands once it sleeps.
                tokio::time::sleep(Duration::from_millis(300)).await;
                kill9(pid);
            };
            let (answer, ()) = tokio::join!(busy, killer);
            assert_eq!(answer.status, 502, "round {round}, {name}: {answer:?}");
        }
        // Each is served by a new process.
        for (i, name) in FUNCTIONS.iter().enumerate() {
            let fresh = poll(|| async {
                let answer = server.run(name, json!({})).await;
                answer.status == 200 && answer.body["pid"] != json!(pids[i])
            })
            .await;
            assert!(fresh, "{name} restarted; log:\n{}", server.logs());
            pids[i] = pid_of(&server, name).await;
        }
    }
    // Eight processes killed, four running: as many descriptors as before.
    let back = poll(|| async { server.open_fds() <= baseline }).await;
    let fds: Value = std::fs::read_dir(format!("/proc/{}/fd", server.pid()))
        .expect("fds")
        .flatten()
        .map(|e| {
            std::fs::read_link(e.path())
                .map(|t| t.to_string_lossy().into_owned())
                .unwrap_or_default()
        })
        .collect();
    assert!(
        back,
        "{} descriptors before, {} after: {fds}",
        baseline,
        server.open_fds()
    );
    server.stop_and_check();
}
