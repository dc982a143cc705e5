//! Importing a peer's region, and the remote operations on it.

use std::io::IoSlice;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::access::{Access, ImportKey, PeerIdentity};
use crate::addr::{ExportId, NodeAddr};
use crate::counters;
use crate::error::{Error, Result};
use crate::shm::{self, ShmImport};
use crate::span::Span;
use crate::sys::{AsWaitHandle, SharedBytesMut};
use crate::tcp::{self, TcpImport};
use crate::watch::Watcher;
use crate::wire::{Frame, Refusal};

/// How long an import may take, and how long any later transfer may block, unless set.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// Whether a deposit wakes the exporter's waiters once it has landed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Notify {
    /// Land silently; the receiver polls.
    No,
    /// Land, then notify the receiver.
    Yes,
}

pub(crate) fn refusal_error(reason: Refusal, peer: &str, id: ExportId, access: Access) -> Error {
    match reason {
        Refusal::NoSuchExport => Error::NoSuchExport {
            addr: peer.to_owned(),
            id,
        },
        Refusal::PermissionDenied => Error::PermissionDenied {
            addr: peer.to_owned(),
            id,
            access,
        },
        Refusal::Closing => Error::PeerGone(peer.to_owned()),
        Refusal::Busy => Error::Busy(peer.to_owned()),
    }
}

/// How to import: the timeout for the import and for later blocking transfers, an optional
/// greeting for the exporter's application, and the key the export may require.
#[derive(Clone, Debug)]
pub struct ImportOptions {
    /// Bounds the import itself and, on tcp, every later transfer that can block.
    pub timeout: Duration,
    /// Bytes handed to the exporter's application with the import (see
    /// [`crate::Export::take_greeting`]); at most [`crate::MAX_GREETING_LEN`].
    pub greeting: Vec<u8>,
    /// The key the exporter handed this process, for an export that requires one
    /// ([`crate::Permissions::with_key`]).
    pub key: Option<ImportKey>,
}

impl Default for ImportOptions {
    fn default() -> ImportOptions {
        ImportOptions {
            timeout: DEFAULT_TIMEOUT,
            greeting: Vec::new(),
            key: None,
        }
    }
}

impl ImportOptions {
    /// The import request as sent: the header, then the greeting.
    pub(crate) fn request(&self, id: ExportId, access: Access) -> Result<Vec<u8>> {
        let greeting = u16::try_from(self.greeting.len())
            .ok()
            .filter(|n| usize::from(*n) <= crate::wire::MAX_GREETING_LEN)
            .ok_or(Error::GreetingTooLong(self.greeting.len()))?;
        let mut out = Frame::ImportReq {
            export: id,
            access,
            greeting,
            key: self.key.is_some(),
        }
        .emit()
        .to_vec();
        if let Some(k) = &self.key {
            out.extend_from_slice(k.as_bytes());
        }
        out.extend_from_slice(&self.greeting);
        Ok(out)
    }
}

/// A connection to an endpoint that has not asked for anything yet.
///
/// It tells who the exporter is, as the kernel reports it, before this process offers
/// anything: an importer about to name a region of its own in a greeting can first restrict
/// that region to this very exporter. Then [`Dialed::import`] asks on the same connection.
#[derive(Debug)]
pub struct Dialed {
    backend: DialBackend,
    addr: NodeAddr,
    exporter: PeerIdentity,
}

#[derive(Debug)]
enum DialBackend {
    Shm(shm::ShmDial),
    Tcp(TcpImport),
}

impl Dialed {
    /// The process (shm) or address (tcp) at the other end.
    pub fn exporter(&self) -> &PeerIdentity {
        &self.exporter
    }

    /// Imports export `id` over this connection.
    pub fn import(self, id: ExportId, access: Access, opts: &ImportOptions) -> Result<Import> {
        let mut opts = opts.clone();
        opts.timeout = opts.timeout.max(Duration::from_millis(1));
        let (backend, len, mirror) = match self.backend {
            DialBackend::Shm(d) => {
                let (s, len, mirror) = d.import(id, access, &opts)?;
                (Backend::Shm(s), len, mirror)
            }
            DialBackend::Tcp(t) => {
                let (t, len, mirror) = t.import(id, access, &opts)?;
                (Backend::Tcp(t), len, mirror)
            }
        };
        Import::from_parts(
            backend,
            Parts {
                peer: self.addr,
                id,
                access,
                len,
                mirror,
                exporter: self.exporter,
                timeout: opts.timeout,
            },
        )
    }
}

#[derive(Debug)]
pub(crate) enum Backend {
    Shm(ShmImport),
    Tcp(TcpImport),
}

/// A peer's exported region, imported into this process.
///
/// All operations are thread-safe. Once the exporter is gone, every operation fails with
/// [`Error::PeerGone`].
#[derive(Debug)]
pub struct Import {
    // Field order matters: the watcher stops (and closes the connection) before the mapping
    // goes away.
    _watcher: Watcher,
    backend: Backend,
    alive: Arc<AtomicBool>,
    peer: NodeAddr,
    id: ExportId,
    access: Access,
    len: u64,
    mirror: u64,
    exporter: PeerIdentity,
    timeout: Duration,
}

/// An import's description, apart from its backend and watcher: what a handover carries.
#[derive(Debug)]
pub(crate) struct Parts {
    pub(crate) peer: NodeAddr,
    pub(crate) id: ExportId,
    pub(crate) access: Access,
    pub(crate) len: u64,
    pub(crate) mirror: u64,
    pub(crate) exporter: PeerIdentity,
    pub(crate) timeout: Duration,
}

impl Import {
    pub(crate) fn into_parts(self) -> (Watcher, Backend, Parts) {
        (
            self._watcher,
            self.backend,
            Parts {
                peer: self.peer,
                id: self.id,
                access: self.access,
                len: self.len,
                mirror: self.mirror,
                exporter: self.exporter,
                timeout: self.timeout,
            },
        )
    }

    pub(crate) fn from_parts(backend: Backend, p: Parts) -> Result<Import> {
        let alive = Arc::new(AtomicBool::new(true));
        let fd = match &backend {
            Backend::Shm(s) => s.conn.as_wait_handle(),
            Backend::Tcp(t) => t.fd(),
        };
        let watcher = Watcher::spawn(fd, alive.clone())
            .map_err(Error::io("starting the liveness watcher"))?;
        Ok(Import {
            _watcher: watcher,
            backend,
            alive,
            peer: p.peer,
            id: p.id,
            access: p.access,
            len: p.len,
            mirror: p.mirror,
            exporter: p.exporter,
            timeout: p.timeout,
        })
    }

    /// Imports export `id` of the endpoint at `addr`, asking for `access`, with
    /// [`DEFAULT_TIMEOUT`].
    pub fn open(addr: &NodeAddr, id: ExportId, access: Access) -> Result<Import> {
        Import::open_timeout(addr, id, access, DEFAULT_TIMEOUT)
    }

    /// As [`Import::open`], with a timeout for the import and for every later transfer that
    /// can block (tcp backend).
    pub fn open_timeout(
        addr: &NodeAddr,
        id: ExportId,
        access: Access,
        timeout: Duration,
    ) -> Result<Import> {
        let opts = ImportOptions {
            timeout,
            ..ImportOptions::default()
        };
        Import::open_with(addr, id, access, &opts)
    }

    /// As [`Import::open`], with every option.
    pub fn open_with(
        addr: &NodeAddr,
        id: ExportId,
        access: Access,
        opts: &ImportOptions,
    ) -> Result<Import> {
        Import::dial(addr, opts.timeout)?.import(id, access, opts)
    }

    /// Connects to the endpoint at `addr` without asking for anything yet, to learn who
    /// exports there first (see [`Dialed`]).
    pub fn dial(addr: &NodeAddr, timeout: Duration) -> Result<Dialed> {
        let timeout = timeout.max(Duration::from_millis(1));
        let (backend, exporter) = match addr {
            NodeAddr::Shm(name) => {
                let (d, who) = shm::dial(name, timeout)?;
                (DialBackend::Shm(d), who)
            }
            NodeAddr::Tcp(t) => {
                let (d, who) = tcp::dial(t, timeout)?;
                (DialBackend::Tcp(d), who)
            }
        };
        Ok(Dialed {
            backend,
            addr: addr.clone(),
            exporter,
        })
    }

    /// Bytes of the region's tail that are mapped twice; offsets up to `len() + mirror()` are
    /// valid, and the mirror aliases the tail.
    pub fn mirror(&self) -> u64 {
        self.mirror
    }

    /// The exporting process, as the kernel reports it (for shm, its pid and uid; for tcp,
    /// its address). Lets an application check that a region really belongs to the peer it
    /// is talking to.
    pub fn exporter(&self) -> &PeerIdentity {
        &self.exporter
    }

    fn span(&self, offset: u64, len: u64) -> Result<Span> {
        Span::new(self.len + self.mirror, offset, len)
    }

    /// The remote bytes at `offset..offset + len`, to write in place (the send side of
    /// zero-copy: build the data where it will be read, then publish it with
    /// [`Import::store_u64`]). The exporter may read or change them at any moment, hence
    /// [`SharedBytesMut`] rather than a reference. Writes into them count as deposited,
    /// copied-by-software bytes only if the caller reports them ([`Import::count_in_place`]).
    /// Only the shm backend maps the peer's memory.
    pub fn bytes_mut(&self, offset: u64, len: u64) -> Result<SharedBytesMut<'_>> {
        self.ready(Access::DEPOSIT)?;
        let span = self.span(offset, len)?;
        match &self.backend {
            Backend::Shm(s) => Ok(s.region.bytes_mut(span)),
            Backend::Tcp(_) => Err(Error::NeedsSharedMemory("writing remote memory in place")),
        }
    }

    /// The region's size in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Always false: regions have at least one byte. Present because `len` is.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The rights this import was granted.
    pub fn access(&self) -> Access {
        self.access
    }

    /// The exporter's address.
    pub fn peer(&self) -> &NodeAddr {
        &self.peer
    }

    /// The export's id.
    pub fn export_id(&self) -> ExportId {
        self.id
    }

    /// Whether the exporter is still there, as far as this process has seen.
    pub fn is_alive(&self) -> bool {
        self.alive.load(Ordering::Acquire)
    }

    fn ready(&self, needed: Access) -> Result<()> {
        if !self.access.contains(needed) {
            return Err(Error::NotImported {
                needed,
                have: self.access,
            });
        }
        if !self.is_alive() {
            return Err(Error::PeerGone(self.peer.to_string()));
        }
        Ok(())
    }

    fn failed(&self, e: Error) -> Error {
        if matches!(
            e,
            Error::PeerGone(_) | Error::Protocol { .. } | Error::Timeout(_)
        ) {
            self.alive.store(false, Ordering::Release);
        }
        e
    }

    /// Deposits `data` at `offset` of the remote region ("deliberate update").
    ///
    /// On shm this is one copy by this process straight into the exporter's memory; on tcp one
    /// frame whose payload the exporter receives in place. An empty `data` with
    /// [`Notify::Yes`] is a bare notification.
    pub fn write_at(&self, offset: u64, data: &[u8], notify: Notify) -> Result<()> {
        self.write_vectored_at(offset, &[IoSlice::new(data)], notify)
    }

    /// Deposits the concatenation of `bufs` at `offset`, as one transfer.
    pub fn write_vectored_at(
        &self,
        offset: u64,
        bufs: &[IoSlice<'_>],
        notify: Notify,
    ) -> Result<()> {
        self.ready(Access::DEPOSIT)?;
        let total: u64 = bufs.iter().map(|b| b.len() as u64).sum();
        let span = self.span(offset, total)?;
        match &self.backend {
            Backend::Shm(s) => {
                let mut at = offset;
                for b in bufs.iter().filter(|b| !b.is_empty()) {
                    s.region.copy_in(self.span(at, b.len() as u64)?, b);
                    at += b.len() as u64;
                }
                counters::add_copied(span.len());
                if notify == Notify::Yes {
                    s.notifier.signal();
                }
            }
            Backend::Tcp(t) => {
                let frame = Frame::Deposit {
                    offset,
                    len: total,
                    notify: notify == Notify::Yes,
                    word: false,
                };
                t.send(&frame, bufs).map_err(|e| self.failed(e))?;
            }
        }
        counters::add_deposited(span.len());
        if notify == Notify::Yes {
            counters::add_notification();
        }
        Ok(())
    }

    /// Deposits `data` at `offset`, then stores the control word `value` at `word_offset` with
    /// release ordering: the usual "data, then the index that publishes it" in one call, and on
    /// tcp in one frame.
    pub fn write_then_store(
        &self,
        offset: u64,
        data: &[u8],
        word_offset: u64,
        value: u64,
        notify: Notify,
    ) -> Result<()> {
        // Both ranges are checked before anything lands.
        self.ready(Access::DEPOSIT)?;
        self.span(offset, data.len() as u64)?;
        Span::word(self.len + self.mirror, word_offset)?;
        let Backend::Tcp(t) = &self.backend else {
            // On shm the two steps are already one copy and one store.
            self.write_at(offset, data, Notify::No)?;
            return self.store_u64(word_offset, value, notify);
        };
        let frame = Frame::Deposit {
            offset,
            len: data.len() as u64,
            notify: notify == Notify::Yes,
            word: true,
        };
        let mut trailer = [0u8; crate::wire::WORD_TRAILER];
        trailer[..8].copy_from_slice(&word_offset.to_le_bytes());
        trailer[8..].copy_from_slice(&value.to_le_bytes());
        t.send(&frame, &[IoSlice::new(data), IoSlice::new(&trailer)])
            .map_err(|e| self.failed(e))?;
        counters::add_deposited(data.len());
        counters::add_word();
        if notify == Notify::Yes {
            counters::add_notification();
        }
        Ok(())
    }

    /// Stores an 8-byte control word at an aligned `offset` with release ordering: the
    /// exporter that reads it with [`crate::Export::load_u64`] also sees every deposit made
    /// before it. This is how a ring publishes its write index.
    pub fn store_u64(&self, offset: u64, value: u64, notify: Notify) -> Result<()> {
        self.ready(Access::DEPOSIT)?;
        let span = Span::word(self.len + self.mirror, offset)?;
        match &self.backend {
            Backend::Shm(s) => {
                s.region.store_u64(span, value);
                if notify == Notify::Yes {
                    s.notifier.signal();
                }
            }
            Backend::Tcp(t) => {
                let frame = Frame::StoreWord {
                    offset,
                    value,
                    notify: notify == Notify::Yes,
                };
                t.send(&frame, &[]).map_err(|e| self.failed(e))?;
            }
        }
        counters::add_word();
        if notify == Notify::Yes {
            counters::add_notification();
        }
        Ok(())
    }

    /// Deposits up to `len` bytes of the regular file `file`, read from `file_offset`, at
    /// `offset` of the remote region; returns how many came from the file: fewer than `len`
    /// only where the file ends (or after an error that came after some bytes). No copy by
    /// this process: on shm the kernel's `pread` copies from the page cache into the region; on
    /// tcp the frame's payload goes from the page cache to the socket by `sendfile`, without
    /// passing through this process's memory at all, and the exporter receives it in place.
    ///
    /// Like [`Import::write_at`] without a notification: publish the bytes afterwards, with a
    /// control word. On tcp the frame is sized by the file's length when the call starts; if
    /// the file shrinks meanwhile, its tail is filled with zeros that lie beyond the count
    /// returned. Until they are published, the exporter may see any of these bytes change (on
    /// tcp they are the page cache's until the exporter's kernel copies them in).
    #[cfg(target_os = "linux")]
    pub fn deposit_from_file(
        &self,
        offset: u64,
        file: std::os::fd::BorrowedFd<'_>,
        file_offset: u64,
        len: usize,
    ) -> Result<usize> {
        self.ready(Access::DEPOSIT)?;
        let span = self.span(offset, len as u64)?;
        let at = i64::try_from(file_offset).map_err(|_| Error::Io {
            context: "reading the file to deposit",
            source: std::io::ErrorKind::InvalidInput.into(),
        })?;
        let n = match &self.backend {
            Backend::Shm(s) => {
                let mut into = s.region.bytes_mut(span);
                fill_from(len, |done| match into.get_mut(done..) {
                    Some(mut rest) => rest.pread_from(file, at.saturating_add(done as i64)),
                    None => Ok(0),
                })
                .map_err(Error::io("reading the file to deposit"))?
            }
            Backend::Tcp(t) => t
                .send_file(offset, file, at, len)
                .map_err(|e| self.failed(e))?,
        };
        counters::add_deposited(n);
        Ok(n)
    }

    /// Records `n` bytes that the caller wrote in place through [`Import::bytes_mut`] and is
    /// about to publish, so the counters see them as deposited (with no software copy by the
    /// NIC: whatever produced them, a `pread` from the page cache say, was the one copy).
    pub fn count_in_place(&self, n: usize) {
        counters::add_deposited(n);
    }

    /// Fetches `buf.len()` bytes from `offset` of the remote region (remote read).
    pub fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        self.ready(Access::FETCH)?;
        let span = self.span(offset, buf.len() as u64)?;
        match &self.backend {
            Backend::Shm(s) => {
                s.region.copy_out(span, buf);
                counters::add_copied(buf.len());
            }
            Backend::Tcp(t) => t.fetch(offset, buf).map_err(|e| self.failed(e))?,
        }
        counters::add_fetched(buf.len());
        Ok(())
    }

    /// Fetches an 8-byte control word with acquire ordering.
    pub fn load_u64(&self, offset: u64) -> Result<u64> {
        self.ready(Access::FETCH)?;
        let span = Span::word(self.len + self.mirror, offset)?;
        match &self.backend {
            Backend::Shm(s) => Ok(s.region.load_u64(span)),
            Backend::Tcp(t) => {
                let mut b = [0u8; 8];
                t.fetch(offset, &mut b).map_err(|e| self.failed(e))?;
                Ok(u64::from_ne_bytes(b))
            }
        }
    }
}

/// Repeats `read(done)` until `len` bytes are done or it returns 0 (the end of the file);
/// an error after some progress ends it with what was done.
#[cfg(target_os = "linux")]
pub(crate) fn fill_from(
    len: usize,
    mut read: impl FnMut(usize) -> std::io::Result<usize>,
) -> std::io::Result<usize> {
    let mut done = 0;
    while done < len {
        match read(done) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) if done == 0 => return Err(e),
            Err(_) => break,
        }
    }
    Ok(done)
}
