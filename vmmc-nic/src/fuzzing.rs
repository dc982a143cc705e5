//! Entry points shared by the `cargo fuzz` targets and the corpus regression test.
//! Not a stable API.

use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;

use crate::access::{Access, PeerIdentity, Permissions};
use crate::addr::ExportId;
use crate::export::ExportShared;
use crate::serve::{handshake, serve, Wire};
use crate::span::Span;
use crate::sys::Region;
use crate::wire::{Frame, FRAME_LEN};

/// Size of the region the harness exports.
pub const FUZZ_REGION_LEN: u64 = 4096;

/// Feeds `data` to the exporter as the byte stream of a hostile tcp importer: handshake, then
/// frames. Panics only on a bug: a frame that does not survive `emit(parse(x)) == x`, or any
/// panic inside the serving code.
pub fn tcp_frames(data: &[u8]) {
    for chunk in data.chunks_exact(FRAME_LEN) {
        let mut hdr = [0u8; FRAME_LEN];
        hdr.copy_from_slice(chunk);
        if let Ok(frame) = Frame::parse(&hdr) {
            assert_eq!(
                frame.emit(),
                hdr,
                "{frame:?} does not re-encode to its bytes"
            );
        }
    }
    let Some(id) = ExportId::new(1) else { return };
    let Ok(export) = ExportShared::detached(id, FUZZ_REGION_LEN, Permissions::open()) else {
        return;
    };
    let export = Arc::new(export);
    let lookup = |want: ExportId| (want == id).then(|| export.clone());
    let peer = PeerIdentity::Remote(SocketAddr::from((Ipv4Addr::LOCALHOST, 1)));
    let mut wire = MemWire {
        input: data,
        sent: 0,
    };
    if let Ok(admitted) = handshake(&mut wire, &lookup, &peer) {
        let (exp, access) = (admitted.export, admitted.access);
        if wire.grant(&exp, access).is_ok() {
            let _ = serve(&mut wire, &exp, access);
        }
    }
}

/// Like [`tcp_frames`], but the first frame is a valid import request for everything, so
/// the fuzzer spends its time on the frames after it.
pub fn tcp_frames_after_import(data: &[u8]) {
    let Some(id) = ExportId::new(1) else { return };
    let mut stream = Frame::ImportReq {
        export: id,
        access: Access::ALL,
        greeting: 0,
        key: false,
    }
    .emit()
    .to_vec();
    stream.extend_from_slice(data);
    tcp_frames(&stream);
}

/// An in-memory connection: reads from the fuzz input, discards what is sent.
struct MemWire<'a> {
    input: &'a [u8],
    sent: usize,
}

impl MemWire<'_> {
    fn take(&mut self, n: usize) -> io::Result<&[u8]> {
        if self.input.len() < n {
            self.input = &[];
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        let (head, rest) = self.input.split_at(n);
        self.input = rest;
        Ok(head)
    }
}

impl Wire for MemWire<'_> {
    fn recv_frame(&mut self) -> io::Result<Option<[u8; FRAME_LEN]>> {
        if self.input.is_empty() {
            return Ok(None);
        }
        let mut hdr = [0u8; FRAME_LEN];
        hdr.copy_from_slice(self.take(FRAME_LEN)?);
        Ok(Some(hdr))
    }

    fn recv_exact(&mut self, buf: &mut [u8]) -> io::Result<()> {
        let n = buf.len();
        buf.copy_from_slice(self.take(n)?);
        Ok(())
    }

    fn recv_into(&mut self, region: &Region, span: Span) -> io::Result<()> {
        let bytes = self.take(span.len())?;
        region.copy_in(span, bytes);
        Ok(())
    }

    fn send_frame(&mut self, _: &Frame) -> io::Result<()> {
        self.sent += FRAME_LEN;
        Ok(())
    }

    fn send_from(&mut self, _: &Frame, region: &Region, span: Span) -> io::Result<()> {
        let mut scratch = vec![0u8; span.len()];
        region.copy_out(span, &mut scratch);
        self.sent += FRAME_LEN + scratch.len();
        Ok(())
    }

    fn grant(&mut self, export: &ExportShared, _: Access) -> io::Result<()> {
        self.send_frame(&Frame::ImportOk {
            len: export.region().file_len(),
            mirror: export.region().mirror(),
        })
    }

    fn carries_data(&self) -> bool {
        true
    }

    fn wait_or_stop(&mut self, _: crate::sys::WaitHandle<'_>) -> io::Result<bool> {
        Ok(false)
    }
}
