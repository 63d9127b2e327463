//! `/metrics`: the Prometheus text exposition (format 0.0.4), written by hand.
//!
//! Two parts:
//! - per-probe families from each probe's latest result (`probe_success`,
//!   `probe_duration_seconds`, `probe_http_*`, `probe_ssl_earliest_cert_expiry`,
//!   `probe_dns_answer_rrs`), with blackbox_exporter's meanings, and
//!   `lookout_probe_state` from the alerting board;
//! - Lookout's own `lookout_*` families, kept by [`Registry`] and fed by the
//!   daemon's sink (counters and histograms), the recorder's counters and
//!   write latency, the outbox task's [`NotifyCounters`], and what a scrape
//!   reads at once ([`Scrape`]: open incidents, outbox rows by status).
//!
//! When the instance has a `location`, every `probe_*` series carries it as
//! a last `location` label, so several instances' scrapes can be told
//! apart; without one the output is as before.
//!
//! Label values come only from configured probe names and labels, kinds,
//! phases, failure classes, the location and the version: never a message
//! or a URL.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use crate::alert::AlertView;
use crate::result::{Phase, ProbeResult};
use crate::server::ProbeInfo;
use crate::store::outbox::OutboxCounts;
use crate::store::recorder::RecorderStats;

/// The Content-Type of the exposition.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Buckets of `lookout_probe_duration_seconds`.
pub const DURATION_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// Buckets of `lookout_scheduler_lag_seconds`.
pub const LAG_BUCKETS: &[f64] = &[0.0005, 0.001, 0.002, 0.005, 0.01, 0.05, 0.1, 1.0];
/// Buckets of `lookout_db_write_seconds`.
pub const DB_WRITE_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// The values of `lookout_probe_state`'s `state` label, all shown for
/// every probe (1 for the current one, 0 for the others).
pub const PROBE_STATES: &[&str] = &[
    "pending",
    "up",
    "degraded",
    "down",
    "dependency",
    "maintenance",
];

/// Label names the per-probe families set themselves; configured labels
/// with these names are skipped.
const RESERVED: &[&str] = &["probe", "kind", "phase", "state", "le"];

/// A histogram: per-bucket counts (not cumulative; cumulated when shown),
/// sum and count.
#[derive(Debug, Clone)]
pub struct Histogram {
    bounds: &'static [f64],
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    pub fn new(bounds: &'static [f64]) -> Histogram {
        Histogram {
            bounds,
            counts: vec![0; bounds.len()],
            sum: 0.0,
            count: 0,
        }
    }

    pub fn observe(&mut self, v: f64) {
        if let Some(i) = self.bounds.iter().position(|b| v <= *b) {
            self.counts[i] += 1;
        }
        self.sum += v;
        self.count += 1;
    }

    /// Writes `_bucket` (cumulative, ending with `+Inf`), `_sum` and `_count`.
    fn write(&self, out: &mut Exposition, name: &str, labels: &[(String, String)]) {
        let mut cumulative = 0;
        let bucket = format!("{name}_bucket");
        for (b, c) in self.bounds.iter().zip(&self.counts) {
            cumulative += c;
            let mut l = labels.to_vec();
            l.push(("le".into(), fmt_value(*b)));
            out.sample(&bucket, &l, cumulative as f64);
        }
        let mut l = labels.to_vec();
        l.push(("le".into(), "+Inf".into()));
        out.sample(&bucket, &l, self.count as f64);
        out.sample(&format!("{name}_sum"), labels, self.sum);
        out.sample(&format!("{name}_count"), labels, self.count as f64);
    }
}

/// A histogram of database write times behind a short lock, shared
/// between the recorder (writer) and `/metrics`.
#[derive(Debug)]
pub struct DbWriteHistogram(Mutex<Histogram>);

impl Default for DbWriteHistogram {
    fn default() -> Self {
        DbWriteHistogram(Mutex::new(Histogram::new(DB_WRITE_BUCKETS)))
    }
}

impl DbWriteHistogram {
    pub fn observe(&self, d: Duration) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .observe(d.as_secs_f64());
    }

    pub fn snapshot(&self) -> Histogram {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// What became of one delivery attempt, as `lookout_notifications_total`
/// counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum NotifyOutcome {
    /// The receiver accepted the notice.
    Delivered,
    /// A permanent failure: the notice will not be sent again.
    Failed,
    /// A transient failure: the notice will be sent again later.
    Retried,
}

impl NotifyOutcome {
    pub const ALL: [NotifyOutcome; 3] = [
        NotifyOutcome::Delivered,
        NotifyOutcome::Failed,
        NotifyOutcome::Retried,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            NotifyOutcome::Delivered => "delivered",
            NotifyOutcome::Failed => "failed",
            NotifyOutcome::Retried => "retried",
        }
    }
}

/// Delivery attempts per notifier and outcome, counted by the outbox task
/// and shown by `/metrics`. Configured notifiers start at 0 for every
/// outcome, so their series exist before the first notice.
#[derive(Debug, Default)]
pub struct NotifyCounters(Mutex<BTreeMap<(String, NotifyOutcome), u64>>);

impl NotifyCounters {
    pub fn new<'a>(notifiers: impl IntoIterator<Item = &'a String>) -> NotifyCounters {
        let mut map = BTreeMap::new();
        for n in notifiers {
            for o in NotifyOutcome::ALL {
                map.insert((n.clone(), o), 0);
            }
        }
        NotifyCounters(Mutex::new(map))
    }

    /// Counts one attempt of `notifier` (a configured name: never a URL).
    pub fn count(&self, notifier: &str, outcome: NotifyOutcome) {
        let mut map = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        *map.entry((notifier.to_string(), outcome)).or_default() += 1;
    }

    /// How many attempts of `notifier` ended with `outcome`.
    pub fn get(&self, notifier: &str, outcome: NotifyOutcome) -> u64 {
        let map = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        map.get(&(notifier.to_string(), outcome))
            .copied()
            .unwrap_or(0)
    }

    fn snapshot(&self) -> BTreeMap<(String, NotifyOutcome), u64> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// A run's (outcome, failure class) labels.
type Outcome = (&'static str, &'static str);

#[derive(Debug, Default)]
struct Inner {
    /// probe -> (outcome, class) -> runs. Nested so that counting a run of
    /// a probe already seen allocates nothing (no key `String` per result);
    /// the inner list is kept sorted and usually holds one or two entries
    /// (a `BTreeMap` there cost ~500 bytes per probe, 5 MB with 10,000).
    results: BTreeMap<String, Vec<(Outcome, u64)>>,
    /// kind -> run durations.
    durations: BTreeMap<&'static str, Histogram>,
    lag: Option<Histogram>,
}

/// Lookout's own metrics, shared between the sink (writer) and `/metrics`.
#[derive(Debug, Default)]
pub struct Registry {
    /// probe name -> kind, to label results (the sink only has the name).
    kinds: std::sync::RwLock<HashMap<String, &'static str>>,
    inner: Mutex<Inner>,
    recorder: OnceLock<Arc<RecorderStats>>,
    notifications: OnceLock<Arc<NotifyCounters>>,
    /// The OTLP exporter's counters, when `tracing.otlp` is configured.
    otlp: OnceLock<Arc<crate::otlp::ExportStats>>,
    /// Scrapes that could not read the outbox counts.
    outbox_scrape_errors: AtomicU64,
    /// The last scrape could not read them (to log only the first failure).
    outbox_failing: AtomicBool,
    /// Configuration reloads: applied, refused, whether the last attempt
    /// was refused, and when the running configuration was loaded (unix s;
    /// 0 until [`Registry::config_loaded`]).
    reloads_ok: AtomicU64,
    reloads_failed: AtomicU64,
    last_reload_failed: AtomicBool,
    config_loaded_at: std::sync::atomic::AtomicI64,
    /// With several instances: whether this one leads alerting.
    leading: OnceLock<tokio::sync::watch::Receiver<bool>>,
}

impl Registry {
    /// Shows `lookout_alerting_leader` from now on (several instances on
    /// PostgreSQL, `alert/leader.rs`).
    pub fn set_leading(&self, leading: tokio::sync::watch::Receiver<bool>) {
        let _ = self.leading.set(leading);
    }

    pub fn new(probes: &[ProbeInfo]) -> Registry {
        Registry {
            kinds: std::sync::RwLock::new(
                probes.iter().map(|p| (p.name.clone(), p.kind)).collect(),
            ),
            ..Registry::default()
        }
    }

    /// The running configuration was loaded at `unix_s` (at start, or by a
    /// reload, which `reload` says).
    pub fn config_loaded(&self, unix_s: i64, reload: bool) {
        self.config_loaded_at.store(unix_s, Ordering::Relaxed);
        self.last_reload_failed.store(false, Ordering::Relaxed);
        if reload {
            self.reloads_ok.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A reload was refused (the configuration had errors); the previous
    /// one keeps running.
    pub fn config_refused(&self) {
        self.reloads_failed.fetch_add(1, Ordering::Relaxed);
        self.last_reload_failed.store(true, Ordering::Relaxed);
    }

    /// Whether `probe` is configured (a run of a probe removed by a reload
    /// may finish after the reload).
    pub fn knows(&self, probe: &str) -> bool {
        self.kinds
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .contains_key(probe)
    }

    /// Takes a reloaded set of probes: new ones are labelled with their
    /// kind, and removed ones' series disappear from the next scrape.
    pub fn set_probes(&self, probes: &[ProbeInfo]) {
        let kinds: HashMap<String, &'static str> =
            probes.iter().map(|p| (p.name.clone(), p.kind)).collect();
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        inner.results.retain(|name, _| kinds.contains_key(name));
        drop(inner);
        *self.kinds.write().unwrap_or_else(PoisonError::into_inner) = kinds;
    }

    /// Exposes the recorder's counters from now on (first call wins).
    pub fn set_recorder(&self, stats: Arc<RecorderStats>) {
        let _ = self.recorder.set(stats);
    }

    /// Exposes the OTLP exporter's counters from now on (first call wins).
    pub fn set_otlp(&self, stats: Arc<crate::otlp::ExportStats>) {
        let _ = self.otlp.set(stats);
    }

    /// Exposes the outbox task's delivery counters from now on (first call
    /// wins).
    pub fn set_notifications(&self, counters: Arc<NotifyCounters>) {
        let _ = self.notifications.set(counters);
    }

    /// Records whether this scrape could read the outbox counts; returns
    /// true when that changed since the last scrape (to log it once).
    pub fn outbox_scrape(&self, ok: bool) -> bool {
        if !ok {
            self.outbox_scrape_errors.fetch_add(1, Ordering::Relaxed);
        }
        self.outbox_failing.swap(!ok, Ordering::Relaxed) == ok
    }

    /// Counts one run: its outcome, its duration (per kind) and how late
    /// the scheduler started it. A short lock; never blocks on I/O.
    pub fn observe(&self, r: &ProbeResult, lag: Duration) {
        let kind = self
            .kinds
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&r.probe)
            .copied()
            .unwrap_or("unknown");
        let (outcome, class) = match r.class() {
            None if r.success => ("success", "none"),
            None => ("failure", "none"),
            Some(c) => ("failure", c.as_str()),
        };
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let key = (outcome, class);
        let per = match inner.results.get_mut(r.probe.as_str()) {
            Some(per) => per,
            None => inner.results.entry(r.probe.clone()).or_default(),
        };
        match per.binary_search_by(|(k, _)| k.cmp(&key)) {
            Ok(i) => per[i].1 += 1,
            Err(i) => per.insert(i, (key, 1)),
        }
        inner
            .durations
            .entry(kind)
            .or_insert_with(|| Histogram::new(DURATION_BUCKETS))
            .observe(r.duration.as_secs_f64());
        inner
            .lag
            .get_or_insert_with(|| Histogram::new(LAG_BUCKETS))
            .observe(lag.as_secs_f64());
    }

    fn write(&self, out: &mut Exposition) {
        let inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        out.family(
            "lookout_results_total",
            "counter",
            "Probe runs finished, by probe, outcome and failure class (none on success).",
        );
        let rows = inner
            .results
            .iter()
            .flat_map(|(probe, per)| per.iter().map(move |(oc, n)| (probe, oc, n)));
        for (probe, (outcome, class), n) in rows {
            out.sample(
                "lookout_results_total",
                &[
                    ("probe".into(), probe.clone()),
                    ("outcome".into(), (*outcome).into()),
                    ("class".into(), (*class).into()),
                ],
                *n as f64,
            );
        }
        out.family(
            "lookout_probe_duration_seconds",
            "histogram",
            "Duration of probe runs, by probe kind.",
        );
        for (kind, h) in &inner.durations {
            h.write(
                out,
                "lookout_probe_duration_seconds",
                &[("kind".into(), (*kind).into())],
            );
        }
        out.family(
            "lookout_scheduler_lag_seconds",
            "histogram",
            "How late runs started: from due time to start, including the wait for a permit.",
        );
        inner
            .lag
            .clone()
            .unwrap_or_else(|| Histogram::new(LAG_BUCKETS))
            .write(out, "lookout_scheduler_lag_seconds", &[]);
        drop(inner);

        out.family(
            "lookout_build_info",
            "gauge",
            "Always 1; the version label is Lookout's version.",
        );
        out.sample(
            "lookout_build_info",
            &[("version".into(), env!("CARGO_PKG_VERSION").into())],
            1.0,
        );

        if let Some(leading) = self.leading.get() {
            out.family(
                "lookout_alerting_leader",
                "gauge",
                "1 while this instance leads alerting and sends notices (several instances on one PostgreSQL), else 0.",
            );
            let lead = *leading.borrow();
            out.sample("lookout_alerting_leader", &[], if lead { 1.0 } else { 0.0 });
        }
        out.family(
            "lookout_config_last_reload_successful",
            "gauge",
            "1 if the last configuration load or reload succeeded, 0 if the last reload was refused (the previous configuration keeps running).",
        );
        let failed = self.last_reload_failed.load(Ordering::Relaxed);
        out.sample(
            "lookout_config_last_reload_successful",
            &[],
            if failed { 0.0 } else { 1.0 },
        );
        out.family(
            "lookout_config_last_reload_success_timestamp_seconds",
            "gauge",
            "When the running configuration was loaded (unix seconds).",
        );
        out.sample(
            "lookout_config_last_reload_success_timestamp_seconds",
            &[],
            self.config_loaded_at.load(Ordering::Relaxed) as f64,
        );
        out.family(
            "lookout_config_reloads_total",
            "counter",
            "Configuration reloads (SIGHUP or a changed file), by result.",
        );
        for (result, n) in [
            ("success", &self.reloads_ok),
            ("failure", &self.reloads_failed),
        ] {
            out.sample(
                "lookout_config_reloads_total",
                &[("result".into(), result.into())],
                n.load(Ordering::Relaxed) as f64,
            );
        }

        if let Some(o) = self.otlp.get() {
            for (name, help, v) in [
                (
                    "lookout_otlp_spans_exported_total",
                    "Runs whose span the OTLP collector accepted.",
                    &o.exported,
                ),
                (
                    "lookout_otlp_spans_dropped_total",
                    "Runs whose span was dropped because the export queue was full.",
                    &o.dropped,
                ),
                (
                    "lookout_otlp_spans_failed_total",
                    "Runs whose span batch was given up after its tries or refused.",
                    &o.failed,
                ),
                (
                    "lookout_otlp_request_errors_total",
                    "Export requests that failed, retried ones included.",
                    &o.failed_requests,
                ),
            ] {
                out.family(name, "counter", help);
                out.sample(name, &[], v.load(Ordering::Relaxed) as f64);
            }
        }

        if let Some(stats) = self.recorder.get() {
            let c = stats.snapshot();
            for (name, kind, help, v) in [
                (
                    "lookout_results_written_total",
                    "counter",
                    "Results written to the history database.",
                    c.written,
                ),
                (
                    "lookout_result_write_errors_total",
                    "counter",
                    "Failed write attempts to the history database (each is retried).",
                    c.write_errors,
                ),
                (
                    "lookout_results_dropped_total",
                    "counter",
                    "Results lost before being written (full buffer or after stop).",
                    c.dropped,
                ),
                (
                    "lookout_results_buffered",
                    "gauge",
                    "Results accepted and not yet written.",
                    c.buffered,
                ),
            ] {
                out.family(name, kind, help);
                out.sample(name, &[], v as f64);
            }
            out.family(
                "lookout_db_write_seconds",
                "histogram",
                "Time to write one batch of results to the history database (every attempt).",
            );
            stats
                .write_seconds()
                .write(out, "lookout_db_write_seconds", &[]);
        }

        if let Some(counters) = self.notifications.get() {
            out.family(
                "lookout_notifications_total",
                "counter",
                "Notice delivery attempts by notifier and outcome: delivered, failed \
                 (permanently; not retried) or retried (transient failure).",
            );
            for ((notifier, outcome), n) in counters.snapshot() {
                out.sample(
                    "lookout_notifications_total",
                    &[
                        ("notifier".into(), notifier),
                        ("outcome".into(), outcome.as_str().into()),
                    ],
                    n as f64,
                );
            }
        }

        out.family(
            "lookout_scrape_errors_total",
            "counter",
            "Scrapes that left out a family because its source could not be read, by family.",
        );
        out.sample(
            "lookout_scrape_errors_total",
            &[("family".into(), "lookout_outbox_notices".into())],
            self.outbox_scrape_errors.load(Ordering::Relaxed) as f64,
        );
    }
}

/// What one scrape shows besides the registry: the probes, their latest
/// results and alerting state, and what was read for this scrape.
pub struct Scrape<'a> {
    pub probes: &'a [ProbeInfo],
    pub latest: &'a HashMap<String, ProbeResult>,
    /// The alerting board's snapshot, by probe name.
    pub alerts: &'a HashMap<String, AlertView>,
    /// Open incidents ([`crate::alert::AlertBoard::open_incidents`]).
    pub incidents_open: usize,
    /// Outbox rows by status; `None` leaves `lookout_outbox_notices` out
    /// (no database, or it could not be read for this scrape).
    pub outbox: Option<OutboxCounts>,
    /// This instance's location: the `location` label of `probe_*` series.
    pub location: Option<&'a str>,
}

/// The whole exposition: per-probe families from the latest results, the
/// alerting state and outbox, then the registry's.
pub fn render(scrape: &Scrape<'_>, registry: &Registry) -> String {
    let (probes, latest) = (scrape.probes, scrape.latest);
    let mut out = Exposition::default();
    let runs: Vec<(Vec<(String, String)>, &ProbeResult)> = probes
        .iter()
        .filter_map(|p| {
            latest
                .get(&p.name)
                .map(|r| (probe_labels(p, scrape.location), r))
        })
        .collect();

    out.family(
        "probe_success",
        "gauge",
        "Whether the probe's latest run succeeded (1) or failed (0).",
    );
    for (l, r) in &runs {
        out.sample("probe_success", l, if r.success { 1.0 } else { 0.0 });
    }
    out.family(
        "probe_duration_seconds",
        "gauge",
        "Duration of the probe's latest run in seconds.",
    );
    for (l, r) in &runs {
        out.sample("probe_duration_seconds", l, r.duration.as_secs_f64());
    }
    out.family(
        "probe_http_status_code",
        "gauge",
        "HTTP status code of the latest run's final response.",
    );
    for (l, r) in &runs {
        if let Some(code) = r.details.get("status").and_then(|v| v.as_f64()) {
            out.sample("probe_http_status_code", l, code);
        }
    }
    out.family(
        "probe_http_duration_seconds",
        "gauge",
        "Duration of each phase of the latest HTTP run in seconds.",
    );
    for (l, r) in &runs {
        if l.iter().any(|(k, v)| k == "kind" && v == "http") {
            for (phase, d) in &r.phases {
                let name = match phase {
                    Phase::Dns => "resolve",
                    Phase::Connect => "connect",
                    Phase::Tls => "tls",
                    Phase::FirstByte => "processing",
                    Phase::Transfer => "transfer",
                    _ => continue,
                };
                // `location`, when there is one, stays the last label.
                let mut l = l.clone();
                let at = l.len() - usize::from(scrape.location.is_some());
                l.insert(at, ("phase".into(), name.into()));
                out.sample("probe_http_duration_seconds", &l, d.as_secs_f64());
            }
        }
    }
    out.family(
        "probe_ssl_earliest_cert_expiry",
        "gauge",
        "Expiry of the peer's leaf certificate in the latest run, in unix seconds.",
    );
    for (l, r) in &runs {
        let expiry = r
            .details
            .get("cert_not_after")
            .and_then(|v| v.as_str())
            .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok());
        if let Some(t) = expiry {
            out.sample("probe_ssl_earliest_cert_expiry", l, t.timestamp() as f64);
        }
    }
    out.family(
        "probe_dns_answer_rrs",
        "gauge",
        "Number of answer records in the latest DNS run.",
    );
    for (l, r) in &runs {
        let n = match r.details.get("answers") {
            Some(serde_json::Value::Array(a)) => Some(a.len() as f64),
            Some(v) => v.as_f64(),
            None => None,
        };
        if let Some(n) = n {
            out.sample("probe_dns_answer_rrs", l, n);
        }
    }
    write_alerting(&mut out, scrape);
    registry.write(&mut out);
    out.text
}

/// `lookout_probe_state` (every state, 1 for the current one),
/// `lookout_incidents_open` and `lookout_outbox_notices`.
fn write_alerting(out: &mut Exposition, scrape: &Scrape<'_>) {
    out.family(
        "lookout_probe_state",
        "gauge",
        "1 for the probe's current alerting state, 0 for the others: pending (not yet \
         decided), up, down, dependency (down while a dependency is down) or maintenance.",
    );
    for p in scrape.probes {
        let current = scrape
            .alerts
            .get(&p.name)
            .map_or("pending", AlertView::state);
        for state in PROBE_STATES {
            out.sample(
                "lookout_probe_state",
                &[
                    ("probe".into(), p.name.clone()),
                    ("kind".into(), p.kind.into()),
                    ("state".into(), (*state).into()),
                ],
                if *state == current { 1.0 } else { 0.0 },
            );
        }
    }
    out.family(
        "lookout_incidents_open",
        "gauge",
        "Probes down with an open incident (dependency-caused ones included).",
    );
    out.sample("lookout_incidents_open", &[], scrape.incidents_open as f64);
    if let Some(c) = &scrape.outbox {
        out.family(
            "lookout_outbox_notices",
            "gauge",
            "Notices in the outbox by status: pending (to be sent or retried), failed \
             (permanently) and expired (not delivered within the outbox max age).",
        );
        for (status, n) in [
            ("pending", c.pending),
            ("failed", c.failed),
            ("expired", c.expired),
        ] {
            out.sample(
                "lookout_outbox_notices",
                &[("status".into(), status.into())],
                n as f64,
            );
        }
    }
}

/// `probe`, `kind`, then the configured labels with sanitized names, then
/// `location` when the instance has one; names that clash with ours (or
/// each other, after sanitizing) are skipped.
fn probe_labels(p: &ProbeInfo, location: Option<&str>) -> Vec<(String, String)> {
    let mut l: Vec<(String, String)> = vec![
        ("probe".into(), p.name.clone()),
        ("kind".into(), p.kind.into()),
    ];
    for (k, v) in &p.labels {
        let Some(name) = sanitize_label_name(k) else {
            continue;
        };
        if RESERVED.contains(&name.as_str())
            || l.iter().any(|(n, _)| *n == name)
            || (location.is_some() && name == "location")
        {
            continue;
        }
        l.push((name, v.clone()));
    }
    if let Some(loc) = location {
        l.push(("location".into(), loc.into()));
    }
    l
}

/// A valid Prometheus label name (`[a-zA-Z_][a-zA-Z0-9_]*`): other
/// characters become `_`, a leading digit gets a `_` before it. `None` for
/// an empty name or one starting with `__` (reserved by Prometheus).
pub fn sanitize_label_name(name: &str) -> Option<String> {
    let mut s: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if s.starts_with(|c: char| c.is_ascii_digit()) {
        s.insert(0, '_');
    }
    if s.is_empty() || s.starts_with("__") {
        None
    } else {
        Some(s)
    }
}

/// Escapes a label value: `\` → `\\`, `"` → `\"`, newline → `\n`.
pub fn escape_label_value(v: &str) -> String {
    let mut s = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => s.push_str("\\\\"),
            '"' => s.push_str("\\\""),
            '\n' => s.push_str("\\n"),
            c => s.push(c),
        }
    }
    s
}

/// A sample value as Prometheus writes it (`+Inf`, `-Inf`, `NaN`).
pub fn fmt_value(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v == f64::INFINITY {
        "+Inf".into()
    } else if v == f64::NEG_INFINITY {
        "-Inf".into()
    } else {
        format!("{v}")
    }
}

#[derive(Default)]
struct Exposition {
    text: String,
}

impl Exposition {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.text, "# HELP {name} {help}");
        let _ = writeln!(self.text, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(String, String)], v: f64) {
        self.text.push_str(name);
        if !labels.is_empty() {
            self.text.push('{');
            for (i, (k, val)) in labels.iter().enumerate() {
                if i > 0 {
                    self.text.push(',');
                }
                let _ = write!(self.text, "{k}=\"{}\"", escape_label_value(val));
            }
            self.text.push('}');
        }
        let _ = writeln!(self.text, " {}", fmt_value(v));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_names_are_sanitized() {
        assert_eq!(sanitize_label_name("team").as_deref(), Some("team"));
        assert_eq!(
            sanitize_label_name("app.kubernetes/io-name").as_deref(),
            Some("app_kubernetes_io_name")
        );
        assert_eq!(sanitize_label_name("1tier").as_deref(), Some("_1tier"));
        assert_eq!(sanitize_label_name(""), None);
        assert_eq!(sanitize_label_name("__name__"), None);
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape_label_value("a\\b\"c\nd"), "a\\\\b\\\"c\\nd");
    }

    fn view(state: &crate::alert::ProbeState, maintenance: bool) -> AlertView {
        AlertView::of(state, maintenance)
    }

    #[test]
    fn alerting_outbox_notifications_and_write_latency() {
        use crate::alert::{ProbeState, Status};
        let probes: Vec<ProbeInfo> = ["a", "b", "c"]
            .iter()
            .map(|n| ProbeInfo {
                name: (*n).into(),
                kind: "tcp",
                target: "t".into(),
                schedule: "every 1s".into(),
                labels: BTreeMap::new(),
            })
            .collect();
        let registry = Registry::new(&probes);
        let notifiers = ["mail".to_string()];
        let counters = Arc::new(NotifyCounters::new(&notifiers));
        counters.count("mail", NotifyOutcome::Retried);
        counters.count("mail", NotifyOutcome::Delivered);
        registry.set_notifications(counters);
        let stats = Arc::new(RecorderStats::default());
        registry.set_recorder(stats.clone());
        let up = ProbeState {
            status: Status::Up,
            ..ProbeState::new()
        };
        let alerts: HashMap<String, AlertView> = [
            ("a".to_string(), view(&up, false)),
            ("b".to_string(), view(&up, true)),
        ]
        .into_iter()
        .collect();
        let latest = HashMap::new();
        let mut scrape = Scrape {
            probes: &probes,
            latest: &latest,
            alerts: &alerts,
            incidents_open: 2,
            outbox: Some(OutboxCounts {
                pending: 3,
                delivered: 9,
                failed: 1,
                expired: 0,
            }),
            location: None,
        };
        let text = render(&scrape, &registry);
        for want in [
            "lookout_probe_state{probe=\"a\",kind=\"tcp\",state=\"up\"} 1\n",
            "lookout_probe_state{probe=\"a\",kind=\"tcp\",state=\"pending\"} 0\n",
            "lookout_probe_state{probe=\"a\",kind=\"tcp\",state=\"maintenance\"} 0\n",
            "lookout_probe_state{probe=\"b\",kind=\"tcp\",state=\"maintenance\"} 1\n",
            "lookout_probe_state{probe=\"b\",kind=\"tcp\",state=\"up\"} 0\n",
            // Not on the board yet: pending.
            "lookout_probe_state{probe=\"c\",kind=\"tcp\",state=\"pending\"} 1\n",
            "lookout_incidents_open 2\n",
            "lookout_outbox_notices{status=\"pending\"} 3\n",
            "lookout_outbox_notices{status=\"failed\"} 1\n",
            "lookout_outbox_notices{status=\"expired\"} 0\n",
            "lookout_notifications_total{notifier=\"mail\",outcome=\"delivered\"} 1\n",
            "lookout_notifications_total{notifier=\"mail\",outcome=\"failed\"} 0\n",
            "lookout_notifications_total{notifier=\"mail\",outcome=\"retried\"} 1\n",
            "lookout_db_write_seconds_count 0\n",
            "lookout_scrape_errors_total{family=\"lookout_outbox_notices\"} 0\n",
        ] {
            assert!(text.contains(want), "missing {want:?} in\n{text}");
        }
        // Every state per probe, one of them 1.
        assert_eq!(
            text.matches("lookout_probe_state{").count(),
            3 * PROBE_STATES.len()
        );
        assert!(!text.contains("status=\"delivered\""));

        // A scrape that could not read the outbox leaves the family out and
        // counts the error.
        assert!(registry.outbox_scrape(false));
        assert!(!registry.outbox_scrape(false));
        scrape.outbox = None;
        let text = render(&scrape, &registry);
        assert!(!text.contains("lookout_outbox_notices{"), "{text}");
        assert!(!text.contains("# TYPE lookout_outbox_notices"), "{text}");
        assert!(text.contains("lookout_scrape_errors_total{family=\"lookout_outbox_notices\"} 2\n"));
        assert!(registry.outbox_scrape(true));
    }

    /// With a location every `probe_*` series ends with its label (a
    /// configured `location` label gives way); Lookout's own families and
    /// an instance without a location are unchanged.
    #[test]
    fn probe_series_carry_the_instance_location() {
        use crate::result::Phase;
        let probes = vec![ProbeInfo {
            name: "web".into(),
            kind: "http",
            target: "t".into(),
            schedule: "every 1s".into(),
            labels: [("team", "core"), ("location", "configured")]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }];
        let registry = Registry::new(&probes);
        let mut details = serde_json::Map::new();
        details.insert("status".into(), 200.into());
        let result = ProbeResult {
            probe: "web".into(),
            started_at: chrono::Utc::now(),
            duration: Duration::from_millis(20),
            success: true,
            failure: None,
            phases: vec![(Phase::Dns, Duration::from_millis(1))],
            checks: vec![],
            details,
            location: Some("eu-west".into()),
        };
        let latest: HashMap<String, ProbeResult> = [("web".to_string(), result)].into();
        let alerts = HashMap::new();
        let scrape = |location| Scrape {
            probes: &probes,
            latest: &latest,
            alerts: &alerts,
            incidents_open: 0,
            outbox: None,
            location,
        };

        let text = render(&scrape(Some("eu-west")), &registry);
        let l = r#"probe="web",kind="http",team="core",location="eu-west""#;
        for want in [
            format!("probe_success{{{l}}} 1\n"),
            format!("probe_duration_seconds{{{l}}} 0.02\n"),
            format!("probe_http_status_code{{{l}}} 200\n"),
            r#"probe_http_duration_seconds{probe="web",kind="http",team="core",phase="resolve",location="eu-west"} 0.001"#.into(),
            r#"lookout_probe_state{probe="web",kind="http",state="pending"} 1"#.into(),
        ] {
            assert!(text.contains(&want), "missing {want:?} in\n{text}");
        }
        assert!(!text.contains("configured"), "{text}");
        assert_eq!(text.matches("location=").count(), 4, "{text}");

        let text = render(&scrape(None), &registry);
        let l = r#"probe="web",kind="http",location="configured",team="core""#;
        assert!(
            text.contains(&format!("probe_success{{{l}}} 1\n")),
            "{text}"
        );
        assert!(!text.contains("eu-west"), "{text}");
    }

    #[test]
    fn values_are_formatted() {
        assert_eq!(fmt_value(1.0), "1");
        assert_eq!(fmt_value(0.005), "0.005");
        assert_eq!(fmt_value(f64::INFINITY), "+Inf");
        assert_eq!(fmt_value(f64::NAN), "NaN");
    }
}
