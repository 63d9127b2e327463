//! Integration tests: live reload of `lookout run` (SIGHUP, a changed
//! file, a Kubernetes-style symlink swap, a storm of changes with a bad
//! configuration in the middle). Each asserts what an operator relies on:
//! unchanged probes keep their schedule and their open incident, removed
//! probes' incidents are closed as `removed` with one notice, added probes
//! start, and a refused configuration changes nothing but says why.

use std::time::Duration;

use tokio::time::Instant;

use crate::harness::daemon::{free_port, notices, Daemon};
use crate::harness::http_target_with;
use crate::harness::recorder::Recorder;

/// What every test here starts from: a webhook receiver, a healthy HTTP
/// target, a folder with a configuration path, a free port for Lookout.
struct Setup {
    rec: Recorder,
    hook: String,
    ok: u16,
    dir: tempfile::TempDir,
    cfg: std::path::PathBuf,
    port: u16,
}

impl Setup {
    async fn new() -> Setup {
        let rec = Recorder::start().await;
        let hook = rec.url("/hook");
        let dir = tempfile::tempdir().expect("tempdir");
        Setup {
            hook,
            rec,
            ok: http_target_with(|_, _| true),
            cfg: dir.path().join("lookout.yaml"),
            dir,
            port: free_port(),
        }
    }
}

/// The head of a configuration: database, server, a webhook notifier, and
/// 200 ms timeouts.
fn head(port: u16, hook: &str) -> String {
    format!(
        "storage: {{ sqlite: lookout.db }}\nserver: {{ listen: \"127.0.0.1:{port}\" }}\nnotifiers:\n  hook:\n    webhook: {{ url: \"{hook}\" }}\ndefaults: {{ timeout: 200ms }}\nprobes:\n"
    )
}

fn http_probe(name: &str, port: u16, every: &str, alert: bool) -> String {
    let alert = if alert {
        "    alert: { after: 1, notify: [hook] }\n"
    } else {
        ""
    };
    format!("  - name: {name}\n    http: {{ url: \"http://127.0.0.1:{port}/{name}\" }}\n    interval: {every}\n{alert}")
}

/// The largest distance, in ms, of `starts` from the grid of `every_ms`
/// through the first of them (circular).
fn off_grid(starts: &[i64], every_ms: i64) -> i64 {
    starts
        .iter()
        .map(|s| {
            let r = (s - starts[0]).rem_euclid(every_ms);
            r.min(every_ms - r)
        })
        .max()
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_adds_changes_and_removes_probes_keeping_schedules_and_incidents() {
    let Setup {
        rec,
        hook,
        ok,
        dir: _dir,
        cfg,
        port,
    } = Setup::new().await;
    let bad = http_target_with(|_, _| false);
    let v1 = format!(
        "{}{}{}{}{}",
        head(port, &hook),
        http_probe("steady", ok, "500ms", false),
        http_probe("down", bad, "500ms", true),
        http_probe("gone", bad, "500ms", true),
        http_probe("changed", ok, "500ms", false),
    );
    std::fs::write(&cfg, v1).expect("write v1");
    let mut d = Daemon::start(&cfg, port);
    // Both failing probes opened an incident and told the webhook.
    let opened = notices(&rec, 2).await;
    let mut probes: Vec<&str> = opened.iter().map(|n| n.probe.as_str()).collect();
    probes.sort_unstable();
    assert_eq!(probes, ["down", "gone"]);
    d.wait_results("steady", 3).await;

    // v2: `gone` removed, `added` added, `changed` every 700 ms, the rest
    // the same but moved around in the file.
    let v2 = format!(
        "{}{}\n\n{}{}{}",
        head(port, &hook),
        http_probe("changed", ok, "700ms", false),
        http_probe("added", ok, "500ms", false),
        http_probe("down", bad, "500ms", true),
        http_probe("steady", ok, "500ms", false),
    );
    // Written in place (the watcher reloads it); the SIGHUP that follows
    // finds nothing new or reloads it first, whichever comes first.
    std::fs::write(&cfg, v2).expect("write v2");
    d.signal("-HUP");
    let line = d.log_line(&["configuration reloaded"], 10).await;
    for want in ["added=1", "changed=1", "removed=1", "unchanged=2"] {
        assert!(line.contains(want), "{line}");
    }

    // One notice closes the removed probe's incident, and says why.
    let all = notices(&rec, 3).await;
    let closed = &all[2];
    assert_eq!(closed.probe, "gone");
    assert_eq!(closed.kind, lookout::notify::NoticeKind::Resolved);
    assert_eq!(closed.state, "removed");
    d.wait_results("added", 3).await;
    let steady_before = d.results().iter().filter(|(p, _)| p == "steady").count();
    d.wait_results("steady", steady_before + 4).await;

    // `down` keeps its one open incident (not reopened, not re-announced);
    // `gone`'s is closed as removed.
    let mut incidents = d.incidents();
    incidents.sort();
    assert_eq!(
        incidents,
        [
            ("down".to_string(), false, None),
            ("gone".to_string(), true, Some("removed".to_string())),
        ],
        "{incidents:?}"
    );
    assert_eq!(rec.requests().len(), 3, "a notice was repeated");

    // `steady` never left its 500 ms grid (a restarted task would start on
    // a new one); `gone` stopped; the API shows the new set.
    let results = d.results();
    let steady: Vec<i64> = results
        .iter()
        .filter(|(p, _)| p == "steady")
        .map(|(_, t)| *t)
        .collect();
    assert!(off_grid(&steady, 500) <= 60, "{steady:?}");
    let api = d.get("/api/v1/probes");
    assert!(
        api.contains("\"added\"") && !api.contains("\"gone\""),
        "{api}"
    );
    let metrics = d.get("/metrics");
    assert!(
        metrics.contains("lookout_config_last_reload_successful 1"),
        "{metrics}"
    );
    assert!(
        !metrics.contains("probe=\"gone\""),
        "removed probe still in /metrics"
    );
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_reload_keeps_the_running_configuration_and_says_why() {
    let Setup {
        rec: _rec,
        hook,
        ok,
        dir: _dir,
        cfg,
        port,
    } = Setup::new().await;
    let good = format!(
        "{}{}",
        head(port, &hook),
        http_probe("steady", ok, "300ms", false)
    );
    std::fs::write(&cfg, &good).expect("write");
    let mut d = Daemon::start(&cfg, port);
    d.wait_results("steady", 2).await;

    // An unknown key on line 9: refused with file, line and key.
    std::fs::write(&cfg, format!("{good}    intervall: 1s\n")).expect("write bad");
    let line = d.log_line(&["lookout.yaml:", "intervall"], 10).await;
    assert!(line.contains("ERROR"), "{line}");
    d.log_line(&["configuration reload refused"], 5).await;
    let ready = d.get("/readyz");
    assert!(ready.contains("200 OK"), "{ready}");
    assert!(
        ready.contains("reload refused") && ready.contains("intervall"),
        "{ready}"
    );
    let metrics = d.get("/metrics");
    assert!(
        metrics.contains("lookout_config_last_reload_successful 0"),
        "{metrics}"
    );
    assert!(
        metrics.contains("lookout_config_reloads_total{result=\"failure\"} 1"),
        "{metrics}"
    );
    // The old configuration keeps probing.
    let n = d.results().len();
    d.wait_results("steady", n + 3).await;

    // Put back as it was: the running configuration again, so the
    // refusal is over.
    std::fs::write(&cfg, &good).expect("write the original back");
    d.log_line(&["configuration reloaded", "unchanged=1"], 10)
        .await;
    assert!(d.get("/readyz").ends_with("ready\n"));

    // Fixed with a change: accepted, and /readyz stays plain.
    std::fs::write(&cfg, format!("{good}    intervall: 1s\n")).expect("write bad again");
    d.log_line(&["configuration reload refused"], 10).await;
    std::fs::write(
        &cfg,
        format!("{good}{}", http_probe("more", ok, "300ms", false)),
    )
    .expect("write fixed");
    d.log_line(&["configuration reloaded", "added=1"], 10).await;
    assert!(d.get("/readyz").ends_with("ready\n"));
    d.wait_results("more", 1).await;
    d.stop().await;
}

/// A ConfigMap volume: `lookout.yaml -> ..data/lookout.yaml`, `..data ->
/// ..v1`; Kubernetes updates it by writing `..v2` and renaming a new
/// `..data` symlink over the old one. The file Lookout was started with
/// never changes as a path.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kubernetes_configmap_symlink_swap_is_followed() {
    use std::os::unix::fs::symlink;
    let Setup {
        rec: _rec,
        hook,
        ok,
        dir,
        port,
        ..
    } = Setup::new().await;
    let root = dir.path().join("config");
    let v1 = root.join("..v1");
    std::fs::create_dir_all(&v1).expect("mkdir");
    let data_dir = dir.path().join("data");
    std::fs::create_dir_all(&data_dir).expect("mkdir");
    // The database lives outside the ConfigMap (which is read only).
    let text = |probes: String| {
        format!(
            "{}{probes}",
            head(port, &hook).replace(
                "sqlite: lookout.db",
                &format!("sqlite: \"{}\"", data_dir.join("lookout.db").display())
            )
        )
    };
    std::fs::write(
        v1.join("lookout.yaml"),
        text(http_probe("one", ok, "300ms", false)),
    )
    .expect("write v1");
    symlink("..v1", root.join("..data")).expect("symlink");
    symlink("..data/lookout.yaml", root.join("lookout.yaml")).expect("symlink");

    let mut d = Daemon::start(&root.join("lookout.yaml"), port);
    d.db = data_dir.join("lookout.db");
    d.wait_results("one", 1).await;

    let v2 = root.join("..v2");
    std::fs::create_dir_all(&v2).expect("mkdir");
    std::fs::write(
        v2.join("lookout.yaml"),
        text(format!(
            "{}{}",
            http_probe("one", ok, "300ms", false),
            http_probe("two", ok, "300ms", false)
        )),
    )
    .expect("write v2");
    symlink("..v2", root.join("..data_tmp")).expect("symlink");
    std::fs::rename(root.join("..data_tmp"), root.join("..data")).expect("swap");
    let line = d
        .log_line(&["configuration reloaded", "file change"], 10)
        .await;
    assert!(
        line.contains("added=1") && line.contains("unchanged=1"),
        "{line}"
    );
    d.wait_results("two", 1).await;
    d.stop().await;
}

/// 100 changes in 10 s, SIGHUP after every fifth, one of them a broken
/// file: the daemon stays up, refuses the broken one, ends on the last
/// configuration, and the probe present in every version kept its schedule
/// throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_storm_with_a_bad_configuration_in_the_middle() {
    let Setup {
        rec: _rec,
        hook,
        ok,
        dir: _dir,
        cfg,
        port,
    } = Setup::new().await;
    let version = |i: usize| {
        format!(
            "{}{}{}",
            head(port, &hook),
            http_probe("steady", ok, "400ms", false),
            http_probe(&format!("v{}", i % 7), ok, "300ms", false),
        )
    };
    std::fs::write(&cfg, version(0)).expect("write");
    let mut d = Daemon::start(&cfg, port);
    d.wait_results("steady", 2).await;
    let started = Instant::now();
    for i in 1..=100 {
        if i == 50 {
            std::fs::write(&cfg, "probes: [ { broken\n").expect("write bad");
        } else {
            std::fs::write(&cfg, version(i)).expect("write");
        }
        if i % 5 == 0 {
            d.signal("-HUP");
        }
        tokio::time::sleep_until(started + Duration::from_millis(100 * i as u64)).await;
    }
    // The last version (v{100 % 7} = v2) is what runs.
    d.log_line(&["configuration reloaded"], 10).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let api = d.get("/api/v1/probes");
        if api.contains("\"v2\"") && !api.contains("\"v1\"") && !api.contains("\"v3\"") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "final configuration not in force: {api}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let metrics = d.get("/metrics");
    assert!(
        metrics.contains("lookout_config_last_reload_successful 1"),
        "{metrics}"
    );
    assert!(
        !metrics.contains("lookout_config_reloads_total{result=\"failure\"} 0"),
        "the broken file was never refused: {metrics}"
    );
    assert!(d.get("/readyz").ends_with("ready\n"));
    let steady: Vec<i64> = d
        .results()
        .iter()
        .filter(|(p, _)| p == "steady")
        .map(|(_, t)| *t)
        .collect();
    assert!(steady.len() >= 25, "{}", steady.len());
    assert!(
        off_grid(&steady, 400) <= 60,
        "steady left its schedule: {steady:?}"
    );
    d.stop().await;
}
