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
use rusqlite::{params, Transaction, TransactionBehavior};

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
        let mut stmt = self
            .conn
            .prepare_cached("SELECT probe, state FROM alert_state ORDER BY probe")
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))
            .map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        for row in rows {
            let (probe, json) = row.map_err(|e| self.err(e))?;
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
    pub fn save_alert(
        &mut self,
        states: &[(String, ProbeState)],
        closed: &[(String, Incident)],
        items: &[Outgoing],
        now: DateTime<Utc>,
    ) -> Result<SavedAlert, StoreError> {
        let path = self.path.clone();
        let sql = |e| StoreError::sqlite(&path, e);
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sql)?;
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
        {
            let mut put = tx
                .prepare_cached(
                    "INSERT INTO alert_state (probe, state, updated_at) VALUES (?1, ?2, ?3) \
                     ON CONFLICT(probe) DO UPDATE SET state = excluded.state, \
                     updated_at = excluded.updated_at",
                )
                .map_err(sql)?;
            for (probe, state) in &states {
                let json = serde_json::to_string(state).map_err(|e| StoreError::Sqlite {
                    path: path.clone(),
                    error: rusqlite::Error::ToSqlConversionFailure(Box::new(e)),
                })?;
                put.execute(params![probe, json, now.timestamp_millis()])
                    .map_err(sql)?;
            }
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
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT id, probe, started_at, opened_at, ended_at, caused_by, first_class, \
                 first_message, last_class, last_message, streak, ended_by, kind, reason \
                 FROM incidents WHERE id = ?1",
            )
            .map_err(|e| self.err(e))?;
        let mut rows = stmt
            .query_map([id], incident_row)
            .map_err(|e| self.err(e))?;
        rows.next().transpose().map_err(|e| self.err(e))
    }

    /// The most recent incidents, newest first; of one probe when given.
    pub fn incidents(
        &self,
        probe: Option<&str>,
        limit: usize,
    ) -> Result<Vec<StoredIncident>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT id, probe, started_at, opened_at, ended_at, caused_by, first_class, \
                 first_message, last_class, last_message, streak, ended_by, kind, reason FROM incidents \
                 WHERE ?1 IS NULL OR probe = ?1 ORDER BY started_at DESC, id DESC LIMIT ?2",
            )
            .map_err(|e| self.err(e))?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = stmt
            .query_map(params![probe, limit], incident_row)
            .map_err(|e| self.err(e))?;
        rows.collect::<Result<Vec<_>, _>>().map_err(|e| self.err(e))
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
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT id, probe, started_at, opened_at, ended_at, caused_by, first_class, \
                 first_message, last_class, last_message, streak, ended_by, kind, reason FROM incidents \
                 WHERE (?1 IS NULL OR probe = ?1) \
                 AND (?2 IS NULL OR (ended_at IS NULL) = ?2) \
                 AND (started_at < ?3 OR (started_at = ?3 AND id < ?4)) \
                 ORDER BY started_at DESC, id DESC LIMIT ?5",
            )
            .map_err(|e| self.err(e))?;
        let (at, id) = q.before.unwrap_or((i64::MAX, i64::MAX));
        let limit = i64::try_from(q.limit).unwrap_or(i64::MAX);
        let rows = stmt
            .query_map(params![q.probe, q.open, at, id, limit], incident_row)
            .map_err(|e| self.err(e))?;
        rows.collect::<Result<Vec<_>, _>>().map_err(|e| self.err(e))
    }
}

fn incident_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<StoredIncident> {
    Ok(StoredIncident {
        id: r.get(0)?,
        probe: r.get(1)?,
        started_at: from_ms(r.get(2)?),
        opened_at: from_ms(r.get(3)?),
        ended_at: r.get::<_, Option<i64>>(4)?.map(from_ms),
        caused_by: r.get(5)?,
        first_class: r.get(6)?,
        first_message: r.get(7)?,
        last_class: r.get(8)?,
        last_message: r.get(9)?,
        streak: u32::try_from(r.get::<_, i64>(10)?).unwrap_or(0),
        ended_by: r.get(11)?,
        kind: IncidentKind::parse(&r.get::<_, String>(12)?),
        reason: r.get(13)?,
    })
}

fn upsert_incident(tx: &Transaction<'_>, probe: &str, inc: &Incident) -> rusqlite::Result<i64> {
    let class = |f: &Option<crate::result::Failure>| f.as_ref().map(|f| f.class.as_str());
    let message = |f: &Option<crate::result::Failure>| f.as_ref().map(|f| f.message.clone());
    tx.prepare_cached(
        "INSERT INTO incidents (probe, started_at, opened_at, ended_at, caused_by, first_class, \
         first_message, last_class, last_message, streak, ended_by, kind, reason) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13) \
         ON CONFLICT(probe, kind, started_at) DO UPDATE SET ended_at = excluded.ended_at, \
         caused_by = excluded.caused_by, last_class = excluded.last_class, \
         last_message = excluded.last_message, streak = excluded.streak, \
         ended_by = excluded.ended_by, reason = excluded.reason RETURNING id",
    )?
    .query_row(
        params![
            probe,
            inc.started_at.timestamp_millis(),
            inc.opened_at.timestamp_millis(),
            inc.ended_at.map(|t| t.timestamp_millis()),
            inc.caused_by,
            class(&inc.first_failure),
            message(&inc.first_failure),
            class(&inc.last_failure),
            message(&inc.last_failure),
            i64::from(inc.streak),
            inc.ended_by,
            inc.kind.as_str(),
            inc.reason,
        ],
        |r| r.get(0),
    )
}

/// Inserts `items` as pending outbox rows due at `now` inside `tx`.
pub(super) fn insert_outbox(
    tx: &Transaction<'_>,
    items: &[Outgoing],
    now: DateTime<Utc>,
) -> rusqlite::Result<Vec<i64>> {
    let mut insert = tx.prepare_cached(
        "INSERT INTO outbox (notifier, probe, kind, payload, created_at, next_attempt_at, \
         attempts, status) VALUES (?1, ?2, ?3, ?4, ?5, ?5, 0, 'pending')",
    )?;
    let at = now.timestamp_millis();
    let mut ids = Vec::with_capacity(items.len());
    for item in items {
        let payload = serde_json::to_string(&item.notice)
            .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
        insert.execute(params![
            item.notifier,
            item.notice.probe,
            kind_str(item.notice.kind),
            payload,
            at
        ])?;
        ids.push(tx.last_insert_rowid());
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn incident_pages_split_a_shared_start_and_filter() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path().join("h.db")).expect("open");
        // Five probes' incidents start in the same millisecond; two more
        // around them; `b`'s is resolved.
        let rows: Vec<(String, i64, Option<i64>)> = ["a", "b", "c", "d", "e"]
            .iter()
            .map(|p| (p.to_string(), 5_000, (*p == "b").then_some(6_000)))
            .chain([
                ("a".to_string(), 1_000, Some(2_000)),
                ("a".to_string(), 9_000, None),
            ])
            .collect();
        for (probe, at, end) in &rows {
            store
                .conn
                .execute(
                    "INSERT INTO incidents (probe, started_at, opened_at, ended_at, streak) \
                     VALUES (?1, ?2, ?2, ?3, 3)",
                    params![probe, at, end],
                )
                .expect("insert");
        }
        let walk = |q: IncidentQuery| {
            let mut q = q;
            let mut seen = Vec::new();
            loop {
                let page = store.incidents_page(&q).expect("page");
                let Some(last) = page.last() else {
                    return seen;
                };
                q.before = Some((last.started_at.timestamp_millis(), last.id));
                seen.extend(page.iter().map(|i| (i.started_at.timestamp_millis(), i.id)));
            }
        };
        for limit in [1, 2, 3, 50] {
            let seen = walk(IncidentQuery {
                limit,
                ..IncidentQuery::default()
            });
            let mut want = seen.clone();
            want.sort_unstable_by(|a, b| b.cmp(a));
            want.dedup();
            assert_eq!((seen.len(), &want), (7, &seen), "limit {limit}");
        }
        let open = walk(IncidentQuery {
            open: Some(true),
            limit: 2,
            ..IncidentQuery::default()
        });
        assert_eq!(open.len(), 5);
        let resolved_a = store
            .incidents_page(&IncidentQuery {
                probe: Some("a".into()),
                open: Some(false),
                limit: 10,
                ..IncidentQuery::default()
            })
            .expect("page");
        assert_eq!(resolved_a.len(), 1);
        assert_eq!(resolved_a[0].ended_at, Some(from_ms(2_000)));
    }
}
