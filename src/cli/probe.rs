//! `lookout probe NAME...` and `lookout probe --url URL`: run probes once
//! now, concurrently, and print each phase's timing and each expectation's
//! outcome. Exit 0 when all pass, 1 when any fails.

use std::sync::Arc;
use std::time::Duration;

use clap::Args;

use super::{load_config, output, Cli, Exit};
use crate::config::{AlertSpec, ProbeSpec, Schedule};
use crate::probe::{http, run_once, ProbeKind};
use crate::result::ProbeResult;

#[derive(Debug, Args)]
pub struct ProbeArgs {
    /// Names of configured probes to run.
    #[arg(required_unless_present = "url", conflicts_with = "url")]
    pub names: Vec<String>,
    /// Probe this URL with a default HTTP check (2xx/3xx), no configuration needed.
    #[arg(long)]
    pub url: Option<String>,
    /// Timeout for --url.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub timeout: Duration,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    crate::duration::parse(s)
}

pub async fn run(cli: &Cli, args: &ProbeArgs) -> Exit {
    let specs: Vec<Arc<ProbeSpec>> = match &args.url {
        Some(url) => match http::from_url(url) {
            Ok(spec) => vec![Arc::new(ProbeSpec {
                name: "adhoc".into(),
                description: None,
                kind: ProbeKind::Http(spec),
                schedule: Schedule::Interval(args.timeout),
                timeout: args.timeout,
                expect_latency: None,
                labels: Default::default(),
                depends_on: Vec::new(),
                alert: AlertSpec::default(),
                locations: Vec::new(),
                defined_at: "command line".into(),
            })],
            Err(e) => {
                eprintln!("lookout probe: --url {url}: {e}");
                return Exit::Invalid;
            }
        },
        None => {
            let cfg = match load_config(cli) {
                Ok(c) => c,
                Err(e) => return e,
            };
            let mut out = Vec::new();
            for name in &args.names {
                match cfg.probe(name) {
                    Some(p) => out.push(Arc::new(p.clone())),
                    None => {
                        let names: Vec<&str> = cfg.probes.iter().map(|p| p.name.as_str()).collect();
                        let hint = crate::config::read::suggest(name, &names)
                            .map(|s| format!("; did you mean `{s}`?"))
                            .unwrap_or_default();
                        eprintln!(
                            "lookout probe: no probe named `{name}` in {}{hint}",
                            cli.config.display()
                        );
                        return Exit::Invalid;
                    }
                }
            }
            out
        }
    };
    crate::probe::prepare(&specs).await;
    let mut set = tokio::task::JoinSet::new();
    for (i, spec) in specs.iter().enumerate() {
        let spec = spec.clone();
        set.spawn(async move { (i, run_once(&spec).await) });
    }
    let mut results: Vec<Option<ProbeResult>> = vec![None; specs.len()];
    while let Some(joined) = set.join_next().await {
        match joined {
            Ok((i, r)) => results[i] = Some(r),
            Err(e) => {
                eprintln!("lookout probe: a probe run ended abnormally: {e}");
                return Exit::Failed;
            }
        }
    }
    let results: Vec<(Arc<ProbeSpec>, ProbeResult)> = specs
        .into_iter()
        .zip(results)
        .filter_map(|(s, r)| r.map(|r| (s, r)))
        .collect();
    let all_ok = results.iter().all(|(_, r)| r.success);
    if cli.json {
        let v: Vec<serde_json::Value> = results
            .iter()
            .map(|(s, r)| {
                let mut v = serde_json::to_value(r).unwrap_or_default();
                if let Some(o) = v.as_object_mut() {
                    o.insert("kind".into(), s.kind.name().into());
                    o.insert("target".into(), s.kind.target().into());
                }
                v
            })
            .collect();
        println!("{}", serde_json::Value::Array(v));
    } else {
        let color = output::stdout_color();
        for (spec, r) in &results {
            print!("{}", render(spec, r, color));
        }
    }
    if all_ok {
        Exit::Ok
    } else {
        Exit::Failed
    }
}

/// One line of a flow's step: name, request, status, time and outcome.
fn step_line(step: &serde_json::Value, color: bool) -> String {
    let text = |k: &str| step.get(k).and_then(|v| v.as_str()).unwrap_or_default();
    let name = format!("step {}", text("name"));
    match text("outcome") {
        "skipped" => format!(
            "{name:<16}{}",
            output::paint(color, output::DIM, &format!("skipped: {}", text("reason")))
        ),
        outcome => {
            let status = step
                .get("status")
                .map(|v| format!("  {}", crate::expect::text_of(v)))
                .unwrap_or_default();
            let took = step
                .get("duration_ms")
                .and_then(|v| v.as_f64())
                .map(|ms| {
                    format!(
                        "  {}",
                        output::ms(std::time::Duration::from_secs_f64(ms / 1000.0))
                    )
                })
                .unwrap_or_default();
            let verdict = if outcome == "passed" {
                output::paint(color, output::GREEN, "passed")
            } else {
                output::paint(color, output::RED, "failed")
            };
            format!(
                "{name:<16}{} {}{status}{took}  {verdict}",
                text("method"),
                text("url")
            )
        }
    }
}

/// The human report of one run.
pub fn render(spec: &ProbeSpec, r: &ProbeResult, color: bool) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let verdict = if r.success {
        output::paint(color, output::GREEN, "PASS")
    } else {
        output::paint(color, output::RED, "FAIL")
    };
    let _ = writeln!(
        s,
        "{verdict} {}  {} {}",
        r.probe,
        spec.kind.name(),
        spec.kind.target()
    );
    for (phase, d) in &r.phases {
        let _ = writeln!(s, "  {:<12}{}", phase.as_str(), output::ms(*d));
    }
    let _ = writeln!(s, "  {:<12}{}", "total", output::ms(r.duration));
    if let Some(steps) = r.details.get("steps").and_then(|v| v.as_array()) {
        for step in steps {
            let _ = writeln!(s, "  {}", step_line(step, color));
        }
    }
    let mut details: Vec<String> = r
        .details
        .iter()
        .filter(|(_, v)| !v.is_array() && !v.is_object())
        .map(|(k, v)| format!("{k}={}", crate::expect::text_of(v)))
        .collect();
    details.sort();
    if !details.is_empty() {
        let _ = writeln!(
            s,
            "  {}",
            output::paint(color, output::DIM, &details.join("  "))
        );
    }
    let width = r
        .checks
        .iter()
        .map(|c| c.expectation.chars().count())
        .max()
        .unwrap_or(0);
    for c in &r.checks {
        let mark = if c.passed {
            output::paint(color, output::GREEN, "✓")
        } else {
            output::paint(color, output::RED, "✗")
        };
        let _ = writeln!(s, "  {mark} {:<width$}  got {}", c.expectation, c.observed);
    }
    if let Some(f) = &r.failure {
        let _ = writeln!(
            s,
            "  {}: {}",
            output::paint(color, output::RED, f.class.as_str()),
            f.message
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flow_steps_print_a_line_each() {
        let ran = serde_json::json!({"name": "login", "method": "POST", "url": "https://a.example/login",
            "status": 200, "duration_ms": 12.5, "outcome": "passed"});
        let line = step_line(&ran, false);
        assert!(
            line.starts_with("step login      POST https://a.example/login  200  "),
            "{line}"
        );
        assert!(line.ends_with("  passed"), "{line}");
        let skipped = serde_json::json!({"name": "logout", "outcome": "skipped",
            "reason": "${steps.login.token} was not captured"});
        assert_eq!(
            step_line(&skipped, false),
            "step logout     skipped: ${steps.login.token} was not captured"
        );
    }
}
