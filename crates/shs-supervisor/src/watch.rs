//! Following the functions folder: a file watcher, debounced, with a periodic rescan as a
//! safety net (a watcher can miss events, e.g. when the kernel's queue overflows).
//!
//! Only changes that can change a deployment wake the watcher: a function folder appearing or
//! going, and the files that define a function (`main*`, `function.toml`, and the files of its
//! folder that its `command` names). A function that writes into its own folder (a cache, a
//! log, `received.log`) therefore costs nothing. The debounce waits for a quiet spell but
//! never more than [`MAX_DEBOUNCE`], and the periodic rescan runs on its own timer: nothing a
//! function writes can hold up a deploy.

use std::collections::HashMap;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use notify::{EventKind, RecursiveMode, Watcher as _};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};

/// How long the folder must be quiet before a change is acted on: `mkdir` and `cp` come in
/// quick succession, and a file being copied changes many times.
const DEBOUNCE: Duration = Duration::from_millis(150);
/// The longest a change waits for a quiet spell: changes that keep coming (a file being
/// rewritten every few milliseconds) are acted on at least this often.
const MAX_DEBOUNCE: Duration = Duration::from_secs(1);
/// How often the folder is rescanned anyway, when the watcher works.
const SAFETY_RESCAN: Duration = Duration::from_secs(5);
/// How often the folder is rescanned when no watcher could be set up.
const POLL_RESCAN: Duration = Duration::from_secs(1);

/// Follows a folder until dropped.
pub(crate) struct FolderWatch {
    _watcher: Option<notify::RecommendedWatcher>,
    tasks: [JoinHandle<()>; 2],
}

impl Drop for FolderWatch {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Calls `on_change` after each burst of relevant changes under `dir` (see the module's
/// comment), and every few seconds whatever happens. The loops end when `on_change` returns
/// `None` (its owner is gone).
pub(crate) fn follow(
    dir: &Path,
    handle: &tokio::runtime::Handle,
    on_change: impl Fn() -> Option<BoxFuture<'static, ()>> + Send + Sync + 'static,
) -> FolderWatch {
    let on_change = Arc::new(on_change);
    let (tx, mut rx) = mpsc::channel::<()>(1);
    let root = dir.to_owned();
    let mut commands = Commands::default();
    let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let relevant = match &event {
            Ok(e) => relevant(&root, e, &mut commands),
            Err(_) => true,
        };
        if relevant {
            // A full channel already holds a wake-up: nothing is lost.
            let _ = tx.try_send(());
        }
    })
    .and_then(|mut w| w.watch(dir, RecursiveMode::Recursive).map(|()| w));
    let (watcher, every) = match watcher {
        Ok(w) => (Some(w), SAFETY_RESCAN),
        Err(e) => {
            tracing::warn!(dir = %dir.display(), "cannot watch the functions folder ({e}); rescanning it every second instead");
            (None, POLL_RESCAN)
        }
    };
    let changes = {
        let on_change = on_change.clone();
        handle.spawn(async move {
            // Ends when the watcher is gone; the periodic rescan goes on.
            while rx.recv().await.is_some() {
                settle(&mut rx).await;
                match on_change() {
                    Some(rescan) => rescan.await,
                    None => return,
                }
            }
        })
    };
    let periodic = handle.spawn(async move {
        let mut timer = tokio::time::interval_at(Instant::now() + every, every);
        timer.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            timer.tick().await;
            match on_change() {
                Some(rescan) => rescan.await,
                None => return,
            }
        }
    });
    FolderWatch {
        _watcher: watcher,
        tasks: [changes, periodic],
    }
}

/// Waits after a wake-up until no other comes for [`DEBOUNCE`], or [`MAX_DEBOUNCE`] has passed.
async fn settle(rx: &mut mpsc::Receiver<()>) {
    let deadline = Instant::now() + MAX_DEBOUNCE;
    loop {
        let quiet = (Instant::now() + DEBOUNCE).min(deadline);
        match tokio::time::timeout_at(quiet, rx.recv()).await {
            Ok(Some(())) if Instant::now() < deadline => {}
            _ => return,
        }
    }
}

/// The files of each function's folder that its `function.toml`'s `command` names, relative to
/// the folder; read when first needed, forgotten when `function.toml` or the folder changes.
#[derive(Default)]
struct Commands(HashMap<String, Vec<PathBuf>>);

impl Commands {
    fn names(&mut self, root: &Path, function: &str, file: &Path) -> bool {
        self.0
            .entry(function.to_owned())
            .or_insert_with(|| command_files(&root.join(function)))
            .iter()
            .any(|named| named == file)
    }
}

/// The files of `folder` that its `function.toml`'s `command` names (relative, normalised).
fn command_files(folder: &Path) -> Vec<PathBuf> {
    #[derive(serde::Deserialize)]
    struct Command {
        command: Option<Vec<String>>,
    }
    let command = std::fs::read_to_string(folder.join("function.toml"))
        .ok()
        .and_then(|text| toml::from_str::<Command>(&text).ok())
        .and_then(|c| c.command)
        .unwrap_or_default();
    command
        .iter()
        .filter_map(|arg| {
            let path = Path::new(arg);
            let relative = if path.is_absolute() {
                path.strip_prefix(folder).ok()?
            } else {
                path
            };
            normalised(relative)
        })
        .collect()
}

/// A relative path without `.`; `None` if it leaves the folder or is empty.
fn normalised(path: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::Normal(part) => out.push(part),
            Component::CurDir => {}
            _ => return None,
        }
    }
    (!out.as_os_str().is_empty()).then_some(out)
}

/// Whether a file-system event under `root` can change a deployment.
fn relevant(root: &Path, event: &notify::Event, commands: &mut Commands) -> bool {
    if matches!(event.kind, EventKind::Access(_)) {
        return false;
    }
    // The kernel dropped events (or the watcher could not say what changed): look again.
    if event.need_rescan() || event.paths.is_empty() {
        return true;
    }
    event
        .paths
        .iter()
        .any(|path| relevant_path(root, path, commands))
}

fn relevant_path(root: &Path, path: &Path, commands: &mut Commands) -> bool {
    let Ok(inside) = path.strip_prefix(root) else {
        // Not under the folder as we know it: be safe.
        return true;
    };
    let mut parts = inside.components();
    let Some(Component::Normal(function)) = parts.next() else {
        // The folder itself.
        return true;
    };
    let Some(function) = function.to_str() else {
        return false;
    };
    if function.starts_with('.') {
        return false;
    }
    let file = parts.as_path();
    if file.as_os_str().is_empty() {
        // A function folder appeared, went, or was renamed.
        commands.0.remove(function);
        return true;
    }
    if file == Path::new("function.toml") {
        commands.0.remove(function);
        return true;
    }
    let defines = file.components().count() == 1
        && file.to_str().is_some_and(|name| name.starts_with("main"));
    defines || commands.names(root, function, file)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(kind: EventKind, path: PathBuf) -> notify::Event {
        notify::Event::new(kind).add_path(path)
    }

    #[test]
    fn only_what_defines_a_function_is_relevant() {
        let root = tempfile::tempdir().expect("temp dir");
        let root = root.path();
        let f = root.join("f");
        std::fs::create_dir(&f).expect("folder");
        std::fs::write(
            f.join("function.toml"),
            "command = [\"python3\", \"./app/server.py\", \"--flag\", \"/etc/passwd\"]\n",
        )
        .expect("manifest");
        let modify = EventKind::Modify(notify::event::ModifyKind::Any);
        let mut commands = Commands::default();
        let mut is = |path: PathBuf| relevant(root, &event(modify, path), &mut commands);

        assert!(is(root.to_owned()), "the folder itself");
        assert!(is(root.join("g")), "a function folder");
        assert!(is(f.join("main.py")));
        assert!(is(f.join("main")));
        assert!(is(f.join("function.toml")));
        assert!(is(f.join("app/server.py")), "named in command");

        assert!(!is(f.join("tick")), "a file the function writes");
        assert!(!is(f.join("received.log")));
        assert!(!is(f.join("app/other.py")));
        assert!(
            !is(f.join("data/main.py")),
            "main* counts in the folder only"
        );
        assert!(!is(root.join(".hidden/main.py")));

        // Access is never relevant; a watcher that lost events always is.
        let access = EventKind::Access(notify::event::AccessKind::Any);
        assert!(!relevant(
            root,
            &event(access, f.join("main.py")),
            &mut commands
        ));
        let lost = notify::Event::new(EventKind::Other).set_flag(notify::event::Flag::Rescan);
        assert!(relevant(root, &lost, &mut commands));

        // A new command is read again after function.toml changes.
        std::fs::write(f.join("function.toml"), "command = [\"./run.sh\"]\n").expect("manifest");
        assert!(relevant(
            root,
            &event(modify, f.join("function.toml")),
            &mut commands
        ));
        assert!(relevant(
            root,
            &event(modify, f.join("run.sh")),
            &mut commands
        ));
        assert!(!relevant(
            root,
            &event(modify, f.join("app/server.py")),
            &mut commands
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn the_debounce_ends_while_changes_keep_coming() {
        let (tx, mut rx) = mpsc::channel::<()>(1);
        let writer = tokio::spawn(async move {
            loop {
                let _ = tx.try_send(());
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        });
        rx.recv().await;
        let began = Instant::now();
        settle(&mut rx).await;
        // Virtual time: exactly the cap, not a measurement.
        assert_eq!(began.elapsed(), MAX_DEBOUNCE);
        writer.abort();

        // One change, then quiet: acted on after the quiet spell.
        let (tx, mut rx) = mpsc::channel::<()>(1);
        tx.try_send(()).expect("room");
        rx.recv().await;
        let began = Instant::now();
        settle(&mut rx).await;
        assert_eq!(began.elapsed(), DEBOUNCE);
    }
}
