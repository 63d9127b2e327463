//! W3C trace context for HTTP probes: the ids, the headers that carry them
//! and the configuration that says which headers to send. Each run of an
//! `http` or `flow` probe gets a fresh random 16-byte trace id (created by
//! its first request, so kinds that send no HTTP pay nothing) and each
//! request an 8-byte span id; the request carries them as `traceparent:
//! 00-<trace>-<span>-01` (sampled) and, when `tracing.vendor_header` asks,
//! as `X-Cloud-Trace-Context` or a B3 single header, unless the probe set
//! that header itself. The run records `details.trace_id`, which the probe
//! page (through [`trace_link`]), the API and the OTLP exporter
//! ([`crate::otlp`]) use. The run's root span id is the trace id's last
//! eight bytes ([`root_span_of`]): the first request of a single-request
//! probe sends it, so the backend's server span is a child of the span the
//! exporter sends, and a result needs to store only the trace id. This
//! module never logs, never blocks and never sends anything itself;
//! `statuspage` probes (third-party pages) are left plain.

use std::fmt;

use http::header::{HeaderMap, HeaderName, HeaderValue};

use crate::config::read::{join, suggest, Cx, Map};
use crate::config::yaml::{Node, Value};
use crate::config::{OtlpConfig, TracingConfig};
use crate::probe::{ProbeKind, Trace};

/// The W3C header name.
pub const TRACEPARENT: &str = "traceparent";
/// Keys of the top-level `tracing:` section.
pub const KEYS: &[&str] = &["propagate", "vendor_header", "link", "otlp"];
const OTLP_KEYS: &[&str] = &["endpoint", "headers", "service_name"];
/// What `tracing.link` must hold.
pub const LINK_PLACEHOLDER: &str = "{trace_id}";
/// `tracing.otlp.service_name` unset.
pub const DEFAULT_SERVICE_NAME: &str = "lookout";

/// A 16-byte W3C trace id, never all zero; shown as 32 lower-case hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TraceId(pub [u8; 16]);

/// An 8-byte span id, never all zero; shown as 16 lower-case hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct SpanId(pub [u8; 8]);

impl TraceId {
    /// A fresh random id from the operating system, whose last eight bytes
    /// (the run's root span id) are not all zero either; `None` only when
    /// the system has no randomness to give.
    pub fn random() -> Option<TraceId> {
        let mut b = [0u8; 16];
        // A zero half has odds of 2^-64; the loop is for correctness only.
        for _ in 0..4 {
            getrandom::fill(&mut b).ok()?;
            if b[8..].iter().any(|&x| x != 0) {
                return Some(TraceId(b));
            }
        }
        None
    }

    /// Parses 32 hex digits (either case); refuses the all-zero id.
    pub fn parse(text: &str) -> Option<TraceId> {
        let mut b = [0u8; 16];
        decode_hex(text, &mut b)?;
        b.iter().any(|&x| x != 0).then_some(TraceId(b))
    }
}

impl SpanId {
    /// A fresh random span id; `None` only when the system has no
    /// randomness to give.
    pub fn random() -> Option<SpanId> {
        let mut b = [0u8; 8];
        for _ in 0..4 {
            getrandom::fill(&mut b).ok()?;
            if b.iter().any(|&x| x != 0) {
                return Some(SpanId(b));
            }
        }
        None
    }

    /// Parses 16 hex digits (either case); refuses the all-zero id.
    pub fn parse(text: &str) -> Option<SpanId> {
        let mut b = [0u8; 8];
        decode_hex(text, &mut b)?;
        b.iter().any(|&x| x != 0).then_some(SpanId(b))
    }
}

/// The run's root span: the trace id's last eight bytes. The first request
/// of a run that is not a flow sends it, and the OTLP exporter names the
/// run's span with it, so nothing but the trace id has to be stored.
pub fn root_span_of(trace: TraceId) -> SpanId {
    let mut b = [0u8; 8];
    b.copy_from_slice(&trace.0[8..]);
    SpanId(b)
}

fn write_hex(f: &mut fmt::Formatter<'_>, bytes: &[u8]) -> fmt::Result {
    for b in bytes {
        write!(f, "{b:02x}")?;
    }
    Ok(())
}

fn decode_hex(text: &str, out: &mut [u8]) -> Option<()> {
    let t = text.as_bytes();
    if t.len() != out.len() * 2 {
        return None;
    }
    for (i, pair) in t.chunks(2).enumerate() {
        let hi = char::from(pair[0]).to_digit(16)?;
        let lo = char::from(pair[1]).to_digit(16)?;
        out[i] = u8::try_from(hi * 16 + lo).ok()?;
    }
    Some(())
}

impl fmt::Display for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_hex(f, &self.0)
    }
}

impl fmt::Debug for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TraceId({self})")
    }
}

impl fmt::Display for SpanId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_hex(f, &self.0)
    }
}

impl fmt::Debug for SpanId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SpanId({self})")
    }
}

/// The `traceparent` value: version 00, sampled.
pub fn traceparent(trace: TraceId, span: SpanId) -> String {
    format!("00-{trace}-{span}-01")
}

/// The link to a trace in the tracing backend: `template` with every
/// `{trace_id}` replaced by `trace_id`. The caller escapes the result for
/// where it goes (HTML attribute, Slack mrkdwn); the trace id is hex, so
/// the template is the only thing that needs it.
pub fn trace_link(template: &str, trace_id: &str) -> String {
    template.replace(LINK_PLACEHOLDER, trace_id)
}

/// Whether `s` is a trace id as recorded (32 lower-case hex digits), so a
/// detail read back from the database can be put into a link as it is.
pub fn is_trace_id(s: &str) -> bool {
    s.len() == 32 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// The extra, vendor-specific header `tracing.vendor_header` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VendorHeader {
    /// Google Cloud's `X-Cloud-Trace-Context: TRACE/SPAN;o=1`, the span id
    /// in decimal.
    CloudTrace,
    /// Zipkin's single header `b3: TRACE-SPAN-1`.
    B3,
}

impl VendorHeader {
    /// The names `tracing.vendor_header` accepts, lower case.
    pub const NAMES: &'static [&'static str] = &["x-cloud-trace-context", "b3"];

    pub fn name(self) -> &'static str {
        match self {
            VendorHeader::CloudTrace => "x-cloud-trace-context",
            VendorHeader::B3 => "b3",
        }
    }

    /// The header for `name` (any case), or a message with a suggestion.
    pub fn parse(name: &str) -> Result<VendorHeader, String> {
        let lower = name.trim().to_ascii_lowercase();
        match lower.as_str() {
            "x-cloud-trace-context" => Ok(VendorHeader::CloudTrace),
            "b3" => Ok(VendorHeader::B3),
            _ => Err(match suggest(&lower, Self::NAMES) {
                Some(s) => format!("unsupported vendor header `{name}`; did you mean `{s}`?"),
                None => format!(
                    "unsupported vendor header `{name}`; supported: {}",
                    Self::NAMES.join(", ")
                ),
            }),
        }
    }

    /// The header's value for one request.
    pub fn value(self, trace: TraceId, span: SpanId) -> String {
        match self {
            VendorHeader::CloudTrace => {
                format!("{trace}/{};o=1", u64::from_be_bytes(span.0))
            }
            VendorHeader::B3 => format!("{trace}-{span}-1"),
        }
    }
}

/// What an HTTP probe's requests carry; compiled into each `HttpSpec` from
/// the `tracing` section (so a reload that changes it changes the probes'
/// definitions, and they restart with the new one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Propagation {
    /// Send `traceparent`.
    pub traceparent: bool,
    /// Also send this header (only with `traceparent`).
    pub vendor: Option<VendorHeader>,
}

impl Propagation {
    /// Nothing sent: `statuspage` probes and `propagate: false`.
    pub const OFF: Propagation = Propagation {
        traceparent: false,
        vendor: None,
    };

    /// What the configuration asks of `http` and `flow` probes.
    pub fn of(cfg: &TracingConfig) -> Propagation {
        if cfg.propagate {
            Propagation {
                traceparent: true,
                vendor: cfg.vendor_header,
            }
        } else {
            Propagation::OFF
        }
    }
}

/// `traceparent` only: what a probe without a `tracing` section (and
/// `lookout probe --url`) sends.
impl Default for Propagation {
    fn default() -> Self {
        Propagation {
            traceparent: true,
            vendor: None,
        }
    }
}

/// The trace context of one run, held by its [`Trace`].
#[derive(Debug, Default)]
pub struct RunContext {
    /// Created by the first request that propagates.
    pub(crate) trace_id: Option<TraceId>,
    /// The root span stands for the whole run and no request sends it (a
    /// flow: each step's request is a child span of the run).
    pub(crate) root_reserved: bool,
    /// The span ids requests were sent with, in order.
    pub(crate) sent: Vec<SpanId>,
}

/// Adds the trace headers `prop` asks for to one outgoing request of the
/// run `trace` records, unless the probe set `traceparent` itself (then
/// the request keeps the probe's own and Lookout records no trace id for
/// it). A vendor header the probe set is kept as well.
pub fn inject(prop: Propagation, headers: &mut HeaderMap, trace: &mut Trace) {
    if !prop.traceparent || headers.contains_key(TRACEPARENT) {
        return;
    }
    let (Some(trace_id), Some(span)) = (trace.trace_id(), trace.request_span()) else {
        return;
    };
    if let Ok(v) = HeaderValue::try_from(traceparent(trace_id, span)) {
        headers.insert(HeaderName::from_static(TRACEPARENT), v);
    }
    if let Some(vendor) = prop.vendor {
        let name = HeaderName::from_static(vendor.name());
        if !headers.contains_key(&name) {
            if let Ok(v) = HeaderValue::try_from(vendor.value(trace_id, span)) {
                headers.insert(name, v);
            }
        }
    }
}

/// Gives a compiled probe the propagation the `tracing` section asks for
/// ([`Propagation::of`]):
/// `http` probes and every step of a `flow`; `statuspage` probes (a
/// vendor's public page, not our backend) send nothing.
pub fn apply(kind: &mut ProbeKind, prop: Propagation) {
    match kind {
        ProbeKind::Http(h) => h.propagation = prop,
        ProbeKind::Flow(f) => {
            for step in &mut f.steps {
                step.http.propagation = prop;
            }
        }
        ProbeKind::Statuspage(s) => s.http.propagation = Propagation::OFF,
        _ => {}
    }
}

// ---------------------------------------------------------------------------
// The `tracing:` section

/// Compiles the top-level `tracing:` section (defaults when absent),
/// reporting every problem with its file, line and key.
pub fn compile(cx: &mut Cx, top: &Map<'_>) -> Option<TracingConfig> {
    let mut out = TracingConfig::default();
    let Some(node) = top.get("tracing") else {
        return Some(out);
    };
    let m = cx.map(node, "tracing", KEYS)?;
    let mut ok = true;
    match m.bool_or(cx, "propagate", true) {
        Some(p) => out.propagate = p,
        None => ok = false,
    }
    match m.parsed(cx, "vendor_header", VendorHeader::parse) {
        Some(v) => out.vendor_header = v,
        None => ok = false,
    }
    if out.vendor_header.is_some() && !out.propagate {
        m.error_at(
            cx,
            "vendor_header",
            "a vendor header is sent only beside traceparent; remove it or set `propagate: true`",
        );
        ok = false;
    }
    match m.parsed(cx, "link", parse_link) {
        Some(l) => out.link = l,
        None => ok = false,
    }
    if let Some(n) = m.get("otlp") {
        match compile_otlp(cx, n, &m.path("otlp")) {
            Some(o) => out.otlp = Some(o),
            None => ok = false,
        }
    }
    ok.then_some(out)
}

/// `tracing.link`: an http(s) URL template holding `{trace_id}`.
fn parse_link(text: &str) -> Result<String, String> {
    let t = text.trim();
    if !t.contains(LINK_PLACEHOLDER) {
        return Err(format!(
            "the link must contain {LINK_PLACEHOLDER}, where the trace id goes \
             (e.g. https://tempo.example.com/explore?traceId={LINK_PLACEHOLDER})"
        ));
    }
    let sample = trace_link(t, "0af7651916cd43dd8448eb211c80319c");
    match url::Url::parse(&sample) {
        Ok(u) if matches!(u.scheme(), "http" | "https") => Ok(t.to_string()),
        Ok(u) => Err(format!(
            "expected an http:// or https:// URL, found scheme `{}`",
            u.scheme()
        )),
        Err(e) => Err(format!("invalid URL: {e}")),
    }
}

fn compile_otlp(cx: &mut Cx, node: &Node, path: &str) -> Option<OtlpConfig> {
    let m = cx.map(node, path, OTLP_KEYS)?;
    let endpoint = m.required_parsed(cx, "endpoint", |t| {
        let u = url::Url::parse(t.trim()).map_err(|e| format!("invalid URL: {e}"))?;
        if !matches!(u.scheme(), "http" | "https") {
            return Err(format!(
                "expected an http:// or https:// URL (OTLP/HTTP), found scheme `{}`",
                u.scheme()
            ));
        }
        Ok(u)
    });
    if let Some(u) = &endpoint {
        if cx.register_secrets {
            if let Some(p) = u.password() {
                crate::redact::register(p);
            }
        }
    }
    let headers = match m.get("headers") {
        None => Some(Vec::new()),
        Some(node) => compile_headers(cx, node, &m.path("headers")),
    };
    let service_name = match m.get("service_name") {
        None => Some(DEFAULT_SERVICE_NAME.to_string()),
        Some(_) => m.str(cx, "service_name").and_then(|s| {
            if s.trim().is_empty() {
                m.error_at(cx, "service_name", "the service name is empty");
                None
            } else {
                Some(s.trim().to_string())
            }
        }),
    };
    Some(OtlpConfig {
        endpoint: endpoint?,
        headers: headers?,
        service_name: service_name?,
    })
}

/// `tracing.otlp.headers`: names and values checked one by one (each
/// error at its own line); every value is registered as a secret, since
/// collectors take tokens in headers, whether they came from the
/// environment or were written in the file.
fn compile_headers(cx: &mut Cx, node: &Node, path: &str) -> Option<Vec<(HeaderName, HeaderValue)>> {
    let Value::Map(entries) = &node.value else {
        cx.error(
            &node.pos,
            path,
            format!(
                "expected a mapping of header names to values, found {}",
                node.type_name()
            ),
        );
        return None;
    };
    let mut ok = true;
    let mut out = Vec::with_capacity(entries.len());
    for (k, v) in entries {
        let key = join(path, &k.name);
        let Some(value) = cx.string(v, &key) else {
            ok = false;
            continue;
        };
        if cx.register_secrets {
            crate::redact::register(&value);
        }
        let Ok(name) = HeaderName::from_bytes(k.name.as_bytes()) else {
            cx.error(&k.pos, &key, format!("invalid header name `{}`", k.name));
            ok = false;
            continue;
        };
        let Ok(mut value) = HeaderValue::from_str(&value) else {
            cx.error(
                &v.pos,
                &key,
                "invalid header value (control characters are not allowed)",
            );
            ok = false;
            continue;
        };
        value.set_sensitive(true);
        out.push((name, value));
    }
    ok.then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_random_nonzero_hex() {
        let a = TraceId::random().expect("randomness");
        let b = TraceId::random().expect("randomness");
        assert_ne!(a, b);
        assert!(is_trace_id(&a.to_string()), "{a}");
        assert_eq!(TraceId::parse(&a.to_string()), Some(a));
        assert_ne!(root_span_of(a).0, [0; 8]);
        let s = SpanId::random().expect("randomness");
        assert_eq!(s.to_string().len(), 16);
        assert_eq!(SpanId::parse(&s.to_string()), Some(s));
        assert_eq!(TraceId::parse(&"0".repeat(32)), None);
        assert_eq!(SpanId::parse("00000000000000zz"), None);
        assert!(!is_trace_id("0AF7651916CD43DD8448EB211C80319C"));
    }

    #[test]
    fn header_formats() {
        let t = TraceId::parse("4bf92f3577b34da6a3ce929d0e0e4736").expect("id");
        let s = SpanId::parse("00f067aa0ba902b7").expect("id");
        assert_eq!(
            traceparent(t, s),
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        );
        assert_eq!(
            VendorHeader::CloudTrace.value(t, s),
            "4bf92f3577b34da6a3ce929d0e0e4736/67667974448284343;o=1"
        );
        assert_eq!(
            VendorHeader::B3.value(t, s),
            "4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1"
        );
        assert_eq!(
            root_span_of(t),
            SpanId::parse("a3ce929d0e0e4736").expect("id")
        );
    }

    #[test]
    fn vendor_names_are_checked_with_suggestions() {
        assert_eq!(
            VendorHeader::parse("X-Cloud-Trace-Context"),
            Ok(VendorHeader::CloudTrace)
        );
        assert_eq!(VendorHeader::parse("B3"), Ok(VendorHeader::B3));
        let e = VendorHeader::parse("x-cloud-trace-contxt").expect_err("unknown");
        assert!(e.contains("did you mean `x-cloud-trace-context`"), "{e}");
        let e = VendorHeader::parse("uber-trace-id").expect_err("unknown");
        assert!(e.contains("supported: x-cloud-trace-context, b3"), "{e}");
    }

    #[test]
    fn links_substitute_the_trace_id() {
        assert_eq!(
            trace_link("https://t.example/trace/{trace_id}?a={trace_id}", "ab"),
            "https://t.example/trace/ab?a=ab"
        );
        assert!(parse_link("https://t.example/x").is_err());
        assert!(parse_link("ftp://t.example/{trace_id}").is_err());
        assert!(parse_link("https://t.example/{trace_id}").is_ok());
    }

    #[test]
    fn inject_sends_one_trace_per_run_and_a_span_per_request() {
        let mut trace = Trace::new();
        let prop = Propagation {
            traceparent: true,
            vendor: Some(VendorHeader::B3),
        };
        let mut first = HeaderMap::new();
        inject(prop, &mut first, &mut trace);
        let mut second = HeaderMap::new();
        inject(prop, &mut second, &mut trace);
        let tp = |h: &HeaderMap| {
            h.get(TRACEPARENT)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
                .expect("traceparent")
        };
        let (a, b) = (tp(&first), tp(&second));
        let trace_id = trace.details["trace_id"].as_str().expect("recorded");
        assert!(a.starts_with(&format!("00-{trace_id}-")) && a.ends_with("-01"));
        assert_eq!(a[..36], b[..36]);
        assert_ne!(a, b);
        // The first request of a run carries the root span.
        let root = root_span_of(TraceId::parse(trace_id).expect("id"));
        assert_eq!(&a[36..52], root.to_string());
        assert_eq!(trace.spans_sent().len(), 2);
        assert!(first.contains_key("b3"));

        let mut own = HeaderMap::new();
        own.insert(TRACEPARENT, HeaderValue::from_static("00-x-y-00"));
        let mut fresh = Trace::new();
        inject(prop, &mut own, &mut fresh);
        assert_eq!(
            own.get(TRACEPARENT).map(|v| v.as_bytes()),
            Some(&b"00-x-y-00"[..])
        );
        assert!(!own.contains_key("b3"));
        assert!(fresh.details.get("trace_id").is_none());

        let mut off = HeaderMap::new();
        inject(Propagation::OFF, &mut off, &mut fresh);
        assert!(off.is_empty());
    }
}
