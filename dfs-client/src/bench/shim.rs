//! The `dfs_shim` target: the workloads run in a child process under the kernel32 shim's
//! preload library (as `dfs run` starts programs), on the same server as `dfs_fuse`, so
//! the figures are an unmodified program's on the DFS without FUSE.
//!
//! The child is this program again, told by [`WORKER_VAR`] to serve workloads: one line
//! in (`KEY ROUND`), one line out (`ok FIGURE BYTES` or `err MESSAGE`). It lives for the
//! whole bench, as a mount does, so its connection is as warm as the mount's.

use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, ExitCode, Stdio};
use std::sync::Mutex;

use super::targets::Target;
use super::workloads::{self, Params, Workload, ALL};
use crate::preload::{self, LockDir, Preload};

/// Set (to the parameters) in the child's environment: it then serves workloads.
pub const WORKER_VAR: &str = "DFS_BENCH_SHIM_WORKER";

/// Where the DFS appears in the child.
const PREFIX: &str = "/dfs-bench-shim";

/// The child and its pipes.
pub struct Worker {
    child: Child,
    io: Mutex<(ChildStdin, BufReader<ChildStdout>)>,
    /// The target's directory as the child names it.
    dir: PathBuf,
    _locks: LockDir,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("pid", &self.child.id())
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn encode(p: &Params) -> String {
    format!(
        "{} {} {} {} {} {}",
        p.size,
        p.files,
        p.dir_entries,
        p.random_ops,
        u8::from(p.fsync),
        u8::from(p.cold)
    )
}

fn decode(s: &str) -> Option<Params> {
    let v: Vec<u64> = s
        .split_whitespace()
        .map(|x| x.parse().ok())
        .collect::<Option<_>>()?;
    let [size, files, dir_entries, random_ops, fsync, cold] = v.as_slice() else {
        return None;
    };
    Some(Params {
        size: *size,
        files: usize::try_from(*files).ok()?,
        dir_entries: usize::try_from(*dir_entries).ok()?,
        random_ops: usize::try_from(*random_ops).ok()?,
        fsync: *fsync != 0,
        cold: *cold != 0,
    })
}

/// The `dfs_shim` target named `name`, on the server at `addr` whose export holds the
/// bench's directory `rel` (as `dfs_fuse` reaches it at `via_mount`, where it is
/// prepared, untimed).
pub fn target(
    name: &str,
    addr: &str,
    secret: &Path,
    via_mount: &Path,
    rel: &Path,
    params: &Params,
) -> Result<Target, String> {
    let library = preload::library()?;
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let locks = LockDir::new()?;
    let mut cmd = Command::new(exe);
    cmd.env(WORKER_VAR, encode(params))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        // Out of the terminal's process group: a Ctrl-C is the bench's, which stops it.
        .process_group(0);
    Preload {
        library,
        addr: addr.to_string(),
        prefix: PREFIX.to_string(),
        secret: Some(secret.to_path_buf()),
        timeout: Some(5.0),
        locks: locks.0.clone(),
        lend: true,
    }
    .apply(&mut cmd);
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("starting the dfs_shim worker: {e}"))?;
    let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
        let _ = child.kill();
        return Err("the dfs_shim worker has no pipes".into());
    };
    // Its first word, within a time limit: a worker stuck at start-up must not hold the
    // bench up.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stdout);
        let mut first = String::new();
        let _ = lines.read_line(&mut first);
        let _ = tx.send((first, lines));
    });
    let (first, lines) = match rx.recv_timeout(std::time::Duration::from_secs(20)) {
        Ok(got) => got,
        Err(_) => {
            let _ = child.kill();
            let _ = child.wait();
            return Err("the dfs_shim worker did not start within 20 s".into());
        }
    };
    if first.trim() != "ready" {
        let _ = child.kill();
        let _ = child.wait();
        return Err(format!(
            "the dfs_shim worker did not start under the preload library ({})",
            first.trim()
        ));
    }
    let worker = Worker {
        child,
        io: Mutex::new((stdin, lines)),
        dir: Path::new(PREFIX).join(rel).join(name),
        _locks: locks,
    };
    Ok(Target::with_worker(name, via_mount.to_path_buf(), worker))
}

impl Worker {
    /// Runs `w` in the child; its figure and the bytes it moved.
    pub fn run(&self, w: Workload, round: usize) -> io::Result<(f64, u64)> {
        let mut io = self.io.lock().unwrap_or_else(|p| p.into_inner());
        let (stdin, lines) = &mut *io;
        writeln!(stdin, "{} {} {}", w.key(), round, self.dir.display())?;
        stdin.flush()?;
        let mut line = String::new();
        if lines.read_line(&mut line)? == 0 {
            return Err(io::Error::other("the dfs_shim worker exited"));
        }
        let mut it = line.trim_end().splitn(3, ' ');
        match (it.next(), it.next(), it.next()) {
            (Some("ok"), Some(v), Some(b)) => {
                let v = v.parse().map_err(io::Error::other)?;
                let b = b.parse().map_err(io::Error::other)?;
                Ok((v, b))
            }
            (Some("err"), a, b) => Err(io::Error::other(
                [a.unwrap_or(""), b.unwrap_or("")].join(" "),
            )),
            _ => Err(io::Error::other(format!(
                "the dfs_shim worker said {line:?}"
            ))),
        }
    }
}

/// In the child: serves workloads until its input ends. `None` when this process is no
/// worker (the variable is not set).
pub fn worker_main() -> Option<ExitCode> {
    let params = std::env::var(WORKER_VAR).ok()?;
    let Some(p) = decode(&params) else {
        eprintln!("dfs bench: bad {WORKER_VAR}={params:?}");
        return Some(ExitCode::FAILURE);
    };
    let out = io::stdout();
    let mut out = out.lock();
    // Under the library, the prefix is a directory: if it is not, the library is not there.
    if std::fs::metadata(PREFIX).is_err() {
        let _ = writeln!(out, "not under the preload library ({PREFIX} not found)");
        return Some(ExitCode::FAILURE);
    }
    let _ = writeln!(out, "ready");
    let _ = out.flush();
    for line in io::stdin().lock().lines() {
        let Ok(line) = line else { break };
        let mut it = line.splitn(3, ' ');
        let (Some(key), Some(round), Some(dir)) = (it.next(), it.next(), it.next()) else {
            let _ = writeln!(out, "err malformed request");
            continue;
        };
        let w = ALL.iter().find(|w| w.key() == key);
        let round = round.parse::<usize>().ok();
        let answer = match (w, round) {
            (Some(w), Some(r)) => match workloads::run(*w, Path::new(dir), &p, r) {
                Ok((v, b)) => format!("ok {v} {b}"),
                Err(e) => format!("err {e}"),
            },
            _ => "err unknown workload".to_string(),
        };
        let _ = writeln!(out, "{answer}");
        let _ = out.flush();
    }
    Some(ExitCode::SUCCESS)
}
