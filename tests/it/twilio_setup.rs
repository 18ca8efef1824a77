//! What a Twilio number's configuration meets (docs/reference.md#endpoints, #metrics): GET webhooks
//! signed over their query, the fallback URL, 503 bodies that say why, and metrics that exist from
//! start-up.

use std::time::Duration;

use calls_core::call_sid::CallSid;
use prosaas_calls::config::StreamTimeouts;
use testkit::RedisServer;
use twilio::signature;

use crate::helpers::*;

const TOKEN: &str = "setup-test-token";
const PUBLIC: &str = "https://calls.example.com";

async fn signed_replica(limit: u64) -> Replica {
    let mut config = raw(None, limit);
    config.twilio_auth_token = Some(TOKEN.into());
    config.public_url = Some(PUBLIC.into());
    Replica::start(config, StreamTimeouts::default()).await
}

async fn get_signed(replica: &Replica, path_and_query: &str, sig: Option<String>) -> (u16, String) {
    let mut request = client().get(replica.url(path_and_query));
    if let Some(sig) = sig {
        request = request.header("x-twilio-signature", sig);
    }
    let response = request.send().await.expect("request");
    let status = response.status().as_u16();
    (status, response.text().await.unwrap_or_default())
}

#[tokio::test]
async fn get_webhooks_are_signed_over_the_url_with_its_query() {
    let replica = signed_replica(5).await;
    let sid = sid(1);
    let query =
        format!("/twilio/voice?CallSid={sid}&AccountSid=AC1&From=%2B15550001&To=%2B15550002");
    let good = signature::compute::<&str, &str>(TOKEN, &format!("{PUBLIC}{query}"), &[]);
    let (status, body) = get_signed(&replica, &query, Some(good.clone())).await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains("<Stream url=\"wss://calls.example.com/twilio/stream\""),
        "{body}"
    );
    let stored = replica
        .app
        .calls()
        .store()
        .read_state(&CallSid::parse(&sid).unwrap())
        .await
        .unwrap()
        .expect("the GET webhook reserved the call");
    assert_eq!(stored.from.as_deref(), Some("+15550001"));

    // The signature covers the query: a changed parameter, or none at all, is a 403.
    let tampered = query.replace("AC1", "AC2");
    assert_eq!(get_signed(&replica, &tampered, Some(good)).await.0, 403);
    assert_eq!(get_signed(&replica, &query, None).await.0, 403);

    // Status callbacks by GET release like POSTs.
    let status_query = format!("/twilio/status?CallSid={sid}&CallStatus=completed");
    let sig = signature::compute::<&str, &str>(TOKEN, &format!("{PUBLIC}{status_query}"), &[]);
    assert_eq!(get_signed(&replica, &status_query, Some(sig)).await.0, 204);
    let stats = replica.app.calls().store().stats().await.unwrap();
    assert_eq!(stats.active, 0);
    replica.stop().await;
}

#[tokio::test]
async fn the_fallback_url_answers_the_fallback_message_whatever_the_reject_mode() {
    let replica = signed_replica(5).await;
    assert_eq!(
        replica.app.config().reject.mode,
        prosaas_calls::config::RejectMode::ServiceUnavailable
    );
    let params = [
        ("CallSid", "CA00000000000000000000000000000001"),
        ("ErrorCode", "11200"),
        ("ErrorUrl", "https://calls.example.com/twilio/voice"),
    ];
    let owned: Vec<(String, String)> = params
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    let sig = signature::compute(TOKEN, &format!("{PUBLIC}/twilio/fallback"), &owned);
    let response = post_form(&replica.url("/twilio/fallback"), &params, Some(&sig)).await;
    assert_eq!(response.status().as_u16(), 200);
    let body = response.text().await.unwrap();
    assert!(body.contains("<Say>All of our lines are busy"), "{body}");
    assert!(body.contains("<Hangup/>"), "{body}");

    // Unsigned: refused like every Twilio endpoint.
    let response = post_form(&replica.url("/twilio/fallback"), &params, None).await;
    assert_eq!(response.status().as_u16(), 403);

    // By GET too.
    let query = "/twilio/fallback?ErrorCode=11205";
    let sig = signature::compute::<&str, &str>(TOKEN, &format!("{PUBLIC}{query}"), &[]);
    let (status, body) = get_signed(&replica, query, Some(sig)).await;
    assert_eq!(status, 200);
    assert!(body.contains("<Say>"), "{body}");
    replica.stop().await;
}

#[tokio::test]
async fn a_503_says_why() {
    let replica = Replica::start(raw(None, 1), StreamTimeouts::default()).await;
    // A live stream keeps the replica serving HTTP while it drains.
    let stream = live_call(&replica, 1).await;
    let (status, body) = voice(&replica, &sid(2)).await;
    assert_eq!(status, 503);
    assert_eq!(body, "all lines are busy\n");

    replica.begin_drain();
    let (status, body) = voice(&replica, &sid(3)).await;
    assert_eq!(status, 503);
    assert_eq!(body, "this replica is draining\n");
    drop(stream);
}

#[tokio::test]
async fn labelled_counters_and_build_info_exist_from_start_up() {
    let replica = Replica::start(raw(None, 7), StreamTimeouts::default()).await;
    let text = client()
        .get(replica.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let value = |series: &str| -> Option<f64> {
        text.lines()
            .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
            .and_then(|v| v.trim().parse().ok())
    };
    for reason in [
        "max_concurrent",
        "draining",
        "recovering",
        "store_unavailable",
    ] {
        assert_eq!(
            value(&format!("calls_rejected_total{{reason=\"{reason}\"}}")),
            Some(0.0),
            "{reason}"
        );
    }
    for reason in [
        "stop",
        "disconnected",
        "idle_timeout",
        "drain_timeout",
        "lease_expired",
        "status_callback",
        "lock_lost",
    ] {
        assert_eq!(
            value(&format!("calls_ended_total{{reason=\"{reason}\"}}")),
            Some(0.0),
            "{reason}"
        );
    }
    for op in [
        "admit",
        "start_stream",
        "end_stream",
        "release",
        "renew",
        "connect",
    ] {
        assert_eq!(
            value(&format!("redis_errors_total{{op=\"{op}\"}}")),
            Some(0.0),
            "{op}"
        );
    }
    for reason in [
        "malformed",
        "bad_base64",
        "binary_frame",
        "too_large",
        "slow_consumer",
    ] {
        let series = format!("media_messages_dropped_total{{reason=\"{reason}\"}}");
        assert_eq!(value(&series), Some(0.0), "{reason}");
    }
    assert_eq!(
        value("http_requests_rejected_total{reason=\"bad_signature\"}"),
        Some(0.0)
    );
    assert_eq!(value("calls_reservations_lapsed_total"), Some(0.0));
    assert_eq!(value("calls_max_concurrent"), Some(7.0));
    let build = text
        .lines()
        .find(|l| l.starts_with("prosaas_calls_build_info{"))
        .expect("build info");
    assert!(
        build.contains(&format!("version=\"{}\"", env!("CARGO_PKG_VERSION"))),
        "{build}"
    );
    assert!(build.ends_with(" 1"), "{build}");
    assert!(value("process_resident_memory_bytes").unwrap() > 1e6);
    assert!(value("process_open_fds").unwrap() >= 3.0);
    assert!(value("process_cpu_seconds_total").is_some());
    tokio::time::timeout(Duration::from_secs(30), replica.stop())
        .await
        .expect("stops");
}

/// A webhook answered whose stream never comes is counted and its state keeps the stream URL
/// Twilio was given (the classic misconfiguration: a wrong `PUBLIC_URL`).
async fn lapsed_reservation_is_counted(redis: Option<&RedisServer>) {
    let mut config = raw(redis, 5);
    config.reservation_secs = Some("0.5".into());
    let replica = Replica::start(config, StreamTimeouts::default()).await;
    let (status, _) = voice(&replica, &sid(1)).await;
    assert_eq!(status, 200);
    let lapsed = eventually(Duration::from_secs(20), || async {
        let text = get_text(&replica.url("/metrics")).await.1;
        metric_value(&text, "calls_reservations_lapsed_total").filter(|v| *v >= 1.0)
    })
    .await;
    assert_eq!(lapsed, Some(1.0), "the lapsed reservation is counted once");
    let state = replica
        .app
        .calls()
        .store()
        .read_state(&CallSid::parse(&sid(1)).unwrap())
        .await
        .unwrap()
        .expect("state kept");
    assert_eq!(
        state.end_reason,
        Some(calls_core::state::EndReason::LeaseExpired)
    );
    let url = state.stream_url.expect("the stream URL given is kept");
    assert!(url.ends_with("/twilio/stream"), "{url}");
    // It is no stream that ended: calls_ended_total does not count it.
    let text = get_text(&replica.url("/metrics")).await.1;
    assert_eq!(
        metric_value(&text, "calls_ended_total{reason=\"lease_expired\"}"),
        Some(0.0)
    );
    replica.stop().await;
}

#[tokio::test]
async fn a_reservation_whose_stream_never_came_is_counted_in_process() {
    lapsed_reservation_is_counted(None).await;
}

#[tokio::test]
async fn a_reservation_whose_stream_never_came_is_counted_with_redis() {
    let redis = RedisServer::start().unwrap();
    lapsed_reservation_is_counted(Some(&redis)).await;
}
