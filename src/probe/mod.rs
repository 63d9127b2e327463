//! Probe kinds: a closed enum with one module per kind, each with the same
//! small surface: `KEYS` and `EXPECT_KEYS` (the configuration it accepts),
//! `compile` (validate its configuration into a spec), and `run` (one run
//! that records phases, details and expectation checks into a [`Trace`] and
//! returns a typed [`Failure`] when the target is broken).
//!
//! This module owns the one place where a run is bounded by its timeout and
//! turned into a [`ProbeResult`]. A probe never touches the database, never
//! sleeps on a schedule and never talks to a notifier: it only measures.
//!
//! Beside the kinds, what several kinds share: [`net`] (resolving,
//! connecting and TLS handshakes, each a phase), [`tlsutil`] (TLS client
//! configurations and certificates), [`urlutil`] (URLs with masked
//! passwords), [`kept`] (the slot a kept connection waits in) and [`sql`]
//! (the value a query returns).

pub mod dns;
pub mod flow;
pub mod http;
pub mod kept;
pub mod mysql;
pub mod net;
pub mod oauth2;
pub mod postgres;
pub mod redis;
pub mod sql;
pub mod statuspage;
pub mod tcp;
pub mod tls;
pub mod tlsutil;
pub mod urlutil;

use std::time::Duration;

use chrono::Utc;
use tokio::time::Instant;

use crate::config::read::{Cx, Map};
use crate::config::yaml::Node;
use crate::config::ProbeSpec;
use crate::duration::human;
use crate::result::{Check, Failure, FailureClass, Phase, ProbeResult};

/// The kind keys, one of which every probe has.
pub const KIND_KEYS: &[&str] = &[
    "http",
    "tcp",
    "tls",
    "dns",
    "postgres",
    "redis",
    "mysql",
    "statuspage",
    "flow",
];

/// What to probe and how; one variant per kind.
#[derive(Debug, Clone)]
pub enum ProbeKind {
    Http(http::HttpSpec),
    Tcp(tcp::TcpSpec),
    Tls(tls::TlsSpec),
    Dns(dns::DnsSpec),
    Postgres(postgres::PostgresSpec),
    Redis(redis::RedisSpec),
    Mysql(mysql::MysqlSpec),
    Statuspage(statuspage::StatuspageSpec),
    Flow(flow::FlowSpec),
}

impl ProbeKind {
    pub fn name(&self) -> &'static str {
        match self {
            ProbeKind::Http(_) => "http",
            ProbeKind::Tcp(_) => "tcp",
            ProbeKind::Tls(_) => "tls",
            ProbeKind::Dns(_) => "dns",
            ProbeKind::Postgres(_) => "postgres",
            ProbeKind::Redis(_) => "redis",
            ProbeKind::Mysql(_) => "mysql",
            ProbeKind::Statuspage(_) => "statuspage",
            ProbeKind::Flow(_) => "flow",
        }
    }

    /// The keys a kind's `expect:` mapping accepts, besides `latency`.
    pub fn expect_keys(kind: &str) -> &'static [&'static str] {
        match kind {
            "http" => http::EXPECT_KEYS,
            "tcp" => tcp::EXPECT_KEYS,
            "tls" => tls::EXPECT_KEYS,
            "dns" => dns::EXPECT_KEYS,
            "postgres" => postgres::EXPECT_KEYS,
            "redis" => redis::EXPECT_KEYS,
            "mysql" => mysql::EXPECT_KEYS,
            "statuspage" => statuspage::EXPECT_KEYS,
            "flow" => flow::EXPECT_KEYS,
            _ => &[],
        }
    }

    /// Compiles the kind's section (`node`, at `path`) and its expectations
    /// (`expect`, already opened with this kind's keys), reporting problems
    /// into `cx`.
    pub fn compile(
        kind: &str,
        cx: &mut Cx,
        node: &Node,
        path: &str,
        expect: Option<&Map<'_>>,
    ) -> Option<ProbeKind> {
        match kind {
            "http" => http::compile(cx, node, path, expect).map(ProbeKind::Http),
            "tcp" => tcp::compile(cx, node, path, expect).map(ProbeKind::Tcp),
            "tls" => tls::compile(cx, node, path, expect).map(ProbeKind::Tls),
            "dns" => dns::compile(cx, node, path, expect).map(ProbeKind::Dns),
            "postgres" => postgres::compile(cx, node, path, expect).map(ProbeKind::Postgres),
            "redis" => redis::compile(cx, node, path, expect).map(ProbeKind::Redis),
            "mysql" => mysql::compile(cx, node, path, expect).map(ProbeKind::Mysql),
            "statuspage" => statuspage::compile(cx, node, path, expect).map(ProbeKind::Statuspage),
            "flow" => flow::compile(cx, node, path, expect).map(ProbeKind::Flow),
            _ => None,
        }
    }

    /// The target as shown to people (URL, host:port, name); never holds a secret.
    pub fn target(&self) -> String {
        let t = match self {
            ProbeKind::Http(s) => s.target(),
            ProbeKind::Tcp(s) => s.target(),
            ProbeKind::Tls(s) => s.target(),
            ProbeKind::Dns(s) => s.target(),
            ProbeKind::Postgres(s) => s.target(),
            ProbeKind::Redis(s) => s.target(),
            ProbeKind::Mysql(s) => s.target(),
            ProbeKind::Statuspage(s) => s.target(),
            ProbeKind::Flow(s) => s.target(),
        };
        crate::redact::redact(&t)
    }

    /// One run of the kind. Each kind's future is boxed: an `async fn`'s
    /// state is as large as its largest await point, and the database
    /// clients' futures are kilobytes. Unboxed, every probe's idle
    /// scheduler task carries the largest kind's state (measured with
    /// 10,000 HTTP probes: 140 MB peak RSS unboxed, 65 MB boxed); boxed,
    /// that memory exists only while a run is in flight, sized for its kind.
    async fn run(&self, trace: &mut Trace) -> Result<(), Failure> {
        match self {
            ProbeKind::Http(s) => Box::pin(http::run(s, trace)).await,
            ProbeKind::Tcp(s) => Box::pin(tcp::run(s, trace)).await,
            ProbeKind::Tls(s) => Box::pin(tls::run(s, trace)).await,
            ProbeKind::Dns(s) => Box::pin(dns::run(s, trace)).await,
            ProbeKind::Postgres(s) => Box::pin(postgres::run(s, trace)).await,
            ProbeKind::Redis(s) => Box::pin(redis::run(s, trace)).await,
            ProbeKind::Mysql(s) => Box::pin(mysql::run(s, trace)).await,
            ProbeKind::Statuspage(s) => Box::pin(statuspage::run(s, trace)).await,
            ProbeKind::Flow(s) => Box::pin(flow::run(s, trace)).await,
        }
    }
}

/// What a run has seen so far. A probe records each phase as it completes,
/// so when the timeout cuts a run short we still know how far it got.
#[derive(Debug)]
pub struct Trace {
    start: Instant,
    mark: Instant,
    /// The phase the run is waiting on, if any.
    pub waiting_for: Option<Phase>,
    pub phases: Vec<(Phase, Duration)>,
    pub checks: Vec<Check>,
    pub details: serde_json::Map<String, serde_json::Value>,
    /// The run's timeout, when the run is bounded by one (always, under
    /// `run_once`). Kinds pass what is left of it to servers that can
    /// bound their own work, such as a database's statement timeout.
    timeout: Option<Duration>,
    /// The run's W3C trace context: empty (no id, no allocation) until an
    /// HTTP request propagates it (`tracectx::inject`).
    context: crate::tracectx::RunContext,
}

impl Default for Trace {
    fn default() -> Self {
        Trace::new()
    }
}

impl Trace {
    pub fn new() -> Trace {
        let now = Instant::now();
        Trace {
            start: now,
            mark: now,
            waiting_for: None,
            phases: Vec::new(),
            checks: Vec::new(),
            details: serde_json::Map::new(),
            timeout: None,
            context: crate::tracectx::RunContext::default(),
        }
    }

    /// A trace for a run bounded by `timeout`.
    pub fn bounded(timeout: Duration) -> Trace {
        Trace {
            timeout: Some(timeout),
            ..Trace::new()
        }
    }

    /// The run's timeout, if it has one.
    pub fn timeout(&self) -> Option<Duration> {
        self.timeout
    }

    /// Starts timing `phase`.
    pub fn begin(&mut self, phase: Phase) {
        self.mark = Instant::now();
        self.waiting_for = Some(phase);
    }

    /// Ends the phase begun last and records its duration. A phase that
    /// happens more than once (each hop of a redirect) accumulates.
    pub fn end(&mut self) -> Duration {
        let d = self.mark.elapsed();
        if let Some(phase) = self.waiting_for.take() {
            self.add_phase(phase, d);
        }
        d
    }

    /// Records a phase measured elsewhere (e.g. by a library callback).
    pub fn add_phase(&mut self, phase: Phase, d: Duration) {
        match self.phases.iter_mut().find(|(p, _)| *p == phase) {
            Some((_, total)) => *total += d,
            None => self.phases.push((phase, d)),
        }
    }

    pub fn elapsed(&self) -> Duration {
        self.start.elapsed()
    }

    pub fn detail(&mut self, key: &str, value: impl Into<serde_json::Value>) {
        self.details.insert(key.to_string(), value.into());
    }

    /// The run's trace id: created on first use (one per run, shared by
    /// every request of it, a flow's steps too) and recorded then as
    /// `details.trace_id`. `None` only when the system has no randomness
    /// to give; the request then goes without trace headers.
    pub fn trace_id(&mut self) -> Option<crate::tracectx::TraceId> {
        if let Some(id) = self.context.trace_id {
            return Some(id);
        }
        let id = crate::tracectx::TraceId::random()?;
        self.context.trace_id = Some(id);
        self.detail("trace_id", id.to_string());
        Some(id)
    }

    /// The span id for one outgoing request of the run: the run's root
    /// span ([`crate::tracectx::root_span_of`]) for its first request,
    /// unless [`Trace::reserve_root_span`] kept it for the run, and a
    /// fresh one for every other request. Call after [`Trace::trace_id`].
    pub fn request_span(&mut self) -> Option<crate::tracectx::SpanId> {
        let c = &mut self.context;
        let span = match c.trace_id {
            Some(t) if c.sent.is_empty() && !c.root_reserved => crate::tracectx::root_span_of(t),
            Some(_) => crate::tracectx::SpanId::random()?,
            None => return None,
        };
        c.sent.push(span);
        Some(span)
    }

    /// Keeps the root span for the run as a whole, so every request gets
    /// its own child span (a flow: one per step).
    pub fn reserve_root_span(&mut self) {
        self.context.root_reserved = true;
    }

    /// The span ids the run's requests were sent with, in order.
    pub fn spans_sent(&self) -> &[crate::tracectx::SpanId] {
        &self.context.sent
    }

    /// Records one expectation's verdict. `expectation` is written as in
    /// the configuration (`status 2xx`), `observed` is what was seen.
    pub fn check(
        &mut self,
        expectation: impl Into<String>,
        passed: bool,
        observed: impl Into<String>,
    ) {
        self.checks.push(Check {
            expectation: crate::redact::redact(&expectation.into()),
            passed,
            observed: crate::redact::redact(&observed.into()),
        });
    }
}

/// Builds what runs share (TLS configurations and the system trust store)
/// before the first run, so no run's measured time includes one-time
/// set-up. Failures are ignored here: the run itself reports them.
pub async fn prepare(specs: &[std::sync::Arc<ProbeSpec>]) {
    for spec in specs {
        if let ProbeKind::Flow(f) = &spec.kind {
            for step in f.steps.iter().filter(|s| s.http.url.scheme() == "https") {
                let _ = tlsutil::base_config(&step.http.tls).await;
            }
            continue;
        }
        let opts = match &spec.kind {
            ProbeKind::Http(h) if h.url.scheme() == "https" => &h.tls,
            ProbeKind::Statuspage(s) if s.http.url.scheme() == "https" => &s.http.tls,
            ProbeKind::Tls(t) => &t.tls,
            ProbeKind::Postgres(p) if p.sslmode != postgres::SslMode::Disable => &p.tls,
            ProbeKind::Redis(r) => match &r.tls {
                Some(t) => t,
                None => continue,
            },
            _ => continue,
        };
        let _ = tlsutil::base_config(opts).await;
    }
}

/// Runs `spec` once, bounded by its timeout, and returns the full result.
/// This never panics and never takes longer than the timeout plus the time
/// to drop the run's resources.
pub async fn run_once(spec: &ProbeSpec) -> ProbeResult {
    let started_at = Utc::now();
    let mut trace = Trace::bounded(spec.timeout);
    let outcome = tokio::time::timeout(spec.timeout, spec.kind.run(&mut trace)).await;
    let duration = trace.elapsed();
    let mut failure = match outcome {
        Ok(Ok(())) => None,
        Ok(Err(f)) => Some(f),
        Err(_) => {
            let during = trace
                .waiting_for
                .map(|p| format!(" while waiting for {}", p.as_str().replace('_', " ")))
                .unwrap_or_default();
            Some(Failure::new(
                FailureClass::Timeout,
                format!(
                    "{} did not finish within the {} timeout{during}",
                    spec.kind.target(),
                    human(spec.timeout)
                ),
            ))
        }
    };
    if failure
        .as_ref()
        .is_none_or(|f| f.class == FailureClass::Expectation)
    {
        if let Some(cmp) = &spec.expect_latency {
            trace.check(
                format!("latency {cmp}"),
                cmp.holds(duration),
                human(duration),
            );
        }
    }
    if failure.is_none() {
        failure = first_failed_check(&trace.checks);
    }
    ProbeResult {
        probe: spec.name.clone(),
        started_at,
        duration,
        success: failure.is_none(),
        failure,
        phases: trace.phases,
        checks: trace.checks,
        details: trace.details,
        location: None,
    }
}

/// The failure of the first expectation that did not hold, if any; its
/// message names the expectation and what was seen instead.
pub(crate) fn first_failed_check(checks: &[Check]) -> Option<Failure> {
    let failed: Vec<&Check> = checks.iter().filter(|c| !c.passed).collect();
    let first = failed.first()?;
    let more = match failed.len() {
        1 => String::new(),
        n => format!(" (and {} more failed expectations)", n - 1),
    };
    Some(Failure::new(
        FailureClass::Expectation,
        format!(
            "expected {}, got {}{more}",
            first.expectation, first.observed
        ),
    ))
}
