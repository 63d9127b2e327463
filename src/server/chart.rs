//! The latency chart, drawn on the server as SVG: a p50 and a p95 line over
//! a window (the last 24 hours on the pages), a y axis in milliseconds with
//! two or three labelled gridlines at "nice" values, hour labels on the x
//! axis, and gaps where a step had no runs. A window without any data draws
//! an empty frame with the words "no data yet".
//!
//! The geometry ([`ticks`], [`line`], [`hour_marks`]) is separate from the
//! markup so it can be tested on its own. Colours come from the page's
//! stylesheet (`.p50`, `.p95`), with presentation attributes as a fallback.

use std::fmt::Write;
use std::time::Duration;

use chrono::{DateTime, Timelike, Utc};

use super::html::{self, Esc};
use crate::alert::changes::ChangeEvent;
use crate::store::SeriesPoint;

/// A chart's size in viewBox units (it scales to its container).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Size {
    pub width: f64,
    pub height: f64,
    /// Hours between two x axis labels.
    pub label_hours: u32,
}

/// The status page's chart, one per probe.
pub const SMALL: Size = Size {
    width: 480.0,
    height: 120.0,
    label_hours: 6,
};

/// The probe page's chart.
pub const LARGE: Size = Size {
    width: 720.0,
    height: 220.0,
    label_hours: 3,
};

const LEFT: f64 = 62.0;
const RIGHT: f64 = 6.0;
const TOP: f64 = 16.0;
const BOTTOM: f64 = 18.0;

/// The plotting area inside the margins, in viewBox units.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Plot {
    pub x: f64,
    pub y: f64,
    pub w: f64,
    pub h: f64,
}

impl Plot {
    pub fn of(size: Size) -> Plot {
        Plot {
            x: LEFT,
            y: TOP,
            w: size.width - LEFT - RIGHT,
            h: size.height - TOP - BOTTOM,
        }
    }

    /// Centre of step `i` of `n`.
    fn step_x(&self, i: usize, n: usize) -> f64 {
        self.x + (i as f64 + 0.5) * self.w / n.max(1) as f64
    }

    /// Height of `ms` on an axis from 0 to `top`.
    fn value_y(&self, ms: f64, top: f64) -> f64 {
        let f = if top > 0.0 {
            (ms / top).clamp(0.0, 1.0)
        } else {
            0.0
        };
        self.y + self.h * (1.0 - f)
    }

    fn bottom(&self) -> f64 {
        self.y + self.h
    }
}

/// The y axis for values up to `max_ms`: the top of the axis and the
/// gridlines above 0. The step is 1, 2, 2.5 or 5 times a power of ten,
/// the smallest that covers `max_ms` in at most three steps, which always
/// gives two or three gridlines.
pub fn ticks(max_ms: f64) -> (f64, Vec<f64>) {
    let max = if max_ms.is_finite() && max_ms > 0.0 {
        max_ms
    } else {
        1.0
    };
    let mut exp = (max / 3.0).log10().floor() as i32 - 1;
    let step = loop {
        let base = 10f64.powi(exp);
        if let Some(s) = [1.0, 2.0, 2.5, 5.0]
            .iter()
            .map(|m| m * base)
            .find(|s| (max / s).ceil() <= 3.0)
        {
            break s;
        }
        exp += 1;
    };
    let n = ((max / step).ceil() as usize).max(2);
    let lines: Vec<f64> = (1..=n).map(|k| k as f64 * step).collect();
    (n as f64 * step, lines)
}

/// A tick label: `0`, `0.5 ms`, `250 ms`, `1.5 s`.
fn tick_label(ms: f64) -> String {
    if ms == 0.0 {
        "0".to_string()
    } else if ms >= 1000.0 {
        format!("{} s", trim(ms / 1000.0))
    } else {
        format!("{} ms", trim(ms))
    }
}

/// A number with at most three decimals and no trailing zeros.
fn trim(v: f64) -> String {
    let s = format!("{v:.3}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// The path data of one line over `n` steps: one subpath per run of steps
/// with a value, so a step without runs leaves a gap. A lone point is a
/// zero-length segment (drawn as a dot with round caps). Empty when no step
/// has a value.
pub fn line(values: &[Option<f64>], plot: Plot, top: f64) -> String {
    let n = values.len();
    let mut d = String::new();
    let mut run = 0usize;
    for (i, v) in values.iter().enumerate() {
        match v {
            Some(ms) => {
                let (x, y) = (plot.step_x(i, n), plot.value_y(*ms, top));
                let _ = write!(d, "{}{x:.0} {y:.0}", if run == 0 { 'M' } else { 'L' });
                run += 1;
            }
            None => {
                end_run(&mut d, run);
                run = 0;
            }
        }
    }
    end_run(&mut d, run);
    d
}

/// Ends a subpath of `run` points: a lone point becomes a dot.
fn end_run(d: &mut String, run: usize) {
    if run == 1 {
        d.push_str("h0");
    }
}

/// Where the x axis gets a label: every `every` hours on the hour (UTC)
/// within `[since, until]`, as (fraction of the width, `HH:00`), leaving
/// out labels too close to either edge to fit.
pub fn hour_marks(since: DateTime<Utc>, until: DateTime<Utc>, every: u32) -> Vec<(f64, String)> {
    let total = (until - since).num_seconds() as f64;
    if total <= 0.0 || every == 0 {
        return Vec::new();
    }
    let mut t = since
        .with_minute(0)
        .and_then(|t| t.with_second(0))
        .and_then(|t| t.with_nanosecond(0))
        .unwrap_or(since);
    let mut out = Vec::new();
    while t <= until {
        let f = (t - since).num_seconds() as f64 / total;
        if t.hour() % every == 0 && (0.05..=0.95).contains(&f) {
            out.push((f, t.format("%H:%M").to_string()));
        }
        t += chrono::TimeDelta::hours(1);
    }
    out
}

fn ms(d: Option<Duration>) -> Option<f64> {
    d.map(|d| d.as_secs_f64() * 1000.0)
}

/// The whole `<svg class="chart">` for `probe`'s series over
/// `[since, until)`.
pub fn render(
    probe: &str,
    series: &[SeriesPoint],
    since: DateTime<Utc>,
    until: DateTime<Utc>,
    size: Size,
) -> String {
    render_marked(probe, series, since, until, size, &[])
}

/// [`render`] with a dashed vertical mark (titled with what changed) at
/// each change event in the window.
pub fn render_marked(
    probe: &str,
    series: &[SeriesPoint],
    since: DateTime<Utc>,
    until: DateTime<Utc>,
    size: Size,
    events: &[ChangeEvent],
) -> String {
    let plot = Plot::of(size);
    let p50: Vec<Option<f64>> = series.iter().map(|p| ms(p.p50)).collect();
    let p95: Vec<Option<f64>> = series.iter().map(|p| ms(p.p95).or(ms(p.p50))).collect();
    let max = p95.iter().flatten().fold(0.0f64, |a, b| a.max(*b));
    let has_data = p50.iter().any(Option::is_some);
    let hours = (until - since).num_hours();
    let mut svg = format!(
        "<svg class=\"chart{}\" data-probe=\"{}\" viewBox=\"0 0 {} {}\" role=\"img\">",
        if has_data { "" } else { " empty" },
        Esc(probe),
        size.width,
        size.height
    );
    if !has_data {
        let _ = write!(svg, "<title>Latency of {}: no data yet</title>", Esc(probe));
        x_axis(&mut svg, plot, since, until, size.label_hours);
        let _ = write!(
            svg,
            "<text class=\"nodata\" x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">no data yet</text></svg>",
            plot.x + plot.w / 2.0,
            plot.y + plot.h / 2.0 + 4.0
        );
        return svg;
    }
    let (top, lines) = ticks(max);
    let _ = write!(
        svg,
        "<title>Latency of {} over the last {hours} hours (UTC): p50 and p95 per step; highest p95 {}</title>",
        Esc(probe),
        html::latency(Some(Duration::from_secs_f64(max / 1000.0)))
    );
    y_axis(&mut svg, plot, top, &lines);
    x_axis(&mut svg, plot, since, until, size.label_hours);
    marks(&mut svg, plot, since, until, events);
    let _ = write!(
        svg,
        "<path class=\"p95\" fill=\"none\" stroke=\"#bf8700\" d=\"{}\"/>\
         <path class=\"p50\" fill=\"none\" stroke=\"#0969da\" d=\"{}\"/>\
         <text class=\"legend p95\" x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">p95</text>\
         <text class=\"legend p50\" x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">p50</text></svg>",
        line(&p95, plot, top),
        line(&p50, plot, top),
        plot.x + plot.w - 30.0,
        plot.y - 5.0,
        plot.x + plot.w,
        plot.y - 5.0,
    );
    svg
}

/// Where in `[since, until)` each event falls, as a fraction of the
/// width; events outside the window are left out.
pub fn event_marks(
    since: DateTime<Utc>,
    until: DateTime<Utc>,
    events: &[ChangeEvent],
) -> Vec<(f64, &ChangeEvent)> {
    let span = (until - since).num_milliseconds() as f64;
    if span <= 0.0 {
        return Vec::new();
    }
    events
        .iter()
        .filter(|e| e.at >= since && e.at < until)
        .map(|e| ((e.at - since).num_milliseconds() as f64 / span, e))
        .collect()
}

fn marks(
    svg: &mut String,
    plot: Plot,
    since: DateTime<Utc>,
    until: DateTime<Utc>,
    events: &[ChangeEvent],
) {
    for (f, e) in event_marks(since, until, events) {
        let x = plot.x + f * plot.w;
        let _ = write!(
            svg,
            "<g class=\"event\"><title>{} at {} UTC</title><path stroke=\"#8250df\" stroke-dasharray=\"3 3\" d=\"M{x:.1} {:.0}V{:.0}\"/></g>",
            Esc(&e.describe()),
            e.at.format("%H:%M"),
            plot.y,
            plot.bottom()
        );
    }
}

fn y_axis(svg: &mut String, plot: Plot, top: f64, lines: &[f64]) {
    let values: Vec<f64> = std::iter::once(0.0).chain(lines.iter().copied()).collect();
    svg.push_str("<path class=\"grid\" fill=\"none\" stroke=\"#d0d7de\" d=\"");
    for v in &values {
        let _ = write!(
            svg,
            "M{:.0} {:.0}h{:.0}",
            plot.x,
            plot.value_y(*v, top),
            plot.w
        );
    }
    svg.push_str("\"/><g class=\"tick\" text-anchor=\"end\">");
    for v in &values {
        let _ = write!(
            svg,
            "<text x=\"{:.0}\" y=\"{:.0}\">{}</text>",
            plot.x - 4.0,
            plot.value_y(*v, top) + 4.0,
            tick_label(*v)
        );
    }
    svg.push_str("</g>");
}

fn x_axis(svg: &mut String, plot: Plot, since: DateTime<Utc>, until: DateTime<Utc>, every: u32) {
    svg.push_str("<g class=\"tick\" text-anchor=\"middle\">");
    for (f, label) in hour_marks(since, until, every) {
        let _ = write!(
            svg,
            "<text x=\"{:.0}\" y=\"{:.0}\">{label}</text>",
            plot.x + f * plot.w,
            plot.bottom() + 15.0
        );
    }
    svg.push_str("</g>");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn change_events_are_marked_where_they_happened() {
        let since = DateTime::from_timestamp(1_700_000_000, 0).unwrap_or_default();
        let until = since + chrono::TimeDelta::hours(24);
        let event = |h: i64, title: &str| ChangeEvent {
            id: None,
            at: since + chrono::TimeDelta::hours(h),
            kind: "deploy".into(),
            title: title.into(),
            labels: [("service".to_string(), "checkout".to_string())].into(),
            link: None,
        };
        let events = [event(6, "v1"), event(30, "later"), event(-1, "before")];
        let marks = event_marks(since, until, &events);
        assert_eq!(marks.len(), 1);
        assert!((marks[0].0 - 0.25).abs() < 1e-9);
        let series = [SeriesPoint {
            start: since,
            count: 1,
            failures: 0,
            p50: Some(Duration::from_millis(5)),
            p95: Some(Duration::from_millis(9)),
        }];
        let svg = render_marked("p", &series, since, until, LARGE, &events);
        assert_eq!(svg.matches("class=\"event\"").count(), 1);
        assert!(
            svg.contains("<title>deploy &quot;v1&quot; of service checkout at 04:13 UTC</title>"),
            "{svg}"
        );
    }

    fn plot() -> Plot {
        Plot {
            x: 0.0,
            y: 0.0,
            w: 100.0,
            h: 50.0,
        }
    }

    #[test]
    fn ticks_are_nice_and_two_or_three() {
        for (max, top, lines) in [
            (100.0, 100.0, vec![50.0, 100.0]),
            (120.0, 150.0, vec![50.0, 100.0, 150.0]),
            (7.3, 7.5, vec![2.5, 5.0, 7.5]),
            (0.42, 0.6, vec![0.2, 0.4, 0.6]),
            (2900.0, 3000.0, vec![1000.0, 2000.0, 3000.0]),
            (0.0, 1.0, vec![0.5, 1.0]),
        ] {
            let (t, l) = ticks(max);
            assert!((t - top).abs() < 1e-9, "top for {max}: {t}");
            assert_eq!(l.len(), lines.len(), "lines for {max}: {l:?}");
            for (a, b) in l.iter().zip(&lines) {
                assert!((a - b).abs() < 1e-9, "lines for {max}: {l:?}");
            }
        }
        // Any maximum fits under the top in two or three steps.
        for i in 1..2000 {
            let max = i as f64 * 0.37;
            let (top, l) = ticks(max);
            assert!(
                top >= max && (2..=3).contains(&l.len()),
                "{max}: {top} {l:?}"
            );
        }
        assert_eq!(tick_label(0.0), "0");
        assert_eq!(tick_label(0.25), "0.25 ms");
        assert_eq!(tick_label(250.0), "250 ms");
        assert_eq!(tick_label(1500.0), "1.5 s");
    }

    #[test]
    fn line_scales_into_the_plot() {
        // Four steps over 100 units: centres at 12.5, 37.5, 62.5, 87.5
        // (rounded to whole units, half to even); 0 is the bottom (50), the
        // top value the top (0).
        let d = line(
            &[Some(0.0), Some(10.0), Some(20.0), Some(5.0)],
            plot(),
            20.0,
        );
        assert_eq!(d, "M12 50L38 25L62 0L88 38");
    }

    #[test]
    fn line_leaves_gaps_where_steps_had_no_runs() {
        let d = line(
            &[Some(10.0), Some(10.0), None, Some(20.0), Some(0.0)],
            plot(),
            20.0,
        );
        assert_eq!(d, "M10 25L30 25M70 0L90 50");
        // Lone points become visible dots; an all-empty series draws nothing.
        let d = line(&[Some(10.0), None, None, Some(20.0)], plot(), 20.0);
        assert_eq!(d, "M12 25h0M88 0h0");
        let d = line(
            &[None, Some(10.0), None, Some(20.0), Some(20.0)],
            plot(),
            20.0,
        );
        assert_eq!(d, "M30 25h0M70 0L90 0");
        assert_eq!(line(&[None, None], plot(), 20.0), "");
        assert_eq!(line(&[], plot(), 20.0), "");
    }

    #[test]
    fn hour_marks_fall_on_the_hour() {
        let since = DateTime::parse_from_rfc3339("2024-05-01T10:30:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let until = since + chrono::TimeDelta::hours(24);
        let marks = hour_marks(since, until, 6);
        let labels: Vec<&str> = marks.iter().map(|(_, l)| l.as_str()).collect();
        assert_eq!(labels, ["12:00", "18:00", "00:00", "06:00"]);
        // 12:00 is 1.5h into 24h.
        assert!((marks[0].0 - 1.5 / 24.0).abs() < 1e-9);
        assert!(hour_marks(until, since, 6).is_empty());
    }

    fn point(min: i64, p50: Option<u64>, p95: Option<u64>) -> SeriesPoint {
        SeriesPoint {
            start: Utc::now() + chrono::TimeDelta::minutes(min),
            count: u64::from(p50.is_some()),
            failures: 0,
            p50: p50.map(Duration::from_millis),
            p95: p95.map(Duration::from_millis),
        }
    }

    #[test]
    fn render_draws_both_lines_or_says_no_data() {
        let until = Utc::now();
        let since = until - chrono::TimeDelta::hours(24);
        let series = vec![
            point(0, Some(10), Some(40)),
            point(30, None, None),
            point(60, Some(12), Some(90)),
            point(90, Some(11), Some(50)),
        ];
        let svg = render("a<b", &series, since, until, SMALL);
        assert!(
            svg.starts_with("<svg class=\"chart\" data-probe=\"a&lt;b\""),
            "{svg}"
        );
        assert!(svg.contains("<path class=\"p50\" fill=\"none\" stroke=\"#0969da\" d=\"M"));
        assert!(svg.contains("<path class=\"p95\" fill=\"none\" stroke=\"#bf8700\" d=\"M"));
        assert!(
            svg.contains(">100 ms</text>") && svg.contains(">50 ms</text>"),
            "{svg}"
        );
        assert!(svg.contains("<title>Latency of a&lt;b over the last 24 hours"));
        assert!(!svg.contains("no data yet"));

        let empty = render("x", &[point(0, None, None)], since, until, SMALL);
        assert!(empty.starts_with("<svg class=\"chart empty\""));
        assert!(empty.contains(">no data yet</text>") && !empty.contains("<path"));
    }
}
