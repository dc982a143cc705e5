//! The FUSE mount end to end: real `dfs-server` and `dfs mount` processes, real tools.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

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
    fn key(&self) -> std::path::PathBuf {
        self.tmp.path().join("handle.key")
    }
    fn mp(&self, name: &str) -> std::path::PathBuf {
        self.tmp.path().join(name)
    }
    fn server(&self, extra: &[&str]) -> ServerProc {
        ServerProc::start(&self.export(), &self.key(), extra)
    }
}

#[test]
fn everyday_tools_work_on_the_mount() {
    let s = Setup::new();
    let server = s.server(&[]);
    let m = MountProc::start(&server.addr, &s.mp("mnt"), &[]);
    let mp = &m.mp;
    // cp -a and diff, tar out and back in, a large file, a compiler, git.
    sh(
        mp,
        "cp -a /usr/include/linux ./linux && diff -r /usr/include/linux ./linux",
    );
    sh(
        mp,
        "tar cf - linux | (mkdir back && cd back && tar xf -) && diff -r linux back/linux",
    );
    sh(mp, "head -c 33554433 /dev/urandom > /tmp/dfs-e2e-big.$$ && cp /tmp/dfs-e2e-big.$$ big && cmp big /tmp/dfs-e2e-big.$$ && rm /tmp/dfs-e2e-big.$$");
    sh(mp, "printf '#include <stdio.h>\\nint main(void){puts(\"built on dfs\");return 0;}\\n' > hello.c && cc -O1 -o hello hello.c && ./hello | grep -q 'built on dfs'");
    if run(Command::new("git").arg("--version")).status.success() {
        sh(mp, "git init -q repo && cd repo && echo one > a && git add a && git -c user.email=t@e -c user.name=t commit -qm one && echo two >> a && git -c user.email=t@e -c user.name=t commit -qam two && git log --oneline | wc -l | grep -q 2 && git status --porcelain | wc -l | grep -q 0");
    }
    // The same bytes are in the export, written through the server.
    assert_eq!(
        std::fs::read(s.export().join("hello.c")).unwrap(),
        std::fs::read(mp.join("hello.c")).unwrap()
    );
    sh(mp, "ln big big.hard && test $(stat -c %h big) = 2 && ln -s big big.sym && test \"$(readlink big.sym)\" = big && mkfifo fifo && test -p fifo && mv big.hard renamed && rm -r linux back repo || rm -r linux back");
    let out = sh(mp, "ls");
    assert!(out.contains("renamed") && !out.contains("linux"), "{out}");
    let df = sh(mp, "df -P . | tail -1");
    assert!(df.starts_with(&server.addr), "{df}");
    m.umount();
}

#[test]
fn background_mount_helper_and_fstab() {
    let s = Setup::new();
    let server = s.server(&[]);
    let mp = s.mp("mnt");
    std::fs::create_dir(&mp).unwrap();
    let _cleanup = UnmountOnDrop(mp.clone());
    let log = s.tmp.path().join("mount.log");
    // `dfs mount` returns once the mount is there and says how to stop it.
    let out = run(Command::new(DFS)
        .args(["mount", &server.addr])
        .arg(&mp)
        .arg("--log")
        .arg(&log));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("dfs umount"));
    assert!(dfs_client::mount::is_dfs_mount(&mp));
    // /proc/mounts shows it as what it is: the server's address, type fuse.dfs.
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap();
    assert!(
        mounts.lines().any(|l| l.starts_with(&format!(
            "{} {} fuse.dfs ",
            server.addr,
            mp.display()
        ))),
        "{mounts}"
    );
    std::fs::write(mp.join("f"), b"through the background mount").unwrap();
    // A program's ioctls, which the mount does not serve, are not warnings in its log:
    // lsattr asks FS_IOC_GETFLAGS of each file.
    for _ in 0..50 {
        let _ = run(Command::new("lsattr").arg(mp.join("f")));
    }
    // Mounting twice is refused with a clear message.
    let again = run(Command::new(DFS)
        .args(["mount", &server.addr])
        .arg(&mp)
        .arg("--log")
        .arg(&log));
    assert!(!again.status.success());
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("already"),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    let out = run(Command::new(DFS).arg("umount").arg(&mp));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!dfs_client::mount::is_fuse_mount(&mp));
    // The log, once the daemon has gone: plain text, each line once, no warning for a
    // clean mount, a program's ioctls and an unmount.
    let deadline = std::time::Instant::now() + WAIT;
    let said = loop {
        let said = std::fs::read_to_string(&log).unwrap();
        let gone = !Command::new("pgrep")
            .args(["-f", &format!("{} --foreground", mp.display())])
            .status()
            .unwrap()
            .success();
        if gone || std::time::Instant::now() > deadline {
            break said;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    assert!(!said.contains('\x1b'), "colour codes in the log: {said:?}");
    assert!(!said.contains("WARN") && !said.contains("ERROR"), "{said}");
    let lines: Vec<&str> = said.lines().collect();
    let mut unique = lines.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(lines.len(), unique.len(), "a line written twice: {said}");
    // The helper, as mount(8) calls it: `mount.dfs SPEC DIR -o OPTIONS`.
    let helper = s.tmp.path().join("mount.dfs");
    std::os::unix::fs::symlink(DFS, &helper).unwrap();
    let out = run(Command::new(&helper)
        .arg(&server.addr)
        .arg(&mp)
        .args(["-o", "rw,attr_timeout=0.5,defaults,_netdev"]));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        std::fs::read(mp.join("f")).unwrap(),
        b"through the background mount"
    );
    run(Command::new(DFS).arg("umount").arg(&mp));
    // `mount -t dfs` and an fstab line: mount(8) looks for /sbin/mount.dfs, so this build's
    // helper stands there for the test, and whatever was there before is put back.
    let _helper = HelperInstalled::new();
    let out = run(Command::new("mount")
        .args(["-t", "dfs", &server.addr])
        .arg(&mp));
    assert!(
        out.status.success(),
        "mount -t dfs: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        std::fs::read(mp.join("f")).unwrap(),
        b"through the background mount"
    );
    let out = run(Command::new("umount").arg(&mp));
    assert!(
        out.status.success(),
        "umount: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let fstab = s.tmp.path().join("fstab");
    std::fs::write(
        &fstab,
        format!(
            "{} {} dfs rw,nosuid,attr_timeout=1,_netdev 0 0\n",
            server.addr,
            mp.display()
        ),
    )
    .unwrap();
    let out = run(Command::new("mount").arg("-T").arg(&fstab).arg(&mp));
    assert!(
        out.status.success(),
        "mount from fstab: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        std::fs::read(mp.join("f")).unwrap(),
        b"through the background mount"
    );
    run(Command::new(DFS).arg("umount").arg(&mp));
}

#[test]
fn killed_client_and_server_leave_no_stuck_mount() {
    let s = Setup::new();
    let mut server = s.server(&[]);
    let mut m = MountProc::start(&server.addr, &s.mp("mnt"), &[]);
    std::fs::write(m.mp.join("kept"), b"kept").unwrap();
    m.kill();
    server.kill();
    // The dead mount answers at once (ENOTCONN), it does not hang, and unmounts cleanly.
    let out = run_within(Command::new("stat").arg(&m.mp), Duration::from_secs(10));
    assert!(!out.status.success());
    let out = run(Command::new(DFS).arg("umount").arg(&m.mp));
    assert!(
        out.status.success(),
        "dfs umount of a dead mount: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!dfs_client::mount::is_fuse_mount(&m.mp));
    // And it mounts again.
    drop(m);
    server.restart();
    let m2 = MountProc::start(&server.addr, &s.mp("mnt"), &[]);
    assert_eq!(std::fs::read(m2.mp.join("kept")).unwrap(), b"kept");
    m2.umount();
}

#[test]
fn a_server_restart_is_ridden_out_and_a_dead_server_fails_fast() {
    let s = Setup::new();
    let mut server = s.server(&[]);
    let m = MountProc::start(&server.addr, &s.mp("mnt"), &["timeout=3"]);
    std::fs::write(m.mp.join("f"), b"before").unwrap();
    let held = std::fs::File::open(m.mp.join("f")).unwrap();
    server.restart();
    // Same handles, new server: reads, writes and lookups carry on.
    assert_eq!(std::fs::read(m.mp.join("f")).unwrap(), b"before");
    std::fs::write(m.mp.join("g"), b"after").unwrap();
    use std::os::unix::fs::FileExt;
    let mut buf = [0u8; 6];
    held.read_exact_at(&mut buf, 0).unwrap();
    assert_eq!(&buf, b"before");
    // Gone for good: an error within the timeout, not a hang.
    server.kill();
    let start = Instant::now();
    let out = run_within(
        Command::new("cat").arg(m.mp.join("g")),
        Duration::from_secs(20),
    );
    assert!(!out.status.success() || out.stdout == b"after", "{out:?}");
    let out = run_within(
        Command::new("touch").arg(m.mp.join("new")),
        Duration::from_secs(20),
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("not connected") || err.contains("Input/output"),
        "{err}"
    );
    assert!(start.elapsed() < Duration::from_secs(15));
    drop(held);
}

#[test]
fn two_mounts_see_each_others_changes_at_open() {
    let s = Setup::new();
    let server = s.server(&[]);
    let a = MountProc::start(&server.addr, &s.mp("a"), &[]);
    let b = MountProc::start(
        &server.addr,
        &s.mp("b"),
        &["attr_timeout=30", "entry_timeout=30"],
    );
    std::fs::write(a.mp.join("doc"), b"version 1").unwrap();
    assert_eq!(std::fs::read(b.mp.join("doc")).unwrap(), b"version 1");
    // Same size, new content: B's cached pages must not survive its next open, even with
    // long attribute timeouts.
    std::thread::sleep(Duration::from_millis(20));
    std::fs::write(a.mp.join("doc"), b"version 2").unwrap();
    assert_eq!(std::fs::read(b.mp.join("doc")).unwrap(), b"version 2");
    // Appends by one are whole at the other's next open.
    {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(b.mp.join("doc"))
            .unwrap();
        f.write_all(b" + more").unwrap();
    }
    assert_eq!(
        std::fs::read(a.mp.join("doc")).unwrap(),
        b"version 2 + more"
    );
    // New names and removals: visible to the other side's lookups.
    std::fs::create_dir(a.mp.join("dir")).unwrap();
    std::fs::write(a.mp.join("dir/new"), b"x").unwrap();
    assert_eq!(std::fs::read(b.mp.join("dir/new")).unwrap(), b"x");
    std::fs::remove_file(b.mp.join("dir/new")).unwrap();
    assert!(std::fs::read(a.mp.join("dir/new")).is_err());
    a.umount();
    b.umount();
}

#[test]
fn read_only_mounts_and_exports() {
    let s = Setup::new();
    std::fs::write(s.export().join("r"), b"read me").unwrap();
    let server = s.server(&[]);
    let m = MountProc::start(&server.addr, &s.mp("ro"), &["ro"]);
    assert_eq!(std::fs::read(m.mp.join("r")).unwrap(), b"read me");
    let e = std::fs::write(m.mp.join("w"), b"x").unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EROFS));
    m.umount();
    let ro_server = s.server(&["--read-only"]);
    let m = MountProc::start(&ro_server.addr, &s.mp("ro2"), &[]);
    let e = std::fs::write(m.mp.join("w"), b"x").unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EROFS));
    m.umount();
}

#[test]
fn bad_mount_requests_fail_with_one_clear_line() {
    let s = Setup::new();
    let cases: [(&[&str], &str); 6] = [
        (
            &["mount", "shm:nobody-listens-here", "/nonexistent-dir"],
            "mount point /nonexistent-dir does not exist",
        ),
        // In the background: the daemon's failure, said once.
        (
            &["mount", "shm:nobody-listens-here", "/tmp", "-o", "timeout=1"],
            "cannot connect to shm:nobody-listens-here: no dfs-server is listening there (is it running? see dfs-server --help)",
        ),
        (
            &[
                "mount",
                "shm:nobody-listens-here",
                "/tmp",
                "--foreground",
                "-o",
                "bogus",
            ],
            "unknown mount option",
        ),
        (
            &[
                "mount",
                "shm:nobody-listens-here",
                "/tmp",
                "--foreground",
                "-o",
                "timeout=1",
            ],
            "cannot connect to shm:nobody-listens-here",
        ),
        (&["umount", "/tmp"], "not mounted"),
        // Not a general umount: /proc is mounted, but not by dfs.
        (
            &["umount", "/proc"],
            "/proc is a proc mount, not a dfs one; dfs umount unmounts only dfs mounts",
        ),
    ];
    for (args, want) in cases {
        let out = run(Command::new(DFS).args(args));
        assert!(!out.status.success(), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.starts_with("dfs: error: ") && err.contains(want),
            "{args:?}: {err}"
        );
        // One prefix, one line, in words: no errno names or "(os error N)".
        assert_eq!(err.matches("dfs: error:").count(), 1, "{args:?}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{args:?}: {err}");
        assert!(
            !err.contains("os error") && !err.contains("ENOENT"),
            "{err}"
        );
    }
    assert!(
        std::path::Path::new("/proc/self").exists(),
        "dfs umount left /proc alone"
    );
    let server = s.server(&["--secret", &{
        let p = s.tmp.path().join("secret");
        std::fs::write(&p, b"sixteen bytes or more of secret").unwrap();
        p.to_str().unwrap().to_string()
    }]);
    std::fs::create_dir(s.mp("m")).unwrap();
    let out = run(Command::new(DFS)
        .args(["mount", &server.addr])
        .arg(s.mp("m"))
        .arg("--foreground"));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("requires a secret"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let m = MountProc::start(
        &server.addr,
        &s.mp("m"),
        &[&format!("secret={}", s.tmp.path().join("secret").display())],
    );
    std::fs::write(m.mp.join("authenticated"), b"yes").unwrap();
    m.umount();
}

#[test]
fn a_file_linked_from_two_directories_is_one_file_through_both_names() {
    // The server's handle of a file records the directory it was reached in (its subtree
    // check), so a file linked from two directories comes with two handles and the kernel
    // holds two nodes for it: both must show one file, also with long cache timeouts.
    let s = Setup::new();
    let server = s.server(&[]);
    let m = MountProc::start(
        &server.addr,
        &s.mp("mnt"),
        &["attr_timeout=30", "entry_timeout=30"],
    );
    let mp = &m.mp;
    sh(
        mp,
        "mkdir a b && echo one > a/f && ln a/f b/g \
         && test $(stat -c %i a/f) = $(stat -c %i b/g) && test $(stat -c %h a/f) = 2 \
         && test \"$(cat a/f)\" = one && test \"$(cat b/g)\" = one",
    );
    // Written through one name, read whole through the other at its next open: an append,
    // then an overwrite of the same size.
    sh(
        mp,
        "echo two >> b/g && test \"$(cat a/f)\" = \"$(printf 'one\\ntwo')\"",
    );
    std::thread::sleep(Duration::from_millis(20));
    sh(
        mp,
        "printf 'ONE\\nTWO\\n' > a/f && test \"$(cat b/g)\" = \"$(printf 'ONE\\nTWO')\"",
    );
    // One name gone, the other keeps the file; renamed into another directory, still it.
    sh(
        mp,
        "rm a/f && test $(stat -c %h b/g) = 1 && mv b/g a/moved \
         && test \"$(cat a/moved)\" = \"$(printf 'ONE\\nTWO')\" && test ! -e b/g",
    );
    assert_eq!(
        std::fs::read(s.export().join("a/moved")).unwrap(),
        b"ONE\nTWO\n"
    );
    m.umount();
}

/// This build's `mount.dfs` at /sbin/mount.dfs for as long as it lives; then the machine's
/// own (or nothing) again, whatever happened in between.
struct HelperInstalled {
    backup: Option<std::path::PathBuf>,
}

impl HelperInstalled {
    const PATH: &'static str = "/sbin/mount.dfs";

    fn new() -> HelperInstalled {
        let path = std::path::Path::new(Self::PATH);
        let backup = std::fs::symlink_metadata(path).ok().map(|_| {
            let b = path.with_extension(format!("dfs-test-backup-{}", std::process::id()));
            std::fs::rename(path, &b).unwrap();
            b
        });
        let guard = HelperInstalled { backup };
        let out = run(Command::new(DFS).args(["install-helper", "--path", Self::PATH]));
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        guard
    }
}

impl Drop for HelperInstalled {
    fn drop(&mut self) {
        let path = std::path::Path::new(Self::PATH);
        let _ = std::fs::remove_file(path);
        if let Some(b) = &self.backup {
            let _ = std::fs::rename(b, path);
        }
    }
}
