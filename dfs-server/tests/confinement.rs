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
    let slot = c.conn.stream().readable().unwrap();
    !slot.is_empty()
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

// --- Handles of files that a local user on the server moves out of the export ------------
//
// The client holds a directory and files; someone on the server moves them outside the
// export. Nothing may then be read, written, listed or stat'ed through the held handles,
// until they are moved back. Run on the temporary directory's file system (ext4 here: the
// kernel checks connectable handles) and on a tmpfs (no connectable handles: the server
// checks by path), by root and by an unprivileged user who owns what it moves.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use dfs_proto::attr::{SetAttr, SetTime};
use dfs_server::handles::{self, HandleKind, HandleOptions, Handles, SubtreeCheck};

/// Renames one path to another on the server, as a local user.
type Mover<'a> = dyn FnMut(&Path, &Path) + 'a;

/// What the client holds: handles reached while everything was inside.
struct Held {
    root: FileHandle,
    /// `mine/held`, a directory, and `mine/held/inner.txt` in it.
    dir: FileHandle,
    inner: FileHandle,
    /// `mine/file.txt`, and an open of it made while it was inside.
    file: FileHandle,
    file_open: dfs_proto::handle::OpenId,
    /// `victim`, a file in the root that operations try to push into the moved directory.
    victim: FileHandle,
}

/// Makes `mine` (owned by `uid`, holding `held/inner.txt` and `file.txt`) in the export,
/// `drop` (owned by `uid`) outside, and lets `uid` reach both.
fn set_up(h: &Harness, c: &mut Client, uid: u32) -> Held {
    for (dir, mode) in [
        (h.tmp.path(), 0o711),
        (h.export.as_path(), 0o755),
        (h.outside.as_path(), 0o755),
    ] {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode)).unwrap();
    }
    let root = c.root();
    let mine = c.mkdir(&root, "mine", 0o755).unwrap().handle;
    let dir = c.mkdir(&mine, "held", 0o755).unwrap().handle;
    c.mkdir(&mine, "sub", 0o755).unwrap();
    let (inner, o) = c.create(&dir, "inner.txt", 0o644, RW).unwrap();
    c.write(&inner.handle, Some(o), 0, b"inner").unwrap();
    let (file, file_open) = c.create(&mine, "file.txt", 0o644, RW).unwrap();
    c.write(&file.handle, Some(file_open), 0, b"file").unwrap();
    let (victim, _) = c.create(&root, "victim", 0o644, RW).unwrap();
    let drop_dir = h.outside.join("drop");
    std::fs::create_dir(&drop_dir).unwrap();
    for p in [
        h.export.join("mine"),
        h.export.join("mine/held"),
        h.export.join("mine/sub"),
        drop_dir,
    ] {
        std::os::unix::fs::chown(&p, Some(uid), Some(uid)).unwrap();
    }
    Held {
        root,
        dir: dir.clone(),
        inner: inner.handle,
        file: file.handle,
        file_open,
        victim: victim.handle,
    }
}

fn xname(n: &str) -> XattrName {
    XattrName::new(n.as_bytes()).unwrap()
}

/// Every operation through a directory handle whose directory is outside fails with ESTALE.
fn directory_is_stale(c: &mut Client, held: &Held, d: &FileHandle) {
    let stale = |what: &str, r: Result<Body, Errno>| {
        assert_eq!(
            r.unwrap_err(),
            Errno::ESTALE,
            "{what} through a moved-out directory"
        );
    };
    assert_eq!(c.lookup(d, "inner.txt").unwrap_err(), Errno::ESTALE);
    assert_eq!(c.list(d, 100).unwrap_err(), Errno::ESTALE);
    assert_eq!(c.getattr(d).unwrap_err(), Errno::ESTALE);
    assert_eq!(
        c.create(d, "planted", 0o644, RW).unwrap_err(),
        Errno::ESTALE
    );
    assert_eq!(c.mkdir(d, "planted-dir", 0o755).unwrap_err(), Errno::ESTALE);
    assert_eq!(c.open(d, RO).unwrap_err(), Errno::ESTALE);
    let d = d.clone();
    let ops = [
        (
            "setattr",
            Op::SetAttr {
                handle: d.clone(),
                open: None,
                set: SetAttr {
                    mode: Some(0o777),
                    ..Default::default()
                },
            },
        ),
        (
            "utimes",
            Op::SetAttr {
                handle: d.clone(),
                open: None,
                set: SetAttr {
                    mtime: Some(SetTime::Now),
                    ..Default::default()
                },
            },
        ),
        (
            "mknod",
            Op::Mknod {
                dir: d.clone(),
                name: name("planted-fifo"),
                mode: libc::S_IFIFO | 0o644,
                rdev: 0,
            },
        ),
        (
            "symlink",
            Op::Symlink {
                dir: d.clone(),
                name: name("planted-link"),
                target: LinkTarget::new(b"x").unwrap(),
            },
        ),
        (
            "link into it",
            Op::Link {
                handle: held.victim.clone(),
                dir: d.clone(),
                name: name("linked"),
            },
        ),
        (
            "rename into it",
            Op::Rename {
                from_dir: held.root.clone(),
                from: name("victim"),
                to_dir: d.clone(),
                to: name("pushed"),
                mode: RenameMode::Replace,
            },
        ),
        (
            "rename out of it",
            Op::Rename {
                from_dir: d.clone(),
                from: name("inner.txt"),
                to_dir: held.root.clone(),
                to: name("pulled"),
                mode: RenameMode::Replace,
            },
        ),
        (
            "unlink",
            Op::Unlink {
                dir: d.clone(),
                name: name("inner.txt"),
            },
        ),
        (
            "rmdir",
            Op::Rmdir {
                dir: d.clone(),
                name: name("inner.txt"),
            },
        ),
        (
            "setxattr",
            Op::SetXattr {
                handle: d.clone(),
                name: xname("user.planted"),
                value: b"1".to_vec(),
                flags: 0,
            },
        ),
        (
            "getxattr",
            Op::GetXattr {
                handle: d.clone(),
                name: xname("user.planted"),
                size: 0,
            },
        ),
        (
            "listxattr",
            Op::ListXattr {
                handle: d.clone(),
                size: 0,
            },
        ),
        (
            "removexattr",
            Op::RemoveXattr {
                handle: d.clone(),
                name: xname("user.planted"),
            },
        ),
        ("statfs", Op::StatFs { handle: d.clone() }),
        ("readlink", Op::ReadLink { handle: d.clone() }),
    ];
    for (what, op) in ops {
        stale(what, c.op(op));
    }
}

/// Every operation through a file handle whose file is outside fails with ESTALE.
fn file_is_stale(c: &mut Client, held: &Held, f: &FileHandle) {
    let stale = |what: &str, r: Result<Body, Errno>| {
        assert_eq!(
            r.unwrap_err(),
            Errno::ESTALE,
            "{what} through a moved-out file"
        );
    };
    assert_eq!(c.getattr(f).unwrap_err(), Errno::ESTALE);
    assert_eq!(c.read(f, None, 0, 100).unwrap_err(), Errno::ESTALE);
    assert_eq!(c.write(f, None, 0, b"pwned").unwrap_err(), Errno::ESTALE);
    assert_eq!(c.open(f, RO).unwrap_err(), Errno::ESTALE);
    assert_eq!(c.open(f, RW).unwrap_err(), Errno::ESTALE);
    let f = f.clone();
    let ops = [
        (
            "truncate",
            Op::SetAttr {
                handle: f.clone(),
                open: None,
                set: SetAttr {
                    size: Some(0),
                    ..Default::default()
                },
            },
        ),
        (
            "chmod",
            Op::SetAttr {
                handle: f.clone(),
                open: None,
                set: SetAttr {
                    mode: Some(0o666),
                    ..Default::default()
                },
            },
        ),
        (
            "link it in",
            Op::Link {
                handle: f.clone(),
                dir: held.root.clone(),
                name: name("pulled-in"),
            },
        ),
        (
            "setxattr",
            Op::SetXattr {
                handle: f.clone(),
                name: xname("user.planted"),
                value: b"1".to_vec(),
                flags: 0,
            },
        ),
        (
            "getxattr",
            Op::GetXattr {
                handle: f.clone(),
                name: xname("user.planted"),
                size: 0,
            },
        ),
        (
            "listxattr",
            Op::ListXattr {
                handle: f.clone(),
                size: 0,
            },
        ),
        (
            "removexattr",
            Op::RemoveXattr {
                handle: f.clone(),
                name: xname("user.planted"),
            },
        ),
        (
            "fsync",
            Op::Fsync {
                handle: f.clone(),
                open: None,
                datasync: false,
            },
        ),
        (
            "fallocate",
            Op::Fallocate {
                handle: f.clone(),
                open: None,
                mode: 0,
                offset: 0,
                len: 1 << 20,
            },
        ),
        ("statfs", Op::StatFs { handle: f.clone() }),
    ];
    for (what, op) in ops {
        stale(what, c.op(op));
    }
}

/// The names in a directory, sorted.
fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    v.sort();
    v
}

/// A file outside is as the test left it: content, mode, times, no xattr.
fn unchanged(path: &Path, content: &[u8], before: &std::fs::Metadata) {
    assert_eq!(std::fs::read(path).unwrap(), content, "{}", path.display());
    let now = std::fs::metadata(path).unwrap();
    assert_eq!(now.mode(), before.mode(), "{}", path.display());
    assert_eq!(now.mtime(), before.mtime(), "{}", path.display());
    assert_eq!(now.mtime_nsec(), before.mtime_nsec(), "{}", path.display());
    assert_eq!(now.len(), before.len(), "{}", path.display());
    let xattrs = std::process::Command::new("getfattr")
        .arg("-d")
        .arg(path)
        .output();
    if let Ok(out) = xattrs {
        let out = String::from_utf8_lossy(&out.stdout);
        assert!(!out.contains("planted"), "{out}");
    }
}

/// The whole attack: move the held directory out, then the held file; everything through
/// their handles is stale and the outside untouched; moved back, they work again; moved
/// within the export, they keep working.
fn moved_out_of_the_export(h: &Harness, uid: u32, mv: &mut Mover<'_>) {
    let mut c = h.client();
    let held = set_up(h, &mut c, uid);
    let inside = h.export.join("mine");
    let drop_dir = h.outside.join("drop");
    // Everything works while inside.
    assert_eq!(c.lookup(&held.dir, "inner.txt").unwrap().handle, held.inner);
    assert_eq!(c.list(&held.dir, 100).unwrap(), ["inner.txt"]);
    assert_eq!(c.read(&held.inner, None, 0, 100).unwrap().0, b"inner");
    assert_eq!(c.read(&held.file, None, 0, 100).unwrap().0, b"file");

    // The directory goes out.
    mv(&inside.join("held"), &drop_dir.join("held"));
    let outside_dir_before = std::fs::metadata(drop_dir.join("held")).unwrap();
    let inner_before = std::fs::metadata(drop_dir.join("held/inner.txt")).unwrap();
    directory_is_stale(&mut c, &held, &held.dir);
    // A file in it is outside too.
    file_is_stale(&mut c, &held, &held.inner);
    assert_eq!(names(&drop_dir.join("held")), ["inner.txt"]);
    unchanged(&drop_dir.join("held/inner.txt"), b"inner", &inner_before);
    let after = std::fs::metadata(drop_dir.join("held")).unwrap();
    assert_eq!(after.mode(), outside_dir_before.mode());
    assert_eq!(after.mtime(), outside_dir_before.mtime());
    assert_eq!(names(&h.outside), ["drop", "secret.txt"]);
    assert_eq!(
        std::fs::read(h.outside.join("secret.txt")).unwrap(),
        b"outside the export"
    );
    assert!(h.export.join("victim").exists(), "nothing moved the victim");
    assert_eq!(names(&h.export), ["mine", "victim"]);

    // Back inside, the same handles work again.
    mv(&drop_dir.join("held"), &inside.join("held"));
    assert_eq!(c.lookup(&held.dir, "inner.txt").unwrap().handle, held.inner);
    assert_eq!(c.list(&held.dir, 100).unwrap(), ["inner.txt"]);
    assert_eq!(c.read(&held.inner, None, 0, 100).unwrap().0, b"inner");

    // The file goes out.
    mv(&inside.join("file.txt"), &drop_dir.join("file.txt"));
    let file_before = std::fs::metadata(drop_dir.join("file.txt")).unwrap();
    file_is_stale(&mut c, &held, &held.file);
    unchanged(&drop_dir.join("file.txt"), b"file", &file_before);
    // An open made while it was inside is a descriptor the client holds: it still reads,
    // as a local one would (opens do not go through handles).
    assert_eq!(
        c.read(&held.file, Some(held.file_open), 0, 100).unwrap().0,
        b"file"
    );
    assert_eq!(names(&h.export), ["mine", "victim"]);
    assert_eq!(names(&drop_dir), ["file.txt"]);
    mv(&drop_dir.join("file.txt"), &inside.join("file.txt"));
    assert_eq!(c.read(&held.file, None, 0, 100).unwrap().0, b"file");

    // Renames within the export keep every handle working.
    mv(&inside.join("held"), &inside.join("sub/held2"));
    mv(&inside.join("file.txt"), &inside.join("sub/file2.txt"));
    assert_eq!(c.lookup(&held.dir, "inner.txt").unwrap().handle, held.inner);
    assert_eq!(c.read(&held.inner, None, 0, 100).unwrap().0, b"inner");
    assert_eq!(c.read(&held.file, None, 0, 100).unwrap().0, b"file");
    let (_, o) = c.create(&held.dir, "new.txt", 0o644, RW).unwrap();
    c.op(Op::Release { open: o }).unwrap();
    assert!(inside.join("sub/held2/new.txt").exists());
    h.outside_untouched_but_drop();
}

impl Harness {
    /// As `outside_untouched`, allowing the `drop` directory the movers use (empty again).
    fn outside_untouched_but_drop(&self) {
        assert_eq!(names(&self.outside), ["drop", "secret.txt"]);
        assert!(names(&self.outside.join("drop")).is_empty());
        assert_eq!(
            std::fs::read(self.outside.join("secret.txt")).unwrap(),
            b"outside the export"
        );
    }
}

fn root_mover(from: &Path, to: &Path) {
    std::fs::rename(from, to).unwrap();
}

#[test]
fn moved_out_directories_and_files_are_stale_on_disk() {
    let h = Harness::new();
    let c = h.client();
    let root = c.root();
    assert!(
        handles::is_connectable(&root),
        "the temporary directory's file system (ext4 here) makes connectable handles"
    );
    drop(c);
    moved_out_of_the_export(&h, 0, &mut root_mover);
}

#[test]
fn moved_out_directories_and_files_are_stale_on_tmpfs() {
    let t = Tmpfs::mount();
    let h = Harness::on(t.path(), |_| {});
    let root = h.client().root();
    assert!(!handles::is_connectable(&root), "tmpfs has none");
    moved_out_of_the_export(&h, 0, &mut root_mover);
}

/// The child that moves files around as an unprivileged local user: `mv FROM\tTO` renames.
fn run_child(role: &[String]) {
    assert_eq!(role, ["mover"], "bad child role");
    test_support::say("READY");
    for line in test_support::commands() {
        let Some(("mv", args)) = line.split_once(' ') else {
            test_support::say(format!("ERR bad command {line}"));
            continue;
        };
        let (from, to) = args.split_once('\t').unwrap_or((args, ""));
        match std::fs::rename(from, to) {
            Ok(()) => test_support::say("OK"),
            Err(e) => test_support::say(format!("ERR {e}")),
        }
    }
}

test_support::child_entry!(run_child);

fn unprivileged_mover(base: Option<&Path>) {
    let attacker = test_support::test_user("attacker");
    let h = match base {
        Some(b) => Harness::on(b, |_| {}),
        None => Harness::new(),
    };
    let (mut peer, ready) = test_support::Peer::spawn_as(&attacker, "child_process", &["mover"]);
    assert_eq!(ready, "READY");
    // It may not touch what is not its own (the harness's directories may have been made
    // under the server's umask of 0).
    for dir in [&h.export, &h.outside] {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    std::fs::set_permissions(h.tmp.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
    let refused = peer.cmd(&format!(
        "mv {}\t{}",
        h.outside.join("secret.txt").display(),
        h.outside.join("stolen").display()
    ));
    assert!(refused.starts_with("ERR"), "{refused}");
    let mut mv = |from: &Path, to: &Path| {
        peer.ok(&format!("mv {}\t{}", from.display(), to.display()));
    };
    moved_out_of_the_export(&h, attacker.uid, &mut mv);
}

#[test]
fn an_unprivileged_local_user_moving_things_out_reaches_nothing_on_disk() {
    unprivileged_mover(None);
}

#[test]
fn an_unprivileged_local_user_moving_things_out_reaches_nothing_on_tmpfs() {
    let t = Tmpfs::mount();
    unprivileged_mover(Some(t.path()));
}

#[test]
fn without_the_subtree_check_a_moved_out_directory_is_reachable() {
    // What `--no-subtree-check` gives up, shown once so that the flag is known to matter.
    let h = Harness::with(|c| c.subtree_check = false);
    let mut c = h.client();
    let held = set_up(&h, &mut c, 0);
    assert!(!handles::is_connectable(&held.dir));
    std::fs::rename(h.export.join("mine/held"), h.outside.join("drop/held")).unwrap();
    assert_eq!(c.list(&held.dir, 100).unwrap(), ["inner.txt"]);
    assert_eq!(c.read(&held.inner, None, 0, 100).unwrap().0, b"inner");
}

#[test]
fn a_file_linked_from_two_directories_is_one_file_through_both() {
    let h = Harness::new();
    let mut c = h.client();
    let root = c.root();
    let a = c.mkdir(&root, "a", 0o755).unwrap().handle;
    let b = c.mkdir(&root, "b", 0o755).unwrap().handle;
    let (f, o) = c.create(&a, "f", 0o644, RW).unwrap();
    c.write(&f.handle, Some(o), 0, b"one").unwrap();
    c.op(Op::Release { open: o }).unwrap();
    let g = c
        .entry(Op::Link {
            handle: f.handle.clone(),
            dir: b.clone(),
            name: name("g"),
        })
        .unwrap();
    // Each records the directory it was reached in: two handles, one inode.
    assert_ne!(f.handle, g.handle);
    assert_eq!(f.attr.ino, g.attr.ino);
    assert_eq!(g.attr.nlink, 2);
    assert_eq!(c.lookup(&b, "g").unwrap().handle, g.handle);
    c.write(&g.handle, None, 3, b" two").unwrap();
    assert_eq!(c.read(&f.handle, None, 0, 100).unwrap().0, b"one two");
    // Through a's name gone, b's still reaches it, by either handle.
    c.op(Op::Unlink {
        dir: a.clone(),
        name: name("f"),
    })
    .unwrap();
    assert_eq!(c.read(&g.handle, None, 0, 100).unwrap().0, b"one two");
    assert_eq!(c.getattr(&f.handle).unwrap().nlink, 1);
    // With b moved out, neither does.
    std::fs::rename(h.export.join("b"), h.outside.join("b")).unwrap();
    assert_eq!(c.getattr(&g.handle).unwrap_err(), Errno::ESTALE);
    assert_eq!(c.getattr(&f.handle).unwrap_err(), Errno::ESTALE);
    // A link from inside and one from outside: the file is inside, reachable.
    std::fs::hard_link(h.outside.join("b/g"), h.export.join("back")).unwrap();
    assert_eq!(c.read(&g.handle, None, 0, 100).unwrap().0, b"one two");
}

// --- The handle schemes one by one, without a server ---------------------------------------

struct Scene {
    tmp: tempfile::TempDir,
    export: PathBuf,
    outside: PathBuf,
    handles: Handles,
}

fn scene(base: &Path, options: HandleOptions) -> Scene {
    let tmp = tempfile::tempdir_in(base).unwrap();
    let export = tmp.path().join("export");
    let outside = tmp.path().join("outside");
    for d in ["export/a/held", "export/b", "outside"] {
        std::fs::create_dir_all(tmp.path().join(d)).unwrap();
    }
    std::fs::write(export.join("a/held/inner"), b"inner").unwrap();
    std::fs::write(export.join("a/file"), b"file").unwrap();
    let root = nix::fcntl::open(
        &export,
        nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_DIRECTORY,
        nix::sys::stat::Mode::empty(),
    )
    .unwrap();
    let handles = Handles::new(root, [7; 32], options).unwrap();
    Scene {
        tmp,
        export,
        outside,
        handles,
    }
}

impl Scene {
    fn mint(&self, path: &str) -> FileHandle {
        let fd = dfs_server::fs::open_beneath(
            self.handles.root(),
            path.as_bytes(),
            dfs_server::fs::PATH_FLAGS,
            0,
        )
        .unwrap();
        self.handles.mint(&fd).unwrap()
    }

    fn ino(&self, h: &FileHandle) -> Result<u64, Errno> {
        let fd = self.handles.resolve(h)?;
        Ok(nix::sys::stat::fstat(fd.as_ref()).unwrap().st_ino)
    }

    fn mv(&self, from: &str, to: &str) {
        std::fs::rename(self.tmp.path().join(from), self.tmp.path().join(to)).unwrap();
    }
}

/// A directory and files moved out and back, within, and the export itself renamed with
/// a decoy at its old name, for one scheme on one file system.
fn scheme_confines(base: &Path, kind: HandleKind, want: SubtreeCheck) {
    let s = scene(
        base,
        HandleOptions {
            subtree_check: true,
            kind,
        },
    );
    assert_eq!(s.handles.subtree_check(), want, "{kind:?}");
    let root = s.mint(".");
    let dir = s.mint("a/held");
    let inner = s.mint("a/held/inner");
    let file = s.mint("a/file");
    let ino = |p: &str| std::fs::metadata(s.tmp.path().join(p)).unwrap().ino();
    let all = [&root, &dir, &inner, &file];
    for h in all {
        s.ino(h).unwrap();
    }
    assert_eq!(s.ino(&dir).unwrap(), ino("export/a/held"));

    s.mv("export/a/held", "outside/held");
    assert_eq!(s.ino(&dir), Err(Errno::ESTALE));
    assert_eq!(s.ino(&inner), Err(Errno::ESTALE));
    s.ino(&file).unwrap();
    s.mv("outside/held", "export/a/held");
    assert_eq!(s.ino(&dir).unwrap(), ino("export/a/held"));
    assert_eq!(s.ino(&inner).unwrap(), ino("export/a/held/inner"));

    s.mv("export/a/file", "outside/file");
    assert_eq!(s.ino(&file), Err(Errno::ESTALE));
    s.mv("outside/file", "export/a/file");
    s.ino(&file).unwrap();

    // Within: a directory anywhere, a file into another directory (its dentry cached).
    s.mv("export/a/held", "export/b/held");
    s.mv("export/a/file", "export/b/file");
    assert_eq!(s.ino(&dir).unwrap(), ino("export/b/held"));
    assert_eq!(s.ino(&inner).unwrap(), ino("export/b/held/inner"));
    assert_eq!(s.ino(&file).unwrap(), ino("export/b/file"));

    // The export itself renamed, a decoy made at its old name, and the held directory moved
    // into the decoy at the very path it had: the name the server knew the export by
    // proves nothing.
    s.mv("export", "export-renamed");
    std::fs::create_dir_all(s.tmp.path().join("export/b")).unwrap();
    s.mv("export-renamed/b/held", "export/b/held");
    assert_eq!(s.ino(&dir), Err(Errno::ESTALE));
    assert_eq!(s.ino(&inner), Err(Errno::ESTALE));
    // Back in the renamed export, everything resolves.
    s.mv("export/b/held", "export-renamed/b/held");
    for h in all {
        s.ino(h).unwrap();
    }
    // A removed file's handle is stale.
    std::fs::remove_file(s.tmp.path().join("export-renamed/b/file")).unwrap();
    assert_eq!(s.ino(&file), Err(Errno::ESTALE));
    assert_eq!(s.ino(&root).unwrap(), ino("export-renamed"));
    let _ = (&s.export, &s.outside);
}

#[test]
fn every_scheme_confines_on_disk() {
    let base = std::env::temp_dir();
    scheme_confines(&base, HandleKind::Best, SubtreeCheck::Kernel);
    // Handles minted before connectable ones, checked by path.
    scheme_confines(&base, HandleKind::Plain, SubtreeCheck::ByPath);
    scheme_confines(&base, HandleKind::Volatile, SubtreeCheck::ByPath);
}

#[test]
fn every_scheme_confines_on_tmpfs() {
    let t = Tmpfs::mount();
    scheme_confines(t.path(), HandleKind::Best, SubtreeCheck::ByPath);
    scheme_confines(t.path(), HandleKind::Plain, SubtreeCheck::ByPath);
    scheme_confines(t.path(), HandleKind::Volatile, SubtreeCheck::ByPath);
}

#[test]
fn plain_handles_from_before_stay_valid_and_checked() {
    // A server that minted plain handles (before connectable ones, or unchecked) and one that
    // mints connectable ones share the key: the old handles still resolve, checked by path.
    let tmp = tempfile::tempdir().unwrap();
    let old = scene(
        tmp.path(),
        HandleOptions {
            subtree_check: true,
            kind: HandleKind::Plain,
        },
    );
    let dir = old.mint("a/held");
    let file = old.mint("a/file");
    assert!(!handles::is_connectable(&dir));
    let root = nix::fcntl::open(
        &old.export,
        nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_DIRECTORY,
        nix::sys::stat::Mode::empty(),
    )
    .unwrap();
    let new = Handles::new(root, [7; 32], HandleOptions::default()).unwrap();
    assert_eq!(new.subtree_check(), SubtreeCheck::Kernel);
    new.resolve(&dir).unwrap();
    new.resolve(&file).unwrap();
    old.mv("export/a/held", "outside/held");
    assert_eq!(new.resolve(&dir).unwrap_err(), Errno::ESTALE);
    // Unchecked, the same handle reaches outside: the check is what refuses it.
    let root = nix::fcntl::open(
        &old.export,
        nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_DIRECTORY,
        nix::sys::stat::Mode::empty(),
    )
    .unwrap();
    let unchecked = Handles::new(root, [7; 32], HandleOptions::new(false)).unwrap();
    assert_eq!(unchecked.subtree_check(), SubtreeCheck::Off);
    unchecked.resolve(&dir).unwrap();
}
