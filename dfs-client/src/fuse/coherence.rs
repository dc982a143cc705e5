//! Caching for long and still seeing every change: the server's notices.
//!
//! Without notices the kernel keeps attributes and names for the mount's short times (1 s),
//! so a `stat` of a file costs a round trip every second and another client's change shows
//! after at most that long. A mount therefore subscribes a connection of its own
//! ([`crate::conn::Notices`]); the server tells it what other clients change and, where it can
//! watch the export, what local programs change too. While that holds, the kernel may cache
//! for the long time (`cache_timeout`, 60 s): every notice drops what it names from the
//! kernel's caches at once (`FUSE_NOTIFY_INVAL_INODE`, `FUSE_NOTIFY_INVAL_ENTRY`), so a change
//! shows as soon as the notice arrives, and a `stat` of an unchanged file never leaves this
//! host. When the channel fails, or the server says that it cannot see local changes, the
//! short times come back; when it is back, everything cached is dropped once, since changes
//! made meanwhile went untold.
//!
//! While notices hold, this side also keeps each file's attributes as the server last gave
//! them (in a lookup, a `getattr`, a write's reply), so that the `GETATTR` the kernel sends
//! after it dropped its own copy (after every write, for one) is answered here, without a
//! round trip. What this client's own requests change is dropped from it as they go (see
//! [`Coherence::changed`]); what others change, as their notices arrive.
//!
//! It also keeps which extended attributes of a file it found absent: the kernel asks for
//! `security.capability` before the first write through every open, to clear it, and a
//! create then costs three round trips instead of two. A new file has none, and a `getxattr`
//! answered `ENODATA` says so of an old one; either is forgotten with the file's attributes.
//!
//! One race needs care: a reply read from the server before a change, but handed to the
//! kernel after that change's notice was applied, would be cached stale for long. (The kernel
//! orders attribute replies against invalidations itself; a name looked up meanwhile it does
//! not.) Each request takes a [`Ticket`] before it leaves; if a notice was applied since, its
//! reply is cached for no time at all. The check and the reply to the kernel happen under a
//! read lock, which the notice thread takes for writing only to count a notice: never while it
//! invalidates, because an invalidation may wait for a directory lock that a request in flight
//! holds while it waits for its own reply.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::Duration;

use dfs_proto::attr::Attr;
use dfs_proto::msg::Notice;
use fuser::{INodeNo, Notifier};

use super::nodes::{Nodes, ROOT};
use super::CacheTimes;
use crate::creds::current_creds;
use crate::Client;

/// Where a request stood in the stream of notices, and among this client's own changes,
/// when it left.
#[derive(Clone, Copy, Debug)]
pub struct Ticket {
    notices: u64,
    local: u64,
}

/// Whether the kernel may cache long, and the count of notices applied.
#[derive(Debug)]
pub struct Coherence {
    epoch: AtomicU64,
    /// Counts this client's own changes whose new attributes it was not told.
    local: AtomicU64,
    gate: RwLock<()>,
    live: AtomicBool,
    stop: AtomicBool,
    short: CacheTimes,
    /// Attributes by node id, good while `live`.
    attrs: Mutex<HashMap<u64, Attr>>,
    /// Extended attribute names known absent, by node id, good while `live`; forgotten with
    /// the node's attributes.
    absent: Mutex<HashMap<u64, Vec<Vec<u8>>>>,
}

/// Most attributes kept; past it the table starts over (entries are only a saved round trip).
const MAX_ATTRS: usize = 1 << 20;

impl Coherence {
    /// Short times until a subscription holds.
    pub fn new(times: CacheTimes) -> Coherence {
        Coherence {
            epoch: AtomicU64::new(0),
            local: AtomicU64::new(0),
            gate: RwLock::new(()),
            live: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            short: times,
            attrs: Mutex::new(HashMap::new()),
            absent: Mutex::new(HashMap::new()),
        }
    }

    fn absent(&self) -> MutexGuard<'_, HashMap<u64, Vec<Vec<u8>>>> {
        self.absent.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether node `id` surely has no extended attribute `name` (notices keep it right).
    pub fn is_absent(&self, id: u64, name: &[u8]) -> bool {
        self.is_live()
            && self
                .absent()
                .get(&id)
                .is_some_and(|names| names.iter().any(|n| n == name))
    }

    /// Keeps that node `id` had no extended attribute `name` when the request that left at
    /// `t` was answered, unless something changed since (as [`Coherence::remember`]).
    pub fn remember_absent(&self, t: Ticket, id: u64, name: &[u8]) {
        let _g = self.gate.read().unwrap_or_else(|p| p.into_inner());
        let mut m = self.absent();
        if !self.unchanged_since(t) {
            return;
        }
        if m.len() >= MAX_ATTRS {
            m.clear();
        }
        let names = m.entry(id).or_default();
        // A handful per file at most (security.capability, an ACL, a label).
        if names.len() < 8 && !names.iter().any(|n| n == name) {
            names.push(name.to_vec());
        }
    }

    /// Whether notices hold and neither a notice nor a change of this client's came since
    /// the request that took `t` left: what its reply said may be kept.
    fn unchanged_since(&self, t: Ticket) -> bool {
        self.is_live()
            && self.epoch.load(Ordering::Acquire) == t.notices
            && self.local.load(Ordering::Acquire) == t.local
    }

    /// Forgets what is kept of these nodes.
    fn forget(&self, ids: &[u64]) {
        let mut m = self.attrs();
        let mut a = self.absent();
        for id in ids {
            m.remove(id);
            a.remove(id);
        }
    }

    fn attrs(&self) -> MutexGuard<'_, HashMap<u64, Attr>> {
        self.attrs.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The attributes of node `id` as the server last gave them, if notices keep them right.
    pub fn cached(&self, id: u64) -> Option<Attr> {
        if !self.is_live() {
            return None;
        }
        self.attrs().get(&id).copied()
    }

    /// Keeps what a reply to a request that left at `t` said of node `id`, unless a notice
    /// came since or this client changed something itself (the reply may be older than that
    /// change). Of two replies, the one
    /// with the later change time wins (writes in flight at once may answer out of order);
    /// two that differ with the same change time leave nothing kept.
    pub fn remember(&self, t: Ticket, id: u64, a: &Attr) {
        let _g = self.gate.read().unwrap_or_else(|p| p.into_inner());
        let mut m = self.attrs();
        if !self.unchanged_since(t) {
            // It changed, into what is not sure: nothing kept.
            m.remove(&id);
            return;
        }
        if m.len() >= MAX_ATTRS {
            m.clear();
        }
        match m.get(&id) {
            Some(old) if old.ctime > a.ctime => {}
            Some(old) if old.ctime == a.ctime && old != a => {
                m.remove(&id);
            }
            _ => {
                m.insert(id, *a);
            }
        }
    }

    /// This client did something that changes the attributes of these nodes without being
    /// told the new ones (a read's access time, a directory's entries, a link count).
    pub fn changed(&self, ids: &[u64]) {
        self.local.fetch_add(1, Ordering::AcqRel);
        self.forget(ids);
    }

    /// [`Coherence::changed`] by the request that left at `t`, whose reply may then still be
    /// kept for what it says of other nodes (a new file's attributes, when its directory
    /// changed), unless another change came in between.
    pub fn changed_by(&self, t: &mut Ticket, ids: &[u64]) {
        let was = self.local.fetch_add(1, Ordering::AcqRel);
        if was == t.local {
            t.local = was + 1;
        }
        self.forget(ids);
    }

    /// Forgets every attribute kept, and makes replies to requests that left before keep
    /// nothing (as [`Coherence::changed`] does for some nodes).
    fn clear(&self) {
        self.local.fetch_add(1, Ordering::AcqRel);
        self.attrs().clear();
        self.absent().clear();
    }

    /// Taken before a request whose reply the kernel will cache leaves.
    pub fn ticket(&self) -> Ticket {
        Ticket {
            notices: self.epoch.load(Ordering::Acquire),
            local: self.local.load(Ordering::Acquire),
        }
    }

    /// Whether no notice was applied since the request that took `t` left.
    pub fn quiet_since(&self, t: Ticket) -> bool {
        self.epoch.load(Ordering::Acquire) == t.notices
    }

    /// Whether notices keep the kernel's caches right now (so an open may keep the file's
    /// cached pages without asking the server whether it changed).
    pub fn is_live(&self) -> bool {
        self.live.load(Ordering::Acquire)
    }

    /// The times the short ones: for what is cached apart from a ticket (listings).
    pub fn short(&self) -> CacheTimes {
        self.short
    }

    /// Runs `reply`, which hands the kernel something it caches, with the times it may cache
    /// it for: long while notices keep caches right and none came since `t`, none if one
    /// did, the short ones while there is no subscription.
    pub fn reply<R>(&self, t: Ticket, reply: impl FnOnce(CacheTimes) -> R) -> R {
        let _g = self.gate.read().unwrap_or_else(|p| p.into_inner());
        let times = if !self.live.load(Ordering::Acquire) {
            self.short
        } else if self.epoch.load(Ordering::Acquire) == t.notices {
            CacheTimes {
                attr: self.short.coherent,
                entry: self.short.coherent,
                ..self.short
            }
        } else {
            CacheTimes {
                attr: Duration::ZERO,
                entry: Duration::ZERO,
                ..self.short
            }
        };
        reply(times)
    }

    /// Counts a notice (and sets whether caches may be long), waiting for replies being
    /// handed to the kernel under an older count.
    fn advance(&self, live: Option<bool>) {
        let _w = self.gate.write().unwrap_or_else(|p| p.into_inner());
        if let Some(l) = live {
            self.live.store(l, Ordering::Release);
        }
        self.epoch.fetch_add(1, Ordering::AcqRel);
    }

    /// Ends the notice thread (the file system is going away).
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// The thread that keeps the subscription and applies its notices.
#[derive(Debug)]
pub struct Worker {
    pub(super) coherence: Arc<Coherence>,
    pub(super) nodes: Arc<Nodes>,
    pub(super) client: Arc<Client>,
}

/// Longest pause between attempts to subscribe again.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

impl Worker {
    /// Starts the thread, which sends its invalidations through `notifier`. Does nothing if
    /// the mount's options ask for no long caching.
    pub fn spawn(self, notifier: Notifier) -> std::io::Result<()> {
        if self.coherence.short.coherent.is_zero() {
            return Ok(());
        }
        std::thread::Builder::new()
            .name("dfs-notices".into())
            .spawn(move || self.run(&notifier))?;
        Ok(())
    }

    fn run(&self, k: &Notifier) {
        let c = &self.coherence;
        let mut pause = Duration::from_millis(100);
        let mut had = false;
        while !c.stop.load(Ordering::Relaxed) {
            let notices = match self.client.subscribe() {
                Ok(n) => n,
                Err(e) => {
                    tracing::debug!("cannot subscribe to the server's notices: {e}");
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(MAX_BACKOFF);
                    continue;
                }
            };
            pause = Duration::from_millis(100);
            self.learn_root();
            if !notices.local_changes() {
                tracing::info!("the server cannot see changes local programs make in the export: attributes and names are cached for {:?} only", c.short.attr);
                // Told of other clients' changes all the same (sooner than the short times).
            }
            c.advance(Some(notices.local_changes()));
            if had {
                // Whatever changed while there was no channel went untold.
                self.drop_all(k);
            }
            had = true;
            let ended = loop {
                if c.stop.load(Ordering::Relaxed) {
                    return;
                }
                match notices.next() {
                    Ok(Some(n)) => {
                        if self.apply(&n, k).is_err() {
                            // The kernel's end is gone: the mount is over.
                            return;
                        }
                    }
                    Ok(None) => {}
                    Err(e) => break e,
                }
            };
            tracing::info!(
                "the server's notices stopped ({ended}); caching briefly until they are back"
            );
            c.advance(Some(false));
            self.drop_all(k);
        }
    }

    /// Gives the root node its server inode number, which notices name it by.
    fn learn_root(&self) {
        if let Ok(a) = self
            .client
            .getattr(&current_creds(), self.client.root(), None)
        {
            self.nodes.root_ino(a.ino);
        }
    }

    /// Drops what `n` names from the kernel's caches. Fails only if the kernel's end of the
    /// mount is gone.
    ///
    /// The order matters. What this client kept is forgotten first (which also makes replies
    /// to requests that left before keep nothing), then the notice is counted (which waits
    /// for replies being handed to the kernel under the old count, and gives later ones short
    /// times unless their request left after it), and only then is the kernel told to drop
    /// what it holds. Counted first, a request could take the new count, find the old
    /// attributes still kept, and hand them to the kernel for a minute after it dropped them.
    fn apply(&self, n: &Notice, k: &Notifier) -> Result<(), ()> {
        if n.everything {
            self.drop_all(k);
            return Ok(());
        }
        let c = &self.coherence;
        let mut entries = Vec::new();
        for (dir, name) in &n.entries {
            if let Some(d) = self.nodes.peek_ino(*dir) {
                // The file it named changed too (a link count, a change time).
                if let Some(child) = self.nodes.peek_name(d, name.as_bytes()) {
                    c.changed(&[child]);
                }
                c.changed(&[d]);
                self.nodes.unknown_listing(d);
                self.nodes.unnamed(d, name.as_bytes());
                entries.push((d, name));
            }
        }
        let mut inodes = Vec::new();
        for ino in &n.inodes {
            if let Some(id) = self.nodes.peek_ino(*ino) {
                c.changed(&[id]);
                self.nodes.unknown_listing(id);
                inodes.push(id);
            }
        }
        c.advance(None);
        for (d, name) in entries {
            gone(k.inval_entry(INodeNo(d), OsStr::from_bytes(name.as_bytes())))?;
        }
        for id in inodes {
            gone(k.inval_inode(INodeNo(id), 0, 0))?;
        }
        Ok(())
    }

    /// Drops every name and every node's attributes and pages from the kernel's caches.
    fn drop_all(&self, k: &Notifier) {
        // In the order `apply` explains.
        self.coherence.clear();
        self.nodes.unknown_listings();
        self.coherence.advance(None);
        let (ids, names) = self.nodes.all();
        for (parent, name) in names {
            let _ = k.inval_entry(INodeNo(parent), OsStr::from_bytes(&name));
        }
        for id in ids {
            let _ = k.inval_inode(INodeNo(id), 0, 0);
        }
        let _ = k.inval_inode(INodeNo(ROOT), 0, 0);
    }
}

/// An invalidation of something the kernel does not hold fails with `ENOENT`, which is
/// fine; `ENODEV` (or a closed device) means the mount is gone.
fn gone(r: std::io::Result<()>) -> Result<(), ()> {
    match r {
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENODEV) | Some(libc::EBADF)) => Err(()),
        _ => Ok(()),
    }
}
