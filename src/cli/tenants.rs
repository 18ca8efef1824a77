//! `prosaas-calls tenants list|set TENANT N|unset TENANT`: per-tenant caps in
//! `calls:tenant_limits`, honoured by every replica from its next admission (SPEC §10).

use anyhow::bail;
use calls_core::store::cluster::{ClusterSettings, ClusterView};
use calls_core::tenant::check_name;
use clap::Subcommand;
use serde_json::json;

use super::{Target, print_json, table};

#[derive(Debug, Clone, Subcommand)]
pub enum TenantsCommand {
    /// Every tenant with live calls or a cap of its own
    List,
    /// Set a tenant's own cap (a positive integer)
    Set { tenant: String, limit: u64 },
    /// Remove a tenant's own cap (DEFAULT_TENANT_LIMIT, if any, applies again)
    Unset { tenant: String },
}

/// # Errors
///
/// A bad tenant or cap, or Redis unreachable, refusing the credentials, or answering oddly.
pub async fn run(target: &Target, command: &TenantsCommand) -> anyhow::Result<()> {
    let view = target.view()?;
    match command {
        TenantsCommand::List => {
            let status = view.status().await?;
            if target.json {
                return print_json(&super::tenants_json(&status));
            }
            if status.tenants.is_empty() {
                super::emit("No tenant has live calls or a cap.\n")?;
                return Ok(());
            }
            let mut rows = table(&["TENANT", "ACTIVE", "LIMIT", "USE"]);
            for (tenant, usage) in &status.tenants {
                let source = super::limit_source(&status, tenant);
                let (limit, share) = match usage.limit {
                    Some(0) => ("0".to_owned(), "AT CAP".to_owned()),
                    Some(cap) if usage.active >= cap => (
                        cap.to_string(),
                        format!("{}% AT CAP", usage.active * 100 / cap),
                    ),
                    Some(cap) => (cap.to_string(), format!("{}%", usage.active * 100 / cap)),
                    None if source == "unknown" => {
                        ("? (default unknown)".to_owned(), "?".to_owned())
                    }
                    None => ("-".to_owned(), "-".to_owned()),
                };
                let limit = if source == "default" {
                    format!("{limit} (default)")
                } else {
                    limit
                };
                rows.add_row(vec![tenant.clone(), usage.active.to_string(), limit, share]);
            }
            super::emit(&format!("{rows}\n"))?;
            if status.settings.tenants.is_none() {
                super::emit(
                    "The default cap is unknown: no live replica reports DEFAULT_TENANT_LIMIT.\n",
                )?;
            }
        }
        TenantsCommand::Set { tenant, limit } => {
            check_name(tenant)?;
            if *limit == 0 {
                bail!(
                    "a tenant's cap must be a positive integer (to stop its calls, take its number off)"
                );
            }
            view.set_tenant_limit(tenant, Some(*limit)).await?;
            report(target, tenant, Some(*limit), "set")?;
            warn_if_unused(&view).await;
        }
        TenantsCommand::Unset { tenant } => {
            // Any stored name can be removed, one an older command line let in included.
            if tenant.is_empty() {
                bail!("name the tenant whose own cap to remove");
            }
            view.set_tenant_limit(tenant, None).await?;
            report(target, tenant, None, "unset")?;
        }
    }
    Ok(())
}

/// A cap is stored whatever the replicas run with, but it only counts where they put calls in
/// tenants: say so on stderr when no live replica does, or when none says.
async fn warn_if_unused(view: &ClusterView) {
    let replicas = match view.replicas().await {
        Ok(replicas) => replicas,
        Err(err) => {
            eprintln!(
                "prosaas-calls: warning: cannot read the replicas' heartbeats ({err}): whether they use this cap is unknown"
            );
            return;
        }
    };
    match ClusterSettings::of(&replicas).tenants_on() {
        Some(true) => {}
        Some(false) => eprintln!(
            "prosaas-calls: warning: no live replica has TENANT_KEY set (every one runs with TENANT_KEY=none): this cap is stored but unused until replicas run with TENANT_KEY=account_sid or to"
        ),
        None => eprintln!(
            "prosaas-calls: warning: no live replica reports its TENANT_KEY{}: this cap is stored, and used only by replicas with TENANT_KEY=account_sid or to",
            if replicas.is_empty() {
                " (none is running)"
            } else {
                ""
            }
        ),
    }
}

fn report(target: &Target, tenant: &str, limit: Option<u64>, what: &str) -> anyhow::Result<()> {
    if target.json {
        return print_json(&json!({"tenant": tenant, "limit": limit}));
    }
    match limit {
        Some(limit) => super::emit(&format!(
            "{tenant}: cap {what} to {limit}, from the next admission\n"
        ))?,
        None => super::emit(&format!(
            "{tenant}: own cap {what}; DEFAULT_TENANT_LIMIT applies, if set\n"
        ))?,
    }
    Ok(())
}
