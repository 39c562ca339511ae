//! The threads that read and write function processes' pipes.
//!
//! A request crosses into a function and back on whichever thread its pipes' readiness is
//! handled. By default that is the supervisor's own runtime, so an answer read there has to
//! wake the HTTP worker thread that waits for it: a hand-off between threads on every request.
//! A server that runs requests on current-thread runtimes (actix-web's workers) can instead
//! attach each worker with [`crate::Supervisor::attach_io_thread`]. Each process then has its
//! stdin and stdout registered with one attached thread's runtime, its affine thread, and a
//! request prefers a process affine to the thread it runs on: the line goes down, the answer
//! comes back and the waiting handler resumes without leaving the thread.
//!
//! A thread that goes away (its runtime shut down) is skipped from then on; processes whose
//! pipes it handled lose their reader, which terminates them (see `process.rs`).

use std::cell::Cell;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use parking_lot::RwLock;
use tokio::runtime::Handle;
use tokio::sync::watch;

/// How long process starts wait, after the supervisor starts, for the expected threads to
/// attach; past it, processes start wherever they can.
const ATTACH_WAIT: Duration = Duration::from_secs(1);

thread_local! {
    /// The attached thread this is, if it is one: the id of its [`IoThreads`] and its index.
    static CURRENT: Cell<Option<(usize, usize)>> = const { Cell::new(None) };
}

/// Tells the [`IoThreads`] of several supervisors in one program apart.
static NEXT_ID: AtomicUsize = AtomicUsize::new(0);

/// Where a process's pipes are handled: an attached thread, or the supervisor's runtime.
#[derive(Clone, Debug)]
pub(crate) struct IoHome {
    /// The runtime that owns the pipes.
    pub(crate) handle: Handle,
    /// The attached thread, or `None` for the supervisor's runtime.
    pub(crate) thread: Option<usize>,
}

struct Attached {
    handle: Handle,
    alive: Arc<AtomicBool>,
}

/// Clears `alive` when the runtime it lives in drops its tasks.
struct Sentinel(Arc<AtomicBool>);

impl Drop for Sentinel {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

/// The attached threads.
pub(crate) struct IoThreads {
    id: usize,
    threads: RwLock<Vec<Attached>>,
    /// How many are expected ([`crate::Config::io_threads`]).
    expected: usize,
    attached: watch::Sender<usize>,
    created: Instant,
    next: AtomicUsize,
}

impl IoThreads {
    pub(crate) fn new(expected: usize) -> IoThreads {
        IoThreads {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            threads: RwLock::new(Vec::new()),
            expected,
            attached: watch::channel(0).0,
            created: Instant::now(),
            next: AtomicUsize::new(0),
        }
    }

    /// Attaches the calling thread, whose current runtime must be a current-thread runtime
    /// that runs as long as the thread serves requests. Returns false when there is no runtime.
    /// (A thread is attached to one supervisor at a time: the last it was attached to.)
    pub(crate) fn attach_current(&self) -> bool {
        if self.current().is_some() {
            return true;
        }
        let Ok(handle) = Handle::try_current() else {
            return false;
        };
        let alive = Arc::new(AtomicBool::new(true));
        let sentinel = Sentinel(alive.clone());
        handle.spawn(async move {
            let _sentinel = sentinel;
            std::future::pending::<()>().await;
        });
        let index = {
            let mut threads = self.threads.write();
            threads.push(Attached { handle, alive });
            threads.len() - 1
        };
        CURRENT.set(Some((self.id, index)));
        self.attached.send_modify(|n| *n += 1);
        tracing::debug!(thread = index, name = ?std::thread::current().name(), "I/O thread attached");
        true
    }

    /// The attached thread the caller runs on, if it is one.
    pub(crate) fn current(&self) -> Option<usize> {
        CURRENT
            .get()
            .and_then(|(id, index)| (id == self.id).then_some(index))
    }

    /// Waits (only in the first seconds after the supervisor started) until the expected
    /// threads have attached.
    pub(crate) async fn settled(&self) {
        let Some(left) = ATTACH_WAIT.checked_sub(self.created.elapsed()) else {
            return;
        };
        let mut attached = self.attached.subscribe();
        let expected = self.expected;
        let _ = tokio::time::timeout(left, attached.wait_for(|n| *n >= expected)).await;
    }

    /// Where a new process's pipes go: `preferred` if it is alive and no busier than the rest
    /// (by `load`, e.g. the function's processes on each thread), else the least loaded live
    /// thread (taking turns among equals), else `fallback`.
    pub(crate) fn home(
        &self,
        preferred: Option<usize>,
        load: impl Fn(usize) -> usize,
        fallback: &Handle,
    ) -> IoHome {
        let threads = self.threads.read();
        let live: Vec<usize> = (0..threads.len())
            .filter(|&i| threads[i].alive.load(Ordering::Acquire))
            .collect();
        let Some(least) = live.iter().map(|&i| load(i)).min() else {
            return IoHome {
                handle: fallback.clone(),
                thread: None,
            };
        };
        let chosen = preferred
            .filter(|p| live.contains(p) && load(*p) == least)
            .unwrap_or_else(|| {
                let candidates: Vec<usize> =
                    live.iter().copied().filter(|&i| load(i) == least).collect();
                let turn = self.next.fetch_add(1, Ordering::Relaxed);
                candidates[turn % candidates.len()]
            });
        IoHome {
            handle: threads[chosen].handle.clone(),
            thread: Some(chosen),
        }
    }
}
