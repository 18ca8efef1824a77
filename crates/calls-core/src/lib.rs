//! calls-core: the life of a call behind a cluster-wide limit, with no HTTP, sockets or drain in it.
//! The server drives it; tests and benches drive it directly against a real Redis.
//!
//! # Layout
//!
//! - [`call_sid`]: the validated Twilio call SID every key and log line is built from.
//! - [`keys`]: the Redis key space; the only place a key is spelled.
//! - [`state`]: the per-call state JSON and its end reasons.
//! - [`store`]: one [`store::CallStore`] trait; `memory` (in-process) and `redis` (Lua scripts in
//!   `src/lua/`, loaded at start-up and after every reconnect, called by SHA); its recovery watch
//!   decides when live calls re-register at once and new admissions wait
//!   (docs/reference.md#admission).
//! - [`live_calls`]: the streams live on this replica, with lock-free per-frame counters.
//! - [`calls`]: the call lifecycle as [`calls::Calls`]: admit, start, end, status, renew.
//! - [`outbound`]: outbound calls' records, their queue and the dial step's rules
//!   (docs/reference.md#outbound).
//! - [`outbound_id`]: the outbound call id.
//! - [`reject`]: why a call is turned away ([`reject::RejectReason`]).
//! - [`tenant`]: which tenant a call belongs to (`TENANT_KEY`, docs/reference.md#tenants).
//! - [`wait`]: the waiting room's fair order and the answers of one step in line
//!   (docs/reference.md#waiting-room).
//! - [`events`]: what the lifecycle reports (refusals, store errors, timings) to whoever counts it.

#![forbid(unsafe_code)]

pub mod call_sid;
pub mod calls;
pub mod events;
pub mod keys;
pub mod live_calls;
pub mod outbound;
pub mod outbound_id;
mod reject;
pub mod state;
pub mod store;
pub mod tenant;
pub mod wait;
