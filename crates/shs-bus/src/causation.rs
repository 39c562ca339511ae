//! The causal context of publishes and deliveries.

use std::fmt;
use std::sync::Arc;

use parking_lot::Mutex;
use shs_protocol::methods::DeliveryFailure;

/// Failures collected down a chain of synchronous deliveries, for the first publisher.
#[derive(Clone, Default)]
pub(crate) struct FailureSink(Arc<Mutex<Vec<DeliveryFailure>>>);

impl FailureSink {
    pub(crate) fn extend(&self, failures: &[DeliveryFailure]) {
        self.0.lock().extend_from_slice(failures);
    }

    pub(crate) fn take(&self) -> Vec<DeliveryFailure> {
        std::mem::take(&mut *self.0.lock())
    }
}

/// Failures reported down a chain of deliveries made on behalf of a remote publisher.
#[derive(Clone, Default)]
pub struct Failures(FailureSink);

impl Failures {
    /// Takes the failures collected so far.
    pub fn take(&self) -> Vec<DeliveryFailure> {
        self.0.take()
    }
}

/// The causal context of a publish or a delivery.
///
/// The deliverer keeps the causation of each delivery it makes, and derives the causation of a
/// publish made while handling it with [`Causation::caused_by`] (the publisher waits for it) or
/// [`Causation::detached`] (fire-and-forget).
#[derive(Clone, Default)]
pub struct Causation {
    pub(crate) hops: u32,
    pub(crate) waiting: Arc<[u64]>,
    pub(crate) sink: Option<FailureSink>,
    /// The event being delivered in this context, if any: the cause of what is published in it.
    pub(crate) event: Option<Arc<str>>,
}

impl fmt::Debug for Causation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Causation")
            .field("hops", &self.hops)
            .field("waiting", &self.waiting)
            .finish_non_exhaustive()
    }
}

impl Causation {
    /// The causation of a publish or call that nothing led to (an HTTP request).
    pub fn root() -> Causation {
        Causation::default()
    }

    /// How many deliveries led here.
    pub fn hops(&self) -> u32 {
        self.hops
    }

    /// The calls, upstream, that cannot finish before this one does.
    pub fn waiting(&self) -> &[u64] {
        &self.waiting
    }

    /// The id of the event being delivered in this context, if any.
    pub fn event(&self) -> Option<&str> {
        self.event.as_deref()
    }

    /// A root causation at a given hop count, for a publish that carries its own (an HTTP
    /// publish with the `shshops` attribute).
    pub fn at_hops(hops: u32) -> Causation {
        Causation {
            hops,
            ..Causation::default()
        }
    }

    /// The causation of a delivery of `event` (published at `hops`) made on another node for
    /// a publisher whose waiting calls are `waiting`; the failures further down the chain it
    /// starts are collected in the returned [`Failures`], to be sent back to the publisher.
    pub fn remote_delivery(hops: u32, waiting: Vec<u64>, event: &str) -> (Causation, Failures) {
        let sink = FailureSink::default();
        let cause = Causation {
            hops: hops + 1,
            waiting: waiting.into(),
            sink: Some(sink.clone()),
            event: Some(Arc::from(event)),
        };
        (cause, Failures(sink))
    }

    /// The causation of an asynchronous delivery of `event` (published at `hops`): nobody
    /// waits for it.
    pub fn async_delivery(hops: u32, event: &str) -> Causation {
        Causation {
            hops: hops + 1,
            waiting: Arc::from([]),
            sink: None,
            event: Some(Arc::from(event)),
        }
    }

    /// Reports failures of a publish made in this context to whoever started the chain.
    pub fn report(&self, failures: &[DeliveryFailure]) {
        if let Some(sink) = &self.sink {
            sink.extend(failures);
        }
    }

    /// The causation of a delivery of `event` made by a publish in `self`.
    pub(crate) fn delivery(&self, event: &str, hops: u32, sink: Option<FailureSink>) -> Causation {
        Causation {
            hops: hops + 1,
            waiting: self.waiting.clone(),
            sink,
            event: Some(Arc::from(event)),
        }
    }

    /// The causation of a synchronous publish made by the call `call` that runs in `self`:
    /// `call` waits for the publish, and so does everything `self` waits for.
    pub fn caused_by(&self, call: u64) -> Causation {
        let mut waiting = Vec::with_capacity(self.waiting.len() + 1);
        waiting.extend_from_slice(&self.waiting);
        waiting.push(call);
        Causation {
            hops: self.hops,
            waiting: waiting.into(),
            sink: self.sink.clone(),
            event: self.event.clone(),
        }
    }

    /// The causation of a fire-and-forget publish made in `self`: the hops still count, but
    /// nobody waits for it and its failures are only logged.
    pub fn detached(&self) -> Causation {
        Causation {
            hops: self.hops,
            waiting: Arc::from([]),
            sink: None,
            event: self.event.clone(),
        }
    }

    /// The causation of a publish that any of several calls may have made (a process with
    /// several requests in flight that did not say which one publishes): the most hops of
    /// them, and all of them waiting. Erring this way keeps loops counted and never misses a
    /// wait on itself; at worst it reports a cycle where there was only contention.
    pub fn merged<'a>(causes: impl IntoIterator<Item = (&'a Causation, u64)>) -> Causation {
        let mut hops = 0;
        let mut waiting = Vec::new();
        let mut sink = None;
        let mut event = None;
        for (cause, call) in causes {
            if cause.hops >= hops {
                hops = cause.hops;
                event = cause.event.clone().or(event);
            }
            waiting.extend_from_slice(&cause.waiting);
            waiting.push(call);
            sink = sink.or_else(|| cause.sink.clone());
        }
        waiting.sort_unstable();
        waiting.dedup();
        Causation {
            hops,
            waiting: waiting.into(),
            sink,
            event,
        }
    }
}
