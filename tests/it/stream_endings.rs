//! No stream goes on without its slot (docs/reference.md#media-stream): a final status callback
//! closes the call's stream at once where it is served and at the next renewal tick elsewhere; a
//! stolen lock ends it as `lock_lost`.

use std::time::Duration;

use crate::helpers::{Replica, ended_state, live_call, raw, sid, status_at};
use calls_core::state::{CallStatus, EndReason};
use prosaas_calls::config::StreamTimeouts;
use testkit::RedisServer;

const WAIT: Duration = Duration::from_secs(5);

fn ended_total(replica: &Replica, reason: &'static str) -> u64 {
    replica
        .app
        .metrics()
        .calls_ended
        .get_or_create(&[("reason", reason)])
        .get()
}

fn redis_active(redis: &RedisServer) -> (String, String) {
    (
        redis.cli(&["GET", "calls:active_count"]).unwrap(),
        redis.cli(&["ZCARD", "calls:slots"]).unwrap(),
    )
}

#[tokio::test]
async fn a_final_status_callback_closes_the_stream_where_it_is_served_at_once() {
    let mut config = raw(None, 10);
    // One tick at start-up, the next 20 s later: whatever closes the stream, no tick does.
    config.renew_interval_secs = Some("20".into());
    let replica = Replica::start(config, StreamTimeouts::default()).await;
    let mut bystander = live_call(&replica, 100).await;
    let mut call = live_call(&replica, 1).await;

    assert_eq!(status_at(&replica.url(""), &sid(1), "completed").await, 204);
    assert_eq!(call.close_code(WAIT).await, Some(1000));
    let state = ended_state(&replica, &sid(1)).await;
    assert_eq!(state.end_reason, Some(EndReason::StatusCallback));
    // Released once: the callback freed the slot, the stream's end found nothing more to free.
    let stats = replica.app.calls().store().stats().await.unwrap();
    assert_eq!(stats.active, 1, "only the bystander holds a slot");
    assert_eq!(ended_total(&replica, "status_callback"), 1);
    bystander.echo_round(3).await;
    bystander.stop(&sid(100)).await;
    replica.stop().await;
}

#[tokio::test]
async fn a_final_status_callback_to_another_replica_ends_the_stream_at_the_next_tick() {
    let redis = RedisServer::start().unwrap();
    let mut config = raw(Some(&redis), 10);
    config.replica_id = Some("serving".into());
    let serving = Replica::start(config, StreamTimeouts::default()).await;
    let mut config = raw(Some(&redis), 10);
    config.replica_id = Some("other".into());
    let other = Replica::start(config, StreamTimeouts::default()).await;
    let mut bystander = live_call(&serving, 100).await;
    let mut call = live_call(&serving, 1).await;
    assert_eq!(redis_active(&redis), ("2".into(), "2".into()));

    assert_eq!(status_at(&other.url(""), &sid(1), "completed").await, 204);
    assert!(other.app.calls().live().is_empty());
    // The serving replica learns it from Redis at its next tick (every 0.2 s here).
    assert_eq!(call.close_code(WAIT).await, Some(1000));
    let state = ended_state(&serving, &sid(1)).await;
    assert_eq!(state.end_reason, Some(EndReason::StatusCallback));
    assert_eq!(ended_total(&serving, "status_callback"), 1);
    // Released once, cluster-wide: the callback on one replica and the stream's end on the other
    // leave exactly the bystander's slot.
    assert_eq!(redis_active(&redis), ("1".into(), "1".into()));
    bystander.echo_round(3).await;
    assert_eq!(redis_active(&redis), ("1".into(), "1".into()));
    bystander.stop(&sid(100)).await;
    other.stop().await;
    serving.stop().await;
}

#[tokio::test]
async fn a_stolen_lock_ends_the_stream_as_lock_lost_at_the_next_tick() {
    let redis = RedisServer::start().unwrap();
    let replica = Replica::start(raw(Some(&redis), 10), StreamTimeouts::default()).await;
    let mut bystander = live_call(&replica, 100).await;
    let mut call = live_call(&replica, 1).await;
    let lock = format!("calls:lock:{}", sid(1));
    assert_ne!(redis.cli(&["GET", &lock]).unwrap(), "");

    // Another stream owns the call now.
    redis
        .cli(&["SET", &lock, "elsewhere/0/0", "PX", "60000"])
        .unwrap();
    assert_eq!(call.close_code(WAIT).await, Some(1008));
    assert_eq!(ended_total(&replica, "lock_lost"), 1);
    assert_eq!(replica.app.calls().live().len(), 1, "only the bystander");
    // The call is the lock owner's now: its lock, its slot and its state are left to it.
    assert_eq!(redis.cli(&["GET", &lock]).unwrap(), "elsewhere/0/0");
    assert_eq!(redis_active(&redis), ("2".into(), "2".into()));
    let state = replica
        .app
        .calls()
        .store()
        .read_state(&calls_core::call_sid::CallSid::parse(&sid(1)).unwrap())
        .await
        .unwrap()
        .expect("state kept");
    assert_eq!(state.status, CallStatus::Active);
    bystander.echo_round(3).await;
    bystander.stop(&sid(100)).await;
    replica.stop().await;
}
