//! `--timeline FILE`: the run cut into 100 ms buckets (frames sent, echoed and late, echo latency
//! p50 / p99 / max of the echoes that came back in each), to line a stall up with the server's log.

use std::fmt::Write as _;
use std::io;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::time::{Instant, MissedTickBehavior, interval};

use super::histogram::Snapshot;
use super::stats::Stats;

/// One bucket's width: five frames of one call, short enough to show a stall of a few ms.
pub const BUCKET: Duration = Duration::from_millis(100);

/// What happened between two samples.
#[derive(Debug, Clone, PartialEq)]
pub struct Bucket {
    /// Wall-clock end of the bucket, Unix milliseconds (the server's log lines carry the same
    /// clock).
    pub unix_ms: u128,
    /// Seconds since the run started.
    pub t: f64,
    pub sent: u64,
    pub echoed: u64,
    pub late: u64,
    pub streaming: u64,
    /// Echo latency of the echoes received in the bucket, µs (`None`: none received).
    pub p50_us: Option<u64>,
    pub p99_us: Option<u64>,
    pub max_us: Option<u64>,
}

/// Samples `stats` every [`BUCKET`] until aborted, keeping the buckets in `into`.
pub async fn record(stats: Arc<Stats>, started: Instant, into: Arc<std::sync::Mutex<Vec<Bucket>>>) {
    let mut tick = interval(BUCKET);
    // A late tick makes one wider bucket rather than a burst of empty ones.
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut last = Totals::take(&stats);
    loop {
        tick.tick().await;
        let now = Totals::take(&stats);
        let bucket = now.since(&last, started);
        last = now;
        into.lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(bucket);
    }
}

/// Writes the buckets as CSV with a header line.
///
/// # Errors
///
/// The file could not be written.
pub fn write(path: &Path, buckets: &[Bucket]) -> io::Result<()> {
    std::fs::write(path, csv(buckets))
}

fn csv(buckets: &[Bucket]) -> String {
    let mut out = String::from("unix_ms,t_s,sent,echoed,late,streaming,p50_us,p99_us,max_us\n");
    let opt = |v: Option<u64>| v.map_or(String::new(), |v| v.to_string());
    for b in buckets {
        let _ = writeln!(
            out,
            "{},{:.3},{},{},{},{},{},{},{}",
            b.unix_ms,
            b.t,
            b.sent,
            b.echoed,
            b.late,
            b.streaming,
            opt(b.p50_us),
            opt(b.p99_us),
            opt(b.max_us)
        );
    }
    out
}

struct Totals {
    at: Instant,
    unix_ms: u128,
    sent: u64,
    echoed: u64,
    late: u64,
    streaming: u64,
    latency: Snapshot,
}

impl Totals {
    fn take(stats: &Stats) -> Self {
        Self {
            at: Instant::now(),
            unix_ms: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis()),
            sent: stats.frames_sent.get(),
            echoed: stats.frames_echoed.get(),
            late: stats.frames_late.get(),
            streaming: stats.streaming.get(),
            latency: stats.echo_latency.snapshot(),
        }
    }

    fn since(&self, earlier: &Self, started: Instant) -> Bucket {
        let latency = self.latency.since(&earlier.latency);
        let has = latency.count() > 0;
        Bucket {
            unix_ms: self.unix_ms,
            t: self.at.duration_since(started).as_secs_f64(),
            sent: self.sent.saturating_sub(earlier.sent),
            echoed: self.echoed.saturating_sub(earlier.echoed),
            late: self.late.saturating_sub(earlier.late),
            streaming: self.streaming,
            p50_us: latency.quantile(0.5),
            p99_us: latency.quantile(0.99),
            max_us: has.then(|| latency.max()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_holds_only_what_came_in_it() {
        let stats = Stats::default();
        let started = Instant::now();
        stats.echo_latency.record(90_000);
        stats.frames_sent.add(3);
        let first = Totals::take(&stats);
        for v in 1..=100 {
            stats.echo_latency.record(v);
        }
        stats.frames_sent.add(5);
        stats.frames_echoed.add(100);
        let bucket = Totals::take(&stats).since(&first, started);
        assert_eq!((bucket.sent, bucket.echoed), (5, 100));
        assert!(bucket.max_us.unwrap() <= 103, "{bucket:?}");
        assert!((99..=103).contains(&bucket.p99_us.unwrap()), "{bucket:?}");
        let empty = Totals::take(&stats).since(&Totals::take(&stats), started);
        assert_eq!((empty.p50_us, empty.max_us), (None, None));
        let text = csv(&[bucket, empty]);
        assert_eq!(text.lines().count(), 3);
        assert!(text.lines().nth(2).unwrap().ends_with(",,,"), "{text}");
    }
}
