//! The drain keeps one deadline (docs/reference.md#drain): a call still streaming when
//! `DRAIN_TIMEOUT_SECS` passes is closed with 1001 as `drain_timeout`, a stream that arrives during
//! the drain is held to the same deadline, a drain with nothing open is over at once, and the real
//! binary exits 0 in time.

use std::path::Path;
use std::time::Duration;

use crate::helpers::{
    Replica, STOP_SLACK, TwilioStream, ended_state, raw, sid, stream_url_of, voice, voice_at,
};
use calls_core::state::EndReason;
use prosaas_calls::config::StreamTimeouts;
use testkit::ReplicaProcess;
use tokio::time::Instant;

const WAIT: Duration = Duration::from_secs(5);

#[tokio::test]
async fn a_call_past_the_drain_timeout_is_closed_with_1001() {
    let mut config = raw(None, 10);
    config.drain_timeout_secs = Some("0.3".into());
    let replica = Replica::start(config, StreamTimeouts::default()).await;
    let call = sid(7);
    let (status, twiml) = voice(&replica, &call).await;
    assert_eq!(status, 200, "{twiml}");
    let mut stream = TwilioStream::connect(&stream_url_of(&twiml)).await;
    stream.connected().await;
    stream.start(&call).await;
    stream.echo_round(3).await;

    replica.begin_drain();
    assert_eq!(stream.close_code(WAIT).await, Some(1001));
    let state = ended_state(&replica, &call).await;
    assert_eq!(state.end_reason, Some(EndReason::DrainTimeout));
    // docs/reference.md#hand-over: the caller continues elsewhere; its slot waits for that.
    assert_eq!(replica.active().await, 1);
    replica.stop().await;
}

#[tokio::test]
async fn a_drain_with_nothing_open_is_over_at_once() {
    let mut config = raw(None, 10);
    config.drain_timeout_secs = Some("600".into());
    let replica = Replica::start(config, StreamTimeouts::default()).await;
    // Nowhere near the ten-minute deadline: with no stream to wait for, the drain stops at once.
    replica.begin_drain();
    let took = replica.wait_stopped(Duration::from_secs(30)).await;
    assert!(took < Duration::from_secs(30), "{took:?}");
}

/// The hole the drain had: with no live call at SIGTERM it stopped waiting for calls at once, then
/// waited for every stream with no limit while HTTP still took upgrades; a stream that started then
/// ran until its call ended. Now every stream open during the drain ends at the one deadline.
#[tokio::test]
async fn a_stream_that_arrives_during_the_drain_is_held_to_the_same_deadline() {
    let deadline = Duration::from_secs(2);
    let mut config = raw(None, 10);
    config.drain_timeout_secs = Some("2".into());
    // The start timeout (10 s) outlasts the deadline: only the drain can close these sockets.
    let replica = Replica::start(config, StreamTimeouts::default()).await;
    let (early, late) = (sid(1), sid(2));
    let (status, twiml) = voice(&replica, &early).await;
    assert_eq!(status, 200, "{twiml}");
    let url = stream_url_of(&twiml);
    assert_eq!(voice(&replica, &late).await.0, 200);
    // A socket opened before SIGTERM, not yet started: no call is live when the drain begins.
    let mut first = TwilioStream::connect(&url).await;
    first.connected().await;

    let drain_began = Instant::now();
    replica.begin_drain();
    assert!(replica.app.calls().live().is_empty());
    // Its `start` arrives during the drain: the reservation makes it a live call.
    first.start(&early).await;
    first.echo_round(2).await;
    // And a whole new stream arrives during the drain.
    let mut second = TwilioStream::connect(&url).await;
    second.connected().await;
    second.start(&late).await;
    second.echo_round(2).await;

    for stream in [&mut first, &mut second] {
        assert_eq!(
            stream.close_code(deadline + WAIT).await,
            Some(1001),
            "closed at the deadline"
        );
        assert!(drain_began.elapsed() >= deadline, "not before the deadline");
    }
    for call in [&early, &late] {
        let state = ended_state(&replica, call).await;
        assert_eq!(state.end_reason, Some(EndReason::DrainTimeout), "{call}");
    }
    // Both are handed over (docs/reference.md#hand-over): their slots wait for their new streams.
    assert_eq!(replica.active().await, 2);
    replica.wait_stopped(deadline + STOP_SLACK).await;
    let took = drain_began.elapsed();
    assert!(took <= deadline + STOP_SLACK, "{took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_a_live_stream_exits_0_by_the_deadline() {
    let deadline = Duration::from_secs(2);
    let binary = Path::new(env!("CARGO_BIN_EXE_prosaas-calls"));
    let replica = ReplicaProcess::spawn(
        binary,
        "draining",
        &[("DRAIN_TIMEOUT_SECS", "2".to_string())],
    )
    .expect("replica starts");
    let call = sid(1);
    let (status, twiml) = voice_at(&replica.url("/twilio/voice"), &call).await;
    assert_eq!(status, 200, "{twiml}");
    let mut stream =
        TwilioStream::connect(&format!("ws://127.0.0.1:{}/twilio/stream", replica.port)).await;
    stream.connected().await;
    stream.start(&call).await;
    stream.echo_round(2).await;

    let signalled = Instant::now();
    replica.signal("TERM").unwrap();
    // The call goes on through the drain, up to the deadline.
    stream.echo_round(5).await;
    assert_eq!(stream.close_code(deadline + WAIT).await, Some(1001));
    assert!(
        signalled.elapsed() >= deadline,
        "closed before the deadline"
    );
    // A few seconds past the deadline at most; the bounded wait is what measures it.
    let bound = deadline + Duration::from_secs(8);
    let (exit, replica) = tokio::task::spawn_blocking(move || {
        let mut replica = replica;
        let exit = replica.wait_exit(bound.saturating_sub(signalled.elapsed()));
        (exit, replica)
    })
    .await
    .unwrap();
    let exit = exit.unwrap_or_else(|err| panic!("{err}: {}", replica.log()));
    assert_eq!(exit, Some(0), "{}", replica.log());
    assert!(
        replica
            .log()
            .contains("ending the remaining calls as drain_timeout"),
        "{}",
        replica.log()
    );
}
