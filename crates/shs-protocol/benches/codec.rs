//! Micro-benchmarks of the wire codec: cutting a stream into lines, classifying a line, and
//! writing a request. Run with `cargo bench -p shs-protocol`.
//!
//! The `write_request` group measures the writers' one-line guarantee (the scan for line
//! breaks, and the rewrite when one is found) against a plain `serde_json::to_writer` of the
//! same message, which is what the writers did before they gave that guarantee: the two sit
//! side by side in every run.

#![allow(missing_docs)] // criterion_group! defines undocumented public functions.

use std::hint::black_box;

use bytes::BytesMut;
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use serde::Serialize;
use serde_json::value::RawValue;
use shs_protocol::codec::{LineDecoder, OverLong};
use shs_protocol::methods::{Context, INVOKE, InvokeParams};
use shs_protocol::{Id, Message, write_request};

const CHUNK: usize = 64 * 1024;

/// An answer line of about `size` bytes, as a function would write it (newline included).
fn answer_line(id: u64, size: usize) -> String {
    let head = format!(r#"{{"jsonrpc":"2.0","id":{id},"result":{{"message":""#);
    let tail = "\"}}\n";
    let fill = size.saturating_sub(head.len() + tail.len());
    format!("{head}{}{tail}", "x".repeat(fill))
}

/// About `total` bytes of answer lines of about `size` bytes each.
fn stream(size: usize, total: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(total + size);
    let mut id = 1;
    while out.len() < total {
        out.extend_from_slice(answer_line(id, size).as_bytes());
        id += 1;
    }
    out
}

fn line_decoder(c: &mut Criterion) {
    let mut group = c.benchmark_group("LineDecoder");
    for (name, size) in [("100B lines", 100), ("4KiB lines", 4096)] {
        let input = stream(size, 1 << 20);
        let lines = input.iter().filter(|b| **b == b'\n').count();
        group.throughput(Throughput::Bytes(input.len() as u64));
        group.bench_function(
            format!("{name}, 1 MiB in 64 KiB chunks ({lines} lines)"),
            |b| {
                let mut buf = BytesMut::with_capacity(2 * CHUNK);
                b.iter(|| {
                    let mut decoder = LineDecoder::new(16 << 20, OverLong::Error);
                    let mut seen = 0usize;
                    for chunk in input.chunks(CHUNK) {
                        buf.extend_from_slice(chunk);
                        while let Ok(Some(line)) = decoder.decode(&mut buf) {
                            seen += line.bytes.len();
                        }
                    }
                    buf.clear();
                    black_box(seen)
                });
            },
        );
    }
    group.finish();
}

fn parse(c: &mut Criterion) {
    let request = br#"{"jsonrpc":"2.0","id":42,"method":"publish","params":{"type":"orders.created","payload":{"order":1234,"items":[1,2,3],"note":"hello"}}}"#;
    let answer =
        br#"{"jsonrpc":"2.0","id":1234567,"result":{"message":"Hello, Ada!","count":3,"ok":true}}"#;
    let mut group = c.benchmark_group("Message::parse");
    group.bench_function("request (publish)", |b| {
        b.iter(|| Message::parse(black_box(request)))
    });
    group.bench_function("answer (result)", |b| {
        b.iter(|| Message::parse(black_box(answer)))
    });
    group.finish();
}

fn write(c: &mut Criterion) {
    let input: Box<RawValue> = match RawValue::from_string(
        r#"{"name":"Ada","items":[1,2,3],"nested":{"a":true,"b":null,"c":"text"}}"#.to_owned(),
    ) {
        Ok(raw) => raw,
        Err(e) => panic!("bad input JSON: {e}"),
    };
    let request_id = "0b3c2a57-3f1e-4d8e-9a36-7f1f2d1c9e55";
    c.bench_function("write_request (invoke, raw input)", |b| {
        b.iter_batched_ref(
            || Vec::with_capacity(512),
            |buf| {
                buf.clear();
                let params = InvokeParams {
                    input: &*input,
                    context: Context {
                        request_id,
                        function: "echo",
                        traceparent: None,
                        webhook: None,
                        schedule: None,
                    },
                    http: None,
                };
                write_request(buf, &Id::Int(1_234_567), INVOKE, black_box(&params))
            },
            BatchSize::SmallInput,
        )
    });
    c.bench_function(
        "write_request (invoke, raw input): serde_json::to_writer (before)",
        |b| {
            b.iter_batched_ref(
                || Vec::with_capacity(512),
                |buf| {
                    buf.clear();
                    let params = InvokeParams {
                        input: &*input,
                        context: Context {
                            request_id,
                            function: "echo",
                            traceparent: None,
                            webhook: None,
                            schedule: None,
                        },
                        http: None,
                    };
                    write_plain(buf, &Id::Int(1_234_567), INVOKE, black_box(&params))
                },
                BatchSize::SmallInput,
            )
        },
    );
}

/// The request as the writers wrote it before the one-line guarantee: serde_json's own
/// compact formatter, nothing scanned.
#[derive(Serialize)]
struct PlainRequest<'a, P: ?Sized> {
    jsonrpc: &'static str,
    id: &'a Id,
    method: &'a str,
    params: &'a P,
}

fn write_plain<P: Serialize + ?Sized>(buf: &mut Vec<u8>, id: &Id, method: &str, params: &P) {
    let request = PlainRequest {
        jsonrpc: "2.0",
        id,
        method,
        params,
    };
    if let Err(e) = serde_json::to_writer(&mut *buf, &request) {
        panic!("serializes: {e}");
    }
    buf.push(b'\n');
}

/// An event delivery with a raw payload, the way the supervisor writes one.
#[derive(Serialize)]
struct Delivery<'a> {
    event: Event<'a>,
    context: Context<&'a str>,
}

#[derive(Serialize)]
struct Event<'a> {
    specversion: &'static str,
    id: &'a str,
    #[serde(rename = "type")]
    event_type: &'a str,
    source: &'a str,
    time: &'a str,
    payload: &'a RawValue,
}

fn raw(text: String) -> Box<RawValue> {
    match RawValue::from_string(text) {
        Ok(raw) => raw,
        Err(e) => panic!("bad payload JSON: {e}"),
    }
}

fn write_events(c: &mut Criterion) {
    let prose_ascii = "The quick brown fox jumps over the lazy dog. ".repeat(23);
    // Curly quotes and dashes share their first byte (0xE2) with U+2028 and U+2029: each one
    // is a false alarm of the fast scan, checked and passed over.
    let prose_quotes = "\u{2018}Quick\u{2019} \u{2014} brown fox\u{2026} ".repeat(28);
    let payloads = [
        (
            "1 KiB ASCII",
            raw(format!(
                r#"{{"user":{{"id":123,"name":"Ada"}},"note":"{prose_ascii}"}}"#
            )),
        ),
        (
            "64 KiB ASCII",
            raw(format!(
                r#"{{"items":[{}]}}"#,
                vec![format!(r#""{prose_ascii}""#); 64].join(",")
            )),
        ),
        (
            "1 KiB curly quotes",
            raw(format!(r#"{{"note":"{prose_quotes}"}}"#)),
        ),
        (
            "1 KiB with CRs and U+2028 (rewritten)",
            raw(format!(
                "{{\r\"note\":\r\"{}\u{2028}\"\r}}",
                &prose_ascii[..1000]
            )),
        ),
    ];
    let id = Id::Int(1_234_567);
    let mut group = c.benchmark_group("write_request (event)");
    for (name, payload) in &payloads {
        let params = Delivery {
            event: Event {
                specversion: "1.0",
                id: "01a21bee-a1c7-73de-9295-199ef7e497d3",
                event_type: "user.created",
                source: "/functions/event-publisher",
                time: "2026-11-27T07:35:53.543Z",
                payload,
            },
            context: Context {
                request_id: "0b3c2a57-3f1e-4d8e-9a36-7f1f2d1c9e55",
                function: "event-subscriber",
                traceparent: None,
                webhook: None,
                schedule: None,
            },
        };
        group.throughput(Throughput::Bytes(payload.get().len() as u64));
        group.bench_function(
            format!("{name}: write_request (one line for every reader)"),
            |b| {
                let mut buf = Vec::with_capacity(80 * 1024);
                b.iter(|| {
                    buf.clear();
                    write_request(&mut buf, &id, "event", black_box(&params))
                })
            },
        );
        group.bench_function(format!("{name}: serde_json::to_writer (before)"), |b| {
            let mut buf = Vec::with_capacity(80 * 1024);
            b.iter(|| {
                buf.clear();
                write_plain(&mut buf, &id, "event", black_box(&params));
            })
        });
    }
    group.finish();
}

criterion_group!(benches, line_decoder, parse, write, write_events);
criterion_main!(benches);
