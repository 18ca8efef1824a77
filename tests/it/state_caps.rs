//! What a caller can grow is capped (docs/reference.md#admission): a stream that sends thousands of
//! marks and digits leaves a state of bounded size and a replica whose memory stays flat (a real
//! replica process).

use std::path::Path;
use std::time::Duration;

use crate::helpers::*;
use testkit::{RedisServer, ReplicaProcess};

/// Resident memory of a process, from `/proc/<pid>/status` (kB).
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

/// A mark name of about 2 KiB, unique to `n`: uncapped, 10,000 of them would weigh 20 MiB.
fn mark_name(n: usize) -> String {
    format!("m{n:05}-{}", "x".repeat(2000))
}

/// Sends `range` marks (and a DTMF digit with each), reading each echoed mark back.
async fn marks(stream: &mut TwilioStream, range: std::ops::Range<usize>) {
    let names: Vec<usize> = range.collect();
    for batch in names.chunks(100) {
        for n in batch {
            stream.mark(&mark_name(*n)).await;
            stream.dtmf(&(n % 10).to_string()).await;
        }
        for n in batch {
            let echoed = stream
                .recv_json(Duration::from_secs(10))
                .await
                .expect("the mark echoed");
            assert_eq!(echoed["event"], "mark");
            assert_eq!(echoed["mark"]["name"], mark_name(*n));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_marks_leave_a_bounded_state_and_flat_memory() {
    let redis = RedisServer::start().unwrap();
    let env = [
        ("REDIS_URL", redis.url()),
        ("RENEW_INTERVAL_SECS", "1".to_string()),
        ("CALL_LEASE_SECS", "3".to_string()),
    ];
    let replica = ReplicaProcess::spawn(
        Path::new(env!("CARGO_BIN_EXE_prosaas-calls")),
        "capped",
        &env,
    )
    .expect("replica starts");
    let pid = replica.pid().expect("running");
    let (status, twiml) = voice_at(&replica.url("/twilio/voice"), &sid(1)).await;
    assert_eq!(status, 200, "{twiml}");
    let mut stream = TwilioStream::connect(&stream_url_of(&twiml)).await;
    stream.connected().await;
    stream.start(&sid(1)).await;
    stream.echo_round(1).await;

    // Warm up the allocator and the socket buffers, then measure.
    marks(&mut stream, 0..1_000).await;
    let before = rss_kib(pid);
    marks(&mut stream, 1_000..11_000).await;
    stream.echo_round(1).await;
    let after = rss_kib(pid);

    let key = format!("calls:state:{}", sid(1));
    let last = &mark_name(10_999)[..256];
    let state = eventually(Duration::from_secs(10), || async {
        let blob = redis.cli(&["GET", &key]).ok()?;
        let state: serde_json::Value = serde_json::from_str(&blob).ok()?;
        (state["marks"].as_array()?.last()? == last).then_some((blob.len(), state))
    })
    .await;
    let (size, state) = state.expect("a tick flushed the last mark");
    let marks = state["marks"].as_array().unwrap();
    assert_eq!(marks.len(), 100, "the last 100 marks");
    assert!(marks[0].as_str().unwrap().starts_with("m10900-"));
    assert!(marks.iter().all(|m| m.as_str().unwrap().len() <= 256));
    let dtmf = state["dtmf"].as_str().unwrap();
    assert_eq!(dtmf.len(), 256, "the last 256 digits");
    assert!(dtmf.ends_with("6789"), "{dtmf}");
    assert!(size < 32 * 1024, "state of {size} bytes");
    // Uncapped, the marks alone would hold 20 MiB in the replica; capped, nothing grows.
    assert!(
        after < before + 8 * 1024,
        "RSS grew from {before} kB to {after} kB over 10,000 marks"
    );
    eprintln!("state {size} bytes; RSS {before} kB -> {after} kB over 10,000 marks");
    stream.stop(&sid(1)).await;
}
