//! A whole simulated run: calls launched on a ramp under a concurrency cap, a progress line, the
//! steady-state window (server and simulator CPU per frame, server memory per call), and a hard
//! bound on how long it may take.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::{Instant, sleep, sleep_until};

use super::call::{self, CallPlan};
use super::histogram::{Histogram, Snapshot};
use super::procfs;
use super::report::{BurstReport, Latency, Report, Window, WindowSide};
use super::rng::Rng;
use super::stats::Stats;
use super::tenants::Rotation;
use super::timeline::{self, Bucket};
use super::webhook::{self, Answer, CallIds};

/// Whether echoes are expected: decides if unechoed frames count as lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EchoMode {
    Expect,
    None,
    /// Echo mode if any frame came back.
    Detect,
}

pub struct RunConfig {
    pub plan: CallPlan,
    pub calls: u64,
    pub concurrency: u64,
    pub ramp: Duration,
    pub echo: EchoMode,
    /// How long after the ramp the window waits for the last calls to settle.
    pub settle: Duration,
    /// A progress line on stderr this often.
    pub progress: Option<Duration>,
    /// The server's process, measured from outside through /proc.
    pub server_pid: Option<u32>,
    pub seed: u64,
}

impl RunConfig {
    /// Longest the run may take: the ramp, each wave of calls with generous set-up and drain time
    /// (and its longest patience on hold, or `UNBOUNDED_WAIT` without `--patience`), and a margin.
    /// Past it the run stops and reports what it has.
    pub fn bound(&self) -> Duration {
        let waves = self.calls.div_ceil(self.concurrency.max(1)) as u32;
        let wait = self.plan.patience.map_or(UNBOUNDED_WAIT, |p| p.max);
        self.ramp
            + (self.plan.duration + self.plan.drain + wait + Duration::from_secs(30)) * waves
            + Duration::from_secs(30)
    }
}

/// What a wave of calls may spend on hold when the callers have no `--patience` (the server's
/// `WAIT_MAX_SECS` bounds it, which the simulator does not know).
const UNBOUNDED_WAIT: Duration = Duration::from_secs(120);

pub async fn run(config: RunConfig) -> Report {
    run_with(config, None).await
}

/// [`run`], also sampling the run into `timeline`'s buckets (`--timeline`) while it lasts.
pub async fn run_with(config: RunConfig, timeline: Option<Arc<Mutex<Vec<Bucket>>>>) -> Report {
    let config = Arc::new(config);
    let stats = Arc::new(Stats::with_tenants(config.plan.tenants.len()));
    let started = Instant::now();
    let sampler = timeline.map(|into| tokio::spawn(timeline::record(stats.clone(), started, into)));
    let server_rss_idle = config
        .server_pid
        .and_then(|pid| procfs::rss_bytes(&pid.to_string()).ok());
    let window = tokio::spawn(measure_window(config.clone(), stats.clone(), started));
    let progress = config
        .progress
        .map(|every| tokio::spawn(progress(stats.clone(), started, every, config.calls)));

    let outcome = tokio::select! {
        () = launch(config.clone(), stats.clone(), started) => "finished",
        () = sleep(config.bound()) => "timed_out",
        _ = tokio::signal::ctrl_c() => "interrupted",
    };
    if let Some(task) = progress {
        task.abort();
    }
    if let Some(task) = sampler {
        task.abort();
    }
    let window = if window.is_finished() {
        window.await.ok().flatten()
    } else {
        window.abort();
        None
    };
    Report::new(
        &config,
        &stats,
        started.elapsed(),
        outcome,
        window.map(|mut w| {
            if let (Some(server), Some(idle)) = (w.server.as_mut(), server_rss_idle) {
                server.set_idle_rss(idle, w.streams);
            }
            w
        }),
    )
}

/// Starts calls on the ramp, never more than `concurrency` at once, and waits for them all.
async fn launch(config: Arc<RunConfig>, stats: Arc<Stats>, started: Instant) {
    let permits = Arc::new(Semaphore::new(config.concurrency.max(1) as usize));
    let mut calls = JoinSet::new();
    let mut seeds = Rng::new(config.seed);
    let mut tenants = Rotation::new(&config.plan.tenants);
    for i in 0..config.calls {
        let offset = config.ramp.mul_f64(i as f64 / config.calls as f64);
        sleep_until(started + offset).await;
        let Ok(permit) = permits.clone().acquire_owned().await else {
            break;
        };
        let (config, stats, seed) = (config.clone(), stats.clone(), seeds.next_u64());
        let tenant = tenants.next_tenant();
        calls.spawn(async move {
            call::run(&config.plan, &stats, seed, tenant).await;
            drop(permit);
        });
        // Reap finished calls as we go so a long run does not hold every result.
        while calls.try_join_next().is_some() {}
    }
    while calls.join_next().await.is_some() {}
}

/// The steady state: every call set up and none yet hung up. Measured only when all calls can
/// run at once (calls <= concurrency); `None` if the run is too short to have one.
async fn measure_window(
    config: Arc<RunConfig>,
    stats: Arc<Stats>,
    started: Instant,
) -> Option<Window> {
    if config.calls > config.concurrency {
        return None;
    }
    // No call hangs up before `duration` after the first one started streaming.
    let end = started
        + config
            .plan
            .duration
            .saturating_sub(Duration::from_millis(250));
    sleep_until(started + config.ramp + config.settle).await;
    while stats.settled.get() < config.calls {
        if Instant::now() >= end {
            return None;
        }
        sleep(Duration::from_millis(20)).await;
    }
    let server = config.server_pid.map(|pid| pid.to_string());
    let first = Sample::take(&stats, server.as_deref());
    sleep_until(end).await;
    let last = Sample::take(&stats, server.as_deref());
    let seconds = last.at.duration_since(first.at).as_secs_f64();
    if seconds < 1.0 {
        return None;
    }
    let frames = last.frames_sent.saturating_sub(first.frames_sent);
    let frames_late = last.frames_late.saturating_sub(first.frames_late);
    let side = |a: Option<Duration>, b: Option<Duration>, rss: Option<u64>| {
        let cpu = b?.saturating_sub(a?);
        Some(WindowSide::new(cpu, seconds, frames, rss))
    };
    let machine_busy_cores = match (first.machine, last.machine) {
        (Some((busy_a, _)), Some((busy_b, _))) => {
            Some(busy_b.saturating_sub(busy_a).as_secs_f64() / seconds)
        }
        _ => None,
    };
    Some(Window {
        seconds,
        machine_busy_cores,
        streams: first.streaming.min(last.streaming),
        frames_sent: frames,
        frames_per_second: frames as f64 / seconds,
        frames_late,
        late_percent: percent(frames_late, frames),
        echo_latency_us: Latency::of(&last.latency.since(&first.latency)),
        server: side(first.server_cpu, last.server_cpu, last.server_rss),
        simulator: side(first.own_cpu, last.own_cpu, None),
    })
}

/// `part` as a percentage of `whole` (0 when there is no whole).
pub fn percent(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 * 100.0 / whole as f64
    }
}

struct Sample {
    at: Instant,
    frames_sent: u64,
    frames_late: u64,
    latency: Snapshot,
    streaming: u64,
    server_cpu: Option<Duration>,
    server_rss: Option<u64>,
    own_cpu: Option<Duration>,
    machine: Option<(Duration, Duration)>,
}

impl Sample {
    fn take(stats: &Stats, server: Option<&str>) -> Self {
        Self {
            at: Instant::now(),
            frames_sent: stats.frames_sent.get(),
            frames_late: stats.frames_late.get(),
            latency: stats.echo_latency.snapshot(),
            streaming: stats.streaming.get(),
            server_cpu: server.and_then(|pid| procfs::cpu_time(pid).ok()),
            server_rss: server.and_then(|pid| procfs::rss_bytes(pid).ok()),
            own_cpu: procfs::cpu_time("self").ok(),
            machine: procfs::machine_times().ok(),
        }
    }
}

async fn progress(stats: Arc<Stats>, started: Instant, every: Duration, calls: u64) {
    loop {
        sleep(every).await;
        let p99 = stats
            .echo_latency
            .quantile(0.99)
            .map_or("-".to_owned(), |us| format!("{:.2} ms", us as f64 / 1000.0));
        eprintln!(
            "[{:>6.1}s] calls {}/{} streaming {} waiting {} rejected {} failed {} | frames sent {} echoed {} late {} | echo p99 {p99}",
            started.elapsed().as_secs_f64(),
            stats.launched.get(),
            calls,
            stats.streaming.get(),
            stats.line.waiting.get(),
            stats.rejected_total(),
            stats.failed.get(),
            stats.frames_sent.get(),
            stats.frames_echoed.get(),
            stats.frames_late.get(),
        );
    }
}

/// `--burst N`: N voice webhooks at once, each on its own fresh connection as Twilio sends them,
/// released together by a barrier once every task is ready; no stream is opened.
pub async fn burst(plan: Arc<CallPlan>, webhooks: u64, seed: u64) -> BurstReport {
    let stats = Arc::new(Stats::default());
    let latency = Arc::new(Histogram::default());
    let gate = Arc::new(tokio::sync::Barrier::new(webhooks as usize + 1));
    let mut tasks = JoinSet::new();
    let mut seeds = Rng::new(seed);
    for _ in 0..webhooks {
        let (plan, stats, latency, gate) =
            (plan.clone(), stats.clone(), latency.clone(), gate.clone());
        let call_sid = Rng::new(seeds.next_u64()).sid("CA");
        tasks.spawn(async move {
            gate.wait().await;
            let ids = CallIds::inbound(&call_sid, &plan.account_sid);
            stats.launched.inc();
            let sent = Instant::now();
            let answer = webhook::post_voice(&plan.target, &ids).await;
            latency.record(sent.elapsed().as_micros() as u64);
            match answer {
                Ok(Answer::Connect(_)) => stats.admitted.inc(),
                Ok(Answer::Rejected(refusal)) => stats.rejected(refusal),
                // Put on hold: a burst measures the answer, not the wait.
                Ok(Answer::Wait(_)) => stats.line.joined.inc(),
                Err(err) => {
                    stats.failed.inc();
                    stats.failure(&err);
                }
            }
        });
    }
    gate.wait().await;
    let started = Instant::now();
    while tasks.join_next().await.is_some() {}
    BurstReport::new(webhooks, &stats, &latency.snapshot(), started.elapsed())
}
