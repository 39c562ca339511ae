//! Chain-aware prewarming: when a function runs, the functions down its known chains (the
//! types it publishes, declared with `publishes` or seen, and who subscribes to them) that
//! have no process get one at once; bounded by `--prewarm-budget` starts a second, and
//! nothing for a function that takes nothing of the chain.

use serde_json::{Value, json};

use crate::harness::{Server, ServerBuilder, poll};

/// A step of a chain on the relay fixture: subscribed to `on`, publishing `next`, kept at zero
/// processes when idle.
fn step(builder: ServerBuilder, name: &str, on: &str, next: &str, extra: &str) -> ServerBuilder {
    builder.fixture_as("relay", name).toml(
        name,
        &format!("min_instances = 0\nidle_timeout = 0.3\n{extra}env = {{ ON = \"{on}\", NEXT = \"{next}\" }}\n"),
    )
}

async fn info(server: &Server, name: &str) -> Value {
    server.function_info(name).await.expect("listed")
}

async fn at_zero(server: &Server, names: &[&str]) -> bool {
    for name in names {
        if info(server, name).await["processes"] != 0 {
            return false;
        }
    }
    true
}

/// `shs_prewarms_total` of `function`, from `/metrics`.
async fn prewarms(server: &Server, function: &str) -> u64 {
    let text = server
        .get("/metrics")
        .await
        .body
        .as_str()
        .unwrap_or_default()
        .to_owned();
    text.lines()
        .filter(|l| {
            l.starts_with("shs_prewarms_total{") && l.contains(&format!("function=\"{function}\""))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

#[tokio::test]
async fn a_declared_chain_is_started_ahead_when_its_first_step_runs() {
    // step1 answers without publishing, but declares that it publishes chain.one: only
    // prewarming can start steps 2 and 3.
    let builder = ServerBuilder::new()
        .fixture_as("echo", "step1")
        .toml("step1", "publishes = [\"chain.one\"]\n");
    let builder = step(
        builder,
        "step2",
        "chain.one",
        "chain.two",
        "publishes = [\"chain.two\"]\n",
    );
    let builder = step(builder, "step3", "chain.two", "", "");
    // Subscribed to nothing the chain publishes: never prewarmed.
    let builder = step(builder, "bystander", "other.type", "", "");
    let mut server = builder.start().await;
    server.wait_ready().await;
    assert!(
        poll(|| at_zero(&server, &["step1", "step2", "step3", "bystander"])).await,
        "everything at zero processes"
    );
    let shown = info(&server, "step1").await;
    assert_eq!(
        shown["publishes"],
        json!([{"type": "chain.one", "declared": true, "published": false}]),
        "{shown}"
    );

    assert_eq!(server.run("step1", json!({})).await.status, 200);
    // Steps 2 and 3 got a process without being called; the bystander did not.
    assert!(
        poll(|| async {
            info(&server, "step2").await["processes"] == 1
                && info(&server, "step3").await["processes"] == 1
        })
        .await,
        "steps 2 and 3 started ahead: {} {}\nlog:\n{}",
        info(&server, "step2").await,
        info(&server, "step3").await,
        server.logs()
    );
    assert_eq!(info(&server, "bystander").await["processes"], 0);
    for name in ["step2", "step3"] {
        assert_eq!(prewarms(&server, name).await, 1, "{name}");
        // Not a cold start: no request waited for it.
        assert_eq!(info(&server, name).await["cold_starts"], 0, "{name}");
    }
    assert_eq!(prewarms(&server, "bystander").await, 0);
    server.stop_and_check();
}

#[tokio::test]
async fn a_chain_seen_once_is_prewarmed_the_next_time_and_kept_over_a_restart() {
    let builder = step(ServerBuilder::new(), "first", "none.at.all", "seen.one", "");
    let builder = step(builder, "second", "seen.one", "seen.two", "");
    let builder = step(builder, "third", "seen.two", "", "");
    let mut server = builder.start().await;
    server.wait_ready().await;
    assert!(poll(|| at_zero(&server, &["second", "third"])).await);

    // The first run goes cold, step by step, and teaches the graph.
    let answer = server.run("first", json!({"n": 1})).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(answer.body["delivered"], 1, "{answer:?}");
    for (name, published) in [("first", "seen.one"), ("second", "seen.two")] {
        assert_eq!(
            info(&server, name).await["publishes"],
            json!([{"type": published, "declared": false, "published": true}]),
            "{name}"
        );
    }
    assert_eq!(info(&server, "second").await["cold_starts"], 1);
    assert_eq!(info(&server, "third").await["cold_starts"], 1);

    // Once they are back at zero, the next run starts both ahead: no further cold start.
    assert!(poll(|| at_zero(&server, &["first", "second", "third"])).await);
    let answer = server.run("first", json!({"n": 2})).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(
        info(&server, "second").await["cold_starts"],
        1,
        "prewarmed, not cold"
    );
    assert_eq!(
        info(&server, "third").await["cold_starts"],
        1,
        "prewarmed, not cold"
    );
    assert_eq!(prewarms(&server, "second").await, 1);
    assert_eq!(prewarms(&server, "third").await, 1);

    // What was seen is kept in the store.
    server.restart();
    server.wait_ready().await;
    assert_eq!(
        info(&server, "first").await["publishes"],
        json!([{"type": "seen.one", "declared": false, "published": true}])
    );
    server.stop_and_check();
}

#[tokio::test]
async fn prewarming_is_bounded_by_its_budget() {
    // One step fanning out to four subscribers, with a budget of one start a second.
    let mut builder = ServerBuilder::new()
        .args(&["--prewarm-budget", "1"])
        .fixture_as("echo", "fan")
        .toml("fan", "publishes = [\"fan.out\"]\n");
    let names = ["sub-a", "sub-b", "sub-c", "sub-d"];
    for name in names {
        builder = builder
            .fixture_as("relay", name)
            .toml(name, "min_instances = 0\nenv = { ON = \"fan.out\" }\n");
    }
    let mut server = builder.start().await;
    server.wait_ready().await;
    assert!(poll(|| at_zero(&server, &names)).await);
    assert_eq!(server.run("fan", json!({})).await.status, 200);
    let mut started = 0;
    for name in names {
        started += prewarms(&server, name).await;
    }
    assert_eq!(started, 1, "one start within the second's budget");
    server.stop_and_check();
}
