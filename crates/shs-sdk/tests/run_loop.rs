//! The run loop over in-memory streams, with no supervisor: scripted input for the
//! single-threaded loop, and a live conversation over channels where the test has to answer
//! what the function asks (and where several requests are in flight at once).

#![allow(clippy::unwrap_used)] // tests fail loudly

use std::io::{self, Read, Write};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Value, json};
use shs_sdk::{Context, Error, Event, Function, RawOutput};

const INIT: &str =
    r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"function":"f","protocol":1}}"#;

fn invoke(id: u64, input: Value) -> String {
    invoke_as(id, input, &format!("req-{id}"))
}

fn invoke_as(id: u64, input: Value, request_id: &str) -> String {
    json!({"jsonrpc": "2.0", "id": id, "method": "invoke",
           "params": {"input": input, "context": {"request_id": request_id, "function": "f"}}})
    .to_string()
}

fn event(id: u64, event_type: &str, payload: Value) -> String {
    json!({"jsonrpc": "2.0", "id": id, "method": "event",
           "params": {"event": {"id": format!("ev-{id}"), "type": event_type, "source": "/http",
                                "time": "2026-01-01T00:00:00.000Z", "payload": payload},
                      "context": {"request_id": format!("del-{id}"), "function": "f"}}})
    .to_string()
}

fn result(id: u64, result: Value) -> String {
    json!({"jsonrpc": "2.0", "id": id, "result": result}).to_string()
}

fn published(event_id: &str) -> Value {
    json!({"published": true, "event_id": event_id, "delivered": 1, "errors": []})
}

/// A writer that keeps every `write` call apart, to see how output is batched.
#[derive(Clone, Default)]
struct Recorder(Arc<Mutex<Vec<Vec<u8>>>>);

impl Write for Recorder {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap().push(buf.to_vec());
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Recorder {
    fn lines(&self) -> Vec<Value> {
        let all: Vec<u8> = self.0.lock().unwrap().concat();
        String::from_utf8(all)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
            .collect()
    }
    fn writes(&self) -> usize {
        self.0.lock().unwrap().len()
    }
}

/// Runs `function` over the given lines; returns what it wrote and how it ended.
fn script(function: Function, lines: &[String]) -> (Vec<Value>, io::Result<()>) {
    let mut input = lines.join("\n");
    input.push('\n');
    let out = Recorder::default();
    let ended = function.run_with(input.as_bytes(), out.clone());
    (out.lines(), ended)
}

fn lines(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

fn echo_function() -> Function {
    Function::new().on_invoke(|input: Value, ctx: &Context| {
        Ok(json!({"input": input, "request_id": ctx.request_id(), "function": ctx.function()}))
    })
}

#[test]
fn answers_initialize_then_invokes() {
    let (out, ended) = script(
        echo_function(),
        &[
            INIT.into(),
            invoke(2, json!({"a": 1})),
            invoke(7, json!([1, "x"])),
        ],
    );
    ended.unwrap();
    assert_eq!(
        out,
        [
            // One thread: it declares that it handles one request at a time.
            json!({"jsonrpc": "2.0", "id": 1, "result": {"concurrency": 1}}),
            json!({"jsonrpc": "2.0", "id": 2, "result": {"input": {"a": 1}, "request_id": "req-2", "function": "f"}}),
            json!({"jsonrpc": "2.0", "id": 7, "result": {"input": [1, "x"], "request_id": "req-7", "function": "f"}}),
        ]
    );
}

#[test]
fn the_raw_path_passes_the_input_through_and_batches_answers() {
    let function = Function::new().on_invoke_raw(|input, _ctx| Ok(input.into()));
    let mut input = String::from(INIT);
    input.push('\n');
    for id in 2..12 {
        input.push_str(&invoke(id, json!({"n": id, "s": "é\"\\"})));
        input.push('\n');
    }
    let out = Recorder::default();
    function.run_with(input.as_bytes(), out.clone()).unwrap();
    let all = String::from_utf8(out.0.lock().unwrap().concat()).unwrap();
    for id in 2..12 {
        let line = format!(r#"{{"jsonrpc":"2.0","id":{id},"result":{{"n":{id},"s":"é\"\\"}}}}"#);
        assert!(all.contains(&line), "{line} in {all}");
    }
    // initialize is answered at once; the ten invokes, read together, are answered together.
    assert_eq!(out.writes(), 2, "{all}");
}

#[test]
fn raw_output_with_line_breaks_is_made_compact() {
    let function = Function::new().on_invoke_raw(|_input, _ctx| {
        Ok(RawOutput::Owned(
            RawValue::from_string("{\n  \"a\": [1,\n 2],\r\n \"b\": \"x y\"\n}".into()).unwrap(),
        ))
    });
    let mut input = invoke(2, json!({})).into_bytes();
    input.push(b'\n');
    let out = Recorder::default();
    function.run_with(&input[..], out.clone()).unwrap();
    let all = String::from_utf8(out.0.lock().unwrap().concat()).unwrap();
    assert_eq!(
        all,
        "{\"jsonrpc\":\"2.0\",\"id\":2,\"result\":{\"a\":[1,2],\"b\":\"x y\"}}\n"
    );
}

#[test]
fn typed_input_and_invalid_input() {
    #[derive(Deserialize)]
    struct Order {
        id: u32,
    }
    let function = Function::new()
        .on_invoke(|order: Order, _ctx: &Context| Ok(json!({"order": order.id * 2})));
    let (out, _) = script(
        function,
        &[invoke(2, json!({"id": 21})), invoke(3, json!({"id": "x"}))],
    );
    assert_eq!(out[0]["result"], json!({"order": 42}));
    assert_eq!(out[1]["error"]["code"], -32602);
    assert!(
        out[1]["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("invalid input")
    );
}

#[test]
fn errors_are_structured() {
    let function =
        Function::new().on_invoke(|input: Value, _ctx: &Context| -> Result<Value, Error> {
            match input["action"].as_str() {
                Some("fail") => Err(Error::new("nope")
                    .with_code(4242)
                    .with_data(json!({"why": "because"}))),
                Some("question") => Ok(json!("x".parse::<i32>()?)),
                _ => panic!("boom"),
            }
        });
    let (out, ended) = script(
        function,
        &[
            invoke(2, json!({"action": "fail"})),
            invoke(3, json!({"action": "question"})),
            invoke(4, json!({"action": "panic"})),
        ],
    );
    ended.unwrap();
    assert_eq!(
        out[0],
        json!({"jsonrpc": "2.0", "id": 2, "error": {"code": 4242, "message": "nope", "data": {"why": "because"}}})
    );
    assert_eq!(
        out[1]["error"],
        json!({"code": -32000, "message": "invalid digit found in string"})
    );
    assert_eq!(
        out[2]["error"],
        json!({"code": -32000, "message": "panicked: boom"})
    );
}

#[test]
fn unknown_methods_stray_answers_and_bad_lines() {
    let (out, ended) = script(
        echo_function(),
        &lines(&[
            r#"{"jsonrpc":"2.0","id":2,"method":"frobnicate","params":{}}"#,
            r#"{"jsonrpc":"2.0","method":"frobnicate","params":{}}"#,
            r#"{"jsonrpc":"2.0","id":99,"result":{}}"#,
            "not json",
            "",
            "   ",
            "{\"jsonrpc\":\"2.0\",\"id\":3,\"method\":\"invoke\",\"params\":{\"input\":1,\"context\":{\"request_id\":\"r\",\"function\":\"f\"}}}\r",
        ]),
    );
    ended.unwrap();
    assert_eq!(out.len(), 2, "{out:?}");
    assert_eq!(out[0]["id"], 2);
    assert_eq!(out[0]["error"]["code"], -32601);
    assert_eq!(out[1]["id"], 3);
    assert_eq!(out[1]["result"]["input"], 1);
}

#[test]
fn no_invoke_handler_and_no_event_handler_are_method_not_found() {
    let (out, _) = script(
        Function::new(),
        &[invoke(2, json!({})), event(3, "a.b", json!(null))],
    );
    assert_eq!(out[0]["error"]["code"], -32601);
    assert_eq!(out[1]["error"]["code"], -32601);
    assert!(out[1]["error"]["message"].as_str().unwrap().contains("a.b"));
}

fn event_function() -> Function {
    Function::new()
        .on_event("user.created", |event: Event, ctx: &Context| {
            Ok(
                json!({"handler": "user.created", "id": event.id, "payload": event.payload,
                      "request_id": ctx.request_id(), "method": ctx.method()}),
            )
        })
        .on_event("b.typed", |event: Event<u32>, _ctx: &Context| {
            Ok(json!({"handler": "typed", "double": event.payload * 2}))
        })
        .subscribe("audit.>")
        .on_any_event(|event: Event, _ctx: &Context| {
            Ok(json!({"handler": "any", "type": event.event_type}))
        })
}

#[test]
fn events_go_to_the_handler_of_their_type_or_to_the_catch_all() {
    let (out, _) = script(
        event_function().auto_subscribe(false),
        &[
            event(2, "user.created", json!({"name": "Ada"})),
            event(3, "audit.login", json!(1)),
            event(4, "b.typed", json!(21)),
            event(5, "b.typed", json!("x")),
        ],
    );
    assert_eq!(
        out[0]["result"],
        json!({"handler": "user.created", "id": "ev-2", "payload": {"name": "Ada"},
               "request_id": "del-2", "method": "event"})
    );
    assert_eq!(
        out[1]["result"],
        json!({"handler": "any", "type": "audit.login"})
    );
    assert_eq!(out[2]["result"], json!({"handler": "typed", "double": 42}));
    assert_eq!(out[3]["error"]["code"], -32602);
}

#[test]
fn start_up_subscriptions_are_made_before_initialize_is_answered() {
    let setup_saw = Arc::new(Mutex::new(String::new()));
    let saw = setup_saw.clone();
    let function = event_function().setup(move |ctx| {
        *saw.lock().unwrap() =
            format!("{} {} {:?}", ctx.function(), ctx.method(), ctx.request_id());
        ctx.publish_nowait("f.started", &json!({}))?;
        Ok(())
    });
    let (out, ended) = script(
        function,
        &[
            INIT.into(),
            result(1, json!({"subscribed": true, "type": "audit.>"})),
            result(2, json!({"subscribed": true, "type": "b.typed"})),
            result(3, json!({"subscribed": true, "type": "user.created"})),
        ],
    );
    ended.unwrap();
    let sub = |id: u64, t: &str| json!({"jsonrpc": "2.0", "id": id, "method": "subscribe", "params": {"type": t}});
    assert_eq!(
        out,
        [
            sub(1, "audit.>"),
            sub(2, "b.typed"),
            sub(3, "user.created"),
            json!({"jsonrpc": "2.0", "method": "publish", "params": {"type": "f.started", "payload": {}}}),
            json!({"jsonrpc": "2.0", "id": 1, "result": {"concurrency": 1}}),
        ]
    );
    assert_eq!(*setup_saw.lock().unwrap(), "f initialize \"\"");
}

#[test]
fn a_refused_start_up_subscription_stops_the_function() {
    let function = Function::new().subscribe("a b");
    let (out, ended) = script(
        function,
        &[
            INIT.into(),
            json!({"jsonrpc": "2.0", "id": 1, "error": {"code": -32602, "message": "invalid event type \"a b\""}}).to_string(),
            invoke(2, json!({})),
        ],
    );
    let error = ended.expect_err("start-up fails");
    assert!(
        error
            .to_string()
            .contains("start-up failed: subscribe failed: invalid event type"),
        "{error}"
    );
    // No answer to initialize: exiting before it is what makes the start a failed one.
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(out[0]["method"], "subscribe");
}

#[test]
fn a_failing_setup_stops_the_function() {
    let function = Function::new().setup(|_ctx| Err(Error::new("no database")));
    let (out, ended) = script(function, &[INIT.into(), invoke(2, json!({}))]);
    let error = ended.expect_err("start-up fails");
    assert!(
        error.to_string().contains("start-up failed: no database"),
        "{error}"
    );
    assert!(out.is_empty(), "{out:?}");
}

fn calling_function() -> Function {
    Function::new().on_invoke(|input: Value, ctx: &Context| -> Result<Value, Error> {
        let t = input["type"].as_str().unwrap_or("t.x");
        Ok(match input["action"].as_str() {
            Some("publish") => json!({"publish": ctx.publish(t, &input["payload"])?}),
            Some("nowait") => {
                ctx.publish_nowait(t, &input["payload"])?;
                json!("sent")
            }
            Some("subscribe") => json!({"sub": ctx.subscribe(t)?, "unsub": ctx.unsubscribe(t)?}),
            _ => json!({"echo": input}),
        })
    })
}

#[test]
fn publish_waits_for_its_answer_and_names_the_request() {
    let (out, ended) = script(
        calling_function(),
        &[
            invoke(
                5,
                json!({"action": "publish", "type": "order.placed", "payload": {"n": 1}}),
            ),
            result(1, published("e-1")),
        ],
    );
    ended.unwrap();
    assert_eq!(
        out,
        [
            json!({"jsonrpc": "2.0", "id": 1, "method": "publish",
                   "params": {"type": "order.placed", "payload": {"n": 1}, "request_id": "req-5"}}),
            json!({"jsonrpc": "2.0", "id": 5, "result": {"publish": published("e-1")}}),
        ]
    );
}

#[test]
fn a_refused_publish_is_the_handlers_error() {
    let (out, _) = script(
        calling_function(),
        &[
            invoke(5, json!({"action": "publish", "type": "a b"})),
            json!({"jsonrpc": "2.0", "id": 1, "error": {"code": -32602, "message": "invalid event type"}}).to_string(),
        ],
    );
    assert_eq!(
        out[1]["error"],
        json!({"code": -32000, "message": "publish failed: invalid event type",
               "data": {"error": {"code": -32602, "message": "invalid event type"}}})
    );
}

#[test]
fn fire_and_forget_is_a_notification() {
    let (out, _) = script(
        calling_function(),
        &[invoke(
            5,
            json!({"action": "nowait", "type": "a.b", "payload": 1}),
        )],
    );
    assert_eq!(
        out,
        [
            json!({"jsonrpc": "2.0", "method": "publish", "params": {"type": "a.b", "payload": 1, "request_id": "req-5"}}),
            json!({"jsonrpc": "2.0", "id": 5, "result": "sent"}),
        ]
    );
}

#[test]
fn subscribe_and_unsubscribe_from_a_handler() {
    let (out, _) = script(
        calling_function(),
        &[
            invoke(5, json!({"action": "subscribe", "type": "x.*"})),
            result(1, json!({"subscribed": true, "type": "x.*"})),
            result(2, json!({"unsubscribed": true, "type": "x.*"})),
        ],
    );
    assert_eq!(out[0]["method"], "subscribe");
    assert_eq!(out[1]["method"], "unsubscribe");
    assert_eq!(out[1]["id"], 2);
    assert_eq!(
        out[2]["result"],
        json!({"sub": {"subscribed": true, "type": "x.*"}, "unsub": {"unsubscribed": true, "type": "x.*"}})
    );
}

#[test]
fn requests_that_arrive_during_a_call_are_handled_after_it() {
    let (out, ended) = script(
        calling_function(),
        &[
            invoke(5, json!({"action": "publish"})),
            invoke(6, json!({"n": 6})),
            result(77, json!("not ours")),
            result(1, published("e-1")),
        ],
    );
    ended.unwrap();
    let ids: Vec<&Value> = out.iter().map(|m| &m["id"]).collect();
    assert_eq!(ids, [&json!(1), &json!(5), &json!(6)], "{out:?}");
    assert_eq!(out[2]["result"], json!({"echo": {"n": 6}}));
}

#[test]
fn the_end_of_input_fails_a_waiting_call_and_answers_the_request() {
    let (out, ended) = script(
        calling_function(),
        &[invoke(5, json!({"action": "publish"}))],
    );
    ended.unwrap();
    assert_eq!(out.len(), 2);
    assert_eq!(out[1]["id"], 5);
    assert!(
        out[1]["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("publish failed: stdin is closed"),
        "{out:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// A live conversation: the test plays the supervisor over channels.

/// Reads from a channel of byte chunks; the end of input is the sender's drop.
struct ChannelReader {
    rx: Receiver<Vec<u8>>,
    chunk: Vec<u8>,
    at: usize,
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.at == self.chunk.len() {
            match self.rx.recv() {
                Ok(chunk) => {
                    self.chunk = chunk;
                    self.at = 0;
                }
                Err(_) => return Ok(0),
            }
        }
        let n = buf.len().min(self.chunk.len() - self.at);
        buf[..n].copy_from_slice(&self.chunk[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

/// Sends what is written to a channel.
struct ChannelWriter(Sender<Vec<u8>>);

impl Write for ChannelWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0
            .send(buf.to_vec())
            .map_err(|_| io::Error::other("closed"))?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

struct Supervisor {
    to_function: Option<Sender<Vec<u8>>>,
    from_function: Receiver<Vec<u8>>,
    pending: String,
    running: Option<JoinHandle<io::Result<()>>>,
}

impl Supervisor {
    fn start(function: Function) -> Self {
        let (to_function, rx) = mpsc::channel();
        let (tx, from_function) = mpsc::channel();
        let reader = ChannelReader {
            rx,
            chunk: Vec::new(),
            at: 0,
        };
        let running = std::thread::spawn(move || function.run_with(reader, ChannelWriter(tx)));
        Supervisor {
            to_function: Some(to_function),
            from_function,
            pending: String::new(),
            running: Some(running),
        }
    }

    fn send(&self, line: &str) {
        let mut line = line.to_owned();
        line.push('\n');
        self.to_function
            .as_ref()
            .unwrap()
            .send(line.into_bytes())
            .unwrap();
    }

    fn read(&mut self) -> Value {
        loop {
            if let Some(end) = self.pending.find('\n') {
                let line: String = self.pending.drain(..=end).collect();
                return serde_json::from_str(&line).unwrap();
            }
            match self.from_function.recv_timeout(Duration::from_secs(10)) {
                Ok(chunk) => self.pending.push_str(&String::from_utf8(chunk).unwrap()),
                Err(RecvTimeoutError::Timeout) => panic!("the function wrote nothing for 10 s"),
                Err(RecvTimeoutError::Disconnected) => panic!("the function ended"),
            }
        }
    }

    fn close(mut self) -> io::Result<()> {
        self.to_function = None;
        self.running.take().unwrap().join().unwrap()
    }
}

#[test]
fn with_threads_answers_are_matched_by_id_not_by_order() {
    let mut sup = Supervisor::start(calling_function().threads(4));
    sup.send(INIT);
    assert_eq!(
        sup.read(),
        json!({"jsonrpc": "2.0", "id": 1, "result": {"concurrency": 4}})
    );
    // Three invokes in flight, each publishing; each of the three publishes waits.
    for id in [10, 11, 12] {
        sup.send(&invoke(id, json!({"action": "publish", "payload": id})));
    }
    let mut publishes = Vec::new();
    for _ in 0..3 {
        let request = sup.read();
        assert_eq!(request["method"], "publish");
        publishes.push(request);
    }
    // Another request is served while those wait.
    sup.send(&invoke(13, json!({"n": 13})));
    let answer = sup.read();
    assert_eq!(answer["id"], 13);
    // Answer the publishes in reverse order; each invoke gets the answer to its own publish.
    for request in publishes.iter().rev() {
        let event_id = format!("ev-for-{}", request["params"]["payload"]);
        let id = request["id"].as_u64().unwrap();
        sup.send(&result(id, published(&event_id)));
    }
    let mut answers = Vec::new();
    for _ in 0..3 {
        answers.push(sup.read());
    }
    answers.sort_by_key(|a| a["id"].as_u64());
    for (answer, id) in answers.iter().zip([10, 11, 12]) {
        assert_eq!(answer["id"], id);
        assert_eq!(
            answer["result"]["publish"]["event_id"],
            format!("ev-for-{id}"),
            "{answers:?}"
        );
    }
    // Each publish named the request it was made for.
    for request in &publishes {
        assert_eq!(
            request["params"]["request_id"],
            format!("req-{}", request["params"]["payload"])
        );
    }
    sup.close().unwrap();
}

#[test]
fn with_threads_the_end_of_input_fails_waiting_calls_and_finishes_the_rest() {
    let mut sup = Supervisor::start(calling_function().threads(2));
    sup.send(INIT);
    sup.read();
    sup.send(&invoke(10, json!({"action": "publish"})));
    assert_eq!(sup.read()["method"], "publish");
    // Close stdin with the publish unanswered: the invoke still gets its (error) answer.
    let to_function = sup.to_function.take();
    drop(to_function);
    let answer = sup.read();
    assert_eq!(answer["id"], 10);
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .contains("stdin is closed"),
        "{answer}"
    );
    sup.close().unwrap();
}

#[test]
fn with_one_thread_a_live_publish_works_too() {
    let mut sup = Supervisor::start(calling_function());
    sup.send(INIT);
    sup.read();
    sup.send(&invoke_as(10, json!({"action": "publish"}), "my-request"));
    let request = sup.read();
    assert_eq!(request["params"]["request_id"], "my-request");
    sup.send(&result(request["id"].as_u64().unwrap(), published("e")));
    assert_eq!(sup.read()["result"]["publish"]["event_id"], "e");
    sup.close().unwrap();
}

#[test]
fn an_http_invoke_reads_the_request_answers_a_response_and_streams() {
    let function = Function::new().raw_body(true).on_invoke(
        |input: Value, ctx: &Context| -> Result<Value, Error> {
            let request = ctx.http();
            if input["stream"] == true {
                ctx.sse("one", Some("tick"))?;
                ctx.stream(&[0, 255], Some(201), &[("x", "y")])?;
                return Ok(Value::Null);
            }
            let Some(request) = request else {
                return Ok(json!({"http": false}));
            };
            let response = shs_sdk::Response::text(format!(
                "{} {} {:?}",
                request.method,
                request.path,
                request.form()
            ))
            .with_status(201)
            .with_header("set-cookie", "a=1")
            .with_header("set-cookie", "b=2");
            serde_json::to_value(response).map_err(|e| Error::new(e.to_string()))
        },
    );
    let mut form = json!({"jsonrpc": "2.0", "id": 2, "method": "invoke", "params": {
        "input": null, "context": {"request_id": "r", "function": "f"},
        "http": {"method": "POST", "path": "/a", "query": "", "remote_addr": "127.0.0.1",
                 "headers": {"content-type": "application/x-www-form-urlencoded"},
                 "body": "a=1&b=two+words"}}});
    let plain = invoke(3, json!({}));
    let streaming = invoke(4, json!({"stream": true}));
    form["params"]["context"]["request_id"] = json!("r2");
    let (lines, ended) = script(
        function,
        &[INIT.to_owned(), form.to_string(), plain, streaming],
    );
    ended.unwrap();
    assert_eq!(
        lines[0]["result"],
        json!({"concurrency": 1, "raw_body": true})
    );
    assert_eq!(
        lines[1]["result"],
        json!({"http_response": {"status": 201, "headers": {"set-cookie": ["a=1", "b=2"]},
               "body": "POST /a [(\"a\", \"1\"), (\"b\", \"two words\")]"}})
    );
    assert_eq!(lines[2]["result"], json!({"http": false}));
    assert_eq!(
        lines[3],
        json!({"jsonrpc": "2.0", "method": "stream", "params": {"id": 4,
               "chunk": "event: tick\ndata: one\n\n",
               "headers": {"content-type": "text/event-stream", "cache-control": "no-cache"}}})
    );
    assert_eq!(
        lines[4]["params"],
        json!({"id": 4, "chunk_base64": "AP8="}),
        "status and headers only on the first"
    );
    assert_eq!(lines[5]["id"], 4);
}

#[test]
fn initialize_declares_the_threads_or_the_concurrency_asked_for() {
    let answer = |function: Function| {
        let (out, ended) = script(function, &[INIT.into()]);
        ended.unwrap();
        out[0]["result"].clone()
    };
    assert_eq!(
        answer(echo_function().threads(4)),
        json!({"concurrency": 4})
    );
    assert_eq!(
        answer(echo_function().threads(4).concurrency(32)),
        json!({"concurrency": 32})
    );
    assert_eq!(
        answer(echo_function().concurrency(0)),
        json!({"concurrency": 1})
    );
    assert_eq!(
        answer(echo_function().concurrency(usize::MAX)),
        json!({"concurrency": 65536})
    );
}

#[test]
fn a_scheduled_invoke_reads_context_schedule() {
    let function = Function::new().on_invoke(|_: Value, ctx: &Context| {
        Ok(json!({"schedule": ctx.schedule().map(|s| json!({"cron": s.cron, "time": s.time}))}))
    });
    let schedule = json!({"cron": "0 */5 * * * *", "time": "2026-12-06T03:05:00.000Z"});
    let scheduled = json!({"jsonrpc": "2.0", "id": 3, "method": "invoke",
        "params": {"input": {}, "context": {"request_id": "r", "function": "f", "schedule": schedule}}})
    .to_string();
    let (out, ended) = script(function, &[INIT.into(), scheduled, invoke(4, json!({}))]);
    ended.unwrap();
    assert_eq!(
        out[1],
        json!({"jsonrpc": "2.0", "id": 3, "result": {"schedule": schedule}})
    );
    assert_eq!(
        out[2],
        json!({"jsonrpc": "2.0", "id": 4, "result": {"schedule": null}})
    );
}
