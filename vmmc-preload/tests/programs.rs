//! Unmodified programs (iperf3, sockperf, socat) under `vmmc-run`, beside the same programs
//! on kernel TCP in the same run.
//!
//! Each routed test makes sure the traffic really went over VMMC: its routes are `strict`
//! (no fallback to the kernel), and the kernel port stays closed while the VMMC server runs,
//! or the test talks to the program with a native `VmmcStream`.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use vmmc_sockets::VmmcStream;

/// The tests run one at a time: each starts programs that spin on both of the machine's
/// cores, and two at once would measure each other.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

/// A started program, killed when the test ends however it ends.
struct Running(Child, String);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Running {
    /// Waits for the program to exit by itself, failing the test after `limit`.
    fn finish(mut self, limit: Duration) -> Output {
        let deadline = Instant::now() + limit;
        loop {
            match self.0.try_wait() {
                Ok(Some(_)) => break,
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                Ok(None) => panic!("{} did not finish within {limit:?}", self.1),
                Err(e) => panic!("{}: {e}", self.1),
            }
        }
        let mut out = Output {
            status: self.0.wait().expect("status of an exited child"),
            stdout: Vec::new(),
            stderr: Vec::new(),
        };
        if let Some(mut o) = self.0.stdout.take() {
            let _ = o.read_to_end(&mut out.stdout);
        }
        if let Some(mut e) = self.0.stderr.take() {
            let _ = e.read_to_end(&mut out.stderr);
        }
        out
    }
}

/// `vmmc-run`, pointed at the library this very `cargo test` built: `cargo test` leaves the
/// cdylib in `deps/` beside the test binary and does not copy it beside `vmmc-run`, where a
/// stale one from an older `cargo build` may lie.
fn vmmc_run() -> Command {
    let lib = std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.join("libvmmc_preload.so")))
        .expect("the test binary's directory");
    assert!(lib.exists(), "{} was not built", lib.display());
    let mut c = Command::new(env!("CARGO_BIN_EXE_vmmc-run"));
    c.env("VMMC_PRELOAD_LIB", lib);
    c
}

fn need(tool: &str) {
    let found = std::path::Path::new(tool).is_absolute()
        || std::env::var_os("PATH")
            .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()));
    assert!(
        found,
        "{tool} is not installed: scripts/install-test-deps.sh installs it"
    );
}

/// `program args` on kernel TCP (`routes: None`) or under vmmc-run with `routes`.
fn start(routes: Option<&str>, program: &str, args: &[&str]) -> Running {
    need(program);
    let mut cmd = match routes {
        None => Command::new(program),
        Some(r) => {
            let mut c = vmmc_run();
            c.arg("--debug")
                .arg("--route")
                .arg(r)
                .arg("--")
                .arg(program);
            c
        }
    };
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("starting {program}: {e}"));
    Running(child, format!("{program} {}", args.join(" ")))
}

fn free_port() -> u16 {
    test_support::unused_port()
}

fn shm_name(what: &str) -> String {
    format!("shm:vp-{what}-{}", std::process::id())
}

/// Waits until `ready` holds, failing the test after `limit`.
fn wait_until(what: &str, limit: Duration, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !ready() {
        assert!(Instant::now() < deadline, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn kernel_port_open(port: u16) -> bool {
    TcpStream::connect(("127.0.0.1", port)).is_ok()
}

fn vmmc_listening(addr: &str) -> bool {
    VmmcStream::connect(addr).is_ok()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// iperf3's received bits per second, from its JSON report.
fn iperf_bps(out: &Output) -> f64 {
    let s = text(&out.stdout);
    assert!(
        out.status.success(),
        "iperf3 failed: {s}\n{}",
        text(&out.stderr)
    );
    // "sum_received": { ... "bits_per_second": N ... }
    let at = s
        .find("\"sum_received\"")
        .expect("sum_received in iperf3's JSON");
    let rest = &s[at..];
    let k = rest
        .find("\"bits_per_second\":")
        .expect("bits_per_second in iperf3's JSON");
    rest[k + 18..]
        .trim_start()
        .split([',', '\n', '}'])
        .next()
        .and_then(|v| v.trim().parse().ok())
        .expect("a number of bits per second")
}

fn iperf(routes: Option<&str>, port: u16) -> f64 {
    let p = port.to_string();
    let server = start(routes, "iperf3", &["-s", "-p", &p]);
    match routes {
        Some(_) => {
            let target = shm_name("iperf");
            wait_until("iperf3 server on VMMC", Duration::from_secs(10), || {
                vmmc_listening(&target)
            });
            assert!(
                !kernel_port_open(port),
                "the routed iperf3 server listens on kernel TCP"
            );
        }
        None => wait_until("iperf3 server on TCP", Duration::from_secs(10), || {
            kernel_port_open(port)
        }),
    }
    // Let the server get over the probe connection.
    std::thread::sleep(Duration::from_millis(200));
    let client = start(
        routes,
        "iperf3",
        &["-c", "127.0.0.1", "-p", &p, "-t", "1", "-J"],
    );
    let out = client.finish(Duration::from_secs(30));
    drop(server);
    iperf_bps(&out)
}

#[test]
fn iperf3_client_and_server_over_vmmc_and_tcp() {
    let _serial = serial();
    let port = free_port();
    let route = format!("127.0.0.1:{port} {} strict", shm_name("iperf"));
    let vmmc = iperf(Some(&route), port);
    let tcp = iperf(None, free_port());
    eprintln!(
        "iperf3: VMMC {:.1} Gbit/s, kernel TCP {:.1} Gbit/s, ratio {:.2}",
        vmmc / 1e9,
        tcp / 1e9,
        vmmc / tcp
    );
    assert!(vmmc > 0.0 && tcp > 0.0);
}

/// sockperf's average latency in microseconds, from a ping-pong client's output.
fn sockperf_latency(out: &Output) -> f64 {
    let s = text(&out.stdout) + &text(&out.stderr);
    assert!(out.status.success(), "sockperf failed: {s}");
    let line = s
        .lines()
        .find(|l| l.contains("Summary: Latency is"))
        .unwrap_or_else(|| panic!("no latency summary in: {s}"));
    line.split_whitespace()
        .rev()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no number in {line}"))
}

fn ping_pong(routes: Option<&str>, port: u16) -> f64 {
    let p = port.to_string();
    let server = start(
        routes,
        "sockperf",
        &["server", "--tcp", "-i", "127.0.0.1", "-p", &p],
    );
    match routes {
        Some(_) => {
            let target = shm_name("sockperf");
            wait_until("sockperf server on VMMC", Duration::from_secs(10), || {
                vmmc_listening(&target)
            });
            assert!(
                !kernel_port_open(port),
                "the routed sockperf server listens on kernel TCP"
            );
        }
        None => wait_until("sockperf server on TCP", Duration::from_secs(10), || {
            kernel_port_open(port)
        }),
    }
    let client = start(
        routes,
        "sockperf",
        // --mps: sockperf sizes its sequence table for 600 K messages/s unless told, and
        // over VMMC a ping-pong may go faster ("_seqN > m_maxSequenceNo").
        &[
            "ping-pong",
            "--tcp",
            "--mps",
            "5000000",
            "-i",
            "127.0.0.1",
            "-p",
            &p,
            "-t",
            "1",
        ],
    );
    let out = client.finish(Duration::from_secs(30));
    drop(server);
    sockperf_latency(&out)
}

#[test]
fn sockperf_ping_pong_over_vmmc_and_tcp() {
    let _serial = serial();
    let port = free_port();
    let route = format!("127.0.0.1:{port} {} strict", shm_name("sockperf"));
    let vmmc = ping_pong(Some(&route), port);
    let tcp = ping_pong(None, free_port());
    eprintln!(
        "sockperf latency: VMMC {vmmc:.3} us, kernel TCP {tcp:.3} us, ratio {:.2}",
        vmmc / tcp
    );
    assert!(vmmc > 0.0 && tcp > 0.0);
}

/// One sockperf server (epoll) listening on a routed and an unrouted port at once: its
/// epoll set mixes VMMC and kernel sockets, and clients of both kinds are served.
#[test]
fn sockperf_epoll_serves_vmmc_and_kernel_clients_together() {
    let _serial = serial();
    let (pv, pk) = (free_port(), free_port());
    let route = format!("127.0.0.1:{pv} {} strict", shm_name("mixed"));
    let dir = std::env::temp_dir().join(format!("vp-mixed-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a temp dir");
    let feed = dir.join("feed");
    std::fs::write(&feed, format!("T:127.0.0.1:{pv}\nT:127.0.0.1:{pk}\n")).expect("feed file");
    let feed = feed.to_string_lossy().into_owned();
    let _server = start(
        Some(&route),
        "sockperf",
        &["server", "-f", &feed, "-F", "epoll"],
    );
    let target = shm_name("mixed");
    wait_until("VMMC side", Duration::from_secs(10), || {
        vmmc_listening(&target)
    });
    wait_until("kernel side", Duration::from_secs(10), || {
        kernel_port_open(pk)
    });
    let args = |port: u16| {
        vec![
            "ping-pong".to_string(),
            "--tcp".into(),
            "--mps".into(),
            "5000000".into(),
            "-i".into(),
            "127.0.0.1".into(),
            "-p".into(),
            port.to_string(),
            "-t".into(),
            "1".into(),
        ]
    };
    let av = args(pv);
    let ak = args(pk);
    let av: Vec<&str> = av.iter().map(String::as_str).collect();
    let ak: Vec<&str> = ak.iter().map(String::as_str).collect();
    let cv = start(Some(&route), "sockperf", &av);
    let ck = start(None, "sockperf", &ak);
    let lv = sockperf_latency(&cv.finish(Duration::from_secs(30)));
    let lk = sockperf_latency(&ck.finish(Duration::from_secs(30)));
    eprintln!("mixed epoll server: VMMC client {lv:.3} us, kernel client {lk:.3} us");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Sends `msg` to an echo and checks it comes back.
fn echo_round(s: &mut impl ReadWrite, msg: &str) {
    s.write_all(msg.as_bytes()).expect("send to the echo");
    let mut got = vec![0u8; msg.len()];
    s.read_exact(&mut got).expect("the echo");
    assert_eq!(text(&got), msg);
}

trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}

/// socat's forking server: the parent accepts and forks, the child serves the connection
/// (it takes the VMMC socket by using it first), the parent closes its copy without a word
/// and accepts the next. Several connections in turn, and two at once, prove both sides
/// keep working.
#[test]
fn socat_forking_echo_server_keeps_working_in_parent_and_children() {
    let _serial = serial();
    let port = free_port();
    let target = shm_name("socat-fork");
    let route = format!("127.0.0.1:{port} {target} strict");
    let listen = format!("TCP-LISTEN:{port},reuseaddr,fork");
    let _server = start(Some(&route), "socat", &[&listen, "PIPE"]);
    wait_until("socat on VMMC", Duration::from_secs(10), || {
        vmmc_listening(&target)
    });
    assert!(!kernel_port_open(port), "socat listens on kernel TCP");
    let mut a = VmmcStream::connect(&target).expect("connect to socat");
    let mut b = VmmcStream::connect(&target).expect("connect to socat again");
    a.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    b.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    echo_round(&mut a, "first child\n");
    echo_round(&mut b, "second child\n");
    echo_round(&mut a, "first child again\n");
    drop(a);
    // And a client that is itself a preloaded socat.
    let mut cmd = vmmc_run();
    cmd.args(["--route", &route, "--", "socat", "-t", "2", "-"])
        .arg(format!("TCP:127.0.0.1:{port}"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("socat client");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(b"through a preloaded client\n")
        .expect("write to socat");
    let out = Running(child, "socat client".into()).finish(Duration::from_secs(20));
    assert_eq!(
        text(&out.stdout),
        "through a preloaded client\n",
        "stderr: {}",
        text(&out.stderr)
    );
    echo_round(&mut b, "second child at the end\n");
}

/// A kernel echo server on an ephemeral port, served by a thread for `conns` connections.
fn kernel_echo(conns: usize) -> (u16, std::thread::JoinHandle<()>) {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = l.local_addr().expect("addr").port();
    let t = std::thread::spawn(move || {
        for _ in 0..conns {
            let Ok((mut s, _)) = l.accept() else { return };
            let _ = s.set_read_timeout(Some(Duration::from_secs(20)));
            let mut buf = [0u8; 4096];
            while let Ok(n) = s.read(&mut buf) {
                if n == 0 || s.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    });
    (port, t)
}

/// socat as a proxy from a routed port (VMMC) to a kernel TCP echo: its poll loop waits on
/// a VMMC socket and a kernel socket together.
#[test]
fn socat_proxies_between_vmmc_and_kernel_tcp() {
    let _serial = serial();
    let (echo_port, echo) = kernel_echo(1);
    let port = free_port();
    let target = shm_name("socat-proxy");
    let route = format!("127.0.0.1:{port} {target} strict");
    let _proxy = start(
        Some(&route),
        "socat",
        &[
            &format!("TCP-LISTEN:{port},reuseaddr"),
            &format!("TCP:127.0.0.1:{echo_port}"),
        ],
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut s = loop {
        match VmmcStream::connect(&target) {
            Ok(s) => break s,
            Err(e) => {
                assert!(Instant::now() < deadline, "socat proxy never listened: {e}");
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    };
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    for i in 0..20 {
        echo_round(&mut s, &format!("round {i} through VMMC and kernel TCP\n"));
    }
    drop(s);
    drop(_proxy);
    let _ = echo.join();
}

/// Under the preload, sockets to addresses that are not routed are kernel sockets exactly
/// as before: an echo over kernel TCP through a preloaded socat client.
#[test]
fn unrouted_sockets_stay_kernel_sockets() {
    let _serial = serial();
    let (port, echo) = kernel_echo(1);
    let other = free_port();
    let route = format!("127.0.0.1:{other} {} strict", shm_name("unused"));
    let mut cmd = vmmc_run();
    cmd.args(["--debug", "--route", &route, "--", "socat", "-t", "2", "-"])
        .arg(format!("TCP:127.0.0.1:{port}"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("socat");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(b"plain tcp\n")
        .expect("write");
    let out = Running(child, "socat".into()).finish(Duration::from_secs(20));
    assert_eq!(
        text(&out.stdout),
        "plain tcp\n",
        "stderr: {}",
        text(&out.stderr)
    );
    assert!(
        !text(&out.stderr).contains("vmmc-preload: fd"),
        "an unrouted socket was routed: {}",
        text(&out.stderr)
    );
    let _ = echo.join();
}

fn socat_client(route: &str, port: u16) -> Output {
    let mut cmd = vmmc_run();
    cmd.args(["--route", route, "--", "socat", "-t", "2", "-"])
        .arg(format!("TCP:127.0.0.1:{port}"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("socat");
    let _ = child
        .stdin
        .take()
        .expect("stdin")
        .write_all(b"anyone there\n");
    Running(child, "socat".into()).finish(Duration::from_secs(20))
}

/// A routed address with no VMMC listener: a `strict` route fails like kernel TCP with
/// nothing listening (ECONNREFUSED); a plain route falls back to kernel TCP at the original
/// address, and is refused only if nothing listens there either.
#[test]
fn routed_address_without_listener_refuses_or_falls_back() {
    let _serial = serial();
    // Strict: refused, even though a kernel listener is there.
    let (port, echo) = kernel_echo(1);
    let route = format!("127.0.0.1:{port} {} strict", shm_name("nobody-strict"));
    let out = socat_client(&route, port);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("Connection refused"),
        "{}",
        text(&out.stderr)
    );
    // Not strict: kernel TCP to the same address.
    let route = format!("127.0.0.1:{port} {}", shm_name("nobody"));
    let out = socat_client(&route, port);
    assert_eq!(text(&out.stdout), "anyone there\n", "{}", text(&out.stderr));
    let _ = echo.join();
    // Not strict, and nothing in the kernel either: refused.
    let port = free_port();
    let route = format!("127.0.0.1:{port} {}", shm_name("nobody-at-all"));
    let out = socat_client(&route, port);
    assert!(
        text(&out.stderr).contains("Connection refused"),
        "{}",
        text(&out.stderr)
    );
}

/// A mistake in the routes stops vmmc-run before the program starts.
#[test]
fn bad_routes_are_reported_before_the_program_runs() {
    let _serial = serial();
    let out = vmmc_run()
        .args(["--route", "127.0.0.1:1 udp:nothing", "--", "true"])
        .output()
        .expect("vmmc-run");
    assert!(!out.status.success());
    let e = text(&out.stderr);
    assert!(e.contains("route 1"), "{e}");
}

/// The calls the preload takes (dup, dup2, F_DUPFD, FIONBIO, FIONREAD, MSG_PEEK, readv,
/// writev, epoll with a one-shot VMMC socket beside a pipe, select, poll, accept4, fork, end
/// of stream), used by a C program the way any program uses them: it must pass on kernel
/// TCP and under vmmc-run alike.
#[test]
fn socket_calls_behave_as_on_kernel_tcp() {
    let _serial = serial();
    need("cc");
    let dir = std::env::temp_dir().join(format!("vp-calls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a temp dir");
    let exe = dir.join("calls");
    let src = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/c/calls.c");
    let cc = Command::new("cc")
        .args(["-O1", "-Wall", "-o"])
        .arg(&exe)
        .arg(src)
        .output()
        .expect("cc");
    assert!(cc.status.success(), "cc: {}", text(&cc.stderr));
    let exe = exe.to_string_lossy().into_owned();
    for routed in [false, true] {
        let port = free_port();
        let route = format!("127.0.0.1:{port} {} strict", shm_name("calls"));
        let p = port.to_string();
        let run = start(routed.then_some(route.as_str()), &exe, &[&p]);
        let out = run.finish(Duration::from_secs(30));
        assert_eq!(
            text(&out.stdout),
            "ok\n",
            "routed: {routed}; stderr: {}",
            text(&out.stderr)
        );
        // The routed run really was on VMMC, both ends.
        let log = text(&out.stderr);
        assert_eq!(
            routed,
            log.contains(&format!("bind 127.0.0.1:{port} -> shm:"))
                && log.contains(&format!("connect 127.0.0.1:{port} -> shm:")),
            "{log}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
