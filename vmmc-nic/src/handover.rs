//! Handing an export or an import to another process.
//!
//! The original VMMC sockets lost their connections across `fork`/`exec`. Here every part of
//! an export or import is a descriptor (the region's memfd, the notification eventfd, the
//! import connections), so a process can stop using one, send the descriptors with
//! `SCM_RIGHTS`, and another process carries on exactly where it stopped: the peer notices
//! nothing. Connection threads stop only between frames, so no deposit is lost or torn.

use std::collections::VecDeque;
use std::io::{self, IoSlice, Read};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};

use crate::access::{Access, PeerIdentity, Permissions};
use crate::addr::{ExportId, NodeAddr};
use crate::error::{Error, Result};
use crate::export::{lock, Export, ExportShared, HandedConn};
use crate::import::{Backend, Import, Parts};
use crate::notify::{Notifier, RemoteNotifier};
use crate::shm::ShmImport;
use crate::sys::{recv_with_fds, Region, MAX_FDS};
use crate::tcp::TcpImport;

/// Most application bytes a handover carries.
const MAX_APP: usize = 16 * 1024;

/// How long `hand_over` waits for connection threads to reach a frame boundary.
/// Most supplementary groups an identity carries across a handover.
const MAX_GROUPS: usize = 1024;
const STOP_TIMEOUT: Duration = Duration::from_secs(5);

fn bad(why: impl Into<String>) -> Error {
    Error::Protocol {
        peer: "a handover".into(),
        why: why.into(),
    }
}

/// Everything another process needs to carry on an export.
#[derive(Debug)]
pub struct ExportHandover {
    id: ExportId,
    len: u64,
    mirror: u64,
    addr: NodeAddr,
    memfd: OwnedFd,
    eventfd: OwnedFd,
    conns: Vec<HandedConn>,
}

/// Everything another process needs to carry on an import.
#[derive(Debug)]
pub struct ImportHandover {
    parts: Parts,
    conn: OwnedFd,
    /// The region and eventfd, on shm.
    shared: Option<(OwnedFd, OwnedFd)>,
}

impl Export {
    /// Stops serving this export here and packs it up for another process. New imports are
    /// refused from now on; the existing importers carry on with the new owner.
    pub fn hand_over(mut self) -> Result<ExportHandover> {
        let s: Arc<ExportShared> = self.shared.clone();
        if let Some(ep) = &self.endpoint {
            lock(&ep.exports).remove(&s.id());
        }
        {
            let _conns = lock(s.conns_for_handover());
            s.handing.store(true, Ordering::Release);
        }
        s.handover.signal();
        let deadline = Instant::now() + STOP_TIMEOUT;
        while s.live_importers() > 0 {
            if Instant::now() >= deadline {
                return Err(Error::Timeout(STOP_TIMEOUT));
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        let conns = std::mem::take(&mut *lock(&s.handed));
        let memfd = s
            .region()
            .fd()
            .ok_or_else(|| bad("the export has no memfd"))?
            .try_clone_to_owned()
            .map_err(Error::io("duplicating the region memfd"))?;
        let eventfd = s
            .notifier()
            .dup()
            .map_err(Error::io("duplicating the eventfd"))?;
        self.revoke_on_drop = false;
        Ok(ExportHandover {
            id: s.id(),
            len: s.region().file_len(),
            mirror: s.region().mirror(),
            addr: self.addr.clone(),
            memfd,
            eventfd,
            conns,
        })
    }

    /// Carries on an export handed over by another process. It serves the importers it came
    /// with and accepts no new ones.
    pub fn adopt(h: ExportHandover) -> Result<Export> {
        let region = Region::adopt(h.memfd, h.len, h.mirror, true).map_err(bad)?;
        let notifier = Notifier::adopt(h.eventfd).map_err(bad)?;
        let shared = Arc::new(ExportShared::new(
            h.id,
            region,
            Permissions::none(),
            notifier,
        )?);
        for c in h.conns {
            let export = shared.clone();
            let addr = h.addr.clone();
            // Counted before this returns, so the heir sees its importers at once.
            let reg = shared
                .register(c.fd.as_fd())
                .ok_or_else(|| bad("cannot register a handed-over connection"))?;
            let spawned = std::thread::Builder::new()
                .name("vmmc-conn".into())
                .spawn(move || {
                    if c.tcp {
                        crate::tcp::serve_adopted(export, c.fd, c.access, addr, reg)
                    } else {
                        crate::shm::serve_adopted(export, c.fd, c.access, addr, reg)
                    }
                });
            spawned.map_err(Error::io("starting a connection thread"))?;
        }
        Ok(Export {
            shared,
            endpoint: None,
            addr: h.addr,
            revoke_on_drop: true,
        })
    }
}

impl Import {
    /// Stops using this import here and packs it up for another process; the exporter sees
    /// no departure.
    pub fn hand_over(self) -> Result<ImportHandover> {
        if !self.is_alive() {
            return Err(Error::PeerGone(self.peer().to_string()));
        }
        let (watcher, backend, parts) = self.into_parts();
        watcher.detach();
        let (conn, shared, timeout) = match backend {
            Backend::Shm(s) => {
                let memfd = s
                    .region
                    .fd()
                    .ok_or_else(|| bad("the import has no memfd"))?
                    .try_clone_to_owned()
                    .map_err(Error::io("duplicating the region memfd"))?;
                let eventfd = s
                    .notifier
                    .dup()
                    .map_err(Error::io("duplicating the eventfd"))?;
                (OwnedFd::from(s.conn), Some((memfd, eventfd)), parts.timeout)
            }
            Backend::Tcp(t) => {
                let timeout = t.timeout();
                (t.into_fd(), None, timeout)
            }
        };
        Ok(ImportHandover {
            parts: Parts { timeout, ..parts },
            conn,
            shared,
        })
    }

    /// Carries on an import handed over by another process.
    pub fn adopt(h: ImportHandover) -> Result<Import> {
        let p = h.parts;
        let backend = match h.shared {
            Some((memfd, eventfd)) => Backend::Shm(ShmImport {
                region: Region::adopt(memfd, p.len, p.mirror, p.access.contains(Access::DEPOSIT))
                    .map_err(bad)?,
                notifier: RemoteNotifier::adopt(eventfd).map_err(bad)?,
                conn: UnixStream::from(h.conn),
            }),
            None => Backend::Tcp(TcpImport::from_fd(h.conn, p.peer.to_string(), p.timeout)),
        };
        Import::from_parts(backend, p)
    }
}

/// Sends handovers (any mix of exports and imports) over a Unix stream socket in one message,
/// with `app` bytes for the application's own state (at most 16 KiB).
pub fn send_handover(
    sock: &UnixStream,
    app: &[u8],
    exports: Vec<ExportHandover>,
    imports: Vec<ImportHandover>,
) -> Result<()> {
    if app.len() > MAX_APP {
        return Err(bad(format!(
            "{} bytes of application state is too much",
            app.len()
        )));
    }
    let mut w = Writer::default();
    let mut fds: Vec<OwnedFd> = Vec::new();
    w.bytes(b"VHO1");
    w.u32(app.len() as u32);
    w.bytes(app);
    w.u32(exports.len() as u32);
    for e in exports {
        w.u32(e.id.get());
        w.u64(e.len);
        w.u64(e.mirror);
        w.str(&e.addr.to_string());
        w.u32(e.conns.len() as u32);
        fds.push(e.memfd);
        fds.push(e.eventfd);
        for c in e.conns {
            w.u8(c.access.bits());
            w.u8(u8::from(c.tcp));
            fds.push(c.fd);
        }
    }
    w.u32(imports.len() as u32);
    for i in imports {
        let p = &i.parts;
        w.str(&p.peer.to_string());
        w.u32(p.id.get());
        w.u8(p.access.bits());
        w.u64(p.len);
        w.u64(p.mirror);
        w.u64(p.timeout.as_millis() as u64);
        match &p.exporter {
            PeerIdentity::Local {
                pid,
                uid,
                gid,
                groups,
            } => {
                w.u8(0);
                w.u32(*pid as u32);
                w.u32(*uid);
                w.u32(*gid);
                w.u32(groups.len().min(MAX_GROUPS) as u32);
                for g in groups.iter().take(MAX_GROUPS) {
                    w.u32(*g);
                }
            }
            PeerIdentity::Remote(sa) => {
                w.u8(1);
                w.str(&sa.to_string());
            }
        }
        w.u8(u8::from(i.shared.is_some()));
        fds.push(i.conn);
        if let Some((m, e)) = i.shared {
            fds.push(m);
            fds.push(e);
        }
    }
    if fds.len() > MAX_FDS {
        return Err(bad(format!(
            "{} descriptors are more than one handover carries",
            fds.len()
        )));
    }
    let mut msg = (w.0.len() as u32).to_le_bytes().to_vec();
    msg.extend_from_slice(&w.0);
    let raw: Vec<i32> = fds.iter().map(|f| f.as_raw_fd()).collect();
    let sent = sendmsg::<()>(
        sock.as_raw_fd(),
        &[IoSlice::new(&msg)],
        &[ControlMessage::ScmRights(&raw)],
        MsgFlags::MSG_NOSIGNAL,
        None,
    )
    .map_err(|e| Error::io("sending a handover")(e.into()))?;
    if sent < msg.len() {
        let mut s = sock;
        io::Write::write_all(&mut s, &msg[sent..]).map_err(Error::io("sending a handover"))?;
    }
    Ok(())
}

/// What [`recv_handover`] returns: the application's bytes, the exports and the imports.
pub type Received = (Vec<u8>, Vec<ExportHandover>, Vec<ImportHandover>);

/// Receives what [`send_handover`] sent.
pub fn recv_handover(sock: &UnixStream) -> Result<Received> {
    let mut head = [0u8; 4];
    let (n, fds) =
        recv_with_fds(sock.as_fd(), &mut head).map_err(Error::io("receiving a handover"))?;
    let mut fds: VecDeque<OwnedFd> = fds.into();
    if n == 0 {
        return Err(bad("the sender closed before the handover"));
    }
    let mut s = sock;
    s.read_exact(&mut head[n..])
        .map_err(Error::io("receiving a handover"))?;
    let len = u32::from_le_bytes(head) as usize;
    if len > 64 * 1024 {
        return Err(bad(format!("a handover of {len} bytes is too large")));
    }
    let mut body = vec![0u8; len];
    s.read_exact(&mut body)
        .map_err(Error::io("receiving a handover"))?;
    let mut r = Reader(&body);
    if r.take(4)? != b"VHO1" {
        return Err(bad("not a handover"));
    }
    let app_len = r.u32()? as usize;
    if app_len > MAX_APP {
        return Err(bad("too much application state"));
    }
    let app = r.take(app_len)?.to_vec();
    let mut fd = || {
        fds.pop_front()
            .ok_or_else(|| bad("a handover is missing descriptors"))
    };
    let mut exports = Vec::new();
    for _ in 0..r.u32()?.min(MAX_FDS as u32) {
        let id = ExportId::new(r.u32()?).ok_or_else(|| bad("export id zero"))?;
        let (len, mirror) = (r.u64()?, r.u64()?);
        let addr: NodeAddr = r.str()?.parse().map_err(|_| bad("bad address"))?;
        let (memfd, eventfd) = (fd()?, fd()?);
        let mut conns = Vec::new();
        for _ in 0..r.u32()?.min(MAX_FDS as u32) {
            let access = Access::from_bits(r.u8()?.into()).ok_or_else(|| bad("bad access"))?;
            let tcp = r.u8()? != 0;
            conns.push(HandedConn {
                fd: fd()?,
                access,
                tcp,
            });
        }
        exports.push(ExportHandover {
            id,
            len,
            mirror,
            addr,
            memfd,
            eventfd,
            conns,
        });
    }
    let mut imports = Vec::new();
    for _ in 0..r.u32()?.min(MAX_FDS as u32) {
        let peer: NodeAddr = r.str()?.parse().map_err(|_| bad("bad address"))?;
        let id = ExportId::new(r.u32()?).ok_or_else(|| bad("export id zero"))?;
        let access = Access::from_bits(r.u8()?.into()).ok_or_else(|| bad("bad access"))?;
        let (len, mirror) = (r.u64()?, r.u64()?);
        let timeout = Duration::from_millis(r.u64()?.max(1));
        let exporter = match r.u8()? {
            0 => {
                let (pid, uid, gid) = (r.u32()? as i32, r.u32()?, r.u32()?);
                let n = r.u32()?;
                if n as usize > MAX_GROUPS {
                    return Err(bad("too many groups"));
                }
                let groups = (0..n).map(|_| r.u32()).collect::<Result<Vec<u32>>>()?;
                PeerIdentity::Local {
                    pid,
                    uid,
                    gid,
                    groups,
                }
            }
            _ => PeerIdentity::Remote(r.str()?.parse().map_err(|_| bad("bad address"))?),
        };
        let has_shared = r.u8()? != 0;
        let conn = fd()?;
        let shared = if has_shared {
            Some((fd()?, fd()?))
        } else {
            None
        };
        imports.push(ImportHandover {
            parts: Parts {
                peer,
                id,
                access,
                len,
                mirror,
                exporter,
                timeout,
            },
            conn,
            shared,
        });
    }
    Ok((app, exports, imports))
}

#[derive(Default)]
struct Writer(Vec<u8>);

impl Writer {
    fn bytes(&mut self, b: &[u8]) {
        self.0.extend_from_slice(b);
    }
    fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    fn u32(&mut self, v: u32) {
        self.bytes(&v.to_le_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.bytes(&v.to_le_bytes());
    }
    fn str(&mut self, s: &str) {
        self.u32(s.len() as u32);
        self.bytes(s.as_bytes());
    }
}

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8]> {
        if self.0.len() < n {
            return Err(bad("a handover is truncated"));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }
    fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> Result<u32> {
        let mut b = [0u8; 4];
        b.copy_from_slice(self.take(4)?);
        Ok(u32::from_le_bytes(b))
    }
    fn u64(&mut self) -> Result<u64> {
        let mut b = [0u8; 8];
        b.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(b))
    }
    fn str(&mut self) -> Result<String> {
        let n = self.u32()? as usize;
        String::from_utf8(self.take(n)?.to_vec()).map_err(|_| bad("a string is not UTF-8"))
    }
}
