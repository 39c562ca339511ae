//! Many functions: at start-up only the functions that need a process are started (those
//! with subscriptions or `min_instances`); a function that has never run is started once to
//! learn the subscriptions its start-up code makes, then stopped if it needs none; what was
//! learned is kept in the store, so that after a restart nothing needless starts. The rest
//! start on their first request. (The 1,000-function figures are in `scripts/bench`.)

use serde_json::json;

use crate::harness::{Server, ServerBuilder, poll};

/// How many plain functions the tests deploy (the benchmark deploys 1,000).
const PLAIN: usize = 24;

fn builder() -> ServerBuilder {
    let mut builder = ServerBuilder::new();
    for i in 0..PLAIN {
        builder = builder.fixture_as("echo", &format!("plain-{i:02}"));
    }
    builder
        // Subscribes in its start-up code (the answer to initialize): needs a process.
        .fixture_as("relay", "listener")
        .toml("listener", "env = { ON = \"scale.ping\" }\n")
        // The same, but with `min_instances = 0`: learned once, then never kept running.
        .fixture_as("relay", "lazy")
        .toml("lazy", "min_instances = 0\nenv = { ON = \"scale.lazy\" }\n")
        // Kept running by its function.toml.
        .fixture_as("echo", "kept")
        .toml("kept", "min_instances = 1\n")
}

/// The names of the functions with a live process.
async fn running(server: &Server) -> Vec<String> {
    let list = server.get("/functions").await;
    let mut names: Vec<String> = list.body["functions"]
        .as_array()
        .expect("functions")
        .iter()
        .filter(|f| f["processes"].as_u64().unwrap_or(0) > 0)
        .map(|f| f["name"].as_str().unwrap_or_default().to_owned())
        .collect();
    names.sort();
    names
}

#[tokio::test]
async fn only_what_needs_a_process_runs_and_the_rest_is_served_on_first_call() {
    let mut server = builder().start().await;
    server.wait_ready().await;
    // First start: everything ran once (to learn), and what needs nothing was stopped again.
    assert!(
        poll(|| async { running(&server).await == ["kept", "listener"] }).await,
        "only kept and listener run: {:?}\nlog:\n{}",
        running(&server).await,
        server.logs()
    );
    let subscriptions = server.subscriptions().await;
    assert!(
        subscriptions.contains(&("scale.lazy".to_owned(), "lazy".to_owned())),
        "{subscriptions:?}"
    );

    // After a restart, nothing needless is even started.
    server.restart();
    server.wait_ready().await;
    let logs = server.logs();
    let since = logs.split("--- restart ---").nth(1).unwrap_or_default();
    assert!(since.contains("not started at deploy"), "{since}");
    assert!(
        !since.contains("function=\"plain-") || !since.contains("process ready function=\"plain-"),
        "no plain function started: {since}"
    );
    assert!(
        poll(|| async { running(&server).await == ["kept", "listener"] }).await,
        "{:?}",
        running(&server).await
    );
    let list = server.get("/functions").await;
    for f in list.body["functions"].as_array().expect("functions") {
        if f["name"].as_str().is_some_and(|n| n.starts_with("plain-")) {
            assert_eq!(f["state"], "idle", "{f}");
            assert_eq!(f["cold_starts"], 0, "never started since the restart: {f}");
        }
    }
    // The learned start-up subscription of lazy is in force with no process: an event
    // starts one.
    let subscriptions = server.subscriptions().await;
    assert!(
        subscriptions.contains(&("scale.lazy".to_owned(), "lazy".to_owned())),
        "kept over the restart: {subscriptions:?}"
    );
    let published = server.publish("scale.lazy", json!({"n": 1})).await;
    assert_eq!(published.body["delivered"], 1, "{published:?}");
    // A plain function is served on its first call: a cold start.
    let answer = server.run("plain-07", json!({"x": 7})).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(answer.body["input"], json!({"x": 7}), "{answer:?}");
    let info = server.function_info("plain-07").await.expect("listed");
    assert_eq!(info["cold_starts"], 1, "{info}");
    server.stop_and_check();
}

#[tokio::test]
async fn a_changed_function_is_learned_again_after_a_restart() {
    let mut server = ServerBuilder::new()
        .fixture_as("relay", "grows")
        .start()
        .await;
    server.wait_ready().await;
    assert!(
        poll(|| async { running(&server).await.is_empty() }).await,
        "no subscriptions: stopped once learned"
    );
    server.stop();
    // While the server is down, the function starts subscribing at start-up.
    crate::harness::write_file(
        &server.functions_dir().join("grows"),
        "function.toml",
        "env = { ON = \"scale.grown\" }\n",
    );
    server.restart();
    server.wait_ready().await;
    // Its deployment changed: it ran again, learned the subscription, and stays up for it.
    assert!(
        poll(|| async { running(&server).await == ["grows"] }).await,
        "{:?}\nlog:\n{}",
        running(&server).await,
        server.logs()
    );
    let published = server.publish("scale.grown", json!({})).await;
    assert_eq!(published.body["delivered"], 1, "{published:?}");
    server.stop_and_check();
}
