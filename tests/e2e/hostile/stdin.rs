//! Lines on a function's stdin: what one function sends must not become a message on another's.
//!
//! Every line shs writes to a function's stdin must be one line for every common reader, so
//! that nobody can write messages onto another function's stdin: not Node's `readline` (which
//! the Node SDK uses, and which also ends a line at a bare CR), not Python's
//! `str.splitlines` (which ends one at CR, U+2028, U+2029 and U+0085 too), not
//! `io.TextIOWrapper` (universal newlines). The `forger` fixture publishes payloads written byte
//! for byte as the test gives them: raw CRs as whitespace between tokens, around a complete
//! JSON-RPC `event` request of type `admin.wipe`, and raw line separators inside strings.

use serde_json::{Value, json};

use crate::harness::{Server, ServerBuilder, fixtures_dir, poll, write_file};

/// The subscribers, each with the way it reads its stdin.
const VICTIMS: [&str; 4] = [
    "victim-node",       // the Node SDK: node:readline
    "victim-python",     // the Python SDK: binary readline
    "victim-splitlines", // chunks cut with str.splitlines()
    "victim-textio",     // io.TextIOWrapper: universal newlines
];

/// A complete, valid JSON-RPC request a hostile publisher would like a subscriber to handle.
const FORGED: &str = r#"{"jsonrpc":"2.0","id":99,"method":"event","params":{"event":{"id":"forged-1","type":"admin.wipe","source":"/forged","time":"2026-01-01T00:00:00Z","payload":{"wipe":true}},"context":{"request_id":"forged","function":"victim"}}}"#;

/// Deploys the forger and the four subscribers, each subscribed to `user.note`. The short
/// timeout only bounds how long a broken delivery would take to show up as an error.
fn builder() -> ServerBuilder {
    let sdk = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("sdk");
    let toml = "timeout = 5\ninstances = 1\n";
    let builder = ServerBuilder::new()
        .fixture("forger")
        .fixture("victim-python")
        .toml("victim-python", toml)
        .fixture_as("victim-plain", "victim-splitlines")
        .toml(
            "victim-splitlines",
            &format!("{toml}env = {{ READER = \"splitlines\" }}\n"),
        )
        .fixture_as("victim-plain", "victim-textio")
        .toml(
            "victim-textio",
            &format!("{toml}env = {{ READER = \"textio\" }}\n"),
        )
        .fixture("victim-node")
        .toml("victim-node", toml);
    let functions = builder.functions_dir();
    std::fs::copy(
        sdk.join("python/shs_sdk.py"),
        functions.join("victim-python/shs_sdk.py"),
    )
    .expect("copy shs_sdk.py");
    let package = functions.join("victim-node/node_modules/shs-sdk");
    for file in ["index.js", "package.json"] {
        let text = std::fs::read_to_string(sdk.join("node").join(file)).expect("read the SDK");
        write_file(&package, file, &text);
    }
    assert!(fixtures_dir().join("victim-plain/main.py").exists());
    builder
}

/// What `victim` has received so far, and its pid.
async fn state(server: &Server, victim: &str) -> Value {
    let answer = server.run(victim, json!({})).await;
    assert_eq!(answer.status, 200, "{victim}: {answer:?}");
    answer.body
}

/// The messages of `victim`'s log.
async fn log_of(server: &Server, victim: &str) -> Vec<String> {
    let answer = server
        .get(&format!("/functions/{victim}/logs?tail=10000"))
        .await;
    assert_eq!(answer.status, 200, "{answer:?}");
    answer.body["lines"]
        .as_array()
        .expect("lines")
        .iter()
        .map(|l| l["message"].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// The "handled TYPE ID" lines of every subscriber's log.
async fn handled(server: &Server) -> Vec<String> {
    let mut lines = Vec::new();
    for victim in VICTIMS {
        for line in log_of(server, victim).await {
            if line.starts_with("handled") {
                lines.push(format!("{victim}: {line}"));
            }
        }
    }
    lines
}

/// Has the forger publish `payload_raw` (spliced in byte for byte) as `user.note`.
async fn forge(server: &Server, payload_raw: &str, asynchronous: bool) -> Value {
    let answer = server
        .run(
            "forger",
            json!({"type": "user.note", "payload_raw": payload_raw, "async": asynchronous}),
        )
        .await;
    assert_eq!(answer.status, 200, "{answer:?}; log:\n{}", server.logs());
    answer.body
}

/// Waits until `victim` has received `n` events (or more); its state then.
async fn wait_events(server: &Server, victim: &str, n: usize) -> Value {
    let complete = poll(|| async {
        state(server, victim).await["events"]
            .as_array()
            .is_some_and(|e| e.len() >= n)
    })
    .await;
    let seen = state(server, victim).await;
    assert!(complete, "{victim}: {seen}; log:\n{}", server.logs());
    seen
}

/// Starts the server with the forger and the subscribers; returns it with each subscriber's pid.
async fn start() -> (Server, Vec<Value>) {
    let server = builder().start().await;
    server.wait_ready().await;
    let mut pids = Vec::new();
    for victim in VICTIMS {
        assert!(
            poll(|| async {
                server
                    .subscriptions()
                    .await
                    .contains(&("user.note".to_owned(), victim.to_owned()))
            })
            .await,
            "{victim} subscribed; log:\n{}",
            server.logs()
        );
        pids.push(state(&server, victim).await["pid"].clone());
    }
    (server, pids)
}

/// Checks that every subscriber got exactly the `expected` payloads as `user.note` events, in
/// order and intact, handled nothing else, read no broken line, and is the process it was
/// (none was killed for a timeout); then stops the server.
async fn check_and_stop(mut server: Server, pids: &[Value], expected: &[Value]) {
    for (victim, pid) in VICTIMS.iter().zip(pids) {
        let seen = wait_events(&server, victim, expected.len()).await;
        let events = seen["events"].as_array().expect("events");
        let types: Vec<&Value> = events.iter().map(|e| &e["type"]).collect();
        assert!(
            types.iter().all(|t| *t == "user.note"),
            "{victim} handled {types:?}"
        );
        let payloads: Vec<&Value> = events.iter().map(|e| &e["payload"]).collect();
        assert_eq!(payloads, expected.iter().collect::<Vec<_>>(), "{victim}");
        assert_eq!(&seen["pid"], pid, "{victim} was restarted");
        if seen.get("garbage").is_some() {
            assert_eq!(seen["garbage"], 0, "{victim} read broken lines");
        }
        let log = log_of(&server, victim).await;
        assert!(
            !log.iter().any(|l| l.contains("admin.wipe")),
            "{victim} handled the forged event: {log:?}"
        );
    }
    assert!(
        !server.logs().contains("did not answer"),
        "a delivery timed out; log:\n{}",
        server.logs()
    );
    server.stop_and_check();
}

/// The issue's reproduction: a function publishes a payload with raw CRs (JSON whitespace)
/// around a complete `event` request of its own making. No subscriber may handle that
/// request, and each must answer the real event.
#[tokio::test]
async fn a_publish_cannot_forge_a_message_on_a_subscribers_stdin() {
    let (server, pids) = start().await;
    let mut expected = Vec::new();

    // Published synchronously: delivered at once.
    let cr = format!("{{\"note\":\"cr\",\"x\":\r{FORGED}\r}}");
    let result = forge(&server, &cr, false).await;
    assert_eq!(
        result["errors"],
        json!([]),
        "{result}; what the subscribers handled: {:?}",
        handled(&server).await
    );
    assert_eq!(result["delivered"], VICTIMS.len(), "{result}");
    expected.push(serde_json::from_str::<Value>(&cr).expect("valid JSON"));

    // Published asynchronously: stored, read back, delivered later.
    let stored = format!("{{\"note\":\"async\",\"x\":\r{FORGED}\r}}")
        .replace("\"wipe\":true", "\"wipe\":\"\u{2029}\"");
    let result = forge(&server, &stored, true).await;
    assert_eq!(result["accepted"], true, "{result}");
    expected.push(serde_json::from_str::<Value>(&stored).expect("valid JSON"));

    check_and_stop(server, &pids, &expected).await;
}

/// Every line break JSON allows raw, from every source: CR between tokens and U+2028, U+2029
/// and U+0085 in strings from a function's publish; LF and CRLF too from an HTTP client's
/// event; the separators in an invoke's input. Each reader gets each value whole.
#[tokio::test]
async fn line_breaks_in_json_reach_every_reader_whole() {
    let (server, pids) = start().await;
    let mut expected = Vec::new();

    let breaks = "{\r\"note\" :\r\"breaks\",\"text\u{2028}key\":\"a\u{2028}b\u{2029}c\u{85}d\",\
                  \"list\":[1,\r2]}";
    let result = forge(&server, breaks, false).await;
    assert_eq!(result["errors"], json!([]), "{result}");
    assert_eq!(result["delivered"], VICTIMS.len(), "{result}");
    expected.push(serde_json::from_str::<Value>(breaks).expect("valid JSON"));

    let body = format!(
        "{{\"type\":\"user.note\",\"payload\":{}}}",
        breaks
            .replace("breaks", "http")
            .replace('\r', "\r\n")
            .replace("[1,", "[1,\n")
    );
    let answer = server.post("/events", &body).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(answer.body["errors"], json!([]), "{answer:?}");
    assert_eq!(answer.body["delivered"], VICTIMS.len(), "{answer:?}");
    let sent: Value = serde_json::from_str(&body).expect("valid JSON");
    expected.push(sent["payload"].clone());

    for victim in VICTIMS {
        let input = json!({"text": "x\u{2028}y\u{2029}z\u{85}", "\u{2028}": 1});
        let answer = server.run(victim, input.clone()).await;
        assert_eq!(answer.status, 200, "{victim}: {answer:?}");
        assert_eq!(answer.body["input"], input, "{victim}");
    }

    check_and_stop(server, &pids, &expected).await;
}
