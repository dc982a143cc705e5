//! The socket calls on VMMC sockets, behind kernel placeholders.
//!
//! A program's socket starts as the kernel socket it asked for. When it connects to, or
//! binds, an address the routes send to VMMC, a socket-table socket takes over and the
//! kernel socket stays open, unconnected, as its placeholder: its number is the program's
//! descriptor, so numbers never collide with anything the kernel hands out, and a call this
//! library does not take (sendfile, splice, mmsg) reaches an unconnected socket and fails
//! (`ENOTCONN`, `EPIPE`) instead of quietly doing something else. The placeholder also
//! keeps the descriptor flags (`O_NONBLOCK`, `FD_CLOEXEC`) the program set.

use std::io::{self, IoSlice, IoSliceMut};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr};
use std::time::Duration;

use vmmc_sockets::table::{Ioctl, IoctlOut, Sock, SockOpt, SockOptName, SocketTable};

use crate::fdmap::{self, Meta};
use crate::ffi::real;
use crate::fork::{self, Claim};
use crate::{config, prespin, wait};

fn table() -> &'static SocketTable {
    SocketTable::global()
}

fn err(code: i32) -> io::Error {
    io::Error::from_raw_os_error(code)
}

/// Flags kernel sockets take that mean nothing on a VMMC stream: no signal is ever raised
/// (`MSG_NOSIGNAL`), every send is visible at once (`MSG_MORE`), and no descriptors travel
/// (`MSG_CMSG_CLOEXEC`).
const IGNORED_FLAGS: i32 = libc::MSG_NOSIGNAL | libc::MSG_MORE | libc::MSG_CMSG_CLOEXEC;

/// Whether this process may use `s` now: after a `fork`, the first process to use a socket
/// takes it (see [`crate::fork`]).
pub fn usable(s: Sock) -> io::Result<()> {
    if !fork::any_open() {
        return Ok(());
    }
    let mut m = fdmap::metas();
    match m.map().get_mut(&s) {
        Some(meta) => {
            if meta.claim.take() {
                Ok(())
            } else {
                Err(err(libc::ENOTCONN))
            }
        }
        None => Ok(()),
    }
}

fn register(fd: i32, s: Sock, family: i32, local: Option<SocketAddr>, peer: Option<SocketAddr>) {
    prespin::reset(s);
    let mut m = fdmap::metas();
    m.map().insert(
        s,
        Meta {
            refs: 1,
            family,
            local,
            peer,
            claim: Claim::new(),
        },
    );
    drop(m);
    if fdmap::set(fd, Some(s)).is_err() {
        // Beyond the map: undo; the caller sees the socket as not routed.
        fdmap::metas().map().remove(&s);
    }
}

fn family_of(addr: SocketAddr) -> i32 {
    match addr {
        SocketAddr::V4(_) => libc::AF_INET,
        SocketAddr::V6(_) => libc::AF_INET6,
    }
}

fn loopback(family: i32) -> SocketAddr {
    let ip = if family == libc::AF_INET6 {
        IpAddr::V6(Ipv6Addr::LOCALHOST)
    } else {
        IpAddr::V4(Ipv4Addr::LOCALHOST)
    };
    SocketAddr::new(ip, 0)
}

/// Only kernel stream sockets are routed; UDP and everything else stays in the kernel.
fn is_stream(fd: i32) -> bool {
    real::getsockopt_int(fd, libc::SOL_SOCKET, libc::SO_TYPE).ok() == Some(libc::SOCK_STREAM)
}

fn nonblocking(fd: i32) -> bool {
    real::fcntl_int(fd, libc::F_GETFL, 0).is_ok_and(|f| f & libc::O_NONBLOCK != 0)
}

/// Tells the table and the lock-free flag whether `s` is non-blocking.
fn set_table_nonblocking(s: Sock, on: bool) -> io::Result<()> {
    table().ioctlsocket(s, Ioctl::NonBlocking(on))?;
    fdmap::set_nonblocking(s, on);
    Ok(())
}

fn new_table_socket(fd: i32) -> io::Result<Sock> {
    let s = table().socket()?;
    set_table_nonblocking(s, nonblocking(fd))?;
    if let Some(bytes) = config::ring() {
        table().setsockopt(s, SockOpt::RcvBuf(bytes))?;
    }
    Ok(s)
}

/// Whether a failed VMMC connect means "nobody listens there", as opposed to a listener
/// that refused or broke.
fn no_listener(e: &io::Error) -> bool {
    matches!(
        e.get_ref()
            .and_then(|i| i.downcast_ref::<vmmc_sockets::NicError>()),
        Some(vmmc_sockets::NicError::NoEndpoint(_))
    ) || matches!(
        e.kind(),
        io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused
    )
}

/// `connect` on a kernel socket: `None` if `addr` is not routed (the caller connects the
/// kernel socket), else the outcome on VMMC. With no VMMC listener, a route without
/// `strict` connects the kernel socket to `addr` instead; a strict one fails with
/// `ECONNREFUSED`, as kernel TCP does when nothing listens.
pub fn connect(fd: i32, addr: SocketAddr) -> Option<io::Result<()>> {
    let target = config::routes()?.for_connect(addr)?;
    if !is_stream(fd) {
        return None;
    }
    let s = match new_table_socket(fd) {
        Ok(s) => s,
        Err(e) => return Some(Err(e)),
    };
    match table().connect(s, &target.addr) {
        Ok(()) => {
            if config::debug() {
                eprintln!("vmmc-preload: fd {fd}: connect {addr} -> {}", target.addr);
            }
            register(fd, s, family_of(addr), None, Some(addr));
            if fdmap::sock_of(fd) != Some(s) {
                let _ = table().closesocket(s);
                return Some(Err(err(libc::EMFILE)));
            }
            Some(Ok(()))
        }
        Err(e) => {
            let _ = table().closesocket(s);
            if !no_listener(&e) {
                return Some(Err(e));
            }
            if target.strict {
                if config::debug() {
                    eprintln!(
                        "vmmc-preload: fd {fd}: no listener at {}: refused",
                        target.addr
                    );
                }
                return Some(Err(err(libc::ECONNREFUSED)));
            }
            if config::debug() {
                eprintln!(
                    "vmmc-preload: fd {fd}: no listener at {}: kernel TCP to {addr}",
                    target.addr
                );
            }
            Some(real::connect(fd, addr))
        }
    }
}

/// `bind` on a kernel socket: `None` if `addr` is not routed, else the outcome: the socket
/// will listen on VMMC only (the kernel socket stays unbound).
pub fn bind(fd: i32, addr: SocketAddr) -> Option<io::Result<()>> {
    let target = config::routes()?.for_bind(addr)?;
    if !is_stream(fd) {
        return None;
    }
    let r = (|| {
        let s = new_table_socket(fd)?;
        if let Err(e) = table().bind(s, &target.addr) {
            let _ = table().closesocket(s);
            return Err(e);
        }
        register(fd, s, family_of(addr), Some(addr), None);
        if fdmap::sock_of(fd) != Some(s) {
            let _ = table().closesocket(s);
            return Err(err(libc::EMFILE));
        }
        if config::debug() {
            eprintln!("vmmc-preload: fd {fd}: bind {addr} -> {}", target.addr);
        }
        Ok(())
    })();
    Some(r)
}

/// `listen` on a bound VMMC socket.
pub fn listen(fd: i32, s: Sock, backlog: i32) -> io::Result<()> {
    usable(s)?;
    set_table_nonblocking(s, nonblocking(fd))?;
    table().listen(s, backlog).map_err(|e| {
        if e.kind() == io::ErrorKind::AddrInUse {
            err(libc::EADDRINUSE)
        } else {
            e
        }
    })
}

/// `accept4` on a VMMC listener: a new placeholder for the connection, and the peer's
/// address (the listener's own IP, port 0: VMMC peers have no IP address).
pub fn accept(s: Sock, flags: i32) -> io::Result<(i32, SocketAddr)> {
    usable(s)?;
    let (family, local) = {
        let mut m = fdmap::metas();
        let meta = m.map().get(&s).ok_or_else(|| err(libc::EINVAL))?;
        if !meta.claim.made_here() {
            // Its admission threads stayed in the process that listened: an accept here
            // would wait for ever. Say so instead.
            eprintln!(
                "vmmc-preload: accept on a VMMC listener inherited through fork is not supported; \
                 listen in the process that accepts"
            );
            return Err(err(libc::EOPNOTSUPP));
        }
        (meta.family, meta.local)
    };
    let (ns, _who) = table().accept(s)?;
    let placeholder = match real::socket(family, flags & (libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK))
    {
        Ok(fd) => fd,
        Err(e) => {
            let _ = table().closesocket(ns);
            return Err(e);
        }
    };
    let nb = flags & libc::SOCK_NONBLOCK != 0;
    if let Err(e) = set_table_nonblocking(ns, nb) {
        let _ = table().closesocket(ns);
        let _ = real::close(placeholder);
        return Err(e);
    }
    let peer = match local {
        Some(a) if !a.ip().is_unspecified() => SocketAddr::new(a.ip(), 0),
        _ => loopback(family),
    };
    register(placeholder, ns, family, local, Some(peer));
    if fdmap::sock_of(placeholder) != Some(ns) {
        let _ = table().closesocket(ns);
        let _ = real::close(placeholder);
        return Err(err(libc::EMFILE));
    }
    Ok((placeholder, peer))
}

fn clean(flags: i32) -> i32 {
    flags & !IGNORED_FLAGS
}

/// `send`, `sendmsg`, `write`, `writev` on a VMMC socket.
pub fn send(s: Sock, bufs: &[IoSlice<'_>], flags: i32) -> io::Result<usize> {
    usable(s)?;
    table().sendmsg(s, bufs, clean(flags))
}

/// `recv`, `recvmsg`, `read`, `readv` on a VMMC socket.
///
/// A blocking receive first looks at the ring for a while without giving up the core (see
/// [`crate::prespin`] for how long, and why it is learnt).
pub fn recv(s: Sock, bufs: &mut [IoSliceMut<'_>], flags: i32) -> io::Result<usize> {
    usable(s)?;
    let flags = clean(flags);
    let waits = flags & (libc::MSG_DONTWAIT | libc::MSG_WAITALL | libc::MSG_OOB) == 0;
    if waits && !fdmap::is_nonblocking(s) {
        let budget = prespin::budget(s);
        let start = std::time::Instant::now();
        let mut looks = 0u32;
        loop {
            match table().recvmsg(s, bufs, flags | libc::MSG_DONTWAIT) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                r => {
                    // Data at the first look says nothing about the peer's core.
                    if looks > 0 {
                        prespin::learn(s, true);
                    }
                    return r;
                }
            }
            looks = looks.wrapping_add(1);
            if looks % 16 == 0 && start.elapsed() >= budget {
                prespin::learn(s, false);
                break;
            }
            std::hint::spin_loop();
        }
        if prespin::at_floor(s) {
            let timeout = match table().getsockopt(s, SockOptName::RcvTimeo) {
                Ok(SockOpt::RcvTimeo(t)) => t,
                _ => None,
            };
            wait::until_readable(s, timeout)?;
        }
    }
    table().recvmsg(s, bufs, flags)
}

/// `shutdown` on a VMMC socket.
pub fn shutdown(s: Sock, how: i32) -> io::Result<()> {
    usable(s)?;
    let how = match how {
        libc::SHUT_RD => Shutdown::Read,
        libc::SHUT_WR => Shutdown::Write,
        libc::SHUT_RDWR => Shutdown::Both,
        _ => return Err(err(libc::EINVAL)),
    };
    table().shutdown(s, how)
}

/// Lets go of one descriptor of `s` (a `close`, or the implicit close of `dup2`); the
/// socket closes with its last descriptor. A socket this process has not used since a
/// `fork` (or has lost to its sibling) closes without a word to the peer: the sibling may
/// be serving it.
pub fn release(fd: i32, s: Sock) {
    let _ = fdmap::set(fd, None);
    wait::forget_fd(fd);
    let last = {
        let mut m = fdmap::metas();
        let map = m.map();
        match map.get_mut(&s) {
            Some(meta) if meta.refs > 1 => {
                meta.refs -= 1;
                None
            }
            Some(_) => map.remove(&s).map(|mut meta| {
                let owned = meta.claim.owned();
                meta.claim.release();
                owned
            }),
            None => Some(true),
        }
    };
    match last {
        Some(true) => {
            let _ = table().closesocket(s);
        }
        Some(false) => {
            let _ = table().abandon(s);
        }
        None => {}
    }
}

/// `close` on a VMMC socket's descriptor.
pub fn close(fd: i32, s: Sock) -> io::Result<()> {
    release(fd, s);
    real::close(fd)
}

/// Records that kernel descriptor `new` (a dup of a placeholder) also stands for `s`.
pub fn alias(new: i32, s: Sock) -> io::Result<()> {
    {
        let mut m = fdmap::metas();
        let meta = m.map().get_mut(&s).ok_or_else(|| err(libc::EBADF))?;
        meta.refs += 1;
    }
    if let Err(e) = fdmap::set(new, Some(s)) {
        release(new, s);
        let _ = real::close(new);
        return Err(e);
    }
    Ok(())
}

/// `F_DUPFD`/`F_DUPFD_CLOEXEC` on a VMMC socket.
pub fn dup_min(fd: i32, s: Sock, min: i32, cloexec: bool) -> io::Result<i32> {
    let new = real::dup_min(fd, min, cloexec)?;
    alias(new, s)?;
    Ok(new)
}

/// `fcntl(F_SETFL)`: the placeholder keeps the flags; the table learns `O_NONBLOCK`.
pub fn set_flags(fd: i32, s: Sock, flags: i32) -> io::Result<i32> {
    let r = real::fcntl_int(fd, libc::F_SETFL, flags as libc::c_ulong)?;
    set_table_nonblocking(s, flags & libc::O_NONBLOCK != 0)?;
    Ok(r)
}

/// `ioctl(FIONBIO)` on a VMMC socket.
pub fn set_nonblocking(fd: i32, s: Sock, on: bool) -> io::Result<()> {
    let fl = real::fcntl_int(fd, libc::F_GETFL, 0)?;
    let fl = if on {
        fl | libc::O_NONBLOCK
    } else {
        fl & !libc::O_NONBLOCK
    };
    set_flags(fd, s, fl).map(drop)
}

/// `ioctl(FIONREAD)` on a VMMC socket.
pub fn bytes_readable(s: Sock) -> io::Result<i32> {
    usable(s)?;
    if table().is_listening(s) {
        return Ok(0);
    }
    match table().ioctlsocket(s, Ioctl::BytesReadable)? {
        IoctlOut::Value(n) => Ok(n.min(i32::MAX as u64) as i32),
        _ => Ok(0),
    }
}

/// A socket option's value, as `getsockopt` writes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OptVal {
    /// An `int`.
    Int(i32),
    /// A `struct timeval`.
    Time(Option<Duration>),
}

/// `getsockopt` on a VMMC socket: `None` for options the placeholder answers (`SO_TYPE`,
/// `SO_DOMAIN`, and options with no meaning here, which read as a fresh kernel socket's).
pub fn getsockopt(s: Sock, level: i32, name: i32) -> Option<io::Result<OptVal>> {
    let t = table();
    let opt = |n: SockOptName| t.getsockopt(s, n);
    Some(match (level, name) {
        (libc::SOL_SOCKET, libc::SO_ERROR) => Ok(OptVal::Int(0)),
        (libc::SOL_SOCKET, libc::SO_ACCEPTCONN) => Ok(OptVal::Int(i32::from(t.is_listening(s)))),
        (libc::SOL_SOCKET, libc::SO_RCVBUF) => opt(SockOptName::RcvBuf).map(|o| match o {
            SockOpt::RcvBuf(n) => OptVal::Int(n.min(i32::MAX as u64) as i32),
            _ => OptVal::Int(0),
        }),
        (libc::SOL_SOCKET, libc::SO_SNDBUF) => opt(SockOptName::SndBuf).map(|o| match o {
            SockOpt::SndBuf(n) => OptVal::Int(n.min(i32::MAX as u64) as i32),
            _ => OptVal::Int(0),
        }),
        (libc::SOL_SOCKET, libc::SO_RCVTIMEO) => opt(SockOptName::RcvTimeo).map(|o| match o {
            SockOpt::RcvTimeo(d) => OptVal::Time(d),
            _ => OptVal::Time(None),
        }),
        (libc::SOL_SOCKET, libc::SO_SNDTIMEO) => opt(SockOptName::SndTimeo).map(|o| match o {
            SockOpt::SndTimeo(d) => OptVal::Time(d),
            _ => OptVal::Time(None),
        }),
        (libc::IPPROTO_TCP, libc::TCP_NODELAY) => opt(SockOptName::NoDelay).map(|o| match o {
            SockOpt::NoDelay(b) => OptVal::Int(i32::from(b)),
            _ => OptVal::Int(0),
        }),
        _ => return None,
    })
}

/// `setsockopt` on a VMMC socket: `None` for options left to the placeholder (accepted by
/// the kernel, without effect on the VMMC connection).
pub fn setsockopt(s: Sock, level: i32, name: i32, val: OptVal) -> Option<io::Result<()>> {
    let t = table();
    let int = match val {
        OptVal::Int(v) => v,
        OptVal::Time(_) => 0,
    };
    let time = match val {
        OptVal::Time(d) => d,
        OptVal::Int(_) => None,
    };
    Some(match (level, name) {
        // A ring is sized before it is made: later changes are accepted and ignored, as
        // the kernel accepts buffer sizes it then adjusts.
        (libc::SOL_SOCKET, libc::SO_RCVBUF) => {
            let _ = t.setsockopt(s, SockOpt::RcvBuf(int.max(0) as u64));
            Ok(())
        }
        (libc::SOL_SOCKET, libc::SO_SNDBUF) => Ok(()),
        (libc::SOL_SOCKET, libc::SO_RCVTIMEO) => t.setsockopt(s, SockOpt::RcvTimeo(time)),
        (libc::SOL_SOCKET, libc::SO_SNDTIMEO) => t.setsockopt(s, SockOpt::SndTimeo(time)),
        (libc::IPPROTO_TCP, libc::TCP_NODELAY) => t.setsockopt(s, SockOpt::NoDelay(int != 0)),
        _ => return None,
    })
}

/// `getsockname` on a VMMC socket.
pub fn local_name(s: Sock) -> io::Result<SocketAddr> {
    let mut m = fdmap::metas();
    let meta = m.map().get(&s).ok_or_else(|| err(libc::EBADF))?;
    Ok(meta.local.unwrap_or_else(|| loopback(meta.family)))
}

/// `getpeername` on a VMMC socket.
pub fn peer_name(s: Sock) -> io::Result<SocketAddr> {
    let mut m = fdmap::metas();
    let meta = m.map().get(&s).ok_or_else(|| err(libc::EBADF))?;
    meta.peer.ok_or_else(|| err(libc::ENOTCONN))
}

/// `connect` on a socket already on VMMC (bound to a routed address before connecting):
/// the peer must be routed too, since the socket has no kernel address to connect from.
pub fn connect_again(s: Sock, addr: SocketAddr) -> io::Result<()> {
    usable(s)?;
    let target = config::routes()
        .and_then(|r| r.for_connect(addr))
        .ok_or_else(|| err(libc::EADDRNOTAVAIL))?;
    table().connect(s, &target.addr)?;
    if let Some(m) = fdmap::metas().map().get_mut(&s) {
        m.peer = Some(addr);
    }
    Ok(())
}
