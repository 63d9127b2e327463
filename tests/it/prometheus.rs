//! A real Prometheus (Debian's `prometheus`) scrapes a running `lookout run`
//! every second with the bearer token `server.token` requires, and its
//! query API returns `probe_success` for each probe, with the right value
//! and the `probe` and `kind` labels: the exposition parses, and access
//! control works with Prometheus's own `authorization` settings.

use std::time::Duration;

use crate::harness::process::free_port;
use crate::harness::prometheus::{self, Job, PrometheusServer};
use crate::harness::{http_get, http_target, start_daemon};

const TOKEN: &str = "prom-scrape-token-5f2c9a";

#[test]
fn prometheus_scrapes_probe_success_with_a_bearer_token() {
    let Some(binary) = prometheus::binary() else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let target = http_target();
    let refusing = free_port();
    let listen = free_port();
    let config = dir.path().join("lookout.yaml");
    std::fs::write(
        &config,
        format!(
            "storage: {{ sqlite: lookout.db }}\nserver:\n  listen: 127.0.0.1:{listen}\n  token: ${{SCRAPE_TOKEN}}\ndefaults:\n  interval: 250ms\n  timeout: 250ms\nprobes:\n  - name: web\n    http: {{ url: \"http://127.0.0.1:{target}/\" }}\n    labels: {{ team: core }}\n  - name: refused\n    tcp: {{ host: 127.0.0.1, port: {refusing} }}\n"
        ),
    )
    .expect("write config");
    let mut daemon = start_daemon(&config, &[("SCRAPE_TOKEN", TOKEN)]);
    // The daemon listens, and /metrics needs the token.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let refused = loop {
        if let Some(answer) = http_get(listen, "/metrics") {
            break answer;
        }
        let exited = daemon.child.try_wait().expect("try_wait");
        assert!(exited.is_none(), "lookout run exited: {exited:?}");
        assert!(std::time::Instant::now() < deadline, "daemon not listening");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(refused.starts_with("HTTP/1.1 401"), "{refused}");

    let prom = PrometheusServer::start(
        &binary,
        &[Job {
            name: "lookout".into(),
            port: listen,
            token: Some(TOKEN.into()),
        }],
    );

    // The scrape itself succeeded: the exposition parsed and auth passed.
    let up = prom.wait_for("up{job=\"lookout\"}", Duration::from_secs(20), |s| {
        s.len() == 1 && s[0].value == 1.0
    });
    assert_eq!(
        up[0].label("instance"),
        Some(&*format!("127.0.0.1:{listen}"))
    );

    // One series per probe, with its value, probe and kind (and labels).
    let series = prom.wait_for("probe_success", Duration::from_secs(20), |s| s.len() == 2);
    let web = series
        .iter()
        .find(|s| s.label("probe") == Some("web"))
        .unwrap_or_else(|| panic!("no series for web: {series:?}"));
    assert_eq!(web.value, 1.0, "{web:?}");
    assert_eq!(web.label("kind"), Some("http"));
    assert_eq!(web.label("team"), Some("core"));
    assert_eq!(web.label("job"), Some("lookout"));
    let refused = series
        .iter()
        .find(|s| s.label("probe") == Some("refused"))
        .unwrap_or_else(|| panic!("no series for refused: {series:?}"));
    assert_eq!(refused.value, 0.0, "{refused:?}");
    assert_eq!(refused.label("kind"), Some("tcp"));

    // Histograms parse too: Prometheus can compute a quantile from ours.
    let q = prom.wait_for(
        "histogram_quantile(0.5, sum by (le) (lookout_probe_duration_seconds_bucket))",
        Duration::from_secs(10),
        |s| s.len() == 1 && s[0].value.is_finite(),
    );
    assert!(q[0].value >= 0.0, "{q:?}");
    // The token never shows in Prometheus's log.
    assert!(!prom.log().contains(TOKEN));
}
