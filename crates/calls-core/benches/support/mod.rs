//! What the store benchmarks share: the command line that ran them, the machine's load beside
//! their figures, and Redis' own per-command counts and times (`INFO commandstats`).

use std::collections::BTreeMap;

use anyhow::{Context, Result};
use redis::aio::MultiplexedConnection;

/// The command as the user typed it (`cargo bench` adds `--bench` to every `harness = false`
/// target), printed above the figures so a run can be repeated.
pub(crate) fn command_line(bench: &str) -> String {
    let flags: Vec<String> = std::env::args()
        .skip(1)
        .filter(|arg| arg != "--bench")
        .collect();
    if flags.is_empty() {
        format!("cargo bench -p calls-core --bench {bench}")
    } else {
        format!(
            "cargo bench -p calls-core --bench {bench} -- {}",
            flags.join(" ")
        )
    }
}

/// The 1-minute load average: these machines are shared, and a figure means little without it.
pub(crate) fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|avg| avg.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "unknown".to_owned())
}

/// `INFO commandstats` as command name → (calls, µs) since the last `CONFIG RESETSTAT`: Redis'
/// own time in the command (a script's includes the commands it ran).
pub(crate) async fn command_stats(
    admin: &mut MultiplexedConnection,
) -> Result<BTreeMap<String, (u64, u64)>> {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(admin)
        .await
        .context("INFO commandstats")?;
    let mut stats = BTreeMap::new();
    for line in info.lines() {
        let Some((name, fields)) = line
            .strip_prefix("cmdstat_")
            .and_then(|rest| rest.split_once(':'))
        else {
            continue;
        };
        let field = |key: &str| {
            fields
                .split(',')
                .find_map(|field| field.strip_prefix(key))
                .and_then(|n| n.parse::<u64>().ok())
                .with_context(|| format!("no {key} in commandstats line {line:?}"))
        };
        stats.insert(name.to_owned(), (field("calls=")?, field("usec=")?));
    }
    Ok(stats)
}
