//! Measuring a process from outside through /proc (CPU time as utime+stime, resident memory), and
//! raising this process's open-file limit so thousands of sockets fit.

use std::io;
use std::time::Duration;

/// utime + stime of every thread of `pid` (`self` for this process), from `/proc/<pid>/stat`.
pub fn cpu_time(pid: &str) -> io::Result<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    parse_cpu_ticks(&stat)
        .map(|ticks| Duration::from_secs_f64(ticks as f64 / ticks_per_second()))
        .ok_or_else(|| io::Error::other(format!("unreadable /proc/{pid}/stat")))
}

/// `VmRSS` of `pid`, in bytes, from `/proc/<pid>/status`.
pub fn rss_bytes(pid: &str) -> io::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().strip_suffix("kB"))
        .and_then(|kib| kib.trim().parse::<u64>().ok())
        .map(|kib| kib * 1024)
        .ok_or_else(|| io::Error::other(format!("no VmRSS in /proc/{pid}/status")))
}

/// Busy and total time of the whole machine (all CPUs), from the first line of `/proc/stat`:
/// what else was running during a measurement shows as busy time no measured process used.
pub fn machine_times() -> io::Result<(Duration, Duration)> {
    let stat = std::fs::read_to_string("/proc/stat")?;
    parse_machine_ticks(&stat)
        .map(|(busy, total)| {
            let secs = |ticks: u64| Duration::from_secs_f64(ticks as f64 / ticks_per_second());
            (secs(busy), secs(total))
        })
        .ok_or_else(|| io::Error::other("unreadable /proc/stat"))
}

fn parse_machine_ticks(stat: &str) -> Option<(u64, u64)> {
    let line = stat.lines().next()?.strip_prefix("cpu ")?;
    let ticks: Vec<u64> = line
        .split_ascii_whitespace()
        .map(|t| t.parse().ok())
        .collect::<Option<_>>()?;
    // user nice system idle iowait irq softirq steal [guest guest_nice, already in user/nice]
    let total: u64 = ticks.iter().take(8).sum();
    let idle = ticks.get(3)? + ticks.get(4).copied().unwrap_or(0);
    Some((total - idle, total))
}

fn ticks_per_second() -> f64 {
    rustix::param::clock_ticks_per_second() as f64
}

fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    // The command name (field 2) may hold spaces and parentheses; fields after its last ')' are
    // plain: state is field 3, utime field 14, stime field 15.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_ascii_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit (each call holds a socket; the default soft
/// limit of 1024 would stop a run at ~1000 calls). Returns the limit now in force.
pub fn raise_nofile_limit() -> io::Result<u64> {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut limit = getrlimit(Resource::Nofile);
    if limit.current != limit.maximum {
        limit.current = limit.maximum;
        setrlimit(Resource::Nofile, limit)?;
    }
    Ok(limit.current.unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_a_hostile_command_name() {
        let stat = "1234 (a) b (c) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 3 0 1 1 1";
        assert_eq!(parse_cpu_ticks(stat), Some(325));
        assert_eq!(parse_cpu_ticks("garbage"), None);
    }

    #[test]
    fn parses_machine_times() {
        let stat = "cpu  100 5 50 800 20 1 2 3 0 0\ncpu0 1 2 3 4\n";
        assert_eq!(parse_machine_ticks(stat), Some((161, 981)));
        assert_eq!(parse_machine_ticks("intr 1 2"), None);
    }

    #[test]
    fn reads_this_process() {
        assert!(cpu_time("self").is_ok());
        assert!(rss_bytes("self").unwrap() > 0);
        assert!(raise_nofile_limit().unwrap() >= 1024);
        let (busy, total) = machine_times().unwrap();
        assert!(busy <= total);
    }
}
