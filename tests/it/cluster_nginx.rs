//! The production topology end to end with real processes: a redis-server, three replicas of the built
//! binary, and a real nginx rendered from deploy/nginx's template; every call goes through nginx.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::helpers::*;
use futures_util::future::join_all;
use serde_json::Value;
use testkit::nginx::NginxProcess;
use testkit::{RedisServer, ReplicaProcess};

const LIMIT: usize = 50;
const TICK: Duration = Duration::from_secs(1);
const LEASE: Duration = Duration::from_secs(3);
/// Reservations outlast any burst, however slow the box: the burst's exact count then holds
/// whatever its speed (each admitted call is released by its status callback right after).
const RESERVATION: Duration = Duration::from_secs(120);
const REPLICAS: usize = 3;
const STREAMS: usize = 20;
/// Generous on purpose: a loaded 2-core CI box may be seconds late; the invariant (the exact count,
/// no over-admission, no live call dropped) is asserted, not the speed.
const CONVERGE: Duration = Duration::from_secs(30);

async fn cli(redis: &RedisServer, args: &[&str]) -> String {
    redis_cli(redis, args).await
}

async fn replica_metrics(replica: &ReplicaProcess) -> Value {
    let body = client()
        .get(replica.url("/metrics.json"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics body");
    serde_json::from_str(&body).expect("metrics JSON")
}

/// Which replica serves a call, from its state in Redis (as an operator would read it).
async fn state_of(redis: &RedisServer, call_sid: &str) -> Value {
    redis_state(redis, call_sid).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_replicas_behind_nginx() {
    let nginx_bin = nginx_binary();
    let began = Instant::now();
    let redis = RedisServer::start_tcp().expect("redis-server");
    let env = [
        ("REDIS_URL", redis.url()),
        ("MAX_CONCURRENT_CALLS", LIMIT.to_string()),
        ("RENEW_INTERVAL_SECS", TICK.as_secs().to_string()),
        ("CALL_LEASE_SECS", LEASE.as_secs().to_string()),
        ("RESERVATION_SECS", RESERVATION.as_secs().to_string()),
    ];
    let binary = Path::new(env!("CARGO_BIN_EXE_prosaas-calls"));
    let mut replicas: Vec<ReplicaProcess> = (1..=REPLICAS)
        .map(|i| ReplicaProcess::spawn(binary, &format!("calls-{i}"), &env).expect("replica"))
        .collect();
    let ports: Vec<u16> = replicas.iter().map(|r| r.port).collect();
    let nginx = NginxProcess::start(&nginx_bin, &ports).expect("nginx");

    burst_of_webhooks(&redis, &nginx, &replicas).await;
    let streams = live_streams(&redis, &nginx, &replicas).await;
    crash_one_replica(&redis, &nginx, &mut replicas, streams).await;
    eprintln!("three_replicas_behind_nginx: {:?}", began.elapsed());
}

/// 300 concurrent webhooks through nginx: exactly LIMIT admitted across three replicas, the rest
/// refused with 503; then every admitted call is released by its status callback.
async fn burst_of_webhooks(redis: &RedisServer, nginx: &NginxProcess, replicas: &[ReplicaProcess]) {
    let base = nginx.url("");
    let voice_url = nginx.url("/twilio/voice");
    let calls: Vec<String> = (0..300).map(|n| sid(100_000 + n)).collect();
    let started = Instant::now();
    let answers = join_all(calls.iter().map(|call| voice_at(&voice_url, call))).await;
    let burst = started.elapsed();
    let stream_url = format!("ws://127.0.0.1:{}/twilio/stream", nginx.port);
    let mut admitted = Vec::new();
    let mut refused = 0;
    for (call, (status, body)) in calls.iter().zip(&answers) {
        match status {
            200 => {
                assert_eq!(stream_url_of(body), stream_url, "{body}");
                admitted.push(call.clone());
            }
            503 => refused += 1,
            other => panic!(
                "webhook {call}: HTTP {other}: {body}\n{}",
                nginx.error_log()
            ),
        }
    }
    assert_eq!(admitted.len(), LIMIT, "admitted");
    assert_eq!(refused, 300 - LIMIT, "refused");
    assert_eq!(active_count(redis).await, LIMIT as u64);
    assert_eq!(
        cli(redis, &["GET", "calls:stats:rejected_max_concurrent"]).await,
        (300 - LIMIT).to_string()
    );
    // Every replica took part, and their own counts add up to the cluster's.
    let metrics = join_all(replicas.iter().map(replica_metrics)).await;
    let started_each: Vec<u64> = metrics
        .iter()
        .map(|m| m["replica"]["calls_started"].as_u64().unwrap())
        .collect();
    assert_eq!(started_each.iter().sum::<u64>(), LIMIT as u64);
    let rejected: u64 = metrics
        .iter()
        .map(|m| {
            m["replica"]["calls_rejected_max_concurrent"]
                .as_u64()
                .unwrap()
        })
        .sum();
    assert_eq!(rejected, (300 - LIMIT) as u64);
    eprintln!("burst of 300 webhooks in {burst:?}; slots taken per replica {started_each:?}");

    let released = join_all(
        admitted
            .iter()
            .map(|call| status_at(&base, call, "completed")),
    )
    .await;
    assert!(released.iter().all(|&s| s == 204), "{released:?}");
    assert_eq!(active_count(redis).await, 0);
}

struct Live {
    call_sid: String,
    replica: String,
    stream: TwilioStream,
}

/// STREAMS calls through nginx: webhook, stream, echo; they spread over more than one replica.
async fn live_streams(
    redis: &RedisServer,
    nginx: &NginxProcess,
    replicas: &[ReplicaProcess],
) -> Vec<Live> {
    let mut live = Vec::new();
    for n in 0..STREAMS {
        let call_sid = sid(200_000 + n);
        let (status, body) = voice_at(&nginx.url("/twilio/voice"), &call_sid).await;
        assert_eq!(status, 200, "{body}");
        let mut stream = TwilioStream::connect(&stream_url_of(&body)).await;
        stream.connected().await;
        stream.start(&call_sid).await;
        stream.echo_round(3).await;
        live.push(Live {
            call_sid,
            replica: String::new(),
            stream,
        });
    }
    for call in &mut live {
        let state = state_of(redis, &call.call_sid).await;
        assert_eq!(state["status"], "active", "{state}");
        call.replica = state["replica"].as_str().unwrap().to_owned();
    }
    let per_replica: Vec<u64> = join_all(replicas.iter().map(replica_metrics))
        .await
        .iter()
        .map(|m| m["replica"]["calls_active"].as_u64().unwrap())
        .collect();
    assert_eq!(per_replica.iter().sum::<u64>(), STREAMS as u64);
    assert!(
        per_replica.iter().filter(|&&n| n > 0).count() >= 2,
        "least_conn should spread streams: {per_replica:?}"
    );
    assert_eq!(active_count(redis).await, STREAMS as u64);
    eprintln!("{STREAMS} streams through nginx, live per replica {per_replica:?}");
    live
}

/// `kill -9` the busiest replica mid-call: its streams close, the cluster count drops to the
/// survivors' calls within lease + one tick, and the survivors echo throughout.
async fn crash_one_replica(
    redis: &RedisServer,
    nginx: &NginxProcess,
    replicas: &mut [ReplicaProcess],
    live: Vec<Live>,
) {
    let victim_index = (0..replicas.len())
        .max_by_key(|&i| live.iter().filter(|c| c.replica == replicas[i].id).count())
        .unwrap();
    let victim_id = replicas[victim_index].id.clone();
    let (doomed, survivors): (Vec<Live>, Vec<Live>) =
        live.into_iter().partition(|c| c.replica == victim_id);
    assert!(!doomed.is_empty() && !survivors.is_empty());

    // The survivors echo a frame every 100 ms until told to stop; any missed echo fails the task.
    let stop = Arc::new(AtomicBool::new(false));
    let echoing: Vec<_> = survivors
        .into_iter()
        .map(|mut call| {
            let stop = stop.clone();
            tokio::spawn(async move {
                let mut rounds = 0u32;
                while !stop.load(Ordering::Relaxed) {
                    call.stream.echo_round(1).await;
                    rounds += 1;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                (call, rounds)
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;

    let killed_at = Instant::now();
    replicas[victim_index].kill9();
    let expected = (STREAMS - doomed.len()) as u64;
    // Both at once, so the convergence time is measured from the kill, not from the last close.
    // The count falls to exactly the survivors' calls and never below them (none is dropped).
    let (closed, ()) = tokio::join!(
        join_all(doomed.into_iter().map(|mut call| async move {
            let closed = call.stream.closed_within(Duration::from_secs(10)).await;
            (call.call_sid, closed)
        })),
        count_converges(redis, expected, expected..=STREAMS as u64, CONVERGE)
    );
    let took = killed_at.elapsed();
    for (call_sid, closed) in &closed {
        assert!(
            closed,
            "{call_sid}: its stream stayed open after its replica was killed"
        );
    }
    eprintln!(
        "kill -9 {victim_id}: {} streams closed, count {expected} after {took:?}",
        closed.len()
    );
    for (call_sid, _) in &closed {
        let state = state_of(redis, call_sid).await;
        assert_eq!(state["status"], "ended", "{state}");
        assert_eq!(state["end_reason"], "lease_expired", "{state}");
    }

    // A tick and a half later the survivors still hold every slot they had.
    tokio::time::sleep(TICK + TICK / 2).await;
    assert_eq!(active_count(redis).await, expected);

    // New calls still get through: nginx skips the dead replica (connection refused, retried).
    let base = nginx.url("");
    let voice_url = nginx.url("/twilio/voice");
    let fresh: Vec<String> = (0..6).map(|n| sid(300_000 + n)).collect();
    for (status, body) in join_all(fresh.iter().map(|c| voice_at(&voice_url, c))).await {
        assert_eq!(status, 200, "{body}\n{}", nginx.error_log());
    }
    let released = join_all(fresh.iter().map(|c| status_at(&base, c, "completed"))).await;
    assert!(released.iter().all(|&s| s == 204));

    stop.store(true, Ordering::Relaxed);
    for task in join_all(echoing).await {
        let (mut call, rounds) = task.expect("a survivor's stream stopped echoing");
        // Echoing went on across the kill and the convergence (a missed echo panics the task).
        assert!(rounds >= 3, "{}: only {rounds} echo rounds", call.call_sid);
        call.stream.stop(&call.call_sid).await;
    }
    count_converges(redis, 0, 0..=expected, CONVERGE).await;
}
