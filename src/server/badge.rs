//! Status badges (`/badge/{name}.svg`): status, uptime or latency of one
//! probe as a small SVG for READMEs, in the flat look shields.io made
//! common (grey label on the left, coloured value on the right).
//!
//! `?type=status` (the default) shows the state word in its colour,
//! `?type=uptime&window=24h|7d|30d` the uptime ("99.95%"), `?type=latency`
//! the 24-hour p95 ("123 ms"); `?label=` replaces the label (the probe's
//! name). Badges are public and may be cached for 30 seconds; an unknown
//! probe gets a 404 badge, a bad parameter a 400 with a message in words.

use axum::extract::{Path, RawQuery, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use chrono::{TimeDelta, Utc};

use super::html::{self, Esc};
use super::{pages, LiveState};

/// `/badge/{name}.svg` (public).
pub fn routes() -> Router<LiveState> {
    Router::new().route("/badge/{file}", get(badge))
}

/// What a badge shows, from its query string.
#[derive(Debug, Clone, PartialEq)]
enum Kind {
    Status,
    Uptime(&'static str, TimeDelta),
    Latency,
}

const WINDOWS: [(&str, TimeDelta); 4] = [
    ("1h", TimeDelta::hours(1)),
    ("24h", TimeDelta::hours(24)),
    ("7d", TimeDelta::days(7)),
    ("30d", TimeDelta::days(30)),
];

/// The badge's kind and optional label; an error in words for a bad
/// `type` or `window`.
fn parse(query: Option<&str>) -> Result<(Kind, Option<String>), String> {
    let (mut kind, mut window, mut label) = (None, None, None);
    for (k, v) in url::form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        match k.as_ref() {
            "type" => kind = Some(v.into_owned()),
            "window" => window = Some(v.into_owned()),
            "label" => label = Some(v.chars().take(40).collect::<String>()),
            _ => {}
        }
    }
    let window = match window.as_deref() {
        None => WINDOWS[1],
        Some(w) => WINDOWS
            .into_iter()
            .find(|(n, _)| *n == w)
            .ok_or_else(|| format!("unknown window `{w}`; use 1h, 24h, 7d or 30d"))?,
    };
    let kind = match kind.as_deref() {
        None | Some("status") => Kind::Status,
        Some("uptime") => Kind::Uptime(window.0, window.1),
        Some("latency") => Kind::Latency,
        Some(t) => {
            return Err(format!(
                "unknown badge type `{t}`; use status, uptime or latency"
            ))
        }
    };
    Ok((kind, label))
}

/// The colour of each state, the same as the status page's.
pub fn state_colour(state: &str) -> &'static str {
    match state {
        "up" => "#1a7f37",
        "down" => "#cf222e",
        "dependency" => "#bc4c00",
        "degraded" => "#bf8700",
        "maintenance" => "#8250df",
        _ => "#6e7781",
    }
}

fn uptime_colour(u: Option<f64>) -> &'static str {
    match u {
        None => "#6e7781",
        Some(u) if u >= 0.999 => "#1a7f37",
        Some(u) if u >= 0.99 => "#4d8a00",
        Some(u) if u >= 0.95 => "#bc4c00",
        Some(_) => "#cf222e",
    }
}

async fn badge(
    State(s): State<LiveState>,
    Path(file): Path<String>,
    RawQuery(q): RawQuery,
) -> Response {
    let Some(name) = file.strip_suffix(".svg") else {
        return svg_response(
            StatusCode::NOT_FOUND,
            &render("badge", "not found", "#6e7781"),
        );
    };
    let (kind, label) = match parse(q.as_deref()) {
        Ok(p) => p,
        Err(e) => {
            return (
                StatusCode::BAD_REQUEST,
                [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
                format!("{e}\n"),
            )
                .into_response()
        }
    };
    if !s.probes.load().iter().any(|p| p.name == name) {
        let svg = render(label.as_deref().unwrap_or(name), "unknown probe", "#6e7781");
        return svg_response(StatusCode::NOT_FOUND, &svg);
    }
    let label = label.unwrap_or_else(|| match &kind {
        Kind::Status => name.to_string(),
        Kind::Uptime(w, _) => format!("{name} uptime {w}"),
        Kind::Latency => format!("{name} p95"),
    });
    let (value, colour) = value(&s, name, &kind).await;
    svg_response(StatusCode::OK, &render(&label, &value, colour))
}

/// The value text and colour of a badge.
async fn value(s: &LiveState, name: &str, kind: &Kind) -> (String, &'static str) {
    let window = match kind {
        Kind::Status => {
            let state = pages::state_of(s.alerts.get(name).as_ref());
            return (state.to_string(), state_colour(state));
        }
        Kind::Uptime(_, w) => *w,
        Kind::Latency => TimeDelta::hours(24),
    };
    let Some(history) = &s.history else {
        return ("no data".to_string(), "#6e7781");
    };
    let now = Utc::now();
    let probe = name.to_string();
    match history
        .read(move |store| store.stats(&probe, now - window, now))
        .await
    {
        Ok(st) if st.count == 0 => ("no data".to_string(), "#6e7781"),
        Ok(st) => match kind {
            Kind::Latency => (html::latency(st.p95), "#0969da"),
            _ => (html::uptime(st.uptime), uptime_colour(st.uptime)),
        },
        Err(e) => {
            tracing::warn!(probe = name, error = %e, "badge: history unavailable");
            ("unavailable".to_string(), "#6e7781")
        }
    }
}

fn svg_response(status: StatusCode, svg: &str) -> Response {
    (
        status,
        [
            (header::CONTENT_TYPE, "image/svg+xml"),
            (header::CACHE_CONTROL, "max-age=30"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::CONTENT_SECURITY_POLICY, "default-src 'none'"),
        ],
        svg.to_string(),
    )
        .into_response()
}

/// Approximate advance of `c` in Verdana at 11px, in pixels (what
/// shields.io measures with); close enough to size the boxes.
fn char_width(c: char) -> f64 {
    match c {
        'i' | 'l' | 'j' | '\'' | '|' | '!' | '.' | ',' | ':' | ';' => 3.5,
        'f' | 't' | 'r' | 'I' | ' ' | '(' | ')' | '[' | ']' | '-' => 4.5,
        'm' | 'w' | 'M' | 'W' | '%' | '@' => 10.5,
        'A'..='Z' => 7.5,
        _ if c.is_ascii() => 6.6,
        _ => 8.0,
    }
}

fn text_width(s: &str) -> f64 {
    s.chars().map(char_width).sum::<f64>().ceil()
}

/// The badge SVG: `label` on grey, `value` on `colour`.
pub fn render(label: &str, value: &str, colour: &str) -> String {
    let lw = text_width(label) + 10.0;
    let vw = text_width(value) + 10.0;
    let w = lw + vw;
    let (l, v) = (Esc(label), Esc(value));
    format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"20\" role=\"img\" aria-label=\"{l}: {v}\">\
         <title>{l}: {v}</title>\
         <linearGradient id=\"s\" x2=\"0\" y2=\"100%\"><stop offset=\"0\" stop-color=\"#bbb\" stop-opacity=\".1\"/>\
         <stop offset=\"1\" stop-opacity=\".1\"/></linearGradient>\
         <clipPath id=\"r\"><rect width=\"{w}\" height=\"20\" rx=\"3\" fill=\"#fff\"/></clipPath>\
         <g clip-path=\"url(#r)\"><rect width=\"{lw}\" height=\"20\" fill=\"#555\"/>\
         <rect x=\"{lw}\" width=\"{vw}\" height=\"20\" fill=\"{colour}\"/>\
         <rect width=\"{w}\" height=\"20\" fill=\"url(#s)\"/></g>\
         <g fill=\"#fff\" text-anchor=\"middle\" font-family=\"Verdana,Geneva,DejaVu Sans,sans-serif\" font-size=\"11\">\
         <text x=\"{lx}\" y=\"15\" fill=\"#010101\" fill-opacity=\".3\">{l}</text><text x=\"{lx}\" y=\"14\">{l}</text>\
         <text x=\"{vx}\" y=\"15\" fill=\"#010101\" fill-opacity=\".3\">{v}</text><text x=\"{vx}\" y=\"14\">{v}</text>\
         </g></svg>",
        lx = lw / 2.0,
        vx = lw + vw / 2.0,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_picks_kind_window_and_label() {
        assert_eq!(parse(None).unwrap(), (Kind::Status, None));
        assert_eq!(
            parse(Some("type=uptime&window=7d")).unwrap().0,
            Kind::Uptime("7d", TimeDelta::days(7))
        );
        assert_eq!(
            parse(Some("type=uptime")).unwrap().0,
            Kind::Uptime("24h", TimeDelta::hours(24))
        );
        assert_eq!(
            parse(Some("type=latency&label=API")).unwrap(),
            (Kind::Latency, Some("API".into()))
        );
        assert!(parse(Some("type=speed"))
            .unwrap_err()
            .contains("unknown badge type `speed`"));
        assert!(parse(Some("type=uptime&window=2y"))
            .unwrap_err()
            .contains("unknown window `2y`"));
    }

    #[test]
    fn badge_is_sized_coloured_and_escaped() {
        let svg = render("<b>&\"x\"", "up", state_colour("up"));
        assert!(
            svg.contains("<title>&lt;b&gt;&amp;&quot;x&quot;: up</title>"),
            "{svg}"
        );
        assert!(!svg.contains("<b>"));
        assert!(svg.contains("fill=\"#1a7f37\""));
        // Longer values make wider badges.
        let w = |s: &str| -> f64 {
            let rest = s.split("width=\"").nth(1).unwrap();
            rest[..rest.find('"').unwrap()].parse().unwrap()
        };
        assert!(w(&render("web", "99.95%", "#000")) > w(&render("web", "up", "#000")));
        assert_eq!(uptime_colour(Some(1.0)), "#1a7f37");
        assert_eq!(uptime_colour(Some(0.5)), "#cf222e");
    }
}
