//! `poll`, `select` and `epoll` over mixed sets of VMMC sockets and kernel descriptors.
//!
//! A VMMC socket becomes readable when its peer deposits into shared memory: no kernel
//! object changes, so the kernel cannot wait for it alone. A wait therefore looks at the
//! VMMC sockets' rings and spins for a bounded time (round trips stay in the microseconds),
//! peeking at the kernel descriptors now and then; then it asks the VMMC peers to notify
//! (each socket's eventfd) and sleeps in the kernel on the kernel descriptors and those
//! eventfds together. The epoll instance itself keeps only the kernel descriptors; this
//! module keeps the VMMC interests beside it.

use std::collections::HashMap;
use std::io;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use libc::{epoll_event, pollfd, sigset_t};
use vmmc_sockets::table::{Sock, SocketTable, POLLERR, POLLHUP, POLLNVAL};

use crate::ffi::real;
use crate::{config, fdmap, sock};

/// A sleep is cut into slices this long, so a notification lost to a race costs at most
/// this much latency, never a hang.
const SLICE: Duration = Duration::from_millis(50);
/// How long a wait looks before it starts yielding its core: short, since a set of sockets
/// has no single peer to learn about (see [`crate::prespin`] for receives).
const PRESPIN: Duration = Duration::from_micros(3);
/// While spinning, the kernel descriptors are peeked at (a system call) once per this many
/// looks at the rings.
const KERNEL_EVERY: u32 = 16;

fn table() -> &'static SocketTable {
    SocketTable::global()
}

/// What `s` is ready for, as poll bits; a socket another process took after `fork` is
/// `POLLNVAL`.
fn look(s: Sock, events: i16, arm: bool) -> i16 {
    if sock::usable(s).is_err() {
        return POLLNVAL;
    }
    if !arm && events & libc::POLLOUT == 0 {
        // Readable or not, from the ring words alone: the table's readiness also drains
        // the eventfd (a system call), which only matters before sleeping.
        let mut b = [0u8; 1];
        match table().recv(s, &mut b, libc::MSG_PEEK | libc::MSG_DONTWAIT) {
            Ok(_) => return libc::POLLIN & events,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return 0,
            // A listener, an error to report, a hang-up: the full answer.
            Err(_) => {}
        }
    }
    table().readiness(s, events, arm)
}

/// Sleeps in the kernel on `kernel` plus the notification fds of `socks`; returns the
/// kernel entries' revents in `kernel`.
fn sleep(
    kernel: &mut [pollfd],
    socks: &[Sock],
    deadline: Option<Instant>,
    sigmask: Option<&sigset_t>,
) -> io::Result<()> {
    let mut set: Vec<pollfd> = kernel.to_vec();
    for &s in socks {
        if let Ok(fd) = table().notify_fd(s) {
            set.push(pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            });
        }
    }
    let slice = deadline.map_or(SLICE, |d| {
        SLICE.min(d.saturating_duration_since(Instant::now()))
    });
    real::ppoll(&mut set, Some(slice), sigmask)?;
    for (k, s) in kernel.iter_mut().zip(&set) {
        k.revents = s.revents;
    }
    Ok(())
}

/// Sleeps until `s` has something to read (data, end of stream, an error) or `timeout`
/// passes, without spinning: for a receive whose peer shares this core, where any spin only
/// delays the peer (see [`crate::prespin`]). The receive that follows decides what to do.
pub fn until_readable(s: Sock, timeout: Option<Duration>) -> io::Result<()> {
    let deadline = timeout.map(|t| Instant::now() + t);
    loop {
        // A look at the ring words first: after a wake-up the data is usually there, and the
        // armed look below drains the eventfd, a system call the next sleep can make instead.
        if look(s, libc::POLLIN, false) != 0 {
            return Ok(());
        }
        if look(s, libc::POLLIN, true) != 0 {
            // Looked at once more without arming, so the peer stops notifying.
            let _ = look(s, libc::POLLIN, false);
            return Ok(());
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return Ok(());
        }
        sleep(&mut [], &[s], deadline, None)?;
    }
}

/// The clock of one `poll` or `epoll_wait`: how long it has spun, when it must return, and
/// when to peek at the kernel descriptors or yield the core.
struct Waiter {
    start: Instant,
    deadline: Option<Instant>,
    spin: Duration,
    looks: u32,
}

impl Waiter {
    fn new(timeout: Option<Duration>) -> Waiter {
        let start = Instant::now();
        Waiter {
            start,
            deadline: timeout.map(|t| start + t),
            spin: config::spin(),
            looks: 0,
        }
    }

    fn expired(&self) -> bool {
        self.deadline.is_some_and(|d| Instant::now() >= d)
    }

    /// Whether this pass should peek at the kernel descriptors.
    fn peek_kernel(&mut self) -> bool {
        self.looks = self.looks.wrapping_add(1);
        self.looks % KERNEL_EVERY == 1
    }

    /// Whether to keep spinning rather than sleep. The first [`PRESPIN`] only looks (a
    /// yield costs more than a round trip); after that, until the spin ends, the core is
    /// yielded between looks, since on two cores the peer may need this one.
    fn spinning(&self) -> bool {
        if self.looks % 64 != 0 {
            std::hint::spin_loop();
            return true;
        }
        let spun = self.start.elapsed();
        if spun < self.spin {
            if spun >= PRESPIN {
                std::thread::yield_now();
            }
            return true;
        }
        false
    }
}

/// `poll`/`ppoll` over a mixed set; `None` waits for ever.
pub fn poll(
    fds: &mut [pollfd],
    timeout: Option<Duration>,
    sigmask: Option<&sigset_t>,
) -> io::Result<usize> {
    let vm: Vec<(usize, Sock)> = fds
        .iter()
        .enumerate()
        .filter_map(|(i, p)| fdmap::sock_of(p.fd).map(|s| (i, s)))
        .collect();
    if vm.is_empty() {
        return real::ppoll(fds, timeout, sigmask);
    }
    let mut kernel: Vec<(usize, pollfd)> = fds
        .iter()
        .enumerate()
        .filter(|(_, p)| fdmap::sock_of(p.fd).is_none())
        .map(|(i, p)| (i, *p))
        .collect();
    let socks: Vec<Sock> = vm.iter().map(|v| v.1).collect();
    let mut w = Waiter::new(timeout);
    let mut armed = false;
    loop {
        let mut ready = 0;
        for &(i, s) in &vm {
            fds[i].revents = look(s, fds[i].events, false);
            ready += usize::from(fds[i].revents != 0);
        }
        if !kernel.is_empty() && (ready > 0 || w.peek_kernel() || armed) {
            let mut k: Vec<pollfd> = kernel.iter().map(|k| k.1).collect();
            if !armed {
                real::ppoll(&mut k, Some(Duration::ZERO), None)?;
            }
            for ((i, kp), new) in kernel.iter_mut().zip(&k) {
                if !armed {
                    kp.revents = new.revents;
                }
                fds[*i].revents = kp.revents;
                ready += usize::from(kp.revents != 0);
            }
        } else if kernel.is_empty() {
            w.looks = w.looks.wrapping_add(1);
        }
        if ready > 0 || w.expired() {
            return Ok(ready);
        }
        armed = false;
        if w.spinning() {
            continue;
        }
        let mut any = 0;
        for &(i, s) in &vm {
            fds[i].revents = look(s, fds[i].events, true);
            any += usize::from(fds[i].revents != 0);
        }
        if any > 0 {
            return Ok(any);
        }
        let mut k: Vec<pollfd> = kernel.iter().map(|k| k.1).collect();
        sleep(&mut k, &socks, w.deadline, sigmask)?;
        for ((_, kp), new) in kernel.iter_mut().zip(&k) {
            kp.revents = new.revents;
        }
        armed = true;
    }
}

/// One VMMC socket in an epoll instance's interest list.
#[derive(Clone, Copy, Debug)]
struct Interest {
    fd: i32,
    sock: Sock,
    events: u32,
    data: u64,
    /// `EPOLLONESHOT` fired: nothing more until `EPOLL_CTL_MOD`.
    spent: bool,
    /// Readiness at the last look, for `EPOLLET`.
    last: u32,
}

static EPOLLS: Mutex<Option<HashMap<i32, Vec<Interest>>>> = Mutex::new(None);

fn with_epolls<T>(f: impl FnOnce(&mut HashMap<i32, Vec<Interest>>) -> T) -> T {
    let mut g = EPOLLS.lock().unwrap_or_else(|p| p.into_inner());
    f(g.get_or_insert_with(HashMap::new))
}

const EPOLLET: u32 = libc::EPOLLET as u32;
const EPOLLONESHOT: u32 = libc::EPOLLONESHOT as u32;
const EPOLLRDHUP: u32 = libc::EPOLLRDHUP as u32;

/// `epoll_ctl` for a VMMC socket (`fd` stands for `sock`).
pub fn epoll_ctl(
    epfd: i32,
    op: i32,
    fd: i32,
    sock: Sock,
    ev: Option<epoll_event>,
) -> io::Result<()> {
    let err = io::Error::from_raw_os_error;
    with_epolls(|m| {
        let list = m.entry(epfd).or_default();
        let at = list.iter().position(|i| i.fd == fd);
        match (op, at, ev) {
            (libc::EPOLL_CTL_ADD, Some(_), _) => return Err(err(libc::EEXIST)),
            (libc::EPOLL_CTL_ADD, None, Some(e)) => list.push(Interest {
                fd,
                sock,
                events: e.events,
                data: e.u64,
                spent: false,
                last: 0,
            }),
            (libc::EPOLL_CTL_MOD, Some(i), Some(e)) => {
                list[i] = Interest {
                    fd,
                    sock,
                    events: e.events,
                    data: e.u64,
                    spent: false,
                    last: 0,
                }
            }
            (libc::EPOLL_CTL_DEL, Some(i), _) => {
                list.remove(i);
            }
            (libc::EPOLL_CTL_MOD | libc::EPOLL_CTL_DEL, None, _) => return Err(err(libc::ENOENT)),
            (libc::EPOLL_CTL_ADD | libc::EPOLL_CTL_MOD, _, None) => return Err(err(libc::EFAULT)),
            _ => return Err(err(libc::EINVAL)),
        }
        fdmap::set_epoll(epfd, !list.is_empty());
        Ok(())
    })
}

/// Forgets a closed descriptor in every interest list (the kernel does so for its own).
pub fn forget_fd(fd: i32) {
    with_epolls(|m| {
        for list in m.values_mut() {
            list.retain(|i| i.fd != fd);
        }
    })
}

/// Forgets a closed epoll instance.
pub fn forget_epoll(epfd: i32) {
    with_epolls(|m| m.remove(&epfd));
    fdmap::set_epoll(epfd, false);
}

/// Fills `out` with the VMMC interests that are ready; returns how many.
fn epoll_look(epfd: i32, out: &mut [epoll_event], arm: bool) -> (usize, Vec<Sock>) {
    with_epolls(|m| {
        let Some(list) = m.get_mut(&epfd) else {
            return (0, Vec::new());
        };
        let mut n = 0;
        let mut socks = Vec::new();
        for it in list.iter_mut() {
            if it.spent {
                continue;
            }
            let want = (it.events & 0xffff) as i16;
            let r = look(it.sock, want, arm);
            let mut bits = r as u16 as u32;
            if r & POLLHUP != 0 && it.events & EPOLLRDHUP != 0 {
                bits |= EPOLLRDHUP;
            }
            if r & POLLNVAL != 0 {
                bits = POLLERR as u32 | POLLHUP as u32;
            }
            let report = if it.events & EPOLLET != 0 {
                bits & !it.last
            } else {
                bits
            };
            it.last = bits;
            socks.push(it.sock);
            if report != 0 && n < out.len() {
                out[n] = epoll_event {
                    events: report,
                    u64: it.data,
                };
                n += 1;
                if it.events & EPOLLONESHOT != 0 {
                    it.spent = true;
                }
            }
        }
        (n, socks)
    })
}

/// `epoll_wait`/`epoll_pwait` on an instance with VMMC interests.
pub fn epoll_wait(
    epfd: i32,
    out: &mut [epoll_event],
    timeout: Option<Duration>,
    sigmask: Option<&sigset_t>,
) -> io::Result<usize> {
    if out.is_empty() {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    let mut w = Waiter::new(timeout);
    let mut woke = false;
    loop {
        let (mut n, socks) = epoll_look(epfd, out, false);
        if n < out.len() && (n > 0 || woke || w.peek_kernel()) {
            n += real::epoll_peek(epfd, &mut out[n..])?;
        }
        if n > 0 || w.expired() {
            return Ok(n);
        }
        woke = false;
        if w.spinning() {
            continue;
        }
        let (n, _) = epoll_look(epfd, out, true);
        if n > 0 {
            return Ok(n);
        }
        let mut k = [pollfd {
            fd: epfd,
            events: libc::POLLIN,
            revents: 0,
        }];
        sleep(&mut k, &socks, w.deadline, sigmask)?;
        woke = true;
    }
}
