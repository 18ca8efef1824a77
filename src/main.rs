//! The `prosaas-calls` binary: parses configuration, sets up logging, runs one replica.
//! Everything else lives in the library; errors become `anyhow` only here, at the edge.

#![forbid(unsafe_code)]

use std::io::IsTerminal;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use prosaas_calls::app::{App, build_store};
use prosaas_calls::config::{Config, LogFormat, RawConfig};
use prosaas_calls::{cli, server};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};
use tracing_subscriber::EnvFilter;

#[derive(Parser)]
#[command(
    version,
    about = "Twilio voice calls behind a cluster-wide concurrent-call limit"
)]
#[command(args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    serve: RawConfig,
}

#[derive(Subcommand)]
// Parsed once at start-up; boxing the big variant would buy nothing.
#[allow(clippy::large_enum_variant)]
enum Command {
    /// Run one replica (the default).
    Serve(RawConfig),
    /// The cluster at a glance: limit, live calls, refusals, replicas, tenants near their caps.
    Status(cli::Target),
    /// Live calls: call SID, tenant, replica, status, age.
    Calls(cli::Target),
    /// Per-tenant caps: list, set TENANT N, unset TENANT.
    Tenants {
        #[command(flatten)]
        target: cli::Target,
        #[command(subcommand)]
        command: cli::tenants::TenantsCommand,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let raw = match cli.command {
        Some(Command::Serve(raw)) => raw,
        None => cli.serve,
        Some(Command::Status(target)) => {
            return operator(cli::status::run(&target));
        }
        Some(Command::Calls(target)) => return operator(cli::calls::run(&target)),
        Some(Command::Tenants { target, command }) => {
            return operator(cli::tenants::run(&target, &command));
        }
    };
    // Exit 2 (the contract's code for a bad configuration), before logging or binding anything.
    let (config, warnings) = match Config::from_raw(&raw) {
        Ok(parsed) => parsed,
        Err(errors) => {
            eprintln!("prosaas-calls: invalid configuration:");
            for error in &errors.0 {
                eprintln!("  {error}");
            }
            return ExitCode::from(2);
        }
    };
    init_logging(config.log_format);
    for warning in warnings {
        warn!("{warning}");
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(err) => {
            error!("cannot start the runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            error!("{err:#}");
            ExitCode::FAILURE
        }
    }
}

/// Runs an operator command: its output on stdout, a clear error on stderr and exit 1.
fn operator(command: impl std::future::Future<Output = anyhow::Result<()>>) -> ExitCode {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let result = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the runtime")
        .and_then(|runtime| runtime.block_on(command));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("prosaas-calls: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// Calls that ring together send their webhooks together. tokio's `bind` listens with a backlog
/// of 128, which a burst of webhooks overflows, and every SYN the kernel drops costs its caller a
/// 1 s retransmit (docs/benchmarks.md, webhook burst). The kernel caps this at
/// `net.core.somaxconn` (4096 by default since Linux 5.4).
const LISTEN_BACKLOG: u32 = 4096;

fn listen(addr: std::net::SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    // As tokio's `bind` does: a restarted replica can listen again while old sockets linger.
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

async fn run(config: Config) -> anyhow::Result<()> {
    // Only ring is compiled in; installing it explicitly keeps rediss:// independent of how
    // rustls picks a default provider.
    let _ = rustls::crypto::ring::default_provider().install_default();
    log_start_up(&config);
    let store = build_store(&config).context("state store")?;
    let listener = listen(config.listen_addr)
        .with_context(|| format!("cannot listen on {}", config.listen_addr))?;
    info!(
        addr = %listener.local_addr()?,
        max_concurrent_calls = config.max_concurrent_calls,
        backend = store.backend().as_str(),
        "prosaas-calls listening"
    );
    let app = App::new(config, store);
    let shutdown = CancellationToken::new();
    let signal = shutdown.clone();
    tokio::spawn(async move {
        server::shutdown_signal().await;
        signal.cancel();
    });
    server::serve(app, listener, shutdown).await?;
    info!("stopped");
    Ok(())
}

/// What an operator checks first: where state lives (never with credentials), the URL Twilio
/// is told, whether signatures are checked, and what a refused or admitted call gets.
fn log_start_up(config: &Config) {
    match &config.redis {
        Some(redis) => info!(
            replica = %config.replica_id,
            redis = %redis.target,
            tls_ca = ?redis.tls.ca_file,
            tls_client_cert = redis.tls.client_cert.is_some(),
            "state in Redis: this process is one replica of a cluster"
        ),
        None => warn!(
            replica = %config.replica_id,
            "REDIS_URL is not set: IN-PROCESS STATE, SINGLE REPLICA ONLY. Every replica would \
             enforce its own limit; set REDIS_URL to run more than one"
        ),
    }
    // A PUBLIC_URL may carry user:password (basic auth in front of the webhooks): never logged.
    let public_url = config.public_url.as_deref().map_or_else(
        || "unset (derived from request headers)".to_owned(),
        prosaas_calls::config::redact_userinfo,
    );
    info!(
        public_url = %public_url,
        signatures = if config.twilio_auth_token.is_some() {
            "checked"
        } else {
            "NOT checked"
        },
        reject_mode = config.reject.mode.as_str(),
        media_handler = config.media.kind().as_str(),
        max_concurrent_calls = config.max_concurrent_calls,
        resume_limit = config.resume_limit,
        tenant_key = config.tenant_key.as_str(),
        "configuration"
    );
    if let Some(bridge) = config.media.bridge() {
        // Header names only: their values are the agent's credentials.
        let headers: Vec<&str> = bridge
            .headers
            .iter()
            .map(|(name, _)| name.as_str())
            .collect();
        info!(
            bridge_url = %prosaas_calls::config::redact_userinfo(bridge.url.template()),
            bridge_headers = ?headers,
            connect_timeout = ?bridge.connect_timeout,
            "voice-agent bridge"
        );
    }
    if config.twilio_auth_token.is_none() {
        warn!("TWILIO_AUTH_TOKEN is not set: X-Twilio-Signature is NOT checked");
    }
    if let Some(url) = &config.public_url
        && url.starts_with("http://")
    {
        warn!(
            public_url = %prosaas_calls::config::redact_userinfo(url),
            "PUBLIC_URL is http://, so the stream URL is ws://, which Twilio will not open: \
             calls will be answered and then fail. Use an https:// URL in front of a TLS proxy"
        );
    }
}

fn init_logging(format: LogFormat) {
    // An empty RUST_LOG (`RUST_LOG=` in a compose or env file) counts as unset, like every other
    // variable: parsed as is, it would silence every line.
    let filter = std::env::var("RUST_LOG")
        .ok()
        .filter(|directives| !directives.trim().is_empty())
        .and_then(|directives| EnvFilter::try_new(directives).ok())
        .unwrap_or_else(|| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_timer(prosaas_calls::log_clock::LogClock)
        .with_ansi(std::io::stdout().is_terminal());
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}
