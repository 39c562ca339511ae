//! Following the functions folder: a file watcher, debounced, with a periodic rescan as a
//! safety net (a watcher can miss events, e.g. when the kernel's queue overflows).

use std::path::Path;
use std::time::Duration;

use futures::future::BoxFuture;
use notify::{EventKind, RecursiveMode, Watcher as _};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// How long the folder must be quiet before a change is acted on: `mkdir` and `cp` come in
/// quick succession, and a file being copied changes many times.
const DEBOUNCE: Duration = Duration::from_millis(150);
/// How often the folder is rescanned anyway, when the watcher works.
const SAFETY_RESCAN: Duration = Duration::from_secs(5);
/// How often the folder is rescanned when no watcher could be set up.
const POLL_RESCAN: Duration = Duration::from_secs(1);

/// Follows a folder until dropped.
pub(crate) struct FolderWatch {
    _watcher: Option<notify::RecommendedWatcher>,
    task: JoinHandle<()>,
}

impl Drop for FolderWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Calls `on_change` after each burst of changes under `dir`, and every few seconds. The loop
/// ends when `on_change` returns `None` (its owner is gone).
pub(crate) fn follow(
    dir: &Path,
    handle: &tokio::runtime::Handle,
    on_change: impl Fn() -> Option<BoxFuture<'static, ()>> + Send + 'static,
) -> FolderWatch {
    let (tx, mut rx) = mpsc::channel::<()>(1);
    let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let relevant = match &event {
            Ok(e) => !matches!(e.kind, EventKind::Access(_)),
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
    let task = handle.spawn(async move {
        loop {
            tokio::select! {
                woken = rx.recv() => {
                    if woken.is_none() {
                        // The watcher is gone; keep polling.
                        tokio::time::sleep(every).await;
                    }
                    while let Ok(Some(())) = tokio::time::timeout(DEBOUNCE, rx.recv()).await {}
                }
                () = tokio::time::sleep(every) => {}
            }
            match on_change() {
                Some(rescan) => rescan.await,
                None => return,
            }
        }
    });
    FolderWatch {
        _watcher: watcher,
        task,
    }
}
