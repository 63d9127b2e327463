//! Configuration: the main file, its includes, and the compile step that
//! turns them into validated runtime types.
//!
//! Loading happens in two stages. [`yaml`] parses each file into a tree of
//! nodes that remember their line and column; [`compile`] walks those trees
//! with the readers in [`read`], merging `defaults` into every probe and
//! collecting *every* problem as a [`diag::Diagnostic`] before deciding. No
//! configuration with an error is ever returned, and nothing here performs
//! I/O beyond reading the configuration and secret files.

pub mod compile;
pub mod diag;
pub mod read;
pub mod yaml;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub use compile::{load, load_str, load_with};
pub use diag::{Diagnostic, Diagnostics};

use crate::expect::DurationCmp;
use crate::probe::ProbeKind;

/// A validated configuration, ready to run.
#[derive(Debug, Clone)]
pub struct Config {
    /// The main file, as given.
    pub main_file: PathBuf,
    /// Every file that was read, main file first (watched for reloads).
    pub files: Vec<PathBuf>,
    pub storage: Storage,
    pub server: Server,
    pub scheduler: SchedulerSettings,
    pub notifiers: BTreeMap<String, Notifier>,
    pub probes: Vec<Arc<ProbeSpec>>,
    /// How the notice outbox retries and expires.
    pub outbox: OutboxConfig,
    /// Maintenance windows that silence notices while they last.
    pub maintenance: Vec<crate::alert::maintenance::MaintenanceWindow>,
    /// Trace context sent by HTTP probes, the trace link, OTLP export.
    pub tracing: TracingConfig,
    /// Where this instance runs (`location`, or `LOOKOUT_LOCATION`): it
    /// runs only the probes whose `locations` list it (or that list none)
    /// and stamps its results with it. `None`: a single, unnamed place.
    pub location: Option<Arc<str>>,
}

/// The `tracing:` section (see [`crate::tracectx`]). Its propagation
/// settings are also compiled into each HTTP probe's spec.
#[derive(Debug, Clone, PartialEq)]
pub struct TracingConfig {
    /// Send `traceparent` on HTTP probes' requests (default true).
    pub propagate: bool,
    /// An extra vendor header beside `traceparent`.
    pub vendor_header: Option<crate::tracectx::VendorHeader>,
    /// A URL template holding `{trace_id}`: where a trace is shown.
    pub link: Option<String>,
    /// Export each run as an OpenTelemetry span, when set.
    pub otlp: Option<OtlpConfig>,
}

impl Default for TracingConfig {
    fn default() -> Self {
        TracingConfig {
            propagate: true,
            vendor_header: None,
            link: None,
            otlp: None,
        }
    }
}

/// `tracing.otlp`: where spans go (OTLP/HTTP with JSON bodies).
#[derive(Clone, PartialEq)]
pub struct OtlpConfig {
    /// The full URL spans are POSTed to, e.g.
    /// `http://127.0.0.1:4318/v1/traces`.
    pub endpoint: url::Url,
    /// Extra request headers (a token); values are registered secrets and
    /// marked sensitive.
    pub headers: Vec<(http::HeaderName, http::HeaderValue)>,
    /// `service.name` of the spans' resource.
    pub service_name: String,
}

/// Shows header names, never their values, and the endpoint redacted.
impl std::fmt::Debug for OtlpConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.headers.iter().map(|(n, _)| n.as_str()).collect();
        f.debug_struct("OtlpConfig")
            .field("endpoint", &crate::redact::redact(self.endpoint.as_str()))
            .field("headers", &names)
            .field("service_name", &self.service_name)
            .finish()
    }
}

impl Config {
    pub fn probe(&self, name: &str) -> Option<&ProbeSpec> {
        self.probes.iter().find(|p| p.name == name).map(|p| &**p)
    }

    /// The probes this instance runs: those that [`ProbeSpec::runs_in`]
    /// its location, in configuration order.
    pub fn local_probes(&self) -> Vec<Arc<ProbeSpec>> {
        self.probes_in(self.location.as_deref())
    }

    /// The probes an instance at `location` runs, in configuration order.
    pub fn probes_in(&self, location: Option<&str>) -> Vec<Arc<ProbeSpec>> {
        self.probes
            .iter()
            .filter(|p| p.runs_in(location))
            .cloned()
            .collect()
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Storage {
    /// Path of the SQLite database, resolved against the main file's folder.
    /// Unused when `postgres` is set.
    pub sqlite: PathBuf,
    /// `storage.postgres`: a PostgreSQL database shared by several
    /// instances, instead of SQLite.
    pub postgres: Option<Postgres>,
    /// How long every single result is kept.
    pub retention_raw: Duration,
    /// How long per-minute rollups are kept (at most `retention_rollups`).
    pub retention_minute_rollups: Duration,
    /// How long per-hour rollups are kept.
    pub retention_rollups: Duration,
    /// Most results held in memory while the database cannot be written
    /// (disk full, locked); beyond it the oldest are dropped and counted.
    pub buffer: usize,
}

/// `storage.postgres`: where the shared history database is.
#[derive(Clone, PartialEq)]
pub struct Postgres {
    /// A `postgres://` (or `postgresql://`) URL; its password is a
    /// registered secret.
    pub url: String,
}

/// Shows the URL with its password masked (in the user part and in a
/// `password=` parameter).
impl std::fmt::Debug for Postgres {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let shown = crate::probe::postgres::shown_url(&self.url);
        f.debug_struct("Postgres")
            .field("url", &crate::redact::redact(&shown))
            .finish()
    }
}

#[derive(Clone, PartialEq)]
pub struct Server {
    pub listen: SocketAddr,
    /// Bearer token the API and `/metrics` require, when set.
    pub token: Option<String>,
    /// Credentials the pages (and, as an alternative to the token, the
    /// API) require, when set.
    pub basic_auth: Option<BasicAuth>,
    /// The URL people reach the status page at, for links in notices
    /// (e.g. `https://lookout.example.com`); no trailing slash.
    pub public_url: Option<String>,
}

impl Default for Server {
    fn default() -> Server {
        Server {
            listen: SocketAddr::from(([127, 0, 0, 1], 9464)),
            token: None,
            basic_auth: None,
            public_url: None,
        }
    }
}

/// Shows whether credentials are set, never their values.
impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("listen", &self.listen)
            .field("token", &self.token.as_ref().map(|_| "***"))
            .field("basic_auth", &self.basic_auth)
            .field("public_url", &self.public_url)
            .finish()
    }
}

/// `server.basic_auth`: one user name and password.
#[derive(Clone, PartialEq)]
pub struct BasicAuth {
    pub user: String,
    pub password: String,
}

/// Shows the user, never the password.
impl std::fmt::Debug for BasicAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BasicAuth")
            .field("user", &self.user)
            .field("password", &"***")
            .finish()
    }
}

/// The `outbox:` section: retry and expiry of queued notices.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxConfig {
    /// A notice still undelivered this long after it was queued expires.
    pub max_age: Duration,
    /// The first retry delay; it doubles up to `retry_max`.
    pub retry_initial: Duration,
    pub retry_max: Duration,
}

impl Default for OutboxConfig {
    fn default() -> Self {
        OutboxConfig {
            max_age: Duration::from_secs(24 * 3600),
            retry_initial: Duration::from_secs(5),
            retry_max: Duration::from_secs(600),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct SchedulerSettings {
    /// Most probe runs in flight at once, across all probes.
    pub concurrency: usize,
    /// Least time between the starts of two runs against one host, by
    /// lower-case host name; `*` applies to every other host.
    pub host_spacing: BTreeMap<String, Duration>,
}

/// The default bound on runs in flight. It caps descriptors and memory; it
/// is not a throttle. A hanging run holds its permit for its whole
/// timeout, and the semaphore is fair, so once more probes hang at once
/// than there are permits, every other probe (healthy ones too) queues
/// behind them for up to a timeout per run: with the former 512, 1,000
/// hanging targets delayed 1 s probes by up to 3.6 s (tests/it/faults.rs).
/// 4,096 means no fleet of up to 4,096 probes ever waits for a permit, and
/// with the default 30 s interval and 10 s timeout a fleet of ~12,000
/// probes that all hang at once has about a third of them in flight. The
/// price at the bound, all permits held by hanging runs: 4,096 sockets
/// (the daemon raises its soft open-files limit at start, `limits.rs`)
/// and ~28 KiB per hanging probe (measured, debug build), about 110 MiB.
pub const DEFAULT_CONCURRENCY: usize = 4096;
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(30);
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9464";

/// A notifier as configured. Sending is the alerting module's job.
#[derive(Debug, Clone, PartialEq)]
pub enum Notifier {
    Email {
        /// lettre SMTP URL; may hold a password, so it is never shown unredacted.
        smtp: String,
        from: String,
        to: Vec<String>,
        /// Extra CA certificates trusted for the SMTP server's TLS.
        ca: Option<std::sync::Arc<crate::probe::tlsutil::CustomCa>>,
    },
    Slack {
        webhook: String,
    },
    Webhook {
        url: String,
        headers: BTreeMap<String, String>,
        /// Key for the HMAC signature header, when set.
        secret: Option<String>,
        /// Extra CA certificates trusted for the receiver's TLS.
        ca: Option<std::sync::Arc<crate::probe::tlsutil::CustomCa>>,
    },
}

impl Notifier {
    /// The extra CA certificates this notifier trusts, if configured.
    pub fn ca(&self) -> Option<std::sync::Arc<crate::probe::tlsutil::CustomCa>> {
        match self {
            Notifier::Email { ca, .. } | Notifier::Webhook { ca, .. } => ca.clone(),
            Notifier::Slack { .. } => None,
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Notifier::Email { .. } => "email",
            Notifier::Slack { .. } => "slack",
            Notifier::Webhook { .. } => "webhook",
        }
    }
}

#[derive(Debug, Clone)]
pub enum Schedule {
    /// Every `interval`, offset by a stable per-probe jitter.
    Interval(Duration),
    /// At the times a cron expression names (UTC).
    Cron {
        expr: String,
        cron: Box<croner::Cron>,
    },
}

impl std::fmt::Display for Schedule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Schedule::Interval(d) => write!(f, "every {}", crate::duration::human(*d)),
            Schedule::Cron { expr, .. } => write!(f, "cron \"{expr}\""),
        }
    }
}

/// When a probe's failures become an incident and who is told.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertSpec {
    /// False when the probe says `alert: false`.
    pub enabled: bool,
    pub after: u32,
    pub recover_after: u32,
    pub remind: Option<Duration>,
    pub notify: Vec<String>,
    /// `alert.degraded`: when a probe that is up counts as degraded.
    pub degraded: Option<DegradeSpec>,
    /// How long before an incident's start a change event is cited in its
    /// notice.
    pub events_window: Duration,
    /// `alert.locations`: in how many locations a run must fail for it to
    /// count as a failure (1: any one).
    pub locations: u32,
}

/// `alert.events_window` when not given.
pub const DEFAULT_EVENTS_WINDOW: Duration = Duration::from_secs(30 * 60);

impl Default for AlertSpec {
    fn default() -> Self {
        AlertSpec {
            enabled: true,
            after: 3,
            recover_after: 2,
            remind: None,
            notify: Vec::new(),
            degraded: None,
            events_window: DEFAULT_EVENTS_WINDOW,
            locations: 1,
        }
    }
}

/// `alert.degraded`: the soft rules under which a probe that passes is
/// still not well. Either rule opens a degradation (an incident of kind
/// `degraded`, notified like an outage but marked as such).
#[derive(Debug, Clone, PartialEq)]
pub struct DegradeSpec {
    /// A passing run slower than this is slow; `after` slow runs in a row
    /// open a degradation.
    pub latency: Option<Duration>,
    /// `(F, N)`: F failed runs among the last N (N at most 64) open one,
    /// whether or not they were consecutive.
    pub failures: Option<(u32, u32)>,
    pub after: u32,
    /// Runs in a row with neither rule holding that close it.
    pub recover_after: u32,
    /// `anomaly`: learn the probe's normal latency per hour of the week and
    /// open a degradation on a sustained deviation from it.
    pub anomaly: Option<AnomalySpec>,
}

/// `alert.degraded.anomaly`: the knobs of [`crate::detect`] an operator
/// sets; the rest keep their defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct AnomalySpec {
    pub detect: crate::detect::DetectConfig,
}

/// The most runs `alert.degraded.failures` can look back over.
pub const MAX_RATE_WINDOW: u32 = 64;

/// One probe, fully validated and with defaults applied.
#[derive(Debug, Clone)]
pub struct ProbeSpec {
    pub name: String,
    pub description: Option<String>,
    pub kind: ProbeKind,
    pub schedule: Schedule,
    pub timeout: Duration,
    /// The `latency` expectation, which every kind accepts.
    pub expect_latency: Option<DurationCmp>,
    pub labels: BTreeMap<String, String>,
    pub depends_on: Vec<String>,
    pub alert: AlertSpec,
    /// The locations that run this probe; empty: every location.
    pub locations: Vec<String>,
    /// Where the probe is defined, `file:line`, for messages.
    pub defined_at: String,
}

impl ProbeSpec {
    /// Whether an instance at `location` runs this probe: every instance
    /// when the probe lists no `locations`, otherwise only one whose
    /// location is listed (an instance without a location runs none of
    /// those).
    pub fn runs_in(&self, location: Option<&str>) -> bool {
        self.locations.is_empty() || location.is_some_and(|l| self.locations.iter().any(|x| x == l))
    }
}

/// Resolves `p` against `base` unless it is absolute.
pub fn resolve_path(base: &Path, p: &str) -> PathBuf {
    let path = PathBuf::from(p);
    if path.is_absolute() {
        path
    } else {
        base.join(path)
    }
}
