//! `dfs bench`: file throughput and metadata rates of the DFS next to what its users would
//! use instead, measured in one run, interleaved over rounds (these machines are noisy:
//! absolute figures wander, ratios within one run hold).

mod memfs;
mod report;
mod shim;
mod sshfs;
mod stop;
mod targets;
mod workloads;

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};

pub use memfs::MemFs;
pub use report::{Config, Report};
pub use shim::worker_main as shim_worker_main;
pub use workloads::{Params, Workload, ALL};

use targets::{DataPath, Target};

/// How a run shows its progress (on stderr).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Progress {
    /// A bar with the elapsed time and what it is doing (for a terminal).
    Bar,
    /// One plain line per stage and per measurement (for a log or a pipe).
    Lines,
    /// Nothing.
    Quiet,
}

/// What to run.
#[derive(Clone, Debug)]
pub struct BenchOptions {
    /// Sizes and counts.
    pub params: Params,
    /// Rounds; targets run interleaved within each.
    pub rounds: usize,
    /// Workload keys to run (prefixes match: `seq_read` runs all three block sizes); all if
    /// empty.
    pub only: Vec<String>,
    /// Add sshfs over a throwaway loopback sshd.
    pub with_sshfs: bool,
    /// Also measure the copy path and the tcp backend.
    pub variants: bool,
    /// Named directories to measure too.
    pub extra: Vec<(String, PathBuf)>,
    /// Where exports, mounts and scratch files go.
    pub scratch: PathBuf,
    /// Remove `scratch` at the end (when the bench made it).
    pub remove_scratch: bool,
    /// How to show progress.
    pub progress: Progress,
}

/// The exit status for a run that a signal stopped (128 + the signal's number: 130 for
/// SIGINT, 143 for SIGTERM, 129 for SIGHUP), once [`run`] has returned.
pub fn exit_code() -> Option<i32> {
    stop::signal().map(|s| 128 + s as i32)
}

/// Runs the benchmark and returns every figure.
///
/// SIGINT, SIGTERM and SIGHUP stop it cleanly: the current operation finishes, the mounts
/// are unmounted and the servers stopped, and it returns an error ([`exit_code`] then gives
/// the conventional exit status). For that it blocks those signals and waits for them on a
/// thread of its own, so call it before the program starts any thread.
pub fn run(o: &BenchOptions) -> Result<Report, String> {
    stop::install()?;
    let result = run_targets(o);
    let left = stop::mounts_under(&absolute(&o.scratch));
    // Never remove files through a mount that is still there.
    if o.remove_scratch && left.is_empty() {
        let _ = std::fs::remove_dir_all(&o.scratch);
    }
    stop::finish();
    let left_note = if left.is_empty() {
        String::new()
    } else {
        format!(
            "; still mounted (remove with umount -l): {}",
            left.iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )
    };
    match (stop::signal(), result) {
        (Some(sig), _) => Err(format!(
            "stopped by {sig}{}",
            if left.is_empty() {
                ": mounts removed, servers stopped".to_string()
            } else {
                left_note
            }
        )),
        (None, Err(e)) => Err(e + &left_note),
        (None, Ok(r)) => {
            if !left.is_empty() {
                let _ = writeln!(std::io::stderr(), "dfs bench: warning{left_note}");
            }
            Ok(r)
        }
    }
}

fn absolute(p: &std::path::Path) -> PathBuf {
    std::fs::canonicalize(p)
        .or_else(|_| std::path::absolute(p))
        .unwrap_or_else(|_| p.to_path_buf())
}

/// Reports progress as a bar or as lines.
struct Shown {
    how: Progress,
    bar: indicatif::ProgressBar,
    start: Instant,
    total: usize,
    done: usize,
}

impl Shown {
    fn new(how: Progress, total: usize) -> Shown {
        let bar = if how == Progress::Bar {
            let bar = indicatif::ProgressBar::new(total as u64);
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "{elapsed_precise} {bar:30} {pos}/{len} {wide_msg}",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            bar.enable_steady_tick(Duration::from_millis(250));
            stop::set_bar(Some(bar.clone()));
            bar
        } else {
            indicatif::ProgressBar::hidden()
        };
        Shown {
            how,
            bar,
            start: Instant::now(),
            total,
            done: 0,
        }
    }

    fn elapsed(&self) -> String {
        let s = self.start.elapsed().as_secs();
        format!("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
    }

    /// A stage: starting a target, preparing its files.
    fn stage(&self, what: &str) {
        match self.how {
            Progress::Bar => self.bar.set_message(what.to_string()),
            Progress::Lines => {
                let _ = writeln!(std::io::stderr(), "dfs bench: {} {what}", self.elapsed());
            }
            Progress::Quiet => {}
        }
    }

    /// Before a measurement.
    fn measuring(&self, what: &str) {
        if self.how == Progress::Bar {
            self.bar.set_message(what.to_string());
        }
    }

    /// After a measurement: one line in the Lines mode.
    fn measured(&mut self, what: &str, value: f64, unit: &str) {
        self.done += 1;
        match self.how {
            Progress::Bar => self.bar.inc(1),
            Progress::Lines => {
                let _ = writeln!(
                    std::io::stderr(),
                    "dfs bench: {} [{}/{}] {what}: {} {unit}",
                    self.elapsed(),
                    self.done,
                    self.total,
                    report::figure(value)
                );
            }
            Progress::Quiet => {}
        }
    }
}

impl Drop for Shown {
    fn drop(&mut self) {
        stop::set_bar(None);
        self.bar.finish_and_clear();
    }
}

/// Directories the bench made outside its scratch directory, removed after the targets.
struct RemoveOnDrop(Vec<PathBuf>);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        for d in &self.0 {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

fn size_name(n: u64) -> String {
    match n {
        n if n >= 1 << 30 && n % (1 << 30) == 0 => format!("{} GiB", n >> 30),
        n if n >= 1 << 20 && n % (1 << 20) == 0 => format!("{} MiB", n >> 20),
        n if n >= 1 << 10 && n % (1 << 10) == 0 => format!("{} KiB", n >> 10),
        n => format!("{n} bytes"),
    }
}

/// Starts the targets, prepares and measures; the targets are torn down (in order: mounts,
/// then servers) when it returns, also on an error or a stop.
fn run_targets(o: &BenchOptions) -> Result<Report, String> {
    if o.params.cold && !nix::unistd::geteuid().is_root() {
        return Err("--cold drops the page cache, which needs root".into());
    }
    let workloads: Vec<Workload> = ALL
        .iter()
        .copied()
        .filter(|w| o.only.is_empty() || o.only.iter().any(|k| w.key().starts_with(k.as_str())))
        .collect();
    if workloads.is_empty() {
        return Err(format!(
            "no workload matches {:?}; the keys are {}",
            o.only,
            ALL.iter().map(|w| w.key()).collect::<Vec<_>>().join(", ")
        ));
    }
    std::fs::create_dir_all(&o.scratch).map_err(|e| format!("{}: {e}", o.scratch.display()))?;
    let s = &absolute(&o.scratch);
    let export = s.join("export");
    let key = s.join("handle.key");
    let secret = s.join("secret");
    std::fs::create_dir_all(&export).map_err(|e| e.to_string())?;
    targets::make_secret(&secret)?;
    let pid = std::process::id();
    let library = crate::preload::library();
    let n_targets = 3
        + usize::from(library.is_ok())
        + usize::from(o.variants) * 3
        + usize::from(o.with_sshfs)
        + o.extra.len();
    let mut shown = Shown::new(o.progress, o.rounds * workloads.len() * n_targets);
    // Declared after `targets`, so dropped before them: the workloads are out of the mounts
    // before the teardown starts.
    let mut extra_dirs = RemoveOnDrop(vec![export.join("dfs-bench-local")]);
    let mut targets: Vec<Target> = Vec::new();
    let _io = stop::IoPhase::begin();
    let stopped = |e: String| match stop::check() {
        Err(s) => s.to_string(),
        Ok(()) => e,
    };
    let add = |targets: &mut Vec<Target>, what: &str, make: &dyn Fn() -> Result<Target, String>| {
        stop::check().map_err(|e| e.to_string())?;
        shown.stage(&format!("starting {what}"));
        targets.push(make().map_err(stopped)?);
        Ok::<(), String>(())
    };
    add(&mut targets, "dfs_fuse (dfs-server, FUSE mount)", &|| {
        Target::dfs(
            "dfs_fuse",
            &export,
            &format!("shm:dfs-bench-{pid}"),
            &key,
            &secret,
            &s.join("mnt-dfs"),
            DataPath::Passthrough,
        )
    })?;
    // The same server, from programs under the preload library (`dfs run`).
    let fuse_addr = targets
        .first()
        .and_then(|t| t.client.as_ref())
        .map(|c| c.addr().to_string());
    if let Err(e) = &library {
        shown.stage(&format!("dfs_shim left out: {e}"));
    }
    if let (Some(addr), Ok(_)) = (fuse_addr, library) {
        let mp = s.join("mnt-dfs");
        add(
            &mut targets,
            "dfs_shim (the same server, under dfs run)",
            &|| {
                shim::target(
                    "dfs_shim",
                    &addr,
                    &secret,
                    &mp.join("dfs-bench"),
                    std::path::Path::new("dfs-bench"),
                    &o.params,
                )
            },
        )?;
    }
    if o.variants {
        add(
            &mut targets,
            "dfs_copy (dfs-server --copy-path, FUSE mount)",
            &|| {
                Target::dfs(
                    "dfs_copy",
                    &export,
                    &format!("shm:dfs-bench-copy-{pid}"),
                    &key,
                    &secret,
                    &s.join("mnt-copy"),
                    DataPath::Copy,
                )
            },
        )?;
        add(
            &mut targets,
            "dfs_tcp (dfs-server on tcp, FUSE mount)",
            &|| {
                Target::dfs(
                    "dfs_tcp",
                    &export,
                    "tcp:127.0.0.1:0",
                    &key,
                    &secret,
                    &s.join("mnt-tcp"),
                    DataPath::Rings,
                )
            },
        )?;
        add(
            &mut targets,
            "dfs_rings (dfs-server, FUSE mount without passthrough)",
            &|| {
                Target::dfs(
                    "dfs_rings",
                    &export,
                    &format!("shm:dfs-bench-rings-{pid}"),
                    &key,
                    &secret,
                    &s.join("mnt-rings"),
                    DataPath::Rings,
                )
            },
        )?;
    }
    add(&mut targets, "local", &|| {
        Target::dir("local", export.join("dfs-bench-local"))
    })?;
    add(&mut targets, "fuse_ceiling (in-memory FUSE mount)", &|| {
        Target::memfs("fuse_ceiling", &s.join("mnt-memfs"))
    })?;
    if o.with_sshfs {
        add(
            &mut targets,
            "sshfs (sshd on 127.0.0.1, sshfs mount)",
            &|| Target::sshfs("sshfs", &export, &s.join("mnt-sshfs"), s),
        )?;
    }
    for (name, path) in &o.extra {
        let dir = path.join(format!("dfs-bench-{pid}"));
        extra_dirs.0.push(dir.clone());
        add(&mut targets, name, &|| Target::dir(name, dir.clone()))?;
    }
    // Each target works in its own directory: the DFS mounts share one export.
    for t in &mut targets {
        t.dir = t.dir.join(&t.name);
        std::fs::create_dir_all(&t.dir)
            .map_err(|e| stopped(format!("{}: {e}", t.dir.display())))?;
    }
    for t in &targets {
        stop::check().map_err(|e| e.to_string())?;
        shown.stage(&format!(
            "preparing {}: the data file ({}), a directory of {} entries",
            t.name,
            size_name(o.params.size),
            o.params.dir_entries
        ));
        workloads::prepare(&t.dir, &o.params)
            .map_err(|e| stopped(format!("{}: preparing {}: {e}", t.name, t.dir.display())))?;
    }
    let mut figures: BTreeMap<(String, String), Vec<f64>> = BTreeMap::new();
    let mut copies: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for round in 0..o.rounds {
        for w in &workloads {
            // Rotate the order each round so no target always goes first.
            for i in 0..targets.len() {
                let t = &targets[(i + round) % targets.len()];
                let what = format!("round {}/{} {} on {}", round + 1, o.rounds, w.key(), t.name);
                shown.measuring(&what);
                // Before a data workload, what the previous measurement left dirty is
                // written back now, untimed, not during this one (256 MiB written to `local`
                // took ext4's writeback into the next target's write figure). Not before
                // the metadata workloads: a sync would give their small files blocks on
                // disk, which their unlinks would then have to free, and temporary files
                // rarely live that long.
                if !matches!(
                    w,
                    Workload::Create | Workload::Stat | Workload::Unlink | Workload::Readdir
                ) {
                    nix::unistd::sync();
                }
                let seq_read = matches!(w, Workload::SeqRead(_));
                // Only sequential reads count copies (and a server call costs time).
                let before = if seq_read { counters(t) } else { None };
                let (value, bytes) = match &t.worker {
                    Some(worker) => worker.run(*w, round),
                    None => workloads::run(*w, &t.dir, &o.params, round),
                }
                .map_err(|e| stopped(format!("{} on {}: {e}", w.key(), t.name)))?;
                if let (Some(b), Some(a)) = (before, before.and_then(|_| counters(t))) {
                    if bytes > 0 {
                        copies
                            .entry(t.name.clone())
                            .or_default()
                            .push((a - b) as f64 / bytes as f64);
                    }
                }
                figures
                    .entry((w.key(), t.name.clone()))
                    .or_default()
                    .push(value);
                shown.measured(&what, value, w.unit());
            }
        }
    }
    drop(shown);
    let names: Vec<String> = targets.iter().map(|t| t.name.clone()).collect();
    drop(_io);
    drop(targets);
    drop(extra_dirs);
    Ok(Report::new(o, &workloads, &names, figures, copies))
}

/// Bytes copied by software so far, in this process (the mount) and in the target's server.
fn counters(t: &Target) -> Option<u64> {
    let c = t.client.as_ref()?;
    let server = c.server_stats().ok()?;
    Some(vmmc_sockets::Counters::now().bytes_copied + server.copied)
}
