//! The generic JSON webhook: the [`Notice`] as serde serializes it, with the
//! user's headers and, when a secret is configured, an HMAC-SHA256
//! signature of the exact body bytes:
//!
//! ```text
//! X-Lookout-Timestamp: 1700000000
//! X-Lookout-Signature: sha256=<hex of HMAC-SHA256(secret, body)>
//! ```

use std::collections::BTreeMap;

use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::{http, Notice, SendError, SendOptions};

pub const SIGNATURE_HEADER: &str = "X-Lookout-Signature";
pub const TIMESTAMP_HEADER: &str = "X-Lookout-Timestamp";

/// `sha256=<hex>`: the value of [`SIGNATURE_HEADER`] for `body`.
pub fn signature(secret: &str, body: &[u8]) -> Result<String, SendError> {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes())
        .map_err(|e| SendError::permanent(format!("cannot use the webhook secret: {e}")))?;
    mac.update(body);
    let digest = mac.finalize().into_bytes();
    let mut hex = String::with_capacity(7 + digest.len() * 2);
    hex.push_str("sha256=");
    for b in digest {
        hex.push_str(&format!("{b:02x}"));
    }
    Ok(hex)
}

pub(super) async fn send(
    url: &str,
    headers: &BTreeMap<String, String>,
    secret: Option<&str>,
    notice: &Notice,
    opts: &SendOptions,
) -> Result<String, SendError> {
    let body = serde_json::to_vec(notice)
        .map_err(|e| SendError::permanent(format!("cannot encode the notice: {e}")))?;
    let mut all: Vec<(String, String)> = headers
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    if let Some(secret) = secret {
        all.push((SIGNATURE_HEADER.into(), signature(secret, &body)?));
        all.push((
            TIMESTAMP_HEADER.into(),
            chrono::Utc::now().timestamp().to_string(),
        ));
    }
    http::post_json(url, &all, body, opts).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_matches_a_known_vector() {
        // RFC 4231 test case 2.
        assert_eq!(
            signature("Jefe", b"what do ya want for nothing?").unwrap_or_default(),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
