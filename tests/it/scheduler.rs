//! Integration tests: the scheduler against real TCP targets. A hanging
//! target must end as a timeout at its bound without delaying other probes;
//! one probe never runs twice at once; the global bound holds.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use lookout::result::{FailureClass, ProbeResult};
use lookout::scheduler::{self, RunMeta, Sink};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::harness::probes_from_yaml;

/// A TCP server that accepts and never answers, counting open connections
/// (current and the highest seen).
struct Silent {
    port: u16,
    open: Arc<AtomicUsize>,
    max_open: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Silent {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn silent_server() -> Silent {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let open = Arc::new(AtomicUsize::new(0));
    let max_open = Arc::new(AtomicUsize::new(0));
    let (o, m) = (open.clone(), max_open.clone());
    let task = tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            let now = o.fetch_add(1, Ordering::SeqCst) + 1;
            m.fetch_max(now, Ordering::SeqCst);
            let o = o.clone();
            tokio::spawn(async move {
                // Hold the connection until the client gives up.
                let mut buf = [0u8; 64];
                loop {
                    match tokio::io::AsyncReadExt::read(&mut sock, &mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(_) => {}
                    }
                }
                o.fetch_sub(1, Ordering::SeqCst);
            });
        }
    });
    Silent {
        port,
        open,
        max_open,
        task,
    }
}

/// An echo-ish server that answers "ok\n" at once.
async fn quick_server() -> (u16, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let task = tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let _ = tokio::io::AsyncWriteExt::write_all(&mut sock, b"ok\n").await;
            });
        }
    });
    (port, task)
}

fn channel_sink() -> (Sink, mpsc::UnboundedReceiver<(ProbeResult, RunMeta)>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let sink: Sink = Arc::new(move |r, m| {
        let _ = tx.send((r, m));
    });
    (sink, rx)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_target_times_out_at_its_bound_and_delays_no_other_probe() {
    let silent = silent_server().await;
    let (quick_port, quick_task) = quick_server().await;
    let yaml = format!(
        "probes:\n  - name: hangs\n    tcp: {{ host: 127.0.0.1, port: {} }}\n    expect: {{ reply_contains: never }}\n    interval: 1s\n    timeout: 800ms\n  - name: quick\n    tcp: {{ host: 127.0.0.1, port: {quick_port} }}\n    expect: {{ reply_contains: ok }}\n    interval: 200ms\n    timeout: 200ms\n",
        silent.port
    );
    let probes = probes_from_yaml(&yaml).into_iter().map(Arc::new).collect();
    let (sink, mut rx) = channel_sink();
    let stop = CancellationToken::new();
    let sched = tokio::spawn(scheduler::run(probes, 16, sink, stop.clone()));

    let mut hangs = Vec::new();
    let mut quick = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while hangs.len() < 2 || quick.len() < 10 {
        let (r, m) = tokio::time::timeout_at(deadline, rx.recv())
            .await
            .expect("results within the deadline")
            .expect("sink open");
        if r.probe == "hangs" {
            hangs.push(r);
        } else {
            quick.push((r, m));
        }
    }
    stop.cancel();
    sched.await.expect("scheduler ends");
    quick_task.abort();

    for r in &hangs {
        assert_eq!(r.class(), Some(FailureClass::Timeout), "{r:?}");
        let ms = r.duration.as_millis();
        assert!(
            (800..=880).contains(&ms),
            "timeout took {ms}ms, bound is 800ms"
        );
        assert!(
            r.failure
                .as_ref()
                .is_some_and(|f| f.message.contains("800ms")),
            "{r:?}"
        );
    }
    // The quick probe kept its 200ms schedule while the other hung.
    for (r, m) in &quick {
        assert!(r.success, "{r:?}");
        assert!(
            m.lag < Duration::from_millis(50),
            "quick probe started {:?} late",
            m.lag
        );
    }
    let gaps: Vec<Duration> = quick.windows(2).map(|w| w[1].1.due - w[0].1.due).collect();
    assert!(
        gaps.iter()
            .skip(1)
            .all(|g| *g == Duration::from_millis(200)),
        "{gaps:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_probe_never_overlaps_itself_and_the_global_bound_holds() {
    let silent = silent_server().await;
    let mut yaml = String::from("probes:\n");
    for i in 0..5 {
        yaml.push_str(&format!(
            "  - name: p{i}\n    tcp: {{ host: 127.0.0.1, port: {} }}\n    expect: {{ reply_contains: never }}\n    interval: 300ms\n    timeout: 300ms\n",
            silent.port
        ));
    }
    let probes = probes_from_yaml(&yaml).into_iter().map(Arc::new).collect();
    let (sink, mut rx) = channel_sink();
    let stop = CancellationToken::new();
    // Five always-hanging probes, two permits.
    let sched = tokio::spawn(scheduler::run(probes, 2, sink, stop.clone()));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut runs = Vec::new();
    while runs.len() < 8 {
        let (r, _) = tokio::time::timeout_at(deadline, rx.recv())
            .await
            .expect("results within the deadline")
            .expect("sink open");
        assert_eq!(r.class(), Some(FailureClass::Timeout));
        runs.push(r);
    }
    stop.cancel();
    sched.await.expect("scheduler ends");
    // Runs in flight at once, from the runs' own start and duration (the
    // server's view lags: it sees a closed connection only after the next
    // run may already have connected). A millisecond of slack absorbs the
    // wall clock's granularity against the monotonic durations.
    let slack = chrono::Duration::milliseconds(1);
    let spans: Vec<(chrono::DateTime<chrono::Utc>, chrono::DateTime<chrono::Utc>)> = runs
        .iter()
        .map(|r| {
            let end = r.started_at + chrono::Duration::from_std(r.duration).expect("duration");
            (r.started_at + slack, end - slack)
        })
        .collect();
    let most = spans
        .iter()
        .map(|(start, _)| {
            spans
                .iter()
                .filter(|(s, e)| s <= start && start < e)
                .count()
        })
        .max()
        .unwrap_or(0);
    assert!(
        most <= 2,
        "{most} runs were in flight at once with 2 permits"
    );
    assert!(silent.max_open.load(Ordering::SeqCst) >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_lets_running_probes_finish() {
    let silent = silent_server().await;
    let yaml = format!(
        "probes:\n  - name: slow\n    tcp: {{ host: 127.0.0.1, port: {} }}\n    expect: {{ reply_contains: never }}\n    interval: 1s\n    timeout: 500ms\n",
        silent.port
    );
    let probes = probes_from_yaml(&yaml).into_iter().map(Arc::new).collect();
    let (sink, mut rx) = channel_sink();
    let stop = CancellationToken::new();
    let sched = tokio::spawn(scheduler::run(probes, 4, sink, stop.clone()));
    // Wait until the run is in flight, then ask to stop.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while silent.open.load(Ordering::SeqCst) == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "probe never connected"
        );
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    stop.cancel();
    tokio::time::timeout(Duration::from_secs(2), sched)
        .await
        .expect("scheduler stops within the timeout bound")
        .expect("scheduler ends");
    // The run in flight was finished (as a timeout), not dropped.
    let (r, _) = rx.try_recv().expect("the in-flight run was recorded");
    assert_eq!(r.class(), Some(FailureClass::Timeout));
}

/// A reload hands the scheduler a new probe set: the unchanged probe keeps
/// its task (its due times stay on the grid it started on), the changed one
/// runs with its new interval, the added one starts and the removed one
/// stops.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn updates_keep_unchanged_probes_on_their_grid_and_start_stop_the_rest() {
    let (port, task) = quick_server().await;
    let probe = |name: &str, every: &str| {
        format!("  - name: {name}\n    tcp: {{ host: 127.0.0.1, port: {port} }}\n    interval: {every}\n    timeout: 150ms\n")
    };
    let first = probes_from_yaml(&format!(
        "probes:\n{}{}{}",
        probe("keep", "200ms"),
        probe("change", "200ms"),
        probe("drop", "200ms")
    ));
    let second = probes_from_yaml(&format!(
        "probes:\n{}{}{}",
        probe("add", "200ms"),
        probe("change", "300ms"),
        probe("keep", "200ms")
    ));
    let (sink, mut rx) = channel_sink();
    let stop = CancellationToken::new();
    let (tx, updates) = mpsc::unbounded_channel();
    let sched = tokio::spawn(scheduler::run_with_updates(
        first.into_iter().map(Arc::new).collect(),
        8,
        sink,
        stop.clone(),
        updates,
        Arc::new(scheduler::HostGates::default()),
    ));
    let mut before: Vec<(String, tokio::time::Instant)> = Vec::new();
    while before.iter().filter(|(n, _)| n == "keep").count() < 4 {
        let (r, m) = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .expect("results before the update")
            .expect("sink open");
        before.push((r.probe, m.due));
    }
    let updated_at = tokio::time::Instant::now();
    tx.send(second.into_iter().map(Arc::new).collect())
        .expect("scheduler takes updates");
    let mut after: Vec<(String, tokio::time::Instant)> = Vec::new();
    let until = updated_at + Duration::from_millis(1500);
    while let Ok(Some((r, m))) = tokio::time::timeout_at(until, rx.recv()).await {
        after.push((r.probe, m.due));
    }
    stop.cancel();
    sched.await.expect("scheduler ends");
    task.abort();

    let dues = |v: &[(String, tokio::time::Instant)], name: &str| -> Vec<tokio::time::Instant> {
        v.iter()
            .filter(|(n, _)| n == name)
            .map(|(_, d)| *d)
            .collect()
    };
    // `keep`: every due time, before and after, on one 200 ms grid.
    let keep: Vec<_> = dues(&before, "keep")
        .into_iter()
        .chain(dues(&after, "keep"))
        .collect();
    assert!(keep.len() >= 9, "keep ran {} times", keep.len());
    for d in &keep {
        let since = d.duration_since(keep[0]).as_nanos();
        assert_eq!(
            since % Duration::from_millis(200).as_nanos(),
            0,
            "keep left its grid: {since} ns after its first run"
        );
    }
    // `add` started; `drop` stopped (a run in flight at the update may
    // still finish, none is due after it).
    assert!(dues(&after, "add").len() >= 3, "{after:?}");
    assert!(
        dues(&after, "drop").iter().all(|d| *d <= updated_at),
        "drop ran after it was removed: {after:?}"
    );
    // `change` runs every 300 ms now.
    let change = dues(&after, "change");
    assert!(change.len() >= 3, "{change:?}");
    for w in change.windows(2).skip(1) {
        assert_eq!(w[1] - w[0], Duration::from_millis(300), "{change:?}");
    }
}

/// `scheduler.host_spacing`: four probes against one host, each every
/// 300 ms, with 150 ms between any two starts against that host: the
/// starts never come closer, whatever the probes' own schedules say.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_against_one_host_keep_the_configured_spacing() {
    let (port, task) = quick_server().await;
    let mut yaml = String::from("probes:\n");
    for i in 0..4 {
        yaml.push_str(&format!(
            "  - name: p{i}\n    tcp: {{ host: 127.0.0.1, port: {port} }}\n    interval: 300ms\n    timeout: 100ms\n"
        ));
    }
    let probes = probes_from_yaml(&yaml).into_iter().map(Arc::new).collect();
    let (sink, mut rx) = channel_sink();
    let stop = CancellationToken::new();
    let (_tx, updates) = mpsc::unbounded_channel();
    let gap = Duration::from_millis(150);
    let gates = scheduler::HostGates::new([("127.0.0.1".to_string(), gap)].into_iter().collect());
    let sched = tokio::spawn(scheduler::run_with_updates(
        probes,
        8,
        sink,
        stop.clone(),
        updates,
        Arc::new(gates),
    ));
    let mut starts = Vec::new();
    while starts.len() < 12 {
        let (_, m) = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .expect("results")
            .expect("sink open");
        starts.push(m.due + m.lag);
    }
    stop.cancel();
    sched.await.expect("scheduler ends");
    task.abort();
    starts.sort();
    for w in starts.windows(2) {
        assert!(
            // Slots are exactly `gap` apart; a start may be late by the
            // timer's and the runtime's wake-up delay.
            w[1] - w[0] >= gap - Duration::from_millis(20),
            "two runs against the host {:?} apart",
            w[1] - w[0]
        );
    }
}

/// A target answering 429 with `Retry-After: 2` is not probed again for two
/// seconds, though the probe's interval is 200 ms; the result records the
/// wait it was asked for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_after_answer_postpones_the_next_run() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let server = tokio::spawn(async move {
        let mut n = 0;
        while let Ok((mut sock, _)) = listener.accept().await {
            let mut buf = [0u8; 1024];
            let _ = sock.read(&mut buf).await;
            let answer: &[u8] = if n == 0 {
                b"HTTP/1.1 429 Too Many Requests\r\nretry-after: 2\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
            } else {
                b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok"
            };
            n += 1;
            let _ = sock.write_all(answer).await;
        }
    });
    let probes = probes_from_yaml(&format!(
        "probes:\n  - name: api\n    http: {{ url: \"http://127.0.0.1:{port}/\" }}\n    interval: 200ms\n    timeout: 150ms\n"
    ))
    .into_iter()
    .map(Arc::new)
    .collect();
    let (sink, mut rx) = channel_sink();
    let stop = CancellationToken::new();
    let sched = tokio::spawn(scheduler::run(probes, 4, sink, stop.clone()));
    let mut runs = Vec::new();
    while runs.len() < 3 {
        let (r, m) = tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .expect("results")
            .expect("sink open");
        runs.push((r, m.due + m.lag));
    }
    stop.cancel();
    sched.await.expect("scheduler ends");
    server.abort();
    assert_eq!(
        runs[0].0.details.get("status").and_then(|v| v.as_u64()),
        Some(429)
    );
    assert_eq!(
        runs[0]
            .0
            .details
            .get("retry_after_s")
            .and_then(|v| v.as_f64()),
        Some(2.0)
    );
    let pause = runs[1].1 - runs[0].1;
    assert!(
        pause >= Duration::from_secs(2),
        "asked to wait 2 s, ran after {pause:?}"
    );
    assert!(pause < Duration::from_secs(3), "{pause:?}");
    // Then the interval again.
    let next = runs[2].1 - runs[1].1;
    assert!(next < Duration::from_millis(400), "{next:?}");
}
