//! The operator's command line (SPEC §11): `status`, `calls`, `tenants list|set|unset`, reading
//! the cluster's Redis; tables for a person, `--json` for a script, exit 1 when Redis fails.

pub mod calls;
pub mod status;
pub mod tenants;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use calls_core::store::RedisTls;
use calls_core::store::cluster::{ClusterStatus, ClusterView};
use clap::Args;
use comfy_table::{ContentArrangement, Table, presets};

/// How long one read may take before the command gives up on Redis.
const TIMEOUT: Duration = Duration::from_secs(3);

/// Where the cluster's Redis is, as `serve` reads it.
#[derive(Debug, Clone, Args)]
pub struct Target {
    /// The cluster's Redis (as `serve`'s); never printed
    #[arg(long, env = "REDIS_URL", hide_env_values = true)]
    pub redis_url: Option<String>,
    /// PEM CA file for a private CA that signs Redis' certificate (rediss only)
    #[arg(long, env = "REDIS_TLS_CA_FILE")]
    pub redis_tls_ca_file: Option<PathBuf>,
    /// PEM client certificate for a Redis that requires one (with --redis-tls-key-file)
    #[arg(long, env = "REDIS_TLS_CERT_FILE")]
    pub redis_tls_cert_file: Option<PathBuf>,
    /// PEM private key of the client certificate
    #[arg(long, env = "REDIS_TLS_KEY_FILE")]
    pub redis_tls_key_file: Option<PathBuf>,
    /// JSON for scripts instead of tables
    #[arg(long, global = true)]
    pub json: bool,
}

impl Target {
    /// The cluster view, not yet connected (the first read connects).
    ///
    /// # Errors
    ///
    /// No `REDIS_URL`, or a URL or TLS file the client cannot use; never with the URL's
    /// credentials.
    pub fn view(&self) -> anyhow::Result<ClusterView> {
        let Some(url) = self
            .redis_url
            .as_deref()
            .filter(|url| !url.trim().is_empty())
        else {
            bail!(
                "REDIS_URL is not set: the command line reads a cluster's Redis (set REDIS_URL or --redis-url)"
            );
        };
        let tls = RedisTls {
            ca_file: self.redis_tls_ca_file.clone(),
            cert_file: self.redis_tls_cert_file.clone(),
            key_file: self.redis_tls_key_file.clone(),
        };
        ClusterView::new(url, &tls, TIMEOUT).context("cannot use REDIS_URL and REDIS_TLS_*")
    }
}

/// Where a tenant's cap in force comes from, as the tables and `--json` say it.
pub fn limit_source(status: &ClusterStatus, tenant: &str) -> &'static str {
    if status.own_limits.contains_key(tenant) {
        "own"
    } else {
        match status.settings.tenants {
            None => "unknown",
            Some(settings) if settings.default_tenant_limit.is_some() => "default",
            Some(_) => "none",
        }
    }
}

/// Every tenant as `--json` prints it: live slots, the cap in force and where it comes from
/// (`own`, `default`, `none`: only the global cap, `unknown`: no live replica reports the default).
pub fn tenants_json(status: &ClusterStatus) -> serde_json::Value {
    status
        .tenants
        .iter()
        .map(|(tenant, usage)| {
            (
                tenant.clone(),
                serde_json::json!({
                    "active": usage.active,
                    "limit": usage.limit,
                    "limit_from": limit_source(status, tenant),
                }),
            )
        })
        .collect::<serde_json::Map<_, _>>()
        .into()
}

/// A table with aligned columns and the given header.
pub fn table(header: &[&str]) -> Table {
    let mut table = Table::new();
    table
        .load_style(presets::UTF8_FULL_CONDENSED)
        .set_content_arrangement(ContentArrangement::Disabled)
        .set_header(header.iter().copied());
    table
}

/// `3m12s`, `45s`, `2h05m`: ages an operator reads at a glance.
pub fn age(secs: u64) -> String {
    match secs {
        0..60 => format!("{secs}s"),
        60..3600 => format!("{}m{:02}s", secs / 60, secs % 60),
        _ => format!("{}h{:02}m", secs / 3600, (secs % 3600) / 60),
    }
}

/// Prints `value` as pretty JSON.
///
/// # Errors
///
/// Never in practice: every value printed is plain data.
pub fn print_json(value: &impl serde::Serialize) -> anyhow::Result<()> {
    emit(&format!("{}\n", serde_json::to_string_pretty(value)?))
}

/// Writes `text` to stdout. A reader that went away (`prosaas-calls calls | head`) is no error:
/// the command stops quietly instead of panicking as `println!` would.
///
/// # Errors
///
/// Any other write error.
pub fn emit(text: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(err) if err.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(err).context("writing to stdout")
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_read_at_a_glance() {
        assert_eq!(age(0), "0s");
        assert_eq!(age(59), "59s");
        assert_eq!(age(192), "3m12s");
        assert_eq!(age(3600), "1h00m");
        assert_eq!(age(7500), "2h05m");
    }
}
