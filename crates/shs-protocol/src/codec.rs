//! Newline-delimited framing.
//!
//! [`LineDecoder`] cuts a byte stream into lines. It never holds more than `max_len` bytes of
//! one line: a longer line is reported once ([`LineError::TooLong`]) or cut
//! ([`OverLong::Truncate`]), and the rest of it is skipped as it arrives, up to the next `\n`.
//! That bound is what keeps a function that floods its stdout from costing the supervisor
//! memory.

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
/// JSON forbids both inside strings, so they can only be whitespace between tokens.
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

/// Makes raw JSON safe to embed in a line: returns it unchanged when it holds no line break,
/// compacted otherwise.
pub fn line_safe(raw: Box<RawValue>) -> Box<RawValue> {
    if !needs_compacting(raw.get()) {
        return raw;
    }
    let compact = compact_json(raw.get());
    // Compacting valid JSON yields valid JSON; fall back to the original should that ever fail.
    RawValue::from_string(compact).unwrap_or(raw)
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

    #[test]
    fn compacting_handles_escaped_backslash_before_quote() {
        let json = "[\"a\\\\\", \n \"b\"]";
        assert_eq!(compact_json(json), r#"["a\\","b"]"#);
    }
}
