//! The daemon's live configuration: the file and the password file watched (notify), an edit
//! read once it has settled, and the new configuration taken only when it is valid.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::Watcher as _;
use tokio::sync::mpsc;

use super::{Shared, current};
use crate::config::{self, CertConfig, Config};
use crate::order::Agent;

/// Waits until a burst of file events is over and the file's content has stopped changing, so
/// that an edit is never read half-written.
pub(super) async fn settle(path: &Path, changes: &mut mpsc::Receiver<()>) {
    let mut last = std::fs::read(path).ok();
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        while changes.try_recv().is_ok() {}
        let now = std::fs::read(path).ok();
        if now == last {
            return;
        }
        last = now;
    }
}

/// Re-reads the configuration; keeps the old one when the new one is invalid. Returns the
/// certificates the new one changes (all of them when the API, DNS or order settings changed),
/// or `None` when it was not taken.
pub(super) fn reload(path: &Path, shared: &Shared) -> Option<Vec<String>> {
    let old = current(shared);
    let new = match config::read_on(path, config::Threads::One) {
        Ok(c) => c,
        Err(errors) => {
            for e in &errors.0 {
                tracing::error!("{e}");
            }
            tracing::error!("the new configuration is invalid; the previous one stays in force");
            return None;
        }
    };
    new.log_warnings();
    if new.store.state_dir != old.config.store.state_dir || new.store.live_dir != old.config.store.live_dir {
        tracing::error!(
            "store.state_dir and store.live_dir cannot change while certkeeper runs; restart it; the previous configuration stays in force"
        );
        return None;
    }
    let everything = new.api != old.config.api || new.dns != old.config.dns || new.order != old.config.order;
    // By name, not by a search per certificate: 100,000 certificates took minutes. The names
    // are borrowed, not copied: two configurations are in memory at this moment already.
    let was: HashMap<&str, &CertConfig> = old.config.certificates.iter().map(|c| (c.name.as_str(), c)).collect();
    let is: HashSet<&str> = new.certificates.iter().map(|c| c.name.as_str()).collect();
    let mut added: Vec<&str> = is.iter().filter(|n| !was.contains_key(*n)).copied().collect();
    let mut removed: Vec<&str> = was.keys().filter(|n| !is.contains(*n)).copied().collect();
    added.sort_unstable();
    removed.sort_unstable();
    let changed: Vec<String> = new
        .certificates
        .iter()
        .filter(|c| everything || was.get(c.name.as_str()).is_some_and(|o| *o != *c))
        .map(|c| c.name.clone())
        .collect();
    let (added, removed) = (added.join(", "), removed.join(", "));
    drop((was, is));
    match Agent::new(new) {
        Ok(agent) => {
            tracing::info!(
                %added,
                %removed,
                changed = %changed.join(", "),
                "configuration reloaded; changed certificates are tried again without waiting out their backoff; removed ones are no longer renewed, their files are left in place"
            );
            if let Ok(mut g) = shared.write() {
                *g = Arc::new(agent);
            }
            Some(changed)
        }
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "the new configuration cannot be used; the previous one stays in force");
            None
        }
    }
}

/// Watches the configuration file and the password file (their directories, so that an editor's
/// replace-by-rename is seen too).
pub(super) fn watch(path: &Path, config: &Config, tx: mpsc::Sender<()>) -> Option<notify::RecommendedWatcher> {
    let mut files: Vec<PathBuf> = vec![path.to_path_buf()];
    if let Some(pf) = config.api.password_file.clone() {
        files.push(pf);
    }
    let names: Vec<PathBuf> = files
        .iter()
        .map(|f| std::path::absolute(f).unwrap_or_else(|_| f.clone()))
        .collect();
    let watched = names.clone();
    let mut watcher = match notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        if let Ok(ev) = res
            && !ev.kind.is_access()
            && ev.paths.iter().any(|p| {
                watched
                    .iter()
                    .any(|w| p.file_name() == w.file_name() && p.parent() == w.parent())
            })
        {
            let _ = tx.try_send(());
        }
    }) {
        Ok(w) => w,
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch the configuration; send SIGHUP after editing it");
            return None;
        }
    };
    let dirs: std::collections::BTreeSet<PathBuf> =
        names.iter().filter_map(|n| n.parent().map(Path::to_path_buf)).collect();
    for d in dirs {
        if let Err(e) = watcher.watch(&d, notify::RecursiveMode::NonRecursive) {
            tracing::warn!(dir = %d.display(), error = %e, "cannot watch; send SIGHUP after editing the configuration");
        }
    }
    Some(watcher)
}
