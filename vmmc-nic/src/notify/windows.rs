//! Notifications on Windows: a counter under a lock that wakes in-process waiters through a
//! condition variable, mirrored on a loopback socket pair for whoever polls.
//!
//! `WSAPoll` waits on sockets and nothing else, and a thread here must sometimes wait on a
//! connection and a notifier at once (an endpoint's listener and its stop signal, a program's
//! `select` over routed and system sockets), so a notifier has a socket: while it is mirrored,
//! a pending signal is one byte waiting on it. But every socket call is costly under Wine (a
//! round trip to wineserver), and most waits are one thread sleeping for its own stream's next
//! message, which a condition variable serves without any. So an export's notifier mirrors
//! only once someone asks for its socket ([`Notifier::arm`], from `Export::notify_fd`); other
//! notifiers always do. Only the tcp backend runs on Windows so far: nothing here leaves the
//! process.

use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::windows::io::{AsSocket, BorrowedSocket};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::Duration;

/// The receiving side: counts signals until a waiter takes them. Also what a thread that
/// must be woken from a poll elsewhere waits on (a listener's admission thread, say).
#[derive(Debug)]
pub struct Notifier {
    rx: TcpStream,
    tx: TcpStream,
    state: Mutex<State>,
    woken: Condvar,
}

#[derive(Debug, Default)]
struct State {
    /// Signals not yet taken: the count, whatever the socket holds.
    pending: u64,
    /// Whether pending signals show on the socket.
    mirror: bool,
    /// Whether the mirror may be turned off again (an export's notifier).
    on_demand: bool,
    /// Whether the socket holds a byte (at most one: it says "pending", not how many).
    byte_out: bool,
}

impl Notifier {
    /// A fresh notifier with no signal pending, mirrored on its socket from the start.
    pub fn new() -> io::Result<Notifier> {
        Notifier::with_mirror(true)
    }

    /// A notifier whose socket shows nothing until [`Notifier::arm`]: for exports, whose
    /// waiters mostly sleep on the condition variable.
    pub(crate) fn on_demand() -> io::Result<Notifier> {
        Notifier::with_mirror(false)
    }

    fn with_mirror(mirror: bool) -> io::Result<Notifier> {
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
        Ok(Notifier {
            rx,
            tx,
            state: Mutex::new(State {
                mirror,
                on_demand: !mirror,
                ..State::default()
            }),
            woken: Condvar::new(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// What to poll: readable while a signal is pending, once the notifier is mirrored.
    pub fn fd(&self) -> BorrowedSocket<'_> {
        self.rx.as_socket()
    }

    /// Mirrors pending signals on the socket from now on.
    pub(crate) fn arm(&self) {
        let mut s = self.lock();
        if !s.mirror {
            s.mirror = true;
            if s.pending > 0 {
                self.put_byte(&mut s);
            }
        }
    }

    /// Stops mirroring (an export's notifier only: the others are polled by threads that
    /// never say when they stop), once its poller has woken.
    pub(crate) fn disarm(&self) {
        let mut s = self.lock();
        if s.on_demand {
            s.mirror = false;
        }
    }

    fn put_byte(&self, s: &mut State) {
        if !s.byte_out {
            // A full socket buffer cannot happen with one byte at a time; an error leaves
            // pollers to their time slices.
            s.byte_out = (&self.tx).write(&[1]).is_ok_and(|n| n == 1);
        }
    }

    /// Adds a signal and wakes a waiter.
    pub fn signal(&self) {
        let mut s = self.lock();
        s.pending += 1;
        if s.mirror {
            self.put_byte(&mut s);
        }
        drop(s);
        self.woken.notify_all();
    }

    /// Takes all pending signals without blocking; 0 when there were none.
    pub fn take(&self) -> u64 {
        let mut s = self.lock();
        if s.byte_out {
            let mut buf = [0u8; 16];
            let _ = (&self.rx).read(&mut buf);
            s.byte_out = false;
        }
        std::mem::take(&mut s.pending)
    }

    /// Waits until a signal is pending (without taking it) or `timeout` passes.
    pub(crate) fn wait_pending(&self, timeout: Duration) -> bool {
        let s = self.lock();
        let (s, _) = self
            .woken
            .wait_timeout_while(s, timeout, |s| s.pending == 0)
            .unwrap_or_else(|p| p.into_inner());
        s.pending > 0
    }
}

/// Waits until one of `fds` is readable (or hung up) or `timeout` passes, and says which
/// are.
pub fn poll_readable(
    fds: &[BorrowedSocket<'_>],
    timeout: Option<Duration>,
) -> io::Result<Vec<bool>> {
    crate::sys::poll_readable(fds, timeout)
}
