//! Test support shared by the end-to-end suites: a replica served in-process on a loopback port
//! (against a real redis-server or in-process state) and a Twilio-like client.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use prosaas_calls::app::{App, build_store};
use prosaas_calls::config::StreamTimeouts;
use prosaas_calls::config::{Config, RawConfig};
use prosaas_calls::server;
use serde_json::{Value, json};
use testkit::RedisServer;
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tokio_util::sync::CancellationToken;

pub fn sid(n: usize) -> String {
    format!("CA{n:032x}")
}

/// How long after its drain deadline a stopped replica's server must have returned: the streams'
/// grace and the requests' grace (5 s each, run side by side), with room for a loaded CI box.
pub const STOP_SLACK: Duration = Duration::from_secs(15);

/// A replica on 127.0.0.1:<random>, stopped (drained) by `stop` or killed with the test.
pub struct Replica {
    pub addr: SocketAddr,
    pub app: Arc<App>,
    shutdown: CancellationToken,
    handle: JoinHandle<std::io::Result<()>>,
}

impl Replica {
    pub async fn start(mut raw: RawConfig, timeouts: StreamTimeouts) -> Self {
        raw.listen_addr = Some("127.0.0.1:0".into());
        // Tests stop replicas with calls still live; the production default (600 s) would hold
        // every such `stop` for ten minutes.
        raw.drain_timeout_secs.get_or_insert_with(|| "2".into());
        let (mut config, _) = Config::from_raw(&raw).expect("valid test config");
        config.stream_timeouts = timeouts;
        Self::serve(config).await
    }

    /// A replica serving `config` exactly as given (its `listen_addr` should be `127.0.0.1:0`),
    /// for a test that builds or edits the `Config` itself.
    pub async fn serve(config: Config) -> Self {
        let store = build_store(&config).expect("store");
        let listener = tokio::net::TcpListener::bind(config.listen_addr)
            .await
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let app = App::new(config, store);
        let shutdown = CancellationToken::new();
        let handle = tokio::spawn(server::serve(app.clone(), listener, shutdown.clone()));
        Self {
            addr,
            app,
            shutdown,
            handle,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// SIGTERM in-process: drain, then wait for the server to return. Fails the test unless
    /// `serve` returned `Ok`, without panicking, within the drain deadline plus `STOP_SLACK`.
    pub async fn stop(self) {
        let bound = self.app.config().drain_timeout + STOP_SLACK;
        self.shutdown.cancel();
        self.wait_stopped(bound).await;
    }

    /// Waits for the server to return (after `begin_drain`, or `stop`); fails the test unless it
    /// returned `Ok` within `bound`, without panicking. Returns how long that took.
    pub async fn wait_stopped(self, bound: Duration) -> Duration {
        let started = tokio::time::Instant::now();
        let joined = tokio::time::timeout(bound, self.handle)
            .await
            .unwrap_or_else(|_| panic!("the server did not return within {bound:?}"));
        match joined {
            Ok(served) => served.expect("serve() returned an error"),
            Err(err) if err.is_panic() => std::panic::resume_unwind(err.into_panic()),
            Err(err) => panic!("the server task was cancelled: {err}"),
        }
        started.elapsed()
    }

    pub fn begin_drain(&self) {
        self.shutdown.cancel();
    }
}

pub fn raw(redis: Option<&RedisServer>, limit: u64) -> RawConfig {
    RawConfig {
        redis_url: redis.map(testkit::RedisServer::url),
        max_concurrent_calls: Some(limit.to_string()),
        replica_id: Some(format!("test-{}", std::process::id())),
        // Fast ticks keep the new-dataset hold-off (1.5 ticks) short.
        renew_interval_secs: Some("0.2".into()),
        ..RawConfig::default()
    }
}

pub fn client() -> reqwest::Client {
    reqwest::Client::new()
}

pub async fn post_form(
    url: &str,
    params: &[(&str, &str)],
    signature: Option<&str>,
) -> reqwest::Response {
    let body: String = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(params)
        .finish();
    let mut request = client()
        .post(url)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body);
    if let Some(sig) = signature {
        request = request.header("x-twilio-signature", sig);
    }
    request.send().await.expect("request")
}

/// Posts a voice webhook for `call_sid` and returns (status, body).
pub async fn voice(replica: &Replica, call_sid: &str) -> (u16, String) {
    voice_at(&replica.url("/twilio/voice"), call_sid).await
}

/// Posts a voice webhook to `url` and returns (status, body).
pub async fn voice_at(url: &str, call_sid: &str) -> (u16, String) {
    let response = post_form(
        url,
        &[
            ("CallSid", call_sid),
            ("AccountSid", "AC0123456789abcdef0123456789abcdef"),
            ("From", "+15005550006"),
            ("To", "+15005550001"),
            ("CallStatus", "ringing"),
            ("Direction", "inbound"),
        ],
        None,
    )
    .await;
    let status = response.status().as_u16();
    (status, response.text().await.unwrap())
}

/// Webhook, stream, start, and one echo: a call that is live on `replica`.
pub async fn live_call(replica: &Replica, n: usize) -> TwilioStream {
    let (status, twiml) = voice(replica, &sid(n)).await;
    assert_eq!(status, 200, "{twiml}");
    let mut stream = TwilioStream::connect(&stream_url_of(&twiml)).await;
    stream.connected().await;
    stream.start(&sid(n)).await;
    stream.echo_round(1).await;
    stream
}

/// Waits for the call's stored state to say `ended` and returns it.
pub async fn ended_state(replica: &Replica, call_sid: &str) -> calls_core::state::CallState {
    let sid = calls_core::call_sid::CallSid::parse(call_sid).unwrap();
    eventually(Duration::from_secs(5), || async {
        replica
            .app
            .calls()
            .store()
            .read_state(&sid)
            .await
            .unwrap()
            .filter(|s| s.status == calls_core::state::CallStatus::Ended)
    })
    .await
    .expect("the call's state ends")
}

/// The `url` attribute of the TwiML's `<Stream>`: the simulator's parser (one for the workspace),
/// which also decodes XML entities.
pub fn stream_url_of(twiml: &str) -> String {
    prosaas_calls_sim::webhook::stream_url_of(twiml).expect("a <Stream url=…> in the TwiML")
}

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A Twilio-like Media Streams peer.
pub struct TwilioStream {
    pub ws: Ws,
    pub stream_sid: String,
    seq: u64,
}

/// One 20 ms mu-law frame (160 bytes of digital silence), base64 as Twilio sends it.
pub static FRAME_B64: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode([0xffu8; 160])
});

impl TwilioStream {
    pub async fn connect(url: &str) -> Self {
        let (ws, _) = tokio_tungstenite::connect_async(url)
            .await
            .expect("websocket");
        Self::over(ws)
    }

    /// A peer over a socket the caller opened (e.g. wss:// with its own TLS settings).
    pub fn over(ws: Ws) -> Self {
        Self {
            ws,
            stream_sid: format!("MZ{:032x}", rand_u64()),
            seq: 0,
        }
    }

    pub async fn send(&mut self, value: Value) {
        self.ws
            .send(Message::Text(value.to_string().into()))
            .await
            .expect("send");
    }

    fn next_seq(&mut self) -> String {
        self.seq += 1;
        self.seq.to_string()
    }

    pub async fn connected(&mut self) {
        self.send(json!({"event": "connected", "protocol": "Call", "version": "1.0.0"}))
            .await;
    }

    pub async fn start(&mut self, call_sid: &str) {
        let seq = self.next_seq();
        let stream_sid = self.stream_sid.clone();
        self.send(json!({
            "event": "start",
            "sequenceNumber": seq,
            "streamSid": stream_sid,
            "start": {
                "accountSid": "AC0123456789abcdef0123456789abcdef",
                "streamSid": stream_sid,
                "callSid": call_sid,
                "tracks": ["inbound"],
                "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
                "customParameters": {"CallSid": call_sid, "tenant": "acme"}
            }
        }))
        .await;
    }

    pub async fn media(&mut self, chunk: u64, payload: &str) {
        let seq = self.next_seq();
        let stream_sid = self.stream_sid.clone();
        self.send(json!({
            "event": "media",
            "sequenceNumber": seq,
            "streamSid": stream_sid,
            "media": {"track": "inbound", "chunk": chunk.to_string(),
                      "timestamp": (chunk * 20).to_string(), "payload": payload}
        }))
        .await;
    }

    pub async fn mark(&mut self, name: &str) {
        let seq = self.next_seq();
        let stream_sid = self.stream_sid.clone();
        self.send(
            json!({"event": "mark", "sequenceNumber": seq, "streamSid": stream_sid,
                         "mark": {"name": name}}),
        )
        .await;
    }

    pub async fn dtmf(&mut self, digit: &str) {
        let seq = self.next_seq();
        let stream_sid = self.stream_sid.clone();
        self.send(
            json!({"event": "dtmf", "sequenceNumber": seq, "streamSid": stream_sid,
                         "dtmf": {"track": "inbound_track", "digit": digit}}),
        )
        .await;
    }

    pub async fn stop(&mut self, call_sid: &str) {
        let seq = self.next_seq();
        let stream_sid = self.stream_sid.clone();
        self.send(
            json!({"event": "stop", "sequenceNumber": seq, "streamSid": stream_sid,
                         "stop": {"accountSid": "AC0123456789abcdef0123456789abcdef",
                                  "callSid": call_sid}}),
        )
        .await;
    }

    /// The next text message as JSON, or None on close/timeout.
    pub async fn recv_json(&mut self, wait: Duration) -> Option<Value> {
        loop {
            match tokio::time::timeout(wait, self.ws.next()).await {
                Ok(Some(Ok(Message::Text(text)))) => {
                    return Some(serde_json::from_str(&text).expect("server sends JSON"));
                }
                Ok(Some(Ok(Message::Close(_)))) | Ok(None) | Err(_) | Ok(Some(Err(_))) => {
                    return None;
                }
                Ok(Some(Ok(_))) => continue,
            }
        }
    }

    /// Waits for the server's close frame and returns its code.
    pub async fn close_code(&mut self, wait: Duration) -> Option<u16> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            match tokio::time::timeout_at(deadline, self.ws.next()).await {
                Ok(Some(Ok(Message::Close(frame)))) => {
                    return frame.map(|f: CloseFrame| u16::from(f.code));
                }
                Ok(Some(Ok(_))) => continue,
                _ => return None,
            }
        }
    }

    /// Sends `frames` media messages and checks each is echoed with this stream's SID.
    pub async fn echo_round(&mut self, frames: u64) {
        for chunk in 1..=frames {
            self.media(chunk, &FRAME_B64).await;
            let echoed = self
                .recv_json(Duration::from_secs(5))
                .await
                .expect("an echo");
            assert_eq!(echoed["event"], "media");
            assert_eq!(echoed["streamSid"], self.stream_sid.as_str());
            assert_eq!(echoed["media"]["payload"], FRAME_B64.as_str());
        }
    }
}

fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos(),
    );
    hasher.finish()
}

/// Polls `f` until it returns Some, for up to `wait`.
pub async fn eventually<T, F, Fut>(wait: Duration, mut f: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        if let Some(value) = f().await {
            return Some(value);
        }
        if tokio::time::Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// ---- The nginx front (deploy/nginx/templates/default.conf.template) and a client that talks to a
// ---- cluster by URL rather than to an in-process `Replica`.

/// The nginx binary. A missing one fails the test that needs it, saying how to install it, as
/// the README says: a silent pass would leave the production topology untested and the totals
/// line green.
pub fn nginx_binary() -> std::path::PathBuf {
    testkit::nginx::find_nginx().expect(
        "no nginx binary: the tests of the nginx front need one (apt-get install nginx-light; \
         .ci/run does), on the PATH or as NGINX=/path/to/nginx",
    )
}

/// Posts a status callback to `base` and returns the HTTP status.
pub async fn status_at(base: &str, call_sid: &str, call_status: &str) -> u16 {
    post_form(
        &format!("{base}/twilio/status"),
        &[("CallSid", call_sid), ("CallStatus", call_status)],
        None,
    )
    .await
    .status()
    .as_u16()
}

impl TwilioStream {
    /// True if the server side closed the socket (close frame, EOF or reset) within `wait`;
    /// false if it was still open when `wait` ran out.
    pub async fn closed_within(&mut self, wait: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            match tokio::time::timeout_at(deadline, self.ws.next()).await {
                Err(_) => return false,
                Ok(None) | Ok(Some(Err(_))) | Ok(Some(Ok(Message::Close(_)))) => return true,
                Ok(Some(Ok(_))) => continue,
            }
        }
    }
}

// ---- Redis as an operator reads it, without blocking an async worker: `redis-cli` through
// ---- tokio::process, so live streams keep flowing while a test polls.

/// Runs `redis-cli` against `redis` and returns its trimmed output (panics if it cannot run).
pub async fn redis_cli(redis: &RedisServer, args: &[&str]) -> String {
    let url = redis.url();
    let mut command = tokio::process::Command::new("redis-cli");
    match redis.addr() {
        Some(addr) => command
            .arg("-h")
            .arg(addr.ip().to_string())
            .arg("-p")
            .arg(addr.port().to_string()),
        None => command.arg("-s").arg(
            url.strip_prefix("redis+unix://")
                .expect("a unix socket URL"),
        ),
    };
    let out = command
        .args(args)
        .stderr(std::process::Stdio::null())
        .output()
        .await
        .expect("redis-cli runs");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// `calls:active_count` (0 when the key is missing, as after Redis lost its data).
pub async fn active_count(redis: &RedisServer) -> u64 {
    redis_cli(redis, &["GET", "calls:active_count"])
        .await
        .parse()
        .unwrap_or(0)
}

/// `calls:state:{call_sid}` parsed, or `Value::Null` when missing or not JSON.
pub async fn redis_state(redis: &RedisServer, call_sid: &str) -> Value {
    let blob = redis_cli(redis, &["GET", &format!("calls:state:{call_sid}")]).await;
    serde_json::from_str(&blob).unwrap_or(Value::Null)
}

/// Polls `calls:active_count` until it equals `want`; on timeout panics with the last value.
/// While polling, every sample must lie within `allowed` (a count outside it is over-admission
/// or a live call dropped, whatever the timing).
pub async fn count_converges(
    redis: &RedisServer,
    want: u64,
    allowed: std::ops::RangeInclusive<u64>,
    wait: Duration,
) {
    let reached = eventually(wait, || async {
        let count = active_count(redis).await;
        assert!(
            allowed.contains(&count),
            "calls:active_count {count} outside {allowed:?} while converging to {want}"
        );
        (count == want).then_some(())
    })
    .await;
    assert!(
        reached.is_some(),
        "calls:active_count is {}, never reached {want} within {wait:?}",
        active_count(redis).await
    );
}

/// Calls per command since start-up, from `INFO commandstats` (`cmdstat_evalsha:calls=3,…`).
pub async fn command_calls(redis: &RedisServer) -> std::collections::BTreeMap<String, u64> {
    redis_cli(redis, &["INFO", "commandstats"])
        .await
        .lines()
        .filter_map(|line| {
            let (name, fields) = line.strip_prefix("cmdstat_")?.split_once(':')?;
            let calls = fields.split(',').find_map(|f| f.strip_prefix("calls="))?;
            Some((name.to_owned(), calls.parse().ok()?))
        })
        .collect()
}

/// The value of an unlabelled sample `name` in Prometheus text, if the metric is there.
pub fn metric_value(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| {
            let (key, value) = line.split_once(' ')?;
            (key == name).then(|| value.trim().parse().ok())?
        })
}

/// `GET url` as text.
pub async fn get_text(url: &str) -> (u16, String) {
    let response = client().get(url).send().await.expect("GET");
    let status = response.status().as_u16();
    (status, response.text().await.unwrap_or_default())
}

// ---- Replicas as real processes (the built binary), shared by the crash, recovery and tenant tests.

/// The built `prosaas-calls` binary.
pub fn binary() -> &'static std::path::Path {
    std::path::Path::new(env!("CARGO_BIN_EXE_prosaas-calls"))
}

/// Places call `n` on `replica`: its webhook, then its stream started and one frame echoed.
pub async fn open_call(replica: &testkit::ReplicaProcess, n: usize) -> TwilioStream {
    let (status, twiml) = voice_at(&replica.url("/twilio/voice"), &sid(n)).await;
    assert_eq!(status, 200, "call {n}: {twiml}");
    let url = format!("ws://{}/twilio/stream", replica.addr());
    let mut stream = TwilioStream::connect(&url).await;
    stream.connected().await;
    stream.start(&sid(n)).await;
    stream.echo_round(1).await;
    stream
}

/// Posts webhooks for calls `range` all at once, spread over `replicas`; returns how many got 200.
pub async fn race_webhooks(
    replicas: &[&testkit::ReplicaProcess],
    range: std::ops::Range<usize>,
) -> u64 {
    let racing: Vec<_> = range
        .map(|n| {
            let url = replicas[n % replicas.len()].url("/twilio/voice");
            tokio::spawn(async move { voice_at(&url, &sid(n)).await.0 })
        })
        .collect();
    let mut admitted = 0;
    for race in racing {
        if race.await.unwrap() == 200 {
            admitted += 1;
        }
    }
    admitted
}

/// What a replica process of the built binary is started with: its Redis and limit, then any
/// variable on top (a later one wins). Shared by every test that runs replicas as processes.
pub struct ReplicaEnv(Vec<(&'static str, String)>);

impl ReplicaEnv {
    pub fn new(redis_url: String, limit: u64) -> Self {
        Self(vec![
            ("REDIS_URL", redis_url),
            ("MAX_CONCURRENT_CALLS", limit.to_string()),
        ])
    }

    /// Leases, ticks and locks short enough for a test to see them lapse.
    pub fn leases(
        self,
        lease_secs: impl std::fmt::Display,
        tick_secs: impl std::fmt::Display,
        lock_secs: impl std::fmt::Display,
    ) -> Self {
        self.with("CALL_LEASE_SECS", lease_secs)
            .with("RENEW_INTERVAL_SECS", tick_secs)
            .with("CALL_LOCK_TTL_SECS", lock_secs)
    }

    pub fn with(mut self, var: &'static str, value: impl std::fmt::Display) -> Self {
        self.0.push((var, value.to_string()));
        self
    }

    /// The variables, in order.
    pub fn vars(&self) -> &[(&'static str, String)] {
        &self.0
    }

    /// Starts replica `id`; panics if it does not come up.
    pub fn spawn(&self, id: &str) -> testkit::ReplicaProcess {
        testkit::ReplicaProcess::spawn(binary(), id, &self.0).expect("replica starts")
    }
}

/// A base port whose 13 ports scripts/cluster uses (BASE..BASE+12) were all free a moment ago,
/// below the kernel's ephemeral range (testkit's ports module says why).
pub fn free_base() -> u16 {
    testkit::free_port_run(13).expect("13 free loopback ports")
}

impl Replica {
    /// Live slots cluster-wide, as this replica's store counts them.
    pub async fn active(&self) -> u64 {
        self.app.calls().store().stats().await.unwrap().active
    }
}

// ---- The simulator as Twilio in front of a cluster (continuity and fault tests).

/// Calls of `duration` against `target`, each echoed frame checked.
pub fn plan(
    target: prosaas_calls_sim::target::Target,
    duration: Duration,
) -> prosaas_calls_sim::call::CallPlan {
    prosaas_calls_sim::call::CallPlan {
        target,
        stream_only: false,
        duration,
        account_sid: "AC0123456789abcdef0123456789abcdef".into(),
        dtmf: None,
        mark: None,
        drain: Duration::from_secs(5),
        tenants: Vec::new(),
        patience: None,
    }
}

/// A simulator run: `calls` calls of `duration`, all at once over `ramp`, echoes expected.
pub fn sim_run(
    target: prosaas_calls_sim::target::Target,
    calls: u64,
    ramp: Duration,
    duration: Duration,
    seed: u64,
) -> prosaas_calls_sim::run::RunConfig {
    prosaas_calls_sim::run::RunConfig {
        plan: plan(target, duration),
        calls,
        concurrency: calls,
        ramp,
        echo: prosaas_calls_sim::run::EchoMode::Expect,
        settle: Duration::from_millis(500),
        progress: None,
        server_pid: None,
        seed,
    }
}

/// Live calls by the replica their state names, from Redis as an operator reads it.
pub async fn calls_by_replica(redis: &RedisServer) -> Vec<(String, String)> {
    let members = redis_cli(redis, &["ZRANGE", "calls:slots", "0", "-1"]).await;
    let mut calls = Vec::new();
    for call_sid in members.lines().filter(|l| !l.is_empty()) {
        let state = redis_state(redis, call_sid).await;
        calls.push((
            call_sid.to_owned(),
            state["replica"].as_str().unwrap_or("").to_owned(),
        ));
    }
    calls
}

/// The silence between a lost stream and its continuation's first echo, p50/p99/max in ms.
pub fn gap_ms(report: &prosaas_calls_sim::report::Report) -> (f64, f64, f64) {
    let gap = report
        .continuity
        .resume_gap_us
        .as_ref()
        .expect("continued streams measured their gap");
    (
        gap.p50 as f64 / 1000.0,
        gap.p99 as f64 / 1000.0,
        gap.max as f64 / 1000.0,
    )
}

/// Asserts that a simulator run lost nobody: finished, every one of `calls` completed, none failed
/// or ended early (a hang-up or the fallback), every lost stream continued. Returns the report as
/// text, for further messages.
pub fn assert_nobody_lost(report: &prosaas_calls_sim::report::Report, calls: u64) -> String {
    let summary = format!("{report:#?}");
    assert_eq!(report.outcome, "finished", "{summary}");
    assert_eq!(
        report.calls.completed, calls,
        "no call ends early: {summary}"
    );
    assert_eq!(report.calls.failed, 0, "{summary}");
    assert_eq!(report.continuity.ended_early, 0, "{summary}");
    assert_eq!(
        report.continuity.continued, report.continuity.streams_lost,
        "every lost stream continued: {summary}"
    );
    summary
}
