//! The client connection's idle timeout (ELB's `idle_timeout.timeout_seconds`): the
//! connection is closed when no byte has been read or written for that long, on
//! keep-alive connections between requests and on upgraded (WebSocket) ones alike.
//! While a request on the connection waits for its target the connection is not
//! idle: the target timeout answers that request with a 504 instead.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// The `AsyncWrite` methods a wrapper with an `inner` field passes straight on
/// (flush, shutdown, whether writes are vectored).
macro_rules! delegate_write_rest {
    () => {
        fn is_write_vectored(&self) -> bool {
            self.inner.is_write_vectored()
        }

        fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.get_mut().inner).poll_flush(cx)
        }

        fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
        }
    };
}
pub(crate) use delegate_write_rest;

/// An I/O object that fails with `TimedOut` once it has been idle for `idle`.
#[derive(Debug)]
pub struct IdleIo<T> {
    inner: T,
    idle: Duration,
    last: Instant,
    sleep: Pin<Box<Sleep>>,
    busy: Arc<AtomicUsize>,
}

impl<T> IdleIo<T> {
    /// `busy` counts the connection's requests in flight (see [`Busy`]).
    pub fn new(inner: T, idle: Duration, busy: Arc<AtomicUsize>) -> IdleIo<T> {
        let last = Instant::now();
        IdleIo {
            inner,
            idle,
            last,
            sleep: Box::pin(tokio::time::sleep_until(last + idle)),
            busy,
        }
    }

    /// The wrapped I/O object.
    pub fn get_ref(&self) -> &T {
        &self.inner
    }

    /// Starts the idle clock anew with limit `idle` (a connection taken from a pool
    /// for a listener of its own timeout).
    pub fn reset(&mut self, idle: Duration) {
        self.idle = idle;
        self.touch();
    }

    /// Counts now as the last activity.
    pub fn touch(&mut self) {
        self.last = Instant::now();
    }

    /// Activity on a ready result; on a pending one, the idle check.
    fn after<R>(&mut self, cx: &mut Context<'_>, r: Poll<io::Result<R>>) -> Poll<io::Result<R>> {
        match r {
            Poll::Ready(r) => {
                self.touch();
                Poll::Ready(r)
            }
            Poll::Pending => self.poll_idle(cx).map(Err),
        }
    }

    /// Ready with an error once the deadline (last activity + idle) has passed; the
    /// timer is re-armed lazily, so activity costs one clock read, not a timer reset.
    fn poll_idle(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        loop {
            if self.sleep.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            if self.busy.load(Ordering::Relaxed) > 0 {
                self.touch();
            }
            let deadline = self.last + self.idle;
            if Instant::now() >= deadline {
                return Poll::Ready(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("connection idle for {} s", self.idle.as_secs()),
                ));
            }
            self.sleep.as_mut().reset(deadline);
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for IdleIo<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_read(cx, buf);
        this.after(cx, r)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for IdleIo<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.after(cx, r)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.after(cx, r)
    }

    delegate_write_rest!();
}

/// Marks a request in flight on a connection for as long as it lives.
#[derive(Debug)]
pub struct Busy(Arc<AtomicUsize>);

impl Busy {
    pub fn new(count: &Arc<AtomicUsize>) -> Busy {
        count.fetch_add(1, Ordering::Relaxed);
        Busy(count.clone())
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A read that sees no byte for the idle time fails with TimedOut; activity
    /// before that keeps the connection open.
    #[tokio::test(start_paused = true)]
    async fn idle_read_times_out() {
        let (a, mut b) = tokio::io::duplex(64);
        let busy = Arc::new(AtomicUsize::new(0));
        let mut io = IdleIo::new(a, Duration::from_secs(10), busy.clone());
        tokio::time::advance(Duration::from_secs(6)).await;
        b.write_all(b"x").await.unwrap();
        let mut buf = [0u8; 1];
        io.read_exact(&mut buf).await.unwrap();
        let start = Instant::now();
        let err = io.read_exact(&mut buf).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert_eq!(start.elapsed(), Duration::from_secs(10));
    }

    /// A connection with a request in flight is not idle.
    #[tokio::test(start_paused = true)]
    async fn busy_is_not_idle() {
        let (a, mut b) = tokio::io::duplex(64);
        let busy = Arc::new(AtomicUsize::new(0));
        let mut io = IdleIo::new(a, Duration::from_secs(10), busy.clone());
        let request = Busy::new(&busy);
        let mut buf = [0u8; 1];
        let read = tokio::time::timeout(Duration::from_secs(30), io.read_exact(&mut buf)).await;
        assert!(read.is_err(), "still waiting, not failed");
        drop(request);
        b.write_all(b"x").await.unwrap();
        io.read_exact(&mut buf).await.unwrap();
    }
}
