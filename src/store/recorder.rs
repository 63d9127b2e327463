//! The recorder: the one task that writes results to the history database.
//!
//! Probes hand results to a [`RecorderHandle`], whose [`record`] is an
//! unbounded channel send: it never blocks or awaits, so the probing path
//! never waits on the disk. The recorder task moves results from the channel
//! into an in-memory buffer and writes them in batches on a blocking thread.
//!
//! What it guarantees:
//! - A slow, full or locked disk delays no probe. Failed writes leave their
//!   rows in the buffer; the recorder logs once, retries with backoff (100 ms
//!   doubling to 5 s) and keeps accepting results meanwhile.
//! - Memory is bounded: beyond `max_buffered` waiting results (plus the one
//!   batch being written) the *oldest* are dropped, counted, and logged once
//!   per burst. Fresh results are worth more than old ones to someone
//!   watching a dashboard after an outage.
//! - Raw rows older than `retention_raw` (once rolled up), minute rollups
//!   older than `retention_minute_rollups` and hour rollups older than
//!   `retention_rollups` are swept at start and every `sweep_interval`, one
//!   chunk per transaction, interleaved with writes.
//! - On shutdown (token cancelled, or every handle dropped) it takes what is
//!   still in the channel, writes everything it can before a deadline, and
//!   reports what was written, dropped and left unwritten.
//!
//! Time comes from tokio's clock, so tests can pause it.
//!
//! [`record`]: RecorderHandle::record

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use tokio::sync::mpsc;
use tokio::task::{JoinError, JoinHandle};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{Store, StoreError, SweepCutoffs, Swept, SWEEP_CHUNK};
use crate::config::Storage;
use crate::result::ProbeResult;

/// How the recorder batches, buffers, retries and sweeps. [`new`] gives the
/// production defaults; tests shorten them.
///
/// [`new`]: RecorderSettings::new
#[derive(Debug, Clone, PartialEq)]
pub struct RecorderSettings {
    /// Raw results older than this are deleted by the periodic sweep.
    pub retention_raw: Duration,
    /// Minute rollups older than this are deleted by the sweep.
    pub retention_minute_rollups: Duration,
    /// Hour rollups older than this are deleted by the sweep.
    pub retention_rollups: Duration,
    /// Most results kept in memory while they wait to be written.
    pub max_buffered: usize,
    /// Most rows written in one transaction.
    pub batch_size: usize,
    /// Write as soon as this many results are waiting...
    pub flush_threshold: usize,
    /// ...and never let a result wait longer than this.
    pub flush_interval: Duration,
    /// Time between retention sweeps (one also runs at start).
    pub sweep_interval: Duration,
    /// First wait after a failed write; doubles up to `retry_max`.
    pub retry_initial: Duration,
    pub retry_max: Duration,
    /// How long shutdown may spend writing what is left.
    pub shutdown_deadline: Duration,
}

impl RecorderSettings {
    /// The production defaults, keeping raw rows for `retention_raw`, minute
    /// rollups for 30 days and hour rollups for 400.
    pub fn new(retention_raw: Duration) -> RecorderSettings {
        RecorderSettings {
            retention_raw,
            retention_minute_rollups: Duration::from_secs(30 * 86_400),
            retention_rollups: Duration::from_secs(400 * 86_400),
            max_buffered: 100_000,
            batch_size: 1_000,
            flush_threshold: 500,
            flush_interval: Duration::from_secs(1),
            sweep_interval: Duration::from_secs(600),
            retry_initial: Duration::from_millis(100),
            retry_max: Duration::from_secs(5),
            shutdown_deadline: Duration::from_secs(5),
        }
    }
}

impl From<&Storage> for RecorderSettings {
    fn from(storage: &Storage) -> RecorderSettings {
        RecorderSettings {
            retention_minute_rollups: storage.retention_minute_rollups,
            retention_rollups: storage.retention_rollups,
            max_buffered: storage.buffer,
            ..RecorderSettings::new(storage.retention_raw)
        }
    }
}

/// Live counters, shared between the recorder and every handle, for
/// metrics. Read them with [`RecorderStats::snapshot`].
#[derive(Debug, Default)]
pub struct RecorderStats {
    written: AtomicU64,
    write_errors: AtomicU64,
    dropped: AtomicU64,
    buffered: AtomicU64,
    swept: AtomicU64,
    /// Time of each batch insert (failed attempts included).
    write_seconds: crate::metrics::DbWriteHistogram,
}

/// A copy of the counters at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RecorderCounters {
    /// Results written to the database.
    pub written: u64,
    /// Write attempts that failed (each is retried).
    pub write_errors: u64,
    /// Results lost: dropped from a full buffer, or recorded after the
    /// recorder stopped.
    pub dropped: u64,
    /// Results accepted and not yet written (in the channel, the buffer, or
    /// the batch being written).
    pub buffered: u64,
    /// Raw rows deleted by the retention sweep.
    pub swept: u64,
}

impl RecorderStats {
    pub fn snapshot(&self) -> RecorderCounters {
        RecorderCounters {
            written: self.written.load(Ordering::Relaxed),
            write_errors: self.write_errors.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
            buffered: self.buffered.load(Ordering::Relaxed),
            swept: self.swept.load(Ordering::Relaxed),
        }
    }

    /// How long batch inserts took, for `lookout_db_write_seconds`.
    pub fn write_seconds(&self) -> crate::metrics::Histogram {
        self.write_seconds.snapshot()
    }

    fn add(counter: &AtomicU64, n: usize) {
        counter.fetch_add(n as u64, Ordering::Relaxed);
    }

    fn sub(counter: &AtomicU64, n: usize) {
        counter.fetch_sub(n as u64, Ordering::Relaxed);
    }
}

/// The probing side of the recorder. Cheap to clone; dropping the last
/// clone tells the recorder to flush and stop.
#[derive(Debug, Clone)]
pub struct RecorderHandle {
    tx: mpsc::UnboundedSender<ProbeResult>,
    stats: Arc<RecorderStats>,
}

impl RecorderHandle {
    /// Hands a result to the recorder. Never blocks, never awaits, never
    /// fails: after the recorder has stopped the result is counted as
    /// dropped.
    pub fn record(&self, result: ProbeResult) {
        // Counted before the send so the recorder, which subtracts when it
        // writes, can never see the counter below zero.
        RecorderStats::add(&self.stats.buffered, 1);
        if self.tx.send(result).is_err() {
            RecorderStats::sub(&self.stats.buffered, 1);
            RecorderStats::add(&self.stats.dropped, 1);
            tracing::debug!("result recorded after the recorder stopped; dropped");
        }
    }

    /// The live counters, to be read by metrics.
    pub fn stats(&self) -> Arc<RecorderStats> {
        self.stats.clone()
    }

    /// The counters now.
    pub fn counters(&self) -> RecorderCounters {
        self.stats.snapshot()
    }
}

/// What the recorder did, returned when it stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecorderReport {
    /// Results written over the recorder's life.
    pub written: u64,
    /// Results dropped over its life (full buffer, or recorded too late).
    pub dropped: u64,
    /// Results still unwritten when the shutdown deadline passed; they are
    /// lost.
    pub still_buffered: u64,
    /// Failed write attempts over its life.
    pub write_errors: u64,
}

/// Starts the recorder task. It stops when `shutdown` is cancelled or every
/// handle is dropped, after flushing what it can within the deadline.
pub fn spawn_recorder(
    store: Store,
    settings: RecorderSettings,
    shutdown: CancellationToken,
) -> (RecorderHandle, JoinHandle<RecorderReport>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let stats = Arc::new(RecorderStats::default());
    let recorder = Recorder::new(store, settings, rx, stats.clone());
    let task = tokio::spawn(recorder.run(shutdown));
    (RecorderHandle { tx, stats }, task)
}

/// The results waiting to be written, oldest first, and the size of the
/// batch currently being written (taken out of the queue).
///
/// Dropping is exact: the oldest results overall go first. While a batch is
/// in flight its results are older than anything queued, but it may yet
/// succeed, so only the queue is trimmed; if the batch fails it goes back in
/// front and the whole is trimmed again.
#[derive(Debug)]
struct Buffer {
    queue: VecDeque<ProbeResult>,
    max: usize,
    in_flight: usize,
}

impl Buffer {
    fn new(max: usize) -> Buffer {
        Buffer {
            queue: VecDeque::new(),
            max: max.max(1),
            in_flight: 0,
        }
    }

    /// Adds a result; returns how many old ones were dropped to make room.
    fn push(&mut self, r: ProbeResult) -> usize {
        self.queue.push_back(r);
        self.trim()
    }

    fn trim(&mut self) -> usize {
        let excess = self.queue.len().saturating_sub(self.max);
        self.queue.drain(..excess);
        excess
    }

    /// Takes up to `n` of the oldest results to write.
    fn take(&mut self, n: usize) -> Vec<ProbeResult> {
        let n = n.min(self.queue.len());
        let batch: Vec<ProbeResult> = self.queue.drain(..n).collect();
        self.in_flight = batch.len();
        batch
    }

    /// The batch in flight was written.
    fn written(&mut self) -> usize {
        std::mem::take(&mut self.in_flight)
    }

    /// The batch in flight failed: it goes back in front. Returns how many
    /// results were dropped to respect the bound.
    fn give_back(&mut self, batch: Vec<ProbeResult>) -> usize {
        self.in_flight = 0;
        for r in batch.into_iter().rev() {
            self.queue.push_front(r);
        }
        self.trim()
    }

    /// The batch in flight was lost (the writing thread panicked).
    fn lost(&mut self) -> usize {
        std::mem::take(&mut self.in_flight)
    }

    fn len(&self) -> usize {
        self.queue.len()
    }

    fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }
}

/// Work done on a blocking thread with the store.
enum Outcome {
    Written,
    WriteFailed(Vec<ProbeResult>, StoreError),
    Swept(Swept),
    SweepFailed(StoreError),
}

type Job = JoinHandle<Outcome>;

/// The recorder task's state.
struct Recorder {
    /// Behind a mutex only so a blocking thread can borrow it; the recorder
    /// runs at most one job at a time, so the lock is never contended.
    store: Arc<Mutex<Store>>,
    settings: RecorderSettings,
    rx: mpsc::UnboundedReceiver<ProbeResult>,
    stats: Arc<RecorderStats>,
    buffer: Buffer,
    /// When the oldest waiting result arrived (roughly): it is written no
    /// later than `flush_interval` after.
    pending_since: Option<Instant>,
    /// While writes fail: when to try again, and the next wait after that.
    retry_at: Option<Instant>,
    backoff: Duration,
    failed_attempts: u64,
    /// Drops since the buffer last had room, for one log line per burst.
    burst_drops: u64,
    /// When the next sweep chunk is due, and rows deleted this round.
    sweep_at: Instant,
    swept_this_round: Swept,
}

impl Recorder {
    fn new(
        store: Store,
        settings: RecorderSettings,
        rx: mpsc::UnboundedReceiver<ProbeResult>,
        stats: Arc<RecorderStats>,
    ) -> Recorder {
        Recorder {
            store: Arc::new(Mutex::new(store)),
            buffer: Buffer::new(settings.max_buffered),
            backoff: settings.retry_initial,
            settings,
            rx,
            stats,
            pending_since: None,
            retry_at: None,
            failed_attempts: 0,
            burst_drops: 0,
            sweep_at: Instant::now(),
            swept_this_round: Swept::default(),
        }
    }

    async fn run(mut self, shutdown: CancellationToken) -> RecorderReport {
        let mut job: Option<Job> = None;
        loop {
            if job.is_none() {
                job = self.start_due_job();
            }
            let wake = if job.is_none() {
                self.next_wake()
            } else {
                None
            };
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                done = join(&mut job) => {
                    job = None;
                    self.finish(done);
                }
                msg = self.rx.recv() => match msg {
                    Some(r) => {
                        self.accept(r);
                        // Take what else is waiting in one go, bounded so a
                        // flood cannot starve the rest of this loop.
                        for _ in 0..self.settings.batch_size.max(1) {
                            match self.rx.try_recv() {
                                Ok(r) => self.accept(r),
                                Err(_) => break,
                            }
                        }
                    }
                    // Every handle is gone: nothing more can arrive.
                    None => break,
                },
                _ = sleep_until(wake) => {}
            }
        }
        self.shut_down(job).await
    }

    fn accept(&mut self, r: ProbeResult) {
        if self.buffer.is_empty() && self.pending_since.is_none() {
            self.pending_since = Some(Instant::now());
        }
        let dropped = self.buffer.push(r);
        self.count_drops(dropped);
    }

    fn count_drops(&mut self, dropped: usize) {
        if dropped == 0 {
            return;
        }
        RecorderStats::sub(&self.stats.buffered, dropped);
        RecorderStats::add(&self.stats.dropped, dropped);
        if self.burst_drops == 0 {
            tracing::warn!(
                max_buffered = self.buffer.max,
                "history buffer is full: dropping the oldest unwritten results until the \
                 database accepts writes again"
            );
        }
        self.burst_drops += dropped as u64;
    }

    fn write_due(&self, now: Instant) -> bool {
        if self.buffer.is_empty() {
            return false;
        }
        match self.retry_at {
            Some(at) => now >= at,
            None => {
                self.buffer.len() >= self.settings.flush_threshold.max(1)
                    || self
                        .pending_since
                        .is_some_and(|t| now >= t + self.settings.flush_interval)
            }
        }
    }

    /// When the loop must wake up on its own to start a job.
    fn next_wake(&self) -> Option<Instant> {
        let write = if self.buffer.is_empty() {
            None
        } else {
            match self.retry_at {
                Some(at) => Some(at),
                None => self.pending_since.map(|t| t + self.settings.flush_interval),
            }
        };
        Some(match write {
            Some(w) => w.min(self.sweep_at),
            None => self.sweep_at,
        })
    }

    fn start_due_job(&mut self) -> Option<Job> {
        let now = Instant::now();
        if self.write_due(now) {
            return Some(self.start_write());
        }
        if now >= self.sweep_at {
            return Some(self.start_sweep());
        }
        None
    }

    fn start_write(&mut self) -> Job {
        let batch = self.buffer.take(self.settings.batch_size.max(1));
        self.pending_since = if self.buffer.is_empty() {
            None
        } else {
            Some(Instant::now())
        };
        let store = self.store.clone();
        let stats = self.stats.clone();
        tokio::task::spawn_blocking(move || {
            let mut store = store.lock().unwrap_or_else(PoisonError::into_inner);
            // Real elapsed time of blocking work: std's clock, not tokio's.
            let started = std::time::Instant::now();
            let written = store.insert_batch(&batch);
            stats.write_seconds.observe(started.elapsed());
            match written {
                Ok(()) => Outcome::Written,
                Err(e) => Outcome::WriteFailed(batch, e),
            }
        })
    }

    fn start_sweep(&mut self) -> Job {
        let now = Utc::now();
        let cutoff = |keep: Duration| -> Option<DateTime<Utc>> {
            TimeDelta::from_std(keep)
                .ok()
                .and_then(|d| now.checked_sub_signed(d))
        };
        let cutoffs = SweepCutoffs {
            raw: cutoff(self.settings.retention_raw),
            minute_rollups: cutoff(self.settings.retention_minute_rollups),
            hour_rollups: cutoff(self.settings.retention_rollups),
        };
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || {
            let mut store = store.lock().unwrap_or_else(PoisonError::into_inner);
            match store.sweep_step(&cutoffs, SWEEP_CHUNK) {
                Ok(n) => Outcome::Swept(n),
                Err(e) => Outcome::SweepFailed(e),
            }
        })
    }

    fn finish(&mut self, done: Result<Outcome, JoinError>) {
        let now = Instant::now();
        match done {
            Ok(Outcome::Written) => {
                let n = self.buffer.written();
                RecorderStats::add(&self.stats.written, n);
                RecorderStats::sub(&self.stats.buffered, n);
                if self.failed_attempts > 0 {
                    tracing::info!(
                        failed_attempts = self.failed_attempts,
                        waiting = self.buffer.len(),
                        "history database accepts writes again; writing the results kept in memory"
                    );
                }
                if self.burst_drops > 0 {
                    tracing::warn!(
                        dropped = self.burst_drops,
                        "results were dropped while the history database could not be written"
                    );
                }
                self.failed_attempts = 0;
                self.burst_drops = 0;
                self.retry_at = None;
                self.backoff = self.settings.retry_initial;
            }
            Ok(Outcome::WriteFailed(batch, error)) => {
                let dropped = self.buffer.give_back(batch);
                self.count_drops(dropped);
                RecorderStats::add(&self.stats.write_errors, 1);
                if self.failed_attempts == 0 {
                    tracing::warn!(
                        %error,
                        waiting = self.buffer.len(),
                        "cannot write to the history database; keeping results in memory and retrying"
                    );
                } else {
                    tracing::debug!(%error, attempt = self.failed_attempts + 1, "history write failed again");
                }
                self.failed_attempts += 1;
                self.retry_at = Some(now + self.backoff);
                self.backoff = (self.backoff * 2).min(self.settings.retry_max);
            }
            Ok(Outcome::Swept(n)) => self.swept(n, now),
            Ok(Outcome::SweepFailed(error)) => {
                tracing::warn!(%error, "retention sweep failed; will try again");
                self.sweep_at = now + self.settings.sweep_interval.min(Duration::from_secs(60));
            }
            Err(error) => {
                // A panic while writing is a bug; the batch is gone, and the
                // store is still usable (its mutex is recovered on next use).
                let lost = self.buffer.lost();
                tracing::error!(%error, lost, "history write task ended abnormally");
                self.count_drops(lost);
                self.retry_at = Some(now + self.backoff);
            }
        }
    }

    fn swept(&mut self, n: Swept, now: Instant) {
        RecorderStats::add(&self.stats.swept, n.raw);
        let round = &mut self.swept_this_round;
        round.raw += n.raw;
        round.minute_rollups += n.minute_rollups;
        round.hour_rollups += n.hour_rollups;
        if n.total() >= SWEEP_CHUNK {
            // More to delete: the next chunk goes right after any write
            // that is due.
            self.sweep_at = now;
            return;
        }
        let round = std::mem::take(&mut self.swept_this_round);
        if round.total() > 0 {
            tracing::info!(
                raw = round.raw,
                minute_rollups = round.minute_rollups,
                hour_rollups = round.hour_rollups,
                retention_raw = %crate::duration::human(self.settings.retention_raw),
                "retention sweep deleted old history"
            );
        }
        self.sweep_at = now + self.settings.sweep_interval;
    }

    /// Takes everything still in the channel and writes it, retrying until
    /// the deadline.
    async fn shut_down(mut self, mut job: Option<Job>) -> RecorderReport {
        let deadline = Instant::now() + self.settings.shutdown_deadline;
        // Closing first makes late `record` calls count as dropped instead
        // of vanishing into a channel nobody reads.
        self.rx.close();
        while let Some(r) = self.rx.recv().await {
            self.accept(r);
        }
        loop {
            if job.is_none() {
                if self.buffer.is_empty() {
                    break;
                }
                if let Some(at) = self.retry_at {
                    if at >= deadline {
                        break;
                    }
                    tokio::time::sleep_until(at).await;
                }
                job = Some(self.start_write());
            }
            match tokio::time::timeout_at(deadline, join(&mut job)).await {
                Ok(done) => {
                    job = None;
                    self.finish(done);
                }
                Err(_) => break,
            }
        }
        let still_buffered = (self.buffer.len() + self.buffer.in_flight) as u64;
        if still_buffered > 0 {
            tracing::warn!(
                still_buffered,
                "shutting down with results the history database did not accept; they are lost"
            );
        }
        let c = self.stats.snapshot();
        RecorderReport {
            written: c.written,
            dropped: c.dropped,
            still_buffered,
            write_errors: c.write_errors,
        }
    }
}

/// Waits for the job, or forever when there is none.
async fn join(job: &mut Option<Job>) -> Result<Outcome, JoinError> {
    match job {
        Some(handle) => handle.await,
        None => std::future::pending().await,
    }
}

/// Sleeps until `at`, or forever when there is no such time.
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(n: i64) -> ProbeResult {
        ProbeResult {
            probe: "p".into(),
            started_at: DateTime::from_timestamp_millis(n).expect("time"),
            duration: Duration::from_millis(1),
            success: true,
            failure: None,
            phases: Vec::new(),
            checks: Vec::new(),
            details: serde_json::Map::new(),
            location: None,
        }
    }

    fn starts(b: &Buffer) -> Vec<i64> {
        b.queue
            .iter()
            .map(|r| r.started_at.timestamp_millis())
            .collect()
    }

    #[test]
    fn a_full_buffer_drops_the_oldest() {
        let mut b = Buffer::new(3);
        let dropped: usize = (0..5).map(|i| b.push(result(i))).sum();
        assert_eq!(dropped, 2);
        assert_eq!(starts(&b), vec![2, 3, 4]);
    }

    #[test]
    fn a_failed_batch_goes_back_in_front_and_the_oldest_overall_are_dropped() {
        let mut b = Buffer::new(3);
        for i in 0..3 {
            b.push(result(i));
        }
        let batch = b.take(2);
        assert_eq!(b.in_flight, 2);
        // While the batch is in flight the queue alone is bounded.
        let dropped: usize = (3..6).map(|i| b.push(result(i))).sum();
        assert_eq!(dropped, 1);
        assert_eq!(starts(&b), vec![3, 4, 5]);
        // The batch failed: its results are the oldest, so they go.
        assert_eq!(b.give_back(batch), 2);
        assert_eq!(starts(&b), vec![3, 4, 5]);
        assert_eq!(b.in_flight, 0);
    }

    #[test]
    fn a_written_batch_leaves_the_rest_in_order() {
        let mut b = Buffer::new(10);
        for i in 0..5 {
            b.push(result(i));
        }
        let batch = b.take(3);
        assert_eq!(batch.len(), 3);
        assert_eq!(b.written(), 3);
        assert_eq!(starts(&b), vec![3, 4]);
    }
}
