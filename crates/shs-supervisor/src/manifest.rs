//! `function.toml`: its keys (serde types, unknown keys refused) and their validation.
//!
//! Every key is optional. [`build_spec`] checks each against its bounds, fills what
//! is left out from the [`Defaults`] (and the manifest-only [`defaults`]),
//! resolves the user to run as and the program to run, and builds the [`FunctionSpec`]. An
//! invalid manifest is a [`SpecError::Manifest`] naming the file and what is wrong with it.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use crate::defaults;
use crate::error::SpecError;
use crate::spec::{
    DEFAULT_PATH, Defaults, Fingerprint, FunctionSpec, Limits, Mode, RunAs, Source, Webhook,
    WebhookKind, parse_size,
};

/// Longest `timeout` and `start_timeout`, in seconds: a day.
const MAX_TIMEOUT: f64 = 86_400.0;
/// Longest `retry_backoff`, in seconds: an hour.
const MAX_RETRY_BACKOFF: f64 = 3_600.0;
/// Longest `idle_timeout`, in seconds: a year.
const MAX_IDLE_TIMEOUT: f64 = 31_536_000.0;

/// The keys of `function.toml`, all optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Manifest {
    command: Option<Vec<String>>,
    mode: Option<Mode>,
    timeout: Option<f64>,
    subscribe: Option<Vec<String>>,
    publishes: Option<Vec<String>>,
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
    raw_body: Option<bool>,
    start_timeout: Option<f64>,
    secrets: Option<Vec<String>>,
    webhook: Option<WebhookManifest>,
    schedule: Option<Vec<ScheduleManifest>>,
}

/// One `[[schedule]]` of `function.toml`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ScheduleManifest {
    cron: String,
    timezone: Option<String>,
    input: Option<toml::Value>,
    catch_up: Option<String>,
}

/// The most schedules a function may have.
pub(crate) const MAX_SCHEDULES: usize = 64;

/// The `[webhook]` table of `function.toml`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct WebhookManifest {
    kind: WebhookKind,
    secret: String,
    header: Option<String>,
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

impl Manifest {
    /// Reads the text of `path`.
    pub(crate) fn parse(text: &str, path: &Path) -> Result<Manifest, SpecError> {
        toml::from_str(text).map_err(|e| SpecError::Manifest {
            path: path.to_owned(),
            message: e.message().to_owned(),
        })
    }

    /// The `command` it gives, if it does.
    pub(crate) fn command(&self) -> Option<&[String]> {
        self.command.as_deref()
    }
}

/// A duration in seconds, more than 0 and at most `max`, for `key`.
fn seconds(value: Option<f64>, key: &str, max: f64) -> Result<Option<Duration>, String> {
    match value {
        None => Ok(None),
        Some(t) if t.is_finite() && t > 0.0 && t <= max => Ok(Some(Duration::from_secs_f64(t))),
        Some(t) => Err(format!(
            "`{key}` must be between 0 and {max} seconds, not {t}"
        )),
    }
}

/// Checks the manifest of function `name` in `dir` and builds its spec; `entry` is the
/// conventional file found in the folder, and the command that runs it.
pub(crate) fn build_spec(
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
    let timeout = seconds(manifest.timeout, "timeout", MAX_TIMEOUT)
        .map_err(invalid)?
        .unwrap_or(defaults.timeout);
    let start_timeout = seconds(manifest.start_timeout, "start_timeout", MAX_TIMEOUT)
        .map_err(invalid)?
        .unwrap_or(timeout);
    let instances = match manifest.instances {
        None => defaults.instances,
        Some(n) => between(n, 1, MAX_INSTANCES, "instances").map_err(invalid)?,
    };
    let concurrency = match manifest.concurrency {
        None => defaults::CONCURRENCY,
        Some(n) => between(n, 1, MAX_CONCURRENCY, "concurrency").map_err(invalid)?,
    };
    let queue = match manifest.queue {
        None => defaults.queue,
        Some(n) => between(n, 0, MAX_QUEUE, "queue").map_err(invalid)?,
    };
    let idle_timeout = match manifest.idle_timeout {
        None => defaults.idle_timeout,
        Some(0.0) => None,
        Some(t) if t.is_finite() && t > 0.0 && t <= MAX_IDLE_TIMEOUT => {
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
    let retry_backoff = seconds(manifest.retry_backoff, "retry_backoff", MAX_RETRY_BACKOFF)
        .map_err(invalid)?
        .unwrap_or(defaults.retry_backoff);
    let subscribe = manifest.subscribe.unwrap_or_default();
    if subscribe.len() > shs_bus::MAX_SUBSCRIPTIONS_PER_FUNCTION {
        return Err(invalid(format!(
            "`subscribe` lists {} patterns; a function may have at most {}",
            subscribe.len(),
            shs_bus::MAX_SUBSCRIPTIONS_PER_FUNCTION
        )));
    }
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
            .unwrap_or_else(|| DEFAULT_PATH.to_owned());
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
    let publishes = manifest.publishes.unwrap_or_default();
    if publishes.len() > crate::prewarm::MAX_TYPES_PER_FUNCTION {
        return Err(invalid(format!(
            "`publishes` lists {} types; a function may list at most {}",
            publishes.len(),
            crate::prewarm::MAX_TYPES_PER_FUNCTION
        )));
    }
    for event_type in &publishes {
        shs_bus::validate_type(event_type).map_err(|e| invalid(format!("`publishes`: {e}")))?;
    }
    let secrets = manifest.secrets.unwrap_or_default();
    for secret in &secrets {
        crate::secrets::validate_secret_name(secret)
            .map_err(|e| invalid(format!("`secrets`: {e}")))?;
    }
    let webhook = match manifest.webhook {
        None => None,
        Some(w) => {
            crate::secrets::validate_secret_name(&w.secret)
                .map_err(|e| invalid(format!("`webhook.secret`: {e}")))?;
            let header = match (w.kind, w.header) {
                (WebhookKind::HmacSha256, Some(h)) => {
                    if h.is_empty()
                        || !h
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                    {
                        return Err(invalid(format!(
                            "`webhook.header`: {h:?} is not a header name"
                        )));
                    }
                    h
                }
                (WebhookKind::HmacSha256, None) => WebhookKind::HmacSha256.default_header().into(),
                (kind, Some(_)) => {
                    return Err(invalid(format!(
                        "`webhook.header` is only for kind \"hmac-sha256\"; {} signs in {}",
                        kind.as_str(),
                        kind.default_header()
                    )));
                }
                (kind, None) => kind.default_header().into(),
            };
            Some(Webhook {
                kind: w.kind,
                secret: w.secret,
                header,
            })
        }
    };
    let schedule = manifest.schedule.unwrap_or_default();
    if schedule.len() > MAX_SCHEDULES {
        return Err(invalid(format!(
            "{} `[[schedule]]` tables; a function may have at most {MAX_SCHEDULES}",
            schedule.len()
        )));
    }
    let mut schedules = Vec::with_capacity(schedule.len());
    for (n, s) in schedule.into_iter().enumerate() {
        let input = s
            .input
            .map(serde_json::to_value)
            .transpose()
            .map_err(|e| invalid(format!("`[[schedule]]` {}: `input`: {e}", n + 1)))?;
        let parsed = crate::schedule::Schedule::new(
            &s.cron,
            s.timezone.as_deref(),
            input,
            s.catch_up.as_deref(),
        )
        .map_err(|e| invalid(format!("`[[schedule]]` {}: {e}", n + 1)))?;
        schedules.push(Arc::new(parsed));
    }
    Ok(FunctionSpec {
        schedules,
        name: name.to_owned(),
        dir: dir.to_owned(),
        command,
        mode: manifest.mode.unwrap_or(Mode::Rpc),
        timeout,
        start_timeout,
        subscribe,
        env,
        instances,
        instances_source: if manifest.instances.is_some() {
            Source::Manifest
        } else {
            Source::Default
        },
        concurrency,
        concurrency_source: if manifest.concurrency.is_some() {
            Source::Manifest
        } else {
            Source::Default
        },
        queue,
        min_instances: manifest.min_instances.map(|m| m.min(instances)),
        idle_timeout,
        limits,
        run_as,
        max_attempts,
        retry_backoff,
        ordered: manifest.ordered.unwrap_or(defaults::ORDERED),
        secrets,
        publishes,
        webhook,
        secrets_folder: None,
        raw_body: manifest.raw_body.unwrap_or(false),
        fingerprint: Fingerprint::default(),
    })
}

/// The most processes `instances` may ask for (in `function.toml` or declared).
pub(crate) const MAX_INSTANCES: usize = 4096;
/// The most requests `concurrency` may put on one process at once (in `function.toml` or
/// declared).
pub(crate) const MAX_CONCURRENCY: usize = 65_536;
/// The most requests `queue` may let wait.
const MAX_QUEUE: usize = 1 << 20;

/// `value` of `key`, if it is from `min` to `max`.
fn between(value: usize, min: usize, max: usize, key: &str) -> Result<usize, String> {
    if value < min {
        Err(format!("`{key}` must be at least {min}"))
    } else if value > max {
        Err(format!("`{key}` must be at most {max}, not {value}"))
    } else {
        Ok(value)
    }
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
/// the supervisor to run as root, unless it is the user it already runs as. `group` alone is
/// refused: it would run the function as the supervisor's user (root) with another group.
fn resolve_user(user: Option<&str>, group: Option<&str>) -> Result<Option<RunAs>, String> {
    use nix::unistd::{Gid, Group, Uid, User};
    match (user, group) {
        (None, None) => return Ok(None),
        (None, Some(_)) => {
            return Err(
                "`group` needs `user`: without it the function would run as shs's own user \
                 (root) with another group"
                    .to_owned(),
            );
        }
        _ => {}
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
