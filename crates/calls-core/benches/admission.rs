//! The admission benchmark: a call's store steps as production runs them (webhook admit with its
//! state, stream start, stream end: three EVALSHA) against the original design's WATCH/MULTI counter,
//! on a private redis-server, measuring throughput, latency, commands per call and over-admission
//! (seen by a separate watcher connection sampling the live count, not by the clients).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use calls_core::call_sid::CallSid;
use calls_core::keys;
use calls_core::state::{CallState, CallStatus, EndReason};
use calls_core::store::{
    Admission, AdmitPolicy, CallStore, RedisStore, Refusal, StoreConfig, StreamAdmission, StreamEnd,
};
use clap::Parser;
use redis::AsyncCommands;
use redis::aio::MultiplexedConnection;
use testkit::RedisServer;

mod support;
use support::load_average;

/// Long enough that no slot lapses during a run, so reclaim never adds work to an admission.
const LEASE: Duration = Duration::from_secs(30);
const CLIENT_COUNTS: [usize; 3] = [1, 16, 64];
/// "Uncontended": the limit is never reached, so every attempt is admitted.
const UNCONTENDED_LIMIT: u64 = 100_000;
/// "Contended": 64 clients race for 50 slots; the 16-client run keeps that ratio (12 slots). One
/// client cannot race anyone, so the contended shape starts at 16.
const CONTENDED_SLOTS: usize = 50;
const CONTENDED_CLIENTS: usize = 64;
/// "Last slots": with an immediate release the clients rarely hold 50 slots at once, so this shape
/// has resident calls hold all but these few for the whole run and the 64 clients race for the rest.
const LAST_SLOTS_FREE: u64 = 5;
/// "Tenants": this many tenants, each capped at `TENANT_CAP` (`DEFAULT_TENANT_LIMIT`), behind a
/// global cap that only a full house reaches: the clients race for their tenants' slots, the
/// contention docs/reference.md#tenants adds, in the same one script per admission.
const TENANTS: usize = 50;
const TENANT_CAP: u64 = 2;
/// Matches the store's default `op_timeout`, so neither path gives up sooner than the other.
const OP_TIMEOUT: Duration = Duration::from_secs(2);

/// The scripts an admission and a release run, read to tell the commands Redis runs inside a
/// script (which `INFO commandstats` counts too) from the ones a client sends.
const LUA_SOURCES: [&str; 5] = [
    include_str!("../src/lua/prelude.lua"),
    include_str!("../src/lua/admit.lua"),
    include_str!("../src/lua/release.lua"),
    include_str!("../src/lua/stream_start.lua"),
    include_str!("../src/lua/stream_end.lua"),
];
/// The replica id written in every state, as production writes its own.
const REPLICA: &str = "bench-replica";

#[derive(Parser, Debug)]
#[command(about = "Admission throughput, latency and over-admission: Lua path vs WATCH/MULTI")]
struct Args {
    /// Seconds each scenario runs.
    #[arg(long, default_value_t = 5)]
    secs: u64,
    /// About one second per scenario: a smoke run, not a measurement.
    #[arg(long)]
    quick: bool,
    /// Talk to redis-server over a unix socket instead of loopback TCP.
    #[arg(long)]
    unix: bool,
    /// Also write every scenario's figures as JSON to this file (bench-results/).
    #[arg(long)]
    json: Option<std::path::PathBuf>,
    /// `cargo bench` passes `--bench` to every `harness = false` target.
    #[arg(long, hide = true)]
    bench: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    Uncontended,
    Contended,
    LastSlots,
    Tenants,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Path {
    Lua,
    WatchMulti,
}

impl Path {
    fn as_str(self) -> &'static str {
        match self {
            Self::Lua => "Lua: admit, start, end",
            Self::WatchMulti => "WATCH/MULTI",
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Scenario {
    shape: Shape,
    path: Path,
    clients: usize,
    limit: u64,
    /// Slots held by resident calls for the whole run, outside the measured clients.
    resident: u64,
    /// Each call belongs to one of `TENANTS` tenants capped at `TENANT_CAP` (Lua path only).
    tenants: bool,
}

impl Scenario {
    fn all() -> Vec<Self> {
        let mut all = Vec::new();
        for shape in [
            Shape::Uncontended,
            Shape::Contended,
            Shape::LastSlots,
            Shape::Tenants,
        ] {
            for clients in CLIENT_COUNTS {
                let (limit, resident) = match shape {
                    Shape::Uncontended => (UNCONTENDED_LIMIT, 0),
                    Shape::Contended if clients < 2 => continue,
                    Shape::Contended => ((clients * CONTENDED_SLOTS / CONTENDED_CLIENTS) as u64, 0),
                    Shape::LastSlots if clients != CONTENDED_CLIENTS => continue,
                    Shape::LastSlots => {
                        let limit = CONTENDED_SLOTS as u64;
                        (limit, limit - LAST_SLOTS_FREE)
                    }
                    Shape::Tenants if clients < 2 => continue,
                    Shape::Tenants => (TENANTS as u64 * TENANT_CAP, 0),
                };
                let tenants = shape == Shape::Tenants;
                for path in [Path::Lua, Path::WatchMulti] {
                    // WATCH/MULTI is the seed's global counter; it has no tenants to compare.
                    if tenants && path == Path::WatchMulti {
                        continue;
                    }
                    all.push(Self {
                        shape,
                        path,
                        clients,
                        limit,
                        resident,
                        tenants,
                    });
                }
            }
        }
        all
    }

    fn name(&self) -> &'static str {
        match self.shape {
            Shape::Uncontended => "uncontended",
            Shape::Contended => "contended",
            Shape::LastSlots => "last slots",
            Shape::Tenants => "tenants",
        }
    }

    /// The cap the watcher checks: a tenant's in the tenant scenario, else the global one.
    fn watched_limit(&self) -> u64 {
        if self.tenants { TENANT_CAP } else { self.limit }
    }
}

/// Slots the bench's clients hold right now, as they see them: raised only after Redis said yes and
/// lowered before the release is sent, so it never counts more than Redis holds. Above the limit it
/// proves an over-admission.
struct Held {
    now: AtomicU64,
    max: AtomicU64,
}

impl Held {
    fn new(resident: u64) -> Self {
        Self {
            now: AtomicU64::new(resident),
            max: AtomicU64::new(resident),
        }
    }

    fn take(&self) {
        let now = self.now.fetch_add(1, Ordering::SeqCst) + 1;
        self.max.fetch_max(now, Ordering::SeqCst);
    }

    fn give_back(&self) {
        self.now.fetch_sub(1, Ordering::SeqCst);
    }
}

#[derive(Default)]
struct ClientReport {
    attempts: u64,
    admitted: u64,
    retries: u64,
    latencies_us: Vec<u32>,
    /// Highest live count Redis itself returned on an admission (`active` / the INCR result).
    max_reported: u64,
}

struct Outcome {
    scenario: Scenario,
    elapsed: Duration,
    attempts: u64,
    admitted: u64,
    retries: u64,
    latencies_us: Vec<u32>,
    max_held: u64,
    max_reported: u64,
    watched: Watched,
    /// Client-sent commands by name, from `INFO commandstats`.
    sent: BTreeMap<String, u64>,
    /// Commands Redis ran inside the scripts, by name.
    in_scripts: BTreeMap<String, u64>,
    end_count: i64,
    end_slots: Option<u64>,
}

impl Outcome {
    fn over_admitted(&self) -> bool {
        self.max_held > self.scenario.limit
            || self.max_reported > self.scenario.limit
            || self.watched.max > self.scenario.watched_limit()
    }

    fn end_clean(&self) -> bool {
        self.end_count == 0 && self.end_slots.unwrap_or(0) == 0
    }

    fn per_attempt(&self, n: u64) -> f64 {
        n as f64 / self.attempts.max(1) as f64
    }

    fn to_json(&self) -> serde_json::Value {
        let s = self.scenario;
        let sent: u64 = self.sent.values().sum();
        serde_json::json!({
            "scenario": s.name(),
            "path": s.path.as_str(),
            "clients": s.clients,
            "limit": s.limit,
            "resident": s.resident,
            "tenant_cap": s.tenants.then_some(TENANT_CAP),
            "seconds": self.elapsed.as_secs_f64(),
            "attempts": self.attempts,
            "admitted": self.admitted,
            "retries": self.retries,
            "ops_per_second": self.attempts as f64 / self.elapsed.as_secs_f64(),
            "latency_us": {
                "p50": self.percentile(0.50),
                "p99": self.percentile(0.99),
                "max": self.latencies_us.last().copied().unwrap_or(0),
            },
            "commands_sent": self.sent,
            "commands_in_scripts": self.in_scripts,
            "commands_per_attempt": self.per_attempt(sent),
            "commands_per_admitted_call": sent as f64 / self.admitted.max(1) as f64,
            "max_held": self.max_held,
            "max_count_from_redis": self.max_reported,
            "watcher": {
                "samples": self.watched.samples,
                "max_live": self.watched.max,
                "samples_at_limit": self.watched.at_limit,
            },
            "end_active_count": self.end_count,
            "end_slots": self.end_slots,
            "over_admitted": self.over_admitted(),
            "end_clean": self.end_clean(),
        })
    }

    fn percentile(&self, q: f64) -> u32 {
        // Nearest rank on the merged, sorted samples.
        let n = self.latencies_us.len();
        if n == 0 {
            return 0;
        }
        let rank = ((q * n as f64).ceil() as usize).clamp(1, n);
        self.latencies_us[rank - 1]
    }
}

fn micros(elapsed: Duration) -> u32 {
    u32::try_from(elapsed.as_micros()).unwrap_or(u32::MAX)
}

/// A fresh Twilio-shaped SID per attempt: `CA` + 32 hex digits, unique per client and sequence.
fn sid(client: usize, seq: u64) -> Result<CallSid> {
    CallSid::parse(&format!("CA{client:08x}{seq:024x}")).context("building a benchmark call SID")
}

fn store_config(scenario: Scenario) -> StoreConfig {
    StoreConfig {
        limit: scenario.limit,
        default_tenant_limit: scenario.tenants.then_some(TENANT_CAP),
        // Every scenario starts from FLUSHALL; production's recovery hold-off would refuse the
        // first seconds of each run as "recovering".
        recovery_holdoff: Duration::ZERO,
        op_timeout: OP_TIMEOUT,
        ..StoreConfig::default()
    }
}

/// One call as production runs it against the store: the webhook's admission with the reserved
/// state written in the same script, then (if admitted) the stream's start (lock, slot, active
/// state) and its end (final state, slot freed, lock released). Latency is the admission's.
async fn lua_client(
    store: RedisStore,
    client: usize,
    tenants: bool,
    held: Arc<Held>,
    stop: Arc<AtomicBool>,
) -> Result<ClientReport> {
    let mut report = ClientReport::default();
    let mut seq = 0;
    while !stop.load(Ordering::Relaxed) {
        seq += 1;
        let call = sid(client, seq)?;
        let mut state = CallState::reserved(call.as_str(), REPLICA);
        state.account_sid = Some("ACbench".to_owned());
        state.from = Some("+15005550006".to_owned());
        state.to = Some("+15005550001".to_owned());
        // Calls spread over the tenants the way calls to many businesses' numbers would.
        state.tenant =
            tenants.then(|| format!("AC{:032x}", (client * 31 + seq as usize) % TENANTS));
        let started = Instant::now();
        let admission = store
            .admit(&call, AdmitPolicy::MayTakeSlot, LEASE, Some(&state))
            .await
            .with_context(|| format!("client {client}: admit {call}"))?;
        report.latencies_us.push(micros(started.elapsed()));
        report.attempts += 1;
        match admission {
            Admission::Admitted { new: true, active } => {
                held.take();
                report.admitted += 1;
                report.max_reported = report.max_reported.max(active);
                stream(&store, &call, client, seq, &held).await?;
            }
            Admission::Refused(Refusal::AtLimit { active }) => {
                report.max_reported = report.max_reported.max(active);
            }
            Admission::Refused(Refusal::TenantAtLimit { .. }) if tenants => {}
            other => bail!("client {client}: unexpected {other:?} for the fresh SID {call}"),
        }
    }
    Ok(report)
}

/// The admitted call's stream: its start activates the reservation (no second slot), its end
/// frees the slot and the lock. `held` is lowered before the end is sent: once Redis frees the
/// slot another client may take it, and the bench's own count must never run ahead of Redis'.
async fn stream(
    store: &RedisStore,
    call: &CallSid,
    client: usize,
    seq: u64,
    held: &Held,
) -> Result<()> {
    let token = format!("{REPLICA}:{client}:{seq}");
    let mut fresh = CallState::reserved(call.as_str(), REPLICA);
    fresh.status = CallStatus::Active;
    fresh.stream_sid = Some(format!("MZ{client:08x}{seq:024x}"));
    fresh.started_at = Some(calls_core::state::now_rfc3339());
    let started = store
        .start_stream(
            call,
            &token,
            AdmitPolicy::MayTakeSlot,
            LEASE,
            &fresh,
            None.into(),
        )
        .await
        .with_context(|| format!("client {client}: stream start {call}"))?;
    let mut state = match started {
        StreamAdmission::Started {
            new_slot: false,
            state,
            ..
        } => *state,
        other => {
            bail!("client {client}: {call}'s reservation did not become its stream: {other:?}")
        }
    };
    state.frames_in = 500;
    state.end(EndReason::Stop);
    held.give_back();
    match store
        .end_stream(call, &token, &state)
        .await
        .with_context(|| format!("client {client}: stream end {call}"))?
    {
        StreamEnd::Ended { freed: true } => Ok(()),
        other => {
            bail!("client {client}: {call} was streaming but its end freed no slot: {other:?}")
        }
    }
}

/// The original design's check-and-increment. WATCH state belongs to the connection, so each
/// client owns one and never has two operations in flight on it.
async fn watch_admit(
    conn: &mut MultiplexedConnection,
    limit: u64,
    report: &mut ClientReport,
) -> redis::RedisResult<Option<u64>> {
    loop {
        redis::cmd("WATCH")
            .arg(keys::ACTIVE_COUNT)
            .query_async::<()>(conn)
            .await?;
        let count: Option<u64> = conn.get(keys::ACTIVE_COUNT).await?;
        if count.unwrap_or(0) >= limit {
            // Without UNWATCH a later write to the key would fail this client's next EXEC.
            redis::cmd("UNWATCH").query_async::<()>(conn).await?;
            return Ok(None);
        }
        // MULTI, INCR and EXEC go out in one write; EXEC answers nil when the key changed since
        // WATCH, and the whole check starts over.
        let exec: Option<(u64,)> = redis::pipe()
            .atomic()
            .incr(keys::ACTIVE_COUNT, 1)
            .query_async(conn)
            .await?;
        match exec {
            Some((count,)) => return Ok(Some(count)),
            None => report.retries += 1,
        }
    }
}

async fn watch_client(
    mut conn: MultiplexedConnection,
    client: usize,
    limit: u64,
    held: Arc<Held>,
    stop: Arc<AtomicBool>,
) -> Result<ClientReport> {
    let mut report = ClientReport::default();
    while !stop.load(Ordering::Relaxed) {
        let started = Instant::now();
        let admitted = watch_admit(&mut conn, limit, &mut report)
            .await
            .with_context(|| format!("client {client}: WATCH/MULTI admit"))?;
        report.latencies_us.push(micros(started.elapsed()));
        report.attempts += 1;
        if let Some(count) = admitted {
            held.take();
            report.admitted += 1;
            report.max_reported = report.max_reported.max(count);
            held.give_back();
            conn.decr::<_, _, i64>(keys::ACTIVE_COUNT, 1)
                .await
                .with_context(|| format!("client {client}: DECR release"))?;
        }
    }
    Ok(report)
}

/// What the watcher saw: the live count Redis holds, sampled about every millisecond from its own
/// connection while the clients run. It sees concurrent holds (a stream holds its slot between
/// start and end) and owes nothing to the admission script's own arithmetic.
#[derive(Debug, Default, Clone, Copy)]
struct Watched {
    samples: u64,
    max: u64,
    /// Samples that found every slot taken: the watcher can see the limit reached, so a max at
    /// the limit and never above is an observation, not a blind spot.
    at_limit: u64,
}

/// Samples `ZCARD calls:slots` (Lua) or `GET calls:active_count` (WATCH/MULTI) until `stop`; in
/// the tenant scenario, every tenant's set in one pipeline, keeping the fullest.
async fn watch(
    mut conn: MultiplexedConnection,
    scenario: Scenario,
    stop: Arc<AtomicBool>,
) -> Result<Watched> {
    let limit = scenario.watched_limit();
    let tenant_sets: Vec<String> = (0..TENANTS)
        .map(|n| keys::tenant_slots(&format!("AC{n:032x}")))
        .collect();
    let mut watched = Watched::default();
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    while !stop.load(Ordering::Relaxed) {
        tick.tick().await;
        let live: u64 = match scenario.path {
            Path::Lua if scenario.tenants => {
                let mut pipe = redis::pipe();
                for key in &tenant_sets {
                    pipe.zcard(key);
                }
                let counts: Vec<u64> = pipe
                    .query_async(&mut conn)
                    .await
                    .context("watcher ZCARD of the tenant sets")?;
                counts.into_iter().max().unwrap_or(0)
            }
            Path::Lua => conn.zcard(keys::SLOTS).await.context("watcher ZCARD")?,
            Path::WatchMulti => {
                let count: Option<i64> =
                    conn.get(keys::ACTIVE_COUNT).await.context("watcher GET")?;
                u64::try_from(count.unwrap_or(0)).unwrap_or(0)
            }
        };
        watched.samples += 1;
        watched.max = watched.max.max(live);
        if live >= limit {
            watched.at_limit += 1;
        }
    }
    Ok(watched)
}

/// The watcher's own command, taken out of `INFO commandstats` before the per-call figures.
fn watcher_command(path: Path) -> &'static str {
    match path {
        Path::Lua => "zcard",
        Path::WatchMulti => "get",
    }
}

async fn connect(client: &redis::Client) -> Result<MultiplexedConnection> {
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(OP_TIMEOUT))
        .set_response_timeout(Some(OP_TIMEOUT));
    client
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .context("connecting to the benchmark redis-server")
}

fn script_commands() -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for source in LUA_SOURCES {
        for call in source.split("redis.call(").skip(1) {
            if let Some(name) = call
                .trim_start_matches(['\'', '"'])
                .split(['\'', '"'])
                .next()
            {
                names.insert(name.to_ascii_lowercase());
            }
        }
    }
    names
}

/// `INFO commandstats` as name → calls, without the bench's own INFO/CONFIG calls.
async fn command_stats(admin: &mut MultiplexedConnection) -> Result<BTreeMap<String, u64>> {
    Ok(support::command_stats(admin)
        .await?
        .into_iter()
        .filter(|(name, _)| name != "info" && !name.starts_with("config"))
        .map(|(name, (calls, _))| (name, calls))
        .collect())
}

/// Fills `scenario.resident` slots the way each path would: real admitted calls for the Lua path,
/// the counter alone for WATCH/MULTI. Returns the Lua store holding them, to release them later.
async fn take_resident_slots(
    url: &str,
    admin: &mut MultiplexedConnection,
    scenario: Scenario,
) -> Result<Option<(RedisStore, Vec<CallSid>)>> {
    if scenario.resident == 0 {
        return Ok(None);
    }
    match scenario.path {
        Path::Lua => {
            let store = RedisStore::connect(url, store_config(scenario))
                .await
                .context("connecting the resident-calls store")?;
            let mut calls = Vec::new();
            for n in 0..scenario.resident {
                let call = CallSid::parse(&format!("CAresident{n}")).context("resident SID")?;
                let admission = store
                    .admit(&call, AdmitPolicy::MayTakeSlot, LEASE, None)
                    .await
                    .context("admitting a resident call")?;
                if !admission.is_admitted() {
                    bail!("resident call {call} was refused: {admission:?}");
                }
                calls.push(call);
            }
            Ok(Some((store, calls)))
        }
        Path::WatchMulti => {
            admin
                .set::<_, _, ()>(keys::ACTIVE_COUNT, scenario.resident)
                .await
                .context("SET calls:active_count for the resident calls")?;
            Ok(None)
        }
    }
}

async fn release_resident_slots(
    admin: &mut MultiplexedConnection,
    residents: Option<(RedisStore, Vec<CallSid>)>,
    scenario: Scenario,
) -> Result<()> {
    if let Some((store, calls)) = residents {
        for call in calls {
            store
                .release(&call, EndReason::Stop)
                .await
                .with_context(|| format!("releasing the resident call {call}"))?;
        }
    } else if scenario.path == Path::WatchMulti && scenario.resident > 0 {
        admin
            .decr::<_, _, i64>(keys::ACTIVE_COUNT, scenario.resident)
            .await
            .context("DECRBY calls:active_count for the resident calls")?;
    }
    Ok(())
}

async fn run_scenario(
    url: &str,
    admin: &mut MultiplexedConnection,
    scenario: Scenario,
    secs: Duration,
) -> Result<Outcome> {
    redis::cmd("FLUSHALL")
        .query_async::<()>(admin)
        .await
        .context("FLUSHALL before a scenario")?;
    let held = Arc::new(Held::new(scenario.resident));
    let stop = Arc::new(AtomicBool::new(false));
    let client = redis::Client::open(url).context("benchmark redis URL")?;

    // Connections are made and warmed before the stats reset, so neither connecting nor the one-off
    // SCRIPT LOAD after the first NOSCRIPT is measured.
    let mut lua_stores = Vec::new();
    let mut watch_conns = Vec::new();
    for n in 0..scenario.clients {
        match scenario.path {
            Path::Lua => {
                let store = RedisStore::connect(url, store_config(scenario))
                    .await
                    .context("connecting a RedisStore")?;
                let warm = CallSid::parse(&format!("CAwarm{n}")).context("warm-up SID")?;
                store
                    .admit(&warm, AdmitPolicy::MayTakeSlot, LEASE, None)
                    .await
                    .context("warm-up admit")?;
                store
                    .release(&warm, EndReason::Stop)
                    .await
                    .context("warm-up release")?;
                lua_stores.push(store);
            }
            Path::WatchMulti => watch_conns.push(connect(&client).await?),
        }
    }
    let residents = take_resident_slots(url, admin, scenario).await?;
    redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .query_async::<()>(admin)
        .await
        .context("CONFIG RESETSTAT")?;

    let watcher = tokio::spawn(watch(connect(&client).await?, scenario, stop.clone()));
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for (n, store) in lua_stores.into_iter().enumerate() {
        tasks.spawn(lua_client(
            store,
            n,
            scenario.tenants,
            held.clone(),
            stop.clone(),
        ));
    }
    for (n, conn) in watch_conns.into_iter().enumerate() {
        tasks.spawn(watch_client(
            conn,
            n,
            scenario.limit,
            held.clone(),
            stop.clone(),
        ));
    }
    tokio::time::sleep(secs).await;
    stop.store(true, Ordering::Relaxed);

    let mut reports = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        reports.push(joined.context("a benchmark client panicked")??);
    }
    let elapsed = started.elapsed();
    let watched = watcher.await.context("the watcher panicked")??;

    let mut stats = command_stats(admin).await?;
    let per_sample = if scenario.tenants { TENANTS as u64 } else { 1 };
    if let Some(calls) = stats.get_mut(watcher_command(scenario.path)) {
        *calls = calls.saturating_sub(watched.samples * per_sample);
    }
    stats.retain(|_, calls| *calls > 0);
    release_resident_slots(admin, residents, scenario).await?;
    let end_count: Option<i64> = admin
        .get(keys::ACTIVE_COUNT)
        .await
        .context("GET calls:active_count")?;
    let end_slots = match scenario.path {
        Path::Lua => Some(
            admin
                .zcard(keys::SLOTS)
                .await
                .context("ZCARD calls:slots")?,
        ),
        Path::WatchMulti => None,
    };

    // Every state write goes through a script (admit, stream start, stream end), so every command
    // a script can run was run by a script.
    let scripted = match scenario.path {
        Path::Lua => script_commands(),
        Path::WatchMulti => BTreeSet::new(),
    };
    let (in_scripts, sent) = stats
        .into_iter()
        .partition(|(name, _)| scripted.contains(name));

    let mut latencies_us = Vec::new();
    for report in &reports {
        latencies_us.extend_from_slice(&report.latencies_us);
    }
    latencies_us.sort_unstable();
    Ok(Outcome {
        scenario,
        elapsed,
        attempts: reports.iter().map(|r| r.attempts).sum(),
        admitted: reports.iter().map(|r| r.admitted).sum(),
        retries: reports.iter().map(|r| r.retries).sum(),
        latencies_us,
        max_held: held.max.load(Ordering::SeqCst),
        max_reported: reports.iter().map(|r| r.max_reported).max().unwrap_or(0),
        watched,
        sent,
        in_scripts,
        end_count: end_count.unwrap_or(0),
        end_slots,
    })
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|line| line.starts_with("model name"))
                .and_then(|line| line.split_once(':'))
                .map(|(_, model)| model.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".to_owned())
}

/// Other work on the machine shows up in every figure here, so the output says how busy it was.
fn per_attempt_list(outcome: &Outcome, counts: &BTreeMap<String, u64>) -> String {
    counts
        .iter()
        .map(|(name, calls)| format!("{} {:.2}", name.to_uppercase(), outcome.per_attempt(*calls)))
        .collect::<Vec<_>>()
        .join(", ")
}

fn render(outcomes: &[Outcome], header: &str) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{header}");
    let _ = writeln!(
        out,
        "| scenario | path | clients | ops/s | admitted | p50 µs | p99 µs | max µs | Redis cmds/attempt | Redis cmds/admitted call | retries/admission | max held/limit | max count from Redis | watcher: max live/limit (samples at limit / samples) |"
    );
    let _ = writeln!(
        out,
        "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|"
    );
    for o in outcomes {
        let s = o.scenario;
        let sent: u64 = o.sent.values().sum();
        let _ = writeln!(
            out,
            "| {} | {} | {} | {:.0} | {:.2} % | {} | {} | {} | {:.2} | {:.2} | {:.2} | {}/{} | {} | {}/{} ({} / {}) |",
            s.name(),
            s.path.as_str(),
            s.clients,
            o.attempts as f64 / o.elapsed.as_secs_f64(),
            100.0 * o.per_attempt(o.admitted),
            o.percentile(0.50),
            o.percentile(0.99),
            o.latencies_us.last().copied().unwrap_or(0),
            o.per_attempt(sent),
            sent as f64 / o.admitted.max(1) as f64,
            o.per_attempt(o.retries),
            o.max_held,
            s.limit,
            o.max_reported,
            o.watched.max,
            s.watched_limit(),
            o.watched.at_limit,
            o.watched.samples,
        );
    }
    let _ = writeln!(
        out,
        "\nCommands per admission attempt from `INFO commandstats` (an admitted call's stream start and end \
         included; the watcher's samples taken out; commands Redis ran inside the scripts in brackets, not counted above):\n"
    );
    for o in outcomes {
        let s = o.scenario;
        let inside = if o.in_scripts.is_empty() {
            String::new()
        } else {
            format!(" [{}]", per_attempt_list(o, &o.in_scripts))
        };
        let _ = writeln!(
            out,
            "- {} / {} / {}: {}{}",
            s.name(),
            s.path.as_str(),
            s.clients,
            per_attempt_list(o, &o.sent),
            inside
        );
    }
    let _ = writeln!(out, "\nOver-admission check:\n");
    for o in outcomes {
        let s = o.scenario;
        let slots = o
            .end_slots
            .map(|n| format!(", ZCARD calls:slots {n}"))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "- {} / {} / {}: watcher saw at most {} live (limit {}; {} of {} samples at the limit); max held {} and \
             max count returned by Redis {} over {} admitted; at the end GET calls:active_count {}{} — {}",
            s.name(),
            s.path.as_str(),
            s.clients,
            o.watched.max,
            s.watched_limit(),
            o.watched.at_limit,
            o.watched.samples,
            o.max_held,
            o.max_reported,
            o.admitted,
            o.end_count,
            slots,
            if o.over_admitted() {
                "OVER-ADMITTED"
            } else if !o.end_clean() {
                "LEAKED SLOTS"
            } else {
                "ok"
            }
        );
    }
    out
}

async fn run(server: &RedisServer, args: &Args, command: &str) -> Result<bool> {
    let secs = Duration::from_secs(if args.quick { 1 } else { args.secs.max(1) });
    let url = server.url();
    let client = redis::Client::open(url.as_str()).context("benchmark redis URL")?;
    let mut admin = connect(&client).await?;
    let info: String = redis::cmd("INFO")
        .arg("server")
        .query_async(&mut admin)
        .await
        .context("INFO server")?;
    let version = info
        .lines()
        .find_map(|line| line.strip_prefix("redis_version:"))
        .unwrap_or("unknown")
        .trim()
        .to_owned();
    let transport = if args.unix {
        "a unix socket"
    } else {
        "loopback TCP"
    };
    let cpus = std::thread::available_parallelism().map_or(0, std::num::NonZero::get);

    let load_before = load_average();
    let mut outcomes = Vec::new();
    for scenario in Scenario::all() {
        eprintln!(
            "running {} / {} / {} clients / limit {} for {:?}",
            scenario.name(),
            scenario.path.as_str(),
            scenario.clients,
            scenario.limit,
            secs
        );
        outcomes.push(run_scenario(&url, &mut admin, scenario, secs).await?);
    }

    let header = format!(
        "Command: `{command}`\n\n\
         Machine: {cpus} CPUs (nproc), {}; redis-server {version} on {transport} ({url}), started by the \
         bench on the same machine; client runtime: tokio with {cpus} worker threads. {} s per scenario; \
         1-minute load average {load_before} before the run, {} after.\n",
        cpu_model(),
        secs.as_secs(),
        load_average(),
    );
    println!("{}", render(&outcomes, &header));
    if let Some(path) = &args.json {
        let json = serde_json::json!({
            "command": command,
            "cpus": cpus,
            "cpu": cpu_model(),
            "redis_version": version,
            "transport": transport,
            "seconds_per_scenario": secs.as_secs(),
            "load_average_before": load_before,
            "load_average_after": load_average(),
            "scenarios": outcomes.iter().map(Outcome::to_json).collect::<Vec<_>>(),
        });
        std::fs::write(path, serde_json::to_string_pretty(&json)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    let bad: Vec<_> = outcomes
        .iter()
        .filter(|o| o.over_admitted() || !o.end_clean())
        .collect();
    for o in &bad {
        eprintln!(
            "FAILED: {} / {} / {} clients: max held {}, max reported {}, limit {}, end count {}, end slots {:?}",
            o.scenario.name(),
            o.scenario.path.as_str(),
            o.scenario.clients,
            o.max_held,
            o.max_reported,
            o.scenario.limit,
            o.end_count,
            o.end_slots
        );
    }
    Ok(bad.is_empty())
}

/// Ctrl-C or a plain `kill`: either ends the run through main, which then kills the redis-server.
async fn interrupted() -> &'static str {
    let Ok(mut term) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
    else {
        let _ = tokio::signal::ctrl_c().await;
        return "SIGINT";
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => "SIGINT",
        _ = term.recv() => "SIGTERM",
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    let command = support::command_line("admission");

    // The server lives in main's frame: a panic unwinds through here and Ctrl-C ends the run below,
    // so either way its Drop kills the redis-server.
    let server = match if args.unix {
        RedisServer::start()
    } else {
        RedisServer::start_tcp()
    } {
        Ok(server) => server,
        Err(e) => {
            eprintln!("admission bench: {e}");
            return ExitCode::FAILURE;
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("admission bench: cannot build the tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        tokio::select! {
            result = run(&server, &args, &command) => result,
            signal = interrupted() => Err(anyhow::anyhow!("interrupted by {signal}")),
        }
    });
    runtime.shutdown_timeout(Duration::from_secs(1));
    drop(server);
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("admission bench: the limit was exceeded or slots leaked (see above)");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("admission bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}
