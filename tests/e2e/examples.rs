//! The shipped `functions/hello` and the event examples in `examples/events`, deployed as the
//! examples' README says, in both languages, and driven with the original walkthrough's own
//! `curl` commands (the same bodies, sent the way curl sends them).

use std::fs;
use std::path::{Path, PathBuf};

use serde_json::json;

use crate::harness::{Answer, Server, ServerBuilder, copy_dir, examples_dir, poll};

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

// The original walkthrough's bodies (`curl -d '...'` in /work/shared/seed/event-examples.txt),
// byte for byte, line breaks included: curl sends them as they are, as a form.
const SEED_PUBLISH: &str = "{\n\"event_type\": \"user.created\",\n\"payload\": {\n\"user_id\": 123,\n\"name\": \"John Doe\",\n\"email\": \"john@example.com\"\n}\n}";
const SEED_SUBSCRIBE: &str = "{\n\"event_type\": \"user.created\"\n}";
const SEED_EVENT: &str = "{\n\"type\": \"user.created\",\n\"payload\": {\n\"user_id\": 123,\n\"name\": \"John Doe\",\n\"email\": \"john@example.com\"\n}\n}";
const SEED_LOG_LINE: &str = r#"Received event: user.created with payload: {"user_id":123,"name":"John Doe","email":"john@example.com"}"#;

/// `curl -X POST URL/PATH -d BODY`: the body as it is, with curl's content type.
async fn curl(server: &Server, path: &str, body: &str) -> Answer {
    server
        .request(
            reqwest::Method::POST,
            path,
            Some(body.to_owned()),
            &[("content-type", "application/x-www-form-urlencoded")],
        )
        .await
}

/// What the function wrote to its log (stderr), oldest first.
async fn log_of(server: &Server, name: &str) -> Vec<String> {
    let answer = server
        .get(&format!("/functions/{name}/logs?tail=10000"))
        .await;
    assert_eq!(answer.status, 200, "{answer:?}");
    answer.body["lines"]
        .as_array()
        .expect("lines")
        .iter()
        .filter(|l| l["stream"] == "stderr")
        .filter_map(|l| l["message"].as_str().map(str::to_owned))
        .collect()
}

/// Waits until `name`'s log holds `line` `count` times (exactly, once it does); the log is
/// read from stderr as it comes, a moment after the answer it goes with.
async fn wait_for_line(server: &Server, name: &str, line: &str, count: usize) {
    let seen = poll(|| async {
        log_of(server, name)
            .await
            .iter()
            .filter(|l| *l == line)
            .count()
            >= count
    })
    .await;
    let log = log_of(server, name).await;
    assert!(seen, "{line:?} x{count} in {name}'s log: {log:#?}");
    assert_eq!(log.iter().filter(|l| *l == line).count(), count, "{log:#?}");
}

/// Asserts a 500 with the function's error `message`.
#[track_caller]
fn assert_error(answer: &Answer, function: &str, message: &str) {
    assert_eq!(answer.status, 500, "{answer:?}");
    assert_eq!(
        answer.body,
        json!({"error": {"message": message, "function": function, "code": -32602}}),
        "{answer:?}"
    );
}

async fn walk_through(lang: &str) {
    let mut server = ServerBuilder::new().start().await;

    // 1. The publisher, with the walkthrough's command: nobody subscribed yet.
    deploy(&server, lang, "event-publisher").await;
    let published = curl(&server, "/run/event-publisher", SEED_PUBLISH).await;
    assert_eq!(published.status, 200, "{published:?}");
    let seed_answer = json!({"published": true, "event_type": "user.created", "errors": []});
    assert_eq!(published.body, seed_answer);

    // Its errors: both fields required, of the right kind, as a 500 with the message.
    let event_type_error = "event_type is required and must be a string";
    let payload_error = "payload is required and must be an object";
    for (body, message) in [
        (r#"{"payload": {"user_id": 123}}"#, event_type_error),
        (r#"{"event_type": 7, "payload": {}}"#, event_type_error),
        (r#"{"event_type": null, "payload": {}}"#, event_type_error),
        ("[]", event_type_error),
        ("", event_type_error),
        (r#"{"event_type": "user.created"}"#, payload_error),
        (
            r#"{"event_type": "user.created", "payload": [1]}"#,
            payload_error,
        ),
        (
            r#"{"event_type": "user.created", "payload": null}"#,
            payload_error,
        ),
        (
            r#"{"event_type": "user.created", "payload": "x"}"#,
            payload_error,
        ),
    ] {
        let answer = curl(&server, "/run/event-publisher", body).await;
        assert_error(&answer, "event-publisher", message);
    }
    // A string that is no event type: the supervisor refuses the publish.
    let answer = curl(
        &server,
        "/run/event-publisher",
        r#"{"event_type": "", "payload": {}}"#,
    )
    .await;
    assert_eq!(answer.status, 500, "{answer:?}");
    assert!(answer.message().starts_with("publish failed"), "{answer:?}");

    // 2. The subscriber: only its start-up subscription, until it is asked for more.
    deploy(&server, lang, "event-subscriber").await;
    let subscriber = |t: &str| (t.to_owned(), "event-subscriber".to_owned());
    let subscriptions = server.subscriptions().await;
    assert!(subscriptions.contains(&subscriber("process.completed")));
    assert!(!subscriptions.contains(&subscriber("user.created")));

    let subscribed = curl(&server, "/run/event-subscriber", SEED_SUBSCRIBE).await;
    assert_eq!(subscribed.status, 200, "{subscribed:?}");
    assert_eq!(
        subscribed.body,
        json!({"subscribed": true, "event_type": "user.created"})
    );
    assert!(
        server
            .subscriptions()
            .await
            .contains(&subscriber("user.created"))
    );

    // The walkthrough's publish again: now it reaches the subscriber, which logs it.
    let published = curl(&server, "/run/event-publisher", SEED_PUBLISH).await;
    assert_eq!(published.status, 200, "{published:?}");
    assert_eq!(published.body, seed_answer);
    wait_for_line(&server, "event-subscriber", SEED_LOG_LINE, 1).await;

    // Any type, subscribed to at run time, then published from outside.
    let answer = curl(
        &server,
        "/run/event-subscriber",
        r#"{"event_type": "order.shipped"}"#,
    )
    .await;
    assert_eq!(
        answer.body,
        json!({"subscribed": true, "event_type": "order.shipped"})
    );
    let shipped = curl(
        &server,
        "/events",
        r#"{"type": "order.shipped", "payload": {"order_id": 42}}"#,
    )
    .await;
    assert_eq!(shipped.status, 200, "{shipped:?}");
    assert_eq!(shipped.body["delivered"], 1, "{shipped:?}");
    let line = r#"Received event: order.shipped with payload: {"order_id":42}"#;
    wait_for_line(&server, "event-subscriber", line, 1).await;

    // Its errors: a 500 with the message; a pattern the supervisor refuses, with its reason.
    for body in ["{}", r#"{"event_type": ["a"]}"#, "", "\"user.created\""] {
        let answer = curl(&server, "/run/event-subscriber", body).await;
        assert_error(&answer, "event-subscriber", event_type_error);
    }
    let answer = curl(
        &server,
        "/run/event-subscriber",
        r#"{"event_type": "a..b"}"#,
    )
    .await;
    assert_eq!(answer.status, 500, "{answer:?}");
    assert!(
        answer.message().starts_with("subscribe failed"),
        "{answer:?}"
    );

    // 3. The event API, with the walkthrough's command.
    let event = curl(&server, "/events", SEED_EVENT).await;
    assert_eq!(event.status, 200, "{event:?}");
    assert_eq!(event.body["status"], "published", "{event:?}");
    assert_eq!(event.body["delivered"], 1, "{event:?}");
    assert_eq!(event.body["errors"], json!([]), "{event:?}");
    wait_for_line(&server, "event-subscriber", SEED_LOG_LINE, 2).await;

    // 4. The three-step chain ends with process.completed at the subscriber.
    for name in ["process-step1", "process-step2", "process-step3"] {
        deploy(&server, lang, name).await;
    }
    let chain = server
        .run("process-step1", json!({"order": {"id": 7}}))
        .await;
    assert_eq!(chain.status, 200, "{chain:?}");
    assert_eq!(chain.body["step"], 1);
    assert_eq!(chain.body["publish"]["delivered"], 1, "{chain:?}");
    assert_eq!(chain.body["publish"]["errors"], json!([]));
    let line = r#"Received event: process.completed with payload: {"order":{"id":7},"steps":["step1","step2","step3"]}"#;
    wait_for_line(&server, "event-subscriber", line, 1).await;

    // Started in the middle, from outside.
    let middle = server
        .publish(
            "process.step2.completed",
            json!({"order": {"id": 8}, "steps": ["manual"]}),
        )
        .await;
    assert_eq!(middle.body["delivered"], 1, "{middle:?}");
    let line = r#"Received event: process.completed with payload: {"order":{"id":8},"steps":["manual","step3"]}"#;
    wait_for_line(&server, "event-subscriber", line, 1).await;

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
        ("order.shipped", "event-subscriber"),
        ("process.completed", "event-subscriber"),
        ("process.step1.completed", "process-step2"),
        ("process.step2.completed", "process-step3"),
    ] {
        assert!(
            subscriptions.contains(&(expected.0.into(), expected.1.into())),
            "{expected:?} in {subscriptions:?}"
        );
    }
    // Every event the subscriber received, and nothing else, is in its log.
    let received: Vec<String> = log_of(&server, "event-subscriber")
        .await
        .into_iter()
        .filter(|l| l.starts_with("Received event: "))
        .collect();
    assert_eq!(received.len(), 5, "{received:#?}");
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

/// `examples/http/github-webhook` as its README runs it: the secret in a private folder, the
/// signature made with `openssl dgst -sha256 -hmac`, a right, a wrong and a missing one.
#[tokio::test]
async fn the_github_webhook_example_works_as_documented() {
    let builder = ServerBuilder::new();
    let dir = builder.functions_dir().join("github-webhook");
    copy_dir(
        &examples_dir().join("http/github-webhook/functions/github-webhook"),
        &dir,
    );
    let sdk = Path::new(env!("CARGO_MANIFEST_DIR")).join("sdk/python/shs_sdk.py");
    fs::copy(&sdk, dir.join("shs_sdk.py")).expect("copy the SDK");
    let builder = crate::secrets::with_secrets(
        builder,
        &[("github-webhook", "It-is-a-secret-to-everybody\n")],
    );
    let secrets = builder
        .functions_dir()
        .parent()
        .expect("parent")
        .join("secrets/github-webhook");
    let mut server = builder.start().await;
    server.wait_ready().await;
    let body = r#"{"zen":"Design for failure.","hook_id":42}"#;
    // The README's own command.
    let script = format!(
        "printf '%s' '{body}' | openssl dgst -sha256 -hmac \"$(cat {})\" | sed 's/^.* //'",
        secrets.display()
    );
    let out = std::process::Command::new("sh")
        .args(["-c", &script])
        .output()
        .expect("openssl");
    let sig = String::from_utf8(out.stdout)
        .expect("utf-8")
        .trim()
        .to_owned();
    assert_eq!(
        sig,
        crate::webhooks::sign("It-is-a-secret-to-everybody", body.as_bytes())
    );
    assert_eq!(
        sig, "c4ef7ce472e501ac9d4e3bc8a7c5f36900ec0fc0b3fc2561045041ebd346e8fd",
        "the README's transcript"
    );
    let send = |signature: Option<String>| {
        let server = &server;
        async move {
            let mut headers = vec![("Content-Type", "application/json".to_owned())];
            if let Some(s) = signature {
                headers.push(("X-Hub-Signature-256", s));
            }
            let headers: Vec<(&str, &str)> =
                headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
            server
                .request(
                    reqwest::Method::POST,
                    "/run/github-webhook",
                    Some(body.to_owned()),
                    &headers,
                )
                .await
        }
    };
    let right = send(Some(format!("sha256={sig}"))).await;
    assert_eq!(right.status, 200, "{right:?}");
    assert_eq!(
        right.body,
        json!({"received": true, "event": "ping", "zen": "Design for failure."})
    );
    let wrong = send(Some(format!("sha256={}", "0".repeat(64)))).await;
    assert_eq!(wrong.status, 401);
    assert_eq!(
        wrong.body,
        json!({"error": {"message": "the X-Hub-Signature-256 header does not match the body", "function": "github-webhook"}})
    );
    let missing = send(None).await;
    assert_eq!(missing.status, 401);
    assert_eq!(
        missing.message(),
        "the X-Hub-Signature-256 header is missing: this function takes only signed requests"
    );
    server.stop_and_check();
}

/// Deploys `examples/http/<name>` as its README says: the SDK, then the example's files.
fn deploy_http_example(builder: ServerBuilder, name: &str) -> ServerBuilder {
    let dir = builder.functions_dir().join(name);
    fs::create_dir_all(&dir).expect("mkdir -p");
    let sdk = Path::new(env!("CARGO_MANIFEST_DIR")).join("sdk/python/shs_sdk.py");
    fs::copy(sdk, dir.join("shs_sdk.py")).expect("copy the SDK");
    copy_dir(&examples_dir().join("http").join(name), &dir);
    builder
}

#[tokio::test]
async fn the_http_form_example_answers_as_its_readme_says() {
    let builder = deploy_http_example(ServerBuilder::new(), "form");
    let mut server = builder.start().await;
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("a client");
    let page = client
        .get(format!("{}/run/form", server.url))
        .send()
        .await
        .expect("the form");
    assert_eq!(page.status().as_u16(), 200);
    assert_eq!(page.headers()["content-type"], "text/html; charset=utf-8");
    assert!(
        page.text()
            .await
            .expect("html")
            .contains("<form method=\"post\"")
    );
    // curl -si localhost:8080/run/form -d 'name=Ada+Lovelace&message=Hello%21'
    let posted = client
        .post(format!("{}/run/form", server.url))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("name=Ada+Lovelace&message=Hello%21")
        .send()
        .await
        .expect("the post");
    assert_eq!(posted.status().as_u16(), 303);
    assert_eq!(
        posted.headers()["location"],
        "/run/form/thanks?name=Ada+Lovelace"
    );
    server.wait_for_log("Ada Lovelace signed: Hello!").await;
    let thanks = server.get("/run/form/thanks?name=Ada+Lovelace").await;
    assert_eq!(thanks.body, json!("<p>Thanks, Ada Lovelace!</p>"));
    let refused = client
        .post(format!("{}/run/form", server.url))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("message=anonymous")
        .send()
        .await
        .expect("the post");
    assert_eq!(refused.status().as_u16(), 422);
    server.stop_and_check();
}

#[tokio::test]
async fn the_sse_counter_example_streams_and_stops_when_the_client_leaves() {
    let builder = deploy_http_example(ServerBuilder::new(), "counter");
    let mut server = builder.start().await;
    server.wait_ready().await;
    // curl -sN 'localhost:8080/run/counter?to=3&every=0.5'
    let response = server
        .client
        .get(format!("{}/run/counter?to=3&every=0.05", server.url))
        .send()
        .await
        .expect("the stream");
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let text = response.text().await.expect("the events");
    assert_eq!(
        text,
        "event: tick\nid: 1\ndata: {\"n\": 1}\n\nevent: tick\nid: 2\ndata: {\"n\": 2}\n\n\
         event: tick\nid: 3\ndata: {\"n\": 3}\n\nevent: done\ndata: bye\n\n"
    );
    // A client that leaves: the function hears of it and stops.
    let mut response = server
        .client
        .get(format!("{}/run/counter?to=1000&every=0.05", server.url))
        .send()
        .await
        .expect("the stream");
    let first = response.chunk().await.expect("readable").expect("a chunk");
    assert!(first.starts_with(b"event: tick\nid: 1\n"));
    drop(response);
    server.wait_for_log("the client left at").await;
    server.stop_and_check();
}

/// `examples/http/cgi` as its README walks it: deployed as `functions/notes`
/// (`cp examples/http/cgi/* functions/notes/`), then the README's curl commands.
#[tokio::test]
async fn the_cgi_example_runs_as_its_readme_says() {
    let builder = ServerBuilder::new();
    copy_dir(
        &examples_dir().join("http/cgi"),
        &builder.functions_dir().join("notes"),
    );
    let mut server = builder.start().await;
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("a client");
    // curl -si localhost:8080/run/notes -d 'text=Hello+from+curl%21'
    let posted = client
        .post(format!("{}/run/notes", server.url))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("text=Hello+from+curl%21")
        .send()
        .await
        .expect("the post");
    assert_eq!(posted.status().as_u16(), 303);
    assert_eq!(posted.headers()["location"], "/run/notes");
    assert_eq!(posted.headers()["set-cookie"], "posted=1; Path=/; HttpOnly");
    // curl -s localhost:8080/run/notes
    let page = server.get("/run/notes").await;
    assert_eq!(
        page.body,
        json!(
            "<!doctype html>\n<title>Notes</title>\n<ul><li>Hello from curl!</li></ul>\n\
             <form method=\"post\" action=\"/run/notes\"><input name=\"text\"><button>Add</button></form>\n"
        )
    );
    assert_eq!(
        page.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    // curl -s -o /dev/null -w '%{http_code}\n' localhost:8080/run/notes -d 'text='
    let empty = server
        .request(
            reqwest::Method::POST,
            "/run/notes",
            Some("text=".into()),
            &[("content-type", "application/x-www-form-urlencoded")],
        )
        .await;
    assert_eq!(empty.status, 422);
    // curl -si -X DELETE localhost:8080/run/notes
    let delete = server
        .request(reqwest::Method::DELETE, "/run/notes", None, &[])
        .await;
    assert_eq!(delete.status, 405);
    assert_eq!(delete.header("allow"), Some("GET, POST"));
    assert_eq!(delete.body, json!("GET or POST\n"));
    // curl -sN 'localhost:8080/run/notes/count?to=3': a line at a time.
    let mut response = client
        .get(format!("{}/run/notes/count?to=3", server.url))
        .send()
        .await
        .expect("the count");
    assert_eq!(response.headers()["cache-control"], "no-cache");
    let first = response.chunk().await.expect("readable").expect("a chunk");
    assert_eq!(&first[..], b"1\n", "the first line comes alone");
    let rest = response.bytes().await.expect("the rest");
    assert_eq!(&rest[..], b"2\n3\n");
    // shs logs notes
    let logs = server.get("/functions/notes/logs").await;
    assert!(
        logs.body
            .to_string()
            .contains("note from 127.0.0.1: Hello from curl!"),
        "{logs:?}"
    );
    server.stop_and_check();
}
