//! Webhook signatures: a function with a `[webhook]` in its `function.toml` is run only for
//! requests whose signature header holds the HMAC-SHA256 of the raw body (for Stripe and
//! Slack, of the body with a timestamp no more than five minutes off) made with its secret.
//! Anything else is a 401 naming the header, counted in `shs_webhook_refusals_total`.
//!
//! The MAC is compared in constant time (`hmac`'s `verify_slice`); messages never hold the
//! secret, the expected signature or the one sent.

use actix_web::http::header::HeaderMap;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use shs_supervisor::{WebhookKey, WebhookKind};

/// How far a Stripe or Slack timestamp may be from now, in seconds (replays are refused).
pub(crate) const TOLERANCE_SECS: u64 = 300;

/// Checks the signature of a request with `headers` and `body`, at `now` (seconds since the
/// Unix epoch). The error is the 401's message.
pub(crate) fn verify(
    key: &WebhookKey,
    headers: &HeaderMap,
    body: &[u8],
    now: u64,
) -> Result<(), String> {
    let header = key.header.as_str();
    let value = text(headers, header)?;
    match key.kind {
        WebhookKind::Github | WebhookKind::HmacSha256 => {
            let hex = match value.strip_prefix("sha256=") {
                Some(hex) => hex,
                None if key.kind == WebhookKind::HmacSha256 => value,
                None => return Err(format!("the {header} header must be sha256=HEX")),
            };
            check(key, header, hex, &[body])
        }
        WebhookKind::Stripe => {
            let mut timestamp = None;
            let mut signatures = Vec::new();
            for part in value.split(',') {
                match part.trim().split_once('=') {
                    Some(("t", t)) => timestamp = Some(t),
                    Some(("v1", v)) => signatures.push(v),
                    _ => {}
                }
            }
            let Some(ts) = timestamp else {
                return Err(format!("the {header} header has no timestamp (t=)"));
            };
            if signatures.is_empty() {
                return Err(format!("the {header} header has no v1 signature"));
            }
            fresh(header, ts, now)?;
            // Any v1 may match: Stripe sends one per secret while a secret is rolled.
            let mut last = Ok(());
            for hex in signatures {
                last = check(key, header, hex, &[ts.as_bytes(), b".", body]);
                if last.is_ok() {
                    break;
                }
            }
            last
        }
        WebhookKind::Slack => {
            const TIMESTAMP: &str = "X-Slack-Request-Timestamp";
            let ts = text(headers, TIMESTAMP)?;
            fresh(TIMESTAMP, ts, now)?;
            let Some(hex) = value.strip_prefix("v0=") else {
                return Err(format!("the {header} header must be v0=HEX"));
            };
            check(key, header, hex, &[b"v0:", ts.as_bytes(), b":", body])
        }
    }
}

/// The text of header `name`, or why it is unusable.
fn text<'a>(headers: &'a HeaderMap, name: &str) -> Result<&'a str, String> {
    let value = headers.get(name).ok_or_else(|| {
        format!("the {name} header is missing: this function takes only signed requests")
    })?;
    value
        .to_str()
        .map(str::trim)
        .map_err(|_| format!("the {name} header is not text"))
}

/// Whether timestamp `ts` (in header `name`) is within [`TOLERANCE_SECS`] of `now`.
fn fresh(name: &str, ts: &str, now: u64) -> Result<(), String> {
    let Ok(t) = ts.parse::<u64>() else {
        return Err(format!("the {name} timestamp is not a number of seconds"));
    };
    let off = now.abs_diff(t);
    if off > TOLERANCE_SECS {
        return Err(format!(
            "the {name} timestamp is {off} seconds off; at most {TOLERANCE_SECS} are allowed (a replayed request?)"
        ));
    }
    Ok(())
}

/// Whether `hex` is the HMAC-SHA256 of the concatenated `parts` under the key's secret,
/// compared in constant time.
fn check(key: &WebhookKey, header: &str, hex: &str, parts: &[&[u8]]) -> Result<(), String> {
    let mismatch = || format!("the {header} header does not match the body");
    let sent = decode_hex(hex).ok_or_else(mismatch)?;
    let mut mac = Hmac::<Sha256>::new_from_slice(key.secret()).map_err(|_| mismatch())?;
    for part in parts {
        mac.update(part);
    }
    mac.verify_slice(&sent).map_err(|_| mismatch())
}

/// Lower- or upper-case hex digits as bytes; `None` when `hex` is not that.
fn decode_hex(hex: &str) -> Option<Vec<u8>> {
    if !hex.len().is_multiple_of(2) {
        return None;
    }
    hex.as_bytes()
        .chunks(2)
        .map(|pair| {
            let digit = |b: u8| (b as char).to_digit(16);
            Some((digit(pair[0])? * 16 + digit(pair[1])?) as u8)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::decode_hex;

    #[test]
    fn hex_is_decoded_and_junk_refused() {
        assert_eq!(decode_hex("00ff10Ab"), Some(vec![0, 255, 16, 171]));
        assert_eq!(decode_hex("abc"), None);
        assert_eq!(decode_hex("zz"), None);
        assert_eq!(decode_hex("+1"), None);
        assert_eq!(decode_hex(""), Some(vec![]));
    }
}
