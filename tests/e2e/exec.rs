//! Mode exec: one process per request.

use serde_json::json;

use crate::harness::{ServerBuilder, poll};

#[tokio::test]
async fn the_body_goes_to_stdin_and_stdout_comes_back() {
    let mut server = ServerBuilder::new().fixture("exec-cat").start().await;
    let body = r#"{"hello": "exec", "list": [1, 2, 3]}"#;
    let answer = server.post("/run/exec-cat", body).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(answer.body, json!({"hello": "exec", "list": [1, 2, 3]}));
    assert_eq!(answer.header("content-type"), Some("application/json"));
    let empty = server.post("/run/exec-cat", "").await;
    assert_eq!(empty.body, json!({}), "an empty body is {{}}");
    server.stop_and_check();
}

#[tokio::test]
async fn output_that_is_not_json_is_text() {
    let mut server = ServerBuilder::new()
        .file("words", "main.sh", "cat > /dev/null; echo 'plain words'\n")
        .toml("words", "mode = \"exec\"\n")
        .start()
        .await;
    let answer = server.post("/run/words", "{}").await;
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(answer.body, json!("plain words\n"));
    assert_eq!(
        answer.header("content-type"),
        Some("text/plain; charset=utf-8")
    );
    server.stop_and_check();
}

#[tokio::test]
async fn a_non_zero_exit_is_500_with_the_tail_of_stderr() {
    let mut server = ServerBuilder::new().fixture("exec-fail").start().await;
    let answer = server.post("/run/exec-fail", "{}").await;
    assert_eq!(answer.status, 500, "{answer:?}");
    assert!(
        answer.message().contains("exited with status 3"),
        "{}",
        answer.message()
    );
    assert_eq!(
        answer.body["error"]["stderr"],
        json!([
            "first line of the complaint",
            "the input was not to my liking"
        ])
    );
    server.stop_and_check();
}

#[tokio::test]
async fn past_its_timeout_it_is_504_and_killed_with_its_helpers() {
    let mut server = ServerBuilder::new()
        .fixture("exec-sleep")
        .fixture("exec-cat")
        .start()
        .await;
    let (slow, quick) = tokio::join!(
        server.post("/run/exec-sleep", "{}"),
        server.post("/run/exec-cat", "[1]")
    );
    assert_eq!(slow.status, 504, "{slow:?}");
    assert!(
        slow.message().contains("did not answer within 1s"),
        "{}",
        slow.message()
    );
    assert_eq!(quick.status, 200, "{quick:?}");
    // The script and the `sleep` it started in the background are both gone.
    assert!(
        poll(|| async { server.function_pids().is_empty() }).await,
        "left running: {:?}",
        server.function_pids()
    );
    server.stop_and_check();
}

#[tokio::test]
async fn each_request_is_its_own_process() {
    let mut server = ServerBuilder::new()
        .file("pid", "main.sh", "cat > /dev/null; echo $$\n")
        .toml("pid", "mode = \"exec\"\n")
        .start()
        .await;
    let a = server.post("/run/pid", "{}").await;
    let b = server.post("/run/pid", "{}").await;
    assert_eq!((a.status, b.status), (200, 200));
    assert_ne!(a.body, b.body, "two processes");
    server.stop_and_check();
}
