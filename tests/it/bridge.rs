//! `MEDIA_HANDLER=bridge` (docs/reference.md#bridge, #after-stream) over real sockets and a real
//! Redis, against the simulator's test agent: what the agent receives, what reaches Twilio, every
//! ending and what the caller hears next.

use std::time::Duration;

use calls_core::call_sid::CallSid;
use calls_core::state::{CallState, EndReason};
use futures_util::SinkExt;
use prosaas_calls::config::{RawConfig, StreamTimeouts};
use prosaas_calls_sim::agent::{AGENT_STREAM_SID, Agent, Behaviour, Received, tagged_payload};
use serde_json::Value;
use testkit::RedisServer;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::helpers::{
    FRAME_B64, Replica, TwilioStream, ended_state, eventually, metric_value, post_form, raw, sid,
    stream_url_of, voice,
};

const WAIT: Duration = Duration::from_secs(10);
const ACCOUNT: &str = "AC0123456789abcdef0123456789abcdef";

fn bridged(redis: &RedisServer, agent_url: &str) -> RawConfig {
    RawConfig {
        media_handler: Some("bridge".into()),
        bridge_url: Some(agent_url.into()),
        bridge_headers: Some(r#"{"Authorization":"Bearer agent-token","X-Team":"voice"}"#.into()),
        ..raw(Some(redis), 10)
    }
}

async fn agent(behaviour: Behaviour) -> Agent {
    Agent::start("127.0.0.1:0".parse().unwrap(), behaviour, true)
        .await
        .unwrap()
}

/// The agent's first session once it has ended.
async fn agent_session(agent: &Agent) -> Received {
    eventually(WAIT, || async {
        agent.sessions().into_iter().next().filter(|s| s.ended)
    })
    .await
    .expect("the agent's session ends")
}

/// Webhook, then the stream's handshake carrying an `X-Twilio-Signature` as Twilio's would.
async fn call(replica: &Replica, n: usize) -> TwilioStream {
    let (status, twiml) = voice(replica, &sid(n)).await;
    assert_eq!(status, 200, "{twiml}");
    let mut request = stream_url_of(&twiml).into_client_request().unwrap();
    request.headers_mut().insert(
        "x-twilio-signature",
        "c2lnbmVkLWJ5LXR3aWxpbw==".parse().unwrap(),
    );
    let (ws, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    TwilioStream::over(ws)
}

/// `connected` and `start` as raw text with odd spacing: the agent must get these bytes.
fn opening(stream: &TwilioStream, n: usize) -> (String, String) {
    let connected =
        r#"{ "event": "connected", "protocol": "Call", "version": "1.0.0" }"#.to_owned();
    let start = format!(
        r#"{{"event":"start","sequenceNumber":"1","start":{{"accountSid":"{ACCOUNT}","streamSid":"{sid}","callSid":"{call}","tracks":["inbound"],"mediaFormat":{{"encoding":"audio/x-mulaw","sampleRate":8000,"channels":1}},"customParameters":{{"CallSid":"{call}","from_number":"+15005550006"}}}},"streamSid":"{sid}"}}"#,
        sid = stream.stream_sid,
        call = sid(n),
    );
    (connected, start)
}

async fn send_opening(stream: &mut TwilioStream, n: usize) -> (String, String) {
    let (connected, start) = opening(stream, n);
    stream
        .ws
        .send(Message::Text(connected.clone().into()))
        .await
        .unwrap();
    stream
        .ws
        .send(Message::Text(start.clone().into()))
        .await
        .unwrap();
    (connected, start)
}

/// One labelled sample of a counter family, as `/metrics` shows it.
fn counter(replica: &Replica, family: &str, (name, value): (&str, &str)) -> u64 {
    let family = match family {
        "failures" => "bridge_failures_total",
        "dropped" => "bridge_messages_dropped_total",
        "messages" => "bridge_messages_total",
        _ => "calls_ended_total",
    };
    let sample = format!("{family}{{{name}=\"{value}\"}}");
    metric_value(&replica.app.metrics().render(), &sample).map_or(0, |v| v as u64)
}

/// The slot is gone cluster-wide (or, for an ending that continues, held for the continuation:
/// docs/reference.md#hand-over) and the call ended exactly once, for `reason`.
async fn released_once(
    replica: &Replica,
    redis: &RedisServer,
    n: usize,
    reason: EndReason,
) -> CallState {
    let state = ended_state(replica, &sid(n)).await;
    assert_eq!(state.end_reason, Some(reason), "{state:?}");
    let slots = if calls_core::store::hands_over(&state) {
        "1"
    } else {
        "0"
    };
    assert_eq!(redis.cli(&["GET", "calls:active_count"]).unwrap(), slots);
    assert_eq!(redis.cli(&["ZCARD", "calls:slots"]).unwrap(), slots);
    assert_eq!(counter(replica, "ended", ("reason", reason.as_str())), 1);
    let ended_total: u64 = EndReason::ALL
        .iter()
        .map(|r| counter(replica, "ended", ("reason", r.as_str())))
        .sum();
    assert_eq!(ended_total, 1, "one call, one ending");
    state
}

async fn after_stream(base: &str, n: usize) -> String {
    let response = post_form(
        &format!("{base}/twilio/after-stream"),
        &[
            ("CallSid", &sid(n)),
            ("AccountSid", ACCOUNT),
            ("CallStatus", "in-progress"),
        ],
        None,
    )
    .await;
    assert_eq!(response.status().as_u16(), 200);
    response.text().await.unwrap()
}

/// Reads Twilio-side messages until `until` says stop (or the socket closes).
async fn read_until(stream: &mut TwilioStream, until: impl Fn(&Value) -> bool) -> Vec<Value> {
    let mut seen = Vec::new();
    while let Some(message) = stream.recv_json(WAIT).await {
        let done = until(&message);
        seen.push(message);
        if done {
            break;
        }
    }
    seen
}

fn payload_of(message: &Value) -> &str {
    message["media"]["payload"].as_str().unwrap_or("")
}

#[tokio::test]
async fn the_agent_gets_twilio_bytes_headers_and_placeholders_and_audio_comes_back_under_the_calls_stream_sid()
 {
    let redis = RedisServer::start().unwrap();
    let agent = agent(Behaviour::Echo).await;
    let template =
        agent.url("/agent/{call_sid}?from={from}&to={to}&account={account_sid}&tenant={tenant}");
    let replica = Replica::start(bridged(&redis, &template), StreamTimeouts::default()).await;
    let metrics = reqwest::get(replica.url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for series in [
        r#"bridge_failures_total{reason="connect_timeout"} 0"#,
        r#"bridge_failures_total{reason="stalled"} 0"#,
        r#"bridge_messages_total{direction="to_agent"} 0"#,
        r#"bridge_messages_dropped_total{reason="unknown_event"} 0"#,
        r#"calls_ended_total{reason="agent_hangup"} 0"#,
        "bridges_open 0",
        "bridge_connect_duration_seconds_count 0",
    ] {
        assert!(metrics.contains(series), "{series} missing at start-up");
    }

    let mut stream = call(&replica, 1).await;
    let (connected, start) = send_opening(&mut stream, 1).await;
    // Sent at once, while the agent is still being dialled: they wait, in order.
    let payloads: Vec<String> = (1..=5)
        .map(|i| tagged_payload(&format!("frame-{i}")))
        .collect();
    for (i, payload) in payloads.iter().enumerate() {
        stream.media(i as u64 + 1, payload).await;
    }
    for payload in &payloads {
        let echo = stream
            .recv_json(WAIT)
            .await
            .expect("an echo through the agent");
        assert_eq!(echo["event"], "media");
        assert_eq!(
            echo["streamSid"],
            stream.stream_sid.as_str(),
            "rewritten from {AGENT_STREAM_SID}"
        );
        assert_eq!(payload_of(&echo), payload);
    }
    assert_eq!(replica.app.metrics().bridges_open.get(), 1);
    stream.mark("played-1").await;
    stream.dtmf("7").await;
    stream.stop(&sid(1)).await;
    assert!(stream.closed_within(WAIT).await);

    let session = agent_session(&agent).await;
    assert_eq!(session.messages[0], connected, "connected byte for byte");
    assert_eq!(session.messages[1], start, "start byte for byte");
    assert_eq!(
        session.events(),
        [
            "connected",
            "start",
            "media",
            "media",
            "media",
            "media",
            "media",
            "mark",
            "dtmf",
            "stop"
        ]
    );
    for (message, payload) in session.messages[2..7].iter().zip(&payloads) {
        assert!(message.contains(payload.as_str()), "in order: {message}");
    }
    assert_eq!(session.close_code, Some(1000));
    assert_eq!(
        session.path_and_query,
        format!(
            "/agent/{}?from=%2B15005550006&to=%2B15005550001&account={ACCOUNT}&tenant=",
            sid(1)
        )
    );
    assert_eq!(session.header("authorization"), Some("Bearer agent-token"));
    assert_eq!(session.header("x-team"), Some("voice"));
    assert_eq!(
        session.header("x-twilio-signature"),
        None,
        "{:?}",
        session.headers
    );
    for (name, _) in &session.headers {
        assert!(!name.starts_with("x-twilio"), "{name} went upstream");
    }

    let state = released_once(&replica, &redis, 1, EndReason::Stop).await;
    assert_eq!(state.frames_in, 5);
    assert_eq!(state.frames_out, 5);
    assert_eq!(state.dtmf, "7");
    assert_eq!(counter(&replica, "messages", ("direction", "to_agent")), 10);
    assert_eq!(counter(&replica, "messages", ("direction", "to_twilio")), 5);
    assert_eq!(replica.app.metrics().bridges_open.get(), 0);
    assert!(
        after_stream(&replica.url(""), 1)
            .await
            .contains("<Hangup/>")
    );
    replica.stop().await;
}

#[tokio::test]
async fn an_agent_hanging_up_closes_the_stream_with_1000_after_its_last_words() {
    let redis = RedisServer::start().unwrap();
    let agent = agent(Behaviour::HangUpAfter(3)).await;
    let replica = Replica::start(bridged(&redis, &agent.url("/")), StreamTimeouts::default()).await;
    let mut stream = call(&replica, 1).await;
    send_opening(&mut stream, 1).await;
    for chunk in 1..=3 {
        stream.media(chunk, &FRAME_B64).await;
    }
    let seen = read_until(&mut stream, |m| payload_of(m) == tagged_payload("bye")).await;
    assert_eq!(seen.len(), 4, "three echoes and the last words: {seen:?}");
    assert_eq!(stream.close_code(WAIT).await, Some(1000));
    released_once(&replica, &redis, 1, EndReason::AgentHangup).await;
    assert_eq!(agent_session(&agent).await.close_code, Some(1000));
    // Twilio asks what next: the call is over.
    assert!(
        after_stream(&replica.url(""), 1)
            .await
            .contains("<Hangup/>")
    );
    replica.stop().await;
}

#[tokio::test]
async fn an_unreachable_agent_is_answered_with_the_fallback_on_another_replica() {
    let redis = RedisServer::start().unwrap();
    let agent = agent(Behaviour::Refuse(403)).await;
    let mut config = bridged(&redis, &agent.url("/ws"));
    config.reject_message = Some("Our assistant is unavailable.".into());
    config.reject_redirect_url = Some("https://example.com/whatsapp".into());
    config.replica_id = Some("serving".into());
    let serving = Replica::start(config.clone(), StreamTimeouts::default()).await;
    config.replica_id = Some("other".into());
    let other = Replica::start(config, StreamTimeouts::default()).await;

    let mut stream = call(&serving, 1).await;
    send_opening(&mut stream, 1).await;
    stream.media(1, &FRAME_B64).await;
    assert_eq!(stream.close_code(WAIT).await, Some(1000));
    released_once(&serving, &redis, 1, EndReason::BridgeConnectFailed).await;
    assert_eq!(
        counter(&serving, "failures", ("reason", "handshake_rejected")),
        1
    );
    let session = agent_session(&agent).await;
    assert!(session.messages.is_empty());
    assert_eq!(session.header("authorization"), Some("Bearer agent-token"));

    // The state was written before the stream closed: the other replica answers from it at once.
    let twiml = after_stream(&other.url(""), 1).await;
    assert!(
        twiml.contains("<Say>Our assistant is unavailable.</Say>"),
        "{twiml}"
    );
    assert!(twiml.contains("<Redirect"), "{twiml}");
    assert!(twiml.contains("https://example.com/whatsapp"), "{twiml}");
    assert!(!twiml.contains("<Hangup/>"), "{twiml}");
    other.stop().await;
    serving.stop().await;
}

#[tokio::test]
async fn an_agent_that_never_answers_or_is_not_listening_fails_the_bridge_within_the_connect_timeout()
 {
    let redis = RedisServer::start().unwrap();
    let silent = agent(Behaviour::HangHandshake).await;
    let mut config = bridged(&redis, &silent.url("/"));
    config.bridge_connect_timeout_secs = Some("1".into());
    let replica = Replica::start(config, StreamTimeouts::default()).await;
    let mut stream = call(&replica, 1).await;
    send_opening(&mut stream, 1).await;
    let started = tokio::time::Instant::now();
    assert_eq!(stream.close_code(WAIT).await, Some(1000));
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(900),
        "gave up after {waited:?}"
    );
    released_once(&replica, &redis, 1, EndReason::BridgeConnectFailed).await;
    assert_eq!(
        counter(&replica, "failures", ("reason", "connect_timeout")),
        1
    );
    replica.stop().await;

    // Nothing listening: refused at once.
    let closed_port = testkit::free_port().unwrap();
    let redis = RedisServer::start().unwrap();
    let replica = Replica::start(
        bridged(&redis, &format!("ws://127.0.0.1:{closed_port}/")),
        StreamTimeouts::default(),
    )
    .await;
    let mut stream = call(&replica, 2).await;
    send_opening(&mut stream, 2).await;
    assert_eq!(stream.close_code(WAIT).await, Some(1000));
    released_once(&replica, &redis, 2, EndReason::BridgeConnectFailed).await;
    assert_eq!(
        counter(&replica, "failures", ("reason", "connect_refused")),
        1
    );
    let twiml = after_stream(&replica.url(""), 2).await;
    assert!(twiml.contains("<Say>"), "{twiml}");
    replica.stop().await;
}

#[tokio::test]
async fn an_agent_lost_mid_call_ends_as_bridge_lost_with_the_fallback() {
    let redis = RedisServer::start().unwrap();
    let agent = agent(Behaviour::DropAfter(2)).await;
    let replica = Replica::start(bridged(&redis, &agent.url("/")), StreamTimeouts::default()).await;
    let mut stream = call(&replica, 1).await;
    send_opening(&mut stream, 1).await;
    stream.media(1, &FRAME_B64).await;
    stream.media(2, &FRAME_B64).await;
    assert_eq!(stream.close_code(WAIT).await, Some(1000));
    released_once(&replica, &redis, 1, EndReason::BridgeLost).await;
    assert_eq!(counter(&replica, "failures", ("reason", "lost")), 1);
    assert!(after_stream(&replica.url(""), 1).await.contains("<Say>"));
    replica.stop().await;
}

#[tokio::test]
async fn an_agent_that_stops_reading_ends_as_bridge_stalled() {
    let redis = RedisServer::start().unwrap();
    let agent = agent(Behaviour::Stall).await;
    let timeouts = StreamTimeouts {
        write_stall: Duration::from_secs(1),
        ..StreamTimeouts::default()
    };
    let replica = Replica::start(bridged(&redis, &agent.url("/")), timeouts).await;
    let mut stream = call(&replica, 1).await;
    send_opening(&mut stream, 1).await;
    // Large messages fill the loopback buffers quickly; the replica stops reading them once its
    // queue is full, so these sends block too, and the test sends from a task of its own.
    let big = "A".repeat(48 * 1024);
    let stream_sid = stream.stream_sid.clone();
    let (mut sink, mut source) = futures_util::StreamExt::split(stream.ws);
    let sender = tokio::spawn(async move {
        let mut sent = 0u64;
        loop {
            let text = format!(
                r#"{{"event":"media","streamSid":"{stream_sid}","media":{{"payload":"{big}"}}}}"#
            );
            if sink.send(Message::Text(text.into())).await.is_err() {
                return sent;
            }
            sent += 1;
        }
    });
    let close = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(Ok(message)) = futures_util::StreamExt::next(&mut source).await {
            if let Message::Close(frame) = message {
                return frame.map(|f| u16::from(f.code));
            }
        }
        None
    })
    .await
    .expect("the stream closes");
    assert_eq!(close, Some(1000));
    sender.abort();
    released_once(&replica, &redis, 1, EndReason::BridgeStalled).await;
    assert_eq!(counter(&replica, "failures", ("reason", "stalled")), 1);
    assert!(after_stream(&replica.url(""), 1).await.contains("<Say>"));
    replica.stop().await;
}

#[tokio::test]
async fn a_clear_is_never_overtaken_and_marks_go_back_in_order() {
    let redis = RedisServer::start().unwrap();
    let agent = agent(Behaviour::BargeIn).await;
    let replica = Replica::start(bridged(&redis, &agent.url("/")), StreamTimeouts::default()).await;
    let mut stream = call(&replica, 1).await;
    send_opening(&mut stream, 1).await;
    let seen = read_until(&mut stream, |m| m["mark"]["name"] == "m2").await;
    let shape: Vec<String> = seen
        .iter()
        .map(|m| {
            assert_eq!(m["streamSid"], stream.stream_sid.as_str(), "{m}");
            match m["event"].as_str().unwrap() {
                "media" => format!("media:{}", payload_of(m)),
                "mark" => format!("mark:{}", m["mark"]["name"].as_str().unwrap()),
                other => other.to_owned(),
            }
        })
        .collect();
    let clear = shape
        .iter()
        .position(|s| s == "clear")
        .expect("the clear reached Twilio");
    let b1 = format!("media:{}", tagged_payload("b1"));
    // Nothing the agent sent before the clear comes after it; what it sent after comes after.
    assert_eq!(shape[clear + 1..], [b1, "mark:m2".to_owned()], "{shape:?}");
    let m1 = shape
        .iter()
        .position(|s| s == "mark:m1")
        .expect("mark m1 kept");
    assert!(m1 < clear);
    let before: Vec<&String> = shape[..clear]
        .iter()
        .filter(|s| s.starts_with("media"))
        .collect();
    for (got, want) in before.iter().zip(["a1", "a2", "a3"]) {
        assert_eq!(
            **got,
            format!("media:{}", tagged_payload(want)),
            "in order: {shape:?}"
        );
    }
    assert_eq!(
        counter(&replica, "dropped", ("reason", "cleared")),
        3 - before.len() as u64
    );
    // Twilio's mark echoes go back to the agent, in order.
    stream.mark("m1").await;
    stream.mark("m2").await;
    stream.stop(&sid(1)).await;
    let session = agent_session(&agent).await;
    let marks: Vec<&str> = session
        .messages
        .iter()
        .filter(|m| m.contains(r#""event":"mark""#))
        .map(|m| if m.contains("m1") { "m1" } else { "m2" })
        .collect();
    assert_eq!(marks, ["m1", "m2"]);
    released_once(&replica, &redis, 1, EndReason::Stop).await;
    replica.stop().await;
}

#[tokio::test]
async fn what_twilio_would_refuse_is_dropped_and_counted() {
    let redis = RedisServer::start().unwrap();
    let agent = agent(Behaviour::Junk).await;
    let replica = Replica::start(bridged(&redis, &agent.url("/")), StreamTimeouts::default()).await;
    let mut stream = call(&replica, 1).await;
    send_opening(&mut stream, 1).await;
    let first = stream.recv_json(WAIT).await.expect("the one valid message");
    assert_eq!(first["event"], "media");
    assert_eq!(
        payload_of(&first),
        tagged_payload("done"),
        "junk never reaches Twilio"
    );
    for reason in ["unknown_event", "binary_frame", "not_json", "bad_message"] {
        assert_eq!(
            counter(&replica, "dropped", ("reason", reason)),
            1,
            "{reason}"
        );
    }
    assert_eq!(
        counter(&replica, "messages", ("direction", "to_twilio")),
        0,
        "batched until the end"
    );
    stream.stop(&sid(1)).await;
    released_once(&replica, &redis, 1, EndReason::Stop).await;
    assert_eq!(counter(&replica, "messages", ("direction", "to_twilio")), 1);
    replica.stop().await;
}

#[tokio::test]
async fn twilio_closing_without_stop_sends_the_agent_a_stop_and_a_1000() {
    let redis = RedisServer::start().unwrap();
    let agent = agent(Behaviour::Echo).await;
    let replica = Replica::start(bridged(&redis, &agent.url("/")), StreamTimeouts::default()).await;
    let mut stream = call(&replica, 1).await;
    send_opening(&mut stream, 1).await;
    stream.echo_round_through_agent().await;
    stream.ws.close(None).await.unwrap();
    let session = agent_session(&agent).await;
    assert_eq!(session.events().last().map(String::as_str), Some("stop"));
    let stop: Value = serde_json::from_str(session.messages.last().unwrap()).unwrap();
    assert_eq!(stop["stop"]["callSid"], sid(1).as_str());
    assert_eq!(session.close_code, Some(1000));
    released_once(&replica, &redis, 1, EndReason::Disconnected).await;
    replica.stop().await;
}

#[tokio::test]
async fn a_refused_stream_dials_nothing() {
    let redis = RedisServer::start().unwrap();
    let agent = agent(Behaviour::Echo).await;
    let replica = Replica::start(bridged(&redis, &agent.url("/")), StreamTimeouts::default()).await;
    let mut first = call(&replica, 1).await;
    send_opening(&mut first, 1).await;
    first.echo_round_through_agent().await;
    // A second stream for the same call: refused (1008) before any dial.
    let mut second = TwilioStream::connect(&format!("ws://{}/twilio/stream", replica.addr)).await;
    send_opening(&mut second, 1).await;
    assert_eq!(second.close_code(WAIT).await, Some(1008));
    assert_eq!(agent.connections(), 1);
    first.stop(&sid(1)).await;
    released_once(&replica, &redis, 1, EndReason::Stop).await;
    let sid1 = CallSid::parse(&sid(1)).unwrap();
    assert!(replica.app.calls().live().get(&sid1).is_none());
    replica.stop().await;
}

impl TwilioStream {
    /// One frame to the echo agent and back under this stream's SID.
    async fn echo_round_through_agent(&mut self) {
        self.media(1, &FRAME_B64).await;
        let echo = self.recv_json(WAIT).await.expect("an echo");
        assert_eq!(echo["streamSid"], self.stream_sid.as_str());
        assert_eq!(payload_of(&echo), FRAME_B64.as_str());
    }
}

#[tokio::test]
async fn the_last_frames_before_stop_still_come_back() {
    let redis = RedisServer::start().unwrap();
    let agent = agent(Behaviour::Echo).await;
    let replica = Replica::start(bridged(&redis, &agent.url("/")), StreamTimeouts::default()).await;
    let mut stream = call(&replica, 1).await;
    send_opening(&mut stream, 1).await;
    stream.echo_round_through_agent().await;
    // A burst and the caller's `stop` right behind it: the echoes still in flight at the agent
    // when the `stop` arrives reach Twilio before its socket goes.
    let payloads: Vec<String> = (1..=20)
        .map(|i| tagged_payload(&format!("last-{i}")))
        .collect();
    for (i, payload) in payloads.iter().enumerate() {
        stream.media(i as u64 + 2, payload).await;
    }
    stream.stop(&sid(1)).await;
    let mut back = Vec::new();
    while let Some(message) = stream.recv_json(WAIT).await {
        back.push(payload_of(&message).to_owned());
    }
    assert_eq!(back, payloads, "every frame, in order");
    released_once(&replica, &redis, 1, EndReason::Stop).await;
    replica.stop().await;
}

/// A webhook for call `n` from `from` to `to`, then its stream's opening.
async fn call_from(replica: &Replica, n: usize, from: &str, to: &str) -> TwilioStream {
    let response = post_form(
        &replica.url("/twilio/voice"),
        &[
            ("CallSid", &sid(n)),
            ("AccountSid", ACCOUNT),
            ("From", from),
            ("To", to),
            ("CallStatus", "ringing"),
        ],
        None,
    )
    .await;
    assert_eq!(response.status().as_u16(), 200);
    let twiml = response.text().await.unwrap();
    let mut stream = TwilioStream::connect(&stream_url_of(&twiml)).await;
    send_opening(&mut stream, n).await;
    stream
}

#[tokio::test]
async fn a_callers_values_cannot_change_the_shape_of_the_agents_path() {
    let redis = RedisServer::start().unwrap();
    let agent = agent(Behaviour::Echo).await;
    let template = agent.url("/agent/{from}/media?to={to}&call={call_sid}");
    let replica = Replica::start(bridged(&redis, &template), StreamTimeouts::default()).await;

    // Caller IDs are the caller's to choose: every trick stays inside its one segment.
    let mut tricked = call_from(&replica, 1, "../../admin/%2F;x?y=1#z", "..").await;
    tricked.echo_round_through_agent().await;
    tricked.stop(&sid(1)).await;
    let session = agent_session(&agent).await;
    assert_eq!(
        session.path_and_query,
        format!(
            "/agent/..%2F..%2Fadmin%2F%252F%3Bx%3Fy%3D1%23z/media?to=..&call={}",
            sid(1)
        )
    );
    released_once(&replica, &redis, 1, EndReason::Stop).await;

    // A whole segment of dots would be resolved on the way (`/agent/../media` is `/media`): that
    // call is not dialled at all, and ends as an unreachable agent does.
    let mut dots = call_from(&replica, 2, "..", "+15005550001").await;
    assert_eq!(dots.close_code(WAIT).await, Some(1000));
    let state = ended_state(&replica, &sid(2)).await;
    assert_eq!(state.end_reason, Some(EndReason::BridgeConnectFailed));
    assert_eq!(counter(&replica, "failures", ("reason", "unsafe_url")), 1);
    assert_eq!(agent.connections(), 1, "the dots were never dialled");
    replica.stop().await;
}
