//! Outbound calls (docs/reference.md#outbound) over real processes: replicas of the built binary,
//! a real Redis, and the simulator's Twilio REST double playing Twilio (placing, ringing,
//! answering, streaming, signed callbacks). Each test reads what Twilio was sent from the double's
//! record, and what the cluster did from Redis and the API.

use std::time::Duration;

use serde_json::{Value, json};
use testkit::RedisServer;
use testkit::twilio_api::{ACCOUNT_SID, TwilioApiDouble, sim_binary};

use crate::helpers::*;

const API_KEY_SID: &str = "SK0123456789abcdef0123456789abcdef";
const API_KEY_SECRET: &str = "outbound-key-secret";
const API_TOKEN: &str = "outbound-api-token";
/// What Twilio is told (and signs); the double connects to the replica whatever the host.
const PUBLIC_URL: &str = "https://calls.example.com";

/// A cluster for outbound tests: Redis, the double, and the port its callbacks go to (the
/// replica started there with [`Cluster::replica`] takes them).
struct Cluster {
    redis: RedisServer,
    double: TwilioApiDouble,
    callback_port: u16,
    env: ReplicaEnv,
}

impl Cluster {
    /// `limit` lines, `cps` calls per second, `reserve` lines kept for inbound, and the double
    /// started with `args` on top of its defaults (signed callbacks, a fast dial).
    async fn start(limit: u64, cps: &str, reserve: u64, args: &[&str]) -> Self {
        let redis = RedisServer::start().expect("redis-server");
        let callback_port = testkit::free_port().unwrap();
        let target = format!("http://127.0.0.1:{callback_port}");
        let api_key = format!("{API_KEY_SID}:{API_KEY_SECRET}");
        let defaults = [
            ("--dial-delay", "0.05"),
            ("--ring-secs", "0.3"),
            ("--talk-secs", "1"),
        ];
        let mut all: Vec<String> = vec!["--api-key".into(), api_key, "--target".into(), target];
        for (flag, value) in defaults {
            if !args.contains(&flag) {
                all.extend([flag.to_owned(), value.to_owned()]);
            }
        }
        all.extend(args.iter().map(|s| (*s).to_owned()));
        let double = tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = all.iter().map(String::as_str).collect();
            TwilioApiDouble::spawn(sim_binary(), &args).expect("the Twilio REST double")
        })
        .await
        .unwrap();
        // Signatures are the twilio tests' business: here the replicas check none, so the tests
        // can act as inbound callers with plain webhooks.
        let env = ReplicaEnv::new(redis.url(), limit)
            .with("PUBLIC_URL", PUBLIC_URL)
            .with("API_TOKEN", API_TOKEN)
            .with("OUTBOUND_CPS", cps)
            .with("INBOUND_RESERVE", reserve)
            .with("TWILIO_ACCOUNT_SID", ACCOUNT_SID)
            .with("TWILIO_API_KEY_SID", API_KEY_SID)
            .with("TWILIO_API_KEY_SECRET", API_KEY_SECRET)
            .with("TWILIO_API_BASE", double.base_url())
            .with("MEDIA_HANDLER", "echo");
        Self {
            redis,
            double,
            callback_port,
            env,
        }
    }

    /// The replica Twilio's callbacks reach.
    fn replica(&self, id: &str) -> testkit::ReplicaProcess {
        let env: Vec<(&str, String)> = self.env.vars().to_vec();
        testkit::ReplicaProcess::spawn_at(binary(), self.callback_port, id, &env)
            .expect("replica starts")
    }

    /// Another replica, on a port of its own (Twilio never reaches it).
    fn other_replica(&self, id: &str) -> testkit::ReplicaProcess {
        self.env.spawn(id)
    }

    /// The double's recorded call requests.
    fn call_requests(&self) -> Vec<prosaas_calls_sim::rest_double::Recorded> {
        serde_json::from_str(&self.double.requests_json(Some("calls")).unwrap()).unwrap()
    }

    fn summary(&self) -> Value {
        serde_json::from_str(&self.double.summary_json().unwrap()).unwrap()
    }
}

/// A `/v1/*` request with the API token (or `token`), answered status and JSON body.
async fn api(
    replica: &testkit::ReplicaProcess,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
    headers: &[(&str, &str)],
) -> (u16, Value) {
    let mut request = client()
        .request(method, replica.url(path))
        .bearer_auth(API_TOKEN);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    if let Some(body) = body {
        request = request
            .header("content-type", "application/json")
            .body(body.to_string());
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// Queues a call to `to` and returns its id.
async fn queue_call(replica: &testkit::ReplicaProcess, to: &str, extra: Value) -> String {
    let mut body = json!({"to": to, "from": "+14155550000", "timeout_secs": 2});
    if let (Some(body), Some(extra)) = (body.as_object_mut(), extra.as_object()) {
        body.extend(extra.clone());
    }
    let (status, record) = api(replica, reqwest::Method::POST, "/v1/calls", Some(body), &[]).await;
    assert_eq!(status, 202, "{record}");
    assert_eq!(record["status"], "queued", "{record}");
    record["id"].as_str().unwrap().to_owned()
}

async fn record_of(replica: &testkit::ReplicaProcess, id: &str) -> Value {
    let (status, record) = api(
        replica,
        reqwest::Method::GET,
        &format!("/v1/calls/{id}"),
        None,
        &[],
    )
    .await;
    assert_eq!(status, 200, "{record}");
    record
}

/// The record once its status is `status` (within `wait`).
async fn record_when(
    replica: &testkit::ReplicaProcess,
    id: &str,
    status: &str,
    wait: Duration,
) -> Value {
    match eventually(wait, || async {
        let record = record_of(replica, id).await;
        (record["status"] == status).then_some(record)
    })
    .await
    {
        Some(record) => record,
        None => panic!(
            "{id} never {status}: {}\n{}",
            record_of(replica, id).await,
            replica.log()
        ),
    }
}

fn nobody_dialed_twice(cluster: &Cluster) {
    let summary = cluster.summary();
    assert_eq!(
        summary["dialed_more_than_once"],
        json!([]),
        "somebody was dialed twice: {summary}"
    );
}

/// The slot is held from before the REST request (Twilio answers it 2 s late, having placed the
/// call) and while it rings: with one line, an inbound caller meanwhile is refused. The request is
/// Twilio's with the callbacks carrying the id, and the answered call's webhook finds its slot and
/// streams with the request's parameters; the record follows the call to `completed` and the
/// state says `outbound`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_holds_its_line_before_it_is_dialed_and_is_connected_when_answered() {
    let cluster = Cluster::start(1, "5", 0, &["--calls", "1*delay:2", "--ring-secs", "2"]).await;
    let replica = cluster.replica("r1");
    let id = queue_call(
        &replica,
        "+14155550101",
        json!({"parameters": {"appointment": "42"}}),
    )
    .await;

    // While Twilio has not answered the request, and while it rings: the one line is taken.
    let dialing = eventually(Duration::from_secs(5), || async {
        let record = record_of(&replica, &id).await;
        (record["status"] == "dialing" || record["status"] == "ringing").then_some(record)
    })
    .await
    .expect("the call is placed");
    assert_eq!(dialing["replica"], "r1");
    assert!(dialing["dialed_at"].is_string());
    assert_eq!(active_count(&cluster.redis).await, 1);
    assert_eq!(
        voice_at(&replica.url("/twilio/voice"), &sid(1)).await.0,
        503
    );

    let done = record_when(&replica, &id, "completed", Duration::from_secs(15)).await;
    let call_sid = done["call_sid"].as_str().unwrap().to_owned();
    assert!(
        done["answered_at"].is_string() && done["ended_at"].is_string(),
        "{done}"
    );
    assert_eq!(done["direction"], "outbound");
    assert_eq!(done["error"], Value::Null);

    // What Twilio was asked.
    let requests = cluster.call_requests();
    assert_eq!(requests.len(), 1);
    let request = &requests[0];
    assert_eq!(request.field("To"), Some("+14155550101"));
    assert_eq!(request.field("From"), Some("+14155550000"));
    assert_eq!(request.field("Timeout"), Some("2"));
    assert_eq!(
        request.field("Url"),
        Some(format!("{PUBLIC_URL}/twilio/voice?outbound={id}").as_str())
    );
    assert_eq!(
        request.field("StatusCallback"),
        Some(format!("{PUBLIC_URL}/twilio/status?outbound={id}").as_str())
    );
    assert_eq!(
        request.fields("StatusCallbackEvent"),
        ["initiated", "ringing", "answered", "completed"]
    );

    // The call streamed as an outbound call with its parameters; its slot is free again.
    let state = eventually(Duration::from_secs(5), || async {
        let state = redis_state(&cluster.redis, &call_sid).await;
        (state["status"] == "ended").then_some(state)
    })
    .await
    .expect("the call's state ends");
    assert_eq!(state["direction"], "outbound", "{state}");
    assert_eq!(state["custom_parameters"]["appointment"], "42", "{state}");
    assert!(state["frames_in"].as_u64().unwrap() > 0, "{state}");
    count_converges(&cluster.redis, 0, 0..=5, Duration::from_secs(5)).await;
    let summary = cluster.summary();
    assert_eq!(summary["media"]["streamed"], 1, "{summary}");
    nobody_dialed_twice(&cluster);

    let (_, metrics) = get_text(&replica.url("/metrics")).await;
    assert_eq!(
        metric_value(&metrics, "calls_outbound_total{result=\"answered\"}"),
        Some(1.0),
        "{metrics}"
    );
}

/// Two replicas dial one queue at 5 calls a second in all, never closer than the pace by
/// Twilio's clock, and never into the last line, which an inbound caller then finds free.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pace_is_cluster_wide_and_inbound_keeps_its_reserve() {
    // Every call rings its whole timeout (no answer), so the lines stay taken.
    let cluster = Cluster::start(4, "5", 1, &["--mix", "no-answer=100"]).await;
    let one = cluster.replica("r1");
    let two = cluster.other_replica("r2");
    let mut ids = Vec::new();
    for n in 0..6 {
        let replica = if n % 2 == 0 { &one } else { &two };
        ids.push(
            queue_call(
                replica,
                &format!("+1415555020{n}"),
                json!({"timeout_secs": 3}),
            )
            .await,
        );
    }
    // Three lines (4 less the reserve of 1) ring; the other three calls wait.
    let dialed = eventually(Duration::from_secs(5), || async {
        let n = cluster.call_requests().len();
        (n == 3).then_some(n)
    })
    .await;
    assert_eq!(dialed, Some(3), "{:?}", cluster.call_requests().len());
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(
        cluster.call_requests().len(),
        3,
        "a call took the reserved line"
    );
    assert_eq!(active_count(&cluster.redis).await, 3);
    // The reserved line is an inbound caller's.
    assert_eq!(voice_at(&one.url("/twilio/voice"), &sid(1)).await.0, 200);
    assert_eq!(active_count(&cluster.redis).await, 4);
    let (_, listed) = api(
        &two,
        reqwest::Method::GET,
        "/v1/calls?status=queued",
        None,
        &[],
    )
    .await;
    assert_eq!(listed["calls"].as_array().unwrap().len(), 3, "{listed}");

    // As the unanswered calls end, the rest are placed: 6 in all, 200 ms apart by Redis' clock;
    // as they reach Twilio, each at least 150 ms after the one before (the slack: one request's
    // own travel on a loaded machine).
    for id in &ids {
        record_when(&one, id, "no-answer", Duration::from_secs(30)).await;
    }
    let requests = cluster.call_requests();
    assert_eq!(requests.len(), 6);
    let mut at: Vec<i64> = requests.iter().map(|r| r.received_unix_us).collect();
    at.sort_unstable();
    let gaps_ms: Vec<f64> = at
        .windows(2)
        .map(|w| (w[1] - w[0]) as f64 / 1000.0)
        .collect();
    for gap in &gaps_ms {
        assert!(
            *gap >= 190.0,
            "two calls placed {gap} ms apart: {gaps_ms:?}"
        );
    }
    let mut replicas = std::collections::BTreeSet::new();
    for id in &ids {
        replicas.insert(
            record_of(&one, id).await["replica"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    eprintln!("  gaps between placed calls (ms): {gaps_ms:?}; placed by {replicas:?}");
    nobody_dialed_twice(&cluster);
}

/// 400 naming the field, 401, 404 for an unknown id and without `API_TOKEN`, the same
/// `Idempotency-Key` answering the first call, and a queued call canceled before it is placed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_queue_nothing_keys_are_idempotent_and_queued_calls_cancel() {
    // One line, held by an inbound caller: outbound calls stay queued.
    let cluster = Cluster::start(1, "20", 0, &[]).await;
    let replica = cluster.replica("r1");
    assert_eq!(
        voice_at(&replica.url("/twilio/voice"), &sid(1)).await.0,
        200
    );

    let post = |body: Value, headers: Vec<(&'static str, &'static str)>| {
        let replica = &replica;
        async move {
            api(
                replica,
                reqwest::Method::POST,
                "/v1/calls",
                Some(body),
                &headers,
            )
            .await
        }
    };
    let (status, answer) = post(json!({"to": "0415", "from": "+14155550000"}), vec![]).await;
    assert_eq!(
        (status, &answer["error"]["field"]),
        (400, &json!("to")),
        "{answer}"
    );
    let (status, answer) = post(json!({"to": "+14155550300"}), vec![]).await;
    assert_eq!(
        (status, &answer["error"]["field"]),
        (400, &json!("from")),
        "{answer}"
    );
    let (status, answer) = post(
        json!({"to": "+14155550300", "from": "+14155550000", "timeout_secs": 0}),
        vec![],
    )
    .await;
    assert_eq!(
        (status, &answer["error"]["field"]),
        (400, &json!("timeout_secs"))
    );
    let unauthorized = client()
        .post(replica.url("/v1/calls"))
        .bearer_auth("wrong")
        .header("content-type", "application/json")
        .body(json!({"to": "+14155550300", "from": "+14155550000"}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(unauthorized.status().as_u16(), 401);
    let anonymous = client().get(replica.url("/v1/calls")).send().await.unwrap();
    assert_eq!(anonymous.status().as_u16(), 401);
    let (_, listed) = api(&replica, reqwest::Method::GET, "/v1/calls", None, &[]).await;
    assert_eq!(
        listed["calls"],
        json!([]),
        "a refused request queued something"
    );

    let key = [("Idempotency-Key", "reminder-1")];
    let body = json!({"to": "+14155550301", "from": "+14155550000"});
    let (status, first) = api(
        &replica,
        reqwest::Method::POST,
        "/v1/calls",
        Some(body.clone()),
        &key,
    )
    .await;
    assert_eq!(status, 202);
    let (status, again) = api(
        &replica,
        reqwest::Method::POST,
        "/v1/calls",
        Some(body),
        &key,
    )
    .await;
    assert_eq!((status, &again["id"]), (202, &first["id"]));
    let id = first["id"].as_str().unwrap();
    let (_, listed) = api(
        &replica,
        reqwest::Method::GET,
        "/v1/calls?status=queued",
        None,
        &[],
    )
    .await;
    assert_eq!(listed["calls"].as_array().unwrap().len(), 1, "{listed}");
    // The command line: the queue in `status`, the direction in `calls`.
    let cli = |args: &[&str]| {
        let out = std::process::Command::new(binary())
            .args(args)
            .env("REDIS_URL", cluster.redis.url())
            .output()
            .expect("the binary runs");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let status: Value = serde_json::from_str(&cli(&["status", "--json"])).unwrap();
    assert_eq!(status["outbound_queued"], 1, "{status}");
    assert!(cli(&["status"]).contains("Outbound: 1 queued"));
    let calls: Value = serde_json::from_str(&cli(&["calls", "--json"])).unwrap();
    assert_eq!(calls[0]["direction"], "inbound", "{calls}");
    assert!(cli(&["calls"]).contains("DIRECTION"));
    let (_, metrics) = get_text(&replica.url("/metrics")).await;
    assert_eq!(metric_value(&metrics, "calls_outbound_queued"), Some(1.0));
    let (status, _) = api(
        &replica,
        reqwest::Method::GET,
        "/v1/calls?status=bogus",
        None,
        &[],
    )
    .await;
    assert_eq!(status, 400);

    let (status, canceled) = api(
        &replica,
        reqwest::Method::DELETE,
        &format!("/v1/calls/{id}"),
        None,
        &[],
    )
    .await;
    assert_eq!(
        (status, &canceled["status"]),
        (200, &json!("canceled")),
        "{canceled}"
    );
    // The line frees; nothing is placed.
    status_at(&replica.url(""), &sid(1), "completed").await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(cluster.call_requests().is_empty());
    let (status, _) = api(
        &replica,
        reqwest::Method::GET,
        "/v1/calls/OB0123456789abcdef0123456789abcdef",
        None,
        &[],
    )
    .await;
    assert_eq!(status, 404);

    // Without API_TOKEN the API does not exist.
    let off = ReplicaEnv::new(cluster.redis.url(), 1).spawn("off");
    let answer = client()
        .get(off.url("/v1/calls"))
        .bearer_auth(API_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status().as_u16(), 404);
}

/// Twilio's refusals: a 400 fails the call with Twilio's code, a 500 fails it (it may have been
/// placed: never sent again), a 429 puts it back at the head and it is placed after the back-off,
/// and a request left hanging fails after 10 s. Every failure frees its line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twilio_refusals_fail_the_call_and_a_429_backs_off() {
    let cluster = Cluster::start(3, "20", 0, &[]).await;
    let replica = cluster.replica("r1");

    cluster
        .double
        .set_behaviour("calls", "1*fail:400:21211:Invalid 'To' Phone Number")
        .unwrap();
    let refused = queue_call(&replica, "+14155550401", json!({})).await;
    let failed = record_when(&replica, &refused, "failed", Duration::from_secs(5)).await;
    assert_eq!(failed["error"]["code"], 21211, "{failed}");
    assert_eq!(failed["error"]["reason"], "twilio_refused");
    assert!(
        failed["error"]["message"]
            .as_str()
            .unwrap()
            .contains("Invalid 'To' Phone Number")
    );

    cluster.double.set_behaviour("calls", "1*fail:500").unwrap();
    let broken = queue_call(&replica, "+14155550402", json!({})).await;
    let failed = record_when(&replica, &broken, "failed", Duration::from_secs(5)).await;
    assert_eq!(failed["error"]["code"], 20500, "{failed}");
    count_converges(&cluster.redis, 0, 0..=5, Duration::from_secs(3)).await;

    cluster
        .double
        .set_behaviour("calls", "rate-limit:first=2")
        .unwrap();
    let limited = queue_call(&replica, "+14155550403", json!({})).await;
    record_when(&replica, &limited, "completed", Duration::from_secs(20)).await;
    let to_limited: Vec<i64> = cluster
        .call_requests()
        .iter()
        .filter(|r| r.field("To") == Some("+14155550403"))
        .map(|r| r.received_unix_us)
        .collect();
    assert_eq!(to_limited.len(), 3, "two 429s, then placed");
    // Backed off at least a second each time.
    assert!(to_limited[1] - to_limited[0] >= 900_000, "{to_limited:?}");
    assert!(to_limited[2] - to_limited[1] >= 900_000, "{to_limited:?}");

    cluster.double.set_behaviour("calls", "1*hang").unwrap();
    let hung = queue_call(&replica, "+14155550404", json!({})).await;
    record_when(&replica, &hung, "dialing", Duration::from_secs(3)).await;
    assert_eq!(active_count(&cluster.redis).await, 1);
    let failed = record_when(&replica, &hung, "failed", Duration::from_secs(15)).await;
    assert_eq!(failed["error"]["reason"], "twilio_unanswered", "{failed}");
    count_converges(&cluster.redis, 0, 0..=5, Duration::from_secs(3)).await;
    nobody_dialed_twice(&cluster);

    let (_, metrics) = get_text(&replica.url("/metrics")).await;
    assert_eq!(
        metric_value(&metrics, "calls_outbound_total{result=\"failed\"}"),
        Some(3.0),
        "{metrics}"
    );
}

/// A replica killed with calls queued loses none (another places them), and one killed while its
/// requests are in flight places nobody twice: the call Twilio took follows Twilio's callbacks,
/// and the one Twilio never acted on ends `dial_interrupted` after its ring timeout and margin.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_killed_with_calls_queued_or_mid_request_dial_nobody_twice() {
    // One call a second; the first request is answered 4 s late (Twilio places it at once and it
    // rings 3 s), the second never (Twilio never acts on it).
    let cluster = Cluster::start(5, "1", 0, &["--calls", "1*delay:4", "--ring-secs", "3"]).await;
    let mut doomed = cluster.other_replica("doomed");
    let placed = queue_call(&doomed, "+14155550501", json!({"timeout_secs": 10})).await;
    record_when(&doomed, &placed, "dialing", Duration::from_secs(3)).await;
    cluster.double.set_behaviour("calls", "1*hang").unwrap();
    let hung = queue_call(&doomed, "+14155550502", json!({"timeout_secs": 1})).await;
    let mut queued = Vec::new();
    for n in 3..6 {
        queued.push(
            queue_call(
                &doomed,
                &format!("+1415555050{n}"),
                json!({"timeout_secs": 5}),
            )
            .await,
        );
    }
    record_when(&doomed, &hung, "dialing", Duration::from_secs(3)).await;
    // "dialing" is written before the request leaves: on a loaded machine the second request can
    // reach Twilio's double a moment later, so the kill waits for it.
    let both_sent = eventually(Duration::from_secs(3), || async {
        (cluster.call_requests().len() == 2).then_some(())
    })
    .await;
    assert!(both_sent.is_some(), "the two dials never reached Twilio");
    // Killed before its next dial (a second later): two requests in flight, three calls queued.
    doomed.kill9();
    assert_eq!(cluster.call_requests().len(), 2);

    let survivor = cluster.replica("survivor");
    // The call Twilio took is answered (its webhook reaches the survivor) and completes.
    let done = record_when(&survivor, &placed, "completed", Duration::from_secs(20)).await;
    assert_eq!(done["replica"], "doomed");
    assert!(
        done["call_sid"].is_string() && done["answered_at"].is_string(),
        "{done}"
    );
    // The queued ones are placed by the survivor.
    for id in &queued {
        let done = record_when(&survivor, id, "completed", Duration::from_secs(30)).await;
        assert_eq!(done["replica"], "survivor", "{done}");
    }
    // The one Twilio never acted on is never sent again: interrupted after 1 s + the margin.
    let interrupted = record_when(&survivor, &hung, "failed", Duration::from_secs(45)).await;
    assert_eq!(
        interrupted["error"]["reason"], "dial_interrupted",
        "{interrupted}"
    );
    let requests = cluster.call_requests();
    let to_hung = requests
        .iter()
        .filter(|r| r.field("To") == Some("+14155550502"))
        .count();
    assert_eq!((to_hung, requests.len()), (1, 5));
    nobody_dialed_twice(&cluster);
    count_converges(&cluster.redis, 0, 0..=5, Duration::from_secs(5)).await;
}

/// The campaign benchmark (docs/benchmarks.md, "Outbound campaign"; not in CI):
/// `CAMPAIGN_CPS=10 cargo test --test it -- --ignored --nocapture outbound::campaign`. Three
/// replicas, cap 200 with 20 lines kept for inbound, `CAMPAIGN_CALLS` (2,000) queued at once, the
/// double answering 70 % (ringing 2 s, talking 10 s) and leaving 30 % unanswered (10 s), while an
/// inbound caller arrives every 0.5 s and holds a line 10 s. Prints the figures; asserts only the
/// rules (never above the pace or the cap, inbound never refused, nobody dialed twice).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a benchmark: minutes of load"]
async fn campaign() {
    let calls: usize = std::env::var("CAMPAIGN_CALLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    let cps: f64 = std::env::var("CAMPAIGN_CPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10.0);
    let (cap, reserve) = (200_u64, 20_u64);
    let cluster = Cluster::start(
        cap,
        &cps.to_string(),
        reserve,
        &[
            "--mix",
            "answered=70,no-answer=30",
            "--ring-secs",
            "2",
            "--talk-secs",
            "10",
            "--threads",
            "2",
        ],
    )
    .await;
    let env = cluster.env.vars().to_vec();
    let spawn = |id: &str, port: Option<u16>| {
        let mut env = env.clone();
        env.push(("MEDIA_HANDLER", "silent".into()));
        env.push(("RESERVATION_SECS", "60".into()));
        match port {
            Some(port) => testkit::ReplicaProcess::spawn_at(binary(), port, id, &env),
            None => testkit::ReplicaProcess::spawn(binary(), id, &env),
        }
        .expect("replica starts")
    };
    let replicas = [
        spawn("c1", Some(cluster.callback_port)),
        spawn("c2", None),
        spawn("c3", None),
    ];
    let before = redis_cli(&cluster.redis, &["INFO", "stats"]).await;
    let commands = |info: &str| -> u64 {
        info.lines()
            .find_map(|l| l.strip_prefix("total_commands_processed:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    };

    let sampling = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    // Inbound callers meanwhile: one every 0.5 s, each holding its line 10 s.
    let inbound = {
        let sampling = sampling.clone();
        let base = replicas[1].url("");
        tokio::spawn(async move {
            let (mut admitted, mut refused, mut n) = (0_u64, 0_u64, 10_000_usize);
            while sampling.load(std::sync::atomic::Ordering::Relaxed) {
                n += 1;
                let call = sid(n);
                if voice_at(&format!("{base}/twilio/voice"), &call).await.0 == 200 {
                    admitted += 1;
                    let base = base.clone();
                    tokio::spawn(async move {
                        tokio::time::sleep(Duration::from_secs(10)).await;
                        status_at(&base, &call, "completed").await;
                    });
                } else {
                    refused += 1;
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            (admitted, refused)
        })
    };

    let started = std::time::Instant::now();
    let mut ids = Vec::with_capacity(calls);
    for chunk in (0..calls).collect::<Vec<_>>().chunks(50) {
        let posts: Vec<_> = chunk
            .iter()
            .map(|n| {
                let replica = &replicas[n % 3];
                async move {
                    // As a client would: an Idempotency-Key, and a retry when the API answers 503
                    // (the store did not answer in time on an overloaded machine).
                    let body = json!({"to": format!("+1415{n:07}"), "from": "+14155550000", "timeout_secs": 10});
                    let key = format!("campaign-{n}");
                    for _ in 0..10 {
                        let (status, record) = api(
                            replica,
                            reqwest::Method::POST,
                            "/v1/calls",
                            Some(body.clone()),
                            &[("Idempotency-Key", key.as_str())],
                        )
                        .await;
                        if status == 202 {
                            return record["id"].as_str().unwrap().to_owned();
                        }
                        assert_eq!(status, 503, "{record}");
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                    panic!("call {n} never queued");
                }
            })
            .collect();
        ids.extend(futures_util::future::join_all(posts).await);
    }
    let queued_in = started.elapsed();
    // Lines in use sampled every 200 ms until every call has ended; drained when the double has
    // every request.
    let mut max_lines = 0;
    let mut drained = None;
    let deadline = std::time::Instant::now() + Duration::from_secs(calls as u64 + 300);
    let ended = loop {
        assert!(
            std::time::Instant::now() < deadline,
            "the campaign never ended"
        );
        max_lines = max_lines.max(active_count(&cluster.redis).await);
        let summary = cluster.summary();
        if drained.is_none() && summary["placed"].as_u64().unwrap_or(0) >= calls as u64 {
            drained = Some(started.elapsed());
        }
        let by_status = &summary["by_status"];
        let open: u64 = ["queued", "initiated", "ringing", "in-progress"]
            .iter()
            .map(|s| by_status[*s].as_u64().unwrap_or(0))
            .sum();
        if drained.is_some() && open == 0 {
            break summary;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let drained = drained.unwrap();
    sampling.store(false, std::sync::atomic::Ordering::Relaxed);
    let (inbound_admitted, inbound_refused) = inbound.await.unwrap();
    let after = redis_cli(&cluster.redis, &["INFO", "stats"]).await;

    let requests = cluster.call_requests();
    let mut at: Vec<i64> = requests.iter().map(|r| r.received_unix_us).collect();
    at.sort_unstable();
    let min_gap_ms = at
        .windows(2)
        .map(|w| (w[1] - w[0]) as f64 / 1000.0)
        .fold(f64::INFINITY, f64::min);
    // Most requests in any one second.
    let mut peak_second = 0;
    let mut lo = 0;
    for hi in 0..at.len() {
        while at[hi] - at[lo] >= 1_000_000 {
            lo += 1;
        }
        peak_second = peak_second.max(hi - lo + 1);
    }
    // The same, by the dial steps' own times (the records' `dialed_ms`, Redis' clock at the step
    // that took each call): what the cluster paced, before any delay on the way out.
    let mut dialed_us = Vec::with_capacity(calls);
    let (_, listed) = api(&replicas[0], reqwest::Method::GET, "/v1/calls", None, &[]).await;
    for record in listed["calls"].as_array().into_iter().flatten() {
        if let Some(ms) = record["dialed_ms"].as_i64() {
            dialed_us.push(ms * 1000);
        }
    }
    dialed_us.sort_unstable();
    let mut peak_dialed = 0;
    let mut lo = 0;
    for hi in 0..dialed_us.len() {
        while dialed_us[hi] - dialed_us[lo] >= 1_000_000 {
            lo += 1;
        }
        peak_dialed = peak_dialed.max(hi - lo + 1);
    }
    let span_s = (at[at.len() - 1] - at[0]) as f64 / 1e6;
    let ideal_s = (calls as f64 - 1.0) / cps;
    let commands_total = commands(&after) - commands(&before);
    eprintln!(
        "campaign: {calls} calls, OUTBOUND_CPS {cps}, cap {cap}, reserve {reserve}\n  \
         queued in {:.1} s; drained (last call placed) {:.1} s after the first POST; \
         placing span {span_s:.1} s against the ideal {ideal_s:.1} s ({:.2} calls/s)\n  \
         peak calls reaching Twilio in any 1 s: {peak_second}; smallest gap between two: \
         {min_gap_ms:.1} ms (pace {:.1} ms); peak dial steps in any 1 s (Redis' clock, the last \
         {} records): {peak_dialed}\n  lines in use at most {max_lines} of {cap} (outbound at most {})\n  \
         inbound callers meanwhile: {inbound_admitted} admitted, {inbound_refused} refused\n  \
         Redis commands: {commands_total} in all, {:.1} per placed call (everything: webhooks, \
         streams, ticks, dial steps, inbound)\n  double: {}",
        queued_in.as_secs_f64(),
        drained.as_secs_f64(),
        (calls as f64 - 1.0) / span_s,
        1000.0 / cps,
        dialed_us.len(),
        cap - reserve,
        commands_total as f64 / calls as f64,
        json!({"by_status": ended["by_status"], "dialed_more_than_once": ended["dialed_more_than_once"]}),
    );
    assert_eq!(requests.len(), calls);
    assert!(max_lines <= cap, "{max_lines} lines");
    assert!(
        peak_dialed as f64 <= cps.ceil(),
        "{peak_dialed} dial steps in one second"
    );
    assert_eq!(inbound_refused, 0);
    nobody_dialed_twice(&cluster);
    drop(ids);
}
