//! Process metrics read from /proc at scrape time: CPU seconds, resident memory, open file
//! descriptors, start time. On a system without /proc they stay at zero.

use std::sync::atomic::{AtomicU64, Ordering};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// Linux reports CPU times in clock ticks of 1/100 s on every platform we ship for.
const CLOCK_TICKS_PER_SEC: f64 = 100.0;
const PAGE_SIZE: i64 = 4096;

#[derive(Default)]
pub(super) struct ProcessMetrics {
    cpu_seconds: Counter<f64, AtomicU64>,
    resident_bytes: Gauge,
    open_fds: Gauge,
    start_time_seconds: Gauge,
}

impl ProcessMetrics {
    pub(super) fn register(&self, registry: &mut Registry) {
        registry.register(
            "process_cpu_seconds",
            "User and system CPU time of this process",
            self.cpu_seconds.clone(),
        );
        registry.register(
            "process_resident_memory_bytes",
            "Resident memory of this process",
            self.resident_bytes.clone(),
        );
        registry.register(
            "process_open_fds",
            "Open file descriptors of this process (sockets included)",
            self.open_fds.clone(),
        );
        registry.register(
            "process_start_time_seconds",
            "Start time of this process since the Unix epoch",
            self.start_time_seconds.clone(),
        );
    }

    /// Reads /proc/self once; called before each exposition.
    pub(super) fn refresh(&self) {
        if let Ok(stat) = std::fs::read_to_string("/proc/self/stat")
            && let Some(fields) = stat_fields(&stat)
        {
            // Fields after the command name: utime is the 12th, stime the 13th, starttime the
            // 20th, rss (pages) the 22nd (proc(5), counting from `state` as the 1st).
            let field = |n: usize| fields.get(n).and_then(|v| v.parse::<u64>().ok());
            if let (Some(utime), Some(stime)) = (field(11), field(12)) {
                #[allow(clippy::cast_precision_loss)]
                let seconds = (utime + stime) as f64 / CLOCK_TICKS_PER_SEC;
                self.cpu_seconds
                    .inner()
                    .store(seconds.to_bits(), Ordering::Relaxed);
            }
            if let Some(rss_pages) = field(21) {
                self.resident_bytes
                    .set(i64::try_from(rss_pages).unwrap_or(i64::MAX) * PAGE_SIZE);
            }
            if let (Some(start_ticks), Some(boot)) = (field(19), boot_time()) {
                #[allow(clippy::cast_possible_truncation)]
                let since_boot = (start_ticks as f64 / CLOCK_TICKS_PER_SEC) as i64;
                self.start_time_seconds.set(boot + since_boot);
            }
        }
        if let Ok(dir) = std::fs::read_dir("/proc/self/fd") {
            self.open_fds
                .set(i64::try_from(dir.count()).unwrap_or(i64::MAX));
        }
    }
}

/// The fields of /proc/self/stat after the command name, which may itself hold spaces.
fn stat_fields(stat: &str) -> Option<Vec<&str>> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    Some(after_name.split_whitespace().collect())
}

fn boot_time() -> Option<i64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    stat.lines()
        .find_map(|line| line.strip_prefix("btime "))
        .and_then(|v| v.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process() {
        let metrics = ProcessMetrics::default();
        metrics.refresh();
        assert!(metrics.resident_bytes.get() > 0);
        assert!(metrics.open_fds.get() > 0);
        assert!(metrics.start_time_seconds.get() > 1_600_000_000);
    }

    #[test]
    fn command_names_with_spaces_and_parens() {
        let fields = stat_fields("42 (a b) c) S 1 2 3").unwrap();
        assert_eq!(fields, ["S", "1", "2", "3"]);
    }
}
