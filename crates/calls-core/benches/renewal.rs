//! The renewal benchmark: one replica's tick (`CallStore::renew`, production's scripts) for many live
//! calls on a private redis-server, beside a floor that does the same writes with plain commands.
//!
//! What matters is how long Redis runs one command: Redis runs a script alone, so every other
//! replica's admission waits behind the longest one. Redis' slowlog (threshold 100 µs for the run)
//! gives the longest commands' durations, `INFO commandstats` Redis' whole time per tick; the wall
//! time of the tick is reported beside them. (A slowlog at threshold 0 would log every command a
//! script runs, inside the script's own time, and make the script look slower than it is.)

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use calls_core::call_sid::CallSid;
use calls_core::keys;
use calls_core::state::{CallState, CallStatus, MediaFormat};
use calls_core::store::{
    AdmitPolicy, CallStore, RedisStore, RenewBatch, Renewal, ReplicaHeartbeat, StoreConfig,
    StreamAdmission,
};
use clap::Parser;
use redis::aio::MultiplexedConnection;
use testkit::RedisServer;

mod support;
use support::load_average;

const LEASE: Duration = Duration::from_secs(30);
const REPLICA: &str = "bench-replica";
const LOCK_TTL_MS: u64 = 60_000;
const STATE_TTL_S: u64 = 3_600;
/// Commands at least this long are logged: every renewal script, hardly any single plain write.
const SLOW_US: u64 = 100;
/// What a renewal tick sends, and what the floor sends, as `INFO commandstats` names them.
const RENEWAL_COMMANDS: [&str; 1] = ["evalsha"];
const FLOOR_COMMANDS: [&str; 3] = ["zadd", "pexpire", "set"];

#[derive(Parser)]
#[command(about = "One replica's renewal tick for many live calls against plain writes")]
struct Args {
    /// Live calls per run (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "100,500,2000")]
    calls: Vec<u64>,
    /// Ticks measured per run.
    #[arg(long, default_value_t = 20)]
    ticks: usize,
    /// Five ticks per run: a smoke test of the bench itself.
    #[arg(long)]
    quick: bool,
    /// `cargo bench` passes `--bench` to every `harness = false` target.
    #[arg(long, hide = true)]
    bench: bool,
}

/// Durations of one kind of tick, in microseconds.
#[derive(Default)]
struct Ticks {
    /// Wall time of each tick, as the replica saw it.
    wall: Vec<u64>,
    /// Redis' time for each tick (the sum of its commands' durations).
    redis: Vec<u64>,
    /// The longest single command of each tick: how long it held everyone else.
    longest: Vec<u64>,
    commands_per_tick: u64,
}

fn percentile(values: &[u64], p: f64) -> u64 {
    let mut sorted = values.to_vec();
    sorted.sort_unstable();
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn ms(us: u64) -> String {
    format!("{:.2}", us as f64 / 1000.0)
}

fn sid(n: u64) -> Result<CallSid> {
    CallSid::parse(&format!("CA{n:032x}")).context("building a benchmark call SID")
}

/// A live call's state as a replica flushes it after 15 minutes of audio: every field a real call
/// fills, counters with their real number of digits.
fn live_state(call: &CallSid, n: u64) -> CallState {
    let mut state = CallState::reserved(call.as_str(), REPLICA);
    state.status = CallStatus::Active;
    state.stream_sid = Some(format!("MZ{n:032x}"));
    state.account_sid = Some(format!("AC{:032x}", 7));
    state.from = Some("+15005550006".to_owned());
    state.to = Some("+15005550001".to_owned());
    state.stream_url = Some("wss://calls.example.com/twilio/stream".to_owned());
    state.started_at = Some(calls_core::state::now_rfc3339());
    state.media_format = Some(MediaFormat {
        encoding: "audio/x-mulaw".to_owned(),
        sample_rate: 8000,
        channels: 1,
    });
    state
        .custom_parameters
        .insert("customer".to_owned(), format!("cust-{n}"));
    state.frames_in = 45_000 + n;
    state.frames_out = 44_990 + n;
    state.bytes_in = 7_200_000 + 160 * n;
    state
}

/// Calls 1..=n started as streams on this replica, each with its lock token and live state.
async fn start_calls(store: &RedisStore, n: u64) -> Result<Vec<Renewal>> {
    let mut calls = Vec::new();
    for i in 1..=n {
        let call = sid(i)?;
        let token = format!("{REPLICA}:{i}");
        let state = live_state(&call, i);
        match store
            .start_stream(
                &call,
                &token,
                AdmitPolicy::MayTakeSlot,
                LEASE,
                &state,
                None.into(),
            )
            .await
            .with_context(|| format!("stream start {call}"))?
        {
            StreamAdmission::Started { .. } => {}
            other => bail!("{call} did not start: {other:?}"),
        }
        calls.push(Renewal {
            call_sid: call,
            lock_token: token,
            state: Some(state),
        });
    }
    Ok(calls)
}

fn batch(calls: &[Renewal]) -> RenewBatch {
    RenewBatch {
        lease: LEASE,
        calls: calls.to_vec(),
        heartbeat: ReplicaHeartbeat {
            id: REPLICA.to_owned(),
            started_at: calls_core::state::now_rfc3339(),
            calls_active: calls.len() as u64,
            draining: false,
            max_concurrent_calls: 100_000,
            renew_interval_ms: 10_000,
            tenant_key: None,
            default_tenant_limit: None,
        },
        heartbeat_ttl: Duration::from_secs(30),
    }
}

/// Durations (µs) of the commands in `names` that Redis logged as slow since the last reset.
async fn slow_commands(admin: &mut MultiplexedConnection, names: &[&str]) -> Result<Vec<u64>> {
    let entries: Vec<redis::Value> = redis::cmd("SLOWLOG")
        .arg("GET")
        .arg(-1)
        .query_async(admin)
        .await
        .context("SLOWLOG GET")?;
    redis::cmd("SLOWLOG")
        .arg("RESET")
        .query_async::<()>(admin)
        .await
        .context("SLOWLOG RESET")?;
    let mut durations = Vec::new();
    for entry in entries {
        let redis::Value::Array(fields) = entry else {
            bail!("unexpected SLOWLOG entry {entry:?}");
        };
        let (Some(redis::Value::Int(us)), Some(redis::Value::Array(argv))) =
            (fields.get(2), fields.get(3))
        else {
            bail!("unexpected SLOWLOG fields {fields:?}");
        };
        let name = match argv.first() {
            Some(redis::Value::BulkString(name)) => String::from_utf8_lossy(name).to_lowercase(),
            _ => String::new(),
        };
        if names.contains(&name.as_str()) {
            durations.push(u64::try_from(*us).unwrap_or(0));
        }
    }
    Ok(durations)
}

/// How many of the commands named `names` Redis ran so far, and its total time (µs) in them.
async fn command_usec(admin: &mut MultiplexedConnection, names: &[&str]) -> Result<(u64, u64)> {
    Ok(support::command_stats(admin)
        .await?
        .into_iter()
        .filter(|(name, _)| names.contains(&name.as_str()))
        .fold((0, 0), |(calls, usec), (_, (c, u))| (calls + c, usec + u)))
}

fn record(ticks: &mut Ticks, wall: Duration, (commands, redis_us): (u64, u64), slow: &[u64]) {
    ticks
        .wall
        .push(u64::try_from(wall.as_micros()).unwrap_or(u64::MAX));
    ticks.redis.push(redis_us);
    ticks.longest.push(slow.iter().copied().max().unwrap_or(0));
    ticks.commands_per_tick = commands;
}

/// The floor: the same lease extensions, lock renewals and state writes as plain commands in one
/// pipeline (no check that a call ended, no grant kept, no tenant mirror, no reclaim).
async fn floor_tick(conn: &mut MultiplexedConnection, calls: &[Renewal]) -> Result<()> {
    let deadline = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis()
        + LEASE.as_millis();
    let mut pipe = redis::pipe();
    for call in calls {
        let json = serde_json::to_string(call.state.as_ref().context("floor needs a state")?)?;
        pipe.cmd("ZADD")
            .arg(keys::SLOTS)
            .arg("GT")
            .arg(deadline as u64)
            .arg(call.call_sid.as_str())
            .ignore();
        pipe.cmd("PEXPIRE")
            .arg(keys::lock(&call.call_sid))
            .arg(LOCK_TTL_MS)
            .ignore();
        pipe.cmd("SET")
            .arg(keys::state(&call.call_sid))
            .arg(json)
            .arg("EX")
            .arg(STATE_TTL_S)
            .ignore();
    }
    pipe.query_async::<()>(conn).await.context("floor tick")
}

async fn run(server: &RedisServer, args: &Args, command: &str) -> Result<()> {
    let url = server.url();
    let client = redis::Client::open(url.as_str())?;
    let mut admin = client.get_multiplexed_async_connection().await?;
    let mut floor_conn = client.get_multiplexed_async_connection().await?;
    let ticks = if args.quick { 5 } else { args.ticks.max(1) };
    println!("Command: `{command}`\n");
    println!(
        "redis-server on a unix socket started by the bench; {ticks} ticks per run; 1-minute load \
         average {} before.\n",
        load_average()
    );
    println!(
        "| live calls | scripts per tick | longest command p50 / max ms | Redis ms per tick p50 | tick wall p50 / max ms | floor: commands per tick | floor longest p50 / max ms (0.00: none over 0.1) | floor Redis ms per tick p50 | floor wall p50 / max ms |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for &n in &args.calls {
        redis::cmd("FLUSHALL").query_async::<()>(&mut admin).await?;
        let store = RedisStore::connect(
            &url,
            StoreConfig {
                limit: n + 10,
                recovery_holdoff: Duration::ZERO,
                lock_ttl: Duration::from_millis(LOCK_TTL_MS),
                ..StoreConfig::default()
            },
        )
        .await
        .context("connecting the store")?;
        let calls = start_calls(&store, n).await?;
        let batch = batch(&calls);
        redis::cmd("CONFIG")
            .arg("SET")
            .arg("slowlog-log-slower-than")
            .arg(SLOW_US)
            .arg("slowlog-max-len")
            .arg(100_000)
            .query_async::<()>(&mut admin)
            .await?;
        let (mut renewal, mut floor) = (Ticks::default(), Ticks::default());
        // Alternated, so a noisy neighbour hits both alike.
        for _ in 0..ticks {
            slow_commands(&mut admin, &[]).await?;
            let before = command_usec(&mut admin, &RENEWAL_COMMANDS).await?;
            let began = Instant::now();
            let report = store.renew(&batch).await.context("renewal tick")?;
            let wall = began.elapsed();
            if report.readded.len() + report.lock_lost.len() + report.ended.len() > 0 {
                bail!("a steady tick changed something: {report:?}");
            }
            let after = command_usec(&mut admin, &RENEWAL_COMMANDS).await?;
            let slow = slow_commands(&mut admin, &RENEWAL_COMMANDS).await?;
            record(
                &mut renewal,
                wall,
                (after.0 - before.0, after.1 - before.1),
                &slow,
            );

            let before = command_usec(&mut admin, &FLOOR_COMMANDS).await?;
            let began = Instant::now();
            floor_tick(&mut floor_conn, &calls).await?;
            let wall = began.elapsed();
            let after = command_usec(&mut admin, &FLOOR_COMMANDS).await?;
            let slow = slow_commands(&mut admin, &FLOOR_COMMANDS).await?;
            record(
                &mut floor,
                wall,
                (after.0 - before.0, after.1 - before.1),
                &slow,
            );
        }
        redis::cmd("CONFIG")
            .arg("SET")
            .arg("slowlog-log-slower-than")
            .arg(10_000)
            .query_async::<()>(&mut admin)
            .await?;
        println!(
            "| {n} | {} | {} / {} | {} | {} / {} | {} | {} / {} | {} | {} / {} |",
            renewal.commands_per_tick,
            ms(percentile(&renewal.longest, 50.0)),
            ms(percentile(&renewal.longest, 100.0)),
            ms(percentile(&renewal.redis, 50.0)),
            ms(percentile(&renewal.wall, 50.0)),
            ms(percentile(&renewal.wall, 100.0)),
            floor.commands_per_tick,
            ms(percentile(&floor.longest, 50.0)),
            ms(percentile(&floor.longest, 100.0)),
            ms(percentile(&floor.redis, 50.0)),
            ms(percentile(&floor.wall, 50.0)),
            ms(percentile(&floor.wall, 100.0)),
        );
    }
    println!("\n1-minute load average {} after.", load_average());
    Ok(())
}

fn main() -> ExitCode {
    let args = Args::parse();
    let command = support::command_line("renewal");
    // The server lives in main's frame, so its Drop kills the redis-server however the run ends.
    let server = match RedisServer::start() {
        Ok(server) => server,
        Err(e) => {
            eprintln!("renewal bench: {e}");
            return ExitCode::FAILURE;
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("renewal bench: cannot build the tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(run(&server, &args, &command));
    runtime.shutdown_timeout(Duration::from_secs(1));
    drop(server);
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("renewal bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}
