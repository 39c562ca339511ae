//! What every request goes through before its route: a request id, the drain at shutdown,
//! the API key check and the per-client rate limit.
//!
//! - **Request id.** `X-Request-Id` is taken from the request when it is sensible (1 to 128
//!   visible ASCII characters), else made up; it is returned on the response, given to the
//!   function in `context.request_id`, and carried by a span on every log line of the request.
//!   A W3C `traceparent` header is checked and passed on the same way.
//! - **API keys.** With `--api-key` set, every route but `/health`, `/ready` and the
//!   dashboard's shell (`/ui`, `/ui/...`: files that hold no data) needs one of the keys in
//!   `X-API-Key` or `Authorization: Bearer`. Keys are compared in constant time ([`subtle`]),
//!   every configured key every time.
//! - **Rate limit.** A token bucket per client address (`governor`): `--rate-limit` requests a
//!   second with bursts of `--rate-burst`. The client is the peer address; `X-Forwarded-For`
//!   is believed only when the peer is one of `--trusted-proxy`, and then the client is the
//!   last address in it that is not itself a trusted proxy.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::middleware::Next;
use actix_web::{HttpMessage, HttpResponse, web};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use ipnet::IpNet;
use serde_json::Map;
use subtle::ConstantTimeEq;
use tracing::Instrument;

use crate::{Lifecycle, REQUEST_ID, error_response};

/// A rate limit per client.
#[derive(Clone, Copy, Debug)]
pub struct RateLimit {
    /// Requests a second, sustained.
    pub per_second: NonZeroU32,
    /// Requests at once, after a quiet spell.
    pub burst: NonZeroU32,
}

/// Who may use the API, and how much.
#[derive(Clone, Debug, Default)]
pub struct AccessConfig {
    /// The API keys; none means no key is needed.
    pub api_keys: Vec<String>,
    /// The rate limit per client; none means no limit.
    pub rate_limit: Option<RateLimit>,
    /// Proxies whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<IpNet>,
}

/// The request's id, in the request's extensions.
#[derive(Clone, Debug)]
pub struct RequestId(pub String);

/// The request's W3C trace context, in the request's extensions.
#[derive(Clone, Debug)]
pub struct TraceParent(pub String);

/// The state of the guard, shared by every worker.
pub(crate) struct Guard {
    keys: Vec<Vec<u8>>,
    limiter: Option<DefaultKeyedRateLimiter<IpAddr>>,
    trusted: Vec<IpNet>,
    lifecycle: Arc<Lifecycle>,
    prefix: u64,
    counter: AtomicU64,
}

impl Guard {
    pub(crate) fn new(config: &AccessConfig, lifecycle: Arc<Lifecycle>) -> Guard {
        Guard {
            keys: config
                .api_keys
                .iter()
                .map(|k| k.as_bytes().to_vec())
                .collect(),
            limiter: config
                .rate_limit
                .map(|r| RateLimiter::keyed(Quota::per_second(r.per_second).allow_burst(r.burst))),
            trusted: config.trusted_proxies.clone(),
            lifecycle,
            prefix: uuid::Uuid::new_v4().as_u128() as u64,
            counter: AtomicU64::new(0),
        }
    }

    /// Forgets clients that have not been seen for a while (the limiter keeps a bucket per
    /// address).
    pub(crate) fn forget_idle_clients(&self) {
        if let Some(limiter) = &self.limiter {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
    }

    /// A fresh request id: unique per server run, without asking the OS for randomness.
    fn new_request_id(&self) -> String {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        format!("{:016x}{n:016x}", self.prefix)
    }

    /// Whether `candidate` is one of the keys. Every key is compared, in constant time.
    fn accepts(&self, candidate: &[u8]) -> bool {
        self.keys
            .iter()
            .fold(subtle::Choice::from(0), |found, key| {
                found | key.as_slice().ct_eq(candidate)
            })
            .into()
    }

    /// The client's address: the peer, or what trusted proxies say it is.
    fn client(&self, req: &ServiceRequest) -> Option<IpAddr> {
        let peer = req.peer_addr().map(|a| a.ip())?;
        if !self.trusted.iter().any(|net| net.contains(&peer)) {
            return Some(peer);
        }
        let forwarded = req
            .headers()
            .get_all("x-forwarded-for")
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|a| a.trim().parse::<IpAddr>().ok())
            .collect::<Vec<_>>();
        forwarded
            .into_iter()
            .rev()
            .find(|ip| !self.trusted.iter().any(|net| net.contains(ip)))
            .or(Some(peer))
    }
}

/// Checks a W3C `traceparent`: `00-<32 hex>-<16 hex>-<2 hex>`, ids not all zero.
pub fn valid_traceparent(value: &str) -> bool {
    let parts: Vec<&str> = value.split('-').collect();
    let hex = |s: &str, n: usize| {
        s.len() == n
            && s.bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    };
    parts.len() == 4
        && hex(parts[0], 2)
        && parts[0] != "ff"
        && hex(parts[1], 32)
        && parts[1].bytes().any(|b| b != b'0')
        && hex(parts[2], 16)
        && parts[2].bytes().any(|b| b != b'0')
        && hex(parts[3], 2)
}

fn key_of(req: &ServiceRequest) -> Option<&[u8]> {
    let headers = req.headers();
    if let Some(key) = headers.get("x-api-key") {
        return Some(key.as_bytes());
    }
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(|k| k.trim().as_bytes())
}

/// The middleware: request id and span, drain, API key, rate limit; then the route.
pub(crate) async fn guard<B: MessageBody + 'static>(
    req: ServiceRequest,
    next: Next<B>,
) -> Result<ServiceResponse<EitherBody<B>>, actix_web::Error> {
    let Some(guard) = req.app_data::<web::Data<Guard>>().cloned() else {
        return next
            .call(req)
            .await
            .map(ServiceResponse::map_into_left_body);
    };
    let request_id = req
        .headers()
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_graphic()))
        .map_or_else(|| guard.new_request_id(), str::to_owned);
    let traceparent = req
        .headers()
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .filter(|v| valid_traceparent(v))
        .map(str::to_owned);
    let span = tracing::info_span!(
        "request",
        request_id = %request_id,
        method = %req.method(),
        path = %req.path(),
    );
    let header_value = HeaderValue::from_str(&request_id).ok();
    {
        let mut extensions = req.extensions_mut();
        extensions.insert(RequestId(request_id));
        if let Some(trace) = traceparent {
            extensions.insert(TraceParent(trace));
        }
    }
    let respond = |req: ServiceRequest, response: HttpResponse| {
        let mut response = req.into_response(response).map_into_right_body();
        if let Some(value) = &header_value {
            response
                .headers_mut()
                .insert(header::HeaderName::from_static(REQUEST_ID), value.clone());
        }
        Ok(response)
    };

    // Draining at shutdown: refuse new requests on connections that stay open.
    let Some(in_flight) = guard.lifecycle.enter() else {
        return respond(req, crate::shutting_down());
    };
    let open = matches!(req.path(), "/health" | "/ready");
    let shell = req.path() == "/ui" || req.path().starts_with("/ui/");
    if !open && !shell && !guard.keys.is_empty() && !key_of(&req).is_some_and(|k| guard.accepts(k))
    {
        let mut response = error_response(
            StatusCode::UNAUTHORIZED,
            "missing or wrong API key: send it in X-API-Key or Authorization: Bearer",
            Map::new(),
        );
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        return respond(req, response);
    }
    if !open
        && let Some(limiter) = &guard.limiter
        && let Some(client) = guard.client(&req)
        && let Err(not_until) = limiter.check_key(&client)
    {
        let wait = not_until.wait_time_from(governor::clock::Clock::now(
            &governor::clock::DefaultClock::default(),
        ));
        let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        let mut response = error_response(
            StatusCode::TOO_MANY_REQUESTS,
            format!("too many requests from {client}; try again in {seconds} s"),
            Map::new(),
        );
        if let Ok(value) = HeaderValue::from_str(&seconds.max(1).to_string()) {
            response.headers_mut().insert(header::RETRY_AFTER, value);
        }
        return respond(req, response);
    }
    let mut response = next.call(req).instrument(span).await?.map_into_left_body();
    drop(in_flight);
    if let Some(value) = header_value {
        response
            .headers_mut()
            .insert(header::HeaderName::from_static(REQUEST_ID), value);
    }
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard(keys: &[&str]) -> Guard {
        Guard::new(
            &AccessConfig {
                api_keys: keys.iter().map(|k| (*k).to_owned()).collect(),
                ..AccessConfig::default()
            },
            Arc::new(Lifecycle::default()),
        )
    }

    #[test]
    fn keys_are_matched_exactly() {
        let g = guard(&["alpha-key", "beta"]);
        assert!(g.accepts(b"alpha-key"));
        assert!(g.accepts(b"beta"));
        assert!(!g.accepts(b"alpha"));
        assert!(!g.accepts(b"alpha-key2"));
        assert!(!g.accepts(b""));
        assert!(!guard(&[]).accepts(b"anything"));
    }

    #[test]
    fn request_ids_are_unique() {
        let g = guard(&[]);
        let a = g.new_request_id();
        let b = g.new_request_id();
        assert_ne!(a, b);
        assert_eq!(a.len(), 32);
    }

    #[test]
    fn traceparents() {
        assert!(valid_traceparent(
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        ));
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-xyz-00f067aa0ba902b7-01",
        ] {
            assert!(!valid_traceparent(bad), "{bad}");
        }
    }
}
