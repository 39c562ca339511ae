//! Unix process handling: the one place a function process is spawned, and signals to its
//! process group.
//!
//! [`spawn`] starts every function process, rpc or exec: in its folder, with a clean
//! environment, in a session and process group of its own, under its resource limits and user, with all three
//! pipes. [`kill_group`] is the one graceful stop of a group (SIGTERM, a grace period, SIGKILL);
//! [`signal_group`] sends one signal, and [`reap`] waits for a leader and kills what it
//! leaves behind. A group is named by its leader's pid.

use std::collections::BTreeSet;
use std::future::Future;
use std::os::unix::process::ExitStatusExt;
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use parking_lot::Mutex;
use tokio::process::{Child, ChildStderr, ChildStdin, ChildStdout, Command};

use crate::Host;
use crate::spec::{FunctionSpec, Limits, environment};

/// A function process just started, with its pipes.
pub(crate) struct Spawned {
    /// The child, to be reaped by its owner.
    pub(crate) child: Child,
    /// Its pid, which is also its process group id.
    pub(crate) pid: u32,
    pub(crate) stdin: ChildStdin,
    pub(crate) stdout: ChildStdout,
    pub(crate) stderr: ChildStderr,
}

/// Starts a process of `spec`, with `extra_env` added to its environment. Must be called in a
/// Tokio runtime, which then owns the pipes and reaps the child. The error says what could not
/// be run, and why.
pub(crate) fn spawn<K, V>(
    spec: &FunctionSpec,
    host: &Host,
    extra_env: impl IntoIterator<Item = (K, V)>,
) -> Result<Spawned, String>
where
    K: AsRef<std::ffi::OsStr>,
    V: AsRef<std::ffi::OsStr>,
{
    let mut cmd = command(spec, host);
    cmd.envs(extra_env);
    // While orphans are reaped, a child is known as ours before it can exit.
    let mut owned = REAPING.load(Ordering::Acquire).then(|| OWNED.lock());
    let mut child = cmd.spawn().map_err(|e| {
        format!(
            "cannot run `{}` in {}: {e}",
            spec.command.join(" "),
            spec.dir.display()
        )
    })?;
    let pid = child.id().unwrap_or(0);
    if let Some(owned) = owned.as_mut() {
        owned.insert(pid);
    }
    drop(owned);
    match (child.stdin.take(), child.stdout.take(), child.stderr.take()) {
        (Some(stdin), Some(stdout), Some(stderr)) => Ok(Spawned {
            child,
            pid,
            stdin,
            stdout,
            stderr,
        }),
        // Tokio reaps the dropped child in the background.
        _ => {
            signal_group(pid, Signal::SIGKILL);
            Err("the process's pipes could not be set up".to_owned())
        }
    }
}

/// Builds the command for a function process: its folder, a clean environment, its own
/// process group, and all three pipes.
fn command(spec: &FunctionSpec, host: &Host) -> Command {
    let mut cmd = Command::new(&spec.command[0]);
    cmd.args(&spec.command[1..])
        .current_dir(&spec.dir)
        .env_clear()
        .envs(environment(
            spec,
            host.config.inherit_env,
            &host.config.server_url,
        ))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(false);
    if let Some(run_as) = &spec.run_as {
        cmd.uid(run_as.uid).gid(run_as.gid);
    }
    in_child(&mut cmd, spec.limits);
    cmd
}

/// Makes the child, between fork and exec, start a new session (so it is the leader of its
/// own session and process group, and has no controlling terminal: it cannot reach the
/// supervisor's), mark every descriptor but 0, 1 and 2 close-on-exec (so none that shs
/// inherited from its parent reaches the function), then set `limits` on itself. A limit above the supervisor's own hard limit is
/// lowered to it (only root may raise a hard limit).
///
/// `setsid` and not `process_group(0)`: a process group leader cannot start a session.
#[allow(unsafe_code)]
fn in_child(cmd: &mut Command, limits: Limits) {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let apply = move || -> std::io::Result<()> {
        nix::unistd::setsid()?;
        cloexec_from_3()?;
        if limits.is_empty() {
            return Ok(());
        }
        for (resource, value, slack) in [
            (Resource::RLIMIT_DATA, limits.memory, 0),
            // One second between SIGXCPU (soft) and SIGKILL (hard).
            (Resource::RLIMIT_CPU, limits.cpu_seconds, 1),
            (Resource::RLIMIT_NOFILE, limits.open_files, 0),
            (Resource::RLIMIT_NPROC, limits.processes, 0),
        ] {
            let Some(value) = value else { continue };
            let (_, hard) = getrlimit(resource)?;
            let soft = value.min(hard);
            setrlimit(resource, soft, soft.saturating_add(slack).min(hard))?;
        }
        Ok(())
    };
    // SAFETY: the closure runs in the child between fork and exec, where only async-signal-safe
    // functions may be called. It calls setsid(2), close_range(2) or fcntl(2), getrlimit(2) and
    // setrlimit(2), all async-signal-safe system calls, allocates nothing and takes no lock.
    unsafe {
        cmd.pre_exec(apply);
    }
}

/// Marks every descriptor from 3 up close-on-exec, in the child between fork and exec. Closing
/// them is not an option: the standard library reports a failed exec through a descriptor of
/// its own (close-on-exec already). `close_range(2)` (Linux 5.11), else `fcntl(2)` on each
/// descriptor below the soft `RLIMIT_NOFILE`, capped at 65,536.
#[allow(unsafe_code)]
fn cloexec_from_3() -> std::io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: a system call with integer arguments; it touches no memory of ours.
        let done = unsafe {
            libc::syscall(
                libc::SYS_close_range,
                3_u32,
                u32::MAX,
                libc::CLOSE_RANGE_CLOEXEC,
            )
        };
        if done == 0 {
            return Ok(());
        }
    }
    let (soft, _) = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)?;
    let last = i32::try_from(soft.min(65_536)).unwrap_or(65_536);
    for fd in 3..last {
        // SAFETY: fcntl(2) on a number that may or may not be an open descriptor: EBADF then,
        // ignored; it only changes the descriptor's flags.
        unsafe {
            libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC);
        }
    }
    Ok(())
}

/// Signals a whole process group, ignoring a group that is already gone.
pub(crate) fn signal_group(pgid: u32, signal: Signal) {
    let Ok(raw) = i32::try_from(pgid) else { return };
    if raw <= 1 {
        return;
    }
    match killpg(Pid::from_raw(raw), signal) {
        Ok(()) | Err(nix::errno::Errno::ESRCH) => {}
        Err(e) => tracing::warn!(pgid, %signal, "cannot signal process group: {e}"),
    }
}

/// Stops process group `pgid` gracefully: SIGTERM now, at the call, and SIGKILL unless
/// `exited` (the group's leader has exited) resolves within `grace`. The escalation happens
/// in the returned future, which resolves to whether the leader exited within the grace
/// period. Whatever is left of the group once its leader exits is for the leader's reaper to
/// kill.
pub(crate) fn kill_group(
    pgid: u32,
    grace: Duration,
    exited: impl Future,
) -> impl Future<Output = bool> {
    signal_group(pgid, Signal::SIGTERM);
    async move {
        if tokio::time::timeout(grace, exited).await.is_ok() {
            return true;
        }
        signal_group(pgid, Signal::SIGKILL);
        false
    }
}

/// Waits for the leader of group `pid` to exit, then kills whatever it left in its group:
/// nothing a function started outlives it (and no helper keeps its pipes open).
pub(crate) async fn reap(pid: u32, child: &mut Child) -> std::io::Result<ExitStatus> {
    let status = child.wait().await;
    signal_group(pid, Signal::SIGKILL);
    if REAPING.load(Ordering::Acquire) {
        OWNED.lock().remove(&pid);
    }
    status
}

/// Whether orphans are reaped (shs is PID 1).
static REAPING: AtomicBool = AtomicBool::new(false);
/// The pids of the function processes spawned here: their owners reap them, the orphan
/// reaper must not. Kept only while orphans are reaped.
static OWNED: Mutex<BTreeSet<u32>> = Mutex::new(BTreeSet::new());
/// How often the orphan reaper looks when no SIGCHLD comes, and the least time between looks.
const ORPHAN_SCAN: (Duration, Duration) = (Duration::from_secs(1), Duration::from_millis(100));

/// When shs runs as PID 1 (in a container), starts reaping the orphans the kernel re-parents
/// to it: a process a function started and left behind (a double fork, a daemon) becomes
/// shs's child when its parent exits, and without this would stay a zombie when it ends. The
/// function processes themselves are left to their owners. Must be called in a Tokio runtime,
/// before any function is spawned. Returns whether it reaps.
pub(crate) fn reap_orphans_if_init() -> bool {
    if std::process::id() != 1 {
        return false;
    }
    REAPING.store(true, Ordering::Release);
    let mut sigchld = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::child()) {
        Ok(signal) => Some(signal),
        Err(e) => {
            tracing::warn!("cannot watch SIGCHLD, looking for orphans every second: {e}");
            None
        }
    };
    tokio::spawn(async move {
        loop {
            match sigchld.as_mut() {
                Some(signal) => {
                    let _ = tokio::time::timeout(ORPHAN_SCAN.0, signal.recv()).await;
                }
                None => tokio::time::sleep(ORPHAN_SCAN.0).await,
            }
            let reaped = reap_orphans();
            if reaped > 0 {
                tracing::debug!(reaped, "reaped orphaned processes");
            }
            tokio::time::sleep(ORPHAN_SCAN.1).await;
        }
    });
    true
}

/// Reaps every zombie child that is not a function process; how many it reaped. Forgets the
/// owned pids that no longer exist (a child its owner dropped, reaped in the background).
fn reap_orphans() -> usize {
    use nix::sys::wait::{WaitPidFlag, waitpid};
    let me = std::process::id();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0;
    };
    let mut owned = OWNED.lock();
    let mut present = BTreeSet::new();
    let mut reaped = 0;
    for pid in entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
    {
        present.insert(pid);
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // "pid (comm) state ppid ...": comm may hold anything, so split after its last ')'.
        let Some((_, rest)) = stat.rsplit_once(") ") else {
            continue;
        };
        let mut fields = rest.split_whitespace();
        let (state, ppid) = (
            fields.next(),
            fields.next().and_then(|p| p.parse::<u32>().ok()),
        );
        if state == Some("Z") && ppid == Some(me) && !owned.contains(&pid) {
            let Ok(raw) = i32::try_from(pid) else {
                continue;
            };
            if waitpid(Pid::from_raw(raw), Some(WaitPidFlag::WNOHANG)).is_ok() {
                reaped += 1;
            }
        }
    }
    owned.retain(|pid| present.contains(pid));
    reaped
}

/// `status 1`, `signal 9 (SIGKILL)`.
pub(crate) fn describe_exit(status: &std::io::Result<ExitStatus>) -> String {
    match status {
        Ok(s) => match (s.code(), s.signal()) {
            (Some(code), _) => format!("status {code}"),
            (None, Some(sig)) => match Signal::try_from(sig) {
                Ok(name) => format!("signal {sig} ({name})"),
                Err(_) => format!("signal {sig}"),
            },
            (None, None) => "an unknown status".to_owned(),
        },
        Err(e) => format!("an unknown status ({e})"),
    }
}
