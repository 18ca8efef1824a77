//! The in-process store's admission with many live calls held: what one admit + release costs
//! when `live` slots are already taken (no Redis; `cargo run` without `REDIS_URL`).
//!
//! Every admission first reclaims lapsed leases, so its cost follows how that reclaim finds them:
//! a walk of every live slot grows with `live`, an index by deadline does not. Nothing lapses
//! here (the lease outlives the run), which is the common case a walk pays for in full.
//! `--tenant`: every call, held or admitted, is one tenant's under a default tenant cap, so each
//! admission also checks that tenant's live count (docs/reference.md#tenants).

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use calls_core::call_sid::CallSid;
use calls_core::state::{CallState, EndReason};
use calls_core::store::{
    Admission, AdmitPolicy, CallStore, MemoryStore, RenewBatch, Renewal, ReplicaHeartbeat,
    StoreConfig,
};
use clap::Parser;

/// Long enough that no slot lapses during a run.
const LEASE: Duration = Duration::from_secs(3_600);
const REPLICA: &str = "bench-replica";
/// The one tenant of `--tenant`.
const TENANT: &str = "bench-tenant";

#[derive(Parser)]
#[command(about = "In-process admit + release with many live calls held")]
struct Args {
    /// Live calls held while measuring (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "0,10000,50000")]
    live: Vec<u64>,
    /// Admit + release pairs per round.
    #[arg(long, default_value_t = 2_000)]
    admissions: u64,
    /// Rounds per live count; the median round is reported, so one busy moment of a shared
    /// machine does not make the figure.
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// One short round per live count: a smoke test of the bench itself.
    #[arg(long)]
    quick: bool,
    /// Every call is one tenant's, under a default tenant cap no call reaches.
    #[arg(long)]
    tenant: bool,
    /// `cargo bench` passes `--bench` to every `harness = false` target.
    #[arg(long, hide = true)]
    bench: bool,
}

impl Args {
    /// (rounds, admissions per round) after `--quick`.
    fn plan(&self) -> (usize, u64) {
        if self.quick {
            (1, self.admissions.clamp(1, 100))
        } else {
            (self.rounds.max(1), self.admissions.max(1))
        }
    }
}

fn sid(n: u64) -> Result<CallSid> {
    CallSid::parse(&format!("CA{n:032x}")).context("building a benchmark call SID")
}

/// Holds `live` slots through one renewal (every call re-added): one reclaim for all of them, so
/// filling does not itself cost what is measured once per call.
async fn hold(store: &MemoryStore, live: u64, tenant: bool) -> Result<()> {
    let calls = (0..live)
        .map(|n| {
            let call_sid = sid(n)?;
            // The tenant a re-added slot takes is its state's.
            let state = tenant.then(|| state_of(&call_sid, true));
            Ok(Renewal {
                call_sid,
                lock_token: format!("{REPLICA}:{n}"),
                state,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let report = store
        .renew(&RenewBatch {
            lease: LEASE,
            calls,
            heartbeat: ReplicaHeartbeat {
                id: REPLICA.to_owned(),
                started_at: calls_core::state::now_rfc3339(),
                calls_active: live,
                draining: false,
                max_concurrent_calls: u64::MAX,
                renew_interval_ms: 10_000,
                tenant_key: None,
                default_tenant_limit: None,
            },
            heartbeat_ttl: Duration::from_secs(30),
        })
        .await?;
    if report.active != live {
        bail!("holding {live} calls left {} live", report.active);
    }
    Ok(())
}

fn state_of(call: &CallSid, tenant: bool) -> CallState {
    let mut state = CallState::reserved(call.as_str(), REPLICA);
    if tenant {
        state.tenant = Some(TENANT.to_owned());
    }
    state
}

/// One round: `admissions` fresh calls admitted with their reserved state and released, each
/// before the next, so the live count stays at `live` (+1 during a call). Returns the round's
/// wall time.
async fn round(
    store: &MemoryStore,
    live: u64,
    first: u64,
    admissions: u64,
    tenant: bool,
) -> Result<Duration> {
    let calls = (first..first + admissions)
        .map(|n| {
            let call = sid(n)?;
            let state = state_of(&call, tenant);
            Ok((call, state))
        })
        .collect::<Result<Vec<_>>>()?;
    let started = Instant::now();
    for (call, state) in &calls {
        match store
            .admit(call, AdmitPolicy::MayTakeSlot, LEASE, Some(state))
            .await?
        {
            Admission::Admitted { new: true, active } if active == live + 1 => {}
            other => bail!("{call}: {other:?} with {live} live"),
        }
        if !store.release(call, EndReason::Stop).await? {
            bail!("{call}: released no slot");
        }
    }
    Ok(started.elapsed())
}

async fn measure(args: &Args, live: u64) -> Result<Vec<Duration>> {
    let store = MemoryStore::new(StoreConfig {
        limit: u64::MAX,
        recovery_holdoff: Duration::ZERO,
        default_tenant_limit: args.tenant.then_some(u64::MAX),
        ..StoreConfig::default()
    });
    hold(&store, live, args.tenant).await?;
    let (rounds, admissions) = args.plan();
    let mut times = Vec::with_capacity(rounds);
    for r in 0..rounds as u64 {
        let first = live + r * admissions;
        times.push(round(&store, live, first, admissions, args.tenant).await? / admissions as u32);
    }
    times.sort_unstable();
    Ok(times)
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|avg| avg.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "unknown".to_owned())
}

fn command_line() -> String {
    let flags: Vec<String> = std::env::args()
        .skip(1)
        .filter(|arg| arg != "--bench")
        .collect();
    let base = "cargo bench -p calls-core --bench memory_admission";
    if flags.is_empty() {
        base.to_owned()
    } else {
        format!("{base} -- {}", flags.join(" "))
    }
}

fn run(args: &Args) -> Result<()> {
    // The store never awaits anything: a current-thread runtime only drives its futures.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("building the tokio runtime")?;
    println!("Command: `{}`", command_line());
    let (rounds, admissions) = args.plan();
    println!(
        "{rounds} round(s) of {admissions} admit + release pairs per live count, one thread{}; \
         1-minute load average before: {}\n",
        if args.tenant {
            ", every call one tenant's"
        } else {
            ""
        },
        load_average()
    );
    println!(
        "| live calls held | admit + release, median round (µs) | fastest round (µs) | slowest round (µs) |"
    );
    println!("|--:|--:|--:|--:|");
    for &live in &args.live {
        let times = runtime.block_on(measure(args, live))?;
        let us = |d: &Duration| format!("{:.2}", d.as_secs_f64() * 1e6);
        println!(
            "| {live} | {} | {} | {} |",
            us(&times[times.len() / 2]),
            us(&times[0]),
            us(&times[times.len() - 1]),
        );
    }
    println!("\n1-minute load average after: {}", load_average());
    Ok(())
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("memory_admission bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}
