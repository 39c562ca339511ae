//! Starts the real `shs serve` on a free port over a temporary functions folder, talks to it
//! over real HTTP, and cleans up after itself: the server is stopped with SIGTERM (then
//! SIGKILL), and any process left running inside the temporary folder is reported and killed.

#![allow(dead_code)] // each test module uses its own part of the harness

use std::fs;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::Value;

/// How long anything in a test may take before the test gives up (not a timing assertion: a
/// guard against hanging forever).
pub const PATIENCE: Duration = Duration::from_secs(30);

/// The folder of fixture functions, `tests/fixtures`.
pub fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// The examples folder, `examples`.
pub fn examples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples")
}

/// Copies a folder (one level of files) into `to`, keeping permissions.
pub fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).expect("create function folder");
    for entry in fs::read_dir(from).unwrap_or_else(|e| panic!("read {}: {e}", from.display())) {
        let entry = entry.expect("dir entry");
        if entry.path().is_file() {
            fs::copy(entry.path(), to.join(entry.file_name())).expect("copy file");
        }
    }
}

/// Copies fixture `fixture` into `dir`, with the helper module its language needs.
pub fn deploy_fixture(fixture: &str, dir: &Path) {
    let from = fixtures_dir().join(fixture);
    copy_dir(&from, dir);
    for (main, lib) in [("main.py", "fixture.py"), ("main.js", "fixture.js")] {
        if from.join(main).exists() {
            fs::copy(fixtures_dir().join("lib").join(lib), dir.join(lib))
                .expect("copy fixture lib");
        }
    }
}

/// Writes `text` to `dir/file`, creating `dir`; `main` files are made executable.
pub fn write_file(dir: &Path, file: &str, text: &str) {
    fs::create_dir_all(dir).expect("create function folder");
    let path = dir.join(file);
    fs::write(&path, text).expect("write function file");
    if file == "main" {
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).expect("chmod");
    }
}

/// Builds a temporary functions folder, then starts a server on it.
pub struct ServerBuilder {
    root: tempfile::TempDir,
    args: Vec<String>,
    env: Vec<(String, String)>,
    flags_in_env: bool,
    default_dir: bool,
    listen: Option<String>,
    wrap: Vec<String>,
}

impl Default for ServerBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl ServerBuilder {
    /// An empty functions folder.
    pub fn new() -> Self {
        let root = tempfile::Builder::new()
            .prefix("shs-e2e-")
            .tempdir()
            .expect("temp dir");
        fs::create_dir(root.path().join("functions")).expect("functions folder");
        ServerBuilder {
            root,
            args: Vec::new(),
            env: Vec::new(),
            flags_in_env: false,
            default_dir: false,
            listen: None,
            wrap: Vec::new(),
        }
    }

    /// The functions folder.
    pub fn functions_dir(&self) -> PathBuf {
        self.root.path().join("functions")
    }

    /// Deploys the fixture `tests/fixtures/<fixture>` under its own name.
    pub fn fixture(self, fixture: &str) -> Self {
        self.fixture_as(fixture, fixture)
    }

    /// Deploys the fixture `tests/fixtures/<fixture>` as function `name`.
    pub fn fixture_as(self, fixture: &str, name: &str) -> Self {
        deploy_fixture(fixture, &self.functions_dir().join(name));
        self
    }

    /// Writes one file of function `name`.
    pub fn file(self, name: &str, file: &str, text: &str) -> Self {
        write_file(&self.functions_dir().join(name), file, text);
        self
    }

    /// Adds (or replaces) the function's `function.toml`.
    pub fn toml(self, name: &str, text: &str) -> Self {
        self.file(name, "function.toml", text)
    }

    /// Adds command-line arguments to `shs serve`.
    pub fn args(mut self, args: &[&str]) -> Self {
        self.args.extend(args.iter().map(|s| (*s).to_owned()));
        self
    }

    /// Sets an environment variable for the server.
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_owned(), value.to_owned()));
        self
    }

    /// Passes the listen address and functions folder as SHS_LISTEN and SHS_FUNCTIONS_DIR
    /// instead of flags.
    pub fn flags_in_env(mut self) -> Self {
        self.flags_in_env = true;
        self
    }

    /// Listens on `addr` (with port 0) instead of `127.0.0.1:0`.
    pub fn listen(mut self, addr: &str) -> Self {
        self.listen = Some(addr.to_owned());
        self
    }

    /// Runs `shs` through a wrapper command (`sh -c '...; exec "$@"' sh`, `unshare ...`): the
    /// wrapper's arguments, then the path of `shs` and its own. [`Server::pid`] is the
    /// wrapper's; a wrapper should `exec` shs or forward SIGTERM to it.
    pub fn wrap(mut self, wrapper: &[&str]) -> Self {
        self.wrap = wrapper.iter().map(|s| (*s).to_owned()).collect();
        self
    }

    /// Runs the server in the temporary folder with no `--functions-dir`: the default,
    /// relative `./functions`.
    pub fn default_functions_dir(mut self) -> Self {
        self.default_dir = true;
        self
    }

    /// Starts `shs serve` and waits until it listens (not until it is ready).
    pub async fn start(self) -> Server {
        let launch = Launch {
            functions: self.functions_dir(),
            root: self.root.path().to_owned(),
            args: self.args,
            env: self.env,
            flags_in_env: self.flags_in_env,
            default_dir: self.default_dir,
            listen: self.listen.unwrap_or_else(|| "127.0.0.1:0".to_owned()),
            wrap: self.wrap,
        };
        let log = Arc::new(Mutex::new(String::new()));
        let (child, url) = launch.spawn(&log);
        Server {
            child: Some(child),
            url,
            root: self.root,
            launch,
            log,
            client: reqwest::Client::builder()
                .pool_max_idle_per_host(64)
                .build()
                .expect("http client"),
        }
    }
}

/// How a server is started, kept for restarts.
struct Launch {
    functions: PathBuf,
    root: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
    flags_in_env: bool,
    default_dir: bool,
    listen: String,
    wrap: Vec<String>,
}

impl Launch {
    /// Spawns `shs serve`, appending its stderr to `log`; returns it with its URL once it
    /// listens.
    fn spawn(&self, log: &Arc<Mutex<String>>) -> (Child, String) {
        let mut cmd = match self.wrap.split_first() {
            Some((program, args)) => {
                let mut cmd = Command::new(program);
                cmd.args(args).arg(env!("CARGO_BIN_EXE_shs"));
                cmd
            }
            None => Command::new(env!("CARGO_BIN_EXE_shs")),
        };
        cmd.arg("serve");
        if self.default_dir {
            cmd.current_dir(&self.root).args(["--listen", &self.listen]);
        } else if self.flags_in_env {
            cmd.env("SHS_LISTEN", &self.listen)
                .env("SHS_FUNCTIONS_DIR", &self.functions)
                .env("SHS_DATA_DIR", self.root.join("data"));
        } else {
            cmd.args(["--listen", &self.listen, "--functions-dir"])
                .arg(&self.functions)
                .arg("--data-dir")
                .arg(self.root.join("data"));
        }
        cmd.args(&self.args)
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("start shs serve");
        let stderr = child.stderr.take().expect("stderr piped");
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let log2 = log.clone();
        std::thread::spawn(move || {
            let mut addr_tx = Some(addr_tx);
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Some(at) = line.find("listening on http://") {
                    let rest = &line[at + "listening on http://".len()..];
                    let addr: String = rest
                        .chars()
                        .take_while(|c| c.is_ascii_hexdigit() || ".:[]".contains(*c))
                        .collect();
                    if let Some(tx) = addr_tx.take() {
                        let _ = tx.send(addr);
                    }
                }
                let mut log = log2.lock().expect("log lock");
                log.push_str(&line);
                log.push('\n');
            }
        });
        match addr_rx.recv_timeout(PATIENCE) {
            Ok(addr) => (child, format!("http://{addr}")),
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "shs serve did not start listening; its log:\n{}",
                    log.lock().expect("log lock")
                );
            }
        }
    }
}

/// An HTTP answer: status and body (as JSON when it is JSON, else as a string).
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub body: Value,
    pub headers: reqwest::header::HeaderMap,
}

impl Answer {
    /// The error message of an error answer.
    pub fn message(&self) -> &str {
        self.body["error"]["message"]
            .as_str()
            .unwrap_or_else(|| panic!("expected an error body, got {} {}", self.status, self.body))
    }

    /// A header as a string.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// A running `shs serve`.
pub struct Server {
    child: Option<Child>,
    pub url: String,
    root: tempfile::TempDir,
    launch: Launch,
    log: Arc<Mutex<String>>,
    pub client: reqwest::Client,
}

impl Server {
    /// The functions folder.
    pub fn functions_dir(&self) -> PathBuf {
        self.root.path().join("functions")
    }

    /// The data folder (`--data-dir`) of the embedded store.
    pub fn data_dir(&self) -> PathBuf {
        self.root.path().join("data")
    }

    /// The server's pid.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Everything the server has logged so far.
    pub fn logs(&self) -> String {
        self.log.lock().expect("log lock").clone()
    }

    /// Waits until the log holds `needle`; panics with the log after [`PATIENCE`].
    pub async fn wait_for_log(&self, needle: &str) {
        let found = poll(|| async { self.logs().contains(needle) }).await;
        assert!(
            found,
            "the log never showed {needle:?}; log:\n{}",
            self.logs()
        );
    }

    /// Waits until `GET /ready` answers 200.
    pub async fn wait_ready(&self) {
        let ready = poll(|| async { self.get("/ready").await.status == 200 }).await;
        assert!(
            ready,
            "the server never became ready; log:\n{}",
            self.logs()
        );
    }

    /// `POST path` with a raw body.
    pub async fn post(&self, path: &str, body: &str) -> Answer {
        self.request(reqwest::Method::POST, path, Some(body.to_owned()), &[])
            .await
    }

    /// `POST path` with a JSON body.
    pub async fn post_json(&self, path: &str, body: &Value) -> Answer {
        self.post(path, &body.to_string()).await
    }

    /// `GET path`.
    pub async fn get(&self, path: &str) -> Answer {
        self.request(reqwest::Method::GET, path, None, &[]).await
    }

    /// Any request, with extra headers.
    pub async fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<String>,
        headers: &[(&str, &str)],
    ) -> Answer {
        let mut req = self.client.request(method, format!("{}{path}", self.url));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if let Some(body) = body {
            req = req.body(body);
        }
        let resp = req
            .send()
            .await
            .unwrap_or_else(|e| panic!("request to {path} failed: {e}; log:\n{}", self.logs()));
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let text = resp.text().await.expect("response body");
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Answer {
            status,
            body,
            headers,
        }
    }

    /// `POST /run/{name}` with a JSON body.
    pub async fn run(&self, name: &str, input: Value) -> Answer {
        self.post_json(&format!("/run/{name}"), &input).await
    }

    /// `POST /run/{name}`, for a request that may fail at the connection: its status, or the
    /// client's error.
    pub async fn run_raw(&self, name: &str, input: Value) -> Result<u16, reqwest::Error> {
        let resp = self
            .client
            .post(format!("{}/run/{name}", self.url))
            .body(input.to_string())
            .send()
            .await?;
        let status = resp.status().as_u16();
        resp.bytes().await?;
        Ok(status)
    }

    /// `POST /events` with `{"type", "payload"}`.
    pub async fn publish(&self, event_type: &str, payload: Value) -> Answer {
        self.post_json(
            "/events",
            &serde_json::json!({"type": event_type, "payload": payload}),
        )
        .await
    }

    /// The subscriptions as (type, function) pairs.
    pub async fn subscriptions(&self) -> Vec<(String, String)> {
        let answer = self.get("/subscriptions").await;
        answer.body["subscriptions"]
            .as_array()
            .expect("subscriptions array")
            .iter()
            .map(|s| {
                (
                    s["type"].as_str().expect("type").to_owned(),
                    s["function"].as_str().expect("function").to_owned(),
                )
            })
            .collect()
    }

    /// The entry of `GET /functions` for `name`.
    pub async fn function_info(&self, name: &str) -> Option<Value> {
        let answer = self.get("/functions").await;
        answer.body["functions"]
            .as_array()?
            .iter()
            .find(|f| f["name"] == name)
            .cloned()
    }

    /// Pids of processes whose working directory is inside this test's folder: the function
    /// processes (and anything they started).
    pub fn function_pids(&self) -> Vec<u32> {
        processes_under(self.root.path())
    }

    /// Pids of the processes running in function `name`'s folder.
    pub fn pids_of(&self, name: &str) -> Vec<u32> {
        processes_under(&self.functions_dir().join(name))
    }

    /// How many pipes the server holds open (each function process costs three).
    pub fn pipe_fds(&self) -> usize {
        let Ok(entries) = fs::read_dir(format!("/proc/{}/fd", self.pid())) else {
            return 0;
        };
        entries
            .flatten()
            .filter(|e| {
                fs::read_link(e.path())
                    .is_ok_and(|target| target.to_string_lossy().starts_with("pipe:"))
            })
            .count()
    }

    /// How many descriptors the server holds open, of every kind.
    pub fn open_fds(&self) -> usize {
        fs::read_dir(format!("/proc/{}/fd", self.pid())).map_or(0, |entries| entries.count())
    }

    /// The server's resident memory, in KiB.
    pub fn rss_kib(&self) -> u64 {
        fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .ok()
            .and_then(|status| {
                status
                    .lines()
                    .find_map(|l| l.strip_prefix("VmRSS:"))
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            })
            .unwrap_or(0)
    }

    /// Kills the server with SIGKILL, as a crash would: it gets no chance to clean up.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again (after [`Server::stop`] or [`Server::kill9`]) on the same
    /// folders and flags, on a new port.
    pub fn restart(&mut self) {
        self.stop();
        self.log
            .lock()
            .expect("log lock")
            .push_str("--- restart ---\n");
        let (child, url) = self.launch.spawn(&self.log);
        self.child = Some(child);
        self.url = url;
    }

    /// Sends SIGTERM and waits for the server to exit (SIGKILL after [`PATIENCE`]).
    pub fn stop(&mut self) -> Option<ExitStatus> {
        let mut child = self.child.take()?;
        let pid = Pid::from_raw(i32::try_from(child.id()).ok()?);
        let _ = kill(pid, Signal::SIGTERM);
        let deadline = Instant::now() + PATIENCE;
        loop {
            match child.try_wait() {
                Ok(Some(status)) => return Some(status),
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                _ => {
                    let _ = child.kill();
                    return child.wait().ok();
                }
            }
        }
    }

    /// Stops the server and checks it exited 0 and left no function process behind.
    pub fn stop_and_check(&mut self) {
        let status = self.stop().expect("the server was running");
        assert!(
            status.success(),
            "shs exited with {status}; log:\n{}",
            self.logs()
        );
        let left = wait_gone(self.root.path());
        assert!(
            left.is_empty(),
            "processes left running after shutdown: {left:?}; log:\n{}",
            self.logs()
        );
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
        // Whatever is still running from this test's folder is killed: tests leave nothing.
        for pid in wait_gone(self.root.path()) {
            if let Ok(pid) = i32::try_from(pid) {
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
        }
    }
}

/// Processes whose working directory is under `dir`.
pub fn processes_under(dir: &Path) -> Vec<u32> {
    let Ok(dir) = dir.canonicalize() else {
        return Vec::new();
    };
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            fs::read_link(format!("/proc/{pid}/cwd")).is_ok_and(|cwd| cwd.starts_with(&dir))
                && !is_zombie_reaped_soon(*pid)
        })
        .collect()
}

/// A zombie whose parent is the supervisor is about to be reaped; one whose parent is gone is
/// reaped by init. Neither is a running process.
fn is_zombie_reaped_soon(pid: u32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit_once(") ")
            .is_some_and(|(_, rest)| rest.starts_with('Z'))
    })
}

/// Waits (up to a few seconds) for the processes under `dir` to go; returns those that stay.
fn wait_gone(dir: &Path) -> Vec<u32> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let left = processes_under(dir);
        if left.is_empty() || Instant::now() > deadline {
            return left;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Polls `check` every 20 ms until it is true (returns true) or [`PATIENCE`] passes (false).
pub async fn poll<F, Fut>(mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + PATIENCE;
    loop {
        if check().await {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Live processes in process group `pgid`.
pub fn group_members(pgid: u32) -> Vec<u32> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
                stat.rsplit_once(") ").is_some_and(|(_, rest)| {
                    let fields: Vec<&str> = rest.split_whitespace().collect();
                    // state, ppid, pgrp, ...
                    fields.first() != Some(&"Z")
                        && fields.get(2) == Some(&pgid.to_string().as_str())
                })
            })
        })
        .collect()
}

/// Whether a process exists (and is not a zombie).
pub fn alive(pid: u32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit_once(") ")
            .is_some_and(|(_, rest)| !rest.starts_with('Z'))
    })
}
