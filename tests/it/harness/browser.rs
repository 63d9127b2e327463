//! Headless Chromium driven over the DevTools protocol, for tests that look
//! at a page the way a person's browser shows it. One [`Browser`] is one
//! Chromium process with a fresh profile in a temporary directory, spoken to
//! over `--remote-debugging-pipe` (JSON messages ending in NUL on file
//! descriptors 3 and 4, which a `sh` wrapper maps to the child's stdin and
//! stdout, so no WebSocket client and no unsafe code are needed). It opens a
//! URL at a given viewport size, waits until the page loaded and painted,
//! evaluates JavaScript, takes PNG screenshots ([`Screenshot`], decoded for
//! pixel counting) and collects every console error or warning, uncaught
//! exception and browser log error (a failed asset, a CSP violation) as
//! [`Browser::problems`]. Every call has a deadline; the whole process group
//! is killed when the browser is dropped. [`serve`] is a tiny static HTTP
//! server for testing the harness itself.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// How long one protocol call (or a page load) may take. Generous: the
/// suite runs databases and benchmarks beside Chromium on two cores.
const CALL_TIMEOUT: Duration = Duration::from_secs(45);

/// A viewport: CSS pixels at device scale factor 1, so a screenshot has
/// exactly `width` x `height` pixels.
#[derive(Debug, Clone, Copy)]
pub struct Viewport {
    pub width: u32,
    pub height: u32,
    /// Emulate a phone: the page's `<meta name="viewport">` is honoured,
    /// and without one the layout would be 980px wide.
    pub mobile: bool,
}

pub const DESKTOP: Viewport = Viewport {
    width: 1280,
    height: 900,
    mobile: false,
};

pub const PHONE: Viewport = Viewport {
    width: 390,
    height: 844,
    mobile: true,
};

/// One running headless Chromium with one page (tab) attached.
pub struct Browser {
    child: Child,
    to_browser: ChildStdin,
    from_browser: Receiver<Value>,
    next_id: u64,
    session: String,
    /// Events of the current navigation that are not console messages.
    events: Vec<Value>,
    problems: Vec<String>,
    profile: tempfile::TempDir,
}

impl Browser {
    /// Starts Chromium (`$LOOKOUT_CHROMIUM` or `chromium` on the PATH) with
    /// a fresh profile and opens one blank page.
    pub fn launch() -> Browser {
        let profile = tempfile::tempdir().expect("tempdir for the chromium profile");
        let log = std::fs::File::create(profile.path().join("chromium.log")).expect("log file");
        let binary = std::env::var("LOOKOUT_CHROMIUM").unwrap_or_else(|_| "chromium".into());
        let mut cmd = Command::new("sh");
        // fd 3 is what Chromium reads commands from, fd 4 where it writes.
        cmd.arg("-c")
            .arg(r#"exec "$0" "$@" 3<&0 4>&1 </dev/null >/dev/null"#)
            .arg(&binary)
            .args(flags(profile.path()))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            // Its own process group, so the renderers die with it.
            .process_group(0);
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start sh for {binary}: {e}"));
        let to_browser = child.stdin.take().expect("chromium stdin");
        let from_browser = read_messages(child.stdout.take().expect("chromium stdout"));
        let mut browser = Browser {
            child,
            to_browser,
            from_browser,
            next_id: 0,
            session: String::new(),
            events: Vec::new(),
            problems: Vec::new(),
            profile,
        };
        browser.attach_page();
        browser
    }

    fn attach_page(&mut self) {
        let target = self.browser_call("Target.createTarget", json!({"url": "about:blank"}));
        let target_id = target["targetId"].clone();
        let attached = self.browser_call(
            "Target.attachToTarget",
            json!({"targetId": target_id, "flatten": true}),
        );
        self.session = attached["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session in {attached}"))
            .to_string();
        for domain in ["Runtime.enable", "Log.enable", "Page.enable"] {
            self.call(domain, json!({}));
        }
    }

    /// Opens `url` at `viewport`, waits for its load event and two painted
    /// frames, and panics when it could not be loaded or answered other
    /// than 200.
    pub fn open(&mut self, url: &str, viewport: Viewport) {
        self.call(
            "Emulation.setDeviceMetricsOverride",
            json!({"width": viewport.width, "height": viewport.height,
                   "deviceScaleFactor": 1, "mobile": viewport.mobile}),
        );
        self.events.clear();
        let nav = self.call("Page.navigate", json!({"url": url}));
        if let Some(err) = nav.get("errorText").and_then(Value::as_str) {
            panic!("chromium could not open {url}: {err}");
        }
        self.wait_event("Page.loadEventFired");
        self.settle();
        let status =
            self.eval("performance.getEntriesByType('navigation')[0]?.responseStatus ?? 0");
        if !url.starts_with("about:") {
            assert_eq!(status, json!(200), "{url} answered {status}");
        }
    }

    /// Waits until the page painted twice after its scripts ran (fonts
    /// loaded), so a screenshot shows what a person would see.
    pub fn settle(&mut self) {
        self.eval_async(
            "document.fonts.ready.then(() => new Promise(r => \
             requestAnimationFrame(() => requestAnimationFrame(() => r(true)))))",
        );
    }

    /// Lets `ms` of the page's time pass at once (virtual time): timers
    /// such as an auto-refresh fire, and time stands still while a network
    /// fetch is pending, so what they fetch arrives within the budget.
    /// Time stays paused afterwards: read the page with [`Browser::eval`]
    /// (promises that wait on frames or timers would not settle) and do not
    /// open another page.
    pub fn fast_forward(&mut self, ms: u64) {
        self.events.clear();
        self.call(
            "Emulation.setVirtualTimePolicy",
            json!({"policy": "pauseIfNetworkFetchesPending", "budget": ms}),
        );
        self.wait_event("Emulation.virtualTimeBudgetExpired");
    }

    /// The value of a JavaScript expression (by value: JSON-able results
    /// only); panics when it throws.
    pub fn eval(&mut self, expression: &str) -> Value {
        self.evaluate(expression, false)
    }

    /// Like [`Browser::eval`] for an expression that yields a promise.
    pub fn eval_async(&mut self, expression: &str) -> Value {
        self.evaluate(expression, true)
    }

    fn evaluate(&mut self, expression: &str, await_promise: bool) -> Value {
        let r = self.call(
            "Runtime.evaluate",
            json!({"expression": expression, "returnByValue": true,
                   "awaitPromise": await_promise}),
        );
        if let Some(e) = r.get("exceptionDetails") {
            panic!("`{expression}` threw: {}", describe_exception(e));
        }
        r["result"].get("value").cloned().unwrap_or(Value::Null)
    }

    /// The page's DOM as it is now (after its scripts ran), as HTML.
    pub fn dom(&mut self) -> String {
        let v = self.eval("'<!doctype html>\\n' + document.documentElement.outerHTML");
        v.as_str().unwrap_or_default().to_string()
    }

    /// A screenshot of the viewport, decoded.
    pub fn screenshot(&mut self) -> Screenshot {
        let r = self.call("Page.captureScreenshot", json!({"format": "png"}));
        let data = r["data"].as_str().expect("screenshot data");
        use base64::Engine as _;
        let png = base64::engine::general_purpose::STANDARD
            .decode(data)
            .expect("screenshot base64");
        Screenshot::decode(png)
    }

    /// Every console error or warning, uncaught exception and browser log
    /// entry at level error or warning seen since launch, one line each
    /// ("console error: ...", "exception: ...", "log error: ...").
    pub fn problems(&mut self) -> Vec<String> {
        // Drain messages that arrived since the last call.
        while let Ok(m) = self.from_browser.try_recv() {
            self.note(m);
        }
        self.problems.clone()
    }

    /// Like [`Browser::problems`], and forgets them.
    pub fn take_problems(&mut self) -> Vec<String> {
        let problems = self.problems();
        self.problems.clear();
        problems
    }

    /// Makes every request whose URL matches one of `patterns` (`*` is a
    /// wildcard) fail, as a missing asset would; `&[]` unblocks.
    pub fn block_urls(&mut self, patterns: &[&str]) {
        self.call("Network.enable", json!({}));
        self.call("Network.setBlockedURLs", json!({"urls": patterns}));
    }

    /// What Chromium wrote on its standard error (for failure messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.profile.path().join("chromium.log")).unwrap_or_default()
    }

    fn browser_call(&mut self, method: &str, params: Value) -> Value {
        self.send(method, params, None)
    }

    fn call(&mut self, method: &str, params: Value) -> Value {
        let session = self.session.clone();
        self.send(method, params, Some(&session))
    }

    fn send(&mut self, method: &str, params: Value, session: Option<&str>) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut msg = json!({"id": id, "method": method, "params": params});
        if let Some(s) = session {
            msg["sessionId"] = json!(s);
        }
        let mut bytes = serde_json::to_vec(&msg).expect("serialize");
        bytes.push(0);
        if let Err(e) = self.to_browser.write_all(&bytes) {
            panic!(
                "chromium gone ({e}) before {method}; its log:\n{}",
                self.log()
            );
        }
        let deadline = Instant::now() + CALL_TIMEOUT;
        loop {
            let m = self.next_message(deadline, method);
            if m["id"] == json!(id) {
                if let Some(err) = m.get("error") {
                    panic!("{method} failed: {err}");
                }
                return m["result"].clone();
            }
            self.note(m);
        }
    }

    fn wait_event(&mut self, method: &str) -> Value {
        let deadline = Instant::now() + CALL_TIMEOUT;
        loop {
            if let Some(e) = self.events.iter().find(|e| e["method"] == method) {
                return e.clone();
            }
            let m = self.next_message(deadline, method);
            self.note(m);
        }
    }

    fn next_message(&mut self, deadline: Instant, waiting_for: &str) -> Value {
        let left = deadline.saturating_duration_since(Instant::now());
        match self.from_browser.recv_timeout(left) {
            Ok(m) => m,
            Err(RecvTimeoutError::Timeout) => panic!(
                "chromium did not answer {waiting_for} within {CALL_TIMEOUT:?}; its log:\n{}",
                self.log()
            ),
            Err(RecvTimeoutError::Disconnected) => panic!(
                "chromium exited while waiting for {waiting_for} (is it installed? \
                 tests/run.sh installs it); its log:\n{}",
                self.log()
            ),
        }
    }

    /// Files an event: console problems into `problems`, the rest into
    /// `events`.
    fn note(&mut self, m: Value) {
        let params = &m["params"];
        match m["method"].as_str().unwrap_or_default() {
            "Runtime.consoleAPICalled" => {
                let level = params["type"].as_str().unwrap_or_default();
                if matches!(level, "error" | "warning" | "assert") {
                    let text: Vec<String> = params["args"]
                        .as_array()
                        .map(|a| a.iter().map(remote_text).collect())
                        .unwrap_or_default();
                    self.problems
                        .push(format!("console {level}: {}", text.join(" ")));
                }
            }
            "Runtime.exceptionThrown" => {
                let e = describe_exception(&params["exceptionDetails"]);
                self.problems.push(format!("exception: {e}"));
            }
            "Log.entryAdded" => {
                let entry = &params["entry"];
                let level = entry["level"].as_str().unwrap_or_default();
                if matches!(level, "error" | "warning") {
                    self.problems.push(format!(
                        "log {level}: {} {}",
                        entry["text"].as_str().unwrap_or_default(),
                        entry["url"].as_str().unwrap_or_default()
                    ));
                }
            }
            _ => self.events.push(m),
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // The group id is the child's id (process_group(0)).
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.child.id())])
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn flags(profile: &std::path::Path) -> Vec<String> {
    [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--remote-debugging-pipe",
        "--no-first-run",
        "--no-default-browser-check",
        "--disable-extensions",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--hide-scrollbars",
        "--mute-audio",
        "--force-color-profile=srgb",
        "--font-render-hinting=none",
        "about:blank",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain([format!("--user-data-dir={}", profile.display())])
    .collect()
}

/// Reads NUL-terminated JSON messages on a thread until the pipe closes.
fn read_messages(out: impl Read + Send + 'static) -> Receiver<Value> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut reader = BufReader::new(out);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match reader.read_until(0, &mut buf) {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            if buf.last() == Some(&0) {
                buf.pop();
            }
            match serde_json::from_slice::<Value>(&buf) {
                Ok(v) => {
                    if tx.send(v).is_err() {
                        return;
                    }
                }
                Err(e) => eprintln!("unreadable DevTools message ({e})"),
            }
        }
    });
    rx
}

/// A console argument as text: its value, or its description (objects,
/// errors).
fn remote_text(arg: &Value) -> String {
    match arg.get("value") {
        Some(Value::String(s)) => s.clone(),
        Some(v) => v.to_string(),
        None => arg["description"].as_str().unwrap_or_default().to_string(),
    }
}

fn describe_exception(details: &Value) -> String {
    let text = details["text"].as_str().unwrap_or_default();
    let what = details["exception"]["description"]
        .as_str()
        .unwrap_or_default();
    let url = details["url"].as_str().unwrap_or_default();
    format!("{text} {what} {url}").trim().to_string()
}

/// A decoded screenshot: 8-bit RGB pixels, row by row.
pub struct Screenshot {
    pub png: Vec<u8>,
    pub width: u32,
    pub height: u32,
    pub pixels: Vec<[u8; 3]>,
}

impl Screenshot {
    /// Decodes an 8-bit RGB or RGBA PNG (what Chromium writes).
    pub fn decode(png: Vec<u8>) -> Screenshot {
        let mut decoder = png::Decoder::new(std::io::Cursor::new(&png));
        decoder.set_transformations(png::Transformations::EXPAND | png::Transformations::STRIP_16);
        let mut reader = decoder.read_info().expect("png header");
        let mut buf = vec![0; reader.output_buffer_size().expect("png size")];
        let frame = reader.next_frame(&mut buf).expect("png frame");
        let channels = match frame.color_type {
            png::ColorType::Rgb => 3,
            png::ColorType::Rgba => 4,
            other => panic!("unexpected screenshot colour type {other:?}"),
        };
        let pixels = buf[..frame.buffer_size()]
            .chunks_exact(channels)
            .map(|p| [p[0], p[1], p[2]])
            .collect();
        Screenshot {
            png,
            width: frame.width,
            height: frame.height,
            pixels,
        }
    }

    /// How many pixels are within `tolerance` per channel of `#rrggbb`.
    pub fn count_near(&self, hex: &str, tolerance: u8) -> usize {
        let want = rgb(hex);
        self.pixels
            .iter()
            .filter(|p| (0..3).all(|i| p[i].abs_diff(want[i]) <= tolerance))
            .count()
    }

    /// The most common colour and the share of pixels that have it.
    pub fn dominant(&self) -> ([u8; 3], f64) {
        let mut counts: HashMap<[u8; 3], usize> = HashMap::new();
        for p in &self.pixels {
            *counts.entry(*p).or_default() += 1;
        }
        let (colour, n) = counts
            .into_iter()
            .max_by_key(|(_, n)| *n)
            .unwrap_or(([0; 3], 0));
        (colour, n as f64 / self.pixels.len().max(1) as f64)
    }

    /// Writes the PNG to `target/test-artifacts/NAME` and returns its path.
    pub fn save(&self, name: &str) -> PathBuf {
        save_artifact(name, &self.png)
    }
}

/// Writes `bytes` to `target/test-artifacts/NAME` (for a person to look at
/// after a run) and returns the path.
pub fn save_artifact(name: &str, bytes: &[u8]) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/test-artifacts");
    std::fs::create_dir_all(&dir).expect("create target/test-artifacts");
    let path = dir.join(name);
    std::fs::write(&path, bytes).expect("write a test artifact");
    path
}

/// `#rrggbb` as bytes.
pub fn rgb(hex: &str) -> [u8; 3] {
    let h = hex.trim_start_matches('#');
    let byte = |i: usize| u8::from_str_radix(&h[i..i + 2], 16).expect("hex colour");
    [byte(0), byte(2), byte(4)]
}

/// A static HTTP server on a loopback port for the life of the test
/// process: each (path, content type, body) is answered with 200, anything
/// else with 404.
pub fn serve(pages: Vec<(&'static str, &'static str, String)>) -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let pages: std::sync::Arc<HashMap<_, _>> = std::sync::Arc::new(
        pages
            .into_iter()
            .map(|(path, ctype, body)| (path.to_string(), (ctype, body)))
            .collect(),
    );
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(s) = stream else { continue };
            let pages = pages.clone();
            std::thread::spawn(move || answer(s, &pages));
        }
    });
    port
}

fn answer(mut s: std::net::TcpStream, pages: &HashMap<String, (&str, String)>) {
    let mut line = String::new();
    let mut reader = BufReader::new(&s);
    if reader.read_line(&mut line).is_err() {
        return;
    }
    // Skip the rest of the head.
    let mut header = String::new();
    while reader.read_line(&mut header).is_ok_and(|n| n > 2) {
        header.clear();
    }
    let path = line.split_whitespace().nth(1).unwrap_or("/");
    let (status, ctype, body) = match pages.get(path) {
        Some((ctype, body)) => ("200 OK", *ctype, body.as_str()),
        None => ("404 Not Found", "text/plain", "not found"),
    };
    let _ = write!(
        s,
        "HTTP/1.1 {status}\r\ncontent-type: {ctype}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
}
