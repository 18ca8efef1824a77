//! `prosaas-calls tenants list|set TENANT N|unset TENANT`: per-tenant caps in
//! `calls:tenant_limits`, honoured by every replica from its next admission
//! (docs/reference.md#tenants).

use anyhow::bail;
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
            let tenants = view.tenants().await?;
            if target.json {
                return print_json(&tenants);
            }
            if tenants.is_empty() {
                super::emit("No tenant has live calls or a cap.\n")?;
                return Ok(());
            }
            let mut rows = table(&["TENANT", "ACTIVE", "LIMIT", "USE"]);
            for (tenant, usage) in &tenants {
                let (limit, share) = match usage.limit {
                    Some(0) => ("0".to_owned(), "AT CAP".to_owned()),
                    Some(cap) if usage.active >= cap => (
                        cap.to_string(),
                        format!("{}% AT CAP", usage.active * 100 / cap),
                    ),
                    Some(cap) => (cap.to_string(), format!("{}%", usage.active * 100 / cap)),
                    None => ("-".to_owned(), "-".to_owned()),
                };
                rows.add_row(vec![tenant.clone(), usage.active.to_string(), limit, share]);
            }
            super::emit(&format!("{rows}\n"))?;
        }
        TenantsCommand::Set { tenant, limit } => {
            check_tenant(tenant)?;
            if *limit == 0 {
                bail!(
                    "a tenant's cap must be a positive integer (to stop its calls, take its number off)"
                );
            }
            view.set_tenant_limit(tenant, Some(*limit)).await?;
            report(target, tenant, Some(*limit), "set")?;
        }
        TenantsCommand::Unset { tenant } => {
            check_tenant(tenant)?;
            view.set_tenant_limit(tenant, None).await?;
            report(target, tenant, None, "unset")?;
        }
    }
    Ok(())
}

fn check_tenant(tenant: &str) -> anyhow::Result<()> {
    if tenant.trim().is_empty() || tenant.trim() != tenant {
        bail!("a tenant is an AccountSid or a To number, without surrounding spaces: {tenant:?}");
    }
    Ok(())
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
