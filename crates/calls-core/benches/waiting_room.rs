//! The waiting room's cost per visit (docs/reference.md#waiting-room): one caller's return to
//! `/twilio/wait` as the store runs it (one `wait.lua` EVALSHA), in lines of several sizes, beside
//! the floor measured in the same run on the same Redis: the plain webhook's admission (`admit.lua`
//! with its state), refused at the cap as an over-the-cap webhook is without the waiting room.
//! Prints latency (p50/p99), Redis' own time per script and the commands each runs inside it.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use calls_core::call_sid::CallSid;
use calls_core::state::CallState;
use calls_core::store::{AdmitPolicy, CallStore, RedisStore, StoreConfig};
use calls_core::wait::{WaitOp, WaitOutcome, WaitSettings, WaitVisit};
use clap::Parser;
use testkit::RedisServer;

mod support;
use support::{command_line, command_stats, load_average};

const LEASE: Duration = Duration::from_secs(600);
const LINES: [usize; 3] = [10, 50, 100];

#[derive(Parser, Debug)]
#[command(about = "The waiting room's cost per visit beside the plain webhook's admission")]
struct Args {
    /// Visits (and floor admissions) measured per line size.
    #[arg(long, default_value_t = 2000)]
    visits: usize,
    /// A smoke run: 200 of each.
    #[arg(long)]
    quick: bool,
    /// `cargo bench` passes `--bench` to every `harness = false` target.
    #[arg(long, hide = true)]
    bench: bool,
}

fn sid(n: usize) -> CallSid {
    CallSid::parse(&format!("CA{n:032x}")).expect("a valid SID")
}

/// p50 and p99 of `samples`, in µs.
fn percentiles(mut samples: Vec<Duration>) -> (u128, u128) {
    samples.sort();
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize].as_micros();
    (at(0.5), at(0.99))
}

struct Row {
    what: String,
    p50: u128,
    p99: u128,
    /// Redis' own µs per script, and the commands it ran inside it.
    redis_usec: f64,
    inside: f64,
}

async fn visit(store: &RedisStore, n: usize, settings: &WaitSettings) -> Result<WaitOutcome> {
    let call_sid = sid(n);
    let reserved = CallState::reserved(call_sid.as_str(), "bench");
    let waiting = CallState::waiting(call_sid.as_str(), "bench");
    let visit = WaitVisit {
        call_sid: &call_sid,
        tenant: None,
        digit: false,
        reservation: LEASE,
        reserved: &reserved,
        waiting: &waiting,
    };
    Ok(store.wait(WaitOp::Visit(visit), settings).await?.outcome)
}

/// Redis' time and the commands run per `script_calls` EVALSHA between two `INFO commandstats`.
async fn per_script(
    admin: &mut redis::aio::MultiplexedConnection,
    run: impl std::future::Future<Output = Result<usize>>,
) -> Result<(usize, f64, f64)> {
    redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .query_async::<()>(admin)
        .await?;
    let scripts = run.await?;
    let stats = command_stats(admin).await?;
    let (evalsha, usec) = stats.get("evalsha").copied().unwrap_or((0, 0));
    let inside: u64 = stats
        .iter()
        .filter(|(name, _)| !matches!(name.as_str(), "evalsha" | "config|resetstat"))
        .map(|(_, (calls, _))| calls)
        .sum();
    let evalsha = evalsha.max(1) as f64;
    Ok((scripts, usec as f64 / evalsha, inside as f64 / evalsha))
}

async fn run(args: &Args) -> Result<Vec<Row>> {
    let visits = if args.quick { 200 } else { args.visits };
    let server = RedisServer::start().context("redis-server")?;
    let client = redis::Client::open(server.url())?;
    let mut admin = client.get_multiplexed_async_connection().await?;
    let config = StoreConfig {
        limit: 1,
        recovery_holdoff: Duration::ZERO,
        ..StoreConfig::default()
    };
    let store = RedisStore::connect(&server.url(), config).await?;
    let settings = WaitSettings {
        max_wait: Duration::from_secs(3600),
        max_callers: 10_000,
        poll: Duration::from_secs(600),
        hold: Duration::ZERO,
    };
    // The one slot, taken for the whole run: every visit stays in line.
    store
        .admit(&sid(0), AdmitPolicy::MayTakeSlot, LEASE, None)
        .await?;
    let mut rows = Vec::new();
    let mut in_line = 0;
    for line in LINES {
        while in_line < line {
            in_line += 1;
            visit(&store, in_line, &settings).await?;
        }
        let mut samples = Vec::with_capacity(visits);
        let (_, usec, inside) = per_script(&mut admin, async {
            for i in 0..visits {
                let started = Instant::now();
                let outcome = visit(&store, 1 + i % line, &settings).await?;
                samples.push(started.elapsed());
                anyhow::ensure!(
                    matches!(outcome, WaitOutcome::Waiting { .. }),
                    "a visit left the line: {outcome:?}"
                );
            }
            Ok(visits)
        })
        .await?;
        let (p50, p99) = percentiles(samples);
        rows.push(Row {
            what: format!("visit, line of {line}"),
            p50,
            p99,
            redis_usec: usec,
            inside,
        });
    }
    // The floor: the plain webhook's admission with its state, refused at the cap.
    let mut samples = Vec::with_capacity(visits);
    let (_, usec, inside) = per_script(&mut admin, async {
        for i in 0..visits {
            let call_sid = sid(1_000_000 + i);
            let state = CallState::reserved(call_sid.as_str(), "bench");
            let started = Instant::now();
            let admission = store
                .admit(&call_sid, AdmitPolicy::MayTakeSlot, LEASE, Some(&state))
                .await?;
            samples.push(started.elapsed());
            anyhow::ensure!(!admission.is_admitted(), "the floor admitted a call");
        }
        Ok(visits)
    })
    .await?;
    let (p50, p99) = percentiles(samples);
    rows.push(Row {
        what: "floor: plain webhook admission (refused at the cap)".into(),
        p50,
        p99,
        redis_usec: usec,
        inside,
    });
    Ok(rows)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args = Args::parse();
    let load_before = load_average();
    match run(&args).await {
        Ok(rows) => {
            println!("{}", command_line("waiting_room"));
            println!(
                "load average before {load_before}, after {}; one client, loopback redis-server",
                load_average()
            );
            println!();
            println!(
                "| step | p50 µs | p99 µs | Redis µs per script | commands inside the script |"
            );
            println!("|---|---|---|---|---|");
            for row in rows {
                println!(
                    "| {} | {} | {} | {:.1} | {:.1} |",
                    row.what, row.p50, row.p99, row.redis_usec, row.inside
                );
            }
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("waiting_room bench failed: {err:#}");
            ExitCode::FAILURE
        }
    }
}
