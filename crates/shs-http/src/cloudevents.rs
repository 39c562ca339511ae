//! CloudEvents over HTTP, read: which of the three forms of `POST /events` a request is
//! ([`mode_of`]), its attributes from a JSON body ([`from_json`]) or from `ce-*` headers
//! ([`from_binary`]), its data fitted to the event object ([`fit`]), and the [`Event`] made of
//! them ([`event_of`]), each failure a 400 (or 415) that says what was wrong.
//!
//! Data of any content type is carried, and an event becomes the same event object whichever
//! mode it came in ([`fit`]): JSON data is its `payload`; text (a `text/*` type, XML, YAML, form
//! data...) that is UTF-8 is a JSON string in `payload`; anything else is bytes, carried as
//! `data_base64` (standard base64) with `payload` `null`. Extension attributes are kept as
//! their CloudEvents canonical strings, since binary mode cannot tell their types.

use std::collections::HashMap;

use actix_web::HttpResponse;
use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderMap};
use base64::Engine as _;
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use shs_bus::event::{CAUSE_ATTRIBUTE, HOPS_ATTRIBUTE, validate_extension_name};
use shs_bus::{BusError, Event, Origin};
use shs_protocol::codec::line_safe;

use crate::error_response;

/// Where events published over HTTP come from, unless the publisher names a `source`.
pub(crate) const HTTP_SOURCE: &str = "/http";

/// The content type of bytes whose type nobody gave.
const OCTET_STREAM: &str = "application/octet-stream";

/// The media type of a CloudEvent in structured mode, in JSON.
const STRUCTURED_JSON: &str = "application/cloudevents+json";

pub(crate) fn bad_request(message: impl Into<String>) -> HttpResponse {
    error_response(StatusCode::BAD_REQUEST, message, Map::new())
}

/// Standard base64 with padding, as CloudEvents' `data_base64` is; trailing bits that are not
/// zero are allowed (as any RFC 4648 reader that does not canonicalize would).
pub(crate) const BASE64: base64::engine::GeneralPurpose = base64::engine::GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    base64::engine::GeneralPurposeConfig::new()
        .with_decode_allow_trailing_bits(true)
        .with_decode_padding_mode(base64::engine::DecodePaddingMode::RequireCanonical),
);

/// The data of an event as it came, before it is fitted to its content type.
#[derive(Debug, Default)]
pub(crate) enum RawData {
    /// None given.
    #[default]
    Absent,
    /// A JSON value (`data` or `payload` of a JSON body).
    Json(Box<RawValue>),
    /// Bytes given as bytes: structured mode's `data_base64`, decoded.
    Base64(Vec<u8>),
    /// The body in binary mode.
    Body(Vec<u8>),
}

/// How the data of a content type is handed to functions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// As the JSON value in `payload`.
    Json,
    /// As a JSON string in `payload`, when it is UTF-8.
    Text,
    /// As `data_base64`.
    Bytes,
}

/// A media type's essence: `type/subtype`, lower case, without parameters.
pub(crate) fn essence(content_type: &str) -> String {
    content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase()
}

/// How data of `content_type` is handed to functions: JSON for `application/json` and
/// `*+json`; text for `text/*`, XML, YAML, JavaScript and form data; bytes for the rest.
pub(crate) fn kind_of(content_type: &str) -> Kind {
    let essence = essence(content_type);
    if essence == "application/json" || essence.ends_with("+json") {
        Kind::Json
    } else if essence.starts_with("text/")
        || essence.ends_with("+xml")
        || essence.ends_with("+yaml")
        || matches!(
            essence.as_str(),
            "application/xml"
                | "application/yaml"
                | "application/x-yaml"
                | "application/javascript"
                | "application/ecmascript"
                | "application/x-www-form-urlencoded"
        )
    {
        Kind::Text
    } else {
        Kind::Bytes
    }
}

/// The data as the event object carries it.
#[derive(Debug)]
pub(crate) enum Fitted {
    /// `payload` (`None`: `null`, no data).
    Payload(Option<Box<RawValue>>),
    /// `data_base64`, with `payload` `null`.
    Base64(String),
}

/// Fits the data to its content type: the event object it makes is the same whichever form the
/// data came in (a JSON value, base64, or a body). Returns the content type to record (`None`:
/// the default, `application/json`) and the data. Any data is carried: bytes that are not what
/// their content type says (JSON that does not parse, text that is not UTF-8) are carried as
/// bytes, as a router should, not refused.
pub(crate) fn fit(content_type: Option<String>, data: RawData) -> (Option<String>, Fitted) {
    let content_type = content_type.filter(|t| !t.trim().is_empty());
    let kind = match (&content_type, &data) {
        (_, RawData::Absent) => return (content_type, Fitted::Payload(None)),
        (Some(t), _) => kind_of(t),
        (None, RawData::Json(_)) => Kind::Json,
        // Bytes of no given type: JSON if they are JSON, else just bytes.
        (None, RawData::Base64(_)) => Kind::Bytes,
        (None, RawData::Body(body)) => {
            if is_blank(body) || serde_json::from_slice::<serde::de::IgnoredAny>(body).is_ok() {
                Kind::Json
            } else {
                Kind::Bytes
            }
        }
    };
    let content_type = match (content_type, kind) {
        (None, Kind::Bytes) => Some(OCTET_STREAM.to_owned()),
        (content_type, _) => content_type,
    };
    let bytes = match data {
        RawData::Absent => return (content_type, Fitted::Payload(None)),
        RawData::Json(value) if kind == Kind::Json || value.get() == "null" => {
            let value = (value.get() != "null").then(|| line_safe(value));
            return (content_type, Fitted::Payload(value));
        }
        // A JSON value standing for data that is not JSON: a string is the text itself, any
        // other value its JSON text.
        RawData::Json(value) => match serde_json::from_str::<String>(value.get()) {
            Ok(text) => text.into_bytes(),
            Err(_) => value.get().as_bytes().to_vec(),
        },
        RawData::Base64(bytes) | RawData::Body(bytes) => bytes,
    };
    let fitted = match kind {
        Kind::Json if is_blank(&bytes) => Fitted::Payload(None),
        Kind::Json => match serde_json::from_slice::<Box<RawValue>>(&bytes) {
            Ok(value) => Fitted::Payload(Some(line_safe(value))),
            Err(_) => Fitted::Base64(BASE64.encode(bytes)),
        },
        _ if bytes.is_empty() => Fitted::Payload(None),
        Kind::Text => match String::from_utf8(bytes) {
            Ok(text) => Fitted::Payload(serde_json::value::to_raw_value(&text).ok()),
            Err(e) => Fitted::Base64(BASE64.encode(e.into_bytes())),
        },
        Kind::Bytes => Fitted::Base64(BASE64.encode(bytes)),
    };
    (content_type, fitted)
}

pub(crate) fn is_blank(bytes: &[u8]) -> bool {
    bytes.iter().all(u8::is_ascii_whitespace)
}

/// The attributes of an event, from whichever form it came in.
#[derive(Default)]
pub(crate) struct Attributes {
    event_type: Option<String>,
    id: Option<String>,
    source: Option<String>,
    time: Option<String>,
    subject: Option<String>,
    content_type: Option<String>,
    dataschema: Option<String>,
    pub(crate) extensions: Vec<(String, Value)>,
    data: RawData,
}

/// A string member, or a 400 saying what it should have been.
pub(crate) fn string_member(
    members: &HashMap<String, Box<RawValue>>,
    key: &str,
) -> Result<Option<String>, HttpResponse> {
    match members.get(key) {
        None => Ok(None),
        Some(raw) => serde_json::from_str::<String>(raw.get())
            .map(Some)
            .map_err(|_| {
                bad_request(format!(
                    "`{key}` must be a string, not {}",
                    raw.get().chars().take(40).collect::<String>()
                ))
            }),
    }
}

/// An extension attribute's value from a JSON body, as its CloudEvents canonical string
/// (binary mode can only carry strings, and the event must be the same in both modes): a
/// string as it is, a boolean `true`/`false`, an integer (32-bit, as CloudEvents' Integer) in
/// decimal. `null` means absent. Anything else is a 400.
pub(crate) fn extension_value(name: &str, raw: &RawValue) -> Result<Option<Value>, HttpResponse> {
    let invalid = || {
        bad_request(format!(
            "the extension attribute `{name}` must be a string, a boolean or a whole number from \
             -2147483648 to 2147483647 (the CloudEvents types), not {}",
            raw.get().chars().take(40).collect::<String>()
        ))
    };
    let value: Value = serde_json::from_str(raw.get()).map_err(|_| invalid())?;
    let text = match value {
        Value::Null => return Ok(None),
        Value::String(text) => text,
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => {
            let whole = n.as_i64().or_else(|| {
                n.as_f64()
                    .filter(|f| f.fract() == 0.0 && f.abs() < 1e10)
                    .map(|f| f as i64)
            });
            match whole.and_then(|i| i32::try_from(i).ok()) {
                Some(i) => i.to_string(),
                None => return Err(invalid()),
            }
        }
        Value::Array(_) | Value::Object(_) => return Err(invalid()),
    };
    Ok(Some(Value::String(text)))
}

/// The hop count a publisher gives (`shshops`): a whole number 0 or more, as a JSON number or
/// a string of digits; past `u32::MAX` it is `u32::MAX` (a count past `--max-hops` is cut
/// anyway).
pub(crate) fn hops_value(value: &Value) -> Option<Value> {
    let hops = match value {
        Value::Number(n) => n.as_u64().or_else(|| {
            n.as_f64()
                .filter(|f| *f >= 0.0 && f.fract() == 0.0)
                .map(|f| if f >= 4e9 { u64::MAX } else { f as u64 })
        })?,
        Value::String(s) if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) => {
            s.parse::<u64>().unwrap_or(u64::MAX)
        }
        _ => return None,
    };
    Some(Value::from(u32::try_from(hops).unwrap_or(u32::MAX)))
}

/// A JSON body: the simple form, or CloudEvents structured mode (with `specversion`; required
/// when `structured`, i.e. with `Content-Type: application/cloudevents+json`).
pub(crate) fn from_json(body: &[u8], structured: bool) -> Result<Attributes, HttpResponse> {
    let mut members: HashMap<String, Box<RawValue>> = match serde_json::from_slice(body) {
        Ok(m) => m,
        Err(e) if e.is_syntax() || e.is_eof() => {
            return Err(bad_request(format!(
                "the request body is not valid JSON: {e}"
            )));
        }
        Err(_) => {
            return Err(bad_request(
                "the request body must be a JSON object: {\"type\": str, \"payload\": any}",
            ));
        }
    };
    if structured && !members.contains_key("specversion") {
        return Err(bad_request(format!(
            "a CloudEvent in structured mode ({STRUCTURED_JSON}) needs \"specversion\": \"1.0\""
        )));
    }
    let structured = members.contains_key("specversion");
    if let Some(version) = string_member(&members, "specversion")?
        && version != "1.0"
    {
        return Err(bad_request(format!(
            "CloudEvents specversion {version:?} is not supported; use \"1.0\""
        )));
    }
    let mut attributes = Attributes {
        event_type: string_member(&members, "type")?,
        source: string_member(&members, "source")?,
        subject: string_member(&members, "subject")?,
        ..Attributes::default()
    };
    if structured {
        attributes.id = string_member(&members, "id")?;
        attributes.time = string_member(&members, "time")?;
        attributes.content_type = string_member(&members, "datacontenttype")?;
        attributes.dataschema = string_member(&members, "dataschema")?;
        let given: Vec<&str> = ["data", "data_base64", "payload"]
            .into_iter()
            .filter(|k| members.contains_key(*k))
            .collect();
        if given.len() > 1 {
            return Err(bad_request(format!(
                "an event carries its data in one member, not in {}",
                given.join(" and ")
            )));
        }
        if let Some(encoded) = string_member(&members, "data_base64")? {
            let bytes = BASE64
                .decode(encoded.as_bytes())
                .map_err(|e| bad_request(format!("`data_base64` is not standard base64: {e}")))?;
            attributes.data = RawData::Base64(bytes);
        }
    }
    if let Some(raw) = members.remove("payload").or_else(|| members.remove("data")) {
        attributes.data = RawData::Json(raw);
    }
    for (name, raw) in members {
        let known = matches!(
            name.as_str(),
            "type"
                | "id"
                | "source"
                | "time"
                | "subject"
                | "specversion"
                | "datacontenttype"
                | "dataschema"
                | "data"
                | "data_base64"
                | "payload"
        );
        if known || !(structured || name == HOPS_ATTRIBUTE || name == CAUSE_ATTRIBUTE) {
            continue;
        }
        let value = match name.as_str() {
            HOPS_ATTRIBUTE => Some(serde_json::from_str(raw.get()).unwrap_or(Value::Null)),
            CAUSE_ATTRIBUTE => Some(Value::String(
                serde_json::from_str::<String>(raw.get())
                    .map_err(|_| bad_request("`shscause` must be a string"))?,
            )),
            _ => {
                validate_extension_name(&name).map_err(|e| bad_request(e.to_string()))?;
                extension_value(&name, &raw)?
            }
        };
        if let Some(value) = value {
            attributes.extensions.push((name, value));
        }
    }
    Ok(attributes)
}

/// CloudEvents binary mode: `ce-*` headers (percent-decoded), the body as the data.
pub(crate) fn from_binary(headers: &HeaderMap, body: &[u8]) -> Result<Attributes, HttpResponse> {
    let mut attributes = Attributes::default();
    let mut ce_content_type = None;
    for (name, value) in headers {
        let Some(attribute) = name.as_str().strip_prefix("ce-") else {
            continue;
        };
        let value = value
            .to_str()
            .ok()
            .and_then(|v| percent_encoding::percent_decode_str(v).decode_utf8().ok())
            .ok_or_else(|| {
                bad_request(format!(
                    "the header {name} is not text: send visible ASCII, with other characters \
                     percent-encoded (UTF-8)"
                ))
            })?
            .into_owned();
        match attribute {
            "specversion" if value != "1.0" => {
                return Err(bad_request(format!(
                    "CloudEvents specversion {value:?} is not supported; use \"1.0\""
                )));
            }
            "specversion" => {}
            "type" => attributes.event_type = Some(value),
            "id" => attributes.id = Some(value),
            "source" => attributes.source = Some(value),
            "time" => attributes.time = Some(value),
            "subject" => attributes.subject = Some(value),
            "dataschema" => attributes.dataschema = Some(value),
            // Binary mode carries it in Content-Type; the header counts only without one.
            "datacontenttype" => ce_content_type = Some(value),
            other => attributes
                .extensions
                .push((other.to_owned(), Value::String(value))),
        }
    }
    attributes.content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.trim().is_empty())
        .map(str::to_owned)
        .or(ce_content_type);
    attributes.data = RawData::Body(body.to_vec());
    Ok(attributes)
}

/// A string attribute that CloudEvents says must not be empty when present.
pub(crate) fn non_empty(name: &str, value: Option<String>) -> Result<Option<String>, HttpResponse> {
    match value {
        Some(v) if v.is_empty() => Err(bad_request(format!(
            "`{name}` must not be empty (CloudEvents: when present, it is a non-empty string)"
        ))),
        other => Ok(other),
    }
}

/// Builds the event from its attributes.
pub(crate) fn event_of(
    attributes: Attributes,
    request_id: Option<String>,
) -> Result<Event, HttpResponse> {
    let Some(event_type) = attributes.event_type else {
        return Err(bad_request(
            "the event has no `type`: send {\"type\": str, \"payload\": any}",
        ));
    };
    let source = non_empty("source", attributes.source)?.unwrap_or_else(|| HTTP_SOURCE.to_owned());
    let subject = non_empty("subject", attributes.subject)?;
    let dataschema = non_empty("dataschema", attributes.dataschema)?;
    let content_type = non_empty("datacontenttype", attributes.content_type)?;
    let (content_type, data) = fit(content_type, attributes.data);
    let invalid = |e: BusError| bad_request(e.to_string());
    let (payload, base64) = match data {
        Fitted::Payload(payload) => (payload, None),
        Fitted::Base64(encoded) => (None, Some(encoded)),
    };
    let mut event = Event::new(event_type, source, payload)
        .map_err(invalid)?
        .with_origin(Origin::Http { request_id });
    if let Some(encoded) = base64 {
        event = event.with_data_base64(encoded);
    }
    if let Some(id) = attributes.id {
        event = event.with_id(id).map_err(invalid)?;
    }
    if let Some(time) = attributes.time {
        event = event.with_time(time).map_err(invalid)?;
    }
    if let Some(subject) = subject {
        event = event.with_subject(subject).map_err(invalid)?;
    }
    if let Some(content_type) = content_type {
        event = event.with_content_type(content_type).map_err(invalid)?;
    }
    if let Some(dataschema) = dataschema {
        event = event.with_dataschema(dataschema).map_err(invalid)?;
    }
    // In one order whichever mode they came in (by name), so that the event is the same.
    let mut extensions = attributes.extensions;
    extensions.sort_by(|a, b| a.0.cmp(&b.0));
    for (name, value) in extensions {
        let value = match name.as_str() {
            HOPS_ATTRIBUTE => hops_value(&value)
                .ok_or_else(|| bad_request("`shshops` must be a whole number, 0 or more"))?,
            CAUSE_ATTRIBUTE => value,
            _ => {
                validate_extension_name(&name).map_err(invalid)?;
                value
            }
        };
        event = event.with_extension(&name, value).map_err(invalid)?;
    }
    Ok(event)
}

/// How a `POST /events` carries its event.
pub(crate) enum Mode {
    /// A JSON body: the simple form, or structured mode when it has `specversion`.
    Json,
    /// `Content-Type: application/cloudevents+json`: structured mode.
    Structured,
    /// A `ce-specversion` header: binary mode.
    Binary,
}

/// The mode of a request, by its headers, as the CloudEvents HTTP binding says: a
/// `Content-Type` of `application/cloudevents...` is structured mode (in JSON: others are a
/// 415), else `ce-specversion` makes binary mode.
pub(crate) fn mode_of(headers: &HeaderMap) -> Result<Mode, HttpResponse> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(essence)
        .unwrap_or_default();
    if content_type.starts_with("application/cloudevents") {
        if content_type == STRUCTURED_JSON {
            return Ok(Mode::Structured);
        }
        return Err(error_response(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!(
                "{content_type} is not supported: send one event, in structured mode as \
                 {STRUCTURED_JSON} or in binary mode (ce-* headers)"
            ),
            Map::new(),
        ));
    }
    if headers.contains_key("ce-specversion") {
        Ok(Mode::Binary)
    } else {
        Ok(Mode::Json)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::json;

    use super::*;

    fn raw(json: &str) -> Box<RawValue> {
        RawValue::from_string(json.to_owned()).expect("JSON")
    }

    /// The fitted data as one comparable value: (content type, payload, data_base64).
    fn fitted(content_type: Option<&str>, data: RawData) -> (Option<String>, String, String) {
        let (content_type, fitted) = fit(content_type.map(str::to_owned), data);
        match fitted {
            Fitted::Payload(p) => (
                content_type,
                p.map_or_else(|| "null".to_owned(), |p| p.get().to_owned()),
                String::new(),
            ),
            Fitted::Base64(b) => (content_type, "null".to_owned(), b),
        }
    }

    #[test]
    fn kinds_of_content_types() {
        for json in [
            "application/json",
            "Application/JSON; charset=utf-8",
            "application/vnd.x+json",
        ] {
            assert_eq!(kind_of(json), Kind::Json, "{json}");
        }
        for text in [
            "text/plain",
            "text/csv; charset=utf-8",
            "application/xml",
            "image/svg+xml",
            "application/x-www-form-urlencoded",
        ] {
            assert_eq!(kind_of(text), Kind::Text, "{text}");
        }
        for bytes in [
            "application/octet-stream",
            "image/png",
            "application/avro",
            "",
        ] {
            assert_eq!(kind_of(bytes), Kind::Bytes, "{bytes}");
        }
    }

    #[test]
    fn data_is_fitted_to_its_content_type() {
        let text = Some("text/plain");
        let octets = Some(OCTET_STREAM);
        let none = (None, "null".to_owned(), String::new());
        // JSON.
        assert_eq!(
            fitted(None, RawData::Json(raw("{\"a\": 1}"))),
            (None, "{\"a\": 1}".to_owned(), String::new())
        );
        assert_eq!(
            fitted(None, RawData::Body(b"[1,2]".to_vec())),
            (None, "[1,2]".to_owned(), String::new())
        );
        assert_eq!(fitted(None, RawData::Body(b" \n".to_vec())), none);
        assert_eq!(fitted(None, RawData::Absent), none);
        // Text, from a body, from base64 or from a JSON string.
        let hello = (
            Some("text/plain".to_owned()),
            "\"hello\"".to_owned(),
            String::new(),
        );
        assert_eq!(fitted(text, RawData::Body(b"hello".to_vec())), hello);
        assert_eq!(fitted(text, RawData::Base64(b"hello".to_vec())), hello);
        assert_eq!(fitted(text, RawData::Json(raw("\"hello\""))), hello);
        // Text that is not UTF-8 is bytes.
        assert_eq!(
            fitted(text, RawData::Body(vec![0xff, 0xfe])),
            (
                Some("text/plain".to_owned()),
                "null".to_owned(),
                "//4=".to_owned()
            )
        );
        // Bytes, from a body, from base64, from a JSON string; and of no given type.
        let bytes = (
            Some(OCTET_STREAM.to_owned()),
            "null".to_owned(),
            "aGVsbG8=".to_owned(),
        );
        assert_eq!(fitted(octets, RawData::Body(b"hello".to_vec())), bytes);
        assert_eq!(fitted(octets, RawData::Json(raw("\"hello\""))), bytes);
        assert_eq!(fitted(None, RawData::Base64(b"hello".to_vec())), bytes);
        assert_eq!(fitted(None, RawData::Body(b"hello".to_vec())), bytes);
        // Empty data is no data, whatever its type.
        for t in [text, octets] {
            assert_eq!(fitted(t, RawData::Body(Vec::new())).1, "null");
            assert_eq!(fitted(t, RawData::Base64(Vec::new())).2, "");
            assert_eq!(fitted(t, RawData::Json(raw("null"))).1, "null");
        }
        // JSON that is not JSON is carried as bytes, with the type it was given.
        let json = Some("application/json");
        let not_json = (
            Some("application/json".to_owned()),
            "null".to_owned(),
            "e3g=".to_owned(),
        );
        assert_eq!(fitted(json, RawData::Body(b"{x".to_vec())), not_json);
        assert_eq!(fitted(json, RawData::Base64(b"{x".to_vec())), not_json);
    }

    #[test]
    fn extension_values_are_canonical_strings() {
        let value = |json: &str| extension_value("x", &raw(json)).map_err(|r| r.status());
        assert_eq!(value("\"a\""), Ok(Some(json!("a"))));
        assert_eq!(value("true"), Ok(Some(json!("true"))));
        assert_eq!(value("-42"), Ok(Some(json!("-42"))));
        assert_eq!(value("7.0"), Ok(Some(json!("7"))));
        assert_eq!(value("2147483647"), Ok(Some(json!("2147483647"))));
        assert_eq!(value("null"), Ok(None));
        for bad in ["2147483648", "1.5", "1e300", "[1]", "{\"a\": 1}"] {
            assert_eq!(value(bad), Err(StatusCode::BAD_REQUEST), "{bad}");
        }
    }

    #[test]
    fn hop_counts_saturate() {
        assert_eq!(hops_value(&json!(3)), Some(json!(3)));
        assert_eq!(hops_value(&json!("12")), Some(json!(12)));
        assert_eq!(hops_value(&json!(1e30)), Some(json!(u32::MAX)));
        assert_eq!(
            hops_value(&json!("99999999999999999999999")),
            Some(json!(u32::MAX))
        );
        for bad in [json!(-1), json!(1.5), json!(""), json!("x1"), json!(null)] {
            assert_eq!(hops_value(&bad), None, "{bad}");
        }
    }

    fn content_types() -> impl Strategy<Value = Option<&'static str>> {
        prop::sample::select(vec![
            None,
            Some("application/json"),
            Some("application/cloudevents+json"),
            Some("text/plain"),
            Some("text/plain; charset=utf-8"),
            Some("application/xml"),
            Some(OCTET_STREAM),
            Some("image/png"),
        ])
    }

    proptest! {
        /// Bytes are the same event whether they came as a body (binary mode) or as
        /// `data_base64` (structured mode), except that bytes of no given type may be JSON in a
        /// body.
        #[test]
        fn bytes_fit_the_same_in_both_modes(
            content_type in content_types(),
            bytes in prop::collection::vec(any::<u8>(), 0..64),
        ) {
            let body = fit(content_type.map(str::to_owned), RawData::Body(bytes.clone()));
            let base64 = fit(content_type.map(str::to_owned), RawData::Base64(bytes.clone()));
            let json_sniffed = content_type.is_none()
                && (is_blank(&bytes) || serde_json::from_slice::<Value>(&bytes).is_ok());
            if !json_sniffed {
                let show = |r: (Option<String>, Fitted)| format!("{r:?}");
                prop_assert_eq!(show(body), show(base64));
            }
        }

        /// Text sent as a string in structured mode is the same event as the same text as a
        /// body in binary mode.
        #[test]
        fn text_fits_the_same_in_both_modes(
            content_type in content_types(),
            text in any::<String>(),
        ) {
            let json = serde_json::value::to_raw_value(&text).expect("a string is JSON");
            let kind = content_type.map_or(Kind::Json, kind_of);
            prop_assume!(kind != Kind::Json);
            let from_json = fitted(content_type, RawData::Json(json));
            let from_body = fitted(content_type, RawData::Body(text.into_bytes()));
            prop_assert_eq!(from_json, from_body);
        }

        /// Whatever the bytes, fitting them never panics, and bytes handed as `data_base64`
        /// decode back to themselves.
        #[test]
        fn base64_round_trips(
            content_type in content_types(),
            bytes in prop::collection::vec(any::<u8>(), 0..256),
        ) {
            if let (_, Fitted::Base64(encoded)) =
                fit(content_type.map(str::to_owned), RawData::Body(bytes.clone()))
            {
                prop_assert_eq!(BASE64.decode(encoded.as_bytes()).ok(), Some(bytes));
            }
        }
    }

    // ---------------------------------------------------------------------------------------
    // The whole parser, as `publish` runs it: `mode_of`, then `from_json` (the simple form and
    // structured mode) or `from_binary`, then `event_of`.

    /// The event `POST /events` makes of `headers` and `body`, as its JSON object.
    fn parse(headers: &HeaderMap, body: &[u8]) -> Result<Value, StatusCode> {
        let attributes = match mode_of(headers) {
            Err(response) => Err(response),
            Ok(Mode::Binary) => from_binary(headers, body),
            Ok(_) if is_blank(body) => return Err(StatusCode::BAD_REQUEST),
            Ok(Mode::Structured) => from_json(body, true),
            Ok(Mode::Json) => from_json(body, false),
        };
        let event = attributes
            .and_then(|a| event_of(a, Some("r1".to_owned())))
            .map_err(|response| response.status())?;
        let shared = event.share();
        serde_json::from_str(shared.json().get()).map_err(|_| StatusCode::INTERNAL_SERVER_ERROR)
    }

    /// What an event may cost: its object is at most a fixed amount over six times what came
    /// in (a control character in text becomes `\u00XX`), whatever came in.
    fn bounded(event: &Value, headers: &HeaderMap, body: &[u8]) -> bool {
        let input: usize = body.len()
            + headers
                .iter()
                .map(|(n, v)| n.as_str().len() + v.len())
                .sum::<usize>();
        event.to_string().len() <= 6 * input + 4096
    }

    fn headers_of(pairs: &[(String, Vec<u8>)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            if let (Ok(name), Ok(value)) = (
                header::HeaderName::from_bytes(name.as_bytes()),
                header::HeaderValue::from_bytes(value),
            ) {
                headers.append(name, value);
            }
        }
        headers
    }

    fn json_content_type(content_type: &str) -> HeaderMap {
        headers_of(&[("content-type".to_owned(), content_type.as_bytes().to_vec())])
    }

    /// Member names a JSON body may carry: every attribute, data member and some others.
    fn member_names() -> impl Strategy<Value = String> {
        prop_oneof![
            prop::sample::select(vec![
                "type",
                "id",
                "source",
                "time",
                "subject",
                "specversion",
                "datacontenttype",
                "dataschema",
                "data",
                "data_base64",
                "payload",
                "shshops",
                "shscause",
                "traceparent",
                "ext",
            ])
            .prop_map(str::to_owned),
            "[a-zA-Z0-9_]{0,12}",
            any::<String>(),
        ]
    }

    /// Any JSON value, a few levels deep.
    fn json_values() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<f64>().prop_map(Value::from),
            any::<String>().prop_map(Value::from),
            prop::sample::select(vec![
                "1.0",
                "0.3",
                "x.y",
                "/src",
                "2026-11-27T07:53:39.439Z",
                "AAAA",
                "text/plain",
                "application/json",
                "",
            ])
            .prop_map(Value::from),
        ];
        leaf.prop_recursive(4, 32, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::from),
                prop::collection::btree_map("[a-z]{0,6}", inner, 0..6)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    /// Header names a binary-mode request may carry.
    fn header_names() -> impl Strategy<Value = String> {
        prop_oneof![
            prop::sample::select(vec![
                "ce-specversion",
                "ce-type",
                "ce-id",
                "ce-source",
                "ce-time",
                "ce-subject",
                "ce-dataschema",
                "ce-datacontenttype",
                "ce-shshops",
                "ce-shscause",
                "ce-traceparent",
                "content-type",
            ])
            .prop_map(str::to_owned),
            "ce-[a-z0-9-]{0,12}",
            "[a-z-]{1,12}",
        ]
    }

    /// Header values: any bytes a header may hold (visible ASCII, space, tab, obs-text),
    /// sometimes a value that means something.
    fn header_values() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            prop::collection::vec(
                prop_oneof![Just(b'\t'), 0x20u8..=0x7e, 0x80u8..=0xff],
                0..40
            ),
            prop::sample::select(vec![
                "1.0",
                "x.y",
                "/src",
                "2026-11-27T07:53:39.439Z",
                "application/json",
                "application/cloudevents+json",
                "text/plain",
                "%FF%FE",
                "%",
                "%41%",
                "7",
                "-1",
            ])
            .prop_map(|v| v.as_bytes().to_vec()),
        ]
    }

    /// One valid event's attributes: (type, id, source, time, subject, extensions, data).
    #[derive(Clone, Debug)]
    struct Valid {
        event_type: String,
        id: String,
        source: String,
        time: String,
        subject: Option<String>,
        extensions: std::collections::BTreeMap<String, String>,
        data: Value,
    }

    fn valid_events() -> impl Strategy<Value = Valid> {
        let data = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            "[ -~éü€]{0,40}".prop_map(Value::from),
            prop::collection::btree_map("[a-z]{1,6}", any::<i32>(), 0..4).prop_map(|m| json!(m)),
        ];
        (
            "[a-z]{1,8}(\\.[a-z0-9_-]{1,8}){0,3}",
            "[A-Za-z0-9._:-]{1,40}",
            "/[a-z0-9/._-]{0,30}",
            "20[0-9]{2}-(0[1-9]|1[0-2])-(0[1-9]|1[0-9]|2[0-8])T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\\.[0-9]{1,3})?Z",
            prop::option::of("[a-zA-Z0-9 éü€-]{1,30}"),
            prop::collection::btree_map("x[a-z0-9]{0,10}", "[a-zA-Z0-9 ]{1,20}", 0..4),
            data,
        )
            .prop_map(|(event_type, id, source, time, subject, extensions, data)| Valid {
                event_type,
                id,
                source,
                time,
                subject,
                extensions,
                data,
            })
    }

    fn structured_body(e: &Valid) -> Vec<u8> {
        let mut object = json!({
            "specversion": "1.0",
            "type": e.event_type,
            "id": e.id,
            "source": e.source,
            "time": e.time,
            "datacontenttype": "application/json",
            "data": e.data,
        });
        if let Some(subject) = &e.subject {
            object["subject"] = json!(subject);
        }
        for (name, value) in &e.extensions {
            object[name] = json!(value);
        }
        object.to_string().into_bytes()
    }

    fn binary_request(e: &Valid) -> (HeaderMap, Vec<u8>) {
        let encode = |v: &str| {
            percent_encoding::utf8_percent_encode(v, percent_encoding::NON_ALPHANUMERIC)
                .to_string()
                .into_bytes()
        };
        let mut pairs = vec![
            ("ce-specversion".to_owned(), b"1.0".to_vec()),
            ("ce-type".to_owned(), encode(&e.event_type)),
            ("ce-id".to_owned(), encode(&e.id)),
            ("ce-source".to_owned(), encode(&e.source)),
            ("ce-time".to_owned(), encode(&e.time)),
            ("content-type".to_owned(), b"application/json".to_vec()),
        ];
        if let Some(subject) = &e.subject {
            pairs.push(("ce-subject".to_owned(), encode(subject)));
        }
        for (name, value) in &e.extensions {
            pairs.push((format!("ce-{name}"), encode(value)));
        }
        (headers_of(&pairs), e.data.to_string().into_bytes())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// Any body, in each of the three content types, gives an event or a 4xx; never a
        /// panic, and never an event much larger than the request.
        #[test]
        fn arbitrary_bodies_never_panic(
            body in prop::collection::vec(any::<u8>(), 0..512),
            content_type in prop::sample::select(vec![
                "application/json", STRUCTURED_JSON, "text/plain", "application/cloudevents-batch+json",
            ]),
        ) {
            let headers = json_content_type(content_type);
            match parse(&headers, &body) {
                Ok(event) => prop_assert!(bounded(&event, &headers, &body)),
                Err(status) => prop_assert!(status.is_client_error(), "{status}"),
            }
        }

        /// Any JSON object of attribute-like members, in the simple form or structured mode.
        #[test]
        fn arbitrary_json_objects_never_panic(
            members in prop::collection::vec((member_names(), json_values()), 0..12),
            structured in any::<bool>(),
        ) {
            let object: Map<String, Value> = members.into_iter().collect();
            let body = Value::Object(object).to_string().into_bytes();
            let content_type = if structured { STRUCTURED_JSON } else { "application/json" };
            let headers = json_content_type(content_type);
            match parse(&headers, &body) {
                Ok(event) => {
                    prop_assert!(bounded(&event, &headers, &body));
                    prop_assert!(event["type"].is_string() && event["id"].is_string());
                }
                Err(status) => prop_assert!(status.is_client_error(), "{status}"),
            }
        }

        /// Any headers and body in binary mode (with `ce-specversion`, or without).
        #[test]
        fn arbitrary_binary_requests_never_panic(
            pairs in prop::collection::vec((header_names(), header_values()), 0..12),
            specversion in any::<bool>(),
            body in prop::collection::vec(any::<u8>(), 0..256),
        ) {
            let mut headers = headers_of(&pairs);
            if specversion && !headers.contains_key("ce-specversion") {
                headers.insert(
                    header::HeaderName::from_static("ce-specversion"),
                    header::HeaderValue::from_static("1.0"),
                );
            }
            match parse(&headers, &body) {
                Ok(event) => prop_assert!(bounded(&event, &headers, &body)),
                Err(status) => prop_assert!(status.is_client_error(), "{status}"),
            }
        }

        /// A valid event is the same event in structured and in binary mode, carries exactly
        /// what was sent, and its object, sent again in structured mode, is the same event.
        #[test]
        fn valid_events_round_trip_in_both_modes(e in valid_events()) {
            let structured = parse(&json_content_type(STRUCTURED_JSON), &structured_body(&e));
            let (headers, body) = binary_request(&e);
            let binary = parse(&headers, &body);
            let Ok(structured) = structured else {
                return Err(TestCaseError::fail(format!("structured refused {e:?}: {structured:?}")));
            };
            prop_assert_eq!(binary, Ok(structured.clone()));
            prop_assert_eq!(&structured["type"], &json!(e.event_type));
            prop_assert_eq!(&structured["id"], &json!(e.id));
            prop_assert_eq!(&structured["source"], &json!(e.source));
            prop_assert_eq!(&structured["time"], &json!(e.time));
            prop_assert_eq!(&structured["payload"], &e.data);
            let subject = e.subject.as_ref().map(|s| json!(s));
            prop_assert_eq!(structured.get("subject"), subject.as_ref());
            for (name, value) in &e.extensions {
                prop_assert_eq!(&structured[name], &json!(value));
            }
            let again = parse(
                &json_content_type(STRUCTURED_JSON),
                structured.to_string().as_bytes(),
            );
            prop_assert_eq!(again, Ok(structured));
        }
    }
}
