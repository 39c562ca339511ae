//! Triggers beyond a waiting client (issue 13): `Idempotency-Key` on `POST /run/{name}` and
//! `POST /events`, on the real server with real function processes, across restarts.

use reqwest::Method;
use serde_json::{Value, json};

use crate::harness::{Answer, Server, ServerBuilder, poll};

/// An exec function that counts its runs in `runs.log` and answers the count with its input;
/// a body holding `slow` writes `waiting`, then waits (at most 10 s) for a file `go`.
const COUNTER: &str = r#"#!/bin/sh
# counter (exec): counts its runs in runs.log and answers {"runs": N, "input": BODY};
# a body holding "slow" first writes a file `waiting`, then waits for a file `go` (at most 10 s).
body=$(cat)
case "$body" in *slow*)
  : > waiting
  i=0
  while [ ! -e go ] && [ $i -lt 200 ]; do sleep 0.05; i=$((i+1)); done;;
esac
echo run >> runs.log
printf '{"runs": %s, "input": %s}' "$(wc -l < runs.log | tr -d ' ')" "$body"
"#;

fn counter(builder: ServerBuilder) -> ServerBuilder {
    builder
        .file("counter", "main", COUNTER)
        .toml("counter", "mode = \"exec\"\n")
}

fn runs(server: &Server) -> usize {
    std::fs::read_to_string(server.functions_dir().join("counter").join("runs.log"))
        .unwrap_or_default()
        .lines()
        .count()
}

async fn keyed(server: &Server, path: &str, body: &str, key: &str) -> Answer {
    keyed_with(server, path, body, &[("idempotency-key", key)]).await
}

async fn keyed_with(server: &Server, path: &str, body: &str, headers: &[(&str, &str)]) -> Answer {
    server
        .request(Method::POST, path, Some(body.to_owned()), headers)
        .await
}

#[tokio::test]
async fn the_same_key_and_request_get_the_first_answer_and_run_once() {
    let mut server = counter(ServerBuilder::new()).start().await;
    server.wait_ready().await;
    let first = keyed(&server, "/run/counter", r#"{"order": 1}"#, "order-1").await;
    assert_eq!(first.status, 200, "{first:?}");
    assert_eq!(first.body, json!({"runs": 1, "input": {"order": 1}}));
    assert_eq!(first.header("idempotent-replayed"), None);
    for _ in 0..3 {
        let again = keyed(&server, "/run/counter", r#"{"order": 1}"#, "order-1").await;
        assert_eq!(again.status, 200, "{again:?}");
        assert_eq!(again.body, first.body);
        assert_eq!(again.header("idempotent-replayed"), Some("true"));
        assert_eq!(again.header("content-type"), first.header("content-type"));
    }
    // The quoted form of the draft is the same key.
    let quoted = keyed(&server, "/run/counter", r#"{"order": 1}"#, "\"order-1\"").await;
    assert_eq!(quoted.header("idempotent-replayed"), Some("true"));
    assert_eq!(runs(&server), 1, "the function ran once");
    // Another key is another request; no key runs every time.
    let other = keyed(&server, "/run/counter", r#"{"order": 1}"#, "order-1b").await;
    assert_eq!(other.body["runs"], 2);
    server.run("counter", json!({"order": 1})).await;
    server.run("counter", json!({"order": 1})).await;
    assert_eq!(runs(&server), 4);
    server.stop_and_check();
}

#[tokio::test]
async fn the_same_key_with_another_request_is_422() {
    let mut server = counter(ServerBuilder::new()).fixture("echo").start().await;
    server.wait_ready().await;
    let first = keyed(&server, "/run/counter", r#"{"order": 1}"#, "k-422").await;
    assert_eq!(first.status, 200, "{first:?}");
    // Another body, path, query or function.
    for (path, body) in [
        ("/run/counter", r#"{"order": 2}"#),
        ("/run/counter/more", r#"{"order": 1}"#),
        ("/run/counter?x=1", r#"{"order": 1}"#),
        ("/run/echo", r#"{"order": 1}"#),
    ] {
        let answer = keyed(&server, path, body, "k-422").await;
        assert_eq!(answer.status, 422, "{path} {body}: {answer:?}");
        assert!(
            answer.message().contains("another request"),
            "{}",
            answer.message()
        );
    }
    // Another method is another request too.
    let patch = server
        .request(
            Method::PATCH,
            "/run/counter",
            Some(r#"{"order": 1}"#.to_owned()),
            &[("idempotency-key", "k-422")],
        )
        .await;
    assert_eq!(patch.status, 422, "{patch:?}");
    assert_eq!(runs(&server), 1);
    // The first request still gets its answer.
    let again = keyed(&server, "/run/counter", r#"{"order": 1}"#, "k-422").await;
    assert_eq!(again.body, first.body);
    server.stop_and_check();
}

#[tokio::test]
async fn a_key_in_flight_is_409_then_the_answer() {
    let mut server = counter(ServerBuilder::new()).start().await;
    server.wait_ready().await;
    let url = format!("{}/run/counter", server.url);
    let first = tokio::spawn(async move {
        let resp = reqwest::Client::new()
            .post(url)
            .header("idempotency-key", "slow-1")
            .body(r#"{"slow": true}"#)
            .send()
            .await
            .expect("first request");
        let status = resp.status().as_u16();
        (status, resp.json::<Value>().await.expect("json"))
    });
    // While the first runs (it waits for `go`), the same key is refused.
    let folder = server.functions_dir().join("counter");
    assert!(
        poll(|| async { folder.join("waiting").exists() }).await,
        "the first request runs"
    );
    let conflict = keyed(&server, "/run/counter", r#"{"slow": true}"#, "slow-1").await;
    assert_eq!(conflict.status, 409, "{conflict:?}");
    assert!(conflict.message().contains("still running"), "{conflict:?}");
    assert_eq!(conflict.header("retry-after"), Some("1"));
    std::fs::write(server.functions_dir().join("counter").join("go"), "").expect("go");
    let (status, body) = first.await.expect("first request");
    assert_eq!((status, &body["runs"]), (200, &json!(1)));
    let again = keyed(&server, "/run/counter", r#"{"slow": true}"#, "slow-1").await;
    assert_eq!((again.status, &again.body), (200, &body));
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    assert_eq!(runs(&server), 1);
    server.stop_and_check();
}

#[tokio::test]
async fn keys_survive_a_kill_9() {
    let mut server = counter(ServerBuilder::new()).start().await;
    server.wait_ready().await;
    let first = keyed(&server, "/run/counter", r#"{"pay": 10}"#, "pay-10").await;
    assert_eq!(first.status, 200, "{first:?}");
    let event = keyed(
        &server,
        "/events",
        r#"{"type": "pay.done", "payload": {"n": 1}}"#,
        "pay-event",
    )
    .await;
    assert_eq!(event.status, 200, "{event:?}");
    server.kill9();
    server.restart();
    server.wait_ready().await;
    let again = keyed(&server, "/run/counter", r#"{"pay": 10}"#, "pay-10").await;
    assert_eq!((again.status, &again.body), (200, &first.body));
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    let different = keyed(&server, "/run/counter", r#"{"pay": 11}"#, "pay-10").await;
    assert_eq!(different.status, 422, "{different:?}");
    let event_again = keyed(
        &server,
        "/events",
        r#"{"type": "pay.done", "payload": {"n": 1}}"#,
        "pay-event",
    )
    .await;
    assert_eq!(event_again.body, event.body, "the same event id");
    assert_eq!(event_again.header("idempotent-replayed"), Some("true"));
    assert_eq!(runs(&server), 1);
    server.stop_and_check();
}

#[tokio::test]
async fn keys_are_scoped_per_api_key_and_the_api_key_is_not_stored() {
    let mut server = counter(ServerBuilder::new())
        .args(&["--api-key", "alpha-secret-key,beta-secret-key"])
        .start()
        .await;
    let alpha = [
        ("idempotency-key", "shared"),
        ("x-api-key", "alpha-secret-key"),
    ];
    let beta = [
        ("idempotency-key", "shared"),
        ("authorization", "Bearer beta-secret-key"),
    ];
    let a = keyed_with(&server, "/run/counter", r#"{"n": 1}"#, &alpha).await;
    let b = keyed_with(&server, "/run/counter", r#"{"n": 1}"#, &beta).await;
    assert_eq!((a.status, b.status), (200, 200), "{a:?} {b:?}");
    assert_eq!((&a.body["runs"], &b.body["runs"]), (&json!(1), &json!(2)));
    // Each client gets its own first answer again; another body under the other's key is
    // fine for it, not for the first.
    let a2 = keyed_with(&server, "/run/counter", r#"{"n": 1}"#, &alpha).await;
    assert_eq!(
        (a2.body["runs"].clone(), a2.header("idempotent-replayed")),
        (json!(1), Some("true"))
    );
    let b2 = keyed_with(&server, "/run/counter", r#"{"n": 1}"#, &beta).await;
    assert_eq!(
        (b2.body["runs"].clone(), b2.header("idempotent-replayed")),
        (json!(2), Some("true"))
    );
    // A wrong API key never reaches the keys.
    let wrong = keyed_with(
        &server,
        "/run/counter",
        r#"{"n": 1}"#,
        &[("idempotency-key", "shared"), ("x-api-key", "nope")],
    )
    .await;
    assert_eq!(wrong.status, 401);
    assert_eq!(runs(&server), 2);
    server.stop_and_check();
    let mut stored = Vec::new();
    for entry in std::fs::read_dir(server.data_dir()).expect("data dir") {
        stored.extend(std::fs::read(entry.expect("entry").path()).expect("read"));
    }
    assert!(
        stored.windows(b"shared".len()).any(|w| w == b"shared"),
        "the keys are in the store"
    );
    for secret in [&b"alpha-secret-key"[..], b"beta-secret-key"] {
        assert!(
            !stored.windows(secret.len()).any(|w| w == secret),
            "an API key is stored in clear"
        );
    }
}

#[tokio::test]
async fn malformed_keys_are_400_and_run_nothing() {
    let mut server = counter(ServerBuilder::new()).start().await;
    server.wait_ready().await;
    let long = "k".repeat(256);
    let longest = "k".repeat(255);
    for (key, why) in [
        (long.as_str(), "longer than 255"),
        ("a\tb", "control characters"),
        ("\"\"", "empty"),
        ("\"open", "end with a quote"),
    ] {
        let answer = keyed(&server, "/run/counter", "{}", key).await;
        assert_eq!(answer.status, 400, "{key:?}: {answer:?}");
        assert!(answer.message().contains(why), "{}", answer.message());
        let answer = keyed(&server, "/events", r#"{"type": "a.b"}"#, key).await;
        assert_eq!(answer.status, 400, "{key:?}: {answer:?}");
    }
    // Two keys.
    let resp = reqwest::Client::new()
        .post(format!("{}/run/counter", server.url))
        .header("idempotency-key", "one")
        .header("idempotency-key", "two")
        .body("{}")
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status().as_u16(), 400);
    // Not UTF-8.
    let resp = reqwest::Client::new()
        .post(format!("{}/run/counter", server.url))
        .header(
            "idempotency-key",
            reqwest::header::HeaderValue::from_bytes(b"\xff\xfe").expect("obs-text"),
        )
        .body("{}")
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status().as_u16(), 400);
    assert_eq!(runs(&server), 0);
    let ok = keyed(&server, "/run/counter", "{}", &longest).await;
    assert_eq!(ok.status, 200, "{ok:?}");
    server.stop_and_check();
}

#[tokio::test]
async fn an_answer_given_before_anything_ran_releases_the_key() {
    let mut server = counter(ServerBuilder::new())
        .fixture("recorder")
        .toml("recorder", "env = { ON = \"order.>\" }\n")
        .start()
        .await;
    server.wait_ready().await;
    // A malformed event is refused; the same key then publishes the good one.
    let bad = keyed(&server, "/events", r#"{"type": "..."}"#, "ev-1").await;
    assert_eq!(bad.status, 400, "{bad:?}");
    let good = keyed(
        &server,
        "/events",
        r#"{"type": "order.placed", "payload": {"n": 1}}"#,
        "ev-1",
    )
    .await;
    assert_eq!(good.status, 200, "{good:?}");
    assert_eq!(good.body["delivered"], 1);
    let again = keyed(
        &server,
        "/events",
        r#"{"type": "order.placed", "payload": {"n": 1}}"#,
        "ev-1",
    )
    .await;
    assert_eq!(again.body, good.body);
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    // Asynchronous publishing is another request under the same key.
    let async_publish = keyed_with(
        &server,
        "/events",
        r#"{"type": "order.placed", "payload": {"n": 1}}"#,
        &[("idempotency-key", "ev-1"), ("prefer", "respond-async")],
    )
    .await;
    assert_eq!(async_publish.status, 422, "{async_publish:?}");
    let log = server.functions_dir().join("recorder").join("received.log");
    let delivered = || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .count()
    };
    assert_eq!(delivered(), 1, "the event was delivered once");
    // An unknown function is not a run either.
    let missing = keyed(&server, "/run/nobody", "{}", "run-1").await;
    assert_eq!(missing.status, 404, "{missing:?}");
    let ran = keyed(&server, "/run/counter", "{}", "run-1").await;
    assert_eq!(ran.status, 200, "the key was released: {ran:?}");
    assert_eq!(runs(&server), 1);
    // A key on a GET is not one: GET is safe, it runs every time.
    for _ in 0..2 {
        server
            .request(
                Method::GET,
                "/run/counter",
                None,
                &[("idempotency-key", "get-1")],
            )
            .await;
    }
    assert_eq!(runs(&server), 3);
    server.stop_and_check();
}

#[tokio::test]
async fn an_asynchronous_invocation_is_accepted_once_per_key() {
    let mut server = counter(ServerBuilder::new()).start().await;
    server.wait_ready().await;
    let headers = [("idempotency-key", "job-1"), ("prefer", "respond-async")];
    let first = keyed_with(&server, "/run/counter", r#"{"job": 1}"#, &headers).await;
    assert_eq!(first.status, 202, "{first:?}");
    let id = first.body["invocation_id"]
        .as_str()
        .expect("invocation id")
        .to_owned();
    let again = keyed_with(&server, "/run/counter", r#"{"job": 1}"#, &headers).await;
    assert_eq!((again.status, &again.body), (202, &first.body));
    assert_eq!(again.header("location"), first.header("location"));
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    // The same key without `Prefer: respond-async` is another request.
    let sync = keyed(&server, "/run/counter", r#"{"job": 1}"#, "job-1").await;
    assert_eq!(sync.status, 422, "{sync:?}");
    assert!(
        poll(|| async {
            server.get(&format!("/invocations/{id}")).await.body["state"] == "succeeded"
        })
        .await,
        "the invocation ran"
    );
    let after = keyed_with(&server, "/run/counter", r#"{"job": 1}"#, &headers).await;
    assert_eq!(after.body["invocation_id"], id.as_str());
    assert_eq!(runs(&server), 1, "one invocation, run once");
    server.stop_and_check();
}
