//! The replica's I/O threads: one single-threaded tokio runtime per core, each owning the sockets
//! handed to it for their whole life (webhook or media stream), with its own reactor and timers.
//!
//! Why not tokio's work-stealing runtime for the frames: a 20 ms frame wakes one socket's task, and
//! on the multi-threaded scheduler that wake may unpark an idle worker (a futex call) and move the
//! task between threads; a socket that stays on one thread with its own reactor pays neither
//! (docs/benchmarks.md, "Below the floors"). Calls last minutes and are alike, so placing each new
//! connection on the least-loaded thread keeps the threads even without stealing.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::JoinHandle;

use tokio::runtime::Handle;
use tokio_util::sync::CancellationToken;
use tracing::warn;

/// A running set of I/O threads.
pub(super) struct Workers {
    workers: Vec<Worker>,
    stop: CancellationToken,
    threads: Vec<JoinHandle<()>>,
}

struct Worker {
    handle: Handle,
    /// Connections this thread serves now; a new one goes to the thread with the fewest.
    load: Arc<AtomicUsize>,
}

/// Held by a connection's task for its life: the thread's load counts it until dropped.
pub(super) struct Placed {
    load: Arc<AtomicUsize>,
}

impl Drop for Placed {
    fn drop(&mut self) {
        self.load.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Workers {
    /// Starts one thread per core the process may use (`available_parallelism` honours a
    /// container's CPU quota), at least one.
    pub(super) fn start() -> io::Result<Self> {
        let count = std::thread::available_parallelism().map_or(1, usize::from);
        Self::start_n(count)
    }

    pub(super) fn start_n(count: usize) -> io::Result<Self> {
        let stop = CancellationToken::new();
        let mut workers = Vec::with_capacity(count);
        let mut threads = Vec::with_capacity(count);
        for index in 0..count.max(1) {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            workers.push(Worker {
                handle: runtime.handle().clone(),
                load: Arc::new(AtomicUsize::new(0)),
            });
            let stop = stop.clone();
            let thread = std::thread::Builder::new()
                .name(format!("io-{index}"))
                // Dropping the runtime after the stop drops whatever it still holds (the drain has
                // ended every stream by then), closing those sockets.
                .spawn(move || runtime.block_on(stop.cancelled()))?;
            threads.push(thread);
        }
        Ok(Self {
            workers,
            stop,
            threads,
        })
    }

    /// The least-loaded thread's runtime, and the token that counts the connection placed there.
    pub(super) fn place(&self) -> (&Handle, Placed) {
        let worker = self
            .workers
            .iter()
            .min_by_key(|worker| worker.load.load(Ordering::Relaxed))
            .unwrap_or_else(|| unreachable!("start_n starts at least one thread"));
        worker.load.fetch_add(1, Ordering::Relaxed);
        (
            &worker.handle,
            Placed {
                load: worker.load.clone(),
            },
        )
    }

    /// Stops every thread and waits for them to end.
    pub(super) async fn stop(mut self) {
        self.stop.cancel();
        let threads = std::mem::take(&mut self.threads);
        let joined = tokio::task::spawn_blocking(move || {
            threads
                .into_iter()
                .filter_map(|thread| thread.join().err())
                .count()
        })
        .await;
        if !matches!(joined, Ok(0)) {
            warn!("an I/O thread ended by panicking");
        }
    }
}

impl Drop for Workers {
    /// A `serve` that returns early (an error, a panic) still lets its threads go.
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn connections_go_to_the_least_loaded_thread_and_leave_it_when_done() {
        let workers = Workers::start_n(2).expect("threads");
        let (first, a) = workers.place();
        let first = first.id();
        let (second, b) = workers.place();
        assert_ne!(
            first,
            second.id(),
            "the second connection goes to the idle thread"
        );
        drop(a);
        let (third, _c) = workers.place();
        assert_eq!(
            first,
            third.id(),
            "the thread whose connection left is the idler one"
        );
        drop(b);
        workers.stop().await;
    }

    #[tokio::test]
    async fn a_task_placed_on_a_thread_runs_there_and_stop_ends_the_threads() {
        let workers = Workers::start_n(1).expect("threads");
        let (handle, placed) = workers.place();
        let name = handle
            .spawn(async move {
                let _placed = placed;
                std::thread::current().name().map(str::to_owned)
            })
            .await
            .expect("task");
        assert_eq!(name.as_deref(), Some("io-0"));
        workers.stop().await;
    }
}
