//! The page of one probe (`/probes/{name}`): its state and description,
//! uptime and latency over 1h/24h/7d/30d, a larger 24-hour latency chart,
//! its recent results (failure class and message, phase timings, details,
//! the trace id linked through `tracing.link`) and its incidents, plus the
//! Markdown to embed its badges.
//!
//! One probe's page costs a handful of queries, all run in one go on the
//! server's read connection; nothing is cached.

use std::fmt::Write;
use std::time::Duration;

use chrono::{DateTime, DurationRound, TimeDelta, Utc};

use super::html::{self, path_segment, Esc};
use super::status_page::incidents;
use super::{chart, pages, LiveState, ProbeInfo};
use crate::alert::changes::ChangeEvent;
use crate::alert::AlertView;
use crate::result::ProbeResult;
use crate::store::alert_state::StoredIncident;
use crate::store::locations::LocationStats;
use crate::store::{SeriesPoint, WindowStats};

/// Recent results listed.
const RESULTS: usize = 50;
/// Incidents listed.
const INCIDENTS: usize = 20;
/// Width of one step of the chart.
const STEP_MINUTES: i64 = 10;
/// The windows of the stats table.
const WINDOWS: [(&str, TimeDelta); 4] = [
    ("1h", TimeDelta::hours(1)),
    ("24h", TimeDelta::hours(24)),
    ("7d", TimeDelta::days(7)),
    ("30d", TimeDelta::days(30)),
];

/// What the database says about the probe.
#[derive(Debug, Default)]
struct Past {
    stats: Vec<WindowStats>,
    series: Vec<SeriesPoint>,
    results: Vec<ProbeResult>,
    incidents: Vec<StoredIncident>,
    /// Change events in the chart's window that match the probe.
    events: Vec<ChangeEvent>,
    /// The last 24 hours per location (several instances).
    locations: Vec<LocationStats>,
}

/// The page of probe `name`; `None` when no probe has that name.
pub async fn render(s: &LiveState, name: &str) -> Option<String> {
    let probes = s.probes.load();
    let info = probes.iter().find(|p| p.name == name)?;
    let now = Utc::now();
    let step = TimeDelta::minutes(STEP_MINUTES);
    let until = now.duration_trunc(step).map_or(now, |t| t + step);
    let since = until - TimeDelta::hours(24);
    let (past, error) = match read_past(s, info, now, since, until).await {
        Ok(p) => (p, false),
        Err(e) => {
            tracing::warn!(probe = name, error = %e, "probe page: history unavailable");
            (Past::default(), true)
        }
    };
    let view = s.alerts.get(name);
    let mut body = String::with_capacity(16 * 1024);
    body.push_str("<main class=\"detail\">");
    if error {
        body.push_str(
            "<p class=\"warning\" role=\"alert\">The history database cannot be read right now; \
             stats, results and incidents are missing (see the log).</p>",
        );
    }
    head(&mut body, info, view.as_ref(), now);
    stats_table(&mut body, &past.stats);
    locations_table(&mut body, &past.locations);
    let _ = write!(
        body,
        "<section class=\"chart-box\"><h2>Latency, last 24 hours (UTC)</h2>{}</section>",
        chart::render_marked(name, &past.series, since, until, chart::LARGE, &past.events)
    );
    let link = s
        .trace_link
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    results_table(&mut body, &past.results, link.as_deref());
    incidents(&mut body, &past.incidents, now, "incidents", "Incidents");
    badges(&mut body, s, name);
    body.push_str("</article></main>");
    Some(pages::page(&format!("{name} · Lookout"), &body, now))
}

async fn read_past(
    s: &LiveState,
    info: &ProbeInfo,
    now: DateTime<Utc>,
    since: DateTime<Utc>,
    until: DateTime<Utc>,
) -> Result<Past, String> {
    let Some(history) = &s.history else {
        return Ok(Past::default());
    };
    let name = info.name.clone();
    let labels = info.labels.clone();
    let located = s.location.is_some();
    history
        .read(move |store| {
            let mut events = store.events_between(since, until, 1000)?;
            events.retain(|e| e.matches(&labels));
            let stats = WINDOWS
                .iter()
                .map(|(_, w)| store.stats(&name, now - *w, now))
                .collect::<Result<Vec<_>, _>>()?;
            let step = Duration::from_secs(STEP_MINUTES as u64 * 60);
            Ok(Past {
                stats,
                series: store.latency_series(&name, since, until, step)?,
                results: store.recent(&name, RESULTS)?,
                incidents: store.incidents(Some(&name), INCIDENTS)?,
                events,
                // Only an instance with a location shares its history
                // with others; the split reads a day of raw rows.
                locations: if located {
                    store.stats_by_location(&name, now - TimeDelta::hours(24), now)?
                } else {
                    Vec::new()
                },
            })
        })
        .await
        .map_err(|e| e.to_string())
}

/// The article's opening: name, state, since, cause, description.
fn head(out: &mut String, info: &ProbeInfo, view: Option<&AlertView>, now: DateTime<Utc>) {
    let state = pages::state_of(view);
    let _ = write!(
        out,
        "<p class=\"crumbs\"><a href=\"/\">All probes</a></p>\
         <article class=\"probe-detail\" data-probe=\"{n}\" data-state=\"{state}\">\
         <header id=\"head\" data-refresh><h1>{n}</h1> <span class=\"state\" data-state=\"{state}\">{state}</span>",
        n = Esc(&info.name),
    );
    if let Some(since) = view.and_then(|v| v.since) {
        let _ = write!(
            out,
            " <span class=\"since\">since {}</span>",
            html::rel_time(since, now)
        );
    }
    if let Some(why) = view.and_then(|v| v.degraded.as_deref()) {
        let _ = write!(out, "<p class=\"cause\">degraded: {}</p>", Esc(why));
    }
    if let Some(t) = view.and_then(|v| v.trend.as_deref()) {
        let _ = write!(out, "<p class=\"finding\">{}</p>", Esc(t));
    }
    if let Some(dep) = view.and_then(|v| v.caused_by.as_deref()) {
        let _ = write!(
            out,
            "<p class=\"cause\">down because <a href=\"/probes/{}\">{}</a> is down</p>",
            path_segment(dep),
            Esc(dep)
        );
    }
    let _ = write!(
        out,
        "<dl class=\"facts\"><dt>kind</dt><dd>{}</dd><dt>target</dt><dd class=\"target\">{}</dd>\
         <dt>schedule</dt><dd>{}</dd>",
        info.kind,
        Esc(&info.target),
        Esc(&info.schedule)
    );
    if !info.labels.is_empty() {
        out.push_str("<dt>labels</dt><dd><ul class=\"labels\">");
        for (k, v) in &info.labels {
            let f = pages::Filters::default().with_label(k, v);
            let _ = write!(
                out,
                "<li><a href=\"{}\">{}={}</a></li>",
                Esc(&f.href()),
                Esc(k),
                Esc(v)
            );
        }
        out.push_str("</ul></dd>");
    }
    out.push_str("</dl></header>");
}

/// Uptime, runs, failures and latency per window:
/// `<td data-window="24h" data-stat="uptime">`.
fn stats_table(out: &mut String, stats: &[WindowStats]) {
    out.push_str(
        "<section id=\"stats\" data-refresh><h2>Uptime and latency</h2><div class=\"scroll\"><table class=\"stats\"><thead><tr><th></th>",
    );
    for (w, _) in WINDOWS {
        let _ = write!(out, "<th scope=\"col\">{w}</th>");
    }
    out.push_str("</tr></thead><tbody>");
    type Cell = fn(&WindowStats) -> String;
    let rows: [(&str, &str, Cell); 8] = [
        ("uptime", "uptime", |s| html::uptime(s.uptime)),
        ("runs", "runs", |s| s.count.to_string()),
        ("failures", "failures", |s| s.failures.to_string()),
        ("p50", "p50", |s| html::latency(s.p50)),
        ("p95", "p95", |s| html::latency(s.p95)),
        ("p99", "p99", |s| html::latency(s.p99)),
        ("mean", "mean", |s| html::latency(s.mean)),
        ("max", "max", |s| html::latency(s.max)),
    ];
    for (key, title, cell) in rows {
        let _ = write!(out, "<tr><th scope=\"row\">{title}</th>");
        for (i, (w, _)) in WINDOWS.iter().enumerate() {
            let v = stats.get(i).map_or_else(|| "—".to_string(), cell);
            let _ = write!(out, "<td data-window=\"{w}\" data-stat=\"{key}\">{v}</td>");
        }
        out.push_str("</tr>");
    }
    out.push_str("</tbody></table></div></section>");
}

/// The last 24 hours split by the location the runs ran in, when they ran
/// in any (several instances, `location`).
fn locations_table(out: &mut String, locations: &[LocationStats]) {
    if locations.iter().all(|l| l.location.is_none()) {
        return;
    }
    out.push_str(concat!(
        r#"<section id="locations" data-refresh><h2>By location, last 24 hours</h2>"#,
        r#"<div class="scroll"><table class="stats"><thead><tr><th scope="col">location</th>"#,
        r#"<th scope="col">last run</th><th scope="col">uptime</th><th scope="col">runs</th>"#,
        r#"<th scope="col">failures</th><th scope="col">p50</th><th scope="col">p95</th>"#,
        "</tr></thead><tbody>",
    ));
    for l in locations {
        let name = l.location.as_deref().unwrap_or("(none)");
        let last = match l.last_success {
            Some(true) => "ok",
            Some(false) => "failed",
            None => "—",
        };
        let _ = write!(
            out,
            r#"<tr data-location="{n}"><th scope="row">{n}</th><td>{last}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>"#,
            html::uptime(l.stats.uptime),
            l.stats.count,
            l.stats.failures,
            html::latency(l.stats.p50),
            html::latency(l.stats.p95),
            n = Esc(name),
        );
    }
    out.push_str("</tbody></table></div></section>");
}

/// `<tr class="result" data-ok="true|false">` per recent result; `link`
/// is `tracing.link`, the template that links trace ids.
fn results_table(out: &mut String, results: &[ProbeResult], link: Option<&str>) {
    super::html::table_section(
        out,
        ("results", "Recent results", "results"),
        &["Time", "Duration", "Outcome", "Message", "Phases"],
        "No results yet.",
        results,
        |out, r| result_row(out, r, link),
    );
}

fn result_row(out: &mut String, r: &ProbeResult, link: Option<&str>) {
    let outcome = match &r.failure {
        None if r.success => "<span class=\"ok\">ok</span>".to_string(),
        None => "<span class=\"class\">failed</span>".to_string(),
        Some(f) => format!("<span class=\"class\">{}</span>", f.class),
    };
    let message = r.failure.as_ref().map_or("", |f| f.message.as_str());
    let phases: Vec<String> = r
        .phases
        .iter()
        .map(|(p, d)| format!("{} {}", p.as_str(), html::latency(Some(*d))))
        .collect();
    let _ = write!(
        out,
        "<tr class=\"result\" data-ok=\"{}\"><td>{}</td><td>{}</td><td>{outcome}</td>\
         <td class=\"message\">{}{}{}</td><td class=\"phases\">{}</td></tr>",
        r.success,
        html::abs_time(r.started_at),
        html::latency(Some(r.duration)),
        Esc(message),
        details(r),
        trace(r, link),
        Esc(&phases.join(" · ")),
    );
}

/// The run's trace id (`details.trace_id`), a link into the tracing
/// backend when `tracing.link` is set, so the failing request can be found
/// in the backend's traces.
fn trace(r: &ProbeResult, link: Option<&str>) -> String {
    let Some(id) = r
        .details
        .get("trace_id")
        .and_then(serde_json::Value::as_str)
        .filter(|id| crate::tracectx::is_trace_id(id))
    else {
        return String::new();
    };
    match link {
        Some(template) => format!(
            " <span class=\"trace\">trace <a href=\"{}\" rel=\"noopener noreferrer\"><code>{id}</code></a></span>",
            Esc(&crate::tracectx::trace_link(template, id))
        ),
        None => format!(" <span class=\"trace\">trace <code>{id}</code></span>"),
    }
}

/// A result's scalar details (`status 200`, `rows 1`), small, after its
/// message; the trace id has its own place ([`trace`]).
fn details(r: &ProbeResult) -> String {
    let parts: Vec<String> = r
        .details
        .iter()
        .filter(|(k, _)| k.as_str() != "trace_id")
        .filter_map(|(k, v)| {
            let v = match v {
                serde_json::Value::String(s) if s.len() <= 80 => s.clone(),
                serde_json::Value::Number(n) => n.to_string(),
                serde_json::Value::Bool(b) => b.to_string(),
                _ => return None,
            };
            Some(format!("{}={}", Esc(k), Esc(&v)))
        })
        .take(6)
        .collect();
    if parts.is_empty() {
        String::new()
    } else {
        format!(" <span class=\"details\">{}</span>", parts.join(" "))
    }
}

/// How to embed this probe's badges in a README.
fn badges(out: &mut String, s: &LiveState, name: &str) {
    let base = s.settings.public_url.as_deref().unwrap_or("");
    let url = format!("{base}/badge/{}.svg", path_segment(name));
    let _ = write!(
        out,
        "<section id=\"badges\"><h2>Badges</h2><p><img src=\"/badge/{seg}.svg\" alt=\"status of {n}\"> \
         <img src=\"/badge/{seg}.svg?type=uptime&amp;window=30d\" alt=\"uptime of {n}\"> \
         <img src=\"/badge/{seg}.svg?type=latency\" alt=\"latency of {n}\"></p>\
         <p>Markdown:</p><pre><code>![{n}]({u})\n![{n} uptime]({u}?type=uptime&amp;window=30d)\n\
         ![{n} latency]({u}?type=latency)</code></pre></section>",
        seg = path_segment(name),
        n = Esc(name),
        u = Esc(&url),
    );
}
