//! Repeated crashes, bounded for CI: one replica of three is killed with -9 and
//! restarted five times under steady calls; scripts/crash-cycles runs the long version.

use std::time::{Duration, Instant};

use crate::helpers::*;
use testkit::RedisServer;

const LEASE_SECS: u64 = 2;
const TICK_SECS: u64 = 1;
const CYCLES: usize = 5;
/// Calls the survivors keep live through every cycle, and the victim takes before each kill.
const STEADY_PER_SURVIVOR: usize = 2;
const VICTIM_CALLS: usize = 2;
/// Generous for a loaded CI box: the contract's bound (lease + tick) is measured and printed, the
/// invariant (exact count, never below the live calls, never above the limit) is asserted.
const CONVERGE: Duration = Duration::from_secs(20);
const LIMIT: u64 = 50;

fn replicas(redis: &RedisServer) -> ReplicaEnv {
    ReplicaEnv::new(redis.url(), LIMIT).leases(LEASE_SECS, TICK_SECS, 4)
}

/// Keys matching `pattern` whose TTL is -1 (none): a leak, since every call key must expire.
async fn keys_without_ttl(redis: &RedisServer, pattern: &str) -> Vec<String> {
    let mut leaked = Vec::new();
    for key in redis_cli(redis, &["--scan", "--pattern", pattern])
        .await
        .lines()
    {
        if redis_cli(redis, &["TTL", key]).await == "-1" {
            leaked.push(key.to_owned());
        }
    }
    leaked
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_kill_9_cycles_converge_each_time_and_leak_nothing() {
    let redis = RedisServer::start().unwrap();
    let a = replicas(&redis).spawn("a");
    let b = replicas(&redis).spawn("b");
    let mut victim = replicas(&redis).spawn("c");
    let mut steady = Vec::new();
    for n in 0..STEADY_PER_SURVIVOR {
        steady.push((n, open_call(&a, n).await));
        steady.push((100 + n, open_call(&b, 100 + n).await));
    }
    let live = steady.len() as u64;
    assert_eq!(active_count(&redis).await, live);

    let mut slowest = Duration::ZERO;
    for cycle in 0..CYCLES {
        let mut doomed = Vec::new();
        for k in 0..VICTIM_CALLS {
            doomed.push(open_call(&victim, 1000 + cycle * 10 + k).await);
        }
        assert_eq!(active_count(&redis).await, live + VICTIM_CALLS as u64);

        victim.kill9();
        let killed = Instant::now();
        for stream in &mut doomed {
            assert!(
                stream.closed_within(Duration::from_secs(10)).await,
                "cycle {cycle}: a killed replica's stream stayed open"
            );
        }
        // The survivors' ticks reclaim the dead replica's slots: the count falls to exactly the
        // live calls, never below them (a live call dropped) and never above what was admitted.
        count_converges(&redis, live, live..=live + VICTIM_CALLS as u64, CONVERGE).await;
        slowest = slowest.max(killed.elapsed());
        for (_, stream) in &mut steady {
            stream.echo_round(1).await;
        }
        victim = replicas(&redis).spawn("c");
    }
    eprintln!(
        "crash cycles: slowest convergence {slowest:?} (lease {LEASE_SECS} s + tick {TICK_SECS} s)"
    );

    // All calls end: nothing stays behind, and whatever a killed replica left expires.
    for (n, stream) in &mut steady {
        stream.stop(&sid(*n)).await;
        assert!(stream.closed_within(Duration::from_secs(10)).await);
    }
    count_converges(&redis, 0, 0..=live, CONVERGE).await;
    assert_eq!(redis_cli(&redis, &["ZCARD", "calls:slots"]).await, "0");
    for pattern in ["calls:state:*", "calls:lock:*", "calls:replica:*"] {
        let leaked = keys_without_ttl(&redis, pattern).await;
        assert!(leaked.is_empty(), "keys with no TTL: {leaked:?}");
    }
    // The killed replicas' locks lapse within their TTL: none is left to block a retried call.
    let locks_gone = eventually(CONVERGE, || async {
        redis_cli(&redis, &["--scan", "--pattern", "calls:lock:*"])
            .await
            .is_empty()
            .then_some(())
    })
    .await;
    assert!(locks_gone.is_some(), "a lock outlived its TTL");
    drop(victim);
}
