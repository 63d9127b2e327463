//! Email through SMTP (lettre): `smtp://` plain, `?tls=required` (STARTTLS)
//! or `?tls=opportunistic`, `smtps://` (implicit TLS), AUTH from the URL's
//! user and password. One multipart/alternative message per notice, with a
//! Message-ID derived from the incident and the kind, so a re-sent notice
//! is recognisable as the same message.

use lettre::message::header::ContentType;
use lettre::message::{Mailbox, MultiPart, SinglePart};
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use super::{render, Notice, NoticeKind, SendError, SendOptions};

pub(super) async fn send(
    smtp: &str,
    from: &str,
    to: &[String],
    notice: &Notice,
    opts: &SendOptions,
) -> Result<String, SendError> {
    let message = build_message(from, to, notice)?;
    let transport = transport(smtp, opts)?;
    match transport.send(message).await {
        Ok(resp) => {
            let lines: Vec<&str> = resp.message().collect();
            Ok(format!("{} {}", resp.code(), lines.join(" ")))
        }
        Err(e) => Err(classify(&e)),
    }
}

/// The Message-ID: `<lookout.42.opened@example.com>` for incident 42's
/// opening; reminders add their time; notices without an incident (tests)
/// use the probe and the time.
pub fn message_id(notice: &Notice, from: &str) -> String {
    let domain = from
        .rsplit_once('@')
        .map(|(_, d)| d.trim_end_matches('>'))
        .filter(|d| !d.is_empty())
        .unwrap_or("lookout.invalid");
    let kind = match notice.kind {
        NoticeKind::Opened => "opened",
        NoticeKind::Reminder => "reminder",
        NoticeKind::Resolved => "resolved",
        NoticeKind::Test => "test",
    };
    let local = match (notice.incident, notice.kind) {
        (Some(id), NoticeKind::Reminder) => {
            format!("lookout.{id}.{kind}.{}", notice.at.timestamp())
        }
        (Some(id), _) => format!("lookout.{id}.{kind}"),
        (None, _) => {
            let probe: String = notice
                .probe
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || c == '-' {
                        c
                    } else {
                        '_'
                    }
                })
                .collect();
            format!("lookout.{probe}.{kind}.{}", notice.at.timestamp_millis())
        }
    };
    format!("<{local}@{domain}>")
}

fn build_message(from: &str, to: &[String], notice: &Notice) -> Result<Message, SendError> {
    let from_box: Mailbox = from
        .parse()
        .map_err(|e| SendError::permanent(format!("invalid from address `{from}`: {e}")))?;
    let mut b = Message::builder()
        .from(from_box)
        .subject(render::subject(notice))
        .message_id(Some(message_id(notice, from)));
    for addr in to {
        let mb: Mailbox = addr
            .parse()
            .map_err(|e| SendError::permanent(format!("invalid to address `{addr}`: {e}")))?;
        b = b.to(mb);
    }
    // Reminders and resolutions thread under the opening message.
    if matches!(notice.kind, NoticeKind::Reminder | NoticeKind::Resolved)
        && notice.incident.is_some()
    {
        let opened = Notice {
            kind: NoticeKind::Opened,
            ..notice.clone()
        };
        let id = message_id(&opened, from);
        b = b.in_reply_to(id.clone()).references(id);
    }
    let body = MultiPart::alternative()
        .singlepart(
            SinglePart::builder()
                .header(ContentType::TEXT_PLAIN)
                .body(render::text(notice)),
        )
        .singlepart(
            SinglePart::builder()
                .header(ContentType::TEXT_HTML)
                .body(render::html(notice)),
        );
    b.multipart(body)
        .map_err(|e| SendError::permanent(format!("cannot build the message: {e}")))
}

fn transport(
    smtp: &str,
    opts: &SendOptions,
) -> Result<AsyncSmtpTransport<Tokio1Executor>, SendError> {
    let bad = |e: &dyn std::fmt::Display| {
        SendError::permanent(format!(
            "invalid SMTP URL `{}`: {e}",
            crate::redact::redact(smtp)
        ))
    };
    let mut builder = AsyncSmtpTransport::<Tokio1Executor>::from_url(smtp).map_err(|e| bad(&e))?;
    builder = builder.timeout(Some(opts.timeout));
    if let Some(ca) = &opts.ca {
        // Rebuild the TLS parameters of the URL's mode with the extra CA.
        let url = url::Url::parse(smtp).map_err(|e| bad(&e))?;
        let host = url.host_str().unwrap_or_default().to_string();
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .map(str::to_string)
            .unwrap_or(host);
        let mut params = TlsParameters::builder(host);
        for c in &ca.certs {
            let cert = Certificate::from_der(c.as_ref().to_vec())
                .map_err(|e| SendError::permanent(format!("CA `{}`: {e}", ca.path.display())))?;
            params = params.add_root_certificate(cert);
        }
        let params = params
            .build_rustls()
            .map_err(|e| SendError::permanent(format!("cannot build the TLS parameters: {e}")))?;
        let tls_mode = url
            .query_pairs()
            .find(|(k, _)| k == "tls")
            .map(|(_, v)| v.to_string());
        let tls = match (url.scheme(), tls_mode.as_deref()) {
            ("smtps", _) => Some(Tls::Wrapper(params)),
            (_, Some("required")) => Some(Tls::Required(params)),
            (_, Some("opportunistic")) => Some(Tls::Opportunistic(params)),
            _ => None,
        };
        if let Some(tls) = tls {
            builder = builder.tls(tls);
        }
    }
    Ok(builder.build())
}

/// 5xx answers and client-side problems are permanent; 4xx answers,
/// connection, TLS and timeout errors are transient.
fn classify(e: &lettre::transport::smtp::Error) -> SendError {
    let message = match e.status() {
        Some(code) => format!("SMTP {code}: {}", strip_kind(&e.to_string())),
        None => match rustls_cause(e) {
            Some(tls) => format!("TLS failed: {tls}"),
            None if e.is_tls() => format!("TLS failed: {}", innermost(e)),
            None if e.is_timeout() => "the SMTP server did not answer in time".to_string(),
            None if e.is_client() => innermost(e),
            None => format!("cannot deliver to the SMTP server: {}", innermost(e)),
        },
    };
    if e.is_permanent() || e.is_client() {
        SendError::permanent(message)
    } else {
        SendError::transient(message)
    }
}

/// lettre's `permanent error (550): text` without the prefix.
fn strip_kind(text: &str) -> &str {
    text.split_once("): ").map(|(_, t)| t).unwrap_or(text)
}

/// The rustls error somewhere in the chain (lettre reports a failed
/// handshake as a connection error).
fn rustls_cause(e: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut src: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = src {
        if let Some(r) = s.downcast_ref::<rustls::Error>() {
            return Some(r.to_string());
        }
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            if let Some(r) = io.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
                return Some(r.to_string());
            }
        }
        src = s.source();
    }
    None
}

fn innermost(e: &dyn std::error::Error) -> String {
    let mut cause = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        cause = s.to_string();
        src = s.source();
    }
    cause
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_ids_are_stable_per_incident_and_kind() {
        let mut n = Notice::test("ops", None);
        n.incident = Some(42);
        n.kind = NoticeKind::Opened;
        assert_eq!(
            message_id(&n, "Lookout <lookout@example.com>"),
            "<lookout.42.opened@example.com>"
        );
        n.kind = NoticeKind::Resolved;
        assert_eq!(message_id(&n, "l@x.org"), "<lookout.42.resolved@x.org>");
        n.incident = None;
        n.kind = NoticeKind::Test;
        assert!(message_id(&n, "l@x.org").starts_with("<lookout.lookout-test.test."));
    }
}
