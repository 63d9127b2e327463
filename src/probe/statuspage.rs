//! The `statuspage` probe kind: reads a vendor's public status API in the
//! Atlassian Statuspage format (`/api/v2/summary.json`) and fails with class
//! `vendor` when the vendor itself reports a problem with what we use.
//!
//! The request is one `http` GET (same client, same phases: dns, connect,
//! tls, first byte, transfer) with the body bounded at [`MAX_BODY`]. The
//! verdict carries the vendor's own words: incident titles, their status
//! and impact, and each affected component's status.

use serde_json::Value as Json;

use crate::config::read::{Cx, Map};
use crate::config::yaml::Node;
use crate::probe::http::{self, HttpSpec};
use crate::probe::tlsutil;
use crate::probe::Trace;
use crate::result::{Failure, FailureClass};

/// Keys accepted in the `statuspage:` section.
pub const KEYS: &[&str] = &["url", "components", "degraded_is_failure", "insecure", "ca"];
/// Keys accepted in `expect:` for this kind, besides `latency`.
pub const EXPECT_KEYS: &[&str] = &[];

/// A summary document larger than this fails as `size`: real ones are tens
/// of kilobytes.
pub const MAX_BODY: u64 = 2 * 1024 * 1024;

/// How many available component names a failure message lists.
const LISTED_NAMES: usize = 50;

/// A compiled `statuspage` probe.
#[derive(Debug, Clone)]
pub struct StatuspageSpec {
    /// The GET that fetches the summary (default headers, bounded body).
    pub http: HttpSpec,
    /// Watched component names as configured; empty watches everything.
    pub components: Vec<String>,
    /// Whether `degraded_performance` counts as a failure.
    pub degraded_is_failure: bool,
}

impl StatuspageSpec {
    pub fn target(&self) -> String {
        self.http.target()
    }
}

pub fn compile(
    cx: &mut Cx,
    node: &Node,
    path: &str,
    _expect: Option<&Map<'_>>,
) -> Option<StatuspageSpec> {
    let m = cx.map(node, path, KEYS)?;
    let url = m.required_parsed(cx, "url", http::parse_url);
    let components = match m.get("components") {
        None => Some(Vec::new()),
        Some(_) => m.string_list(cx, "components").and_then(|names| {
            let mut ok = true;
            for (i, name) in names.iter().enumerate() {
                if name.trim().is_empty() {
                    if let Some(item) = m.get("components").and_then(|n| match &n.value {
                        crate::config::yaml::Value::Seq(items) => items.get(i),
                        _ => Some(n),
                    }) {
                        cx.error(
                            &item.pos,
                            &format!("{}[{i}]", m.path("components")),
                            "a component name cannot be empty",
                        );
                    }
                    ok = false;
                }
            }
            ok.then_some(names)
        }),
    };
    let degraded_is_failure = m.bool_or(cx, "degraded_is_failure", true);
    let tls = tlsutil::compile_options(cx, &m);

    let url = url?;
    let mut spec = http::from_url(url.as_str())
        .map_err(|e| m.error_at(cx, "url", e))
        .ok()?;
    spec.max_body = MAX_BODY;
    spec.tls = tls?;
    Some(StatuspageSpec {
        http: spec,
        components: components?,
        degraded_is_failure: degraded_is_failure?,
    })
}

/// One component as the vendor reports it.
struct Component<'a> {
    name: &'a str,
    status: &'a str,
    group: bool,
    id: Option<&'a str>,
}

/// One open incident.
struct Incident<'a> {
    name: &'a str,
    status: &'a str,
    impact: &'a str,
    /// Names and ids of the components it affects.
    affects: Vec<(&'a str, Option<&'a str>)>,
}

fn str_of<'a>(v: &'a Json, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Json::as_str)
}

fn components(doc: &Json) -> Vec<Component<'_>> {
    doc.get("components")
        .and_then(Json::as_array)
        .map(|list| {
            list.iter()
                .filter_map(|c| {
                    Some(Component {
                        name: str_of(c, "name")?,
                        status: str_of(c, "status").unwrap_or("unknown"),
                        group: c.get("group").and_then(Json::as_bool).unwrap_or(false),
                        id: str_of(c, "id"),
                    })
                })
                .collect()
        })
        .unwrap_or_default()
}

fn open_incidents(doc: &Json) -> Vec<Incident<'_>> {
    doc.get("incidents")
        .and_then(Json::as_array)
        .map(|list| {
            list.iter()
                .filter_map(|i| {
                    let status = str_of(i, "status").unwrap_or("unknown");
                    if matches!(status, "resolved" | "postmortem" | "completed") {
                        return None;
                    }
                    let affects = i
                        .get("components")
                        .and_then(Json::as_array)
                        .map(|cs| {
                            cs.iter()
                                .filter_map(|c| Some((str_of(c, "name")?, str_of(c, "id"))))
                                .collect()
                        })
                        .unwrap_or_default();
                    Some(Incident {
                        name: str_of(i, "name").unwrap_or("(untitled incident)"),
                        status,
                        impact: str_of(i, "impact").unwrap_or("unknown"),
                        affects,
                    })
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Whether a component status counts as a failure.
fn failing(status: &str, degraded_is_failure: bool) -> bool {
    match status {
        "operational" | "under_maintenance" => false,
        "degraded_performance" => degraded_is_failure,
        // partial_outage, major_outage and any status we do not know.
        _ => true,
    }
}

fn same_name(a: &str, b: &str) -> bool {
    a.trim().to_lowercase() == b.trim().to_lowercase()
}

pub async fn run(spec: &StatuspageSpec, trace: &mut Trace) -> Result<(), Failure> {
    let body = http::fetch_body(&spec.http, trace).await?;
    let target = spec.target();
    if let Some(status) = trace
        .details
        .get("status")
        .and_then(Json::as_u64)
        .filter(|s| !(200..300).contains(s))
    {
        return Err(Failure::new(
            FailureClass::Expectation,
            format!("{target} answered {status}, not a status summary"),
        ));
    }
    let doc: Json = serde_json::from_slice(&body).map_err(|e| {
        Failure::new(
            FailureClass::Protocol,
            format!("{target} did not return JSON: {e}"),
        )
    })?;
    if !doc.is_object() || doc.get("status").is_none() && doc.get("components").is_none() {
        return Err(Failure::new(
            FailureClass::Protocol,
            format!(
                "{target} did not return a Statuspage summary (no `status` or `components`; is this /api/v2/summary.json?)"
            ),
        ));
    }
    judge(spec, &doc, trace)
}

/// The verdict on a parsed summary; records the details.
fn judge(spec: &StatuspageSpec, doc: &Json, trace: &mut Trace) -> Result<(), Failure> {
    let indicator = doc
        .pointer("/status/indicator")
        .and_then(Json::as_str)
        .unwrap_or("unknown");
    let description = doc
        .pointer("/status/description")
        .and_then(Json::as_str)
        .unwrap_or("");
    trace.detail("indicator", indicator);
    trace.detail("description", description);

    let all = components(doc);
    let incidents = open_incidents(doc);

    // The watched components, in configuration order (or every non-group
    // component in the vendor's order).
    let mut watched: Vec<&Component<'_>> = Vec::new();
    let mut unknown: Vec<&str> = Vec::new();
    if spec.components.is_empty() {
        watched.extend(all.iter().filter(|c| !c.group));
    } else {
        for name in &spec.components {
            match all.iter().find(|c| same_name(c.name, name)) {
                Some(c) => watched.push(c),
                None => unknown.push(name),
            }
        }
    }
    let statuses: serde_json::Map<String, Json> = watched
        .iter()
        .map(|c| (c.name.to_string(), Json::from(c.status)))
        .collect();
    trace.detail("components", statuses);

    let watches = |inc: &Incident<'_>| {
        spec.components.is_empty()
            || inc.affects.iter().any(|(name, id)| {
                watched
                    .iter()
                    .any(|c| same_name(c.name, name) || id.is_some() && c.id == *id)
            })
    };
    let relevant: Vec<&Incident<'_>> = incidents.iter().filter(|i| watches(i)).collect();
    trace.detail(
        "incidents",
        relevant.iter().map(|i| i.name).collect::<Vec<_>>(),
    );
    let maintenance: Vec<&str> = watched
        .iter()
        .filter(|c| c.status == "under_maintenance")
        .map(|c| c.name)
        .collect();
    if !maintenance.is_empty() {
        trace.detail(
            "maintenance",
            format!(
                "{} under maintenance (not counted as a failure)",
                maintenance.join(", ")
            ),
        );
    }

    if !unknown.is_empty() {
        let mut names: Vec<&str> = all.iter().map(|c| c.name).collect();
        let more = names.len().saturating_sub(LISTED_NAMES);
        names.truncate(LISTED_NAMES);
        let more = if more > 0 {
            format!(" and {more} more")
        } else {
            String::new()
        };
        let quoted: Vec<String> = unknown.iter().map(|n| format!("{n:?}")).collect();
        return Err(Failure::new(
            FailureClass::Vendor,
            format!(
                "{} reports no component named {}; available: {}{more}",
                spec.target(),
                quoted.join(", "),
                names.join(", ")
            ),
        ));
    }

    let bad: Vec<&&Component<'_>> = watched
        .iter()
        .filter(|c| failing(c.status, spec.degraded_is_failure))
        .collect();
    // Without a component list the page's own indicator counts too (a
    // vendor may post an incident without attaching components).
    let page_bad = spec.components.is_empty()
        && match indicator {
            "none" | "maintenance" => false,
            "minor" => spec.degraded_is_failure,
            _ => true,
        };
    if bad.is_empty() && relevant.is_empty() && !page_bad {
        return Ok(());
    }

    let mut parts: Vec<String> = Vec::new();
    if !relevant.is_empty() {
        let titles: Vec<String> = relevant
            .iter()
            .map(|i| format!("{:?} ({}, {})", i.name, i.status, i.impact))
            .collect();
        parts.push(format!("vendor reports {}", titles.join(", ")));
    }
    if !bad.is_empty() {
        let states: Vec<String> = bad
            .iter()
            .map(|c| format!("{} is {}", c.name, c.status))
            .collect();
        parts.push(states.join(", "));
    }
    let message = match parts.as_slice() {
        [] => format!(
            "vendor reports {:?} (indicator {indicator})",
            if description.is_empty() {
                "a problem"
            } else {
                description
            }
        ),
        [one] if relevant.is_empty() => format!("vendor reports {one}"),
        _ => parts.join(": "),
    };
    Err(Failure::new(FailureClass::Vendor, message))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(components: &[&str], degraded_is_failure: bool) -> StatuspageSpec {
        StatuspageSpec {
            http: http::from_url("http://127.0.0.1:1/api/v2/summary.json").expect("url"),
            components: components.iter().map(|s| s.to_string()).collect(),
            degraded_is_failure,
        }
    }

    fn doc(indicator: &str, comps: &[(&str, &str)], incidents: Json) -> Json {
        let comps: Vec<Json> = comps
            .iter()
            .map(|(n, s)| serde_json::json!({"id": n.to_lowercase(), "name": n, "status": s, "group": false}))
            .collect();
        serde_json::json!({
            "status": {"indicator": indicator, "description": "desc"},
            "components": comps,
            "incidents": incidents,
        })
    }

    fn verdict(s: &StatuspageSpec, d: &Json) -> (Option<Failure>, Trace) {
        let mut t = Trace::new();
        let r = judge(s, d, &mut t).err();
        (r, t)
    }

    #[test]
    fn degraded_counts_only_when_asked() {
        let d = doc(
            "minor",
            &[("API", "degraded_performance")],
            Json::Array(vec![]),
        );
        let (f, _) = verdict(&spec(&[], true), &d);
        let f = f.expect("failure");
        assert_eq!(f.class, FailureClass::Vendor);
        assert_eq!(f.message, "vendor reports API is degraded_performance");
        let (f, _) = verdict(&spec(&["api"], false), &d);
        assert!(f.is_none(), "{f:?}");
    }

    #[test]
    fn resolved_incidents_and_group_components_are_ignored() {
        let mut d = doc(
            "none",
            &[("API", "operational")],
            serde_json::json!([{"name": "Old", "status": "resolved", "impact": "major", "components": []}]),
        );
        if let Some(list) = d.get_mut("components").and_then(Json::as_array_mut) {
            list.push(
                serde_json::json!({"name": "Group", "status": "major_outage", "group": true}),
            );
        }
        let (f, t) = verdict(&spec(&[], true), &d);
        assert!(f.is_none(), "{f:?}");
        assert_eq!(t.details["incidents"], serde_json::json!([]));
    }

    #[test]
    fn an_incident_on_an_unwatched_component_does_not_fail() {
        let d = doc(
            "major",
            &[("API", "operational"), ("Email", "major_outage")],
            serde_json::json!([{"name": "Mail down", "status": "identified", "impact": "major",
                "components": [{"id": "email", "name": "Email"}]}]),
        );
        let (f, t) = verdict(&spec(&["API"], true), &d);
        assert!(f.is_none(), "{f:?}");
        assert_eq!(
            t.details["components"],
            serde_json::json!({"API": "operational"})
        );
    }
}
