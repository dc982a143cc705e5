//! Listening, accepting and connecting.
//!
//! A listener is a NIC endpoint whose first export (id 1) is a one-page *accept region*. A
//! client exports its receive ring, then imports the accept region with a greeting that says
//! where that ring is. The listener imports the client's ring, checks it belongs to the process
//! that greeted, exports a ring of its own and writes its id into the client's header. The
//! client then imports the listener's ring. From there on each side deposits into the other's
//! ring; each import doubles as a liveness link.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::net::{IpAddr, UdpSocket};
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};

use nix::sys::eventfd::{EfdFlags, EventFd};
use std::time::{Duration, Instant};

use vmmc_nic::{
    Access, Endpoint, Export, ExportId, Greeting, Import, ImportOptions, NodeAddr, Notify,
    PeerIdentity, PeerMatch, Permissions, ShmName, TcpAddr,
};

use crate::greeting::{ClientEndpoint, ConnectRequest};
use crate::layout::*;
use crate::options::StreamOptions;
use crate::stream::{nic_error, Parts, VmmcStream};

/// The accept region's export id: the first export of the listener's endpoint.
const ACCEPT_EXPORT_ID: u32 = 1;
/// How long the listener gives a client to be importable during accept.
const ADMIT_TIMEOUT: Duration = Duration::from_secs(5);

/// Connections admitted but not yet accepted, beyond which requests wait for `accept`.
pub const BACKLOG: usize = 128;
/// How often the admission thread looks for a closing listener.
const ADMIT_SLICE: Duration = Duration::from_millis(100);

/// A listening socket over VMMC, shaped like `std::net::TcpListener`.
///
/// Like a kernel listener it completes connections in the background: a thread admits each
/// request as it arrives (up to [`BACKLOG`] of them), so `connect` returns without waiting for
/// `accept`. Dropping the listener stops admitting; connections already made live on.
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
    ready_fd: EventFd,
    closing: AtomicBool,
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

    /// Listens with the options every accepted stream gets.
    pub fn bind_with(addr: &str, opts: StreamOptions) -> io::Result<VmmcListener> {
        let addr: NodeAddr = addr.parse().map_err(nic_error)?;
        let endpoint = Endpoint::bind(&addr).map_err(nic_error)?;
        let accept_region = endpoint
            .export(4096, Permissions::open())
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
            ready_fd: EventFd::from_flags(EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)?,
            closing: AtomicBool::new(false),
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
    pub fn notify_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.shared.ready_fd.as_fd()
    }

    /// Connections admitted and waiting for `accept`.
    pub fn pending(&self) -> usize {
        self.shared.queue.lock().map(|q| q.len()).unwrap_or(0)
    }

    /// Waits for a connection and returns it with the client's kernel-reported identity.
    pub fn accept(&self) -> io::Result<(VmmcStream, PeerIdentity)> {
        let mut q = self.shared.queue.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if let Some(conn) = q.pop_front() {
                if q.is_empty() {
                    let _ = self.shared.ready_fd.read();
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
        if let Some(t) = self.admitter.take() {
            let _ = t.join();
        }
    }
}

impl ListenShared {
    fn admit_loop(&self) {
        while !self.closing.load(Ordering::Acquire) {
            while let Some(g) = self.accept_region.take_greeting() {
                let who = g.peer.clone();
                if self.queue.lock().map(|q| q.len()).unwrap_or(BACKLOG) >= BACKLOG {
                    tracing::warn!(
                        "vmmc listener {}: backlog full, dropping a request from {who}",
                        self.endpoint.addr()
                    );
                    continue;
                }
                match self.admit(g) {
                    Ok(stream) => {
                        let mut q = self.queue.lock().unwrap_or_else(|p| p.into_inner());
                        q.push_back((stream, who));
                        let _ = self.ready_fd.write(1);
                        self.ready.notify_one();
                    }
                    Err(e) => tracing::warn!(
                        "vmmc listener {}: dropped a connection request from {who}: {e}",
                        self.endpoint.addr()
                    ),
                }
            }
            match self.accept_region.wait(ADMIT_SLICE) {
                Ok(_) | Err(vmmc_nic::Error::Timeout(_)) => {}
                Err(e) => {
                    tracing::error!(
                        "vmmc listener {}: stops admitting: {e}",
                        self.endpoint.addr()
                    );
                    return;
                }
            }
        }
    }

    /// Turns one greeting into a connection, or explains why not.
    fn admit(&self, g: Greeting) -> io::Result<VmmcStream> {
        let bad = |why: String| io::Error::new(io::ErrorKind::InvalidData, why);
        let req = ConnectRequest::parse(&g.bytes).map_err(bad)?;
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
        let opts = ImportOptions {
            timeout: ADMIT_TIMEOUT,
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
        let ring = self.opts.ring;
        let rx_export = self
            .endpoint
            .export_mirrored(ring.region_len(), ring.get(), permissions_for(&g.peer))
            .map_err(nic_error)?;
        // The answer: where my ring is, then the flag the client waits for.
        let answer = (|| {
            tx_import.store_u64(ACCEPT_EXPORT, u64::from(rx_export.id().get()), Notify::No)?;
            tx_import.store_u64(ACCEPT_RING, ring.get(), Notify::No)?;
            tx_import.store_u64(ACCEPT_STATE, 1, Notify::Yes)
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

/// Only the peer may deposit into a ring: on shm, processes of its user; on tcp, its host.
fn permissions_for(peer: &PeerIdentity) -> Permissions {
    let who = match peer {
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
/// address for tcp, made on first use and kept for the life of the process.
fn client_endpoint(server: &NodeAddr) -> io::Result<Arc<Endpoint>> {
    static ENDPOINTS: OnceLock<Mutex<HashMap<String, Arc<Endpoint>>>> = OnceLock::new();
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let (key, addr) = match server {
        NodeAddr::Shm(_) => {
            let name = format!(
                "client-{}-{}-{}",
                std::process::id(),
                nonce(),
                SEQ.fetch_add(1, Ordering::Relaxed)
            );
            let name = ShmName::new(&name).map_err(nic_error)?;
            ("shm".to_owned(), NodeAddr::Shm(name))
        }
        NodeAddr::Tcp(t) => {
            let ip = local_ip_towards(t)?;
            (
                format!("tcp {ip}"),
                NodeAddr::Tcp(TcpAddr::from(std::net::SocketAddr::new(ip, 0))),
            )
        }
    };
    let map = ENDPOINTS.get_or_init(|| Mutex::new(HashMap::new()));
    let mut map = map.lock().unwrap_or_else(|p| p.into_inner());
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

fn nonce() -> u64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    t ^ (t >> 29)
}

/// The client side of the handshake.
pub(crate) fn connect(server: &NodeAddr, opts: &StreamOptions) -> io::Result<VmmcStream> {
    let deadline = Instant::now() + opts.connect_timeout;
    let endpoint = client_endpoint(server)?;
    let ring = opts.ring;
    let perms = match server {
        // The listener's uid is not known before the listener is reached; any local user
        // may deposit, and the ring's indices are validated whatever they write.
        NodeAddr::Shm(_) => Permissions::none().allow(Access::DEPOSIT, PeerMatch::Any),
        NodeAddr::Tcp(_) => {
            let mut p = Permissions::none();
            if let NodeAddr::Tcp(t) = server {
                for sa in std::net::ToSocketAddrs::to_socket_addrs(&(t.host(), t.port()))? {
                    p = p.allow(Access::DEPOSIT, PeerMatch::Host(sa.ip()));
                }
            }
            p
        }
    };
    let rx_export = endpoint
        .export_mirrored(ring.region_len(), ring.get(), perms)
        .map_err(nic_error)?;
    let endpoint_name = match endpoint.addr() {
        NodeAddr::Shm(n) => ClientEndpoint::Shm(n.clone()),
        NodeAddr::Tcp(t) => ClientEndpoint::TcpPort(t.port()),
    };
    let request = ConnectRequest {
        endpoint: endpoint_name,
        ring_export: rx_export.id(),
        ring,
    };
    let accept_id = ExportId::new(ACCEPT_EXPORT_ID).ok_or_else(|| io::Error::other("export id"))?;
    let greeting = ImportOptions {
        timeout: opts.connect_timeout,
        greeting: request.emit(),
    };
    let listener =
        Import::open_with(server, accept_id, Access::DEPOSIT, &greeting).map_err(nic_error)?;
    // Wait for the listener to accept: it writes into my header and notifies.
    loop {
        if rx_export.load_u64(ACCEPT_STATE).map_err(nic_error)? == 1 {
            break;
        }
        if !listener.is_alive() {
            return Err(io::Error::new(
                io::ErrorKind::ConnectionRefused,
                format!("the listener at {server} went away before accepting"),
            ));
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
    let id = rx_export.load_u64(ACCEPT_EXPORT).map_err(nic_error)?;
    let size = rx_export.load_u64(ACCEPT_RING).map_err(nic_error)?;
    let id = u32::try_from(id)
        .ok()
        .and_then(ExportId::new)
        .ok_or_else(|| bad(format!("the listener named ring export {id}")))?;
    let tx_ring = RingSize::new(size)
        .ok_or_else(|| bad(format!("the listener named a ring of {size} bytes")))?;
    let left = deadline
        .saturating_duration_since(Instant::now())
        .max(Duration::from_millis(1));
    let tx_import = Import::open_timeout(server, id, Access::DEPOSIT, left).map_err(nic_error)?;
    if !same_process(tx_import.exporter(), listener.exporter()) {
        return Err(bad("the listener's ring belongs to another process".into()));
    }
    check_ring(&tx_import, tx_ring)?;
    drop(listener);
    VmmcStream::from_parts(
        Parts {
            rx_export,
            rx_ring: ring,
            tx_import,
            tx_ring,
            peer: server.clone(),
            local: endpoint.addr().clone(),
            endpoint: Some(endpoint.clone()),
        },
        opts,
    )
}
