//! Long caches that stay right: two mounts of one export, and programs on the server, see
//! each other's changes at once although the kernel caches attributes and names for a
//! minute (the server's notices drop what changed). Each check allows a few seconds, far
//! below the minute a missed notice would leave a stale answer for.

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::time::{Duration, Instant};

use common::*;

/// Far below the 60 s the kernel caches for while notices hold.
const SOON: Duration = Duration::from_secs(5);

/// Waits until `f` holds, at most [`SOON`]; says what it waited for if it never did.
fn soon(what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(
            start.elapsed() < SOON,
            "{what}: still not seen after {SOON:?}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn size(p: &Path) -> Option<u64> {
    std::fs::symlink_metadata(p).ok().map(|m| m.len())
}

fn mode(p: &Path) -> Option<u32> {
    std::fs::symlink_metadata(p).ok().map(|m| m.mode() & 0o7777)
}

struct Setup {
    tmp: tempfile::TempDir,
}

impl Setup {
    fn new() -> Setup {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir(tmp.path().join("export")).unwrap();
        Setup { tmp }
    }
    fn export(&self) -> std::path::PathBuf {
        self.tmp.path().join("export")
    }
    fn server(&self) -> ServerProc {
        ServerProc::start(&self.export(), &self.tmp.path().join("key"), &[])
    }
    /// A mount whose caches, without notices, would hold for a minute: what it sees at once
    /// it learned from a notice.
    fn mount(&self, server: &ServerProc, name: &str) -> MountProc {
        MountProc::start(
            &server.addr,
            &self.tmp.path().join(name),
            &["attr_timeout=60,entry_timeout=60"],
        )
    }
}

#[test]
fn two_mounts_see_each_others_changes_at_once() {
    let s = Setup::new();
    let server = s.server();
    let a = s.mount(&server, "a");
    let b = s.mount(&server, "b");
    let (pa, pb) = (a.mp.clone(), b.mp.clone());

    std::fs::write(pa.join("f"), b"one").unwrap();
    soon("a new file", || size(&pb.join("f")) == Some(3));
    // B now caches f's attributes and name; each change by A must reach it.
    assert_eq!(std::fs::read(pb.join("f")).unwrap(), b"one");
    std::fs::write(pa.join("f"), b"three").unwrap();
    soon("a write's new size", || size(&pb.join("f")) == Some(5));
    assert_eq!(std::fs::read(pb.join("f")).unwrap(), b"three");
    // Same size, new bytes: B's cached pages go too.
    std::fs::write(pa.join("f"), b"THREE").unwrap();
    soon("new bytes of the same size", || {
        std::fs::read(pb.join("f")).unwrap() == b"THREE"
    });
    std::fs::set_permissions(pa.join("f"), std::fs::Permissions::from_mode(0o600)).unwrap();
    soon("a chmod", || mode(&pb.join("f")) == Some(0o600));
    std::fs::rename(pa.join("f"), pa.join("g")).unwrap();
    soon("a rename", || {
        size(&pb.join("f")).is_none() && size(&pb.join("g")) == Some(5)
    });
    std::fs::remove_file(pa.join("g")).unwrap();
    soon("an unlink", || size(&pb.join("g")).is_none());
    std::fs::create_dir(pa.join("d")).unwrap();
    soon("a new directory", || pb.join("d").is_dir());
    let names = |p: &Path| {
        let mut v: Vec<_> = std::fs::read_dir(p)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        v.sort();
        v
    };
    assert!(names(&pb.join("d")).is_empty());
    std::fs::write(pa.join("d/x"), b"x").unwrap();
    soon("a listing", || names(&pb.join("d")).len() == 1);
    // And the other way round.
    std::fs::write(pb.join("d/y"), b"yy").unwrap();
    soon("B's file at A", || size(&pa.join("d/y")) == Some(2));
    // A stat of what did not change is answered by B's own caches: many, quickly.
    let start = Instant::now();
    for _ in 0..2000 {
        assert_eq!(size(&pb.join("d/y")), Some(2));
    }
    assert!(start.elapsed() < Duration::from_secs(10));
    a.umount();
    b.umount();
}

#[test]
fn programs_on_the_server_are_seen_at_once() {
    let s = Setup::new();
    let server = s.server();
    let m = s.mount(&server, "m");
    let (exp, mp) = (s.export(), m.mp.clone());
    std::fs::write(exp.join("local"), b"12").unwrap();
    soon("a file made on the server", || {
        size(&mp.join("local")) == Some(2)
    });
    std::fs::write(exp.join("local"), b"12345").unwrap();
    soon("a write on the server", || {
        size(&mp.join("local")) == Some(5)
    });
    assert_eq!(std::fs::read(mp.join("local")).unwrap(), b"12345");
    std::fs::write(exp.join("local"), b"abcde").unwrap();
    soon("same size, new bytes", || {
        std::fs::read(mp.join("local")).unwrap() == b"abcde"
    });
    std::fs::create_dir(exp.join("sub")).unwrap();
    soon("a directory made on the server", || mp.join("sub").is_dir());
    std::fs::write(mp.join("sub/f"), b"f").unwrap();
    std::fs::rename(exp.join("sub/f"), exp.join("sub/g")).unwrap();
    soon("a rename on the server", || {
        !mp.join("sub/f").exists() && mp.join("sub/g").exists()
    });
    std::fs::remove_file(exp.join("sub/g")).unwrap();
    soon("an unlink on the server", || !mp.join("sub/g").exists());
    m.umount();
}

#[test]
fn a_restarted_server_leaves_no_stale_cache() {
    let s = Setup::new();
    let mut server = s.server();
    let m = s.mount(&server, "m");
    let mp = m.mp.clone();
    std::fs::write(mp.join("f"), b"before").unwrap();
    assert_eq!(size(&mp.join("f")), Some(6));
    // Changed while no server runs: nobody could tell the mount.
    server.kill();
    std::fs::write(s.export().join("f"), b"after the restart").unwrap();
    server.restart();
    soon("a change made while the server was down", || {
        size(&mp.join("f")) == Some(17)
    });
    assert_eq!(std::fs::read(mp.join("f")).unwrap(), b"after the restart");
    m.umount();
}

#[test]
fn a_flood_of_changes_leaves_the_other_mount_right() {
    // Thousands of changes at once: told one by one, or, past what the server keeps for one
    // client, as "everything changed"; either way the other mount ends up right.
    let s = Setup::new();
    let server = s.server();
    let a = s.mount(&server, "a");
    let b = s.mount(&server, "b");
    let (pa, pb) = (a.mp.clone(), b.mp.clone());
    std::fs::create_dir(pa.join("many")).unwrap();
    for i in 0..300 {
        std::fs::write(pa.join(format!("many/{i}")), b"0").unwrap();
    }
    soon("the files", || {
        (0..300).all(|i| size(&pb.join(format!("many/{i}"))) == Some(1))
    });
    sh(
        &pa,
        "for r in 1 2 3 4 5 6 7 8; do for i in $(seq 0 299); do echo $r$r > many/$i; done; done",
    );
    soon("every file's last state", || {
        (0..300).all(|i| std::fs::read(pb.join(format!("many/{i}"))).unwrap() == b"88\n")
    });
    a.umount();
    b.umount();
}

#[test]
fn cache_timeout_zero_asks_for_no_notices() {
    let s = Setup::new();
    let server = s.server();
    let m = MountProc::start(
        &server.addr,
        &s.tmp.path().join("m"),
        &["cache_timeout=0,attr_timeout=0,entry_timeout=0"],
    );
    std::fs::write(s.export().join("f"), b"1").unwrap();
    assert_eq!(size(&m.mp.join("f")), Some(1));
    std::fs::write(s.export().join("f"), b"22").unwrap();
    // Without notices and with no cache times, nothing is cached: the next look asks.
    assert_eq!(size(&m.mp.join("f")), Some(2));
    m.umount();
}

#[test]
fn a_server_run_by_an_ordinary_user_sees_local_changes_too() {
    // Unprivileged fanotify (inode marks, file ids) is all the watch needs.
    use std::os::unix::fs::PermissionsExt;
    let user = test_support::test_user("owner");
    let tmp = tempfile::tempdir().unwrap();
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let (export, state) = (tmp.path().join("export"), tmp.path().join("state"));
    for d in [&export, &state] {
        std::fs::create_dir(d).unwrap();
        std::os::unix::fs::chown(d, Some(user.uid), Some(user.gid)).unwrap();
    }
    // A copy of the server any user may run, wherever this clone lives.
    let exe = tmp.path().join("dfs-server");
    std::fs::copy(server_bin(), &exe).unwrap();
    std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
    let (uid, gid) = (user.uid.to_string(), user.gid.to_string());
    let exe = exe.to_str().unwrap();
    let as_user = [
        "setpriv",
        "--reuid",
        &uid,
        "--regid",
        &gid,
        "--clear-groups",
        "--inh-caps=-all",
        "--",
        "sh",
        "-c",
        "shift; exec \"$0\" \"$@\"",
        exe,
    ];
    let server = ServerProc::launch(
        &as_user,
        &fresh_addr(),
        &export,
        &state.join("key"),
        &["--squash", "all"],
    );
    let m = MountProc::start(
        &server.addr,
        &tmp.path().join("m"),
        &["attr_timeout=60,entry_timeout=60"],
    );
    std::fs::write(export.join("f"), b"1").unwrap();
    assert_eq!(size(&m.mp.join("f")), Some(1));
    std::fs::write(export.join("f"), b"22").unwrap();
    soon("a change on the server", || {
        size(&m.mp.join("f")) == Some(2)
    });
    m.umount();
}

#[test]
fn a_server_that_does_not_watch_keeps_clients_on_short_times() {
    // With --no-watch the server cannot tell of local changes and says so: the mount caches
    // for its short times (1 s by default), not the minute notices would allow.
    let s = Setup::new();
    let server = ServerProc::start(&s.export(), &s.tmp.path().join("key"), &["--no-watch"]);
    let m = MountProc::start(&server.addr, &s.tmp.path().join("m"), &[]);
    let f = m.mp.join("f");
    std::fs::write(s.export().join("f"), b"1").unwrap();
    assert_eq!(size(&f), Some(1));
    std::fs::write(s.export().join("f"), b"22").unwrap();
    soon("a change on the server, after the short cache time", || {
        size(&f) == Some(2)
    });
    // Other clients' changes are still told at once.
    let other = MountProc::start(
        &server.addr,
        &s.tmp.path().join("other"),
        &["attr_timeout=60,entry_timeout=60"],
    );
    assert_eq!(size(&other.mp.join("f")), Some(2));
    std::fs::write(m.mp.join("f"), b"333").unwrap();
    soon("another mount's change", || {
        size(&other.mp.join("f")) == Some(3)
    });
    m.umount();
    other.umount();
}

#[test]
fn a_directory_made_here_answers_for_missing_names_until_others_add_some() {
    // The mount that made a directory knows every name in it and answers lookups of missing
    // ones itself; a name another mount or a program on the server adds must show at once.
    let s = Setup::new();
    let server = s.server();
    let a = s.mount(&server, "a");
    let b = s.mount(&server, "b");
    for round in 0..20 {
        let d = format!("d{round}");
        std::fs::create_dir(a.mp.join(&d)).unwrap();
        assert!(!a.mp.join(&d).join("x").exists());
        assert!(!a.mp.join(&d).join("local").exists());
        std::fs::write(b.mp.join(&d).join("x"), b"from b").unwrap();
        soon("another mount's new name", || {
            a.mp.join(&d).join("x").exists()
        });
        std::fs::write(s.export().join(&d).join("local"), b"from the server").unwrap();
        soon("a program's new name on the server", || {
            a.mp.join(&d).join("local").exists()
        });
        // A's own changes keep its knowledge exact.
        std::fs::write(a.mp.join(&d).join("mine"), b"a").unwrap();
        assert!(a.mp.join(&d).join("mine").exists());
        std::fs::remove_file(a.mp.join(&d).join("mine")).unwrap();
        assert!(!a.mp.join(&d).join("mine").exists());
    }
    // A program on the server that fills a directory right after a client made it.
    for round in 0..20 {
        let d = format!("e{round}");
        std::fs::create_dir(a.mp.join(&d)).unwrap();
        std::fs::write(s.export().join(&d).join("quick"), b"q").unwrap();
        soon("a name made at once after the directory", || {
            a.mp.join(&d).join("quick").exists()
        });
    }
    a.umount();
    b.umount();
}

/// The value of extended attribute `name` of `p` through Python's `os.getxattr` (`None`
/// when it has none).
fn xattr(p: &Path, name: &str) -> Option<Vec<u8>> {
    let out = python(
        "import os,sys\ntry: sys.stdout.buffer.write(b'=' + os.getxattr(sys.argv[1], sys.argv[2]))\nexcept OSError as e:\n  if e.errno != 61: raise\n  print('none', end='')",
        &[p.as_os_str(), name.as_ref()],
    );
    out.strip_prefix(b"=").map(|v| v.to_vec())
}

/// A mount keeps which extended attributes a file lacks (a new file's
/// `security.capability`, which the kernel asks for before every first write; any name a
/// `getxattr` found missing), and a change by a local program or another mount shows at once.
#[test]
fn missing_extended_attributes_are_kept_and_their_changes_seen() {
    let s = Setup::new();
    let server = s.server();
    let a = s.mount(&server, "a");
    let b = s.mount(&server, "b");
    let exp = s.export();
    std::fs::write(a.mp.join("f"), b"x").unwrap();
    std::fs::set_permissions(exp.join("f"), std::fs::Permissions::from_mode(0o666)).unwrap();
    assert_eq!(xattr(&a.mp.join("f"), "security.capability"), None);
    // A local program gives it a capability: the mount that kept its absence sees it.
    let setcap = std::process::Command::new("setcap")
        .arg("cap_net_raw+ep")
        .arg(exp.join("f"))
        .status()
        .unwrap();
    assert!(setcap.success());
    soon("a capability set on the server", || {
        xattr(&a.mp.join("f"), "security.capability").is_some()
    });
    // A write through the mount clears it, as on a local disk.
    std::fs::OpenOptions::new()
        .append(true)
        .open(a.mp.join("f"))
        .and_then(|mut f| std::io::Write::write_all(&mut f, b"y"))
        .unwrap();
    assert_eq!(xattr(&exp.join("f"), "security.capability"), None);
    // A name one mount found missing, then set by the other.
    assert_eq!(xattr(&b.mp.join("f"), "user.note"), None);
    python(
        "import os,sys; os.setxattr(sys.argv[1], 'user.note', b'hi')",
        &[a.mp.join("f").as_os_str()],
    );
    soon("an attribute another mount set", || {
        xattr(&b.mp.join("f"), "user.note").as_deref() == Some(b"hi".as_slice())
    });
    b.umount();
    a.umount();
}
