//! The mount as its users meet it: an ordinary user, and root on a server that squashes root
//! (the default), through a real root-made mount (`allow_other`). Every extended-attribute
//! answer is compared with what the same caller gets on a local file system of the kind the
//! export lives on (ext4 under the temp dir, tmpfs under /dev/shm); everyday tools run as an
//! ordinary user without one error line, and what they make belongs to that user on the
//! server.

mod common;

use std::ffi::CString;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use common::*;
use test_support::{say, test_user, Peer, TestUser};

const ENTRY: &str = "child_process";

// ---------------------------------------------------------------------------------------
// Extended attributes by libc, no tools: `l*xattr`, so a symlink is itself asked.

fn cstr(s: &str) -> CString {
    CString::new(s).unwrap()
}

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// `lgetxattr` with a buffer of `size` bytes: the value, or with `size` 0 its length.
fn lget(path: &str, name: &str, size: usize) -> Result<Vec<u8>, i32> {
    let (p, n) = (cstr(path), cstr(name));
    let mut buf = vec![0u8; size];
    // SAFETY: both strings are NUL-terminated and live across the call; the buffer is
    // `buf.len()` writable bytes (a null pointer with length 0 asks for the size).
    let r = unsafe {
        libc::lgetxattr(
            p.as_ptr(),
            n.as_ptr(),
            if size == 0 {
                std::ptr::null_mut()
            } else {
                buf.as_mut_ptr().cast()
            },
            buf.len(),
        )
    };
    if r < 0 {
        return Err(errno());
    }
    if size == 0 {
        return Ok(r.to_string().into_bytes());
    }
    buf.truncate(r as usize);
    Ok(buf)
}

/// `llistxattr` with a buffer of `size` bytes: the names, or with `size` 0 the list's length.
fn llist(path: &str, size: usize) -> Result<Vec<String>, i32> {
    let p = cstr(path);
    let mut buf = vec![0u8; size];
    // SAFETY: as in `lget`.
    let r = unsafe {
        libc::llistxattr(
            p.as_ptr(),
            if size == 0 {
                std::ptr::null_mut()
            } else {
                buf.as_mut_ptr().cast()
            },
            buf.len(),
        )
    };
    if r < 0 {
        return Err(errno());
    }
    if size == 0 {
        return Ok(vec![format!("size={r}")]);
    }
    buf.truncate(r as usize);
    Ok(buf
        .split(|&b| b == 0)
        .filter(|n| !n.is_empty())
        .map(|n| String::from_utf8_lossy(n).into_owned())
        .collect())
}

fn lset(path: &str, name: &str, value: &[u8], flags: i32) -> Result<(), i32> {
    let (p, n) = (cstr(path), cstr(name));
    // SAFETY: both strings are NUL-terminated; `value` is `value.len()` readable bytes.
    let r = unsafe {
        libc::lsetxattr(
            p.as_ptr(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            flags,
        )
    };
    if r < 0 {
        return Err(errno());
    }
    Ok(())
}

fn lremove(path: &str, name: &str) -> Result<(), i32> {
    let (p, n) = (cstr(path), cstr(name));
    // SAFETY: both strings are NUL-terminated and live across the call.
    if unsafe { libc::lremovexattr(p.as_ptr(), n.as_ptr()) } < 0 {
        return Err(errno());
    }
    Ok(())
}

fn errno_name(e: i32) -> String {
    let name = match e {
        libc::EPERM => "EPERM",
        libc::ENOENT => "ENOENT",
        libc::EACCES => "EACCES",
        libc::EEXIST => "EEXIST",
        libc::EINVAL => "EINVAL",
        libc::ERANGE => "ERANGE",
        libc::ENODATA => "ENODATA",
        libc::EOPNOTSUPP => "EOPNOTSUPP",
        libc::E2BIG => "E2BIG",
        libc::EIO => "EIO",
        _ => return format!("errno {e}"),
    };
    name.to_owned()
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// Runs one command (`get PATH NAME SIZE`, `list PATH SIZE`, `set PATH NAME HEX FLAGS`,
/// `rm PATH NAME`) and describes its outcome.
fn xattr_command(line: &str) -> String {
    let w: Vec<&str> = line.split(' ').collect();
    let out = match w[..] {
        ["get", path, name, "0"] => {
            lget(path, name, 0).map(|v| format!("size={}", String::from_utf8_lossy(&v)))
        }
        ["get", path, name, size] => lget(path, name, size.parse().unwrap()).map(|v| hex(&v)),
        ["list", path, size] => llist(path, size.parse().unwrap()).map(|mut names| {
            names.sort();
            names.join(",")
        }),
        ["set", path, name, value, flags] => {
            lset(path, name, &unhex(value), flags.parse().unwrap()).map(|()| String::new())
        }
        ["rm", path, name] => lremove(path, name).map(|()| String::new()),
        _ => panic!("bad command {line:?}"),
    };
    match out {
        Ok(v) => format!("OK {v}"),
        Err(e) => format!("ERR {}", errno_name(e)),
    }
}

/// The child: runs xattr commands as whoever it was started as.
fn run_child(role: &[String]) {
    assert_eq!(role.first().map(String::as_str), Some("xattr"), "{role:?}");
    say("OK ready");
    for line in test_support::commands() {
        say(xattr_command(&line));
    }
}

test_support::child_entry!(run_child);

// ---------------------------------------------------------------------------------------
// Who runs, and the trees they run on.

/// `nobody`, the identity root is squashed to.
fn nobody() -> TestUser {
    TestUser {
        name: "nobody".into(),
        uid: 65534,
        gid: 65534,
    }
}

/// A child running xattr commands as `user` (root if `None`).
fn caller(user: Option<&TestUser>) -> Peer {
    let (peer, ready) = match user {
        None => Peer::spawn(ENTRY, &["xattr"]),
        Some(u) => Peer::spawn_as(u, ENTRY, &["xattr"]),
    };
    assert_eq!(ready, "OK ready");
    peer
}

/// Where a caller stands: the file kinds and owners of the tree it is asked about.
const FILES: [&str; 8] = [
    "own", "other", "private", "shared", "owndir", "sticky", "fifo", "link",
];

/// A POSIX ACL in its xattr form: owner rw, user 12345 r, group r, mask r, other r.
fn acl() -> Vec<u8> {
    let mut v = 2u32.to_le_bytes().to_vec();
    for (tag, perm, id) in [
        (0x01u16, 6u16, u32::MAX),
        (0x02, 4, 12345),
        (0x04, 4, u32::MAX),
        (0x10, 4, u32::MAX),
        (0x20, 4, u32::MAX),
    ] {
        v.extend_from_slice(&tag.to_le_bytes());
        v.extend_from_slice(&perm.to_le_bytes());
        v.extend_from_slice(&id.to_le_bytes());
    }
    v
}

/// A version-2 file capability (`cap_net_bind_service=p`).
fn file_cap() -> Vec<u8> {
    let mut v = 0x0200_0000u32.to_le_bytes().to_vec();
    v.extend_from_slice(&(1u32 << 10).to_le_bytes());
    v.extend_from_slice(&[0u8; 12]);
    v
}

/// Builds, as root, the tree every caller is asked about: files of the caller's (`own`) and
/// of someone else (`other`), one only its owner may read, one anyone may write, directories,
/// a sticky directory, a FIFO and a symlink, each with a `user.`, a `trusted.` and a
/// `security.` attribute where the kernel allows one.
fn build_tree(dir: &Path, own: (u32, u32), other: (u32, u32)) {
    use std::os::unix::fs::{chown, lchown, symlink};
    std::fs::create_dir(dir).unwrap();
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let file = |name: &str, owner: (u32, u32), mode: u32| {
        let p = dir.join(name);
        std::fs::write(&p, name).unwrap();
        chown(&p, Some(owner.0), Some(owner.1)).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
    };
    file("own", own, 0o644);
    file("other", other, 0o644);
    file("private", other, 0o600);
    file("shared", other, 0o666);
    for (name, owner, mode) in [("owndir", own, 0o755), ("sticky", other, 0o1777)] {
        let p = dir.join(name);
        std::fs::create_dir(&p).unwrap();
        chown(&p, Some(owner.0), Some(owner.1)).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
    }
    nix::unistd::mkfifo(
        &dir.join("fifo"),
        nix::sys::stat::Mode::from_bits_truncate(0o644),
    )
    .unwrap();
    chown(dir.join("fifo"), Some(own.0), Some(own.1)).unwrap();
    symlink("own", dir.join("link")).unwrap();
    lchown(dir.join("link"), Some(own.0), Some(own.1)).unwrap();
    for f in FILES {
        let p = dir.join(f);
        let p = p.to_str().unwrap();
        // user.* only where the kernel has it (regular files and directories).
        let _ = lset(p, "user.x", b"user value", 0);
        lset(p, "trusted.t", b"trusted value", 0).unwrap();
        lset(p, "security.s", b"security value", 0).unwrap();
    }
}

/// The calls asked about every file in the tree, in order (sets and removes change what the
/// later ones see). `{}` stands for the file's path.
fn script() -> Vec<String> {
    let acl = hex(&acl());
    let cap = hex(&file_cap());
    let v = hex(b"new");
    let mut s: Vec<String> = vec!["list {} 4096".into(), "list {} 0".into()];
    for name in [
        "user.x",
        "trusted.t",
        "security.s",
        "security.selinux",
        "security.capability",
        "system.posix_acl_access",
        "system.posix_acl_default",
        "user.absent",
        "trusted.absent",
        "system.nfs4_acl",
        "other.x",
    ] {
        s.push(format!("get {{}} {name} 256"));
    }
    s.extend([
        "get {} user.x 0".into(),
        "get {} user.x 1".into(),
        "get {} trusted.t 0".into(),
        "get {} security.s 0".into(),
        "get {} security.s 1".into(),
        format!("set {{}} user.x {v} {}", libc::XATTR_CREATE),
        format!("set {{}} user.absent {v} {}", libc::XATTR_REPLACE),
        format!("set {{}} user.n {v} 0"),
        format!("set {{}} trusted.t {v} 0"),
        format!("set {{}} trusted.n {v} {}", libc::XATTR_CREATE),
        format!("set {{}} security.s {v} {}", libc::XATTR_REPLACE),
        format!("set {{}} security.n {v} 0"),
        format!("set {{}} security.capability {cap} 0"),
        format!("set {{}} system.posix_acl_access {acl} 0"),
        format!("set {{}} system.posix_acl_default {acl} 0"),
        "rm {} user.x".into(),
        "rm {} trusted.t".into(),
        "rm {} security.s".into(),
        "rm {} user.absent".into(),
        "rm {} trusted.absent".into(),
        "rm {} security.absent".into(),
        "rm {} system.posix_acl_default".into(),
        "list {} 4096".into(),
        "get {} user.n 256".into(),
        "get {} trusted.n 256".into(),
        "get {} security.n 256".into(),
        "get {} security.capability 256".into(),
        "get {} system.posix_acl_access 256".into(),
        "rm {} system.posix_acl_access".into(),
        "rm {} security.capability".into(),
        "list {} 4096".into(),
    ]);
    s
}

/// Runs the script on every file of the tree at `dir` through `peer`: one line per call,
/// `FILE CALL -> ANSWER`.
fn answers(peer: &mut Peer, dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for f in FILES {
        let path = dir.join(f);
        for call in script() {
            let line = call.replace("{}", path.to_str().unwrap());
            let shown = call.replace("{}", f);
            out.push(format!("{shown} -> {}", peer.cmd(&line)));
        }
    }
    out
}

/// A server (`squash` as given to --squash, or the default if `None`) and its mount, both
/// run by root, under `base`; the mount admits other users.
struct Served {
    _server: ServerProc,
    mount: MountProc,
    export: PathBuf,
}

fn serve(base: &Path, name: &str, squash: Option<&str>) -> Served {
    let export = base.join(format!("export-{name}"));
    std::fs::create_dir(&export).unwrap();
    std::fs::set_permissions(&export, std::fs::Permissions::from_mode(0o755)).unwrap();
    let extra: Vec<&str> = match squash {
        Some(s) => vec!["--squash", s],
        None => vec![],
    };
    let server = ServerProc::launch(
        &[],
        &fresh_addr(),
        &export,
        &base.join(format!("key-{name}")),
        &extra,
    );
    let mount = MountProc::start(&server.addr, &base.join(format!("mnt-{name}")), &[]);
    Served {
        _server: server,
        mount,
        export,
    }
}

/// A temporary directory that every user may pass through.
fn open_tempdir_in(parent: &str) -> tempfile::TempDir {
    let tmp = tempfile::tempdir_in(parent).unwrap();
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    tmp
}

/// For each caller through each mount, runs the same calls on a fresh tree on the mount and
/// on a fresh tree in a local directory on the file system the export lives on, as the
/// identity the server gives that caller, and compares every answer.
fn xattrs_answer_as_locally(parent: &str) {
    let user = test_user("user");
    let owner = test_user("owner");
    let tmp = open_tempdir_in(parent);
    let local = tmp.path().join("local");
    std::fs::create_dir(&local).unwrap();
    std::fs::set_permissions(&local, std::fs::Permissions::from_mode(0o755)).unwrap();
    let squashing = serve(tmp.path(), "default", None);
    let trusting = serve(tmp.path(), "none", Some("none"));
    let id = |u: &TestUser| (u.uid, u.gid);
    // (what, mount, the caller on the mount, who it is on the server)
    let cases: [(&str, &Served, Option<&TestUser>, Option<TestUser>); 4] = [
        ("root, --squash none", &trusting, None, None),
        (
            "root, default squash (nobody)",
            &squashing,
            None,
            Some(nobody()),
        ),
        (
            "ordinary user, default squash",
            &squashing,
            Some(&user),
            Some(user.clone()),
        ),
        (
            "ordinary user, --squash none",
            &trusting,
            Some(&user),
            Some(user.clone()),
        ),
    ];
    let mut report = Vec::new();
    for (n, (what, served, on_mount, on_server)) in cases.iter().enumerate() {
        let own = on_server.as_ref().map_or((0, 0), id);
        let tree = format!("case{n}");
        build_tree(&served.export.join(&tree), own, id(&owner));
        build_tree(&local.join(&tree), own, id(&owner));
        let mut remote = caller(*on_mount);
        let mut here = caller(on_server.as_ref());
        let got = answers(&mut remote, &served.mount.mp.join(&tree));
        let want = answers(&mut here, &local.join(&tree));
        let differ: Vec<String> = got
            .iter()
            .zip(&want)
            .filter(|(g, w)| g != w)
            .map(|(g, w)| format!("  mount: {g}\n  local: {w}"))
            .collect();
        println!(
            "{what}: {} calls, {} differ from {parent}",
            got.len(),
            differ.len()
        );
        if !differ.is_empty() {
            report.push(format!("{what}:\n{}", differ.join("\n")));
        }
    }
    assert!(
        report.is_empty(),
        "xattr answers differ from a local file system ({parent}):\n{}",
        report.join("\n")
    );
}

#[test]
fn xattrs_answer_as_on_the_local_disk() {
    xattrs_answer_as_locally(&std::env::temp_dir().to_string_lossy());
}

#[test]
fn xattrs_answer_as_on_tmpfs() {
    xattrs_answer_as_locally("/dev/shm");
}

// ---------------------------------------------------------------------------------------
// Everyday tools, as their users run them.

/// Asserts that a script's run succeeded and printed nothing on stderr; returns its stdout.
fn clean(what: &str, out: std::process::Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stderr.trim().is_empty(),
        "{what}: {}\nstderr:\n{stderr}\nstdout:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Every entry beneath `dir`, `dir` included, as (path, uid, gid).
fn owners(dir: &Path) -> Vec<(PathBuf, u32, u32)> {
    let mut all = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(p) = todo.pop() {
        let m = std::fs::symlink_metadata(&p).unwrap();
        if m.is_dir() {
            for e in std::fs::read_dir(&p).unwrap() {
                todo.push(e.unwrap().path());
            }
        }
        all.push((p, m.uid(), m.gid()));
    }
    all
}

/// Things of root's that every user may read: a directory, a file with attributes in each
/// namespace, a subdirectory.
fn shared_by_root(export: &Path) {
    let shared = export.join("shared");
    std::fs::create_dir(&shared).unwrap();
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::create_dir(shared.join("sub")).unwrap();
    std::fs::set_permissions(shared.join("sub"), std::fs::Permissions::from_mode(0o755)).unwrap();
    let f = shared.join("notes");
    std::fs::write(&f, "for everyone\n").unwrap();
    std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
    for (name, value) in [
        ("user.note", "u"),
        ("trusted.note", "t"),
        ("security.note", "s"),
    ] {
        lset(f.to_str().unwrap(), name, value.as_bytes(), 0).unwrap();
    }
}

/// What an ordinary user does in a directory of their own on the mount. Every line must run
/// without an error message: listing others' files (`ls -l` asks for `security.selinux` and
/// ACLs), copying them with their attributes (`cp -a` leaves out what the user may not set,
/// silently, as on a local disk), archives, a compiler, git.
const USER_SCRIPT: &str = r#"
ls -la .. ../shared
ls -lR .. > /dev/null
find .. -ls > /dev/null
stat ../shared/notes ../shared . > /dev/null
cat ../shared/notes > /dev/null
cp -a ../shared shared-copy
cp -a tagged tagged.copy
cp -a /usr/include/linux linux
diff -r /usr/include/linux linux
tar cf linux.tar linux
mkdir back
tar xf linux.tar -C back
diff -r linux back/linux
tar --xattrs -cf tagged.tar tagged
mkdir xback
tar --xattrs -xf tagged.tar -C xback
printf '#include <stdio.h>\nint main(void){puts("built on dfs");return 0;}\n' > hello.c
cc -O1 -o hello hello.c
./hello | grep -q 'built on dfs'
git init -q repo
cd repo
echo one > a
git add a
git -c user.email=t@e -c user.name=t commit -qm one
echo two >> a
git -c user.email=t@e -c user.name=t commit -qam two
test "$(git log --oneline | wc -l)" = 2
test -z "$(git status --porcelain)"
cd ..
ls -la . > /dev/null
find . -ls > /dev/null
test "$(stat -c %u hello.c)" = "$(id -u)"
"#;

#[test]
fn an_ordinary_user_works_with_everyday_tools() {
    let user = test_user("user");
    let tmp = open_tempdir_in(&std::env::temp_dir().to_string_lossy());
    for (name, squash) in [("default", None), ("none", Some("none"))] {
        let s = serve(tmp.path(), name, squash);
        shared_by_root(&s.export);
        // A home of the user's own, with a file carrying a user attribute.
        let home = s.export.join("home");
        std::fs::create_dir(&home).unwrap();
        std::os::unix::fs::chown(&home, Some(user.uid), Some(user.gid)).unwrap();
        let tagged = home.join("tagged");
        std::fs::write(&tagged, "tagged\n").unwrap();
        std::os::unix::fs::chown(&tagged, Some(user.uid), Some(user.gid)).unwrap();
        lset(tagged.to_str().unwrap(), "user.tag", b"hello", 0).unwrap();

        let out = sh_as(
            &user,
            &s.mount.mp.join("home"),
            USER_SCRIPT,
            std::time::Duration::from_secs(300),
        );
        let listing = clean(&format!("as {} on --squash {name}", user.name), out);
        assert!(
            listing.contains("notes") && !listing.contains('?'),
            "{listing}"
        );

        // On the server, everything the user made is theirs.
        let foreign: Vec<_> = owners(&home)
            .into_iter()
            .filter(|(_, uid, gid)| (*uid, *gid) != (user.uid, user.gid))
            .collect();
        assert!(
            foreign.is_empty(),
            "not the user's on the server: {foreign:?}"
        );
        let at = |p: &Path| p.to_str().unwrap().to_owned();
        // cp -a and tar --xattrs kept the user attribute; the copy of root's file has the
        // user's attribute and none the user may not set.
        for copy in [home.join("tagged.copy"), home.join("xback/tagged")] {
            assert_eq!(lget(&at(&copy), "user.tag", 64), Ok(b"hello".to_vec()));
        }
        let notes = at(&home.join("shared-copy/notes"));
        assert_eq!(lget(&notes, "user.note", 64), Ok(b"u".to_vec()));
        assert_eq!(lget(&notes, "security.note", 64), Err(libc::ENODATA));
        assert_eq!(lget(&notes, "trusted.note", 64), Err(libc::ENODATA));
        println!(
            "--squash {name}: everyday tools as {} ran without an error",
            user.name
        );
        s.mount.umount();
    }
}

#[test]
fn root_on_a_squashing_server_reads_what_everyone_may_read() {
    let tmp = open_tempdir_in(&std::env::temp_dir().to_string_lossy());
    let s = serve(tmp.path(), "default", None);
    shared_by_root(&s.export);
    let private = s.export.join("private");
    std::fs::write(&private, "root only\n").unwrap();
    std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o600)).unwrap();
    let drop = s.export.join("drop");
    std::fs::create_dir(&drop).unwrap();
    std::fs::set_permissions(&drop, std::fs::Permissions::from_mode(0o1777)).unwrap();
    let mp = &s.mount.mp;
    let bash = |script: &str| {
        run(std::process::Command::new("bash")
            .args(["-euo", "pipefail", "-c", script])
            .current_dir(mp))
    };

    // Everything world-readable lists and reads, with no error line.
    let listing = clean(
        "root listing a default-squash mount",
        bash(&format!(
            "ls; ls -la; ls -laR shared; find . -ls; stat shared/notes private; cat shared/notes; \
             cp -a shared {}/copy; test -d drop",
            tmp.path().display()
        )),
    );
    assert!(
        listing.contains("notes") && listing.contains("for everyone") && !listing.contains('?'),
        "{listing}"
    );
    // ... with the attributes anyone may read: user.* and security.*, not trusted.*.
    let copy = tmp.path().join("copy/notes");
    let copy = copy.to_str().unwrap();
    assert_eq!(lget(copy, "user.note", 64), Ok(b"u".to_vec()));
    assert_eq!(lget(copy, "security.note", 64), Ok(b"s".to_vec()));
    assert_eq!(lget(copy, "trusted.note", 64), Err(libc::ENODATA));

    // Root is nobody there: what only root may read stays closed, what it makes is nobody's.
    let out = bash("cat private");
    assert!(
        !out.status.success() && String::from_utf8_lossy(&out.stderr).contains("Permission denied"),
        "{out:?}"
    );
    let out = bash("mkdir shared/mine");
    assert!(
        !out.status.success() && String::from_utf8_lossy(&out.stderr).contains("Permission denied"),
        "{out:?}"
    );
    clean(
        "root writing to a sticky world-writable directory",
        bash("echo mine > drop/mine"),
    );
    let m = std::fs::metadata(drop.join("mine")).unwrap();
    assert_eq!((m.uid(), m.gid()), (65534, 65534));
    s.mount.umount();
}
