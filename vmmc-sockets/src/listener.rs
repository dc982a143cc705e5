//! Listening, accepting and connecting.
//!
//! A listener is a NIC endpoint whose first export (id 1) is a one-page *accept region*.
//! Connecting, the client first dials the listener's endpoint and learns from the kernel who
//! listens there (its pid and uid on shm). Only then does it export its receive ring, to that
//! process alone and only with a fresh random key, and import the accept region with a
//! greeting that says where the ring is and what key it needs. The listener imports the
//! client's ring with that key, checks the ring belongs to the process that greeted, exports
//! a ring of its own restricted the same way (the client's process, a key of its own), and
//! writes its id and key into the client's header. The client then imports the listener's
//! ring. From there on each side deposits into the other's ring; each import doubles as a
//! liveness link.
//!
//! So a ring is importable only by the peer its connection is with, on both backends: on
//! shm the kernel vouches for the process, on tcp (where an address says nothing about which
//! local user sent a packet) the key does, and it travels only where that peer alone reads it.
//!
//! Admission runs on worker threads, a few per peer at most and peers taken in turn, so a peer
//! whose requests are slow to serve (a port that never answers) delays only its own.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::net::{IpAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, Weak};

use std::time::{Duration, Instant};

use vmmc_nic::{
    poll_readable, Access, Endpoint, EndpointOptions, Event, Export, ExportId, Greeting, Import,
    ImportKey, ImportOptions, NodeAddr, Notify, PeerIdentity, PeerMatch, Permissions, ShmName,
    TcpAddr, WaitHandle, KEY_LEN,
};

use crate::greeting::{ClientEndpoint, ConnectRequest};
use crate::layout::*;
use crate::options::StreamOptions;
use crate::stream::{nic_error, Parts, VmmcStream};

/// The accept region's export id: the first export of the listener's endpoint.
const ACCEPT_EXPORT_ID: u32 = 1;
/// How long the listener gives a client on another host to be importable during accept.
const ADMIT_TIMEOUT: Duration = Duration::from_secs(5);
/// The same for a client on this host (shm, or tcp over loopback), which answers in
/// microseconds unless it means not to.
const ADMIT_TIMEOUT_LOCAL: Duration = Duration::from_secs(1);
/// Admissions in progress at once, over all peers.
const ADMITTERS: usize = 16;
/// Admissions in progress at once for one peer: a peer whose rings cannot be reached holds
/// at most this many workers, for at most [`ADMIT_TIMEOUT`] each.
const ADMITTING_PER_PEER: usize = 2;

/// Connections admitted but not yet accepted, beyond which requests wait for `accept`.
pub const BACKLOG: usize = 128;
/// How often the admission thread looks for a closing listener.
const ADMIT_SLICE: Duration = Duration::from_millis(100);

/// Who a per-peer limit or turn belongs to: a local user, or a remote address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum PeerKey {
    Uid(u32),
    Ip(IpAddr),
}

impl PeerKey {
    fn of(peer: &PeerIdentity) -> PeerKey {
        match peer {
            PeerIdentity::Local { uid, .. } => PeerKey::Uid(*uid),
            PeerIdentity::Remote(sa) => PeerKey::Ip(match sa.ip() {
                IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(sa.ip(), IpAddr::V4),
                ip => ip,
            }),
        }
    }

    /// Local root could exhaust the machine anyway; a mount daemon serving every user runs
    /// as root and must not be limited like one user.
    fn limited(self) -> bool {
        self != PeerKey::Uid(0)
    }
}

/// A listening socket over VMMC, shaped like `std::net::TcpListener`.
///
/// Like a kernel listener it completes connections in the background: threads admit requests
/// as they arrive (up to [`BACKLOG`] of them waiting), so `connect` returns without waiting
/// for `accept`. Dropping the listener stops admitting; connections already made live on.
pub struct VmmcListener {
    shared: Arc<ListenShared>,
    admitter: Option<std::thread::JoinHandle<()>>,
    nonblocking: AtomicBool,
}

struct ListenShared {
    endpoint: Arc<Endpoint>,
    accept_region: Export,
    opts: StreamOptions,
    queue: Mutex<VecDeque<(VmmcStream, PeerIdentity)>>,
    ready: Condvar,
    ready_fd: Event,
    closing: AtomicBool,
    /// Live connections, for the limits.
    live: Mutex<Live>,
    /// Written by an admission worker when it finishes, so the coordinator starts the next.
    done_fd: Event,
}

#[derive(Default)]
struct Live {
    total: usize,
    by_peer: HashMap<PeerKey, usize>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// One live connection in its listener's counts; dropping it (with the stream) frees the
/// place.
pub(crate) struct Ticket {
    listener: Weak<ListenShared>,
    peer: PeerKey,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let Some(l) = self.listener.upgrade() else {
            return;
        };
        {
            let mut live = lock(&l.live);
            live.total = live.total.saturating_sub(1);
            if let Some(n) = live.by_peer.get_mut(&self.peer) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    live.by_peer.remove(&self.peer);
                }
            }
        }
        // A place freed may let a waiting request in.
        l.done_fd.signal();
    }
}

impl std::fmt::Debug for VmmcListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VmmcListener")
            .field("addr", self.shared.endpoint.addr())
            .finish()
    }
}

impl VmmcListener {
    /// Listens at `addr` (`shm:NAME` or `tcp:HOST:PORT`; port 0 picks one).
    pub fn bind(addr: &str) -> io::Result<VmmcListener> {
        VmmcListener::bind_with(addr, StreamOptions::default())
    }

    /// Listens with the options every accepted stream gets, and the listener's limits.
    pub fn bind_with(addr: &str, opts: StreamOptions) -> io::Result<VmmcListener> {
        let addr: NodeAddr = addr.parse().map_err(nic_error)?;
        // Every connection is one import of its ring here, and each request in flight one
        // import of the accept region: room for as many requests as connections, so that
        // the endpoint's limits follow the listener's (and its owner's descriptor budget).
        let nic = EndpointOptions {
            max_connections: opts
                .max_connections
                .saturating_mul(2)
                .saturating_add(ADMITTERS + 16),
            max_connections_per_peer: opts
                .max_connections_per_peer
                .saturating_mul(2)
                .saturating_add(ADMITTING_PER_PEER + 4),
        };
        let endpoint = Endpoint::bind_with(&addr, nic).map_err(nic_error)?;
        // Nothing is ever deposited into or read from the accept region: importing it only
        // carries a greeting. Fetch is the least right there is.
        let accept_region = endpoint
            .export(
                4096,
                Permissions::none().allow(Access::FETCH, PeerMatch::Any),
            )
            .map_err(nic_error)?;
        if accept_region.id().get() != ACCEPT_EXPORT_ID {
            return Err(io::Error::other(
                "the accept region is not the endpoint's first export",
            ));
        }
        let shared = Arc::new(ListenShared {
            endpoint: Arc::new(endpoint),
            accept_region,
            opts,
            queue: Mutex::new(VecDeque::new()),
            ready: Condvar::new(),
            ready_fd: Event::new()?,
            closing: AtomicBool::new(false),
            live: Mutex::new(Live::default()),
            done_fd: Event::new()?,
        });
        let admitter = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name("vmmc-admit".into())
                .spawn(move || shared.admit_loop())?
        };
        Ok(VmmcListener {
            shared,
            admitter: Some(admitter),
            nonblocking: AtomicBool::new(false),
        })
    }

    /// The address clients connect to (with the real port for `tcp:...:0`).
    pub fn local_addr(&self) -> &NodeAddr {
        self.shared.endpoint.addr()
    }

    /// Makes `accept` return `WouldBlock` instead of waiting.
    pub fn set_nonblocking(&self, on: bool) -> io::Result<()> {
        self.nonblocking.store(on, Ordering::Relaxed);
        Ok(())
    }

    /// The fd that is readable while a connection waits to be accepted.
    pub fn notify_fd(&self) -> WaitHandle<'_> {
        self.shared.ready_fd.fd()
    }

    /// Connections admitted and waiting for `accept`.
    pub fn pending(&self) -> usize {
        lock(&self.shared.queue).len()
    }

    /// Connections of this listener alive right now (waiting for `accept` or accepted and
    /// not yet dropped).
    pub fn live_connections(&self) -> usize {
        lock(&self.shared.live).total
    }

    /// Waits for a connection and returns it with the client's kernel-reported identity.
    pub fn accept(&self) -> io::Result<(VmmcStream, PeerIdentity)> {
        let mut q = lock(&self.shared.queue);
        loop {
            if let Some(conn) = q.pop_front() {
                if q.is_empty() {
                    let _ = self.shared.ready_fd.take();
                }
                return Ok(conn);
            }
            if self.nonblocking.load(Ordering::Relaxed) {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            q = self.shared.ready.wait(q).unwrap_or_else(|p| p.into_inner());
        }
    }
}

impl Drop for VmmcListener {
    fn drop(&mut self) {
        self.shared.closing.store(true, Ordering::Release);
        self.shared.done_fd.signal();
        if let Some(t) = self.admitter.take() {
            let _ = t.join();
        }
    }
}

/// Requests waiting for a worker, per peer, and the order peers take turns in.
#[derive(Default)]
struct Waiting {
    by_peer: HashMap<PeerKey, VecDeque<Greeting>>,
    turns: VecDeque<PeerKey>,
    busy: HashMap<PeerKey, usize>,
    in_flight: usize,
}

impl Waiting {
    fn push(&mut self, g: Greeting) {
        let key = PeerKey::of(&g.peer);
        let q = self.by_peer.entry(key).or_default();
        if q.is_empty() && !self.turns.contains(&key) {
            self.turns.push_back(key);
        }
        q.push_back(g);
    }

    /// The next request whose peer may start one more admission, peers in turn.
    fn next(&mut self) -> Option<Greeting> {
        for _ in 0..self.turns.len() {
            let key = self.turns.pop_front()?;
            let busy = self.busy.get(&key).copied().unwrap_or(0);
            let Some(q) = self.by_peer.get_mut(&key) else {
                continue;
            };
            if busy >= ADMITTING_PER_PEER {
                self.turns.push_back(key);
                continue;
            }
            let g = q.pop_front();
            if q.is_empty() {
                self.by_peer.remove(&key);
            } else {
                self.turns.push_back(key);
            }
            if g.is_some() {
                *self.busy.entry(key).or_default() += 1;
                self.in_flight += 1;
            }
            return g;
        }
        None
    }

    fn finished(&mut self, key: PeerKey) {
        self.in_flight = self.in_flight.saturating_sub(1);
        if let Some(n) = self.busy.get_mut(&key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.busy.remove(&key);
            }
        }
    }
}

impl ListenShared {
    fn admit_loop(self: &Arc<Self>) {
        let waiting = Arc::new(Mutex::new(Waiting::default()));
        while !self.closing.load(Ordering::Acquire) {
            while let Some(g) = self.accept_region.take_greeting() {
                lock(&waiting).push(g);
            }
            self.start_admissions(&waiting);
            let fds = [self.accept_region.notify_fd(), self.done_fd.fd()];
            match poll_readable(&fds, Some(ADMIT_SLICE)) {
                Ok(_) => {}
                Err(e) => {
                    tracing::error!(
                        "vmmc listener {}: stops admitting: {e}",
                        self.endpoint.addr()
                    );
                    return;
                }
            }
            let _ = self.done_fd.take();
            let _ = self.accept_region.try_wait();
        }
    }

    /// Starts as many admissions as the limits allow.
    fn start_admissions(self: &Arc<Self>, waiting: &Arc<Mutex<Waiting>>) {
        loop {
            let g = {
                let mut w = lock(waiting);
                let backlog = lock(&self.queue).len();
                let live = lock(&self.live).total;
                // At the connection limit, requests wait (their importers' timeouts bound
                // how long): a place may free up.
                if w.in_flight >= ADMITTERS
                    || backlog + w.in_flight >= BACKLOG
                    || live + w.in_flight >= self.opts.max_connections
                {
                    return;
                }
                match w.next() {
                    Some(g) => g,
                    None => return,
                }
            };
            let key = PeerKey::of(&g.peer);
            let me = self.clone();
            let w = waiting.clone();
            let spawned = std::thread::Builder::new()
                .name("vmmc-admit-one".into())
                .spawn(move || {
                    me.admit_one(g);
                    lock(&w).finished(key);
                    me.done_fd.signal();
                });
            if let Err(e) = spawned {
                tracing::warn!(
                    "vmmc listener {}: cannot start an admission: {e}",
                    self.endpoint.addr()
                );
                lock(waiting).finished(key);
                return;
            }
        }
    }

    fn admit_one(self: &Arc<Self>, g: Greeting) {
        let who = g.peer.clone();
        match self.admit(&g) {
            Ok(stream) => {
                let mut q = lock(&self.queue);
                q.push_back((stream, who));
                self.ready_fd.signal();
                self.ready.notify_one();
            }
            Err(e) => tracing::warn!(
                "vmmc listener {}: dropped a connection request from {who}: {e}",
                self.endpoint.addr()
            ),
        }
        // Dropping the greeting ends the client's import of the accept region: the client
        // no longer needs it, and a peer cannot hold such imports open by the hundred.
        drop(g);
    }

    /// Counts a connection from `key`, or says it is over its limit.
    fn take_place(self: &Arc<Self>, key: PeerKey) -> Option<Ticket> {
        let mut live = lock(&self.live);
        let n = live.by_peer.get(&key).copied().unwrap_or(0);
        if key.limited() && n >= self.opts.max_connections_per_peer {
            return None;
        }
        live.total += 1;
        *live.by_peer.entry(key).or_default() += 1;
        Some(Ticket {
            listener: Arc::downgrade(self),
            peer: key,
        })
    }

    /// Turns one greeting into a connection, or explains why not.
    fn admit(self: &Arc<Self>, g: &Greeting) -> io::Result<VmmcStream> {
        let bad = |why: String| io::Error::new(io::ErrorKind::InvalidData, why);
        let req = ConnectRequest::parse(&g.bytes).map_err(bad)?;
        if req.ring.get() > self.opts.max_peer_ring.get() {
            return Err(bad(format!(
                "the client announces a ring of {} bytes; this listener allows at most {}",
                req.ring.get(),
                self.opts.max_peer_ring.get()
            )));
        }
        let client: NodeAddr = match (&req.endpoint, &g.peer) {
            (ClientEndpoint::Shm(name), PeerIdentity::Local { .. }) => NodeAddr::Shm(name.clone()),
            (ClientEndpoint::TcpPort(port), PeerIdentity::Remote(sa)) => {
                NodeAddr::Tcp(TcpAddr::from(std::net::SocketAddr::new(sa.ip(), *port)))
            }
            _ => {
                return Err(bad(
                    "the request names an endpoint of the other backend".into()
                ))
            }
        };
        let local = match &g.peer {
            PeerIdentity::Local { .. } => true,
            PeerIdentity::Remote(sa) => sa.ip().is_loopback(),
        };
        let opts = ImportOptions {
            timeout: if local {
                ADMIT_TIMEOUT_LOCAL
            } else {
                ADMIT_TIMEOUT
            },
            key: Some(req.key.clone()),
            ..ImportOptions::default()
        };
        let tx_import = Import::open_with(&client, req.ring_export, Access::DEPOSIT, &opts)
            .map_err(nic_error)?;
        if !same_process(tx_import.exporter(), &g.peer) {
            return Err(bad(format!(
                "the ring at {client} belongs to {:?}, not to {:?} who asked",
                tx_import.exporter(),
                g.peer
            )));
        }
        check_ring(&tx_import, req.ring)?;
        let Some(ticket) = self.take_place(PeerKey::of(&g.peer)) else {
            let _ = tx_import.store_u64(ACCEPT_STATE, REFUSED_LIMIT, Notify::Yes);
            return Err(io::Error::new(
                io::ErrorKind::ConnectionRefused,
                format!(
                    "it already has {} connections, the most allowed per peer",
                    self.opts.max_connections_per_peer
                ),
            ));
        };
        let ring = self.opts.ring.local();
        let key = ImportKey::random().map_err(nic_error)?;
        let rx_export = self
            .endpoint
            .export_mirrored(
                ring.region_len(),
                ring.get(),
                permissions_for(&g.peer).with_key(key.clone()),
            )
            .map_err(nic_error)?;
        // The answer: my ring's key, where it is, then the state the client waits for.
        let answer = (|| {
            for (i, word) in key.as_bytes().chunks_exact(8).enumerate() {
                let mut w = [0u8; 8];
                w.copy_from_slice(word);
                tx_import.store_u64(
                    ACCEPT_KEY + 8 * i as u64,
                    u64::from_le_bytes(w),
                    Notify::No,
                )?;
            }
            tx_import.store_u64(ACCEPT_EXPORT, u64::from(rx_export.id().get()), Notify::No)?;
            tx_import.store_u64(ACCEPT_RING, ring.get(), Notify::No)?;
            tx_import.store_u64(ACCEPT_STATE, ACCEPTED, Notify::Yes)
        })();
        answer.map_err(nic_error)?;
        VmmcStream::from_parts(
            Parts {
                rx_export,
                rx_ring: ring,
                tx_import,
                tx_ring: req.ring,
                peer: client,
                local: self.endpoint.addr().clone(),
                endpoint: Some(self.endpoint.clone()),
                ticket: Some(ticket),
            },
            &self.opts,
        )
    }
}

/// Whether two kernel identities are the same process (shm) or host (tcp).
fn same_process(a: &PeerIdentity, b: &PeerIdentity) -> bool {
    match (a, b) {
        (PeerIdentity::Local { pid: x, .. }, PeerIdentity::Local { pid: y, .. }) => x == y,
        (PeerIdentity::Remote(x), PeerIdentity::Remote(y)) => x.ip() == y.ip(),
        _ => false,
    }
}

/// Who may import a ring meant for `peer` (with its key): on shm that process alone; on tcp
/// its address (which the key narrows to the peer that read it).
fn permissions_for(peer: &PeerIdentity) -> Permissions {
    let who = match peer {
        PeerIdentity::Local { pid, uid, .. } if *pid != 0 => PeerMatch::Process {
            pid: *pid,
            uid: *uid,
        },
        // A peer in a pid namespace we cannot see: its user, and the key.
        PeerIdentity::Local { uid, .. } => PeerMatch::Uid(*uid),
        PeerIdentity::Remote(sa) => PeerMatch::Host(sa.ip()),
    };
    Permissions::none().allow(Access::DEPOSIT, who)
}

/// The peer's ring must be what it announced, mirrored, or deposits across its wrap fail.
fn check_ring(import: &Import, ring: RingSize) -> io::Result<()> {
    if import.len() != ring.region_len() || import.mirror() != ring.get() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "the peer's ring region is {} bytes with {} mirrored, not a {}-byte ring",
                import.len(),
                import.mirror(),
                ring.get()
            ),
        ));
    }
    Ok(())
}

/// This process's endpoints for the client side of connections: one for shm, one per local
/// address for tcp, made on first use and kept for the life of the process. They are keyed
/// by process id too: a child made by `fork` must bind its own (the parent's is served by
/// the parent), and never drops the parent's, which would take it from the parent.
fn client_endpoint(server: &NodeAddr) -> io::Result<Arc<Endpoint>> {
    static ENDPOINTS: OnceLock<Mutex<HashMap<String, Arc<Endpoint>>>> = OnceLock::new();
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let (key, addr) = match server {
        NodeAddr::Shm(_) => {
            let name = format!(
                "client-{}-{:016x}-{}",
                std::process::id(),
                nonce()?,
                SEQ.fetch_add(1, Ordering::Relaxed)
            );
            let name = ShmName::new(&name).map_err(nic_error)?;
            (format!("{} shm", std::process::id()), NodeAddr::Shm(name))
        }
        NodeAddr::Tcp(t) => {
            let ip = local_ip_towards(t)?;
            (
                format!("{} tcp {ip}", std::process::id()),
                NodeAddr::Tcp(TcpAddr::from(std::net::SocketAddr::new(ip, 0))),
            )
        }
    };
    let map = ENDPOINTS.get_or_init(|| Mutex::new(HashMap::new()));
    let mut map = lock(map);
    if let Some(ep) = map.get(&key) {
        return Ok(ep.clone());
    }
    let ep = Arc::new(Endpoint::bind(&addr).map_err(nic_error)?);
    map.insert(key, ep.clone());
    Ok(ep)
}

/// The local address the kernel would use to reach `server` (a UDP connect sends nothing).
fn local_ip_towards(server: &TcpAddr) -> io::Result<IpAddr> {
    let target = (server.host(), server.port().max(1));
    let probe = match std::net::ToSocketAddrs::to_socket_addrs(&target)?.next() {
        Some(sa) if sa.is_ipv6() => UdpSocket::bind("[::]:0")?,
        _ => UdpSocket::bind("0.0.0.0:0")?,
    };
    probe.connect(target)?;
    Ok(probe.local_addr()?.ip())
}

/// Makes the endpoint name unguessable (so that nobody can bind it first to catch our
/// imports), from the system's CSPRNG.
fn nonce() -> io::Result<u64> {
    let mut b = [0u8; 8];
    getrandom::fill(&mut b).map_err(io::Error::other)?;
    Ok(u64::from_le_bytes(b))
}

/// How long to wait before asking a busy listener again, growing up to a quarter second.
fn backoff(attempt: u32) -> Duration {
    Duration::from_millis(10u64 << attempt.min(5))
}

/// The client side of the handshake.
pub(crate) fn connect(server: &NodeAddr, opts: &StreamOptions) -> io::Result<VmmcStream> {
    let deadline = Instant::now() + opts.connect_timeout;
    let left = || {
        deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(1))
    };
    let mut attempt = 0;
    loop {
        match try_connect(server, opts, deadline) {
            // A listener full of other peers' requests: wait our turn.
            Err(Busy) if Instant::now() + backoff(attempt) < deadline => {
                std::thread::sleep(backoff(attempt).min(left()));
                attempt += 1;
            }
            Err(Busy) => {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "{server} was too busy to take the connection within {:?}",
                        opts.connect_timeout
                    ),
                ))
            }
            Ok(r) => return r,
        }
    }
}

/// The listener had no room for our request; try again.
struct Busy;

fn try_connect(
    server: &NodeAddr,
    opts: &StreamOptions,
    deadline: Instant,
) -> Result<io::Result<VmmcStream>, Busy> {
    let left = || {
        deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(1))
    };
    let dialed = match Import::dial(server, left()) {
        Ok(d) => d,
        Err(e) => return Ok(Err(nic_error(e))),
    };
    let listener_id = dialed.exporter().clone();
    let endpoint = match client_endpoint(server) {
        Ok(e) => e,
        Err(e) => return Ok(Err(e)),
    };
    let ring = opts.ring.local();
    let key = match ImportKey::random() {
        Ok(k) => k,
        Err(e) => return Ok(Err(nic_error(e))),
    };
    let perms = match &listener_id {
        // The kernel told us which process listens: only it may deposit into our ring.
        PeerIdentity::Local { .. } => permissions_for(&listener_id),
        // An address is shared by every user of that host, and the listener may answer
        // from another of its addresses: the key alone says it is the listener.
        PeerIdentity::Remote(_) => Permissions::none().allow(Access::DEPOSIT, PeerMatch::Any),
    };
    let rx_export = match endpoint.export_mirrored(
        ring.region_len(),
        ring.get(),
        perms.with_key(key.clone()),
    ) {
        Ok(x) => x,
        Err(e) => return Ok(Err(nic_error(e))),
    };
    let endpoint_name = match endpoint.addr() {
        NodeAddr::Shm(n) => ClientEndpoint::Shm(n.clone()),
        NodeAddr::Tcp(t) => ClientEndpoint::TcpPort(t.port()),
    };
    let request = ConnectRequest {
        endpoint: endpoint_name,
        ring_export: rx_export.id(),
        ring,
        key,
    };
    let Some(accept_id) = ExportId::new(ACCEPT_EXPORT_ID) else {
        return Ok(Err(io::Error::other("export id")));
    };
    let greeting = ImportOptions {
        timeout: left(),
        greeting: request.emit(),
        key: None,
    };
    let listener = match dialed.import(accept_id, Access::FETCH, &greeting) {
        Ok(l) => l,
        Err(vmmc_nic::Error::Busy(_)) => return Err(Busy),
        Err(e) => return Ok(Err(nic_error(e))),
    };
    Ok(finish_connect(
        server,
        opts,
        deadline,
        endpoint,
        rx_export,
        listener,
        &listener_id,
    ))
}

/// Waits for the listener's answer in our header, then imports its ring.
fn finish_connect(
    server: &NodeAddr,
    opts: &StreamOptions,
    deadline: Instant,
    endpoint: Arc<Endpoint>,
    rx_export: Export,
    listener: Import,
    listener_id: &PeerIdentity,
) -> io::Result<VmmcStream> {
    let refused = |why: String| io::Error::new(io::ErrorKind::ConnectionRefused, why);
    loop {
        match rx_export.load_u64(ACCEPT_STATE).map_err(nic_error)? {
            ACCEPTED => break,
            REFUSED_LIMIT => {
                return Err(refused(format!(
                    "{server} refused the connection: this user (or host) already has as many connections as it allows"
                )))
            }
            _ => {}
        }
        // The listener drops our request once it is done with it. If it is done and holds
        // no import of our ring, it will never answer; while it holds one, its answer may
        // still be on the way (on tcp the two travel on different connections).
        if !listener.is_alive() && rx_export.importers() == 0 {
            return Err(refused(format!(
                "{server} dropped the connection request (see its log), or went away"
            )));
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("{server} did not accept within {:?}", opts.connect_timeout),
            ));
        }
        match rx_export.wait(left.min(Duration::from_millis(100))) {
            Ok(_) | Err(vmmc_nic::Error::Timeout(_)) => {}
            Err(e) => return Err(nic_error(e)),
        }
    }
    let bad = |why: String| io::Error::new(io::ErrorKind::InvalidData, why);
    let mut key = [0u8; KEY_LEN];
    for (i, word) in key.chunks_exact_mut(8).enumerate() {
        let w = rx_export
            .load_u64(ACCEPT_KEY + 8 * i as u64)
            .map_err(nic_error)?;
        word.copy_from_slice(&w.to_le_bytes());
    }
    let id = rx_export.load_u64(ACCEPT_EXPORT).map_err(nic_error)?;
    let size = rx_export.load_u64(ACCEPT_RING).map_err(nic_error)?;
    let id = u32::try_from(id)
        .ok()
        .and_then(ExportId::new)
        .ok_or_else(|| bad(format!("the listener named ring export {id}")))?;
    let tx_ring = RingSize::new(size)
        .filter(|r| r.get() <= opts.max_peer_ring.get())
        .ok_or_else(|| bad(format!("the listener named a ring of {size} bytes")))?;
    let import_opts = ImportOptions {
        timeout: deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(1)),
        key: Some(ImportKey::from_bytes(key)),
        ..ImportOptions::default()
    };
    let tx_import =
        Import::open_with(server, id, Access::DEPOSIT, &import_opts).map_err(nic_error)?;
    if !same_process(tx_import.exporter(), listener_id) {
        return Err(bad("the listener's ring belongs to another process".into()));
    }
    check_ring(&tx_import, tx_ring)?;
    drop(listener);
    VmmcStream::from_parts(
        Parts {
            rx_export,
            rx_ring: opts.ring,
            tx_import,
            tx_ring,
            peer: server.clone(),
            local: endpoint.addr().clone(),
            endpoint: Some(endpoint.clone()),
            ticket: None,
        },
        opts,
    )
}
