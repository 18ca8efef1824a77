//! Secrets never leak (docs/reference.md#configuration): a password planted in `REDIS_URL`, a
//! `TWILIO_AUTH_TOKEN` and a `BRIDGE_HEADERS` token are sought in `--help`, start-up errors, trace
//! logs and every ops answer.

use std::process::{Command, Output};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use testkit::{RedisServer, ReplicaProcess};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use twilio::signature;

use crate::helpers::*;

const REDIS_PASSWORD: &str = "pl4nted-redis-pw";
const AUTH_TOKEN: &str = "pl4nted-twilio-token";
const BEARER: &str = "pl4nted-bridge-bearer";
const PUBLIC: &str = "https://calls.example.com";

fn bridge_headers() -> String {
    json!({"Authorization": format!("Bearer {BEARER}")}).to_string()
}

/// Fails naming where a planted secret showed up.
fn assert_no_secret(place: &str, text: &str) {
    for secret in [REDIS_PASSWORD, AUTH_TOKEN, BEARER] {
        assert!(
            !text.contains(secret),
            "{secret} leaked into {place}:\n{text}"
        );
    }
}

/// Runs the binary with only `env` (nothing inherited) and returns its output.
fn run(args: &[&str], env: &[(&str, String)]) -> Output {
    Command::new(binary())
        .env_clear()
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .args(args)
        .output()
        .expect("the binary runs")
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[test]
fn help_shows_no_secret_from_the_environment() {
    let env = [
        (
            "REDIS_URL",
            format!("redis://:{REDIS_PASSWORD}@redis.internal:6379/0"),
        ),
        ("TWILIO_AUTH_TOKEN", AUTH_TOKEN.to_owned()),
        ("BRIDGE_HEADERS", bridge_headers()),
        ("PUBLIC_URL", PUBLIC.to_owned()),
    ];
    for args in [&["serve", "--help"][..], &["--help"], &["serve", "-h"]] {
        let output = run(args, &env);
        assert!(output.status.success(), "{args:?}: {}", text(&output));
        let help = text(&output);
        // The help is there, and says which variable each flag reads...
        for var in [
            "REDIS_URL",
            "TWILIO_AUTH_TOKEN",
            "BRIDGE_HEADERS",
            "RESUME_LIMIT",
        ] {
            assert!(help.contains(var), "{args:?} lacks {var}:\n{help}");
        }
        // ...and shows non-secret values, so hiding is per flag, not everything.
        assert!(help.contains(&format!("PUBLIC_URL={PUBLIC}")), "{help}");
        assert_no_secret(&format!("{args:?}"), &help);
    }
}

#[test]
fn a_bad_configuration_names_every_variable_and_no_secret() {
    let env = [
        (
            "REDIS_URL",
            format!("redis://:{REDIS_PASSWORD}@redis.internal:notaport/0"),
        ),
        ("TWILIO_AUTH_TOKEN", AUTH_TOKEN.to_owned()),
        ("MEDIA_HANDLER", "bridge".to_owned()),
        ("BRIDGE_URL", "wss://agent.example.com/{nope}".to_owned()),
        // Not JSON (a trailing comma), with the token inside.
        (
            "BRIDGE_HEADERS",
            format!(r#"{{"Authorization":"Bearer {BEARER}",}}"#),
        ),
        ("RUST_LOG", "trace".to_owned()),
    ];
    let output = run(&["serve"], &env);
    assert_eq!(output.status.code(), Some(2), "{}", text(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    for var in ["REDIS_URL", "PUBLIC_URL", "BRIDGE_URL", "BRIDGE_HEADERS"] {
        assert!(
            stderr
                .lines()
                .any(|line| line.trim_start().starts_with(var)),
            "{var} not named:\n{stderr}"
        );
    }
    assert!(stderr.contains("redis.internal"), "{stderr}");
    assert_no_secret("a bad configuration's output", &text(&output));
}

/// The endpoints an operator or a balancer reads, concatenated with their statuses.
async fn ops_answers(replica: &ReplicaProcess) -> (u16, String, u16, Value, String) {
    let get = |path: &str| client().get(replica.url(path)).send();
    let ready = get("/readyz").await.unwrap();
    let ready_status = ready.status().as_u16();
    let ready_body = ready.text().await.unwrap();
    let metrics = get("/metrics.json").await.unwrap();
    let metrics_status = metrics.status().as_u16();
    let metrics_json: Value = serde_json::from_str(&metrics.text().await.unwrap()).unwrap();
    let prometheus = get("/metrics").await.unwrap().text().await.unwrap();
    (
        ready_status,
        ready_body,
        metrics_status,
        metrics_json,
        prometheus,
    )
}

/// This file's replicas: signatures on, every secret set, every log line written.
fn replicas(redis_url: String) -> ReplicaEnv {
    ReplicaEnv::new(redis_url, 50)
        .with("TWILIO_AUTH_TOKEN", AUTH_TOKEN)
        .with("PUBLIC_URL", PUBLIC)
        // Checked and then ignored (the handler is echo): its value must still never print.
        .with("BRIDGE_HEADERS", bridge_headers())
        .with("RUST_LOG", "trace")
        .leases(3, 0.5, 5)
}

/// Posts a signed voice webhook; returns (status, body).
async fn signed_voice(replica: &ReplicaProcess, call_sid: &str) -> (u16, String) {
    let params = [
        ("CallSid", call_sid),
        ("AccountSid", "AC0123456789abcdef0123456789abcdef"),
        ("From", "+15005550006"),
        ("To", "+15005550001"),
        ("CallStatus", "ringing"),
    ];
    let sig = signature::compute(AUTH_TOKEN, &format!("{PUBLIC}/twilio/voice"), &params);
    let response = post_form(&replica.url("/twilio/voice"), &params, Some(&sig)).await;
    let status = response.status().as_u16();
    (status, response.text().await.unwrap())
}

#[tokio::test]
async fn a_replica_at_trace_level_never_logs_or_serves_a_secret() {
    let redis = RedisServer::start_tcp_with_password(REDIS_PASSWORD).unwrap();
    assert!(redis.url().contains(REDIS_PASSWORD), "the URL carries it");
    let replica = replicas(redis.url()).spawn("secrets-1");

    let ready = eventually(Duration::from_secs(15), || async {
        let response = client().get(replica.url("/readyz")).send().await.ok()?;
        (response.status().as_u16() == 200).then_some(())
    })
    .await;
    assert!(ready.is_some(), "never ready: {}", replica.log());

    // One whole call: signed webhook, signed stream handshake, audio, stop.
    let call_sid = sid(1);
    let (status, twiml) = eventually(Duration::from_secs(15), || async {
        let (status, body) = signed_voice(&replica, &call_sid).await;
        (status == 200).then_some((status, body))
    })
    .await
    .unwrap_or_else(|| panic!("the call was never admitted: {}", replica.log()));
    assert_eq!(status, 200);
    let stream_url = stream_url_of(&twiml);
    let mut request = replica
        .url("/twilio/stream")
        .replace("http://", "ws://")
        .into_client_request()
        .unwrap();
    let no_params: [(&str, &str); 0] = [];
    request.headers_mut().insert(
        "x-twilio-signature",
        signature::compute(AUTH_TOKEN, &stream_url, &no_params)
            .parse()
            .unwrap(),
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    // The `start` carries the TwiML's parameters, its stream token among them
    // (docs/reference.md#stream-token), as Twilio's does.
    let parameters: serde_json::Map<String, serde_json::Value> =
        prosaas_calls_sim::webhook::connect_of(&twiml)
            .expect("a <Connect> answer")
            .parameters
            .into_iter()
            .map(|(name, value)| (name, value.into()))
            .collect();
    assert!(parameters.contains_key("token"), "{twiml}");
    let stream_sid = "MZ00000000000000000000000000000001";
    for message in [
        json!({"event": "connected", "protocol": "Call", "version": "1.0.0"}),
        json!({"event": "start", "sequenceNumber": "1", "streamSid": stream_sid,
               "start": {"accountSid": "AC0123456789abcdef0123456789abcdef",
                         "streamSid": stream_sid, "callSid": call_sid, "tracks": ["inbound"],
                         "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000,
                                         "channels": 1},
                         "customParameters": parameters}}),
        json!({"event": "media", "sequenceNumber": "2", "streamSid": stream_sid,
               "media": {"track": "inbound", "chunk": "1", "timestamp": "20",
                         "payload": *FRAME_B64}}),
    ] {
        ws.send(Message::Text(message.to_string().into()))
            .await
            .unwrap();
    }
    let echoed = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(Ok(message)) = ws.next().await {
            if message.is_text() {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(echoed.ok(), Some(true), "no echo: {}", replica.log());
    let stop = json!({"event": "stop", "sequenceNumber": "3", "streamSid": stream_sid,
                      "stop": {"accountSid": "AC0123456789abcdef0123456789abcdef",
                               "callSid": call_sid}});
    ws.send(Message::Text(stop.to_string().into()))
        .await
        .unwrap();
    let released = eventually(Duration::from_secs(10), || async {
        (redis.cli(&["GET", "calls:active_count"]).ok()? == "0").then_some(())
    })
    .await;
    assert!(released.is_some(), "{}", replica.log());
    // An unsigned request is refused and logged: still nothing of the token.
    let unsigned = post_form(&replica.url("/twilio/voice"), &[("CallSid", "CA1")], None).await;
    assert_eq!(unsigned.status().as_u16(), 403);

    let (ready_status, ready_body, metrics_status, metrics, prometheus) =
        ops_answers(&replica).await;
    assert_eq!(
        (ready_status, metrics_status),
        (200, 200),
        "{ready_body} {metrics}"
    );
    assert_no_secret("/readyz", &ready_body);
    assert_no_secret("/metrics.json", &metrics.to_string());
    assert_no_secret("/metrics", &prometheus);

    let log = replica.log();
    assert!(log.contains("TRACE"), "the log is at trace level");
    assert!(
        log.contains(&format!("redis://127.0.0.1:{}/0", redis_port(&redis))),
        "start-up names the Redis address: {log}"
    );
    assert_no_secret("the trace log", &log);
}

#[tokio::test]
async fn an_unreachable_or_refusing_redis_is_explained_without_a_secret() {
    let port = testkit::free_port().unwrap();
    let unreachable =
        replicas(format!("redis://:{REDIS_PASSWORD}@127.0.0.1:{port}/0")).spawn("secrets-2");
    let (status, _) = signed_voice(&unreachable, &sid(2)).await;
    assert_eq!(status, 503, "no store, no admission");
    let (ready_status, ready_body, metrics_status, metrics, prometheus) =
        ops_answers(&unreachable).await;
    assert_eq!(ready_status, 503);
    // The client retries a refused connection with a back-off; on a loaded machine that can
    // outlast /readyz's 1 s bound, which then says so. Either way a class, never the client's text.
    assert!(
        [
            "not ready: state store unreachable (connection refused)\n",
            "not ready: state store did not answer within 1 s\n",
        ]
        .contains(&ready_body.as_str()),
        "{ready_body:?}"
    );
    assert_eq!(metrics_status, 503);
    assert!(
        [
            "state store unreachable (connection refused)",
            "state store unreachable (connection failed)",
            "state store unreachable (no answer in time)",
        ]
        .contains(&metrics["error"].as_str().unwrap_or_default()),
        "{}",
        metrics["error"]
    );
    assert_no_secret("/readyz", &ready_body);
    assert_no_secret("/metrics.json", &metrics.to_string());
    assert_no_secret("/metrics", &prometheus);
    // The logged error names the server, so an operator knows which Redis is down.
    let address = format!("127.0.0.1:{port}");
    let named = eventually(Duration::from_secs(10), || async {
        let log = unreachable.log();
        log.lines()
            .any(|l| l.contains("WARN") && l.contains(&format!("at {address}")))
            .then_some(())
    })
    .await;
    assert!(
        named.is_some(),
        "no warning names {address}: {}",
        unreachable.log()
    );
    assert_no_secret("the trace log", &unreachable.log());

    // The right server with the wrong password: refused, and said so.
    let redis = RedisServer::start_tcp_with_password(REDIS_PASSWORD).unwrap();
    let wrong = redis
        .url()
        .replace(REDIS_PASSWORD, "wrong-password-not-secret");
    let refused = replicas(wrong).spawn("secrets-3");
    let (ready_status, ready_body, _, metrics, _) = ops_answers(&refused).await;
    assert_eq!(ready_status, 503);
    assert!(ready_body.contains("authentication failed"), "{ready_body}");
    assert_no_secret("/readyz", &ready_body);
    assert_no_secret("/metrics.json", &metrics.to_string());
    assert_no_secret("the trace log", &refused.log());
}

fn redis_port(redis: &RedisServer) -> u16 {
    let url = redis.url();
    let after_host = url.rsplit_once("127.0.0.1:").expect("a TCP server").1;
    after_host.trim_end_matches("/0").parse().expect("a port")
}

#[tokio::test]
async fn a_refused_signature_names_the_url_it_was_checked_against() {
    // The most common Twilio misconfiguration: PUBLIC_URL is not the URL Twilio signed. The log
    // line names the URL the replica checked, without the user:password a PUBLIC_URL may carry
    // and without a GET webhook's query (the caller's number).
    let env = [
        ("TWILIO_AUTH_TOKEN", AUTH_TOKEN.to_owned()),
        (
            "PUBLIC_URL",
            format!("https://ops:{REDIS_PASSWORD}@calls.example.com/base"),
        ),
    ];
    let replica = ReplicaProcess::spawn(binary(), "sig-log", &env).expect("replica starts");
    let params = [("CallSid", sid(1)), ("From", "+15005550006".to_owned())];
    let pairs: Vec<(&str, &str)> = params.iter().map(|(k, v)| (*k, v.as_str())).collect();
    // Signed over the URL Twilio would have used had the number pointed elsewhere.
    let elsewhere =
        signature::compute(AUTH_TOKEN, "https://other.example.com/twilio/voice", &pairs);
    let refused = post_form(&replica.url("/twilio/voice"), &pairs, Some(&elsewhere)).await;
    assert_eq!(refused.status().as_u16(), 403);
    let query = format!("/twilio/voice?CallSid={}&From=%2B15005550006", sid(2));
    let unsigned = client().get(replica.url(&query)).send().await.unwrap();
    assert_eq!(unsigned.status().as_u16(), 403);

    let log = eventually(Duration::from_secs(5), || async {
        let log = replica.log();
        (log.matches("checked_url=").count() >= 2).then_some(log)
    })
    .await
    .unwrap_or_else(|| replica.log());
    let lines: Vec<&str> = log.lines().filter(|l| l.contains("checked_url=")).collect();
    assert_eq!(lines.len(), 2, "{log}");
    for (line, reason, query) in [
        (lines[0], "bad_signature", false),
        (lines[1], "missing_signature", true),
    ] {
        assert!(
            line.contains("checked_url=https://***@calls.example.com/base/twilio/voice ")
                && line.contains(reason)
                && line.contains(&format!("query={query}")),
            "{line}"
        );
        assert!(
            !line.contains("+1500555") && !line.contains("%2B1500"),
            "{line}"
        );
    }
    assert_no_secret("the refused-signature log lines", &log);
}
