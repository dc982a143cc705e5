//! The cross-host backend: one TCP connection per import, a deposit is one frame whose
//! payload the exporter receives straight into the region, a fetch is a request and a
//! response received straight into the caller's buffer.

use std::io::{self, IoSlice, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::access::{Access, PeerIdentity};
use crate::addr::{ExportId, NodeAddr, TcpAddr};
use crate::error::{Error, Result};
use crate::export::{
    lock, run_connection, EndpointInner, ExportShared, Listener, HANDSHAKE_TIMEOUT,
};
use crate::import::{refusal_error, ImportOptions};
use crate::serve::{overdue_if_timeout, FrameClock, Wire, FRAME_DEADLINE};
use crate::span::{check_region_len, Span};
use crate::sys::{check_mirror, AsWaitHandle, Region, WaitHandle};
use crate::wire::{read_frame, Frame, FRAME_LEN};

pub(crate) fn listen(addr: &TcpAddr) -> Result<(Listener, NodeAddr)> {
    let addrs = addr.resolve()?;
    let l = TcpListener::bind(&addrs[..]).map_err(|e| match e.kind() {
        io::ErrorKind::AddrInUse => Error::AddrInUse(addr.to_string()),
        _ => Error::Io {
            context: "binding the tcp endpoint",
            source: e,
        },
    })?;
    l.set_nonblocking(true)
        .map_err(Error::io("configuring the tcp listener"))?;
    let local = l
        .local_addr()
        .map_err(Error::io("reading the bound address"))?;
    Ok((Listener::Tcp(l), NodeAddr::Tcp(TcpAddr::from(local))))
}

pub(crate) fn handle(inner: Arc<EndpointInner>, stream: TcpStream, peer: SocketAddr) {
    if stream.set_nonblocking(false).is_err()
        || stream.set_nodelay(true).is_err()
        || stream.set_read_timeout(Some(HANDSHAKE_TIMEOUT)).is_err()
    {
        return;
    }
    let mut conn = TcpConn {
        stream,
        clock: FrameClock::default(),
    };
    if let Some((export, access)) = run_connection(&inner, &mut conn, PeerIdentity::Remote(peer)) {
        export.push_handed(conn.stream.into(), access, true);
    }
}

/// The exporter's end of a tcp import connection.
struct TcpConn {
    stream: TcpStream,
    /// The deadline of the frame being received, once the import is granted.
    clock: FrameClock,
}

impl TcpConn {
    /// A connection whose import was granted (in another process, before a handover).
    fn granted(stream: TcpStream) -> io::Result<TcpConn> {
        let mut c = TcpConn {
            stream,
            clock: FrameClock::default(),
        };
        c.arm_granted()?;
        Ok(c)
    }

    /// The importer may stay quiet for as long as it likes between frames (the wait for the
    /// next one is a `poll`, without a timeout), but not in the middle of one: from the grant
    /// on, reads and writes inside a frame block for at most [`FRAME_DEADLINE`].
    fn arm_granted(&mut self) -> io::Result<()> {
        self.stream.set_read_timeout(Some(FRAME_DEADLINE))?;
        self.stream.set_write_timeout(Some(FRAME_DEADLINE))?;
        self.clock = FrameClock::granted();
        Ok(())
    }
}

#[cfg(unix)]
impl std::os::fd::AsFd for TcpConn {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        std::os::fd::AsFd::as_fd(&self.stream)
    }
}

#[cfg(windows)]
impl std::os::windows::io::AsSocket for TcpConn {
    fn as_socket(&self) -> std::os::windows::io::BorrowedSocket<'_> {
        std::os::windows::io::AsSocket::as_socket(&self.stream)
    }
}

impl Wire for TcpConn {
    fn recv_frame(&mut self) -> io::Result<Option<[u8; FRAME_LEN]>> {
        self.clock.read_header(&self.stream)
    }

    fn recv_exact(&mut self, buf: &mut [u8]) -> io::Result<()> {
        self.clock.read_exact(&self.stream, buf, false).map(drop)
    }

    fn recv_into(&mut self, region: &Region, span: Span) -> io::Result<()> {
        self.clock.arm(&self.stream)?;
        region
            .recv_into(self.stream.as_wait_handle(), span)
            .map_err(overdue_if_timeout)
    }

    fn send_frame(&mut self, frame: &Frame) -> io::Result<()> {
        self.stream.write_all(&frame.emit())
    }

    fn send_from(&mut self, frame: &Frame, region: &Region, span: Span) -> io::Result<()> {
        // A fetch response that the importer stops taking is its frame stalling too.
        region
            .send_from(self.stream.as_wait_handle(), &frame.emit(), span)
            .map_err(overdue_if_timeout)
    }

    fn grant(&mut self, export: &ExportShared, _: Access) -> io::Result<()> {
        self.send_frame(&Frame::ImportOk {
            len: export.region().file_len(),
            mirror: export.region().mirror(),
        })?;
        self.arm_granted()
    }

    fn carries_data(&self) -> bool {
        true
    }

    fn wait_or_stop(&mut self, stop: WaitHandle<'_>) -> io::Result<bool> {
        crate::serve::poll_or_stop(&self.stream, stop)
    }

    fn begin_frame(&mut self) -> io::Result<()> {
        self.clock.start(&self.stream)
    }
}

/// An importer's connection to a tcp export.
#[derive(Debug)]
pub(crate) struct TcpImport {
    stream: TcpStream,
    /// Serialises writers so frames never interleave.
    send: Mutex<()>,
    /// Serialises fetches so responses match requests.
    fetch: Mutex<()>,
    peer: String,
    timeout: Duration,
}

/// Connects to the endpoint; the exporter is whoever answers at the address.
pub(crate) fn dial(addr: &TcpAddr, timeout: Duration) -> Result<(TcpImport, PeerIdentity)> {
    let peer = addr.to_string();
    let mut last = None;
    let mut stream = None;
    for sa in addr.resolve()? {
        match TcpStream::connect_timeout(&sa, timeout) {
            Ok(s) => {
                stream = Some(s);
                break;
            }
            Err(e) => last = Some(e),
        }
    }
    let stream = match (stream, last) {
        (Some(s), _) => s,
        (None, Some(e)) if e.kind() == io::ErrorKind::ConnectionRefused => {
            return Err(Error::NoEndpoint(peer))
        }
        (None, Some(e))
            if matches!(
                e.kind(),
                io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock
            ) =>
        {
            return Err(Error::Timeout(timeout))
        }
        (None, e) => {
            return Err(Error::Io {
                context: "connecting to the tcp endpoint",
                source: e.unwrap_or_else(|| io::ErrorKind::NotFound.into()),
            })
        }
    };
    let imp = TcpImport {
        stream,
        send: Mutex::new(()),
        fetch: Mutex::new(()),
        peer,
        timeout,
    };
    imp.stream.set_nodelay(true).map_err(|e| imp.io_error(e))?;
    let exporter = PeerIdentity::Remote(imp.stream.peer_addr().map_err(|e| imp.io_error(e))?);
    Ok((imp, exporter))
}

impl TcpImport {
    /// Asks for export `id` on a dialed connection; on success the connection is the import.
    pub(crate) fn import(
        mut self,
        id: ExportId,
        access: Access,
        opts: &ImportOptions,
    ) -> Result<(TcpImport, u64, u64)> {
        self.timeout = opts.timeout;
        let setup = |s: &TcpStream| -> io::Result<()> {
            s.set_read_timeout(Some(opts.timeout))?;
            s.set_write_timeout(Some(opts.timeout))
        };
        setup(&self.stream).map_err(|e| self.io_error(e))?;
        let mut s = &self.stream;
        if let Err(e) = s.write_all(&opts.request(id, access)?) {
            // An endpoint at its limits answers before it reads and closes: its refusal
            // says more than the reset.
            if let Some(refusal) = crate::wire::refused_first(&mut s, &self.peer, id, access) {
                return Err(refusal);
            }
            return Err(self.io_error(e));
        }
        let hdr = read_frame(&mut s)
            .map_err(|e| self.io_error(e))?
            .ok_or_else(|| Error::PeerGone(self.peer.clone()))?;
        let frame = Frame::parse(&hdr).map_err(|e| self.protocol(e.to_string()))?;
        match frame {
            Frame::ImportOk { len, mirror } => {
                check_region_len(len).map_err(|e| self.protocol(e.to_string()))?;
                check_mirror(len, mirror).map_err(|e| self.protocol(e.to_string()))?;
                Ok((self, len, mirror))
            }
            Frame::Refused { reason } => Err(refusal_error(reason, &self.peer, id, access)),
            other => Err(self.protocol(format!("expected an import answer, got {other:?}"))),
        }
    }
}

impl TcpImport {
    /// Rebuilds an import around a connection handed over from another process.
    #[cfg(unix)]
    pub(crate) fn from_fd(fd: std::os::fd::OwnedFd, peer: String, timeout: Duration) -> TcpImport {
        TcpImport {
            stream: TcpStream::from(fd),
            send: Mutex::new(()),
            fetch: Mutex::new(()),
            peer,
            timeout,
        }
    }

    /// The connection, for a handover.
    #[cfg(unix)]
    pub(crate) fn into_fd(self) -> std::os::fd::OwnedFd {
        self.stream.into()
    }

    pub(crate) fn timeout(&self) -> Duration {
        self.timeout
    }

    pub(crate) fn fd(&self) -> WaitHandle<'_> {
        self.stream.as_wait_handle()
    }

    /// The connection, for the file-deposit path.
    #[cfg(target_os = "linux")]
    pub(crate) fn stream(&self) -> &TcpStream {
        &self.stream
    }

    /// The lock that keeps frames whole.
    #[cfg(target_os = "linux")]
    pub(crate) fn send_lock(&self) -> &Mutex<()> {
        &self.send
    }

    fn protocol(&self, why: String) -> Error {
        // A peer that breaks the protocol gets no second chance on this connection.
        let _ = self.stream.shutdown(Shutdown::Both);
        Error::Protocol {
            peer: self.peer.clone(),
            why,
        }
    }

    pub(crate) fn io_error(&self, e: io::Error) -> Error {
        // Any failure mid-frame leaves the stream out of step: the import is over.
        let _ = self.stream.shutdown(Shutdown::Both);
        match e.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => Error::Timeout(self.timeout),
            _ => Error::PeerGone(self.peer.clone()),
        }
    }

    /// Sends one frame and its payload slices with a single system call where the kernel
    /// takes it all (`sys::send_all`).
    pub(crate) fn send(&self, frame: &Frame, payload: &[IoSlice<'_>]) -> Result<()> {
        let hdr = frame.emit();
        let mut parts: Vec<IoSlice<'_>> = Vec::with_capacity(payload.len() + 1);
        parts.push(IoSlice::new(&hdr));
        parts.extend(
            payload
                .iter()
                .filter(|s| !s.is_empty())
                .map(|s| IoSlice::new(s)),
        );
        let _guard = lock(&self.send);
        crate::sys::send_all(&self.stream, &mut parts).map_err(|e| self.io_error(e))
    }

    /// Fetches `buf.len()` bytes from `offset`, received straight into `buf`.
    pub(crate) fn fetch(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        let len = buf.len() as u64;
        let _guard = lock(&self.fetch);
        self.send(&Frame::FetchReq { offset, len }, &[])?;
        let mut s = &self.stream;
        let hdr = read_frame(&mut s)
            .map_err(|e| self.io_error(e))?
            .ok_or_else(|| self.io_error(io::ErrorKind::UnexpectedEof.into()))?;
        match Frame::parse(&hdr).map_err(|e| self.protocol(e.to_string()))? {
            Frame::FetchResp { len: got } if got == len => {}
            other => {
                return Err(self.protocol(format!(
                    "expected a fetch response of {len} bytes, got {other:?}"
                )))
            }
        }
        s.read_exact(buf).map_err(|e| self.io_error(e))
    }
}

/// Serves a tcp import connection taken over from another process.
#[cfg(unix)]
pub(crate) fn serve_adopted(
    export: Arc<ExportShared>,
    fd: std::os::fd::OwnedFd,
    access: Access,
    addr: NodeAddr,
    reg: crate::export::Registration,
) {
    let stream = TcpStream::from(fd);
    let peer = match stream.peer_addr() {
        Ok(sa) => PeerIdentity::Remote(sa),
        Err(_) => return,
    };
    let Ok(mut conn) = TcpConn::granted(stream) else {
        return;
    };
    if let Some((export, access)) =
        crate::export::serve_registered(&addr, &mut conn, export, access, &peer, reg)
    {
        export.push_handed(conn.stream.into(), access, true);
    }
}
