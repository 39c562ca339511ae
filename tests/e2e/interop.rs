//! Interop with the tools users bring: the official CloudEvents SDKs as clients of the real
//! server, and what `POST /events` does with data of every content type in both CloudEvents
//! modes.
//!
//! The SDK tests run `tests/interop/ce_python.py` (the `cloudevents` package from PyPI, in the
//! venv `scripts/interop-deps` makes under `target/interop/venv`) and `tests/interop/ce_node.js`
//! (`cloudevents` from npm, in `tests/interop/node_modules`). Each sends every case twice, in
//! binary then in structured mode, as the SDK writes them: JSON, text, bytes, empty data, every
//! optional attribute, extensions. Two subscribers, one on the Python SDK of `sdk/python` and
//! one on the Node SDK of `sdk/node`, record the event objects they receive and the data their
//! SDK decodes; the test checks that both modes made the same event, and what it is. Without
//! the SDKs installed the tests skip, unless `SHS_REQUIRE_INTEROP` is set (as `.ci/run` does).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Value, json};

use crate::harness::{PATIENCE, Server, ServerBuilder, write_file};

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn interop_python() -> PathBuf {
    repo().join("target/interop/venv/bin/python")
}

fn interop_dir() -> PathBuf {
    repo().join("tests/interop")
}

/// Whether the CloudEvents SDKs are installed (by `scripts/interop-deps`).
fn sdks_available() -> bool {
    let python = std::process::Command::new(interop_python())
        .args(["-c", "import cloudevents"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    let node = interop_dir()
        .join("node_modules/cloudevents/package.json")
        .is_file();
    if !(python && node) {
        assert!(
            std::env::var_os("SHS_REQUIRE_INTEROP").is_none(),
            "SHS_REQUIRE_INTEROP is set but the CloudEvents SDKs are not installed \
             (python: {python}, node: {node}): run scripts/interop-deps"
        );
        eprintln!("skipped: the CloudEvents SDKs are not installed (scripts/interop-deps)");
    }
    python && node
}

const PY_RECORDER: &str = r#"import base64, json, shs_sdk

app = shs_sdk.Function(subscribe=["interop.>"])


@app.any_event
def record(event, ctx):
    data = event.data
    if isinstance(data, bytes):
        data = {"bytes": base64.b64encode(data).decode()}
    with open("received.jsonl", "a") as log:
        log.write(json.dumps({"event": event.to_dict(), "data": data}) + "\n")
    return {}


app.run()
"#;

const NODE_RECORDER: &str = r#"'use strict';
const fs = require('fs');
const shs = require('shs-sdk');

shs.subscribe('interop.>');
shs.onAny((event) => {
  let data = shs.eventData(event);
  if (Buffer.isBuffer(data)) data = { bytes: data.toString('base64') };
  fs.appendFileSync('received.jsonl', `${JSON.stringify({ event, data })}\n`);
  return {};
});
shs.run();
"#;

/// A server with two recorders subscribed to `interop.>`: `rec-py` on the Python SDK and
/// `rec-node` on the Node SDK.
async fn recorders() -> Server {
    let builder = ServerBuilder::new();
    let py = builder.functions_dir().join("rec-py");
    write_file(&py, "main.py", PY_RECORDER);
    std::fs::copy(repo().join("sdk/python/shs_sdk.py"), py.join("shs_sdk.py"))
        .expect("copy shs_sdk.py");
    let node = builder.functions_dir().join("rec-node");
    write_file(&node, "main.js", NODE_RECORDER);
    let package = node.join("node_modules/shs-sdk");
    std::fs::create_dir_all(&package).expect("create node_modules/shs-sdk");
    for file in ["index.js", "package.json"] {
        std::fs::copy(repo().join("sdk/node").join(file), package.join(file))
            .expect("copy the node package");
    }
    let server = builder.start().await;
    server.wait_ready().await;
    server
}

/// What one recorder received, in order: (event object, data as its SDK decoded it).
fn received(server: &Server, recorder: &str) -> Vec<(Value, Value)> {
    let path = server.functions_dir().join(recorder).join("received.jsonl");
    let text = std::fs::read_to_string(&path).unwrap_or_default();
    text.lines()
        .map(|line| {
            let v: Value = serde_json::from_str(line).expect("a JSON line");
            (v["event"].clone(), v["data"].clone())
        })
        .collect()
}

/// Runs an SDK client against the server; every answer must be 200. Returns its lines.
async fn run_client(program: &Path, script: &str, server: &Server) -> Vec<Value> {
    let output = tokio::process::Command::new(program)
        .arg(interop_dir().join(script))
        .arg(&server.url)
        .current_dir(interop_dir())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(PATIENCE * 2, output)
        .await
        .unwrap_or_else(|_| panic!("{script} did not finish"))
        .unwrap_or_else(|e| panic!("run {script}: {e}"));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{script} failed ({}):\n{stdout}\n{}\nserver log:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr),
        server.logs()
    );
    stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect()
}

/// The events each recorder got, by id: binary mode first, then structured mode. Checks that
/// both recorders got the same objects, and each id twice.
fn by_id(server: &Server, sent: &[Value]) -> BTreeMap<String, Vec<(Value, Value)>> {
    let py = received(server, "rec-py");
    let node = received(server, "rec-node");
    assert_eq!(py.len(), sent.len(), "rec-py got {py:?}");
    assert_eq!(node.len(), sent.len(), "rec-node got {node:?}");
    let mut events: BTreeMap<String, Vec<(Value, Value)>> = BTreeMap::new();
    for ((py_event, py_data), (node_event, node_data)) in py.into_iter().zip(node) {
        assert_eq!(
            py_event, node_event,
            "one event object for every subscriber"
        );
        assert_eq!(py_data, node_data, "the SDKs decode the data alike");
        let id = py_event["id"].as_str().expect("id").to_owned();
        events.entry(id).or_default().push((py_event, py_data));
    }
    for (id, pair) in &events {
        assert_eq!(pair.len(), 2, "{id}: {pair:?}");
    }
    events
}

/// The binary-mode and structured-mode events of `id`, checked to be the same (but for the
/// members in `differ`, where the SDK itself sends different attributes); returns the
/// structured one and the data the SDKs decoded.
fn same_in_both_modes(
    events: &BTreeMap<String, Vec<(Value, Value)>>,
    id: &str,
    differ: &[&str],
) -> (Value, Value) {
    let pair = events
        .get(id)
        .unwrap_or_else(|| panic!("no event {id}: {events:?}"));
    let (mut binary, binary_data) = pair[0].clone();
    let (mut structured, structured_data) = pair[1].clone();
    assert_eq!(binary_data, structured_data, "{id}: the data");
    let kept = structured.clone();
    for member in differ {
        binary.as_object_mut().map(|o| o.remove(*member));
        structured.as_object_mut().map(|o| o.remove(*member));
    }
    assert_eq!(
        serde_json::to_string(&binary).expect("JSON"),
        serde_json::to_string(&structured).expect("JSON"),
        "{id}: the same event, member for member and in the same order"
    );
    (kept, structured_data)
}

fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[test]
fn base64_helper() {
    assert_eq!(base64(b""), "");
    assert_eq!(base64(b"hello"), "aGVsbG8=");
    assert_eq!(base64(&[0, 255, 16]), "AP8Q");
    assert_eq!(base64(b"hi"), "aGk=");
}

#[tokio::test]
async fn the_python_cloudevents_sdk_publishes_the_same_event_in_both_modes() {
    if !sdks_available() {
        return;
    }
    let mut server = recorders().await;
    let sent = run_client(&interop_python(), "ce_python.py", &server).await;
    assert_eq!(sent.len(), 20, "{sent:?}");
    let events = by_id(&server, &sent);
    let time = "2026-03-04T05:06:07.123456Z";

    let (event, data) = same_in_both_modes(&events, "py-json", &[]);
    let payload = json!({"order": 42, "items": ["a", "b"], "note": "café"});
    assert_eq!(
        event,
        json!({"id": "py-json", "type": "interop.python.json", "source": "/interop/python",
               "time": time, "payload": payload, "specversion": "1.0",
               "datacontenttype": "application/json", "subject": "order/42",
               "dataschema": "https://example.com/order.json", "shshops": 0,
               "priority": "7", "tenant": "acme"})
    );
    assert_eq!(data, payload);

    let (event, _) = same_in_both_modes(&events, "py-json-default", &[]);
    assert_eq!(event["payload"], json!({"n": 1}));
    assert_eq!(event["datacontenttype"], "application/json");

    let (event, data) = same_in_both_modes(&events, "py-text", &[]);
    assert_eq!(event["payload"], "hello, wörld\nsecond line");
    assert_eq!(event["datacontenttype"], "text/plain");
    assert!(event.get("data_base64").is_none(), "{event}");
    assert_eq!(data, "hello, wörld\nsecond line");

    let bytes = b"\x00\xff\x10binary\x80";
    let (event, data) = same_in_both_modes(&events, "py-bytes", &[]);
    assert_eq!(event["payload"], Value::Null);
    assert_eq!(event["data_base64"], base64(bytes));
    assert_eq!(event["datacontenttype"], "application/octet-stream");
    assert_eq!(data, json!({"bytes": base64(bytes)}));

    // Bytes with no content type: the SDK leaves Content-Type out in binary mode and sends
    // data_base64 in structured mode; both are bytes.
    let (event, data) = same_in_both_modes(&events, "py-bytes-untyped", &[]);
    assert_eq!(event["datacontenttype"], "application/octet-stream");
    assert_eq!(data, json!({"bytes": base64(b"\x00\xfe raw")}));

    let (event, _) = same_in_both_modes(&events, "py-png", &[]);
    assert_eq!(event["datacontenttype"], "image/png");
    assert_eq!(event["data_base64"], base64(b"\x89PNG\r\n\x1a\n\x00\x00"));

    for id in ["py-empty", "py-empty-json"] {
        let (event, data) = same_in_both_modes(&events, id, &[]);
        assert_eq!(event["payload"], Value::Null, "{id}");
        assert!(event.get("data_base64").is_none(), "{event}");
        assert_eq!(data, Value::Null, "{id}");
    }

    // Attributes that are not ASCII travel percent-encoded in binary mode.
    let (event, _) = same_in_both_modes(&events, "py-unicode-attributes", &[]);
    assert_eq!(event["subject"], "café ü 100% \"quoted\"");
    assert_eq!(event["region"], "são-paulo");

    // The 1.x API, and a time with an offset.
    let (event, _) = same_in_both_modes(&events, "py-legacy", &[]);
    assert_eq!(event["time"], "2026-03-04T05:06:07.5+02:00");
    assert_eq!(event["payload"], json!({"legacy": [1, 2]}));
    assert_eq!(event["tenant"], "acme");
    server.stop_and_check();
}

#[tokio::test]
async fn the_javascript_cloudevents_sdk_publishes_the_same_event_in_both_modes() {
    if !sdks_available() {
        return;
    }
    let mut server = recorders().await;
    let sent = run_client(Path::new("node"), "ce_node.js", &server).await;
    assert_eq!(sent.len(), 14, "{sent:?}");
    let events = by_id(&server, &sent);
    let time = "2026-03-04T05:06:07.123Z";

    let (event, data) = same_in_both_modes(&events, "node-json", &[]);
    let payload = json!({"order": 42, "items": ["a", "b"], "note": "café"});
    assert_eq!(
        event,
        json!({"id": "node-json", "type": "interop.node.json", "source": "/interop/node",
               "time": time, "payload": payload, "specversion": "1.0",
               "datacontenttype": "application/json", "subject": "order/42",
               "dataschema": "https://example.com/order.json", "shshops": 0,
               "priority": "7", "tenant": "acme", "urgent": "true"})
    );
    assert_eq!(data, payload);

    // The SDK sends `Content-Type: application/json; charset=utf-8` in binary mode when the
    // event has no datacontenttype, and no datacontenttype in structured mode; shs keeps what
    // it is given (and `application/json` when nothing is).
    for id in ["node-json-default", "node-emitter"] {
        let pair = &events[id];
        assert_eq!(
            pair[0].0["datacontenttype"], "application/json; charset=utf-8",
            "{id}"
        );
        let (event, _) = same_in_both_modes(&events, id, &["datacontenttype"]);
        assert_eq!(event["datacontenttype"], "application/json", "{id}");
    }
    assert_eq!(events["node-emitter"][1].0["subject"], "emitted");

    let (event, data) = same_in_both_modes(&events, "node-text", &[]);
    assert_eq!(event["payload"], "hello, wörld\nsecond line");
    assert_eq!(data, "hello, wörld\nsecond line");

    let bytes = [0u8, 255, 16, 98, 105, 110, 128];
    let (event, data) = same_in_both_modes(&events, "node-bytes", &[]);
    assert_eq!(event["payload"], Value::Null);
    assert_eq!(event["data_base64"], base64(&bytes));
    assert_eq!(data, json!({"bytes": base64(&bytes)}));

    let (event, _) = same_in_both_modes(&events, "node-png", &[]);
    assert_eq!(event["datacontenttype"], "image/png");

    let (event, data) = same_in_both_modes(&events, "node-empty", &[]);
    assert_eq!(event["payload"], Value::Null);
    assert_eq!(data, Value::Null);
    server.stop_and_check();
}

/// Request headers, as (name, value).
type Headers = Vec<(&'static str, &'static str)>;

/// Sends one `POST /events` with these headers and raw body.
async fn post(server: &Server, headers: &[(&str, &str)], body: Vec<u8>) -> (u16, Value) {
    let mut request = server.client.post(format!("{}/events", server.url));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request
        .body(body)
        .timeout(Duration::from_secs(30))
        .send()
        .await
        .expect("POST /events");
    let status = response.status().as_u16();
    let body = response.json().await.unwrap_or(Value::Null);
    (status, body)
}

#[tokio::test]
async fn data_of_any_content_type_reaches_functions_the_same_in_both_modes() {
    let mut server = ServerBuilder::new()
        .fixture_as("subscriber", "sub")
        .toml("sub", "env = { SUBSCRIBE = \"data.>\" }\n")
        .start()
        .await;
    server.wait_ready().await;
    let binary = |content_type: &'static str| {
        vec![
            ("ce-specversion", "1.0"),
            ("ce-type", "data.binary"),
            ("ce-id", "d-1"),
            ("ce-source", "/d"),
            ("ce-time", "2026-05-06T07:08:09Z"),
            ("content-type", content_type),
        ]
    };
    let structured = |members: Value| {
        let mut event = json!({"specversion": "1.0", "type": "data.binary", "id": "d-1", "source": "/d",
                               "time": "2026-05-06T07:08:09Z"});
        event
            .as_object_mut()
            .expect("object")
            .extend(members.as_object().expect("object").clone());
        serde_json::to_vec(&event).expect("JSON")
    };
    let ce_json = [("content-type", "application/cloudevents+json")];
    let bytes = vec![0u8, 0xff, 0x80, b'\n', 0x7f];
    // 48 KiB of every byte value, in a scrambled order: carried exactly, as bytes.
    let big: Vec<u8> = (0u32..48 * 1024)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    // Each pair: binary mode, structured mode; both must make the same event.
    let pairs: Vec<(Headers, Vec<u8>, Value, Value)> = vec![
        (
            binary("application/octet-stream"),
            bytes.clone(),
            json!({"datacontenttype": "application/octet-stream", "data_base64": base64(&bytes)}),
            json!({"payload": null, "data_base64": base64(&bytes)}),
        ),
        (
            binary("text/plain; charset=latin-1"),
            b"caf\xe9".to_vec(),
            json!({"datacontenttype": "text/plain; charset=latin-1", "data_base64": "Y2Fm6Q=="}),
            json!({"payload": null, "data_base64": "Y2Fm6Q=="}),
        ),
        (
            binary("text/csv"),
            "a,b\n1,é\n".as_bytes().to_vec(),
            json!({"datacontenttype": "text/csv", "data": "a,b\n1,é\n"}),
            json!({"payload": "a,b\n1,é\n"}),
        ),
        (
            binary("application/xml"),
            b"<a/>".to_vec(),
            json!({"datacontenttype": "application/xml", "data_base64": "PGEvPg=="}),
            json!({"payload": "<a/>"}),
        ),
        (
            binary("application/vnd.shs+json"),
            b"[1, {\"x\": null}]".to_vec(),
            json!({"datacontenttype": "application/vnd.shs+json", "data": [1, {"x": null}]}),
            json!({"payload": [1, {"x": null}]}),
        ),
        (
            binary("image/png"),
            big.clone(),
            json!({"datacontenttype": "image/png", "data_base64": base64(&big)}),
            json!({"payload": null, "data_base64": base64(&big)}),
        ),
        // Data that is not what its type says is carried as bytes, not refused.
        (
            binary("application/json"),
            b"{not json".to_vec(),
            json!({"datacontenttype": "application/json", "data_base64": base64(b"{not json")}),
            json!({"payload": null, "data_base64": base64(b"{not json")}),
        ),
        (
            binary("application/octet-stream"),
            Vec::new(),
            json!({"datacontenttype": "application/octet-stream", "data_base64": ""}),
            json!({"payload": null}),
        ),
    ];
    let mut expected = Vec::new();
    for (headers, body, members, fitted) in pairs {
        let (status, answer) = post(&server, &headers, body).await;
        assert_eq!(status, 200, "{headers:?}: {answer}");
        let (status, answer) = post(&server, &ce_json, structured(members.clone())).await;
        assert_eq!(status, 200, "{members}: {answer}");
        expected.push(fitted);
    }
    let events = server.run("sub", json!({"action": "events"})).await.body["events"].clone();
    let events = events.as_array().expect("events").clone();
    assert_eq!(events.len(), expected.len() * 2, "{events:?}");
    for (i, fitted) in expected.iter().enumerate() {
        let (b, s) = (&events[2 * i], &events[2 * i + 1]);
        assert_eq!(
            serde_json::to_string(b).expect("JSON"),
            serde_json::to_string(s).expect("JSON"),
            "pair {i}: the same event in both modes"
        );
        assert_eq!(b["payload"], fitted["payload"], "pair {i}: {b}");
        assert_eq!(
            b.get("data_base64"),
            fitted.get("data_base64"),
            "pair {i}: {b}"
        );
    }
    // The stored event is the object delivered.
    let stored = server.get("/events/d-1").await;
    assert_eq!(stored.status, 200, "{stored:?}");
    server.stop_and_check();
}

#[tokio::test]
async fn cloudevents_that_break_the_spec_are_refused_and_the_server_goes_on() {
    let mut server = ServerBuilder::new()
        .fixture_as("subscriber", "sub")
        .toml("sub", "env = { SUBSCRIBE = \"spec.>\" }\n")
        .start()
        .await;
    server.wait_ready().await;
    let ce_json = [("content-type", "application/cloudevents+json")];
    let event = |members: Value| {
        let mut e = json!({"specversion": "1.0", "type": "spec.x"});
        e.as_object_mut()
            .expect("object")
            .extend(members.as_object().expect("object").clone());
        serde_json::to_vec(&e).expect("JSON")
    };
    let refused: Vec<(Headers, Vec<u8>, u16, &str)> = vec![
        (
            vec![("content-type", "application/cloudevents-batch+json")],
            b"[]".to_vec(),
            415,
            "not supported",
        ),
        (
            vec![("content-type", "application/cloudevents+xml")],
            b"<e/>".to_vec(),
            415,
            "not supported",
        ),
        (
            ce_json.to_vec(),
            b"{\"type\": \"spec.x\"}".to_vec(),
            400,
            "specversion",
        ),
        (
            ce_json.to_vec(),
            event(json!({"source": ""})),
            400,
            "`source` must not be empty",
        ),
        (
            ce_json.to_vec(),
            event(json!({"subject": ""})),
            400,
            "`subject`",
        ),
        (
            ce_json.to_vec(),
            event(json!({"dataschema": ""})),
            400,
            "`dataschema`",
        ),
        (
            ce_json.to_vec(),
            event(json!({"datacontenttype": ""})),
            400,
            "`datacontenttype`",
        ),
        (
            ce_json.to_vec(),
            event(json!({"time": ""})),
            400,
            "RFC 3339",
        ),
        (
            ce_json.to_vec(),
            event(json!({"time": "2026-01-02 03:04:05"})),
            400,
            "RFC 3339",
        ),
        (ce_json.to_vec(), event(json!({"id": ""})), 400, "`id`"),
        (
            ce_json.to_vec(),
            event(json!({"id": "a\u{85}b"})),
            400,
            "`id`",
        ),
        (
            ce_json.to_vec(),
            event(json!({"data": 1, "data_base64": "AA=="})),
            400,
            "one member",
        ),
        (
            ce_json.to_vec(),
            event(json!({"data_base64": "not base64!"})),
            400,
            "base64",
        ),
        (
            ce_json.to_vec(),
            event(json!({"data_base64": 5})),
            400,
            "must be a string",
        ),
        (
            ce_json.to_vec(),
            event(json!({"tenant": {"a": 1}})),
            400,
            "extension attribute",
        ),
        (
            ce_json.to_vec(),
            event(json!({"tenant": 2147483648u64})),
            400,
            "extension attribute",
        ),
        (
            ce_json.to_vec(),
            event(json!({"shscause": 5})),
            400,
            "`shscause`",
        ),
        (
            ce_json.to_vec(),
            event(json!({"shshops": -1})),
            400,
            "`shshops`",
        ),
        (
            vec![
                ("ce-specversion", "1.0"),
                ("ce-type", "spec.x"),
                ("ce-source", ""),
            ],
            Vec::new(),
            400,
            "`source` must not be empty",
        ),
        (
            vec![
                ("ce-specversion", "1.0"),
                ("ce-type", "spec.x"),
                ("ce-subject", "%FF%FE"),
            ],
            Vec::new(),
            400,
            "percent-encoded",
        ),
    ];
    for (headers, body, status, needle) in refused {
        let (got, answer) = post(&server, &headers, body.clone()).await;
        assert_eq!(
            got,
            status,
            "{headers:?} {}: {answer}",
            String::from_utf8_lossy(&body)
        );
        let message = answer["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(needle), "{headers:?}: {message}");
    }
    // What the spec allows: RFC 3339 offsets, percent-encoded attributes, canonical strings for
    // extensions, a structured event whose Content-Type has parameters.
    let (status, answer) = post(
        &server,
        &[
            ("ce-specversion", "1.0"),
            ("ce-type", "spec.ok"),
            ("ce-id", "ok-1"),
            ("ce-time", "2026-01-02t03:04:05.123456789-07:30"),
            ("ce-subject", "caf%C3%A9%20%25"),
        ],
        Vec::new(),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["delivered"], 1, "{answer}");
    let (status, answer) = post(
        &server,
        &[(
            "content-type",
            "Application/CloudEvents+JSON; charset=utf-8",
        )],
        event(
            json!({"type": "spec.ok", "id": "ok-2", "time": "1998-12-31T23:59:60Z",
                     "n": 7, "flag": false, "gone": null, "subject": "s"}),
        ),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["delivered"], 1, "{answer}");
    // A hop count past u32 is u32::MAX: over the hop limit, the event reaches nobody.
    let (status, answer) = post(
        &server,
        &[
            ("ce-specversion", "1.0"),
            ("ce-type", "spec.ok"),
            ("ce-shshops", "99999999999999999999"),
        ],
        Vec::new(),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["delivered"], 0, "{answer}");
    assert!(
        answer["errors"][0]["message"]
            .as_str()
            .is_some_and(|m| m.contains("hop limit")),
        "{answer}"
    );
    let events = server.run("sub", json!({"action": "events"})).await.body["events"].clone();
    let (ok1, ok2) = (&events[0], &events[1]);
    assert_eq!(ok1["id"], "ok-1", "{events}");
    assert_eq!(ok1["subject"], "café %");
    assert_eq!(ok1["time"], "2026-01-02t03:04:05.123456789-07:30");
    assert_eq!(ok2["id"], "ok-2", "{events}");
    assert_eq!(ok2["time"], "1998-12-31T23:59:60Z");
    assert_eq!(ok2["n"], "7");
    assert_eq!(ok2["flag"], "false");
    assert!(ok2.get("gone").is_none(), "{ok2}");
    assert_eq!(events.as_array().map(Vec::len), Some(2), "{events}");
    // The server still serves everyone.
    assert_eq!(server.get("/health").await.status, 200);
    server.stop_and_check();
}

#[tokio::test]
async fn whole_numbers_of_any_size_in_queries() {
    let mut server = ServerBuilder::new().fixture("echo").start().await;
    server.wait_ready().await;
    let huge = "1234567890123456789012345678901";
    let logs = server
        .get(&format!("/functions/echo/logs?after={huge}&tail={huge}"))
        .await;
    assert_eq!(logs.status, 200, "{logs:?}");
    assert_eq!(logs.body["lines"], json!([]));
    let letters = server
        .get(&format!("/events/dead-letters?limit={huge}"))
        .await;
    assert_eq!(letters.status, 200, "{letters:?}");
    for bad in ["-1", "1.5", "many", ""] {
        let answer = server
            .get(&format!("/functions/echo/logs?after={bad}"))
            .await;
        assert_eq!(answer.status, 400, "{bad}: {answer:?}");
        let answer = server
            .get(&format!("/events/dead-letters?limit={bad}"))
            .await;
        assert_eq!(answer.status, 400, "{bad}: {answer:?}");
    }
    server.stop_and_check();
}
