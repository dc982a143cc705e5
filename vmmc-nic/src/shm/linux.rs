//! The one-host backend: regions are size-sealed memfds passed with `SCM_RIGHTS` over an
//! abstract Unix socket, and a deposit is one `memcpy` by the sender.
//!
//! Nothing is named on disk or in `/dev/shm`: the control socket is abstract and the regions
//! are memfds, so everything vanishes with the last process holding a descriptor.

use std::io::{self, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixListener, UnixStream};
use std::sync::Arc;
use std::time::Duration;

use nix::sys::socket::{getsockopt, sendmsg, sockopt, ControlMessage, MsgFlags};
use nix::sys::stat::{fchmod, Mode};

use crate::access::{Access, PeerIdentity};
use crate::addr::{ExportId, NodeAddr, ShmName};
use crate::error::{Error, Result};
use crate::export::{run_connection, EndpointInner, ExportShared, Listener, HANDSHAKE_TIMEOUT};
use crate::import::{refusal_error, ImportOptions};
use crate::notify::RemoteNotifier;
use crate::serve::{FrameClock, Wire, FRAME_DEADLINE};
use crate::span::Span;
use crate::sys::{recv_with_fds, Region};
use crate::wire::refused_first;
use crate::wire::{Frame, FRAME_LEN};

fn socket_addr(name: &ShmName) -> Result<SocketAddr> {
    SocketAddr::from_abstract_name(name.socket_name())
        .map_err(Error::io("forming the abstract socket name"))
}

pub(crate) fn listen(name: &ShmName) -> Result<(Listener, NodeAddr)> {
    let addr = NodeAddr::Shm(name.clone());
    let l = UnixListener::bind_addr(&socket_addr(name)?).map_err(|e| match e.kind() {
        io::ErrorKind::AddrInUse => Error::AddrInUse(addr.to_string()),
        _ => Error::Io {
            context: "binding the shm control socket",
            source: e,
        },
    })?;
    l.set_nonblocking(true)
        .map_err(Error::io("configuring the shm control socket"))?;
    Ok((Listener::Unix(l), addr))
}

/// Who is at the other end of a control connection, as the kernel reports it.
pub(crate) fn peer_identity(stream: &UnixStream) -> io::Result<PeerIdentity> {
    let c = getsockopt(stream, sockopt::PeerCredentials)?;
    Ok(PeerIdentity::Local {
        pid: c.pid(),
        uid: c.uid(),
        gid: c.gid(),
        groups: crate::sys::peer_groups(stream.as_fd())?,
    })
}

pub(crate) fn handle(inner: Arc<EndpointInner>, stream: UnixStream, peer: PeerIdentity) {
    if stream.set_nonblocking(false).is_err()
        || stream.set_read_timeout(Some(HANDSHAKE_TIMEOUT)).is_err()
    {
        return;
    }
    let mut conn = ShmConn {
        stream,
        clock: FrameClock::default(),
    };
    if let Some((export, access)) = run_connection(&inner, &mut conn, peer) {
        export.push_handed(conn.stream.into(), access, false);
    }
}

/// The exporter's end of a shm control connection.
struct ShmConn {
    stream: UnixStream,
    /// The deadline of a frame once the import is granted (any frame is a violation then,
    /// but a part of one must not hold the connection).
    clock: FrameClock,
}

impl AsFd for ShmConn {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.stream.as_fd()
    }
}

impl Wire for ShmConn {
    fn recv_frame(&mut self) -> io::Result<Option<[u8; FRAME_LEN]>> {
        self.clock.read_header(&self.stream)
    }

    fn recv_exact(&mut self, buf: &mut [u8]) -> io::Result<()> {
        self.clock.read_exact(&self.stream, buf, false).map(drop)
    }

    fn recv_into(&mut self, _: &Region, _: Span) -> io::Result<()> {
        Err(io::Error::other("shm connections carry no data"))
    }

    fn send_frame(&mut self, frame: &Frame) -> io::Result<()> {
        self.stream.write_all(&frame.emit())
    }

    fn send_from(&mut self, _: &Frame, _: &Region, _: Span) -> io::Result<()> {
        Err(io::Error::other("shm connections carry no data"))
    }

    fn grant(&mut self, export: &ExportShared, access: Access) -> io::Result<()> {
        let region = export.region();
        let memfd = region
            .fd()
            .ok_or_else(|| io::Error::other("export has no memfd"))?;
        // A fetch-only importer gets a read-only open of the memfd, so it cannot map it
        // writable; deposit access needs a writable mapping (and, as with real DMA-able memory,
        // lets the holder read too).
        let region_fd: OwnedFd = if access.contains(Access::DEPOSIT) {
            memfd.try_clone_to_owned()?
        } else {
            // A memfd is created mode 0777, and its holder can reopen `/proc/self/fd/N` with
            // any access its mode allows: a read-only descriptor would be worth a writable
            // one. Owner-read-only first, so only the exporter's user (who could ptrace the
            // exporter anyway) or root can reopen it at all; the exporter keeps its own
            // descriptor, and deposit importers get that one, never a reopen.
            fchmod(memfd, Mode::S_IRUSR)?;
            std::fs::File::open(format!("/proc/self/fd/{}", memfd.as_raw_fd()))?.into()
        };
        let event_fd = export.notifier().dup()?;
        let bytes = Frame::ImportOk {
            len: region.file_len(),
            mirror: region.mirror(),
        }
        .emit();
        let fds = [region_fd.as_raw_fd(), event_fd.as_raw_fd()];
        let iov = [io::IoSlice::new(&bytes)];
        let sent = loop {
            match sendmsg::<()>(
                self.stream.as_raw_fd(),
                &iov,
                &[ControlMessage::ScmRights(&fds)],
                MsgFlags::MSG_NOSIGNAL,
                None,
            ) {
                Err(nix::errno::Errno::EINTR) => continue,
                other => break other?,
            }
        };
        if sent != bytes.len() {
            return Err(io::Error::other("short send of the import grant"));
        }
        // From now on the importer never speaks: we wait (in `poll`, without a timeout) until
        // it closes, and a frame it starts anyway must not hold the connection.
        self.stream.set_read_timeout(Some(FRAME_DEADLINE))?;
        self.clock = FrameClock::granted();
        Ok(())
    }

    fn carries_data(&self) -> bool {
        false
    }

    fn wait_or_stop(&mut self, stop: std::os::fd::BorrowedFd<'_>) -> io::Result<bool> {
        crate::serve::poll_or_stop(&self.stream, stop)
    }

    fn begin_frame(&mut self) -> io::Result<()> {
        self.clock.start(&self.stream)
    }
}

/// An importer's view of a shm export: the mapped region and the exporter's eventfd.
#[derive(Debug)]
pub(crate) struct ShmImport {
    pub(crate) region: Region,
    pub(crate) notifier: RemoteNotifier,
    pub(crate) conn: UnixStream,
}

/// A control connection to an exporter that has not asked for anything yet.
#[derive(Debug)]
pub(crate) struct ShmDial {
    stream: UnixStream,
    peer: String,
}

/// Connects to the endpoint and learns from the kernel who listens there.
pub(crate) fn dial(name: &ShmName, timeout: Duration) -> Result<(ShmDial, PeerIdentity)> {
    let peer = NodeAddr::Shm(name.clone()).to_string();
    let stream = UnixStream::connect_addr(&socket_addr(name)?).map_err(|e| match e.kind() {
        io::ErrorKind::ConnectionRefused | io::ErrorKind::NotFound => {
            Error::NoEndpoint(peer.clone())
        }
        _ => Error::Io {
            context: "connecting to the shm endpoint",
            source: e,
        },
    })?;
    let d = ShmDial { stream, peer };
    d.stream
        .set_read_timeout(Some(timeout))
        .and_then(|()| d.stream.set_write_timeout(Some(timeout)))
        .map_err(|e| d.io_err(e, timeout))?;
    let exporter = peer_identity(&d.stream).map_err(|e| d.io_err(e, timeout))?;
    Ok((d, exporter))
}

impl ShmDial {
    fn io_err(&self, e: io::Error, timeout: Duration) -> Error {
        match e.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => Error::Timeout(timeout),
            io::ErrorKind::UnexpectedEof
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::BrokenPipe => Error::PeerGone(self.peer.clone()),
            _ => Error::Io {
                context: "importing over the shm control socket",
                source: e,
            },
        }
    }

    /// Asks for export `id` and maps what is granted.
    pub(crate) fn import(
        mut self,
        id: ExportId,
        access: Access,
        opts: &ImportOptions,
    ) -> Result<(ShmImport, u64, u64)> {
        let timeout = opts.timeout;
        let set = self
            .stream
            .set_read_timeout(Some(timeout))
            .and_then(|()| self.stream.set_write_timeout(Some(timeout)));
        set.map_err(|e| self.io_err(e, timeout))?;
        let mut request = opts.request(id, access)?;
        if let Err(e) = self.stream.write_all(&request) {
            // An endpoint at its limits answers before it reads and closes: its refusal
            // says more than our broken pipe.
            return Err(refused_first(&mut self.stream, &self.peer, id, access)
                .unwrap_or_else(|| self.io_err(e, timeout)));
        }
        request.clear();
        let mut buf = [0u8; FRAME_LEN];
        let mut got = 0;
        let mut fds: Vec<OwnedFd> = Vec::new();
        while got < FRAME_LEN {
            let (n, mut more) = recv_with_fds(self.stream.as_fd(), &mut buf[got..])
                .map_err(|e| self.io_err(e, timeout))?;
            if n == 0 {
                return Err(Error::PeerGone(self.peer));
            }
            got += n;
            fds.append(&mut more);
        }
        let peer = self.peer.clone();
        let protocol = |why: String| Error::Protocol {
            peer: peer.clone(),
            why,
        };
        let frame = Frame::parse(&buf).map_err(|e| protocol(e.to_string()))?;
        let (len, mirror) = match frame {
            Frame::ImportOk { len, mirror } => (len, mirror),
            Frame::Refused { reason } => return Err(refusal_error(reason, &peer, id, access)),
            other => {
                return Err(protocol(format!(
                    "expected an import answer, got {other:?}"
                )))
            }
        };
        if fds.len() != 2 {
            return Err(protocol(format!(
                "the grant carried {} descriptors, expected 2",
                fds.len()
            )));
        }
        let event_fd = fds
            .pop()
            .ok_or_else(|| protocol("missing eventfd".into()))?;
        let region_fd = fds.pop().ok_or_else(|| protocol("missing memfd".into()))?;
        let region = Region::adopt(region_fd, len, mirror, access.contains(Access::DEPOSIT))
            .map_err(protocol)?;
        let notifier = RemoteNotifier::adopt(event_fd).map_err(protocol)?;
        Ok((
            ShmImport {
                region,
                notifier,
                conn: self.stream,
            },
            len,
            mirror,
        ))
    }
}

/// Serves (watches) a shm import connection taken over from another process.
pub(crate) fn serve_adopted(
    export: Arc<ExportShared>,
    fd: OwnedFd,
    access: Access,
    addr: NodeAddr,
    reg: crate::export::Registration,
) {
    let stream = UnixStream::from(fd);
    let Ok(peer) = peer_identity(&stream) else {
        return;
    };
    if stream.set_read_timeout(Some(FRAME_DEADLINE)).is_err() {
        return;
    }
    let mut conn = ShmConn {
        stream,
        clock: FrameClock::granted(),
    };
    if let Some((export, access)) =
        crate::export::serve_registered(&addr, &mut conn, export, access, &peer, reg)
    {
        export.push_handed(conn.stream.into(), access, false);
    }
}
