//! The cross-host backend: one TCP connection per import, a deposit is one frame whose
//! payload the exporter receives straight into the region, a fetch is a request and a
//! response received straight into the caller's buffer.

use std::io::{self, IoSlice, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::sys::socket::{sendmsg, MsgFlags};

use crate::access::{Access, PeerIdentity};
use crate::addr::{ExportId, NodeAddr, TcpAddr};
use crate::error::{Error, Result};
use crate::export::{
    lock, run_connection, EndpointInner, ExportShared, Listener, HANDSHAKE_TIMEOUT,
};
use crate::import::{refusal_error, ImportOptions};
use crate::serve::{overdue_if_timeout, FrameClock, Wire, FRAME_DEADLINE};
use crate::shm::read_frame;
use crate::span::{check_region_len, Span};
use crate::sys::{check_mirror, Region};
use crate::wire::{Frame, FRAME_LEN};

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

impl AsFd for TcpConn {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.stream.as_fd()
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
            .recv_into(self.stream.as_fd(), span)
            .map_err(overdue_if_timeout)
    }

    fn send_frame(&mut self, frame: &Frame) -> io::Result<()> {
        self.stream.write_all(&frame.emit())
    }

    fn send_from(&mut self, frame: &Frame, region: &Region, span: Span) -> io::Result<()> {
        // A fetch response that the importer stops taking is its frame stalling too.
        region
            .send_from(self.stream.as_fd(), &frame.emit(), span)
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

    fn wait_or_stop(&mut self, stop: BorrowedFd<'_>) -> io::Result<bool> {
        crate::serve::poll_or_stop(&self.stream, stop)
    }

    fn begin_frame(&mut self) -> io::Result<()> {
        self.clock.start(&self.stream)
    }
}

/// How a `sendfile` of a deposit's payload went.
enum FileSend {
    /// This many bytes came from the file (fewer than asked where it ended).
    Sent(usize),
    /// The file failed after this many bytes; the socket is sound.
    FileFailed(usize, nix::errno::Errno),
    /// The socket failed: the import is over.
    SocketFailed(nix::errno::Errno),
    /// The file cannot be sent this way; nothing was sent.
    Unsupported,
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
            if let Some(refusal) = crate::shm::refused_first(&mut s, &self.peer, id, access) {
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
    pub(crate) fn into_fd(self) -> std::os::fd::OwnedFd {
        self.stream.into()
    }

    pub(crate) fn timeout(&self) -> Duration {
        self.timeout
    }

    pub(crate) fn fd(&self) -> BorrowedFd<'_> {
        self.stream.as_fd()
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

    /// Sends one frame and its payload slices with a single `sendmsg` where the kernel takes
    /// it all. `MSG_NOSIGNAL`: a dead peer is an error, not a SIGPIPE that kills the host
    /// program.
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
        let mut parts = &mut parts[..];
        let _guard = lock(&self.send);
        while !parts.is_empty() {
            match sendmsg::<()>(
                self.stream.as_raw_fd(),
                parts,
                &[],
                MsgFlags::MSG_NOSIGNAL,
                None,
            ) {
                Ok(n) => IoSlice::advance_slices(&mut parts, n),
                Err(nix::errno::Errno::EINTR) => {}
                Err(e) => return Err(self.io_error(e.into())),
            }
        }
        Ok(())
    }

    /// Sends a deposit frame of the bytes of `file` from `at` at `offset` of the region: the
    /// header, then the file's bytes by `sendfile` (from the page cache to the socket, no copy
    /// by this process). The frame is sized by what the file holds when the call starts, up
    /// to `len`; if it shrinks meanwhile, the frame is completed with zeros. Returns how many
    /// bytes came from the file. A file `sendfile` cannot send (a file system without splice
    /// support) is read into a buffer and sent from there instead.
    pub(crate) fn send_file(
        &self,
        offset: u64,
        file: BorrowedFd<'_>,
        at: i64,
        len: usize,
    ) -> Result<usize> {
        let st = nix::sys::stat::fstat(file).map_err(|e| Error::Io {
            context: "reading the file to deposit",
            source: e.into(),
        })?;
        if st.st_mode & libc::S_IFMT != libc::S_IFREG {
            return Err(Error::Io {
                context: "reading the file to deposit",
                source: io::Error::new(io::ErrorKind::InvalidInput, "not a regular file"),
            });
        }
        let len = (len as u64).min((st.st_size as u64).saturating_sub(at as u64)) as usize;
        self.send_file_sized(offset, file, at, len)
    }

    /// [`TcpImport::send_file`] of a frame of exactly `len` bytes, whatever the file holds.
    fn send_file_sized(
        &self,
        offset: u64,
        file: BorrowedFd<'_>,
        at: i64,
        len: usize,
    ) -> Result<usize> {
        if len == 0 {
            return Ok(0);
        }
        let frame = Frame::Deposit {
            offset,
            len: len as u64,
            notify: false,
            word: false,
        };
        let _guard = lock(&self.send);
        // The header waits for the payload behind it (`MSG_MORE`): one segment, not two.
        let hdr = frame.emit();
        let mut sent = 0;
        while sent < hdr.len() {
            match nix::sys::socket::send(
                self.stream.as_raw_fd(),
                &hdr[sent..],
                MsgFlags::MSG_NOSIGNAL | MsgFlags::from_bits_retain(libc::MSG_MORE),
            ) {
                Ok(n) => sent += n,
                Err(nix::errno::Errno::EINTR) => {}
                Err(e) => return Err(self.io_error(e.into())),
            }
        }
        let sock = self.stream.as_fd();
        // `sendfile` cannot be told `MSG_NOSIGNAL`: a peer that is gone must not kill the host
        // program with SIGPIPE.
        let sent = crate::sys::without_sigpipe(|| {
            use nix::errno::Errno as E;
            let mut pos = at;
            let mut done = 0usize;
            while done < len {
                match nix::sys::sendfile::sendfile64(sock, file, Some(&mut pos), len - done) {
                    Ok(0) => break,
                    Ok(n) => done += n,
                    Err(E::EINTR) => {}
                    Err(E::EINVAL | E::ENOSYS) if done == 0 => return FileSend::Unsupported,
                    Err(
                        e @ (E::EPIPE | E::ECONNRESET | E::EAGAIN | E::ETIMEDOUT | E::ENOTCONN),
                    ) => return FileSend::SocketFailed(e),
                    Err(e) => return FileSend::FileFailed(done, e),
                }
            }
            FileSend::Sent(done)
        });
        let mut s = &self.stream;
        let unsupported = matches!(sent, FileSend::Unsupported);
        let (mut done, file_error) = match sent {
            FileSend::Sent(n) => (n, None),
            FileSend::FileFailed(n, e) => (n, Some(e)),
            FileSend::SocketFailed(e) => return Err(self.io_error(e.into())),
            FileSend::Unsupported => (0, None),
        };
        let mut file_error = file_error.map(io::Error::from);
        if unsupported {
            // Through a buffer, as a `pread` and a `send` would.
            let mut buf = vec![0u8; len.min(64 << 10)];
            while done < len {
                let want = (len - done).min(buf.len());
                match nix::sys::uio::pread(file, &mut buf[..want], at + done as i64) {
                    Ok(0) => break,
                    Ok(n) => {
                        s.write_all(&buf[..n]).map_err(|e| self.io_error(e))?;
                        done += n;
                    }
                    Err(nix::errno::Errno::EINTR) => {}
                    Err(e) => {
                        file_error = Some(e.into());
                        break;
                    }
                }
            }
        }
        // Whatever the file did not give completes the frame as zeros.
        let zeros = [0u8; 4096];
        let mut left = len - done;
        while left > 0 {
            let n = left.min(zeros.len());
            s.write_all(&zeros[..n]).map_err(|e| self.io_error(e))?;
            left -= n;
        }
        match file_error {
            Some(source) if done == 0 => Err(Error::Io {
                context: "reading the file to deposit",
                source,
            }),
            _ => Ok(done),
        }
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

#[cfg(test)]
mod tests {
    use std::io::{IoSlice, Write};
    use std::os::fd::AsFd;
    use std::time::Duration;

    use crate::{Access, Endpoint, ImportOptions, Permissions, Wake};

    /// A frame declared longer than the file (one that shrank after it was measured) is
    /// completed with zeros, and the connection stays in step: the next deposit lands.
    #[test]
    fn a_file_shorter_than_its_frame_is_padded_with_zeros() {
        let ep = Endpoint::bind(&"tcp:127.0.0.1:0".parse().unwrap()).unwrap();
        let x = ep.export(64 << 10, Permissions::open()).unwrap();
        let crate::addr::NodeAddr::Tcp(addr) = ep.addr().clone() else {
            panic!("not tcp")
        };
        let (t, _) = super::dial(&addr, Duration::from_secs(5)).unwrap();
        let (t, _, _) = t
            .import(x.id(), Access::ALL, &ImportOptions::default())
            .unwrap();
        let mut f = std::fs::File::from(
            nix::sys::memfd::memfd_create(c"file", nix::sys::memfd::MFdFlags::MFD_CLOEXEC).unwrap(),
        );
        let body: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8 + 1).collect();
        f.write_all(&body).unwrap();
        // 10,000 bytes from 1,000 on hold 9,000: a 20,000-byte frame gets 11,000 zeros.
        assert_eq!(
            t.send_file_sized(100, f.as_fd(), 1000, 20_000).unwrap(),
            9_000
        );
        let after = crate::wire::Frame::Deposit {
            offset: 30_000,
            len: 5,
            notify: true,
            word: false,
        };
        t.send(&after, &[IoSlice::new(b"after")]).unwrap();
        assert_eq!(x.wait(Duration::from_secs(10)).unwrap(), Wake::Notified);
        let mut got = vec![0u8; 20_000];
        x.read_at(100, &mut got).unwrap();
        assert!(got[..9_000] == body[1000..], "the file's bytes");
        assert!(got[9_000..].iter().all(|&b| b == 0), "zeros after them");
        let mut tail = [0u8; 5];
        x.read_at(30_000, &mut tail).unwrap();
        assert_eq!(&tail, b"after");
        // As measured (the public path): the frame holds what the file has, no zeros.
        assert_eq!(t.send_file(200, f.as_fd(), 9_990, 4096).unwrap(), 10);
        assert_eq!(t.send_file(200, f.as_fd(), 20_000, 4096).unwrap(), 0);
    }
}
