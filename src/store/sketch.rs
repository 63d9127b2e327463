//! A mergeable latency sketch: DDSketch-style logarithmic buckets over
//! durations in microseconds, with a compact binary encoding of our own.
//!
//! Every value `v >= 1 µs` falls in bucket `i = ceil(log_γ v)` with
//! `γ = (1 + α) / (1 - α)` and `α =` [`RELATIVE_ERROR`] (1%); a bucket is
//! reported as `2γ^i / (γ + 1)`, which is within `α` of every value in it.
//! Zero has a bucket of its own. Counts per bucket are exact integers, so
//! merging two sketches is exact too: `merge(a, b)` is the sketch of the
//! union, and a nearest-rank quantile of a merged sketch is within 1% of the
//! exact nearest-rank quantile of all the values it was built from.
//!
//! Why not a crate: `sketches-ddsketch` serializes only through serde (with
//! floating-point fields and a dense store), and `hdrhistogram`'s V2 format
//! has a 40-byte header and needs flate2 to get small. A rollup row is
//! written for every probe every minute, and most minutes hold one or two
//! runs, so the encoding must cost a few bytes: one format byte, the zero
//! count, the number of buckets, then each bucket as a varint key delta and
//! a varint count (8 bytes for two runs). The format (and with it `α`) is
//! fixed by its first byte, so stored sketches stay readable.

use std::fmt;

/// The sketch's relative error: a quantile it reports is within 1% of the
/// exact nearest-rank quantile of the values it holds.
pub const RELATIVE_ERROR: f64 = 0.01;

/// First byte of an encoded sketch: the format, which fixes `α`.
const FORMAT_V1: u8 = 1;

/// Largest bucket key: the bucket of `u64::MAX` µs is about 2,200.
const MAX_KEY: i32 = 4_096;

/// `γ`, the ratio between the bounds of consecutive buckets.
fn gamma() -> f64 {
    (1.0 + RELATIVE_ERROR) / (1.0 - RELATIVE_ERROR)
}

/// The bucket of a value of at least 1 µs.
fn key_of(us: u64) -> i32 {
    // ln(u64::MAX) / ln(γ) is about 2,200: the cast cannot saturate.
    ((us as f64).ln() / gamma().ln()).ceil() as i32
}

/// The value a bucket stands for: within `α` of anything in it.
fn value_of(key: i32) -> f64 {
    let g = gamma();
    2.0 * g.powi(key) / (g + 1.0)
}

/// Durations in microseconds, bucketed logarithmically.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sketch {
    /// Values of 0 µs.
    zeros: u64,
    /// `(key, count)`, sorted by key, every count at least 1.
    buckets: Vec<(i32, u64)>,
}

/// Why bytes could not be read as a sketch.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SketchError {
    #[error("empty sketch encoding")]
    Empty,
    #[error("unknown sketch format {0}")]
    Format(u8),
    #[error("sketch encoding ends in the middle of a number")]
    Truncated,
    #[error("sketch encoding holds a number too large")]
    Overflow,
    #[error("sketch encoding holds a number in more bytes than it needs")]
    Overlong,
    #[error("sketch bucket {0} is out of range")]
    Key(i64),
    #[error("sketch buckets are not in increasing order")]
    Order,
    #[error("sketch bucket with a count of zero")]
    ZeroCount,
    #[error("{0} unexpected bytes after the sketch")]
    Trailing(usize),
}

impl Sketch {
    pub fn new() -> Sketch {
        Sketch::default()
    }

    /// A sketch of `count` values all equal to `us`.
    pub fn repeated(us: u64, count: u64) -> Sketch {
        let mut s = Sketch::new();
        s.add_n(us, count);
        s
    }

    /// Adds one value.
    pub fn add(&mut self, us: u64) {
        self.add_n(us, 1);
    }

    fn add_n(&mut self, us: u64, n: u64) {
        if n == 0 {
            return;
        }
        if us == 0 {
            self.zeros = self.zeros.saturating_add(n);
            return;
        }
        let key = key_of(us);
        match self.buckets.binary_search_by_key(&key, |(k, _)| *k) {
            Ok(i) => self.buckets[i].1 = self.buckets[i].1.saturating_add(n),
            Err(i) => self.buckets.insert(i, (key, n)),
        }
    }

    /// Adds every value of `other`: the result is the sketch of both sets.
    pub fn merge(&mut self, other: &Sketch) {
        self.zeros = self.zeros.saturating_add(other.zeros);
        if other.buckets.is_empty() {
            return;
        }
        let (a, b) = (&self.buckets, &other.buckets);
        let mut out = Vec::with_capacity(a.len() + b.len());
        let (mut i, mut j) = (0, 0);
        while i < a.len() && j < b.len() {
            let (ka, ca) = a[i];
            let (kb, cb) = b[j];
            if ka == kb {
                out.push((ka, ca.saturating_add(cb)));
                i += 1;
                j += 1;
            } else if ka < kb {
                out.push(a[i]);
                i += 1;
            } else {
                out.push(b[j]);
                j += 1;
            }
        }
        out.extend_from_slice(&a[i..]);
        out.extend_from_slice(&b[j..]);
        self.buckets = out;
    }

    /// How many values it holds.
    pub fn count(&self) -> u64 {
        self.buckets
            .iter()
            .fold(self.zeros, |n, (_, c)| n.saturating_add(*c))
    }

    /// The nearest-rank `q` quantile (0.0 to 1.0) in microseconds, within
    /// [`RELATIVE_ERROR`] of the exact one; `None` when empty.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let n = self.count();
        if n == 0 {
            return None;
        }
        // Nearest rank: the smallest value with at least q·n values at or
        // below it. The small epsilon keeps 0.95 × 100 from becoming 96.
        let rank = ((q.clamp(0.0, 1.0) * n as f64) - 1e-9).ceil().max(1.0) as u64;
        let rank = rank.min(n);
        if rank <= self.zeros {
            return Some(0.0);
        }
        let mut seen = self.zeros;
        for (key, count) in &self.buckets {
            seen = seen.saturating_add(*count);
            if seen >= rank {
                return Some(value_of(*key));
            }
        }
        self.buckets.last().map(|(k, _)| value_of(*k))
    }

    /// The compact binary form (see the module documentation).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(4 + 3 * self.buckets.len());
        out.push(FORMAT_V1);
        put_varint(&mut out, self.zeros);
        put_varint(&mut out, self.buckets.len() as u64);
        let mut prev: Option<i32> = None;
        for (key, count) in &self.buckets {
            match prev {
                None => put_varint(&mut out, zigzag(i64::from(*key))),
                Some(p) => put_varint(&mut out, (i64::from(*key) - i64::from(p)) as u64),
            }
            put_varint(&mut out, *count);
            prev = Some(*key);
        }
        out
    }

    /// Reads what [`encode`](Sketch::encode) wrote. Anything else is an
    /// error, never a panic.
    pub fn decode(bytes: &[u8]) -> Result<Sketch, SketchError> {
        let (&format, rest) = bytes.split_first().ok_or(SketchError::Empty)?;
        if format != FORMAT_V1 {
            return Err(SketchError::Format(format));
        }
        let mut r = Reader { bytes: rest };
        let zeros = r.varint()?;
        let n = r.varint()?;
        // Each bucket takes at least two bytes: a larger count is garbage,
        // and checking first keeps garbage from allocating.
        if n > (r.bytes.len() / 2) as u64 {
            return Err(SketchError::Truncated);
        }
        let mut buckets = Vec::with_capacity(n as usize);
        let mut key: i64 = 0;
        for i in 0..n {
            if i == 0 {
                key = unzigzag(r.varint()?);
            } else {
                let delta = r.varint()?;
                if delta == 0 {
                    return Err(SketchError::Order);
                }
                key = key.saturating_add(i64::try_from(delta).map_err(|_| SketchError::Overflow)?);
            }
            let k = i32::try_from(key)
                .ok()
                .filter(|k| (0..=MAX_KEY).contains(k))
                .ok_or(SketchError::Key(key))?;
            let count = r.varint()?;
            if count == 0 {
                return Err(SketchError::ZeroCount);
            }
            buckets.push((k, count));
        }
        if !r.bytes.is_empty() {
            return Err(SketchError::Trailing(r.bytes.len()));
        }
        Ok(Sketch { zeros, buckets })
    }
}

impl fmt::Display for Sketch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "sketch of {} values in {} buckets",
            self.count(),
            self.buckets.len() + usize::from(self.zeros > 0)
        )
    }
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

/// LEB128: seven bits per byte, low bits first, high bit set on all but
/// the last byte.
fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

struct Reader<'a> {
    bytes: &'a [u8],
}

impl Reader<'_> {
    fn varint(&mut self) -> Result<u64, SketchError> {
        let mut v: u64 = 0;
        for (i, &b) in self.bytes.iter().enumerate() {
            let shift = 7 * i as u32;
            let bits = u64::from(b & 0x7f);
            if shift >= 64 || (shift == 63 && bits > 1) {
                return Err(SketchError::Overflow);
            }
            v |= bits << shift;
            if b & 0x80 == 0 {
                if b == 0 && i > 0 {
                    return Err(SketchError::Overlong);
                }
                self.bytes = &self.bytes[i + 1..];
                return Ok(v);
            }
        }
        Err(SketchError::Truncated)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The exact nearest-rank quantile of `values`.
    fn exact(values: &[u64], q: f64) -> u64 {
        let mut v = values.to_vec();
        v.sort_unstable();
        let rank = ((q * v.len() as f64) - 1e-9).ceil().max(1.0) as usize;
        v[rank.min(v.len()) - 1]
    }

    fn sketch_of(values: &[u64]) -> Sketch {
        let mut s = Sketch::new();
        for v in values {
            s.add(*v);
        }
        s
    }

    fn within_error(got: f64, want: u64) -> bool {
        let want = want as f64;
        (got - want).abs() <= want * RELATIVE_ERROR * (1.0 + 1e-9)
    }

    #[test]
    fn a_minute_with_two_runs_costs_a_few_bytes() {
        let s = sketch_of(&[41_250, 38_900]);
        let bytes = s.encode();
        assert!(bytes.len() <= 8, "{} bytes: {bytes:?}", bytes.len());
        assert_eq!(Sketch::decode(&bytes), Ok(s));
        assert_eq!(Sketch::new().encode().len(), 3);
    }

    #[test]
    fn percentiles_of_1_to_100_ms() {
        let values: Vec<u64> = (1..=100).map(|ms| ms * 1_000).collect();
        let s = sketch_of(&values);
        for (q, want) in [
            (0.5, 50_000),
            (0.95, 95_000),
            (0.99, 99_000),
            (1.0, 100_000),
        ] {
            let got = s.quantile(q).expect("values");
            assert!(within_error(got, want), "q{q}: {got} vs {want}");
        }
        assert_eq!(s.count(), 100);
        assert_eq!(Sketch::new().quantile(0.5), None);
    }

    #[test]
    fn zero_has_its_own_bucket() {
        let s = sketch_of(&[0, 0, 0, 5]);
        assert_eq!(s.quantile(0.5), Some(0.0));
        assert_eq!(s.quantile(0.75), Some(0.0));
        assert!(within_error(s.quantile(1.0).expect("values"), 5));
        assert_eq!(Sketch::decode(&s.encode()), Ok(s));
    }

    #[test]
    fn the_largest_durations_fit() {
        let s = sketch_of(&[1, u64::MAX]);
        assert_eq!(Sketch::decode(&s.encode()), Ok(s.clone()));
        assert!(s.quantile(1.0).expect("values") > 1.8e19);
    }

    #[test]
    fn garbage_is_an_error() {
        let cases: &[(&[u8], SketchError)] = &[
            (&[], SketchError::Empty),
            (&[9, 0, 0], SketchError::Format(9)),
            (&[1, 0x80], SketchError::Truncated),
            (&[1, 0, 5, 2, 1], SketchError::Truncated),
            (&[1, 0, 1, 2, 0], SketchError::ZeroCount),
            (&[1, 0, 2, 2, 1, 0, 1], SketchError::Order),
            (&[1, 0, 1, 1, 1], SketchError::Key(-1)),
            (&[1, 0, 0, 7], SketchError::Trailing(1)),
            (&[1, 0x80, 0x00, 0], SketchError::Overlong),
            (
                &[
                    1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f,
                ],
                SketchError::Overflow,
            ),
        ];
        for (bytes, want) in cases {
            assert_eq!(Sketch::decode(bytes).as_ref(), Err(want), "{bytes:?}");
        }
    }

    proptest! {
        #[test]
        fn quantiles_are_within_the_stated_error(
            values in prop::collection::vec(0u64..5_000_000_000, 1..400),
            q in 0.0f64..=1.0,
        ) {
            let s = sketch_of(&values);
            let want = exact(&values, q);
            let got = s.quantile(q).expect("values");
            prop_assert!(within_error(got, want), "q{} got {} want {}", q, got, want);
        }

        #[test]
        fn merging_is_the_sketch_of_the_union(
            a in prop::collection::vec(0u64..10_000_000, 0..200),
            b in prop::collection::vec(0u64..10_000_000, 0..200),
        ) {
            let mut merged = sketch_of(&a);
            merged.merge(&sketch_of(&b));
            let union: Vec<u64> = a.iter().chain(&b).copied().collect();
            prop_assert_eq!(&merged, &sketch_of(&union));
            prop_assert_eq!(merged.count(), union.len() as u64);
        }

        #[test]
        fn encoding_round_trips(values in prop::collection::vec(any::<u64>(), 0..300)) {
            let s = sketch_of(&values);
            prop_assert_eq!(Sketch::decode(&s.encode()), Ok(s));
        }

        #[test]
        fn decoding_any_bytes_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
            if let Ok(s) = Sketch::decode(&bytes) {
                // Whatever decodes is canonical: it encodes back the same.
                prop_assert_eq!(s.encode(), bytes);
            }
        }
    }
}
