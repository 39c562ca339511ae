//! Pools under load: bursts, scaling up and down, cold starts, exec concurrency, and graceful
//! shutdown with requests in flight.

use serde_json::json;
use std::sync::Arc;

use crate::harness::{ServerBuilder, poll};

#[tokio::test]
async fn a_burst_of_2000_requests_over_64_connections_all_succeed_in_bounded_memory() {
    let server = Arc::new(
        ServerBuilder::new()
            .fixture("echo")
            .toml("echo", "instances = 4\n")
            .start()
            .await,
    );
    server.wait_ready().await;
    assert_eq!(server.run("echo", json!({})).await.status, 200);
    let before = server.rss_kib();
    let peak = Arc::new(std::sync::atomic::AtomicU64::new(before));
    let clients: Vec<_> = (0..64)
        .map(|c| {
            let server = server.clone();
            let peak = peak.clone();
            tokio::spawn(async move {
                let mut failures = Vec::new();
                for i in 0..(2000 / 64 + usize::from(c < 2000 % 64)) {
                    let answer = server.run("echo", json!({"client": c, "i": i})).await;
                    if answer.status != 200 || answer.body["input"] != json!({"client": c, "i": i})
                    {
                        failures.push(answer);
                    }
                    if i % 8 == 0 {
                        peak.fetch_max(server.rss_kib(), std::sync::atomic::Ordering::Relaxed);
                    }
                }
                failures
            })
        })
        .collect();
    let mut failures = Vec::new();
    for client in clients {
        failures.extend(client.await.expect("client task"));
    }
    assert!(
        failures.is_empty(),
        "{} failures, first: {:?}",
        failures.len(),
        failures.first()
    );
    let peak = peak.load(std::sync::atomic::Ordering::Relaxed);
    eprintln!("memory: {before} KiB before, {peak} KiB at the peak");
    assert!(
        peak < before + 64 * 1024,
        "memory stayed bounded: {peak} KiB, {before} KiB before"
    );
    let mut server = Arc::into_inner(server).expect("sole owner");
    server.stop_and_check();
}

#[tokio::test]
async fn an_idle_function_scales_to_zero_and_comes_back_with_a_cold_start() {
    let mut server = ServerBuilder::new()
        .fixture("echo")
        .toml("echo", "idle_timeout = 0.5\n")
        .start()
        .await;
    server.wait_ready().await;
    let first = server.run("echo", json!({})).await;
    assert_eq!(first.status, 200);
    assert!(
        poll(|| async {
            server
                .function_info("echo")
                .await
                .is_some_and(|f| f["processes"] == 0 && f["state"] == "idle")
        })
        .await,
        "scaled to zero; log:\n{}",
        server.logs()
    );
    assert!(
        poll(|| async { server.pids_of("echo").is_empty() }).await,
        "the process is gone"
    );
    // Started at deploy (to learn its subscriptions), then stopped: the first request was a
    // cold start.
    let info = server.function_info("echo").await.expect("listed");
    assert_eq!(info["cold_starts"], 1);

    let again = server.run("echo", json!({"back": true})).await;
    assert_eq!(again.status, 200, "{again:?}");
    assert_ne!(again.body["pid"], first.body["pid"]);
    let info = server.function_info("echo").await.expect("listed");
    assert_eq!(info["cold_starts"], 2, "{info}");
    assert!(
        info["last_cold_start_ms"]
            .as_f64()
            .is_some_and(|ms| ms > 0.0),
        "{info}"
    );
    server.wait_for_log("cold start").await;
    server.stop_and_check();
}

#[tokio::test]
async fn a_subscribed_function_scales_down_to_one_and_keeps_its_subscription() {
    let mut server = ServerBuilder::new()
        .fixture_as("gather", "slow")
        .toml(
            "slow",
            "instances = 3\nidle_timeout = 0.5\nsubscribe = [\"slow.tick\"]\n",
        )
        .start()
        .await;
    server.wait_ready().await;
    // Three requests that only answer together need three processes.
    let answers = futures::future::join_all(
        (0..3).map(|_| server.run("slow", json!({"n": 3, "key": "grow"}))),
    )
    .await;
    assert!(answers.iter().all(|a| a.status == 200), "{answers:?}");
    let pids: std::collections::BTreeSet<String> =
        answers.iter().map(|a| a.body["pid"].to_string()).collect();
    assert_eq!(pids.len(), 3, "the pool grew to three processes");
    assert!(
        poll(|| async {
            server
                .function_info("slow")
                .await
                .is_some_and(|f| f["processes"] == 1)
        })
        .await,
        "scaled down to one, not zero: it has a subscription; log:\n{}",
        server.logs()
    );
    assert!(
        server
            .subscriptions()
            .await
            .contains(&("slow.tick".into(), "slow".into()))
    );
    server.stop_and_check();
}

#[tokio::test]
async fn min_instances_are_kept_running() {
    let mut server = ServerBuilder::new()
        .fixture("echo")
        .toml(
            "echo",
            "min_instances = 2\ninstances = 3\nidle_timeout = 0.3\n",
        )
        .start()
        .await;
    server.wait_ready().await;
    assert!(
        poll(|| async {
            server
                .function_info("echo")
                .await
                .is_some_and(|f| f["processes"] == 2)
        })
        .await,
        "topped up to two; log:\n{}",
        server.logs()
    );
    // Kill one: the keeper replaces it.
    let pids = server.pids_of("echo");
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pids[0] as i32),
        nix::sys::signal::Signal::SIGKILL,
    );
    assert!(
        poll(|| async {
            let now = server.pids_of("echo");
            now.len() == 2 && !now.contains(&pids[0])
        })
        .await,
        "replaced; log:\n{}",
        server.logs()
    );
    server.stop_and_check();
}

#[tokio::test]
async fn exec_mode_runs_at_most_instances_processes_at_once() {
    // Each run notes how many runs are going on as it starts.
    let script = "cat > /dev/null\ntouch running.$$\nls running.* | wc -l >> counts.log\nsleep 0.3\nrm running.$$\necho '{}'\n";
    let mut server = ServerBuilder::new()
        .file("batch", "main.sh", script)
        .toml("batch", "mode = \"exec\"\ninstances = 2\n")
        .start()
        .await;
    let answers = futures::future::join_all((0..6).map(|_| server.post("/run/batch", "{}"))).await;
    assert!(answers.iter().all(|a| a.status == 200), "{answers:?}");
    let counts =
        std::fs::read_to_string(server.functions_dir().join("batch/counts.log")).expect("counts");
    let most = counts
        .lines()
        .filter_map(|l| l.trim().parse::<u32>().ok())
        .max();
    assert_eq!(counts.lines().count(), 6);
    assert!(most.is_some_and(|m| m <= 2), "at most 2 at once: {counts}");
    server.stop_and_check();
}

#[tokio::test]
async fn exec_mode_refuses_past_its_queue() {
    let mut server = ServerBuilder::new()
        .file(
            "single",
            "main.sh",
            "cat > /dev/null\necho started >&2\nsleep 1\necho '{}'\n",
        )
        .toml("single", "mode = \"exec\"\ninstances = 1\nqueue = 0\n")
        .start()
        .await;
    let first = server.post("/run/single", "{}");
    let second = async {
        server.wait_for_log("started").await;
        server.post("/run/single", "{}").await
    };
    let (first, second) = tokio::join!(first, second);
    assert_eq!(first.status, 200);
    assert_eq!(second.status, 503, "{second:?}");
    assert!(second.header("retry-after").is_some());
    server.stop_and_check();
}

#[tokio::test]
async fn shutdown_lets_requests_in_flight_finish() {
    let mut server = ServerBuilder::new()
        .fixture("hang")
        .args(&["--shutdown-grace", "20"])
        .start()
        .await;
    server.wait_ready().await;
    let in_flight = server.run("hang", json!({"sleep": 1}));
    let stop = async {
        server.wait_for_log("hang: sleeping for 1 s").await;
        let pid = nix::unistd::Pid::from_raw(server.pid() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("SIGTERM");
    };
    let (answer, ()) = tokio::join!(in_flight, stop);
    assert_eq!(
        answer.status, 200,
        "the request in flight finished: {answer:?}"
    );
    server.stop_and_check();
    assert!(server.logs().contains("SIGTERM: shutting down"));
}

#[tokio::test]
async fn shutdown_does_not_wait_past_its_grace_period() {
    let mut server = ServerBuilder::new()
        .fixture("hang")
        .args(&["--shutdown-grace", "0.5", "--kill-grace", "0.5"])
        .start()
        .await;
    server.wait_ready().await;
    let stuck = server.run_raw("hang", json!({}));
    let stop = async {
        server.wait_for_log("hang: sleeping for ever").await;
        let pid = nix::unistd::Pid::from_raw(server.pid() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("SIGTERM");
    };
    let (stuck, ()) = tokio::join!(stuck, stop);
    assert!(
        stuck.is_err() || stuck.is_ok_and(|s| s != 200),
        "the stuck request was cut off"
    );
    server.stop_and_check();
}
