//! A lying peer, built from raw vmmc-nic calls, against a real listener and stream.
//!
//! The attacker does the connect handshake by hand (as the layout and greeting formats
//! document them), then writes garbage into the victim's ring header. Each lie must cost the
//! attacker its connection, never panic the victim or hang it, and leave the listener
//! accepting honest clients.

use std::io::{ErrorKind, Read, Write};
use std::time::{Duration, Instant};

mod common;

use vmmc_nic::{
    Access, Endpoint, Export, ExportId, Import, ImportKey, ImportOptions, NodeAddr, Notify,
    Permissions,
};
use vmmc_sockets::{VmmcListener, VmmcStream};

const HEADER: u64 = 4096;
const PEER_WRITE: u64 = 0;
const PEER_FIN: u64 = 8;
const PEER_CREDIT: u64 = 16;
const PEER_URGENT: u64 = 40;
const ACCEPT_STATE: u64 = 64;
const ACCEPT_EXPORT: u64 = 72;
const ACCEPT_RING: u64 = 80;
const ACCEPT_KEY: u64 = 88;
const RING: u64 = 64 * 1024;
const WAIT: Duration = Duration::from_secs(10);

use common::Backend;

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
    // The key our ring requires: this attacker's ring requires none, so any will do.
    b.extend_from_slice(&[0x5a; 32]);
    b.extend_from_slice(&name);
    b
}

/// Imports the listener's accept region carrying `greeting`, as a connecting client does.
fn knock(listener: &NodeAddr, greeting: Vec<u8>) -> Import {
    let opts = ImportOptions {
        greeting,
        ..Default::default()
    };
    Import::open_with(listener, ExportId::new(1).unwrap(), Access::FETCH, &opts).unwrap()
}

/// A client that speaks the protocol by hand.
struct Attacker {
    _ep: Endpoint,
    ring: Export,
    server: Import,
}

impl Attacker {
    fn connect(b: Backend, listener: &NodeAddr) -> Attacker {
        let ep = Endpoint::bind(&b.fresh_addr().parse().unwrap()).unwrap();
        let ring = ep
            .export_mirrored(HEADER + RING, RING, Permissions::open())
            .unwrap();
        let _knock = knock(listener, request(ep.addr(), ring.id(), RING));
        let t0 = Instant::now();
        while ring.load_u64(ACCEPT_STATE).unwrap() != 1 {
            assert!(t0.elapsed() < WAIT, "never accepted");
            let _ = ring.wait(Duration::from_millis(50));
        }
        let id = ExportId::new(ring.load_u64(ACCEPT_EXPORT).unwrap() as u32).unwrap();
        assert_eq!(
            ring.load_u64(ACCEPT_RING).unwrap(),
            vmmc_sockets::DEFAULT_RING
        );
        let mut key = [0u8; 32];
        for (i, w) in key.chunks_exact_mut(8).enumerate() {
            let v = ring.load_u64(ACCEPT_KEY + 8 * i as u64).unwrap();
            w.copy_from_slice(&v.to_le_bytes());
        }
        // The listener's ring is keyed: without the key from our header, no import.
        assert!(Import::open(listener, id, Access::DEPOSIT).is_err());
        let opts = ImportOptions {
            key: Some(ImportKey::from_bytes(key)),
            ..Default::default()
        };
        let server = Import::open_with(listener, id, Access::DEPOSIT, &opts).unwrap();
        Attacker {
            _ep: ep,
            ring,
            server,
        }
    }

    fn poke(&self, offset: u64, value: u64) {
        self.server.store_u64(offset, value, Notify::Yes).unwrap();
    }
}

fn victim(b: Backend) -> (VmmcListener, NodeAddr) {
    let l = VmmcListener::bind(&b.fresh_addr()).unwrap();
    let a = l.local_addr().clone();
    (l, a)
}

/// The listener still accepts an honest client and moves data with it.
fn still_serves(l: &VmmcListener) {
    let mut c = VmmcStream::connect(&l.local_addr().to_string()).unwrap();
    let (s, _) = l.accept().unwrap();
    c.write_all(b"ping").unwrap();
    let mut four = [0u8; 4];
    (&s).read_exact(&mut four).unwrap();
    assert_eq!(&four, b"ping");
}

/// Reads until the lie is noticed; the error must name the broken protocol.
fn read_fails(s: &VmmcStream) {
    s.set_read_timeout(Some(WAIT)).unwrap();
    let mut buf = vec![0u8; RING as usize];
    let err = loop {
        match (&*s).read(&mut buf) {
            Ok(0) => panic!("a lie read as EOF"),
            Ok(_) => continue,
            Err(e) => break e,
        }
    };
    assert_eq!(err.kind(), ErrorKind::ConnectionAborted, "{err}");
    // And it stays broken.
    assert!((&*s).read(&mut buf).is_err());
}

test_support::both_backends!(
    send_index_beyond_the_ring,
    send_index_going_backwards,
    final_index_moved_or_exceeded,
    urgent_mark_beyond_the_data,
    credit_for_bytes_never_sent,
    a_peer_that_never_gives_credit_times_out,
    forged_connect_requests_are_dropped,
);

fn send_index_beyond_the_ring(b: Backend) {
    let (l, addr) = victim(b);
    let a = Attacker::connect(b, &addr);
    let (s, _) = l.accept().unwrap();
    a.poke(PEER_WRITE, vmmc_sockets::DEFAULT_RING + 1);
    read_fails(&s);
    drop(a);
    still_serves(&l);
}

fn send_index_going_backwards(b: Backend) {
    let (l, addr) = victim(b);
    let a = Attacker::connect(b, &addr);
    let (s, _) = l.accept().unwrap();
    a.poke(PEER_WRITE, 100);
    let mut buf = [0u8; 100];
    (&s).read_exact(&mut buf).unwrap();
    a.poke(PEER_WRITE, 50);
    read_fails(&s);
    still_serves(&l);
}

fn final_index_moved_or_exceeded(b: Backend) {
    let (l, addr) = victim(b);
    let a = Attacker::connect(b, &addr);
    let (s, _) = l.accept().unwrap();
    a.poke(PEER_WRITE, 10);
    a.poke(PEER_FIN, 5 + 1); // "finished at 5", but 10 were sent
    read_fails(&s);
    still_serves(&l);
}

fn urgent_mark_beyond_the_data(b: Backend) {
    let (l, addr) = victim(b);
    let a = Attacker::connect(b, &addr);
    let (s, _) = l.accept().unwrap();
    a.poke(PEER_URGENT, 1000);
    read_fails(&s);
    still_serves(&l);
}

fn credit_for_bytes_never_sent(b: Backend) {
    let (l, addr) = victim(b);
    let a = Attacker::connect(b, &addr);
    let (s, _) = l.accept().unwrap();
    (&s).write_all(&[1u8; 1000]).unwrap();
    a.poke(PEER_CREDIT, 1 << 60); // far more than can ever have been sent
    s.set_write_timeout(Some(WAIT)).unwrap();
    let t0 = Instant::now();
    let err = loop {
        match (&s).write(&[2u8; 1000]) {
            Ok(n) => assert!(n > 0 && t0.elapsed() < WAIT, "the lie was never noticed"),
            Err(e) => break e,
        }
    };
    assert_eq!(err.kind(), ErrorKind::ConnectionAborted, "{err}");
    still_serves(&l);
}

fn a_peer_that_never_gives_credit_times_out(b: Backend) {
    let (l, addr) = victim(b);
    let a = Attacker::connect(b, &addr);
    let (s, _) = l.accept().unwrap();
    s.set_write_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let chunk = vec![3u8; 64 * 1024];
    let mut sent = 0u64;
    let err = loop {
        match (&s).write(&chunk) {
            Ok(n) => sent += n as u64,
            Err(e) => break e,
        }
        assert!(sent <= RING, "wrote more than the peer's ring holds");
    };
    assert_eq!(err.kind(), ErrorKind::TimedOut, "{err}");
    assert_eq!(sent, RING);
    // What was sent landed in the attacker's ring, and nothing beyond it.
    assert_eq!(a.ring.load_u64(PEER_WRITE).unwrap(), RING);
    still_serves(&l);
}

fn forged_connect_requests_are_dropped(b: Backend) {
    let (l, addr) = victim(b);
    let ep = Endpoint::bind(&b.fresh_addr().parse().unwrap()).unwrap();
    let ring = ep
        .export_mirrored(HEADER + RING, RING, Permissions::open())
        .unwrap();
    let good = request(ep.addr(), ring.id(), RING);
    let mut bad_magic = good.clone();
    bad_magic[0] = b'X';
    let mut bad_size = good.clone();
    bad_size[12] = 1;
    let wrong_export = request(
        ep.addr(),
        ExportId::new(ring.id().get() + 50).unwrap(),
        RING,
    );
    let wrong_size = request(ep.addr(), ring.id(), RING * 2);
    for forged in [
        bad_magic,
        bad_size,
        wrong_export,
        wrong_size,
        b"garbage".to_vec(),
        vec![0; 1024],
    ] {
        let _knock = knock(&addr, forged);
    }
    // A request naming a region of another process (a child's accept region): the listener
    // checks who owns what it is asked to import, and what shape it has.
    let (_child, child_addr) = common::spawn_server(b, RING);
    let child_addr: NodeAddr = child_addr.parse().unwrap();
    let forged = match &child_addr {
        NodeAddr::Shm(_) => request(&child_addr, ExportId::new(1).unwrap(), RING),
        NodeAddr::Tcp(t) => {
            let a: NodeAddr = format!("tcp:127.0.0.1:{}", t.port()).parse().unwrap();
            request(&a, ExportId::new(1).unwrap(), RING)
        }
    };
    let _knock = knock(&addr, forged);
    std::thread::sleep(Duration::from_millis(300));
    l.set_nonblocking(true).unwrap();
    assert_eq!(
        l.accept().unwrap_err().kind(),
        ErrorKind::WouldBlock,
        "a forged request was accepted"
    );
    assert_eq!(ring.load_u64(ACCEPT_STATE).unwrap(), 0);
    l.set_nonblocking(false).unwrap();
    still_serves(&l);
}
