//! The trust model, attacked by a real unprivileged local user (`dfs-test-attacker`, made with
//! `useradd`) against a server and a client running as root, the normal deployment.
//!
//! - Memory: the attacker finds every VMMC endpoint on the host (`/proc/net/unix`,
//!   `/proc/net/tcp`) and tries to import every export of each, for deposit and for fetch,
//!   while root reads a 0600 file through its connection. Nothing may be granted but the
//!   listener's accept region (a page of zeros, fetch only), and every byte root reads must be
//!   the file's.
//! - Identity: the attacker's own client claims to be root, or another user; whatever it
//!   claims, it acts as itself on shm, and as nobody on tcp without the secret.
//! - Opens: a session id is not a capability; another peer presenting it gets nothing.

mod common;

use std::collections::BTreeSet;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use dfs_client::{ConnectOptions, Connection};
use dfs_proto::auth::Secret;
use dfs_proto::handle::{FileHandle, OpenId};
use dfs_proto::msg::{Body, Creds, Op, OpenFlags};
use dfs_proto::Errno;
use dfs_server::Squash;
use test_support::{pattern, test_user, Peer, TestUser};
use vmmc_nic::{Access, ExportId, Import, NodeAddr};

const ENTRY: &str = "child_process";
const FILE_LEN: usize = 4 << 20;
const SEED: u64 = 77;

fn attacker() -> TestUser {
    test_user("attacker")
}

fn secret(s: &str) -> Secret {
    Secret::from_file_bytes(s.as_bytes()).unwrap()
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len() / 2)
        .map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap())
        .collect()
}

// ---------------------------------------------------------------------------------------
// The attacker's side (a child process running as dfs-test-attacker).

/// Every shm endpoint name on the host whose name contains `filter`.
fn shm_endpoints(filter: &str) -> Vec<String> {
    let table = std::fs::read_to_string("/proc/net/unix").unwrap_or_default();
    let mut names: Vec<String> = table
        .lines()
        .filter_map(|l| l.split_whitespace().nth(7))
        .filter_map(|p| p.strip_prefix("@vmmc-nic/"))
        .filter(|n| n.contains(filter))
        .map(|n| format!("shm:{n}"))
        .collect();
    names.sort();
    names.dedup();
    names
}

/// Every tcp port listening on loopback (or on all addresses).
fn tcp_endpoints() -> Vec<String> {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    let mut ports: Vec<u16> = table
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let (local, state) = (f.get(1)?, f.get(3)?);
            let (ip, port) = local.split_once(':')?;
            let listening_here = *state == "0A" && (ip == "0100007F" || ip == "00000000");
            listening_here
                .then(|| u16::from_str_radix(port, 16).ok())
                .flatten()
        })
        .collect();
    ports.sort();
    ports.dedup();
    ports
        .into_iter()
        .map(|p| format!("tcp:127.0.0.1:{p}"))
        .collect()
}

/// Tries every export id of every endpoint, for each access; returns what was probed and
/// what was granted (with, for fetch grants, whether the bytes were all zero).
fn snoop(endpoints: &[String]) -> (Vec<String>, Vec<String>) {
    let mut probed = Vec::new();
    let mut granted = Vec::new();
    for ep in endpoints {
        let addr: NodeAddr = ep.parse().unwrap();
        // Something that does not speak VMMC at all is skipped after one try.
        if Import::dial(&addr, Duration::from_millis(300)).is_err() {
            continue;
        }
        probed.push(ep.clone());
        for id in 1..=48u32 {
            let id = ExportId::new(id).unwrap();
            for access in [Access::DEPOSIT, Access::FETCH, Access::ALL] {
                let Ok(imp) = Import::open_timeout(&addr, id, access, Duration::from_millis(500))
                else {
                    continue;
                };
                let what = if access.contains(Access::FETCH) {
                    let mut page = vec![0u8; imp.len().min(1 << 16) as usize];
                    let zero = imp.read_at(0, &mut page).is_ok() && page.iter().all(|&b| b == 0);
                    format!(
                        "{ep}#{}:{access}:{}",
                        id.get(),
                        if zero { "zero" } else { "DATA" }
                    )
                } else {
                    format!("{ep}#{}:{access}", id.get())
                };
                granted.push(what);
            }
        }
    }
    (probed, granted)
}

/// A DFS client of the attacker's own, which claims whatever identity it is told to.
struct Rogue {
    conn: Connection,
}

impl Rogue {
    fn creds(uid: &str, gid: &str) -> Creds {
        Creds {
            uid: uid.parse().unwrap(),
            gid: gid.parse().unwrap(),
            groups: vec![0],
        }
    }

    fn run(&mut self, words: &[&str]) -> Result<String, String> {
        let err = |e: Errno| format!("errno {}", e.0);
        match words {
            // create NAME-IN-ROOT-OR-SUBDIR MODE UID GID
            ["create", dir, name, mode, uid, gid] => {
                let top = self.conn.root().clone();
                let d = if *dir == "." {
                    top
                } else {
                    match self.call(
                        &Rogue::creds(uid, gid),
                        Op::Lookup {
                            dir: top,
                            name: dfs_proto::name::Name::new(dir.as_bytes()).unwrap(),
                        },
                    ) {
                        Ok(Body::Entry(e)) => e.handle,
                        Ok(other) => return Err(format!("{other:?}")),
                        Err(e) => return Err(err(e)),
                    }
                };
                let op = Op::Create {
                    dir: d,
                    name: dfs_proto::name::Name::new(name.as_bytes()).unwrap(),
                    mode: u32::from_str_radix(mode, 8).unwrap(),
                    flags: OpenFlags {
                        read: true,
                        write: true,
                        ..OpenFlags::default()
                    },
                };
                self.call(&Rogue::creds(uid, gid), op).map_err(err)?;
                Ok(String::new())
            }
            // read HANDLE-HEX OPEN-ID LEN UID GID: through someone else's open.
            ["read", handle, open, len, uid, gid] => {
                let h = FileHandle::new(unhex(handle)).unwrap();
                let r = self
                    .conn
                    .read_in_place(
                        &Rogue::creds(uid, gid),
                        h,
                        Some(OpenId(open.parse().unwrap())),
                        0,
                        len.parse().unwrap(),
                        |reply, data| reply.result.map(|_| data.len()),
                    )
                    .map_err(|e| e.to_string())?;
                r.map(|n| n.to_string()).map_err(err)
            }
            other => Err(format!("unknown command {other:?}")),
        }
    }

    fn call(&mut self, creds: &Creds, op: Op) -> Result<Body, Errno> {
        match self.conn.call(creds, op, &[]) {
            Ok(r) => r.result,
            Err(e) => Err(e.errno()),
        }
    }
}

fn run_child(role: &[String]) {
    let args: Vec<&str> = role.iter().map(String::as_str).collect();
    match args[..] {
        ["snoop", filter] => {
            let mut eps = shm_endpoints(filter);
            eps.extend(tcp_endpoints());
            let (probed, granted) = snoop(&eps);
            test_support::say(format!("OK {} | {}", probed.join(" "), granted.join(" ")));
        }
        ["client", addr, session, secret] => {
            let mut opts = ConnectOptions::new().unwrap();
            if session != "-" {
                opts.session.copy_from_slice(&unhex(session));
            }
            if secret != "-" {
                opts.secret = Some(Secret::from_file_bytes(secret.as_bytes()).unwrap());
            }
            let mut rogue = match Connection::connect(addr, &opts) {
                Ok(conn) => Rogue { conn },
                Err(e) => return test_support::say(format!("ERR {e}")),
            };
            test_support::say("READY");
            for line in test_support::commands() {
                let words: Vec<&str> = line.split_whitespace().collect();
                match rogue.run(&words) {
                    Ok(out) => test_support::say(format!("OK {out}")),
                    Err(e) => test_support::say(format!("ERR {e}")),
                }
            }
        }
        _ => panic!("bad child role {args:?}"),
    }
}

test_support::child_entry!(run_child);

// ---------------------------------------------------------------------------------------
// The tests.

/// Root reads a 0600 file over and over on its own connection, checking every byte, until
/// stopped or its connection fails; counts bad reads and keeps the failure, if any.
struct Reader {
    stop: Arc<AtomicBool>,
    bad: Arc<AtomicU64>,
    reads: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<Result<(), String>>>,
}

impl Reader {
    fn start(mut c: Client, file: FileHandle) -> Reader {
        let stop = Arc::new(AtomicBool::new(false));
        let bad = Arc::new(AtomicU64::new(0));
        let reads = Arc::new(AtomicU64::new(0));
        let (s, b, r) = (stop.clone(), bad.clone(), reads.clone());
        let want = pattern(SEED, 0, FILE_LEN);
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                for at in (0..FILE_LEN).step_by(1 << 20) {
                    let got = c
                        .conn
                        .read_in_place(&c.creds, file.clone(), None, at as u64, 1 << 20, |_, d| {
                            d.to_vec()
                        })
                        .map_err(|e| format!("root's read failed: {e}"))?;
                    if got != want[at..at + (1 << 20)] {
                        b.fetch_add(1, Ordering::Relaxed);
                    }
                    r.fetch_add(1, Ordering::Relaxed);
                }
            }
            Ok(())
        });
        Reader {
            stop,
            bad,
            reads,
            thread: Some(thread),
        }
    }

    /// Bad reads, reads, and how the reader ended.
    fn finish(mut self) -> (u64, u64, Result<(), String>) {
        self.stop.store(true, Ordering::Relaxed);
        let end = match self.thread.take() {
            Some(t) => t
                .join()
                .unwrap_or_else(|_| Err("the reader panicked".into())),
            None => Ok(()),
        };
        (
            self.bad.load(Ordering::Relaxed),
            self.reads.load(Ordering::Relaxed),
            end,
        )
    }
}

/// A 0600 root file in the export, and root's connection reading it.
fn private_file(h: &Harness, c: &mut Client) -> FileHandle {
    let path = h.export.join("private.bin");
    std::fs::write(&path, pattern(SEED, 0, FILE_LEN)).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    c.lookup(&c.root(), "private.bin").unwrap().handle
}

fn no_ring_is_importable(h: Harness, root: Client) {
    let mut root = root;
    let file = private_file(&h, &mut root);
    let client_ep = root.conn.stream().local_addr().to_string();
    let reader = Reader::start(root, file);
    let filter = std::process::id().to_string();
    let (mut spy, answer) = Peer::spawn_as(&attacker(), ENTRY, &["snoop", &filter]);
    let (bad, reads, ended) = reader.finish();
    spy.kill();
    let answer = answer
        .strip_prefix("OK ")
        .unwrap_or_else(|| panic!("{answer}"));
    let (probed, granted) = answer.split_once(" | ").unwrap();
    let probed: BTreeSet<&str> = probed.split_whitespace().collect();
    let granted: Vec<&str> = granted.split_whitespace().collect();
    // The attack reached both ends of the connection...
    let server_ep = match h.addr.parse::<NodeAddr>().unwrap() {
        NodeAddr::Tcp(t) => format!("tcp:127.0.0.1:{}", t.port()),
        other => other.to_string(),
    };
    let client_ep = match client_ep.parse::<NodeAddr>().unwrap() {
        NodeAddr::Tcp(t) => format!("tcp:127.0.0.1:{}", t.port()),
        other => other.to_string(),
    };
    assert!(probed.contains(server_ep.as_str()), "{probed:?}");
    assert!(probed.contains(client_ep.as_str()), "{probed:?}");
    // ...and got nothing but accept regions to look at, all zero.
    for g in &granted {
        assert!(
            g.ends_with("#1:fetch:zero"),
            "a local user imported {g} (all grants: {granted:?})"
        );
    }
    assert!(granted
        .iter()
        .any(|g| g.starts_with(&format!("{server_ep}#1:"))));
    // ...and root's connection carried on through it all, every byte the file's.
    ended.unwrap();
    assert!(reads > 0);
    assert_eq!(
        bad, 0,
        "{bad} of {reads} reads returned bytes that are not the file's"
    );
}

#[test]
fn a_local_user_imports_no_ring_of_a_root_connection_on_shm() {
    let h = Harness::new();
    let root = h.client();
    no_ring_is_importable(h, root);
}

#[test]
fn a_local_user_imports_no_ring_of_a_root_connection_on_tcp() {
    let (h, root) = tcp_with_secret("the secret of the tcp trust test");
    no_ring_is_importable(h, root);
}

/// A directory in the export anyone may create in (sticky, like /tmp).
fn public_dir(h: &Harness) {
    let d = h.export.join("public");
    std::fs::create_dir(&d).unwrap();
    std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o1777)).unwrap();
}

fn rogue(addr: &str, session: &str, secret: &str) -> Peer {
    let (p, ready) = Peer::spawn_as(&attacker(), ENTRY, &["client", addr, session, secret]);
    assert_eq!(ready, "READY");
    p
}

fn owner(h: &Harness, rel: &str) -> (u32, u32) {
    let m = std::fs::symlink_metadata(h.export.join(rel)).unwrap();
    (m.uid(), m.mode() & 0o7777)
}

#[test]
fn a_local_user_acts_as_itself_whatever_it_claims() {
    let me = attacker();
    let victim = test_user("victim");
    for squash in [Squash::None, Squash::Root] {
        let h = Harness::with(|c| c.squash = squash);
        // Whatever umask an earlier in-process server left, the export root is root's 0755.
        std::fs::set_permissions(&h.export, std::fs::Permissions::from_mode(0o755)).unwrap();
        public_dir(&h);
        let mut p = rogue(&h.addr, "-", "-");
        // Root's directory, claiming root: a set-uid root file there would be a local root
        // exploit. Refused, as for the attacker itself.
        assert_eq!(
            p.cmd("create . suid 4755 0 0"),
            format!("ERR errno {}", libc::EACCES),
            "{squash:?}"
        );
        assert!(!h.export.join("suid").exists());
        // Where it may create, claiming root or another user: the file is its own.
        p.ok("create public as-root 4755 0 0");
        assert_eq!(owner(&h, "public/as-root").0, me.uid, "{squash:?}");
        p.ok(&format!(
            "create public as-victim 644 {} {}",
            victim.uid, victim.gid
        ));
        assert_eq!(owner(&h, "public/as-victim").0, me.uid, "{squash:?}");
        // Root's own mount (a root peer) still speaks for its callers.
        let mut mount = h.client_as(user(victim.uid));
        let public = mount.lookup(&mount.root(), "public").unwrap().handle;
        mount.create(&public, "by-victim", 0o644, RW).unwrap();
        assert_eq!(owner(&h, "public/by-victim").0, victim.uid);
    }
}

#[test]
fn tcp_claims_count_only_with_the_secret() {
    let victim = test_user("victim");
    // Without a secret --squash none is refused outright...
    let tmp = tempfile::tempdir().unwrap();
    let mut config = dfs_server::Config::new(tmp.path(), "tcp:127.0.0.1:0", [1; 32]);
    config.squash = Squash::None;
    let err = dfs_server::Server::bind(config.clone())
        .unwrap_err()
        .to_string();
    assert!(err.contains("--trust-network"), "{err}");
    // ...and on the default squash every unauthenticated tcp client is nobody.
    let h = Harness::with(|c| {
        c.listen = "tcp:127.0.0.1:0".into();
        c.squash = Squash::Root;
    });
    public_dir(&h);
    let mut p = rogue(&h.addr, "-", "-");
    p.ok(&format!(
        "create public claims-victim 644 {} {}",
        victim.uid, victim.gid
    ));
    assert_eq!(
        owner(&h, "public/claims-victim").0,
        dfs_server::creds::NOBODY
    );
    // Root's own client is no different without the secret.
    let mut c = h.client_as(user(victim.uid));
    let public = c.lookup(&c.root(), "public").unwrap().handle;
    c.create(&public, "root-claims-victim", 0o644, RW).unwrap();
    assert_eq!(
        owner(&h, "public/root-claims-victim").0,
        dfs_server::creds::NOBODY
    );
    // With the secret, claims count (squashing applies).
    let key = "a tcp secret for the claims test";
    let h = Harness::with(|c| {
        c.listen = "tcp:127.0.0.1:0".into();
        c.squash = Squash::Root;
        c.secret = Some(secret(key));
    });
    public_dir(&h);
    let mut p = rogue(&h.addr, "-", key);
    p.ok(&format!(
        "create public proved 644 {} {}",
        victim.uid, victim.gid
    ));
    assert_eq!(owner(&h, "public/proved").0, victim.uid);
    p.ok("create public proved-root 644 0 0");
    assert_eq!(owner(&h, "public/proved-root").0, dfs_server::creds::NOBODY);
    // --trust-network: the operator vouches for the network.
    let h = Harness::with(|c| {
        c.listen = "tcp:127.0.0.1:0".into();
        c.squash = Squash::None;
        c.trusted_network = true;
    });
    public_dir(&h);
    let mut p = rogue(&h.addr, "-", "-");
    p.ok(&format!(
        "create public trusted 644 {} {}",
        victim.uid, victim.gid
    ));
    assert_eq!(owner(&h, "public/trusted").0, victim.uid);
}

#[test]
fn another_peer_cannot_use_a_sessions_opens() {
    let h = Harness::new();
    let session = [0x42u8; 16];
    let opts = ConnectOptions {
        session,
        ..ConnectOptions::new().unwrap()
    };
    let mut root = Client {
        conn: h.connect(&opts).unwrap(),
        creds: ROOT,
    };
    let file = private_file(&h, &mut root);
    let open = root.open(&file, RO).unwrap();
    assert_eq!(
        root.read(&file, Some(open), 0, 16).unwrap().0,
        pattern(SEED, 0, 16)
    );
    // The attacker presents root's session id, handle and open id.
    let mut p = rogue(&h.addr, &hex(&session), "-");
    let me = attacker();
    assert_eq!(
        p.cmd(&format!(
            "read {} {} 16 {} {}",
            hex(file.as_bytes()),
            open.0,
            me.uid,
            me.gid
        )),
        format!("ERR errno {}", libc::EACCES)
    );
    assert_eq!(
        p.cmd(&format!("read {} {} 16 0 0", hex(file.as_bytes()), open.0)),
        format!("ERR errno {}", libc::EACCES)
    );
    // Root's open still works.
    assert_eq!(
        root.read(&file, Some(open), 0, 16).unwrap().0,
        pattern(SEED, 0, 16)
    );
}
