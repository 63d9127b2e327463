//! What the Slack and webhook notifiers share: an HTTP client on rustls
//! with the ring provider (system roots plus an optional extra CA), one
//! bounded POST, and the classification of its outcome.

use std::sync::Arc;
use std::time::Duration;

use rustls::client::Resumption;
use rustls::ClientConfig;

use super::{SendError, SendOptions};

/// The answer body shown to people is cut to this many characters.
const ANSWER_MAX: usize = 200;

/// A rustls configuration on the ring provider trusting the system's roots
/// and `opts.ca`.
pub(super) fn tls_config(opts: &SendOptions) -> Result<ClientConfig, String> {
    let mut roots = crate::probe::tlsutil::system_roots().clone();
    if let Some(ca) = &opts.ca {
        for c in &ca.certs {
            roots
                .add(c.clone())
                .map_err(|e| format!("CA `{}`: {e}", ca.path.display()))?;
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("cannot build the TLS configuration: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.resumption = Resumption::disabled();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// A client that follows no redirects and gives up after `opts.timeout`.
async fn client(opts: &SendOptions) -> Result<reqwest::Client, SendError> {
    let owned = opts.clone();
    // Reading the system trust store blocks: not on a worker thread.
    let config = tokio::task::spawn_blocking(move || tls_config(&owned))
        .await
        .map_err(|e| SendError::transient(format!("building the TLS configuration failed: {e}")))?
        .map_err(SendError::permanent)?;
    reqwest::Client::builder()
        .use_preconfigured_tls(config)
        .timeout(opts.timeout)
        .connect_timeout(opts.timeout)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("lookout/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| SendError::permanent(format!("cannot build the HTTP client: {e}")))
}

/// POSTs `body` as JSON with `headers` and classifies the outcome: 2xx is
/// delivered (the answer is `HTTP 200: <body>`); 429 is transient with the
/// Retry-After delay; 408 and 5xx are transient; other 4xx and 3xx are
/// permanent; connection errors and timeouts are transient.
pub(super) async fn post_json(
    url: &str,
    headers: &[(String, String)],
    body: Vec<u8>,
    opts: &SendOptions,
) -> Result<String, SendError> {
    let client = client(opts).await?;
    let mut req = client
        .post(url)
        .header(reqwest::header::CONTENT_TYPE, "application/json");
    for (k, v) in headers {
        let name = reqwest::header::HeaderName::from_bytes(k.as_bytes())
            .map_err(|e| SendError::permanent(format!("invalid header name `{k}`: {e}")))?;
        let value = reqwest::header::HeaderValue::from_str(v)
            .map_err(|e| SendError::permanent(format!("invalid value for header `{k}`: {e}")))?;
        req = req.header(name, value);
    }
    let resp = req
        .body(body)
        .send()
        .await
        .map_err(|e| describe(&e, opts))?;
    let status = resp.status();
    let retry_after = resp
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(parse_retry_after);
    let location = resp
        .headers()
        .get(reqwest::header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let text = match resp.bytes().await {
        Ok(b) => answer_text(&b),
        Err(e) => return Err(describe(&e, opts)),
    };
    let code = status.as_u16();
    let answer = if text.is_empty() {
        format!("HTTP {code}")
    } else {
        format!("HTTP {code}: {text}")
    };
    match code {
        200..=299 => Ok(answer),
        429 => Err(SendError {
            retry_after,
            ..SendError::transient(format!("rate limited: {answer}"))
        }),
        408 | 500..=599 => Err(SendError::transient(answer)),
        300..=399 => Err(SendError::permanent(format!(
            "{answer} (redirected to {}; configure the final URL)",
            location.as_deref().unwrap_or("nowhere")
        ))),
        _ => Err(SendError::permanent(answer)),
    }
}

/// The first line of an answer body, cut short.
fn answer_text(body: &[u8]) -> String {
    let s = String::from_utf8_lossy(body);
    let line = s
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("");
    if line.chars().count() > ANSWER_MAX {
        let mut t: String = line.chars().take(ANSWER_MAX).collect();
        t.push('…');
        t
    } else {
        line.to_string()
    }
}

pub(super) fn parse_retry_after(v: &str) -> Option<Duration> {
    crate::duration::retry_after(v)
}

fn describe(e: &reqwest::Error, opts: &SendOptions) -> SendError {
    use std::error::Error as _;
    if e.is_timeout() {
        return SendError::transient(format!(
            "no answer within {}",
            crate::duration::human(opts.timeout)
        ));
    }
    if e.is_builder() {
        return SendError::permanent(format!("invalid request: {e}"));
    }
    // The innermost cause says what happened (refused, certificate...).
    let mut cause = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        cause = s.to_string();
        src = s.source();
    }
    let what = if e.is_connect() {
        "cannot connect"
    } else {
        "request failed"
    };
    SendError::transient(format!("{what}: {cause}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_reads_seconds() {
        assert_eq!(parse_retry_after("7"), Some(Duration::from_secs(7)));
        assert_eq!(parse_retry_after(" 0 "), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("soon"), None);
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(Duration::ZERO)
        );
    }

    #[test]
    fn answers_are_one_short_line() {
        assert_eq!(answer_text(b"\n ok \nmore"), "ok");
        assert_eq!(answer_text(&[b'x'; 500]).chars().count(), ANSWER_MAX + 1);
    }
}
