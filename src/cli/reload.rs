//! Live reload for `lookout run`: on SIGHUP, or when a configuration file
//! changes (inotify through the `notify` crate, on the folders holding the
//! files, so an editor's rename-over and Kubernetes' swap of the `..data`
//! symlink in a ConfigMap volume are both seen), the configuration is loaded
//! and validated again off the runtime's threads. A refused configuration
//! changes nothing: its errors go to the log (file, line and key, as at
//! start), `/readyz` says the reload was refused and why, and
//! `lookout_config_last_reload_successful` drops to 0; the previous
//! configuration keeps running. An accepted one goes to the scheduler
//! (unchanged probes keep their task and schedule), the alerting task
//! (states kept by name; removed probes' incidents closed as `removed`),
//! the outbox (notifiers) and the live state (pages, API, metrics).
//! File events are debounced (a burst of writes is one reload) and a
//! reload whose files are byte-for-byte the same as the running ones does
//! nothing. `location`, `storage`, `server`, `scheduler` and `tracing.otlp`
//! are read only at start: a change to them is logged as needing a
//! restart. The scheduler gets only the probes the running location runs;
//! the alerting task and the live state get them all. The
//! rest of `tracing` needs nothing here: `propagate` and `vendor_header`
//! are compiled into each HTTP probe's definition (a change restarts those
//! probes' tasks like any changed probe) and `link` goes to the live state.

use std::collections::BTreeSet;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::alert::outbox::OutboxHandle;
use crate::alert::runner::AlertHandle;
use crate::config::{Config, ProbeSpec};
use crate::scheduler::fingerprint;
use crate::server::LiveState;

/// File events closer together than this are one change...
const DEBOUNCE: Duration = Duration::from_millis(300);
/// ...but files written without pause are reloaded this long after the
/// first event all the same.
const DEBOUNCE_MAX: Duration = Duration::from_secs(2);

/// The next SIGHUP; never, without a handler.
async fn next_hup(hup: &mut Option<tokio::signal::unix::Signal>) -> Option<()> {
    match hup.as_mut() {
        Some(h) => h.recv().await,
        None => std::future::pending().await,
    }
}

/// Where an accepted configuration goes.
pub struct Targets {
    pub live: LiveState,
    pub alerts: AlertHandle,
    pub outbox: OutboxHandle,
    pub scheduler: mpsc::UnboundedSender<Vec<Arc<ProbeSpec>>>,
}

/// What a reload did, for the log and the tests.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Change {
    pub added: usize,
    pub changed: usize,
    pub removed: usize,
    pub unchanged: usize,
}

/// Watches for reload triggers until `shutdown`; `running` is the
/// configuration the daemon started with.
pub async fn watch(main_file: PathBuf, running: Config, to: Targets, shutdown: CancellationToken) {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hup = match signal(SignalKind::hangup()) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::error!(error = %e, "cannot install the SIGHUP handler; reload on SIGHUP is off");
            None
        }
    };
    let (events_tx, mut events) = mpsc::unbounded_channel::<()>();
    let mut watcher = FileWatch::new(events_tx);
    watcher.follow(&running.files);
    let mut running = Running::of(running);
    loop {
        let trigger = tokio::select! {
            _ = shutdown.cancelled() => return,
            Some(()) = next_hup(&mut hup) => "SIGHUP",
            Some(()) = events.recv() => {
                // Debounce: wait until the files have been quiet for a
                // moment, at most DEBOUNCE_MAX after the first event; a
                // SIGHUP meanwhile reloads at once.
                let give_up = tokio::time::Instant::now() + DEBOUNCE_MAX;
                let mut trigger = "file change";
                loop {
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        Some(()) = next_hup(&mut hup) => { trigger = "SIGHUP"; break }
                        more = events.recv() => if more.is_none() { break },
                        _ = tokio::time::sleep(DEBOUNCE) => break,
                        _ = tokio::time::sleep_until(give_up) => break,
                    }
                }
                trigger
            }
        };
        let path = main_file.clone();
        let loaded = match tokio::task::spawn_blocking(move || crate::config::load(&path)).await {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(error = %e, "configuration reload task failed");
                continue;
            }
        };
        match loaded {
            Ok((cfg, warnings)) => {
                let digest = files_digest(&cfg.files);
                let refused = to
                    .live
                    .reload_error
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .is_some();
                // Unchanged files: nothing to do, unless they were refused
                // last time (then this load clears the refusal).
                if trigger == "file change" && digest == running.digest && !refused {
                    tracing::debug!("configuration files unchanged; nothing to reload");
                    continue;
                }
                for w in &warnings.0 {
                    tracing::warn!("{w}");
                }
                watcher.follow(&cfg.files);
                // TLS set-up for new probes before their first run is timed
                // (only those this instance runs).
                crate::probe::prepare(&cfg.probes_in(running.config.location.as_deref())).await;
                let (change, config) = apply(&running.config, cfg, &to);
                tracing::info!(
                    trigger,
                    added = change.added,
                    changed = change.changed,
                    removed = change.removed,
                    unchanged = change.unchanged,
                    "configuration reloaded"
                );
                running = Running { config, digest };
            }
            Err(diags) => {
                let errors: Vec<String> = diags.errors().map(|d| d.to_string()).collect();
                for e in &errors {
                    tracing::error!("{e}");
                }
                let summary = match errors.as_slice() {
                    [] => "the configuration could not be loaded".to_string(),
                    [one] => one.clone(),
                    [first, rest @ ..] => format!("{first} (and {} more errors)", rest.len()),
                };
                tracing::error!(
                    trigger,
                    errors = errors.len(),
                    "configuration reload refused; still running the previous configuration"
                );
                to.live.metrics.config_refused();
                *to.live
                    .reload_error
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(format!(
                    "{} ({trigger}): {summary}",
                    chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ")
                ));
            }
        }
    }
}

/// The configuration in force and a digest of the files it came from.
struct Running {
    config: Arc<Config>,
    digest: u64,
}

impl Running {
    fn of(config: Config) -> Running {
        Running {
            digest: files_digest(&config.files),
            config: Arc::new(config),
        }
    }
}

/// Hands `next` to everything that runs probes or shows them; returns what
/// changed against `prev`, and the configuration now in force.
pub fn apply(prev: &Config, next: Config, to: &Targets) -> (Change, Arc<Config>) {
    warn_restart_only(prev, &next);
    let change = diff(&prev.probes, &next.probes);
    // Settings read only at start stay as they were.
    let mut next = Config {
        location: prev.location.clone(),
        storage: prev.storage.clone(),
        server: prev.server.clone(),
        scheduler: prev.scheduler.clone(),
        ..next
    };
    next.tracing.otlp = prev.tracing.otlp.clone();
    *to.live
        .trace_link
        .write()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = next.tracing.link.clone();
    let next = Arc::new(next);
    let _ = to.scheduler.send(next.local_probes());
    to.live.reconfigure(&next.probes);
    to.outbox.set_notifiers(next.notifiers.clone());
    to.alerts.reconfigure(next.clone());
    to.live
        .metrics
        .config_loaded(chrono::Utc::now().timestamp(), true);
    *to.live
        .reload_error
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = None;
    (change, next)
}

/// Counts added, changed, removed and unchanged probes by name and
/// [`fingerprint`].
pub fn diff(prev: &[Arc<ProbeSpec>], next: &[Arc<ProbeSpec>]) -> Change {
    let old: std::collections::HashMap<&str, &Arc<ProbeSpec>> =
        prev.iter().map(|p| (p.name.as_str(), p)).collect();
    let mut c = Change::default();
    let mut seen = BTreeSet::new();
    for p in next {
        seen.insert(p.name.as_str());
        match old.get(p.name.as_str()) {
            None => c.added += 1,
            Some(o) if fingerprint(o) == fingerprint(p) => c.unchanged += 1,
            Some(_) => c.changed += 1,
        }
    }
    c.removed = prev
        .iter()
        .filter(|p| !seen.contains(p.name.as_str()))
        .count();
    c
}

fn warn_restart_only(prev: &Config, next: &Config) {
    if prev.location != next.location {
        tracing::warn!("`location` (or LOOKOUT_LOCATION) changed; it takes effect after a restart");
    }
    if prev.storage != next.storage {
        tracing::warn!("`storage` changed; it takes effect after a restart");
    }
    if prev.server != next.server {
        tracing::warn!("`server` changed; it takes effect after a restart");
    }
    if prev.scheduler != next.scheduler {
        tracing::warn!("`scheduler` changed; it takes effect after a restart");
    }
    if prev.tracing.otlp != next.tracing.otlp {
        tracing::warn!("`tracing.otlp` changed; it takes effect after a restart");
    }
}

/// A digest of the files' contents (a missing file counts as empty).
fn files_digest(files: &[PathBuf]) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for f in files {
        f.hash(&mut h);
        std::fs::read(f).unwrap_or_default().hash(&mut h);
    }
    h.finish()
}

/// inotify on the folders of the configuration files. Events whose file
/// could be configuration (a watched file's name, `*.yaml`, `*.yml`, or a
/// Kubernetes `..data`-style entry) are passed on; the database and its
/// journal in the same folder are not.
struct FileWatch {
    watcher: Option<notify::RecommendedWatcher>,
    dirs: BTreeSet<PathBuf>,
    names: Arc<std::sync::RwLock<BTreeSet<std::ffi::OsString>>>,
}

impl FileWatch {
    fn new(tx: mpsc::UnboundedSender<()>) -> FileWatch {
        let names: Arc<std::sync::RwLock<BTreeSet<std::ffi::OsString>>> = Arc::default();
        let seen = names.clone();
        let handler = move |res: notify::Result<notify::Event>| {
            let Ok(event) = res else { return };
            if matches!(event.kind, notify::EventKind::Access(_)) {
                return;
            }
            let names = seen
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if event.paths.iter().any(|p| could_be_config(p, &names)) {
                let _ = tx.send(());
            }
        };
        let watcher = match notify::recommended_watcher(handler) {
            Ok(w) => Some(w),
            Err(e) => {
                tracing::error!(error = %e, "cannot watch the configuration files; reload with SIGHUP");
                None
            }
        };
        FileWatch {
            watcher,
            dirs: BTreeSet::new(),
            names,
        }
    }

    /// Watches the folders of `files` (those not watched yet).
    fn follow(&mut self, files: &[PathBuf]) {
        use notify::Watcher;
        {
            let mut names = self
                .names
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            names.clear();
            names.extend(files.iter().filter_map(|f| f.file_name().map(Into::into)));
        }
        let Some(w) = self.watcher.as_mut() else {
            return;
        };
        for f in files {
            let dir = match f.parent() {
                Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
                _ => PathBuf::from("."),
            };
            if self.dirs.contains(&dir) {
                continue;
            }
            match w.watch(&dir, notify::RecursiveMode::NonRecursive) {
                Ok(()) => {
                    self.dirs.insert(dir);
                }
                Err(e) => tracing::warn!(
                    folder = %dir.display(),
                    error = %e,
                    "cannot watch this folder for configuration changes; reload with SIGHUP"
                ),
            }
        }
    }
}

fn could_be_config(path: &Path, names: &BTreeSet<std::ffi::OsString>) -> bool {
    let Some(name) = path.file_name() else {
        return false;
    };
    if names.contains(name) {
        return true;
    }
    let s = name.to_string_lossy();
    s.starts_with("..")
        || path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("yaml") || e.eq_ignore_ascii_case("yml"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probes(yaml: &str) -> Vec<Arc<ProbeSpec>> {
        crate::config::load_str(
            "t.yaml",
            yaml,
            crate::config::read::Cx::new(Box::new(|_| None)),
        )
        .unwrap_or_else(|d| panic!("{d}"))
        .0
        .probes
    }

    #[test]
    fn diff_counts_by_name_and_definition_not_position() {
        let a = probes(
            "probes:\n  - name: a\n    tcp: {host: 127.0.0.1, port: 1}\n  - name: b\n    tcp: {host: 127.0.0.1, port: 2}\n  - name: c\n    tcp: {host: 127.0.0.1, port: 3}\n",
        );
        // `b` moved down (other line), `c` changed port, `a` removed, `d` added.
        let b = probes(
            "probes:\n  - name: d\n    tcp: {host: 127.0.0.1, port: 4}\n  - name: c\n    tcp: {host: 127.0.0.1, port: 33}\n\n\n  - name: b\n    tcp: {host: 127.0.0.1, port: 2}\n",
        );
        assert_eq!(
            diff(&a, &b),
            Change {
                added: 1,
                changed: 1,
                removed: 1,
                unchanged: 1
            }
        );
    }

    #[test]
    fn only_files_that_could_be_configuration_trigger_a_reload() {
        let names: BTreeSet<std::ffi::OsString> = ["lookout.conf".into()].into_iter().collect();
        for (path, yes) in [
            ("/etc/lookout/lookout.conf", true),
            ("/etc/lookout/probes.yaml", true),
            ("/etc/lookout/x.YML", true),
            ("/etc/lookout/..data", true),
            ("/etc/lookout/..2026_12_04_15_00_00.123", true),
            ("/var/lib/lookout/lookout.db", false),
            ("/var/lib/lookout/lookout.db-wal", false),
            ("/etc/lookout/.lookout.yaml.swp", false),
        ] {
            assert_eq!(could_be_config(Path::new(path), &names), yes, "{path}");
        }
    }
}
