//! JSON-RPC 2.0 messages: parsing one line, writing one line.

use std::fmt;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};
use serde_json::value::RawValue;

use crate::JSONRPC_VERSION;
use crate::codec::write_json_line_safe;

/// A request id, as JSON-RPC allows it: an integer or a string.
///
/// The supervisor numbers its own requests with integers; a function may use either kind and
/// gets its own id back, unchanged, in the answer.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Id {
    /// An integer id.
    Int(i64),
    /// A string id.
    Str(String),
}

impl Id {
    /// The id as an unsigned integer, when it is one.
    pub fn as_u64(&self) -> Option<u64> {
        match self {
            Id::Int(n) => u64::try_from(*n).ok(),
            Id::Str(_) => None,
        }
    }
}

impl From<u64> for Id {
    fn from(n: u64) -> Self {
        // Ids above i64::MAX are never produced by a counter in practice; saturate rather than wrap.
        Id::Int(i64::try_from(n).unwrap_or(i64::MAX))
    }
}

impl fmt::Display for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Id::Int(n) => write!(f, "{n}"),
            Id::Str(s) => write!(f, "{s:?}"),
        }
    }
}

impl Serialize for Id {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Id::Int(n) => serializer.serialize_i64(*n),
            Id::Str(s) => serializer.serialize_str(s),
        }
    }
}

impl<'de> Deserialize<'de> for Id {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct IdVisitor;
        impl Visitor<'_> for IdVisitor {
            type Value = Id;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an integer or a string")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Id, E> {
                Ok(Id::Int(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Id, E> {
                i64::try_from(v)
                    .map(Id::Int)
                    .map_err(|_| E::custom("id out of range"))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Id, E> {
                // JSON-RPC discourages fractional ids; accept integral ones written as floats.
                if v.fract() == 0.0 && v.abs() < 9.0e15 {
                    Ok(Id::Int(v as i64))
                } else {
                    Err(E::custom("fractional ids are not supported"))
                }
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Id, E> {
                Ok(Id::Str(v.to_owned()))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Id, E> {
                Ok(Id::Str(v))
            }
        }
        deserializer.deserialize_any(IdVisitor)
    }
}

/// The `error` member of an answer: `{"code": int, "message": str, "data"?: any}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RpcError {
    /// A number saying what kind of error this is; see [`crate::methods::error_code`].
    pub code: i64,
    /// A short description, meant for people.
    pub message: String,
    /// Anything else the sender wants to pass along.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<serde_json::Value>,
}

impl RpcError {
    /// An error with no `data`.
    pub fn new(code: i64, message: impl Into<String>) -> Self {
        RpcError {
            code,
            message: message.into(),
            data: None,
        }
    }
}

impl fmt::Display for RpcError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (code {})", self.message, self.code)
    }
}

/// A request: a message with a `method` and an `id`, to be answered.
#[derive(Debug)]
pub struct Request {
    /// The sender's id for this request.
    pub id: Id,
    /// The method name.
    pub method: String,
    /// The parameters, unparsed.
    pub params: Option<Box<RawValue>>,
}

/// A notification: a message with a `method` and no `id`; it gets no answer.
#[derive(Debug)]
pub struct Notification {
    /// The method name.
    pub method: String,
    /// The parameters, unparsed.
    pub params: Option<Box<RawValue>>,
}

/// An answer to a request: a `result` or an `error`.
#[derive(Debug)]
pub struct Response {
    /// The id of the request this answers; `None` when the peer answered `null` (it could not
    /// read the request's id).
    pub id: Option<Id>,
    /// The `result` (as it was written) or the `error`.
    pub outcome: Result<Box<RawValue>, RpcError>,
}

/// One message of the protocol.
#[derive(Debug)]
pub enum Message {
    /// A request, to be answered.
    Request(Request),
    /// A notification, not answered.
    Notification(Notification),
    /// An answer to one of the reader's own requests.
    Response(Response),
}

/// Why a line is not a JSON-RPC message.
#[derive(Debug, thiserror::Error)]
pub enum ParseError {
    /// The line is not JSON at all, or not a JSON object.
    #[error("not a JSON-RPC message: {0}")]
    Json(#[from] serde_json::Error),
    /// The line is a JSON object but fits none of request, notification and answer.
    #[error("not a JSON-RPC message: {0}")]
    Shape(&'static str),
}

/// The members of any message, before it is classified.
#[derive(Deserialize)]
struct RawMessage {
    #[serde(default)]
    jsonrpc: Option<String>,
    #[serde(default, deserialize_with = "present")]
    id: Option<Option<Id>>,
    #[serde(default)]
    method: Option<String>,
    #[serde(default)]
    params: Option<Box<RawValue>>,
    #[serde(default, deserialize_with = "present")]
    result: Option<Box<RawValue>>,
    #[serde(default)]
    error: Option<RpcError>,
}

/// Makes a member that is present as `null` distinguishable from an absent one.
fn present<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    T::deserialize(deserializer).map(Some)
}

impl Message {
    /// Parses and classifies one line (without its `\n`).
    ///
    /// The `jsonrpc` member may be absent; when present it must be `"2.0"`.
    pub fn parse(line: &[u8]) -> Result<Message, ParseError> {
        let raw: RawMessage = serde_json::from_slice(line)?;
        if let Some(version) = &raw.jsonrpc
            && version != JSONRPC_VERSION
        {
            return Err(ParseError::Shape("\"jsonrpc\" must be \"2.0\""));
        }
        if let Some(method) = raw.method {
            if raw.result.is_some() || raw.error.is_some() {
                return Err(ParseError::Shape(
                    "a message cannot have both \"method\" and \"result\"/\"error\"",
                ));
            }
            return Ok(match raw.id {
                Some(Some(id)) => Message::Request(Request {
                    id,
                    method,
                    params: raw.params,
                }),
                Some(None) => return Err(ParseError::Shape("a request id cannot be null")),
                None => Message::Notification(Notification {
                    method,
                    params: raw.params,
                }),
            });
        }
        let id = match raw.id {
            Some(id) => id,
            None => return Err(ParseError::Shape("an answer needs an \"id\"")),
        };
        let outcome = match (raw.result, raw.error) {
            (Some(result), None) => Ok(result),
            (None, Some(error)) => Err(error),
            (Some(_), Some(_)) => {
                return Err(ParseError::Shape(
                    "an answer has \"result\" or \"error\", not both",
                ));
            }
            (None, None) => {
                return Err(ParseError::Shape(
                    "a message needs \"method\", \"result\" or \"error\"",
                ));
            }
        };
        if id.is_none() && outcome.is_ok() {
            return Err(ParseError::Shape("a result needs a non-null \"id\""));
        }
        Ok(Message::Response(Response { id, outcome }))
    }
}

#[derive(Serialize)]
struct OutRequest<'a, P> {
    jsonrpc: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a Id>,
    method: &'a str,
    params: &'a P,
}

#[derive(Serialize)]
struct OutResult<'a, R: ?Sized> {
    jsonrpc: &'static str,
    id: &'a Id,
    result: &'a R,
}

#[derive(Serialize)]
struct OutError<'a> {
    jsonrpc: &'static str,
    id: Option<&'a Id>,
    error: &'a RpcError,
}

/// Appends `message` and its `\n` to `buf`, as one line for every common reader (see
/// [`crate::codec::LineFormatter`]); on error nothing is appended.
fn write_line<M: Serialize>(buf: &mut Vec<u8>, message: &M) -> serde_json::Result<()> {
    write_json_line_safe(buf, message)?;
    buf.push(b'\n');
    Ok(())
}

/// Appends one request line to `buf`.
///
/// The line is one line for every common reader whatever `params` holds, raw JSON from
/// outside included: a `\r` or `\n` between tokens is left out, and U+0085, U+2028 and U+2029
/// are escaped (see [`crate::codec::LineFormatter`]). The same holds for every `write_*`
/// function.
pub fn write_request<P: Serialize + ?Sized>(
    buf: &mut Vec<u8>,
    id: &Id,
    method: &str,
    params: &P,
) -> serde_json::Result<()> {
    write_line(
        buf,
        &OutRequest {
            jsonrpc: JSONRPC_VERSION,
            id: Some(id),
            method,
            params: &params,
        },
    )
}

/// Appends one notification line (a request without id) to `buf`.
pub fn write_notification<P: Serialize + ?Sized>(
    buf: &mut Vec<u8>,
    method: &str,
    params: &P,
) -> serde_json::Result<()> {
    write_line(
        buf,
        &OutRequest {
            jsonrpc: JSONRPC_VERSION,
            id: None,
            method,
            params: &params,
        },
    )
}

/// Appends one answer line to `buf`: a `result` or an `error`.
pub fn write_response<R: Serialize + ?Sized>(
    buf: &mut Vec<u8>,
    id: &Id,
    outcome: Result<&R, &RpcError>,
) -> serde_json::Result<()> {
    match outcome {
        Ok(result) => write_line(
            buf,
            &OutResult {
                jsonrpc: JSONRPC_VERSION,
                id,
                result,
            },
        ),
        Err(error) => write_line(
            buf,
            &OutError {
                jsonrpc: JSONRPC_VERSION,
                id: Some(id),
                error,
            },
        ),
    }
}

/// Appends one answer line whose `result` is already-encoded JSON.
pub fn write_response_raw(buf: &mut Vec<u8>, id: &Id, result: &RawValue) -> serde_json::Result<()> {
    write_response(buf, id, Ok(result))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Message, ParseError> {
        Message::parse(s.as_bytes())
    }

    #[test]
    fn classifies_requests_notifications_and_answers() {
        match parse(r#"{"jsonrpc":"2.0","id":7,"method":"publish","params":{"type":"a"}}"#) {
            Ok(Message::Request(r)) => {
                assert_eq!(r.id, Id::Int(7));
                assert_eq!(r.method, "publish");
                assert_eq!(
                    r.params.map(|p| p.get().to_owned()).as_deref(),
                    Some(r#"{"type":"a"}"#)
                );
            }
            other => panic!("expected a request, got {other:?}"),
        }
        match parse(r#"{"jsonrpc":"2.0","method":"publish","params":{}}"#) {
            Ok(Message::Notification(n)) => assert_eq!(n.method, "publish"),
            other => panic!("expected a notification, got {other:?}"),
        }
        match parse(r#"{"jsonrpc":"2.0","id":"a-1","result":{"x":[1, 2]}}"#) {
            Ok(Message::Response(r)) => {
                assert_eq!(r.id, Some(Id::Str("a-1".into())));
                assert_eq!(
                    r.outcome.map(|v| v.get().to_owned()).ok().as_deref(),
                    Some(r#"{"x":[1, 2]}"#)
                );
            }
            other => panic!("expected an answer, got {other:?}"),
        }
        match parse(r#"{"jsonrpc":"2.0","id":3,"error":{"code":-1,"message":"no","data":{"k":1}}}"#)
        {
            Ok(Message::Response(Response {
                outcome: Err(e), ..
            })) => {
                assert_eq!(e.code, -1);
                assert_eq!(e.message, "no");
                assert_eq!(e.data, Some(serde_json::json!({"k": 1})));
            }
            other => panic!("expected an error answer, got {other:?}"),
        }
    }

    #[test]
    fn a_null_result_is_a_result() {
        match parse(r#"{"jsonrpc":"2.0","id":1,"result":null}"#) {
            Ok(Message::Response(Response { outcome: Ok(v), .. })) => assert_eq!(v.get(), "null"),
            other => panic!("expected a null result, got {other:?}"),
        }
    }

    #[test]
    fn jsonrpc_member_is_optional_but_checked() {
        assert!(matches!(
            parse(r#"{"id":1,"result":1}"#),
            Ok(Message::Response(_))
        ));
        assert!(matches!(
            parse(r#"{"jsonrpc":"1.0","id":1,"result":1}"#),
            Err(ParseError::Shape(_))
        ));
    }

    #[test]
    fn rejects_what_is_not_a_message() {
        for line in [
            "hello world",
            "",
            "[1,2]",
            "42",
            r#"{"foo":1}"#,
            r#"{"id":1}"#,
            r#"{"id":1,"result":1,"error":{"code":1,"message":"x"}}"#,
            r#"{"id":1,"method":"m","result":1}"#,
            r#"{"id":null,"method":"m"}"#,
            r#"{"id":null,"result":1}"#,
            r#"{"id":[1],"result":1}"#,
            r#"{"id":1.5,"result":1}"#,
            r#"{"id":1,"error":"bad"}"#,
            r#"{"id":1,"result":1"#,
        ] {
            assert!(parse(line).is_err(), "{line:?} should not parse");
        }
    }

    #[test]
    fn an_error_answer_may_have_a_null_id() {
        match parse(
            r#"{"jsonrpc":"2.0","id":null,"error":{"code":-32700,"message":"parse error"}}"#,
        ) {
            Ok(Message::Response(Response {
                id: None,
                outcome: Err(_),
            })) => {}
            other => panic!("expected an error answer without id, got {other:?}"),
        }
    }

    #[test]
    fn writes_one_line_per_message() {
        let mut buf = Vec::new();
        write_request(
            &mut buf,
            &Id::Int(1),
            "invoke",
            &serde_json::json!({"a": "x\ny"}),
        )
        .expect("serializes");
        write_notification(&mut buf, "publish", &serde_json::json!({"type": "t"}))
            .expect("serializes");
        write_response(&mut buf, &Id::Str("f1".into()), Ok(&true)).expect("serializes");
        write_response::<()>(
            &mut buf,
            &Id::Int(2),
            Err(&RpcError::new(-32601, "method not found")),
        )
        .expect("serializes");
        let text = String::from_utf8(buf).expect("utf-8");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines,
            [
                r#"{"jsonrpc":"2.0","id":1,"method":"invoke","params":{"a":"x\ny"}}"#,
                r#"{"jsonrpc":"2.0","method":"publish","params":{"type":"t"}}"#,
                r#"{"jsonrpc":"2.0","id":"f1","result":true}"#,
                r#"{"jsonrpc":"2.0","id":2,"error":{"code":-32601,"message":"method not found"}}"#,
            ]
        );
        assert!(text.ends_with('\n'));
        for line in lines {
            assert!(
                Message::parse(line.as_bytes()).is_ok(),
                "{line} round-trips"
            );
        }
    }
}
