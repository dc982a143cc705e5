//! Loopback ports for programs that bind one themselves (a Windows program under Wine, a
//! program under the socket preload), which a test cannot hand a bound socket.
//!
//! Asking the kernel for port 0 and closing it is not enough: the kernel may hand the same
//! number to the next caller, another test of the same binary running at once, and two
//! programs then race for it. These numbers are handed out once per process, from a range
//! below the kernel's ephemeral ports that starts at a place of the process's own, and each
//! is checked free when handed out.

use std::net::TcpListener;
use std::sync::atomic::{AtomicU32, Ordering};

/// Below Linux's default ephemeral range (32768–60999), so that no connection's own port
/// takes one of these meanwhile.
const FIRST: u32 = 10_000;
const SPAN: u32 = 22_000;

static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);

/// A loopback port that no other caller in this process gets, free when returned.
pub fn unused_port() -> u16 {
    // Processes start 1,000 apart (by pid), so that test binaries running one after
    // another, or side by side, rarely meet.
    let _ = NEXT.compare_exchange(
        u32::MAX,
        (std::process::id() % 22) * 1_000,
        Ordering::AcqRel,
        Ordering::Acquire,
    );
    loop {
        let n = NEXT.fetch_add(1, Ordering::AcqRel);
        let port = (FIRST + n % SPAN) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}
