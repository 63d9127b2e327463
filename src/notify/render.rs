//! How a [`Notice`] reads: an email subject, a plain-text and an HTML body,
//! and a Slack Block Kit message, all from the same facts (probe, state,
//! since when and for how long, failure class and message, latency, streak,
//! dependents, link). Every text is redacted first ([`redacted`]), and the
//! HTML and Slack renderings escape everything they interpolate.

use std::fmt::Write as _;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{json, Value};

use super::{Notice, NoticeKind};
use crate::alert::state::IncidentKind;
use crate::redact::redact;
use crate::result::Failure;

/// Slack's limits: header text, field text and section text.
const SLACK_HEADER_MAX: usize = 150;
const SLACK_FIELD_MAX: usize = 2000;
const SLACK_SECTION_MAX: usize = 3000;

/// Attachment colours by what happened.
pub const COLOR_DOWN: &str = "#d93025";
pub const COLOR_DEGRADED: &str = "#e37400";
pub const COLOR_RESOLVED: &str = "#2e7d32";
pub const COLOR_TEST: &str = "#9e9e9e";

/// `notice` with every text passed through [`redact`]: what leaves the
/// process is built from this copy only.
pub fn redacted(notice: &Notice) -> Notice {
    let fail = |f: &Option<Failure>| {
        f.as_ref().map(|f| Failure {
            class: f.class,
            message: redact(&f.message),
        })
    };
    Notice {
        probe: redact(&notice.probe),
        state: redact(&notice.state),
        probe_kind: redact(&notice.probe_kind),
        target: redact(&notice.target),
        first_failure: fail(&notice.first_failure),
        last_failure: fail(&notice.last_failure),
        dependents: notice.dependents.iter().map(|d| redact(d)).collect(),
        link: notice.link.as_deref().map(redact),
        reason: notice.reason.as_deref().map(redact),
        trace_url: notice.trace_url.as_deref().map(redact),
        changes: notice
            .changes
            .iter()
            .map(|c| crate::alert::changes::ChangeRef {
                title: redact(&c.title),
                link: c.link.as_deref().map(redact),
                ..c.clone()
            })
            .collect(),
        labels: notice
            .labels
            .iter()
            .map(|(k, v)| (redact(k), redact(v)))
            .collect(),
        ..notice.clone()
    }
}

/// A duration as people say it, to the second, two largest units:
/// `45s`, `12m`, `1h 30m`, `2d 3h`.
pub fn span(d: Duration) -> String {
    let secs = d.as_secs();
    if secs == 0 {
        return crate::duration::human(d);
    }
    let parts = [
        (secs / 86_400, "d"),
        (secs % 86_400 / 3600, "h"),
        (secs % 3600 / 60, "m"),
        (secs % 60, "s"),
    ];
    let first = parts.iter().position(|(n, _)| *n > 0).unwrap_or(3);
    parts[first..]
        .iter()
        .take(2)
        .filter(|(n, _)| *n > 0)
        .map(|(n, u)| format!("{n}{u}"))
        .collect::<Vec<_>>()
        .join(" ")
}

fn when(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// One line: newlines and other control characters become spaces.
fn one_line(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// The failure that matters most: the latest, else the first.
fn main_failure(n: &Notice) -> Option<&Failure> {
    n.last_failure.as_ref().or(n.first_failure.as_ref())
}

/// Whether the notice is about a degradation rather than an outage.
fn degraded(n: &Notice) -> bool {
    n.incident_kind == IncidentKind::Degraded
}

/// `DOWN`, `STILL DOWN`, `DEGRADED`, `RESOLVED` or `TEST`.
pub fn verb(n: &Notice) -> &'static str {
    if degraded(n) && n.kind != NoticeKind::Resolved {
        return "DEGRADED";
    }
    match n.kind {
        NoticeKind::Opened => "DOWN",
        NoticeKind::Reminder => "STILL DOWN",
        NoticeKind::Resolved => "RESOLVED",
        NoticeKind::Test => "TEST",
    }
}

/// The attachment colour for this notice.
pub fn color(n: &Notice) -> &'static str {
    if degraded(n) && n.kind != NoticeKind::Resolved {
        return COLOR_DEGRADED;
    }
    match n.kind {
        NoticeKind::Opened | NoticeKind::Reminder => COLOR_DOWN,
        NoticeKind::Resolved => COLOR_RESOLVED,
        NoticeKind::Test => COLOR_TEST,
    }
}

/// The email subject: `[Lookout] DOWN checkout-api: timeout`,
/// `[Lookout] RESOLVED checkout-api after 12m`.
pub fn subject(n: &Notice) -> String {
    let probe = one_line(&n.probe);
    let class = main_failure(n).map(|f| f.class.as_str());
    if degraded(n) {
        let reason = one_line(n.reason.as_deref().unwrap_or("degraded"));
        let s = match (n.kind, n.down_for) {
            (NoticeKind::Resolved, Some(d)) => {
                format!(
                    "[Lookout] RESOLVED {probe}: no longer degraded after {}",
                    span(d)
                )
            }
            (NoticeKind::Resolved, None) => {
                format!("[Lookout] RESOLVED {probe}: no longer degraded")
            }
            _ => format!("[Lookout] DEGRADED {probe}: {reason}"),
        };
        return redact(&s);
    }
    let s = match n.kind {
        NoticeKind::Opened => match class {
            Some(c) => format!("[Lookout] DOWN {probe}: {c}"),
            None => format!("[Lookout] DOWN {probe}"),
        },
        NoticeKind::Reminder => {
            let mut s = format!("[Lookout] STILL DOWN {probe}");
            if let Some(d) = n.down_for {
                let _ = write!(s, " for {}", span(d));
            }
            if let Some(c) = class {
                let _ = write!(s, ": {c}");
            }
            s
        }
        NoticeKind::Resolved if n.state == "removed" => {
            format!("[Lookout] CLOSED {probe}: removed from the configuration")
        }
        NoticeKind::Resolved => match n.down_for {
            Some(d) => format!("[Lookout] RESOLVED {probe} after {}", span(d)),
            None => format!("[Lookout] RESOLVED {probe}"),
        },
        NoticeKind::Test => format!("[Lookout] TEST notice ({})", one_line(&n.target)),
    };
    redact(&s)
}

/// One sentence saying what happened.
pub fn headline(n: &Notice) -> String {
    let p = &n.probe;
    if degraded(n) {
        let s = match (n.kind, n.down_for) {
            (NoticeKind::Resolved, Some(d)) => {
                format!("{p} is no longer degraded, after {}", span(d))
            }
            (NoticeKind::Resolved, None) => format!("{p} is no longer degraded"),
            _ => match &n.reason {
                Some(r) => format!("{p} is DEGRADED: {r}"),
                None => format!("{p} is DEGRADED"),
            },
        };
        return one_line(&s);
    }
    let s = match n.kind {
        NoticeKind::Opened => match main_failure(n) {
            Some(f) => format!("{p} is DOWN: {}", f.class),
            None => format!("{p} is DOWN"),
        },
        NoticeKind::Reminder => match n.down_for {
            Some(d) => format!("{p} is still DOWN, for {}", span(d)),
            None => format!("{p} is still DOWN"),
        },
        NoticeKind::Resolved if n.state == "removed" => {
            format!("{p} was removed from the configuration while DOWN; its incident is closed")
        }
        NoticeKind::Resolved => match n.down_for {
            Some(d) => format!("{p} is UP again after {}", span(d)),
            None => format!("{p} is UP again"),
        },
        NoticeKind::Test => "Test notice from Lookout: this notifier works".to_string(),
    };
    one_line(&s)
}

/// The facts, as (label, value) pairs, in the order every format shows them.
pub fn facts(n: &Notice) -> Vec<(&'static str, String)> {
    let mut out = vec![
        ("Probe", n.probe.clone()),
        ("Target", format!("{} {}", n.probe_kind, n.target)),
        ("State", n.state.to_uppercase()),
        ("Since", when(n.since)),
    ];
    if let Some(d) = n.down_for {
        let label = match (n.kind, degraded(n)) {
            (NoticeKind::Resolved, false) => "Was down for",
            (NoticeKind::Resolved, true) => "Was degraded for",
            (_, false) => "Down for",
            (_, true) => "Degraded for",
        };
        out.push((label, span(d)));
    }
    if let Some(r) = &n.reason {
        out.push(("Reason", r.clone()));
    }
    if !n.changes.is_empty() {
        let said: Vec<String> = n.changes.iter().map(|c| c.sentence()).collect();
        out.push(("Changes", said.join("; ")));
    }
    if let Some(id) = &n.trace_id {
        out.push(("Trace", n.trace_url.clone().unwrap_or_else(|| id.clone())));
    }
    if let Some(f) = main_failure(n) {
        out.push(("Class", f.class.as_str().to_string()));
    }
    if let Some(d) = n.last_latency {
        out.push(("Last latency", crate::duration::human(d)));
    }
    if degraded(n) && n.kind == NoticeKind::Resolved {
        out.push((
            "Streak",
            format!("{} runs in a row within bounds", n.streak),
        ));
    } else if n.kind != NoticeKind::Test && n.state != "removed" && !degraded(n) {
        let what = match (n.kind, n.streak) {
            (NoticeKind::Resolved, 1) => "success",
            (NoticeKind::Resolved, _) => "successes",
            (_, 1) => "failure",
            _ => "failures",
        };
        out.push(("Streak", format!("{} consecutive {what}", n.streak)));
    }
    if !n.dependents.is_empty() {
        out.push(("Also affected", n.dependents.join(", ")));
    }
    if !n.labels.is_empty() {
        let labels: Vec<String> = n.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        out.push(("Labels", labels.join(", ")));
    }
    if let Some(id) = n.incident {
        out.push(("Incident", format!("#{id}")));
    }
    out
}

/// The failure messages: the first, and the latest when it differs.
pub fn failures(n: &Notice) -> Vec<(&'static str, &Failure)> {
    match (&n.first_failure, &n.last_failure) {
        (Some(a), Some(b)) if a != b => vec![("First failure", a), ("Latest failure", b)],
        (Some(a), _) => vec![("Failure", a)],
        (None, Some(b)) => vec![("Failure", b)],
        (None, None) => Vec::new(),
    }
}

/// The plain-text body.
pub fn text(n: &Notice) -> String {
    let mut s = headline(n);
    s.push_str("\n\n");
    for (label, value) in facts(n) {
        let _ = writeln!(s, "{:<14}{}", format!("{label}:"), one_line(&value));
    }
    for (label, f) in failures(n) {
        let _ = write!(s, "\n{label} ({}):\n  {}\n", f.class, f.message);
    }
    if let Some(link) = &n.link {
        let _ = write!(s, "\n{link}\n");
    }
    s.push_str("\n-- \nSent by Lookout at ");
    s.push_str(&when(n.at));
    s.push('\n');
    redact(&s)
}

/// `s` with `& < > " '` escaped for HTML text and attribute values.
pub fn escape_html(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The HTML body (a complete document; every value escaped).
pub fn html(n: &Notice) -> String {
    let e = escape_html;
    let mut s = String::from(
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"></head>\n<body style=\"font-family: sans-serif\">\n",
    );
    let _ = writeln!(
        s,
        "<h2 style=\"border-left: 6px solid {}; padding-left: 8px\">{}</h2>",
        color(n),
        e(&headline(n))
    );
    s.push_str("<table cellpadding=\"3\">\n");
    for (label, value) in facts(n) {
        let _ = writeln!(
            s,
            "<tr><th align=\"left\">{}</th><td>{}</td></tr>",
            e(label),
            e(&value)
        );
    }
    s.push_str("</table>\n");
    for (label, f) in failures(n) {
        let _ = writeln!(
            s,
            "<p><b>{} ({})</b></p>\n<pre>{}</pre>",
            e(label),
            e(f.class.as_str()),
            e(&f.message)
        );
    }
    if let Some(link) = &n.link {
        let _ = writeln!(
            s,
            "<p><a href=\"{}\">Open {} in Lookout</a></p>",
            e(link),
            e(&n.probe)
        );
    }
    let _ = writeln!(
        s,
        "<p style=\"color: #777; font-size: small\">Sent by Lookout at {}</p>\n</body></html>",
        e(&when(n.at))
    );
    redact(&s)
}

/// Escapes Slack mrkdwn/plain text control characters (`& < >`).
fn slack_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut t: String = s.chars().take(max.saturating_sub(1)).collect();
    t.push('…');
    t
}

/// The Slack incoming-webhook payload: a `text` fallback, a header block,
/// and an attachment coloured by what happened holding the facts as fields,
/// the failure messages and, when there is a link, a button.
pub fn slack(n: &Notice) -> Value {
    let headline = headline(n);
    let fields: Vec<Value> = facts(n)
        .into_iter()
        .filter(|(label, _)| *label != "Incident")
        .take(10)
        .map(|(label, value)| {
            json!({
                "type": "mrkdwn",
                "text": truncate(&format!("*{label}*\n{}", slack_escape(&value)), SLACK_FIELD_MAX),
            })
        })
        .collect();
    let mut details = vec![json!({ "type": "section", "fields": fields })];
    for (label, f) in failures(n) {
        let text = format!(
            "*{label}* ({})\n```{}```",
            f.class,
            slack_escape(&f.message.replace("```", "'''"))
        );
        details.push(json!({
            "type": "section",
            "text": { "type": "mrkdwn", "text": truncate(&text, SLACK_SECTION_MAX) },
        }));
    }
    if let Some(link) = &n.link {
        details.push(json!({
            "type": "actions",
            "elements": [{
                "type": "button",
                "text": { "type": "plain_text", "text": "Open in Lookout" },
                "url": link,
            }],
        }));
    }
    let mut fallback = headline.clone();
    if let Some(f) = main_failure(n) {
        let _ = write!(fallback, " ({})", one_line(&f.message));
    }
    if let Some(link) = &n.link {
        let _ = write!(fallback, " {link}");
    }
    let value = json!({
        "text": slack_escape(&fallback),
        "blocks": [{
            "type": "header",
            "text": { "type": "plain_text", "text": truncate(&headline, SLACK_HEADER_MAX), "emoji": true },
        }],
        "attachments": [{
            "color": color(n),
            "fallback": slack_escape(&fallback),
            "blocks": details,
        }],
    });
    redact_json(value)
}

/// Every string in `v` passed through [`redact`].
fn redact_json(v: Value) -> Value {
    match v {
        Value::String(s) => Value::String(redact(&s)),
        Value::Array(a) => Value::Array(a.into_iter().map(redact_json).collect()),
        Value::Object(o) => {
            Value::Object(o.into_iter().map(|(k, v)| (k, redact_json(v))).collect())
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::result::FailureClass;
    use std::collections::BTreeMap;

    fn notice(kind: NoticeKind) -> Notice {
        let since = DateTime::from_timestamp(1_700_000_000, 0).unwrap_or_default();
        Notice {
            kind,
            probe: "checkout-api".into(),
            state: if kind == NoticeKind::Resolved {
                "up"
            } else {
                "down"
            }
            .into(),
            probe_kind: "http".into(),
            target: "GET https://shop.example/health".into(),
            since,
            down_for: Some(Duration::from_secs(720)),
            first_failure: Some(Failure {
                class: FailureClass::Timeout,
                message: "no answer within 5s".into(),
            }),
            last_failure: Some(Failure {
                class: FailureClass::Connect,
                message: "connection refused <b>&</b>".into(),
            }),
            last_latency: Some(Duration::from_millis(5000)),
            streak: 3,
            dependents: vec!["cart".into(), "search".into()],
            incident: Some(42),
            link: Some("https://lookout.example/probes/checkout-api".into()),
            labels: BTreeMap::from([("team".into(), "shop".into())]),
            incident_kind: IncidentKind::Down,
            reason: None,
            changes: Vec::new(),
            trace_id: None,
            trace_url: None,
            at: since,
        }
    }

    #[test]
    fn subjects_name_the_state_probe_and_class_or_duration() {
        let mut n = notice(NoticeKind::Opened);
        n.last_failure = None;
        assert_eq!(subject(&n), "[Lookout] DOWN checkout-api: timeout");
        assert_eq!(
            subject(&notice(NoticeKind::Resolved)),
            "[Lookout] RESOLVED checkout-api after 12m"
        );
        assert_eq!(
            subject(&notice(NoticeKind::Reminder)),
            "[Lookout] STILL DOWN checkout-api for 12m: connect"
        );
        // A removed probe's incident, closed by a reload: not "up again".
        let mut removed = notice(NoticeKind::Resolved);
        removed.state = "removed".into();
        assert_eq!(
            subject(&removed),
            "[Lookout] CLOSED checkout-api: removed from the configuration"
        );
        assert!(headline(&removed).contains("removed from the configuration while DOWN"));
        assert!(!facts(&removed).iter().any(|(k, _)| *k == "Streak"));
    }

    #[test]
    fn spans_use_two_units_to_the_second() {
        for (secs, want) in [
            (45, "45s"),
            (720, "12m"),
            (5400, "1h 30m"),
            (3600, "1h"),
            (183_600, "2d 3h"),
        ] {
            assert_eq!(span(Duration::from_secs(secs)), want);
        }
    }

    #[test]
    fn every_format_carries_the_facts() {
        let n = notice(NoticeKind::Opened);
        let t = text(&n);
        let h = html(&n);
        let sl = slack(&n).to_string();
        for body in [&t, &h, &sl] {
            for want in [
                "checkout-api",
                "timeout",
                "no answer within 5s",
                "connect",
                "5s",
                "3 consecutive failures",
                "cart, search",
                "https://lookout.example/probes/checkout-api",
                "2023-11-14T22:13:20Z",
                "12m",
            ] {
                assert!(body.contains(want), "`{want}` missing from:\n{body}");
            }
        }
        assert!(t.contains("connection refused <b>&</b>"));
        assert!(h.contains("connection refused &lt;b&gt;&amp;&lt;/b&gt;"));
        assert!(!h.contains("<b>&</b>"));
        assert!(sl.contains("connection refused &lt;b&gt;&amp;&lt;/b&gt;"));
    }

    #[test]
    fn slack_colour_follows_what_happened() {
        let c = |k| slack(&notice(k))["attachments"][0]["color"].clone();
        assert_eq!(c(NoticeKind::Opened), COLOR_DOWN);
        assert_eq!(c(NoticeKind::Resolved), COLOR_RESOLVED);
        assert_eq!(c(NoticeKind::Test), COLOR_TEST);
        let v = slack(&notice(NoticeKind::Opened));
        assert_eq!(v["blocks"][0]["type"], "header");
        let mut no_link = notice(NoticeKind::Opened);
        no_link.link = None;
        assert!(!slack(&no_link).to_string().contains("\"actions\""));
    }

    #[test]
    fn registered_secrets_never_render() {
        crate::redact::register("render-secret-2718");
        let mut n = notice(NoticeKind::Opened);
        n.last_failure = Some(Failure {
            class: FailureClass::Auth,
            message: "password render-secret-2718 refused by postgres://u:pw@db/x".into(),
        });
        for body in [text(&n), html(&n), slack(&n).to_string(), subject(&n)] {
            assert!(!body.contains("render-secret-2718"), "{body}");
            assert!(!body.contains(":pw@"), "{body}");
        }
        let r = redacted(&n);
        assert!(!serde_json::to_string(&r)
            .unwrap_or_default()
            .contains("render-secret-2718"));
    }
}
