//! The simulator's Twilio REST double plays Twilio's side of placed calls against a real replica:
//! signed status callbacks in Twilio's order for every outcome, and an answered call's voice
//! webhook (`Direction=outbound-api`) and Media Stream, hung up by time or through the API.

use std::time::Duration;

use prosaas_calls::config::StreamTimeouts;
use serde_json::Value;
use testkit::twilio_api::{ACCOUNT_SID, TwilioApiDouble, sim_binary};
use twilio_api::{CallEvent, CallStatus, Credentials, EndCall, NewCall, Secret, TwilioClient};

use crate::helpers::*;

const TOKEN: &str = "double-e2e-token";
/// What Twilio is told (and signs); the double connects to the replica whatever the host.
const PUBLIC_URL: &str = "https://calls.example.com";

async fn replica() -> Replica {
    let mut raw = raw(None, 5);
    raw.twilio_auth_token = Some(TOKEN.into());
    raw.public_url = Some(PUBLIC_URL.into());
    Replica::start(raw, StreamTimeouts::default()).await
}

/// The double, signing with the replica's auth token, every connection to `replica`.
async fn double(replica: &Replica, args: &[&str]) -> TwilioApiDouble {
    let target = replica.url("");
    let mut all = vec![
        "--auth-token",
        TOKEN,
        "--dial-delay",
        "0.05",
        "--target",
        &target,
    ];
    all.extend_from_slice(args);
    let all: Vec<String> = all.into_iter().map(str::to_owned).collect();
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = all.iter().map(String::as_str).collect();
        TwilioApiDouble::spawn(sim_binary(), &args).expect("the Twilio REST double")
    })
    .await
    .unwrap()
}

fn client(double: &TwilioApiDouble) -> TwilioClient {
    let credentials = Credentials::auth_token(ACCOUNT_SID, Secret::new(TOKEN));
    TwilioClient::new(&double.base_url(), credentials).unwrap()
}

async fn place(client: &TwilioClient, to: &str) -> String {
    let url = format!("{PUBLIC_URL}/twilio/voice");
    let status_callback = format!("{PUBLIC_URL}/twilio/status");
    let call = client
        .create_call(&NewCall {
            to,
            from: "+14155550199",
            url: &url,
            timeout_secs: Some(30),
            status_callback: Some(&status_callback),
            status_callback_events: &CallEvent::ALL,
        })
        .await
        .unwrap();
    assert_eq!(call.status, CallStatus::Queued, "{call:?}");
    call.sid
}

/// The double's report of call `sid` once `ready` holds for it.
async fn call_report(
    double: &TwilioApiDouble,
    sid: &str,
    wait: Duration,
    ready: impl Fn(&Value) -> bool,
) -> Value {
    eventually(wait, || async {
        let calls: Vec<Value> = serde_json::from_str(&double.calls_json().ok()?).ok()?;
        calls.into_iter().find(|c| c["sid"] == sid && ready(c))
    })
    .await
    .unwrap_or_else(|| panic!("call {sid}: {}", double.calls_json().unwrap_or_default()))
}

/// Once the final callback was answered.
fn settled(call: &Value) -> bool {
    call["callbacks"]
        .as_array()
        .is_some_and(|c| c.iter().any(|c| c["event"] == "completed"))
}

/// `(event, CallStatus, the replica's answer)` of every callback, in order.
fn callbacks(call: &Value) -> Vec<(String, String, u64)> {
    call["callbacks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["event"].as_str().unwrap().to_owned(),
                c["call_status"].as_str().unwrap().to_owned(),
                c["http_status"].as_u64().unwrap_or(0),
            )
        })
        .collect()
}

fn triples(list: &[(&str, &str)]) -> Vec<(String, String, u64)> {
    // Every callback signed right: the replica checks X-Twilio-Signature and answers 204.
    list.iter()
        .map(|(e, s)| ((*e).to_owned(), (*s).to_owned(), 204))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_outcome_reaches_the_replica_as_twilio_reports_it() {
    let replica = replica().await;
    let double = double(
        &replica,
        &[
            "--ring-secs",
            "0.2",
            "--talk-secs",
            "1",
            "--no-answer-secs",
            "0.3",
            "--outcome",
            "+14155550102=busy",
            "--outcome",
            "+14155550103=no-answer",
            "--outcome",
            "+14155550104=failed",
        ],
    )
    .await;
    let client = client(&double);
    let answered = place(&client, "+14155550101").await;
    let busy = place(&client, "+14155550102").await;
    let no_answer = place(&client, "+14155550103").await;
    let failed = place(&client, "+14155550104").await;

    let wait = Duration::from_secs(20);
    let call = call_report(&double, &answered, wait, settled).await;
    assert_eq!(call["status"], "completed", "{call}");
    assert_eq!(call["media"], "completed", "{call}");
    assert!(call["duration_secs"].as_u64().unwrap() >= 1, "{call}");
    assert_eq!(
        callbacks(&call),
        triples(&[
            ("initiated", "initiated"),
            ("ringing", "ringing"),
            ("answered", "in-progress"),
            ("completed", "completed"),
        ])
    );
    // The replica saw a whole call: its webhook, a stream, a stop, and the final callback.
    let state = ended_state(&replica, &answered).await;
    assert_eq!(state.from.as_deref(), Some("+14155550199"));

    for (sid, status) in [(&busy, "busy"), (&no_answer, "no-answer")] {
        let call = call_report(&double, sid, wait, settled).await;
        assert_eq!(call["status"], status, "{call}");
        assert_eq!(call["media"], Value::Null, "{call}");
        assert_eq!(
            callbacks(&call),
            triples(&[
                ("initiated", "initiated"),
                ("ringing", "ringing"),
                ("completed", status)
            ])
        );
    }
    let call = call_report(&double, &failed, wait, settled).await;
    assert_eq!(
        callbacks(&call),
        triples(&[("initiated", "initiated"), ("completed", "failed")])
    );

    let summary: Value = serde_json::from_str(&double.summary_json().unwrap()).unwrap();
    let media = &summary["media"];
    assert_eq!(
        (media["webhooks"].as_u64(), media["streamed"].as_u64()),
        (Some(1), Some(1))
    );
    assert!(media["frames_sent"].as_u64().unwrap() >= 40, "{summary}");
    assert_eq!(media["frames_echoed"], media["frames_sent"], "{summary}");
    assert_eq!(summary["dialed_more_than_once"], serde_json::json!([]));
    replica.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_hung_up_through_the_api_stops_streaming_at_once() {
    let replica = replica().await;
    let double = double(&replica, &["--ring-secs", "0.1", "--talk-secs", "60"]).await;
    let client = client(&double);
    let sid = place(&client, "+14155550101").await;
    // Streaming: the replica holds the call live.
    eventually(Duration::from_secs(10), || async {
        let summary: Value = serde_json::from_str(&double.summary_json().ok()?).ok()?;
        (summary["media"]["frames_echoed"].as_u64()? > 5).then_some(())
    })
    .await
    .expect("the answered call streams");

    let started = tokio::time::Instant::now();
    let call = client.end_call(&sid, EndCall::HangUp).await.unwrap();
    assert_eq!(call.status, CallStatus::Completed);
    let report = call_report(&double, &sid, Duration::from_secs(10), settled).await;
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(report["media"], "completed", "{report}");
    assert_eq!(
        callbacks(&report).last().unwrap(),
        &("completed".to_owned(), "completed".to_owned(), 204)
    );
    ended_state(&replica, &sid).await;
    replica.stop().await;
}
