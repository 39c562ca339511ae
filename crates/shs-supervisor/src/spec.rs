//! Functions on disk: names, finding them, what to run, and the environment they run in.
//!
//! A function named NAME is a folder `NAME` in the functions folder holding, in this order of
//! precedence, a `function.toml` with a `command`, an executable `main`, or one of `main.py`,
//! `main.js`, `main.sh` (run with `python3`, `node`, `sh`). A `function.toml` without
//! `command` adds its settings to whichever `main` is there. What a `function.toml` may say,
//! and how it is checked, is the business of the `manifest` module; this one turns a folder
//! into a [`Found`]: a [`FunctionSpec`], or the reason it cannot run.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde::Deserialize;

use crate::error::SpecError;
use crate::manifest::{Manifest, build_spec};

/// `PATH` where the supervisor has none.
pub(crate) const DEFAULT_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

/// The longest function name.
pub const MAX_NAME_LEN: usize = 64;

/// Checks a function name against `^[A-Za-z0-9_-]{1,64}$`.
pub fn validate_name(name: &str) -> Result<(), SpecError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(SpecError::BadName {
            name: name.chars().take(80).collect(),
        })
    }
}

/// How a function is run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// A long-lived process speaking JSON-RPC over stdin and stdout.
    Rpc,
    /// One process per request: the body on stdin, the response on stdout.
    Exec,
    /// One process per request as a CGI/1.1 script (RFC 3875): the request in meta-variables
    /// and the raw body on stdin, a CGI response (header lines, a blank line, the body) on
    /// stdout, streamed to the client.
    Cgi,
}

impl Mode {
    /// `"rpc"`, `"exec"` or `"cgi"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Rpc => "rpc",
            Mode::Exec => "exec",
            Mode::Cgi => "cgi",
        }
    }
}

/// Who signs a webhook's requests, which says how the signature is checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
pub enum WebhookKind {
    /// GitHub: `X-Hub-Signature-256: sha256=HEX`, HMAC-SHA256 of the body.
    #[serde(rename = "github")]
    Github,
    /// Stripe: `Stripe-Signature: t=TS,v1=HEX`, HMAC-SHA256 of `TS.BODY`.
    #[serde(rename = "stripe")]
    Stripe,
    /// Slack: `X-Slack-Signature: v0=HEX`, HMAC-SHA256 of `v0:TS:BODY`, the time in
    /// `X-Slack-Request-Timestamp`.
    #[serde(rename = "slack")]
    Slack,
    /// Any sender: the header (default `X-Signature`) holds the HMAC-SHA256 of the body in
    /// hex, with or without a `sha256=` prefix.
    #[serde(rename = "hmac-sha256")]
    HmacSha256,
}

impl WebhookKind {
    /// `"github"`, `"stripe"`, `"slack"` or `"hmac-sha256"`.
    pub fn as_str(self) -> &'static str {
        match self {
            WebhookKind::Github => "github",
            WebhookKind::Stripe => "stripe",
            WebhookKind::Slack => "slack",
            WebhookKind::HmacSha256 => "hmac-sha256",
        }
    }

    /// The header that carries the signature, unless `hmac-sha256` names another.
    pub fn default_header(self) -> &'static str {
        match self {
            WebhookKind::Github => "X-Hub-Signature-256",
            WebhookKind::Stripe => "Stripe-Signature",
            WebhookKind::Slack => "X-Slack-Signature",
            WebhookKind::HmacSha256 => "X-Signature",
        }
    }
}

/// A function's `[webhook]`: requests are refused unless signed with the secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Webhook {
    /// Who signs.
    pub kind: WebhookKind,
    /// The name of the secret the signature is made with.
    pub secret: String,
    /// The header holding the signature.
    pub header: String,
}

/// Resource limits of a function's processes, set with `setrlimit` in the child before it
/// runs the function.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Limits {
    /// Bytes of data segment (`RLIMIT_DATA`: heap and private mappings). Past it, allocations
    /// fail.
    pub memory: Option<u64>,
    /// Seconds of CPU time (`RLIMIT_CPU`): SIGXCPU at the limit, SIGKILL a second later.
    pub cpu_seconds: Option<u64>,
    /// Open file descriptors (`RLIMIT_NOFILE`).
    pub open_files: Option<u64>,
    /// Processes of the user the function runs as (`RLIMIT_NPROC`; not enforced for root).
    pub processes: Option<u64>,
}

impl Limits {
    /// Whether no limit is set.
    pub fn is_empty(&self) -> bool {
        *self == Limits::default()
    }

    /// Each limit from `self`, or else from `defaults`.
    pub(crate) fn or(self, defaults: Limits) -> Limits {
        Limits {
            memory: self.memory.or(defaults.memory),
            cpu_seconds: self.cpu_seconds.or(defaults.cpu_seconds),
            open_files: self.open_files.or(defaults.open_files),
            processes: self.processes.or(defaults.processes),
        }
    }
}

/// Parses `1048576`, `512K`, `512KiB`, `1M`, `1MiB`, `2G` (K, M and G are powers of 1024).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{text:?} is not a size (e.g. 1048576, 512KiB, 1MiB)"))?;
    let factor: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        _ => return Err(format!("{text:?}: unknown unit {unit:?} (use K, M or G)")),
    };
    match n.checked_mul(factor) {
        Some(0) => Err(format!("{text:?} must be more than 0")),
        Some(size) => Ok(size),
        None => Err(format!("{text:?} is too large")),
    }
}

/// Writes a size as [`parse_size`] reads it, in the largest unit that divides it: `16MiB`,
/// `512KiB`, `1000`.
pub fn fmt_size(bytes: usize) -> String {
    for (unit, shift) in [("GiB", 30), ("MiB", 20), ("KiB", 10)] {
        if bytes != 0 && bytes.trailing_zeros() >= shift {
            return format!("{}{unit}", bytes >> shift);
        }
    }
    bytes.to_string()
}

/// Settings that apply where a function does not set its own.
#[derive(Clone, Debug)]
pub struct Defaults {
    /// Longest time a request may run.
    pub timeout: Duration,
    /// Most processes per function.
    pub instances: usize,
    /// Most requests waiting for a free process, per function.
    pub queue: usize,
    /// How long an unused process is kept before the pool shrinks to `min_instances`.
    pub idle_timeout: Option<Duration>,
    /// Resource limits.
    pub limits: Limits,
    /// Attempts of an asynchronous delivery before it becomes a dead letter.
    pub max_attempts: u32,
    /// The wait after the first failed attempt of an asynchronous delivery.
    pub retry_backoff: Duration,
}

impl Default for Defaults {
    /// Those of [`Config::new`](crate::Config::new): the [`defaults`](crate::defaults).
    fn default() -> Defaults {
        crate::Config::new(PathBuf::new()).defaults()
    }
}

/// Everything needed to run one function.
#[derive(Clone, Debug, PartialEq)]
pub struct FunctionSpec {
    /// The function's name (its folder's name).
    pub name: String,
    /// The function's folder, where its processes run.
    pub dir: PathBuf,
    /// The program and its arguments.
    pub command: Vec<String>,
    /// rpc or exec.
    pub mode: Mode,
    /// Longest time one request may take.
    pub timeout: Duration,
    /// Longest time a process may take to answer `initialize` (default: `timeout`).
    pub start_timeout: Duration,
    /// Event types to subscribe to before the function starts.
    pub subscribe: Vec<String>,
    /// Extra environment variables.
    pub env: BTreeMap<String, String>,
    /// Most processes at once.
    pub instances: usize,
    /// Where `instances` comes from: `function.toml` or the default (a process may then
    /// declare its own in its answer to `initialize`).
    pub instances_source: Source,
    /// Requests in flight per process.
    pub concurrency: usize,
    /// Where `concurrency` comes from: `function.toml` or the default (a process may then
    /// declare its own in its answer to `initialize`).
    pub concurrency_source: Source,
    /// Most requests waiting for a free process; past that, requests are refused (503).
    pub queue: usize,
    /// Processes kept running even when idle; `None`: 1 for a function with subscriptions,
    /// else 0.
    pub min_instances: Option<usize>,
    /// How long an unused process is kept before the pool shrinks to `min_instances`; `None`:
    /// forever.
    pub idle_timeout: Option<Duration>,
    /// Resource limits of each process.
    pub limits: Limits,
    /// The user and group to run as (the supervisor must be root to switch).
    pub run_as: Option<RunAs>,
    /// Attempts of an asynchronous delivery before it becomes a dead letter.
    pub max_attempts: u32,
    /// The wait after the first failed attempt of an asynchronous delivery (it doubles).
    pub retry_backoff: Duration,
    /// Whether asynchronous deliveries of one event type are made one at a time, in order.
    pub ordered: bool,
    /// The event types it declares it publishes (`publishes`): the chains prewarmed before it
    /// has run.
    pub publishes: Vec<String>,
    /// The secrets its processes may read, in the folder `SHS_SECRETS`.
    pub secrets: Vec<String>,
    /// The signature its requests are checked for.
    pub webhook: Option<Webhook>,
    /// The private folder holding its secrets, `SHS_SECRETS` (set when it is deployed).
    pub secrets_folder: Option<PathBuf>,
    /// Whether an HTTP request's raw body is sent even when it is JSON (`raw_body`).
    pub raw_body: bool,
    /// Its `[[schedule]]` tables.
    pub schedules: Vec<std::sync::Arc<crate::schedule::Schedule>>,
    /// What a change on disk is detected by.
    pub fingerprint: Fingerprint,
}

/// Where a setting in force comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// The function's `function.toml`: it wins over a declaration.
    Manifest,
    /// The function's own answer to `initialize`.
    Declared,
    /// The server's default (a flag, or the built-in value).
    Default,
}

impl Source {
    /// `"function.toml"`, `"declared"` or `"default"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Manifest => "function.toml",
            Source::Declared => "declared",
            Source::Default => "default",
        }
    }
}

/// A user and group a function runs as.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunAs {
    /// The user id.
    pub uid: u32,
    /// The group id (the user's primary group unless `group` says otherwise).
    pub gid: u32,
    /// The user's home folder, its `HOME`.
    pub home: Option<PathBuf>,
}

/// The parts of a function's folder whose change means a redeploy: the `function.toml` text,
/// and the size and modification time of the file that is run (and of files of the folder its
/// `command` names).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Fingerprint {
    manifest: Option<String>,
    files: Vec<(PathBuf, u64, Option<SystemTime>)>,
}

/// What a folder in the functions folder turned out to be.
#[derive(Debug)]
pub enum Found {
    /// A function that can be run.
    Function(Box<FunctionSpec>),
    /// A function that is there but cannot be run (bad `function.toml`, `main` not executable).
    Broken {
        /// The function's name.
        name: String,
        /// What is wrong.
        error: SpecError,
        /// Detects when it is fixed.
        fingerprint: Fingerprint,
    },
}

impl Fingerprint {
    /// The `function.toml` text the function was deployed with, if it has one.
    pub fn manifest(&self) -> Option<&str> {
        self.manifest.as_deref()
    }

    /// A short digest of the deployment: what the store keeps to know that a function has
    /// run as it is now (its start-up subscriptions are learned) across restarts.
    pub fn digest(&self) -> String {
        use std::hash::{Hash, Hasher};
        // `DefaultHasher::new` has fixed keys: the same files give the same digest from run to
        // run (a different Rust version may differ, which only costs one start to learn again).
        let mut hasher = std::hash::DefaultHasher::new();
        self.manifest.hash(&mut hasher);
        for (path, size, modified) in &self.files {
            path.hash(&mut hasher);
            size.hash(&mut hasher);
            modified.hash(&mut hasher);
        }
        format!("{:016x}", hasher.finish())
    }
}

impl Found {
    /// The function's name.
    pub fn name(&self) -> &str {
        match self {
            Found::Function(spec) => &spec.name,
            Found::Broken { name, .. } => name,
        }
    }

    /// Whether two findings describe the same deployment (nothing changed on disk).
    pub fn same_as(&self, other: &Found) -> bool {
        match (self, other) {
            (Found::Function(a), Found::Function(b)) => a == b,
            (
                Found::Broken {
                    error: a,
                    fingerprint: fa,
                    ..
                },
                Found::Broken {
                    error: b,
                    fingerprint: fb,
                    ..
                },
            ) => fa == fb && a.to_string() == b.to_string(),
            _ => false,
        }
    }
}

/// Reads every function in `dir`. Folders whose names are not valid function names, hidden
/// folders and plain files are skipped (the invalid names with a warning); folders with nothing
/// to run yet (being copied in) are left out.
pub fn scan(dir: &Path, defaults: &Defaults) -> Result<BTreeMap<String, Found>, SpecError> {
    let entries = fs::read_dir(dir).map_err(|source| SpecError::Io {
        path: dir.to_owned(),
        source,
    })?;
    let mut found = BTreeMap::new();
    for entry in entries.flatten() {
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        if name.starts_with('.') || !entry.path().is_dir() {
            continue;
        }
        if let Err(e) = validate_name(&name) {
            tracing::warn!(folder = %entry.path().display(), "skipping folder: {e}");
            continue;
        }
        if let Some(f) = read_function(&name, &entry.path(), defaults) {
            found.insert(name, f);
        }
    }
    Ok(found)
}

/// Reads one function folder; `None` when it holds nothing to run and no `function.toml`.
pub fn read_function(name: &str, dir: &Path, defaults: &Defaults) -> Option<Found> {
    let manifest_path = dir.join("function.toml");
    let manifest_text = match fs::read_to_string(&manifest_path) {
        Ok(text) => Some(text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(source) => {
            return Some(Found::Broken {
                name: name.to_owned(),
                error: SpecError::Io {
                    path: manifest_path,
                    source,
                },
                fingerprint: Fingerprint::default(),
            });
        }
    };
    let entry = find_entry(dir);
    if manifest_text.is_none() && entry.is_none() {
        return None;
    }
    let parsed = match &manifest_text {
        Some(text) => Manifest::parse(text, &manifest_path),
        None => Ok(Manifest::default()),
    };
    // The files whose change is a redeploy: the main file, and the files of the function's
    // folder that its `command` names (a script given to an interpreter, say).
    let mut files: Vec<PathBuf> = entry.iter().map(|(path, _)| path.clone()).collect();
    if let Some(command) = parsed.as_ref().ok().and_then(Manifest::command) {
        files.extend(command.iter().map(|arg| dir.join(arg)).filter(|path| {
            // Only files of the function's own folder.
            path.starts_with(dir)
                && !path
                    .components()
                    .any(|c| c == std::path::Component::ParentDir)
                && path.is_file()
        }));
    }
    let fingerprint = Fingerprint {
        manifest: manifest_text.clone(),
        files: files
            .into_iter()
            .map(|path| {
                let meta = fs::metadata(&path).ok();
                let size = meta.as_ref().map_or(0, |m| m.len());
                (path, size, meta.and_then(|m| m.modified().ok()))
            })
            .collect(),
    };
    let result = parsed.and_then(|manifest| build_spec(name, dir, manifest, entry, defaults));
    match result {
        Ok(mut spec) => {
            spec.fingerprint = fingerprint;
            Some(Found::Function(Box::new(spec)))
        }
        Err(error) => Some(Found::Broken {
            name: name.to_owned(),
            error,
            fingerprint,
        }),
    }
}

/// The file to run and the command that runs it, from the conventional names.
fn find_entry(dir: &Path) -> Option<(PathBuf, Vec<String>)> {
    let main = dir.join("main");
    if main.is_file() {
        let path = main.to_string_lossy().into_owned();
        return Some((main, vec![path]));
    }
    for (file, interpreter) in [
        ("main.py", "python3"),
        ("main.js", "node"),
        ("main.sh", "sh"),
    ] {
        let path = dir.join(file);
        if path.is_file() {
            return Some((path, vec![interpreter.to_owned(), file.to_owned()]));
        }
    }
    None
}

/// The environment a function runs in: `PATH`, `HOME`, `LANG`, `TZ` from the supervisor's own
/// environment (all of it when `inherit` is set, but never shs's own settings: no `SHS_*`
/// variable, `SHS_API_KEY` among them), `PYTHONUNBUFFERED=1`, the function's `env`, and
/// `SHS_FUNCTION` and `SHS_URL`.
pub fn environment(
    spec: &FunctionSpec,
    inherit: bool,
    server_url: &str,
) -> HashMap<String, String> {
    let mut env: HashMap<String, String> = if inherit {
        std::env::vars()
            .filter(|(k, _)| !k.starts_with("SHS_"))
            .collect()
    } else {
        ["PATH", "HOME", "LANG", "TZ"]
            .into_iter()
            .filter_map(|k| std::env::var(k).ok().map(|v| (k.to_owned(), v)))
            .collect()
    };
    env.entry("PATH".into())
        .or_insert_with(|| DEFAULT_PATH.into());
    if let Some(home) = spec.run_as.as_ref().and_then(|r| r.home.as_ref()) {
        env.insert("HOME".into(), home.to_string_lossy().into_owned());
    }
    env.insert("PYTHONUNBUFFERED".into(), "1".into());
    env.extend(spec.env.iter().map(|(k, v)| (k.clone(), v.clone())));
    env.insert("SHS_FUNCTION".into(), spec.name.clone());
    env.insert("SHS_URL".into(), server_url.to_owned());
    if let Some(folder) = &spec.secrets_folder {
        env.insert("SHS_SECRETS".into(), folder.to_string_lossy().into_owned());
    } else {
        env.remove("SHS_SECRETS");
    }
    env
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn defaults() -> Defaults {
        Defaults::default()
    }

    fn write(dir: &Path, file: &str, text: &str) {
        fs::create_dir_all(dir).expect("mkdir");
        fs::write(dir.join(file), text).expect("write");
    }

    fn spec_of(found: Option<Found>) -> FunctionSpec {
        match found {
            Some(Found::Function(spec)) => *spec,
            other => panic!("expected a function, got {other:?}"),
        }
    }

    fn error_of(found: Option<Found>) -> String {
        match found {
            Some(Found::Broken { error, .. }) => error.to_string(),
            other => panic!("expected a broken function, got {other:?}"),
        }
    }

    #[test]
    fn sizes_are_written_as_they_are_read() {
        for (bytes, text) in [
            (16 << 20, "16MiB"),
            (1 << 20, "1MiB"),
            (3 << 30, "3GiB"),
            (512 << 10, "512KiB"),
            ((1 << 20) + 1, "1048577"),
            (1000, "1000"),
        ] {
            assert_eq!(fmt_size(bytes), text);
            assert_eq!(parse_size(text), Ok(bytes as u64));
        }
    }

    #[test]
    fn names() {
        for ok in ["a", "hello", "A-b_9", &"x".repeat(64)] {
            assert!(validate_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", "a b", "a.b", "a/b", "..", "ü", &"x".repeat(65)] {
            assert!(validate_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn conventional_entries_in_order() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("f");
        // The interpreter is looked up in PATH once, at deploy.
        let program = |spec: &FunctionSpec| {
            assert!(
                spec.command[0].starts_with('/'),
                "a full path: {:?}",
                spec.command
            );
            let name = Path::new(&spec.command[0])
                .file_name()
                .map(|n| n.to_string_lossy().into_owned());
            (name, spec.command[1..].to_vec())
        };
        write(&dir, "main.sh", "echo");
        let spec = spec_of(read_function("f", &dir, &defaults()));
        assert_eq!(
            program(&spec),
            (Some("sh".into()), vec!["main.sh".to_owned()])
        );
        write(&dir, "main.js", "");
        let spec = spec_of(read_function("f", &dir, &defaults()));
        assert_eq!(
            program(&spec),
            (Some("node".into()), vec!["main.js".to_owned()])
        );
        write(&dir, "main.py", "");
        let spec = spec_of(read_function("f", &dir, &defaults()));
        assert_eq!(
            program(&spec),
            (Some("python3".into()), vec!["main.py".to_owned()])
        );
        assert_eq!(spec.mode, Mode::Rpc);
        assert_eq!(spec.timeout, Duration::from_secs(30));
        assert_eq!((spec.instances, spec.concurrency, spec.queue), (4, 1, 64));
        write(&dir, "main", "#!/bin/sh\n");
        assert!(error_of(read_function("f", &dir, &defaults())).contains("not executable"));
        fs::set_permissions(dir.join("main"), fs::Permissions::from_mode(0o755)).expect("chmod");
        let spec = spec_of(read_function("f", &dir, &defaults()));
        assert_eq!(
            spec.command,
            [dir.join("main").to_string_lossy().into_owned()]
        );
    }

    #[test]
    fn an_empty_folder_is_not_a_function_yet() {
        let tmp = tempfile::tempdir().expect("tempdir");
        fs::create_dir(tmp.path().join("f")).expect("mkdir");
        assert!(read_function("f", &tmp.path().join("f"), &defaults()).is_none());
    }

    #[test]
    fn manifest_keys() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("f");
        write(
            &dir,
            "function.toml",
            r#"
command = ["./run", "--flag"]
mode = "exec"
timeout = 2.5
start_timeout = 10
subscribe = ["a.b", "c.*"]
env = { GREETING = "hi" }
instances = 3
concurrency = 8
queue = 0
"#,
        );
        let spec = spec_of(read_function("f", &dir, &defaults()));
        assert_eq!(
            spec.command,
            [
                dir.join("./run").to_string_lossy().into_owned(),
                "--flag".into()
            ]
        );
        assert_eq!(spec.mode, Mode::Exec);
        assert_eq!(spec.timeout, Duration::from_millis(2500));
        assert_eq!(spec.start_timeout, Duration::from_secs(10));
        assert_eq!(spec.subscribe, ["a.b", "c.*"]);
        assert_eq!(spec.env.get("GREETING").map(String::as_str), Some("hi"));
        assert_eq!((spec.instances, spec.concurrency, spec.queue), (3, 8, 0));
    }

    #[test]
    fn a_manifest_without_command_uses_main() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("f");
        write(&dir, "main.py", "");
        write(&dir, "function.toml", "timeout = 1\n");
        let spec = spec_of(read_function("f", &dir, &defaults()));
        assert!(
            spec.command[0].ends_with("python3") && spec.command[1] == "main.py",
            "{:?}",
            spec.command
        );
        assert_eq!(spec.timeout, Duration::from_secs(1));
    }

    #[test]
    fn pool_limit_and_delivery_keys() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("f");
        write(&dir, "main.py", "");
        write(
            &dir,
            "function.toml",
            r#"
instances = 3
min_instances = 2
idle_timeout = 0
max_attempts = 9
retry_backoff = 0.25
ordered = false
[limits]
memory = "64MiB"
cpu_seconds = 5
open_files = 100
processes = 20
"#,
        );
        let spec = spec_of(read_function("f", &dir, &defaults()));
        assert_eq!(spec.min_instances, Some(2));
        assert_eq!(spec.idle_timeout, None, "0 means never");
        assert_eq!(
            (spec.max_attempts, spec.retry_backoff, spec.ordered),
            (9, Duration::from_millis(250), false)
        );
        assert_eq!(
            spec.limits,
            Limits {
                memory: Some(64 << 20),
                cpu_seconds: Some(5),
                open_files: Some(100),
                processes: Some(20),
            }
        );
        write(&dir, "function.toml", "[limits]\nmemory = 1048576\n");
        let spec = spec_of(read_function("f", &dir, &defaults()));
        assert_eq!(spec.limits.memory, Some(1 << 20));
        assert_eq!(
            spec.idle_timeout,
            Some(Duration::from_secs(300)),
            "the default"
        );
        assert_eq!(spec.min_instances, None, "decided by subscriptions");
        assert!(spec.ordered);
    }

    #[test]
    fn run_as_a_user() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("f");
        write(&dir, "main.py", "");
        write(&dir, "function.toml", "user = \"no-such-user-here\"\n");
        assert!(error_of(read_function("f", &dir, &defaults())).contains("there is no user"));
        write(
            &dir,
            "function.toml",
            "user = \"nobody\"\ngroup = \"no-such-group-here\"\n",
        );
        assert!(error_of(read_function("f", &dir, &defaults())).contains("there is no group"));
        // A group without a user would run as root with another group: refused, whoever runs
        // shs, and whether or not the group exists.
        for group in ["root", "nogroup", "no-such-group-here"] {
            write(&dir, "function.toml", &format!("group = \"{group}\"\n"));
            let error = error_of(read_function("f", &dir, &defaults()));
            assert!(error.contains("`group` needs `user`"), "{error}");
        }
        write(&dir, "function.toml", "user = \"nobody\"\n");
        let found = read_function("f", &dir, &defaults());
        if nix::unistd::Uid::effective().is_root() {
            let spec = spec_of(found);
            let run_as = spec.run_as.clone().expect("runs as nobody");
            let nobody = nix::unistd::User::from_name("nobody")
                .ok()
                .flatten()
                .expect("nobody");
            assert_eq!(run_as.uid, nobody.uid.as_raw());
            let env = environment(&spec, false, "http://x");
            assert_eq!(
                env.get("HOME").map(String::as_str),
                nobody.dir.to_str(),
                "nobody's HOME"
            );
        } else {
            assert!(error_of(found).contains("need shs to run as root"));
        }
    }

    #[test]
    fn bad_manifests_say_what_is_wrong() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("f");
        write(&dir, "main.py", "");
        for (text, needle) in [
            ("timeout = \"x\"", "invalid type"),
            ("concurency = 2", "unknown field"),
            ("instances = 0", "at least 1"),
            ("concurrency = 0", "at least 1"),
            ("timeout = -1", "between 0 and 86400"),
            ("command = []", "must not be empty"),
            ("mode = \"batch\"", "unknown variant"),
            ("subscribe = [\"a..b\"]", "empty token"),
            ("env = { \"A=B\" = \"x\" }", "not a valid variable name"),
            ("min_instances = 5\ninstances = 2", "more than `instances`"),
            ("idle_timeout = -1", "idle_timeout"),
            ("[limits]\nmemory = \"lots\"", "limits.memory"),
            ("[limits]\nopen_files = 0", "at least 1"),
            ("[limits]\nswap = 1", "unknown field"),
            ("max_attempts = 0", "at least 1"),
            ("retry_backoff = 0", "retry_backoff"),
            ("start_timeout = 0", "start_timeout"),
            ("this is not toml", "function.toml"),
        ] {
            write(&dir, "function.toml", text);
            let error = error_of(read_function("f", &dir, &defaults()));
            assert!(error.contains(needle), "{text:?}: {error}");
            assert!(error.contains("function.toml"), "{text:?}: {error}");
        }
    }

    #[test]
    fn scanning_skips_what_is_not_a_function() {
        let tmp = tempfile::tempdir().expect("tempdir");
        write(&tmp.path().join("good"), "main.sh", "");
        write(&tmp.path().join("bad name"), "main.sh", "");
        write(&tmp.path().join(".hidden"), "main.sh", "");
        fs::create_dir(tmp.path().join("empty")).expect("mkdir");
        fs::write(tmp.path().join("file.txt"), "").expect("write");
        let found = scan(tmp.path(), &defaults()).expect("scan");
        assert_eq!(found.keys().collect::<Vec<_>>(), ["good"]);
    }

    #[test]
    fn the_fingerprint_sees_edits() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("f");
        write(&dir, "main.sh", "echo 1");
        let a = read_function("f", &dir, &defaults()).expect("found");
        let b = read_function("f", &dir, &defaults()).expect("found");
        assert!(a.same_as(&b));
        write(&dir, "main.sh", "echo 12");
        let c = read_function("f", &dir, &defaults()).expect("found");
        assert!(!a.same_as(&c));
        write(&dir, "function.toml", "timeout = 3");
        let d = read_function("f", &dir, &defaults()).expect("found");
        assert!(!c.same_as(&d));
        write(&dir, "function.toml", "command = [\"python3\", \"app.py\"]");
        write(&dir, "app.py", "print(1)");
        let e = read_function("f", &dir, &defaults()).expect("found");
        write(&dir, "app.py", "print(12)");
        let f = read_function("f", &dir, &defaults()).expect("found");
        assert!(!e.same_as(&f), "a script named in `command` is watched too");
    }

    #[test]
    fn the_environment_is_clean() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("f");
        write(
            &dir,
            "function.toml",
            "command = [\"true\"]\nenv = { A = \"1\" }",
        );
        let spec = spec_of(read_function("f", &dir, &defaults()));
        let env = environment(&spec, false, "http://127.0.0.1:1");
        assert_eq!(env.get("A").map(String::as_str), Some("1"));
        assert_eq!(env.get("SHS_FUNCTION").map(String::as_str), Some("f"));
        assert_eq!(
            env.get("SHS_URL").map(String::as_str),
            Some("http://127.0.0.1:1")
        );
        assert!(env.contains_key("PATH"));
        let allowed = [
            "PATH",
            "HOME",
            "LANG",
            "TZ",
            "PYTHONUNBUFFERED",
            "A",
            "SHS_FUNCTION",
            "SHS_URL",
        ];
        for key in env.keys() {
            assert!(
                allowed.contains(&key.as_str()),
                "{key} leaked in from the supervisor"
            );
        }
    }
}
