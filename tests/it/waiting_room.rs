//! The waiting room and the WhatsApp hand-off (docs/reference.md#waiting-room) over real
//! processes: replicas of the built binary against a real Redis, the Twilio REST double as
//! Twilio's Messages API, and one replica in process with in-process state.

use std::time::{Duration, Instant};

use prosaas_calls::config::StreamTimeouts;
use serde_json::Value;
use testkit::RedisServer;
use testkit::twilio_api::{ACCOUNT_SID, TwilioApiDouble, sim_binary};

use crate::helpers::*;

const TENANT_A: &str = "ACaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
const TENANT_B: &str = "ACbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
const API_KEY: &str = "SK0123456789abcdef0123456789abcdef";
const API_SECRET: &str = "waiting-room-secret";
const WHATSAPP_FROM: &str = "whatsapp:+14155238886";

/// One caller: its SID, its tenant's account, its number.
#[derive(Clone)]
struct Caller {
    sid: String,
    account: &'static str,
    from: String,
}

fn caller(n: usize, account: &'static str) -> Caller {
    Caller {
        sid: sid(n),
        account,
        from: format!("+1555010{n:04}"),
    }
}

/// What a Twilio request to the waiting room was answered.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Heard {
    /// `<Connect><Stream>`: admitted.
    Connect,
    /// The hold: in line (with the message said, if any).
    Hold(Option<String>),
    /// `<Say>` then hang up or redirect: the overflow (or the `twiml` reject).
    Spoken,
    /// HTTP 503: the reject mode `503`.
    Refused,
    Hangup,
}

fn heard(status: u16, body: &str) -> Heard {
    if status == 503 {
        return Heard::Refused;
    }
    assert_eq!(status, 200, "{body}");
    if body.contains("<Connect") {
        Heard::Connect
    } else if body.contains("<Gather") {
        let said = body
            .split_once("<Say>")
            .and_then(|(_, rest)| rest.split_once("</Say>"))
            .map(|(said, _)| said.to_owned());
        Heard::Hold(said)
    } else if body.contains("<Say>") {
        Heard::Spoken
    } else if body.contains("<Hangup/>") {
        Heard::Hangup
    } else {
        panic!("unexpected answer: {body}")
    }
}

/// A voice webhook (`path` `/twilio/voice`) or a visit (`/twilio/wait`) of `caller` at `base`.
async fn ask(base: &str, path: &str, caller: &Caller, digits: Option<&str>) -> (u16, String) {
    let mut form = vec![
        ("CallSid", caller.sid.as_str()),
        ("AccountSid", caller.account),
        ("From", caller.from.as_str()),
        ("To", "+15005550001"),
        ("CallStatus", "in-progress"),
    ];
    if let Some(digits) = digits {
        form.push(("Digits", digits));
    }
    let response = post_form(&format!("{base}{path}"), &form, None).await;
    let status = response.status().as_u16();
    (status, response.text().await.unwrap())
}

async fn webhook(base: &str, caller: &Caller) -> Heard {
    let (status, body) = ask(base, "/twilio/voice", caller, None).await;
    heard(status, &body)
}

async fn visit(base: &str, caller: &Caller) -> Heard {
    let (status, body) = ask(base, "/twilio/wait", caller, None).await;
    heard(status, &body)
}

/// Every caller of `line` visits `base` once, the last joined first (the order must not depend
/// on who comes back first); exactly one is admitted, and is returned.
async fn next_admitted(base: &str, line: &[Caller]) -> Caller {
    let mut admitted = Vec::new();
    for caller in line.iter().rev() {
        match visit(base, caller).await {
            Heard::Connect => admitted.push(caller.clone()),
            Heard::Hold(_) => {}
            other => panic!("{}: {other:?}", caller.sid),
        }
    }
    assert_eq!(admitted.len(), 1, "one slot, one admitted");
    admitted.remove(0)
}

async fn metrics_text(base: &str) -> String {
    get_text(&format!("{base}/metrics")).await.1
}

fn metric(text: &str, name: &str) -> f64 {
    metric_value(text, name).unwrap_or_else(|| panic!("{name} missing"))
}

/// Connects a1, b1, a2, a3 in that order: the slots free one at a time, every visit goes to one of
/// `bases` in turn, and each freed slot is released through a final status callback.
async fn fair_order(bases: &[String], first: &Caller, second: &Caller) -> Vec<String> {
    let mut line = vec![
        caller(11, TENANT_A),
        caller(12, TENANT_A),
        caller(13, TENANT_A),
        caller(21, TENANT_B),
    ];
    let names = |c: &Caller| match c.sid.as_str() {
        s if s == sid(11) => "a1",
        s if s == sid(12) => "a2",
        s if s == sid(13) => "a3",
        s if s == sid(21) => "b1",
        _ => "?",
    };
    let mut heard_positions = Vec::new();
    for (i, caller) in line.iter().enumerate() {
        match webhook(&bases[i % bases.len()], caller).await {
            Heard::Hold(Some(said)) => heard_positions.push(said),
            other => panic!("{}: {other:?}", caller.sid),
        }
    }
    // b1 hears it is second as soon as it joins.
    assert!(
        heard_positions[0].contains("number 1 in line"),
        "{heard_positions:?}"
    );
    assert!(
        heard_positions[3].contains("number 2 in line"),
        "{heard_positions:?}"
    );
    let mut connected = Vec::new();
    let mut to_free = vec![first.sid.clone(), second.sid.clone()];
    for round in 0..4 {
        let base = &bases[round % bases.len()];
        let gone = to_free.remove(0);
        assert_eq!(status_at(base, &gone, "completed").await, 204);
        let next = next_admitted(base, &line).await;
        connected.push(names(&next).to_owned());
        to_free.push(next.sid.clone());
        line.retain(|c| c.sid != next.sid);
    }
    connected
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_process_the_line_is_fair_and_kept_in_memory() {
    let mut raw = raw(None, 2);
    raw.tenant_key = Some("account_sid".into());
    raw.wait_max_secs = Some("60".into());
    raw.wait_poll_secs = Some("5".into());
    let replica = Replica::start(raw, StreamTimeouts::default()).await;
    let base = replica.url("");
    let metrics = metrics_text(&base).await;
    for series in [
        "calls_waiting",
        "calls_wait_admitted_total",
        "calls_wait_abandoned_total",
        "calls_wait_overflow_total{reason=\"full\"}",
        "calls_wait_seconds_count",
        "calls_whatsapp_total{result=\"no_number\"}",
    ] {
        assert_eq!(metric(&metrics, series), 0.0, "{series}");
    }
    let (x1, x2) = (caller(1, TENANT_A), caller(2, TENANT_B));
    assert_eq!(webhook(&base, &x1).await, Heard::Connect);
    assert_eq!(webhook(&base, &x2).await, Heard::Connect);

    // A call placed through the REST API never waits: the voice webhook as without the room.
    let placed = caller(9, TENANT_A);
    let response = post_form(
        &format!("{base}/twilio/voice"),
        &[
            ("CallSid", placed.sid.as_str()),
            ("AccountSid", placed.account),
            ("From", placed.from.as_str()),
            ("To", "+15005550001"),
            ("Direction", "outbound-api"),
        ],
        None,
    )
    .await;
    assert_eq!(response.status().as_u16(), 503);

    // The hold TwiML: one digit gathered around the message and a pause, then back to the line.
    let a0 = caller(10, TENANT_A);
    let (_, hold) = ask(&base, "/twilio/voice", &a0, None).await;
    let wait_url = format!("http://{}/twilio/wait", replica.addr);
    assert!(
        hold.contains(&format!(
            r#"<Gather numDigits="1" timeout="1" method="POST" action="{wait_url}">"#
        )),
        "{hold}"
    );
    assert!(hold.contains("You are number 1 in line. Press 1"), "{hold}");
    assert!(hold.contains("<Pause length="), "{hold}");
    assert!(
        hold.contains(&format!(
            r#"</Gather><Redirect method="POST">{wait_url}</Redirect>"#
        )),
        "{hold}"
    );
    let state = replica
        .app
        .calls()
        .store()
        .read_state(&calls_core::call_sid::CallSid::parse(&a0.sid).unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(state.status, calls_core::state::CallStatus::Waiting);
    assert!(state.waiting_since.is_some());
    // A second visit at the same place says nothing: the position is said when it changes.
    assert_eq!(visit(&base, &a0).await, Heard::Hold(None));
    // It hangs up: out of the line at once, counted as refused and abandoned.
    assert_eq!(status_at(&base, &a0.sid, "completed").await, 204);

    let (_, json) = get_text(&format!("{base}/metrics.json")).await;
    let json: Value = serde_json::from_str(&json).unwrap();
    assert_eq!(json["calls_waiting"], 0, "{json}");

    let order = fair_order(std::slice::from_ref(&base), &x1, &x2).await;
    assert_eq!(order, ["a1", "b1", "a2", "a3"]);
    let metrics = metrics_text(&base).await;
    assert_eq!(metric(&metrics, "calls_wait_admitted_total"), 4.0);
    assert_eq!(metric(&metrics, "calls_wait_abandoned_total"), 1.0);
    assert_eq!(metric(&metrics, "calls_waiting"), 0.0);
    // The abandoned caller, and the placed call refused by the reject mode.
    assert_eq!(metric(&metrics, "calls_rejected_max_concurrent_total"), 2.0);
    replica.stop().await;
}

fn env(redis: &RedisServer, limit: u64) -> ReplicaEnv {
    ReplicaEnv::new(redis.url(), limit)
        .with("RENEW_INTERVAL_SECS", "0.5")
        .with("TENANT_KEY", "account_sid")
}

async fn redis() -> RedisServer {
    tokio::task::spawn_blocking(|| RedisServer::start().expect("redis-server"))
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_killed_while_callers_wait_loses_no_place() {
    let redis = redis().await;
    let env = env(&redis, 2)
        .with("WAIT_MAX_SECS", "120")
        .with("WAIT_POLL_SECS", "10");
    let mut first = env.spawn("wait-1");
    let second = env.spawn("wait-2");
    let (x1, x2) = (caller(1, TENANT_A), caller(2, TENANT_B));
    let one = first.url("");
    assert_eq!(webhook(&one, &x1).await, Heard::Connect);
    assert_eq!(webhook(&one, &x2).await, Heard::Connect);
    // The line forms on the first replica...
    let line = [
        caller(11, TENANT_A),
        caller(12, TENANT_A),
        caller(13, TENANT_A),
        caller(21, TENANT_B),
    ];
    for caller in &line {
        assert!(matches!(webhook(&one, caller).await, Heard::Hold(Some(_))));
    }
    assert_eq!(
        redis_cli(&redis, &["ZCARD", "calls:wait:callers"]).await,
        "4"
    );
    // ...which dies; the other serves every visit, places kept, in the fair order.
    first.kill9();
    let two = second.url("");
    for caller in &line {
        assert!(matches!(visit(&two, caller).await, Heard::Hold(_)));
    }
    // A newcomer joins behind (and hangs up: out of the line at once).
    assert!(webhook(&two, &caller(30, TENANT_B)).await.is_hold());
    assert_eq!(status_at(&two, &sid(30), "completed").await, 204);
    let mut remaining: Vec<Caller> = line.to_vec();
    let mut connected = Vec::new();
    for gone in [&x1.sid, &x2.sid] {
        assert_eq!(status_at(&two, gone, "completed").await, 204);
        let next = next_admitted(&two, &remaining).await;
        connected.push(next.sid.clone());
        remaining.retain(|c| c.sid != next.sid);
    }
    assert_eq!(connected, [sid(11), sid(21)]);
    // Waiting callers held no slot: two live, the cap.
    assert_eq!(active_count(&redis).await, 2);
    // The operator's view: two still wait.
    let redis_url = redis.url();
    let status = tokio::task::spawn_blocking(move || {
        std::process::Command::new(binary())
            .args(["status", "--json"])
            .env("REDIS_URL", redis_url)
            .output()
            .expect("prosaas-calls status")
    })
    .await
    .unwrap();
    let status: Value = serde_json::from_slice(&status.stdout).expect("status --json");
    assert_eq!(status["calls_waiting"], 2, "{status}");
    assert!(status["longest_wait_secs"].is_u64(), "{status}");
    let state = redis_state(&redis, &sid(21)).await;
    assert_eq!(state["status"], "reserved", "{state}");
    assert!(state["waiting_since"].is_string(), "{state}");
    let ttl: i64 = redis_cli(&redis, &["PTTL", "calls:wait:order"])
        .await
        .parse()
        .unwrap();
    assert!(ttl > 0, "calls:wait:order has no TTL ({ttl})");
}

impl Heard {
    fn is_hold(&self) -> bool {
        matches!(self, Self::Hold(_))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn turns_are_kept_and_callers_leave_by_status_silence_digit_timeout_or_a_full_line() {
    let redis = redis().await;
    let replica = env(&redis, 1)
        .with("WAIT_MAX_SECS", "3")
        .with("WAIT_POLL_SECS", "1")
        // A short message: the hold (2.8 s: the message, a 1 s pause, the gather's second) sets
        // the line's margins, so a silent caller leaves 5.6 s after their last visit.
        .with("WAIT_MESSAGE", "Number {position}.")
        .with("WAIT_MAX_CALLERS", "2")
        .spawn("wait-1");
    let base = replica.url("");
    let x1 = caller(1, TENANT_A);
    assert_eq!(webhook(&base, &x1).await, Heard::Connect);

    // A kept turn: the slot frees while a1 waits; a newcomer joins behind instead of taking it.
    let (a1, n1) = (caller(11, TENANT_A), caller(12, TENANT_B));
    assert!(webhook(&base, &a1).await.is_hold());
    assert_eq!(status_at(&base, &x1.sid, "completed").await, 204);
    assert!(webhook(&base, &n1).await.is_hold());
    assert_eq!(visit(&base, &a1).await, Heard::Connect);
    assert_eq!(active_count(&redis).await, 1);

    // The line is full (two wait): one more gets the reject mode (503 by default).
    let a3 = caller(13, TENANT_A);
    assert!(webhook(&base, &a3).await.is_hold());
    assert_eq!(webhook(&base, &caller(14, TENANT_A)).await, Heard::Refused);
    // The digit: out of the line at once, the spoken overflow.
    let (status, body) = ask(&base, "/twilio/wait", &n1, Some("1")).await;
    assert_eq!(heard(status, &body), Heard::Spoken);
    assert!(
        body.contains("All of our lines are busy right now"),
        "{body}"
    );
    assert!(body.contains("<Hangup/>"), "{body}");
    assert_eq!(
        redis_state(&redis, &n1.sid).await["end_reason"],
        "wait_overflow"
    );
    // WAIT_MAX_SECS in line: a3 keeps coming back until its wait runs out.
    let joined = Instant::now();
    let timed_out = loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        match visit(&base, &a3).await {
            Heard::Hold(_) => assert!(joined.elapsed() < Duration::from_secs(8)),
            other => break other,
        }
    };
    assert_eq!(timed_out, Heard::Spoken);
    assert!(joined.elapsed() >= Duration::from_secs(2));
    assert_eq!(
        redis_state(&redis, &a3.sid).await["end_reason"],
        "wait_overflow"
    );

    // One hangs up (status callback), one stops coming back: both leave, abandoned.
    let (h1, s1) = (caller(15, TENANT_A), caller(16, TENANT_A));
    assert!(webhook(&base, &h1).await.is_hold());
    assert!(webhook(&base, &s1).await.is_hold());
    assert_eq!(status_at(&base, &h1.sid, "completed").await, 204);
    assert_eq!(
        redis_state(&redis, &h1.sid).await["end_reason"],
        "wait_abandoned"
    );
    let silent = eventually(Duration::from_secs(12), || async {
        (redis_state(&redis, &s1.sid).await["end_reason"] == "wait_abandoned").then_some(())
    })
    .await;
    assert!(silent.is_some(), "a silent caller never left the line");
    // An abandoned caller coming back is over: hang up, no slot, no place.
    assert_eq!(visit(&base, &s1).await, Heard::Hangup);

    let metrics = metrics_text(&base).await;
    for (name, want) in [
        ("calls_wait_overflow_total{reason=\"full\"}", 1.0),
        ("calls_wait_overflow_total{reason=\"digit\"}", 1.0),
        ("calls_wait_overflow_total{reason=\"timeout\"}", 1.0),
        ("calls_wait_abandoned_total", 2.0),
        ("calls_wait_admitted_total", 1.0),
        ("calls_waiting", 0.0),
    ] {
        assert_eq!(metric(&metrics, name), want, "{name}");
    }
    // Each counted once as refused for the reason that sent it to the line.
    assert_eq!(
        redis_cli(&redis, &["GET", "calls:stats:rejected_max_concurrent"]).await,
        "5"
    );
    assert_eq!(metric(&metrics, "calls_rejected_max_concurrent_total"), 5.0);
}

/// Two replicas whose callers turned away get a WhatsApp message through `double`.
fn whatsapp_env(redis: &RedisServer, double: &TwilioApiDouble) -> ReplicaEnv {
    env(redis, 1)
        .with("REJECT_MODE", "twiml")
        .with("WHATSAPP_FROM", WHATSAPP_FROM)
        .with(
            "WHATSAPP_MESSAGE",
            "Sorry {from}, we missed your call to {to}.",
        )
        .with("TWILIO_ACCOUNT_SID", ACCOUNT_SID)
        .with("TWILIO_API_KEY_SID", API_KEY)
        .with("TWILIO_API_KEY_SECRET", API_SECRET)
        .with("TWILIO_API_BASE", double.base_url())
}

async fn double(args: Vec<String>) -> TwilioApiDouble {
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        TwilioApiDouble::spawn(sim_binary(), &args).expect("the Twilio REST double")
    })
    .await
    .unwrap()
}

fn messages(double: &TwilioApiDouble) -> Vec<Value> {
    serde_json::from_str(&double.requests_json(Some("messages")).unwrap()).unwrap()
}

/// `calls_whatsapp_total{result}` summed over `bases`.
async fn whatsapp_total(bases: &[&str], result: &str) -> f64 {
    let mut total = 0.0;
    for base in bases {
        let name = format!("calls_whatsapp_total{{result=\"{result}\"}}");
        total += metric(&metrics_text(base).await, &name);
    }
    total
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_whatsapp_message_per_number_across_replicas_and_a_stuck_api_delays_nobody() {
    let redis = redis().await;
    let key = format!("{API_KEY}:{API_SECRET}");
    let double = double(vec!["--api-key".into(), key]).await;
    let env = whatsapp_env(&redis, &double);
    let (first, second) = (env.spawn("wa-1"), env.spawn("wa-2"));
    let (one, two) = (first.url(""), second.url(""));
    assert_eq!(webhook(&one, &caller(1, TENANT_A)).await, Heard::Connect);

    // The same number refused by the plain reject mode on both replicas: one message.
    let mut again = caller(2, TENANT_A);
    assert_eq!(webhook(&one, &again).await, Heard::Spoken);
    again.sid = sid(3);
    assert_eq!(webhook(&two, &again).await, Heard::Spoken);
    let sent = eventually(Duration::from_secs(5), || async {
        let sent = messages(&double);
        (!sent.is_empty()).then_some(sent)
    })
    .await
    .expect("a WhatsApp message");
    let cooled = eventually(Duration::from_secs(5), || async {
        (whatsapp_total(&[&one, &two], "cooldown").await == 1.0).then_some(())
    })
    .await;
    assert!(
        cooled.is_some(),
        "the second refusal was not held back by the cooldown"
    );
    assert_eq!(messages(&double).len(), 1, "{sent:?}");
    let form = &sent[0]["form"];
    assert_eq!(form["From"], WHATSAPP_FROM);
    assert_eq!(form["To"], format!("whatsapp:{}", again.from));
    assert_eq!(
        form["Body"],
        format!("Sorry {}, we missed your call to +15005550001.", again.from)
    );
    assert_eq!(sent[0]["auth"]["user"], API_KEY, "{}", sent[0]);
    assert_eq!(sent[0]["auth"]["kind"], "api_key", "{}", sent[0]);
    assert_eq!(whatsapp_total(&[&one, &two], "sent").await, 1.0);
    let ttl: i64 = redis_cli(
        &redis,
        &["TTL", &format!("calls:whatsapp:sent:{}", again.from)],
    )
    .await
    .parse()
    .unwrap();
    assert!((3500..=3600).contains(&ttl), "cooldown TTL {ttl}");

    // A caller without an E.164 number gets none.
    let mut anonymous = caller(4, TENANT_A);
    anonymous.from = "client:alice".into();
    assert_eq!(webhook(&one, &anonymous).await, Heard::Spoken);

    // A Messages API that hangs: the caller is answered at once all the same, and the failure is
    // counted once the 5 s timeout passes; one that fails is counted at once.
    double.set_behaviour("messages", "hang").unwrap();
    let started = Instant::now();
    assert_eq!(webhook(&two, &caller(5, TENANT_A)).await, Heard::Spoken);
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "the answer waited {:?} for the Messages API",
        started.elapsed()
    );
    double
        .set_behaviour("messages", "fail:500:20500:down")
        .unwrap();
    assert_eq!(webhook(&one, &caller(6, TENANT_A)).await, Heard::Spoken);
    let failed = eventually(Duration::from_secs(12), || async {
        (whatsapp_total(&[&one, &two], "failed").await == 2.0).then_some(())
    })
    .await;
    assert!(
        failed.is_some(),
        "the hung and the failed message were not both counted"
    );
    assert_eq!(whatsapp_total(&[&one, &two], "no_number").await, 1.0);
    assert_eq!(whatsapp_total(&[&one, &two], "sent").await, 1.0);
    drop((first, second));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_overflow_digit_hands_the_caller_to_whatsapp() {
    let redis = redis().await;
    let key = format!("{API_KEY}:{API_SECRET}");
    let double = double(vec!["--api-key".into(), key]).await;
    let replica = whatsapp_env(&redis, &double)
        .with("WAIT_MAX_SECS", "60")
        .with("WAIT_OVERFLOW_DIGIT", "#")
        .spawn("wa-1");
    let base = replica.url("");
    assert_eq!(webhook(&base, &caller(1, TENANT_A)).await, Heard::Connect);
    let waiting = caller(2, TENANT_B);
    assert!(webhook(&base, &waiting).await.is_hold());
    // Joining the line sends nothing; another key is a plain visit.
    let (status, body) = ask(&base, "/twilio/wait", &waiting, Some("1")).await;
    assert!(heard(status, &body).is_hold());
    let (status, body) = ask(&base, "/twilio/wait", &waiting, Some("#")).await;
    assert_eq!(heard(status, &body), Heard::Spoken);
    let sent = eventually(Duration::from_secs(5), || async {
        let sent = messages(&double);
        (!sent.is_empty()).then_some(sent)
    })
    .await
    .expect("a WhatsApp message after the digit");
    assert_eq!(sent[0]["form"]["To"], format!("whatsapp:{}", waiting.from));
    assert_eq!(messages(&double).len(), 1);
}

/// One visit, one script: a caller's return to `/twilio/wait` costs Redis exactly one `EVALSHA`
/// and nothing else (docs/reference.md#waiting-room).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_visit_costs_one_script() {
    let redis = redis().await;
    let mut raw = raw(Some(&redis), 1);
    // No tick inside the measured window: its renewal and sweep are scripts too.
    raw.renew_interval_secs = Some("20".into());
    raw.wait_max_secs = Some("60".into());
    raw.wait_poll_secs = Some("10".into());
    let replica = Replica::start(raw, StreamTimeouts::default()).await;
    let base = replica.url("");
    assert_eq!(webhook(&base, &caller(1, TENANT_A)).await, Heard::Connect);
    let line: Vec<Caller> = (11..16).map(|n| caller(n, TENANT_A)).collect();
    for caller in &line {
        assert!(webhook(&base, caller).await.is_hold());
    }
    let before = command_calls(&redis).await;
    const ROUNDS: u64 = 4;
    for _ in 0..ROUNDS {
        for caller in &line {
            assert!(visit(&base, caller).await.is_hold());
        }
    }
    let after = command_calls(&redis).await;
    let visits = ROUNDS * line.len() as u64;
    let delta = |name: &str| after.get(name).unwrap_or(&0) - before.get(name).unwrap_or(&0);
    assert_eq!(delta("evalsha"), visits, "{before:?} -> {after:?}");
    // Commands run inside the scripts count in `INFO commandstats` too: what one visit costs
    // Redis inside its script, for the record (docs/benchmarks.md).
    let inside: u64 = after
        .keys()
        .filter(|name| !matches!(name.as_str(), "evalsha" | "info"))
        .map(|name| delta(name))
        .sum();
    eprintln!(
        "one visit in a line of {}: 1 EVALSHA, {} commands inside it",
        line.len(),
        inside / visits
    );
    replica.stop().await;
}

/// The simulator as Twilio in front of a full house: six calls against a cap of two, callers of
/// two tenants waiting in line with a patience spread over 2 to 6 s. Every call is served,
/// abandoned or sent on, and the simulator's count of each is the replica's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_simulator_waits_in_line_and_counts_as_the_replica_does() {
    use prosaas_calls_sim::call::Patience;
    use prosaas_calls_sim::target::Target;

    let redis = redis().await;
    let replica = env(&redis, 2)
        .with("WAIT_MAX_SECS", "7")
        // A hold outlasts the poll here (the message, a 1 s pause and the gather's 1 s: 2.8 s):
        // the line must size "gone" from the hold it sends, not from the poll alone.
        .with("WAIT_POLL_SECS", "1")
        .with("WAIT_MESSAGE", "Number {position}.")
        .spawn("wait-sim");
    let base = replica.url("");
    let mut config = sim_run(
        Target::new(&base, None, None).unwrap(),
        6,
        Duration::from_millis(300),
        Duration::from_secs(4),
        23,
    );
    config.plan.tenants = prosaas_calls_sim::tenants::parse("2,1").unwrap();
    config.plan.patience = Some(Patience::parse("2-6").unwrap());
    let report = prosaas_calls_sim::run::run(config).await;
    let summary = report.table();
    eprintln!("{summary}");
    assert_eq!(report.outcome, "finished", "{summary}");
    assert_eq!(report.calls.failed, 0, "{summary}");
    let w = &report.waiting;
    assert_eq!(w.dropped, 0, "nobody is let go by the line: {summary}");
    // Two admitted at once, four on hold; each of those served, abandoned or sent on.
    assert_eq!(w.joined, 4, "{summary}");
    assert_eq!(
        w.admitted_from_line + w.abandoned + w.overflowed,
        w.joined,
        "{summary}"
    );
    assert_eq!(report.calls.admitted, 2 + w.admitted_from_line, "{summary}");
    assert_eq!(report.calls.completed, report.calls.admitted, "{summary}");
    assert!(w.visits >= w.joined, "{summary}");
    if w.admitted_from_line > 0 {
        let waits = w.wait_ms.as_ref().expect("waits measured");
        assert_eq!(waits.count, w.admitted_from_line, "{summary}");
        assert!(waits.p50 > 0.0 && waits.p50 <= waits.p99, "{summary}");
    }
    let by_tenant: Vec<(u64, u64)> = report
        .tenants
        .iter()
        .map(|t| (t.launched, t.waiting.joined))
        .collect();
    assert_eq!(by_tenant.len(), 2, "{summary}");
    assert_eq!(by_tenant[0].0 + by_tenant[1].0, 6, "{summary}");
    assert_eq!(
        by_tenant[0].0, 4,
        "the tenant of weight 2 places 4 of 6: {summary}"
    );
    assert_eq!(by_tenant[0].1 + by_tenant[1].1, w.joined, "{summary}");

    // The replica counted the same; nobody is left in line or holding a slot.
    let metrics = metrics_text(&base).await;
    let overflowed: f64 = ["timeout", "digit", "full"]
        .iter()
        .map(|reason| {
            metric_value(
                &metrics,
                &format!("calls_wait_overflow_total{{reason=\"{reason}\"}}"),
            )
            .unwrap_or(0.0)
        })
        .sum();
    let counted = (
        metric(&metrics, "calls_wait_admitted_total") as u64,
        metric(&metrics, "calls_wait_abandoned_total") as u64,
        overflowed as u64,
    );
    assert_eq!(
        counted,
        (w.admitted_from_line, w.abandoned, w.overflowed),
        "replica (admitted, abandoned, overflowed) vs the simulator: {summary}"
    );
    assert_eq!(
        redis_cli(&redis, &["ZCARD", "calls:wait:callers"]).await,
        "0"
    );
    assert_eq!(active_count(&redis).await, 0);
}
