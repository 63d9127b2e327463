//! Alerting across several instances on one PostgreSQL: the follower's
//! wait and the leader's results feed (storage side: `store/feed.rs`).
//!
//! Every instance runs the alerting task, but only the one holding the
//! leader's advisory lock evaluates incidents and (through the outbox,
//! which watches [`Cluster::leading`]) sends notices. A follower tries to
//! take the lock every [`LEAD_POLL`], stores the change events posted to
//! it, and shows the leader's saved states on its own board. On taking
//! the lock it restores the saved states and feed position and reads every
//! instance's results from the database each [`FEED_EVERY`]; each second
//! it confirms it still holds the lock, and steps down (its engine is
//! dropped, the outbox pauses) when it does not. It rereads the change
//! events every [`EVENTS_EVERY`], since any instance may store one. Takeover after a leader
//! dies therefore takes at most [`LEAD_POLL`] once PostgreSQL has freed
//! the lock: at once for a killed process, within about 10 s for a lost
//! host (the lock session's keep-alives).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::changes::ChangeEvent;
use super::outbox::OutboxHandle;
use super::runner::{lock, publish_all, recent_events, restore, run, store_event, Ended, Inputs};
use super::{AlertBoard, Engine};
use crate::result::ProbeResult;
use crate::store::feed::FeedMark;
use crate::store::Store;

/// How often a follower tries to take the lead.
pub const LEAD_POLL: Duration = Duration::from_secs(2);
/// How often the leader reads new results (and confirms its lock).
pub const FEED_EVERY: Duration = Duration::from_secs(1);
/// How often a follower refreshes its board from the saved states.
pub const BOARD_EVERY: Duration = Duration::from_secs(5);
/// How often the leader rereads the change events, which any instance
/// may have stored.
pub const EVENTS_EVERY: Duration = Duration::from_secs(10);

/// What the alerting task of one of several instances needs.
pub struct Cluster {
    /// A connection used only for the leader's lock.
    pub lock: Store,
    /// True while this instance leads; the outbox drains only then.
    pub leading: watch::Sender<bool>,
}

/// The leader's position in the results feed.
pub(super) struct Feed {
    pub(super) mark: FeedMark,
    /// The position last saved with the alerting state.
    pub(super) saved: i64,
    pub(super) lock: Arc<Mutex<Store>>,
    /// Set when the lock or the epoch was lost.
    pub(super) deposed: bool,
    /// When the change events were last read.
    pub(super) events_read: std::time::Instant,
}

/// Rereads the change events every [`EVENTS_EVERY`]: an event posted to
/// another instance is stored by it, and the leader cites it from here.
pub(super) async fn refresh_events(
    f: &mut Feed,
    store: &Arc<Mutex<Store>>,
    recent: &mut VecDeque<ChangeEvent>,
) {
    if f.events_read.elapsed() < EVENTS_EVERY {
        return;
    }
    f.events_read = std::time::Instant::now();
    match recent_events(store).await {
        Ok(events) => *recent = events,
        Err(e) => tracing::warn!(error = %e, "cannot reread change events"),
    }
}

/// Confirms the lock, then reads the results since the feed's position
/// and moves it. `None` when there is nothing to apply (or the read
/// failed: the database may be away; the next tick tries again).
pub(super) async fn read_feed(f: &mut Feed, store: &Arc<Mutex<Store>>) -> Option<Vec<ProbeResult>> {
    let lock_store = f.lock.clone();
    match tokio::task::spawn_blocking(move || lock(&lock_store).still_leads()).await {
        Ok(Ok(true)) => {}
        Ok(Ok(false)) => {
            tracing::warn!("this instance lost the alerting lock; stepping down");
            f.deposed = true;
            return None;
        }
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "cannot confirm the alerting lock; stepping down");
            f.deposed = true;
            return None;
        }
        Err(_) => return None,
    }
    let through = f.mark.through;
    let store = store.clone();
    match tokio::task::spawn_blocking(move || lock(&store).feed_since(through)).await {
        Ok(Ok((results, next))) => {
            f.mark.through = next;
            Some(results)
        }
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "cannot read new results for alerting; retrying");
            None
        }
        Err(_) => None,
    }
}

/// The alerting task of one of several instances: follow until this
/// instance takes the lock, lead until it loses it, again, until shutdown.
pub(super) async fn follow_and_lead(
    mut inputs: Inputs,
    store: Arc<Mutex<Store>>,
    outbox: OutboxHandle,
    board: AlertBoard,
    shutdown: CancellationToken,
    cluster: Cluster,
) {
    let Cluster {
        lock: lock_store,
        leading,
    } = cluster;
    let lock_store = Arc::new(Mutex::new(lock_store));
    loop {
        let Some(mark) = follow(&mut inputs, &store, &lock_store, &board, &shutdown).await else {
            return;
        };
        tracing::info!(
            epoch = mark.epoch,
            "this instance now leads alerting and notices"
        );
        let (engine, recent) = match restore(&inputs.config, &store, &board).await {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "cannot restore the alerting state; stepping down");
                release(&lock_store).await;
                continue;
            }
        };
        leading.send_replace(true);
        outbox.wake();
        let feed = Feed {
            mark,
            saved: mark.through,
            lock: lock_store.clone(),
            deposed: false,
            events_read: std::time::Instant::now(),
        };
        let ended = run(
            engine,
            &mut inputs,
            recent,
            store.clone(),
            outbox.clone(),
            board.clone(),
            shutdown.clone(),
            Some(feed),
        )
        .await;
        leading.send_replace(false);
        release(&lock_store).await;
        if ended == Ended::Shutdown {
            return;
        }
    }
}

/// Gives the lock back (if this session still holds it), so a successor
/// need not wait for the session to end.
async fn release(lock_store: &Arc<Mutex<Store>>) {
    let s = lock_store.clone();
    let _ = tokio::task::spawn_blocking(move || lock(&s).release_lead()).await;
}

/// A follower's loop; the leader's mark once this instance takes the lock,
/// `None` at shutdown.
async fn follow(
    inputs: &mut Inputs,
    store: &Arc<Mutex<Store>>,
    lock_store: &Arc<Mutex<Store>>,
    board: &AlertBoard,
    shutdown: &CancellationToken,
) -> Option<FeedMark> {
    let mut poll = tokio::time::interval(LEAD_POLL);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut refresh = tokio::time::interval(BOARD_EVERY);
    refresh.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    let mut shown = Shown::default();
    loop {
        tokio::select! {
            _ = poll.tick() => {
                let s = lock_store.clone();
                match tokio::task::spawn_blocking(move || lock(&s).try_lead()).await {
                    Ok(Ok(Some(mark))) => return Some(mark),
                    Ok(Ok(None)) => failing = false,
                    Ok(Err(e)) => {
                        if !failing {
                            tracing::warn!(error = %e, "cannot reach the database to take the alerting lead; retrying");
                            failing = true;
                        }
                    }
                    Err(_) => {}
                }
            }
            _ = refresh.tick() => shown.refresh(&inputs.config, store, board).await,
            r = inputs.results.recv() => {
                // The sink hands results to alerting only on SQLite.
                r.as_ref()?;
            }
            Some(config) = inputs.reconfigs.recv() => {
                inputs.config = config;
                shown = Shown::default();
            }
            Some(posted) = inputs.events.recv() => {
                let _ = posted.reply.send(store_event(store, posted.event).await);
            }
            _ = shutdown.cancelled() => return None,
        }
    }
}

/// How far back, before the newest state already shown, a follower
/// rereads saved states: room for the leaders' clocks to differ.
const CLOCK_SLACK_MS: i64 = 60_000;

/// A follower's copy of the leader's saved states, for its board: an
/// engine restored from them, refreshed with the states saved since.
#[derive(Default)]
struct Shown {
    engine: Option<Engine>,
    /// When the states read last were saved (unix ms, leader's clock).
    since_ms: i64,
}

impl Shown {
    /// Reads the states saved since the last refresh (all of them the
    /// first time) and shows every probe on the board.
    async fn refresh(
        &mut self,
        config: &crate::config::Config,
        store: &Arc<Mutex<Store>>,
        board: &AlertBoard,
    ) {
        let engine = self.engine.get_or_insert_with(|| Engine::new(config));
        let since = if self.since_ms == 0 {
            i64::MIN
        } else {
            self.since_ms - CLOCK_SLACK_MS
        };
        let s = store.clone();
        let read_at = chrono::Utc::now().timestamp_millis();
        let Ok(Ok(saved)) =
            tokio::task::spawn_blocking(move || lock(&s).load_alert_states_since(since)).await
        else {
            return;
        };
        for (name, state) in saved {
            engine.restore(&name, state);
        }
        self.since_ms = read_at;
        publish_all(engine, board);
    }
}
