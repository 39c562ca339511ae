//! `POST /run/{name}` and every status it can answer with.

use serde_json::json;

use crate::harness::{ServerBuilder, alive};

#[tokio::test]
async fn invokes_functions_in_python_node_and_sh() {
    let mut server = ServerBuilder::new()
        .fixture("echo")
        .fixture("echo-node")
        .fixture("echo-sh")
        .start()
        .await;
    server.wait_ready().await;

    let py = server
        .run("echo", json!({"name": "Ada", "n": [1, 2.5, null]}))
        .await;
    assert_eq!(py.status, 200, "{py:?}");
    assert_eq!(
        py.body["input"],
        json!({"name": "Ada", "n": [1, 2.5, null]})
    );
    assert_eq!(py.header("content-type"), Some("application/json"));

    let node = server.run("echo-node", json!({"x": "y"})).await;
    assert_eq!(node.status, 200, "{node:?}");
    assert_eq!(node.body["input"], json!({"x": "y"}));
    assert_eq!(node.body["runtime"], "node");

    let sh = server.run("echo-sh", json!({})).await;
    assert_eq!(sh.status, 200, "{sh:?}");
    assert_eq!(sh.body["hello"], "from sh");
    server.stop_and_check();
}

#[tokio::test]
async fn the_input_and_context_reach_the_function() {
    let mut server = ServerBuilder::new().fixture("echo").start().await;
    let answer = server
        .request(
            reqwest::Method::POST,
            "/run/echo",
            Some(
                r#"{ "pretty" :
                    [1, "two\nlines"] }"#
                    .to_owned(),
            ),
            &[("x-request-id", "req-42")],
        )
        .await;
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(
        answer.body["input"],
        json!({"pretty": [1, "two\nlines"]}),
        "multi-line JSON arrives whole"
    );
    assert_eq!(
        answer.body["context"],
        json!({"request_id": "req-42", "function": "echo"})
    );
    assert_eq!(answer.header("x-request-id"), Some("req-42"));

    let generated = server.run("echo", json!({})).await;
    let id = generated.body["context"]["request_id"]
        .as_str()
        .expect("a request id");
    assert_eq!(id.len(), 32, "one is made up when none is given: {id}");
    assert_eq!(generated.header("x-request-id"), Some(id));
    server.stop_and_check();
}

#[tokio::test]
async fn an_empty_body_is_an_empty_object() {
    let mut server = ServerBuilder::new().fixture("echo").start().await;
    let answer = server.post("/run/echo", "").await;
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(answer.body["input"], json!({}));
    server.stop_and_check();
}

#[tokio::test]
async fn any_json_is_an_input() {
    let mut server = ServerBuilder::new().fixture("echo").start().await;
    for input in [
        json!(null),
        json!(7),
        json!("text"),
        json!([1, {"a": true}]),
        json!({"deep": {"er": [[]]}}),
    ] {
        let answer = server.run("echo", input.clone()).await;
        assert_eq!(answer.status, 200, "{answer:?}");
        assert_eq!(answer.body["input"], input);
    }
    server.stop_and_check();
}

#[tokio::test]
async fn a_body_that_says_json_and_is_not_is_400() {
    let mut server = ServerBuilder::new().fixture("echo").start().await;
    for body in ["{bad", "hello", "{\"a\":1} trailing", "[1,2"] {
        let answer = server
            .request(
                reqwest::Method::POST,
                "/run/echo",
                Some(body.to_owned()),
                &[("content-type", "application/json")],
            )
            .await;
        assert_eq!(answer.status, 400, "{body}: {answer:?}");
        assert!(
            answer.message().contains("not valid JSON"),
            "{}",
            answer.message()
        );
        // Without a Content-Type, a body that is not JSON is no error: its input is null.
        let answer = server.post("/run/echo", body).await;
        assert_eq!(answer.status, 200, "{body}: {answer:?}");
        assert_eq!(answer.body["input"], serde_json::Value::Null);
    }
    // The function was never bothered, and still works.
    assert_eq!(server.run("echo", json!({})).await.status, 200);
    server.stop_and_check();
}

#[tokio::test]
async fn a_malformed_name_is_400_and_an_unknown_one_404() {
    let mut server = ServerBuilder::new().fixture("echo").start().await;
    for name in ["bad.name", "a%20b", "%C3%BC", &"x".repeat(65)] {
        let answer = server.post(&format!("/run/{name}"), "{}").await;
        assert_eq!(answer.status, 400, "{name}: {answer:?}");
        assert!(
            answer.message().contains("invalid function name"),
            "{}",
            answer.message()
        );
    }
    // No name: no such function (404), and the message says how to name one.
    let answer = server.post("/run/", "{}").await;
    assert_eq!(answer.status, 404, "no name: {answer:?}");
    assert_eq!(answer.message(), "no function name: use POST /run/{name}");
    let answer = server.post(&format!("/run/{}", "x".repeat(64)), "{}").await;
    assert_eq!(
        answer.status, 404,
        "64 characters is a valid name: {answer:?}"
    );
    let answer = server.post("/run/nope", "{}").await;
    assert_eq!(answer.status, 404);
    assert_eq!(answer.message(), "no function named \"nope\"");
    assert_eq!(answer.body["error"]["function"], "nope");
    server.stop_and_check();
}

#[tokio::test]
async fn a_body_over_the_limit_is_413() {
    let mut server = ServerBuilder::new()
        .fixture("echo")
        .args(&["--max-body", "1000"])
        .start()
        .await;
    let big = format!("{{\"blob\": \"{}\"}}", "x".repeat(2000));
    let answer = server.post("/run/echo", &big).await;
    assert_eq!(answer.status, 413, "{answer:?}");
    assert!(
        answer.message().contains("limit is 1000 bytes"),
        "{}",
        answer.message()
    );
    let answer = server
        .post(
            "/events",
            &format!("{{\"type\":\"a\",\"payload\":\"{}\"}}", "x".repeat(2000)),
        )
        .await;
    assert_eq!(answer.status, 413, "{answer:?}");
    let small = format!("{{\"blob\": \"{}\"}}", "x".repeat(900));
    assert_eq!(server.post("/run/echo", &small).await.status, 200);
    server.stop_and_check();
}

#[tokio::test]
async fn a_function_error_is_500_with_its_message_and_data() {
    let mut server = ServerBuilder::new().fixture("fail").start().await;
    let answer = server.run("fail", json!({"k": 1})).await;
    assert_eq!(answer.status, 500, "{answer:?}");
    assert_eq!(answer.message(), "boom");
    assert_eq!(answer.body["error"]["code"], 42);
    assert_eq!(
        answer.body["error"]["data"],
        json!({"why": "asked to", "input": {"k": 1}})
    );
    assert_eq!(answer.body["error"]["function"], "fail");
    // An error is an answer: the process lives on.
    let again = server.run("fail", json!({})).await;
    assert_eq!(again.status, 500);
    server.stop_and_check();
}

#[tokio::test]
async fn a_crash_mid_request_is_502_and_the_next_request_gets_a_fresh_process() {
    let mut server = ServerBuilder::new()
        .fixture("crash")
        .fixture("echo")
        .start()
        .await;
    let first = server.run("crash", json!({})).await;
    assert_eq!(first.status, 200, "{first:?}");
    let first_pid = first.body["pid"].as_u64().expect("pid");

    let crashed = server.run("crash", json!({"crash": true})).await;
    assert_eq!(crashed.status, 502, "{crashed:?}");
    assert!(
        crashed.message().contains("exited with status 3"),
        "{}",
        crashed.message()
    );
    assert_eq!(
        crashed.body["error"]["stderr"],
        json!(["about to crash on purpose"])
    );

    let next = server.run("crash", json!({})).await;
    assert_eq!(next.status, 200, "{next:?}");
    assert_ne!(
        next.body["pid"].as_u64(),
        Some(first_pid),
        "a fresh process"
    );
    // Everyone else was served throughout.
    assert_eq!(server.run("echo", json!({})).await.status, 200);
    server.stop_and_check();
}

#[tokio::test]
async fn a_timeout_is_504_and_the_process_is_killed() {
    let mut server = ServerBuilder::new()
        .fixture("hang")
        .toml("hang", "timeout = 1\nstart_timeout = 20\n")
        .fixture("echo")
        .start()
        .await;
    let warm = server.run("hang", json!({"sleep": 0})).await;
    assert_eq!(warm.status, 200, "{warm:?}");
    let pid = u32::try_from(warm.body["pid"].as_u64().expect("pid")).expect("pid fits");

    let (hung, other) = tokio::join!(server.run("hang", json!({})), server.run("echo", json!({})));
    assert_eq!(hung.status, 504, "{hung:?}");
    assert!(
        hung.message().contains("did not answer within 1s"),
        "{}",
        hung.message()
    );
    assert_eq!(other.status, 200, "other functions are served meanwhile");
    assert!(
        crate::harness::poll(|| async { !alive(pid) }).await,
        "the hung process {pid} was killed"
    );
    let next = server.run("hang", json!({"sleep": 0})).await;
    assert_eq!(next.status, 200, "{next:?}");
    assert_ne!(
        next.body["pid"].as_u64(),
        Some(u64::from(pid)),
        "a fresh process"
    );
    server.stop_and_check();
}

#[tokio::test]
async fn a_function_that_exits_at_start_is_503_with_its_stderr() {
    let mut server = ServerBuilder::new()
        .fixture("exit-at-start")
        .fixture("echo")
        .start()
        .await;
    server.wait_ready().await;
    let answer = server.run("exit-at-start", json!({})).await;
    assert_eq!(answer.status, 503, "{answer:?}");
    assert!(
        answer.message().contains("could not start"),
        "{}",
        answer.message()
    );
    assert!(
        answer.message().contains("exited with status 1"),
        "{}",
        answer.message()
    );
    assert_eq!(
        answer.body["error"]["stderr"],
        json!(["cannot start: the configuration file is missing"])
    );
    let info = server.function_info("exit-at-start").await.expect("listed");
    assert!(
        info["state"] == "failed" || info["state"] == "backing_off",
        "{info}"
    );
    assert_eq!(server.run("echo", json!({})).await.status, 200);
    server.stop_and_check();
}

#[tokio::test]
async fn a_function_that_never_answers_initialize_is_503() {
    let mut server = ServerBuilder::new()
        .fixture("silent-start")
        .toml("silent-start", "timeout = 1\n")
        .start()
        .await;
    let answer = server.run("silent-start", json!({})).await;
    assert_eq!(answer.status, 503, "{answer:?}");
    assert!(
        answer
            .message()
            .contains("did not answer initialize within 1s"),
        "{}",
        answer.message()
    );
    server.stop_and_check();
}

#[tokio::test]
async fn an_answer_to_nobody_and_non_json_lines_are_logged_and_ignored() {
    let mut server = ServerBuilder::new().fixture("noisy").start().await;
    let answer = server.run("noisy", json!({})).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(answer.body, json!({"ok": true}));
    server
        .wait_for_log("ignoring an answer with an id nobody asked for")
        .await;
    server.wait_for_log("this is not JSON").await;
    let logs = server.logs();
    assert!(logs.contains("WARN"), "{logs}");
    assert!(logs.contains("not a JSON-RPC message"), "{logs}");
    // The process was not disturbed.
    assert_eq!(server.run("noisy", json!({})).await.status, 200);
    server.stop_and_check();
}

#[tokio::test]
async fn an_over_long_stdout_line_is_502_and_the_process_replaced() {
    let mut server = ServerBuilder::new()
        .fixture("big-line")
        .args(&["--max-line", "64KiB"])
        .start()
        .await;
    let ok = server.run("big-line", json!({"size": 1000})).await;
    assert_eq!(ok.status, 200);
    let answer = server.run("big-line", json!({"size": 200_000})).await;
    assert_eq!(answer.status, 502, "{answer:?}");
    assert!(
        answer.message().contains("longer than 65536 bytes"),
        "{}",
        answer.message()
    );
    assert_eq!(
        server.run("big-line", json!({"size": 10})).await.status,
        200
    );
    server.stop_and_check();
}

#[tokio::test]
async fn at_capacity_is_503_with_retry_after() {
    let mut server = ServerBuilder::new()
        .fixture("hang")
        .toml("hang", "instances = 1\nqueue = 0\ntimeout = 20\n")
        .start()
        .await;
    server.wait_ready().await;
    let busy = server.run("hang", json!({"sleep": 2}));
    let refused = async {
        // Once the first request holds the only process, the second has nowhere to go.
        server.wait_for_log("hang: sleeping for 2 s").await;
        server.run("hang", json!({"sleep": 0})).await
    };
    let (busy, refused) = tokio::join!(busy, refused);
    assert_eq!(busy.status, 200, "{busy:?}");
    assert_eq!(refused.status, 503, "{refused:?}");
    assert!(
        refused.message().contains("at capacity"),
        "{}",
        refused.message()
    );
    assert_eq!(refused.header("retry-after"), Some("1"));
    server.stop_and_check();
}

#[tokio::test]
async fn unknown_routes_and_methods_answer_json() {
    let mut server = ServerBuilder::new().start().await;
    let answer = server.get("/nothing/here").await;
    assert_eq!(answer.status, 404);
    assert!(answer.message().contains("no route for GET /nothing/here"));
    let answer = server
        .request(reqwest::Method::TRACE, "/run/echo", None, &[])
        .await;
    assert_eq!(answer.status, 405);
    assert_eq!(
        answer.header("allow"),
        Some("GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS")
    );
    let answer = server.post("/functions", "").await;
    assert_eq!(answer.status, 405);
    server.stop_and_check();
}

#[tokio::test]
async fn a_request_queued_behind_a_timed_out_one_gets_a_fresh_process() {
    let mut server = ServerBuilder::new()
        .fixture("hang")
        .toml("hang", "instances = 1\ntimeout = 1\nstart_timeout = 20\n")
        .start()
        .await;
    server.wait_ready().await;
    let first = server.run("hang", json!({}));
    let second = async {
        server.wait_for_log("hang: sleeping for ever").await;
        server.run("hang", json!({"sleep": 0})).await
    };
    let (first, second) = tokio::join!(first, second);
    assert_eq!(first.status, 504, "{first:?}");
    assert_eq!(
        second.status, 200,
        "the queued request is not sent to the dying process: {second:?}"
    );
    server.stop_and_check();
}

/// Answers invoke with what the test asks for, as a raw line.
const RAW_ANSWERER: &str = r#"
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("method") == "initialize":
        print(json.dumps({"jsonrpc": "2.0", "id": m["id"], "result": {}}), flush=True)
    elif m.get("method") == "invoke":
        raw = m["params"]["input"]["raw"].replace("ID", str(m["id"]))
        print(raw, flush=True)
        if "then" in m["params"]["input"]:
            # A request of its own, followed by reading the answer, then a proper answer.
            print(m["params"]["input"]["then"], flush=True)
            got = sys.stdin.readline()
            print(json.dumps({"jsonrpc": "2.0", "id": m["id"], "result": json.loads(got)}), flush=True)
"#;

#[tokio::test]
async fn a_malformed_answer_is_502_at_once_and_a_malformed_request_is_answered() {
    let mut server = ServerBuilder::new()
        .file("raw", "main.py", RAW_ANSWERER)
        .toml("raw", "timeout = 60\n")
        .start()
        .await;
    let answer = server
        .run(
            "raw",
            json!({"raw": "{\"jsonrpc\": \"2.0\", \"id\": ID, \"error\": \"not an object\"}"}),
        )
        .await;
    assert_eq!(answer.status, 502, "{answer:?}");
    assert!(
        answer.message().contains("malformed"),
        "{}",
        answer.message()
    );

    let answer = server
        .run(
            "raw",
            json!({"raw": "", "then": "{\"jsonrpc\": \"1.0\", \"id\": 5, \"method\": \"publish\", \"params\": {}}"}),
        )
        .await;
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(answer.body["id"], 5);
    assert_eq!(answer.body["error"]["code"], -32600, "{answer:?}");
    server.stop_and_check();
}
