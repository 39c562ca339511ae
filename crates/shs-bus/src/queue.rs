//! Asynchronous delivery: one lane per subscribing function, fed from the store.
//!
//! A lane holds a window of the function's pending deliveries (at most [`WINDOW`], oldest
//! first; the rest waits on disk, so a slow subscriber costs disk, not memory) and delivers
//! them: with `ordered` set (the default), one event of each type at a time, in the order they
//! were stored; up to `max_in_flight` at once across types. Each attempt is made and settled
//! by [`crate::settle::attempt`] (the same for every backend: retried after an exponential
//! backoff with jitter, up to `max_attempts`; then, or at once for a failure that no retry can
//! fix, a dead letter; a delivery never sent, at shutdown or a redeploy, is not an attempt and
//! is only postponed); the lane records the outcome. Each outcome is on disk before
//! the lane moves on, so a restart resumes exactly where it stopped (a delivery in flight at a
//! crash is made again: at least once).
//!
//! Lanes are independent tasks: a slow or failing subscriber does not slow the others.
//!
//! Asynchronous invocations go through lanes of their own ([`Kind::Invocation`], one per
//! function), the same code: the same window, the same retry table, the same settling; they
//! are not ordered by type, and each one is marked running in the [`Tracker`] while it runs.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Weak};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::{Notify, mpsc};

use crate::backend::Core;
use crate::event::SharedEvent;
use crate::invocation::Tracker;
use crate::settle::{Settled, attempt, attempt_invocation};
use crate::store::{InvocationWork, Outcome, Store, now_ms};

/// What a set of lanes delivers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// Events, from the table `deliveries`.
    Event,
    /// Asynchronous invocations, from the table `invocations`.
    Invocation,
}

/// One piece of work in a lane's window.
struct Item {
    /// The delivery's id (for an invocation, its `seq`).
    id: i64,
    /// Its place in the store.
    seq: i64,
    work: Work,
    attempts: u32,
    next_ms: i64,
}

enum Work {
    Event(Arc<SharedEvent>),
    Invocation(Arc<InvocationWork>),
}

/// Pending deliveries a lane keeps in memory.
const WINDOW: usize = 256;
/// A lane refills its window from disk when it holds fewer than this.
const REFILL_BELOW: usize = 64;
/// How long a lane waits before trying the store again after it failed.
const STORE_RETRY: Duration = Duration::from_secs(1);

struct Lane {
    function: Arc<str>,
    wake: Notify,
    /// Set when the window must be read again from the start (a dead letter was revived).
    reload: std::sync::atomic::AtomicBool,
}

/// The lanes of every function with asynchronous deliveries.
pub(crate) struct Lanes {
    kind: Kind,
    /// For invocations: what runs, and who hears of an end.
    tracker: Option<Arc<Tracker>>,
    store: Arc<Store>,
    /// The bus's core, for the deliverer.
    core: Arc<Core>,
    /// Set at shutdown: no delivery is started any more.
    quiet: std::sync::atomic::AtomicBool,
    lanes: Mutex<HashMap<Arc<str>, Arc<Lane>>>,
    me: Weak<Lanes>,
}

impl Lanes {
    pub(crate) fn new(store: Arc<Store>, core: Arc<Core>) -> Arc<Lanes> {
        Lanes::of(Kind::Event, None, store, core)
    }

    /// The lanes of asynchronous invocations, reporting to `tracker`.
    pub(crate) fn invocations(
        tracker: Arc<Tracker>,
        store: Arc<Store>,
        core: Arc<Core>,
    ) -> Arc<Lanes> {
        Lanes::of(Kind::Invocation, Some(tracker), store, core)
    }

    fn of(
        kind: Kind,
        tracker: Option<Arc<Tracker>>,
        store: Arc<Store>,
        core: Arc<Core>,
    ) -> Arc<Lanes> {
        Arc::new_cyclic(|me| Lanes {
            kind,
            tracker,
            store,
            core,
            quiet: std::sync::atomic::AtomicBool::new(false),
            lanes: Mutex::new(HashMap::new()),
            me: me.clone(),
        })
    }

    /// Starts no more deliveries; what is pending stays on disk.
    pub(crate) fn quiesce(&self) {
        self.quiet.store(true, std::sync::atomic::Ordering::Release);
        for lane in self.lanes.lock().values() {
            lane.wake.notify_one();
        }
    }

    /// Tells the lane of `function` that new deliveries are on disk; starts it if needed.
    pub(crate) fn wake(&self, function: &Arc<str>) {
        self.lane(function).wake.notify_one();
    }

    /// Tells the lane of `function` to read its pending deliveries again from the start.
    pub(crate) fn reload(&self, function: &Arc<str>) {
        let lane = self.lane(function);
        lane.reload
            .store(true, std::sync::atomic::Ordering::Release);
        lane.wake.notify_one();
    }

    fn lane(&self, function: &Arc<str>) -> Arc<Lane> {
        let mut lanes = self.lanes.lock();
        if let Some(lane) = lanes.get(function) {
            return lane.clone();
        }
        let lane = Arc::new(Lane {
            function: function.clone(),
            wake: Notify::new(),
            reload: std::sync::atomic::AtomicBool::new(true),
        });
        lanes.insert(function.clone(), lane.clone());
        tokio::spawn(run(self.me.clone(), lane.clone()));
        lane
    }
}

/// How a delivery ended, for the lane's window.
struct Done {
    id: i64,
    ended: Ended,
}

enum Ended {
    /// Its outcome is on disk.
    Recorded(Outcome),
    /// Its outcome could not be recorded.
    NotRecorded,
    /// It was never sent (not an attempt, nothing recorded): due again at this time (ms).
    Postponed(i64),
}

/// One lane: schedules the window, delivers, records, and sleeps until there is work.
async fn run(lanes: Weak<Lanes>, lane: Arc<Lane>) {
    let mut window: BTreeMap<i64, Item> = BTreeMap::new();
    // Whether everything pending on disk is in the window.
    let mut complete = false;
    let mut in_flight: HashMap<i64, i64> = HashMap::new(); // delivery id -> seq
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<Done>();
    loop {
        let Some(this) = lanes.upgrade() else { return };
        if this.quiet.load(std::sync::atomic::Ordering::Acquire) {
            drop(this);
            // Shutting down: record the deliveries in flight, then stop.
            while !in_flight.is_empty() {
                match done_rx.recv().await {
                    Some(done) => apply(&mut window, &mut in_flight, done),
                    None => break,
                }
            }
            return;
        }
        let Some(deliverer) = this.core.deliverer() else {
            // Not attached yet (or shutting down): wait to be woken.
            drop(this);
            lane.wake.notified().await;
            continue;
        };
        let policy = deliverer.retry_policy(&lane.function);

        // Fill the window.
        let reload = lane.reload.swap(false, std::sync::atomic::Ordering::AcqRel);
        if reload {
            window.retain(|_, d| in_flight.contains_key(&d.id));
            complete = false;
        }
        if reload || (!complete && window.len() < REFILL_BELOW) {
            let after = if reload {
                0
            } else {
                window.keys().next_back().copied().unwrap_or(0)
            };
            match read_window(&this, &lane.function, after).await {
                Ok(rows) => {
                    complete = rows.len() < WINDOW;
                    for row in rows {
                        window.entry(row.seq).or_insert(row);
                    }
                }
                Err(e) => {
                    tracing::error!(function = %lane.function, "cannot read pending deliveries: {e}");
                    drop(this);
                    tokio::time::sleep(STORE_RETRY).await;
                    continue;
                }
            }
        }

        // Start what may start.
        let now = now_ms();
        let mut blocked: HashSet<&str> = HashSet::new();
        let mut earliest: Option<i64> = None;
        let mut to_start = Vec::new();
        for delivery in window.values() {
            let busy = in_flight.contains_key(&delivery.id);
            if let (true, Work::Event(event)) = (policy.ordered, &delivery.work) {
                if blocked.contains(event.event_type.as_str()) {
                    continue;
                }
                blocked.insert(&event.event_type);
            }
            if busy {
                continue;
            }
            if delivery.next_ms > now {
                earliest = Some(earliest.map_or(delivery.next_ms, |e| e.min(delivery.next_ms)));
                continue;
            }
            if in_flight.len() + to_start.len() >= policy.max_in_flight.max(1) {
                break;
            }
            to_start.push(delivery.seq);
        }
        for seq in to_start {
            let Some(delivery) = window.get(&seq) else {
                continue;
            };
            in_flight.insert(delivery.id, seq);
            let number = delivery.attempts + 1;
            let (id, function, store, done) = (
                delivery.id,
                lane.function.clone(),
                this.store.clone(),
                done_tx.clone(),
            );
            let deliverer = deliverer.clone();
            match &delivery.work {
                Work::Event(event) => {
                    let event = event.clone();
                    tokio::spawn(async move {
                        let settled = attempt(&deliverer, &function, event, number, &policy).await;
                        let ended = match outcome_of(settled) {
                            Ok(outcome) => match store.finish(id, outcome.clone()).await {
                                Ok(()) => Ended::Recorded(outcome),
                                Err(e) => {
                                    tracing::error!(%function, delivery = id, "cannot record a delivery: {e}");
                                    Ended::NotRecorded
                                }
                            },
                            Err(at) => Ended::Postponed(at),
                        };
                        let _ = done.send(Done { id, ended });
                    });
                }
                Work::Invocation(work) => {
                    let work = work.clone();
                    let tracker = this.tracker.clone();
                    tokio::spawn(async move {
                        let running = tracker.as_ref().map(|t| t.running(&work.id));
                        let (settled, answer) = attempt_invocation(
                            &deliverer,
                            &function,
                            work.clone(),
                            number,
                            &policy,
                        )
                        .await;
                        let ended = match outcome_of(settled) {
                            Ok(outcome) => {
                                match store.finish_invocation(id, outcome.clone(), answer).await {
                                    Ok(()) => Ended::Recorded(outcome),
                                    Err(e) => {
                                        tracing::error!(%function, invocation = work.id, "cannot record an invocation: {e}");
                                        Ended::NotRecorded
                                    }
                                }
                            }
                            Err(at) => Ended::Postponed(at),
                        };
                        drop(running);
                        if let (Some(tracker), Ended::Recorded(outcome)) = (&tracker, &ended) {
                            tracker.ended(&function, &work, outcome);
                        }
                        let _ = done.send(Done { id, ended });
                    });
                }
            }
        }
        drop(this);
        drop(deliverer);

        if window.is_empty() && in_flight.is_empty() && complete {
            lane.wake.notified().await;
            // New deliveries are after what the window held.
            complete = false;
            continue;
        }
        let sleep = async {
            match earliest {
                Some(at) => {
                    let wait = u64::try_from(at - now_ms()).unwrap_or(0);
                    tokio::time::sleep(Duration::from_millis(wait)).await;
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            Some(done) = done_rx.recv() => {
                apply(&mut window, &mut in_flight, done);
                while let Ok(done) = done_rx.try_recv() {
                    apply(&mut window, &mut in_flight, done);
                }
            }
            () = lane.wake.notified() => {
                if complete {
                    // Whatever is new on disk comes after the window: read on from its end.
                    complete = false;
                }
            }
            () = sleep => {}
        }
    }
}

/// Up to [`WINDOW`] pending items of `function` stored after `after`, in order.
async fn read_window(
    lanes: &Lanes,
    function: &str,
    after: i64,
) -> Result<Vec<Item>, crate::store::StoreError> {
    Ok(match lanes.kind {
        Kind::Event => lanes
            .store
            .pending(function, after, WINDOW)
            .await?
            .into_iter()
            .map(|d| Item {
                id: d.id,
                seq: d.seq,
                work: Work::Event(d.event),
                attempts: d.attempts,
                next_ms: d.next_ms,
            })
            .collect(),
        Kind::Invocation => lanes
            .store
            .pending_invocations(function, after, WINDOW)
            .await?
            .into_iter()
            .map(|i| Item {
                id: i.seq,
                seq: i.seq,
                work: Work::Invocation(i.work),
                attempts: i.attempts,
                next_ms: i.next_ms,
            })
            .collect(),
    })
}

/// Updates the window with how a delivery ended.
fn apply(window: &mut BTreeMap<i64, Item>, in_flight: &mut HashMap<i64, i64>, done: Done) {
    let Some(seq) = in_flight.remove(&done.id) else {
        return;
    };
    match done.ended {
        Ended::Recorded(Outcome::Retry(attempt, next_ms)) => {
            if let Some(delivery) = window.get_mut(&seq) {
                delivery.attempts = attempt.attempt;
                delivery.next_ms = next_ms;
            }
        }
        Ended::Recorded(Outcome::Delivered(_) | Outcome::Dead(_)) => {
            window.remove(&seq);
        }
        Ended::Postponed(next_ms) => {
            // Still pending on disk with its attempts as they were: after a restart it is
            // delivered as if this had not happened.
            if let Some(delivery) = window.get_mut(&seq) {
                delivery.next_ms = next_ms;
            }
        }
        Ended::NotRecorded => {
            // Not recorded: leave it pending and try again a little later.
            if let Some(delivery) = window.get_mut(&seq) {
                delivery.next_ms =
                    now_ms() + i64::try_from(STORE_RETRY.as_millis()).unwrap_or(1000);
            }
        }
    }
}

/// The decision on an attempt as the store records it (a retry at a time, not after a wait);
/// or, for a delivery never sent, when it is due again (nothing is recorded).
fn outcome_of(settled: Settled) -> Result<Outcome, i64> {
    let at = |delay: std::time::Duration| {
        now_ms().saturating_add(i64::try_from(delay.as_millis()).unwrap_or(i64::MAX))
    };
    match settled {
        Settled::Delivered(a) => Ok(Outcome::Delivered(a)),
        Settled::Retry(a, delay) => Ok(Outcome::Retry(a, at(delay))),
        Settled::Dead(a) => Ok(Outcome::Dead(a)),
        Settled::Postponed(delay) => Err(at(delay)),
    }
}
