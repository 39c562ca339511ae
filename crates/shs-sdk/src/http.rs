//! HTTP functions: the request an invoke came with ([`Request`], from [`crate::Context::http`]),
//! an answer that is more than JSON ([`Response`]), and server-sent events ([`sse_event`]).
//! Streaming is on the context: [`crate::Context::stream`], [`crate::Context::sse`].

use std::collections::BTreeMap;

use base64::Engine as _;
use serde::Deserialize;
use serde::ser::{Serialize, SerializeMap, Serializer};

/// The HTTP request of an invoke made over `/run/NAME...`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Request {
    /// The method (`GET`, `POST`, ...); a HEAD request arrives as `GET`.
    pub method: String,
    /// The path after `/run/NAME`, as sent; `/` when there is none.
    pub path: String,
    /// The raw query string, without `?`.
    pub query: String,
    /// The headers: lower-case names, repeated values joined with `", "`.
    pub headers: BTreeMap<String, String>,
    /// The raw body (empty for a JSON body unless the function asked for `raw_body`).
    pub body: Vec<u8>,
    /// The client's IP address.
    pub remote_addr: Option<String>,
}

#[derive(Deserialize)]
struct Wire {
    #[serde(default)]
    method: String,
    #[serde(default)]
    path: String,
    #[serde(default)]
    query: String,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    #[serde(default)]
    body: Option<String>,
    #[serde(default)]
    body_base64: Option<String>,
    #[serde(default)]
    remote_addr: Option<String>,
}

impl Request {
    /// Reads the `http` member of `invoke`'s params; `None` when it is malformed.
    pub(crate) fn from_json(json: &str) -> Option<Request> {
        let wire: Wire = serde_json::from_str(json).ok()?;
        let body = match (wire.body, wire.body_base64) {
            (_, Some(encoded)) => base64::engine::general_purpose::STANDARD
                .decode(encoded.as_bytes())
                .ok()?,
            (Some(text), None) => text.into_bytes(),
            (None, None) => Vec::new(),
        };
        Some(Request {
            method: wire.method,
            path: wire.path,
            query: wire.query,
            headers: wire.headers,
            body,
            remote_addr: wire.remote_addr,
        })
    }

    /// A header's value, by name in any case.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(&name.to_ascii_lowercase())
            .map(String::as_str)
    }

    /// The body as text, when it is UTF-8.
    pub fn text(&self) -> Option<&str> {
        std::str::from_utf8(&self.body).ok()
    }

    /// The query's parameters, decoded, in order (repeated names repeated).
    pub fn args(&self) -> Vec<(String, String)> {
        parse_urlencoded(&self.query)
    }

    /// The fields of an `application/x-www-form-urlencoded` body, decoded, in order; empty
    /// for any other body.
    pub fn form(&self) -> Vec<(String, String)> {
        let media = self
            .header("content-type")
            .unwrap_or_default()
            .split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase();
        if media != "application/x-www-form-urlencoded" {
            return Vec::new();
        }
        self.text().map(parse_urlencoded).unwrap_or_default()
    }
}

/// `a=1&b=two+words&c=%C3%A9` as pairs: `+` is a space, `%XX` a byte (invalid UTF-8 replaced).
fn parse_urlencoded(text: &str) -> Vec<(String, String)> {
    text.split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            (decode_component(name), decode_component(value))
        })
        .collect()
}

fn decode_component(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    Some(byte) => {
                        out.push(byte);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            other => out.push(other),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The body of a [`Response`].
#[derive(Clone, Debug, PartialEq)]
pub enum Body {
    /// No body.
    Empty,
    /// Text (default `text/plain; charset=utf-8`).
    Text(String),
    /// Bytes (default `application/octet-stream`).
    Bytes(Vec<u8>),
}

/// An HTTP answer: return it from an invoke handler (it serializes as `{"http_response":
/// {...}}`).
#[derive(Clone, Debug, PartialEq)]
pub struct Response {
    /// The status, 100 to 599.
    pub status: u16,
    /// The headers, in order; a name given twice is sent twice (`set-cookie`).
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Body,
}

impl Response {
    /// A response with this status and no headers or body.
    pub fn new(status: u16) -> Response {
        Response {
            status,
            headers: Vec::new(),
            body: Body::Empty,
        }
    }

    /// A 200 with a text body.
    pub fn text(text: impl Into<String>) -> Response {
        Response::new(200).with_body(Body::Text(text.into()))
    }

    /// A 200 with a bytes body.
    pub fn bytes(bytes: impl Into<Vec<u8>>) -> Response {
        Response::new(200).with_body(Body::Bytes(bytes.into()))
    }

    /// A redirect (302) to `location`.
    pub fn redirect(location: impl Into<String>) -> Response {
        Response::new(302).with_header("location", location)
    }

    /// The same with another status.
    pub fn with_status(mut self, status: u16) -> Response {
        self.status = status;
        self
    }

    /// The same with one more header line.
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Response {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// The same with this body.
    pub fn with_body(mut self, body: Body) -> Response {
        self.body = body;
        self
    }
}

impl Serialize for Response {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        struct Inner<'a>(&'a Response);
        struct Headers<'a>(&'a [(String, String)]);
        impl Serialize for Headers<'_> {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                let mut grouped: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
                for (name, value) in self.0 {
                    grouped.entry(name).or_default().push(value);
                }
                let mut map = serializer.serialize_map(Some(grouped.len()))?;
                for (name, values) in grouped {
                    match values.as_slice() {
                        [one] => map.serialize_entry(name, one)?,
                        many => map.serialize_entry(name, many)?,
                    }
                }
                map.end()
            }
        }
        impl Serialize for Inner<'_> {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                let r = self.0;
                let mut map = serializer.serialize_map(None)?;
                map.serialize_entry("status", &r.status)?;
                map.serialize_entry("headers", &Headers(&r.headers))?;
                match &r.body {
                    Body::Empty => {}
                    Body::Text(text) => map.serialize_entry("body", text)?,
                    Body::Bytes(bytes) => map.serialize_entry(
                        "body_base64",
                        &base64::engine::general_purpose::STANDARD.encode(bytes),
                    )?,
                }
                map.end()
            }
        }
        let mut map = serializer.serialize_map(Some(1))?;
        map.serialize_entry("http_response", &Inner(self))?;
        map.end()
    }
}

/// One server-sent event as text: optional `event` name, then one `data:` line per line of
/// `data`, then a blank line.
pub fn sse_event(data: &str, event: Option<&str>) -> String {
    let mut text = String::with_capacity(data.len() + 16);
    if let Some(event) = event {
        text.push_str("event: ");
        text.push_str(event);
        text.push('\n');
    }
    for line in data.split('\n') {
        text.push_str("data: ");
        text.push_str(line);
        text.push('\n');
    }
    text.push('\n');
    text
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_request_is_read_with_its_form_and_bytes() {
        let r = Request::from_json(
            r#"{"method":"POST","path":"/a","query":"x=1&y=two+2&x=3","headers":{"content-type":"application/x-www-form-urlencoded"},"body":"a=1&b=two+words&c=%C3%A9&d=%zz"}"#,
        )
        .expect("valid");
        assert_eq!(
            r.header("Content-Type"),
            Some("application/x-www-form-urlencoded")
        );
        assert_eq!(
            r.args(),
            [("x", "1"), ("y", "two 2"), ("x", "3")].map(|(a, b)| (a.to_owned(), b.to_owned()))
        );
        assert_eq!(
            r.form(),
            [("a", "1"), ("b", "two words"), ("c", "é"), ("d", "%zz")]
                .map(|(a, b)| (a.to_owned(), b.to_owned()))
        );
        let blob = Request::from_json(r#"{"method":"PUT","body_base64":"AAH/"}"#).expect("valid");
        assert_eq!(blob.body, [0, 1, 255]);
        assert!(blob.form().is_empty());
    }

    #[test]
    fn a_response_serializes_as_an_http_response() {
        let r = Response::text("<p>hi</p>")
            .with_status(201)
            .with_header("content-type", "text/html")
            .with_header("set-cookie", "a=1")
            .with_header("set-cookie", "b=2");
        assert_eq!(
            serde_json::to_value(&r).expect("JSON"),
            json!({"http_response": {"status": 201, "headers": {"content-type": "text/html",
                "set-cookie": ["a=1", "b=2"]}, "body": "<p>hi</p>"}})
        );
        assert_eq!(
            serde_json::to_value(Response::bytes(vec![0, 255])).expect("JSON"),
            json!({"http_response": {"status": 200, "headers": {}, "body_base64": "AP8="}})
        );
        assert_eq!(
            serde_json::to_value(Response::redirect("/x")).expect("JSON"),
            json!({"http_response": {"status": 302, "headers": {"location": "/x"}}})
        );
        assert_eq!(
            sse_event("a\nb", Some("tick")),
            "event: tick\ndata: a\ndata: b\n\n"
        );
    }
}
