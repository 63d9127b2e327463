//! The alerting task of `lookout run`: feeds every result to the
//! [`Engine`], ticks it every second (reminders, maintenance windows
//! ending), and saves what changed (probe states, incidents, and the
//! notices caused) in one transaction before the outbox task sends them.
//!
//! It restores the states saved by the previous process at start, so a
//! restart (or a crash) neither forgets an open incident nor announces it
//! again, and a recovery after the restart is still announced. Results
//! reach it through a channel whose `send` never blocks, so nothing on the
//! probing path waits on the database or a notifier.
//!
//! It also owns change events: the API hands it each posted event
//! ([`AlertHandle::post_event`]), it stores it and keeps the last day's
//! in memory, and an Opened notice cites the ones that match its probe
//! within `alert.events_window` before the incident started.

use std::collections::{BTreeSet, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use chrono::{TimeDelta, Utc};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::changes::{cite, ChangeEvent};
use super::leader::{Cluster, Feed};
use super::outbox::OutboxHandle;
use super::watch::{self, Change, Watches};
use super::{AlertBoard, AlertView, Engine, Incident, Outgoing, ProbeState};
use crate::config::Config;
use crate::result::ProbeResult;
use crate::store::{Store, StoreError};

/// How often the engine is ticked and pending state is saved.
const TICK: Duration = Duration::from_secs(1);

/// A probe that is up with no failure streak and no incident ("quiet") is
/// saved once every this many runs instead of after each: a restart then
/// restores it as up with a success count at most this many runs behind,
/// which no alerting decision reads. Anything else (a failure, a change of
/// status, an incident) is saved with the next tick as before. Saving every
/// quiet probe every second was a burst of JSON and SQLite work each tick
/// (2,000 rows a second at 2,000 probes/s) that delayed probes' own timing.
const QUIET_SAVE_EVERY: u32 = 60;

/// Up, no failure streak, no incident, no degradation and no failure in
/// its rate window: nothing a restart must restore exactly.
fn quiet(s: &ProbeState) -> bool {
    s.status == super::Status::Up
        && s.fail_streak == 0
        && s.streak_started.is_none()
        && s.incident.is_none()
        && s.degraded
            .as_ref()
            .is_none_or(|d| d.incident.is_none() && d.bad_streak == 0 && d.recent == 0)
}

/// Whether a result that left the probe in state `after` must be saved:
/// always unless the probe was quiet before (`was_quiet`) and still is,
/// and then on every [`QUIET_SAVE_EVERY`]th success, at a phase set by the
/// probe's name so that probes started together do not all save in the
/// same tick.
fn needs_save(name: &str, was_quiet: bool, after: Option<&ProbeState>) -> bool {
    match after {
        Some(a) if was_quiet && quiet(a) => {
            let phase = name
                .bytes()
                .fold(0u32, |h, c| h.wrapping_mul(31).wrapping_add(c.into()));
            a.ok_streak % QUIET_SAVE_EVERY == phase % QUIET_SAVE_EVERY
        }
        _ => true,
    }
}

/// The scheduler's side: hands results to the alerting task.
#[derive(Debug, Clone)]
pub struct AlertHandle {
    tx: mpsc::UnboundedSender<ProbeResult>,
    reconfig: mpsc::UnboundedSender<Arc<Config>>,
    events: mpsc::UnboundedSender<EventIn>,
}

/// A change event on its way to the alerting task, and where to answer.
pub(super) struct EventIn {
    pub(super) event: ChangeEvent,
    pub(super) reply: oneshot::Sender<Result<ChangeEvent, String>>,
}

/// How far back the alerting task keeps events in memory: the longest
/// `alert.events_window`.
pub const EVENTS_KEPT: Duration = Duration::from_secs(24 * 3600);
/// The most events kept in memory (a day of deploys is far fewer).
const EVENTS_KEPT_MAX: usize = 10_000;
/// The most changes one notice cites.
const CITED: usize = 3;

impl AlertHandle {
    /// Never blocks; a result sent after the task stopped is dropped (only
    /// at shutdown, after the scheduler stopped).
    pub fn observe(&self, r: ProbeResult) {
        let _ = self.tx.send(r);
    }

    /// Hands a reloaded configuration to the alerting task (see
    /// [`Engine::reconfigure`]). Never blocks.
    pub fn reconfigure(&self, config: Arc<Config>) {
        let _ = self.reconfig.send(config);
    }

    /// Stores a change event (see [`super::changes`]) and returns it with
    /// its id; the error says why it could not be stored.
    pub async fn post_event(&self, event: ChangeEvent) -> Result<ChangeEvent, String> {
        let (reply, answer) = oneshot::channel();
        self.events
            .send(EventIn { event, reply })
            .map_err(|_| "Lookout is shutting down".to_string())?;
        answer
            .await
            .map_err(|_| "Lookout is shutting down".to_string())?
    }
}

/// Starts the alerting task on `store` (its own connection) after
/// restoring the saved states. Returns an error when the saved states
/// cannot be read.
///
/// With `cluster` (several instances on one PostgreSQL), the task first
/// waits to become the leader (`leader.rs`): until then it only stores
/// posted events and shows the leader's saved states on the board; as
/// leader it restores the states, reads every instance's results from the
/// database (the sink does not hand it this instance's) and steps down
/// when it loses the lock.
pub async fn spawn_alerting(
    config: &Config,
    store: Store,
    outbox: OutboxHandle,
    board: AlertBoard,
    shutdown: CancellationToken,
    cluster: Option<Cluster>,
) -> Result<(AlertHandle, JoinHandle<()>), StoreError> {
    let store = Arc::new(Mutex::new(store));
    let (tx, rx) = mpsc::unbounded_channel();
    let (reconfig, reconfigs) = mpsc::unbounded_channel();
    let (events, events_rx) = mpsc::unbounded_channel();
    let mut inputs = Inputs {
        results: rx,
        reconfigs,
        events: events_rx,
        config: Arc::new(config.clone()),
    };
    let handle = AlertHandle {
        tx,
        reconfig,
        events,
    };
    if let Some(cluster) = cluster {
        let task = tokio::spawn(super::leader::follow_and_lead(
            inputs, store, outbox, board, shutdown, cluster,
        ));
        return Ok((handle, task));
    }
    let (engine, recent) = restore(&inputs.config, &store, &board).await?;
    let task = tokio::spawn(async move {
        run(
            engine,
            &mut inputs,
            recent,
            store,
            outbox,
            board,
            shutdown,
            None,
        )
        .await;
    });
    Ok((handle, task))
}

/// A fresh engine for `config` with the states saved in the database,
/// published on the board, and the change events of the last day.
pub(super) async fn restore(
    config: &Config,
    store: &Arc<Mutex<Store>>,
    board: &AlertBoard,
) -> Result<(Engine, VecDeque<ChangeEvent>), StoreError> {
    let mut engine = Engine::new(config);
    let saved = {
        let store = store.clone();
        tokio::task::spawn_blocking(move || lock(&store).load_alert_states())
            .await
            .map_err(thread_failed)??
    };
    let mut restored = 0;
    for (name, state) in saved {
        if engine.restore(&name, state) {
            restored += 1;
        }
    }
    if restored > 0 {
        tracing::info!(probes = restored, "alerting state restored");
    }
    publish_all(&engine, board);
    Ok((engine, recent_events(store).await?))
}

/// The change events of the last [`EVENTS_KEPT`] (and any dated ahead),
/// oldest first.
pub(super) async fn recent_events(
    store: &Arc<Mutex<Store>>,
) -> Result<VecDeque<ChangeEvent>, StoreError> {
    let store = store.clone();
    let now = Utc::now();
    let since = now - TimeDelta::from_std(EVENTS_KEPT).unwrap_or_default();
    let until = now + TimeDelta::days(1);
    let recent = tokio::task::spawn_blocking(move || {
        lock(&store).events_between(since, until, EVENTS_KEPT_MAX)
    })
    .await
    .map_err(thread_failed)??;
    Ok(recent.into_iter().rev().collect())
}

fn thread_failed(e: tokio::task::JoinError) -> StoreError {
    StoreError::Io {
        path: Default::default(),
        error: std::io::Error::other(e.to_string()),
    }
}

/// What the alerting task listens to, and the latest configuration.
pub(super) struct Inputs {
    pub(super) results: mpsc::UnboundedReceiver<ProbeResult>,
    pub(super) reconfigs: mpsc::UnboundedReceiver<Arc<Config>>,
    pub(super) events: mpsc::UnboundedReceiver<EventIn>,
    pub(super) config: Arc<Config>,
}

/// Why [`run`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Ended {
    Shutdown,
    /// Another instance leads now (or the lock could not be confirmed).
    Deposed,
}

pub(super) fn lock(store: &Mutex<Store>) -> std::sync::MutexGuard<'_, Store> {
    store.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Feeds `r` to the engine and the anomaly watch, marking what must be
/// saved; the notices it causes join `pending`.
fn apply(
    engine: &mut Engine,
    watches: &mut Watches,
    board: &AlertBoard,
    dirty: &mut BTreeSet<String>,
    pending: &mut Vec<Outgoing>,
    r: &ProbeResult,
) {
    let was_quiet = engine.state(&r.probe).is_some_and(quiet);
    let caused = engine.on_result(r, Utc::now());
    pending.extend(with_trace(engine, r, caused));
    if let Some(change) = watches.observe(r) {
        let (reason, since) = match change {
            Change::Open { reason, since } => (Some(reason), since),
            Change::Cleared => (None, r.started_at),
        };
        pending.extend(engine.on_anomaly(&r.probe, reason, since, Utc::now()));
        dirty.insert(r.probe.clone());
    }
    if needs_save(&r.probe, was_quiet, engine.state(&r.probe)) {
        dirty.insert(r.probe.clone());
    }
    publish(engine, board, &r.probe);
}

#[allow(clippy::too_many_arguments)]
pub(super) async fn run(
    mut engine: Engine,
    inputs: &mut Inputs,
    mut recent: VecDeque<ChangeEvent>,
    store: Arc<Mutex<Store>>,
    outbox: OutboxHandle,
    board: AlertBoard,
    shutdown: CancellationToken,
    mut feed: Option<Feed>,
) -> Ended {
    let mut dirty: BTreeSet<String> = BTreeSet::new();
    let mut pending: Vec<Outgoing> = Vec::new();
    let mut watches = Watches::default();
    watches.configure(&engine);
    let mut ticker = tokio::time::interval(TICK);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut feed_ticker = tokio::time::interval(super::leader::FEED_EVERY);
    feed_ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let ended = loop {
        if feed.as_ref().is_some_and(|f| f.deposed) {
            break Ended::Deposed;
        }
        tokio::select! {
            r = inputs.results.recv() => match r {
                Some(r) => {
                    apply(&mut engine, &mut watches, &board, &mut dirty, &mut pending, &r);
                    // A notice is saved (and so sent) at once; streaks of
                    // quiet runs are saved with the next tick.
                    if !pending.is_empty() {
                        cite_changes(&engine, &recent, &mut pending);
                        save(&mut engine, &store, &outbox, &mut dirty, &mut pending, feed.as_mut()).await;
                    }
                }
                None => break Ended::Shutdown,
            },
            _ = feed_ticker.tick(), if feed.is_some() => {
                let Some(f) = feed.as_mut() else { continue };
                super::leader::refresh_events(f, &store, &mut recent).await;
                let Some(results) = super::leader::read_feed(f, &store).await else { continue };
                for r in &results {
                    apply(&mut engine, &mut watches, &board, &mut dirty, &mut pending, r);
                }
                if !pending.is_empty() {
                    cite_changes(&engine, &recent, &mut pending);
                    save(&mut engine, &store, &outbox, &mut dirty, &mut pending, feed.as_mut()).await;
                }
            },
            Some(posted) = inputs.events.recv() => {
                let answer = store_event(&store, posted.event).await;
                if let Ok(e) = &answer {
                    remember(&mut recent, e.clone());
                }
                let _ = posted.reply.send(answer);
            }
            Some(config) = inputs.reconfigs.recv() => {
                pending.extend(engine.reconfigure(&config, Utc::now()));
                inputs.config = config;
                watches.configure(&engine);
                save(&mut engine, &store, &outbox, &mut dirty, &mut pending, feed.as_mut()).await;
                board.retain(|name| engine.state(name).is_some());
                publish_all(&engine, &board);
            }
            _ = ticker.tick() => {
                relearn(&mut engine, &mut watches, &store, &board).await;
                pending.extend(engine.tick(Utc::now()));
                cite_changes(&engine, &recent, &mut pending);
                let incidents = save(&mut engine, &store, &outbox, &mut dirty, &mut pending, feed.as_mut()).await;
                // Each result already published its probe; the whole board
                // needs redoing only when time alone can change a view (a
                // maintenance window) or saving assigned incident ids.
                if incidents || engine.has_windows() {
                    publish_all(&engine, &board);
                }
            }
            _ = shutdown.cancelled() => break Ended::Shutdown,
        }
    };
    // Results already sent by the scheduler are applied before stopping.
    while let Ok(r) = inputs.results.try_recv() {
        dirty.insert(r.probe.clone());
        pending.extend(engine.on_result(&r, Utc::now()));
    }
    if ended == Ended::Shutdown {
        save(
            &mut engine,
            &store,
            &outbox,
            &mut dirty,
            &mut pending,
            feed.as_mut(),
        )
        .await;
    }
    ended
}

/// Relearns the baselines (and trend findings) that are due, a few per
/// tick so a start with many watched probes does not stall alerting.
async fn relearn(
    engine: &mut Engine,
    watches: &mut Watches,
    store: &Arc<Mutex<Store>>,
    board: &AlertBoard,
) {
    const PER_TICK: usize = 16;
    let due = watches.due(PER_TICK);
    if due.is_empty() {
        return;
    }
    let store = store.clone();
    let names = due.clone();
    let read = tokio::task::spawn_blocking(move || {
        let now = Utc::now();
        let st = lock(&store);
        names
            .into_iter()
            .map(|n| {
                let h = watch::load(&st, &n, now);
                (n, h)
            })
            .collect::<Vec<_>>()
    })
    .await;
    let Ok(read) = read else {
        return;
    };
    for (name, history) in read {
        match history {
            Ok(h) => {
                let finding = watches.learned(&name, &h);
                if engine.set_trend(&name, finding) {
                    publish(engine, board, &name);
                }
            }
            Err(e) => {
                tracing::warn!(probe = %name, error = %e, "cannot read the history the anomaly baseline is learned from");
                watches.postpone(&name);
            }
        }
    }
}

/// Stores a posted event; returns it with its id.
pub(super) async fn store_event(
    store: &Arc<Mutex<Store>>,
    mut event: ChangeEvent,
) -> Result<ChangeEvent, String> {
    let store = store.clone();
    let saved = event.clone();
    let id = tokio::task::spawn_blocking(move || lock(&store).insert_event(&saved))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| {
            tracing::error!(error = %e, "cannot store a change event");
            e.to_string()
        })?;
    event.id = Some(id);
    tracing::info!(id, kind = %event.kind, title = %event.title, "change event recorded");
    Ok(event)
}

/// Keeps `event` among the recent ones (sorted by time), forgetting those
/// older than [`EVENTS_KEPT`] and the oldest beyond [`EVENTS_KEPT_MAX`].
fn remember(recent: &mut VecDeque<ChangeEvent>, event: ChangeEvent) {
    let at = recent.partition_point(|e| e.at <= event.at);
    recent.insert(at, event);
    let floor = Utc::now() - TimeDelta::from_std(EVENTS_KEPT).unwrap_or_default();
    while recent.front().is_some_and(|e| e.at < floor) || recent.len() > EVENTS_KEPT_MAX {
        recent.pop_front();
    }
}

/// Marks the Opened notices `r` caused with `r`'s trace id (and the link
/// `tracing.link` makes of it): the request that tipped the probe over.
fn with_trace(engine: &Engine, r: &ProbeResult, mut caused: Vec<Outgoing>) -> Vec<Outgoing> {
    // A passing run can tip a probe over when other locations' failures
    // meet `alert.locations`: its trace is not the failure's.
    if caused.is_empty() || r.success {
        return caused;
    }
    let Some(id) = r
        .details
        .get("trace_id")
        .and_then(|v| v.as_str())
        .filter(|id| crate::tracectx::is_trace_id(id))
    else {
        return caused;
    };
    for item in &mut caused {
        let n = &mut item.notice;
        if n.kind == crate::notify::NoticeKind::Opened && n.probe == r.probe {
            n.trace_id = Some(id.to_string());
            n.trace_url = engine
                .trace_link()
                .map(|t| crate::tracectx::trace_link(t, id));
        }
    }
    caused
}

/// Adds to each Opened notice the changes that match its probe and came
/// shortly before its incident started.
fn cite_changes(engine: &Engine, recent: &VecDeque<ChangeEvent>, pending: &mut [Outgoing]) {
    if recent.is_empty() {
        return;
    }
    for item in pending.iter_mut() {
        let n = &mut item.notice;
        if n.kind != crate::notify::NoticeKind::Opened || !n.changes.is_empty() {
            continue;
        }
        let Some(window) = engine.alert_spec(&n.probe).map(|a| a.events_window) else {
            continue;
        };
        n.changes = cite(recent, &n.labels, n.since, window, CITED);
    }
}

/// Shows `name`'s state on the board.
fn publish(engine: &Engine, board: &AlertBoard, name: &str) {
    if let Some(state) = engine.state(name) {
        let maintenance = engine.in_maintenance(name, Utc::now());
        board.publish(name, AlertView::of(state, maintenance));
    }
}

/// Shows every probe's state on the board (maintenance windows begin and
/// end with time, and saving assigns incident ids).
pub(super) fn publish_all(engine: &Engine, board: &AlertBoard) {
    let now = Utc::now();
    for (name, state) in engine.states() {
        board.publish(name, AlertView::of(state, engine.in_maintenance(name, now)));
    }
}

/// Saves the dirty states, closed incidents and pending notices; on
/// failure keeps the states and incidents to retry with the next tick and
/// hands the notices to the outbox to send from memory (the disk may be
/// full; nobody on call should wait for it). Returns whether an incident or notice was saved
/// (which may have assigned incident ids the board shows).
///
/// A leader (`feed`) saves its feed position with them, only while its
/// epoch is current; on failure it keeps the notices to save again
/// instead of sending them from memory: its successor replays the same
/// results from the saved position and would send them a second time.
async fn save(
    engine: &mut Engine,
    store: &Arc<Mutex<Store>>,
    outbox: &OutboxHandle,
    dirty: &mut BTreeSet<String>,
    pending: &mut Vec<Outgoing>,
    feed: Option<&mut Feed>,
) -> bool {
    let closed: Vec<(String, Incident)> = engine.take_closed();
    let moved = feed.as_ref().is_some_and(|f| f.saved != f.mark.through);
    if dirty.is_empty() && pending.is_empty() && closed.is_empty() && !moved {
        return false;
    }
    let mark = feed.as_ref().map(|f| f.mark);
    let states: Vec<(String, ProbeState)> = engine
        .states()
        .filter(|(n, _)| dirty.contains(*n))
        .map(|(n, s)| (n.to_string(), s.clone()))
        .collect();
    let incidents = !closed.is_empty()
        || !pending.is_empty()
        || states
            .iter()
            .any(|(_, s)| s.incident.is_some() || s.degraded_incident().is_some());
    let items = std::mem::take(pending);
    let store = store.clone();
    let job = {
        let (closed, items) = (closed.clone(), items.clone());
        tokio::task::spawn_blocking(move || {
            lock(&store).save_alert(&states, &closed, &items, Utc::now(), mark)
        })
    };
    let result = job.await;
    if let Some(f) = feed {
        match &result {
            Ok(Ok(_)) => f.saved = f.mark.through,
            Ok(Err(StoreError::Deposed)) => {
                tracing::warn!("another instance took over alerting; stepping down");
                f.deposed = true;
                return false;
            }
            Ok(Err(e)) => {
                tracing::error!(error = %e, "cannot save alerting state; retrying");
                engine.return_closed(closed);
                pending.splice(0..0, items);
                return false;
            }
            Err(e) => {
                tracing::error!(error = %e, "alerting save task failed; retrying");
                engine.return_closed(closed);
                pending.splice(0..0, items);
                return false;
            }
        }
    }
    match result {
        Ok(Ok(saved)) => {
            dirty.clear();
            engine.set_incident_ids(&saved.incidents);
            if !saved.outbox.is_empty() {
                outbox.wake();
            }
            incidents
        }
        Ok(Err(e)) => {
            tracing::error!(error = %e, "cannot save alerting state; retrying");
            // Alerting does not wait for the disk: the notices go out from
            // memory and are recorded when the database takes writes again.
            outbox.send_unsaved(items);
            engine.return_closed(closed);
            false
        }
        Err(e) => {
            tracing::error!(error = %e, "alerting save task failed; retrying");
            outbox.send_unsaved(items);
            engine.return_closed(closed);
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alert::Status;

    fn up(ok_streak: u32) -> ProbeState {
        ProbeState {
            status: Status::Up,
            ok_streak,
            ..ProbeState::default()
        }
    }

    #[test]
    fn a_quiet_probe_is_saved_once_every_sixty_runs_and_anything_else_at_once() {
        // Sixty successes in a row while quiet: exactly one save, whatever
        // the name (the phase only moves which run it is).
        for name in ["api", "db", "p1234"] {
            let saves = (1..=QUIET_SAVE_EVERY)
                .filter(|n| needs_save(name, true, Some(&up(100 + n))))
                .count();
            assert_eq!(saves, 1, "{name}");
        }
        // The first verdict after start (pending before) is saved.
        assert!((0..QUIET_SAVE_EVERY).all(|n| needs_save("api", false, Some(&up(n)))));
        // A failure is saved at once, and so is the success that ends it.
        let failing = ProbeState {
            fail_streak: 1,
            streak_started: Some(Utc::now()),
            ..up(0)
        };
        assert!((0..QUIET_SAVE_EVERY).all(|_| needs_save("api", true, Some(&failing))));
        assert!(needs_save("api", false, Some(&up(1))));
        // Down is never quiet.
        let down = ProbeState {
            status: Status::Down,
            ..up(3)
        };
        assert!(needs_save("api", true, Some(&down)));
    }
}
