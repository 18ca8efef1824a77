//! The Redis backend: the key space of docs/reference.md#admission driven by Lua scripts, loaded at
//! start-up and after every reconnect and called by SHA; every call is bounded by `op_timeout`.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use redis::{AsyncCommands, Cmd, ErrorKind, FromRedisValue, Script, ServerErrorKind};
use tracing::{debug, warn};

use super::admit_batch::{AdmitBatcher, AdmitRequest, AdmitScript};
use super::connect::{self, StoreConnection};
use super::recovery::{Began, RecoveryWatch};
use super::redis_clock::RedisClock;
use super::settings::{RedisSettings, RedisTls};
use super::{
    Admission, AdmitPolicy, Backend, CallStore, ClusterStats, LapsedReservation, Refusal,
    RenewBatch, RenewReport, Renewal, ReplicaHeartbeat, ResumeGrant, Shed, StoreConfig, StoreError,
    StreamAdmission, StreamClaim, StreamEnd, TenantsUsage, hands_over, next_grant, tenants_usage,
};
use crate::call_sid::CallSid;
use crate::keys;
use crate::state::{CallState, CallStatus, EndReason};
use crate::wait::{OverflowReason, WaitOp, WaitOutcome, WaitReason, WaitReport, WaitSettings};

mod outbound;

const PRELUDE: &str = include_str!("../lua/prelude.lua");

/// What `stream_start.lua` answers when the stream took the call over with its grant
/// (docs/reference.md#after-stream).
const TOOK_OVER: i64 = 4;
/// `stream_start.lua`'s code for a start not bound to its call that claimed a call holding a slot,
/// or a continuation (docs/reference.md#stream-token).
const UNBOUND: i64 = 6;

/// Live calls renewed by one script. Redis runs a script alone, so a replica's whole tick in one
/// script would hold every other replica's admissions for as long as it runs; a chunk of this size
/// keeps each stall short (docs/benchmarks.md, renewal), and the tick costs one round trip per
/// chunk.
const RENEW_CHUNK: usize = 100;

/// How much earlier than its caller stops waiting an admission's script refuses it: the time its
/// answer may take to come back (docs/reference.md#admission-deadline), at most a quarter of the
/// store's operation bound. An answer slower still finds its caller gone and its slot is given back.
const ANSWER_MARGIN: Duration = Duration::from_millis(500);

/// How many times a continuation grant is decided again when the state changed under it.
const GRANT_ATTEMPTS: usize = 5;

/// Fields of the stored state that a stream's start keeps (docs/reference.md#admission: the state
/// says who called and when, and the tenant its slot was taken for; docs/reference.md#after-stream:
/// a continued call, how many of its continuations were planned hand-overs); `account_sid` too,
/// unless the stream's `start` names one.
const CARRIED_FROM_WEBHOOK: [&str; 7] = [
    "created_at",
    "from",
    "to",
    "tenant",
    "handovers",
    "stream_token",
    "direction",
];

/// The scripts, hashed once at start-up and loaded on every fresh connection, so the hot path
/// never meets NOSCRIPT. `Script::invoke_async` still loads and retries on NOSCRIPT, for a
/// `SCRIPT FLUSH` behind the replica's back.
struct Scripts {
    admit: Script,
    stream_start: Script,
    stream_end: Script,
    release: Script,
    renew: Script,
    grant: Script,
    wait: Script,
    /// docs/reference.md#outbound: the dial step, the record updates, the enqueue.
    outbound: outbound::OutboundScripts,
    sources: Vec<String>,
}

impl Scripts {
    fn new() -> Self {
        let bodies = [
            include_str!("../lua/admit.lua"),
            include_str!("../lua/stream_start.lua"),
            include_str!("../lua/stream_end.lua"),
            include_str!("../lua/release.lua"),
            include_str!("../lua/renew.lua"),
            include_str!("../lua/grant.lua"),
            include_str!("../lua/wait.lua"),
        ];
        let header = keys::lua_key_header();
        let mut sources: Vec<String> = bodies
            .iter()
            .map(|body| format!("{header}\n{PRELUDE}\n{body}"))
            .collect();
        let outbound = outbound::OutboundScripts::new(&header);
        let script = |i: usize| Script::new(&sources[i]);
        Self {
            admit: script(0),
            stream_start: script(1),
            stream_end: script(2),
            release: script(3),
            renew: script(4),
            grant: script(5),
            wait: script(6),
            sources: {
                sources.extend(outbound.sources.iter().cloned());
                sources
            },
            outbound,
        }
    }
}

pub struct RedisStore {
    core: Arc<StoreCore>,
    /// Concurrent webhook admissions, sent to Redis together (see `admit_batch`). Its driver
    /// holds the core and ends when this store (the only sender) is dropped.
    admits: AdmitBatcher,
}

/// Everything a store operation needs, shared with the admission driver's task.
struct StoreCore {
    conn: StoreConnection,
    /// The server's address without credentials, named in every error.
    addr: String,
    config: StoreConfig,
    scripts: Scripts,
    watch: RecoveryWatch,
    /// The connection generation (plus one) the scripts were loaded on and `run_id` read from; 0:
    /// none. A new generation (the link switched to another primary, or was replaced) or any error
    /// that may mean a new connection (the manager reconnects after one) makes the next operation
    /// load them and read `run_id` first: a failover is noticed as a restart is.
    prepared_for: AtomicU64,
    preparing: tokio::sync::Mutex<()>,
    /// Preparations tried so far: an operation that waited for another's attempt, which failed,
    /// fails with it instead of queueing an attempt of its own (a burst during an outage must
    /// not wait for hundreds of timeouts in a row).
    prepare_attempts: AtomicU64,
    /// Reservations whose stream never came, found by any script's reclaim since the last renewal.
    lapsed: Mutex<Vec<LapsedReservation>>,
    /// The tenant caps as the last renewal read them: configuration this replica writes back
    /// (never over a newer value) when it finds Redis lost its data (docs/reference.md#tenants).
    known_limits: Mutex<BTreeMap<String, u64>>,
    /// Set when a script found Redis lost its data; the next renewal writes the caps back first.
    limits_lost: AtomicBool,
    /// Redis' clock against this replica's, for the admissions' deadlines.
    clock: RedisClock,
    /// Lapsed slots an admission reclaimed whose states it could not end (the admission stood);
    /// the next renewal ends them.
    unended: Mutex<Vec<String>>,
}

impl RedisStore {
    /// Connects to `url` (no TLS files) and waits for the first connection: for tools and tests
    /// that need Redis now.
    ///
    /// # Errors
    ///
    /// A URL the client cannot use, or a Redis that does not answer.
    pub async fn connect(url: &str, config: StoreConfig) -> Result<Self, StoreError> {
        let store = Self::connect_lazy(&RedisSettings::new(url, RedisTls::default())?, config)?;
        store.ping().await?;
        Ok(store)
    }

    /// Returns at once; the connection is made (and remade) on demand, so a replica can start,
    /// report not-ready, and become ready when Redis appears.
    ///
    /// # Errors
    ///
    /// A `REDIS_TLS_*` file that cannot be read or used.
    pub fn connect_lazy(settings: &RedisSettings, config: StoreConfig) -> Result<Self, StoreError> {
        let addr = settings.address();
        let conn = connect::connect_lazy(settings, config.op_timeout)?;
        let admits = AdmitBatcher::new(config.admission_deadline, config.admission_queue);
        Ok(Self {
            core: Arc::new(StoreCore {
                conn,
                addr,
                watch: RecoveryWatch::new(config.call_lease),
                config,
                scripts: Scripts::new(),
                prepared_for: AtomicU64::new(0),
                preparing: tokio::sync::Mutex::new(()),
                prepare_attempts: AtomicU64::new(0),
                lapsed: Mutex::new(Vec::new()),
                known_limits: Mutex::new(BTreeMap::new()),
                limits_lost: AtomicBool::new(false),
                clock: RedisClock::new(),
                unended: Mutex::new(Vec::new()),
            }),
            admits,
        })
    }

    /// The SHA1 of every script the store calls, as `SCRIPT EXISTS` takes them.
    pub fn script_hashes() -> Vec<String> {
        let scripts = Scripts::new();
        [
            &scripts.admit,
            &scripts.stream_start,
            &scripts.stream_end,
            &scripts.release,
            &scripts.renew,
            &scripts.grant,
            &scripts.wait,
        ]
        .iter()
        .map(|script| script.get_hash().to_owned())
        .chain(scripts.outbound.hashes().map(str::to_owned))
        .collect()
    }
}

impl StoreCore {
    /// Begins one operation: notes the time since the last contact, and on a fresh connection
    /// loads the scripts and reads Redis' `run_id` first (once, however many operations wait).
    async fn link(&self, op: &'static str) -> Result<(Began, StoreConnection), StoreError> {
        let began = self.watch.begin();
        let prepared =
            |this: &Self| this.prepared_for.load(Ordering::Acquire) == this.conn.generation() + 1;
        if !prepared(self) {
            let attempts = self.prepare_attempts.load(Ordering::Acquire);
            let _one_at_a_time = self.preparing.lock().await;
            if !prepared(self) {
                if self.prepare_attempts.load(Ordering::Acquire) != attempts {
                    return Err(StoreError::NotConnected {
                        op,
                        addr: self.addr.clone(),
                    });
                }
                self.prepare_attempts.fetch_add(1, Ordering::AcqRel);
                // Read before: a switch while preparing leaves the new link unprepared.
                let generation = self.conn.generation();
                self.prepare(op).await?;
                self.prepared_for.store(generation + 1, Ordering::Release);
            }
        }
        Ok((began, self.conn.clone()))
    }

    /// Loads every script (one pipelined round trip) and records Redis' `run_id`.
    async fn prepare(&self, op: &'static str) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        let mut pipe = redis::pipe();
        for source in &self.scripts.sources {
            pipe.cmd("SCRIPT").arg("LOAD").arg(source).ignore();
        }
        self.bounded(op, pipe.query_async::<()>(&mut conn)).await?;
        let mut info = redis::cmd("INFO");
        info.arg("server");
        match self
            .bounded(op, info.query_async::<String>(&mut conn))
            .await
        {
            Ok(info) => match run_id(&info) {
                Some(run_id) => self.watch.saw_run_id(run_id),
                None => debug!("INFO server has no run_id"),
            },
            Err(err) if err.is_unavailable() => return Err(err),
            // A Redis that refuses INFO (renamed by a managed service): restarts are still
            // noticed through the epoch and the cut-off.
            Err(err) => debug!(error = %err, "INFO server refused"),
        }
        // Redis' clock, so the first admission on this link already carries its deadline.
        let sent = tokio::time::Instant::now();
        match self
            .bounded(op, redis::cmd("TIME").query_async::<(i64, i64)>(&mut conn))
            .await
        {
            Ok((secs, micros)) => {
                let received = tokio::time::Instant::now();
                self.clock.saw(secs * 1000 + micros / 1000, sent, received);
            }
            Err(err) if err.is_unavailable() => return Err(err),
            Err(err) => debug!(error = %err, "TIME refused"),
        }
        debug!("scripts loaded on a fresh Redis connection");
        Ok(())
    }

    /// Runs `fut` under `op_timeout`, naming `op` in any error.
    async fn bounded<T>(
        &self,
        op: &'static str,
        fut: impl Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, StoreError> {
        let result = match tokio::time::timeout(self.config.op_timeout, fut).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(source)) => Err(StoreError::Redis {
                op,
                addr: self.addr.clone(),
                source,
            }),
            Err(_) => Err(StoreError::Timeout {
                op,
                addr: self.addr.clone(),
                timeout: self.config.op_timeout,
            }),
        };
        if let Err(err) = &result
            && err.is_unavailable()
        {
            self.prepared_for.store(0, Ordering::Release);
        }
        result
    }

    /// Runs one store operation begun by [`Self::link`], recording a successful contact.
    async fn run<T>(
        &self,
        op: &'static str,
        began: Began,
        fut: impl Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, StoreError> {
        let value = self.bounded(op, fut).await?;
        self.watch.contact_ok(began);
        Ok(value)
    }

    /// `release.lua`: frees the call's slot if held; returns (freed, state_open) as it does.
    async fn release_slot(&self, call_sid: &CallSid) -> Result<(i64, i64), StoreError> {
        let (began, mut conn) = self.link("release").await?;
        let mut invocation = self.scripts.release.prepare_invoke();
        invocation
            .key(keys::SLOTS)
            .key(keys::ACTIVE_COUNT)
            .key(keys::state(call_sid))
            .arg(call_sid.as_str());
        self.run("release", began, invocation.invoke_async(&mut conn))
            .await
    }

    /// Ends, after the fact, the states an admission could not (see `after_admission`).
    fn take_unended(&self) -> Vec<String> {
        std::mem::take(&mut *lock(&self.unended))
    }

    /// Ends the states of calls whose slots lapsed, unless they already ended. Rare (a crashed
    /// replica, an abandoned reservation), so two round trips are fine; the state's TTL is kept.
    async fn end_states(&self, sids: &[String], reason: EndReason) -> Result<(), StoreError> {
        let sids: Vec<CallSid> = sids.iter().filter_map(|s| CallSid::parse(s).ok()).collect();
        if sids.is_empty() {
            return Ok(());
        }
        let state_keys: Vec<String> = sids.iter().map(keys::state).collect();
        let (began, mut conn) = self.link("end_states").await?;
        let blobs: Vec<Option<String>> = self
            .run("end_states", began, conn.mget(&state_keys))
            .await?;
        let mut pipe = redis::pipe();
        let mut writes = 0;
        for (key, blob) in state_keys.iter().zip(blobs) {
            let Some(blob) = blob else { continue };
            // A corrupt blob is left alone: the slot is already free and the blob expires by TTL.
            let Ok(mut state) = serde_json::from_str::<CallState>(&blob) else {
                continue;
            };
            if reason == EndReason::LeaseExpired && state.status == CallStatus::Reserved {
                lock(&self.lapsed).push(LapsedReservation::of(&state));
            }
            if state.end(reason) {
                let json = encode(&state);
                pipe.cmd("SET").arg(key).arg(json).arg("KEEPTTL").ignore();
                writes += 1;
            }
        }
        if writes == 0 {
            return Ok(());
        }
        let (began, mut conn) = self.link("end_states").await?;
        self.run("end_states", began, pipe.query_async::<()>(&mut conn))
            .await
    }

    /// Records what an epoch-aware script reported and ends the states of the slots it reclaimed.
    /// Cannot fail: the script's admissions stand whatever follows (their slots are taken), so a
    /// failure to end the lapsed slots' states is logged as what it is and left to the next
    /// renewal.
    async fn after_admission(
        &self,
        ticket: Option<u64>,
        epoch: &str,
        data_lost: i64,
        reclaimed: &[String],
    ) {
        self.watch.wait_opened(ticket);
        self.watch.saw_epoch(epoch, data_lost == 1, false);
        if data_lost == 1 {
            self.limits_lost.store(true, Ordering::Release);
        }
        if reclaimed.is_empty() {
            return;
        }
        if let Err(err) = self.end_states(reclaimed, EndReason::LeaseExpired).await {
            warn!(
                error = %err,
                lapsed = reclaimed.len(),
                "slots whose leases lapsed were reclaimed, but ending their states failed; the next renewal ends them"
            );
            lock(&self.unended).extend_from_slice(reclaimed);
        }
    }

    /// Writes the caps this replica knew back with `HSETNX` (a cap set since the loss wins), after
    /// Redis lost its data. Rare: one extra round trip.
    async fn restore_limits(&self, known: &BTreeMap<String, u64>) -> Result<(), StoreError> {
        if known.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        for (tenant, limit) in known {
            pipe.hset_nx(keys::TENANT_LIMITS, tenant, *limit).ignore();
        }
        let (began, mut conn) = self.link("restore_limits").await?;
        self.run("restore_limits", began, pipe.query_async::<()>(&mut conn))
            .await?;
        warn!(
            tenants = known.len(),
            "tenant limits written back after Redis lost its data"
        );
        Ok(())
    }

    /// One renewal script over `calls` (at most `RENEW_CHUNK` of the batch). Reports what it found;
    /// lapsed reservations are left for the whole batch to judge.
    async fn renew_chunk(
        &self,
        batch: &RenewBatch,
        heartbeat: &str,
        calls: &[Renewal],
        open_wait: bool,
        heal: bool,
    ) -> Result<RenewReport, StoreError> {
        let (began, mut conn) = self.link("renew").await?;
        let mut invocation = self.scripts.renew.prepare_invoke();
        invocation
            .key(keys::SLOTS)
            .key(keys::ACTIVE_COUNT)
            .key(keys::EPOCH)
            .key(keys::replica(&batch.heartbeat.id))
            .arg(millis(batch.lease))
            .arg(millis(self.config.lock_ttl))
            .arg(self.state_ttl_secs())
            .arg(millis(self.config.recovery_holdoff))
            .arg(heartbeat)
            .arg(millis(batch.heartbeat_ttl))
            .arg(self.watch.seen_epoch())
            .arg(u8::from(open_wait))
            .arg(u8::from(heal));
        for call in calls {
            invocation
                .key(keys::lock(&call.call_sid))
                .key(keys::state(&call.call_sid))
                .arg(call.call_sid.as_str())
                .arg(&call.lock_token)
                .arg(call.state.as_ref().map(encode).unwrap_or_default())
                .arg(call.tenant().unwrap_or_default());
        }
        type Reply = (
            u64,
            Vec<String>,
            Vec<String>,
            Vec<String>,
            String,
            Vec<String>,
            i64,
            BTreeMap<String, u64>,
            u64,
        );
        let (active, readded, lock_lost, reclaimed, epoch, ended, data_lost, limits, healed): Reply =
            self.run("renew", began, invocation.invoke_async(&mut conn))
                .await?;
        if healed > 0 {
            warn!(
                healed,
                "tenants' slot sets had drifted from calls:slots; healed"
            );
        }
        // This very script re-added its calls: no second renewal is needed for the loss (a later
        // chunk re-adds its own whatever it finds).
        self.watch.saw_epoch(&epoch, data_lost == 1, true);
        self.after_renewal_limits(data_lost == 1, limits).await?;
        Ok(RenewReport {
            active,
            readded,
            lock_lost,
            reclaimed,
            ended,
            lapsed_reservations: Vec::new(),
        })
    }

    /// Keeps the tenant caps a renewal read. After a data loss (found by this renewal or by an
    /// earlier script) the caps known before it are written back first, and what Redis holds now
    /// (a cap set since the loss) wins over them.
    async fn after_renewal_limits(
        &self,
        data_lost: bool,
        read: BTreeMap<String, u64>,
    ) -> Result<(), StoreError> {
        if data_lost {
            self.limits_lost.store(true, Ordering::Release);
        }
        if !self.limits_lost.swap(false, Ordering::AcqRel) {
            *self.known_limits() = read;
            return Ok(());
        }
        let known = self.known_limits().clone();
        if let Err(err) = self.restore_limits(&known).await {
            self.limits_lost.store(true, Ordering::Release);
            return Err(err);
        }
        let mut merged = known;
        merged.extend(read);
        *self.known_limits() = merged;
        Ok(())
    }

    fn known_limits(&self) -> MutexGuard<'_, BTreeMap<String, u64>> {
        // Each critical section is one assignment or clone: a poisoned map is still whole.
        lock(&self.known_limits)
    }

    /// The admission scripts' default tenant cap (`''`: none).
    fn default_tenant_limit_arg(&self) -> String {
        self.config
            .default_tenant_limit
            .map(|limit| limit.to_string())
            .unwrap_or_default()
    }

    fn state_ttl_secs(&self) -> u64 {
        self.config.state_ttl.as_secs().max(1)
    }
}

impl AdmitScript for StoreCore {
    /// One admission script for `batch` (admissions in the order given), answering each in order.
    /// The recovery wait and what the script reports about the epoch and reclaimed slots are per
    /// script, so they are handled once for the batch. Each admission carries its deadline on
    /// Redis' clock (docs/reference.md#admission-deadline): the earlier of when its caller stops
    /// waiting and when this replica stops waiting for the reply, less the answer's way back; so a
    /// refused caller's admission is never run after it, and one whose answer came back too late
    /// anyway is seen and given back.
    async fn admit_batch(
        &self,
        batch: &[&AdmitRequest],
    ) -> Result<Vec<Result<Admission, StoreError>>, StoreError> {
        let (began, mut conn) = self.link("admit").await?;
        let ticket = self.watch.wait_ticket();
        let state_keys: Vec<String> = batch.iter().map(|r| keys::state(&r.call_sid)).collect();
        let mut all_keys = vec![
            keys::SLOTS,
            keys::ACTIVE_COUNT,
            keys::STATS_STARTED,
            keys::STATS_REJECTED_MAX_CONCURRENT,
            keys::EPOCH,
        ];
        all_keys.extend(state_keys.iter().map(String::as_str));
        let default_limit = self.default_tenant_limit_arg();
        let mut cmd = evalsha(&self.scripts.admit, &all_keys);
        cmd.arg(self.config.limit)
            .arg(millis(self.config.recovery_holdoff))
            .arg(self.state_ttl_secs())
            .arg(self.watch.seen_epoch())
            .arg(u8::from(ticket.is_some()))
            .arg(&default_limit);
        // The link gives up on a reply after `op_timeout` (and so does `run`): an admission Redis
        // runs later than that, or later than its caller waits, must be refused by the script.
        let sent = tokio::time::Instant::now();
        let given_up = sent + self.config.op_timeout;
        let margin = ANSWER_MARGIN.min(self.config.op_timeout / 4);
        for request in batch {
            cmd.arg(request.call_sid.as_str())
                .arg(request.lease_ms)
                .arg(request.policy)
                .arg(&request.state_json)
                .arg(&request.tenant);
            // Written as a number straight into the command; '' (no deadline) keeps its place.
            match self
                .clock
                .redis_ms(request.answer_by.min(given_up) - margin)
            {
                Some(ms) => cmd.arg(ms),
                None => cmd.arg(""),
            };
        }
        type Reply = (Vec<String>, String, i64, Vec<i64>, i64);
        let reply: Reply = self
            .run("admit", began, invoke(&self.scripts.admit, &cmd, &mut conn))
            .await?;
        let (reclaimed, epoch, data_lost, results, now) = reply;
        self.clock.saw(now, sent, tokio::time::Instant::now());
        self.after_admission(ticket, &epoch, data_lost, &reclaimed)
            .await;
        if results.len() != 2 * batch.len() {
            return Err(StoreError::UnexpectedReply {
                op: "admit",
                detail: format!("{} figures for {} admissions", results.len(), batch.len()),
            });
        }
        Ok(results
            .chunks_exact(2)
            .map(|pair| match pair[0] {
                -4 => Err(StoreError::Shed {
                    cause: Shed::Deadline,
                }),
                code => admission("admit", code, u64::try_from(pair[1]).unwrap_or(0)),
            })
            .collect())
    }

    async fn give_back(&self, call_sids: Vec<CallSid>) {
        for call_sid in call_sids {
            match self.release_slot(&call_sid).await {
                Ok(_) => warn!(
                    %call_sid,
                    "admitted after its webhook was refused for the deadline: slot given back"
                ),
                Err(err) => warn!(
                    %call_sid,
                    error = %err,
                    "admitted after its webhook was refused for the deadline; giving the slot back failed, it lapses with its reservation"
                ),
            }
        }
    }
}

const STATS_KEYS: [&str; 4] = [
    keys::ACTIVE_COUNT,
    keys::STATS_STARTED,
    keys::STATS_REJECTED_MAX_CONCURRENT,
    keys::STATS_REJECTED_TENANT_LIMIT,
];

type StatsReply = (Option<u64>, Option<u64>, Option<u64>, Option<u64>);

fn cluster_stats((active, started, rejected, tenant): StatsReply) -> ClusterStats {
    ClusterStats {
        active: active.unwrap_or(0),
        started: started.unwrap_or(0),
        rejected_max_concurrent: rejected.unwrap_or(0),
        rejected_tenant_limit: tenant.unwrap_or(0),
    }
}

/// `run_id:<40 hex>` from `INFO server`.
fn run_id(info: &str) -> Option<&str> {
    info.lines()
        .find_map(|line| line.strip_prefix("run_id:"))
        .map(str::trim)
        .filter(|id| !id.is_empty())
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn encode(state: &CallState) -> String {
    // Sized for a webhook's state (~700 bytes) at once: `to_string` starts at 128 bytes and grows
    // three times, each a copy.
    let mut json = Vec::with_capacity(1024);
    // A CallState holds only strings, numbers and maps with string keys: serialising cannot fail.
    if serde_json::to_writer(&mut json, state).is_err() {
        return String::new();
    }
    String::from_utf8(json).unwrap_or_default()
}

fn policy_arg(policy: AdmitPolicy) -> &'static str {
    match policy {
        AdmitPolicy::MayTakeSlot => "take",
        AdmitPolicy::ExistingOnly => "existing",
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// The tenant argument of the admission scripts: the call's tenant, `''` for none.
fn tenant_arg(state: &CallState) -> String {
    state.tenant.clone().unwrap_or_default()
}

/// `EVALSHA` of `script` over `keys`, written straight into one command buffer; the caller adds
/// the arguments. For the webhook's admission, the hot path of a burst: a `ScriptInvocation`
/// allocates a buffer for every key and argument before copying them all into the command.
fn evalsha(script: &Script, keys: &[&str]) -> Cmd {
    let mut cmd = redis::cmd("EVALSHA");
    cmd.arg(script.get_hash()).arg(keys.len()).arg(keys);
    cmd
}

/// Runs `cmd`, an [`evalsha`] of `script`. On NOSCRIPT (a `SCRIPT FLUSH` behind the replica's
/// back) loads the script and runs it once more, as `ScriptInvocation::invoke_async` does.
async fn invoke<T: FromRedisValue>(
    script: &Script,
    cmd: &Cmd,
    conn: &mut StoreConnection,
) -> redis::RedisResult<T> {
    match cmd.query_async(conn).await {
        Err(err) if err.kind() == ErrorKind::Server(ServerErrorKind::NoScript) => {
            script.load_async(conn).await?;
            cmd.query_async(conn).await
        }
        other => other,
    }
}

/// The admission codes `admit.lua` and `stream_start.lua` share (`admit_slot` in the prelude).
fn admission(op: &'static str, code: i64, active: u64) -> Result<Admission, StoreError> {
    Ok(match code {
        1 => Admission::Admitted { new: true, active },
        // A slot taken again by a call admitted before: not a new call.
        2 | 5 => Admission::Admitted { new: false, active },
        0 => Admission::Refused(Refusal::AtLimit { active }),
        -1 => Admission::Refused(Refusal::Recovering),
        -2 => Admission::Refused(Refusal::NoSlotHeld),
        -3 => Admission::Refused(Refusal::Ended),
        4 => Admission::Refused(Refusal::TenantAtLimit { active }),
        other => {
            return Err(StoreError::UnexpectedReply {
                op,
                detail: format!("code {other}"),
            });
        }
    })
}

/// The fresh state as the start script takes it: whole, then without the fields a stored state
/// keeps, then (field, JSON of the fresh value) for each of those fields.
fn start_state_args(fresh: &CallState) -> (String, String, Vec<(&'static str, String)>) {
    let whole = encode(fresh);
    let mut carried: Vec<&'static str> = CARRIED_FROM_WEBHOOK.to_vec();
    if fresh.account_sid.is_none() {
        carried.push("account_sid");
    }
    let mut value = serde_json::to_value(fresh).unwrap_or_default();
    let mut defaults = Vec::with_capacity(carried.len());
    if let Some(object) = value.as_object_mut() {
        for field in carried {
            let default = object.remove(field).unwrap_or_default();
            defaults.push((field, default.to_string()));
        }
    }
    (whole, value.to_string(), defaults)
}

#[async_trait]
impl CallStore for RedisStore {
    fn backend(&self) -> Backend {
        Backend::Redis
    }

    async fn admit(
        &self,
        call_sid: &CallSid,
        policy: AdmitPolicy,
        lease: Duration,
        initial_state: Option<&CallState>,
    ) -> Result<Admission, StoreError> {
        let request = AdmitRequest {
            call_sid: call_sid.clone(),
            policy: policy_arg(policy),
            lease_ms: millis(lease),
            state_json: initial_state.map(encode).unwrap_or_default(),
            tenant: initial_state.map(tenant_arg).unwrap_or_default(),
            answer_by: tokio::time::Instant::now(),
        };
        self.admits.admit(&self.core, request).await
    }

    async fn start_stream(
        &self,
        call_sid: &CallSid,
        lock_token: &str,
        policy: AdmitPolicy,
        lease: Duration,
        fresh: &CallState,
        claim: StreamClaim,
    ) -> Result<StreamAdmission, StoreError> {
        let (whole, rest, carried) = start_state_args(fresh);
        let tenant = tenant_arg(fresh);
        let default_limit = self.core.default_tenant_limit_arg();
        let (began, mut conn) = self.core.link("start_stream").await?;
        let ticket = self.core.watch.wait_ticket();
        let mut invocation = self.core.scripts.stream_start.prepare_invoke();
        invocation
            .key(keys::SLOTS)
            .key(keys::ACTIVE_COUNT)
            .key(keys::STATS_STARTED)
            .key(keys::STATS_REJECTED_MAX_CONCURRENT)
            .key(keys::EPOCH)
            .key(keys::state(call_sid))
            .key(keys::lock(call_sid))
            .arg(call_sid.as_str())
            .arg(self.core.config.limit)
            .arg(millis(lease))
            .arg(policy_arg(policy))
            .arg(millis(self.core.config.recovery_holdoff))
            .arg(self.core.watch.seen_epoch())
            .arg(u8::from(ticket.is_some()))
            .arg(lock_token)
            .arg(millis(self.core.config.lock_ttl))
            .arg(self.core.state_ttl_secs())
            .arg(&whole)
            .arg(&rest)
            .arg(&tenant)
            .arg(&default_limit)
            .arg(claim.resumed.map(|n| n.to_string()).unwrap_or_default())
            .arg(u8::from(claim.bound));
        for (field, default) in &carried {
            invocation.arg(*field).arg(default);
        }
        type Reply = (i64, u64, Vec<String>, String, i64, String, String, String);
        let (code, active, reclaimed, epoch, data_lost, owner, written, source): Reply = self
            .core
            .run("start_stream", began, invocation.invoke_async(&mut conn))
            .await?;
        if code == 3 {
            return Ok(StreamAdmission::LockedBy(owner));
        }
        if code == UNBOUND {
            return Ok(StreamAdmission::Unbound);
        }
        let took_over = code == TOOK_OVER;
        // A call taken over may have lost its lapsed slot in this very script: it is live again,
        // so its fresh state must not be ended as `lease_expired`.
        let reclaimed: Vec<String> = reclaimed
            .into_iter()
            .filter(|sid| !took_over || sid != call_sid.as_str())
            .collect();
        self.core
            .after_admission(ticket, &epoch, data_lost, &reclaimed)
            .await;
        let new_slot = if took_over {
            false
        } else {
            match admission("start_stream", code, active)? {
                Admission::Admitted { new, .. } => new,
                Admission::Refused(refusal) => return Ok(StreamAdmission::Refused(refusal)),
            }
        };
        let state = match serde_json::from_str::<Box<CallState>>(&written) {
            Ok(state) => state,
            Err(err) => {
                // The stored fields spliced in did not read back (a hand-edited state): the
                // live call goes on with the fresh state, which its next tick writes.
                warn!(%call_sid, error = %err, "active state written at start does not read back");
                Box::new(fresh.clone())
            }
        };
        Ok(StreamAdmission::Started {
            new_slot,
            active,
            state,
            replaced_corrupt_state: source == "corrupt",
            took_over,
        })
    }

    async fn grant_resume(
        &self,
        call_sid: &CallSid,
        limit: u32,
        stream: Option<u32>,
    ) -> Result<ResumeGrant, StoreError> {
        // Compare-and-set: the grant is decided on the state as read and written only if it is
        // still that state; a stream ending or a tick flushing in between makes us decide again.
        for _ in 0..GRANT_ATTEMPTS {
            let (began, mut conn) = self.core.link("grant_resume").await?;
            let blob: Option<String> = self
                .core
                .run("grant_resume", began, conn.get(keys::state(call_sid)))
                .await?;
            let stored = blob
                .as_deref()
                .and_then(|blob| serde_json::from_str::<CallState>(blob).ok());
            let (granted, resumed) = match next_grant(stored.as_ref(), limit, stream) {
                Ok(next) => next,
                Err(answer) => return Ok(answer),
            };
            let (began, mut conn) = self.core.link("grant_resume").await?;
            let mut invocation = self.core.scripts.grant.prepare_invoke();
            invocation
                .key(keys::state(call_sid))
                .key(keys::SLOTS)
                .arg(blob.unwrap_or_default())
                .arg(encode(&granted))
                .arg(self.core.state_ttl_secs())
                .arg(limit)
                .arg(call_sid.as_str())
                .arg(millis(self.core.config.reservation));
            let written: i64 = self
                .core
                .run("grant_resume", began, invocation.invoke_async(&mut conn))
                .await?;
            match written {
                1 => return Ok(ResumeGrant::Granted { resumed }),
                -1 => return Ok(ResumeGrant::LimitReached),
                _ => {
                    debug!(%call_sid, "state changed while granting a continuation; deciding again");
                }
            }
        }
        Err(StoreError::UnexpectedReply {
            op: "grant_resume",
            detail: format!("state kept changing over {GRANT_ATTEMPTS} attempts"),
        })
    }

    async fn live_replicas(&self, except: &str) -> Result<u64, StoreError> {
        // Heartbeats live three ticks: every key found is a replica that ticked recently.
        // Asked only while draining, and cached by the caller: a SCAN of the key space is fine.
        let (began, mut conn) = self.core.link("live_replicas").await?;
        let pattern = keys::replica("*");
        let found: Vec<String> = self
            .core
            .run("live_replicas", began, async {
                let mut found = Vec::new();
                let mut cursor: u64 = 0;
                loop {
                    let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                        .arg(cursor)
                        .arg("MATCH")
                        .arg(&pattern)
                        .arg("COUNT")
                        .arg(1000)
                        .query_async(&mut conn)
                        .await?;
                    found.extend(keys);
                    if next == 0 {
                        return Ok(found);
                    }
                    cursor = next;
                }
            })
            .await?;
        let others: Vec<String> = found
            .into_iter()
            .filter(|key| *key != keys::replica(except))
            .collect();
        if others.is_empty() {
            return Ok(0);
        }
        let (began, mut conn) = self.core.link("live_replicas").await?;
        let beats: Vec<Option<String>> = self
            .core
            .run("live_replicas", began, conn.mget(&others))
            .await?;
        Ok(beats
            .iter()
            .flatten()
            .filter_map(|beat| serde_json::from_str::<ReplicaHeartbeat>(beat).ok())
            .filter(|beat| !beat.draining)
            .count() as u64)
    }

    async fn end_stream(
        &self,
        call_sid: &CallSid,
        lock_token: &str,
        final_state: &CallState,
    ) -> Result<StreamEnd, StoreError> {
        let (began, mut conn) = self.core.link("end_stream").await?;
        let mut invocation = self.core.scripts.stream_end.prepare_invoke();
        invocation
            .key(keys::SLOTS)
            .key(keys::ACTIVE_COUNT)
            .key(keys::state(call_sid))
            .key(keys::lock(call_sid))
            .arg(call_sid.as_str())
            .arg(lock_token)
            .arg(encode(final_state))
            .arg(self.core.state_ttl_secs())
            .arg(if hands_over(final_state) {
                millis(self.core.config.reservation)
            } else {
                0
            });
        let (freed, owner, held): (i64, String, i64) = self
            .core
            .run("end_stream", began, invocation.invoke_async(&mut conn))
            .await?;
        Ok(if !owner.is_empty() {
            StreamEnd::LockedBy(owner)
        } else if held == 1 {
            StreamEnd::Held
        } else {
            StreamEnd::Ended { freed: freed == 1 }
        })
    }

    async fn release(&self, call_sid: &CallSid, reason: EndReason) -> Result<bool, StoreError> {
        let (freed, state_open) = self.core.release_slot(call_sid).await?;
        if state_open == 1 {
            self.core
                .end_states(&[call_sid.to_string()], reason)
                .await?;
        }
        Ok(freed == 1)
    }

    async fn renew(&self, batch: &RenewBatch) -> Result<RenewReport, StoreError> {
        let heartbeat = serde_json::to_string(&batch.heartbeat).unwrap_or_default();
        let ticket = self.core.watch.wait_ticket();
        let mut report = RenewReport::default();
        let mut chunks: Vec<&[Renewal]> = batch.calls.chunks(RENEW_CHUNK).collect();
        if chunks.is_empty() {
            // No live call: the tick still reclaims, writes the heartbeat and reads the epoch.
            chunks.push(&[]);
        }
        for (i, calls) in chunks.into_iter().enumerate() {
            // The wait after a restart opens with the first chunk; the later ones find it open.
            let open_wait = i == 0 && ticket.is_some();
            // The tenants' sets are healed once per tick, by its first chunk.
            let part = self
                .core
                .renew_chunk(batch, &heartbeat, calls, open_wait, i == 0)
                .await?;
            if i == 0 {
                self.core.watch.wait_opened(ticket);
            }
            report.active = part.active;
            report.readded.extend(part.readded);
            report.lock_lost.extend(part.lock_lost);
            report.reclaimed.extend(part.reclaimed);
            report.ended.extend(part.ended);
        }
        // A call of this batch that one chunk reclaimed and another re-added is live: its state
        // stays as flushed. Only the rest lapsed.
        let mut lapsed: Vec<String> = report
            .reclaimed
            .iter()
            .filter(|sid| !report.readded.contains(sid))
            .cloned()
            .collect();
        let unended = self.core.take_unended();
        lapsed.extend(
            unended
                .iter()
                .filter(|sid| !report.readded.contains(sid))
                .cloned(),
        );
        if let Err(err) = self.core.end_states(&lapsed, EndReason::LeaseExpired).await {
            lock(&self.core.unended).extend(unended);
            return Err(err);
        }
        report.lapsed_reservations = std::mem::take(&mut *lock(&self.core.lapsed));
        Ok(report)
    }

    async fn read_state(&self, call_sid: &CallSid) -> Result<Option<CallState>, StoreError> {
        let (began, mut conn) = self.core.link("read_state").await?;
        let blob: Option<String> = self
            .core
            .run("read_state", began, conn.get(keys::state(call_sid)))
            .await?;
        blob.map(|blob| {
            serde_json::from_str(&blob).map_err(|source| StoreError::CorruptState {
                call_sid: call_sid.to_string(),
                source,
            })
        })
        .transpose()
    }

    async fn write_state(&self, state: &CallState) -> Result<(), StoreError> {
        let call_sid =
            CallSid::parse(&state.call_sid).map_err(|e| StoreError::UnexpectedReply {
                op: "write_state",
                detail: e.to_string(),
            })?;
        let (began, mut conn) = self.core.link("write_state").await?;
        self.core
            .run(
                "write_state",
                began,
                conn.set_ex::<_, _, ()>(
                    keys::state(&call_sid),
                    encode(state),
                    self.core.state_ttl_secs(),
                ),
            )
            .await
    }

    async fn wait(
        &self,
        op: WaitOp<'_>,
        settings: &WaitSettings,
    ) -> Result<WaitReport, StoreError> {
        let (name, visit, call_sid) = match op {
            WaitOp::Visit(visit) => ("visit", Some(visit), Some(visit.call_sid)),
            WaitOp::Leave(call_sid) => ("leave", None, Some(call_sid)),
            WaitOp::Sweep => ("sweep", None, None),
        };
        let state_key = call_sid.map(keys::state).unwrap_or_default();
        let all_keys = [
            keys::SLOTS,
            keys::ACTIVE_COUNT,
            keys::STATS_STARTED,
            keys::STATS_REJECTED_MAX_CONCURRENT,
            keys::EPOCH,
            &state_key,
            keys::WAIT_CALLERS,
            keys::WAIT_ORDER,
            keys::WAIT_INFO,
            keys::WAIT_SERVED,
            keys::WAIT_SEQ,
        ];
        let (began, mut conn) = self.core.link("wait").await?;
        let ticket = self.core.watch.wait_ticket();
        let mut cmd = evalsha(&self.core.scripts.wait, &all_keys);
        cmd.arg(name)
            .arg(call_sid.map(CallSid::as_str).unwrap_or_default())
            .arg(u8::from(visit.is_some_and(|v| v.digit)))
            .arg(self.core.config.limit)
            .arg(visit.map_or(0, |v| millis(v.reservation)))
            .arg(millis(self.core.config.recovery_holdoff))
            .arg(self.core.watch.seen_epoch())
            .arg(u8::from(ticket.is_some()))
            .arg(self.core.state_ttl_secs())
            .arg(visit.and_then(|v| v.tenant).unwrap_or_default())
            .arg(self.core.default_tenant_limit_arg())
            .arg(visit.map(|v| encode(v.reserved)).unwrap_or_default())
            .arg(visit.map(|v| encode(v.waiting)).unwrap_or_default())
            .arg(millis(settings.max_wait))
            .arg(settings.max_callers)
            .arg(millis(settings.turn_kept()))
            .arg(millis(settings.gone_after()))
            .arg(millis(settings.key_ttl()));
        type Reply = (i64, i64, i64, String, Vec<String>, Vec<String>, String, i64);
        let (code, a, b, c, abandoned, reclaimed, epoch, data_lost): Reply = self
            .core
            .run(
                "wait",
                began,
                invoke(&self.core.scripts.wait, &cmd, &mut conn),
            )
            .await?;
        self.core
            .after_admission(ticket, &epoch, data_lost, &reclaimed)
            .await;
        let count = |n: i64| u64::try_from(n).unwrap_or(0);
        let waited = |ms: i64| u64::try_from(ms).ok().map(Duration::from_millis);
        let (outcome, waiting, longest) = match code {
            1 | 2 => (
                WaitOutcome::Admitted {
                    new: code == 1,
                    active: count(a),
                    waited: if code == 1 { waited(b) } else { None },
                },
                0,
                Duration::ZERO,
            ),
            3 => (
                WaitOutcome::Waiting {
                    position: count(a),
                    announce: b == 1,
                    joined: c == "1",
                },
                0,
                Duration::ZERO,
            ),
            5 => {
                let reason = match a {
                    1 => OverflowReason::Timeout,
                    2 => OverflowReason::Digit,
                    _ => OverflowReason::Full,
                };
                (
                    WaitOutcome::Overflow {
                        reason,
                        sent_by: WaitReason::from_code(&c),
                        waited: waited(b),
                    },
                    0,
                    Duration::ZERO,
                )
            }
            6 => (
                WaitOutcome::Left {
                    sent_by: (a == 1).then(|| WaitReason::from_code(&c)),
                },
                0,
                Duration::ZERO,
            ),
            7 => (
                WaitOutcome::Swept,
                count(a),
                Duration::from_millis(count(b)),
            ),
            -3 => (WaitOutcome::Ended, 0, Duration::ZERO),
            other => {
                return Err(StoreError::UnexpectedReply {
                    op: "wait",
                    detail: format!("code {other}"),
                });
            }
        };
        let abandoned: Vec<(String, WaitReason)> = abandoned
            .iter()
            .filter(|entry| entry.len() > 1 && entry.is_char_boundary(1))
            .map(|entry| (entry[1..].to_owned(), WaitReason::from_code(&entry[..1])))
            .collect();
        let gone: Vec<String> = abandoned.iter().map(|(sid, _)| sid.clone()).collect();
        self.core
            .end_states(&gone, EndReason::WaitAbandoned)
            .await?;
        if let Some(call_sid) = call_sid {
            let ended = match &outcome {
                WaitOutcome::Overflow {
                    waited: Some(_), ..
                } => Some(EndReason::WaitOverflow),
                WaitOutcome::Left { sent_by: Some(_) } => Some(EndReason::WaitAbandoned),
                _ => None,
            };
            if let Some(reason) = ended {
                self.core
                    .end_states(&[call_sid.to_string()], reason)
                    .await?;
            }
        }
        Ok(WaitReport {
            outcome,
            abandoned,
            waiting,
            longest,
        })
    }

    async fn claim_whatsapp(&self, number: &str, cooldown: Duration) -> Result<bool, StoreError> {
        let (began, mut conn) = self.core.link("whatsapp_cooldown").await?;
        let mut set = redis::cmd("SET");
        set.arg(keys::whatsapp_sent(number))
            .arg(1)
            .arg("NX")
            .arg("PX")
            .arg(millis(cooldown).max(1));
        let claimed: Option<String> = self
            .core
            .run("whatsapp_cooldown", began, set.query_async(&mut conn))
            .await?;
        Ok(claimed.is_some())
    }

    async fn stats(&self) -> Result<ClusterStats, StoreError> {
        let (began, mut conn) = self.core.link("stats").await?;
        let figures: StatsReply = self
            .core
            .run("stats", began, conn.mget(&STATS_KEYS))
            .await?;
        Ok(cluster_stats(figures))
    }

    async fn snapshot(
        &self,
        with_tenants: bool,
    ) -> Result<(ClusterStats, TenantsUsage), StoreError> {
        if !with_tenants {
            return Ok((self.stats().await?, TenantsUsage::new()));
        }
        let (began, mut conn) = self.core.link("stats").await?;
        let mut pipe = redis::pipe();
        pipe.mget(&STATS_KEYS)
            .hvals(keys::SLOT_TENANT)
            .hgetall(keys::TENANT_LIMITS);
        let (figures, slot_tenants, limits): (StatsReply, Vec<String>, BTreeMap<String, u64>) =
            self.core
                .run("stats", began, pipe.query_async(&mut conn))
                .await?;
        let usage = tenants_usage(
            slot_tenants.iter().map(String::as_str),
            &limits,
            self.core.config.default_tenant_limit,
        );
        Ok((cluster_stats(figures), usage))
    }

    async fn ping(&self) -> Result<(), StoreError> {
        let (began, mut conn) = self.core.link("ping").await?;
        self.core
            .run(
                "ping",
                began,
                redis::cmd("PING").query_async::<()>(&mut conn),
            )
            .await
    }

    async fn reregister_wanted(&self) {
        self.core.watch.reregister_wanted().await;
    }

    fn admissions_stopped(&self) -> bool {
        self.admits.stopped()
    }

    async fn admission_wait(&self) -> Result<Option<Duration>, StoreError> {
        let (began, mut conn) = self.core.link("ping").await?;
        let mut pipe = redis::pipe();
        pipe.get(keys::EPOCH).cmd("TIME");
        let (epoch, (secs, micros)): (Option<String>, (i64, i64)) = self
            .core
            .run("ping", began, pipe.query_async(&mut conn))
            .await?;
        let now = secs * 1000 + micros / 1000;
        // calls:epoch holds the Redis-time ms at which admissions open.
        if let Some(opens) = epoch.as_deref().and_then(|e| e.parse::<i64>().ok())
            && opens > now
        {
            return Ok(Some(Duration::from_millis(
                u64::try_from(opens - now).unwrap_or(0),
            )));
        }
        // The wait is due but no script has opened it yet: this replica found Redis restarted,
        // or the epoch it saw is gone. The next admission or tick opens it.
        let lost = epoch.is_none() && !self.core.watch.seen_epoch().is_empty();
        if lost || self.core.watch.wait_ticket().is_some() {
            return Ok(Some(self.core.config.recovery_holdoff));
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_id_is_read_from_info_server() {
        let info = "# Server\r\nredis_version:7.0.15\r\nrun_id:abc123\r\ntcp_port:0\r\n";
        assert_eq!(run_id(info), Some("abc123"));
        assert_eq!(run_id("# Server\r\nredis_version:7\r\n"), None);
    }

    #[test]
    fn start_args_leave_out_exactly_the_carried_fields() {
        let mut fresh = CallState::reserved("CA1", "r1");
        fresh.account_sid = Some("AC1".into());
        let (whole, rest, carried) = start_state_args(&fresh);
        let rest: serde_json::Value = serde_json::from_str(&rest).unwrap();
        for field in CARRIED_FROM_WEBHOOK {
            assert!(rest.get(field).is_none(), "{field} left in");
        }
        assert_eq!(rest["account_sid"], "AC1");
        let names: Vec<&str> = carried.iter().map(|(f, _)| *f).collect();
        assert_eq!(
            names,
            [
                "created_at",
                "from",
                "to",
                "tenant",
                "handovers",
                "stream_token",
                "direction"
            ]
        );
        assert_eq!(carried[1].1, "null");
        let whole: CallState = serde_json::from_str(&whole).unwrap();
        assert_eq!(whole, fresh);

        fresh.account_sid = None;
        let (_, _, carried) = start_state_args(&fresh);
        assert_eq!(carried.last().map(|(f, _)| *f), Some("account_sid"));
    }
}
