//! What every request goes through before its route: a request id, the drain at shutdown,
//! the API key check and the per-client rate limit.
//!
//! - **Request id.** `X-Request-Id` is taken from the request when it is sensible (1 to 128
//!   visible ASCII characters), else made up; it is returned on the response, given to the
//!   function in `context.request_id`, and carried by a span on every log line of the request.
//!   A W3C `traceparent` header is checked and passed on the same way.
//! - **Rate limit.** A token bucket per client (`governor`): `--rate-limit` requests a second
//!   with bursts of `--rate-burst`. It is checked before the API key, so that wrong keys are
//!   limited too. The client is the peer address; `X-Forwarded-For` is believed only when the
//!   peer is one of `--trusted-proxy`, and then the client is the last address in it that is
//!   not itself a trusted proxy ([`client_of`]). Addresses are compared in canonical form (an
//!   IPv4-mapped IPv6 address, as a dual-stack listener sees IPv4 peers, is the IPv4 address),
//!   and an IPv6 client is its /64 ([`bucket_of`]): one host commonly has a whole /64.
//! - **API keys.** With `--api-key` set, every route but `/health`, `/ready` and the
//!   dashboard's shell (`/ui`, `/ui/...`: files that hold no data) needs one of the keys in
//!   `X-API-Key` or `Authorization: Bearer`. Keys are compared in constant time ([`subtle`]),
//!   every configured key every time.

use std::net::{IpAddr, Ipv6Addr};
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
            trusted: config
                .trusted_proxies
                .iter()
                .map(|net| canonical_net(*net))
                .collect(),
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
        let forwarded: Vec<&str> = req
            .headers()
            .get_all("x-forwarded-for")
            .map(|v| v.to_str().unwrap_or("?"))
            .flat_map(|v| v.split(','))
            .collect();
        Some(client_of(peer, &forwarded, &self.trusted))
    }
}

/// An address in canonical form: an IPv4-mapped IPv6 address (`::ffff:127.0.0.1`, what a
/// dual-stack listener sees of an IPv4 peer) is the IPv4 address.
pub(crate) fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        IpAddr::V4(_) => ip,
    }
}

/// A network in canonical form: an IPv4-mapped IPv6 network is the IPv4 network.
fn canonical_net(net: IpNet) -> IpNet {
    match net {
        IpNet::V6(v6) if v6.prefix_len() >= 96 => match v6.addr().to_ipv4_mapped() {
            Some(v4) => ipnet::Ipv4Net::new(v4, v6.prefix_len() - 96).map_or(net, IpNet::V4),
            None => net,
        },
        _ => net,
    }
}

/// One entry of `X-Forwarded-For` as an address: `1.2.3.4`, `1.2.3.4:port`, `2001:db8::1`,
/// `[2001:db8::1]` or `[2001:db8::1]:port`.
fn forwarded_address(entry: &str) -> Option<IpAddr> {
    let entry = entry.trim();
    if let Ok(ip) = entry.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Some(rest) = entry.strip_prefix('[') {
        let (inside, after) = rest.split_once(']')?;
        let port_ok = after.is_empty()
            || after
                .strip_prefix(':')
                .is_some_and(|p| p.parse::<u16>().is_ok());
        return port_ok
            .then(|| inside.parse::<Ipv6Addr>().ok().map(IpAddr::V6))
            .flatten();
    }
    entry
        .parse::<std::net::SocketAddrV4>()
        .ok()
        .map(|a| IpAddr::V4(*a.ip()))
}

/// Who the client is, given the peer, the entries of `X-Forwarded-For` (in order) and the
/// trusted proxies (in canonical form).
///
/// The peer is the client unless it is a trusted proxy. Then the entries are read from the
/// right, past the trusted proxies; the first other address is the client. An entry that is
/// not an address stops the walk: the last trusted hop (the proxy that passed the entry on)
/// is then the client, so a client cannot choose its bucket by writing junk next to forged
/// addresses. Every trusted proxy all the way: the leftmost is the client.
pub(crate) fn client_of(peer: IpAddr, forwarded: &[&str], trusted: &[IpNet]) -> IpAddr {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    let mut client = canonical(peer);
    if !is_trusted(&client) {
        return client;
    }
    for entry in forwarded.iter().rev() {
        let Some(ip) = forwarded_address(entry).map(canonical) else {
            return client;
        };
        client = ip;
        if !is_trusted(&ip) {
            return ip;
        }
    }
    client
}

/// The rate limiter's bucket of a client: its address, or for IPv6 its /64 (one host commonly
/// has a whole /64 to pick addresses from).
pub(crate) fn bucket_of(client: IpAddr) -> IpAddr {
    match client {
        IpAddr::V6(v6) => {
            let bits = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(Ipv6Addr::from(bits))
        }
        IpAddr::V4(_) => client,
    }
}

/// How a bucket is named in a 429.
fn bucket_name(bucket: IpAddr) -> String {
    match bucket {
        IpAddr::V6(_) => format!("{bucket}/64"),
        IpAddr::V4(_) => bucket.to_string(),
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

/// Whether the request's `Authorization` header carries one of the API keys (then it is not
/// passed on to functions); false when the server has no keys.
pub(crate) fn authorization_holds_key(req: &actix_web::HttpRequest) -> bool {
    let Some(guard) = req.app_data::<web::Data<Guard>>() else {
        return false;
    };
    !guard.keys.is_empty() && bearer(req.headers()).is_some_and(|k| guard.accepts(k))
}

/// The API key the request was let in with, when the server has keys (the guard has checked
/// it by then); `None` without keys.
pub(crate) fn api_key_used(req: &actix_web::HttpRequest) -> Option<Vec<u8>> {
    let guard = req.app_data::<web::Data<Guard>>()?;
    if guard.keys.is_empty() {
        return None;
    }
    let headers = req.headers();
    let key = match headers.get("x-api-key") {
        Some(key) => Some(key.as_bytes()),
        None => bearer(headers),
    }?;
    guard.accepts(key).then(|| key.to_vec())
}

fn bearer(headers: &actix_web::http::header::HeaderMap) -> Option<&[u8]> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(|k| k.trim().as_bytes())
}

fn key_of(req: &ServiceRequest) -> Option<&[u8]> {
    let headers = req.headers();
    if let Some(key) = headers.get("x-api-key") {
        return Some(key.as_bytes());
    }
    bearer(headers)
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
    // The span's fields are formatted when it is made, whether or not anything is logged in
    // it: the method and the path only when debug lines are wanted (the request id is enough to
    // tie a line to its request, and costs one field instead of three on every request).
    let span = if tracing::enabled!(tracing::Level::DEBUG) {
        tracing::info_span!(
            "request",
            request_id = %request_id,
            method = %req.method(),
            path = %req.path(),
        )
    } else {
        tracing::info_span!("request", request_id = %request_id)
    };
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
    // The rate limit first: a request with a wrong key costs a token too, so that keys cannot
    // be guessed at full speed.
    if !open
        && let Some(limiter) = &guard.limiter
        && let Some(client) = guard.client(&req)
        && let bucket = bucket_of(client)
        && let Err(not_until) = limiter.check_key(&bucket)
    {
        let wait = not_until.wait_time_from(governor::clock::Clock::now(
            &governor::clock::DefaultClock::default(),
        ));
        let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        let mut response = error_response(
            StatusCode::TOO_MANY_REQUESTS,
            format!(
                "too many requests from {}; try again in {seconds} s",
                bucket_name(bucket)
            ),
            Map::new(),
        );
        if let Ok(value) = HeaderValue::from_str(&seconds.max(1).to_string()) {
            response.headers_mut().insert(header::RETRY_AFTER, value);
        }
        return respond(req, response);
    }
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

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("an address")
    }

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter()
            .map(|s| {
                s.parse::<IpNet>()
                    .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
                    .map(canonical_net)
                    .expect("a network")
            })
            .collect()
    }

    #[test]
    fn addresses_are_canonical() {
        assert_eq!(canonical(ip("::ffff:127.0.0.1")), ip("127.0.0.1"));
        assert_eq!(canonical(ip("::ffff:10.1.2.3")), ip("10.1.2.3"));
        assert_eq!(canonical(ip("::1")), ip("::1"));
        assert_eq!(canonical(ip("2001:db8::1")), ip("2001:db8::1"));
        assert_eq!(canonical(ip("192.0.2.1")), ip("192.0.2.1"));
        assert_eq!(nets(&["::ffff:10.0.0.0/104"]), nets(&["10.0.0.0/8"]));
        assert_eq!(
            nets(&["::/0"]),
            nets(&["::/0"]),
            "no mapped prefix: unchanged"
        );
    }

    #[test]
    fn forwarded_entries_in_the_forms_proxies_write() {
        for (entry, want) in [
            ("1.2.3.4", Some("1.2.3.4")),
            (" 1.2.3.4 ", Some("1.2.3.4")),
            ("1.2.3.4:8080", Some("1.2.3.4")),
            ("2001:db8::1", Some("2001:db8::1")),
            ("[2001:db8::1]", Some("2001:db8::1")),
            ("[2001:db8::1]:443", Some("2001:db8::1")),
            ("::ffff:1.2.3.4", Some("::ffff:1.2.3.4")),
            ("unknown", None),
            ("", None),
            ("[2001:db8::1]:x", None),
            ("[1.2.3.4]", None),
            ("1.2.3.4:99999", None),
            ("_hidden", None),
        ] {
            assert_eq!(forwarded_address(entry), want.map(ip), "{entry:?}");
        }
    }

    #[test]
    fn the_client_behind_trusted_proxies() {
        let trusted = nets(&["127.0.0.1", "10.0.0.0/8"]);
        let client = |peer: &str, xff: &[&str]| client_of(ip(peer), xff, &trusted);
        // An untrusted peer is the client, whatever it says.
        assert_eq!(client("192.0.2.1", &["198.51.100.1"]), ip("192.0.2.1"));
        // A trusted one: the rightmost untrusted entry.
        assert_eq!(client("127.0.0.1", &["198.51.100.1"]), ip("198.51.100.1"));
        assert_eq!(
            client("127.0.0.1", &["203.0.113.9", "198.51.100.1", "10.1.1.1"]),
            ip("198.51.100.1")
        );
        // Seen over a dual-stack socket, an IPv4 proxy is still trusted.
        assert_eq!(
            client("::ffff:127.0.0.1", &["198.51.100.1"]),
            ip("198.51.100.1")
        );
        assert_eq!(
            client("127.0.0.1", &["::ffff:198.51.100.1"]),
            ip("198.51.100.1")
        );
        // No entry: the proxy itself.
        assert_eq!(client("127.0.0.1", &[]), ip("127.0.0.1"));
        // Junk stops the walk at the hop that passed it on; what is left of it is not read.
        for forged in ["198.51.100.1", "198.51.100.2", "203.0.113.5"] {
            assert_eq!(client("127.0.0.1", &[forged, "unknown"]), ip("127.0.0.1"));
            assert_eq!(
                client("127.0.0.1", &[forged, "junk", "10.2.2.2"]),
                ip("10.2.2.2")
            );
        }
        // Trusted all the way: the leftmost.
        assert_eq!(
            client("127.0.0.1", &["10.3.3.3", "10.2.2.2"]),
            ip("10.3.3.3")
        );
    }

    #[test]
    fn an_ipv6_client_is_its_64() {
        assert_eq!(bucket_of(ip("2001:db8:1:2:aaaa::1")), ip("2001:db8:1:2::"));
        assert_eq!(
            bucket_of(ip("2001:db8:1:2:ffff:ffff:ffff:ffff")),
            ip("2001:db8:1:2::")
        );
        assert_ne!(bucket_of(ip("2001:db8:1:3::1")), ip("2001:db8:1:2::"));
        assert_eq!(bucket_of(ip("192.0.2.7")), ip("192.0.2.7"));
        assert_eq!(bucket_name(bucket_of(ip("2001:db8::5"))), "2001:db8::/64");
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
