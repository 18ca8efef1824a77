//! The call's contract at its edges (docs/reference.md#endpoints to #media-stream), with a real
//! redis-server: streams without a reservation, peers that vanish, Redis failing at a stream's
//! start and end, retried webhooks, the TwiML's stream URL and parameters, and what the per-call
//! state holds and when it is written.

use std::time::Duration;

use crate::helpers::*;
use calls_core::state::EndReason;
use prosaas_calls::config::{RawConfig, StreamTimeouts};
use testkit::RedisServer;

/// Generous on purpose: a loaded 2-core CI box may be seconds late; each test asserts what ends
/// up true, not how fast.
const WAIT: Duration = Duration::from_secs(20);

fn stream_url(replica: &Replica) -> String {
    format!("ws://{}/twilio/stream", replica.addr)
}

/// `connected` and `start` for `call_sid` on a fresh socket, with no webhook before it.
async fn start_without_webhook(replica: &Replica, call_sid: &str) -> TwilioStream {
    let mut stream = TwilioStream::connect(&stream_url(replica)).await;
    stream.connected().await;
    stream.start(call_sid).await;
    stream
}

async fn metrics_text(replica: &Replica) -> String {
    let (status, text) = get_text(&replica.url("/metrics")).await;
    assert_eq!(status, 200, "{text}");
    text
}

/// Waits until this replica has no socket open and serves no call: nothing of a closed stream
/// lingers in the process.
async fn nothing_live(replica: &Replica) {
    let idle = eventually(WAIT, || async {
        let sockets = metric_value(&metrics_text(replica).await, "websocket_sockets_open");
        (replica.app.calls().live().is_empty() && sockets == Some(0.0)).then_some(())
    })
    .await;
    assert!(
        idle.is_some(),
        "a closed stream left a live call or an open socket behind:\n{}",
        metrics_text(replica).await
    );
}

/// `<Parameter name value>` pairs of the TwiML's `<Stream>`, entities left as written.
fn twiml_parameters(twiml: &str) -> Vec<(String, String)> {
    twiml
        .split("<Parameter ")
        .skip(1)
        .map(|tag| {
            let attr = |name: &str| {
                let start = tag.find(&format!("{name}=\"")).expect(name) + name.len() + 2;
                tag[start..start + tag[start..].find('"').unwrap()].to_owned()
            };
            (attr("name"), attr("value"))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_without_a_reservation_is_admitted_at_start_and_refused_over_the_limit() {
    let redis = RedisServer::start().unwrap();
    let replica = Replica::start(raw(Some(&redis), 1), StreamTimeouts::default()).await;

    // An outbound call or a <Start><Stream>: no webhook, the stream's start takes the slot.
    let mut first = start_without_webhook(&replica, &sid(1)).await;
    first.echo_round(2).await;
    assert_eq!(active_count(&redis).await, 1);
    assert_eq!(
        redis_cli(&redis, &["GET", "calls:stats:started"]).await,
        "1"
    );
    let state = redis_state(&redis, &sid(1)).await;
    assert_eq!(state["status"], "active", "{state}");
    assert_eq!(state["account_sid"], "AC0123456789abcdef0123456789abcdef");

    // Over the limit: counted as rejected and closed with 1013; the live call is untouched.
    let mut second = start_without_webhook(&replica, &sid(2)).await;
    assert_eq!(second.close_code(WAIT).await, Some(1013));
    assert_eq!(
        redis_cli(&redis, &["GET", "calls:stats:rejected_max_concurrent"]).await,
        "1"
    );
    assert_eq!(
        metric_value(
            &metrics_text(&replica).await,
            "calls_rejected_max_concurrent_total"
        ),
        Some(1.0)
    );
    assert_eq!(active_count(&redis).await, 1);
    assert_eq!(
        redis_cli(&redis, &["EXISTS", &format!("calls:lock:{}", sid(2))]).await,
        "0",
        "a refused stream leaves no lock"
    );
    first.echo_round(2).await;
    first.stop(&sid(1)).await;
    count_converges(&redis, 0, 0..=1, WAIT).await;
    replica.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_goes_away_without_stop_ends_the_call_as_disconnected() {
    let redis = RedisServer::start().unwrap();
    let replica = Replica::start(raw(Some(&redis), 5), StreamTimeouts::default()).await;
    // One peer closes the WebSocket properly, the other just drops the TCP connection.
    let mut closing = live_call(&replica, 1).await;
    let dropping = live_call(&replica, 2).await;
    assert_eq!(active_count(&redis).await, 2);
    closing.ws.close(None).await.unwrap();
    drop(dropping);
    for n in 1..=2 {
        let state = ended_state(&replica, &sid(n)).await;
        assert_eq!(state.end_reason, Some(EndReason::Disconnected), "call {n}");
        assert_eq!(state.frames_in, 1, "call {n}");
    }
    for n in 1..=2 {
        assert_eq!(
            redis_cli(&redis, &["EXISTS", &format!("calls:lock:{}", sid(n))]).await,
            "0"
        );
    }
    nothing_live(&replica).await;
    // Both calls continue (docs/reference.md#hand-over): their slots wait for the new streams,
    // until the calls' final status callbacks free them.
    assert_eq!(active_count(&redis).await, 2);
    for n in 1..=2 {
        status_at(&replica.url(""), &sid(n), "completed").await;
    }
    count_converges(&redis, 0, 0..=2, WAIT).await;
    replica.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_at_a_streams_start_closes_it_with_1013_and_leaks_nothing() {
    let mut redis = RedisServer::start().unwrap();
    let replica = Replica::start(raw(Some(&redis), 5), StreamTimeouts::default()).await;
    redis.stop();
    let mut stream = start_without_webhook(&replica, &sid(1)).await;
    assert_eq!(stream.close_code(WAIT).await, Some(1013));
    nothing_live(&replica).await;

    // Back again: once the replica's tick has run (its heartbeat is there), a call it still held
    // would have been re-registered in that same round trip. Nothing was.
    redis.start_again().unwrap();
    let ticked = eventually(WAIT, || async {
        let heartbeats = redis_cli(&redis, &["KEYS", "calls:replica:*"]).await;
        (!heartbeats.is_empty()).then_some(())
    })
    .await;
    assert!(ticked.is_some(), "no renewal tick after Redis came back");
    assert_eq!(redis_cli(&redis, &["ZCARD", "calls:slots"]).await, "0");
    assert_eq!(
        redis_cli(&redis, &["EXISTS", &format!("calls:lock:{}", sid(1))]).await,
        "0"
    );
    replica.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_failing_at_a_streams_end_ends_the_call_and_the_slot_lapses_with_its_lease() {
    let redis = RedisServer::start().unwrap();
    let config = RawConfig {
        call_lease_secs: Some("2".into()),
        ..raw(Some(&redis), 5)
    };
    let replica = Replica::start(config, StreamTimeouts::default()).await;
    let mut call = live_call(&replica, 1).await;
    // Redis stays up with its data but refuses every write, as a primary cut off from its
    // replicas does: the final state, the release and the lock release all fail.
    redis_cli(&redis, &["CONFIG", "SET", "min-replicas-to-write", "1"]).await;
    call.stop(&sid(1)).await;
    assert!(
        call.closed_within(WAIT).await,
        "the call did not end while Redis refused writes"
    );
    nothing_live(&replica).await;
    assert_ne!(
        redis_cli(&redis, &["ZSCORE", "calls:slots", &sid(1)]).await,
        "",
        "the release went through: this test no longer tests a failing Redis"
    );

    // Writable again: no one renews the ended call, so its lease lapses and a tick reclaims it.
    redis_cli(&redis, &["CONFIG", "SET", "min-replicas-to-write", "0"]).await;
    count_converges(&redis, 0, 0..=1, WAIT).await;
    assert_eq!(redis_cli(&redis, &["ZCARD", "calls:slots"]).await, "0");
    let ended = eventually(WAIT, || async {
        let state = redis_state(&redis, &sid(1)).await;
        (state["status"] == "ended").then_some(state)
    })
    .await;
    assert!(
        ended.is_some(),
        "state never ended: {}",
        redis_state(&redis, &sid(1)).await
    );
    replica.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_retried_after_the_stream_started_takes_no_second_slot() {
    let redis = RedisServer::start().unwrap();
    let replica = Replica::start(raw(Some(&redis), 5), StreamTimeouts::default()).await;
    let mut call = live_call(&replica, 1).await;
    let (status, twiml) = voice(&replica, &sid(1)).await;
    assert_eq!(status, 200, "admitted again: {twiml}");
    assert_eq!(active_count(&redis).await, 1);
    assert_eq!(
        redis_cli(&redis, &["GET", "calls:stats:started"]).await,
        "1"
    );
    // The live call's state is not reset to a reservation, and the stream goes on.
    let state = redis_state(&redis, &sid(1)).await;
    assert_eq!(state["status"], "active", "{state}");
    assert_eq!(state["stream_sid"], call.stream_sid.as_str(), "{state}");
    call.echo_round(2).await;
    call.stop(&sid(1)).await;
    count_converges(&redis, 0, 0..=1, WAIT).await;
    replica.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_retried_after_the_call_completed_takes_no_slot() {
    let redis = RedisServer::start().unwrap();
    let replica = Replica::start(raw(Some(&redis), 5), StreamTimeouts::default()).await;
    let mut call = live_call(&replica, 1).await;
    call.stop(&sid(1)).await;
    ended_state(&replica, &sid(1)).await;
    count_converges(&redis, 0, 0..=1, WAIT).await;

    let (status, body) = voice(&replica, &sid(1)).await;
    eprintln!("retried webhook after completion: HTTP {status}: {body}");
    assert_eq!(active_count(&redis).await, 0, "a finished call took a slot");
    assert_eq!(
        redis_cli(&redis, &["GET", "calls:stats:started"]).await,
        "1"
    );
    let state = redis_state(&redis, &sid(1)).await;
    assert_eq!(
        state["status"], "ended",
        "the final state was overwritten: {state}"
    );
    assert_eq!(state["end_reason"], "stop", "{state}");
    replica.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_retried_on_another_replica_takes_no_second_slot() {
    let redis = RedisServer::start().unwrap();
    let a = Replica::start(
        RawConfig {
            replica_id: Some("contract-a".into()),
            ..raw(Some(&redis), 5)
        },
        StreamTimeouts::default(),
    )
    .await;
    let b = Replica::start(
        RawConfig {
            replica_id: Some("contract-b".into()),
            ..raw(Some(&redis), 5)
        },
        StreamTimeouts::default(),
    )
    .await;
    let mut call = live_call(&a, 1).await;
    let (status, twiml) = voice(&b, &sid(1)).await;
    assert_eq!(status, 200, "admitted again: {twiml}");
    assert_eq!(active_count(&redis).await, 1);
    assert_eq!(
        redis_cli(&redis, &["GET", "calls:stats:started"]).await,
        "1"
    );
    let (_, metrics) = get_text(&b.url("/metrics.json")).await;
    let metrics: serde_json::Value = serde_json::from_str(&metrics).unwrap();
    assert_eq!(metrics["replica"]["calls_started"], 0, "{metrics}");
    let state = redis_state(&redis, &sid(1)).await;
    assert_eq!(state["status"], "active", "{state}");
    assert_eq!(state["replica"], "contract-a", "{state}");
    call.echo_round(2).await;
    call.stop(&sid(1)).await;
    count_converges(&redis, 0, 0..=1, WAIT).await;
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn without_public_url_the_stream_url_follows_the_forwarded_headers() {
    let replica = Replica::start(raw(None, 5), StreamTimeouts::default()).await;
    let form = format!("CallSid={}&From=%2B15005550006", sid(1));
    let twiml = |proto: Option<&'static str>, host: Option<&'static str>| {
        let mut request = client()
            .post(replica.url("/twilio/voice"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form.clone());
        if let Some(proto) = proto {
            request = request.header("x-forwarded-proto", proto);
        }
        if let Some(host) = host {
            request = request.header("x-forwarded-host", host);
        }
        async move {
            let response = request.send().await.unwrap();
            assert_eq!(response.status().as_u16(), 200);
            response.text().await.unwrap()
        }
    };
    assert_eq!(
        stream_url_of(&twiml(Some("https"), Some("calls.example.com")).await),
        "wss://calls.example.com/twilio/stream"
    );
    assert_eq!(
        stream_url_of(&twiml(Some("http"), Some("calls.example.com")).await),
        "ws://calls.example.com/twilio/stream"
    );
    assert_eq!(
        stream_url_of(&twiml(None, None).await),
        format!("ws://{}/twilio/stream", replica.addr)
    );
    replica.stop().await;
}

#[tokio::test]
async fn the_twiml_hands_call_sid_from_and_to_to_the_stream_as_parameters() {
    let replica = Replica::start(raw(None, 5), StreamTimeouts::default()).await;
    let (status, twiml) = voice(&replica, &sid(1)).await;
    assert_eq!(status, 200, "{twiml}");
    assert_eq!(
        twiml_parameters(&twiml),
        [
            ("CallSid".to_owned(), sid(1)),
            ("from_number".to_owned(), "+15005550006".to_owned()),
            ("to_number".to_owned(), "+15005550001".to_owned()),
        ],
        "{twiml}"
    );
    // Without From and To, only the call SID travels.
    let response = post_form(&replica.url("/twilio/voice"), &[("CallSid", &sid(2))], None).await;
    assert_eq!(response.status().as_u16(), 200);
    let twiml = response.text().await.unwrap();
    assert_eq!(
        twiml_parameters(&twiml),
        [("CallSid".to_owned(), sid(2))],
        "{twiml}"
    );
    assert!(!stream_url_of(&twiml).contains('?'), "{twiml}");
    replica.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_state_holds_the_webhooks_fields_and_counters_flush_on_the_tick_not_per_frame() {
    let redis = RedisServer::start().unwrap();
    // One tick a second: the 200-frame window below spans a tick or two, never a hundred.
    let config = RawConfig {
        renew_interval_secs: Some("1".into()),
        ..raw(Some(&redis), 5)
    };
    let replica = Replica::start(config, StreamTimeouts::default()).await;
    let replica_id = replica.app.config().replica_id.clone();
    let (status, twiml) = voice(&replica, &sid(1)).await;
    assert_eq!(status, 200, "{twiml}");
    let reserved = redis_state(&redis, &sid(1)).await;
    assert_eq!(reserved["status"], "reserved", "{reserved}");
    assert_eq!(reserved["call_sid"], sid(1).as_str());
    assert_eq!(
        reserved["account_sid"],
        "AC0123456789abcdef0123456789abcdef"
    );
    assert_eq!(reserved["from"], "+15005550006");
    assert_eq!(reserved["to"], "+15005550001");
    assert_eq!(reserved["replica"], replica_id.as_str());
    let created_at = reserved["created_at"]
        .as_str()
        .expect("created_at")
        .to_owned();
    assert!(is_rfc3339(&created_at), "{created_at}");

    let mut call = TwilioStream::connect(&stream_url_of(&twiml)).await;
    call.connected().await;
    call.start(&sid(1)).await;
    call.echo_round(50).await;
    // Mid-call, the renewal tick writes the counters: they grow in Redis while the call is live.
    let flushed = eventually(WAIT, || async {
        let state = redis_state(&redis, &sid(1)).await;
        (state["frames_in"] == 50).then_some(state)
    })
    .await;
    let Some(flushed) = flushed else {
        panic!(
            "frames_in never reached 50 in Redis while the call was live: {}",
            redis_state(&redis, &sid(1)).await
        );
    };
    assert_eq!(flushed["status"], "active", "{flushed}");
    assert_eq!(flushed["frames_out"], 50, "{flushed}");
    assert_eq!(flushed["bytes_in"], 50 * 160, "{flushed}");
    assert_eq!(
        flushed["created_at"],
        created_at.as_str(),
        "kept from the webhook"
    );
    assert_eq!(flushed["to"], "+15005550001");
    assert_eq!(flushed["replica"], replica_id.as_str());
    let started_at = flushed["started_at"].as_str().expect("started_at");
    assert!(is_rfc3339(started_at) && started_at >= created_at.as_str());

    // 200 frames, sent back to back: no Redis command grows with them (a per-frame write would
    // add at least 200 calls of one command; the ticks in this window add a handful).
    let before = command_calls(&redis).await;
    for chunk in 1..=200u64 {
        call.media(chunk, &FRAME_B64).await;
    }
    for _ in 0..200 {
        let echoed = call.recv_json(WAIT).await.expect("an echo");
        assert_eq!(echoed["event"], "media");
    }
    let after = command_calls(&redis).await;
    let grown: Vec<(&String, u64)> = after
        .iter()
        .map(|(name, calls)| (name, calls - before.get(name).copied().unwrap_or(0)))
        .filter(|(_, delta)| *delta > 0)
        .collect();
    eprintln!("Redis commands during 200 frames: {grown:?}");
    for (name, delta) in &grown {
        assert!(*delta < 100, "{name} ran {delta} times during 200 frames");
    }

    call.stop(&sid(1)).await;
    let ended = ended_state(&replica, &sid(1)).await;
    assert_eq!(ended.frames_in, 250);
    assert_eq!(
        ended.account_sid.as_deref(),
        Some("AC0123456789abcdef0123456789abcdef")
    );
    assert_eq!(ended.to.as_deref(), Some("+15005550001"));
    assert_eq!(ended.created_at, created_at);
    replica.stop().await;
}

/// `2026-12-01T12:16:23Z`-shaped (fractions and offsets allowed): date, `T`, time.
fn is_rfc3339(text: &str) -> bool {
    let b = text.as_bytes();
    b.len() >= 20
        && b[4] == b'-'
        && b[7] == b'-'
        && b[10] == b'T'
        && b[13] == b':'
        && b[16] == b':'
        && [0..4, 5..7, 8..10, 11..13, 14..16, 17..19]
            .iter()
            .all(|r| b[r.clone()].iter().all(u8::is_ascii_digit))
}
