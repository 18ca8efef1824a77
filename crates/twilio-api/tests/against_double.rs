//! The client against the simulator's Twilio REST double, a real process: what it sends (as the
//! double recorded it), and every kind of answer typed as the server needs to tell them apart.

use std::time::{Duration, Instant};

use prosaas_calls_sim::rest_double::Recorded;
use testkit::twilio_api::{ACCOUNT_SID, TwilioApiDouble, sim_binary};
use twilio_api::{
    ApiError, CallEvent, CallStatus, Credentials, EndCall, NewCall, NewMessage, Secret,
    TwilioClient,
};

const TOKEN: &str = "double-auth-token";
const KEY_SID: &str = "SK0123456789abcdef0123456789abcdef";
const KEY_SECRET: &str = "double-key-secret";

fn double(extra: &[&str]) -> TwilioApiDouble {
    let mut args = vec!["--auth-token", TOKEN, "--api-key"];
    let key = format!("{KEY_SID}:{KEY_SECRET}");
    args.push(&key);
    args.extend_from_slice(extra);
    TwilioApiDouble::spawn(sim_binary(), &args).expect("the Twilio REST double")
}

fn with_key(double: &TwilioApiDouble) -> TwilioClient {
    let credentials = Credentials::api_key(ACCOUNT_SID, KEY_SID, Secret::new(KEY_SECRET));
    TwilioClient::new(&double.base_url(), credentials).unwrap()
}

fn recorded(double: &TwilioApiDouble, endpoint: &str) -> Vec<Recorded> {
    serde_json::from_str(&double.requests_json(Some(endpoint)).unwrap()).unwrap()
}

const WHATSAPP: NewMessage<'static> = NewMessage {
    from: "whatsapp:+14155238886",
    to: "whatsapp:+14155550100",
    body: "Sorry we missed your call: all of our lines were busy.",
};

#[tokio::test]
async fn a_message_is_sent_with_an_api_key_and_recorded_as_sent() {
    let double = double(&[]);
    let client = with_key(&double);
    let message = client.send_message(&WHATSAPP).await.unwrap();
    assert!(
        message.sid.starts_with("SM") && message.sid.len() == 34,
        "{message:?}"
    );
    assert_eq!(message.status, "queued");
    assert_eq!(message.to, WHATSAPP.to);

    let requests = recorded(&double, "messages");
    assert_eq!(requests.len(), 1, "{requests:?}");
    let request = &requests[0];
    assert_eq!(request.method, "POST");
    assert_eq!(
        request.path,
        format!("/2010-04-01/Accounts/{ACCOUNT_SID}/Messages.json")
    );
    assert_eq!(request.field("From"), Some(WHATSAPP.from));
    assert_eq!(request.field("To"), Some(WHATSAPP.to));
    assert_eq!(request.field("Body"), Some(WHATSAPP.body));
    let auth = request.auth.as_ref().unwrap();
    assert_eq!(
        (auth.user.as_str(), auth.kind.as_str()),
        (KEY_SID, "api_key")
    );
    assert_eq!(request.answer.status, Some(201));
    assert_eq!(request.answer.sid.as_deref(), Some(message.sid.as_str()));
    // The JSONL file holds the same record.
    let line = std::fs::read_to_string(double.record_file()).unwrap();
    let from_file: Recorded = serde_json::from_str(line.lines().next().unwrap()).unwrap();
    assert_eq!(&from_file, request);
}

#[tokio::test]
async fn the_auth_token_works_and_a_wrong_one_is_twilio_s_401() {
    let double = double(&[]);
    let good = Credentials::auth_token(ACCOUNT_SID, Secret::new(TOKEN));
    let client = TwilioClient::new(&double.base_url(), good).unwrap();
    client.send_message(&WHATSAPP).await.unwrap();

    let wrong = Credentials::auth_token(ACCOUNT_SID, Secret::new("not-the-token"));
    let client = TwilioClient::new(&double.base_url(), wrong).unwrap();
    let error = client.send_message(&WHATSAPP).await.unwrap_err();
    assert!(
        matches!(
            error,
            ApiError::Refused {
                status: 401,
                code: Some(20003),
                ..
            }
        ),
        "{error:?}"
    );
    assert!(!error.may_have_been_processed());
    let kinds: Vec<String> = recorded(&double, "messages")
        .iter()
        .map(|r| r.auth.as_ref().unwrap().kind.clone())
        .collect();
    assert_eq!(kinds, ["auth_token", "refused"]);
}

#[tokio::test]
async fn refusals_carry_twilio_s_status_code_and_message() {
    let double = double(&[]);
    let client = with_key(&double);
    // Twilio's own check: a WhatsApp sender and an SMS recipient are not the same channel.
    let mixed = NewMessage {
        to: "+14155550100",
        ..WHATSAPP
    };
    let error = client.send_message(&mixed).await.unwrap_err();
    assert_eq!((error.status(), error.code()), (Some(400), Some(21910)));

    double
        .set_behaviour("messages", "fail:500:20500:Internal Server Error")
        .unwrap();
    let error = client.send_message(&WHATSAPP).await.unwrap_err();
    match &error {
        ApiError::Refused {
            status,
            code,
            message,
            more_info,
        } => {
            assert_eq!((*status, *code), (500, Some(20500)));
            assert_eq!(message, "Internal Server Error");
            assert_eq!(
                more_info.as_deref(),
                Some("https://www.twilio.com/docs/errors/20500")
            );
        }
        other => panic!("{other:?}"),
    }
    assert!(error.may_have_been_processed());
    assert_eq!(
        error.to_string(),
        "Twilio answered HTTP 500 (code 20500): Internal Server Error"
    );
}

#[tokio::test]
async fn a_rate_limit_is_told_apart_from_a_refusal() {
    let double = double(&["--messages", "rate-limit:first=2"]);
    let client = with_key(&double);
    for _ in 0..2 {
        let error = client.send_message(&WHATSAPP).await.unwrap_err();
        assert!(
            matches!(error, ApiError::RateLimited { code: 20429, .. }),
            "{error:?}"
        );
        assert!(error.is_rate_limited() && !error.may_have_been_processed());
    }
    client.send_message(&WHATSAPP).await.unwrap();
    let answers: Vec<Option<u16>> = recorded(&double, "messages")
        .iter()
        .map(|r| r.answer.status)
        .collect();
    assert_eq!(answers, [Some(429), Some(429), Some(201)]);
}

#[tokio::test]
async fn a_hanging_api_is_a_timeout_within_the_client_s_bound() {
    let double = double(&["--messages", "hang"]);
    let client = with_key(&double).with_timeout(Duration::from_millis(300));
    let started = Instant::now();
    let error = client.send_message(&WHATSAPP).await.unwrap_err();
    let waited = started.elapsed();
    assert!(error.is_timeout(), "{error:?}");
    assert!(error.may_have_been_processed());
    assert!(waited >= Duration::from_millis(300), "{waited:?}");
    assert!(waited < Duration::from_secs(5), "{waited:?}");
    // It arrived (recorded), and was never answered.
    let requests = recorded(&double, "messages");
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].answer.status, None);
}

#[tokio::test]
async fn a_call_answered_too_late_is_a_timeout_yet_placed() {
    // Twilio acted on the request but its answer came after the client gave up: the call rings
    // anyway, which is why a timeout "may have been processed".
    let double = double(&["--calls", "delay:3", "--ring-secs", "60"]);
    let client = with_key(&double).with_timeout(Duration::from_millis(300));
    let call = NewCall {
        to: "+14155550100",
        from: "+14155550101",
        url: "http://127.0.0.1:9/twilio/voice",
        timeout_secs: None,
        status_callback: None,
        status_callback_events: &[],
    };
    let error = client.create_call(&call).await.unwrap_err();
    assert!(
        error.is_timeout() && error.may_have_been_processed(),
        "{error:?}"
    );
    let requests = recorded(&double, "calls");
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].answer.status, Some(201));
    assert_eq!(requests[0].answer.delayed_ms, Some(3000));
    let placed: Vec<serde_json::Value> =
        serde_json::from_str(&double.calls_json().unwrap()).unwrap();
    assert_eq!(placed.len(), 1);
    assert_eq!(placed[0]["sid"], requests[0].answer.sid.as_deref().unwrap());
}

#[tokio::test]
async fn nothing_listening_is_a_connect_error_and_nothing_was_sent() {
    let port = testkit::free_port().unwrap();
    let credentials = Credentials::auth_token(ACCOUNT_SID, Secret::new(TOKEN));
    let client = TwilioClient::new(&format!("http://127.0.0.1:{port}"), credentials).unwrap();
    let error = client.send_message(&WHATSAPP).await.unwrap_err();
    assert!(matches!(error, ApiError::Connect(_)), "{error:?}");
    assert!(!error.may_have_been_processed());
}

#[tokio::test]
async fn a_call_is_placed_each_time_it_is_asked_and_canceled_while_it_rings() {
    // It rings for a minute: long enough to be canceled while ringing.
    let double = double(&["--ring-secs", "60"]);
    let client = with_key(&double);
    let call = NewCall {
        to: "+14155550100",
        from: "+14155550101",
        url: "http://127.0.0.1:9/twilio/voice?outbound=o1",
        timeout_secs: Some(120),
        status_callback: Some("http://127.0.0.1:9/twilio/status?outbound=o1"),
        status_callback_events: &CallEvent::ALL,
    };
    let first = client.create_call(&call).await.unwrap();
    assert_eq!(first.status, CallStatus::Queued);
    assert_eq!(first.direction.as_deref(), Some("outbound-api"));
    assert_eq!(first.to, call.to);
    // Twilio has no idempotency here: asked twice, it places two calls.
    let second = client.create_call(&call).await.unwrap();
    assert_ne!(first.sid, second.sid);

    let requests = recorded(&double, "calls");
    assert_eq!(requests.len(), 2);
    let request = &requests[0];
    assert_eq!(request.field("Url"), Some(call.url));
    assert_eq!(request.field("Timeout"), Some("120"));
    assert_eq!(request.field("StatusCallback"), call.status_callback);
    assert_eq!(
        request.fields("StatusCallbackEvent"),
        ["initiated", "ringing", "answered", "completed"]
    );
    assert!(requests[1].received_unix_us >= request.received_unix_us);
    let summary: serde_json::Value = serde_json::from_str(&double.summary_json().unwrap()).unwrap();
    assert_eq!(
        summary["dialed_more_than_once"],
        serde_json::json!([{"to": call.to, "calls": 2}])
    );

    let canceled = client.end_call(&first.sid, EndCall::Cancel).await.unwrap();
    assert_eq!(canceled.status, CallStatus::Canceled);
    let again = client
        .end_call(&first.sid, EndCall::HangUp)
        .await
        .unwrap_err();
    assert_eq!((again.status(), again.code()), (Some(400), Some(21220)));
    let unknown = client
        .end_call("CA00000000000000000000000000000000", EndCall::HangUp)
        .await
        .unwrap_err();
    assert_eq!((unknown.status(), unknown.code()), (Some(404), Some(20404)));
    // Not a SID at all: refused here, never sent.
    let before = recorded(&double, "call-update").len();
    assert!(
        client
            .end_call("../Messages", EndCall::HangUp)
            .await
            .is_err()
    );
    assert_eq!(recorded(&double, "call-update").len(), before);
    let updates: Vec<String> = recorded(&double, "call-update")
        .iter()
        .map(|r| r.field("Status").unwrap_or_default().to_owned())
        .collect();
    assert_eq!(updates, ["canceled", "completed", "completed"]);
}

#[test]
fn a_client_never_prints_its_secret() {
    let credentials = Credentials::api_key(ACCOUNT_SID, KEY_SID, Secret::new(KEY_SECRET));
    let client = TwilioClient::new("https://api.twilio.com", credentials).unwrap();
    let shown = format!("{client:?}");
    assert!(!shown.contains(KEY_SECRET), "{shown}");
    assert!(
        shown.contains(KEY_SID) && shown.contains("[redacted]"),
        "{shown}"
    );
}
