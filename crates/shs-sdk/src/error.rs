//! The error a handler answers with, and what becomes of it on the wire.

use std::fmt;

use serde::Serialize;
use shs_protocol::RpcError;
use shs_protocol::methods::error_code;

/// An error a handler answers with: a JSON-RPC error `{code, message, data?}`.
///
/// `POST /run/NAME` answers it as a 500 with the same `code`, `message` and `data`; an event
/// handler's error is listed in the publisher's `errors`.
///
/// Any [`std::error::Error`] converts into it with `?`, as code `-32000`
/// ([`Error::FUNCTION_ERROR`]) and the error's message, so a handler can use `?` on whatever
/// it calls. (For that, `Error` itself does not implement `std::error::Error`.)
///
/// ```
/// use shs_sdk::Error;
/// use serde_json::json;
///
/// let e = Error::new("no such order").with_code(404).with_data(json!({"order": 7}));
/// assert_eq!((e.code(), e.message()), (404, "no such order"));
/// assert_eq!(e.data(), Some(&json!({"order": 7})));
/// ```
#[derive(Clone, PartialEq)]
pub struct Error {
    inner: RpcError,
}

impl Error {
    /// The conventional code of a function's own failure, `-32000`.
    pub const FUNCTION_ERROR: i64 = error_code::FUNCTION_ERROR;
    /// The code for a request whose parameters do not fit, `-32602`.
    pub const INVALID_PARAMS: i64 = error_code::INVALID_PARAMS;
    /// The code for a method (or event type) that nobody handles, `-32601`.
    pub const METHOD_NOT_FOUND: i64 = error_code::METHOD_NOT_FOUND;

    /// An error with code `-32000` and no data.
    pub fn new(message: impl Into<String>) -> Self {
        Error {
            inner: RpcError::new(Self::FUNCTION_ERROR, message),
        }
    }

    /// The same error with another code.
    pub fn with_code(mut self, code: i64) -> Self {
        self.inner.code = code;
        self
    }

    /// The same error with `data` (anything serializable; something that does not serialize
    /// becomes a string saying why).
    pub fn with_data(mut self, data: impl Serialize) -> Self {
        self.inner.data =
            Some(serde_json::to_value(data).unwrap_or_else(|e| {
                serde_json::Value::String(format!("unserializable data: {e}"))
            }));
        self
    }

    /// An error with code `-32602` (invalid params).
    pub fn invalid_params(message: impl Into<String>) -> Self {
        Error::new(message).with_code(Self::INVALID_PARAMS)
    }

    /// An error with code `-32601` (method not found).
    pub fn method_not_found(message: impl Into<String>) -> Self {
        Error::new(message).with_code(Self::METHOD_NOT_FOUND)
    }

    /// An error answer as it came over the wire, kept as it is.
    pub fn from_rpc(error: RpcError) -> Self {
        Error { inner: error }
    }

    /// The error code.
    pub fn code(&self) -> i64 {
        self.inner.code
    }

    /// The message.
    pub fn message(&self) -> &str {
        &self.inner.message
    }

    /// The data, if any.
    pub fn data(&self) -> Option<&serde_json::Value> {
        self.inner.data.as_ref()
    }

    /// The wire form, `{code, message, data?}`.
    pub fn as_rpc(&self) -> &RpcError {
        &self.inner
    }

    /// The wire form, `{code, message, data?}`.
    pub fn into_rpc(self) -> RpcError {
        self.inner
    }
}

impl<E: std::error::Error + Send + Sync + 'static> From<E> for Error {
    fn from(error: E) -> Self {
        Error::new(error.to_string())
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (code {})", self.inner.message, self.inner.code)
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Error")
            .field("code", &self.inner.code)
            .field("message", &self.inner.message)
            .field("data", &self.inner.data)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_std_error_becomes_a_function_error() {
        fn parse(s: &str) -> Result<i32, Error> {
            Ok(s.parse::<i32>()?)
        }
        let e = parse("x").expect_err("fails");
        assert_eq!(e.code(), -32000);
        assert_eq!(e.message(), "invalid digit found in string");
        assert_eq!(e.data(), None);
    }

    #[test]
    fn codes_and_data_are_kept() {
        let e = Error::invalid_params("bad").with_data(serde_json::json!([1]));
        assert_eq!(e.code(), -32602);
        assert_eq!(
            serde_json::to_string(e.as_rpc()).ok().as_deref(),
            Some(r#"{"code":-32602,"message":"bad","data":[1]}"#)
        );
        assert_eq!(e.to_string(), "bad (code -32602)");
    }
}
