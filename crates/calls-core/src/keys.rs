//! The Redis key space of docs/reference.md#admission: every key the service reads or writes is
//! named here and nowhere else. Keys have no braces: `calls:state:CA123…`, exactly as operators
//! type them into `redis-cli`.

use crate::call_sid::CallSid;
use crate::outbound_id::OutboundId;

/// Live slots, cluster-wide; always equal to `ZCARD calls:slots` after every script.
pub const ACTIVE_COUNT: &str = "calls:active_count";
/// Sorted set of live calls: member = call SID, score = lease deadline in ms of Redis `TIME`.
pub const SLOTS: &str = "calls:slots";
pub const STATS_STARTED: &str = "calls:stats:started";
pub const STATS_REJECTED_MAX_CONCURRENT: &str = "calls:stats:rejected_max_concurrent";
/// Created by the first script on a brand-new Redis; each replica remembers the value it saw.
/// Missing or changed under a replica that saw one: Redis lost its data. Value: the Redis-time ms
/// at which admissions (re)open, so live calls can re-register first (docs/reference.md#admission).
pub const EPOCH: &str = "calls:epoch";
/// Hash tenant → integer: per-tenant caps, set at run time (docs/reference.md#tenants).
pub const TENANT_LIMITS: &str = "calls:tenant_limits";
pub const STATS_REJECTED_TENANT_LIMIT: &str = "calls:stats:rejected_tenant_limit";
/// Hash call SID → tenant, one field per slot of a call that has a tenant: how a reclaim, which
/// finds only call SIDs in `calls:slots`, knows which tenant set to remove each from. Kept by the
/// same scripts that keep `calls:slots`, so it always names exactly the tenant-owned slots.
pub const SLOT_TENANT: &str = "calls:slot_tenant";
/// The latest lease deadline any replica's renewal set (ms of Redis `TIME`): passed, while lapsed
/// slots remain, means no replica could renew for longer than a lease (Redis was out of reach of
/// every replica, or stopped), and the recovery wait opens; one replica's loss leaves it in the
/// future (docs/reference.md#admission).
pub const RENEWED_UNTIL: &str = "calls:renewed_until";
/// The waiting room's line (docs/reference.md#waiting-room), shared with outbound dialling: sorted
/// set, member call SID, score = Redis-TIME ms after which that caller counts as gone (two polls
/// after their last visit). Anyone waits iff `ZCOUNT calls:wait:callers (now +inf` > 0.
pub const WAIT_CALLERS: &str = "calls:wait:callers";
/// Sorted set, member call SID, score = its joining sequence: the order of the line.
pub const WAIT_ORDER: &str = "calls:wait:order";
/// Hash call SID → `seq|joined_ms|last_visit_ms|reason|position|tenant`: what the line knows of
/// each caller (`reason`: `m` max_concurrent, `t` tenant_limit; `tenant` last, it may hold `|`).
pub const WAIT_INFO: &str = "calls:wait:info";
/// Hash tenant → Redis-TIME ms it was last served from the line (`""`: calls without a tenant).
pub const WAIT_SERVED: &str = "calls:wait:served";
/// The joining sequence (INCR).
pub const WAIT_SEQ: &str = "calls:wait:seq";
/// Set NX EX `WHATSAPP_COOLDOWN_SECS` per caller number: one WhatsApp message per number per
/// cooldown, cluster-wide.
const WHATSAPP_SENT_PREFIX: &str = "calls:whatsapp:sent:";
/// Heartbeats are found by `SCAN MATCH` with this pattern (the command line; never `KEYS`).
pub const REPLICA_PATTERN: &str = "calls:replica:*";

/// Outbound calls not yet placed, oldest first (a list of outbound ids; docs/reference.md#outbound).
/// No TTL: it outlives any one call; each entry leaves it when placed or canceled, or when the
/// dial finds its record gone.
pub const OUTBOUND_QUEUE: &str = "calls:outbound:queue";
/// Every outbound id by its creation (sorted set, score Redis-time ms, one past the newest when
/// several come within a ms), for `GET /v1/calls`. No TTL:
/// entries whose record expired are dropped by the listing and by every enqueue (older than two days).
pub const OUTBOUND_INDEX: &str = "calls:outbound:index";
/// Placed calls waiting for Twilio's word (sorted set, score the Redis-time ms after which one
/// ends `dial_interrupted`). No TTL: entries leave when the call is answered or ends.
pub const OUTBOUND_INFLIGHT: &str = "calls:outbound:inflight";
/// The Redis-time ms before which no outbound call may be placed (the cluster-wide
/// `OUTBOUND_CPS` pace and a 429's back-off); TTL: until then.
pub const OUTBOUND_PACE: &str = "calls:outbound:pace";

const OUTBOUND_PREFIX: &str = "calls:outbound:";
const OUTBOUND_IDEMPOTENCY_PREFIX: &str = "calls:outbound:idempotency:";
const TENANT_SLOTS_PREFIX: &str = "calls:tenant:";
const TENANT_SLOTS_SUFFIX: &str = ":slots";

pub fn state(call_sid: &CallSid) -> String {
    format!("calls:state:{call_sid}")
}

pub fn lock(call_sid: &CallSid) -> String {
    format!("calls:lock:{call_sid}")
}

pub fn replica(replica_id: &str) -> String {
    format!("calls:replica:{replica_id}")
}

/// The WhatsApp cooldown of one caller number (docs/reference.md#waiting-room).
pub fn whatsapp_sent(number: &str) -> String {
    format!("{WHATSAPP_SENT_PREFIX}{number}")
}

/// One outbound call's record (JSON; TTL 24 h while open, `CALL_STATE_TTL_SECS` once ended).
pub fn outbound(id: &OutboundId) -> String {
    format!("{OUTBOUND_PREFIX}{id}")
}

/// An `Idempotency-Key` of `POST /v1/calls` → the outbound id it created; TTL 24 h.
pub fn outbound_idempotency(key: &str) -> String {
    format!("{OUTBOUND_IDEMPOTENCY_PREFIX}{key}")
}

/// A tenant's live slots: a sorted set like `calls:slots` (member call SID, score lease deadline).
pub fn tenant_slots(tenant: &str) -> String {
    format!("{TENANT_SLOTS_PREFIX}{tenant}{TENANT_SLOTS_SUFFIX}")
}

/// Lua definitions prepended to every script, so the scripts build the keys they can only know
/// at run time (the tenant set of a slot a reclaim finds) from this file's spelling, not their own.
pub fn lua_key_header() -> String {
    format!(
        "local SLOT_TENANT_KEY = '{SLOT_TENANT}'\n\
         local TENANT_LIMITS_KEY = '{TENANT_LIMITS}'\n\
         local REJECTED_TENANT_LIMIT_KEY = '{STATS_REJECTED_TENANT_LIMIT}'\n\
         local RENEWED_UNTIL_KEY = '{RENEWED_UNTIL}'\n\
         local function tenant_slots_key(tenant)\n  \
           return '{TENANT_SLOTS_PREFIX}' .. tenant .. '{TENANT_SLOTS_SUFFIX}'\n\
         end\n\
         local function outbound_key(id)\n  \
           return '{OUTBOUND_PREFIX}' .. id\n\
         end\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_match_the_contract() {
        let sid = CallSid::parse("CA123").unwrap();
        assert_eq!(state(&sid), "calls:state:CA123");
        assert_eq!(lock(&sid), "calls:lock:CA123");
        assert_eq!(replica("calls-2"), "calls:replica:calls-2");
        assert_eq!(tenant_slots("AC9"), "calls:tenant:AC9:slots");
        assert_eq!(WAIT_CALLERS, "calls:wait:callers");
        assert_eq!(whatsapp_sent("+15550100"), "calls:whatsapp:sent:+15550100");
        assert!(lua_key_header().contains("'calls:tenant:' .. tenant .. ':slots'"));
        let id = OutboundId::parse("OB0123456789abcdef0123456789abcdef").unwrap();
        assert_eq!(
            outbound(&id),
            "calls:outbound:OB0123456789abcdef0123456789abcdef"
        );
        assert_eq!(outbound_idempotency("k1"), "calls:outbound:idempotency:k1");
        assert!(lua_key_header().contains("'calls:outbound:' .. id"));
    }
}
