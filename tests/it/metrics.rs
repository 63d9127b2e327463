//! `/metrics` against the running daemon: blackbox_exporter's families for
//! a passing and a failing http probe, Lookout's own families (the failing
//! probe's incident open and its email notice counted as delivered), and a
//! text that parses line by line.

use std::time::{Duration, Instant};

use crate::harness::process::free_port;
use crate::harness::smtp_server::SmtpServer;
use crate::harness::{http_get, http_target, start_daemon, Daemon};

/// GET `path`; `None` while the daemon is not listening yet.
fn get(port: u16, path: &str) -> Option<(String, String)> {
    let out = http_get(port, path)?;
    let (head, body) = out.split_once("\r\n\r\n")?;
    Some((head.to_string(), body.to_string()))
}

/// Every line is a comment (`# HELP name text`, `# TYPE name type`) or a
/// sample `name{label="value",...} number`.
fn assert_parses(text: &str) {
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# ") {
            let mut parts = rest.splitn(3, ' ');
            let (kw, name) = (parts.next().unwrap(), parts.next().unwrap_or(""));
            assert!(matches!(kw, "HELP" | "TYPE"), "bad comment {line:?}");
            assert!(valid_name(name), "bad name in {line:?}");
            if kw == "TYPE" {
                assert!(
                    matches!(parts.next(), Some("gauge" | "counter" | "histogram")),
                    "bad type in {line:?}"
                );
            }
            continue;
        }
        let (series, value) = line.rsplit_once(' ').expect("sample has a value");
        assert!(
            value.parse::<f64>().is_ok() || matches!(value, "+Inf" | "-Inf" | "NaN"),
            "bad value in {line:?}"
        );
        let (name, labels) = match series.split_once('{') {
            None => (series, ""),
            Some((n, rest)) => (n, rest.strip_suffix('}').expect("labels close")),
        };
        assert!(valid_name(name), "bad metric name in {line:?}");
        parse_labels(labels).unwrap_or_else(|| panic!("bad labels in {line:?}"));
    }
}

fn valid_name(n: &str) -> bool {
    let mut c = n.chars();
    c.next()
        .is_some_and(|f| f.is_ascii_alphabetic() || f == '_' || f == ':')
        && c.all(|ch| ch.is_ascii_alphanumeric() || ch == '_' || ch == ':')
}

/// `k="v",k2="v2"` with escapes; `None` if malformed.
fn parse_labels(s: &str) -> Option<Vec<(String, String)>> {
    let mut out = Vec::new();
    let mut rest = s;
    while !rest.is_empty() {
        let (k, after) = rest.split_once("=\"")?;
        if !valid_name(k) || k.contains(':') {
            return None;
        }
        let mut v = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            let (i, ch) = chars.next()?;
            match ch {
                '\\' => match chars.next()?.1 {
                    'n' => v.push('\n'),
                    c @ ('\\' | '"') => v.push(c),
                    _ => return None,
                },
                '"' => break i,
                c => v.push(c),
            }
        };
        out.push((k.to_string(), v));
        rest = &after[end + 1..];
        if let Some(r) = rest.strip_prefix(',') {
            rest = r;
        } else if !rest.is_empty() {
            return None;
        }
    }
    Some(out)
}

/// Scrapes until the exposition contains every one of `wants`; panics
/// with the last one after 20 s or when the daemon exits.
fn scrape_until(daemon: &mut Daemon, port: u16, wants: &[&str]) -> (String, String) {
    scrape_until_ok(daemon, port, |body| {
        let missing: Vec<_> = wants.iter().filter(|w| !body.contains(*w)).collect();
        if missing.is_empty() {
            Ok(())
        } else {
            Err(format!("still missing {missing:?}"))
        }
    })
}

/// Scrapes until `ok` accepts the exposition; panics with its last
/// complaint and the text after 20 s or when the daemon exits.
fn scrape_until_ok(
    daemon: &mut Daemon,
    port: u16,
    ok: impl Fn(&str) -> Result<(), String>,
) -> (String, String) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some((head, body)) = get(port, "/metrics") {
            match ok(&body) {
                Ok(()) => return (head, body),
                Err(why) => assert!(Instant::now() < deadline, "{why} after 20s in:\n{body}"),
            }
        } else {
            let exited = daemon.child.try_wait().expect("try_wait");
            assert!(exited.is_none(), "lookout run exited: {exited:?}");
            assert!(Instant::now() < deadline, "daemon not listening within 20s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The value of the sample named exactly `series` (with its labels).
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[test]
fn metrics_show_blackbox_families_for_the_running_daemon() {
    let dir = tempfile::tempdir().expect("tempdir");
    let target = http_target();
    let smtp = SmtpServer::plain();
    let refusing = free_port();
    let listen = free_port();
    let config = dir.path().join("lookout.yaml");
    std::fs::write(
        &config,
        format!(
            "storage:\n  sqlite: data/lookout.db\nserver:\n  listen: 127.0.0.1:{listen}\noutbox: {{ retry_initial: 10m, retry_max: 10m }}\nnotifiers:\n  mail:\n    email: {{ smtp: \"smtp://127.0.0.1:{}\", from: lookout@example.com, to: [ops@example.com] }}\n  gone:\n    email: {{ smtp: \"smtp://127.0.0.1:{refusing}\", from: lookout@example.com, to: [ops@example.com] }}\ndefaults:\n  interval: 300ms\n  timeout: 300ms\nprobes:\n  - name: web\n    http: {{ url: \"http://127.0.0.1:{target}/\" }}\n    labels: {{ team: core, \"app.tier\": front }}\n    expect: {{ status: 200 }}\n  - name: web-down\n    http: {{ url: \"http://127.0.0.1:{target}/down\" }}\n    expect: {{ status: 200 }}\n    alert: {{ after: 2, notify: [mail, gone] }}\n",
            smtp.port
        ),
    )
    .expect("write config");
    let mut daemon = start_daemon(&config, &[]);

    // The failing probe opens an incident; its notice is delivered to one
    // notifier and waits for a retry to the other.
    let (head, text) = scrape_until(
        &mut daemon,
        listen,
        &[
            "probe_success{probe=\"web\",kind=\"http\",app_tier=\"front\",team=\"core\"} 1\n",
            "probe_success{probe=\"web-down\",kind=\"http\"} 0\n",
            "lookout_probe_state{probe=\"web\",kind=\"http\",state=\"up\"} 1\n",
            "lookout_probe_state{probe=\"web-down\",kind=\"http\",state=\"down\"} 1\n",
            "lookout_incidents_open 1\n",
            "lookout_notifications_total{notifier=\"mail\",outcome=\"delivered\"} 1\n",
            // The other notifier's server refuses: retried (in 10 minutes),
            // so its notice is the one pending.
            "lookout_notifications_total{notifier=\"gone\",outcome=\"retried\"} 1\n",
            "lookout_outbox_notices{status=\"pending\"} 1\n",
        ],
    );
    assert_eq!(smtp.messages().len(), 1, "{}", smtp.server_log());
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: text/plain; version=0.0.4; charset=utf-8"),
        "{head}"
    );
    assert_parses(&text);
    for want in [
        "probe_http_status_code{probe=\"web\",kind=\"http\",app_tier=\"front\",team=\"core\"} 200\n",
        "probe_http_status_code{probe=\"web-down\",kind=\"http\"} 503\n",
        "probe_http_duration_seconds{probe=\"web\",kind=\"http\",app_tier=\"front\",team=\"core\",phase=\"connect\"} ",
        "probe_http_duration_seconds{probe=\"web\",kind=\"http\",app_tier=\"front\",team=\"core\",phase=\"processing\"} ",
        "probe_http_duration_seconds{probe=\"web\",kind=\"http\",app_tier=\"front\",team=\"core\",phase=\"transfer\"} ",
        "probe_duration_seconds{probe=\"web\",kind=\"http\",app_tier=\"front\",team=\"core\"} ",
        "lookout_probe_state{probe=\"web\",kind=\"http\",state=\"down\"} 0\n",
        "lookout_probe_state{probe=\"web-down\",kind=\"http\",state=\"pending\"} 0\n",
        "lookout_notifications_total{notifier=\"mail\",outcome=\"failed\"} 0\n",
        "lookout_notifications_total{notifier=\"mail\",outcome=\"retried\"} 0\n",
        "lookout_notifications_total{notifier=\"gone\",outcome=\"delivered\"} 0\n",
        "lookout_outbox_notices{status=\"failed\"} 0\n",
        "lookout_outbox_notices{status=\"expired\"} 0\n",
        "lookout_scrape_errors_total{family=\"lookout_outbox_notices\"} 0\n",
        "# TYPE lookout_db_write_seconds histogram\n",
        "lookout_db_write_seconds_bucket{le=\"+Inf\"} ",
        "lookout_results_total{probe=\"web\",outcome=\"success\",class=\"none\"} ",
        "lookout_results_total{probe=\"web-down\",outcome=\"failure\",class=\"expectation\"} ",
        "lookout_probe_duration_seconds_bucket{kind=\"http\",le=\"+Inf\"} ",
        "lookout_scheduler_lag_seconds_count ",
        "lookout_build_info{version=",
        "# TYPE lookout_results_written_total counter\n",
        "lookout_results_buffered ",
    ] {
        assert!(text.contains(want), "missing {want:?} in\n{text}");
    }
    // Batches of results were written, and each write was timed.
    scrape_until_ok(&mut daemon, listen, |text| {
        let written = value(text, "lookout_results_written_total").unwrap_or(0.0);
        let timed = value(text, "lookout_db_write_seconds_count").unwrap_or(0.0);
        let slow = value(text, "lookout_db_write_seconds_bucket{le=\"5\"}").unwrap_or(-1.0);
        if written > 0.0 && timed > 0.0 && slow == timed {
            Ok(())
        } else {
            Err(format!("written {written}, timed {timed}, under 5s {slow}"))
        }
    });
    // No URL, port or message leaks into the exposition.
    assert!(!text.contains(&format!("{target}")), "{text}");
    assert!(!text.contains("127.0.0.1"), "{text}");
}
