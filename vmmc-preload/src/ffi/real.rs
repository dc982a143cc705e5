//! The C library's own functions, found behind this library with `dlsym(RTLD_NEXT)`.
//!
//! Every call this library does not take for VMMC goes here, and so do the kernel calls it
//! makes itself on placeholders. They are looked up once, on first use, and the safe
//! wrappers below are the only way the rest of the crate reaches the kernel.

use std::ffi::{c_int, c_ulong, c_void, CStr};
use std::io;
use std::net::SocketAddr;
use std::sync::OnceLock;

use libc::{epoll_event, msghdr, nfds_t, pollfd, sigset_t, sockaddr, socklen_t, timespec};

use super::addr::from_std;

type Ssize = libc::ssize_t;

/// The next definitions of the functions this library replaces.
pub(crate) struct Real {
    pub connect: unsafe extern "C" fn(c_int, *const sockaddr, socklen_t) -> c_int,
    pub bind: unsafe extern "C" fn(c_int, *const sockaddr, socklen_t) -> c_int,
    pub listen: unsafe extern "C" fn(c_int, c_int) -> c_int,
    pub accept: unsafe extern "C" fn(c_int, *mut sockaddr, *mut socklen_t) -> c_int,
    pub accept4: unsafe extern "C" fn(c_int, *mut sockaddr, *mut socklen_t, c_int) -> c_int,
    pub socket: unsafe extern "C" fn(c_int, c_int, c_int) -> c_int,
    pub send: unsafe extern "C" fn(c_int, *const c_void, usize, c_int) -> Ssize,
    pub recv: unsafe extern "C" fn(c_int, *mut c_void, usize, c_int) -> Ssize,
    pub sendto: unsafe extern "C" fn(
        c_int,
        *const c_void,
        usize,
        c_int,
        *const sockaddr,
        socklen_t,
    ) -> Ssize,
    pub recvfrom: unsafe extern "C" fn(
        c_int,
        *mut c_void,
        usize,
        c_int,
        *mut sockaddr,
        *mut socklen_t,
    ) -> Ssize,
    pub sendmsg: unsafe extern "C" fn(c_int, *const msghdr, c_int) -> Ssize,
    pub recvmsg: unsafe extern "C" fn(c_int, *mut msghdr, c_int) -> Ssize,
    pub read: unsafe extern "C" fn(c_int, *mut c_void, usize) -> Ssize,
    pub write: unsafe extern "C" fn(c_int, *const c_void, usize) -> Ssize,
    pub readv: unsafe extern "C" fn(c_int, *const libc::iovec, c_int) -> Ssize,
    pub writev: unsafe extern "C" fn(c_int, *const libc::iovec, c_int) -> Ssize,
    pub shutdown: unsafe extern "C" fn(c_int, c_int) -> c_int,
    pub close: unsafe extern "C" fn(c_int) -> c_int,
    pub getsockopt: unsafe extern "C" fn(c_int, c_int, c_int, *mut c_void, *mut socklen_t) -> c_int,
    pub setsockopt: unsafe extern "C" fn(c_int, c_int, c_int, *const c_void, socklen_t) -> c_int,
    pub getsockname: unsafe extern "C" fn(c_int, *mut sockaddr, *mut socklen_t) -> c_int,
    pub getpeername: unsafe extern "C" fn(c_int, *mut sockaddr, *mut socklen_t) -> c_int,
    pub ioctl: unsafe extern "C" fn(c_int, c_ulong, ...) -> c_int,
    pub fcntl: unsafe extern "C" fn(c_int, c_int, ...) -> c_int,
    pub fcntl64: Option<unsafe extern "C" fn(c_int, c_int, ...) -> c_int>,
    pub poll: unsafe extern "C" fn(*mut pollfd, nfds_t, c_int) -> c_int,
    pub ppoll: unsafe extern "C" fn(*mut pollfd, nfds_t, *const timespec, *const sigset_t) -> c_int,
    pub select: unsafe extern "C" fn(
        c_int,
        *mut libc::fd_set,
        *mut libc::fd_set,
        *mut libc::fd_set,
        *mut libc::timeval,
    ) -> c_int,
    pub pselect: unsafe extern "C" fn(
        c_int,
        *mut libc::fd_set,
        *mut libc::fd_set,
        *mut libc::fd_set,
        *const timespec,
        *const sigset_t,
    ) -> c_int,
    pub epoll_ctl: unsafe extern "C" fn(c_int, c_int, c_int, *mut epoll_event) -> c_int,
    pub epoll_wait: unsafe extern "C" fn(c_int, *mut epoll_event, c_int, c_int) -> c_int,
    pub epoll_pwait:
        unsafe extern "C" fn(c_int, *mut epoll_event, c_int, c_int, *const sigset_t) -> c_int,
    pub dup: unsafe extern "C" fn(c_int) -> c_int,
    pub dup2: unsafe extern "C" fn(c_int, c_int) -> c_int,
    pub dup3: unsafe extern "C" fn(c_int, c_int, c_int) -> c_int,
    pub fork: unsafe extern "C" fn() -> libc::pid_t,
    /// glibc 2.34 and later.
    pub close_range: Option<unsafe extern "C" fn(libc::c_uint, libc::c_uint, c_int) -> c_int>,
    /// glibc 2.34 and later.
    pub closefrom: Option<unsafe extern "C" fn(c_int)>,
}

fn find(name: &CStr) -> *mut c_void {
    // SAFETY: `name` is NUL-terminated; RTLD_NEXT asks for the definition after this
    // library's, which is what an interposer forwards to.
    unsafe { libc::dlsym(libc::RTLD_NEXT, name.as_ptr()) }
}

/// A symbol's address as the function pointer type `F`.
///
/// # Safety
/// `p` is the address of a C function whose prototype is `F`.
unsafe fn cast<F: Copy>(p: *mut c_void, name: &CStr) -> F {
    if std::mem::size_of::<F>() != std::mem::size_of::<*mut c_void>() {
        die(name);
    }
    // SAFETY: sizes checked above; the caller vouches for the prototype.
    unsafe { std::mem::transmute_copy::<*mut c_void, F>(&p) }
}

macro_rules! next {
    ($name:literal) => {{
        let p = find($name);
        if p.is_null() {
            die($name);
        }
        // SAFETY: the symbol is the C library's function of this name, whose C prototype
        // is the field's type (from the `libc` crate's declarations).
        unsafe { cast(p, $name) }
    }};
}

fn die(name: &CStr) -> ! {
    eprintln!("vmmc-preload: the C library's {name:?} is missing or unusable; cannot run");
    std::process::abort()
}

/// The real functions, looked up on first use.
pub(crate) fn real() -> &'static Real {
    static REAL: OnceLock<Real> = OnceLock::new();
    REAL.get_or_init(|| Real {
        connect: next!(c"connect"),
        bind: next!(c"bind"),
        listen: next!(c"listen"),
        accept: next!(c"accept"),
        accept4: next!(c"accept4"),
        socket: next!(c"socket"),
        send: next!(c"send"),
        recv: next!(c"recv"),
        sendto: next!(c"sendto"),
        recvfrom: next!(c"recvfrom"),
        sendmsg: next!(c"sendmsg"),
        recvmsg: next!(c"recvmsg"),
        read: next!(c"read"),
        write: next!(c"write"),
        readv: next!(c"readv"),
        writev: next!(c"writev"),
        shutdown: next!(c"shutdown"),
        close: next!(c"close"),
        getsockopt: next!(c"getsockopt"),
        setsockopt: next!(c"setsockopt"),
        getsockname: next!(c"getsockname"),
        getpeername: next!(c"getpeername"),
        ioctl: next!(c"ioctl"),
        fcntl: next!(c"fcntl"),
        fcntl64: {
            let p = find(c"fcntl64");
            // SAFETY: as in `next!`: glibc's fcntl64 has fcntl's prototype.
            (!p.is_null()).then(|| unsafe { cast(p, c"fcntl64") })
        },
        poll: next!(c"poll"),
        ppoll: next!(c"ppoll"),
        select: next!(c"select"),
        pselect: next!(c"pselect"),
        epoll_ctl: next!(c"epoll_ctl"),
        epoll_wait: next!(c"epoll_wait"),
        epoll_pwait: next!(c"epoll_pwait"),
        dup: next!(c"dup"),
        dup2: next!(c"dup2"),
        dup3: next!(c"dup3"),
        fork: next!(c"fork"),
        close_range: {
            let p = find(c"close_range");
            // SAFETY: as in `next!`, glibc's close_range(unsigned, unsigned, int).
            (!p.is_null()).then(|| unsafe { cast(p, c"close_range") })
        },
        closefrom: {
            let p = find(c"closefrom");
            // SAFETY: as in `next!`, glibc's closefrom(int).
            (!p.is_null()).then(|| unsafe { cast(p, c"closefrom") })
        },
    })
}

fn check(r: c_int) -> io::Result<c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// A new kernel stream socket: a placeholder for a VMMC connection.
pub(crate) fn socket(family: c_int, flags: c_int) -> io::Result<c_int> {
    // SAFETY: no pointers.
    check(unsafe { (real().socket)(family, libc::SOCK_STREAM | flags, 0) })
}

/// Connects the kernel socket itself (the fallback for a route with no VMMC listener).
pub(crate) fn connect(fd: c_int, addr: SocketAddr) -> io::Result<()> {
    let (sa, len) = from_std(addr);
    // SAFETY: `sa` is a valid sockaddr of `len` bytes.
    check(unsafe { (real().connect)(fd, (&raw const sa).cast(), len) }).map(drop)
}

/// Closes a kernel descriptor.
pub(crate) fn close(fd: c_int) -> io::Result<()> {
    // SAFETY: no pointers.
    check(unsafe { (real().close)(fd) }).map(drop)
}

/// Duplicates a kernel descriptor (`F_DUPFD`-style when `min` is set).
pub(crate) fn dup_min(fd: c_int, min: c_int, cloexec: bool) -> io::Result<c_int> {
    let cmd = if cloexec {
        libc::F_DUPFD_CLOEXEC
    } else {
        libc::F_DUPFD
    };
    // SAFETY: F_DUPFD takes an int.
    check(unsafe { (real().fcntl)(fd, cmd, min) })
}

/// `fcntl` with an integer argument (or none), on a kernel descriptor.
pub(crate) fn fcntl_int(fd: c_int, cmd: c_int, arg: c_ulong) -> io::Result<c_int> {
    // SAFETY: the commands this crate forwards here take an int or nothing.
    check(unsafe { (real().fcntl)(fd, cmd, arg) })
}

/// An `int` socket option of a kernel socket.
pub(crate) fn getsockopt_int(fd: c_int, level: c_int, name: c_int) -> io::Result<c_int> {
    let mut v: c_int = 0;
    let mut len = std::mem::size_of::<c_int>() as socklen_t;
    // SAFETY: `v` and `len` are valid for the int option asked for.
    check(unsafe { (real().getsockopt)(fd, level, name, (&raw mut v).cast(), &mut len) })?;
    Ok(v)
}

/// `ppoll` on kernel descriptors; `None` waits for ever.
pub(crate) fn ppoll(
    fds: &mut [pollfd],
    timeout: Option<std::time::Duration>,
    sigmask: Option<&sigset_t>,
) -> io::Result<usize> {
    let ts = timeout.map(|t| timespec {
        tv_sec: t.as_secs() as libc::time_t,
        tv_nsec: t.subsec_nanos() as libc::c_long,
    });
    let tsp = ts
        .as_ref()
        .map_or(std::ptr::null(), |t| t as *const timespec);
    let mask = sigmask.map_or(std::ptr::null(), |m| m as *const sigset_t);
    // SAFETY: `fds` is a valid array of its length; `tsp` and `mask` are null or valid.
    check(unsafe { (real().ppoll)(fds.as_mut_ptr(), fds.len() as nfds_t, tsp, mask) })
        .map(|n| n as usize)
}

/// `epoll_wait` on a kernel epoll descriptor without waiting.
pub(crate) fn epoll_peek(epfd: c_int, out: &mut [epoll_event]) -> io::Result<usize> {
    let n = out.len().min(c_int::MAX as usize) as c_int;
    if n == 0 {
        return Ok(0);
    }
    // SAFETY: `out` is valid for `n` events.
    check(unsafe { (real().epoll_wait)(epfd, out.as_mut_ptr(), n, 0) }).map(|n| n as usize)
}

/// `fork` itself.
pub(crate) fn fork() -> io::Result<libc::pid_t> {
    // SAFETY: no pointers; the caller prepares this library's state for the child.
    let pid = unsafe { (real().fork)() };
    if pid < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(pid)
    }
}

/// A word of memory shared with every process this one forks later, for deciding who owns
/// a socket after a `fork`. Words are never freed (four bytes a socket).
pub(crate) fn shared_words(n: usize) -> Option<&'static [std::sync::atomic::AtomicI32]> {
    let len = n * std::mem::size_of::<i32>();
    // SAFETY: a fresh anonymous shared mapping; nothing else refers to the address.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return None;
    }
    // SAFETY: the mapping is `len` bytes, zeroed, aligned to a page, never unmapped, and
    // only ever accessed through atomics (here and in the processes that share it).
    Some(unsafe { std::slice::from_raw_parts(p.cast::<std::sync::atomic::AtomicI32>(), n) })
}
