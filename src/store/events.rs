//! Change events in the database: written by the alerting task when the
//! API receives one, read back for notices, incident timelines, charts and
//! `GET /api/v1/events`. Events are few (a deploy is not a probe run) and
//! are kept as long as incidents are: the retention sweep leaves them.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use super::alert_state::from_ms;
use super::db::{args, DbError};
use super::{Store, StoreError};
use crate::alert::changes::ChangeEvent;

impl Store {
    /// Stores `event` and returns its id.
    pub fn insert_event(&mut self, event: &ChangeEvent) -> Result<i64, StoreError> {
        let labels = serde_json::to_string(&event.labels).map_err(|e| StoreError::Db {
            path: self.path.clone(),
            error: DbError::Column(e.to_string()),
        })?;
        self.db
            .query_opt(
                "INSERT INTO events (at, kind, title, labels, link) \
                 VALUES (?1, ?2, ?3, ?4, ?5) RETURNING id",
                args![
                    event.at.timestamp_millis(),
                    &event.kind,
                    &event.title,
                    &labels,
                    &event.link
                ],
                |r| r.get::<i64>(0),
            )
            .map_err(|e| self.err(e))?
            .ok_or_else(|| StoreError::Db {
                path: self.path.clone(),
                error: DbError::Column("no event id returned".into()),
            })
    }

    /// Events with `since <= at < until`, newest first, at most `limit`.
    pub fn events_between(
        &self,
        since: DateTime<Utc>,
        until: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<ChangeEvent>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.db
            .query(
                "SELECT id, at, kind, title, labels, link FROM events \
                 WHERE at >= ?1 AND at < ?2 ORDER BY at DESC, id DESC LIMIT ?3",
                args![since.timestamp_millis(), until.timestamp_millis(), limit],
                |r| {
                    let labels: String = r.get(4)?;
                    Ok(ChangeEvent {
                        id: Some(r.get(0)?),
                        at: from_ms(r.get(1)?),
                        kind: r.get(2)?,
                        title: r.get(3)?,
                        labels: serde_json::from_str::<BTreeMap<String, String>>(&labels)
                            .unwrap_or_default(),
                        link: r.get(5)?,
                    })
                },
            )
            .map_err(|e| self.err(e))
    }
}
