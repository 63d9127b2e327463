//! Integration tests: alerting. Real configurations compiled from YAML,
//! synthetic results, and every time explicit (no sleeps).

use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use lookout::alert::{Engine, Outgoing, Status};
use lookout::config::{load_str, read::Cx, Config};
use lookout::notify::NoticeKind;
use lookout::result::{Failure, FailureClass, ProbeResult};

const NOTIFIERS: &str = "server: {public_url: \"https://status.example.com\"}\nnotifiers:\n  ops: {slack: {webhook: \"https://hooks.example.com/ops\"}}\n  pager: {webhook: {url: \"https://pager.example.com/in\"}}\n";

fn config(yaml: &str) -> Config {
    match load_str(
        "test.yaml",
        &format!("{NOTIFIERS}{yaml}"),
        Cx::new(Box::new(|_| None)),
    ) {
        Ok((cfg, _)) => cfg,
        Err(d) => panic!("test configuration is invalid:\n{d}"),
    }
}

fn engine(yaml: &str) -> Engine {
    Engine::new(&config(yaml))
}

/// Seconds after a fixed epoch (2025-01-15T12:00:00Z).
fn t(s: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2025, 1, 15, 12, 0, 0)
        .single()
        .map(|e| e + chrono::Duration::seconds(s))
        .expect("valid time")
}

fn utc(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s)
        .expect("test time")
        .with_timezone(&Utc)
}

fn result_at(probe: &str, at: DateTime<Utc>, ok: bool) -> ProbeResult {
    ProbeResult {
        probe: probe.into(),
        started_at: at,
        duration: Duration::from_millis(40),
        success: ok,
        failure: (!ok).then(|| Failure::new(FailureClass::Connect, "connection refused")),
        phases: Vec::new(),
        checks: Vec::new(),
        details: Default::default(),
        location: None,
    }
}

/// Feeds one result at `at` and returns the notices.
fn feed(e: &mut Engine, probe: &str, at: DateTime<Utc>, ok: bool) -> Vec<Outgoing> {
    e.on_result(&result_at(probe, at, ok), at)
}

fn summary(out: &[Outgoing]) -> Vec<(String, String, NoticeKind)> {
    out.iter()
        .map(|o| (o.notice.probe.clone(), o.notifier.clone(), o.notice.kind))
        .collect()
}

fn s(probe: &str, notifier: &str, kind: NoticeKind) -> (String, String, NoticeKind) {
    (probe.into(), notifier.into(), kind)
}

/// Asserts that `out` is one `kind` notice for `web` to each of its
/// notifiers (ops, then pager).
fn assert_web_to_both(out: &[Outgoing], kind: NoticeKind) {
    assert_eq!(
        summary(out),
        [s("web", "ops", kind), s("web", "pager", kind)]
    );
}

const WEB: &str = "probes:\n  - name: web\n    tcp: {host: web.internal, port: 443}\n    labels: {team: frontend}\n    alert: {after: 3, recover_after: 2, remind: 1h, notify: [ops, pager]}\n";

#[test]
fn alert_streak_below_after_sends_nothing() {
    let mut e = engine(WEB);
    for i in 0..2 {
        assert!(feed(&mut e, "web", t(i * 30), false).is_empty());
    }
    assert_eq!(e.state("web").map(|s| s.status), Some(Status::Pending));
    // A success breaks the streak; two more failures still send nothing.
    assert!(feed(&mut e, "web", t(60), true).is_empty());
    assert!(feed(&mut e, "web", t(90), false).is_empty());
    assert!(feed(&mut e, "web", t(120), false).is_empty());
    assert_eq!(e.state("web").map(|s| s.status), Some(Status::Up));
}

#[test]
fn alert_opens_once_per_notifier_and_resolves_to_the_same() {
    let mut e = engine(WEB);
    feed(&mut e, "web", t(0), false);
    feed(&mut e, "web", t(30), false);
    let out = feed(&mut e, "web", t(60), false);
    assert_web_to_both(&out, NoticeKind::Opened);
    let n = &out[0].notice;
    assert_eq!(n.state, "down");
    assert_eq!(n.since, t(0));
    assert_eq!(n.streak, 3);
    assert_eq!(n.probe_kind, "tcp");
    assert_eq!(n.target, "web.internal:443");
    assert_eq!(
        n.link.as_deref(),
        Some("https://status.example.com/probes/web")
    );
    assert_eq!(n.last_latency, Some(Duration::from_millis(40)));
    assert_eq!(
        n.first_failure.as_ref().map(|f| f.class),
        Some(FailureClass::Connect)
    );
    assert_eq!(e.state("web").map(|s| s.status), Some(Status::Down));

    // Further failures do not repeat it.
    assert!(feed(&mut e, "web", t(90), false).is_empty());
    // One success is not enough (recover_after: 2).
    assert!(feed(&mut e, "web", t(120), true).is_empty());
    let out = feed(&mut e, "web", t(150), true);
    assert_web_to_both(&out, NoticeKind::Resolved);
    let n = &out[0].notice;
    assert_eq!(n.state, "up");
    assert_eq!(n.since, t(120));
    assert_eq!(n.down_for, Some(Duration::from_secs(120)));
    assert_eq!(n.streak, 2);
    assert_eq!(e.state("web").map(|s| s.status), Some(Status::Up));
    assert!(e.state("web").is_some_and(|s| s.incident.is_none()));
}

#[test]
fn alert_reminders_at_remind_and_not_before() {
    let mut e = engine(WEB);
    for i in 0..3 {
        feed(&mut e, "web", t(i * 30), false);
    }
    // Opened at t(60); remind: 1h.
    assert!(e.tick(t(60 + 3599)).is_empty());
    let out = e.tick(t(60 + 3600));
    assert_web_to_both(&out, NoticeKind::Reminder);
    assert_eq!(out[0].notice.down_for, Some(Duration::from_secs(3660)));
    // The next one counts from the reminder.
    assert!(e.tick(t(60 + 3600 + 1800)).is_empty());
    assert_eq!(e.tick(t(60 + 7200)).len(), 2);
    // No reminders once resolved.
    feed(&mut e, "web", t(8000), true);
    feed(&mut e, "web", t(8030), true);
    assert!(e.tick(t(20_000)).is_empty());
}

#[test]
fn alert_false_tracks_state_but_sends_nothing() {
    let mut e = engine("probes:\n  - name: quiet\n    tcp: {host: h, port: 1}\n    alert: false\n");
    for i in 0..5 {
        assert!(feed(&mut e, "quiet", t(i), false).is_empty());
    }
    assert_eq!(e.state("quiet").map(|s| s.status), Some(Status::Down));
    assert!(e.tick(t(86_400)).is_empty());
    assert!(feed(&mut e, "quiet", t(86_401), true).is_empty());
    assert!(feed(&mut e, "quiet", t(86_402), true).is_empty());
    assert_eq!(e.state("quiet").map(|s| s.status), Some(Status::Up));
}

const CHAIN: &str = "defaults:\n  alert: {after: 2, recover_after: 1, remind: 10m, notify: [ops]}\nprobes:\n  - {name: a, tcp: {host: a, port: 1}, depends_on: [b]}\n  - {name: b, tcp: {host: b, port: 1}, depends_on: [c]}\n  - {name: c, tcp: {host: c, port: 1}}\n";

#[test]
fn alert_dependency_chain_sends_only_the_root_cause() {
    let mut e = engine(CHAIN);
    let mut all = Vec::new();
    for (at, probe) in [
        (0, "c"),
        (5, "c"),
        (10, "a"),
        (11, "b"),
        (40, "a"),
        (41, "b"),
    ] {
        all.extend(feed(&mut e, probe, t(at), false));
    }
    assert_eq!(summary(&all), [s("c", "ops", NoticeKind::Opened)]);
    assert!(
        all[0].notice.dependents.is_empty(),
        "nobody else was down yet"
    );
    for p in ["a", "b"] {
        let cause = e
            .state(p)
            .and_then(|s| s.incident.as_ref())
            .and_then(|i| i.caused_by.clone());
        assert_eq!(cause.as_deref(), Some("c"), "{p}");
    }
    // c's reminder names the probes it takes down; a and b remind nothing.
    let out = e.tick(t(5 + 600));
    assert_eq!(summary(&out), [s("c", "ops", NoticeKind::Reminder)]);
    assert_eq!(out[0].notice.dependents, ["a", "b"]);
}

#[test]
fn alert_dependency_recovers_while_dependent_still_down() {
    let mut e = engine(CHAIN);
    for (at, probe) in [
        (0, "c"),
        (5, "c"),
        (10, "a"),
        (11, "b"),
        (40, "a"),
        (41, "b"),
    ] {
        feed(&mut e, probe, t(at), false);
    }
    // c recovers; b is still down: c's resolution, then b's own notice,
    // which now names a (attributed to b from here on).
    let out = feed(&mut e, "c", t(60), true);
    assert_eq!(
        summary(&out),
        [
            s("c", "ops", NoticeKind::Resolved),
            s("b", "ops", NoticeKind::Opened)
        ]
    );
    assert_eq!(out[1].notice.since, t(11));
    assert_eq!(out[1].notice.dependents, ["a"]);
    let cause = e
        .state("a")
        .and_then(|s| s.incident.as_ref())
        .and_then(|i| i.caused_by.clone());
    assert_eq!(cause.as_deref(), Some("b"));
    // b recovers: its resolution, then a's own notice.
    let out = feed(&mut e, "b", t(70), true);
    assert_eq!(
        summary(&out),
        [
            s("b", "ops", NoticeKind::Resolved),
            s("a", "ops", NoticeKind::Opened)
        ]
    );
    // a recovers: its resolution.
    assert_eq!(
        summary(&feed(&mut e, "a", t(80), true)),
        [s("a", "ops", NoticeKind::Resolved)]
    );
}

#[test]
fn alert_dependent_recovering_with_its_dependency_sends_nothing() {
    let mut e = engine(CHAIN);
    for (at, probe) in [(0, "c"), (5, "c"), (11, "b"), (41, "b")] {
        feed(&mut e, probe, t(at), false);
    }
    assert!(feed(&mut e, "b", t(50), true).is_empty());
    assert_eq!(
        summary(&feed(&mut e, "c", t(60), true)),
        [s("c", "ops", NoticeKind::Resolved)]
    );
}

const MAINT: &str = "probes:\n  - name: db\n    tcp: {host: db, port: 5432}\n    labels: {team: storage, env: prod}\n    alert: {after: 1, recover_after: 1, remind: 10m, notify: [ops]}\n  - name: web\n    tcp: {host: web, port: 443}\n    alert: {after: 1, recover_after: 1, notify: [ops]}\n";

fn maint_engine(window: &str) -> Engine {
    engine(&format!("{MAINT}maintenance:\n{window}"))
}

#[test]
fn alert_maintenance_by_name_silences_then_releases_at_the_end() {
    let mut e = maint_engine(
        "  - name: upgrade\n    probes: [db]\n    from: 2025-01-15 13:00\n    until: 2025-01-15 14:00\n    timezone: Europe/Amsterdam\n",
    );
    // The window is 12:00-13:00 UTC; t(0) is 12:00 UTC.
    assert!(e.in_maintenance("db", t(0)));
    assert!(!e.in_maintenance("web", t(0)));
    assert!(feed(&mut e, "db", t(60), false).is_empty());
    assert_eq!(e.state("db").map(|s| s.status), Some(Status::Down));
    // Not covered: web alerts as usual.
    assert_eq!(feed(&mut e, "web", t(60), false).len(), 1);
    // No reminder and no announcement while the window lasts.
    assert!(e.tick(t(3599)).is_empty());
    // The window ends with db still down: it is announced then.
    let out = e.tick(t(3600));
    assert_eq!(summary(&out), [s("db", "ops", NoticeKind::Opened)]);
    assert_eq!(out[0].notice.since, t(60));
    assert!(e.tick(t(3601)).is_empty(), "announced once");
    // And it resolves normally.
    assert_eq!(
        summary(&feed(&mut e, "db", t(3700), true)),
        [s("db", "ops", NoticeKind::Resolved)]
    );
}

#[test]
fn alert_maintenance_by_label_incident_inside_window_sends_nothing() {
    let mut e = maint_engine(
        "  - labels: {team: storage, env: prod}\n    from: \"2025-01-15T12:00:00Z\"\n    until: \"2025-01-15T13:00:00Z\"\n",
    );
    assert!(feed(&mut e, "db", t(60), false).is_empty());
    assert!(feed(&mut e, "db", t(120), true).is_empty());
    assert!(e.tick(t(3600)).is_empty());
    assert!(e.tick(t(7200)).is_empty());
}

#[test]
fn alert_maintenance_label_mismatch_does_not_silence() {
    let mut e = maint_engine(
        "  - labels: {team: storage, env: staging}\n    from: \"2025-01-15T12:00:00Z\"\n    until: \"2025-01-15T13:00:00Z\"\n",
    );
    assert_eq!(feed(&mut e, "db", t(60), false).len(), 1);
}

#[test]
fn alert_maintenance_cron_in_timezone_on_a_dst_day() {
    // Every day 01:30-02:30 New York time. On 2025-03-09 the clocks go
    // from 02:00 EST to 03:00 EDT; the window still starts at 01:30 EST
    // (06:30Z) and lasts one real hour.
    let mut e = maint_engine(
        "  - name: nightly\n    labels: {team: storage}\n    cron: \"30 1 * * *\"\n    duration: 1h\n    timezone: America/New_York\n",
    );
    for (at, want) in [
        ("2025-03-08T06:29:00Z", false),
        ("2025-03-08T06:30:00Z", true),
        ("2025-03-09T06:30:00Z", true),
        ("2025-03-09T07:29:59Z", true),
        ("2025-03-09T07:30:00Z", false),
        // Summer time: 01:30 EDT = 05:30Z.
        ("2025-03-10T05:29:00Z", false),
        ("2025-03-10T05:30:00Z", true),
        ("2025-03-10T06:30:00Z", false),
    ] {
        assert_eq!(e.in_maintenance("db", utc(at)), want, "{at}");
    }
    // An incident opened in the DST-day window is announced by the first
    // tick after it.
    let at = utc("2025-03-09T07:00:00Z");
    assert!(e.on_result(&result_at("db", at, false), at).is_empty());
    assert!(e.tick(utc("2025-03-09T07:29:00Z")).is_empty());
    let out = e.tick(utc("2025-03-09T07:30:00Z"));
    assert_eq!(summary(&out), [s("db", "ops", NoticeKind::Opened)]);
}

#[test]
fn alert_maintenance_config_errors_have_line_and_key() {
    let yaml = format!(
        "{NOTIFIERS}{MAINT}maintenance:\n  - probes: [db]\n    form: 2025-01-15 13:00\n    until: 2025-01-15 14:00\n  - labels: {{team: storage}}\n    cron: \"30 1 * *\"\n    duration: 1h\n    timezone: America/New_Yrok\n  - name: empty\n    from: 2025-01-15 14:00\n    until: 2025-01-15 13:00\n"
    );
    let diags = match load_str("test.yaml", &yaml, Cx::new(Box::new(|_| None))) {
        Ok(_) => panic!("configuration should be rejected"),
        Err(d) => d,
    };
    let got: Vec<(usize, String)> = diags
        .0
        .iter()
        .map(|d| (d.line, format!("{}: {}", d.key, d.message)))
        .collect();
    let base = NOTIFIERS.lines().count() + MAINT.lines().count() + 1;
    for (line, words) in [
        (base + 2, "maintenance[0].form: unknown key `form`; did you mean `from`?"),
        (base + 5, "maintenance[1].cron: invalid cron expression `30 1 * *`"),
        (base + 7, "maintenance[1].timezone: unknown timezone `America/New_Yrok`; did you mean `America/New_York`?"),
        (base + 8, "maintenance[2]: this window covers nothing"),
        (base + 10, "maintenance[2].until: `until`"),
    ] {
        assert!(
            got.iter().any(|(l, m)| *l == line && m.starts_with(words)),
            "wanted line {line}: {words}\ngot {got:#?}"
        );
    }
}

#[test]
fn alert_maintenance_unknown_probe_names() {
    let yaml = format!(
        "{MAINT}maintenance:\n  - probes: [db, wbe]\n    from: 2025-01-15 13:00\n    until: 2025-01-15 14:00\n"
    );
    let diags = match lookout::config::load_str("test.yaml", &yaml, Cx::new(Box::new(|_| None))) {
        Ok(_) => panic!("a window naming no probe was accepted"),
        Err(d) => d,
    };
    let bad: Vec<_> = diags
        .errors()
        .filter(|d| d.key.starts_with("maintenance"))
        .collect();
    assert_eq!(bad.len(), 1, "{diags}");
    assert_eq!(bad[0].key, "maintenance[0].probes[1]");
    assert_eq!(bad[0].line, 10);
    assert!(
        bad[0].message.contains("did you mean `web`"),
        "{}",
        bad[0].message
    );
}

#[test]
fn alert_results_of_unknown_probes_are_ignored() {
    let mut e = engine(WEB);
    assert!(feed(&mut e, "nope", t(0), false).is_empty());
    assert!(e.state("nope").is_none());
}

/// A reload keeps every remaining probe's state (the open incident is not
/// reopened or announced again), starts added probes pending, and closes a
/// removed probe's incident as `removed` with one notice to the notifiers
/// that heard it open; an incident nobody was told about closes silently.
#[test]
fn alert_reconfigure_keeps_states_and_closes_removed_incidents() {
    let v1 = format!(
        "{WEB}  - name: db\n    tcp: {{host: db.internal, port: 5432}}\n    alert: {{after: 1, notify: [ops]}}\n  - name: quiet\n    tcp: {{host: q.internal, port: 1}}\n    alert: false\n"
    );
    let mut e = engine(&v1);
    for s in 0..3 {
        feed(&mut e, "web", t(s), false);
    }
    assert_eq!(
        summary(&feed(&mut e, "db", t(3), false)),
        [s("db", "ops", NoticeKind::Opened)]
    );
    for s in 0..3 {
        feed(&mut e, "quiet", t(s), false);
    }
    assert_eq!(e.state("quiet").map(|s| s.status), Some(Status::Down));

    // v2: `web` kept (with a new port), `db` and `quiet` removed, `new` added.
    let v2 = "probes:\n  - name: web\n    tcp: {host: web.internal, port: 8443}\n    labels: {team: frontend}\n    alert: {after: 3, recover_after: 2, remind: 1h, notify: [ops, pager]}\n  - name: new\n    tcp: {host: n.internal, port: 1}\n";
    let out = e.reconfigure(&config(v2), t(10));
    assert_eq!(summary(&out), [s("db", "ops", NoticeKind::Resolved)]);
    assert_eq!(out[0].notice.state, "removed");
    let closed = e.take_closed();
    let mut names: Vec<&str> = closed.iter().map(|(n, _)| n.as_str()).collect();
    names.sort_unstable();
    assert_eq!(names, ["db", "quiet"]);
    for (_, inc) in &closed {
        assert_eq!(inc.ended_by.as_deref(), Some("removed"));
        assert_eq!(inc.ended_at, Some(t(10)));
    }
    // `web` is still down with its incident; one more failure changes nothing.
    let web = e.state("web").expect("web kept");
    assert_eq!(web.status, Status::Down);
    assert!(web.incident.as_ref().is_some_and(|i| i.notified));
    assert!(feed(&mut e, "web", t(11), false).is_empty());
    assert_eq!(e.state("new").map(|s| s.status), Some(Status::Pending));
    assert!(e.state("db").is_none());
}

// ---- End to end through `lookout run` ----

mod daemon {
    use std::path::{Path, PathBuf};
    use std::time::Duration;

    use tokio::process::Child;
    use tokio::sync::mpsc::UnboundedReceiver;

    pub use crate::harness::daemon::free_port;

    /// A configuration with one tcp probe `svc` against `port`, telling a
    /// webhook at `hook`.
    pub fn config(dir: &Path, port: u16, hook: &str) -> PathBuf {
        let cfg = dir.join("lookout.yaml");
        std::fs::write(
            &cfg,
            format!(
                "storage: {{ sqlite: lookout.db }}\nserver: {{ listen: \"127.0.0.1:{}\", public_url: \"https://lookout.example\" }}\nnotifiers:\n  hook:\n    webhook: {{ url: \"{hook}\" }}\nprobes:\n  - name: svc\n    tcp: {{ host: 127.0.0.1, port: {port} }}\n    interval: 200ms\n    timeout: 200ms\n    alert: {{ after: 2, recover_after: 2, notify: [hook] }}\n",
                free_port()
            ),
        )
        .expect("write config");
        cfg
    }

    /// Starts `lookout run`; its log lines arrive on the receiver.
    pub fn start(cfg: &Path) -> (Child, UnboundedReceiver<String>) {
        let d = crate::harness::daemon::Daemon::start(cfg, 0);
        (d.child, d.log)
    }

    /// Waits until the log shows `n` more failed runs of `svc`.
    pub async fn failed_runs(log: &mut UnboundedReceiver<String>, n: usize) {
        let mut seen = 0;
        while seen < n {
            let line = tokio::time::timeout(Duration::from_secs(10), log.recv())
                .await
                .expect("log lines")
                .expect("log open");
            if line.contains("probe=svc") && line.contains("ok=false") {
                seen += 1;
            }
        }
    }

    pub async fn kill9(child: &mut Child) {
        child.start_kill().expect("SIGKILL");
        let _ = child.wait().await;
    }

    /// Accepts and closes connections on `port` until dropped.
    pub async fn target_up(port: u16) -> tokio::task::JoinHandle<()> {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .expect("bind the target port");
        tokio::spawn(async move {
            while let Ok((s, _)) = listener.accept().await {
                drop(s);
            }
        })
    }
}

fn notice_of(r: &crate::harness::recorder::Recorded) -> lookout::notify::Notice {
    serde_json::from_value(r.json()).expect("a notice")
}

/// A probe that fails `after` times opens one incident and one notice; the
/// daemon killed with SIGKILL and started again neither forgets the
/// incident nor announces it again, and still sends the resolution when the
/// target comes back; the incident history holds it, closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_notifies_once_and_survives_sigkill_without_repeating() {
    let rec = crate::harness::recorder::Recorder::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let port = daemon::free_port(); // nothing listens yet: `connect` failures
    let cfg = daemon::config(dir.path(), port, &rec.url("/hook"));

    let (mut child, mut log) = daemon::start(&cfg);
    let first = rec.wait_for(1, "opened notice").await;
    let opened = notice_of(&first[0]);
    assert_eq!(opened.kind, NoticeKind::Opened);
    assert_eq!(opened.probe, "svc");
    assert_eq!(
        opened.link.as_deref(),
        Some("https://lookout.example/probes/svc")
    );
    assert_eq!(
        opened.first_failure.as_ref().map(|f| f.class),
        Some(FailureClass::Connect)
    );
    daemon::failed_runs(&mut log, 4).await;
    daemon::kill9(&mut child).await;

    // Restarted while still failing: no second "opened".
    let (mut child, mut log) = daemon::start(&cfg);
    daemon::failed_runs(&mut log, 5).await;
    assert_eq!(
        rec.requests().len(),
        1,
        "the open incident was announced again"
    );

    // The target comes back: one resolution, after the restart.
    let server = daemon::target_up(port).await;
    let all = rec.wait_for(2, "resolved notice").await;
    let resolved = notice_of(&all[1]);
    assert_eq!(resolved.kind, NoticeKind::Resolved);
    assert_eq!(resolved.probe, "svc");
    daemon::kill9(&mut child).await;
    server.abort();
    assert_eq!(rec.requests().len(), 2);
    let store = lookout::store::Store::open(dir.path().join("lookout.db")).expect("open db");
    let incidents = store.incidents(Some("svc"), 10).expect("incidents");
    assert_eq!(incidents.len(), 1, "{incidents:?}");
    assert!(incidents[0].ended_at.is_some(), "{incidents:?}");
    assert_eq!(incidents[0].first_class.as_deref(), Some("connect"));
    // Both notices name the incident (emails thread on it), across the
    // restart too.
    assert_eq!(opened.incident, Some(incidents[0].id));
    assert_eq!(resolved.incident, Some(incidents[0].id));
}

/// A notice the receiver refused (500) is still queued when the daemon is
/// killed with SIGKILL; after the restart it is delivered, exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notice_queued_at_sigkill_is_delivered_after_restart_exactly_once() {
    use crate::harness::recorder::Answer;

    let rec = crate::harness::recorder::Recorder::start().await;
    rec.push(Answer::status(500, "receiver is down"));
    let dir = tempfile::tempdir().expect("tempdir");
    let port = daemon::free_port();
    let cfg = daemon::config(dir.path(), port, &rec.url("/hook"));

    let (mut child, _log) = daemon::start(&cfg);
    rec.wait_for(1, "first (refused) attempt").await;
    daemon::kill9(&mut child).await;

    let (mut child, _log) = daemon::start(&cfg);
    let all = rec.wait_for(2, "retried notice").await;
    assert_eq!(notice_of(&all[1]).kind, NoticeKind::Opened);
    assert_eq!(
        notice_of(&all[0]),
        notice_of(&all[1]),
        "the same notice, retried"
    );
    // Stop cleanly: the outbox finishes; nothing else was owed.
    let pid = child.id().expect("pid").to_string();
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    assert!(status.success());
    let exit = tokio::time::timeout(Duration::from_secs(15), child.wait())
        .await
        .expect("exits after SIGTERM")
        .expect("exit status");
    assert_eq!(exit.code(), Some(0));
    assert_eq!(rec.requests().len(), 2);
    let store = lookout::store::Store::open(dir.path().join("lookout.db")).expect("open db");
    let counts = store.outbox_counts().expect("counts");
    assert_eq!((counts.pending, counts.delivered), (0, 1), "{counts:?}");
}
