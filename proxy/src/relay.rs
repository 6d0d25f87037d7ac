//! Relaying one proxied TCP connection both ways until both sides are done.
//!
//! Small messages go through a user-space buffer (one read, one write). On Linux, once a
//! direction shows bulk data (a read fills the buffer) it switches to splice(2): socket → pipe →
//! socket, so the bytes never enter user space (haproxy's "splice-auto"). Each direction's
//! end of data becomes a write shutdown on the other socket (half-close), and an error on either
//! side resets both, so each peer learns the connection broke rather than seeing a clean end.
//! Buffering is bounded per direction (the buffer, or the pipe), so a client that never reads
//! holds back only its own backend.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{ReadHalf, WriteHalf};

/// The user-space buffer of a direction before it turns to splice (and for good elsewhere).
const BUF: usize = 16 * 1024;

/// Bytes moved: (client → backend, backend → client).
pub(crate) type Moved = (u64, u64);

/// Relays between `client` and `backend` until both directions have ended, or one fails (then
/// both are reset).
pub(crate) async fn relay(client: &mut TcpStream, backend: &mut TcpStream) -> io::Result<Moved> {
    relay_with(client, backend, cfg!(target_os = "linux")).await
}

/// [`relay`], with splice(2) allowed or not (benchmarks compare).
async fn relay_with(client: &mut TcpStream, backend: &mut TcpStream, splice: bool) -> io::Result<Moved> {
    let result = {
        let (client_read, client_write) = client.split();
        let (backend_read, backend_write) = backend.split();
        let one_ended = AtomicBool::new(false);
        tokio::try_join!(
            one_way(client_read, backend_write, splice, &one_ended),
            one_way(backend_read, client_write, splice, &one_ended)
        )
    };
    if result.is_err() {
        // Pass the break on: a reset to whichever side did not fail (harmless on the other).
        let _ = client.set_zero_linger();
        let _ = backend.set_zero_linger();
    }
    result
}

/// Copies `from` → `to` until `from` ends, then shuts down `to`'s write side, unless the other
/// direction has already ended: then both sockets are about to close, which ends data as well
/// (both were read to their end, so the close is a FIN, not a reset), and a syscall is saved.
///
/// Reads go through tokio's `AsyncRead`, which takes a short read to mean the socket is drained
/// and waits for the next readiness event rather than trying a read bound to fail: one `recv`
/// per message instead of two.
async fn one_way(
    mut from: ReadHalf<'_>,
    mut to: WriteHalf<'_>,
    splice: bool,
    one_ended: &AtomicBool,
) -> io::Result<u64> {
    let mut buf = buffers::Buffer::take();
    let mut total = 0u64;
    #[cfg(target_os = "linux")]
    let mut try_splice = splice;
    #[cfg(not(target_os = "linux"))]
    let _ = splice;
    loop {
        buf.clear();
        let n = from.read_buf(&mut *buf).await?;
        if n == 0 {
            break;
        }
        to.write_all(&buf[..n]).await?;
        total += n as u64;
        #[cfg(target_os = "linux")]
        if n == BUF && try_splice {
            // Bulk data: the rest goes through a pipe, if one can be had.
            match splice::Pipe::new() {
                Ok(pipe) => match splice::relay(&pipe, from.as_ref(), to.as_ref()).await? {
                    splice::Outcome::Done(spliced) => {
                        total += spliced;
                        break;
                    }
                    splice::Outcome::Unsupported => try_splice = false,
                },
                Err(e) => tracing::debug!(error = %e, "no pipe for splice; copying"),
            }
        }
    }
    if !one_ended.swap(true, Ordering::AcqRel) {
        shutdown_write(to.as_ref())?;
    }
    Ok(total)
}

/// Half-close: the peer reads the end of data; its own direction carries on. A peer already
/// gone (`ENOTCONN`) is not an error here: its direction reports that.
fn shutdown_write(to: &TcpStream) -> io::Result<()> {
    match socket_shutdown_write(to) {
        Err(e) if e.kind() == io::ErrorKind::NotConnected => Ok(()),
        other => other,
    }
}

fn socket_shutdown_write(to: &TcpStream) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: shutdown(2) on a descriptor `to` owns and keeps open for the call.
    if unsafe { libc::shutdown(to.as_raw_fd(), libc::SHUT_WR) } == 0 { Ok(()) } else { Err(io::Error::last_os_error()) }
}

mod buffers {
    //! Relay buffers kept per thread for reuse. Without them each connection costs two 16 KiB
    //! allocations and frees, and allocations that large make glibc consolidate its small-block
    //! bins each time; a data thread's connections all live on that thread, so its pool serves
    //! them without locks.
    use super::BUF;
    use std::cell::RefCell;

    /// Buffers a thread keeps (at most 4 MiB).
    const KEEP: usize = 256;

    thread_local! {
        static FREE: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
    }

    /// An empty buffer of [`BUF`] bytes' capacity, returned to its thread's pool when dropped.
    pub(super) struct Buffer(Vec<u8>);

    impl Buffer {
        pub(super) fn take() -> Self {
            let reused = FREE.try_with(|free| free.borrow_mut().pop()).ok().flatten();
            Self(reused.unwrap_or_else(|| Vec::with_capacity(BUF)))
        }
    }

    impl Drop for Buffer {
        fn drop(&mut self) {
            let mut buf = std::mem::take(&mut self.0);
            buf.clear();
            // A thread going away keeps nothing.
            let _ = FREE.try_with(|free| {
                let mut free = free.borrow_mut();
                if free.len() < KEEP {
                    free.push(buf);
                }
            });
        }
    }

    impl std::ops::Deref for Buffer {
        type Target = Vec<u8>;
        fn deref(&self) -> &Vec<u8> {
            &self.0
        }
    }

    impl std::ops::DerefMut for Buffer {
        fn deref_mut(&mut self) -> &mut Vec<u8> {
            &mut self.0
        }
    }
}

#[cfg(target_os = "linux")]
mod splice {
    //! socket → pipe → socket with splice(2), with tokio's readiness: wait until ready, try the
    //! call; `EAGAIN` clears the readiness so the next wait is for a new event.
    use std::io;
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
    use tokio::io::Interest;
    use tokio::net::TcpStream;

    /// The pipe size asked for a bulk direction (the default limit for unprivileged users,
    /// `/proc/sys/fs/pipe-max-size`); if refused, the default (64 KiB) is used.
    const PIPE_SIZE: libc::c_int = 1 << 20;

    /// A pipe, both ends non-blocking.
    pub(super) struct Pipe {
        read: OwnedFd,
        write: OwnedFd,
        size: usize,
    }

    impl Pipe {
        pub(super) fn new() -> io::Result<Self> {
            let mut fds = [0 as RawFd; 2];
            // SAFETY: pipe2 writes two descriptors into `fds`, which we then own.
            if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) } != 0 {
                return Err(io::Error::last_os_error());
            }
            // SAFETY: both descriptors were just created and are owned by nothing else.
            let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
            // SAFETY: fcntl on a descriptor we own; failure leaves the pipe at its default size.
            let size = unsafe {
                libc::fcntl(write.as_raw_fd(), libc::F_SETPIPE_SZ, PIPE_SIZE);
                libc::fcntl(write.as_raw_fd(), libc::F_GETPIPE_SZ)
            };
            let size = usize::try_from(size).ok().filter(|s| *s > 0).unwrap_or(64 * 1024);
            Ok(Self { read, write, size })
        }
    }

    /// Bytes moved by splice in this process, for tests to see the path taken.
    #[cfg(test)]
    pub(super) static SPLICED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

    /// How a splice relay ended.
    pub(super) enum Outcome {
        /// `from` reached its end after this many bytes.
        Done(u64),
        /// splice does not work on these sockets (`EINVAL` on the first call): copy instead.
        Unsupported,
    }

    fn splice(from: RawFd, to: RawFd, len: usize) -> io::Result<usize> {
        let flags = libc::SPLICE_F_MOVE | libc::SPLICE_F_NONBLOCK;
        // SAFETY: both descriptors are open for the call; no offsets (sockets and pipes).
        let n = unsafe { libc::splice(from, std::ptr::null_mut(), to, std::ptr::null_mut(), len, flags) };
        usize::try_from(n).map_err(|_| io::Error::last_os_error())
    }

    /// Moves `from` → `to` through `pipe` until `from` ends. The pipe is empty whenever a fill
    /// starts, so an `EAGAIN` from the fill means the socket has nothing, never a full pipe.
    pub(super) async fn relay(pipe: &Pipe, from: &TcpStream, to: &TcpStream) -> io::Result<Outcome> {
        let mut total = 0u64;
        loop {
            from.readable().await?;
            let filled =
                from.try_io(Interest::READABLE, || splice(from.as_raw_fd(), pipe.write.as_raw_fd(), pipe.size));
            let n = match filled {
                Ok(0) => return Ok(Outcome::Done(total)),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) && total == 0 => return Ok(Outcome::Unsupported),
                Err(e) => return Err(e),
            };
            let mut left = n;
            while left > 0 {
                to.writable().await?;
                match to.try_io(Interest::WRITABLE, || splice(pipe.read.as_raw_fd(), to.as_raw_fd(), left)) {
                    Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                    Ok(m) => left -= m,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => return Err(e),
                }
            }
            total += n as u64;
            #[cfg(test)]
            SPLICED.fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests;
