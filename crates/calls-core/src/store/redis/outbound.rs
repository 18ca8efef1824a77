//! The Redis side of outbound calls (docs/reference.md#outbound): the queue, the records and the
//! paced dial step, each one Lua script (`dial.lua`, `outbound_update.lua`, `outbound_enqueue.lua`).

use async_trait::async_trait;
use redis::{AsyncCommands, Script};
use std::time::Duration;

use super::{PRELUDE, RedisStore, millis};
use crate::call_sid::CallSid;
use crate::keys;
use crate::outbound::{
    IDEMPOTENCY_TTL, LIST_LIMIT, OPEN_RECORD_TTL, OutboundCall, OutboundError, OutboundId,
    OutboundStatus,
};
use crate::state::now_rfc3339;
use crate::store::StoreError;
use crate::store::{DialOutcome, DialPolicy, DialStep, Enqueued, OutboundStore, Transition};

const OUTBOUND_PRELUDE: &str = include_str!("../../lua/outbound_prelude.lua");

/// Index entries older than this are dropped by every enqueue: no record lives longer (24 h open,
/// then `CALL_STATE_TTL_SECS`, far below a day in any sane set-up).
const INDEX_HORIZON: Duration = Duration::from_secs(2 * 24 * 3600);

/// The outbound scripts, loaded with the others.
pub(super) struct OutboundScripts {
    dial: Script,
    update: Script,
    enqueue: Script,
    pub(super) sources: Vec<String>,
}

impl OutboundScripts {
    pub(super) fn new(header: &str) -> Self {
        let bodies = [
            include_str!("../../lua/dial.lua"),
            include_str!("../../lua/outbound_update.lua"),
            include_str!("../../lua/outbound_enqueue.lua"),
        ];
        let sources: Vec<String> = bodies
            .iter()
            .map(|body| format!("{header}\n{PRELUDE}\n{OUTBOUND_PRELUDE}\n{body}"))
            .collect();
        Self {
            dial: Script::new(&sources[0]),
            update: Script::new(&sources[1]),
            enqueue: Script::new(&sources[2]),
            sources,
        }
    }

    pub(super) fn hashes(&self) -> [&str; 3] {
        [
            self.dial.get_hash(),
            self.update.get_hash(),
            self.enqueue.get_hash(),
        ]
    }
}

fn decode(op: &'static str, blob: &str) -> Result<OutboundCall, StoreError> {
    serde_json::from_str(blob).map_err(|e| StoreError::UnexpectedReply {
        op,
        detail: format!("outbound record: {e}"),
    })
}

fn encode(record: &OutboundCall) -> String {
    // Strings, integers and a map of strings: serialising cannot fail.
    serde_json::to_string(record).unwrap_or_default()
}

impl RedisStore {
    /// Runs `outbound_update.lua` with `op` and its arguments.
    async fn outbound_update(
        &self,
        op: &'static str,
        id: &OutboundId,
        args: &[&str],
    ) -> Result<Transition, StoreError> {
        let core = &self.core;
        let (began, mut conn) = core.link("outbound_update").await?;
        let mut invocation = core.scripts.outbound.update.prepare_invoke();
        invocation
            .key(keys::outbound(id))
            .key(keys::SLOTS)
            .key(keys::ACTIVE_COUNT)
            .key(keys::OUTBOUND_QUEUE)
            .key(keys::OUTBOUND_INFLIGHT)
            .key(keys::OUTBOUND_PACE)
            .key(keys::STATS_STARTED)
            .arg(op)
            .arg(id.as_str())
            .arg(now_rfc3339())
            .arg(core.state_ttl_secs());
        for arg in args {
            invocation.arg(*arg);
        }
        let (became, blob): (String, String) = core
            .run("outbound_update", began, invocation.invoke_async(&mut conn))
            .await?;
        let record = if blob.is_empty() {
            None
        } else {
            Some(decode("outbound_update", &blob)?)
        };
        Ok(Transition {
            record,
            became: OutboundStatus::parse(&became),
        })
    }
}

#[async_trait]
impl OutboundStore for RedisStore {
    async fn enqueue(
        &self,
        record: &OutboundCall,
        idempotency_key: Option<&str>,
    ) -> Result<Enqueued, StoreError> {
        let core = &self.core;
        let id = OutboundId::parse(&record.id).map_err(|e| StoreError::UnexpectedReply {
            op: "outbound_enqueue",
            detail: e.to_string(),
        })?;
        let (began, mut conn) = core.link("outbound_enqueue").await?;
        let mut invocation = core.scripts.outbound.enqueue.prepare_invoke();
        invocation
            .key(keys::outbound(&id))
            .key(keys::OUTBOUND_QUEUE)
            .key(keys::OUTBOUND_INDEX);
        if let Some(key) = idempotency_key {
            invocation.key(keys::outbound_idempotency(key));
        }
        invocation
            .arg(id.as_str())
            .arg(encode(record))
            .arg(OPEN_RECORD_TTL.as_secs())
            .arg(IDEMPOTENCY_TTL.as_secs())
            .arg(millis(INDEX_HORIZON));
        let (new, blob): (i64, String) = core
            .run(
                "outbound_enqueue",
                began,
                invocation.invoke_async(&mut conn),
            )
            .await?;
        Ok(Enqueued {
            record: decode("outbound_enqueue", &blob)?,
            new: new == 1,
        })
    }

    async fn dial_next(&self, policy: &DialPolicy) -> Result<DialOutcome, StoreError> {
        let core = &self.core;
        let (began, mut conn) = core.link("dial").await?;
        let mut invocation = core.scripts.outbound.dial.prepare_invoke();
        invocation
            .key(keys::OUTBOUND_QUEUE)
            .key(keys::SLOTS)
            .key(keys::ACTIVE_COUNT)
            .key(keys::EPOCH)
            .key(keys::OUTBOUND_PACE)
            .key(keys::OUTBOUND_INFLIGHT)
            .key(keys::WAIT_CALLERS)
            .arg(policy.outbound_limit)
            .arg(millis(policy.interval).max(1))
            .arg(&policy.replica)
            .arg(now_rfc3339())
            .arg(core.watch.seen_epoch())
            .arg(millis(core.config.recovery_holdoff))
            .arg(core.default_tenant_limit_arg())
            .arg(millis(policy.dial_margin))
            .arg(core.state_ttl_secs());
        type Reply = (String, String, u64, Vec<String>, String, i64, Vec<String>);
        let (code, blob, wait_ms, reclaimed, epoch, data_lost, interrupted): Reply = core
            .run("dial", began, invocation.invoke_async(&mut conn))
            .await?;
        if !epoch.is_empty() {
            core.after_admission(None, &epoch, data_lost, &reclaimed)
                .await;
        }
        let interrupted = interrupted
            .iter()
            .map(|blob| decode("dial", blob))
            .collect::<Result<Vec<_>, _>>()?;
        let wait = Duration::from_millis(wait_ms);
        let step = match code.as_str() {
            "dial" => DialStep::Dial(Box::new(decode("dial", &blob)?)),
            "idle" => DialStep::Idle,
            "paced" => DialStep::Paced(wait),
            "full" => DialStep::Full,
            "tenant_full" => DialStep::TenantFull,
            "waiting" => DialStep::CallersWaiting,
            "recovering" => DialStep::Recovering,
            other => {
                return Err(StoreError::UnexpectedReply {
                    op: "dial",
                    detail: format!("dial step {other:?}"),
                });
            }
        };
        Ok(DialOutcome { step, interrupted })
    }

    async fn placed(&self, id: &OutboundId, call_sid: &CallSid) -> Result<Transition, StoreError> {
        self.outbound_update("placed", id, &[call_sid.as_str()])
            .await
    }

    async fn requeue(&self, id: &OutboundId, backoff: Duration) -> Result<Transition, StoreError> {
        let backoff = millis(backoff).max(1).to_string();
        self.outbound_update("requeue", id, &[&backoff]).await
    }

    async fn fail(&self, id: &OutboundId, error: &OutboundError) -> Result<Transition, StoreError> {
        let error = serde_json::to_string(error).unwrap_or_default();
        self.outbound_update("fail", id, &[&error]).await
    }

    async fn report(
        &self,
        id: &OutboundId,
        call_sid: Option<&CallSid>,
        status: OutboundStatus,
    ) -> Result<Transition, StoreError> {
        self.outbound_update(
            "report",
            id,
            &[status.as_str(), call_sid.map(CallSid::as_str).unwrap_or("")],
        )
        .await
    }

    async fn cancel_queued(&self, id: &OutboundId) -> Result<Transition, StoreError> {
        self.outbound_update("cancel", id, &[]).await
    }

    async fn outbound_call(&self, id: &OutboundId) -> Result<Option<OutboundCall>, StoreError> {
        let (began, mut conn) = self.core.link("outbound_read").await?;
        let blob: Option<String> = self
            .core
            .run("outbound_read", began, conn.get(keys::outbound(id)))
            .await?;
        blob.map(|blob| decode("outbound_read", &blob)).transpose()
    }

    async fn outbound_calls(
        &self,
        status: Option<OutboundStatus>,
    ) -> Result<Vec<OutboundCall>, StoreError> {
        // Newest first; a page of ids at a time, records read with one MGET per page, so a
        // filter that matches few calls still finds up to LIST_LIMIT of them.
        const PAGE: isize = 500;
        let mut found = Vec::new();
        let mut start: isize = 0;
        loop {
            let (began, mut conn) = self.core.link("outbound_read").await?;
            let ids: Vec<String> = self
                .core
                .run(
                    "outbound_read",
                    began,
                    conn.zrevrange(keys::OUTBOUND_INDEX, start, start + PAGE - 1),
                )
                .await?;
            if ids.is_empty() {
                return Ok(found);
            }
            let record_keys: Vec<String> = ids
                .iter()
                .filter_map(|id| OutboundId::parse(id).ok())
                .map(|id| keys::outbound(&id))
                .collect();
            let (began, mut conn) = self.core.link("outbound_read").await?;
            let blobs: Vec<Option<String>> = if record_keys.is_empty() {
                Vec::new()
            } else {
                self.core
                    .run("outbound_read", began, conn.mget(&record_keys))
                    .await?
            };
            let mut gone = Vec::new();
            for (id, blob) in ids.iter().zip(blobs) {
                let Some(blob) = blob else {
                    gone.push(id.clone());
                    continue;
                };
                let Ok(record) = decode("outbound_read", &blob) else {
                    continue;
                };
                if status.is_none_or(|s| s == record.status) {
                    found.push(record);
                    if found.len() >= LIST_LIMIT {
                        return Ok(found);
                    }
                }
            }
            if !gone.is_empty() {
                // Expired records leave the index; the next page starts that much earlier.
                let (began, mut conn) = self.core.link("outbound_read").await?;
                let removed: usize = self
                    .core
                    .run(
                        "outbound_read",
                        began,
                        conn.zrem(keys::OUTBOUND_INDEX, &gone),
                    )
                    .await?;
                start -= isize::try_from(removed).unwrap_or(0);
            }
            start += PAGE;
        }
    }

    async fn outbound_queued(&self) -> Result<u64, StoreError> {
        let (began, mut conn) = self.core.link("outbound_read").await?;
        self.core
            .run("outbound_read", began, conn.llen(keys::OUTBOUND_QUEUE))
            .await
    }
}
