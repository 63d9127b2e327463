//! Scheduler throughput benchmark: N HTTP probes against a fast local
//! target for a fixed time, reporting probes per second, CPU time per probe,
//! peak RSS, and the lag between each run's due time and its start.
//!
//! Run with `cargo bench --bench scheduler_throughput` (add `-- quick` for a
//! short run). The target is a separate process (this same binary in target
//! mode) so its CPU is not counted as Lookout's; each scenario also runs in
//! its own process so peak RSS belongs to that scenario alone.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

const ROLE: &str = "LOOKOUT_BENCH_ROLE";

fn main() {
    match std::env::var(ROLE).as_deref() {
        Ok("target") => target(),
        Ok("scenario") => scenario(),
        // `cargo bench` passes --bench; `cargo test --all-targets` runs this
        // binary without it, where a multi-second benchmark does not belong.
        _ if std::env::args().any(|a| a == "--bench") => orchestrate(),
        _ => println!("scheduler_throughput: run with `cargo bench --bench scheduler_throughput`"),
    }
}

/// A minimal HTTP/1.1 server: reads a request head, answers 200 "ok", closes.
fn target() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        println!("{}", listener.local_addr().expect("addr").port());
        std::io::stdout().flush().expect("flush");
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let mut seen = Vec::new();
                loop {
                    match sock.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => {
                            seen.extend_from_slice(&buf[..n]);
                            if seen.windows(4).any(|w| w == b"\r\n\r\n") {
                                break;
                            }
                        }
                    }
                }
                let _ = sock
                    .write_all(
                        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok",
                    )
                    .await;
                let _ = sock.shutdown().await;
            });
        }
    });
}

fn cpu_seconds() -> f64 {
    // Fields 14 and 15 of /proc/self/stat: utime and stime in clock ticks
    // (USER_HZ, 100 on Linux).
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit_once(')').map(|(_, a)| a).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

fn peak_rss_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}

/// One scenario in this process: N probes at an interval for a duration.
fn scenario() {
    let n: usize = env_num("N");
    let interval_ms: u64 = env_num("INTERVAL_MS") as u64;
    let secs: u64 = env_num("SECS") as u64;
    let port: u16 = env_num("PORT") as u16;
    let mut yaml = String::from("scheduler: { concurrency: 512 }\nprobes:\n");
    for i in 0..n {
        yaml.push_str(&format!(
            "  - name: p{i}\n    http: {{ url: \"http://127.0.0.1:{port}/p{i}\" }}\n    interval: {interval_ms}ms\n    timeout: {}ms\n    expect: {{ status: 200, body_contains: ok }}\n",
            interval_ms.min(2000)
        ));
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let loaded = Instant::now();
    let (cfg, _) =
        lookout::config::load_str("bench.yaml", &yaml, lookout::config::read::Cx::default())
            .unwrap_or_else(|d| panic!("{d}"));
    let load_ms = loaded.elapsed().as_secs_f64() * 1000.0;
    let probes: Vec<_> = cfg.probes.into_iter().map(Arc::new).collect();
    // CPU is counted from here: probing, not parsing the configuration.
    let cpu0 = cpu_seconds();
    let lags: Arc<Mutex<Vec<u64>>> = Arc::new(Mutex::new(Vec::with_capacity(n * 4)));
    let ok = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let sink: lookout::scheduler::Sink = {
        let (lags, ok, failed) = (lags.clone(), ok.clone(), failed.clone());
        Arc::new(move |r, meta: lookout::scheduler::RunMeta| {
            if r.success {
                ok.fetch_add(1, Ordering::Relaxed);
            } else {
                failed.fetch_add(1, Ordering::Relaxed);
            }
            if let Ok(mut l) = lags.lock() {
                l.push(meta.lag.as_micros() as u64);
            }
        })
    };
    let stop = CancellationToken::new();
    let started = Instant::now();
    rt.block_on(async {
        let s = stop.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(secs)).await;
            s.cancel();
        });
        lookout::scheduler::run(probes, 512, sink, stop).await;
    });
    let wall = started.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu0;
    let mut l = lags.lock().map(|l| l.clone()).unwrap_or_default();
    l.sort_unstable();
    let pct = |p: f64| -> f64 {
        if l.is_empty() {
            return 0.0;
        }
        let idx = ((p * l.len() as f64).ceil() as usize).clamp(1, l.len()) - 1;
        l[idx] as f64 / 1000.0
    };
    let total = ok.load(Ordering::Relaxed) + failed.load(Ordering::Relaxed);
    println!(
        "{{\"n\":{n},\"interval_ms\":{interval_ms},\"runs\":{total},\"failed\":{},\"probes_per_s\":{:.0},\"cpu_us_per_probe\":{:.1},\"peak_rss_mb\":{:.1},\"lag_p50_ms\":{:.2},\"lag_p99_ms\":{:.2},\"config_load_ms\":{:.1}}}",
        failed.load(Ordering::Relaxed),
        total as f64 / wall,
        cpu * 1e6 / total.max(1) as f64,
        peak_rss_mb(),
        pct(0.50),
        pct(0.99),
        load_ms,
    );
}

fn env_num(name: &str) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{name} must be set"))
}

fn orchestrate() {
    let quick = std::env::args().any(|a| a == "quick");
    let secs = if quick { 3 } else { 10 };
    let exe = std::env::current_exe().expect("current exe");
    let mut target = Command::new(&exe)
        .env(ROLE, "target")
        .stdout(Stdio::piped())
        .spawn()
        .expect("start target");
    let mut line = String::new();
    BufReader::new(target.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("target port");
    let port = line.trim().to_string();
    println!("scheduler_throughput: {secs}s per scenario, target on 127.0.0.1:{port}");
    println!(
        "{:>7} {:>9} {:>8} {:>7} {:>9} {:>12} {:>9} {:>9} {:>9} {:>11}",
        "probes",
        "interval",
        "runs",
        "failed",
        "probes/s",
        "cpu us/probe",
        "rss MB",
        "lag p50",
        "lag p99",
        "load cfg"
    );
    for (n, interval_ms) in [(100, 1000), (1000, 1000), (2000, 1000), (10_000, 10_000)] {
        let out = Command::new(&exe)
            .env(ROLE, "scenario")
            .env("N", n.to_string())
            .env("INTERVAL_MS", interval_ms.to_string())
            .env("SECS", secs.to_string())
            .env("PORT", &port)
            .env("LOOKOUT_LOG", "off")
            .output()
            .expect("scenario");
        let text = String::from_utf8_lossy(&out.stdout);
        let v: serde_json::Value = match serde_json::from_str(text.trim()) {
            Ok(v) => v,
            Err(_) => {
                eprintln!(
                    "scenario {n} failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
                continue;
            }
        };
        let f = |k: &str| match &v[k] {
            serde_json::Value::Number(n) => n.to_string(),
            other => other.to_string(),
        };
        println!(
            "{:>7} {:>8}ms {:>8} {:>7} {:>9} {:>12} {:>9} {:>7}ms {:>7}ms {:>9}ms",
            f("n"),
            f("interval_ms"),
            f("runs"),
            f("failed"),
            f("probes_per_s"),
            f("cpu_us_per_probe"),
            f("peak_rss_mb"),
            f("lag_p50_ms"),
            f("lag_p99_ms"),
            f("config_load_ms"),
        );
    }
    let _ = target.kill();
    let _ = target.wait();
}
