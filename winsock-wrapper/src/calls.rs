//! The calls on routed sockets, over the socket table, with checked Rust values: what
//! `ffi` turns the program's pointers into and back.

use std::io::{self, IoSlice, IoSliceMut};
use std::net::{Shutdown, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use vmmc_sockets::routes::Target;
use vmmc_sockets::table::{
    Ioctl, IoctlOut, SockOpt, SockOptName, SocketTable, POLLERR, POLLHUP, POLLIN, POLLNVAL, POLLOUT,
};
use vmmc_sockets::PeerIdentity;

use crate::config;
use crate::flags::*;
use crate::map::{self, Handle, Names, Routed};

fn table() -> &'static SocketTable {
    SocketTable::global()
}

fn wsa(code: i32) -> io::Error {
    io::Error::from_raw_os_error(code)
}

fn log(what: impl FnOnce() -> String) {
    if config::debug() {
        eprintln!("vmmc-winsock: {}", what());
    }
}

/// A fresh table socket with the settings the program gave its system socket.
fn fresh(h: Handle) -> io::Result<vmmc_sockets::table::Sock> {
    let t = table().socket()?;
    let p = map::pending(h);
    let applied = (|| {
        if let Some(b) = p.rcvbuf {
            table().setsockopt(t, SockOpt::RcvBuf(b))?;
        }
        table().setsockopt(t, SockOpt::RcvTimeo(p.rcvtimeo))?;
        table().setsockopt(t, SockOpt::SndTimeo(p.sndtimeo))?;
        table().ioctlsocket(t, Ioctl::NonBlocking(p.nonblocking))?;
        Ok(())
    })();
    if let Err(e) = applied {
        let _ = table().closesocket(t);
        return Err(e);
    }
    Ok(t)
}

/// Whether a failed connect means nobody listens there (then a route that is not strict
/// falls back to the system's TCP).
fn nobody_listens(e: &io::Error) -> bool {
    if e.kind() == io::ErrorKind::ConnectionRefused {
        return true;
    }
    matches!(
        e.get_ref()
            .and_then(|i| i.downcast_ref::<vmmc_sockets::NicError>()),
        Some(vmmc_sockets::NicError::NoEndpoint(_))
    )
}

/// `connect` of system socket `h` (a stream of `family`) to `addr`: `Ok(true)` when the route
/// took it to VMMC, `Ok(false)` when the system should connect it as it is.
pub(crate) fn connect(h: Handle, family: u16, addr: SocketAddr) -> io::Result<bool> {
    let Some(target) = config::routes().for_connect(addr) else {
        return Ok(false);
    };
    let Target { addr: vmmc, strict } = target;
    let t = fresh(h)?;
    match table().connect(t, &vmmc) {
        Ok(()) => {
            log(|| format!("connect {addr} -> {vmmc}"));
            map::insert(
                h,
                Routed {
                    sock: t,
                    family,
                    names: std::sync::Mutex::new(Names {
                        local: None,
                        peer: Some(addr),
                    }),
                },
            );
            Ok(true)
        }
        Err(e) => {
            let _ = table().closesocket(t);
            if nobody_listens(&e) {
                if strict {
                    log(|| format!("connect {addr} -> {vmmc}: nobody listens, strict: refused"));
                    return Err(wsa(WSAECONNREFUSED));
                }
                log(|| format!("connect {addr} -> {vmmc}: nobody listens, system TCP"));
                return Ok(false);
            }
            log(|| format!("connect {addr} -> {vmmc}: {e}"));
            Err(e)
        }
    }
}

/// `bind` of system socket `h` at `addr`: `Ok(true)` when the route took it to VMMC.
pub(crate) fn bind(h: Handle, family: u16, addr: SocketAddr) -> io::Result<bool> {
    let Some(target) = config::routes().for_bind(addr) else {
        return Ok(false);
    };
    let t = fresh(h)?;
    if let Err(e) = table().bind(t, &target.addr) {
        let _ = table().closesocket(t);
        log(|| format!("bind {addr} -> {}: {e}", target.addr));
        return Err(e);
    }
    log(|| format!("bind {addr} -> {}", target.addr));
    map::insert(
        h,
        Routed {
            sock: t,
            family,
            names: std::sync::Mutex::new(Names {
                local: Some(addr),
                peer: None,
            }),
        },
    );
    Ok(true)
}

pub(crate) fn listen(r: &Routed, backlog: i32) -> io::Result<()> {
    table().listen(r.sock, backlog)
}

/// Accepts on a routed listener; `placeholder` makes the new connection's system socket.
/// Returns it and the peer's address as the program sees it.
pub(crate) fn accept(
    r: &Routed,
    placeholder: impl FnOnce(u16) -> io::Result<Handle>,
) -> io::Result<(Handle, SocketAddr)> {
    let (t, who) = table().accept(r.sock)?;
    let h = match placeholder(r.family) {
        Ok(h) => h,
        Err(e) => {
            let _ = table().closesocket(t);
            return Err(e);
        }
    };
    let peer = match who {
        PeerIdentity::Remote(sa) => sa,
        _ => crate::ffi::loopback(r.family, 0),
    };
    let local = r.names().local;
    map::insert(
        h,
        Routed {
            sock: t,
            family: r.family,
            names: std::sync::Mutex::new(Names {
                local,
                peer: Some(peer),
            }),
        },
    );
    Ok((h, peer))
}

pub(crate) fn send(r: &Routed, bufs: &[IoSlice<'_>], flags: i32) -> io::Result<usize> {
    let f = msg_flags(flags)?;
    match bufs {
        [one] => table().send(r.sock, one, f),
        _ => table().sendmsg(r.sock, bufs, f),
    }
}

pub(crate) fn recv(r: &Routed, bufs: &mut [IoSliceMut<'_>], flags: i32) -> io::Result<usize> {
    let f = msg_flags(flags)?;
    match bufs {
        [one] => table().recv(r.sock, one, f),
        _ => table().recvmsg(r.sock, bufs, f),
    }
}

pub(crate) fn shutdown(r: &Routed, how: i32) -> io::Result<()> {
    let how = match how {
        0 => Shutdown::Read,
        1 => Shutdown::Write,
        2 => Shutdown::Both,
        _ => return Err(wsa(WSAEINVAL)),
    };
    table().shutdown(r.sock, how)
}

/// Closes the table side of a routed socket (the caller closes the placeholder).
pub(crate) fn close(h: Handle) -> Option<io::Result<()>> {
    let r = map::remove(h)?;
    Some(table().closesocket(r.sock))
}

/// `getsockopt` on a routed socket: `Ok(None)` for options the placeholder answers.
pub(crate) fn getsockopt(r: &Routed, level: i32, name: i32) -> io::Result<Option<u32>> {
    let ask = |n| table().getsockopt(r.sock, n);
    Ok(Some(match (level, name) {
        (SOL_SOCKET, SO_RCVBUF) => match ask(SockOptName::RcvBuf)? {
            SockOpt::RcvBuf(b) => b.min(u64::from(i32::MAX as u32)) as u32,
            _ => 0,
        },
        (SOL_SOCKET, SO_SNDBUF) => match ask(SockOptName::SndBuf)? {
            SockOpt::SndBuf(b) => b.min(u64::from(i32::MAX as u32)) as u32,
            _ => 0,
        },
        (SOL_SOCKET, SO_RCVTIMEO) => match ask(SockOptName::RcvTimeo)? {
            SockOpt::RcvTimeo(t) => timeout_to_ms(t),
            _ => 0,
        },
        (SOL_SOCKET, SO_SNDTIMEO) => match ask(SockOptName::SndTimeo)? {
            SockOpt::SndTimeo(t) => timeout_to_ms(t),
            _ => 0,
        },
        (IPPROTO_TCP, TCP_NODELAY) => match ask(SockOptName::NoDelay)? {
            SockOpt::NoDelay(on) => u32::from(on),
            _ => 0,
        },
        (SOL_SOCKET, SO_ACCEPTCONN) => u32::from(table().is_listening(r.sock)),
        // Errors are reported by the calls that meet them.
        (SOL_SOCKET, SO_ERROR) => 0,
        _ => return Ok(None),
    }))
}

/// `setsockopt` on a routed socket: `Ok(false)` for options left to the placeholder.
pub(crate) fn setsockopt(r: &Routed, level: i32, name: i32, v: u32) -> io::Result<bool> {
    let opt = match (level, name) {
        (SOL_SOCKET, SO_RCVBUF) => SockOpt::RcvBuf(u64::from(v)),
        (SOL_SOCKET, SO_SNDBUF) => SockOpt::SndBuf(u64::from(v)),
        (SOL_SOCKET, SO_RCVTIMEO) => SockOpt::RcvTimeo(timeout_from_ms(v)),
        (SOL_SOCKET, SO_SNDTIMEO) => SockOpt::SndTimeo(timeout_from_ms(v)),
        (IPPROTO_TCP, TCP_NODELAY) => SockOpt::NoDelay(v != 0),
        _ => return Ok(false),
    };
    table().setsockopt(r.sock, opt)?;
    Ok(true)
}

/// Remembers what a program sets on a system socket, for the table socket that may take
/// it over.
pub(crate) fn note_setsockopt(h: Handle, level: i32, name: i32, v: u32) {
    match (level, name) {
        (SOL_SOCKET, SO_RCVBUF) => map::note(h, |p| p.rcvbuf = Some(u64::from(v))),
        (SOL_SOCKET, SO_RCVTIMEO) => map::note(h, |p| p.rcvtimeo = timeout_from_ms(v)),
        (SOL_SOCKET, SO_SNDTIMEO) => map::note(h, |p| p.sndtimeo = timeout_from_ms(v)),
        _ => {}
    }
}

/// `ioctlsocket`'s requests on a routed socket; the value to store back, if any.
pub(crate) fn ioctl(r: &Routed, cmd: u32, arg: u32) -> io::Result<Option<u32>> {
    let req = match cmd {
        FIONBIO => Ioctl::NonBlocking(arg != 0),
        FIONREAD => Ioctl::BytesReadable,
        SIOCATMARK => Ioctl::AtMark,
        _ => return Err(wsa(WSAEOPNOTSUPP)),
    };
    Ok(match table().ioctlsocket(r.sock, req)? {
        IoctlOut::Value(n) => Some(n.min(u64::from(u32::MAX)) as u32),
        // WinSock's SIOCATMARK says TRUE when no urgent byte waits to be read, the opposite
        // of the BSD question the table answers (is the next byte the urgent one).
        IoctlOut::Flag(at_mark) => Some(u32::from(!at_mark)),
        _ => None,
    })
}

/// The pointer-based requests ([`crate::ioctl`]): the two words to return, if any.
pub(crate) fn pointer_ioctl(r: &Routed, code: u32, arg: u64) -> io::Result<Option<(u64, u64)>> {
    use crate::ioctl::*;
    let req = match code {
        SIO_VMMC_GET_SEND_POINTER => Ioctl::GetSendPointer {
            max: usize::try_from(arg).unwrap_or(usize::MAX),
        },
        SIO_VMMC_COMMIT_SEND => Ioctl::CommitSend(usize::try_from(arg).unwrap_or(usize::MAX)),
        SIO_VMMC_GET_RECV_POINTER => Ioctl::GetRecvPointer,
        SIO_VMMC_RELEASE_RECV => Ioctl::ReleaseRecv(usize::try_from(arg).unwrap_or(usize::MAX)),
        _ => return Err(wsa(WSAEOPNOTSUPP)),
    };
    Ok(match table().ioctlsocket(r.sock, req)? {
        IoctlOut::Pointer(p, n) => Some((p as usize as u64, n as u64)),
        _ => None,
    })
}

/// What a routed socket in a `select` or `WSAPoll` set waits for, and what it got.
#[derive(Debug)]
pub(crate) struct RoutedWait {
    pub(crate) routed: Arc<Routed>,
    /// `POLLIN` and/or `POLLOUT` (the table's numbers).
    pub(crate) events: i16,
    /// The table's `POLL*` bits that happened.
    pub(crate) revents: i16,
}

/// Waits on routed and system sockets together, until one is ready or `timeout` passes;
/// returns how many routed ones are ready.
///
/// `system(extra, timeout)` waits on the call's system sockets, with `extra` (the routed
/// sockets' notification sockets) added to its read set, for at most `timeout` (zero: just
/// look), records what it found, and says how many of the call's system sockets are ready.
/// A routed socket is looked at, then armed (its peer will raise its notification on the next
/// publish), then slept on through the system wait, then looked at again: no wake-up is lost,
/// and with no routed socket ready nothing spins.
pub(crate) fn wait(
    routed: &mut [RoutedWait],
    mut system: impl FnMut(&[usize], Duration) -> io::Result<usize>,
    timeout: Option<Duration>,
) -> io::Result<(usize, usize)> {
    let deadline = timeout.map(|t| Instant::now() + t);
    loop {
        let ready = look(routed, false);
        let sys = system(&[], Duration::ZERO)?;
        let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
        if ready + sys > 0 || left.is_some_and(|l| l.is_zero()) {
            return Ok((ready, sys));
        }
        if look(routed, true) > 0 {
            continue;
        }
        let mut extra = Vec::with_capacity(routed.len());
        for w in routed.iter() {
            if let Ok(h) = table().notify_fd(w.routed.sock) {
                extra.push(h as usize);
            }
        }
        // Bounded, so a notification missed by a peer that died meanwhile costs a slice.
        let slice = left
            .unwrap_or(Duration::from_millis(50))
            .min(Duration::from_millis(50));
        system(&extra, slice)?;
    }
}

fn look(routed: &mut [RoutedWait], arm: bool) -> usize {
    let mut ready = 0;
    for w in routed.iter_mut() {
        let ev = table().readiness(w.routed.sock, w.events, arm);
        // A socket whose peer hung up or broke is "ready": the call that follows says how.
        let ev = if ev & (POLLHUP | POLLERR | POLLNVAL) != 0 {
            ev | (w.events & (POLLIN | POLLOUT))
        } else {
            ev
        };
        w.revents = ev;
        if ev != 0 {
            ready += 1;
        }
    }
    ready
}
