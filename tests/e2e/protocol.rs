//! The wire protocol, as functions see it.

use serde_json::json;

use crate::harness::ServerBuilder;

#[tokio::test]
async fn initialize_comes_first_with_the_name_and_protocol_version() {
    let mut server = ServerBuilder::new().fixture("echo").start().await;
    let answer = server.run("echo", json!({})).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(
        answer.body["initialize"],
        json!({"function": "echo", "protocol": 1})
    );
    server.stop_and_check();
}

#[tokio::test]
async fn nothing_is_sent_before_initialize_is_answered() {
    // slow-init takes half a second to answer initialize and notes whether anything arrived
    // meanwhile; the request is sent while it is still starting.
    let mut server = ServerBuilder::new().fixture("slow-init").start().await;
    let answer = server.run("slow-init", json!({})).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(answer.body, json!({"early": false}));
    server.stop_and_check();
}

#[tokio::test]
async fn an_error_answer_to_initialize_still_marks_the_process_ready() {
    let mut server = ServerBuilder::new().fixture("init-error").start().await;
    server.wait_ready().await;
    let answer = server.run("init-error", json!({})).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(
        server.function_info("init-error").await.expect("listed")["state"],
        "ready"
    );
    server.wait_for_log("initialize is not my thing").await;
    server.stop_and_check();
}

#[tokio::test]
async fn stderr_is_logged_line_by_line_with_the_function_name() {
    let mut server = ServerBuilder::new()
        .fixture("echo")
        .fixture("echo-sh")
        .start()
        .await;
    assert_eq!(server.run("echo", json!({})).await.status, 200);
    assert_eq!(server.run("echo-sh", json!({})).await.status, 200);
    server.wait_for_log("echo got a request").await;
    server.wait_for_log("sh function invoked").await;
    let logs = server.logs();
    let line = logs
        .lines()
        .find(|l| l.contains("echo got a request"))
        .expect("logged");
    assert!(line.contains("function=echo"), "{line}");
    assert!(line.contains("pid="), "{line}");
    assert!(
        line.contains("request_id="),
        "one request in flight: its id is on the line: {line}"
    );
    server.stop_and_check();
}

#[tokio::test]
async fn the_process_runs_in_its_folder_with_a_clean_environment() {
    let mut server = ServerBuilder::new()
        .fixture("echo")
        .toml("echo", "env = { GREETING = \"hi\" }\n")
        .env("SECRET_OF_THE_SUPERVISOR", "do not leak")
        .start()
        .await;
    let answer = server.run("echo", json!({})).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    let folder = server
        .functions_dir()
        .join("echo")
        .canonicalize()
        .expect("folder");
    assert_eq!(answer.body["cwd"], folder.to_string_lossy().as_ref());
    let env = &answer.body["env"];
    assert_eq!(env["SHS_FUNCTION"], "echo");
    assert_eq!(env["SHS_URL"], server.url.as_str());
    assert_eq!(env["GREETING"], "hi");
    assert!(env["PATH"].is_string());
    assert!(env.get("SECRET_OF_THE_SUPERVISOR").is_none(), "{env}");
    server.stop_and_check();
}

#[tokio::test]
async fn inherit_env_passes_the_supervisor_environment_on() {
    let mut server = ServerBuilder::new()
        .fixture("echo")
        .env("SECRET_OF_THE_SUPERVISOR", "shared on purpose")
        .args(&["--inherit-env"])
        .start()
        .await;
    let answer = server.run("echo", json!({})).await;
    assert_eq!(
        answer.body["env"]["SECRET_OF_THE_SUPERVISOR"],
        "shared on purpose"
    );
    server.stop_and_check();
}

#[tokio::test]
async fn at_concurrency_one_only_answers_are_written_while_a_request_is_out() {
    // strict publishes during each invoke and takes the very next line as the answer: an
    // interleaved request would break it. Twenty requests at once over one process.
    let mut server = ServerBuilder::new()
        .fixture("strict")
        .toml("strict", "instances = 1\n")
        .start()
        .await;
    let answers = futures::future::join_all((0..20).map(|_| server.run("strict", json!({})))).await;
    let pids: std::collections::BTreeSet<u64> = answers
        .iter()
        .map(|a| {
            assert_eq!(a.status, 200, "{a:?}");
            a.body["pid"].as_u64().expect("pid")
        })
        .collect();
    assert_eq!(pids.len(), 1, "one process served them all");
    server.stop_and_check();
}

#[tokio::test]
async fn with_concurrency_n_a_process_gets_n_requests_at_once() {
    // concurrent answers only once 4 invokes are in flight at the same time.
    let mut server = ServerBuilder::new().fixture("concurrent").start().await;
    let answers =
        futures::future::join_all((0..4).map(|_| server.run("concurrent", json!({})))).await;
    let pids: std::collections::BTreeSet<u64> = answers
        .iter()
        .map(|a| {
            assert_eq!(a.status, 200, "{a:?}");
            a.body["pid"].as_u64().expect("pid")
        })
        .collect();
    assert_eq!(pids.len(), 1, "instances = 1: one process took all four");
    server.stop_and_check();
}

/// A Python function that makes raw requests of its own, with the ids and methods the test
/// chooses, and answers the invoke with the answers it got.
const RAW_CALLER: &str = r#"
import json, sys

def send(m):
    sys.stdout.write(json.dumps(m) + "\n"); sys.stdout.flush()

for line in sys.stdin:
    m = json.loads(line)
    if m.get("method") == "initialize":
        send({"jsonrpc": "2.0", "id": m["id"], "result": {}})
    elif m.get("method") == "invoke":
        got = []
        for request in m["params"]["input"]["requests"]:
            send(request)
            got.append(json.loads(sys.stdin.readline()))
        send({"jsonrpc": "2.0", "id": m["id"], "result": got})
"#;

#[tokio::test]
async fn a_function_gets_answers_to_its_own_requests_with_its_own_ids() {
    let mut server = ServerBuilder::new()
        .file("raw", "main.py", RAW_CALLER)
        .start()
        .await;
    let requests = json!([
        {"jsonrpc": "2.0", "id": 7, "method": "subscribe", "params": {"type": "raw.int"}},
        {"jsonrpc": "2.0", "id": "s-1", "method": "unsubscribe", "params": {"type": "raw.int"}},
        {"jsonrpc": "2.0", "id": 8, "method": "frobnicate", "params": {}},
        {"jsonrpc": "2.0", "id": 9, "method": "publish", "params": {"payload": 1}},
        {"jsonrpc": "2.0", "id": 10, "method": "subscribe", "params": {"type": "bad type"}},
        {"jsonrpc": "2.0", "id": 11, "method": "publish", "params": {"type": "raw.nobody", "data": [1]}},
    ]);
    let answer = server.run("raw", json!({"requests": requests})).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    let got = answer.body.as_array().expect("answers");
    assert_eq!(
        got[0],
        json!({"jsonrpc": "2.0", "id": 7, "result": {"subscribed": true, "type": "raw.int"}})
    );
    assert_eq!(
        got[1],
        json!({"jsonrpc": "2.0", "id": "s-1", "result": {"unsubscribed": true, "type": "raw.int"}})
    );
    assert_eq!(got[2]["id"], 8);
    assert_eq!(
        got[2]["error"]["code"], -32601,
        "unknown method: {}",
        got[2]
    );
    assert_eq!(got[3]["id"], 9);
    assert_eq!(
        got[3]["error"]["code"], -32602,
        "publish without a type: {}",
        got[3]
    );
    assert_eq!(
        got[4]["error"]["code"], -32602,
        "an invalid type: {}",
        got[4]
    );
    assert!(
        got[4]["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("whitespace")),
        "{}",
        got[4]
    );
    assert_eq!(got[5]["id"], 11);
    assert_eq!(got[5]["result"]["published"], true);
    assert_eq!(got[5]["result"]["delivered"], 0);
    assert_eq!(got[5]["result"]["errors"], json!([]));
    server.stop_and_check();
}
