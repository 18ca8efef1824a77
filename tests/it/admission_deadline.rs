//! Webhooks while Redis is stalled (docs/reference.md#admission-deadline), with a real replica
//! process and a real `redis-server` frozen by `SIGSTOP`: every webhook is answered within the
//! admission deadline with the reject mode, and none takes a slot when Redis runs what it held.

use std::time::{Duration, Instant};

use crate::helpers::*;
use testkit::RedisServer;

/// `kill -SIG pid`.
fn signal(redis: &RedisServer, name: &str) {
    let pid = redis.pid().expect("redis-server runs").to_string();
    let status = std::process::Command::new("kill")
        .args([name, &pid])
        .status()
        .expect("kill runs");
    assert!(status.success(), "kill {name} {pid}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_during_a_redis_stall_are_refused_in_time_and_take_no_slot() {
    let redis = RedisServer::start().unwrap();
    let replica = ReplicaEnv::new(redis.url(), 50).spawn("a");
    let voice_url = replica.url("/twilio/voice");
    let base = format!("http://{}", replica.addr());
    // One call in and out: the replica has met its Redis.
    assert_eq!(voice_at(&voice_url, &sid(0)).await.0, 200);
    assert_eq!(status_at(&base, &sid(0), "completed").await, 204);
    assert_eq!(active_count(&redis).await, 0);

    signal(&redis, "-STOP");
    let began = Instant::now();
    let webhooks: Vec<_> = (1..=20)
        .map(|n| {
            let url = voice_url.clone();
            tokio::spawn(async move {
                let (status, body) = voice_at(&url, &sid(n)).await;
                (status, body, began.elapsed())
            })
        })
        .collect();
    for webhook in webhooks {
        let (status, body, took) = webhook.await.unwrap();
        assert_eq!(status, 503, "{body}");
        assert!(body.contains("state store"), "{body}");
        // The deadline is 5 s; the rest is this machine's scheduling.
        assert!(took < Duration::from_secs(7), "answered after {took:?}");
    }
    // Redis goes on and runs everything it held.
    tokio::time::sleep(Duration::from_secs(8).saturating_sub(began.elapsed())).await;
    signal(&redis, "-CONT");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(redis_cli(&redis, &["ZCARD", "calls:slots"]).await, "0");
    assert_eq!(active_count(&redis).await, 0);
    assert_eq!(
        redis_cli(&redis, &["GET", "calls:stats:started"]).await,
        "1"
    );
    for n in 1..=20 {
        assert_eq!(
            redis_state(&redis, &sid(n)).await,
            serde_json::Value::Null,
            "call {n} left a reservation"
        );
    }
    let (_, metrics) = get_text(&replica.url("/metrics")).await;
    let refused = metric_value(
        &metrics,
        "calls_rejected_total{reason=\"store_unavailable\"}",
    );
    assert_eq!(refused, Some(20.0), "{metrics}");
    // And it admits again.
    assert_eq!(voice_at(&voice_url, &sid(30)).await.0, 200);
}
