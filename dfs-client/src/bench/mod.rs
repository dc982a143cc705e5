//! `dfs bench`: file throughput and metadata rates of the DFS next to what its users would
//! use instead, measured in one run, interleaved over rounds (these machines are noisy:
//! absolute figures wander, ratios within one run hold).

mod memfs;
mod report;
mod sshfs;
mod targets;
mod workloads;

use std::collections::BTreeMap;
use std::path::PathBuf;

pub use report::Report;
pub use workloads::{Params, Workload, ALL};

use targets::Target;

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
    /// Show a progress bar.
    pub progress: bool,
}

/// Runs the benchmark and returns every figure.
pub fn run(o: &BenchOptions) -> Result<Report, String> {
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
    let s = &o.scratch;
    let export = s.join("export");
    let key = s.join("handle.key");
    let secret = s.join("secret");
    std::fs::create_dir_all(&export).map_err(|e| e.to_string())?;
    targets::make_secret(&secret)?;
    let pid = std::process::id();
    let mut targets: Vec<Target> = Vec::new();
    targets.push(Target::dfs(
        "dfs_fuse",
        &export,
        &format!("shm:dfs-bench-{pid}"),
        &key,
        &secret,
        &s.join("mnt-dfs"),
        false,
    )?);
    if o.variants {
        targets.push(Target::dfs(
            "dfs_copy",
            &export,
            &format!("shm:dfs-bench-copy-{pid}"),
            &key,
            &secret,
            &s.join("mnt-copy"),
            true,
        )?);
        targets.push(Target::dfs(
            "dfs_tcp",
            &export,
            "tcp:127.0.0.1:0",
            &key,
            &secret,
            &s.join("mnt-tcp"),
            false,
        )?);
    }
    targets.push(Target::dir("local", export.join("dfs-bench-local"))?);
    targets.push(Target::memfs("fuse_ceiling", &s.join("mnt-memfs"))?);
    if o.with_sshfs {
        targets.push(Target::sshfs("sshfs", &export, &s.join("mnt-sshfs"), s)?);
    }
    for (name, path) in &o.extra {
        targets.push(Target::dir(name, path.join(format!("dfs-bench-{pid}")))?);
    }
    // Each target works in its own directory: the DFS mounts share one export.
    for t in &mut targets {
        t.dir = t.dir.join(&t.name);
        std::fs::create_dir_all(&t.dir).map_err(|e| format!("{}: {e}", t.dir.display()))?;
    }
    let bar = if o.progress {
        indicatif::ProgressBar::new((o.rounds * workloads.len() * targets.len()) as u64)
    } else {
        indicatif::ProgressBar::hidden()
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    for t in &targets {
        bar.set_message(format!("preparing {}", t.name));
        workloads::prepare(&t.dir, &o.params)
            .map_err(|e| format!("{}: preparing {}: {e}", t.name, t.dir.display()))?;
    }
    let mut figures: BTreeMap<(String, String), Vec<f64>> = BTreeMap::new();
    let mut copies: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for round in 0..o.rounds {
        for w in &workloads {
            // Rotate the order each round so no target always goes first.
            for i in 0..targets.len() {
                let t = &targets[(i + round) % targets.len()];
                bar.set_message(format!("round {} {} {}", round + 1, w.key(), t.name));
                let before = counters(t);
                let (value, bytes) = workloads::run(*w, &t.dir, &o.params, round)
                    .map_err(|e| format!("{} on {}: {e}", w.key(), t.name))?;
                if let (Workload::SeqRead(_), Some(b), Some(a)) = (w, before, counters(t)) {
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
                bar.inc(1);
            }
        }
    }
    bar.finish_and_clear();
    let names: Vec<String> = targets.iter().map(|t| t.name.clone()).collect();
    drop(targets);
    let _ = std::fs::remove_dir_all(export.join("dfs-bench-local"));
    Ok(Report::new(o, &workloads, &names, figures, copies))
}

/// Bytes copied by software so far, in this process (the mount) and in the target's server.
fn counters(t: &Target) -> Option<u64> {
    let c = t.client.as_ref()?;
    let server = c.server_stats().ok()?;
    Some(vmmc_sockets::Counters::now().bytes_copied + server.copied)
}
