//! Change events in the database: written by the alerting task when the
//! API receives one, read back for notices, incident timelines, charts and
//! `GET /api/v1/events`. Events are few (a deploy is not a probe run) and
//! are kept as long as incidents are: the retention sweep leaves them.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use rusqlite::params;

use super::alert_state::from_ms;
use super::{Store, StoreError};
use crate::alert::changes::ChangeEvent;

impl Store {
    /// Stores `event` and returns its id.
    pub fn insert_event(&mut self, event: &ChangeEvent) -> Result<i64, StoreError> {
        let labels = serde_json::to_string(&event.labels).map_err(|e| StoreError::Sqlite {
            path: self.path.clone(),
            error: rusqlite::Error::ToSqlConversionFailure(Box::new(e)),
        })?;
        self.conn
            .prepare_cached(
                "INSERT INTO events (at, kind, title, labels, link) VALUES (?1, ?2, ?3, ?4, ?5)",
            )
            .and_then(|mut s| {
                s.execute(params![
                    event.at.timestamp_millis(),
                    event.kind,
                    event.title,
                    labels,
                    event.link
                ])
            })
            .map_err(|e| self.err(e))?;
        Ok(self.conn.last_insert_rowid())
    }

    /// Events with `since <= at < until`, newest first, at most `limit`.
    pub fn events_between(
        &self,
        since: DateTime<Utc>,
        until: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<ChangeEvent>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT id, at, kind, title, labels, link FROM events \
                 WHERE at >= ?1 AND at < ?2 ORDER BY at DESC, id DESC LIMIT ?3",
            )
            .map_err(|e| self.err(e))?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = stmt
            .query_map(
                params![since.timestamp_millis(), until.timestamp_millis(), limit],
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
            .map_err(|e| self.err(e))?;
        rows.collect::<Result<Vec<_>, _>>().map_err(|e| self.err(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeDelta;

    #[test]
    fn events_round_trip_newest_first_within_the_range() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut store = Store::open(dir.path().join("e.db")).expect("open");
        let now = Utc::now();
        for (i, mins) in [30, 10, 5].iter().enumerate() {
            let e = ChangeEvent {
                id: None,
                at: now - TimeDelta::minutes(*mins),
                kind: "deploy".into(),
                title: format!("v{i}"),
                labels: BTreeMap::from([("service".to_string(), "checkout".to_string())]),
                link: (i == 2).then(|| "https://ci.example/run/7".to_string()),
            };
            assert_eq!(store.insert_event(&e).expect("insert"), i as i64 + 1);
        }
        let got = store
            .events_between(now - TimeDelta::minutes(20), now, 10)
            .expect("events");
        let titles: Vec<&str> = got.iter().map(|e| e.title.as_str()).collect();
        assert_eq!(titles, ["v2", "v1"]);
        assert_eq!(got[0].link.as_deref(), Some("https://ci.example/run/7"));
        assert_eq!(got[0].labels["service"], "checkout");
        assert_eq!(got[0].id, Some(3));
    }
}
