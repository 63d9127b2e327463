//! The alerting engine: every probe's [`ProbeState`], the dependency graph
//! and the maintenance windows; turns results and the passing of time into
//! notices, one [`Outgoing`] per notifier.
//!
//! Rules, in order of precedence:
//!
//! * `alert: false`: the state is tracked, nothing is ever sent.
//! * Dependencies: a probe whose incident opens while one of its
//!   `depends_on` (directly or transitively) is down is attributed to that
//!   dependency (`caused_by`, the nearest one whose own incident is not
//!   itself attributed) and sends nothing. The dependency's Opened and
//!   Reminder notices list such probes in `dependents`. When the dependency
//!   resolves, each dependent still down is attributed afresh (to another
//!   dependency still down) or sends its own Opened notice then. A dependent
//!   that already sent its own notice before its dependency went down keeps
//!   its incident (and its reminders and resolution).
//! * Maintenance: while a window covers a probe, its Opened and Reminder
//!   notices are held back. An incident still open when the window ends is
//!   announced by [`Engine::tick`]; one that opens and resolves inside the
//!   window sends nothing. A Resolved notice for an incident that *was*
//!   announced is always sent, even inside a window, so nobody is left
//!   believing a probe is still down.
//! * A Resolved notice goes out only for an incident whose Opened notice
//!   went out, to the same notifiers.
//!
//! Before any of this, a result from one of several locations is turned
//! into its effective outcome under `alert.locations` (see [`super::quorum`]);
//! with one location it is taken as it is.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

use chrono::{DateTime, Utc};

use super::maintenance::{silenced, MaintenanceWindow};
use super::quorum::Quorum;
use super::state::{Incident, IncidentKind, ProbeState, Status, Transition, Verdict};
use crate::config::{Config, ProbeSpec};
use crate::notify::{Notice, NoticeKind};
use crate::result::ProbeResult;

/// One notice for one notifier.
#[derive(Debug, Clone, PartialEq)]
pub struct Outgoing {
    pub notifier: String,
    pub notice: Notice,
}

struct Probe {
    spec: Arc<ProbeSpec>,
    /// The redacted target, computed once.
    target: String,
    /// Transitive `depends_on`, nearest first.
    ancestors: Vec<String>,
    state: ProbeState,
    /// Each location's latest result, for `alert.locations` (not saved).
    quorum: Quorum,
}

/// Every probe's alerting state.
pub struct Engine {
    probes: BTreeMap<String, Probe>,
    /// Probe names, dependencies before their dependents.
    order: Vec<String>,
    windows: Vec<MaintenanceWindow>,
    public_url: Option<String>,
    /// `tracing.link`: turns a trace id into a link in notices.
    trace_link: Option<String>,
    /// Incidents resolved and not yet taken by [`Engine::take_closed`].
    closed: Vec<(String, Incident)>,
}

impl Engine {
    pub fn new(config: &Config) -> Engine {
        let deps: BTreeMap<&str, &[String]> = config
            .probes
            .iter()
            .map(|p| (p.name.as_str(), p.depends_on.as_slice()))
            .collect();
        let mut depth_memo = BTreeMap::new();
        let mut probes = BTreeMap::new();
        for spec in &config.probes {
            let ancestors = ancestors(&spec.name, &deps);
            depth(&spec.name, &deps, &mut depth_memo, &mut BTreeSet::new());
            probes.insert(
                spec.name.clone(),
                Probe {
                    target: spec.kind.target(),
                    spec: spec.clone(),
                    ancestors,
                    state: ProbeState::new(),
                    quorum: Quorum::default(),
                },
            );
        }
        let mut order: Vec<String> = probes.keys().cloned().collect();
        order.sort_by_key(|n| depth_memo.get(n.as_str()).copied().unwrap_or(0));
        Engine {
            probes,
            order,
            windows: config.maintenance.clone(),
            public_url: config
                .server
                .public_url
                .as_ref()
                .map(|u| u.trim_end_matches('/').to_string()),
            trace_link: config.tracing.link.clone(),
            closed: Vec::new(),
        }
    }

    /// Takes a new configuration (a reload). Probes that are still
    /// configured keep their state — streaks, open incident, each
    /// location's latest result — whether or not their definition changed;
    /// added probes start pending. A removed probe's quorum is dropped, and
    /// its open incident is closed as `removed` (ended now, saved with
    /// the next save) and, if its Opened notice went out, a Resolved notice
    /// with state `removed` tells the same notifiers, so nobody is left
    /// waiting for a recovery that cannot come. Returns those notices.
    pub fn reconfigure(&mut self, config: &Config, now: DateTime<Utc>) -> Vec<Outgoing> {
        let mut next = Engine::new(config);
        let mut out = Vec::new();
        let removed: Vec<String> = self
            .probes
            .keys()
            .filter(|n| !next.probes.contains_key(n.as_str()))
            .cloned()
            .collect();
        for name in removed {
            let taken = self.probes.get_mut(&name).map(|p| {
                let degraded = p.state.degraded.as_mut().and_then(|d| d.incident.take());
                (p.state.incident.take(), degraded)
            });
            let Some((down, degraded)) = taken else {
                continue;
            };
            if let Some(mut inc) = degraded {
                inc.ended_at = Some(now);
                inc.ended_by = Some("removed".into());
                self.closed.push((name.clone(), *inc));
            }
            let Some(mut inc) = down else {
                continue;
            };
            inc.ended_at = Some(now);
            inc.ended_by = Some("removed".into());
            if inc.notified && self.enabled(&name) {
                let mut notice = self.notice(&name, NoticeKind::Resolved, &inc, now, Vec::new());
                notice.state = "removed".into();
                self.fan_out(&name, notice, &mut out);
            }
            tracing::warn!(
                probe = %name,
                incident = inc.id,
                "probe removed from the configuration while down; incident closed as removed"
            );
            self.closed.push((name, *inc));
        }
        for (name, p) in std::mem::take(&mut self.probes) {
            if let Some(kept) = next.probes.get_mut(&name) {
                kept.state = p.state;
                kept.quorum = p.quorum;
            }
        }
        next.closed = std::mem::take(&mut self.closed);
        *self = next;
        out
    }

    /// Takes the ids the database gave incidents, `(probe, kind,
    /// started_at, id)`, so later notices (reminders, the resolution) carry them.
    pub fn set_incident_ids(&mut self, ids: &[(String, IncidentKind, DateTime<Utc>, i64)]) {
        for (probe, kind, started_at, id) in ids {
            let open = self.probes.get_mut(probe).and_then(|p| match kind {
                IncidentKind::Down => p.state.incident.as_deref_mut(),
                IncidentKind::Degraded => p.state.degraded_incident_mut(),
            });
            if let Some(inc) = open {
                if inc.started_at == *started_at {
                    inc.id = Some(*id);
                }
            }
        }
    }

    /// Whether maintenance windows are configured (time alone can then
    /// change what a probe's view shows).
    pub fn has_windows(&self) -> bool {
        !self.windows.is_empty()
    }

    /// Takes the anomaly watch's word about `name` (see
    /// [`ProbeState::set_anomaly`]); returns the notices it causes.
    pub fn on_anomaly(
        &mut self,
        name: &str,
        reason: Option<String>,
        since: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Vec<Outgoing> {
        let Some(p) = self.probes.get_mut(name) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        if p.state.set_anomaly(reason, since, now) == Transition::Opened {
            self.announce_kind(name, IncidentKind::Degraded, now, &mut out);
        }
        out
    }

    /// Sets `name`'s slow-trend finding; true when it changed.
    pub fn set_trend(&mut self, name: &str, trend: Option<String>) -> bool {
        match self.probes.get_mut(name) {
            Some(p) => p.state.set_trend(trend),
            None => false,
        }
    }

    /// `tracing.link`, the template that turns a trace id into a URL.
    pub fn trace_link(&self) -> Option<&str> {
        self.trace_link.as_deref()
    }

    /// The alerting settings of one probe, if it is configured.
    pub fn alert_spec(&self, name: &str) -> Option<&crate::config::AlertSpec> {
        self.probes.get(name).map(|p| &p.spec.alert)
    }

    /// The state of one probe, if it is configured.
    pub fn state(&self, name: &str) -> Option<&ProbeState> {
        self.probes.get(name).map(|p| &p.state)
    }

    /// Incidents resolved since the last call, with their probe, for the
    /// incident history.
    pub fn take_closed(&mut self) -> Vec<(String, Incident)> {
        std::mem::take(&mut self.closed)
    }

    /// Puts back incidents taken by [`Engine::take_closed`] that could not
    /// be saved, so the next save writes them.
    pub fn return_closed(&mut self, mut closed: Vec<(String, Incident)>) {
        closed.append(&mut self.closed);
        self.closed = closed;
    }

    /// Every probe's state, by name.
    pub fn states(&self) -> impl Iterator<Item = (&str, &ProbeState)> {
        self.probes.iter().map(|(n, p)| (n.as_str(), &p.state))
    }

    /// Replaces a probe's state (restoring from the database); false when
    /// the probe is not configured.
    pub fn restore(&mut self, name: &str, state: ProbeState) -> bool {
        match self.probes.get_mut(name) {
            Some(p) => {
                p.state = state;
                true
            }
            None => false,
        }
    }

    /// True when a maintenance window covers `name` at `now`.
    pub fn in_maintenance(&self, name: &str, now: DateTime<Utc>) -> bool {
        self.probes
            .get(name)
            .is_some_and(|p| silenced(&self.windows, &p.spec, now))
    }

    /// Applies one result (its effective outcome across locations, see
    /// [`super::quorum`]); returns the notices it causes. Results of
    /// probes that are not configured are ignored.
    pub fn on_result(&mut self, result: &ProbeResult, now: DateTime<Utc>) -> Vec<Outgoing> {
        let name = result.probe.as_str();
        let Some(p) = self.probes.get_mut(name) else {
            return Vec::new();
        };
        let effective = p.quorum.observe(&p.spec, &p.state, result);
        let (success, failure) = match &effective {
            Some(e) => (e.success, e.failure.as_ref()),
            None => (result.success, result.failure.as_ref()),
        };
        let verdict = Verdict {
            at: result.started_at,
            success,
            failure,
            latency: Some(result.duration),
        };
        let transition = p.state.observe(&p.spec.alert, verdict);
        let degradation = match &p.spec.alert.degraded {
            Some(rules) => p.state.observe_degradation(rules, verdict),
            None => Transition::None,
        };
        let mut out = Vec::new();
        match transition {
            Transition::None | Transition::BecameUp | Transition::Superseded(_) => {}
            Transition::Opened => {
                let cause = self.root_cause(name);
                if let Some(inc) = self.incident_mut(name) {
                    inc.caused_by = cause.clone();
                }
                if cause.is_none() {
                    self.announce(name, now, &mut out);
                }
            }
            Transition::Resolved(inc) => {
                self.closed.push((name.to_string(), inc.clone()));
                let released = self.dependents(name);
                if inc.notified && self.enabled(name) {
                    let notice =
                        self.notice(name, NoticeKind::Resolved, &inc, now, released.clone());
                    self.fan_out(name, notice, &mut out);
                }
                self.release(&released, now, &mut out);
            }
        }
        match degradation {
            Transition::Opened => self.announce_kind(name, IncidentKind::Degraded, now, &mut out),
            Transition::Resolved(inc) => {
                self.closed.push((name.to_string(), inc.clone()));
                if inc.notified && self.enabled(name) {
                    let notice = self.notice(name, NoticeKind::Resolved, &inc, now, Vec::new());
                    self.fan_out(name, notice, &mut out);
                }
            }
            Transition::Superseded(inc) => self.closed.push((name.to_string(), inc)),
            Transition::None | Transition::BecameUp => {}
        }
        out
    }

    /// Notices that are due because time passed: reminders, and incidents
    /// whose announcement a maintenance window held back.
    pub fn tick(&mut self, now: DateTime<Utc>) -> Vec<Outgoing> {
        let mut out = Vec::new();
        // Only probes with an open incident can owe a notice to time; most
        // have none, so the names are not all copied every tick.
        let open: Vec<String> = self
            .order
            .iter()
            .filter(|n| {
                self.probes.get(n.as_str()).is_some_and(|p| {
                    p.state.incident.is_some() || p.state.degraded_incident().is_some()
                })
            })
            .cloned()
            .collect();
        for name in open {
            // A degradation a maintenance window held back is owed too
            // (degradations have no reminders).
            if self
                .probes
                .get(&name)
                .and_then(|p| p.state.degraded_incident())
                .is_some_and(|i| !i.notified)
            {
                self.announce_kind(&name, IncidentKind::Degraded, now, &mut out);
            }
            let Some(p) = self.probes.get(&name) else {
                continue;
            };
            let Some(inc) = &p.state.incident else {
                continue;
            };
            if p.state.status != Status::Down || inc.caused_by.is_some() {
                continue;
            }
            if !inc.notified {
                self.announce(&name, now, &mut out);
                continue;
            }
            let Some(remind) = p.spec.alert.remind else {
                continue;
            };
            let last = inc.last_notice_at.unwrap_or(inc.opened_at);
            let due = chrono::Duration::from_std(remind)
                .ok()
                .and_then(|r| last.checked_add_signed(r));
            if due.is_none_or(|d| d > now)
                || !p.spec.alert.enabled
                || silenced(&self.windows, &p.spec, now)
            {
                continue;
            }
            let inc = inc.clone();
            let dependents = self.dependents(&name);
            let notice = self.notice(&name, NoticeKind::Reminder, &inc, now, dependents);
            self.fan_out(&name, notice, &mut out);
            if let Some(i) = self.incident_mut(&name) {
                i.last_notice_at = Some(now);
            }
        }
        out
    }

    /// Re-attributes the dependents of a dependency that resolved: each is
    /// attributed to another dependency that is still down, or announced.
    fn release(&mut self, released: &[String], now: DateTime<Utc>, out: &mut Vec<Outgoing>) {
        for name in released {
            if let Some(inc) = self.incident_mut(name) {
                inc.caused_by = None;
            }
        }
        // Dependencies first, so a dependent sees its dependency's new cause.
        let ordered: Vec<String> = self
            .order
            .iter()
            .filter(|n| released.contains(n))
            .cloned()
            .collect();
        let mut own = Vec::new();
        for name in &ordered {
            let cause = self.root_cause(name);
            if cause.is_none() {
                own.push(name.clone());
            }
            if let Some(inc) = self.incident_mut(name) {
                inc.caused_by = cause;
            }
        }
        for name in own {
            if self.incident(&name).is_some_and(|i| !i.notified) {
                self.announce(&name, now, out);
            }
        }
    }

    /// Sends the Opened notice of `name`'s open incident unless alerting is
    /// off for it or a maintenance window covers it (then it stays owed).
    fn announce(&mut self, name: &str, now: DateTime<Utc>, out: &mut Vec<Outgoing>) {
        self.announce_kind(name, IncidentKind::Down, now, out);
    }

    /// [`Engine::announce`] for the open incident of `kind`: an outage or a
    /// degradation.
    fn announce_kind(
        &mut self,
        name: &str,
        kind: IncidentKind,
        now: DateTime<Utc>,
        out: &mut Vec<Outgoing>,
    ) {
        let Some(p) = self.probes.get(name) else {
            return;
        };
        if !p.spec.alert.enabled || silenced(&self.windows, &p.spec, now) {
            return;
        }
        let open = match kind {
            IncidentKind::Down => &p.state.incident,
            IncidentKind::Degraded => p.state.degraded.as_ref().map_or(&None, |d| &d.incident),
        };
        let Some(inc) = open.clone() else {
            return;
        };
        let dependents = match kind {
            IncidentKind::Down => self.dependents(name),
            IncidentKind::Degraded => Vec::new(),
        };
        let notice = self.notice(name, NoticeKind::Opened, &inc, now, dependents);
        self.fan_out(name, notice, out);
        let open = self.probes.get_mut(name).and_then(|p| match kind {
            IncidentKind::Down => p.state.incident.as_deref_mut(),
            IncidentKind::Degraded => p.state.degraded_incident_mut(),
        });
        if let Some(i) = open {
            i.notified = true;
            i.last_notice_at = Some(now);
        }
    }

    /// The dependency a new incident of `name` is attributed to: the
    /// nearest transitive dependency that is down with an incident of its
    /// own.
    fn root_cause(&self, name: &str) -> Option<String> {
        let p = self.probes.get(name)?;
        let down: Vec<&String> = p
            .ancestors
            .iter()
            .filter(|a| {
                self.probes
                    .get(a.as_str())
                    .is_some_and(|d| d.state.status == Status::Down)
            })
            .collect();
        down.iter()
            .find(|a| self.incident(a).is_some_and(|i| i.caused_by.is_none()))
            .or_else(|| down.first())
            .map(|a| a.to_string())
    }

    /// Probes that are down because of `name`, sorted.
    fn dependents(&self, name: &str) -> Vec<String> {
        self.probes
            .iter()
            .filter(|(_, p)| {
                p.state.status == Status::Down
                    && p.state
                        .incident
                        .as_ref()
                        .is_some_and(|i| i.caused_by.as_deref() == Some(name))
            })
            .map(|(n, _)| n.clone())
            .collect()
    }

    fn enabled(&self, name: &str) -> bool {
        self.probes.get(name).is_some_and(|p| p.spec.alert.enabled)
    }

    fn incident(&self, name: &str) -> Option<&Incident> {
        self.probes.get(name)?.state.incident.as_deref()
    }

    fn incident_mut(&mut self, name: &str) -> Option<&mut Incident> {
        self.probes.get_mut(name)?.state.incident.as_deref_mut()
    }

    fn notice(
        &self,
        name: &str,
        kind: NoticeKind,
        inc: &Incident,
        now: DateTime<Utc>,
        dependents: Vec<String>,
    ) -> Notice {
        let p = self.probes.get(name);
        let (state, since, end, streak) = match kind {
            NoticeKind::Resolved => (
                "up",
                inc.ended_at.unwrap_or(now),
                inc.ended_at.unwrap_or(now),
                p.map(|p| match inc.kind {
                    IncidentKind::Down => p.state.ok_streak,
                    IncidentKind::Degraded => {
                        p.state.degraded.as_ref().map_or(0, |d| d.fine_streak)
                    }
                })
                .unwrap_or(0),
            ),
            _ => (inc.kind.as_str(), inc.started_at, now, inc.streak),
        };
        Notice {
            kind,
            probe: name.to_string(),
            state: state.to_string(),
            probe_kind: p
                .map(|p| p.spec.kind.name().to_string())
                .unwrap_or_default(),
            target: p.map(|p| p.target.clone()).unwrap_or_default(),
            since,
            down_for: (end - inc.started_at).to_std().ok(),
            first_failure: inc.first_failure.clone(),
            last_failure: inc.last_failure.clone(),
            last_latency: p.and_then(|p| p.state.last_latency),
            streak,
            dependents,
            incident: inc.id,
            link: self
                .public_url
                .as_ref()
                .map(|u| format!("{u}/probes/{}", url_segment(name))),
            labels: p.map(|p| p.spec.labels.clone()).unwrap_or_default(),
            at: now,
            incident_kind: inc.kind,
            reason: inc.reason.clone(),
            changes: Vec::new(),
            trace_id: None,
            trace_url: None,
        }
    }

    fn fan_out(&self, name: &str, notice: Notice, out: &mut Vec<Outgoing>) {
        let Some(p) = self.probes.get(name) else {
            return;
        };
        for notifier in &p.spec.alert.notify {
            out.push(Outgoing {
                notifier: notifier.clone(),
                notice: notice.clone(),
            });
        }
    }
}

/// Transitive dependencies of `name`, nearest first, without repeats.
fn ancestors(name: &str, deps: &BTreeMap<&str, &[String]>) -> Vec<String> {
    let mut seen = BTreeSet::from([name.to_string()]);
    let mut out = Vec::new();
    let mut queue: VecDeque<&str> = VecDeque::from([name]);
    while let Some(n) = queue.pop_front() {
        for d in deps.get(n).copied().unwrap_or_default() {
            if deps.contains_key(d.as_str()) && seen.insert(d.clone()) {
                out.push(d.clone());
                queue.push_back(d);
            }
        }
    }
    out
}

/// Length of the longest dependency chain below `name` (cycles, which the
/// config rejects, count as 0).
fn depth<'a>(
    name: &'a str,
    deps: &BTreeMap<&'a str, &'a [String]>,
    memo: &mut BTreeMap<&'a str, usize>,
    visiting: &mut BTreeSet<&'a str>,
) -> usize {
    if let Some(d) = memo.get(name) {
        return *d;
    }
    if !visiting.insert(name) {
        return 0;
    }
    let mut best = 0;
    for d in deps.get(name).copied().unwrap_or_default() {
        if let Some((k, _)) = deps.get_key_value(d.as_str()) {
            best = best.max(1 + depth(k, deps, memo, visiting));
        }
    }
    visiting.remove(name);
    memo.insert(name, best);
    best
}

/// Percent-encodes a probe name for a URL path segment.
fn url_segment(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alert::state::tests::t;
    use crate::result::{Failure, FailureClass};
    use std::time::Duration;

    fn engine(yaml: &str) -> Engine {
        let (cfg, _) = crate::config::load_str(
            "t.yaml",
            yaml,
            crate::config::read::Cx::new(Box::new(|_| None)),
        )
        .unwrap_or_else(|d| panic!("{d}"));
        Engine::new(&cfg)
    }

    fn result(probe: &str, at: i64, ok: bool) -> ProbeResult {
        ProbeResult {
            probe: probe.into(),
            started_at: t(at),
            duration: Duration::from_millis(12),
            success: ok,
            failure: (!ok).then(|| Failure::new(FailureClass::Timeout, format!("slow at {at}"))),
            phases: Vec::new(),
            checks: Vec::new(),
            details: Default::default(),
            location: None,
        }
    }

    const HEAD: &str = "server: {public_url: \"https://lookout.example.com/\"}\nnotifiers:\n  ops: {slack: {webhook: \"https://hooks.example.com/x\"}}\n  mail: {email: {smtp: \"smtp://mail.example.com\", from: a@example.com, to: [b@example.com]}}\n";

    #[test]
    fn order_and_ancestors() {
        let e = engine(&format!(
            "{HEAD}probes:\n  - {{name: a, tcp: {{host: h, port: 1}}, depends_on: [b]}}\n  - {{name: b, tcp: {{host: h, port: 1}}, depends_on: [c]}}\n  - {{name: c, tcp: {{host: h, port: 1}}}}\n"
        ));
        assert_eq!(e.order, ["c", "b", "a"]);
        assert_eq!(e.probes["a"].ancestors, ["b", "c"]);
    }

    #[test]
    fn notice_fields_are_filled() {
        let mut e = engine(&format!(
            "{HEAD}probes:\n  - name: web-api\n    http: {{url: \"https://user:pw@example.com/health\"}}\n    labels: {{team: web}}\n    alert: {{after: 2, notify: [ops, mail]}}\n"
        ));
        assert!(e.on_result(&result("web-api", 0, false), t(1)).is_empty());
        let out = e.on_result(&result("web-api", 10, false), t(11));
        assert_eq!(
            out.iter().map(|o| o.notifier.as_str()).collect::<Vec<_>>(),
            ["ops", "mail"]
        );
        let n = &out[0].notice;
        assert_eq!(n.kind, NoticeKind::Opened);
        assert_eq!(n.state, "down");
        assert_eq!(n.probe_kind, "http");
        assert!(!n.target.contains("pw"), "{}", n.target);
        assert_eq!(n.since, t(0));
        assert_eq!(n.down_for, Some(Duration::from_secs(11)));
        assert_eq!(n.streak, 2);
        assert_eq!(
            n.first_failure.as_ref().map(|f| f.message.as_str()),
            Some("slow at 0")
        );
        assert_eq!(
            n.last_failure.as_ref().map(|f| f.message.as_str()),
            Some("slow at 10")
        );
        assert_eq!(n.last_latency, Some(Duration::from_millis(12)));
        assert_eq!(
            n.link.as_deref(),
            Some("https://lookout.example.com/probes/web-api")
        );
        assert_eq!(n.labels.get("team").map(String::as_str), Some("web"));
        assert_eq!(n.at, t(11));
    }

    fn timed(probe: &str, at: i64, ms: u64) -> ProbeResult {
        ProbeResult {
            duration: Duration::from_millis(ms),
            ..result(probe, at, true)
        }
    }

    #[test]
    fn a_degradation_is_notified_as_such_and_resolved_to_the_same_notifiers() {
        let mut e = engine(&format!(
            "{HEAD}probes:\n  - name: api\n    http: {{url: \"https://example.com/\"}}\n    alert: {{notify: [ops], degraded: {{latency: 100ms, after: 2, recover_after: 2}}}}\n"
        ));
        assert!(e.on_result(&timed("api", 0, 20), t(0)).is_empty());
        assert!(e.on_result(&timed("api", 10, 250), t(10)).is_empty());
        let out = e.on_result(&timed("api", 20, 300), t(20));
        assert_eq!(out.len(), 1);
        let n = &out[0].notice;
        assert_eq!(
            (n.kind, n.state.as_str(), n.incident_kind),
            (NoticeKind::Opened, "degraded", IncidentKind::Degraded)
        );
        assert_eq!(n.since, t(10));
        assert_eq!(
            n.reason.as_deref(),
            Some("latency over 100ms in 2 runs in a row (last 300ms)")
        );
        assert_eq!(
            crate::notify::render::subject(n),
            "[Lookout] DEGRADED api: latency over 100ms in 2 runs in a row (last 300ms)"
        );
        assert_eq!(e.state("api").map(|s| s.status), Some(Status::Up));
        assert!(e.on_result(&timed("api", 30, 20), t(30)).is_empty());
        let out = e.on_result(&timed("api", 40, 20), t(40));
        assert_eq!(out.len(), 1);
        let n = &out[0].notice;
        assert_eq!(
            (n.kind, n.incident_kind),
            (NoticeKind::Resolved, IncidentKind::Degraded)
        );
        assert_eq!(
            crate::notify::render::subject(n),
            "[Lookout] RESOLVED api: no longer degraded after 30s"
        );
        let closed = e.take_closed();
        assert_eq!(closed.len(), 1);
        assert_eq!(closed[0].1.kind, IncidentKind::Degraded);
    }

    #[test]
    fn dependent_that_notified_first_keeps_its_incident() {
        let mut e = engine(&format!(
            "{HEAD}probes:\n  - {{name: app, tcp: {{host: h, port: 1}}, depends_on: [db], alert: {{after: 1, recover_after: 1, notify: [ops]}}}}\n  - {{name: db, tcp: {{host: h, port: 1}}, alert: {{after: 1, recover_after: 1, notify: [ops]}}}}\n"
        ));
        let out = e.on_result(&result("app", 0, false), t(0));
        assert_eq!(out.len(), 1);
        let out = e.on_result(&result("db", 1, false), t(1));
        assert_eq!(out.len(), 1);
        assert!(out[0].notice.dependents.is_empty());
        assert_eq!(
            e.state("app")
                .and_then(|s| s.incident.as_ref())
                .and_then(|i| i.caused_by.clone()),
            None
        );
        // db recovers: app is not re-announced.
        let out = e.on_result(&result("db", 2, true), t(2));
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].notice.probe, "db");
        let out = e.on_result(&result("app", 3, true), t(3));
        assert_eq!(out[0].notice.kind, NoticeKind::Resolved);
    }
}
