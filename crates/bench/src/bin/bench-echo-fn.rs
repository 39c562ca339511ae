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
//!
//! With `--http-response`, each invoke is answered with an `http_response`: status 200,
//! `text/plain`, the body `query: ` and the request's raw query (`http.query`).
//!
//! With `--stream`, an invoke whose input is `{"chunks": N, "size": S, "every_ms": M}` streams
//! its answer: N `stream` notifications of S bytes (`x`), M milliseconds apart, then `{}`.

use std::io::{self, BufRead, BufReader, BufWriter, Write};

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use shs_protocol::methods::{self, InvokeParams};
use shs_protocol::{
    Id, Message, RpcError, write_notification, write_request, write_response, write_response_raw,
};

const BUFFER: usize = 1 << 20;

fn main() -> io::Result<()> {
    let Args {
        publish,
        concurrency,
        answer,
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
                        match answer {
                            Answer::Echo => {
                                write_response_raw(&mut out, &request.id, params.input)?;
                            }
                            Answer::HttpResponse => {
                                let http: Option<HttpQuery<'_>> = params
                                    .http
                                    .as_deref()
                                    .and_then(|h| serde_json::from_str(h.get()).ok());
                                let query = http.as_ref().map_or("", |h| &h.query);
                                write_response(
                                    &mut out,
                                    &request.id,
                                    Ok(&HttpAnswer {
                                        http_response: HttpResponse {
                                            status: 200,
                                            headers: TextPlain {
                                                content_type: "text/plain; charset=utf-8",
                                            },
                                            body: &format!("query: {query}"),
                                        },
                                    }),
                                )?;
                            }
                            Answer::Stream => {
                                let ask: StreamAsk =
                                    serde_json::from_str(params.input.get()).unwrap_or_default();
                                stream(&mut output, &request.id, &ask)?;
                                write_response_raw(&mut out, &request.id, &empty)?;
                            }
                        }
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

/// The command line: `[--publish TYPE] [--concurrency N] [--http-response | --stream]`.
struct Args {
    publish: Option<String>,
    concurrency: Option<u32>,
    answer: Answer,
}

/// How an invoke is answered.
#[derive(Clone, Copy)]
enum Answer {
    /// With its input.
    Echo,
    /// With an `http_response` holding the request's query.
    HttpResponse,
    /// With `stream` notifications, then `{}`.
    Stream,
}

fn parse_args() -> io::Result<Args> {
    let usage = || {
        io::Error::other(
            "usage: bench-echo-fn [--publish TYPE] [--concurrency N] [--http-response | --stream]",
        )
    };
    let mut parsed = Args {
        publish: None,
        concurrency: None,
        answer: Answer::Echo,
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        match flag.as_str() {
            "--http-response" => parsed.answer = Answer::HttpResponse,
            "--stream" => parsed.answer = Answer::Stream,
            "--publish" => parsed.publish = Some(args.next().ok_or_else(usage)?),
            "--concurrency" => {
                let value = args.next().ok_or_else(usage)?;
                parsed.concurrency = Some(value.parse().map_err(|_| usage())?);
            }
            _ => return Err(usage()),
        }
    }
    Ok(parsed)
}

/// The part of `http` that `--http-response` reads.
#[derive(Deserialize)]
struct HttpQuery<'a> {
    #[serde(borrow)]
    query: std::borrow::Cow<'a, str>,
}

#[derive(Serialize)]
struct HttpAnswer<'a> {
    http_response: HttpResponse<'a>,
}

#[derive(Serialize)]
struct HttpResponse<'a> {
    status: u16,
    headers: TextPlain,
    body: &'a str,
}

#[derive(Serialize)]
struct TextPlain {
    #[serde(rename = "content-type")]
    content_type: &'static str,
}

/// The input of a `--stream` invoke.
#[derive(Default, Deserialize)]
struct StreamAsk {
    chunks: usize,
    size: usize,
    #[serde(default)]
    every_ms: u64,
}

/// One `stream` notification.
#[derive(Serialize)]
struct Chunk<'a> {
    id: &'a Id,
    chunk: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    headers: Option<TextPlain>,
}

/// Streams `ask.chunks` chunks of `ask.size` bytes for invoke `id`, each flushed at once.
fn stream(output: &mut impl Write, id: &Id, ask: &StreamAsk) -> io::Result<()> {
    let data = "x".repeat(ask.size);
    let mut line = Vec::with_capacity(ask.size + 128);
    for n in 0..ask.chunks {
        if n > 0 && ask.every_ms > 0 {
            std::thread::sleep(std::time::Duration::from_millis(ask.every_ms));
        }
        line.clear();
        let headers = (n == 0).then_some(TextPlain {
            content_type: "text/plain; charset=utf-8",
        });
        write_notification(
            &mut line,
            methods::STREAM,
            &Chunk {
                id,
                chunk: &data,
                headers,
            },
        )?;
        output.write_all(&line)?;
        output.flush()?;
    }
    Ok(())
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
