//! The status page, probe pages and badges against the running daemon: a
//! probe that is up, one that went down, one that never ran; uptime,
//! latency and charts once data exists; filters and groups without
//! JavaScript; failure messages on the probe page with no secret anywhere;
//! 404s; badges; hostile labels escaped.

use std::time::{Duration, Instant};

use crate::harness::process::free_port;
use crate::harness::{http_get, http_target, start_daemon, Daemon};

const SECRET: &str = "pg-s3cr3t-value";
const HOSTILE: &str = "<script>alert('x')</script>&\"";

/// GET `path`: status code, head (lower-cased) and body; `None` while the
/// daemon is not listening yet.
fn get(port: u16, path: &str) -> Option<(u16, String, String)> {
    let out = http_get(port, path)?;
    let (head, body) = out.split_once("\r\n\r\n")?;
    let status = head.split(' ').nth(1)?.parse().ok()?;
    Some((status, head.to_ascii_lowercase(), body.to_string()))
}

fn page(port: u16, path: &str) -> String {
    let (status, _, body) = get(port, path).expect("daemon answers");
    assert_eq!(status, 200, "{path}: {body}");
    body
}

/// The `<article class="probe" ...>` of `name`, or "" when absent.
fn article<'a>(page: &'a str, name: &str) -> &'a str {
    let Some(start) = page.find(&format!("<article class=\"probe\" id=\"probe-{name}\"")) else {
        return "";
    };
    let len = page[start..].find("</article>").unwrap_or(0);
    &page[start..start + len]
}

/// Polls `/` until `ready(page)` holds; panics after 20 seconds.
fn wait_for(daemon: &mut Daemon, port: u16, what: &str, ready: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match get(port, "/") {
            Some((200, _, body)) if ready(&body) => return body,
            Some((_, _, body)) => {
                assert!(Instant::now() < deadline, "{what} not within 20s:\n{body}")
            }
            None => {
                let exited = daemon.child.try_wait().expect("try_wait");
                assert!(exited.is_none(), "lookout run exited: {exited:?}");
                assert!(Instant::now() < deadline, "daemon not listening within 20s");
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn config(dir: &std::path::Path, listen: u16, target: u16) -> std::path::PathBuf {
    let path = dir.join("lookout.yaml");
    let yaml = format!(
        "storage:\n  sqlite: data/lookout.db\nserver:\n  listen: 127.0.0.1:{listen}\n\
         defaults:\n  interval: 300ms\n  timeout: 300ms\n  alert: {{ after: 2 }}\nprobes:\n\
         \x20 - name: web\n    http: {{ url: \"http://127.0.0.1:{target}/\", headers: {{ Authorization: \"Bearer ${{SECRET}}\" }} }}\n\
         \x20   labels: {{ team: core, note: {note:?} }}\n    expect: {{ status: 200 }}\n\
         \x20 - name: broken\n    http: {{ url: \"http://monitor:${{SECRET}}@127.0.0.1:{target}/down\" }}\n\
         \x20   labels: {{ team: pay }}\n    expect: {{ status: 200 }}\n\
         \x20 - name: later\n    http: {{ url: \"http://127.0.0.1:{target}/\" }}\n\
         \x20   cron: \"0 0 1 1 *\"\n    labels: {{ team: core }}\n",
        note = HOSTILE,
    );
    std::fs::write(&path, yaml).expect("write config");
    path
}

#[test]
fn status_page_probe_pages_and_badges_on_the_running_daemon() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (listen, target) = (free_port(), http_target());
    let mut daemon = start_daemon(&config(dir.path(), listen, target), &[("SECRET", SECRET)]);

    let home = wait_for(
        &mut daemon,
        listen,
        "web up with a chart, broken down with an incident",
        |p| {
            let web = article(p, "web");
            web.contains("data-state=\"up\"")
                && web.contains("<path class=\"p50\" fill=\"none\" stroke=\"#0969da\" d=\"M")
                && article(p, "broken").contains("data-state=\"down\"")
                && p.contains("<tr class=\"incident\" data-probe=\"broken\" data-open=\"true\">")
        },
    );
    let (web, broken, later) = (
        article(&home, "web"),
        article(&home, "broken"),
        article(&home, "later"),
    );
    assert!(web.contains("<td data-window=\"24h\">100%</td>"), "{web}");
    assert!(web.contains("<td data-window=\"30d\">100%</td>"), "{web}");
    assert!(
        web.contains("<td data-latency=\"current\">")
            && !web.contains("data-latency=\"current\">—")
    );
    assert!(web.contains("<path class=\"p95\" fill=\"none\" stroke=\"#bf8700\" d=\"M"));
    assert!(
        broken.contains("<td data-window=\"24h\">0.00%</td>"),
        "{broken}"
    );
    assert!(broken.contains("expectation"), "{broken}");
    assert!(later.contains("data-state=\"pending\""), "{later}");
    assert!(later.contains("<td data-window=\"24h\">—</td>") && later.contains("no data yet"));
    for (state, n) in [("up", 1), ("down", 1), ("pending", 1)] {
        let count = format!("<span class=\"count\" data-state=\"{state}\">{n}</span>");
        assert!(home.contains(&count), "{count}");
    }
    // The hostile label is inert; the secret is nowhere.
    assert!(!home.contains("<script>alert"), "raw label markup");
    assert!(home.contains("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;&amp;&quot;"));
    assert!(!home.contains(SECRET));

    // Filters and groups, without JavaScript.
    let down = page(listen, "/?state=down");
    assert!(!article(&down, "broken").is_empty() && article(&down, "web").is_empty());
    let core = page(listen, "/?label=team:core");
    assert!(!article(&core, "web").is_empty() && !article(&core, "later").is_empty());
    assert!(article(&core, "broken").is_empty());
    let grouped = page(listen, "/?group=team");
    let (h_core, h_pay) = (
        grouped
            .find("<h2 class=\"group\">team: core</h2>")
            .expect("core group"),
        grouped
            .find("<h2 class=\"group\">team: pay</h2>")
            .expect("pay group"),
    );
    let at = |name: &str| grouped.find(&format!("id=\"probe-{name}\"")).expect(name);
    assert!(h_core < at("web") && at("web") < h_pay && h_pay < at("broken"));

    // The probe page: failed results with their messages, no secret.
    let detail = page(listen, "/probes/broken");
    assert!(detail
        .contains("<article class=\"probe-detail\" data-probe=\"broken\" data-state=\"down\">"));
    assert!(detail.contains("<tr class=\"result\" data-ok=\"false\">"));
    assert!(detail.contains("503"), "no failure message:\n{detail}");
    assert!(detail.contains("<tr class=\"incident\" data-probe=\"broken\""));
    assert!(
        detail.contains("http://monitor:***@127.0.0.1:"),
        "password not masked:\n{detail}"
    );
    for path in ["/probes/web", "/probes/broken", "/probes/later", "/"] {
        let body = page(listen, path);
        assert!(!body.contains(SECRET), "secret on {path}");
    }
    let web_detail = page(listen, "/probes/web");
    assert!(web_detail.contains("<tr class=\"result\" data-ok=\"true\">"));
    assert!(web_detail.contains("<td data-window=\"1h\" data-stat=\"uptime\">100%</td>"));

    let (status, head, body) = get(listen, "/probes/nope").expect("answer");
    assert_eq!(status, 404);
    assert!(head.contains("content-type: text/html"), "{head}");
    assert!(body.contains("No probe is named `nope`"));

    // Badges.
    let (status, head, svg) = get(listen, "/badge/web.svg").expect("badge");
    assert_eq!(status, 200);
    assert!(head.contains("content-type: image/svg+xml"), "{head}");
    assert!(head.contains("cache-control: max-age=30"), "{head}");
    assert!(svg.contains("<title>web: up</title>"), "{svg}");
    let (_, _, svg) = get(listen, "/badge/broken.svg").expect("badge");
    assert!(svg.contains("<title>broken: down</title>"), "{svg}");
    let (_, _, svg) = get(listen, "/badge/web.svg?type=uptime&window=30d").expect("badge");
    assert!(svg.contains("<title>web uptime 30d: 100%</title>"), "{svg}");
    let (_, _, svg) = get(listen, "/badge/web.svg?type=latency").expect("badge");
    assert!(
        svg.contains("<title>web p95: ") && svg.contains(" ms</title>"),
        "{svg}"
    );
    let (status, _, svg) = get(listen, "/badge/nope.svg").expect("badge");
    assert_eq!(status, 404);
    assert!(svg.contains("unknown probe"));

    // Assets.
    let (status, head, css) = get(listen, "/assets/style.css").expect("css");
    assert_eq!(status, 200);
    assert!(head.contains("content-type: text/css"), "{head}");
    assert!(css.contains("--down: #cf222e"));
    let (status, head, _) = get(listen, "/assets/app.js").expect("js");
    assert_eq!(status, 200);
    assert!(head.contains("content-type: text/javascript"), "{head}");
}

/// The script: the filter box hides cards as one types, and the
/// auto-refresh replaces the probe list (keeping the filter) without a
/// console error.
#[test]
fn script_filters_as_you_type_and_refreshes_the_list() {
    use crate::harness::browser::{Browser, DESKTOP};
    let dir = tempfile::tempdir().expect("tempdir");
    let (listen, target) = (free_port(), http_target());
    let mut daemon = start_daemon(&config(dir.path(), listen, target), &[("SECRET", SECRET)]);
    wait_for(&mut daemon, listen, "web up", |p| {
        article(p, "web").contains("data-state=\"up\"")
    });
    let mut browser = Browser::launch();
    browser.open(&format!("http://127.0.0.1:{listen}/"), DESKTOP);
    let shown = "[...document.querySelectorAll('article.probe')].filter(a => !a.hidden).map(a => a.dataset.probe)";
    let typed = browser.eval(&format!(
        "(() => {{ const f = document.getElementById('filter'); f.value = 'BROK'; \
         f.dispatchEvent(new Event('input')); document.getElementById('probes').dataset.old = '1'; \
         return {shown}; }})()"
    ));
    assert_eq!(typed, serde_json::json!(["broken"]));
    browser.fast_forward(31_000);
    let after = browser.eval(&format!(
        "({{ old: document.getElementById('probes').dataset.old || null, shown: {shown}, \
           cards: document.querySelectorAll('article.probe').length }})"
    ));
    assert_eq!(
        after,
        serde_json::json!({"old": null, "shown": ["broken"], "cards": 3}),
        "the list was not refreshed, or the filter was lost"
    );
    let problems = browser.problems();
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
