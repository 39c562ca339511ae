//! Property tests of the parts of the protocol that take bytes from outside: the line decoder,
//! the message parser, and the writers' one-line guarantee.

use bytes::BytesMut;
use proptest::prelude::*;
use serde::Serialize;
use serde_json::Value;
use serde_json::value::RawValue;
use shs_protocol::codec::{
    LineDecoder, LineError, OverLong, is_line_safe, line_safe, write_json_line_safe,
};
use shs_protocol::{
    Id, Message, RpcError, write_notification, write_request, write_response, write_response_raw,
};

// -- the line decoder ------------------------------------------------------------------------

/// What the decoder gives: a line (its bytes, and whether it was cut) or an over-long report.
type Out = Result<(Vec<u8>, bool), LineError>;

/// Feeds `input` to a decoder in chunks cut at `cuts`, then ends the stream. Checks after each
/// chunk that the buffer never holds more than `max_len` bytes once drained.
fn decode(input: &[u8], cuts: &[usize], max_len: usize, mode: OverLong) -> Vec<Out> {
    let mut decoder = LineDecoder::new(max_len, mode);
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    let mut points: Vec<usize> = cuts.iter().map(|c| c % (input.len() + 1)).collect();
    points.push(0);
    points.push(input.len());
    points.sort_unstable();
    for pair in points.windows(2) {
        buf.extend_from_slice(&input[pair[0]..pair[1]]);
        loop {
            match decoder.decode(&mut buf) {
                Ok(Some(line)) => out.push(Ok((line.bytes.to_vec(), line.truncated))),
                Ok(None) => break,
                Err(e) => out.push(Err(e)),
            }
        }
        assert!(
            buf.len() <= decoder.max_len(),
            "{} bytes buffered, limit {}",
            buf.len(),
            decoder.max_len()
        );
    }
    loop {
        match decoder.decode_eof(&mut buf) {
            Ok(Some(line)) => out.push(Ok((line.bytes.to_vec(), line.truncated))),
            Ok(None) => break,
            Err(e) => out.push(Err(e)),
        }
    }
    assert!(buf.is_empty(), "bytes left after the end: {buf:?}");
    out
}

/// What the decoder must give, computed the obvious way.
fn model(input: &[u8], max_len: usize, mode: OverLong) -> Vec<Out> {
    let max_len = max_len.max(1);
    let mut segments: Vec<&[u8]> = input.split(|b| *b == b'\n').collect();
    if segments.last().is_some_and(|last| last.is_empty()) {
        segments.pop(); // the input ends with \n (or is empty): no partial last line
    }
    segments
        .into_iter()
        .map(|segment| {
            if segment.len() <= max_len {
                Ok((
                    segment.strip_suffix(b"\r").unwrap_or(segment).to_vec(),
                    false,
                ))
            } else if mode == OverLong::Truncate {
                Ok((segment[..max_len].to_vec(), true))
            } else {
                Err(LineError::TooLong { limit: max_len })
            }
        })
        .collect()
}

/// Bytes rich in the ones the decoder cares about.
fn stream() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(
        prop_oneof![
            4 => any::<u8>(),
            2 => Just(b'\n'),
            1 => Just(b'\r'),
            2 => Just(b'x'),
        ],
        0..200,
    )
}

fn mode() -> impl Strategy<Value = OverLong> {
    prop_oneof![Just(OverLong::Error), Just(OverLong::Truncate)]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Any bytes, any chunking, any limit: no panic, the buffer stays within the limit, and the
    /// lines are those of the model, whatever the chunks.
    #[test]
    fn the_decoder_gives_the_same_lines_for_any_chunking(
        input in stream(),
        cuts in prop::collection::vec(any::<usize>(), 0..12),
        max_len in 0usize..24,
        mode in mode(),
    ) {
        let whole = decode(&input, &[], max_len, mode);
        let chunked = decode(&input, &cuts, max_len, mode);
        prop_assert_eq!(&whole, &chunked);
        prop_assert_eq!(whole, model(&input, max_len, mode));
    }

    /// A flood without newlines costs at most the limit, however it arrives.
    #[test]
    fn the_decoder_never_holds_more_than_its_limit(
        chunks in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..300), 1..20),
        max_len in 1usize..128,
        mode in mode(),
    ) {
        let mut decoder = LineDecoder::new(max_len, mode);
        let mut buf = BytesMut::new();
        for chunk in chunks {
            buf.extend_from_slice(&chunk);
            while let Ok(Some(_)) | Err(_) = decoder.decode(&mut buf) {}
            prop_assert!(buf.len() <= max_len);
        }
    }
}

// -- the message parser ----------------------------------------------------------------------

/// JSON values, with strings rich in line breaks, separators, quotes and backslashes.
fn json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        text().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((text(), inner), 0..6)
                .prop_map(|members| Value::Object(members.into_iter().collect())),
        ]
    })
}

/// Strings that hold what ends a line for some reader, and characters that share their bytes.
fn text() -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop_oneof![
            3 => any::<char>(),
            3 => prop::sample::select(vec![
                '\r', '\n', '\u{2028}', '\u{2029}', '\u{85}', '"', '\\', '\u{e9}', '\u{2019}',
                '\u{c2}', '\u{e2}', '\u{80}', '\u{a8}', '\t', '\u{b}', '\u{c}', '\u{1e}',
            ]),
        ],
        0..10,
    )
    .prop_map(|chars| chars.into_iter().collect())
}

/// `value` as JSON text with whitespace between its tokens (CR, LF, CRLF, spaces and tabs,
/// picked by `spaces`) and its strings as short as JSON allows: U+2028, U+2029 and U+0085 raw.
fn spaced(value: &Value, spaces: &[u8]) -> String {
    fn ws(out: &mut String, spaces: &[u8], next: &mut usize) {
        let pick = spaces
            .get(*next % spaces.len().max(1))
            .copied()
            .unwrap_or(0);
        *next += 1;
        out.push_str(["", " ", "\t", "\r", "\n", "\r\n", " \r ", ""][usize::from(pick % 8)]);
    }
    fn go(value: &Value, out: &mut String, spaces: &[u8], next: &mut usize) {
        ws(out, spaces, next);
        match value {
            Value::Array(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    go(item, out, spaces, next);
                }
                ws(out, spaces, next);
                out.push(']');
            }
            Value::Object(members) => {
                out.push('{');
                for (i, (key, item)) in members.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    ws(out, spaces, next);
                    out.push_str(&Value::String(key.clone()).to_string());
                    ws(out, spaces, next);
                    out.push(':');
                    go(item, out, spaces, next);
                }
                ws(out, spaces, next);
                out.push('}');
            }
            scalar => out.push_str(&scalar.to_string()),
        }
        ws(out, spaces, next);
    }
    let mut out = String::new();
    go(value, &mut out, spaces, &mut 0);
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// The parser takes any bytes without panicking.
    #[test]
    fn the_parser_never_panics_on_bytes(line in prop::collection::vec(any::<u8>(), 0..256)) {
        let _ = Message::parse(&line);
    }

    /// ... any text ...
    #[test]
    fn the_parser_never_panics_on_text(line in "\\PC{0,200}") {
        let _ = Message::parse(line.as_bytes());
    }

    /// ... and any JSON object, with or without the members of a message.
    #[test]
    fn the_parser_never_panics_on_json(
        mut members in prop::collection::vec((text(), json()), 0..4),
        id in prop_oneof![Just(None), json().prop_map(Some)],
        method in prop_oneof![Just(None), json().prop_map(Some)],
        result in prop_oneof![Just(None), json().prop_map(Some)],
        error in prop_oneof![Just(None), json().prop_map(Some)],
        version in prop_oneof![Just(None), Just(Some(Value::from("2.0"))), json().prop_map(Some)],
    ) {
        for (key, value) in [("id", id), ("method", method), ("result", result), ("error", error), ("jsonrpc", version)] {
            if let Some(value) = value {
                members.push((key.to_owned(), value));
            }
        }
        let object = Value::Object(members.into_iter().collect());
        let _ = Message::parse(object.to_string().as_bytes());
    }
}

// -- one line for every reader ---------------------------------------------------------------

/// Checks that `buf` is exactly one line for every common reader: one `\n`, at the end, and no
/// `\r`, U+0085, U+2028 or U+2029; returns the line without its `\n`.
fn one_line(buf: &[u8]) -> Result<&str, TestCaseError> {
    let text = std::str::from_utf8(buf).map_err(|e| TestCaseError::fail(e.to_string()))?;
    let Some(line) = text.strip_suffix('\n') else {
        return Err(TestCaseError::fail(format!("no \\n at the end: {text:?}")));
    };
    prop_assert!(is_line_safe(line), "a line break inside: {line:?}");
    prop_assert!(
        !line.contains(['\n', '\r', '\u{85}', '\u{2028}', '\u{2029}']),
        "{line:?}"
    );
    // What Python's str.splitlines and Node's readline would see: one line.
    prop_assert_eq!(line.lines().count(), 1);
    Ok(line)
}

/// The params of the request or notification on `line`, parsed.
fn params_of(line: &str) -> Result<Value, TestCaseError> {
    let params = match Message::parse(line.as_bytes()) {
        Ok(Message::Request(request)) => request.params,
        Ok(Message::Notification(notification)) => notification.params,
        other => return Err(TestCaseError::fail(format!("not a request: {other:?}"))),
    };
    match params {
        Some(params) => {
            serde_json::from_str(params.get()).map_err(|e| TestCaseError::fail(e.to_string()))
        }
        None => Ok(Value::Null), // "params": null reads as no params
    }
}

#[derive(Serialize)]
struct Event<'a> {
    event: &'a RawValue,
    note: &'a str,
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Any value written by any writer: one line, which parses back to the same value.
    #[test]
    fn any_value_is_written_on_one_line(value in json(), note in text()) {
        let mut buf = Vec::new();
        write_request(&mut buf, &Id::Int(7), "invoke", &value).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(params_of(one_line(&buf)?)?, value.clone());

        buf.clear();
        write_notification(&mut buf, "publish", &value).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(params_of(one_line(&buf)?)?, value.clone());

        buf.clear();
        write_response(&mut buf, &Id::Str(note.clone()), Ok(&value)).map_err(|e| TestCaseError::fail(e.to_string()))?;
        match Message::parse(one_line(&buf)?.as_bytes()) {
            Ok(Message::Response(response)) => {
                prop_assert_eq!(response.id, Some(Id::Str(note.clone())));
                let result = response.outcome.map_err(|e| TestCaseError::fail(e.to_string()))?;
                prop_assert_eq!(serde_json::from_str::<Value>(result.get()).ok(), Some(value.clone()));
            }
            other => return Err(TestCaseError::fail(format!("not an answer: {other:?}"))),
        }

        buf.clear();
        // ("data": null reads as no data.)
        let data = Some(value.clone()).filter(|v| !v.is_null());
        let error = RpcError { code: -1, message: note.clone(), data };
        write_response::<()>(&mut buf, &Id::Int(1), Err(&error)).map_err(|e| TestCaseError::fail(e.to_string()))?;
        match Message::parse(one_line(&buf)?.as_bytes()) {
            Ok(Message::Response(response)) => prop_assert_eq!(response.outcome.err(), Some(error)),
            other => return Err(TestCaseError::fail(format!("not an answer: {other:?}"))),
        }
    }

    /// Raw JSON as a function or client wrote it, with CR and LF between tokens and line
    /// separators raw inside strings: one line, which parses back to the same value.
    #[test]
    fn any_raw_json_is_written_on_one_line(
        value in json(),
        spaces in prop::collection::vec(any::<u8>(), 1..32),
        note in text(),
    ) {
        let text = spaced(&value, &spaces);
        let raw = RawValue::from_string(text.clone()).map_err(|e| TestCaseError::fail(format!("{e}: {text:?}")))?;
        prop_assert_eq!(serde_json::from_str::<Value>(raw.get()).ok(), Some(value.clone()));

        let mut buf = Vec::new();
        write_request(&mut buf, &Id::Int(1), "event", &Event { event: &raw, note: &note }).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let params = params_of(one_line(&buf)?)?;
        prop_assert_eq!(&params["event"], &value);
        prop_assert_eq!(&params["note"], &Value::String(note));

        buf.clear();
        write_response_raw(&mut buf, &Id::Int(2), &raw).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let line = one_line(&buf)?;
        match Message::parse(line.as_bytes()) {
            Ok(Message::Response(response)) => {
                let result = response.outcome.map_err(|e| TestCaseError::fail(e.to_string()))?;
                prop_assert_eq!(serde_json::from_str::<Value>(result.get()).ok(), Some(value.clone()));
            }
            other => return Err(TestCaseError::fail(format!("not an answer: {other:?}"))),
        }

        // line_safe, for raw JSON kept elsewhere: line-safe, the same value, and untouched
        // when it already was.
        let original = raw.get().to_owned();
        let safe = line_safe(raw);
        prop_assert!(is_line_safe(safe.get()));
        prop_assert_eq!(serde_json::from_str::<Value>(safe.get()).ok(), Some(value));
        if is_line_safe(&original) {
            prop_assert_eq!(safe.get(), original.as_str());
        }
    }

    /// The fast check agrees with the obvious one on any text.
    #[test]
    fn is_line_safe_finds_exactly_the_line_breaks(text in text(), more in "\\PC{0,80}") {
        for text in [text.clone(), more.clone(), format!("{more}{text}"), format!("{text}{more}")] {
            prop_assert_eq!(
                is_line_safe(&text),
                !text.contains(['\n', '\r', '\u{85}', '\u{2028}', '\u{2029}']),
                "{:?}", text
            );
        }
    }

    /// What needs no rewrite is written byte for byte as serde_json writes it.
    #[test]
    fn the_rewrite_happens_only_when_needed(value in json()) {
        let plain = serde_json::to_string(&value).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let mut buf = Vec::new();
        write_json_line_safe(&mut buf, &value).map_err(|e| TestCaseError::fail(e.to_string()))?;
        if is_line_safe(&plain) {
            prop_assert_eq!(buf, plain.into_bytes());
        } else {
            prop_assert!(buf.len() > plain.len(), "separators become 6-byte escapes");
        }
    }
}
