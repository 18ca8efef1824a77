//! Times the Media Streams hot path: parsing 1M `media` frames as Twilio sends them (and 1M with an
//! escape, read by serde), building 1M into a reused buffer. `cargo run --release -p twilio --example media_throughput`

use std::hint::black_box;
use std::time::Instant;

use twilio::messages::{self, Inbound};

const FRAMES: u32 = 1_000_000;

fn main() {
    // 20 ms of 8 kHz μ-law: 160 bytes, 216 characters of base64, in Twilio's field order.
    let payload = "/v7+fn5+".repeat(27);
    let stream_sid = "MZ18ad3ab5a668481ce02b83e7395059f0";
    let frame = format!(
        r#"{{"event":"media","sequenceNumber":"1234","media":{{"track":"inbound","chunk":"1233","timestamp":"24660","payload":"{payload}"}},"streamSid":"{stream_sid}"}}"#
    );

    for round in 1..=3 {
        let started = Instant::now();
        let mut bytes = 0usize;
        for _ in 0..FRAMES {
            match messages::parse(black_box(&frame)) {
                Ok(Inbound::Media(media)) => bytes += media.payload.len(),
                other => panic!("not media: {other:?}"),
            }
        }
        let parse = started.elapsed();
        assert_eq!(bytes, 216 * FRAMES as usize);

        // One escaped `/` in the payload sends the frame to the serde parser: the slow path's cost.
        let escaped = frame.replacen("/v7+", "\\/v7+", 1);
        let started = Instant::now();
        for _ in 0..FRAMES {
            match messages::parse(black_box(&escaped)) {
                Ok(Inbound::Media(media)) => bytes += media.payload.len(),
                other => panic!("not media: {other:?}"),
            }
        }
        let slow = started.elapsed();
        assert_eq!(bytes, 2 * 216 * FRAMES as usize);

        let mut buf = bytes::BytesMut::new();
        let started = Instant::now();
        for _ in 0..FRAMES {
            messages::media(&mut buf, black_box(stream_sid), black_box(&payload));
            black_box(&buf);
        }
        let build = started.elapsed();

        println!(
            "round {round}: parse {FRAMES} frames {:.0} ms ({:.0} ns/frame); same with one escape (serde) {:.0} ms ({:.0} ns/frame); build {FRAMES} frames {:.0} ms ({:.0} ns/frame)",
            parse.as_secs_f64() * 1e3,
            parse.as_secs_f64() * 1e9 / f64::from(FRAMES),
            slow.as_secs_f64() * 1e3,
            slow.as_secs_f64() * 1e9 / f64::from(FRAMES),
            build.as_secs_f64() * 1e3,
            build.as_secs_f64() * 1e9 / f64::from(FRAMES),
        );
    }
}
