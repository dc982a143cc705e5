//! One behavioural suite, run against both backends, with the two sides in two real
//! processes.

mod common;

use std::time::{Duration, Instant};

use common::*;
use vmmc_nic::{Access, Endpoint, Error, ExportId, Import, Notify, PeerMatch, Permissions, Wake};

const WAIT: Duration = Duration::from_secs(10);

test_support::both_backends!(
    deposit_fetch_and_notify_round_trip,
    child_exports_parent_imports,
    permission_and_existence_are_checked,
    exporter_death_fails_operations,
    importer_death_wakes_the_exporter,
    revoking_an_export_cuts_importers_off,
    a_256_mib_region,
    concurrent_depositors_into_disjoint_ranges,
    local_range_errors_leave_the_import_usable,
    notifications_can_be_polled_and_time_out,
    counters_count_software_copies,
    mirrored_tails_read_and_write_across_the_wrap,
    greetings_reach_the_exporter_with_the_kernel_identity,
    an_export_handed_to_another_process_keeps_its_importers,
    an_import_handed_to_another_process_keeps_depositing,
    deposits_from_a_file_land_exactly,
);

/// A child that takes over whatever is handed to it at an abstract socket name.
fn spawn_adopter() -> (Peer, std::os::unix::net::UnixStream) {
    use std::os::linux::net::SocketAddrExt;
    let name = format!(
        "adopt-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    );
    let name = name.replace(['(', ')'], "");
    let (p, ready) = Peer::spawn("common::child_process", &["adopt", &name]);
    assert_eq!(ready, "READY");
    let sa = std::os::unix::net::SocketAddr::from_abstract_name(&name).unwrap();
    let s = std::os::unix::net::UnixStream::connect_addr(&sa).unwrap();
    (p, s)
}

fn an_export_handed_to_another_process_keeps_its_importers(b: Backend) {
    let ep = Endpoint::bind(&fresh(b)).unwrap();
    let x = ep.export(64 * 1024, Permissions::open()).unwrap();
    let (mut depositor, ready) = spawn_importer(ep.addr(), x.id(), "all");
    assert_eq!(ready, "READY 65536");
    depositor.ok("write 0 6f6e65 n");
    assert_eq!(x.wait(WAIT).unwrap(), Wake::Notified);
    let (mut heir, sock) = spawn_adopter();
    vmmc_nic::send_handover(&sock, b"", vec![x.hand_over().unwrap()], vec![]).unwrap();
    assert_eq!(heir.recv(), "ADOPTED");
    // The importer carries on as if nothing happened; the heir sees its deposits and what was
    // there before.
    depositor.ok("write 100 74776f n");
    assert_eq!(heir.ok("wait 10000"), "notified");
    assert_eq!(heir.ok("read 0 3"), hex_encode(b"one"));
    assert_eq!(heir.ok("read 100 3"), hex_encode(b"two"));
    heir.ok("write 200 74687265");
    assert_eq!(depositor.ok("read 200 4"), hex_encode(b"thre"));
    assert_eq!(depositor.ok("alive"), "true");
    assert_eq!(heir.ok("importers"), "1");
    // This process no longer serves it: new imports are refused here.
    drop(ep);
    // When the heir dies, the importer learns it.
    heir.kill();
    let t0 = Instant::now();
    while depositor.ok("alive") == "true" {
        assert!(
            t0.elapsed() < WAIT,
            "the importer never noticed the heir's death"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn an_import_handed_to_another_process_keeps_depositing(b: Backend) {
    let (mut exporter, addr, id) = spawn_exporter(b, 64 * 1024, "open");
    let imp = Import::open(&addr, id, Access::ALL).unwrap();
    imp.write_at(0, b"mine", Notify::Yes).unwrap();
    assert_eq!(exporter.ok("wait 10000"), "notified");
    let (mut heir, sock) = spawn_adopter();
    vmmc_nic::send_handover(&sock, b"", vec![], vec![imp.hand_over().unwrap()]).unwrap();
    assert_eq!(heir.recv(), "ADOPTED");
    heir.ok("write 4 7468656972 n");
    assert_eq!(exporter.ok("wait 10000"), "notified");
    assert_eq!(exporter.ok("read 0 9"), hex_encode(b"minetheir"));
    assert_eq!(heir.ok("read 0 4"), hex_encode(b"mine"));
    // No departure was seen for the move; the heir's death is one.
    assert!(exporter.cmd("wait 200").starts_with("ERR"));
    assert_eq!(exporter.ok("importers"), "1");
    heir.kill();
    assert_eq!(exporter.ok("wait 10000"), "left");
}

fn mirrored_tails_read_and_write_across_the_wrap(b: Backend) {
    const LEN: u64 = 4 * 4096;
    const MIRROR: u64 = 3 * 4096; // a ring at [4096, 16384), mapped again at [16384, 28672)
    let (mut child, addr, id) = spawn_mirrored_exporter(b, LEN, MIRROR, "open");
    let imp = Import::open(&addr, id, Access::ALL).unwrap();
    assert_eq!((imp.len(), imp.mirror()), (LEN, MIRROR));
    // A deposit that runs past the end of the ring lands at the ring's start.
    imp.write_at(LEN - 3, b"abcdef", Notify::Yes).unwrap();
    assert_eq!(child.ok("wait 10000"), "notified");
    assert_eq!(child.ok(&format!("read {} 3", LEN - 3)), hex_encode(b"abc"));
    assert_eq!(
        child.ok(&format!("read {} 3", LEN - MIRROR)),
        hex_encode(b"def")
    );
    assert_eq!(
        child.ok(&format!("read {} 6", LEN - 3)),
        hex_encode(b"abcdef")
    );
    let mut back = [0u8; 6];
    imp.read_at(LEN - 3, &mut back).unwrap();
    assert_eq!(&back, b"abcdef");
    assert!(imp.write_at(LEN + MIRROR - 2, b"xyz", Notify::No).is_err());
    match b {
        Backend::Shm => {
            // In place: one span across the wrap.
            let mut s = imp.bytes_mut(LEN - 2, 4).unwrap();
            assert_eq!(s.copy_from(b"WXYZ"), 4);
            assert_eq!(s.as_shared().to_vec(), b"WXYZ");
            assert!(s.get_mut(3..5).is_none(), "beyond the span");
            assert_eq!(s.get_mut(1..3).unwrap().as_shared().to_vec(), b"XY");
            assert_eq!(
                child.ok(&format!("read {} 2", LEN - MIRROR)),
                hex_encode(b"YZ")
            );
        }
        Backend::Tcp => assert!(matches!(
            imp.bytes_mut(0, 1).unwrap_err(),
            Error::NeedsSharedMemory(_)
        )),
    }
    // Mirrors must be whole pages inside the region.
    let ep = Endpoint::bind(&fresh(b)).unwrap();
    for (len, mirror) in [(4096, 8192), (4096, 100), (5000, 4096)] {
        assert!(matches!(
            ep.export_mirrored(len, mirror, Permissions::open())
                .unwrap_err(),
            Error::BadMirror { .. }
        ));
    }
}

fn greetings_reach_the_exporter_with_the_kernel_identity(b: Backend) {
    let ep = Endpoint::bind(&fresh(b)).unwrap();
    let x = ep.export(4096, Permissions::open()).unwrap();
    let (mut child, ready) =
        spawn_greeting_importer(ep.addr(), x.id(), "deposit", b"hello, listener");
    assert_eq!(ready, "READY 4096");
    assert_eq!(x.wait(WAIT).unwrap(), Wake::Notified);
    let g = x.take_greeting().unwrap();
    assert_eq!(g.bytes, b"hello, listener");
    match (&g.peer, b) {
        (vmmc_nic::PeerIdentity::Local { pid, .. }, Backend::Shm) => {
            assert_eq!(*pid as u32, child.pid())
        }
        (vmmc_nic::PeerIdentity::Remote(sa), Backend::Tcp) => assert!(sa.ip().is_loopback()),
        other => panic!("unexpected identity {other:?}"),
    }
    assert!(x.take_greeting().is_none());
    // The importer learns who exports, too.
    let exporter = child.ok("exporter");
    match b {
        Backend::Shm => assert!(
            exporter.contains(&format!("pid: {}", std::process::id())),
            "{exporter}"
        ),
        Backend::Tcp => assert!(exporter.contains("127.0.0.1"), "{exporter}"),
    }
    // Too long a greeting is refused before it is sent.
    let opts = vmmc_nic::ImportOptions {
        greeting: vec![0; vmmc_nic::MAX_GREETING_LEN + 1],
        ..Default::default()
    };
    assert!(matches!(
        Import::open_with(ep.addr(), x.id(), Access::DEPOSIT, &opts).unwrap_err(),
        Error::GreetingTooLong(_)
    ));
    // A greeting lasts as long as its import: dropping it ends the import.
    assert_eq!(child.ok("alive"), "true");
    drop(g);
    let t0 = Instant::now();
    while child.ok("alive") == "true" {
        assert!(
            t0.elapsed() < WAIT,
            "dropping the greeting did not end its import"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    // A full queue refuses further greetings, and frees up as they are dropped. Local root
    // counts against the total only; everyone behind one address shares one peer's share.
    let limit = match b {
        Backend::Shm => vmmc_nic::MAX_PENDING_GREETINGS,
        Backend::Tcp => vmmc_nic::MAX_PENDING_GREETINGS_PER_PEER,
    };
    let opts = vmmc_nic::ImportOptions {
        greeting: b"g".to_vec(),
        ..Default::default()
    };
    let held: Vec<Import> = (0..limit)
        .map(|_| Import::open_with(ep.addr(), x.id(), Access::DEPOSIT, &opts).unwrap())
        .collect();
    assert!(matches!(
        Import::open_with(ep.addr(), x.id(), Access::DEPOSIT, &opts).unwrap_err(),
        Error::Busy(_)
    ));
    // Taking one is not enough: it still holds its import until dropped.
    let taken = x.take_greeting().unwrap();
    assert!(matches!(
        Import::open_with(ep.addr(), x.id(), Access::DEPOSIT, &opts).unwrap_err(),
        Error::Busy(_)
    ));
    drop(taken);
    Import::open_with(ep.addr(), x.id(), Access::DEPOSIT, &opts).unwrap();
    drop(held);
}

/// Parent exports; a child imports and deposits, fetches and stores words.
fn deposit_fetch_and_notify_round_trip(b: Backend) {
    let ep = Endpoint::bind(&fresh(b)).unwrap();
    let x = ep.export(64 * 1024, Permissions::open()).unwrap();
    let (mut child, ready) = spawn_importer(ep.addr(), x.id(), "all");
    assert_eq!(ready, "READY 65536");

    child.ok("write 100 68656c6c6f n");
    assert_eq!(x.wait(WAIT).unwrap(), Wake::Notified);
    let mut got = [0u8; 5];
    x.read_at(100, &mut got).unwrap();
    assert_eq!(&got, b"hello");

    x.write_at(65530, b"tail!!").unwrap();
    assert_eq!(child.ok("read 65530 6"), hex_encode(b"tail!!"));

    child.ok("store 4096 12345678901 n");
    assert_eq!(x.wait(WAIT).unwrap(), Wake::Notified);
    assert_eq!(x.load_u64(4096).unwrap(), 12345678901);
    x.store_u64(8192, 42).unwrap();
    assert_eq!(child.ok("load 8192"), "42");

    // A deposit without notification lands silently; the receiver finds it by looking (on
    // tcp it lands asynchronously, so look until it is there).
    child.ok("write 0 01020304");
    let t0 = Instant::now();
    let mut four = [0u8; 4];
    while four != [1, 2, 3, 4] {
        assert!(t0.elapsed() < WAIT, "silent deposit never landed");
        x.read_at(0, &mut four).unwrap();
    }
    assert!(x.try_wait().is_none());
}

/// The mirror image: the exporter is the child, the parent imports.
fn child_exports_parent_imports(b: Backend) {
    let (mut child, addr, id) = spawn_exporter(b, 1 << 20, "open");
    let imp = Import::open(&addr, id, Access::ALL).unwrap();
    assert_eq!(imp.len(), 1 << 20);
    let data = pattern(3, 5000, 100_000);
    imp.write_at(5000, &data, Notify::Yes).unwrap();
    assert_eq!(child.ok("wait 10000"), "notified");
    assert_eq!(
        child.ok("sum 5000 100000"),
        fnv(&data, FNV_START).to_string()
    );
    child.ok("fill 200000 300000 9");
    let mut back = vec![0u8; 300_000];
    imp.read_at(200_000, &mut back).unwrap();
    assert_eq!(back, pattern(9, 200_000, 300_000));
    let io = [
        std::io::IoSlice::new(b"ab"),
        std::io::IoSlice::new(b""),
        std::io::IoSlice::new(b"cde"),
    ];
    imp.write_vectored_at(10, &io, Notify::Yes).unwrap();
    assert_eq!(child.ok("wait 10000"), "notified");
    assert_eq!(child.ok("read 10 5"), hex_encode(b"abcde"));
    assert_eq!(child.ok("importers"), "1");
    // Data and the word that publishes it, in one call (one frame on tcp).
    imp.write_then_store(300, b"xyz", 4096, 77, Notify::Yes)
        .unwrap();
    assert_eq!(child.ok("wait 10000"), "notified");
    assert_eq!(child.ok("load 4096"), "77");
    assert_eq!(child.ok("read 300 3"), hex_encode(b"xyz"));
    assert!(matches!(
        imp.write_then_store(0, b"x", 3, 1, Notify::No).unwrap_err(),
        Error::Misaligned(3)
    ));
}

fn permission_and_existence_are_checked(b: Backend) {
    let (mut none, addr, id) = spawn_exporter(b, 4096, "none");
    let err = Import::open(&addr, id, Access::DEPOSIT).unwrap_err();
    assert!(matches!(err, Error::PermissionDenied { .. }), "{err}");
    assert!(err.to_string().contains("refuses deposit access"), "{err}");
    let missing = ExportId::new(id.get() + 100).unwrap();
    let err = Import::open(&addr, missing, Access::DEPOSIT).unwrap_err();
    assert!(matches!(err, Error::NoSuchExport { .. }), "{err}");
    none.kill();

    let (_dep, addr, id) = spawn_exporter(b, 4096, "deposit");
    assert!(matches!(
        Import::open(&addr, id, Access::FETCH).unwrap_err(),
        Error::PermissionDenied { .. }
    ));
    assert!(matches!(
        Import::open(&addr, id, Access::ALL).unwrap_err(),
        Error::PermissionDenied { .. }
    ));
    let imp = Import::open(&addr, id, Access::DEPOSIT).unwrap();
    imp.write_at(0, b"x", Notify::No).unwrap();
    let err = imp.read_at(0, &mut [0u8; 1]).unwrap_err();
    assert!(matches!(err, Error::NotImported { .. }), "{err}");

    let (_fetch, addr, id) = spawn_exporter(b, 4096, "fetch");
    let imp = Import::open(&addr, id, Access::FETCH).unwrap();
    imp.read_at(0, &mut [0u8; 16]).unwrap();
    assert!(matches!(
        imp.write_at(0, b"x", Notify::No).unwrap_err(),
        Error::NotImported { .. }
    ));

    // Rules that name someone else refuse us.
    let ep = Endpoint::bind(&fresh(b)).unwrap();
    let stranger = Permissions::none()
        .allow(Access::ALL, PeerMatch::Uid(54321))
        .allow(Access::ALL, PeerMatch::Host("192.0.2.1".parse().unwrap()));
    let x = ep.export(4096, stranger).unwrap();
    let (_child, answer) = spawn_importer(ep.addr(), x.id(), "deposit");
    assert!(
        answer.starts_with("ERR") && answer.contains("refuses"),
        "{answer}"
    );
    let mine = match b {
        Backend::Shm => PeerMatch::current_user(),
        Backend::Tcp => PeerMatch::Host("127.0.0.1".parse().unwrap()),
    };
    let y = ep
        .export(4096, Permissions::none().allow(Access::DEPOSIT, mine))
        .unwrap();
    let (_child, answer) = spawn_importer(ep.addr(), y.id(), "deposit");
    assert_eq!(answer, "READY 4096");

    // Nobody listening.
    let nowhere: vmmc_nic::NodeAddr = b.nowhere().parse().unwrap();
    let err = Import::open(&nowhere, id, Access::DEPOSIT).unwrap_err();
    assert!(matches!(err, Error::NoEndpoint(_)), "{err}");
}

fn exporter_death_fails_operations(b: Backend) {
    let (mut child, addr, id) = spawn_exporter(b, 4096, "open");
    let imp = Import::open(&addr, id, Access::ALL).unwrap();
    imp.write_at(0, b"before", Notify::No).unwrap();
    child.kill();
    let t0 = Instant::now();
    while imp.is_alive() {
        assert!(
            t0.elapsed() < WAIT,
            "the importer never noticed the exporter's death"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let err = imp.write_at(0, b"after", Notify::Yes).unwrap_err();
    assert!(matches!(err, Error::PeerGone(_)), "{err}");
    assert!(matches!(
        imp.read_at(0, &mut [0; 4]).unwrap_err(),
        Error::PeerGone(_)
    ));
    assert!(matches!(
        imp.store_u64(0, 1, Notify::No).unwrap_err(),
        Error::PeerGone(_)
    ));

    // And while depositing in a loop in another process.
    let (_exp, addr, id) = spawn_exporter(b, 4096, "open");
    let (mut depositor, ready) = spawn_importer(&addr, id, "deposit");
    assert_eq!(ready, "READY 4096");
    writeln_cmd(&mut depositor, "deposit-until-error");
    std::thread::sleep(Duration::from_millis(100));
    drop(_exp);
    let answer = depositor.recv();
    assert!(
        answer.starts_with("ERR") && answer.contains("gone"),
        "{answer}"
    );
}

fn writeln_cmd(p: &mut Peer, line: &str) {
    // Sends without waiting for the answer.
    let _ = p.cmd_nowait(line);
}

fn importer_death_wakes_the_exporter(b: Backend) {
    let ep = Endpoint::bind(&fresh(b)).unwrap();
    let x = ep.export(4096, Permissions::open()).unwrap();
    let (mut child, ready) = spawn_importer(ep.addr(), x.id(), "all");
    assert_eq!(ready, "READY 4096");
    assert_eq!(x.importers(), 1);
    child.kill();
    assert_eq!(x.wait(WAIT).unwrap(), Wake::ImporterLeft);
    assert_eq!(x.importers(), 0);
    assert!(matches!(
        x.wait(Duration::from_millis(20)),
        Err(Error::Timeout(_))
    ));
}

fn revoking_an_export_cuts_importers_off(b: Backend) {
    let ep = Endpoint::bind(&fresh(b)).unwrap();
    let x = ep.export(4096, Permissions::open()).unwrap();
    let id = x.id();
    let (mut child, _) = spawn_importer(ep.addr(), id, "all");
    child.ok("write 0 00");
    drop(x);
    let t0 = Instant::now();
    while child.ok("alive") == "true" {
        assert!(t0.elapsed() < WAIT, "importer still alive after revoke");
        std::thread::sleep(Duration::from_millis(5));
    }
    let answer = child.cmd("write 0 00");
    assert!(
        answer.starts_with("ERR") && answer.contains("gone"),
        "{answer}"
    );
    let err = Import::open(ep.addr(), id, Access::DEPOSIT).unwrap_err();
    assert!(matches!(err, Error::NoSuchExport { .. }), "{err}");
}

fn a_256_mib_region(b: Backend) {
    const LEN: u64 = 256 << 20;
    let (mut child, addr, id) = spawn_exporter(b, LEN, "open");
    let imp = Import::open(&addr, id, Access::ALL).unwrap();
    assert_eq!(imp.len(), LEN);
    let mut expect = FNV_START;
    let chunk = 4 << 20;
    let mut at = 0;
    while at < LEN {
        let data = pattern(11, at, chunk);
        imp.write_at(at, &data, Notify::No).unwrap();
        expect = fnv(&data, expect);
        at += chunk as u64;
    }
    assert_eq!(child.ok(&format!("sum 0 {LEN}")), expect.to_string());
    let mut last = vec![0u8; 1 << 20];
    imp.read_at(LEN - (1 << 20), &mut last).unwrap();
    assert_eq!(last, pattern(11, LEN - (1 << 20), 1 << 20));
    assert!(imp.write_at(LEN - 1, b"xy", Notify::No).is_err());
}

fn concurrent_depositors_into_disjoint_ranges(b: Backend) {
    const SLICE: u64 = 2 << 20;
    const CHILDREN: u64 = 3;
    const THREADS: u64 = 3;
    let ep = Endpoint::bind(&fresh(b)).unwrap();
    let x = ep
        .export(SLICE * (CHILDREN + THREADS), Permissions::open())
        .unwrap();
    let mut kids: Vec<Peer> = (0..CHILDREN)
        .map(|_| {
            let (p, ready) = spawn_importer(ep.addr(), x.id(), "deposit");
            assert!(ready.starts_with("READY"), "{ready}");
            p
        })
        .collect();
    for (k, p) in kids.iter_mut().enumerate() {
        let _ = p.cmd_nowait(&format!("fill {} {SLICE} {} n", k as u64 * SLICE, 100 + k));
    }
    // Meanwhile, several threads of this process share one import.
    let imp = Import::open(ep.addr(), x.id(), Access::DEPOSIT).unwrap();
    std::thread::scope(|s| {
        for t in 0..THREADS {
            let imp = &imp;
            s.spawn(move || {
                let off = (CHILDREN + t) * SLICE;
                for piece in 0..(SLICE / 65536) {
                    let at = off + piece * 65536;
                    imp.write_at(at, &pattern(200 + t, at, 65536), Notify::No)
                        .unwrap();
                }
            });
        }
    });
    for p in kids.iter_mut() {
        assert_eq!(p.recv(), "OK");
    }
    for k in 0..(CHILDREN + THREADS) {
        let seed = if k < CHILDREN {
            100 + k
        } else {
            200 + k - CHILDREN
        };
        let mut got = vec![0u8; SLICE as usize];
        x.read_at(k * SLICE, &mut got).unwrap();
        assert!(
            got == pattern(seed, k * SLICE, SLICE as usize),
            "slice {k} corrupted"
        );
    }
}

fn local_range_errors_leave_the_import_usable(b: Backend) {
    let (mut child, addr, id) = spawn_exporter(b, 4096, "open");
    let imp = Import::open(&addr, id, Access::ALL).unwrap();
    for (off, len) in [(4096, 1), (4000, 97), (u64::MAX, 2), (0, 4097)] {
        let err = imp.write_at(off, &vec![0; len], Notify::No).unwrap_err();
        assert!(matches!(err, Error::OutOfRange { .. }), "{err}");
        let err = imp.read_at(off, &mut vec![0; len]).unwrap_err();
        assert!(matches!(err, Error::OutOfRange { .. }), "{err}");
    }
    assert!(matches!(
        imp.store_u64(4, 1, Notify::No).unwrap_err(),
        Error::Misaligned(4)
    ));
    assert!(matches!(
        imp.load_u64(4096).unwrap_err(),
        Error::OutOfRange { .. }
    ));
    imp.write_at(4090, b"123456", Notify::Yes).unwrap();
    assert_eq!(child.ok("wait 10000"), "notified");
    assert_eq!(child.ok("read 4090 6"), hex_encode(b"123456"));
    assert!(child.cmd("read 4090 7").starts_with("ERR"));
}

fn notifications_can_be_polled_and_time_out(b: Backend) {
    let ep = Endpoint::bind(&fresh(b)).unwrap();
    let x = ep.export(4096, Permissions::open()).unwrap();
    let t0 = Instant::now();
    assert!(matches!(
        x.wait(Duration::from_millis(100)),
        Err(Error::Timeout(_))
    ));
    assert!(t0.elapsed() >= Duration::from_millis(100));
    let (mut child, _) = spawn_importer(ep.addr(), x.id(), "deposit");
    child.ok("write 0 aa n");
    let mut fds = [nix::poll::PollFd::new(
        x.notify_fd(),
        nix::poll::PollFlags::POLLIN,
    )];
    let n = nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(10_000u16)).unwrap();
    assert_eq!(n, 1);
    assert_eq!(x.try_wait(), Some(Wake::Notified));
    assert_eq!(x.try_wait(), None);
    // Several notifications before a wait coalesce into one wake-up.
    child.ok("write 0 bb n");
    child.ok("write 0 cc n");
    child.ok("write 0 dd n");
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(x.wait(WAIT).unwrap(), Wake::Notified);
    // A notification followed by the importer's exit: both are reported, in that order.
    child.ok("write 0 ee n");
    drop(child);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(x.wait(WAIT).unwrap(), Wake::Notified);
    assert_eq!(x.wait(WAIT).unwrap(), Wake::ImporterLeft);
}

fn counters_count_software_copies(b: Backend) {
    // Counters are per process, so both sides run in children of their own.
    let (mut exporter, addr, id) = spawn_exporter(b, 16 << 20, "open");
    let (mut importer, ready) = spawn_importer(&addr, id, "all");
    assert!(ready.starts_with("READY"), "{ready}");
    let counters = |p: &mut Peer| -> Vec<u64> {
        p.ok("counters")
            .split(' ')
            .map(|v| v.parse().unwrap())
            .collect()
    };
    assert_eq!(counters(&mut importer), vec![0, 0, 0]);
    importer.ok(&format!("fill 0 {} 5 n", 16 << 20));
    assert_eq!(exporter.ok("wait 10000"), "notified");
    let [deposited, fetched, copied] = counters(&mut importer)[..] else {
        panic!()
    };
    assert_eq!((deposited, fetched), (16 << 20, 0));
    match b {
        // The emulated DMA: exactly one copy per deposited byte, made by the sender.
        Backend::Shm => assert_eq!(copied, deposited),
        // The kernel moves the bytes; the importer's CPU copies none of them.
        Backend::Tcp => assert_eq!(copied, 0),
    }
    let expect = fnv(&pattern(5, 0, 16 << 20), FNV_START);
    assert_eq!(
        exporter.ok(&format!("sum 0 {}", 16 << 20)),
        expect.to_string()
    );
    // The exporter's `sum` read 16 MiB locally: counted as copied; it deposited and fetched
    // nothing.
    assert_eq!(counters(&mut exporter), vec![0, 0, 16 << 20]);
}

fn deposits_from_a_file_land_exactly(b: Backend) {
    let (mut exporter, addr, id) = spawn_exporter(b, 8 << 20, "open");
    let (mut importer, ready) = spawn_importer(&addr, id, "all");
    assert!(ready.starts_with("READY"), "{ready}");
    let path = std::env::temp_dir().join(format!(
        "vmmc-nic-depfile-{}-{}",
        std::process::id(),
        matches!(b, Backend::Shm)
    ));
    let size = (3 << 20) + 123;
    let body = pattern(9, 0, size);
    std::fs::write(&path, &body).unwrap();
    let p = path.display();
    let counters = |p: &mut Peer| -> Vec<u64> {
        p.ok("counters")
            .split(' ')
            .map(|v| v.parse().unwrap())
            .collect()
    };
    let before = counters(&mut importer);
    // (file offset, region offset, asked, got): whole blocks, an odd offset, a short read at
    // the end of the file, and one past it.
    let cases = [
        (0, 0, 1 << 20, 1 << 20),
        ((1 << 20) + 7, 3 << 20, 1 << 20, 1 << 20),
        (size - 100, 5 << 20, 1 << 20, 100),
        (size, 7 << 20, 4096, 0),
    ];
    let mut moved = 0;
    for (file_at, at, len, got) in cases {
        let n = importer.ok(&format!("depfile {p} {file_at} {at} {len}"));
        assert_eq!(n, got.to_string(), "{file_at} {at} {len}");
        moved += got as u64;
        // Published by a word after it, as a ring would.
        importer.ok(&format!("store {} 1 n", (8 << 20) - 8));
        assert_eq!(exporter.ok("wait 10000"), "notified");
        if got > 0 {
            assert_eq!(
                exporter.ok(&format!("sum {at} {got}")),
                fnv(&body[file_at..file_at + got], FNV_START).to_string()
            );
        }
    }
    // A range outside the region is refused before anything moves; the import carries on.
    assert!(importer
        .cmd(&format!("depfile {p} 0 {} 4096", (8 << 20) - 100))
        .starts_with("ERR"));
    importer.ok("write 64 6f6b n");
    assert_eq!(exporter.ok("wait 10000"), "notified");
    assert_eq!(exporter.ok("read 64 2"), hex_encode(b"ok"));
    // Counted as deposited, and copied by nobody in this process: the kernel's `pread` (shm)
    // or `sendfile` (tcp) moved the bytes.
    let after = counters(&mut importer);
    assert_eq!(after[0] - before[0], moved + 2);
    let words = if matches!(b, Backend::Shm) { 2 } else { 0 };
    assert_eq!(after[2], before[2] + words);
    let _ = std::fs::remove_file(&path);
}
