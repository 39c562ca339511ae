//! Operating shs: function logs, request ids and trace context, access control, rate limits,
//! CORS and metrics.

use serde_json::json;

use crate::harness::{ServerBuilder, poll};

#[tokio::test]
async fn a_functions_recent_log_lines_can_be_read_and_followed() {
    let mut server = ServerBuilder::new()
        .fixture("echo")
        .fixture("crash")
        .start()
        .await;
    server.wait_ready().await;
    let answer = server
        .request(
            reqwest::Method::POST,
            "/run/echo",
            Some("{}".into()),
            &[("x-request-id", "logs-1")],
        )
        .await;
    assert_eq!(answer.status, 200);
    let logs = || async { server.get("/functions/echo/logs?tail=50").await };
    assert!(
        poll(|| async {
            logs().await.body["lines"]
                .as_array()
                .is_some_and(|l| l.iter().any(|x| x["message"] == "echo got a request"))
        })
        .await
    );
    let answer = logs().await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.body["function"], "echo");
    let lines = answer.body["lines"].as_array().expect("lines").clone();
    let line = lines
        .iter()
        .find(|l| l["message"] == "echo got a request")
        .expect("logged");
    assert_eq!(line["stream"], "stderr");
    assert_eq!(line["request_id"], "logs-1");
    assert!(line["pid"].as_u64().is_some_and(|p| p > 0));
    assert!(line["time"].is_string());
    assert!(
        lines.iter().any(|l| l["stream"] == "shs"
            && l["message"].as_str().is_some_and(|m| m.contains("started")))
    );
    let last = lines.last().and_then(|l| l["seq"].as_u64()).expect("seq");

    // Following: only what comes after.
    assert_eq!(
        server
            .get(&format!("/functions/echo/logs?after={last}"))
            .await
            .body["lines"],
        json!([])
    );
    server.run("echo", json!({})).await;
    assert!(
        poll(|| async {
            server
                .get(&format!("/functions/echo/logs?after={last}"))
                .await
                .body["lines"]
                .as_array()
                .is_some_and(|l| !l.is_empty())
        })
        .await
    );
    // A crash shows in its function's log.
    server.run("crash", json!({"crash": true})).await;
    assert!(
        poll(|| async {
            server.get("/functions/crash/logs").await.body["lines"]
                .as_array()
                .is_some_and(|l| {
                    l.iter().any(|x| {
                        x["message"]
                            .as_str()
                            .is_some_and(|m| m.contains("exited with status 3"))
                    })
                })
        })
        .await
    );
    assert_eq!(server.get("/functions/nope/logs").await.status, 404);
    assert_eq!(server.get("/functions/bad.name/logs").await.status, 400);
    server.stop_and_check();
}
