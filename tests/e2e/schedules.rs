//! Schedules (`[[schedule]]` in `function.toml`): a schedule of every second over a few
//! seconds (each occurrence once, an asynchronous invocation with `context.schedule`),
//! `GET /schedules`, a malformed cron or time zone shown on the function at deploy, and
//! `catch_up = "last"` after a restart.

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::{Value, json};

use crate::harness::{ServerBuilder, poll};
use crate::invocations::received;

const EVERY_SECOND: &str =
    "[[schedule]]\ncron = \"* * * * * *\"\ntimezone = \"Europe/Berlin\"\ninput = { tick = true }\n";

/// The occurrence times the `job` deployed as `name` recorded.
fn times(server: &crate::harness::Server, name: &str) -> Vec<String> {
    received(server, name)
        .iter()
        .filter_map(|l| l["schedule"]["time"].as_str().map(str::to_owned))
        .collect()
}

#[tokio::test]
async fn a_schedule_of_every_second_runs_each_occurrence_once() {
    let mut server = ServerBuilder::new()
        .fixture("job")
        .toml("job", EVERY_SECOND)
        .start()
        .await;
    server.wait_ready().await;
    assert!(
        poll(|| async { times(&server, "job").len() >= 4 }).await,
        "{:?}; log:\n{}",
        times(&server, "job"),
        server.logs()
    );
    let lines = received(&server, "job");
    let times = times(&server, "job");
    let distinct: BTreeSet<&String> = times.iter().collect();
    assert_eq!(
        distinct.len(),
        times.len(),
        "an occurrence ran twice: {times:?}"
    );
    for line in &lines {
        assert_eq!(line["input"], json!({"tick": true}), "{line}");
        assert_eq!(line["schedule"]["cron"], "* * * * * *", "{line}");
        let time = line["schedule"]["time"].as_str().expect("time");
        assert!(time.ends_with(".000Z"), "on a whole second, in UTC: {time}");
        assert_eq!(line["method"], Value::Null, "no HTTP request: {line}");
    }
    // Visible as invocations, with their schedule.
    let listed = server
        .get("/invocations?function=job&state=succeeded")
        .await;
    let first = &listed.body["invocations"][0];
    assert_eq!(first["schedule"]["cron"], "* * * * * *", "{listed:?}");

    let schedules = server.get("/schedules").await;
    assert_eq!(schedules.status, 200, "{schedules:?}");
    let entry = &schedules.body["schedules"][0];
    assert_eq!(entry["function"], "job");
    assert_eq!(entry["cron"], "* * * * * *");
    assert_eq!(entry["timezone"], "Europe/Berlin");
    assert_eq!(entry["catch_up"], "none");
    assert_eq!(entry["input"], json!({"tick": true}));
    assert!(
        entry["next"].as_str().is_some_and(|t| t.ends_with('Z')),
        "{entry}"
    );
    assert!(entry["last"]["invocation_id"].is_string(), "{entry}");
    assert!(
        ["queued", "running", "succeeded"].contains(&entry["last"]["state"].as_str().unwrap_or("")),
        "{entry}"
    );
    server.stop_and_check();
}

#[tokio::test]
async fn a_malformed_schedule_shows_on_the_function_at_deploy() {
    let mut server = ServerBuilder::new()
        .fixture_as("job", "bad-cron")
        .toml("bad-cron", "[[schedule]]\ncron = \"61 * * * * *\"\n")
        .fixture_as("job", "bad-zone")
        .toml(
            "bad-zone",
            "[[schedule]]\ncron = \"0 0 * * * *\"\ntimezone = \"Mars/Olympus_Mons\"\n",
        )
        .fixture_as("job", "bad-catch-up")
        .toml(
            "bad-catch-up",
            "[[schedule]]\ncron = \"0 0 * * *\"\ncatch_up = \"all\"\n",
        )
        .fixture("job")
        .start()
        .await;
    server.wait_ready().await;
    for (name, needle) in [
        (
            "bad-cron",
            "`[[schedule]]` 1: cron \"61 * * * * *\" does not parse",
        ),
        (
            "bad-zone",
            "timezone \"Mars/Olympus_Mons\" is not an IANA time zone name",
        ),
        ("bad-catch-up", "catch_up \"all\""),
    ] {
        let info = server.function_info(name).await.expect("listed");
        assert_eq!(info["state"], "failed", "{info}");
        assert!(
            info["error"].as_str().is_some_and(|e| e.contains(needle)),
            "{name}: {info}"
        );
    }
    // The others run, and nothing is scheduled for the broken ones.
    assert_eq!(server.run("job", json!({})).await.status, 200);
    assert_eq!(server.get("/schedules").await.body["schedules"], json!([]));
    server.stop_and_check();
}

#[tokio::test]
async fn catch_up_last_runs_the_latest_occurrence_missed_once() {
    let toml = "[[schedule]]\ncron = \"* * * * * *\"\ncatch_up = \"last\"\n";
    let mut server = ServerBuilder::new()
        .fixture("job")
        .toml("job", toml)
        .start()
        .await;
    server.wait_ready().await;
    assert!(poll(|| async { !times(&server, "job").is_empty() }).await);
    server.stop();
    let before: BTreeSet<String> = times(&server, "job").into_iter().collect();
    let last_before = before.iter().next_back().cloned().expect("one ran");
    // Two occurrences or more are missed.
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    server.restart();
    server
        .wait_for_log("catching up the last occurrence missed")
        .await;
    assert!(
        poll(|| async { times(&server, "job").len() >= before.len() + 2 }).await,
        "{}",
        server.logs()
    );
    let after: Vec<String> = times(&server, "job")
        .into_iter()
        .filter(|t| !before.contains(t))
        .collect();
    let distinct: BTreeSet<&String> = after.iter().collect();
    assert_eq!(distinct.len(), after.len(), "{after:?}");
    // The first one after the restart is the caught-up one: missed, so more than a second
    // after the last one before the stop, and in the past when it ran.
    let first = distinct.iter().next().expect("ran after the restart");
    assert!(**first > last_before, "{first} after {last_before}");
    server.stop_and_check();
}
