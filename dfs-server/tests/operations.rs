//! Every operation of the protocol, and its error codes, driven in-process through a real
//! connection.

mod common;

use common::*;
use dfs_proto::attr::{FileKind, SetAttr, SetTime, Timestamp};
use dfs_proto::msg::{Body, Op, OpenFlags, RenameMode};
use dfs_proto::name::{LinkTarget, XattrName};
use dfs_proto::Errno;

#[test]
fn files_create_open_read_write_and_attributes() {
    let h = Harness::new();
    let mut c = h.client();
    let root = c.root();
    let (e, open) = c.create(&root, "a.txt", 0o640, RW).unwrap();
    assert_eq!(e.attr.kind(), FileKind::Regular);
    assert_eq!(
        e.attr.mode & 0o7777,
        0o640,
        "the mode is the client's, not the server's umask"
    );
    assert_eq!(
        c.write(&e.handle, Some(open), 0, b"hello, world").unwrap(),
        12
    );
    assert_eq!(
        c.read(&e.handle, Some(open), 7, 100).unwrap(),
        (b"world".to_vec(), true)
    );
    assert_eq!(
        c.read(&e.handle, Some(open), 0, 5).unwrap(),
        (b"hello".to_vec(), false)
    );
    assert_eq!(
        c.read(&e.handle, Some(open), 1000, 5).unwrap(),
        (vec![], true)
    );
    assert_eq!(
        std::fs::read(h.export.join("a.txt")).unwrap(),
        b"hello, world"
    );
    // Lookup finds the same handle; getattr sees the size.
    let found = c.lookup(&root, "a.txt").unwrap();
    assert_eq!(found.handle, e.handle);
    assert_eq!(c.getattr(&e.handle).unwrap().size, 12);
    assert_eq!(c.lookup(&root, "missing").unwrap_err(), Errno::ENOENT);
    // O_EXCL on an existing name; O_TRUNC empties; O_APPEND appends wherever asked.
    let excl = OpenFlags {
        exclusive: true,
        ..RW
    };
    assert_eq!(
        c.create(&root, "a.txt", 0o644, excl).unwrap_err(),
        Errno::EEXIST
    );
    let app = c
        .open(
            &e.handle,
            OpenFlags {
                append: true,
                write: true,
                ..Default::default()
            },
        )
        .unwrap();
    c.write(&e.handle, Some(app), 0, b"!").unwrap();
    assert_eq!(
        std::fs::read(h.export.join("a.txt")).unwrap(),
        b"hello, world!"
    );
    let t = c
        .open(
            &e.handle,
            OpenFlags {
                truncate: true,
                ..RW
            },
        )
        .unwrap();
    assert_eq!(c.getattr(&e.handle).unwrap().size, 0);
    // Flush, fsync, fdatasync, release; a released open no longer counts, the handle still does.
    for op in [
        Op::Flush {
            handle: e.handle.clone(),
            open: t,
        },
        Op::Fsync {
            handle: e.handle.clone(),
            open: Some(t),
            datasync: false,
        },
        Op::Fsync {
            handle: e.handle.clone(),
            open: Some(t),
            datasync: true,
        },
        Op::Release { open: t },
        Op::Release { open: app },
        Op::Release { open },
    ] {
        assert_eq!(c.op(op).unwrap(), Body::Done);
    }
    // Writing through a read-only open is the kernel's EBADF.
    let ro = c.open(&e.handle, RO).unwrap();
    assert_eq!(
        c.write(&e.handle, Some(ro), 0, b"x").unwrap_err(),
        Errno::EBADF
    );
    // Opening a directory for writing is EISDIR.
    assert_eq!(c.open(&root, RW).unwrap_err(), Errno::EISDIR);
}

#[test]
fn setattr_mode_owner_size_and_times() {
    let h = Harness::new();
    let mut c = h.client();
    let root = c.root();
    let (e, _) = c.create(&root, "f", 0o600, RW).unwrap();
    let set = |s: SetAttr| Op::SetAttr {
        handle: e.handle.clone(),
        open: None,
        set: s,
    };
    let Body::Attr(a) = c
        .op(set(SetAttr {
            mode: Some(0o4755),
            ..Default::default()
        }))
        .unwrap()
    else {
        panic!()
    };
    assert_eq!(a.mode & 0o7777, 0o4755);
    let Body::Attr(a) = c
        .op(set(SetAttr {
            uid: Some(1234),
            gid: Some(4321),
            ..Default::default()
        }))
        .unwrap()
    else {
        panic!()
    };
    assert_eq!((a.uid, a.gid), (1234, 4321));
    let Body::Attr(a) = c
        .op(set(SetAttr {
            size: Some(1 << 20),
            ..Default::default()
        }))
        .unwrap()
    else {
        panic!()
    };
    assert_eq!(a.size, 1 << 20);
    let when = Timestamp {
        secs: 1_000_000_000,
        nanos: 5,
    };
    let Body::Attr(a) = c
        .op(set(SetAttr {
            atime: Some(SetTime::At(when)),
            mtime: Some(SetTime::At(when)),
            ..Default::default()
        }))
        .unwrap()
    else {
        panic!()
    };
    assert_eq!((a.atime, a.mtime), (when, when));
    let Body::Attr(a) = c
        .op(set(SetAttr {
            mtime: Some(SetTime::Now),
            ..Default::default()
        }))
        .unwrap()
    else {
        panic!()
    };
    assert!(a.mtime.secs > when.secs);
    assert_eq!(a.atime, when, "an omitted time stays");
    // A directory cannot be truncated.
    let root_set = Op::SetAttr {
        handle: root.clone(),
        open: None,
        set: SetAttr {
            size: Some(0),
            ..Default::default()
        },
    };
    assert_eq!(c.op(root_set).unwrap_err(), Errno::EISDIR);
}

#[test]
fn directories_readdir_by_cookie_and_removal() {
    let h = Harness::new();
    let mut c = h.client();
    let root = c.root();
    let d = c.mkdir(&root, "d", 0o755).unwrap();
    assert_eq!(d.attr.kind(), FileKind::Directory);
    assert_eq!(c.mkdir(&root, "d", 0o755).unwrap_err(), Errno::EEXIST);
    let mut want = Vec::new();
    for i in 0..300 {
        let n = format!("file-{i:03}");
        c.create(&d.handle, &n, 0o644, RW).unwrap();
        want.push(n);
    }
    // Pages of 7 resume exactly where the last left off: nothing lost, nothing twice.
    assert_eq!(c.list(&d.handle, 7).unwrap(), want);
    assert_eq!(c.list(&d.handle, 1024).unwrap(), want);
    // Entries come with their handles and attributes; . and .. come without.
    let Body::Dir(p) = c
        .op(Op::ReadDir {
            dir: d.handle.clone(),
            cookie: 0,
            max_entries: 1024,
        })
        .unwrap()
    else {
        panic!()
    };
    assert!(p
        .entries
        .iter()
        .any(|e| e.name == b"." && e.entry.is_none()));
    let f = p.entries.iter().find(|e| e.name == b"file-000").unwrap();
    assert_eq!(f.kind, FileKind::Regular);
    assert_eq!(
        f.entry.as_ref().unwrap().handle,
        c.lookup(&d.handle, "file-000").unwrap().handle
    );
    // Removal and its errors.
    assert_eq!(
        c.op(Op::Rmdir {
            dir: root.clone(),
            name: name("d")
        })
        .unwrap_err(),
        Errno(libc::ENOTEMPTY)
    );
    assert_eq!(
        c.op(Op::Rmdir {
            dir: d.handle.clone(),
            name: name("file-000")
        })
        .unwrap_err(),
        Errno::ENOTDIR
    );
    assert_eq!(
        c.op(Op::Unlink {
            dir: root.clone(),
            name: name("d")
        })
        .unwrap_err(),
        Errno::EISDIR
    );
    for n in &want {
        c.op(Op::Unlink {
            dir: d.handle.clone(),
            name: name(n),
        })
        .unwrap();
    }
    assert_eq!(
        c.op(Op::Unlink {
            dir: d.handle.clone(),
            name: name("file-000")
        })
        .unwrap_err(),
        Errno::ENOENT
    );
    c.op(Op::Rmdir {
        dir: root.clone(),
        name: name("d"),
    })
    .unwrap();
    assert!(!h.export.join("d").exists());
    // The removed directory's handle is stale now.
    assert_eq!(c.getattr(&d.handle).unwrap_err(), Errno::ESTALE);
    // A readdir of a file is ENOTDIR.
    let (f, _) = c.create(&root, "plain", 0o644, RW).unwrap();
    assert_eq!(
        c.op(Op::ReadDir {
            dir: f.handle,
            cookie: 0,
            max_entries: 10
        })
        .unwrap_err(),
        Errno::ENOTDIR
    );
}

#[test]
fn mknod_rename_link_symlink() {
    let h = Harness::new();
    let mut c = h.client();
    let root = c.root();
    let fifo = c
        .entry(Op::Mknod {
            dir: root.clone(),
            name: name("pipe"),
            mode: libc::S_IFIFO | 0o644,
            rdev: 0,
        })
        .unwrap();
    assert_eq!(fifo.attr.kind(), FileKind::Fifo);
    // Opening a FIFO on the server would block it: refused.
    assert_eq!(c.open(&fifo.handle, RO).unwrap_err(), Errno(libc::ENXIO));
    let reg = c
        .entry(Op::Mknod {
            dir: root.clone(),
            name: name("reg"),
            mode: libc::S_IFREG | 0o600,
            rdev: 0,
        })
        .unwrap();
    assert_eq!(reg.attr.kind(), FileKind::Regular);
    let dev = Op::Mknod {
        dir: root.clone(),
        name: name("null"),
        mode: libc::S_IFCHR | 0o666,
        rdev: libc::makedev(1, 3),
    };
    // A device node: root (after squashing) may make one, as locally; nobody else may; and
    // the server never opens one for anybody.
    assert_eq!(
        h.client_as(user(1000)).op(dev.clone()).unwrap_err(),
        Errno::EPERM
    );
    let null = c.entry(dev).unwrap();
    assert_eq!(null.attr.kind(), FileKind::CharDevice);
    assert_eq!(null.attr.rdev, libc::makedev(1, 3));
    assert_eq!(c.open(&null.handle, RW).unwrap_err(), Errno(libc::ENXIO));
    assert_eq!(
        c.read(&null.handle, None, 0, 10).unwrap_err(),
        Errno(libc::ENXIO)
    );
    // Rename: replace, no-replace, exchange.
    let (a, _) = c.create(&root, "a", 0o644, RW).unwrap();
    let (b, _) = c.create(&root, "b", 0o644, RW).unwrap();
    let ren = |from: &str, to: &str, mode| Op::Rename {
        from_dir: root.clone(),
        from: name(from),
        to_dir: root.clone(),
        to: name(to),
        mode,
    };
    assert_eq!(
        c.op(ren("a", "b", RenameMode::NoReplace)).unwrap_err(),
        Errno::EEXIST
    );
    c.op(ren("a", "b", RenameMode::Exchange)).unwrap();
    assert_eq!(c.lookup(&root, "a").unwrap().handle, b.handle);
    assert_eq!(c.lookup(&root, "b").unwrap().handle, a.handle);
    c.op(ren("a", "b", RenameMode::Replace)).unwrap();
    assert_eq!(c.lookup(&root, "a").unwrap_err(), Errno::ENOENT);
    assert_eq!(c.lookup(&root, "b").unwrap().handle, b.handle);
    assert_eq!(
        c.op(ren("nothing", "x", RenameMode::Replace)).unwrap_err(),
        Errno::ENOENT
    );
    // Hard link: same inode, two links.
    let l = c
        .entry(Op::Link {
            handle: b.handle.clone(),
            dir: root.clone(),
            name: name("b2"),
        })
        .unwrap();
    assert_eq!(l.attr.ino, b.attr.ino);
    assert_eq!(l.attr.nlink, 2);
    assert_eq!(
        c.op(Op::Link {
            handle: root.clone(),
            dir: root.clone(),
            name: name("r")
        })
        .unwrap_err(),
        Errno::EPERM
    );
    // Symlink and readlink: the target is stored as given.
    let s = c
        .entry(Op::Symlink {
            dir: root.clone(),
            name: name("s"),
            target: LinkTarget::new(b"b/../x").unwrap(),
        })
        .unwrap();
    assert_eq!(s.attr.kind(), FileKind::Symlink);
    assert_eq!(
        c.op(Op::ReadLink {
            handle: s.handle.clone()
        })
        .unwrap(),
        Body::Target(LinkTarget::new(b"b/../x").unwrap())
    );
    assert_eq!(
        c.op(Op::ReadLink {
            handle: b.handle.clone()
        })
        .unwrap_err(),
        Errno::EINVAL
    );
    assert_eq!(
        std::fs::read_link(h.export.join("s")).unwrap().to_str(),
        Some("b/../x")
    );
}

#[test]
fn statfs_fallocate_and_xattrs() {
    let h = Harness::new();
    let mut c = h.client();
    let root = c.root();
    let Body::StatFs(s) = c
        .op(Op::StatFs {
            handle: root.clone(),
        })
        .unwrap()
    else {
        panic!()
    };
    assert!(s.blocks > 0 && s.bsize > 0 && s.namelen >= 255);
    let (f, open) = c.create(&root, "f", 0o644, RW).unwrap();
    c.op(Op::Fallocate {
        handle: f.handle.clone(),
        open: Some(open),
        mode: 0,
        offset: 0,
        len: 65536,
    })
    .unwrap();
    assert_eq!(c.getattr(&f.handle).unwrap().size, 65536);
    let keep = libc::FALLOC_FL_KEEP_SIZE as u32;
    c.op(Op::Fallocate {
        handle: f.handle.clone(),
        open: Some(open),
        mode: keep,
        offset: 65536,
        len: 65536,
    })
    .unwrap();
    assert_eq!(c.getattr(&f.handle).unwrap().size, 65536);
    assert_eq!(
        c.op(Op::Fallocate {
            handle: f.handle.clone(),
            open: None,
            mode: 0xdead_0000,
            offset: 0,
            len: 1
        })
        .unwrap_err(),
        Errno::EINVAL
    );
    // Extended attributes: set, size query, get, list, ERANGE, remove, ENODATA.
    let x = XattrName::new(b"user.comment").unwrap();
    let set = Op::SetXattr {
        handle: f.handle.clone(),
        name: x.clone(),
        value: b"hi there".to_vec(),
        flags: 0,
    };
    c.op(set).unwrap();
    let get = |size| Op::GetXattr {
        handle: f.handle.clone(),
        name: x.clone(),
        size,
    };
    assert_eq!(c.op(get(0)).unwrap(), Body::XattrSize(8));
    assert_eq!(
        c.op(get(100)).unwrap(),
        Body::XattrData(b"hi there".to_vec())
    );
    assert_eq!(c.op(get(3)).unwrap_err(), Errno::ERANGE);
    let create_only = Op::SetXattr {
        handle: f.handle.clone(),
        name: x.clone(),
        value: b"again".to_vec(),
        flags: libc::XATTR_CREATE as u32,
    };
    assert_eq!(c.op(create_only).unwrap_err(), Errno::EEXIST);
    assert_eq!(
        c.op(Op::ListXattr {
            handle: f.handle.clone(),
            size: 0
        })
        .unwrap(),
        Body::XattrSize(13)
    );
    assert_eq!(
        c.op(Op::ListXattr {
            handle: f.handle.clone(),
            size: 100
        })
        .unwrap(),
        Body::XattrData(b"user.comment\0".to_vec())
    );
    assert_eq!(
        c.op(Op::ListXattr {
            handle: f.handle.clone(),
            size: 5
        })
        .unwrap_err(),
        Errno::ERANGE
    );
    c.op(Op::RemoveXattr {
        handle: f.handle.clone(),
        name: x.clone(),
    })
    .unwrap();
    assert_eq!(c.op(get(100)).unwrap_err(), Errno::ENODATA);
    // trusted.* needs root after squashing.
    let mut u = h.client_as(user(1000));
    let t = Op::SetXattr {
        handle: f.handle.clone(),
        name: XattrName::new(b"trusted.x").unwrap(),
        value: b"1".to_vec(),
        flags: 0,
    };
    assert_eq!(u.op(t).unwrap_err(), Errno::EPERM);
}

#[test]
fn an_unlinked_open_file_stays_usable() {
    let h = Harness::new();
    let mut c = h.client();
    let root = c.root();
    let (f, open) = c.create(&root, "tmp", 0o600, RW).unwrap();
    c.write(&f.handle, Some(open), 0, b"still here").unwrap();
    c.op(Op::Unlink {
        dir: root.clone(),
        name: name("tmp"),
    })
    .unwrap();
    assert_eq!(
        c.read(&f.handle, Some(open), 0, 64).unwrap().0,
        b"still here"
    );
    let Body::Attr(a) = c
        .op(Op::GetAttr {
            handle: f.handle.clone(),
            open: Some(open),
        })
        .unwrap()
    else {
        panic!()
    };
    assert_eq!((a.size, a.nlink), (10, 0));
    c.op(Op::Release { open }).unwrap();
}

#[test]
fn large_blocks_travel_whole() {
    let h = Harness::new();
    let mut c = h.client();
    let root = c.root();
    let (f, open) = c.create(&root, "big", 0o644, RW).unwrap();
    let block: Vec<u8> = (0..dfs_proto::frame::MAX_DATA)
        .map(|i| (i * 7 + i / 4096) as u8)
        .collect();
    for i in 0..5u64 {
        assert_eq!(
            c.write(&f.handle, Some(open), i * block.len() as u64, &block)
                .unwrap() as usize,
            block.len()
        );
    }
    for i in 0..5u64 {
        let (got, eof) = c
            .read(
                &f.handle,
                Some(open),
                i * block.len() as u64,
                block.len() as u32,
            )
            .unwrap();
        assert!(got == block, "block {i} differs");
        assert!(!eof || i == 4);
    }
    // A read asking for more than a frame holds gets a frame's worth.
    let (got, _) = c.read(&f.handle, Some(open), 0, u32::MAX).unwrap();
    assert_eq!(got.len(), dfs_proto::frame::MAX_DATA);
}

/// A create says whether it made the file: a client may then know that the file has no
/// extended attributes (no `security.capability` a write must clear) without asking.
#[test]
fn a_create_says_whether_it_made_the_file() {
    let h = Harness::new();
    let mut c = h.client();
    let root = c.root();
    let made = |c: &mut Client, flags: OpenFlags| match c.op(Op::Create {
        dir: root.clone(),
        name: dfs_proto::name::Name::new(b"f").unwrap(),
        mode: 0o644,
        flags,
    }) {
        Ok(Body::Opened { created, .. }) => Ok(created),
        Ok(other) => panic!("not a create reply: {other:?}"),
        Err(e) => Err(e),
    };
    assert_eq!(made(&mut c, RW), Ok(true), "a new name");
    assert_eq!(made(&mut c, RW), Ok(false), "an existing file, opened");
    let trunc = OpenFlags {
        truncate: true,
        ..RW
    };
    std::fs::write(h.export.join("f"), b"old bytes").unwrap();
    assert_eq!(made(&mut c, trunc), Ok(false), "opened and truncated");
    assert_eq!(std::fs::read(h.export.join("f")).unwrap(), b"");
    let excl = OpenFlags {
        exclusive: true,
        ..RW
    };
    assert_eq!(made(&mut c, excl), Err(Errno::EEXIST));
    std::fs::remove_file(h.export.join("f")).unwrap();
    assert_eq!(made(&mut c, excl), Ok(true), "exclusively, a new name");
}
