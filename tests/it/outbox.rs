//! Integration tests: the durable notice outbox against real receivers (the
//! in-process HTTP recorder and aiosmtpd), on temporary SQLite files:
//! delivery, retries with backoff and Retry-After, permanent failures, an
//! SMTP server that is down then back, restarts, expiry and migration.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use lookout::alert::outbox::{spawn_outbox, OutboxHandle, OutboxSettings};
use lookout::alert::Outgoing;
use lookout::config::Notifier;
use lookout::notify::Notice;
use lookout::store::outbox::{OutboxRow, OutboxStatus};
use lookout::store::Store;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::harness::recorder::{Answer, Recorder};
use crate::harness::smtp_server::SmtpServer;

/// Short waits so retries happen within a test.
fn quick() -> OutboxSettings {
    OutboxSettings {
        initial_backoff: Duration::from_millis(100),
        factor: 2.0,
        max_backoff: Duration::from_millis(400),
        poll_interval: Duration::from_millis(50),
        shutdown_grace: Duration::from_secs(2),
        ..OutboxSettings::default()
    }
}

fn hook(url: String) -> Notifier {
    Notifier::Webhook {
        url,
        headers: BTreeMap::new(),
        secret: None,
        ca: None,
    }
}

fn outgoing(notifier: &str, probe: &str) -> Outgoing {
    let mut notice = Notice::test(probe, None);
    notice.probe = probe.into();
    Outgoing {
        notifier: notifier.into(),
        notice,
    }
}

fn db(dir: &tempfile::TempDir) -> PathBuf {
    dir.path().join("lookout.db")
}

struct Running {
    handle: OutboxHandle,
    task: JoinHandle<()>,
    shutdown: CancellationToken,
}

impl Running {
    fn start(path: &Path, notifiers: BTreeMap<String, Notifier>, settings: OutboxSettings) -> Self {
        let store = Store::open(path).expect("open the database");
        let shutdown = CancellationToken::new();
        let (handle, task) = spawn_outbox(store, notifiers, settings, shutdown.clone());
        Running {
            handle,
            task,
            shutdown,
        }
    }

    async fn enqueue_one(&self, item: Outgoing) -> i64 {
        self.handle.enqueue(vec![item]).await.expect("enqueue")[0]
    }

    async fn row(&self, id: i64) -> OutboxRow {
        self.handle
            .row(id)
            .await
            .expect("read row")
            .expect("row exists")
    }

    /// Waits until row `id` satisfies `cond`, and returns it.
    async fn wait_row(&self, id: i64, what: &str, cond: impl Fn(&OutboxRow) -> bool) -> OutboxRow {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let row = self.row(id).await;
            if cond(&row) {
                return row;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}: {row:?}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("the outbox stops within its grace")
            .expect("the outbox task does not panic");
    }
}

async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn one_hook(rec: &Recorder) -> BTreeMap<String, Notifier> {
    BTreeMap::from([("hook".to_string(), hook(rec.url("/hook")))])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notice_is_delivered_once_with_its_answer() {
    let dir = tempfile::tempdir().unwrap();
    let rec = Recorder::start().await;
    rec.push(Answer::status(200, "thanks"));
    let ob = Running::start(&db(&dir), one_hook(&rec), quick());
    let id = ob.enqueue_one(outgoing("hook", "checkout-api")).await;
    let row = ob
        .wait_row(id, "delivery", |r| r.status == OutboxStatus::Delivered)
        .await;
    assert_eq!(row.attempts, 1);
    assert!(
        row.answer.as_deref().unwrap_or("").contains("200"),
        "{row:?}"
    );
    assert!(row.delivered_at.is_some());
    assert_eq!(row.probe, "checkout-api");
    assert_eq!(row.kind, "test");
    let req = rec.only_request();
    assert_eq!(req.json()["probe"], "checkout-api");
    let counts = ob.handle.counts().await.unwrap();
    assert_eq!((counts.pending, counts.delivered), (0, 1));
    ob.stop().await;
    assert_eq!(rec.requests().len(), 1, "sent again after delivery");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_500s_then_200_is_delivered_exactly_once_after_three_attempts() {
    let dir = tempfile::tempdir().unwrap();
    let rec = Recorder::start().await;
    rec.push(Answer::status(500, "oops"));
    rec.push(Answer::status(500, "oops again"));
    rec.push(Answer::status(200, "ok"));
    let ob = Running::start(&db(&dir), one_hook(&rec), quick());
    let id = ob.enqueue_one(outgoing("hook", "api")).await;
    let row = ob
        .wait_row(id, "delivery", |r| r.status == OutboxStatus::Delivered)
        .await;
    assert_eq!(row.attempts, 3, "{row:?}");
    assert!(
        row.last_error.as_deref().unwrap_or("").contains("500"),
        "{row:?}"
    );
    ob.stop().await;
    assert_eq!(rec.requests().len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_is_honoured() {
    let dir = tempfile::tempdir().unwrap();
    let rec = Recorder::start().await;
    rec.push(Answer::status(429, "slow down").header("Retry-After", "2"));
    let ob = Running::start(&db(&dir), one_hook(&rec), quick());
    let id = ob.enqueue_one(outgoing("hook", "api")).await;
    wait_until("the first request", || !rec.requests().is_empty()).await;
    // The first request arrived no later than this...
    let first_seen = Instant::now();
    // ...and the second after the last time only one was seen.
    let mut last_one = first_seen;
    let deadline = first_seen + Duration::from_secs(20);
    while rec.requests().len() < 2 {
        last_one = Instant::now();
        assert!(last_one < deadline, "no retry");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let gap = last_one - first_seen;
    assert!(
        gap >= Duration::from_millis(1_950),
        "retried {gap:?} after a Retry-After of 2 s"
    );
    let row = ob
        .wait_row(id, "delivery", |r| r.status == OutboxStatus::Delivered)
        .await;
    assert_eq!(row.attempts, 2);
    ob.stop().await;
    assert_eq!(rec.requests().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_404_fails_permanently_and_is_not_retried() {
    let dir = tempfile::tempdir().unwrap();
    let rec = Recorder::start().await;
    rec.push(Answer::status(404, "no such hook"));
    let ob = Running::start(&db(&dir), one_hook(&rec), quick());
    let id = ob.enqueue_one(outgoing("hook", "api")).await;
    let row = ob
        .wait_row(id, "failure", |r| r.status == OutboxStatus::Failed)
        .await;
    let error = row.last_error.clone().unwrap_or_default();
    assert!(
        error.contains("404") && error.contains("no such hook"),
        "{row:?}"
    );
    assert_eq!(row.attempts, 1);
    // A later notice to the same receiver goes through, several polls
    // (and more than the longest backoff) after the failure: the failed one
    // was not retried meanwhile.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let later = ob.enqueue_one(outgoing("hook", "other")).await;
    ob.wait_row(later, "the later delivery", |r| {
        r.status == OutboxStatus::Delivered
    })
    .await;
    ob.stop().await;
    let reqs = rec.requests();
    assert_eq!(reqs.len(), 2, "{reqs:?}");
    assert_eq!(reqs[1].json()["probe"], "other");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notifier_no_longer_configured_is_failed_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let rec = Recorder::start().await;
    let ob = Running::start(&db(&dir), one_hook(&rec), quick());
    let id = ob.enqueue_one(outgoing("gone", "api")).await;
    let row = ob
        .wait_row(id, "failure", |r| r.status == OutboxStatus::Failed)
        .await;
    assert_eq!(
        row.last_error.as_deref(),
        Some("notifier gone is no longer configured")
    );
    ob.stop().await;
    assert!(rec.requests().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_smtp_server_down_then_back_gets_the_notice_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = tokio::task::block_in_place(SmtpServer::plain);
    server.stop();
    let notifiers = BTreeMap::from([(
        "mail".to_string(),
        Notifier::Email {
            smtp: format!("smtp://127.0.0.1:{}", server.port),
            from: "lookout@example.com".into(),
            to: vec!["ops@example.com".into()],
            ca: None,
        },
    )]);
    let ob = Running::start(&db(&dir), notifiers, quick());
    let id = ob.enqueue_one(outgoing("mail", "db")).await;
    let row = ob
        .wait_row(id, "two failed attempts", |r| r.attempts >= 2)
        .await;
    assert_eq!(row.status, OutboxStatus::Pending, "{row:?}");
    assert!(row.last_error.is_some());
    tokio::task::block_in_place(|| server.start());
    let row = ob
        .wait_row(id, "delivery", |r| r.status == OutboxStatus::Delivered)
        .await;
    assert!(
        row.answer.as_deref().unwrap_or("").contains("250"),
        "{row:?}"
    );
    ob.stop().await;
    let messages = server.messages();
    assert_eq!(messages.len(), 1, "{}", server.server_log());
    assert_eq!(messages[0].rcpt_tos(), vec!["ops@example.com".to_string()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_left_pending_by_a_previous_process_is_sent_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    let rec = Recorder::start().await;
    // The previous process stored the notice and died before sending it.
    let id = {
        let mut store = Store::open(db(&dir)).unwrap();
        store
            .enqueue(&[outgoing("hook", "api")], chrono::Utc::now())
            .unwrap()[0]
    };
    let ob = Running::start(&db(&dir), one_hook(&rec), quick());
    ob.wait_row(id, "delivery", |r| r.status == OutboxStatus::Delivered)
        .await;
    ob.stop().await;
    assert_eq!(rec.requests().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_send_abandoned_at_shutdown_is_sent_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    let rec = Recorder::start().await;
    rec.push(Answer::Hang);
    let settings = OutboxSettings {
        shutdown_grace: Duration::from_millis(200),
        ..quick()
    };
    let first = Running::start(&db(&dir), one_hook(&rec), settings.clone());
    let id = first.enqueue_one(outgoing("hook", "api")).await;
    wait_until("the hanging request", || rec.requests().len() == 1).await;
    let handle = first.handle.clone();
    first.stop().await;
    let row = handle.row(id).await.unwrap().unwrap();
    assert_eq!(row.status, OutboxStatus::Pending, "{row:?}");
    assert_eq!(row.attempts, 0);
    drop(handle);

    let second = Running::start(&db(&dir), one_hook(&rec), settings);
    let row = second
        .wait_row(id, "delivery", |r| r.status == OutboxStatus::Delivered)
        .await;
    assert_eq!(row.attempts, 1);
    second.stop().await;
    // The hung request (never accepted) and the one delivery.
    assert_eq!(rec.requests().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_older_than_max_age_expire_and_are_not_sent() {
    let dir = tempfile::tempdir().unwrap();
    let rec = Recorder::start().await;
    let old = {
        let mut store = Store::open(db(&dir)).unwrap();
        let two_days_ago = chrono::Utc::now() - chrono::TimeDelta::days(2);
        store
            .enqueue(&[outgoing("hook", "stale")], two_days_ago)
            .unwrap()[0]
    };
    let ob = Running::start(&db(&dir), one_hook(&rec), quick());
    let row = ob
        .wait_row(old, "expiry", |r| r.status == OutboxStatus::Expired)
        .await;
    assert!(
        row.last_error.as_deref().unwrap_or("").contains("expired"),
        "{row:?}"
    );
    // A fresh notice still goes out, and only it.
    let fresh = ob.enqueue_one(outgoing("hook", "fresh")).await;
    ob.wait_row(fresh, "delivery", |r| r.status == OutboxStatus::Delivered)
        .await;
    ob.stop().await;
    let reqs = rec.requests();
    assert_eq!(reqs.len(), 1);
    assert_eq!(reqs[0].json()["probe"], "fresh");
}

#[test]
fn a_version_1_database_migrates_to_the_outbox() {
    let dir = tempfile::tempdir().unwrap();
    let path = db(&dir);
    drop(Store::open(&path).unwrap());
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        // Back to what a version-1 file holds: results only.
        conn.execute_batch(
            "DROP TABLE outbox; DROP TABLE alert_state; DROP TABLE incidents; \
             DROP TABLE rollups_minute; DROP TABLE rollups_hour; DROP TABLE rollups_day; \
             DROP TABLE rollup_meta; DROP TABLE events; ALTER TABLE results DROP COLUMN location; PRAGMA user_version = 1;",
        )
        .unwrap();
    }
    let mut store = Store::open(&path).unwrap();
    assert_eq!(store.schema_version().unwrap(), 8);
    let ids = store
        .enqueue(
            &[outgoing("hook", "a"), outgoing("mail", "b")],
            chrono::Utc::now(),
        )
        .unwrap();
    assert_eq!(ids.len(), 2);
    assert_eq!(store.outbox_counts().unwrap().pending, 2);
    assert_eq!(store.due(chrono::Utc::now(), 10).unwrap().len(), 2);
}
