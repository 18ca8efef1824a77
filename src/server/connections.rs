//! Bounds the connections a replica holds (`MAX_CONNECTIONS`, docs/reference.md#connections): a
//! permit per accepted socket, held for as long as the socket lives, upgraded WebSockets included.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::workers::Placed;

/// Past `MAX_CONNECTIONS`, this many more connections are accepted only to be answered at once:
/// `/healthz` 200 (the process is alive: a liveness probe must not restart a replica full of
/// calls), anything else 503 (`/readyz` included, so a balancer sends elsewhere). Past these too,
/// new connections wait in the listen backlog until one closes.
pub const OVERFLOW_CONNECTIONS: usize = 32;

/// An overflow connection's request must be in this fast: a probe sends it at once, and an idle
/// socket must not hold one of the few overflow places for long.
pub(super) const OVERFLOW_HEADER_TIMEOUT: Duration = Duration::from_secs(5);

/// How an accepted connection is served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Place {
    /// Within `MAX_CONNECTIONS`: the full router.
    Served,
    /// Over it: one request, answered from the overflow router, then closed.
    Overflow,
}

/// One accepted connection's place; dropping it frees the place.
#[derive(Debug)]
pub(super) struct Permit {
    place: Place,
    _permit: OwnedSemaphorePermit,
}

impl Permit {
    pub(super) fn place(&self) -> Place {
        self.place
    }
}

/// The served and overflow places of one listener.
pub(super) struct ConnectionLimit {
    served: Arc<Semaphore>,
    overflow: Arc<Semaphore>,
}

impl ConnectionLimit {
    pub(super) fn new(max: usize) -> Self {
        Self {
            served: Arc::new(Semaphore::new(max)),
            overflow: Arc::new(Semaphore::new(OVERFLOW_CONNECTIONS)),
        }
    }

    /// Waits for a free place (served first, else overflow): the accept loop accepts only with
    /// one in hand, so past both bounds connections wait in the kernel's backlog.
    pub(super) async fn place(&self) -> Permit {
        if let Some(permit) = self.try_served() {
            return permit;
        }
        if let Ok(permit) = self.overflow.clone().try_acquire_owned() {
            return overflow(permit);
        }
        tokio::select! {
            Ok(permit) = self.served.clone().acquire_owned() => served(permit),
            Ok(permit) = self.overflow.clone().acquire_owned() => overflow(permit),
        }
    }

    /// An overflow place taken before the connection came becomes a served one if one has freed
    /// meanwhile.
    pub(super) fn settle(&self, permit: Permit) -> Permit {
        match permit.place {
            Place::Served => permit,
            Place::Overflow => self.try_served().unwrap_or(permit),
        }
    }

    fn try_served(&self) -> Option<Permit> {
        self.served.clone().try_acquire_owned().ok().map(served)
    }
}

fn served(permit: OwnedSemaphorePermit) -> Permit {
    Permit {
        place: Place::Served,
        _permit: permit,
    }
}

fn overflow(permit: OwnedSemaphorePermit) -> Permit {
    Permit {
        place: Place::Overflow,
        _permit: permit,
    }
}

/// A socket that holds its place, and its I/O thread's count, until it is dropped: hyper hands the
/// same I/O to an upgraded WebSocket, so a call's stream keeps both for the whole call.
pub(super) struct Counted<S> {
    inner: S,
    _permit: Permit,
    _placed: Placed,
}

impl<S> Counted<S> {
    pub(super) fn new(inner: S, permit: Permit, placed: Placed) -> Self {
        Self {
            inner,
            _permit: permit,
            _placed: placed,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Counted<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Counted<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn past_the_bound_places_are_overflow_then_none_until_one_frees() {
        let limit = ConnectionLimit::new(2);
        let served: Vec<_> = [limit.place().await, limit.place().await].into();
        assert!(served.iter().all(|p| p.place() == Place::Served));
        let mut overflow = Vec::new();
        for _ in 0..OVERFLOW_CONNECTIONS {
            overflow.push(limit.place().await);
        }
        assert!(overflow.iter().all(|p| p.place() == Place::Overflow));
        let waiting = tokio::time::timeout(Duration::from_millis(50), limit.place()).await;
        assert!(waiting.is_err(), "a place past both bounds");

        drop(served);
        let settled = limit.settle(overflow.pop().unwrap());
        assert_eq!(settled.place(), Place::Served);
    }
}
