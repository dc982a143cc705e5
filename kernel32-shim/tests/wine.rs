//! The Windows face under Wine, against a real Linux `dfs-server` over tcp with a secret:
//! unmodified Windows programs run once on a local Wine drive and once on the DFS through
//! `dfs-run.exe`, and say the same. The programs: a C program of the Win32 file API and
//! small C programs built here with mingw-w64 (`tests/wine/*.c`), a Rust `std::fs` program
//! (`examples/std_fs.rs`), and Wine's own `cmd.exe`, `xcopy` and `findstr`.
//!
//! The Windows builds come from `scripts/build-windows.sh` (scripts/test.sh runs it).
//! Without them the tests say so and pass, unless `VMMC_WINE_TESTS=1` asks for them (CI
//! does), which makes a missing build a failure.

mod common;

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc::channel;
use std::time::Duration;

use common::{run_within, ServerProc, DFS};

/// How long one Wine program may take, a first start of the Wine prefix included.
const LIMIT: Duration = Duration::from_secs(180);
/// The user the programs are on the server (believed: they prove the secret).
const UID: u32 = 4321;

/// The directory of the Windows build, or `None` (after saying why) where it is missing
/// and the tests were not asked for.
fn windows_build() -> Option<PathBuf> {
    let target = Path::new(DFS)
        .parent()
        .and_then(Path::parent)
        .expect("dfs lives in the target directory");
    let dir = target.join("x86_64-pc-windows-gnu/debug");
    let need = [
        dir.join("dfs-run.exe"),
        dir.join("kernel32_shim.dll"),
        dir.join("examples/std_fs.exe"),
    ];
    if need.iter().all(|p| p.exists()) {
        return Some(dir);
    }
    let asked = std::env::var("VMMC_WINE_TESTS").is_ok_and(|v| v == "1");
    assert!(!asked, "{need:?}: missing; run scripts/build-windows.sh");
    eprintln!("skipped: the Windows build is missing (scripts/build-windows.sh makes it)");
    None
}

/// A Unix path as Wine names it (`Z:` is the root).
fn wine_path(p: &Path) -> String {
    format!("Z:{}", p.display()).replace('/', "\\")
}

fn runner() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/wine-run.sh")
}

/// A server on a fresh tcp port serving an export owned by [`UID`], with a secret.
struct Setup {
    tmp: tempfile::TempDir,
    server: ServerProc,
    build: PathBuf,
}

impl Setup {
    fn new() -> Option<Setup> {
        let build = windows_build()?;
        let tmp = tempfile::tempdir().unwrap();
        std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let export = tmp.path().join("export");
        std::fs::create_dir(&export).unwrap();
        std::os::unix::fs::chown(&export, Some(UID), Some(UID)).unwrap();
        std::fs::create_dir(tmp.path().join("local")).unwrap();
        let secret = tmp.path().join("secret");
        std::fs::write(&secret, b"the wine tests' secret, long enough").unwrap();
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
        // A fixed port, so that a restarted server is found where the first one was.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let server = ServerProc::launch(
            &[],
            &format!("tcp:127.0.0.1:{port}"),
            &export,
            &tmp.path().join("key"),
            &["--secret", secret.to_str().unwrap()],
        );
        Some(Setup { tmp, server, build })
    }

    fn export(&self) -> PathBuf {
        self.tmp.path().join("export")
    }

    fn local(&self) -> PathBuf {
        self.tmp.path().join("local")
    }

    /// Builds `tests/wine/NAME.c` with mingw-w64; the program's Windows path.
    fn c_program(&self, name: &str) -> String {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/wine/{name}.c"));
        let exe = self.tmp.path().join(format!("{name}.exe"));
        let out = run_within(
            Command::new("x86_64-w64-mingw32-gcc")
                .args(["-O2", "-o"])
                .arg(&exe)
                .arg(&src),
            LIMIT,
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        wine_path(&exe)
    }

    /// The command that runs `program ARGS` under Wine, through the shim if `dfs`.
    fn command(&self, dfs: bool, program: &str, args: &[&str]) -> Command {
        let mut c = Command::new(runner());
        if dfs {
            c.arg(self.build.join("dfs-run.exe"))
                .args(["--secret", &wine_path(&self.tmp.path().join("secret"))])
                .args(["--uid", &UID.to_string(), "--gid", &UID.to_string()])
                .args(["--timeout", "20"])
                .arg(&self.server.addr)
                .args(["M:", "--"]);
        }
        c.arg(program).args(args);
        c
    }

    fn run(&self, dfs: bool, program: &str, args: &[&str]) -> Output {
        run_within(&mut self.command(dfs, program, args), LIMIT)
    }
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).replace("\r\n", "\n")
}

fn assert_ok(o: &Output, what: &str) -> String {
    assert!(
        o.status.success(),
        "{what}: {:?}\nstdout: {}\nstderr: {}",
        o.status,
        stdout(o),
        String::from_utf8_lossy(&o.stderr)
    );
    stdout(o)
}

#[test]
fn the_win32_file_api_on_the_dfs_answers_as_a_local_wine_drive() {
    let Some(s) = Setup::new() else { return };
    let exe = s.c_program("win32_api");
    let local = assert_ok(&s.run(false, &exe, &[&wine_path(&s.local())]), "local");
    let dfs = assert_ok(&s.run(true, &exe, &["M:"]), "dfs");
    // Wine's own drive lets root open a read-only file for writing (Wine maps the attribute
    // to the Unix write bits, which root passes by); NTFS refuses anyone, and so does the
    // DFS. Every other line must be the same.
    let expected = local.replace(
        "open a read-only file for writing            ok 0",
        "open a read-only file for writing            FAIL 5",
    );
    assert!(local.lines().count() > 80, "{local}");
    assert_eq!(dfs, expected);
    // The server holds nothing of the run but what the program left (it removes it all).
    assert_eq!(std::fs::read_dir(s.export()).unwrap().count(), 0);
}

#[test]
fn a_rust_std_fs_program_on_the_dfs_matches_a_local_wine_drive() {
    let Some(s) = Setup::new() else { return };
    let exe = wine_path(&s.build.join("examples/std_fs.exe"));
    let local = assert_ok(&s.run(false, &exe, &[&wine_path(&s.local())]), "local");
    let dfs = assert_ok(&s.run(true, &exe, &["M:\\"]), "dfs");
    assert!(local.contains("removed all: true"), "{local}");
    assert_eq!(dfs, local);
}

#[test]
fn cmd_xcopy_and_findstr_work_on_the_dfs() {
    let Some(s) = Setup::new() else { return };
    let src = s.tmp.path().join("src");
    std::fs::create_dir_all(src.join("sub")).unwrap();
    std::fs::write(src.join("a.txt"), "alpha line\r\n").unwrap();
    std::fs::write(src.join("sub/b.txt"), "beta needle line\r\n").unwrap();
    let back = s.tmp.path().join("back");
    let script = format!(
        "mkdir M:\\c & copy {src}\\a.txt M:\\c\\a.txt & copy M:\\c\\a.txt M:\\c\\a2.txt & \
         ren M:\\c\\a2.txt a3.txt & del M:\\c\\a.txt & type M:\\c\\a3.txt & dir /b M:\\c & \
         xcopy /E /I /Y {src} M:\\x & xcopy /E /I /Y M:\\x {back}",
        src = wine_path(&src),
        back = wine_path(&back),
    );
    let out = assert_ok(
        &s.run(true, "C:\\windows\\system32\\cmd.exe", &["/c", &script]),
        "cmd",
    );
    assert!(out.contains("alpha line"), "type: {out}");
    assert!(out.contains("a3.txt"), "dir: {out}");
    // What the programs did, seen on the server.
    let e = s.export();
    assert_eq!(
        std::fs::read(e.join("c/a3.txt")).unwrap(),
        b"alpha line\r\n"
    );
    assert!(!e.join("c/a.txt").exists(), "del");
    assert!(!e.join("c/a2.txt").exists(), "ren");
    assert_eq!(
        std::fs::read(e.join("x/sub/b.txt")).unwrap(),
        b"beta needle line\r\n"
    );
    // And back from the DFS to the local drive, byte for byte.
    assert_eq!(
        std::fs::read(back.join("a.txt")).unwrap(),
        b"alpha line\r\n"
    );
    assert_eq!(
        std::fs::read(back.join("sub/b.txt")).unwrap(),
        b"beta needle line\r\n"
    );
    // Wine 8.0's findstr is a stub that prints nothing even on a local drive: it must do the
    // same on the DFS (and not fail there).
    let find = |dfs: bool, file: &str| {
        let o = s.run(dfs, "C:\\windows\\system32\\findstr.exe", &["needle", file]);
        (o.status.code(), stdout(&o))
    };
    assert_eq!(
        find(true, "M:\\x\\sub\\b.txt"),
        find(false, &wine_path(&src.join("sub/b.txt")))
    );
}

#[test]
fn calls_the_shim_does_not_serve_fail_on_its_handles() {
    let Some(s) = Setup::new() else { return };
    let exe = s.c_program("unserved");
    let out = assert_ok(&s.run(true, &exe, &["M:\\u.bin"]), "unserved");
    assert_eq!(
        out, "LockFile failed 6\nCreateFileMapping failed 6\nReadFileEx failed 50\n",
        "each fails, none succeeds silently"
    );
    // Locally the same calls succeed: the failures above are the shim's placeholders.
    let local = assert_ok(
        &s.run(false, &exe, &[&wine_path(&s.local().join("u.bin"))]),
        "local",
    );
    assert!(local.starts_with("LockFile succeeded"), "{local}");
    assert_eq!(std::fs::read(s.export().join("u.bin")).unwrap(), b"data");
}

/// A program under Wine whose output lines arrive as it prints them; killed when dropped.
struct Running {
    child: Child,
    lines: std::sync::mpsc::Receiver<String>,
}

impl Running {
    fn start(mut cmd: Command) -> Running {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let out = child.stdout.take().unwrap();
        let (tx, lines) = channel();
        std::thread::spawn(move || {
            for l in BufReader::new(out).lines().map_while(Result::ok) {
                let _ = tx.send(l.trim_end().to_string());
            }
        });
        Running { child, lines }
    }

    fn line(&self) -> String {
        self.lines
            .recv_timeout(LIMIT)
            .expect("a line within the limit")
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn a_program_carries_on_across_a_server_restart() {
    let Some(mut s) = Setup::new() else { return };
    let exe = s.c_program("carry_on");
    let go = s.tmp.path().join("go");
    let p = Running::start(s.command(true, &exe, &["M:\\r.bin", &wine_path(&go)]));
    assert_eq!(p.line(), "written");
    // A new server process on the same export, key and address: the program's open file
    // stays valid (handles survive restarts) and its next calls reconnect.
    s.server.restart();
    std::fs::write(&go, b"").unwrap();
    assert_eq!(p.line(), "size 2097152");
    assert_eq!(p.line(), "verified");
    assert_eq!(
        std::fs::metadata(s.export().join("r.bin")).unwrap().len(),
        2 << 20
    );
}
