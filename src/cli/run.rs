//! `lookout run`: the daemon. Loads the configuration, opens the database,
//! starts the recorder, the alerting task (with the states the previous
//! process saved), the outbox, the HTTP server, the scheduler and the
//! reload watcher (SIGHUP and file changes, `reload.rs`). The scheduler
//! gets only the probes this instance's `location` runs; the alerting task
//! and the live state get every probe; the sink stamps each result with
//! the location. On
//! SIGTERM or SIGINT stops starting probes, lets running ones finish (each
//! is bounded by its timeout), saves the alerting state, gives the outbox a
//! bounded moment, flushes results and exits 0. A second signal exits at
//! once.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::{load_config, Cli, Exit};
use crate::alert::outbox::{spawn_outbox, OutboxSettings};
use crate::alert::runner::spawn_alerting;
use crate::alert::AlertBoard;
use crate::config::ProbeSpec;
use crate::result::ProbeResult;
use crate::scheduler::{self, RunMeta, Sink};
use crate::server::{router, History, LiveState};
use crate::store::recorder::{spawn_recorder, RecorderSettings};
use crate::store::Store;

/// How long shutdown waits for the recorder to flush.
const FLUSH_DEADLINE: Duration = Duration::from_secs(10);
/// How long shutdown waits for the last spans to reach the collector.
const OTLP_DEADLINE: Duration = Duration::from_secs(5);

pub async fn run(cli: &Cli) -> Exit {
    let cfg = match load_config(cli) {
        Ok(c) => c,
        Err(e) => return e,
    };
    crate::limits::warn_if_short(cfg.scheduler.concurrency);
    // With PostgreSQL nothing connects yet (a database that is away
    // must not stop probing); each connection is made on first use.
    let storage = cfg.storage.clone();
    let store = match tokio::task::spawn_blocking(move || Store::open_configured(&storage)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            eprintln!("lookout: {e}");
            return Exit::Failed;
        }
        Err(e) => {
            eprintln!("lookout: opening the database failed: {e}");
            return Exit::Failed;
        }
    };
    let clustered = store.is_postgres();
    // The file, or PostgreSQL's URL without its password.
    let database = store.path().display().to_string();

    // Alerting and the outbox use their own connections to the same
    // database (SQLite in WAL: they never block the recorder's writes for
    // long); with PostgreSQL, the alerting lead has one more, for its lock.
    let open_second = |what: &'static str| {
        let storage = cfg.storage.clone();
        async move {
            match tokio::task::spawn_blocking(move || Store::open_configured(&storage)).await {
                Ok(Ok(s)) => Ok(s),
                Ok(Err(e)) => Err(format!("lookout: {what}: {e}")),
                Err(e) => Err(format!("lookout: {what}: opening the database failed: {e}")),
            }
        }
    };
    let (alert_store, outbox_store, server_store) = match (
        open_second("alerting").await,
        open_second("outbox").await,
        open_second("server").await,
    ) {
        (Ok(a), Ok(o), Ok(s)) => (a, o, s),
        (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => {
            eprintln!("{e}");
            return Exit::Failed;
        }
    };
    let cluster = if clustered {
        match open_second("alerting lock").await {
            Ok(lock) => Some(crate::alert::leader::Cluster {
                lock,
                leading: tokio::sync::watch::channel(false).0,
            }),
            Err(e) => {
                eprintln!("{e}");
                return Exit::Failed;
            }
        }
    } else {
        None
    };

    let leading = cluster.as_ref().map(|c| c.leading.subscribe());
    let shutdown = CancellationToken::new();
    let recorder_stop = CancellationToken::new();
    let alert_stop = CancellationToken::new();
    let outbox_stop = CancellationToken::new();
    let notify_counters = Arc::new(crate::metrics::NotifyCounters::new(cfg.notifiers.keys()));
    let (outbox, outbox_task) = spawn_outbox(
        outbox_store,
        cfg.notifiers.clone(),
        OutboxSettings {
            counters: Some(notify_counters.clone()),
            leading: leading.clone(),
            max_age: cfg.outbox.max_age,
            initial_backoff: cfg.outbox.retry_initial,
            max_backoff: cfg.outbox.retry_max,
            ..OutboxSettings::default()
        },
        outbox_stop.clone(),
    );
    let board = AlertBoard::default();
    let (alerts, alert_task) = match spawn_alerting(
        &cfg,
        alert_store,
        outbox.clone(),
        board.clone(),
        alert_stop.clone(),
        cluster,
    )
    .await
    {
        Ok(a) => a,
        Err(e) => {
            eprintln!("lookout: cannot restore the alerting state: {e}");
            return Exit::Failed;
        }
    };
    let settings = RecorderSettings::from(&cfg.storage);
    let (recorder, recorder_task) = spawn_recorder(store, settings, recorder_stop.clone());

    // What this instance runs; the pages, API and metrics show them all.
    let probes: Vec<Arc<ProbeSpec>> = cfg.local_probes();
    let mut live = LiveState::new(&cfg.probes);
    live.location = cfg.location.clone();
    live.alerts = board;
    live.events = Some(alerts.clone());
    live.history = Some(History::new(server_store));
    live.settings = Arc::new(cfg.server.clone());
    live.trace_link = Arc::new(std::sync::RwLock::new(cfg.tracing.link.clone()));
    live.metrics.set_recorder(recorder.stats());
    live.metrics.set_notifications(notify_counters);
    if let Some(leading) = &leading {
        live.metrics.set_leading(leading.clone());
    }
    live.metrics
        .config_loaded(chrono::Utc::now().timestamp(), false);
    live.ready.store(true, Ordering::Relaxed);

    let listener = match tokio::net::TcpListener::bind(cfg.server.listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("lookout: cannot listen on {}: {e}", cfg.server.listen);
            return Exit::Failed;
        }
    };
    let server_stop = shutdown.clone();
    let app = router(live.clone());
    let server = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move { server_stop.cancelled().await })
            .await
    });

    tracing::info!(
        probes = probes.len(),
        location = cfg.location.as_deref().unwrap_or("none"),
        database = %database,
        listen = %cfg.server.listen,
        "lookout started"
    );
    log_elsewhere(&cfg, probes.len());

    // OTLP export when configured: the sink offers each result (never
    // waiting); the exporter ends once the sink is dropped.
    let (otlp, otlp_task) = match &cfg.tracing.otlp {
        Some(o) => {
            let (exporter, task) = crate::otlp::spawn(o, live.probes.clone());
            live.metrics.set_otlp(exporter.stats());
            (Some(exporter), Some(task))
        }
        None => (None, None),
    };
    let sink: Sink = {
        let live = live.clone();
        let recorder = recorder.clone();
        let alerts = alerts.clone();
        let location = cfg.location.clone();
        Arc::new(move |mut r: ProbeResult, meta: RunMeta| {
            r.location = location.clone();
            log_result(&r, meta);
            // A run that finishes after a reload removed its probe is
            // history (recorded) but no longer shown.
            if live.metrics.knows(&r.probe) {
                live.record(&r);
                live.metrics.observe(&r, meta.lag);
            }
            if let Some(o) = &otlp {
                o.offer(&r);
            }
            // With PostgreSQL the leader reads every instance's results
            // from the database instead (`alert/leader.rs`).
            if !clustered {
                alerts.observe(r.clone());
            }
            recorder.record(r);
        })
    };

    tokio::spawn(watch_signals(shutdown.clone()));
    let (reloads, updates) = tokio::sync::mpsc::unbounded_channel();
    let concurrency = cfg.scheduler.concurrency;
    let gates = Arc::new(scheduler::HostGates::new(
        cfg.scheduler.host_spacing.clone(),
    ));
    tokio::spawn(super::reload::watch(
        cli.config.clone(),
        cfg,
        super::reload::Targets {
            live: live.clone(),
            alerts: alerts.clone(),
            outbox: outbox.clone(),
            scheduler: reloads,
        },
        shutdown.clone(),
    ));
    crate::probe::prepare(&probes).await;
    scheduler::run_with_updates(probes, concurrency, sink, shutdown.clone(), updates, gates).await;
    shutdown.cancel();
    tracing::info!("probes stopped; flushing results");
    if let Some(task) = otlp_task {
        if tokio::time::timeout(OTLP_DEADLINE, task).await.is_err() {
            tracing::warn!(
                "the last spans did not reach the OTLP collector within {OTLP_DEADLINE:?}"
            );
        }
    }

    // Alerting applies the last results and saves; then the outbox gets a
    // bounded moment to send what is due (the rest is sent after restart).
    alert_stop.cancel();
    drop(alerts);
    if tokio::time::timeout(FLUSH_DEADLINE, alert_task)
        .await
        .is_err()
    {
        tracing::error!("alerting did not save its state within {FLUSH_DEADLINE:?}");
    }
    outbox_stop.cancel();
    if tokio::time::timeout(FLUSH_DEADLINE, outbox_task)
        .await
        .is_err()
    {
        tracing::error!("the outbox did not stop within {FLUSH_DEADLINE:?}");
    }

    recorder_stop.cancel();
    drop(recorder);
    let mut exit = Exit::Ok;
    match tokio::time::timeout(FLUSH_DEADLINE, recorder_task).await {
        Ok(Ok(report)) => {
            if report.still_buffered > 0 {
                tracing::error!(
                    unwritten = report.still_buffered,
                    "database unavailable at shutdown; results not written"
                );
                exit = Exit::Failed;
            }
            tracing::info!(
                written = report.written,
                dropped = report.dropped,
                "results flushed"
            );
        }
        Ok(Err(e)) => {
            tracing::error!(error = %e, "recorder ended abnormally");
            exit = Exit::Failed;
        }
        Err(_) => {
            tracing::error!("recorder did not flush within {FLUSH_DEADLINE:?}");
            exit = Exit::Failed;
        }
    }
    match server.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::error!(error = %e, "HTTP server failed"),
        Err(e) => tracing::error!(error = %e, "HTTP server task ended abnormally"),
    }
    exit
}

/// Says once, at start, which configured probes this instance does not
/// run: a warning when it has no location and probes list `locations`
/// (they run nowhere until it has one), a note otherwise.
fn log_elsewhere(cfg: &crate::config::Config, running: usize) {
    let skipped = cfg.probes.len() - running;
    if skipped == 0 {
        return;
    }
    match cfg.location.as_deref() {
        None => {
            let names: Vec<&str> = cfg
                .probes
                .iter()
                .filter(|p| !p.locations.is_empty())
                .map(|p| p.name.as_str())
                .take(10)
                .collect();
            tracing::warn!(
                skipped,
                probes = %names.join(", "),
                "probes that list `locations` do not run on an instance without a location; \
                 set `location` or LOOKOUT_LOCATION"
            );
        }
        Some(here) => tracing::info!(
            skipped,
            location = here,
            "probes whose `locations` do not list this location run elsewhere"
        ),
    }
}

fn log_result(r: &ProbeResult, meta: RunMeta) {
    let ms = r.duration.as_secs_f64() * 1000.0;
    let lag_ms = meta.lag.as_secs_f64() * 1000.0;
    match &r.failure {
        None => tracing::info!(
            probe = %r.probe,
            ok = true,
            duration_ms = format_args!("{ms:.1}"),
            lag_ms = format_args!("{lag_ms:.1}"),
            "result"
        ),
        Some(f) => tracing::warn!(
            probe = %r.probe,
            ok = false,
            duration_ms = format_args!("{ms:.1}"),
            class = %f.class,
            error = %f.message,
            "result"
        ),
    }
}

/// The first SIGTERM/SIGINT starts a graceful shutdown; a second exits at once.
async fn watch_signals(shutdown: CancellationToken) {
    use tokio::signal::unix::{signal, SignalKind};
    let (mut term, mut int) = match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(t), Ok(i)) => (t, i),
        _ => {
            tracing::error!("cannot install signal handlers; stop Lookout with SIGKILL");
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    tracing::info!("shutting down: letting running probes finish (signal again to exit at once)");
    shutdown.cancel();
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    tracing::warn!("second signal: exiting now");
    std::process::exit(1);
}
