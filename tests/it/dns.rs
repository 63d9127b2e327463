//! Integration tests: dns. Every test talks to a real unbound serving the
//! zone in `harness::dns_server`, or to a socket that never answers.

use lookout::probe::run_once;
use lookout::result::{FailureClass, Phase, ProbeResult};

use crate::harness::dns_server::{DnsServer, SilentDnsServer, BIG_TXT_RECORDS};
use crate::harness::{
    assert_first_error, assert_timed_out_at_1s, failure, message, probe_from_yaml,
};

/// Runs one dns probe: `dns` and `expect` are YAML flow mappings.
async fn probe(dns: &str, expect: &str) -> ProbeResult {
    let mut yaml = format!("probes:\n  - name: t\n    dns: {dns}\n    timeout: 2s\n");
    if !expect.is_empty() {
        yaml.push_str(&format!("    expect: {expect}\n"));
    }
    run_once(&probe_from_yaml(&yaml)).await
}

fn dns(server: &DnsServer, name: &str, rtype: &str) -> String {
    format!(
        "{{name: '{name}', type: {rtype}, server: '{}'}}",
        server.addr()
    )
}

fn answers(r: &ProbeResult) -> Vec<String> {
    r.details
        .get("answers")
        .and_then(|a| a.as_array())
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

/// (type, name, every answer in the zone). The first answer is used for
/// `answers_include`, all of them for `answers_exactly`.
const TABLE: &[(&str, &str, &[&str])] = &[
    ("A", "www.test", &["192.0.2.10", "192.0.2.11"]),
    ("AAAA", "www.test", &["2001:db8::10"]),
    ("CNAME", "alias.test", &["www.test"]),
    ("MX", "test", &["10 mail.test", "20 backup.test"]),
    ("TXT", "test", &["v=spf1 -all"]),
    ("NS", "test", &["ns1.test", "ns2.test"]),
    (
        "SOA",
        "test",
        &["ns1.test hostmaster.test 2024010101 3600 900 604800 300"],
    ),
    ("SRV", "_sip._tcp.test", &["10 60 5060 sip.test"]),
    ("CAA", "test", &["0 issue \"letsencrypt.org\""]),
    ("PTR", "192.0.2.10", &["www.test"]),
];

fn yaml_list(items: &[&str]) -> String {
    let quoted: Vec<String> = items.iter().map(|i| format!("'{i}'")).collect();
    format!("[{}]", quoted.join(", "))
}

#[tokio::test]
async fn every_record_type_passes_include_and_exactly() {
    let server = DnsServer::start();
    let mut problems = Vec::new();
    for (rtype, name, all) in TABLE {
        let expect = format!(
            "{{answers_include: {}, answers_exactly: {}, answer_count: {}}}",
            yaml_list(&all[..1]),
            yaml_list(all),
            all.len()
        );
        let r = probe(&dns(&server, name, rtype), &expect).await;
        if !r.success || r.checks.len() != 3 {
            problems.push(format!(
                "{rtype} {name}: {:?} checks {:?} answers {:?}",
                r.failure,
                r.checks,
                answers(&r)
            ));
        }
        if r.phase(Phase::Query).is_none() || r.phase(Phase::Dns).is_some() {
            problems.push(format!("{rtype} {name}: phases {:?}", r.phases));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[tokio::test]
async fn every_record_type_reports_a_failed_expectation() {
    let server = DnsServer::start();
    let mut problems = Vec::new();
    for (rtype, name, all) in TABLE {
        let wrong = match *rtype {
            "A" => "192.0.2.99",
            "AAAA" => "2001:db8::99",
            _ => "nothing.test",
        };
        // Include a wrong answer; claim exactly one of several (or an
        // extra one) so answers_exactly fails too.
        let exactly: Vec<&str> = if all.len() > 1 {
            all[..1].to_vec()
        } else {
            vec![all[0], wrong]
        };
        let expect = format!(
            "{{answers_include: ['{wrong}'], answers_exactly: {}}}",
            yaml_list(&exactly)
        );
        let r = probe(&dns(&server, name, rtype), &expect).await;
        let Some(f) = &r.failure else {
            problems.push(format!("{rtype} {name}: passed with {expect}"));
            continue;
        };
        let want = format!("expected answers_include [{wrong}], got [");
        if f.class != FailureClass::Expectation
            || !f.message.starts_with(&want)
            || !f.message.contains(all[0])
            || !f.message.contains(&format!("missing {wrong}"))
            || !f.message.contains("and 1 more failed expectations")
        {
            problems.push(format!("{rtype} {name}: {:?}: {}", f.class, f.message));
        }
        if r.checks.iter().filter(|c| !c.passed).count() != 2 {
            problems.push(format!("{rtype} {name}: checks {:?}", r.checks));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[tokio::test]
async fn answers_compare_names_without_case_or_trailing_dot_and_addresses_as_addresses() {
    let server = DnsServer::start();
    let r = probe(
        &dns(&server, "test", "MX"),
        "{answers_exactly: ['20  Backup.TEST.', '10 MAIL.test.']}",
    )
    .await;
    assert!(r.success, "{:?} {:?}", r.failure, r.checks);
    let r = probe(
        &dns(&server, "www.test", "AAAA"),
        "{answers_include: ['2001:0db8:0::10']}",
    )
    .await;
    assert!(r.success, "{:?} {:?}", r.failure, r.checks);
    // TXT is compared exactly, and a record's strings are joined.
    let r = probe(
        &dns(&server, "multi.test", "TXT"),
        "{answers_exactly: ['hello world']}",
    )
    .await;
    assert!(r.success, "{:?} {:?}", r.failure, r.checks);
    let r = probe(
        &dns(&server, "test", "TXT"),
        "{answers_include: ['V=SPF1 -ALL']}",
    )
    .await;
    assert_eq!(failure(&r).0, FailureClass::Expectation);
}

#[tokio::test]
async fn ptr_of_an_ipv6_address() {
    let server = DnsServer::start();
    let r = probe(
        &dns(&server, "2001:db8::10", "PTR"),
        "{answers_exactly: [www.test]}",
    )
    .await;
    assert!(r.success, "{:?} {:?}", r.failure, r.checks);
}

#[tokio::test]
async fn udp_and_tcp_transports() {
    let server = DnsServer::start();
    for proto in ["udp", "tcp"] {
        let spec = format!(
            "{{name: www.test, type: A, server: '{}', protocol: {proto}}}",
            server.addr()
        );
        let r = probe(&spec, "{answers_exactly: [192.0.2.10, 192.0.2.11]}").await;
        assert!(r.success, "{proto}: {:?} {:?}", r.failure, r.checks);
        assert_eq!(r.details["protocol"], proto);
        assert_eq!(r.details["server"], server.addr());
        assert_eq!(r.details["rcode"], "NOERROR");
        assert!(r.phase(Phase::Query).is_some(), "{:?}", r.phases);
        assert_eq!(
            r.phase(Phase::Connect).is_some(),
            proto == "tcp",
            "{proto}: {:?}",
            r.phases
        );
    }
}

#[tokio::test]
async fn a_truncated_udp_answer_is_asked_again_over_tcp() {
    let server = DnsServer::start();
    let r = probe(
        &dns(&server, "big.test", "TXT"),
        &format!("{{answer_count: {BIG_TXT_RECORDS}}}"),
    )
    .await;
    assert!(r.success, "{:?} {:?}", r.failure, r.checks);
    assert_eq!(r.details["protocol"], "tcp (udp answer truncated)");
}

#[tokio::test]
async fn nxdomain_fails_as_dns_unless_expected() {
    let server = DnsServer::start();
    let r = probe(&dns(&server, "missing.test", "A"), "").await;
    let (class, msg) = failure(&r);
    assert_eq!(class, FailureClass::Dns);
    for part in [
        "NXDOMAIN",
        "missing.test",
        " A ",
        &server.addr(),
        "does not exist",
    ] {
        assert!(msg.contains(part), "`{part}` not in: {msg}");
    }
    assert_eq!(r.details["rcode"], "NXDOMAIN");

    let r = probe(&dns(&server, "missing.test", "A"), "{rcode: NXDOMAIN}").await;
    assert!(r.success, "{:?} {:?}", r.failure, r.checks);

    // The other way round: expecting NXDOMAIN of a name that exists.
    let r = probe(&dns(&server, "www.test", "A"), "{rcode: nxdomain}").await;
    let (class, msg) = failure(&r);
    assert_eq!(class, FailureClass::Expectation);
    assert_eq!(msg, "expected rcode NXDOMAIN, got NOERROR");
}

#[tokio::test]
async fn refused_fails_as_dns_unless_expected() {
    let server = DnsServer::start();
    let r = probe(&dns(&server, "x.refused.test", "A"), "").await;
    let (class, msg) = failure(&r);
    assert_eq!(class, FailureClass::Dns);
    assert!(
        msg.starts_with("REFUSED for x.refused.test A from 127.0.0.1:"),
        "{msg}"
    );
    let r = probe(&dns(&server, "x.refused.test", "A"), "{rcode: REFUSED}").await;
    assert!(r.success, "{:?} {:?}", r.failure, r.checks);
}

#[tokio::test]
async fn no_answers_fail_as_dns_unless_expected() {
    let server = DnsServer::start();
    let r = probe(&dns(&server, "www.test", "MX"), "").await;
    let (class, msg) = failure(&r);
    assert_eq!(class, FailureClass::Dns);
    assert!(msg.starts_with("no MX records for www.test"), "{msg}");
    let r = probe(&dns(&server, "www.test", "MX"), "{answer_count: 0}").await;
    assert!(r.success, "{:?} {:?}", r.failure, r.checks);
    let r = probe(&dns(&server, "www.test", "MX"), "{answers_exactly: []}").await;
    assert!(r.success, "{:?} {:?}", r.failure, r.checks);
}

#[tokio::test]
async fn answer_count_comparisons() {
    let server = DnsServer::start();
    let r = probe(&dns(&server, "www.test", "A"), "{answer_count: '>= 2'}").await;
    assert!(r.success, "{:?} {:?}", r.failure, r.checks);
    let r = probe(&dns(&server, "www.test", "A"), "{answer_count: '> 2'}").await;
    let (class, msg) = failure(&r);
    assert_eq!(class, FailureClass::Expectation);
    assert_eq!(msg, "expected answer_count > 2, got 2 answers");
}

#[tokio::test]
async fn a_silent_server_times_out_at_the_bound() {
    let silent = SilentDnsServer::start().await;
    let yaml = format!(
        "probes:\n  - name: t\n    dns: {{name: www.test, server: '{}'}}\n    timeout: 1s\n",
        silent.addr
    );
    let r = run_once(&probe_from_yaml(&yaml)).await;
    assert_timed_out_at_1s(&r, "timeout while waiting for query");
    let msg = message(&r);
    assert!(
        msg.starts_with(&format!(
            "www.test A @{} did not finish within the 1",
            silent.addr
        )),
        "{msg}"
    );
}

#[tokio::test]
async fn nothing_listening_fails_as_connect() {
    // A UDP port with no socket: the kernel answers "port unreachable".
    let port = crate::harness::dns_server::free_port();
    for proto in ["udp", "tcp"] {
        let spec = format!("{{name: www.test, server: '127.0.0.1:{port}', protocol: {proto}}}");
        let r = probe(&spec, "").await;
        let (class, msg) = failure(&r);
        assert_eq!(class, FailureClass::Connect, "{proto}: {msg}");
        assert!(
            msg.contains(&format!("connection refused by 127.0.0.1:{port}")),
            "{msg}"
        );
    }
}

#[tokio::test]
async fn the_system_configuration_answers_localhost_from_the_hosts_file() {
    let r = probe("{name: localhost}", "{answers_include: [127.0.0.1]}").await;
    assert!(r.success, "{:?} {:?} {:?}", r.failure, r.checks, r.details);
    assert_eq!(r.details["server"], "/etc/hosts");
}

/// (dns section and expect, key of the first error, its line, words in its message)
const BAD: &[(&str, &str, usize, &str)] = &[
    (
        "    dns:\n      name: www.test\n      type: AAA\n",
        "probes[0].dns.type",
        5,
        "unsupported record type `AAA`; did you mean `AAAA`?",
    ),
    (
        "    dns:\n      name: www.test\n      type: HINFO\n",
        "probes[0].dns.type",
        5,
        "expected one of A, AAAA, CNAME, MX, TXT, NS, SOA, SRV, CAA, PTR",
    ),
    (
        "    dns:\n      type: A\n",
        "probes[0].dns",
        4,
        "missing required key `name`",
    ),
    (
        "    dns:\n      name: www.test\n      server: dns.example.com\n",
        "probes[0].dns.server",
        5,
        "invalid server `dns.example.com`",
    ),
    (
        "    dns:\n      name: www.test\n      server: 10.0.0.1:70000\n",
        "probes[0].dns.server",
        5,
        "invalid server",
    ),
    (
        "    dns:\n      name: www.test\n      protocol: quic\n",
        "probes[0].dns.protocol",
        5,
        "unknown protocol `quic`",
    ),
    (
        "    dns:\n      name: 'bad..name'\n",
        "probes[0].dns.name",
        4,
        "invalid DNS name",
    ),
    (
        "    dns:\n      name: 192.0.2.1\n",
        "probes[0].dns.name",
        4,
        "use `type: PTR`",
    ),
    (
        "    dns:\n      name: www.test\n      sever: 10.0.0.1\n",
        "probes[0].dns.sever",
        5,
        "did you mean `server`?",
    ),
    (
        "    dns: {name: www.test}\n    expect:\n      rcode: NXDOMIAN\n",
        "probes[0].expect.rcode",
        5,
        "did you mean `NXDOMAIN`?",
    ),
    (
        "    dns: {name: www.test}\n    expect:\n      answer_count: lots\n",
        "probes[0].expect.answer_count",
        5,
        "expected a number or a comparison",
    ),
    (
        "    dns: {name: www.test}\n    expect:\n      answers_include: [www.test]\n",
        "probes[0].expect.answers_include",
        5,
        "is not an IPv4 address",
    ),
];

#[test]
fn bad_dns_configuration_is_reported_with_line_and_key() {
    assert_first_error(BAD);
}
