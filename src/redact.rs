//! Keeps secrets out of everything Lookout shows or stores.
//!
//! Every value that configuration expansion substitutes (`${VAR}`,
//! `${file:...}`) is registered here as a secret, and every string that
//! leaves the process (log lines, results, API answers, notices) is passed
//! through [`redact`]. Passwords in URLs are masked whether or not they came
//! from a variable. This module must never log what it holds.

use std::sync::{OnceLock, RwLock};

/// Shorter values are not registered: masking every "1" or "on" in output
/// would make messages unreadable, and such values are not secrets.
const MIN_SECRET_LEN: usize = 4;
const MASK: &str = "***";

fn registry() -> &'static RwLock<Vec<String>> {
    static SECRETS: OnceLock<RwLock<Vec<String>>> = OnceLock::new();
    SECRETS.get_or_init(|| RwLock::new(Vec::new()))
}

/// Remembers a value as secret from now on.
pub fn register(value: &str) {
    if value.chars().count() < MIN_SECRET_LEN {
        return;
    }
    let mut secrets = match registry().write() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    };
    if !secrets.iter().any(|s| s == value) {
        secrets.push(value.to_string());
        // Longest first, so a secret that contains another is masked whole.
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
    }
}

/// Forgets a registered value that can no longer appear anywhere: an
/// OAuth2 access token once a fresh one replaced it, so the list (which
/// every [`redact`] call scans) does not grow with every token fetched.
pub fn unregister(value: &str) {
    let mut secrets = match registry().write() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    };
    secrets.retain(|s| s != value);
}

/// Returns `text` with every registered secret and every URL password masked.
pub fn redact(text: &str) -> String {
    let mut out = mask_url_passwords(text);
    let secrets = match registry().read() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    };
    for s in secrets.iter() {
        if out.contains(s.as_str()) {
            out = out.replace(s.as_str(), MASK);
        }
    }
    out
}

/// Masks `user:password@` in anything that looks like a URL, keeping the user.
pub fn mask_url_passwords(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("://") {
        let (head, tail) = rest.split_at(i + 3);
        out.push_str(head);
        // The authority ends at the first '/', '?', '#' or whitespace.
        let end = tail
            .find(|c: char| c == '/' || c == '?' || c == '#' || c.is_whitespace())
            .unwrap_or(tail.len());
        let authority = &tail[..end];
        match authority.rfind('@') {
            Some(at) => {
                let userinfo = &authority[..at];
                match userinfo.find(':') {
                    Some(colon) => {
                        out.push_str(&userinfo[..colon]);
                        out.push(':');
                        out.push_str(MASK);
                    }
                    None => out.push_str(userinfo),
                }
                out.push_str(&authority[at..]);
            }
            None => out.push_str(authority),
        }
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_passwords_are_masked() {
        assert_eq!(
            mask_url_passwords("connect postgres://monitor:hunter2@db:5432/orders failed"),
            "connect postgres://monitor:***@db:5432/orders failed"
        );
        assert_eq!(mask_url_passwords("http://a/b@c"), "http://a/b@c");
        assert_eq!(mask_url_passwords("no url"), "no url");
    }

    #[test]
    fn an_unregistered_value_is_no_longer_masked_and_others_still_are() {
        register("old-token-9f8e7d6c");
        register("new-token-1a2b3c4d");
        unregister("old-token-9f8e7d6c");
        assert_eq!(
            redact("old-token-9f8e7d6c new-token-1a2b3c4d"),
            "old-token-9f8e7d6c ***"
        );
    }

    #[test]
    fn registered_values_are_masked() {
        register("s3cr3t-token-value");
        assert_eq!(redact("Bearer s3cr3t-token-value"), "Bearer ***");
        register("abc");
        assert_eq!(redact("abc"), "abc");
    }
}
