//! The run loops: read the supervisor's lines, hand requests to the handlers, route answers to
//! the function's own requests back to the callers waiting for them, write what comes out.
//!
//! # Theory of operation
//!
//! Everything starts on the caller's thread, in the *local* loop ([`Local`]): read a line
//! (from a large buffer), handle it, append the answer to an output buffer, and flush that
//! buffer only when no complete line is left in the input buffer, that is, just before a read
//! that could block. Requests that arrive together (the supervisor pipelines them at
//! concurrency > 1) are so answered together, in one write.
//!
//! A handler that calls the supervisor ([`crate::Context::publish`], ...) does it through the
//! same loop's [`Link`]: the request is written and flushed, then lines are read until the
//! answer with its id comes. Supervisor requests read meanwhile are queued and handled after
//! the handler returns; answers with other ids are logged and dropped.
//!
//! With [`crate::Function::threads`] > 1, the local loop serves only until `initialize` is
//! answered (start-up has nothing to run in parallel). Then the same buffered reader is
//! handed to the *threaded* loop: this thread keeps reading and routes each line: requests
//! to a pool of worker threads, answers to the caller waiting for that id (a map of pending
//! ids to channels). One writer thread owns stdout; it writes whatever lines are ready and
//! flushes when none is left.
//!
//! At the end of input, callers still waiting for an answer get an error (none can come),
//! the requests already read are finished and answered, and the loop returns.

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::io::{self, BufRead, BufReader, BufWriter, Read, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, Sender, SyncSender};
use std::sync::{Mutex, PoisonError};

use serde_json::value::RawValue;
use shs_protocol::codec::compact_json;
use shs_protocol::{Id, RpcError, write_notification, write_request, write_response};

use crate::RawOutput;
use crate::context::{CallFailure, Link, log};
use crate::function::{BUFFER, Function, Outcome};
use crate::wire::{Incoming, classify, trim_line_end};

/// Why [`run`] stopped before `initialize` was answered (the message is logged already).
#[derive(Debug)]
pub(crate) struct StartUpFailed(pub(crate) String);

impl std::fmt::Display for StartUpFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for StartUpFailed {}

/// Runs `function` over `input` and `output` until the end of input.
pub(crate) fn run<R: Read, W: Write + Send>(
    function: &Function,
    input: R,
    output: W,
    threads: usize,
) -> io::Result<()> {
    let local = Local {
        conn: RefCell::new(Conn {
            reader: BufReader::with_capacity(BUFFER, input),
            writer: output,
            out: Vec::with_capacity(BUFFER),
            queue: VecDeque::new(),
            next_id: 0,
            eof: false,
        }),
    };
    local.serve(function, threads > 1)?;
    let conn = local.conn.into_inner();
    if threads > 1 && !(conn.eof && conn.queue.is_empty()) {
        threaded(function, conn, threads)
    } else {
        Ok(())
    }
}

/// Appends the answer line for `outcome` to `out`.
fn write_answer(out: &mut Vec<u8>, id: &Id, outcome: &Result<RawOutput<'_>, RpcError>) {
    let written = match outcome {
        Ok(output) => {
            let raw = output.as_raw();
            if raw.get().as_bytes().contains(&b'\n') {
                // Raw JSON from the handler with line breaks between tokens: a line cannot
                // hold them.
                let compact = compact_json(raw.get());
                match RawValue::from_string(compact) {
                    Ok(raw) => write_response(out, id, Ok(&*raw)),
                    Err(e) => Err(e),
                }
            } else {
                write_response(out, id, Ok(raw))
            }
        }
        Err(error) => write_response::<()>(out, id, Err(error)),
    };
    if let Err(e) = written {
        log(format_args!(
            "shs-sdk: cannot write the answer to {id}: {e}"
        ));
    }
}

/// The streams and what the local loop keeps between lines.
struct Conn<R, W> {
    reader: BufReader<R>,
    writer: W,
    /// Lines written but not yet flushed.
    out: Vec<u8>,
    /// Supervisor requests read while waiting for an answer.
    queue: VecDeque<Vec<u8>>,
    /// The last id the function used for a request of its own.
    next_id: u64,
    eof: bool,
}

impl<R: Read, W: Write> Conn<R, W> {
    fn flush(&mut self) -> io::Result<()> {
        if self.out.is_empty() {
            return Ok(());
        }
        let result = self
            .writer
            .write_all(&self.out)
            .and_then(|()| self.writer.flush());
        self.out.clear();
        result
    }

    /// Whether a whole line is waiting in the input buffer (so that reading it cannot block).
    fn line_buffered(&self) -> bool {
        self.reader.buffer().contains(&b'\n')
    }
}

/// The single-threaded loop; it is also the [`Link`] its handlers call through.
struct Local<R, W> {
    conn: RefCell<Conn<R, W>>,
}

impl<R: Read, W: Write> Local<R, W> {
    /// Serves until the end of input (or, with `until_initialized`, until `initialize` is
    /// answered).
    fn serve(&self, function: &Function, until_initialized: bool) -> io::Result<()> {
        let mut line = Vec::with_capacity(4096);
        loop {
            {
                let mut conn = self.conn.borrow_mut();
                if let Some(queued) = conn.queue.pop_front() {
                    line = queued;
                } else if conn.eof {
                    break;
                } else {
                    if !conn.out.is_empty() && !conn.line_buffered() {
                        conn.flush()?;
                    }
                    line.clear();
                    if conn.reader.read_until(b'\n', &mut line)? == 0 {
                        conn.eof = true;
                        break;
                    }
                }
            }
            let text = trim_line_end(&line);
            if text.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            match function.handle(text, self) {
                Outcome::Answer(id, outcome) => {
                    let mut conn = self.conn.borrow_mut();
                    write_answer(&mut conn.out, &id, &outcome);
                    if conn.out.len() >= BUFFER {
                        conn.flush()?;
                    }
                }
                Outcome::Initialized(id, answer) => {
                    let mut conn = self.conn.borrow_mut();
                    write_answer(&mut conn.out, &id, &Ok(RawOutput::Owned(answer)));
                    conn.flush()?;
                    if until_initialized {
                        return Ok(());
                    }
                }
                Outcome::Nothing => {}
                Outcome::Fatal(_, message) => {
                    // No answer: a process that exits before it answers `initialize` is a
                    // failed start, reported with the last lines of its log (this message).
                    log(&message);
                    self.conn.borrow_mut().flush()?;
                    return Err(io::Error::other(StartUpFailed(message)));
                }
            }
        }
        self.conn.borrow_mut().flush()
    }
}

impl<R: Read, W: Write> Link for Local<R, W> {
    fn call(&self, method: &'static str, params: &RawValue) -> Result<Box<RawValue>, CallFailure> {
        let mut conn = self
            .conn
            .try_borrow_mut()
            .map_err(|_| CallFailure::Io(io::Error::other("a request from inside a request")))?;
        if conn.eof {
            return Err(CallFailure::Closed);
        }
        conn.next_id += 1;
        let id = conn.next_id;
        write_request(&mut conn.out, &Id::from(id), method, params)
            .map_err(|e| CallFailure::Io(e.into()))?;
        // Everything written so far goes out before we wait: an answer held back here could
        // be what the supervisor needs before it can answer us.
        conn.flush().map_err(CallFailure::Io)?;
        loop {
            let mut line = Vec::new();
            if conn
                .reader
                .read_until(b'\n', &mut line)
                .map_err(CallFailure::Io)?
                == 0
            {
                conn.eof = true;
                return Err(CallFailure::Closed);
            }
            let text = trim_line_end(&line);
            match classify(text) {
                Ok(Incoming::Answer {
                    id: Some(got),
                    outcome,
                }) if got.as_u64() == Some(id) => {
                    return outcome.map(RawValue::to_owned).map_err(CallFailure::Rpc);
                }
                Ok(Incoming::Answer { .. }) | Err(_) => {
                    // Logged by the handler dispatch, as any stray line is.
                    conn.queue.push_back(line);
                }
                Ok(Incoming::Request { .. } | Incoming::Notification { .. }) => {
                    conn.queue.push_back(line);
                }
            }
        }
    }

    fn notify(&self, method: &'static str, params: &RawValue) -> Result<(), CallFailure> {
        let mut conn = self
            .conn
            .try_borrow_mut()
            .map_err(|_| CallFailure::Io(io::Error::other("a request from inside a request")))?;
        write_notification(&mut conn.out, method, params).map_err(|e| CallFailure::Io(e.into()))?;
        // Out now, not when the handler is done: nobody waits for it, but it should not wait
        // for the handler either.
        conn.flush().map_err(CallFailure::Io)
    }
}

/// Calls waiting for an answer, by id.
struct Pending {
    closed: bool,
    waiters: HashMap<u64, SyncSender<Result<Box<RawValue>, CallFailure>>>,
}

/// What the reader, the workers and their handlers share in the threaded loop.
struct Shared {
    pending: Mutex<Pending>,
    next_id: AtomicU64,
}

/// A worker's [`Link`]: the shared state and the worker's line to the writer thread.
struct WorkerLink<'s> {
    shared: &'s Shared,
    out: Sender<Vec<u8>>,
}

impl Link for WorkerLink<'_> {
    fn call(&self, method: &'static str, params: &RawValue) -> Result<Box<RawValue>, CallFailure> {
        let id = self.shared.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        let (tx, rx) = mpsc::sync_channel(1);
        {
            let mut pending = self
                .shared
                .pending
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if pending.closed {
                return Err(CallFailure::Closed);
            }
            pending.waiters.insert(id, tx);
        }
        let mut line = Vec::with_capacity(256);
        write_request(&mut line, &Id::from(id), method, params)
            .map_err(|e| CallFailure::Io(e.into()))?;
        if self.out.send(line).is_err() {
            self.shared
                .pending
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .waiters
                .remove(&id);
            return Err(CallFailure::Io(io::Error::other("stdout is closed")));
        }
        rx.recv().unwrap_or(Err(CallFailure::Closed))
    }

    fn notify(&self, method: &'static str, params: &RawValue) -> Result<(), CallFailure> {
        let mut line = Vec::with_capacity(256);
        write_notification(&mut line, method, params).map_err(|e| CallFailure::Io(e.into()))?;
        self.out
            .send(line)
            .map_err(|_| CallFailure::Io(io::Error::other("stdout is closed")))
    }
}

/// The threaded loop: this thread reads and routes, `threads` workers handle requests, one
/// writer writes.
fn threaded<R: Read, W: Write + Send>(
    function: &Function,
    conn: Conn<R, W>,
    threads: usize,
) -> io::Result<()> {
    let Conn {
        mut reader,
        writer,
        out: _,
        queue,
        next_id,
        eof,
    } = conn;
    let shared = Shared {
        pending: Mutex::new(Pending {
            closed: eof,
            waiters: HashMap::new(),
        }),
        next_id: AtomicU64::new(next_id),
    };
    let (out_tx, out_rx) = mpsc::channel::<Vec<u8>>();
    let (job_tx, job_rx) = mpsc::channel::<Vec<u8>>();
    let job_rx = Mutex::new(job_rx);
    std::thread::scope(|scope| {
        let writer = scope.spawn(move || write_loop(writer, out_rx));
        for _ in 0..threads {
            let link = WorkerLink {
                shared: &shared,
                out: out_tx.clone(),
            };
            let job_rx = &job_rx;
            scope.spawn(move || work(function, link, job_rx));
        }
        drop(out_tx);
        for line in queue {
            let _ = job_tx.send(line);
        }
        let read = if eof {
            Ok(())
        } else {
            read_loop(&mut reader, &shared, &job_tx)
        };
        // The end of input (or a failed read): no answer can come any more.
        let waiters = {
            let mut pending = shared
                .pending
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            pending.closed = true;
            std::mem::take(&mut pending.waiters)
        };
        for (_, waiter) in waiters {
            let _ = waiter.send(Err(CallFailure::Closed));
        }
        drop(job_tx);
        let written = writer
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("the writer thread panicked")));
        read.and(written)
    })
}

/// Reads lines until the end of input: requests go to the workers, answers to their callers.
fn read_loop<R: Read>(
    reader: &mut BufReader<R>,
    shared: &Shared,
    jobs: &Sender<Vec<u8>>,
) -> io::Result<()> {
    loop {
        let mut line = Vec::with_capacity(256);
        if reader.read_until(b'\n', &mut line)? == 0 {
            return Ok(());
        }
        let text = trim_line_end(&line);
        if text.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let answer = match classify(text) {
            Ok(Incoming::Answer {
                id: Some(id),
                outcome,
            }) => id.as_u64().map(|id| {
                (
                    id,
                    outcome.map(RawValue::to_owned).map_err(CallFailure::Rpc),
                )
            }),
            _ => None,
        };
        match answer {
            Some((id, outcome)) => {
                let waiter = shared
                    .pending
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .waiters
                    .remove(&id);
                match waiter {
                    Some(waiter) => {
                        let _ = waiter.send(outcome);
                    }
                    None => log(format_args!(
                        "shs-sdk: ignoring an answer with an id nobody waits for: {id}"
                    )),
                }
            }
            // Requests, and anything else (logged where it is handled).
            None => {
                if jobs.send(line).is_err() {
                    return Ok(());
                }
            }
        }
    }
}

/// A worker: handles requests until the reader stops.
fn work(function: &Function, link: WorkerLink<'_>, jobs: &Mutex<Receiver<Vec<u8>>>) {
    loop {
        let job = jobs.lock().unwrap_or_else(PoisonError::into_inner).recv();
        let Ok(line) = job else { return };
        let text = trim_line_end(&line);
        let mut answer = Vec::new();
        match function.handle(text, &link) {
            Outcome::Answer(id, outcome) => write_answer(&mut answer, &id, &outcome),
            Outcome::Initialized(id, initialized) => {
                write_answer(&mut answer, &id, &Ok(RawOutput::Owned(initialized)));
            }
            Outcome::Nothing => continue,
            Outcome::Fatal(id, message) => {
                // `initialize` again, after start-up: answer, do not stop serving.
                log(&message);
                let error = RpcError::new(crate::Error::FUNCTION_ERROR, message);
                write_answer(&mut answer, &id, &Err(error));
            }
        }
        if link.out.send(answer).is_err() {
            return;
        }
    }
}

/// The writer thread: writes lines as they come, flushes when none is waiting.
fn write_loop<W: Write>(writer: W, lines: Receiver<Vec<u8>>) -> io::Result<()> {
    let mut writer = BufWriter::with_capacity(BUFFER, writer);
    let mut result = Ok(());
    while let Ok(line) = lines.recv() {
        if result.is_err() {
            continue; // keep draining, so that nobody blocks on a full channel
        }
        result = writer.write_all(&line).and_then(|()| {
            while let Ok(more) = lines.try_recv() {
                writer.write_all(&more)?;
            }
            writer.flush()
        });
    }
    result
}
