//! The `initialize` handshake, which makes a spawned process ready.
//!
//! Nothing but `initialize` is written to a process until it has answered it. Any answer
//! makes the process ready (an error or a malformed answer is logged, and the process used
//! anyway); an object answer may carry `subscribe`, patterns subscribed then. A process that
//! dies first, or does not answer within `start_timeout` (it is then killed), failed to start.

use std::sync::Arc;
use std::time::Duration;

use shs_bus::Causation;
use shs_protocol::PROTOCOL_VERSION;
use shs_protocol::methods::{self, InitializeParams, InitializeResult};

use super::{CallError, CallMeta, Process};
use crate::error::fmt_duration;

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
    ) -> Result<(), StartFailure> {
        let function = &*self.function;
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
        tracing::info!(function, pid = self.pid, "process ready");
        Ok(())
    }
}
