//! One page of a probe's raw results for the JSON API, newest first, with a
//! keyset cursor.
//!
//! A page is ordered by `(started_at, id)` descending, and the cursor is the
//! position of the last row a page returned: the next page starts strictly
//! after it in that order. Rows that share a start millisecond are told
//! apart by their row id, so walking every page visits every row in the
//! window exactly once, however many share a timestamp, and rows written
//! meanwhile never shift the pages the way an offset would.

use chrono::{DateTime, Utc};
use rusqlite::params;

use super::{codec, limit_param, Store, StoreError, RESULT_COLUMNS};
use crate::result::ProbeResult;

/// A position in a probe's results: a row's start (unix milliseconds) and
/// its row id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResultCursor {
    pub started_at_ms: i64,
    pub id: i64,
}

/// What [`Store::results_page`] returns.
#[derive(Debug, Clone, Default)]
pub struct PageQuery {
    /// Only runs that started at or after this.
    pub since: Option<DateTime<Utc>>,
    /// Only runs that started before this.
    pub until: Option<DateTime<Utc>>,
    /// Only rows after this position (older, or as old with a smaller id).
    pub before: Option<ResultCursor>,
    pub limit: usize,
}

impl Store {
    /// At most `q.limit` results of `probe` matching `q`, newest first, each
    /// with its cursor.
    pub fn results_page(
        &self,
        probe: &str,
        q: &PageQuery,
    ) -> Result<Vec<(ResultCursor, ProbeResult)>, StoreError> {
        let sql = format!(
            "SELECT r.id, {RESULT_COLUMNS} FROM results r JOIN probes p ON p.id = r.probe_id \
             WHERE p.name = ?1 AND r.started_at >= ?2 AND r.started_at < ?3 \
             AND (r.started_at < ?4 OR (r.started_at = ?4 AND r.id < ?5)) \
             ORDER BY r.started_at DESC, r.id DESC LIMIT ?6"
        );
        let since = q.since.map_or(i64::MIN, |t| t.timestamp_millis());
        let until = q.until.map_or(i64::MAX, |t| t.timestamp_millis());
        let (at, id) = q
            .before
            .map_or((i64::MAX, i64::MAX), |c| (c.started_at_ms, c.id));
        self.query_decoded(
            &sql,
            params![probe, since, until, at, id, limit_param(q.limit)],
            |row| {
                let cursor = ResultCursor {
                    id: row.get(0)?,
                    started_at_ms: row.get(2)?,
                };
                let stored = codec::StoredRow {
                    probe: row.get(1)?,
                    started_at_ms: row.get(2)?,
                    duration_us: row.get(3)?,
                    success: row.get(4)?,
                    class: row.get(5)?,
                    message: row.get(6)?,
                    phases: row.get(7)?,
                    details: row.get(8)?,
                    checks: row.get(9)?,
                };
                Ok((cursor, stored))
            },
            |(cursor, stored)| {
                let result = codec::decode(stored).map_err(|e| StoreError::Corrupt {
                    path: self.path.clone(),
                    detail: format!("a stored result cannot be read: {e}"),
                })?;
                Ok((cursor, result))
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn result(at_ms: i64, ok: bool) -> ProbeResult {
        ProbeResult {
            probe: "web".into(),
            started_at: DateTime::from_timestamp_millis(at_ms).unwrap_or_default(),
            duration: Duration::from_millis(5),
            success: ok,
            failure: None,
            phases: vec![],
            checks: vec![],
            details: serde_json::Map::new(),
        }
    }

    /// Walks every page of `q` and returns the start times seen, in order.
    fn walk(store: &Store, mut q: PageQuery) -> Vec<(i64, i64)> {
        let mut seen = Vec::new();
        loop {
            let page = store.results_page("web", &q).expect("page");
            let Some((last, _)) = page.last() else {
                return seen;
            };
            q.before = Some(*last);
            seen.extend(page.iter().map(|(c, _)| (c.started_at_ms, c.id)));
        }
    }

    #[test]
    fn pages_split_a_shared_millisecond_without_gaps_or_repeats() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut store = Store::open(dir.path().join("h.db")).expect("open");
        // 7 rows in the same millisecond between others, and another probe.
        let mut rows: Vec<ProbeResult> = (0..7).map(|_| result(5_000, true)).collect();
        rows.extend([1_000, 9_000, 4_999, 5_001].map(|t| result(t, false)));
        let mut other = result(5_000, true);
        other.probe = "db".into();
        rows.push(other);
        store.insert_batch(&rows).expect("insert");

        for limit in [1, 2, 3, 100] {
            let seen = walk(
                &store,
                PageQuery {
                    limit,
                    ..PageQuery::default()
                },
            );
            assert_eq!(seen.len(), 11, "limit {limit}: {seen:?}");
            let mut sorted = seen.clone();
            sorted.sort_unstable_by(|a, b| b.cmp(a));
            sorted.dedup();
            assert_eq!(sorted, seen, "limit {limit}: newest first, no repeats");
        }
        // The window is [since, until).
        let seen = walk(
            &store,
            PageQuery {
                since: DateTime::from_timestamp_millis(4_999),
                until: DateTime::from_timestamp_millis(5_001),
                limit: 2,
                ..PageQuery::default()
            },
        );
        let times: Vec<i64> = seen.iter().map(|(t, _)| *t).collect();
        assert_eq!(times, [[5_000; 7].as_slice(), &[4_999]].concat());
    }
}
