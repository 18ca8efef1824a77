//! A rolling restart of any size cuts nobody (docs/reference.md#drain, #after-stream): three
//! replicas behind nginx drained one after another, 12 s apart (each `DRAIN_TIMEOUT_SECS=2`, then
//! started again on its host), under calls that outlive the whole roll. Wherever the balancer sends
//! each continuation, a call handed over by a drain spends nothing of `RESUME_LIMIT`, which is kept
//! for failures: here it is 1, so any call handed over twice would have been cut (the fallback) if
//! hand-overs counted. Proven with round-robin balancing, which sends calls onto the next replica
//! to drain, and with the shipped `least_conn`.

use std::time::{Duration, Instant};

use prosaas_calls_sim::report::Report;
use prosaas_calls_sim::run;
use testkit::RedisServer;
use testkit::nginx::{Balancing, NginxProcess};

use super::*;
use crate::helpers::*;

const REPLICAS: usize = 3;
const CALLS: u64 = 9;
/// From one drain's start to the next: nginx rests a replica that answered 503 for 10 s.
const DRAIN_GAP: Duration = Duration::from_secs(12);

/// What a roll did to the calls: the simulator's report and the hand-overs each call's state counts.
struct Rolled {
    report: Report,
    handovers: Vec<u64>,
}

async fn roll(test: &str, balancing: Balancing) -> Option<Rolled> {
    let net = network(test)?;
    let redis_host = net.host("redis").unwrap();
    let nginx_host = net.host("nginx").unwrap();
    let hosts: Vec<Host> = (1..=REPLICAS)
        .map(|i| net.host(&format!("r{i}")).unwrap())
        .collect();
    let redis = RedisServer::start_on(&redis_host).unwrap();
    let extra = [
        ("DRAIN_TIMEOUT_SECS", "2".to_owned()),
        ("RESUME_LIMIT", "1".to_owned()),
    ];
    let start = |i: usize| replica_on(&hosts[i], &format!("r{}", i + 1), &redis.url(), 100, &extra);
    let mut replicas: Vec<ReplicaProcess> = (0..REPLICAS).map(start).collect();
    let upstreams: Vec<_> = replicas.iter().map(ReplicaProcess::addr).collect();
    let nginx = NginxProcess::start_on(&nginx_host, &nginx_binary(), &upstreams, balancing)
        .expect("nginx on its host");
    // The calls outlive the roll: three drains 12 s apart, the last one 2 s long.
    let sim = tokio::spawn(run::run(sim_run(
        host_target(&nginx.url("")),
        CALLS,
        Duration::from_secs(2),
        DRAIN_GAP * 3,
        41,
    )));
    let live = eventually(Duration::from_secs(20), || async {
        let live = calls_by_replica(&redis).await;
        (live.len() as u64 == CALLS && live.iter().all(|(_, r)| r.starts_with('r'))).then_some(live)
    })
    .await
    .expect("every call live on a replica");

    for (i, replica) in replicas.iter_mut().enumerate() {
        let began = Instant::now();
        replica.signal("TERM").unwrap();
        let code = tokio::task::block_in_place(|| replica.wait_exit(Duration::from_secs(15)))
            .expect("the drained replica exits");
        assert_eq!(code, Some(0), "{}", replica.log());
        *replica = start(i);
        if i + 1 < REPLICAS {
            tokio::time::sleep_until((began + DRAIN_GAP).into()).await;
        }
    }

    let report = sim.await.expect("the simulator run");
    count_converges(&redis, 0, 0..=CALLS, Duration::from_secs(30)).await;
    assert_eq!(
        get(&redis, "calls:stats:started"),
        CALLS.to_string(),
        "every call counted once"
    );
    let mut handovers = Vec::new();
    for (call, _) in &live {
        let state = redis_state(&redis, call).await;
        handovers.push(state["handovers"].as_u64().unwrap_or(0));
    }
    Some(Rolled { report, handovers })
}

/// No caller refused, cut or given the fallback; every lost stream continued.
fn nobody_cut(rolled: &Rolled) -> String {
    let report = &rolled.report;
    let summary = assert_nobody_lost(report, CALLS);
    let summary = format!("{summary}\nhand-overs per call {:?}", rolled.handovers);
    assert_eq!(report.calls.rejected, 0, "{summary}");
    let (p50, p99, max) = gap_ms(report);
    format!(
        "{} streams handed over, hand-overs per call {:?} (most {}); audio gap p50 {p50:.0} ms \
         p99 {p99:.0} ms max {max:.0} ms",
        report.continuity.continued,
        rolled.handovers,
        rolled.handovers.iter().max().unwrap_or(&0)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_roll_behind_round_robin_cuts_nobody() {
    let test = "a_roll_behind_round_robin_cuts_nobody";
    let Some(rolled) = Box::pin(roll(test, Balancing::RoundRobin)).await else {
        return;
    };
    let figures = nobody_cut(&rolled);
    // Round-robin lands continuations on replicas still to drain: some call was handed over
    // more often than RESUME_LIMIT (1) would have paid for.
    assert!(
        rolled.handovers.iter().any(|n| *n >= 2),
        "no call was handed over twice: this roll no longer tests the budget ({figures})"
    );
    eprintln!("rolling restart of {REPLICAS} replicas, round-robin, RESUME_LIMIT=1: {figures}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_roll_behind_least_conn_cuts_nobody() {
    let test = "a_roll_behind_least_conn_cuts_nobody";
    let Some(rolled) = Box::pin(roll(test, Balancing::LeastConn)).await else {
        return;
    };
    let figures = nobody_cut(&rolled);
    eprintln!("rolling restart of {REPLICAS} replicas, least_conn, RESUME_LIMIT=1: {figures}");
}
