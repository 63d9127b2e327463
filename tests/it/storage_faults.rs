//! Integration tests: the history database misbehaves. Its disk fills up
//! under a running daemon (a 4 MB tmpfs, filled with a file) for a minute
//! and empties again: Lookout must keep probing and alerting, hold results in memory,
//! write them when space returns, and send each notice once. A corrupt or
//! unwritable database is refused at start with a message naming the file
//! and what is wrong with it.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::harness::daemon::{free_port, notices, Daemon};
use crate::harness::http_target_with;
use crate::harness::recorder::Recorder;

/// A tmpfs of `size` mounted on a fresh folder, unmounted when dropped.
struct SmallDisk {
    dir: PathBuf,
    _tmp: tempfile::TempDir,
}

impl SmallDisk {
    fn mount(size: &str) -> SmallDisk {
        SmallDisk::mount_with(&format!("size={size}"))
    }

    fn mount_with(options: &str) -> SmallDisk {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("disk");
        std::fs::create_dir(&dir).expect("mkdir");
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", options, "tmpfs"])
            .arg(&dir)
            .output()
            .expect("run mount");
        assert!(
            out.status.success(),
            "this test mounts a small tmpfs and needs root (CI runs as root): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        SmallDisk { dir, _tmp: tmp }
    }

    /// Writes a file until the disk refuses more; returns its path.
    fn fill(&self) -> PathBuf {
        let path = self.dir.join("filler");
        let mut f = std::fs::File::create(&path).expect("create filler");
        let chunk = vec![0u8; 16 * 1024];
        while f.write_all(&chunk).is_ok() {}
        let _ = f.flush();
        path
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.dir)
            .status();
    }
}

/// How long the disk stays full.
const FULL_FOR: Duration = Duration::from_secs(60);
/// `storage.buffer`: fewer results than a minute of full disk produces.
const BUFFER: usize = 2_000;

/// `lookout_results_total` summed over its labels: runs finished.
fn runs_total(text: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with("lookout_results_total{"))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or(-1.0)
}

async fn wait_metric(d: &Daemon, name: &str, what: &str, ok: impl Fn(f64) -> bool) -> f64 {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let v = metric(&d.get("/metrics"), name);
        if ok(v) {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "{name} = {v}: not {what} within 20s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn count_results(db: &Path) -> i64 {
    let Ok(c) =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
    else {
        return 0;
    };
    c.query_row("SELECT count(*) FROM results", [], |r| r.get(0))
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_delays_results_but_no_probe_and_no_notice() {
    let disk = SmallDisk::mount("4m");
    let rec = Recorder::start().await;
    let healthy = Arc::new(AtomicBool::new(true));
    let h = healthy.clone();
    let target = http_target_with(move |_, _| h.load(Ordering::SeqCst));
    let ok = http_target_with(|_, _| true);
    let conf = tempfile::tempdir().expect("tempdir");
    let cfg = conf.path().join("lookout.yaml");
    let port = free_port();
    let db = disk.dir.join("lookout.db");
    let mut probes = format!(
        "  - name: svc\n    http: {{ url: \"http://127.0.0.1:{target}/svc\" }}\n    interval: 200ms\n    alert: {{ after: 2, recover_after: 2, notify: [hook] }}\n"
    );
    for i in 0..10 {
        probes.push_str(&format!(
            "  - name: bulk{i}\n    http: {{ url: \"http://127.0.0.1:{ok}/b{i}\" }}\n    interval: 200ms\n"
        ));
    }
    std::fs::write(
        &cfg,
        format!(
            "storage: {{ sqlite: \"{}\", buffer: {BUFFER} }}\nserver: {{ listen: \"127.0.0.1:{port}\" }}\nnotifiers:\n  hook:\n    webhook: {{ url: \"{}\" }}\ndefaults: {{ timeout: 150ms }}\nprobes:\n{probes}",
            db.display(),
            rec.url("/hook")
        ),
    )
    .expect("write config");
    let mut d = Daemon::start(&cfg, port);
    d.db = db.clone();
    wait_metric(&d, "lookout_results_written_total", "> 50", |v| v > 50.0).await;

    // The disk fills up: writes fail, results pile up in memory.
    let filler = disk.fill();
    let errors0 = metric(&d.get("/metrics"), "lookout_result_write_errors_total");
    wait_metric(&d, "lookout_result_write_errors_total", "rising", |v| {
        v > errors0
    })
    .await;
    wait_metric(&d, "lookout_results_buffered", "> 100", |v| v > 100.0).await;
    d.log_line(&["cannot write"], 10).await;

    // The target goes down meanwhile: the incident is announced all the
    // same, while nothing can be written.
    healthy.store(false, Ordering::SeqCst);
    let opened = notices(&rec, 1).await;
    assert_eq!(opened[0].probe, "svc");
    assert_eq!(opened[0].kind, lookout::notify::NoticeKind::Opened);
    assert!(d.get("/healthz").contains("ok"));

    // A minute of full disk: every second more runs finish (probing goes
    // on at its pace), results wait in memory, the daemon keeps answering.
    let full_until = Instant::now() + FULL_FOR;
    let mut runs = runs_total(&d.get("/metrics"));
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    while Instant::now() < full_until {
        tick.tick().await;
        let now = runs_total(&d.get("/metrics"));
        // 11 probes every 200 ms: ~55 runs a second.
        assert!(now >= runs + 20.0, "runs {runs} -> {now} in a second");
        assert!(d.get("/healthz").contains("ok"));
        runs = now;
    }
    // ~3,300 runs in the minute against a bound of 2,000: the oldest were
    // dropped, counted and logged; the newest wait.
    let buffered = metric(&d.get("/metrics"), "lookout_results_buffered");
    let dropped = metric(&d.get("/metrics"), "lookout_results_dropped_total");
    assert!(
        (BUFFER as f64 * 0.9..=BUFFER as f64 + 1_000.0).contains(&buffered),
        "{buffered} results waiting after a minute, bound {BUFFER}"
    );
    assert!(dropped > 500.0, "{dropped} dropped");
    d.log_line(&["history buffer is full", "max_buffered=2000"], 5)
        .await;

    // Space returns: everything still buffered is written, nothing more is
    // dropped, and the notice is not sent a second time.
    let written_before = metric(&d.get("/metrics"), "lookout_results_written_total");
    std::fs::remove_file(&filler).expect("free the disk");
    wait_metric(&d, "lookout_results_buffered", "back to a handful", |v| {
        (0.0..20.0).contains(&v)
    })
    .await;
    let written = metric(&d.get("/metrics"), "lookout_results_written_total");
    assert!(
        written >= written_before + buffered,
        "{written} < {written_before} + {buffered}"
    );
    // (a second or two of runs may still have pushed out old ones before
    // the first write succeeded)
    let dropped_after = metric(&d.get("/metrics"), "lookout_results_dropped_total");
    assert!(
        dropped_after - dropped < 200.0,
        "{dropped} -> {dropped_after} dropped after space returned"
    );
    assert!(count_results(&db) as f64 >= written - 50.0);

    // Recovery is announced once; the opened notice was not repeated.
    healthy.store(true, Ordering::SeqCst);
    let all = notices(&rec, 2).await;
    assert_eq!(all[1].kind, lookout::notify::NoticeKind::Resolved);
    d.stop().await;
    assert_eq!(rec.requests().len(), 2, "a notice was sent twice");
    // The notice sent from memory was recorded once space returned.
    let c = rusqlite::Connection::open(&db).expect("open db");
    let rows: Vec<(String, String)> = c
        .prepare("SELECT kind, status FROM outbox ORDER BY kind")
        .and_then(|mut q| {
            q.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<Result<_, _>>()
        })
        .expect("outbox rows");
    assert_eq!(
        rows,
        [
            ("opened".to_string(), "delivered".to_string()),
            ("resolved".to_string(), "delivered".to_string())
        ]
    );
}

/// `lookout run` on a configuration whose database is `db`: it must exit 1
/// within 10 s; returns its stderr.
async fn refused(db: &Path) -> String {
    let conf = tempfile::tempdir().expect("tempdir");
    let cfg = conf.path().join("lookout.yaml");
    std::fs::write(
        &cfg,
        format!(
            "storage: {{ sqlite: \"{}\" }}\nserver: {{ listen: \"127.0.0.1:{}\" }}\nprobes:\n  - name: t\n    tcp: {{ host: 127.0.0.1, port: 1 }}\n",
            db.display(),
            free_port()
        ),
    )
    .expect("write config");
    let run = tokio::process::Command::new(env!("CARGO_BIN_EXE_lookout"))
        .env_remove("LOOKOUT_CONFIG")
        .env("NO_COLOR", "1")
        .args(["run", "-c"])
        .arg(&cfg)
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(10), run)
        .await
        .expect("lookout run gave up within 10s")
        .expect("run lookout");
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_database_is_refused_with_its_name_and_left_untouched() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Not a database at all.
    let garbage = dir.path().join("garbage.db");
    let bytes: Vec<u8> = (0..8192u32).map(|i| (i * 7919 % 251) as u8).collect();
    std::fs::write(&garbage, &bytes).expect("write");
    let err = refused(&garbage).await;
    assert!(
        err.contains("garbage.db is corrupt or is not a SQLite database")
            && err.contains("move it aside"),
        "{err}"
    );
    assert_eq!(
        std::fs::read(&garbage).expect("read"),
        bytes,
        "the file was changed"
    );

    // A real history database with a damaged page.
    let damaged = dir.path().join("damaged.db");
    drop(lookout::store::Store::open(&damaged).expect("create a database"));
    let mut file = std::fs::read(&damaged).expect("read");
    assert!(file.len() > 3 * 4096, "{} bytes", file.len());
    // Pages 2 and 3 (table roots of the schema) overwritten whole.
    for b in &mut file[4096..3 * 4096] {
        *b = 0xA5;
    }
    std::fs::write(&damaged, &file).expect("damage it");
    let err = refused(&damaged).await;
    assert!(err.contains("damaged.db is corrupt"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unwritable_database_is_refused_with_the_reason() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("afile");
    std::fs::write(&file, "x").expect("write");
    let err = refused(&file.join("lookout.db")).await;
    assert!(err.contains("afile is a file, not a folder"), "{err}");

    let folder = dir.path().join("folder.db");
    std::fs::create_dir(&folder).expect("mkdir");
    let err = refused(&folder).await;
    assert!(
        err.contains("cannot be opened for writing: it is a folder"),
        "{err}"
    );

    let ro = SmallDisk::mount_with("ro,size=1m");
    let err = refused(&ro.dir.join("lookout.db")).await;
    assert!(
        err.contains("cannot be opened for writing") && err.contains("not writable"),
        "{err}"
    );
}
