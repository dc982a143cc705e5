//! A peer that raises notifications without pause cannot keep a stream's calls from
//! returning.
//!
//! On shm the importer of a ring holds a copy of its exporter's eventfd (it comes with the
//! grant); on tcp every deposit that asks for a notification makes the exporter signal it.
//! The peer here, a real process that did the connect handshake by hand, imports the
//! victim's ring and then, from several threads, does nothing but notify. The victim's
//! blocking calls (reads with nothing to read, writes into a ring the peer never drains,
//! reservations) must still return, with data or a timeout, within their timeouts plus a
//! margin, and another thread's quick calls on the same stream must not starve behind them.

use std::io::{ErrorKind, Read, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use test_support::{say, Backend, Peer};
use vmmc_nic::{
    Access, Endpoint, ExportId, Import, ImportKey, ImportOptions, NodeAddr, Notify, Permissions,
};
use vmmc_sockets::VmmcListener;

const ENTRY: &str = "child_process";
const HEADER: u64 = 4096;
const ACCEPT_STATE: u64 = 64;
const ACCEPT_EXPORT: u64 = 72;
const ACCEPT_KEY: u64 = 88;
const RING: u64 = 64 * 1024;
/// The victim's timeouts, and what a call may take beyond them.
const TIMEOUT: Duration = Duration::from_millis(200);
const MARGIN: Duration = Duration::from_secs(1);
/// How long the victim keeps calling while the peer spams.
const SPAM: Duration = Duration::from_secs(3);
/// Threads in the peer that notify.
const SPAMMERS: usize = 3;

fn request(endpoint: &NodeAddr, ring_export: ExportId, ring: u64) -> Vec<u8> {
    let (port, name) = match endpoint {
        NodeAddr::Shm(n) => (0u16, n.as_str().as_bytes().to_vec()),
        NodeAddr::Tcp(t) => (t.port(), Vec::new()),
    };
    let mut b = b"VSK1".to_vec();
    b.extend_from_slice(&2u16.to_le_bytes());
    b.extend_from_slice(&0u16.to_le_bytes());
    b.extend_from_slice(&ring_export.get().to_le_bytes());
    b.extend_from_slice(&ring.to_le_bytes());
    b.extend_from_slice(&port.to_le_bytes());
    b.extend_from_slice(&(name.len() as u16).to_le_bytes());
    b.extend_from_slice(&[0x5a; 32]);
    b.extend_from_slice(&name);
    b
}

/// The child: connects to `listener` by hand, imports the victim's ring, says `SPAMMING`,
/// and notifies from [`SPAMMERS`] threads until told `rate` (it answers with notifications
/// per second) or killed.
fn run_child(role: &[String]) {
    let [what, backend, listener] = role else {
        panic!("bad role {role:?}")
    };
    assert_eq!(what, "spam");
    let b = if backend == "tcp" {
        Backend::Tcp
    } else {
        Backend::Shm
    };
    let listener: NodeAddr = listener.parse().unwrap();
    let ep = Endpoint::bind(&b.fresh_addr().parse().unwrap()).unwrap();
    let ring = ep
        .export_mirrored(HEADER + RING, RING, Permissions::open())
        .unwrap();
    let opts = ImportOptions {
        greeting: request(ep.addr(), ring.id(), RING),
        ..Default::default()
    };
    let _knock =
        Import::open_with(&listener, ExportId::new(1).unwrap(), Access::FETCH, &opts).unwrap();
    let t0 = Instant::now();
    while ring.load_u64(ACCEPT_STATE).unwrap() != 1 {
        assert!(t0.elapsed() < Duration::from_secs(10), "never accepted");
        let _ = ring.wait(Duration::from_millis(20));
    }
    let id = ExportId::new(ring.load_u64(ACCEPT_EXPORT).unwrap() as u32).unwrap();
    let mut key = [0u8; 32];
    for (i, w) in key.chunks_exact_mut(8).enumerate() {
        let v = ring.load_u64(ACCEPT_KEY + 8 * i as u64).unwrap();
        w.copy_from_slice(&v.to_le_bytes());
    }
    let opts = ImportOptions {
        key: Some(ImportKey::from_bytes(key)),
        ..Default::default()
    };
    let victim = Arc::new(Import::open_with(&listener, id, Access::DEPOSIT, &opts).unwrap());
    let count = Arc::new(AtomicU64::new(0));
    for _ in 0..SPAMMERS {
        let (victim, count) = (victim.clone(), count.clone());
        std::thread::spawn(move || loop {
            // An empty deposit that asks for a notification: on shm, one write(2) to the
            // victim's eventfd.
            if victim.write_at(0, &[], Notify::Yes).is_err() {
                return;
            }
            count.fetch_add(1, Ordering::Relaxed);
        });
    }
    say("SPAMMING");
    let started = Instant::now();
    for line in test_support::commands() {
        if line == "rate" {
            let per_s = count.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64();
            say(format!("{per_s:.0}"));
        }
    }
}

test_support::child_entry!(run_child);

/// Runs `f` repeatedly until `until`, timing each call; the slowest call.
fn slowest(until: Instant, mut f: impl FnMut() -> std::io::Result<()>) -> (Duration, u64) {
    let mut worst = Duration::ZERO;
    let mut calls = 0;
    while Instant::now() < until {
        let t0 = Instant::now();
        let r = f();
        worst = worst.max(t0.elapsed());
        calls += 1;
        if let Err(e) = r {
            if !matches!(e.kind(), ErrorKind::TimedOut | ErrorKind::WouldBlock) {
                panic!("a call failed under the spam: {e}");
            }
        }
    }
    (worst, calls)
}

fn spammed_stream_still_returns(b: Backend) {
    let l = VmmcListener::bind(&b.fresh_addr()).unwrap();
    let word = match b {
        Backend::Shm => "shm",
        Backend::Tcp => "tcp",
    };
    let (mut peer, ready) = Peer::spawn(ENTRY, &["spam", word, &l.local_addr().to_string()]);
    assert_eq!(ready, "SPAMMING");
    let (s, _) = l.accept().unwrap();
    s.set_read_timeout(Some(TIMEOUT)).unwrap();
    s.set_write_timeout(Some(TIMEOUT)).unwrap();
    let until = Instant::now() + SPAM;
    let done = AtomicBool::new(false);
    let (reader, writer, looker) = std::thread::scope(|sc| {
        // Reads: nothing ever arrives.
        let reader = sc.spawn(|| {
            let mut buf = [0u8; 4096];
            slowest(until, || {
                match (&s).read(&mut buf) {
                    Ok(0) => return Err(ErrorKind::UnexpectedEof.into()),
                    Ok(_) => {}
                    Err(e) => return Err(e),
                }
                let slot = s.readable()?;
                slot.consume(0)
            })
        });
        // Writes: the peer never gives credit, so the ring fills and then every write waits.
        let writer = sc.spawn(|| {
            let chunk = vec![7u8; 16 * 1024];
            slowest(until, || {
                // Partial writes are fine: room is what the peer never gives.
                let _sent: usize = (&s).write(&chunk)?;
                let slot = s.reserve(1024)?;
                slot.commit(0)
            })
        });
        // Quick calls from a third thread: they take the stream's lock too.
        let looker = sc.spawn(|| {
            let r = slowest(until, || {
                let _ = s.readiness(false);
                s.bytes_readable().map(drop)
            });
            done.store(true, Ordering::Relaxed);
            r
        });
        (
            reader.join().unwrap(),
            writer.join().unwrap(),
            looker.join().unwrap(),
        )
    });
    let rate = peer.cmd("rate");
    eprintln!(
        "{b:?}: {rate} notifications/s from the peer; slowest read {:?} ({} calls), write {:?} ({} calls), look {:?} ({} calls)",
        reader.0, reader.1, writer.0, writer.1, looker.0, looker.1
    );
    assert!(done.load(Ordering::Relaxed));
    for (what, (worst, calls)) in [("read", reader), ("write", writer)] {
        assert!(calls > 0, "no {what} returned");
        assert!(
            worst < 2 * TIMEOUT + MARGIN,
            "a {what} took {worst:?} with a timeout of {TIMEOUT:?}"
        );
    }
    assert!(
        looker.0 < 2 * TIMEOUT + MARGIN,
        "a quick call waited {:?} for the stream's lock",
        looker.0
    );
}

test_support::both_backends!(spammed_stream_still_returns);
