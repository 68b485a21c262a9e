//! Lingering close, as nginx does it: a server that answers before reading the whole request
//! (a 413 for a body over the limit, a 401 before the upload) and then closes with unread
//! bytes in its receive buffer makes the kernel send a reset, and the reset can destroy the
//! answer before the client reads it. So after hyper shuts a connection down, the rest of
//! what the client sends is read and thrown away, within a [`Linger`] allowance of time and
//! bytes (`--linger-ms`, `--linger-bytes`), before the socket closes.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Sleep;

/// How long, and how much, a closing connection keeps reading.
#[derive(Clone, Copy, Debug)]
pub struct Linger {
    /// Longest a closing connection keeps reading.
    pub time: Duration,
    /// Most bytes it reads and discards.
    pub bytes: usize,
}

/// A TCP stream whose shutdown lingers; everything else passes through.
pub struct Lingering {
    inner: TcpStream,
    linger: Linger,
    closing: Option<Closing>,
}

struct Closing {
    deadline: Pin<Box<Sleep>>,
    left: usize,
    write_side_shut: bool,
}

impl Lingering {
    /// Wraps an accepted connection.
    pub fn new(inner: TcpStream, linger: Linger) -> Self {
        Self {
            inner,
            linger,
            closing: None,
        }
    }
}

impl AsyncRead for Lingering {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Lingering {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    /// Sends our FIN (the answer is complete), then drains the client until it closes too,
    /// or the time or byte allowance runs out.
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let linger = this.linger;
        let closing = this.closing.get_or_insert_with(|| Closing {
            deadline: Box::pin(tokio::time::sleep(linger.time)),
            left: linger.bytes,
            write_side_shut: false,
        });
        if !closing.write_side_shut {
            ready!(Pin::new(&mut this.inner).poll_shutdown(cx))?;
            closing.write_side_shut = true;
        }
        let mut scratch = [0u8; 8192];
        loop {
            if closing.left == 0 || closing.deadline.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Ok(()));
            }
            let mut buf = ReadBuf::new(&mut scratch);
            match Pin::new(&mut this.inner).poll_read(cx, &mut buf) {
                Poll::Ready(Ok(())) if buf.filled().is_empty() => return Poll::Ready(Ok(())),
                Poll::Ready(Ok(())) => {
                    closing.left = closing.left.saturating_sub(buf.filled().len());
                }
                // The client is gone: nothing left to protect.
                Poll::Ready(Err(_)) => return Poll::Ready(Ok(())),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}
