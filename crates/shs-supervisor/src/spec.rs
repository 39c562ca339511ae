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
    /// Longest time one request (or the start-up) may take.
    pub timeout: Duration,
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
    /// What a change on disk is detected by.
    pub fingerprint: Fingerprint,
}

/// The parts of a function's folder whose change means a redeploy: the `function.toml` text and
/// the size and modification time of the file that is run.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Fingerprint {
    manifest: Option<String>,
    entry: Option<(PathBuf, u64, Option<SystemTime>)>,
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
    let fingerprint = Fingerprint {
        manifest: manifest_text.clone(),
        entry: entry.as_ref().map(|(path, _)| {
            let meta = fs::metadata(path).ok();
            (
                path.clone(),
                meta.as_ref().map_or(0, |m| m.len()),
                meta.and_then(|m| m.modified().ok()),
            )
        }),
    };
    if manifest_text.is_none() && entry.is_none() {
        return None;
    }
    let broken = |error| {
        Some(Found::Broken {
            name: name.to_owned(),
            error,
            fingerprint: fingerprint.clone(),
        })
    };
    let manifest: Manifest = match &manifest_text {
        Some(text) => match toml::from_str(text) {
            Ok(m) => m,
            Err(e) => {
                return broken(SpecError::Manifest {
                    path: manifest_path,
                    message: e.message().to_owned(),
                });
            }
        },
        None => Manifest::default(),
    };
    match build_spec(name, dir, manifest, entry, defaults) {
        Ok(mut spec) => {
            spec.fingerprint = fingerprint;
            Some(Found::Function(Box::new(spec)))
        }
        Err(error) => broken(error),
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
    let subscribe = manifest.subscribe.unwrap_or_default();
    for pattern in &subscribe {
        shs_bus::validate_pattern(pattern).map_err(|e| invalid(format!("`subscribe`: {e}")))?;
    }
    let env = manifest.env.unwrap_or_default();
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
        subscribe,
        env,
        instances,
        concurrency,
        queue,
        fingerprint: Fingerprint::default(),
    })
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
        write(&dir, "main.sh", "echo");
        assert_eq!(
            spec_of(read_function("f", &dir, &defaults())).command,
            ["sh", "main.sh"]
        );
        write(&dir, "main.js", "");
        assert_eq!(
            spec_of(read_function("f", &dir, &defaults())).command,
            ["node", "main.js"]
        );
        write(&dir, "main.py", "");
        let spec = spec_of(read_function("f", &dir, &defaults()));
        assert_eq!(spec.command, ["python3", "main.py"]);
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
        assert_eq!(spec.command, ["python3", "main.py"]);
        assert_eq!(spec.timeout, Duration::from_secs(1));
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
