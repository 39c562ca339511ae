//! The HTTP request a function is invoked with: [`HttpRequest`], what the HTTP server hands
//! the supervisor for `/run/NAME...`, and [`HttpInvoke`], that request with its body read as
//! the invoke's `input` (the rules are in docs/protocol.md, "HTTP requests").
//!
//! The HTTP server fills an [`HttpRequest`] (method, the path after `/run/NAME`, the raw
//! query, the headers through [`HttpRequest::add_header`] less those carrying shs's API key,
//! the raw body, the client's address) and calls [`HttpRequest::into_invoke`]: a body whose
//! `Content-Type` says JSON and that does not parse is a [`BodyError`] (answered 400), anything
//! else is an [`HttpInvoke`] for [`crate::Supervisor::invoke_http`]. An rpc function gets it
//! as the `http` member of `invoke`'s params ([`HttpInvoke::wire`]); an exec function gets the
//! body on stdin; a cgi function the request as CGI meta-variables and the body on stdin
//! ([`crate::cgi`]).

use std::collections::BTreeMap;

use base64::Engine as _;
use bytes::Bytes;
use serde::Serialize;
use serde_json::value::RawValue;
use shs_protocol::codec::line_safe;

/// An HTTP request to a function, as the HTTP server received it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HttpRequest {
    /// The method, upper-case (`GET`, `POST`, ...). A `HEAD` request is passed as `GET` (its
    /// answer's body is dropped by the server).
    pub method: String,
    /// The path after `/run/NAME`, as the client sent it (percent-encoding kept); `/` when
    /// there is none.
    pub path: String,
    /// The raw query string, without `?`; empty when there is none.
    pub query: String,
    /// The headers: names lower-case, a repeated header's values joined with `", "` (in the
    /// order they came). The headers carrying shs's API key are left out by the server.
    pub headers: BTreeMap<String, String>,
    /// The body, byte for byte.
    pub body: Bytes,
    /// The client's IP address, when known.
    pub remote_addr: Option<String>,
    /// The server's side of the connection, when known (`SERVER_PORT` of a CGI script).
    pub local_addr: Option<std::net::SocketAddr>,
    /// The HTTP version, e.g. `HTTP/1.1` (`SERVER_PROTOCOL`); empty when unknown.
    pub version: &'static str,
}

/// Why a request's body cannot be an invoke's input (answered 400).
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// The `Content-Type` says JSON and the body does not parse.
    #[error("the request body is not valid JSON (its Content-Type is {content_type}): {detail}")]
    NotJson {
        /// The request's media type.
        content_type: String,
        /// What the parser said.
        detail: String,
    },
    /// The body is JSON nested too deeply for functions to parse.
    #[error("the request body is refused: {0}")]
    Refused(String),
}

/// An [`HttpRequest`] with its body read as the invoke's `input`.
#[derive(Debug)]
pub struct HttpInvoke {
    input: Box<RawValue>,
    body_is_json: bool,
    request: HttpRequest,
}

impl HttpRequest {
    /// Adds a header as functions see it: the name lower-cased, and a value for a name already
    /// there appended after `", "`.
    pub fn add_header(&mut self, name: &str, value: &str) {
        let name = name.to_ascii_lowercase();
        match self.headers.get_mut(&name) {
            Some(joined) => {
                joined.push_str(", ");
                joined.push_str(value);
            }
            None => {
                self.headers.insert(name, value.to_owned());
            }
        }
    }

    /// The value of header `name` (lower-case), as functions see it.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }

    /// The media type of the body, lower-case, without parameters; `None` without a
    /// `Content-Type`.
    pub fn media_type(&self) -> Option<String> {
        self.media_type_raw().map(str::to_ascii_lowercase)
    }

    /// The media type as sent (any case), without parameters.
    fn media_type_raw(&self) -> Option<&str> {
        self.header("content-type")
            .map(|v| v.split(';').next().unwrap_or_default().trim())
    }

    /// Reads the body as the invoke's `input`: parsed JSON when the `Content-Type` says JSON
    /// (`application/json`, `*/*+json`), or when there is none and the body parses (so does a
    /// JSON object or array sent as `application/x-www-form-urlencoded`, which is what
    /// `curl -d` sends); `{}` for an empty body; otherwise `null`.
    ///
    /// # Errors
    /// A body whose `Content-Type` says JSON and that does not parse, and JSON nested deeper
    /// than [`shs_protocol::depth::MAX_DEPTH`].
    pub fn into_invoke(self) -> Result<HttpInvoke, BodyError> {
        let blank = self.body.iter().all(u8::is_ascii_whitespace);
        // Lower-cased only when it is not already (`application/json` as most clients send it).
        let media: Option<std::borrow::Cow<'_, str>> = self.media_type_raw().map(|m| {
            if m.bytes().any(|b| b.is_ascii_uppercase()) {
                std::borrow::Cow::Owned(m.to_ascii_lowercase())
            } else {
                std::borrow::Cow::Borrowed(m)
            }
        });
        let parsed = if blank {
            None
        } else {
            match media.as_deref() {
                Some(m) if is_json_type(m) => Some(
                    serde_json::from_slice::<Box<RawValue>>(&self.body).map_err(|e| {
                        BodyError::NotJson {
                            content_type: m.to_owned(),
                            detail: e.to_string(),
                        }
                    })?,
                ),
                None => sniff(&self.body)?,
                Some("application/x-www-form-urlencoded") => {
                    sniff(&self.body)?.filter(|raw| raw.get().starts_with(['{', '[']))
                }
                Some(_) => None,
            }
        };
        let (input, body_is_json) = match parsed {
            Some(raw) => {
                shs_protocol::depth::check(raw.get())
                    .map_err(|e| BodyError::Refused(e.to_string()))?;
                (raw, true)
            }
            None if blank => (literal("{}"), false),
            None => (literal("null"), false),
        };
        Ok(HttpInvoke {
            input,
            body_is_json,
            request: self,
        })
    }
}

impl HttpRequest {
    /// The request as it is, for a cgi function: its body is never parsed (`input` is
    /// `null`, the raw body goes to the script).
    pub fn into_raw_invoke(self) -> HttpInvoke {
        HttpInvoke {
            input: literal("null"),
            body_is_json: false,
            request: self,
        }
    }
}

/// Whether `media` (lower-case, no parameters) is JSON: `application/json` or `*/*+json`.
pub fn is_json_type(media: &str) -> bool {
    media == "application/json" || (media.ends_with("+json") && media.contains('/'))
}

/// The body as JSON if it parses; JSON too deep for serde_json is refused rather than taken
/// for something else.
fn sniff(body: &[u8]) -> Result<Option<Box<RawValue>>, BodyError> {
    match serde_json::from_slice::<Box<RawValue>>(body) {
        Ok(raw) => Ok(Some(raw)),
        Err(e) if e.to_string().starts_with("recursion limit exceeded") => {
            Err(BodyError::Refused(format!(
                "JSON nested deeper than {} levels",
                shs_protocol::depth::MAX_DEPTH
            )))
        }
        Err(_) => Ok(None),
    }
}

fn literal(json: &str) -> Box<RawValue> {
    // Both literals are valid JSON; `RawValue::NULL` is the fallback that cannot fail.
    RawValue::from_string(json.to_owned()).unwrap_or_else(|_| RawValue::NULL.to_owned())
}

/// The `http` member of `invoke`'s params.
#[derive(Serialize)]
struct Wire<'a> {
    method: &'a str,
    path: &'a str,
    query: &'a str,
    headers: &'a BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    body: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    body_base64: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    remote_addr: Option<&'a str>,
}

impl HttpInvoke {
    /// The `input`: the body as JSON, `{}` for an empty body, else `null`.
    pub fn input(&self) -> &RawValue {
        &self.input
    }

    /// Whether `input` was parsed from the body (then the raw body is sent only to functions
    /// that ask for it).
    pub fn body_is_json(&self) -> bool {
        self.body_is_json
    }

    /// The request.
    pub fn request(&self) -> &HttpRequest {
        &self.request
    }

    /// The input and the request, taken apart.
    pub fn into_parts(self) -> (Box<RawValue>, HttpRequest) {
        (self.input, self.request)
    }

    /// The `http` member of `invoke`'s params, line-safe: the raw body as `body` when it is
    /// UTF-8, else `body_base64`; left out for a JSON body unless `raw_body`.
    pub fn wire(&self, raw_body: bool) -> Box<RawValue> {
        let request = &self.request;
        let send_body = raw_body || !self.body_is_json;
        let text = if send_body {
            std::str::from_utf8(&request.body).ok()
        } else {
            None
        };
        let wire = Wire {
            method: &request.method,
            path: &request.path,
            query: &request.query,
            headers: &request.headers,
            body: text,
            body_base64: (send_body && text.is_none())
                .then(|| base64::engine::general_purpose::STANDARD.encode(&request.body)),
            remote_addr: request.remote_addr.as_deref(),
        };
        // Sized for the usual request at once (no regrowth while serializing).
        let mut text = Vec::with_capacity(
            128 + request.path.len()
                + request.query.len()
                + request
                    .headers
                    .iter()
                    .map(|(k, v)| k.len() + v.len() + 6)
                    .sum::<usize>()
                + wire.body.map_or(0, str::len)
                + wire.body_base64.as_ref().map_or(0, String::len),
        );
        let raw = serde_json::to_writer(&mut text, &wire)
            .ok()
            .and_then(|()| String::from_utf8(text).ok())
            .and_then(|text| RawValue::from_string(text).ok());
        match raw {
            Some(raw) => line_safe(raw),
            // Strings and a map of strings always serialize.
            None => RawValue::NULL.to_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    fn request(content_type: Option<&str>, body: &[u8]) -> HttpRequest {
        let mut r = HttpRequest {
            method: "POST".into(),
            path: "/".into(),
            body: Bytes::copy_from_slice(body),
            ..HttpRequest::default()
        };
        if let Some(ct) = content_type {
            r.add_header("Content-Type", ct);
        }
        r
    }

    fn input(content_type: Option<&str>, body: &[u8]) -> (String, bool) {
        let invoke = request(content_type, body).into_invoke().expect("an input");
        (invoke.input().get().to_owned(), invoke.body_is_json())
    }

    #[test]
    fn input_follows_the_content_type() {
        let json = br#"{"a": 1}"#;
        assert_eq!(
            input(Some("application/json"), json),
            (r#"{"a": 1}"#.into(), true)
        );
        assert!(input(Some("Application/JSON; charset=utf-8"), json).1);
        assert!(input(Some("application/vnd.api+json"), json).1);
        assert_eq!(input(None, json), (r#"{"a": 1}"#.into(), true));
        assert_eq!(input(None, b"a=1"), ("null".into(), false));
        assert_eq!(input(Some("text/plain"), json), ("null".into(), false));
        assert_eq!(
            input(Some("application/x-www-form-urlencoded"), b"a=1&b=2"),
            ("null".into(), false)
        );
        // What `curl -d '{...}'` sends.
        assert!(input(Some("application/x-www-form-urlencoded"), json).1);
        assert_eq!(
            input(Some("application/x-www-form-urlencoded"), b"12"),
            ("null".into(), false)
        );
        for ct in [None, Some("application/json"), Some("text/plain")] {
            assert_eq!(input(ct, b""), ("{}".into(), false));
            assert_eq!(input(ct, b" \n"), ("{}".into(), false));
        }
    }

    #[test]
    fn a_json_content_type_that_does_not_parse_is_an_error() {
        let error = request(Some("application/json"), b"{nope")
            .into_invoke()
            .expect_err("not JSON");
        assert!(error.to_string().contains("application/json"), "{error}");
        let deep = format!("{}{}", "[".repeat(300), "]".repeat(300));
        assert!(matches!(
            request(None, deep.as_bytes()).into_invoke(),
            Err(BodyError::Refused(_))
        ));
    }

    #[test]
    fn repeated_headers_are_joined_under_a_lower_case_name() {
        let mut r = HttpRequest::default();
        r.add_header("X-Thing", "v1");
        r.add_header("x-thing", "v2");
        assert_eq!(r.header("x-thing"), Some("v1, v2"));
    }

    #[test]
    fn the_wire_form_has_the_raw_body_unless_it_is_json() {
        let wire = |ct, body: &[u8], raw| -> Value {
            let invoke = request(ct, body).into_invoke().expect("input");
            serde_json::from_str(invoke.wire(raw).get()).expect("JSON")
        };
        let form = wire(Some("application/x-www-form-urlencoded"), b"a=1", false);
        assert_eq!(form["body"], json!("a=1"));
        assert_eq!(form["method"], json!("POST"));
        assert!(form.get("body_base64").is_none());
        let bytes = wire(Some("application/octet-stream"), &[0xff, 0, 1], false);
        assert_eq!(bytes["body_base64"], json!("/wAB"));
        assert!(bytes.get("body").is_none());
        let json = wire(Some("application/json"), b"{\"a\":1}", false);
        assert!(json.get("body").is_none() && json.get("body_base64").is_none());
        let json = wire(Some("application/json"), b"{\"a\":1}", true);
        assert_eq!(json["body"], json!("{\"a\":1}"));
    }

    #[test]
    fn the_wire_form_is_one_line() {
        let invoke = request(Some("text/plain"), "a\u{2028}b\r\n".as_bytes())
            .into_invoke()
            .expect("input");
        let wire = invoke.wire(false);
        assert!(
            shs_protocol::codec::is_line_safe(wire.get()),
            "{}",
            wire.get()
        );
        let back: Value = serde_json::from_str(wire.get()).expect("JSON");
        assert_eq!(back["body"], json!("a\u{2028}b\r\n"));
    }
}
