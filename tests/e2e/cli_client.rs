//! The client commands of the `shs` binary against a real running server: `invoke` (JSON from
//! the argument, a file and stdin; bad JSON; unknown and failing functions), `publish` (waiting
//! and `--async`), `list`, `subscriptions`, `logs` (and `-f`), with and without the API key
//! the server wants; the same commands with the server down; and `shs new` in each language,
//! written straight into the functions folder of a running server, deployed, invoked, sent
//! an event, and its own unit test run.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::harness::{PATIENCE, Server, ServerBuilder, poll};

/// How a run of `shs` ended.
#[derive(Debug)]
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Run {
    /// Asserts exit status 0 and nothing on stderr; returns stdout.
    fn ok(&self) -> &str {
        assert_eq!(self.code, Some(0), "{self:#?}");
        assert_eq!(self.stderr, "", "{self:#?}");
        &self.stdout
    }

    /// Asserts exit status 1, nothing on stdout and `needle` on stderr.
    fn fails_with(&self, needle: &str) {
        assert_eq!(self.code, Some(1), "{self:#?}");
        assert!(self.stderr.contains(needle), "{needle:?} not in {self:#?}");
        assert!(self.stderr.starts_with("shs: "), "{self:#?}");
    }

    /// stdout as JSON.
    fn json(&self) -> Value {
        serde_json::from_str(self.ok()).unwrap_or_else(|e| panic!("{e}: {self:#?}"))
    }
}

/// Runs `shs ARGS` against `url` (in `SHS_URL`), with `stdin` as its input.
fn shs_in(url: &str, args: &[&str], env: &[(&str, &str)], stdin: &str) -> Run {
    let mut child = Command::new(env!("CARGO_BIN_EXE_shs"))
        .args(args)
        .env_remove("SHS_API_KEY")
        .env_remove("RUST_LOG")
        .env("SHS_URL", url)
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run shs");
    let mut input = child.stdin.take().expect("stdin");
    input.write_all(stdin.as_bytes()).expect("write stdin");
    drop(input);
    let output = child.wait_with_output().expect("wait for shs");
    Run {
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// Runs `shs ARGS` against `url`, with nothing on stdin.
fn shs(url: &str, args: &[&str]) -> Run {
    shs_in(url, args, &[], "")
}

/// A URL where nothing listens: a port that was free a moment ago.
fn closed_port_url() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    drop(listener);
    format!("http://127.0.0.1:{port}")
}

/// Waits until `name` is deployed and ready.
async fn wait_deployed(server: &Server, name: &str) {
    let ready = poll(|| async {
        server
            .function_info(name)
            .await
            .is_some_and(|f| f["state"] == "ready")
    })
    .await;
    assert!(
        ready,
        "{name} never became ready: {:?}; log:\n{}",
        server.function_info(name).await,
        server.logs()
    );
}

#[tokio::test]
async fn invoke_takes_json_from_the_argument_a_file_or_stdin_and_explains_failures() {
    let mut server = ServerBuilder::new()
        .fixture("echo")
        .fixture("exec-cat")
        .fixture("fail")
        .fixture("exec-fail")
        .start()
        .await;
    server.wait_ready().await;
    let url = server.url.clone();

    // From the argument; the function gets it as its input.
    let out = shs(
        &url,
        &["invoke", "echo", r#"{"name": "Ada", "n": [1, "é"]}"#],
    )
    .json();
    assert_eq!(out["input"], json!({"name": "Ada", "n": [1, "é"]}), "{out}");
    // No input at all is {}.
    assert_eq!(shs(&url, &["invoke", "echo"]).json()["input"], json!({}));
    // From a file.
    let file = server.functions_dir().join("../input.json");
    std::fs::write(&file, "{\"from\": \"a file\"}\n").expect("write the input file");
    let at_file = format!("@{}", file.display());
    let out = shs(&url, &["invoke", "echo", &at_file]).json();
    assert_eq!(out["input"], json!({"from": "a file"}));
    // From stdin.
    let out = shs_in(&url, &["invoke", "echo", "-"], &[], "[1, 2, 3]\n").json();
    assert_eq!(out["input"], json!([1, 2, 3]));
    // With --url instead of SHS_URL.
    let out = shs(
        "http://127.0.0.1:1",
        &["invoke", "echo", "7", "--url", &url],
    )
    .json();
    assert_eq!(out["input"], json!(7));

    // Not a terminal: the answer exactly as the function wrote it, with a final newline.
    let body = r#"{"b": [1, 2.50, "\u00e9"], "a": {}}"#;
    assert_eq!(
        shs(&url, &["invoke", "exec-cat", body]).ok(),
        format!("{body}\n")
    );

    // Bad JSON is caught before anything is sent.
    let run = shs(&url, &["invoke", "echo", "{name: 'Ada'}"]);
    run.fails_with("the input is not valid JSON: key must be a string");
    assert_eq!(run.stdout, "");
    shs_in(&url, &["invoke", "echo", "-"], &[], "{\"a\":")
        .fails_with("the input (from stdin) is not valid JSON: EOF while parsing");
    shs(&url, &["invoke", "echo", "@/no/such/file.json"])
        .fails_with("cannot read the input from /no/such/file.json");
    shs(&url, &["invoke", "echo", "  "]).fails_with("the input is empty");
    shs(&url, &["invoke", "no such", "{}"]).fails_with("invalid function name \"no such\"");

    // An unknown function: the server's message, and where to look.
    shs(&url, &["invoke", "nope", "{}"])
        .fails_with("no function named \"nope\" (`shs list` shows the functions deployed)");

    // A function's error: its message, code and data.
    let run = shs(&url, &["invoke", "fail", "{\"x\": 1}"]);
    run.fails_with("shs: boom");
    assert!(run.stderr.contains("\n  code: 42"), "{run:#?}");
    assert!(
        run.stderr
            .contains(r#"data: {"why":"asked to","input":{"x":1}}"#),
        "{run:#?}"
    );
    // An exec function that exits non-zero: the tail of its stderr.
    let run = shs(&url, &["invoke", "exec-fail", "{}"]);
    run.fails_with("exited with status 3");
    assert!(
        run.stderr.contains(
            "\n  stderr:\n    first line of the complaint\n    the input was not to my liking"
        ),
        "{run:#?}"
    );
    server.stop_and_check();
}

#[tokio::test]
async fn publish_waits_for_the_subscribers_or_not_and_reports_failed_deliveries() {
    let mut server = ServerBuilder::new()
        .fixture("recorder")
        .toml("recorder", "env = { ON = \"cli.test\" }\n")
        .fixture("fail")
        .toml("fail", "subscribe = [\"cli.fail\"]\n")
        .start()
        .await;
    server.wait_ready().await;
    let url = server.url.clone();
    let count = || async { server.run("recorder", json!({})).await.body["count"].clone() };

    // Waits for the subscriber: delivered once the call returns.
    let out = shs(&url, &["publish", "cli.test", r#"{"n": 1}"#])
        .ok()
        .to_owned();
    assert!(out.starts_with("event "), "{out}");
    assert!(
        out.ends_with(" published: delivered to 1 function\n"),
        "{out}"
    );
    assert_eq!(count().await, 1);
    let received = std::fs::read_to_string(server.functions_dir().join("recorder/received.log"))
        .expect("received.log");
    assert!(received.contains(r#""payload": {"n": 1}"#), "{received}");

    // --json: the server's answer; the payload from stdin.
    let answer = shs_in(&url, &["publish", "cli.test", "-", "--json"], &[], "[2]").json();
    assert_eq!(answer["status"], "published", "{answer}");
    assert_eq!(answer["delivered"], 1, "{answer}");
    assert_eq!(answer["errors"], json!([]), "{answer}");
    assert_eq!(count().await, 2);

    // --async: accepted at once, delivered in the background.
    let out = shs(&url, &["publish", "cli.test", "{}", "--async"])
        .ok()
        .to_owned();
    assert!(out.contains(" accepted: "), "{out}");
    assert!(
        poll(|| async { count().await == 3 }).await,
        "the asynchronous event never arrived"
    );
    let answer = shs(&url, &["publish", "cli.test", "--async", "--json"]).json();
    assert_eq!(answer["status"], "accepted", "{answer}");
    assert!(answer["event_id"].is_string(), "{answer}");

    // Nobody subscribed: said so, and not an error.
    let out = shs(&url, &["publish", "nobody.listens"]).ok().to_owned();
    assert!(
        out.contains("no function is subscribed to nobody.listens"),
        "{out}"
    );

    // A failed delivery is listed, and the exit status is 1.
    let run = shs(&url, &["publish", "cli.fail", "{}"]);
    assert_eq!(run.code, Some(1), "{run:#?}");
    assert!(run.stdout.contains(" published: "), "{run:#?}");
    assert!(
        run.stderr
            .contains("shs: 1 delivery failed:\n  function \"fail\" failed: boom"),
        "{run:#?}"
    );

    // A type the server refuses, and bad JSON.
    shs(&url, &["publish", "a b", "{}"])
        .fails_with("invalid event type \"a b\": it contains whitespace");
    shs(&url, &["publish", "cli.test", "{oops}"]).fails_with("the payload is not valid JSON");
    server.stop_and_check();
}

#[tokio::test]
async fn list_and_subscriptions_print_tables_or_json() {
    let mut server = ServerBuilder::new()
        .fixture("echo")
        .fixture("recorder")
        .toml("recorder", "env = { ON = \"a.b,c.*\" }\n")
        .toml("broken", "no_such_key = 1\n")
        .start()
        .await;
    server.wait_ready().await;
    let url = server.url.clone();

    let out = shs(&url, &["list"]).ok().to_owned();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines[0].split_whitespace().collect::<Vec<_>>(),
        ["NAME", "MODE", "STATE", "PROCESSES", "SUBSCRIPTIONS"],
        "{out}"
    );
    let row = |name: &str| -> Vec<&str> {
        lines
            .iter()
            .find(|l| l.starts_with(&format!("{name} ")))
            .unwrap_or_else(|| panic!("no row for {name}: {out}"))
            .split_whitespace()
            .collect()
    };
    assert_eq!(
        row("recorder"),
        ["recorder", "rpc", "ready", "1", "a.b,", "c.*"]
    );
    assert_eq!(row("echo")[..2], ["echo", "rpc"]);
    assert_eq!(row("echo")[4], "-");
    assert_eq!(row("broken")[2], "failed", "{out}");
    // Why a function cannot run is said under the table.
    assert!(out.contains("\nbroken: "), "{out}");
    assert!(out.contains("no_such_key"), "{out}");

    let answer = shs(&url, &["list", "--json"]).json();
    let names: Vec<&str> = answer["functions"]
        .as_array()
        .expect("functions")
        .iter()
        .filter_map(|f| f["name"].as_str())
        .collect();
    assert_eq!(names, ["broken", "echo", "recorder"], "{answer}");

    let out = shs(&url, &["subscriptions"]).ok().to_owned();
    assert_eq!(
        out.lines()
            .map(|l| l.split_whitespace().collect::<Vec<_>>())
            .collect::<Vec<_>>(),
        [
            vec!["TYPE", "FUNCTION"],
            vec!["a.b", "recorder"],
            vec!["c.*", "recorder"]
        ],
        "{out}"
    );
    let answer = shs(&url, &["subscriptions", "--json"]).json();
    assert_eq!(
        answer,
        json!({"subscriptions": [{"type": "a.b", "function": "recorder"},
                                  {"type": "c.*", "function": "recorder"}]})
    );
    server.stop_and_check();

    // An empty server.
    let mut server = ServerBuilder::new().start().await;
    server.wait_ready().await;
    assert_eq!(
        shs(&server.url, &["list"]).ok(),
        "no functions are deployed\n"
    );
    assert_eq!(
        shs(&server.url, &["subscriptions"]).ok(),
        "no subscriptions\n"
    );
    server.stop_and_check();
}

#[test]
fn with_the_server_down_every_command_says_how_to_reach_it() {
    let url = closed_port_url();
    let expected =
        format!("shs: cannot reach shs at {url}: is `shs serve` running? (set --url or SHS_URL)");
    for args in [
        &["invoke", "hello", "{}"][..],
        &["publish", "a.b", "{}"],
        &["publish", "a.b", "--async"],
        &["list"],
        &["subscriptions", "--json"],
        &["logs", "hello"],
        &["logs", "hello", "-f"],
    ] {
        let run = shs(&url, args);
        run.fails_with(&expected);
        assert_eq!(run.stdout, "", "{args:?}: {run:#?}");
    }
    // The same with --url, and with a URL written without http://.
    let bare = url.trim_start_matches("http://");
    shs("http://127.0.0.1:1", &["list", "--url", bare]).fails_with(&expected);
}

#[tokio::test]
async fn a_server_that_wants_an_api_key_gets_it_or_says_so() {
    let mut server = ServerBuilder::new()
        .fixture("echo")
        .args(&["--api-key", "k-one,k-two"])
        .start()
        .await;
    server.wait_ready().await;
    let url = server.url.clone();
    shs(&url, &["list"])
        .fails_with("shs: the server wants an API key: set --api-key or SHS_API_KEY");
    shs(&url, &["invoke", "echo", "{}", "--api-key", "wrong"])
        .fails_with("shs: the server refused the API key: check --api-key or SHS_API_KEY");
    // Sent as Authorization: Bearer, from the flag or from SHS_API_KEY; of several keys
    // separated by commas (as the server takes them in SHS_API_KEY), the first.
    let out = shs(&url, &["invoke", "echo", "1", "--api-key", "k-two"]).json();
    assert_eq!(out["input"], 1);
    for key in ["k-one", "k-one,k-two"] {
        let out = shs_in(&url, &["publish", "a.b"], &[("SHS_API_KEY", key)], "")
            .ok()
            .to_owned();
        assert!(out.contains(" published: "), "{out}");
    }
    server.stop_and_check();
}

#[tokio::test]
async fn logs_print_the_last_lines_and_follow_new_ones() {
    let mut server = ServerBuilder::new().fixture("echo").start().await;
    server.wait_ready().await;
    let url = server.url.clone();
    for n in 0..3 {
        shs(&url, &["invoke", "echo", &n.to_string()]).json();
    }
    // Each invoke logged "echo got a request", with its pid and request id.
    let wrote = |out: &str| out.matches("] echo got a request\n").count();
    let out = shs(&url, &["logs", "echo"]).ok().to_owned();
    assert_eq!(wrote(&out), 3, "{out}");
    let pid = server.pids_of("echo")[0];
    let line = out
        .lines()
        .find(|l| l.ends_with("] echo got a request"))
        .expect("a line");
    assert!(line.contains(&format!(" [{pid} ")), "{line}");
    assert!(line.starts_with("20"), "starts with its time: {line}");
    let out = shs(&url, &["logs", "echo", "--tail", "1"]).ok().to_owned();
    assert_eq!(out.lines().count(), 1, "{out}");
    assert_eq!(wrote(&out), 1, "{out}");
    assert_eq!(shs(&url, &["logs", "echo", "--tail", "0"]).ok(), "");

    // -f: only what comes from now on (with --tail 0), as it comes, until stopped.
    let mut follow = Command::new(env!("CARGO_BIN_EXE_shs"))
        .args(["logs", "echo", "-f", "--tail", "0", "--url", &url])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run shs logs -f");
    let stdout = follow.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    std::thread::sleep(Duration::from_millis(700));
    shs(&url, &["invoke", "echo", "{}"]).json();
    let line = rx
        .recv_timeout(PATIENCE)
        .expect("shs logs -f printed the new line");
    assert!(line.ends_with("] echo got a request"), "{line}");
    shs(&url, &["invoke", "echo", "{}"]).json();
    let line = rx.recv_timeout(PATIENCE).expect("and the next one");
    assert!(line.ends_with("] echo got a request"), "{line}");
    assert!(rx.try_recv().is_err(), "nothing twice");
    assert!(
        follow.try_wait().expect("try_wait").is_none(),
        "-f keeps following"
    );
    follow.kill().expect("stop shs logs -f");
    let _ = follow.wait();

    // An unknown function.
    shs(&url, &["logs", "nope"])
        .fails_with("no function named \"nope\" (`shs list` shows the functions deployed)");
    server.stop_and_check();
}

/// Runs a program in a folder and asserts it succeeds.
fn run_in(dir: &Path, program: &str, args: &[&str]) {
    let output = Command::new(program)
        .args(args)
        .current_dir(dir)
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("CARGO_BUILD_TARGET_DIR")
        .output()
        .unwrap_or_else(|e| panic!("run {program}: {e}"));
    assert!(
        output.status.success(),
        "{program} {args:?} in {} failed:\n{}\n{}",
        dir.display(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// `shs new NAME --lang LANG` in the functions folder of a running server; returns what it
/// printed.
fn new_function(server: &Server, name: &str, lang: &str) -> String {
    let dir = server.functions_dir();
    let dir = dir.to_str().expect("a UTF-8 path");
    let out = shs(&server.url, &["new", name, "--lang", lang, "--dir", dir])
        .ok()
        .to_owned();
    assert!(
        out.starts_with(&format!(
            "Created {lang} function {name} in {dir}/{name}/\n"
        )),
        "{out}"
    );
    assert!(
        out.contains(&format!("shs invoke {name} '{{\"name\":\"Ada\"}}'")),
        "{out}"
    );
    out
}

/// The generated function answers the greeting and takes its ping event.
async fn greets_and_takes_pings(server: &Server, name: &str) {
    let url = &server.url;
    // The function may still be (re)starting: retry until it answers.
    let deadline = Instant::now() + PATIENCE;
    let answer = loop {
        let run = shs(url, &["invoke", name, r#"{"name":"Ada"}"#]);
        if run.code == Some(0) || Instant::now() > deadline {
            break run.json();
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(answer, json!({"message": "Hello, Ada!"}));
    assert_eq!(
        shs(url, &["invoke", name, "{}"]).json(),
        json!({"message": "Hello, world!"})
    );
    let ping = format!("{name}.ping");
    let out = shs(url, &["publish", &ping, r#"{"from":"the test"}"#])
        .ok()
        .to_owned();
    assert!(out.ends_with("delivered to 1 function\n"), "{out}");
    assert!(
        shs(url, &["subscriptions"])
            .ok()
            .lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>() == [ping.as_str(), name]),
        "no subscription to {ping}"
    );
    // Its log lines reach the server's log.
    server.wait_for_log("Ada").await;
}

#[tokio::test]
async fn new_python_function_is_deployed_invoked_and_its_test_passes() {
    let mut server = ServerBuilder::new().start().await;
    server.wait_ready().await;
    let out = new_function(&server, "hello-py", "python");
    assert!(out.contains("&& python3 -m unittest)"), "{out}");
    wait_deployed(&server, "hello-py").await;
    greets_and_takes_pings(&server, "hello-py").await;
    let dir = server.functions_dir().join("hello-py");
    run_in(&dir, "python3", &["-m", "unittest"]);

    // Once there, it is not overwritten.
    let functions = server.functions_dir();
    let functions = functions.to_str().expect("UTF-8");
    shs(
        &server.url,
        &["new", "hello-py", "--lang", "node", "--dir", functions],
    )
    .fails_with("hello-py already exists");
    assert!(!dir.join("main.js").exists());
    server.stop_and_check();
}

#[tokio::test]
async fn new_webhook_function_checks_github_signatures_and_its_test_passes() {
    let builder = crate::secrets::with_secrets(
        ServerBuilder::new(),
        &[("hooky-webhook", "0123456789abcdef\n")],
    );
    let mut server = builder.start().await;
    server.wait_ready().await;
    let functions = server.functions_dir();
    let functions = functions.to_str().expect("UTF-8");
    let out = shs(
        &server.url,
        &["new", "hooky", "--template", "webhook", "--dir", functions],
    )
    .ok()
    .to_owned();
    assert!(out.contains("secrets/hooky-webhook"), "{out}");
    shs(
        &server.url,
        &[
            "new",
            "other",
            "--template",
            "webhook",
            "--lang",
            "node",
            "--dir",
            functions,
        ],
    )
    .fails_with("the webhook template is in Python");
    wait_deployed(&server, "hooky").await;
    let body = r#"{"zen":"Design for failure.","hook_id":1}"#;
    let signature = format!(
        "sha256={}",
        crate::webhooks::sign("0123456789abcdef", body.as_bytes())
    );
    let signed = server
        .request(
            reqwest::Method::POST,
            "/run/hooky",
            Some(body.to_owned()),
            &[("X-Hub-Signature-256", &signature)],
        )
        .await;
    assert_eq!(signed.status, 200, "{signed:?}");
    assert_eq!(
        signed.body,
        json!({"received": true, "event": "ping", "zen": "Design for failure."})
    );
    let unsigned = server.post("/run/hooky", body).await;
    assert_eq!(unsigned.status, 401, "{unsigned:?}");
    assert!(unsigned.message().contains("X-Hub-Signature-256"));
    run_in(
        &server.functions_dir().join("hooky"),
        "python3",
        &["-m", "unittest"],
    );
    server.stop_and_check();
}

#[tokio::test]
async fn new_node_function_is_deployed_invoked_and_its_test_passes() {
    let mut server = ServerBuilder::new().start().await;
    server.wait_ready().await;
    let out = new_function(&server, "hello-node", "node");
    assert!(out.contains("&& node --test)"), "{out}");
    wait_deployed(&server, "hello-node").await;
    greets_and_takes_pings(&server, "hello-node").await;
    run_in(
        &server.functions_dir().join("hello-node"),
        "node",
        &["--test"],
    );
    server.stop_and_check();
}

#[tokio::test]
async fn new_sh_function_is_deployed_and_invoked() {
    let mut server = ServerBuilder::new().start().await;
    server.wait_ready().await;
    new_function(&server, "hello_sh", "sh");
    wait_deployed(&server, "hello_sh").await;
    greets_and_takes_pings(&server, "hello_sh").await;
    // A name with a quote in it goes back into the answer still escaped.
    assert_eq!(
        shs(
            &server.url,
            &["invoke", "hello_sh", r#"{"name": "A \"B\""}"#]
        )
        .json(),
        json!({"message": "Hello, A \"B\"!"})
    );
    server.stop_and_check();
}

#[tokio::test]
async fn new_rust_function_builds_offline_is_deployed_invoked_and_its_test_passes() {
    let mut server = ServerBuilder::new().start().await;
    server.wait_ready().await;
    let out = new_function(&server, "hello-rs", "rust");
    assert!(out.contains("&& cargo build --release)"), "{out}");
    let dir = server.functions_dir().join("hello-rs");
    let cargo_toml = std::fs::read_to_string(dir.join("Cargo.toml")).expect("Cargo.toml");
    let sdk = Path::new(env!("CARGO_MANIFEST_DIR")).join("crates/shs-sdk");
    assert!(
        cargo_toml.contains(&format!("shs-sdk = {{ path = \"{}\" }}", sdk.display())),
        "{cargo_toml}"
    );
    // Built where function.toml says (its own target folder, inside the test's folder), from
    // the local cargo cache; the release test build reuses the release dependencies.
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    run_in(
        &dir,
        &cargo,
        &["build", "--release", "--offline", "--quiet"],
    );
    assert!(dir.join("target/release/hello-rs").is_file());
    greets_and_takes_pings(&server, "hello-rs").await;
    run_in(&dir, &cargo, &["test", "--release", "--offline", "--quiet"]);
    server.stop_and_check();
}

#[test]
fn new_refuses_bad_names_and_explains() {
    let dir = tempfile::tempdir().expect("temp dir");
    let functions = dir.path().join("fns");
    let functions = functions.to_str().expect("UTF-8");
    let url = closed_port_url();
    shs(
        &url,
        &["new", "a/b", "--lang", "python", "--dir", functions],
    )
    .fails_with("invalid function name \"a/b\"");
    shs(
        &url,
        &[
            "new",
            "x",
            "--lang",
            "sh",
            "--dir",
            functions,
            "--sdk-path",
            ".",
        ],
    )
    .fails_with("--sdk-path is for --lang rust only");
    shs(
        &url,
        &[
            "new",
            "x",
            "--lang",
            "rust",
            "--dir",
            functions,
            "--sdk-path",
            "/nowhere",
        ],
    )
    .fails_with("there is no shs-sdk crate at /nowhere");
    // The folder is made when missing; nothing is left behind but the function.
    shs(
        &url,
        &["new", "9lives", "--lang", "rust", "--dir", functions],
    )
    .ok();
    let cargo =
        std::fs::read_to_string(dir.path().join("fns/9lives/Cargo.toml")).expect("Cargo.toml");
    assert!(cargo.contains("name = \"fn-9lives\""), "{cargo}");
    let left: Vec<_> = std::fs::read_dir(dir.path().join("fns"))
        .expect("read fns")
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(left, ["9lives"]);
}
