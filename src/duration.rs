//! Human durations as written in configuration: `500ms`, `30s`, `5m`, `1h`,
//! `14d`, and sums of them such as `1h30m`. A bare number is refused, because
//! "30" could mean seconds or milliseconds and guessing is how outages start.

use std::time::Duration;

/// Parses a duration; the error says what was wrong in words.
pub fn parse(text: &str) -> Result<Duration, String> {
    let s = text.trim();
    if s.is_empty() {
        return Err("empty duration; write e.g. 30s, 500ms, 5m, 1h or 14d".into());
    }
    let mut total: u128 = 0;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits == 0 {
            return Err(format!("invalid duration `{s}`: expected a number at `{rest}`; write e.g. 30s, 500ms, 5m, 1h or 14d"));
        }
        let n: u128 = rest[..digits]
            .parse()
            .map_err(|_| format!("invalid duration `{s}`: number too large"))?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let nanos_per: u128 = match unit {
            "ns" => 1,
            "us" | "µs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            "d" => 86_400_000_000_000,
            "w" => 604_800_000_000_000,
            "" => {
                return Err(format!(
                    "invalid duration `{s}`: missing unit; write e.g. {n}s or {n}ms"
                ))
            }
            other => {
                return Err(format!(
                    "invalid duration `{s}`: unknown unit `{other}` (use ms, s, m, h, d or w)"
                ))
            }
        };
        total = total
            .checked_add(
                n.checked_mul(nanos_per)
                    .ok_or_else(|| format!("invalid duration `{s}`: too large"))?,
            )
            .ok_or_else(|| format!("invalid duration `{s}`: too large"))?;
    }
    // Anything past a century is a typo, and it keeps every later
    // arithmetic on instants far from overflow.
    if total > 100 * 365 * 86_400_000_000_000 {
        return Err(format!("invalid duration `{s}`: longer than 100 years"));
    }
    Ok(Duration::from_nanos(total as u64))
}

/// Formats a duration the way people write it: `250ms`, `1.2s`, `10s`,
/// `5m`, `3d`. Whole units print without decimals, so a configured `30s`
/// reads back as `30s`.
pub fn human(d: Duration) -> String {
    const UNITS: [(u128, &str); 5] = [
        (86_400_000_000_000, "d"),
        (3_600_000_000_000, "h"),
        (60_000_000_000, "m"),
        (1_000_000_000, "s"),
        (1_000_000, "ms"),
    ];
    let nanos = d.as_nanos();
    if nanos == 0 {
        return "0s".into();
    }
    for (size, unit) in UNITS {
        if nanos >= size && nanos % size == 0 {
            return format!("{}{unit}", nanos / size);
        }
    }
    let ms = d.as_secs_f64() * 1000.0;
    if ms < 1.0 {
        format!("{ms:.2}ms")
    } else if ms < 10.0 {
        format!("{ms:.1}ms")
    } else if ms < 1000.0 {
        format!("{ms:.0}ms")
    } else if ms < 60_000.0 {
        format!("{:.2}s", ms / 1000.0)
    } else if ms < 3_600_000.0 {
        format!("{:.1}m", ms / 60_000.0)
    } else if ms < 86_400_000.0 {
        format!("{:.1}h", ms / 3_600_000.0)
    } else {
        format!("{:.1}d", ms / 86_400_000.0)
    }
}

/// A `Retry-After` header's value: delay-seconds or an HTTP date (then
/// the time left until it, zero if past); `None` when it is neither.
pub fn retry_after(v: &str) -> Option<Duration> {
    let v = v.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = chrono::DateTime::parse_from_rfc2822(v).ok()?;
    let left = when.with_timezone(&chrono::Utc) - chrono::Utc::now();
    Some(left.to_std().unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units() {
        for (text, want) in [
            ("500ms", Duration::from_millis(500)),
            ("30s", Duration::from_secs(30)),
            ("5m", Duration::from_secs(300)),
            ("1h", Duration::from_secs(3600)),
            ("14d", Duration::from_secs(14 * 86400)),
            ("1h30m", Duration::from_secs(5400)),
        ] {
            assert_eq!(parse(text), Ok(want), "{text}");
        }
    }

    #[test]
    fn human_reads_back_as_written() {
        for text in ["500ms", "10s", "5m", "1h", "14d", "0s"] {
            assert_eq!(human(parse(text).expect("valid")), text);
        }
        assert_eq!(human(Duration::from_micros(1500)), "1.5ms");
        assert_eq!(human(Duration::from_millis(1234)), "1234ms");
        assert_eq!(human(Duration::from_micros(1_234_500)), "1.23s");
    }

    #[test]
    fn refusals_say_why() {
        assert!(parse("30").unwrap_err().contains("missing unit"));
        assert!(parse("3x").unwrap_err().contains("unknown unit"));
        assert!(parse("ms").unwrap_err().contains("expected a number"));
        assert!(parse("99999999999999999999999d").is_err());
    }
}
