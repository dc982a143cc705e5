//! Authentication, restarts, credentials, concurrency, misbehaving clients, and the proof
//! that file bytes are not copied on their way through the server.

mod common;

use std::io::Write;
use std::sync::{Arc, Barrier};

use common::*;
use dfs_client::{ConnectError, ConnectOptions};
use dfs_proto::auth::Secret;
use dfs_proto::frame::FrameHeader;
use dfs_proto::msg::{Body, Op, OpenFlags, RenameMode};
use dfs_proto::Errno;
use dfs_server::Squash;

fn secret(s: &str) -> Secret {
    Secret::from_file_bytes(s.as_bytes()).unwrap()
}

#[test]
fn authentication_by_challenge_and_response() {
    let h = Harness::with(|c| c.secret = Some(secret("the right secret, long enough")));
    let mut opts = ConnectOptions::new().unwrap();
    assert!(matches!(h.connect(&opts), Err(ConnectError::NeedSecret)));
    opts.secret = Some(secret("the wrong secret, long enough"));
    match h.connect(&opts) {
        Err(ConnectError::Refused { errno, reason }) => {
            assert_eq!(errno, Errno::EACCES);
            assert!(reason.contains("authentication failed"), "{reason}");
        }
        other => panic!("a wrong secret was let in: {other:?}"),
    }
    opts.secret = Some(secret("the right secret, long enough"));
    let mut c = Client {
        conn: h.connect(&opts).unwrap(),
        creds: ROOT,
    };
    let root = c.root();
    c.create(&root, "in", 0o644, RW).unwrap();
    // A client that holds a secret does not talk to a server that cannot prove it knows it.
    let open = Harness::new();
    assert!(matches!(
        open.connect(&opts),
        Err(ConnectError::NotAuthentic)
    ));
}

#[test]
fn handles_and_data_survive_a_restart() {
    let mut h = Harness::new();
    let mut c = h.client();
    let root = c.root();
    let d = c.mkdir(&root, "dir", 0o755).unwrap();
    let (f, open) = c.create(&d.handle, "file", 0o644, RW).unwrap();
    c.write(&f.handle, Some(open), 0, b"before the restart")
        .unwrap();
    drop(c);
    h.restart();
    let mut c = h.client();
    // The root handle is the same; old handles resolve; the old open falls back to the handle.
    assert_eq!(c.root(), root);
    assert_eq!(c.getattr(&f.handle).unwrap().size, 18);
    assert_eq!(
        c.read(&f.handle, Some(open), 0, 100).unwrap().0,
        b"before the restart"
    );
    c.write(&f.handle, Some(open), 0, b"AFTER").unwrap();
    assert_eq!(c.lookup(&d.handle, "file").unwrap().handle, f.handle);
    assert_eq!(
        std::fs::read(h.export.join("dir/file")).unwrap(),
        b"AFTERe the restart"
    );
    // A handle whose file is gone is stale, not something else's.
    c.op(Op::Unlink {
        dir: d.handle.clone(),
        name: name("file"),
    })
    .unwrap();
    h.restart();
    let mut c = h.client();
    assert_eq!(c.getattr(&f.handle).unwrap_err(), Errno::ESTALE);
}

#[test]
fn callers_act_with_their_own_credentials() {
    let h = Harness::new();
    let mut alice = h.client_as(user(1000));
    let mut bob = h.client_as(user(1001));
    let mut root = h.client();
    let top = root.root();
    let shared = root.mkdir(&top, "shared", 0o1777).unwrap();
    let (f, _) = alice
        .create(&shared.handle, "alice-only", 0o600, RW)
        .unwrap();
    assert_eq!(
        (f.attr.uid, f.attr.gid),
        (1000, 1000),
        "created as the caller"
    );
    assert_eq!(bob.open(&f.handle, RO).unwrap_err(), Errno::EACCES);
    assert_eq!(bob.read(&f.handle, None, 0, 10).unwrap_err(), Errno::EACCES);
    assert_eq!(
        bob.op(Op::Unlink {
            dir: shared.handle.clone(),
            name: name("alice-only")
        })
        .unwrap_err(),
        Errno::EPERM,
        "sticky directory"
    );
    let chown = Op::SetAttr {
        handle: f.handle.clone(),
        open: None,
        set: dfs_proto::attr::SetAttr {
            uid: Some(1001),
            ..Default::default()
        },
    };
    assert_eq!(
        alice.op(chown.clone()).unwrap_err(),
        Errno::EPERM,
        "only root gives files away"
    );
    root.op(chown).unwrap();
    // Supplementary groups count: a group-readable file of group 50 for a member of 50.
    let (g, _) = root.create(&top, "group-file", 0o640, RW).unwrap();
    root.op(Op::SetAttr {
        handle: g.handle.clone(),
        open: None,
        set: dfs_proto::attr::SetAttr {
            gid: Some(50),
            ..Default::default()
        },
    })
    .unwrap();
    assert_eq!(bob.open(&g.handle, RO).unwrap_err(), Errno::EACCES);
    let mut member = h.client_as(dfs_proto::msg::Creds {
        uid: 1002,
        gid: 1002,
        groups: vec![50],
    });
    member.open(&g.handle, RO).unwrap();
    // A directory the caller cannot search cannot be looked into.
    let private = root.mkdir(&top, "private", 0o700).unwrap();
    root.create(&private.handle, "x", 0o644, RW).unwrap();
    assert_eq!(
        alice.lookup(&private.handle, "x").unwrap_err(),
        Errno::EACCES
    );
    // Too many groups are refused, not truncated.
    let mut many = h.client_as(dfs_proto::msg::Creds {
        uid: 1003,
        gid: 1003,
        groups: (0..65).collect(),
    });
    assert_eq!(many.getattr(&top).unwrap_err(), Errno::EINVAL);
}

#[test]
fn squashing_root_and_everyone() {
    let h = Harness::with(|c| c.squash = Squash::Root);
    // (Another test's server may have set the process umask to 0 before the harness made
    // the directory.)
    std::fs::set_permissions(
        &h.export,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let mut c = h.client();
    let top = c.root();
    // The export root belongs to root and is 0755: squashed root may not create in it.
    assert_eq!(c.create(&top, "x", 0o644, RW).unwrap_err(), Errno::EACCES);
    std::fs::create_dir(h.export.join("open")).unwrap();
    std::fs::set_permissions(
        h.export.join("open"),
        std::os::unix::fs::PermissionsExt::from_mode(0o777),
    )
    .unwrap();
    let open = c.lookup(&top, "open").unwrap();
    let (f, _) = c.create(&open.handle, "by-root", 0o644, RW).unwrap();
    assert_eq!((f.attr.uid, f.attr.gid), (65534, 65534));
    let mut u = h.client_as(user(1000));
    let (f, _) = u.create(&open.handle, "by-user", 0o644, RW).unwrap();
    assert_eq!(f.attr.uid, 1000);

    let h = Harness::with(|c| c.squash = Squash::All);
    std::fs::set_permissions(
        &h.export,
        std::os::unix::fs::PermissionsExt::from_mode(0o777),
    )
    .unwrap();
    let mut u = h.client_as(user(1000));
    let top = u.root();
    let (f, _) = u.create(&top, "by-user", 0o644, RW).unwrap();
    assert_eq!(f.attr.uid, 65534);
}

#[test]
fn a_read_only_export_refuses_changes() {
    let h = Harness::with(|c| c.read_only = true);
    std::fs::write(h.export.join("r"), b"readable").unwrap();
    let mut c = h.client();
    assert!(c.conn.read_only());
    let top = c.root();
    let f = c.lookup(&top, "r").unwrap();
    assert_eq!(c.read(&f.handle, None, 0, 100).unwrap().0, b"readable");
    c.open(&f.handle, RO).unwrap();
    assert_eq!(c.open(&f.handle, RW).unwrap_err(), Errno::EROFS);
    assert_eq!(c.create(&top, "new", 0o644, RW).unwrap_err(), Errno::EROFS);
    assert_eq!(c.write(&f.handle, None, 0, b"x").unwrap_err(), Errno::EROFS);
    assert_eq!(c.mkdir(&top, "d", 0o755).unwrap_err(), Errno::EROFS);
    assert_eq!(
        c.op(Op::Unlink {
            dir: top.clone(),
            name: name("r")
        })
        .unwrap_err(),
        Errno::EROFS
    );
    assert_eq!(std::fs::read(h.export.join("r")).unwrap(), b"readable");
}

#[test]
fn two_clients_race_in_one_directory() {
    let h = Harness::new();
    let mut c = h.client();
    let top = c.root();
    let d = c.mkdir(&top, "race", 0o755).unwrap().handle;
    const N: usize = 200;
    let barrier = Arc::new(Barrier::new(2));
    let results: Vec<_> = std::thread::scope(|s| {
        let ts: Vec<_> = (0..2)
            .map(|who| {
                let barrier = barrier.clone();
                let d = d.clone();
                let mut c = h.client();
                s.spawn(move || {
                    barrier.wait();
                    let mut won = (Vec::new(), Vec::new());
                    let excl = OpenFlags {
                        exclusive: true,
                        ..RW
                    };
                    // (Failures are reported after the barrier below, so that the other
                    // thread is never left waiting at it.)
                    let mut creating = || -> Result<(), String> {
                        for i in 0..N {
                            match c.create(&d, &format!("f{i}"), 0o644, excl) {
                                Ok((e, open)) => {
                                    let who = format!("writer {who}");
                                    c.write(&e.handle, Some(open), 0, who.as_bytes())
                                        .map_err(|e| format!("write f{i}: {e:?}"))?;
                                    c.op(Op::Release { open })
                                        .map_err(|e| format!("release f{i}: {e:?}"))?;
                                    won.0.push(i);
                                }
                                Err(Errno::EEXIST) => {}
                                Err(e) => return Err(format!("create f{i}: {e:?}")),
                            }
                        }
                        Ok(())
                    };
                    let created = creating();
                    // Renames start when both have finished creating: a name renamed away
                    // while the other still creates could rightly be created a second time.
                    barrier.wait();
                    created.unwrap();
                    for i in 0..N {
                        let op = Op::Rename {
                            from_dir: d.clone(),
                            from: name(&format!("f{i}")),
                            to_dir: d.clone(),
                            to: name(&format!("g{i}")),
                            mode: RenameMode::NoReplace,
                        };
                        match c.op(op) {
                            Ok(_) => won.1.push(i),
                            Err(e) => assert!(e == Errno::ENOENT || e == Errno::EEXIST, "{e:?}"),
                        }
                    }
                    won
                })
            })
            .collect();
        ts.into_iter().map(|t| t.join().unwrap()).collect()
    });
    // Every name was created exactly once and renamed exactly once.
    let mut created: Vec<_> = results.iter().flat_map(|r| r.0.clone()).collect();
    let mut renamed: Vec<_> = results.iter().flat_map(|r| r.1.clone()).collect();
    created.sort();
    renamed.sort();
    assert_eq!(created, (0..N).collect::<Vec<_>>());
    assert_eq!(renamed, (0..N).collect::<Vec<_>>());
    let mut want: Vec<_> = (0..N).map(|i| format!("g{i}")).collect();
    want.sort();
    assert_eq!(c.list(&d, 64).unwrap(), want);
    for i in 0..N {
        let e = c.lookup(&d, &format!("g{i}")).unwrap();
        let who = if results[0].0.contains(&i) { 0 } else { 1 };
        assert_eq!(
            c.read(&e.handle, None, 0, 100).unwrap().0,
            format!("writer {who}").as_bytes()
        );
    }
}

#[test]
fn a_misbehaving_client_costs_only_its_connection() {
    let h = Harness::new();
    let mut good = h.client();
    let top = good.root();
    let (f, open) = good.create(&top, "f", 0o644, RW).unwrap();
    // Garbage instead of a request; a frame header claiming too much; a frame cut short by
    // the client's death; a handshake that is not one.
    let mut frames: Vec<Vec<u8>> = vec![vec![0xff; 64]];
    let mut huge = vec![0u8; 8];
    FrameHeader {
        meta_len: 16,
        data_len: u32::MAX,
    }
    .emit(&mut huge);
    frames.push(huge);
    let mut cut = vec![0u8; 8];
    FrameHeader {
        meta_len: 1000,
        data_len: 0,
    }
    .emit(&mut cut);
    cut.extend_from_slice(&[1; 100]);
    frames.push(cut);
    for bytes in &frames {
        let bad = h.client();
        send_raw(&bad, bytes);
        drop(bad);
        good.write(&f.handle, Some(open), 0, b"still served")
            .unwrap();
    }
    let raw = vmmc_sockets::VmmcStream::connect(&h.addr).unwrap();
    (&raw).write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
    drop(raw);
    // A client that stops reading replies stalls only its own connection's thread: eight
    // 1 MiB reads fill its 4 MiB ring.
    good.write(&f.handle, Some(open), 1 << 20, &[7u8; 1 << 20])
        .unwrap();
    let stalled = h.client();
    for id in 0..8 {
        send_raw(&stalled, &read_request(id, &f.handle, 1 << 20));
    }
    assert_eq!(
        good.read(&f.handle, Some(open), 0, 12).unwrap().0,
        b"still served"
    );
    drop(stalled);
    let mut again = h.client();
    assert_eq!(again.getattr(&f.handle).unwrap().size, 2 << 20);
}

#[test]
fn file_bytes_are_not_copied_by_the_server() {
    let h = Harness::new();
    let mut c = h.client();
    let top = c.root();
    let (f, open) = c.create(&top, "big", 0o644, RW).unwrap();
    let block: Vec<u8> = (0..1usize << 20).map(|i| (i ^ (i >> 9)) as u8).collect();
    let before = vmmc_nic::Counters::now();
    for i in 0..8u64 {
        c.write(&f.handle, Some(open), i << 20, &block).unwrap();
    }
    let mut sum = 0u64;
    for i in 0..8u64 {
        let ok = c
            .conn
            .read_in_place(
                &c.creds,
                f.handle.clone(),
                Some(open),
                i << 20,
                1 << 20,
                |r, data| {
                    assert_eq!(r.result, Ok(Body::Read { eof: false }));
                    // The test's own copy, to look at the bytes (not the NIC's).
                    let data = data.to_vec();
                    sum = data
                        .iter()
                        .fold(sum, |s, &b| s.wrapping_mul(31).wrapping_add(b as u64));
                    data == block[..]
                },
            )
            .unwrap();
        assert!(ok, "block {i} differs");
    }
    let d = vmmc_nic::Counters::now() - before;
    let moved = 16u64 << 20;
    // Both directions' bytes went through the NIC's rings…
    assert!(d.bytes_deposited >= moved, "{d:?}");
    // …and nobody copied them inside it: not the server (pread into the client's ring,
    // pwrite from its own), not the client reading in place. The meta parts are all that
    // could be counted, far below one percent.
    assert!(
        d.bytes_copied < moved / 100,
        "{} bytes copied for {moved} moved: {d:?}",
        d.bytes_copied
    );
    assert_ne!(sum, 0);
}

#[test]
fn many_clients_at_once() {
    let h = Harness::new();
    let top = h.client().root();
    std::thread::scope(|s| {
        for t in 0..8 {
            let top = top.clone();
            let mut c = h.client_as(user(1000 + t));
            s.spawn(move || {
                let dir = c.op(Op::Lookup {
                    dir: top.clone(),
                    name: name("nothing"),
                });
                assert_eq!(dir.unwrap_err(), Errno::ENOENT);
                for i in 0..50 {
                    let attr = c.getattr(&top).unwrap();
                    assert!(attr.kind() == dfs_proto::attr::FileKind::Directory, "{i}");
                }
            });
        }
    });
}

#[test]
fn a_stalled_client_does_not_hold_up_a_stop() {
    let mut h = Harness::new();
    let mut c = h.client();
    let top = c.root();
    let (f, open) = c.create(&top, "f", 0o644, RW).unwrap();
    c.write(&f.handle, Some(open), 0, &vec![1u8; 1 << 20])
        .unwrap();
    let stalled = h.client();
    for id in 0..8 {
        send_raw(&stalled, &read_request(id, &f.handle, 1 << 20));
    }
    let server = h.server.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || tx.send(server.stop().is_ok()));
    assert_eq!(
        rx.recv_timeout(std::time::Duration::from_secs(20)),
        Ok(true),
        "the stop hung on a stalled client"
    );
    drop(stalled);
}

#[test]
fn the_hello_negotiates_the_version() {
    let h = Harness::new();
    let talk = |hello: &dfs_proto::msg::ClientHello| -> Option<dfs_proto::msg::ServerChallenge> {
        let s = vmmc_sockets::VmmcStream::connect(&h.addr).unwrap();
        let mut w: &vmmc_sockets::VmmcStream = &s;
        w.write_all(&raw_frame(&dfs_proto::codec::encode_to_vec(hello).unwrap()))
            .unwrap();
        let mut need = dfs_proto::frame::HEADER;
        loop {
            let slot = s.readable_at_least(need).unwrap();
            if slot.is_empty() {
                return None;
            }
            let bytes = slot.data().unwrap();
            let copy = |at: usize, dst: &mut [u8]| bytes.get(at..).map_or(0, |b| b.copy_to(dst));
            match dfs_proto::frame::arrival(slot.len(), copy).unwrap() {
                dfs_proto::frame::Arrival::Whole { meta, .. } => {
                    return Some(dfs_proto::codec::decode(&meta).unwrap())
                }
                dfs_proto::frame::Arrival::Need(n) => need = n,
            }
        }
    };
    let mut hello = dfs_proto::msg::ClientHello {
        magic: dfs_proto::msg::MAGIC,
        min_version: 1,
        max_version: 9,
        client_nonce: [1; 32],
        session: [2; 16],
    };
    match talk(&hello) {
        Some(dfs_proto::msg::ServerChallenge::Challenge { version, auth, .. }) => {
            assert_eq!(version, dfs_proto::msg::PROTOCOL_VERSION);
            assert_eq!(auth, dfs_proto::msg::AuthMode::None);
        }
        other => panic!("{other:?}"),
    }
    hello.min_version = dfs_proto::msg::PROTOCOL_VERSION + 1;
    match talk(&hello) {
        Some(dfs_proto::msg::ServerChallenge::Refused { errno, reason }) => {
            assert_eq!(errno, Errno(libc::EPROTONOSUPPORT));
            assert!(reason.contains("version"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    hello.min_version = 1;
    hello.magic = *b"HTTP";
    assert_eq!(
        talk(&hello),
        None,
        "not a DFS client: closed without a word"
    );
}

#[test]
fn the_same_protocol_over_tcp() {
    let (h, mut c) = tcp_with_secret("a shared secret for the tcp test");
    assert!(h.addr.starts_with("tcp:127.0.0.1:"));
    let top = c.root();
    let d = c.mkdir(&top, "d", 0o755).unwrap();
    let (f, open) = c.create(&d.handle, "f", 0o644, RW).unwrap();
    let block: Vec<u8> = (0..1usize << 20).map(|i| (i % 251) as u8).collect();
    for i in 0..3u64 {
        c.write(&f.handle, Some(open), i << 20, &block).unwrap();
    }
    for i in 0..3u64 {
        assert!(c.read(&f.handle, Some(open), i << 20, 1 << 20).unwrap().0 == block);
    }
    assert_eq!(c.list(&d.handle, 10).unwrap(), vec!["f".to_string()]);
    assert_eq!(c.lookup(&top, "nothing").unwrap_err(), Errno::ENOENT);
}

#[test]
fn a_request_that_wants_no_reply_gets_none() {
    let h = Harness::new();
    let mut c = h.client();
    let top = c.root();
    let (f, open) = c.create(&top, "f", 0o644, RW).unwrap();
    let (len, attr) = match c
        .conn
        .call(
            &ROOT,
            Op::Write {
                handle: f.handle.clone(),
                open: Some(open),
                offset: 0,
                append: false,
            },
            b"abc",
        )
        .unwrap()
        .result
        .unwrap()
    {
        Body::Written { len, attr } => (len, attr),
        other => panic!("{other:?}"),
    };
    // The write's reply says what it made of the file.
    assert_eq!((len, attr.size, attr.ino), (3, 3, f.attr.ino));
    // A release that wants no reply, and a lookup that fails: neither is answered…
    c.conn.send_only(&ROOT, Op::Release { open }).unwrap();
    c.conn
        .send_only(
            &ROOT,
            Op::Lookup {
                dir: top.clone(),
                name: name("missing"),
            },
        )
        .unwrap();
    // …so the next call meets its own reply, and the file is as written.
    assert_eq!(c.getattr(&f.handle).unwrap().size, 3);
    assert_eq!(c.lookup(&top, "f").unwrap().attr.ino, f.attr.ino);
}

#[test]
fn a_subscribed_connection_hears_what_other_sessions_change() {
    use dfs_client::ConnectOptions;
    let h = Harness::new();
    let mine = ConnectOptions::new().unwrap();
    let notices = h.connect(&mine).unwrap().subscribe().unwrap();
    // The server runs as root in the tests, so it watches the export too.
    assert!(notices.local_changes());
    let mut same = Client {
        conn: h.connect(&mine).unwrap(),
        creds: ROOT,
    };
    let mut other = h.client();
    let top = other.root();
    let top_ino = other.getattr(&top).unwrap().ino;
    // This session's own change is not told back to it…
    same.create(&top, "mine", 0o644, RW).unwrap();
    // …another session's is: the name, the directory, then the file it wrote.
    let (f, open) = other.create(&top, "theirs", 0o644, RW).unwrap();
    other.write(&f.handle, Some(open), 0, b"abc").unwrap();
    let mut heard = dfs_proto::msg::Notice::default();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !heard.inodes.contains(&f.attr.ino) {
        assert!(std::time::Instant::now() < deadline, "heard only {heard:?}");
        if let Some(n) = notices.next().unwrap() {
            assert!(n.is_valid());
            heard.inodes.extend(n.inodes);
            heard.entries.extend(n.entries);
        }
    }
    assert!(heard.inodes.contains(&top_ino), "{heard:?}");
    assert!(
        heard.entries.contains(&(top_ino, name("theirs"))),
        "{heard:?}"
    );
    assert!(
        !heard.entries.iter().any(|(_, n)| n.as_bytes() == b"mine"),
        "told its own change: {heard:?}"
    );
    // A subscribed connection carries nothing else: a request on it ends it.
    {
        use std::io::Write;
        let mut s: &vmmc_sockets::VmmcStream = notices.stream();
        let req = dfs_proto::msg::Request {
            id: 7,
            creds: ROOT,
            op: Op::Stats,
        };
        s.write_all(&raw_frame(&dfs_proto::codec::encode_to_vec(&req).unwrap()))
            .unwrap();
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match notices.next() {
            Err(_) => break,
            Ok(_) => assert!(std::time::Instant::now() < deadline, "still open"),
        }
    }
    // The server serves everyone else as before.
    assert_eq!(other.lookup(&top, "theirs").unwrap().attr.size, 3);
}
