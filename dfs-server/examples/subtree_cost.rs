//! What the subtree check costs: stat (getattr by handle) and create rates with the check on
//! and off, on a disk export (the temporary directory's file system, ext4 here: the kernel
//! checks connectable handles) and a tmpfs one (`/dev/shm`: the server checks by path), side
//! by side in one run. Each file system's export is served by two `dfs-server` processes,
//! one with `--no-subtree-check`, pinned to one CPU while this client runs on another; one
//! connection per server makes the calls one after the other, as a FUSE mount's single
//! thread does. Each round runs one file system's two servers back to back, in
//! alternating order; the figures are medians over the rounds, and the ratio is the median
//! of the rounds' own ratios (robust to other load on the machine).
//!
//! It also times `Handles::resolve` alone, without the protocol around it: the check's own
//! cost per handle.
//!
//! ```sh
//! cargo build --release -p dfs-server --bins --examples
//! sudo ./target/release/examples/subtree_cost --rounds 31 --files 1000
//! ```
//!
//! Options: `--rounds N` (31), `--files N` (1000 per round and server), `--depth N` (2: the
//! files' directory lies that many levels below the export root, which the check by path
//! walks), `--disk DIR` and `--tmpfs DIR` (where the exports go), `--server PATH` (the
//! `dfs-server` beside this example's directory), `--client-cpu` and `--server-cpu` (0, 1).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use dfs_client::{ConnectOptions, Connection};
use dfs_proto::handle::FileHandle;
use dfs_proto::msg::{Body, Creds, Op, OpenFlags};
use dfs_proto::name::Name;
use dfs_server::handles::{HandleOptions, Handles};

const ROOT: Creds = Creds {
    uid: 0,
    gid: 0,
    groups: Vec::new(),
};

const RW: OpenFlags = OpenFlags {
    read: true,
    write: true,
    append: false,
    truncate: false,
    exclusive: true,
    sync: false,
};

/// How many times a round stats every file.
const STAT_PASSES: usize = 2;

struct Args {
    rounds: usize,
    files: usize,
    depth: usize,
    disk: PathBuf,
    tmpfs: PathBuf,
    server: PathBuf,
    server_cpu: String,
    client_cpu: String,
}

fn args() -> Args {
    let mut a = Args {
        rounds: 31,
        files: 1000,
        depth: 2,
        disk: std::env::temp_dir(),
        tmpfs: PathBuf::from("/dev/shm"),
        server: std::env::current_exe()
            .ok()
            .and_then(|e| Some(e.parent()?.parent()?.join("dfs-server")))
            .unwrap_or_else(|| "dfs-server".into()),
        server_cpu: "1".into(),
        client_cpu: "0".into(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let v = it.next().unwrap_or_else(|| panic!("{k} needs a value"));
        match k.as_str() {
            "--rounds" => a.rounds = v.parse().expect("--rounds N"),
            "--files" => a.files = v.parse().expect("--files N"),
            "--depth" => a.depth = v.parse().expect("--depth N"),
            "--disk" => a.disk = v.into(),
            "--tmpfs" => a.tmpfs = v.into(),
            "--server" => a.server = v.into(),
            "--server-cpu" => a.server_cpu = v,
            "--client-cpu" => a.client_cpu = v,
            _ => panic!("unknown option {k}"),
        }
    }
    a
}

fn name(s: &str) -> Name {
    Name::new(s.as_bytes()).unwrap()
}

fn fs_type(p: &Path) -> String {
    let out = std::process::Command::new("findmnt")
        .args(["-n", "-o", "FSTYPE", "-T"])
        .arg(p)
        .output()
        .expect("findmnt");
    let out = String::from_utf8_lossy(&out.stdout);
    out.lines().last().unwrap_or("").trim().to_owned()
}

/// A `dfs-server` process, killed when dropped.
struct Daemon(std::process::Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `dfs-server` on CPU `cpu` and waits until it serves.
fn daemon(bin: &Path, cpu: &str, export: &Path, key: &Path, addr: &str, check: bool) -> Daemon {
    use std::io::BufRead;
    let mut cmd = std::process::Command::new("taskset");
    cmd.args(["-c", cpu])
        .arg(bin)
        .arg("--export")
        .arg(export)
        .arg("--handle-key")
        .arg(key)
        .args(["--listen", addr, "--squash", "none"]);
    if !check {
        cmd.arg("--no-subtree-check");
    }
    let mut child = cmd
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("taskset and dfs-server");
    let err = child.stderr.take().unwrap();
    let mut lines = std::io::BufReader::new(err).lines();
    for l in lines.by_ref() {
        let l = l.unwrap();
        if l.contains("serving") {
            break;
        }
    }
    // Keep draining its stderr.
    std::thread::spawn(move || for _ in lines {});
    Daemon(child)
}

/// One server under test and its client.
struct Setup {
    label: String,
    _server: Daemon,
    conn: Connection,
    /// The directory the files are in, `depth` levels down.
    dir: FileHandle,
    /// Handles of the files that stat times, as this server minted them.
    files: Vec<FileHandle>,
    stat: Vec<f64>,
    create: Vec<f64>,
}

impl Setup {
    /// A server on `export` (where `levels` and the files exist), its client looking up every
    /// file once.
    fn new(fs: &str, export: &Path, check: bool, a: &Args) -> Setup {
        let addr = format!("shm:subtree-cost-{}-{fs}-{check}", std::process::id());
        let key = export.parent().unwrap().join("handle.key");
        let server = daemon(&a.server, &a.server_cpu, export, &key, &addr, check);
        let mut conn = Connection::connect(&addr, &ConnectOptions::new().unwrap()).unwrap();
        let mut dir = conn.root().clone();
        for i in 0..a.depth {
            dir = match call(&mut conn, lookup(&dir, &format!("level{i}"))) {
                Body::Entry(e) => e.handle,
                other => panic!("{other:?}"),
            };
        }
        let files = (0..a.files)
            .map(
                |i| match call(&mut conn, lookup(&dir, &format!("stat{i}"))) {
                    Body::Entry(e) => e.handle,
                    other => panic!("{other:?}"),
                },
            )
            .collect();
        Setup {
            label: format!("{fs:<5} check {}", if check { "on " } else { "off" }),
            _server: server,
            conn,
            dir,
            files,
            stat: Vec::new(),
            create: Vec::new(),
        }
    }

    /// One round: every file stat'ed (`STAT_PASSES` times over), then as many files created
    /// in a new directory. Rates in operations per second.
    fn round(&mut self, r: usize) {
        let start = Instant::now();
        let mut n = 0;
        for _ in 0..STAT_PASSES {
            for h in &self.files {
                let op = Op::GetAttr {
                    handle: h.clone(),
                    open: None,
                };
                match self.conn.call(&ROOT, op, &[]).unwrap().result {
                    Ok(Body::Attr(_)) => n += 1,
                    other => panic!("{other:?}"),
                }
            }
        }
        self.stat.push(n as f64 / start.elapsed().as_secs_f64());
        let round_dir = format!("round{r}-{}", self.label.replace(' ', ""));
        let d = match call(&mut self.conn, mkdir(&self.dir, &round_dir)) {
            Body::Entry(e) => e.handle,
            other => panic!("{other:?}"),
        };
        let mut busy = Duration::ZERO;
        for i in 0..self.files.len() {
            let op = Op::Create {
                dir: d.clone(),
                name: name(&format!("new{i}")),
                mode: 0o644,
                flags: RW,
            };
            let t = Instant::now();
            let reply = self.conn.call(&ROOT, op, &[]).unwrap().result;
            busy += t.elapsed();
            match reply {
                Ok(Body::Opened { open, .. }) => {
                    call(&mut self.conn, Op::Release { open });
                }
                other => panic!("{other:?}"),
            }
        }
        self.create
            .push(self.files.len() as f64 / busy.as_secs_f64());
    }
}

fn call(conn: &mut Connection, op: Op) -> Body {
    conn.call(&ROOT, op, &[]).unwrap().result.unwrap()
}

fn mkdir(dir: &FileHandle, n: &str) -> Op {
    Op::Mkdir {
        dir: dir.clone(),
        name: name(n),
        mode: 0o755,
    }
}

fn lookup(dir: &FileHandle, n: &str) -> Op {
    Op::Lookup {
        dir: dir.clone(),
        name: name(n),
    }
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn spread(v: &[f64]) -> String {
    let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = v.iter().copied().fold(0.0, f64::max);
    format!("{:.0}-{:.0}", lo, hi)
}

/// Nanoseconds per `Handles::resolve` of a file `depth` levels down, check on and off.
fn resolve_cost(base: &Path, depth: usize, check: bool) -> f64 {
    let tmp = tempfile::tempdir_in(base).unwrap();
    let mut dir = tmp.path().to_path_buf();
    for i in 0..depth {
        dir = dir.join(format!("level{i}"));
    }
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("f"), b"x").unwrap();
    let root = nix::fcntl::open(
        tmp.path(),
        nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_DIRECTORY,
        nix::sys::stat::Mode::empty(),
    )
    .unwrap();
    let handles = Handles::new(root, [3; 32], HandleOptions::new(check)).unwrap();
    let rel = dir.join("f");
    let rel = rel.strip_prefix(tmp.path()).unwrap();
    let fd = dfs_server::fs::open_beneath(
        handles.root(),
        rel.as_os_str().as_encoded_bytes(),
        dfs_server::fs::PATH_FLAGS,
        0,
    )
    .unwrap();
    let h = handles.mint(&fd).unwrap();
    let n = 200_000;
    let mut best = f64::INFINITY;
    for _ in 0..5 {
        let start = Instant::now();
        for _ in 0..n {
            drop(handles.resolve(&h).unwrap());
        }
        best = best.min(start.elapsed().as_nanos() as f64 / n as f64);
    }
    best
}

fn main() {
    let a = args();
    let bases = [("disk", a.disk.clone()), ("tmpfs", a.tmpfs.clone())];
    for (fs, base) in &bases {
        println!("{fs}: {} ({})", base.display(), fs_type(base));
    }
    println!(
        "{} rounds; {} files, {} levels below the export root; one connection per server; \
         client on CPU {}, servers ({}) on CPU {}\n",
        a.rounds,
        a.files,
        a.depth,
        a.client_cpu,
        a.server.display(),
        a.server_cpu
    );
    // This process (the client) on one CPU, the servers on another: where the scheduler
    // puts spinning threads would otherwise decide more than the check does.
    let pinned = std::process::Command::new("taskset")
        .args(["-a", "-p", "-c", &a.client_cpu])
        .arg(std::process::id().to_string())
        .output()
        .expect("taskset");
    assert!(pinned.status.success(), "taskset: {pinned:?}");
    let mut dirs = Vec::new();
    let mut setups: Vec<Setup> = Vec::new();
    for (fs, base) in &bases {
        // One export per file system, served with and without the check.
        let tmp = tempfile::tempdir_in(base).unwrap();
        let mut dir = tmp.path().join("export");
        for i in 0..a.depth {
            dir = dir.join(format!("level{i}"));
        }
        std::fs::create_dir_all(&dir).unwrap();
        for i in 0..a.files {
            std::fs::write(dir.join(format!("stat{i}")), b"").unwrap();
        }
        for check in [true, false] {
            setups.push(Setup::new(fs, &tmp.path().join("export"), check, &a));
        }
        dirs.push(tmp);
    }
    // Each round runs the check-on and check-off servers of one file system back to back
    // (in alternating order), so that their ratio is taken under the same load.
    for r in 0..a.rounds {
        for pair in setups.chunks_mut(2) {
            let (on, off) = pair.split_at_mut(1);
            if r % 2 == 0 {
                on[0].round(r);
                off[0].round(r);
            } else {
                off[0].round(r);
                on[0].round(r);
            }
        }
    }
    println!(
        "{:<16} {:>10} {:>15} {:>10} {:>15}",
        "server", "stat/s", "(spread)", "create/s", "(spread)"
    );
    for s in &setups {
        println!(
            "{:<16} {:>10.0} {:>15} {:>10.0} {:>15}",
            s.label,
            median(&s.stat),
            spread(&s.stat),
            median(&s.create),
            spread(&s.create)
        );
    }
    println!("\nrate with the check / without, median of the rounds' ratios (and of the medians):");
    for pair in setups.chunks(2) {
        let (on, off) = (&pair[0], &pair[1]);
        let ratios =
            |a: &[f64], b: &[f64]| -> Vec<f64> { a.iter().zip(b).map(|(x, y)| x / y).collect() };
        println!(
            "{:<6} stat {:.3} ({:.3})   create {:.3} ({:.3})",
            on.label.split_whitespace().next().unwrap_or(""),
            median(&ratios(&on.stat, &off.stat)),
            median(&on.stat) / median(&off.stat),
            median(&ratios(&on.create, &off.create)),
            median(&on.create) / median(&off.create)
        );
    }
    println!("\nHandles::resolve alone, ns per call (best of 5 x 200000):");
    for (fs, base) in &bases {
        let on = resolve_cost(base, a.depth, true);
        let off = resolve_cost(base, a.depth, false);
        println!(
            "{fs:<6} on {on:>7.0}   off {off:>7.0}   added {:>6.0}",
            on - off
        );
    }
}
