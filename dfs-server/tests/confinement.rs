//! Attacks on the export's boundary. Each must fail with an error and leave everything
//! outside the export unread and unwritten.

mod common;

use common::*;
use dfs_proto::codec;
use dfs_proto::handle::FileHandle;
use dfs_proto::msg::{Body, Op, RenameMode, Request};
use dfs_proto::name::{LinkTarget, XattrName};
use dfs_proto::Errno;

/// Sends a request whose name bytes were swapped after encoding, as a hostile client that
/// does not use our encoder would. Returns whether the server answered at all.
fn send_patched(c: &mut Client, op: Op, from: &[u8], to: &[u8]) -> bool {
    let req = Request {
        id: 99,
        creds: ROOT,
        op,
    };
    let mut meta = codec::encode_to_vec(&req).unwrap();
    let at = meta
        .windows(from.len())
        .position(|w| w == from)
        .expect("name in the encoding");
    meta.splice(at..at + from.len(), to.iter().copied());
    send_raw(c, &raw_frame(&meta));
    // The server drops a connection that sends an undecodable request: end of stream.
    let mut slot = c.conn.stream().readable().unwrap();
    !slot.data().is_empty()
}

#[test]
fn dot_dot_and_slashes_never_decode() {
    let h = Harness::new();
    for (from, to) in [
        (&b"xx"[..], &b".."[..]),
        (b"xxxx", b"/etc"),
        (b"xxxxxxxxxx", b"../outside"),
        (b"xx", b"a\0"),
    ] {
        let mut c = h.client();
        let root = c.root();
        let n = std::str::from_utf8(from).unwrap();
        let op = Op::Lookup {
            dir: root,
            name: name(n),
        };
        assert!(!send_patched(&mut c, op, from, to), "{to:?} was answered");
    }
    // Also as a rename target and a create name.
    let mut c = h.client();
    let root = c.root();
    c.create(&root, "victim", 0o644, RW).unwrap();
    let op = Op::Rename {
        from_dir: root.clone(),
        from: name("victim"),
        to_dir: root.clone(),
        to: name("zz"),
        mode: RenameMode::Replace,
    };
    assert!(!send_patched(&mut c, op, b"zz", b".."));
    let mut c = h.client();
    let op = Op::Create {
        dir: root.clone(),
        name: name("qqqqqqqqqqqqqqqqqqqqqqq"),
        mode: 0o644,
        flags: RW,
    };
    assert!(!send_patched(
        &mut c,
        op,
        b"qqqqqqqqqqqqqqqqqqqqqqq",
        b"../outside/created.txt"
    ));
    // The server is fine, the files are where they were.
    let mut c = h.client();
    assert!(c.lookup(&root, "victim").is_ok());
    h.outside_untouched();
}

#[test]
fn symlinks_are_never_followed() {
    let h = Harness::new();
    let mut c = h.client();
    let root = c.root();
    // Made through the protocol (their targets are just data) and behind its back.
    let abs = c
        .entry(Op::Symlink {
            dir: root.clone(),
            name: name("abs"),
            target: LinkTarget::new(b"/etc").unwrap(),
        })
        .unwrap();
    std::os::unix::fs::symlink(&h.outside, h.export.join("out-abs")).unwrap();
    std::os::unix::fs::symlink("../outside", h.export.join("out-rel")).unwrap();
    std::os::unix::fs::symlink("../outside/secret.txt", h.export.join("out-file")).unwrap();
    std::fs::create_dir(h.export.join("sub")).unwrap();
    std::os::unix::fs::symlink("../../outside", h.export.join("sub/up")).unwrap();
    let sub = c.lookup(&root, "sub").unwrap();
    let links = [
        abs,
        c.lookup(&root, "out-abs").unwrap(),
        c.lookup(&root, "out-rel").unwrap(),
        c.lookup(&root, "out-file").unwrap(),
        c.lookup(&sub.handle, "up").unwrap(),
    ];
    for l in &links {
        assert_eq!(
            l.attr.kind(),
            dfs_proto::attr::FileKind::Symlink,
            "lookup must not follow"
        );
        let lh = l.handle.clone();
        // Through it as a directory: every operation fails.
        assert_eq!(c.lookup(&lh, "secret.txt").unwrap_err(), Errno::ENOTDIR);
        assert_eq!(
            c.create(&lh, "planted", 0o644, RW).unwrap_err(),
            Errno::ENOTDIR
        );
        assert_eq!(c.mkdir(&lh, "planted", 0o755).unwrap_err(), Errno::ENOTDIR);
        assert!(c
            .op(Op::ReadDir {
                dir: lh.clone(),
                cookie: 0,
                max_entries: 10
            })
            .is_err());
        let to_out = Op::Rename {
            from_dir: root.clone(),
            from: name("sub"),
            to_dir: lh.clone(),
            to: name("moved"),
            mode: RenameMode::Replace,
        };
        assert_eq!(c.op(to_out).unwrap_err(), Errno::ENOTDIR);
        // As a file: no open, read, write, truncate or xattr reaches the target.
        assert_eq!(c.open(&lh, RO).unwrap_err(), Errno::ELOOP);
        assert_eq!(c.open(&lh, RW).unwrap_err(), Errno::ELOOP);
        assert_eq!(c.read(&lh, None, 0, 100).unwrap_err(), Errno::ELOOP);
        assert_eq!(c.write(&lh, None, 0, b"pwned").unwrap_err(), Errno::ELOOP);
        let trunc = Op::SetAttr {
            handle: lh.clone(),
            open: None,
            set: dfs_proto::attr::SetAttr {
                size: Some(0),
                ..Default::default()
            },
        };
        assert!(c.op(trunc).is_err());
        let chmod = Op::SetAttr {
            handle: lh.clone(),
            open: None,
            set: dfs_proto::attr::SetAttr {
                mode: Some(0o777),
                ..Default::default()
            },
        };
        assert!(c.op(chmod).is_err());
        let x = Op::SetXattr {
            handle: lh.clone(),
            name: XattrName::new(b"user.x").unwrap(),
            value: b"1".to_vec(),
            flags: 0,
        };
        assert!(c.op(x).is_err());
        // Its attributes are the link's own, not the target's.
        assert_eq!(
            c.getattr(&lh).unwrap().kind(),
            dfs_proto::attr::FileKind::Symlink
        );
        // A hard link to it links the symlink, not the target.
        let ln = c.entry(Op::Link {
            handle: lh.clone(),
            dir: root.clone(),
            name: name("hard"),
        });
        if let Ok(e) = ln {
            assert_eq!(e.attr.kind(), dfs_proto::attr::FileKind::Symlink);
            c.op(Op::Unlink {
                dir: root.clone(),
                name: name("hard"),
            })
            .unwrap();
        }
    }
    // Nothing reached through a link to the outside file: not its times, not its xattrs.
    let secret = h.outside.join("secret.txt");
    let before = std::fs::metadata(&secret).unwrap().modified().unwrap();
    let (parent, mut p) = h.parent_server();
    let proot = p.root();
    let od = p.lookup(&proot, "outside").unwrap().handle;
    let sh = p.lookup(&od, "secret.txt").unwrap().handle;
    let leak = Op::SetXattr {
        handle: sh,
        name: XattrName::new(b"user.leak").unwrap(),
        value: b"outside".to_vec(),
        flags: 0,
    };
    p.op(leak).unwrap();
    drop(p);
    parent.stop().unwrap();
    let file_link = c.lookup(&root, "out-file").unwrap().handle;
    let touch = Op::SetAttr {
        handle: file_link.clone(),
        open: None,
        set: dfs_proto::attr::SetAttr {
            atime: Some(dfs_proto::attr::SetTime::At(dfs_proto::attr::Timestamp {
                secs: 1,
                nanos: 0,
            })),
            mtime: Some(dfs_proto::attr::SetTime::At(dfs_proto::attr::Timestamp {
                secs: 1,
                nanos: 0,
            })),
            ..Default::default()
        },
    };
    let _ = c.op(touch);
    let got = c.op(Op::GetXattr {
        handle: file_link.clone(),
        name: XattrName::new(b"user.leak").unwrap(),
        size: 100,
    });
    assert!(got.is_err(), "{got:?}");
    assert_eq!(
        std::fs::metadata(&secret).unwrap().modified().unwrap(),
        before,
        "a time set through a symlink reached outside"
    );
    let get = Op::GetXattr {
        handle: file_link.clone(),
        name: XattrName::new(b"user.leak").unwrap(),
        size: 100,
    };
    assert!(c.op(get).is_err());
    let listed = c.op(Op::ListXattr {
        handle: file_link.clone(),
        size: 1000,
    });
    if let Ok(Body::XattrData(list)) = listed {
        assert!(
            !list.windows(9).any(|w| w == b"user.leak"),
            "the outside file's xattr names leaked"
        );
    }
    // A symlink to the outside directory as a path component of a name is impossible (names
    // have no '/'), and the outside is as it was; /etc/passwd's bytes never came back.
    h.outside_untouched();
    let st = std::fs::symlink_metadata("/etc").unwrap();
    assert!(st.is_dir());
}

#[test]
fn forged_handles_are_stale() {
    let h = Harness::new();
    let mut c = h.client();
    let root = c.root();
    let (f, _) = c.create(&root, "f", 0o644, RW).unwrap();
    // Every single-bit change of a valid handle is refused.
    let bytes = f.handle.as_bytes().to_vec();
    for i in 0..bytes.len() {
        for bit in [0x01u8, 0x80] {
            let mut b = bytes.clone();
            b[i] ^= bit;
            let forged = FileHandle::new(b).unwrap();
            assert_eq!(
                c.getattr(&forged).unwrap_err(),
                Errno::ESTALE,
                "byte {i} bit {bit:#x}"
            );
        }
    }
    // Truncated, extended, empty-tag and garbage handles.
    for b in [
        bytes[..bytes.len() - 1].to_vec(),
        [bytes.clone(), vec![0]].concat(),
        vec![1; 16],
        vec![0xff; 100],
        vec![2; 25],
    ] {
        let forged = FileHandle::new(b).unwrap();
        assert_eq!(c.getattr(&forged).unwrap_err(), Errno::ESTALE);
        assert_eq!(c.read(&forged, None, 0, 10).unwrap_err(), Errno::ESTALE);
    }
    // A genuine handle from another export on the same file system, with the same key: a
    // server exporting the parent directory can name the outside file; ours must refuse it.
    let (parent, mut p) = h.parent_server();
    let proot = p.root();
    let outside_dir = p.lookup(&proot, "outside").unwrap();
    let secret = p.lookup(&outside_dir.handle, "secret.txt").unwrap();
    assert_eq!(
        p.read(&secret.handle, None, 0, 100).unwrap().0,
        b"outside the export"
    );
    for stolen in [&secret.handle, &outside_dir.handle, &proot] {
        assert_eq!(c.getattr(stolen).unwrap_err(), Errno::ESTALE);
        assert_eq!(c.read(stolen, None, 0, 100).unwrap_err(), Errno::ESTALE);
        assert_eq!(c.write(stolen, None, 0, b"x").unwrap_err(), Errno::ESTALE);
        assert_eq!(c.lookup(stolen, "secret.txt").unwrap_err(), Errno::ESTALE);
        assert_eq!(
            c.create(stolen, "planted", 0o644, RW).unwrap_err(),
            Errno::ESTALE
        );
        let link = Op::Link {
            handle: stolen.clone(),
            dir: root.clone(),
            name: name("pulled-in"),
        };
        assert_eq!(c.op(link).unwrap_err(), Errno::ESTALE);
        let push = Op::Rename {
            from_dir: root.clone(),
            from: name("f"),
            to_dir: stolen.clone(),
            to: name("pushed"),
            mode: RenameMode::Replace,
        };
        assert_eq!(c.op(push).unwrap_err(), Errno::ESTALE);
    }
    drop(p);
    parent.stop().unwrap();
    h.outside_untouched();
}

#[test]
fn mount_points_inside_the_export_are_not_crossed() {
    let h = Harness::new();
    let mnt = h.export.join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "none"])
        .arg(&mnt)
        .status();
    if !mounted.is_ok_and(|s| s.success()) {
        eprintln!("cannot mount a tmpfs here; skipping");
        return;
    }
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(&self.0)
                .status();
        }
    }
    let _guard = Unmount(mnt.clone());
    std::fs::write(mnt.join("other-fs.txt"), b"another file system").unwrap();
    let mut c = h.client();
    let root = c.root();
    assert_eq!(c.lookup(&root, "mnt").unwrap_err(), Errno(libc::EXDEV));
    let Body::Dir(page) = c
        .op(Op::ReadDir {
            dir: root.clone(),
            cookie: 0,
            max_entries: 100,
        })
        .unwrap()
    else {
        panic!()
    };
    let m = page.entries.iter().find(|e| e.name == b"mnt").unwrap();
    if let Some(e) = &m.entry {
        // The entry's handle names the directory underneath the mount, not the tmpfs.
        assert!(c.lookup(&e.handle, "other-fs.txt").is_err());
    }
}
