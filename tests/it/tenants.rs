//! Tenants (docs/reference.md#tenants) with real processes: a tenant's cap holds under a race
//! across replicas, a cap changed with the command line applies to the next webhook, and kill -9
//! and a Redis restart heal a tenant's count as they heal the global one.

use std::time::Duration;

use crate::helpers::*;
use serde_json::Value;
use testkit::{RedisServer, ReplicaProcess};

const LEASE_SECS: u64 = 3;
const TICK_SECS: u64 = 1;
/// Generous: a loaded 2-core CI box may be seconds late; the exact counts are what is asserted.
const CONVERGE: Duration = Duration::from_secs(20);

/// This file's replicas: tenants by `AccountSid`, short leases and ticks.
fn replicas(redis: &RedisServer, limit: u64) -> ReplicaEnv {
    ReplicaEnv::new(redis.url(), limit)
        .leases(LEASE_SECS, TICK_SECS, 5)
        .with("TENANT_KEY", "account_sid")
}

/// A voice webhook for call `n` of `tenant` (its AccountSid); (status, body).
async fn webhook(url: &str, n: usize, tenant: &str) -> (u16, String) {
    let call_sid = sid(n);
    let response = post_form(
        url,
        &[
            ("CallSid", call_sid.as_str()),
            ("AccountSid", tenant),
            ("From", "+15005550006"),
            ("To", "+15005550001"),
            ("CallStatus", "ringing"),
        ],
        None,
    )
    .await;
    let status = response.status().as_u16();
    (status, response.text().await.unwrap_or_default())
}

/// Webhooks for calls `range` of `tenant` all at once, spread over `replicas`; how many got 200.
async fn race(replicas: &[&ReplicaProcess], range: std::ops::Range<usize>, tenant: &str) -> u64 {
    let racing: Vec<_> = range
        .map(|n| {
            let url = replicas[n % replicas.len()].url("/twilio/voice");
            let tenant = tenant.to_owned();
            tokio::spawn(async move { webhook(&url, n, &tenant).await.0 })
        })
        .collect();
    let mut admitted = 0;
    for call in racing {
        if call.await.unwrap() == 200 {
            admitted += 1;
        }
    }
    admitted
}

async fn tenant_count(redis: &RedisServer, tenant: &str) -> u64 {
    redis_cli(redis, &["ZCARD", &format!("calls:tenant:{tenant}:slots")])
        .await
        .parse()
        .unwrap_or(0)
}

async fn stat(redis: &RedisServer, key: &str) -> u64 {
    redis_cli(redis, &["GET", key]).await.parse().unwrap_or(0)
}

async fn metrics_json(replica: &ReplicaProcess) -> Value {
    let (_, body) = get_text(&replica.url("/metrics.json")).await;
    serde_json::from_str(&body).unwrap_or(Value::Null)
}

/// A call of `tenant` live on `replica`: its webhook, then its stream (whose `start` names another
/// account: the reservation keeps the tenant its webhook took the slot for).
async fn live_call(replica: &ReplicaProcess, n: usize, tenant: &str) -> TwilioStream {
    let (status, body) = webhook(&replica.url("/twilio/voice"), n, tenant).await;
    assert_eq!(status, 200, "call {n}: {body}");
    let url = format!("ws://127.0.0.1:{}/twilio/stream", replica.port);
    let mut stream = TwilioStream::connect(&url).await;
    stream.connected().await;
    stream.start(&sid(n)).await;
    stream.echo_round(1).await;
    stream
}

/// Runs the command line against `redis`; (exit code, stdout, stderr).
fn cli(redis: &RedisServer, args: &[&str]) -> (i32, String, String) {
    let out = std::process::Command::new(binary())
        .args(args)
        .env("REDIS_URL", redis.url())
        .env_remove("DEFAULT_TENANT_LIMIT")
        .output()
        .expect("the binary runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_cap_holds_under_a_race_across_three_replicas() {
    let redis = RedisServer::start().unwrap();
    // Reservations outlive the test: every admitted webhook keeps its slot while we count.
    let env = replicas(&redis, 50).with("RESERVATION_SECS", 600);
    let replicas = [env.spawn("r1"), env.spawn("r2"), env.spawn("r3")];
    let all: Vec<&ReplicaProcess> = replicas.iter().collect();
    redis_cli(&redis, &["HSET", "calls:tenant_limits", "ACbusy", "10"]).await;

    assert_eq!(race(&all, 0..300, "ACbusy").await, 10);
    assert_eq!(stat(&redis, "calls:stats:rejected_tenant_limit").await, 290);
    assert_eq!(tenant_count(&redis, "ACbusy").await, 10);
    assert_eq!(active_count(&redis).await, 10);
    assert_eq!(stat(&redis, "calls:stats:rejected_max_concurrent").await, 0);
    // The refusal says why (503 mode).
    let (status, body) = webhook(&replicas[0].url("/twilio/voice"), 5000, "ACbusy").await;
    assert_eq!(status, 503);
    assert!(body.contains("tenant limit"), "{body}");

    // Another tenant, with no cap of its own, is admitted up to the global cap, not the busy one's.
    assert_eq!(race(&all, 1000..1100, "ACquiet").await, 40);
    assert_eq!(tenant_count(&redis, "ACquiet").await, 40);
    assert_eq!(active_count(&redis).await, 50);
    assert_eq!(
        stat(&redis, "calls:stats:rejected_max_concurrent").await,
        60
    );
    assert_eq!(stat(&redis, "calls:stats:rejected_tenant_limit").await, 291);

    // Global cap first: at 50, a call of the busy tenant counts as max_concurrent now.
    assert_eq!(
        webhook(&replicas[0].url("/twilio/voice"), 5001, "ACbusy")
            .await
            .0,
        503
    );
    assert_eq!(
        stat(&redis, "calls:stats:rejected_max_concurrent").await,
        61
    );
    // The figures are in metrics.json and /metrics.
    let metrics = metrics_json(&replicas[0]).await;
    assert_eq!(metrics["calls_rejected_tenant_limit"], 291, "{metrics}");
    assert_eq!(metrics["tenants"]["ACbusy"]["active"], 10, "{metrics}");
    assert_eq!(metrics["tenants"]["ACbusy"]["limit"], 10, "{metrics}");
    assert_eq!(metrics["tenants"]["ACquiet"]["active"], 40, "{metrics}");
    assert_eq!(
        metrics["tenants"]["ACquiet"]["limit"],
        Value::Null,
        "{metrics}"
    );
    let mut replica_refusals = 0.0;
    for replica in &replicas {
        let (_, text) = get_text(&replica.url("/metrics")).await;
        replica_refusals += metric_value(&text, "calls_rejected_tenant_limit_total").unwrap();
        assert_eq!(
            metric_value(&text, "calls_cluster_rejected_tenant_limit_total"),
            Some(291.0)
        );
    }
    assert_eq!(replica_refusals, 291.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cap_set_with_the_command_line_applies_to_the_next_webhook() {
    let redis = RedisServer::start().unwrap();
    let replica = replicas(&redis, 50)
        .with("RESERVATION_SECS", 600)
        .with("DEFAULT_TENANT_LIMIT", 1)
        .spawn("r1");
    let url = replica.url("/twilio/voice");
    // DEFAULT_TENANT_LIMIT covers a tenant without its own cap.
    assert_eq!(webhook(&url, 1, "ACx").await.0, 200);
    assert_eq!(webhook(&url, 2, "ACx").await.0, 503);

    let (code, out, err) = cli(&redis, &["tenants", "set", "ACx", "3"]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(webhook(&url, 3, "ACx").await.0, 200);
    assert_eq!(webhook(&url, 4, "ACx").await.0, 200);
    assert_eq!(webhook(&url, 5, "ACx").await.0, 503);

    // A retried webhook of an admitted call is admitted again without a second slot, at the cap.
    assert_eq!(webhook(&url, 3, "ACx").await.0, 200);
    assert_eq!(tenant_count(&redis, "ACx").await, 3);

    // Unset: the default applies again; the three live reservations stay (never dropped).
    let (code, _, _) = cli(&redis, &["tenants", "unset", "ACx"]);
    assert_eq!(code, 0);
    assert_eq!(webhook(&url, 6, "ACx").await.0, 503);
    assert_eq!(tenant_count(&redis, "ACx").await, 3);

    // A status callback frees the tenant's slot with the global one, exactly once.
    redis_cli(&redis, &["HSET", "calls:tenant_limits", "ACx", "3"]).await;
    for _ in 0..2 {
        assert_eq!(status_at(&replica.url(""), &sid(1), "completed").await, 204);
    }
    assert_eq!(tenant_count(&redis, "ACx").await, 2);
    assert_eq!(active_count(&redis).await, 2);
    assert_eq!(
        redis_cli(&redis, &["HEXISTS", "calls:slot_tenant", &sid(1)]).await,
        "0"
    );
    assert_eq!(webhook(&url, 7, "ACx").await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_and_a_redis_restart_heal_a_tenants_count() {
    let mut redis = RedisServer::start().unwrap();
    let mut doomed = replicas(&redis, 20).spawn("doomed");
    let survivor = replicas(&redis, 20).spawn("survivor");
    redis_cli(&redis, &["HSET", "calls:tenant_limits", "ACt", "4"]).await;
    let mut dying = vec![
        live_call(&doomed, 1, "ACt").await,
        live_call(&doomed, 2, "ACt").await,
    ];
    let mut living = vec![
        live_call(&survivor, 3, "ACt").await,
        live_call(&survivor, 4, "ACt").await,
    ];
    assert_eq!(tenant_count(&redis, "ACt").await, 4);
    assert_eq!(
        webhook(&survivor.url("/twilio/voice"), 9, "ACt").await.0,
        503
    );

    doomed.kill9();
    for stream in &mut dying {
        assert!(stream.closed_within(Duration::from_secs(10)).await);
    }
    // The survivor's ticks reclaim the dead replica's slots from the tenant's set too.
    let healed = eventually(CONVERGE, || async {
        (tenant_count(&redis, "ACt").await == 2).then_some(())
    })
    .await;
    assert!(
        healed.is_some(),
        "tenant count {}",
        tenant_count(&redis, "ACt").await
    );
    assert_eq!(active_count(&redis).await, 2);
    assert_eq!(redis_cli(&redis, &["HLEN", "calls:slot_tenant"]).await, "2");

    // Redis restarts empty: the live calls come back into the tenant's set, and the caps the
    // replica last read are written back (configuration, not state).
    redis.restart_empty().unwrap();
    for stream in &mut living {
        stream.echo_round(1).await;
    }
    count_converges(&redis, 2, 0..=2, CONVERGE).await;
    let back = eventually(CONVERGE, || async {
        (tenant_count(&redis, "ACt").await == 2
            && redis_cli(&redis, &["HGET", "calls:tenant_limits", "ACt"]).await == "4")
            .then_some(())
    })
    .await;
    assert!(
        back.is_some(),
        "tenant count {}, cap {:?}",
        tenant_count(&redis, "ACt").await,
        redis_cli(&redis, &["HGET", "calls:tenant_limits", "ACt"]).await
    );
    // Once admissions reopen (the recovery wait refuses as "recovering" first), the tenant takes
    // exactly its two free slots, then is refused at its cap.
    let deadline = std::time::Instant::now() + CONVERGE;
    let (mut admitted, mut n) = (0, 100);
    loop {
        assert!(std::time::Instant::now() < deadline, "admitted {admitted}");
        let (status, body) = webhook(&survivor.url("/twilio/voice"), n, "ACt").await;
        n += 1;
        if status == 200 {
            admitted += 1;
        } else if body.contains("tenant limit") {
            break;
        } else {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    assert_eq!(admitted, 2);
    assert_eq!(tenant_count(&redis, "ACt").await, 4);
    for stream in &mut living {
        stream.echo_round(2).await;
    }
}
