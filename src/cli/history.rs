//! `lookout history NAME`: recent results, uptime and latency percentiles
//! over a window, read from the database the configuration names. It only
//! reads: it never creates a database or writes to one.

use std::time::Duration;

use chrono::Utc;
use clap::Args;

use super::{load_config, output, Cli, Exit};
use crate::store::{Store, WindowStats};

#[derive(Debug, Args)]
pub struct HistoryArgs {
    /// The probe.
    pub name: String,
    /// How many recent results to list.
    #[arg(long, default_value_t = 20)]
    pub limit: usize,
    /// The window for uptime and percentiles, e.g. 1h, 24h, 7d.
    #[arg(long, default_value = "24h", value_parser = parse_window)]
    pub window: Window,
}

/// A window as written on the command line and as a duration.
#[derive(Debug, Clone)]
pub struct Window {
    pub text: String,
    pub duration: Duration,
}

fn parse_window(s: &str) -> Result<Window, String> {
    let duration = crate::duration::parse(s)?;
    if duration.is_zero() {
        return Err("the window must be longer than zero".into());
    }
    Ok(Window {
        text: s.trim().to_string(),
        duration,
    })
}

pub fn run(cli: &Cli, args: &HistoryArgs) -> Exit {
    let cfg = match load_config(cli) {
        Ok(c) => c,
        Err(e) => return e,
    };
    let path = &cfg.storage.sqlite;
    if cfg.storage.postgres.is_none() && !path.exists() {
        eprintln!(
            "lookout history: no database at {}; has `lookout run` run with this configuration?",
            path.display()
        );
        return Exit::Failed;
    }
    let store = match Store::open_configured(&cfg.storage) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("lookout history: {e}");
            return Exit::Failed;
        }
    };
    let until = Utc::now();
    let since = until
        - chrono::Duration::from_std(args.window.duration).unwrap_or(chrono::Duration::days(1));
    let (results, stats) = match (
        store.recent(&args.name, args.limit),
        store.stats(&args.name, since, until),
    ) {
        (Ok(r), Ok(s)) => (r, s),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("lookout history: {e}");
            return Exit::Failed;
        }
    };
    if results.is_empty() && cfg.probe(&args.name).is_none() {
        let names: Vec<&str> = cfg.probes.iter().map(|p| p.name.as_str()).collect();
        let hint = crate::config::read::suggest(&args.name, &names)
            .map(|s| format!("; did you mean `{s}`?"))
            .unwrap_or_default();
        eprintln!(
            "lookout history: no probe named `{}` and no history for it{hint}",
            args.name
        );
        return Exit::Failed;
    }

    if cli.json {
        let v = serde_json::json!({
            "probe": args.name,
            "window_seconds": args.window.duration.as_secs_f64(),
            "stats": stats_json(&stats),
            "results": results,
        });
        println!("{v}");
        return Exit::Ok;
    }
    let color = output::stdout_color();
    let window = &args.window.text;
    match cfg.probe(&args.name) {
        Some(p) => println!(
            "{}  {} {}  ({})",
            p.name,
            p.kind.name(),
            p.kind.target(),
            p.schedule
        ),
        None => println!("{}  (no longer configured)", args.name),
    }
    match stats.uptime {
        Some(u) => println!(
            "last {window}: {} run{}, {} failed, uptime {:.3}%",
            stats.count,
            if stats.count == 1 { "" } else { "s" },
            stats.failures,
            u * 100.0
        ),
        None => println!("last {window}: no runs"),
    }
    if let (Some(min), Some(p50), Some(p95), Some(p99), Some(max)) =
        (stats.min, stats.p50, stats.p95, stats.p99, stats.max)
    {
        println!(
            "latency: min {}  p50 {}  p95 {}  p99 {}  max {}",
            output::ms(min).trim(),
            output::ms(p50).trim(),
            output::ms(p95).trim(),
            output::ms(p99).trim(),
            output::ms(max).trim()
        );
    }
    if !results.is_empty() {
        println!("recent:");
    }
    for r in &results {
        let when = r.started_at.format("%Y-%m-%d %H:%M:%S%.3fZ");
        match &r.failure {
            None => println!(
                "  {when}  {}  {}",
                output::paint(color, output::GREEN, "ok  "),
                output::ms(r.duration)
            ),
            Some(f) => println!(
                "  {when}  {}  {}  {}: {}",
                output::paint(color, output::RED, "FAIL"),
                output::ms(r.duration),
                f.class,
                f.message
            ),
        }
    }
    Exit::Ok
}

fn stats_json(s: &WindowStats) -> serde_json::Value {
    let ms = |d: Option<Duration>| d.map(|d| d.as_secs_f64() * 1000.0);
    serde_json::json!({
        "count": s.count,
        "failures": s.failures,
        "uptime": s.uptime,
        "min_ms": ms(s.min),
        "p50_ms": ms(s.p50),
        "p95_ms": ms(s.p95),
        "p99_ms": ms(s.p99),
        "max_ms": ms(s.max),
        "mean_ms": ms(s.mean),
    })
}
