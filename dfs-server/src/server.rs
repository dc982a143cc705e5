//! The daemon: binds the listener, accepts clients, runs a thread per connection, stops on
//! request.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use dfs_proto::auth::Secret;
use dfs_proto::handle::FileHandle;
use dfs_proto::msg::{Body, Op};
use nix::fcntl::OFlag;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::eventfd::EventFd;
use vmmc_sockets::{PeerIdentity, RingSize, StreamOptions, VmmcListener};

use crate::creds::Squash;
use crate::fs::Fs;
use crate::handles::Handles;
use crate::notices::{Change, Notices};
use crate::opens::{OpenLimits, Opens, MAX_OPENS_PER_SESSION};
use crate::session;
use crate::watch::Watch;

/// Most connections served at once unless set (each has threads and descriptors); more
/// wait their turn.
pub const MAX_CONNECTIONS: usize = 1024;
/// Most connections from one peer (a local user other than root, or a remote address) unless
/// set; more are refused, so one user's idle connections cannot take everyone's turn.
pub const MAX_CONNECTIONS_PER_PEER: usize = 64;
/// Descriptors one connection costs the server (its ring export, the client's import of it,
/// the server's import of the client's ring, their watchers and events), measured with some
/// margin: what the connection limit is derived from when descriptors are scarce.
pub const FDS_PER_CONNECTION: usize = 16;
/// Descriptors kept for what requests need for a moment (resolving a handle, listing a
/// directory), unless the limit is tiny.
pub const FD_RESERVE: usize = 256;

/// How a server is set up.
#[derive(Clone, Debug)]
pub struct Config {
    /// The directory to serve; nothing outside it is ever reached.
    pub export: PathBuf,
    /// Where to listen (`shm:NAME` or `tcp:HOST:PORT`).
    pub listen: String,
    /// Clients must prove that they know this secret; `None` lets anyone in.
    pub secret: Option<Secret>,
    /// Refuse every change with `EROFS`.
    pub read_only: bool,
    /// Whose identity requests run with.
    pub squash: Squash,
    /// Key for the tags that make handles unforgeable; keep it across restarts for handles
    /// to survive them ([`load_or_create_key`]).
    pub handle_key: [u8; 32],
    /// Receive ring per connection (at least [`dfs_proto::frame::MAX_FRAME`]).
    pub ring: RingSize,
    /// Move file data with the copying socket calls instead of the pointer API: reads
    /// `pread` into a buffer that `write` copies into the ring, writes are `read` out of the
    /// ring first. Only for measuring what the copies cost (`dfs bench`).
    pub copy_path: bool,
    /// How long a connection thread spins for the next request before it sleeps. On two
    /// cores, longer spins steal the CPU the client needs (`dfs bench` measured 50 µs as the
    /// best of 0, 10, 50 and 500).
    pub spin: std::time::Duration,
    /// Refuse every handle whose file a local user moved out of the export (`ESTALE`; see
    /// [`crate::handles`]). Off only to measure what the check costs: it is not safe.
    pub subtree_check: bool,
    /// On tcp without a secret, honour the uids clients claim: only for a network where every
    /// host that can reach the port is trusted. Otherwise unauthenticated tcp clients act as
    /// nobody.
    pub trusted_network: bool,
    /// Most connections at once (fewer if the descriptor limit cannot carry them).
    pub max_connections: usize,
    /// Most connections from one peer: a local user other than root, or a remote address.
    pub max_connections_per_peer: usize,
    /// Watch the export for what local programs change ([`crate::watch`]), so that clients
    /// may cache for long. Off, clients keep their short cache times.
    pub watch: bool,
    /// On shm, lend read-only opens' descriptors to local peers whose requests run as
    /// themselves: root mounts, whose kernel then reads the files' pages itself (FUSE
    /// passthrough), and `dfs run`'s programs, which `pread` them (see [`dfs_proto::lend`]).
    pub lend: bool,
}

impl Config {
    /// A configuration with the defaults: no secret, read-write, root squashed, 4 MiB rings.
    pub fn new(
        export: impl Into<PathBuf>,
        listen: impl Into<String>,
        handle_key: [u8; 32],
    ) -> Config {
        Config {
            export: export.into(),
            listen: listen.into(),
            secret: None,
            read_only: false,
            squash: Squash::Root,
            handle_key,
            ring: RingSize::default(),
            copy_path: false,
            spin: StreamOptions::default().spin,
            subtree_check: true,
            trusted_network: false,
            max_connections: MAX_CONNECTIONS,
            max_connections_per_peer: MAX_CONNECTIONS_PER_PEER,
            watch: true,
            lend: true,
        }
    }
}

/// Why a server did not start. Each says what to fix in one line.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The export directory cannot be opened.
    #[error("cannot serve {path}: {source}")]
    Export {
        /// The directory.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The listen address is taken or invalid.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The address.
        addr: String,
        /// Why.
        source: io::Error,
    },
    /// The ring is too small for the largest message.
    #[error("a ring of {0} bytes cannot hold a whole message ({1} bytes)")]
    Ring(u64, usize),
    /// Something else at start-up.
    #[error("{0}")]
    Other(String),
}

/// What every connection thread shares.
#[derive(Debug)]
pub struct Shared {
    /// The file system.
    pub fs: Fs,
    /// The shared secret, if any.
    pub secret: Option<Secret>,
    /// The root's handle, sent in the welcome.
    pub root: FileHandle,
    /// Set when the server stops; connections notice within a quarter second.
    pub stop: AtomicBool,
    /// Use the copying socket calls for file data (see [`Config::copy_path`]).
    pub copy_path: bool,
    /// Honour claimed uids from unauthenticated tcp peers (see [`Config::trusted_network`]).
    pub trusted_network: bool,
    /// The subscribed clients, told what changes.
    pub notices: Notices,
    /// What programs on the server change in the export, if it can be watched.
    pub watch: Option<Watch>,
}

impl Shared {
    /// After a request succeeded: watches the directories it looked into, and tells the
    /// other clients what it changed.
    pub fn changed(&self, origin: &crate::opens::Session, op: &Op, body: &Body) {
        if let Some(w) = &self.watch {
            let was = w.complete();
            // A new directory is watched at once: its maker knows it empty and may answer
            // for its names without asking, until told otherwise.
            let made = match (op, body) {
                (Op::Mkdir { .. }, Body::Entry(e)) => Some(e),
                _ => None,
            };
            let dirs = crate::notices::dirs_of(op);
            let all = dirs.into_iter().flatten().chain(made.map(|e| &e.handle));
            let mut complete = true;
            for dir in all {
                complete &= w.watch_dir(&self.fs.handles, dir);
            }
            if !complete && was {
                // Subscribed clients were promised that local changes are told: they
                // subscribe again and hear that they are not.
                self.notices.close_all();
            }
            if let Some(e) = made {
                // Changed between its making and its mark: nobody was told, so tell everyone.
                let now = self
                    .fs
                    .handles
                    .resolve(&e.handle)
                    .ok()
                    .and_then(|fd| nix::sys::stat::fstat(std::os::fd::AsFd::as_fd(&*fd)).ok());
                if now.is_some_and(|st| {
                    (st.st_mtime, st.st_mtime_nsec)
                        != (e.attr.mtime.secs, i64::from(e.attr.mtime.nanos))
                }) {
                    let mut c = Change::default();
                    c.notice.inodes.push(e.attr.ino);
                    self.notices.publish(None, &c);
                }
            }
        }
        if op.mutates() {
            if let Some(change) = Change::of(op, body) {
                self.notices.publish(Some(origin), &change);
            }
        }
    }

    /// Whether every change made in the export is noticed, local programs' included.
    pub fn sees_local_changes(&self) -> bool {
        self.watch.as_ref().is_some_and(Watch::complete)
    }
}

/// A bound server, ready to run.
#[derive(Debug)]
pub struct Server {
    listener: VmmcListener,
    shared: Arc<Shared>,
    /// Where local peers borrow descriptors (shm only, unless turned off).
    lend: Option<(std::os::unix::net::UnixListener, Arc<crate::lend::Lending>)>,
}

/// Opens the export root for reading, not `O_PATH`: `open_by_handle_at` wants a real
/// descriptor on the file system to resolve handles against.
fn open_export(path: &Path) -> Result<OwnedFd, StartError> {
    let err = |source| StartError::Export {
        path: path.to_path_buf(),
        source,
    };
    let fd = nix::fcntl::open(
        path,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(|e| match e {
        nix::Error::ENOTDIR => err(io::Error::other("not a directory")),
        nix::Error::ENOENT => err(io::Error::other("no such directory")),
        e => err(e.into()),
    })?;
    Ok(fd)
}

impl Server {
    /// Opens the export and binds the listener. Sets the process umask to 0: clients apply
    /// their own umask, and the server must create files with exactly the mode asked for.
    pub fn bind(config: Config) -> Result<Server, StartError> {
        if (config.ring.get() as usize) < dfs_proto::frame::MAX_FRAME {
            return Err(StartError::Ring(
                config.ring.get(),
                dfs_proto::frame::MAX_FRAME,
            ));
        }
        let tcp = config.listen.starts_with("tcp:");
        if tcp
            && config.secret.is_none()
            && config.squash == Squash::None
            && !config.trusted_network
        {
            return Err(StartError::Other(format!(
                "refusing --squash none on {} without --secret: anyone who can reach the port could act as any user, root included. Give the clients a --secret, or add --trust-network if every host that can reach the port is trusted",
                config.listen
            )));
        }
        let root_fd = open_export(&config.export)?;
        let budget = budget(&config);
        let options = crate::handles::HandleOptions::new(config.subtree_check);
        let handles =
            Handles::new(root_fd, config.handle_key, options).map_err(|e| StartError::Export {
                path: config.export.clone(),
                source: e,
            })?;
        let can_switch = nix::unistd::geteuid().is_root();
        if !can_switch && config.squash != Squash::All {
            tracing::warn!("not running as root: every request runs as this server's user, whatever --squash says");
        }
        let root_dup = handles
            .root()
            .try_clone_to_owned()
            .map_err(|e| StartError::Other(e.to_string()))?;
        let root = handles.mint(&root_dup).map_err(|e| StartError::Export {
            path: config.export.clone(),
            source: e.into(),
        })?;
        nix::sys::stat::umask(nix::sys::stat::Mode::empty());
        let watch = match config.watch.then(Watch::new) {
            None => None,
            Some(Ok(w)) => Some(w),
            Some(Err(e)) => {
                tracing::warn!(
                    "cannot watch the export for what local programs change ({}): clients cache for their short times only",
                    dfs_proto::errno::plain(&e)
                );
                None
            }
        };
        let opts = StreamOptions {
            ring: config.ring,
            spin: config.spin,
            max_connections: budget.connections,
            max_connections_per_peer: budget.per_peer,
            // Clients' rings as large as our own, or the default cap if that is larger.
            max_peer_ring: RingSize::at_least(
                config.ring.get().max(vmmc_sockets::DEFAULT_MAX_PEER_RING),
            ),
            ..StreamOptions::default()
        };
        let listener =
            VmmcListener::bind_with(&config.listen, opts).map_err(|source| StartError::Listen {
                addr: config.listen.clone(),
                source,
            })?;
        if config.secret.is_none() {
            if !tcp {
                tracing::warn!(
                    "no --secret: any local user may connect to {} (each acts as itself)",
                    listener.local_addr()
                );
            } else if config.trusted_network {
                tracing::warn!(
                    "no --secret and --trust-network: anyone who can reach {} may act as any user but root",
                    listener.local_addr()
                );
            } else {
                tracing::warn!(
                    "no --secret: anyone who can reach {} may connect, and acts as nobody",
                    listener.local_addr()
                );
            }
        }
        let shared = Arc::new(Shared {
            fs: Fs {
                handles,
                opens: Opens::with_limits(budget.opens),
                read_only: config.read_only,
                squash: config.squash,
                can_switch,
            },
            secret: config.secret,
            root,
            stop: AtomicBool::new(false),
            copy_path: config.copy_path,
            trusted_network: config.trusted_network,
            notices: Notices::default(),
            watch,
        });
        if let Some(w) = &shared.watch {
            w.watch_dir(&shared.fs.handles, &shared.root);
        }
        let lend = match listener.local_addr().to_string().strip_prefix("shm:") {
            Some(name) if config.lend => match crate::lend::listen(name) {
                Ok(l) => Some((l, Arc::default())),
                Err(e) => {
                    tracing::warn!(
                        "cannot lend descriptors to local mounts ({e}): their reads go through the rings"
                    );
                    None
                }
            },
            _ => None,
        };
        Ok(Server {
            listener,
            shared,
            lend,
        })
    }

    /// The address clients connect to (with the real port for `tcp:…:0`).
    pub fn local_addr(&self) -> String {
        self.listener.local_addr().to_string()
    }

    /// Whether file handles survive a restart of the server.
    pub fn stable_handles(&self) -> bool {
        self.shared.fs.handles.is_stable()
    }

    /// Open files, across all clients.
    pub fn open_files(&self) -> usize {
        self.shared.fs.opens.len()
    }

    /// Serves until `stop` becomes readable (a signalfd, an eventfd), then closes every
    /// connection and returns.
    pub fn run(&self, stop: BorrowedFd<'_>) -> io::Result<()> {
        self.listener.set_nonblocking(true)?;
        let mut conns: Vec<JoinHandle<()>> = Vec::new();
        let watcher = match &self.shared.watch {
            Some(_) => {
                let shared = self.shared.clone();
                Some(
                    std::thread::Builder::new()
                        .name("dfs-watch".into())
                        .spawn(move || {
                            if let Some(w) = &shared.watch {
                                w.run(&shared.fs.handles, &shared.notices, &shared.stop);
                            }
                        })?,
                )
            }
            None => None,
        };
        let result = loop {
            let mut fds = vec![
                PollFd::new(self.listener.notify_fd(), PollFlags::POLLIN),
                PollFd::new(stop, PollFlags::POLLIN),
            ];
            if let Some((l, _)) = &self.lend {
                fds.push(PollFd::new(l.as_fd(), PollFlags::POLLIN));
            }
            match poll(&mut fds, PollTimeout::from(1000u16)) {
                Ok(_) | Err(nix::Error::EINTR) => {}
                Err(e) => break Err(e.into()),
            }
            if fds[1].revents().is_some_and(|r| !r.is_empty()) {
                break Ok(());
            }
            if let Some((l, lending)) = &self.lend {
                lending.accept_all(l, &self.shared);
            }
            conns.retain(|t| !t.is_finished());
            loop {
                // The listener admits no more than its limits allow; each one admitted runs.
                match self.listener.accept() {
                    Ok((stream, peer)) => {
                        let shared = self.shared.clone();
                        let who = describe(&peer);
                        tracing::info!("client {who} connected");
                        let spawned =
                            std::thread::Builder::new()
                                .name("dfs-conn".into())
                                .spawn(move || {
                                    let end = session::serve(stream, shared, peer);
                                    match end {
                                        session::End::Closed
                                        | session::End::Stopping
                                        | session::End::Resubscribe => {
                                            tracing::info!("client {who}: {end}")
                                        }
                                        _ => tracing::warn!("client {who}: {end}"),
                                    }
                                });
                        match spawned {
                            Ok(t) => conns.push(t),
                            Err(e) => tracing::error!("cannot start a thread for a client: {e}"),
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => {
                        tracing::error!("accept failed: {e}");
                        break;
                    }
                }
            }
        };
        self.shared.stop.store(true, Ordering::Relaxed);
        for t in conns.into_iter().chain(watcher) {
            let _ = t.join();
        }
        result
    }

    /// Runs the server on a thread of its own, for tests and embedding.
    pub fn spawn(self) -> io::Result<Running> {
        let stop = Arc::new(EventFd::new()?);
        let addr = self.local_addr();
        let stop2 = stop.clone();
        let thread = std::thread::Builder::new()
            .name("dfs-server".into())
            .spawn(move || {
                let r = self.run(stop2.as_fd());
                drop(self);
                r
            })?;
        Ok(Running {
            addr,
            stop,
            thread: Some(thread),
        })
    }
}

fn describe(peer: &PeerIdentity) -> String {
    peer.to_string()
}

/// Raises the soft descriptor limit to the hard one, so that the limit an operator set is
/// the one that counts; returns it.
fn raise_fd_limit() -> usize {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) => {
            if soft < hard && setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok() {
                return usize::try_from(hard).unwrap_or(usize::MAX);
            }
            usize::try_from(soft).unwrap_or(usize::MAX)
        }
        Err(_) => 1024,
    }
}

/// What the descriptor limit allows: connections in all and per peer, and open files.
#[derive(Debug)]
struct Budget {
    connections: usize,
    per_peer: usize,
    opens: OpenLimits,
}

/// Splits the descriptors (after raising the soft limit to the hard one): a share for what
/// requests need for a moment (resolving a handle, listing a directory), half the rest at
/// most for connections, whatever connections cannot take for open files, of which one peer
/// (root excepted) may hold a quarter. So a flood of connections or of opens from one user
/// runs into its own limit while everyone else can still connect and open files.
fn budget(config: &Config) -> Budget {
    let fds = raise_fd_limit();
    let transient = FD_RESERVE.min(fds / 4).max(fds / 32);
    let usable = fds.saturating_sub(transient);
    let connections = config
        .max_connections
        .clamp(1, (usable / 2 / FDS_PER_CONNECTION).max(4));
    let per_peer = config
        .max_connections_per_peer
        .clamp(1, (connections / 4).max(2));
    let open_total = usable
        .saturating_sub(connections * FDS_PER_CONNECTION)
        .max(16);
    let opens = OpenLimits {
        total: open_total,
        per_peer: (open_total / 4).max(8),
        per_session: MAX_OPENS_PER_SESSION.min((open_total / 4).max(8)),
    };
    tracing::info!(
        "descriptor limit {fds}: at most {connections} connections ({per_peer} per peer), {open_total} open files ({} per peer)",
        opens.per_peer
    );
    Budget {
        connections,
        per_peer,
        opens,
    }
}

/// A server running on its own thread; dropping it stops it.
#[derive(Debug)]
pub struct Running {
    addr: String,
    stop: Arc<EventFd>,
    thread: Option<JoinHandle<io::Result<()>>>,
}

impl Running {
    /// The address clients connect to.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Stops the server and waits until every connection is closed and the address is free.
    pub fn stop(mut self) -> io::Result<()> {
        self.stop_and_join()
    }

    fn stop_and_join(&mut self) -> io::Result<()> {
        let _ = self.stop.write(1);
        match self.thread.take() {
            Some(t) => t
                .join()
                .unwrap_or_else(|_| Err(io::Error::other("the server thread panicked"))),
            None => Ok(()),
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.stop_and_join();
    }
}

/// Reads the handle key from `path`, or makes a new random one there (mode 0600, directories
/// created as needed). Keeping the file keeps handles valid across restarts.
pub fn load_or_create_key(path: &Path) -> io::Result<[u8; 32]> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    match std::fs::read(path) {
        Ok(bytes) => bytes.try_into().map_err(|b: Vec<u8>| {
            io::Error::other(format!(
                "{}: a handle key is 32 bytes, this file has {}",
                path.display(),
                b.len()
            ))
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            let mut key = [0u8; 32];
            getrandom::fill(&mut key).map_err(io::Error::other)?;
            let tmp = path.with_extension("tmp");
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)?;
            f.write_all(&key)?;
            f.sync_all()?;
            std::fs::rename(&tmp, path)?;
            Ok(key)
        }
        Err(e) => Err(e),
    }
}
