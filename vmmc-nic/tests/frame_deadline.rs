//! A granted importer that starts a frame and stops halfway loses its connection within the
//! frame deadline, and costs nothing else: the exporter's other importers carry on.
//!
//! The staller is a real process speaking raw frames (as the wire format documents them):
//! it imports, then sends a deposit header and half its payload, or part of a header, or
//! asks for a large fetch and never reads the answer, and then does nothing.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr as UnixAddr, UnixStream};
use std::time::{Duration, Instant};

use test_support::{say, Backend, Peer};
use vmmc_nic::{Access, Endpoint, Export, Import, NodeAddr, Notify, Permissions};

/// This binary's child entry.
const ENTRY: &str = "child_process";
/// The exporter's deadline for the rest of a frame (`FRAME_DEADLINE` in the crate).
const DEADLINE: Duration = Duration::from_secs(3);
/// What the test allows on top of it (scheduling, a loaded machine).
const MARGIN: Duration = Duration::from_secs(3);
/// How long the child watches for the close before it gives up.
const WATCH: Duration = Duration::from_secs(20);
const REGION: u64 = 32 << 20;

/// A frame header as the wire format documents it, built by hand.
fn frame(kind: u8, flags: u8, a: u64, b: u64) -> Vec<u8> {
    let mut f = b"VMNC".to_vec();
    f.extend_from_slice(&[kind, flags, 0, 0]);
    f.extend_from_slice(&a.to_le_bytes());
    f.extend_from_slice(&b.to_le_bytes());
    f
}

const IMPORT_REQ: u8 = 1;
const IMPORT_OK: u8 = 2;
const DEPOSIT: u8 = 4;
const FETCH_REQ: u8 = 6;

enum Raw {
    Unix(UnixStream),
    Tcp(TcpStream),
}

impl Raw {
    fn connect(addr: &NodeAddr) -> Raw {
        match addr {
            NodeAddr::Shm(name) => {
                let sa =
                    UnixAddr::from_abstract_name(format!("vmmc-nic/{}", name.as_str())).unwrap();
                Raw::Unix(UnixStream::connect_addr(&sa).unwrap())
            }
            NodeAddr::Tcp(t) => Raw::Tcp(TcpStream::connect((t.host(), t.port())).unwrap()),
        }
    }

    fn send(&self, bytes: &[u8]) {
        match self {
            Raw::Unix(s) => (&*s).write_all(bytes).unwrap(),
            Raw::Tcp(s) => (&*s).write_all(bytes).unwrap(),
        }
    }

    fn read(&self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Raw::Unix(s) => (&*s).read(buf),
            Raw::Tcp(s) => (&*s).read(buf),
        }
    }

    fn read_exact(&self, buf: &mut [u8]) {
        match self {
            Raw::Unix(s) => (&*s).read_exact(buf).unwrap(),
            Raw::Tcp(s) => (&*s).read_exact(buf).unwrap(),
        }
    }

    fn set_read_timeout(&self, t: Duration) {
        match self {
            Raw::Unix(s) => s.set_read_timeout(Some(t)).unwrap(),
            Raw::Tcp(s) => s.set_read_timeout(Some(t)).unwrap(),
        }
    }
}

/// The child: imports `id` by hand, starts a frame of kind `how` and stalls. Says `STALLED`,
/// then, for the kinds it can watch without reading the exporter's answer, `CLOSED ms` when
/// the exporter hangs up (ms after the stall began) or `OPEN` after [`WATCH`].
fn run_child(role: &[String]) {
    let [what, addr, id, how] = role else {
        panic!("bad role {role:?}")
    };
    assert_eq!(what, "stall");
    let addr: NodeAddr = addr.parse().unwrap();
    let id: u64 = id.parse().unwrap();
    let raw = Raw::connect(&addr);
    raw.set_read_timeout(Duration::from_secs(10));
    raw.send(&frame(IMPORT_REQ, 0, id, 3));
    let mut grant = [0u8; 24];
    raw.read_exact(&mut grant);
    assert_eq!(grant[4], IMPORT_OK, "no grant: {grant:?}");
    match how.as_str() {
        // A deposit of 4000 bytes of which 100 arrive.
        "payload" => raw.send(&[frame(DEPOSIT, 1, 0, 4000), vec![0x55; 100]].concat()),
        // Ten bytes of a header.
        "header" => raw.send(&frame(DEPOSIT, 0, 0, 8)[..10]),
        // A fetch of the whole region, whose answer is never read.
        "fetch" => raw.send(&frame(FETCH_REQ, 0, 0, REGION)),
        other => panic!("unknown stall {other}"),
    }
    let t0 = Instant::now();
    say("STALLED");
    if how == "fetch" {
        // Reading would take the answer; the exporter's side tells.
        let _ = test_support::commands().count();
        return;
    }
    raw.set_read_timeout(WATCH);
    let mut b = [0u8; 64];
    match raw.read(&mut b) {
        Ok(0) => say(format!("CLOSED {}", t0.elapsed().as_millis())),
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
            say(format!("CLOSED {}", t0.elapsed().as_millis()))
        }
        Ok(n) => say(format!("ANSWERED {n} bytes")),
        Err(e) => say(format!("OPEN {e}")),
    }
    let _ = test_support::commands().count();
}

test_support::child_entry!(run_child);

fn exporter(b: Backend) -> (Endpoint, Export) {
    let ep = Endpoint::bind(&b.fresh_addr().parse().unwrap()).unwrap();
    let x = ep.export(REGION, Permissions::open()).unwrap();
    (ep, x)
}

/// An honest importer deposits and is notified while the staller holds its frame open.
fn honest_round(imp: &Import, x: &Export, n: u64) {
    imp.write_at(1 << 20, &n.to_le_bytes(), Notify::Yes)
        .unwrap();
    let t0 = Instant::now();
    // A wake-up may be an older one (a departure, a notification counted before a
    // handover): wait until this deposit is seen.
    while x.load_u64(1 << 20).unwrap() != n {
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "the honest importer's deposit did not land"
        );
        let _ = x.wait(Duration::from_millis(100));
    }
}

/// Waits for the staller's departure, while the honest importer keeps depositing.
/// `limit`: a receive waits at most the deadline without any byte arriving. A send (the
/// fetch answer) waits at most the deadline per `sendmsg`, and one that moved some bytes
/// returns only at its timeout: the kernel still takes a little of a stalled stream now and
/// then (the receiver's window grows), so it takes a few deadlines until nothing moves.
fn departure_while_honest(
    x: &Export,
    honest: &Import,
    started: Instant,
    limit: Duration,
) -> Duration {
    let mut n = 0;
    loop {
        n += 1;
        honest_round(honest, x, n);
        if x.importers() == 1 {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < limit,
            "a stalled frame still holds its connection after {:?}",
            started.elapsed()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn stall(b: Backend, how: &str) {
    let (ep, x) = exporter(b);
    let honest = Import::open(ep.addr(), x.id(), Access::ALL).unwrap();
    let (mut child, ready) = Peer::spawn(
        ENTRY,
        &[
            "stall",
            &ep.addr().to_string(),
            &x.id().get().to_string(),
            how,
        ],
    );
    assert_eq!(ready, "STALLED");
    let started = Instant::now();
    assert_eq!(x.importers(), 2);
    let limit = if how == "fetch" {
        4 * DEADLINE + MARGIN
    } else {
        DEADLINE + MARGIN
    };
    let took = departure_while_honest(&x, &honest, started, limit);
    eprintln!("{b:?} {how}: the stalled importer was dropped after {took:?}");
    assert!(
        took >= DEADLINE - Duration::from_millis(500),
        "dropped after {took:?}, before the deadline"
    );
    assert_eq!(x.importers(), 1);
    if how != "fetch" {
        let seen = child.recv();
        assert!(seen.starts_with("CLOSED "), "the staller saw {seen}");
    }
    // The honest importer is untouched, and new importers are served.
    honest_round(&honest, &x, 1000);
    let late = Import::open(ep.addr(), x.id(), Access::ALL).unwrap();
    late.write_at(64, b"late", Notify::No).unwrap();
    let mut got = [0u8; 4];
    late.read_at(64, &mut got).unwrap();
    assert_eq!(&got, b"late");
}

#[test]
fn tcp_half_a_payload_costs_the_staller_its_connection() {
    stall(Backend::Tcp, "payload");
}

#[test]
fn tcp_part_of_a_header_costs_the_staller_its_connection() {
    stall(Backend::Tcp, "header");
}

#[test]
fn tcp_a_fetch_answer_never_read_costs_the_staller_its_connection() {
    stall(Backend::Tcp, "fetch");
}

#[test]
fn shm_part_of_a_header_after_the_grant_costs_the_staller_its_connection() {
    stall(Backend::Shm, "header");
}

#[test]
fn a_stalled_tcp_frame_does_not_outlast_a_handover() {
    // A handover waits (5 s) for every connection to reach a frame boundary; a stalled frame
    // is cut off before that, so the handover goes through and the honest importer carries
    // on with the new owner.
    let (ep, x) = exporter(Backend::Tcp);
    let honest = Import::open(ep.addr(), x.id(), Access::ALL).unwrap();
    let (_child, ready) = Peer::spawn(
        ENTRY,
        &[
            "stall",
            &ep.addr().to_string(),
            &x.id().get().to_string(),
            "payload",
        ],
    );
    assert_eq!(ready, "STALLED");
    // Let the connection's thread start on the frame (a frame not yet begun is simply
    // handed over with the connection).
    std::thread::sleep(Duration::from_millis(300));
    let handed = x
        .hand_over()
        .expect("a stalled frame made the handover fail");
    let x = Export::adopt(handed).unwrap();
    // Cut off before the handover; or, had its thread not started on the frame yet, handed
    // over with it and cut off by the new owner.
    let t0 = Instant::now();
    while x.importers() != 1 {
        assert!(
            t0.elapsed() < DEADLINE + MARGIN,
            "the staller outlived the handover"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    honest_round(&honest, &x, 7);
}
