//! The status page (`/`): a summary of how many probes are in each state,
//! the filters, one card per probe (state, uptime over 24h/7d/30d, current
//! and p95 latency, a 24-hour latency chart) optionally grouped by a
//! label's value, and the latest incidents.
//!
//! Building it is two steps: [`gather`] collects what the page needs (live
//! state in memory; uptime of every probe in three `counts_all` queries;
//! a chart and a 24-hour p95 per shown probe, cached for
//! [`CHART_TTL`] so a page of a thousand probes does not query a thousand
//! series on every load), then [`page_body`] writes the markup.

use std::collections::{BTreeSet, HashMap};
use std::fmt::Write;
use std::sync::{Arc, Mutex, OnceLock, PoisonError, Weak};
use std::time::{Duration, Instant};

use chrono::{DateTime, DurationRound, TimeDelta, Utc};

use super::html::{self, path_segment, Esc};
use super::pages::{self, Filters, STATES};
use super::{chart, LiveState, ProbeInfo};
use crate::alert::state::IncidentKind;
use crate::alert::AlertView;
use crate::result::ProbeResult;
use crate::store::alert_state::StoredIncident;
use crate::store::{Counts, Store, StoreError};

/// How long a probe's rendered chart and 24-hour p95 are reused.
pub const CHART_TTL: Duration = Duration::from_secs(30);
/// Width of one step of the status page's charts.
const STEP_MINUTES: i64 = 30;
/// Probes whose series are read in one go on the read connection (other
/// requests get a turn in between).
const CHUNK: usize = 100;
/// Incidents listed at the bottom.
const INCIDENTS: usize = 20;

/// What the page shows of one probe.
#[derive(Debug)]
pub struct Card<'a> {
    pub info: &'a ProbeInfo,
    pub state: &'static str,
    pub view: Option<AlertView>,
    pub last: Option<ProbeResult>,
    /// Uptime over 24h, 7d, 30d.
    pub uptime: [Option<f64>; 3],
    pub summary: Option<Arc<Summary>>,
}

/// A probe's chart and 24-hour p95, as cached.
#[derive(Debug)]
pub struct Summary {
    pub chart: String,
    pub p95: Option<Duration>,
}

/// Everything the page shows.
#[derive(Debug)]
pub struct PageData<'a> {
    pub now: DateTime<Utc>,
    pub filters: &'a Filters,
    /// Probes in each state (all probes, not only the shown ones).
    pub counts: [usize; STATES.len()],
    pub cards: Vec<Card<'a>>,
    pub incidents: Vec<StoredIncident>,
    /// Every label key in use, for the "group by" links.
    pub label_keys: BTreeSet<&'a str>,
    /// The history could not be read; the numbers are missing.
    pub history_error: bool,
    /// This instance's location, shown in the header when it has one.
    pub location: Option<&'a str>,
}

/// The whole page for `filters`.
pub async fn render(s: &LiveState, filters: &Filters) -> String {
    let probes = s.probes.load();
    let data = gather(s, &probes, filters).await;
    pages::page("Lookout status", &page_body(&data), data.now)
}

/// Collects what the page shows.
pub async fn gather<'a>(
    s: &'a LiveState,
    probes: &'a [ProbeInfo],
    filters: &'a Filters,
) -> PageData<'a> {
    let now = Utc::now();
    let board = s.alerts.snapshot();
    let mut counts = [0usize; STATES.len()];
    let mut cards = Vec::new();
    {
        let latest = s.latest.read().unwrap_or_else(PoisonError::into_inner);
        for info in probes.iter() {
            let view = board.get(&info.name).cloned();
            let state = pages::state_of(view.as_ref());
            if let Some(i) = STATES.iter().position(|x| *x == state) {
                counts[i] += 1;
            }
            if filters.matches(info, state) {
                cards.push(Card {
                    info,
                    state,
                    view,
                    last: latest.get(&info.name).cloned(),
                    uptime: [None; 3],
                    summary: None,
                });
            }
        }
    }
    let label_keys = probes
        .iter()
        .flat_map(|p| p.labels.keys().map(String::as_str))
        .collect();
    let mut data = PageData {
        now,
        filters,
        counts,
        cards,
        incidents: Vec::new(),
        label_keys,
        history_error: false,
        location: s.location.as_deref(),
    };
    if let Err(e) = fill_history(s, &mut data).await {
        tracing::warn!(error = %e, "status page: history unavailable");
        data.history_error = true;
    }
    data
}

/// Uptime, incidents and the per-probe summaries from the database.
async fn fill_history(s: &LiveState, data: &mut PageData<'_>) -> Result<(), String> {
    let Some(history) = &s.history else {
        return Ok(());
    };
    let now = data.now;
    let (uptimes, incidents) = history
        .read(move |store| {
            let windows = [
                TimeDelta::hours(24),
                TimeDelta::days(7),
                TimeDelta::days(30),
            ];
            let counts = windows
                .iter()
                .map(|w| store.counts_all(now - *w, now))
                .collect::<Result<Vec<HashMap<String, Counts>>, _>>()?;
            Ok((counts, store.incidents(None, INCIDENTS)?))
        })
        .await
        .map_err(|e| e.to_string())?;
    data.incidents = incidents;
    for card in &mut data.cards {
        for (slot, counts) in card.uptime.iter_mut().zip(&uptimes) {
            *slot = counts.get(&card.info.name).and_then(Counts::uptime);
        }
    }
    let summaries = summaries(s, &data.cards, now).await?;
    for card in &mut data.cards {
        card.summary = summaries.get(&card.info.name).cloned();
    }
    Ok(())
}

/// The window the status page's charts cover: the 24 hours up to the end
/// of the current step.
pub fn chart_window(now: DateTime<Utc>) -> (DateTime<Utc>, DateTime<Utc>) {
    let step = TimeDelta::minutes(STEP_MINUTES);
    let until = now.duration_trunc(step).map_or(now, |t| t + step);
    (until - TimeDelta::hours(24), until)
}

/// Cached summaries, valid for one [`LiveState`] (its probe list; the weak
/// reference keeps the allocation, so the address cannot be reused by
/// another state while the cache holds it).
struct Cache {
    owner: Weak<Vec<ProbeInfo>>,
    entries: HashMap<String, (Instant, DateTime<Utc>, Arc<Summary>)>,
}

fn cache() -> &'static Mutex<Cache> {
    static CACHE: OnceLock<Mutex<Cache>> = OnceLock::new();
    CACHE.get_or_init(|| {
        Mutex::new(Cache {
            owner: Weak::new(),
            entries: HashMap::new(),
        })
    })
}

/// Each card's summary: from the cache when it is younger than
/// [`CHART_TTL`] and drawn for the current window, else from the database
/// (only summaries with data are cached, so a new probe's first results
/// show up at once).
async fn summaries(
    s: &LiveState,
    cards: &[Card<'_>],
    now: DateTime<Utc>,
) -> Result<HashMap<String, Arc<Summary>>, String> {
    let (since, until) = chart_window(now);
    let mut out = HashMap::new();
    let mut missing = Vec::new();
    {
        let mut c = cache().lock().unwrap_or_else(PoisonError::into_inner);
        let probes = s.probes.load();
        if c.owner.as_ptr() != Arc::as_ptr(&probes) {
            c.owner = Arc::downgrade(&probes);
            c.entries.clear();
        }
        for card in cards {
            match c.entries.get(&card.info.name) {
                Some((at, u, sum)) if at.elapsed() < CHART_TTL && *u == until => {
                    out.insert(card.info.name.clone(), sum.clone());
                }
                _ => missing.push(card.info.name.clone()),
            }
        }
    }
    let Some(history) = &s.history else {
        return Ok(out);
    };
    for chunk in missing.chunks(CHUNK) {
        let names = chunk.to_vec();
        let fresh = history
            .read(move |store| read_summaries(store, &names, since, until, now))
            .await
            .map_err(|e| e.to_string())?;
        let mut c = cache().lock().unwrap_or_else(PoisonError::into_inner);
        for (name, sum, has_data) in fresh {
            let sum = Arc::new(sum);
            if has_data {
                c.entries
                    .insert(name.clone(), (Instant::now(), until, sum.clone()));
            }
            out.insert(name, sum);
        }
    }
    Ok(out)
}

/// Series and 24-hour p95 of each of `names`, charts drawn.
fn read_summaries(
    store: &Store,
    names: &[String],
    since: DateTime<Utc>,
    until: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<Vec<(String, Summary, bool)>, StoreError> {
    let step = Duration::from_secs(STEP_MINUTES as u64 * 60);
    names
        .iter()
        .map(|name| {
            let series = store.latency_series(name, since, until, step)?;
            let has_data = series.iter().any(|p| p.count > 0);
            let p95 = if has_data {
                store.stats(name, now - TimeDelta::hours(24), now)?.p95
            } else {
                None
            };
            let chart = chart::render(name, &series, since, until, chart::SMALL);
            Ok((name.clone(), Summary { chart, p95 }, has_data))
        })
        .collect()
}

/// The page's `<main>`.
pub fn page_body(d: &PageData<'_>) -> String {
    let mut out = String::with_capacity(4096 + d.cards.len() * 2500);
    out.push_str("<main class=\"status\">");
    if d.history_error {
        out.push_str(
            "<p class=\"warning\" role=\"alert\">The history database cannot be read right now; \
             uptime, latency and incidents are missing (see the log).</p>",
        );
    }
    summary(&mut out, d);
    filter_bar(&mut out, d);
    probes(&mut out, d);
    incidents(
        &mut out,
        &d.incidents,
        d.now,
        "incidents",
        "Recent incidents",
    );
    out.push_str("</main>");
    out
}

fn summary(out: &mut String, d: &PageData<'_>) {
    out.push_str("<section id=\"summary\" data-refresh><h1>Status</h1>");
    if let Some(l) = d.location {
        let _ = write!(out, "<p class=\"location\">Location: {}</p>", Esc(l));
    }
    out.push_str("<ul class=\"counts\">");
    for (state, n) in STATES.iter().zip(d.counts) {
        let _ = write!(
            out,
            "<li><a href=\"{}\"><span class=\"count\" data-state=\"{state}\">{n}</span> {state}</a></li>",
            Esc(&d.filters.with_state(state).href()),
        );
    }
    out.push_str("</ul></section>");
}

fn filter_bar(out: &mut String, d: &PageData<'_>) {
    let f = d.filters;
    out.push_str("<nav id=\"filters\" aria-label=\"Filters\"><form method=\"get\" action=\"/\" class=\"search\">");
    for s in &f.states {
        let _ = write!(out, "<input type=\"hidden\" name=\"state\" value=\"{s}\">");
    }
    for (k, v) in &f.labels {
        let _ = write!(
            out,
            "<input type=\"hidden\" name=\"label\" value=\"{}:{}\">",
            Esc(k),
            Esc(v)
        );
    }
    if let Some(g) = &f.group {
        let _ = write!(
            out,
            "<input type=\"hidden\" name=\"group\" value=\"{}\">",
            Esc(g)
        );
    }
    let _ = write!(
        out,
        "<label for=\"filter\">Filter</label><input id=\"filter\" type=\"search\" name=\"q\" \
         value=\"{}\" placeholder=\"name, target or label\" autocomplete=\"off\">\
         <button type=\"submit\">Apply</button></form>",
        Esc(f.text.as_deref().unwrap_or(""))
    );
    if !d.label_keys.is_empty() {
        out.push_str("<p class=\"groups\">Group by:");
        for k in &d.label_keys {
            link(
                out,
                &f.with_group(Some(k)),
                k,
                f.group.as_deref() == Some(*k),
            );
        }
        link(out, &f.with_group(None), "none", f.group.is_none());
        out.push_str("</p>");
    }
    if f.is_filtering() {
        out.push_str("<p class=\"active\">Showing");
        for s in &f.states {
            let _ = write!(out, " <span class=\"chip\">state: {s}</span>");
        }
        for (k, v) in &f.labels {
            let _ = write!(out, " <span class=\"chip\">{}: {}</span>", Esc(k), Esc(v));
        }
        if let Some(t) = &f.text {
            let _ = write!(out, " <span class=\"chip\">“{}”</span>", Esc(t));
        }
        let clear = Filters {
            group: f.group.clone(),
            ..Filters::default()
        };
        let _ = write!(
            out,
            " <a class=\"clear\" href=\"{}\">show all</a></p>",
            Esc(&clear.href())
        );
    }
    out.push_str("</nav>");
}

/// ` <a href=...>text</a>`, marked current when `current`.
fn link(out: &mut String, f: &Filters, text: &str, current: bool) {
    let _ = write!(
        out,
        " <a href=\"{}\"{}>{}</a>",
        Esc(&f.href()),
        if current {
            " aria-current=\"true\""
        } else {
            ""
        },
        Esc(text)
    );
}

fn probes(out: &mut String, d: &PageData<'_>) {
    out.push_str("<section id=\"probes\" data-refresh>");
    if d.cards.is_empty() {
        out.push_str(if d.filters.is_filtering() {
            "<p class=\"none\">No probe matches these filters.</p>"
        } else {
            "<p class=\"none\">No probes are configured.</p>"
        });
    }
    match &d.filters.group {
        None => {
            for c in &d.cards {
                card(out, c, d);
            }
        }
        Some(key) => grouped(out, d, key),
    }
    out.push_str("</section>");
}

/// Cards under one `<h2 class="group">` per value of label `key` (sorted;
/// probes without the label last).
fn grouped(out: &mut String, d: &PageData<'_>, key: &str) {
    let mut groups: std::collections::BTreeMap<Option<&str>, Vec<&Card<'_>>> = Default::default();
    for c in &d.cards {
        groups
            .entry(c.info.labels.get(key).map(String::as_str))
            .or_default()
            .push(c);
    }
    let mut ordered: Vec<_> = groups.into_iter().collect();
    ordered.sort_by_key(|(v, _)| (v.is_none(), *v));
    for (value, cards) in ordered {
        let _ = write!(
            out,
            "<section class=\"group\" data-group=\"{}\"><h2 class=\"group\">{}</h2>",
            Esc(value.unwrap_or("")),
            match value {
                Some(v) => format!("{}: {}", Esc(key), Esc(v)),
                None => format!("no {}", Esc(key)),
            }
        );
        for c in cards {
            card(out, c, d);
        }
        out.push_str("</section>");
    }
}

fn card(out: &mut String, c: &Card<'_>, d: &PageData<'_>) {
    let name = &c.info.name;
    let labels: Vec<String> = c
        .info
        .labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    let _ = write!(
        out,
        "<article class=\"probe\" id=\"probe-{n}\" data-probe=\"{n}\" data-state=\"{st}\" data-labels=\"{l}\">\
         <header><a class=\"name\" href=\"/probes/{href}\">{n}</a> \
         <span class=\"state\" data-state=\"{st}\">{st}</span>",
        n = Esc(name),
        st = c.state,
        l = Esc(&labels.join(",")),
        href = path_segment(name),
    );
    if let Some(since) = c.view.as_ref().and_then(|v| v.since) {
        let _ = write!(
            out,
            " <span class=\"since\">since {}</span>",
            html::rel_time(since, d.now)
        );
    }
    let _ = write!(
        out,
        "</header><p class=\"target\"><span class=\"kind\">{}</span> {}</p>",
        c.info.kind,
        Esc(&c.info.target)
    );
    card_labels(out, c, d.filters);
    card_problem(out, c);
    card_numbers(out, c);
    match &c.summary {
        Some(s) => out.push_str(&s.chart),
        None => {
            let (since, until) = chart_window(d.now);
            out.push_str(&chart::render(name, &[], since, until, chart::SMALL));
        }
    }
    out.push_str("</article>");
}

fn card_labels(out: &mut String, c: &Card<'_>, f: &Filters) {
    if c.info.labels.is_empty() {
        return;
    }
    out.push_str("<ul class=\"labels\">");
    for (k, v) in &c.info.labels {
        let _ = write!(
            out,
            "<li><a href=\"{}\">{}={}</a></li>",
            Esc(&f.with_label(k, v).href()),
            Esc(k),
            Esc(v)
        );
    }
    out.push_str("</ul>");
}

/// Why the probe is not up: the dependency it waits on, or its last
/// failure.
fn card_problem(out: &mut String, c: &Card<'_>) {
    if let Some(why) = c.view.as_ref().and_then(|v| v.degraded.as_deref()) {
        let _ = write!(out, "<p class=\"cause\">degraded: {}</p>", Esc(why));
    }
    if let Some(t) = c.view.as_ref().and_then(|v| v.trend.as_deref()) {
        let _ = write!(out, "<p class=\"finding\">{}</p>", Esc(t));
    }
    if let Some(dep) = c.view.as_ref().and_then(|v| v.caused_by.as_deref()) {
        let _ = write!(
            out,
            "<p class=\"cause\">down because <a href=\"/probes/{}\">{}</a> is down</p>",
            path_segment(dep),
            Esc(dep)
        );
    }
    if let Some(f) = c.last.as_ref().and_then(|r| r.failure.as_ref()) {
        let _ = write!(
            out,
            "<p class=\"failure\"><span class=\"class\">{}</span> {}</p>",
            f.class,
            Esc(&f.message)
        );
    }
}

fn card_numbers(out: &mut String, c: &Card<'_>) {
    out.push_str(
        "<table class=\"numbers\"><thead><tr><th scope=\"col\">24h</th><th scope=\"col\">7d</th>\
         <th scope=\"col\">30d</th><th scope=\"col\">now</th><th scope=\"col\">p95 24h</th></tr></thead><tbody><tr>",
    );
    for (w, u) in ["24h", "7d", "30d"].iter().zip(c.uptime) {
        let _ = write!(out, "<td data-window=\"{w}\">{}</td>", html::uptime(u));
    }
    let _ = write!(
        out,
        "<td data-latency=\"current\">{}</td><td data-latency=\"p95\">{}</td></tr></tbody></table>",
        html::latency(c.last.as_ref().map(|r| r.duration)),
        html::latency(c.summary.as_ref().and_then(|s| s.p95)),
    );
}

/// A table of incidents (`<tr class="incident">`) in a section with `id`.
pub fn incidents(
    out: &mut String,
    list: &[StoredIncident],
    now: DateTime<Utc>,
    id: &str,
    title: &str,
) {
    super::html::table_section(
        out,
        (id, title, "incidents"),
        &["Probe", "Started", "Ended", "Duration", "Cause"],
        "No incidents recorded.",
        list,
        |out, i| incident_row(out, i, now),
    );
}

fn incident_row(out: &mut String, i: &StoredIncident, now: DateTime<Utc>) {
    let open = i.ended_at.is_none();
    let _ = write!(
        out,
        "<tr class=\"incident\" data-probe=\"{n}\" data-open=\"{open}\"><td><a href=\"/probes/{href}\">{n}</a></td>\
         <td data-label=\"started\"><a href=\"/incidents/{id}\">{}</a></td><td data-label=\"ended\">{}</td>\
         <td data-label=\"lasted\">{}</td><td>{}</td></tr>",
        html::abs_time(i.started_at),
        match i.ended_at {
            Some(t) => html::abs_time(t),
            None => "<span class=\"ongoing\">ongoing</span>".to_string(),
        },
        html::span(i.ended_at.unwrap_or(now) - i.started_at),
        cause(i),
        n = Esc(&i.probe),
        href = path_segment(&i.probe),
        id = i.id,
    );
}

/// An incident's cause: the dependency it was attributed to, else the
/// class and message of its first failure.
fn cause(i: &StoredIncident) -> String {
    if i.kind == IncidentKind::Degraded {
        return format!(
            "<span class=\"class\">degraded</span> {}",
            Esc(i.reason.as_deref().unwrap_or(""))
        );
    }
    if let Some(dep) = &i.caused_by {
        return format!(
            "dependency <a href=\"/probes/{}\">{}</a> down",
            path_segment(dep),
            Esc(dep)
        );
    }
    match (&i.first_class, &i.first_message) {
        (Some(c), Some(m)) => format!("<span class=\"class\">{}</span> {}", Esc(c), Esc(m)),
        (Some(c), None) => format!("<span class=\"class\">{}</span>", Esc(c)),
        (None, Some(m)) => Esc(m).to_string(),
        (None, None) => "—".to_string(),
    }
}

#[cfg(test)]
#[path = "pages_tests.rs"]
mod tests;
