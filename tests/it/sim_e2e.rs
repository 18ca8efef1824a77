//! The simulator against a real replica over loopback: signed webhooks and handshakes, echoes
//! matched and counted, marks and DTMF delivered, refusals over the limit classified.

use std::time::Duration;

use crate::helpers::{Replica, raw};
use prosaas_calls::config::StreamTimeouts;
use prosaas_calls_sim::call::CallPlan;
use prosaas_calls_sim::report::Report;
use prosaas_calls_sim::run::{self, EchoMode, RunConfig};
use prosaas_calls_sim::target::Target;

fn config(target: Target, calls: u64, dtmf_and_mark: bool) -> RunConfig {
    RunConfig {
        plan: CallPlan {
            target,
            stream_only: false,
            duration: Duration::from_millis(600),
            account_sid: "AC0123456789abcdef0123456789abcdef".into(),
            dtmf: dtmf_and_mark.then(|| "7".into()),
            mark: dtmf_and_mark.then(|| "m1".into()),
            drain: Duration::from_secs(2),
            tenants: Vec::new(),
            patience: None,
        },
        calls,
        concurrency: calls,
        ramp: Duration::from_millis(100),
        echo: EchoMode::Expect,
        settle: Duration::from_millis(100),
        progress: None,
        server_pid: None,
        seed: 42,
    }
}

#[tokio::test]
async fn signed_calls_are_admitted_streamed_and_echoed_in_full() {
    let mut raw = raw(None, 50);
    raw.twilio_auth_token = Some("sim-secret".into());
    raw.public_url = Some("https://calls.example.com".into());
    let replica = Replica::start(raw, StreamTimeouts::default()).await;
    let target = Target::new(
        &replica.url(""),
        Some("https://calls.example.com"),
        Some("sim-secret".into()),
    )
    .unwrap();
    let report: Report = run::run(config(target, 5, true)).await;
    assert_eq!(report.outcome, "finished");
    assert_eq!(report.calls.admitted, 5, "{report:#?}");
    assert_eq!(report.calls.completed, 5, "{report:#?}");
    assert_eq!(report.frames.sent, 5 * 30);
    assert_eq!(report.frames.lost, Some(0), "{report:#?}");
    assert_eq!(report.frames.echoes_unmatched, 0);
    assert_eq!(report.marks.marks_echoed, 5);
    assert_eq!(report.marks.dtmf_sent, 5);
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert!(report.echo_latency_us.is_some());
    replica.stop().await;
}

#[tokio::test]
async fn unsigned_calls_fail_and_calls_over_the_limit_are_rejected() {
    let mut raw_signed = raw(None, 50);
    raw_signed.twilio_auth_token = Some("sim-secret".into());
    raw_signed.public_url = Some("https://calls.example.com".into());
    let signed = Replica::start(raw_signed, StreamTimeouts::default()).await;
    let target = Target::new(&signed.url(""), None, None).unwrap();
    let report = run::run(config(target, 2, false)).await;
    assert_eq!(report.calls.failed, 2);
    assert_eq!(report.errors.get("webhook_http_403"), Some(&2));
    signed.stop().await;

    let limited = Replica::start(raw(None, 2), StreamTimeouts::default()).await;
    let target = Target::new(&limited.url(""), None, None).unwrap();
    let report = run::run(config(target, 4, false)).await;
    assert_eq!(report.calls.admitted, 2, "{report:#?}");
    assert_eq!(report.calls.rejected, 2);
    assert_eq!(report.calls.rejected_by["http_503"], 2);
    assert_eq!(report.frames.lost, Some(0));
    limited.stop().await;
}
