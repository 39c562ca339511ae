//! The SDKs under the real supervisor: the same "tour" function written with each of them
//! (`tests/fixtures/sdk-python` on `sdk/python`, `tests/fixtures/sdk-node` on `sdk/node`,
//! `crates/shs-sdk/examples/tour.rs`), deployed as the SDK READMEs say, and driven the same
//! way: invoke, event handlers by type and the catch-all, start-up subscriptions, publish
//! (waiting and fire-and-forget), subscribe and unsubscribe from a handler, structured and
//! unexpected errors, logs, the exit at the end of input, and concurrency 4 with answers
//! that come back out of order. Also the Rust echo example that the benchmarks use.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use serde_json::{Value, json};

use crate::harness::{Server, ServerBuilder, copy_dir, fixtures_dir, poll, write_file};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Lang {
    Python,
    Node,
    Rust,
}

fn sdk_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("sdk")
}

/// Builds the examples of `crates/shs-sdk` (once per test run) into the target folder this
/// test binary was built in, and returns the path of example `name`.
fn example_binary(name: &str) -> PathBuf {
    static EXAMPLES: OnceLock<PathBuf> = OnceLock::new();
    EXAMPLES
        .get_or_init(|| {
            // CARGO_BIN_EXE_shs is TARGET/PROFILE/shs.
            let profile_dir = Path::new(env!("CARGO_BIN_EXE_shs"))
                .parent()
                .expect("the profile folder");
            let target_dir = profile_dir.parent().expect("the target folder");
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| env!("CARGO").to_owned());
            let mut build = Command::new(cargo);
            build
                .current_dir(env!("CARGO_MANIFEST_DIR"))
                .args([
                    "build",
                    "--quiet",
                    "-p",
                    "shs-sdk",
                    "--examples",
                    "--target-dir",
                ])
                .arg(target_dir);
            if profile_dir.file_name().is_some_and(|p| p == "release") {
                build.arg("--release");
            }
            let status = build.status().expect("run cargo build");
            assert!(
                status.success(),
                "cargo build of the shs-sdk examples failed"
            );
            profile_dir.join("examples")
        })
        .join(name)
}

/// Deploys the tour in `lang` as function `name`, with `toml` as its function.toml.
fn deploy(builder: ServerBuilder, lang: Lang, name: &str, toml: &str) -> ServerBuilder {
    let dir = builder.functions_dir().join(name);
    match lang {
        Lang::Python => {
            copy_dir(&fixtures_dir().join("sdk-python"), &dir);
            std::fs::copy(sdk_dir().join("python/shs_sdk.py"), dir.join("shs_sdk.py"))
                .expect("copy shs_sdk.py");
        }
        Lang::Node => {
            copy_dir(&fixtures_dir().join("sdk-node"), &dir);
            let package = dir.join("node_modules/shs-sdk");
            std::fs::create_dir_all(&package).expect("create node_modules/shs-sdk");
            for file in ["index.js", "package.json"] {
                std::fs::copy(sdk_dir().join("node").join(file), package.join(file))
                    .expect("copy the node package");
            }
        }
        Lang::Rust => {
            std::fs::create_dir_all(&dir).expect("create the function folder");
            std::fs::copy(example_binary("tour"), dir.join("main")).expect("copy the tour binary");
        }
    }
    write_file(&dir, "function.toml", toml);
    builder
}

/// The events function `name` has received.
async fn received(server: &Server, name: &str) -> Vec<Value> {
    let answer = server.run(name, json!({"action": "events"})).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    answer.body["events"].as_array().expect("events").clone()
}

async fn handlers_publish_and_subscriptions(lang: Lang) {
    // min_instances: its one process runs from the start to the end (a function with no
    // subscriptions is otherwise stopped once it has answered initialize).
    let builder = deploy(
        ServerBuilder::new(),
        lang,
        "pub",
        "instances = 1\nmin_instances = 1\n",
    );
    let builder = deploy(
        builder,
        lang,
        "sub",
        "instances = 1\nenv = { EVENTS = \"1\" }\n",
    );
    let mut server = builder.start().await;
    server.wait_ready().await;

    // Invoke: the input and the context.
    let answer = server
        .request(
            reqwest::Method::POST,
            "/run/pub",
            Some(json!({"x": [1, "é"]}).to_string()),
            &[("x-request-id", "sdk-request-1")],
        )
        .await;
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(
        answer.body,
        json!({"input": {"x": [1, "é"]}, "request_id": "sdk-request-1", "function": "pub"})
    );

    // Start-up subscriptions: the types with handlers, and the declared pattern.
    let subscriptions = server.subscriptions().await;
    for pattern in ["user.created", "tour.ping", "audit.>"] {
        assert!(
            subscriptions.contains(&(pattern.to_owned(), "sub".to_owned())),
            "{pattern}: {subscriptions:?}"
        );
    }
    assert!(
        !subscriptions.iter().any(|(_, f)| f == "pub"),
        "{subscriptions:?}"
    );

    // A publish that waits: answered once the subscriber has taken the event.
    let answer = server
        .run(
            "pub",
            json!({"action": "publish", "type": "user.created", "payload": {"name": "Ada"}}),
        )
        .await;
    assert_eq!(answer.status, 200, "{answer:?}");
    let publish = &answer.body["publish"];
    assert_eq!(publish["published"], true, "{answer:?}");
    assert_eq!(publish["delivered"], 1, "{answer:?}");
    assert_eq!(publish["errors"], json!([]));
    let events = received(&server, "sub").await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["handler"], "user.created");
    assert_eq!(events[0]["id"], publish["event_id"]);
    assert_eq!(events[0]["type"], "user.created");
    assert_eq!(events[0]["source"], "/functions/pub");
    assert_eq!(events[0]["payload"], json!({"name": "Ada"}));
    assert!(
        events[0]["request_id"]
            .as_str()
            .is_some_and(|r| !r.is_empty())
    );

    // A type with no handler of its own, subscribed by pattern: the catch-all takes it.
    let answer = server.publish("audit.login", json!({"who": "ada"})).await;
    assert_eq!(answer.body["delivered"], 1, "{answer:?}");
    let events = received(&server, "sub").await;
    assert_eq!(events[1]["handler"], "any", "{events:?}");
    assert_eq!(events[1]["type"], "audit.login");

    // Fire-and-forget: answered at once, delivered all the same.
    let answer = server
        .run(
            "pub",
            json!({"action": "publish_nowait", "type": "user.created", "payload": {"name": "Bob"}}),
        )
        .await;
    assert_eq!(answer.body, json!({"ok": true}), "{answer:?}");
    assert!(
        poll(|| async { received(&server, "sub").await.len() == 3 }).await,
        "the fire-and-forget event never arrived"
    );
    let events = received(&server, "sub").await;
    assert_eq!(events[2]["handler"], "user.created");
    assert_eq!(events[2]["payload"], json!({"name": "Bob"}));

    // Subscribe and unsubscribe from a handler.
    let answer = server
        .run("sub", json!({"action": "subscribe", "type": "extra.*"}))
        .await;
    assert_eq!(
        answer.body,
        json!({"result": {"subscribed": true, "type": "extra.*"}}),
        "{answer:?}"
    );
    let answer = server.publish("extra.thing", json!(7)).await;
    assert_eq!(answer.body["delivered"], 1, "{answer:?}");
    let events = received(&server, "sub").await;
    assert_eq!(events[3]["handler"], "any");
    assert_eq!(events[3]["payload"], 7);
    let answer = server
        .run("sub", json!({"action": "unsubscribe", "type": "extra.*"}))
        .await;
    assert_eq!(
        answer.body,
        json!({"result": {"unsubscribed": true, "type": "extra.*"}}),
        "{answer:?}"
    );
    let answer = server.publish("extra.thing", json!(8)).await;
    assert_eq!(answer.body["delivered"], 0, "{answer:?}");

    // A publish the supervisor refuses is the handler's error, with the refusal in data.
    let answer = server
        .run("pub", json!({"action": "publish", "type": "a b"}))
        .await;
    assert_eq!(answer.status, 500, "{answer:?}");
    assert_eq!(answer.body["error"]["code"], -32000);
    assert!(
        answer
            .message()
            .starts_with("publish failed: invalid event type"),
        "{answer:?}"
    );
    assert_eq!(answer.body["error"]["data"]["error"]["code"], -32602);

    // A structured error: 500 with its code, message and data.
    let answer = server.run("pub", json!({"action": "fail"})).await;
    assert_eq!(answer.status, 500, "{answer:?}");
    assert_eq!(answer.body["error"]["code"], 4242);
    assert_eq!(answer.message(), "nope");
    assert_eq!(answer.body["error"]["data"], json!({"why": "because"}));
    assert_eq!(answer.body["error"]["function"], "pub");

    // An unexpected error: code -32000 with its message; the process goes on serving.
    let answer = server.run("pub", json!({"action": "crash"})).await;
    assert_eq!(answer.status, 500, "{answer:?}");
    assert_eq!(answer.body["error"]["code"], -32000);
    assert!(answer.message().contains("boom"), "{answer:?}");
    if lang == Lang::Rust {
        let answer = server.run("pub", json!({"action": "panic"})).await;
        assert_eq!(answer.status, 500, "{answer:?}");
        assert_eq!(answer.body["error"]["code"], -32000);
        assert_eq!(answer.message(), "panicked: boom");
    }
    assert_eq!(server.run("pub", json!({"n": 1})).await.status, 200);

    // Logs go to stderr, which the supervisor logs with the function's name.
    let text = format!("hello from the {lang:?} tour");
    let answer = server
        .run("pub", json!({"action": "log", "text": text}))
        .await;
    assert_eq!(answer.status, 200, "{answer:?}");
    server.wait_for_log(&text).await;

    // At the end of input, each process returns from run() (and exits 0: nothing is left).
    server.stop_and_check();
    let logs = server.logs();
    assert_eq!(
        logs.matches("tour: stdin closed, exiting").count(),
        2,
        "both processes saw the end of input; log:\n{logs}"
    );
}

/// With `declared`, cpub's function.toml sets no `concurrency`: the one the SDK declares in
/// its answer to `initialize` (its threads; 16 for Node) is in force.
async fn concurrency_matches_answers_by_id(lang: Lang, declared: bool) {
    let toml = if declared {
        "instances = 1\nenv = { CONCURRENCY = \"4\" }\n"
    } else {
        "concurrency = 4\ninstances = 1\nenv = { CONCURRENCY = \"4\" }\n"
    };
    let builder = deploy(ServerBuilder::new(), lang, "cpub", toml);
    let toml = "concurrency = 4\ninstances = 1\nenv = { CONCURRENCY = \"4\", EVENTS = \"1\" }\n";
    let builder = deploy(builder, lang, "csub", toml);
    let mut server = builder.start().await;
    server.wait_ready().await;

    // Four invokes in flight on the one process of cpub. Each waits until all four are in,
    // then publishes tour.ping {"n"}; csub answers ping n after (3 - n) * 100 ms, so the
    // answers to the publishes come back in the reverse order of the requests.
    let answers = futures::future::join_all(
        (0..4).map(|n| server.run("cpub", json!({"action": "barrier", "n": n}))),
    )
    .await;
    let events = received(&server, "csub").await;
    assert_eq!(events.len(), 4, "{events:?}");
    let mut event_ids = Vec::new();
    for (n, answer) in answers.iter().enumerate() {
        assert_eq!(answer.status, 200, "{answer:?}");
        assert_eq!(answer.body["n"], n, "{answer:?}");
        let publish = &answer.body["publish"];
        assert_eq!(publish["delivered"], 1, "{answer:?}");
        assert_eq!(publish["errors"], json!([]), "{answer:?}");
        // The answer this request got is the one to its own publish: the event with its n.
        let event = events
            .iter()
            .find(|e| e["id"] == publish["event_id"])
            .unwrap_or_else(|| panic!("no event {} in {events:?}", publish["event_id"]));
        assert_eq!(event["payload"], json!({"n": n}), "{answers:?} {events:?}");
        event_ids.push(publish["event_id"].clone());
    }
    event_ids.sort_by_key(Value::to_string);
    event_ids.dedup();
    assert_eq!(event_ids.len(), 4, "{answers:?}");
    assert_eq!(server.pids_of("cpub").len(), 1, "one process took all four");
    let info = server.function_info("cpub").await.expect("cpub is listed");
    let expected = match (declared, lang) {
        (false, _) => json!([4, "function.toml"]),
        (true, Lang::Node) => json!([16, "declared"]),
        (true, _) => json!([4, "declared"]),
    };
    assert_eq!(
        json!([info["concurrency"], info["concurrency_source"]]),
        expected,
        "{info}"
    );
    if !declared && lang == Lang::Python {
        // The SDK declared its 4 threads too; the same number overrides nothing.
        assert!(info.get("note").is_none(), "{info}");
    }
    server.stop_and_check();
}

async fn a_failed_start_up_is_reported(lang: Lang) {
    let builder = deploy(
        ServerBuilder::new(),
        lang,
        "bad",
        "env = { SUBSCRIBE = \"a b\" }\n",
    );
    let mut server = builder.start().await;
    server.wait_ready().await;
    // The function logs why and exits before it answers initialize: a failed start, 503,
    // with that line in the stderr tail.
    let answer = server.run("bad", json!({})).await;
    assert_eq!(answer.status, 503, "{answer:?}");
    assert!(
        answer
            .body
            .to_string()
            .contains("start-up failed: subscribe failed: invalid event type"),
        "{answer:?}"
    );
    server.stop_and_check();
}

/// Runs an SDK's own test suite (no server), so that `cargo test --workspace` covers it too.
fn run_unit_tests(program: &str, args: &[&str]) {
    let output = Command::new(program)
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap_or_else(|e| panic!("run {program}: {e}"));
    assert!(
        output.status.success(),
        "{program} {args:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn python_sdk_unit_tests_pass() {
    run_unit_tests(
        "python3",
        &["-m", "unittest", "discover", "sdk/python/tests"],
    );
}

#[test]
fn node_sdk_unit_tests_pass() {
    run_unit_tests("node", &["--test", "sdk/node/test/sdk.test.js"]);
}

#[tokio::test]
async fn python_sdk_handlers_publish_and_subscriptions() {
    handlers_publish_and_subscriptions(Lang::Python).await;
}

#[tokio::test]
async fn python_sdk_concurrency_matches_answers_by_id() {
    concurrency_matches_answers_by_id(Lang::Python, false).await;
}

#[tokio::test]
async fn python_sdk_declared_concurrency_needs_no_function_toml() {
    concurrency_matches_answers_by_id(Lang::Python, true).await;
}

#[tokio::test]
async fn python_sdk_a_failed_start_up_is_reported() {
    a_failed_start_up_is_reported(Lang::Python).await;
}

#[tokio::test]
async fn node_sdk_handlers_publish_and_subscriptions() {
    handlers_publish_and_subscriptions(Lang::Node).await;
}

#[tokio::test]
async fn node_sdk_concurrency_matches_answers_by_id() {
    concurrency_matches_answers_by_id(Lang::Node, false).await;
}

#[tokio::test]
async fn node_sdk_declared_concurrency_needs_no_function_toml() {
    concurrency_matches_answers_by_id(Lang::Node, true).await;
}

#[tokio::test]
async fn node_sdk_a_failed_start_up_is_reported() {
    a_failed_start_up_is_reported(Lang::Node).await;
}

#[tokio::test]
async fn rust_sdk_handlers_publish_and_subscriptions() {
    handlers_publish_and_subscriptions(Lang::Rust).await;
}

#[tokio::test]
async fn rust_sdk_concurrency_matches_answers_by_id() {
    concurrency_matches_answers_by_id(Lang::Rust, false).await;
}

#[tokio::test]
async fn rust_sdk_declared_concurrency_needs_no_function_toml() {
    concurrency_matches_answers_by_id(Lang::Rust, true).await;
}

#[tokio::test]
async fn rust_sdk_a_failed_start_up_is_reported() {
    a_failed_start_up_is_reported(Lang::Rust).await;
}

#[tokio::test]
async fn rust_sdk_echo_example_answers_its_input_unchanged() {
    // The benchmarks' Rust echo: the raw path, the input passed through as it was written.
    let builder = ServerBuilder::new();
    let dir = builder.functions_dir().join("echo-rs");
    std::fs::create_dir_all(&dir).expect("create the function folder");
    std::fs::copy(example_binary("echo"), dir.join("main")).expect("copy the echo binary");
    let mut server = builder.start().await;
    server.wait_ready().await;
    for body in [
        r#"{"b": [1, 2.50, "\u00e9"], "a": {}}"#,
        "[]",
        "\"text\"",
        "12",
    ] {
        let response = server
            .client
            .post(format!("{}/run/echo-rs", server.url))
            .body(body)
            .send()
            .await
            .expect("POST /run/echo-rs");
        assert_eq!(response.status().as_u16(), 200);
        assert_eq!(response.text().await.expect("body"), body);
    }
    // Requests in flight together are answered, each with its own input.
    let answers =
        futures::future::join_all((0..20).map(|n| server.run("echo-rs", json!({"n": n})))).await;
    for (n, answer) in answers.iter().enumerate() {
        assert_eq!(answer.body, json!({"n": n}), "{answer:?}");
    }
    // With no function.toml, the concurrency it declares is in force.
    let info = server.function_info("echo-rs").await.expect("listed");
    assert_eq!(info["concurrency"], 16, "{info}");
    assert_eq!(info["concurrency_source"], "declared", "{info}");
    assert_eq!(info["instances_source"], "default", "{info}");
    server.stop_and_check();
}
