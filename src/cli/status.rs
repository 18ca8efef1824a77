//! `prosaas-calls status`: the limit, live calls, admissions and refusals, each replica with its
//! calls, heartbeat age and draining flag, and the tenants near their caps.

use calls_core::store::cluster::{ClusterSettings, ClusterStatus, TenantSettings};
use calls_core::tenant::TenantKey;
use serde_json::json;

use super::{Target, age, print_json, table};

/// A tenant at this share of its cap or above is "near" it.
const NEAR_CAP: f64 = 0.8;

/// # Errors
///
/// Redis unreachable, refusing the credentials, or answering something unexpected.
pub async fn run(target: &Target) -> anyhow::Result<()> {
    let status = target.view()?.status().await?;
    if target.json {
        return print_json(&json!({
            "max_concurrent_calls": status.settings.max_concurrent_calls,
            "tenant_settings": status.settings.tenants,
            "replicas_differing": status.settings.differing,
            "calls_active": status.stats.active,
            "calls_started": status.stats.started,
            "calls_rejected_max_concurrent": status.stats.rejected_max_concurrent,
            "calls_rejected_tenant_limit": status.stats.rejected_tenant_limit,
            "outbound_queued": status.outbound_queued,
            "outbound_dialing": status.outbound_dialing,
            "replicas": status.replicas,
            "tenants": super::tenants_json(&status),
            "calls_waiting": status.waiting.callers,
            "longest_wait_secs": status.waiting.longest_ms / 1000,
        }));
    }
    super::emit(&render(&status))?;
    Ok(())
}

/// A replica's tenant settings in one cell: `account_sid, 10`, `to, -`, `none`, or `?` from a
/// replica too old to say.
fn tenants_cell(settings: Option<TenantSettings>) -> String {
    match settings {
        None => "?".to_owned(),
        Some(TenantSettings {
            tenant_key: TenantKey::None,
            ..
        }) => "none".to_owned(),
        Some(TenantSettings {
            tenant_key,
            default_tenant_limit,
        }) => format!(
            "{}, {}",
            tenant_key.as_str(),
            default_tenant_limit.map_or_else(|| "-".to_owned(), |l| l.to_string())
        ),
    }
}

/// The line that says how the cluster caps tenants, or that it cannot tell.
fn tenants_line(settings: &ClusterSettings) -> String {
    match settings.tenants {
        None => "Tenants: settings unknown (no live replica reports TENANT_KEY and DEFAULT_TENANT_LIMIT)\n".to_owned(),
        Some(TenantSettings {
            tenant_key: TenantKey::None,
            ..
        }) => "Tenants: off (TENANT_KEY=none): only the global cap applies\n".to_owned(),
        Some(TenantSettings {
            tenant_key,
            default_tenant_limit,
        }) => format!(
            "Tenants: TENANT_KEY={}, DEFAULT_TENANT_LIMIT={}\n",
            tenant_key.as_str(),
            default_tenant_limit.map_or_else(
                || "unset (a tenant without its own cap has only the global one)".to_owned(),
                |l| l.to_string()
            )
        ),
    }
}

fn render(status: &ClusterStatus) -> String {
    let stats = &status.stats;
    let settings = &status.settings;
    let limit_text = settings
        .max_concurrent_calls
        .map_or_else(|| "unknown (no live replica)".to_owned(), |l| l.to_string());
    let mut out = format!(
        "Live calls {} of {limit_text}   started {}   refused: max_concurrent {}, tenant_limit {}\n",
        stats.active, stats.started, stats.rejected_max_concurrent, stats.rejected_tenant_limit
    );
    out.push_str(&tenants_line(settings));
    out.push_str(&format!(
        "Waiting in line {}   longest wait {}\n",
        status.waiting.callers,
        if status.waiting.callers == 0 {
            "-".to_owned()
        } else {
            age(status.waiting.longest_ms / 1000)
        }
    ));
    out.push_str(&format!(
        "Outbound: {} queued, {} placed and not yet answered\n",
        status.outbound_queued, status.outbound_dialing
    ));
    out.push('\n');
    if status.replicas.is_empty() {
        out.push_str("No live replica (no heartbeat in calls:replica:*).\n");
    } else {
        let mut replicas = table(&[
            "REPLICA",
            "CALLS",
            "HEARTBEAT",
            "DRAINING",
            "LIMIT",
            "TENANTS",
            "STARTED",
        ]);
        for replica in &status.replicas {
            let beat = &replica.heartbeat;
            let heartbeat = match replica.heartbeat_age_ms {
                Some(ms) if replica.stale => format!("{} STALE", age(ms / 1000)),
                Some(ms) => format!("{} ago", age(ms / 1000)),
                None => "?".to_owned(),
            };
            let own_limit = if Some(beat.max_concurrent_calls) == settings.max_concurrent_calls {
                beat.max_concurrent_calls.to_string()
            } else {
                format!("{} (differs)", beat.max_concurrent_calls)
            };
            let own_tenants = beat.tenant_key.map(|tenant_key| TenantSettings {
                tenant_key,
                default_tenant_limit: beat.default_tenant_limit,
            });
            let mut tenants = tenants_cell(own_tenants);
            if own_tenants.is_some() && own_tenants != settings.tenants {
                tenants.push_str(" (differs)");
            }
            replicas.add_row(vec![
                beat.id.clone(),
                beat.calls_active.to_string(),
                heartbeat,
                if beat.draining { "yes" } else { "no" }.to_owned(),
                own_limit,
                tenants,
                beat.started_at.clone(),
            ]);
        }
        out.push_str(&format!("{replicas}\n"));
    }
    if status.tenants.is_empty() {
        return out;
    }
    out.push('\n');
    let unjudged = status
        .tenants
        .values()
        .filter(|usage| usage.limit.is_none())
        .count();
    let unknown_default = settings.tenants.is_none() && unjudged > 0;
    let near: Vec<_> = status
        .tenants
        .iter()
        .filter(|(_, usage)| {
            usage
                .limit
                .is_some_and(|cap| usage.active as f64 >= NEAR_CAP * cap as f64)
        })
        .collect();
    if near.is_empty() {
        out.push_str(&format!(
            "Tenants: {} known, none at 80% of its cap or above.\n",
            status.tenants.len()
        ));
    } else {
        let mut tenants = table(&["TENANT NEAR ITS CAP", "ACTIVE", "LIMIT", "USE"]);
        for (tenant, usage) in near {
            let cap = usage.limit.unwrap_or_default();
            let share = (usage.active * 100).checked_div(cap).unwrap_or(100);
            let use_text = if usage.active >= cap {
                format!("{share}% AT CAP")
            } else {
                format!("{share}%")
            };
            let limit = match super::limit_source(status, tenant) {
                "default" => format!("{cap} (default)"),
                _ => cap.to_string(),
            };
            tenants.add_row(vec![
                tenant.clone(),
                usage.active.to_string(),
                limit,
                use_text,
            ]);
        }
        out.push_str(&format!(
            "{tenants}\n({} tenants known; `prosaas-calls tenants list` shows all)\n",
            status.tenants.len()
        ));
    }
    if unknown_default {
        out.push_str(&format!(
            "{unjudged} tenant(s) without their own cap not judged: the default cap is unknown (no live replica reports DEFAULT_TENANT_LIMIT).\n"
        ));
    }
    out
}
