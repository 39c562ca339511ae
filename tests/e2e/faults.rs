//! Fault injection: each case is a small real function that misbehaves in one way. For each:
//! the documented status, a healthy function served in parallel, and afterwards nothing left
//! of the faulty process's group and no pipe left open in the supervisor.

use std::time::Duration;

use serde_json::{Value, json};

use crate::harness::{Answer, Server, ServerBuilder, group_members, poll};

/// A server running the fixture `fixture` as function `faulty`, next to a healthy `echo`.
struct Case {
    server: Server,
    /// Process groups of `faulty` before the fault.
    groups: Vec<u32>,
    /// Pipes the supervisor held with every function warm.
    pipes: usize,
    /// Its memory then, KiB.
    rss: u64,
}

impl Case {
    async fn new(fixture: &str, toml: &str, args: &[&str]) -> Case {
        // `min_instances = 1`: its process runs from the start (a function with neither
        // subscriptions nor min_instances is stopped once it has answered initialize).
        let server = ServerBuilder::new()
            .fixture_as(fixture, "faulty")
            .toml("faulty", &format!("min_instances = 1\n{toml}"))
            .fixture("echo")
            .args(args)
            .start()
            .await;
        server.wait_ready().await;
        assert_eq!(server.run("echo", json!({})).await.status, 200);
        let groups = server.pids_of("faulty");
        assert!(
            !groups.is_empty(),
            "faulty started; log:\n{}",
            server.logs()
        );
        Case {
            pipes: server.pipe_fds(),
            rss: server.rss_kib(),
            groups,
            server,
        }
    }

    /// Runs `fault` while a healthy function is invoked again and again; every healthy
    /// request must succeed.
    async fn run<F: std::future::Future<Output = Answer>>(&self, fault: F) -> Answer {
        let healthy = async {
            for i in 0..10 {
                let answer = self.server.run("echo", json!({"i": i})).await;
                assert_eq!(
                    answer.status, 200,
                    "the healthy function is served: {answer:?}"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        };
        let (answer, ()) = tokio::join!(fault, healthy);
        answer
    }

    /// Nothing of the faulty groups is left and the supervisor holds no more pipes than
    /// before; then the server stops cleanly.
    async fn check_clean(mut self) {
        for pgid in self.groups.clone() {
            assert!(
                poll(|| async { group_members(pgid).is_empty() }).await,
                "process group {pgid} left: {:?}",
                group_members(pgid)
            );
        }
        let (server, pipes) = (&self.server, self.pipes);
        assert!(
            poll(|| async { server.pipe_fds() <= pipes }).await,
            "the supervisor holds {} pipes, {} before",
            server.pipe_fds(),
            pipes
        );
        self.server.stop_and_check();
    }
}

#[tokio::test]
async fn killed_with_sigkill_mid_request_is_502() {
    let case = Case::new("hang", "", &[]).await;
    let answer = case
        .run(async {
            let request = case.server.run("faulty", json!({}));
            let killer = async {
                case.server.wait_for_log("hang: sleeping for ever").await;
                for pid in case.server.pids_of("faulty") {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid as i32),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
            };
            tokio::join!(request, killer).0
        })
        .await;
    assert_eq!(answer.status, 502, "{answer:?}");
    assert!(
        answer.message().contains("signal 9 (SIGKILL)"),
        "{}",
        answer.message()
    );
    case.check_clean().await;
}

#[tokio::test]
async fn closing_stdout_is_502_and_the_process_is_stopped() {
    let case = Case::new("close-stdout", "", &["--kill-grace", "0.5"]).await;
    let answer = case.run(case.server.run("faulty", json!({}))).await;
    assert_eq!(answer.status, 502, "{answer:?}");
    assert!(
        answer.message().contains("closed its stdout"),
        "{}",
        answer.message()
    );
    case.check_clean().await;
}

#[tokio::test]
async fn never_answering_is_504() {
    let case = Case::new("hang", "timeout = 1\nstart_timeout = 20\n", &[]).await;
    let answer = case.run(case.server.run("faulty", json!({}))).await;
    assert_eq!(answer.status, 504, "{answer:?}");
    case.check_clean().await;
}

#[tokio::test]
async fn answering_initialize_then_hanging_is_504() {
    let case = Case::new(
        "deaf",
        "timeout = 1\nstart_timeout = 20\n",
        &["--kill-grace", "0.5"],
    )
    .await;
    let answer = case.run(case.server.run("faulty", json!({}))).await;
    assert_eq!(answer.status, 504, "{answer:?}");
    case.check_clean().await;
}

/// Samples the server's memory while `fut` runs; returns the answer and the peak (KiB).
async fn peak_rss(
    server: &Server,
    fut: impl std::future::Future<Output = Answer>,
) -> (Answer, u64) {
    let done = std::sync::atomic::AtomicBool::new(false);
    let sampler = async {
        let mut peak = 0;
        while !done.load(std::sync::atomic::Ordering::Acquire) {
            peak = peak.max(server.rss_kib());
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        peak
    };
    let work = async {
        let answer = fut.await;
        done.store(true, std::sync::atomic::Ordering::Release);
        answer
    };
    tokio::join!(work, sampler)
}

#[tokio::test]
async fn a_100_mb_stdout_line_is_502_without_being_buffered() {
    let case = Case::new("flood-stdout", "", &["--kill-grace", "0.5"]).await;
    let (answer, peak) = peak_rss(
        &case.server,
        case.run(case.server.run("faulty", json!({"mb": 100}))),
    )
    .await;
    assert_eq!(answer.status, 502, "{answer:?}");
    assert!(
        answer.message().contains("longer than 16777216 bytes"),
        "{}",
        answer.message()
    );
    eprintln!("peak memory {peak} KiB, {} KiB before", case.rss);
    assert!(
        peak < case.rss + 64 * 1024,
        "memory stayed bounded: {peak} KiB, {} before",
        case.rss
    );
    case.check_clean().await;
}

#[tokio::test]
async fn a_flood_of_stderr_costs_bounded_memory_and_long_lines_are_cut() {
    let case = Case::new("flood-stderr", "", &[]).await;
    let (answer, peak) = peak_rss(
        &case.server,
        case.run(case.server.run("faulty", json!({"mb": 50}))),
    )
    .await;
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(answer.body, json!({"done": true}));
    eprintln!("peak memory {peak} KiB, {} KiB before", case.rss);
    assert!(
        peak < case.rss + 64 * 1024,
        "memory stayed bounded: {peak} KiB, {} before",
        case.rss
    );
    // The long line is cut, in the function's log; shs's own log took only part of the flood
    // and says how much it left out.
    let cut = poll(|| async {
        let tail = case.server.get("/functions/faulty/logs?tail=5").await;
        tail.body["lines"].as_array().is_some_and(|lines| {
            lines.iter().any(|l| {
                l["message"]
                    .as_str()
                    .is_some_and(|m| m.ends_with("[line cut]"))
            })
        })
    })
    .await;
    assert!(cut, "no cut line in the function's log");
    case.server.wait_for_log("not written to shs's log").await;
    // The process survives its flood.
    assert_eq!(
        case.server.run("faulty", json!({"mb": 0})).await.status,
        200
    );
    // Its group must go at shutdown, not now: check the pipes and stop.
    let mut server = case.server;
    server.stop_and_check();
}

#[tokio::test]
async fn grandchildren_that_ignore_sigterm_are_killed_with_the_group() {
    let case = Case::new(
        "forker",
        "timeout = 1\nstart_timeout = 20\n",
        &["--kill-grace", "0.5"],
    )
    .await;
    let answer = case.run(case.server.run("faulty", json!({}))).await;
    assert_eq!(answer.status, 504, "{answer:?}");
    case.check_clean().await;
}

/// How many processes the current user runs.
fn processes_of_current_user() -> u64 {
    let uid = nix::unistd::Uid::current().as_raw();
    std::fs::read_dir("/proc")
        .map(|entries| {
            entries
                .flatten()
                .filter(|e| {
                    std::fs::read_to_string(e.path().join("status")).is_ok_and(|s| {
                        s.lines()
                            .find_map(|l| l.strip_prefix("Uid:"))
                            .and_then(|v| v.split_whitespace().next().map(str::to_owned))
                            == Some(uid.to_string())
                    })
                })
                .count() as u64
        })
        .unwrap_or(0)
}

#[tokio::test]
async fn a_fork_bomb_stops_at_the_process_limit() {
    // RLIMIT_NPROC counts the processes of a user and is not enforced for root: as root the
    // function runs as nobody; otherwise the limit sits a little above what the user runs.
    let root = nix::unistd::Uid::effective().is_root();
    let toml = if root {
        "user = \"nobody\"\n[limits]\nprocesses = 30\n".to_owned()
    } else {
        format!(
            "[limits]\nprocesses = {}\n",
            processes_of_current_user() + 30
        )
    };
    let builder = ServerBuilder::new();
    if root {
        // nobody must be able to read its folder.
        let root_dir = builder
            .functions_dir()
            .parent()
            .map(std::path::Path::to_path_buf)
            .expect("root");
        for dir in [&root_dir, &builder.functions_dir()] {
            std::fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(0o755))
                .expect("chmod");
        }
    }
    let mut server = builder
        .fixture_as("fork-bomb", "faulty")
        .toml("faulty", &toml)
        .fixture("echo")
        .start()
        .await;
    server.wait_ready().await;
    let (answer, healthy) = tokio::join!(
        server.run("faulty", json!({})),
        server.run("echo", json!({}))
    );
    assert_eq!(healthy.status, 200);
    assert_eq!(answer.status, 500, "{answer:?}");
    assert!(
        answer.message().contains("fork failed after"),
        "{}",
        answer.message()
    );
    let forked = answer.body["error"]["data"]["forked"]
        .as_u64()
        .expect("count");
    assert!(forked < 10_000, "bounded by the limit: {forked}");
    assert!(
        poll(|| async { server.pids_of("faulty").len() == 1 }).await,
        "its children are gone"
    );
    server.stop_and_check();
}

#[tokio::test]
async fn allocating_past_the_memory_limit_fails_the_request() {
    let case = Case::new("memory-hog", "[limits]\nmemory = \"128MiB\"\n", &[]).await;
    let answer = case
        .run(case.server.run("faulty", json!({"mb": 512})))
        .await;
    assert_eq!(answer.status, 500, "{answer:?}");
    assert!(
        answer.message().contains("MemoryError"),
        "{}",
        answer.message()
    );
    let small = case.server.run("faulty", json!({"mb": 8})).await;
    assert_eq!(
        small.body,
        json!({"allocated": 8}),
        "within the limit it works"
    );
    let mut server = case.server;
    server.stop_and_check();
}

#[tokio::test]
async fn the_cpu_limit_kills_a_spinning_process() {
    let case = Case::new(
        "cpu-burner",
        "timeout = 30\n[limits]\ncpu_seconds = 1\n",
        &[],
    )
    .await;
    let answer = case.run(case.server.run("faulty", json!({}))).await;
    assert_eq!(answer.status, 502, "{answer:?}");
    assert!(answer.message().contains("SIGXCPU"), "{}", answer.message());
    case.check_clean().await;
}

#[tokio::test]
async fn the_open_files_limit_holds() {
    let case = Case::new("open-files", "[limits]\nopen_files = 32\n", &[]).await;
    let answer = case.run(case.server.run("faulty", json!({"n": 100}))).await;
    assert_eq!(answer.status, 500, "{answer:?}");
    assert!(
        answer.message().contains("Too many open files"),
        "{}",
        answer.message()
    );
    assert_eq!(
        case.server.run("faulty", json!({"n": 5})).await.body,
        json!({"opened": 5})
    );
    let mut server = case.server;
    server.stop_and_check();
}

#[tokio::test]
async fn a_function_that_ignores_sigterm_is_killed_at_shutdown() {
    let case = Case::new("ignore-term", "", &["--kill-grace", "0.5"]).await;
    let answer = case.run(case.server.run("faulty", json!({}))).await;
    assert_eq!(answer.status, 200);
    // stop_and_check: exit 0, nothing left.
    let mut server = case.server;
    server.stop_and_check();
    assert!(server.logs().contains("stdin closed; staying anyway"));
}

#[tokio::test]
async fn a_function_that_exits_at_start_every_time_backs_off() {
    // Subscribed, so it is kept running: the keeper restarts it, with backoff.
    let mut server = ServerBuilder::new()
        .fixture_as("exit-at-start", "faulty")
        .toml("faulty", "subscribe = [\"some.event\"]\n")
        .fixture("echo")
        .start()
        .await;
    server.wait_ready().await;
    let mut answers: Vec<Answer> = Vec::new();
    for _ in 0..40 {
        answers.push(server.run("faulty", json!({})).await);
        assert_eq!(server.run("echo", json!({})).await.status, 200);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(answers.iter().all(|a| a.status == 503), "{answers:?}");
    let backing_off: Vec<&Answer> = answers
        .iter()
        .filter(|a| a.body["error"]["next_try"].is_string())
        .collect();
    assert!(
        !backing_off.is_empty(),
        "requests are refused while it backs off"
    );
    let refused = backing_off[0];
    assert!(refused.header("retry-after").is_some(), "{refused:?}");
    assert_eq!(
        refused.body["error"]["stderr"],
        json!(["cannot start: the configuration file is missing"])
    );
    assert!(
        refused.message().contains("next try in"),
        "{}",
        refused.message()
    );
    // Forty requests did not make forty starts: the backoff holds them back.
    let starts = server.logs().matches("process could not start").count();
    assert!(starts < 15, "{starts} starts for 40 requests: a hot loop");
    let info: Value = server.function_info("faulty").await.expect("listed");
    assert!(info["failures"].as_u64().is_some_and(|f| f >= 2), "{info}");
    server.stop_and_check();
}

#[tokio::test]
async fn a_function_runs_as_the_user_it_names() {
    if !nix::unistd::Uid::effective().is_root() {
        // Switching user needs root; without it, `user` is refused (see spec::tests::run_as_a_user).
        return;
    }
    let builder = ServerBuilder::new();
    let root_dir = builder
        .functions_dir()
        .parent()
        .map(std::path::Path::to_path_buf)
        .expect("root");
    for dir in [&root_dir, &builder.functions_dir()] {
        std::fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .expect("chmod");
    }
    let mut server = builder
        .fixture("whoami")
        .toml("whoami", "user = \"nobody\"\n")
        .start()
        .await;
    let answer = server.run("whoami", json!({})).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    let nobody = nix::unistd::User::from_name("nobody")
        .ok()
        .flatten()
        .expect("nobody exists");
    assert_eq!(answer.body["uid"], nobody.uid.as_raw());
    assert_eq!(answer.body["euid"], nobody.uid.as_raw());
    server.stop_and_check();
}
