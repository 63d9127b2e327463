//! Maintenance windows: configuration and evaluation.
//!
//! ```yaml
//! maintenance:
//!   - name: database upgrade
//!     probes: [db-primary, api]
//!     from: 2025-03-01 02:00          # in `timezone`; or RFC 3339
//!     until: 2025-03-01T04:00:00+01:00
//!     timezone: Europe/Amsterdam
//!   - name: nightly backups
//!     labels: { team: storage }
//!     cron: "30 1 * * *"              # 5 fields, in `timezone`
//!     duration: 45m
//!     timezone: Europe/Amsterdam
//! ```
//!
//! A window covers the probes it names *and* every probe whose labels
//! include all the listed labels. While a window covering a probe is
//! active, the engine sends no notices for it (results are still recorded
//! and incidents still open and resolve).

use std::collections::BTreeMap;
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, NaiveDateTime, TimeZone, Utc};
use chrono_tz::Tz;

use crate::config::read::{suggest, Cx, Map};
use crate::config::yaml::{Node, Pos, Value};
use crate::config::ProbeSpec;

const KEYS: &[&str] = &[
    "name", "probes", "labels", "from", "until", "cron", "duration", "timezone",
];

/// When a window is active.
#[derive(Debug, Clone)]
pub enum When {
    /// From `from` (inclusive) to `until` (exclusive).
    Range {
        from: DateTime<Utc>,
        until: DateTime<Utc>,
    },
    /// For `duration` from every time the cron expression names, evaluated
    /// in the window's timezone.
    Cron {
        expr: String,
        cron: Box<croner::Cron>,
        duration: Duration,
    },
}

/// One configured maintenance window.
#[derive(Debug, Clone)]
pub struct MaintenanceWindow {
    pub name: Option<String>,
    /// Probe names it covers, with where each was written and its key path.
    pub probes: Vec<(String, Pos, String)>,
    /// Labels a probe must all carry to be covered (empty: none by label).
    pub labels: BTreeMap<String, String>,
    pub when: When,
    pub timezone: Tz,
    /// Where the window is written, `file:line`, for messages.
    pub defined_at: String,
}

impl MaintenanceWindow {
    /// True when the window applies to `probe` (by name or by labels).
    pub fn covers(&self, probe: &ProbeSpec) -> bool {
        self.probes.iter().any(|(n, _, _)| *n == probe.name)
            || (!self.labels.is_empty()
                && self
                    .labels
                    .iter()
                    .all(|(k, v)| probe.labels.get(k) == Some(v)))
    }

    /// True when the window is in effect at `now` (whatever it covers).
    pub fn in_effect(&self, now: DateTime<Utc>) -> bool {
        match &self.when {
            When::Range { from, until } => *from <= now && now < *until,
            When::Cron { cron, duration, .. } => {
                let Ok(d) = chrono::Duration::from_std(*duration) else {
                    return false;
                };
                match last_start(cron, self.timezone, now) {
                    Some(s) => now.signed_duration_since(s) < d,
                    None => false,
                }
            }
        }
    }

    /// True when the window covers `probe` and is in effect at `now`.
    pub fn active(&self, probe: &ProbeSpec, now: DateTime<Utc>) -> bool {
        self.covers(probe) && self.in_effect(now)
    }

    /// A short description for logs and the API: its name or where it is
    /// defined.
    pub fn label(&self) -> String {
        self.name.clone().unwrap_or_else(|| self.defined_at.clone())
    }
}

/// The latest time at or before `now` that `cron` names on the wall clock
/// of `tz`. The search runs on local wall-clock time (croner 3 mishandles
/// searches that cross a DST change): a time the clocks skip moves to the
/// end of the gap, and a time that happens twice counts once, the first
/// time.
fn last_start(cron: &croner::Cron, tz: Tz, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    // Start a little after `now` on the wall clock: after clocks go back, a
    // wall-clock time later than now's may still be in the past.
    let margin = chrono::Duration::hours(3);
    let local_now = now.with_timezone(&tz).naive_local();
    let mut cursor = Utc.from_utc_datetime(&local_now.checked_add_signed(margin)?);
    let mut inclusive = true;
    for _ in 0..2000 {
        let cand = cron.find_previous_occurrence(&cursor, inclusive).ok()?;
        let real = resolve_local(tz, cand.naive_utc())?;
        if real <= now {
            return Some(real);
        }
        cursor = cand;
        inclusive = false;
    }
    None
}

/// A wall-clock time in `tz` as an instant: the first of two, or the end
/// of a gap for a time the clocks skip.
fn resolve_local(tz: Tz, naive: NaiveDateTime) -> Option<DateTime<Utc>> {
    for minutes in 0..=24 * 60 {
        let t = naive.checked_add_signed(chrono::Duration::minutes(minutes))?;
        if let Some(r) = tz.from_local_datetime(&t).earliest() {
            return Some(r.with_timezone(&Utc));
        }
    }
    None
}

/// True when any window silences `probe` at `now`.
pub fn silenced(windows: &[MaintenanceWindow], probe: &ProbeSpec, now: DateTime<Utc>) -> bool {
    windows.iter().any(|w| w.active(probe, now))
}

/// Compiles the top-level `maintenance:` list, reporting problems into `cx`.
/// Only windows without errors are returned.
pub fn compile(cx: &mut Cx, node: &Node) -> Vec<MaintenanceWindow> {
    let items = match &node.value {
        Value::Null => return Vec::new(),
        Value::Seq(items) => items,
        _ => {
            cx.error(
                &node.pos,
                "maintenance",
                format!(
                    "expected a list of maintenance windows, found {}",
                    node.type_name()
                ),
            );
            return Vec::new();
        }
    };
    items
        .iter()
        .enumerate()
        .filter_map(|(i, n)| compile_window(cx, n, &format!("maintenance[{i}]")))
        .collect()
}

fn compile_window(cx: &mut Cx, node: &Node, path: &str) -> Option<MaintenanceWindow> {
    let m = cx.map(node, path, KEYS)?;
    let errors_before = error_count(cx);

    let name = m.str(cx, "name");
    let timezone = match m.get("timezone") {
        None => Some(Tz::UTC),
        Some(n) => cx
            .string(n, &m.path("timezone"))
            .and_then(|s| match parse_tz(&s) {
                Ok(tz) => Some(tz),
                Err(e) => {
                    cx.error(&n.pos, &m.path("timezone"), e);
                    None
                }
            }),
    };

    let probes = match m.get("probes") {
        None => Vec::new(),
        Some(n) => probe_list(cx, n, &m.path("probes")),
    };
    let labels = m.string_map(cx, "labels").unwrap_or_default();
    if probes.is_empty() && labels.is_empty() {
        let (pos, key) = match (m.get("probes"), m.get("labels")) {
            (Some(n), _) => (&n.pos, m.path("probes")),
            (None, Some(n)) => (&n.pos, m.path("labels")),
            (None, None) => (&node.pos, path.to_string()),
        };
        cx.error(
            pos,
            &key,
            "this window covers nothing: list `probes` by name or `labels` to match",
        );
    }

    let when = compile_when(cx, &m, path, timezone.unwrap_or(Tz::UTC));

    if error_count(cx) > errors_before {
        return None;
    }
    Some(MaintenanceWindow {
        name,
        probes,
        labels,
        when: when?,
        timezone: timezone?,
        defined_at: format!("{}:{}", node.pos.file, node.pos.line),
    })
}

fn error_count(cx: &Cx) -> usize {
    cx.diags
        .0
        .iter()
        .filter(|d| d.severity == crate::config::diag::Severity::Error)
        .count()
}

fn probe_list(cx: &mut Cx, node: &Node, path: &str) -> Vec<(String, Pos, String)> {
    let items: Vec<(&Node, String)> = match &node.value {
        Value::Seq(items) => items
            .iter()
            .enumerate()
            .map(|(i, n)| (n, format!("{path}[{i}]")))
            .collect(),
        Value::Str { .. } => vec![(node, path.to_string())],
        _ => {
            cx.error(
                &node.pos,
                path,
                format!("expected a list of probe names, found {}", node.type_name()),
            );
            return Vec::new();
        }
    };
    items
        .into_iter()
        .filter_map(|(n, key)| {
            let name = cx.string(n, &key)?;
            Some((name, n.pos.clone(), key))
        })
        .collect()
}

fn compile_when(cx: &mut Cx, m: &Map<'_>, path: &str, tz: Tz) -> Option<When> {
    let range = m.has("from") || m.has("until");
    let cron = m.has("cron");
    if range && cron {
        m.error_at(
            cx,
            "cron",
            "a window is either `from`/`until` or `cron` with `duration`, not both",
        );
        return None;
    }
    if cron {
        let expr = m.str(cx, "cron");
        let parsed = expr.as_deref().and_then(|e| match parse_cron(e) {
            Ok(c) => Some(c),
            Err(msg) => {
                m.error_at(cx, "cron", msg);
                None
            }
        });
        let duration = match m.get("duration") {
            None => {
                m.error_at(
                    cx,
                    "duration",
                    "a `cron` window needs a `duration` (how long each occurrence lasts), e.g. 30m",
                );
                None
            }
            Some(_) => m.duration(cx, "duration").and_then(|d| {
                if d.is_zero() {
                    m.error_at(cx, "duration", "must be longer than zero");
                    None
                } else {
                    Some(d)
                }
            }),
        };
        return Some(When::Cron {
            expr: expr?,
            cron: Box::new(parsed?),
            duration: duration?,
        });
    }
    if m.has("duration") {
        m.error_at(
            cx,
            "duration",
            "`duration` only applies to a `cron` window; use `until` with `from`",
        );
    }
    if !range {
        cx.error(
            m.pos(),
            path,
            "a window needs `from` and `until`, or `cron` and `duration`",
        );
        return None;
    }
    let from = m.required_parsed(cx, "from", |s| parse_time(s, tz));
    let until = m.required_parsed(cx, "until", |s| parse_time(s, tz));
    let (from, until) = (from?, until?);
    if until <= from {
        m.error_at(
            cx,
            "until",
            format!("`until` ({until}) must be after `from` ({from})"),
        );
        return None;
    }
    Some(When::Range { from, until })
}

/// A 5-field cron expression (minute hour day-of-month month day-of-week)
/// or a nickname such as `@daily`.
pub fn parse_cron(expr: &str) -> Result<croner::Cron, String> {
    let fields = expr.split_whitespace().count();
    if !expr.trim_start().starts_with('@') && fields != 5 {
        return Err(format!(
            "invalid cron expression `{expr}`: expected 5 fields (minute hour day month weekday), found {fields}"
        ));
    }
    croner::Cron::from_str(expr).map_err(|e| format!("invalid cron expression `{expr}`: {e}"))
}

/// An IANA timezone name; a near miss gets a suggestion.
pub fn parse_tz(name: &str) -> Result<Tz, String> {
    if let Ok(tz) = Tz::from_str(name) {
        return Ok(tz);
    }
    let names: Vec<&'static str> = chrono_tz::TZ_VARIANTS.iter().map(|t| t.name()).collect();
    let hint = names
        .iter()
        .find(|n| n.eq_ignore_ascii_case(name))
        .copied()
        .or_else(|| suggest(name, &names));
    Err(match hint {
        Some(h) => format!("unknown timezone `{name}`; did you mean `{h}`?"),
        None => format!(
            "unknown timezone `{name}`; use an IANA name such as `Europe/Amsterdam` or `UTC`"
        ),
    })
}

/// An RFC 3339 timestamp, or `YYYY-MM-DD HH:MM` (optionally `:SS`, or with
/// a `T`) read in `tz`.
pub fn parse_time(text: &str, tz: Tz) -> Result<DateTime<Utc>, String> {
    let s = text.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&Utc));
    }
    let naive = ["%Y-%m-%d %H:%M", "%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S"]
        .iter()
        .find_map(|f| NaiveDateTime::parse_from_str(s, f).ok())
        .ok_or_else(|| {
            format!(
                "invalid time `{s}`: expected RFC 3339 (2025-03-01T02:00:00Z) or `YYYY-MM-DD HH:MM` in the window's timezone"
            )
        })?;
    match tz.from_local_datetime(&naive) {
        chrono::LocalResult::Single(t) => Ok(t.with_timezone(&Utc)),
        // A time that happens twice (clocks go back): the first one.
        chrono::LocalResult::Ambiguous(t, _) => Ok(t.with_timezone(&Utc)),
        chrono::LocalResult::None => Err(format!(
            "`{s}` does not exist in {} (the clocks skip it that day)",
            tz.name()
        )),
    }
}

/// Probe names the windows list that are not among `known`: the position
/// of each, its key path and a message (with a suggestion when close).
pub fn unknown_probes(windows: &[MaintenanceWindow], known: &[&str]) -> Vec<(Pos, String, String)> {
    let mut out = Vec::new();
    for w in windows {
        for (name, pos, key) in &w.probes {
            if known.contains(&name.as_str()) {
                continue;
            }
            let msg = match suggest(name, known) {
                Some(s) => format!("unknown probe `{name}`; did you mean `{s}`?"),
                None => format!("unknown probe `{name}`"),
            };
            out.push((pos.clone(), key.clone(), msg));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::yaml::parse;

    fn compile_yaml(yaml: &str) -> (Vec<MaintenanceWindow>, Vec<(usize, String, String)>) {
        let node = parse("m.yaml", yaml).expect("yaml");
        let mut cx = Cx::new(Box::new(|_| None));
        let windows = match &node.value {
            Value::Map(entries) => entries
                .iter()
                .find(|(k, _)| k.name == "maintenance")
                .map(|(_, n)| compile(&mut cx, n))
                .unwrap_or_default(),
            _ => Vec::new(),
        };
        let diags = cx
            .diags
            .0
            .iter()
            .map(|d| (d.line, d.key.clone(), d.message.clone()))
            .collect();
        (windows, diags)
    }

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s)
            .expect("test time")
            .with_timezone(&Utc)
    }

    #[test]
    fn range_in_local_time_and_rfc3339() {
        let (w, d) = compile_yaml(
            "maintenance:\n  - probes: [a]\n    from: 2025-03-01 02:00\n    until: \"2025-03-01T04:00:00+01:00\"\n    timezone: Europe/Amsterdam\n",
        );
        assert!(d.is_empty(), "{d:?}");
        let When::Range { from, until } = &w[0].when else {
            panic!("range expected");
        };
        assert_eq!(*from, utc("2025-03-01T01:00:00Z"));
        assert_eq!(*until, utc("2025-03-01T03:00:00Z"));
        assert!(!w[0].in_effect(utc("2025-03-01T00:59:59Z")));
        assert!(w[0].in_effect(utc("2025-03-01T01:00:00Z")));
        assert!(w[0].in_effect(utc("2025-03-01T02:59:59Z")));
        assert!(!w[0].in_effect(utc("2025-03-01T03:00:00Z")));
    }

    #[test]
    fn cron_in_timezone_across_dst() {
        // 01:30 local every day for 1h; Europe/Amsterdam goes to summer time
        // on 2025-03-30 (02:00 -> 03:00) and back on 2025-10-26.
        let (w, d) = compile_yaml(
            "maintenance:\n  - labels: {team: db}\n    cron: \"30 1 * * *\"\n    duration: 1h\n    timezone: Europe/Amsterdam\n",
        );
        assert!(d.is_empty(), "{d:?}");
        let w = &w[0];
        let table = [
            // winter: 01:30 CET = 00:30Z
            ("2025-03-29T00:29:59Z", false),
            ("2025-03-29T00:30:00Z", true),
            ("2025-03-29T01:29:59Z", true),
            ("2025-03-29T01:30:00Z", false),
            // DST day: 01:30 CET still exists (00:30Z), lasts 1h real time
            ("2025-03-30T00:30:00Z", true),
            ("2025-03-30T01:29:00Z", true),
            ("2025-03-30T01:30:00Z", false),
            // summer: 01:30 CEST = 23:30Z the day before
            ("2025-03-30T23:29:00Z", false),
            ("2025-03-30T23:30:00Z", true),
            ("2025-03-31T00:29:59Z", true),
            ("2025-03-31T00:30:00Z", false),
            // back to winter on 2025-10-26: 01:30 CEST = 23:30Z on the 25th
            ("2025-10-25T23:30:00Z", true),
            ("2025-10-26T00:30:00Z", false),
        ];
        for (at, want) in table {
            assert_eq!(w.in_effect(utc(at)), want, "at {at}");
        }
    }

    #[test]
    fn cron_inside_the_skipped_hour() {
        // 02:30 does not exist on 2025-03-30 in Amsterdam: picks, it runs once that day.
        let (w, d) = compile_yaml(
            "maintenance:\n  - probes: [a]\n    cron: \"30 2 * * *\"\n    duration: 30m\n    timezone: Europe/Amsterdam\n",
        );
        assert!(d.is_empty(), "{d:?}");
        assert!(w[0].in_effect(utc("2025-03-29T01:45:00Z")));
        assert!(!w[0].in_effect(utc("2025-03-30T00:00:00Z")));
        // The skipped 02:30 moves to the end of the gap, 03:00 CEST = 01:00Z.
        assert!(!w[0].in_effect(utc("2025-03-30T00:59:59Z")));
        assert!(w[0].in_effect(utc("2025-03-30T01:15:00Z")));
        assert!(!w[0].in_effect(utc("2025-03-30T01:30:00Z")));
        assert!(w[0].in_effect(utc("2025-03-31T00:45:00Z")));
        // Clocks go back on 2025-10-26: 02:30 happens twice, counts once
        // (the first, 02:30 CEST = 00:30Z).
        assert!(w[0].in_effect(utc("2025-10-26T00:45:00Z")));
        assert!(!w[0].in_effect(utc("2025-10-26T01:45:00Z")));
    }

    #[test]
    fn covers_by_name_and_labels() {
        let probes = crate::config::load_str(
            "t.yaml",
            "probes:\n  - name: a\n    tcp: {host: h, port: 1}\n    labels: {team: db, env: prod}\n  - name: b\n    tcp: {host: h, port: 1}\n    labels: {team: db}\n  - name: c\n    tcp: {host: h, port: 1}\n",
            Cx::new(Box::new(|_| None)),
        )
        .unwrap_or_else(|d| panic!("{d}"))
        .0
        .probes;
        let (w, d) = compile_yaml(
            "maintenance:\n  - labels: {team: db, env: prod}\n    from: 2025-01-01 00:00\n    until: 2025-01-02 00:00\n  - probes: c\n    from: 2025-01-01 00:00\n    until: 2025-01-02 00:00\n",
        );
        assert!(d.is_empty(), "{d:?}");
        let covered: Vec<_> = probes
            .iter()
            .map(|p| (p.name.as_str(), w[0].covers(p), w[1].covers(p)))
            .collect();
        assert_eq!(
            covered,
            [("a", true, false), ("b", false, false), ("c", false, true)]
        );
    }

    #[test]
    fn config_errors_have_line_and_key() {
        let cases: &[(&str, usize, &str, &str)] = &[
            (
                "maintenance:\n  - probes: [a]\n    form: 2025-01-01 00:00\n    until: 2025-01-02 00:00\n",
                3,
                "maintenance[0].form",
                "did you mean `from`",
            ),
            (
                "maintenance:\n  - probes: [a]\n    from: yesterday\n    until: 2025-01-02 00:00\n",
                3,
                "maintenance[0].from",
                "invalid time `yesterday`",
            ),
            (
                "maintenance:\n  - probes: [a]\n    from: 2025-01-02 00:00\n    until: 2025-01-01 00:00\n",
                4,
                "maintenance[0].until",
                "must be after",
            ),
            (
                "maintenance:\n  - probes: [a]\n    cron: \"61 * * * *\"\n    duration: 1h\n",
                3,
                "maintenance[0].cron",
                "invalid cron",
            ),
            (
                "maintenance:\n  - probes: [a]\n    cron: \"0 0 * * * *\"\n    duration: 1h\n",
                3,
                "maintenance[0].cron",
                "expected 5 fields",
            ),
            (
                "maintenance:\n  - probes: [a]\n    cron: \"0 1 * * *\"\n",
                2,
                "maintenance[0].duration",
                "needs a `duration`",
            ),
            (
                "maintenance:\n  - probes: [a]\n    cron: \"0 1 * * *\"\n    duration: 1h\n    timezone: Europe/Amsterdm\n",
                5,
                "maintenance[0].timezone",
                "did you mean `Europe/Amsterdam`",
            ),
            (
                "maintenance:\n  - name: nothing\n    from: 2025-01-01 00:00\n    until: 2025-01-02 00:00\n",
                2,
                "maintenance[0]",
                "covers nothing",
            ),
            (
                "maintenance:\n  - probes: []\n    from: 2025-01-01 00:00\n    until: 2025-01-02 00:00\n",
                2,
                "maintenance[0].probes",
                "covers nothing",
            ),
            (
                "maintenance:\n  - probes: [a]\n",
                2,
                "maintenance[0]",
                "needs `from` and `until`",
            ),
            (
                "maintenance:\n  - probes: [a]\n    from: 2025-03-30 02:30\n    until: 2025-03-30 05:00\n    timezone: Europe/Amsterdam\n",
                3,
                "maintenance[0].from",
                "does not exist",
            ),
            (
                "maintenance: {probes: [a]}\n",
                1,
                "maintenance",
                "expected a list",
            ),
        ];
        for (yaml, line, key, words) in cases {
            let (w, d) = compile_yaml(yaml);
            assert!(w.is_empty(), "{yaml}");
            assert!(
                d.iter()
                    .any(|(l, k, m)| l == line && k == key && m.contains(words)),
                "{yaml}\nwanted {line} {key} {words}, got {d:?}"
            );
        }
    }

    #[test]
    fn all_errors_are_collected() {
        let (_, d) = compile_yaml(
            "maintenance:\n  - probes: [a]\n    from: nope\n    until: nope\n    timezone: Mars/Base\n  - labels: {}\n    cron: \"x\"\n    duration: 1h\n",
        );
        let keys: Vec<&str> = d.iter().map(|(_, k, _)| k.as_str()).collect();
        for k in [
            "maintenance[0].timezone",
            "maintenance[0].from",
            "maintenance[0].until",
            "maintenance[1].labels",
            "maintenance[1].cron",
        ] {
            assert!(keys.contains(&k), "{k} missing from {d:?}");
        }
    }

    #[test]
    fn unknown_probe_names_are_reported_with_position() {
        let (w, d) = compile_yaml(
            "maintenance:\n  - probes: [api, dbb]\n    from: 2025-01-01 00:00\n    until: 2025-01-02 00:00\n",
        );
        assert!(d.is_empty(), "{d:?}");
        let bad = unknown_probes(&w, &["api", "db"]);
        assert_eq!(bad.len(), 1);
        let (pos, key, msg) = &bad[0];
        assert_eq!(pos.line, 2);
        assert_eq!(key, "maintenance[0].probes[1]");
        assert!(msg.contains("did you mean `db`"), "{msg}");
    }
}
