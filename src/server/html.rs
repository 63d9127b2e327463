//! Small pieces the HTML pages and SVG images are built from: escaping
//! ([`Esc`]) for every interpolated string, path-segment encoding for
//! links ([`path_segment`]), and how numbers, durations and times are shown
//! (uptime percentages, latencies, "3h 12m", ISO timestamps).
//!
//! Everything that comes from configuration or from a target (probe names,
//! labels, targets, failure messages) goes through [`Esc`] on its way into
//! markup; attributes are always double-quoted, so escaping `& < > " '`
//! makes any string inert in text and attribute positions alike.

use std::fmt::{self, Display, Write};
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};

/// Displays a string with `& < > " '` replaced by character references.
#[derive(Debug, Clone, Copy)]
pub struct Esc<'a>(pub &'a str);

impl Display for Esc<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut rest = self.0;
        while let Some(i) = rest.find(['&', '<', '>', '"', '\'']) {
            f.write_str(&rest[..i])?;
            f.write_str(match rest.as_bytes()[i] {
                b'&' => "&amp;",
                b'<' => "&lt;",
                b'>' => "&gt;",
                b'"' => "&quot;",
                _ => "&#39;",
            })?;
            rest = &rest[i + 1..];
        }
        f.write_str(rest)
    }
}

/// `s` escaped, as a new string.
#[cfg(test)]
pub fn esc(s: &str) -> String {
    Esc(s).to_string()
}

/// `s` percent-encoded as one URL path segment or query value: everything
/// but unreserved characters (`A-Z a-z 0-9 - . _ ~`) becomes `%XX`.
pub fn path_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// An uptime fraction as a percentage with two decimals, truncated so that
/// anything short of perfect never shows as `100.00%`: `99.93%`, `100%`;
/// `—` without data.
pub fn uptime(u: Option<f64>) -> String {
    match u {
        None => "—".to_string(),
        Some(u) if u >= 1.0 => "100%".to_string(),
        Some(u) => format!("{:.2}%", (u.max(0.0) * 10_000.0).floor() / 100.0),
    }
}

/// A latency the way people read it: `0.42 ms`, `3.2 ms`, `123 ms`,
/// `12.3 s`; `—` without data.
pub fn latency(d: Option<Duration>) -> String {
    let Some(d) = d else {
        return "—".to_string();
    };
    let ms = d.as_secs_f64() * 1000.0;
    if ms < 1.0 {
        format!("{ms:.2} ms")
    } else if ms < 10.0 {
        format!("{ms:.1} ms")
    } else if ms < 10_000.0 {
        format!("{ms:.0} ms")
    } else {
        format!("{:.1} s", ms / 1000.0)
    }
}

/// A span of time in its two largest units: `45s`, `12m 5s`, `3h 12m`,
/// `2d 4h`.
pub fn span(d: chrono::TimeDelta) -> String {
    let s = d.num_seconds().max(0);
    let (days, hours, mins, secs) = (s / 86_400, s / 3600 % 24, s / 60 % 60, s % 60);
    if days > 0 {
        format!("{days}d {hours}h")
    } else if hours > 0 {
        format!("{hours}h {mins}m")
    } else if mins > 0 {
        format!("{mins}m {secs}s")
    } else {
        format!("{secs}s")
    }
}

/// RFC 3339 in UTC with seconds, for `datetime` attributes.
pub fn iso(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// `2024-05-01 12:03:04 UTC`, for people.
pub fn human_time(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

/// `<time datetime=... class="rel">3h 12m ago</time>`: a moment relative to
/// `now`, which the page's script keeps current.
pub fn rel_time(t: DateTime<Utc>, now: DateTime<Utc>) -> String {
    format!(
        "<time class=\"rel\" datetime=\"{}\" title=\"{}\">{} ago</time>",
        iso(t),
        human_time(t),
        span(now - t)
    )
}

/// `<time datetime=...>2024-05-01 12:03:04 UTC</time>`.
pub fn abs_time(t: DateTime<Utc>) -> String {
    format!("<time datetime=\"{}\">{}</time>", iso(t), human_time(t))
}

/// A refreshable `<section id>` holding a table of `rows` under `headers`
/// (class `class`), or the `empty` sentence when there are no rows.
pub fn table_section<T>(
    out: &mut String,
    (id, title, class): (&str, &str, &str),
    headers: &[&str],
    empty: &str,
    rows: &[T],
    mut row: impl FnMut(&mut String, &T),
) {
    let _ = write!(
        out,
        "<section id=\"{id}\" data-refresh><h2>{}</h2>",
        Esc(title)
    );
    if rows.is_empty() {
        let _ = write!(out, "<p class=\"none\">{empty}</p></section>");
        return;
    }
    let _ = write!(
        out,
        "<div class=\"scroll\"><table class=\"{class}\"><thead><tr>"
    );
    for h in headers {
        let _ = write!(out, "<th scope=\"col\">{h}</th>");
    }
    out.push_str("</tr></thead><tbody>");
    for r in rows {
        row(out, r);
    }
    out.push_str("</tbody></table></div></section>");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_every_markup_character() {
        assert_eq!(
            esc(r#"<script>alert("x" & 'y')</script>"#),
            "&lt;script&gt;alert(&quot;x&quot; &amp; &#39;y&#39;)&lt;/script&gt;"
        );
        assert_eq!(esc("plain é"), "plain é");
        assert_eq!(esc(""), "");
    }

    #[test]
    fn path_segments_keep_only_unreserved_characters() {
        assert_eq!(path_segment("web-1.a_b~"), "web-1.a_b~");
        assert_eq!(path_segment("a/b c?&é"), "a%2Fb%20c%3F%26%C3%A9");
    }

    #[test]
    fn numbers_read_well() {
        assert_eq!(uptime(None), "—");
        assert_eq!(uptime(Some(1.0)), "100%");
        assert_eq!(uptime(Some(0.99999)), "99.99%");
        assert_eq!(uptime(Some(0.9993)), "99.93%");
        assert_eq!(uptime(Some(0.0)), "0.00%");
        assert_eq!(latency(None), "—");
        assert_eq!(latency(Some(Duration::from_micros(420))), "0.42 ms");
        assert_eq!(latency(Some(Duration::from_micros(3_240))), "3.2 ms");
        assert_eq!(latency(Some(Duration::from_micros(123_400))), "123 ms");
        assert_eq!(latency(Some(Duration::from_millis(12_345))), "12.3 s");
        assert_eq!(span(chrono::TimeDelta::seconds(45)), "45s");
        assert_eq!(span(chrono::TimeDelta::seconds(725)), "12m 5s");
        assert_eq!(span(chrono::TimeDelta::seconds(3 * 3600 + 720)), "3h 12m");
        assert_eq!(span(chrono::TimeDelta::hours(52)), "2d 4h");
        assert_eq!(span(chrono::TimeDelta::seconds(-5)), "0s");
    }
}
