//! The supervisor's errors.
//!
//! [`SpecError`] says why a folder cannot be run as a function. [`InvokeError`] says why one
//! invoke or event delivery failed; each variant belongs to one [`ErrorKind`], which has one
//! HTTP status ([`ErrorKind::status`]): what `POST /run` answers, and what a failed delivery
//! reports to the bus. Neither stops the supervisor: a failing function fails its own
//! requests and nothing else.

use std::path::PathBuf;
use std::time::Duration;

use shs_protocol::RpcError;

/// Why a function folder cannot be run.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    /// The name does not match `^[A-Za-z0-9_-]{1,64}$`.
    #[error(
        "invalid function name {name:?}: a name is 1 to 64 characters of A-Z, a-z, 0-9, '_' and '-'"
    )]
    BadName {
        /// The offending name (cut to 80 characters).
        name: String,
    },
    /// A file or folder could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Io {
        /// What could not be read.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// `function.toml` is not valid.
    #[error("invalid {}: {message}", path.display())]
    Manifest {
        /// The manifest's path.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// `main` exists but cannot be executed.
    #[error("{} is not executable (run `chmod +x` on it)", path.display())]
    NotExecutable {
        /// The file.
        path: PathBuf,
    },
    /// Neither `command` nor a `main` file.
    #[error("{} has no `command` in function.toml and no main, main.py, main.js or main.sh", dir.display())]
    NothingToRun {
        /// The function's folder.
        dir: PathBuf,
    },
}

/// Why the supervisor could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The functions folder cannot be read.
    #[error(transparent)]
    Functions(#[from] SpecError),
    /// The event bus could not resume (its store failed).
    #[error("the event bus could not start: {0}")]
    Bus(#[from] shs_bus::BusError),
    /// The secrets folder cannot be used (e.g. others may read it).
    #[error(transparent)]
    Secrets(#[from] crate::secrets::SecretsDirError),
}

/// How an [`InvokeError`] is reported: each kind has one HTTP status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// No such function (404).
    NotFound,
    /// The function ran and reported an error (500).
    FunctionFailed,
    /// The process crashed, exited or broke the protocol (502).
    BadGateway,
    /// The function could not start, is at capacity or cannot take this now (503).
    Unavailable,
    /// The function did not answer in time (504).
    Timeout,
}

impl ErrorKind {
    /// The HTTP status of this kind of error: the answer of `POST /run`, and the status a
    /// failed event delivery is recorded with.
    pub fn status(self) -> u16 {
        match self {
            ErrorKind::NotFound => 404,
            ErrorKind::FunctionFailed => 500,
            ErrorKind::BadGateway => 502,
            ErrorKind::Unavailable => 503,
            ErrorKind::Timeout => 504,
        }
    }
}

/// Why one invoke or event delivery failed.
#[derive(Debug, thiserror::Error)]
pub enum InvokeError {
    /// No function of that name is deployed.
    #[error("no function named {function:?}")]
    NotFound {
        /// The name asked for.
        function: String,
    },
    /// The function answered with a JSON-RPC error.
    #[error("function {function:?} failed: {}", error.message)]
    Function {
        /// The function.
        function: String,
        /// Its error, as it sent it.
        error: Box<RpcError>,
    },
    /// An exec-mode process exited with a non-zero status.
    #[error("function {function:?} exited with {status}{}", tail_suffix(stderr))]
    ExecFailed {
        /// The function.
        function: String,
        /// How it exited.
        status: String,
        /// The last lines of its stderr.
        stderr: Vec<String>,
    },
    /// A cgi-mode script answered an event (or an invoke without an HTTP request) with an
    /// error status.
    #[error("function {function:?} answered with status {status}")]
    Refused {
        /// The function.
        function: String,
        /// The status of its CGI response, 400 or more.
        status: u16,
    },
    /// The process died, or closed its stdout, before it answered.
    #[error("function {function:?} {detail}{}", tail_suffix(stderr))]
    Crashed {
        /// The function.
        function: String,
        /// What happened, e.g. "exited with status 1 while handling the request".
        detail: String,
        /// The last lines of its stderr.
        stderr: Vec<String>,
    },
    /// The process broke the protocol (e.g. an over-long stdout line); it was stopped.
    #[error("function {function:?} broke the protocol: {detail}")]
    Protocol {
        /// The function.
        function: String,
        /// What it did.
        detail: String,
    },
    /// No process of the function could be started.
    #[error(
        "function {function:?} could not start: {reason}{}",
        tail_suffix(stderr)
    )]
    StartFailed {
        /// The function.
        function: String,
        /// Why, e.g. "exited with status 1 before answering initialize".
        reason: String,
        /// The last lines of its stderr.
        stderr: Vec<String>,
    },
    /// The function keeps failing to start; it is not tried again before `retry_in`.
    #[error(
        "function {function:?} could not start: {reason} ({failures} failed starts in a row; next try in {}){}",
        fmt_duration(*retry_in), tail_suffix(stderr)
    )]
    BackingOff {
        /// The function.
        function: String,
        /// Failed starts in a row.
        failures: u32,
        /// Why the last start failed.
        reason: String,
        /// The last lines of its stderr.
        stderr: Vec<String>,
        /// How long until the next try.
        retry_in: Duration,
    },
    /// The function's folder is there but cannot be run.
    #[error("function {function:?} cannot be run: {reason}")]
    Broken {
        /// The function.
        function: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Every process is busy and none could be added in time.
    #[error("function {function:?} is at capacity: {detail}")]
    AtCapacity {
        /// The function.
        function: String,
        /// How busy it is.
        detail: String,
        /// When trying again makes sense.
        retry_after: Duration,
    },
    /// The function was removed or redeployed while the request waited for it.
    #[error("function {function:?} was {what} while the request waited; try again")]
    Gone {
        /// The function.
        function: String,
        /// "removed" or "redeployed".
        what: &'static str,
    },
    /// Delivering would wait for a process that is itself waiting for this delivery.
    #[error("function {function:?} cannot take the event: {detail}")]
    Cycle {
        /// The function.
        function: String,
        /// Which wait would loop.
        detail: String,
    },
    /// The function did not answer in time; its process was killed.
    #[error("function {function:?} did not answer within {}; {action}", fmt_duration(*after))]
    Timeout {
        /// The function.
        function: String,
        /// The timeout that passed.
        after: Duration,
        /// What was done about it.
        action: &'static str,
    },
}

impl InvokeError {
    /// How this error is reported.
    pub fn kind(&self) -> ErrorKind {
        match self {
            InvokeError::NotFound { .. } => ErrorKind::NotFound,
            InvokeError::Function { .. }
            | InvokeError::ExecFailed { .. }
            | InvokeError::Refused { .. } => ErrorKind::FunctionFailed,
            InvokeError::Crashed { .. } | InvokeError::Protocol { .. } => ErrorKind::BadGateway,
            InvokeError::StartFailed { .. }
            | InvokeError::BackingOff { .. }
            | InvokeError::Broken { .. }
            | InvokeError::AtCapacity { .. }
            | InvokeError::Gone { .. }
            | InvokeError::Cycle { .. } => ErrorKind::Unavailable,
            InvokeError::Timeout { .. } => ErrorKind::Timeout,
        }
    }

    /// The function the error is about.
    pub fn function(&self) -> &str {
        match self {
            InvokeError::NotFound { function }
            | InvokeError::Function { function, .. }
            | InvokeError::ExecFailed { function, .. }
            | InvokeError::Refused { function, .. }
            | InvokeError::Crashed { function, .. }
            | InvokeError::Protocol { function, .. }
            | InvokeError::StartFailed { function, .. }
            | InvokeError::BackingOff { function, .. }
            | InvokeError::Broken { function, .. }
            | InvokeError::AtCapacity { function, .. }
            | InvokeError::Gone { function, .. }
            | InvokeError::Cycle { function, .. }
            | InvokeError::Timeout { function, .. } => function,
        }
    }

    /// The last lines of the function's stderr, where they explain the error.
    pub fn stderr(&self) -> &[String] {
        match self {
            InvokeError::ExecFailed { stderr, .. }
            | InvokeError::Crashed { stderr, .. }
            | InvokeError::StartFailed { stderr, .. }
            | InvokeError::BackingOff { stderr, .. } => stderr,
            _ => &[],
        }
    }

    /// When a retry makes sense, for errors that are about load.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            InvokeError::AtCapacity { retry_after, .. } => Some(*retry_after),
            InvokeError::BackingOff { retry_in, .. } => Some(*retry_in),
            InvokeError::Gone { .. } => Some(Duration::from_secs(1)),
            _ => None,
        }
    }
}

fn tail_suffix(stderr: &[String]) -> String {
    match stderr.last() {
        Some(last) => format!("; stderr ends with: {last}"),
        None => String::new(),
    }
}

/// `1.5s`, `30s`, `250ms`.
pub(crate) fn fmt_duration(d: Duration) -> String {
    if d.as_millis() < 1000 {
        format!("{}ms", d.as_millis())
    } else if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{:.1}s", d.as_secs_f64())
    }
}
