//! Integration tests: configuration loading through `lookout check`, the
//! way an operator meets it: every error at once, each with its file, line
//! and key, exit status 2; and property tests that no input panics.

use std::path::PathBuf;
use std::process::Command;

use proptest::prelude::*;

fn lookout() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_lookout"));
    c.env_remove("LOOKOUT_CONFIG").env("NO_COLOR", "1");
    c
}

fn fixture(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(rel)
}

#[derive(Debug, serde::Deserialize)]
struct Diag {
    severity: String,
    file: String,
    line: usize,
    key: String,
    message: String,
}

#[test]
fn check_reports_every_error_with_file_line_and_key() {
    let out = lookout()
        .args(["check", "--json", "-c"])
        .arg(fixture("broken/lookout.yaml"))
        .output()
        .expect("run lookout check");
    assert_eq!(
        out.status.code(),
        Some(2),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json output");
    assert_eq!(v["valid"], false);
    let diags: Vec<Diag> = serde_json::from_value(v["diagnostics"].clone()).expect("diagnostics");
    let errors: Vec<&Diag> = diags.iter().filter(|d| d.severity == "error").collect();

    // (file suffix, line, key (or its parent), words in the message)
    let expected: &[(&str, usize, &str, &str)] = &[
        (
            "lookout.yaml",
            4,
            "storage.retention.raw",
            "invalid duration `14 days`",
        ),
        (
            "lookout.yaml",
            9,
            "defaults.timout",
            "did you mean `timeout`",
        ),
        (
            "lookout.yaml",
            21,
            "notifiers.ops-slack.slack.webhook",
            "`SLACK_WEBHOOK_URL_THAT_IS_NOT_SET` is not set",
        ),
        ("lookout.yaml", 29, "probes[0].expect.status", "6xx"),
        (
            "lookout.yaml",
            30,
            "probes[0].expect.body_matches",
            "invalid regex",
        ),
        ("lookout.yaml", 32, "probes[0].expect.json", "JSONPath"),
        ("lookout.yaml", 33, "probes[0].interval", "unknown unit `x`"),
        (
            "lookout.yaml",
            34,
            "probes[1].name",
            "duplicate probe name `web`",
        ),
        ("syntax.yaml", 4, "", "invalid YAML"),
        (
            "more.yaml",
            2,
            "probes[0].name",
            "invalid probe name `Bad_Name`",
        ),
        ("more.yaml", 6, "probes[1].http.url", "URL"),
        (
            "more.yaml",
            7,
            "probes[1].depends_on",
            "`missing-probe` names no probe",
        ),
        ("more.yaml", 9, "probes[2].tcp.port", ""),
        ("more.yaml", 10, "probes[2].depends_on", "dependency cycle"),
        (
            "more.yaml",
            15,
            "probes[3].alert.notify",
            "did you mean `ops-slack`",
        ),
        ("more.yaml", 16, "probes[4]", "exactly one kind key"),
        (
            "more.yaml",
            21,
            "probes[5].cron",
            "either `interval` or `cron`",
        ),
        ("more.yaml", 25, "probes[6].cron", "invalid cron expression"),
        (
            "more.yaml",
            28,
            "probes[7].timeout",
            "longer than the interval",
        ),
    ];
    let mut missing = Vec::new();
    for (file, line, key, words) in expected {
        let found = errors.iter().any(|d| {
            d.file.ends_with(file)
                && d.line == *line
                && (d.key == *key || d.key.starts_with(&format!("{key}.")))
                && d.message.contains(words)
        });
        if !found {
            missing.push(format!("{file}:{line} {key}: {words}"));
        }
    }
    let listing: Vec<String> = errors
        .iter()
        .map(|d| format!("{}:{} {}: {}", d.file, d.line, d.key, d.message))
        .collect();
    assert!(
        missing.is_empty(),
        "missing diagnostics:\n  {}\nreported:\n  {}",
        missing.join("\n  "),
        listing.join("\n  ")
    );
}

#[test]
fn check_prints_errors_for_people_and_exits_2() {
    let out = lookout()
        .args(["check", "-c"])
        .arg(fixture("broken/lookout.yaml"))
        .output()
        .expect("run lookout check");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("lookout.yaml:9:3: error: defaults.timout: unknown key `timout`; did you mean `timeout`?"),
        "{stderr}"
    );
    assert!(stderr.contains("configuration refused"), "{stderr}");
}

#[test]
fn missing_config_file_is_a_clear_error() {
    let out = lookout()
        .args(["check", "-c", "/nonexistent/lookout.yaml"])
        .output()
        .expect("run lookout check");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("/nonexistent/lookout.yaml: error: cannot read"),
        "{stderr}"
    );
}

#[test]
fn shipped_examples_are_valid() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("probes");
    let out = lookout()
        .args(["check", "-c"])
        .arg(dir.join("lookout.yaml"))
        .output()
        .expect("run lookout check");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Every kind's example file must be valid too, on its own.
    for entry in std::fs::read_dir(dir.join("examples")).expect("probes/examples") {
        let path = entry.expect("entry").path();
        let out = lookout()
            .args(["check", "-c"])
            .arg(&path)
            .env("API_TOKEN", "example-token")
            .env("PG_PASSWORD", "example-password")
            .output()
            .expect("run lookout check");
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn secrets_from_the_environment_never_reach_diagnostics() {
    let dir = tempfile::tempdir().expect("tempdir");
    let main = dir.path().join("lookout.yaml");
    std::fs::write(
        &main,
        "probes:\n  - name: a\n    http:\n      url: \"http://monitor:${PASS}@127.0.0.1:1/\"\n      bogus: 1\n",
    )
    .expect("write");
    let out = lookout()
        .args(["check", "-c"])
        .arg(&main)
        .env("PASS", "correct-horse-battery")
        .output()
        .expect("run lookout check");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(!stderr.contains("correct-horse-battery"), "{stderr}");
}

/// `LOOKOUT_LOCATION` is checked like the file's `location`, and the error
/// names the variable; `alert.locations` above 1 on SQLite is refused at
/// its line.
#[test]
fn check_reports_location_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let main = dir.path().join("lookout.yaml");
    std::fs::write(
        &main,
        "location: eu-west\nprobes:\n  - name: a\n    tcp: {host: 127.0.0.1, port: 1}\n    locations: [eu-west, us-east]\n",
    )
    .expect("write");
    let check = |location: &str| {
        lookout()
            .args(["check", "-c"])
            .arg(&main)
            .env("LOOKOUT_LOCATION", location)
            .output()
            .expect("run lookout check")
    };
    for ok in ["", "us-east"] {
        let out = check(ok);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{ok:?}: {stderr}");
    }
    let out = check("US East");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("lookout.yaml: error: the environment variable LOOKOUT_LOCATION: invalid location `US East`"),
        "{stderr}"
    );

    std::fs::write(
        &main,
        "probes:\n  - name: a\n    tcp: {host: 127.0.0.1, port: 1}\n    alert:\n      locations: 2\n",
    )
    .expect("write");
    let out = check("");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(
            "lookout.yaml:5:18: error: probes[0].alert.locations: 2 needs storage.postgres: \
             one instance on SQLite has one location"
        ),
        "{stderr}"
    );
}

/// A context for property tests: every variable is set, and nothing is
/// registered as a secret (random values such as `http` would otherwise be
/// masked in every later message of this test process).
fn quiet_cx() -> lookout::config::read::Cx {
    let mut cx = lookout::config::read::Cx::new(Box::new(|_| Some("proptest-env-0c1f7a".into())));
    cx.register_secrets = false;
    cx
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    /// Arbitrary text never panics the loader.
    #[test]
    fn loader_never_panics_on_arbitrary_text(text in "\\PC{0,400}") {
        let _ = lookout::config::load_str("fuzz.yaml", &text, quiet_cx());
    }

    /// Plausible configurations with random values in every slot never panic.
    #[test]
    fn loader_never_panics_on_plausible_configs(
        interval in "[0-9a-z<>= .:-]{0,8}",
        status in "[0-9xX, \\[\\]\"-]{0,10}",
        json_path in "[$.@\\[\\]*?a-z0-9'=<> ]{0,16}",
        value in "[<>=!~ a-z0-9.^$()\\[\\]*+-]{0,12}",
        latency in "[<>= 0-9a-z.]{0,10}",
        name in "[a-zA-Z0-9._ -]{0,12}",
        dep in "[a-z-]{0,6}",
        cron in "[*/0-9 a-z,-]{0,20}",
        url in "[a-z:/.0-9@${}?#%-]{0,30}",
    ) {
        let text = format!(
            "defaults:\n  interval: \"{interval}\"\n  alert: {{ after: 3 }}\nprobes:\n  - name: \"{name}\"\n    http:\n      url: \"{url}\"\n    expect:\n      status: \"{status}\"\n      latency: \"{latency}\"\n      json:\n        \"{json_path}\": \"{value}\"\n    depends_on: [\"{dep}\"]\n  - name: b\n    tcp: {{ host: h, port: 1 }}\n    cron: \"{cron}\"\n"
        );
        let _ = lookout::config::load_str("fuzz.yaml", &text, quiet_cx());
    }

    /// The expectation parsers never panic and round-trip what they accept.
    #[test]
    fn expectation_parsers_never_panic(text in "\\PC{0,40}") {
        let _ = lookout::expect::DurationCmp::parse(&text);
        let _ = lookout::expect::NumberCmp::parse(&text);
        let _ = lookout::expect::StatusMatcher::parse_item(&text);
        let _ = lookout::duration::parse(&text);
        if let Ok(m) = lookout::expect::ValueMatcher::from_json(&serde_json::Value::String(text.clone())) {
            let _ = m.matches(&serde_json::json!(text));
            let _ = m.matches(&serde_json::json!(42));
        }
    }
}

#[test]
fn outbox_settings_are_read_and_checked() {
    let cx = || lookout::config::read::Cx::new(Box::new(|_| None));
    let (cfg, _) = lookout::config::load_str(
        "o.yaml",
        "outbox: { max_age: 2h, retry_initial: 1s, retry_max: 1m }\n",
        cx(),
    )
    .expect("valid");
    assert_eq!(cfg.outbox.max_age, std::time::Duration::from_secs(7200));
    assert_eq!(cfg.outbox.retry_initial, std::time::Duration::from_secs(1));
    assert_eq!(cfg.outbox.retry_max, std::time::Duration::from_secs(60));
    let diags = lookout::config::load_str(
        "o.yaml",
        "outbox:\n  max_age: 10s\n  retry_initial: 1m\n  retry_max: 5s\n  retries: 3\n",
        cx(),
    )
    .expect_err("invalid");
    let text = diags.to_string();
    for want in [
        "o.yaml:2:12: error: outbox.max_age: notices must be kept at least 1m",
        "outbox.retry_max: must not be shorter than retry_initial",
        "o.yaml:5:3: error: outbox.retries: unknown key `retries`",
    ] {
        assert!(text.contains(want), "missing {want:?} in:\n{text}");
    }
}

/// `storage.buffer` bounds the results held while the database cannot be
/// written: a number in range is taken, anything else is an error naming
/// the line and key.
#[test]
fn storage_buffer_is_checked() {
    use lookout::config::{load_str, read::Cx};
    let load = |v: &str| {
        load_str(
            "lookout.yaml",
            &format!("storage:\n  buffer: {v}\nprobes: []\n"),
            Cx::new(Box::new(|_| None)),
        )
    };
    let (cfg, _) = load("5000").unwrap_or_else(|d| panic!("{d}"));
    assert_eq!(cfg.storage.buffer, 5000);
    let (cfg, _) = load_str("lookout.yaml", "probes: []\n", Cx::new(Box::new(|_| None)))
        .unwrap_or_else(|d| panic!("{d}"));
    assert_eq!(cfg.storage.buffer, lookout::config::compile::DEFAULT_BUFFER);
    for bad in ["5", "20000000", "lots"] {
        let err = match load(bad) {
            Ok(_) => panic!("{bad}: accepted"),
            Err(d) => d.to_string(),
        };
        assert!(
            err.contains("lookout.yaml:2:") && err.contains("storage.buffer"),
            "{bad}: {err}"
        );
    }
}

/// `scheduler.host_spacing`: host names (any case) or `*` to durations up
/// to an hour; anything else is an error with line and key.
#[test]
fn scheduler_host_spacing_is_checked() {
    use lookout::config::{load_str, read::Cx};
    let load = |v: &str| {
        load_str(
            "lookout.yaml",
            &format!("scheduler:\n  host_spacing:\n{v}probes: []\n"),
            Cx::new(Box::new(|_| None)),
        )
    };
    let (cfg, _) =
        load("    API.Vendor.example: 1s\n    \"*\": 100ms\n").unwrap_or_else(|d| panic!("{d}"));
    let spacing: Vec<(&str, u128)> = cfg
        .scheduler
        .host_spacing
        .iter()
        .map(|(h, d)| (h.as_str(), d.as_millis()))
        .collect();
    assert_eq!(spacing, [("*", 100), ("api.vendor.example", 1000)]);
    for (bad, key, words) in [
        (
            "    \"https://x.example\": 1s\n",
            "scheduler.host_spacing.https://x.example",
            "host name",
        ),
        (
            "    x.example: soon\n",
            "scheduler.host_spacing.x.example",
            "duration",
        ),
        (
            "    x.example: 2h\n",
            "scheduler.host_spacing.x.example",
            "at most 1h",
        ),
    ] {
        let err = match load(bad) {
            Ok(_) => panic!("{bad}: accepted"),
            Err(d) => d.to_string(),
        };
        assert!(
            err.contains("lookout.yaml:3:") && err.contains(key) && err.contains(words),
            "{bad}: {err}"
        );
    }
}
