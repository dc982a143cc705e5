//! Floods by an unprivileged local user (`dfs-test-attacker`) against a root `dfs-server`
//! with `ulimit -n 1024`, while root's mount keeps working and a new mount is made in the
//! middle of each flood. Each test reports the mount's operations and errors and the server's
//! RssAnon and RssShmem before, during and after the flood (run with `--nocapture` to see the
//! report; BENCHMARKS.md quotes it).
//!
//! - held imports of the listener's accept region;
//! - connection requests naming a tcp port that accepts and never answers;
//! - 1,100 idle connections;
//! - tcp connections announcing the biggest rings, and filling the server's rings.

mod common;

use std::io::Read;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use dfs_client::{ConnectOptions, Connection};
use test_support::{test_user, Peer};
use vmmc_nic::{Access, ExportId, Import, ImportOptions, NodeAddr};
use vmmc_sockets::RingSize;

const ENTRY: &str = "child_process";
/// The descriptor limit the server runs under, as in the report that asked for this test.
const NOFILE: &str = "--nofile=1024:1024";

// ---------------------------------------------------------------------------------------
// The attacker (a child process running as dfs-test-attacker).

/// A connection request as a client's greeting carries it (vmmc-sockets' format, version 2),
/// naming a tcp port on the sender's address.
fn greeting_naming_port(port: u16) -> Vec<u8> {
    let mut b = b"VSK1".to_vec();
    b.extend_from_slice(&2u16.to_le_bytes());
    b.extend_from_slice(&0u16.to_le_bytes());
    b.extend_from_slice(&1u32.to_le_bytes());
    b.extend_from_slice(&(4u64 << 20).to_le_bytes());
    b.extend_from_slice(&port.to_le_bytes());
    b.extend_from_slice(&0u16.to_le_bytes());
    b.extend_from_slice(&[9u8; 32]);
    b
}

fn accept_region(addr: &NodeAddr, greeting: Vec<u8>) -> vmmc_nic::Result<Import> {
    let opts = ImportOptions {
        timeout: Duration::from_secs(2),
        greeting,
        key: None,
    };
    Import::open_with(addr, ExportId::new(1).unwrap(), Access::FETCH, &opts)
}

/// A DFS connection announcing a ring of `ring` bytes; the first failure is kept (spaces
/// replaced, so it stays one word of the report).
fn connect(addr: &str, ring: &str, first_error: &mut String) -> Option<Connection> {
    let mut opts = ConnectOptions::new().unwrap();
    opts.timeout = Duration::from_secs(3);
    opts.ring = RingSize::new(ring.parse().unwrap()).unwrap();
    match Connection::connect(addr, &opts) {
        Ok(c) => Some(c),
        Err(e) => {
            if first_error.is_empty() {
                *first_error = e.to_string().replace(' ', "_");
            }
            None
        }
    }
}

/// Runs one flood and holds what it got until stdin closes; answers `OK <what it got>`.
fn run_child(role: &[String]) {
    let args: Vec<&str> = role.iter().map(String::as_str).collect();
    let mut held_imports = Vec::new();
    let mut held_conns = Vec::new();
    let report = match args[..] {
        ["hold-accept", addr, n] => {
            let addr: NodeAddr = addr.parse().unwrap();
            let (mut ok, mut refused) = (0, 0);
            for i in 0..n.parse::<usize>().unwrap() {
                // Plain imports, and imports carrying garbage as a connection request.
                let greeting = if i % 2 == 0 { vec![] } else { b"junk".to_vec() };
                match accept_region(&addr, greeting) {
                    Ok(imp) => {
                        ok += 1;
                        held_imports.push(imp);
                    }
                    Err(_) => refused += 1,
                }
            }
            let alive = held_imports.iter().filter(|i| i.is_alive()).count();
            format!("granted {ok} refused {refused} still-held {alive}")
        }
        ["silent-greetings", addr, n] => {
            // A port that accepts and never says a word.
            let silent = TcpListener::bind("0.0.0.0:0").unwrap();
            let port = silent.local_addr().unwrap().port();
            std::thread::spawn(move || {
                let mut keep = Vec::new();
                for s in silent.incoming().map_while(Result::ok) {
                    keep.push(s);
                }
            });
            let addr: NodeAddr = addr.parse().unwrap();
            let (mut ok, mut refused) = (0, 0);
            for _ in 0..n.parse::<usize>().unwrap() {
                match accept_region(&addr, greeting_naming_port(port)) {
                    Ok(imp) => {
                        ok += 1;
                        held_imports.push(imp);
                    }
                    Err(_) => refused += 1,
                }
            }
            format!("queued {ok} refused {refused}")
        }
        ["idle", addr, n, ring] => {
            let mut first_error = String::new();
            for _ in 0..n.parse::<usize>().unwrap() {
                if let Some(c) = connect(addr, ring, &mut first_error) {
                    held_conns.push(c);
                }
            }
            let ok = held_conns.len();
            format!(
                "connected {ok} refused {} first-error {first_error}",
                n.parse::<usize>().unwrap() - ok
            )
        }
        ["big-rings", addr, n, ring] => {
            // Connections announcing big rings, each making the server send a 1 MiB reply:
            // on tcp the server stages a reply in a buffer as large as the client's ring.
            let mut read = 0;
            let mut first_error = String::new();
            for _ in 0..n.parse::<usize>().unwrap() {
                let Some(mut c) = connect(addr, ring, &mut first_error) else {
                    continue;
                };
                let me = dfs_client::current_creds();
                let root = c.root().clone();
                let name = dfs_proto::name::Name::new(b"big.bin").unwrap();
                if let Ok(r) = c.call(&me, dfs_proto::msg::Op::Lookup { dir: root, name }, &[]) {
                    if let Ok(dfs_proto::msg::Body::Entry(e)) = r.result {
                        let n = c.read_in_place(&me, e.handle, None, 0, 1 << 20, |_, d| d.len());
                        if n.is_ok_and(|n| n == 1 << 20) {
                            read += 1;
                        }
                    }
                }
                held_conns.push(c);
            }
            format!(
                "connected {} read {read} first-error {first_error}",
                held_conns.len()
            )
        }
        _ => panic!("bad child role {args:?}"),
    };
    test_support::say(format!("OK {report}"));
    let mut rest = String::new();
    let _ = std::io::stdin().read_to_string(&mut rest);
    drop((held_imports, held_conns));
}

test_support::child_entry!(run_child);

// ---------------------------------------------------------------------------------------
// Root's side.

/// RssAnon and RssShmem of a process, in MiB.
fn rss(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    (kb("RssAnon:") >> 10, kb("RssShmem:") >> 10)
}

/// A mount doing everyday work in a loop: write, read back, stat, list, remove.
struct Worker {
    stop: Arc<AtomicBool>,
    ops: Arc<AtomicU64>,
    errors: Arc<AtomicU64>,
    last_error: Arc<std::sync::Mutex<String>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Worker {
    fn start(dir: PathBuf) -> Worker {
        std::fs::create_dir_all(&dir).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let ops = Arc::new(AtomicU64::new(0));
        let errors = Arc::new(AtomicU64::new(0));
        let last_error = Arc::new(std::sync::Mutex::new(String::new()));
        let (s, o, e, le) = (
            stop.clone(),
            ops.clone(),
            errors.clone(),
            last_error.clone(),
        );
        let thread = std::thread::spawn(move || {
            let block: Vec<u8> = (0..256 * 1024).map(|i| (i % 253) as u8).collect();
            let mut i = 0u64;
            while !s.load(Ordering::Relaxed) {
                let f = dir.join(format!("w{}", i % 8));
                let r = (|| -> std::io::Result<()> {
                    std::fs::write(&f, &block)?;
                    if std::fs::read(&f)? != block {
                        return Err(std::io::Error::other("read back different bytes"));
                    }
                    std::fs::metadata(&f)?;
                    std::fs::read_dir(&dir)?.count();
                    std::fs::remove_file(&f)
                })();
                o.fetch_add(1, Ordering::Relaxed);
                if let Err(err) = r {
                    e.fetch_add(1, Ordering::Relaxed);
                    *le.lock().unwrap() = err.to_string();
                }
                i += 1;
            }
        });
        Worker {
            stop,
            ops,
            errors,
            last_error,
            thread: Some(thread),
        }
    }

    fn finish(mut self) -> (u64, u64, String) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
        let last = self.last_error.lock().unwrap().clone();
        (
            self.ops.load(Ordering::Relaxed),
            self.errors.load(Ordering::Relaxed),
            last,
        )
    }
}

/// A network namespace with its own address, for a client that is not on the attacker's
/// address (a remote host, as far as the server can tell); removed when dropped.
struct Netns {
    name: String,
    host_if: String,
    pub host_ip: String,
    pub path: String,
}

impl Netns {
    fn new(tag: &str) -> Netns {
        let n = std::process::id() % 200 + 20;
        let name = format!("dfsfl-{tag}-{}", std::process::id());
        let host_if = format!("vfl{}{}", &tag[..1], std::process::id() % 100000);
        let peer_if = format!("{host_if}p");
        let sub = format!("10.{}.{n}", 90 + tag.len() as u32);
        let host_ip = format!("{sub}.1");
        let ns = Netns {
            name: name.clone(),
            host_if: host_if.clone(),
            host_ip: host_ip.clone(),
            path: format!("/run/netns/{name}"),
        };
        let ip = |args: &[&str]| {
            let out = Command::new("ip").args(args).output().unwrap();
            assert!(
                out.status.success(),
                "ip {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        ip(&["netns", "add", &name]);
        ip(&[
            "link", "add", &host_if, "type", "veth", "peer", "name", &peer_if,
        ]);
        ip(&["link", "set", &peer_if, "netns", &name]);
        ip(&["addr", "add", &format!("{host_ip}/24"), "dev", &host_if]);
        ip(&["link", "set", &host_if, "up"]);
        let inside = |args: &[&str]| {
            let mut all = vec!["netns", "exec", &name, "ip"];
            all.extend_from_slice(args);
            ip(&all);
        };
        inside(&["addr", "add", &format!("{sub}.2/24"), "dev", &peer_if]);
        inside(&["link", "set", &peer_if, "up"]);
        inside(&["link", "set", "lo", "up"]);
        ns
    }

    fn nsenter(&self) -> Vec<String> {
        vec!["nsenter".into(), format!("--net={}", self.path)]
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
        let _ = Command::new("ip")
            .args(["link", "del", &self.host_if])
            .output();
    }
}

struct Setup {
    _tmp: tempfile::TempDir,
    server: ServerProc,
    mount: MountProc,
    mnt2: PathBuf,
    opts: Vec<String>,
    wrapper: Vec<String>,
}

impl Setup {
    /// A root server under `ulimit -n 1024` on `listen` (with a shared secret, or none), and
    /// root's mount of it, made through `wrapper` (a network namespace, or nothing).
    fn new(listen: &str, secret: bool, wrapper: &[String]) -> Setup {
        Setup::with(listen, secret, "none", wrapper)
    }

    fn with(listen: &str, secret: bool, squash: &str, wrapper: &[String]) -> Setup {
        let tmp = tempfile::tempdir().unwrap();
        let export = tmp.path().join("export");
        std::fs::create_dir(&export).unwrap();
        // Open to all, for the servers where root's mount acts as nobody.
        std::fs::set_permissions(&export, std::os::unix::fs::PermissionsExt::from_mode(0o777))
            .unwrap();
        std::fs::write(export.join("big.bin"), vec![7u8; 1 << 20]).unwrap();
        let secret_file = tmp.path().join("secret");
        std::fs::write(&secret_file, "a secret for the flood tests, 32+").unwrap();
        let mut args = vec!["--squash", squash];
        let mut opts = Vec::new();
        if secret {
            args.extend(["--secret", secret_file.to_str().unwrap()]);
            opts.push(format!("secret={}", secret_file.display()));
        }
        let server = ServerProc::launch(
            &["prlimit", NOFILE, "--"],
            listen,
            &export,
            &tmp.path().join("key"),
            &args,
        );
        let w: Vec<&str> = wrapper.iter().map(String::as_str).collect();
        let o: Vec<&str> = opts.iter().map(String::as_str).collect();
        let mount = MountProc::start_via(&w, &server.addr, &tmp.path().join("mnt"), &o);
        Setup {
            mnt2: tmp.path().join("mnt2"),
            _tmp: tmp,
            server,
            mount,
            opts,
            wrapper: wrapper.to_vec(),
        }
    }

    /// Makes a second mount while the flood is on; returns how long it took.
    fn new_mount_works(&self) -> Duration {
        let t0 = Instant::now();
        let w: Vec<&str> = self.wrapper.iter().map(String::as_str).collect();
        let o: Vec<&str> = self.opts.iter().map(String::as_str).collect();
        let m = MountProc::start_via(&w, &self.server.addr, &self.mnt2, &o);
        std::fs::write(m.mp.join("new-mount-probe"), b"ok").unwrap();
        assert_eq!(std::fs::read(m.mp.join("new-mount-probe")).unwrap(), b"ok");
        let took = t0.elapsed();
        m.umount();
        took
    }
}

/// Runs `flood` (an attacker role) against `setup` while its mount works; returns the
/// attacker's answer, after checking the mount saw no error and memory came back.
fn flood(name: &str, setup: &Setup, attack: &[&str]) -> String {
    let pid = setup.server.child.id();
    let worker = Worker::start(setup.mount.mp.join("work"));
    std::thread::sleep(Duration::from_millis(500));
    let before = rss(pid);
    let (mut attacker, got) = Peer::spawn_as(&test_user("attacker"), ENTRY, attack);
    assert!(got.starts_with("OK "), "{got}");
    let took = setup.new_mount_works();
    std::thread::sleep(Duration::from_millis(500));
    let during = rss(pid);
    attacker.kill();
    // What the attacker held is let go: connections end, memory returns.
    std::thread::sleep(Duration::from_secs(2));
    let after = rss(pid);
    let (ops, errors, last) = worker.finish();
    println!(
        "FLOOD {name}: attacker {}; mount {ops} ops, {errors} errors; a new mount took {} ms; \
         server RssAnon before/during/after {}/{}/{} MiB, RssShmem {}/{}/{} MiB",
        &got[3..],
        took.as_millis(),
        before.0,
        during.0,
        after.0,
        before.1,
        during.1,
        after.1
    );
    assert!(ops > 0);
    assert_eq!(
        errors, 0,
        "{name}: the mount saw {errors} errors, the last: {last}"
    );
    assert!(
        after.0 <= before.0 + 64,
        "{name}: RssAnon stayed at {} MiB after the flood (was {})",
        after.0,
        before.0
    );
    got[3..].to_string()
}

fn number_after(report: &str, word: &str) -> usize {
    report
        .split_whitespace()
        .skip_while(|w| *w != word)
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no {word} in {report:?}"))
}

#[test]
fn held_imports_of_the_accept_region() {
    let s = Setup::new(&fresh_addr(), true, &[]);
    let got = flood(
        "held accept-region imports",
        &s,
        &["hold-accept", &s.server.addr, "600"],
    );
    // Each import costs the server a thread and descriptors; one user gets a bounded share.
    assert!(number_after(&got, "still-held") < 100, "{got}");
    assert!(number_after(&got, "refused") > 0, "{got}");
}

#[test]
fn requests_naming_a_silent_port() {
    let ns = Netns::new("silent");
    let s = Setup::new(&format!("tcp:{}:0", ns.host_ip), true, &ns.nsenter());
    let got = flood(
        "requests naming a silent tcp port",
        &s,
        &["silent-greetings", &s.server.addr, "40"],
    );
    assert!(number_after(&got, "queued") > 0, "{got}");
}

#[test]
fn eleven_hundred_idle_connections() {
    // Without a secret any local user may connect (and acts as itself): its connections
    // complete the handshake and sit idle.
    let s = Setup::new(&fresh_addr(), false, &[]);
    let ring = (1u64 << 20).to_string();
    let got = flood(
        "1,100 idle connections",
        &s,
        &["idle", &s.server.addr, "1100", &ring],
    );
    let connected = number_after(&got, "connected");
    assert!(connected > 0 && connected < 100, "{got}");
}

#[test]
fn big_rings_over_tcp() {
    let ns = Netns::new("rings");
    // No secret: the attacker gets through the handshake (as nobody), as does root's mount.
    let s = Setup::with(
        &format!("tcp:{}:0", ns.host_ip),
        false,
        "root",
        &ns.nsenter(),
    );
    // A ring beyond what the server allows is refused outright...
    let too_big = (1u64 << 30).to_string();
    let (mut a, got) = Peer::spawn_as(
        &test_user("attacker"),
        ENTRY,
        &["big-rings", &s.server.addr, "1", &too_big],
    );
    assert!(got.contains("connected 0"), "{got}");
    a.kill();
    // ...and what it may announce costs the server memory only while the connections live.
    let ring = vmmc_sockets::DEFAULT_MAX_PEER_RING.to_string();
    let got = flood(
        "big rings over tcp",
        &s,
        &["big-rings", &s.server.addr, "300", &ring],
    );
    assert!(number_after(&got, "read") > 0, "{got}");
}
