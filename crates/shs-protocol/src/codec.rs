//! Newline-delimited framing.
//!
//! [`LineDecoder`] cuts a byte stream into lines. It never holds more than `max_len` bytes of
//! one line: a longer line is reported once ([`LineError::TooLong`]) or cut
//! ([`OverLong::Truncate`]), and the rest of it is skipped as it arrives, up to the next `\n`.
//! That bound is what keeps a function that floods its stdout from costing the supervisor
//! memory.
//!
//! [`LineFormatter`] is the other direction: JSON written with it is one line for every common
//! reader, whatever raw JSON it embeds. Readers do not agree on where a line ends: `\n` for
//! most, but Node's `readline` also ends one at a bare `\r`, Python's universal newlines at
//! `\r`, and `str.splitlines` (so `codecs` readers) at U+0085, U+2028 and U+2029 too. JSON
//! allows `\r` and `\n` raw as whitespace between tokens and the other three raw inside
//! strings, so a payload taken from outside could otherwise end a line early, and what follows
//! would be read as a message of its own. The formatter drops `\r` and `\n` between tokens
//! and writes the three others as `\u0085`, `\u2028`, `\u2029`: equivalent JSON, the same
//! value once parsed. Every `write_*` function of this crate uses it.

use std::io;

use bytes::BytesMut;
use serde_json::value::RawValue;

/// What a [`LineDecoder`] does with a line longer than its limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OverLong {
    /// Report [`LineError::TooLong`] once, then skip the rest of the line.
    Error,
    /// Yield the first `max_len` bytes as a line with `truncated` set, then skip the rest.
    Truncate,
}

/// One line taken out of the stream.
#[derive(Debug, PartialEq, Eq)]
pub struct Line {
    /// The line's bytes, without the `\n` (and without a `\r` before it).
    pub bytes: BytesMut,
    /// Whether the line was cut at the limit ([`OverLong::Truncate`] only).
    pub truncated: bool,
}

/// Why no line could be taken.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LineError {
    /// A line grew past the limit; its bytes are being skipped.
    #[error("line longer than {limit} bytes")]
    TooLong {
        /// The limit that was passed.
        limit: usize,
    },
}

/// Splits bytes into lines of at most `max_len` bytes.
///
/// Feed it the buffer the bytes are read into; it removes what it returns or skips. A final
/// line with no `\n` is returned by [`LineDecoder::decode_eof`].
#[derive(Debug)]
pub struct LineDecoder {
    max_len: usize,
    over_long: OverLong,
    /// How far the buffer has been searched for `\n` already.
    scanned: usize,
    /// Whether the bytes up to the next `\n` belong to a line already reported or cut.
    discarding: bool,
}

impl LineDecoder {
    /// A decoder for lines of at most `max_len` bytes (not counting the `\n`).
    pub fn new(max_len: usize, over_long: OverLong) -> Self {
        LineDecoder {
            max_len: max_len.max(1),
            over_long,
            scanned: 0,
            discarding: false,
        }
    }

    /// The longest line this decoder returns whole.
    pub fn max_len(&self) -> usize {
        self.max_len
    }

    /// Takes the next complete line out of `buf`, if there is one.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Line>, LineError> {
        loop {
            let newline = buf[self.scanned..]
                .iter()
                .position(|b| *b == b'\n')
                .map(|offset| self.scanned + offset);
            match (self.discarding, newline) {
                (true, Some(end)) => {
                    // The tail of a line already dealt with: drop it and go on with the next.
                    let _ = buf.split_to(end + 1);
                    self.scanned = 0;
                    self.discarding = false;
                }
                (true, None) => {
                    buf.clear();
                    self.scanned = 0;
                    return Ok(None);
                }
                (false, Some(end)) if end <= self.max_len => {
                    let mut bytes = buf.split_to(end + 1);
                    bytes.truncate(end);
                    if bytes.last() == Some(&b'\r') {
                        bytes.truncate(end - 1);
                    }
                    self.scanned = 0;
                    return Ok(Some(Line {
                        bytes,
                        truncated: false,
                    }));
                }
                (false, Some(_)) => return self.over_limit(buf),
                (false, None) if buf.len() > self.max_len => return self.over_limit(buf),
                (false, None) => {
                    self.scanned = buf.len();
                    return Ok(None);
                }
            }
        }
    }

    /// Like [`LineDecoder::decode`], for when the stream has ended: a last line without `\n`
    /// is returned too.
    pub fn decode_eof(&mut self, buf: &mut BytesMut) -> Result<Option<Line>, LineError> {
        if let Some(line) = self.decode(buf)? {
            return Ok(Some(line));
        }
        if buf.is_empty() {
            return Ok(None);
        }
        // decode() returned None with bytes left: they are a partial line under the limit.
        let mut bytes = buf.split();
        self.scanned = 0;
        if bytes.last() == Some(&b'\r') {
            bytes.truncate(bytes.len() - 1);
        }
        Ok(Some(Line {
            bytes,
            truncated: false,
        }))
    }

    fn over_limit(&mut self, buf: &mut BytesMut) -> Result<Option<Line>, LineError> {
        self.discarding = true;
        self.scanned = 0;
        match self.over_long {
            OverLong::Error => {
                // Keep nothing of the line; decode() skips to its end as more arrives.
                let newline = buf.iter().position(|b| *b == b'\n');
                match newline {
                    Some(end) => {
                        let _ = buf.split_to(end + 1);
                        self.discarding = false;
                    }
                    None => buf.clear(),
                }
                Err(LineError::TooLong {
                    limit: self.max_len,
                })
            }
            OverLong::Truncate => {
                let bytes = buf.split_to(self.max_len);
                if buf.first() == Some(&b'\n') {
                    let _ = buf.split_to(1);
                    self.discarding = false;
                }
                Ok(Some(Line {
                    bytes,
                    truncated: true,
                }))
            }
        }
    }
}

/// Whether `json` holds a byte that must not appear inside a line (`\n` or `\r`).
///
/// JSON forbids both inside strings, so they can only be whitespace between tokens. (U+0085,
/// U+2028 and U+2029 end a line for some readers too: see [`is_line_safe`].)
pub fn needs_compacting(json: &str) -> bool {
    json.bytes().any(|b| b == b'\n' || b == b'\r')
}

/// Removes the whitespace between the tokens of a valid JSON text, keeping everything else
/// (key order, number spelling, string escapes) exactly as written.
///
/// The input must be valid JSON, e.g. the text of a [`RawValue`].
pub fn compact_json(json: &str) -> String {
    let mut out = String::with_capacity(json.len());
    let mut in_string = false;
    let mut escaped = false;
    for c in json.chars() {
        if in_string {
            out.push(c);
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
        } else if c == '"' {
            in_string = true;
            out.push(c);
        } else if !matches!(c, ' ' | '\t' | '\n' | '\r') {
            out.push(c);
        }
    }
    out
}

/// Makes raw JSON safe to embed in a line: returns it unchanged when it holds no line break
/// ([`is_line_safe`]), otherwise compacted, with U+0085, U+2028 and U+2029 escaped.
///
/// The `write_*` functions of this crate need no such preparation: they make whatever they
/// embed line-safe themselves ([`LineFormatter`]).
pub fn line_safe(raw: Box<RawValue>) -> Box<RawValue> {
    if is_line_safe(raw.get()) {
        return raw;
    }
    let mut safe = Vec::with_capacity(raw.get().len() + 16);
    // Writing to a Vec cannot fail.
    let _ = write_line_safe(&mut safe, &compact_json(raw.get()));
    // The rewrite keeps valid JSON valid (and UTF-8 UTF-8); fall back should that ever fail.
    match String::from_utf8(safe).map(RawValue::from_string) {
        Ok(Ok(safe)) => safe,
        _ => raw,
    }
}

/// Whether `text` holds nothing that ends a line for a common reader: no `\n`, `\r`, U+0085,
/// U+2028 or U+2029.
pub fn is_line_safe(text: &str) -> bool {
    !has_break(text.as_bytes())
}

/// A [`serde_json::ser::Formatter`] that writes compact JSON on one line for every common
/// reader: no `\n`, `\r`, U+0085, U+2028 or U+2029, whatever the value holds, raw JSON
/// ([`RawValue`]) included.
///
/// serde_json already escapes `\n` and `\r` inside strings; this formatter also writes U+0085,
/// U+2028 and U+2029 inside strings as `\u0085`, `\u2028`, `\u2029`, and drops `\n` and `\r`
/// that raw JSON holds as whitespace between tokens. Both rewrites give equivalent JSON, which
/// parses to the same value. Text that needs neither (nearly all of it) is checked by a fast
/// scan and written as it is.
#[derive(Clone, Copy, Debug, Default)]
pub struct LineFormatter;

impl serde_json::ser::Formatter for LineFormatter {
    #[inline]
    fn write_string_fragment<W: ?Sized + io::Write>(
        &mut self,
        writer: &mut W,
        fragment: &str,
    ) -> io::Result<()> {
        write_line_safe(writer, fragment)
    }

    #[inline]
    fn write_raw_fragment<W: ?Sized + io::Write>(
        &mut self,
        writer: &mut W,
        fragment: &str,
    ) -> io::Result<()> {
        write_line_safe(writer, fragment)
    }
}

/// Serializes `value` as compact JSON on one line for every common reader (no `\n` at the end),
/// appending to `buf`; the same bytes as [`LineFormatter`] writes. On error nothing is appended.
///
/// Nearly every value needs no rewrite, so it is first written by serde_json's own compact
/// formatter and the result scanned once; only when that finds a line break is it written
/// again, with [`LineFormatter`]. One scan of the whole message costs less than one check of
/// each of its strings.
pub fn write_json_line_safe<T: serde::Serialize + ?Sized>(
    buf: &mut Vec<u8>,
    value: &T,
) -> serde_json::Result<()> {
    let start = buf.len();
    let written = serde_json::to_writer(&mut *buf, value);
    if written.is_ok() && !has_break(&buf[start..]) {
        return Ok(());
    }
    buf.truncate(start);
    written?;
    let mut serializer = serde_json::Serializer::with_formatter(&mut *buf, LineFormatter);
    value.serialize(&mut serializer).inspect_err(|_| {
        buf.truncate(start);
    })
}

/// Whether `bytes` holds a line break; two passes at most: the first, the cheapest, is all
/// that most text needs.
#[inline]
fn has_break(bytes: &[u8]) -> bool {
    any_suspect(bytes) && any_break(bytes)
}

/// Writes a piece of JSON text (a string's unescaped run, or raw JSON) without line breaks:
/// `\n` and `\r` are left out (in valid JSON they can only be whitespace between tokens) and
/// U+0085, U+2028 and U+2029 (in valid JSON only inside strings) are written as escapes.
#[inline]
fn write_line_safe<W: ?Sized + io::Write>(writer: &mut W, text: &str) -> io::Result<()> {
    let bytes = text.as_bytes();
    if !has_break(bytes) {
        return writer.write_all(bytes);
    }
    write_breaks_escaped(writer, bytes)
}

/// The slow path of [`write_line_safe`], for text with a line break.
#[cold]
#[inline(never)]
fn write_breaks_escaped<W: ?Sized + io::Write>(writer: &mut W, bytes: &[u8]) -> io::Result<()> {
    let mut from = 0;
    while let Some((at, len)) = next_break(bytes, from) {
        writer.write_all(&bytes[from..at])?;
        match len {
            1 => {} // \n or \r between tokens: left out
            2 => writer.write_all(b"\\u0085")?,
            _ if bytes[at + 2] == 0xA8 => writer.write_all(b"\\u2028")?,
            _ => writer.write_all(b"\\u2029")?,
        }
        from = at + len;
    }
    writer.write_all(&bytes[from..])
}

/// Whether any byte of `bytes` is [`suspect`]: one pass without a branch per byte, which the
/// compiler vectorizes.
#[inline]
fn any_suspect(bytes: &[u8]) -> bool {
    bytes.iter().fold(0u8, |any, &b| any | u8::from(suspect(b))) != 0
}

/// Whether `bytes` holds a line break: `\n`, `\r`, U+0085 (C2 85), U+2028 (E2 80 A8) or U+2029
/// (E2 80 A9). One pass over every position with the two bytes after it, without a branch per
/// byte, which the compiler vectorizes: for text with characters that share the lead bytes of
/// the breaks (curly quotes, dashes, accented letters), as the scan for [`suspect`] bytes
/// cannot tell them apart.
#[inline]
fn any_break(bytes: &[u8]) -> bool {
    #[inline(always)]
    fn at(x: u8, y: u8, z: u8) -> u8 {
        u8::from(
            (x == b'\n')
                | (x == b'\r')
                | ((x == 0xC2) & (y == 0x85))
                | ((x == 0xE2) & (y == 0x80) & ((z & 0xFE) == 0xA8)),
        )
    }
    let n = bytes.len();
    if n < 3 {
        return bytes.iter().any(|&b| b == b'\n' || b == b'\r') || bytes == [0xC2, 0x85];
    }
    let body = bytes[..n - 2]
        .iter()
        .zip(&bytes[1..n - 1])
        .zip(&bytes[2..])
        .fold(0u8, |any, ((&x, &y), &z)| any | at(x, y, z));
    // The last two positions: a single byte, or U+0085 at the very end.
    (body | at(bytes[n - 2], bytes[n - 1], 0) | at(bytes[n - 1], 0, 0)) != 0
}

/// Whether `b` may start a line break: `\n`, `\r`, or 0xC2 or 0xE2, the lead bytes of U+0085
/// (C2 85) and of U+2028 and U+2029 (E2 80 A8, E2 80 A9). 0xC2 and 0xE2 differ in bit 5 only.
#[inline(always)]
fn suspect(b: u8) -> bool {
    (b == b'\n') | (b == b'\r') | ((b & 0xDF) == 0xC2)
}

/// The first line break in `bytes` at or after `from`: its position and its length in bytes
/// (1 for `\n` and `\r`, 2 for U+0085, 3 for U+2028 and U+2029).
#[inline]
fn next_break(bytes: &[u8], mut from: usize) -> Option<(usize, usize)> {
    const BLOCK: usize = 32;
    loop {
        let rest = bytes.get(from..)?;
        // Whole blocks without a branch per byte (the compiler vectorizes the fold), then the
        // exact place in the block that has a suspect byte.
        let mut blocks = rest.chunks_exact(BLOCK);
        let mut base = from;
        let mut hit = None;
        for block in &mut blocks {
            if block.iter().fold(0u8, |any, &b| any | u8::from(suspect(b))) != 0 {
                hit = block.iter().position(|&b| suspect(b)).map(|i| base + i);
                break;
            }
            base += BLOCK;
        }
        if hit.is_none() {
            hit = blocks
                .remainder()
                .iter()
                .position(|&b| suspect(b))
                .map(|i| base + i);
        }
        let at = hit?;
        match bytes[at] {
            b'\n' | b'\r' => return Some((at, 1)),
            0xC2 if bytes.get(at + 1) == Some(&0x85) => return Some((at, 2)),
            0xE2 if bytes.get(at + 1) == Some(&0x80)
                && matches!(bytes.get(at + 2), Some(0xA8 | 0xA9)) =>
            {
                return Some((at, 3));
            }
            // Another character with that lead byte (é, €, ’, ...): go on after it.
            _ => from = at + 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(
        decoder: &mut LineDecoder,
        buf: &mut BytesMut,
    ) -> Vec<Result<(String, bool), LineError>> {
        let mut out = Vec::new();
        loop {
            match decoder.decode(buf) {
                Ok(Some(line)) => out.push(Ok((
                    String::from_utf8_lossy(&line.bytes).into_owned(),
                    line.truncated,
                ))),
                Ok(None) => return out,
                Err(e) => out.push(Err(e)),
            }
        }
    }

    fn ok(s: &str) -> Result<(String, bool), LineError> {
        Ok((s.to_owned(), false))
    }

    #[test]
    fn splits_complete_lines_and_strips_cr() {
        let mut d = LineDecoder::new(64, OverLong::Error);
        let mut buf = BytesMut::from(&b"{\"a\":1}\n{\"b\":2}\r\n\n"[..]);
        assert_eq!(
            lines(&mut d, &mut buf),
            vec![ok("{\"a\":1}"), ok("{\"b\":2}"), ok("")]
        );
        assert!(buf.is_empty());
    }

    #[test]
    fn waits_for_the_rest_of_a_partial_line() {
        let mut d = LineDecoder::new(64, OverLong::Error);
        let mut buf = BytesMut::from(&b"{\"jsonrpc\":"[..]);
        assert_eq!(lines(&mut d, &mut buf), vec![]);
        assert_eq!(&buf[..], b"{\"jsonrpc\":", "partial bytes are kept");
        buf.extend_from_slice(b"\"2.0\"}\n{\"x\"");
        assert_eq!(lines(&mut d, &mut buf), vec![ok("{\"jsonrpc\":\"2.0\"}")]);
        buf.extend_from_slice(b":1}\n");
        assert_eq!(lines(&mut d, &mut buf), vec![ok("{\"x\":1}")]);
    }

    #[test]
    fn byte_by_byte_feeding_gives_the_same_lines() {
        let input = b"one\ntwo\r\nthree\n";
        let mut d = LineDecoder::new(8, OverLong::Error);
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        for b in input {
            buf.extend_from_slice(&[*b]);
            got.extend(lines(&mut d, &mut buf));
        }
        assert_eq!(got, vec![ok("one"), ok("two"), ok("three")]);
    }

    #[test]
    fn a_line_of_exactly_the_limit_passes() {
        let mut d = LineDecoder::new(4, OverLong::Error);
        let mut buf = BytesMut::from(&b"abcd\n"[..]);
        assert_eq!(lines(&mut d, &mut buf), vec![ok("abcd")]);
    }

    #[test]
    fn an_over_long_line_is_reported_once_and_skipped() {
        let mut d = LineDecoder::new(4, OverLong::Error);
        let mut buf = BytesMut::from(&b"abcdefgh"[..]);
        assert_eq!(
            lines(&mut d, &mut buf),
            vec![Err(LineError::TooLong { limit: 4 })]
        );
        assert!(buf.is_empty(), "nothing of the long line is kept");
        buf.extend_from_slice(b"ijklmnop");
        assert_eq!(
            lines(&mut d, &mut buf),
            vec![],
            "its continuation is skipped silently"
        );
        assert!(buf.is_empty());
        buf.extend_from_slice(b"qr\nok\n");
        assert_eq!(
            lines(&mut d, &mut buf),
            vec![ok("ok")],
            "the next line is intact"
        );
    }

    #[test]
    fn an_over_long_line_with_its_newline_in_one_chunk() {
        let mut d = LineDecoder::new(3, OverLong::Error);
        let mut buf = BytesMut::from(&b"abcdef\nxy\n"[..]);
        assert_eq!(
            lines(&mut d, &mut buf),
            vec![Err(LineError::TooLong { limit: 3 }), ok("xy")]
        );
    }

    #[test]
    fn memory_stays_bounded_under_a_flood() {
        let mut d = LineDecoder::new(1024, OverLong::Error);
        let mut buf = BytesMut::new();
        let chunk = vec![b'x'; 8192];
        let mut errors = 0;
        for _ in 0..1000 {
            buf.extend_from_slice(&chunk);
            for r in lines(&mut d, &mut buf) {
                assert!(r.is_err());
                errors += 1;
            }
            assert!(buf.len() <= 1024, "buffer holds {} bytes", buf.len());
        }
        assert_eq!(errors, 1, "one report per over-long line");
    }

    #[test]
    fn truncate_mode_cuts_and_resumes() {
        let mut d = LineDecoder::new(4, OverLong::Truncate);
        let mut buf = BytesMut::from(&b"abcdefgh"[..]);
        assert_eq!(lines(&mut d, &mut buf), vec![Ok(("abcd".to_owned(), true))]);
        buf.extend_from_slice(b"ij\nnext\n");
        assert_eq!(lines(&mut d, &mut buf), vec![ok("next")]);
        let mut buf = BytesMut::from(&b"wxyz\nab\n"[..]);
        assert_eq!(lines(&mut d, &mut buf), vec![ok("wxyz"), ok("ab")]);
        let mut buf = BytesMut::from(&b"vwxyz\nab\n"[..]);
        assert_eq!(
            lines(&mut d, &mut buf),
            vec![Ok(("vwxy".to_owned(), true)), ok("ab")]
        );
    }

    #[test]
    fn truncate_at_exact_boundary_followed_by_newline() {
        let mut d = LineDecoder::new(4, OverLong::Truncate);
        let mut buf = BytesMut::from(&b"abcde"[..]);
        assert_eq!(lines(&mut d, &mut buf), vec![Ok(("abcd".to_owned(), true))]);
        buf.extend_from_slice(b"\nnext\n");
        assert_eq!(lines(&mut d, &mut buf), vec![ok("next")]);
    }

    #[test]
    fn eof_returns_a_final_unterminated_line() {
        let mut d = LineDecoder::new(64, OverLong::Error);
        let mut buf = BytesMut::from(&b"a\nlast"[..]);
        assert_eq!(
            d.decode_eof(&mut buf),
            Ok(Some(Line {
                bytes: "a".into(),
                truncated: false
            }))
        );
        assert_eq!(
            d.decode_eof(&mut buf),
            Ok(Some(Line {
                bytes: "last".into(),
                truncated: false
            }))
        );
        assert_eq!(d.decode_eof(&mut buf), Ok(None));
    }

    #[test]
    fn eof_in_the_middle_of_a_skipped_line_returns_nothing() {
        let mut d = LineDecoder::new(2, OverLong::Error);
        let mut buf = BytesMut::from(&b"abcdef"[..]);
        assert_eq!(d.decode_eof(&mut buf), Err(LineError::TooLong { limit: 2 }));
        buf.extend_from_slice(b"gh");
        assert_eq!(d.decode_eof(&mut buf), Ok(None));
    }

    #[test]
    fn compacting_keeps_strings_intact() {
        let pretty = "{\n  \"a b\": [1, 2.50,\t\"x \\\" y\\n\"],\r\n  \"c\": {}\n}";
        assert_eq!(
            compact_json(pretty),
            r#"{"a b":[1,2.50,"x \" y\n"],"c":{}}"#
        );
        assert!(needs_compacting(pretty));
        let raw = RawValue::from_string(pretty.to_owned()).expect("valid");
        let safe = line_safe(raw);
        assert_eq!(safe.get(), r#"{"a b":[1,2.50,"x \" y\n"],"c":{}}"#);
        let raw = RawValue::from_string("{ \"k\" : 1 }".to_owned()).expect("valid");
        assert_eq!(
            line_safe(raw).get(),
            "{ \"k\" : 1 }",
            "no line break: left as is"
        );
    }

    fn formatted<T: serde::Serialize + ?Sized>(value: &T) -> String {
        let mut buf = Vec::new();
        write_json_line_safe(&mut buf, value).expect("serializes");
        String::from_utf8(buf).expect("UTF-8")
    }

    #[test]
    fn line_separators_in_strings_are_escaped() {
        let value = serde_json::json!({"a\u{2028}b": ["x\u{2029}y", "\u{85}", "\r\n"]});
        let text = formatted(&value);
        assert_eq!(
            text, r#"{"a\u2028b":["x\u2029y","\u0085","\r\n"]}"#,
            "escaped, and the rest as serde_json writes it"
        );
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&text).expect("valid"),
            value
        );
    }

    #[test]
    fn raw_json_loses_its_line_breaks_and_keeps_its_value() {
        let text = "{\r\n \"k\u{2028}\" :\r[1,\n\t2, \"\u{85}\u{2029}\"]\r}";
        let raw = RawValue::from_string(text.to_owned()).expect("valid JSON");
        let line = formatted(&*raw);
        assert_eq!(line, "{ \"k\\u2028\" :[1,\t2, \"\\u0085\\u2029\"]}");
        let parsed: serde_json::Value = serde_json::from_str(&line).expect("valid");
        assert_eq!(
            parsed,
            serde_json::from_str::<serde_json::Value>(text).expect("valid")
        );
    }

    #[test]
    fn other_characters_with_the_same_lead_bytes_are_left_alone() {
        // C2 xx and E2 xx xx that are not U+0085, U+2028 or U+2029: U+00A2 U+00B0 U+0080 U+0084
        // U+0086 (C2), U+20AC U+2019 U+2014 U+2027 U+202A U+2100 (E2).
        let text = "\u{a2}\u{b0}\u{80}\u{84}\u{86}\u{20ac}\u{2019}\u{2014}\u{2027}\u{202a}\u{2100}";
        assert!(is_line_safe(text));
        assert_eq!(formatted(text), format!("\"{text}\""));
        // Long enough for the block scan, with the break in the last block and the remainder.
        for at in [0, 31, 32, 33, 63, 64, 65, 70] {
            let mut long = "a".repeat(80);
            long.insert(at, '\u{2028}');
            assert!(!is_line_safe(&long), "found at {at}");
            assert!(formatted(&long).contains("\\u2028"));
        }
    }

    #[test]
    fn text_without_breaks_is_written_as_serde_json_writes_it() {
        let value = serde_json::json!({"name": "Ada \u{e9}\u{2019}", "n": [1, -2.5, null, true]});
        assert_eq!(
            formatted(&value),
            serde_json::to_string(&value).expect("serializes")
        );
    }

    #[test]
    fn line_safe_escapes_separators_too() {
        let raw = RawValue::from_string("[\"\u{2028}\"]".to_owned()).expect("valid");
        assert_eq!(line_safe(raw).get(), r#"["\u2028"]"#);
    }

    #[test]
    fn compacting_handles_escaped_backslash_before_quote() {
        let json = "[\"a\\\\\", \n \"b\"]";
        assert_eq!(compact_json(json), r#"["a\\","b"]"#);
    }
}
