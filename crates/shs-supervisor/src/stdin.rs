//! Writing to a function's stdin: at once from the caller when the pipe takes it, else in
//! order through a backlog that a flusher task empties.
//!
//! A request's line goes straight into the pipe, written by whichever thread makes the call,
//! with no hand-off to another task; only when the pipe is full (the function is behind) does
//! the rest wait in the backlog. Lines are never reordered: once anything waits in the backlog,
//! new lines queue behind it. The backlog is bounded for the function's own requests' answers
//! ([`StdinWriter::write_waiting`] waits while it is over [`BACKLOG_LIMIT`]); the supervisor's
//! requests are bounded by the process's slots.

use std::io;
use std::sync::Arc;

use bytes::{Buf, BytesMut};
use parking_lot::Mutex;
use std::os::fd::OwnedFd;

use tokio::net::unix::pipe;
use tokio::sync::Notify;

/// Above this many bytes waiting, the function's own requests wait before they are answered.
const BACKLOG_LIMIT: usize = 1024 * 1024;

/// The pipe can take no more lines (the process closed it or is gone), and how it broke.
#[derive(Debug)]
pub(crate) struct Broken(#[allow(dead_code)] pub(crate) io::ErrorKind);

struct State {
    pipe: Option<Arc<pipe::Sender>>,
    backlog: BytesMut,
    closing: bool,
    broken: Option<io::ErrorKind>,
}

/// The write end of a function's stdin.
pub(crate) struct StdinWriter {
    state: Mutex<State>,
    /// Something waits in the backlog, or the pipe should close.
    work: Notify,
    /// The backlog went below the limit.
    drained: Notify,
}

impl StdinWriter {
    /// Takes over a child's stdin; must be called in the runtime that will run the flusher.
    pub(crate) fn new(stdin: OwnedFd) -> io::Result<Arc<StdinWriter>> {
        let sender = pipe::Sender::from_owned_fd(stdin)?;
        Ok(Arc::new(StdinWriter {
            state: Mutex::new(State {
                pipe: Some(Arc::new(sender)),
                backlog: BytesMut::new(),
                closing: false,
                broken: None,
            }),
            work: Notify::new(),
            drained: Notify::new(),
        }))
    }

    /// Writes `line` now if the pipe takes it, else queues it behind what waits. Never waits.
    ///
    /// With `batch`, the line is queued for the flusher even when the pipe would take it: a
    /// caller on the flusher's own thread lets the lines of every request that thread handles
    /// in one turn go down in one write (one wake-up of the function instead of one per line).
    pub(crate) fn write(&self, line: &[u8], batch: bool) -> Result<(), Broken> {
        let mut state = self.state.lock();
        if let Some(kind) = state.broken {
            return Err(Broken(kind));
        }
        let Some(pipe) = state.pipe.clone().filter(|_| !state.closing) else {
            return Err(Broken(io::ErrorKind::BrokenPipe));
        };
        if !state.backlog.is_empty() {
            state.backlog.extend_from_slice(line);
            return Ok(());
        }
        if batch {
            state.backlog.extend_from_slice(line);
            drop(state);
            self.work.notify_one();
            return Ok(());
        }
        match pipe.try_write(line) {
            Ok(n) if n == line.len() => Ok(()),
            Ok(n) => {
                state.backlog.extend_from_slice(&line[n..]);
                drop(state);
                self.work.notify_one();
                Ok(())
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                state.backlog.extend_from_slice(line);
                drop(state);
                self.work.notify_one();
                Ok(())
            }
            Err(e) => {
                state.broken = Some(e.kind());
                drop(state);
                self.work.notify_one();
                Err(Broken(e.kind()))
            }
        }
    }

    /// Like [`StdinWriter::write`], but first waits while the backlog is over its limit (for
    /// answers to the function's own requests: a function that does not read them waits).
    pub(crate) async fn write_waiting(&self, line: &[u8]) -> Result<(), Broken> {
        loop {
            let drained = self.drained.notified();
            {
                let state = self.state.lock();
                if state.broken.is_some() || state.backlog.len() <= BACKLOG_LIMIT {
                    break;
                }
            }
            drained.await;
        }
        self.write(line, false)
    }

    /// Closes the pipe once what waits has been written: the function sees the end of input.
    pub(crate) fn close(&self) {
        self.state.lock().closing = true;
        self.work.notify_one();
    }

    /// Empties the backlog as the pipe takes it, and closes the pipe when asked. Returns the
    /// error that broke the pipe, if one did.
    pub(crate) async fn flush_loop(&self) -> Option<io::Error> {
        loop {
            let work = self.work.notified();
            let pipe = {
                let mut state = self.state.lock();
                if let Some(kind) = state.broken {
                    return Some(io::Error::from(kind));
                }
                if state.backlog.is_empty() {
                    if state.closing {
                        // Dropping the last handle closes the pipe.
                        state.pipe = None;
                        return None;
                    }
                    None
                } else {
                    state.pipe.clone()
                }
            };
            let Some(pipe) = pipe else {
                work.await;
                continue;
            };
            if let Err(e) = pipe.writable().await {
                self.state.lock().broken = Some(e.kind());
                return Some(e);
            }
            let mut state = self.state.lock();
            let result = pipe.try_write(&state.backlog);
            match result {
                Ok(n) => {
                    state.backlog.advance(n);
                    if state.backlog.len() <= BACKLOG_LIMIT {
                        self.drained.notify_waiters();
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => {
                    state.broken = Some(e.kind());
                    self.drained.notify_waiters();
                    return Some(e);
                }
            }
        }
    }
}
