//! The accept loop's listener: accepts each socket non-blocking and unregistered, so the I/O thread
//! that serves it (`workers`) registers it on its own reactor, once; and how failed accepts are logged.
//!
//! Why not `tokio::net::TcpListener::accept`: it registers every accepted socket on the accepting
//! thread's reactor, which `into_std` then unregisters before the I/O thread registers it again:
//! two `epoll_ctl` calls per connection for nothing, an eighth of a webhook's system calls
//! (docs/benchmarks.md, sixth round).

use std::io;
use std::net::TcpStream;
use std::os::fd::AsFd;
use std::time::Duration;

use rustix::net::SocketFlags;
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio::time::Instant;
use tracing::{info, warn};

/// While accepts keep failing, how often the log says so again.
const FAILURES_REPORTED_EVERY: Duration = Duration::from_secs(10);

pub(super) struct Acceptor {
    listener: AsyncFd<std::net::TcpListener>,
}

impl Acceptor {
    /// Takes over `listener` (its socket stays non-blocking) onto this thread's reactor.
    pub(super) fn new(listener: tokio::net::TcpListener) -> io::Result<Self> {
        // `with_interest` is deprecated for `T`s that could swap their descriptor; a std listener
        // owns its one descriptor for life, which is all the `unsafe` `register_with_interest`
        // asks, and this crate forbids `unsafe`.
        #[allow(deprecated)]
        let listener = AsyncFd::with_interest(listener.into_std()?, Interest::READABLE)?;
        Ok(Self { listener })
    }

    /// The next connection, non-blocking and close-on-exec, as `accept4` gives it.
    pub(super) async fn accept(&self) -> io::Result<TcpStream> {
        loop {
            let mut ready = self.listener.readable().await?;
            match ready.try_io(|listener| {
                rustix::net::accept_with(
                    listener.get_ref().as_fd(),
                    SocketFlags::NONBLOCK | SocketFlags::CLOEXEC,
                )
                .map_err(io::Error::from)
            }) {
                Ok(accepted) => return accepted.map(TcpStream::from),
                // Nothing to accept after all (a stale readiness): wait for the next one.
                Err(_would_block) => {}
            }
        }
    }
}

/// A run of failed accepts (out of file descriptors and the like), as the log tells it: the first
/// failure at once, then a line every [`FAILURES_REPORTED_EVERY`] with the count while they last,
/// and one at the first accept after that long without a failure. At the limit, accepts fail and
/// succeed by turns as sockets close; a line per retry (twenty a second) or per turn would bury
/// everything else in the log.
#[derive(Default)]
pub(super) struct Failures {
    run: Option<Run>,
}

struct Run {
    since: Instant,
    last_failure: Instant,
    failed: u64,
    last_reported: Instant,
    failed_since_report: u64,
}

impl Failures {
    pub(super) fn failed(&mut self, err: &io::Error) {
        let now = Instant::now();
        let Some(run) = &mut self.run else {
            warn!(error = %err, "accept failed; retrying every 50 ms until it works");
            self.run = Some(Run {
                since: now,
                last_failure: now,
                failed: 1,
                last_reported: now,
                failed_since_report: 0,
            });
            return;
        };
        run.failed += 1;
        run.failed_since_report += 1;
        run.last_failure = now;
        if now - run.last_reported >= FAILURES_REPORTED_EVERY {
            warn!(
                error = %err,
                failed = run.failed_since_report,
                failing_for_secs = (now - run.since).as_secs(),
                "accept still failing"
            );
            run.last_reported = now;
            run.failed_since_report = 0;
        }
    }

    pub(super) fn accepted(&mut self) {
        let Some(run) = &self.run else {
            return;
        };
        if run.last_failure.elapsed() >= FAILURES_REPORTED_EVERY {
            info!(
                failed = run.failed,
                failed_for_secs = (run.last_failure - run.since).as_secs(),
                "accepting again"
            );
            self.run = None;
        }
    }
}
