//! The socket table: BSD- and WinSock-shaped calls over integer descriptors.
//!
//! Programs written against sockets (and the DFS's own front ends) call these instead of the
//! kernel's. Descriptors index a process-wide table; every call is thread-safe, and blocking
//! calls (accept, recv, send, poll) hold no table lock while they wait, so one thread can
//! block in `recv` while another sends on the same socket.

use std::io::{self, IoSlice, IoSliceMut};
use std::net::Shutdown;
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::{Duration, Instant};

use vmmc_nic::{AsWaitHandle, OwnedWaitHandle, PeerIdentity};

use crate::codes;
use crate::layout::RingSize;
use crate::options::StreamOptions;
use crate::winsock::{self, SocketHandle};
use crate::{VmmcListener, VmmcStream};

/// A socket descriptor: an index into the table.
pub type Sock = i32;

/// Send or receive urgent (out-of-band) data.
pub const MSG_OOB: i32 = 0x1;
/// Receive without consuming.
pub const MSG_PEEK: i32 = 0x2;
/// Do not wait, whatever the socket's blocking mode.
pub const MSG_DONTWAIT: i32 = 0x40;
/// Receive until the buffer is full (or end of stream, an error, or a timeout).
pub const MSG_WAITALL: i32 = 0x100;

/// `poll` event: readable (or a connection to accept).
pub const POLLIN: i16 = 0x1;
/// `poll` event: writable.
pub const POLLOUT: i16 = 0x4;
/// `poll` event: error.
pub const POLLERR: i16 = 0x8;
/// `poll` event: the peer hung up.
pub const POLLHUP: i16 = 0x10;
/// `poll` event: not a socket.
pub const POLLNVAL: i16 = 0x20;

/// One entry of a `poll` call.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PollFd {
    /// The socket.
    pub fd: Sock,
    /// What to wait for (`POLLIN`, `POLLOUT`).
    pub events: i16,
    /// What happened; filled in by `poll`.
    pub revents: i16,
}

/// Socket options.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SockOpt {
    /// Receive ring size; settable before `connect` or `listen`.
    RcvBuf(u64),
    /// The peer's ring size (read-only once connected; accepted and ignored before).
    SndBuf(u64),
    /// Receive timeout; `None` waits for ever.
    RcvTimeo(Option<Duration>),
    /// Send timeout; `None` waits for ever.
    SndTimeo(Option<Duration>),
    /// Accepted for compatibility: every send is visible to the peer at once anyway.
    NoDelay(bool),
}

/// Which option `getsockopt` reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SockOptName {
    /// `SO_RCVBUF`.
    RcvBuf,
    /// `SO_SNDBUF`.
    SndBuf,
    /// `SO_RCVTIMEO`.
    RcvTimeo,
    /// `SO_SNDTIMEO`.
    SndTimeo,
    /// `TCP_NODELAY`.
    NoDelay,
}

/// `ioctlsocket` requests, including the pointer-based extension.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ioctl {
    /// `FIONBIO`: set non-blocking mode.
    NonBlocking(bool),
    /// `FIONREAD`: bytes ready to read.
    BytesReadable,
    /// `SIOCATMARK`: whether the next byte is the urgent byte.
    AtMark,
    /// Get a pointer to up to `max` bytes of the peer's ring to write into.
    GetSendPointer {
        /// Most bytes wanted.
        max: usize,
    },
    /// Publish `n` bytes written through the send pointer.
    CommitSend(usize),
    /// Get a pointer to the received bytes in place.
    GetRecvPointer,
    /// Release `n` bytes seen through the receive pointer.
    ReleaseRecv(usize),
}

/// What an `ioctlsocket` request returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IoctlOut {
    /// Nothing to return.
    Done,
    /// A count.
    Value(u64),
    /// A yes or no.
    Flag(bool),
    /// A pointer and a length, valid until the matching commit or release.
    Pointer(*mut u8, usize),
}

/// Per-socket settings that outlive state changes.
#[derive(Clone, Debug, Default)]
struct Settings {
    nonblocking: bool,
    rcvtimeo: Option<Duration>,
    sndtimeo: Option<Duration>,
    nodelay: bool,
    ring: Option<RingSize>,
}

enum State {
    Fresh,
    Bound(String),
    Listening(Arc<VmmcListener>),
    Connected(VmmcStream),
}

struct Entry {
    generation: u32,
    state: Mutex<(State, Settings)>,
}

/// A table of sockets. Most programs use [`SocketTable::global`].
#[derive(Default)]
pub struct SocketTable {
    slots: RwLock<Vec<(u32, Option<Arc<Entry>>)>>,
}

impl std::fmt::Debug for SocketTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let open = self.read_slots().iter().filter(|s| s.1.is_some()).count();
        f.debug_struct("SocketTable").field("open", &open).finish()
    }
}

fn not_a_socket() -> io::Error {
    io::Error::from_raw_os_error(codes::ENOTSOCK)
}

fn errno(code: i32) -> io::Error {
    io::Error::from_raw_os_error(code)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl SocketTable {
    /// An empty table.
    pub fn new() -> SocketTable {
        SocketTable::default()
    }

    /// The process-wide table.
    pub fn global() -> &'static SocketTable {
        static TABLE: OnceLock<SocketTable> = OnceLock::new();
        TABLE.get_or_init(SocketTable::new)
    }

    fn read_slots(&self) -> std::sync::RwLockReadGuard<'_, Vec<(u32, Option<Arc<Entry>>)>> {
        self.slots.read().unwrap_or_else(|p| p.into_inner())
    }

    fn entry(&self, s: Sock) -> io::Result<Arc<Entry>> {
        let i = usize::try_from(s).map_err(|_| not_a_socket())?;
        self.read_slots()
            .get(i)
            .and_then(|(_, e)| e.clone())
            .ok_or_else(not_a_socket)
    }

    fn insert(&self, state: State, settings: Settings) -> Sock {
        let mut slots = self.slots.write().unwrap_or_else(|p| p.into_inner());
        let i = match slots.iter().position(|(_, e)| e.is_none()) {
            Some(i) => i,
            None => {
                slots.push((0, None));
                slots.len() - 1
            }
        };
        let generation = slots[i].0.wrapping_add(1);
        slots[i] = (
            generation,
            Some(Arc::new(Entry {
                generation,
                state: Mutex::new((state, settings)),
            })),
        );
        i as Sock
    }

    fn stream(&self, s: Sock) -> io::Result<(VmmcStream, Settings)> {
        let e = self.entry(s)?;
        let g = lock(&e.state);
        match &g.0 {
            State::Connected(st) => Ok((st.clone(), g.1.clone())),
            _ => Err(errno(codes::ENOTCONN)),
        }
    }

    fn options(settings: &Settings) -> StreamOptions {
        StreamOptions {
            ring: settings.ring.unwrap_or_default(),
            ..StreamOptions::default()
        }
    }

    /// A new, unconnected stream socket.
    pub fn socket(&self) -> io::Result<Sock> {
        Ok(self.insert(State::Fresh, Settings::default()))
    }

    /// Gives the socket its address (`shm:NAME` or `tcp:HOST:PORT`) for a later `listen`.
    pub fn bind(&self, s: Sock, addr: &str) -> io::Result<()> {
        addr.parse::<vmmc_nic::NodeAddr>()
            .map_err(crate::stream::nic_error)?;
        let e = self.entry(s)?;
        let mut g = lock(&e.state);
        match g.0 {
            State::Fresh => {
                g.0 = State::Bound(addr.to_owned());
                Ok(())
            }
            _ => Err(errno(codes::EINVAL)),
        }
    }

    /// Starts listening at the bound address. The backlog is the listener's own
    /// ([`crate::BACKLOG`]); the argument is accepted for compatibility.
    pub fn listen(&self, s: Sock, _backlog: i32) -> io::Result<()> {
        let e = self.entry(s)?;
        let mut g = lock(&e.state);
        let addr = match &g.0 {
            State::Bound(a) => a.clone(),
            State::Listening(_) => return Ok(()),
            _ => return Err(errno(codes::EINVAL)),
        };
        let l = VmmcListener::bind_with(&addr, SocketTable::options(&g.1))?;
        l.set_nonblocking(g.1.nonblocking)?;
        g.0 = State::Listening(Arc::new(l));
        Ok(())
    }

    /// The address a bound or listening socket has (with the real port once listening).
    pub fn local_addr(&self, s: Sock) -> io::Result<String> {
        let e = self.entry(s)?;
        let g = lock(&e.state);
        match &g.0 {
            State::Bound(a) => Ok(a.clone()),
            State::Listening(l) => Ok(l.local_addr().to_string()),
            State::Connected(st) => Ok(st.local_addr().to_string()),
            State::Fresh => Err(errno(codes::EINVAL)),
        }
    }

    /// Takes a connection from a listening socket; the new socket inherits its settings.
    pub fn accept(&self, s: Sock) -> io::Result<(Sock, PeerIdentity)> {
        let e = self.entry(s)?;
        let (listener, settings) = {
            let g = lock(&e.state);
            match &g.0 {
                State::Listening(l) => (l.clone(), g.1.clone()),
                _ => return Err(errno(codes::EINVAL)),
            }
        };
        let (stream, who) = listener.accept()?;
        apply(&stream, &settings)?;
        Ok((self.insert(State::Connected(stream), settings), who))
    }

    /// Connects to a listener.
    pub fn connect(&self, s: Sock, addr: &str) -> io::Result<()> {
        let e = self.entry(s)?;
        let settings = {
            let g = lock(&e.state);
            match g.0 {
                State::Fresh | State::Bound(_) => g.1.clone(),
                State::Connected(_) => return Err(errno(codes::EISCONN)),
                State::Listening(_) => return Err(errno(codes::EINVAL)),
            }
        };
        let stream = VmmcStream::connect_with(addr, &SocketTable::options(&settings))?;
        apply(&stream, &settings)?;
        let mut g = lock(&e.state);
        g.0 = State::Connected(stream);
        Ok(())
    }

    /// Sends; `MSG_OOB` makes the last byte urgent, `MSG_DONTWAIT` never waits.
    pub fn send(&self, s: Sock, buf: &[u8], flags: i32) -> io::Result<usize> {
        self.sendmsg(s, &[IoSlice::new(buf)], flags)
    }

    /// Sends from several buffers as one stream of bytes.
    pub fn sendmsg(&self, s: Sock, bufs: &[IoSlice<'_>], flags: i32) -> io::Result<usize> {
        check_flags(flags, MSG_OOB | MSG_DONTWAIT)?;
        let (st, _) = self.stream(s)?;
        let dontwait = flags & MSG_DONTWAIT != 0;
        if flags & MSG_OOB == 0 {
            return st.send_with(bufs, dontwait);
        }
        // Urgent: everything but the last byte as usual, then the last byte marked.
        let all: Vec<u8> = bufs.iter().flat_map(|b| b.iter().copied()).collect();
        let Some((&last, head)) = all.split_last() else {
            return Ok(0);
        };
        let mut sent = 0;
        while sent < head.len() {
            sent += st.send_with(&[IoSlice::new(&head[sent..])], dontwait)?;
        }
        st.send_urgent(last)?;
        Ok(all.len())
    }

    /// Receives; `MSG_PEEK` leaves the bytes, `MSG_OOB` reads the urgent byte, `MSG_WAITALL`
    /// fills the buffer, `MSG_DONTWAIT` never waits. 0 means end of stream.
    pub fn recv(&self, s: Sock, buf: &mut [u8], flags: i32) -> io::Result<usize> {
        self.recvmsg(s, &mut [IoSliceMut::new(buf)], flags)
    }

    /// Receives into several buffers.
    pub fn recvmsg(&self, s: Sock, bufs: &mut [IoSliceMut<'_>], flags: i32) -> io::Result<usize> {
        check_flags(flags, MSG_OOB | MSG_PEEK | MSG_DONTWAIT | MSG_WAITALL)?;
        let (st, _) = self.stream(s)?;
        let dontwait = flags & MSG_DONTWAIT != 0;
        let peek = flags & MSG_PEEK != 0;
        if flags & MSG_OOB != 0 {
            let byte = st.recv_urgent()?.ok_or_else(|| errno(codes::EINVAL))?;
            return match bufs.iter_mut().find(|b| !b.is_empty()) {
                Some(b) => {
                    b[0] = byte;
                    Ok(1)
                }
                None => Ok(0),
            };
        }
        if flags & MSG_WAITALL == 0 || peek {
            return st.recv_with(bufs, peek, dontwait);
        }
        let want: usize = bufs.iter().map(|b| b.len()).sum();
        let mut flat = vec![0u8; want];
        let mut got = 0;
        while got < want {
            match st.recv_with(&mut [IoSliceMut::new(&mut flat[got..])], false, dontwait) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if got > 0 => {
                    tracing::debug!("MSG_WAITALL stops short after {got} bytes: {e}");
                    break;
                }
                Err(e) => return Err(e),
            }
        }
        let mut at = 0;
        for b in bufs.iter_mut() {
            let n = b.len().min(got - at);
            b[..n].copy_from_slice(&flat[at..at + n]);
            at += n;
        }
        Ok(got)
    }

    /// Shuts down one or both directions.
    pub fn shutdown(&self, s: Sock, how: Shutdown) -> io::Result<()> {
        self.stream(s)?.0.shutdown(how)
    }

    /// Closes the socket; its descriptor (and WinSock handle) becomes invalid at once.
    pub fn closesocket(&self, s: Sock) -> io::Result<()> {
        let i = usize::try_from(s).map_err(|_| not_a_socket())?;
        let mut slots = self.slots.write().unwrap_or_else(|p| p.into_inner());
        match slots.get_mut(i) {
            Some((_, e @ Some(_))) => {
                *e = None;
                Ok(())
            }
            _ => Err(not_a_socket()),
        }
    }

    /// Sets an option.
    pub fn setsockopt(&self, s: Sock, opt: SockOpt) -> io::Result<()> {
        let e = self.entry(s)?;
        let mut g = lock(&e.state);
        match opt {
            SockOpt::RcvBuf(n) => match g.0 {
                State::Fresh | State::Bound(_) => g.1.ring = Some(RingSize::at_least(n)),
                _ => return Err(errno(codes::EISCONN)),
            },
            SockOpt::SndBuf(_) => {}
            SockOpt::RcvTimeo(t) => {
                let t = t.filter(|d| !d.is_zero());
                g.1.rcvtimeo = t;
                if let State::Connected(st) = &g.0 {
                    st.set_read_timeout(t)?;
                }
            }
            SockOpt::SndTimeo(t) => {
                let t = t.filter(|d| !d.is_zero());
                g.1.sndtimeo = t;
                if let State::Connected(st) = &g.0 {
                    st.set_write_timeout(t)?;
                }
            }
            SockOpt::NoDelay(on) => g.1.nodelay = on,
        }
        Ok(())
    }

    /// Reads an option.
    pub fn getsockopt(&self, s: Sock, name: SockOptName) -> io::Result<SockOpt> {
        let e = self.entry(s)?;
        let g = lock(&e.state);
        let ring = g.1.ring.unwrap_or_default().get();
        Ok(match name {
            SockOptName::RcvBuf => SockOpt::RcvBuf(match &g.0 {
                State::Connected(st) => st.recv_buffer_size(),
                _ => ring,
            }),
            SockOptName::SndBuf => SockOpt::SndBuf(match &g.0 {
                State::Connected(st) => st.send_buffer_size(),
                _ => ring,
            }),
            SockOptName::RcvTimeo => SockOpt::RcvTimeo(g.1.rcvtimeo),
            SockOptName::SndTimeo => SockOpt::SndTimeo(g.1.sndtimeo),
            SockOptName::NoDelay => SockOpt::NoDelay(g.1.nodelay),
        })
    }

    /// `ioctlsocket`, with the pointer-based requests that let a program fill the peer's ring
    /// or read its own in place.
    pub fn ioctlsocket(&self, s: Sock, req: Ioctl) -> io::Result<IoctlOut> {
        if let Ioctl::NonBlocking(on) = req {
            let e = self.entry(s)?;
            let mut g = lock(&e.state);
            g.1.nonblocking = on;
            match &g.0 {
                State::Connected(st) => st.set_nonblocking(on)?,
                State::Listening(l) => l.set_nonblocking(on)?,
                _ => {}
            }
            return Ok(IoctlOut::Done);
        }
        let (st, _) = self.stream(s)?;
        Ok(match req {
            Ioctl::NonBlocking(_) => IoctlOut::Done,
            Ioctl::BytesReadable => IoctlOut::Value(st.bytes_readable()?),
            Ioctl::AtMark => IoctlOut::Flag(st.at_mark()?),
            Ioctl::GetSendPointer { max } => {
                let (p, n) = st.reserve_raw(max)?;
                IoctlOut::Pointer(p, n)
            }
            Ioctl::CommitSend(n) => {
                st.commit_reserved(n)?;
                IoctlOut::Done
            }
            Ioctl::GetRecvPointer => {
                let (p, n) = st.readable_raw()?;
                IoctlOut::Pointer(p.cast_mut(), n)
            }
            Ioctl::ReleaseRecv(n) => {
                st.release_received(n)?;
                IoctlOut::Done
            }
        })
    }

    /// Waits until one of `fds` is ready or `timeout` passes; returns how many are.
    pub fn poll(&self, fds: &mut [PollFd], timeout: Option<Duration>) -> io::Result<usize> {
        let deadline = timeout.map(|t| Instant::now() + t);
        let mut arm = false;
        loop {
            let mut ready = 0;
            let mut wake: Vec<OwnedWaitHandle> = Vec::new();
            for p in fds.iter_mut() {
                p.revents = self.revents(p, arm, &mut wake);
                if p.revents != 0 {
                    ready += 1;
                }
            }
            if ready > 0 || deadline.is_some_and(|d| Instant::now() >= d) {
                if arm {
                    for p in fds.iter() {
                        self.disarm(p.fd);
                    }
                }
                return Ok(ready);
            }
            if !arm {
                // Look once more with the peers asked to notify, then sleep.
                arm = true;
                continue;
            }
            let slice = deadline
                .map(|d| d.saturating_duration_since(Instant::now()))
                .unwrap_or(Duration::from_millis(50))
                .min(Duration::from_millis(50));
            let handles: Vec<_> = wake.iter().map(|f| f.as_wait_handle()).collect();
            let slice = slice.clamp(Duration::from_millis(1), Duration::from_millis(50));
            let _ = vmmc_nic::poll_readable(&handles, Some(slice));
        }
    }

    fn revents(&self, p: &PollFd, arm: bool, wake: &mut Vec<OwnedWaitHandle>) -> i16 {
        let Ok(e) = self.entry(p.fd) else {
            return POLLNVAL;
        };
        let g = lock(&e.state);
        let mut fd = None;
        let r = match &g.0 {
            State::Connected(st) => {
                let r = st.readiness(arm);
                fd = st.notify_fd().try_clone_to_owned().ok();
                let mut ev = 0;
                if r.readable {
                    ev |= POLLIN;
                }
                if r.writable {
                    ev |= POLLOUT;
                }
                ev &= p.events;
                if r.hangup {
                    ev |= POLLHUP;
                }
                if r.error {
                    ev |= POLLERR;
                }
                ev
            }
            State::Listening(l) => {
                fd = l.notify_fd().try_clone_to_owned().ok();
                if l.pending() > 0 {
                    POLLIN & p.events
                } else {
                    0
                }
            }
            _ => 0,
        };
        if let Some(f) = fd {
            wake.push(f);
        }
        r
    }

    fn disarm(&self, s: Sock) {
        if let Ok((st, _)) = self.stream(s) {
            let _ = st.readiness(false);
        }
    }

    /// BSD `select` over three sets; each set is narrowed to its ready sockets.
    pub fn select(
        &self,
        read: &mut Vec<Sock>,
        write: &mut Vec<Sock>,
        except: &mut Vec<Sock>,
        timeout: Option<Duration>,
    ) -> io::Result<usize> {
        let mut fds: Vec<PollFd> = Vec::new();
        for (set, ev) in [(&*read, POLLIN), (&*write, POLLOUT), (&*except, 0)] {
            for &fd in set {
                if self.entry(fd).is_err() {
                    return Err(not_a_socket());
                }
                fds.push(PollFd {
                    fd,
                    events: ev,
                    revents: 0,
                });
            }
        }
        self.poll(&mut fds, timeout)?;
        let mut it = fds.iter();
        let mut keep = |set: &mut Vec<Sock>, want: i16| {
            let flags: Vec<i16> = set
                .iter()
                .map(|_| it.next().map_or(0, |p| p.revents))
                .collect();
            let mut f = flags.iter();
            set.retain(|_| f.next().is_some_and(|r| r & want != 0));
        };
        keep(read, POLLIN | POLLHUP | POLLERR);
        keep(write, POLLOUT | POLLERR);
        keep(except, POLLERR);
        Ok(read.len() + write.len() + except.len())
    }

    /// The WinSock `SOCKET` handle of a descriptor.
    pub fn to_handle(&self, s: Sock) -> io::Result<SocketHandle> {
        let e = self.entry(s)?;
        Ok(winsock::encode(s as usize, e.generation))
    }

    /// The descriptor a WinSock `SOCKET` handle names; stale or forged handles are refused
    /// with `ENOTSOCK` (`WSAENOTSOCK`).
    pub fn from_handle(&self, h: SocketHandle) -> io::Result<Sock> {
        let (i, generation) = winsock::decode(h).ok_or_else(not_a_socket)?;
        let s = Sock::try_from(i).map_err(|_| not_a_socket())?;
        match self.entry(s) {
            Ok(e) if e.generation == generation => Ok(s),
            _ => Err(not_a_socket()),
        }
    }

    /// The raw fd of a socket's notifications, for programs that mix table sockets into their
    /// own poll loop (see [`VmmcStream::readiness`] for arming).
    #[cfg(unix)]
    pub fn notify_fd(&self, s: Sock) -> io::Result<std::os::fd::RawFd> {
        use std::os::fd::AsRawFd;
        self.with_notify(s, |h| h.as_raw_fd())
    }

    /// The raw socket of a socket's notifications, for programs that mix table sockets into
    /// their own `WSAPoll` loop (see [`VmmcStream::readiness`] for arming).
    #[cfg(windows)]
    pub fn notify_fd(&self, s: Sock) -> io::Result<std::os::windows::io::RawSocket> {
        use std::os::windows::io::AsRawSocket;
        self.with_notify(s, |h| h.as_raw_socket())
    }

    fn with_notify<R>(
        &self,
        s: Sock,
        f: impl FnOnce(vmmc_nic::WaitHandle<'_>) -> R,
    ) -> io::Result<R> {
        let e = self.entry(s)?;
        let g = lock(&e.state);
        match &g.0 {
            State::Connected(st) => Ok(f(st.notify_fd())),
            State::Listening(l) => Ok(f(l.notify_fd())),
            _ => Err(errno(codes::ENOTCONN)),
        }
    }
}

fn check_flags(flags: i32, allowed: i32) -> io::Result<()> {
    if flags & !allowed != 0 {
        return Err(errno(codes::EOPNOTSUPP));
    }
    Ok(())
}

fn apply(st: &VmmcStream, s: &Settings) -> io::Result<()> {
    st.set_nonblocking(s.nonblocking)?;
    st.set_read_timeout(s.rcvtimeo)?;
    st.set_write_timeout(s.sndtimeo)
}

/// Calls for wrappers that put table sockets behind kernel descriptors (the Linux preload),
/// where `poll`, `epoll` and `fork` must be answered without a system call per look.
impl SocketTable {
    /// What `s` is ready for among `events` (plus `POLLHUP`/`POLLERR`), as
    /// [`SocketTable::poll`] would report it; `POLLNVAL` for no socket. With `arm`, the peer
    /// is asked to raise the socket's notification fd ([`SocketTable::notify_fd`]) on its next
    /// publish, so a caller may sleep on that fd; look again without `arm` after waking.
    /// Unlike `poll`, this duplicates no descriptor and never waits.
    pub fn readiness(&self, s: Sock, events: i16, arm: bool) -> i16 {
        let Ok(e) = self.entry(s) else {
            return POLLNVAL;
        };
        let g = lock(&e.state);
        match &g.0 {
            State::Connected(st) => {
                let r = st.readiness(arm);
                let mut ev = 0;
                if r.readable {
                    ev |= POLLIN;
                }
                if r.writable {
                    ev |= POLLOUT;
                }
                ev &= events;
                if r.hangup {
                    ev |= POLLHUP;
                }
                if r.error {
                    ev |= POLLERR;
                }
                ev
            }
            State::Listening(l) if l.pending() > 0 => POLLIN & events,
            _ => 0,
        }
    }

    /// Whether `s` is listening (an `accept` target) rather than a stream.
    pub fn is_listening(&self, s: Sock) -> bool {
        self.entry(s)
            .is_ok_and(|e| matches!(lock(&e.state).0, State::Listening(_)))
    }

    /// Removes `s` without a word to its peer, for a process that shares the socket's
    /// memory and descriptors with another one that owns it (after `fork`). Nothing of the
    /// socket is dropped: dropping would shut down kernel objects the owner shares (the
    /// control connections, whose shutdown the peer reads as a departure), and a listener's
    /// threads belong to the process that made it. Its memory and descriptors stay in this
    /// process until exit.
    pub fn abandon(&self, s: Sock) -> io::Result<()> {
        let e = self.entry(s)?;
        {
            let mut g = lock(&e.state);
            std::mem::forget(std::mem::replace(&mut g.0, State::Fresh));
        }
        self.closesocket(s)
    }
}
