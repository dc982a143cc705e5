//! `dfs`: mount and unmount vmmc-dfs exports. Installed as `mount.dfs` too (a symlink, see
//! `dfs install-helper`), so that `mount -t dfs ADDR DIR` and /etc/fstab lines work.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use dfs_client::mount::{self, MountOptions};

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
    /// Mount options (-o, comma separated): ro, rw, attr_timeout=SECS and entry_timeout=SECS
    /// (kernel cache times, default 1), timeout=SECS (how long a call waits for the server,
    /// also across its restart, default 30; then ENOTCONN), secret=FILE, threads=N (default 4),
    /// readahead=KIB (default 1024, so sequential reads travel in 1 MiB requests),
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
    /// Install /sbin/mount.dfs (a symlink to this program) so `mount -t dfs` and fstab work.
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

fn init_logging(verbose: u8) {
    let level = match verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

fn main() -> ExitCode {
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
            Cmd::Umount { mountpoint, lazy } => {
                mount::umount(&mountpoint, lazy).map_err(|e| e.to_string())
            }
            Cmd::InstallHelper { path } => std::env::current_exe()
                .map_err(|e| e.to_string())
                .and_then(|exe| {
                    let _ = std::fs::remove_file(&path);
                    std::os::unix::fs::symlink(&exe, &path)
                        .map_err(|e| format!("{}: {e}", path.display()))?;
                    println!("{} -> {}", path.display(), exe.display());
                    Ok(())
                }),
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
