//! The `dfs-server` binary as users run it: start-up errors, the warning without a secret,
//! graceful stop on SIGINT and SIGTERM, a restart with the same handle key, and a client that
//! outlives a killed server without hanging.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::time::Duration;

use common::*;
use dfs_client::{ConnectOptions, Connection};
use dfs_proto::msg::Op;

const BIN: &str = env!("CARGO_BIN_EXE_dfs-server");
const WAIT: Duration = Duration::from_secs(20);

/// A daemon that is killed when dropped, with its stderr lines on a channel.
struct Daemon {
    child: Child,
    lines: Receiver<String>,
}

impl Daemon {
    fn start(args: &[&str]) -> Daemon {
        let mut child = Command::new(BIN)
            .args(args)
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let err = child.stderr.take().unwrap();
        let (tx, lines) = channel();
        std::thread::spawn(move || {
            for l in BufReader::new(err).lines().map_while(Result::ok) {
                let _ = tx.send(l);
            }
        });
        Daemon { child, lines }
    }

    /// Waits for a line containing `what`; returns every line up to it.
    fn expect(&self, what: &str) -> Vec<String> {
        let mut seen = Vec::new();
        loop {
            match self.lines.recv_timeout(WAIT) {
                Ok(l) => {
                    let done = l.contains(what);
                    seen.push(l);
                    if done {
                        return seen;
                    }
                }
                Err(_) => panic!("no line with {what:?} from dfs-server; saw {seen:#?}"),
            }
        }
    }

    fn signal(&self, sig: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.child.id() as i32), sig).unwrap();
    }

    fn wait_exit(&mut self) -> std::process::ExitStatus {
        let start = std::time::Instant::now();
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return st;
            }
            assert!(start.elapsed() < WAIT, "dfs-server did not exit");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs the binary to completion (it must fail fast) and returns its exit code and stderr.
fn fails(args: &[&str]) -> (i32, String) {
    let mut d = Daemon::start(args);
    let st = d.wait_exit();
    // The reader thread ends at the pipe's end of file, after the last line.
    let mut lines = Vec::new();
    while let Ok(l) = d.lines.recv_timeout(WAIT) {
        lines.push(l);
    }
    (st.code().unwrap_or(-1), lines.join("\n"))
}

fn key_arg(dir: &Path) -> String {
    dir.join("handle.key").to_str().unwrap().to_string()
}

#[test]
fn start_up_errors_are_one_clear_line() {
    let tmp = tempfile::tempdir().unwrap();
    let key = key_arg(tmp.path());
    let addr = fresh_shm();
    let (code, err) = fails(&[
        "--export",
        "/no/such/dir",
        "--listen",
        &addr,
        "--handle-key",
        &key,
    ]);
    assert_eq!(code, 1);
    assert_eq!(
        err,
        "dfs-server: error: cannot serve /no/such/dir: no such directory"
    );
    let file = tmp.path().join("file");
    std::fs::write(&file, b"x").unwrap();
    let (code, err) = fails(&[
        "--export",
        file.to_str().unwrap(),
        "--listen",
        &addr,
        "--handle-key",
        &key,
    ]);
    assert_eq!(code, 1);
    assert!(err.ends_with("not a directory"), "{err}");
    let dir = tmp.path().to_str().unwrap();
    let (code, err) = fails(&[
        "--export",
        dir,
        "--listen",
        &addr,
        "--secret",
        "/no/secret",
        "--handle-key",
        &key,
    ]);
    assert_eq!(code, 1);
    assert!(
        err.starts_with("dfs-server: error: cannot read the secret /no/secret:"),
        "{err}"
    );
    let weak = tmp.path().join("weak");
    std::fs::write(&weak, b"123\n").unwrap();
    let (code, err) = fails(&[
        "--export",
        dir,
        "--listen",
        &addr,
        "--secret",
        weak.to_str().unwrap(),
        "--handle-key",
        &key,
    ]);
    assert_eq!(code, 1);
    assert!(err.contains("at least 16 bytes"), "{err}");
    let (code, err) = fails(&[
        "--export",
        dir,
        "--listen",
        "carrier-pigeon:1",
        "--handle-key",
        &key,
    ]);
    assert_eq!(code, 1);
    assert!(
        err.starts_with("dfs-server: error: cannot listen on carrier-pigeon:1"),
        "{err}"
    );
    let (code, err) = fails(&["--export", dir, "--squash", "some", "--handle-key", &key]);
    assert_eq!(code, 2, "clap's usage error");
    assert!(err.contains("root, none or all"), "{err}");
    // An address in use.
    let first = Daemon::start(&["--export", dir, "--listen", &addr, "--handle-key", &key]);
    first.expect("serving");
    let (code, err) = fails(&["--export", dir, "--listen", &addr, "--handle-key", &key]);
    assert_eq!(code, 1);
    assert!(
        err.starts_with(&format!("dfs-server: error: cannot listen on {addr}")),
        "{err}"
    );
    assert!(err.to_lowercase().contains("in use"), "{err}");
}

#[test]
fn serves_warns_and_stops_gracefully() {
    let tmp = tempfile::tempdir().unwrap();
    let export = tmp.path().join("export");
    std::fs::create_dir(&export).unwrap();
    let key = key_arg(tmp.path());
    for sig in [
        nix::sys::signal::Signal::SIGTERM,
        nix::sys::signal::Signal::SIGINT,
    ] {
        let addr = fresh_shm();
        let mut d = Daemon::start(&[
            "--export",
            export.to_str().unwrap(),
            "--listen",
            &addr,
            "--handle-key",
            &key,
            "--squash",
            "none",
        ]);
        let lines = d.expect("serving");
        assert!(
            lines
                .iter()
                .any(|l| l.contains("any local user may connect")),
            "{lines:#?}"
        );
        let mut c = Client {
            conn: Connection::connect(&addr, &ConnectOptions::new().unwrap()).unwrap(),
            creds: ROOT,
        };
        let top = c.root();
        c.create(&top, "hello", 0o644, RW).unwrap();
        d.signal(sig);
        assert!(d.wait_exit().success(), "{sig:?} is a clean exit");
        // The connected client sees the end, it does not hang.
        let r = c.conn.call(
            &ROOT,
            Op::GetAttr {
                handle: top,
                open: None,
            },
            &[],
        );
        assert!(r.is_err(), "{r:?}");
    }
    assert!(export.join("hello").exists());
}

#[test]
fn a_restarted_daemon_keeps_handles_and_a_killed_one_hangs_nobody() {
    let tmp = tempfile::tempdir().unwrap();
    let export = tmp.path().join("export");
    std::fs::create_dir(&export).unwrap();
    let secret = tmp.path().join("secret");
    std::fs::write(&secret, b"a secret of more than sixteen bytes\n").unwrap();
    let key = key_arg(tmp.path());
    let addr = fresh_shm();
    let args = [
        "--export",
        export.to_str().unwrap(),
        "--listen",
        &addr,
        "--handle-key",
        &key,
        "--secret",
        secret.to_str().unwrap(),
        "--squash",
        "none",
    ];
    let mut opts = ConnectOptions::new().unwrap();
    opts.secret =
        Some(dfs_proto::auth::Secret::from_file_bytes(&std::fs::read(&secret).unwrap()).unwrap());
    opts.timeout = Duration::from_secs(5);
    let d = Daemon::start(&args);
    let lines = d.expect("serving");
    assert!(
        !lines.iter().any(|l| l.contains("anyone who can reach")),
        "{lines:#?}"
    );
    let mut c = Client {
        conn: Connection::connect(&addr, &opts).unwrap(),
        creds: ROOT,
    };
    let top = c.root();
    let (f, open) = c.create(&top, "kept", 0o644, RW).unwrap();
    c.write(&f.handle, Some(open), 0, b"across restarts")
        .unwrap();
    // SIGKILL: no goodbye. The next call fails within the timeout instead of hanging.
    drop(d);
    let start = std::time::Instant::now();
    let r = c.conn.call(
        &ROOT,
        Op::GetAttr {
            handle: f.handle.clone(),
            open: None,
        },
        &[],
    );
    assert!(r.is_err(), "{r:?}");
    assert!(start.elapsed() < Duration::from_secs(6));
    // A new daemon with the same key file serves the old handles.
    let d = Daemon::start(&args);
    d.expect("serving");
    let mut c = Client {
        conn: Connection::connect(&addr, &opts).unwrap(),
        creds: ROOT,
    };
    assert_eq!(c.root(), top);
    assert_eq!(
        c.read(&f.handle, Some(open), 0, 100).unwrap().0,
        b"across restarts"
    );
    let meta = std::fs::metadata(tmp.path().join("handle.key")).unwrap();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o777,
        0o600
    );
}

#[test]
fn no_subtree_check_is_for_measuring_and_says_so() {
    let help = Command::new(BIN).arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    let at = help
        .find("--no-subtree-check")
        .expect("the flag is documented");
    assert!(
        help[at..].contains("INSECURE, for measuring only"),
        "{help}"
    );
    let tmp = tempfile::tempdir().unwrap();
    let export = tmp.path().join("export");
    std::fs::create_dir(&export).unwrap();
    let key = key_arg(tmp.path());
    let base = ["--export", export.to_str().unwrap(), "--handle-key", &key];
    let addr = fresh_shm();
    let d = Daemon::start(&[&base[..], &["--listen", &addr]].concat());
    let lines = d.expect("serving");
    assert!(
        !lines.iter().any(|l| l.contains("no-subtree-check")),
        "{lines:#?}"
    );
    drop(d);
    let addr = fresh_shm();
    let d = Daemon::start(&[&base[..], &["--listen", &addr, "--no-subtree-check"]].concat());
    let lines = d.expect("serving");
    assert!(
        lines
            .iter()
            .any(|l| l.contains("WARN") && l.contains("--no-subtree-check")),
        "{lines:#?}"
    );
}
