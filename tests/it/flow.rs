//! Integration tests: multi-step `flow` probes against an in-process shop
//! that plays a login flow (a session token in the JSON body and a cookie
//! in `Set-Cookie`), an API that wants both, and a logout that revokes the
//! session. They check what an operator relies on: values captured by one
//! step reach the next, a failing step names itself and skips the rest
//! while clean-up still runs, each step's timing is recorded, and captured
//! secrets never reach results, logs, notices, the API or the database.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lookout::config::ProbeSpec;
use lookout::probe::run_once;
use lookout::result::{FailureClass, ProbeResult};
use serde_json::json;

use crate::harness::daemon::{notices, start_in};
use crate::harness::http_server::{assert_no_leak, serve, Reply, Seen, Server};
use crate::harness::recorder::Recorder;
use crate::harness::{assert_first_error, detail, probe_from_yaml};

const PASSWORD: &str = "pw-9c2e7a51";

/// Tells shops apart, so tests running side by side issue different
/// tokens (a value stays masked while any run holds it).
static SHOPS: AtomicUsize = AtomicUsize::new(0);

fn token(shop: usize, k: usize) -> String {
    format!("sess-{k}-{shop}x5f1d3b7a")
}

fn cookie(shop: usize, k: usize) -> String {
    format!("ck-{k}-{shop}x0e9d8c7b")
}

/// The shop: `POST /login` (JSON credentials) issues a session token
/// ([`token`]) and a cookie ([`cookie`]); `GET /users/7/orders` wants both;
/// `POST /logout` revokes the session; `GET /hang` never answers and
/// `GET /health` is always fine.
struct Shop {
    id: usize,
    server: Server,
    /// Sessions issued and not yet revoked.
    live: Arc<Mutex<HashSet<String>>>,
    /// Every token and cookie ever issued.
    issued: Arc<Mutex<Vec<String>>>,
    /// The status `/users/7/orders` answers with a valid session.
    orders_status: Arc<AtomicU16>,
    /// 0: a normal login; 1: the login answer has no token.
    login_mode: Arc<AtomicUsize>,
}

impl Shop {
    async fn start() -> Shop {
        let live: Arc<Mutex<HashSet<String>>> = Arc::default();
        let issued: Arc<Mutex<Vec<String>>> = Arc::default();
        let orders_status = Arc::new(AtomicU16::new(200));
        let login_mode = Arc::new(AtomicUsize::new(0));
        let n = Arc::new(AtomicUsize::new(0));
        let id = SHOPS.fetch_add(1, Ordering::SeqCst);
        let (l, i, o, m) = (
            live.clone(),
            issued.clone(),
            orders_status.clone(),
            login_mode.clone(),
        );
        let server = serve(None, move |req: &Seen| -> Reply {
            let bearer = req
                .header("authorization")
                .and_then(|a| a.strip_prefix("Bearer "))
                .unwrap_or_default()
                .to_string();
            let session_ok = l.lock().unwrap().contains(&bearer);
            match (req.method.as_str(), req.target.as_str()) {
                ("POST", "/login") => {
                    if !req.body.contains(&format!("\"password\":\"{PASSWORD}\"")) {
                        return (401, "application/json", "{\"error\":\"bad login\"}".into()).into();
                    }
                    let k = n.fetch_add(1, Ordering::SeqCst) + 1;
                    let (token, cookie) = (token(id, k), cookie(id, k));
                    l.lock().unwrap().insert(token.clone());
                    i.lock().unwrap().extend([token.clone(), cookie.clone()]);
                    let body = if m.load(Ordering::SeqCst) == 1 {
                        json!({"user": {"id": 7}, "note": format!("welcome, your session is {token}")})
                    } else {
                        json!({"token": token, "user": {"id": 7}})
                    };
                    Reply::from((200, "application/json", body.to_string()))
                        .with_header("set-cookie", &format!("sid={cookie}; Path=/; HttpOnly"))
                }
                ("GET", "/users/7/orders") => {
                    let cookie_ok = req.header("cookie").is_some_and(|c| {
                        c.strip_prefix("sid=")
                            .is_some_and(|v| i.lock().unwrap().iter().any(|x| x == v))
                    });
                    if !(session_ok && cookie_ok) {
                        return (401, "text/plain", "log in first".into()).into();
                    }
                    let status = o.load(Ordering::SeqCst);
                    (status, "application/json", json!({"orders": [{"id": "ord-1"}]}).to_string()).into()
                }
                ("POST", "/logout") if session_ok => {
                    l.lock().unwrap().remove(&bearer);
                    (200, "text/plain", "bye".into()).into()
                }
                ("GET", "/hang") => (0, "text/plain", String::new()).into(),
                ("GET", "/health") => (200, "text/plain", "ok".into()).into(),
                _ => (404, "text/plain", "no such page".into()).into(),
            }
        })
        .await;
        Shop {
            id,
            server,
            live,
            issued,
            orders_status,
            login_mode,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.server.port)
    }

    /// The paths requested, in order, as `METHOD /path`.
    fn requests(&self) -> Vec<String> {
        self.server
            .seen()
            .iter()
            .map(|s| format!("{} {}", s.method, s.target))
            .collect()
    }

    fn issued(&self) -> Vec<String> {
        self.issued.lock().unwrap().clone()
    }

    fn live_sessions(&self) -> usize {
        self.live.lock().unwrap().len()
    }

    /// The steps of the login-then-call flow, indented for `probes:`;
    /// `orders` is the middle step's path and `extra` more steps.
    fn steps(&self, orders: &str, extra: &str) -> String {
        format!(
            r#"    flow:
      steps:
        - name: login
          method: POST
          url: "{login}"
          headers: {{ Content-Type: application/json }}
          body: '{{"user":"probe","password":"{PASSWORD}"}}'
          expect: {{ status: 200, json: {{ "$.user.id": 7 }} }}
          capture:
            token: {{ json: "$.token" }}
            session: {{ header: set-cookie, regex: "sid=([^;]+)" }}
            user: {{ json: "$.user.id", secret: false }}
        - name: orders
          url: "{orders}"
          auth: {{ bearer: "${{steps.login.token}}" }}
          headers: {{ Cookie: "sid=${{steps.login.session}}" }}
          expect: {{ status: 200, json: {{ "$.orders[0].id": ord-1 }}, latency: "< 2s" }}
{extra}        - name: logout
          always: true
          method: POST
          url: "{logout}"
          headers: {{ Authorization: "Bearer ${{steps.login.token}}" }}
          expect: {{ status: 200 }}
"#,
            login = self.url("/login"),
            orders = self.url(orders),
            logout = self.url("/logout"),
        )
    }

    fn probe(&self, orders: &str, extra: &str, timeout: &str) -> ProbeSpec {
        probe_from_yaml(&format!(
            "probes:\n  - name: shop\n    timeout: {timeout}\n{}",
            self.steps(orders, extra)
        ))
    }
}

fn steps(r: &ProbeResult) -> Vec<serde_json::Value> {
    detail(r, "steps").as_array().cloned().unwrap_or_default()
}

/// (name, outcome) of every step.
fn outcomes(r: &ProbeResult) -> Vec<(String, String)> {
    steps(r)
        .iter()
        .map(|s| {
            (
                s["name"].as_str().unwrap_or_default().to_string(),
                s["outcome"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

#[tokio::test]
async fn captured_values_carry_a_login_into_the_next_steps_and_each_step_is_timed() {
    let shop = Shop::start().await;
    let spec = shop.probe("/users/${steps.login.user}/orders", "", "5s");
    let r = run_once(&spec).await;
    assert!(r.success, "{r:?}");
    assert_eq!(
        outcomes(&r),
        pairs(&[
            ("login", "passed"),
            ("orders", "passed"),
            ("logout", "passed")
        ])
    );
    assert_eq!(
        shop.requests(),
        ["POST /login", "GET /users/7/orders", "POST /logout"]
    );
    let seen = shop.server.seen();
    let bearer = format!("Bearer {}", token(shop.id, 1));
    assert_eq!(seen[1].header("authorization"), Some(bearer.as_str()));
    let sid = format!("sid={}", cookie(shop.id, 1));
    assert_eq!(seen[1].header("cookie"), Some(sid.as_str()));
    assert_eq!(seen[2].header("authorization"), Some(bearer.as_str()));
    assert_eq!(
        shop.live_sessions(),
        0,
        "the logout step revoked the session"
    );

    // Each step: its request (a non-secret capture shown), status, time
    // and phases; the run's phases are the steps' sums.
    let s = steps(&r);
    assert_eq!(s[1]["url"], shop.url("/users/7/orders"));
    assert_eq!(s[1]["method"], "GET");
    assert_eq!(s[0]["method"], "POST");
    let mut sum = 0.0;
    for step in &s {
        assert_eq!(step["status"], 200, "{step}");
        let ms = step["duration_ms"].as_f64().expect("duration");
        assert!(ms > 0.0 && ms < r.duration.as_secs_f64() * 1000.0, "{step}");
        assert!(step["phases"]["connect"].as_f64().is_some(), "{step}");
        sum += step["phases"]["first_byte"].as_f64().unwrap_or(0.0);
    }
    let total = r
        .phase(lookout::result::Phase::FirstByte)
        .expect("first byte")
        .as_secs_f64()
        * 1000.0;
    assert!((sum - total).abs() < 0.01, "{sum} vs {total}");
    assert_eq!(detail(&r, "failed_step"), serde_json::Value::Null);
    let names: Vec<&str> = r.checks.iter().map(|c| c.expectation.as_str()).collect();
    for want in [
        "step login: status 200",
        "step orders: json $.orders[0].id",
        "step orders: latency < 2s",
        "step logout: status 200",
    ] {
        assert!(
            names.iter().any(|n| n.starts_with(want)),
            "{want} not in {names:?}"
        );
    }
    let issued = shop.issued();
    let secrets: Vec<&str> = issued.iter().map(String::as_str).collect();
    assert_no_leak(&[&r], &secrets);
    // The run is over: its captured values are no longer masked.
    let t = token(shop.id, 1);
    assert_eq!(lookout::redact::redact(&t), t);
}

#[tokio::test]
async fn a_failing_step_names_itself_skips_the_rest_and_clean_up_still_runs() {
    let shop = Shop::start().await;
    let extra = format!(
        "        - name: after\n          url: \"{}\"\n",
        shop.url("/health")
    );
    let spec = shop.probe("/users/${steps.login.user}/orders", &extra, "5s");
    shop.orders_status.store(500, Ordering::SeqCst);
    let r = run_once(&spec).await;
    let f = r.failure.clone().expect("failed");
    assert_eq!(f.class, FailureClass::Expectation);
    assert!(
        f.message
            .starts_with("step `orders`: expected status 200, got 500"),
        "{}",
        f.message
    );
    assert_eq!(detail(&r, "failed_step"), "orders");
    assert_eq!(
        outcomes(&r),
        pairs(&[
            ("login", "passed"),
            ("orders", "failed"),
            ("after", "skipped"),
            ("logout", "passed")
        ])
    );
    assert_eq!(steps(&r)[2]["reason"], "an earlier step failed");
    assert_eq!(
        shop.requests(),
        ["POST /login", "GET /users/7/orders", "POST /logout"]
    );
    assert_eq!(shop.live_sessions(), 0, "clean-up ran after the failure");

    // The next run logs in afresh and, the API healed, passes.
    shop.orders_status.store(200, Ordering::SeqCst);
    let r = run_once(&spec).await;
    assert!(r.success, "{r:?}");
    let bearer = format!("Bearer {}", token(shop.id, 2));
    assert_eq!(
        shop.server.seen()[4].header("authorization"),
        Some(bearer.as_str())
    );
}

#[tokio::test]
async fn a_refused_login_skips_steps_that_need_its_captures() {
    let shop = Shop::start().await;
    let yaml = shop
        .steps("/users/7/orders", "")
        .replace(PASSWORD, "wrong-pw");
    let spec = probe_from_yaml(&format!("probes:\n  - name: shop\n{yaml}"));
    let r = run_once(&spec).await;
    let f = r.failure.clone().expect("failed");
    assert_eq!(f.class, FailureClass::Auth);
    assert!(
        f.message.starts_with("step `login`: ") && f.message.contains("refused the credentials"),
        "{}",
        f.message
    );
    assert_eq!(
        outcomes(&r),
        pairs(&[
            ("login", "failed"),
            ("orders", "skipped"),
            ("logout", "skipped")
        ])
    );
    assert_eq!(
        steps(&r)[2]["reason"],
        "${steps.login.token} was not captured"
    );
    assert_eq!(shop.requests(), ["POST /login"]);
}

#[tokio::test]
async fn a_capture_that_finds_nothing_fails_its_step_without_quoting_the_secret() {
    let shop = Shop::start().await;
    shop.login_mode.store(1, Ordering::SeqCst);
    let spec = shop.probe("/users/7/orders", "", "5s");
    let r = run_once(&spec).await;
    let f = r.failure.clone().expect("failed");
    assert_eq!(f.class, FailureClass::Expectation);
    assert_eq!(
        f.message,
        "step `login`: capture `token`: nothing at $.token in the response body"
    );
    assert_eq!(shop.requests(), ["POST /login"]);

    // A failing expectation quotes the body; the session cookie the same
    // step captured is masked in the quote all the same.
    shop.login_mode.store(0, Ordering::SeqCst);
    let yaml = shop.steps("/users/7/orders", "").replace(
        "expect: { status: 200, json: { \"$.user.id\": 7 } }",
        "expect: { status: 200, body_contains: welcome }",
    );
    let spec = probe_from_yaml(&format!("probes:\n  - name: shop\n{yaml}"));
    let r = run_once(&spec).await;
    let f = r.failure.clone().expect("failed");
    assert!(
        f.message
            .starts_with("step `login`: expected body contains \"welcome\", got"),
        "{}",
        f.message
    );
    assert!(f.message.contains("***"), "{}", f.message);
    let issued = shop.issued();
    let secrets: Vec<&str> = issued.iter().map(String::as_str).collect();
    assert_no_leak(&[&r], &secrets);
}

#[tokio::test]
async fn a_step_that_hangs_times_out_by_name_and_clean_up_gets_its_share() {
    let shop = Shop::start().await;
    let spec = shop.probe("/hang", "", "2s");
    let r = run_once(&spec).await;
    let f = r.failure.clone().expect("failed");
    assert_eq!(f.class, FailureClass::Timeout);
    assert!(
        f.message.starts_with("step `orders`: ")
            && f.message
                .contains("the flow keeps 500ms for clean-up steps")
            && f.message.ends_with("while waiting for first byte"),
        "{}",
        f.message
    );
    assert_eq!(
        outcomes(&r),
        pairs(&[
            ("login", "passed"),
            ("orders", "failed"),
            ("logout", "passed")
        ])
    );
    assert_eq!(shop.live_sessions(), 0, "clean-up ran after the timeout");
    assert!(r.duration < Duration::from_secs(2), "{:?}", r.duration);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn captured_secrets_stay_out_of_logs_notices_the_api_and_the_database() {
    let shop = Shop::start().await;
    shop.orders_status.store(503, Ordering::SeqCst);
    let rec = Recorder::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut d = start_in(dir.path(), |port| {
        format!(
            "storage: {{ sqlite: lookout.db }}\nserver: {{ listen: \"127.0.0.1:{port}\" }}\nnotifiers:\n  hook:\n    webhook: {{ url: \"{}\" }}\nprobes:\n  - name: shop\n    interval: 300ms\n    timeout: 250ms\n    alert: {{ after: 2, notify: [hook] }}\n{}",
            rec.url("/hook"),
            shop.steps("/users/${steps.login.user}/orders", "")
        )
    });
    d.wait_results("shop", 3).await;
    let notice = notices(&rec, 1).await.remove(0);
    let why = notice.first_failure.map(|f| f.message).unwrap_or_default();
    assert!(why.starts_with("step `orders`: "), "{why}");
    let api = d.get("/api/v1/probes/shop/results?limit=10");
    assert!(api.contains("\"failed_step\":\"orders\""), "{api}");
    let mut log = Vec::new();
    while let Ok(line) = d.log.try_recv() {
        log.push(line);
    }
    d.stop().await;
    let mut db = std::fs::read(dir.path().join("lookout.db")).expect("database");
    db.extend(std::fs::read(dir.path().join("lookout.db-wal")).unwrap_or_default());
    let db = String::from_utf8_lossy(&db);
    let notice_text = rec
        .requests()
        .iter()
        .map(|r| r.text())
        .collect::<Vec<_>>()
        .join("\n");
    let issued = shop.issued();
    assert!(issued.len() >= 6, "{issued:?}");
    for secret in &issued {
        for (place, text) in [
            ("the log", log.join("\n")),
            ("a notice", notice_text.clone()),
            ("the API", api.clone()),
            ("the database", db.to_string()),
        ] {
            assert!(!text.contains(secret.as_str()), "`{secret}` in {place}");
        }
    }
}

#[test]
fn flow_mistakes_name_the_line_and_key() {
    let step = |extra: &str| {
        format!(
            "    flow:\n      steps:\n        - name: login\n          url: http://a.example/login\n          capture: {{ token: {{ json: $.token }} }}\n{extra}"
        )
    };
    assert_first_error(&[
        (
            "    flow: { steps: [] }\n",
            "probes[0].flow.steps",
            3,
            "at least one step",
        ),
        (
            &step("        - name: call\n          url: \"http://a.example/${steps.logn.token}\"\n"),
            "probes[0].flow.steps[1].url",
            9,
            "there is no step named `logn`; did you mean `login`?",
        ),
        (
            &step("        - name: call\n          url: http://a.example/\n          headers: { X-T: \"${steps.login.tokn}\" }\n"),
            "probes[0].flow.steps[1].headers.X-T",
            10,
            "step `login` captures no `tokn` (it captures token); did you mean `token`?",
        ),
        (
            &step("        - name: call\n          url: http://a.example/\n          expect: { body_contains: \"${steps.login.token}\" }\n"),
            "probes[0].flow.steps[1].expect.body_contains",
            10,
            "can be used in a step's url, headers, body",
        ),
        (
            &step("        - name: login\n          url: http://a.example/\n"),
            "probes[0].flow.steps[1].name",
            8,
            "two steps are named `login`",
        ),
        (
            "    flow:\n      steps:\n        - name: a\n          url: \"http://a.example/${steps.b.x}\"\n        - name: b\n          url: http://a.example/\n          capture: { x: { json: $.x } }\n",
            "probes[0].flow.steps[0].url",
            6,
            "step `b` does not run before this one",
        ),
        (
            &step("        - name: call\n          url: http://a.example/\n          capture: { x: { secret: false } }\n"),
            "probes[0].flow.steps[1].capture.x",
            10,
            "say where the value comes from",
        ),
        (
            &step("        - name: call\n          url: http://a.example/\n          retries: 3\n"),
            "probes[0].flow.steps[1].retries",
            10,
            "unknown key",
        ),
        (
            "    http: { url: \"http://a.example/${steps.login.token}\" }\n",
            "probes[0].http.url",
            3,
            "can be used only in the steps of a `flow` probe",
        ),
    ]);
}
