//! Asynchronous invocations, the supervisor's side: the request as the bus stores it
//! ([`StoredRequest`]: an HTTP request to `/run/NAME...`, or an input, with its trace context
//! and checked webhook) and how an attempt runs it ([`Supervisor::run_invocation`]).

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use shs_bus::store::InvocationWork;
use shs_bus::{Causation, DeliveryError};
use shs_protocol::methods::ScheduleContext;

use super::deliver::delivery_error;
use super::{Job, Output, Request, Supervisor};
use crate::http::HttpRequest;
use crate::spec::WebhookKind;

/// The request of an asynchronous invocation, as it is stored.
#[derive(Debug, Serialize, Deserialize)]
pub struct StoredRequest {
    /// The HTTP request, for `POST /run/NAME...` with `Prefer: respond-async`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<StoredHttp>,
    /// The input, for an invocation without an HTTP request (a schedule's occurrence).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<Box<RawValue>>,
    /// The W3C trace context, `context.traceparent`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
    /// The webhook signature checked before it was accepted, `context.webhook`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<String>,
}

/// An HTTP request, stored.
#[derive(Debug, Serialize, Deserialize)]
pub struct StoredHttp {
    method: String,
    path: String,
    #[serde(default)]
    query: String,
    #[serde(default)]
    headers: std::collections::BTreeMap<String, String>,
    /// The body, base64.
    #[serde(default)]
    body_base64: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    remote_addr: Option<String>,
}

impl StoredRequest {
    /// The stored form of an HTTP request to a function, `traceparent` and the `webhook`
    /// signature checked.
    pub fn http(
        request: &HttpRequest,
        traceparent: Option<String>,
        webhook: Option<WebhookKind>,
    ) -> StoredRequest {
        StoredRequest {
            http: Some(StoredHttp {
                method: request.method.clone(),
                path: request.path.clone(),
                query: request.query.clone(),
                headers: request.headers.clone(),
                body_base64: base64::engine::general_purpose::STANDARD.encode(&request.body),
                remote_addr: request.remote_addr.clone(),
            }),
            input: None,
            traceparent,
            webhook: webhook.map(|k| k.as_str().to_owned()),
        }
    }

    /// The stored form of an invocation on `input` (any JSON).
    pub fn input(input: Box<RawValue>) -> StoredRequest {
        StoredRequest {
            http: None,
            input: Some(input),
            traceparent: None,
            webhook: None,
        }
    }

    /// As JSON, for the store.
    pub fn to_raw(&self) -> Box<RawValue> {
        serde_json::value::to_raw_value(self).unwrap_or_else(|_| empty())
    }
}

fn empty() -> Box<RawValue> {
    RawValue::from_string("{}".to_owned()).unwrap_or_else(|_| unreachable!("{{}} is JSON"))
}

fn webhook_kind(kind: &str) -> Option<WebhookKind> {
    [
        WebhookKind::Github,
        WebhookKind::Stripe,
        WebhookKind::Slack,
        WebhookKind::HmacSha256,
    ]
    .into_iter()
    .find(|k| k.as_str() == kind)
}

impl Supervisor {
    /// Runs an attempt of asynchronous invocation `work` of function `name`; its answer as
    /// JSON (an exec function's output that is not JSON as a string, or `{"body_base64"}`).
    pub(super) async fn run_invocation(
        &self,
        name: &str,
        work: &InvocationWork,
        cause: Causation,
    ) -> Result<Box<RawValue>, DeliveryError> {
        let stored: StoredRequest = serde_json::from_str(work.request.get()).map_err(|e| {
            DeliveryError::permanent(400, format!("the stored request does not parse: {e}"))
        })?;
        let schedule: Option<ScheduleContext> = work
            .schedule
            .as_ref()
            .and_then(|s| serde_json::from_str(s.get()).ok());
        let job = match (stored.http, stored.input) {
            (Some(http), _) => {
                let body = base64::engine::general_purpose::STANDARD
                    .decode(http.body_base64.as_bytes())
                    .unwrap_or_default();
                let request = HttpRequest {
                    method: http.method,
                    path: http.path,
                    query: http.query,
                    headers: http.headers,
                    body: body.into(),
                    remote_addr: http.remote_addr,
                    ..HttpRequest::default()
                };
                // A CGI script takes its body as it came.
                let invoke = if self.http_front(name).cgi {
                    request.into_raw_invoke()
                } else {
                    request
                        .into_invoke()
                        .map_err(|e| DeliveryError::permanent(400, e.to_string()))?
                };
                Job::Http(Box::new(invoke), None)
            }
            (None, Some(input)) => Job::Invoke(input),
            (None, None) => Job::Invoke(empty()),
        };
        let request = Request {
            job,
            request_id: &work.id,
            trace: stored.traceparent.as_deref(),
            cause,
            webhook: stored.webhook.as_deref().and_then(webhook_kind),
            schedule,
        };
        match self.run(name, request).await {
            Ok(Output::Json(answer)) => Ok(answer),
            Ok(Output::Raw(bytes)) => Ok(raw_answer(&bytes)),
            Ok(Output::Cgi(response)) => {
                let limit = self.inner.host.config.max_line;
                match response.read_to_end(name, limit).await {
                    Ok(bytes) => Ok(raw_answer(&bytes)),
                    Err(e) => Err(delivery_error(&e)),
                }
            }
            Err(e) => Err(delivery_error(&e)),
        }
    }
}

/// An exec function's output as JSON: itself when it is JSON, a string when it is text, else
/// `{"body_base64": ...}`.
fn raw_answer(bytes: &[u8]) -> Box<RawValue> {
    if let Ok(text) = std::str::from_utf8(bytes) {
        let trimmed = text.trim();
        if serde_json::from_str::<serde::de::IgnoredAny>(trimmed).is_ok()
            && let Ok(raw) = RawValue::from_string(trimmed.to_owned())
        {
            return raw;
        }
        return serde_json::value::to_raw_value(text).unwrap_or_else(|_| empty());
    }
    let encoded = base64::engine::general_purpose::STANDARD.encode(bytes);
    serde_json::value::to_raw_value(&serde_json::json!({ "body_base64": encoded }))
        .unwrap_or_else(|_| empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_exec_answer_is_kept_as_json_text_or_base64() {
        assert_eq!(raw_answer(b"{\"a\":1}\n").get(), "{\"a\":1}");
        assert_eq!(raw_answer(b"hello").get(), "\"hello\"");
        assert_eq!(
            raw_answer(&[0xff, 0x00]).get(),
            "{\"body_base64\":\"/wA=\"}"
        );
    }

    #[test]
    fn a_stored_http_request_reads_back() {
        let mut request = HttpRequest {
            method: "POST".into(),
            path: "/x".into(),
            body: bytes::Bytes::from_static(b"{\"n\":1}"),
            ..HttpRequest::default()
        };
        request.add_header("content-type", "application/json");
        let raw = StoredRequest::http(&request, None, Some(WebhookKind::Github)).to_raw();
        let back: StoredRequest = serde_json::from_str(raw.get()).expect("parses");
        let http = back.http.expect("http");
        assert_eq!((http.method.as_str(), http.path.as_str()), ("POST", "/x"));
        assert_eq!(http.body_base64, "eyJuIjoxfQ==");
        assert_eq!(
            back.webhook.as_deref().and_then(webhook_kind),
            Some(WebhookKind::Github)
        );
    }
}
