//! `prosaas-calls status`: the limit, live calls, admissions and refusals, each replica with its
//! calls, heartbeat age and draining flag, and the tenants near their caps.

use std::collections::BTreeMap;

use calls_core::store::cluster::{ClusterStatus, ReplicaView};
use serde_json::json;

use super::{Target, age, print_json, table};

/// A tenant at this share of its cap or above is "near" it.
const NEAR_CAP: f64 = 0.8;

/// # Errors
///
/// Redis unreachable, refusing the credentials, or answering something unexpected.
pub async fn run(target: &Target) -> anyhow::Result<()> {
    let status = target.view()?.status().await?;
    let limit = cluster_limit(&status.replicas);
    if target.json {
        return print_json(&json!({
            "max_concurrent_calls": limit,
            "calls_active": status.stats.active,
            "calls_started": status.stats.started,
            "calls_rejected_max_concurrent": status.stats.rejected_max_concurrent,
            "calls_rejected_tenant_limit": status.stats.rejected_tenant_limit,
            "replicas": status.replicas,
            "tenants": status.tenants,
        }));
    }
    super::emit(&render(&status, limit))?;
    Ok(())
}

/// The limit most replicas were started with (replicas that disagree are marked); `None`
/// without a live replica.
fn cluster_limit(replicas: &[ReplicaView]) -> Option<u64> {
    let mut votes: BTreeMap<u64, usize> = BTreeMap::new();
    for replica in replicas {
        *votes
            .entry(replica.heartbeat.max_concurrent_calls)
            .or_default() += 1;
    }
    votes
        .into_iter()
        .max_by_key(|(limit, count)| (*count, *limit))
        .map(|(limit, _)| limit)
}

fn render(status: &ClusterStatus, limit: Option<u64>) -> String {
    let stats = &status.stats;
    let limit_text =
        limit.map_or_else(|| "unknown (no live replica)".to_owned(), |l| l.to_string());
    let mut out = format!(
        "Live calls {} of {limit_text}   started {}   refused: max_concurrent {}, tenant_limit {}\n\n",
        stats.active, stats.started, stats.rejected_max_concurrent, stats.rejected_tenant_limit
    );
    if status.replicas.is_empty() {
        out.push_str("No live replica (no heartbeat in calls:replica:*).\n");
    } else {
        let mut replicas = table(&[
            "REPLICA",
            "CALLS",
            "HEARTBEAT",
            "DRAINING",
            "LIMIT",
            "STARTED",
        ]);
        for replica in &status.replicas {
            let beat = &replica.heartbeat;
            let heartbeat = match replica.heartbeat_age_ms {
                Some(ms) if replica.stale => format!("{} STALE", age(ms / 1000)),
                Some(ms) => format!("{} ago", age(ms / 1000)),
                None => "?".to_owned(),
            };
            let own_limit = if Some(beat.max_concurrent_calls) == limit {
                beat.max_concurrent_calls.to_string()
            } else {
                format!("{} (differs)", beat.max_concurrent_calls)
            };
            replicas.add_row(vec![
                beat.id.clone(),
                beat.calls_active.to_string(),
                heartbeat,
                if beat.draining { "yes" } else { "no" }.to_owned(),
                own_limit,
                beat.started_at.clone(),
            ]);
        }
        out.push_str(&format!("{replicas}\n"));
    }
    let near: Vec<_> = status
        .tenants
        .iter()
        .filter(|(_, usage)| {
            usage
                .limit
                .is_some_and(|cap| usage.active as f64 >= NEAR_CAP * cap as f64)
        })
        .collect();
    if status.tenants.is_empty() {
        return out;
    }
    out.push('\n');
    if near.is_empty() {
        out.push_str(&format!(
            "Tenants: {} known, none at 80% of its cap or above.\n",
            status.tenants.len()
        ));
        return out;
    }
    let mut tenants = table(&["TENANT NEAR ITS CAP", "ACTIVE", "LIMIT", "USE"]);
    for (tenant, usage) in near {
        let cap = usage.limit.unwrap_or_default();
        let share = (usage.active * 100).checked_div(cap).unwrap_or(100);
        let use_text = if usage.active >= cap {
            format!("{share}% AT CAP")
        } else {
            format!("{share}%")
        };
        tenants.add_row(vec![
            tenant.clone(),
            usage.active.to_string(),
            cap.to_string(),
            use_text,
        ]);
    }
    out.push_str(&format!(
        "{tenants}\n({} tenants known; `prosaas-calls tenants list` shows all)\n",
        status.tenants.len()
    ));
    out
}
