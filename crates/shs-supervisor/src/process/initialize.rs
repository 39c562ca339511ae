//! The `initialize` handshake, which makes a spawned process ready.
//!
//! Nothing but `initialize` is written to a process until it has answered it. Any answer
//! makes the process ready (an error or a malformed answer is logged, and the process used
//! anyway); an object answer may carry `subscribe`, patterns subscribed then, and a
//! declaration of what the function safely handles: `concurrency` (requests in flight per
//! process) and `instances` (a hint: processes at most), which the pool uses where
//! `function.toml` sets none ([`Declared`]). A declaration out of bounds or not a whole number is
//! refused with a clear error shown on the function; the process is used with the setting
//! it had. A process that dies first, or does not answer within `start_timeout` (it is then
//! killed), failed to start.

use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use serde_json::value::RawValue;
use shs_bus::Causation;
use shs_protocol::PROTOCOL_VERSION;
use shs_protocol::methods::{self, InitializeParams, InitializeResult};

use super::{CallError, CallMeta, Process};
use crate::error::fmt_duration;
use crate::manifest::{MAX_CONCURRENCY, MAX_INSTANCES};

/// What a process declared in its answer to `initialize`: each setting, if it declared one
/// within bounds, and what was wrong with the ones refused.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Declared {
    /// Requests in flight it takes per process.
    pub(crate) concurrency: Option<usize>,
    /// Processes at most (a hint).
    pub(crate) instances: Option<usize>,
    /// Why a declaration was refused, one sentence each.
    pub(crate) errors: Vec<String>,
}

impl Declared {
    /// Reads the declaration of an answer to `initialize` (any JSON: only an object declares
    /// anything). Never fails: what is wrong is in `errors`.
    pub(crate) fn read(answer: &str) -> Declared {
        #[derive(Deserialize)]
        struct Raw<'a> {
            #[serde(borrow, default)]
            concurrency: Option<&'a RawValue>,
            #[serde(borrow, default)]
            instances: Option<&'a RawValue>,
        }
        let mut declared = Declared::default();
        let Ok(raw) = serde_json::from_str::<Raw<'_>>(answer) else {
            return declared;
        };
        declared.concurrency = setting(raw.concurrency, "concurrency", MAX_CONCURRENCY)
            .unwrap_or_else(|e| {
                declared.errors.push(e);
                None
            });
        declared.instances =
            setting(raw.instances, "instances", MAX_INSTANCES).unwrap_or_else(|e| {
                declared.errors.push(e);
                None
            });
        declared
    }
}

/// One declared setting: a whole number from 1 to `max`.
fn setting(raw: Option<&RawValue>, key: &str, max: usize) -> Result<Option<usize>, String> {
    let Some(raw) = raw else {
        return Ok(None);
    };
    let text = raw.get();
    let shown: String = if text.len() > 40 {
        format!("{}…", text.chars().take(40).collect::<String>())
    } else {
        text.to_owned()
    };
    match serde_json::from_str::<u64>(text) {
        Ok(n) if n >= 1 && n <= max as u64 => Ok(Some(n as usize)),
        Ok(n) => Err(format!(
            "`{key}` declared in the answer to initialize must be from 1 to {max}, not {n}"
        )),
        Err(_) if text == "null" => Ok(None),
        Err(_) => Err(format!(
            "`{key}` declared in the answer to initialize must be a whole number from 1 to {max}, not {shown}"
        )),
    }
}

/// Why a process could not be started.
#[derive(Clone, Debug)]
pub(crate) struct StartFailure {
    pub(crate) reason: String,
    pub(crate) stderr: Vec<String>,
}

impl Process {
    /// Sends `initialize` and waits up to `start_timeout` for the answer, in the causation of
    /// whatever the process is started for.
    pub(crate) async fn initialize(
        self: &Arc<Self>,
        start_timeout: Duration,
        cause: Causation,
    ) -> Result<Declared, StartFailure> {
        let function = &*self.function;
        let mut declared = Declared::default();
        let params = InitializeParams {
            function: function.to_owned(),
            protocol: PROTOCOL_VERSION,
        };
        let outcome = self
            .call(
                methods::INITIALIZE,
                &params,
                cause,
                CallMeta::new("initialize", None),
                None,
                start_timeout,
            )
            .await;
        match outcome {
            Ok(result) => {
                declared = Declared::read(result.get());
                // Any answer marks the process ready; an object may carry subscriptions.
                match serde_json::from_str::<InitializeResult>(result.get()) {
                    Ok(init) => {
                        if init.raw_body {
                            self.raw_body
                                .store(true, std::sync::atomic::Ordering::Relaxed);
                        }
                        for pattern in init.subscribe {
                            if let Err(e) = self.change_subscription(&pattern, true) {
                                tracing::warn!(
                                    function,
                                    "ignoring a subscription from initialize: {e}"
                                );
                            }
                        }
                    }
                    Err(e) if result.get().contains("\"subscribe\"") => {
                        tracing::warn!(
                            function,
                            "ignoring `subscribe` in the answer to initialize: {e} (it must be an array of strings)"
                        );
                    }
                    Err(_) => {}
                }
            }
            Err(CallError::Malformed(e)) => {
                tracing::warn!(
                    function,
                    pid = self.pid,
                    "the answer to initialize is malformed (the process is used anyway): {e}"
                );
            }
            Err(CallError::Rpc(e)) => {
                tracing::warn!(
                    function,
                    pid = self.pid,
                    "initialize answered with an error (the process is used anyway): {e}"
                );
            }
            Err(CallError::Died(death) | CallError::NotSent(death)) => {
                return Err(StartFailure {
                    reason: format!("its process {} before answering initialize", death.detail),
                    stderr: death.stderr,
                });
            }
            Err(CallError::Timeout) => {
                self.wait_dead().await;
                return Err(StartFailure {
                    reason: format!(
                        "its process did not answer initialize within {} and was killed",
                        fmt_duration(start_timeout)
                    ),
                    stderr: self.stderr_tail(),
                });
            }
        }
        for error in &declared.errors {
            tracing::warn!(function, pid = self.pid, "{error}");
            self.logs.push(self.pid, None, "shs", error);
        }
        tracing::info!(function, pid = self.pid, "process ready");
        Ok(declared)
    }
}

#[cfg(test)]
mod tests {
    use super::Declared;

    #[test]
    fn declarations_are_read_and_bounded() {
        let d = Declared::read(r#"{"concurrency": 16, "instances": 2, "subscribe": []}"#);
        assert_eq!((d.concurrency, d.instances), (Some(16), Some(2)));
        assert!(d.errors.is_empty());
        let d = Declared::read(r#"{"concurrency": 65536, "instances": 4096}"#);
        assert_eq!((d.concurrency, d.instances), (Some(65_536), Some(4096)));
        for answer in ["{}", "null", "[]", "\"x\"", "7", r#"{"concurrency": null}"#] {
            assert_eq!(Declared::read(answer), Declared::default(), "{answer}");
        }
    }

    #[test]
    fn garbage_declarations_are_refused_with_a_reason() {
        for (answer, needle) in [
            (r#"{"concurrency": 0}"#, "from 1 to 65536, not 0"),
            (r#"{"concurrency": 65537}"#, "not 65537"),
            (r#"{"concurrency": -3}"#, "whole number"),
            (r#"{"concurrency": 2.5}"#, "whole number"),
            (r#"{"concurrency": "16"}"#, "whole number"),
            (r#"{"concurrency": 1e400}"#, "whole number"),
            (r#"{"concurrency": 18446744073709551616}"#, "whole number"),
            (r#"{"instances": 4097}"#, "from 1 to 4096, not 4097"),
            (r#"{"instances": {"a": 1}}"#, "`instances`"),
        ] {
            let d = Declared::read(answer);
            assert_eq!((d.concurrency, d.instances), (None, None), "{answer}");
            assert_eq!(d.errors.len(), 1, "{answer}");
            assert!(d.errors[0].contains(needle), "{answer}: {}", d.errors[0]);
        }
        // A long value is cut in the message.
        let long = format!(r#"{{"concurrency": "{}"}}"#, "x".repeat(10_000));
        let d = Declared::read(&long);
        assert!(d.errors[0].len() < 200);
        // One bad, one good: the good one stands.
        let d = Declared::read(r#"{"concurrency": 8, "instances": 0}"#);
        assert_eq!((d.concurrency, d.instances), (Some(8), None));
        assert_eq!(d.errors.len(), 1);
    }
}
