//! The accept loop's listener: accepts each socket non-blocking and unregistered, so the I/O thread
//! that serves it (`workers`) registers it on its own reactor, once.
//!
//! Why not `tokio::net::TcpListener::accept`: it registers every accepted socket on the accepting
//! thread's reactor, which `into_std` then unregisters before the I/O thread registers it again:
//! two `epoll_ctl` calls per connection for nothing, an eighth of a webhook's system calls
//! (docs/benchmarks.md, sixth round).

use std::io;
use std::net::TcpStream;
use std::os::fd::AsFd;

use rustix::net::SocketFlags;
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

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
