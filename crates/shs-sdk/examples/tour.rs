//! tour: a function that uses every part of the SDK. The end-to-end tests deploy it (as
//! several functions, told apart by their environment) and drive it through `POST /run`.
//!
//! Invoke it with `{"action": ...}`:
//!
//! - `echo` (the default): `{"input", "request_id", "function"}`;
//! - `publish` / `publish_nowait`: publishes `{"type", "payload"}` from the input, waiting
//!   for the subscribers or not; `subscribe` / `unsubscribe`: `{"type"}`;
//! - `fail`: a structured error (code 4242, data `{"why": "because"}`); `crash`: an
//!   unexpected error; `panic`: a panic;
//! - `events`: the events this process has received;
//! - `barrier`: waits until 4 `barrier` invokes are in flight at once, then publishes
//!   `tour.ping` with `{"n": n}` and answers `{"n", "publish"}`;
//! - `log`: writes `input.text` to the log.
//!
//! Environment: `CONCURRENCY=N` handles requests on N threads (match `concurrency` in
//! `function.toml`); `SUBSCRIBE=PATTERN` subscribes to it at start-up (an invalid one makes
//! the start fail); `EVENTS` (set to anything) adds the event handlers: `user.created` and
//! `tour.ping` (both subscribed at start-up because they have handlers; a `tour.ping` with
//! payload `n` is answered after `(3 - n) * 100` ms, so that answers come back out of order),
//! a catch-all handler, and a start-up subscription to `audit.>`.

use std::sync::{Condvar, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use shs_sdk::{Context, Error, Event, Function};

/// The events this process has received.
static RECEIVED: Mutex<Vec<Value>> = Mutex::new(Vec::new());
/// How many `barrier` invokes have arrived.
static ARRIVED: Mutex<usize> = Mutex::new(0);
static ALL_ARRIVED: Condvar = Condvar::new();

fn main() -> std::io::Result<()> {
    let threads = std::env::var("CONCURRENCY")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(1);
    let mut function = Function::new().on_invoke(invoke).threads(threads);
    if let Ok(pattern) = std::env::var("SUBSCRIBE") {
        function = function.subscribe(pattern);
    }
    if std::env::var_os("EVENTS").is_some() {
        function = function
            .on_event("user.created", |event: Event, ctx: &Context| {
                record("user.created", event, ctx)
            })
            .on_event("tour.ping", |event: Event, ctx: &Context| {
                let n = event.payload["n"].as_u64().unwrap_or(0);
                std::thread::sleep(Duration::from_millis(100 * 3u64.saturating_sub(n)));
                record("tour.ping", event, ctx)
            })
            .subscribe("audit.>")
            .on_any_event(|event: Event, ctx: &Context| record("any", event, ctx));
    }
    function.run()?;
    shs_sdk::log("tour: stdin closed, exiting");
    Ok(())
}

fn record(handler: &str, event: Event, ctx: &Context) -> Result<Value, Error> {
    let entry = json!({
        "handler": handler,
        "id": event.id,
        "type": event.event_type,
        "source": event.source,
        "payload": event.payload,
        "request_id": ctx.request_id(),
    });
    lock(&RECEIVED).push(entry);
    Ok(json!({"received": true}))
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn invoke(input: Value, ctx: &Context) -> Result<Value, Error> {
    let text = |key: &str| input[key].as_str().unwrap_or_default().to_owned();
    match input["action"].as_str().unwrap_or("echo") {
        "echo" => Ok(json!({
            "input": input,
            "request_id": ctx.request_id(),
            "function": ctx.function(),
        })),
        "publish" => Ok(json!({"publish": ctx.publish(&text("type"), &input["payload"])?})),
        "publish_nowait" => {
            ctx.publish_nowait(&text("type"), &input["payload"])?;
            Ok(json!({"ok": true}))
        }
        "subscribe" => Ok(json!({"result": ctx.subscribe(&text("type"))?})),
        "unsubscribe" => Ok(json!({"result": ctx.unsubscribe(&text("type"))?})),
        "fail" => Err(Error::new("nope")
            .with_code(4242)
            .with_data(json!({"why": "because"}))),
        "crash" => Err(std::io::Error::other("boom"))?,
        "panic" => panic!("boom"),
        "events" => Ok(json!({"events": *lock(&RECEIVED)})),
        "barrier" => {
            let n = input["n"].as_u64().unwrap_or(0);
            let mut arrived = lock(&ARRIVED);
            *arrived += 1;
            let (arrived, timeout) = ALL_ARRIVED
                .wait_timeout_while(arrived, Duration::from_secs(10), |a| *a < 4)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            ALL_ARRIVED.notify_all();
            drop(arrived);
            if timeout.timed_out() {
                return Err(Error::new(
                    "the 4 barrier invokes were not in flight at once",
                ));
            }
            let publish = ctx.publish("tour.ping", &json!({"n": n}))?;
            Ok(json!({"n": n, "publish": publish}))
        }
        "log" => {
            ctx.log(text("text"));
            Ok(json!({"ok": true}))
        }
        other => Err(Error::invalid_params(format!("unknown action {other:?}"))),
    }
}
