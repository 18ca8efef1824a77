//! `prosaas-calls-sim`: behaves like Twilio for N calls against a server (webhook, Media Stream,
//! real-time audio; loopback unless --allow-remote) and reports admission, loss, echo latency and
//! per-frame costs.
//! Exits 0 when the run passed, 1 when it should fail a deploy gate, 2 on bad arguments.

#![forbid(unsafe_code)]

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Parser;
use prosaas_calls_sim::agent::{Agent, Behaviour};
use prosaas_calls_sim::call::{CallPlan, Patience};
use prosaas_calls_sim::procfs;
use prosaas_calls_sim::rest_double::behaviour::{self, Endpoint};
use prosaas_calls_sim::rest_double::dialer::DialSettings;
use prosaas_calls_sim::rest_double::outcome::Outcomes;
use prosaas_calls_sim::rest_double::{self, RestDouble};
use prosaas_calls_sim::rng::Rng;
use prosaas_calls_sim::run::{self, EchoMode, RunConfig};
use prosaas_calls_sim::target::{Reach, Target};
use prosaas_calls_sim::tenants;
use prosaas_calls_sim::timeline;

#[derive(Parser)]
#[command(
    version,
    about = "Simulate Twilio voice calls (webhook, Media Stream, 20 ms audio) against a server: \
             loopback only unless --allow-remote"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Bridge mode: also run an echo voice agent on this address (host:port), in this process;
    /// start the server with MEDIA_HANDLER=bridge and BRIDGE_URL=ws://<this address>/.
    #[arg(long)]
    agent_listen: Option<std::net::SocketAddr>,
    /// The server: http://host[:port], or https://host[:port] (TLS, port 443 by default), on the
    /// loopback range unless --allow-remote. Every connection goes here, whatever host the TwiML
    /// names.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    target: String,
    /// The operator means to send traffic to a non-loopback host (e.g. a staging endpoint): the
    /// target may resolve to any address. The run is bounded by --calls and --duration like any
    /// other.
    #[arg(long)]
    allow_remote: bool,
    /// For an https:// target: also trust the CA certificates in this PEM file (a private CA, or
    /// a self-signed TLS front), besides the public CA roots.
    #[arg(long, value_name = "PATH")]
    ca_file: Option<std::path::PathBuf>,
    /// Calls to place.
    #[arg(long, default_value_t = 10)]
    calls: u64,
    /// Most calls live at once (default: all of them).
    #[arg(long)]
    concurrency: Option<u64>,
    /// Seconds over which call starts are spread evenly.
    #[arg(long, default_value = "1", value_parser = seconds)]
    ramp: Duration,
    /// Seconds of audio per call (one frame per 20 ms).
    #[arg(long, default_value = "10", value_parser = seconds)]
    duration: Duration,
    /// Every frame must come back: frames not echoed count as lost.
    #[arg(long, conflicts_with = "no_echo")]
    expect_echo: bool,
    /// The server sends no audio back (MEDIA_HANDLER=silent). Default: detect.
    #[arg(long)]
    no_echo: bool,
    /// Sign requests with X-Twilio-Signature using this auth token.
    #[arg(long)]
    auth_token: Option<String>,
    /// The server's PUBLIC_URL: signed URLs use it; connections still go to --target.
    #[arg(long)]
    public_url: Option<String>,
    /// Skip the voice webhook and open the stream at --target directly (for a bare WebSocket
    /// echo server).
    #[arg(long)]
    stream_only: bool,
    /// Send this DTMF digit once, mid-call.
    #[arg(long)]
    dtmf: Option<String>,
    /// Send a mark with this name once, mid-call.
    #[arg(long)]
    mark: Option<String>,
    /// Seconds to wait after `stop` for the last echoes and the server's close.
    #[arg(long, default_value = "2", value_parser = seconds)]
    drain: Duration,
    /// Seconds after the ramp before the steady-state window may open.
    #[arg(long, default_value = "1", value_parser = seconds)]
    settle: Duration,
    /// The server's PID: its CPU per frame and memory per call are measured over the window.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Runtime threads: 1 is a current-thread runtime.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Seconds between progress lines on stderr; 0 for none.
    #[arg(long, default_value = "5", value_parser = seconds_or_zero)]
    progress: Duration,
    /// Print the report as JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// Refusals are expected (a run over the limit): they do not fail the run.
    #[arg(long)]
    allow_rejected: bool,
    /// Fire this many voice webhooks at once (each on a fresh connection, released together) and
    /// report their latency; no stream is opened, and --calls, --ramp and --duration are ignored.
    #[arg(long)]
    burst: Option<u64>,
    /// Also write the run as 100 ms buckets to this CSV file (frames sent, echoed and late, echo
    /// latency p50 / p99 / max per bucket, each stamped with Unix ms) to line a stall up with the
    /// server's log.
    #[arg(long, value_name = "FILE")]
    timeline: Option<std::path::PathBuf>,
    /// Spread the calls over tenants with these weights (`3,1,1,1`: four tenants, the first placing
    /// half the calls), each its own AccountSid and To number so either TENANT_KEY tells them
    /// apart; the report then has a row per tenant.
    #[arg(long, value_name = "WEIGHTS")]
    tenants: Option<String>,
    /// A caller put on hold by the waiting room hangs up after this many seconds (SECS, or
    /// MIN-MAX spread uniformly per call): the final status callback, counted abandoned.
    /// Default: waits as long as the server keeps them.
    #[arg(long, value_name = "SECS|MIN-MAX", value_parser = Patience::parse)]
    patience: Option<Patience>,
    /// Seed for SIDs, patience and stream keys: the same seed, the same calls (default: from the
    /// clock).
    #[arg(long)]
    seed: Option<u64>,
    /// Largest share of sent frames, in percent, that may go unechoed (echo mode) before the run
    /// fails.
    #[arg(long, default_value_t = 0.1)]
    max_loss_percent: f64,
}

#[derive(clap::Subcommand)]
enum Command {
    /// Run only the echo voice agent (the far side of MEDIA_HANDLER=bridge) until interrupted.
    Agent {
        /// Where to listen, host:port.
        #[arg(long, default_value = "127.0.0.1:9090")]
        listen: std::net::SocketAddr,
        /// Runtime threads: 1 is a current-thread runtime.
        #[arg(long, default_value_t = 1)]
        threads: usize,
    },
    /// Serve the parts of Twilio's REST API the server calls (Messages, Calls, a call's Status),
    /// recording every request, and play Twilio's side of each call it is asked to place: ring,
    /// answer (or busy, no-answer, failed), status callbacks, the voice webhook and the Media
    /// Stream. Runs until interrupted. docs/rest_double.md has the HTTP interface.
    TwilioApi(Box<TwilioApiArgs>),
}

#[derive(clap::Args)]
struct TwilioApiArgs {
    /// Where to listen, host:port (TWILIO_API_BASE is then http://host:port).
    #[arg(long, default_value = "127.0.0.1:8089")]
    listen: std::net::SocketAddr,
    /// The account served: requests must name it in their path.
    #[arg(long, default_value = rest_double::DEFAULT_ACCOUNT_SID)]
    account_sid: String,
    /// The account's auth token: accepted as the basic-auth password with the account SID, and
    /// signs every callback and webhook (X-Twilio-Signature). Also read from $TWILIO_AUTH_TOKEN.
    #[arg(long, env = "TWILIO_AUTH_TOKEN", hide_env_values = true)]
    auth_token: Option<String>,
    /// An API key accepted as basic auth, SK…:SECRET (repeatable). With neither a token nor a
    /// key, any basic auth is accepted (and recorded as `unverified`).
    #[arg(long = "api-key", value_name = "SID:SECRET")]
    api_keys: Vec<String>,
    /// What POST …/Messages.json does: ok, delay:SECS (acted on now, answered late), hang,
    /// fail:STATUS[:CODE[:MESSAGE]], rate-limit:first=N, rate-limit:per-second=N; prefix N* for
    /// the next N requests only.
    #[arg(long, default_value = "ok")]
    messages: String,
    /// What POST …/Calls.json does (as --messages).
    #[arg(long, default_value = "ok")]
    calls: String,
    /// What POST …/Calls/{Sid}.json does (as --messages).
    #[arg(long, default_value = "ok")]
    call_update: String,
    /// Also append every request, as one JSON line, to this file.
    #[arg(long, value_name = "PATH")]
    record: Option<std::path::PathBuf>,
    /// Every webhook, callback and stream of a placed call connects here, whatever host its URL
    /// names (as the simulator's --target); default: the host each URL names.
    #[arg(long)]
    target: Option<String>,
    /// URLs may name (and --target may be) a non-loopback host.
    #[arg(long)]
    allow_remote: bool,
    /// For https:// URLs: also trust the CA certificates in this PEM file.
    #[arg(long, value_name = "PATH")]
    ca_file: Option<std::path::PathBuf>,
    /// How placed calls end, by weight: answered=70,no-answer=20,busy=10,failed=0. Calls are
    /// given outcomes in a fixed order that keeps each to its share.
    #[arg(long, default_value = "answered=100")]
    mix: String,
    /// Calls to this number always end so, NUMBER=OUTCOME (repeatable; over --mix).
    #[arg(long = "outcome", value_name = "NUMBER=OUTCOME")]
    outcomes: Vec<String>,
    /// Seconds from the REST request to `initiated`.
    #[arg(long, default_value = "0.1", value_parser = seconds_or_zero)]
    dial_delay: Duration,
    /// Seconds of ringing before an answer or a busy signal.
    #[arg(long, default_value = "1", value_parser = seconds_or_zero)]
    ring_secs: Duration,
    /// Seconds of ringing before `no-answer` (default: the request's Timeout, as Twilio).
    #[arg(long, value_parser = seconds)]
    no_answer_secs: Option<Duration>,
    /// Seconds an answered call streams before the callee hangs up.
    #[arg(long, default_value = "5", value_parser = seconds)]
    talk_secs: Duration,
    /// The account's calls per second: dials beyond it wait their turn, as Twilio queues them
    /// (default: no limit).
    #[arg(long)]
    cps: Option<f64>,
    /// Seconds to wait after the callee's `stop` for the server's close.
    #[arg(long, default_value = "2", value_parser = seconds)]
    drain: Duration,
    /// Seed for SIDs and stream keys (default: from the clock).
    #[arg(long)]
    seed: Option<u64>,
    /// Runtime threads: 1 is a current-thread runtime.
    #[arg(long, default_value_t = 1)]
    threads: usize,
}

fn runtime(threads: usize) -> anyhow::Result<tokio::runtime::Runtime> {
    match threads {
        0 | 1 => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
        n => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(n)
            .enable_all()
            .build(),
    }
    .context("starting the runtime")
}

/// `prosaas-calls-sim agent`: the echo agent alone, as its own process (so a benchmark can tell
/// its CPU from the simulator's).
fn run_agent(listen: std::net::SocketAddr, threads: usize) -> anyhow::Result<ExitCode> {
    procfs::raise_nofile_limit().context("raising RLIMIT_NOFILE")?;
    runtime(threads)?.block_on(async {
        let agent = Agent::start(listen, Behaviour::Echo, false)
            .await
            .with_context(|| format!("listening on {listen}"))?;
        eprintln!("prosaas-calls-sim: echo agent on ws://{}/", agent.addr());
        tokio::signal::ctrl_c()
            .await
            .context("waiting for Ctrl-C")?;
        Ok(ExitCode::SUCCESS)
    })
}

/// `prosaas-calls-sim twilio-api`: the REST double, until interrupted.
fn run_twilio_api(args: TwilioApiArgs) -> anyhow::Result<ExitCode> {
    let mut behaviours = Vec::new();
    for (endpoint, spec) in [
        (Endpoint::Messages, &args.messages),
        (Endpoint::Calls, &args.calls),
        (Endpoint::CallUpdate, &args.call_update),
    ] {
        let behaviour = behaviour::Behaviour::parse(spec)
            .map_err(|why| anyhow::anyhow!("--{}: {why}", endpoint.name()))?;
        behaviours.push((endpoint, behaviour));
    }
    let api_keys = args
        .api_keys
        .iter()
        .map(|key| {
            key.split_once(':')
                .filter(|(sid, secret)| !sid.is_empty() && !secret.is_empty())
                .map(|(sid, secret)| (sid.to_owned(), secret.to_owned()))
                .ok_or_else(|| anyhow::anyhow!("--api-key must be SID:SECRET"))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut outcomes = Outcomes::default();
    outcomes
        .set_mix(&args.mix)
        .map_err(|why| anyhow::anyhow!("--mix: {why}"))?;
    for spec in &args.outcomes {
        outcomes
            .set_for_number(spec)
            .map_err(|why| anyhow::anyhow!("--outcome: {why}"))?;
    }
    if args.cps.is_some_and(|cps| !(cps.is_finite() && cps > 0.0)) {
        bail!("--cps must be more than 0");
    }
    let reach = Reach {
        allow_remote: args.allow_remote,
        ca_file: args.ca_file,
    };
    if let Some(target) = &args.target {
        // Checked now, so a bad --target stops start-up rather than every call.
        Target::with_reach(target, None, None, &reach)?;
    }
    let auth_token = args.auth_token.filter(|t| !t.is_empty());
    let config = rest_double::Config {
        account_sid: args.account_sid.clone(),
        auth_token: auth_token.clone(),
        api_keys,
        behaviours,
        record: args.record,
        outcomes,
        dial: DialSettings {
            account_sid: args.account_sid,
            auth_token,
            target: args.target,
            reach,
            dial_delay: args.dial_delay,
            ring: args.ring_secs,
            no_answer: args.no_answer_secs,
            talk: args.talk_secs,
            cps: args.cps,
            drain: args.drain,
        },
        seed: args.seed.unwrap_or_else(Rng::seed_from_clock),
    };
    procfs::raise_nofile_limit().context("raising RLIMIT_NOFILE")?;
    runtime(args.threads)?.block_on(async {
        let double = RestDouble::start(args.listen, config)
            .await
            .with_context(|| format!("listening on {}", args.listen))?;
        eprintln!(
            "prosaas-calls-sim: Twilio REST double on {}",
            double.base_url()
        );
        let mut terminate =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                .context("watching SIGTERM")?;
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = terminate.recv() => {}
        }
        Ok(ExitCode::SUCCESS)
    })
}

fn seconds(text: &str) -> Result<Duration, String> {
    match seconds_or_zero(text)? {
        d if d.is_zero() => Err("must be more than 0".into()),
        d => Ok(d),
    }
}

fn seconds_or_zero(text: &str) -> Result<Duration, String> {
    let value: f64 = text
        .parse()
        .map_err(|_| format!("{text:?} is not a number of seconds"))?;
    if !value.is_finite() || !(0.0..=86_400.0).contains(&value) {
        return Err(format!("{text:?} must be between 0 and 86400 seconds"));
    }
    Ok(Duration::from_secs_f64(value))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("prosaas-calls-sim: {err:#}");
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Some(Command::Agent { listen, threads }) => return run_agent(listen, threads),
        Some(Command::TwilioApi(args)) => return run_twilio_api(*args),
        None => {}
    }
    if cli.calls == 0 {
        bail!("--calls must be at least 1");
    }
    let concurrency = cli.concurrency.unwrap_or(cli.calls);
    if concurrency == 0 {
        bail!("--concurrency must be at least 1");
    }
    let reach = Reach {
        allow_remote: cli.allow_remote,
        ca_file: cli.ca_file,
    };
    let target = Target::with_reach(
        &cli.target,
        cli.public_url.as_deref(),
        cli.auth_token,
        &reach,
    )?;
    // Each call holds one socket (two while its webhook is in flight).
    let nofile = procfs::raise_nofile_limit().context("raising RLIMIT_NOFILE")?;
    let needed = concurrency.min(cli.calls) * 2 + 64;
    if nofile < needed {
        eprintln!(
            "prosaas-calls-sim: warning: open-file limit {nofile} is below the {needed} this run may need; \
             raise the hard limit (ulimit -Hn) first"
        );
    }
    let seed = cli.seed.unwrap_or_else(Rng::seed_from_clock);
    let tenants = match &cli.tenants {
        Some(spec) => tenants::parse(spec).map_err(|why| anyhow::anyhow!("--tenants: {why}"))?,
        None => Vec::new(),
    };
    let config = RunConfig {
        plan: CallPlan {
            target,
            stream_only: cli.stream_only,
            duration: cli.duration,
            account_sid: Rng::new(seed).sid("AC"),
            dtmf: cli.dtmf,
            mark: cli.mark,
            drain: cli.drain,
            tenants,
            patience: cli.patience,
        },
        calls: cli.calls,
        concurrency,
        ramp: cli.ramp,
        echo: match (cli.expect_echo, cli.no_echo) {
            (true, _) => EchoMode::Expect,
            (_, true) => EchoMode::None,
            _ => EchoMode::Detect,
        },
        settle: cli.settle,
        progress: (!cli.progress.is_zero()).then_some(cli.progress),
        server_pid: cli.server_pid,
        seed,
    };
    let runtime = runtime(cli.threads)?;
    if let Some(webhooks) = cli.burst {
        if webhooks == 0 {
            bail!("--burst must be at least 1");
        }
        let report = runtime.block_on(run::burst(Arc::new(config.plan), webhooks, seed));
        if cli.json {
            println!("{}", serde_json::to_string_pretty(&report)?);
        } else {
            print!("{}", report.table());
        }
        return Ok(gate(&report.failures(cli.allow_rejected)));
    }
    let buckets = cli
        .timeline
        .as_ref()
        .map(|_| Arc::new(std::sync::Mutex::new(Vec::new())));
    let report = runtime.block_on(async {
        // Kept alive for the whole run; its sessions end with their sockets.
        let _agent = match cli.agent_listen {
            Some(listen) => Some(
                Agent::start(listen, Behaviour::Echo, false)
                    .await
                    .with_context(|| format!("starting the echo agent on {listen}"))?,
            ),
            None => None,
        };
        anyhow::Ok(run::run_with(config, buckets.clone()).await)
    })?;
    if let (Some(path), Some(buckets)) = (&cli.timeline, &buckets) {
        let buckets = buckets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        timeline::write(path, &buckets)
            .with_context(|| format!("writing the timeline to {}", path.display()))?;
    }
    if cli.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.table());
    }
    // Exit 1 when the run should fail a deploy gate; the reasons go to stderr.
    Ok(gate(
        &report.failures(cli.allow_rejected, cli.max_loss_percent),
    ))
}

/// Exit 1 when the run should fail a deploy gate; the reasons go to stderr.
fn gate(failures: &[String]) -> ExitCode {
    for failure in failures {
        eprintln!("prosaas-calls-sim: FAILED: {failure}");
    }
    if failures.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
