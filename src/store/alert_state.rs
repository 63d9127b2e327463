//! Alerting state in the database: each probe's alerting state (status,
//! streaks, open incident) and the incident history.
//!
//! [`Store::save_alert`] writes the states that changed, the incidents they
//! opened, updated or closed, and the notices they caused into the outbox,
//! all in one transaction. So after a crash the database never holds a
//! notice without the state that caused it (which would announce the
//! incident again after a restart) nor a state without its notice (which
//! would lose the notice).

use chrono::{DateTime, Utc};

use super::db::{args, Db, DbError, DbResult, Row};
use super::{Store, StoreError};
use crate::alert::state::IncidentKind;
use crate::alert::{Incident, Outgoing, ProbeState};
use crate::notify::NoticeKind;

/// What [`Store::save_alert`] wrote: the outbox rows' ids, and each saved
/// incident's `(probe, kind, started_at, id)`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SavedAlert {
    pub outbox: Vec<i64>,
    pub incidents: Vec<(String, IncidentKind, DateTime<Utc>, i64)>,
}

/// One incident as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredIncident {
    pub id: i64,
    pub probe: String,
    pub started_at: DateTime<Utc>,
    pub opened_at: DateTime<Utc>,
    pub ended_at: Option<DateTime<Utc>>,
    pub caused_by: Option<String>,
    pub first_class: Option<String>,
    pub first_message: Option<String>,
    pub last_class: Option<String>,
    pub last_message: Option<String>,
    pub streak: u32,
    /// Why it ended when not by a recovery: `removed` (by a reload),
    /// `down` (a degradation the outage took over).
    pub ended_by: Option<String>,
    pub kind: IncidentKind,
    /// A degradation's reason in words.
    pub reason: Option<String>,
}

impl Store {
    /// Every stored probe state, by probe name (probes since removed from
    /// the configuration included: the engine ignores those).
    pub fn load_alert_states(&self) -> Result<Vec<(String, ProbeState)>, StoreError> {
        self.load_alert_states_since(i64::MIN)
    }

    /// The stored probe states saved at `updated_at_ms` or later (unix ms,
    /// the saving instance's clock), by probe name: what a follower of
    /// several instances reads to show the leader's states.
    pub fn load_alert_states_since(
        &self,
        updated_at_ms: i64,
    ) -> Result<Vec<(String, ProbeState)>, StoreError> {
        let rows = self
            .db
            .query(
                "SELECT probe, state FROM alert_state WHERE updated_at >= ?1 ORDER BY probe",
                args![updated_at_ms],
                |r| Ok((r.get::<String>(0)?, r.get::<String>(1)?)),
            )
            .map_err(|e| self.err(e))?;
        let mut out = Vec::with_capacity(rows.len());
        for (probe, json) in rows {
            let state: ProbeState =
                serde_json::from_str(&json).map_err(|e| StoreError::Corrupt {
                    path: self.path.clone(),
                    detail: format!("alert state of `{probe}` is unreadable: {e}"),
                })?;
            out.push((probe, state));
        }
        Ok(out)
    }

    /// Saves, in one transaction: the open incidents `states` hold and the
    /// `closed` incidents (upserted by probe and start), then `states`
    /// (upserted) and `items` as pending outbox rows, each carrying its
    /// incident's id (known only once the incident row exists). Returns
    /// the outbox row ids and every incident's id, for the engine.
    ///
    /// A leader of several instances passes its `mark`: the feed position
    /// is saved with the rest, and nothing is saved
    /// ([`StoreError::Deposed`]) when another instance has led since.
    pub fn save_alert(
        &mut self,
        states: &[(String, ProbeState)],
        closed: &[(String, Incident)],
        items: &[Outgoing],
        now: DateTime<Utc>,
        mark: Option<super::feed::FeedMark>,
    ) -> Result<SavedAlert, StoreError> {
        let path = self.path.clone();
        let sql = |e: DbError| StoreError::sqlite(&path, e);
        let tx = self.db.begin().map_err(sql)?;
        if let Some(mark) = mark {
            let ours = tx
                .execute(
                    "UPDATE alert_feed SET through = \
                     CAST(CAST(CAST(?2 AS BIGINT) AS TEXT) AS xid8) WHERE id = 1 AND epoch = ?1",
                    args![mark.epoch, mark.through],
                )
                .map_err(sql)?;
            if ours == 0 {
                return Err(StoreError::Deposed);
            }
        }
        let mut incidents: Vec<(String, IncidentKind, DateTime<Utc>, i64)> = Vec::new();
        let mut states = states.to_vec();
        for (probe, state) in &mut states {
            let open = [
                state.incident.as_deref_mut(),
                state
                    .degraded
                    .as_mut()
                    .and_then(|d| d.incident.as_deref_mut()),
            ];
            for inc in open.into_iter().flatten() {
                let id = upsert_incident(&tx, probe, inc).map_err(sql)?;
                inc.id = Some(id);
                incidents.push((probe.clone(), inc.kind, inc.started_at, id));
            }
        }
        for (probe, inc) in closed {
            let id = upsert_incident(&tx, probe, inc).map_err(sql)?;
            incidents.push((probe.clone(), inc.kind, inc.started_at, id));
        }
        for (probe, state) in &states {
            let json = serde_json::to_string(state).map_err(|e| StoreError::Db {
                path: path.clone(),
                error: DbError::Column(e.to_string()),
            })?;
            tx.execute(
                "INSERT INTO alert_state (probe, state, updated_at) VALUES (?1, ?2, ?3) \
                 ON CONFLICT(probe) DO UPDATE SET state = excluded.state, \
                 updated_at = excluded.updated_at",
                args![probe, &json, now.timestamp_millis()],
            )
            .map_err(sql)?;
        }
        // A notice made before its incident was first stored has no id yet:
        // it is the latest incident of its probe saved here.
        let mut items = items.to_vec();
        for item in &mut items {
            if item.notice.incident.is_none() {
                item.notice.incident = incidents
                    .iter()
                    .rev()
                    .find(|(p, k, _, _)| *p == item.notice.probe && *k == item.notice.incident_kind)
                    .map(|(_, _, _, id)| *id);
            }
        }
        let outbox = insert_outbox(&tx, &items, now).map_err(sql)?;
        tx.commit().map_err(sql)?;
        Ok(SavedAlert { outbox, incidents })
    }

    /// One incident by id.
    pub fn incident(&self, id: i64) -> Result<Option<StoredIncident>, StoreError> {
        self.db
            .query_opt(
                "SELECT id, probe, started_at, opened_at, ended_at, caused_by, first_class, \
                 first_message, last_class, last_message, streak, ended_by, kind, reason \
                 FROM incidents WHERE id = ?1",
                args![id],
                incident_row,
            )
            .map_err(|e| self.err(e))
    }

    /// The most recent incidents, newest first; of one probe when given.
    pub fn incidents(
        &self,
        probe: Option<&str>,
        limit: usize,
    ) -> Result<Vec<StoredIncident>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        // The cast gives PostgreSQL the placeholder's type where `IS NULL`
        // alone would leave it undetermined.
        self.db
            .query(
                "SELECT id, probe, started_at, opened_at, ended_at, caused_by, first_class, \
                 first_message, last_class, last_message, streak, ended_by, kind, reason FROM incidents \
                 WHERE CAST(?1 AS TEXT) IS NULL OR probe = ?1 \
                 ORDER BY started_at DESC, id DESC LIMIT ?2",
                args![probe, limit],
                incident_row,
            )
            .map_err(|e| self.err(e))
    }
}

/// Which incidents [`Store::incidents_page`] returns.
#[derive(Debug, Clone, Default)]
pub struct IncidentQuery {
    /// Only this probe's.
    pub probe: Option<String>,
    /// `Some(true)`: only open incidents; `Some(false)`: only resolved ones.
    pub open: Option<bool>,
    /// Only incidents after this position in the order newest first: the
    /// `(started_at` unix ms, `id)` of the last one of the previous page.
    pub before: Option<(i64, i64)>,
    pub limit: usize,
}

impl Store {
    /// At most `q.limit` incidents matching `q`, newest first (by start,
    /// then id), so pages walked with `before` neither skip nor repeat one.
    pub fn incidents_page(&self, q: &IncidentQuery) -> Result<Vec<StoredIncident>, StoreError> {
        let (at, id) = q.before.unwrap_or((i64::MAX, i64::MAX));
        let limit = i64::try_from(q.limit).unwrap_or(i64::MAX);
        // Casts give PostgreSQL the placeholders' types where `IS NULL`
        // alone would leave them undetermined; `open` is 0/1 on both.
        self.db
            .query(
                "SELECT id, probe, started_at, opened_at, ended_at, caused_by, first_class, \
                 first_message, last_class, last_message, streak, ended_by, kind, reason FROM incidents \
                 WHERE (CAST(?1 AS TEXT) IS NULL OR probe = ?1) \
                 AND (CAST(?2 AS BIGINT) IS NULL \
                 OR (CASE WHEN ended_at IS NULL THEN 1 ELSE 0 END) = ?2) \
                 AND (started_at < ?3 OR (started_at = ?3 AND id < ?4)) \
                 ORDER BY started_at DESC, id DESC LIMIT ?5",
                args![&q.probe, q.open, at, id, limit],
                incident_row,
            )
            .map_err(|e| self.err(e))
    }
}

fn incident_row(r: &Row<'_>) -> DbResult<StoredIncident> {
    Ok(StoredIncident {
        id: r.get(0)?,
        probe: r.get(1)?,
        started_at: from_ms(r.get(2)?),
        opened_at: from_ms(r.get(3)?),
        ended_at: r.get::<Option<i64>>(4)?.map(from_ms),
        caused_by: r.get(5)?,
        first_class: r.get(6)?,
        first_message: r.get(7)?,
        last_class: r.get(8)?,
        last_message: r.get(9)?,
        streak: u32::try_from(r.get::<i64>(10)?).unwrap_or(0),
        ended_by: r.get(11)?,
        kind: IncidentKind::parse(&r.get::<String>(12)?),
        reason: r.get(13)?,
    })
}

fn upsert_incident(db: &Db, probe: &str, inc: &Incident) -> DbResult<i64> {
    fn class(f: &Option<crate::result::Failure>) -> Option<&str> {
        f.as_ref().map(|f| f.class.as_str())
    }
    fn message(f: &Option<crate::result::Failure>) -> Option<&str> {
        f.as_ref().map(|f| f.message.as_str())
    }
    db.query_opt(
        "INSERT INTO incidents (probe, started_at, opened_at, ended_at, caused_by, first_class, \
         first_message, last_class, last_message, streak, ended_by, kind, reason) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13) \
         ON CONFLICT(probe, kind, started_at) DO UPDATE SET ended_at = excluded.ended_at, \
         caused_by = excluded.caused_by, last_class = excluded.last_class, \
         last_message = excluded.last_message, streak = excluded.streak, \
         ended_by = excluded.ended_by, reason = excluded.reason RETURNING id",
        args![
            probe,
            inc.started_at.timestamp_millis(),
            inc.opened_at.timestamp_millis(),
            inc.ended_at.map(|t| t.timestamp_millis()),
            &inc.caused_by,
            class(&inc.first_failure),
            message(&inc.first_failure),
            class(&inc.last_failure),
            message(&inc.last_failure),
            i64::from(inc.streak),
            &inc.ended_by,
            inc.kind.as_str(),
            &inc.reason,
        ],
        |r| r.get::<i64>(0),
    )?
    .ok_or_else(|| DbError::Column(format!("no incident id returned for `{probe}`")))
}

/// Inserts `items` as pending outbox rows due at `now` inside the
/// transaction `tx` (a [`Db`] with an open transaction).
pub(super) fn insert_outbox(tx: &Db, items: &[Outgoing], now: DateTime<Utc>) -> DbResult<Vec<i64>> {
    let at = now.timestamp_millis();
    let mut ids = Vec::with_capacity(items.len());
    for item in items {
        let payload =
            serde_json::to_string(&item.notice).map_err(|e| DbError::Column(e.to_string()))?;
        let id = tx
            .query_opt(
                "INSERT INTO outbox (notifier, probe, kind, payload, created_at, \
                 next_attempt_at, attempts, status) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?5, 0, 'pending') RETURNING id",
                args![
                    &item.notifier,
                    &item.notice.probe,
                    kind_str(item.notice.kind),
                    &payload,
                    at
                ],
                |r| r.get::<i64>(0),
            )?
            .ok_or_else(|| DbError::Column("no outbox id returned".into()))?;
        ids.push(id);
    }
    Ok(ids)
}

pub(super) fn kind_str(kind: NoticeKind) -> &'static str {
    match kind {
        NoticeKind::Opened => "opened",
        NoticeKind::Reminder => "reminder",
        NoticeKind::Resolved => "resolved",
        NoticeKind::Test => "test",
    }
}

pub(super) fn from_ms(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or_default()
}
