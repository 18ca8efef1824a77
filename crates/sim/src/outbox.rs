//! A stream's bytes on their way out: written at once when nothing waits (one write per frame on
//! plain TCP), queued up to a bound when the socket is full, and drained and flushed by a future.

use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, Waker, ready};

use tokio::io::{AsyncRead, AsyncWrite};

use super::error::SimError;

/// The write half of one stream and what it has not taken yet.
pub struct Outbox<W> {
    wr: W,
    /// Bytes the writer has not taken yet (empty unless the server falls behind).
    pending: Vec<u8>,
    /// Bytes the writer took but may still hold (a TLS session's records when the socket was
    /// full): they must be flushed, or the frames stall in the session.
    unflushed: bool,
    /// Past this many queued bytes the server is taken to have stopped reading.
    max_pending: usize,
}

impl<W: WriteNow> Outbox<W> {
    pub fn new(wr: W, max_pending: usize) -> Self {
        Self {
            wr,
            pending: Vec::new(),
            unflushed: false,
            max_pending,
        }
    }

    /// Writes `bytes` now if the writer takes them, else queues them behind what already waits.
    /// Never waits and never asks for a wake-up: [`Outbox::drain`] does that when it is polled
    /// (the caller's select loop polls it as soon as anything is pending).
    pub fn send(&mut self, bytes: &[u8]) -> Result<(), SimError> {
        let mut rest = bytes;
        if self.pending.is_empty() {
            match self.wr.write_now(bytes) {
                Ok((n, holds)) => {
                    rest = &bytes[n..];
                    self.unflushed |= holds;
                }
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => {}
                Err(err) => return Err(SimError::io("stream")(err)),
            }
        }
        self.pending.extend_from_slice(rest);
        if self.pending.len() > self.max_pending {
            return Err(SimError::SendStalled(self.max_pending));
        }
        Ok(())
    }

    /// Whether [`Outbox::drain`] has work: bytes queued, or taken but not flushed.
    pub fn busy(&self) -> bool {
        !self.pending.is_empty() || self.unflushed
    }

    /// Writes what is queued, then flushes; ready once the writer has it all. Cancel-safe: all its
    /// progress is kept in the outbox, so a select loop may drop it and call it again.
    pub async fn drain(&mut self) -> Result<(), SimError> {
        poll_fn(|cx| self.poll_drain(cx))
            .await
            .map_err(SimError::io("stream"))
    }

    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.pending.is_empty() {
            let n = ready!(Pin::new(&mut self.wr).poll_write(cx, &self.pending))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.pending.drain(..n);
            self.unflushed = true;
        }
        if self.unflushed {
            ready!(Pin::new(&mut self.wr).poll_flush(cx))?;
            self.unflushed = false;
        }
        Poll::Ready(Ok(()))
    }
}

/// A write half the outbox can hand bytes to at once, without waiting and without a wake-up.
pub trait WriteNow: AsyncWrite + Unpin {
    /// Writes what the writer takes of `bytes` now (`WouldBlock`, or 0: nothing), and whether it
    /// may still hold some of what it took (then it must be flushed).
    fn write_now(&mut self, bytes: &[u8]) -> io::Result<(usize, bool)>;
}

/// The plain socket: `try_write` is one readiness check and at most one syscall, with no task
/// budget or waker involved: the benchmarks' load generator runs on it.
impl WriteNow for tokio::net::tcp::WriteHalf<'_> {
    fn write_now(&mut self, bytes: &[u8]) -> io::Result<(usize, bool)> {
        self.as_ref().try_write(bytes).map(|n| (n, false))
    }
}

/// A TLS stream's write half (`tokio::io::split`).
impl<T: AsyncRead + AsyncWrite> WriteNow for tokio::io::WriteHalf<T> {
    fn write_now(&mut self, bytes: &[u8]) -> io::Result<(usize, bool)> {
        poll_now(self, bytes)
    }
}

/// Any writer, polled once with a no-op waker: a writer that is not ready has its interest
/// registered again, with the task's own waker, when [`Outbox::drain`] polls it. Then flushed the
/// same way, since a TLS session may keep records it took when the socket was full.
pub fn poll_now<W: AsyncWrite + Unpin>(wr: &mut W, bytes: &[u8]) -> io::Result<(usize, bool)> {
    let mut cx = Context::from_waker(Waker::noop());
    let mut at = 0;
    while at < bytes.len() {
        match Pin::new(&mut *wr).poll_write(&mut cx, &bytes[at..]) {
            Poll::Ready(Ok(0)) => return Err(io::ErrorKind::WriteZero.into()),
            Poll::Ready(Ok(n)) => at += n,
            Poll::Ready(Err(err)) => return Err(err),
            Poll::Pending => break,
        }
    }
    if at == 0 {
        return Ok((0, false));
    }
    match Pin::new(&mut *wr).poll_flush(&mut cx) {
        Poll::Ready(Ok(())) => Ok((at, false)),
        Poll::Ready(Err(err)) => Err(err),
        Poll::Pending => Ok((at, true)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, BufWriter, DuplexStream};

    impl WriteNow for DuplexStream {
        fn write_now(&mut self, bytes: &[u8]) -> io::Result<(usize, bool)> {
            poll_now(self, bytes)
        }
    }

    impl WriteNow for BufWriter<DuplexStream> {
        fn write_now(&mut self, bytes: &[u8]) -> io::Result<(usize, bool)> {
            poll_now(self, bytes)
        }
    }

    #[tokio::test]
    async fn writes_at_once_queues_when_full_and_drains_in_order() {
        // A pipe with a small buffer stands in for a socket whose peer reads slowly.
        let (near, mut far) = tokio::io::duplex(64);
        let mut out = Outbox::new(near, 1024);
        out.send(&[1; 40]).unwrap();
        assert!(!out.busy(), "a writer with room takes the bytes at once");
        out.send(&[2; 40]).unwrap();
        assert!(out.busy(), "what did not fit waits");
        out.send(&[3; 40]).unwrap();
        let reader = tokio::spawn(async move {
            let mut got = vec![0u8; 120];
            far.read_exact(&mut got).await.unwrap();
            got
        });
        out.drain().await.unwrap();
        assert!(!out.busy());
        let got = reader.await.unwrap();
        let want: Vec<u8> = [[1u8; 40], [2; 40], [3; 40]].concat();
        assert_eq!(got, want);
    }

    #[tokio::test]
    async fn what_the_writer_took_but_holds_is_flushed() {
        // A BufWriter keeps what it took until flushed, as a TLS session keeps its records.
        let (near, mut far) = tokio::io::duplex(16);
        let mut out = Outbox::new(BufWriter::with_capacity(256, near), 1024);
        out.send(&[7; 40]).unwrap();
        assert!(out.busy(), "taken, but not yet on the wire");
        out.send(&[8; 40]).unwrap();
        let reader = tokio::spawn(async move {
            let mut got = vec![0u8; 80];
            far.read_exact(&mut got).await.unwrap();
            got
        });
        out.drain().await.unwrap();
        assert!(!out.busy());
        assert_eq!(reader.await.unwrap(), [[7u8; 40], [8; 40]].concat());
    }

    #[tokio::test]
    async fn a_reader_that_stopped_fails_the_send_past_the_bound() {
        let (near, _far) = tokio::io::duplex(16);
        let mut out = Outbox::new(near, 100);
        out.send(&[0; 60]).unwrap();
        out.send(&[0; 50]).unwrap();
        assert!(matches!(
            out.send(&[0; 20]),
            Err(SimError::SendStalled(100))
        ));
    }
}
