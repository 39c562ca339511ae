//! Operating shs: function logs, request ids and trace context, access control, rate limits,
//! CORS and metrics.

use serde_json::json;

use crate::harness::{ServerBuilder, poll};

#[tokio::test]
async fn a_functions_recent_log_lines_can_be_read_and_followed() {
    let mut server = ServerBuilder::new()
        .fixture("echo")
        .fixture("crash")
        .start()
        .await;
    server.wait_ready().await;
    let answer = server
        .request(
            reqwest::Method::POST,
            "/run/echo",
            Some("{}".into()),
            &[("x-request-id", "logs-1")],
        )
        .await;
    assert_eq!(answer.status, 200);
    let logs = || async { server.get("/functions/echo/logs?tail=50").await };
    assert!(
        poll(|| async {
            logs().await.body["lines"]
                .as_array()
                .is_some_and(|l| l.iter().any(|x| x["message"] == "echo got a request"))
        })
        .await
    );
    let answer = logs().await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.body["function"], "echo");
    let lines = answer.body["lines"].as_array().expect("lines").clone();
    let line = lines
        .iter()
        .find(|l| l["message"] == "echo got a request")
        .expect("logged");
    assert_eq!(line["stream"], "stderr");
    assert_eq!(line["request_id"], "logs-1");
    assert!(line["pid"].as_u64().is_some_and(|p| p > 0));
    assert!(line["time"].is_string());
    assert!(
        lines.iter().any(|l| l["stream"] == "shs"
            && l["message"].as_str().is_some_and(|m| m.contains("started")))
    );
    let last = lines.last().and_then(|l| l["seq"].as_u64()).expect("seq");

    // Following: only what comes after.
    assert_eq!(
        server
            .get(&format!("/functions/echo/logs?after={last}"))
            .await
            .body["lines"],
        json!([])
    );
    server.run("echo", json!({})).await;
    assert!(
        poll(|| async {
            server
                .get(&format!("/functions/echo/logs?after={last}"))
                .await
                .body["lines"]
                .as_array()
                .is_some_and(|l| !l.is_empty())
        })
        .await
    );
    // A crash shows in its function's log.
    server.run("crash", json!({"crash": true})).await;
    assert!(
        poll(|| async {
            server.get("/functions/crash/logs").await.body["lines"]
                .as_array()
                .is_some_and(|l| {
                    l.iter().any(|x| {
                        x["message"]
                            .as_str()
                            .is_some_and(|m| m.contains("exited with status 3"))
                    })
                })
        })
        .await
    );
    assert_eq!(server.get("/functions/nope/logs").await.status, 404);
    assert_eq!(server.get("/functions/bad.name/logs").await.status, 400);
    server.stop_and_check();
}

const TRACE: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

#[tokio::test]
async fn every_answer_carries_a_request_id_and_the_trace_context_reaches_functions_and_events() {
    let mut server = ServerBuilder::new()
        .fixture("echo")
        .fixture("publisher")
        .fixture_as("subscriber", "sub")
        .toml("sub", "env = { SUBSCRIBE = \"traced.event\" }\n")
        .start()
        .await;
    server.wait_ready().await;
    for (method, path) in [
        ("GET", "/health"),
        ("GET", "/functions"),
        ("GET", "/nowhere"),
        ("POST", "/run/nope"),
    ] {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let answer = server.request(method, path, None, &[]).await;
        assert!(
            answer
                .header("x-request-id")
                .is_some_and(|id| !id.is_empty()),
            "{path}: {answer:?}"
        );
    }
    let answer = server
        .request(
            reqwest::Method::POST,
            "/run/echo",
            Some("{}".into()),
            &[("traceparent", TRACE), ("x-request-id", "traced-1")],
        )
        .await;
    assert_eq!(
        answer.body["context"],
        json!({"request_id": "traced-1", "function": "echo", "traceparent": TRACE})
    );
    assert_eq!(answer.header("x-request-id"), Some("traced-1"));
    let bad = server
        .request(
            reqwest::Method::POST,
            "/run/echo",
            Some("{}".into()),
            &[("traceparent", "garbage")],
        )
        .await;
    assert!(
        bad.body["context"].get("traceparent").is_none(),
        "an invalid trace context is dropped"
    );

    // What a traced request publishes carries its trace, and so does the delivery.
    let published = server
        .request(
            reqwest::Method::POST,
            "/run/publisher",
            Some(json!({"type": "traced.event", "payload": 1}).to_string()),
            &[("traceparent", TRACE)],
        )
        .await;
    assert_eq!(published.body["delivered"], 1, "{published:?}");
    let events = server.run("sub", json!({"action": "events"})).await.body["events"].clone();
    assert_eq!(events[0]["traceparent"], TRACE);
    let outside = server
        .request(
            reqwest::Method::POST,
            "/events",
            Some(json!({"type": "traced.event"}).to_string()),
            &[("traceparent", TRACE)],
        )
        .await;
    assert_eq!(outside.status, 200);
    let events = server.run("sub", json!({"action": "events"})).await.body["events"].clone();
    assert_eq!(events[1]["traceparent"], TRACE);
    server.stop_and_check();
}

#[tokio::test]
async fn with_api_keys_every_route_but_health_and_ready_needs_one() {
    let mut server = ServerBuilder::new()
        .fixture("echo")
        .args(&["--api-key", "first-key", "--api-key", "second-key"])
        .start()
        .await;
    for path in ["/health", "/ready"] {
        assert_ne!(server.get(path).await.status, 401, "{path} is open");
    }
    let routes: [(&str, &str, Option<&str>); 8] = [
        ("POST", "/run/echo", Some("{}")),
        ("POST", "/events", Some("{\"type\":\"a.b\"}")),
        ("GET", "/functions", None),
        ("GET", "/subscriptions", None),
        ("GET", "/functions/echo/logs", None),
        ("GET", "/events/dead-letters", None),
        ("GET", "/events/some-id", None),
        ("GET", "/metrics", None),
    ];
    for (method, path, body) in routes {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let body = body.map(str::to_owned);
        let missing = server
            .request(method.clone(), path, body.clone(), &[])
            .await;
        assert_eq!(missing.status, 401, "{path} without a key: {missing:?}");
        assert!(
            missing.message().contains("API key"),
            "{}",
            missing.message()
        );
        assert_eq!(missing.header("www-authenticate"), Some("Bearer"));
        let wrong = server
            .request(
                method.clone(),
                path,
                body.clone(),
                &[("x-api-key", "first-keyX")],
            )
            .await;
        assert_eq!(wrong.status, 401, "{path} with a wrong key");
        let wrong = server
            .request(
                method.clone(),
                path,
                body.clone(),
                &[("authorization", "Bearer nope")],
            )
            .await;
        assert_eq!(wrong.status, 401, "{path} with a wrong bearer");
        let right = server
            .request(
                method.clone(),
                path,
                body.clone(),
                &[("x-api-key", "first-key")],
            )
            .await;
        assert_ne!(right.status, 401, "{path} with the first key: {right:?}");
        let right = server
            .request(
                method,
                path,
                body,
                &[("authorization", "Bearer second-key")],
            )
            .await;
        assert_ne!(
            right.status, 401,
            "{path} with the second key as a bearer: {right:?}"
        );
    }
    server.stop_and_check();
}

#[tokio::test]
async fn the_rate_limit_is_reached_and_recovers() {
    let mut server = ServerBuilder::new()
        .fixture("echo")
        .args(&["--rate-limit", "2", "--rate-burst", "3"])
        .start()
        .await;
    let mut statuses = Vec::new();
    for _ in 0..6 {
        statuses.push(server.get("/functions").await);
    }
    let limited = statuses
        .iter()
        .find(|a| a.status == 429)
        .expect("limited after the burst");
    assert!(
        statuses.iter().take(3).all(|a| a.status == 200),
        "the burst passes"
    );
    assert!(
        limited.message().contains("too many requests"),
        "{}",
        limited.message()
    );
    assert!(
        limited
            .header("retry-after")
            .is_some_and(|s| s.parse::<u64>().is_ok_and(|n| n >= 1))
    );
    assert_eq!(
        server.get("/health").await.status,
        200,
        "health is never limited"
    );
    assert!(
        poll(|| async { server.get("/functions").await.status == 200 }).await,
        "recovers"
    );
    server.stop_and_check();
}

#[tokio::test]
async fn x_forwarded_for_is_believed_only_from_trusted_proxies() {
    // Untrusted: a spoofed X-Forwarded-For changes nothing, every request is the same client.
    let mut server = ServerBuilder::new()
        .args(&["--rate-limit", "1", "--rate-burst", "2"])
        .start()
        .await;
    let mut limited = false;
    for i in 0..5 {
        let answer = server
            .request(
                reqwest::Method::GET,
                "/functions",
                None,
                &[("x-forwarded-for", &format!("10.0.0.{i}"))],
            )
            .await;
        limited |= answer.status == 429;
    }
    assert!(limited, "spoofed addresses did not buy more requests");
    server.stop_and_check();

    // Trusted: each forwarded client has a bucket of its own.
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
    for i in 0..5 {
        let answer = server
            .request(
                reqwest::Method::GET,
                "/functions",
                None,
                &[("x-forwarded-for", &format!("203.0.113.9, 10.0.0.{i}"))],
            )
            .await;
        assert_eq!(answer.status, 200, "client 10.0.0.{i} has its own bucket");
    }
    server.stop_and_check();
}

#[tokio::test]
async fn cors_is_off_by_default_and_answers_the_origins_it_is_given() {
    let mut server = ServerBuilder::new().start().await;
    let answer = server
        .request(
            reqwest::Method::GET,
            "/functions",
            None,
            &[("origin", "https://app.example")],
        )
        .await;
    assert!(answer.header("access-control-allow-origin").is_none());
    assert!(answer.header("vary").is_none(), "{answer:?}");
    server.stop_and_check();

    let mut server = ServerBuilder::new()
        .args(&["--cors-origin", "https://app.example", "--api-key", "k"])
        .start()
        .await;
    let preflight = server
        .request(
            reqwest::Method::OPTIONS,
            "/run/echo",
            None,
            &[
                ("origin", "https://app.example"),
                ("access-control-request-method", "POST"),
                ("access-control-request-headers", "content-type, x-api-key"),
            ],
        )
        .await;
    assert_eq!(preflight.status, 200, "{preflight:?}");
    assert_eq!(
        preflight.header("access-control-allow-origin"),
        Some("https://app.example")
    );
    let answer = server
        .request(
            reqwest::Method::GET,
            "/functions",
            None,
            &[("origin", "https://app.example"), ("x-api-key", "k")],
        )
        .await;
    assert_eq!(
        answer.header("access-control-allow-origin"),
        Some("https://app.example")
    );
    let other = server
        .request(
            reqwest::Method::GET,
            "/functions",
            None,
            &[("origin", "https://evil.example"), ("x-api-key", "k")],
        )
        .await;
    assert!(other.header("access-control-allow-origin").is_none());
    server.stop_and_check();
}

/// The value of a sample of `metric` whose labels include `labels`.
fn sample(scrape: &prometheus_parse::Scrape, metric: &str, labels: &[(&str, &str)]) -> Option<f64> {
    scrape
        .samples
        .iter()
        .find(|s| s.metric == metric && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| match &s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => *v,
            prometheus_parse::Value::Histogram(buckets) => buckets.last().map_or(0.0, |b| b.count),
            prometheus_parse::Value::Summary(_) => f64::NAN,
        })
}

async fn scrape(server: &crate::harness::Server) -> prometheus_parse::Scrape {
    let answer = server.get("/metrics").await;
    assert_eq!(answer.status, 200, "{answer:?}");
    assert!(
        answer
            .header("content-type")
            .is_some_and(|t| t.starts_with("text/plain"))
    );
    let text = answer.body.as_str().expect("text").to_owned();
    prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned())))
        .expect("the Prometheus text format")
}

#[tokio::test]
async fn metrics_parse_as_prometheus_text_and_move_when_requests_run() {
    let mut server = ServerBuilder::new()
        .fixture("echo")
        .fixture("fail")
        .fixture_as("subscriber", "sub")
        .toml("sub", "env = { SUBSCRIBE = \"metered.event\" }\n")
        .fixture("hang")
        .toml("hang", "idle_timeout = 0.2\n")
        .start()
        .await;
    server.wait_ready().await;
    for _ in 0..3 {
        assert_eq!(server.run("echo", json!({})).await.status, 200);
    }
    assert_eq!(server.run("fail", json!({})).await.status, 500);
    assert_eq!(
        server.publish("metered.event", json!(1)).await.body["delivered"],
        1
    );
    // A cold start: hang scales to zero, then runs again.
    assert!(
        poll(|| async {
            server
                .function_info("hang")
                .await
                .is_some_and(|f| f["processes"] == 0)
        })
        .await
    );
    assert_eq!(server.run("hang", json!({"sleep": 0})).await.status, 200);

    let metrics = scrape(&server).await;
    let invocations = |function: &str, outcome: &str| {
        sample(
            &metrics,
            "shs_invocations_total",
            &[("function", function), ("outcome", outcome)],
        )
    };
    assert_eq!(invocations("echo", "ok"), Some(3.0));
    assert_eq!(invocations("fail", "function_error"), Some(1.0));
    assert!(
        sample(
            &metrics,
            "shs_invocation_duration_seconds_count",
            &[("function", "echo")]
        )
        .is_some_and(|c| c >= 3.0)
    );
    assert_eq!(
        sample(&metrics, "shs_cold_starts_total", &[("function", "hang")]),
        Some(1.0)
    );
    assert!(
        sample(
            &metrics,
            "shs_cold_start_duration_seconds_count",
            &[("function", "hang")]
        )
        .is_some_and(|c| c >= 1.0)
    );
    assert_eq!(
        sample(
            &metrics,
            "shs_processes",
            &[("function", "echo"), ("state", "running")]
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(&metrics, "shs_queue_depth", &[("function", "echo")]),
        Some(0.0)
    );
    assert_eq!(
        sample(&metrics, "shs_events_published_total", &[("mode", "sync")]),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &metrics,
            "shs_event_deliveries_total",
            &[("function", "sub"), ("outcome", "delivered")]
        ),
        Some(1.0)
    );

    // They move.
    server.run("echo", json!({})).await;
    let after = scrape(&server).await;
    assert_eq!(
        sample(
            &after,
            "shs_invocations_total",
            &[("function", "echo"), ("outcome", "ok")]
        ),
        Some(4.0)
    );

    let echo = server.get("/metrics/echo").await;
    assert_eq!(echo.status, 200, "{echo:?}");
    // The counts at the top level, as README documents (and the original project answered).
    let m = &echo.body;
    assert!(
        m.get("metrics").is_none() && m.get("function").is_none(),
        "{m}"
    );
    assert_eq!(m["execution_count"], 4);
    assert_eq!(m["error_count"], 0);
    assert!(m["average_duration_ms"].as_f64().is_some_and(|ms| ms > 0.0));
    assert!(m["last_execution_time"].is_string());
    let hang = server.get("/metrics/hang").await;
    assert_eq!(hang.body["cold_start_count"], 1);
    let fail = server.get("/metrics/fail").await;
    assert_eq!(fail.body["error_count"], 1);
    assert_eq!(server.get("/metrics/nope").await.status, 404);
    server.stop_and_check();
}
