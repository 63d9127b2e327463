//! The outbox task: delivers every stored notice, retrying until it is
//! delivered, fails permanently or expires.
//!
//! Notices reach it through [`OutboxHandle::enqueue`], which writes them to
//! the `outbox` table (on a blocking thread, never on the runtime) *before*
//! anything is sent, then wakes the task so they go out at once. The task
//! also polls the table every `poll_interval` for retries that came due, and
//! at start, so rows left pending by a restart or a crash are sent.
//!
//! Guarantees and their limits:
//! - At least once. A row is marked `delivered` only after the notifier
//!   accepted it (SMTP 250, HTTP 2xx). A crash, kill or power cut in the
//!   narrow window after the receiver accepted and before the mark is
//!   committed leaves the row pending, and it is sent once more after the
//!   restart: the only way a notice is sent twice. Likewise a send still in
//!   flight when the shutdown grace (5 s) runs out is abandoned and retried
//!   by the next process, which duplicates it only if the receiver had in
//!   fact accepted it.
//! - Never lost while pending: rows live in the database, not in memory.
//! - Transient errors (connection refused, timeouts, SMTP 4xx, HTTP 408,
//!   429 and 5xx) are retried with exponential backoff and jitter
//!   ([`retry_delay`]: 5 s doubling to 10 min), and never before the
//!   receiver's `Retry-After`.
//! - Permanent errors (SMTP 5xx, HTTP 4xx, bad configuration) mark the row
//!   `failed` with the reason, as does a notifier that is no longer
//!   configured. Rows still pending after `max_age` (24 h) are `expired`.
//! - One send at a time per notifier (oldest due first); different
//!   notifiers are sent to concurrently.
//! - Logs name the row, probe, notifier and the (redacted) answer or error,
//!   never a notifier's configuration.
//!
//! Waiting uses tokio's clock; stored times are wall-clock (UTC).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use tokio::sync::Notify;
use tokio::task::{JoinHandle, JoinSet};
use tokio_util::sync::CancellationToken;

use super::Outgoing;
use crate::config::Notifier;
use crate::metrics::{NotifyCounters, NotifyOutcome};
use crate::notify::{self, SendOptions};
use crate::store::outbox::{OutboxCounts, OutboxRow};
use crate::store::{Store, StoreError};

/// How the outbox retries, expires, polls and stops. `default()` gives the
/// production values; tests shorten them.
#[derive(Debug, Clone)]
pub struct OutboxSettings {
    /// Wait after the first transient failure...
    pub initial_backoff: Duration,
    /// ...multiplied by `factor` after each further one...
    pub factor: f64,
    /// ...up to this (a longer `Retry-After` is still honoured).
    pub max_backoff: Duration,
    /// Pending rows older than this are expired instead of sent.
    pub max_age: Duration,
    /// How often the table is checked for retries that came due.
    pub poll_interval: Duration,
    /// How long shutdown waits for sends in flight.
    pub shutdown_grace: Duration,
    /// Most due rows read per check.
    pub batch: usize,
    /// Extra CA and timeout for deliveries.
    pub send: SendOptions,
    /// Where attempts are counted per notifier and outcome (for
    /// `lookout_notifications_total`), when someone shows them.
    pub counters: Option<Arc<NotifyCounters>>,
    /// With several instances (`alert/leader.rs`): true while this one
    /// leads; the outbox reads and sends rows only then.
    pub leading: Option<tokio::sync::watch::Receiver<bool>>,
}

impl Default for OutboxSettings {
    fn default() -> Self {
        OutboxSettings {
            initial_backoff: Duration::from_secs(5),
            factor: 2.0,
            max_backoff: Duration::from_secs(600),
            max_age: Duration::from_secs(24 * 3600),
            poll_interval: Duration::from_secs(1),
            shutdown_grace: Duration::from_secs(5),
            batch: 500,
            send: SendOptions::default(),
            counters: None,
            leading: None,
        }
    }
}

/// How long to wait before the next attempt of row `id`, which has failed
/// transiently `attempts` times (1 after the first failure).
///
/// `initial * factor^(attempts-1)`, capped at `max`, minus up to a quarter
/// of itself as jitter (derived from the row id and attempt, so rows that
/// failed together spread out, and the result is reproducible); never less
/// than `retry_after` when the receiver gave one.
pub fn retry_delay(
    settings: &OutboxSettings,
    id: i64,
    attempts: u32,
    retry_after: Option<Duration>,
) -> Duration {
    let factor = if settings.factor.is_finite() && settings.factor >= 1.0 {
        settings.factor
    } else {
        2.0
    };
    let max = settings.max_backoff.as_secs_f64();
    let exp = i32::try_from(attempts.saturating_sub(1).min(1_000)).unwrap_or(1_000);
    let base = (settings.initial_backoff.as_secs_f64() * factor.powi(exp)).min(max);
    let mut h = DefaultHasher::new();
    (id, attempts).hash(&mut h);
    // 53 random bits as a fraction in [0, 1).
    let frac = (h.finish() >> 11) as f64 / (1u64 << 53) as f64;
    let jittered = base * (1.0 - 0.25 * frac);
    let delay = Duration::try_from_secs_f64(jittered).unwrap_or(settings.max_backoff);
    match retry_after {
        Some(r) => delay.max(r),
        None => delay,
    }
}

/// Why a notice could not be put in the outbox.
#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The blocking thread doing the write panicked or the runtime is
    /// shutting down.
    #[error("outbox database thread failed: {0}")]
    Thread(String),
}

/// The engine's side of the outbox. Cheap to clone.
#[derive(Debug, Clone)]
pub struct OutboxHandle {
    store: Arc<Mutex<Store>>,
    wake: Arc<Notify>,
    notifiers: Arc<std::sync::RwLock<Arc<BTreeMap<String, Notifier>>>>,
    settings: Arc<OutboxSettings>,
    unsaved: Unsaved,
}

/// Notices sent from memory (see [`OutboxHandle::send_unsaved`]) and not
/// recorded in the database yet: each with when it was created, how often
/// it was tried and, once settled, its outcome.
type Unsaved = Arc<std::sync::Mutex<BTreeMap<u64, UnsavedNotice>>>;

#[derive(Debug, Clone)]
struct UnsavedNotice {
    item: Outgoing,
    created: DateTime<Utc>,
    attempts: u32,
    outcome: Option<Result<String, String>>,
}

impl OutboxHandle {
    /// Sends `items` from memory because the database cannot be written
    /// (disk full, I/O errors): alerting must not wait for the disk. Each
    /// notice is sent at once and retried with the usual backoff until it
    /// is delivered, fails permanently or is older than `max_age`; then it
    /// is recorded in the outbox as delivered or failed (retrying until the
    /// database takes it), so it is never sent twice. At shutdown, what is
    /// still unrecorded is written as it stands (undelivered ones as
    /// pending, sent again after the restart); a crash meanwhile loses it.
    pub fn send_unsaved(&self, items: Vec<Outgoing>) {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        for item in items {
            let key = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            self.unsaved
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(
                    key,
                    UnsavedNotice {
                        item,
                        created: Utc::now(),
                        attempts: 0,
                        outcome: None,
                    },
                );
            tokio::spawn(send_from_memory(
                self.store.clone(),
                self.notifiers.clone(),
                self.settings.clone(),
                self.unsaved.clone(),
                key,
            ));
        }
    }

    /// Takes a reloaded configuration's notifiers: notices sent from now
    /// on (queued ones included) use them; a send in flight finishes with
    /// the old one.
    pub fn set_notifiers(&self, notifiers: BTreeMap<String, Notifier>) {
        *self
            .notifiers
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(notifiers);
        self.wake.notify_one();
    }

    /// Stores `items` durably (one transaction, on a blocking thread) and
    /// wakes the outbox task so they are sent at once. When this returns
    /// `Ok` the notices survive a restart. Works after the task stopped too:
    /// the rows are then sent by the next one.
    pub async fn enqueue(&self, items: Vec<Outgoing>) -> Result<Vec<i64>, OutboxError> {
        if items.is_empty() {
            return Ok(Vec::new());
        }
        let ids = with_store(&self.store, move |s| s.enqueue(&items, Utc::now())).await?;
        self.wake.notify_one();
        Ok(ids)
    }

    /// Wakes the task so rows written by someone else (the alerting task
    /// saves notices with the state that caused them) are sent at once.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// How many rows are in each status.
    pub async fn counts(&self) -> Result<OutboxCounts, OutboxError> {
        with_store(&self.store, |s| s.outbox_counts()).await
    }

    /// One row by id.
    pub async fn row(&self, id: i64) -> Result<Option<OutboxRow>, OutboxError> {
        with_store(&self.store, move |s| s.outbox_row(id)).await
    }
}

/// Runs `f` with the store on a blocking thread.
async fn with_store<T, F>(store: &Arc<Mutex<Store>>, f: F) -> Result<T, OutboxError>
where
    T: Send + 'static,
    F: FnOnce(&mut Store) -> Result<T, StoreError> + Send + 'static,
{
    let store = store.clone();
    tokio::task::spawn_blocking(move || {
        let mut guard = store.lock().unwrap_or_else(PoisonError::into_inner);
        f(&mut guard)
    })
    .await
    .map_err(|e| OutboxError::Thread(e.to_string()))?
    .map_err(OutboxError::Store)
}

/// Starts the outbox task. It sends what is due at once (rows left pending
/// by a previous process included), then whenever woken or every
/// `poll_interval`. It stops when `shutdown` is cancelled, after the sends
/// in flight finish or `shutdown_grace` passes.
pub fn spawn_outbox(
    store: Store,
    notifiers: BTreeMap<String, Notifier>,
    settings: OutboxSettings,
    shutdown: CancellationToken,
) -> (OutboxHandle, JoinHandle<()>) {
    let handle = OutboxHandle {
        store: Arc::new(Mutex::new(store)),
        wake: Arc::new(Notify::new()),
        notifiers: Arc::new(std::sync::RwLock::new(Arc::new(notifiers))),
        settings: Arc::new(settings),
        unsaved: Unsaved::default(),
    };
    let task = Task {
        store: handle.store.clone(),
        wake: handle.wake.clone(),
        notifiers: handle.notifiers.clone(),
        settings: handle.settings.clone(),
        unsaved: handle.unsaved.clone(),
    };
    (handle, tokio::spawn(task.run(shutdown)))
}

struct Task {
    store: Arc<Mutex<Store>>,
    wake: Arc<Notify>,
    /// Swapped by [`OutboxHandle::set_notifiers`] on a reload.
    notifiers: Arc<std::sync::RwLock<Arc<BTreeMap<String, Notifier>>>>,
    unsaved: Unsaved,
    settings: Arc<OutboxSettings>,
}

impl Task {
    async fn run(self, shutdown: CancellationToken) {
        let mut sends: JoinSet<()> = JoinSet::new();
        // Notifier of each send in flight, by task id.
        let mut busy: HashMap<tokio::task::Id, String> = HashMap::new();
        let mut load_failing = false;
        loop {
            if shutdown.is_cancelled() {
                break;
            }
            if let Some(mut leading) = self.settings.leading.clone() {
                if !*leading.borrow_and_update() {
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        changed = leading.changed() => {
                            if changed.is_err() {
                                break; // the alerting task is gone
                            }
                            continue;
                        }
                    }
                }
            }
            match self.load_due().await {
                Ok(rows) => {
                    if load_failing {
                        tracing::info!("outbox database readable again");
                        load_failing = false;
                    }
                    let mut taken: HashSet<String> = busy.values().cloned().collect();
                    let notifiers = self
                        .notifiers
                        .read()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .clone();
                    for row in rows {
                        if !taken.insert(row.notifier.clone()) {
                            continue;
                        }
                        let notifier = row.notifier.clone();
                        let send = deliver(
                            self.store.clone(),
                            notifiers.get(&row.notifier).cloned(),
                            self.settings.clone(),
                            row,
                        );
                        let abort = sends.spawn(send);
                        busy.insert(abort.id(), notifier);
                    }
                }
                Err(e) => {
                    if !load_failing {
                        tracing::warn!(error = %e,
                            "cannot read the outbox; retrying at the next poll");
                        load_failing = true;
                    }
                }
            }
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                Some(done) = sends.join_next_with_id(), if !sends.is_empty() => {
                    let id = match done {
                        Ok((id, ())) => id,
                        Err(e) => {
                            tracing::error!(error = %e, "an outbox send panicked; \
                                its notice stays pending");
                            e.id()
                        }
                    };
                    busy.remove(&id);
                }
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(self.settings.poll_interval) => {}
            }
        }
        if !sends.is_empty() {
            let drain = async { while sends.join_next().await.is_some() {} };
            if tokio::time::timeout(self.settings.shutdown_grace, drain)
                .await
                .is_err()
            {
                tracing::warn!(
                    in_flight = sends.len(),
                    "outbox sends still in flight at shutdown were abandoned; \
                     their notices stay pending and are sent after the restart"
                );
                sends.abort_all();
            }
        }
        // Notices sent from memory and not recorded yet: write them as they
        // stand, so none is lost or sent twice across the restart.
        let keys: Vec<u64> = self
            .unsaved
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .keys()
            .copied()
            .collect();
        for key in keys {
            if !record_unsaved(&self.store, &self.unsaved, key).await {
                tracing::error!(
                    "a notice sent from memory could not be recorded at shutdown \
                     (the database still refuses writes); it is lost"
                );
            }
        }
    }

    /// Expires rows that are too old, then reads the due ones.
    async fn load_due(&self) -> Result<Vec<OutboxRow>, OutboxError> {
        let max_age = TimeDelta::from_std(self.settings.max_age).unwrap_or(TimeDelta::MAX);
        let limit = self.settings.batch.max(1);
        let (expired, rows) = with_store(&self.store, move |s| {
            let now = Utc::now();
            let expired = match now.checked_sub_signed(max_age) {
                Some(cutoff) => s.expire_older_than(cutoff)?,
                None => 0,
            };
            Ok((expired, s.due(now, limit)?))
        })
        .await?;
        if expired > 0 {
            tracing::warn!(
                expired,
                max_age_s = self.settings.max_age.as_secs(),
                "notices not delivered within the outbox max age were expired"
            );
        }
        Ok(rows)
    }
}

/// What became of one attempt.
enum Outcome {
    Delivered(String),
    Retry {
        attempts: u32,
        at: DateTime<Utc>,
        delay: Duration,
        error: String,
    },
    Failed(String),
}

/// Sends one row and records the outcome.
async fn deliver(
    store: Arc<Mutex<Store>>,
    notifier: Option<Notifier>,
    settings: Arc<OutboxSettings>,
    row: OutboxRow,
) {
    let outcome = match (&notifier, row.notice()) {
        (None, _) => Outcome::Failed(format!("notifier {} is no longer configured", row.notifier)),
        (Some(_), Err(e)) => Outcome::Failed(format!("the stored notice cannot be read: {e}")),
        (Some(n), Ok(notice)) => match notify::send_with(n, &notice, &settings.send).await {
            Ok(answer) => Outcome::Delivered(answer),
            Err(e) if e.permanent => Outcome::Failed(e.message),
            Err(e) => {
                let attempts = row.attempts.saturating_add(1);
                let delay = retry_delay(&settings, row.id, attempts, e.retry_after);
                let at = Utc::now() + TimeDelta::from_std(delay).unwrap_or(TimeDelta::MAX);
                Outcome::Retry {
                    attempts,
                    at,
                    delay,
                    error: e.message,
                }
            }
        },
    };
    let counted = match &outcome {
        Outcome::Delivered(_) => NotifyOutcome::Delivered,
        Outcome::Retry { .. } => NotifyOutcome::Retried,
        Outcome::Failed(_) => NotifyOutcome::Failed,
    };
    let (id, name, probe, kind) = (row.id, &row.notifier, &row.probe, &row.kind);
    match &outcome {
        Outcome::Delivered(answer) => tracing::info!(id, notifier = %name, probe = %probe,
            kind = %kind, attempts = row.attempts + 1, answer = %answer, "notice delivered"),
        Outcome::Retry {
            attempts,
            delay,
            error,
            ..
        } => tracing::warn!(id, notifier = %name, probe = %probe, kind = %kind, attempts,
            retry_in_ms = delay.as_millis() as u64, error = %error,
            "notice not delivered; will retry"),
        Outcome::Failed(error) => tracing::error!(id, notifier = %name, probe = %probe,
            kind = %kind, error = %error, "notice failed permanently; not retrying"),
    }
    record(&store, id, outcome).await;
    if let Some(counters) = &settings.counters {
        counters.count(&row.notifier, counted);
    }
}

/// See [`OutboxHandle::send_unsaved`]: sends the notice `key` of
/// `unsaved`, then records it (every second until the database takes it).
async fn send_from_memory(
    store: Arc<Mutex<Store>>,
    notifiers: Arc<std::sync::RwLock<Arc<BTreeMap<String, Notifier>>>>,
    settings: Arc<OutboxSettings>,
    unsaved: Unsaved,
    key: u64,
) {
    let entry = |f: &mut dyn FnMut(&mut UnsavedNotice)| {
        if let Some(u) = unsaved
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get_mut(&key)
        {
            f(u);
        }
    };
    let mut it = None;
    entry(&mut |u| it = Some((u.item.clone(), u.created)));
    let Some((item, created)) = it else { return };
    let (name, probe, kind) = (
        item.notifier.clone(),
        item.notice.probe.clone(),
        crate::store::outbox_kind(item.notice.kind),
    );
    tracing::warn!(notifier = %name, probe = %probe, kind,
        "the database cannot be written; sending this notice from memory");
    let mut attempts = 0u32;
    let outcome: Result<String, String> = loop {
        let notifier = notifiers
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&name)
            .cloned();
        let Some(n) = notifier else {
            break Err(format!("notifier {name} is no longer configured"));
        };
        attempts += 1;
        entry(&mut |u| u.attempts = attempts);
        match notify::send_with(&n, &item.notice, &settings.send).await {
            Ok(answer) => break Ok(answer),
            Err(e) if e.permanent => break Err(e.message),
            Err(e) => {
                let age = (Utc::now() - created).to_std().unwrap_or_default();
                if age >= settings.max_age {
                    break Err(format!(
                        "expired: not delivered after {attempts} attempt(s): {}",
                        e.message
                    ));
                }
                let delay = retry_delay(&settings, i64::from(attempts), attempts, e.retry_after);
                tracing::warn!(notifier = %name, probe = %probe, kind, attempts,
                    retry_in_ms = delay.as_millis() as u64, error = %e.message,
                    "notice (from memory) not delivered; will retry");
                if let Some(counters) = &settings.counters {
                    counters.count(&name, NotifyOutcome::Retried);
                }
                tokio::time::sleep(delay).await;
            }
        }
    };
    match &outcome {
        Ok(answer) => tracing::info!(notifier = %name, probe = %probe, kind, attempts,
            answer = %answer, "notice delivered (from memory)"),
        Err(error) => tracing::error!(notifier = %name, probe = %probe, kind,
            error = %error, "notice (from memory) failed; not retrying"),
    }
    if let Some(counters) = &settings.counters {
        let counted = if outcome.is_ok() {
            NotifyOutcome::Delivered
        } else {
            NotifyOutcome::Failed
        };
        counters.count(&name, counted);
    }
    entry(&mut |u| u.outcome = Some(outcome.clone()));
    loop {
        if record_unsaved(&store, &unsaved, key).await {
            return;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Writes the unsaved notice `key` as it stands (delivered, failed, or —
/// not settled yet — pending) and forgets it; false if the database still
/// refuses it (or someone else already wrote it).
async fn record_unsaved(store: &Arc<Mutex<Store>>, unsaved: &Unsaved, key: u64) -> bool {
    let Some(u) = unsaved
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .get(&key)
        .cloned()
    else {
        return true;
    };
    let written = with_store(store, move |s| match &u.outcome {
        Some(o) => s
            .record_sent(&u.item, u.created, u.attempts, o, Utc::now())
            .map(|_| ()),
        None => s
            .enqueue(std::slice::from_ref(&u.item), u.created)
            .map(|_| ()),
    })
    .await;
    if written.is_ok() {
        unsaved
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&key);
    }
    written.is_ok()
}

/// Writes an outcome, retrying briefly while the database is locked. If it
/// still cannot be written the row stays pending (and a delivered notice
/// may be sent again).
async fn record(store: &Arc<Mutex<Store>>, id: i64, outcome: Outcome) {
    let outcome = Arc::new(outcome);
    let mut wait = Duration::from_millis(50);
    for attempt in 1..=8 {
        let o = outcome.clone();
        let result = with_store(store, move |s| match &*o {
            Outcome::Delivered(answer) => s.mark_delivered(id, answer, Utc::now()),
            Outcome::Retry {
                attempts,
                at,
                error,
                ..
            } => s.reschedule(id, *attempts, *at, error),
            Outcome::Failed(error) => s.mark_failed(id, error),
        })
        .await;
        match result {
            Ok(()) => return,
            Err(OutboxError::Store(e)) if e.is_busy() && attempt < 8 => {
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(1));
            }
            Err(e) => {
                let note = if matches!(*outcome, Outcome::Delivered(_)) {
                    "; the notice was delivered and may be sent again"
                } else {
                    ""
                };
                tracing::error!(id, error = %e, "cannot record the outcome of a notice{note}");
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> OutboxSettings {
        OutboxSettings::default()
    }

    #[test]
    fn backoff_doubles_from_5s_with_at_most_a_quarter_of_jitter() {
        let s = settings();
        for attempts in 1..=7u32 {
            let base = 5.0 * 2f64.powi(attempts as i32 - 1);
            for id in 0..50 {
                let d = retry_delay(&s, id, attempts, None).as_secs_f64();
                assert!(d <= base + 1e-9, "attempt {attempts}: {d} > {base}");
                assert!(
                    d >= base * 0.75 - 1e-9,
                    "attempt {attempts}: {d} < {base}*0.75"
                );
            }
        }
    }

    #[test]
    fn backoff_is_capped_at_max() {
        let s = settings();
        for attempts in [8u32, 10, 40, 1_000, u32::MAX] {
            let d = retry_delay(&s, 7, attempts, None);
            assert!(d <= Duration::from_secs(600), "{d:?}");
            assert!(d >= Duration::from_secs(450), "{d:?}");
        }
    }

    #[test]
    fn jitter_is_reproducible_and_spreads_rows() {
        let s = settings();
        assert_eq!(retry_delay(&s, 3, 2, None), retry_delay(&s, 3, 2, None));
        let distinct: HashSet<Duration> = (0..20).map(|id| retry_delay(&s, id, 2, None)).collect();
        assert!(distinct.len() > 10, "{distinct:?}");
    }

    #[test]
    fn retry_after_is_a_floor() {
        let s = settings();
        let long = Duration::from_secs(3_600);
        assert_eq!(retry_delay(&s, 1, 1, Some(long)), long);
        // A short Retry-After does not shorten the backoff.
        assert!(retry_delay(&s, 1, 3, Some(Duration::from_secs(1))) >= Duration::from_secs(15));
    }

    #[test]
    fn odd_settings_do_not_panic() {
        let s = OutboxSettings {
            initial_backoff: Duration::from_secs(1_000),
            factor: f64::NAN,
            max_backoff: Duration::from_secs(10),
            ..settings()
        };
        assert!(retry_delay(&s, 1, 1, None) <= Duration::from_secs(10));
        let z = OutboxSettings {
            initial_backoff: Duration::ZERO,
            ..settings()
        };
        assert_eq!(retry_delay(&z, 1, 5, None), Duration::ZERO);
    }
}
