//! The `flow` probe kind: an ordered list of HTTP steps sharing variables,
//! the way an application walks a third-party API (log in, call, log out).
//!
//! Each step is an `http` probe section (same keys, same client, same
//! phases, each request on a fresh connection) with a `name`, its own
//! `expect:`, and `capture:` rules that take values from the response's
//! JSON body (JSONPath), a header or a regex group. Later steps use them
//! as `${steps.STEP.VAR}` in their url, headers, body, `auth.bearer` or
//! `auth.api_key.value`; the compiler replaces each reference with a
//! placeholder token ([`token`]) and checks that it names a capture of an
//! earlier step, and the run fills the tokens in. A step that fails skips
//! the rest, except steps marked `always: true` (clean-up), which run
//! anyway within time the flow keeps for them. The result records every
//! step (timing, phases, status, outcome) under `details.steps`, and the
//! failing one as `details.failed_step`. Captured values are secret by
//! default: masked everywhere for as long as the run that holds them lasts.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use ::http::header::{HeaderName, HeaderValue};
use bytes::Bytes;
use regex::Regex;
use serde_json::{json, Value as Json};
use serde_json_path::JsonPath;
use tokio::time::Instant;

use crate::config::compile::compile_latency;
use crate::config::read::{join, suggest, Cx, Map, StepRef};
use crate::config::yaml::{Node, Value};
use crate::duration::human;
use crate::expect::DurationCmp;
use crate::probe::http::{self, Fetched, HttpSpec};
use crate::probe::urlutil::percent_encode;
use crate::probe::{first_failed_check, Trace};
use crate::redact::{self, Temporary};
use crate::result::{Failure, FailureClass, Phase};

/// Keys accepted in the `flow:` section.
pub const KEYS: &[&str] = &["steps"];
/// Keys accepted in `expect:` for this kind, besides `latency` (which
/// bounds the whole flow; each step has its own `expect:`).
pub const EXPECT_KEYS: &[&str] = &[];
/// Keys a step takes besides the `http` kind's.
const STEP_KEYS: &[&str] = &["name", "always", "timeout", "expect", "capture"];
const CAPTURE_KEYS: &[&str] = &["json", "header", "regex", "secret"];
/// A flow is a short walk, not a load test.
pub const MAX_STEPS: usize = 20;
/// The share of the probe's timeout a clean-up step without its own
/// `timeout` keeps for itself.
const CLEANUP_SHARE: u32 = 4;
/// Steps end this much before the run's timeout, so the flow (not the
/// outer bound) reports which step ran out of time.
const MARGIN: Duration = Duration::from_millis(5);
/// Detail keys that belong to the flow, not to the step that just ran:
/// `trace_id` is the run's (every step's requests share it).
const FLOW_DETAILS: &[&str] = &["steps", "failed_step", "retry_after_s", "trace_id"];

/// The placeholder that stands for the `i`th `${steps...}` reference of a
/// step between compiling and running: lower-case letters and digits, so
/// it survives URL parsing (even in a host name) and header checks.
pub fn token(i: usize) -> String {
    format!("lookoutref{i}x9q")
}

/// Whether `s` is a valid step or variable name: letters, digits, `_` and
/// `-`, at most 64 characters.
pub fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// A compiled `flow` probe.
#[derive(Debug, Clone)]
pub struct FlowSpec {
    pub steps: Vec<Step>,
}

/// One step: an HTTP request with its expectations and captures.
#[derive(Debug, Clone)]
pub struct Step {
    pub name: String,
    /// Runs even when an earlier step failed (clean-up).
    pub always: bool,
    pub timeout: Option<Duration>,
    /// The request, with placeholder tokens where references are.
    pub http: HttpSpec,
    pub latency: Option<DurationCmp>,
    pub captures: Vec<Capture>,
    /// The `${steps...}` references this step's request holds.
    pub refs: Vec<Ref>,
    /// Where the tokens are, so a run fills in only those places.
    templated: Templated,
}

#[derive(Debug, Clone, Default)]
struct Templated {
    url: bool,
    headers: Vec<HeaderName>,
    body: bool,
    query_key: bool,
}

/// A resolved `${steps.STEP.VAR}`: the step (by index) and variable it
/// names, and the token standing for it.
#[derive(Debug, Clone)]
pub struct Ref {
    pub step: usize,
    pub var: String,
    /// `steps.login.token`, for messages.
    pub text: String,
    token: String,
}

/// One `capture:` rule.
#[derive(Debug, Clone)]
pub struct Capture {
    pub name: String,
    pub source: Source,
    /// Applied to what the source gave: the first group (or the whole
    /// match when the regex has no group) is the value.
    pub regex: Option<Arc<Regex>>,
    /// Secret values are masked in everything Lookout shows or stores.
    pub secret: bool,
}

#[derive(Debug, Clone)]
pub enum Source {
    Json { text: String, path: JsonPath },
    Header(HeaderName),
    Body,
}

impl FlowSpec {
    /// The first step's URL: what the flow starts from.
    pub fn target(&self) -> String {
        self.steps
            .first()
            .map(|s| s.http.target())
            .unwrap_or_default()
    }
}

// ---------------------------------------------------------------------------
// Compiling the configuration

/// What each step declares, read leniently before the steps are compiled,
/// so a reference to a step that has an error elsewhere is not reported
/// twice: (name, capture names).
type Declared = Vec<(Option<String>, Vec<String>)>;

fn declared(items: &[Node]) -> Declared {
    items
        .iter()
        .map(|item| {
            let Value::Map(entries) = &item.value else {
                return (None, Vec::new());
            };
            let get = |k: &str| entries.iter().find(|(key, _)| key.name == k).map(|e| &e.1);
            let name = get("name").and_then(|n| n.scalar_text());
            let captures = match get("capture").map(|c| &c.value) {
                Some(Value::Map(c)) => c.iter().map(|(k, _)| k.name.clone()).collect(),
                _ => Vec::new(),
            };
            (name, captures)
        })
        .collect()
}

pub fn compile(
    cx: &mut Cx,
    node: &Node,
    path: &str,
    _expect: Option<&Map<'_>>,
) -> Option<FlowSpec> {
    let m = cx.map(node, path, KEYS)?;
    let list = m.required(cx, "steps")?;
    let spath = m.path("steps");
    let Value::Seq(items) = &list.value else {
        cx.error(
            &list.pos,
            &spath,
            format!("expected a list of steps, found {}", list.type_name()),
        );
        return None;
    };
    if items.is_empty() {
        cx.error(&list.pos, &spath, "a flow needs at least one step");
        return None;
    }
    if items.len() > MAX_STEPS {
        cx.error(
            &list.pos,
            &spath,
            format!(
                "a flow has at most {MAX_STEPS} steps, found {}",
                items.len()
            ),
        );
        return None;
    }
    let declared = declared(items);
    let mut steps = Vec::with_capacity(items.len());
    let mut ok = true;
    for (i, item) in items.iter().enumerate() {
        let outer = cx.step_refs.replace(Vec::new());
        let step = compile_step(cx, item, &format!("{spath}[{i}]"), i, &declared);
        cx.step_refs = outer;
        match step {
            Some(s) => steps.push(s),
            None => ok = false,
        }
    }
    ok.then_some(FlowSpec { steps })
}

fn compile_step(
    cx: &mut Cx,
    node: &Node,
    path: &str,
    i: usize,
    declared: &Declared,
) -> Option<Step> {
    let mut keys = http::KEYS.to_vec();
    keys.extend_from_slice(STEP_KEYS);
    let m = cx.map(node, path, &keys)?;
    let name = m.required_str(cx, "name").and_then(|name| {
        if !valid_name(&name) {
            m.error_at(
                cx,
                "name",
                format!(
                    "invalid step name `{name}`: use letters, digits, `_` and `-` (at most 64)"
                ),
            );
            return None;
        }
        if declared[..i]
            .iter()
            .any(|(n, _)| n.as_deref() == Some(name.as_str()))
        {
            m.error_at(cx, "name", format!("two steps are named `{name}`"));
            return None;
        }
        Some(name)
    });
    let always = m.bool_or(cx, "always", false);
    let timeout = match m.get("timeout") {
        None => Some(None),
        Some(_) => m.duration(cx, "timeout").and_then(|t| {
            if t.is_zero() {
                m.error_at(cx, "timeout", "a step's timeout must be longer than zero");
                return None;
            }
            Some(Some(t))
        }),
    };
    let expect = match m.get("expect") {
        None => None,
        Some(e) => {
            let mut keys = vec!["latency"];
            keys.extend_from_slice(http::EXPECT_KEYS);
            match cx.map(e, &m.path("expect"), &keys) {
                Some(em) => Some(em),
                None => return None,
            }
        }
    };
    let latency = expect.as_ref().and_then(|em| compile_latency(cx, em));
    // The request is an `http` section: the step's keys minus its own.
    let request = Node {
        value: Value::Map(
            m.entries
                .iter()
                .filter(|(k, _)| http::KEYS.contains(&k.name.as_str()))
                .cloned()
                .collect(),
        ),
        pos: node.pos.clone(),
    };
    let spec = http::compile(cx, &request, path, expect.as_ref());
    let captures = compile_captures(cx, &m);
    let written = cx.step_refs.take().unwrap_or_default();
    cx.step_refs = Some(Vec::new());
    let refs = resolve_refs(cx, &written, i, declared);

    let mut spec = spec?;
    let (refs, templated) = place_refs(cx, &spec, &written, refs?)?;
    // A 401 to a step that sends a body (a login form) or a captured
    // value (a session) is a refused credential, not a missing `auth`.
    spec.credentials |= spec.body.is_some() || !refs.is_empty();
    Some(Step {
        name: name?,
        always: always?,
        timeout: timeout?,
        http: spec,
        latency,
        captures: captures?,
        refs,
        templated,
    })
}

/// Checks each reference against the steps before step `i`.
fn resolve_refs(
    cx: &mut Cx,
    written: &[StepRef],
    i: usize,
    declared: &Declared,
) -> Option<Vec<Ref>> {
    let mut out = Vec::with_capacity(written.len());
    let mut ok = true;
    for (n, r) in written.iter().enumerate() {
        let text = format!("steps.{}.{}", r.step, r.var);
        let found = declared
            .iter()
            .position(|(name, _)| name.as_deref() == Some(r.step.as_str()));
        let msg = match found {
            Some(j) if j < i => {
                let captures = &declared[j].1;
                if captures.contains(&r.var) {
                    out.push(Ref {
                        step: j,
                        var: r.var.clone(),
                        text,
                        token: token(n),
                    });
                    continue;
                }
                if captures.is_empty() {
                    format!("`${{{text}}}`: step `{}` captures nothing (add a `capture:` to it)", r.step)
                } else {
                    let names: Vec<&str> = captures.iter().map(String::as_str).collect();
                    let hint = suggest(&r.var, &names)
                        .map(|s| format!("; did you mean `{s}`?"))
                        .unwrap_or_default();
                    format!(
                        "`${{{text}}}`: step `{}` captures no `{}` (it captures {}){hint}",
                        r.step,
                        r.var,
                        names.join(", ")
                    )
                }
            }
            Some(_) => format!(
                "`${{{text}}}`: step `{}` does not run before this one; a step can use only what earlier steps captured",
                r.step
            ),
            None => {
                let names: Vec<&str> = declared[..i].iter().filter_map(|(n, _)| n.as_deref()).collect();
                let hint = suggest(&r.step, &names)
                    .map(|s| format!("; did you mean `{s}`?"))
                    .unwrap_or_default();
                format!("`${{{text}}}`: there is no step named `{}`{hint}", r.step)
            }
        };
        cx.error(&r.pos, &r.path, msg);
        ok = false;
    }
    ok.then_some(out)
}

/// Finds where the compiled request holds each reference's token; a
/// reference anywhere else (an expectation, a capture rule, a password
/// that was base64-encoded) is an error.
fn place_refs(
    cx: &mut Cx,
    spec: &HttpSpec,
    written: &[StepRef],
    refs: Vec<Ref>,
) -> Option<(Vec<Ref>, Templated)> {
    let mut placed = vec![false; refs.len()];
    let mut mark = |text: &str| {
        let mut any = false;
        for (k, r) in refs.iter().enumerate() {
            if text.contains(&r.token) {
                placed[k] = true;
                any = true;
            }
        }
        any
    };
    let mut t = Templated {
        url: mark(spec.url.as_str()),
        ..Templated::default()
    };
    for (name, value) in spec.headers.iter() {
        if mark(&String::from_utf8_lossy(value.as_bytes())) && !t.headers.contains(name) {
            t.headers.push(name.clone());
        }
    }
    if let Some(body) = &spec.body {
        t.body = mark(&String::from_utf8_lossy(body));
    }
    if let Some(q) = &spec.api_key_query {
        t.query_key = mark(&q.value);
    }
    let mut ok = true;
    for (k, done) in placed.iter().enumerate() {
        if !done {
            let r = &written[k];
            cx.error(
                &r.pos,
                &r.path,
                format!(
                    "`${{{}}}` can be used in a step's url, headers, body, auth.bearer or auth.api_key.value, not here",
                    refs[k].text
                ),
            );
            ok = false;
        }
    }
    ok.then_some((refs, t))
}

fn compile_captures(cx: &mut Cx, m: &Map<'_>) -> Option<Vec<Capture>> {
    let Some(node) = m.get("capture") else {
        return Some(Vec::new());
    };
    let path = m.path("capture");
    let Value::Map(entries) = &node.value else {
        cx.error(
            &node.pos,
            &path,
            format!(
                "expected a mapping of variable names to capture rules, found {}",
                node.type_name()
            ),
        );
        return None;
    };
    let mut out = Vec::with_capacity(entries.len());
    let mut ok = true;
    for (k, v) in entries {
        let p = join(&path, &k.name);
        if !valid_name(&k.name) {
            cx.error(
                &k.pos,
                &p,
                format!(
                    "invalid variable name `{}`: use letters, digits, `_` and `-`",
                    k.name
                ),
            );
            ok = false;
            continue;
        }
        match compile_capture(cx, v, &p, &k.name) {
            Some(c) => out.push(c),
            None => ok = false,
        }
    }
    ok.then_some(out)
}

fn compile_capture(cx: &mut Cx, node: &Node, path: &str, name: &str) -> Option<Capture> {
    let c = cx.map(node, path, CAPTURE_KEYS)?;
    if c.has("json") && c.has("header") {
        cx.error(
            &node.pos,
            path,
            "give either `json` (a JSONPath into the body) or `header` (a header's name), not both",
        );
        return None;
    }
    let regex = match c.get("regex") {
        None => Some(None),
        Some(n) => c
            .str(cx, "regex")
            .and_then(|text| match crate::expect::regex(&text) {
                Ok(re) => Some(Some(re)),
                Err(e) => {
                    cx.error(&n.pos, &c.path("regex"), e);
                    None
                }
            }),
    };
    let source = if c.has("json") {
        let text = c.str(cx, "json")?;
        match JsonPath::parse(&text) {
            Ok(path) => Some(Source::Json { text, path }),
            Err(e) => {
                let hint = if text.starts_with('$') {
                    ""
                } else {
                    " (a JSONPath starts with `$`, e.g. `$.token`)"
                };
                c.error_at(cx, "json", format!("invalid JSONPath `{text}`: {e}{hint}"));
                None
            }
        }
    } else if c.has("header") {
        let text = c.str(cx, "header")?;
        match HeaderName::from_bytes(text.trim().as_bytes()) {
            Ok(h) => Some(Source::Header(h)),
            Err(_) => {
                c.error_at(cx, "header", format!("invalid header name `{text}`"));
                None
            }
        }
    } else if c.has("regex") {
        Some(Source::Body)
    } else {
        cx.error(
            &node.pos,
            path,
            "say where the value comes from: `json` (a JSONPath into the body), `header` (a header's name) or `regex` (a pattern over the body)",
        );
        None
    };
    let secret = c.bool_or(cx, "secret", true);
    Some(Capture {
        name: name.to_string(),
        source: source?,
        regex: regex?,
        secret: secret?,
    })
}

// ---------------------------------------------------------------------------
// Running

/// A value a step captured.
struct Captured {
    value: String,
    secret: bool,
}

/// What one run has captured so far, by step, and the guards that keep
/// its secret values masked until the run is over (or dropped).
struct Vars {
    by_step: Vec<HashMap<String, Captured>>,
    masked: Vec<Temporary>,
}

impl Vars {
    fn get(&self, r: &Ref) -> Option<&Captured> {
        self.by_step.get(r.step)?.get(&r.var)
    }
}

/// How much of the run's time clean-up steps keep for themselves.
fn reserve(spec: &FlowSpec, run: Duration) -> Duration {
    let kept: Duration = spec
        .steps
        .iter()
        .filter(|s| s.always)
        .map(|s| s.timeout.unwrap_or(run / CLEANUP_SHARE))
        .sum();
    kept.min(run / 2)
}

pub async fn run(spec: &FlowSpec, trace: &mut Trace) -> Result<(), Failure> {
    // The run's root span is the flow; each step's request is its child.
    trace.reserve_root_span();
    let started = Instant::now();
    let run_time = trace.timeout().unwrap_or(Duration::from_secs(3600));
    let kept = reserve(spec, run_time);
    let end = started + run_time.saturating_sub(MARGIN);
    let main_end = end - kept;
    let mut vars = Vars {
        by_step: spec.steps.iter().map(|_| HashMap::new()).collect(),
        masked: Vec::new(),
    };
    let mut records: Vec<Json> = Vec::with_capacity(spec.steps.len());
    let mut failed: Option<Failure> = None;
    for (index, step) in spec.steps.iter().enumerate() {
        let skip = if failed.is_some() && !step.always {
            Some("an earlier step failed".to_string())
        } else {
            step.refs
                .iter()
                .find(|r| vars.get(r).is_none())
                .map(|r| format!("${{{}}} was not captured", r.text))
        };
        if let Some(why) = skip {
            records.push(json!({"name": step.name, "outcome": "skipped", "reason": why}));
            trace.detail("steps", records.clone());
            continue;
        }
        let deadline = if step.always { end } else { main_end };
        let mut budget = deadline.saturating_duration_since(Instant::now());
        if let Some(t) = step.timeout {
            budget = budget.min(t);
        }
        let (record, failure) = run_step(index, step, &mut vars, budget, kept, trace).await;
        records.push(record);
        trace.detail("steps", records.clone());
        if let Some(f) = failure {
            if failed.is_none() {
                trace.detail("failed_step", step.name.clone());
                failed = Some(Failure::new(
                    f.class,
                    format!("step `{}`: {}", step.name, f.message),
                ));
            }
        }
    }
    match failed {
        Some(f) => Err(f),
        None => Ok(()),
    }
}

/// Runs one step within `budget` and returns its record for
/// `details.steps` and its failure, if any. `kept` is the time clean-up
/// steps keep, for the message when a step runs out of time.
async fn run_step(
    index: usize,
    step: &Step,
    vars: &mut Vars,
    budget: Duration,
    kept: Duration,
    trace: &mut Trace,
) -> (Json, Option<Failure>) {
    let request = match render(step, vars) {
        Ok(r) => r,
        Err(f) => {
            let record = json!({"name": step.name, "outcome": "failed", "failure": f.message});
            return (record, Some(f));
        }
    };
    let phases_before = trace.phases.clone();
    let checks_before = trace.checks.len();
    let spans_before = trace.spans_sent().len();
    let t0 = Instant::now();
    let outcome = tokio::time::timeout(budget, http::fetch_response(&request, trace)).await;
    let took = t0.elapsed();
    let mut failure = match outcome {
        Ok(Ok(fetched)) => {
            // Captured even when an expectation failed, so a secret in
            // the response is masked before anything quotes it: the
            // checks recorded above are masked again below.
            let captured = capture_all(index, step, &fetched, vars);
            for c in &mut trace.checks[checks_before..] {
                c.observed = redact::redact(&c.observed);
            }
            first_failed_check(&trace.checks[checks_before..]).or(captured.err())
        }
        Ok(Err(f)) => Some(f),
        Err(_) => {
            let during = trace
                .waiting_for
                .take()
                .map(|p| format!(" while waiting for {}", p.as_str().replace('_', " ")))
                .unwrap_or_default();
            let why = if step.timeout == Some(budget) {
                "its timeout".to_string()
            } else if !step.always && !kept.is_zero() {
                format!(
                    "the time left (the flow keeps {} for clean-up steps)",
                    human(kept)
                )
            } else {
                "the time left".to_string()
            };
            Some(Failure::new(
                FailureClass::Timeout,
                format!(
                    "{} did not finish within {}, {why}{during}",
                    request.target(),
                    human(budget)
                ),
            ))
        }
    };
    if let Some(cmp) = &step.latency {
        let holds = cmp.holds(took);
        trace.check(format!("latency {cmp}"), holds, human(took));
        if !holds && failure.is_none() {
            failure = first_failed_check(&trace.checks[checks_before..]);
        }
    }
    for c in &mut trace.checks[checks_before..] {
        c.expectation = format!("step {}: {}", step.name, c.expectation);
    }
    // What the http kind recorded belongs to this step.
    let mut record = serde_json::Map::new();
    record.insert("name".into(), step.name.clone().into());
    record.insert("method".into(), request.method.as_str().into());
    record.insert("url".into(), request.target().into());
    // The span the step's (first) request was sent with, to find it in
    // the backend's traces.
    if let Some(span) = trace.spans_sent().get(spans_before) {
        record.insert("span_id".into(), span.to_string().into());
    }
    let keys: Vec<String> = trace
        .details
        .keys()
        .filter(|k| !FLOW_DETAILS.contains(&k.as_str()))
        .cloned()
        .collect();
    for k in keys {
        if let Some(v) = trace.details.remove(&k) {
            record.insert(k, v);
        }
    }
    if let Some(wait) = record.get("retry_after_s").and_then(Json::as_f64) {
        let before = trace.details.get("retry_after_s").and_then(Json::as_f64);
        if before.is_none_or(|b| wait > b) {
            trace.detail("retry_after_s", wait);
        }
    }
    record.insert("duration_ms".into(), (took.as_secs_f64() * 1000.0).into());
    record.insert("phases".into(), phase_delta(&phases_before, &trace.phases));
    record.insert(
        "outcome".into(),
        if failure.is_some() {
            "failed"
        } else {
            "passed"
        }
        .into(),
    );
    if let Some(f) = &failure {
        record.insert("failure".into(), f.message.clone().into());
    }
    // The kind's details were written before this step's captures were
    // known (a redirect's URL may carry one).
    for v in record.values_mut() {
        if let Json::String(text) = v {
            *text = redact::redact(text);
        }
    }
    (Json::Object(record), failure)
}

/// The time each phase took in this step: the trace's totals now minus
/// what they were before it.
fn phase_delta(before: &[(Phase, Duration)], after: &[(Phase, Duration)]) -> Json {
    let mut out = serde_json::Map::new();
    for (phase, total) in after {
        let earlier = before
            .iter()
            .find(|(p, _)| p == phase)
            .map_or(Duration::ZERO, |(_, d)| *d);
        let d = total.saturating_sub(earlier);
        if !d.is_zero() {
            out.insert(phase.as_str().into(), (d.as_secs_f64() * 1000.0).into());
        }
    }
    Json::Object(out)
}

/// The step's request with every reference filled in: percent-encoded in
/// the URL, as-is in headers, the body and an API key.
fn render<'a>(step: &'a Step, vars: &Vars) -> Result<Cow<'a, HttpSpec>, Failure> {
    if step.refs.is_empty() {
        return Ok(Cow::Borrowed(&step.http));
    }
    let fill = |text: &str, encode: bool| -> (String, bool) {
        let mut out = text.to_string();
        let mut secret = false;
        for r in &step.refs {
            if !out.contains(&r.token) {
                continue;
            }
            if let Some(c) = vars.get(r) {
                secret |= c.secret;
                let v = if encode {
                    percent_encode(&c.value)
                } else {
                    c.value.clone()
                };
                out = out.replace(&r.token, &v);
            }
        }
        (out, secret)
    };
    let t = &step.templated;
    let mut spec = step.http.clone();
    if t.url {
        let (text, _) = fill(spec.url.as_str(), true);
        spec.url = http::parse_url(&text).map_err(|e| {
            Failure::new(
                FailureClass::Expectation,
                format!("the URL with captured values filled in is invalid: {e}"),
            )
        })?;
    }
    if !t.headers.is_empty() {
        let headers = Arc::make_mut(&mut spec.headers);
        for name in &t.headers {
            let Some(template) = headers.get(name) else {
                continue;
            };
            let was_sensitive = template.is_sensitive();
            let (text, secret) = fill(&String::from_utf8_lossy(template.as_bytes()), false);
            let mut value = HeaderValue::from_str(&text).map_err(|_| {
                Failure::new(
                    FailureClass::Expectation,
                    format!("a captured value cannot be sent in the `{name}` header (it holds control characters)"),
                )
            })?;
            value.set_sensitive(was_sensitive || secret || http::is_credential(name));
            headers.insert(name.clone(), value);
        }
    }
    if t.body {
        if let Some(body) = &spec.body {
            let (text, _) = fill(&String::from_utf8_lossy(body), false);
            spec.body = Some(Bytes::from(text));
        }
    }
    if t.query_key {
        if let Some(q) = &spec.api_key_query {
            let (value, _) = fill(&q.value, false);
            spec.api_key_query = Some(Arc::new(http::QueryKey {
                name: q.name.clone(),
                value,
            }));
        }
    }
    Ok(Cow::Owned(spec))
}

/// Applies step `index`'s capture rules to its response; the first that
/// finds nothing fails the step. Secret values are masked from here on.
fn capture_all(
    index: usize,
    step: &Step,
    fetched: &Fetched,
    vars: &mut Vars,
) -> Result<(), Failure> {
    let mut doc: Option<Result<Json, String>> = None;
    for c in &step.captures {
        let value = capture(c, fetched, &mut doc).map_err(|why| {
            Failure::new(
                FailureClass::Expectation,
                format!("capture `{}`: {why}", c.name),
            )
        })?;
        if c.secret {
            vars.masked.push(redact::register_temporary(&value));
        }
        if let Some(slot) = vars.by_step.get_mut(index) {
            slot.insert(
                c.name.clone(),
                Captured {
                    value,
                    secret: c.secret,
                },
            );
        }
    }
    Ok(())
}

/// One rule's value, or why there is none (never quoting the response,
/// which may hold secrets).
fn capture(
    c: &Capture,
    fetched: &Fetched,
    doc: &mut Option<Result<Json, String>>,
) -> Result<String, String> {
    let (candidates, place): (Vec<String>, String) = match &c.source {
        Source::Json { text, path } => {
            let parsed = doc.get_or_insert_with(|| {
                serde_json::from_slice(&fetched.body).map_err(|e| e.to_string())
            });
            let doc = match parsed {
                Ok(d) => d,
                Err(e) => return Err(format!("the response body is not JSON ({e})")),
            };
            let found = path.query(doc).all();
            let Some(first) = found.first() else {
                return Err(format!("nothing at {text} in the response body"));
            };
            let v = match first {
                Json::String(s) => s.clone(),
                other => other.to_string(),
            };
            (vec![v], format!("the value at {text}"))
        }
        Source::Header(name) => {
            let values: Vec<String> = fetched
                .headers
                .get_all(name)
                .iter()
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
                .collect();
            if values.is_empty() {
                return Err(format!("the response has no `{name}` header"));
            }
            (values, format!("the `{name}` header"))
        }
        Source::Body => (
            vec![String::from_utf8_lossy(&fetched.body).into_owned()],
            "the response body".to_string(),
        ),
    };
    let value = match &c.regex {
        None => candidates.into_iter().next().unwrap_or_default(),
        Some(re) => candidates
            .iter()
            .find_map(|text| {
                let caps = re.captures(text)?;
                caps.get(1)
                    .or_else(|| caps.get(0))
                    .map(|m| m.as_str().to_string())
            })
            .ok_or_else(|| format!("/{}/ matched nothing in {place}", re.as_str()))?,
    };
    if value.is_empty() {
        return Err(format!("{place} is empty"));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(source: Source, regex: Option<&str>) -> Capture {
        Capture {
            name: "v".into(),
            source,
            regex: regex.map(|r| crate::expect::regex(r).expect("regex")),
            secret: false,
        }
    }

    fn json_rule(path: &str) -> Source {
        Source::Json {
            text: path.into(),
            path: JsonPath::parse(path).expect("path"),
        }
    }

    fn response(headers: &[(&str, &str)], body: &str) -> Fetched {
        let mut h = ::http::HeaderMap::new();
        for (n, v) in headers {
            h.append(
                HeaderName::from_bytes(n.as_bytes()).expect("name"),
                HeaderValue::from_str(v).expect("value"),
            );
        }
        Fetched {
            headers: h,
            body: body.as_bytes().to_vec(),
        }
    }

    fn get(c: &Capture, f: &Fetched) -> Result<String, String> {
        capture(c, f, &mut None)
    }

    #[test]
    fn captures_take_json_values_header_groups_and_body_matches() {
        let f = response(
            &[
                ("set-cookie", "theme=dark; Path=/"),
                ("set-cookie", "sid=abc123; HttpOnly"),
            ],
            r#"{"id": 42, "token": "t-1", "tags": ["a"], "empty": ""}"#,
        );
        assert_eq!(get(&rule(json_rule("$.token"), None), &f), Ok("t-1".into()));
        assert_eq!(get(&rule(json_rule("$.id"), None), &f), Ok("42".into()));
        assert_eq!(
            get(&rule(json_rule("$.tags"), None), &f),
            Ok(r#"["a"]"#.into())
        );
        let sid = rule(
            Source::Header(HeaderName::from_static("set-cookie")),
            Some("sid=([^;]+)"),
        );
        assert_eq!(get(&sid, &f), Ok("abc123".into()));
        assert_eq!(
            get(&rule(Source::Body, Some(r#""token": "[^"]+""#)), &f),
            Ok(r#""token": "t-1""#.into())
        );
        assert_eq!(
            get(&rule(json_rule("$.nope"), None), &f),
            Err("nothing at $.nope in the response body".into())
        );
        assert_eq!(
            get(&rule(json_rule("$.empty"), None), &f),
            Err("the value at $.empty is empty".into())
        );
        assert_eq!(
            get(
                &rule(Source::Header(HeaderName::from_static("x-none")), None),
                &f
            ),
            Err("the response has no `x-none` header".into())
        );
        let miss = rule(
            Source::Header(HeaderName::from_static("set-cookie")),
            Some("csrf=(\\w+)"),
        );
        assert_eq!(
            get(&miss, &f),
            Err("/csrf=(\\w+)/ matched nothing in the `set-cookie` header".into())
        );
        let not_json = response(&[], "<html>");
        assert!(get(&rule(json_rule("$.a"), None), &not_json)
            .unwrap_err()
            .starts_with("the response body is not JSON"));
    }

    #[test]
    fn rendering_encodes_values_in_urls_and_marks_secret_headers_sensitive() {
        let yaml = "probes:\n  - name: t\n    flow:\n      steps:\n        - name: a\n          url: http://h.example/\n          capture: { id: { json: $.id, secret: false }, tok: { json: $.t } }\n        - name: b\n          url: \"http://h.example/items/${steps.a.id}?q=${steps.a.id}\"\n          headers: { X-Token: \"${steps.a.tok}\", X-Id: \"${steps.a.id}\" }\n          body: '{\"id\":\"${steps.a.id}\"}'\n";
        let (cfg, _) = crate::config::load_str(
            "t.yaml",
            yaml,
            crate::config::read::Cx::new(Box::new(|_| None)),
        )
        .expect("valid");
        let crate::probe::ProbeKind::Flow(flow) = &cfg.probes[0].kind else {
            panic!("a flow");
        };
        let mut vars = Vars {
            by_step: vec![HashMap::new(), HashMap::new()],
            masked: Vec::new(),
        };
        for (name, value, secret) in [("id", "a/b c&d", false), ("tok", "tok-9z8y7x", true)] {
            vars.by_step[0].insert(
                name.into(),
                Captured {
                    value: value.into(),
                    secret,
                },
            );
        }
        let spec = render(&flow.steps[1], &vars).expect("rendered");
        assert_eq!(
            spec.url.as_str(),
            "http://h.example/items/a%2Fb%20c%26d?q=a%2Fb%20c%26d"
        );
        let token = spec.headers.get("x-token").expect("x-token");
        assert_eq!(token.to_str().ok(), Some("tok-9z8y7x"));
        assert!(token.is_sensitive());
        assert!(!spec.headers.get("x-id").expect("x-id").is_sensitive());
        assert_eq!(spec.body.as_deref(), Some(&b"{\"id\":\"a/b c&d\"}"[..]));
        // A step without references is used as compiled.
        assert!(matches!(
            render(&flow.steps[0], &vars),
            Ok(Cow::Borrowed(_))
        ));
    }
}
