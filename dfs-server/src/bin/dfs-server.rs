//! `dfs-server`: serve a directory to DFS clients.

use std::os::fd::AsFd;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use dfs_proto::auth::Secret;
use dfs_server::{load_or_create_key, Config, Server, Squash};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use vmmc_sockets::RingSize;

/// Serve a directory to vmmc-dfs clients.
///
/// Everything a client does stays beneath the export directory. Whose identity a request runs
/// as: on shm the kernel says who the client is; a client running as root (a mount serving
/// many users) acts for its callers, any other acts as itself. On tcp, callers' uids count
/// only from clients that proved --secret; without it every tcp client acts as nobody
/// (unless --trust-network). --squash then applies. Logs go to stderr; RUST_LOG
/// (e.g. RUST_LOG=dfs_server=debug) or -v sets how much.
#[derive(Parser, Debug)]
#[command(name = "dfs-server", version)]
struct Args {
    /// The directory to serve.
    #[arg(long, value_name = "DIR")]
    export: PathBuf,
    /// Where to listen: shm:NAME (clients on this host, zero-copy) or tcp:HOST:PORT.
    #[arg(long, value_name = "ADDR", default_value = "shm:dfs")]
    listen: String,
    /// A file holding the shared secret (at least 16 bytes); clients must prove they know
    /// it, by challenge and response. It never crosses the wire.
    #[arg(long, value_name = "FILE")]
    secret: Option<PathBuf>,
    /// Refuse every change with EROFS.
    #[arg(long)]
    read_only: bool,
    /// Map callers: root (uid 0 becomes nobody, the default), none (everyone as they
    /// are: each request runs with the caller's fsuid/fsgid), all (everyone is nobody).
    #[arg(long, value_name = "root|none|all", default_value = "root")]
    squash: Squash,
    /// On tcp without --secret, believe the uids clients claim. Only for a network where
    /// every host that can reach the port is trusted: anyone there may act as any user.
    #[arg(long)]
    trust_network: bool,
    /// Most connections at once; more wait their turn. Fewer if the descriptor limit
    /// (`ulimit -n`, raised to its hard limit at start) cannot carry them.
    #[arg(long, value_name = "N", default_value_t = dfs_server::server::MAX_CONNECTIONS)]
    max_connections: usize,
    /// Most connections from one local user (root excepted) or one remote address; more are
    /// refused.
    #[arg(long, value_name = "N", default_value_t = dfs_server::server::MAX_CONNECTIONS_PER_PEER)]
    max_connections_per_peer: usize,
    /// Where the key that makes file handles unforgeable is kept (created if missing).
    /// Keep it to keep clients' handles valid across restarts.
    #[arg(long, value_name = "FILE")]
    handle_key: Option<PathBuf>,
    /// Receive ring per connection, in bytes (a power of two, at least 2 MiB).
    #[arg(long, value_name = "BYTES", default_value_t = vmmc_sockets::DEFAULT_RING)]
    ring: u64,
    /// Move file data with the copying socket calls instead of the pointer API (for
    /// measuring what the copies cost; `dfs bench` uses it).
    #[arg(long, hide = true)]
    copy_path: bool,
    /// INSECURE, for measuring only: do not check that the file a handle names is still
    /// beneath the export. A client holding a directory that a local user moves out of the
    /// export could then read and write outside it (as NFS's no_subtree_check). The server
    /// warns at start-up.
    #[arg(long)]
    no_subtree_check: bool,
    /// Do not watch the export for what programs on this host change in it (fanotify). The
    /// server then cannot tell its clients of such changes, and they cache attributes and
    /// names for their short times (1 s) instead of a minute.
    #[arg(long)]
    no_watch: bool,
    /// On shm, do not lend read-only opens' descriptors to local mounts and `dfs run`
    /// programs: their reads then come through the rings instead of straight from this
    /// server's page cache (FUSE passthrough, `pread` of the lent descriptor).
    #[arg(long)]
    no_lend: bool,
    /// How long a connection spins for the next request before sleeping, in microseconds.
    #[arg(long, value_name = "MICROS", default_value_t = 50)]
    spin_us: u64,
    /// More logging (-v info, -vv debug, -vvv trace); RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count)]
    verbose: u8,
}

fn default_key_path() -> PathBuf {
    if nix::unistd::geteuid().is_root() {
        return PathBuf::from("/var/lib/dfs-server/handle.key");
    }
    let base = std::env::var_os("XDG_STATE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state")))
        .unwrap_or_else(|| PathBuf::from("."));
    base.join("dfs-server/handle.key")
}

fn run(args: Args) -> Result<(), String> {
    let secret = match &args.secret {
        None => None,
        Some(p) => {
            let bytes = std::fs::read(p).map_err(|e| {
                format!(
                    "cannot read the secret {}: {}",
                    p.display(),
                    dfs_proto::errno::plain(&e)
                )
            })?;
            Some(Secret::from_file_bytes(&bytes).map_err(|e| format!("{}: {e}", p.display()))?)
        }
    };
    let key_path = args.handle_key.clone().unwrap_or_else(default_key_path);
    let handle_key = load_or_create_key(&key_path).map_err(|e| {
        format!(
            "cannot keep the handle key at {}: {}",
            key_path.display(),
            dfs_proto::errno::plain(&e)
        )
    })?;
    let ring = RingSize::new(args.ring).ok_or_else(|| {
        format!(
            "--ring {}: not a power of two in the allowed range",
            args.ring
        )
    })?;
    // Signals arrive on a descriptor; every thread started later inherits the block.
    let mut mask = SigSet::empty();
    mask.add(Signal::SIGINT);
    mask.add(Signal::SIGTERM);
    mask.thread_block()
        .map_err(|e| format!("cannot block signals: {e}"))?;
    let signals =
        SignalFd::with_flags(&mask, SfdFlags::SFD_CLOEXEC).map_err(|e| format!("signalfd: {e}"))?;
    let config = Config {
        secret,
        read_only: args.read_only,
        squash: args.squash,
        ring,
        copy_path: args.copy_path,
        spin: std::time::Duration::from_micros(args.spin_us),
        trusted_network: args.trust_network,
        max_connections: args.max_connections,
        max_connections_per_peer: args.max_connections_per_peer,
        subtree_check: !args.no_subtree_check,
        watch: !args.no_watch,
        lend: !args.no_lend,
        ..Config::new(&args.export, &args.listen, handle_key)
    };
    let server = Server::bind(config).map_err(|e| e.to_string())?;
    tracing::info!(
        "serving {} on {}{}{}",
        args.export.display(),
        server.local_addr(),
        if args.read_only { " (read-only)" } else { "" },
        if server.stable_handles() {
            ""
        } else {
            " (handles do not survive a restart)"
        }
    );
    eprintln!(
        "dfs-server: serving {} on {}",
        args.export.display(),
        server.local_addr()
    );
    server.run(signals.as_fd()).map_err(|e| e.to_string())?;
    tracing::info!("stopped");
    Ok(())
}

fn main() -> ExitCode {
    let args = Args::parse();
    let level = match args.verbose {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    // Colour codes only for a person at a terminal: a daemon's log is a file.
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("dfs-server: error: {e}");
            ExitCode::FAILURE
        }
    }
}
