//! What a function can reach of the supervisor: its session and terminal, its descriptors,
//! its environment, its zombies. The `inspect` function answers what it sees of itself.

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
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

/// Answers each `invoke` after leaving `{"orphans": n}` processes behind: each a grandchild
/// whose parent has exited, which ends a moment later.
const ORPHANER: &str = r#"
import json, os, sys, time

def ended(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(") ", 1)[1].startswith("Z")
    except OSError:
        return True

for line in sys.stdin:
    msg = json.loads(line)
    if "id" not in msg or "method" not in msg:
        continue
    orphans = []
    if msg["method"] == "invoke":
        for _ in range((msg["params"].get("input") or {}).get("orphans", 0)):
            r, w = os.pipe()
            child = os.fork()
            if child == 0:
                grandchild = os.fork()
                if grandchild == 0:
                    time.sleep(0.1)
                    os._exit(0)
                os.write(w, str(grandchild).encode())
                os._exit(0)
            os.close(w)
            orphans.append(int(os.read(r, 32)))
            os.close(r)
            os.waitpid(child, 0)
        # Answer once every orphan has ended (a zombie, or reaped already).
        deadline = time.time() + 10
        while not all(ended(p) for p in orphans) and time.time() < deadline:
            time.sleep(0.01)
    result = {"orphans": orphans}
    sys.stdout.write(json.dumps({"jsonrpc": "2.0", "id": msg["id"], "result": result}) + "\n")
    sys.stdout.flush()
"#;

/// The children of process `pid` (in the harness's view of /proc).
fn children_of(pid: u32) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

/// The zombies whose parent is `pid`.
fn zombies_of(pid: u32) -> Vec<u32> {
    children_of(pid)
        .into_iter()
        .filter(|child| {
            std::fs::read_to_string(format!("/proc/{child}/stat")).is_ok_and(|stat| {
                stat.rsplit_once(") ")
                    .is_some_and(|(_, rest)| rest.starts_with('Z'))
            })
        })
        .collect()
}

#[tokio::test]
async fn as_pid_1_shs_reaps_the_orphans_functions_leave() {
    let works = std::process::Command::new("unshare")
        .args(["--pid", "--fork", "--mount-proc", "true"])
        .status()
        .is_ok_and(|s| s.success());
    if !works {
        assert!(
            std::env::var_os("SHS_REQUIRE_UNSHARE").is_none(),
            "unshare --pid is needed"
        );
        eprintln!("skipped: unshare --pid does not work here (needs root)");
        return;
    }
    // shs is PID 1 of a new PID namespace, as in a container.
    let mut server = ServerBuilder::new()
        .file("orphaner", "main.py", ORPHANER)
        .wrap(&["unshare", "--pid", "--fork", "--mount-proc"])
        .start()
        .await;
    server.wait_ready().await;
    let shs = children_of(server.pid());
    assert_eq!(shs.len(), 1, "unshare's one child is shs: {shs:?}");
    let shs = shs[0];
    assert!(
        server.logs().contains("running as PID 1"),
        "{}",
        server.logs()
    );

    for _ in 0..3 {
        let answer = server.run("orphaner", json!({"orphans": 5})).await;
        assert_eq!(answer.status, 200, "{answer:?}");
        assert_eq!(answer.body["orphans"].as_array().map(Vec::len), Some(5));
    }
    // 15 orphans were re-parented to shs and have ended: none stays a zombie.
    let reaped = crate::harness::poll(|| async { zombies_of(shs).is_empty() }).await;
    assert!(reaped, "zombies of shs: {:?}", zombies_of(shs));
    // The function itself is still shs's child, and still served.
    assert_eq!(server.run("orphaner", json!({})).await.status, 200);

    // unshare does not pass SIGTERM on: stop shs itself, and it ends the namespace.
    kill(
        Pid::from_raw(i32::try_from(shs).expect("pid")),
        Signal::SIGTERM,
    )
    .expect("SIGTERM to shs");
    let status = server.stop().expect("the server was running");
    assert!(status.success(), "shs exited with {status}");
}
