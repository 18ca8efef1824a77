//! Self-healing with real processes (docs/reference.md#admission, #drain): replicas are the built
//! binary, Redis is a real redis-server; tests kill -9, pause, restart and stop them and watch the
//! cluster converge.

use std::time::Duration;

use crate::helpers::*;
use serde_json::Value;
use testkit::{RedisServer, ReplicaProcess};

const LEASE_SECS: u64 = 3;
const TICK_SECS: u64 = 1;

/// This file's replicas: short leases and ticks.
fn replicas(redis: &RedisServer, limit: u64) -> ReplicaEnv {
    ReplicaEnv::new(redis.url(), limit).leases(LEASE_SECS, TICK_SECS, 5)
}

/// Waits out the recovery wait after Redis lost its data (docs/reference.md#admission:
/// `calls:epoch` holds the Redis-time ms at which admissions reopen). A brand-new Redis has none:
/// it admits at once.
async fn wait_recovery_over(redis: &RedisServer) {
    let opened = eventually(CONVERGE, || async {
        let opens: u64 = redis_cli(redis, &["GET", "calls:epoch"])
            .await
            .parse()
            .ok()?;
        let time = redis_cli(redis, &["TIME"]).await;
        let mut parts = time.lines();
        let secs: u64 = parts.next()?.parse().ok()?;
        let micros: u64 = parts.next()?.parse().ok()?;
        (secs * 1000 + micros / 1000 >= opens).then_some(())
    })
    .await;
    assert!(opened.is_some(), "admissions never opened");
}

/// Two replicas with calls 1 and 2 live on the first, 3 and 4 on the second.
async fn two_replicas_four_calls(
    redis: &RedisServer,
    limit: u64,
) -> (ReplicaProcess, ReplicaProcess, Vec<TwilioStream>) {
    let a = replicas(redis, limit).spawn("a");
    let b = replicas(redis, limit).spawn("b");
    let calls = vec![
        open_call(&a, 1).await,
        open_call(&a, 2).await,
        open_call(&b, 3).await,
        open_call(&b, 4).await,
    ];
    (a, b, calls)
}

async fn get_json(url: &str) -> (u16, Value) {
    let response = client().get(url).send().await.unwrap();
    let status = response.status().as_u16();
    let body = response.text().await.unwrap_or_default();
    (status, serde_json::from_str(&body).unwrap_or(Value::Null))
}

async fn status_of(url: &str) -> u16 {
    client().get(url).send().await.unwrap().status().as_u16()
}

/// Generous on purpose: a loaded 2-core CI box may be seconds late; the invariant (the exact count,
/// never above the limit, never a live call dropped) is what these tests assert, not the speed.
const CONVERGE: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_frees_the_dead_replicas_slots_within_a_lease() {
    let redis = RedisServer::start().unwrap();
    let mut doomed = replicas(&redis, 7).spawn("doomed");
    let survivor = replicas(&redis, 7).spawn("survivor");
    let mut dying = Vec::new();
    for n in 0..5 {
        dying.push(open_call(&doomed, n).await);
    }
    let mut living = vec![
        open_call(&survivor, 10).await,
        open_call(&survivor, 11).await,
    ];
    assert_eq!(active_count(&redis).await, 7);
    assert_eq!(
        voice_at(&survivor.url("/twilio/voice"), &sid(20)).await.0,
        503
    );

    doomed.kill9();
    for stream in &mut dying {
        assert!(
            stream.closed_within(Duration::from_secs(10)).await,
            "a dead replica's stream stayed open"
        );
    }
    // The survivor's calls never notice, and its ticks reclaim the dead replica's slots: the count
    // falls to exactly the survivor's two calls, never below them.
    let mut converged = false;
    let deadline = std::time::Instant::now() + CONVERGE;
    while std::time::Instant::now() < deadline {
        for stream in &mut living {
            stream.echo_round(1).await;
        }
        let count = active_count(&redis).await;
        assert!(count >= 2, "a live call was dropped: count {count}");
        if count == 2 {
            converged = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        converged,
        "count still {} after {CONVERGE:?}",
        active_count(&redis).await
    );
    let state = redis_state(&redis, &sid(0)).await;
    assert_eq!(state["end_reason"], "lease_expired", "{state}");
    // The freed slots are usable again.
    for n in 30..35 {
        assert_eq!(
            voice_at(&survivor.url("/twilio/voice"), &sid(n)).await.0,
            200
        );
    }
    assert_eq!(
        voice_at(&survivor.url("/twilio/voice"), &sid(40)).await.0,
        503
    );
    for stream in &mut living {
        stream.echo_round(2).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restarted_empty_gets_every_live_call_back_within_a_tick() {
    let mut redis = RedisServer::start().unwrap();
    let (_a, _b, mut calls) = two_replicas_four_calls(&redis, 10).await;
    assert_eq!(active_count(&redis).await, 4);
    redis.restart_empty().unwrap();
    assert_eq!(redis_cli(&redis, &["EXISTS", "calls:slots"]).await, "0");
    let restarted = std::time::Instant::now();
    // Echo goes on untouched while the replicas re-register.
    for stream in &mut calls {
        stream.echo_round(1).await;
    }
    // Exactly the four live calls come back: none lost, none counted twice.
    count_converges(&redis, 4, 0..=4, CONVERGE).await;
    eprintln!("re-registered after {:?}", restarted.elapsed());
    for n in 1..=4 {
        let state = redis_state(&redis, &sid(n)).await;
        assert_eq!(state["status"], "active", "call {n}: {state}");
        assert_eq!(
            redis_cli(&redis, &["EXISTS", &format!("calls:lock:{}", sid(n))]).await,
            "1"
        );
    }
    assert_eq!(redis_cli(&redis, &["ZCARD", "calls:slots"]).await, "4");
    for stream in &mut calls {
        stream.echo_round(2).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_redis_data_loss_new_calls_wait_for_live_ones_to_reregister() {
    let mut redis = RedisServer::start().unwrap();
    let (a, b, mut calls) = two_replicas_four_calls(&redis, 5).await;
    redis.restart_empty().unwrap();
    // Ten webhooks race at once, through both replicas, right after the loss.
    let admitted = race_webhooks(&[&a, &b], 100..110).await;
    assert!(
        admitted <= 1,
        "{admitted} admitted while live calls re-registered"
    );
    wait_recovery_over(&redis).await;
    count_converges(&redis, 4 + admitted, 0..=5, CONVERGE).await;
    // Once open, the one free slot goes to exactly one of ten more racers.
    let later = race_webhooks(&[&a, &b], 200..210).await;
    assert_eq!(admitted + later, 1, "exactly the one free slot is taken");
    assert_eq!(active_count(&redis).await, 5);
    for stream in &mut calls {
        stream.echo_round(1).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_live_calls_go_on_and_admission_comes_back() {
    let mut redis = RedisServer::start().unwrap();
    let replica = replicas(&redis, 10).spawn("solo");
    let mut calls = vec![open_call(&replica, 1).await, open_call(&replica, 2).await];
    redis.stop();
    for _ in 0..3 {
        for stream in &mut calls {
            stream.echo_round(5).await;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert_eq!(
        voice_at(&replica.url("/twilio/voice"), &sid(3)).await.0,
        503
    );
    assert_eq!(status_of(&replica.url("/readyz")).await, 503);
    let (status, metrics) = get_json(&replica.url("/metrics.json")).await;
    assert_eq!(status, 503);
    assert_eq!(metrics["replica"]["calls_active"], 2);

    redis.start_again().unwrap();
    let ready = eventually(CONVERGE, || async {
        (status_of(&replica.url("/readyz")).await == 200).then_some(())
    })
    .await;
    assert!(ready.is_some(), "ready again without a restart");
    count_converges(&redis, 2, 0..=2, CONVERGE).await;
    wait_recovery_over(&redis).await;
    assert_eq!(
        voice_at(&replica.url("/twilio/voice"), &sid(3)).await.0,
        200
    );
    for stream in &mut calls {
        stream.echo_round(2).await;
    }
    let log = replica.log();
    assert!(log.contains("re-registered"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_replica_reregisters_its_calls_and_nothing_new_gets_in() {
    let redis = RedisServer::start().unwrap();
    let paused = replicas(&redis, 4).spawn("paused");
    let other = replicas(&redis, 4).spawn("other");
    let mut sleepers = Vec::new();
    for n in 0..3 {
        sleepers.push(open_call(&paused, n).await);
    }
    paused.signal("STOP").unwrap();
    // The other replica's ticks reclaim the paused one's lapsed slots...
    count_converges(&redis, 0, 0..=3, CONVERGE).await;
    // ...and new calls take them.
    let mut newcomers = Vec::new();
    for n in 10..13 {
        newcomers.push(open_call(&other, n).await);
    }
    assert_eq!(active_count(&redis).await, 3);
    paused.signal("CONT").unwrap();
    // A live call is never dropped by the limiter: the paused replica's calls come back, and
    // nothing else gets in while the count is above the limit.
    count_converges(&redis, 6, 3..=6, CONVERGE).await;
    assert_eq!(voice_at(&other.url("/twilio/voice"), &sid(50)).await.0, 503);
    assert_eq!(
        voice_at(&paused.url("/twilio/voice"), &sid(51)).await.0,
        503
    );
    for stream in sleepers.iter_mut().chain(newcomers.iter_mut()) {
        stream.echo_round(1).await;
    }
    let metrics = client()
        .get(paused.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(
        metric_value(&metrics, "calls_reregistered_total"),
        Some(3.0),
        "{metrics}"
    );
    let over_limit = metric_value(&metrics, "calls_over_limit_events_total")
        .expect("calls_over_limit_events_total is exported");
    assert!(over_limit >= 1.0, "{metrics}");
    let log = paused.log();
    assert!(log.contains("above its limit"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_longer_than_the_state_ttl_keeps_its_state() {
    let redis = RedisServer::start().unwrap();
    let replica = replicas(&redis, 5)
        .with("CALL_STATE_TTL_SECS", 2)
        .spawn("solo");
    let mut call = open_call(&replica, 1).await;
    let key = format!("calls:state:{}", sid(1));
    for _ in 0..10 {
        call.echo_round(2).await;
        tokio::time::sleep(Duration::from_millis(400)).await;
        let ttl: i64 = redis_cli(&redis, &["TTL", &key]).await.parse().unwrap();
        assert!(ttl > 0, "state expired during the call (TTL {ttl})");
    }
    call.stop(&sid(1)).await;
    let ended = eventually(CONVERGE, || async {
        let state = redis_state(&redis, &sid(1)).await;
        (state["status"] == "ended").then_some(state)
    })
    .await
    .expect("final state written");
    assert_eq!(ended["frames_in"], 21, "{ended}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_live_calls_then_exits_zero() {
    let redis = RedisServer::start().unwrap();
    let mut replica = replicas(&redis, 5)
        .with("DRAIN_TIMEOUT_SECS", 30)
        .spawn("drainer");
    let mut call = open_call(&replica, 1).await;
    replica.signal("TERM").unwrap();
    let unready = eventually(CONVERGE, || async {
        (status_of(&replica.url("/readyz")).await == 503).then_some(())
    })
    .await;
    assert!(unready.is_some(), "readiness drops at once");
    assert_eq!(
        voice_at(&replica.url("/twilio/voice"), &sid(2)).await.0,
        503
    );
    let (_, metrics) = get_json(&replica.url("/metrics.json")).await;
    assert_eq!(metrics["replica"]["draining"], true);
    // The live call goes on while draining.
    call.echo_round(10).await;
    call.stop(&sid(1)).await;
    let code = tokio::task::spawn_blocking(move || {
        let code = replica.wait_exit(Duration::from_secs(10));
        (code, replica)
    })
    .await
    .unwrap();
    assert_eq!(code.0.unwrap(), Some(0));
    assert_eq!(active_count(&redis).await, 0);
    let state = redis_state(&redis, &sid(1)).await;
    assert_eq!(state["end_reason"], "stop", "{state}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_timeout_ends_remaining_calls_and_hands_them_over() {
    let redis = RedisServer::start().unwrap();
    let mut replica = replicas(&redis, 5)
        .with("DRAIN_TIMEOUT_SECS", 1)
        .spawn("impatient");
    let mut call = open_call(&replica, 1).await;
    replica.signal("INT").unwrap();
    assert_eq!(call.close_code(Duration::from_secs(5)).await, Some(1001));
    let code = tokio::task::spawn_blocking(move || replica.wait_exit(Duration::from_secs(10)))
        .await
        .unwrap();
    assert_eq!(code.unwrap(), Some(0));
    // Handed over (docs/reference.md#hand-over): the slot waits for the call's new stream.
    assert_eq!(active_count(&redis).await, 1);
    let state = redis_state(&redis, &sid(1)).await;
    assert_eq!(state["end_reason"], "drain_timeout", "{state}");
}
