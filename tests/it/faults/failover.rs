//! Failovers across hosts (docs/reference.md#configuration, #admission): a failover that shows up
//! as `READONLY` (a plain `redis://` name moved to the new primary; an old primary demoted after a
//! partition) is noticed like any other: the link is made again, `run_id` read, the calls
//! re-registered, the wait opened. And what a primary isolated with some replicas does to the
//! count, with and without `min-replicas-to-write` (docs/operations.md, Redis settings).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use testkit::netns::Host;
use testkit::sentinel::Sentinel;
use testkit::{RedisServer, ReplicaProcess};

use super::*;
use crate::helpers::*;

const LIMIT: u64 = 4;
/// The name the replicas' plain `REDIS_URL` uses; each host's `/etc/hosts` says where it leads.
const PRIMARY_NAME: &str = "redis-primary";

/// Whether `call`'s slot in `node` was renewed after Redis-time `after_ms` (its lease deadline
/// lies more than a lease past it).
fn renewed_after(node: &RedisServer, call: usize, after_ms: u64, lease: Duration) -> bool {
    node.cli(&["ZSCORE", "calls:slots", &sid(call)])
        .ok()
        .and_then(|score| score.parse::<f64>().ok())
        .is_some_and(|deadline| deadline as u64 > after_ms + lease.as_millis() as u64)
}

/// The webhook, the stream, `start` and one echo for call `n` on `replica`, if admitted.
async fn try_call(replica: &ReplicaProcess, n: usize) -> Option<TwilioStream> {
    let (status, _) = voice_at(&replica.url("/twilio/voice"), &sid(n)).await;
    if status != 200 {
        return None;
    }
    let mut stream = TwilioStream::connect(&format!("ws://{}/twilio/stream", replica.addr())).await;
    stream.connected().await;
    stream.start(&sid(n)).await;
    stream.echo_round(1).await;
    Some(stream)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_url_whose_name_moved_to_the_new_primary_is_followed() {
    let Some(net) = network("a_plain_url_whose_name_moved_to_the_new_primary_is_followed") else {
        return;
    };
    let (p, r) = (net.host("primary").unwrap(), net.host("replica").unwrap());
    let (a_host, b_host) = (net.host("a").unwrap(), net.host("b").unwrap());
    let old = RedisServer::start_on(&p).unwrap();
    let new = RedisServer::start_on(&r).unwrap();
    new.cli(&["REPLICAOF", &p.ip.to_string(), "6379"]).unwrap();
    for host in [&a_host, &b_host] {
        host.map_names(&[(PRIMARY_NAME, p.ip)]).unwrap();
    }
    let url = format!("redis://{PRIMARY_NAME}:6379/0");
    let a = replica_on(&a_host, "a", &url, LIMIT, &[]);
    let b = replica_on(&b_host, "b", &url, LIMIT, &[]);
    let mut calls = vec![open_call(&a, 1).await, open_call(&b, 2).await];
    let replicated = eventually(Duration::from_secs(10), || async {
        (holds_slot(&new, 1) && holds_slot(&new, 2)).then_some(())
    })
    .await;
    assert!(replicated.is_some(), "the replica never caught up");

    // The failover, as an orchestrator does it: promote the replica, move the name to it, demote
    // the old primary (which still answers, read-only: no connection breaks).
    new.cli(&["REPLICAOF", "NO", "ONE"]).unwrap();
    let promoted_ms = redis_now_ms(&new);
    for host in [&a_host, &b_host] {
        host.map_names(&[(PRIMARY_NAME, r.ip)]).unwrap();
    }
    old.cli(&["REPLICAOF", &r.ip.to_string(), "6379"]).unwrap();
    let moved = Instant::now();
    // Each replica's next write meets READONLY: it resolves the name again on a fresh link, finds
    // another run_id, re-registers its calls there at once and opens the wait.
    loop {
        audio_flows(&mut calls).await;
        if renewed_after(&new, 1, promoted_ms, LEASE) && renewed_after(&new, 2, promoted_ms, LEASE)
        {
            break;
        }
        assert!(
            moved.elapsed() < Duration::from_secs(15),
            "the replicas never followed the name to the new primary:\n{}\n{}",
            a.log(),
            b.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let followed_after = moved.elapsed();
    let opens: u64 = get(&new, "calls:epoch").parse().unwrap_or(0);
    assert!(
        opens > promoted_ms,
        "a failover opens the admission wait (opens {opens}, promoted at {promoted_ms})"
    );
    for replica in [&a, &b] {
        assert!(
            replica.log().contains("run_id changed"),
            "{} did not notice the failover:\n{}",
            replica.id,
            replica.log()
        );
    }
    // New calls are admitted on the new primary once the wait is over.
    let admitted = eventually(Duration::from_secs(10), || async {
        (voice_at(&a.url("/twilio/voice"), &sid(3)).await.0 == 200).then_some(())
    })
    .await;
    assert!(admitted.is_some(), "no admission after the failover");
    assert!(holds_slot(&new, 3));
    audio_flows(&mut calls).await;
    eprintln!(
        "a plain redis:// name moved to the new primary and the old one demoted: both replicas \
         followed, their calls renewed there {followed_after:?} after the move; the wait opened \
         for {} ms",
        opens.saturating_sub(promoted_ms)
    );
}

/// What [`isolated_primary`] measured.
struct Isolation {
    /// Calls the replica on the old primary's side admitted during the partition.
    admitted_isolated: usize,
    /// Calls the other replica admitted on the new primary meanwhile.
    admitted_majority: usize,
    /// Calls live at once, cluster-wide, at the end of the partition.
    live: usize,
    /// `calls:active_count` on the new primary once the isolated side came back.
    count_after_heal: u64,
    /// From the heal to the isolated replica's calls renewed on the new primary.
    back_after: Duration,
}

/// Sentinel with a primary and two replicas; the primary, one replica of the service and one
/// Sentinel cut off from the rest for `PARTITION`. The majority promotes a replica; the service's
/// replicas on each side keep trying to admit a new caller every 250 ms; then the partition heals
/// and the old primary is demoted. With `min_replicas`, every data node has
/// `min-replicas-to-write 1` and `min-replicas-max-lag 2`.
async fn isolated_primary(test: &str, min_replicas: bool) -> Option<Isolation> {
    const PARTITION: Duration = Duration::from_secs(10);
    // Longer than the other fault tests' lease: the isolated primary must stop taking writes
    // (min-replicas-max-lag, 2 s, plus the replicas' one-second acknowledgements) before any
    // lease of the other side lapses there.
    const LEASE: Duration = Duration::from_secs(5);
    let net = network(test)?;
    let host = |name: &str| net.host(name).unwrap();
    let (p, r1, r2) = (host("primary"), host("replica-1"), host("replica-2"));
    let (s1, s2, s3) = (host("sentinel-1"), host("sentinel-2"), host("sentinel-3"));
    let (a_host, b_host) = (host("a"), host("b"));
    let sentinel = Sentinel::start_on("calls", &p, &[&r1, &r2], [&s1, &s2, &s3]).unwrap();
    let lease = [("CALL_LEASE_SECS", LEASE.as_secs().to_string())];
    let a = replica_on(&a_host, "a", &sentinel.url(), LIMIT, &lease);
    let b = replica_on(&b_host, "b", &sentinel.url(), LIMIT, &lease);
    let mut calls = vec![
        open_call(&a, 1).await,
        open_call(&a, 2).await,
        open_call(&b, 3).await,
        open_call(&b, 4).await,
    ];
    if min_replicas {
        for node in sentinel.nodes() {
            node.cli(&["CONFIG", "SET", "min-replicas-to-write", "1"])
                .unwrap();
            node.cli(&["CONFIG", "SET", "min-replicas-max-lag", "2"])
                .unwrap();
        }
    }
    let old_primary = sentinel.primary_addr().expect("a primary");
    assert_eq!(old_primary, p.addr(6379));
    let majority: Vec<SocketAddr> = [&s1, &s2].iter().map(|s| s.addr(26379)).collect();

    let isolated: [&Host; 3] = [&p, &a_host, &s3];
    net.partition_groups(&isolated, &[&r1, &r2, &b_host, &s1, &s2])
        .unwrap();
    let cut = Instant::now();
    let mut a_calls = vec![1, 2];
    let mut admitted_majority = 0;
    let mut n = 100;
    while cut.elapsed() < PARTITION {
        if let Some(call) = try_call(&a, n).await {
            calls.push(call);
            a_calls.push(n);
        }
        if let Some(call) = try_call(&b, n + 1).await {
            calls.push(call);
            admitted_majority += 1;
        }
        n += 2;
        audio_flows(&mut calls).await;
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let new_primary = tokio::task::block_in_place(|| {
        sentinel.wait_failover_from(old_primary, &majority, Duration::from_secs(20))
    })
    .expect("the majority's Sentinels promote a replica");
    let live = calls.len();

    net.heal().unwrap();
    let healed = Instant::now();
    let new_node = sentinel.node_at(new_primary).expect("the new primary runs");
    let healed_ms = redis_now_ms(new_node);
    // The Sentinels demote the old primary; the isolated replica's next write meets READONLY
    // and it follows Sentinel to the new primary, re-registering every call it holds there.
    loop {
        audio_flows(&mut calls).await;
        if a_calls
            .iter()
            .all(|call| renewed_after(new_node, *call, healed_ms, LEASE))
        {
            break;
        }
        assert!(
            healed.elapsed() < Duration::from_secs(30),
            "the isolated replica never came over to {new_primary}:\n{}",
            a.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let back_after = healed.elapsed();
    let count_after_heal: u64 = get(new_node, "calls:active_count").parse().unwrap_or(0);
    assert!(
        a.log().contains("run_id changed"),
        "the isolated replica did not notice the failover:\n{}",
        a.log()
    );
    let opens: u64 = get(new_node, "calls:epoch").parse().unwrap_or(0);
    assert!(
        opens > healed_ms,
        "coming over opened no wait (opens {opens}, healed at {healed_ms})"
    );
    audio_flows(&mut calls).await;
    Some(Isolation {
        admitted_isolated: a_calls.len() - 2,
        admitted_majority,
        live,
        count_after_heal,
        back_after,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_isolated_primary_without_min_replicas_admits_on_both_sides() {
    let test = "an_isolated_primary_without_min_replicas_admits_on_both_sides";
    let Some(seen) = Box::pin(isolated_primary(test, false)).await else {
        return;
    };
    // Two primaries, each with the whole limit: the hazard the Redis settings remove.
    assert!(
        seen.admitted_isolated >= 1,
        "the isolated primary took no write: this test no longer shows the hazard"
    );
    assert!(seen.live > LIMIT as usize + 2, "{} live", seen.live);
    eprintln!(
        "primary isolated with one replica of the service, no min-replicas-to-write: {} calls \
         admitted on the isolated side and {} on the majority's, {} live at once (limit {LIMIT}); \
         {} counted on the new primary once healed, the isolated side's calls back {:?} after \
         the heal",
        seen.admitted_isolated,
        seen.admitted_majority,
        seen.live,
        seen.count_after_heal,
        seen.back_after
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_isolated_primary_with_min_replicas_admits_nothing() {
    let test = "an_isolated_primary_with_min_replicas_admits_nothing";
    let Some(seen) = Box::pin(isolated_primary(test, true)).await else {
        return;
    };
    assert_eq!(
        seen.admitted_isolated, 0,
        "the isolated primary took writes despite min-replicas-to-write"
    );
    // The cut-off replica's own two calls live on (a live call is never dropped), and the
    // majority admitted into their lapsed slots: at most the limit plus those two.
    assert!(seen.live <= LIMIT as usize + 2, "{} live", seen.live);
    // The old primary refusing writes (NOREPLICAS) sends the replica to Sentinel at once, which
    // names the new primary as soon as the partition heals: no waiting for the Sentinels to
    // demote the old one (their next INFO of it, up to 10 s; ~11 s here before that was so).
    assert!(
        seen.back_after < Duration::from_secs(6),
        "the isolated replica came over {:?} after the heal",
        seen.back_after
    );
    eprintln!(
        "primary isolated with one replica of the service, min-replicas-to-write 1 and \
         min-replicas-max-lag 2: {} admitted on the isolated side, {} on the majority's, {} live \
         at once (limit {LIMIT}, of them 2 the cut-off replica's); {} counted on the new primary \
         once healed, the isolated side's calls back {:?} after the heal",
        seen.admitted_isolated,
        seen.admitted_majority,
        seen.live,
        seen.count_after_heal,
        seen.back_after
    );
}
