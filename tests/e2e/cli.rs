//! The command line: help, flags, their environment variables, errors at start and shutdown.

use std::process::Command;

use serde_json::{Value, json};

use crate::harness::ServerBuilder;

/// Runs `shs` in a fresh temporary folder, so that its defaults (`./functions`, `./data`) leave
/// nothing behind.
fn shs(args: &[&str]) -> std::process::Output {
    let cwd = tempfile::tempdir().expect("temp dir");
    Command::new(env!("CARGO_BIN_EXE_shs"))
        .args(args)
        .current_dir(cwd.path())
        .env_remove("RUST_LOG")
        .output()
        .expect("run shs")
}

#[test]
fn help_lists_the_commands_and_describes_every_serve_flag() {
    let top = shs(&["--help"]);
    assert!(top.status.success());
    let text = String::from_utf8_lossy(&top.stdout);
    assert!(text.contains("serve"), "{text}");

    let serve = shs(&["serve", "--help"]);
    assert!(serve.status.success());
    let text = String::from_utf8_lossy(&serve.stdout);
    for (flag, env, default) in [
        ("--functions-dir", "SHS_FUNCTIONS_DIR", "./functions"),
        ("--listen", "SHS_LISTEN", "127.0.0.1:8080"),
        ("--timeout", "SHS_TIMEOUT", "30"),
        ("--max-body", "SHS_MAX_BODY", "1MiB"),
        ("--log-format", "SHS_LOG_FORMAT", "pretty"),
    ] {
        assert!(text.contains(flag), "{flag} missing from:\n{text}");
        assert!(text.contains(env), "{env} missing from:\n{text}");
        assert!(
            text.contains(&format!("[default: {default}]")),
            "default of {flag}:\n{text}"
        );
    }
}

#[test]
fn a_missing_functions_folder_is_a_clear_error() {
    let out = shs(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--functions-dir",
        "/no/such/folder",
    ]);
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("/no/such/folder"), "{text}");
    assert!(text.contains("--functions-dir"), "{text}");
}

#[test]
fn a_bad_listen_address_is_a_clear_error() {
    let out = shs(&[
        "serve",
        "--listen",
        "not-an-address",
        "--functions-dir",
        ".",
    ]);
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("cannot listen on not-an-address"), "{text}");
}

#[test]
fn bad_flag_values_are_refused() {
    for args in [
        ["serve", "--timeout", "never"],
        ["serve", "--max-body", "lots"],
        ["serve", "--log-format", "xml"],
    ] {
        let out = shs(&args);
        assert!(!out.status.success(), "{args:?}");
        assert!(!out.stderr.is_empty(), "{args:?} says why");
    }
}

#[tokio::test]
async fn every_flag_can_come_from_the_environment() {
    let mut server = ServerBuilder::new()
        .fixture("hang")
        .toml("hang", "start_timeout = 20\n")
        .fixture("echo")
        .flags_in_env()
        .env("SHS_TIMEOUT", "1")
        .env("SHS_MAX_BODY", "100")
        .env("SHS_LOG_FORMAT", "json")
        .start()
        .await;
    let hung = server.run("hang", json!({})).await;
    assert_eq!(hung.status, 504, "SHS_TIMEOUT: {hung:?}");
    assert!(hung.message().contains("within 1s"), "{}", hung.message());
    let big = server
        .post("/run/echo", &format!("\"{}\"", "x".repeat(200)))
        .await;
    assert_eq!(big.status, 413, "SHS_MAX_BODY: {big:?}");
    server.stop_and_check();
    for line in server.logs().lines() {
        let parsed: Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("SHS_LOG_FORMAT=json: {e}: {line}"));
        assert!(parsed["level"].is_string(), "{line}");
    }
}

#[tokio::test]
async fn sigterm_stops_the_server_and_every_function_process() {
    let mut server = ServerBuilder::new()
        .fixture("echo")
        .fixture("echo-node")
        .fixture("hang")
        .toml("echo", "min_instances = 1\n")
        .toml("echo-node", "min_instances = 1\n")
        .toml("hang", "min_instances = 1\n")
        .start()
        .await;
    server.wait_ready().await;
    assert_eq!(server.function_pids().len(), 3, "one process each");
    // stop_and_check: exit status 0, and nothing left running.
    server.stop_and_check();
    assert!(server.logs().contains("every function process has stopped"));
}

#[tokio::test]
async fn json_logs_carry_function_stderr_as_fields() {
    let mut server = ServerBuilder::new()
        .fixture("echo")
        .args(&["--log-format", "json"])
        .start()
        .await;
    assert_eq!(server.run("echo", json!({})).await.status, 200);
    server.wait_for_log("echo got a request").await;
    let line = server
        .logs()
        .lines()
        .find(|l| l.contains("echo got a request"))
        .map(str::to_owned)
        .expect("logged");
    let parsed: Value = serde_json::from_str(&line).expect("JSON");
    assert_eq!(parsed["function"], "echo");
    assert_eq!(parsed["message"], "echo got a request");
    assert!(parsed["pid"].is_number(), "{parsed}");
    server.stop_and_check();
}
