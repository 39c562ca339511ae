//! Micro-benchmarks of the wire codec: cutting a stream into lines, classifying a line, and
//! writing an invoke request. Run with `cargo bench -p shs-protocol`.

#![allow(missing_docs)] // criterion_group! defines undocumented public functions.

use std::hint::black_box;

use bytes::BytesMut;
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
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
                    },
                };
                write_request(buf, &Id::Int(1_234_567), INVOKE, black_box(&params))
            },
            BatchSize::SmallInput,
        )
    });
}

criterion_group!(benches, line_decoder, parse, write);
criterion_main!(benches);
