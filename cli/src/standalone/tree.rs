//! Watches a local source tree (inotify, recursive) and says when something in it changed,
//! after a burst of changes has quietened: the source indexer then rescans that project at
//! once (hashing only what changed) instead of waiting for its next full scan.
//!
//! It must not decide what changed or read any file: it only tells that the tree is dirty.
//! A watch that cannot be set up (inotify limits, a missing directory) is the caller's to log;
//! the periodic scans go on without it.

use std::path::Path;
use std::time::Duration;

use notify::{EventKind, RecursiveMode, Watcher};
use tokio::sync::mpsc;
use tokio::time::Instant;

/// How long the tree must be quiet before a burst of changes counts as done.
pub const QUIET: Duration = Duration::from_millis(200);
/// The longest a tree that never goes quiet waits for its rescan.
pub const MOST: Duration = Duration::from_secs(1);

/// A watched tree; dropping it ends the watch.
#[derive(Debug)]
pub struct TreeWatch {
    _watcher: notify::RecommendedWatcher,
    events: mpsc::UnboundedReceiver<()>,
    dirty: Option<(Instant, Instant)>,
}

impl TreeWatch {
    /// Starts watching `root` and everything under it.
    pub fn start(root: &Path) -> Result<TreeWatch, notify::Error> {
        let (tx, events) = mpsc::unbounded_channel();
        let mut watcher = notify::recommended_watcher(move |e: notify::Result<notify::Event>| {
            let relevant = match &e {
                Ok(e) => !matches!(e.kind, EventKind::Access(_)),
                // An error (a queue overflow) may hide changes: rescan to be sure.
                Err(_) => true,
            };
            if relevant {
                let _ = tx.send(());
            }
        })?;
        watcher.watch(root, RecursiveMode::Recursive)?;
        Ok(TreeWatch {
            _watcher: watcher,
            events,
            dirty: None,
        })
    }

    /// Returns once the tree changed and has been quiet for [`QUIET`] (or changing for
    /// [`MOST`]); never when the watch ended.
    pub async fn settled(&mut self) {
        loop {
            let wake = self
                .dirty
                .map(|(first, last)| (last + QUIET).min(first + MOST));
            tokio::select! {
                event = self.events.recv() => {
                    if event.is_none() {
                        return std::future::pending().await;
                    }
                    let now = Instant::now();
                    self.dirty = Some(self.dirty.map_or((now, now), |(first, _)| (first, now)));
                }
                () = super::mirrors::sleep_until(wake) => {
                    self.dirty = None;
                    return;
                }
            }
        }
    }
}

/// [`TreeWatch::settled`] of `watch`; never ready without one.
pub async fn settled(watch: &mut Option<TreeWatch>) {
    match watch {
        Some(w) => w.settled().await,
        None => std::future::pending().await,
    }
}
