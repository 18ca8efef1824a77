//! Recovery with real processes (docs/reference.md#admission): a brand-new Redis admits at once,
//! and a Redis that comes back with its data after an outage longer than a lease over-admits nobody
//! while calls re-register.

use std::time::{Duration, Instant};

use crate::helpers::*;
use testkit::{RedisServer, ReplicaProcess};

const LEASE_SECS: u64 = 3;
const TICK_SECS: u64 = 1;

/// The Redis-time ms at which admissions (re)open, and Redis' clock now.
fn epoch_and_now(redis: &RedisServer) -> Option<(u64, u64)> {
    let opens: u64 = redis.cli(&["GET", "calls:epoch"]).ok()?.parse().ok()?;
    let time = redis.cli(&["TIME"]).ok()?;
    let mut parts = time.lines();
    let secs: u64 = parts.next()?.trim().parse().ok()?;
    let micros: u64 = parts.next()?.trim().parse().ok()?;
    Some((opens, secs * 1000 + micros / 1000))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_deploy_admits_the_first_webhook_on_every_replica_at_once() {
    let redis = RedisServer::start().unwrap();
    // Production's tick (10 s): the old hold-off would refuse for 15 s after the first script.
    let replicas: Vec<ReplicaProcess> = (1..=3)
        .map(|i| ReplicaEnv::new(redis.url(), 10).spawn(&format!("calls-{i}")))
        .collect();
    // One try each, no retry: the old hold-off answered these with 503 for 15 s.
    for (i, replica) in replicas.iter().enumerate() {
        let (status, twiml) = voice_at(&replica.url("/twilio/voice"), &sid(i)).await;
        assert_eq!(status, 200, "first webhook on {}: {twiml}", replica.id);
        assert!(twiml.contains("<Stream"), "{twiml}");
    }
    assert_eq!(active_count(&redis).await, 3);
    let (opens, now) = epoch_and_now(&redis).expect("the first script created calls:epoch");
    assert!(
        opens <= now,
        "no wait on a brand-new Redis: opens {opens}, now {now}"
    );
    for replica in &replicas {
        let metrics = client()
            .get(replica.url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(metrics.contains("calls_started_total 1"), "{metrics}");
        // Counters by reason appear on first use: none may say a call waited for recovery.
        let recovering: Vec<&str> = metrics
            .lines()
            .filter(|l| l.starts_with("calls_rejected_total{reason=\"recovering\"}"))
            .filter(|l| !l.ends_with(" 0"))
            .collect();
        assert!(recovering.is_empty(), "{recovering:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_back_with_its_data_after_longer_than_a_lease_over_admits_nobody() {
    const LIMIT: u64 = 5;
    let mut redis = RedisServer::start_append_only().unwrap();
    let replicas = ReplicaEnv::new(redis.url(), LIMIT).leases(LEASE_SECS, TICK_SECS, 5);
    let a = replicas.spawn("a");
    let b = replicas.spawn("b");
    let mut calls = vec![
        open_call(&a, 1).await,
        open_call(&a, 2).await,
        open_call(&b, 3).await,
        open_call(&b, 4).await,
    ];
    assert_eq!(active_count(&redis).await, 4);

    redis.stop();
    // Longer than a lease: every slot's deadline passes while Redis is away. Calls go on.
    let away = Instant::now();
    while away.elapsed() < Duration::from_secs(LEASE_SECS + 2) {
        for stream in &mut calls {
            stream.echo_round(1).await;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The replicas are paused while Redis comes back, so what it restored is read before either
    // replica's first tick reclaims the other's lapsed slots (by design) and re-adds only its own.
    a.signal("STOP").unwrap();
    b.signal("STOP").unwrap();
    redis.start_again().unwrap();
    let restored = redis.cli(&["ZCARD", "calls:slots"]).unwrap();
    a.signal("CONT").unwrap();
    b.signal("CONT").unwrap();
    assert_eq!(
        restored, "4",
        "Redis came back with its data (append-only file)"
    );

    // Ten webhooks race at once, through both replicas, before the live calls' next tick: the
    // lapsed slots are live calls, so at most the one free slot may go.
    let admitted = race_webhooks(&[&a, &b], 100..110).await;
    assert!(
        admitted <= 1,
        "{admitted} admitted while live calls re-registered"
    );
    let count = eventually(Duration::from_secs(10), || async {
        Some(active_count(&redis).await).filter(|n| *n == 4 + admitted)
    })
    .await;
    assert_eq!(count, Some(4 + admitted), "live calls re-registered");
    for n in 1..=4 {
        let score = redis.cli(&["ZSCORE", "calls:slots", &sid(n)]).unwrap();
        assert!(!score.is_empty(), "call {n} holds its slot again");
    }

    // Once the wait is over, the one free slot (if still free) goes to exactly one racer.
    let over = eventually(Duration::from_secs(10), || async {
        epoch_and_now(&redis).filter(|(opens, now)| now >= opens)
    })
    .await;
    assert!(over.is_some(), "the recovery wait never ended");
    for replica in [&a, &b] {
        let (status, body) = get_text(&replica.url("/readyz")).await;
        assert_eq!(status, 200, "{}: {body}", replica.id);
    }
    let later = race_webhooks(&[&a, &b], 200..210).await;
    assert_eq!(admitted + later, 1, "exactly the one free slot is taken");
    assert_eq!(active_count(&redis).await, LIMIT);
    for stream in &mut calls {
        stream.echo_round(1).await;
    }
    let logs = format!("{}{}", a.log(), b.log());
    assert!(logs.contains("live calls re-register now"), "{logs}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_data_loss_live_calls_reregister_at_once_not_at_the_next_tick() {
    let mut redis = RedisServer::start().unwrap();
    // A tick so long that none falls inside the test after the replicas' first: whatever
    // re-registers the calls below is the immediate renewal, not the interval.
    let slow_ticks = ReplicaEnv::new(redis.url(), 10).leases(300, 100, 400);
    let a = slow_ticks.spawn("a");
    let b = slow_ticks.spawn("b");
    let mut calls = vec![
        open_call(&a, 1).await,
        open_call(&a, 2).await,
        open_call(&b, 3).await,
    ];
    assert_eq!(active_count(&redis).await, 3);
    redis.restart_empty().unwrap();

    // A readiness probe is all each replica needs to find Redis restarted and lost; while the
    // recovery wait is open it says so (docs/reference.md#readiness).
    for replica in [&a, &b] {
        let recovering = eventually(Duration::from_secs(10), || async {
            let (status, body) = get_text(&replica.url("/readyz")).await;
            (status == 503 && body.contains("recovering")).then_some(body)
        })
        .await;
        assert!(
            recovering.is_some(),
            "{}: /readyz names the recovery wait",
            replica.id
        );
    }
    let back = eventually(Duration::from_secs(10), || async {
        Some(active_count(&redis).await).filter(|n| *n == 3)
    })
    .await;
    assert_eq!(
        back,
        Some(3),
        "live calls re-registered long before the next tick"
    );
    for n in 1..=3 {
        let lock = redis
            .cli(&["EXISTS", &format!("calls:lock:{}", sid(n))])
            .unwrap();
        assert_eq!(lock, "1", "call {n} holds its lock again");
    }
    // And new calls wait meanwhile (the recovery wait is 1.5 of these long ticks).
    assert_eq!(voice_at(&a.url("/twilio/voice"), &sid(9)).await.0, 503);
    for stream in &mut calls {
        stream.echo_round(1).await;
    }
}
