//! What `dfs bench` measures: the DFS mounted in this process (pointer path, copy path, tcp),
//! the export read directly, the in-memory FUSE ceiling, sshfs, and any named directory.

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::mount::{self, MountOptions};
use crate::Client;

/// How a DFS target's file data travels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DataPath {
    /// As mounted by default: reads pass through to the server's file on one host.
    Passthrough,
    /// Through the rings, in place (`nopassthrough`).
    Rings,
    /// Through the rings with the copying socket calls (`copy_path`).
    Copy,
}

/// One thing to measure: a directory, and whatever keeps it alive.
pub struct Target {
    /// Its name in the report (`dfs_fuse`, `local`, …).
    pub name: String,
    /// Where its files go.
    pub dir: PathBuf,
    /// For DFS targets: a client of the server's own, to read its counters (with a short
    /// timeout: a server that stops answering holds the bench up for 2 s, not 30).
    pub client: Option<Client>,
    /// Mounts and processes, torn down in order when dropped.
    keep: Vec<Keep>,
    /// For `dfs_shim`: the child process the workloads run in.
    pub worker: Option<super::shim::Worker>,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target")
            .field("name", &self.name)
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

enum Keep {
    /// A FUSE session of this process, with its mount point.
    Session(fuser::BackgroundSession, PathBuf),
    /// A child process in a process group of its own (a server, sshfs).
    Process(Child),
    /// A mount served by another process (sshfs).
    Unmount(PathBuf),
    Sshd(super::sshfs::Sshd),
}

/// How long each step of the teardown may take before the next, harsher one.
const STEP: Duration = Duration::from_secs(5);

impl Drop for Target {
    fn drop(&mut self) {
        for k in self.keep.drain(..) {
            match k {
                Keep::Session(s, mp) => unmount_session(s, &mp),
                Keep::Process(c) => stop_group(c),
                Keep::Unmount(p) => unmount(&p),
                Keep::Sshd(s) => drop(s),
            }
        }
    }
}

/// Unmounts one of this process's FUSE mounts and joins its session, with a time limit on
/// each step: a mount still busy or a session that does not end gets its connection aborted
/// (which fails whatever is pending on it) and a lazy unmount.
fn unmount_session(bg: fuser::BackgroundSession, mp: &Path) {
    let (tx, rx) = std::sync::mpsc::channel();
    let joiner = std::thread::Builder::new()
        .name("dfs-bench-umount".into())
        .spawn(move || {
            let _ = tx.send(bg.umount_and_join());
        });
    // A clean unmount ends the session in milliseconds; one that takes longer has a thread
    // stuck in the file system (on a server that does not answer, say).
    let clean = joiner.is_ok() && matches!(rx.recv_timeout(STEP / 2), Ok(Ok(())));
    if !clean {
        tracing::debug!("{}: aborting the FUSE connection", mp.display());
        super::stop::abort_mount(mp);
        if super::stop::is_mounted(mp) {
            let _ = super::stop::umount(mp, true);
        }
        // The session ends once its connection does and its threads are out of the file
        // system, which may wait for the server that is stopped next: if it has not ended
        // by then, its thread is left to the process's exit.
        let _ = rx.recv_timeout(Duration::from_secs(1));
    }
    if super::stop::is_mounted(mp) {
        let _ = super::stop::umount(mp, true);
    }
    super::stop::unregister_mount(mp);
}

/// Unmounts a mount served by another process (lazily if busy).
fn unmount(mp: &Path) {
    if super::stop::is_mounted(mp) && super::stop::umount(mp, false).is_err() {
        super::stop::abort_mount(mp);
        let _ = super::stop::umount(mp, true);
    }
    super::stop::unregister_mount(mp);
}

/// Stops a child and whatever it started in its process group: SIGTERM, then SIGKILL after
/// [`STEP`]; returns once the group is empty (or after another step).
pub(super) fn stop_group(mut child: Child) {
    use nix::sys::signal::{kill, killpg, Signal};
    use nix::unistd::Pid;
    let pid = Pid::from_raw(child.id() as i32);
    let _ = killpg(pid, Signal::SIGTERM);
    let _ = kill(pid, Signal::SIGTERM);
    // A stopped process (SIGSTOP, a debugger) takes its SIGTERM only once it runs again.
    let _ = killpg(pid, Signal::SIGCONT);
    let gone = |child: &mut Child| {
        matches!(child.try_wait(), Ok(Some(_)) | Err(_)) && killpg(pid, None).is_err()
    };
    if wait_for(|| gone(&mut child), STEP).is_err() {
        let _ = killpg(pid, Signal::SIGKILL);
        let _ = child.kill();
        let _ = wait_for(|| gone(&mut child), STEP);
    }
    let _ = child.try_wait();
}

impl Target {
    /// A target whose workloads run in `worker`, prepared through `dir`.
    pub fn with_worker(name: &str, dir: PathBuf, worker: super::shim::Worker) -> Target {
        Target {
            name: name.into(),
            dir,
            client: None,
            keep: Vec::new(),
            worker: Some(worker),
        }
    }

    /// A plain directory (the export itself, or a user's `--target NAME=PATH`).
    pub fn dir(name: &str, dir: PathBuf) -> Result<Target, String> {
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        Ok(Target {
            name: name.into(),
            worker: None,
            dir,
            client: None,
            keep: Vec::new(),
        })
    }

    /// A `dfs-server` on `export` (listening on `listen`), mounted in this process on `mp`.
    pub fn dfs(
        name: &str,
        export: &Path,
        listen: &str,
        key: &Path,
        secret: &Path,
        mp: &Path,
        path: DataPath,
    ) -> Result<Target, String> {
        let copy_path = path == DataPath::Copy;
        let (child, addr) = start_server(export, listen, key, secret, copy_path)?;
        let mut t = Target {
            name: name.into(),
            worker: None,
            dir: mp.join("dfs-bench"),
            client: None,
            keep: vec![Keep::Process(child)],
        };
        std::fs::create_dir_all(mp).map_err(|e| format!("{}: {e}", mp.display()))?;
        let opts = MountOptions {
            keep_cache: false,
            copy_path,
            passthrough: path == DataPath::Passthrough,
            secret: Some(secret.to_path_buf()),
            ..MountOptions::default()
        };
        let client = Arc::new(mount::connect(&addr, &opts)?);
        let stats = mount::connect(
            &addr,
            &MountOptions {
                timeout: Duration::from_secs(2),
                ..opts.clone()
            },
        )?;
        let session = mount::mount_session(client, &addr, mp, &opts)?;
        let bg = session
            .spawn()
            .map_err(|e| format!("serving the mount: {e}"))?;
        super::stop::register_mount(mp);
        t.keep.insert(0, Keep::Session(bg, mp.to_path_buf()));
        t.client = Some(stats);
        super::stop::check().map_err(|e| e.to_string())?;
        std::fs::create_dir_all(&t.dir).map_err(|e| format!("{}: {e}", t.dir.display()))?;
        Ok(t)
    }

    /// The in-memory FUSE file system on `mp`.
    pub fn memfs(name: &str, mp: &Path) -> Result<Target, String> {
        std::fs::create_dir_all(mp).map_err(|e| format!("{}: {e}", mp.display()))?;
        mount::check_mountpoint(mp)?;
        let opts = MountOptions::default();
        let config = mount::fuse_config("memfs", "dfs-ceiling", false, &opts);
        let session = fuser::Session::new(super::memfs::MemFs::default(), mp, &config)
            .map_err(|e| format!("mounting the in-memory file system: {e}"))?;
        let _ = mount::set_readahead(mp, opts.readahead_kib);
        let bg = session.spawn().map_err(|e| e.to_string())?;
        super::stop::register_mount(mp);
        let t = Target {
            name: name.into(),
            worker: None,
            dir: mp.join("dfs-bench"),
            client: None,
            keep: vec![Keep::Session(bg, mp.to_path_buf())],
        };
        // The first access waits for the kernel's INIT to be answered.
        wait_for(
            || super::stop::check().is_err() || std::fs::create_dir_all(&t.dir).is_ok(),
            Duration::from_secs(10),
        )
        .map_err(|_| "the in-memory file system did not answer".to_string())?;
        super::stop::check().map_err(|e| e.to_string())?;
        Ok(t)
    }

    /// sshfs of `export` over a throwaway sshd on loopback, on `mp`.
    pub fn sshfs(name: &str, export: &Path, mp: &Path, scratch: &Path) -> Result<Target, String> {
        std::fs::create_dir_all(mp).map_err(|e| format!("{}: {e}", mp.display()))?;
        let sshd = super::sshfs::Sshd::start(scratch)?;
        let mut t = Target {
            name: name.into(),
            worker: None,
            dir: mp.join("dfs-bench"),
            client: None,
            keep: vec![Keep::Sshd(sshd)],
        };
        let Some(Keep::Sshd(sshd)) = t.keep.first() else {
            unreachable!()
        };
        let sshfs = sshd.mount(export, mp, scratch)?;
        super::stop::register_mount(mp);
        t.keep.insert(0, Keep::Process(sshfs));
        t.keep.insert(0, Keep::Unmount(mp.to_path_buf()));
        super::stop::check().map_err(|e| e.to_string())?;
        std::fs::create_dir_all(&t.dir).map_err(|e| format!("{}: {e}", t.dir.display()))?;
        Ok(t)
    }
}

pub(super) fn wait_for(mut ok: impl FnMut() -> bool, limit: Duration) -> Result<(), ()> {
    let deadline = Instant::now() + limit;
    while !ok() {
        if Instant::now() > deadline {
            return Err(());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(())
}

/// `dfs-server` from beside this program.
fn server_bin() -> Result<PathBuf, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let p = exe.with_file_name("dfs-server");
    if p.exists() {
        Ok(p)
    } else {
        Err(format!(
            "{} is missing (cargo build -p dfs-server)",
            p.display()
        ))
    }
}

/// Starts a server and returns it with the address it listens on (the real port for tcp).
/// Makes the shared secret the bench's servers and mounts use, as a deployment would (on
/// tcp, callers' uids count only from a client that proved it).
pub fn make_secret(path: &Path) -> Result<(), String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| e.to_string())?;
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    f.write_all(hex.as_bytes())
        .map_err(|e| format!("{}: {e}", path.display()))
}

fn start_server(
    export: &Path,
    listen: &str,
    key: &Path,
    secret: &Path,
    copy_path: bool,
) -> Result<(Child, String), String> {
    let mut cmd = Command::new(server_bin()?);
    cmd.arg("--export")
        .arg(export)
        .args(["--listen", listen, "--squash", "none"])
        .arg("--handle-key")
        .arg(key)
        .arg("--secret")
        .arg(secret);
    if copy_path {
        cmd.arg("--copy-path");
    }
    // In a process group of its own, so that a Ctrl-C on the terminal reaches only the bench,
    // which stops its servers after unmounting.
    let mut child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .map_err(|e| format!("starting dfs-server: {e}"))?;
    let err = child.stderr.take().ok_or("no stderr")?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for l in BufReader::new(err).lines().map_while(Result::ok) {
            let _ = tx.send(l);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Err(e) = super::stop::check() {
            stop_group(child);
            return Err(e.to_string());
        }
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left.min(Duration::from_millis(100))) {
            Ok(l) => {
                if let Some(addr) = l
                    .strip_prefix("dfs-server: serving ")
                    .and_then(|r| r.rsplit(" on ").next())
                {
                    let addr = addr.to_string();
                    std::thread::spawn(move || for _ in rx {});
                    return Ok((child, addr));
                }
                if l.contains("error") {
                    stop_group(child);
                    return Err(l);
                }
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) if !left.is_zero() => {}
            Err(_) => {
                stop_group(child);
                return Err("dfs-server did not start".into());
            }
        }
    }
}
