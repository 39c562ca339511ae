//! {{name}}: an shs function in Rust, on the `shs-sdk` crate.
//!
//! Build:   cargo build --release   (function.toml runs target/release/{{name}}; a rebuild
//!          redeploys it)
//! Invoke:  shs invoke {{name}} '{"name": "Ada"}'      -> {"message": "Hello, Ada!"}
//! Event:   shs publish {{name}}.ping '{"from": "me"}'
//! Test:    cargo test
//! Logs:    shs logs {{name}} -f
//!
//! The SDK speaks the shs protocol for you: JSON-RPC 2.0, one message per line, over stdin and
//! stdout (see docs/protocol.md in the shs repository). So stdout is not yours: never
//! `println!`. Log with `ctx.log(...)` or `eprintln!`; the server keeps those lines
//! (`shs logs {{name}}`). Processes come and go: keep nothing in memory between requests that
//! you cannot lose. The SDK's documentation: `cargo doc --open -p shs-sdk`.

use serde_json::{Value, json};
use shs_sdk::{Context, Error, Event, Function};

/// The answer to an input `{"name": ...}`.
fn greeting(input: &Value) -> Value {
    let name = input["name"]
        .as_str()
        .filter(|name| !name.is_empty())
        .unwrap_or("world");
    json!({ "message": format!("Hello, {name}!") })
}

/// `POST /run/{{name}}`: `input` is the request body (any JSON); the value returned is the
/// response. Return `Err(Error::new("...").with_code(400))` to answer with an error.
fn greet(input: Value, ctx: &Context) -> Result<Value, Error> {
    let answer = greeting(&input);
    ctx.log(format_args!("greeting: {answer}"));
    // To tell other functions, publish an event (waits until every subscriber has taken it):
    //   ctx.publish("greeting.sent", &json!({ "input": input }))?;
    Ok(answer)
}

/// Events of type `{{name}}.ping`, e.g. from `shs publish {{name}}.ping '{}'`. The value
/// returned is not used; an error makes the delivery fail (listed in the publisher's errors).
fn on_ping(event: Event, ctx: &Context) -> Result<Value, Error> {
    ctx.log(format_args!(
        "ping {} from {} with {}",
        event.id, event.source, event.payload
    ));
    Ok(json!({ "pong": true }))
}

/// The function: its handlers. Handling `{{name}}.ping` subscribes to it at start-up.
fn function() -> Function {
    Function::new()
        .on_invoke(greet)
        .on_event("{{name}}.ping", on_ping)
}

fn main() -> std::io::Result<()> {
    function().run()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greets_by_name() {
        assert_eq!(
            greeting(&json!({ "name": "Ada" })),
            json!({ "message": "Hello, Ada!" })
        );
        assert_eq!(greeting(&json!({})), json!({ "message": "Hello, world!" }));
        assert_eq!(greeting(&json!([1, 2])), json!({ "message": "Hello, world!" }));
    }

    /// The whole function as the server drives it: `initialize` (the function subscribes to
    /// `{{name}}.ping` first; the answer to that is scripted too), an invoke and an event.
    #[test]
    fn answers_over_the_protocol() {
        let script = [
            json!({"jsonrpc": "2.0", "id": 1, "method": "initialize",
                   "params": {"function": "{{name}}", "protocol": 1}}),
            json!({"jsonrpc": "2.0", "id": 1,
                   "result": {"subscribed": true, "type": "{{name}}.ping"}}),
            json!({"jsonrpc": "2.0", "id": 2, "method": "invoke",
                   "params": {"input": {"name": "Ada"},
                              "context": {"request_id": "r-2", "function": "{{name}}"}}}),
            json!({"jsonrpc": "2.0", "id": 3, "method": "event",
                   "params": {"event": {"id": "ev-1", "type": "{{name}}.ping", "source": "/http",
                                        "time": "2026-01-01T00:00:00.000Z", "payload": {}},
                              "context": {"request_id": "r-3", "function": "{{name}}"}}}),
        ];
        let input: String = script.iter().map(|line| format!("{line}\n")).collect();
        let mut output = Vec::new();
        function()
            .run_with(input.as_bytes(), &mut output)
            .expect("the function runs to the end of its input");
        let written: Vec<Value> = String::from_utf8(output)
            .expect("UTF-8 output")
            .lines()
            .map(|line| serde_json::from_str(line).expect("a JSON line"))
            .collect();
        assert_eq!(
            written,
            [
                json!({"jsonrpc": "2.0", "id": 1, "method": "subscribe",
                       "params": {"type": "{{name}}.ping"}}),
                // One thread: it declares one request at a time.
                json!({"jsonrpc": "2.0", "id": 1, "result": {"concurrency": 1}}),
                json!({"jsonrpc": "2.0", "id": 2, "result": {"message": "Hello, Ada!"}}),
                json!({"jsonrpc": "2.0", "id": 3, "result": {"pong": true}}),
            ]
        );
    }
}
