//! Callbacks of asynchronous invocations (`X-Callback-Url`): where they may go
//! ([`CallbackPolicy`], from `--callback-allow`), and the sender that POSTs each outcome
//! (`{"invocation_id", "function", "state", "result" | "error"}` with the header
//! `X-Shs-Invocation-Id`), retried with backoff while the receiver fails.
//!
//! The URL is checked when the invocation is accepted (http or https, a host, no credentials,
//! allowed by the policy: else 400), stored with it, and its callback marked `pending` until it
//! is sent (`sent`) or given up (`failed`), so a restart sends what was not sent. Sending runs
//! on its own tasks, never on a request's: a slow or dead receiver holds up nothing but its
//! own callback (10 s per attempt at most, [`MAX_SENDING`] at once, no redirects followed).

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;
use serde_json::{Map, Value};
use shs_bus::store::InvocationInfo;
use shs_supervisor::Supervisor;

/// The longest callback URL taken.
pub(crate) const MAX_URL: usize = 2048;
/// Attempts to deliver a callback before it is given up.
pub(crate) const ATTEMPTS: u32 = 8;
/// The wait after the first failed attempt; it doubles after each (with jitter), up to 60 s.
const FIRST_WAIT: Duration = Duration::from_millis(500);
/// Callbacks being sent at once.
const MAX_SENDING: usize = 32;
/// The longest an attempt takes, connecting included.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);

/// One entry of `--callback-allow`.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Allowed {
    /// A host name (or address), matched exactly, case aside.
    Host(String),
    /// Addresses: an IP literal in the URL within it.
    Net(IpNet),
}

/// Where callbacks may go: anywhere when the list is empty.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CallbackPolicy {
    allowed: Vec<Allowed>,
}

impl CallbackPolicy {
    /// The policy of `--callback-allow` entries: `HOST` (a name or an address) or `CIDR`.
    pub fn new(entries: &[String]) -> Result<CallbackPolicy, String> {
        let mut allowed = Vec::new();
        for entry in entries {
            let entry = entry.trim();
            if entry.is_empty() {
                return Err("--callback-allow: an entry is empty".to_owned());
            }
            if entry.contains('/') {
                let net = entry
                    .parse::<IpNet>()
                    .map_err(|e| format!("--callback-allow {entry:?} is not a CIDR: {e}"))?;
                allowed.push(Allowed::Net(net));
            } else if entry.bytes().all(|b| {
                b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b':' | b'[' | b']')
            }) {
                allowed.push(Allowed::Host(
                    entry
                        .trim_start_matches('[')
                        .trim_end_matches(']')
                        .to_ascii_lowercase(),
                ));
            } else {
                return Err(format!(
                    "--callback-allow {entry:?} is neither a host name nor a CIDR"
                ));
            }
        }
        Ok(CallbackPolicy { allowed })
    }

    /// Whether callbacks may go anywhere.
    pub fn is_open(&self) -> bool {
        self.allowed.is_empty()
    }

    /// Checks a callback URL; the message of the 400 when it is refused.
    pub(crate) fn check(&self, url: &str) -> Result<(), String> {
        if url.len() > MAX_URL {
            return Err(format!(
                "X-Callback-Url is {} bytes long, more than {MAX_URL}",
                url.len()
            ));
        }
        if url.bytes().any(|b| b.is_ascii_control() || b == b' ') {
            return Err("X-Callback-Url holds spaces or control characters".to_owned());
        }
        // The scheme first: `file:///x` is not even a URL an HTTP client reads.
        if let Some((scheme, _)) = url.split_once(':')
            && !scheme.is_empty()
            && scheme.starts_with(|c: char| c.is_ascii_alphabetic())
            && scheme
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'))
            && !scheme.eq_ignore_ascii_case("http")
            && !scheme.eq_ignore_ascii_case("https")
        {
            return Err(format!(
                "X-Callback-Url must be http or https, not {:?}",
                scheme.chars().take(20).collect::<String>()
            ));
        }
        let uri: actix_web::http::Uri = url
            .parse()
            .map_err(|e| format!("X-Callback-Url is not a URL: {e}"))?;
        match uri.scheme_str() {
            Some("http" | "https") => {}
            Some(other) => {
                return Err(format!(
                    "X-Callback-Url must be http or https, not {:?}",
                    other.chars().take(20).collect::<String>()
                ));
            }
            None => return Err("X-Callback-Url must be an absolute http or https URL".into()),
        }
        let authority = uri
            .authority()
            .ok_or("X-Callback-Url has no host")?
            .as_str();
        if authority.contains('@') {
            return Err("X-Callback-Url must not carry credentials".to_owned());
        }
        let host = uri
            .host()
            .filter(|h| !h.is_empty())
            .ok_or("X-Callback-Url has no host")?;
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        if self.allows(bare) {
            Ok(())
        } else {
            Err(format!(
                "X-Callback-Url: host {:?} is not allowed (see --callback-allow)",
                bare.chars().take(80).collect::<String>()
            ))
        }
    }

    fn allows(&self, host: &str) -> bool {
        if self.allowed.is_empty() {
            return true;
        }
        let ip = host.parse::<IpAddr>().ok();
        self.allowed.iter().any(|allowed| match allowed {
            Allowed::Host(name) => name.eq_ignore_ascii_case(host),
            Allowed::Net(net) => ip.is_some_and(|ip| net.contains(&ip)),
        })
    }
}

/// Starts sending the callbacks of the invocations that end (and of those that ended before
/// a restart with their callback not sent). Needs a Tokio runtime; does nothing on a bus
/// without invocations.
pub(crate) fn start(supervisor: Supervisor) {
    tokio::spawn(async move {
        let Ok(invocations) = supervisor.bus().invocations() else {
            return;
        };
        let mut ended = match invocations.take_ended().await {
            Ok(ended) => ended,
            Err(e) => {
                tracing::error!("cannot follow invocations for their callbacks: {e}");
                return;
            }
        };
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(0)
            .timeout_global(Some(ATTEMPT_TIMEOUT))
            .user_agent(format!("shs/{}", env!("CARGO_PKG_VERSION")))
            .build()
            .into();
        let sending = Arc::new(tokio::sync::Semaphore::new(MAX_SENDING));
        while let Some(id) = ended.recv().await {
            let Ok(permit) = sending.clone().acquire_owned().await else {
                return;
            };
            let (supervisor, agent) = (supervisor.clone(), agent.clone());
            tokio::spawn(async move {
                send(&supervisor, &agent, &id).await;
                drop(permit);
            });
        }
    });
}

/// What the callback of `info` POSTs.
fn body_of(info: &InvocationInfo) -> Value {
    let mut body = Map::new();
    body.insert("invocation_id".into(), Value::String(info.id.clone()));
    body.insert("function".into(), Value::String(info.function.clone()));
    body.insert("state".into(), Value::String(info.state.clone()));
    if let Some(result) = &info.result {
        body.insert(
            "result".into(),
            serde_json::from_str(result.get()).unwrap_or(Value::Null),
        );
    }
    if let Some(error) = &info.error {
        body.insert(
            "error".into(),
            serde_json::to_value(error).unwrap_or(Value::Null),
        );
    }
    Value::Object(body)
}

/// Sends the callback of invocation `id`, retrying while the receiver fails, and records how
/// it went.
async fn send(supervisor: &Supervisor, agent: &ureq::Agent, id: &str) {
    let Ok(invocations) = supervisor.bus().invocations() else {
        return;
    };
    let info = match invocations.get(id).await {
        Ok(Some(info)) => info,
        Ok(None) => return,
        Err(e) => {
            tracing::error!(
                invocation = id,
                "cannot read an invocation for its callback: {e}"
            );
            return;
        }
    };
    let Some(url) = info.callback_url.clone() else {
        return;
    };
    let body = body_of(&info).to_string();
    let mut wait = FIRST_WAIT;
    for attempt in 1..=ATTEMPTS {
        let outcome = {
            let (agent, url, body, id) = (agent.clone(), url.clone(), body.clone(), id.to_owned());
            tokio::task::spawn_blocking(move || {
                agent
                    .post(&url)
                    .header("content-type", "application/json")
                    .header("x-shs-invocation-id", &id)
                    .send(body.as_bytes())
                    .map(|r| r.status().as_u16())
            })
            .await
        };
        let failure = match outcome {
            Ok(Ok(status)) if (200..300).contains(&status) => {
                metrics::counter!("shs_invocation_callbacks_total", "outcome" => "sent")
                    .increment(1);
                tracing::debug!(invocation = id, attempt, "callback sent");
                mark(supervisor, id, "sent").await;
                return;
            }
            Ok(Ok(status)) => format!("the receiver answered {status}"),
            Ok(Err(e)) => e.to_string(),
            Err(e) => e.to_string(),
        };
        tracing::info!(
            invocation = id,
            attempt,
            "callback to {url} failed ({failure}); {}",
            if attempt < ATTEMPTS {
                "retrying"
            } else {
                "giving up"
            }
        );
        if attempt < ATTEMPTS {
            let jittered = wait.mul_f64(0.5 + 0.5 * jitter());
            tokio::time::sleep(jittered).await;
            wait = (wait * 2).min(Duration::from_secs(60));
        }
    }
    metrics::counter!("shs_invocation_callbacks_total", "outcome" => "failed").increment(1);
    tracing::warn!(
        invocation = id,
        "callback to {url} failed {ATTEMPTS} times: given up"
    );
    mark(supervisor, id, "failed").await;
}

async fn mark(supervisor: &Supervisor, id: &str, state: &'static str) {
    if let Ok(invocations) = supervisor.bus().invocations()
        && let Err(e) = invocations.callback_done(id, state).await
    {
        tracing::error!(invocation = id, "cannot record a callback: {e}");
    }
}

fn jitter() -> f64 {
    let bits = uuid::Uuid::new_v4().as_u128() as u64;
    (bits >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(entries: &[&str]) -> CallbackPolicy {
        CallbackPolicy::new(&entries.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>())
            .expect("a valid policy")
    }

    #[test]
    fn only_http_and_https_urls_with_a_host_are_taken() {
        let open = policy(&[]);
        assert!(open.is_open());
        for good in [
            "http://example.com/hook",
            "https://example.com:8443/a?b=c",
            "http://127.0.0.1:9/",
            "http://[::1]:8080/x",
        ] {
            assert_eq!(open.check(good), Ok(()), "{good}");
        }
        for (bad, why) in [
            ("ftp://example.com/", "http or https"),
            ("file:///etc/passwd", "http or https"),
            ("gopher://x/", "http or https"),
            ("/relative", "absolute"),
            ("example.com/hook", "not a URL"),
            ("http://user:pw@example.com/", "credentials"),
            ("http://exa mple.com/", "spaces"),
            ("http://example.com/\r\nX-Evil: 1", "control"),
            ("not a url at all", "spaces"),
            ("javascript:alert(1)", "http or https"),
            ("mailto:a@b.c", "http or https"),
            ("", "not a URL"),
        ] {
            let refused = open.check(bad).expect_err(bad);
            assert!(refused.contains(why), "{bad}: {refused}");
        }
        let long = format!("http://example.com/{}", "a".repeat(MAX_URL));
        assert!(open.check(&long).is_err());
    }

    #[test]
    fn the_allow_list_takes_hosts_and_networks() {
        let allow = policy(&["hooks.example.com", "10.0.0.0/8", "[::1]"]);
        assert_eq!(allow.check("https://HOOKS.example.com/x"), Ok(()));
        assert_eq!(allow.check("http://10.1.2.3:9000/x"), Ok(()));
        assert_eq!(allow.check("http://[::1]:9000/x"), Ok(()));
        for refused in [
            "http://evil.example.com/",
            "http://hooks.example.com.evil.net/",
            "http://11.0.0.1/",
            "http://169.254.169.254/latest/meta-data/",
        ] {
            let message = allow.check(refused).expect_err(refused);
            assert!(message.contains("not allowed"), "{refused}: {message}");
        }
        assert!(CallbackPolicy::new(&["10.0.0.0/99".to_owned()]).is_err());
        assert!(CallbackPolicy::new(&["a b".to_owned()]).is_err());
        assert!(CallbackPolicy::new(&[String::new()]).is_err());
    }
}
