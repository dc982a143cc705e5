//! What the shim promises beyond everyday programs: descriptors that survive `fork` and
//! `exec`, calls it does not serve failing loudly, `mmap`, the secret kept out of the
//! environment, a user held to the server's permissions, and a server dying mid-write.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use test_support::test_user;

fn read(p: &std::path::Path) -> String {
    String::from_utf8_lossy(&std::fs::read(p).unwrap()).into_owned()
}

#[test]
fn descriptors_survive_fork_and_exec() {
    let tmp = open_tempdir();
    let bins = Bins::new();
    let export = tmp.path().join("export");
    std::fs::create_dir(&export).unwrap();
    std::fs::write(export.join("a"), "pear\napple\nfig\n").unwrap();
    let server = ServerProc::start(&export, &tmp.path().join("key"), &[]);
    let out = script(
        &bins,
        None,
        Some(&server.addr),
        &[],
        "/dfs",
        r#"
        sh -c 'cat /dfs/a | sort > /dfs/b'
        (echo one; echo two) > /dfs/c
        { echo x; ls /dfs/nonexistent; } > /dfs/d 2>&1 || true
        exec 3> /dfs/e
        echo first >&3
        (echo second >&3)
        python3 -c 'import os; os.write(3, b"third\n")'
        sh -c 'echo fourth >&3'
        exec 3>&-
        cd /dfs && sort -r a > f && cat f
        "#,
    );
    let said = ok(out, "the shell script");
    assert_eq!(said, "pear\nfig\napple\n");
    assert_eq!(read(&export.join("b")), "apple\nfig\npear\n");
    assert_eq!(read(&export.join("c")), "one\ntwo\n");
    let d = read(&export.join("d"));
    assert!(
        d.starts_with("x\nls: cannot access '/dfs/nonexistent'"),
        "{d}"
    );
    // One offset, shared by the shell, its subshell, and two programs it ran.
    assert_eq!(read(&export.join("e")), "first\nsecond\nthird\nfourth\n");
    assert_eq!(read(&export.join("f")), "pear\nfig\napple\n");
}

#[test]
fn what_the_shim_does_not_serve_fails_loudly() {
    let tmp = open_tempdir();
    let bins = Bins::new();
    let export = tmp.path().join("export");
    std::fs::create_dir(&export).unwrap();
    std::fs::write(export.join("a"), "0123456789").unwrap();
    let server = ServerProc::start(&export, &tmp.path().join("key"), &[]);
    let out = script(
        &bins,
        None,
        Some(&server.addr),
        &[],
        "/dfs",
        r#"
        python3 - <<'PY'
import ctypes, errno, mmap, os
libc = ctypes.CDLL(None, use_errno=True)
fd = os.open("/dfs/a", os.O_RDWR)
# A raw system call reaches the placeholder: it must fail, not write anywhere.
r = libc.syscall(1, fd, b"XXXX", 4)
print("raw write", r, errno.errorcode.get(ctypes.get_errno()))
r = libc.syscall(0, fd, ctypes.create_string_buffer(4), 4)
print("raw read", r, errno.errorcode.get(ctypes.get_errno()))
# A private map is served (a copy); a shared one cannot be kept coherent: ENODEV.
m = mmap.mmap(fd, 0, flags=mmap.MAP_PRIVATE, prot=mmap.PROT_READ)
print("private map", m[:10])
try:
    mmap.mmap(fd, 0, flags=mmap.MAP_SHARED)
    print("shared map served")
except OSError as e:
    print("shared map", errno.errorcode[e.errno])
# Through the C library it works.
print("write", os.pwrite(fd, b"ab", 0))
PY
        "#,
    );
    let said = ok(out, "the python script");
    assert_eq!(
        said,
        "raw write -1 EBADF\nraw read -1 EBADF\nprivate map b'0123456789'\n\
         shared map ENODEV\nwrite 2\n"
    );
    assert_eq!(read(&export.join("a")), "ab23456789");
}

#[test]
fn the_secret_stays_out_of_the_environment() {
    let tmp = open_tempdir();
    let bins = Bins::new();
    let export = tmp.path().join("export");
    std::fs::create_dir(&export).unwrap();
    std::fs::write(export.join("a"), "served\n").unwrap();
    let secret = tmp.path().join("secret");
    std::fs::write(&secret, "correct-horse-battery-staple-0123\n").unwrap();
    let server = ServerProc::start(
        &export,
        &tmp.path().join("key"),
        &["--secret", secret.to_str().unwrap()],
    );
    let with = script(
        &bins,
        None,
        Some(&server.addr),
        &["--secret", secret.to_str().unwrap()],
        "/dfs",
        "cat /dfs/a; env; cat /proc/self/environ | tr '\\0' '\\n'",
    );
    let said = ok(with, "with the secret");
    assert!(said.starts_with("served\n"), "{said}");
    assert!(!said.contains("correct-horse"), "the secret leaked: {said}");
    // Without it the server refuses, and `dfs run` says so before running anything.
    let without = script(&bins, None, Some(&server.addr), &[], "/dfs", "echo ran");
    let err = String::from_utf8_lossy(&without.stderr);
    assert!(!without.status.success());
    assert!(!String::from_utf8_lossy(&without.stdout).contains("ran"));
    assert!(err.contains("dfs: error: cannot connect"), "{err}");
}

#[test]
fn a_user_gets_only_what_the_server_allows() {
    let tmp = open_tempdir();
    let bins = Bins::new();
    let user = test_user("attacker");
    let export = tmp.path().join("export");
    std::fs::create_dir(&export).unwrap();
    std::fs::write(export.join("private"), "root's\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        export.join("private"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    std::fs::write(export.join("public"), "anyone's\n").unwrap();
    let server = ServerProc::start(&export, &tmp.path().join("key"), &[]);
    let out = script(
        &bins,
        Some(&user),
        Some(&server.addr),
        &[],
        "/dfs",
        r#"
        cat /dfs/public
        for t in 'cat /dfs/private' 'echo x > /dfs/private' 'echo x >> /dfs/public' \
                 'rm -f /dfs/public' 'touch /dfs/new' 'chmod 666 /dfs/private' \
                 'ln /dfs/private /dfs/mine' 'mv /dfs/private /dfs/gone'; do
            if sh -c "$t" 2>/dev/null; then echo "ALLOWED: $t"; else echo "refused: $t"; fi
        done
        id -u
        "#,
    );
    let said = ok(out, "the user's script");
    assert!(!said.contains("ALLOWED"), "{said}");
    assert_eq!(said.matches("refused").count(), 8, "{said}");
    assert_eq!(read(&export.join("private")), "root's\n");
    assert_eq!(read(&export.join("public")), "anyone's\n");
    assert!(!export.join("new").exists() && !export.join("mine").exists());
}

#[test]
fn a_server_that_dies_mid_write_is_an_error_not_lost_data() {
    let tmp = open_tempdir();
    let bins = Bins::new();
    let export = tmp.path().join("export");
    std::fs::create_dir(&export).unwrap();
    let mut server = ServerProc::start(&export, &tmp.path().join("key"), &[]);
    let mut child = Command::new(&bins.dfs)
        .args([
            "run",
            "--timeout",
            "2",
            &server.addr,
            "/dfs",
            "--",
            "python3",
            "-c",
        ])
        .arg(
            r#"
import os, sys
fd = os.open("/dfs/big", os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
n = 0
try:
    while n < 1 << 34:
        n += os.write(fd, b"z" * 65536)
except OSError as e:
    print("error after", n, "bytes:", e.strerror, flush=True)
    sys.exit(3)
print("wrote everything", flush=True)
"#,
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + WAIT;
    while std::fs::metadata(export.join("big")).map_or(0, |m| m.len()) < 1 << 20 {
        assert!(Instant::now() < deadline, "the writer did not start");
        std::thread::sleep(Duration::from_millis(10));
    }
    server.kill();
    let deadline = Instant::now() + WAIT;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the writer did not notice the server was gone");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(3), "{said}");
    assert!(
        said.contains("Transport endpoint is not connected"),
        "{said}"
    );
    // What it was told was written is on the server.
    let n: u64 = said
        .split_whitespace()
        .nth(2)
        .and_then(|v| v.parse().ok())
        .unwrap_or(u64::MAX);
    let on_disk = std::fs::metadata(export.join("big")).unwrap().len();
    assert!(
        on_disk >= n,
        "{n} bytes acknowledged, {on_disk} on the server"
    );
}

#[test]
fn one_process_sees_another_s_renames_at_once() {
    let tmp = open_tempdir();
    let bins = Bins::new();
    let export = tmp.path().join("export");
    std::fs::create_dir(&export).unwrap();
    let server = ServerProc::start(&export, &tmp.path().join("key"), &[]);
    // The directories on the way to a name are remembered for a second: a rename by
    // another process of the run must not leave this one on the old directory.
    let out = script(
        &bins,
        None,
        Some(&server.addr),
        &[],
        "/dfs",
        r#"
        python3 - <<'PY'
import subprocess
import os
os.makedirs("/dfs/c/d")
open("/dfs/c/d/x", "w").write("old\n")
print(open("/dfs/c/d/x").read(), end="")
subprocess.run(["sh", "-c", "mv /dfs/c/d /dfs/c/e && mkdir /dfs/c/d && echo new > /dfs/c/d/x"], check=True)
print(open("/dfs/c/d/x").read(), end="")
subprocess.run(["sh", "-c", "rm -r /dfs/c/d && mkdir /dfs/c/d && echo newer > /dfs/c/d/x"], check=True)
print(open("/dfs/c/d/x").read(), end="")
PY
        "#,
    );
    assert_eq!(ok(out, "the python script"), "old\nnew\nnewer\n");
}

#[test]
fn large_reads_come_back_whole_at_every_size() {
    let tmp = open_tempdir();
    let bins = Bins::new();
    let export = tmp.path().join("export");
    std::fs::create_dir(&export).unwrap();
    // Around the sizes where a read goes as two requests in flight, and where a file ends
    // in the first half, in the second, or past both.
    let sizes = [
        (256 << 10) - 1,
        256 << 10,
        300 << 10,
        1 << 20,
        (1 << 20) + 4097,
        (2 << 20) + 1,
        5 << 20,
    ];
    for (i, n) in sizes.iter().enumerate() {
        std::fs::write(
            export.join(format!("f{i}")),
            test_support::pattern(i as u64, 0, *n),
        )
        .unwrap();
    }
    let server = ServerProc::start(&export, &tmp.path().join("key"), &[]);
    let out = script(
        &bins,
        None,
        Some(&server.addr),
        &[],
        "/dfs",
        r#"
        python3 - <<'PY'
import hashlib, os
for i in range(7):
    for bs in (4096, 256 << 10, 1 << 20, 3 << 20, 8 << 20):
        for start in (0, 4095):
            fd = os.open("/dfs/f%d" % i, os.O_RDONLY)
            os.lseek(fd, start, 0)
            h = hashlib.sha256()
            while True:
                b = os.read(fd, bs)
                if not b:
                    break
                h.update(b)
            os.close(fd)
            print(i, bs, start, h.hexdigest())
PY
        "#,
    );
    let said = ok(out, "the reads");
    use sha2_free::digest;
    for line in said.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        let (i, start): (usize, usize) = (f[0].parse().unwrap(), f[2].parse().unwrap());
        let data = std::fs::read(export.join(format!("f{i}"))).unwrap();
        assert_eq!(f[3], digest(&data[start.min(data.len())..]), "{line}");
    }
    assert_eq!(said.lines().count(), 7 * 5 * 2);
}

/// sha256 by the system's `sha256sum`, so the test needs no hashing crate.
mod sha2_free {
    pub fn digest(data: &[u8]) -> String {
        use std::io::Write;
        let mut c = std::process::Command::new("sha256sum")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        c.stdin.take().unwrap().write_all(data).unwrap();
        let out = c.wait_with_output().unwrap();
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .to_string()
    }
}

/// Bytes a process has read with system calls so far.
fn rchar(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/io"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("rchar: "))
        .unwrap()
        .parse()
        .unwrap()
}

/// On one host, an ordinary user's program reads files it opened read-only from the
/// server's own descriptor (lent to that user alone): `read`, `pread`, `readv` and stdio
/// give the file's bytes while the server reads none of them. A program that closes the
/// lent number behind the shim's back and reuses it for a file of its own still reads the
/// right bytes from both.
#[test]
fn reads_come_from_the_servers_descriptor_on_one_host() {
    let tmp = open_tempdir();
    let bins = Bins::new();
    let user = test_user("user");
    let export = tmp.path().join("export");
    std::fs::create_dir(&export).unwrap();
    let data: Vec<u8> = (0..(6 << 20) + 123).map(|i: u32| (i % 241) as u8).collect();
    std::fs::write(export.join("f"), &data).unwrap();
    std::fs::write(tmp.path().join("local"), b"the program's own file\n").unwrap();
    let server = ServerProc::start(&export, &tmp.path().join("key"), &[]);
    let pid = server.child.id();
    let before = rchar(pid);
    let want = String::from_utf8(
        Command::new("sha256sum")
            .arg(export.join("f"))
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap()
    .split(' ')
    .next()
    .unwrap()
    .to_string();
    let out = script(
        &bins,
        Some(&user),
        Some(&server.addr),
        &[],
        &tmp.path().to_string_lossy(),
        r#"
        sha256sum < /dfs/f | cut -d' ' -f1
        dd if=/dfs/f bs=1M status=none | sha256sum | cut -d' ' -f1
        python3 - <<'PY'
import os, hashlib
fd = os.open("/dfs/f", os.O_RDONLY)
size = os.fstat(fd).st_size
h = hashlib.sha256()
at = 0
while at < size:
    b = os.pread(fd, 1 << 20, at); h.update(b); at += len(b)
print(h.hexdigest())
a, b = bytearray(3000), bytearray(5000)
os.lseek(fd, 1000, 0)
n = os.readv(fd, [a, b])
print(n, bytes(a[:3]) == bytes((1000 + i) % 241 for i in range(3)))
# The lent descriptor: the one this process holds on the export's file.
lent = []
for n in os.listdir("/proc/self/fd"):
    try:
        if os.readlink("/proc/self/fd/" + n).endswith("/export/f"):
            lent.append(int(n))
    except OSError:
        pass
print("lent", len(lent))
os.close(lent[0])
own = os.open(os.environ["D"] + "/local", os.O_RDONLY)
print("reused", own == lent[0])
print(os.pread(fd, 4, 241 * 10 + 1) == bytes([1, 2, 3, 4]))
print(os.pread(own, 100, 0).decode().strip())
PY
        "#,
    );
    let said = ok(out, "the user's reads");
    let lines: Vec<&str> = said.lines().collect();
    assert_eq!(
        &lines[..3],
        &[want.as_str(), want.as_str(), want.as_str()],
        "{said}"
    );
    assert_eq!(
        &lines[3..],
        &[
            "8000 True",
            "lent 1",
            "reused True",
            "True",
            "the program's own file"
        ],
        "{said}"
    );
    // The server read nothing but what its protocol needs (the last pread, whose number
    // no longer named the lent file, went through the rings: 4 bytes).
    let read = rchar(pid) - before;
    assert!(read < 1 << 20, "the server read {read} bytes");
}
