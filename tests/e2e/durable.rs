//! Events you can trust: asynchronous delivery on the embedded store, retries, dead letters,
//! restarts (clean and kill -9), lineage, and CloudEvents in both modes.

use std::collections::BTreeSet;

use serde_json::{Value, json};

use crate::harness::{Answer, Server, ServerBuilder, poll};

async fn publish_async(server: &Server, event_type: &str, payload: Value) -> Answer {
    server
        .request(
            reqwest::Method::POST,
            "/events",
            Some(json!({"type": event_type, "payload": payload}).to_string()),
            &[("prefer", "respond-async")],
        )
        .await
}

/// The ids recorded by the `recorder` function deployed as `name`.
fn recorded(server: &Server, name: &str) -> Vec<Value> {
    std::fs::read_to_string(server.functions_dir().join(name).join("received.log"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

fn recorder(builder: ServerBuilder, name: &str, on: &str, extra: &str) -> ServerBuilder {
    builder
        .fixture_as("recorder", name)
        .toml(name, &format!("env = {{ ON = \"{on}\" }}\n{extra}"))
}

#[tokio::test]
async fn prefer_respond_async_answers_202_and_delivers_after() {
    let mut server = recorder(ServerBuilder::new(), "rec", "order.placed", "")
        .start()
        .await;
    server.wait_ready().await;
    let answer = publish_async(&server, "order.placed", json!({"n": 1})).await;
    assert_eq!(answer.status, 202, "{answer:?}");
    assert_eq!(answer.body["status"], "accepted");
    assert_eq!(answer.header("preference-applied"), Some("respond-async"));
    let id = answer.body["event_id"]
        .as_str()
        .expect("event id")
        .to_owned();
    assert!(
        poll(|| async { recorded(&server, "rec").len() == 1 }).await,
        "delivered"
    );
    assert_eq!(
        recorded(&server, "rec")[0],
        json!({"id": id, "payload": {"n": 1}})
    );
    let info = server.get(&format!("/events/{id}")).await;
    assert_eq!(info.status, 200, "{info:?}");
    assert_eq!(info.body["mode"], "async");
    assert_eq!(info.body["deliveries"][0]["function"], "rec");
    assert!(
        poll(|| async {
            server.get(&format!("/events/{id}")).await.body["deliveries"][0]["state"] == "delivered"
        })
        .await
    );
    server.stop_and_check();
}

#[tokio::test]
async fn a_function_publishes_asynchronously() {
    let builder = recorder(ServerBuilder::new(), "source", "", "");
    let mut server = recorder(builder, "sink", "from.function", "").start().await;
    server.wait_ready().await;
    let answer = server
        .run(
            "source",
            json!({"publish": "from.function", "payload": "hi", "async": true}),
        )
        .await;
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(answer.body["accepted"], true);
    assert_eq!(answer.body["delivered"], 0);
    assert!(
        poll(|| async { recorded(&server, "sink").len() == 1 }).await,
        "delivered after"
    );
    server.stop_and_check();
}

#[tokio::test]
async fn events_of_one_type_arrive_in_the_order_they_were_stored() {
    let mut server = recorder(ServerBuilder::new(), "rec", "seq.item", "instances = 4\n")
        .start()
        .await;
    server.wait_ready().await;
    for n in 0..50 {
        let answer = publish_async(&server, "seq.item", json!(n)).await;
        assert_eq!(answer.status, 202);
    }
    assert!(poll(|| async { recorded(&server, "rec").len() == 50 }).await);
    let order: Vec<i64> = recorded(&server, "rec")
        .iter()
        .filter_map(|r| r["payload"].as_i64())
        .collect();
    assert_eq!(order, (0..50).collect::<Vec<_>>());
    server.stop_and_check();
}

#[tokio::test]
async fn nothing_accepted_is_lost_when_the_supervisor_is_killed() {
    let server = recorder(ServerBuilder::new(), "rec", "bulk.item", "")
        .start()
        .await;
    server.wait_ready().await;
    // Slow: deliveries lag far behind what is accepted.
    std::fs::write(server.functions_dir().join("rec/slow"), "").expect("slow");
    let server = std::sync::Arc::new(server);
    let publishers: Vec<_> = (0..16)
        .map(|p| {
            let server = server.clone();
            tokio::spawn(async move {
                let mut ids = Vec::new();
                for i in 0..1000 / 16 + usize::from(p < 1000 % 16) {
                    let answer = publish_async(&server, "bulk.item", json!({"p": p, "i": i})).await;
                    assert_eq!(answer.status, 202, "{answer:?}");
                    ids.push(answer.body["event_id"].as_str().expect("id").to_owned());
                }
                ids
            })
        })
        .collect();
    let mut accepted = BTreeSet::new();
    for p in publishers {
        accepted.extend(p.await.expect("publisher"));
    }
    assert_eq!(accepted.len(), 1000);
    let mut server = std::sync::Arc::into_inner(server).expect("sole owner");
    server.kill9();
    let before = recorded(&server, "rec").len();
    assert!(
        before < 1000,
        "some were still pending at the kill ({before} delivered)"
    );

    std::fs::remove_file(server.functions_dir().join("rec/slow")).expect("fast again");
    server.restart();
    let got = || {
        recorded(&server, "rec")
            .iter()
            .filter_map(|r| r["id"].as_str().map(str::to_owned))
            .collect::<BTreeSet<String>>()
    };
    assert!(
        poll(|| async { got().len() == 1000 }).await,
        "{} of 1000 delivered after the restart; log:\n{}",
        got().len(),
        server.logs()
    );
    assert_eq!(got(), accepted, "every accepted event, and only those");
    server.wait_for_log("resuming pending deliveries").await;
    server.stop_and_check();
}

#[tokio::test]
async fn a_subscriber_failing_twice_is_retried_and_succeeds() {
    let mut server = ServerBuilder::new()
        .fixture("flaky")
        .toml(
            "flaky",
            "env = { ON = \"flaky.job\" }\nretry_backoff = 0.05\nmax_attempts = 5\n",
        )
        .start()
        .await;
    server.wait_ready().await;
    let answer = publish_async(&server, "flaky.job", json!({})).await;
    let id = answer.body["event_id"].as_str().expect("id").to_owned();
    assert!(
        poll(|| async {
            server.get(&format!("/events/{id}")).await.body["deliveries"][0]["state"] == "delivered"
        })
        .await,
        "delivered in the end; log:\n{}",
        server.logs()
    );
    let info = server.get(&format!("/events/{id}")).await;
    let attempts = info.body["deliveries"][0]["attempts"]
        .as_array()
        .expect("attempts")
        .clone();
    assert_eq!(attempts.len(), 3, "{attempts:?}");
    assert_eq!(attempts[0]["status"], 500);
    assert!(
        attempts[0]["error"]
            .as_str()
            .is_some_and(|e| e.contains("not yet (attempt 1)"))
    );
    assert!(
        attempts[1]["error"]
            .as_str()
            .is_some_and(|e| e.contains("not yet (attempt 2)"))
    );
    assert_eq!(attempts[2]["status"], 200);
    server.stop_and_check();
}

#[tokio::test]
async fn a_subscriber_that_always_fails_ends_in_the_dead_letters_and_can_be_retried() {
    let mut server = ServerBuilder::new()
        .fixture("flaky")
        .toml("flaky", "env = { ON = \"doomed.job\", FAILS = \"0\" }\nretry_backoff = 0.05\nmax_attempts = 3\n")
        .start()
        .await;
    server.wait_ready().await;
    std::fs::write(server.functions_dir().join("flaky/broken"), "").expect("break it");
    let answer = publish_async(&server, "doomed.job", json!({"job": 1})).await;
    let id = answer.body["event_id"].as_str().expect("id").to_owned();
    let letters = || async {
        server.get("/events/dead-letters?function=flaky").await.body["dead_letters"].clone()
    };
    assert!(
        poll(|| async { letters().await.as_array().is_some_and(|l| l.len() == 1) }).await,
        "a dead letter; log:\n{}",
        server.logs()
    );
    let letter = letters().await[0].clone();
    assert_eq!(letter["event_id"], id.as_str());
    assert_eq!(letter["event_type"], "doomed.job");
    assert_eq!(letter["event"]["payload"], json!({"job": 1}));
    let attempts = letter["attempts"].as_array().expect("attempts");
    assert_eq!(attempts.len(), 3, "one per attempt: {attempts:?}");
    for (n, a) in attempts.iter().enumerate() {
        assert_eq!(a["attempt"], n + 1);
        assert_eq!(a["status"], 500);
        assert!(
            a["error"].as_str().is_some_and(|e| e.contains("broken")),
            "{a}"
        );
        assert!(a["time"].is_string());
    }
    // Filters.
    assert_eq!(
        server
            .get("/events/dead-letters?type=other.type")
            .await
            .body["dead_letters"],
        json!([])
    );
    assert_eq!(
        server
            .get("/events/dead-letters?type=doomed.job")
            .await
            .body["dead_letters"]
            .as_array()
            .map(Vec::len),
        Some(1)
    );

    // Fixed: retry it from the dead letters.
    std::fs::remove_file(server.functions_dir().join("flaky/broken")).expect("fix it");
    let dead_id = letter["id"].as_str().expect("dead letter id").to_owned();
    let retried = server
        .post(&format!("/events/dead-letters/{dead_id}/retry"), "")
        .await;
    assert_eq!(retried.status, 200, "{retried:?}");
    assert!(
        poll(|| async {
            server.get(&format!("/events/{id}")).await.body["deliveries"][0]["state"] == "delivered"
        })
        .await,
        "delivered once fixed; log:\n{}",
        server.logs()
    );
    assert_eq!(letters().await, json!([]));
    let again = server
        .post(&format!("/events/dead-letters/{dead_id}/retry"), "")
        .await;
    assert_eq!(again.status, 404, "no longer a dead letter");
    server.stop_and_check();
}

#[tokio::test]
async fn a_failure_marked_not_retryable_is_a_dead_letter_at_once_and_can_be_deleted() {
    let mut server = ServerBuilder::new()
        .fixture("flaky")
        .toml(
            "flaky",
            "env = { ON = \"fatal.job\" }\nretry_backoff = 0.05\nmax_attempts = 5\n",
        )
        .start()
        .await;
    server.wait_ready().await;
    publish_async(&server, "fatal.job", json!({"fatal": true})).await;
    let letters =
        || async { server.get("/events/dead-letters").await.body["dead_letters"].clone() };
    assert!(poll(|| async { letters().await.as_array().is_some_and(|l| l.len() == 1) }).await);
    let letter = letters().await[0].clone();
    assert_eq!(
        letter["attempts"].as_array().map(Vec::len),
        Some(1),
        "not retried: {letter}"
    );
    let id = letter["id"].as_str().expect("id").to_owned();
    let deleted = server
        .request(
            reqwest::Method::DELETE,
            &format!("/events/dead-letters/{id}"),
            None,
            &[],
        )
        .await;
    assert_eq!(deleted.status, 200, "{deleted:?}");
    assert_eq!(letters().await, json!([]));
    let again = server
        .request(
            reqwest::Method::DELETE,
            &format!("/events/dead-letters/{id}"),
            None,
            &[],
        )
        .await;
    assert_eq!(again.status, 404);
    assert_eq!(
        server
            .post("/events/dead-letters/nonsense/retry", "")
            .await
            .status,
        404
    );
    assert_eq!(server.get("/events/no-such-event").await.status, 404);
    server.stop_and_check();
}

#[tokio::test]
async fn dynamic_subscriptions_and_pending_deliveries_survive_a_restart() {
    let mut server = ServerBuilder::new()
        .fixture_as("subscriber", "sub")
        .start()
        .await;
    server.wait_ready().await;
    let answer = server
        .run("sub", json!({"action": "subscribe", "type": "late.type"}))
        .await;
    assert_eq!(answer.body["subscribed"], true);
    server.stop_and_check();
    server.restart();
    server.wait_ready().await;
    assert!(
        server
            .subscriptions()
            .await
            .contains(&("late.type".into(), "sub".into()))
    );
    assert_eq!(
        server.publish("late.type", json!(1)).await.body["delivered"],
        1
    );
    server.stop_and_check();
}

#[tokio::test]
async fn lineage_shows_what_published_an_event_and_what_it_caused() {
    let mut server = ServerBuilder::new()
        .fixture("publisher")
        .fixture_as("relay", "relay")
        .toml(
            "relay",
            "env = { ON = \"first.step\", NEXT = \"second.step\" }\n",
        )
        .start()
        .await;
    server.wait_ready().await;
    let answer = server
        .request(
            reqwest::Method::POST,
            "/run/publisher",
            Some(json!({"type": "first.step", "payload": {"n": 1}}).to_string()),
            &[("x-request-id", "lineage-req")],
        )
        .await;
    assert_eq!(answer.status, 200, "{answer:?}");
    let first = answer.body["event_id"].as_str().expect("id").to_owned();
    let info = || async { server.get(&format!("/events/{first}")).await };
    assert!(
        poll(|| async {
            info().await.body["caused"]
                .as_array()
                .is_some_and(|c| c.len() == 1)
        })
        .await
    );
    let first_info = info().await.body;
    assert_eq!(first_info["mode"], "sync");
    assert_eq!(
        first_info["published_by"],
        json!({"kind": "function", "function": "publisher", "request_id": "lineage-req"})
    );
    assert_eq!(first_info["deliveries"][0]["function"], "relay");
    assert_eq!(first_info["deliveries"][0]["state"], "delivered");
    let second = first_info["caused"][0].as_str().expect("caused").to_owned();
    let second_info = server.get(&format!("/events/{second}")).await.body;
    assert_eq!(second_info["caused_by"], first.as_str());
    assert_eq!(second_info["event"]["shscause"], first.as_str());
    assert_eq!(second_info["event"]["shshops"], 1);
    assert_eq!(second_info["event"]["type"], "second.step");
    server.stop_and_check();
}

#[tokio::test]
async fn cloudevents_round_trip_in_binary_and_structured_mode() {
    let mut server = ServerBuilder::new()
        .fixture_as("subscriber", "sub")
        .toml("sub", "env = { SUBSCRIBE = \"com.example.ce\" }\n")
        .start()
        .await;
    server.wait_ready().await;
    let binary = server
        .request(
            reqwest::Method::POST,
            "/events",
            Some(json!({"temperature": 21.5}).to_string()),
            &[
                ("ce-specversion", "1.0"),
                ("ce-id", "bin-1"),
                ("ce-source", "/sensors/kitchen"),
                ("ce-type", "com.example.ce"),
                ("ce-time", "2026-03-04T05:06:07Z"),
                ("ce-subject", "kitchen"),
                ("ce-tenant", "acme"),
                (
                    "ce-dataschema",
                    "https://example.com/schemas/temperature.json",
                ),
                ("content-type", "application/json"),
            ],
        )
        .await;
    assert_eq!(binary.status, 200, "{binary:?}");
    assert_eq!(binary.body["event_id"], "bin-1");
    let structured = json!({
        "specversion": "1.0", "id": "str-1", "source": "/sensors/hall", "type": "com.example.ce",
        "time": "2026-03-04T05:06:08Z", "datacontenttype": "application/json",
        "data": {"temperature": 19}, "tenant": "acme",
        "dataschema": "https://example.com/schemas/hall.json"
    });
    let answer = server
        .request(
            reqwest::Method::POST,
            "/events",
            Some(structured.to_string()),
            &[("content-type", "application/cloudevents+json")],
        )
        .await;
    assert_eq!(answer.status, 200, "{answer:?}");
    let text = server
        .request(
            reqwest::Method::POST,
            "/events",
            Some("plain words".to_owned()),
            &[
                ("ce-specversion", "1.0"),
                ("ce-type", "com.example.ce"),
                ("content-type", "text/plain"),
            ],
        )
        .await;
    assert_eq!(text.status, 200, "{text:?}");

    let events = server.run("sub", json!({"action": "events"})).await.body["events"].clone();
    let expect = |id: &str, source: &str, time: &str, payload: Value| {
        json!({
            "id": id, "type": "com.example.ce", "source": source, "time": time, "payload": payload,
            "specversion": "1.0", "datacontenttype": "application/json",
        })
    };
    let mut first = events[0].clone();
    assert_eq!(first["subject"], "kitchen");
    assert_eq!(first["tenant"], "acme");
    assert_eq!(first["shshops"], 0);
    assert_eq!(
        first["dataschema"],
        "https://example.com/schemas/temperature.json"
    );
    for key in ["subject", "tenant", "shshops", "dataschema"] {
        first.as_object_mut().map(|o| o.remove(key));
    }
    assert_eq!(
        first,
        expect(
            "bin-1",
            "/sensors/kitchen",
            "2026-03-04T05:06:07Z",
            json!({"temperature": 21.5})
        )
    );
    let mut second = events[1].clone();
    assert_eq!(second["tenant"], "acme");
    assert_eq!(
        second["dataschema"],
        "https://example.com/schemas/hall.json"
    );
    for key in ["tenant", "shshops", "dataschema"] {
        second.as_object_mut().map(|o| o.remove(key));
    }
    assert_eq!(
        second,
        expect(
            "str-1",
            "/sensors/hall",
            "2026-03-04T05:06:08Z",
            json!({"temperature": 19})
        )
    );
    assert_eq!(events[2]["payload"], "plain words");
    assert_eq!(events[2]["datacontenttype"], "text/plain");
    // The stored event is the same object (the history of synchronous events is written
    // behind the publish, so it may take a moment).
    assert!(poll(|| async { server.get("/events/bin-1").await.body["event"] == events[0] }).await);

    for (headers, needle) in [
        (
            vec![("ce-specversion", "0.3"), ("ce-type", "a")],
            "not supported",
        ),
        (vec![("ce-specversion", "1.0")], "no `type`"),
        (
            vec![
                ("ce-specversion", "1.0"),
                ("ce-type", "a"),
                ("ce-time", "yesterday"),
            ],
            "RFC 3339",
        ),
        (
            vec![
                ("ce-specversion", "1.0"),
                ("ce-type", "a"),
                ("ce-Bad_Name", "x"),
            ],
            "extension",
        ),
    ] {
        let answer = server
            .request(
                reqwest::Method::POST,
                "/events",
                Some("{}".into()),
                &headers,
            )
            .await;
        assert_eq!(answer.status, 400, "{headers:?}: {answer:?}");
        assert!(
            answer.message().contains(needle),
            "{headers:?}: {}",
            answer.message()
        );
    }
    server.stop_and_check();
}

#[tokio::test]
async fn an_event_is_unique_by_id_and_source() {
    let mut server = recorder(ServerBuilder::new(), "rec", "sensor.read", "")
        .start()
        .await;
    server.wait_ready().await;
    let send = |id: &'static str, source: &'static str, n: u32| {
        let server = &server;
        async move {
            let answer = server
                .request(
                    reqwest::Method::POST,
                    "/events",
                    Some(json!({"n": n}).to_string()),
                    &[
                        ("ce-specversion", "1.0"),
                        ("ce-type", "sensor.read"),
                        ("ce-id", id),
                        ("ce-source", source),
                        ("content-type", "application/json"),
                        ("prefer", "respond-async"),
                    ],
                )
                .await;
            assert_eq!(answer.status, 202, "{answer:?}");
            assert_eq!(answer.body["event_id"], id);
        }
    };
    send("r-1", "/sensors/a", 1).await;
    // A publisher retrying the same event: accepted again, delivered once.
    send("r-1", "/sensors/a", 2).await;
    // The same id from another source is another event.
    send("r-1", "/sensors/b", 3).await;
    send("r-2", "/sensors/a", 4).await;
    assert!(
        poll(|| async { recorded(&server, "rec").len() >= 3 }).await,
        "delivered: {:?}",
        recorded(&server, "rec")
    );
    // Whatever was still in flight has had its chance once `r-2` (published last) arrived.
    assert!(poll(|| async { recorded(&server, "rec").iter().any(|e| e["id"] == "r-2") }).await);
    let got: Vec<Value> = recorded(&server, "rec")
        .into_iter()
        .map(|e| e["payload"]["n"].clone())
        .collect();
    assert_eq!(got, vec![json!(1), json!(3), json!(4)]);
    // The history by id shows the latest of the two.
    let info = server.get("/events/r-1").await;
    assert_eq!(info.status, 200, "{info:?}");
    assert_eq!(info.body["event"]["source"], "/sensors/b");
    server.stop_and_check();
}

/// With `flaky` deployed as `fl` (one process, one attempt per event), keeps its process busy
/// with an invoke for `busy_for` seconds, publishes `last.try` asynchronously, and waits until that delivery is queued
/// for the busy process: on its first and last attempt, and not yet sent. Returns its id.
async fn a_delivery_waiting_on_its_last_attempt(server: &Server, busy_for: u32) -> String {
    let (client, url) = (server.client.clone(), server.url.clone());
    tokio::spawn(async move {
        let _ = client
            .post(format!("{url}/run/fl"))
            .json(&json!({"sleep": busy_for}))
            .send()
            .await;
    });
    server.wait_for_log("sleeping").await;
    let answer = publish_async(server, "last.try", json!({"n": 1})).await;
    assert_eq!(answer.status, 202, "{answer:?}");
    assert!(
        poll(|| async {
            server
                .function_info("fl")
                .await
                .is_some_and(|f| f["queued"] == 1)
        })
        .await,
        "the delivery waits for the busy process; log:\n{}",
        server.logs()
    );
    answer.body["event_id"]
        .as_str()
        .expect("event id")
        .to_owned()
}

/// Waits until event `id` was delivered to `fl`, and checks it made no dead letter.
async fn delivered_not_buried(server: &Server, id: &str) {
    assert!(
        poll(|| async {
            server.get(&format!("/events/{id}")).await.body["deliveries"][0]["state"] == "delivered"
        })
        .await,
        "delivered: {:?}; log:\n{}",
        server.get(&format!("/events/{id}")).await,
        server.logs()
    );
    let attempts = std::fs::read_to_string(server.functions_dir().join("fl/attempts").join(id));
    assert_eq!(attempts.ok().as_deref(), Some("1"), "sent once");
    let dead = server.get("/events/dead-letters").await;
    assert_eq!(dead.body["dead_letters"], json!([]), "{dead:?}");
}

fn one_attempt_flaky() -> ServerBuilder {
    ServerBuilder::new()
        .fixture_as("flaky", "fl")
        .toml(
            "fl",
            "env = { ON = \"last.try\", FAILS = \"0\" }\nmax_attempts = 1\ninstances = 1\nretry_backoff = 0.2\ntimeout = 120\n",
        )
        .args(&["--shutdown-grace", "2"])
}

#[tokio::test]
async fn a_delivery_not_sent_at_shutdown_on_its_last_attempt_is_delivered_after_the_restart() {
    let mut server = one_attempt_flaky().start().await;
    server.wait_ready().await;
    let id = a_delivery_waiting_on_its_last_attempt(&server, 60).await;
    server.restart();
    server.wait_ready().await;
    delivered_not_buried(&server, &id).await;
    server.stop_and_check();
}

#[tokio::test]
async fn a_delivery_not_sent_at_a_redeploy_on_its_last_attempt_is_delivered_by_the_new_one() {
    let mut server = one_attempt_flaky().start().await;
    server.wait_ready().await;
    // The old deployment drains its invoke (5 s) in the background.
    let id = a_delivery_waiting_on_its_last_attempt(&server, 5).await;
    crate::harness::write_file(
        &server.functions_dir().join("fl"),
        "function.toml",
        "env = { ON = \"last.try\", FAILS = \"0\", VERSION = \"2\" }\nmax_attempts = 1\ninstances = 1\nretry_backoff = 0.2\ntimeout = 120\n",
    );
    server.wait_for_log("function redeployed").await;
    delivered_not_buried(&server, &id).await;
    assert!(
        poll(|| async { server.pids_of("fl").len() == 1 }).await,
        "the old process stopped after its invoke"
    );
    server.stop_and_check();
}

/// A `function.toml` broken and fixed again, on the embedded store or (with `ns`) on NATS: its
/// last valid subscriptions stay meanwhile, and an event accepted meanwhile is delivered once
/// the file is fixed.
async fn an_event_accepted_while_function_toml_is_broken(ns: Option<&crate::nats::Namespace>) {
    let valid = "subscribe = [\"fix.me\"]\nmax_attempts = 30\nretry_backoff = 0.2\n";
    let builder = recorder(ServerBuilder::new(), "rec", "", valid);
    let mut server = match ns {
        Some(ns) => crate::nats::node(builder, ns).await,
        None => builder.start().await,
    };
    server.wait_ready().await;
    let wanted = ("fix.me".to_owned(), "rec".to_owned());
    assert!(server.subscriptions().await.contains(&wanted));
    let dir = server.functions_dir().join("rec");
    crate::harness::write_file(
        &dir,
        "function.toml",
        &format!("{valid}timeout = \"soon\"\n"),
    );
    assert!(
        poll(|| async {
            server
                .function_info("rec")
                .await
                .is_some_and(|f| f["state"] == "failed")
        })
        .await,
        "broken; log:\n{}",
        server.logs()
    );
    assert!(
        server.subscriptions().await.contains(&wanted),
        "the last valid subscriptions stay: {:?}",
        server.subscriptions().await
    );
    let answer = publish_async(&server, "fix.me", json!({"while": "broken"})).await;
    assert_eq!(answer.status, 202, "{answer:?}");
    let id = answer.body["event_id"]
        .as_str()
        .expect("event id")
        .to_owned();
    server.wait_for_log("delivery failed; retrying").await;
    crate::harness::write_file(&dir, "function.toml", &format!("{valid}timeout = 5\n"));
    assert!(
        poll(|| async {
            recorded(&server, "rec")
                .iter()
                .any(|e| e["id"] == id.as_str())
        })
        .await,
        "delivered once fixed; log:\n{}",
        server.logs()
    );
    let dead = server.get("/events/dead-letters").await;
    assert_eq!(dead.body["dead_letters"], json!([]), "{dead:?}");
    server.stop_and_check();
}

#[tokio::test]
async fn an_event_accepted_while_function_toml_is_broken_is_delivered_once_fixed() {
    an_event_accepted_while_function_toml_is_broken(None).await;
}

#[tokio::test]
async fn an_event_accepted_while_function_toml_is_broken_is_delivered_once_fixed_on_nats() {
    if !crate::nats::nats_available() {
        return;
    }
    let ns = crate::nats::Namespace::new();
    an_event_accepted_while_function_toml_is_broken(Some(&ns)).await;
}

/// The bytes of the event store (database and write-ahead log).
fn store_bytes(server: &Server) -> u64 {
    let data = server.functions_dir().with_file_name("data");
    ["shs.db", "shs.db-wal"]
        .iter()
        .filter_map(|f| std::fs::metadata(data.join(f)).ok())
        .map(|m| m.len())
        .sum()
}

#[tokio::test]
async fn big_events_nobody_takes_do_not_grow_the_store_and_still_answer() {
    let mut server = ServerBuilder::new()
        .fixture_as("flaky", "fl")
        .toml("fl", "env = { ON = \"big.taken\", FAILS = \"0\" }\n")
        .start()
        .await;
    server.wait_ready().await;
    let big = json!({"blob": "x".repeat(900 * 1024)});
    // Settle the store's first writes.
    let first = server.publish("warm.up", json!({})).await;
    assert_eq!(first.status, 200);
    let before = store_bytes(&server);
    let mut ids = Vec::new();
    for _ in 0..5 {
        let answer = server.publish("big.nobody", big.clone()).await;
        assert_eq!(answer.status, 200, "{answer:?}");
        ids.push(answer.body["event_id"].as_str().expect("id").to_owned());
    }
    let lonely = publish_async(&server, "big.nobody", big.clone()).await;
    assert_eq!(lonely.status, 202, "{lonely:?}");
    let taken = server.publish("big.taken", big.clone()).await;
    assert_eq!(taken.body["delivered"], 1, "{taken:?}");
    let small = server.publish("big.taken", json!({"small": true})).await;
    assert_eq!(small.body["delivered"], 1, "{small:?}");

    // What GET /events/{id} answers of each.
    let info = server.get(&format!("/events/{}", ids[0])).await;
    assert_eq!(info.status, 200, "{info:?}");
    assert_eq!(info.body["payload_omitted"], "no subscriber");
    assert_eq!(info.body["event"]["payload"], Value::Null);
    assert_eq!(info.body["event"]["type"], "big.nobody");
    let id = lonely.body["event_id"].as_str().expect("id");
    let info = server.get(&format!("/events/{id}")).await;
    assert_eq!(info.body["payload_omitted"], "no subscriber", "{info:?}");
    let id = taken.body["event_id"].as_str().expect("id");
    let info = server.get(&format!("/events/{id}")).await;
    assert_eq!(
        info.body["payload_omitted"], "larger than 64 KiB",
        "{info:?}"
    );
    assert_eq!(info.body["deliveries"][0]["state"], "delivered");
    let id = small.body["event_id"].as_str().expect("id");
    let info = server.get(&format!("/events/{id}")).await;
    assert!(info.body.get("payload_omitted").is_none(), "{info:?}");
    assert_eq!(info.body["event"]["payload"], json!({"small": true}));

    let grown = store_bytes(&server).saturating_sub(before);
    assert!(
        grown < 1024 * 1024,
        "seven 900 KiB events grew the store by {grown} bytes"
    );
    server.stop_and_check();
}
