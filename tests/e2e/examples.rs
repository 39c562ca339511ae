//! The shipped `functions/hello` and the event examples in `examples/events`, deployed as the
//! examples' README says, in both languages.

use std::fs;
use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use crate::harness::{Server, ServerBuilder, copy_dir, examples_dir, poll};

#[tokio::test]
async fn the_shipped_hello_function_says_hello() {
    let hello = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("functions/hello");
    let builder = ServerBuilder::new();
    copy_dir(&hello, &builder.functions_dir().join("hello"));
    let mut server = builder.start().await;
    let answer = server.run("hello", json!({"name": "Ada"})).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(answer.body, json!({"message": "Hello, Ada!"}));
    assert_eq!(
        server.post("/run/hello", "").await.body,
        json!({"message": "Hello, world!"})
    );
    server.stop_and_check();
}

/// Deploys `examples/events/<lang>/<name>` into the running server's folder as the examples'
/// README says, and waits until it is listed:
///
/// ```sh
/// # Python
/// mkdir -p functions/NAME
/// cp sdk/python/shs_sdk.py examples/events/python/NAME/main.py functions/NAME/
/// # Node
/// mkdir -p functions/NAME/node_modules/shs-sdk
/// cp sdk/node/package.json sdk/node/index.js functions/NAME/node_modules/shs-sdk/
/// cp examples/events/node/NAME/main.js functions/NAME/
/// ```
///
/// The SDK goes first, as there: the function starts as soon as its main file appears.
async fn deploy(server: &Server, lang: &str, name: &str) {
    let sdk = Path::new(env!("CARGO_MANIFEST_DIR")).join("sdk");
    let dir = server.functions_dir().join(name);
    let (sdk_files, sdk_dest): (&[&str], PathBuf) = match lang {
        "python" => (&["python/shs_sdk.py"], dir.clone()),
        "node" => (
            &["node/package.json", "node/index.js"],
            dir.join("node_modules/shs-sdk"),
        ),
        _ => panic!("no SDK for {lang}"),
    };
    fs::create_dir_all(&sdk_dest).expect("mkdir -p");
    for file in sdk_files {
        let from = sdk.join(file);
        fs::copy(&from, sdk_dest.join(from.file_name().expect("a file name")))
            .expect("copy the SDK");
    }
    copy_dir(&examples_dir().join("events").join(lang).join(name), &dir);
    assert!(
        poll(|| async {
            server
                .function_info(name)
                .await
                .is_some_and(|f| f["state"] == "ready")
        })
        .await,
        "{name} deployed; log:\n{}",
        server.logs()
    );
}

async fn subscriber_events(server: &Server) -> Vec<Value> {
    let answer = server.run("event-subscriber", json!({})).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    answer.body["received"]
        .as_array()
        .expect("received")
        .clone()
}

async fn walk_through(lang: &str) {
    let mut server = ServerBuilder::new().start().await;
    for name in [
        "event-subscriber",
        "event-publisher",
        "process-step1",
        "process-step2",
        "process-step3",
    ] {
        deploy(&server, lang, name).await;
    }

    // A function publishes; the subscriber got it by the time the answer came back.
    let published = server
        .run(
            "event-publisher",
            json!({"type": "user.created", "payload": {"name": "Ada"}}),
        )
        .await;
    assert_eq!(published.status, 200, "{published:?}");
    assert_eq!(published.body["published"]["delivered"], 1, "{published:?}");
    let events = subscriber_events(&server).await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["type"], "user.created");
    assert_eq!(events[0]["payload"], json!({"name": "Ada"}));
    assert_eq!(events[0]["source"], "/functions/event-publisher");

    // A bad input: the function's structured error, as a 500.
    let bad = server.run("event-publisher", json!({"type": ""})).await;
    assert_eq!(bad.status, 500, "{bad:?}");
    assert_eq!(
        bad.body["error"]["message"],
        "\"type\" must be a non-empty string"
    );
    assert_eq!(bad.body["error"]["code"], -32602, "{bad:?}");
    assert_eq!(bad.body["error"]["data"], json!({"type": ""}), "{bad:?}");

    // Publishing from outside.
    let outside = server
        .publish("user.created", json!({"name": "Grace"}))
        .await;
    assert_eq!(outside.body["delivered"], 1, "{outside:?}");
    assert_eq!(
        subscriber_events(&server).await[1]["payload"],
        json!({"name": "Grace"})
    );

    // The three-step chain ends with process.completed at the subscriber.
    let chain = server
        .run("process-step1", json!({"order": {"id": 7}}))
        .await;
    assert_eq!(chain.status, 200, "{chain:?}");
    assert_eq!(chain.body["step"], 1);
    assert_eq!(chain.body["publish"]["delivered"], 1, "{chain:?}");
    assert_eq!(chain.body["publish"]["errors"], json!([]));
    let events = subscriber_events(&server).await;
    let completed = events
        .iter()
        .find(|e| e["type"] == "process.completed")
        .expect("process.completed arrived");
    assert_eq!(
        completed["payload"]["steps"],
        json!(["step1", "step2", "step3"])
    );
    assert_eq!(completed["source"], "/functions/process-step3");

    // Started in the middle, from outside.
    let middle = server
        .publish(
            "process.step2.completed",
            json!({"order": {"id": 8}, "steps": ["manual"]}),
        )
        .await;
    assert_eq!(middle.body["delivered"], 1, "{middle:?}");
    let events = subscriber_events(&server).await;
    assert_eq!(
        events.last().expect("an event")["payload"],
        json!({"order": {"id": 8}, "steps": ["manual", "step3"]})
    );

    // The steps in the middle only say how they run.
    for (step, name) in [(2, "process-step2"), (3, "process-step3")] {
        let answer = server.run(name, json!({})).await;
        assert_eq!(answer.status, 200, "{answer:?}");
        assert_eq!(answer.body["step"], step, "{answer:?}");
        assert!(
            answer.body["message"]
                .as_str()
                .is_some_and(|m| m.contains("POST /run/process-step1")),
            "{answer:?}"
        );
    }

    let subscriptions = server.subscriptions().await;
    for expected in [
        ("user.created", "event-subscriber"),
        ("process.completed", "event-subscriber"),
        ("process.step1.completed", "process-step2"),
        ("process.step2.completed", "process-step3"),
    ] {
        assert!(
            subscriptions.contains(&(expected.0.into(), expected.1.into())),
            "{expected:?} in {subscriptions:?}"
        );
    }
    server.stop_and_check();
}

#[tokio::test]
async fn the_python_event_examples_work_as_documented() {
    walk_through("python").await;
}

#[tokio::test]
async fn the_node_event_examples_work_as_documented() {
    walk_through("node").await;
}
