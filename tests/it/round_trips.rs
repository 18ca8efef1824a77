//! What a call costs Redis: three commands from webhook to hang-up (admit, start with
//! its lock and state, end with its unlock), as Redis' MONITOR sees them.

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::Duration;

use crate::helpers::*;
use testkit::{RedisServer, ReplicaProcess};

/// `redis-cli MONITOR` on `redis` while it runs: every command a client sends, and those its
/// scripts run (marked `lua`), as Redis itself reports them.
struct Monitor {
    child: Child,
    out: BufReader<ChildStdout>,
}

impl Monitor {
    fn start(redis: &RedisServer) -> Self {
        let url = redis.url();
        let socket = url
            .strip_prefix("redis+unix://")
            .expect("a unix-socket Redis");
        let mut child = Command::new("redis-cli")
            .args(["-s", socket, "MONITOR"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-cli MONITOR");
        let mut out = BufReader::new(child.stdout.take().expect("piped"));
        // Redis answers OK once the monitor is attached: from then on it sees every command.
        let mut ok = String::new();
        out.read_line(&mut ok).expect("MONITOR answers");
        assert_eq!(ok.trim(), "OK");
        Self { child, out }
    }

    /// Stops the monitor (by its PID) and returns the commands clients sent, scripts' own left out.
    fn client_commands(mut self) -> Vec<String> {
        let _ = self.child.kill();
        let mut out = String::new();
        let _ = self.out.read_to_string(&mut out);
        let _ = self.child.wait();
        out.lines()
            .filter(|line| line.contains(" \"") && !line.contains(" lua]"))
            .map(|line| {
                line.split_once("] ")
                    .map_or(line, |(_, cmd)| cmd)
                    .to_owned()
            })
            .collect()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_costs_three_redis_commands() {
    let redis = RedisServer::start().unwrap();
    // Ticks far apart, so no renewal falls inside the call being counted.
    let env = [
        ("REDIS_URL", redis.url()),
        ("CALL_LEASE_SECS", "600".to_string()),
        ("RENEW_INTERVAL_SECS", "200".to_string()),
        ("CALL_LOCK_TTL_SECS", "900".to_string()),
    ];
    let replica = ReplicaProcess::spawn(
        Path::new(env!("CARGO_BIN_EXE_prosaas-calls")),
        "counted",
        &env,
    )
    .expect("replica starts");
    // A first call loads the scripts and follows the first tick; the second is the one counted.
    for n in 1..=2 {
        let monitor = Monitor::start(&redis);
        let (status, twiml) = voice_at(&replica.url("/twilio/voice"), &sid(n)).await;
        assert_eq!(status, 200, "{twiml}");
        let mut stream = TwilioStream::connect(&stream_url_of(&twiml)).await;
        stream.connected().await;
        stream.start(&sid(n)).await;
        stream.echo_round(3).await;
        stream.stop(&sid(n)).await;
        // Watched in the replica's log, not in Redis: polling Redis would count.
        let ended = eventually(Duration::from_secs(5), || async {
            (replica.log().matches("stream ended").count() == n).then_some(())
        })
        .await;
        assert!(ended.is_some(), "call {n} ended");
        let sent = monitor.client_commands();
        if n == 2 {
            assert_eq!(sent.len(), 3, "Redis commands per call: {sent:#?}");
            assert!(
                sent.iter().all(|c| c.starts_with("\"EVALSHA\"")),
                "{sent:#?}"
            );
        }
    }
    assert_eq!(redis.cli(&["GET", "calls:active_count"]).unwrap(), "0");
    let state = redis
        .cli(&["GET", &format!("calls:state:{}", sid(2))])
        .unwrap();
    assert!(state.contains("\"end_reason\":\"stop\""), "{state}");
}
