//! The Redis backend: the key space of SPEC §4 driven by Lua scripts loaded once and called by SHA.
//! Every call is bounded by `op_timeout`; the connection manager reconnects on its own after a restart.

use std::future::Future;
use std::time::Duration;

use async_trait::async_trait;
use redis::{AsyncCommands, Script};

use super::connect::{self, StoreConnection};
use super::{
    Admission, AdmitPolicy, Backend, CallStore, ClusterStats, LockOutcome, Refusal, RenewBatch,
    RenewReport, StoreConfig, StoreError,
};
use crate::call_sid::CallSid;
use crate::keys;
use crate::state::{CallState, EndReason};

const PRELUDE: &str = include_str!("../lua/prelude.lua");

/// The scripts, hashed once at start-up. `Script::invoke_async` runs EVALSHA and, on NOSCRIPT
/// (a restarted or flushed Redis), loads the source and retries.
struct Scripts {
    admit: Script,
    release: Script,
    reclaim: Script,
    renew: Script,
    lock_take: Script,
    lock_renew: Script,
    lock_release: Script,
}

impl Scripts {
    fn load() -> Self {
        let with_prelude = |body: &str| Script::new(&format!("{PRELUDE}\n{body}"));
        Self {
            admit: with_prelude(include_str!("../lua/admit.lua")),
            release: with_prelude(include_str!("../lua/release.lua")),
            reclaim: with_prelude(include_str!("../lua/reclaim.lua")),
            renew: with_prelude(include_str!("../lua/renew.lua")),
            lock_take: Script::new(include_str!("../lua/lock_take.lua")),
            lock_renew: Script::new(include_str!("../lua/lock_renew.lua")),
            lock_release: Script::new(include_str!("../lua/lock_release.lua")),
        }
    }
}

pub struct RedisStore {
    conn: StoreConnection,
    /// The server's address without credentials, named in every error.
    addr: String,
    config: StoreConfig,
    scripts: Scripts,
}

impl RedisStore {
    /// Whether the Redis client accepts `url`, without connecting: for start-up checks.
    ///
    /// # Errors
    ///
    /// The client's reason, which never repeats the URL's credentials.
    pub fn check_url(url: &str) -> Result<(), String> {
        connect::check_url(url).map_err(|err| err.to_string())
    }

    /// Connects and waits for the first connection: for tools and tests that need Redis now.
    pub async fn connect(url: &str, config: StoreConfig) -> Result<Self, StoreError> {
        let store = Self::connect_lazy(url, config)?;
        store.ping().await?;
        Ok(store)
    }

    /// Returns at once; the connection is made (and remade) on demand, so a replica can start,
    /// report not-ready, and become ready when Redis appears.
    pub fn connect_lazy(url: &str, config: StoreConfig) -> Result<Self, StoreError> {
        let addr = connect::address_of(url);
        let conn = connect::connect_lazy(url, &config.tls, config.op_timeout)?;
        Ok(Self {
            conn,
            addr,
            config,
            scripts: Scripts::load(),
        })
    }

    /// Runs one store operation under `op_timeout`, naming it in any error.
    async fn run<T>(
        &self,
        op: &'static str,
        fut: impl Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, StoreError> {
        match tokio::time::timeout(self.config.op_timeout, fut).await {
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
        }
    }

    /// Ends the states of calls whose slots lapsed, unless they already ended. Rare (a crashed
    /// replica, an abandoned reservation), so two round trips are fine; the state's TTL is kept.
    async fn end_states(&self, sids: &[String], reason: EndReason) -> Result<(), StoreError> {
        let sids: Vec<CallSid> = sids.iter().filter_map(|s| CallSid::parse(s).ok()).collect();
        if sids.is_empty() {
            return Ok(());
        }
        let state_keys: Vec<String> = sids.iter().map(keys::state).collect();
        let mut conn = self.conn.clone();
        let blobs: Vec<Option<String>> = self.run("end_states", conn.mget(&state_keys)).await?;
        let mut pipe = redis::pipe();
        let mut writes = 0;
        for (key, blob) in state_keys.iter().zip(blobs) {
            let Some(blob) = blob else { continue };
            // A corrupt blob is left alone: the slot is already free and the blob expires by TTL.
            let Ok(mut state) = serde_json::from_str::<CallState>(&blob) else {
                continue;
            };
            if state.end(reason) {
                let json = encode(&state);
                pipe.cmd("SET").arg(key).arg(json).arg("KEEPTTL").ignore();
                writes += 1;
            }
        }
        if writes == 0 {
            return Ok(());
        }
        self.run("end_states", pipe.query_async::<()>(&mut conn))
            .await
    }
}

fn encode(state: &CallState) -> String {
    // A CallState holds only strings, numbers and maps with string keys: serialising cannot fail.
    serde_json::to_string(state).unwrap_or_default()
}

#[async_trait]
impl CallStore for RedisStore {
    fn backend(&self) -> Backend {
        Backend::Redis
    }

    fn config(&self) -> &StoreConfig {
        &self.config
    }

    async fn admit(
        &self,
        call_sid: &CallSid,
        policy: AdmitPolicy,
        lease: Duration,
        initial_state: Option<&CallState>,
    ) -> Result<Admission, StoreError> {
        let mut conn = self.conn.clone();
        let mut invocation = self.scripts.admit.prepare_invoke();
        invocation
            .key(keys::SLOTS)
            .key(keys::ACTIVE_COUNT)
            .key(keys::STATS_STARTED)
            .key(keys::STATS_REJECTED_MAX_CONCURRENT)
            .key(keys::EPOCH)
            .key(keys::state(call_sid))
            .arg(call_sid.as_str())
            .arg(self.config.limit)
            .arg(lease.as_millis() as u64)
            .arg(match policy {
                AdmitPolicy::MayTakeSlot => "take",
                AdmitPolicy::ExistingOnly => "existing",
            })
            .arg(self.config.recovery_holdoff.as_millis() as u64)
            .arg(initial_state.map(encode).unwrap_or_default())
            .arg(self.config.state_ttl.as_secs().max(1));
        let (code, active, reclaimed): (i64, u64, Vec<String>) = self
            .run("admit", invocation.invoke_async(&mut conn))
            .await?;
        if !reclaimed.is_empty() {
            self.end_states(&reclaimed, EndReason::LeaseExpired).await?;
        }
        Ok(match code {
            1 => Admission::Admitted { new: true, active },
            2 => Admission::Admitted { new: false, active },
            0 => Admission::Refused(Refusal::AtLimit { active }),
            -1 => Admission::Refused(Refusal::Recovering),
            -2 => Admission::Refused(Refusal::NoSlotHeld),
            other => {
                return Err(StoreError::UnexpectedReply {
                    op: "admit",
                    detail: format!("code {other}"),
                });
            }
        })
    }

    async fn release(&self, call_sid: &CallSid, reason: EndReason) -> Result<bool, StoreError> {
        let mut conn = self.conn.clone();
        let mut invocation = self.scripts.release.prepare_invoke();
        invocation
            .key(keys::SLOTS)
            .key(keys::ACTIVE_COUNT)
            .key(keys::state(call_sid))
            .arg(call_sid.as_str());
        let (freed, state_open): (i64, i64) = self
            .run("release", invocation.invoke_async(&mut conn))
            .await?;
        if state_open == 1 {
            self.end_states(&[call_sid.to_string()], reason).await?;
        }
        Ok(freed == 1)
    }

    async fn renew(&self, batch: &RenewBatch) -> Result<RenewReport, StoreError> {
        let heartbeat = serde_json::to_string(&batch.heartbeat).unwrap_or_default();
        let mut invocation = self.scripts.renew.prepare_invoke();
        invocation
            .key(keys::SLOTS)
            .key(keys::ACTIVE_COUNT)
            .key(keys::EPOCH)
            .key(keys::replica(&batch.heartbeat.id))
            .arg(batch.lease.as_millis() as u64)
            .arg(self.config.lock_ttl.as_millis() as u64)
            .arg(self.config.state_ttl.as_secs().max(1))
            .arg(self.config.recovery_holdoff.as_millis() as u64)
            .arg(heartbeat)
            .arg(batch.heartbeat_ttl.as_millis() as u64);
        for call in &batch.calls {
            invocation
                .key(keys::lock(&call.call_sid))
                .key(keys::state(&call.call_sid))
                .arg(call.call_sid.as_str())
                .arg(&call.lock_token)
                .arg(call.state.as_ref().map(encode).unwrap_or_default());
        }
        let mut conn = self.conn.clone();
        let (active, readded, lock_lost, reclaimed, _epoch_created, ended): (
            u64,
            Vec<String>,
            Vec<String>,
            Vec<String>,
            i64,
            Vec<String>,
        ) = self
            .run("renew", invocation.invoke_async(&mut conn))
            .await?;
        // A call of this batch that was reclaimed and re-added is live: its state stays as flushed.
        let lapsed: Vec<String> = reclaimed
            .iter()
            .filter(|sid| !readded.contains(sid))
            .cloned()
            .collect();
        self.end_states(&lapsed, EndReason::LeaseExpired).await?;
        Ok(RenewReport {
            active,
            readded,
            lock_lost,
            reclaimed,
            ended,
        })
    }

    async fn reclaim(&self) -> Result<Vec<String>, StoreError> {
        let mut conn = self.conn.clone();
        let mut invocation = self.scripts.reclaim.prepare_invoke();
        invocation.key(keys::SLOTS).key(keys::ACTIVE_COUNT);
        let (_active, reclaimed): (u64, Vec<String>) = self
            .run("reclaim", invocation.invoke_async(&mut conn))
            .await?;
        self.end_states(&reclaimed, EndReason::LeaseExpired).await?;
        Ok(reclaimed)
    }

    async fn read_state(&self, call_sid: &CallSid) -> Result<Option<CallState>, StoreError> {
        let mut conn = self.conn.clone();
        let blob: Option<String> = self
            .run("read_state", conn.get(keys::state(call_sid)))
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
        let mut conn = self.conn.clone();
        self.run(
            "write_state",
            conn.set_ex::<_, _, ()>(
                keys::state(&call_sid),
                encode(state),
                self.config.state_ttl.as_secs().max(1),
            ),
        )
        .await
    }

    async fn take_lock(&self, call_sid: &CallSid, token: &str) -> Result<LockOutcome, StoreError> {
        let mut conn = self.conn.clone();
        let mut invocation = self.scripts.lock_take.prepare_invoke();
        invocation
            .key(keys::lock(call_sid))
            .arg(token)
            .arg(self.config.lock_ttl.as_millis() as u64);
        let owner: String = self
            .run("take_lock", invocation.invoke_async(&mut conn))
            .await?;
        Ok(if owner.is_empty() {
            LockOutcome::Acquired
        } else {
            LockOutcome::HeldBy(owner)
        })
    }

    async fn renew_lock(&self, call_sid: &CallSid, token: &str) -> Result<bool, StoreError> {
        let mut conn = self.conn.clone();
        let mut invocation = self.scripts.lock_renew.prepare_invoke();
        invocation
            .key(keys::lock(call_sid))
            .arg(token)
            .arg(self.config.lock_ttl.as_millis() as u64);
        let renewed: i64 = self
            .run("renew_lock", invocation.invoke_async(&mut conn))
            .await?;
        Ok(renewed == 1)
    }

    async fn release_lock(&self, call_sid: &CallSid, token: &str) -> Result<bool, StoreError> {
        let mut conn = self.conn.clone();
        let mut invocation = self.scripts.lock_release.prepare_invoke();
        invocation.key(keys::lock(call_sid)).arg(token);
        let released: i64 = self
            .run("release_lock", invocation.invoke_async(&mut conn))
            .await?;
        Ok(released == 1)
    }

    async fn stats(&self) -> Result<ClusterStats, StoreError> {
        let mut conn = self.conn.clone();
        let (active, started, rejected): (Option<u64>, Option<u64>, Option<u64>) = self
            .run(
                "stats",
                conn.mget(&[
                    keys::ACTIVE_COUNT,
                    keys::STATS_STARTED,
                    keys::STATS_REJECTED_MAX_CONCURRENT,
                ]),
            )
            .await?;
        Ok(ClusterStats {
            active: active.unwrap_or(0),
            started: started.unwrap_or(0),
            rejected_max_concurrent: rejected.unwrap_or(0),
        })
    }

    async fn ping(&self) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        self.run("ping", redis::cmd("PING").query_async::<()>(&mut conn))
            .await
    }
}
