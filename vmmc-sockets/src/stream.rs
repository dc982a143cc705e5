//! A connected stream: two rings, one in each side's exported memory.
//!
//! Sending deposits bytes into the peer's ring and then publishes the new send index in the
//! peer's header; receiving reads from my own ring and publishes my receive index (the
//! peer's credit) in the peer's header. A blocked call spins for a bounded time, then tells
//! the peer it is about to sleep (so the peer notifies after its next publish) and sleeps on
//! the notification fd.

use std::io::{self, IoSlice, IoSliceMut, Read, Write};
use std::net::Shutdown;
use std::sync::atomic::{fence, AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use vmmc_nic::{Export, Import, NodeAddr, Notify, SharedBytes, SharedBytesMut, WaitHandle, Wake};

use crate::layout::*;
use crate::options::StreamOptions;
use crate::ring::{RxState, TxState};

/// No one-shot spin is set: the next wait spins as the stream is configured.
const NO_SPIN_ONCE: u64 = u64::MAX;

/// Longest a blocked call sleeps before it looks again, whatever it waits for: a bound on
/// the cost of any lost wake-up between threads sharing one stream.
const SLEEP_SLICE: Duration = Duration::from_millis(50);

pub(crate) fn nic_error(e: vmmc_nic::Error) -> io::Error {
    let kind = match &e {
        vmmc_nic::Error::PeerGone(_) => io::ErrorKind::ConnectionReset,
        vmmc_nic::Error::Timeout(_) => io::ErrorKind::TimedOut,
        vmmc_nic::Error::NoEndpoint(_) | vmmc_nic::Error::NoSuchExport { .. } => {
            io::ErrorKind::ConnectionRefused
        }
        vmmc_nic::Error::PermissionDenied { .. } => io::ErrorKind::PermissionDenied,
        vmmc_nic::Error::AddrInUse(_) => io::ErrorKind::AddrInUse,
        vmmc_nic::Error::BadAddress { .. } => io::ErrorKind::InvalidInput,
        vmmc_nic::Error::Protocol { .. } => io::ErrorKind::ConnectionAborted,
        _ => io::ErrorKind::Other,
    };
    io::Error::new(kind, e)
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The two halves of a connection as set up by connect or accept.
pub(crate) struct Parts {
    pub(crate) rx_export: Export,
    pub(crate) rx_ring: RingSize,
    pub(crate) tx_import: Import,
    pub(crate) tx_ring: RingSize,
    pub(crate) peer: NodeAddr,
    pub(crate) local: NodeAddr,
    /// Keeps the endpoint (and so the ring export) alive as long as the connection, even
    /// after its listener is dropped; none for a connection taken over from another process.
    pub(crate) endpoint: Option<Arc<vmmc_nic::Endpoint>>,
    /// Held as long as the connection: the listener's count of it, for its limits.
    pub(crate) ticket: Option<crate::listener::Ticket>,
}

/// Everything that changes, under one lock held only for short, non-blocking steps.
pub(crate) struct Core {
    pub(crate) rx_export: Export,
    pub(crate) tx_import: Import,
    pub(crate) rx: RxState,
    pub(crate) tx: TxState,
    pub(crate) shut_wr: bool,
    pub(crate) shut_rd: bool,
    pub(crate) peer_left: bool,
    pub(crate) peer_rdshut: bool,
    pub(crate) broken: Option<(io::ErrorKind, String)>,
    /// A call of this side is about to sleep waiting for data (or the end of the stream).
    pub(crate) waiting_data: bool,
    /// A call of this side is about to sleep waiting for room.
    pub(crate) waiting_room: bool,
    /// What this side last said in the peer's [`PEER_WAITING`].
    pub(crate) waiting_word: u64,
    pub(crate) shm: bool,
    /// An outstanding `reserve_raw`: send index when taken, length.
    pub(crate) raw_send: Option<(u64, usize)>,
    /// An outstanding `readable_raw`: receive index when taken, length.
    pub(crate) raw_recv: Option<(u64, usize)>,
    /// The tcp backend's send slot: the peer's ring is not mapped here. A mapping of its
    /// own, so that a closed connection gives its memory back to the system.
    pub(crate) staging: Option<vmmc_nic::LocalBuffer>,
}

impl Core {
    fn fail(&mut self, e: io::Error) -> io::Error {
        if self.broken.is_none() {
            self.broken = Some((e.kind(), e.to_string()));
        }
        e
    }

    /// A NIC failure during a transfer: it leaves the connection unusable.
    fn fail_nic(&mut self, e: vmmc_nic::Error) -> io::Error {
        let e = nic_error(e);
        self.fail(e)
    }

    fn check_broken(&self) -> io::Result<()> {
        match &self.broken {
            Some((kind, why)) => Err(io::Error::new(*kind, why.clone())),
            None => Ok(()),
        }
    }

    /// Takes pending notifications; remembers when the peer's import of my ring went away.
    /// One look per call: the peer holds a copy of my eventfd, and one that writes it without
    /// pause must not keep this loop (and the lock it runs under) going. A departure behind a
    /// notification is seen at the next call, which every wait makes.
    fn pump(&mut self) {
        if self.rx_export.try_wait() == Some(Wake::ImporterLeft) {
            self.peer_left = true;
        }
    }

    fn peer_gone(&self) -> bool {
        self.peer_left || !self.tx_import.is_alive()
    }

    fn word(&self, offset: u64) -> io::Result<u64> {
        self.rx_export.load_u64(offset).map_err(nic_error)
    }

    fn refresh_rx(&mut self) -> io::Result<()> {
        self.check_broken()?;
        // The peer publishes its send index before the urgent mark that points into it, so
        // the mark is read first: the index read after it is at least as new, and an honest
        // mark never looks like one beyond the data.
        let urgent = self.word(PEER_URGENT)?;
        let write = self.word(PEER_WRITE)?;
        let fin = self.word(PEER_FIN)?;
        let r = self
            .rx
            .observe(write, fin)
            .and_then(|()| self.rx.observe_urgent(urgent));
        r.map_err(|e| self.fail(e))
    }

    fn refresh_tx(&mut self) -> io::Result<()> {
        self.check_broken()?;
        let credit = self.word(PEER_CREDIT)?;
        self.peer_rdshut = self.word(PEER_RDSHUT)? != 0;
        let r = self.tx.observe_credit(credit);
        r.map_err(|e| self.fail(e))
    }

    /// Stores a control word in the peer's header and wakes the peer if it sleeps.
    fn publish(&mut self, offset: u64, value: u64) -> io::Result<()> {
        let r = if self.shm {
            // Dekker with the peer's `set_waiting`: my store, a full fence, then its flag; it
            // stores its flag, fences, then re-reads my word. One of us sees the other.
            self.tx_import
                .store_u64(offset, value, Notify::No)
                .and_then(|()| {
                    fence(Ordering::SeqCst);
                    match self.rx_export.load_u64(PEER_WAITING) {
                        Ok(0) => Ok(()),
                        Ok(WAIT_DATA) if offset == PEER_CREDIT => Ok(()),
                        _ => self.tx_import.write_at(0, &[], Notify::Yes),
                    }
                })
        } else {
            // Deposits over tcp land later, so the flag cannot be trusted: always notify (a
            // flag bit in the frame, no extra message).
            self.tx_import.store_u64(offset, value, Notify::Yes)
        };
        r.map_err(|e| match e {
            // A departed peer is noticed by `peer_gone`; it does not poison the connection, so
            // data that arrived before the departure can still be read.
            vmmc_nic::Error::PeerGone(_) => nic_error(e),
            e => self.fail_nic(e),
        })
    }

    /// Shuts down sending and/or receiving: tells the peer the final send index (it reads EOF
    /// after it) or that its sends are refused. Each is said once.
    fn shut(&mut self, write: bool, read: bool) -> io::Result<()> {
        if write && !self.shut_wr {
            self.shut_wr = true;
            let fin = self.tx.sent() + 1;
            self.publish(PEER_FIN, fin)?;
        }
        if read && !self.shut_rd {
            self.shut_rd = true;
            self.publish(PEER_RDSHUT, 1)?;
        }
        Ok(())
    }

    /// Where the next `len` bytes to send go: the peer's ring itself (shm) or the staging
    /// buffer that a commit deposits from (tcp).
    fn send_span(&mut self, len: usize) -> io::Result<SharedBytesMut<'_>> {
        if self.shm {
            let at = Core::ring_at(self.tx.write_offset());
            return self.tx_import.bytes_mut(at, len as u64).map_err(nic_error);
        }
        match self.staging.as_mut() {
            Some(b) if len <= b.len() => Ok(SharedBytesMut::from(&mut b.as_mut_slice()[..len])),
            _ => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("a send slot of {len} bytes does not fit the peer's ring"),
            )),
        }
    }

    /// The next `len` received bytes, in place in my ring.
    fn recv_span(&self, len: usize) -> io::Result<SharedBytes<'_>> {
        let at = Core::ring_at(self.rx.read_offset());
        self.rx_export.bytes(at, len as u64).map_err(nic_error)
    }

    /// Says whether a call waiting for `dir` is about to sleep (see [`Core::publish`]).
    fn set_waiting(&mut self, dir: Dir, on: bool) {
        match dir {
            Dir::Read => self.waiting_data = on,
            Dir::Write => self.waiting_room = on,
        }
        self.say_waiting();
    }

    fn say_waiting(&mut self) {
        let word = match (self.waiting_data, self.waiting_room) {
            (false, false) => 0,
            (true, false) => WAIT_DATA,
            _ => WAIT_ANY,
        };
        if self.shm && self.waiting_word != word {
            self.waiting_word = word;
            let _ = self.tx_import.store_u64(PEER_WAITING, word, Notify::No);
            fence(Ordering::SeqCst);
        }
    }

    fn rx_ready(&mut self) -> io::Result<bool> {
        self.rx_ready_for(1)
    }

    /// Whether `min` bytes can be read, or the stream has ended (with fewer).
    fn rx_ready_for(&mut self, min: u64) -> io::Result<bool> {
        self.refresh_rx()?;
        if self.rx.available() >= min || self.rx.at_eof() || self.shut_rd {
            return Ok(true);
        }
        // Only the peer's departure from *my* ring counts here: it is ordered after every
        // deposit the peer made into it (on tcp, the same connection carried them), while its
        // export can vanish while some of those deposits are still in flight. A peer that
        // holds no import of my ring has nothing in flight: if its own ring is gone too (it
        // died before importing mine), it is gone.
        if self.peer_left || (self.rx_export.importers() == 0 && !self.tx_import.is_alive()) {
            // The departure may have come after the look above: what the peer sent before it
            // (its last bytes, its end of stream) is visible now, and still counts.
            self.refresh_rx()?;
            if self.rx.available() >= min || self.rx.at_eof() {
                return Ok(true);
            }
            return Err(io::Error::new(
                io::ErrorKind::ConnectionReset,
                "the peer went away without closing the connection",
            ));
        }
        Ok(false)
    }

    fn tx_ready(&mut self) -> io::Result<bool> {
        self.tx_ready_for(1)
    }

    /// Whether `min` bytes of room are free in the peer's ring.
    fn tx_ready_for(&mut self, min: u64) -> io::Result<bool> {
        if self.shut_wr {
            return Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "this side has shut down sending",
            ));
        }
        self.refresh_tx()?;
        if self.peer_rdshut {
            return Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "the peer has shut down receiving",
            ));
        }
        if self.peer_gone() {
            return Err(io::Error::new(
                io::ErrorKind::ConnectionReset,
                "the peer went away",
            ));
        }
        Ok(self.tx.space() >= min)
    }

    fn ring_at(offset: u64) -> u64 {
        HEADER + offset
    }

    /// Publishes my receive index. Best effort: when the peer is gone its credit no longer
    /// matters, and the bytes just consumed must still reach the reader (the failure shows on
    /// the next send instead).
    fn give_credit(&mut self) {
        let read = self.rx.read_index();
        let _ = self.publish(PEER_CREDIT, read);
    }

    /// The tcp send path: one frame carrying the bytes and the new send index, with a
    /// notification (deposits over tcp land late, so the sleep flag cannot be trusted).
    fn tcp_deposit_and_publish(&mut self, at: u64, data: &[u8]) -> io::Result<()> {
        let sent = self.tx.sent() + data.len() as u64;
        let r = self
            .tx_import
            .write_then_store(at, data, PEER_WRITE, sent, Notify::Yes);
        r.map_err(|e| self.fail_nic(e))?;
        self.tx.commit(data.len() as u64);
        Ok(())
    }

    /// The tcp commit of a slot parts of which were deposited from files already: deposits
    /// the other parts of `bytes` (the slot's first bytes, in the staging buffer) at `at`,
    /// the last with the send index that publishes all of them.
    fn tcp_publish_around(
        &mut self,
        at: u64,
        bytes: &[u8],
        from_files: &mut [(usize, usize)],
    ) -> io::Result<()> {
        let n = bytes.len();
        from_files.sort_unstable();
        let mut gaps = Vec::with_capacity(from_files.len() + 1);
        let mut next = 0;
        for &(start, len) in from_files.iter() {
            let start = start.min(n);
            if start > next {
                gaps.push((next, start));
            }
            next = next.max(start.saturating_add(len).min(n));
        }
        // The last part, empty if the files' bytes end the slot, carries the send index.
        let (last_start, last_end) = if next < n || gaps.is_empty() {
            (next, n)
        } else {
            gaps.pop().unwrap_or((n, n))
        };
        for (start, end) in gaps {
            let r = self
                .tx_import
                .write_at(at + start as u64, &bytes[start..end], Notify::No);
            r.map_err(|e| self.fail_nic(e))?;
        }
        let sent = self.tx.sent() + n as u64;
        let r = self.tx_import.write_then_store(
            at + last_start as u64,
            &bytes[last_start..last_end],
            PEER_WRITE,
            sent,
            Notify::Yes,
        );
        r.map_err(|e| self.fail_nic(e))?;
        self.tx.commit(n as u64);
        Ok(())
    }

    /// Copies ready bytes into `bufs`; consumes them unless peeking.
    fn copy_out(&mut self, bufs: &mut [IoSliceMut<'_>], peek: bool) -> io::Result<usize> {
        let mut at = self.rx.read_offset();
        let mut left = self.rx.available();
        let mut done = 0usize;
        for b in bufs.iter_mut() {
            if left == 0 {
                break;
            }
            let n = (b.len() as u64).min(left) as usize;
            self.rx_export
                .read_at(Core::ring_at(at), &mut b[..n])
                .map_err(nic_error)?;
            at = (at + n as u64) % self.rx.capacity();
            left -= n as u64;
            done += n;
        }
        if !peek && done > 0 {
            self.rx.consume(done as u64);
            self.give_credit();
        }
        Ok(done)
    }

    /// Deposits as much of `bufs` as fits into the peer's ring and publishes it.
    fn copy_in(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        if let [one] = bufs {
            // The common case, without gathering into a list first.
            let n = one.len().min(self.tx.space() as usize);
            let at = Core::ring_at(self.tx.write_offset());
            if !self.shm {
                // On tcp, the data and the index that publishes it travel as one frame.
                self.tcp_deposit_and_publish(at, &one[..n])?;
                return Ok(n);
            }
            let r = self.tx_import.write_at(at, &one[..n], Notify::No);
            r.map_err(|e| self.fail_nic(e))?;
            self.tx.commit(n as u64);
            self.publish(PEER_WRITE, self.tx.sent())?;
            return Ok(n);
        }
        let mut room = self.tx.space() as usize;
        let mut parts: Vec<IoSlice<'_>> = Vec::with_capacity(bufs.len());
        for b in bufs {
            if room == 0 {
                break;
            }
            let n = b.len().min(room);
            parts.push(IoSlice::new(&b[..n]));
            room -= n;
        }
        let n: usize = parts.iter().map(|p| p.len()).sum();
        if n == 0 {
            return Ok(0);
        }
        let at = Core::ring_at(self.tx.write_offset());
        self.tx_import
            .write_vectored_at(at, &parts, Notify::No)
            .map_err(|e| self.fail_nic(e))?;
        self.tx.commit(n as u64);
        self.publish(PEER_WRITE, self.tx.sent())?;
        Ok(n)
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Dir {
    Read,
    Write,
}

/// What a stream is ready for right now, for select/poll loops.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Readiness {
    /// A read would not block (data, end of stream, or an error to report).
    pub readable: bool,
    /// A write would not block (room, or an error to report).
    pub writable: bool,
    /// The peer is gone or both directions are shut.
    pub hangup: bool,
    /// The connection is broken (a lie from the peer, say).
    pub error: bool,
}

/// A connection, shared by every handle and slot on it.
pub(crate) struct Inner {
    pub(crate) core: Mutex<Core>,
    /// Waits for the receive ring's export's wake-ups (and lends its handle for polls).
    pub(crate) waiter: vmmc_nic::Waiter,
    pub(crate) polling: AtomicBool,
    /// How many times the poller woke, and how many threads wait for it on `woken`.
    pub(crate) generation: Mutex<(u64, usize)>,
    pub(crate) woken: Condvar,
    pub(crate) spin: Duration,
    /// The spin of the next read-side wait only, in nanoseconds ([`NO_SPIN_ONCE`]: none);
    /// see [`VmmcStream::set_next_read_spin`].
    pub(crate) next_read_spin: AtomicU64,
    pub(crate) nonblocking: AtomicBool,
    pub(crate) read_timeout: Mutex<Option<Duration>>,
    pub(crate) write_timeout: Mutex<Option<Duration>>,
    pub(crate) peer: NodeAddr,
    pub(crate) local: NodeAddr,
    pub(crate) rx_ring: RingSize,
    pub(crate) tx_ring: RingSize,
    /// Set when the connection moves to another process: nothing is shut down on drop.
    pub(crate) handed: AtomicBool,
    pub(crate) _endpoint: Option<Arc<vmmc_nic::Endpoint>>,
    pub(crate) _ticket: Option<crate::listener::Ticket>,
}

impl Inner {
    /// Runs `ready` under the lock until it says yes, spinning, then sleeping; returns the
    /// lock held, so the caller acts on exactly the state `ready` saw.
    fn wait(
        &self,
        dir: Dir,
        dontwait: bool,
        mut ready: impl FnMut(&mut Core) -> io::Result<bool>,
    ) -> io::Result<MutexGuard<'_, Core>> {
        // A one-shot spin belongs to the next read-side call, whether it waits or not.
        let spin = match dir {
            Dir::Read if self.next_read_spin.load(Ordering::Relaxed) != NO_SPIN_ONCE => {
                match self.next_read_spin.swap(NO_SPIN_ONCE, Ordering::Relaxed) {
                    NO_SPIN_ONCE => self.spin,
                    ns => Duration::from_nanos(ns),
                }
            }
            _ => self.spin,
        };
        // The fast path touches nothing but the lock and the ring words: no eventfd read (a
        // system call), no clock, no timeout lock. The control words in shared memory already
        // say whether the call can proceed; notifications are taken only before sleeping.
        {
            let mut c = lock(&self.core);
            if ready(&mut c)? {
                c.set_waiting(dir, false);
                return Ok(c);
            }
        }
        if dontwait || self.nonblocking.load(Ordering::Relaxed) {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let timeout = *lock(match dir {
            Dir::Read => &self.read_timeout,
            Dir::Write => &self.write_timeout,
        });
        let start = Instant::now();
        let deadline = timeout.map(|t| start + t);
        let mut spins = 0u32;
        loop {
            {
                let mut c = lock(&self.core);
                if ready(&mut c)? {
                    c.set_waiting(dir, false);
                    return Ok(c);
                }
            }
            spins = spins.wrapping_add(1);
            // Reading the clock costs more than a look at the ring: do it every 64th pass
            // (and at once when there is no spin to time).
            if spins % 64 != 0 && !spin.is_zero() {
                std::hint::spin_loop();
                continue;
            }
            let now = Instant::now();
            if deadline.is_some_and(|d| now >= d) {
                let mut c = lock(&self.core);
                c.set_waiting(dir, false);
                return Err(io::Error::new(io::ErrorKind::TimedOut, "timed out"));
            }
            if now - start < spin {
                // A thread this one's peer waits for may be ready to run on this core (on a
                // machine with few cores, the one that would send what we wait for).
                std::thread::yield_now();
                continue;
            }
            {
                let mut c = lock(&self.core);
                c.set_waiting(dir, true);
                c.pump();
                if ready(&mut c)? {
                    c.set_waiting(dir, false);
                    return Ok(c);
                }
            }
            self.sleep(deadline);
        }
    }

    /// Sleeps until the receive export has a wake-up pending, another thread of this stream
    /// saw one, or a short slice passes. One thread waits on the export (its eventfd on Linux,
    /// a condition variable on Windows); the others wait for its word.
    fn sleep(&self, deadline: Option<Instant>) {
        let mut slice = SLEEP_SLICE;
        if let Some(d) = deadline {
            slice = slice.min(d.saturating_duration_since(Instant::now()));
        }
        if !self.polling.swap(true, Ordering::AcqRel) {
            let ms = slice.as_millis().clamp(1, 1000) as u64;
            self.waiter.wait(Duration::from_millis(ms));
            self.polling.store(false, Ordering::Release);
            let waiters = {
                let mut g = lock(&self.generation);
                g.0 += 1;
                g.1
            };
            // Most streams have one thread: no wake-up call for nobody.
            if waiters > 0 {
                self.woken.notify_all();
            }
        } else {
            // Counted under the lock the poller takes to move the generation on: it either
            // sees this waiter or this waiter sees the new generation.
            let mut g = lock(&self.generation);
            g.1 += 1;
            let seen = g.0;
            let mut g = match self.woken.wait_timeout_while(g, slice, |g| g.0 == seen) {
                Ok((g, _)) => g,
                Err(p) => p.into_inner().0,
            };
            g.1 -= 1;
        }
    }
}

/// A stream socket over VMMC, shaped like `std::net::TcpStream`.
///
/// Clones made with [`VmmcStream::try_clone`] share the connection, so one thread can read
/// while another writes. Dropping the last handle closes the connection (the peer reads EOF
/// after the data already sent).
#[derive(Clone)]
pub struct VmmcStream {
    pub(crate) inner: Arc<Inner>,
    pub(crate) _closer: Arc<Closer>,
}

/// Shuts the connection down when the last handle goes.
pub(crate) struct Closer(pub(crate) Arc<Inner>);

impl Drop for Closer {
    fn drop(&mut self) {
        if self.0.handed.load(Ordering::Acquire) {
            return;
        }
        let mut c = lock(&self.0.core);
        if c.broken.is_none() {
            // Say both even if the first fails: a departed peer no longer cares.
            let _ = c.shut(true, false);
            let _ = c.shut(false, true);
        }
    }
}

impl std::fmt::Debug for VmmcStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VmmcStream")
            .field("local", &self.inner.local)
            .field("peer", &self.inner.peer)
            .finish()
    }
}

impl VmmcStream {
    pub(crate) fn from_parts(p: Parts, opts: &StreamOptions) -> io::Result<VmmcStream> {
        let (rx, tx) = (RxState::new(p.rx_ring), TxState::new(p.tx_ring));
        VmmcStream::resume(p, opts, rx, tx)
    }

    /// A stream from its parts and ring states (fresh, or carried over from another process).
    pub(crate) fn resume(
        p: Parts,
        opts: &StreamOptions,
        rx: RxState,
        tx: TxState,
    ) -> io::Result<VmmcStream> {
        let shm = matches!(p.peer, NodeAddr::Shm(_));
        let waiter = p.rx_export.waiter();
        let staging = if shm {
            None
        } else {
            Some(vmmc_nic::LocalBuffer::new(p.tx_ring.get() as usize).map_err(nic_error)?)
        };
        let core = Core {
            rx,
            tx,
            rx_export: p.rx_export,
            tx_import: p.tx_import,
            shut_wr: false,
            shut_rd: false,
            peer_left: false,
            peer_rdshut: false,
            broken: None,
            waiting_data: false,
            waiting_room: false,
            waiting_word: 0,
            shm,
            raw_send: None,
            raw_recv: None,
            staging,
        };
        let inner = Arc::new(Inner {
            core: Mutex::new(core),
            waiter,
            polling: AtomicBool::new(false),
            generation: Mutex::new((0, 0)),
            woken: Condvar::new(),
            spin: opts.spin,
            next_read_spin: AtomicU64::new(NO_SPIN_ONCE),
            nonblocking: AtomicBool::new(false),
            read_timeout: Mutex::new(None),
            write_timeout: Mutex::new(None),
            peer: p.peer,
            local: p.local,
            rx_ring: p.rx_ring,
            tx_ring: p.tx_ring,
            handed: AtomicBool::new(false),
            _endpoint: p.endpoint,
            _ticket: p.ticket,
        });
        Ok(VmmcStream {
            _closer: Arc::new(Closer(inner.clone())),
            inner,
        })
    }

    /// Connects to a listener at `addr` (`shm:NAME` or `tcp:HOST:PORT`).
    pub fn connect(addr: &str) -> io::Result<VmmcStream> {
        VmmcStream::connect_with(addr, &StreamOptions::default())
    }

    /// Connects with explicit options.
    pub fn connect_with(addr: &str, opts: &StreamOptions) -> io::Result<VmmcStream> {
        let addr: NodeAddr = addr.parse().map_err(nic_error)?;
        crate::listener::connect(&addr, opts)
    }

    /// The listener's address.
    pub fn peer_addr(&self) -> &NodeAddr {
        &self.inner.peer
    }

    /// This side's endpoint address.
    pub fn local_addr(&self) -> &NodeAddr {
        &self.inner.local
    }

    /// This side's receive ring size.
    pub fn recv_buffer_size(&self) -> u64 {
        self.inner.rx_ring.get()
    }

    /// The peer's receive ring size: the most this side can have in flight.
    pub fn send_buffer_size(&self) -> u64 {
        self.inner.tx_ring.get()
    }

    /// Another handle on the same connection.
    pub fn try_clone(&self) -> io::Result<VmmcStream> {
        Ok(self.clone())
    }

    /// Sets how long the next read-side call (a read, [`VmmcStream::readable`] and its
    /// variants) spins before it sleeps, if it has to wait at all; later ones spin as the
    /// stream was configured ([`StreamOptions::spin`]). For a caller that knows its next wait
    /// will be long, such as for the reply to a large read, or for the next request from a
    /// peer that is busy consuming a large reply: on two cores its spin would only take the
    /// CPU from the very thread that is producing what it waits for.
    pub fn set_next_read_spin(&self, spin: Duration) {
        let ns = u64::try_from(spin.as_nanos()).unwrap_or(NO_SPIN_ONCE - 1);
        self.inner
            .next_read_spin
            .store(ns.min(NO_SPIN_ONCE - 1), Ordering::Relaxed);
    }

    /// Makes reads, writes and slot requests return `WouldBlock` instead of waiting.
    pub fn set_nonblocking(&self, on: bool) -> io::Result<()> {
        self.inner.nonblocking.store(on, Ordering::Relaxed);
        Ok(())
    }

    /// Bounds how long a read waits; `None` waits for ever.
    pub fn set_read_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        if t == Some(Duration::ZERO) {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "zero timeout"));
        }
        *lock(&self.inner.read_timeout) = t;
        Ok(())
    }

    /// Bounds how long a write waits for room; `None` waits for ever.
    pub fn set_write_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        if t == Some(Duration::ZERO) {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "zero timeout"));
        }
        *lock(&self.inner.write_timeout) = t;
        Ok(())
    }

    /// The read timeout.
    pub fn read_timeout(&self) -> Option<Duration> {
        *lock(&self.inner.read_timeout)
    }

    /// The write timeout.
    pub fn write_timeout(&self) -> Option<Duration> {
        *lock(&self.inner.write_timeout)
    }

    /// The fd that becomes readable when something arrives (data, credit, a shutdown): for
    /// select/poll loops, after [`VmmcStream::readiness`] with `arm` (on Windows the handle
    /// shows wake-ups only then). Readiness is a hint; the call that follows decides.
    pub fn notify_fd(&self) -> WaitHandle<'_> {
        self.inner.waiter.handle()
    }

    /// Bytes ready to read without waiting (`FIONREAD`).
    pub fn bytes_readable(&self) -> io::Result<u64> {
        let mut c = lock(&self.inner.core);
        c.refresh_rx()?;
        Ok(c.rx.available())
    }

    /// Reads like `read` but leaves the bytes in the stream (`MSG_PEEK`).
    pub fn peek(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.recv_vectored(&mut [IoSliceMut::new(buf)], true)
    }

    fn recv_vectored(&self, bufs: &mut [IoSliceMut<'_>], peek: bool) -> io::Result<usize> {
        self.recv_with(bufs, peek, false)
    }

    /// A receive with per-call `MSG_PEEK` and `MSG_DONTWAIT`.
    pub(crate) fn recv_with(
        &self,
        bufs: &mut [IoSliceMut<'_>],
        peek: bool,
        dontwait: bool,
    ) -> io::Result<usize> {
        if bufs.iter().all(|b| b.is_empty()) {
            return Ok(0);
        }
        let mut c = self.inner.wait(Dir::Read, dontwait, Core::rx_ready)?;
        c.copy_out(bufs, peek)
    }

    fn send_vectored(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        self.send_with(bufs, false)
    }

    /// A send with per-call `MSG_DONTWAIT`.
    pub(crate) fn send_with(&self, bufs: &[IoSlice<'_>], dontwait: bool) -> io::Result<usize> {
        if bufs.iter().all(|b| b.is_empty()) {
            return Ok(0);
        }
        let mut c = self.inner.wait(Dir::Write, dontwait, Core::tx_ready)?;
        c.copy_in(bufs)
    }

    /// Whether the stream is set non-blocking.
    pub fn is_nonblocking(&self) -> bool {
        self.inner.nonblocking.load(Ordering::Relaxed)
    }

    /// What a read or write would do now, without waiting. With `arm`, also asks the peer to
    /// raise a notification on its next publish, so that [`VmmcStream::notify_fd`] wakes a
    /// poll loop that then sleeps; call again with `arm == false` after waking.
    pub fn readiness(&self, arm: bool) -> Readiness {
        let mut c = lock(&self.inner.core);
        c.pump();
        let read = c.rx_ready();
        let write = c.tx_ready();
        let error = c.broken.is_some();
        let r = Readiness {
            readable: !matches!(read, Ok(false)),
            writable: !matches!(write, Ok(false)),
            hangup: c.peer_left || !c.tx_import.is_alive() || (c.shut_rd && c.shut_wr),
            error,
        };
        let arm = arm && !(r.readable && r.writable);
        // The caller polls notify_fd() next: the wake-up must show there.
        self.inner.waiter.show_on_handle(arm);
        c.waiting_data = arm;
        c.waiting_room = arm;
        c.say_waiting();
        r
    }

    /// The raw form of [`VmmcStream::reserve`] for callers across an FFI or ioctl boundary:
    /// a pointer to up to `max` writable bytes, valid until the matching
    /// [`VmmcStream::commit_reserved`] or until the stream is dropped. Never waits.
    pub fn reserve_raw(&self, max: usize) -> io::Result<(*mut u8, usize)> {
        let mut c = self.inner.wait(Dir::Write, true, Core::tx_ready)?;
        let len = (c.tx.space() as usize).min(max);
        let at = c.tx.sent();
        let ptr = c.send_span(len)?.as_mut_ptr();
        c.raw_send = Some((at, len));
        Ok((ptr, len))
    }

    /// Publishes `n` bytes written through the pointer from [`VmmcStream::reserve_raw`].
    pub fn commit_reserved(&self, n: usize) -> io::Result<()> {
        let c = lock(&self.inner.core);
        let mut slot = SendSlot {
            core: c,
            len: 0,
            from_files: Vec::new(),
        };
        match slot.core.raw_send.take() {
            Some((at, len)) if at == slot.core.tx.sent() => slot.len = len,
            _ => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "no outstanding send reservation (or another send overtook it)",
                ))
            }
        }
        slot.commit(n)
    }

    /// The raw form of [`VmmcStream::readable`]: a pointer to the received bytes, valid until
    /// the matching [`VmmcStream::release_received`]. Never waits; length 0 at end of stream.
    pub fn readable_raw(&self) -> io::Result<(*const u8, usize)> {
        let mut c = self.inner.wait(Dir::Read, true, Core::rx_ready)?;
        let len = c.rx.available() as usize;
        let at = c.rx.read_index();
        let ptr = c.recv_span(len)?.as_ptr();
        c.raw_recv = Some((at, len));
        Ok((ptr, len))
    }

    /// Releases `n` bytes seen through the pointer from [`VmmcStream::readable_raw`].
    pub fn release_received(&self, n: usize) -> io::Result<()> {
        let c = lock(&self.inner.core);
        let mut slot = RecvSlot { core: c, len: 0 };
        match slot.core.raw_recv.take() {
            Some((at, len)) if at == slot.core.rx.read_index() && n <= len => slot.len = len,
            _ => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "no outstanding receive pointer covering that many bytes",
                ))
            }
        }
        slot.consume(n)
    }

    /// Shuts down sending, receiving or both. After `Write` the peer reads EOF once it has
    /// consumed what was sent; after `Read` the peer's sends fail with `BrokenPipe`.
    pub fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        lock(&self.inner.core).shut(
            matches!(how, Shutdown::Write | Shutdown::Both),
            matches!(how, Shutdown::Read | Shutdown::Both),
        )
    }

    /// Sends one byte of urgent (out-of-band) data. The byte travels in the stream like any
    /// other; the peer learns where it is ([`VmmcStream::at_mark`]) and can read it ahead of
    /// the data before it ([`VmmcStream::recv_urgent`]), as with TCP's urgent pointer.
    pub fn send_urgent(&self, byte: u8) -> io::Result<()> {
        let mut c = self.inner.wait(Dir::Write, false, Core::tx_ready)?;
        let index = c.tx.sent();
        c.copy_in(&[IoSlice::new(&[byte])])?;
        c.publish(PEER_URGENT, index + 1)
    }

    /// Whether the next byte to read is the urgent byte (`SIOCATMARK`).
    pub fn at_mark(&self) -> io::Result<bool> {
        let mut c = lock(&self.inner.core);
        c.refresh_rx()?;
        Ok(c.rx.until_mark() == Some(0))
    }

    /// The pending urgent byte, if one has arrived and not yet been read past (`MSG_OOB`).
    /// It stays in the stream as well.
    pub fn recv_urgent(&self) -> io::Result<Option<u8>> {
        let mut c = lock(&self.inner.core);
        c.refresh_rx()?;
        let Some(mark) = c.rx.mark() else {
            return Ok(None);
        };
        let at = HEADER + mark % c.rx.capacity();
        let mut b = [0u8; 1];
        c.rx_export.read_at(at, &mut b).map_err(nic_error)?;
        Ok(Some(b[0]))
    }

    /// Waits for room in the peer's ring and returns up to `max` bytes of it to write into
    /// in place; [`SendSlot::commit`] publishes what was written. On the shm backend the slot
    /// *is* the peer's memory: whatever fills it (a `pread` from a file, say) is the only copy.
    /// The slot holds the stream's lock; other calls on this stream wait until it is dropped.
    pub fn reserve(&self, max: usize) -> io::Result<SendSlot<'_>> {
        let c = self.inner.wait(Dir::Write, false, Core::tx_ready)?;
        let len = (c.tx.space() as usize).min(max);
        Ok(SendSlot {
            core: c,
            len,
            from_files: Vec::new(),
        })
    }

    /// Like [`reserve`](Self::reserve), but waits until at least `min` bytes are free, so that
    /// a message of known size (a reply header plus a file block) goes in one piece and the
    /// block can be `pread` straight into place. `min` beyond the peer's ring never fits and
    /// is refused.
    pub fn reserve_at_least(&self, min: usize, max: usize) -> io::Result<SendSlot<'_>> {
        if min as u64 > self.send_buffer_size() || min > max {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "cannot reserve {min}..{max} bytes in a {}-byte ring",
                    self.send_buffer_size()
                ),
            ));
        }
        let c = self
            .inner
            .wait(Dir::Write, false, |c| c.tx_ready_for(min as u64))?;
        let len = (c.tx.space() as usize).min(max);
        Ok(SendSlot {
            core: c,
            len,
            from_files: Vec::new(),
        })
    }

    /// Like [`readable`](Self::readable), but waits until at least `min` bytes have arrived
    /// (or the stream ended with fewer), so a whole message can be parsed and used in place.
    /// `min` beyond this side's ring never arrives and is refused.
    pub fn readable_at_least(&self, min: usize) -> io::Result<RecvSlot<'_>> {
        if min as u64 > self.recv_buffer_size() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "cannot wait for {min} bytes in a {}-byte ring",
                    self.recv_buffer_size()
                ),
            ));
        }
        let c = self
            .inner
            .wait(Dir::Read, false, |c| c.rx_ready_for(min.max(1) as u64))?;
        let len = c.rx.available() as usize;
        Ok(RecvSlot { core: c, len })
    }

    /// Waits for received bytes and returns them in place, in the ring; an empty slot means
    /// end of stream. [`RecvSlot::consume`] releases what was used. The slot holds the stream's
    /// lock; other calls on this stream wait until it is dropped.
    pub fn readable(&self) -> io::Result<RecvSlot<'_>> {
        let c = self.inner.wait(Dir::Read, false, Core::rx_ready)?;
        let len = c.rx.available() as usize;
        Ok(RecvSlot { core: c, len })
    }
}

/// Room in the peer's receive ring, to fill in place. Dropping it without `commit` sends
/// nothing.
pub struct SendSlot<'a> {
    core: MutexGuard<'a, Core>,
    len: usize,
    /// On tcp, the parts of the slot already deposited from files (start, length): the
    /// commit sends the rest from the staging buffer.
    from_files: Vec<(usize, usize)>,
}

impl std::fmt::Debug for SendSlot<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SendSlot").field("len", &self.len).finish()
    }
}

impl SendSlot<'_> {
    /// The writable bytes: one contiguous span, even across the ring's wrap. In the peer's
    /// memory on shm, which it may read or change at any moment: [`SharedBytesMut`], never a
    /// reference. Fails if the peer went away since the slot was made.
    pub fn buf(&mut self) -> io::Result<SharedBytesMut<'_>> {
        let len = self.len;
        self.core.send_span(len)
    }

    /// Bytes available in this slot.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the slot has no room (never, from a blocking `reserve`).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Fills `len` bytes of the slot from `at` with the bytes of `file` from `offset`, and
    /// returns how many came from it: fewer than `len` only where the file ends (or after an
    /// error that came after some bytes); the slot's bytes beyond those are unspecified. This
    /// process copies nothing: on shm the kernel's `pread` copies from the page cache straight
    /// into the peer's ring; on tcp a regular file's bytes go from the page cache to the
    /// socket by `sendfile` at once, as a deposit of their own ahead of the commit (which then
    /// sends only the rest of the slot), and the peer's kernel receives them into its ring.
    /// Bytes written through [`SendSlot::buf`] into a filled range afterwards may or may not
    /// replace the file's. On tcp the bytes are the page cache's until the peer receives
    /// them: a write to the file meanwhile may show in them, as it may in a `pread` that runs
    /// at the same time as the write.
    #[cfg(target_os = "linux")]
    pub fn fill_from_file(
        &mut self,
        at: usize,
        file: std::os::fd::BorrowedFd<'_>,
        offset: u64,
        len: usize,
    ) -> io::Result<usize> {
        if at.checked_add(len).is_none_or(|end| end > self.len) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("filling {len} bytes at {at} of a {}-byte slot", self.len),
            ));
        }
        let pos = i64::try_from(offset)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "file offset too large"))?;
        let c = &mut *self.core;
        let regular = || {
            nix::sys::stat::fstat(file).is_ok_and(|st| st.st_mode & libc::S_IFMT == libc::S_IFREG)
        };
        if !c.shm && regular() {
            let at_ring = Core::ring_at(c.tx.write_offset()) + at as u64;
            let n = match c.tx_import.deposit_from_file(at_ring, file, offset, len) {
                Ok(n) => n,
                // The file failed: the deposit is complete (with zeros), the connection sound.
                Err(vmmc_nic::Error::Io { source, .. }) => return Err(source),
                Err(e) => return Err(c.fail_nic(e)),
            };
            self.from_files.push((at, n));
            return Ok(n);
        }
        // shm: the kernel copies into the peer's ring; tcp, a file that cannot be sent
        // (not a regular one): into the staging buffer, which the commit sends.
        let mut span = c.send_span(self.len)?;
        let Some(mut into) = span.get_mut(at..at + len) else {
            return Err(io::Error::other("the send slot is shorter than asked"));
        };
        let mut done = 0;
        while done < len {
            let Some(mut rest) = into.get_mut(done..) else {
                break;
            };
            match rest.pread_from(file, pos.saturating_add(done as i64)) {
                Ok(0) => break,
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if done == 0 => return Err(e),
                Err(_) => break,
            }
        }
        Ok(done)
    }

    /// Publishes the first `n` bytes written into the slot.
    pub fn commit(mut self, n: usize) -> io::Result<()> {
        if n > self.len {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("committing {n} bytes of a {}-byte slot", self.len),
            ));
        }
        let c = &mut *self.core;
        if !c.shm {
            let at = Core::ring_at(c.tx.write_offset());
            let staging = c.staging.take();
            let r = match &staging {
                Some(b) if n <= b.len() && self.from_files.is_empty() => {
                    c.tcp_deposit_and_publish(at, &b.as_slice()[..n])
                }
                Some(b) if n <= b.len() => {
                    c.tcp_publish_around(at, &b.as_slice()[..n], &mut self.from_files)
                }
                _ => Err(io::Error::other("the send slot's buffer is gone")),
            };
            c.staging = staging;
            return r;
        }
        c.tx_import.count_in_place(n);
        c.tx.commit(n as u64);
        let sent = c.tx.sent();
        c.publish(PEER_WRITE, sent)
    }
}

/// Received bytes, in place in the ring.
pub struct RecvSlot<'a> {
    core: MutexGuard<'a, Core>,
    len: usize,
}

impl std::fmt::Debug for RecvSlot<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecvSlot").field("len", &self.len).finish()
    }
}

impl RecvSlot<'_> {
    /// The received bytes: one contiguous span, even across the ring's wrap. In my ring,
    /// which the peer may write at any moment: [`SharedBytes`], never a reference. Copy out
    /// what is to be parsed before checking it.
    pub fn data(&self) -> io::Result<SharedBytes<'_>> {
        self.core.recv_span(self.len)
    }

    /// Bytes in this slot; 0 at end of stream.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether this is the end of the stream.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Releases the first `n` bytes to the sender.
    pub fn consume(mut self, n: usize) -> io::Result<()> {
        let n = n.min(self.len) as u64;
        if n == 0 {
            return Ok(());
        }
        let c = &mut *self.core;
        c.rx.consume(n);
        c.give_credit();
        Ok(())
    }
}

impl Read for VmmcStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        (&*self).read(buf)
    }

    fn read_vectored(&mut self, bufs: &mut [IoSliceMut<'_>]) -> io::Result<usize> {
        (&*self).read_vectored(bufs)
    }
}

impl Read for &VmmcStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.recv_vectored(&mut [IoSliceMut::new(buf)], false)
    }

    fn read_vectored(&mut self, bufs: &mut [IoSliceMut<'_>]) -> io::Result<usize> {
        self.recv_vectored(bufs, false)
    }
}

impl Write for VmmcStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        (&*self).write(buf)
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        (&*self).write_vectored(bufs)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Write for &VmmcStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.send_vectored(&[IoSlice::new(buf)])
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        self.send_vectored(bufs)
    }

    /// Deposits are visible to the peer as soon as `write` returns (shm) or in order right
    /// after (tcp); there is nothing to flush.
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
