//! Hostile input: what a client or a function sends must not hurt another function, the
//! supervisor, or an accepted event. Each test sends the attack, then checks the supervisor
//! (memory, its own log) and that the other functions are still served.

use serde_json::{Value, json};

use crate::harness::{Server, ServerBuilder, poll};

/// `[[[ ... ]]]`, `depth` deep.
fn nested(depth: usize) -> String {
    format!("{}{}", "[".repeat(depth), "]".repeat(depth))
}

/// The events a `subscriber` function has received.
async fn received(server: &Server, name: &str) -> Vec<Value> {
    let answer = server.run(name, json!({"action": "events"})).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    answer.body["events"].as_array().expect("events").clone()
}

fn subscriber(builder: ServerBuilder, name: &str, types: &str) -> ServerBuilder {
    builder
        .fixture_as("subscriber", name)
        .toml(name, &format!("env = {{ SUBSCRIBE = \"{types}\" }}\n"))
}

#[tokio::test]
async fn a_deeply_nested_body_is_refused_before_it_reaches_a_function() {
    let mut server = ServerBuilder::new()
        .fixture("echo")
        .toml("echo", "min_instances = 1\n")
        .start()
        .await;
    server.wait_ready().await;
    let pids = server.pids_of("echo");
    assert_eq!(pids.len(), 1, "echo runs");

    let answer = server.post("/run/echo", &nested(100_000)).await;
    assert_eq!(answer.status, 400, "{answer:?}");
    assert!(
        answer.message().contains("nested deeper than 127"),
        "{answer:?}"
    );
    // 127 levels, serde_json's own limit, still pass.
    let answer = server.post("/run/echo", &nested(127)).await;
    assert_eq!(answer.status, 200, "{answer:?}");

    // The function never saw the deep one: same process, still serving.
    assert_eq!(server.pids_of("echo"), pids, "the function was not hurt");
    assert_eq!(server.run("echo", json!({"a": 1})).await.status, 200);
    server.stop_and_check();
}

#[tokio::test]
async fn a_deeply_nested_event_is_refused_in_every_form_and_nothing_is_stored() {
    let mut server = subscriber(ServerBuilder::new(), "sub", "deep.x")
        .start()
        .await;
    server.wait_ready().await;
    let deep = nested(100_000);
    let simple = format!(r#"{{"type":"deep.x","payload":{deep}}}"#);
    let structured = format!(
        r#"{{"specversion":"1.0","type":"deep.x","source":"/t","id":"deep-structured","data":{deep}}}"#
    );
    for asynchronous in [false, true] {
        let prefer: &[(&str, &str)] = if asynchronous {
            &[("prefer", "respond-async")]
        } else {
            &[]
        };
        for (body, content_type) in [
            (&simple, "application/json"),
            (&structured, "application/cloudevents+json"),
        ] {
            let mut headers = vec![("content-type", content_type)];
            headers.extend_from_slice(prefer);
            let answer = server
                .request(
                    reqwest::Method::POST,
                    "/events",
                    Some(body.clone()),
                    &headers,
                )
                .await;
            assert_eq!(answer.status, 400, "async {asynchronous}: {answer:?}");
            assert!(answer.message().contains("nested deeper"), "{answer:?}");
        }
        // Binary mode: the attributes in headers, the data as the body.
        let mut headers = vec![
            ("ce-specversion", "1.0"),
            ("ce-type", "deep.x"),
            ("ce-source", "/t"),
            ("ce-id", "deep-binary"),
            ("content-type", "application/json"),
        ];
        headers.extend_from_slice(prefer);
        let answer = server
            .request(
                reqwest::Method::POST,
                "/events",
                Some(deep.clone()),
                &headers,
            )
            .await;
        assert_eq!(
            answer.status, 400,
            "binary, async {asynchronous}: {answer:?}"
        );
    }
    // Nothing stored, nothing delivered, nothing dead-lettered.
    for id in ["deep-structured", "deep-binary"] {
        assert_eq!(server.get(&format!("/events/{id}")).await.status, 404);
    }
    assert!(received(&server, "sub").await.is_empty());
    let dead = server.get("/events/dead-letters").await;
    assert_eq!(dead.body["dead_letters"], json!([]), "{dead:?}");
    // The bus still works.
    let answer = server.publish("deep.x", json!([[1]])).await;
    assert_eq!(answer.body["delivered"], 1, "{answer:?}");
    server.stop_and_check();
}

/// A function that publishes a 100,000-deep payload (written by hand: Python's own json cannot
/// make it), then a normal one, and answers with both answers.
const DEEP_PUBLISHER: &str = r#"
import json, sys
DEEP = "[" * 100000 + "]" * 100000

def call(i, payload_text, asynchronous):
    line = '{"jsonrpc":"2.0","id":"p%d","method":"publish","params":{"type":"deep.x","async":%s,"payload":%s}}' % (
        i, "true" if asynchronous else "false", payload_text)
    sys.stdout.write(line + "\n")
    sys.stdout.flush()
    return json.loads(sys.stdin.readline())

for line in sys.stdin:
    msg = json.loads(line)
    if msg.get("method") == "invoke":
        result = {
            "sync": call(1, DEEP, False),
            "async": call(2, DEEP, True),
            "fine": call(3, "[1]", False),
        }
    else:
        result = {}
    sys.stdout.write(json.dumps({"jsonrpc": "2.0", "id": msg["id"], "result": result}) + "\n")
    sys.stdout.flush()
"#;

#[tokio::test]
async fn a_function_publishing_a_deeply_nested_payload_gets_an_error_and_nothing_is_delivered() {
    let mut server = subscriber(ServerBuilder::new(), "sub", "deep.x")
        .file("deep", "main.py", DEEP_PUBLISHER)
        .start()
        .await;
    server.wait_ready().await;
    let answer = server.run("deep", json!({})).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    for mode in ["sync", "async"] {
        let error = &answer.body[mode]["error"];
        assert_eq!(error["code"], -32602, "{mode}: {answer:?}");
        assert!(
            error["message"]
                .as_str()
                .is_some_and(|m| m.contains("nested deeper")),
            "{mode}: {answer:?}"
        );
    }
    assert_eq!(answer.body["fine"]["result"]["delivered"], 1, "{answer:?}");
    // Only the fine event arrived.
    let events = received(&server, "sub").await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["payload"], json!([1]));
    let dead = server.get("/events/dead-letters").await;
    assert_eq!(dead.body["dead_letters"], json!([]), "{dead:?}");
    server.stop_and_check();
}

/// `n` requests to `/functions` with `headers`; their statuses.
async fn statuses(
    server: &Server,
    n: usize,
    headers: impl Fn(usize) -> Vec<(String, String)>,
) -> Vec<u16> {
    let mut out = Vec::new();
    for i in 0..n {
        let headers = headers(i);
        let headers: Vec<(&str, &str)> = headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        out.push(
            server
                .request(reqwest::Method::GET, "/functions", None, &headers)
                .await
                .status,
        );
    }
    out
}

#[tokio::test]
async fn requests_with_a_wrong_api_key_are_rate_limited_too() {
    let mut server = ServerBuilder::new()
        .args(&[
            "--api-key",
            "right-key",
            "--rate-limit",
            "1",
            "--rate-burst",
            "3",
        ])
        .start()
        .await;
    let got = statuses(&server, 8, |i| {
        vec![("x-api-key".to_owned(), format!("guess-{i}"))]
    })
    .await;
    assert_eq!(&got[..3], [401, 401, 401], "{got:?}");
    assert!(
        got[3..].iter().all(|s| *s == 429),
        "guessing keys is limited: {got:?}"
    );
    server.stop_and_check();
}

#[tokio::test]
async fn an_ipv4_trusted_proxy_is_recognised_on_a_dual_stack_listener() {
    let mut server = ServerBuilder::new()
        .listen("[::]:0")
        .args(&[
            "--rate-limit",
            "1",
            "--rate-burst",
            "2",
            "--trusted-proxy",
            "127.0.0.1",
        ])
        .start()
        .await;
    // Reach it over IPv4: the peer is ::ffff:127.0.0.1 on the dual-stack socket.
    let port = server.url.rsplit(':').next().expect("port").to_owned();
    server.url = format!("http://127.0.0.1:{port}");
    // Each forwarded client has a bucket of its own: the proxy was believed.
    let got = statuses(&server, 6, |i| {
        vec![("x-forwarded-for".to_owned(), format!("10.0.0.{i}"))]
    })
    .await;
    assert!(got.iter().all(|s| *s == 200), "{got:?}");
    // And one client is limited.
    let got = statuses(&server, 4, |_| {
        vec![("x-forwarded-for".to_owned(), "10.0.0.99".to_owned())]
    })
    .await;
    assert!(got.contains(&429), "{got:?}");
    server.stop_and_check();
}

#[tokio::test]
async fn a_client_behind_a_trusted_proxy_cannot_pick_its_bucket() {
    let mut server = ServerBuilder::new()
        .args(&[
            "--rate-limit",
            "1",
            "--rate-burst",
            "2",
            "--trusted-proxy",
            "127.0.0.1",
        ])
        .start()
        .await;
    // An entry that is not an address, with forged addresses rotating left of it: one bucket.
    let got = statuses(&server, 6, |i| {
        vec![(
            "x-forwarded-for".to_owned(),
            format!("10.0.0.{i}, not-an-address"),
        )]
    })
    .await;
    assert!(got[2..].iter().all(|s| *s == 429), "{got:?}");

    // IPv6 clients are one client per /64: rotating the low bits buys nothing.
    let got = statuses(&server, 6, |i| {
        vec![(
            "x-forwarded-for".to_owned(),
            format!("2001:db8:1:2::{:x}", i + 1),
        )]
    })
    .await;
    assert!(got[2..].iter().all(|s| *s == 429), "{got:?}");
    // Another /64 is another client.
    let got = statuses(&server, 1, |_| {
        vec![("x-forwarded-for".to_owned(), "2001:db8:1:3::1".to_owned())]
    })
    .await;
    assert_eq!(got, [200]);
    // Forms a proxy may write: with a port, IPv6 in brackets. These are the client too.
    for (i, entry) in [
        "198.51.100.7:4711",
        "[2001:db8:9::1]:443",
        "[2001:db8:8::1]",
    ]
    .iter()
    .enumerate()
    {
        let got = statuses(&server, 3, |_| {
            vec![("x-forwarded-for".to_owned(), (*entry).to_owned())]
        })
        .await;
        assert_eq!(got[..2], [200, 200], "{i}: {entry}: {got:?}");
        assert_eq!(got[2], 429, "{entry} is one client: {got:?}");
    }
    server.stop_and_check();
}

/// A function that writes `./tick` in its own folder every 50 ms, from start-up on.
const TICKER: &str = r#"
import json, sys, threading, time

def tick():
    n = 0
    while True:
        n += 1
        with open("tick", "w") as f:
            f.write(str(n))
        time.sleep(0.05)

threading.Thread(target=tick, daemon=True).start()
for line in sys.stdin:
    msg = json.loads(line)
    sys.stdout.write(json.dumps({"jsonrpc": "2.0", "id": msg["id"], "result": {}}) + "\n")
    sys.stdout.flush()
"#;

#[tokio::test]
async fn a_function_writing_into_its_own_folder_does_not_hold_up_deploys() {
    // min_instances: its process runs all along (one with no subscriptions is otherwise
    // stopped once it has answered initialize).
    let mut server = ServerBuilder::new()
        .file("ticker", "main.py", TICKER)
        .toml("ticker", "min_instances = 1\n")
        .start()
        .await;
    server.wait_ready().await;
    let tick = server.functions_dir().join("ticker/tick");
    assert!(
        poll(|| async { tick.exists() }).await,
        "the ticker never ticked"
    );
    let ticker = server.pids_of("ticker");

    // While it ticks, a new function is copied in: it appears.
    crate::harness::deploy_fixture("echo", &server.functions_dir().join("late"));
    let appeared = poll(|| async { server.run("late", json!({})).await.status == 200 }).await;
    assert!(
        appeared,
        "the new function never appeared; log:\n{}",
        server.logs()
    );
    // And one that goes away is removed.
    std::fs::remove_dir_all(server.functions_dir().join("late")).expect("remove late");
    let removed = poll(|| async { server.run("late", json!({})).await.status == 404 }).await;
    assert!(
        removed,
        "the removed function stayed; log:\n{}",
        server.logs()
    );
    // The ticker kept running through all this: its own writes are no redeploy.
    assert_eq!(server.pids_of("ticker"), ticker, "{}", server.logs());
    server.stop_and_check();
}

/// On an invoke `{"lines": N, "text": T}`, writes N lines of T to stderr in one go.
const STDERR_FLOOD: &str = r#"
import json, sys
for line in sys.stdin:
    msg = json.loads(line)
    if msg.get("method") == "invoke":
        data = msg["params"]["input"]
        sys.stderr.write((data["text"] + "\n") * data["lines"])
        sys.stderr.flush()
    sys.stdout.write(json.dumps({"jsonrpc": "2.0", "id": msg["id"], "result": {"done": True}}) + "\n")
    sys.stdout.flush()
"#;

#[tokio::test]
async fn a_flood_of_stderr_lines_costs_the_supervisor_bounded_memory_and_log() {
    let mut server = ServerBuilder::new()
        .file("flood", "main.py", STDERR_FLOOD)
        .fixture("echo")
        .start()
        .await;
    server.wait_ready().await;
    assert_eq!(server.run("echo", json!({})).await.status, 200);
    let rss_before = server.rss_kib();
    let log_before = server.logs().len();

    // One million empty lines, then half a million short ones, each in one invoke.
    for (lines, text) in [(1_000_000, ""), (500_000, "x")] {
        let last_seq = |answer: &crate::harness::Answer| {
            answer.body["lines"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|l| l["message"] == text)
                .filter_map(|l| l["seq"].as_u64())
                .max()
        };
        let before = server.get("/functions/flood/logs?tail=1").await.body["lines"][0]["seq"]
            .as_u64()
            .unwrap_or(0);
        let answer = server
            .run("flood", json!({"lines": lines, "text": text}))
            .await;
        assert_eq!(answer.status, 200, "{answer:?}");
        // The lines are read after the answer may have come: wait until the last is in.
        let all_in = poll(|| async {
            let tail = server.get("/functions/flood/logs?tail=5").await;
            last_seq(&tail).is_some_and(|seq| seq >= before + lines)
        })
        .await;
        assert!(all_in, "the flood was not read");
    }
    let rss_after = server.rss_kib();
    let log_growth = server.logs().len() - log_before;
    eprintln!(
        "supervisor RSS {rss_before} KiB -> {rss_after} KiB; its log grew by {log_growth} bytes"
    );
    assert!(
        rss_after < rss_before + 16 * 1024,
        "RSS {rss_before} KiB -> {rss_after} KiB"
    );
    assert!(
        log_growth < 4 << 20,
        "shs's own log grew by {log_growth} bytes"
    );
    // What was left out of shs's log is said, and counted.
    assert!(
        server.logs().contains("not written to shs's log"),
        "no marker in the log"
    );
    let metrics = server.get("/metrics").await;
    let text = metrics.body.as_str().expect("metrics text");
    assert!(
        text.lines()
            .any(|l| l.starts_with("shs_function_log_lines_dropped_total{function=\"flood\"}")),
        "{text}"
    );
    // The ring's answer is bounded.
    let ring = server.get("/functions/flood/logs?tail=10000").await;
    let lines = ring.body["lines"].as_array().expect("lines");
    assert!(lines.len() < 4096, "{} lines in the ring", lines.len());
    assert!(ring.body.to_string().len() < 1 << 20);
    // Everyone else is served.
    assert_eq!(
        server.run("echo", json!({"still": "here"})).await.status,
        200
    );
    assert_eq!(
        server
            .run("flood", json!({"lines": 1, "text": "ok"}))
            .await
            .status,
        200
    );
    server.stop_and_check();
}
