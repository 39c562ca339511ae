//! Events: what a publisher hands the bus, and the encoded object functions receive.
//!
//! An event is a CloudEvents 1.0 event. The object a function receives keeps the fields of
//! protocol version 1 (`id`, `type`, `source`, `time`, `payload`) and adds the CloudEvents
//! attributes `specversion` and `datacontenttype` (and `data_base64` in place of `payload` for
//! data that is neither JSON nor text), the extension attributes `shshops` (how many
//! deliveries led to this event; the loop cut counts them) and `shscause` (the id of the event
//! whose delivery published this one), and any other extension attributes the publisher set.

use std::fmt;
use std::sync::Arc;
use std::time::SystemTime;

use serde::Serialize;
use serde_json::value::RawValue;

use crate::BusError;
use crate::table::validate_type;

/// The CloudEvents version shs speaks.
pub const SPEC_VERSION: &str = "1.0";
/// The content type of an event's data when the publisher does not say.
pub const JSON: &str = "application/json";
/// The extension attribute carrying the hop count.
pub const HOPS_ATTRIBUTE: &str = "shshops";
/// The extension attribute carrying the id of the event that caused this one.
pub const CAUSE_ATTRIBUTE: &str = "shscause";
/// The CloudEvents distributed-tracing extension attribute.
pub const TRACEPARENT: &str = "traceparent";

/// Why a payload nested too deeply is refused.
const TOO_DEEP: &str = "the payload is JSON nested deeper than 127 levels of arrays and objects (the limit); \
     it would crash the functions that parse it";
const _: () = assert!(shs_protocol::depth::MAX_DEPTH == 127, "update TOO_DEEP");

/// The attributes that are not extensions (they are fields of the event object, or reserved).
const RESERVED: [&str; 11] = [
    "id",
    "type",
    "source",
    "time",
    "payload",
    "data",
    "data_base64",
    "specversion",
    "datacontenttype",
    "dataschema",
    "subject",
];

/// Who published an event.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Origin {
    /// `POST /events`.
    Http {
        /// The `X-Request-Id` of the HTTP request, when known.
        #[serde(skip_serializing_if = "Option::is_none")]
        request_id: Option<String>,
    },
    /// A function's `publish`.
    Function {
        /// The publishing function.
        function: String,
        /// The request (invoke or event delivery) it was handling, when known.
        #[serde(skip_serializing_if = "Option::is_none")]
        request_id: Option<String>,
    },
}

/// An event about to be published.
#[derive(Debug)]
pub struct Event {
    pub(crate) id: String,
    pub(crate) event_type: String,
    pub(crate) source: String,
    pub(crate) time: String,
    pub(crate) payload: Box<RawValue>,
    pub(crate) content_type: String,
    pub(crate) data_base64: Option<String>,
    pub(crate) subject: Option<String>,
    pub(crate) dataschema: Option<String>,
    pub(crate) extensions: Vec<(String, serde_json::Value)>,
    pub(crate) hops: u32,
    pub(crate) cause: Option<String>,
    pub(crate) origin: Origin,
}

/// Checks a CloudEvents extension attribute name: 1 to 20 characters of a-z and 0-9.
pub fn validate_extension_name(name: &str) -> Result<(), BusError> {
    let ok = !name.is_empty()
        && name.len() <= 20
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    if ok && !RESERVED.contains(&name) {
        Ok(())
    } else {
        Err(BusError::InvalidAttribute {
            name: name.chars().take(40).collect(),
            reason: "an extension attribute name is 1 to 20 characters of a-z and 0-9, and not a CloudEvents attribute",
        })
    }
}

/// Why a `source` or `dataschema` is refused.
const NOT_URI: &str = "it must be a URI-reference (RFC 3986) of at most 4096 characters: no control \
     characters (CR, LF, ...), spaces or any of <>\"{}|\\^`, and `%` only before two hex digits";
/// Why a string attribute is refused.
const CONTROL: &str = "CloudEvents string attributes must not contain control characters (U+0000-U+001F, U+007F-U+009F)";

/// Checks a CloudEvents URI-reference attribute (`source`, `dataschema`): not empty, at most
/// 4096 characters of RFC 3986 (characters beyond ASCII, as in an IRI, are let through), no
/// control characters, `%` followed by two hex digits.
pub fn validate_uri_reference(name: &str, value: &str) -> Result<(), BusError> {
    let bytes = value.as_bytes();
    let ok = !value.is_empty()
        && value.chars().count() <= 4096
        && !value.chars().any(char::is_control)
        && bytes.iter().enumerate().all(|(i, &b)| match b {
            b'%' => {
                bytes.get(i + 1).is_some_and(u8::is_ascii_hexdigit)
                    && bytes.get(i + 2).is_some_and(u8::is_ascii_hexdigit)
            }
            b' ' | b'<' | b'>' | b'"' | b'{' | b'}' | b'|' | b'\\' | b'^' | b'`' => false,
            _ => true,
        });
    if ok {
        Ok(())
    } else {
        Err(BusError::InvalidAttribute {
            name: name.to_owned(),
            reason: NOT_URI,
        })
    }
}

/// Checks a CloudEvents string attribute: no control characters (CloudEvents forbids them, and
/// on NATS attributes travel in headers, where CR and LF end the header).
pub fn validate_text(name: &str, value: &str) -> Result<(), BusError> {
    if value.chars().any(char::is_control) {
        Err(BusError::InvalidAttribute {
            name: name.chars().take(40).collect(),
            reason: CONTROL,
        })
    } else {
        Ok(())
    }
}

/// Checks an event id (`id`, `shscause`): 1 to 256 characters, no control characters.
fn validate_id(name: &str, id: &str) -> Result<(), BusError> {
    if id.is_empty() || id.chars().count() > 256 || id.chars().any(char::is_control) {
        return Err(BusError::InvalidAttribute {
            name: name.to_owned(),
            reason: "an event id (`id`, `shscause`) must be 1 to 256 characters, without control characters",
        });
    }
    Ok(())
}

/// Checks an RFC 3339 timestamp (any offset; see [`crate::rfc3339`]).
pub fn validate_time(time: &str) -> Result<(), BusError> {
    if crate::rfc3339::is_date_time(time) {
        Ok(())
    } else {
        Err(BusError::InvalidAttribute {
            name: "time".to_owned(),
            reason: "`time` must be an RFC 3339 timestamp, e.g. 2026-01-02T03:04:05Z or 2026-01-02T05:04:05.5+02:00",
        })
    }
}

impl Event {
    /// A new event with a fresh id (a UUID v7, so ids sort by time), the current time, JSON
    /// data, no extensions, published over HTTP.
    ///
    /// `payload` must be line-safe JSON (see [`shs_protocol::codec::line_safe`]); `None` is
    /// `null`. A payload nested deeper than [`shs_protocol::depth::MAX_DEPTH`] is refused
    /// (every publish, from HTTP, a function or another node, comes through here), and so is
    /// a `source` that is not a URI-reference ([`validate_uri_reference`]).
    pub fn new(
        event_type: String,
        source: String,
        payload: Option<Box<RawValue>>,
    ) -> Result<Event, BusError> {
        validate_type(&event_type)?;
        validate_uri_reference("source", &source)?;
        if let Some(payload) = &payload {
            shs_protocol::depth::check(payload.get()).map_err(|_| BusError::InvalidAttribute {
                name: "payload".to_owned(),
                reason: TOO_DEEP,
            })?;
        }
        Ok(Event {
            id: uuid::Uuid::now_v7().to_string(),
            event_type,
            source,
            time: now(),
            payload: payload.unwrap_or_else(null),
            content_type: JSON.to_owned(),
            data_base64: None,
            subject: None,
            dataschema: None,
            extensions: Vec::new(),
            hops: 0,
            cause: None,
            origin: Origin::Http { request_id: None },
        })
    }

    /// Keeps an id given by the publisher (e.g. a CloudEvents `id`) instead of a fresh one.
    pub fn with_id(mut self, id: String) -> Result<Event, BusError> {
        validate_id("id", &id)?;
        self.id = id;
        Ok(self)
    }

    /// Keeps a time given by the publisher (e.g. a CloudEvents `time`) instead of now.
    pub fn with_time(mut self, time: String) -> Result<Event, BusError> {
        validate_time(&time)?;
        self.time = time;
        Ok(self)
    }

    /// Sets the content type of the payload (CloudEvents `datacontenttype`); no control
    /// characters.
    pub fn with_content_type(mut self, content_type: String) -> Result<Event, BusError> {
        validate_text("datacontenttype", &content_type)?;
        self.content_type = content_type;
        Ok(self)
    }

    /// Makes the data bytes: `data_base64` (their standard base64, padded) carries them, and
    /// `payload` is `null`.
    pub fn with_data_base64(mut self, data_base64: String) -> Event {
        self.payload = null();
        self.data_base64 = Some(data_base64);
        self
    }

    /// Sets the CloudEvents `dataschema`, a URI-reference ([`validate_uri_reference`]).
    pub fn with_dataschema(mut self, dataschema: String) -> Result<Event, BusError> {
        validate_uri_reference("dataschema", &dataschema)?;
        self.dataschema = Some(dataschema);
        Ok(self)
    }

    /// Sets the CloudEvents `subject`; no control characters.
    pub fn with_subject(mut self, subject: String) -> Result<Event, BusError> {
        validate_text("subject", &subject)?;
        self.subject = Some(subject);
        Ok(self)
    }

    /// Adds a CloudEvents extension attribute; `shshops` and `shscause` set the hop count and
    /// the cause (an event id: 1 to 256 characters). A string value must hold no control
    /// characters.
    pub fn with_extension(
        mut self,
        name: &str,
        value: serde_json::Value,
    ) -> Result<Event, BusError> {
        match name {
            HOPS_ATTRIBUTE => {
                let hops = value
                    .as_u64()
                    .or_else(|| value.as_str().and_then(|s| s.parse().ok()))
                    .and_then(|h| u32::try_from(h).ok())
                    .ok_or(BusError::InvalidAttribute {
                        name: HOPS_ATTRIBUTE.to_owned(),
                        reason: "`shshops` must be a whole number",
                    })?;
                self.hops = self.hops.max(hops);
            }
            CAUSE_ATTRIBUTE => {
                if let Some(cause) = value.as_str() {
                    validate_id(CAUSE_ATTRIBUTE, cause)?;
                }
                self.cause = value.as_str().map(str::to_owned);
            }
            _ => {
                validate_extension_name(name)?;
                if let Some(text) = value.as_str() {
                    validate_text(name, text)?;
                }
                self.extensions.retain(|(n, _)| n != name);
                self.extensions.push((name.to_owned(), value));
            }
        }
        Ok(self)
    }

    /// Records who published the event.
    pub fn with_origin(mut self, origin: Origin) -> Event {
        self.origin = origin;
        self
    }

    /// The event's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The event's type.
    pub fn event_type(&self) -> &str {
        &self.event_type
    }

    /// Who published it.
    pub fn origin(&self) -> &Origin {
        &self.origin
    }

    /// Encodes the event once for all its deliveries.
    pub fn share(self) -> Arc<SharedEvent> {
        let object = Wire {
            id: &self.id,
            event_type: &self.event_type,
            source: &self.source,
            time: &self.time,
            payload: &self.payload,
            specversion: SPEC_VERSION,
            datacontenttype: &self.content_type,
            data_base64: self.data_base64.as_deref(),
            subject: self.subject.as_deref(),
            dataschema: self.dataschema.as_deref(),
            shshops: self.hops,
            shscause: self.cause.as_deref(),
            extensions: Extensions(&self.extensions),
        };
        let json = serde_json::value::to_raw_value(&object).unwrap_or_else(|_| null());
        let traceparent = self
            .extensions
            .iter()
            .find(|(name, _)| name == TRACEPARENT)
            .and_then(|(_, v)| v.as_str().map(str::to_owned));
        Arc::new(SharedEvent {
            id: self.id,
            event_type: self.event_type,
            source: self.source,
            traceparent,
            hops: self.hops,
            cause: self.cause,
            origin: self.origin,
            json,
        })
    }
}

/// The event object, in the order functions see its fields.
#[derive(Serialize)]
struct Wire<'a> {
    id: &'a str,
    #[serde(rename = "type")]
    event_type: &'a str,
    source: &'a str,
    time: &'a str,
    payload: &'a RawValue,
    specversion: &'static str,
    datacontenttype: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    data_base64: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    subject: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    dataschema: Option<&'a str>,
    shshops: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    shscause: Option<&'a str>,
    #[serde(flatten)]
    extensions: Extensions<'a>,
}

struct Extensions<'a>(&'a [(String, serde_json::Value)]);

impl Serialize for Extensions<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(self.0.iter().map(|(k, v)| (k, v)))
    }
}

/// The current time, RFC 3339 with milliseconds.
pub fn now() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}

pub(crate) fn null() -> Box<RawValue> {
    RawValue::from_string("null".to_owned()).unwrap_or_else(|_| unreachable!("null is JSON"))
}

/// An event encoded as the object a function receives, shared by all its deliveries.
pub struct SharedEvent {
    /// The event's id.
    pub id: String,
    /// The event's type.
    pub event_type: String,
    /// Who published it (the CloudEvents `source`).
    pub source: String,
    /// How many deliveries led to its publication.
    pub hops: u32,
    /// The id of the event whose delivery published it.
    pub cause: Option<String>,
    /// Who published it.
    pub origin: Origin,
    /// Its W3C trace context (the `traceparent` extension attribute), when it has one.
    pub traceparent: Option<String>,
    json: Box<RawValue>,
}

impl fmt::Debug for SharedEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedEvent")
            .field("id", &self.id)
            .field("type", &self.event_type)
            .field("hops", &self.hops)
            .finish_non_exhaustive()
    }
}

impl SharedEvent {
    /// The event object as one line of JSON.
    pub fn json(&self) -> &RawValue {
        &self.json
    }

    /// The same event without its data: `payload` null and no `data_base64` (what history keeps
    /// of an event whose payload it does not keep). The other members are kept as they are.
    pub(crate) fn without_payload(&self) -> SharedEvent {
        let members = serde_json::from_str::<std::collections::BTreeMap<String, Box<RawValue>>>(
            self.json.get(),
        );
        let json = match members {
            Ok(mut members) => {
                members.remove("data_base64");
                members.insert("payload".to_owned(), null());
                serde_json::value::to_raw_value(&members).unwrap_or_else(|_| null())
            }
            Err(_) => null(),
        };
        SharedEvent {
            id: self.id.clone(),
            event_type: self.event_type.clone(),
            source: self.source.clone(),
            hops: self.hops,
            cause: self.cause.clone(),
            origin: self.origin.clone(),
            traceparent: self.traceparent.clone(),
            json,
        }
    }

    /// Rebuilds a shared event from its stored object.
    pub fn from_stored(
        id: String,
        event_type: String,
        hops: u32,
        cause: Option<String>,
        origin: Origin,
        json: Box<RawValue>,
    ) -> SharedEvent {
        let object =
            serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(json.get()).ok();
        let attribute = |name: &str| {
            object
                .as_ref()
                .and_then(|o| o.get(name))
                .and_then(|v| v.as_str())
                .map(str::to_owned)
        };
        let traceparent = attribute(TRACEPARENT);
        let source = attribute("source").unwrap_or_default();
        SharedEvent {
            id,
            event_type,
            source,
            hops,
            cause,
            origin,
            traceparent,
            json,
        }
    }
}
