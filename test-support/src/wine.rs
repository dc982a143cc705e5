//! Windows programs under Wine, for the tests that run the Windows build against Linux peers.
//!
//! The programs are built by `scripts/build-windows.sh` into the target directory and run by
//! `scripts/wine-run.sh` (which sets up the Wine prefix and the stub bcryptprimitives.dll).
//! Without a build, [`windows_build`] says so and the test passes, unless `VMMC_WINE_TESTS=1`
//! asks for them (CI does), which makes a missing build a failure. Every program is killed
//! when its [`WineProc`] is dropped; every wait has a timeout.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::channel;
use std::time::{Duration, Instant};

/// How long a Wine program may take, start-up included (a fresh Wine prefix takes seconds).
pub const WINE_WAIT: Duration = Duration::from_secs(120);

/// The workspace's target directory, found from the running test binary
/// (`TARGET/debug/deps/TEST`).
pub fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    exe.ancestors()
        .nth(3)
        .expect("the test binary lives in TARGET/debug/deps")
        .to_path_buf()
}

/// `rel` under the target directory, or `None` (after saying why) when it is not there and
/// the Wine tests were not asked for.
pub fn windows_build(rel: &str) -> Option<PathBuf> {
    let p = target_dir().join(rel);
    if p.exists() {
        return Some(p);
    }
    let asked = std::env::var("VMMC_WINE_TESTS").is_ok_and(|v| v == "1");
    assert!(
        !asked,
        "{} is missing: run scripts/build-windows.sh",
        p.display()
    );
    eprintln!(
        "skipped: {} is missing (scripts/build-windows.sh builds it)",
        p.display()
    );
    None
}

/// The repository's `scripts/wine-run.sh`.
fn runner() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/wine-run.sh")
}

/// A program under Wine (or any program: [`WineProc::native`]); killed when dropped.
#[derive(Debug)]
pub struct WineProc {
    child: Child,
}

impl WineProc {
    /// Starts `exe ARGS` under Wine with `env` added to the environment.
    pub fn start(exe: &Path, args: &[&str], env: &[(&str, &str)]) -> WineProc {
        let mut cmd = Command::new(runner());
        cmd.arg(exe);
        WineProc::spawn(cmd, args, env)
    }

    /// Starts a Linux program the same way (a peer for the Windows one).
    pub fn native(exe: &Path, args: &[&str]) -> WineProc {
        WineProc::spawn(Command::new(exe), args, &[])
    }

    fn spawn(mut cmd: Command, args: &[&str], env: &[(&str, &str)]) -> WineProc {
        cmd.args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let child = cmd.spawn().expect("the program starts");
        WineProc { child }
    }

    /// Waits for the program to end within [`WINE_WAIT`]; its status, stdout and stderr.
    pub fn finish(mut self) -> (ExitStatus, String, String) {
        let mut out = self.child.stdout.take().expect("piped");
        let mut err = self.child.stderr.take().expect("piped");
        let (tx, rx) = channel();
        let tx2 = tx.clone();
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = out.read_to_string(&mut s);
            let _ = tx.send((0, s));
        });
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = err.read_to_string(&mut s);
            let _ = tx2.send((1, s));
        });
        let deadline = Instant::now() + WINE_WAIT;
        let mut texts = [String::new(), String::new()];
        for _ in 0..2 {
            let (i, s) = rx
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
                .expect("the program ends in time");
            texts[i] = s;
        }
        let status = loop {
            if let Some(st) = self.child.try_wait().expect("try_wait") {
                break st;
            }
            assert!(Instant::now() < deadline, "the program ends in time");
            std::thread::sleep(Duration::from_millis(20));
        };
        let [out, err] = texts;
        (status, out, err)
    }

    /// Reads stdout lines until one starts with `prefix`; returns the rest of it. The rest
    /// of stdout and stderr is drained meanwhile, so the program never blocks on a pipe.
    pub fn line_starting(&mut self, prefix: &str) -> String {
        let out = self.child.stdout.take().expect("piped");
        let mut err = self.child.stderr.take().expect("piped");
        // Kept, to say why a program that ended early never said what was awaited.
        let said = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let keep = said.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n @ 1..) = err.read(&mut buf) {
                if let Ok(mut k) = keep.lock() {
                    k.extend_from_slice(&buf[..n]);
                }
            }
        });
        let (tx, rx) = channel();
        std::thread::spawn(move || {
            for l in BufReader::new(out).lines().map_while(Result::ok) {
                let _ = tx.send(l);
            }
        });
        let deadline = Instant::now() + WINE_WAIT;
        loop {
            let l = rx
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
                .unwrap_or_else(|e| {
                    // Give the stderr reader a moment to take the last of it.
                    std::thread::sleep(Duration::from_millis(200));
                    let err = said.lock().map(|k| k.clone()).unwrap_or_default();
                    let err = String::from_utf8_lossy(&err);
                    let tail: Vec<&str> = err.lines().rev().take(20).collect();
                    panic!(
                        "the program says {prefix:?} in time ({}); its stderr ends:\n{}",
                        match e {
                            std::sync::mpsc::RecvTimeoutError::Timeout => "timed out",
                            std::sync::mpsc::RecvTimeoutError::Disconnected => "it ended",
                        },
                        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                    )
                });
            if let Some(rest) = l.strip_prefix(prefix) {
                return rest.trim().to_string();
            }
        }
    }
}

impl Drop for WineProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The byte at `i` of the bulk stream of echo_peer and wsping.
pub fn echo_pattern(i: u64) -> u8 {
    (i.wrapping_mul(31) ^ (i >> 12)) as u8
}

/// The sink service of echo_peer and wsping, on any byte stream: after the service byte,
/// the bytes up to the end of the stream, answered with their count and FNV-1a hash.
/// `E` echoes instead.
pub fn serve_echo_protocol(s: &mut (impl Read + Write)) -> std::io::Result<()> {
    let mut kind = [0u8; 1];
    s.read_exact(&mut kind)?;
    let mut buf = vec![0u8; 1 << 20];
    let (mut total, mut h) = (0u64, crate::FNV_START);
    loop {
        let n = s.read(&mut buf)?;
        if n == 0 {
            break;
        }
        if kind[0] == b'E' {
            s.write_all(&buf[..n])?;
        } else {
            h = crate::fnv(&buf[..n], h);
            total += n as u64;
        }
    }
    if kind[0] == b'S' {
        let mut answer = [0u8; 16];
        answer[..8].copy_from_slice(&total.to_le_bytes());
        answer[8..].copy_from_slice(&h.to_le_bytes());
        s.write_all(&answer)?;
    }
    Ok(())
}
