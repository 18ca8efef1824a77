//! What a run found, as one serialisable report: calls, frames, echo latency, the steady-state
//! window and errors by kind; printed as a table for people or as JSON (`--json`) for scripts.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use serde::Serialize;

use super::histogram::Snapshot;
use super::run::{EchoMode, RunConfig, percent};
use super::stats::{Line, Stats};

#[derive(Debug, Serialize)]
pub struct Report {
    /// `finished`, `timed_out` (the run's bound passed) or `interrupted` (Ctrl-C).
    pub outcome: &'static str,
    pub elapsed_seconds: f64,
    pub config: ConfigEcho,
    pub calls: Calls,
    pub frames: Frames,
    /// Whether the server echoed (given by `--expect-echo`/`--no-echo`, else detected).
    pub echo_mode: bool,
    /// Over the whole run, ramp and hang-ups included; the steady state's own is in `window`.
    pub echo_latency_us: Option<Latency>,
    /// More than `SATURATED_LATE_PERCENT` of the frames (over the run or over the window) left
    /// the simulator late: the machine could not keep real time, so no latency or CPU target can
    /// be called met from this run.
    pub saturated: bool,
    pub marks: Marks,
    pub window: Option<Window>,
    pub errors: BTreeMap<String, u64>,
    /// The first message of each error kind: why (which certificate was not trusted, what
    /// refused the connection).
    pub error_messages: BTreeMap<String, String>,
    /// Streams lost mid-call and what `<Connect action>` made of them
    /// (docs/reference.md#after-stream).
    pub continuity: Continuity,
    /// Calls put on hold by the waiting room (docs/reference.md#waiting-room), and what came of it.
    pub waiting: Waiting,
    /// Per tenant (`--tenants`), in the order given; empty without tenants.
    pub tenants: Vec<TenantReport>,
}

/// The waiting room as the callers lived it.
#[derive(Debug, Serialize)]
pub struct Waiting {
    /// Calls answered with the hold.
    pub joined: u64,
    /// Of those, admitted (a `<Connect>` from `/twilio/wait`).
    pub admitted_from_line: u64,
    /// Hung up on hold, out of patience (`--patience`).
    pub abandoned: u64,
    /// Sent from the hold to the overflow.
    pub overflowed: u64,
    /// Hung up on by the line (`<Hangup/>` to a visit): the line had let them go, e.g. they came
    /// back later than it allows.
    pub dropped: u64,
    /// Requests to `/twilio/wait`.
    pub visits: u64,
    /// How long the calls admitted from the line waited, in milliseconds.
    pub wait_ms: Option<WaitTimes>,
    /// One visit's round trip, in milliseconds (the run's, not per tenant).
    pub visit_ms: Option<WaitTimes>,
    /// One voice webhook's round trip, in milliseconds: the visit's baseline (the run's).
    pub webhook_ms: Option<WaitTimes>,
}

#[derive(Debug, Serialize)]
pub struct WaitTimes {
    pub count: u64,
    pub p50: f64,
    pub p99: f64,
    pub max: f64,
}

impl Waiting {
    fn of(line: &Line) -> Self {
        let ms = |us: u64| us as f64 / 1000.0;
        let times = |h: &super::histogram::Histogram| {
            (h.count() > 0).then(|| WaitTimes {
                count: h.count(),
                p50: ms(h.quantile(0.50).unwrap_or_default()),
                p99: ms(h.quantile(0.99).unwrap_or_default()),
                max: ms(h.max()),
            })
        };
        Self {
            visit_ms: times(&line.visit_latency),
            webhook_ms: times(&line.webhook_latency),
            joined: line.joined.get(),
            admitted_from_line: line.admitted.get(),
            abandoned: line.abandoned.get(),
            overflowed: line.overflowed.get(),
            dropped: line.dropped.get(),
            visits: line.visits.get(),
            wait_ms: times(&line.wait),
        }
    }

    /// `joined … admitted … abandoned … overflowed … visits …` and the waits, for a table.
    fn summary(&self) -> String {
        let waits = self.wait_ms.as_ref().map_or("-".to_owned(), |w| {
            format!(
                "wait p50 {:.1} s  p99 {:.1} s  max {:.1} s",
                w.p50 / 1000.0,
                w.p99 / 1000.0,
                w.max / 1000.0
            )
        });
        format!(
            "joined {}  admitted {}  abandoned {}  overflowed {}  dropped {}  visits {}  {waits}",
            self.joined,
            self.admitted_from_line,
            self.abandoned,
            self.overflowed,
            self.dropped,
            self.visits
        )
    }
}

/// One tenant's calls.
#[derive(Debug, Serialize)]
pub struct TenantReport {
    pub tenant: String,
    pub account_sid: String,
    pub to: String,
    pub weight: u32,
    pub launched: u64,
    /// Admitted at once or from the line: a stream opened.
    pub admitted: u64,
    pub completed: u64,
    /// Refused by the voice webhook or the stream (the reject mode).
    pub rejected: u64,
    pub failed: u64,
    pub waiting: Waiting,
}

#[derive(Debug, Serialize)]
pub struct Continuity {
    /// Streams the server closed or lost without our `stop`, with the call still planned to go on.
    pub streams_lost: u64,
    /// Answered with a new stream.
    pub continued: u64,
    pub fallback: u64,
    pub hangup: u64,
    /// Calls that ended before their planned duration.
    pub ended_early: u64,
    /// Frames due while no stream was open: the silence a caller heard, in 20 ms frames.
    pub frames_skipped: u64,
    /// From a loss to the first echo on the continued stream, in microseconds.
    pub resume_gap_us: Option<Gap>,
}

#[derive(Debug, Serialize)]
pub struct Gap {
    pub count: u64,
    pub p50: u64,
    pub p99: u64,
    pub max: u64,
}

#[derive(Debug, Serialize)]
pub struct ConfigEcho {
    pub target: String,
    pub calls: u64,
    pub concurrency: u64,
    pub ramp_seconds: f64,
    pub duration_seconds: f64,
    pub frames_per_call: u32,
    pub stream_only: bool,
    pub signed: bool,
}

#[derive(Debug, Serialize)]
pub struct Calls {
    pub launched: u64,
    /// Webhook answered `<Connect><Stream>` and the WebSocket upgrade succeeded.
    pub admitted: u64,
    pub rejected: u64,
    pub rejected_by: BTreeMap<&'static str, u64>,
    pub failed: u64,
    /// Streamed to the end and hung up normally.
    pub completed: u64,
}

#[derive(Debug, Serialize)]
pub struct Frames {
    pub sent: u64,
    pub echoed: u64,
    /// sent − echoed, in echo mode only.
    pub lost: Option<u64>,
    /// Written more than 5 ms behind schedule: the simulator fell behind.
    pub late: u64,
    pub echoes_unmatched: u64,
    /// Echoes that came back after a later frame's echo.
    pub echoes_reordered: u64,
    pub other_messages: u64,
}

/// Above this share of late frames a run is saturated (more than 1 %).
pub const SATURATED_LATE_PERCENT: f64 = 1.0;

#[derive(Debug, Serialize)]
pub struct Latency {
    pub count: u64,
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
}

impl Latency {
    /// The percentiles of what a snapshot holds; `None` when it holds nothing.
    pub fn of(snapshot: &Snapshot) -> Option<Self> {
        let q = |q: f64| snapshot.quantile(q).unwrap_or_default();
        (snapshot.count() > 0).then(|| Self {
            count: snapshot.count(),
            p50: q(0.50),
            p90: q(0.90),
            p99: q(0.99),
            p999: q(0.999),
            max: snapshot.max(),
        })
    }
}

#[derive(Debug, Serialize)]
pub struct Marks {
    pub marks_sent: u64,
    pub marks_echoed: u64,
    pub dtmf_sent: u64,
}

/// The steady state: all calls streaming, none hung up.
#[derive(Debug, Serialize)]
pub struct Window {
    pub seconds: f64,
    /// Cores' worth of CPU the whole machine was busy: more than server + simulator means
    /// something else competed for the CPU during the measurement.
    pub machine_busy_cores: Option<f64>,
    /// Calls streaming throughout the window.
    pub streams: u64,
    pub frames_sent: u64,
    pub frames_per_second: f64,
    /// Frames sent in the window more than 5 ms behind schedule.
    pub frames_late: u64,
    pub late_percent: f64,
    /// Echo latency of the frames echoed in the window only (no ramp, no hang-ups).
    pub echo_latency_us: Option<Latency>,
    pub server: Option<WindowSide>,
    pub simulator: Option<WindowSide>,
}

/// One process over the window, measured from /proc.
#[derive(Debug, Serialize)]
pub struct WindowSide {
    /// utime + stime over the window ÷ media frames sent in it.
    pub cpu_us_per_frame: f64,
    /// Cores' worth of CPU used on average.
    pub cpu_cores: f64,
    pub rss_kib: Option<f64>,
    pub rss_idle_kib: Option<f64>,
    /// (RSS at the window's end − RSS before the run) ÷ streams.
    pub rss_per_call_bytes: Option<f64>,
}

impl WindowSide {
    pub fn new(cpu: Duration, seconds: f64, frames: u64, rss: Option<u64>) -> Self {
        Self {
            cpu_us_per_frame: cpu.as_secs_f64() * 1e6 / frames.max(1) as f64,
            cpu_cores: cpu.as_secs_f64() / seconds,
            rss_kib: rss.map(|b| b as f64 / 1024.0),
            rss_idle_kib: None,
            rss_per_call_bytes: None,
        }
    }

    pub fn set_idle_rss(&mut self, idle: u64, streams: u64) {
        self.rss_idle_kib = Some(idle as f64 / 1024.0);
        if let (Some(kib), true) = (self.rss_kib, streams > 0) {
            self.rss_per_call_bytes = Some((kib * 1024.0 - idle as f64) / streams as f64);
        }
    }
}

impl Report {
    pub fn new(
        config: &RunConfig,
        stats: &Stats,
        elapsed: Duration,
        outcome: &'static str,
        window: Option<Window>,
    ) -> Self {
        let sent = stats.frames_sent.get();
        let echoed = stats.frames_echoed.get();
        let echo_mode = match config.echo {
            EchoMode::Expect => true,
            EchoMode::None => false,
            EchoMode::Detect => echoed > 0,
        };
        let late = stats.frames_late.get();
        let saturated = percent(late, sent) > SATURATED_LATE_PERCENT
            || window
                .as_ref()
                .is_some_and(|w| w.late_percent > SATURATED_LATE_PERCENT);
        let rejected_by = BTreeMap::from([
            ("http_503", stats.rejected_503.get()),
            ("twiml", stats.rejected_twiml.get()),
            ("busy", stats.rejected_busy.get()),
            ("stream_1013", stats.rejected_stream.get()),
        ]);
        Self {
            outcome,
            elapsed_seconds: elapsed.as_secs_f64(),
            config: ConfigEcho {
                target: config.plan.target.origin(),
                calls: config.calls,
                concurrency: config.concurrency,
                ramp_seconds: config.ramp.as_secs_f64(),
                duration_seconds: config.plan.duration.as_secs_f64(),
                frames_per_call: config.plan.frames(),
                stream_only: config.plan.stream_only,
                signed: config.plan.target.sign("", &[]).is_some(),
            },
            calls: Calls {
                launched: stats.launched.get(),
                admitted: stats.admitted.get(),
                rejected: stats.rejected_total(),
                rejected_by,
                failed: stats.failed.get(),
                completed: stats.completed.get(),
            },
            frames: Frames {
                sent,
                echoed,
                lost: echo_mode.then(|| sent.saturating_sub(echoed)),
                late,
                echoes_unmatched: stats.echoes_unmatched.get(),
                echoes_reordered: stats.echoes_reordered.get(),
                other_messages: stats.other_messages.get(),
            },
            echo_mode,
            echo_latency_us: Latency::of(&stats.echo_latency.snapshot()),
            saturated,
            marks: Marks {
                marks_sent: stats.marks_sent.get(),
                marks_echoed: stats.marks_echoed.get(),
                dtmf_sent: stats.dtmf_sent.get(),
            },
            window,
            errors: stats.errors(),
            error_messages: stats.error_messages(),
            continuity: Continuity {
                streams_lost: stats.streams_lost.get(),
                continued: stats.continued.get(),
                fallback: stats.after_stream_fallback.get(),
                hangup: stats.after_stream_hangup.get(),
                ended_early: stats.ended_early.get(),
                frames_skipped: stats.frames_skipped.get(),
                resume_gap_us: (stats.resume_gap.count() > 0).then(|| Gap {
                    count: stats.resume_gap.count(),
                    p50: stats.resume_gap.quantile(0.50).unwrap_or_default(),
                    p99: stats.resume_gap.quantile(0.99).unwrap_or_default(),
                    max: stats.resume_gap.max(),
                }),
            },
            waiting: Waiting::of(&stats.line),
            tenants: config
                .plan
                .tenants
                .iter()
                .zip(&stats.tenants)
                .map(|(tenant, t)| TenantReport {
                    tenant: tenant.name.clone(),
                    account_sid: tenant.account_sid.clone(),
                    to: tenant.to.clone(),
                    weight: tenant.weight,
                    launched: t.launched.get(),
                    admitted: t.admitted.get(),
                    completed: t.completed.get(),
                    rejected: t.rejected.get(),
                    failed: t.failed.get(),
                    waiting: Waiting::of(&t.line),
                })
                .collect(),
        }
    }

    /// Why this run should fail a deploy gate, if it should: the run did not finish, a call
    /// failed, a call was refused when refusals were not expected, or more than
    /// `max_loss_percent` of the frames sent were not echoed. Empty: the run passed.
    pub fn failures(&self, allow_rejected: bool, max_loss_percent: f64) -> Vec<String> {
        let mut failures = Vec::new();
        if self.outcome != "finished" {
            failures.push(format!("the run did not finish ({})", self.outcome));
        }
        if self.calls.failed > 0 {
            failures.push(format!(
                "{} of {} calls failed (errors seen: {})",
                self.calls.failed,
                self.calls.launched,
                error_kinds(&self.errors)
            ));
        }
        if self.continuity.ended_early > 0 {
            failures.push(format!(
                "{} calls ended early: a lost stream was answered with the fallback or a hang-up",
                self.continuity.ended_early
            ));
        }
        if self.calls.rejected > 0 && !allow_rejected {
            failures.push(format!(
                "{} calls were refused (pass --allow-rejected when refusals are expected)",
                self.calls.rejected
            ));
        }
        if self.waiting.dropped > 0 {
            failures.push(format!(
                "{} calls on hold were hung up on by the line (a visit answered <Hangup/>)",
                self.waiting.dropped
            ));
        }
        if self.waiting.overflowed > 0 && !allow_rejected {
            failures.push(format!(
                "{} calls were sent from the hold to the overflow (pass --allow-rejected when \
                 that is expected)",
                self.waiting.overflowed
            ));
        }
        if let Some(lost) = self.frames.lost
            && self.frames.sent > 0
        {
            #[allow(clippy::cast_precision_loss)]
            let percent = lost as f64 * 100.0 / self.frames.sent as f64;
            if percent > max_loss_percent {
                failures.push(format!(
                    "{lost} of {} frames were not echoed ({percent:.3} % > {max_loss_percent} %)",
                    self.frames.sent
                ));
            }
        }
        failures
    }

    /// The report as a plain-text table.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let c = &self.calls;
        let f = &self.frames;
        let mut row = |name: &str, value: String| {
            let _ = writeln!(out, "{name:<22} {value}");
        };
        let tenant_rows: Vec<(String, String)> = self
            .tenants
            .iter()
            .map(|t| {
                (
                    format!("  {} (x{})", t.tenant, t.weight),
                    format!(
                        "launched {}  admitted {}  completed {}  rejected {}  failed {} | {}",
                        t.launched,
                        t.admitted,
                        t.completed,
                        t.rejected,
                        t.failed,
                        t.waiting.summary()
                    ),
                )
            })
            .collect();
        row(
            "run",
            format!(
                "{} in {:.1} s: {} calls to {}, concurrency {}, ramp {:.1} s, {:.1} s each{}{}",
                self.outcome,
                self.elapsed_seconds,
                self.config.calls,
                self.config.target,
                self.config.concurrency,
                self.config.ramp_seconds,
                self.config.duration_seconds,
                if self.config.stream_only {
                    ", stream only"
                } else {
                    ""
                },
                if self.config.signed { ", signed" } else { "" },
            ),
        );
        row(
            "calls",
            format!(
                "launched {}  admitted {}  rejected {}  failed {}  completed {}",
                c.launched, c.admitted, c.rejected, c.failed, c.completed
            ),
        );
        if c.rejected > 0 {
            let by: Vec<String> = c
                .rejected_by
                .iter()
                .filter(|(_, n)| **n > 0)
                .map(|(k, n)| format!("{k} {n}"))
                .collect();
            row("  rejected by", by.join("  "));
        }
        if self.waiting.joined > 0 {
            row("on hold", self.waiting.summary());
            let w = &self.waiting;
            if let (Some(visit), Some(webhook)) = (&w.visit_ms, &w.webhook_ms) {
                row(
                    "  round trips",
                    format!(
                        "visit p50 {:.2} ms  p99 {:.2} ms | voice webhook p50 {:.2} ms  p99 {:.2} ms",
                        visit.p50, visit.p99, webhook.p50, webhook.p99
                    ),
                );
            }
        }
        if !tenant_rows.is_empty() {
            row("tenants", format!("{}", tenant_rows.len()));
            for (name, value) in tenant_rows {
                row(&name, value);
            }
        }
        let k = &self.continuity;
        if k.streams_lost > 0 {
            row(
                "streams lost",
                format!(
                    "{}  continued {}  fallback {}  hangup {}  ended early {}  frames skipped {}",
                    k.streams_lost,
                    k.continued,
                    k.fallback,
                    k.hangup,
                    k.ended_early,
                    k.frames_skipped
                ),
            );
        }
        if let Some(gap) = &k.resume_gap_us {
            row(
                "  audio gap",
                format!(
                    "p50 {:.0} ms  p99 {:.0} ms  max {:.0} ms  ({} continued streams)",
                    gap.p50 as f64 / 1000.0,
                    gap.p99 as f64 / 1000.0,
                    gap.max as f64 / 1000.0,
                    gap.count
                ),
            );
        }
        row(
            "frames",
            format!(
                "sent {}  echoed {}  lost {}  late (>5 ms) {}",
                f.sent,
                f.echoed,
                f.lost.map_or("n/a (no echo)".into(), |n| n.to_string()),
                f.late
            ),
        );
        if f.echoes_unmatched + f.echoes_reordered + f.other_messages > 0 {
            row(
                "  other",
                format!(
                    "unmatched echoes {}  reordered echoes {}  other messages {}",
                    f.echoes_unmatched, f.echoes_reordered, f.other_messages
                ),
            );
        }
        if self.saturated {
            row(
                "SATURATED",
                format!(
                    "more than {SATURATED_LATE_PERCENT} % of frames left late: no target is met by this run"
                ),
            );
        }
        match &self.echo_latency_us {
            Some(l) => row(
                "echo latency (run)",
                format!(
                    "p50 {}  p90 {}  p99 {}  p99.9 {}  max {}  ({} echoes)",
                    ms(l.p50),
                    ms(l.p90),
                    ms(l.p99),
                    ms(l.p999),
                    ms(l.max),
                    l.count
                ),
            ),
            None => row("echo latency", "n/a (no echo)".into()),
        }
        let m = &self.marks;
        if m.marks_sent + m.dtmf_sent > 0 {
            row(
                "marks / dtmf",
                format!(
                    "marks sent {}  echoed {}  dtmf sent {}",
                    m.marks_sent, m.marks_echoed, m.dtmf_sent
                ),
            );
        }
        match &self.window {
            None => row(
                "steady state",
                "none (needs calls <= concurrency and duration > ramp + settle + 1 s)".into(),
            ),
            Some(w) => {
                row(
                    "steady state",
                    format!(
                        "{:.1} s, {} streams, {:.0} frames/s, machine busy {}",
                        w.seconds,
                        w.streams,
                        w.frames_per_second,
                        w.machine_busy_cores
                            .map_or("?".into(), |c| format!("{c:.2} cores"))
                    ),
                );
                row(
                    "  late frames",
                    format!("{} ({:.3} %)", w.frames_late, w.late_percent),
                );
                if let Some(l) = &w.echo_latency_us {
                    row(
                        "  echo latency",
                        format!(
                            "p50 {}  p90 {}  p99 {}  p99.9 {}  max {}  ({} echoes)",
                            ms(l.p50),
                            ms(l.p90),
                            ms(l.p99),
                            ms(l.p999),
                            ms(l.max),
                            l.count
                        ),
                    );
                }
                if let Some(s) = &w.server {
                    let rss = match (s.rss_per_call_bytes, s.rss_kib, s.rss_idle_kib) {
                        (Some(per), Some(now), Some(idle)) => format!(
                            "  RSS {:.1} KiB/call ({:.0} MiB, idle {:.0} MiB)",
                            per / 1024.0,
                            now / 1024.0,
                            idle / 1024.0
                        ),
                        _ => String::new(),
                    };
                    row(
                        "  server",
                        format!(
                            "{:.2} µs CPU/frame ({:.2} cores){rss}",
                            s.cpu_us_per_frame, s.cpu_cores
                        ),
                    );
                }
                if let Some(s) = &w.simulator {
                    row(
                        "  simulator",
                        format!(
                            "{:.2} µs CPU/frame ({:.2} cores)",
                            s.cpu_us_per_frame, s.cpu_cores
                        ),
                    );
                }
            }
        }
        if self.errors.is_empty() {
            row("errors", "none".into());
        } else {
            for (kind, n) in &self.errors {
                row("error", format!("{kind}: {n}"));
                if let Some(message) = self.error_messages.get(kind) {
                    row("  first", message.clone());
                }
            }
        }
        out
    }
}

/// What `--burst` found: each webhook's time from its connect to the end of its answer.
#[derive(Debug, Serialize)]
pub struct BurstReport {
    pub webhooks: u64,
    pub admitted: u64,
    pub rejected: u64,
    /// Answered with the waiting room's hold.
    pub on_hold: u64,
    pub failed: u64,
    /// From the barrier's release to the last answer.
    pub elapsed_ms: f64,
    pub latency_us: Option<Latency>,
    pub errors: BTreeMap<String, u64>,
    /// The first message of each error kind.
    pub error_messages: BTreeMap<String, String>,
}

impl BurstReport {
    pub fn new(webhooks: u64, stats: &Stats, latency: &Snapshot, elapsed: Duration) -> Self {
        Self {
            webhooks,
            admitted: stats.admitted.get(),
            rejected: stats.rejected_total(),
            on_hold: stats.line.joined.get(),
            failed: stats.failed.get(),
            elapsed_ms: elapsed.as_secs_f64() * 1e3,
            latency_us: Latency::of(latency),
            errors: stats.errors(),
            error_messages: stats.error_messages(),
        }
    }

    /// Why the burst should fail a gate: a webhook failed, or one was refused unexpectedly.
    pub fn failures(&self, allow_rejected: bool) -> Vec<String> {
        let mut failures = Vec::new();
        if self.failed > 0 {
            failures.push(format!(
                "{} of {} webhooks failed (errors seen: {})",
                self.failed,
                self.webhooks,
                error_kinds(&self.errors)
            ));
        }
        if self.rejected > 0 && !allow_rejected {
            failures.push(format!("{} webhooks were refused", self.rejected));
        }
        failures
    }

    pub fn table(&self) -> String {
        let latency = self.latency_us.as_ref().map_or("-".to_owned(), |l| {
            format!(
                "p50 {}  p90 {}  p99 {}  max {}",
                ms(l.p50),
                ms(l.p90),
                ms(l.p99),
                ms(l.max)
            )
        });
        format!(
            "burst                  {} webhooks in {:.1} ms: admitted {}  on hold {}  rejected {}  failed {}\n\
             webhook latency        {latency}\n",
            self.webhooks, self.elapsed_ms, self.admitted, self.on_hold, self.rejected, self.failed
        )
    }
}

fn ms(micros: u64) -> String {
    format!("{:.2} ms", micros as f64 / 1000.0)
}

/// `kind: count, …` of a run's errors: a deploy log shows the gate's line, not the JSON report, so
/// the line itself says why calls failed.
fn error_kinds(errors: &BTreeMap<String, u64>) -> String {
    let kinds: Vec<String> = errors
        .iter()
        .map(|(kind, n)| format!("{kind}: {n}"))
        .collect();
    kinds.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(failed: u64, rejected: u64, sent: u64, echoed: u64) -> Report {
        Report {
            outcome: "finished",
            elapsed_seconds: 1.0,
            config: ConfigEcho {
                target: "http://127.0.0.1:8080".into(),
                calls: 10,
                concurrency: 10,
                ramp_seconds: 1.0,
                duration_seconds: 1.0,
                frames_per_call: 50,
                stream_only: false,
                signed: false,
            },
            calls: Calls {
                launched: 10,
                admitted: 10 - failed - rejected,
                rejected,
                rejected_by: BTreeMap::new(),
                failed,
                completed: 10 - failed - rejected,
            },
            frames: Frames {
                sent,
                echoed,
                lost: Some(sent - echoed),
                late: 0,
                echoes_unmatched: 0,
                echoes_reordered: 0,
                other_messages: 0,
            },
            echo_mode: true,
            echo_latency_us: None,
            saturated: false,
            marks: Marks {
                marks_sent: 0,
                marks_echoed: 0,
                dtmf_sent: 0,
            },
            window: None,
            errors: BTreeMap::new(),
            error_messages: BTreeMap::new(),
            continuity: Continuity {
                streams_lost: 0,
                continued: 0,
                fallback: 0,
                hangup: 0,
                ended_early: 0,
                frames_skipped: 0,
                resume_gap_us: None,
            },
            waiting: Waiting::of(&Line::default()),
            tenants: Vec::new(),
        }
    }

    #[test]
    fn a_clean_run_passes_the_gate() {
        assert!(report(0, 0, 500, 500).failures(false, 0.1).is_empty());
    }

    #[test]
    fn failed_calls_unexpected_refusals_and_loss_fail_it() {
        let mut failed = report(1, 0, 500, 500);
        failed.errors.insert("tls_certificate".into(), 1);
        let why = failed.failures(false, 0.1);
        assert_eq!(
            why,
            ["1 of 10 calls failed (errors seen: tls_certificate: 1)"]
        );
        assert_eq!(report(0, 2, 500, 500).failures(false, 0.1).len(), 1);
        assert!(report(0, 2, 500, 500).failures(true, 0.1).is_empty());
        let lossy = report(0, 0, 1000, 990).failures(false, 0.1);
        assert_eq!(lossy.len(), 1, "{lossy:?}");
        assert!(report(0, 0, 1000, 990).failures(false, 1.0).is_empty());
        let mut overflowed = report(0, 0, 500, 500);
        overflowed.waiting.overflowed = 3;
        assert_eq!(overflowed.failures(false, 0.1).len(), 1);
        assert!(overflowed.failures(true, 0.1).is_empty());
        let mut unfinished = report(0, 0, 500, 500);
        unfinished.outcome = "timed_out";
        assert_eq!(unfinished.failures(false, 0.1).len(), 1);
    }
}
