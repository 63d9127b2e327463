//! The scheduler: one task per probe that sleeps until the probe is due,
//! takes a permit from the global concurrency bound, runs the probe once
//! (bounded by its timeout) and hands the result to a sink.
//!
//! Invariants: a probe is never run twice at the same time (its task runs
//! one run after another); a slow or hanging target only holds its own task
//! and one permit, so it never delays another probe beyond the permit
//! bound; the scheduler never waits on the disk or a notifier (the sink
//! must return at once). Interval schedules are spread by a stable
//! per-probe offset so a thousand probes with one interval do not fire in
//! the same millisecond. Manners towards targets: runs against one host
//! keep `scheduler.host_spacing` apart ([`HostGates`]), and a target that
//! answers with `Retry-After` (429/503) is not probed again before then.
//! Time comes from tokio's clock, so tests can pause it.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::config::{ProbeSpec, Schedule};
use crate::probe::run_once;
use crate::result::ProbeResult;

/// Facts about one run that belong to the scheduler, not the probe.
#[derive(Debug, Clone, Copy)]
pub struct RunMeta {
    /// When the run was due.
    pub due: Instant,
    /// How late it started: due time to start, after waiting for a permit.
    pub lag: Duration,
}

/// Where results go. It must return quickly and never block: the recorder,
/// the live state and the log all take results without waiting.
pub type Sink = Arc<dyn Fn(ProbeResult, RunMeta) + Send + Sync>;

/// The first runs after start are spread over this long (or the interval, if
/// shorter), so results appear within seconds of starting even with long
/// intervals...
const START_SPREAD: Duration = Duration::from_secs(2);
/// ...unless that would start probes faster than this many per second (or
/// the fleet's steady rate, if higher): then the spread is as long as it
/// takes at that rate. 10,000 probes every 10 s start over 10 s at their
/// steady 1,000/s rather than in a 2 s burst of 5,000/s, which would queue
/// results, hold hundreds of connections at once and hit the targets with
/// a restart storm (BENCHMARKS.md, issue 6).
const START_RATE: f64 = 200.0;

/// How long the first runs of `probes` are spread over: two seconds, or
/// longer for a fleet that would otherwise start faster than its steady
/// rate or 200 probes/s.
pub fn start_spread(probes: &[Arc<ProbeSpec>]) -> Duration {
    let mut n = 0usize;
    let mut steady = 0.0f64;
    for p in probes {
        if let Schedule::Interval(i) = p.schedule {
            n += 1;
            steady += 1.0 / i.as_secs_f64().max(1e-3);
        }
    }
    let secs = n as f64 / steady.max(START_RATE);
    Duration::from_secs_f64(secs.min(86_400.0)).max(START_SPREAD)
}

/// Runs every probe on its schedule until `shutdown` is cancelled, then
/// waits for the runs in flight to finish (each is bounded by its timeout).
pub async fn run(
    probes: Vec<Arc<ProbeSpec>>,
    concurrency: usize,
    sink: Sink,
    shutdown: CancellationToken,
) {
    let (_keep, updates) = mpsc::unbounded_channel();
    let gates = Arc::new(HostGates::default());
    run_with_updates(probes, concurrency, sink, shutdown, updates, gates).await;
}

/// Manners towards a target host: the least time between the starts of
/// two runs against it (`scheduler.host_spacing`, by host name, `*` for
/// every other host). A run waits for its host's next free slot before it
/// takes a permit, so waiting holds no permit; the wait counts as lag.
#[derive(Debug, Default)]
pub struct HostGates {
    spacing: std::collections::BTreeMap<String, Duration>,
    next_free: std::sync::Mutex<HashMap<String, Instant>>,
}

impl HostGates {
    pub fn new(spacing: std::collections::BTreeMap<String, Duration>) -> HostGates {
        HostGates {
            spacing,
            next_free: Default::default(),
        }
    }

    /// When a run against `host` may start, reserving that slot; `None`
    /// when the host has no spacing.
    fn reserve(&self, host: &str) -> Option<Instant> {
        let gap = self
            .spacing
            .get(host)
            .or_else(|| self.spacing.get("*"))
            .copied()
            .filter(|g| !g.is_zero())?;
        let now = Instant::now();
        let mut next = self
            .next_free
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let slot = match next.get(host) {
            Some(t) if *t > now => *t,
            _ => now,
        };
        next.insert(host.to_string(), slot + gap);
        Some(slot)
    }
}

/// The host a probe's runs connect to, for [`HostGates`] (HTTP, status
/// page, TCP and TLS probes; a flow's first step), lower case.
fn target_host(spec: &ProbeSpec) -> Option<String> {
    use crate::probe::ProbeKind;
    let host = match &spec.kind {
        ProbeKind::Http(h) => h.url.host_str()?.to_string(),
        ProbeKind::Statuspage(sp) => sp.http.url.host_str()?.to_string(),
        ProbeKind::Flow(f) => f.steps.first()?.http.url.host_str()?.to_string(),
        ProbeKind::Tcp(t) => t.host.clone(),
        ProbeKind::Tls(t) => t.host.clone(),
        _ => return None,
    };
    Some(host.trim_matches(['[', ']']).to_ascii_lowercase())
}

/// The longest `Retry-After` honoured: a target asking for more is probed
/// again after this.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// How long the target asked the next run to wait (`retry_after_s`, which
/// the HTTP kind records from a 429 or 503 answer's `Retry-After`).
fn retry_after(r: &ProbeResult) -> Option<Duration> {
    let s = r.details.get("retry_after_s")?.as_f64()?;
    (s.is_finite() && s > 0.0).then(|| Duration::from_secs_f64(s).min(MAX_RETRY_AFTER))
}

/// [`run`], taking new probe sets from `updates` (a configuration
/// reload). A probe whose definition is unchanged keeps its task, so its
/// schedule goes on as if nothing happened; a changed one is restarted
/// with its new definition and an added one started, both within
/// two seconds; a removed one is stopped (a run in flight finishes and
/// its result is still delivered). Definitions are compared by
/// [`fingerprint`].
pub async fn run_with_updates(
    probes: Vec<Arc<ProbeSpec>>,
    concurrency: usize,
    sink: Sink,
    shutdown: CancellationToken,
    mut updates: mpsc::UnboundedReceiver<Vec<Arc<ProbeSpec>>>,
    gates: Arc<HostGates>,
) {
    let shared = Arc::new(Shared {
        permits: Semaphore::new(concurrency.max(1)),
        gates,
        sink,
        shutdown: shutdown.clone(),
    });
    let epoch = Instant::now();
    let spread = start_spread(&probes);
    let mut tasks = JoinSet::new();
    let start = |spec: Arc<ProbeSpec>,
                 epoch: Instant,
                 first: Instant,
                 tasks: &mut JoinSet<()>|
     -> Running {
        let state = Arc::new(TaskState::default());
        let abort = tasks.spawn(probe_loop(
            spec.clone(),
            epoch,
            first,
            shared.clone(),
            state.clone(),
        ));
        Running {
            fingerprint: fingerprint(&spec),
            spec,
            state,
            abort,
        }
    };
    let mut running: Vec<Running> = Vec::with_capacity(probes.len());
    for spec in probes {
        let first = first_due(&spec, epoch, spread);
        running.push(start(spec, epoch, first, &mut tasks));
    }
    let mut updates_open = true;
    loop {
        tokio::select! {
            joined = tasks.join_next() => match joined {
                Some(Err(e)) if !e.is_cancelled() => {
                    // A panic in a probe is a bug; the other probes keep running.
                    tracing::error!(error = %e, "probe task ended abnormally");
                }
                Some(_) => {}
                // Every task ended: after shutdown, or a reload that left
                // no probes (then wait for the next one).
                None if shutdown.is_cancelled() || !updates_open => break,
                None => tokio::select! {
                    _ = shutdown.cancelled() => break,
                    u = updates.recv() => match u {
                        Some(u) => apply(u, &mut running, &mut tasks, &start),
                        None => break,
                    },
                },
            },
            u = updates.recv(), if updates_open => match u {
                Some(u) if !shutdown.is_cancelled() => apply(u, &mut running, &mut tasks, &start),
                Some(_) => {}
                None => updates_open = false,
            },
        }
    }
}

/// What every probe task shares (one pointer a task).
struct Shared {
    permits: Semaphore,
    gates: Arc<HostGates>,
    sink: Sink,
    shutdown: CancellationToken,
}

/// A probe's task, as the scheduler knows it: 32 bytes and one small
/// allocation a probe (10,000 probes: well under 1 MB).
struct Running {
    spec: Arc<ProbeSpec>,
    fingerprint: u64,
    state: Arc<TaskState>,
    abort: tokio::task::AbortHandle,
}

/// Whether a probe's task is between runs, in a run, or told to stop: a
/// task between runs is stopped by aborting it (it is only sleeping or
/// waiting for a permit); one in a run finishes the run, delivers its
/// result and then stops.
#[derive(Default)]
struct TaskState(std::sync::atomic::AtomicU8);

const IDLE: u8 = 0;
const RUNNING: u8 = 1;
const STOP: u8 = 2;

impl TaskState {
    /// The task is about to run; false if it was told to stop.
    fn begin_run(&self) -> bool {
        use std::sync::atomic::Ordering::{AcqRel, Acquire};
        self.0
            .compare_exchange(IDLE, RUNNING, AcqRel, Acquire)
            .is_ok()
    }

    /// The run finished; false if the task was told to stop meanwhile.
    fn end_run(&self) -> bool {
        use std::sync::atomic::Ordering::{AcqRel, Acquire};
        self.0
            .compare_exchange(RUNNING, IDLE, AcqRel, Acquire)
            .is_ok()
    }
}

impl Running {
    /// Stops the task: at once when it is between runs, after its run
    /// otherwise.
    fn stop(&self) {
        use std::sync::atomic::Ordering::AcqRel;
        // A running task sees STOP when its run ends.
        if self.state.0.swap(STOP, AcqRel) == IDLE {
            self.abort.abort();
        }
    }
}

/// Brings the running tasks in line with `probes` (see [`run_with_updates`]).
fn apply(
    probes: Vec<Arc<ProbeSpec>>,
    running: &mut Vec<Running>,
    tasks: &mut JoinSet<()>,
    start: &impl Fn(Arc<ProbeSpec>, Instant, Instant, &mut JoinSet<()>) -> Running,
) {
    let now = Instant::now();
    let mut old: HashMap<String, Running> = running
        .drain(..)
        .map(|r| (r.spec.name.clone(), r))
        .collect();
    for spec in probes {
        match old.remove(&spec.name) {
            Some(r) if r.fingerprint == fingerprint(&spec) => running.push(r),
            prev => {
                if let Some(prev) = prev {
                    prev.stop();
                }
                let first = first_due(&spec, now, START_SPREAD);
                running.push(start(spec, now, first, tasks));
            }
        }
    }
    for (_, gone) in old {
        gone.stop();
    }
}

/// What makes two definitions of a probe the same: everything but where
/// it is written (moving a probe within a file changes nothing), as a
/// 64-bit hash of the definition's `Debug` form, streamed into the hasher
/// (with 10,000 probes the forms themselves would be megabytes).
pub fn fingerprint(spec: &ProbeSpec) -> u64 {
    use std::fmt::Write as _;
    struct Feed(std::collections::hash_map::DefaultHasher);
    impl std::fmt::Write for Feed {
        fn write_str(&mut self, s: &str) -> std::fmt::Result {
            self.0.write(s.as_bytes());
            Ok(())
        }
    }
    let ProbeSpec {
        name,
        description,
        kind,
        schedule,
        timeout,
        expect_latency,
        labels,
        depends_on,
        alert,
        locations,
        defined_at: _,
    } = spec;
    let mut f = Feed(std::collections::hash_map::DefaultHasher::new());
    let _ = write!(
        f,
        "{name:?}{description:?}{kind:?}{schedule:?}{timeout:?}{expect_latency:?}{labels:?}{depends_on:?}{alert:?}{locations:?}"
    );
    f.0.finish()
}

async fn probe_loop(
    spec: Arc<ProbeSpec>,
    epoch: Instant,
    mut due: Instant,
    shared: Arc<Shared>,
    state: Arc<TaskState>,
) {
    let Shared {
        permits,
        gates,
        sink,
        shutdown,
    } = &*shared;
    // Only looked up when some host has a spacing: no string held per task
    // otherwise.
    let host = if gates.spacing.is_empty() {
        None
    } else {
        target_host(&spec)
    };
    // One cancellation future for the task's life: it registers with the
    // token once, instead of registering and unregistering (a lock shared
    // by every probe task) twice per run.
    let cancelled = shutdown.cancelled();
    tokio::pin!(cancelled);
    loop {
        tokio::select! {
            biased;
            _ = cancelled.as_mut() => return,
            _ = tokio::time::sleep_until(due) => {}
        }
        if let Some(slot) = host.as_deref().and_then(|h| gates.reserve(h)) {
            tokio::select! {
                biased;
                _ = cancelled.as_mut() => return,
                _ = tokio::time::sleep_until(slot) => {}
            }
        }
        let permit = tokio::select! {
            biased;
            _ = cancelled.as_mut() => return,
            p = permits.acquire() => p,
        };
        let Ok(permit) = permit else { return };
        if !state.begin_run() {
            return;
        }
        let lag = Instant::now().saturating_duration_since(due);
        // Boxed: the run's state (a connection, buffers, a TLS session)
        // exists only while it runs, instead of sizing every idle task for
        // the largest probe kind (BENCHMARKS.md, issue 6).
        let result = Box::pin(run_once(&spec)).await;
        drop(permit);
        let wait = retry_after(&result);
        sink(result, RunMeta { due, lag });
        if !state.end_run() {
            return; // removed or changed by a reload while it ran
        }
        let now = Instant::now();
        due = match next_due(&spec, epoch, due, now) {
            Some(d) => d,
            None => {
                tracing::warn!(probe = %spec.name, "cron schedule has no future run; probe stopped");
                return;
            }
        };
        // The target asked for a pause (429/503 with Retry-After): the next
        // run is on the first slot after it, not before.
        if let Some(wait) = wait.filter(|w| now + *w > due) {
            tracing::info!(probe = %spec.name, retry_after_s = wait.as_secs_f64(),
                "the target asked to wait (Retry-After); next run after that");
            due = next_due(&spec, epoch, due, now + wait).unwrap_or(now + wait);
        }
    }
}

/// A stable offset in `[0, span)` derived from the probe's name.
pub fn offset(name: &str, span: Duration) -> Duration {
    let nanos = span.as_nanos() as u64;
    if nanos == 0 {
        return Duration::ZERO;
    }
    let mut h = std::collections::hash_map::DefaultHasher::new();
    name.hash(&mut h);
    Duration::from_nanos(h.finish() % nanos)
}

/// When a probe first runs: soon after start, spread over `spread` (see
/// [`start_spread`]) or the interval, if shorter; cron probes at their first
/// cron time.
pub fn first_due(spec: &ProbeSpec, epoch: Instant, spread: Duration) -> Instant {
    match &spec.schedule {
        Schedule::Interval(i) => epoch + offset(&spec.name, (*i).min(spread)),
        Schedule::Cron { cron, .. } => {
            cron_next(cron, epoch).unwrap_or(epoch + Duration::from_secs(86_400 * 365))
        }
    }
}

/// The due time after a run that was due at `last`, finishing at `now`.
///
/// Interval probes run in slots `epoch + phase + k * interval`, where the
/// phase is the probe's stable offset; the next slot is the first at least
/// half an interval after `last` (so the first, spread run is not followed
/// immediately by a second) and not in the past (missed slots are skipped,
/// never run in a burst).
pub fn next_due(spec: &ProbeSpec, epoch: Instant, last: Instant, now: Instant) -> Option<Instant> {
    match &spec.schedule {
        Schedule::Interval(i) => {
            let interval = *i;
            let phase = offset(&spec.name, interval);
            let earliest = (last + interval / 2).max(now);
            let base = epoch + phase;
            if earliest <= base {
                return Some(base);
            }
            let since = earliest - base;
            let k = since.as_nanos().div_ceil(interval.as_nanos().max(1));
            let k = u32::try_from(k).ok()?;
            Some(base + interval * k)
        }
        Schedule::Cron { cron, .. } => cron_next(cron, now),
    }
}

/// The next cron time after now, as a tokio instant.
fn cron_next(cron: &croner::Cron, now: Instant) -> Option<Instant> {
    let wall = chrono::Utc::now();
    let next = cron.find_next_occurrence(&wall, false).ok()?;
    let wait = (next - wall).to_std().unwrap_or(Duration::ZERO);
    Some(now + wait)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(name: &str, interval: Duration) -> ProbeSpec {
        let yaml = format!(
            "probes:\n  - name: {name}\n    tcp: {{host: 127.0.0.1, port: 9}}\n    interval: {}ms\n    timeout: 100ms\n",
            interval.as_millis()
        );
        let (cfg, _) = crate::config::load_str(
            "t.yaml",
            &yaml,
            crate::config::read::Cx::new(Box::new(|_| None)),
        )
        .unwrap_or_else(|d| panic!("{d}"));
        cfg.probes
            .into_iter()
            .next()
            .map(|p| (*p).clone())
            .unwrap_or_else(|| panic!("one probe"))
    }

    #[test]
    fn offsets_spread_probes_over_the_interval() {
        let span = Duration::from_secs(30);
        let mut buckets = [0usize; 10];
        for i in 0..1000 {
            let o = offset(&format!("probe-{i}"), span);
            assert!(o < span);
            buckets[(o.as_secs_f64() / 3.0) as usize] += 1;
        }
        // Each tenth of the interval gets roughly a tenth of the probes.
        assert!(
            buckets.iter().all(|b| (50..=150).contains(b)),
            "{buckets:?}"
        );
    }

    #[test]
    fn cron_runs_at_the_next_matching_time() {
        let yaml =
            "probes:\n  - name: c\n    tcp: {host: 127.0.0.1, port: 9}\n    cron: \"* * * * *\"\n";
        let (cfg, _) = crate::config::load_str(
            "t.yaml",
            yaml,
            crate::config::read::Cx::new(Box::new(|_| None)),
        )
        .unwrap_or_else(|d| panic!("{d}"));
        let spec = &cfg.probes[0];
        let now = Instant::now();
        let due = next_due(spec, now, now, now).expect("a next minute");
        // Every minute: the next run is at the start of the next minute.
        assert!(
            due > now && due <= now + Duration::from_secs(60),
            "{:?}",
            due - now
        );
        let first = first_due(spec, now, START_SPREAD);
        assert!(first <= now + Duration::from_secs(60));
    }

    #[test]
    fn start_spread_is_short_for_small_fleets_and_never_a_burst_for_large_ones() {
        let fleet = |n: usize, every: Duration| -> Vec<Arc<ProbeSpec>> {
            let one = Arc::new(spec("a", every));
            vec![one; n]
        };
        // A handful of probes: results within START_SPREAD, whatever the interval.
        assert_eq!(
            start_spread(&fleet(50, Duration::from_secs(600))),
            START_SPREAD
        );
        // 10,000 probes every 10 s: started at their steady 1,000/s, over 10 s.
        let s = start_spread(&fleet(10_000, Duration::from_secs(10)));
        assert!((s.as_secs_f64() - 10.0).abs() < 0.01, "{s:?}");
        // 10,000 probes every 10 minutes: at START_RATE, over 50 s.
        let s = start_spread(&fleet(10_000, Duration::from_secs(600)));
        assert!((s.as_secs_f64() - 50.0).abs() < 0.01, "{s:?}");
        // And never longer than a probe's own interval.
        let s10 = spec("b", Duration::from_secs(10));
        let epoch = Instant::now();
        assert!(first_due(&s10, epoch, Duration::from_secs(50)) < epoch + Duration::from_secs(10));
    }

    #[tokio::test(start_paused = true)]
    async fn next_due_keeps_the_interval_and_skips_missed_slots() {
        let s = spec("a", Duration::from_secs(10));
        let epoch = Instant::now();
        let first = first_due(&s, epoch, START_SPREAD);
        assert!(first < epoch + START_SPREAD);
        let second = next_due(&s, epoch, first, first + Duration::from_millis(5)).expect("next");
        let gap = second - first;
        assert!(
            gap >= Duration::from_secs(5) && gap <= Duration::from_secs(15),
            "{gap:?}"
        );
        let third = next_due(&s, epoch, second, second + Duration::from_millis(5)).expect("next");
        assert_eq!(third - second, Duration::from_secs(10));
        // A run that overran two slots resumes at the next slot, not in a burst.
        let late = next_due(&s, epoch, third, third + Duration::from_secs(25)).expect("next");
        assert_eq!(late - third, Duration::from_secs(30));
    }
}
