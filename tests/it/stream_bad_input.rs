//! Bad input on a media stream (docs/reference.md#media-stream): each case gets its counter or
//! close code, leaks no slot, and leaves a second live call on the same replica streaming
//! undisturbed.

use std::time::Duration;

use crate::helpers::*;
use calls_core::call_sid::CallSid;
use calls_core::state::{CallStatus, EndReason};
use futures_util::{SinkExt, StreamExt};
use prosaas_calls::config::StreamTimeouts;
use testkit::RedisServer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(5);

fn short_timeouts() -> StreamTimeouts {
    StreamTimeouts {
        idle: Duration::from_millis(1500),
        start: Duration::from_millis(800),
        write_stall: Duration::from_millis(800),
    }
}

fn dropped(replica: &Replica, reason: &str) -> u64 {
    let text = replica.app.metrics().render();
    let needle = format!("media_messages_dropped_total{{reason=\"{reason}\"}} ");
    text.lines()
        .find_map(|line| line.strip_prefix(&needle))
        .map(|v| v.trim().parse().unwrap())
        .unwrap_or(0)
}

async fn ended_with(replica: &Replica, n: usize, reason: EndReason) {
    assert_eq!(ended_state(replica, &sid(n)).await.end_reason, Some(reason));
}

async fn setup() -> (RedisServer, Replica, TwilioStream) {
    let redis = RedisServer::start().unwrap();
    let replica = Replica::start(raw(Some(&redis), 10), short_timeouts()).await;
    let bystander = live_call(&replica, 100).await;
    (redis, replica, bystander)
}

/// The bystander still echoes, still holds exactly its slot, and the replica is whole.
async fn bystander_fine(replica: &Replica, bystander: &mut TwilioStream, expect_active: u64) {
    bystander.echo_round(3).await;
    let settled = eventually(WAIT, || async {
        Some(replica.active().await).filter(|a| *a == expect_active)
    })
    .await;
    assert_eq!(settled, Some(expect_active), "no slot leaked or lost");
}

#[tokio::test]
async fn garbage_messages_are_counted_and_dropped() {
    let (_redis, replica, mut bystander) = setup().await;
    let mut call = live_call(&replica, 1).await;
    call.ws
        .send(Message::Text("not json at all".into()))
        .await
        .unwrap();
    call.ws
        .send(Message::Binary(vec![1u8, 2, 3].into()))
        .await
        .unwrap();
    call.send(serde_json::json!({"event": "jump", "streamSid": call.stream_sid}))
        .await;
    call.send(serde_json::json!({"event": "media", "media": {"payload": "***not base64***"}}))
        .await;
    call.send(serde_json::json!({"no": "event"})).await;
    // Still live: the next real frame is echoed.
    call.echo_round(2).await;
    assert_eq!(dropped(&replica, "malformed"), 2);
    assert_eq!(dropped(&replica, "binary_frame"), 1);
    assert_eq!(dropped(&replica, "unknown_event"), 1);
    assert_eq!(dropped(&replica, "bad_base64"), 1);
    bystander_fine(&replica, &mut bystander, 2).await;
    call.stop(&sid(1)).await;
    ended_with(&replica, 1, EndReason::Stop).await;
    bystander_fine(&replica, &mut bystander, 1).await;
    replica.stop().await;
}

#[tokio::test]
async fn media_before_start_is_dropped_and_start_still_works() {
    let (_redis, replica, mut bystander) = setup().await;
    let (_, twiml) = voice(&replica, &sid(2)).await;
    let mut call = TwilioStream::connect(&stream_url_of(&twiml)).await;
    call.connected().await;
    call.media(1, &FRAME_B64).await;
    call.ws
        .send(Message::Binary(vec![0u8; 10].into()))
        .await
        .unwrap();
    call.start(&sid(2)).await;
    call.echo_round(1).await;
    assert_eq!(dropped(&replica, "media_before_start"), 1);
    bystander_fine(&replica, &mut bystander, 2).await;
    replica.stop().await;
}

#[tokio::test]
async fn a_message_over_64_kib_closes_with_1009() {
    let (_redis, replica, mut bystander) = setup().await;
    let mut call = live_call(&replica, 3).await;
    let huge = "A".repeat(70 * 1024);
    let _ = call
        .ws
        .send(Message::Text(
            format!("{{\"event\":\"media\",\"media\":{{\"payload\":\"{huge}\"}}}}").into(),
        ))
        .await;
    assert_eq!(call.close_code(WAIT).await, Some(1009));
    ended_with(&replica, 3, EndReason::MessageTooLarge).await;
    bystander_fine(&replica, &mut bystander, 1).await;
    replica.stop().await;
}

#[tokio::test]
async fn a_silent_socket_is_closed_as_idle_timeout() {
    let (_redis, replica, mut bystander) = setup().await;
    let mut call = live_call(&replica, 4).await;
    // The bystander keeps talking through the other call's silence.
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        bystander.echo_round(1).await;
    }
    assert_eq!(call.close_code(WAIT).await, Some(1000));
    ended_with(&replica, 4, EndReason::IdleTimeout).await;
    bystander_fine(&replica, &mut bystander, 1).await;
    replica.stop().await;
}

#[tokio::test]
async fn no_start_in_time_closes_with_1008() {
    let (_redis, replica, mut bystander) = setup().await;
    let (_, twiml) = voice(&replica, &sid(5)).await;
    let mut call = TwilioStream::connect(&stream_url_of(&twiml)).await;
    call.connected().await;
    assert_eq!(call.close_code(WAIT).await, Some(1008));
    assert_eq!(dropped(&replica, "no_start"), 1);
    // The reservation is untouched by a socket that never started; it lapses on its own.
    bystander_fine(&replica, &mut bystander, 2).await;
    replica.stop().await;
}

/// The largest a socket buffer may grow to on this machine (`net.ipv4.tcp_{r,w}mem`, third field).
fn kernel_buffer_max(name: &str) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/sys/net/ipv4/{name}")).unwrap();
    text.split_whitespace().nth(2).unwrap().parse().unwrap()
}

#[tokio::test]
async fn a_peer_that_stops_reading_is_closed_as_slow_consumer() {
    let (_redis, replica, bystander) = setup().await;
    let call = live_call(&replica, 6).await;
    // The bystander keeps talking (and clear of its idle timeout) through the other call's stall.
    let stop_talking = CancellationToken::new();
    let talker = tokio::spawn({
        let stop_talking = stop_talking.clone();
        async move {
            let mut bystander = bystander;
            while !stop_talking.is_cancelled() {
                bystander.echo_round(1).await;
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
            bystander
        }
    });
    // Large frames, never read: the echoes fill the kernel's buffers, then the replica's capped
    // write buffer; the replica must then stop reading instead of queueing more.
    const FRAMES: u64 = 4000;
    let payload = "/".repeat(48 * 1024);
    let frame_bytes = payload.len() as u64;
    let stop_sending = CancellationToken::new();
    let sender = tokio::spawn({
        let stop_sending = stop_sending.clone();
        async move {
            let mut call = call;
            let mut sent = 0u64;
            while sent < FRAMES {
                tokio::select! {
                    () = stop_sending.cancelled() => break,
                    done = tokio::time::timeout(Duration::from_secs(2), call.media(sent, &payload)) => {
                        if done.is_err() {
                            break; // pushed back: the replica stopped reading
                        }
                        sent += 1;
                    }
                }
            }
            (call, sent)
        }
    });
    ended_with(&replica, 6, EndReason::SlowConsumer).await;
    assert_eq!(dropped(&replica, "slow_consumer"), 1);

    // Read again at once: what was queued for the peer, then the close that says why.
    stop_sending.cancel();
    let (mut call, sent) = sender.await.expect("the sender did not panic");
    let mut echoed = 0u64;
    let close = loop {
        match tokio::time::timeout(WAIT, call.ws.next()).await {
            Ok(Some(Ok(Message::Text(text)))) => echoed += text.len() as u64,
            Ok(Some(Ok(Message::Close(frame)))) => break frame,
            other => panic!("expected the echoes, then a close frame; got {other:?}"),
        }
    };
    let close = close.expect("a close frame with a code");
    assert_eq!(u16::from(close.code), 1008);
    assert_eq!(close.reason.as_str(), "slow consumer");

    // Capped: what the replica took in is what it echoed plus what the kernel buffers on each way
    // hold (and its own write buffer, 64 KiB): nothing grew with the flood. Without the cap it
    // would have read every frame the peer sent, and the peer would never have been pushed back.
    let kernel = kernel_buffer_max("tcp_rmem") + kernel_buffer_max("tcp_wmem");
    let queue_cap = kernel + 64 * 1024 + 2 * (frame_bytes + 512);
    assert!(
        echoed <= queue_cap,
        "{echoed} bytes were queued for the peer"
    );
    assert!(sent < FRAMES, "the peer was never pushed back");
    assert!(
        sent * frame_bytes <= echoed + queue_cap + kernel,
        "the replica took {sent} frames for {echoed} echoed bytes"
    );
    stop_talking.cancel();
    let mut bystander = talker.await.expect("the bystander's echoes all came back");
    bystander_fine(&replica, &mut bystander, 1).await;
    replica.stop().await;
}

#[tokio::test]
async fn trickled_http_headers_are_dropped() {
    let (_redis, replica, mut bystander) = setup().await;
    let mut socket = tokio::net::TcpStream::connect(replica.addr).await.unwrap();
    socket
        .write_all(b"GET /healthz HTTP/1.1\r\n")
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let mut closed = false;
    for i in 0..30 {
        if socket
            .write_all(format!("X-Slow-{i}: y\r\n").as_bytes())
            .await
            .is_err()
        {
            closed = true;
            break;
        }
        let mut buf = [0u8; 256];
        match tokio::time::timeout(Duration::from_millis(500), socket.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                closed = true;
                break;
            }
            Ok(Ok(_)) => {
                closed = true; // an error response, then close
                break;
            }
            Err(_) => {}
        }
        // The live call keeps streaming meanwhile (and stays clear of its idle timeout).
        bystander.echo_round(1).await;
    }
    assert!(closed, "a trickling client must be dropped");
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_secs(9) && waited < Duration::from_secs(14),
        "{waited:?}"
    );
    bystander_fine(&replica, &mut bystander, 1).await;
    replica.stop().await;
}

#[tokio::test]
async fn a_second_stream_for_a_locked_call_is_refused_with_1008() {
    let redis = RedisServer::start().unwrap();
    let first = Replica::start(raw(Some(&redis), 10), short_timeouts()).await;
    let second = Replica::start(raw(Some(&redis), 10), short_timeouts()).await;
    let mut call = live_call(&first, 7).await;
    let mut intruder = TwilioStream::connect(&format!("ws://{}/twilio/stream", second.addr)).await;
    intruder.connected().await;
    intruder.start(&sid(7)).await;
    assert_eq!(intruder.close_code(WAIT).await, Some(1008));
    // Nothing of the first stream changed.
    call.echo_round(3).await;
    let state = first
        .app
        .calls()
        .store()
        .read_state(&CallSid::parse(&sid(7)).unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(state.status, CallStatus::Active);
    assert_eq!(state.stream_sid.as_deref(), Some(call.stream_sid.as_str()));
    assert_eq!(first.active().await, 1);
    call.stop(&sid(7)).await;
    let _ = call.ws.next().await;
    second.stop().await;
    first.stop().await;
}
