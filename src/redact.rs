//! Keeps secrets out of everything Lookout shows or stores.
//!
//! Every value that configuration expansion substitutes (`${VAR}`,
//! `${file:...}`) is registered here as a secret, and every string that
//! leaves the process (log lines, results, API answers, notices) is passed
//! through [`redact`]. Passwords in URLs are masked whether or not they came
//! from a variable. This module must never log what it holds.

use std::collections::HashMap;
use std::sync::{OnceLock, RwLock};

/// Shorter values are not registered: masking every "1" or "on" in output
/// would make messages unreadable, and such values are not secrets.
const MIN_SECRET_LEN: usize = 4;
const MASK: &str = "***";

/// The secrets, longest first, and how many [`Temporary`] guards hold
/// each value that was registered only for a while.
#[derive(Default)]
struct Registry {
    list: Vec<String>,
    temporary: HashMap<String, usize>,
}

impl Registry {
    fn add(&mut self, value: &str) {
        if !self.list.iter().any(|s| s == value) {
            self.list.push(value.to_string());
            // Longest first, so a secret that contains another is masked whole.
            self.list.sort_by_key(|s| std::cmp::Reverse(s.len()));
        }
    }
}

fn registry() -> &'static RwLock<Registry> {
    static SECRETS: OnceLock<RwLock<Registry>> = OnceLock::new();
    SECRETS.get_or_init(|| RwLock::new(Registry::default()))
}

fn write() -> std::sync::RwLockWriteGuard<'static, Registry> {
    match registry().write() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    }
}

/// Remembers a value as secret from now on.
pub fn register(value: &str) {
    if value.chars().count() < MIN_SECRET_LEN {
        return;
    }
    let mut r = write();
    // A value registered for good is no longer only temporary.
    r.temporary.remove(value);
    r.add(value);
}

/// Forgets a registered value that can no longer appear anywhere: an
/// OAuth2 access token once a fresh one replaced it, so the list (which
/// every [`redact`] call scans) does not grow with every token fetched.
pub fn unregister(value: &str) {
    let mut r = write();
    r.temporary.remove(value);
    r.list.retain(|s| s != value);
}

/// A value masked for as long as this guard lives: a secret a flow probe
/// captured during one run. Guards are counted, so two runs that capture
/// the same value keep it masked until both are done; a value also
/// registered for good stays registered.
#[must_use = "the value is masked only while the guard lives"]
pub struct Temporary(Option<String>);

/// Masks `value` until the returned guard is dropped.
pub fn register_temporary(value: &str) -> Temporary {
    if value.chars().count() < MIN_SECRET_LEN {
        return Temporary(None);
    }
    let mut r = write();
    let permanent = r.list.iter().any(|s| s == value) && !r.temporary.contains_key(value);
    if permanent {
        return Temporary(None);
    }
    *r.temporary.entry(value.to_string()).or_insert(0) += 1;
    r.add(value);
    Temporary(Some(value.to_string()))
}

impl Drop for Temporary {
    fn drop(&mut self) {
        let Some(value) = self.0.take() else { return };
        let mut r = write();
        let Some(count) = r.temporary.get_mut(&value) else {
            return;
        };
        *count -= 1;
        if *count == 0 {
            r.temporary.remove(&value);
            r.list.retain(|s| *s != value);
        }
    }
}

/// Returns `text` with every registered secret and every URL password masked.
pub fn redact(text: &str) -> String {
    let mut out = mask_url_passwords(text);
    let secrets = match registry().read() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    };
    for s in secrets.list.iter() {
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
    fn temporary_values_are_masked_while_any_guard_lives() {
        let a = register_temporary("captured-5e6f7a8b");
        let b = register_temporary("captured-5e6f7a8b");
        assert_eq!(redact("t=captured-5e6f7a8b"), "t=***");
        drop(a);
        assert_eq!(redact("t=captured-5e6f7a8b"), "t=***");
        drop(b);
        assert_eq!(redact("t=captured-5e6f7a8b"), "t=captured-5e6f7a8b");
        // A value registered for good outlives a temporary guard.
        register("config-secret-0a1b2c3d");
        drop(register_temporary("config-secret-0a1b2c3d"));
        assert_eq!(redact("config-secret-0a1b2c3d"), "***");
        let t = register_temporary("both-ways-9a8b7c6d");
        register("both-ways-9a8b7c6d");
        drop(t);
        assert_eq!(redact("both-ways-9a8b7c6d"), "***");
    }

    #[test]
    fn registered_values_are_masked() {
        register("s3cr3t-token-value");
        assert_eq!(redact("Bearer s3cr3t-token-value"), "Bearer ***");
        register("abc");
        assert_eq!(redact("abc"), "abc");
    }
}
