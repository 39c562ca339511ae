//! The commands that talk to a running server over its HTTP API: `invoke`, `invocations`,
//! `publish`, `list`, `subscriptions` and `logs`.
//!
//! Each one prints what the server answered and returns `Ok`, or returns an error worded for
//! the person at the terminal: what went wrong and what to do about it (the server is not
//! running, it wants an API key, no such function, the input is not JSON). `main` prints it
//! and exits with status 1.

use std::io::{BufRead, BufReader, IsTerminal, Read, Write};
use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};
use serde_json::{Map, Value};

use crate::cli::{InvocationsArgs, InvokeArgs, ListArgs, LogsArgs, PublishArgs, ServerArgs};

/// How often `shs logs -f` asks for new lines from a server without `/stream`.
const FOLLOW_EVERY: Duration = Duration::from_millis(500);

/// The most lines `shs logs -f` asks for at a time.
const FOLLOW_PAGE: usize = 1000;

/// The largest answer read, in bytes (well above the server's own limits).
const MAX_ANSWER: u64 = 1 << 30;

/// The longest line of a stream read, in bytes (a log line is at most 64 KiB, escaped).
const MAX_STREAM_LINE: u64 = 1 << 20;

/// A connection to the server: its base URL and the API key to send.
struct Client {
    base: String,
    api_key: Option<String>,
    agent: ureq::Agent,
}

/// An HTTP answer.
struct Reply {
    status: u16,
    content_type: String,
    /// `Retry-After`, as sent.
    retry_after: Option<String>,
    body: Vec<u8>,
}

impl Reply {
    fn ok(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The body as JSON.
    fn json(&self) -> anyhow::Result<Value> {
        serde_json::from_slice(&self.body).map_err(|e| {
            anyhow!(
                "the server's answer is not JSON ({e}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }
}

/// What a 404 most likely means for the command that got it, and what to do.
#[derive(Clone, Copy)]
enum Hint {
    /// The function named on the command line.
    Function,
    /// Nothing special.
    None,
}

impl Client {
    fn new(server: &ServerArgs) -> anyhow::Result<Client> {
        let mut base = server.url.trim().trim_end_matches('/').to_owned();
        if !base.contains("://") {
            // `localhost:8080` means `http://localhost:8080`.
            base.insert_str(0, "http://");
        }
        if !base.starts_with("http://") {
            if base.starts_with("https://") {
                bail!(
                    "{base}: this client speaks plain HTTP only; give an http:// URL with --url \
                     or SHS_URL"
                );
            }
            bail!(
                "{base:?} is not an http:// URL: set --url or SHS_URL, e.g. http://127.0.0.1:8080"
            );
        }
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(0)
            .timeout_connect(Some(Duration::from_secs(10)))
            .user_agent(format!("shs/{}", env!("CARGO_PKG_VERSION")))
            .build();
        // The server takes several keys separated by commas in SHS_API_KEY; send the first.
        let api_key = server
            .api_key
            .as_deref()
            .and_then(|keys| keys.split(',').map(str::trim).find(|k| !k.is_empty()))
            .map(str::to_owned);
        Ok(Client {
            base,
            api_key,
            agent: config.into(),
        })
    }

    /// `GET path`.
    fn get(&self, path: &str) -> anyhow::Result<Reply> {
        let mut request = self.agent.get(format!("{}{path}", self.base));
        if let Some(key) = &self.api_key {
            request = request.header("authorization", format!("Bearer {key}"));
        }
        self.reply(request.call())
    }

    /// `POST path` with a JSON body and extra headers.
    fn post(&self, path: &str, body: &str, headers: &[(&str, &str)]) -> anyhow::Result<Reply> {
        let mut request = self
            .agent
            .post(format!("{}{path}", self.base))
            .header("content-type", "application/json");
        if let Some(key) = &self.api_key {
            request = request.header("authorization", format!("Bearer {key}"));
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        self.reply(request.send(body))
    }

    /// `GET path` on a stream (`/stream`): its body to read as it comes, or the whole answer
    /// when it is not a success.
    fn open_stream(&self, path: &str) -> anyhow::Result<Result<impl BufRead + use<>, Reply>> {
        let mut request = self
            .agent
            .get(format!("{}{path}", self.base))
            .header("accept", "text/event-stream");
        if let Some(key) = &self.api_key {
            request = request.header("authorization", format!("Bearer {key}"));
        }
        let response = request.call().map_err(|e| self.transport_error(e))?;
        if response.status().is_success() {
            return Ok(Ok(BufReader::new(response.into_body().into_reader())));
        }
        self.reply(Ok(response)).map(Err)
    }

    fn reply(
        &self,
        response: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    ) -> anyhow::Result<Reply> {
        let mut response = response.map_err(|e| self.transport_error(e))?;
        let status = response.status().as_u16();
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let content_type = header("content-type").unwrap_or_default();
        let retry_after = header("retry-after");
        let body = response
            .body_mut()
            .with_config()
            .limit(MAX_ANSWER)
            .read_to_vec()
            .map_err(|e| self.transport_error(e))?;
        Ok(Reply {
            status,
            content_type,
            retry_after,
            body,
        })
    }

    /// A failure to talk to the server at all.
    fn transport_error(&self, e: ureq::Error) -> anyhow::Error {
        match e {
            ureq::Error::Io(_)
            | ureq::Error::ConnectionFailed
            | ureq::Error::HostNotFound
            | ureq::Error::Timeout(_) => anyhow!(
                "cannot reach shs at {}: is `shs serve` running? (set --url or SHS_URL)\n  \
                 ({e})",
                self.base
            ),
            ureq::Error::BadUri(_) | ureq::Error::Http(_) => {
                anyhow!(
                    "{:?} is not a usable URL ({e}): set --url or SHS_URL",
                    self.base
                )
            }
            e => anyhow!("talking to shs at {} failed: {e}", self.base),
        }
    }

    /// The error for an answer that is not a success: the server's message and details.
    fn error(&self, reply: &Reply, hint: Hint) -> anyhow::Error {
        if reply.status == 401 {
            return match self.api_key {
                None => anyhow!("the server wants an API key: set --api-key or SHS_API_KEY"),
                Some(_) => {
                    anyhow!("the server refused the API key: check --api-key or SHS_API_KEY")
                }
            };
        }
        let Ok(body) = serde_json::from_slice::<Value>(&reply.body) else {
            let text = String::from_utf8_lossy(&reply.body);
            return anyhow!("the server answered {}: {}", reply.status, text.trim());
        };
        let Some(error) = body.get("error").and_then(Value::as_object) else {
            return anyhow!("the server answered {}: {body}", reply.status);
        };
        let mut text = error.get("message").and_then(Value::as_str).map_or_else(
            || format!("the server answered {}", reply.status),
            str::to_owned,
        );
        if reply.status == 404 {
            if matches!(hint, Hint::Function) && error.contains_key("function") {
                text.push_str(" (`shs list` shows the functions deployed)");
            } else if text.starts_with("no route for") {
                text.push_str(" (is the server an older shs than this command?)");
            }
        }
        text.push_str(&details(error));
        if let Some(after) = &reply.retry_after {
            text.push_str(&format!("\n  retry after: {after} s"));
        }
        anyhow!(text)
    }
}

/// The members of an error body beyond its message, one per line: `code`, `data`, the others,
/// then the function's last `stderr` lines.
fn details(error: &Map<String, Value>) -> String {
    let mut text = String::new();
    let mut line = |key: &str, value: &Value| {
        let value = match value {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        text.push_str(&format!("\n  {key}: {value}"));
    };
    for key in ["code", "data"] {
        if let Some(value) = error.get(key) {
            line(key, value);
        }
    }
    for (key, value) in error {
        if !matches!(
            key.as_str(),
            "message" | "function" | "code" | "data" | "stderr"
        ) {
            line(key, value);
        }
    }
    if let Some(lines) = error.get("stderr").and_then(Value::as_array)
        && !lines.is_empty()
    {
        text.push_str("\n  stderr:");
        for l in lines {
            match l {
                Value::String(s) => text.push_str(&format!("\n    {s}")),
                other => text.push_str(&format!("\n    {other}")),
            }
        }
    }
    text
}

/// JSON from the command line: the text itself, `@FILE`, or `-` for stdin. Checked to be
/// JSON; returned as written (without surrounding white space).
fn read_json(arg: &str, what: &str) -> anyhow::Result<String> {
    let (text, from) = if arg == "-" {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .with_context(|| format!("cannot read the {what} from stdin"))?;
        (text, " (from stdin)".to_owned())
    } else if let Some(path) = arg.strip_prefix('@') {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the {what} from {path}"))?;
        (text, format!(" (from {path})"))
    } else {
        (arg.to_owned(), String::new())
    };
    let text = text.trim();
    if text.is_empty() {
        bail!("the {what}{from} is empty: give JSON, such as '{{}}'");
    }
    if let Err(e) = serde_json::from_str::<Value>(text) {
        bail!(
            "the {what}{from} is not valid JSON: {e}\n  (JSON strings need double quotes, and \
             the shell needs single quotes around it all: '{{\"name\": \"Ada\"}}')"
        );
    }
    Ok(text.to_owned())
}

fn check_name(name: &str) -> anyhow::Result<()> {
    shs_supervisor::validate_name(name).map_err(|e| anyhow!("{e}"))
}

/// Writes to stdout; a closed pipe (`| head`) is not an error worth reporting.
fn out(bytes: &[u8]) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(bytes).and_then(|()| stdout.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other.context("cannot write to stdout"),
    }
}

/// Prints a JSON answer: indented on a terminal, else as received (with a final newline).
fn print_json(reply: &Reply) -> anyhow::Result<()> {
    let is_binary = reply.content_type.starts_with("application/octet-stream");
    if std::io::stdout().is_terminal()
        && let Ok(value) = serde_json::from_slice::<Value>(&reply.body)
    {
        let mut text = serde_json::to_string_pretty(&value)?;
        text.push('\n');
        return out(text.as_bytes());
    }
    let mut body = reply.body.clone();
    if !is_binary && !body.ends_with(b"\n") {
        body.push(b'\n');
    }
    out(&body)
}

/// `shs invoke NAME [JSON | @FILE | -]`.
pub(crate) fn invoke(args: &InvokeArgs) -> anyhow::Result<()> {
    check_name(&args.name)?;
    let input = match &args.input {
        Some(arg) => read_json(arg, "input")?,
        None => "{}".to_owned(),
    };
    let client = Client::new(&args.server)?;
    let mut headers: Vec<(&str, &str)> = Vec::new();
    if args.asynchronous {
        headers.push(("prefer", "respond-async"));
    }
    if let Some(url) = &args.callback {
        headers.push(("x-callback-url", url));
    }
    let reply = client.post(&format!("/run/{}", args.name), &input, &headers)?;
    if !reply.ok() {
        return Err(client.error(&reply, Hint::Function));
    }
    if args.asynchronous && reply.status == 202 {
        let answer = reply.json()?;
        let id = answer["invocation_id"].as_str().unwrap_or("?");
        return out(format!(
            "invocation {id} accepted: it is stored and runs in the background \
             (`shs invocations {id}` shows how it went)\n"
        )
        .as_bytes());
    }
    print_json(&reply)
}

/// `shs invocations [ID]`.
pub(crate) fn invocations(args: &InvocationsArgs) -> anyhow::Result<()> {
    let client = Client::new(&args.server)?;
    if let Some(id) = &args.id {
        if id.is_empty() || !id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
            bail!("{id:?} is not an invocation id (ids look like 0193a1b2-...)");
        }
        let reply = client.get(&format!("/invocations/{id}"))?;
        if !reply.ok() {
            return Err(client.error(&reply, Hint::None));
        }
        return print_json(&reply);
    }
    let mut query = vec![format!("limit={}", args.limit.max(1))];
    for (key, value) in [("function", &args.function), ("state", &args.state)] {
        if let Some(value) = value {
            let encoded: String = value
                .bytes()
                .map(|b| match b {
                    b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => {
                        (b as char).to_string()
                    }
                    _ => format!("%{b:02X}"),
                })
                .collect();
            query.push(format!("{key}={encoded}"));
        }
    }
    let reply = client.get(&format!("/invocations?{}", query.join("&")))?;
    if !reply.ok() {
        return Err(client.error(&reply, Hint::None));
    }
    if args.json {
        return print_json(&reply);
    }
    let answer = reply.json()?;
    let list = answer["invocations"]
        .as_array()
        .cloned()
        .ok_or_else(|| anyhow!("the server's answer has no \"invocations\" list: {answer}"))?;
    if list.is_empty() {
        return out(b"no invocations\n");
    }
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|i| {
            vec![
                cell(&i["id"]),
                cell(&i["function"]),
                cell(&i["state"]),
                cell(&i["attempts"]),
                cell(&i["accepted_at"]),
                i["finished_at"]
                    .as_str()
                    .map_or_else(|| "-".to_owned(), str::to_owned),
            ]
        })
        .collect();
    out(table(
        &[
            "ID", "FUNCTION", "STATE", "ATTEMPTS", "ACCEPTED", "FINISHED",
        ],
        &rows,
    )
    .as_bytes())
}

/// `shs publish TYPE [JSON | @FILE | -] [--async]`.
pub(crate) fn publish(args: &PublishArgs) -> anyhow::Result<()> {
    let event_type = serde_json::to_string(&args.event_type)?;
    let body = match &args.payload {
        Some(arg) => format!(
            "{{\"type\":{event_type},\"payload\":{}}}",
            read_json(arg, "payload")?
        ),
        None => format!("{{\"type\":{event_type}}}"),
    };
    let client = Client::new(&args.server)?;
    let headers: &[(&str, &str)] = if args.asynchronous {
        &[("prefer", "respond-async")]
    } else {
        &[]
    };
    let reply = client.post("/events", &body, headers)?;
    if !reply.ok() {
        return Err(client.error(&reply, Hint::None));
    }
    let answer = reply.json()?;
    if args.json {
        print_json(&reply)?;
    }
    let id = answer["event_id"].as_str().unwrap_or("?");
    if reply.status == 202 {
        if !args.json {
            out(format!(
                "event {id} accepted: it is stored and will be delivered in the background \
                 (see `GET /events/{id}`)\n"
            )
            .as_bytes())?;
        }
        return Ok(());
    }
    let delivered = answer["delivered"].as_u64().unwrap_or(0);
    let errors = answer["errors"].as_array().cloned().unwrap_or_default();
    if !args.json {
        let text = match delivered {
            0 if errors.is_empty() => format!(
                "event {id} published: no function is subscribed to {} (`shs subscriptions` \
                 lists the subscriptions)\n",
                args.event_type
            ),
            1 => format!("event {id} published: delivered to 1 function\n"),
            n => format!("event {id} published: delivered to {n} functions\n"),
        };
        out(text.as_bytes())?;
    }
    if errors.is_empty() {
        return Ok(());
    }
    let mut text = match errors.len() {
        1 => "1 delivery failed:".to_owned(),
        n => format!("{n} deliveries failed:"),
    };
    for error in &errors {
        let message = error["message"]
            .as_str()
            .map_or_else(|| error.to_string(), str::to_owned);
        text.push_str(&format!("\n  {message}"));
    }
    Err(anyhow!(text))
}

/// Lays out rows under a header, columns padded to their widest cell.
fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut text = String::new();
    let header: Vec<String> = header.iter().map(|h| (*h).to_owned()).collect();
    for row in std::iter::once(&header).chain(rows) {
        let mut line = String::new();
        for (i, (cell, width)) in row.iter().zip(&widths).enumerate() {
            if i + 1 == row.len() {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<width$}  "));
            }
        }
        text.push_str(line.trim_end());
        text.push('\n');
    }
    text
}

fn cell(value: &Value) -> String {
    match value {
        Value::Null => "-".to_owned(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Fetches a listing, printing it raw with `--json`; `None` when it was printed raw.
fn listing(args: &ListArgs, path: &str, member: &str) -> anyhow::Result<Option<Vec<Value>>> {
    let client = Client::new(&args.server)?;
    let reply = client.get(path)?;
    if !reply.ok() {
        return Err(client.error(&reply, Hint::None));
    }
    if args.json {
        print_json(&reply)?;
        return Ok(None);
    }
    let answer = reply.json()?;
    let items = answer[member]
        .as_array()
        .cloned()
        .ok_or_else(|| anyhow!("the server's answer has no {member:?} list: {answer}"))?;
    Ok(Some(items))
}

/// `shs list`.
pub(crate) fn list(args: &ListArgs) -> anyhow::Result<()> {
    let Some(functions) = listing(args, "/functions", "functions")? else {
        return Ok(());
    };
    if functions.is_empty() {
        return out(b"no functions are deployed\n");
    }
    let rows: Vec<Vec<String>> = functions
        .iter()
        .map(|f| {
            let subscriptions = f["subscriptions"]
                .as_array()
                .filter(|s| !s.is_empty())
                .map_or_else(
                    || "-".to_owned(),
                    |s| s.iter().map(cell).collect::<Vec<_>>().join(", "),
                );
            vec![
                cell(&f["name"]),
                cell(&f["mode"]),
                cell(&f["state"]),
                cell(&f["processes"]),
                subscriptions,
            ]
        })
        .collect();
    let mut text = table(
        &["NAME", "MODE", "STATE", "PROCESSES", "SUBSCRIPTIONS"],
        &rows,
    );
    for f in &functions {
        if let Some(error) = f["error"].as_str() {
            text.push_str(&format!("\n{}: {error}", cell(&f["name"])));
            if let Some(lines) = f["stderr"].as_array() {
                for l in lines {
                    text.push_str(&format!("\n    {}", cell(l)));
                }
            }
            text.push('\n');
        }
    }
    out(text.as_bytes())
}

/// `shs subscriptions`.
pub(crate) fn subscriptions(args: &ListArgs) -> anyhow::Result<()> {
    let Some(subscriptions) = listing(args, "/subscriptions", "subscriptions")? else {
        return Ok(());
    };
    if subscriptions.is_empty() {
        return out(b"no subscriptions\n");
    }
    let rows: Vec<Vec<String>> = subscriptions
        .iter()
        .map(|s| vec![cell(&s["type"]), cell(&s["function"])])
        .collect();
    out(table(&["TYPE", "FUNCTION"], &rows).as_bytes())
}

/// One log line as printed: `TIME [PID REQUEST_ID] MESSAGE`, with `shs: ` before what the
/// supervisor says about the function (its processes starting and ending).
fn log_line(line: &Value) -> String {
    let mut text = cell(&line["time"]);
    text.push_str(" [");
    text.push_str(&cell(&line["pid"]));
    if let Some(request_id) = line["request_id"].as_str() {
        text.push(' ');
        text.push_str(request_id);
    }
    text.push_str("] ");
    if line["stream"] == "shs" {
        text.push_str("shs: ");
    }
    text.push_str(&cell(&line["message"]));
    text.push('\n');
    text
}

/// One server-sent event: its name and data.
struct SseEvent {
    name: String,
    data: String,
}

/// Reads the next event of a server-sent-events stream; none at its end.
fn next_event(reader: &mut impl BufRead) -> anyhow::Result<Option<SseEvent>> {
    let mut event = SseEvent {
        name: String::new(),
        data: String::new(),
    };
    let mut line = Vec::new();
    loop {
        line.clear();
        let read = reader
            .by_ref()
            .take(MAX_STREAM_LINE)
            .read_until(b'\n', &mut line)
            .context("reading the stream")?;
        if read == 0 {
            return Ok(None);
        }
        if line.last() != Some(&b'\n') && read as u64 == MAX_STREAM_LINE {
            bail!("the server's stream has a line over {MAX_STREAM_LINE} bytes");
        }
        let text = String::from_utf8_lossy(&line);
        let text = text.trim_end_matches(['\n', '\r']);
        if text.is_empty() {
            if !event.data.is_empty() || !event.name.is_empty() {
                return Ok(Some(event));
            }
            continue;
        }
        let (field, value) = text.split_once(':').unwrap_or((text, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match field {
            "event" => event.name = value.to_owned(),
            "data" => {
                if !event.data.is_empty() {
                    event.data.push('\n');
                }
                event.data.push_str(value);
            }
            _ => {}
        }
    }
}

/// `shs logs NAME -f` on `GET /stream`: the last lines, then each new one as it is logged.
/// Returns the answer when the server has no `/stream` (an older shs), to poll instead.
fn follow_stream(client: &Client, args: &LogsArgs) -> anyhow::Result<Option<Reply>> {
    let mut path = format!("/stream?topics=logs:{}", args.name);
    if let Some(n) = args.tail {
        path.push_str(&format!("&tail={n}"));
    }
    let mut reader = match client.open_stream(&path)? {
        Ok(reader) => reader,
        Err(reply) => {
            let no_route = reply.status == 404
                && reply.json().is_ok_and(|b| {
                    b["error"]["message"]
                        .as_str()
                        .is_some_and(|m| m.starts_with("no route for"))
                });
            if no_route {
                return Ok(Some(reply));
            }
            return Err(client.error(&reply, Hint::Function));
        }
    };
    while let Some(event) = next_event(&mut reader)? {
        let data: Value = serde_json::from_str(&event.data).unwrap_or(Value::Null);
        match event.name.as_str() {
            "log" => out(log_line(&data).as_bytes())?,
            "skipped" => eprintln!(
                "shs: {} lines skipped: this terminal fell behind the log",
                cell(&data["lines"])
            ),
            "gone" => eprintln!(
                "shs: {} is no longer deployed; following it if it comes back",
                args.name
            ),
            "bye" => bail!("shs at {} is shutting down: stopped following", client.base),
            _ => {}
        }
    }
    bail!("shs at {} closed the stream", client.base)
}

/// `shs logs NAME [-f] [--tail N]`.
pub(crate) fn logs(args: &LogsArgs) -> anyhow::Result<()> {
    check_name(&args.name)?;
    let client = Client::new(&args.server)?;
    if args.follow && follow_stream(&client, args)?.is_none() {
        return Ok(());
    }
    let fetch = |query: String| -> anyhow::Result<Vec<Value>> {
        let reply = client.get(&format!("/functions/{}/logs?{query}", args.name))?;
        if !reply.ok() {
            return Err(client.error(&reply, Hint::Function));
        }
        let answer = reply.json()?;
        answer["lines"]
            .as_array()
            .cloned()
            .ok_or_else(|| anyhow!("the server's answer has no \"lines\" list: {answer}"))
    };
    // Following needs the latest seq even when no line is to be printed: ask for one at least.
    let query = match (args.tail, args.follow) {
        (Some(n), true) => format!("tail={}", n.max(1)),
        (Some(n), false) => format!("tail={n}"),
        (None, _) => String::new(),
    };
    let lines = fetch(query)?;
    let mut last_seq = lines.iter().filter_map(|l| l["seq"].as_u64()).max();
    let skip = match args.tail {
        Some(n) => lines.len().saturating_sub(n),
        None => 0,
    };
    let text: String = lines.iter().skip(skip).map(log_line).collect();
    out(text.as_bytes())?;
    if !args.follow {
        return Ok(());
    }
    // A server without `/stream`: ask for new lines every FOLLOW_EVERY.
    let mut behind = false;
    loop {
        // Right away while catching up with a burst, else every FOLLOW_EVERY.
        if !behind {
            std::thread::sleep(FOLLOW_EVERY);
        }
        let lines = fetch(format!(
            "after={}&tail={FOLLOW_PAGE}",
            last_seq.unwrap_or(0)
        ))?;
        behind = lines.len() >= FOLLOW_PAGE;
        let text: String = lines
            .iter()
            .filter(|l| l["seq"].as_u64() > last_seq)
            .map(log_line)
            .collect();
        if let Some(seq) = lines.iter().filter_map(|l| l["seq"].as_u64()).max() {
            last_seq = last_seq.max(Some(seq));
        }
        out(text.as_bytes())?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn server_sent_events_are_read_one_at_a_time() {
        let text = "retry: 2000\n\n: keep-alive\n\nevent: log\ndata: {\"a\":1}\n\n\
                    event: two\r\ndata: x\r\ndata:y\r\n\r\nevent: cut";
        let mut reader = std::io::Cursor::new(text.as_bytes());
        let first = next_event(&mut reader).ok().flatten().expect("an event");
        assert_eq!(
            (first.name.as_str(), first.data.as_str()),
            ("log", "{\"a\":1}")
        );
        let second = next_event(&mut reader).ok().flatten().expect("another");
        assert_eq!(
            (second.name.as_str(), second.data.as_str()),
            ("two", "x\ny")
        );
        assert!(
            matches!(next_event(&mut reader), Ok(None)),
            "an unfinished event is none"
        );
        let long = format!("data: {}\n\n", "x".repeat(MAX_STREAM_LINE as usize));
        assert!(next_event(&mut std::io::Cursor::new(long.as_bytes())).is_err());
    }

    #[test]
    fn tables_pad_every_column_but_the_last() {
        let rows = vec![
            vec!["hello".to_owned(), "rpc".to_owned(), "a, b".to_owned()],
            vec!["x".to_owned(), "exec".to_owned(), "-".to_owned()],
        ];
        assert_eq!(
            table(&["NAME", "MODE", "SUBS"], &rows),
            "NAME   MODE  SUBS\nhello  rpc   a, b\nx      exec  -\n"
        );
    }

    #[test]
    fn error_details_list_code_data_the_rest_then_stderr() {
        let error = json!({"message": "m", "function": "f", "stderr": ["one", "two"],
                           "failures": 3, "code": 7, "data": {"a": 1}});
        let error = error.as_object().cloned().unwrap_or_default();
        assert_eq!(
            details(&error),
            "\n  code: 7\n  data: {\"a\":1}\n  failures: 3\n  stderr:\n    one\n    two"
        );
    }

    #[test]
    fn json_arguments_are_checked() {
        assert_eq!(
            read_json(" {\"a\": 1}\n", "input").ok().as_deref(),
            Some("{\"a\": 1}")
        );
        let e = read_json("{name: 1}", "input").err().map(|e| e.to_string());
        assert!(
            e.as_deref()
                .is_some_and(|e| e.starts_with("the input is not valid JSON: ")),
            "{e:?}"
        );
        let e = read_json("  ", "payload").err().map(|e| e.to_string());
        assert!(
            e.as_deref()
                .is_some_and(|e| e.starts_with("the payload is empty")),
            "{e:?}"
        );
        let e = read_json("@/no/such/file", "input")
            .err()
            .map(|e| format!("{e:#}"));
        assert!(
            e.as_deref()
                .is_some_and(|e| e.starts_with("cannot read the input from /no/such/file")),
            "{e:?}"
        );
    }

    #[test]
    fn log_lines_show_time_pid_request_and_message() {
        let line = json!({"seq": 3, "time": "T", "pid": 12, "request_id": "r", "message": "hi"});
        assert_eq!(log_line(&line), "T [12 r] hi\n");
        let line = json!({"seq": 4, "time": "T", "pid": 12, "request_id": null, "message": "x"});
        assert_eq!(log_line(&line), "T [12] x\n");
        let line = json!({"seq": 5, "time": "T", "pid": 12, "request_id": null, "stream": "shs",
                          "message": "process started"});
        assert_eq!(log_line(&line), "T [12] shs: process started\n");
    }
}
