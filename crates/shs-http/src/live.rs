//! Live views: `GET /functions/{name}` (everything about one function) and `GET /stream`, the
//! one server-sent-events route the dashboard and `shs logs -f` follow.
//!
//! `GET /stream?topics=functions,function:NAME,logs:NAME&tail=N` answers `text/event-stream`:
//!
//! - `functions`: an `event: functions` with every function in brief (state, processes, queue,
//!   counts, latency percentiles of the last 15 minutes) at once, then each time it changes,
//!   looked at every second.
//! - `function:NAME`: an `event: function` with everything about NAME (as `GET
//!   /functions/{name}`), likewise.
//! - `logs:NAME`: an `event: log` for each line of NAME's log: the last `tail` (default 100)
//!   at once, then each new one within a quarter of a second.
//!
//! A stream is pulled, not pushed: each step builds the next chunk from the supervisor's state
//! when the connection can take it, at most [`CHUNK_BUDGET`] bytes of log lines at a time. A
//! slow client therefore costs one chunk of memory, never a growing queue: the log ring (256
//! KiB a function) moves on without it, and the stream says so with an `event: skipped` (how
//! many lines it missed) before the next line it sends. At most [`MAX_STREAMS`] streams are
//! open at once (503 past that); each sends a comment every 15 s to keep the connection
//! open, and ends with an `event: bye` when the server starts to shut down, so it never holds
//! the shutdown up.

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpResponse, web};
use parking_lot::Mutex;
use serde::Deserialize;
use serde_json::{Map, Value, json};
use shs_supervisor::{FunctionDetail, FunctionSummary, InvokeError, LogLine, Supervisor};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};

use crate::functions::{FunctionName, invoke_error_response, millis, rfc3339};
use crate::{AppState, Lifecycle, error_response};

/// The most streams open at once, over all clients.
pub(crate) const MAX_STREAMS: usize = 64;

/// The most topics one stream follows.
pub(crate) const MAX_TOPICS: usize = 16;

/// The most bytes of log lines put in one chunk of a stream.
pub(crate) const CHUNK_BUDGET: usize = 64 * 1024;

/// How often a stream looks for new log lines.
const TICK: Duration = Duration::from_millis(250);

/// How often a stream looks at the functions' state.
const SNAPSHOT_EVERY: Duration = Duration::from_secs(1);

/// How long a stream may stay silent before it sends a comment.
const HEARTBEAT: Duration = Duration::from_secs(15);

/// The most log lines read from a ring at a time.
const LOG_PAGE: usize = 500;

/// What the streams share: the limit on open streams, the server's stop signal, and the
/// latest list of functions (built at most once a second, whatever the number of streams).
pub(crate) struct Hub {
    lifecycle: Arc<Lifecycle>,
    permits: Arc<Semaphore>,
    snapshot: Mutex<Option<(Instant, Arc<str>)>>,
}

impl Hub {
    pub(crate) fn new(lifecycle: Arc<Lifecycle>) -> Hub {
        Hub {
            lifecycle,
            permits: Arc::new(Semaphore::new(MAX_STREAMS)),
            snapshot: Mutex::new(None),
        }
    }

    /// The `functions` event's data, at most [`SNAPSHOT_EVERY`] old.
    fn functions(&self, supervisor: &Supervisor) -> Arc<str> {
        let mut snapshot = self.snapshot.lock();
        if let Some((at, data)) = &*snapshot
            && at.elapsed() < SNAPSHOT_EVERY
        {
            return data.clone();
        }
        let rows: Vec<Value> = supervisor.summaries().iter().map(summary_json).collect();
        let data: Arc<str> = json!({ "functions": rows }).to_string().into();
        *snapshot = Some((Instant::now(), data.clone()));
        data
    }
}

/// The members of `GET /functions`'s row for a function.
fn info_json(info: &shs_supervisor::FunctionInfo) -> Map<String, Value> {
    let mut row = Map::new();
    row.insert("name".into(), json!(info.name));
    row.insert("mode".into(), json!(info.mode));
    row.insert("subscriptions".into(), json!(info.subscriptions));
    row.insert("state".into(), json!(info.state));
    row.insert("processes".into(), json!(info.processes));
    row.insert(
        "publishes".into(),
        json!(crate::functions::publish_rows(&info.publishes)),
    );
    if let Some(error) = &info.error {
        row.insert("error".into(), json!(error));
    }
    if let Some(p) = &info.pool {
        row.insert("queued".into(), json!(p.queued));
        row.insert("failures".into(), json!(p.failures));
        if let Some(next) = p.next_try {
            row.insert("next_try".into(), json!(rfc3339(next)));
        }
        if !p.stderr.is_empty() {
            row.insert("stderr".into(), json!(p.stderr));
        }
        row.insert("starting".into(), json!(p.starting));
        row.insert("cold_starts".into(), json!(p.cold_starts));
        row.insert(
            "cold_start_ms_total".into(),
            json!(millis(p.cold_start_total)),
        );
        if let Some(last) = p.last_cold_start {
            row.insert("last_cold_start_ms".into(), json!(millis(last)));
        }
        let sizing = &p.sizing;
        row.insert("concurrency".into(), json!(sizing.concurrency));
        row.insert(
            "concurrency_source".into(),
            json!(sizing.concurrency_source.as_str()),
        );
        row.insert("instances".into(), json!(sizing.instances));
        row.insert(
            "instances_source".into(),
            json!(sizing.instances_source.as_str()),
        );
        if let Some(note) = crate::functions::joined(&sizing.notes) {
            row.insert("note".into(), json!(note));
        }
        if let Some(error) = crate::functions::joined(&sizing.errors) {
            row.insert("declaration_error".into(), json!(error));
        }
    }
    row
}

/// A function in brief: its row of `GET /functions`, what is in force of its pool, its counts
/// and the totals of its last 15 minutes.
fn summary_json(summary: &FunctionSummary) -> Value {
    let mut row = info_json(&summary.info);
    // An rpc function's row has them already (in force, declared ones included).
    if let Some((instances, concurrency)) = summary.instances {
        row.entry("instances").or_insert(json!(instances));
        row.entry("concurrency").or_insert(json!(concurrency));
    }
    row.insert("metrics".into(), json!(summary.stats));
    let a = &summary.activity;
    row.insert(
        "recent".into(),
        json!({"requests": a.requests, "errors": a.errors, "p50_ms": a.p50_ms,
               "p99_ms": a.p99_ms, "seconds": a.step_seconds * a.points.len() as u64}),
    );
    Value::Object(row)
}

/// Everything about a function, as `GET /functions/{name}` answers it.
fn detail_json(detail: &FunctionDetail) -> Value {
    let mut row = info_json(&detail.info);
    let config = detail.spec.as_ref().map(|spec| {
        let seconds = |d: Duration| (d.as_secs_f64() * 1e3).round() / 1e3;
        json!({
            "dir": spec.dir.display().to_string(),
            "command": spec.command,
            "mode": spec.mode.as_str(),
            "timeout_seconds": seconds(spec.timeout),
            "start_timeout_seconds": seconds(spec.start_timeout),
            "subscribe": spec.subscribe,
            // Names only: values may be secrets.
            "env": spec.env.keys().collect::<Vec<_>>(),
            "instances": detail.info.pool.as_ref().map_or(spec.instances, |p| p.sizing.instances),
            "concurrency": detail.info.pool.as_ref().map_or(spec.concurrency, |p| p.sizing.concurrency),
            "queue": spec.queue,
            "min_instances": detail.min_instances,
            "idle_timeout_seconds": spec.idle_timeout.map(seconds),
            "limits": {
                "memory": spec.limits.memory,
                "cpu_seconds": spec.limits.cpu_seconds,
                "open_files": spec.limits.open_files,
                "processes": spec.limits.processes,
            },
            "user": spec.run_as.as_ref().map(|r| json!({"uid": r.uid, "gid": r.gid})),
            "max_attempts": spec.max_attempts,
            "retry_backoff_seconds": seconds(spec.retry_backoff),
            "ordered": spec.ordered,
        })
    });
    row.insert("config".into(), config.unwrap_or(Value::Null));
    row.insert("manifest".into(), json!(detail.manifest));
    row.insert("process_list".into(), json!(detail.processes));
    row.insert("metrics".into(), json!(detail.stats));
    row.insert("activity".into(), json!(detail.activity));
    Value::Object(row)
}

/// `GET /functions/{name}`: everything about one function.
pub(crate) async fn function(
    FunctionName(name): FunctionName,
    state: web::Data<AppState>,
) -> HttpResponse {
    match state.supervisor.detail(&name) {
        Ok(detail) => HttpResponse::Ok().json(detail_json(&detail)),
        Err(error) => invoke_error_response(&error),
    }
}

/// What a stream follows.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Topic {
    Functions,
    Function(String),
    Logs(String),
}

impl Topic {
    fn parse(text: &str) -> Result<Topic, String> {
        let text = text.trim();
        if text == "functions" {
            return Ok(Topic::Functions);
        }
        let (kind, name) = text.split_once(':').unwrap_or((text, ""));
        let topic = match kind {
            "function" => Topic::Function(name.to_owned()),
            "logs" => Topic::Logs(name.to_owned()),
            _ => {
                return Err(format!(
                    "unknown topic {text:?}: use functions, function:NAME or logs:NAME"
                ));
            }
        };
        shs_supervisor::validate_name(name).map_err(|e| format!("topic {text:?}: {e}"))?;
        Ok(topic)
    }
}

/// Query of `GET /stream`.
#[derive(Deserialize)]
pub(crate) struct StreamQuery {
    /// Comma-separated topics.
    topics: Option<String>,
    /// How many of the latest log lines to send first, per `logs:` topic.
    tail: Option<usize>,
}

/// The topics asked for, or a 400 saying what is wrong.
fn topics_of(query: &StreamQuery) -> Result<Vec<Topic>, HttpResponse> {
    let bad = |m: String| error_response(StatusCode::BAD_REQUEST, m, Map::new());
    let text = query.topics.as_deref().unwrap_or_default();
    let mut topics = Vec::new();
    for part in text.split(',').filter(|p| !p.trim().is_empty()) {
        let topic = Topic::parse(part).map_err(bad)?;
        if !topics.contains(&topic) {
            topics.push(topic);
        }
    }
    if topics.is_empty() {
        return Err(bad(
            "no topics: ask for ?topics=functions,function:NAME,logs:NAME".to_owned(),
        ));
    }
    if topics.len() > MAX_TOPICS {
        return Err(bad(format!(
            "{} topics; a stream follows at most {MAX_TOPICS}",
            topics.len()
        )));
    }
    Ok(topics)
}

/// Where a stream is in one function's log.
struct Cursor {
    function: String,
    /// The last line sent; none before the first read.
    seq: Option<u64>,
    /// Whether the function was gone at the last look (said once).
    gone: bool,
}

/// One stream's state, between chunks.
struct Stream {
    supervisor: Supervisor,
    hub: Arc<Hub>,
    stop: watch::Receiver<bool>,
    _permit: OwnedSemaphorePermit,
    functions: bool,
    details: Vec<(String, Option<String>)>,
    logs: Vec<Cursor>,
    tail: usize,
    /// The last `functions` data sent.
    sent_functions: Option<Arc<str>>,
    last_snapshot: Option<Instant>,
    last_sent: Instant,
    /// More log lines are waiting: no pause before the next chunk.
    behind: bool,
    started: bool,
    ended: bool,
}

fn event(out: &mut String, name: &str, data: &str) {
    out.push_str("event: ");
    out.push_str(name);
    out.push_str("\ndata: ");
    out.push_str(data);
    out.push_str("\n\n");
}

fn log_json(function: &str, line: &LogLine) -> String {
    json!({
        "function": function,
        "seq": line.seq,
        "time": line.time,
        "pid": line.pid,
        "request_id": line.request_id,
        "stream": line.stream,
        "message": line.message,
    })
    .to_string()
}

impl Stream {
    /// The state's events due now, in SSE form (empty when there is nothing new).
    fn collect(&mut self) -> String {
        let mut out = String::new();
        let due = self
            .last_snapshot
            .is_none_or(|t| t.elapsed() >= SNAPSHOT_EVERY);
        if due {
            self.last_snapshot = Some(Instant::now());
            if self.functions {
                let data = self.hub.functions(&self.supervisor);
                if self.sent_functions.as_deref() != Some(&*data) {
                    event(&mut out, "functions", &data);
                    self.sent_functions = Some(data);
                }
            }
            for (name, sent) in &mut self.details {
                let data = match self.supervisor.detail(name) {
                    Ok(detail) => ("function", detail_json(&detail).to_string()),
                    Err(_) => ("gone", json!({ "function": name }).to_string()),
                };
                if sent.as_deref() != Some(&data.1) {
                    event(&mut out, data.0, &data.1);
                    *sent = Some(data.1);
                }
            }
        }
        self.behind = false;
        for cursor in &mut self.logs {
            if out.len() >= CHUNK_BUDGET {
                self.behind = true;
                break;
            }
            let lines = match cursor.seq {
                None => self.supervisor.logs(&cursor.function, self.tail, None),
                Some(seq) => self.supervisor.logs(&cursor.function, LOG_PAGE, Some(seq)),
            };
            let lines = match lines {
                Ok(lines) => {
                    cursor.gone = false;
                    lines
                }
                Err(InvokeError::NotFound { .. }) => {
                    if !cursor.gone {
                        cursor.gone = true;
                        event(
                            &mut out,
                            "gone",
                            &json!({"function": cursor.function}).to_string(),
                        );
                    }
                    // A function deployed again under this name has a new log, numbered from 1.
                    cursor.seq = Some(0);
                    continue;
                }
                Err(_) => continue,
            };
            if let (Some(seq), Some(first)) = (cursor.seq, lines.first())
                && first.seq > seq + 1
            {
                let missed = first.seq - seq - 1;
                event(
                    &mut out,
                    "skipped",
                    &json!({"function": cursor.function, "lines": missed,
                            "reason": "the stream fell behind the function's log ring"})
                    .to_string(),
                );
            }
            let read = lines.len();
            let mut taken = 0;
            for line in &lines {
                if out.len() >= CHUNK_BUDGET {
                    break;
                }
                event(&mut out, "log", &log_json(&cursor.function, line));
                cursor.seq = Some(line.seq);
                taken += 1;
            }
            if cursor.seq.is_none() {
                // Nothing logged yet (or tail=0): follow from the latest line on.
                let latest = self
                    .supervisor
                    .logs(&cursor.function, 1, None)
                    .ok()
                    .and_then(|l| l.last().map(|l| l.seq));
                cursor.seq = Some(latest.unwrap_or(0));
            }
            if taken < read || read == LOG_PAGE {
                self.behind = true;
            }
        }
        out
    }

    /// The next chunk, or none once the stream is over.
    async fn next(&mut self) -> Option<String> {
        if self.ended {
            return None;
        }
        if !self.started {
            self.started = true;
            self.last_sent = Instant::now();
            let mut out = String::from("retry: 2000\n\n");
            out.push_str(&self.collect());
            return Some(out);
        }
        loop {
            if !self.behind {
                let stopping = tokio::select! {
                    _ = self.stop.wait_for(|s| *s) => true,
                    () = tokio::time::sleep(TICK) => false,
                };
                if stopping {
                    self.ended = true;
                    let mut out = String::new();
                    event(
                        &mut out,
                        "bye",
                        &json!({"reason": "the server is shutting down"}).to_string(),
                    );
                    return Some(out);
                }
            } else if *self.stop.borrow() {
                self.behind = false;
                continue;
            }
            let out = self.collect();
            if !out.is_empty() {
                self.last_sent = Instant::now();
                return Some(out);
            }
            if self.last_sent.elapsed() >= HEARTBEAT {
                self.last_sent = Instant::now();
                return Some(": keep-alive\n\n".to_owned());
            }
        }
    }
}

/// `GET /stream`: server-sent events on the topics asked for.
pub(crate) async fn stream(
    query: web::Query<StreamQuery>,
    state: web::Data<AppState>,
    hub: web::Data<Hub>,
) -> HttpResponse {
    let topics = match topics_of(&query) {
        Ok(topics) => topics,
        Err(response) => return response,
    };
    let supervisor = state.supervisor.clone();
    // A function that is not deployed is a 404 now, not a silent stream.
    for topic in &topics {
        if let Topic::Function(name) | Topic::Logs(name) = topic
            && !supervisor.contains(name)
        {
            return invoke_error_response(&InvokeError::NotFound {
                function: name.clone(),
            });
        }
    }
    let Ok(permit) = hub.permits.clone().try_acquire_owned() else {
        let mut response = error_response(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("{MAX_STREAMS} streams are open, the most at once; try again later"),
            Map::new(),
        );
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
        return response;
    };
    let hub = hub.into_inner();
    let stream = Stream {
        supervisor,
        stop: hub.lifecycle.stopping(),
        hub,
        _permit: permit,
        functions: topics.contains(&Topic::Functions),
        details: topics
            .iter()
            .filter_map(|t| match t {
                Topic::Function(name) => Some((name.clone(), None)),
                _ => None,
            })
            .collect(),
        logs: topics
            .iter()
            .filter_map(|t| match t {
                Topic::Logs(name) => Some(Cursor {
                    function: name.clone(),
                    seq: None,
                    gone: false,
                }),
                _ => None,
            })
            .collect(),
        tail: query.tail.unwrap_or(100).min(10_000),
        sent_functions: None,
        last_snapshot: None,
        last_sent: Instant::now(),
        behind: false,
        started: false,
        ended: false,
    };
    let body = futures::stream::unfold(stream, |mut stream| async move {
        let chunk = stream.next().await?;
        Some((
            Ok::<_, std::convert::Infallible>(web::Bytes::from(chunk)),
            stream,
        ))
    });
    HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .insert_header(("x-accel-buffering", "no"))
        .streaming(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_parse_or_say_what_is_wrong() {
        assert_eq!(Topic::parse("functions"), Ok(Topic::Functions));
        assert_eq!(
            Topic::parse(" logs:echo "),
            Ok(Topic::Logs("echo".to_owned()))
        );
        assert_eq!(
            Topic::parse("function:a-b_c"),
            Ok(Topic::Function("a-b_c".to_owned()))
        );
        for bad in [
            "logs",
            "logs:",
            "logs:a.b",
            "function:../x",
            "events",
            "x:y",
        ] {
            assert!(Topic::parse(bad).is_err(), "{bad}");
        }
        let query = |t: &str| StreamQuery {
            topics: Some(t.to_owned()),
            tail: None,
        };
        assert!(topics_of(&query("")).is_err());
        assert!(topics_of(&query(",,")).is_err());
        assert_eq!(
            topics_of(&query("functions,functions"))
                .map(|t| t.len())
                .ok(),
            Some(1)
        );
        let many: Vec<String> = (0..=MAX_TOPICS).map(|i| format!("logs:f{i}")).collect();
        assert!(topics_of(&query(&many.join(","))).is_err());
    }
}
