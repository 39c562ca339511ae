//! Graceful shutdown of the HTTP side: stop accepting, let requests in flight finish (up to a
//! grace period), refuse new ones on connections that stay open, then (once the caller has
//! stopped what the workers still serve) close everything.
//!
//! actix's own graceful stop waits for idle keep-alive connections to time out; counting the
//! requests in flight lets shs stop as soon as the last one is answered. A stream
//! (`GET /stream`) counts only until its answer has begun: it is told to end when the drain
//! starts ([`Lifecycle::stopping`]), so it never holds the shutdown up.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use actix_web::dev::ServerHandle;
use tokio::sync::{Notify, watch};

/// Requests in flight, and whether the server is draining.
#[derive(Default)]
pub struct Lifecycle {
    in_flight: AtomicUsize,
    draining: AtomicBool,
    idle: Notify,
    /// Set to true when the drain starts, for long-lived answers to end.
    stop: watch::Sender<bool>,
}

/// Counts one request in flight until dropped.
pub(crate) struct InFlight(Arc<Lifecycle>);

impl Drop for InFlight {
    fn drop(&mut self) {
        if self.0.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

impl Lifecycle {
    /// Counts a request in, unless the server is draining.
    pub(crate) fn enter(self: &Arc<Self>) -> Option<InFlight> {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        let guard = InFlight(self.clone());
        (!self.draining.load(Ordering::Acquire)).then_some(guard)
    }

    /// Becomes true when the server starts draining: long-lived answers (streams) end then.
    pub(crate) fn stopping(&self) -> watch::Receiver<bool> {
        self.stop.subscribe()
    }

    /// Requests being served now.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
    }

    /// Waits until no request is in flight, or `grace` has passed; returns whether it drained.
    async fn drained(&self, grace: Duration) -> bool {
        let wait = async {
            loop {
                let idle = self.idle.notified();
                if self.in_flight() == 0 {
                    return;
                }
                idle.await;
            }
        };
        tokio::time::timeout(grace, wait).await.is_ok()
    }

    /// Drains the server: no new connections, 503 for new requests on open ones, and up to
    /// `grace` for those in flight. Returns whether they all finished. The workers keep
    /// running (they may handle function processes' pipes) until [`ServerHandle::stop`].
    pub async fn drain(&self, handle: &ServerHandle, grace: Duration) -> bool {
        self.draining.store(true, Ordering::Release);
        self.stop.send_replace(true);
        handle.pause().await;
        let drained = self.drained(grace).await;
        if !drained {
            tracing::warn!(
                in_flight = self.in_flight(),
                "requests still in flight after the grace period"
            );
        }
        drained
    }

    /// Drains the server (see [`Lifecycle::drain`]), then closes every connection.
    pub async fn shutdown(&self, handle: &ServerHandle, grace: Duration) {
        self.drain(handle, grace).await;
        handle.stop(false).await;
    }
}
