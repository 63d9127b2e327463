//! What several instances sharing one PostgreSQL need from the store:
//! the leader's advisory lock and the results feed that hands the leader
//! every instance's results, each exactly once.
//!
//! Leadership is a session-level advisory lock ([`LEADER_LOCK`]) held on a
//! connection of its own; PostgreSQL frees it when that session ends (a
//! process killed, a connection cut), and the lock session's TCP
//! keep-alives are short so a vanished host frees it within seconds too.
//! Each new leader bumps `alert_feed.epoch`; the alerting state is saved
//! only while the epoch is still ours ([`FeedMark`], checked inside the
//! saving transaction), so a deposed leader that is still running can
//! never record decisions or notices after its successor started.
//!
//! The feed reads results by the transaction that inserted them
//! (`results.tx`): every row of a transaction older than the oldest one
//! still running (`pg_snapshot_xmin`) is final, so reading `[through,
//! horizon)` and moving `through` to `horizon` sees each committed row
//! once, whatever order instances commit in. The position is saved with
//! the alerting state, so a new leader continues exactly where the
//! previous one last saved.

use super::db::{args, DbError, DbResult};
use super::{Store, StoreError, RESULT_COLUMNS};
use crate::result::ProbeResult;

/// The advisory lock id of the alerting leader ("lkld").
pub const LEADER_LOCK: i64 = 0x6c6b_6c64;

/// The most rows one feed read returns; the rest come with the next read.
const FEED_PAGE: i64 = 10_000;

/// A leader's claim, saved with every alerting transaction: its epoch and
/// the feed position the saved state has seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FeedMark {
    pub epoch: i64,
    pub through: i64,
}

fn pg<T>(store: &Store, r: Option<DbResult<T>>) -> Result<T, StoreError> {
    match r {
        Some(r) => r.map_err(|e| store.err(e)),
        None => Err(store.err(DbError::Column(
            "several instances need storage.postgres".into(),
        ))),
    }
}

impl Store {
    /// Tries to become the leader: takes the advisory lock on this
    /// connection (keep it for nothing else) and, when it is ours, starts
    /// a new epoch. `None` while another instance leads.
    pub fn try_lead(&self) -> Result<Option<FeedMark>, StoreError> {
        let got = pg(
            self,
            self.db.with_pg(|c| {
                // A dead peer must free the lock in seconds, not hours.
                c.batch_execute(
                    "SET tcp_keepalives_idle = 3; SET tcp_keepalives_interval = 2; \
                     SET tcp_keepalives_count = 3",
                )?;
                Ok(
                    c.query_one("SELECT pg_try_advisory_lock($1)", &[&LEADER_LOCK])?
                        .try_get::<_, bool>(0)?,
                )
            }),
        )?;
        if !got {
            return Ok(None);
        }
        let mark = self
            .db
            .query_opt(
                "INSERT INTO alert_feed (id, epoch, through) \
                 VALUES (1, 1, pg_snapshot_xmin(pg_current_snapshot())) \
                 ON CONFLICT (id) DO UPDATE SET epoch = alert_feed.epoch + 1 \
                 RETURNING epoch, CAST(CAST(through AS TEXT) AS BIGINT)",
                args![],
                |r| {
                    Ok(FeedMark {
                        epoch: r.get(0)?,
                        through: r.get(1)?,
                    })
                },
            )
            .map_err(|e| self.err(e))?;
        Ok(mark)
    }

    /// Whether this connection's session still holds the leader's lock
    /// (false after a reconnect, which is a new session).
    pub fn still_leads(&self) -> Result<bool, StoreError> {
        self.db
            .query_opt(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted \
                 AND pid = pg_backend_pid() AND objid = CAST(?1 AS BIGINT)",
                args![LEADER_LOCK],
                |r| r.get::<i64>(0),
            )
            .map(|n| n.unwrap_or(0) > 0)
            .map_err(|e| self.err(e))
    }

    /// Gives the leader's lock back, if this session holds it.
    pub fn release_lead(&self) -> Result<(), StoreError> {
        pg(
            self,
            self.db.with_pg(|c| {
                c.execute("SELECT pg_advisory_unlock($1)", &[&LEADER_LOCK])?;
                Ok(())
            }),
        )
    }

    /// The results of every instance written since `through` that are
    /// final, oldest transaction first, and the position after them.
    pub fn feed_since(&self, through: i64) -> Result<(Vec<ProbeResult>, i64), StoreError> {
        let horizon: i64 = self
            .db
            .query_opt(
                "SELECT CAST(CAST(pg_snapshot_xmin(pg_current_snapshot()) AS TEXT) AS BIGINT)",
                args![],
                |r| r.get(0),
            )
            .map_err(|e| self.err(e))?
            .unwrap_or(through);
        if horizon <= through {
            return Ok((Vec::new(), through));
        }
        let sql = format!(
            "SELECT {RESULT_COLUMNS}, CAST(CAST(r.tx AS TEXT) AS BIGINT) \
             FROM results r JOIN probes p ON p.id = r.probe_id \
             WHERE r.tx >= CAST(CAST(CAST(?1 AS BIGINT) AS TEXT) AS xid8) \
             AND r.tx < CAST(CAST(CAST(?2 AS BIGINT) AS TEXT) AS xid8) \
             ORDER BY r.tx, r.id LIMIT ?3"
        );
        let (results, txs) =
            self.query_results_with_tx(&sql, args![through, horizon, FEED_PAGE])?;
        if (results.len() as i64) < FEED_PAGE {
            return Ok((results, horizon));
        }
        // A full page: keep whole transactions only; the last one's rows
        // come again with the next read. (A transaction is one recorder
        // batch, far smaller than a page.)
        let last = txs.last().copied().unwrap_or(through);
        let keep = txs.iter().take_while(|t| **t < last).count();
        if keep == 0 {
            return Ok((results, last + 1));
        }
        let mut results = results;
        results.truncate(keep);
        Ok((results, last))
    }
}
