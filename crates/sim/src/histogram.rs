//! A lock-free latency histogram in microseconds: log-linear buckets (32 per power of two, so a
//! percentile is within ~3 % of the truth) that any number of calls can record into at once.

use std::sync::atomic::{AtomicU64, Ordering};

const SUB_BITS: u32 = 5;
const SUB: u64 = 1 << SUB_BITS;
/// Values above 2^32 µs (71 minutes) land in the last bucket; nothing here lasts that long.
const MAX_VALUE: u64 = (1 << 32) - 1;
const BUCKETS: usize = index(MAX_VALUE) + 1;

pub struct Histogram {
    buckets: Box<[AtomicU64]>,
    count: AtomicU64,
    max: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Self {
        Self {
            buckets: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
            count: AtomicU64::new(0),
            max: AtomicU64::new(0),
        }
    }
}

impl Histogram {
    pub fn record(&self, micros: u64) {
        self.buckets[index(micros.min(MAX_VALUE))].fetch_add(1, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
        self.max.fetch_max(micros, Ordering::Relaxed);
    }

    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    pub fn max(&self) -> u64 {
        self.max.load(Ordering::Relaxed)
    }

    /// The value at quantile `q` (0..=1): the top of the bucket holding it, never above the max.
    pub fn quantile(&self, q: f64) -> Option<u64> {
        self.snapshot().quantile(q)
    }

    /// The bucket counts now: two snapshots bracket a window (`Snapshot::since`), so the
    /// window's percentiles leave out the ramp before it and the hang-ups after it.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            counts: self
                .buckets
                .iter()
                .map(|b| b.load(Ordering::Relaxed))
                .collect(),
            max: self.max(),
        }
    }
}

/// Bucket counts at one instant, or the difference of two.
#[derive(Debug, Clone)]
pub struct Snapshot {
    counts: Vec<u64>,
    /// Exact for a whole run; for a window, the top of its highest non-empty bucket.
    max: u64,
}

impl Snapshot {
    /// What was recorded between `earlier` and this snapshot.
    pub fn since(&self, earlier: &Self) -> Self {
        let counts: Vec<u64> = self
            .counts
            .iter()
            .zip(&earlier.counts)
            .map(|(now, then)| now.saturating_sub(*then))
            .collect();
        let max = counts
            .iter()
            .rposition(|n| *n > 0)
            .map_or(0, |i| upper_bound(i).min(self.max));
        Self { counts, max }
    }

    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    pub fn max(&self) -> u64 {
        self.max
    }

    /// The value at quantile `q` (0..=1): the top of the bucket holding it, never above the max.
    pub fn quantile(&self, q: f64) -> Option<u64> {
        let total = self.count();
        if total == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, n) in self.counts.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return Some(upper_bound(i).min(self.max));
            }
        }
        Some(self.max)
    }
}

const fn index(value: u64) -> usize {
    if value < SUB {
        return value as usize;
    }
    let msb = 63 - value.leading_zeros();
    let shift = msb - SUB_BITS;
    ((shift as u64 + 1) * SUB + ((value >> shift) - SUB)) as usize
}

fn upper_bound(index: usize) -> u64 {
    let index = index as u64;
    if index < SUB {
        return index;
    }
    let shift = index / SUB - 1;
    let sub = index % SUB + SUB;
    ((sub + 1) << shift) - 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_contiguous_and_tight() {
        let mut last = 0;
        for v in 0..100_000u64 {
            let i = index(v);
            assert!(i == last || i == last + 1, "{v}");
            assert!(upper_bound(i) >= v);
            assert!(upper_bound(i) as f64 <= v as f64 * 1.07 + 1.0, "{v}");
            last = i;
        }
        assert_eq!(index(MAX_VALUE), BUCKETS - 1);
    }

    #[test]
    fn quantiles() {
        let h = Histogram::default();
        assert_eq!(h.quantile(0.5), None);
        for v in 1..=1000 {
            h.record(v);
        }
        h.record(50_000_000_000);
        let p50 = h.quantile(0.5).unwrap();
        assert!((490..=520).contains(&p50), "{p50}");
        let p99 = h.quantile(0.99).unwrap();
        assert!((985..=1030).contains(&p99), "{p99}");
        assert_eq!(h.max(), 50_000_000_000);
        assert_eq!(h.count(), 1001);
    }

    #[test]
    fn a_window_leaves_out_what_came_before_it() {
        let h = Histogram::default();
        for _ in 0..1000 {
            h.record(90_000);
        }
        let start = h.snapshot();
        for v in 1..=100 {
            h.record(v);
        }
        let window = h.snapshot().since(&start);
        assert_eq!(window.count(), 100);
        let p99 = window.quantile(0.99).unwrap();
        assert!((99..=103).contains(&p99), "{p99}");
        assert!(window.max() <= 103, "{}", window.max());
        assert_eq!(h.snapshot().since(&h.snapshot()).quantile(0.5), None);
    }
}
