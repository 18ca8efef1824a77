//! Redis out of reach (docs/reference.md#admission, whose loss opens the admission wait): one
//! replica cut off from Redis while the others go on pauses no one's admissions and costs its
//! callers nothing; Redis cut off from every replica opens the wait when it comes back, and the
//! count never passes the limit.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use testkit::netns::{Host, Network};
use testkit::{RedisServer, ReplicaProcess};
use tokio_util::sync::CancellationToken;

use super::*;
use crate::helpers::*;

const LIMIT: u64 = 4;

/// How long a cut lasts: longer than a lease, so every slot of the cut-off side lapses.
const CUT: Duration = Duration::from_secs(5);

/// Redis and two replicas, `a` and `b`, each on a host of its own.
struct Cluster {
    net: Network,
    redis_host: Host,
    a_host: Host,
    b_host: Host,
    redis: RedisServer,
    a: ReplicaProcess,
    b: ReplicaProcess,
}

fn cluster(test: &str) -> Option<Cluster> {
    let net = network(test)?;
    let redis_host = net.host("redis").unwrap();
    let (a_host, b_host) = (net.host("a").unwrap(), net.host("b").unwrap());
    let redis = RedisServer::start_on(&redis_host).unwrap();
    let a = replica_on(&a_host, "a", &redis.url(), LIMIT, &[]);
    let b = replica_on(&b_host, "b", &redis.url(), LIMIT, &[]);
    Some(Cluster {
        net,
        redis_host,
        a_host,
        b_host,
        redis,
        a,
        b,
    })
}

/// Ends `call` (number `n`) with Twilio's `stop` and waits for the server to close it.
async fn hang_up(call: &mut TwilioStream, n: usize) {
    call.stop(&sid(n)).await;
    assert!(
        call.closed_within(Duration::from_secs(5)).await,
        "call {n} did not end"
    );
}

/// Samples `calls:active_count` every 50 ms until cancelled; the largest value seen.
fn sample_count(redis: &RedisServer, stop: CancellationToken) -> Arc<AtomicU64> {
    let addr = redis.addr().expect("a TCP Redis");
    let max = Arc::new(AtomicU64::new(0));
    let seen = max.clone();
    tokio::spawn(async move {
        while !stop.is_cancelled() {
            let out = tokio::process::Command::new("redis-cli")
                .args(["-h", &addr.ip().to_string(), "-p", &addr.port().to_string()])
                .args(["GET", "calls:active_count"])
                .output()
                .await;
            if let Ok(out) = out
                && let Ok(count) = String::from_utf8_lossy(&out.stdout).trim().parse::<u64>()
            {
                seen.fetch_max(count, Ordering::Relaxed);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    max
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_replica_cut_off_from_redis_keeps_its_calls_and_pauses_no_one() {
    let Some(Cluster {
        net,
        redis_host,
        a_host,
        b_host: _,
        redis,
        a,
        b,
    }) = cluster("one_replica_cut_off_from_redis_keeps_its_calls_and_pauses_no_one")
    else {
        return;
    };
    let mut cut_off = vec![open_call(&a, 1).await, open_call(&a, 2).await];
    let mut others = vec![open_call(&b, 3).await];
    let epoch = get(&redis, "calls:epoch");
    assert!(!epoch.is_empty());

    net.partition(&a_host, &redis_host).unwrap();
    let cut_at = Instant::now();
    // a's callers keep their audio. Its slots lapse a lease after its last renewal, and b's
    // tick reclaims them.
    loop {
        audio_flows(&mut cut_off).await;
        audio_flows(&mut others).await;
        if !holds_slot(&redis, 1) && !holds_slot(&redis, 2) {
            break;
        }
        assert!(
            cut_at.elapsed() < CUT * 2,
            "a's lapsed slots never reclaimed"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let reclaimed_after = cut_at.elapsed();
    // b's admissions never pause: the freed slots go to new callers at once.
    for n in 10..13 {
        others.push(open_call(&b, n).await);
    }
    assert_eq!(get(&redis, "calls:active_count"), "4");
    // a cannot guarantee the limit meanwhile: it refuses (its own webhooks only).
    let (status, body) = voice_at(&a.url("/twilio/voice"), &sid(50)).await;
    assert_eq!(status, 503, "{body}");
    while cut_at.elapsed() < CUT {
        audio_flows(&mut cut_off).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    net.heal().unwrap();
    let healed = Instant::now();
    // a's calls come back: a live call is never dropped by the limiter, even above the limit.
    while !(holds_slot(&redis, 1) && holds_slot(&redis, 2)) {
        assert!(
            healed.elapsed() < Duration::from_secs(10),
            "a's calls did not come back:\n{}",
            a.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let back_after = healed.elapsed();
    count_converges(&redis, 6, 4..=6, Duration::from_secs(5)).await;
    // Nothing new while the count is above the limit, on either replica; and no one says the
    // state store lost its data: the cluster did not, one replica lost sight of it.
    for replica in [&a, &b] {
        let (status, body) = voice_at(&replica.url("/twilio/voice"), &sid(60)).await;
        assert_eq!(status, 503, "{body}");
        assert!(!body.contains("lost its data"), "{}: {body}", replica.id);
    }
    audio_flows(&mut cut_off).await;
    audio_flows(&mut others).await;
    // Admissions resume the moment the count is below the limit.
    for (call, n) in others.iter_mut().skip(1).zip(10..13) {
        hang_up(call, n).await;
    }
    count_converges(&redis, 3, 3..=6, Duration::from_secs(5)).await;
    let (status, body) = voice_at(&b.url("/twilio/voice"), &sid(70)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        get(&redis, "calls:epoch"),
        epoch,
        "the admission wait opened for one replica's loss"
    );
    for replica in [&a, &b] {
        assert_eq!(counter(replica, RECOVERING).await, 0.0, "{}", replica.id);
    }
    // The re-registration is counted when the replica reads its answer. A renewal sent into the
    // cut can still run in Redis after the heal (its EVALSHA was in the kernel's queue) while the
    // replica has given up on its reply: then the slots are back (checked above) but uncounted.
    let reregistered = counter(&a, "calls_reregistered_total ").await;
    assert!(
        reregistered >= 2.0 || a.log().contains("renewal failed"),
        "re-registrations counted: {reregistered}\n{}",
        a.log()
    );
    audio_flows(&mut cut_off).await;
    eprintln!(
        "one replica cut off from Redis for {CUT:?}: its slots reclaimed {reclaimed_after:?} after \
         the cut (lease {LEASE:?}, tick {TICK:?}); its calls back {back_after:?} after the heal; \
         no admission wait, no call lost"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_cut_off_from_every_replica_opens_the_wait_when_back_and_never_over_admits() {
    let Some(Cluster {
        net,
        redis_host,
        a_host,
        b_host,
        redis,
        a,
        b,
    }) = cluster("redis_cut_off_from_every_replica_opens_the_wait_when_back_and_never_over_admits")
    else {
        return;
    };
    let mut calls = vec![
        open_call(&a, 1).await,
        open_call(&a, 2).await,
        open_call(&b, 3).await,
        open_call(&b, 4).await,
    ];
    let stop = CancellationToken::new();
    let max_count = sample_count(&redis, stop.clone());

    net.partition_groups(&[&redis_host], &[&a_host, &b_host])
        .unwrap();
    let cut_at = Instant::now();
    while cut_at.elapsed() < CUT {
        audio_flows(&mut calls).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (status, _) = voice_at(&b.url("/twilio/voice"), &sid(50)).await;
    assert_eq!(status, 503, "no admission while Redis is out of reach");

    net.heal().unwrap();
    let healed_ms = redis_now_ms(&redis);
    let healed = Instant::now();
    // Webhooks race the live calls' re-registration on both replicas, one every 50 ms: every
    // lapsed slot is a live call, so none may go to a newcomer.
    let mut admitted = 0;
    let mut n = 100;
    while healed.elapsed() < Duration::from_secs(3) {
        let replica = if n % 2 == 0 { &a } else { &b };
        if voice_at(&replica.url("/twilio/voice"), &sid(n)).await.0 == 200 {
            admitted += 1;
        }
        n += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(admitted, 0, "admitted while the live calls re-registered");
    for call in 1..=4 {
        assert!(holds_slot(&redis, call), "call {call} re-registered");
    }
    let opens: u64 = get(&redis, "calls:epoch").parse().unwrap_or(0);
    assert!(
        opens > healed_ms,
        "the wait did not open when Redis came back (opens {opens}, healed at {healed_ms})"
    );
    let recovering = counter(&a, RECOVERING).await + counter(&b, RECOVERING).await;
    // Admissions come back once the wait is over and a slot is free.
    hang_up(&mut calls[0], 1).await;
    let resumed = eventually(Duration::from_secs(10), || async {
        (voice_at(&a.url("/twilio/voice"), &sid(200)).await.0 == 200).then_some(())
    })
    .await;
    assert!(resumed.is_some(), "admissions never came back");
    stop.cancel();
    let max = max_count.load(Ordering::Relaxed);
    assert!(max <= LIMIT, "calls:active_count reached {max}");
    audio_flows(&mut calls[1..]).await;
    eprintln!(
        "Redis cut off from every replica for {CUT:?}: the wait opened for {} ms after it came \
         back ({recovering} webhooks told `recovering`, {} racing webhooks refused); the count \
         sampled every 50 ms peaked at {max} (limit {LIMIT})",
        opens - healed_ms,
        n - 100
    );
}
