//! Faults between hosts, over real network separation: replicas, Redis, Sentinel and nginx each on a
//! host of its own (`testkit::netns`), the paths between them cut with drop rules (docs/operations.md).
//!
//! The test process is `.1` on each network: it plays Twilio (webhooks, media streams, the
//! simulator) and the operator (`redis-cli`, `/metrics`), and is never cut off itself.

mod balancer;
mod failover;
mod kit;
mod redis_cut;
mod roll;

use std::time::Duration;

use testkit::netns::{self, Host, Network};
use testkit::{RedisServer, ReplicaProcess};

use crate::helpers::*;

/// Fault tests shorten the lease and the tick (durations take fractions), as the other process
/// tests do: a lease of 3 s, a tick of 1 s, a recovery wait of 2 s.
pub const LEASE: Duration = Duration::from_secs(3);
pub const TICK: Duration = Duration::from_secs(1);

/// A network for `test`, or `None` where this machine cannot make one: said on stderr, and with
/// `CI` set a failure, never a silent skip (CI runs as root with iproute2 and nftables).
pub fn network(test: &str) -> Option<Network> {
    let made = netns::check().and_then(|()| Network::new().map_err(|err| err.to_string()));
    match made {
        Ok(network) => Some(network),
        Err(why) => {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI is set but {test} cannot make network namespaces: {why}"
            );
            eprintln!("SKIPPED {test}: {why} (run the tests as root to include it)");
            None
        }
    }
}

/// The environment of a replica on `redis_url` with the fault tests' lease and tick.
pub fn replica_env(redis_url: &str, limit: u64) -> Vec<(&'static str, String)> {
    vec![
        ("REDIS_URL", redis_url.to_owned()),
        ("MAX_CONCURRENT_CALLS", limit.to_string()),
        ("CALL_LEASE_SECS", LEASE.as_secs().to_string()),
        ("RENEW_INTERVAL_SECS", TICK.as_secs().to_string()),
        ("CALL_LOCK_TTL_SECS", "5".to_owned()),
    ]
}

/// A replica named `id` on `host`, on `redis_url`, with `extra` on top of [`replica_env`].
pub fn replica_on(
    host: &Host,
    id: &str,
    redis_url: &str,
    limit: u64,
    extra: &[(&'static str, String)],
) -> ReplicaProcess {
    let mut env = replica_env(redis_url, limit);
    env.extend(extra.iter().cloned());
    ReplicaProcess::spawn_on(host, binary(), id, &env).expect("replica starts on its host")
}

/// `GET key` on `redis` (the operator's view, from the test process), `""` when missing.
pub fn get(redis: &RedisServer, key: &str) -> String {
    redis.cli(&["GET", key]).unwrap_or_default()
}

/// Whether `call` holds a slot in `redis`.
pub fn holds_slot(redis: &RedisServer, call: usize) -> bool {
    !redis
        .cli(&["ZSCORE", "calls:slots", &sid(call)])
        .unwrap_or_default()
        .is_empty()
}

/// Redis' clock (ms of `TIME`), the clock the slots and `calls:epoch` are written in.
pub fn redis_now_ms(redis: &RedisServer) -> u64 {
    let time = redis.cli(&["TIME"]).unwrap_or_default();
    let mut parts = time.lines();
    let secs: u64 = parts
        .next()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0);
    let micros: u64 = parts
        .next()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0);
    secs * 1000 + micros / 1000
}

/// A counter of `replica`'s Prometheus text, by its full sample name (labels included).
pub async fn counter(replica: &ReplicaProcess, sample: &str) -> f64 {
    let (_, text) = get_text(&replica.url("/metrics")).await;
    text.lines()
        .find_map(|line| line.strip_prefix(sample)?.trim().parse().ok())
        .unwrap_or(0.0)
}

/// Webhooks refused because the cluster waited for its calls to re-register
/// (docs/reference.md#admission).
pub const RECOVERING: &str = "calls_rejected_total{reason=\"recovering\"} ";

/// Each stream sends one frame and hears its echo: the calls' audio goes on.
pub async fn audio_flows(calls: &mut [TwilioStream]) {
    for call in calls {
        call.echo_round(1).await;
    }
}

/// The simulator's target at `url` on a host of this test's network: not loopback, so allowed
/// explicitly (the network is the test's own, private to this machine).
pub fn host_target(url: &str) -> prosaas_calls_sim::target::Target {
    let reach = prosaas_calls_sim::target::Reach {
        allow_remote: true,
        ca_file: None,
    };
    prosaas_calls_sim::target::Target::with_reach(url, None, None, &reach).expect("a target")
}
