//! The table calls the socket wrappers use: readiness without waiting, and abandoning a
//! socket without telling its peer (the loser's side of a `fork`).

use std::time::Duration;

use vmmc_sockets::table::{SocketTable, POLLIN, POLLNVAL, POLLOUT};

fn pair(t: &SocketTable) -> (i32, i32, i32) {
    let addr = format!("shm:tw-{}-{}", std::process::id(), rand_suffix());
    let l = t.socket().unwrap();
    t.bind(l, &addr).unwrap();
    t.listen(l, 1).unwrap();
    let c = t.socket().unwrap();
    t.connect(c, &addr).unwrap();
    let (s, _) = t.accept(l).unwrap();
    (l, c, s)
}

fn rand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

#[test]
fn readiness_follows_data_and_listeners() {
    let t = SocketTable::new();
    let addr = format!("shm:tw-{}-{}", std::process::id(), rand_suffix());
    let l = t.socket().unwrap();
    t.bind(l, &addr).unwrap();
    t.listen(l, 1).unwrap();
    assert!(t.is_listening(l));
    assert_eq!(t.readiness(l, POLLIN, false), 0);
    let c = t.socket().unwrap();
    t.connect(c, &addr).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while t.readiness(l, POLLIN, false) != POLLIN {
        assert!(
            std::time::Instant::now() < deadline,
            "listener never readable"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    let (s, _) = t.accept(l).unwrap();
    assert!(!t.is_listening(s));
    assert_eq!(t.readiness(s, POLLIN | POLLOUT, true), POLLOUT);
    t.send(c, b"x", 0).unwrap();
    assert_eq!(t.readiness(s, POLLIN | POLLOUT, false), POLLIN | POLLOUT);
    assert_eq!(t.readiness(999, POLLIN, false), POLLNVAL);
}

#[test]
fn an_abandoned_socket_says_nothing_to_its_peer() {
    let t = SocketTable::new();
    let (_l, c, s) = pair(&t);
    t.abandon(s).unwrap();
    assert!(t.send(s, b"x", 0).is_err(), "the descriptor is gone");
    // Nothing was said or closed: the peer waits on, where a close gives it an end of stream.
    t.setsockopt(
        c,
        vmmc_sockets::table::SockOpt::RcvTimeo(Some(Duration::from_millis(300))),
    )
    .unwrap();
    let mut b = [0u8; 1];
    let e = t.recv(c, &mut b, 0).unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::TimedOut, "{e}");

    let (_l2, c2, s2) = pair(&t);
    t.closesocket(s2).unwrap();
    assert_eq!(t.recv(c2, &mut b, 0).unwrap(), 0, "a close is an EOF");
}
