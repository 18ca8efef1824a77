//! A read-mostly view of the whole cluster for the operator's command line
//! (docs/reference.md#command-line): heartbeats, live slots with their states, stats and tenant
//! caps, read with SCAN and MGET (never KEYS).

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use redis::AsyncCommands;
use serde::Serialize;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::connect::{self, StoreConnection};
use super::settings::RedisSettings;
use super::{ClusterStats, ReplicaHeartbeat, StoreError, TenantsUsage, tenants_usage};
use crate::keys;
use crate::state::CallState;
use crate::tenant::TenantKey;

/// States are read in batches of this many keys per MGET, so a large cluster never builds one
/// huge reply.
const MGET_BATCH: usize = 500;

/// One replica as its heartbeat shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReplicaView {
    #[serde(flatten)]
    pub heartbeat: ReplicaHeartbeat,
    /// Since the heartbeat was written, by Redis' clock; `None` for a heartbeat written by a
    /// replica that does not say its tick.
    pub heartbeat_age_ms: Option<u64>,
    /// Older than two ticks: the replica missed a renewal (paused, overloaded, or dying).
    pub stale: bool,
}

/// One live slot and what its state says.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LiveSlot {
    pub call_sid: String,
    /// `inbound` or `outbound` (docs/reference.md#outbound); a slot still held under an outbound
    /// id (Twilio has not named the call yet) is `outbound`, `dialing`; a slot without a state `-`.
    pub direction: &'static str,
    pub tenant: Option<String>,
    pub replica: Option<String>,
    /// `reserved` or `active` (or what the state says; `None` without a state).
    pub status: Option<String>,
    pub created_at: Option<String>,
    /// Since `created_at`, by Redis' clock.
    pub age_secs: Option<u64>,
    /// Until the slot's lease lapses.
    pub lease_left_ms: i64,
}

/// A replica's tenant settings, as its heartbeat reports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct TenantSettings {
    pub tenant_key: TenantKey,
    /// `DEFAULT_TENANT_LIMIT`; `None`: unset (a tenant without its own cap has only the global one).
    pub default_tenant_limit: Option<u64>,
}

/// The settings the live replicas report, as most of them report them: the cluster runs with
/// these (a replica that differs is named in `differing`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ClusterSettings {
    /// `MAX_CONCURRENT_CALLS`; `None` without a live replica.
    pub max_concurrent_calls: Option<u64>,
    /// `None`: unknown, because no live replica reports its tenant settings (none is alive, or
    /// every one is older than this command line). Never a guess.
    pub tenants: Option<TenantSettings>,
    /// Replicas whose limit or tenant settings differ from the ones above.
    pub differing: Vec<String>,
}

impl ClusterSettings {
    /// The most common value of each setting among `replicas` (a tie goes to the larger value,
    /// so the answer never depends on the order replicas are read in).
    pub fn of(replicas: &[ReplicaView]) -> Self {
        let limit = most_common(replicas.iter().map(|r| r.heartbeat.max_concurrent_calls));
        let tenants = most_common(
            replicas
                .iter()
                .filter_map(|r| tenant_settings(&r.heartbeat)),
        );
        let differing = replicas
            .iter()
            .filter(|r| {
                Some(r.heartbeat.max_concurrent_calls) != limit
                    || tenant_settings(&r.heartbeat).is_some_and(|own| Some(own) != tenants)
            })
            .map(|r| r.heartbeat.id.clone())
            .collect();
        Self {
            max_concurrent_calls: limit,
            tenants,
            differing,
        }
    }

    /// Whether the live replicas put calls in tenants: `Some(false)` when every one that says
    /// runs with `TENANT_KEY=none`, `None` when none says.
    pub fn tenants_on(&self) -> Option<bool> {
        self.tenants.map(|t| t.tenant_key != TenantKey::None)
    }
}

fn tenant_settings(heartbeat: &ReplicaHeartbeat) -> Option<TenantSettings> {
    heartbeat.tenant_key.map(|tenant_key| TenantSettings {
        tenant_key,
        default_tenant_limit: heartbeat.default_tenant_limit,
    })
}

fn most_common<T: Ord + Copy>(values: impl Iterator<Item = T>) -> Option<T> {
    let mut votes: BTreeMap<T, usize> = BTreeMap::new();
    for value in values {
        *votes.entry(value).or_default() += 1;
    }
    votes
        .into_iter()
        .max_by_key(|(value, count)| (*count, *value))
        .map(|(value, _)| value)
}

/// What `prosaas-calls status` shows.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClusterStatus {
    pub stats: ClusterStats,
    pub replicas: Vec<ReplicaView>,
    pub settings: ClusterSettings,
    /// Each tenant with live slots or its own cap; `limit` is its own cap, else the cluster's
    /// default where the replicas report one (`settings.tenants`), else `None`.
    pub tenants: TenantsUsage,
    /// The tenants with a cap of their own (`calls:tenant_limits`), to tell it from the default.
    pub own_limits: BTreeMap<String, u64>,
    /// The waiting room's line (docs/reference.md#waiting-room).
    pub waiting: WaitingLine,
    /// Outbound calls queued, not yet placed (docs/reference.md#outbound).
    pub outbound_queued: u64,
    /// Outbound calls placed and not yet answered or ended.
    pub outbound_dialing: u64,
}

/// How many wait in the waiting room's line, and the longest wait.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct WaitingLine {
    pub callers: u64,
    pub longest_ms: u64,
}

pub struct ClusterView {
    conn: StoreConnection,
    addr: String,
    timeout: Duration,
}

impl ClusterView {
    /// Nothing is dialled until the first read.
    ///
    /// # Errors
    ///
    /// A URL or TLS setting the client cannot use; the message never repeats credentials.
    pub fn new(settings: &RedisSettings, timeout: Duration) -> Result<Self, StoreError> {
        Ok(Self {
            conn: connect::connect_lazy(settings, timeout)?,
            addr: settings.address(),
            timeout,
        })
    }

    /// Redis' clock in ms: every age is measured on it, never on this machine's.
    async fn now_ms(&self) -> Result<u64, StoreError> {
        let mut conn = self.conn.clone();
        let (secs, micros): (u64, u64) = self
            .bounded("time", redis::cmd("TIME").query_async(&mut conn))
            .await?;
        Ok(secs * 1000 + micros / 1000)
    }

    pub async fn status(&self) -> Result<ClusterStatus, StoreError> {
        let mut conn = self.conn.clone();
        let mut pipe = redis::pipe();
        pipe.mget(&[
            keys::ACTIVE_COUNT,
            keys::STATS_STARTED,
            keys::STATS_REJECTED_MAX_CONCURRENT,
            keys::STATS_REJECTED_TENANT_LIMIT,
        ])
        .hvals(keys::SLOT_TENANT)
        .hgetall(keys::TENANT_LIMITS)
        .llen(keys::OUTBOUND_QUEUE)
        .zcard(keys::OUTBOUND_INFLIGHT);
        type Reply = (
            (Option<u64>, Option<u64>, Option<u64>, Option<u64>),
            Vec<String>,
            BTreeMap<String, u64>,
            u64,
            u64,
        );
        let (
            (active, started, rejected, tenant_rejected),
            slot_tenants,
            limits,
            outbound_queued,
            outbound_dialing,
        ): Reply = self.bounded("status", pipe.query_async(&mut conn)).await?;
        let stats = ClusterStats {
            active: active.unwrap_or(0),
            started: started.unwrap_or(0),
            rejected_max_concurrent: rejected.unwrap_or(0),
            rejected_tenant_limit: tenant_rejected.unwrap_or(0),
        };
        let replicas = self.replicas().await?;
        let settings = ClusterSettings::of(&replicas);
        let default_limit = settings.tenants.and_then(|t| t.default_tenant_limit);
        let tenants = tenants_usage(
            slot_tenants.iter().map(String::as_str),
            &limits,
            default_limit,
        );
        let waiting = self.waiting().await?;
        Ok(ClusterStatus {
            stats,
            replicas,
            settings,
            tenants,
            own_limits: limits,
            waiting,
            outbound_queued,
            outbound_dialing,
        })
    }

    /// The callers in line who have not left it (two polls silent), and the longest wait, by
    /// Redis' clock (`joined_ms` is the second field of each `calls:wait:info` entry).
    pub async fn waiting(&self) -> Result<WaitingLine, StoreError> {
        let now = self.now_ms().await?;
        let mut conn = self.conn.clone();
        let mut pipe = redis::pipe();
        pipe.zcount(keys::WAIT_CALLERS, format!("({now}"), "+inf")
            .hvals(keys::WAIT_INFO);
        let (callers, infos): (u64, Vec<String>) =
            self.bounded("waiting", pipe.query_async(&mut conn)).await?;
        let oldest = infos
            .iter()
            .filter_map(|info| info.split('|').nth(1)?.parse::<u64>().ok())
            .min();
        Ok(WaitingLine {
            callers,
            longest_ms: oldest.map_or(0, |joined| now.saturating_sub(joined)),
        })
    }

    /// Every replica whose heartbeat has not expired, by id.
    pub async fn replicas(&self) -> Result<Vec<ReplicaView>, StoreError> {
        let names = self.scan(keys::REPLICA_PATTERN).await?;
        if names.is_empty() {
            return Ok(Vec::new());
        }
        let mut conn = self.conn.clone();
        let mut pipe = redis::pipe();
        for name in &names {
            pipe.get(name).pttl(name);
        }
        let replies: Vec<redis::Value> = self
            .bounded("replicas", pipe.query_async(&mut conn))
            .await?;
        let mut replicas = Vec::with_capacity(names.len());
        for pair in replies.chunks(2) {
            let (Ok(Some(blob)), Ok(ttl)) = (
                redis::from_redis_value::<Option<String>>(pair[0].clone()),
                redis::from_redis_value::<i64>(pair[1].clone()),
            ) else {
                continue;
            };
            // A heartbeat that is not ours (hand-written, a newer format) is skipped, not fatal.
            let Ok(heartbeat) = serde_json::from_str::<ReplicaHeartbeat>(&blob) else {
                continue;
            };
            let tick = heartbeat.renew_interval_ms;
            let age = (tick > 0 && ttl >= 0)
                .then(|| (3 * tick).saturating_sub(u64::try_from(ttl).unwrap_or(0)));
            replicas.push(ReplicaView {
                stale: age.is_some_and(|age| age > 2 * tick),
                heartbeat_age_ms: age,
                heartbeat,
            });
        }
        replicas.sort_by(|a, b| a.heartbeat.id.cmp(&b.heartbeat.id));
        Ok(replicas)
    }

    /// Every live slot (reservations included), oldest first.
    pub async fn calls(&self) -> Result<Vec<LiveSlot>, StoreError> {
        let now = self.now_ms().await?;
        let mut conn = self.conn.clone();
        let slots: Vec<(String, f64)> = self
            .bounded("calls", conn.zrange_withscores(keys::SLOTS, 0, -1))
            .await?;
        let mut live = Vec::with_capacity(slots.len());
        for batch in slots.chunks(MGET_BATCH) {
            let state_keys: Vec<String> = batch
                .iter()
                .filter_map(|(sid, _)| crate::call_sid::CallSid::parse(sid).ok())
                .map(|sid| keys::state(&sid))
                .collect();
            let blobs: Vec<Option<String>> = if state_keys.is_empty() {
                Vec::new()
            } else {
                self.bounded("calls", conn.mget(&state_keys)).await?
            };
            let mut blobs = blobs.into_iter();
            for (sid, deadline) in batch {
                let state = if crate::call_sid::CallSid::parse(sid).is_ok() {
                    blobs
                        .next()
                        .flatten()
                        .and_then(|blob| serde_json::from_str::<CallState>(&blob).ok())
                } else {
                    None
                };
                live.push(slot_view(sid, *deadline, state, now));
            }
        }
        live.sort_by(|a, b| {
            b.age_secs
                .cmp(&a.age_secs)
                .then(a.call_sid.cmp(&b.call_sid))
        });
        Ok(live)
    }

    /// Sets (`Some`) or removes (`None`) a tenant's own cap: honoured from the next admission.
    pub async fn set_tenant_limit(
        &self,
        tenant: &str,
        limit: Option<u64>,
    ) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        match limit {
            Some(limit) => {
                self.bounded(
                    "tenants",
                    conn.hset::<_, _, _, ()>(keys::TENANT_LIMITS, tenant, limit),
                )
                .await
            }
            None => {
                self.bounded(
                    "tenants",
                    conn.hdel::<_, _, ()>(keys::TENANT_LIMITS, tenant),
                )
                .await
            }
        }
    }

    /// Every key matching `pattern`, by SCAN (a cursor loop: never blocks Redis like KEYS).
    async fn scan(&self, pattern: &str) -> Result<Vec<String>, StoreError> {
        let mut conn = self.conn.clone();
        let mut cursor: u64 = 0;
        let mut found = Vec::new();
        loop {
            let mut cmd = redis::cmd("SCAN");
            cmd.arg(cursor)
                .arg("MATCH")
                .arg(pattern)
                .arg("COUNT")
                .arg(1000);
            let (next, batch): (u64, Vec<String>) =
                self.bounded("scan", cmd.query_async(&mut conn)).await?;
            found.extend(batch);
            if next == 0 {
                break;
            }
            cursor = next;
        }
        found.sort();
        found.dedup();
        Ok(found)
    }

    async fn bounded<T>(
        &self,
        op: &'static str,
        fut: impl Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, StoreError> {
        match tokio::time::timeout(self.timeout, fut).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(source)) => Err(StoreError::Redis {
                op,
                addr: self.addr.clone(),
                source,
            }),
            Err(_) => Err(StoreError::Timeout {
                op,
                addr: self.addr.clone(),
                timeout: self.timeout,
            }),
        }
    }
}

fn slot_view(sid: &str, deadline: f64, state: Option<CallState>, now_ms: u64) -> LiveSlot {
    // Scores are whole ms of Redis time, far below f64's exact-integer range.
    #[allow(clippy::cast_possible_truncation)]
    let lease_left_ms = deadline as i64 - i64::try_from(now_ms).unwrap_or(i64::MAX);
    let age_secs = state
        .as_ref()
        .and_then(|state| OffsetDateTime::parse(&state.created_at, &Rfc3339).ok())
        .map(|created| {
            let created_ms = created.unix_timestamp_nanos() / 1_000_000;
            let age = (i128::from(now_ms) - created_ms).max(0) / 1000;
            u64::try_from(age).unwrap_or(0)
        });
    let dialing = sid.starts_with(crate::outbound_id::ID_PREFIX) && state.is_none();
    LiveSlot {
        call_sid: sid.to_owned(),
        // A slot without a state (an outbound call Twilio named that has not been answered yet,
        // or a state that expired) says no direction rather than guess one.
        direction: if dialing {
            crate::state::Direction::Outbound.as_str()
        } else {
            state.as_ref().map_or("-", |s| s.direction.as_str())
        },
        tenant: state.as_ref().and_then(|s| s.tenant.clone()),
        replica: state.as_ref().map(|s| s.replica.clone()),
        status: state
            .as_ref()
            .and_then(|s| {
                serde_json::to_value(s.status)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
            })
            .or_else(|| dialing.then(|| "dialing".to_owned())),
        created_at: state.as_ref().map(|s| s.created_at.clone()),
        age_secs,
        lease_left_ms,
    }
}
