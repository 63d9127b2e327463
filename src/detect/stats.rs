//! The robust statistics the detectors share: median, MAD and nearest-rank
//! quantiles over small slices of finite values. Each function sorts its
//! own copy and never panics; an empty input gives `None`. Nothing here
//! knows what the numbers mean.

/// The `q` quantile (0..=1) by nearest rank: the smallest value with at
/// least `q` of the values at or below it. With 30 values the p95 is the
/// second largest, so one outlier alone cannot move it.
pub(crate) fn quantile(values: &[f64], q: f64) -> Option<f64> {
    let sorted = sorted(values);
    let n = sorted.len();
    if n == 0 {
        return None;
    }
    let rank = (q * n as f64).ceil() as usize;
    sorted.get(rank.clamp(1, n) - 1).copied()
}

/// The median (the mean of the two middle values for an even count).
pub(crate) fn median(values: &[f64]) -> Option<f64> {
    median_sorted(&sorted(values))
}

/// The median and the median absolute deviation from it (raw, not scaled
/// to a normal σ: for normal data σ ≈ 1.4826 MAD).
pub(crate) fn median_mad(values: &[f64]) -> Option<(f64, f64)> {
    let m = median(values)?;
    let deviations: Vec<f64> = values.iter().map(|v| (v - m).abs()).collect();
    Some((m, median(&deviations)?))
}

fn sorted(values: &[f64]) -> Vec<f64> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    v.sort_by(f64::total_cmp);
    v
}

fn median_sorted(sorted: &[f64]) -> Option<f64> {
    let n = sorted.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => sorted.get(n / 2).copied(),
        _ => Some((sorted.get(n / 2 - 1)? + sorted.get(n / 2)?) / 2.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantile_is_nearest_rank() {
        let v: Vec<f64> = (1..=30).map(f64::from).collect();
        assert_eq!(quantile(&v, 0.95), Some(29.0));
        assert_eq!(quantile(&v, 0.5), Some(15.0));
        assert_eq!(quantile(&v, 0.0), Some(1.0));
        assert_eq!(quantile(&v, 1.0), Some(30.0));
        assert_eq!(quantile(&[], 0.95), None);
        assert_eq!(quantile(&[7.0], 0.95), Some(7.0));
    }

    #[test]
    fn median_and_mad_ignore_outliers_and_non_finite_values() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(&[f64::NAN, 5.0]), Some(5.0));
        assert_eq!(median(&[]), None);
        let (m, mad) = median_mad(&[10.0, 11.0, 9.0, 10.0, 1000.0]).unwrap();
        assert_eq!(m, 10.0);
        assert_eq!(mad, 1.0);
    }
}
