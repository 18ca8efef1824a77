//! The renewal task: runs the call core's tick every `RENEW_INTERVAL_SECS` (leases, locks, state
//! flush, reclaim, heartbeat; one script per 100 live calls) until the server stops it.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use calls_core::calls::Calls;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;
use tracing::debug;

use crate::lifecycle::Lifecycle;

/// Runs ticks every `every` (`RENEW_INTERVAL_SECS`), and one at once whenever the store finds Redis
/// lost its data, restarted or was out of reach for longer than a lease, until `stop` is cancelled.
pub(crate) async fn run(
    calls: Arc<Calls>,
    lifecycle: Arc<Lifecycle>,
    every: Duration,
    stop: CancellationToken,
) {
    let mut interval = tokio::time::interval(every);
    interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = interval.tick() => {}
            () = calls.reregister_wanted() => {}
        }
        // Errors are logged and counted by the core; the next tick retries.
        let began = Instant::now();
        let mut tick = Timed::new(calls.renew(lifecycle.is_draining()));
        let renewed = (&mut tick).await;
        // The tick runs on the frames' runtime: its longest poll is how long it held a worker
        // thread that frames were waiting for (docs/benchmarks.md, the periodic stall). CPU
        // time, so a busy machine's preemption does not count as the tick's.
        debug!(
            took_us = micros(began.elapsed()),
            busy_us = micros(tick.busy),
            longest_poll_us = micros(tick.longest),
            polls = tick.polls,
            live = calls.live().len(),
            ok = renewed.is_ok(),
            "renewal tick"
        );
        // Callers silent for two polls leave the waiting line even when nobody visits it.
        let _ = calls.sweep_line().await;
    }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// This thread's CPU time: what a poll cost, without the time the thread was preempted.
fn thread_cpu() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    Duration::new(
        u64::try_from(t.tv_sec).unwrap_or(0),
        u32::try_from(t.tv_nsec).unwrap_or(0),
    )
}

/// A future with the CPU time spent inside its polls: the sum, the longest and how many.
struct Timed<F> {
    inner: Pin<Box<F>>,
    busy: Duration,
    longest: Duration,
    polls: u32,
}

impl<F: Future> Timed<F> {
    fn new(inner: F) -> Self {
        Self {
            inner: Box::pin(inner),
            busy: Duration::ZERO,
            longest: Duration::ZERO,
            polls: 0,
        }
    }
}

impl<F: Future> Future for &mut Timed<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let began = thread_cpu();
        let poll = self.inner.as_mut().poll(cx);
        let spent = thread_cpu().saturating_sub(began);
        self.busy += spent;
        self.longest = self.longest.max(spent);
        self.polls += 1;
        poll
    }
}
