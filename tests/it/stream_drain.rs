//! A call still streaming when the drain timeout passes is closed with 1001 and ends as
//! `drain_timeout`, its slot released: the shutdown signal reaches a socket mid-call.

use std::time::Duration;

use crate::helpers::{Replica, TwilioStream, ended_state, raw, sid, stream_url_of, voice};
use calls_core::state::EndReason;
use prosaas_calls::config::StreamTimeouts;

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
    assert_eq!(stream.close_code(Duration::from_secs(5)).await, Some(1001));
    let state = ended_state(&replica, &call).await;
    assert_eq!(state.end_reason, Some(EndReason::DrainTimeout));
    assert_eq!(replica.app.calls.store().stats().await.unwrap().active, 0);
    replica.stop().await;
}
