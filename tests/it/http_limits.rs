//! The HTTP server's own limits against a real replica process over real sockets: a request body
//! trickled past its deadline is cut, a replica holds at most `MAX_CONNECTIONS` connections, and
//! one out of file descriptors backs off and serves again once they free.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::*;

/// The body deadline of docs/reference.md#endpoints.
const BODY_DEADLINE: Duration = Duration::from_secs(10);

/// A voice webhook's body for call `n`, as Twilio would post it.
fn voice_body(n: usize) -> String {
    form_urlencoded::Serializer::new(String::new())
        .extend_pairs([
            ("CallSid", sid(n).as_str()),
            ("AccountSid", "AC0123456789abcdef0123456789abcdef"),
            ("From", "+15005550006"),
            ("To", "+15005550001"),
            ("CallStatus", "ringing"),
        ])
        .finish()
}

fn rejected(metrics: &str, reason: &str) -> Option<f64> {
    metric_value(
        metrics,
        &format!("http_requests_rejected_total{{reason=\"{reason}\"}}"),
    )
}

#[tokio::test]
async fn a_body_trickled_a_byte_a_second_is_cut_at_the_deadline_while_other_calls_are_answered() {
    let replica = testkit::ReplicaProcess::spawn(
        binary(),
        "trickle",
        &[("MAX_CONCURRENT_CALLS", "5".to_owned())],
    )
    .expect("replica starts");

    // Call 1's webhook: the headers at once, then its body one byte a second (minutes of it).
    let body = voice_body(1);
    let socket = TcpStream::connect(replica.addr()).await.unwrap();
    let (mut from_replica, mut to_replica) = socket.into_split();
    let head = format!(
        "POST /twilio/voice HTTP/1.1\r\nHost: {}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n",
        replica.addr(),
        body.len()
    );
    to_replica.write_all(head.as_bytes()).await.unwrap();
    let began = Instant::now();
    let trickler = tokio::spawn(async move {
        for byte in body.bytes() {
            if to_replica.write_all(&[byte]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    });

    // Meanwhile another caller's webhook on the same replica is answered as ever.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (status, twiml) = voice_at(&replica.url("/twilio/voice"), &sid(2)).await;
    assert_eq!(status, 200, "{twiml}");
    assert!(twiml.contains("<Stream"), "{twiml}");

    // The trickled request is answered 408 and its connection closed, at the deadline.
    let mut answer = Vec::new();
    let read = tokio::time::timeout(
        BODY_DEADLINE + Duration::from_secs(10),
        from_replica.read_to_end(&mut answer),
    )
    .await;
    let took = began.elapsed();
    trickler.abort();
    assert!(
        read.is_ok(),
        "a body trickled for {took:?} still holds its connection"
    );
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(
        took >= BODY_DEADLINE - Duration::from_millis(500),
        "cut after {took:?}, before the deadline"
    );

    // Counted and logged, and call 1 took nothing: only call 2 holds a slot.
    let (_, metrics) = get_text(&replica.url("/metrics")).await;
    assert_eq!(rejected(&metrics, "body_timeout"), Some(1.0), "{metrics}");
    let log = replica.log();
    assert!(
        log.lines()
            .any(|line| line.contains("request refused") && line.contains("body_timeout")),
        "{log}"
    );
    let (_, json) = get_text(&replica.url("/metrics.json")).await;
    let json: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(json["calls_active"], 1, "{json}");
}

/// Sends `GET path` (connection closed after) on `socket` and reads the whole answer, if one comes
/// within `wait`.
async fn get_on(mut socket: TcpStream, path: &str, wait: Duration) -> Option<String> {
    let request = format!("GET {path} HTTP/1.1\r\nHost: replica\r\nConnection: close\r\n\r\n");
    socket.write_all(request.as_bytes()).await.ok()?;
    let mut answer = Vec::new();
    tokio::time::timeout(wait, socket.read_to_end(&mut answer))
        .await
        .ok()?
        .ok()?;
    Some(String::from_utf8_lossy(&answer).into_owned())
}

fn status_of(answer: &str) -> &str {
    answer.split(' ').nth(1).unwrap_or("")
}

#[tokio::test]
async fn a_replica_serves_at_most_max_connections_and_still_answers_healthz_past_them() {
    const MAX: usize = 4;
    let replica = testkit::ReplicaProcess::spawn(
        binary(),
        "connections",
        &[
            ("MAX_CONCURRENT_CALLS", "5".to_owned()),
            ("MAX_CONNECTIONS", MAX.to_string()),
        ],
    )
    .expect("replica starts");
    let addr = replica.addr();
    let connect = || async move { TcpStream::connect(addr).await.unwrap() };
    let wait = Duration::from_secs(5);

    // The start-up health check's connection has closed by now.
    tokio::time::sleep(Duration::from_millis(300)).await;
    // MAX idle sockets take every served place (each for up to the 10 s header timeout).
    let mut served = Vec::new();
    for _ in 0..MAX {
        served.push(connect().await);
    }

    // Past them: liveness still answers, readiness and webhooks are refused at once.
    let healthz = get_on(connect().await, "/healthz", wait)
        .await
        .expect("healthz");
    assert_eq!(status_of(&healthz), "200", "{healthz}");
    let readyz = get_on(connect().await, "/readyz", wait)
        .await
        .expect("readyz");
    assert_eq!(status_of(&readyz), "503", "{readyz}");
    assert!(readyz.contains("connection limit"), "{readyz}");
    let mut voice = connect().await;
    let body = voice_body(1);
    let head = format!(
        "POST /twilio/voice HTTP/1.1\r\nHost: replica\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    voice.write_all(head.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(wait, voice.read_to_end(&mut answer))
        .await
        .expect("the webhook is answered")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert_eq!(status_of(&answer), "503", "{answer}");

    // Every overflow place held too: the next connection is not served at all (it waits in the
    // backlog) ...
    let mut overflow = Vec::new();
    for _ in 0..prosaas_calls::server::OVERFLOW_CONNECTIONS {
        overflow.push(connect().await);
    }
    let waiting = tokio::spawn(get_on(connect().await, "/readyz", Duration::from_secs(20)));
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        !waiting.is_finished(),
        "a connection past both bounds was served"
    );

    // ... until a served place frees: then it is served in full.
    drop(served.pop());
    let readyz = waiting.await.unwrap().expect("served once a place freed");
    assert_eq!(status_of(&readyz), "200", "{readyz}");

    let (_, metrics) = get_text(&replica.url("/metrics")).await;
    assert_eq!(
        rejected(&metrics, "connection_limit"),
        Some(2.0),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_replica_out_of_file_descriptors_backs_off_says_so_and_serves_once_they_free() {
    let replica = testkit::ReplicaProcess::spawn(
        binary(),
        "nofile",
        &[("MAX_CONCURRENT_CALLS", "5".to_owned())],
    )
    .expect("replica starts");
    let pid = replica.pid().expect("running");
    // The start-up health check's connection has closed by now.
    tokio::time::sleep(Duration::from_millis(300)).await;
    // A few descriptors more than it holds now: a few idle sockets take them all.
    let open = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("its descriptors")
        .count();
    let limit = open + 4;
    let limited = std::process::Command::new("prlimit")
        .arg(format!("--pid={pid}"))
        .arg(format!("--nofile={limit}:{limit}"))
        .status()
        .expect("prlimit runs");
    assert!(limited.success(), "prlimit --nofile on the replica");

    // Past them, connections wait in the backlog while accept fails: the replica says so and
    // stays up.
    let mut held = Vec::new();
    for _ in 0..12 {
        held.push(TcpStream::connect(replica.addr()).await.unwrap());
    }
    let logged = eventually(Duration::from_secs(5), || async {
        replica.log().contains("accept failed").then_some(())
    })
    .await;
    assert!(logged.is_some(), "{}", replica.log());

    // Once the idle sockets close, the descriptors free and the replica serves again.
    drop(held);
    let (status, twiml) = voice_at(&replica.url("/twilio/voice"), &sid(1)).await;
    assert_eq!(status, 200, "{twiml}");
    assert!(twiml.contains("<Stream"), "{twiml}");
    let (status, _) = get_text(&replica.url("/healthz")).await;
    assert_eq!(status, 200);
    // One line when the failures began, not one per retry or per turn of failing and succeeding;
    // one when accepts have gone a while (10 s) without failing.
    tokio::time::sleep(Duration::from_millis(10_500)).await;
    let (status, _) = get_text(&replica.url("/healthz")).await;
    assert_eq!(status, 200);
    let log = replica.log();
    assert_eq!(
        log.lines()
            .filter(|line| line.contains("accept failed"))
            .count(),
        1,
        "{log}"
    );
    assert!(
        log.lines().any(|line| line.contains("accepting again")),
        "{log}"
    );
}
