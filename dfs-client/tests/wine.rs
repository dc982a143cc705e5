//! The stack built for Windows, run under Wine, against Linux peers over tcp: VMMC sockets
//! both ways (a Windows client of a Linux listener, a Linux client of a Windows listener) and
//! the client library against a Linux `dfs-server`.
//!
//! The Windows programs are the workspace's own examples built for `x86_64-pc-windows-gnu`
//! (`scripts/build-windows.sh`, which scripts/test.sh runs), run by `scripts/wine-run.sh`.
//! Without them the tests say so and pass, unless `VMMC_WINE_TESTS=1` asks for them (CI
//! does), which makes a missing program a failure.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::channel;
use std::time::{Duration, Instant};

use common::{ServerProc, DFS};
use vmmc_sockets::{VmmcListener, VmmcStream};

/// How long a Wine program may take, start-up included (a fresh Wine prefix takes seconds).
const WAIT: Duration = Duration::from_secs(120);

/// The Windows build of example `name`, or `None` (after saying why) when it is not there and
/// the tests were not asked for.
fn windows_example(name: &str) -> Option<PathBuf> {
    // DFS is TARGET/debug/dfs; the Windows build is TARGET/x86_64-pc-windows-gnu/debug.
    let target = Path::new(DFS)
        .parent()
        .and_then(Path::parent)
        .expect("dfs lives in the target directory");
    let exe = target
        .join("x86_64-pc-windows-gnu/debug/examples")
        .join(format!("{name}.exe"));
    if exe.exists() {
        return Some(exe);
    }
    let asked = std::env::var("VMMC_WINE_TESTS").is_ok_and(|v| v == "1");
    assert!(
        !asked,
        "{} is missing: run scripts/build-windows.sh",
        exe.display()
    );
    eprintln!(
        "skipped: {} is missing (scripts/build-windows.sh builds it)",
        exe.display()
    );
    None
}

/// A program under Wine; killed when dropped, also when a test fails.
struct WineProc {
    child: Child,
}

impl WineProc {
    fn start(exe: &Path, args: &[&str]) -> WineProc {
        let runner = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/wine-run.sh");
        let child = Command::new(runner)
            .arg(exe)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("scripts/wine-run.sh starts");
        WineProc { child }
    }

    /// Waits for the program to end within [`WAIT`]; its status, stdout and stderr.
    fn finish(mut self) -> (ExitStatus, String, String) {
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
        let deadline = Instant::now() + WAIT;
        let mut texts = [String::new(), String::new()];
        for _ in 0..2 {
            let (i, s) = rx
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
                .expect("the Wine program ends in time");
            texts[i] = s;
        }
        let status = loop {
            if let Some(st) = self.child.try_wait().expect("try_wait") {
                break st;
            }
            assert!(Instant::now() < deadline, "the Wine program ends in time");
            std::thread::sleep(Duration::from_millis(20));
        };
        let [out, err] = texts;
        (status, out, err)
    }

    /// Reads stdout lines until one starts with `prefix`; returns the rest of it.
    fn line_starting(&mut self, prefix: &str) -> String {
        let out = self.child.stdout.take().expect("piped");
        let (tx, rx) = channel();
        std::thread::spawn(move || {
            for l in BufReader::new(out).lines().map_while(Result::ok) {
                let _ = tx.send(l);
            }
        });
        let deadline = Instant::now() + WAIT;
        loop {
            let l = rx
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
                .unwrap_or_else(|_| panic!("the Wine program says {prefix:?} in time"));
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

/// The byte at `i` of echo_peer's bulk stream.
fn pattern(i: u64) -> u8 {
    (i.wrapping_mul(31) ^ (i >> 12)) as u8
}

fn fnv(data: &[u8], mut h: u64) -> u64 {
    for b in data {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x100_0000_01b3);
    }
    h
}

const FNV_START: u64 = 0xcbf2_9ce4_8422_2325;

/// echo_peer's services (see its source), in this process, for `conns` connections.
fn serve_echo_peer(l: VmmcListener, conns: usize) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        for _ in 0..conns {
            let (mut s, _) = l.accept().expect("accept");
            s.set_read_timeout(Some(WAIT)).expect("timeout");
            let mut kind = [0u8; 1];
            s.read_exact(&mut kind).expect("service byte");
            let mut buf = vec![0u8; 1 << 20];
            let (mut total, mut h) = (0u64, FNV_START);
            loop {
                let n = s.read(&mut buf).expect("read");
                if n == 0 {
                    break;
                }
                if kind[0] == b'E' {
                    s.write_all(&buf[..n]).expect("echo");
                } else {
                    h = fnv(&buf[..n], h);
                    total += n as u64;
                }
            }
            if kind[0] == b'S' {
                let mut answer = [0u8; 16];
                answer[..8].copy_from_slice(&total.to_le_bytes());
                answer[8..].copy_from_slice(&h.to_le_bytes());
                s.write_all(&answer).expect("answer");
            }
        }
    })
}

#[test]
fn a_wine_client_talks_to_a_linux_listener_over_tcp() {
    let Some(exe) = windows_example("echo_peer") else {
        return;
    };
    let l = VmmcListener::bind("tcp:127.0.0.1:0").unwrap();
    let addr = l.local_addr().to_string();
    let server = serve_echo_peer(l, 2);
    let (st, out, err) = WineProc::start(&exe, &["ping", &addr, "200", "1000"]).finish();
    assert!(st.success(), "ping under Wine failed: {out} {err}");
    assert!(out.starts_with("rtt_us "), "{out}");
    let (st, out, err) = WineProc::start(&exe, &["bulk", &addr, "32"]).finish();
    assert!(st.success(), "bulk under Wine failed: {out} {err}");
    assert!(out.starts_with("mib_per_s "), "{out}");
    server.join().unwrap();
}

#[test]
fn a_linux_client_talks_to_a_wine_listener_over_tcp() {
    let Some(exe) = windows_example("echo_peer") else {
        return;
    };
    let mut peer = WineProc::start(&exe, &["listen", "tcp:127.0.0.1:0"]);
    let addr = peer.line_starting("listening ");

    let mut s = VmmcStream::connect(&addr).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    s.write_all(b"E").unwrap();
    for round in 0..100u64 {
        let msg: Vec<u8> = (0..3000).map(|i| pattern(i + round)).collect();
        s.write_all(&msg).unwrap();
        let mut back = vec![0u8; msg.len()];
        s.read_exact(&mut back).unwrap();
        assert_eq!(back, msg, "round {round}");
    }
    drop(s);

    let mut s = VmmcStream::connect(&addr).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    s.write_all(b"S").unwrap();
    let chunk: Vec<u8> = (0..1u64 << 20).map(pattern).collect();
    let mut h = FNV_START;
    for _ in 0..32 {
        s.write_all(&chunk).unwrap();
        h = fnv(&chunk, h);
    }
    s.shutdown(std::net::Shutdown::Write).unwrap();
    let mut answer = [0u8; 16];
    s.read_exact(&mut answer).unwrap();
    assert_eq!(
        u64::from_le_bytes(answer[..8].try_into().unwrap()),
        32 << 20
    );
    assert_eq!(u64::from_le_bytes(answer[8..].try_into().unwrap()), h);
}

#[test]
fn the_client_library_under_wine_uses_a_linux_server_over_tcp() {
    let Some(exe) = windows_example("dfs_smoke") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let export = tmp.path().join("export");
    std::fs::create_dir(&export).unwrap();
    // The Windows client claims nobody's ids (it has no Unix ones): let it write.
    std::fs::set_permissions(&export, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    let secret = tmp.path().join("secret");
    std::fs::write(&secret, "0123456789abcdef0123456789abcdef").unwrap();
    let secret = secret.to_str().unwrap();
    let server = ServerProc::launch(
        &[],
        "tcp:127.0.0.1:0",
        &export,
        &tmp.path().join("handle.key"),
        &["--squash", "none", "--secret", secret],
    );
    let (st, out, err) = WineProc::start(&exe, &[&server.addr, secret, "from-wine", "8"]).finish();
    assert!(st.success(), "dfs_smoke under Wine failed: {out} {err}");
    assert!(out.starts_with("ok "), "{out}");
    // It cleaned up after itself, through the server.
    assert_eq!(std::fs::read_dir(&export).unwrap().count(), 0);
}

#[test]
fn an_shm_address_on_windows_fails_saying_it_is_not_implemented() {
    let Some(exe) = windows_example("echo_peer") else {
        return;
    };
    let (st, out, err) = WineProc::start(&exe, &["listen", "shm:wine-test"]).finish();
    assert!(!st.success(), "{out}");
    assert!(err.contains("not implemented"), "{err}");
}
