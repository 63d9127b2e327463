//! The notice outbox table: one row per notice per notifier, written before
//! anything is sent, so a notice survives a restart or a crash.
//!
//! A row is `pending` until the notifier accepts it (`delivered`, with the
//! receiver's answer), a permanent error ends it (`failed`, with the
//! reason), or it waited longer than the outbox allows (`expired`, with the
//! reason). Only pending rows are ever sent. The policy (when to send, how
//! long to wait between attempts) lives in [`crate::alert::outbox`]; this
//! module only stores.

use chrono::{DateTime, Utc};

use super::alert_state::from_ms;
use super::db::{args, Arg, DbError};
use super::{limit_param, Store, StoreError};
use crate::alert::Outgoing;
use crate::notify::Notice;

/// Where a row stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutboxStatus {
    Pending,
    Delivered,
    Failed,
    Expired,
}

impl OutboxStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            OutboxStatus::Pending => "pending",
            OutboxStatus::Delivered => "delivered",
            OutboxStatus::Failed => "failed",
            OutboxStatus::Expired => "expired",
        }
    }

    fn parse(s: &str) -> Option<OutboxStatus> {
        Some(match s {
            "pending" => OutboxStatus::Pending,
            "delivered" => OutboxStatus::Delivered,
            "failed" => OutboxStatus::Failed,
            "expired" => OutboxStatus::Expired,
            _ => return None,
        })
    }
}

/// One stored notice.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxRow {
    pub id: i64,
    pub notifier: String,
    pub probe: String,
    /// The notice's kind (`opened`, `reminder`, `resolved`, `test`).
    pub kind: String,
    /// The notice as JSON; read it with [`OutboxRow::notice`].
    pub payload: String,
    pub created_at: DateTime<Utc>,
    pub next_attempt_at: DateTime<Utc>,
    /// Delivery attempts concluded so far (the one that delivered or failed
    /// the row included).
    pub attempts: u32,
    pub status: OutboxStatus,
    pub last_error: Option<String>,
    pub delivered_at: Option<DateTime<Utc>>,
    /// The receiver's answer, once delivered.
    pub answer: Option<String>,
}

impl OutboxRow {
    /// Decodes the stored notice.
    pub fn notice(&self) -> Result<Notice, serde_json::Error> {
        serde_json::from_str(&self.payload)
    }
}

/// How many rows are in each status.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OutboxCounts {
    pub pending: u64,
    pub delivered: u64,
    pub failed: u64,
    pub expired: u64,
}

const ROW_COLUMNS: &str = "id, notifier, probe, kind, payload, created_at, next_attempt_at, \
     attempts, status, last_error, delivered_at, answer";

impl Store {
    /// Stores `items` as pending rows due at `now`, in one transaction: all
    /// of them or none. Returns their ids, in order.
    pub fn enqueue(
        &mut self,
        items: &[Outgoing],
        now: DateTime<Utc>,
    ) -> Result<Vec<i64>, StoreError> {
        if items.is_empty() {
            return Ok(Vec::new());
        }
        let path = &self.path;
        let sql = |e: DbError| StoreError::sqlite(path, e);
        let tx = self.db.begin().map_err(sql)?;
        let ids = super::alert_state::insert_outbox(&tx, items, now).map_err(sql)?;
        tx.commit().map_err(sql)?;
        Ok(ids)
    }

    /// Records a notice that was sent while the database could not be
    /// written (see `OutboxHandle::send_unsaved`): one row, already
    /// delivered (`Ok(answer)`) or failed (`Err(error)`), so the outbox
    /// history shows it and nothing sends it again.
    pub fn record_sent(
        &mut self,
        item: &Outgoing,
        created: DateTime<Utc>,
        attempts: u32,
        outcome: &Result<String, String>,
        now: DateTime<Utc>,
    ) -> Result<i64, StoreError> {
        let payload = serde_json::to_string(&item.notice).map_err(|e| StoreError::Db {
            path: self.path.clone(),
            error: DbError::Column(e.to_string()),
        })?;
        let (status, error, delivered_at, answer) = match outcome {
            Ok(answer) => (
                "delivered",
                None,
                Some(now.timestamp_millis()),
                Some(answer),
            ),
            Err(e) => ("failed", Some(e), None, None),
        };
        self.db
            .query_opt(
                "INSERT INTO outbox (notifier, probe, kind, payload, created_at, \
                 next_attempt_at, attempts, status, last_error, delivered_at, answer) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?5, ?6, ?7, ?8, ?9, ?10) RETURNING id",
                args![
                    &item.notifier,
                    &item.notice.probe,
                    super::alert_state::kind_str(item.notice.kind),
                    &payload,
                    created.timestamp_millis(),
                    i64::from(attempts),
                    status,
                    error,
                    delivered_at,
                    answer
                ],
                |r| r.get::<i64>(0),
            )
            .map_err(|e| self.err(e))?
            .ok_or_else(|| StoreError::Db {
                path: self.path.clone(),
                error: DbError::Column("no outbox id returned".into()),
            })
    }

    /// The rows `sql` selects (`ROW_COLUMNS`) that `keep` accepts.
    fn outbox_rows(
        &self,
        sql: &str,
        args: &[Arg<'_>],
        mut keep: impl FnMut(&OutboxRow) -> bool,
    ) -> Result<Vec<OutboxRow>, StoreError> {
        let rows = self
            .db
            .query(sql, args, |row| {
                let status: String = row.get(8)?;
                Ok((
                    OutboxRow {
                        id: row.get(0)?,
                        notifier: row.get(1)?,
                        probe: row.get(2)?,
                        kind: row.get(3)?,
                        payload: row.get(4)?,
                        created_at: from_ms(row.get(5)?),
                        next_attempt_at: from_ms(row.get(6)?),
                        attempts: u32::try_from(row.get::<i64>(7)?).unwrap_or(0),
                        status: OutboxStatus::Pending,
                        last_error: row.get(9)?,
                        delivered_at: row.get::<Option<i64>>(10)?.map(from_ms),
                        answer: row.get(11)?,
                    },
                    status,
                ))
            })
            .map_err(|e| self.err(e))?;
        rows.into_iter()
            .filter(|(row, _)| keep(row))
            .map(|(mut row, status)| {
                row.status = OutboxStatus::parse(&status).ok_or_else(|| StoreError::Corrupt {
                    path: self.path.clone(),
                    detail: format!("outbox row {} has an unknown status `{status}`", row.id),
                })?;
                Ok(row)
            })
            .collect()
    }

    /// Pending rows whose next attempt is due at `now`, the earliest first,
    /// at most `limit` of them.
    pub fn due(&self, now: DateTime<Utc>, limit: usize) -> Result<Vec<OutboxRow>, StoreError> {
        let sql = format!(
            "SELECT {ROW_COLUMNS} FROM outbox WHERE status = 'pending' \
             AND next_attempt_at <= ?1 ORDER BY next_attempt_at, id LIMIT ?2"
        );
        self.outbox_rows(
            &sql,
            args![now.timestamp_millis(), limit_param(limit)],
            |_| true,
        )
    }

    /// Every notice about incident `id` of `probe`, oldest first (the
    /// notice's payload names its incident).
    pub fn notices_of_incident(&self, probe: &str, id: i64) -> Result<Vec<OutboxRow>, StoreError> {
        // The payload's incident is read here rather than in SQL, the same
        // way on both backends.
        #[derive(serde::Deserialize)]
        struct IncidentOf {
            incident: Option<i64>,
        }
        let sql =
            format!("SELECT {ROW_COLUMNS} FROM outbox WHERE probe = ?1 ORDER BY created_at, id");
        self.outbox_rows(&sql, args![probe], |row| {
            serde_json::from_str::<IncidentOf>(&row.payload).is_ok_and(|p| p.incident == Some(id))
        })
    }

    /// One row by id.
    pub fn outbox_row(&self, id: i64) -> Result<Option<OutboxRow>, StoreError> {
        let sql = format!("SELECT {ROW_COLUMNS} FROM outbox WHERE id = ?1");
        Ok(self
            .outbox_rows(&sql, args![id], |_| true)?
            .into_iter()
            .next())
    }

    /// The notifier accepted the row: it is delivered, with its answer. The
    /// attempt that delivered it is counted.
    pub fn mark_delivered(
        &self,
        id: i64,
        answer: &str,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.db
            .execute(
                "UPDATE outbox SET status = 'delivered', attempts = attempts + 1, \
                 delivered_at = ?2, answer = ?3 WHERE id = ?1",
                args![id, now.timestamp_millis(), answer],
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// A transient failure: the row stays pending, has been tried
    /// `attempts` times, and is due again at `next_attempt_at`.
    pub fn reschedule(
        &self,
        id: i64,
        attempts: u32,
        next_attempt_at: DateTime<Utc>,
        error: &str,
    ) -> Result<(), StoreError> {
        self.db
            .execute(
                "UPDATE outbox SET attempts = ?2, next_attempt_at = ?3, last_error = ?4 \
                 WHERE id = ?1 AND status = 'pending'",
                args![
                    id,
                    i64::from(attempts),
                    next_attempt_at.timestamp_millis(),
                    error
                ],
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// A permanent failure: the row is never sent again. The attempt that
    /// failed it is counted.
    pub fn mark_failed(&self, id: i64, error: &str) -> Result<(), StoreError> {
        self.db
            .execute(
                "UPDATE outbox SET status = 'failed', attempts = attempts + 1, \
                 last_error = ?2 WHERE id = ?1 AND status = 'pending'",
                args![id, error],
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Pending rows created before `created_before` become `expired`, with
    /// the reason (and the last error, if any) in `last_error`. Returns how
    /// many expired.
    pub fn expire_older_than(&self, created_before: DateTime<Utc>) -> Result<usize, StoreError> {
        self.db
            .execute(
                "UPDATE outbox SET status = 'expired', last_error = \
                 'expired: not delivered after ' || attempts || ' attempt(s) before the \
                 outbox max age' || coalesce('; last error: ' || last_error, '') \
                 WHERE status = 'pending' AND created_at < ?1",
                args![created_before.timestamp_millis()],
            )
            .map_err(|e| self.err(e))
    }

    /// How many rows are pending, failed and expired (`delivered` is left
    /// 0). Cheap however many rows were delivered: each count is a range of
    /// the status index, for `/metrics`.
    pub fn outbox_undelivered_counts(&self) -> Result<OutboxCounts, StoreError> {
        self.db
            .query_opt(
                "SELECT (SELECT count(*) FROM outbox WHERE status = 'pending'), \
                 (SELECT count(*) FROM outbox WHERE status = 'failed'), \
                 (SELECT count(*) FROM outbox WHERE status = 'expired')",
                args![],
                |row| {
                    let n = |i: usize| row.get::<i64>(i).map(|v| u64::try_from(v).unwrap_or(0));
                    Ok(OutboxCounts {
                        pending: n(0)?,
                        delivered: 0,
                        failed: n(1)?,
                        expired: n(2)?,
                    })
                },
            )
            .map(Option::unwrap_or_default)
            .map_err(|e| self.err(e))
    }

    /// How many rows are in each status.
    pub fn outbox_counts(&self) -> Result<OutboxCounts, StoreError> {
        let rows = self
            .db
            .query(
                "SELECT status, count(*) FROM outbox GROUP BY status",
                args![],
                |row| Ok((row.get::<String>(0)?, row.get::<i64>(1)?)),
            )
            .map_err(|e| self.err(e))?;
        let mut counts = OutboxCounts::default();
        for (status, n) in rows {
            let n = u64::try_from(n).unwrap_or(0);
            match OutboxStatus::parse(&status) {
                Some(OutboxStatus::Pending) => counts.pending = n,
                Some(OutboxStatus::Delivered) => counts.delivered = n,
                Some(OutboxStatus::Failed) => counts.failed = n,
                Some(OutboxStatus::Expired) => counts.expired = n,
                None => {}
            }
        }
        Ok(counts)
    }
}
