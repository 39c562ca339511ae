//! shs process supervision.
//!
//! This crate owns the function processes: finding functions on disk ([`spec`]), following the
//! functions folder as it changes, spawning each process in its own session and process group with a clean
//! environment, the `initialize` handshake, the pool of processes of each function and the
//! slots requests take on them, timeouts and kills, and modes exec and cgi (a process per
//! request). It
//! serves the requests functions make (`publish`, `subscribe`, `unsubscribe`) through the
//! [`shs_bus::Bus`] it is given, and delivers the bus's events to functions by implementing
//! [`shs_bus::Deliver`]. Of HTTP it knows only the request a function is invoked with
//! ([`HttpRequest`]), filled in by the HTTP server.
//!
//! The default of every setting is declared once, in [`defaults`]; what an invoke or a
//! delivery error is answered with, once, in [`ErrorKind::status`].
//!
//! # Theory of operation
//!
//! The [`Supervisor`] keeps a registry of functions by name. A scan of the functions folder
//! (at start, on every change the file watcher reports, and every few seconds as a safety net)
//! is reconciled with the registry: new functions are deployed, changed ones redeployed,
//! removed ones retired. An rpc function is started as soon as it is deployed, so that the
//! subscriptions its start-up code makes are in force before the first event.
//!
//! Each rpc process is an actor made of four tasks: a flusher for what waits to go into
//! stdin, a reader that owns stdout, a stderr logger, and a waiter that owns the child and
//! reaps it. Callers hold `Arc`s to it; a call registers a pending entry (with the pool slot
//! it occupies) under a supervisor-wide call id, writes its line, and waits for the reader to
//! hand it the answer. The flusher and the reader run on the process's I/O home: an attached
//! thread ([`Supervisor::attach_io_thread`], e.g. an HTTP worker), whose requests then prefer
//! that process, or the supervisor's runtime.
//! When the process dies, the reader fails every pending call with what happened, and the pool
//! drops the process; the next request starts a fresh one.
//!
//! Invariants:
//! - Nothing but `initialize` is written to a process until it has answered `initialize`.
//! - A process never has more supervisor requests in flight than its `concurrency`; a slot is
//!   freed only by the answer or the process's death, never by a caller giving up.
//! - Every process runs in its own session and process group, and the group is killed when the process
//!   exits, times out or is stopped: nothing it started outlives it.
//! - Reading a process's output costs bounded memory: stdout lines are limited (`max_line`),
//!   stderr lines are cut, and the write queue to stdin is bounded.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use shs_bus::Bus;

pub mod cgi;
pub mod defaults;
pub mod error;
mod exec;
pub mod http;
mod io;
pub mod logs;
mod manifest;
mod pipes;
mod pool;
mod prewarm;
mod process;
pub mod schedule;
pub mod secrets;
pub mod spec;
pub mod stats;
mod stdin;
pub mod stream;
mod supervisor;
mod unix;
mod watch;

pub use cgi::{CgiBody, CgiResponse};
pub use error::{ErrorKind, InvokeError, SpecError, StartError};
pub use http::{BodyError, HttpInvoke, HttpRequest};
pub use logs::LogLine;
pub use pool::{PoolStatus, Sizing};
pub use prewarm::PublishEdge;
pub use secrets::{SecretsDirError, WebhookKey};
pub use spec::{FunctionSpec, Mode, Source, WebhookKind, validate_name};
pub use stats::{Activity, FunctionStats, ProcessInfo};
pub use stream::{HttpStream, StreamChunk, StreamTx, http_stream};
pub use supervisor::{
    FunctionDetail, FunctionInfo, FunctionSummary, HttpFront, Output, StoredRequest, Supervisor,
};

/// How the supervisor runs functions.
#[derive(Clone, Debug)]
pub struct Config {
    /// The folder functions are found in.
    pub functions_dir: PathBuf,
    /// Timeout of a request where the function does not set its own.
    pub timeout: Duration,
    /// Most processes per function where the function does not set its own.
    pub instances: usize,
    /// Most requests waiting for a free process, per function, where the function does not set
    /// its own `queue`.
    pub queue: usize,
    /// Longest stdout line a process may write (longer: the process is stopped); also the most
    /// an exec process may write.
    pub max_line: usize,
    /// Longest stderr line logged whole (longer ones are cut).
    pub stderr_line: usize,
    /// How long a stopping process gets after its stdin closes, and again after SIGTERM.
    pub kill_grace: Duration,
    /// Pass the supervisor's whole environment to functions instead of a clean one.
    pub inherit_env: bool,
    /// The server's own address, given to functions as `SHS_URL`.
    pub server_url: String,
    /// Follow the functions folder for changes.
    pub watch: bool,
    /// How long an unused process is kept, where the function does not say; `None`: forever.
    pub idle_timeout: Option<Duration>,
    /// Resource limits, where the function does not set its own.
    pub limits: spec::Limits,
    /// Attempts of an asynchronous delivery, where the function does not set its own.
    pub max_attempts: u32,
    /// First retry wait of an asynchronous delivery, where the function does not set its own.
    pub retry_backoff: Duration,
    /// How many threads are going to attach with [`Supervisor::attach_io_thread`] (e.g. the
    /// HTTP workers). In its first seconds, the supervisor waits for them before it starts
    /// processes, so that the first processes are spread over them too.
    pub io_threads: usize,
    /// The secrets folder (`--secrets-dir`): one file per secret. Refused at start when its
    /// group or others may read it; a missing folder holds no secrets.
    pub secrets_dir: PathBuf,
    /// Processes a second that chain-aware prewarming may start (0: off).
    pub prewarm_budget: u32,
}

impl Config {
    /// The [`defaults`] for the given folder: a clean environment, no resource limits, the
    /// folder followed for changes, no attached threads.
    pub fn new(functions_dir: impl Into<PathBuf>) -> Config {
        Config {
            functions_dir: functions_dir.into(),
            timeout: defaults::TIMEOUT,
            instances: defaults::INSTANCES,
            queue: defaults::QUEUE,
            max_line: defaults::MAX_LINE,
            stderr_line: defaults::STDERR_LINE,
            kill_grace: defaults::KILL_GRACE,
            inherit_env: false,
            server_url: defaults::server_url(),
            watch: true,
            idle_timeout: defaults::IDLE_TIMEOUT,
            limits: spec::Limits::default(),
            max_attempts: defaults::MAX_ATTEMPTS,
            retry_backoff: defaults::RETRY_BACKOFF,
            io_threads: 0,
            secrets_dir: PathBuf::from(defaults::SECRETS_DIR),
            prewarm_budget: defaults::PREWARM_BUDGET,
        }
    }

    /// What applies to a function where its `function.toml` does not say.
    pub fn defaults(&self) -> spec::Defaults {
        spec::Defaults {
            timeout: self.timeout,
            instances: self.instances.max(1),
            queue: self.queue,
            idle_timeout: self.idle_timeout,
            limits: self.limits,
            max_attempts: self.max_attempts,
            retry_backoff: self.retry_backoff,
        }
    }
}

/// What every process and pool shares.
pub(crate) struct Host {
    pub(crate) config: Config,
    pub(crate) bus: Arc<Bus>,
    /// The runtime that owns the processes' reapers, stderr readers and timers, and their
    /// stdin and stdout when no thread is attached.
    pub(crate) handle: tokio::runtime::Handle,
    /// The threads attached to handle processes' stdin and stdout.
    pub(crate) io: io::IoThreads,
    /// The secrets folder, and where functions' private copies go.
    pub(crate) secrets: secrets::Secrets,
    /// The publish graph, and the budget of prewarm starts.
    pub(crate) prewarm: prewarm::Prewarm,
}
