//! Declared concurrency: a function's answer to `initialize` may say how many requests a
//! process takes at once (`concurrency`) and how many processes it wants at most
//! (`instances`); `function.toml` wins; a declaration that is not a whole number in bounds is
//! refused with a clear error on the function, which keeps serving.

use serde_json::{Value, json};

use crate::harness::{Server, ServerBuilder};

/// Runs `n` invokes of `name` at once, each waiting for `wait_for` in flight in its process
/// and holding `hold` seconds.
async fn together(server: &Server, name: &str, n: usize, wait_for: usize, hold: f64) -> Vec<Value> {
    let answers = futures::future::join_all(
        (0..n).map(|_| server.run(name, json!({"n": wait_for, "hold": hold}))),
    )
    .await;
    answers
        .into_iter()
        .map(|a| {
            assert_eq!(a.status, 200, "{a:?}\nlog:\n{}", server.logs());
            a.body
        })
        .collect()
}

#[tokio::test]
async fn a_declared_concurrency_is_in_force_without_function_toml() {
    let mut server = ServerBuilder::new()
        .fixture_as("declare", "wide")
        .file(
            "wide",
            "declare.json",
            r#"{"concurrency": 4, "instances": 1}"#,
        )
        .fixture_as("declare", "plain")
        .start()
        .await;
    server.wait_ready().await;
    // Four requests meet in one process: it was sent four at once.
    let answers = together(&server, "wide", 4, 4, 0.0).await;
    assert!(
        answers.iter().all(|a| a["pid"] == answers[0]["pid"]),
        "{answers:?}"
    );
    assert!(answers.iter().all(|a| a["peak"] == 4), "{answers:?}");
    let info = server.function_info("wide").await.expect("listed");
    assert_eq!(info["concurrency"], 4, "{info}");
    assert_eq!(info["concurrency_source"], "declared", "{info}");
    assert_eq!(info["instances"], 1, "{info}");
    assert_eq!(info["instances_source"], "declared", "{info}");
    assert!(
        info.get("note").is_none() && info.get("declaration_error").is_none(),
        "{info}"
    );
    // A function that declares nothing has the defaults.
    assert_eq!(server.run("plain", json!({})).await.status, 200);
    let info = server.function_info("plain").await.expect("listed");
    assert_eq!(
        json!([
            info["concurrency"],
            info["concurrency_source"],
            info["instances"],
            info["instances_source"]
        ]),
        json!([1, "default", 4, "default"]),
        "{info}"
    );
    // The detail page shows the same.
    let detail = server.get("/functions/wide").await;
    assert_eq!(detail.body["concurrency_source"], "declared", "{detail:?}");
    assert_eq!(detail.body["config"]["concurrency"], 4, "{detail:?}");
    server.stop_and_check();
}

#[tokio::test]
async fn function_toml_wins_over_a_declaration() {
    let mut server = ServerBuilder::new()
        .fixture_as("declare", "held")
        .file(
            "held",
            "declare.json",
            r#"{"concurrency": 4, "instances": 3}"#,
        )
        .toml("held", "concurrency = 1\ninstances = 1\n")
        .start()
        .await;
    server.wait_ready().await;
    // Three requests at once, each holding its process a while: one process, one at a time.
    let answers = together(&server, "held", 3, 1, 0.2).await;
    assert!(
        answers.iter().all(|a| a["peak"] == 1),
        "one at a time: {answers:?}"
    );
    assert!(
        answers.iter().all(|a| a["pid"] == answers[0]["pid"]),
        "{answers:?}"
    );
    let info = server.function_info("held").await.expect("listed");
    assert_eq!(
        json!([
            info["concurrency"],
            info["concurrency_source"],
            info["instances"],
            info["instances_source"]
        ]),
        json!([1, "function.toml", 1, "function.toml"]),
        "{info}"
    );
    let note = info["note"].as_str().unwrap_or_default();
    assert!(
        note.contains("declared `concurrency` 4; function.toml's 1 is in force")
            && note.contains("declared `instances` 3; function.toml's 1 is in force"),
        "{info}"
    );
    server.stop_and_check();
}

#[tokio::test]
async fn an_invalid_declaration_is_a_clear_error_and_the_function_keeps_serving() {
    let cases = [
        (
            r#"{"concurrency": 0}"#,
            "`concurrency` declared in the answer to initialize must be from 1 to 65536, not 0",
        ),
        (
            r#"{"concurrency": 65537}"#,
            "must be from 1 to 65536, not 65537",
        ),
        (
            r#"{"concurrency": -1}"#,
            "must be a whole number from 1 to 65536, not -1",
        ),
        (
            r#"{"concurrency": 2.5}"#,
            "must be a whole number from 1 to 65536, not 2.5",
        ),
        (
            r#"{"concurrency": "16"}"#,
            r#"must be a whole number from 1 to 65536, not "16""#,
        ),
        (
            r#"{"concurrency": 99999999999999999999999}"#,
            "must be a whole number",
        ),
        (
            r#"{"instances": 4097}"#,
            "`instances` declared in the answer to initialize must be from 1 to 4096, not 4097",
        ),
        (
            r#"{"instances": [2]}"#,
            "`instances` declared in the answer to initialize must be a whole number",
        ),
    ];
    let mut builder = ServerBuilder::new().fixture("echo");
    for (i, (declaration, _)) in cases.iter().enumerate() {
        let name = format!("bad{i}");
        builder = builder
            .fixture_as("declare", &name)
            .file(&name, "declare.json", declaration);
    }
    let mut server = builder.start().await;
    server.wait_ready().await;
    for (i, (declaration, message)) in cases.iter().enumerate() {
        let name = format!("bad{i}");
        // Served at the setting it had: the defaults.
        let answers = together(&server, &name, 2, 1, 0.0).await;
        assert_eq!(answers.len(), 2, "{declaration}");
        let info = server.function_info(&name).await.expect("listed");
        let error = info["declaration_error"].as_str().unwrap_or_default();
        assert!(error.contains(message), "{declaration}: {info}");
        assert_eq!(info["state"], "ready", "{declaration}: {info}");
        assert_eq!(info["concurrency"], 1, "{declaration}: {info}");
        assert_eq!(
            info["concurrency_source"], "default",
            "{declaration}: {info}"
        );
        assert_eq!(info["instances"], 4, "{declaration}: {info}");
        // The function's own log says it too.
        let logs = server.get(&format!("/functions/{name}/logs")).await;
        assert!(
            logs.body
                .to_string()
                .contains("declared in the answer to initialize"),
            "{logs:?}"
        );
    }
    // Everyone else is served.
    assert_eq!(server.run("echo", json!({"x": 1})).await.status, 200);
    server.stop_and_check();
}
