//! `dfs`: mount and unmount vmmc-dfs exports. Installed as `mount.dfs` too (a symlink, see
//! `dfs install-helper`), so that `mount -t dfs ADDR DIR` and /etc/fstab lines work.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use dfs_client::mount::{self, MountOptions};

mod run;

/// vmmc-dfs: a file system whose blocks move between machines without copies.
#[derive(Parser, Debug)]
#[command(name = "dfs", version)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
    /// More logging (-v info, -vv debug); RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Mount a server's export (FUSE). Runs in the background unless --foreground.
    ///
    /// Mount options (-o, comma separated): ro, rw, cache_timeout=SECS (how long the kernel
    /// caches attributes and names while the server tells this mount of every change, default
    /// 60; 0 asks for no such notices), attr_timeout=SECS and entry_timeout=SECS (the cache
    /// times without notices, default 1), timeout=SECS (how long a call waits for the server,
    /// also across its restart, default 30; then ENOTCONN), secret=FILE, threads=N (default 4),
    /// readahead=KIB (default 4096, so sequential reads travel in 1 MiB requests, several at
    /// a time), passthrough (the default) or nopassthrough (whether, with a server on this
    /// host, the kernel reads files opened read-only from the server's page cache itself),
    /// allow_other (the default for root) or owner_only, nosuid, nodev, noexec, noatime, sync,
    /// dirsync; fstab's defaults, auto,
    /// noauto, user, _netdev and nofail are accepted and ignored.
    Mount {
        /// The server: shm:NAME on this host, tcp:HOST:PORT across hosts.
        addr: String,
        /// An existing directory to mount on.
        mountpoint: PathBuf,
        /// The shared secret's file, if the server has one.
        #[arg(long, value_name = "FILE")]
        secret: Option<PathBuf>,
        /// Mount options (see above).
        #[arg(short = 'o', value_name = "OPTIONS")]
        options: Vec<String>,
        /// Stay in the foreground (logs to stderr; Ctrl-C unmounts).
        #[arg(long, short = 'f')]
        foreground: bool,
        /// Where the background daemon logs (default /run/dfs/MOUNTPOINT.log for root).
        #[arg(long, value_name = "FILE")]
        log: Option<PathBuf>,
    },
    /// Unmount a dfs mount (also one whose daemon died).
    Umount {
        /// The mount point.
        mountpoint: PathBuf,
        /// Detach it even while files are open there.
        #[arg(long, short = 'l')]
        lazy: bool,
    },
    /// Measure file throughput and metadata rates of the DFS next to its alternatives.
    ///
    /// Targets, run interleaved over --rounds: dfs_fuse (the DFS mounted through FUSE, shm
    /// backend, as mounted by default: reads pass through to the server's file), dfs_shim (the
    /// same server from a child process under `dfs run`'s preload library, no FUSE; left out
    /// if the library is not found), dfs_rings (mounted nopassthrough: reads through the
    /// rings, pointer path), dfs_copy (the rings with the copying socket calls), dfs_tcp (tcp
    /// backend), local (the export
    /// directory itself), fuse_ceiling (an in-memory FUSE file system: the most any FUSE file
    /// system gets here), sshfs (--with-sshfs: a throwaway sshd on 127.0.0.1), and any
    /// --target NAME=PATH. Servers and mounts run under --scratch; this program's directory
    /// must hold dfs-server. Root is needed for the mounts.
    ///
    /// Workloads: seq_write_{4k,128k,1m}, seq_read_{4k,128k,1m} (MB/s, a --size file),
    /// rand_read_4k and rand_write_4k (ops/s), create, stat and unlink of --files small files
    /// (ops/s), readdir of --dir-entries entries (entries/s). Caches: warm by default (FUSE
    /// targets re-read from their server at each open, the local file system from its page
    /// cache); --cold drops every cache before each read. Before each sequential or random
    /// read or write, the bench syncs, untimed, so that what the previous target wrote is not
    /// written back during the next one's measurement.
    ///
    /// Progress goes to stderr: on a terminal a bar with the elapsed time and what it is
    /// doing, otherwise one line per stage and per measurement. Ctrl-C (SIGINT), SIGTERM or
    /// SIGHUP stops a run cleanly: the current operation ends, the mounts are removed, the
    /// servers stopped, and the exit status is 128 + the signal (130, 143, 129).
    ///
    /// JSON (--json FILE) keys: config: size_bytes (bytes), rounds, files, dir_entries,
    /// random_ops (counts; random_ops per run), fsync and cold (booleans), workloads (the
    /// keys run), scratch (a path), commit (what the programs were built from, as `git
    /// describe --always --dirty` says; also under the table); targets (column order); results[]: workload, target,
    /// unit ("MB/s" = 10^6 bytes per second, "ops/s", "entries/s"), median, min, max and
    /// runs[] (one per round), all in that unit; ratios.WORKLOAD: "dfs_fuse/fuse_ceiling",
    /// "dfs_fuse/local", "dfs_fuse/sshfs", "passthrough/rings" (dfs_fuse over dfs_rings),
    /// "pointer/copy" (dfs_rings over dfs_copy),
    /// "dfs_tcp/dfs_fuse", "dfs_shim/local", "dfs_shim/dfs_fuse": ratios of medians (no
    /// unit), where both ran;
    /// copies_per_byte.TARGET: software copies per byte read sequentially, from the NIC
    /// counters of the mount and its server.
    Bench {
        /// Size of the sequential file (K, M, G suffixes).
        #[arg(long, default_value = "1G", value_parser = parse_size)]
        size: u64,
        /// Rounds (median and spread are over them).
        #[arg(long, default_value_t = 3)]
        rounds: usize,
        /// Small files for create, stat and unlink.
        #[arg(long, default_value_t = 1000)]
        files: usize,
        /// Entries in the large directory.
        #[arg(long, default_value_t = 10000)]
        dir_entries: usize,
        /// Random 4 KiB operations per run.
        #[arg(long, default_value_t = 20000)]
        random_ops: usize,
        /// Only these workloads (comma-separated keys or prefixes, e.g. seq_read,create).
        #[arg(long, value_delimiter = ',')]
        workloads: Vec<String>,
        /// fsync after writing (counted in the time).
        #[arg(long)]
        fsync: bool,
        /// Drop every cache before each read (needs root).
        #[arg(long)]
        cold: bool,
        /// Add sshfs over a throwaway sshd on 127.0.0.1 (needs sshfs and openssh-server).
        #[arg(long)]
        with_sshfs: bool,
        /// Leave out dfs_rings, dfs_copy and dfs_tcp.
        #[arg(long)]
        no_variants: bool,
        /// Another directory to measure, as NAME=PATH (repeatable).
        #[arg(long = "target", value_name = "NAME=PATH", value_parser = parse_target)]
        targets: Vec<(String, PathBuf)>,
        /// Write every figure and ratio as JSON.
        #[arg(long, value_name = "FILE")]
        json: Option<PathBuf>,
        /// Draw the figures (.svg or .png): a panel per workload, a bar per target with its
        /// median written on it, on a logarithmic axis in the workload's unit.
        #[arg(long, value_name = "FILE")]
        plot: Option<PathBuf>,
        /// Where exports and mounts go (removed afterwards unless it existed).
        #[arg(long, value_name = "DIR")]
        scratch: Option<PathBuf>,
    },
    /// Run a program with the DFS at ADDR under PREFIX, without a mount (LD_PRELOAD).
    ///
    /// The program and everything it starts see the server's files at PREFIX (say /dfs)
    /// through libkernel32_shim.so, found beside this program or in ../lib. No root, no
    /// /dev/fuse. It acts as the user who runs it. Exits with the program's status.
    Run {
        /// The shared secret's file, if the server has one (read by the library; the
        /// secret never goes in the environment).
        #[arg(long, value_name = "FILE")]
        secret: Option<PathBuf>,
        /// How long a call waits for a server that went away before it fails with
        /// ENOTCONN (seconds, default 30).
        #[arg(long, value_name = "SECS")]
        timeout: Option<f64>,
        /// Read every file through the rings. By default, a program reads files it opened
        /// read-only from descriptors that a server on this host lends (shm: only), one
        /// copy from the server's page cache and no request per read.
        #[arg(long)]
        no_lend: bool,
        /// The server: shm:NAME on this host, tcp:HOST:PORT across hosts.
        addr: String,
        /// Where the DFS appears to the program (an absolute path; need not exist).
        prefix: String,
        /// The program and its arguments (after --).
        #[arg(last = true, required = true, value_name = "COMMAND")]
        command: Vec<std::ffi::OsString>,
    },
    /// Install /sbin/mount.dfs (a copy of this program) so `mount -t dfs` and fstab work.
    InstallHelper {
        /// Where to put it.
        #[arg(long, default_value = "/sbin/mount.dfs")]
        path: PathBuf,
    },
}

fn default_log(mp: &Path) -> PathBuf {
    let name: String = std::path::absolute(mp)
        .unwrap_or_else(|_| mp.to_path_buf())
        .to_string_lossy()
        .trim_matches('/')
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let base = if nix::unistd::geteuid().is_root() {
        PathBuf::from("/run/dfs")
    } else {
        std::env::var_os("XDG_RUNTIME_DIR")
            .map(|d| PathBuf::from(d).join("dfs"))
            .unwrap_or_else(|| std::env::temp_dir().join(format!("dfs-{}", nix::unistd::geteuid())))
    };
    base.join(format!(
        "{}.log",
        if name.is_empty() { "root" } else { &name }
    ))
}

fn mount_cmd(
    addr: String,
    mountpoint: PathBuf,
    secret: Option<PathBuf>,
    options: Vec<String>,
    foreground: bool,
    log: Option<PathBuf>,
) -> Result<(), String> {
    let mut opts = MountOptions::default();
    for o in &options {
        opts.parse_into(o)?;
    }
    if secret.is_some() {
        opts.secret = secret.clone();
    }
    if foreground {
        return mount::run_foreground(&addr, &mountpoint, &opts);
    }
    mount::check_mountpoint(&mountpoint)?;
    let mut args = vec![
        "mount".to_string(),
        addr.clone(),
        mountpoint.to_string_lossy().into_owned(),
    ];
    if let Some(s) = &secret {
        args.push("--secret".into());
        args.push(s.to_string_lossy().into_owned());
    }
    for o in &options {
        args.push("-o".into());
        args.push(o.clone());
    }
    let log = log.unwrap_or_else(|| default_log(&mountpoint));
    mount::run_background(
        &args,
        &mountpoint,
        &log,
        opts.timeout.max(Duration::from_secs(10)),
    )?;
    println!(
        "{addr} mounted on {} (log: {}); stop with: dfs umount {}",
        mountpoint.display(),
        log.display(),
        mountpoint.display()
    );
    Ok(())
}

/// `mount.dfs SPEC DIR [-sfnv] [-o OPTIONS]`, as mount(8) calls it.
fn mount_helper(args: &[String]) -> Result<(), String> {
    let mut pos = Vec::new();
    let mut options = Vec::new();
    let mut fake = false;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "-o" => options.push(it.next().ok_or("-o needs options")?.clone()),
            s if s.starts_with("-o") => options.push(s[2..].to_string()),
            s if s.starts_with('-') && s.len() > 1 => fake |= s.contains('f'),
            _ => pos.push(a.clone()),
        }
    }
    let [spec, dir] = <[String; 2]>::try_from(pos)
        .map_err(|_| "usage: mount.dfs ADDR MOUNTPOINT [-sfnv] [-o OPTIONS]".to_string())?;
    if fake {
        return Ok(());
    }
    mount_cmd(spec, PathBuf::from(dir), None, options, false, None)
}

fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (num, mult) = match s.chars().last().map(|c| c.to_ascii_uppercase()) {
        Some('K') => (&s[..s.len() - 1], 1u64 << 10),
        Some('M') => (&s[..s.len() - 1], 1 << 20),
        Some('G') => (&s[..s.len() - 1], 1 << 30),
        _ => (s, 1),
    };
    num.parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
        .filter(|n| *n >= 4096)
        .ok_or_else(|| format!("{s}: a size of at least 4K, like 64M or 1G"))
}

fn parse_target(s: &str) -> Result<(String, PathBuf), String> {
    let (name, path) = s.split_once('=').ok_or_else(|| format!("{s}: NAME=PATH"))?;
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        return Err(format!(
            "{name:?}: a target name is letters, digits, _ and -"
        ));
    }
    Ok((name.to_string(), PathBuf::from(path)))
}

#[allow(clippy::too_many_arguments)]
fn bench_cmd(
    params: dfs_client::bench::Params,
    rounds: usize,
    workloads: Vec<String>,
    with_sshfs: bool,
    no_variants: bool,
    targets: Vec<(String, PathBuf)>,
    json: Option<PathBuf>,
    plot: Option<PathBuf>,
    scratch: Option<PathBuf>,
) -> Result<(), String> {
    let (scratch, made) = match scratch {
        Some(d) => (d.clone(), !d.exists()),
        None => (
            std::env::temp_dir().join(format!("dfs-bench-{}", std::process::id())),
            true,
        ),
    };
    let opts = dfs_client::bench::BenchOptions {
        params,
        rounds: rounds.max(1),
        only: workloads,
        with_sshfs,
        variants: !no_variants,
        extra: targets,
        scratch,
        remove_scratch: made,
        progress: if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
            dfs_client::bench::Progress::Bar
        } else {
            dfs_client::bench::Progress::Lines
        },
    };
    // Stopped by a signal: torn down by now; exit 128 + the signal, as a shell expects.
    let report = dfs_client::bench::run(&opts).inspect_err(|e| {
        if let Some(code) = dfs_client::bench::exit_code() {
            eprintln!("dfs bench: {e}");
            std::process::exit(code);
        }
    })?;
    print!("{}", report.table());
    if let Some(p) = json {
        report.write_json(&p)?;
        println!("figures: {}", p.display());
    }
    if let Some(p) = plot {
        report.write_plot(&p)?;
        println!("plot: {}", p.display());
    }
    Ok(())
}

/// Copies this program to `path` (a copy, not a link: it keeps working when the build it
/// came from moves or goes), through a temporary name so that a mount running meanwhile
/// never finds half a file.
fn install_helper(path: &Path) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    let plain = |e: std::io::Error| dfs_proto::errno::plain(&e);
    let exe = std::env::current_exe().map_err(plain)?;
    let tmp = path.with_extension("dfs-new");
    std::fs::copy(&exe, &tmp).map_err(|e| format!("{}: {}", tmp.display(), plain(e)))?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755))
        .and_then(|()| std::fs::rename(&tmp, path))
        .map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            format!("{}: {}", path.display(), plain(e))
        })?;
    println!("{} (a copy of {})", path.display(), exe.display());
    Ok(())
}

fn init_logging(verbose: u8) {
    let level = match verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    // fuser warns when it finds its mount already gone at the end, which is how every
    // `dfs umount` ends: said only at debug level. (Those are its only warnings there.)
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(format!("{level},fuser::session=error,fuser::mnt=error"))
    });
    // Colour codes only for a person at a terminal: a background mount's log is a file.
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

fn main() -> ExitCode {
    // The dfs_shim target of `dfs bench` runs its workloads in this program, preloaded.
    if let Some(code) = dfs_client::bench::shim_worker_main() {
        return code;
    }
    let argv: Vec<String> = std::env::args().collect();
    let invoked_as = argv
        .first()
        .map(|a| {
            Path::new(a)
                .file_name()
                .map(|f| f.to_string_lossy().into_owned())
                .unwrap_or_default()
        })
        .unwrap_or_default();
    let result = if invoked_as == "mount.dfs" {
        init_logging(0);
        mount_helper(&argv[1..])
    } else {
        let cli = Cli::parse();
        init_logging(cli.verbose);
        match cli.cmd {
            Cmd::Mount {
                addr,
                mountpoint,
                secret,
                options,
                foreground,
                log,
            } => mount_cmd(addr, mountpoint, secret, options, foreground, log),
            Cmd::Bench {
                size,
                rounds,
                files,
                dir_entries,
                random_ops,
                workloads,
                fsync,
                cold,
                with_sshfs,
                no_variants,
                targets,
                json,
                plot,
                scratch,
            } => bench_cmd(
                dfs_client::bench::Params {
                    size,
                    files,
                    dir_entries,
                    random_ops,
                    fsync,
                    cold,
                },
                rounds,
                workloads,
                with_sshfs,
                no_variants,
                targets,
                json,
                plot,
                scratch,
            ),
            Cmd::Umount { mountpoint, lazy } => {
                mount::umount(&mountpoint, lazy).map_err(|e| e.to_string())
            }
            Cmd::InstallHelper { path } => install_helper(&path),
            Cmd::Run {
                secret,
                timeout,
                no_lend,
                addr,
                prefix,
                command,
            } => match run::run_cmd(secret, timeout, !no_lend, addr, prefix, command) {
                Ok(code) => return ExitCode::from(code),
                Err(e) => Err(e),
            },
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("dfs: error: {e}");
            ExitCode::FAILURE
        }
    }
}
