//! Real servers and real mounts for end-to-end tests. Every process is killed and every mount
//! lazily unmounted when its guard drops, also when a test fails; every wait has a timeout.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc::{channel, Receiver};
use std::time::{Duration, Instant};

pub const DFS: &str = env!("CARGO_BIN_EXE_dfs");
pub const WAIT: Duration = Duration::from_secs(30);

/// `dfs-server`, built beside `dfs` by `cargo test --workspace` (or `cargo build`).
pub fn server_bin() -> PathBuf {
    let p = Path::new(DFS).with_file_name("dfs-server");
    assert!(
        p.exists(),
        "{} is missing: run `cargo build -p dfs-server` (or test the whole workspace)",
        p.display()
    );
    p
}

/// Where scripts/install-test-deps.sh installs pjdfstest and fsx (inside the clone).
pub fn tool(name: &str) -> PathBuf {
    let dir = std::env::var_os("DFS_TEST_TOOLS")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/tools/bin"));
    let p = dir.join(name);
    assert!(
        p.exists(),
        "{} is missing: scripts/install-test-deps.sh installs it",
        p.display()
    );
    p
}

pub fn fresh_addr() -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "shm:dfs-e2e-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

fn lines_of(child: &mut Child) -> Receiver<String> {
    let err = child.stderr.take().expect("stderr is piped");
    let (tx, rx) = channel();
    std::thread::spawn(move || {
        for l in BufReader::new(err).lines().map_while(Result::ok) {
            let _ = tx.send(l);
        }
    });
    rx
}

/// A `dfs-server` process.
pub struct ServerProc {
    pub child: Child,
    pub addr: String,
    pub export: PathBuf,
    pub key: PathBuf,
    args: Vec<String>,
}

impl ServerProc {
    /// Serves `export` with `--squash none` (the tests pick their users) on a fresh address.
    pub fn start(export: &Path, key: &Path, extra: &[&str]) -> ServerProc {
        let mut args = vec!["--squash", "none"];
        args.extend_from_slice(extra);
        ServerProc::launch(&[], &fresh_addr(), export, key, &args)
    }

    fn spawn(args: &[String]) -> Child {
        ServerProc::spawn_via(&[], args).0
    }

    /// Starts `dfs-server ARGS` (through `wrapper`, say `prlimit --nofile=…`, which execs it)
    /// and returns it with the address it says it serves on.
    fn spawn_via(wrapper: &[&str], args: &[String]) -> (Child, String) {
        let mut cmd = match wrapper.split_first() {
            Some((first, rest)) => {
                let mut c = Command::new(first);
                c.args(rest).arg(server_bin());
                c
            }
            None => Command::new(server_bin()),
        };
        let mut child = cmd
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let lines = lines_of(&mut child);
        let deadline = Instant::now() + WAIT;
        let addr = loop {
            match lines.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(l) if l.contains("serving") => {
                    break l.rsplit(" on ").next().unwrap_or_default().to_string()
                }
                Ok(_) => {}
                Err(_) => panic!("dfs-server did not start"),
            }
        };
        // Keep draining its stderr so it never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        (child, addr)
    }

    /// Serves `export` on `listen` with exactly `args` besides the export, address and key,
    /// started through `wrapper` (empty for none).
    pub fn launch(
        wrapper: &[&str],
        listen: &str,
        export: &Path,
        key: &Path,
        extra: &[&str],
    ) -> ServerProc {
        let mut args: Vec<String> = vec![
            "--export".into(),
            export.to_str().unwrap().into(),
            "--listen".into(),
            listen.into(),
            "--handle-key".into(),
            key.to_str().unwrap().into(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let (child, addr) = ServerProc::spawn_via(wrapper, &args);
        ServerProc {
            child,
            addr,
            export: export.into(),
            key: key.into(),
            args,
        }
    }

    /// SIGKILL, no goodbye.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// A new server process on the same export, key and address.
    pub fn restart(&mut self) {
        self.kill();
        self.child = ServerProc::spawn(&self.args);
    }
}

impl Drop for ServerProc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A foreground `dfs mount` process and its mount point.
pub struct MountProc {
    pub child: Child,
    pub mp: PathBuf,
}

impl MountProc {
    pub fn start(addr: &str, mp: &Path, opts: &[&str]) -> MountProc {
        MountProc::start_via(&[], addr, mp, opts)
    }

    /// As [`MountProc::start`], with `dfs` run through `wrapper` (`nsenter --net=…`, say).
    pub fn start_via(wrapper: &[&str], addr: &str, mp: &Path, opts: &[&str]) -> MountProc {
        std::fs::create_dir_all(mp).unwrap();
        let mut cmd = match wrapper.split_first() {
            Some((first, rest)) => {
                let mut c = Command::new(first);
                c.args(rest).arg(DFS);
                c
            }
            None => Command::new(DFS),
        };
        cmd.arg("mount").arg(addr).arg(mp).arg("--foreground");
        for o in opts {
            cmd.arg("-o").arg(o);
        }
        let mut child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let lines = lines_of(&mut child);
        let deadline = Instant::now() + WAIT;
        while !dfs_client::mount::is_fuse_mount(mp) {
            if let Ok(Some(st)) = child.try_wait() {
                let said: Vec<String> = lines.try_iter().collect();
                panic!("dfs mount exited ({st}): {said:?}");
            }
            assert!(
                Instant::now() < deadline,
                "{} was not mounted",
                mp.display()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        std::thread::spawn(move || for _ in lines {});
        MountProc {
            child,
            mp: mp.into(),
        }
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Unmounts with `dfs umount` and waits for the daemon to exit on its own.
    pub fn umount(mut self) {
        let out = run(Command::new(DFS).arg("umount").arg(&self.mp));
        assert!(
            out.status.success(),
            "dfs umount: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let deadline = Instant::now() + WAIT;
        loop {
            if let Ok(Some(st)) = self.child.try_wait() {
                assert!(st.success(), "the mount daemon exited with {st}");
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the mount daemon did not exit after the unmount"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for MountProc {
    fn drop(&mut self) {
        lazy_umount(&self.mp);
        self.kill();
    }
}

pub fn lazy_umount(mp: &Path) {
    let _ = nix::mount::umount2(mp, nix::mount::MntFlags::MNT_DETACH);
}

/// Runs a command to completion within [`WAIT`] (a hung file system fails the test instead
/// of hanging it).
pub fn run(cmd: &mut Command) -> Output {
    run_within(cmd, WAIT)
}

pub fn run_within(cmd: &mut Command, limit: Duration) -> Output {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Both pipes are drained while the child runs: a child that writes more than a pipe
    // holds (64 KiB) would otherwise wait for a reader that only comes after it exits.
    fn drain(r: Option<impl Read + Send + 'static>) -> Receiver<Vec<u8>> {
        let (tx, rx) = channel();
        if let Some(mut r) = r {
            std::thread::spawn(move || {
                let mut v = Vec::new();
                let _ = r.read_to_end(&mut v);
                let _ = tx.send(v);
            });
        }
        rx
    }
    let (out, err) = (drain(child.stdout.take()), drain(child.stderr.take()));
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break Some(s);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    // A process the child left behind may hold the pipes open: their ends are awaited for a
    // while, not forever.
    let collect = |rx: Receiver<Vec<u8>>| rx.recv_timeout(WAIT).unwrap_or_default();
    let (stdout, stderr) = (collect(out), collect(err));
    match status {
        Some(status) => Output {
            status,
            stdout,
            stderr,
        },
        None => panic!(
            "{cmd:?} took longer than {limit:?}: {}",
            String::from_utf8_lossy(&stderr)
        ),
    }
}

/// Runs a shell script in `dir` and asserts that it succeeds.
pub fn sh(dir: &Path, script: &str) -> String {
    let out = run(Command::new("bash")
        .arg("-euo")
        .arg("pipefail")
        .arg("-c")
        .arg(script)
        .current_dir(dir));
    assert!(
        out.status.success(),
        "{script}\nstdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Lazily unmounts a mount point when dropped: for mounts whose daemon the test does not
/// hold (a background `dfs mount`, `mount -t dfs`).
pub struct UnmountOnDrop(pub PathBuf);

impl Drop for UnmountOnDrop {
    fn drop(&mut self) {
        lazy_umount(&self.0);
    }
}

/// Runs `bash -euo pipefail -c SCRIPT` as `user`: its own uid and group, no supplementary
/// groups, no capabilities, with `HOME` at `dir` and `dir` as its working directory (which
/// the user must be able to reach), within `limit`.
pub fn sh_as(user: &test_support::TestUser, dir: &Path, script: &str, limit: Duration) -> Output {
    run_within(
        Command::new("setpriv")
            .args([
                "--reuid",
                &user.uid.to_string(),
                "--regid",
                &user.gid.to_string(),
                "--clear-groups",
                "--inh-caps=-all",
                "--",
                "bash",
                "-euo",
                "pipefail",
                "-c",
            ])
            .arg(format!("cd \"$DFS_TEST_DIR\"\n{script}"))
            .env("DFS_TEST_DIR", dir)
            .env("HOME", dir)
            .current_dir("/"),
        limit,
    )
}

/// Runs `python3 -c SCRIPT ARGS…` (a program nobody here wrote, for calls std has no
/// function for: xattrs, mmap) and returns its stdout; fails the test if it fails.
pub fn python(script: &str, args: &[&std::ffi::OsStr]) -> Vec<u8> {
    let out = Command::new("python3")
        .args(["-c", script])
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}
