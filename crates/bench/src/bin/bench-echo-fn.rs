//! A Rust echo function for shs (mode rpc), written directly against `shs-protocol`.
//!
//! It answers `invoke` with its `input`, unchanged (the raw JSON is passed through, never
//! re-serialised), and `initialize` and `event` with `{}`. Answers go into a buffer that is
//! flushed only when no more input is already buffered, so pipelined requests (`concurrency`
//! above 1) are answered in batches.
//!
//! With `--publish TYPE`, each invoke first publishes an event of that type with the input as
//! its payload and waits for the supervisor's answer. That mode reads the next answer line as
//! the answer to its publish, which the protocol allows only with `concurrency = 1`.
//!
//! With `--concurrency N`, its answer to `initialize` declares `{"concurrency": N}` (how many
//! requests it takes at once when no `function.toml` says otherwise).

use std::io::{self, BufRead, BufReader, BufWriter, Write};

use serde::Serialize;
use serde_json::value::RawValue;
use shs_protocol::methods::{self, InvokeParams};
use shs_protocol::{Id, Message, RpcError, write_request, write_response, write_response_raw};

const BUFFER: usize = 1 << 20;

fn main() -> io::Result<()> {
    let Args {
        publish,
        concurrency,
    } = parse_args()?;
    let mut input = BufReader::with_capacity(BUFFER, io::stdin().lock());
    let mut output = BufWriter::with_capacity(BUFFER, io::stdout().lock());
    let mut line = Vec::with_capacity(4096);
    let mut out = Vec::with_capacity(4096);
    let mut next_id = 0u64;
    let empty = raw("{}")?;
    let ready = match concurrency {
        Some(n) => raw(&format!("{{\"concurrency\":{n}}}"))?,
        None => empty.clone(),
    };
    loop {
        line.clear();
        if input.read_until(b'\n', &mut line)? == 0 {
            break;
        }
        let request = match Message::parse(&line) {
            Ok(Message::Request(request)) => request,
            // Notifications, stray answers, and lines that are no message: nothing to answer.
            Ok(_) => continue,
            Err(e) => {
                eprintln!("bench-echo-fn: ignoring a line: {e}");
                continue;
            }
        };
        out.clear();
        match request.method.as_str() {
            methods::INVOKE => {
                let params = request.params.as_deref().map(RawValue::get);
                match params.map(serde_json::from_str::<InvokeParams<&RawValue, &str>>) {
                    Some(Ok(params)) => {
                        if let Some(event_type) = &publish {
                            next_id += 1;
                            publish_and_wait(
                                &mut input,
                                &mut output,
                                next_id,
                                event_type,
                                params.input,
                            )?;
                        }
                        write_response_raw(&mut out, &request.id, params.input)?;
                    }
                    _ => error(&mut out, &request.id, methods::error_code::INVALID_PARAMS)?,
                }
            }
            methods::INITIALIZE => write_response_raw(&mut out, &request.id, &ready)?,
            methods::EVENT => write_response_raw(&mut out, &request.id, &empty)?,
            _ => error(&mut out, &request.id, methods::error_code::METHOD_NOT_FOUND)?,
        }
        output.write_all(&out)?;
        if input.buffer().is_empty() {
            output.flush()?;
        }
    }
    output.flush()
}

/// The command line: `[--publish TYPE] [--concurrency N]`.
struct Args {
    publish: Option<String>,
    concurrency: Option<u32>,
}

fn parse_args() -> io::Result<Args> {
    let usage = || io::Error::other("usage: bench-echo-fn [--publish TYPE] [--concurrency N]");
    let mut parsed = Args {
        publish: None,
        concurrency: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().ok_or_else(usage)?;
        match flag.as_str() {
            "--publish" => parsed.publish = Some(value),
            "--concurrency" => parsed.concurrency = Some(value.parse().map_err(|_| usage())?),
            _ => return Err(usage()),
        }
    }
    Ok(parsed)
}

fn raw(json: &str) -> io::Result<Box<RawValue>> {
    RawValue::from_string(json.to_owned()).map_err(io::Error::other)
}

fn error(out: &mut Vec<u8>, id: &Id, code: i64) -> io::Result<()> {
    let error = RpcError::new(code, "bench-echo-fn: unsupported request");
    write_response::<()>(out, id, Err(&error))?;
    Ok(())
}

/// The params of `publish`, borrowed (`methods::PublishParams` is the supervisor's owned,
/// read-only form).
#[derive(Serialize)]
struct Publish<'a> {
    #[serde(rename = "type")]
    event_type: &'a str,
    payload: &'a RawValue,
}

/// Publishes `payload` as an event of `event_type` and reads lines until its answer.
fn publish_and_wait(
    input: &mut impl BufRead,
    output: &mut impl Write,
    id: u64,
    event_type: &str,
    payload: &RawValue,
) -> io::Result<()> {
    let id = Id::from(id);
    let mut line = Vec::with_capacity(256);
    write_request(
        &mut line,
        &id,
        methods::PUBLISH,
        &Publish {
            event_type,
            payload,
        },
    )?;
    output.write_all(&line)?;
    output.flush()?;
    loop {
        line.clear();
        if input.read_until(b'\n', &mut line)? == 0 {
            return Err(io::Error::other("stdin closed while waiting to publish"));
        }
        match Message::parse(&line) {
            Ok(Message::Response(answer)) if answer.id.as_ref() == Some(&id) => {
                return match answer.outcome {
                    Ok(_) => Ok(()),
                    Err(e) => Err(io::Error::other(format!("publish failed: {e}"))),
                };
            }
            _ => eprintln!("bench-echo-fn: ignoring a line while waiting to publish"),
        }
    }
}
