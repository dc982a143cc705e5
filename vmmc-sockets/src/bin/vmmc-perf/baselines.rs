//! The physical baselines that vmmc-perf holds the VMMC socket layer against.
//!
//! A figure for the socket layer means little on its own: on a shared 2-core machine absolute
//! numbers wander from run to run, while the ratio to what this same machine can do at that
//! moment holds. These functions measure that "what it can do": a plain `memcpy` (the floor of
//! any one-copy transport), two threads handing a word back and forth through a shared mapping
//! (the floor of any shared-memory transport's latency), and the kernel's own TCP loopback and
//! Unix-domain stream sockets (what an application gets without VMMC). The stream helpers are
//! generic over `Read + Write`, so the socket layer's copy API is timed by exactly the same code.
//!
//! Each function is one measurement; the caller interleaves targets over rounds and takes
//! medians, so nothing here repeats itself.

use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

/// The memcpy destination of the streaming ceiling, as large as the region vmmc-nic's own
/// bandwidth baseline writes into and twice this machine's 32 MiB L3, so that copies stream
/// through memory rather than stay in cache.
pub const MEMCPY_DRAM_REGION: usize = 64 << 20;

/// How long a whole shared-memory ping-pong may spin: with 2 cores a starved partner must turn
/// into an error rather than a benchmark that never ends.
const SPIN_LIMIT: Duration = Duration::from_secs(10);

/// Spins between two looks at the clock (and yields of the core) in a spinning wait. Far more
/// than a round trip takes when both threads run, so it only ever fires when the partner is
/// descheduled, and then giving up the core is what lets it run.
const SPINS_PER_CHECK: u32 = 1024;

/// The value a ping-pong side stores in its word when it leaves, on any path, so that the other
/// side stops waiting at once instead of at the deadline. Round numbers never reach it.
const STOP: u64 = u64::MAX;

/// Index of the pong word in the shared page: 128 bytes after the ping word, so the two never
/// share a cache line (nor an adjacent-line prefetch pair).
const PONG_WORD: usize = 16;

/// How long one socket read or write may block: a peer that stopped answering must turn into an
/// error rather than a hang.
pub const IO_TIMEOUT: Duration = Duration::from_secs(30);

/// Bytes streamed, untimed and acknowledged, before a bandwidth measurement's clock starts: one
/// default vmmc ring (4 MiB), so that a fresh ring's page faults and a fresh socket's buffer
/// growth stay out of every figure alike.
pub const BW_WARMUP: usize = 4 << 20;

/// Round-trip latency statistics in nanoseconds.
///
/// Medians and tails rather than means, because on a shared 2-core machine a few scheduler
/// hiccups dominate a mean, and the tail is what an interactive file-system client feels.
#[derive(Clone, Copy, Debug)]
pub struct Latency {
    /// The typical round trip, robust against the machine's noise.
    pub median_ns: f64,
    /// The 99th percentile (nearest rank), showing how badly the noise can bite.
    pub p99_ns: f64,
}

/// Computes median and p99 from raw per-round-trip samples (ns). Sorts in place.
///
/// Shared by every latency measurement so that all targets are summarised identically. The
/// median of an even count is the mean of the two middle samples; p99 is the sample of rank
/// ⌈0.99·n⌉ (nearest rank), so it is always a value that was actually observed. With no samples
/// both are NaN, which no comparison can mistake for a measurement.
pub fn latency_from_samples(samples: &mut [f64]) -> Latency {
    samples.sort_unstable_by(f64::total_cmp);
    let n = samples.len();
    if n == 0 {
        return Latency {
            median_ns: f64::NAN,
            p99_ns: f64::NAN,
        };
    }
    let median_ns = if n % 2 == 1 {
        samples[n / 2]
    } else {
        f64::midpoint(samples[n / 2 - 1], samples[n / 2])
    };
    // n >= 1, so the rank is at least 1.
    let p99_ns = samples[(n * 99).div_ceil(100) - 1];
    Latency { median_ns, p99_ns }
}

/// Bandwidth of memcpy of `msg`-byte messages, copying `total` bytes in all into a buffer of
/// `region` bytes (or `msg` if larger) round-robin; bytes per second.
///
/// This is the ceiling of any transport that makes exactly one software copy, as VMMC's shm
/// deposit does, so the socket layer's bandwidth is read as a fraction of it. The destination
/// size decides what is measured: one the size of a socket ring (4 MiB) stays in this
/// machine's L3 as the ring does, and is the ceiling of a one-copy transport through that
/// ring; one of [`MEMCPY_DRAM_REGION`] streams through memory. The destination is written
/// before the clock starts so that page faults stay out of the figure. A last message shorter
/// than `msg` makes up any remainder of `total`.
///
/// # Errors
///
/// `InvalidInput` when `msg` or `total` is 0; `OutOfMemory` when the buffers cannot be had.
pub fn memcpy_bw(msg: usize, total: usize, region: usize) -> io::Result<f64> {
    check_sizes(msg, total)?;
    let src = filled(msg, 0xA5)?;
    let mut dst = filled(msg.max(region), 0x5A)?;
    let start = Instant::now();
    let (mut at, mut left) = (0, total);
    while left > 0 {
        let n = left.min(msg);
        if at + n > dst.len() {
            at = 0;
        }
        dst[at..at + n].copy_from_slice(std::hint::black_box(&src[..n]));
        std::hint::black_box(&mut dst[at..at + n]);
        at += n;
        left -= n;
    }
    Ok(per_second(total, start.elapsed()))
}

/// 1-byte ping-pong between two threads spinning on atomics in a shared mapping (an anonymous
/// `MAP_SHARED` mmap), `iters` round trips after a warm-up of `iters / 10`; the physical floor
/// of any shared-memory transport on this machine.
///
/// Nothing that signals through shared memory can beat two cores handing a cache line back and
/// forth, so this is what the socket layer's shm latency is compared with. Each side owns its
/// own word on its own cache line, as a real transport's producer and consumer would. The
/// whole measurement must finish within 10 s, or it fails with `TimedOut`: on 2 cores a
/// partner thread can be starved, and a benchmark must not spin forever.
///
/// # Errors
///
/// `InvalidInput` when `iters` is 0; `TimedOut` past the 10 s; the OS's error when the page
/// cannot be mapped; an error when the echo thread fails or panics.
pub fn shm_pingpong_rtt(iters: usize) -> io::Result<Latency> {
    check_iters(iters)?;
    let page = SharedPage::new()?;
    let (ping, pong) = (page.word(0), page.word(PONG_WORD));
    let deadline = Instant::now() + SPIN_LIMIT;
    let warmup = iters / 10;
    let mut samples = thread::scope(|s| {
        let echo = s.spawn(move || {
            let _leaving = StoreOnDrop(pong, STOP);
            let mut last = 0;
            loop {
                let seq = spin_until(ping, deadline, |v| v != last)?;
                if seq == STOP {
                    return Ok(());
                }
                pong.store(seq, Ordering::Release);
                last = seq;
            }
        });
        let pinged = (|| {
            let _leaving = StoreOnDrop(ping, STOP);
            let mut samples = Vec::with_capacity(iters);
            for seq in 1..=(warmup + iters) as u64 {
                let start = Instant::now();
                ping.store(seq, Ordering::Release);
                let got = spin_until(pong, deadline, |v| v == seq || v == STOP)?;
                let ns = start.elapsed().as_nanos() as f64;
                if got == STOP {
                    return Err(io::Error::other("the echo thread left the ping-pong early"));
                }
                if seq > warmup as u64 {
                    samples.push(ns);
                }
            }
            Ok(samples)
        })();
        joined(pinged, echo.join(), "shm echo")
    })?;
    Ok(latency_from_samples(&mut samples))
}

/// Kernel TCP over 127.0.0.1 with `TCP_NODELAY`: 1-byte ping-pong, echo served by a thread.
///
/// This is what an application gets between two processes of one host without VMMC, and the
/// latency figure the socket layer has to beat. Like the shm ping-pong, `iters` timed round
/// trips follow a warm-up of `iters / 10`.
///
/// # Errors
///
/// `InvalidInput` when `iters` is 0; any socket error of either side (a read or write that
/// blocks for 30 s fails with it), or a panic of the echo thread.
pub fn tcp_rtt(iters: usize) -> io::Result<Latency> {
    check_iters(iters)?;
    let (near, far) = tcp_pair()?;
    stream_rtt(near, far, iters)
}

/// Kernel TCP over 127.0.0.1 as [`tcp_rtt`], but both sides busy-poll: the sockets are
/// non-blocking and a read or write that would block is retried at once instead of sleeping.
///
/// Blocking kernel sockets pay for waking a sleeping thread on every message, and in this VM
/// waking an idle vCPU is slow; the socket layer instead spins for a while before it sleeps. This
/// baseline spends CPU the same way, so the comparison is honest in both directions: it shows
/// what the kernel path itself costs once nobody sleeps.
///
/// # Errors
///
/// As for [`tcp_rtt`]; a read or write that cannot complete within 30 s fails with `TimedOut`.
pub fn tcp_busy_rtt(iters: usize) -> io::Result<Latency> {
    check_iters(iters)?;
    let (near, far) = tcp_pair()?;
    near.set_nonblocking(true)?;
    far.set_nonblocking(true)?;
    stream_rtt(BusyPoll(near), BusyPoll(far), iters)
}

/// A non-blocking stream whose reads and writes spin until they can make progress, so that
/// [`stream_rtt`] can time a busy-polling peer with the same code as a blocking one.
#[derive(Debug)]
struct BusyPoll<S>(S);

impl<S> BusyPoll<S> {
    /// Retries `op` while it would block, for at most [`IO_TIMEOUT`].
    fn spin<T>(&mut self, mut op: impl FnMut(&mut S) -> io::Result<T>) -> io::Result<T> {
        let deadline = Instant::now() + IO_TIMEOUT;
        loop {
            match op(&mut self.0) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if Instant::now() >= deadline {
                        return Err(io::Error::new(
                            io::ErrorKind::TimedOut,
                            format!("a busy-polled socket made no progress in {IO_TIMEOUT:?}"),
                        ));
                    }
                    std::hint::spin_loop();
                }
                r => return r,
            }
        }
    }
}

impl<S: Read> Read for BusyPoll<S> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.spin(|s| s.read(buf))
    }
}

impl<S: Write> Write for BusyPoll<S> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.spin(|s| s.write(buf))
    }

    fn flush(&mut self) -> io::Result<()> {
        self.spin(|s| s.flush())
    }
}

/// Kernel TCP over 127.0.0.1 streaming `msg`-byte writes (`write_all`) to a reader thread that
/// reads into a buffer of `msg` bytes, until `total` bytes arrived and it acknowledged with one
/// byte; bytes per second, timed from the first write to the ack, after an untimed warm-up of
/// [`BW_WARMUP`] bytes.
///
/// The kernel's two copies (into and out of the socket buffer) are exactly what VMMC removes,
/// so this is the bandwidth the socket layer must clearly exceed. Timing up to the ack means
/// the figure counts bytes received, not bytes merely handed to the kernel. Both ends have
/// `TCP_NODELAY`, as the socket layer's own TCP connections will.
///
/// # Errors
///
/// `InvalidInput` when `msg` or `total` is 0; `OutOfMemory` when the buffers cannot be had; any
/// socket error of either side (a read or write that blocks for 30 s fails with it), or a panic
/// of the reader thread.
pub fn tcp_bw(msg: usize, total: usize) -> io::Result<f64> {
    check_sizes(msg, total)?;
    let (near, far) = tcp_pair()?;
    stream_bw(near, far, msg, total, BW_WARMUP)
}

/// Same round-trip measurement as [`tcp_rtt`] over a Unix-domain stream socket pair.
///
/// Unix-domain sockets are the fastest kernel path between two local processes, so they, not
/// TCP, are the fair rival of the socket layer's shm backend.
///
/// # Errors
///
/// As for [`tcp_rtt`].
pub fn unix_rtt(iters: usize) -> io::Result<Latency> {
    check_iters(iters)?;
    let (near, far) = unix_pair()?;
    stream_rtt(near, far, iters)
}

/// Same bandwidth measurement as [`tcp_bw`] over a Unix-domain stream socket pair.
///
/// It still costs the kernel's two copies but none of TCP's protocol work, so it is the
/// strongest kernel baseline for bulk transfer between local processes.
///
/// # Errors
///
/// As for [`tcp_bw`].
pub fn unix_bw(msg: usize, total: usize) -> io::Result<f64> {
    check_sizes(msg, total)?;
    let (near, far) = unix_pair()?;
    stream_bw(near, far, msg, total, BW_WARMUP)
}

/// A connected loopback TCP pair with Nagle off and bounded blocking, so that 1-byte messages
/// leave at once and a dead peer cannot hang the benchmark.
fn tcp_pair() -> io::Result<(TcpStream, TcpStream)> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    let near = TcpStream::connect(listener.local_addr()?)?;
    let (far, _) = listener.accept()?;
    for s in [&near, &far] {
        s.set_nodelay(true)?;
        s.set_read_timeout(Some(IO_TIMEOUT))?;
        s.set_write_timeout(Some(IO_TIMEOUT))?;
    }
    Ok((near, far))
}

/// A connected Unix-domain stream pair with bounded blocking, so that a dead peer cannot hang
/// the benchmark.
fn unix_pair() -> io::Result<(UnixStream, UnixStream)> {
    let (near, far) = UnixStream::pair()?;
    for s in [&near, &far] {
        s.set_read_timeout(Some(IO_TIMEOUT))?;
        s.set_write_timeout(Some(IO_TIMEOUT))?;
    }
    Ok((near, far))
}

/// The ping-pong shared by every stream kind (TCP, Unix, the socket layer's copy API), so that
/// all are timed identically: `iters` timed 1-byte round trips after `iters / 10` untimed ones,
/// the echo served by a thread. `near` is dropped before the echo thread is joined: its
/// end-of-stream is what stops the echo.
///
/// # Errors
///
/// Any error of either side, a wrong echo, or a panic of the echo thread.
pub fn stream_rtt<S: Read + Write + Send>(near: S, far: S, iters: usize) -> io::Result<Latency> {
    let warmup = iters / 10;
    let mut samples = thread::scope(|s| {
        let echo = s.spawn(move || echo_bytes(far));
        let pinged = (move || {
            let mut near = near;
            let mut samples = Vec::with_capacity(iters);
            let mut byte = [0u8; 1];
            for i in 0..warmup + iters {
                let sent = [i as u8];
                let start = Instant::now();
                near.write_all(&sent)?;
                near.read_exact(&mut byte)?;
                let ns = start.elapsed().as_nanos() as f64;
                if byte != sent {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "the echo thread answered with the wrong byte",
                    ));
                }
                if i >= warmup {
                    samples.push(ns);
                }
            }
            Ok(samples)
        })();
        joined(pinged, echo.join(), "echo")
    })?;
    Ok(latency_from_samples(&mut samples))
}

/// Echoes single bytes until end of stream: the passive half of [`stream_rtt`].
fn echo_bytes<S: Read + Write>(mut far: S) -> io::Result<()> {
    let mut byte = [0u8; 1];
    loop {
        match far.read(&mut byte) {
            Ok(0) => return Ok(()),
            Ok(_) => far.write_all(&byte)?,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// The streaming measurement shared by every stream kind (TCP, Unix, the socket layer's copy
/// API), so that all are timed identically: `warmup` bytes untimed and acknowledged, then `total`
/// bytes in `msg`-byte `write_all`s, timed from the first write to the reader's ack; bytes per
/// second. `near` is dropped before the reader is joined, so a failed writer turns into the
/// reader's end-of-stream rather than a reader blocked forever.
///
/// # Errors
///
/// `InvalidInput` when `msg` or `total` is 0; `OutOfMemory` when the buffers cannot be had; any
/// error of either side, or a panic of the reader thread.
pub fn stream_bw<S: Read + Write + Send>(
    near: S,
    far: S,
    msg: usize,
    total: usize,
    warmup: usize,
) -> io::Result<f64> {
    check_sizes(msg, total)?;
    let payload = filled(msg, 0xA5)?;
    // Allocated and written before the clock starts, so that page faults stay out of the figure.
    let buf = filled(msg, 0x5A)?;
    let elapsed = thread::scope(|s| {
        let reader = s.spawn(move || drain(far, buf, &[warmup, total]));
        let sent = (move || {
            let mut near = near;
            let mut ack = [0u8; 1];
            write_in_messages(&mut near, &payload, warmup)?;
            near.read_exact(&mut ack)?;
            let start = Instant::now();
            write_in_messages(&mut near, &payload, total)?;
            near.read_exact(&mut ack)?;
            Ok(start.elapsed())
        })();
        joined(sent, reader.join(), "reader")
    })?;
    Ok(per_second(total, elapsed))
}

/// Writes `total` bytes as `write_all`s of `payload.len()` bytes (the last one shorter when
/// `total` is not a multiple): the sending half of [`stream_bw`].
fn write_in_messages<S: Write>(near: &mut S, payload: &[u8], total: usize) -> io::Result<()> {
    let mut left = total;
    while left > 0 {
        let n = left.min(payload.len());
        near.write_all(&payload[..n])?;
        left -= n;
    }
    Ok(())
}

/// For each phase, reads that many bytes into `buf` over and over, then acknowledges with one
/// byte: the passive half of [`stream_bw`], whose acks are what stop the sender's clock.
fn drain<S: Read + Write>(mut far: S, mut buf: PageBuf, phases: &[usize]) -> io::Result<()> {
    for &want in phases {
        let mut got = 0;
        while got < want {
            let room = buf.len().min(want - got);
            match far.read(&mut buf[..room]) {
                Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        far.write_all(b"k")?;
    }
    Ok(())
}

/// Merges the timed side's outcome with its helper thread's, so that the helper's failure
/// (often the cause of the timed side's) is never lost, and a panic becomes an error.
pub fn joined<T>(
    main: io::Result<T>,
    helper: thread::Result<io::Result<()>>,
    what: &str,
) -> io::Result<T> {
    let helper =
        helper.unwrap_or_else(|_| Err(io::Error::other(format!("{what} thread panicked"))));
    match (main, helper) {
        (Ok(v), Ok(())) => Ok(v),
        (Ok(_), Err(e)) | (Err(e), Ok(())) => Err(e),
        (Err(e), Err(h)) => Err(io::Error::new(
            e.kind(),
            format!("{e} ({what} thread: {h})"),
        )),
    }
}

/// Spins until `word` holds a value that `ready` accepts and returns it, or fails once
/// `deadline` passes. The clock is read only every [`SPINS_PER_CHECK`] spins, so that a round
/// trip between two running threads costs no more than the cache-line transfers themselves.
fn spin_until(word: &AtomicU64, deadline: Instant, ready: impl Fn(u64) -> bool) -> io::Result<u64> {
    let mut budget = SPINS_PER_CHECK;
    loop {
        let v = word.load(Ordering::Acquire);
        if ready(v) {
            return Ok(v);
        }
        budget -= 1;
        if budget == 0 {
            if Instant::now() >= deadline {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("the shm ping-pong did not finish within {SPIN_LIMIT:?}"),
                ));
            }
            thread::yield_now();
            budget = SPINS_PER_CHECK;
        } else {
            std::hint::spin_loop();
        }
    }
}

/// Stores a value into a ping-pong word when dropped, so that the other side learns this one
/// left even when it left through an error or a panic.
struct StoreOnDrop<'a>(&'a AtomicU64, u64);

impl Drop for StoreOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(self.1, Ordering::Release);
    }
}

/// One page of anonymous shared memory that unmaps itself, so that no error path leaks it. A
/// `MAP_SHARED` mapping rather than a heap word, because that is the memory a shared-memory
/// transport really signals through.
#[derive(Debug)]
struct SharedPage {
    ptr: NonNull<libc::c_void>,
    len: usize,
}

impl SharedPage {
    fn new() -> io::Result<Self> {
        let len = 4096;
        // SAFETY: a fresh mapping chosen by the kernel overlaps no memory Rust knows about; the
        // result is checked before use.
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
            return Err(io::Error::last_os_error());
        }
        let ptr = NonNull::new(p).ok_or_else(|| io::Error::other("mmap returned null"))?;
        Ok(Self { ptr, len })
    }

    /// The `index`th 8-byte word of the page, as an atomic borrowed from the page.
    fn word(&self, index: usize) -> &AtomicU64 {
        assert!(
            index < self.len / 8,
            "word {index} is outside the shared page"
        );
        // SAFETY: the word lies inside the mapping (checked above), is 8-byte aligned (the
        // mapping is page-aligned), and stays mapped for as long as `&self` lives. The mapping
        // is zero-filled, a valid u64, and is only ever accessed through atomics.
        unsafe { AtomicU64::from_ptr(self.ptr.as_ptr().cast::<u64>().add(index)) }
    }
}

impl Drop for SharedPage {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` are exactly what mmap returned, and every reference into the
        // mapping borrows `self`, so none outlives it.
        unsafe {
            libc::munmap(self.ptr.as_ptr(), self.len);
        }
    }
}

/// The page size buffers are aligned to.
const PAGE: usize = 4096;

/// A heap buffer that starts on a page boundary.
///
/// Where a buffer starts matters here: with this machine's glibc (2.36) on AMD EPYC, `memcpy`
/// of 4 KiB to 64 KiB (the `rep movsb` path) runs at about 2.5 GB/s instead of 30-40 GB/s when
/// the destination lies just above the source modulo 4096 (4K aliasing), so a figure would
/// depend on where malloc happened to put a buffer. Every buffer of the benchmark starts on a
/// page, as the socket layer's ring slots and a file server's page-cache pages do, which makes
/// every copy page-to-page, measured alike.
#[derive(Debug)]
pub struct PageBuf {
    /// The allocation, one page longer than needed.
    storage: Vec<u8>,
    /// Offset of the first page boundary in `storage`.
    start: usize,
    /// Usable length.
    len: usize,
}

impl std::ops::Deref for PageBuf {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.storage[self.start..self.start + self.len]
    }
}

impl std::ops::DerefMut for PageBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        &mut self.storage[self.start..self.start + self.len]
    }
}

/// A page-aligned buffer of `len` copies of `byte`, written now so that its pages are faulted
/// in before any clock starts, and whose allocation failure is an error rather than an abort.
pub fn filled(len: usize, byte: u8) -> io::Result<PageBuf> {
    let oom = |e| io::Error::new(io::ErrorKind::OutOfMemory, e);
    let mut storage = Vec::new();
    storage.try_reserve_exact(len + PAGE).map_err(oom)?;
    storage.resize(len + PAGE, byte);
    let start = (PAGE - storage.as_ptr() as usize % PAGE) % PAGE;
    Ok(PageBuf {
        storage,
        start,
        len,
    })
}

/// Rejects empty bandwidth measurements, whose rate would be 0/0.
pub fn check_sizes(msg: usize, total: usize) -> io::Result<()> {
    if msg == 0 || total == 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("a bandwidth needs bytes to move (msg {msg}, total {total})"),
        ));
    }
    Ok(())
}

/// Rejects latency measurements without round trips, which would have no median.
fn check_iters(iters: usize) -> io::Result<()> {
    if iters == 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "a latency needs at least one round trip",
        ));
    }
    Ok(())
}

/// Bytes per second, never infinite even for an interval too short for the clock.
pub fn per_second(bytes: usize, elapsed: Duration) -> f64 {
    bytes as f64 / elapsed.as_secs_f64().max(1e-9)
}

/// The machine has 2 cores: measurements running side by side would starve each other's
/// threads, so the tests of this binary (here and in `main.rs`) take turns on this lock.
#[cfg(test)]
pub static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::PoisonError;

    fn check_latency(l: Latency) {
        assert!(l.median_ns.is_finite() && l.median_ns > 0.0, "{l:?}");
        assert!(l.p99_ns.is_finite() && l.p99_ns >= l.median_ns, "{l:?}");
    }

    fn check_rate(r: f64) {
        assert!(r.is_finite() && r > 0.0, "{r}");
    }

    #[test]
    fn latency_of_known_vectors() {
        let mut v: Vec<f64> = (1..=100).rev().map(f64::from).collect();
        let l = latency_from_samples(&mut v);
        assert_eq!((l.median_ns, l.p99_ns), (50.5, 99.0));
        assert_eq!(v[0], 1.0, "sorted in place");

        let mut v: Vec<f64> = (1..=1000)
            .map(|i| f64::from((i * 7919) % 1000 + 1))
            .collect();
        let l = latency_from_samples(&mut v);
        assert_eq!((l.median_ns, l.p99_ns), (500.5, 990.0));

        let l = latency_from_samples(&mut [30.0, 10.0, 20.0]);
        assert_eq!((l.median_ns, l.p99_ns), (20.0, 30.0));

        let l = latency_from_samples(&mut [7.0]);
        assert_eq!((l.median_ns, l.p99_ns), (7.0, 7.0));

        let l = latency_from_samples(&mut []);
        assert!(l.median_ns.is_nan() && l.p99_ns.is_nan());
    }

    #[test]
    fn buffers_start_on_a_page() -> io::Result<()> {
        for len in [0, 1, 4096, 65_537] {
            let mut b = filled(len, 7)?;
            assert_eq!((b.len(), b.as_ptr() as usize % PAGE), (len, 0));
            assert!(b.iter().all(|&x| x == 7));
            b.fill(1);
        }
        Ok(())
    }

    #[test]
    fn memcpy_bandwidth() -> io::Result<()> {
        let _turn = SERIAL.lock().unwrap_or_else(PoisonError::into_inner);
        check_rate(memcpy_bw(4096, 1 << 20, 4 << 20)?);
        // A remainder shorter than a message, and messages that do not divide the region.
        check_rate(memcpy_bw(1000, 10_007, MEMCPY_DRAM_REGION)?);
        check_rate(memcpy_bw(3 << 20, 200 << 20, MEMCPY_DRAM_REGION)?);
        // A region smaller than a message.
        check_rate(memcpy_bw(8192, 100_000, 4096)?);
        Ok(())
    }

    #[test]
    fn shm_latency() -> io::Result<()> {
        let _turn = SERIAL.lock().unwrap_or_else(PoisonError::into_inner);
        check_latency(shm_pingpong_rtt(2000)?);
        check_latency(shm_pingpong_rtt(1)?);
        Ok(())
    }

    #[test]
    fn socket_latency() -> io::Result<()> {
        let _turn = SERIAL.lock().unwrap_or_else(PoisonError::into_inner);
        check_latency(tcp_rtt(300)?);
        check_latency(tcp_busy_rtt(300)?);
        check_latency(unix_rtt(300)?);
        Ok(())
    }

    #[test]
    fn socket_bandwidth() -> io::Result<()> {
        let _turn = SERIAL.lock().unwrap_or_else(PoisonError::into_inner);
        check_rate(tcp_bw(64 << 10, 4 << 20)?);
        check_rate(unix_bw(64 << 10, 4 << 20)?);
        // A remainder shorter than a message.
        check_rate(tcp_bw(4096, (1 << 20) + 7)?);
        check_rate(unix_bw(4096, (1 << 20) + 7)?);
        Ok(())
    }

    #[test]
    fn a_starved_spin_gives_up() {
        let word = AtomicU64::new(0);
        let r = spin_until(&word, Instant::now(), |v| v == 1);
        assert!(matches!(r, Err(e) if e.kind() == io::ErrorKind::TimedOut));
        word.store(1, Ordering::Release);
        assert!(matches!(
            spin_until(&word, Instant::now(), |v| v == 1),
            Ok(1)
        ));
    }

    #[test]
    fn helper_failures_are_not_lost() {
        let failed = || Err(io::Error::other("helper failed"));
        let panicked = thread::spawn(|| -> io::Result<()> { panic!("boom") }).join();
        assert!(joined(Ok(1), Ok(Ok(())), "t").is_ok());
        let e = joined(Ok(1), Ok(failed()), "t")
            .err()
            .map(|e| e.to_string());
        assert_eq!(e.as_deref(), Some("helper failed"));
        let e = joined(Ok(1), panicked, "t").err().map(|e| e.to_string());
        assert_eq!(e.as_deref(), Some("t thread panicked"));
        let both = joined::<()>(Err(io::ErrorKind::UnexpectedEof.into()), Ok(failed()), "t");
        let e = both
            .err()
            .map(|e| (e.kind(), e.to_string().contains("helper failed")));
        assert_eq!(e, Some((io::ErrorKind::UnexpectedEof, true)));
    }

    #[test]
    fn empty_measurements_are_refused() {
        let refused =
            |r: io::Result<f64>| matches!(r, Err(e) if e.kind() == io::ErrorKind::InvalidInput);
        assert!(refused(memcpy_bw(0, 10, 4096)));
        assert!(refused(memcpy_bw(10, 0, 4096)));
        assert!(refused(tcp_bw(0, 10)));
        assert!(refused(unix_bw(10, 0)));
        for rtt in [shm_pingpong_rtt, tcp_rtt, tcp_busy_rtt, unix_rtt] {
            assert!(matches!(rtt(0), Err(e) if e.kind() == io::ErrorKind::InvalidInput));
        }
    }
}
