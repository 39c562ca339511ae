//! Mode cgi: one process per request, run as a CGI/1.1 script (RFC 3875).
//!
//! The request goes in as meta-variables ([`meta_variables`]: `REQUEST_METHOD`, `PATH_INFO`,
//! `QUERY_STRING`, `CONTENT_TYPE`, `CONTENT_LENGTH`, `SCRIPT_NAME`, `SERVER_*`,
//! `GATEWAY_INTERFACE`, `REMOTE_ADDR`, an `HTTP_*` variable per header) added to the
//! function's clean environment, and the raw body on stdin. The process's stdout is a CGI
//! response: header lines (`Status: 201 Created`, `Content-Type`, `Location`, any other),
//! a blank line, the body. [`parse_head`] reads the header block (at most [`CGI_HEAD_MAX`]
//! bytes); the body is relayed as it is written, through a channel of [`CGI_CHUNKS`] chunks,
//! so a slow client holds the script back instead of shs buffering.
//!
//! The process is started, limited and killed as in mode exec ([`ExecRunner::start`], one
//! permit of `instances` per process, the `queue`; [`timed_out`]): the whole run, the body
//! included, is bounded by the function's `timeout`, and its process group is SIGKILLed when
//! the client goes away ([`CgiBody`] dropped) or the header block is malformed.

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use nix::sys::signal::Signal;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::ChildStdout;
use tokio::sync::mpsc;

use crate::Host;
use crate::error::InvokeError;
use crate::exec::{ExecRunner, Started, timed_out};
use crate::http::HttpRequest;
use crate::logs::LogRing;
use crate::pipes::{StderrTail, drain_stderr};
use crate::spec::FunctionSpec;
use crate::unix::{self, Spawned, describe_exit, signal_group};

/// The longest CGI header block a script may write (64 KiB); longer is a 502.
pub const CGI_HEAD_MAX: usize = 64 * 1024;
/// Chunks of a CGI body that may wait between the script and the client.
pub const CGI_CHUNKS: usize = 4;
/// The most read from the script's stdout at once: the largest chunk.
const READ_CHUNK: usize = 16 * 1024;

/// A CGI response whose header block has been read; the body follows as the script writes it.
#[derive(Debug)]
pub struct CgiResponse {
    /// The status: `Status`, else 302 with a `Location`, else 200.
    pub status: u16,
    /// The other header lines in the order written (names lower-case, values trimmed).
    pub headers: Vec<(String, Vec<u8>)>,
    /// The body.
    pub body: CgiBody,
}

/// The body of a CGI response, chunk by chunk as the script writes it. Dropped before its
/// end (the client went away), the script's process group is killed.
pub struct CgiBody {
    rx: mpsc::Receiver<Relay>,
}

impl std::fmt::Debug for CgiBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CgiBody").finish_non_exhaustive()
    }
}

impl CgiResponse {
    /// Reads the whole body (at most `limit` bytes) of function `function`'s response, for
    /// a caller that does not stream it (an event, an asynchronous invocation). A status of
    /// 400 or more is an error ([`InvokeError::Refused`]), as is more than `limit` bytes.
    pub async fn read_to_end(
        mut self,
        function: &str,
        limit: usize,
    ) -> Result<Vec<u8>, InvokeError> {
        let mut out = Vec::new();
        while let Some(chunk) = self.body.next().await {
            let chunk = chunk?;
            if out.len() + chunk.len() > limit {
                return Err(InvokeError::Protocol {
                    function: function.to_owned(),
                    detail: format!(
                        "its CGI body is over {limit} bytes (the limit is --max-line when it is not streamed)"
                    ),
                });
            }
            out.extend_from_slice(&chunk);
        }
        if self.status >= 400 {
            return Err(InvokeError::Refused {
                function: function.to_owned(),
                status: self.status,
            });
        }
        Ok(out)
    }
}

impl CgiBody {
    /// The next chunk; `None` once the script has exited with status 0; an error when it
    /// failed, ran past its timeout, or was killed.
    pub async fn next(&mut self) -> Option<Result<Bytes, InvokeError>> {
        loop {
            return match self.rx.recv().await? {
                Relay::Chunk(bytes) => Some(Ok(bytes)),
                Relay::Failed(error) => Some(Err(error)),
                Relay::Head(..) => continue,
            };
        }
    }
}

/// What the relay task sends the caller: the head once, then chunks; a failure ends it.
enum Relay {
    Head(u16, Vec<(String, Vec<u8>)>),
    Chunk(Bytes),
    Failed(InvokeError),
}

/// A parsed CGI header block.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Head {
    pub(crate) status: u16,
    pub(crate) headers: Vec<(String, Vec<u8>)>,
    /// The bytes the block took, its blank line included.
    pub(crate) len: usize,
}

/// What a script is told to write, in the messages about a response without a header block.
const HEAD_HINT: &str = "a CGI response begins with header lines such as \"Content-Type: text/plain\", then a blank line";

/// Reads a CGI header block at the start of `buf`: `Ok(Some(head))` once its blank line is in,
/// `Ok(None)` while it may still come, `Err` with what is wrong (a 502).
///
/// Lines end with LF or CRLF. A line is `name: value` (the name an HTTP token, the value
/// without control characters but tab); `Status` is three digits from 100 to 599 and an
/// optional reason; at least one of `Content-Type`, `Location` and `Status` is required.
pub(crate) fn parse_head(buf: &[u8]) -> Result<Option<Head>, String> {
    let mut status: Option<u16> = None;
    let mut headers: Vec<(String, Vec<u8>)> = Vec::new();
    let mut pos = 0;
    let mut lines = 0;
    while let Some(end) = buf[pos..].iter().position(|&b| b == b'\n') {
        let raw = &buf[pos..pos + end];
        let line = raw.strip_suffix(b"\r").unwrap_or(raw);
        pos += end + 1;
        if line.is_empty() {
            if lines == 0 {
                return Err(format!(
                    "its output begins with a blank line, not a CGI header block ({HEAD_HINT})"
                ));
            }
            let has_location = headers.iter().any(|(n, _)| n == "location");
            if status.is_none()
                && !has_location
                && !headers.iter().any(|(n, _)| n == "content-type")
            {
                return Err(
                    "its CGI header block has none of Content-Type, Location and Status".into(),
                );
            }
            let status = status.unwrap_or(if has_location { 302 } else { 200 });
            return Ok(Some(Head {
                status,
                headers,
                len: pos,
            }));
        }
        let Some((name, value)) = header_line(line) else {
            return Err(not_a_header(line, lines));
        };
        if value.iter().any(|&b| (b < 0x20 && b != b'\t') || b == 0x7f) {
            return Err(format!(
                "the value of CGI header {name:?} has a control character"
            ));
        }
        if name == "status" {
            if status.is_some() {
                return Err("its CGI header block has two Status lines".into());
            }
            status = Some(status_of(value).ok_or_else(|| {
                format!(
                    "\"Status: {}\" is not a status: it must be three digits from 100 to 599 and a reason, e.g. \"Status: 404 Not Found\"",
                    cut(value)
                )
            })?);
        } else {
            headers.push((name, value.to_vec()));
        }
        lines += 1;
    }
    // The line being written so far: refused as soon as it cannot be a header line.
    let partial = &buf[pos..];
    let name_part = partial
        .iter()
        .position(|&b| b == b':')
        .map_or(partial, |colon| &partial[..colon]);
    let bad_name = !name_part.iter().all(|&b| is_tchar(b))
        || (name_part.len() < partial.len() && name_part.is_empty());
    if bad_name {
        return Err(not_a_header(partial, lines));
    }
    Ok(None)
}

/// `name: value` with the name lower-cased and the value trimmed; `None` if it is not one.
fn header_line(line: &[u8]) -> Option<(String, &[u8])> {
    let colon = line.iter().position(|&b| b == b':')?;
    let (name, value) = (&line[..colon], &line[colon + 1..]);
    if name.is_empty() || !name.iter().all(|&b| is_tchar(b)) {
        return None;
    }
    let start = value
        .iter()
        .position(|&b| b != b' ' && b != b'\t')
        .unwrap_or(value.len());
    let end = value
        .iter()
        .rposition(|&b| b != b' ' && b != b'\t')
        .map_or(start, |e| e + 1);
    let name = String::from_utf8_lossy(name).to_ascii_lowercase();
    Some((name, &value[start..end.max(start)]))
}

/// An HTTP token character (RFC 9110, `tchar`).
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// `201 Created` or `201`: the code, if it is three digits from 100 to 599.
fn status_of(value: &[u8]) -> Option<u16> {
    let digits = value.get(..3)?;
    if !digits.iter().all(u8::is_ascii_digit) || value.get(3).is_some_and(|&b| b != b' ') {
        return None;
    }
    let code = std::str::from_utf8(digits).ok()?.parse::<u16>().ok()?;
    (100..=599).contains(&code).then_some(code)
}

fn not_a_header(line: &[u8], lines_before: usize) -> String {
    if lines_before == 0 {
        format!(
            "its output has no CGI header block ({HEAD_HINT}); it begins with {:?}",
            cut(line)
        )
    } else {
        format!(
            "line {} of its CGI header block is not a header (name: value): {:?}",
            lines_before + 1,
            cut(line)
        )
    }
}

/// The first 60 characters of `bytes`, for a message.
fn cut(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).chars().take(60).collect()
}

/// The meta-variables of `request` to function `function` (RFC 3875, section 4.1), as added to
/// the script's environment. `PATH_INFO` is the tail percent-decoded (kept encoded if it would
/// decode to a NUL byte); a header whose name has an underscore gets no variable (it could pass
/// for another: `X_Forwarded_For` and `X-Forwarded-For` are both `HTTP_X_FORWARDED_FOR`), nor
/// does `Proxy` (`HTTP_PROXY` is a proxy setting for many programs: "httpoxy"), nor
/// `Content-Type` and `Content-Length`, which have their own.
pub(crate) fn meta_variables(request: &HttpRequest, function: &str) -> Vec<(String, OsString)> {
    let mut vars: Vec<(String, OsString)> = Vec::with_capacity(16 + request.headers.len());
    let mut set = |name: &str, value: OsString| vars.push((name.to_owned(), value));
    set("GATEWAY_INTERFACE", "CGI/1.1".into());
    set(
        "SERVER_SOFTWARE",
        concat!("shs/", env!("CARGO_PKG_VERSION")).into(),
    );
    let protocol = if request.version.is_empty() {
        "HTTP/1.1"
    } else {
        request.version
    };
    set("SERVER_PROTOCOL", protocol.into());
    let (host_name, host_port) = request.header("host").map(split_host).unwrap_or_default();
    let server_name = match (host_name, request.local_addr) {
        (name, _) if !name.is_empty() => name.to_owned(),
        (_, Some(addr)) => addr.ip().to_string(),
        _ => "localhost".to_owned(),
    };
    let server_port = match (request.local_addr, host_port) {
        (Some(addr), _) => addr.port().to_string(),
        (None, Some(port)) => port.to_owned(),
        (None, None) => "80".to_owned(),
    };
    set("SERVER_NAME", server_name.into());
    set("SERVER_PORT", server_port.into());
    set("REQUEST_METHOD", request.method.as_str().into());
    set("SCRIPT_NAME", format!("/run/{function}").into());
    let decoded: Vec<u8> = percent_encoding::percent_decode_str(&request.path).collect();
    let path_info = if decoded.contains(&0) {
        request.path.clone().into_bytes()
    } else {
        decoded
    };
    set("PATH_INFO", OsString::from_vec(path_info));
    set("QUERY_STRING", request.query.as_str().into());
    let uri = if request.query.is_empty() {
        format!("/run/{function}{}", tail_of(&request.path))
    } else {
        format!(
            "/run/{function}{}?{}",
            tail_of(&request.path),
            request.query
        )
    };
    set("REQUEST_URI", uri.into());
    if let Some(addr) = &request.remote_addr {
        set("REMOTE_ADDR", addr.as_str().into());
    }
    if let Some(content_type) = request.header("content-type") {
        set("CONTENT_TYPE", content_type.into());
    }
    if !request.body.is_empty() {
        set("CONTENT_LENGTH", request.body.len().to_string().into());
    }
    for (name, value) in &request.headers {
        if name.contains('_')
            || ["content-type", "content-length", "proxy"].contains(&name.as_str())
        {
            continue;
        }
        let var: String = format!("HTTP_{}", name.to_ascii_uppercase().replace('-', "_"));
        set(&var, value.as_str().into());
    }
    // The environment cannot hold a NUL byte; no request value can carry one, but be sure.
    vars.retain(|(_, value)| !value.as_encoded_bytes().contains(&0));
    vars
}

/// The tail as it goes after `/run/NAME` in a URI: empty for `/` (no tail).
fn tail_of(path: &str) -> &str {
    if path == "/" { "" } else { path }
}

/// A `Host` header's name and port: `example.com:8080`, `[::1]:8080`, `example.com`.
fn split_host(host: &str) -> (&str, Option<&str>) {
    let host = host.trim();
    let (name, port) = match host.rfind(':') {
        Some(colon) if !host[colon..].contains(']') => (&host[..colon], Some(&host[colon + 1..])),
        _ => (host, None),
    };
    let port = port.filter(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
    (name, port)
}

impl ExecRunner {
    /// Runs the CGI script once on `request`: resolves when its header block has been read (or
    /// it failed before), with the body still coming.
    pub(crate) async fn run_cgi(
        &self,
        request: &HttpRequest,
        request_id: &str,
        trace: Option<&str>,
    ) -> Result<CgiResponse, InvokeError> {
        let mut env = meta_variables(request, &self.spec.name);
        env.push(("SHS_REQUEST_ID".into(), request_id.into()));
        if let Some(trace) = trace {
            env.push(("TRACEPARENT".into(), trace.into()));
        }
        let started = self.start(env).await?;
        let deadline = tokio::time::Instant::now() + self.spec.timeout;
        let (tx, mut rx) = mpsc::channel(CGI_CHUNKS);
        let run = Run {
            spec: self.spec.clone(),
            host: self.host.clone(),
            logs: self.logs.clone(),
            request_id: Arc::from(request_id),
            body: request.body.clone(),
            deadline,
        };
        // Its own task: the body goes on after this returns, and is cut when the client goes.
        tokio::spawn(run.drive(started, tx));
        match rx.recv().await {
            Some(Relay::Head(status, headers)) => Ok(CgiResponse {
                status,
                headers,
                body: CgiBody { rx },
            }),
            Some(Relay::Failed(error)) => Err(error),
            Some(Relay::Chunk(_)) | None => Err(InvokeError::Crashed {
                function: self.spec.name.clone(),
                detail: "lost its CGI response".into(),
                stderr: Vec::new(),
            }),
        }
    }
}

/// One run of a CGI script, in its own task.
struct Run {
    spec: Arc<FunctionSpec>,
    host: Arc<Host>,
    logs: Arc<LogRing>,
    request_id: Arc<str>,
    body: Bytes,
    deadline: tokio::time::Instant,
}

/// How relaying stdout ended.
enum Relayed {
    /// At the end of stdout, the head sent.
    Done,
    /// At the end of stdout before a complete header block.
    NoHead(String),
    /// A malformed header block; the group was killed.
    Bad(String),
    /// The caller went away; the group was killed.
    Gone,
}

impl Run {
    /// Writes the body, relays stdout, drains stderr and reaps the process, within the
    /// deadline; then reports how it ended unless it all went well.
    async fn drive(self, started: Started, tx: mpsc::Sender<Relay>) {
        let Started {
            spawned:
                Spawned {
                    mut child,
                    pid,
                    mut stdin,
                    stdout,
                    stderr,
                },
            mut running,
            permit,
        } = started;
        let spec = &self.spec;
        let body = self.body.clone();
        let write_input = async move {
            // A script that does not read its input may close stdin early: not an error.
            let _ = stdin.write_all(&body).await;
            drop(stdin);
        };
        let tail = StderrTail::default();
        let request_id = self.request_id.clone();
        let read_stderr = drain_stderr(
            stderr,
            self.host.config.stderr_line,
            &spec.name,
            pid,
            tail.clone(),
            &self.logs,
            || Some(request_id.clone()),
        );
        let all = async {
            tokio::join!(
                write_input,
                relay(stdout, &tx, pid),
                read_stderr,
                unix::reap(pid, &mut child)
            )
        };
        let failure = match tokio::time::timeout_at(self.deadline, all).await {
            Ok((_, relayed, (), status)) => {
                running.finished = true;
                let name = || spec.name.clone();
                let failed = |status| InvokeError::ExecFailed {
                    function: name(),
                    status: describe_exit(&status),
                    stderr: tail.lines(),
                };
                match (relayed, status) {
                    (Relayed::Gone, _) => {
                        tracing::debug!(function = %spec.name, pid, "the client went away; the CGI script was killed");
                        None
                    }
                    (Relayed::Bad(detail), _) => Some(InvokeError::Protocol {
                        function: name(),
                        detail,
                    }),
                    (Relayed::NoHead(detail), Ok(s)) if s.success() => {
                        Some(InvokeError::Protocol {
                            function: name(),
                            detail,
                        })
                    }
                    (Relayed::Done, Ok(s)) if s.success() => None,
                    (Relayed::NoHead(_) | Relayed::Done, status) => Some(failed(status)),
                }
            }
            Err(_) => Some(
                timed_out(
                    spec,
                    self.host.config.kill_grace,
                    pid,
                    &mut child,
                    &mut running,
                )
                .await,
            ),
        };
        drop(running);
        drop(permit);
        if let Some(error) = failure {
            let _ = tx.send(Relay::Failed(error)).await;
        }
    }
}

/// Reads the header block, then relays the body chunk by chunk as it comes, until stdout
/// closes or the caller goes away.
async fn relay(mut stdout: ChildStdout, tx: &mpsc::Sender<Relay>, pid: u32) -> Relayed {
    let gone = || {
        signal_group(pid, Signal::SIGKILL);
        Relayed::Gone
    };
    let mut buf = BytesMut::with_capacity(READ_CHUNK);
    let head = loop {
        buf.reserve(READ_CHUNK);
        let read = tokio::select! {
            read = stdout.read_buf(&mut buf) => read,
            () = tx.closed() => return gone(),
        };
        if matches!(read, Ok(0) | Err(_)) {
            let detail = match parse_head(&buf) {
                Err(detail) => detail,
                Ok(_) if buf.is_empty() => format!("it wrote nothing ({HEAD_HINT})"),
                Ok(_) => format!(
                    "its output ended before the blank line that ends the CGI header block ({HEAD_HINT})"
                ),
            };
            return Relayed::NoHead(detail);
        }
        let refused = |detail| {
            signal_group(pid, Signal::SIGKILL);
            Relayed::Bad(detail)
        };
        // However much one read brought, no more than the limit is taken as the head.
        let limited = &buf[..buf.len().min(CGI_HEAD_MAX)];
        match parse_head(limited) {
            Ok(Some(head)) => break head,
            Ok(None) if buf.len() >= CGI_HEAD_MAX => {
                return refused(format!(
                    "its CGI header block is over {} KiB",
                    CGI_HEAD_MAX / 1024
                ));
            }
            Ok(None) => {}
            Err(detail) => return refused(detail),
        }
    };
    let Head {
        status,
        headers,
        len,
    } = head;
    if tx.send(Relay::Head(status, headers)).await.is_err() {
        return gone();
    }
    let _ = buf.split_to(len);
    loop {
        if !buf.is_empty() && tx.send(Relay::Chunk(buf.split().freeze())).await.is_err() {
            return gone();
        }
        buf.reserve(READ_CHUNK);
        let read = tokio::select! {
            read = stdout.read_buf(&mut buf) => read,
            () = tx.closed() => return gone(),
        };
        if matches!(read, Ok(0) | Err(_)) {
            return Relayed::Done;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;

    fn head(text: &str) -> Result<Option<Head>, String> {
        parse_head(text.as_bytes())
    }

    #[test]
    fn a_header_block_gives_status_and_headers() {
        let done = head("Status: 201 Created\r\nContent-Type: text/plain\r\nSet-Cookie: a=1\r\nset-cookie:  b=2 \r\n\r\nbody")
            .expect("valid")
            .expect("complete");
        assert_eq!(done.status, 201);
        assert_eq!(
            done.headers,
            [
                ("content-type".to_owned(), b"text/plain".to_vec()),
                ("set-cookie".to_owned(), b"a=1".to_vec()),
                ("set-cookie".to_owned(), b"b=2".to_vec()),
            ]
        );
        assert_eq!(
            &"Status: 201 Created\r\nContent-Type: text/plain\r\nSet-Cookie: a=1\r\nset-cookie:  b=2 \r\n\r\nbody"
                [done.len..],
            "body"
        );
        let plain = head("Content-Type: text/html\n\n")
            .expect("valid")
            .expect("complete");
        assert_eq!(plain.status, 200);
        let moved = head("Location: /elsewhere\n\n")
            .expect("valid")
            .expect("complete");
        assert_eq!(moved.status, 302);
        assert_eq!(
            head("Status: 204\n\n")
                .expect("valid")
                .expect("complete")
                .status,
            204
        );
    }

    #[test]
    fn an_incomplete_block_waits_for_more() {
        assert_eq!(head(""), Ok(None));
        assert_eq!(head("Content-Ty"), Ok(None));
        assert_eq!(head("Content-Type: text/pl"), Ok(None));
        assert_eq!(head("Content-Type: text/plain\r\n"), Ok(None));
    }

    #[test]
    fn what_is_not_a_header_block_says_so() {
        for output in [
            "hello world\n",
            "{\"a\": 1}",
            "<html>",
            "\n\nbody",
            ": x\n\n",
        ] {
            let e = head(output).expect_err(output);
            assert!(e.contains("header block"), "{output:?}: {e}");
        }
        assert!(
            head("Content-Type: text/plain\nno colon here\n\n")
                .expect_err("a bad line")
                .starts_with("line 2 of its CGI header block is not a header")
        );
        assert!(
            head("X-Thing: 1\n\n")
                .expect_err("no CGI field")
                .contains("none of")
        );
        for status in ["99 Low", "600 High", "20 Short", "2000", "abc", ""] {
            let e = head(&format!("Status: {status}\n\n")).expect_err(status);
            assert!(e.contains("is not a status"), "{e}");
        }
        assert!(
            head("Status: 200\nStatus: 201\n\n")
                .expect_err("two")
                .contains("two Status")
        );
        assert!(
            head("Content-Type: a\x01b\n\n")
                .expect_err("control")
                .contains("control character")
        );
    }

    fn request() -> HttpRequest {
        let mut r = HttpRequest {
            method: "POST".into(),
            path: "/a%20b/c".into(),
            query: "x=1&y=two".into(),
            body: Bytes::from_static(b"a=1"),
            remote_addr: Some("127.0.0.1".into()),
            local_addr: Some("127.0.0.1:8080".parse().expect("an address")),
            version: "HTTP/1.1",
            ..HttpRequest::default()
        };
        r.add_header("Host", "example.com:9999");
        r.add_header("Content-Type", "application/x-www-form-urlencoded");
        r.add_header("Content-Length", "3");
        r.add_header("X-Thing", "v1");
        r.add_header("X-Thing", "v2");
        r.add_header("X_Thing", "forged");
        r.add_header("Proxy", "http://evil");
        r
    }

    #[test]
    fn the_meta_variables_follow_rfc_3875() {
        let vars: BTreeMap<String, String> = meta_variables(&request(), "fn")
            .into_iter()
            .map(|(k, v)| (k, v.to_string_lossy().into_owned()))
            .collect();
        let expect = [
            ("GATEWAY_INTERFACE", "CGI/1.1"),
            ("REQUEST_METHOD", "POST"),
            ("PATH_INFO", "/a b/c"),
            ("QUERY_STRING", "x=1&y=two"),
            ("SCRIPT_NAME", "/run/fn"),
            ("REQUEST_URI", "/run/fn/a%20b/c?x=1&y=two"),
            ("SERVER_NAME", "example.com"),
            ("SERVER_PORT", "8080"),
            ("SERVER_PROTOCOL", "HTTP/1.1"),
            ("REMOTE_ADDR", "127.0.0.1"),
            ("CONTENT_TYPE", "application/x-www-form-urlencoded"),
            ("CONTENT_LENGTH", "3"),
            ("HTTP_X_THING", "v1, v2"),
            ("HTTP_HOST", "example.com:9999"),
        ];
        for (name, value) in expect {
            assert_eq!(vars.get(name).map(String::as_str), Some(value), "{name}");
        }
        for absent in ["HTTP_PROXY", "HTTP_CONTENT_TYPE", "HTTP_CONTENT_LENGTH"] {
            assert!(!vars.contains_key(absent), "{absent}");
        }
        assert_eq!(
            vars.keys().filter(|k| k.as_str() == "HTTP_X_THING").count(),
            1,
            "X_Thing does not pass for X-Thing"
        );
    }

    #[test]
    fn a_tail_that_decodes_to_nul_stays_encoded_and_hosts_split() {
        let mut r = request();
        r.path = "/a%00b".into();
        let vars = meta_variables(&r, "fn");
        let path = vars
            .iter()
            .find(|(k, _)| k == "PATH_INFO")
            .expect("PATH_INFO");
        assert_eq!(path.1, "/a%00b");
        assert_eq!(split_host("[::1]:80"), ("[::1]", Some("80")));
        assert_eq!(split_host("[::1]"), ("[::1]", None));
        assert_eq!(split_host("h"), ("h", None));
        assert_eq!(split_host("h:x"), ("h", None));
    }

    proptest! {
        #[test]
        fn parse_head_never_panics_and_accepts_only_clean_lines(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            if let Ok(Some(head)) = parse_head(&bytes) {
                prop_assert!(head.len <= bytes.len());
                prop_assert!((100..=599).contains(&head.status));
                for (name, value) in &head.headers {
                    prop_assert!(!name.is_empty() && name.bytes().all(is_tchar));
                    prop_assert!(value.iter().all(|&b| b >= 0x20 && b != 0x7f || b == b'\t'));
                }
            }
        }

        #[test]
        fn written_headers_read_back(
            names in proptest::collection::vec("[A-Za-z][A-Za-z0-9-]{0,20}", 1..8),
            values in proptest::collection::vec("[ -~]{0,40}", 8),
        ) {
            let mut text = String::from("Content-Type: text/plain\r\n");
            for (name, value) in names.iter().zip(&values) {
                if name.eq_ignore_ascii_case("status") { continue; }
                text.push_str(&format!("{name}: {value}\r\n"));
            }
            text.push_str("\r\nbody");
            let head = parse_head(text.as_bytes()).expect("valid").expect("complete");
            prop_assert_eq!(&text[head.len..], "body");
            prop_assert_eq!(head.status, 200);
        }
    }
}
