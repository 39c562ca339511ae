//! Events: subscriptions, `POST /events`, publishing from functions, fan-out, loops and cycles.

use serde_json::{Value, json};

use crate::harness::{Server, ServerBuilder, poll};

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
async fn post_events_delivers_to_every_subscriber_before_it_answers() {
    let builder = subscriber(ServerBuilder::new(), "sub-a", "user.created");
    let builder = subscriber(builder, "sub-b", "user.created,user.deleted");
    let mut server = subscriber(builder, "sub-c", "other.type").start().await;
    server.wait_ready().await;

    let answer = server.publish("user.created", json!({"name": "Ada"})).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(answer.body["status"], "published");
    assert_eq!(answer.body["delivered"], 2);
    assert_eq!(answer.body["errors"], json!([]));
    let event_id = answer.body["event_id"]
        .as_str()
        .expect("event id")
        .to_owned();

    // Publishing is synchronous: both have the event by the time the answer came back.
    for name in ["sub-a", "sub-b"] {
        let events = received(&server, name).await;
        assert_eq!(events.len(), 1, "{name}: {events:?}");
        let event = &events[0];
        assert_eq!(event["id"], event_id.as_str());
        assert_eq!(event["type"], "user.created");
        assert_eq!(event["source"], "/http");
        assert_eq!(event["payload"], json!({"name": "Ada"}));
        assert!(
            event["time"]
                .as_str()
                .is_some_and(|t| t.ends_with('Z') && t.contains('T')),
            "{event}"
        );
    }
    assert!(received(&server, "sub-c").await.is_empty());
    server.stop_and_check();
}

#[tokio::test]
async fn post_events_accepts_data_and_cloudevents() {
    let mut server = subscriber(ServerBuilder::new(), "sub", "com.example.thing")
        .start()
        .await;
    server.wait_ready().await;
    let answer = server
        .post_json(
            "/events",
            &json!({"type": "com.example.thing", "data": {"v": 1}}),
        )
        .await;
    assert_eq!(answer.body["delivered"], 1, "{answer:?}");
    let cloud_event = json!({
        "specversion": "1.0",
        "id": "ce-123",
        "source": "/sensors/7",
        "type": "com.example.thing",
        "time": "2026-01-02T03:04:05Z",
        "datacontenttype": "application/json",
        "data": {"v": 2}
    });
    let answer = server
        .request(
            reqwest::Method::POST,
            "/events",
            Some(cloud_event.to_string()),
            &[("content-type", "application/cloudevents+json")],
        )
        .await;
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(answer.body["event_id"], "ce-123");
    let events = received(&server, "sub").await;
    assert_eq!(events[0]["payload"], json!({"v": 1}));
    assert_eq!(events[1]["payload"], json!({"v": 2}));
    assert_eq!(events[1]["id"], "ce-123");
    assert_eq!(events[1]["source"], "/sensors/7");
    assert_eq!(events[1]["time"], "2026-01-02T03:04:05Z");
    server.stop_and_check();
}

#[tokio::test]
async fn post_events_refuses_what_is_not_an_event() {
    let mut server = ServerBuilder::new().start().await;
    for (body, needle) in [
        ("", "empty"),
        ("{bad", "not valid JSON"),
        ("[1]", "JSON object"),
        ("\"text\"", "JSON object"),
        ("{\"payload\": 1}", "no `type`"),
        ("{\"type\": 5}", "`type` must be a string"),
        ("{\"type\": null}", "`type` must be a string"),
        ("{\"type\": \"\"}", "empty"),
        ("{\"type\": \"a b\"}", "whitespace"),
        ("{\"type\": \"a.*\"}", "wildcard"),
    ] {
        let answer = server.post("/events", body).await;
        assert_eq!(answer.status, 400, "{body}: {answer:?}");
        assert!(
            answer.message().contains(needle),
            "{body}: {}",
            answer.message()
        );
    }
    server.stop_and_check();
}

#[tokio::test]
async fn a_function_publishes_and_its_subscribers_receive() {
    let builder = ServerBuilder::new().fixture("publisher");
    let mut server = subscriber(builder, "sub", "order.placed").start().await;
    server.wait_ready().await;
    let answer = server
        .run(
            "publisher",
            json!({"type": "order.placed", "payload": {"order": 7}}),
        )
        .await;
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(answer.body["published"], true);
    assert_eq!(answer.body["delivered"], 1);
    assert_eq!(answer.body["errors"], json!([]));
    let events = received(&server, "sub").await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["source"], "/functions/publisher");
    assert_eq!(events[0]["payload"], json!({"order": 7}));
    assert_eq!(events[0]["id"], answer.body["event_id"]);
    server.stop_and_check();
}

#[tokio::test]
async fn a_fire_and_forget_publish_is_delivered_too() {
    let builder = ServerBuilder::new().fixture("publisher");
    let mut server = subscriber(builder, "sub", "note.sent").start().await;
    server.wait_ready().await;
    let answer = server
        .run(
            "publisher",
            json!({"type": "note.sent", "payload": 1, "notify": true}),
        )
        .await;
    assert_eq!(answer.body, json!({"sent": true}), "{answer:?}");
    assert!(
        poll(|| async { received(&server, "sub").await.len() == 1 }).await,
        "the notification's event arrived"
    );
    server.stop_and_check();
}

#[tokio::test]
async fn failures_are_listed_and_the_rest_still_delivered() {
    let builder = subscriber(ServerBuilder::new(), "picky", "job.done");
    let builder = subscriber(builder, "easy", "job.done");
    let mut server = builder
        .fixture_as("crash", "gone")
        .toml("gone", "subscribe = [\"job.done\"]\nmode = \"rpc\"\n")
        .fixture("exit-at-start")
        .toml("exit-at-start", "subscribe = [\"job.done\"]\n")
        .start()
        .await;
    server.wait_ready().await;
    let answer = server
        .publish("job.done", json!({"fail": "not my kind of job"}))
        .await;
    assert_eq!(answer.status, 200, "{answer:?}");
    let errors = answer.body["errors"].as_array().expect("errors").clone();
    let by_function = |name: &str| {
        errors
            .iter()
            .find(|e| e["function"] == name)
            .and_then(|e| e["message"].as_str())
            .unwrap_or_else(|| panic!("no error for {name}: {errors:?}"))
            .to_owned()
    };
    assert!(by_function("picky").contains("not my kind of job"));
    assert!(by_function("easy").contains("not my kind of job"));
    assert!(
        by_function("gone").contains("method not found"),
        "crash has no event handler"
    );
    assert!(by_function("exit-at-start").contains("could not start"));
    assert_eq!(answer.body["delivered"], 0);

    let answer = server.publish("job.done", json!({"fine": true})).await;
    assert_eq!(answer.body["delivered"], 2, "{answer:?}");
    assert_eq!(answer.body["errors"].as_array().map(Vec::len), Some(2));
    server.stop_and_check();
}

#[tokio::test]
async fn a_function_gets_each_event_once_however_often_it_subscribed() {
    let mut server = ServerBuilder::new()
        .fixture_as("subscriber", "sub")
        .toml(
            "sub",
            "subscribe = [\"dup.x\", \"dup.*\"]\nenv = { SUBSCRIBE = \"dup.x,dup.x,dup.>\" }\n",
        )
        .start()
        .await;
    server.wait_ready().await;
    let again = server
        .run("sub", json!({"action": "subscribe", "type": "dup.x"}))
        .await;
    assert_eq!(again.body, json!({"subscribed": true, "type": "dup.x"}));
    let answer = server.publish("dup.x", json!(null)).await;
    assert_eq!(answer.body["delivered"], 1, "{answer:?}");
    assert_eq!(received(&server, "sub").await.len(), 1);
    server.stop_and_check();
}

#[tokio::test]
async fn wildcard_patterns_match_tokens() {
    let mut server = subscriber(ServerBuilder::new(), "sub", "orders.>,user.*")
        .start()
        .await;
    server.wait_ready().await;
    for (event_type, delivered) in [
        ("orders.paid", 1),
        ("orders.eu.paid", 1),
        ("orders", 0),
        ("user.created", 1),
        ("user.a.b", 0),
        ("user", 0),
    ] {
        let answer = server.publish(event_type, json!({})).await;
        assert_eq!(
            answer.body["delivered"], delivered,
            "{event_type}: {answer:?}"
        );
    }
    server.stop_and_check();
}

#[tokio::test]
async fn subscriptions_belong_to_the_function_and_survive_its_restart() {
    let mut server = subscriber(ServerBuilder::new(), "sub", "").start().await;
    server.wait_ready().await;
    let sub = server
        .run("sub", json!({"action": "subscribe", "type": "late.event"}))
        .await;
    assert_eq!(sub.body, json!({"subscribed": true, "type": "late.event"}));
    assert!(
        server
            .subscriptions()
            .await
            .contains(&("late.event".into(), "sub".into()))
    );

    let crashed = server.run("sub", json!({"action": "crash"})).await;
    assert_eq!(crashed.status, 502, "{crashed:?}");
    assert!(
        poll(|| async {
            server
                .function_info("sub")
                .await
                .is_some_and(|f| f["processes"] == 0)
        })
        .await,
        "the crashed process is gone"
    );
    // No process runs; the event starts one to take it.
    let answer = server
        .publish("late.event", json!({"after": "restart"}))
        .await;
    assert_eq!(answer.body["delivered"], 1, "{answer:?}");
    let events = received(&server, "sub").await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["payload"], json!({"after": "restart"}));
    server.stop_and_check();
}

#[tokio::test]
async fn unsubscribe_stops_deliveries() {
    let mut server = subscriber(ServerBuilder::new(), "sub", "news.item")
        .start()
        .await;
    server.wait_ready().await;
    assert_eq!(
        server.publish("news.item", json!(1)).await.body["delivered"],
        1
    );
    let answer = server
        .run("sub", json!({"action": "unsubscribe", "type": "news.item"}))
        .await;
    assert_eq!(
        answer.body,
        json!({"unsubscribed": true, "type": "news.item"})
    );
    assert!(server.subscriptions().await.is_empty());
    assert_eq!(
        server.publish("news.item", json!(2)).await.body["delivered"],
        0
    );
    server.stop_and_check();
}

#[tokio::test]
async fn functions_and_subscriptions_are_listed() {
    let mut server = subscriber(ServerBuilder::new(), "sub", "b.type,a.type")
        .fixture("exec-cat")
        .fixture("echo")
        .start()
        .await;
    server.wait_ready().await;
    let functions = server.get("/functions").await;
    assert_eq!(functions.status, 200);
    let list = functions.body["functions"].as_array().expect("functions");
    let names: Vec<&str> = list.iter().filter_map(|f| f["name"].as_str()).collect();
    assert_eq!(names, ["echo", "exec-cat", "sub"]);
    assert_eq!(list[0]["mode"], "rpc");
    assert_eq!(list[0]["subscriptions"], json!([]));
    assert_eq!(list[1]["mode"], "exec");
    assert_eq!(list[2]["subscriptions"], json!(["a.type", "b.type"]));
    assert_eq!(list[2]["state"], "ready");
    assert_eq!(list[2]["processes"], 1);
    let subscriptions = server.get("/subscriptions").await;
    assert_eq!(
        subscriptions.body,
        json!({"subscriptions": [
            {"type": "a.type", "function": "sub"},
            {"type": "b.type", "function": "sub"},
        ]})
    );
    server.stop_and_check();
}

#[tokio::test]
async fn publishing_to_itself_starts_another_process_instead_of_deadlocking() {
    let mut server = ServerBuilder::new()
        .fixture("self-publish")
        .toml(
            "self-publish",
            "subscribe = [\"self.ping\"]\ninstances = 2\ntimeout = 60\n",
        )
        .start()
        .await;
    let answer = server.run("self-publish", json!({})).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(answer.body["delivered"], 1, "{answer:?}");
    assert_eq!(
        server.function_info("self-publish").await.expect("listed")["processes"],
        2
    );
    server.stop_and_check();
}

#[tokio::test]
async fn publishing_to_itself_with_no_room_reports_the_cycle_at_once() {
    // With one process, the event could only go to the process that is waiting for it. The
    // timeout is a minute: the answer names the cycle instead of waiting for it.
    let mut server = ServerBuilder::new()
        .fixture("self-publish")
        .toml(
            "self-publish",
            "subscribe = [\"self.ping\"]\ninstances = 1\ntimeout = 60\n",
        )
        .start()
        .await;
    let answer = server.run("self-publish", json!({})).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(answer.body["delivered"], 0);
    let message = answer.body["errors"][0]["message"]
        .as_str()
        .expect("an error");
    assert_eq!(answer.body["errors"][0]["function"], "self-publish");
    assert!(message.contains("waits for this event"), "{message}");
    server.stop_and_check();
}

#[tokio::test]
async fn a_cycle_across_functions_is_reported_not_waited_out() {
    // ping (1 process) -> pong -> ping: the second delivery to ping would wait for ping itself.
    let mut server = ServerBuilder::new()
        .fixture_as("relay", "ping")
        .toml(
            "ping",
            "instances = 1\ntimeout = 60\nenv = { ON = \"cycle.pong\", NEXT = \"cycle.ping\" }\n",
        )
        .fixture_as("relay", "pong")
        .toml(
            "pong",
            "timeout = 60\nenv = { ON = \"cycle.ping\", NEXT = \"cycle.pong\" }\n",
        )
        .start()
        .await;
    server.wait_ready().await;
    let answer = server.run("ping", json!({"n": 1})).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(answer.body["delivered"], 1, "pong took it: {answer:?}");
    let errors = answer.body["errors"].as_array().expect("errors");
    assert!(
        errors.iter().any(|e| e["function"] == "ping"
            && e["message"]
                .as_str()
                .is_some_and(|m| m.contains("waits for this event"))),
        "the wait of ping on itself is reported to the first publisher: {errors:?}"
    );
    server.stop_and_check();
}

#[tokio::test]
async fn a_loop_of_events_is_cut_at_the_hop_limit() {
    let mut server = ServerBuilder::new()
        .fixture("loop")
        .toml("loop", "instances = 8\n")
        .args(&["--max-hops", "5"])
        .start()
        .await;
    server.wait_ready().await;
    let answer = server.publish("loop.ping", json!({})).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(answer.body["delivered"], 1);
    let errors = answer.body["errors"].as_array().expect("errors");
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0]["function"], "loop");
    assert!(
        errors[0]["message"]
            .as_str()
            .is_some_and(|m| m.contains("hop limit of 5")),
        "{errors:?}"
    );
    server.stop_and_check();
}

#[tokio::test]
async fn a_chain_of_three_functions_runs_in_order() {
    let mut server = ServerBuilder::new()
        .fixture_as("relay", "step1")
        .toml("step1", "env = { NEXT = \"chain.one\" }\n")
        .fixture_as("relay", "step2")
        .toml(
            "step2",
            "env = { ON = \"chain.one\", NEXT = \"chain.two\" }\n",
        )
        .fixture_as("relay", "step3")
        .toml(
            "step3",
            "env = { ON = \"chain.two\", NEXT = \"chain.done\" }\n",
        )
        .fixture_as("subscriber", "end")
        .toml("end", "env = { SUBSCRIBE = \"chain.done\" }\n")
        .start()
        .await;
    server.wait_ready().await;
    let answer = server.run("step1", json!({"order": 42})).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(answer.body["delivered"], 1);
    assert_eq!(answer.body["errors"], json!([]));
    let events = received(&server, "end").await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["payload"], json!({"order": 42}));
    assert_eq!(events[0]["source"], "/functions/step3");
    server.stop_and_check();
}

#[tokio::test]
async fn an_exec_function_takes_events_on_stdin() {
    let mut server = ServerBuilder::new().fixture("exec-record").start().await;
    server.wait_ready().await;
    let answer = server.publish("exec.test", json!({"n": 1})).await;
    assert_eq!(answer.body["delivered"], 1, "{answer:?}");
    let log = std::fs::read_to_string(server.functions_dir().join("exec-record/received.log"))
        .expect("log written");
    let event: Value = serde_json::from_str(log.trim()).expect("one event object");
    assert_eq!(event["type"], "exec.test");
    assert_eq!(event["payload"], json!({"n": 1}));
    assert_eq!(event["id"], answer.body["event_id"]);
    server.stop_and_check();
}

/// Subscribes to boot.ping and publishes it during its own start-up, before answering
/// initialize; invoke answers with what that publish got.
const BOOT_PUBLISHER: &str = r#"
import json, sys

def send(m):
    sys.stdout.write(json.dumps(m) + "\n"); sys.stdout.flush()

def call(i, method, params):
    send({"jsonrpc": "2.0", "id": i, "method": method, "params": params})
    return json.loads(sys.stdin.readline())

boot = None
for line in sys.stdin:
    m = json.loads(line)
    if m.get("method") == "initialize":
        call("s", "subscribe", {"type": "boot.ping"})
        boot = call("p", "publish", {"type": "boot.ping", "payload": {}})["result"]
        send({"jsonrpc": "2.0", "id": m["id"], "result": {}})
    elif m.get("method") == "invoke":
        send({"jsonrpc": "2.0", "id": m["id"], "result": boot})
    elif m.get("method") == "event":
        send({"jsonrpc": "2.0", "id": m["id"], "result": {"ok": True}})
"#;

#[tokio::test]
async fn publishing_to_itself_during_start_up_is_reported_not_waited_out() {
    for instances in [1, 2] {
        let mut server = ServerBuilder::new()
            .file("boot", "main.py", BOOT_PUBLISHER)
            .toml("boot", &format!("instances = {instances}\ntimeout = 60\n"))
            .start()
            .await;
        server.wait_ready().await;
        let answer = server.run("boot", json!({})).await;
        assert_eq!(answer.status, 200, "{answer:?}");
        let errors = answer.body["errors"].as_array().expect("errors");
        assert!(
            errors.iter().any(|e| e["message"]
                .as_str()
                .is_some_and(|m| m.contains("waits for this event"))),
            "instances = {instances}: {answer:?}"
        );
        server.stop_and_check();
    }
}

#[tokio::test]
async fn the_listing_filters_pages_and_refuses_bad_queries() {
    let builder = subscriber(ServerBuilder::new(), "sub-a", "list.a");
    let mut server = subscriber(builder, "sub-b", "list.b").start().await;
    server.wait_ready().await;
    for n in 0..5 {
        let event_type = if n % 2 == 0 { "list.a" } else { "list.b" };
        let answer = server.publish(event_type, json!({"n": n})).await;
        assert_eq!(answer.status, 200, "{answer:?}");
    }
    let all = server.get("/events?type=list.*").await;
    assert_eq!(all.status, 200, "{all:?}");
    let payloads: Vec<&str> = all.body["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter_map(|e| e["type"].as_str())
        .collect();
    assert_eq!(payloads, ["list.a", "list.b", "list.a", "list.b", "list.a"]);
    assert_eq!(all.body["next"], Value::Null);
    let mine = server.get("/events?function=sub-b").await;
    assert_eq!(mine.body["events"].as_array().map(Vec::len), Some(2));
    assert_eq!(mine.body["events"][0]["deliveries"][0]["function"], "sub-b");

    // Two at a time, following `next`: every event once, newest first.
    let mut seen = Vec::new();
    let mut path = "/events?type=list.>&limit=2".to_owned();
    loop {
        let page = server.get(&path).await;
        assert_eq!(page.status, 200, "{page:?}");
        seen.extend(
            page.body["events"]
                .as_array()
                .expect("events")
                .iter()
                .map(|e| e["id"].clone()),
        );
        match page.body["next"].as_str() {
            Some(next) => path = next.to_owned(),
            None => break,
        }
    }
    let ids: Vec<Value> = all.body["events"].as_array().expect("events").clone();
    let ids: Vec<Value> = ids.iter().map(|e| e["id"].clone()).collect();
    assert_eq!(seen, ids);

    // Bounds: a forged cursor, a limit past the most, a time in the future.
    let forged = server
        .get("/events?before=99999999999999999999999999")
        .await;
    assert_eq!(forged.body["events"].as_array().map(Vec::len), Some(5));
    let most = server.get("/events?limit=1000000").await;
    assert_eq!(most.status, 200, "{most:?}");
    let later = server.get("/events?since=2999-01-01T00:00:00Z").await;
    assert_eq!(later.body["events"], json!([]));

    // Malformed parameters are 400s that say which.
    for (query, says) in [
        ("type=a..b", "type: invalid event type"),
        ("type=%00", "control characters"),
        (&format!("type={}", "a".repeat(300)), "longer than 255"),
        ("type=a.b*", "whole tokens"),
        ("function=%3Cscript%3E", "function: invalid function name"),
        ("since=yesterday", "since=\"yesterday\" is neither"),
        ("since=15", "is neither"),
        ("before=-1", "not a whole number"),
        ("limit=1e3", "not a whole number"),
    ] {
        let answer = server.get(&format!("/events?{query}")).await;
        assert_eq!(answer.status, 400, "{query}: {answer:?}");
        let message = answer.body["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(says), "{query}: {message}");
    }
    server.stop_and_check();
}
