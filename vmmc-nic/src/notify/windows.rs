//! Notifications on Windows: a loopback socket pair per notifier.
//!
//! `WSAPoll` waits on sockets and nothing else, and a thread here must wait on a connection
//! and its notifier at once (an import connection and the stop signal, a stream's ring and
//! its wake-up), so a notifier is a socket too: a signal is one byte sent on a connected
//! loopback pair, a take drains the bytes and counts them, as an eventfd's read does. Only
//! the tcp backend runs on Windows so far; nothing here leaves the process.

use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::windows::io::{AsSocket, BorrowedSocket};
use std::time::Duration;

/// The receiving side: counts signals until a waiter takes them. Also what a thread that
/// must be woken from a poll elsewhere waits on (a listener's admission thread, say).
#[derive(Debug)]
pub struct Notifier {
    rx: TcpStream,
    tx: TcpStream,
}

impl Notifier {
    /// A fresh notifier with no signal pending.
    pub fn new() -> io::Result<Notifier> {
        let l = TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))?;
        let tx = TcpStream::connect(l.local_addr()?)?;
        let mine = tx.local_addr()?;
        // Another local process may connect to the listener first: only our own connection
        // becomes the pair (ours is already queued, so this ends).
        let rx = loop {
            let (rx, from) = l.accept()?;
            if from == mine {
                break rx;
            }
        };
        rx.set_nonblocking(true)?;
        tx.set_nonblocking(true)?;
        tx.set_nodelay(true)?;
        Ok(Notifier { rx, tx })
    }

    /// What to poll: readable while a signal is pending.
    pub fn fd(&self) -> BorrowedSocket<'_> {
        self.rx.as_socket()
    }

    /// Adds a signal and wakes a waiter.
    pub fn signal(&self) {
        // A full socket buffer (WouldBlock) still leaves the waiter woken.
        let _ = (&self.tx).write(&[1]);
    }

    /// Takes all pending signals without blocking; 0 when there were none.
    pub fn take(&self) -> u64 {
        let mut total = 0u64;
        let mut buf = [0u8; 256];
        loop {
            match (&self.rx).read(&mut buf) {
                Ok(0) => return total,
                Ok(n) => total += n as u64,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return total,
            }
        }
    }
}

/// Waits until `fd` is readable or `timeout` passes (then returns false).
pub(crate) fn wait_readable(fd: BorrowedSocket<'_>, timeout: Duration) -> io::Result<bool> {
    poll_readable(&[fd], Some(timeout)).map(|r| r.first().copied().unwrap_or(false))
}

/// Waits until one of `fds` is readable (or hung up) or `timeout` passes, and says which
/// are.
pub fn poll_readable(
    fds: &[BorrowedSocket<'_>],
    timeout: Option<Duration>,
) -> io::Result<Vec<bool>> {
    crate::sys::poll_readable(fds, timeout)
}
