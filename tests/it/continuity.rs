//! Calls that outlive their stream (docs/reference.md#drain, #after-stream): the after-stream
//! answer for each ending, the grant that lets exactly one new stream take a call over, and with
//! real processes behind a real nginx, a replica killed under live calls and a rolling restart,
//! both measured with the simulator.

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::helpers::*;
use prosaas_calls::config::StreamTimeouts;
use prosaas_calls_sim::run;
use prosaas_calls_sim::target::Target;
use testkit::nginx::NginxProcess;
use testkit::{RedisServer, ReplicaProcess};

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
        .calls()
        .store()
        .read_state(&sid)
        .await
        .unwrap()
        .expect("a stored state")
}

fn resumed_total(replica: &Replica) -> f64 {
    metric_value(&replica.app.metrics().render(), "calls_resumed_total").unwrap_or(-1.0)
}

/// docs/reference.md#after-stream end to end on one replica with Redis and
/// `MAX_CONCURRENT_CALLS=1`, `RESUME_LIMIT=1`: a dropped stream is continued (its slot held for
/// the continuation meanwhile, docs/reference.md#hand-over); a forged stream, with or without the used grant, is refused with 1008; the
/// second loss gets the fallback; a call ended by its caller, a finished call and an unknown call
/// get `<Hangup/>`.
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
        Some(format!("http://{}/twilio/after-stream?stream=0", replica.addr).as_str()),
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
    assert_eq!(
        ended.end_reason.map(calls_core::state::EndReason::as_str),
        Some("disconnected")
    );
    // The call keeps its slot meanwhile (docs/reference.md#hand-over): no one takes the only one.
    assert_eq!(active_count(&redis).await, 1);
    let (status, _) = voice(&replica, &sid(2)).await;
    assert_eq!(status, 503);
    let (status, answer) = after_stream(&base, &call, "in-progress").await;
    assert_eq!(status, 200, "{answer}");
    let again = prosaas_calls_sim::webhook::connect_of(&answer).expect("a continuation");
    assert_eq!(
        again.action_url.as_deref(),
        Some(format!("http://{}/twilio/after-stream?stream=1", replica.addr).as_str()),
        "the continuation's action names its stream: {answer}"
    );
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

    // The granted stream takes the call over, and its held slot (no second one).
    let mut resumed = stream_with(&again.stream_url, &call, params.clone()).await;
    resumed.echo_round(2).await;
    let live = state(&replica, &call).await;
    assert_eq!(live.status, calls_core::state::CallStatus::Active);
    assert_eq!((live.resumes, live.resume_grant), (1, None));
    assert_eq!(live.from.as_deref(), Some("+15005550006"), "carried over");
    assert_eq!(active_count(&redis).await, 1, "the same slot");
    assert_eq!(resumed_total(&replica), 1.0);
    assert_eq!(
        redis_cli(&redis, &["GET", "calls:stats:started"]).await,
        "1",
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
    // The caller hears the fallback and the call ends: its status callback frees the held slot.
    status_at(&base, &call, "completed").await;
    assert_eq!(active_count(&redis).await, 0);

    // Ended by the caller: hang up. Twilio reporting the call over, or a call never seen: hang up.
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
    let text = replica.app.metrics().render();
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

// ---- With real processes: three replicas behind nginx, the simulator as Twilio.

const TICK_SECS: u64 = 1;
const LEASE_SECS: u64 = 3;
/// Generous: a loaded 2-core CI box may be seconds late; the invariants are asserted, not speed.
const CONVERGE: Duration = Duration::from_secs(30);

/// How many live calls the kill test holds: 60 as the issue asks; `CONTINUITY_CALLS` lowers it on
/// a box too small for 60 debug-build calls plus nginx.
fn kill_test_calls() -> u64 {
    std::env::var("CONTINUITY_CALLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(60)
}

/// `kill -9` one replica of three under live calls: every call it served is continued on another
/// replica through `<Connect action>`, no call ends early, the audio comes back within 2 s, the
/// count stays exact (no slot lost, none counted twice) and is exact again at the end.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replica_killed_under_live_calls_costs_no_call() {
    let nginx_bin = nginx_binary();
    let calls = kill_test_calls();
    let redis = RedisServer::start_tcp().expect("redis-server");
    let env = [
        ("REDIS_URL", redis.url()),
        ("MAX_CONCURRENT_CALLS", (calls * 2).to_string()),
        ("RENEW_INTERVAL_SECS", TICK_SECS.to_string()),
        ("CALL_LEASE_SECS", LEASE_SECS.to_string()),
        ("RESUME_LIMIT", "2".into()),
        ("DRAIN_TIMEOUT_SECS", "5".into()),
        ("RUST_LOG", "warn".into()),
    ];
    let binary = Path::new(env!("CARGO_BIN_EXE_prosaas-calls"));
    let mut replicas: Vec<ReplicaProcess> = (1..=3)
        .map(|i| ReplicaProcess::spawn(binary, &format!("calls-{i}"), &env).expect("replica"))
        .collect();
    let ports: Vec<u16> = replicas.iter().map(|r| r.port).collect();
    let nginx = NginxProcess::start(&nginx_bin, &ports).expect("nginx");
    let target = Target::new(&nginx.url(""), None, None).unwrap();
    // Long enough that every call is still live well after the kill and its convergence.
    let duration = Duration::from_secs(25);
    let sim = tokio::spawn(run::run(sim_run(
        target,
        calls,
        Duration::from_secs(3),
        duration,
        11,
    )));

    // Every call live, then the busiest replica dies.
    let all_live = eventually(CONVERGE, || async {
        (active_count(&redis).await == calls
            && calls_by_replica(&redis).await.len() as u64 == calls)
            .then_some(())
    })
    .await;
    assert!(all_live.is_some(), "the {calls} calls never all went live");
    // The states say `active` once each stream started; wait for every one.
    let by_replica = eventually(CONVERGE, || async {
        let live = calls_by_replica(&redis).await;
        live.iter()
            .all(|(_, replica)| replica.starts_with("calls-"))
            .then_some(live)
    })
    .await
    .expect("every live call names its replica");
    let victim = (0..replicas.len())
        .max_by_key(|&i| {
            by_replica
                .iter()
                .filter(|(_, r)| *r == replicas[i].id)
                .count()
        })
        .unwrap();
    let victim_id = replicas[victim].id.clone();
    let doomed: Vec<String> = by_replica
        .iter()
        .filter(|(_, r)| *r == victim_id)
        .map(|(sid, _)| sid.clone())
        .collect();
    assert!(!doomed.is_empty());
    let killed_at = Instant::now();
    replicas[victim].kill9();

    // Every doomed call is taken over by a survivor; the count never leaves `calls`: the dead
    // replica's slots are taken back by their continuations before their leases lapse, or
    // reclaimed and re-added (never counted twice).
    let taken_over = eventually(CONVERGE, || async {
        let count = active_count(&redis).await;
        assert!(
            count <= calls,
            "calls:active_count {count} above the {calls} live calls"
        );
        for call_sid in &doomed {
            let state = redis_state(&redis, call_sid).await;
            if state["status"] != "active" || state["replica"] == victim_id.as_str() {
                return None;
            }
        }
        Some(())
    })
    .await;
    if taken_over.is_none() {
        let mut states = String::new();
        for call_sid in &doomed {
            states.push_str(&format!("{}\n", redis_state(&redis, call_sid).await));
        }
        let logs: Vec<String> = replicas.iter().map(ReplicaProcess::log).collect();
        panic!(
            "not every call of {victim_id} was continued elsewhere:\n{states}\n{}\n{}",
            logs.join("\n----\n"),
            nginx.error_log()
        );
    }
    let continued_after = killed_at.elapsed();
    // Within a lease and a tick the count is exact again, and stays so.
    tokio::time::sleep(Duration::from_secs(LEASE_SECS + TICK_SECS)).await;
    count_converges(&redis, calls, calls..=calls, CONVERGE).await;
    for call_sid in &doomed {
        let state = redis_state(&redis, call_sid).await;
        assert_eq!(state["resumes"], 1, "{state}");
        assert_eq!(state["status"], "active", "{state}");
    }
    let mut resumed = 0.0;
    for replica in replicas.iter().filter(|r| r.id != victim_id) {
        let (_, text) = get_text(&replica.url("/metrics")).await;
        resumed += metric_value(&text, "calls_resumed_total").unwrap_or(0.0);
    }
    assert_eq!(
        resumed,
        doomed.len() as f64,
        "calls_resumed_total on the survivors"
    );

    let report = sim.await.expect("the simulator run");
    let summary = assert_nobody_lost(&report, calls);
    assert_eq!(
        report.continuity.continued,
        doomed.len() as u64,
        "{summary}"
    );
    assert_eq!(
        report.continuity.streams_lost,
        doomed.len() as u64,
        "{summary}"
    );
    let (p50, p99, max) = gap_ms(&report);
    assert!(
        p99 < 2000.0,
        "audio resumed within 2 s: p99 {p99} ms ({summary})"
    );
    assert_eq!(
        redis_cli(&redis, &["GET", "calls:stats:started"]).await,
        calls.to_string(),
        "no caller counted twice"
    );
    count_converges(&redis, 0, 0..=calls, CONVERGE).await;
    eprintln!(
        "kill -9 {victim_id} under {calls} calls: {} continued, all taken over {continued_after:?} \
         after the kill; audio gap p50 {p50:.0} ms p99 {p99:.0} ms max {max:.0} ms; frames skipped {}, \
         lost {:?}",
        doomed.len(),
        report.continuity.frames_skipped,
        report.frames.lost
    );
}

/// `scripts/cluster roll` under steady calls longer than `DRAIN_TIMEOUT_SECS` plus new calls at a
/// steady rate (about one a second here; see docs/operations.md for 200 calls and 5 per second):
/// every replica restarted one at a time, zero webhooks refused, zero calls dropped,
/// every cut call continued, the count exact at the end.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rolling_restart_refuses_and_drops_nobody() {
    let nginx = nginx_binary();
    let state = tempfile::Builder::new()
        .prefix("prosaas-calls-roll-")
        .tempdir()
        .unwrap();
    let base = free_base();
    let cluster = |args: &[&str]| -> Output {
        let out = Command::new("bash")
            .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/cluster"))
            .args(args)
            .env("CLUSTER_STATE_DIR", state.path())
            .env("CLUSTER_BASE_PORT", base.to_string())
            .env("CLUSTER_BINARY", env!("CARGO_BIN_EXE_prosaas-calls"))
            .env("NGINX", &nginx)
            .env("RENEW_INTERVAL_SECS", TICK_SECS.to_string())
            .env("CALL_LEASE_SECS", LEASE_SECS.to_string())
            .env("DRAIN_TIMEOUT_SECS", "2")
            .env("MAX_CONCURRENT_CALLS", "1000")
            .env("RESUME_LIMIT", "5")
            .env_remove("REDIS_URL")
            .env_remove("TWILIO_AUTH_TOKEN")
            .env_remove("PUBLIC_URL")
            .output()
            .expect("run scripts/cluster");
        eprintln!(
            "$ scripts/cluster {} -> {:?}\n{}{}",
            args.join(" "),
            out.status.code(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    };
    struct Down<F: Fn(&[&str]) -> Output>(F);
    impl<F: Fn(&[&str]) -> Output> Drop for Down<F> {
        fn drop(&mut self) {
            let _ = (self.0)(&["down"]);
        }
    }
    let cluster = Down(cluster);
    assert!((cluster.0)(&["up", "3"]).status.success(), "up failed");
    let public = format!("http://127.0.0.1:{base}");
    let redis_port = base + 9;
    let cli = |args: Vec<String>| {
        let out = Command::new("redis-cli")
            .arg("-p")
            .arg(redis_port.to_string())
            .args(args)
            .output()
            .expect("redis-cli");
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };

    // Steady calls outlast the whole roll (three drains 11 s apart); new calls arrive at about one
    // per second through it.
    // `CONTINUITY_ROLL_STEADY` and `CONTINUITY_ROLL_ARRIVING` raise them toward the issue's scale.
    let from_env = |name: &str, default: u64| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let steady_calls = from_env("CONTINUITY_ROLL_STEADY", 12);
    let arriving_calls = from_env("CONTINUITY_ROLL_ARRIVING", 36);
    let steady = tokio::spawn(run::run(sim_run(
        Target::new(&public, None, None).unwrap(),
        steady_calls,
        Duration::from_secs(1),
        Duration::from_secs(45),
        21,
    )));
    tokio::time::sleep(Duration::from_secs(2)).await;
    let arriving = tokio::spawn(run::run(sim_run(
        Target::new(&public, None, None).unwrap(),
        arriving_calls,
        Duration::from_secs(32),
        Duration::from_secs(5),
        22,
    )));
    let rolled_at = Instant::now();
    let roll = tokio::task::spawn_blocking({
        let state = state.path().to_owned();
        let nginx = nginx.clone();
        move || {
            Command::new("bash")
                .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/cluster"))
                .arg("roll")
                .env("CLUSTER_STATE_DIR", state)
                .env("CLUSTER_BASE_PORT", base.to_string())
                .env("CLUSTER_BINARY", env!("CARGO_BIN_EXE_prosaas-calls"))
                .env("NGINX", nginx)
                .env("RENEW_INTERVAL_SECS", TICK_SECS.to_string())
                .env("CALL_LEASE_SECS", LEASE_SECS.to_string())
                .env("DRAIN_TIMEOUT_SECS", "2")
                .env("MAX_CONCURRENT_CALLS", "1000")
                .env("RESUME_LIMIT", "5")
                .env_remove("REDIS_URL")
                .output()
                .expect("scripts/cluster roll")
        }
    })
    .await
    .unwrap();
    let roll_took = rolled_at.elapsed();
    eprintln!(
        "$ scripts/cluster roll -> {:?}\n{}{}",
        roll.status.code(),
        String::from_utf8_lossy(&roll.stdout),
        String::from_utf8_lossy(&roll.stderr)
    );
    assert!(roll.status.success(), "roll failed");

    let steady = steady.await.expect("steady run");
    let arriving = arriving.await.expect("arriving run");
    if steady.calls.failed + arriving.calls.failed > 0 {
        // What nginx and the replicas saw, for the failure below.
        let read =
            |name: &str| std::fs::read_to_string(state.path().join(name)).unwrap_or_default();
        eprintln!("nginx error.log:\n{}", read("nginx/error.log"));
        for entry in std::fs::read_dir(state.path()).unwrap().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with("calls-") {
                let log = read(&name);
                let tail: Vec<&str> = log.lines().filter(|l| !l.contains(" INFO ")).collect();
                eprintln!("{name}:\n{}", tail.join("\n"));
            }
        }
    }
    for (name, report, calls) in [
        ("steady", &steady, steady_calls),
        ("arriving", &arriving, arriving_calls),
    ] {
        let summary = assert_nobody_lost(report, calls);
        assert_eq!(
            report.calls.rejected, 0,
            "zero webhooks refused ({name}): {summary}"
        );
    }
    // The steady calls outlive every replica: each was cut at least once and continued.
    assert!(
        steady.continuity.continued >= steady_calls,
        "steady calls continued {} times",
        steady.continuity.continued
    );
    let total = steady_calls + arriving_calls;
    let settled = eventually(CONVERGE, || async {
        (cli(vec!["GET".into(), "calls:active_count".into()]) == "0").then_some(())
    })
    .await;
    assert!(settled.is_some(), "the count did not come back to 0");
    assert_eq!(
        cli(vec!["GET".into(), "calls:stats:started".into()]),
        total.to_string(),
        "every call counted once"
    );
    assert_eq!(
        cli(vec![
            "GET".into(),
            "calls:stats:rejected_max_concurrent".into()
        ]),
        ""
    );
    let (p50, p99, max) = gap_ms(&steady);
    eprintln!(
        "rolling restart of 3 replicas in {roll_took:?} under {steady_calls} steady calls and \
         {arriving_calls} arriving over 32 s: refused {} dropped {}; continued {} (steady) + {} \
         (arriving); audio gap p50 {p50:.0} ms p99 {p99:.0} ms max {max:.0} ms",
        steady.calls.rejected + arriving.calls.rejected,
        steady.calls.failed + arriving.calls.failed,
        steady.continuity.continued,
        arriving.continuity.continued,
    );
}

/// docs/reference.md#drain on two in-process replicas sharing Redis: while another replica is live,
/// a draining one still admits webhooks and answers a new stream's upgrade with 503 (nginx passes
/// it on); once it is the last one, it refuses webhooks with the reject mode and takes streams
/// itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_draining_replica_admits_webhooks_and_passes_streams_on_while_another_is_live() {
    let redis = RedisServer::start().expect("redis-server");
    let start = |id: &str| {
        let mut raw = raw(Some(&redis), 10);
        raw.replica_id = Some(id.into());
        raw.drain_timeout_secs = Some("30".into());
        Replica::start(raw, StreamTimeouts::default())
    };
    let draining = start("draining").await;
    let other = start("other").await;
    // A live call keeps the drain going for the whole test.
    let mut held = live_call(&draining, 1).await;
    let heartbeat = eventually(Duration::from_secs(10), || async {
        let beat = redis_cli(&redis, &["GET", "calls:replica:other"]).await;
        (!beat.is_empty()).then_some(beat)
    })
    .await
    .expect("the other replica's heartbeat");
    let beat: Value = serde_json::from_str(&heartbeat).unwrap();
    assert_eq!(beat["max_concurrent_calls"], 10, "{beat}");
    draining.begin_drain();
    eventually(Duration::from_secs(5), || async {
        draining.app.is_draining().then_some(())
    })
    .await
    .expect("draining");

    let (status, twiml) = voice(&draining, &sid(2)).await;
    assert_eq!(
        status, 200,
        "admitted while another replica is live: {twiml}"
    );
    let upgrade = tokio_tungstenite::connect_async(stream_url_of(&twiml)).await;
    match upgrade {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status().as_u16(), 503);
        }
        other => panic!("expected a 503'd upgrade, got {:?}", other.map(|_| ())),
    }
    // The call's stream goes to the live replica instead.
    let mut moved = TwilioStream::connect(&other.url("/twilio/stream").replace("http", "ws")).await;
    moved.connected().await;
    moved.start(&sid(2)).await;
    moved.echo_round(1).await;
    moved.stop(&sid(2)).await;

    // The other replica leaves: its heartbeat lapses (or says draining) and the draining one is
    // the last: webhooks get the reject mode, streams are taken here.
    other.stop().await;
    let refused = eventually(Duration::from_secs(10), || async {
        let (status, _) = voice(&draining, &sid(3)).await;
        (status == 503).then_some(())
    })
    .await;
    assert!(refused.is_some(), "the last replica refuses while draining");
    let mut last =
        TwilioStream::connect(&draining.url("/twilio/stream").replace("http", "ws")).await;
    last.connected().await;
    last.start(&sid(1_000)).await;
    // No reservation and draining: refused at `start` (1013), but the upgrade itself was taken.
    assert_eq!(last.close_code(Duration::from_secs(5)).await, Some(1013));
    held.echo_round(1).await;
    held.stop(&sid(1)).await;
    draining.wait_stopped(Duration::from_secs(40)).await;
}

/// At the drain deadline a live call's stream is closed with 1001, its state already saying
/// `drain_timeout` when the close arrives (so the after-stream never reads a stale state), and the
/// after-stream answer continues it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_cut_by_the_drain_deadline_is_continued() {
    let redis = RedisServer::start().expect("redis-server");
    let mut config = raw(Some(&redis), 10);
    config.drain_timeout_secs = Some("1".into());
    let draining = Replica::start(config, StreamTimeouts::default()).await;
    let mut stream = live_call(&draining, 1).await;
    let store = draining.app.clone();
    draining.begin_drain();
    assert_eq!(stream.close_code(Duration::from_secs(10)).await, Some(1001));
    let sid1 = calls_core::call_sid::CallSid::parse(&sid(1)).unwrap();
    let at_close = store
        .calls()
        .store()
        .read_state(&sid1)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        at_close
            .end_reason
            .map(calls_core::state::EndReason::as_str),
        Some("drain_timeout"),
        "recorded before the socket was closed"
    );
    // The drained replica is gone; another answers the after-stream from the state.
    draining.wait_stopped(Duration::from_secs(15)).await;
    let other = Replica::start(raw(Some(&redis), 10), StreamTimeouts::default()).await;
    let (status, answer) = after_stream(&other.url(""), &sid(1), "in-progress").await;
    assert_eq!(status, 200);
    assert_eq!(parameters_of(&answer)["resumed"], "1", "{answer}");
    other.stop().await;
}

/// The action URL the TwiML gives is built from the normalised `PUBLIC_URL` (lower-case host), and
/// Twilio signs its request over that URL: a `PUBLIC_URL` written in mixed case must not make
/// every after-stream a 403 (it did: the check used `PUBLIC_URL` as written).
#[tokio::test]
async fn the_after_stream_signature_is_checked_over_the_normalised_action_url() {
    let public = "https://Calls.Example.COM";
    let mut config = raw(None, 5);
    config.twilio_auth_token = Some("continuity-secret".into());
    config.public_url = Some(public.into());
    let replica = Replica::start(config, StreamTimeouts::default()).await;
    let signed = Target::new(
        &replica.url(""),
        Some(public),
        Some("continuity-secret".into()),
    )
    .unwrap();
    let call_sid = sid(10);
    let ids = prosaas_calls_sim::webhook::CallIds::inbound(
        &call_sid,
        "AC0123456789abcdef0123456789abcdef",
    );
    let (_, connect) = prosaas_calls_sim::webhook::request_voice(&signed, &ids)
        .await
        .unwrap();
    let action = connect.unwrap().action_url.unwrap();
    assert!(
        action.starts_with("https://calls.example.com/twilio/after-stream"),
        "{action}"
    );
    match prosaas_calls_sim::webhook::post_action(&signed, &action, &ids).await {
        Ok(prosaas_calls_sim::webhook::AfterStream::Continue(next)) => {
            assert_eq!(next.stream_url, "wss://calls.example.com/twilio/stream");
        }
        other => panic!("signed after-stream: {other:?}"),
    }
    replica.stop().await;
}

/// With `TWILIO_AUTH_TOKEN`, the after-stream request is checked like every Twilio request: signed
/// over the action URL the TwiML gave (built from `PUBLIC_URL`), else 403 and no state changes.
#[tokio::test]
async fn the_after_stream_request_must_be_signed_over_its_action_url() {
    let mut config = raw(None, 5);
    config.twilio_auth_token = Some("continuity-secret".into());
    config.public_url = Some("https://calls.example.com".into());
    let replica = Replica::start(config, StreamTimeouts::default()).await;
    let signed = Target::new(
        &replica.url(""),
        Some("https://calls.example.com"),
        Some("continuity-secret".into()),
    )
    .unwrap();
    let unsigned = Target::new(&replica.url(""), None, None).unwrap();
    let call_sid = sid(9);
    let ids = prosaas_calls_sim::webhook::CallIds::inbound(
        &call_sid,
        "AC0123456789abcdef0123456789abcdef",
    );
    let (_, connect) = prosaas_calls_sim::webhook::request_voice(&signed, &ids)
        .await
        .unwrap();
    let action = connect.unwrap().action_url.unwrap();
    assert_eq!(
        action,
        "https://calls.example.com/twilio/after-stream?stream=0"
    );
    // The call is still reserved (its stream never came): the signed request continues it.
    match prosaas_calls_sim::webhook::post_action(&unsigned, &action, &ids).await {
        Err(prosaas_calls_sim::error::SimError::WebhookStatus(403)) => {}
        other => panic!("unsigned after-stream: {other:?}"),
    }
    assert_eq!(
        state(&replica, &call_sid).await.resumes,
        0,
        "nothing changed"
    );
    match prosaas_calls_sim::webhook::post_action(&signed, &action, &ids).await {
        Ok(prosaas_calls_sim::webhook::AfterStream::Continue(next)) => {
            assert_eq!(next.stream_url, "wss://calls.example.com/twilio/stream");
            assert!(next.parameters.contains(&("resumed".into(), "1".into())));
            assert_eq!(
                next.action_url.as_deref(),
                Some("https://calls.example.com/twilio/after-stream?stream=1")
            );
        }
        other => panic!("signed after-stream: {other:?}"),
    }
    // The same signed request replayed (docs/reference.md#after-stream): the call's current
    // stream is 1 now, so it spends nothing and is answered with a hang-up.
    for _ in 0..3 {
        match prosaas_calls_sim::webhook::post_action(&signed, &action, &ids).await {
            Ok(prosaas_calls_sim::webhook::AfterStream::Hangup) => {}
            other => panic!("replayed after-stream: {other:?}"),
        }
    }
    let kept = state(&replica, &call_sid).await;
    assert_eq!(
        (kept.resumes, kept.resume_grant),
        (1, Some(1)),
        "nothing spent"
    );
    replica.stop().await;
}

/// docs/reference.md#hand-over with real replica processes: a replica drained at the cap hands its
/// calls over, and their slots stay taken meanwhile: a new webhook is refused while the hand-overs
/// are pending, the continuation takes its call's held slot (no second slot, the count never above
/// the cap), and a hand-over nobody continues frees its slot once `RESERVATION_SECS` pass.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_at_the_cap_lets_no_new_call_in_on_top_of_its_hand_overs() {
    let redis = RedisServer::start().expect("redis-server");
    let env = ReplicaEnv::new(redis.url(), 2)
        .with("RENEW_INTERVAL_SECS", "0.2")
        .with("DRAIN_TIMEOUT_SECS", "1")
        .with("RESERVATION_SECS", "4")
        .with("RUST_LOG", "info");
    let mut draining = env.spawn("handing-over");
    let other = env.spawn("taking-over");
    let mut first = open_call(&draining, 1).await;
    let mut second = open_call(&draining, 2).await;
    assert_eq!(active_count(&redis).await, 2);
    let (status, _) = voice_at(&other.url("/twilio/voice"), &sid(3)).await;
    assert_eq!(status, 503, "at the cap");

    // The drain deadline cuts both calls: each is handed over, and keeps its slot.
    draining.signal("TERM").unwrap();
    assert_eq!(first.close_code(Duration::from_secs(10)).await, Some(1001));
    assert_eq!(second.close_code(Duration::from_secs(10)).await, Some(1001));
    assert_eq!(
        draining.wait_exit(Duration::from_secs(20)).unwrap(),
        Some(0)
    );
    for n in [1, 2] {
        assert_eq!(
            redis_state(&redis, &sid(n)).await["end_reason"],
            "drain_timeout"
        );
    }
    assert_eq!(
        active_count(&redis).await,
        2,
        "the hand-overs hold their slots"
    );
    let (status, body) = voice_at(&other.url("/twilio/voice"), &sid(3)).await;
    assert_eq!(status, 503, "a new call on top of the hand-overs: {body}");

    // Call 1 continues on the other replica: it takes its own slot back, no second one.
    let (status, answer) = after_stream(&other.url(""), &sid(1), "in-progress").await;
    assert_eq!(status, 200);
    let parameters = parameters_of(&answer);
    assert_eq!(parameters["resumed"], "1", "{answer}");
    let mut continued = stream_with(&stream_url_of(&answer), &sid(1), parameters).await;
    continued.echo_round(1).await;
    assert_eq!(
        active_count(&redis).await,
        2,
        "the continuation took the held slot"
    );
    let (status, _) = voice_at(&other.url("/twilio/voice"), &sid(4)).await;
    assert_eq!(status, 503, "call 2's hand-over still holds its slot");

    // Call 2 is never continued: its slot is freed after RESERVATION_SECS, and only then can a
    // new call take it.
    let admitted = eventually(Duration::from_secs(10), || async {
        let count = active_count(&redis).await;
        assert!(count <= 2, "over the cap: {count}");
        let (status, _) = voice_at(&other.url("/twilio/voice"), &sid(5)).await;
        (status == 200).then_some(())
    })
    .await;
    assert!(
        admitted.is_some(),
        "the lapsed hand-over's slot was never freed"
    );
    assert_eq!(active_count(&redis).await, 2);
    continued.echo_round(1).await;
    continued.stop(&sid(1)).await;
    drop(other);
}

/// A stream for `call_sid` opened on `local` with the handshake `signature` (Twilio's, over the
/// stream URL the TwiML gave), whose `start` carries `parameters`.
async fn signed_stream_with(
    local: &str,
    signature: &str,
    call_sid: &str,
    parameters: Value,
) -> TwilioStream {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut request = local.into_client_request().unwrap();
    request
        .headers_mut()
        .insert("x-twilio-signature", signature.parse().unwrap());
    let (ws, _) = tokio_tungstenite::connect_async(request)
        .await
        .expect("a signed handshake is accepted");
    let mut stream = TwilioStream::over(ws);
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

/// docs/reference.md#stream-token: with `TWILIO_AUTH_TOKEN`, the handshake's signature (the same
/// for every call) is not enough to claim a call. A `start` with another call's token, with none,
/// or replaying a spent continuation number is refused with 1008, counted, and changes nothing;
/// the real call's streams, carrying their tokens, go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_is_bound_to_its_call_by_its_token() {
    let redis = RedisServer::start().expect("redis-server");
    let (public, secret) = ("https://calls.example.com", "binding-secret");
    let mut config = raw(Some(&redis), 5);
    config.twilio_auth_token = Some(secret.into());
    config.public_url = Some(public.into());
    let replica = Replica::start(config, StreamTimeouts::default()).await;
    let signed = Target::new(&replica.url(""), Some(public), Some(secret.into())).unwrap();
    let account = "AC0123456789abcdef0123456789abcdef";
    let (call, other) = (sid(1), sid(2));
    let mut connects = Vec::new();
    for call_sid in [&call, &other] {
        let ids = prosaas_calls_sim::webhook::CallIds::inbound(call_sid, account);
        let (_, connect) = prosaas_calls_sim::webhook::request_voice(&signed, &ids)
            .await
            .unwrap();
        connects.push(connect.expect("admitted"));
    }
    let params = |connect: &prosaas_calls_sim::webhook::Connect| -> Value {
        connect
            .parameters
            .iter()
            .map(|(name, value)| (name.clone(), Value::from(value.clone())))
            .collect::<serde_json::Map<_, _>>()
            .into()
    };
    let (mine, theirs) = (params(&connects[0]), params(&connects[1]));
    let token = mine["token"]
        .as_str()
        .expect("a token parameter")
        .to_owned();
    assert_ne!(Some(token.as_str()), theirs["token"].as_str());
    let empty: [(String, String); 0] = [];
    let handshake = twilio::signature::compute(secret, &connects[0].stream_url, &empty);
    let local = format!("ws://{}/twilio/stream", replica.addr);
    let stored = state(&replica, &call).await;

    // Another call's token, none at all, or a continuation number it was never granted.
    let forgeries = [
        json!({"CallSid": call, "token": theirs["token"]}),
        json!({"CallSid": call}),
        json!({"CallSid": call, "token": token, "resumed": "1"}),
    ];
    for (n, forged) in forgeries.iter().enumerate() {
        let mut stream = signed_stream_with(&local, &handshake, &call, forged.clone()).await;
        assert_eq!(
            stream.close_code(Duration::from_secs(5)).await,
            Some(1008),
            "forgery {n}"
        );
    }
    assert_eq!(state(&replica, &call).await, stored, "nothing changed");
    assert_eq!(active_count(&redis).await, 2);
    assert_eq!(
        redis_cli(&redis, &["EXISTS", &format!("calls:lock:{call}")]).await,
        "0"
    );
    let text = replica.app.metrics().render();
    assert_eq!(
        metric_value(&text, r#"media_messages_dropped_total{reason="bad_token"}"#),
        Some(3.0)
    );

    // The real stream, with its token, takes its call; the token is not kept in the state.
    let mut first = signed_stream_with(&local, &handshake, &call, mine.clone()).await;
    first.echo_round(1).await;
    let live = state(&replica, &call).await;
    assert_eq!(live.status, calls_core::state::CallStatus::Active);
    assert!(!live.custom_parameters.contains_key("token"), "{live:?}");
    // Lost: the continuation carries the token of stream 1, and only it takes the call.
    drop(first);
    ended_state(&replica, &call).await;
    let ids = prosaas_calls_sim::webhook::CallIds::inbound(&call, account);
    let action = connects[0].action_url.clone().unwrap();
    let next = match prosaas_calls_sim::webhook::post_action(&signed, &action, &ids).await {
        Ok(prosaas_calls_sim::webhook::AfterStream::Continue(next)) => next,
        other => panic!("after-stream: {other:?}"),
    };
    let continued = params(&next);
    assert_eq!(continued["resumed"], "1");
    assert_ne!(continued["token"], mine["token"]);
    let mut replayed_first = signed_stream_with(&local, &handshake, &call, mine.clone()).await;
    assert_eq!(
        replayed_first.close_code(Duration::from_secs(5)).await,
        Some(1008),
        "the first stream's token does not take a continuation"
    );
    let mut second = signed_stream_with(&local, &handshake, &call, continued.clone()).await;
    second.echo_round(1).await;
    // The continuation number replayed: its grant is spent.
    let mut replayed = signed_stream_with(&local, &handshake, &call, continued).await;
    assert_eq!(
        replayed.close_code(Duration::from_secs(5)).await,
        Some(1008)
    );
    second.echo_round(1).await;
    second.stop(&call).await;
    replica.stop().await;
}

/// One client frame as RFC 6455 writes it (masked, FIN set), with `first` as its first byte's
/// flags and opcode: a test can set what a real client never would.
fn client_frame(first: u8, payload: &[u8]) -> Vec<u8> {
    let mask = [0x37, 0xfa, 0x21, 0x3d];
    let mut frame = vec![first];
    match payload.len() {
        len if len < 126 => frame.push(0x80 | len as u8),
        len => {
            frame.push(0x80 | 126);
            frame.extend_from_slice(&(len as u16).to_be_bytes());
        }
    }
    frame.extend_from_slice(&mask);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    frame
}

/// SPEC §9 with a real socket: a peer that breaks the WebSocket protocol mid-call (a frame with a
/// reserved bit set) is bad input, so its call is closed with 1002, ends as `error` and the
/// after-stream answer hangs up; it is not `disconnected`, which would continue it.
#[tokio::test]
async fn a_protocol_error_mid_call_hangs_up() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let replica = Replica::start(raw(None, 5), StreamTimeouts::default()).await;
    let call = sid(11);
    let (status, _) = voice(&replica, &call).await;
    assert_eq!(status, 200);
    let mut tcp = tokio::net::TcpStream::connect(replica.addr).await.unwrap();
    let upgrade = format!(
        "GET /twilio/stream HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        replica.addr
    );
    tcp.write_all(upgrade.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        head.push(tcp.read_u8().await.unwrap());
    }
    assert!(
        head.starts_with(b"HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    let stream_sid = "MZ0000000000000000000000000000000b";
    let start = json!({"event": "start", "sequenceNumber": "1", "streamSid": stream_sid,
        "start": {"accountSid": "AC0123456789abcdef0123456789abcdef", "streamSid": stream_sid,
                  "callSid": call, "tracks": ["inbound"],
                  "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
                  "customParameters": {"CallSid": call}}});
    tcp.write_all(&client_frame(0x81, start.to_string().as_bytes()))
        .await
        .unwrap();
    let live = eventually(Duration::from_secs(5), || async {
        (state(&replica, &call).await.status == calls_core::state::CallStatus::Active).then_some(())
    })
    .await;
    assert!(live.is_some(), "the stream never started");
    // FIN + RSV1 + text, with no extension negotiated: a protocol error.
    tcp.write_all(&client_frame(0xc1, b"{}")).await.unwrap();
    let mut close = [0u8; 4];
    tokio::time::timeout(Duration::from_secs(5), tcp.read_exact(&mut close))
        .await
        .expect("a close frame in time")
        .unwrap();
    assert_eq!(close[0], 0x88, "a close frame: {close:?}");
    assert_eq!(u16::from_be_bytes([close[2], close[3]]), 1002);
    let ended = ended_state(&replica, &call).await;
    assert_eq!(
        ended.end_reason.map(calls_core::state::EndReason::as_str),
        Some("error")
    );
    let (status, answer) = after_stream(&replica.url(""), &call, "in-progress").await;
    assert_eq!(status, 200);
    assert!(
        answer.contains("<Hangup/>") && !answer.contains("<Stream"),
        "{answer}"
    );
    replica.stop().await;
}
