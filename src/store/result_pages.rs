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

use super::db::args;
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
        let rows = self
            .db
            .query(
                &sql,
                args![probe, since, until, at, id, limit_param(q.limit)],
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
                        location: row.get(10)?,
                    };
                    Ok((cursor, stored))
                },
            )
            .map_err(|e| self.err(e))?;
        rows.into_iter()
            .map(|(cursor, stored)| {
                let result = codec::decode(stored).map_err(|e| StoreError::Corrupt {
                    path: self.path.clone(),
                    detail: format!("a stored result cannot be read: {e}"),
                })?;
                Ok((cursor, result))
            })
            .collect()
    }
}
