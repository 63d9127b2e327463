//! Integration tests: several `lookout run` processes, each in its own
//! location (`LOOKOUT_LOCATION`), sharing one throwaway PostgreSQL
//! (`storage.postgres`). What an operator of such a fleet relies on: a
//! target failing from one location only opens nothing under
//! `alert.locations: 2` and failing from both opens one incident and one
//! notice; every result says where it ran (API, metrics); when the
//! alerting leader is killed with SIGKILL while a notice is still being
//! retried, another instance takes over and the notice arrives exactly
//! once; and a PostgreSQL restart under load loses no result.
//!
//! Each test starts its own PostgreSQL (a fresh cluster: the instances of
//! one test never meet another test's rows or connections). Every wait is
//! on an event (a log line, rows, a request) with a deadline.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lookout::notify::{Notice, NoticeKind};
use tokio::sync::mpsc::error::TryRecvError;
use tokio::time::Instant;

use crate::harness::daemon::{free_port, notices, Daemon};
use crate::harness::http_server::{serve, Seen};
use crate::harness::http_target_with;
use crate::harness::postgres_server::{Options, PgServer};
use crate::harness::recorder::Recorder;
use crate::harness::run_child::{
    assert_flushed_without_drops, logged_but_not_stored, logged_per_probe, tail,
};

/// The log line of an instance that takes the alerting lead.
const LEADS: &str = "this instance now leads alerting and notices";

/// How often the waits below look again.
const POLL: Duration = Duration::from_millis(50);

/// A deadline for one awaited event, named in the panic when it passes.
struct Deadline {
    at: Instant,
    secs: u64,
    what: String,
}

impl Deadline {
    fn in_secs(secs: u64, what: &str) -> Deadline {
        Deadline {
            at: Instant::now() + Duration::from_secs(secs),
            secs,
            what: what.to_string(),
        }
    }

    /// Panics (with `seen`, what was there instead) once the deadline has
    /// passed; otherwise waits a moment before the next look.
    async fn wait(&self, seen: impl std::fmt::Debug) {
        assert!(
            Instant::now() < self.at,
            "{} not within {}s; got {seen:?}",
            self.what,
            self.secs
        );
        tokio::time::sleep(POLL).await;
    }
}

/// One `lookout run` in a location, with every log line it wrote so far.
struct Instance {
    location: String,
    d: Daemon,
    lines: Vec<String>,
}

impl Instance {
    /// Starts `lookout run -c cfg` in `location` with its own listen
    /// address (`${LISTEN}` in the configuration) and `env`.
    fn start(cfg: &Path, location: &str, env: &[(&str, &str)]) -> Instance {
        let port = free_port();
        let listen = format!("127.0.0.1:{port}");
        let mut all = vec![("LOOKOUT_LOCATION", location), ("LISTEN", listen.as_str())];
        all.extend_from_slice(env);
        Instance {
            location: location.to_string(),
            d: Daemon::start_with_env(cfg, port, &all),
            lines: Vec::new(),
        }
    }

    /// Takes the lines logged since the last look.
    fn pump(&mut self) {
        loop {
            match self.d.log.try_recv() {
                Ok(l) => self.lines.push(l),
                Err(TryRecvError::Empty | TryRecvError::Disconnected) => return,
            }
        }
    }

    /// How many lines logged so far hold every one of `words`.
    fn logged_n(&mut self, words: &[&str]) -> usize {
        self.pump();
        self.lines
            .iter()
            .filter(|l| words.iter().all(|w| l.contains(w)))
            .count()
    }

    /// Whether a line logged so far holds every one of `words`.
    fn logged(&mut self, words: &[&str]) -> bool {
        self.logged_n(words) > 0
    }

    /// Waits until `n` lines hold every one of `words`.
    async fn wait_log_n(&mut self, n: usize, words: &[&str], secs: u64) {
        let d = Deadline::in_secs(
            secs,
            &format!("{}: {n} log lines with {words:?}", self.location),
        );
        while self.logged_n(words) < n {
            let seen = tail(&self.lines, 20);
            d.wait(seen).await;
        }
    }

    /// Waits for a line with every one of `words`.
    async fn wait_log(&mut self, words: &[&str], secs: u64) {
        self.wait_log_n(1, words, secs).await;
    }

    fn get(&self, path: &str) -> String {
        self.d.get(path)
    }

    /// SIGKILL, as when the machine dies, and reap it.
    async fn kill9(&mut self) {
        self.d.child.start_kill().expect("SIGKILL");
        let _ = self.d.child.wait().await;
    }

    /// SIGTERM; waits for exit 0 and the end of its log; the whole log.
    async fn stop(mut self) -> Vec<String> {
        self.d.signal("-TERM");
        let status = tokio::time::timeout(Duration::from_secs(15), self.d.child.wait())
            .await
            .expect("exits within 15s of SIGTERM")
            .expect("exit status");
        while let Ok(Some(l)) =
            tokio::time::timeout(Duration::from_secs(5), self.d.log.recv()).await
        {
            self.lines.push(l);
        }
        assert_eq!(
            status.code(),
            Some(0),
            "exit status; log tail:\n{}",
            tail(&self.lines, 30)
        );
        self.lines
    }
}

/// The index of the instance that logged that it leads (among those not
/// in `skip`), waiting up to `secs`; panics when two did.
async fn leader(insts: &mut [Instance], skip: Option<usize>, secs: u64) -> usize {
    let d = Deadline::in_secs(secs, "an instance leading alerting");
    loop {
        let leading: Vec<usize> = (0..insts.len())
            .filter(|i| Some(*i) != skip && insts[*i].logged(&[LEADS]))
            .collect();
        assert!(leading.len() <= 1, "several instances lead: {leading:?}");
        if let Some(i) = leading.first() {
            return *i;
        }
        d.wait("none yet").await;
    }
}

/// The test's own view of the shared database (as its owner, `monitor`).
struct Db(tokio_postgres::Client);

impl Db {
    async fn connect(pg: &PgServer) -> Db {
        let (client, conn) =
            tokio_postgres::connect(&pg.monitor_url("?sslmode=disable"), tokio_postgres::NoTls)
                .await
                .expect("connect to the test's PostgreSQL");
        tokio::spawn(conn);
        Db(client)
    }

    /// A query's single number (once Lookout has created its tables).
    async fn count(&self, sql: &str) -> i64 {
        match self.0.query_one(sql, &[]).await {
            Ok(r) => r.get::<_, i64>(0),
            Err(e) => panic!("`{sql}`: {e}"),
        }
    }

    /// Stored results per location (none while Lookout has not created
    /// its tables yet).
    async fn per_location(&self) -> BTreeMap<String, i64> {
        self.grouped("SELECT coalesce(location, ''), count(*) FROM results GROUP BY 1")
            .await
    }

    /// Stored results per probe.
    async fn per_probe(&self) -> BTreeMap<String, i64> {
        self.grouped(
            "SELECT p.name, count(*) FROM results r JOIN probes p ON p.id = r.probe_id GROUP BY 1",
        )
        .await
    }

    async fn grouped(&self, sql: &str) -> BTreeMap<String, i64> {
        match self.0.query(sql, &[]).await {
            Ok(rows) => rows
                .iter()
                .map(|r| (r.get::<_, String>(0), r.get::<_, i64>(1)))
                .collect(),
            Err(_) => BTreeMap::new(),
        }
    }

    /// Waits until every one of `locations` has stored at least `n` results
    /// more than `base` says it had; the counts then.
    async fn wait_results(
        &self,
        locations: &[&str],
        base: &BTreeMap<String, i64>,
        n: i64,
    ) -> BTreeMap<String, i64> {
        let d = Deadline::in_secs(30, &format!("{n} more results from each of {locations:?}"));
        loop {
            let got = self.per_location().await;
            let enough = locations.iter().all(|l| {
                got.get(*l).copied().unwrap_or(0) >= base.get(*l).copied().unwrap_or(0) + n
            });
            if enough {
                return got;
            }
            d.wait(&got).await;
        }
    }
}

/// A fresh PostgreSQL for one test (on blocking threads: it takes a
/// moment).
async fn fresh_postgres() -> PgServer {
    tokio::task::spawn_blocking(|| PgServer::new(Options { ssl: false }))
        .await
        .expect("start PostgreSQL")
}

/// A main file every instance of a test shares: PostgreSQL storage, this
/// instance's listen address from `${LISTEN}`, a webhook `hook`, quick
/// outbox retries, then `probes` (YAML lines under `probes:`).
fn write_config(dir: &Path, pg: &PgServer, hook: &str, probes: &str) -> std::path::PathBuf {
    let cfg = dir.join("lookout.yaml");
    std::fs::write(
        &cfg,
        format!(
            "storage:\n  postgres: {{ url: \"{}\" }}\nserver: {{ listen: \"${{LISTEN}}\" }}\n\
             outbox: {{ retry_initial: 100ms, retry_max: 500ms }}\n\
             notifiers:\n  hook:\n    webhook: {{ url: \"{hook}\" }}\nprobes:\n{probes}",
            pg.monitor_url("?sslmode=disable")
        ),
    )
    .expect("write the configuration");
    cfg
}

/// One HTTP probe `api` run in locations a and b against `${TARGET}`.
fn api_probe(alert: &str) -> String {
    format!(
        "  - name: api\n    http: {{ url: \"${{TARGET}}\" }}\n    interval: 500ms\n    timeout: 400ms\n    \
         locations: [a, b]\n    alert: {alert}\n"
    )
}

/// An HTTP target answering 200 while `healthy` holds, 503 otherwise; its
/// URL.
fn target(healthy: Arc<AtomicBool>) -> String {
    let port = http_target_with(move |_, _| healthy.load(Ordering::SeqCst));
    format!("http://127.0.0.1:{port}/")
}

/// Two instances with the same configuration and `alert.locations: 2`: a
/// target failing from location a only opens nothing and tells nobody;
/// once it fails from b too, exactly one incident opens and exactly one
/// Opened notice arrives, and no more follow while it stays down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_a_failure_in_one_location_opens_nothing_in_two_one_incident() {
    let pg = fresh_postgres().await;
    let rec = Recorder::start().await;
    let a_target = target(Arc::new(AtomicBool::new(false)));
    let b_healthy = Arc::new(AtomicBool::new(true));
    let b_target = target(b_healthy.clone());
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = write_config(
        dir.path(),
        &pg,
        &rec.url("/hook"),
        &api_probe("{ after: 2, locations: 2, notify: [hook] }"),
    );
    let mut insts = vec![
        Instance::start(&cfg, "a", &[("TARGET", &a_target)]),
        Instance::start(&cfg, "b", &[("TARGET", &b_target)]),
    ];
    leader(&mut insts, None, 20).await;
    let db = Db::connect(&pg).await;

    // a fails all along, b passes: more than enough failed runs from a to
    // open an incident under `after: 2`, yet nothing opens.
    let before = db.wait_results(&["a", "b"], &BTreeMap::new(), 8).await;
    assert_eq!(before.len(), 2, "only locations a and b ran: {before:?}");
    let failed_in_a = db
        .count("SELECT count(*) FROM results WHERE location = 'a' AND success = 0")
        .await;
    assert!(failed_in_a >= 8, "a's runs fail: {failed_in_a}");
    assert_eq!(
        db.count("SELECT count(*) FROM results WHERE location = 'b' AND success = 0")
            .await,
        0,
        "b's runs pass"
    );
    assert_eq!(db.count("SELECT count(*) FROM incidents").await, 0);
    assert!(rec.requests().is_empty(), "nobody is told");
    for i in &insts {
        let probe = i.get("/api/v1/probes/api");
        assert!(
            !probe.contains("\"state\":\"down\""),
            "{}: {probe}",
            i.location
        );
    }

    // Now it fails from both locations: one incident, one notice.
    b_healthy.store(false, Ordering::SeqCst);
    let opened = notices(&rec, 1).await.remove(0);
    assert_eq!(opened.kind, NoticeKind::Opened);
    assert_eq!(opened.probe, "api");
    let last = opened
        .last_failure
        .as_ref()
        .map(|f| f.message.clone())
        .unwrap_or_default();
    assert!(last.contains("failing from a, b"), "{last}");
    let now = db.per_location().await;
    db.wait_results(&["a", "b"], &now, 6).await;
    assert_eq!(rec.requests().len(), 1, "exactly one notice");
    assert_eq!(db.count("SELECT count(*) FROM incidents").await, 1);
    assert_eq!(
        db.count("SELECT count(*) FROM incidents WHERE ended_at IS NULL")
            .await,
        1,
        "the incident is open"
    );
    // Every instance's API shows it down: the leader's own state, and the
    // follower's copy of what the leader saved (refreshed every 5 s).
    let d = Deadline::in_secs(15, "both instances show the probe down");
    loop {
        let views: Vec<String> = insts.iter().map(|i| i.get("/api/v1/probes/api")).collect();
        if views.iter().all(|v| v.contains("\"state\":\"down\"")) {
            break;
        }
        d.wait(&views).await;
    }
    for i in insts {
        i.stop().await;
    }
}

/// Every result carries the location that ran it: each instance's API
/// lists the shared history with both locations and names its own, and
/// its /metrics labels its own probe series with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_results_carry_their_location_in_the_api_and_metrics() {
    let pg = fresh_postgres().await;
    let rec = Recorder::start().await;
    let ok = target(Arc::new(AtomicBool::new(true)));
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = write_config(
        dir.path(),
        &pg,
        &rec.url("/hook"),
        &api_probe("{ after: 2 }"),
    );
    let insts = vec![
        Instance::start(&cfg, "a", &[("TARGET", &ok)]),
        Instance::start(&cfg, "b", &[("TARGET", &ok)]),
    ];
    let db = Db::connect(&pg).await;
    db.wait_results(&["a", "b"], &BTreeMap::new(), 2).await;

    for i in &insts {
        let (here, there) = match i.location.as_str() {
            "a" => ("a", "b"),
            _ => ("b", "a"),
        };
        let results = i.get("/api/v1/probes/api/results?limit=50");
        assert!(results.starts_with("HTTP/1.1 200"), "{results}");
        for l in [here, there] {
            assert!(
                results.contains(&format!("\"location\":\"{l}\"")),
                "{here}'s API shows the runs from {l}: {results}"
            );
        }
        let probes = i.get("/api/v1/probes");
        assert!(
            probes.contains(&format!("\"location\":\"{here}\"")),
            "{probes}"
        );
        // The split by location, in the API and on the probe page.
        let split = i.get("/api/v1/probes/api/locations?window=1h");
        assert!(split.starts_with("HTTP/1.1 200"), "{split}");
        let body = &split[split.find("\r\n\r\n").map_or(0, |p| p + 4)..];
        let v: serde_json::Value = serde_json::from_str(body).expect("JSON");
        let seen: Vec<(&str, u64)> = v["locations"]
            .as_array()
            .expect("locations")
            .iter()
            .map(|l| {
                (
                    l["location"].as_str().unwrap_or("?"),
                    l["count"].as_u64().unwrap_or(0),
                )
            })
            .collect();
        assert_eq!(seen.len(), 2, "{body}");
        assert!(
            seen.iter()
                .zip(["a", "b"])
                .all(|((l, n), want)| *l == want && *n >= 2),
            "both locations' runs, sorted: {body}"
        );
        let page = i.get("/probes/api");
        for l in ["a", "b"] {
            assert!(
                page.contains(&format!("<tr data-location=\"{l}\">")),
                "the probe page splits by location: {page}"
            );
        }
        let metrics = i.get("/metrics");
        let series: Vec<&str> = metrics
            .lines()
            .filter(|l| l.starts_with("probe_") && l.contains("probe=\"api\""))
            .collect();
        assert!(!series.is_empty(), "{metrics}");
        for s in &series {
            assert!(s.contains(&format!("location=\"{here}\"")), "{s}");
        }
        assert!(
            !metrics.contains(&format!("location=\"{there}\"")),
            "{here} reports only its own runs: {metrics}"
        );
    }
    for i in insts {
        i.stop().await;
    }
}

/// Three instances; the probe fails everywhere and the webhook answers 500,
/// so the Opened notice stays pending and is retried by the leader. The
/// leader is killed with SIGKILL: another instance logs that it leads
/// within 15 s and, once the receiver accepts, the notice is delivered
/// exactly once and its outbox row ends `delivered`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_leader_killed_while_a_notice_is_due_another_sends_it_once() {
    let pg = fresh_postgres().await;
    let accept = Arc::new(AtomicBool::new(false));
    // (status answered, body) of every delivery attempt.
    let got: Arc<Mutex<Vec<(u16, String)>>> = Arc::default();
    let receiver = {
        let (accept, got) = (accept.clone(), got.clone());
        serve(None, move |s: &Seen| {
            let status = if accept.load(Ordering::SeqCst) {
                200
            } else {
                500
            };
            got.lock().unwrap().push((status, s.body.clone()));
            (status, "text/plain", "x".to_string())
        })
        .await
    };
    let attempts = |status: u16| -> Vec<String> {
        got.lock()
            .unwrap()
            .iter()
            .filter(|(s, _)| *s == status)
            .map(|(_, b)| b.clone())
            .collect()
    };
    let down = target(Arc::new(AtomicBool::new(false)));
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = write_config(
        dir.path(),
        &pg,
        &format!("http://127.0.0.1:{}/hook", receiver.port),
        &format!(
            "  - name: api\n    http: {{ url: \"{down}\" }}\n    interval: 500ms\n    timeout: 400ms\n    \
             alert: {{ after: 2, notify: [hook] }}\n"
        ),
    );
    let mut insts = vec![
        Instance::start(&cfg, "a", &[]),
        Instance::start(&cfg, "b", &[]),
        Instance::start(&cfg, "c", &[]),
    ];
    let db = Db::connect(&pg).await;

    // The notice is due and refused, again and again.
    let d = Deadline::in_secs(30, "two refused delivery attempts");
    while attempts(500).len() < 2 {
        d.wait(attempts(500).len()).await;
    }
    let first = leader(&mut insts, None, 5).await;
    assert_eq!(
        db.count("SELECT count(*) FROM outbox WHERE status = 'pending'")
            .await,
        1,
        "the notice waits in the outbox"
    );

    insts[first].kill9().await;
    let killed = Instant::now();
    let next = leader(&mut insts, Some(first), 15).await;
    let took = killed.elapsed();
    assert!(took < Duration::from_secs(15), "takeover after {took:?}");
    // Only now may the receiver accept: anything the dead leader had sent
    // was answered (refused) long ago.
    accept.store(true, Ordering::SeqCst);

    let d = Deadline::in_secs(20, "the notice delivered by the new leader");
    while db
        .count("SELECT count(*) FROM outbox WHERE status = 'delivered'")
        .await
        < 1
    {
        d.wait(attempts(200).len()).await;
    }
    // More runs from the survivors, more rounds of the outbox: still one.
    let survivors: Vec<&str> = insts
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != first)
        .map(|(_, i)| i.location.as_str())
        .collect();
    let now = db.per_location().await;
    db.wait_results(&survivors, &now, 4).await;

    let accepted = attempts(200);
    assert_eq!(accepted.len(), 1, "delivered exactly once: {accepted:#?}");
    let notice: Notice = serde_json::from_str(&accepted[0]).expect("a notice");
    assert_eq!(notice.kind, NoticeKind::Opened);
    assert_eq!(notice.probe, "api");
    assert_eq!(db.count("SELECT count(*) FROM outbox").await, 1);
    assert_eq!(
        db.count("SELECT count(*) FROM outbox WHERE status = 'delivered'")
            .await,
        1
    );
    assert_eq!(db.count("SELECT count(*) FROM incidents").await, 1);
    eprintln!(
        "leader {} killed; {} took over after {took:?}; {} refused attempts",
        insts[first].location,
        insts[next].location,
        attempts(500).len()
    );
    let _ = insts.remove(first);
    for i in insts {
        i.stop().await;
    }
}

/// One instance with 50 probes every 250 ms; PostgreSQL is stopped under
/// it and started again. The instance says it cannot write, keeps the
/// results, says when it writes again, takes the alerting lead again, and
/// after SIGTERM every result it logged is in the database: none lost,
/// none twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_postgres_restarted_under_load_loses_no_result() {
    let mut pg = fresh_postgres().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind the target");
    let port = listener.local_addr().expect("address").port();
    let accepting = tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            drop(s);
        }
    });
    let probes: String = (0..50)
        .map(|i| {
            format!(
                "  - name: p{i:02}\n    tcp: {{ host: 127.0.0.1, port: {port} }}\n    \
                 interval: 250ms\n    timeout: 200ms\n"
            )
        })
        .collect();
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = write_config(dir.path(), &pg, "http://127.0.0.1:9/hook", &probes);
    let mut inst = Instance::start(&cfg, "a", &[]);
    inst.wait_log(&[LEADS], 20).await;
    {
        let db = Db::connect(&pg).await;
        let d = Deadline::in_secs(20, "results of all 50 probes stored");
        loop {
            let got = db.per_probe().await;
            if got.len() == 50 {
                break;
            }
            d.wait(got.len()).await;
        }
    }

    tokio::task::block_in_place(|| pg.stop());
    inst.wait_log(&["cannot write to the history database"], 15)
        .await;
    // Results keep coming while the database is away.
    let logged_then = logged_per_probe(&inst.lines).values().sum::<i64>();
    let d = Deadline::in_secs(15, "200 more results logged while PostgreSQL is down");
    loop {
        inst.pump();
        let now = logged_per_probe(&inst.lines).values().sum::<i64>();
        if now >= logged_then + 200 {
            break;
        }
        d.wait(now).await;
    }
    tokio::task::block_in_place(|| pg.start());
    inst.wait_log(&["history database accepts writes again"], 20)
        .await;
    // The restart ended the lock's session: alerting is led again.
    inst.wait_log_n(2, &[LEADS], 15).await;

    let lines = inst.stop().await;
    accepting.abort();
    let logged = logged_per_probe(&lines);
    assert_eq!(logged.len(), 50, "probes that logged a result");
    let stored = Db::connect(&pg).await.per_probe().await;
    let wrong = logged_but_not_stored(&logged, &stored);
    assert!(wrong.is_empty(), "results lost or doubled: {wrong:#?}");
    assert_flushed_without_drops(&lines);
    eprintln!(
        "postgres restart: {} results logged and stored",
        logged.values().sum::<i64>()
    );
}

/// PostgreSQL is down when an instance starts: it starts anyway, answers
/// `/healthz`, probes and keeps its results; once the database is up it
/// creates the schema, writes what it kept and takes the alerting lead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_an_instance_starts_while_postgres_is_down() {
    let mut pg = fresh_postgres().await;
    tokio::task::block_in_place(|| pg.stop());
    let ok = target(Arc::new(AtomicBool::new(true)));
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = write_config(
        dir.path(),
        &pg,
        "http://127.0.0.1:9/hook",
        &api_probe("{ after: 2 }"),
    );
    let mut inst = Instance::start(&cfg, "a", &[("TARGET", &ok)]);
    inst.wait_log(&["cannot write to the history database"], 20)
        .await;
    assert!(inst.get("/healthz").contains("ok"));
    let d = Deadline::in_secs(15, "results kept while PostgreSQL is down");
    loop {
        inst.pump();
        let n = logged_per_probe(&inst.lines)
            .get("api")
            .copied()
            .unwrap_or(0);
        if n >= 4 {
            break;
        }
        d.wait(n).await;
    }
    tokio::task::block_in_place(|| pg.start());
    inst.wait_log(&["history database accepts writes again"], 30)
        .await;
    inst.wait_log(&[LEADS], 15).await;
    let lines = inst.stop().await;
    let logged = logged_per_probe(&lines);
    let stored = Db::connect(&pg).await.per_probe().await;
    assert_eq!(
        stored.get("api"),
        logged.get("api"),
        "every kept result written"
    );
}
