//! A function's answer as an HTTP response: a result whose only member is `http_response`
//! (`status`, `headers`, `body` or `body_base64`), checked member by member; anything
//! malformed is a 502 that says what was wrong. Also the `status` and `headers` a stream's
//! first chunk may carry, and the head of a CGI response ([`Head`]).

use actix_web::HttpResponse;
use actix_web::http::StatusCode;
use actix_web::http::header::{HeaderName, HeaderValue};
use base64::Engine as _;
use serde_json::{Map, Value};

use crate::error_response;

/// Headers a function may not set: they belong to the connection, not to the answer.
const HOP_BY_HOP: [&str; 10] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "content-length",
];

/// The status and headers of an answer, checked.
#[derive(Debug)]
pub(crate) struct Head {
    pub(crate) status: StatusCode,
    pub(crate) headers: Vec<(HeaderName, HeaderValue)>,
}

impl Head {
    /// Whether a `content-type` is among the headers.
    pub(crate) fn has_content_type(&self) -> bool {
        self.headers
            .iter()
            .any(|(name, _)| name == actix_web::http::header::CONTENT_TYPE)
    }

    /// A response builder with this status and these headers.
    pub(crate) fn builder(&self) -> actix_web::HttpResponseBuilder {
        let mut builder = HttpResponse::build(self.status);
        for (name, value) in &self.headers {
            builder.append_header((name.clone(), value.clone()));
        }
        builder
    }
}

/// Whether `raw` (a result as the function wrote it) is an object whose first member is
/// `http_response`: a cheap look before parsing, so that plain results pay nothing.
pub(crate) fn looks_like_http_response(raw: &str) -> bool {
    let rest = raw.trim_start();
    rest.strip_prefix('{')
        .is_some_and(|r| r.trim_start().starts_with("\"http_response\""))
}

/// The HTTP response a result stands for: `Ok(None)` when it is not an `http_response`
/// (an object with other members too), `Err` with what is wrong when it is malformed.
pub(crate) fn http_response_of(raw: &str) -> Result<Option<HttpResponse>, String> {
    let Ok(Value::Object(mut result)) = serde_json::from_str::<Value>(raw) else {
        return Ok(None);
    };
    if result.len() != 1 {
        return Ok(None);
    }
    let Some(Value::Object(mut response)) = result.remove("http_response") else {
        return Err("\"http_response\" must be an object".into());
    };
    if let Some(unknown) = response
        .keys()
        .find(|k| !["status", "headers", "body", "body_base64"].contains(&k.as_str()))
    {
        return Err(format!(
            "unknown member {unknown:?} (it may have \"status\", \"headers\", \"body\" or \"body_base64\")"
        ));
    }
    let Some(status) = response.get("status") else {
        return Err("\"status\" is missing: it must be an integer from 100 to 599".into());
    };
    let head = head_of(Some(status), response.get("headers"))?;
    let body = match (response.remove("body"), response.remove("body_base64")) {
        (Some(_), Some(_)) => {
            return Err("it has both \"body\" and \"body_base64\": give at most one".into());
        }
        (Some(Value::String(text)), None) => Some((text.into_bytes(), "text/plain; charset=utf-8")),
        (Some(_), None) => return Err("\"body\" must be a string".into()),
        (None, Some(Value::String(encoded))) => {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(encoded.as_bytes())
                .map_err(|e| format!("\"body_base64\" is not valid base64: {e}"))?;
            Some((bytes, "application/octet-stream"))
        }
        (None, Some(_)) => return Err("\"body_base64\" must be a string".into()),
        (None, None) => None,
    };
    let mut builder = head.builder();
    Ok(Some(match body {
        Some((bytes, default_type)) => {
            if !head.has_content_type() {
                builder.content_type(default_type);
            }
            builder.body(bytes)
        }
        None => builder.finish(),
    }))
}

/// Checks `status` (an integer from 100 to 599; 200 when `None`) and `headers` (an object
/// whose values are strings or arrays of strings), and drops hop-by-hop headers.
pub(crate) fn head_of(status: Option<&Value>, headers: Option<&Value>) -> Result<Head, String> {
    let status = match status {
        None => StatusCode::OK,
        Some(value) => value
            .as_u64()
            .filter(|s| (100..=599).contains(s))
            .and_then(|s| u16::try_from(s).ok())
            .and_then(|s| StatusCode::from_u16(s).ok())
            .ok_or_else(|| format!("\"status\" must be an integer from 100 to 599, not {value}"))?,
    };
    let mut list = Vec::new();
    match headers {
        None => {}
        Some(Value::Object(map)) => {
            for (name, value) in map {
                let values: Vec<&str> = match value {
                    Value::String(s) => vec![s.as_str()],
                    Value::Array(items) => items
                        .iter()
                        .map(|v| v.as_str().ok_or(()))
                        .collect::<Result<_, _>>()
                        .map_err(|()| not_string_or_array(name))?,
                    _ => return Err(not_string_or_array(name)),
                };
                for value in values {
                    push_header(&mut list, name, value.as_bytes())?;
                }
            }
        }
        Some(_) => return Err("\"headers\" must be an object".into()),
    }
    Ok(Head {
        status,
        headers: list,
    })
}

/// Adds header `name: value` to `list` unless it is hop-by-hop; `Err` when either is not
/// valid in HTTP.
fn push_header(
    list: &mut Vec<(HeaderName, HeaderValue)>,
    name: &str,
    value: &[u8],
) -> Result<(), String> {
    let header = HeaderName::from_bytes(name.as_bytes())
        .map_err(|_| format!("{name:?} is not a valid header name"))?;
    if HOP_BY_HOP.contains(&header.as_str()) {
        return Ok(());
    }
    let value = HeaderValue::from_bytes(value).map_err(|_| {
        format!(
            "the value of header {name:?} is not valid (no control characters such as line breaks)"
        )
    })?;
    list.push((header, value));
    Ok(())
}

/// The head of a CGI response: its status and header lines, hop-by-hop headers dropped.
pub(crate) fn head_of_lines(status: u16, lines: &[(String, Vec<u8>)]) -> Result<Head, String> {
    let status =
        StatusCode::from_u16(status).map_err(|_| format!("{status} is not an HTTP status"))?;
    let mut list = Vec::with_capacity(lines.len());
    for (name, value) in lines {
        push_header(&mut list, name, value)?;
    }
    Ok(Head {
        status,
        headers: list,
    })
}

fn not_string_or_array(name: &str) -> String {
    format!("\"headers\".{name:?} must be a string or an array of strings")
}

/// The 502 for a malformed `http_response` of function `name`.
pub(crate) fn malformed(name: &str, what: &str, detail: &str) -> HttpResponse {
    let mut extra = Map::new();
    extra.insert("function".into(), Value::String(name.to_owned()));
    error_response(
        StatusCode::BAD_GATEWAY,
        format!("function {name:?} answered a malformed {what}: {detail}"),
        extra,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(raw: &str) -> String {
        http_response_of(raw).expect_err("malformed")
    }

    #[test]
    fn only_a_lone_http_response_member_is_a_response() {
        assert!(looks_like_http_response(r#" { "http_response": {}}"#));
        assert!(!looks_like_http_response(
            r#"{"a": 1, "http_response": {}}"#
        ));
        assert!(
            http_response_of(r#"{"http_response": {"status": 200}, "x": 1}"#)
                .expect("not malformed")
                .is_none()
        );
    }

    #[test]
    fn malformed_answers_say_what_is_wrong() {
        assert!(error(r#"{"http_response": 5}"#).contains("must be an object"));
        assert!(error(r#"{"http_response": {}}"#).contains("\"status\" is missing"));
        for status in ["99", "600", "\"200\"", "200.5", "-1"] {
            let e = error(&format!(r#"{{"http_response": {{"status": {status}}}}}"#));
            assert!(
                e.starts_with("\"status\" must be an integer from 100 to 599"),
                "{e}"
            );
        }
        assert!(
            error(r#"{"http_response": {"status": 200, "headers": {"x": 1}}}"#)
                .contains("must be a string or an array of strings")
        );
        assert!(
            error(r#"{"http_response": {"status": 200, "headers": {"x": ["a", 2]}}}"#)
                .contains("must be a string or an array of strings")
        );
        assert!(
            error(r#"{"http_response": {"status": 200, "headers": {"x": "a\r\nb: c"}}}"#)
                .contains("not valid")
        );
        assert!(
            error(r#"{"http_response": {"status": 200, "headers": {"a b": "c"}}}"#)
                .contains("not a valid header name")
        );
        assert!(
            error(r#"{"http_response": {"status": 200, "body": "a", "body_base64": "YQ=="}}"#)
                .contains("at most one")
        );
        assert!(
            error(r#"{"http_response": {"status": 200, "body_base64": "***"}}"#)
                .contains("not valid base64")
        );
        assert!(error(r#"{"http_response": {"status": 200, "bdy": "x"}}"#).contains("\"bdy\""));
    }

    #[test]
    fn hop_by_hop_headers_are_dropped_and_repeated_ones_kept() {
        let head = head_of(
            None,
            Some(&serde_json::json!({
                "Connection": "close", "transfer-encoding": "chunked", "content-length": "9",
                "set-cookie": ["a=1", "b=2"]
            })),
        )
        .expect("valid");
        let names: Vec<&str> = head.headers.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["set-cookie", "set-cookie"]);
    }
}
