//! Functions on disk: names, `function.toml`, and what to run.
//!
//! A function named NAME is a folder `NAME` in the functions folder holding, in this order of
//! precedence, a `function.toml` with a `command`, an executable `main`, or one of `main.py`,
//! `main.js`, `main.sh` (run with `python3`, `node`, `sh`). A `function.toml` without
//! `command` adds its settings to whichever `main` is there.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde::Deserialize;

use crate::error::SpecError;

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
}

impl Mode {
    /// `"rpc"` or `"exec"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Rpc => "rpc",
            Mode::Exec => "exec",
        }
    }
}

/// The keys of `function.toml`, all optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Manifest {
    command: Option<Vec<String>>,
    mode: Option<Mode>,
    timeout: Option<f64>,
    subscribe: Option<Vec<String>>,
    env: Option<BTreeMap<String, String>>,
    instances: Option<usize>,
    concurrency: Option<usize>,
    queue: Option<usize>,
    min_instances: Option<usize>,
    idle_timeout: Option<f64>,
    limits: Option<LimitsManifest>,
    user: Option<String>,
    group: Option<String>,
    max_attempts: Option<u32>,
    retry_backoff: Option<f64>,
    ordered: Option<bool>,
    start_timeout: Option<f64>,
}

/// The `[limits]` table of `function.toml`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct LimitsManifest {
    memory: Option<Size>,
    cpu_seconds: Option<u64>,
    open_files: Option<u64>,
    processes: Option<u64>,
}

/// A size: a number of bytes, or a string like `"256MiB"`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Size {
    Bytes(u64),
    Text(String),
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
    fn or(self, defaults: Limits) -> Limits {
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
    /// Requests in flight per process.
    pub concurrency: usize,
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
    /// What a change on disk is detected by.
    pub fingerprint: Fingerprint,
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
    let parsed: Result<Manifest, SpecError> = match &manifest_text {
        Some(text) => toml::from_str(text).map_err(|e| SpecError::Manifest {
            path: manifest_path,
            message: e.message().to_owned(),
        }),
        None => Ok(Manifest::default()),
    };
    // The files whose change is a redeploy: the main file, and the files of the function's
    // folder that its `command` names (a script given to an interpreter, say).
    let mut files: Vec<PathBuf> = entry.iter().map(|(path, _)| path.clone()).collect();
    if let Ok(Manifest {
        command: Some(command),
        ..
    }) = &parsed
    {
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

fn build_spec(
    name: &str,
    dir: &Path,
    manifest: Manifest,
    entry: Option<(PathBuf, Vec<String>)>,
    defaults: &Defaults,
) -> Result<FunctionSpec, SpecError> {
    let invalid = |message: String| SpecError::Manifest {
        path: dir.join("function.toml"),
        message,
    };
    let command = match (manifest.command, entry) {
        (Some(command), _) => {
            let Some(program) = command.first() else {
                return Err(invalid("`command` must not be empty".into()));
            };
            // A relative path with a slash means a file of the function's own folder.
            let mut command = command.clone();
            if program.contains('/') && !program.starts_with('/') {
                command[0] = dir.join(program).to_string_lossy().into_owned();
            }
            command
        }
        (None, Some((path, command))) => {
            if command.len() == 1 {
                let mode = fs::metadata(&path)
                    .map(|m| m.permissions().mode())
                    .unwrap_or(0);
                if mode & 0o111 == 0 {
                    return Err(SpecError::NotExecutable { path });
                }
            }
            command
        }
        (None, None) => {
            return Err(SpecError::NothingToRun {
                dir: dir.to_owned(),
            });
        }
    };
    let timeout = match manifest.timeout {
        None => defaults.timeout,
        Some(t) if t.is_finite() && t > 0.0 && t <= 86_400.0 => Duration::from_secs_f64(t),
        Some(t) => {
            return Err(invalid(format!(
                "`timeout` must be between 0 and 86400 seconds, not {t}"
            )));
        }
    };
    let start_timeout = match manifest.start_timeout {
        None => timeout,
        Some(t) if t.is_finite() && t > 0.0 && t <= 86_400.0 => Duration::from_secs_f64(t),
        Some(t) => {
            return Err(invalid(format!(
                "`start_timeout` must be between 0 and 86400 seconds, not {t}"
            )));
        }
    };
    let instances = match manifest.instances {
        None => defaults.instances,
        Some(0) => return Err(invalid("`instances` must be at least 1".into())),
        Some(n) => n,
    };
    let concurrency = match manifest.concurrency {
        None => 1,
        Some(0) => return Err(invalid("`concurrency` must be at least 1".into())),
        Some(n) => n,
    };
    let queue = manifest.queue.unwrap_or(defaults.queue);
    let idle_timeout = match manifest.idle_timeout {
        None => defaults.idle_timeout,
        Some(0.0) => None,
        Some(t) if t.is_finite() && t > 0.0 && t <= 31_536_000.0 => {
            Some(Duration::from_secs_f64(t))
        }
        Some(t) => {
            return Err(invalid(format!(
                "`idle_timeout` must be 0 (never) or a number of seconds, not {t}"
            )));
        }
    };
    if let (Some(min), Some(max)) = (manifest.min_instances, manifest.instances)
        && min > max
    {
        return Err(invalid(format!(
            "`min_instances` ({min}) is more than `instances` ({max})"
        )));
    }
    let limits = match manifest.limits {
        None => Limits::default(),
        Some(l) => Limits {
            memory: match l.memory {
                None => None,
                Some(Size::Bytes(0)) => {
                    return Err(invalid("`limits.memory` must be more than 0".into()));
                }
                Some(Size::Bytes(n)) => Some(n),
                Some(Size::Text(t)) => {
                    Some(parse_size(&t).map_err(|e| invalid(format!("`limits.memory`: {e}")))?)
                }
            },
            cpu_seconds: at_least_one(l.cpu_seconds, "limits.cpu_seconds").map_err(&invalid)?,
            open_files: at_least_one(l.open_files, "limits.open_files").map_err(&invalid)?,
            processes: at_least_one(l.processes, "limits.processes").map_err(&invalid)?,
        },
    }
    .or(defaults.limits);
    let run_as =
        resolve_user(manifest.user.as_deref(), manifest.group.as_deref()).map_err(invalid)?;
    let max_attempts = match manifest.max_attempts {
        Some(0) => return Err(invalid("`max_attempts` must be at least 1".into())),
        Some(n) => n,
        None => defaults.max_attempts,
    };
    let retry_backoff = match manifest.retry_backoff {
        None => defaults.retry_backoff,
        Some(t) if t.is_finite() && t > 0.0 && t <= 3600.0 => Duration::from_secs_f64(t),
        Some(t) => {
            return Err(invalid(format!(
                "`retry_backoff` must be between 0 and 3600 seconds, not {t}"
            )));
        }
    };
    let subscribe = manifest.subscribe.unwrap_or_default();
    for pattern in &subscribe {
        shs_bus::validate_pattern(pattern).map_err(|e| invalid(format!("`subscribe`: {e}")))?;
    }
    let env = manifest.env.unwrap_or_default();
    // A bare program name is looked up in PATH once, now: spawning a process by its full path
    // lets the OS use posix_spawn instead of fork, which matters for a process per request.
    // (Not for a function run as another user: the child searches PATH as that user.)
    let mut command = command;
    if !command[0].contains('/') && run_as.is_none() {
        let path = env
            .get("PATH")
            .cloned()
            .or_else(|| std::env::var("PATH").ok())
            .unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".to_owned());
        if let Some(found) = find_program(&command[0], &path) {
            command[0] = found.to_string_lossy().into_owned();
        }
    }
    for key in env.keys() {
        if key.is_empty() || key.contains('=') || key.contains('\0') {
            return Err(invalid(format!(
                "`env`: {key:?} is not a valid variable name"
            )));
        }
    }
    Ok(FunctionSpec {
        name: name.to_owned(),
        dir: dir.to_owned(),
        command,
        mode: manifest.mode.unwrap_or(Mode::Rpc),
        timeout,
        start_timeout,
        subscribe,
        env,
        instances,
        concurrency,
        queue,
        min_instances: manifest.min_instances.map(|m| m.min(instances)),
        idle_timeout,
        limits,
        run_as,
        max_attempts,
        retry_backoff,
        ordered: manifest.ordered.unwrap_or(true),
        fingerprint: Fingerprint::default(),
    })
}

fn at_least_one(value: Option<u64>, key: &str) -> Result<Option<u64>, String> {
    match value {
        Some(0) => Err(format!("`{key}` must be at least 1")),
        other => Ok(other),
    }
}

/// The first executable file named `program` in the folders of `path`.
fn find_program(program: &str, path: &str) -> Option<PathBuf> {
    path.split(':')
        .filter(|dir| !dir.is_empty())
        .find_map(|dir| {
            let candidate = Path::new(dir).join(program);
            let meta = fs::metadata(&candidate).ok()?;
            (meta.is_file() && meta.permissions().mode() & 0o111 != 0).then_some(candidate)
        })
}

/// Looks up `user` (and `group`) to run as; `None` when neither is set. Switching user needs
/// the supervisor to run as root, unless it is the user it already runs as.
fn resolve_user(user: Option<&str>, group: Option<&str>) -> Result<Option<RunAs>, String> {
    use nix::unistd::{Gid, Group, Uid, User};
    if user.is_none() && group.is_none() {
        return Ok(None);
    }
    let (uid, mut gid, home) = match user {
        Some(name) => match User::from_name(name) {
            Ok(Some(u)) => (u.uid, u.gid, Some(u.dir)),
            Ok(None) => return Err(format!("`user`: there is no user {name:?}")),
            Err(e) => return Err(format!("`user`: cannot look up {name:?}: {e}")),
        },
        None => (Uid::current(), Gid::current(), None),
    };
    if let Some(name) = group {
        gid = match Group::from_name(name) {
            Ok(Some(g)) => g.gid,
            Ok(None) => return Err(format!("`group`: there is no group {name:?}")),
            Err(e) => return Err(format!("`group`: cannot look up {name:?}: {e}")),
        };
    }
    let me = Uid::effective();
    if !me.is_root() && (uid != me || gid != Gid::effective()) {
        return Err("`user` and `group` need shs to run as root".to_owned());
    }
    Ok(Some(RunAs {
        uid: uid.as_raw(),
        gid: gid.as_raw(),
        home,
    }))
}

/// The environment a function runs in: `PATH`, `HOME`, `LANG`, `TZ` from the supervisor's own
/// environment (all of it when `inherit` is set), `PYTHONUNBUFFERED=1`, the function's `env`,
/// and `SHS_FUNCTION` and `SHS_URL`.
pub fn environment(
    spec: &FunctionSpec,
    inherit: bool,
    server_url: &str,
) -> HashMap<String, String> {
    let mut env: HashMap<String, String> = if inherit {
        std::env::vars().collect()
    } else {
        ["PATH", "HOME", "LANG", "TZ"]
            .into_iter()
            .filter_map(|k| std::env::var(k).ok().map(|v| (k.to_owned(), v)))
            .collect()
    };
    env.entry("PATH".into())
        .or_insert_with(|| "/usr/local/bin:/usr/bin:/bin".into());
    if let Some(home) = spec.run_as.as_ref().and_then(|r| r.home.as_ref()) {
        env.insert("HOME".into(), home.to_string_lossy().into_owned());
    }
    env.insert("PYTHONUNBUFFERED".into(), "1".into());
    env.extend(spec.env.iter().map(|(k, v)| (k.clone(), v.clone())));
    env.insert("SHS_FUNCTION".into(), spec.name.clone());
    env.insert("SHS_URL".into(), server_url.to_owned());
    env
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defaults() -> Defaults {
        Defaults {
            timeout: Duration::from_secs(30),
            instances: 4,
            queue: 64,
            idle_timeout: Some(Duration::from_secs(300)),
            limits: Limits::default(),
            max_attempts: 5,
            retry_backoff: Duration::from_secs(1),
        }
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
        write(&dir, "function.toml", "group = \"no-such-group-here\"\n");
        assert!(error_of(read_function("f", &dir, &defaults())).contains("there is no group"));
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
