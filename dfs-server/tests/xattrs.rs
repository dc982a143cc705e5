//! Extended attributes by namespace and caller, through the protocol alone (no mount and no
//! client kernel in between, as a library client or the shim meets the server). The serving
//! thread keeps `CAP_SYS_ADMIN` whatever fsuid it acts as, so the privileged namespaces are the
//! server's to refuse: a caller who is not root after squashing gets what an unprivileged
//! process gets on a local file system. dfs-client/tests/users.rs compares every answer with
//! a local file system through a real mount.

mod common;

use std::ffi::CString;

use common::*;
use dfs_proto::handle::FileHandle;
use dfs_proto::msg::{Body, Op};
use dfs_proto::name::XattrName;
use dfs_proto::Errno;
use dfs_server::Squash;

/// Sets an attribute directly on the export, as root.
fn set_local(path: &std::path::Path, name: &str, value: &[u8]) {
    let p = CString::new(path.to_str().unwrap()).unwrap();
    let n = CString::new(name).unwrap();
    // SAFETY: both strings are NUL-terminated and live across the call; `value` is
    // `value.len()` readable bytes.
    let r = unsafe {
        libc::lsetxattr(
            p.as_ptr(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    assert_eq!(r, 0, "{name}: {}", std::io::Error::last_os_error());
}

fn x(name: &str) -> XattrName {
    XattrName::new(name.as_bytes()).unwrap()
}

fn get(c: &mut Client, f: &FileHandle, name: &str) -> Result<Vec<u8>, Errno> {
    match c.op(Op::GetXattr {
        handle: f.clone(),
        name: x(name),
        size: 256,
    })? {
        Body::XattrData(d) => Ok(d),
        other => panic!("{other:?}"),
    }
}

fn set(c: &mut Client, f: &FileHandle, name: &str, flags: u32) -> Result<(), Errno> {
    c.op(Op::SetXattr {
        handle: f.clone(),
        name: x(name),
        value: b"new".to_vec(),
        flags,
    })
    .map(|_| ())
}

fn remove(c: &mut Client, f: &FileHandle, name: &str) -> Result<(), Errno> {
    c.op(Op::RemoveXattr {
        handle: f.clone(),
        name: x(name),
    })
    .map(|_| ())
}

/// The names listed, sorted, and the size a size query gives.
fn list(c: &mut Client, f: &FileHandle) -> (Vec<String>, u32) {
    let Body::XattrSize(n) = c
        .op(Op::ListXattr {
            handle: f.clone(),
            size: 0,
        })
        .unwrap()
    else {
        panic!()
    };
    let Body::XattrData(d) = c
        .op(Op::ListXattr {
            handle: f.clone(),
            size: 4096,
        })
        .unwrap()
    else {
        panic!()
    };
    assert_eq!(d.len() as u32, n, "the size query and the list agree");
    let mut names: Vec<String> = d
        .split(|&b| b == 0)
        .filter(|n| !n.is_empty())
        .map(|n| String::from_utf8_lossy(n).into_owned())
        .collect();
    names.sort();
    (names, n)
}

/// A world-readable file of root's with an attribute in each namespace; its handle.
fn roots_file(h: &Harness, c: &mut Client) -> FileHandle {
    let p = h.export.join("f");
    std::fs::write(&p, "root's").unwrap();
    // Explicitly: the in-process server has set the process umask to 0.
    std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    for (n, v) in [("user.x", "u"), ("trusted.t", "t"), ("security.s", "s")] {
        set_local(&p, n, v.as_bytes());
    }
    c.lookup(&c.root(), "f").unwrap().handle
}

/// What a caller without the privilege gets, whether an ordinary user or root squashed to
/// nobody: `security.*` reads as stored and lists, `trusted.*` is absent and unlisted, and
/// neither may be set or removed; `user.*` is the kernel's to decide by the file's mode.
fn unprivileged(c: &mut Client, f: &FileHandle) {
    assert_eq!(get(c, f, "security.s"), Ok(b"s".to_vec()));
    assert_eq!(get(c, f, "security.selinux"), Err(Errno::ENODATA));
    assert_eq!(get(c, f, "security.capability"), Err(Errno::ENODATA));
    assert_eq!(get(c, f, "trusted.t"), Err(Errno::ENODATA));
    assert_eq!(get(c, f, "trusted.absent"), Err(Errno::ENODATA));
    assert_eq!(get(c, f, "user.x"), Ok(b"u".to_vec()));
    assert_eq!(get(c, f, "system.posix_acl_access"), Err(Errno::ENODATA));
    assert_eq!(get(c, f, "system.nfs4_acl"), Err(Errno::ENOTSUP));
    assert_eq!(list(c, f), (vec!["security.s".into(), "user.x".into()], 18));
    for n in ["trusted.t", "trusted.n", "security.s", "security.n"] {
        assert_eq!(set(c, f, n, 0), Err(Errno::EPERM), "set {n}");
        assert_eq!(remove(c, f, n), Err(Errno::EPERM), "remove {n}");
    }
    // Not the caller's file, and only readable: the kernel says EACCES.
    assert_eq!(set(c, f, "user.n", 0), Err(Errno::EACCES));
    assert_eq!(remove(c, f, "user.x"), Err(Errno::EACCES));
    // Bad flags come first, as in the kernel.
    assert_eq!(set(c, f, "trusted.n", 0x100), Err(Errno::EINVAL));
}

#[test]
fn an_ordinary_user_reads_security_and_not_trusted_attributes() {
    let h = Harness::new();
    let f = roots_file(&h, &mut h.client());
    unprivileged(&mut h.client_as(user(1000)), &f);
}

#[test]
fn root_squashed_to_nobody_is_unprivileged_too() {
    let h = Harness::with(|c| c.squash = Squash::Root);
    let mut c = h.client();
    let f = roots_file(&h, &mut c);
    unprivileged(&mut c, &f);
}

#[test]
fn root_unsquashed_has_every_namespace() {
    let h = Harness::new();
    let mut c = h.client();
    let f = roots_file(&h, &mut c);
    assert_eq!(get(&mut c, &f, "trusted.t"), Ok(b"t".to_vec()));
    assert_eq!(list(&mut c, &f).0, ["security.s", "trusted.t", "user.x"]);
    for n in ["trusted.n", "security.n", "user.n"] {
        set(&mut c, &f, n, libc::XATTR_CREATE as u32).unwrap();
        assert_eq!(get(&mut c, &f, n), Ok(b"new".to_vec()));
        remove(&mut c, &f, n).unwrap();
        assert_eq!(remove(&mut c, &f, n), Err(Errno::ENODATA));
    }
}
