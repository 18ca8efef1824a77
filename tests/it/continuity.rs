//! Calls that outlive their stream (SPEC §7, §9): the after-stream answer for each ending, the grant
//! that lets exactly one new stream take a call over, and with real processes behind a real nginx, a
//! replica killed under live calls and a rolling restart, both measured with the simulator.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::helpers::*;
use prosaas_calls::config::StreamTimeouts;
use prosaas_calls_sim::call::CallPlan;
use prosaas_calls_sim::report::Report;
use prosaas_calls_sim::run::{self, EchoMode, RunConfig};
use prosaas_calls_sim::target::Target;
use testkit::nginx::{NginxProcess, find_nginx};
use testkit::{RedisServer, ReplicaProcess, free_port};

const FALLBACK_MESSAGE: &str = "Sorry, we lost the line.";

/// Twilio's `<Connect action>` request for `call_sid`, answered by `base`.
async fn after_stream(base: &str, call_sid: &str, call_status: &str) -> (u16, String) {
    let response = post_form(
        &format!("{base}/twilio/after-stream"),
        &[
            ("CallSid", call_sid),
            ("AccountSid", "AC0123456789abcdef0123456789abcdef"),
            ("CallStatus", call_status),
        ],
        None,
    )
    .await;
    let status = response.status().as_u16();
    (status, response.text().await.unwrap())
}

/// A stream for `call_sid` whose `start` carries `parameters` as `customParameters`.
async fn stream_with(url: &str, call_sid: &str, parameters: Value) -> TwilioStream {
    let mut stream = TwilioStream::connect(url).await;
    stream.connected().await;
    let stream_sid = stream.stream_sid.clone();
    stream
        .send(json!({
            "event": "start",
            "sequenceNumber": "1",
            "streamSid": stream_sid,
            "start": {
                "accountSid": "AC0123456789abcdef0123456789abcdef",
                "streamSid": stream_sid,
                "callSid": call_sid,
                "tracks": ["inbound"],
                "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
                "customParameters": parameters,
            }
        }))
        .await;
    stream
}

/// The `<Parameter>`s of a `<Connect>` answer, by name.
fn parameters_of(twiml: &str) -> Value {
    let connect = prosaas_calls_sim::webhook::connect_of(twiml).expect("a <Connect> answer");
    connect
        .parameters
        .into_iter()
        .map(|(name, value)| (name, Value::from(value)))
        .collect::<serde_json::Map<_, _>>()
        .into()
}

async fn state(replica: &Replica, call_sid: &str) -> calls_core::state::CallState {
    let sid = calls_core::call_sid::CallSid::parse(call_sid).unwrap();
    replica
        .app
        .calls
        .store()
        .read_state(&sid)
        .await
        .unwrap()
        .expect("a stored state")
}

fn resumed_total(replica: &Replica) -> f64 {
    metric_value(&replica.app.metrics.render(), "calls_resumed_total").unwrap_or(-1.0)
}

/// SPEC §9 end to end on one replica with Redis and `MAX_CONCURRENT_CALLS=1`, `RESUME_LIMIT=1`: a
/// dropped stream is continued (its slot taken back above the limit); a forged stream, with or
/// without the used grant, is refused with 1008; the second loss gets the fallback; a call ended
/// by its caller, a finished call and an unknown call get `<Hangup/>`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_stream_hangs_up_falls_back_or_continues_by_the_state() {
    let redis = RedisServer::start().expect("redis-server");
    let mut raw = raw(Some(&redis), 1);
    raw.resume_limit = Some("1".into());
    raw.reject_message = Some(FALLBACK_MESSAGE.into());
    let replica = Replica::start(raw, StreamTimeouts::default()).await;
    let base = replica.url("");
    let call = sid(1);

    // The first stream: the webhook's TwiML names the action, built like the stream URL.
    let (status, twiml) = voice(&replica, &call).await;
    assert_eq!(status, 200, "{twiml}");
    let connect = prosaas_calls_sim::webhook::connect_of(&twiml).unwrap();
    assert_eq!(
        connect.action_url.as_deref(),
        Some(format!("http://{}/twilio/after-stream", replica.addr).as_str()),
        "{twiml}"
    );
    assert!(parameters_of(&twiml).get("resumed").is_none(), "{twiml}");
    let mut first = TwilioStream::connect(&connect.stream_url).await;
    first.connected().await;
    first.start(&call).await;
    first.echo_round(2).await;

    // The socket drops (no stop): the state says `disconnected` and the call is continued.
    drop(first);
    let ended = ended_state(&replica, &call).await;
    assert_eq!(ended.end_reason.map(|r| r.as_str()), Some("disconnected"));
    assert_eq!(active_count(&redis).await, 0);
    // Meanwhile another call takes the only slot.
    let (status, _) = voice(&replica, &sid(2)).await;
    assert_eq!(status, 200);
    let (status, answer) = after_stream(&base, &call, "in-progress").await;
    assert_eq!(status, 200, "{answer}");
    let again = prosaas_calls_sim::webhook::connect_of(&answer).expect("a continuation");
    assert_eq!(again.action_url, connect.action_url, "{answer}");
    assert_eq!(again.stream_url, connect.stream_url, "{answer}");
    let params = parameters_of(&answer);
    assert_eq!(params["resumed"], "1", "{answer}");
    assert_eq!(params["CallSid"], call.as_str());
    assert_eq!(params["from_number"], "+15005550006");
    assert_eq!(params["to_number"], "+15005550001");
    let granted = state(&replica, &call).await;
    assert_eq!((granted.resumes, granted.resume_grant), (1, Some(1)));

    // A stream without the grant cannot take the call the grant waits for.
    let mut forged = stream_with(&again.stream_url, &call, json!({"CallSid": call})).await;
    assert_eq!(forged.close_code(Duration::from_secs(5)).await, Some(1008));

    // The granted stream takes the call over, and its slot back above the limit.
    let mut resumed = stream_with(&again.stream_url, &call, params.clone()).await;
    resumed.echo_round(2).await;
    let live = state(&replica, &call).await;
    assert_eq!(live.status, calls_core::state::CallStatus::Active);
    assert_eq!((live.resumes, live.resume_grant), (1, None));
    assert_eq!(live.from.as_deref(), Some("+15005550006"), "carried over");
    assert_eq!(active_count(&redis).await, 2, "the live call is never dropped by the limiter");
    assert_eq!(resumed_total(&replica), 1.0);
    assert_eq!(
        redis_cli(&redis, &["GET", "calls:stats:started"]).await,
        "2",
        "a continued call is not counted as started again"
    );

    // The grant is spent: replaying it, or a stream without one, is refused; the call goes on.
    for parameters in [params.clone(), json!({"CallSid": call})] {
        let mut forged = stream_with(&again.stream_url, &call, parameters).await;
        assert_eq!(forged.close_code(Duration::from_secs(5)).await, Some(1008));
    }
    resumed.echo_round(1).await;

    // Lost again with RESUME_LIMIT=1 spent: the fallback.
    drop(resumed);
    ended_state(&replica, &call).await;
    let (status, answer) = after_stream(&base, &call, "in-progress").await;
    assert_eq!(status, 200);
    assert!(answer.contains(FALLBACK_MESSAGE), "{answer}");
    assert!(!answer.contains("<Stream"), "{answer}");

    // Ended by the caller: hang up. Twilio reporting the call over, or a call never seen: hang up.
    status_at(&base, &sid(2), "completed").await;
    let mut caller = live_call(&replica, 3).await;
    caller.stop(&sid(3)).await;
    ended_state(&replica, &sid(3)).await;
    for (call_sid, call_status) in [
        (sid(3), "in-progress"),
        (sid(4), "in-progress"),
        (sid(5), "completed"),
    ] {
        let (status, answer) = after_stream(&base, &call_sid, call_status).await;
        assert_eq!(status, 200);
        assert!(answer.contains("<Hangup/>"), "{call_sid}: {answer}");
        assert!(!answer.contains("<Stream"), "{call_sid}: {answer}");
    }
    let text = replica.app.metrics.render();
    assert_eq!(
        metric_value(&text, r#"calls_after_stream_total{answer="hangup"}"#),
        Some(3.0)
    );
    assert_eq!(
        metric_value(&text, r#"calls_after_stream_total{answer="continue"}"#),
        Some(1.0)
    );

    // A request without a CallSid is refused.
    let response = post_form(
        &format!("{base}/twilio/after-stream"),
        &[("CallStatus", "in-progress")],
        None,
    )
    .await;
    assert_eq!(response.status().as_u16(), 400);
    replica.stop().await;
}

/// `RESUME_LIMIT=0` turns continuation off: a lost stream gets the fallback at once.
#[tokio::test]
async fn no_continuation_with_resume_limit_zero() {
    let mut raw = raw(None, 5);
    raw.resume_limit = Some("0".into());
    raw.reject_message = Some(FALLBACK_MESSAGE.into());
    let replica = Replica::start(raw, StreamTimeouts::default()).await;
    let stream = live_call(&replica, 7).await;
    drop(stream);
    ended_state(&replica, &sid(7)).await;
    let (status, answer) = after_stream(&replica.url(""), &sid(7), "in-progress").await;
    assert_eq!(status, 200);
    assert!(answer.contains(FALLBACK_MESSAGE), "{answer}");
    assert_eq!(state(&replica, &sid(7)).await.resumes, 0);
    replica.stop().await;
}
