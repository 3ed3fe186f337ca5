//! [`SharedTcp`]: the TCP stream under an HTTP connection, shared between
//! hyper, which reads and writes it (through this type, directly or under
//! TLS), and the connection's probe, which holds only a `Weak` to it.
//!
//! Why: hyper learns that the server closed an idle connection only when
//! its connection task next reads, and tokio lets that task read only
//! after its I/O driver has polled for events. Until then the kernel
//! knows of the server's FIN and hyper does not, and a request sent in
//! that window is written into a dead connection, where it can be neither
//! answered nor safely sent again. The probe asks the kernel (the TCP
//! manager's non-blocking `poll(2)`), so the pool and `send_with_retry`
//! see the close before a byte is written.
//!
//! Invariants kept: the probe never keeps the socket open (it holds a
//! `Weak`; the socket closes when hyper drops its side); reads and writes
//! are tokio's own (`poll_*_ready`, then `try_*`/`try_io`), so readiness
//! is cleared and re-armed exactly as `TcpStream` does it (a short read
//! clears it too); a read fills hyper's buffer without zeroing it first.

use std::io;
use std::mem::MaybeUninit;
use std::net::Shutdown;
use std::pin::Pin;
use std::sync::{Arc, Weak};
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
use tokio::net::TcpStream;

/// hyper's side of the stream.
pub(super) struct SharedTcp(Arc<TcpStream>);

impl SharedTcp {
    /// The stream for hyper, and the probe's handle to it.
    pub(super) fn new(stream: TcpStream) -> (Self, Weak<TcpStream>) {
        let stream = Arc::new(stream);
        let probe = Arc::downgrade(&stream);
        (Self(stream), probe)
    }
}

/// Whether the socket is gone (hyper dropped it) or the kernel says the
/// peer closed or reset it. Bytes waiting unread do not count: over TLS
/// they may be a session ticket, and over plain HTTP hyper reports them
/// itself.
pub(super) fn peer_closed(socket: &Weak<TcpStream>) -> bool {
    match socket.upgrade() {
        None => true,
        Some(stream) => crate::managers::tcp::socket_broken(&stream, false),
    }
}

/// Reads with `recv` straight into the unfilled, possibly uninitialised,
/// part of `buf` (nothing is zeroed first) and counts what it reported as
/// filled. Returns that count.
///
/// # Safety
/// `recv` must write the first `n` bytes of the slice it is given, `n`
/// being what it returns, and must de-initialise none.
unsafe fn fill(
    buf: &mut ReadBuf<'_>,
    recv: impl FnOnce(&mut [MaybeUninit<u8>]) -> io::Result<usize>,
) -> io::Result<usize> {
    // SAFETY: `recv` de-initialises no byte (the caller's promise).
    let unfilled = unsafe { buf.unfilled_mut() };
    let n = recv(unfilled)?;
    // SAFETY: `recv` initialised the first `n` unfilled bytes (the
    // caller's promise); `advance` checks that `n` fits.
    unsafe { buf.assume_init(n) };
    buf.advance(n);
    Ok(n)
}

impl AsyncRead for SharedTcp {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            ready!(self.0.poll_read_ready(cx))?;
            let room = buf.remaining();
            // A read that filled less than the room it had drained the
            // socket (epoll is edge-triggered): it is reported to `try_io`
            // as `WouldBlock`, which clears the readiness, so that the
            // next read waits for the next event instead of asking the
            // kernel once more for nothing, as tokio's own `TcpStream`
            // does. The bytes it read are in `buf` already.
            let mut drained = false;
            let read = self.0.try_io(Interest::READABLE, || {
                // SAFETY: socket2's `recv` writes only the bytes it
                // reports, and de-initialises none.
                let n = unsafe { fill(buf, |b| socket2::SockRef::from(&*self.0).recv(b)) }?;
                if n > 0 && n < room {
                    drained = true;
                    return Err(io::ErrorKind::WouldBlock.into());
                }
                Ok(n)
            });
            return match read {
                Ok(_) => Poll::Ready(Ok(())),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock && drained => Poll::Ready(Ok(())),
                // A spurious wake-up: `try_io` cleared the readiness, so
                // the next `poll_read_ready` registers for the next event.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => Poll::Ready(Err(e)),
            };
        }
    }
}

impl AsyncWrite for SharedTcp {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        loop {
            ready!(self.0.poll_write_ready(cx))?;
            match self.0.try_write(buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                result => return Poll::Ready(result),
            }
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        loop {
            ready!(self.0.poll_write_ready(cx))?;
            match self.0.try_write_vectored(bufs) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                result => return Poll::Ready(result),
            }
        }
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Writes go straight to the socket: nothing is buffered here.
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(socket2::SockRef::from(&*self.0).shutdown(Shutdown::Write))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The only unsafe code here, without a socket, so that miri can run
    /// it: bytes counted filled are exactly the ones written, and a
    /// failed read fills nothing.
    #[test]
    fn a_read_counts_filled_exactly_the_bytes_it_wrote() {
        let mut storage = [MaybeUninit::<u8>::uninit(); 8];
        let mut buf = ReadBuf::uninit(&mut storage);
        // SAFETY: each fake `recv` writes the bytes it reports.
        let n = unsafe {
            fill(&mut buf, |b| {
                for (i, byte) in b.iter_mut().take(3).enumerate() {
                    byte.write(i as u8 + 1);
                }
                Ok(3)
            })
        };
        assert_eq!(n.unwrap(), 3);
        assert_eq!(buf.filled(), &[1, 2, 3]);
        // SAFETY: as above.
        let n = unsafe {
            fill(&mut buf, |b| {
                assert_eq!(b.len(), 5, "the rest of the room, after what was filled");
                b[0].write(4);
                Ok(1)
            })
        };
        assert_eq!(n.unwrap(), 1);
        assert_eq!(buf.filled(), &[1, 2, 3, 4]);
        // SAFETY: writes nothing, reports nothing.
        let failed = unsafe { fill(&mut buf, |_| Err(io::ErrorKind::WouldBlock.into())) };
        assert_eq!(failed.unwrap_err().kind(), io::ErrorKind::WouldBlock);
        assert_eq!(buf.filled(), &[1, 2, 3, 4]);
        assert_eq!(buf.remaining(), 4);
    }
}
