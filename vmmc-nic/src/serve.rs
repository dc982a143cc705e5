//! The exporter's side of one import connection, written once for both backends.
//!
//! Everything a peer sends passes [`Frame::parse`] and a [`Span`] check against the export
//! before it touches memory; anything else ends that connection with a logged reason and
//! nothing more.

use std::io::{self, Read};
use std::time::{Duration, Instant};

use std::sync::Arc;

use crate::access::{Access, ImportKey, PeerIdentity, KEY_LEN};
use crate::addr::ExportId;
use crate::export::{ExportShared, GreetingSlot};
use crate::span::Span;
use crate::sys::{AsWaitHandle, Region, WaitHandle};
use crate::wire::{Frame, Refusal, FRAME_LEN, WORD_TRAILER};

/// The word offset and value of a deposit's trailer.
pub(crate) fn split_trailer(t: &[u8; WORD_TRAILER]) -> (u64, u64) {
    let mut a = [0u8; 8];
    let mut b = [0u8; 8];
    a.copy_from_slice(&t[..8]);
    b.copy_from_slice(&t[8..]);
    (u64::from_le_bytes(a), u64::from_le_bytes(b))
}

/// One connection's byte stream, as the exporter needs it.
pub(crate) trait Wire {
    /// The next frame header, or `None` at a clean end of stream between frames.
    fn recv_frame(&mut self) -> io::Result<Option<[u8; FRAME_LEN]>>;
    /// Exactly `buf.len()` bytes (a greeting).
    fn recv_exact(&mut self, buf: &mut [u8]) -> io::Result<()>;
    /// Receives a deposit's payload straight into the region.
    fn recv_into(&mut self, region: &Region, span: Span) -> io::Result<()>;
    /// Sends a header with no payload.
    fn send_frame(&mut self, frame: &Frame) -> io::Result<()>;
    /// Sends a header followed by bytes straight from the region.
    fn send_from(&mut self, frame: &Frame, region: &Region, span: Span) -> io::Result<()>;
    /// Sends the grant; on the shm backend the region and notifier descriptors ride along.
    fn grant(&mut self, export: &ExportShared, access: Access) -> io::Result<()>;
    /// Whether deposits and fetches travel on this connection (tcp) or through shared
    /// memory (shm, where any frame after the grant is a violation).
    fn carries_data(&self) -> bool;
    /// Waits until a frame may be read or `stop` is signalled; true for stop. Stopping only
    /// between frames is what lets another process take the connection over mid-stream.
    fn wait_or_stop(&mut self, stop: WaitHandle<'_>) -> io::Result<bool>;
    /// A frame has started to arrive (its first bytes are readable): from now on the rest of
    /// it must arrive within [`FRAME_DEADLINE`]. Connections that cannot stall need nothing.
    fn begin_frame(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// How long the rest of a frame may take once its first bytes have arrived. Between frames
/// an importer may stay quiet as long as it likes (the exporter waits in `poll`); inside one,
/// a peer that stops sending would otherwise hold the connection's reader, and any handover
/// of the export (which waits for frame boundaries), until the export is revoked. Honest
/// frames arrive in microseconds; a few seconds leave room for a congested network and stay
/// below the handover's own wait, so a stalled peer is cut off before it can make a handover
/// fail.
pub(crate) const FRAME_DEADLINE: Duration = Duration::from_secs(3);

/// Below this difference, lowering the socket's receive timeout is not worth a system call.
const REARM_SLACK: Duration = Duration::from_millis(50);

/// A stream socket whose receive timeout (`SO_RCVTIMEO`) can be set.
pub(crate) trait RecvTimeout {
    fn set_recv_timeout(&self, t: Option<Duration>) -> io::Result<()>;
}

impl RecvTimeout for std::net::TcpStream {
    fn set_recv_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        self.set_read_timeout(t)
    }
}

#[cfg(unix)]
impl RecvTimeout for std::os::unix::net::UnixStream {
    fn set_recv_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        self.set_read_timeout(t)
    }
}

/// The deadline of the frame being read on one granted connection, enforced with the
/// socket's receive timeout, under which every read of a frame's bytes runs (the payload's
/// too, which `sys.rs` receives straight into the region). From the grant on the timeout
/// is [`FRAME_DEADLINE`]: waiting between frames is `poll`, which it does not touch, and a
/// frame that arrives in one piece costs no system call. It is lowered only to what is left
/// of the deadline when a frame arrives in pieces, and set back at the next frame.
///
/// The header and a deposit's trailer are held to the deadline exactly. A payload is held
/// to it at its start, and after that each wait for more of it to the time that was left
/// then: a peer that stops sending is cut off in time, one that trickles a byte at a time
/// is bounded per byte, not in all (that would take a receive that reports partial
/// progress, which `Region::recv_into` does not).
#[derive(Debug, Default)]
pub(crate) struct FrameClock {
    deadline: Option<Instant>,
    /// The receive timeout the socket has now, when known.
    armed: Option<Duration>,
}

impl FrameClock {
    /// The socket's timeout was just set to [`FRAME_DEADLINE`] (at the grant, or when an
    /// adopted connection is taken up), and no frame has begun.
    pub(crate) fn granted() -> FrameClock {
        FrameClock {
            deadline: None,
            armed: Some(FRAME_DEADLINE),
        }
    }

    /// A frame begins now.
    pub(crate) fn start(&mut self, sock: &impl RecvTimeout) -> io::Result<()> {
        self.deadline = Some(Instant::now() + FRAME_DEADLINE);
        if self.armed != Some(FRAME_DEADLINE) {
            sock.set_recv_timeout(Some(FRAME_DEADLINE))?;
            self.armed = Some(FRAME_DEADLINE);
        }
        Ok(())
    }

    /// Before a read inside a frame that may block: fails once the deadline has passed, and
    /// makes the socket's timeout end no later than the deadline (within [`REARM_SLACK`]).
    /// Outside a granted connection's frames (the handshake) it does nothing.
    pub(crate) fn arm(&mut self, sock: &impl RecvTimeout) -> io::Result<()> {
        let Some(deadline) = self.deadline else {
            return Ok(());
        };
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(frame_overdue());
        }
        if self.armed.is_none_or(|a| left + REARM_SLACK < a) {
            sock.set_recv_timeout(Some(left))?;
            self.armed = Some(left);
        }
        Ok(())
    }

    /// Reads exactly `buf.len()` bytes of the current frame. With `eof_ok`, a clean end of
    /// stream before the first byte is `Ok(false)`.
    pub(crate) fn read_exact<S: RecvTimeout>(
        &mut self,
        sock: &S,
        buf: &mut [u8],
        eof_ok: bool,
    ) -> io::Result<bool>
    where
        for<'a> &'a S: Read,
    {
        let mut got = 0;
        while got < buf.len() {
            self.arm(sock)?;
            let mut r: &S = sock;
            match r.read(&mut buf[got..]) {
                Ok(0) if got == 0 && eof_ok => return Ok(false),
                Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if self.deadline.is_some() => return Err(overdue_if_timeout(e)),
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }

    /// [`FrameClock::read_exact`] for a frame header: `None` at a clean end of stream.
    pub(crate) fn read_header<S: RecvTimeout>(
        &mut self,
        sock: &S,
    ) -> io::Result<Option<[u8; FRAME_LEN]>>
    where
        for<'a> &'a S: Read,
    {
        let mut hdr = [0u8; FRAME_LEN];
        Ok(self.read_exact(sock, &mut hdr, true)?.then_some(hdr))
    }
}

fn frame_overdue() -> io::Error {
    io::Error::new(
        io::ErrorKind::TimedOut,
        format!("a frame not complete within {FRAME_DEADLINE:?} of its start"),
    )
}

/// A receive timeout inside a frame is the frame's deadline passing.
pub(crate) fn overdue_if_timeout(e: io::Error) -> io::Error {
    match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => frame_overdue(),
        _ => e,
    }
}

/// How a connection ended.
#[derive(Debug)]
pub(crate) enum End {
    /// The peer closed between frames.
    Closed,
    /// The import was refused; the peer was told why.
    Refused(Refusal),
    /// The peer broke the protocol.
    Violation(String),
    /// The connection failed.
    Io(io::Error),
    /// The export is being handed to another process; the connection stays open for it.
    HandedOver,
}

impl From<io::Error> for End {
    fn from(e: io::Error) -> End {
        End::Io(e)
    }
}

/// An import request that passed the checks, for the caller to grant with [`Wire::grant`]
/// once it has recorded the importer.
pub(crate) struct Admitted {
    pub(crate) export: Arc<ExportShared>,
    pub(crate) access: Access,
    /// The greeting, with its reserved place in the export's queue: queued only once the
    /// grant is out, so that the application never sees a greeting whose import it cannot
    /// end by dropping it.
    pub(crate) greeting: Option<(Vec<u8>, GreetingSlot)>,
}

/// Reads the import request and refuses it, or admits it.
pub(crate) fn handshake<W: Wire>(
    w: &mut W,
    lookup: &dyn Fn(ExportId) -> Option<Arc<ExportShared>>,
    peer: &PeerIdentity,
) -> Result<Admitted, End> {
    let hdr = w.recv_frame()?.ok_or(End::Closed)?;
    let frame = Frame::parse(&hdr).map_err(|e| End::Violation(e.to_string()))?;
    let Frame::ImportReq {
        export,
        access,
        greeting,
        key,
    } = frame
    else {
        return Err(End::Violation(format!(
            "expected an import request, got {frame:?}"
        )));
    };
    let key = if key {
        let mut k = [0u8; KEY_LEN];
        w.recv_exact(&mut k)?;
        Some(ImportKey::from_bytes(k))
    } else {
        None
    };
    let mut bytes = vec![0u8; usize::from(greeting)];
    w.recv_exact(&mut bytes)?;
    let refuse = |w: &mut W, reason| -> End {
        match w.send_frame(&Frame::Refused { reason }) {
            Ok(()) => End::Refused(reason),
            Err(e) => End::Io(e),
        }
    };
    let Some(exp) = lookup(export) else {
        return Err(refuse(w, Refusal::NoSuchExport));
    };
    if !exp.permissions().permits(peer, access, key.as_ref()) {
        return Err(refuse(w, Refusal::PermissionDenied));
    }
    let greeting = if bytes.is_empty() {
        None
    } else {
        match exp.reserve_greeting(peer) {
            Some(slot) => Some((bytes, slot)),
            None => return Err(refuse(w, Refusal::Busy)),
        }
    };
    Ok(Admitted {
        export: exp,
        access,
        greeting,
    })
}

/// Serves frames until the peer closes or misbehaves.
pub(crate) fn serve<W: Wire>(w: &mut W, export: &ExportShared, access: Access) -> End {
    match serve_inner(w, export, access) {
        Ok(()) => End::Closed,
        Err(end) => end,
    }
}

fn serve_inner<W: Wire>(w: &mut W, export: &ExportShared, access: Access) -> Result<(), End> {
    let region = export.region();
    loop {
        if w.wait_or_stop(export.handover_fd())? {
            return Err(End::HandedOver);
        }
        w.begin_frame()?;
        match serve_frame(w, export, region, access) {
            Ok(true) => {}
            Ok(false) => return Ok(()),
            // A peer that stopped halfway through a frame broke the protocol.
            Err(End::Io(e)) if e.kind() == io::ErrorKind::TimedOut => {
                return Err(End::Violation(e.to_string()))
            }
            Err(end) => return Err(end),
        }
    }
}

/// Reads and applies one frame; false at a clean end of stream before it.
fn serve_frame<W: Wire>(
    w: &mut W,
    export: &ExportShared,
    region: &Region,
    access: Access,
) -> Result<bool, End> {
    let need = |right: Access| {
        if access.contains(right) {
            Ok(())
        } else {
            Err(End::Violation(format!("{right} without {right} access")))
        }
    };
    let span = |offset, len| {
        Span::new(region.len(), offset, len).map_err(|e| End::Violation(e.to_string()))
    };
    let Some(hdr) = w.recv_frame()? else {
        return Ok(false);
    };
    let frame = Frame::parse(&hdr).map_err(|e| End::Violation(e.to_string()))?;
    if !w.carries_data() {
        return Err(End::Violation(format!(
            "unexpected {frame:?} on a shm control connection"
        )));
    }
    match frame {
        Frame::Deposit {
            offset,
            len,
            notify,
            word,
        } => {
            need(Access::DEPOSIT)?;
            let s = span(offset, len)?;
            w.recv_into(region, s)?;
            if word {
                let mut t = [0u8; WORD_TRAILER];
                w.recv_exact(&mut t)?;
                let (at, value) = split_trailer(&t);
                let ws = Span::word(region.len(), at).map_err(|e| End::Violation(e.to_string()))?;
                region.store_u64(ws, value);
            }
            if notify {
                export.notifier().signal();
            }
        }
        Frame::StoreWord {
            offset,
            value,
            notify,
        } => {
            need(Access::DEPOSIT)?;
            let s = Span::word(region.len(), offset).map_err(|e| End::Violation(e.to_string()))?;
            region.store_u64(s, value);
            if notify {
                export.notifier().signal();
            }
        }
        Frame::FetchReq { offset, len } => {
            need(Access::FETCH)?;
            let s = span(offset, len)?;
            w.send_from(&Frame::FetchResp { len }, region, s)?;
        }
        other => {
            return Err(End::Violation(format!(
                "unexpected {other:?} from an importer"
            )))
        }
    }
    Ok(true)
}

/// [`Wire::wait_or_stop`] for a real socket.
pub(crate) fn poll_or_stop(conn: &impl AsWaitHandle, stop: WaitHandle<'_>) -> io::Result<bool> {
    loop {
        let ready = crate::notify::poll_readable(&[conn.as_wait_handle(), stop], None)?;
        match ready[..] {
            [_, true] => return Ok(true),
            [true, _] => return Ok(false),
            // Interrupted: wait again.
            _ => continue,
        }
    }
}
