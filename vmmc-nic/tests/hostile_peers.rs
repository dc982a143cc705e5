//! Lying and broken peers on both sides of both backends.
//!
//! The attacker is this test speaking raw bytes; the victim is a real endpoint or import. Each
//! attack must give the victim a clear error (or cost the attacker its connection) and leave
//! the victim serving everyone else. A panic hook catches panics in the victim's background
//! threads, which would otherwise pass unseen.

use std::io::{IoSlice, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr as UnixAddr, UnixListener, UnixStream};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Once;
use std::time::{Duration, Instant};

use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
use vmmc_nic::{
    Access, Endpoint, Error, Export, ExportId, Import, NodeAddr, Notify, Permissions, Wake,
};

const REGION: u64 = 4096;
const WAIT: Duration = Duration::from_secs(10);

static PANICKED: AtomicBool = AtomicBool::new(false);

fn watch_panics() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            // Only the victim's own threads (all named vmmc-*) count; test assertions are
            // reported by the harness as usual.
            if std::thread::current()
                .name()
                .is_some_and(|n| n.starts_with("vmmc-"))
            {
                PANICKED.store(true, Ordering::SeqCst);
            }
            default(info);
        }));
    });
}

fn assert_no_panics() {
    assert!(
        !PANICKED.load(Ordering::SeqCst),
        "a vmmc thread panicked (see the output above)"
    );
}

use test_support::Backend;

fn unique_name() -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "hostile-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// A frame as the wire format documents it, built by hand.
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
const FETCH_RESP: u8 = 7;

fn victim(b: Backend) -> (Endpoint, Export) {
    watch_panics();
    let addr: NodeAddr = match b {
        Backend::Shm => format!("shm:{}", unique_name()).parse().unwrap(),
        Backend::Tcp => "tcp:127.0.0.1:0".parse().unwrap(),
    };
    let ep = Endpoint::bind(&addr).unwrap();
    let x = ep.export(REGION, Permissions::open()).unwrap();
    (ep, x)
}

/// A raw connection to the victim endpoint.
enum Raw {
    Unix(UnixStream),
    Tcp(TcpStream),
}

impl Raw {
    fn connect(ep: &Endpoint) -> Raw {
        let raw = match ep.addr() {
            NodeAddr::Shm(name) => {
                let sa =
                    UnixAddr::from_abstract_name(format!("vmmc-nic/{}", name.as_str())).unwrap();
                Raw::Unix(UnixStream::connect_addr(&sa).unwrap())
            }
            NodeAddr::Tcp(t) => Raw::Tcp(TcpStream::connect((t.host(), t.port())).unwrap()),
        };
        raw.stream().set_read_timeout(Some(WAIT)).unwrap();
        raw
    }

    fn shutdown_write(&self) {
        let _ = match self {
            Raw::Unix(s) => s.shutdown(std::net::Shutdown::Write),
            Raw::Tcp(s) => s.shutdown(std::net::Shutdown::Write),
        };
    }

    fn stream(&self) -> &dyn Stream {
        match self {
            Raw::Unix(s) => s,
            Raw::Tcp(s) => s,
        }
    }

    fn send(&mut self, bytes: &[u8]) {
        // The victim may already have hung up on us: that is fine.
        let _ = match self {
            Raw::Unix(s) => s.write_all(bytes),
            Raw::Tcp(s) => s.write_all(bytes),
        };
    }

    /// Reads what the victim sends until it hangs up; panics if it never does.
    fn read_until_closed(&mut self) -> Vec<u8> {
        let mut all = Vec::new();
        let mut buf = [0u8; 4096];
        let t0 = Instant::now();
        loop {
            let r = match self {
                Raw::Unix(s) => s.read(&mut buf),
                Raw::Tcp(s) => s.read(&mut buf),
            };
            match r {
                Ok(0) => return all,
                Ok(n) => all.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return all,
                Err(e) => panic!("victim did not hang up after {:?}: {e}", t0.elapsed()),
            }
        }
    }

    /// Sends an import request for everything and reads the grant (descriptors and all).
    fn import(&mut self, x: &Export, access: u64) {
        self.send(&frame(IMPORT_REQ, 0, x.id().get().into(), access));
        let mut grant = [0u8; 24];
        match self {
            Raw::Unix(s) => s.read_exact(&mut grant).unwrap(),
            Raw::Tcp(s) => s.read_exact(&mut grant).unwrap(),
        }
        assert_eq!(grant[4], IMPORT_OK, "expected a grant, got {grant:?}");
    }
}

trait Stream {
    fn set_read_timeout(&self, t: Option<Duration>) -> std::io::Result<()>;
}
impl Stream for UnixStream {
    fn set_read_timeout(&self, t: Option<Duration>) -> std::io::Result<()> {
        UnixStream::set_read_timeout(self, t)
    }
}
impl Stream for TcpStream {
    fn set_read_timeout(&self, t: Option<Duration>) -> std::io::Result<()> {
        TcpStream::set_read_timeout(self, t)
    }
}

/// The victim still grants imports and moves data both ways.
fn still_serves(ep: &Endpoint, x: &Export) {
    let imp = Import::open(ep.addr(), x.id(), Access::ALL).unwrap();
    imp.write_at(1000, b"still here", Notify::Yes).unwrap();
    let t0 = Instant::now();
    loop {
        assert!(t0.elapsed() < WAIT, "no notification after an attack");
        if x.wait(WAIT).unwrap() == Wake::Notified {
            break;
        }
    }
    let mut got = [0u8; 10];
    imp.read_at(1000, &mut got).unwrap();
    assert_eq!(&got, b"still here");
    assert_no_panics();
}

fn region_is_zero(x: &Export, from: u64, len: usize) -> bool {
    let mut buf = vec![0u8; len];
    x.read_at(from, &mut buf).unwrap();
    buf.iter().all(|b| *b == 0)
}

test_support::both_backends!(
    garbage_header_costs_only_that_connection,
    truncated_header_costs_only_that_connection,
    malformed_import_requests_are_dropped,
    silent_peer_is_dropped_after_the_handshake_timeout,
    data_frames_out_of_range_or_out_of_rights_are_dropped,
);

fn garbage_header_costs_only_that_connection(b: Backend) {
    let (ep, x) = victim(b);
    let mut raw = Raw::connect(&ep);
    raw.send(&(0..=255u8).cycle().take(100).collect::<Vec<_>>());
    assert!(raw.read_until_closed().is_empty());
    still_serves(&ep, &x);
}

fn truncated_header_costs_only_that_connection(b: Backend) {
    let (ep, x) = victim(b);
    // A greeting cut short.
    let mut raw = Raw::connect(&ep);
    let id: u64 = x.id().get().into();
    raw.send(&[frame(IMPORT_REQ, 0, id | 1000 << 32, 3), b"short".to_vec()].concat());
    raw.shutdown_write();
    assert!(raw.read_until_closed().is_empty());
    assert!(x.take_greeting().is_none());
    let mut raw = Raw::connect(&ep);
    raw.send(&frame(IMPORT_REQ, 0, x.id().get().into(), 3)[..13]);
    drop(raw);
    let mut raw = Raw::connect(&ep);
    raw.send(b"VMNC");
    raw.shutdown_write();
    assert!(raw.read_until_closed().is_empty());
    still_serves(&ep, &x);
}

fn malformed_import_requests_are_dropped(b: Backend) {
    let (ep, x) = victim(b);
    let id: u64 = x.id().get().into();
    for bad in [
        frame(IMPORT_REQ, 0, 0, 3),               // export id zero
        frame(IMPORT_REQ, 0, 1 << 32, 3),         // export id beyond u32
        frame(IMPORT_REQ, 0, id, 0),              // no access
        frame(IMPORT_REQ, 0, id, 8),              // unknown access bits
        frame(IMPORT_REQ, 0, id | 1025 << 32, 3), // greeting beyond the limit
        frame(IMPORT_REQ, 1, id, 3),              // flags
        frame(DEPOSIT, 0, 0, 0),                  // not an import request
        frame(IMPORT_OK, 0, 0, 4096),             // the exporter's line
        frame(99, 0, 0, 0),                       // unknown kind
    ] {
        let mut raw = Raw::connect(&ep);
        raw.send(&bad);
        assert!(
            raw.read_until_closed().is_empty(),
            "victim answered {bad:?}"
        );
    }
    still_serves(&ep, &x);
}

fn silent_peer_is_dropped_after_the_handshake_timeout(b: Backend) {
    let (ep, x) = victim(b);
    let mut raw = Raw::connect(&ep);
    let t0 = Instant::now();
    assert!(raw.read_until_closed().is_empty());
    assert!(
        t0.elapsed() >= Duration::from_secs(4),
        "dropped after only {:?}",
        t0.elapsed()
    );
    still_serves(&ep, &x);
}

fn data_frames_out_of_range_or_out_of_rights_are_dropped(b: Backend) {
    let (ep, x) = victim(b);
    let attacks: Vec<(u64, Vec<u8>)> = vec![
        (
            3,
            [frame(DEPOSIT, 0, REGION - 10, 100), vec![0xAA; 100]].concat(),
        ),
        (
            3,
            [frame(DEPOSIT, 0, u64::MAX - 1, 4), vec![0xAA; 4]].concat(),
        ),
        (
            3,
            [frame(DEPOSIT, 0, 0, REGION + 1), vec![0xAA; 64]].concat(),
        ),
        (3, frame(FETCH_REQ, 0, REGION - 1, 2)),
        (3, frame(5, 0, REGION, 1)), // word past the end
        (3, frame(5, 0, 12, 1)),     // misaligned word
        (2, [frame(DEPOSIT, 0, 0, 8), vec![0xAA; 8]].concat()), // fetch-only import
        (1, frame(FETCH_REQ, 0, 0, 8)), // deposit-only import
        (3, frame(FETCH_RESP, 0, 0, 8)), // the exporter's line
        // A word trailer naming a misaligned or out-of-range word (a zero payload: the payload
        // of a valid range may land, the word must not).
        (
            3,
            [
                frame(DEPOSIT, 2, 0, 4),
                vec![0; 4],
                3u64.to_le_bytes().to_vec(),
                vec![0xAA; 8],
            ]
            .concat(),
        ),
        (
            3,
            [
                frame(DEPOSIT, 2, 0, 4),
                vec![0; 4],
                REGION.to_le_bytes().to_vec(),
                vec![0xAA; 8],
            ]
            .concat(),
        ),
    ];
    for (access, attack) in attacks {
        let mut raw = Raw::connect(&ep);
        raw.import(&x, access);
        raw.send(&attack);
        let answer = raw.read_until_closed();
        assert!(answer.is_empty(), "victim answered {answer:?}");
        assert_eq!(x.wait(WAIT).unwrap(), Wake::ImporterLeft);
        assert!(
            region_is_zero(&x, 0, REGION as usize),
            "an attack wrote into the region"
        );
    }
    still_serves(&ep, &x);
}

#[test]
fn tcp_peer_that_vanishes_mid_deposit_costs_only_its_connection() {
    let (ep, x) = victim(Backend::Tcp);
    let mut raw = Raw::connect(&ep);
    raw.import(&x, 3);
    raw.send(&frame(DEPOSIT, 1, 0, 4000));
    raw.send(&[0x55; 100]);
    drop(raw);
    assert_eq!(x.wait(WAIT).unwrap(), Wake::ImporterLeft);
    // The bytes that arrived may have landed (a lying peer can corrupt data, nothing else);
    // none beyond them did, and no notification was raised.
    assert!(region_is_zero(&x, 100, (REGION - 100) as usize));
    assert!(x.try_wait().is_none());
    still_serves(&ep, &x);
}

#[test]
fn shm_importer_that_talks_after_the_grant_is_cut_off() {
    let (ep, x) = victim(Backend::Shm);
    let mut raw = Raw::connect(&ep);
    raw.import(&x, 3);
    assert_eq!(x.importers(), 1);
    // On shm, data moves through memory; any frame on the control socket is a violation.
    raw.send(&[frame(DEPOSIT, 0, 0, 4), vec![1, 2, 3, 4]].concat());
    raw.read_until_closed();
    assert_eq!(x.wait(WAIT).unwrap(), Wake::ImporterLeft);
    assert_eq!(x.importers(), 0);
    assert!(region_is_zero(&x, 0, REGION as usize));
    still_serves(&ep, &x);
}

// ---- Lying exporters: the importer is the victim. ----

/// A fake shm exporter: answers one import with `reply` and the descriptors `fds`.
fn fake_shm_exporter(
    reply: Option<Vec<u8>>,
    fds: Vec<OwnedFd>,
) -> (NodeAddr, std::thread::JoinHandle<()>) {
    watch_panics();
    let name = unique_name();
    let sa = UnixAddr::from_abstract_name(format!("vmmc-nic/{name}")).unwrap();
    let l = UnixListener::bind_addr(&sa).unwrap();
    let t = std::thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        let mut req = [0u8; 24];
        s.read_exact(&mut req).unwrap();
        match reply {
            Some(bytes) => {
                let raw: Vec<i32> = fds.iter().map(|f| f.as_raw_fd()).collect();
                let cmsg = if raw.is_empty() {
                    vec![]
                } else {
                    vec![ControlMessage::ScmRights(&raw)]
                };
                sendmsg::<()>(
                    s.as_raw_fd(),
                    &[IoSlice::new(&bytes)],
                    &cmsg,
                    MsgFlags::empty(),
                    None,
                )
                .unwrap();
                // Stay until the importer hangs up.
                let _ = s.read(&mut [0u8; 1]);
            }
            None => std::thread::sleep(Duration::from_millis(1500)),
        }
    });
    (format!("shm:{name}").parse().unwrap(), t)
}

fn memfd(len: u64, seal: bool) -> OwnedFd {
    use nix::fcntl::{fcntl, FcntlArg, SealFlag};
    use nix::sys::memfd::{memfd_create, MFdFlags};
    let fd = memfd_create(c"fake", MFdFlags::MFD_ALLOW_SEALING).unwrap();
    let f = std::fs::File::from(fd);
    f.set_len(len).unwrap();
    if seal {
        fcntl(
            &f,
            FcntlArg::F_ADD_SEALS(SealFlag::F_SEAL_SHRINK | SealFlag::F_SEAL_GROW),
        )
        .unwrap();
    }
    f.into()
}

fn eventfd() -> OwnedFd {
    nix::sys::eventfd::EventFd::new().unwrap().into()
}

fn import_err(addr: &NodeAddr) -> Error {
    Import::open_timeout(
        addr,
        ExportId::new(1).unwrap(),
        Access::ALL,
        Duration::from_millis(500),
    )
    .unwrap_err()
}

#[test]
fn shm_importer_refuses_lying_grants() {
    let ok = frame(IMPORT_OK, 0, 0, REGION);
    // (what, the grant sent, the descriptors with it, a word the error must contain)
    type Case = (&'static str, Option<Vec<u8>>, Vec<OwnedFd>, &'static str);
    let cases: Vec<Case> = vec![
        ("no descriptors", Some(ok.clone()), vec![], "descriptors"),
        (
            "one descriptor",
            Some(ok.clone()),
            vec![memfd(REGION, true)],
            "descriptors",
        ),
        (
            "unsealed memfd",
            Some(ok.clone()),
            vec![memfd(REGION, false), eventfd()],
            "sealed",
        ),
        (
            "smaller memfd",
            Some(ok.clone()),
            vec![memfd(REGION / 2, true), eventfd()],
            "announced",
        ),
        (
            "larger memfd",
            Some(ok.clone()),
            vec![memfd(REGION * 2, true), eventfd()],
            "announced",
        ),
        (
            "pipe as region",
            Some(ok.clone()),
            vec![nix::unistd::pipe().unwrap().0, eventfd()],
            "memfd",
        ),
        (
            "pipe as eventfd",
            Some(ok.clone()),
            vec![memfd(REGION, true), nix::unistd::pipe().unwrap().1],
            "not an eventfd",
        ),
        (
            "zero length",
            Some(frame(IMPORT_OK, 0, 0, 0)),
            vec![memfd(REGION, true), eventfd()],
            "size",
        ),
        ("garbage", Some(vec![0xEE; 24]), vec![], "magic"),
        (
            "wrong kind",
            Some(frame(DEPOSIT, 0, 0, 0)),
            vec![],
            "expected an import answer",
        ),
    ];
    for (what, reply, fds, expect) in cases {
        let (addr, t) = fake_shm_exporter(reply, fds);
        let err = import_err(&addr);
        assert!(matches!(err, Error::Protocol { .. }), "{what}: {err}");
        assert!(err.to_string().contains(expect), "{what}: {err}");
        t.join().unwrap();
    }
    let (addr, t) = fake_shm_exporter(None, vec![]);
    let err = import_err(&addr);
    assert!(matches!(err, Error::Timeout(_)), "{err}");
    t.join().unwrap();
    // An exporter that hangs up in the middle of the import.
    let name = unique_name();
    let l =
        UnixListener::bind_addr(&UnixAddr::from_abstract_name(format!("vmmc-nic/{name}")).unwrap())
            .unwrap();
    let t = std::thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        s.read_exact(&mut [0u8; 24]).unwrap();
        s.write_all(&frame(IMPORT_OK, 0, 0, REGION)[..10]).unwrap();
    });
    let err = import_err(&format!("shm:{name}").parse().unwrap());
    assert!(matches!(err, Error::PeerGone(_)), "{err}");
    t.join().unwrap();
    assert_no_panics();
}

/// A fake tcp exporter that runs `script` on its one connection.
fn fake_tcp_exporter(
    script: impl FnOnce(TcpStream) + Send + 'static,
) -> (NodeAddr, std::thread::JoinHandle<()>) {
    watch_panics();
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = format!("tcp:{}", l.local_addr().unwrap()).parse().unwrap();
    let t = std::thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        let mut req = [0u8; 24];
        s.read_exact(&mut req).unwrap();
        script(s)
    });
    (addr, t)
}

fn drain(mut s: TcpStream) {
    let _ = std::io::copy(&mut s, &mut std::io::sink());
}

#[test]
fn tcp_importer_refuses_lying_grants() {
    for (reply, expect) in [
        (vec![0xEE; 24], "magic"),
        (frame(IMPORT_OK, 0, 0, 0), "size"),
        (frame(IMPORT_OK, 0, 0, 1 << 41), "beyond"),
        (frame(IMPORT_OK, 0, 7, 4096), "mirror"),
        (frame(FETCH_RESP, 0, 0, 0), "expected an import answer"),
    ] {
        let (addr, t) = fake_tcp_exporter(move |mut s| {
            s.write_all(&reply).unwrap();
            drain(s);
        });
        let err = import_err(&addr);
        assert!(matches!(err, Error::Protocol { .. }), "{err}");
        assert!(err.to_string().contains(expect), "{err}");
        t.join().unwrap();
    }
    // Silence, and a hang-up, during the import.
    let (addr, t) = fake_tcp_exporter(|s| {
        std::thread::sleep(Duration::from_millis(800));
        drop(s)
    });
    assert!(matches!(import_err(&addr), Error::Timeout(_)));
    t.join().unwrap();
    let (addr, t) = fake_tcp_exporter(drop);
    assert!(matches!(import_err(&addr), Error::PeerGone(_)));
    t.join().unwrap();
    assert_no_panics();
}

fn granted_import(
    script: impl FnOnce(TcpStream) + Send + 'static,
) -> (Import, std::thread::JoinHandle<()>) {
    let (addr, t) = fake_tcp_exporter(move |mut s| {
        s.write_all(&frame(IMPORT_OK, 0, 0, REGION)).unwrap();
        script(s)
    });
    let imp = Import::open_timeout(
        &addr,
        ExportId::new(1).unwrap(),
        Access::ALL,
        Duration::from_millis(500),
    )
    .unwrap();
    (imp, t)
}

#[test]
fn tcp_importer_survives_lying_fetch_responses() {
    // Wrong length, garbage, and a hang-up halfway through the payload.
    for (reply, want_protocol) in [
        ([frame(FETCH_RESP, 0, 0, 16), vec![0; 16]].concat(), true),
        (vec![0xEE; 40], true),
        ([frame(FETCH_RESP, 0, 0, 8), vec![1, 2, 3]].concat(), false),
    ] {
        let (imp, t) = granted_import(move |mut s| {
            let mut req = [0u8; 24];
            s.read_exact(&mut req).unwrap();
            s.write_all(&reply).unwrap();
            drop(s);
        });
        let mut buf = [0u8; 8];
        let err = imp.read_at(0, &mut buf).unwrap_err();
        if want_protocol {
            assert!(matches!(err, Error::Protocol { .. }), "{err}");
        } else {
            assert!(matches!(err, Error::PeerGone(_)), "{err}");
        }
        // The connection is out of step now: the import stays dead.
        assert!(!imp.is_alive());
        assert!(matches!(
            imp.read_at(0, &mut buf).unwrap_err(),
            Error::PeerGone(_)
        ));
        t.join().unwrap();
    }
    assert_no_panics();
}

#[test]
fn tcp_importer_times_out_on_a_silent_or_stalled_exporter() {
    // A fetch that is never answered.
    let (imp, t) = granted_import(|s| {
        std::thread::sleep(Duration::from_millis(1500));
        drop(s)
    });
    let t0 = Instant::now();
    assert!(matches!(
        imp.read_at(0, &mut [0u8; 8]).unwrap_err(),
        Error::Timeout(_)
    ));
    assert!(t0.elapsed() < Duration::from_secs(5));
    t.join().unwrap();

    // An exporter that stops reading: deposits fill the socket buffers, then time out.
    let (imp, t) = granted_import(|s| {
        std::thread::sleep(Duration::from_secs(3));
        drop(s)
    });
    let data = vec![0u8; REGION as usize];
    let t0 = Instant::now();
    let err = loop {
        if let Err(e) = imp.write_at(0, &data, Notify::No) {
            break e;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "deposits never blocked"
        );
    };
    assert!(matches!(err, Error::Timeout(_)), "{err}");
    t.join().unwrap();
    assert_no_panics();
}

#[test]
fn out_of_range_local_calls_on_an_export_are_errors() {
    let (_ep, x) = victim(Backend::Shm);
    assert!(matches!(
        x.write_at(REGION, b"x").unwrap_err(),
        Error::OutOfRange { .. }
    ));
    assert!(matches!(
        x.read_at(u64::MAX, &mut [0]).unwrap_err(),
        Error::OutOfRange { .. }
    ));
    assert!(matches!(x.load_u64(7).unwrap_err(), Error::Misaligned(7)));
    assert!(matches!(
        x.store_u64(REGION, 0).unwrap_err(),
        Error::OutOfRange { .. }
    ));
    let held = x.addr().clone();
    assert!(matches!(
        Endpoint::bind(&held).unwrap_err(),
        Error::AddrInUse(_)
    ));
    let tcp = Endpoint::bind(&"tcp:127.0.0.1:0".parse().unwrap()).unwrap();
    assert!(matches!(
        Endpoint::bind(tcp.addr()).unwrap_err(),
        Error::AddrInUse(_)
    ));
}
