//! End-to-end over real sockets: a replica on a loopback port, a real redis-server (or in-process
//! state), and a Twilio-like client posting webhooks and streaming 20 ms frames.

use std::time::Duration;

use crate::helpers::*;
use calls_core::call_sid::CallSid;
use calls_core::state::{CallStatus, EndReason};
use prosaas_calls::config::RawConfig;
use prosaas_calls::config::StreamTimeouts;
use testkit::RedisServer;
use twilio::signature;

const WAIT: Duration = Duration::from_secs(5);

/// Webhook, TwiML, stream, 20 ms frames with dtmf and a mark, stop; then state and counts.
async fn full_call(replica: &Replica, redis: Option<&RedisServer>) {
    let call = sid(1);
    let (status, twiml) = voice(replica, &call).await;
    assert_eq!(status, 200, "{twiml}");
    // docs/reference.md#after-stream: the `<Connect action>` leads to the after-stream answer once
    // the stream closes.
    assert!(
        twiml.contains("<Connect action=\"http://")
            && twiml.contains("/twilio/after-stream?stream=0\"><Stream url=\"ws://"),
        "{twiml}"
    );
    let url = stream_url_of(&twiml);
    assert!(
        url.ends_with("/twilio/stream") && !url.contains('?'),
        "{url}"
    );
    assert_eq!(replica.active().await, 1);
    let reserved = replica
        .app
        .calls()
        .store()
        .read_state(&CallSid::parse(&call).unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(reserved.status, CallStatus::Reserved);
    assert_eq!(reserved.from.as_deref(), Some("+15005550006"));

    let mut stream = TwilioStream::connect(&url).await;
    stream.connected().await;
    stream.start(&call).await;
    let mut interval = tokio::time::interval(Duration::from_millis(20));
    for chunk in 1..=25u64 {
        interval.tick().await;
        stream.media(chunk, &FRAME_B64).await;
        if chunk == 10 {
            stream.dtmf("1").await;
            stream.dtmf("2").await;
            stream.dtmf("#").await;
        }
    }
    stream.mark("greeting-done").await;
    let mut echoed = 0;
    loop {
        let message = stream.recv_json(WAIT).await.expect("echo or mark");
        assert_eq!(message["streamSid"], stream.stream_sid.as_str());
        match message["event"].as_str() {
            Some("media") => {
                assert_eq!(message["media"]["payload"], FRAME_B64.as_str());
                echoed += 1;
            }
            Some("mark") => {
                assert_eq!(message["mark"]["name"], "greeting-done");
                break;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(echoed, 25, "every frame echoed before the mark");
    assert_eq!(replica.app.calls().live().len(), 1);
    stream.stop(&call).await;

    let state = ended_state(replica, &call).await;
    assert_eq!(state.end_reason, Some(EndReason::Stop));
    assert_eq!(state.frames_in, 25);
    assert_eq!(state.frames_out, 25);
    assert_eq!(state.bytes_in, 25 * 160);
    assert_eq!(state.dtmf, "12#");
    assert_eq!(state.marks, vec!["greeting-done".to_string()]);
    assert_eq!(
        state.stream_sid.as_deref(),
        Some(stream.stream_sid.as_str())
    );
    assert_eq!(
        state.custom_parameters.get("tenant").map(String::as_str),
        Some("acme")
    );
    assert_eq!(state.from.as_deref(), Some("+15005550006"));
    assert!(state.started_at.is_some() && state.ended_at.is_some());
    assert_eq!(state.media_format.unwrap().sample_rate, 8000);

    // The final state is written before the slot is released: wait for both.
    let stats = eventually(WAIT, || async {
        Some(replica.app.calls().store().stats().await.unwrap()).filter(|s| s.active == 0)
    })
    .await
    .expect("the slot is released");
    assert_eq!(stats.started, 1);
    if let Some(redis) = redis {
        assert_eq!(redis_cli(redis, &["GET", "calls:active_count"]).await, "0");
        assert_eq!(
            redis_cli(redis, &["EXISTS", &format!("calls:lock:{call}")]).await,
            "0"
        );
        let ttl: i64 = redis_cli(redis, &["TTL", &format!("calls:state:{call}")])
            .await
            .parse()
            .unwrap();
        assert!(
            ttl > 3500,
            "state kept for CALL_STATE_TTL_SECS after the end: {ttl}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_call_with_redis() {
    let redis = RedisServer::start().unwrap();
    let replica = Replica::start(raw(Some(&redis), 5), StreamTimeouts::default()).await;
    full_call(&replica, Some(&redis)).await;
    replica.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_call_in_process() {
    let replica = Replica::start(raw(None, 5), StreamTimeouts::default()).await;
    full_call(&replica, None).await;
    replica.stop().await;
}

#[tokio::test]
async fn retried_webhook_takes_no_second_slot() {
    let redis = RedisServer::start().unwrap();
    let replica = Replica::start(raw(Some(&redis), 5), StreamTimeouts::default()).await;
    let (first_status, first) = voice(&replica, &sid(1)).await;
    let (second_status, second) = voice(&replica, &sid(1)).await;
    assert_eq!((first_status, second_status), (200, 200));
    assert_eq!(first, second);
    let stats = replica.app.calls().store().stats().await.unwrap();
    assert_eq!((stats.active, stats.started), (1, 1));
    replica.stop().await;
}

#[tokio::test]
async fn over_the_limit_each_reject_mode_answers_as_configured() {
    let redis = RedisServer::start().unwrap();
    let replica = Replica::start(raw(Some(&redis), 1), StreamTimeouts::default()).await;
    assert_eq!(voice(&replica, &sid(1)).await.0, 200);
    let response = post_form(&replica.url("/twilio/voice"), &[("CallSid", &sid(2))], None).await;
    assert_eq!(response.status().as_u16(), 503);
    assert_eq!(response.headers()["retry-after"], "30");
    replica.stop().await;
    redis_cli(&redis, &["FLUSHALL"]).await;

    let twiml_mode = RawConfig {
        reject_mode: Some("twiml".into()),
        reject_message: Some("Busy <now> & later".into()),
        reject_redirect_url: Some("https://example.com/whatsapp?x=1&y=2".into()),
        ..raw(Some(&redis), 1)
    };
    let replica = Replica::start(twiml_mode, StreamTimeouts::default()).await;
    assert_eq!(voice(&replica, &sid(3)).await.0, 200);
    let (status, body) = voice(&replica, &sid(4)).await;
    assert_eq!(status, 200);
    assert!(
        body.contains("<Say>Busy &lt;now&gt; &amp; later</Say>"),
        "{body}"
    );
    assert!(
        body.contains("https://example.com/whatsapp?x=1&amp;y=2</Redirect>"),
        "{body}"
    );
    replica.stop().await;
    redis_cli(&redis, &["FLUSHALL"]).await;

    let busy = RawConfig {
        reject_mode: Some("busy".into()),
        ..raw(Some(&redis), 1)
    };
    let replica = Replica::start(busy, StreamTimeouts::default()).await;
    assert_eq!(voice(&replica, &sid(5)).await.0, 200);
    let (status, body) = voice(&replica, &sid(6)).await;
    assert_eq!(status, 200);
    assert!(body.contains("<Reject reason=\"busy\"/>"), "{body}");
    let stats = replica.app.calls().store().stats().await.unwrap();
    assert_eq!((stats.active, stats.rejected_max_concurrent), (1, 1));
    replica.stop().await;
}

#[tokio::test]
async fn status_callback_releases_once_and_is_idempotent() {
    let redis = RedisServer::start().unwrap();
    let replica = Replica::start(raw(Some(&redis), 5), StreamTimeouts::default()).await;
    let url = replica.url("/twilio/status");
    voice(&replica, &sid(1)).await;
    assert_eq!(replica.active().await, 1);
    let ringing = post_form(
        &url,
        &[("CallSid", &sid(1)), ("CallStatus", "in-progress")],
        None,
    )
    .await;
    assert_eq!(ringing.status().as_u16(), 204);
    assert_eq!(replica.active().await, 1);
    for _ in 0..2 {
        let done = post_form(
            &url,
            &[("CallSid", &sid(1)), ("CallStatus", "completed")],
            None,
        )
        .await;
        assert_eq!(done.status().as_u16(), 204);
    }
    assert_eq!(replica.active().await, 0);
    let state = ended_state(&replica, &sid(1)).await;
    assert_eq!(state.end_reason, Some(EndReason::StatusCallback));
    let unknown = post_form(
        &url,
        &[("CallSid", &sid(9)), ("CallStatus", "failed")],
        None,
    )
    .await;
    assert_eq!(unknown.status().as_u16(), 204);
    let missing = post_form(&url, &[("CallStatus", "completed")], None).await;
    assert_eq!(missing.status().as_u16(), 400);
    let stats = replica.app.calls().store().stats().await.unwrap();
    assert_eq!((stats.active, stats.started), (0, 1));
    replica.stop().await;
}

#[tokio::test]
async fn bad_webhooks_get_4xx_and_change_nothing() {
    let redis = RedisServer::start().unwrap();
    let replica = Replica::start(raw(Some(&redis), 5), StreamTimeouts::default()).await;
    let url = replica.url("/twilio/voice");
    let no_sid = post_form(&url, &[("From", "+1")], None).await;
    assert_eq!(no_sid.status().as_u16(), 400);
    let bad_sid = post_form(&url, &[("CallSid", "CA}{")], None).await;
    assert_eq!(bad_sid.status().as_u16(), 400);
    let long_sid = post_form(&url, &[("CallSid", &"C".repeat(500))], None).await;
    assert_eq!(long_sid.status().as_u16(), 400);
    // Each of these is the status of one POST to the webhook with that Content-Type and body.
    let post = |content_type: &'static str, body: String| {
        let request = client()
            .post(&url)
            .header("content-type", content_type)
            .body(body);
        async move { request.send().await.unwrap().status().as_u16() }
    };
    let json = post("application/json", "{\"CallSid\":\"CA1\"}".into()).await;
    assert_eq!(json, 415);
    // Shorter than the form type: refused, not a panic on the prefix.
    assert_eq!(post("text", "CallSid=CA1".into()).await, 415);
    let form = "application/x-www-form-urlencoded";
    let huge = post(form, format!("CallSid=CA1&junk={}", "x".repeat(200_000))).await;
    assert_eq!(huge, 413);
    assert_eq!(redis_cli(&redis, &["GET", "calls:stats:started"]).await, "");
    assert_eq!(redis_cli(&redis, &["KEYS", "calls:state:*"]).await, "");
    // A media type's name is case-insensitive (RFC 9110 §8.3.1), and parameters may follow it.
    let shouting = "Application/X-WWW-Form-URLEncoded; charset=UTF-8";
    let body = format!("CallSid={}&From=%2B15005550006", sid(1));
    assert_eq!(post(shouting, body).await, 200);
    assert_eq!(
        redis_cli(&redis, &["GET", "calls:stats:started"]).await,
        "1"
    );
    replica.stop().await;
}

#[tokio::test]
async fn signatures_are_required_when_a_token_is_set() {
    let redis = RedisServer::start().unwrap();
    let public = "https://calls.example.com";
    let token = "test-auth-token";
    let config = RawConfig {
        twilio_auth_token: Some(token.into()),
        public_url: Some(public.into()),
        ..raw(Some(&redis), 5)
    };
    let replica = Replica::start(config, StreamTimeouts::default()).await;
    let params = [("CallSid", sid(1)), ("From", "+15005550006".to_string())];
    let pairs: Vec<(&str, &str)> = params.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let owned: Vec<(String, String)> = params
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
    let voice_url = replica.url("/twilio/voice");

    let unsigned = post_form(&voice_url, &pairs, None).await;
    assert_eq!(unsigned.status().as_u16(), 403);
    let wrong = signature::compute("other-token", &format!("{public}/twilio/voice"), &owned);
    let forged = post_form(&voice_url, &pairs, Some(&wrong)).await;
    assert_eq!(forged.status().as_u16(), 403);
    assert_eq!(redis_cli(&redis, &["KEYS", "calls:state:*"]).await, "");
    assert_eq!(redis_cli(&redis, &["ZCARD", "calls:slots"]).await, "0");

    let good = signature::compute(token, &format!("{public}/twilio/voice"), &owned);
    let signed = post_form(&voice_url, &pairs, Some(&good)).await;
    assert_eq!(signed.status().as_u16(), 200);
    let twiml = signed.text().await.unwrap();
    let stream_url = stream_url_of(&twiml);
    assert_eq!(stream_url, "wss://calls.example.com/twilio/stream");

    // The WebSocket handshake is signed over the stream URL exactly as the TwiML gave it: unsigned,
    // signed with another token, or signed over another URL, it is refused with 403.
    let local = format!("ws://{}/twilio/stream", replica.addr);
    let empty: [(String, String); 0] = [];
    assert_eq!(handshake_status(&local, None).await, 403, "unsigned");
    let other_token = signature::compute("other-token", &stream_url, &empty);
    assert_eq!(
        handshake_status(&local, Some(&other_token)).await,
        403,
        "signed with another token"
    );
    let other_url = signature::compute(token, "wss://elsewhere.example.com/twilio/stream", &empty);
    assert_eq!(
        handshake_status(&local, Some(&other_url)).await,
        403,
        "signed over another URL"
    );
    let good = signature::compute(token, &stream_url, &empty);
    assert_eq!(handshake_status(&local, Some(&good)).await, 101);

    let status_url = replica.url("/twilio/status");
    let status_params = [("CallSid", sid(1)), ("CallStatus", "completed".to_string())];
    let status_pairs: Vec<(&str, &str)> = status_params
        .iter()
        .map(|(k, v)| (*k, v.as_str()))
        .collect();
    let unsigned = post_form(&status_url, &status_pairs, None).await;
    assert_eq!(unsigned.status().as_u16(), 403);
    assert_eq!(
        replica.active().await,
        1,
        "a forged status callback frees nothing"
    );
    let owned: Vec<(String, String)> = status_params
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
    let sig = signature::compute(token, &format!("{public}/twilio/status"), &owned);
    let signed = post_form(&status_url, &status_pairs, Some(&sig)).await;
    assert_eq!(signed.status().as_u16(), 204);
    assert_eq!(replica.active().await, 0);
    replica.stop().await;
}

/// The HTTP status of a WebSocket handshake to `url` (101 when it upgrades), signed with
/// `signature` if given.
async fn handshake_status(url: &str, signature: Option<&str>) -> u16 {
    use tokio_tungstenite::tungstenite::Error;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut request = url.into_client_request().unwrap();
    if let Some(sig) = signature {
        request
            .headers_mut()
            .insert("x-twilio-signature", sig.parse().unwrap());
    }
    match tokio_tungstenite::connect_async(request).await {
        Ok((mut ws, response)) => {
            ws.close(None).await.unwrap();
            response.status().as_u16()
        }
        Err(Error::Http(response)) => response.status().as_u16(),
        Err(other) => panic!("handshake failed without an HTTP answer: {other}"),
    }
}
