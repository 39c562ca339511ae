//! Webhook verification: for each kind, a right, a wrong, a missing and (with a timestamp) a
//! stale signature; the function runs only for the right one, sees `context.webhook`, and
//! each refusal is a 401 naming the header, counted in the metrics.

use std::time::{SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

use crate::harness::{Answer, Server, ServerBuilder};
use crate::secrets::with_secrets;

const SECRET: &str = "It's a Secret to Everybody";

/// Hex HMAC-SHA256 of `message` under `key`.
pub fn sign(key: &str, message: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key.as_bytes()).expect("any key length");
    mac.update(message);
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs()
}

/// A server with the echo fixture deployed as `hook`, its `[webhook]` given by `table`.
async fn server(table: &str) -> Server {
    let builder = ServerBuilder::new().fixture_as("echo", "hook").toml(
        "hook",
        &format!("[webhook]\n{table}\nsecret = \"hook-key\"\n"),
    );
    let server = with_secrets(builder, &[("hook-key", &format!("{SECRET}\n"))])
        .start()
        .await;
    server.wait_ready().await;
    server
}

async fn send(server: &Server, body: &str, headers: &[(&str, &str)]) -> Answer {
    let mut all = vec![("content-type", "application/json")];
    all.extend_from_slice(headers);
    server
        .request(
            reqwest::Method::POST,
            "/run/hook",
            Some(body.to_owned()),
            &all,
        )
        .await
}

/// Asserts a 401 naming `header` (and `also`), and that the secret is not in it.
fn refused(answer: &Answer, header: &str, also: &str) {
    assert_eq!(answer.status, 401, "{:?}", answer.body);
    let message = answer.message();
    assert!(message.contains(header), "{message}");
    assert!(message.contains(also), "{message}");
    assert!(!answer.body.to_string().contains(SECRET));
    assert_eq!(answer.body["error"]["function"], "hook");
}

/// The right answer ran the function with `context.webhook`; only it ran; the refusals are
/// counted.
async fn only_the_signed_one_ran(server: &Server, kind: &str, refusals: u32) {
    let metrics = server.get("/metrics").await;
    let text = metrics.body.as_str().expect("metrics text").to_owned();
    let line =
        format!("shs_webhook_refusals_total{{function=\"hook\",kind=\"{kind}\"}} {refusals}");
    assert!(text.contains(&line), "no {line:?} in\n{text}");
    assert!(!text.contains(SECRET));
    let counts = server.get("/metrics/hook").await;
    assert_eq!(counts.body["invocations"], 1, "{:?}", counts.body);
    for path in ["/functions", "/functions/hook", "/functions/hook/logs"] {
        let answer = server.get(path).await;
        assert!(!answer.body.to_string().contains(SECRET), "{path}");
    }
    assert!(!server.logs().contains(SECRET));
}

fn webhook_context(answer: &Answer) -> &Value {
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    &answer.body["context"]["webhook"]
}

#[tokio::test]
async fn github_signatures_are_checked_before_the_function_runs() {
    let server = server("kind = \"github\"").await;
    let body = r#"{"zen":"Keep it logically awesome.","hook_id":1}"#;
    let right = format!("sha256={}", sign(SECRET, body.as_bytes()));
    let answer = send(&server, body, &[("X-Hub-Signature-256", &right)]).await;
    assert_eq!(
        webhook_context(&answer),
        &json!({"kind": "github", "verified": true})
    );
    assert_eq!(answer.body["input"]["zen"], "Keep it logically awesome.");

    let wrong = format!("sha256={}", sign("another secret", body.as_bytes()));
    let answer = send(&server, body, &[("X-Hub-Signature-256", &wrong)]).await;
    refused(&answer, "X-Hub-Signature-256", "does not match");
    // The right signature over another body (one byte changed) is wrong too.
    let answer = send(
        &server,
        &body.replace('1', "2"),
        &[("X-Hub-Signature-256", &right)],
    )
    .await;
    refused(&answer, "X-Hub-Signature-256", "does not match");
    let answer = send(&server, body, &[]).await;
    refused(&answer, "X-Hub-Signature-256", "missing");
    // Not hex, no prefix: refused, never a crash.
    let answer = send(&server, body, &[("X-Hub-Signature-256", "sha256=zz")]).await;
    refused(&answer, "X-Hub-Signature-256", "does not match");
    let answer = send(&server, body, &[("X-Hub-Signature-256", &right[7..])]).await;
    refused(&answer, "X-Hub-Signature-256", "sha256=HEX");
    only_the_signed_one_ran(&server, "github", 5).await;
}

#[tokio::test]
async fn stripe_signatures_are_checked_with_their_timestamp() {
    let server = server("kind = \"stripe\"").await;
    let body = r#"{"id":"evt_1","type":"charge.succeeded"}"#;
    let stripe = |ts: u64, key: &str| {
        let signed = format!("{ts}.{body}");
        format!("t={ts},v1={},v0=ignored", sign(key, signed.as_bytes()))
    };
    let t = now();
    let answer = send(&server, body, &[("Stripe-Signature", &stripe(t, SECRET))]).await;
    assert_eq!(
        webhook_context(&answer),
        &json!({"kind": "stripe", "verified": true})
    );
    let answer = send(&server, body, &[("Stripe-Signature", &stripe(t, "wrong"))]).await;
    refused(&answer, "Stripe-Signature", "does not match");
    let answer = send(&server, body, &[]).await;
    refused(&answer, "Stripe-Signature", "missing");
    // Signed right, but ten minutes ago: a replay.
    let stale = stripe(t - 600, SECRET);
    let answer = send(&server, body, &[("Stripe-Signature", &stale)]).await;
    refused(&answer, "Stripe-Signature", "seconds off");
    // A timestamp changed after signing does not match.
    let forged = stripe(t, SECRET).replacen(&format!("t={t}"), &format!("t={}", t + 1), 1);
    let answer = send(&server, body, &[("Stripe-Signature", &forged)]).await;
    refused(&answer, "Stripe-Signature", "does not match");
    only_the_signed_one_ran(&server, "stripe", 4).await;
}

#[tokio::test]
async fn slack_signatures_are_checked_with_their_timestamp() {
    let server = server("kind = \"slack\"").await;
    let body = r#"{"type":"url_verification","challenge":"3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P"}"#;
    let slack =
        |ts: u64, key: &str| format!("v0={}", sign(key, format!("v0:{ts}:{body}").as_bytes()));
    let t = now();
    let ts = t.to_string();
    let answer = send(
        &server,
        body,
        &[
            ("X-Slack-Signature", &slack(t, SECRET)),
            ("X-Slack-Request-Timestamp", &ts),
        ],
    )
    .await;
    assert_eq!(
        webhook_context(&answer),
        &json!({"kind": "slack", "verified": true})
    );
    let answer = send(
        &server,
        body,
        &[
            ("X-Slack-Signature", &slack(t, "wrong")),
            ("X-Slack-Request-Timestamp", &ts),
        ],
    )
    .await;
    refused(&answer, "X-Slack-Signature", "does not match");
    let answer = send(&server, body, &[("X-Slack-Request-Timestamp", &ts)]).await;
    refused(&answer, "X-Slack-Signature", "missing");
    let answer = send(&server, body, &[("X-Slack-Signature", &slack(t, SECRET))]).await;
    refused(&answer, "X-Slack-Request-Timestamp", "missing");
    let old = t - 301;
    let answer = send(
        &server,
        body,
        &[
            ("X-Slack-Signature", &slack(old, SECRET)),
            ("X-Slack-Request-Timestamp", &old.to_string()),
        ],
    )
    .await;
    refused(&answer, "X-Slack-Request-Timestamp", "seconds off");
    only_the_signed_one_ran(&server, "slack", 4).await;
}

#[tokio::test]
async fn hmac_sha256_signatures_are_checked_in_the_header_named() {
    let server = server("kind = \"hmac-sha256\"\nheader = \"X-Our-Signature\"").await;
    let body = r#"{"order":42}"#;
    let right = sign(SECRET, body.as_bytes());
    let answer = send(&server, body, &[("X-Our-Signature", &right)]).await;
    assert_eq!(
        webhook_context(&answer),
        &json!({"kind": "hmac-sha256", "verified": true})
    );
    // With the sha256= prefix too.
    let prefixed = format!("sha256={right}");
    let answer = send(&server, body, &[("X-Our-Signature", &prefixed)]).await;
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    let wrong = sign("wrong", body.as_bytes());
    let answer = send(&server, body, &[("X-Our-Signature", &wrong)]).await;
    refused(&answer, "X-Our-Signature", "does not match");
    // The default header is not the one this function names.
    let answer = send(&server, body, &[("X-Signature", &right)]).await;
    refused(&answer, "X-Our-Signature", "missing");
    let metrics = server.get("/metrics").await;
    let text = metrics.body.as_str().expect("metrics text").to_owned();
    assert!(
        text.contains("shs_webhook_refusals_total{function=\"hook\",kind=\"hmac-sha256\"} 2"),
        "{text}"
    );
    assert_eq!(server.get("/metrics/hook").await.body["invocations"], 2);
}

#[tokio::test]
async fn a_webhook_whose_secret_is_missing_does_not_run() {
    let builder = ServerBuilder::new().fixture_as("echo", "hook").toml(
        "hook",
        "[webhook]\nkind = \"github\"\nsecret = \"nowhere\"\n",
    );
    let server = with_secrets(builder, &[]).start().await;
    server.wait_ready().await;
    let answer = send(&server, "{}", &[("X-Hub-Signature-256", "sha256=00")]).await;
    assert_eq!(answer.status, 503, "{:?}", answer.body);
    assert!(
        answer.message().contains("\"nowhere\""),
        "{}",
        answer.message()
    );
}
