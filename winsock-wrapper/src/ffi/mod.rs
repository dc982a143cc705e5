//! All of the crate's `unsafe`: the exported WinSock functions, which turn the program's
//! pointers into checked Rust values for [`crate::calls`] (routed sockets) or hand the call
//! to the system's ws2_32.dll untouched (everything else), and the DLL's start-up.
//!
//! Every export is `vmmc_NAME`; the ws2_32.dll and wsock32.dll forwarders give them their
//! WinSock names and ordinals. Calls to the system go through this DLL's own imports of
//! ws2_32, which [`real::init`] points at the system's DLL before anything can call here.

mod addr;
mod real;

use std::ffi::c_void;
use std::io::{self, IoSlice, IoSliceMut};
use std::time::Duration;

use windows_sys::core::BOOL;
use windows_sys::Win32::Foundation::{HINSTANCE, HWND, TRUE};
use windows_sys::Win32::Networking::WinSock as ws;
use windows_sys::Win32::Networking::WinSock::{
    FD_SET, INVALID_SOCKET, LPCONDITIONPROC, LPWSAOVERLAPPED_COMPLETION_ROUTINE, QOS, SOCKADDR,
    SOCKET, SOCKET_ERROR, TIMEVAL, WSABUF, WSAPOLLFD, WSAPROTOCOL_INFOA, WSAPROTOCOL_INFOW,
};
use windows_sys::Win32::System::SystemServices::DLL_PROCESS_ATTACH;
use windows_sys::Win32::System::IO::OVERLAPPED;

use crate::calls::{self, RoutedWait};
use crate::flags::*;
use crate::map::{self, Routed};
pub(crate) use addr::loopback;
use vmmc_sockets::table::{POLLERR, POLLHUP, POLLIN, POLLNVAL, POLLOUT};

/// The DLL's entry point: loads the system's ws2_32.dll and points this DLL's own imports
/// at it. A failure there fails the program's start, with a message, rather than leaving it
/// with sockets that call themselves.
#[unsafe(no_mangle)]
#[allow(non_snake_case)]
extern "system" fn DllMain(inst: HINSTANCE, reason: u32, _: *mut c_void) -> BOOL {
    if reason == DLL_PROCESS_ATTACH {
        if let Err(e) = real::init(inst) {
            eprintln!("vmmc-winsock: {e}");
            return 0;
        }
    }
    TRUE
}

/// Sets the thread's WinSock error and returns `SOCKET_ERROR`.
fn fail(e: &io::Error) -> i32 {
    // SAFETY: sets this thread's WinSock error; no preconditions.
    unsafe { ws::WSASetLastError(wsa_code(e)) };
    SOCKET_ERROR
}

fn fail_code(code: i32) -> i32 {
    fail(&io::Error::from_raw_os_error(code))
}

/// The last WinSock error as an `io::Error`.
fn last_error() -> io::Error {
    // SAFETY: reads this thread's last WinSock error.
    io::Error::from_raw_os_error(unsafe { ws::WSAGetLastError() })
}

/// The routed socket behind `s`, if any (one map load when none is routed at all).
fn routed(s: SOCKET) -> Option<std::sync::Arc<Routed>> {
    if !map::any() {
        return None;
    }
    map::get(s)
}

/// The bytes of a `SOCKADDR` the program passed.
///
/// # Safety
/// `name` must be null or point to `len` readable bytes.
unsafe fn sockaddr_in(name: *const SOCKADDR, len: i32) -> Option<std::net::SocketAddr> {
    if name.is_null() || len <= 0 {
        return None;
    }
    // SAFETY: the caller's promise.
    let b = unsafe { std::slice::from_raw_parts(name.cast::<u8>(), len as usize) };
    addr::parse(b)
}

/// Writes `a` to a `SOCKADDR` buffer of `*len` bytes and sets `*len`; nothing for a null
/// buffer.
///
/// # Safety
/// `name` must be null or point to `*len` writable bytes; `len` must be valid when `name` is
/// not null.
unsafe fn sockaddr_out(
    name: *mut SOCKADDR,
    len: *mut i32,
    a: std::net::SocketAddr,
) -> io::Result<()> {
    if name.is_null() {
        return Ok(());
    }
    let b = addr::emit(a);
    // SAFETY: `len` is valid when `name` is (the caller's promise); checked against the size.
    unsafe {
        if len.is_null() || (*len as usize) < b.len() {
            return Err(io::Error::from_raw_os_error(WSAEFAULT));
        }
        std::ptr::copy_nonoverlapping(b.as_ptr(), name.cast::<u8>(), b.len());
        *len = b.len() as i32;
    }
    Ok(())
}

/// Whether a system socket is a stream (only streams are routed).
fn is_stream(s: SOCKET) -> bool {
    let mut ty = 0i32;
    let mut len = 4i32;
    // SAFETY: a 4-byte buffer and its length, as SO_TYPE needs.
    let r = unsafe { ws::getsockopt(s, SOL_SOCKET, SO_TYPE, (&raw mut ty).cast(), &mut len) };
    r == 0 && ty == ws::SOCK_STREAM
}

/// `connect`.
///
/// # Safety
/// WinSock's contract for `connect`.
#[unsafe(no_mangle)]
pub unsafe extern "system" fn vmmc_connect(s: SOCKET, name: *const SOCKADDR, len: i32) -> i32 {
    if routed(s).is_some() {
        return fail_code(WSAEISCONN);
    }
    // SAFETY: WinSock's contract: `name` points to `len` bytes.
    if let Some(a) = unsafe { sockaddr_in(name, len) } {
        if is_stream(s) {
            let family = if a.is_ipv6() {
                addr::AF_INET6
            } else {
                addr::AF_INET
            };
            match calls::connect(s, family, a) {
                Ok(true) => return 0,
                Ok(false) => {}
                Err(e) => return fail(&e),
            }
        }
    }
    // SAFETY: the program's arguments, to the system's connect.
    unsafe { ws::connect(s, name, len) }
}

/// `WSAConnect`: as `connect` on a routed address when it asks for no connect data or QOS.
///
/// # Safety
/// WinSock's contract for `WSAConnect`.
#[unsafe(no_mangle)]
pub unsafe extern "system" fn vmmc_WSAConnect(
    s: SOCKET,
    name: *const SOCKADDR,
    len: i32,
    caller: *const WSABUF,
    callee: *mut WSABUF,
    sqos: *const QOS,
    gqos: *const QOS,
) -> i32 {
    if caller.is_null() && callee.is_null() && sqos.is_null() && gqos.is_null() {
        // SAFETY: the same contract.
        return unsafe { vmmc_connect(s, name, len) };
    }
    if routed(s).is_some() {
        return fail_code(WSAEOPNOTSUPP);
    }
    // SAFETY: the program's arguments, to the system.
    unsafe { ws::WSAConnect(s, name, len, caller, callee, sqos, gqos) }
}

/// `bind`.
///
/// # Safety
/// WinSock's contract for `bind`.
#[unsafe(no_mangle)]
pub unsafe extern "system" fn vmmc_bind(s: SOCKET, name: *const SOCKADDR, len: i32) -> i32 {
    if routed(s).is_some() {
        return fail_code(WSAEINVAL);
    }
    // SAFETY: WinSock's contract: `name` points to `len` bytes.
    if let Some(a) = unsafe { sockaddr_in(name, len) } {
        if is_stream(s) {
            let family = if a.is_ipv6() {
                addr::AF_INET6
            } else {
                addr::AF_INET
            };
            match calls::bind(s, family, a) {
                Ok(true) => return 0,
                Ok(false) => {}
                Err(e) => return fail(&e),
            }
        }
    }
    // SAFETY: the program's arguments, to the system.
    unsafe { ws::bind(s, name, len) }
}

/// `listen`.
///
/// # Safety
/// WinSock's contract for `listen`.
#[unsafe(no_mangle)]
pub unsafe extern "system" fn vmmc_listen(s: SOCKET, backlog: i32) -> i32 {
    match routed(s) {
        Some(r) => calls::listen(&r, backlog).map_or_else(|e| fail(&e), |()| 0),
        // SAFETY: the program's arguments, to the system.
        None => unsafe { ws::listen(s, backlog) },
    }
}

/// A fresh system socket to stand for an accepted routed connection.
fn placeholder(family: u16) -> io::Result<SOCKET> {
    // SAFETY: creates a socket; no pointers.
    let s = unsafe { ws::socket(i32::from(family), ws::SOCK_STREAM, ws::IPPROTO_TCP) };
    if s == INVALID_SOCKET {
        return Err(last_error());
    }
    Ok(s)
}

/// `accept`.
///
/// # Safety
/// WinSock's contract for `accept`.
#[unsafe(no_mangle)]
pub unsafe extern "system" fn vmmc_accept(s: SOCKET, name: *mut SOCKADDR, len: *mut i32) -> SOCKET {
    let Some(r) = routed(s) else {
        // SAFETY: the program's arguments, to the system.
        return unsafe { ws::accept(s, name, len) };
    };
    match calls::accept(&r, placeholder) {
        Ok((h, peer)) => {
            // SAFETY: WinSock's contract: `name` is null or `*len` writable bytes.
            if let Err(e) = unsafe { sockaddr_out(name, len, peer) } {
                let _ = calls::close(h);
                // SAFETY: the placeholder made above.
                unsafe { ws::closesocket(h) };
                fail(&e);
                return INVALID_SOCKET;
            }
            h
        }
        Err(e) => {
            fail(&e);
            INVALID_SOCKET
        }
    }
}

/// `WSAAccept`: as `accept` on a routed listener when there is no condition function (a
/// routed listener has admitted the connection already: it cannot be refused here).
///
/// # Safety
/// WinSock's contract for `WSAAccept`.
#[unsafe(no_mangle)]
pub unsafe extern "system" fn vmmc_WSAAccept(
    s: SOCKET,
    name: *mut SOCKADDR,
    len: *mut i32,
    condition: LPCONDITIONPROC,
    data: usize,
) -> SOCKET {
    if routed(s).is_none() {
        // SAFETY: the program's arguments, to the system.
        return unsafe { ws::WSAAccept(s, name, len, condition, data) };
    }
    if condition.is_some() {
        fail_code(WSAEOPNOTSUPP);
        return INVALID_SOCKET;
    }
    // SAFETY: the same contract.
    unsafe { vmmc_accept(s, name, len) }
}

/// `closesocket`.
///
/// # Safety
/// WinSock's contract for `closesocket`.
#[unsafe(no_mangle)]
pub unsafe extern "system" fn vmmc_closesocket(s: SOCKET) -> i32 {
    let table_side = if map::any() { calls::close(s) } else { None };
    map::forget(s);
    // SAFETY: the program's socket (a routed socket's placeholder, or its own), closed once.
    let r = unsafe { ws::closesocket(s) };
    match table_side {
        Some(Err(e)) => fail(&e),
        _ => r,
    }
}

/// The program's buffer as a slice.
///
/// # Safety
/// `buf` must point to `len` bytes readable for the slice's life.
unsafe fn slice<'a>(buf: *const u8, len: i32) -> io::Result<&'a [u8]> {
    if len < 0 || (buf.is_null() && len > 0) {
        return Err(io::Error::from_raw_os_error(WSAEFAULT));
    }
    if len == 0 {
        return Ok(&[]);
    }
    // SAFETY: the caller's promise.
    Ok(unsafe { std::slice::from_raw_parts(buf, len as usize) })
}

/// # Safety
/// `buf` must point to `len` bytes writable for the slice's life.
unsafe fn slice_mut<'a>(buf: *mut u8, len: i32) -> io::Result<&'a mut [u8]> {
    if len < 0 || (buf.is_null() && len > 0) {
        return Err(io::Error::from_raw_os_error(WSAEFAULT));
    }
    if len == 0 {
        return Ok(&mut []);
    }
    // SAFETY: the caller's promise.
    Ok(unsafe { std::slice::from_raw_parts_mut(buf, len as usize) })
}

fn count(r: io::Result<usize>) -> i32 {
    match r {
        Ok(n) => n.min(i32::MAX as usize) as i32,
        Err(e) => fail(&e),
    }
}

/// `send`.
///
/// # Safety
/// WinSock's contract for `send`.
#[unsafe(no_mangle)]
pub unsafe extern "system" fn vmmc_send(s: SOCKET, buf: *const u8, len: i32, flags: i32) -> i32 {
    let Some(r) = routed(s) else {
        // SAFETY: the program's arguments, to the system.
        return unsafe { ws::send(s, buf, len, flags) };
    };
    // SAFETY: WinSock's contract: `buf` holds `len` bytes.
    count(unsafe { slice(buf, len) }.and_then(|b| calls::send(&r, &[IoSlice::new(b)], flags)))
}

/// `sendto`: on a routed (connected stream) socket the address is ignored, as WinSock does
/// for connected streams.
///
/// # Safety
/// WinSock's contract for `sendto`.
#[unsafe(no_mangle)]
pub unsafe extern "system" fn vmmc_sendto(
    s: SOCKET,
    buf: *const u8,
    len: i32,
    flags: i32,
    to: *const SOCKADDR,
    tolen: i32,
) -> i32 {
    if routed(s).is_none() {
        // SAFETY: the program's arguments, to the system.
        return unsafe { ws::sendto(s, buf, len, flags, to, tolen) };
    }
    // SAFETY: the same contract.
    unsafe { vmmc_send(s, buf, len, flags) }
}

/// `recv`.
///
/// # Safety
/// WinSock's contract for `recv`.
#[unsafe(no_mangle)]
pub unsafe extern "system" fn vmmc_recv(s: SOCKET, buf: *mut u8, len: i32, flags: i32) -> i32 {
    let Some(r) = routed(s) else {
        // SAFETY: the program's arguments, to the system.
        return unsafe { ws::recv(s, buf, len, flags) };
    };
    // SAFETY: WinSock's contract: `buf` has room for `len` bytes.
    count(
        unsafe { slice_mut(buf, len) }
            .and_then(|b| calls::recv(&r, &mut [IoSliceMut::new(b)], flags)),
    )
}

/// `recvfrom`: on a routed socket, `from` (when given) gets the peer's address.
///
/// # Safety
/// WinSock's contract for `recvfrom`.
#[unsafe(no_mangle)]
pub unsafe extern "system" fn vmmc_recvfrom(
    s: SOCKET,
    buf: *mut u8,
    len: i32,
    flags: i32,
    from: *mut SOCKADDR,
    fromlen: *mut i32,
) -> i32 {
    let Some(r) = routed(s) else {
        // SAFETY: the program's arguments, to the system.
        return unsafe { ws::recvfrom(s, buf, len, flags, from, fromlen) };
    };
    // SAFETY: the same contract.
    let n = unsafe { vmmc_recv(s, buf, len, flags) };
    if n >= 0 {
        let peer = r.names().peer;
        if let Some(p) = peer {
            // SAFETY: WinSock's contract: `from` is null or `*fromlen` writable bytes.
            if let Err(e) = unsafe { sockaddr_out(from, fromlen, p) } {
                return fail(&e);
            }
        }
    }
    n
}

/// The program's `WSABUF` array.
///
/// # Safety
/// `bufs` must point to `n` `WSABUF`s.
unsafe fn wsabufs<'a>(bufs: *const WSABUF, n: u32) -> io::Result<&'a [WSABUF]> {
    if bufs.is_null() && n > 0 {
        return Err(io::Error::from_raw_os_error(WSAEFAULT));
    }
    if n == 0 {
        return Ok(&[]);
    }
    // SAFETY: the caller's promise.
    Ok(unsafe { std::slice::from_raw_parts(bufs, n as usize) })
}

/// `WSASend`, gathering from several buffers in one send. Overlapped sends on routed
/// sockets fail with `WSAEOPNOTSUPP`.
///
/// # Safety
/// WinSock's contract for `WSASend`.
#[unsafe(no_mangle)]
pub unsafe extern "system" fn vmmc_WSASend(
    s: SOCKET,
    bufs: *const WSABUF,
    n: u32,
    sent: *mut u32,
    flags: u32,
    ov: *mut OVERLAPPED,
    done: LPWSAOVERLAPPED_COMPLETION_ROUTINE,
) -> i32 {
    let Some(r) = routed(s) else {
        // SAFETY: the program's arguments, to the system.
        return unsafe { ws::WSASend(s, bufs, n, sent, flags, ov, done) };
    };
    if !ov.is_null() || done.is_some() {
        return fail_code(WSAEOPNOTSUPP);
    }
    // SAFETY: WinSock's contract: `n` buffers, each `len` readable bytes at `buf`.
    let slices: io::Result<Vec<IoSlice<'_>>> = unsafe { wsabufs(bufs, n) }.and_then(|b| {
        b.iter()
            // SAFETY: as above.
            .map(|w| unsafe { slice(w.buf, w.len.min(i32::MAX as u32) as i32) }.map(IoSlice::new))
            .collect()
    });
    match slices.and_then(|v| calls::send(&r, &v, flags as i32)) {
        Ok(k) => {
            if !sent.is_null() {
                // SAFETY: WinSock's contract: `sent` is writable when given.
                unsafe { *sent = k.min(u32::MAX as usize) as u32 };
            }
            0
        }
        Err(e) => fail(&e),
    }
}

/// `WSARecv`, scattering into several buffers in one receive. Overlapped receives on routed
/// sockets fail with `WSAEOPNOTSUPP`.
///
/// # Safety
/// WinSock's contract for `WSARecv`.
#[unsafe(no_mangle)]
pub unsafe extern "system" fn vmmc_WSARecv(
    s: SOCKET,
    bufs: *const WSABUF,
    n: u32,
    got: *mut u32,
    flags: *mut u32,
    ov: *mut OVERLAPPED,
    done: LPWSAOVERLAPPED_COMPLETION_ROUTINE,
) -> i32 {
    let Some(r) = routed(s) else {
        // SAFETY: the program's arguments, to the system.
        return unsafe { ws::WSARecv(s, bufs, n, got, flags, ov, done) };
    };
    if !ov.is_null() || done.is_some() {
        return fail_code(WSAEOPNOTSUPP);
    }
    let f = if flags.is_null() {
        0
    } else {
        // SAFETY: WinSock's contract: `flags` is readable when given.
        unsafe { *flags }
    };
    // SAFETY: WinSock's contract: `n` buffers, each with room for `len` bytes at `buf`; the
    // program's buffers do not overlap.
    let slices: io::Result<Vec<IoSliceMut<'_>>> = unsafe { wsabufs(bufs, n) }.and_then(|b| {
        b.iter()
            .map(|w| {
                // SAFETY: as above.
                unsafe { slice_mut(w.buf, w.len.min(i32::MAX as u32) as i32) }.map(IoSliceMut::new)
            })
            .collect()
    });
    match slices.and_then(|mut v| calls::recv(&r, &mut v, f as i32)) {
        Ok(k) => {
            // SAFETY: WinSock's contract: `got` and `flags` are writable when given.
            unsafe {
                if !got.is_null() {
                    *got = k.min(u32::MAX as usize) as u32;
                }
                if !flags.is_null() {
                    *flags = 0;
                }
            }
            0
        }
        Err(e) => fail(&e),
    }
}

/// `shutdown`.
///
/// # Safety
/// WinSock's contract for `shutdown`.
#[unsafe(no_mangle)]
pub unsafe extern "system" fn vmmc_shutdown(s: SOCKET, how: i32) -> i32 {
    match routed(s) {
        Some(r) => calls::shutdown(&r, how).map_or_else(|e| fail(&e), |()| 0),
        // SAFETY: the program's arguments, to the system.
        None => unsafe { ws::shutdown(s, how) },
    }
}

/// `getsockname`: a routed socket's bound address as the program asked for it (or its
/// family's loopback address).
///
/// # Safety
/// WinSock's contract for `getsockname`.
#[unsafe(no_mangle)]
pub unsafe extern "system" fn vmmc_getsockname(
    s: SOCKET,
    name: *mut SOCKADDR,
    len: *mut i32,
) -> i32 {
    let Some(r) = routed(s) else {
        // SAFETY: the program's arguments, to the system.
        return unsafe { ws::getsockname(s, name, len) };
    };
    let a = r.names().local.unwrap_or_else(|| loopback(r.family, 0));
    // SAFETY: WinSock's contract: `*len` writable bytes at `name`.
    unsafe { sockaddr_out(name, len, a) }.map_or_else(|e| fail(&e), |()| 0)
}

/// `getpeername`: the address the program connected to (or its peer's, accepted).
///
/// # Safety
/// WinSock's contract for `getpeername`.
#[unsafe(no_mangle)]
pub unsafe extern "system" fn vmmc_getpeername(
    s: SOCKET,
    name: *mut SOCKADDR,
    len: *mut i32,
) -> i32 {
    let Some(r) = routed(s) else {
        // SAFETY: the program's arguments, to the system.
        return unsafe { ws::getpeername(s, name, len) };
    };
    let Some(a) = r.names().peer else {
        return fail_code(WSAENOTCONN);
    };
    // SAFETY: WinSock's contract: `*len` writable bytes at `name`.
    unsafe { sockaddr_out(name, len, a) }.map_or_else(|e| fail(&e), |()| 0)
}

/// An option value of `len` bytes as a number (`DWORD`, `BOOL` or one byte).
///
/// # Safety
/// `v` must point to `len` readable bytes.
unsafe fn opt_in(v: *const u8, len: i32) -> Option<u32> {
    if v.is_null() || len < 1 {
        return None;
    }
    let mut b = [0u8; 4];
    let n = (len as usize).min(4);
    // SAFETY: the caller's promise; at most `len` bytes are read.
    unsafe { std::ptr::copy_nonoverlapping(v, b.as_mut_ptr(), n) };
    Some(u32::from_le_bytes(b))
}

/// `setsockopt`: buffer sizes, timeouts and `TCP_NODELAY` on a routed socket go to the
/// table; other options to the placeholder (so they succeed or fail as the system says).
///
/// # Safety
/// WinSock's contract for `setsockopt`.
#[unsafe(no_mangle)]
pub unsafe extern "system" fn vmmc_setsockopt(
    s: SOCKET,
    level: i32,
    name: i32,
    v: *const u8,
    len: i32,
) -> i32 {
    // SAFETY: WinSock's contract: `len` bytes at `v`.
    let value = unsafe { opt_in(v, len) };
    match (routed(s), value) {
        (Some(r), Some(value)) => match calls::setsockopt(&r, level, name, value) {
            Ok(true) => return 0,
            Ok(false) => {}
            Err(e) => return fail(&e),
        },
        (None, Some(value)) => calls::note_setsockopt(s, level, name, value),
        _ => {}
    }
    // SAFETY: the program's arguments, to the system.
    unsafe { ws::setsockopt(s, level, name, v, len) }
}

/// `getsockopt`: as `setsockopt`, the table's options from the table.
///
/// # Safety
/// WinSock's contract for `getsockopt`.
#[unsafe(no_mangle)]
pub unsafe extern "system" fn vmmc_getsockopt(
    s: SOCKET,
    level: i32,
    name: i32,
    v: *mut u8,
    len: *mut i32,
) -> i32 {
    if let Some(r) = routed(s) {
        match calls::getsockopt(&r, level, name) {
            Ok(Some(value)) => {
                // SAFETY: WinSock's contract: `*len` writable bytes at `v`.
                unsafe {
                    if v.is_null() || len.is_null() || *len < 1 {
                        return fail_code(WSAEFAULT);
                    }
                    let n = (*len as usize).min(4);
                    std::ptr::copy_nonoverlapping(value.to_le_bytes().as_ptr(), v, n);
                    *len = n as i32;
                }
                return 0;
            }
            Ok(None) => {}
            Err(e) => return fail(&e),
        }
    }
    // SAFETY: the program's arguments, to the system.
    unsafe { ws::getsockopt(s, level, name, v, len) }
}

/// `ioctlsocket`: `FIONBIO`, `FIONREAD` and `SIOCATMARK` on routed sockets.
///
/// # Safety
/// WinSock's contract for `ioctlsocket`.
#[unsafe(no_mangle)]
pub unsafe extern "system" fn vmmc_ioctlsocket(s: SOCKET, cmd: i32, arg: *mut u32) -> i32 {
    if arg.is_null() {
        return fail_code(WSAEFAULT);
    }
    let Some(r) = routed(s) else {
        if cmd as u32 == FIONBIO {
            // SAFETY: WinSock's contract: `arg` is readable.
            let on = unsafe { *arg } != 0;
            map::note(s, |p| p.nonblocking = on);
        }
        // SAFETY: the program's arguments, to the system.
        return unsafe { ws::ioctlsocket(s, cmd, arg) };
    };
    // SAFETY: WinSock's contract: `arg` is readable and writable.
    match calls::ioctl(&r, cmd as u32, unsafe { *arg }) {
        Ok(out) => {
            if let Some(v) = out {
                // SAFETY: as above.
                unsafe { *arg = v };
            }
            0
        }
        Err(e) => fail(&e),
    }
}

/// `WSAIoctl`: the `ioctlsocket` requests and the pointer-based ones ([`crate::ioctl`]) on
/// routed sockets; anything else there fails with `WSAEOPNOTSUPP` (extension functions such
/// as `ConnectEx` included), as do overlapped requests.
///
/// # Safety
/// WinSock's contract for `WSAIoctl`.
#[unsafe(no_mangle)]
pub unsafe extern "system" fn vmmc_WSAIoctl(
    s: SOCKET,
    code: u32,
    inbuf: *const c_void,
    inlen: u32,
    outbuf: *mut c_void,
    outlen: u32,
    returned: *mut u32,
    ov: *mut OVERLAPPED,
    done: LPWSAOVERLAPPED_COMPLETION_ROUTINE,
) -> i32 {
    let Some(r) = routed(s) else {
        // SAFETY: the program's arguments, to the system.
        return unsafe { ws::WSAIoctl(s, code, inbuf, inlen, outbuf, outlen, returned, ov, done) };
    };
    if !ov.is_null() || done.is_some() {
        return fail_code(WSAEOPNOTSUPP);
    }
    // SAFETY: WinSock's contract: `inlen` readable bytes at `inbuf`.
    let word_in = unsafe { opt_in(inbuf.cast(), inlen.min(8) as i32) }.unwrap_or(0);
    let wide_in = if inbuf.is_null() || inlen < 8 {
        u64::from(word_in)
    } else {
        // SAFETY: at least 8 readable bytes (checked).
        unsafe { inbuf.cast::<u64>().read_unaligned() }
    };
    let out: io::Result<Vec<u8>> = match code {
        FIONBIO | FIONREAD | SIOCATMARK => calls::ioctl(&r, code, word_in)
            .map(|v| v.map(|v| v.to_le_bytes().to_vec()).unwrap_or_default()),
        _ => calls::pointer_ioctl(&r, code, wide_in).map(|v| {
            v.map(|(p, n)| [p.to_le_bytes(), n.to_le_bytes()].concat())
                .unwrap_or_default()
        }),
    };
    match out {
        Ok(bytes) => {
            if !bytes.is_empty() {
                if outbuf.is_null() || (outlen as usize) < bytes.len() {
                    return fail_code(WSAEFAULT);
                }
                // SAFETY: `outlen` writable bytes at `outbuf` (checked against the length).
                unsafe {
                    std::ptr::copy_nonoverlapping(bytes.as_ptr(), outbuf.cast(), bytes.len())
                };
            }
            if !returned.is_null() {
                // SAFETY: WinSock's contract: `returned` is writable when given.
                unsafe { *returned = bytes.len() as u32 };
            }
            0
        }
        Err(e) => fail(&e),
    }
}

/// The sockets of an `fd_set`.
///
/// # Safety
/// `set` must be null or a valid `fd_set` (`fd_count` entries, however large the program's
/// `FD_SETSIZE`).
unsafe fn fd_list(set: *const FD_SET) -> Vec<SOCKET> {
    if set.is_null() {
        return Vec::new();
    }
    // SAFETY: the caller's promise: `fd_count` sockets follow in `fd_array`.
    unsafe {
        let n = (*set).fd_count as usize;
        let first = (&raw const (*set).fd_array).cast::<SOCKET>();
        std::slice::from_raw_parts(first, n).to_vec()
    }
}

/// Stores `list` in an `fd_set` that held at least as many sockets.
///
/// # Safety
/// As [`fd_list`], and `list` no longer than what the set held.
unsafe fn fd_store(set: *mut FD_SET, list: &[SOCKET]) {
    if set.is_null() {
        return;
    }
    // SAFETY: the caller's promise: room for the set's former count, which `list` fits.
    unsafe {
        let first = (&raw mut (*set).fd_array).cast::<SOCKET>();
        std::ptr::copy_nonoverlapping(list.as_ptr(), first, list.len());
        (*set).fd_count = list.len() as u32;
    }
}

/// An `fd_set` of any size for the system's `select`: the count, then the sockets.
fn fd_buf(list: &[SOCKET]) -> Vec<usize> {
    let mut v = Vec::with_capacity(list.len() + 1);
    v.push(list.len());
    v.extend_from_slice(list);
    v
}

fn fd_buf_list(v: &[usize]) -> &[usize] {
    let n = v.first().map_or(0, |&n| n as u32 as usize);
    v.get(1..1 + n).unwrap_or(&[])
}

/// The system's `select` on sets of any size.
fn system_select(
    r: &mut [usize],
    w: &mut [usize],
    e: &mut [usize],
    t: Duration,
) -> io::Result<usize> {
    let tv = TIMEVAL {
        tv_sec: t.as_secs().min(i32::MAX as u64) as i32,
        tv_usec: t.subsec_micros() as i32,
    };
    let set = |v: &mut [usize]| -> *mut FD_SET {
        if v.len() > 1 {
            v.as_mut_ptr().cast()
        } else {
            std::ptr::null_mut()
        }
    };
    let (rp, wp, ep) = (set(r), set(w), set(e));
    if rp.is_null() && wp.is_null() && ep.is_null() {
        std::thread::sleep(t);
        return Ok(0);
    }
    // SAFETY: each non-null set is a count followed by that many sockets, the layout of an
    // `fd_set` (a 32-bit count in a pointer-sized, pointer-aligned slot).
    let n = unsafe { ws::select(0, rp, wp, ep, &tv) };
    if n < 0 {
        return Err(last_error());
    }
    Ok(n as usize)
}

/// `select`, over routed and system sockets at once (with `__WSAFDIsSet`, which needs
/// nothing of its own: it only reads the sets).
///
/// # Safety
/// WinSock's contract for `select`.
#[unsafe(no_mangle)]
pub unsafe extern "system" fn vmmc_select(
    nfds: i32,
    rs: *mut FD_SET,
    wset: *mut FD_SET,
    es: *mut FD_SET,
    timeout: *const TIMEVAL,
) -> i32 {
    // SAFETY: WinSock's contract: each set is null or valid.
    let (rl, wl, el) = unsafe { (fd_list(rs), fd_list(wset), fd_list(es)) };
    let any_routed = map::any()
        && rl
            .iter()
            .chain(&wl)
            .chain(&el)
            .any(|&s| map::get(s).is_some());
    if !any_routed {
        // SAFETY: the program's arguments, to the system.
        return unsafe { ws::select(nfds, rs, wset, es, timeout) };
    }
    let limit = if timeout.is_null() {
        None
    } else {
        // SAFETY: WinSock's contract: `timeout` is readable when given.
        let tv = unsafe { &*timeout };
        Some(
            Duration::from_secs(tv.tv_sec.max(0) as u64)
                + Duration::from_micros(tv.tv_usec.max(0) as u64),
        )
    };
    // The routed sockets, each once, with what each set asks of it.
    let mut waits: Vec<(SOCKET, RoutedWait)> = Vec::new();
    for (list, ev) in [(&rl, POLLIN), (&wl, POLLOUT)] {
        for &s in list.iter() {
            if let Some(r) = map::get(s) {
                match waits.iter_mut().find(|(h, _)| *h == s) {
                    Some((_, w)) => w.events |= ev,
                    None => waits.push((
                        s,
                        RoutedWait {
                            routed: r,
                            events: ev,
                            revents: 0,
                        },
                    )),
                }
            }
        }
    }
    let sys = |l: &[SOCKET]| -> Vec<SOCKET> {
        l.iter()
            .copied()
            .filter(|&s| map::get(s).is_none())
            .collect()
    };
    let (sr, sw, se) = (sys(&rl), sys(&wl), sys(&el));
    let mut found = (Vec::new(), Vec::new(), Vec::new());
    let mut routed_waits: Vec<RoutedWait> = waits
        .iter()
        .map(|(_, w)| RoutedWait {
            routed: w.routed.clone(),
            events: w.events,
            revents: 0,
        })
        .collect();
    let outcome = calls::wait(
        &mut routed_waits,
        |extra, t| {
            let mut rb = fd_buf(&[sr.as_slice(), extra].concat());
            let mut wb = fd_buf(&sw);
            let mut eb = fd_buf(&se);
            system_select(&mut rb, &mut wb, &mut eb, t)?;
            let mine = |v: &[usize], own: &[SOCKET]| -> Vec<SOCKET> {
                fd_buf_list(v)
                    .iter()
                    .copied()
                    .filter(|s| own.contains(s))
                    .collect()
            };
            found = (mine(&rb, &sr), mine(&wb, &sw), mine(&eb, &se));
            Ok(found.0.len() + found.1.len() + found.2.len())
        },
        limit,
    );
    if let Err(e) = outcome {
        return fail(&e);
    }
    let (mut r_out, mut w_out, e_out) = found;
    for ((s, _), w) in waits.iter().zip(&routed_waits) {
        if w.revents & POLLIN != 0 && rl.contains(s) {
            r_out.push(*s);
        }
        if w.revents & POLLOUT != 0 && wl.contains(s) {
            w_out.push(*s);
        }
    }
    // SAFETY: each list is a subset of the set it is stored in.
    unsafe {
        fd_store(rs, &r_out);
        fd_store(wset, &w_out);
        fd_store(es, &e_out);
    }
    (r_out.len() + w_out.len() + e_out.len()) as i32
}

/// WinSock's `POLL*` bits from the table's.
fn poll_bits(asked: i16, got: i16) -> i16 {
    let mut out = 0;
    if got & POLLIN != 0 {
        out |= asked & (ws::POLLRDNORM | ws::POLLRDBAND);
    }
    if got & POLLOUT != 0 {
        out |= asked & ws::POLLWRNORM;
    }
    if got & POLLHUP != 0 {
        out |= ws::POLLHUP;
    }
    if got & POLLERR != 0 {
        out |= ws::POLLERR;
    }
    if got & POLLNVAL != 0 {
        out |= ws::POLLNVAL;
    }
    out
}

/// `WSAPoll`, over routed and system sockets at once.
///
/// # Safety
/// WinSock's contract for `WSAPoll`.
#[unsafe(no_mangle)]
pub unsafe extern "system" fn vmmc_WSAPoll(fds: *mut WSAPOLLFD, n: u32, timeout: i32) -> i32 {
    if fds.is_null() && n > 0 {
        return fail_code(WSAEFAULT);
    }
    let list: &mut [WSAPOLLFD] = if n == 0 {
        &mut []
    } else {
        // SAFETY: WinSock's contract: `n` entries at `fds`.
        unsafe { std::slice::from_raw_parts_mut(fds, n as usize) }
    };
    if !map::any() || list.iter().all(|p| map::get(p.fd).is_none()) {
        // SAFETY: the program's arguments, to the system.
        return unsafe { ws::WSAPoll(fds, n, timeout) };
    }
    let limit = (timeout >= 0).then(|| Duration::from_millis(timeout as u64));
    let mut routed_at = Vec::new();
    let mut waits = Vec::new();
    let mut system_at = Vec::new();
    for (i, p) in list.iter().enumerate() {
        match map::get(p.fd) {
            Some(r) => {
                let mut ev = 0;
                if p.events & (ws::POLLRDNORM | ws::POLLRDBAND) != 0 {
                    ev |= POLLIN;
                }
                if p.events & ws::POLLWRNORM != 0 {
                    ev |= POLLOUT;
                }
                routed_at.push(i);
                waits.push(RoutedWait {
                    routed: r,
                    events: ev,
                    revents: 0,
                });
            }
            None => system_at.push(i),
        }
    }
    let system: Vec<WSAPOLLFD> = system_at
        .iter()
        .map(|&i| WSAPOLLFD {
            fd: list[i].fd,
            events: list[i].events,
            revents: 0,
        })
        .collect();
    let mut got: Vec<i16> = vec![0; system.len()];
    let outcome = calls::wait(
        &mut waits,
        |extra, t| {
            let mut all = system.clone();
            all.extend(extra.iter().map(|&h| WSAPOLLFD {
                fd: h,
                events: ws::POLLRDNORM,
                revents: 0,
            }));
            if all.is_empty() {
                std::thread::sleep(t);
                return Ok(0);
            }
            let ms = t.as_millis().min(i32::MAX as u128) as i32;
            // SAFETY: `all` is a live array of its length.
            let r = unsafe { ws::WSAPoll(all.as_mut_ptr(), all.len() as u32, ms) };
            if r < 0 {
                return Err(last_error());
            }
            for (g, p) in got.iter_mut().zip(&all) {
                *g = p.revents;
            }
            Ok(got.iter().filter(|&&g| g != 0).count())
        },
        limit,
    );
    if let Err(e) = outcome {
        return fail(&e);
    }
    let mut ready = 0;
    for (&i, w) in routed_at.iter().zip(&waits) {
        list[i].revents = poll_bits(list[i].events, w.revents);
    }
    for (&i, g) in system_at.iter().zip(&got) {
        list[i].revents = *g;
    }
    for p in list.iter() {
        if p.revents != 0 {
            ready += 1;
        }
    }
    ready
}

/// `WSADuplicateSocketW`: a routed socket cannot be shared with another process yet (that
/// needs the Windows shared-memory backend); `WSAEOPNOTSUPP`.
///
/// # Safety
/// WinSock's contract for `WSADuplicateSocketW`.
#[unsafe(no_mangle)]
pub unsafe extern "system" fn vmmc_WSADuplicateSocketW(
    s: SOCKET,
    pid: u32,
    info: *mut WSAPROTOCOL_INFOW,
) -> i32 {
    if routed(s).is_some() {
        return fail_code(WSAEOPNOTSUPP);
    }
    // SAFETY: the program's arguments, to the system.
    unsafe { ws::WSADuplicateSocketW(s, pid, info) }
}

/// `WSADuplicateSocketA`: as `WSADuplicateSocketW`.
///
/// # Safety
/// WinSock's contract for `WSADuplicateSocketA`.
#[unsafe(no_mangle)]
pub unsafe extern "system" fn vmmc_WSADuplicateSocketA(
    s: SOCKET,
    pid: u32,
    info: *mut WSAPROTOCOL_INFOA,
) -> i32 {
    if routed(s).is_some() {
        return fail_code(WSAEOPNOTSUPP);
    }
    // SAFETY: the program's arguments, to the system.
    unsafe { ws::WSADuplicateSocketA(s, pid, info) }
}

/// `WSAEventSelect`: not on routed sockets (`WSAEOPNOTSUPP`).
///
/// # Safety
/// WinSock's contract for `WSAEventSelect`.
#[unsafe(no_mangle)]
pub unsafe extern "system" fn vmmc_WSAEventSelect(s: SOCKET, ev: ws::WSAEVENT, events: i32) -> i32 {
    if routed(s).is_some() {
        return fail_code(WSAEOPNOTSUPP);
    }
    // SAFETY: the program's arguments, to the system.
    unsafe { ws::WSAEventSelect(s, ev, events) }
}

/// `WSAAsyncSelect`: not on routed sockets (`WSAEOPNOTSUPP`).
///
/// # Safety
/// WinSock's contract for `WSAAsyncSelect`.
#[unsafe(no_mangle)]
pub unsafe extern "system" fn vmmc_WSAAsyncSelect(
    s: SOCKET,
    wnd: HWND,
    msg: u32,
    events: i32,
) -> i32 {
    if routed(s).is_some() {
        return fail_code(WSAEOPNOTSUPP);
    }
    // SAFETY: the program's arguments, to the system.
    unsafe { ws::WSAAsyncSelect(s, wnd, msg, events) }
}
