//! The status page in headless Chromium: a running daemon with an up, a
//! down and a pending probe renders each with its state, a chart and the
//! right summary counts; the filter box, each probe's page and the 30s
//! auto-refresh work; nothing logs a console error. Screenshots at desktop
//! and phone size show the state colours and no horizontal overflow, and
//! the same check fails on the page without its stylesheet. A self-test
//! proves the harness sees console errors, exceptions, colours, blank
//! pages, overflow and timers, so those checks cannot pass vacuously.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::harness::browser::{save_artifact, serve, Browser, Screenshot, DESKTOP, PHONE};
use crate::harness::process::free_port;
use crate::harness::{http_get, http_target, start_daemon, Daemon};

/// The state colours of the DOM contract, fixed so pixels can be counted.
const UP: &str = "#1a7f37";
const DOWN: &str = "#cf222e";
/// Per-channel tolerance for antialiased edges.
const TOLERANCE: u8 = 8;
/// At least this many pixels of a state's colour: a 6px border or a pill
/// is hundreds; a stray antialiased glyph is a few.
const MIN_STATE_PIXELS: usize = 150;

#[test]
fn status_page_shows_every_probe_state_chart_and_colours_in_chromium() {
    let dir = tempfile::tempdir().expect("tempdir");
    let listen = free_port();
    let mut daemon = start_daemon(&three_probes(dir.path(), listen), &[]);
    wait_for_results(&mut daemon, listen);
    let base = format!("http://127.0.0.1:{listen}");
    let mut browser = Browser::launch();

    screenshot_check_fails_without_css(&mut browser, &base);
    desktop_shows_probes_and_filters(&mut browser, &base);
    probe_pages_fit_a_phone(&mut browser, &base);
    status_page_fits_a_phone(&mut browser, &base);
    auto_refresh_replaces_the_list(&mut browser);

    let problems = browser.problems();
    assert!(
        problems.is_empty(),
        "the pages logged problems in Chromium:\n{}",
        problems.join("\n")
    );
}

/// Negative control: without its stylesheet the page loses its state
/// colours, and the screenshot check says so.
fn screenshot_check_fails_without_css(browser: &mut Browser, base: &str) {
    browser.block_urls(&["*/assets/style.css"]);
    browser.open(&format!("{base}/"), DESKTOP);
    let unstyled = browser.screenshot();
    let path = unstyled.save("status-unstyled.png");
    assert!(
        states_shown(&unstyled).is_err(),
        "the screenshot check passed a page without CSS: {}",
        path.display()
    );
    browser.take_problems();
    browser.block_urls(&[]);
}

/// At 1280x900: every probe with its state, chart and counts, the state
/// colours on screen, and the text filter hiding what does not match.
fn desktop_shows_probes_and_filters(browser: &mut Browser, base: &str) {
    browser.open(&format!("{base}/"), DESKTOP);
    let dom = save_artifact("status-desktop.html", browser.dom().as_bytes());
    let shot = browser.screenshot();
    let path = shot.save("status-desktop.png");
    let page = read_page(browser);
    let seen = format!(
        "{page:#}\nDOM {}\nscreenshot {}",
        dom.display(),
        path.display()
    );
    assert_probes(&page, &seen);
    assert_eq!((shot.width, shot.height), (1280, 900));
    if let Err(e) = states_shown(&shot) {
        panic!("{e}: {seen}");
    }
    assert_eq!(filter(browser, "GON"), ["gone"], "{seen}");
    assert_eq!(filter(browser, "team=core"), ["web"], "{seen}");
    assert_eq!(filter(browser, ""), ["gone", "web", "yearly"], "{seen}");
}

/// Types `text` into the filter box and returns the probes still shown,
/// by name.
fn filter(browser: &mut Browser, text: &str) -> Vec<String> {
    let shown = browser.eval(&format!(
        "(() => {{ const box = document.getElementById('filter'); \
           box.value = {}; box.dispatchEvent(new Event('input')); \
           return [...document.querySelectorAll('article.probe')] \
             .filter(a => a.getClientRects().length > 0).map(a => a.dataset.probe); }})()",
        json!(text)
    ));
    let mut shown: Vec<String> = serde_json::from_value(shown).unwrap();
    shown.sort();
    shown
}

/// Each probe's own page on a phone: its state, a chart with a p50 line
/// when it has results, a results table, and no sideways scrolling.
fn probe_pages_fit_a_phone(browser: &mut Browser, base: &str) {
    for (name, state, ok) in [("web", "up", true), ("gone", "down", false)] {
        browser.open(&format!("{base}/probes/{name}"), PHONE);
        let shot = browser
            .screenshot()
            .save(&format!("probe-{name}-phone.png"));
        let page = browser.eval(&format!(
            "(() => {{ const a = document.querySelector('article.probe-detail'); \
               const root = document.documentElement; \
               return {{ probe: a && a.dataset.probe, state: a && a.dataset.state, \
                 p50: !!document.querySelector('svg.chart path.p50[d]'), \
                 results: document.querySelectorAll('tr.result[data-ok=\"{ok}\"]').length, \
                 fits: root.scrollWidth <= root.clientWidth, width: root.clientWidth }}; }})()"
        ));
        let want = json!({"probe": name, "state": state, "p50": true, "fits": true, "width": 390});
        let mut got = page.clone();
        got.as_object_mut().unwrap().remove("results");
        assert_eq!(got, want, "/probes/{name}: {}", shot.display());
        assert!(
            page["results"].as_u64().unwrap() > 0,
            "/probes/{name} lists its results: {}",
            shot.display()
        );
    }
}

/// At 390x844 (a phone): the layout is phone-wide, nothing scrolls
/// sideways, and the state colours are on screen.
fn status_page_fits_a_phone(browser: &mut Browser, base: &str) {
    browser.open(&format!("{base}/"), PHONE);
    let shot = browser.screenshot();
    let path = shot.save("status-phone.png");
    let page = read_page(browser);
    let seen = format!("screenshot {}\n{page:#}", path.display());
    assert_fits_a_phone(&page, &seen);
    if let Err(e) = states_shown(&shot) {
        panic!("{e}: {seen}");
    }
}

/// The auto-refresh (every 30s) replaces the probe list with fresh
/// articles for the same probes, without reloading the page. Leaves the
/// page's time paused (see [`Browser::fast_forward`]).
fn auto_refresh_replaces_the_list(browser: &mut Browser) {
    browser.eval(
        "window.notReloaded = true; \
         document.querySelectorAll('article.probe').forEach(a => a.dataset.old = 'yes')",
    );
    browser.fast_forward(65_000);
    let page = read_page(browser);
    assert_probes(&page, &format!("after two auto-refreshes: {page:#}"));
    let refreshed = browser.eval(
        "[window.notReloaded === true, \
          document.querySelectorAll('article.probe[data-old]').length]",
    );
    assert_eq!(
        refreshed,
        json!([true, 0]),
        "[no reload, articles not replaced]"
    );
}

/// A configuration with an http probe `web` that passes, a tcp probe
/// `gone` against a port nothing listens on (down after one failure) and
/// `yearly`, which is not due during the test (pending).
fn three_probes(dir: &std::path::Path, listen: u16) -> PathBuf {
    let target = http_target();
    let refused = free_port();
    let config = dir.join("lookout.yaml");
    std::fs::write(
        &config,
        format!(
            "storage:\n  sqlite: data/lookout.db\nserver:\n  listen: 127.0.0.1:{listen}\n\
             probes:\n\
             \x20 - name: web\n    http: {{ url: \"http://127.0.0.1:{target}/\" }}\n\
             \x20   interval: 200ms\n    timeout: 200ms\n    labels: {{ team: core }}\n\
             \x20 - name: gone\n    tcp: {{ host: 127.0.0.1, port: {refused} }}\n\
             \x20   interval: 200ms\n    timeout: 200ms\n    alert: {{ after: 1 }}\n\
             \x20 - name: yearly\n    http: {{ url: \"http://127.0.0.1:{target}/\" }}\n\
             \x20   cron: \"0 0 1 1 *\"\n"
        ),
    )
    .expect("write config");
    config
}

/// Polls `/` until `web` is up with a p50 line and `gone` is down, so the
/// browser sees a page with results; panics with the last page after 30s.
fn wait_for_results(daemon: &mut Daemon, listen: u16) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last = String::new();
    loop {
        if let Some(page) = http_get(listen, "/") {
            let probes = articles(&page);
            let ready = probes.get("web") == Some(&("up".into(), true))
                && probes.get("gone").is_some_and(|(s, _)| s == "down");
            if ready {
                return;
            }
            last = page;
        } else {
            let exited = daemon.child.try_wait().expect("try_wait");
            assert!(exited.is_none(), "lookout run exited: {exited:?}");
        }
        assert!(
            Instant::now() < deadline,
            "web up with a p50 line and gone down not shown within 30s; last page:\n{last}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Each `<article class="probe">` of a page as served: name -> (state,
/// whether its chart has a non-empty p50 path).
fn articles(html: &str) -> BTreeMap<String, (String, bool)> {
    let article = regex::Regex::new(r#"(?s)<article\b([^>]*)>(.*?)</article>"#).unwrap();
    let attr = |tag: &str, name: &str| {
        regex::Regex::new(&format!(r#"\b{name}="([^"]*)""#))
            .unwrap()
            .captures(tag)
            .map(|c| c[1].to_string())
    };
    let p50 = regex::Regex::new(r#"<path\b[^>]*\bclass="p50"[^>]*>"#).unwrap();
    article
        .captures_iter(html)
        .filter_map(|c| {
            let name = attr(&c[1], "data-probe")?;
            let state = attr(&c[1], "data-state").unwrap_or_default();
            let line = p50
                .find(&c[2])
                .and_then(|m| attr(m.as_str(), "d"))
                .is_some_and(|d| !d.trim().is_empty());
            Some((name, (state, line)))
        })
        .collect()
}

/// What the page shows after its scripts ran, measured in the browser.
fn read_page(browser: &mut Browser) -> Value {
    browser.eval(
        r#"(() => {
          const root = document.documentElement;
          const probes = [...document.querySelectorAll('article.probe')].map(a => {
            const name = a.dataset.probe;
            const link = [...a.querySelectorAll('a')]
              .find(l => l.getAttribute('href') === '/probes/' + name);
            const box = a.getBoundingClientRect();
            const chart = a.querySelector('svg.chart');
            return {
              name, state: a.dataset.state,
              link: link ? link.textContent.trim() : null,
              link_visible: !!link && link.getBoundingClientRect().width > 0,
              charts: a.querySelectorAll('svg.chart').length,
              chart_width: chart ? chart.getBoundingClientRect().width : 0,
              chart_text: chart ? chart.textContent : '',
              p50: (a.querySelector('svg.chart path.p50') || {getAttribute: () => ''})
                .getAttribute('d') || '',
              left: box.left, right: box.right,
            };
          });
          const counts = {};
          for (const c of document.querySelectorAll('#summary .count'))
            counts[c.dataset.state] = c.textContent.trim();
          return {probes, counts,
                  client_width: root.clientWidth, scroll_width: root.scrollWidth};
        })()"#,
    )
}

/// Every probe with its state, a link, a chart; a p50 line for `web`, "no
/// data yet" for `yearly`; summary counts that add up.
fn assert_probes(page: &Value, seen: &str) {
    let probes = page["probes"].as_array().expect("probes");
    let states: BTreeMap<&str, &str> = probes
        .iter()
        .map(|p| (p["name"].as_str().unwrap(), p["state"].as_str().unwrap()))
        .collect();
    let want = BTreeMap::from([("gone", "down"), ("web", "up"), ("yearly", "pending")]);
    assert_eq!(states, want, "{seen}");
    for p in probes {
        assert_eq!(p["link"], p["name"], "a link to the probe's page: {seen}");
        assert_eq!(p["charts"], json!(1), "one chart per probe: {seen}");
    }
    let web = probes.iter().find(|p| p["name"] == "web").unwrap();
    assert!(
        !web["p50"].as_str().unwrap().trim().is_empty(),
        "web's chart has a p50 line: {seen}"
    );
    let yearly = probes.iter().find(|p| p["name"] == "yearly").unwrap();
    assert!(
        yearly["chart_text"]
            .as_str()
            .unwrap()
            .contains("no data yet"),
        "{seen}"
    );
    let count = |state: &str| {
        page["counts"][state]
            .as_str()
            .map_or(0, |n| n.parse::<u64>().unwrap_or(u64::MAX))
    };
    for (state, n) in [
        ("up", 1),
        ("down", 1),
        ("pending", 1),
        ("maintenance", 0),
        ("dependency", 0),
    ] {
        assert_eq!(count(state), n, "summary count of {state}: {seen}");
    }
}

/// The layout is phone-wide (the viewport meta works) and nothing scrolls
/// sideways; every probe's link and chart are on screen.
fn assert_fits_a_phone(page: &Value, seen: &str) {
    let width = page["client_width"].as_f64().unwrap();
    assert_eq!(width, 390.0, "layout viewport on a phone: {seen}");
    assert!(
        page["scroll_width"].as_f64().unwrap() <= width,
        "the page scrolls sideways on a phone: {seen}"
    );
    for p in page["probes"].as_array().unwrap() {
        assert_eq!(p["link_visible"], json!(true), "{seen}");
        assert!(p["chart_width"].as_f64().unwrap() > 0.0, "{seen}");
        assert!(
            p["left"].as_f64().unwrap() >= 0.0 && p["right"].as_f64().unwrap() <= width,
            "{} is cut off on a phone: {seen}",
            p["name"]
        );
    }
}

/// Whether the screenshot is not blank and shows the up and down colours;
/// what is wrong otherwise.
fn states_shown(shot: &Screenshot) -> Result<(), String> {
    let (colour, share) = shot.dominant();
    if share >= 0.98 {
        return Err(format!(
            "the page looks blank: {:.1}% of pixels are {colour:?}",
            share * 100.0
        ));
    }
    for (state, hex) in [("up", UP), ("down", DOWN)] {
        let n = shot.count_near(hex, TOLERANCE);
        if n < MIN_STATE_PIXELS {
            return Err(format!("only {n} pixels of the {state} colour {hex}"));
        }
    }
    Ok(())
}

#[test]
fn harness_sees_console_errors_exceptions_colours_blank_pages_and_overflow() {
    let page = format!(
        "<!doctype html><html><head>\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <link rel=\"icon\" href=\"data:,\"></head><body style=\"margin:0;background:#fff\">\
         <div style=\"width:200px;height:100px;background:{UP}\"></div>\
         <div style=\"width:600px;height:10px;background:{DOWN}\"></div>\
         <p id=\"p\">before</p>\
         <script src=\"/noisy.js\"></script><script src=\"/throws.js\"></script>\
         </body></html>"
    );
    let noisy = "console.log('self-test: harmless log');\
                 console.warn('self-test: deliberate warning');\
                 console.error('self-test: deliberate error');\
                 document.getElementById('p').textContent = 'after';\
                 setTimeout(() => fetch('/later.txt').then(r => r.text())\
                   .then(t => { document.getElementById('p').dataset.later = t; }), 30000);";
    let port = serve(vec![
        ("/", "text/html; charset=utf-8", page),
        ("/noisy.js", "text/javascript", noisy.into()),
        ("/later.txt", "text/plain", "fetched".into()),
        (
            "/throws.js",
            "text/javascript",
            "throw new Error('self-test: deliberate exception');".into(),
        ),
    ]);
    let mut browser = Browser::launch();

    browser.open("about:blank", DESKTOP);
    let blank = browser.screenshot();
    assert_eq!((blank.width, blank.height), (1280, 900));
    assert_eq!(blank.dominant().1, 1.0, "a blank page is one colour");
    assert!(browser.problems().is_empty(), "{:?}", browser.problems());

    browser.open(&format!("http://127.0.0.1:{port}/"), DESKTOP);
    assert!(
        browser.dom().contains("<p id=\"p\">after</p>"),
        "the DOM is read after scripts ran"
    );
    let problems = browser.problems();
    for want in [
        "console warning: self-test: deliberate warning",
        "console error: self-test: deliberate error",
        "exception: Uncaught Error: self-test: deliberate exception",
    ] {
        assert!(
            problems.iter().any(|p| p.starts_with(want)),
            "{want:?} not in {problems:#?}"
        );
    }
    assert!(
        !problems.iter().any(|p| p.contains("harmless")),
        "{problems:#?}"
    );

    let shot = browser.screenshot();
    assert!(shot.dominant().1 < 0.99, "the page is not blank");
    let up = shot.count_near(UP, TOLERANCE);
    assert!((19_000..=21_000).contains(&up), "{up} up-coloured pixels");
    let down = shot.count_near(DOWN, TOLERANCE);
    assert!(
        (5_500..=6_500).contains(&down),
        "{down} down-coloured pixels"
    );

    browser.open(&format!("http://127.0.0.1:{port}/"), PHONE);
    let phone = browser.screenshot();
    assert_eq!((phone.width, phone.height), (390, 844));
    let (client, scroll) = overflow(&mut browser);
    assert_eq!(client, 390, "the viewport meta makes the layout phone-wide");
    assert!(
        scroll > client,
        "a 600px element overflows a phone: {scroll}"
    );

    browser.fast_forward(31_000);
    let later = browser.eval("document.getElementById('p').dataset.later");
    assert_eq!(
        later, "fetched",
        "a timer 30s away fired and its fetch arrived"
    );
}

/// The layout viewport's width and the document's scroll width, in CSS
/// pixels: a page wider than the viewport scrolls sideways.
fn overflow(browser: &mut Browser) -> (i64, i64) {
    let v = browser
        .eval("[document.documentElement.clientWidth, document.documentElement.scrollWidth]");
    (v[0].as_i64().unwrap(), v[1].as_i64().unwrap())
}
