//! Process metrics read from /proc at scrape time: CPU seconds, resident memory, open file
//! descriptors, start time. On a system without /proc they read zero.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

/// Linux reports CPU times in clock ticks of 1/100 s on every platform we ship for.
const CLOCK_TICKS_PER_SEC: f64 = 100.0;
const PAGE_SIZE: i64 = 4096;

/// Encodes this process's figures as /proc gives them at each scrape: the kernel keeps them, so
/// nothing is copied into counters of our own.
#[derive(Debug, Default)]
pub(super) struct ProcessMetrics;

/// One reading of /proc/self.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
struct Reading {
    cpu_seconds: f64,
    resident_bytes: i64,
    open_fds: i64,
    start_time_seconds: i64,
}

impl Reading {
    fn now() -> Self {
        let mut reading = Self::default();
        if let Ok(stat) = std::fs::read_to_string("/proc/self/stat")
            && let Some(fields) = stat_fields(&stat)
        {
            // Fields after the command name: utime is the 12th, stime the 13th, starttime the
            // 20th, rss (pages) the 22nd (proc(5), counting from `state` as the 1st).
            let field = |n: usize| fields.get(n).and_then(|v| v.parse::<u64>().ok());
            if let (Some(utime), Some(stime)) = (field(11), field(12)) {
                #[allow(clippy::cast_precision_loss)]
                let seconds = (utime + stime) as f64 / CLOCK_TICKS_PER_SEC;
                reading.cpu_seconds = seconds;
            }
            if let Some(rss_pages) = field(21) {
                reading.resident_bytes = i64::try_from(rss_pages).unwrap_or(i64::MAX) * PAGE_SIZE;
            }
            if let (Some(start_ticks), Some(boot)) = (field(19), boot_time()) {
                #[allow(clippy::cast_possible_truncation)]
                let since_boot = (start_ticks as f64 / CLOCK_TICKS_PER_SEC) as i64;
                reading.start_time_seconds = boot + since_boot;
            }
        }
        if let Ok(dir) = std::fs::read_dir("/proc/self/fd") {
            reading.open_fds = i64::try_from(dir.count()).unwrap_or(i64::MAX);
        }
        reading
    }
}

impl Collector for ProcessMetrics {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let reading = Reading::now();
        let cpu = ConstCounter::new(reading.cpu_seconds);
        cpu.encode(encoder.encode_descriptor(
            "process_cpu_seconds",
            "User and system CPU time of this process",
            None,
            cpu.metric_type(),
        )?)?;
        let gauges = [
            (
                "process_resident_memory_bytes",
                "Resident memory of this process",
                reading.resident_bytes,
            ),
            (
                "process_open_fds",
                "Open file descriptors of this process (sockets included)",
                reading.open_fds,
            ),
            (
                "process_start_time_seconds",
                "Start time of this process since the Unix epoch",
                reading.start_time_seconds,
            ),
        ];
        for (name, help, value) in gauges {
            let gauge = ConstGauge::new(value);
            gauge.encode(encoder.encode_descriptor(name, help, None, gauge.metric_type())?)?;
        }
        Ok(())
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
        let reading = Reading::now();
        assert!(reading.resident_bytes > 0);
        assert!(reading.open_fds > 0);
        assert!(reading.start_time_seconds > 1_600_000_000);
    }

    #[test]
    fn command_names_with_spaces_and_parens() {
        let fields = stat_fields("42 (a b) c) S 1 2 3").unwrap();
        assert_eq!(fields, ["S", "1", "2", "3"]);
    }
}
