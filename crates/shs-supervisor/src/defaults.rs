//! The default of each setting, declared once.
//!
//! The flags of `shs serve` take their defaults from here (`default_value_t` in the binary's
//! `cli.rs`), so does [`Config::new`](crate::Config::new), and what a `function.toml` leaves
//! out falls back to the [`Config`](crate::Config) through
//! [`Config::defaults`](crate::Config::defaults). The README's configuration table lists these
//! values.

use std::time::Duration;

/// Longest time a request may take (`--timeout`, `timeout`).
pub const TIMEOUT: Duration = Duration::from_secs(30);

/// Most processes per function (`--instances`, `instances`).
pub const INSTANCES: usize = 4;

/// Most requests waiting for a busy function, per function (`--queue`, `queue`).
pub const QUEUE: usize = 64;

/// Requests in flight per process (`concurrency`; no flag).
pub const CONCURRENCY: usize = 1;

/// How long an unused process is kept (`--idle-timeout`, `idle_timeout`); `None`: forever.
pub const IDLE_TIMEOUT: Option<Duration> = Some(Duration::from_secs(300));

/// Attempts of an asynchronous delivery before it becomes a dead letter (`--max-attempts`,
/// `max_attempts`).
pub const MAX_ATTEMPTS: u32 = 5;

/// The wait after the first failed attempt of an asynchronous delivery (`--retry-backoff`,
/// `retry_backoff`).
pub const RETRY_BACKOFF: Duration = Duration::from_secs(1);

/// Whether the asynchronous deliveries of one event type to a function are made one at a
/// time, in order (`ordered`; no flag).
pub const ORDERED: bool = true;

/// Longest stdout line a process may write, in bytes (`--max-line`).
pub const MAX_LINE: usize = 16 << 20;

/// Longest stderr line logged whole, in bytes (no flag).
pub const STDERR_LINE: usize = 64 << 10;

/// How long a stopping process gets after its stdin closes, and again after SIGTERM
/// (`--kill-grace`).
pub const KILL_GRACE: Duration = Duration::from_secs(2);

/// The secrets folder (`--secrets-dir`), relative to the working folder.
pub const SECRETS_DIR: &str = "./secrets";

/// The address the server listens on (`--listen`).
pub const LISTEN: &str = "127.0.0.1:8080";

/// The server's URL when it listens on [`LISTEN`]: what functions get as `SHS_URL`, and where
/// the client commands look for a server (`--url`).
pub fn server_url() -> String {
    format!("http://{LISTEN}")
}

/// Processes a deployment starts at once (spread: a large functions folder does not start a
/// storm of processes).
pub const STARTS_AT_ONCE: usize = 8;

/// Processes a second that chain-aware prewarming may start (`--prewarm-budget`).
pub const PREWARM_BUDGET: u32 = 8;
