//! `Idempotency-Key` (draft-ietf-httpapi-idempotency-key-header) on `POST /run/{name}` and
//! `POST /events`: the first answer to a request is kept under its key, and a retry of the
//! same request gets it again (with `Idempotent-Replayed: true`) instead of running it twice.
//!
//! - the same key with the same request (function, method, path and query, body) within the
//!   key's time to live (`--idempotency-ttl`): the first answer again, status, headers, body;
//! - the same key with another request: 422; while the first request still runs: 409;
//! - a key longer than [`MAX_KEY_LEN`] characters, empty, with anything but printable ASCII
//!   (control characters included), or sent twice: 400.
//!
//! Keys are scoped by API key (a hash of the key the request used; the API key itself is never
//! stored) and kept durably by the bus ([`shs_bus::Bus::claim_key`]). An answer given before
//! the request ran (a malformed request, an unknown function, a function that could not take
//! it) releases the key, so that a retry runs. A streamed answer goes to the client as it comes
//! and is kept at its end; a body larger than [`MAX_KEPT_BODY`] is not kept (its retries get the
//! status and headers with an empty body).

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use actix_web::body::{BodySize, BoxBody, MessageBody};
use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderName, HeaderValue};
use actix_web::{HttpRequest, HttpResponse, web};
use serde_json::Map;
use sha2::{Digest, Sha256};
use shs_bus::idempotency::{Claimed, KeptAnswer, KeyClaim, MAX_KEY_LEN};
use shs_bus::{Bus, BusError};

use crate::error_response;

/// The request header.
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";
/// The header on an answer given again.
pub const IDEMPOTENT_REPLAYED: &str = "idempotent-replayed";
/// The default time a key is kept (`--idempotency-ttl`).
pub const DEFAULT_TTL: Duration = Duration::from_secs(24 * 3600);
/// The largest body kept with a key.
pub const MAX_KEPT_BODY: usize = 4 * 1024 * 1024;

/// A response extension a handler sets on an answer given before the request ran: the key is
/// released rather than kept.
#[derive(Clone, Copy, Debug)]
pub(crate) struct NotRun;

/// Marks `response` as given before the request ran (see [`NotRun`]).
pub(crate) fn not_run(mut response: HttpResponse) -> HttpResponse {
    response.extensions_mut().insert(NotRun);
    response
}

/// The request's idempotency key: `Ok(None)` without one, a 400 when it is malformed. The
/// value is a structured-field string (`"..."`, as the draft writes it) or the bare key.
pub(crate) fn key_of(req: &HttpRequest) -> Result<Option<String>, HttpResponse> {
    let mut values = req.headers().get_all(IDEMPOTENCY_KEY);
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(bad_key("send one Idempotency-Key header, not several"));
    }
    parse_key(value.as_bytes()).map(Some).map_err(bad_key)
}

fn bad_key(reason: &str) -> HttpResponse {
    error_response(
        StatusCode::BAD_REQUEST,
        format!("invalid Idempotency-Key: {reason}"),
        Map::new(),
    )
}

/// Parses a key: a structured-field string (quotes, `\"` and `\\` escapes) or the bare value;
/// 1 to [`MAX_KEY_LEN`] characters of printable ASCII (the draft's structured-field string).
fn parse_key(raw: &[u8]) -> Result<String, &'static str> {
    if let Some(&b) = raw
        .iter()
        .find(|&&b| !(b == b' ' || b == b'\t' || b.is_ascii_graphic()))
    {
        return Err(if b.is_ascii_control() {
            "it holds control characters"
        } else {
            "it holds characters other than printable ASCII"
        });
    }
    let text = std::str::from_utf8(raw).map_err(|_| "it is not ASCII")?;
    let text = text.trim_matches([' ', '\t']);
    let key = match text.strip_prefix('"') {
        Some(rest) => {
            let Some(inner) = rest.strip_suffix('"') else {
                return Err("a quoted key must end with a quote");
            };
            let mut key = String::with_capacity(inner.len());
            let mut chars = inner.chars();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => match chars.next() {
                        Some(e @ ('"' | '\\')) => key.push(e),
                        _ => return Err("in a quoted key, \\ may only escape \" or \\"),
                    },
                    '"' => return Err("a quote inside a quoted key must be escaped"),
                    c => key.push(c),
                }
            }
            key
        }
        None => text.to_owned(),
    };
    if key.is_empty() {
        return Err("it is empty");
    }
    if key.chars().any(char::is_control) {
        return Err("it holds control characters");
    }
    if key.chars().count() > MAX_KEY_LEN {
        return Err("it is longer than 255 characters");
    }
    Ok(key)
}

/// What identifies a request under a key: SHA-256 over each part with its length, in hex.
pub(crate) fn fingerprint(parts: &[&[u8]]) -> String {
    let mut hash = Sha256::new();
    for part in parts {
        hash.update((part.len() as u64).to_be_bytes());
        hash.update(part);
    }
    hex(&hash.finalize())
}

/// Whose keys these are: a hash of the API key the request used (never the key itself), or
/// empty when the server has no API keys.
fn scope_of(req: &HttpRequest) -> String {
    match crate::access::api_key_used(req) {
        Some(api_key) => {
            let mut hash = Sha256::new();
            hash.update(b"shs idempotency scope\0");
            hash.update(&api_key);
            hex(&hash.finalize())
        }
        None => String::new(),
    }
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::with_capacity(64), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// Runs `handler` once per key: claims `key` for the request `fingerprint` names, then answers
/// what the key holds, or runs the handler and keeps its answer (unless `ran` says the request
/// did not run: then the key is released).
pub(crate) async fn once(
    req: &HttpRequest,
    bus: &Arc<Bus>,
    ttl: Duration,
    key: String,
    fingerprint: String,
    handler: impl Future<Output = HttpResponse>,
    ran: impl FnOnce(&HttpResponse) -> bool,
) -> HttpResponse {
    let scope = scope_of(req);
    let claim = KeyClaim {
        scope: scope.clone(),
        key: key.clone(),
        fingerprint,
        ttl,
    };
    match bus.claim_key(claim).await {
        Err(error) => key_store_failed(&error),
        Ok(Claimed::Done(answer)) => {
            metrics::counter!("shs_idempotent_replays_total").increment(1);
            replay(answer)
        }
        Ok(Claimed::InFlight) => {
            let mut response = error_response(
                StatusCode::CONFLICT,
                "a request with this Idempotency-Key is still running; retry once it has answered",
                Map::new(),
            );
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            response
        }
        Ok(Claimed::Mismatch) => error_response(
            StatusCode::UNPROCESSABLE_ENTITY,
            "this Idempotency-Key was used for another request (another function, method, path \
             or body); use a new key for a new request",
            Map::new(),
        ),
        Ok(Claimed::Fresh) => {
            let held = Held {
                bus: bus.clone(),
                scope,
                key,
                settled: false,
            };
            let response = handler.await;
            if ran(&response) && response.extensions().get::<NotRun>().is_none() {
                keep(held, response).await
            } else {
                held.settle(None).await;
                response
            }
        }
    }
}

fn key_store_failed(error: &BusError) -> HttpResponse {
    let status = match error {
        BusError::Unsupported(_) => StatusCode::NOT_IMPLEMENTED,
        _ => {
            tracing::error!("idempotency key store failed: {error}");
            StatusCode::INTERNAL_SERVER_ERROR
        }
    };
    error_response(
        status,
        format!("{error}; nothing ran: retry, or send the request without Idempotency-Key"),
        Map::new(),
    )
}

/// The answer kept under a key, given again.
fn replay(answer: KeptAnswer) -> HttpResponse {
    let status = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::OK);
    let mut response = HttpResponse::build(status);
    for (name, value) in &answer.headers {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_bytes(value),
        ) {
            response.append_header((name, value));
        }
    }
    response.insert_header((IDEMPOTENT_REPLAYED, "true"));
    response.body(answer.body.unwrap_or_default())
}

/// A key held by a running request: released if the request goes away before it is settled
/// (the client disconnected and the call was cancelled).
struct Held {
    bus: Arc<Bus>,
    scope: String,
    key: String,
    settled: bool,
}

impl Held {
    async fn settle(mut self, answer: Option<KeptAnswer>) {
        self.settled = true;
        let (scope, key) = (
            std::mem::take(&mut self.scope),
            std::mem::take(&mut self.key),
        );
        if let Err(error) = self.bus.settle_key(scope, key, answer).await {
            tracing::error!("cannot keep the answer of an idempotent request: {error}");
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        if self.settled {
            return;
        }
        let (bus, scope, key) = (
            self.bus.clone(),
            std::mem::take(&mut self.scope),
            std::mem::take(&mut self.key),
        );
        actix_web::rt::spawn(async move {
            if let Err(error) = bus.settle_key(scope, key, None).await {
                tracing::error!("cannot release an idempotency key: {error}");
            }
        });
    }
}

/// The headers of an answer worth giving again (not those of one connection or moment).
fn kept_headers(headers: &header::HeaderMap) -> Vec<(String, Vec<u8>)> {
    headers
        .iter()
        .filter(|(name, _)| {
            !matches!(
                name.as_str(),
                "date"
                    | "content-length"
                    | "transfer-encoding"
                    | "connection"
                    | "keep-alive"
                    | crate::REQUEST_ID
            )
        })
        .map(|(name, value)| (name.as_str().to_owned(), value.as_bytes().to_vec()))
        .collect()
}

/// Keeps `response` under the held key and answers it: a whole body once it is kept, a
/// streamed one as it comes (kept at its end).
async fn keep(held: Held, response: HttpResponse) -> HttpResponse {
    let status = response.status().as_u16();
    let headers = kept_headers(response.headers());
    let (head, body) = response.into_parts();
    if let BodySize::Stream = body.size() {
        let tee = Tee {
            body,
            kept: Some(Vec::new()),
            status,
            headers,
            held: Some(held),
        };
        return head.set_body(BoxBody::new(tee));
    }
    match actix_web::body::to_bytes(body).await {
        Ok(bytes) => {
            let kept = (bytes.len() <= MAX_KEPT_BODY).then(|| bytes.to_vec());
            held.settle(Some(KeptAnswer {
                status,
                headers,
                body: kept,
            }))
            .await;
            head.set_body(BoxBody::new(bytes))
        }
        Err(error) => {
            held.settle(None).await;
            error_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("cannot read the answer: {error}"),
                Map::new(),
            )
        }
    }
}

/// A streamed body, passed on chunk by chunk and copied (up to [`MAX_KEPT_BODY`]) to be kept
/// under the key at its end; a stream that breaks off releases the key.
struct Tee {
    body: BoxBody,
    kept: Option<Vec<u8>>,
    status: u16,
    headers: Vec<(String, Vec<u8>)>,
    held: Option<Held>,
}

impl MessageBody for Tee {
    type Error = Box<dyn std::error::Error>;

    fn size(&self) -> BodySize {
        BodySize::Stream
    }

    fn poll_next(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<web::Bytes, Self::Error>>> {
        let this = self.get_mut();
        let next = match Pin::new(&mut this.body).poll_next(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(next) => next,
        };
        match &next {
            Some(Ok(chunk)) => {
                if let Some(kept) = &mut this.kept {
                    if kept.len() + chunk.len() <= MAX_KEPT_BODY {
                        kept.extend_from_slice(chunk);
                    } else {
                        this.kept = None;
                    }
                }
            }
            // Dropping `held` releases the key.
            Some(Err(_)) => drop(this.held.take()),
            None => {
                if let Some(held) = this.held.take() {
                    let answer = KeptAnswer {
                        status: this.status,
                        headers: std::mem::take(&mut this.headers),
                        body: this.kept.take(),
                    };
                    actix_web::rt::spawn(held.settle(Some(answer)));
                }
            }
        }
        Poll::Ready(next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn keys_in_both_forms() {
        assert_eq!(parse_key(b"abc-123").as_deref(), Ok("abc-123"));
        assert_eq!(parse_key(b"\"abc 123\"").as_deref(), Ok("abc 123"));
        assert_eq!(parse_key(br#""a\"b\\c""#).as_deref(), Ok("a\"b\\c"));
        assert_eq!(parse_key(&[b'k'; 255]).map(|k| k.len()), Ok(255));
    }

    #[test]
    fn bad_keys_are_refused() {
        assert!(parse_key(b"").is_err());
        assert!(parse_key(b"\"\"").is_err());
        assert!(parse_key(b"\"open").is_err());
        assert!(parse_key(br#""a\nb""#).is_err());
        assert!(parse_key(b"\"a\"b\"").is_err());
        assert!(parse_key(b"a\x01b").is_err());
        assert!(parse_key(b"a\x7fb").is_err());
        assert!(parse_key(&[0xff, 0xfe]).is_err());
        assert!(parse_key("\"clé\"".as_bytes()).is_err());
        assert!(parse_key(&[b'k'; 256]).is_err());
    }

    #[test]
    fn fingerprints_tell_parts_apart() {
        assert_ne!(fingerprint(&[b"ab", b"c"]), fingerprint(&[b"a", b"bc"]));
        assert_eq!(fingerprint(&[b"a"]), fingerprint(&[b"a"]));
        assert_eq!(fingerprint(&[b"a"]).len(), 64);
    }

    proptest! {
        #[test]
        fn any_header_bytes_give_a_key_or_a_refusal(raw in proptest::collection::vec(any::<u8>(), 0..600)) {
            if let Ok(key) = parse_key(&raw) {
                prop_assert!(!key.is_empty());
                prop_assert!(key.chars().count() <= MAX_KEY_LEN);
                prop_assert!(key.bytes().all(|b| b == b' ' || b.is_ascii_graphic()));
            }
        }
    }
}
