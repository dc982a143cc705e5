//! Where the time of one `stat` that goes to the server goes (issue 13), measured side by
//! side in one run:
//!
//! 1. `fstat` of a file on tmpfs, locally (the system call and the VFS);
//! 2. the FUSE floor: `fstat` of an open file of an in-memory FUSE file system whose
//!    attributes the kernel may not cache (attribute timeout 0), so every call is one FUSE
//!    GETATTR answered from memory by a daemon in this process; and `stat` by path there
//!    (LOOKUP plus GETATTR);
//! 3. the same through a real dfs mount (`dfs mount --foreground`, a process of its own, of a
//!    real `dfs-server` on a tmpfs export) with `cache_timeout=0,attr_timeout=0,entry_timeout=0`,
//!    and through a second mount with the default options (attributes cached while the server
//!    sends notices: the `stat` never leaves the client);
//! 4. the client-to-server call without FUSE: `Connection::call` of the `GetAttr` the mount
//!    sends for an `fstat` (with the open), from this process to the same server, back to
//!    back and after a pause long enough for the server's connection thread to fall asleep;
//!    and of a `Lookup`;
//! 5. the server's own work for that `GetAttr`, in this process on the same export: decoding
//!    the request, the caller's identity, `Fs::execute` (the open's `fstat`) and encoding the
//!    reply frame; `Handles::resolve` plus `fstat` (what a `GetAttr` without an open costs);
//!    and the client's protocol work (encoding the request, decoding the reply);
//! 6. the raw transport: a 1-byte vmmc shm round trip to an echo thread, as `vmmc-perf`
//!    measures it.
//!
//! For each, the voluntary context switches per call of the calling thread, of the FUSE
//! daemon (the mount process, or the in-memory file system's threads) and of the server
//! process (or the echo thread), from `/proc/.../status` before and after each round's calls.
//! Then, with `strace -c -f -p`, the system calls per request of the mount and the server for
//! an uncached `fstat` and `stat` (strace slows both down: counts, not times).
//!
//! Every round runs every measurement once, in an order rotated by one per round; each
//! measurement times every call and keeps its median (and mean); the figures are medians over
//! the rounds, and the split of the uncached `fstat` is computed from them.
//!
//! ```sh
//! cargo build --release -p dfs-server -p dfs-client --bins --examples
//! sudo ./target/release/examples/stat_breakdown --rounds 15
//! ```
//!
//! Options: `--rounds N` (15), `--calls N` (2000 per round for each measurement that crosses
//! a process boundary; ten times as many for those in this process), `--idle-us N` (200: the
//! pause before each call of the "server asleep" measurement), `--strace-calls N` (2000),
//! `--no-strace`, `--tmpfs DIR` (`/dev/shm`, where the export and the local file go),
//! `--server PATH` and `--dfs PATH` (`dfs-server` and `dfs` beside this example's directory),
//! `--pin` (this process and the mount daemons on CPU 0, the servers and the echo threads on
//! CPU 1, as `subtree_cost` pins; by default the scheduler places everything), `--json FILE`
//! (every figure). Needs root (FUSE mounts with `allow_other`, `strace -p`).

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Mutex};
use std::time::{Duration, Instant};

use dfs_client::mount::{self, MountOptions};
use dfs_client::{ConnectOptions, Connection};
use dfs_proto::auth::Secret;
use dfs_proto::codec;
use dfs_proto::handle::OpenId;
use dfs_proto::msg::{Body, Creds, Op, OpenFlags, Reply, Request};
use dfs_proto::name::Name;
use dfs_server::fs::Fs;
use dfs_server::handles::{HandleOptions, Handles};
use dfs_server::opens::Opens;
use dfs_server::{Squash, Trust};
use vmmc_sockets::{SharedBytes, StreamOptions, VmmcListener, VmmcStream};

/// Set by SIGINT, SIGTERM or SIGHUP: the run stops after the measurement under way, and
/// everything it made is undone by the guards below.
static STOP: AtomicBool = AtomicBool::new(false);

/// What a signal must undo if the run does not get to it in time: mount points and the
/// process groups of the children.
static LEFT: Mutex<(Vec<PathBuf>, Vec<i32>)> = Mutex::new((Vec::new(), Vec::new()));

/// How long any start-up step, and each step of a teardown, may take.
const STEP: Duration = Duration::from_secs(10);

/// With `--pin`: the CPU of this process, its threads and the mount daemons (which it starts
/// and which inherit it), and that of the servers and the echo threads.
const CLIENT_CPU: &str = "0";
const SERVER_CPU: &str = "1";

const READ_ONLY: OpenFlags = OpenFlags {
    read: true,
    write: false,
    append: false,
    truncate: false,
    exclusive: false,
    sync: false,
};

#[derive(Debug)]
struct Args {
    rounds: usize,
    calls: usize,
    idle_us: u64,
    strace_calls: usize,
    strace: bool,
    pin: bool,
    tmpfs: PathBuf,
    server: PathBuf,
    dfs: PathBuf,
    json: Option<PathBuf>,
}

fn args() -> Args {
    let beside = |name: &str| {
        std::env::current_exe()
            .ok()
            .and_then(|e| Some(e.parent()?.parent()?.join(name)))
            .unwrap_or_else(|| name.into())
    };
    let mut a = Args {
        rounds: 15,
        calls: 2000,
        idle_us: 200,
        strace_calls: 2000,
        strace: true,
        pin: false,
        tmpfs: PathBuf::from("/dev/shm"),
        server: beside("dfs-server"),
        dfs: beside("dfs"),
        json: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        if k == "--no-strace" {
            a.strace = false;
            continue;
        }
        if k == "--pin" {
            a.pin = true;
            continue;
        }
        let v = it
            .next()
            .unwrap_or_else(|| panic!("{k} needs a value (see the head of stat_breakdown.rs)"));
        let n = |v: &str| -> usize {
            v.parse()
                .ok()
                .filter(|n| *n > 0)
                .unwrap_or_else(|| panic!("{k} {v}: a positive number"))
        };
        match k.as_str() {
            "--rounds" => a.rounds = n(&v),
            "--calls" => a.calls = n(&v),
            "--idle-us" => a.idle_us = n(&v) as u64,
            "--strace-calls" => a.strace_calls = n(&v),
            "--tmpfs" => a.tmpfs = v.into(),
            "--server" => a.server = v.into(),
            "--dfs" => a.dfs = v.into(),
            "--json" => a.json = Some(v.into()),
            _ => panic!("unknown option {k} (see the head of stat_breakdown.rs)"),
        }
    }
    a
}

// ---------------------------------------------------------------------------------------
// Processes and mounts, undone when dropped.

fn left() -> std::sync::MutexGuard<'static, (Vec<PathBuf>, Vec<i32>)> {
    LEFT.lock().unwrap_or_else(|p| p.into_inner())
}

/// A child in a process group of its own: SIGTERM when dropped, SIGKILL after [`STEP`].
struct Proc {
    child: std::process::Child,
    what: &'static str,
    /// What it said on stderr, kept for an error message.
    said: mpsc::Receiver<String>,
}

impl Proc {
    fn spawn(what: &'static str, cmd: &mut Command) -> Result<Proc, String> {
        // A child inherits this thread's signal mask, which blocks the stop signals (see
        // `handle_signals`): strace, for one, would then ignore SIGINT.
        // SAFETY: between fork and exec the closure only calls `pthread_sigmask` on a
        // `sigset_t` on the stack: async-signal-safe, no allocation, no lock.
        unsafe {
            cmd.pre_exec(|| {
                stop_signals()
                    .thread_unblock()
                    .map_err(std::io::Error::from)
            });
        }
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()
            .map_err(|e| format!("starting {what} ({cmd:?}): {e}"))?;
        left().1.push(child.id() as i32);
        let (tx, said) = mpsc::channel();
        if let Some(err) = child.stderr.take() {
            std::thread::spawn(move || {
                for l in BufReader::new(err).lines().map_while(Result::ok) {
                    let _ = tx.send(l);
                }
            });
        }
        Ok(Proc { child, what, said })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether it has ended, and what it said if so.
    fn ended(&mut self) -> Option<String> {
        match self.child.try_wait() {
            Ok(None) => None,
            r => {
                let said: Vec<String> = self.said.try_iter().collect();
                Some(format!("{} ended ({r:?}): {}", self.what, said.join(" / ")))
            }
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        use nix::sys::signal::{killpg, Signal};
        use nix::unistd::Pid;
        let pg = Pid::from_raw(self.child.id() as i32);
        let gone = |c: &mut std::process::Child| !matches!(c.try_wait(), Ok(None));
        for sig in [Signal::SIGTERM, Signal::SIGKILL] {
            let _ = killpg(pg, sig);
            let _ = killpg(pg, Signal::SIGCONT);
            if wait_for(|| gone(&mut self.child), STEP).is_ok() {
                break;
            }
            eprintln!("{} did not stop on {sig:?}", self.what);
        }
        left().1.retain(|p| *p != pg.as_raw());
    }
}

/// Detaches whatever FUSE file system is mounted on `mp` (`umount -l`).
fn lazy_umount(mp: &Path) {
    if !mount::is_fuse_mount(mp) {
        return;
    }
    if nix::mount::umount2(mp, nix::mount::MntFlags::MNT_DETACH).is_err() {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(mp)
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// A dfs mount served by a `dfs mount --foreground` process: unmounted (lazily) when
/// dropped, then its process stopped.
struct DfsMount {
    mp: PathBuf,
    daemon: Proc,
}

impl DfsMount {
    fn new(
        dfs: &Path,
        addr: &str,
        secret: &Path,
        mp: &Path,
        opts: Option<&str>,
    ) -> Result<DfsMount, String> {
        std::fs::create_dir_all(mp).map_err(|e| format!("{}: {e}", mp.display()))?;
        let mut cmd = Command::new(dfs);
        cmd.arg("mount")
            .arg(addr)
            .arg(mp)
            .arg("--foreground")
            .arg("--secret")
            .arg(secret);
        if let Some(o) = opts {
            cmd.args(["-o", o]);
        }
        left().0.push(mp.to_path_buf());
        let mut m = DfsMount {
            mp: mp.to_path_buf(),
            daemon: Proc::spawn("dfs mount", &mut cmd)?,
        };
        let mut why = None;
        wait_for(
            || {
                why = m.daemon.ended();
                why.is_some() || mount::is_dfs_mount(&m.mp)
            },
            STEP,
        )
        .map_err(|()| format!("{} was not mounted within {STEP:?}", mp.display()))?;
        match why {
            Some(why) => Err(why),
            None => Ok(m),
        }
    }
}

impl Drop for DfsMount {
    fn drop(&mut self) {
        lazy_umount(&self.mp);
        left().0.retain(|p| p != &self.mp);
        // Then `daemon` drops: SIGTERM, SIGKILL.
    }
}

/// The in-memory file system mounted in this process.
struct MemMount {
    mp: PathBuf,
    session: Option<fuser::BackgroundSession>,
    /// Its threads (this process's threads that appeared with it).
    tids: Vec<u32>,
}

impl MemMount {
    fn new(mp: &Path, ttl: Duration) -> Result<MemMount, String> {
        std::fs::create_dir_all(mp).map_err(|e| format!("{}: {e}", mp.display()))?;
        mount::check_mountpoint(mp)?;
        let before = own_tids();
        let config = mount::fuse_config("memfs", "dfs-ceiling", false, &MountOptions::default());
        left().0.push(mp.to_path_buf());
        let session = fuser::Session::new(dfs_client::bench::MemFs::with_ttl(ttl), mp, &config)
            .map_err(|e| format!("mounting the in-memory file system: {e}"))?;
        let mut m = MemMount {
            mp: mp.to_path_buf(),
            session: Some(session.spawn().map_err(|e| e.to_string())?),
            tids: Vec::new(),
        };
        // The first access waits for the kernel's INIT to be answered.
        let dir = m.mp.clone();
        within("the in-memory file system's first answer", move || {
            std::fs::metadata(&dir).map(drop)
        })?
        .map_err(|e| format!("{}: {e}", m.mp.display()))?;
        m.tids = own_tids().difference(&before).copied().collect();
        Ok(m)
    }
}

impl Drop for MemMount {
    fn drop(&mut self) {
        if let Some(s) = self.session.take() {
            let (tx, rx) = mpsc::channel();
            std::thread::spawn(move || {
                let _ = tx.send(s.umount_and_join());
            });
            // A session stuck in a call is left to the process's exit.
            let _ = rx.recv_timeout(STEP / 2);
        }
        lazy_umount(&self.mp);
        left().0.retain(|p| p != &self.mp);
    }
}

/// Runs `f` on a thread of its own and waits up to [`STEP`] for it (a first access to a
/// file system that does not answer would otherwise wait forever).
fn within<T: Send + 'static>(
    what: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(STEP)
        .map_err(|_| format!("{what}: nothing within {STEP:?}"))
}

fn wait_for(mut ok: impl FnMut() -> bool, limit: Duration) -> Result<(), ()> {
    let deadline = Instant::now() + limit;
    while !ok() {
        if Instant::now() > deadline {
            return Err(());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(())
}

/// SIGINT, SIGTERM and SIGHUP.
fn stop_signals() -> nix::sys::signal::SigSet {
    use nix::sys::signal::{SigSet, Signal};
    let mut set = SigSet::empty();
    for s in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        set.add(s);
    }
    set
}

/// Blocks the stop signals in every thread this process will have and waits for them on one:
/// the first sets [`STOP`]; if the run has not cleaned up within [`STEP`], this thread
/// detaches the mounts and kills the children itself, and the process exits.
fn handle_signals() {
    let set = stop_signals();
    set.thread_block()
        .expect("blocking SIGINT, SIGTERM, SIGHUP");
    std::thread::Builder::new()
        .name("sb-signals".into())
        .spawn(move || {
            let Ok(sig) = set.wait() else { return };
            eprintln!("stat_breakdown: {sig:?}, stopping after this measurement");
            STOP.store(true, Ordering::SeqCst);
            std::thread::sleep(STEP);
            let (mps, pgs) = left().clone();
            for mp in mps {
                lazy_umount(&mp);
            }
            for pg in pgs {
                let _ = nix::sys::signal::killpg(
                    nix::unistd::Pid::from_raw(pg),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            std::process::exit(128 + sig as i32);
        })
        .expect("starting the signal thread");
}

// ---------------------------------------------------------------------------------------
// Context switches.

fn own_tids() -> BTreeSet<u32> {
    std::fs::read_dir("/proc/self/task")
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// (voluntary, involuntary) context switches of one task, from its `status` file.
fn switches_of(status: &Path) -> (u64, u64) {
    let text = std::fs::read_to_string(status).unwrap_or_default();
    let field = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key)?.trim().parse::<u64>().ok())
            .unwrap_or(0)
    };
    (
        field("voluntary_ctxt_switches:"),
        field("nonvoluntary_ctxt_switches:"),
    )
}

/// Whose context switches a measurement counts besides its calling thread.
#[derive(Clone, Debug)]
enum Tasks {
    /// Every thread of a process.
    Process(u32),
    /// These threads of this process.
    Threads(Vec<u32>),
}

impl Tasks {
    fn switches(&self) -> (u64, u64) {
        let paths: Vec<PathBuf> = match self {
            Tasks::Process(pid) => std::fs::read_dir(format!("/proc/{pid}/task"))
                .map(|d| {
                    d.filter_map(|e| Some(e.ok()?.path().join("status")))
                        .collect()
                })
                .unwrap_or_default(),
            Tasks::Threads(tids) => tids
                .iter()
                .map(|t| PathBuf::from(format!("/proc/self/task/{t}/status")))
                .collect(),
        };
        paths
            .iter()
            .map(|p| switches_of(p))
            .fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1))
    }
}

fn caller_switches() -> (u64, u64) {
    switches_of(Path::new("/proc/thread-self/status"))
}

// ---------------------------------------------------------------------------------------
// The raw transport.

/// A vmmc shm connection to an echo thread of this process, which ends with it.
struct Echo {
    near: Option<VmmcStream>,
    tid: u32,
    done: mpsc::Receiver<()>,
}

impl Echo {
    /// Connects to `listener` and serves the far end on a new thread (on the servers' CPU
    /// with `pin`).
    fn start(listener: &VmmcListener, pin: bool) -> Result<Echo, String> {
        let near = VmmcStream::connect_with(
            &listener.local_addr().to_string(),
            &StreamOptions::default(),
        )
        .map_err(|e| format!("connecting to the echo thread: {e}"))?;
        listener.set_nonblocking(true).map_err(|e| e.to_string())?;
        let deadline = Instant::now() + STEP;
        let mut far = loop {
            match listener.accept() {
                Ok((s, _)) => break s,
                Err(e)
                    if e.kind() == std::io::ErrorKind::WouldBlock && Instant::now() < deadline =>
                {
                    std::thread::sleep(Duration::from_millis(1))
                }
                Err(e) => return Err(format!("accepting the echo connection: {e}")),
            }
        };
        for st in [&near, &far] {
            st.set_read_timeout(Some(Duration::from_millis(250)))
                .and_then(|()| st.set_write_timeout(Some(STEP)))
                .map_err(|e| e.to_string())?;
        }
        let (tid_tx, tid_rx) = mpsc::channel();
        let (done_tx, done) = mpsc::channel::<()>();
        std::thread::Builder::new()
            .name("sb-echo".into())
            .spawn(move || {
                let _ = tid_tx.send(nix::unistd::gettid().as_raw() as u32);
                let mut b = [0u8; 1];
                loop {
                    match far.read(&mut b) {
                        Ok(0) => break,
                        Ok(_) => {
                            if far.write_all(&b).is_err() {
                                break;
                            }
                        }
                        Err(e)
                            if matches!(
                                e.kind(),
                                std::io::ErrorKind::TimedOut
                                    | std::io::ErrorKind::WouldBlock
                                    | std::io::ErrorKind::Interrupted
                            ) =>
                        {
                            if STOP.load(Ordering::Relaxed) {
                                break;
                            }
                        }
                        Err(_) => break,
                    }
                }
                let _ = done_tx.send(());
            })
            .map_err(|e| e.to_string())?;
        let tid = tid_rx
            .recv_timeout(STEP)
            .map_err(|_| "the echo thread did not start")?;
        if pin {
            pin_task(tid, SERVER_CPU)?;
        }
        Ok(Echo {
            near: Some(near),
            tid,
            done,
        })
    }

    /// One 1-byte round trip.
    fn ping(&self) -> Result<(), String> {
        let mut s = self.near.as_ref().ok_or("no connection")?;
        let mut b = [0x5a_u8];
        s.write_all(&b).map_err(|e| e.to_string())?;
        s.read_exact(&mut b).map_err(|e| e.to_string())
    }
}

impl Drop for Echo {
    fn drop(&mut self) {
        // The echo thread sees the end of its stream and ends.
        drop(self.near.take());
        let _ = self.done.recv_timeout(STEP);
    }
}

/// Pins one task (a thread, or a process's main thread) to `cpu`.
fn pin_task(tid: u32, cpu: &str) -> Result<(), String> {
    let out = Command::new("taskset")
        .args(["-p", "-c", cpu, &tid.to_string()])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("taskset: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "taskset -p -c {cpu} {tid}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

// ---------------------------------------------------------------------------------------
// Measurements.

/// One thing timed: `call` times one call (and may do untimed work around it).
struct Probe<'a> {
    key: &'static str,
    what: &'static str,
    calls: usize,
    call: Box<dyn FnMut() -> Result<Duration, String> + 'a>,
    /// Run before each round, untimed.
    before_round: Option<Box<dyn FnMut() -> Result<(), String> + 'a>>,
    /// The FUSE daemon's threads, if a FUSE daemon serves the call.
    daemon: Option<Tasks>,
    /// The server's (or the echo thread's), if one serves the call.
    server: Option<Tasks>,
    /// Per round: median and mean ns per call, and voluntary/involuntary switches per call
    /// of the caller, the daemon and the server.
    median: Vec<f64>,
    mean: Vec<f64>,
    sw: Vec<[(f64, f64); 3]>,
}

impl<'a> Probe<'a> {
    fn new(
        key: &'static str,
        what: &'static str,
        calls: usize,
        call: impl FnMut() -> Result<Duration, String> + 'a,
    ) -> Probe<'a> {
        Probe {
            key,
            what,
            calls,
            call: Box::new(call),
            before_round: None,
            daemon: None,
            server: None,
            median: Vec::new(),
            mean: Vec::new(),
            sw: Vec::new(),
        }
    }

    fn sides(mut self, daemon: Option<Tasks>, server: Option<Tasks>) -> Probe<'a> {
        self.daemon = daemon;
        self.server = server;
        self
    }

    fn before_round(mut self, f: impl FnMut() -> Result<(), String> + 'a) -> Probe<'a> {
        self.before_round = Some(Box::new(f));
        self
    }

    /// One round: a tenth as many calls untimed, then `calls` timed ones.
    fn round(&mut self) -> Result<(), String> {
        if let Some(f) = &mut self.before_round {
            f().map_err(|e| format!("{}: {e}", self.key))?;
        }
        for _ in 0..self.calls / 10 {
            (self.call)().map_err(|e| format!("{}: {e}", self.key))?;
        }
        let count = |t: &Option<Tasks>| t.as_ref().map_or((0, 0), Tasks::switches);
        let before = [caller_switches(), count(&self.daemon), count(&self.server)];
        let mut ns = Vec::with_capacity(self.calls);
        for _ in 0..self.calls {
            let d = (self.call)().map_err(|e| format!("{}: {e}", self.key))?;
            ns.push(d.as_nanos() as f64);
        }
        let after = [caller_switches(), count(&self.daemon), count(&self.server)];
        let n = self.calls as f64;
        let sw = std::array::from_fn(|i| {
            (
                after[i].0.saturating_sub(before[i].0) as f64 / n,
                after[i].1.saturating_sub(before[i].1) as f64 / n,
            )
        });
        self.mean.push(ns.iter().sum::<f64>() / n);
        self.median.push(median(&mut ns));
        self.sw.push(sw);
        Ok(())
    }

    fn us(&self) -> f64 {
        median(&mut self.median.clone()) / 1000.0
    }

    fn mean_us(&self) -> f64 {
        median(&mut self.mean.clone()) / 1000.0
    }

    fn spread_us(&self) -> (f64, f64) {
        let lo = self.median.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = self.median.iter().copied().fold(0.0, f64::max);
        (lo / 1000.0, hi / 1000.0)
    }

    /// Median over the rounds of side `i`'s (voluntary, involuntary) switches per call.
    fn switches(&self, i: usize) -> (f64, f64) {
        let mut v: Vec<f64> = self.sw.iter().map(|s| s[i].0).collect();
        let mut n: Vec<f64> = self.sw.iter().map(|s| s[i].1).collect();
        (median(&mut v), median(&mut n))
    }

    fn has_side(&self, i: usize) -> bool {
        match i {
            0 => true,
            1 => self.daemon.is_some(),
            _ => self.server.is_some(),
        }
    }
}

fn median(v: &mut [f64]) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn timed(f: impl FnOnce() -> Result<(), String>) -> Result<Duration, String> {
    let t = Instant::now();
    f()?;
    Ok(t.elapsed())
}

fn name(s: &str) -> Name {
    Name::new(s.as_bytes()).expect("a valid file name")
}

/// One call as `creds`, which are read once, as the mount reads its callers' (a caller's
/// groups once per quarter second), not inside the timed call.
fn call(conn: &mut Connection, creds: &Creds, op: Op) -> Result<Body, String> {
    conn.call(creds, op, &[])
        .map_err(|e| e.to_string())?
        .result
        .map_err(|e| format!("{e:?}"))
}

// ---------------------------------------------------------------------------------------
// System calls per request (strace).

/// Per-call system calls of one process while `calls` calls of `op` run, by name, most
/// frequent first, with their total.
struct Syscalls {
    who: &'static str,
    total: f64,
    by_name: Vec<(String, f64)>,
}

/// Runs `op` `calls` times under `strace -c -f -p` of each of `pids`.
fn strace_counts(
    scratch: &Path,
    pids: &[(&'static str, u32)],
    calls: usize,
    op: &mut dyn FnMut() -> Result<Duration, String>,
) -> Result<Vec<Syscalls>, String> {
    let mut tracers = Vec::new();
    for (who, pid) in pids {
        let out = scratch.join(format!("strace-{pid}.txt"));
        let p = Proc::spawn(
            "strace",
            Command::new("strace")
                .args(["-c", "-f", "-p", &pid.to_string(), "-o"])
                .arg(&out),
        )?;
        // It says "attached" once it has every thread.
        let deadline = Instant::now() + STEP;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match p.said.recv_timeout(left) {
                Ok(l) if l.contains("attached") => break,
                Ok(_) => {}
                Err(_) => return Err(format!("strace -p {pid} did not attach")),
            }
        }
        tracers.push((*who, p, out));
    }
    std::thread::sleep(Duration::from_millis(300));
    let mut run = || -> Result<(), String> {
        for _ in 0..calls {
            op()?;
        }
        Ok(())
    };
    let ran = run();
    let mut found = Vec::new();
    for (who, mut p, out) in tracers {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(p.pid() as i32),
            nix::sys::signal::Signal::SIGINT,
        );
        wait_for(|| p.ended().is_some(), STEP)
            .map_err(|()| "strace did not stop on SIGINT".to_string())?;
        let text = std::fs::read_to_string(&out).map_err(|e| format!("{}: {e}", out.display()))?;
        found.push(parse_strace(who, &text, calls));
    }
    ran?;
    Ok(found)
}

/// Reads `strace -c`'s table: `% time, seconds, usecs/call, calls, [errors], syscall`.
fn parse_strace(who: &'static str, text: &str, calls: usize) -> Syscalls {
    let mut s = Syscalls {
        who,
        total: 0.0,
        by_name: Vec::new(),
    };
    for l in text.lines() {
        let f: Vec<&str> = l.split_whitespace().collect();
        if f.len() < 5 || f[0].parse::<f64>().is_err() {
            continue;
        }
        let (Some(n), Some(name)) = (f.get(3).and_then(|c| c.parse::<f64>().ok()), f.last()) else {
            continue;
        };
        let per = n / calls as f64;
        if *name == "total" {
            s.total = per;
        } else {
            s.by_name.push((name.to_string(), per));
        }
    }
    s.by_name.sort_by(|a, b| b.1.total_cmp(&a.1));
    s
}

// ---------------------------------------------------------------------------------------

fn shell(cmd: &str, args: &[&str]) -> String {
    Command::new(cmd)
        .args(args)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

fn main() {
    handle_signals();
    let a = args();
    match run(&a) {
        Ok(()) => {}
        Err(e) => {
            eprintln!("stat_breakdown: {e}");
            std::process::exit(if STOP.load(Ordering::SeqCst) { 130 } else { 1 });
        }
    }
}

fn run(a: &Args) -> Result<(), String> {
    let here = env!("CARGO_MANIFEST_DIR");
    let mut commit = shell("git", &["-C", here, "rev-parse", "--short", "HEAD"]);
    if commit.is_empty() {
        commit = "unknown (not built in a git checkout)".into();
    }
    let dirty = !shell(
        "git",
        &["-C", here, "status", "--porcelain", "--untracked-files=no"],
    )
    .is_empty();
    let date = shell("date", &["-u", "+%Y-%m-%d %H:%M UTC"]);
    let pid = std::process::id();
    if a.pin {
        let out = Command::new("taskset")
            .args(["-a", "-p", "-c", CLIENT_CPU, &pid.to_string()])
            .output()
            .map_err(|e| format!("taskset: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "taskset -a -p: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
    }

    // Everything lives in one scratch directory on tmpfs, removed last (after the mounts on
    // it are detached: the guards below are dropped first, in reverse order).
    let scratch = tempfile::Builder::new()
        .prefix("stat-breakdown-")
        .tempdir_in(&a.tmpfs)
        .map_err(|e| format!("{}: {e}", a.tmpfs.display()))?;
    let s = scratch.path();
    let secret = s.join("secret");
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| e.to_string())?;
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    std::fs::write(&secret, hex).map_err(|e| e.to_string())?;
    let local = s.join("local");
    std::fs::write(&local, b"local").map_err(|e| e.to_string())?;

    // Two servers, one per mount, each on an export of its own with one file `f`.
    let mut servers = Vec::new();
    for which in ["uncached", "default"] {
        let export = s.join(format!("export-{which}"));
        std::fs::create_dir_all(&export).map_err(|e| e.to_string())?;
        std::fs::write(export.join("f"), b"the file").map_err(|e| e.to_string())?;
        let addr = format!("shm:stat-breakdown-{pid}-{which}");
        let key = s.join(format!("handle-{which}.key"));
        let mut cmd = if a.pin {
            let mut c = Command::new("taskset");
            c.args(["-c", SERVER_CPU]).arg(&a.server);
            c
        } else {
            Command::new(&a.server)
        };
        let mut server = Proc::spawn(
            "dfs-server",
            cmd.arg("--export")
                .arg(&export)
                .args(["--listen", &addr, "--squash", "none", "--secret"])
                .arg(&secret)
                .arg("--handle-key")
                .arg(&key),
        )?;
        let deadline = Instant::now() + STEP;
        loop {
            if let Some(why) = server.ended() {
                return Err(why);
            }
            match server.said.recv_timeout(Duration::from_millis(100)) {
                Ok(l) if l.contains("serving") => break,
                _ if Instant::now() > deadline => {
                    return Err(format!("dfs-server did not start within {STEP:?}"))
                }
                _ => {}
            }
        }
        servers.push((server, export, addr, key));
    }
    let (server, export, addr, key) = &servers[0];
    let server_tasks = Tasks::Process(server.pid());
    let uncached = DfsMount::new(
        &a.dfs,
        addr,
        &secret,
        &s.join("mnt-uncached"),
        Some("cache_timeout=0,attr_timeout=0,entry_timeout=0"),
    )?;
    let cached = DfsMount::new(&a.dfs, &servers[1].2, &secret, &s.join("mnt-default"), None)?;
    let floor = MemMount::new(&s.join("mnt-memfs"), Duration::ZERO)?;
    std::fs::write(floor.mp.join("f"), b"the file").map_err(|e| e.to_string())?;

    let open = |p: &Path| -> Result<std::fs::File, String> {
        let p = p.to_path_buf();
        within("opening a file", move || std::fs::File::open(&p))?.map_err(|e| e.to_string())
    };
    let local_file = open(&local)?;
    let floor_file = open(&floor.mp.join("f"))?;
    let uncached_file = open(&uncached.mp.join("f"))?;
    let cached_file = open(&cached.mp.join("f"))?;
    let floor_path = floor.mp.join("f");
    let uncached_path = uncached.mp.join("f");
    let cached_path = cached.mp.join("f");
    let mount_tasks = Tasks::Process(uncached.daemon.pid());
    let cached_tasks = Tasks::Process(cached.daemon.pid());
    let floor_tasks = Tasks::Threads(floor.tids.clone());

    // This process's own connection to the uncached mount's server, with the file open.
    let mut copts = ConnectOptions::new().map_err(|e| e.to_string())?;
    copts.secret = Some(
        Secret::from_file_bytes(&std::fs::read(&secret).map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?,
    );
    let mut conn = Connection::connect(addr, &copts).map_err(|e| e.to_string())?;
    let creds = dfs_client::current_creds();
    let root = conn.root().clone();
    let (handle, attr) = match call(
        &mut conn,
        &creds,
        Op::Lookup {
            dir: root.clone(),
            name: name("f"),
        },
    )? {
        Body::Entry(e) => (e.handle, e.attr),
        other => return Err(format!("lookup: {other:?}")),
    };
    let open_id = match call(
        &mut conn,
        &creds,
        Op::Open {
            handle: handle.clone(),
            flags: READ_ONLY,
        },
    )? {
        Body::Opened { open, .. } => open,
        other => return Err(format!("open: {other:?}")),
    };

    // The server's work, in this process: its `Fs` on the same export, with the same key
    // (so the connection's handle resolves here too) and one open of the file.
    let root_fd: OwnedFd = nix::fcntl::open(
        export.as_path(),
        nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_DIRECTORY | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(|e| format!("{}: {e}", export.display()))?;
    let key_bytes = dfs_server::load_or_create_key(key).map_err(|e| e.to_string())?;
    let fs = Fs {
        handles: Handles::new(root_fd, key_bytes, HandleOptions::default())
            .map_err(|e| e.to_string())?,
        opens: Opens::default(),
        read_only: false,
        squash: Squash::None,
        can_switch: nix::unistd::geteuid().is_root(),
    };
    let session = [7u8; 16];
    fs.opens.attach(session, None);
    let server_file: OwnedFd = std::fs::File::open(export.join("f"))
        .map_err(|e| e.to_string())?
        .into();
    let server_open: OpenId = fs
        .opens
        .insert(session, server_file)
        .ok_or("the open table is full")?;
    let request_meta = codec::encode_to_vec(&Request {
        id: 1,
        creds: creds.clone(),
        op: Op::GetAttr {
            handle: handle.clone(),
            open: Some(server_open),
        },
    })
    .map_err(|e| e.to_string())?;
    let reply_meta = codec::encode_to_vec(&Reply {
        id: 1,
        result: Ok(Body::Attr(attr)),
    })
    .map_err(|e| e.to_string())?;

    // The raw transport: vmmc shm connections to echo threads of this process. One lives
    // through the run and sleeps between rounds (woken by the first ping, like the server's
    // connection thread by the mount); another is made afresh each round, as vmmc-perf does.
    let listener = VmmcListener::bind_with(
        &format!("shm:stat-breakdown-rtt-{pid}"),
        StreamOptions::default(),
    )
    .map_err(|e| format!("binding the echo listener: {e}"))?;
    let echo = Echo::start(&listener, a.pin)?;
    let fresh: std::cell::RefCell<Option<Echo>> = std::cell::RefCell::new(None);

    println!(
        "stat_breakdown: {date}, commit {commit}{}, {} rounds (order rotated by one each round), \
         {} calls per round and measurement across processes ({} in this process); medians over \
         rounds of each round's median per call\n\
         export and local file on {} ({}); dfs-server {}; dfs {}; {}",
        if dirty {
            " (with uncommitted changes)"
        } else {
            ""
        },
        a.rounds,
        a.calls,
        a.calls * 10,
        a.tmpfs.display(),
        shell(
            "findmnt",
            &["-n", "-o", "FSTYPE", "-T", &a.tmpfs.to_string_lossy()]
        )
        .lines()
        .last()
        .unwrap_or("?"),
        a.server.display(),
        a.dfs.display(),
        if a.pin {
            format!(
                "pinned: this process and the mounts on CPU {CLIENT_CPU}, the servers and echo \
                 threads on CPU {SERVER_CPU}"
            )
        } else {
            "nothing pinned".to_string()
        },
    );

    let quick = a.calls * 10;
    let conn = std::cell::RefCell::new(conn);
    let getattr = Op::GetAttr {
        handle: handle.clone(),
        open: Some(open_id),
    };
    let idle = Duration::from_micros(a.idle_us);
    let fstat = |f: &std::fs::File| -> Result<(), String> {
        nix::sys::stat::fstat(f)
            .map(drop)
            .map_err(|e| e.to_string())
    };
    let stat = |p: &Path| -> Result<(), String> {
        nix::sys::stat::stat(p).map(drop).map_err(|e| e.to_string())
    };
    let mut probes = vec![
        Probe::new("local_fstat", "(1) fstat, local tmpfs file", quick, || {
            timed(|| fstat(&local_file))
        }),
        Probe::new(
            "floor_fstat",
            "(2) fstat, in-memory FUSE fs, attr timeout 0",
            a.calls,
            || timed(|| fstat(&floor_file)),
        )
        .sides(Some(floor_tasks.clone()), None),
        Probe::new(
            "floor_stat_path",
            "(2p) stat by path, in-memory FUSE fs, timeouts 0",
            a.calls,
            || timed(|| stat(&floor_path)),
        )
        .sides(Some(floor_tasks.clone()), None),
        Probe::new(
            "dfs_fstat",
            "(3) fstat, dfs mount, caches off",
            a.calls,
            || timed(|| fstat(&uncached_file)),
        )
        .sides(Some(mount_tasks.clone()), Some(server_tasks.clone())),
        Probe::new(
            "dfs_stat_path",
            "(3p) stat by path, dfs mount, caches off",
            a.calls,
            || timed(|| stat(&uncached_path)),
        )
        .sides(Some(mount_tasks.clone()), Some(server_tasks.clone())),
        Probe::new(
            "dfs_fstat_cached",
            "(3c) fstat, dfs mount, default options",
            quick,
            || timed(|| fstat(&cached_file)),
        )
        .sides(
            Some(cached_tasks.clone()),
            Some(Tasks::Process(servers[1].0.pid())),
        ),
        Probe::new(
            "dfs_stat_path_cached",
            "(3cp) stat by path, dfs mount, default options",
            quick,
            || timed(|| stat(&cached_path)),
        )
        .sides(
            Some(cached_tasks.clone()),
            Some(Tasks::Process(servers[1].0.pid())),
        ),
        Probe::new(
            "call_getattr",
            "(4) Connection::call GetAttr(open), back to back",
            a.calls,
            || {
                let op = getattr.clone();
                timed(|| call(&mut conn.borrow_mut(), &creds, op).map(drop))
            },
        )
        .sides(None, Some(server_tasks.clone())),
        Probe::new(
            "call_getattr_idle",
            "(4i) Connection::call GetAttr(open), server asleep",
            a.calls / 2,
            || {
                std::thread::sleep(idle);
                let op = getattr.clone();
                timed(|| call(&mut conn.borrow_mut(), &creds, op).map(drop))
            },
        )
        .sides(None, Some(server_tasks.clone())),
        Probe::new(
            "call_lookup",
            "(4l) Connection::call Lookup, back to back",
            a.calls,
            || {
                let op = Op::Lookup {
                    dir: root.clone(),
                    name: name("f"),
                };
                timed(|| call(&mut conn.borrow_mut(), &creds, op).map(drop))
            },
        )
        .sides(None, Some(server_tasks.clone())),
        Probe::new(
            "server_getattr",
            "(5s) server: decode, caller, execute GetAttr(open), encode",
            quick,
            || {
                timed(|| {
                    let req: Request = codec::decode(&request_meta).map_err(|e| e.to_string())?;
                    let result = fs
                        .caller(&session, &Trust::Claims, &req.creds)
                        .and_then(|c| fs.execute(&c, &req.op, SharedBytes::from(&[0u8; 0][..])));
                    let frame = codec::frame_to_vec(&Reply { id: req.id, result }, &[])
                        .map_err(|e| e.to_string())?;
                    std::hint::black_box(frame);
                    Ok(())
                })
            },
        ),
        Probe::new(
            "server_open_fstat",
            "(5o) server: the open's fstat alone",
            quick,
            || {
                timed(|| {
                    let fd = fs.opens.get(&session, server_open).ok_or("no such open")?;
                    nix::sys::stat::fstat(&*fd)
                        .map(drop)
                        .map_err(|e| e.to_string())
                })
            },
        ),
        Probe::new(
            "server_resolve_fstat",
            "(5r) server: Handles::resolve + fstat (no open)",
            quick,
            || {
                timed(|| {
                    let fd = fs.handles.resolve(&handle).map_err(|e| format!("{e:?}"))?;
                    nix::sys::stat::fstat(&*fd)
                        .map(drop)
                        .map_err(|e| e.to_string())
                })
            },
        ),
        Probe::new(
            "client_codec",
            "(5c) client: encode request, decode reply",
            quick,
            || {
                timed(|| {
                    let req = Request {
                        id: 1,
                        creds: creds.clone(),
                        op: Op::GetAttr {
                            handle: handle.clone(),
                            open: Some(open_id),
                        },
                    };
                    std::hint::black_box(codec::encode_to_vec(&req).map_err(|e| e.to_string())?);
                    let r: Reply = codec::decode(&reply_meta).map_err(|e| e.to_string())?;
                    std::hint::black_box(r);
                    Ok(())
                })
            },
        ),
        Probe::new(
            "vmmc_rtt",
            "(6) vmmc shm round trip, 1 byte, echo thread woken",
            quick,
            || timed(|| echo.ping()),
        )
        .sides(None, Some(Tasks::Threads(vec![echo.tid]))),
        Probe::new(
            "vmmc_rtt_fresh",
            "(6f) vmmc shm round trip, 1 byte, new echo thread",
            quick,
            || timed(|| fresh.borrow().as_ref().ok_or("no echo thread")?.ping()),
        )
        .before_round(|| {
            drop(fresh.borrow_mut().take());
            *fresh.borrow_mut() = Some(Echo::start(&listener, a.pin)?);
            Ok(())
        }),
        Probe::new(
            "clock",
            "(-) two clock reads: the timer's own cost",
            quick,
            || timed(|| Ok(())),
        ),
    ];

    for r in 0..a.rounds {
        let n = probes.len();
        for i in 0..n {
            if STOP.load(Ordering::SeqCst) {
                return Err("interrupted".into());
            }
            probes[(i + r) % n].round()?;
        }
        eprint!("\rround {}/{}", r + 1, a.rounds);
    }
    eprintln!();

    // The table.
    let get = |k: &str| -> &Probe<'_> {
        probes
            .iter()
            .find(|p| p.key == k)
            .expect("every key named below is measured")
    };
    println!(
        "\n{:<58} {:>9} {:>9} {:>15}   {:>18}",
        "component (µs per call)",
        "median",
        "mean",
        "rounds' range",
        "vol. (invol.) switches per call: caller, daemon, server"
    );
    for p in &probes {
        let (lo, hi) = p.spread_us();
        let sw: Vec<String> = (0..3)
            .map(|i| {
                if p.has_side(i) {
                    let (v, n) = p.switches(i);
                    format!("{v:.2} ({n:.2})")
                } else {
                    "-".into()
                }
            })
            .collect();
        println!(
            "{:<58} {:>9.2} {:>9.2} {:>7.2}-{:<7.2}   {}",
            p.what,
            p.us(),
            p.mean_us(),
            lo,
            hi,
            sw.join(", ")
        );
    }

    // The split of one uncached fstat, from the medians above.
    let l = get("local_fstat").us();
    let f = get("floor_fstat").us();
    let d = get("dfs_fstat").us();
    // Of two ways of measuring a part, the one that ran as it runs in the whole: the key
    // whose `count` is closest to `target`.
    let closest = |keys: [&'static str; 2], count: &dyn Fn(&Probe<'_>) -> f64, target: f64| {
        let off = |k: &str| (count(get(k)) - target).abs();
        if off(keys[1]) < off(keys[0]) {
            keys[1]
        } else {
            keys[0]
        }
    };
    // The client call: the one whose server sleeps (voluntary switches) as often per call as
    // under the mount.
    let d_server_sleeps = get("dfs_fstat").switches(2).0;
    let c_key = closest(
        ["call_getattr", "call_getattr_idle"],
        &|p| p.switches(2).0,
        d_server_sleeps,
    );
    let c = get(c_key).us();
    // The round trip: the one whose caller is switched out (involuntary switches: a yield to
    // a thread on the same core) as often per call as the client call's.
    let c_yields = get(c_key).switches(0).1;
    let r_key = closest(
        ["vmmc_rtt", "vmmc_rtt_fresh"],
        &|p| p.switches(0).1,
        c_yields,
    );
    let rtt = get(r_key).us();
    // The parts, from the medians over the rounds (they add up to the median of (3)), and
    // each part computed within every round and its median over the rounds (robust to the
    // machine changing pace between rounds; these need not add up).
    const PARTS: [&str; 7] = [
        "fstat system call and VFS (1: local fstat)",
        "FUSE request, kernel <-> daemon (2 - 1: floor - local)",
        "dfs mount daemon beyond the floor (3 - 4 - 2)",
        "client call beyond codec, server and transport (4 - 5c - 5s - 6)",
        "client protocol: encode request, decode reply (5c)",
        "server: decode, caller, execute, encode (5s)",
        "vmmc shm round trip, 1 byte (6)",
    ];
    let parts = |v: &dyn Fn(&str) -> f64| -> [f64; 7] {
        let (l, f, d, c) = (v("local_fstat"), v("floor_fstat"), v("dfs_fstat"), v(c_key));
        let (k, s, r) = (v("client_codec"), v("server_getattr"), v(r_key));
        [l, f - l, d - c - f, c - k - s - r, k, s, r]
    };
    let split = parts(&|k| get(k).us());
    let by_round: Vec<[f64; 7]> = (0..a.rounds)
        .map(|r| parts(&|k| get(k).median[r] / 1000.0))
        .collect();
    let split_rounds: [f64; 7] =
        std::array::from_fn(|i| median(&mut by_round.iter().map(|p| p[i]).collect::<Vec<_>>()));
    let mut d_rounds: Vec<f64> = get("dfs_fstat").median.iter().map(|n| n / 1000.0).collect();
    println!(
        "\nsplit of one uncached fstat through the dfs mount, {d:.2} µs (3)\n\
         (4) is {c_key}, {c:.2} µs: its server sleeps {:.2} times per call, under the mount \
         {d_server_sleeps:.2}\n\
         (6) is {r_key}, {rtt:.2} µs: its caller yields {:.2} times per call, in (4) \
         {c_yields:.2}\n\
         {:<68} {:>8} {:>6}   {:>9}",
        get(c_key).switches(2).0,
        get(r_key).switches(0).1,
        "part",
        "µs",
        "%",
        "per round"
    );
    for ((what, us), per_round) in PARTS.iter().zip(&split).zip(&split_rounds) {
        println!(
            "  {what:<66} {us:>8.2} {:>5.0} %   {per_round:>9.2}",
            100.0 * us / d
        );
    }
    println!(
        "  {:<66} {d:>8.2} {:>5.0} %   {:>9.2}",
        "total (3)",
        100.0,
        median(&mut d_rounds)
    );
    println!(
        "  (FUSE and the mount daemon together, (3) - (4): {:.2} µs, {:.0} %)",
        d - c,
        100.0 * (d - c) / d
    );
    let dp = get("dfs_stat_path").us();
    let fp = get("floor_stat_path").us();
    println!(
        "\nstat by path instead: dfs {dp:.2} µs (+{:.2} over fstat), floor {fp:.2} µs (+{:.2}); \
         a Lookup call alone {:.2} µs",
        dp - d,
        fp - f,
        get("call_lookup").us()
    );
    println!(
        "default options (cached): fstat {:.2} µs, stat by path {:.2} µs, against {l:.2} µs \
         local; \
         uncached fstat / FUSE floor {:.2}, uncached / cached {:.1}",
        get("dfs_fstat_cached").us(),
        get("dfs_stat_path_cached").us(),
        d / f,
        d / get("dfs_fstat_cached").us()
    );

    // System calls per request, under strace.
    let mut traced = Vec::new();
    if a.strace && !STOP.load(Ordering::SeqCst) {
        let pids = [
            ("dfs-server", server.pid()),
            ("dfs mount", uncached.daemon.pid()),
        ];
        type Traced<'o> = Box<dyn FnMut() -> Result<Duration, String> + 'o>;
        let ops: [(&str, Traced<'_>); 2] = [
            ("fstat", Box::new(|| timed(|| fstat(&uncached_file)))),
            ("stat by path", Box::new(|| timed(|| stat(&uncached_path)))),
        ];
        for (what, mut op) in ops {
            let found = strace_counts(s, &pids, a.strace_calls, op.as_mut())?;
            println!(
                "\nsystem calls per uncached {what} (strace -c -f -p, {} calls):",
                a.strace_calls
            );
            for sc in &found {
                let top: Vec<String> = sc
                    .by_name
                    .iter()
                    .filter(|(_, n)| *n >= 0.01)
                    .map(|(name, n)| format!("{name} {n:.2}"))
                    .collect();
                println!("  {:<11} {:>6.2}: {}", sc.who, sc.total, top.join(", "));
            }
            traced.push((what, found));
        }
    }

    if let Some(path) = &a.json {
        let comps: serde_json::Map<String, serde_json::Value> = probes
            .iter()
            .map(|p| {
                let side = |i: usize| {
                    p.has_side(i).then(|| {
                        let (v, n) = p.switches(i);
                        serde_json::json!({"voluntary": v, "involuntary": n})
                    })
                };
                (
                    p.key.to_string(),
                    serde_json::json!({
                        "what": p.what,
                        "calls_per_round": p.calls,
                        "median_us": p.us(),
                        "mean_us": p.mean_us(),
                        "round_medians_us": p.median.iter().map(|x| x / 1000.0).collect::<Vec<_>>(),
                        "switches_per_call": {
                            "caller": side(0),
                            "daemon": side(1),
                            "server": side(2),
                        },
                    }),
                )
            })
            .collect();
        let syscalls: serde_json::Map<String, serde_json::Value> = traced
            .iter()
            .map(|(what, found)| {
                (
                    what.to_string(),
                    found
                        .iter()
                        .map(|sc| {
                            (
                                sc.who.to_string(),
                                serde_json::json!({
                                    "total": sc.total,
                                    "by_name": sc
                                        .by_name
                                        .iter()
                                        .map(|(k, v)| (k.clone(), serde_json::json!(v)))
                                        .collect::<serde_json::Map<_, _>>(),
                                }),
                            )
                        })
                        .collect::<serde_json::Map<_, _>>()
                        .into(),
                )
            })
            .collect();
        let j = serde_json::json!({
            "date": date,
            "commit": commit,
            "uncommitted_changes": dirty,
            "rounds": a.rounds,
            "components": comps,
            "split_of_uncached_fstat_us": PARTS
                .iter()
                .zip(&split)
                .zip(&split_rounds)
                .map(|((w, us), r)| serde_json::json!({"part": w, "us": us, "per_round_us": r}))
                .collect::<Vec<_>>(),
            "split_client_call": c_key,
            "split_round_trip": r_key,
            "pinned": a.pin,
            "syscalls_per_request": syscalls,
        });
        std::fs::write(
            path,
            serde_json::to_string_pretty(&j).map_err(|e| e.to_string())?,
        )
        .map_err(|e| format!("{}: {e}", path.display()))?;
    }

    // Orderly teardown: the echo thread ends with its connection, the connection and files
    // close, then the guards unmount and stop the servers (reverse order of their making).
    drop(probes);
    drop(fresh);
    drop(echo);
    drop((local_file, floor_file, uncached_file, cached_file));
    drop(floor);
    drop(cached);
    drop(uncached);
    drop(servers);
    Ok(())
}
