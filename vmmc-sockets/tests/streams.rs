//! Connections between two real processes, over both backends.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::Shutdown;
use std::time::{Duration, Instant};

use common::*;
use vmmc_sockets::{StreamOptions, VmmcListener, VmmcStream};

test_support::both_backends!(
    echo_through_a_small_ring_with_eof,
    pointer_api_both_ways_across_the_wrap,
    many_clients_at_once,
    a_dead_peer_is_a_reset_not_a_hang,
    half_close_keeps_the_other_direction,
    peek_nonblocking_and_timeouts,
    urgent_byte_and_mark,
    connecting_to_nothing_is_refused,
    a_connection_moves_to_another_process,
    handing_over_needs_the_only_handle,
    whole_messages_with_at_least,
);

fn handing_over_needs_the_only_handle(b: Backend) {
    let (mut server, addr) = spawn_server(b, 64 * 1024);
    let c = VmmcStream::connect(&addr).unwrap();
    server.ok("accept");
    let (a, z) = std::os::unix::net::UnixStream::pair().unwrap();
    let other = c.try_clone().unwrap();
    let err = c.send_to(&a).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
    // Garbage on the socket is refused by the receiver.
    drop(other);
    std::io::Write::write_all(&mut &a, &[0u8; 64]).unwrap();
    assert!(VmmcStream::receive_from(&z).is_err());
}

fn a_connection_moves_to_another_process(b: Backend) {
    let (mut server, addr) = spawn_server(b, 64 * 1024);
    let (mut original, ready) = spawn_client(&addr, 64 * 1024);
    assert_eq!(ready, "READY");
    server.ok("accept");
    server.cmd_nowait("echo").unwrap();
    // The original sends; the echo lands in its ring, unread.
    original.ok("send 1000 1");
    std::thread::sleep(Duration::from_millis(100));
    let name = format!("sock-heir-{}-{:?}", std::process::id(), b);
    let (mut heir, ready) = Peer::spawn("common::child_process", &["adopt", &name]);
    assert_eq!(ready, "READY");
    original.ok(&format!("handto {name}"));
    assert_eq!(heir.recv(), "ADOPTED");
    // The original may now die: the connection is the heir's.
    original.kill();
    let first = pattern(1, 0, 1000);
    assert_eq!(heir.ok("recv 1000"), fnv(&first, FNV_START).to_string());
    heir.ok("send 500 2");
    assert_eq!(
        heir.ok("recv 500"),
        fnv(&pattern(2, 0, 500), FNV_START).to_string()
    );
    heir.ok("shutdown wr");
    assert_eq!(server.recv(), "OK 1500");
    assert_eq!(heir.ok("drain"), format!("0 {FNV_START}"));
}

const WAIT: Duration = Duration::from_secs(20);

fn echo_through_a_small_ring_with_eof(b: Backend) {
    let (mut server, addr) = spawn_server(b, 64 * 1024);
    let c = VmmcStream::connect_with(&addr, &small_ring()).unwrap();
    assert!(server.ok("accept").len() > 3);
    server.cmd_nowait("echo").unwrap();
    // 3 MiB through 64 KiB rings: every byte wraps many times and waits for credit.
    let data = pattern(7, 0, 3 << 20);
    let writer = {
        let c = c.try_clone().unwrap();
        let data = data.clone();
        std::thread::spawn(move || {
            let mut w = &c;
            for chunk in data.chunks(50_000) {
                w.write_all(chunk).unwrap();
            }
            c.shutdown(Shutdown::Write).unwrap();
        })
    };
    let mut back = Vec::new();
    (&c).read_to_end(&mut back).unwrap();
    writer.join().unwrap();
    assert_eq!(back.len(), data.len());
    assert!(back == data, "echoed bytes differ");
    assert_eq!(server.recv(), format!("OK {}", 3 << 20));
    // After EOF, reads keep returning 0.
    assert_eq!((&c).read(&mut [0u8; 10]).unwrap(), 0);
}

fn pointer_api_both_ways_across_the_wrap(b: Backend) {
    let (mut server, addr) = spawn_server(b, 64 * 1024);
    let c = VmmcStream::connect_with(&addr, &small_ring()).unwrap();
    server.ok("accept");
    // Server → client, written in place, read in place.
    server.cmd_nowait("send-ptr 1000000 3").unwrap();
    let want = pattern(3, 0, 1_000_000);
    let mut got = 0usize;
    let mut max_slot = 0usize;
    while got < want.len() {
        let slot = c.readable().unwrap();
        assert!(!slot.is_empty());
        let n = slot.len().min(want.len() - got);
        max_slot = max_slot.max(slot.len());
        assert!(
            slot.data().unwrap().get(..n).unwrap().to_vec() == want[got..got + n],
            "bytes at {got} differ"
        );
        slot.consume(n).unwrap();
        got += n;
    }
    assert!(max_slot <= 64 * 1024);
    assert_eq!(server.recv(), "OK");
    // Client → server, in place, in odd-sized pieces so slots straddle the wrap.
    let data = pattern(4, 0, 777_777);
    server.cmd_nowait("recv-ptr 777777").unwrap();
    let mut at = 0;
    while at < data.len() {
        let mut slot = c.reserve((data.len() - at).min(40_000)).unwrap();
        let n = slot.len();
        slot.buf().unwrap().copy_from(&data[at..at + n]);
        slot.commit(n).unwrap();
        at += n;
    }
    assert_eq!(server.recv(), format!("OK {}", fnv(&data, FNV_START)));
    // A slot dropped without commit sends nothing; committing more than reserved is refused.
    drop(c.reserve(10).unwrap());
    let slot = c.reserve(10).unwrap();
    assert_eq!(slot.commit(11).unwrap_err().kind(), ErrorKind::InvalidInput);
}

fn many_clients_at_once(b: Backend) {
    let listener = VmmcListener::bind(&b.fresh_addr()).unwrap();
    let addr = listener.local_addr().to_string();
    const N: usize = 6;
    let mut kids: Vec<Peer> = (0..N)
        .map(|_| {
            let (p, ready) = spawn_client(&addr, 64 * 1024);
            assert_eq!(ready, "READY");
            p
        })
        .collect();
    let conns: Vec<VmmcStream> = (0..N).map(|_| listener.accept().unwrap().0).collect();
    // Child i sends 200_000 + i bytes of pattern i, then closes.
    for (i, k) in kids.iter_mut().enumerate() {
        k.cmd_nowait(&format!("send {} {i}", 200_000 + i)).unwrap();
    }
    let received: Vec<Vec<u8>> = std::thread::scope(|s| {
        let readers: Vec<_> = conns
            .iter()
            .map(|c| {
                s.spawn(move || {
                    let mut all = Vec::new();
                    (&*c).read_to_end(&mut all).unwrap();
                    all
                })
            })
            .collect();
        for k in kids.iter_mut() {
            assert_eq!(k.recv(), "OK");
            k.ok("close");
        }
        readers.into_iter().map(|r| r.join().unwrap()).collect()
    });
    let mut seen = [false; N];
    for all in received {
        let i = all.len() - 200_000;
        assert!(
            i < N && !seen[i],
            "unexpected stream of {} bytes",
            all.len()
        );
        seen[i] = true;
        assert!(
            all == pattern(i as u64, 0, all.len()),
            "stream {i} corrupted"
        );
    }
}

fn a_dead_peer_is_a_reset_not_a_hang(b: Backend) {
    let listener = VmmcListener::bind(&b.fresh_addr()).unwrap();
    let (mut kid, ready) = spawn_client(&listener.local_addr().to_string(), 64 * 1024);
    assert_eq!(ready, "READY");
    let (s, _) = listener.accept().unwrap();
    kid.ok("send 1000 1");
    kid.kill();
    // The bytes that arrived before the death are still readable; then the reset.
    let mut buf = vec![0u8; 1000];
    (&s).read_exact(&mut buf).unwrap();
    assert_eq!(buf, pattern(1, 0, 1000));
    s.set_read_timeout(Some(WAIT)).unwrap();
    let t0 = Instant::now();
    let err = (&s).read(&mut buf).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ConnectionReset, "{err}");
    assert!(t0.elapsed() < WAIT);
    let err = (&s).write_all(&[0u8; 100_000]).unwrap_err();
    assert!(
        matches!(
            err.kind(),
            ErrorKind::ConnectionReset | ErrorKind::BrokenPipe
        ),
        "{err}"
    );
}

fn half_close_keeps_the_other_direction(b: Backend) {
    let (mut server, addr) = spawn_server(b, 64 * 1024);
    let c = VmmcStream::connect(&addr).unwrap();
    server.ok("accept");
    (&c).write_all(b"request").unwrap();
    c.shutdown(Shutdown::Write).unwrap();
    assert_eq!((&c).write(b"x").unwrap_err().kind(), ErrorKind::BrokenPipe);
    let want = fnv(b"request", FNV_START);
    assert_eq!(server.ok("drain"), format!("7 {want}"));
    server.ok("send 5000 9");
    server.ok("close");
    let mut back = Vec::new();
    (&c).read_to_end(&mut back).unwrap();
    assert_eq!(back, pattern(9, 0, 5000));
}

fn peek_nonblocking_and_timeouts(b: Backend) {
    let (mut server, addr) = spawn_server(b, 64 * 1024);
    let c = VmmcStream::connect(&addr).unwrap();
    server.ok("accept");
    c.set_nonblocking(true).unwrap();
    assert_eq!(
        (&c).read(&mut [0u8; 4]).unwrap_err().kind(),
        ErrorKind::WouldBlock
    );
    c.set_nonblocking(false).unwrap();
    c.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let t0 = Instant::now();
    assert_eq!(
        (&c).read(&mut [0u8; 4]).unwrap_err().kind(),
        ErrorKind::TimedOut
    );
    assert!(t0.elapsed() >= Duration::from_millis(100));
    assert!(c.set_read_timeout(Some(Duration::ZERO)).is_err());
    c.set_read_timeout(Some(WAIT)).unwrap();
    server.ok("send 10 2");
    let mut p = [0u8; 4];
    assert_eq!(c.peek(&mut p).unwrap(), 4);
    let t0 = Instant::now();
    while c.bytes_readable().unwrap() < 10 {
        assert!(t0.elapsed() < WAIT);
    }
    let mut all = [0u8; 10];
    (&c).read_exact(&mut all).unwrap();
    assert_eq!(&all[..4], &p);
    assert_eq!(all.to_vec(), pattern(2, 0, 10));
    // A peer that stops reading: the ring fills, then writes time out instead of hanging.
    c.set_write_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let big = vec![0u8; 1 << 20];
    let t0 = Instant::now();
    let err = loop {
        if let Err(e) = (&c).write(&big) {
            break e;
        }
        assert!(t0.elapsed() < WAIT, "writes never blocked");
    };
    assert_eq!(err.kind(), ErrorKind::TimedOut);
}

fn urgent_byte_and_mark(b: Backend) {
    let (mut server, addr) = spawn_server(b, 64 * 1024);
    let c = VmmcStream::connect(&addr).unwrap();
    server.ok("accept");
    server.ok("send 3 5");
    server.ok("urgent 33");
    c.set_read_timeout(Some(WAIT)).unwrap();
    let t0 = Instant::now();
    while c.recv_urgent().unwrap().is_none() {
        assert!(t0.elapsed() < WAIT);
    }
    assert_eq!(c.recv_urgent().unwrap(), Some(33));
    assert!(!c.at_mark().unwrap());
    let mut three = [0u8; 3];
    (&c).read_exact(&mut three).unwrap();
    assert!(c.at_mark().unwrap());
    let mut one = [0u8; 1];
    (&c).read_exact(&mut one).unwrap();
    assert_eq!(one[0], 33);
    assert!(!c.at_mark().unwrap());
    assert_eq!(c.recv_urgent().unwrap(), None);
}

fn connecting_to_nothing_is_refused(b: Backend) {
    let addr = b.nowhere();
    let err = VmmcStream::connect(&addr).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ConnectionRefused, "{err}");
    // A listener that is gone refuses; an endpoint that never answers times out.
    let l = VmmcListener::bind(&b.fresh_addr()).unwrap();
    let gone = l.local_addr().to_string();
    drop(l);
    let err = VmmcStream::connect(&gone).unwrap_err();
    // Refused, or reset: while another test thread forks a child, the child briefly holds a
    // copy of the closed listener's socket (until its exec), so a connect may still queue on
    // it and then be reset.
    assert!(
        matches!(
            err.kind(),
            ErrorKind::ConnectionRefused | ErrorKind::ConnectionReset
        ),
        "{err}"
    );
    let mute = vmmc_nic::Endpoint::bind(&b.fresh_addr().parse().unwrap()).unwrap();
    let _region = mute.export(4096, vmmc_nic::Permissions::open()).unwrap();
    let opts = StreamOptions {
        connect_timeout: Duration::from_millis(300),
        ..StreamOptions::default()
    };
    let err = VmmcStream::connect_with(&mute.addr().to_string(), &opts).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::TimedOut, "{err}");
    assert!(VmmcStream::connect("udp:nowhere").is_err());
}

/// `readable_at_least` and `reserve_at_least` wait for a whole message, not for any byte.
fn whole_messages_with_at_least(b: Backend) {
    let listener = VmmcListener::bind_with(&b.fresh_addr(), small_ring()).unwrap();
    let addr = listener.local_addr().to_string();
    let c = VmmcStream::connect_with(&addr, &small_ring()).unwrap();
    let (s, _) = listener.accept().unwrap();
    let cap = c.send_buffer_size() as usize;
    let writer = std::thread::spawn(move || {
        (&s).write_all(b"abc").unwrap();
        std::thread::sleep(Duration::from_millis(50));
        (&s).write_all(b"defgh").unwrap();
        s
    });
    let slot = c.readable_at_least(8).unwrap();
    assert_eq!(slot.data().unwrap().to_vec(), b"abcdefgh");
    slot.consume(8).unwrap();
    let s = writer.join().unwrap();
    // Fill the peer's ring, then ask for all of it: the slot comes only once the reader
    // has given every byte back.
    let mut slot = c.reserve_at_least(cap, cap).unwrap();
    slot.buf().unwrap().copy_from(&vec![7u8; cap]);
    slot.commit(cap).unwrap();
    let reader = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(50));
        let mut buf = vec![0u8; cap];
        (&s).read_exact(&mut buf).unwrap();
        assert!(buf.iter().all(|&x| x == 7));
        s
    });
    let start = Instant::now();
    let slot = c.reserve_at_least(cap, cap).unwrap();
    assert_eq!(slot.len(), cap);
    assert!(start.elapsed() >= Duration::from_millis(40));
    drop(slot);
    let _s = reader.join().unwrap();
    assert_eq!(
        c.reserve_at_least(cap + 1, cap + 1).unwrap_err().kind(),
        ErrorKind::InvalidInput
    );
    assert_eq!(
        c.readable_at_least(c.recv_buffer_size() as usize + 1)
            .unwrap_err()
            .kind(),
        ErrorKind::InvalidInput
    );
}
