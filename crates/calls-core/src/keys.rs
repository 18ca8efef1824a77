//! The Redis key space of SPEC §4: every key the service reads or writes is named here and nowhere else.
//! Keys have no braces: `calls:state:CA123…`, exactly as operators type them into `redis-cli`.

use crate::call_sid::CallSid;

/// Live slots, cluster-wide; always equal to `ZCARD calls:slots` after every script.
pub const ACTIVE_COUNT: &str = "calls:active_count";
/// Sorted set of live calls: member = call SID, score = lease deadline in ms of Redis `TIME`.
pub const SLOTS: &str = "calls:slots";
pub const STATS_STARTED: &str = "calls:stats:started";
pub const STATS_REJECTED_MAX_CONCURRENT: &str = "calls:stats:rejected_max_concurrent";
/// Created by the first script on a brand-new Redis; each replica remembers the value it saw.
/// Missing or changed under a replica that saw one: Redis lost its data. Value: the Redis-time ms
/// at which admissions (re)open, so live calls can re-register first (SPEC §4).
pub const EPOCH: &str = "calls:epoch";

pub fn state(call_sid: &CallSid) -> String {
    format!("calls:state:{call_sid}")
}

pub fn lock(call_sid: &CallSid) -> String {
    format!("calls:lock:{call_sid}")
}

pub fn replica(replica_id: &str) -> String {
    format!("calls:replica:{replica_id}")
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
    }
}
