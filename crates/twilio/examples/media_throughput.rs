//! Times the Media Streams hot path: parsing 1M `media` frames as Twilio sends them (and 1M with an
//! escape, read by serde), building 1M into a reused buffer. `cargo run --release -p twilio --example media_throughput [fast|serde|build]`

use std::hint::black_box;
use std::time::Instant;

use twilio::messages::{self, Inbound};

/// Frames per phase and round; `FRAMES=100000` for a run under valgrind.
fn frames() -> u32 {
    std::env::var("FRAMES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(1_000_000)
}
const STREAM_SID: &str = "MZ18ad3ab5a668481ce02b83e7395059f0";

fn main() {
    // One phase alone (for `perf stat`), or all three.
    let only = std::env::args().nth(1);
    let runs = |phase: &str| only.as_deref().is_none_or(|o| o == phase);
    // 20 ms of 8 kHz μ-law: 160 bytes, 216 characters of base64, in Twilio's field order.
    let payload = "/v7+fn5+".repeat(27);
    let frame = format!(
        r#"{{"event":"media","sequenceNumber":"1234","media":{{"track":"inbound","chunk":"1233","timestamp":"24660","payload":"{payload}"}},"streamSid":"{STREAM_SID}"}}"#
    );
    // One escaped `/` in the payload sends the frame to the serde parser: the slow path's cost.
    let escaped = frame.replacen("/v7+", "\\/v7+", 1);

    for round in 1..=3 {
        let mut line = format!("round {round}:");
        if runs("fast") {
            line += &report("parse (fast path)", || parse_all(&frame));
        }
        if runs("serde") {
            line += &report("parse with one escape (serde)", || parse_all(&escaped));
        }
        if runs("build") {
            let mut buf = bytes::BytesMut::new();
            line += &report("build", || {
                for _ in 0..frames() {
                    messages::media(&mut buf, black_box(STREAM_SID), black_box(&payload));
                    black_box(&buf);
                }
            });
        }
        println!("{line}");
    }
}

fn parse_all(text: &str) {
    let frames = frames();
    let mut bytes = 0usize;
    for _ in 0..frames {
        match messages::parse(black_box(text)) {
            Ok(Inbound::Media(media)) => bytes += media.payload.len(),
            other => panic!("not media: {other:?}"),
        }
    }
    assert_eq!(bytes, 216 * frames as usize);
}

fn report(what: &str, run: impl FnOnce()) -> String {
    let started = Instant::now();
    run();
    let took = started.elapsed().as_secs_f64();
    let frames = frames();
    format!(
        " {what} {frames} frames {:.0} ms ({:.0} ns/frame);",
        took * 1e3,
        took * 1e9 / f64::from(frames)
    )
}
