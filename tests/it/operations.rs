//! Operator endpoints and garbage in Redis (docs/reference.md#endpoints, #metrics): exact metric
//! names and fields, readiness, and a wrong-type key or a corrupt state that is logged and counted
//! while the call goes on.

use std::time::Duration;

use crate::helpers::*;
use prosaas_calls::config::StreamTimeouts;
use serde_json::Value;
use testkit::RedisServer;

async fn get(url: &str) -> (u16, String) {
    let response = client().get(url).send().await.unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

#[tokio::test]
async fn metrics_json_has_exactly_the_contract_fields() {
    let redis = RedisServer::start().unwrap();
    let replica = Replica::start(raw(Some(&redis), 2), StreamTimeouts::default()).await;
    let mut call = live_call(&replica, 1).await;
    voice(&replica, &sid(2)).await;
    assert_eq!(voice(&replica, &sid(3)).await.0, 503);

    let (status, body) = get(&replica.url("/metrics.json")).await;
    assert_eq!(status, 200);
    let json: Value = serde_json::from_str(&body).unwrap();
    let mut keys: Vec<&str> = json
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "calls_active",
            "calls_rejected_max_concurrent",
            "calls_rejected_tenant_limit",
            "calls_started",
            "calls_waiting",
            "max_concurrent_calls",
            "replica",
            "state_backend"
        ]
    );
    assert_eq!(json["calls_waiting"], 0, "no waiting room: nobody waits");
    assert_eq!(json["calls_active"], 2, "reservations count cluster-wide");
    assert_eq!(json["calls_started"], 2);
    assert_eq!(json["calls_rejected_max_concurrent"], 1);
    assert_eq!(json["max_concurrent_calls"], 2);
    assert_eq!(json["calls_rejected_tenant_limit"], 0);
    assert_eq!(json["state_backend"], "redis");
    let r = &json["replica"];
    assert_eq!(r["id"], replica.app.config().replica_id.as_str());
    assert_eq!(r["calls_active"], 1, "only streams live here");
    assert_eq!(r["calls_started"], 2);
    assert_eq!(r["calls_rejected_max_concurrent"], 1);
    assert_eq!(r["draining"], false);
    call.stop(&sid(1)).await;
    replica.stop().await;
}

#[tokio::test]
async fn prometheus_text_names_every_documented_metric() {
    let replica = Replica::start(raw(None, 5), StreamTimeouts::default()).await;
    let mut call = live_call(&replica, 1).await;
    call.echo_round(3).await;
    let (status, text) = get(&replica.url("/metrics")).await;
    assert_eq!(status, 200);
    for name in [
        "calls_active ",
        "calls_started_total ",
        "calls_rejected_max_concurrent_total ",
        "calls_cluster_active ",
        "calls_cluster_started_total ",
        "calls_cluster_rejected_max_concurrent_total ",
        "calls_rejected_tenant_limit_total ",
        "calls_cluster_rejected_tenant_limit_total ",
        "calls_rejected_total{reason=\"tenant_limit\"} 0",
        "calls_admission_duration_seconds_bucket",
        "calls_admission_duration_seconds_count ",
        "websocket_sockets_open ",
        "calls_draining ",
        "calls_reregistered_total ",
        "calls_over_limit_events_total ",
    ] {
        assert!(text.contains(name), "missing {name} in\n{text}");
    }
    assert!(text.contains("websocket_sockets_open 1"), "{text}");
    assert!(text.contains("calls_cluster_active 1"), "{text}");
    call.stop(&sid(1)).await;
    // Frame counters are flushed in batches and at the end of each stream.
    let flushed = eventually(Duration::from_secs(20), || async {
        let (_, text) = get(&replica.url("/metrics")).await;
        (text.contains("media_frames_in_total 4") && text.contains("media_frames_out_total 4"))
            .then_some(())
    })
    .await;
    assert!(flushed.is_some());
    replica.stop().await;
}

#[tokio::test]
async fn health_and_readiness() {
    let mut redis = RedisServer::start().unwrap();
    let replica = Replica::start(raw(Some(&redis), 5), StreamTimeouts::default()).await;
    assert_eq!(get(&replica.url("/healthz")).await.0, 200);
    // Ready once its first Redis round trip is in: on a loaded CI machine that can take longer
    // than /readyz's 1 s ping right after start-up.
    let ready = eventually(Duration::from_secs(10), || async {
        (get(&replica.url("/readyz")).await.0 == 200).then_some(())
    })
    .await;
    assert!(ready.is_some(), "never ready with Redis up");
    redis.stop();
    let (status, body) = get(&replica.url("/readyz")).await;
    assert_eq!(status, 503);
    assert!(body.contains("state store"), "{body}");
    assert_eq!(
        get(&replica.url("/healthz")).await.0,
        200,
        "alive while Redis is away"
    );
    redis.start_again().unwrap();
    let back = eventually(Duration::from_secs(20), || async {
        (get(&replica.url("/readyz")).await.0 == 200).then_some(())
    })
    .await;
    assert!(back.is_some());
    // Redis came back empty: a replica that had seen its epoch knows Redis lost its data, so
    // admissions wait for live calls to re-register (docs/reference.md#admission). Wait for the
    // admission itself, not for a guess of the hold-off: the webhook is retried for one call, which
    // holds at most one slot however many tries it takes.
    let admitted = eventually(Duration::from_secs(20), || async {
        (voice(&replica, &sid(1)).await.0 == 200).then_some(())
    })
    .await;
    assert!(
        admitted.is_some(),
        "admissions never reopened after Redis came back"
    );
    assert_eq!(replica.active().await, 1);
    // Draining with no live call exits at once; with one, readiness says why it is out.
    let mut call = live_call(&replica, 1).await;
    replica.begin_drain();
    let draining = eventually(Duration::from_secs(20), || async {
        let (status, body) = get(&replica.url("/readyz")).await;
        (status == 503 && body.contains("draining")).then_some(())
    })
    .await;
    assert!(draining.is_some());
    call.stop(&sid(1)).await;
    replica.stop().await;
}

#[tokio::test]
async fn redis_garbage_is_counted_and_the_call_goes_on() {
    let redis = RedisServer::start().unwrap();
    let replica = Replica::start(raw(Some(&redis), 5), StreamTimeouts::default()).await;
    let mut call = live_call(&replica, 1).await;

    // A wrong-type key under the slots: every renewal fails, loudly, and the call streams on.
    redis_cli(&redis, &["DEL", "calls:slots"]).await;
    redis_cli(&redis, &["SET", "calls:slots", "garbage"]).await;
    assert!(replica.app.calls().renew(false).await.is_err());
    call.echo_round(5).await;
    let (_, text) = get(&replica.url("/metrics")).await;
    assert!(text.contains("redis_errors_total{op=\"renew\"}"), "{text}");
    assert_eq!(
        voice(&replica, &sid(2)).await.0,
        503,
        "admission cannot be guaranteed"
    );

    // Repaired: the next tick re-registers the live call.
    redis_cli(&redis, &["DEL", "calls:slots"]).await;
    let report = replica.app.calls().renew(false).await.unwrap();
    assert_eq!(report.readded, vec![sid(1)]);
    assert_eq!(redis_cli(&redis, &["GET", "calls:active_count"]).await, "1");

    // A corrupt state blob: the tick overwrites it with the live call's state.
    let key = format!("calls:state:{}", sid(1));
    redis_cli(&redis, &["SET", &key, "{not json"]).await;
    replica.app.calls().renew(false).await.unwrap();
    assert!(
        redis_cli(&redis, &["GET", &key])
            .await
            .contains("\"status\":\"active\"")
    );

    // A non-number counter: /metrics.json says the store is unhappy, still shows the replica.
    redis_cli(&redis, &["SET", "calls:stats:started", "many"]).await;
    let (status, body) = get(&replica.url("/metrics.json")).await;
    assert_eq!(status, 503);
    let json: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(json["replica"]["calls_active"], 1);
    call.echo_round(2).await;
    call.stop(&sid(1)).await;
    replica.stop().await;
}

/// The series name a sample line belongs to (`_bucket`, `_sum`, `_count` fold into the histogram).
fn series_name(sample: &str) -> &str {
    let name = sample.split(['{', ' ']).next().unwrap_or_default();
    ["_bucket", "_sum", "_count"]
        .iter()
        .find_map(|suffix| name.strip_suffix(suffix))
        .filter(|base| base.ends_with("_seconds"))
        .unwrap_or(name)
}

#[tokio::test]
async fn metrics_md_names_every_series_and_label_a_replica_exports() {
    // docs/metrics.md is the operator's list: every series a fresh replica exports, and every
    // label value that exists at zero, must be in the row of its metric.
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/metrics.md"))
        .expect("docs/metrics.md");
    let rows: Vec<&str> = doc.lines().filter(|line| line.starts_with("| `")).collect();
    let replica = Replica::start(raw(None, 5), StreamTimeouts::default()).await;
    let (status, text) = get(&replica.url("/metrics")).await;
    assert_eq!(status, 200);
    let mut missing = Vec::new();
    for sample in text.lines().filter(|line| !line.starts_with('#')) {
        let name = series_name(sample);
        let quoted = format!("`{name}`");
        let Some(row) = rows.iter().find(|row| row.contains(&quoted)) else {
            missing.push(format!("{name} (no row)"));
            continue;
        };
        let labels = sample
            .split_once('{')
            .and_then(|(_, rest)| rest.split_once('}'))
            .map_or("", |(labels, _)| labels);
        for pair in labels.split(',').filter(|pair| !pair.is_empty()) {
            let (label, value) = pair.split_once('=').expect("label=\"value\"");
            // Bucket bounds and the build's own version are not a fixed set.
            if matches!(label, "le" | "version" | "commit") {
                continue;
            }
            if !row.contains(&format!("`{}`", value.trim_matches('"'))) {
                missing.push(format!("{name}{{{pair}}}"));
            }
        }
    }
    missing.dedup();
    assert!(
        missing.is_empty(),
        "docs/metrics.md does not name: {missing:#?}"
    );
    replica.stop().await;
}

#[test]
fn an_empty_rust_log_counts_as_unset() {
    // `RUST_LOG=` (a compose file passing an unset variable) must not silence the log.
    let replica =
        testkit::ReplicaProcess::spawn(binary(), "empty-rust-log", &[("RUST_LOG", String::new())])
            .expect("replica starts");
    let log = replica.log();
    assert!(
        log.contains("prosaas-calls listening") && log.contains("configuration"),
        "{log}"
    );
}
