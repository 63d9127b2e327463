//! URL helpers shared by the kinds configured with a URL (`http`, `redis`,
//! `postgres`, `mysql`): parsing with the password masked in every error,
//! the host without IPv6 brackets, and percent-decoding user names and
//! passwords. Each kind checks its own scheme and parameters.

use url::Url;

/// Parses `text` (trimmed) as a URL, and returns it with the text as it may
/// be shown: its password masked. Errors show only the masked text.
pub fn parse(text: &str) -> Result<(Url, String), String> {
    let shown = crate::redact::mask_url_passwords(text.trim());
    let url = Url::parse(text.trim()).map_err(|e| format!("invalid URL `{shown}`: {e}"))?;
    Ok((url, shown))
}

/// The URL's host, an IPv6 address without its brackets; `shown` is the
/// URL as [`parse`] returned it, for the error.
pub fn host(url: &Url, shown: &str) -> Result<String, String> {
    url.host_str()
        .map(|h| h.trim_start_matches('[').trim_end_matches(']'))
        .filter(|h| !h.is_empty())
        .map(str::to_string)
        .ok_or_else(|| format!("invalid URL `{shown}`: no host"))
}

/// Decodes `%XX` escapes (a user name, a password, a query parameter); a
/// `%` not followed by two hex digits stays as it is, and bytes that are
/// not UTF-8 become U+FFFD.
pub fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            if let Some(b) = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
            {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Encodes everything but RFC 3986's unreserved characters
/// (`A-Z a-z 0-9 - . _ ~`), so a value placed in a URL path or query
/// stays one value whatever it holds.
pub fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("a%20b%zz%4"), "a b%zz%4");
        assert_eq!(percent_decode("p%40ss"), "p@ss");
        assert_eq!(percent_decode("%e9%"), "\u{fffd}%");
        assert_eq!(percent_encode("a b/c?d=é~"), "a%20b%2Fc%3Fd%3D%C3%A9~");
        assert_eq!(percent_decode(&percent_encode("x&y#z")), "x&y#z");
    }

    #[test]
    fn hosts_and_masked_errors() {
        let (url, shown) = parse(" redis://u:pw@[::1]:6379/0 ").expect("valid");
        assert_eq!(shown, "redis://u:***@[::1]:6379/0");
        assert_eq!(host(&url, &shown).as_deref(), Ok("::1"));
        let e = parse("redis://u:pw@h:99999").expect_err("bad port");
        assert!(e.starts_with("invalid URL `redis://u:***@h:99999`"), "{e}");
    }
}
