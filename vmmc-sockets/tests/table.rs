//! The BSD/WinSock-shaped socket table, against listeners in another process and in this one.

mod common;

use std::io::{ErrorKind, IoSlice, IoSliceMut};
use std::net::Shutdown;
use std::time::{Duration, Instant};

use common::*;
use vmmc_sockets::table::*;
use vmmc_sockets::winsock::{wsa_error, SocketHandle, WSAENOTSOCK, WSAEWOULDBLOCK};

test_support::both_backends!(
    calls_against_a_server_in_another_process,
    listen_accept_and_flags_in_one_table,
    pointer_ioctls,
    poll_and_select,
    one_socket_many_threads,
    options,
);

fn is_enotsock(e: &std::io::Error) -> bool {
    e.raw_os_error() == Some(libc::ENOTSOCK) && wsa_error(e) == WSAENOTSOCK
}

fn calls_against_a_server_in_another_process(b: Backend) {
    let (mut server, addr) = spawn_server(b, 64 * 1024);
    let t = SocketTable::new();
    let s = t.socket().unwrap();
    t.connect(s, &addr).unwrap();
    server.ok("accept");
    server.cmd_nowait("echo").unwrap();
    // Scatter/gather both ways.
    let n = t
        .sendmsg(
            s,
            &[
                IoSlice::new(b"hello, "),
                IoSlice::new(b""),
                IoSlice::new(b"world"),
            ],
            0,
        )
        .unwrap();
    assert_eq!(n, 12);
    let (mut a, mut b2) = ([0u8; 5], [0u8; 7]);
    let got = t
        .recvmsg(
            s,
            &mut [IoSliceMut::new(&mut a), IoSliceMut::new(&mut b2)],
            MSG_WAITALL,
        )
        .unwrap();
    assert_eq!(got, 12);
    assert_eq!(&a, b"hello");
    assert_eq!(&b2, b", world");
    // Half-close: the echo server sees EOF, closes its side, we read 0.
    t.shutdown(s, Shutdown::Write).unwrap();
    assert_eq!(t.recv(s, &mut [0u8; 8], 0).unwrap(), 0);
    assert_eq!(server.recv(), "OK 12");
    t.closesocket(s).unwrap();
    assert!(is_enotsock(&t.send(s, b"x", 0).unwrap_err()));
    assert!(is_enotsock(&t.closesocket(s).unwrap_err()));
}

fn listen_accept_and_flags_in_one_table(b: Backend) {
    let t = SocketTable::new();
    let l = t.socket().unwrap();
    t.bind(l, &b.fresh_addr()).unwrap();
    t.listen(l, 16).unwrap();
    let addr = t.local_addr(l).unwrap();
    let c = t.socket().unwrap();
    t.connect(c, &addr).unwrap();
    assert_eq!(
        t.connect(c, &addr).unwrap_err().raw_os_error(),
        Some(libc::EISCONN)
    );
    let (a, _who) = t.accept(l).unwrap();
    // Nothing to read yet.
    let e = t.recv(a, &mut [0u8; 4], MSG_DONTWAIT).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::WouldBlock);
    assert_eq!(wsa_error(&e), WSAEWOULDBLOCK);
    t.send(c, b"abcdef", 0).unwrap();
    let mut p = [0u8; 3];
    let deadline = Instant::now() + Duration::from_secs(10);
    while t.recv(a, &mut p, MSG_PEEK | MSG_DONTWAIT).is_err() {
        assert!(Instant::now() < deadline);
    }
    assert_eq!(&p, b"abc");
    // MSG_WAITALL collects pieces sent later from another thread.
    std::thread::scope(|sc| {
        sc.spawn(|| {
            for piece in [&b"gh"[..], b"ij", b"kl"] {
                std::thread::sleep(Duration::from_millis(20));
                t.send(c, piece, 0).unwrap();
            }
        });
        let mut all = [0u8; 12];
        assert_eq!(t.recv(a, &mut all, MSG_WAITALL).unwrap(), 12);
        assert_eq!(&all, b"abcdefghijkl");
    });
    // Urgent data.
    t.send(c, b"xyz!", MSG_OOB).unwrap();
    let mut one = [0u8; 1];
    let deadline = Instant::now() + Duration::from_secs(10);
    while t.recv(a, &mut one, MSG_OOB).is_err() {
        assert!(Instant::now() < deadline);
    }
    assert_eq!(one[0], b'!');
    assert_eq!(
        t.ioctlsocket(a, Ioctl::AtMark).unwrap(),
        IoctlOut::Flag(false)
    );
    let mut three = [0u8; 3];
    t.recv(a, &mut three, MSG_WAITALL).unwrap();
    assert_eq!(
        t.ioctlsocket(a, Ioctl::AtMark).unwrap(),
        IoctlOut::Flag(true)
    );
    // Unknown flags, calls in the wrong state, bad descriptors.
    assert_eq!(
        t.send(c, b"x", 0x8000).unwrap_err().raw_os_error(),
        Some(libc::EOPNOTSUPP)
    );
    assert_eq!(
        t.send(l, b"x", 0).unwrap_err().raw_os_error(),
        Some(libc::ENOTCONN)
    );
    assert_eq!(t.accept(c).unwrap_err().raw_os_error(), Some(libc::EINVAL));
    assert!(is_enotsock(&t.recv(-1, &mut [0u8; 1], 0).unwrap_err()));
    assert!(is_enotsock(&t.recv(9999, &mut [0u8; 1], 0).unwrap_err()));
    assert!(t.bind(t.socket().unwrap(), "nonsense").is_err());
    // WinSock handles: round trip, stale after close, forged.
    let h = t.to_handle(a).unwrap();
    assert_ne!(h.0, a as u64);
    assert_eq!(t.from_handle(h).unwrap(), a);
    t.closesocket(a).unwrap();
    assert!(is_enotsock(&t.from_handle(h).unwrap_err()));
    let reused = t.socket().unwrap();
    assert_eq!(reused, a, "the lowest free descriptor is reused");
    assert!(
        is_enotsock(&t.from_handle(h).unwrap_err()),
        "a stale handle reached the new socket"
    );
    for forged in [0, 1, 4, u64::MAX, h.0 + 1, h.0 ^ (1 << 40)] {
        assert!(t.from_handle(SocketHandle(forged)).is_err(), "{forged:#x}");
    }
}

/// Writes through a pointer the table handed out, as a C caller of `ioctlsocket` would.
fn fill(ptr: *mut u8, len: usize, data: &[u8]) {
    assert!(data.len() <= len);
    // SAFETY: the table guarantees `ptr` is valid for `len` writable bytes until the commit,
    // which happens after this returns; nothing else writes there meanwhile.
    unsafe { std::slice::from_raw_parts_mut(ptr, len)[..data.len()].copy_from_slice(data) }
}

/// Reads through a pointer the table handed out.
fn look(ptr: *mut u8, len: usize) -> Vec<u8> {
    // SAFETY: valid for `len` readable bytes until the release, which happens afterwards.
    unsafe { std::slice::from_raw_parts(ptr, len).to_vec() }
}

fn pointer_ioctls(b: Backend) {
    let (mut server, addr) = spawn_server(b, 64 * 1024);
    let t = SocketTable::new();
    let s = t.socket().unwrap();
    t.setsockopt(s, SockOpt::RcvBuf(64 * 1024)).unwrap();
    t.connect(s, &addr).unwrap();
    server.ok("accept");
    // Send in place: 200 KB through a 64 KiB ring, in slots that straddle the wrap.
    let data = pattern(12, 0, 200_000);
    server.cmd_nowait("recv 200000").unwrap();
    let mut at = 0;
    while at < data.len() {
        match t.ioctlsocket(s, Ioctl::GetSendPointer { max: 30_000 }) {
            Ok(IoctlOut::Pointer(p, n)) => {
                let n = n.min(data.len() - at);
                fill(p, n, &data[at..at + n]);
                t.ioctlsocket(s, Ioctl::CommitSend(n)).unwrap();
                at += n;
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => std::thread::yield_now(),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(server.recv(), format!("OK {}", fnv(&data, FNV_START)));
    // A commit without a pointer, or beyond it, is refused.
    assert_eq!(
        t.ioctlsocket(s, Ioctl::CommitSend(1)).unwrap_err().kind(),
        ErrorKind::InvalidInput
    );
    // Receive in place (the server's send waits for room as we read).
    server.cmd_nowait("send 100000 5").unwrap();
    let want = pattern(5, 0, 100_000);
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while got.len() < want.len() {
        assert!(Instant::now() < deadline);
        match t.ioctlsocket(s, Ioctl::GetRecvPointer) {
            Ok(IoctlOut::Pointer(p, n)) => {
                got.extend_from_slice(&look(p, n));
                t.ioctlsocket(s, Ioctl::ReleaseRecv(n)).unwrap();
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => std::thread::yield_now(),
            other => panic!("{other:?}"),
        }
    }
    assert!(got == want);
    assert_eq!(
        t.ioctlsocket(s, Ioctl::BytesReadable).unwrap(),
        IoctlOut::Value(0)
    );
}

fn poll_and_select(b: Backend) {
    let t = SocketTable::new();
    let l = t.socket().unwrap();
    t.bind(l, &b.fresh_addr()).unwrap();
    t.listen(l, 1).unwrap();
    let addr = t.local_addr(l).unwrap();
    let mut fds = [PollFd {
        fd: l,
        events: POLLIN,
        revents: 0,
    }];
    assert_eq!(
        t.poll(&mut fds, Some(Duration::from_millis(50))).unwrap(),
        0
    );
    // A client in another process connects: the listener becomes readable.
    let (mut client, ready) = spawn_client(&addr, 64 * 1024);
    assert_eq!(ready, "READY");
    assert_eq!(t.poll(&mut fds, Some(Duration::from_secs(10))).unwrap(), 1);
    assert_eq!(fds[0].revents, POLLIN);
    let (a, _) = t.accept(l).unwrap();
    // Writable at once, readable only once the client sends (poll sleeps until then).
    let mut fds = [
        PollFd {
            fd: a,
            events: POLLIN | POLLOUT,
            revents: 0,
        },
        PollFd {
            fd: 12345,
            events: POLLIN,
            revents: 0,
        },
    ];
    assert_eq!(t.poll(&mut fds, Some(Duration::ZERO)).unwrap(), 2);
    assert_eq!(fds[0].revents, POLLOUT);
    assert_eq!(fds[1].revents, POLLNVAL);
    let mut fds = [PollFd {
        fd: a,
        events: POLLIN,
        revents: 0,
    }];
    client.cmd_nowait("send 10 1").unwrap();
    let t0 = Instant::now();
    assert_eq!(t.poll(&mut fds, Some(Duration::from_secs(10))).unwrap(), 1);
    assert!(t0.elapsed() < Duration::from_secs(5));
    assert_eq!(client.recv(), "OK");
    // select narrows its sets.
    let other = t.socket().unwrap();
    t.connect(other, &addr).unwrap();
    let (quiet, _) = t.accept(l).unwrap();
    let (mut r, mut w, mut x) = (vec![a, quiet], vec![a], vec![]);
    assert_eq!(
        t.select(&mut r, &mut w, &mut x, Some(Duration::from_secs(5)))
            .unwrap(),
        2
    );
    assert_eq!((r, w), (vec![a], vec![a]));
    assert!(is_enotsock(
        &t.select(&mut vec![777], &mut vec![], &mut vec![], None)
            .unwrap_err()
    ));
    // A peer that dies: readable (the read reports it) and hung up.
    client.kill();
    let mut fds = [PollFd {
        fd: a,
        events: POLLIN,
        revents: 0,
    }];
    let mut buf = [0u8; 10];
    t.recv(a, &mut buf, MSG_WAITALL).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        t.poll(&mut fds, Some(Duration::from_secs(10))).unwrap();
        if fds[0].revents & POLLHUP != 0 {
            break;
        }
        assert!(Instant::now() < deadline, "no POLLHUP after the peer died");
    }
    assert_eq!(
        t.recv(a, &mut buf, 0).unwrap_err().kind(),
        ErrorKind::ConnectionReset
    );
}

fn one_socket_many_threads(b: Backend) {
    let (mut server, addr) = spawn_server(b, 64 * 1024);
    let t = SocketTable::new();
    let s = t.socket().unwrap();
    t.connect(s, &addr).unwrap();
    server.ok("accept");
    server.cmd_nowait("echo").unwrap();
    // One thread blocks in recv while two others send: the table lock is never held across a
    // wait, so nobody deadlocks.
    const EACH: usize = 300_000;
    std::thread::scope(|sc| {
        for k in 0..2u8 {
            let t = &t;
            sc.spawn(move || {
                let chunk = vec![k + 1; 1000];
                for _ in 0..EACH / 1000 {
                    let mut at = 0;
                    while at < chunk.len() {
                        at += t.send(s, &chunk[at..], 0).unwrap();
                    }
                }
            });
        }
        let mut counts = [0usize; 3];
        let mut buf = vec![0u8; 50_000];
        while counts[1] + counts[2] < 2 * EACH {
            let n = t.recv(s, &mut buf, 0).unwrap();
            assert!(n > 0);
            for &x in &buf[..n] {
                counts[x as usize] += 1;
            }
        }
        assert_eq!(counts, [0, EACH, EACH]);
    });
    // Many sockets of one table used from many threads at once.
    std::thread::scope(|sc| {
        for _ in 0..4 {
            sc.spawn(|| {
                let l = t.socket().unwrap();
                t.bind(l, &b.fresh_addr()).unwrap();
                t.listen(l, 1).unwrap();
                let c = t.socket().unwrap();
                t.connect(c, &t.local_addr(l).unwrap()).unwrap();
                let (a, _) = t.accept(l).unwrap();
                t.send(c, b"ping", 0).unwrap();
                let mut four = [0u8; 4];
                t.recv(a, &mut four, MSG_WAITALL).unwrap();
                assert_eq!(&four, b"ping");
                for x in [a, c, l] {
                    t.closesocket(x).unwrap();
                }
            });
        }
    });
}

fn options(b: Backend) {
    let (mut server, addr) = spawn_server(b, 64 * 1024);
    let t = SocketTable::new();
    let s = t.socket().unwrap();
    t.setsockopt(s, SockOpt::RcvBuf(100_000)).unwrap();
    assert_eq!(
        t.getsockopt(s, SockOptName::RcvBuf).unwrap(),
        SockOpt::RcvBuf(128 * 1024)
    );
    t.setsockopt(s, SockOpt::NoDelay(true)).unwrap();
    t.setsockopt(s, SockOpt::RcvTimeo(Some(Duration::from_millis(100))))
        .unwrap();
    t.connect(s, &addr).unwrap();
    server.ok("accept");
    assert_eq!(
        t.getsockopt(s, SockOptName::RcvBuf).unwrap(),
        SockOpt::RcvBuf(128 * 1024)
    );
    assert_eq!(
        t.getsockopt(s, SockOptName::SndBuf).unwrap(),
        SockOpt::SndBuf(64 * 1024)
    );
    assert_eq!(
        t.getsockopt(s, SockOptName::NoDelay).unwrap(),
        SockOpt::NoDelay(true)
    );
    assert_eq!(
        t.setsockopt(s, SockOpt::RcvBuf(1 << 20))
            .unwrap_err()
            .raw_os_error(),
        Some(libc::EISCONN)
    );
    let t0 = Instant::now();
    assert_eq!(
        t.recv(s, &mut [0u8; 1], 0).unwrap_err().kind(),
        ErrorKind::TimedOut
    );
    assert!(t0.elapsed() >= Duration::from_millis(100));
    t.setsockopt(s, SockOpt::SndTimeo(Some(Duration::from_millis(100))))
        .unwrap();
    assert_eq!(
        t.getsockopt(s, SockOptName::SndTimeo).unwrap(),
        SockOpt::SndTimeo(Some(Duration::from_millis(100)))
    );
    // The server never reads: the 64 KiB ring fills, then sends time out.
    let big = vec![0u8; 1 << 20];
    let err = loop {
        if let Err(e) = t.send(s, &big, 0) {
            break e;
        }
    };
    assert_eq!(err.kind(), ErrorKind::TimedOut);
    t.ioctlsocket(s, Ioctl::NonBlocking(true)).unwrap();
    assert_eq!(
        t.send(s, &big, 0).unwrap_err().kind(),
        ErrorKind::WouldBlock
    );
}
