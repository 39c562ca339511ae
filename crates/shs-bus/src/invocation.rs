//! Asynchronous invocations: a request to run a function, answered `202` once it is stored,
//! then run in the background by lanes of their own (the same lanes, retry table and
//! settling as events: [`crate::queue`], [`crate::settle`]), kept with its answer or error,
//! and listed with the dead letters when it failed for good.
//!
//! [`Invocations`] accepts (within [`InvocationLimits`], so that no client floods the store),
//! reads, retries and deletes them; the [`Tracker`] knows which ones are running (that is not
//! written to disk: after a crash they are queued, and run again) and tells whoever takes
//! [`Invocations::take_ended`] which ones ended with a callback to send.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use parking_lot::Mutex;
use serde_json::value::RawValue;
use tokio::sync::mpsc;

use crate::BusError;
use crate::backend::Core;
use crate::queue::Lanes;
use crate::store::{
    DeadLetter, FAILED, InvocationFilter, InvocationInfo, InvocationWork, NewInvocation, Outcome,
    QUEUED, Store, rfc3339_ms,
};

/// What a running invocation shows as its state (the store says `queued`).
pub const RUNNING: &str = "running";

/// How many invocations may wait at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InvocationLimits {
    /// Queued invocations of one function (more: 429).
    pub per_function: u64,
    /// Queued invocations of all functions (more: 503).
    pub total: u64,
}

impl Default for InvocationLimits {
    fn default() -> Self {
        InvocationLimits {
            per_function: 10_000,
            total: 100_000,
        }
    }
}

/// What runs, how many wait, and who hears of the end of an invocation with a callback.
#[derive(Default)]
pub(crate) struct Tracker {
    running: Mutex<HashSet<String>>,
    queued: Mutex<Queued>,
    ended: Mutex<Option<mpsc::UnboundedSender<String>>>,
}

#[derive(Default)]
struct Queued {
    of: HashMap<String, u64>,
    total: u64,
}

/// Marks an invocation running while it lives.
pub(crate) struct Running<'a> {
    tracker: &'a Tracker,
    id: String,
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.tracker.running.lock().remove(&self.id);
    }
}

impl Tracker {
    /// Marks invocation `id` running until the guard is dropped.
    pub(crate) fn running(&self, id: &str) -> Running<'_> {
        self.running.lock().insert(id.to_owned());
        Running {
            tracker: self,
            id: id.to_owned(),
        }
    }

    fn is_running(&self, id: &str) -> bool {
        self.running.lock().contains(id)
    }

    /// An attempt of `work` ended with `outcome`, recorded on disk.
    pub(crate) fn ended(&self, function: &str, work: &InvocationWork, outcome: &Outcome) {
        if matches!(outcome, Outcome::Retry(..)) {
            return;
        }
        self.unqueue(function);
        crate::count_invocation(
            function,
            match outcome {
                Outcome::Delivered(_) => "succeeded",
                _ => "failed",
            },
        );
        if work.callback
            && let Some(ended) = &*self.ended.lock()
        {
            let _ = ended.send(work.id.clone());
        }
    }

    /// Counts one more queued invocation of `function`, unless a limit is reached.
    fn enqueue(&self, function: &str, limits: &InvocationLimits) -> Result<(), BusError> {
        let mut queued = self.queued.lock();
        if queued.total >= limits.total {
            return Err(BusError::InvocationsFull {
                queued: queued.total,
            });
        }
        let of = queued.of.entry(function.to_owned()).or_default();
        if *of >= limits.per_function {
            return Err(BusError::TooManyInvocations {
                function: function.to_owned(),
                queued: *of,
            });
        }
        *of += 1;
        queued.total += 1;
        Ok(())
    }

    fn unqueue(&self, function: &str) {
        let mut queued = self.queued.lock();
        if let Some(of) = queued.of.get_mut(function) {
            *of = of.saturating_sub(1);
        }
        queued.total = queued.total.saturating_sub(1);
    }
}

/// An occurrence of a schedule, stored as an invocation.
#[derive(Clone, Debug)]
pub struct Occurrence {
    /// The invocation's id: derived from the function, the schedule and the time, so that
    /// the occurrence is stored once however often it is fired.
    pub id: String,
    /// The schedule's key (its cron and time zone).
    pub key: String,
    /// The occurrence's time, ms since the epoch.
    pub time_ms: i64,
}

/// The asynchronous invocations of one supervisor, in its embedded store.
pub struct Invocations {
    store: Arc<Store>,
    lanes: Arc<Lanes>,
    tracker: Arc<Tracker>,
    limits: InvocationLimits,
}

impl std::fmt::Debug for Invocations {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Invocations")
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl Invocations {
    /// Invocations kept in `store`, run through the deliverer of `core`.
    pub(crate) fn new(store: Arc<Store>, core: Arc<Core>, limits: InvocationLimits) -> Invocations {
        let tracker = Arc::new(Tracker::default());
        Invocations {
            lanes: Lanes::invocations(tracker.clone(), store.clone(), core),
            store,
            tracker,
            limits,
        }
    }

    /// Counts what is queued, and starts running it.
    pub(crate) async fn start(&self) -> Result<(), BusError> {
        let queued = self.store.queued_invocations().await?;
        {
            let mut counts = self.tracker.queued.lock();
            for (function, n) in &queued {
                let n = u64::try_from(*n).unwrap_or(0);
                *counts.of.entry(function.clone()).or_default() += n;
                counts.total += n;
            }
        }
        if !queued.is_empty() {
            tracing::info!(functions = ?queued, "resuming queued invocations");
        }
        for (function, _) in queued {
            self.lanes.wake(&Arc::from(function));
        }
        Ok(())
    }

    /// Stores an invocation of `function` on `request` (opaque to the bus: the deliverer reads
    /// it back), with `context.schedule` and a callback URL when given; resolves with its id
    /// once it is on disk.
    pub async fn accept(
        &self,
        function: &str,
        request: Box<RawValue>,
        schedule: Option<Box<RawValue>>,
        callback: Option<String>,
    ) -> Result<String, BusError> {
        let id = uuid::Uuid::now_v7().to_string();
        self.store_new(NewInvocation {
            id: id.clone(),
            function: function.to_owned(),
            request,
            schedule,
            callback,
            occurrence: None,
        })
        .await?;
        Ok(id)
    }

    /// Stores `occurrence` of a schedule of `function` as an invocation on `request`, with
    /// `context.schedule`; its id. Stored once: firing it again changes nothing.
    pub async fn accept_occurrence(
        &self,
        function: &str,
        request: Box<RawValue>,
        schedule: Box<RawValue>,
        occurrence: Occurrence,
    ) -> Result<String, BusError> {
        let id = occurrence.id.clone();
        self.store_new(NewInvocation {
            id: id.clone(),
            function: function.to_owned(),
            request,
            schedule: Some(schedule),
            callback: None,
            occurrence: Some((occurrence.key, occurrence.time_ms)),
        })
        .await?;
        Ok(id)
    }

    async fn store_new(&self, new: NewInvocation) -> Result<(), BusError> {
        let function = new.function.clone();
        self.tracker.enqueue(&function, &self.limits)?;
        match self.store.accept_invocation(new).await {
            Ok(true) => {
                crate::count_invocation(&function, "accepted");
                self.lanes.wake(&Arc::from(function));
                Ok(())
            }
            Ok(false) => {
                self.tracker.unqueue(&function);
                Ok(())
            }
            Err(e) => {
                self.tracker.unqueue(&function);
                Err(e.into())
            }
        }
    }

    /// The time (ms) of the last occurrence of schedule `key` of `function` stored.
    pub async fn last_occurrence(
        &self,
        function: &str,
        key: &str,
    ) -> Result<Option<i64>, BusError> {
        Ok(self.store.last_occurrence(function, key).await?)
    }

    /// Every schedule's last occurrence stored: (function, key, time in ms, invocation id).
    pub async fn schedule_runs(&self) -> Result<Vec<(String, String, i64, String)>, BusError> {
        Ok(self.store.schedule_runs().await?)
    }

    /// An invocation by id (`running` while an attempt is under way).
    pub async fn get(&self, id: &str) -> Result<Option<InvocationInfo>, BusError> {
        let mut info = self.store.invocation(id).await?;
        if let Some(info) = &mut info {
            self.mark(info);
        }
        Ok(info)
    }

    fn mark(&self, info: &mut InvocationInfo) {
        if info.state == QUEUED && self.tracker.is_running(&info.id) {
            info.state = RUNNING.to_owned();
        }
    }

    /// The invocations that match `filter`, newest first (`running` ones are queued in the
    /// store).
    pub async fn list(
        &self,
        mut filter: InvocationFilter,
    ) -> Result<Vec<InvocationInfo>, BusError> {
        let running = filter.state.as_deref() == Some(RUNNING);
        let limit = filter.limit;
        if running {
            filter.state = Some(QUEUED.to_owned());
            filter.limit = limit.saturating_mul(4).max(1_000);
        }
        let mut list = self.store.invocations(filter).await?;
        for info in &mut list {
            self.mark(info);
        }
        if running {
            list.retain(|i| i.state == RUNNING);
            list.truncate(limit);
        }
        Ok(list)
    }

    /// The failed invocations, as dead letters (of kind `invocation`), newest first.
    pub async fn dead_letters(
        &self,
        function: Option<String>,
        limit: usize,
    ) -> Result<Vec<DeadLetter>, BusError> {
        let dead = self.store.dead_invocations(function, limit).await?;
        Ok(dead
            .into_iter()
            .map(|d| DeadLetter {
                kind: crate::store::KIND_INVOCATION,
                invocation_id: Some(d.id.clone()),
                request: Some(d.request),
                id: d.id,
                function: d.function,
                event_id: None,
                event_type: None,
                event: None,
                attempts: d.attempts,
                dead_at: rfc3339_ms(d.dead_ms),
            })
            .collect())
    }

    /// Queues a failed invocation again, with a fresh count of attempts. False when no failed
    /// invocation has this id.
    pub async fn retry(&self, id: &str) -> Result<bool, BusError> {
        let Some(function) = self.store.revive_invocation(id).await? else {
            return Ok(false);
        };
        {
            let mut queued = self.tracker.queued.lock();
            *queued.of.entry(function.clone()).or_default() += 1;
            queued.total += 1;
        }
        self.lanes.reload(&Arc::from(function));
        Ok(true)
    }

    /// Deletes a failed invocation. False when no failed invocation has this id.
    pub async fn delete(&self, id: &str) -> Result<bool, BusError> {
        Ok(self.store.delete_invocation(id).await?.is_some())
    }

    /// The ids of the invocations that end from now on with a callback to send (and of those
    /// that ended before with their callback not sent). Taken once.
    pub async fn take_ended(&self) -> Result<mpsc::UnboundedReceiver<String>, BusError> {
        let (tx, rx) = mpsc::unbounded_channel();
        *self.tracker.ended.lock() = Some(tx.clone());
        for id in self.store.pending_callbacks().await? {
            let _ = tx.send(id);
        }
        Ok(rx)
    }

    /// Records where the callback of invocation `id` stands: `sent` or `failed`.
    pub async fn callback_done(&self, id: &str, state: &'static str) -> Result<(), BusError> {
        Ok(self.store.callback_done(id, state).await?)
    }

    /// Starts no more invocations; what is queued stays on disk.
    pub(crate) fn quiesce(&self) {
        self.lanes.quiesce();
    }
}

/// Whether `id` may name a failed invocation (a dead letter of kind `invocation`): the ids of
/// invocations are UUIDs, those of events' dead letters are not.
pub fn is_invocation_id(id: &str) -> bool {
    uuid::Uuid::try_parse(id).is_ok()
}

/// The stored state an invocation listing may be filtered by.
pub fn valid_state(state: &str) -> bool {
    [QUEUED, RUNNING, crate::store::SUCCEEDED, FAILED].contains(&state)
}
