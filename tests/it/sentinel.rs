//! Redis behind Sentinel (docs/reference.md#configuration `redis+sentinel://`, §4): a real primary,
//! replica and three Sentinels; the primary is killed with `kill -9` under live calls and a stream
//! of webhooks.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::helpers::*;
use prosaas_calls::config::Config;
use testkit::RedisServer;
use testkit::sentinel::Sentinel;
use tokio_util::sync::CancellationToken;

const LIVE_CALLS: usize = 20;
const TICK: Duration = Duration::from_millis(200);
/// Short, so a webhook whose release was lost in the failover lapses within the test.
const RESERVATION_SECS: u64 = 3;

async fn replica(url: &str, id: &str) -> Replica {
    let mut raw = raw(None, 100);
    raw.redis_url = Some(url.to_owned());
    raw.listen_addr = Some("127.0.0.1:0".into());
    raw.replica_id = Some(id.into());
    raw.reservation_secs = Some(RESERVATION_SECS.to_string());
    raw.renew_interval_secs = Some(format!("{}", TICK.as_secs_f64()));
    let (config, _) = Config::from_raw(&raw).expect("a Sentinel URL is a valid REDIS_URL");
    Replica::serve(config).await
}

/// One webhook of the stream: when it was answered, how, and whether its call was then ended.
#[derive(Debug, Clone)]
struct Hook {
    n: usize,
    answered: Instant,
    voice: u16,
}

fn cli(node: &RedisServer, args: &[&str]) -> String {
    node.cli(args).unwrap()
}

fn slots(node: &RedisServer) -> HashSet<String> {
    cli(node, &["ZRANGE", "calls:slots", "0", "-1"])
        .lines()
        .map(str::to_owned)
        .filter(|s| !s.is_empty())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_follow_a_failover_and_live_calls_go_on() {
    let mut sentinel = Sentinel::start("calls").expect("sentinel set starts");
    let url = sentinel.url();
    let replicas = [
        replica(&url, "sentinel-a").await,
        replica(&url, "sentinel-b").await,
    ];

    // 20 live calls, half on each replica. The first waits out a brand-new Redis's hold-off.
    let first = eventually(Duration::from_secs(10), || async {
        let (status, _) = voice(&replicas[0], &sid(0)).await;
        (status == 200).then_some(())
    })
    .await;
    assert!(first.is_some(), "no admission through Sentinel");
    let mut calls = Vec::new();
    for n in 0..LIVE_CALLS {
        calls.push(live_call(&replicas[n % 2], n).await);
    }
    let old_port = sentinel.primary_port().expect("a primary");
    let live: HashSet<String> = (0..LIVE_CALLS).map(sid).collect();
    assert_eq!(slots(sentinel.node(old_port).unwrap()), live);

    // A steady stream of short calls: webhook, then the final status callback.
    let hooks = Arc::new(Mutex::new(Vec::<Hook>::new()));
    let stop = CancellationToken::new();
    let stream = {
        let (hooks, stop) = (hooks.clone(), stop.clone());
        let urls: Vec<String> = replicas.iter().map(|r| r.url("")).collect();
        tokio::spawn(async move {
            let mut n = 1000;
            while !stop.is_cancelled() {
                let base = &urls[n % 2];
                let (voice, _) = voice_at(&format!("{base}/twilio/voice"), &sid(n)).await;
                let answered = Instant::now();
                hooks.lock().unwrap().push(Hook { n, answered, voice });
                if voice == 200 {
                    status_at(base, &sid(n), "completed").await;
                }
                n += 1;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
    };
    let flowing = eventually(Duration::from_secs(10), || async {
        (hooks
            .lock()
            .unwrap()
            .iter()
            .filter(|h| h.voice == 200)
            .count()
            >= 20)
            .then_some(())
    })
    .await;
    assert!(flowing.is_some(), "the webhook stream is admitted");

    // kill -9 the primary.
    let killed_port = sentinel.kill_primary().unwrap();
    assert_eq!(killed_port, old_port);
    let killed = Instant::now();
    for call in &mut calls {
        call.echo_round(1).await;
    }
    let new_port =
        tokio::task::block_in_place(|| sentinel.wait_failover(old_port, Duration::from_secs(30)))
            .expect("Sentinel promotes the replica");
    let promoted = killed.elapsed();
    let new_primary = sentinel.node(new_port).unwrap();

    // The replicas follow: webhooks are admitted again.
    let readmitted = eventually(Duration::from_secs(15), || async {
        hooks
            .lock()
            .unwrap()
            .iter()
            .find(|h| h.answered > killed && h.voice == 200)
            .map(|h| h.answered - killed)
    })
    .await
    .expect("webhooks are admitted again after the failover");

    // Every live call re-registers on the new primary: its lease is renewed there, by its own
    // replica's tick, and the count equals the slots.
    let lease_of = |n: usize| -> f64 {
        cli(new_primary, &["ZSCORE", "calls:slots", &sid(n)])
            .parse()
            .unwrap_or(0.0)
    };
    let replicated: Vec<f64> = (0..LIVE_CALLS).map(lease_of).collect();
    let registered = eventually(Duration::from_secs(10), || async {
        let slots = slots(new_primary);
        let count: usize = cli(new_primary, &["GET", "calls:active_count"])
            .parse()
            .unwrap_or(0);
        let renewed = (0..LIVE_CALLS).all(|n| lease_of(n) > replicated[n]);
        (renewed && slots.is_superset(&live) && count == slots.len()).then_some(slots)
    })
    .await
    .expect("live calls re-registered on the new primary, count equal to the slots");
    let registered_after = killed.elapsed();
    let leftovers: Vec<String> = registered.difference(&live).cloned().collect();

    // Live calls went on untouched through all of it and keep their locks.
    for call in &mut calls {
        call.echo_round(2).await;
    }
    for n in 0..LIVE_CALLS {
        assert_eq!(
            cli(new_primary, &["EXISTS", &format!("calls:lock:{}", sid(n))]),
            "1",
            "call {n} keeps its lock"
        );
    }

    stop.cancel();
    stream.await.unwrap();
    let hooks = hooks.lock().unwrap().clone();

    // What the failover cost. Refused: webhooks answered with a refusal after the kill.
    let refused: Vec<&Hook> = hooks
        .iter()
        .filter(|h| h.answered > killed && h.voice != 200)
        .collect();
    // Lost admissions: answered 200 by the old primary, but the new primary never heard of them.
    let lost: Vec<&Hook> = hooks
        .iter()
        .filter(|h| h.voice == 200)
        .filter(|h| {
            cli(
                new_primary,
                &["EXISTS", &format!("calls:state:{}", sid(h.n))],
            ) == "0"
        })
        .collect();
    for hook in &lost {
        assert!(
            hook.answered <= killed && killed - hook.answered < Duration::from_secs(1),
            "only the last writes before the kill can be lost: {hook:?}"
        );
    }
    // Leftover slots: calls whose release met the dead primary; they lapse with their reservation.
    let admitted_hooks: HashSet<String> = hooks
        .iter()
        .filter(|h| h.voice == 200)
        .map(|h| sid(h.n))
        .collect();
    for leftover in &leftovers {
        assert!(
            admitted_hooks.contains(leftover),
            "a slot no call explains: {leftover}"
        );
    }
    let exact = eventually(Duration::from_secs(RESERVATION_SECS + 5), || async {
        (slots(new_primary) == live
            && cli(new_primary, &["GET", "calls:active_count"]) == LIVE_CALLS.to_string())
        .then_some(())
    })
    .await;
    assert!(
        exact.is_some(),
        "count exact once leftovers lapse: {:?}",
        slots(new_primary)
    );
    for call in &mut calls {
        call.echo_round(1).await;
    }

    eprintln!(
        "sentinel failover (after kill -9): promoted at {:.2} s; webhooks admitted again at {:.2} s; \
         every live call renewed on the new primary at {:.2} s; {} webhooks refused in the window \
         ({} sent, {} admitted in all); {} admissions lost; {} releases left to lapse",
        promoted.as_secs_f64(),
        readmitted.as_secs_f64(),
        registered_after.as_secs_f64(),
        refused.len(),
        hooks.len(),
        admitted_hooks.len(),
        lost.len(),
        leftovers.len(),
    );
}
