//! The exporter's side of one import connection, written once for both backends.
//!
//! Everything a peer sends passes [`Frame::parse`] and a [`Span`] check against the export
//! before it touches memory; anything else ends that connection with a logged reason and
//! nothing more.

use std::io;
use std::os::fd::{AsFd, BorrowedFd};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use std::sync::Arc;

use crate::access::{Access, ImportKey, PeerIdentity, KEY_LEN};
use crate::addr::ExportId;
use crate::export::{ExportShared, GreetingSlot};
use crate::span::Span;
use crate::sys::Region;
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
    fn wait_or_stop(&mut self, stop: BorrowedFd<'_>) -> io::Result<bool>;
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
    loop {
        if w.wait_or_stop(export.handover_fd())? {
            return Err(End::HandedOver);
        }
        let Some(hdr) = w.recv_frame()? else {
            return Ok(());
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
                    let ws =
                        Span::word(region.len(), at).map_err(|e| End::Violation(e.to_string()))?;
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
                let s =
                    Span::word(region.len(), offset).map_err(|e| End::Violation(e.to_string()))?;
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
    }
}

/// [`Wire::wait_or_stop`] for a real socket.
pub(crate) fn poll_or_stop(conn: &impl AsFd, stop: BorrowedFd<'_>) -> io::Result<bool> {
    loop {
        let mut fds = [
            PollFd::new(conn.as_fd(), PollFlags::POLLIN),
            PollFd::new(stop, PollFlags::POLLIN),
        ];
        match poll(&mut fds, PollTimeout::NONE) {
            Err(nix::errno::Errno::EINTR) | Ok(0) => continue,
            Err(e) => return Err(e.into()),
            Ok(_) => {}
        }
        if fds[1].any().unwrap_or(false) {
            return Ok(true);
        }
        return Ok(false);
    }
}
