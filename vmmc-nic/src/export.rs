//! Endpoints and the regions they export.
//!
//! An [`Endpoint`] listens at its address; each import is one connection, served by its own
//! thread, that lives exactly as long as the import. So the exporter learns that an importer
//! died when its connection ends, and revoking an export is closing its connections.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::access::{Access, PeerIdentity, Permissions, Principal};
use crate::addr::{ExportId, NodeAddr};
use crate::counters;
use crate::error::{Error, Result};
use crate::notify::Notifier;
use crate::serve::{self, End, Wire};
use crate::span::Span;
use crate::sys::{shutdown_both, AsWaitHandle, OwnedWaitHandle, Region, SharedBytes, WaitHandle};
use crate::{shm, tcp};

/// Greetings an export holds (queued, or taken and not yet dropped) before it refuses more
/// imports that carry one.
pub const MAX_PENDING_GREETINGS: usize = 128;
/// Of those, how many one peer may hold (one local user, or one remote address; local root is
/// not limited): one user's flood of connection requests cannot lock out the others.
pub const MAX_PENDING_GREETINGS_PER_PEER: usize = 16;

/// Limits on the import connections an endpoint serves at once. Each costs a thread and a
/// few descriptors for as long as the import lives, so a peer that opens them and never
/// lets go must run into a limit of its own before the process runs out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EndpointOptions {
    /// Import connections in all (handshaking or granted); more are refused as busy.
    pub max_connections: usize,
    /// Import connections from one peer: one local user (root is not limited) or one remote
    /// address.
    pub max_connections_per_peer: usize,
}

impl Default for EndpointOptions {
    fn default() -> EndpointOptions {
        EndpointOptions {
            max_connections: 4096,
            max_connections_per_peer: 256,
        }
    }
}

/// Counts of live import connections, for [`EndpointOptions`].
#[derive(Debug, Default)]
struct ConnCounts {
    total: usize,
    by_peer: HashMap<Principal, usize>,
}

/// One counted connection; uncounted when dropped.
pub(crate) struct ConnSlot {
    inner: Arc<EndpointInner>,
    principal: Option<Principal>,
}

impl Drop for ConnSlot {
    fn drop(&mut self) {
        let mut c = lock(&self.inner.conns);
        c.total = c.total.saturating_sub(1);
        if let Some(p) = self.principal {
            if let Some(n) = c.by_peer.get_mut(&p) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    c.by_peer.remove(&p);
                }
            }
        }
    }
}

/// How long a connecting peer has to send its import request.
pub(crate) const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic elsewhere must not make the endpoint unusable; the data under these locks stays
    // consistent at every await-free step.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The listening socket of an endpoint.
pub(crate) enum Listener {
    #[cfg(unix)]
    Unix(std::os::unix::net::UnixListener),
    Tcp(std::net::TcpListener),
}

impl Listener {
    fn fd(&self) -> WaitHandle<'_> {
        match self {
            #[cfg(unix)]
            Listener::Unix(l) => l.as_wait_handle(),
            Listener::Tcp(l) => l.as_wait_handle(),
        }
    }
}

/// State shared by an endpoint, its exports and its connection threads.
pub(crate) struct EndpointInner {
    addr: NodeAddr,
    pub(crate) exports: Mutex<HashMap<ExportId, Arc<ExportShared>>>,
    next_id: AtomicU32,
    stop: Notifier,
    opts: EndpointOptions,
    conns: Mutex<ConnCounts>,
}

impl EndpointInner {
    /// Counts a new connection from `peer`, or says no when a limit is reached.
    fn admit_conn(self: &Arc<Self>, peer: &PeerIdentity) -> Option<ConnSlot> {
        let principal = peer.principal();
        let mut c = lock(&self.conns);
        if c.total >= self.opts.max_connections {
            return None;
        }
        if let Some(p) = principal {
            let n = c.by_peer.entry(p).or_default();
            if *n >= self.opts.max_connections_per_peer {
                return None;
            }
            *n += 1;
        }
        c.total += 1;
        Some(ConnSlot {
            inner: self.clone(),
            principal,
        })
    }

    pub(crate) fn lookup(&self, id: ExportId) -> Option<Arc<ExportShared>> {
        lock(&self.exports).get(&id).cloned()
    }
}

/// A VMMC endpoint: the address other processes import this process's regions from.
///
/// ```
/// use vmmc_nic::{Endpoint, Import, Access, Notify, Permissions};
/// let ep = Endpoint::bind(&"tcp:127.0.0.1:0".parse().unwrap()).unwrap();
/// let export = ep.export(4096, Permissions::open()).unwrap();
/// let import = Import::open(ep.addr(), export.id(), Access::ALL).unwrap();
/// import.write_at(100, b"hello", Notify::Yes).unwrap();
/// export.wait(std::time::Duration::from_secs(5)).unwrap();
/// let mut got = [0; 5];
/// export.read_at(100, &mut got).unwrap();
/// assert_eq!(&got, b"hello");
/// ```
pub struct Endpoint {
    inner: Arc<EndpointInner>,
    acceptor: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("addr", &self.inner.addr)
            .finish()
    }
}

impl Endpoint {
    /// Starts listening at `addr` with the default limits. For `tcp:` port 0 picks a free
    /// port; [`Endpoint::addr`] tells which.
    pub fn bind(addr: &NodeAddr) -> Result<Endpoint> {
        Endpoint::bind_with(addr, EndpointOptions::default())
    }

    /// Starts listening at `addr` with the given limits.
    pub fn bind_with(addr: &NodeAddr, opts: EndpointOptions) -> Result<Endpoint> {
        let (listener, local) = match addr {
            NodeAddr::Shm(name) => shm::listen(name)?,
            NodeAddr::Tcp(t) => tcp::listen(t)?,
        };
        let inner = Arc::new(EndpointInner {
            addr: local,
            exports: Mutex::new(HashMap::new()),
            next_id: AtomicU32::new(1),
            stop: Notifier::new().map_err(Error::io("creating the endpoint's stop event"))?,
            opts,
            conns: Mutex::new(ConnCounts::default()),
        });
        let acceptor = {
            let inner = inner.clone();
            std::thread::Builder::new()
                .name("vmmc-accept".into())
                .spawn(move || accept_loop(inner, listener))
                .map_err(Error::io("starting the accept thread"))?
        };
        Ok(Endpoint {
            inner,
            acceptor: Some(acceptor),
        })
    }

    /// The address peers import from (with the real port for `tcp:...:0`).
    pub fn addr(&self) -> &NodeAddr {
        &self.inner.addr
    }

    /// Exports a fresh zeroed region of `len` bytes with the given permissions.
    pub fn export(&self, len: u64, permissions: Permissions) -> Result<Export> {
        self.export_mirrored(len, 0, permissions)
    }

    /// Exports a region whose last `mirror` bytes are mapped a second time right after it, here
    /// and in every importer on this host: a ring buffer in that tail can then be written and
    /// read across its wrap as one contiguous span (offsets up to `len + mirror`). `len` and
    /// `mirror` must be multiples of the page size.
    pub fn export_mirrored(
        &self,
        len: u64,
        mirror: u64,
        permissions: Permissions,
    ) -> Result<Export> {
        let region = Region::create(len, mirror)?;
        let notifier =
            Notifier::on_demand().map_err(Error::io("creating the notification eventfd"))?;
        let raw = self
            .inner
            .next_id
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_add(1))
            .map_err(|_| Error::BadExportId("(export ids exhausted)".into()))?;
        let id = ExportId::new(raw).ok_or_else(|| Error::BadExportId(raw.to_string()))?;
        let shared = Arc::new(ExportShared::new(id, region, permissions, notifier)?);
        lock(&self.inner.exports).insert(id, shared.clone());
        Ok(Export {
            shared,
            addr: self.inner.addr.clone(),
            revoke_on_drop: true,
            endpoint: Some(self.inner.clone()),
        })
    }
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        self.inner.stop.signal();
        if let Some(t) = self.acceptor.take() {
            let _ = t.join();
        }
        let exports: Vec<_> = lock(&self.inner.exports).drain().map(|(_, e)| e).collect();
        for e in exports {
            e.revoke();
        }
    }
}

fn accept_loop(inner: Arc<EndpointInner>, listener: Listener) {
    loop {
        let ready = match crate::notify::poll_readable(&[listener.fd(), inner.stop.fd()], None) {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(
                    "vmmc endpoint {}: poll failed, no longer accepting: {e}",
                    inner.addr
                );
                return;
            }
        };
        if ready.get(1).copied().unwrap_or(true) {
            return;
        }
        let spawned = match &listener {
            #[cfg(unix)]
            Listener::Unix(l) => match l.accept() {
                Ok((s, _)) => {
                    let peer = match shm::peer_identity(&s) {
                        Ok(p) => p,
                        Err(e) => {
                            tracing::warn!(
                                "vmmc endpoint {}: no peer credentials: {e}",
                                inner.addr
                            );
                            continue;
                        }
                    };
                    match inner.admit_conn(&peer) {
                        Some(slot) => spawn_conn(&inner, move |inner| {
                            shm::handle(inner, s, peer);
                            drop(slot);
                        }),
                        None => {
                            refuse_busy(&inner, s, &peer);
                            continue;
                        }
                    }
                }
                Err(e) => {
                    accept_error(&inner, e);
                    continue;
                }
            },
            Listener::Tcp(l) => match l.accept() {
                Ok((s, sa)) => {
                    let peer = PeerIdentity::Remote(sa);
                    match inner.admit_conn(&peer) {
                        Some(slot) => spawn_conn(&inner, move |inner| {
                            tcp::handle(inner, s, sa);
                            drop(slot);
                        }),
                        None => {
                            refuse_busy(&inner, s, &peer);
                            continue;
                        }
                    }
                }
                Err(e) => {
                    accept_error(&inner, e);
                    continue;
                }
            },
        };
        if let Err(e) = spawned {
            tracing::warn!(
                "vmmc endpoint {}: cannot start a connection thread: {e}",
                inner.addr
            );
        }
    }
}

/// Tells a peer over its connection limit that the endpoint is busy, without a thread: a
/// fresh socket takes one header without blocking.
fn refuse_busy(inner: &EndpointInner, mut s: impl std::io::Write, peer: &PeerIdentity) {
    tracing::info!(
        "vmmc endpoint {}: refusing {peer}: at its limit of import connections",
        inner.addr
    );
    let _ = s.write(
        &crate::wire::Frame::Refused {
            reason: crate::wire::Refusal::Busy,
        }
        .emit(),
    );
}

fn accept_error(inner: &EndpointInner, e: std::io::Error) {
    if e.kind() != std::io::ErrorKind::WouldBlock && e.kind() != std::io::ErrorKind::Interrupted {
        tracing::warn!("vmmc endpoint {}: accept failed: {e}", inner.addr);
        // Out of descriptors, say: back off instead of spinning on a readable listener.
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn spawn_conn(
    inner: &Arc<EndpointInner>,
    f: impl FnOnce(Arc<EndpointInner>) + Send + 'static,
) -> std::io::Result<()> {
    let inner = inner.clone();
    std::thread::Builder::new()
        .name("vmmc-conn".into())
        .spawn(move || f(inner))
        .map(drop)
}

/// Runs one import connection to its end: handshake, then serve (tcp) or wait for the close
/// (shm), then record the departure.
pub(crate) fn run_connection<W: Wire + AsWaitHandle>(
    inner: &EndpointInner,
    w: &mut W,
    peer: PeerIdentity,
) -> Option<(Arc<ExportShared>, Access)> {
    let lookup = |id| inner.lookup(id);
    let admitted = match serve::handshake(w, &lookup, &peer) {
        Ok(admitted) => admitted,
        Err(end) => {
            log_end(&inner.addr, &peer, None, &end);
            return None;
        }
    };
    let (export, access) = (admitted.export, admitted.access);
    // Recorded before the grant, so that an importer that holds the grant is already counted.
    let Some(registration) = export.register(w.as_wait_handle()) else {
        // Revoked between the lookup and now.
        return None;
    };
    if let Err(e) = w.grant(&export, access) {
        log_end(&inner.addr, &peer, Some(export.id), &End::Io(e));
        return None;
    }
    if let Some((bytes, slot)) = admitted.greeting {
        export.queue_greeting(&peer, bytes, slot, registration.key);
    }
    tracing::debug!(
        "vmmc endpoint {}: {peer} imported {} for {access}",
        inner.addr,
        export.id
    );
    serve_registered(&inner.addr, w, export, access, &peer, registration)
}

/// Serves a granted import until it ends; returns the export and access when the connection
/// stopped for a handover (the caller keeps the socket open for the next owner).
pub(crate) fn serve_registered<W: Wire>(
    addr: &NodeAddr,
    w: &mut W,
    export: Arc<ExportShared>,
    access: Access,
    peer: &PeerIdentity,
    registration: Registration,
) -> Option<(Arc<ExportShared>, Access)> {
    let end = serve::serve(w, &export, access);
    if let End::HandedOver = end {
        registration.handed_over();
        return Some((export, access));
    }
    log_end(addr, peer, Some(export.id), &end);
    drop(registration);
    None
}

fn log_end(addr: &NodeAddr, peer: &PeerIdentity, id: Option<ExportId>, end: &End) {
    let what = id.map(|i| format!(" (export {i})")).unwrap_or_default();
    match end {
        End::Closed => tracing::debug!("vmmc endpoint {addr}: {peer}{what} closed"),
        End::Refused(r) => tracing::info!("vmmc endpoint {addr}: refused {peer}: {r:?}"),
        End::Violation(why) => {
            tracing::warn!("vmmc endpoint {addr}: dropping {peer}{what}: protocol violation: {why}")
        }
        End::Io(e) => tracing::debug!("vmmc endpoint {addr}: {peer}{what} connection ended: {e}"),
        End::HandedOver => tracing::debug!("vmmc endpoint {addr}: {peer}{what} handed over"),
    }
}

/// An export as the endpoint's threads see it.
#[derive(Debug)]
pub(crate) struct ExportShared {
    id: ExportId,
    region: Region,
    permissions: Permissions,
    notifier: Notifier,
    live: AtomicUsize,
    departed: AtomicU64,
    seen_departed: AtomicU64,
    conns: Mutex<HashMap<u64, OwnedWaitHandle>>,
    next_conn: AtomicU64,
    revoked: AtomicBool,
    greetings: Mutex<Greetings>,
    /// Asks connection threads to stop between frames and leave their connection open.
    pub(crate) handover: Notifier,
    pub(crate) handing: AtomicBool,
    pub(crate) handed: Mutex<Vec<HandedConn>>,
}

/// An import connection taken off its serving thread, for another process to serve.
#[derive(Debug)]
pub(crate) struct HandedConn {
    pub(crate) fd: OwnedWaitHandle,
    pub(crate) access: Access,
    pub(crate) tcp: bool,
}

impl ExportShared {
    /// A stand-alone export for the fuzz harness: anonymous memory, no endpoint.
    pub(crate) fn detached(
        id: ExportId,
        len: u64,
        permissions: Permissions,
    ) -> Result<ExportShared> {
        let notifier = Notifier::on_demand().map_err(Error::io("creating an eventfd"))?;
        ExportShared::new(id, Region::anonymous(len)?, permissions, notifier)
    }

    pub(crate) fn new(
        id: ExportId,
        region: Region,
        permissions: Permissions,
        notifier: Notifier,
    ) -> Result<ExportShared> {
        Ok(ExportShared {
            id,
            region,
            permissions,
            notifier,
            live: AtomicUsize::new(0),
            departed: AtomicU64::new(0),
            seen_departed: AtomicU64::new(0),
            conns: Mutex::new(HashMap::new()),
            next_conn: AtomicU64::new(0),
            revoked: AtomicBool::new(false),
            greetings: Mutex::new(Greetings::default()),
            handover: Notifier::new().map_err(Error::io("creating an eventfd"))?,
            handing: AtomicBool::new(false),
            handed: Mutex::new(Vec::new()),
        })
    }

    pub(crate) fn id(&self) -> ExportId {
        self.id
    }

    pub(crate) fn live_importers(&self) -> usize {
        self.live.load(Ordering::Acquire)
    }

    /// The lock `register` takes, so that a handover and a late registration cannot cross.
    pub(crate) fn conns_for_handover(&self) -> &Mutex<HashMap<u64, OwnedWaitHandle>> {
        &self.conns
    }

    /// Signalled (and left signalled) when the export is being handed to another process.
    pub(crate) fn handover_fd(&self) -> WaitHandle<'_> {
        self.handover.fd()
    }

    /// Keeps a connection whose serving thread stopped for a handover.
    pub(crate) fn push_handed(&self, fd: OwnedWaitHandle, access: Access, tcp: bool) {
        lock(&self.handed).push(HandedConn { fd, access, tcp });
    }

    /// Reserves a place for a greeting from `peer`, or `None` when the export holds as many
    /// as it may (in all, or from this peer). The place is held until the greeting is dropped.
    pub(crate) fn reserve_greeting(self: &Arc<Self>, peer: &PeerIdentity) -> Option<GreetingSlot> {
        let principal = peer.principal();
        let mut g = lock(&self.greetings);
        if g.alive >= MAX_PENDING_GREETINGS {
            return None;
        }
        if let Some(p) = principal {
            let n = g.by_peer.entry(p).or_default();
            if *n >= MAX_PENDING_GREETINGS_PER_PEER {
                return None;
            }
            *n += 1;
        }
        g.alive += 1;
        Some(GreetingSlot {
            export: Arc::downgrade(self),
            principal,
        })
    }

    /// Queues a greeting for the application and wakes its waiters. Dropping the greeting
    /// ends the import connection `conn` that carried it.
    pub(crate) fn queue_greeting(
        self: &Arc<Self>,
        peer: &PeerIdentity,
        bytes: Vec<u8>,
        slot: GreetingSlot,
        conn: u64,
    ) {
        let greeting = Greeting {
            peer: peer.clone(),
            bytes,
            hold: Some(GreetingHold { slot, conn }),
        };
        lock(&self.greetings).queue.push_back(greeting);
        self.notifier.signal();
    }

    /// Ends one import connection (the importer sees the export as gone).
    fn shut_conn(&self, key: u64) {
        if let Some(fd) = lock(&self.conns).get(&key) {
            shutdown_both(fd.as_wait_handle());
        }
    }

    pub(crate) fn region(&self) -> &Region {
        &self.region
    }

    pub(crate) fn notifier(&self) -> &Notifier {
        &self.notifier
    }

    pub(crate) fn permissions(&self) -> &Permissions {
        &self.permissions
    }

    /// Records a live importer; the returned guard records its departure when dropped.
    pub(crate) fn register(self: &Arc<Self>, conn: WaitHandle<'_>) -> Option<Registration> {
        let dup = conn.try_clone_to_owned().ok()?;
        let key = self.next_conn.fetch_add(1, Ordering::Relaxed);
        {
            let mut conns = lock(&self.conns);
            if self.revoked.load(Ordering::Acquire) || self.handing.load(Ordering::Acquire) {
                shutdown_both(dup.as_wait_handle());
                return None;
            }
            conns.insert(key, dup);
        }
        self.live.fetch_add(1, Ordering::AcqRel);
        Some(Registration {
            export: self.clone(),
            key,
            handed_over: false,
        })
    }

    /// Closes every import connection; importers see the export as gone.
    fn revoke(&self) {
        let conns: Vec<OwnedWaitHandle> = {
            let mut c = lock(&self.conns);
            self.revoked.store(true, Ordering::Release);
            c.drain().map(|(_, fd)| fd).collect()
        };
        for fd in conns {
            shutdown_both(fd.as_wait_handle());
        }
        // Dropped outside the lock: a greeting's drop takes it.
        let waiting: Vec<Greeting> = lock(&self.greetings).queue.drain(..).collect();
        drop(waiting);
    }
}

pub(crate) struct Registration {
    export: Arc<ExportShared>,
    /// Names the connection in the export's table.
    pub(crate) key: u64,
    handed_over: bool,
}

impl Registration {
    /// The connection moved to another process: not a departure.
    pub(crate) fn handed_over(mut self) {
        self.handed_over = true;
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        lock(&self.export.conns).remove(&self.key);
        if self.handed_over {
            self.export.live.fetch_sub(1, Ordering::AcqRel);
            return;
        }
        self.export.live.fetch_sub(1, Ordering::AcqRel);
        self.export.departed.fetch_add(1, Ordering::AcqRel);
        self.export.notifier.signal();
    }
}

/// Greetings queued for the application, and how many are alive in all and per peer.
#[derive(Default)]
pub(crate) struct Greetings {
    queue: VecDeque<Greeting>,
    alive: usize,
    by_peer: HashMap<Principal, usize>,
}

impl std::fmt::Debug for Greetings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Greetings")
            .field("queued", &self.queue.len())
            .field("alive", &self.alive)
            .finish()
    }
}

/// A greeting's place in its export's limits; freed when dropped.
pub(crate) struct GreetingSlot {
    /// Weak: a greeting queued in the export must not keep the export alive.
    export: Weak<ExportShared>,
    principal: Option<Principal>,
}

impl Drop for GreetingSlot {
    fn drop(&mut self) {
        let Some(export) = self.export.upgrade() else {
            return;
        };
        let mut g = lock(&export.greetings);
        g.alive = g.alive.saturating_sub(1);
        if let Some(p) = self.principal {
            if let Some(n) = g.by_peer.get_mut(&p) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    g.by_peer.remove(&p);
                }
            }
        }
    }
}

/// What a queued greeting holds: its place, and the connection it came on.
struct GreetingHold {
    slot: GreetingSlot,
    conn: u64,
}

impl Drop for GreetingHold {
    fn drop(&mut self) {
        if let Some(export) = self.slot.export.upgrade() {
            export.shut_conn(self.conn);
        }
    }
}

/// Bytes an importer attached to its import request, with who sent them.
///
/// This is how a connection request reaches a listener: the greeting names the importer's own
/// export, which the listener then imports in turn. The bytes are the peer's and untrusted.
///
/// A greeting lasts as long as the import that carried it: dropping it ends that import (the
/// importer sees the export as gone) and frees its place in the export's limits, so a peer
/// cannot pile up imports by sending requests the application has finished with.
pub struct Greeting {
    /// The importer, as the kernel reports it.
    pub peer: PeerIdentity,
    /// What it sent, at most [`crate::MAX_GREETING_LEN`] bytes.
    pub bytes: Vec<u8>,
    hold: Option<GreetingHold>,
}

impl std::fmt::Debug for Greeting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Greeting")
            .field("peer", &self.peer)
            .field("bytes", &self.bytes.len())
            .field("live", &self.hold.is_some())
            .finish()
    }
}

/// Waits for an export's wake-ups; see [`Export::waiter`].
#[derive(Clone)]
pub struct Waiter(Arc<ExportShared>);

impl std::fmt::Debug for Waiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Waiter").field(&self.0.id).finish()
    }
}

impl Waiter {
    /// Waits until a wake-up is pending (a notifying deposit, an importer leaving) or
    /// `timeout` passes; true if one is. Takes nothing: [`Export::try_wait`] does.
    pub fn wait(&self, timeout: Duration) -> bool {
        self.0.notifier.wait_pending(timeout)
    }

    /// The export's notification handle, for a poll set: it shows pending wake-ups while
    /// [`Waiter::show_on_handle`] says so (on Linux always).
    pub fn handle(&self) -> WaitHandle<'_> {
        self.0.notifier.fd()
    }

    /// Whether wake-ups show on [`Waiter::handle`]: on before a poll of it, off after. On
    /// Windows showing them costs socket calls on every wake-up (nothing on Linux), so a
    /// connection that is not polled should not pay for it.
    pub fn show_on_handle(&self, on: bool) {
        if on {
            self.0.notifier.arm();
        } else {
            self.0.notifier.disarm();
        }
    }
}

/// What woke a waiter on an export.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wake {
    /// A deposit that asked for a notification has landed.
    Notified,
    /// An importer went away (exited, dropped its import, or was cut off for a violation).
    ImporterLeft,
}

/// A region this process exports. Dropping it revokes every import of it.
pub struct Export {
    pub(crate) shared: Arc<ExportShared>,
    /// None for an export taken over from another process: it serves the importers it came
    /// with and accepts no new ones.
    pub(crate) endpoint: Option<Arc<EndpointInner>>,
    pub(crate) addr: NodeAddr,
    pub(crate) revoke_on_drop: bool,
}

impl std::fmt::Debug for Export {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Export")
            .field("endpoint", &self.addr)
            .field("id", &self.shared.id)
            .field("len", &self.shared.region.len())
            .finish()
    }
}

impl Export {
    /// The id importers name this export by.
    pub fn id(&self) -> ExportId {
        self.shared.id
    }

    /// The region's size in bytes (not counting the mirror).
    pub fn len(&self) -> u64 {
        self.shared.region.file_len()
    }

    /// Bytes of the region's tail mapped a second time after it.
    pub fn mirror(&self) -> u64 {
        self.shared.region.mirror()
    }

    fn span(&self, offset: u64, len: u64) -> Result<Span> {
        Span::new(self.shared.region.len(), offset, len)
    }

    /// The bytes at `offset..offset + len`, in place: the receive side of zero-copy. A peer
    /// with deposit access may change them at any moment, hence [`SharedBytes`] rather than a
    /// reference; they cannot go away while the borrow of `self` lives. Offsets up to `len() +
    /// mirror()` are valid.
    pub fn bytes(&self, offset: u64, len: u64) -> Result<SharedBytes<'_>> {
        let span = self.span(offset, len)?;
        Ok(self.shared.region.bytes(span))
    }

    /// Takes the oldest greeting that came with an import, without blocking. A greeting
    /// arriving also wakes [`Export::wait`] (as [`Wake::Notified`]).
    pub fn take_greeting(&self) -> Option<Greeting> {
        lock(&self.shared.greetings).queue.pop_front()
    }

    /// Always false: regions have at least one byte. Present because `len` is.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The endpoint address importers use.
    pub fn addr(&self) -> &NodeAddr {
        &self.addr
    }

    /// Importers connected right now.
    pub fn importers(&self) -> usize {
        self.shared.live.load(Ordering::Acquire)
    }

    /// Copies `data` into the region locally.
    pub fn write_at(&self, offset: u64, data: &[u8]) -> Result<()> {
        let span = self.span(offset, data.len() as u64)?;
        self.shared.region.copy_in(span, data);
        counters::add_copied(data.len());
        Ok(())
    }

    /// Copies bytes out of the region locally.
    pub fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        let span = self.span(offset, buf.len() as u64)?;
        self.shared.region.copy_out(span, buf);
        counters::add_copied(buf.len());
        Ok(())
    }

    /// Reads an 8-byte control word with acquire ordering: deposits made before the peer
    /// stored this word are visible after it is read.
    pub fn load_u64(&self, offset: u64) -> Result<u64> {
        Ok(self
            .shared
            .region
            .load_u64(Span::word(self.shared.region.len(), offset)?))
    }

    /// Stores an 8-byte control word with release ordering.
    pub fn store_u64(&self, offset: u64, value: u64) -> Result<()> {
        self.shared
            .region
            .store_u64(Span::word(self.shared.region.len(), offset)?, value);
        Ok(())
    }

    /// Blocks until a notifying deposit lands or an importer leaves, at most `timeout`.
    pub fn wait(&self, timeout: Duration) -> Result<Wake> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(w) = self.try_wait() {
                return Ok(w);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(Error::Timeout(timeout));
            }
            self.shared.notifier.wait_pending(left);
        }
    }

    /// Takes a pending wake-up without blocking.
    pub fn try_wait(&self) -> Option<Wake> {
        let s = &self.shared;
        let departed = s.departed.load(Ordering::Acquire);
        let seen = s.seen_departed.load(Ordering::Acquire);
        let signals = s.notifier.take();
        let new_departures = departed.saturating_sub(seen);
        // Notifications and departures share one eventfd counter; whatever exceeds the
        // departures is notifications. A notification is reported first and the departure
        // stays pending for the next call, so neither is lost.
        if signals > new_departures {
            if new_departures > 0 {
                s.notifier.signal();
            }
            return Some(Wake::Notified);
        }
        if new_departures > 0 {
            s.seen_departed.store(seen + 1, Ordering::Release);
            if new_departures > 1 {
                s.notifier.signal();
            }
            return Some(Wake::ImporterLeft);
        }
        None
    }

    /// The eventfd that becomes readable when [`Export::wait`] would return: put it in a
    /// poll set, then call [`Export::try_wait`].
    pub fn notify_fd(&self) -> WaitHandle<'_> {
        // On Windows the handle shows signals only once someone asks for it (see notify/).
        self.shared.notifier.arm();
        self.shared.notifier.fd()
    }

    /// A handle that waits for this export's next wake-up without taking it, and without a
    /// poll set: what a thread sleeping for its own connection uses (on Windows a condition
    /// variable, where polling a socket costs system calls under Wine).
    pub fn waiter(&self) -> Waiter {
        Waiter(self.shared.clone())
    }

    /// Who may import this export, and for what.
    pub fn permissions(&self) -> &Permissions {
        &self.shared.permissions
    }
}

impl Drop for Export {
    fn drop(&mut self) {
        if let Some(ep) = &self.endpoint {
            lock(&ep.exports).remove(&self.shared.id);
        }
        if self.revoke_on_drop {
            self.shared.revoke();
        }
    }
}
