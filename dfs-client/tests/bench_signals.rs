//! Ctrl-C and SIGTERM stop `dfs bench` cleanly wherever they land: starting its servers,
//! preparing its files, in a workload (sshfs too), or stuck on a server that stopped
//! answering. Each run must exit with 128 + the signal within a time limit, and leave no
//! mount under its scratch directory and no process that names it.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use common::*;

/// One bench at a time: each runs servers and mounts, and the machine has 2 cores.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// How long a stopped bench may take to exit (its teardown has its own, shorter limits).
const EXIT_LIMIT: Duration = Duration::from_secs(40);

/// A `dfs bench` child whose stderr lines are collected; dropping it kills it and removes
/// whatever it left (lazy unmounts, SIGKILL), also when the test fails.
struct Bench {
    child: Child,
    scratch: PathBuf,
    lines: Receiver<String>,
    seen: Vec<String>,
    _tmp: tempfile::TempDir,
}

impl Bench {
    /// Starts `dfs bench ARGS --scratch DIR`; with `ignore_sigint`, SIGINT is ignored when it
    /// starts, as in a job that a non-interactive shell put in the background.
    fn start(args: &[&str], ignore_sigint: bool) -> Bench {
        server_bin();
        let tmp = tempfile::tempdir().unwrap();
        let scratch = tmp.path().join("scratch");
        let mut cmd = if ignore_sigint {
            let mut c = Command::new("sh");
            c.arg("-c").arg("trap '' INT; exec \"$0\" \"$@\"").arg(DFS);
            c
        } else {
            Command::new(DFS)
        };
        cmd.arg("bench").args(args).arg("--scratch").arg(&scratch);
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let err = child.stderr.take().unwrap();
        let (tx, rx) = channel();
        std::thread::spawn(move || {
            for l in BufReader::new(err).lines().map_while(Result::ok) {
                let _ = tx.send(l);
            }
        });
        Bench {
            child,
            scratch,
            lines: rx,
            seen: Vec::new(),
            _tmp: tmp,
        }
    }

    fn pid(&self) -> Pid {
        Pid::from_raw(self.child.id() as i32)
    }

    /// Waits for a stderr line containing `pat`.
    fn wait_line(&mut self, pat: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) => {
                    self.seen.push(l.clone());
                    if l.contains(pat) {
                        return l;
                    }
                }
                Err(_) => panic!(
                    "no line with {pat:?} within 60 s; stderr so far:\n{}",
                    self.seen.join("\n")
                ),
            }
        }
    }

    /// Sends `sig` and waits for the exit; returns the status and all of stderr.
    fn stop_with(&mut self, sig: Signal) -> (ExitStatus, String, Duration) {
        let t = Instant::now();
        kill(self.pid(), sig).unwrap();
        let status = loop {
            while let Ok(l) = self.lines.try_recv() {
                self.seen.push(l);
            }
            if let Some(st) = self.child.try_wait().unwrap() {
                break st;
            }
            assert!(
                t.elapsed() < EXIT_LIMIT,
                "dfs bench still runs {EXIT_LIMIT:?} after {sig}; stderr:\n{}",
                self.seen.join("\n")
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        let took = t.elapsed();
        // The reader ends with the pipe.
        while let Ok(l) = self.lines.recv_timeout(Duration::from_secs(5)) {
            self.seen.push(l);
        }
        (status, self.seen.join("\n"), took)
    }

    /// Nothing left: no mount under the scratch directory, no process naming it.
    fn assert_clean(&self) {
        let mounts = mounts_under(&self.scratch);
        assert!(mounts.is_empty(), "still mounted: {mounts:?}");
        let procs = processes_naming(&self.scratch);
        assert!(procs.is_empty(), "still running: {procs:#?}");
    }
}

impl Drop for Bench {
    fn drop(&mut self) {
        let _ = self.child.kill();
        if !exited_within(&mut self.child, Duration::from_secs(10)) {
            // Killed in the middle of a FUSE call on one of its own mounts, it can sleep in
            // the kernel for ever (the bug this file tests for): abort its connections.
            for (_, dev) in mounts_under_with_dev(&self.scratch) {
                abort_fuse_connection(&dev);
            }
            exited_within(&mut self.child, Duration::from_secs(10));
        }
        for (pid, _) in processes_naming(&self.scratch) {
            let _ = kill(pid, Signal::SIGCONT);
            let _ = kill(pid, Signal::SIGKILL);
        }
        for mp in mounts_under(&self.scratch) {
            lazy_umount(&mp);
        }
    }
}

fn exited_within(child: &mut Child, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if !matches!(child.try_wait(), Ok(None)) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// Writes to /sys/fs/fuse/connections/N/abort for the mount with device `0:N`.
fn abort_fuse_connection(dev: &str) {
    let Some(n) = dev.strip_prefix("0:") else {
        return;
    };
    let dir = Path::new("/sys/fs/fuse/connections");
    if !dir.join(n).exists() {
        let _ = Command::new("mount")
            .args(["-t", "fusectl", "fusectl"])
            .arg(dir)
            .status();
    }
    let _ = std::fs::write(dir.join(n).join("abort"), "1");
}

/// Mount points at or below `dir`, deepest first (from /proc/self/mountinfo: reading it
/// touches no file system, so a dead FUSE daemon cannot stall it).
fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    mounts_under_with_dev(dir)
        .into_iter()
        .map(|(p, _)| p)
        .collect()
}

/// The same with each mount's `major:minor`.
fn mounts_under_with_dev(dir: &Path) -> Vec<(PathBuf, String)> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let mut v: Vec<(PathBuf, String)> = info
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            Some((
                PathBuf::from(f.get(4)?.replace("\\040", " ")),
                f.get(2)?.to_string(),
            ))
        })
        .filter(|(p, _)| p.starts_with(dir))
        .collect();
    v.sort_by_key(|(p, _)| std::cmp::Reverse(p.components().count()));
    v
}

/// Processes whose command line mentions `dir` (the bench's servers, sshd, sshfs, ssh).
fn processes_naming(dir: &Path) -> Vec<(Pid, String)> {
    let want = dir.to_string_lossy().into_owned();
    let mut v = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(cmd) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
        if cmd.contains(&want) {
            v.push((Pid::from_raw(pid), cmd));
        }
    }
    v
}

/// Small figures, many rounds: a run that is still going when the signal comes.
const LONG_RUN: &[&str] = &[
    "--size",
    "16M",
    "--rounds",
    "1000",
    "--files",
    "50",
    "--dir-entries",
    "200",
    "--random-ops",
    "500",
];

fn args(extra: &[&'static str]) -> Vec<&'static str> {
    LONG_RUN.iter().chain(extra).copied().collect()
}

fn check_stopped(b: &Bench, sig: Signal, status: ExitStatus, stderr: &str, took: Duration) {
    assert_eq!(
        status.code(),
        Some(128 + sig as i32),
        "{status}; stderr:\n{stderr}"
    );
    assert!(
        stderr.contains(&format!(
            "stopped by {sig}: mounts removed, servers stopped"
        )),
        "{stderr}"
    );
    b.assert_clean();
    eprintln!("{sig}: stopped cleanly in {took:?}");
}

#[test]
fn sigint_while_starting_the_servers() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let mut b = Bench::start(&args(&[]), false);
    b.wait_line("starting dfs_fuse");
    let (st, err, took) = b.stop_with(Signal::SIGINT);
    check_stopped(&b, Signal::SIGINT, st, &err, took);
    assert!(
        !err.contains("] round "),
        "it measured after the signal:\n{err}"
    );
}

#[test]
fn sigterm_while_preparing() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    // Thousands of entries to make through the mount: preparing takes seconds.
    let mut b = Bench::start(
        &[
            "--size",
            "16M",
            "--dir-entries",
            "20000",
            "--no-variants",
            "--rounds",
            "1",
        ],
        false,
    );
    b.wait_line("preparing dfs_fuse");
    let (st, err, took) = b.stop_with(Signal::SIGTERM);
    check_stopped(&b, Signal::SIGTERM, st, &err, took);
    assert!(
        !err.contains("] round "),
        "it measured after the signal:\n{err}"
    );
}

#[test]
fn sigint_during_a_workload_even_when_started_ignoring_it() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    // As a background job of a script, which starts with SIGINT ignored: the bench used to
    // run on regardless.
    let mut b = Bench::start(&args(&["--workloads", "seq_write_4k,seq_read_4k"]), true);
    b.wait_line("[3/");
    let (st, err, took) = b.stop_with(Signal::SIGINT);
    check_stopped(&b, Signal::SIGINT, st, &err, took);
}

#[test]
fn sigterm_during_a_workload_with_sshfs() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let mut b = Bench::start(
        &args(&["--with-sshfs", "--workloads", "seq_write_4k,stat"]),
        false,
    );
    b.wait_line("on sshfs");
    let (st, err, took) = b.stop_with(Signal::SIGTERM);
    check_stopped(&b, Signal::SIGTERM, st, &err, took);
}

#[test]
fn sigterm_while_a_write_waits_for_a_stopped_server() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    // Small writes to dfs_fuse, then its server stops answering (SIGSTOP): the workload is
    // caught in a FUSE write. The bench must get it out (aborting the connection) rather
    // than wait for the client's 30 s timeout, or hang in the kernel.
    let mut b = Bench::start(
        &args(&["--no-variants", "--workloads", "seq_write_4k"]),
        false,
    );
    b.wait_line("seq_write_4k on dfs_fuse");
    let server = processes_naming(&b.scratch)
        .into_iter()
        .find(|(_, cmd)| cmd.contains("dfs-server") && cmd.contains("shm:dfs-bench-"))
        .expect("the dfs_fuse server runs");
    kill(server.0, Signal::SIGSTOP).unwrap();
    // Long enough for the other two targets' turns: the workload is then on dfs_fuse.
    std::thread::sleep(Duration::from_millis(1500));
    let (st, err, took) = b.stop_with(Signal::SIGTERM);
    check_stopped(&b, Signal::SIGTERM, st, &err, took);
    assert!(took < Duration::from_secs(20), "took {took:?}:\n{err}");
    assert!(err.contains("aborting the FUSE connections"), "{err}");
}
