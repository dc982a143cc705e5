//! The frames both backends speak on their connections.
//!
//! A frame is a fixed 24-byte little-endian header, followed on `Deposit` and `FetchResp` by
//! exactly `len` payload bytes:
//!
//! ```text
//! 0      4    5     6        8          16         24
//! | magic | kind | flags | reserved | a (u64) | b (u64) |
//! ```
//!
//! [`Frame::parse`] is the only way from bytes to a frame and rejects anything malformed, so
//! past it a frame is well-formed; whether its range fits a region is checked where the region
//! is known.

use std::fmt;
use std::io::{self, Read};

use crate::access::Access;
use crate::addr::ExportId;
use crate::error::Error;
use crate::import::refusal_error;
use crate::span::MAX_REGION_LEN;

/// Size of every frame header.
pub(crate) const FRAME_LEN: usize = 24;
/// "VMNC" in little-endian order.
const MAGIC: u32 = u32::from_le_bytes(*b"VMNC");
/// Longest greeting an importer may attach to its import request.
pub const MAX_GREETING_LEN: usize = 1024;
/// Flag bit: raise a notification after applying this deposit.
const FLAG_NOTIFY: u8 = 1;
/// Flag bit on a deposit: a 16-byte trailer (word offset, value) follows the payload, and the
/// word is stored with release ordering once the payload has landed; one frame instead of two
/// for the common "data, then its index" pair.
const FLAG_WORD: u8 = 2;
/// Size of the trailer a [`FLAG_WORD`] deposit carries.
pub(crate) const WORD_TRAILER: usize = 16;
/// Flag bit on an import request: an [`crate::ImportKey`] of [`crate::access::KEY_LEN`] bytes
/// follows the header, before the greeting.
const FLAG_KEY: u8 = 1;

const KIND_IMPORT_REQ: u8 = 1;
const KIND_IMPORT_OK: u8 = 2;
const KIND_REFUSED: u8 = 3;
const KIND_DEPOSIT: u8 = 4;
const KIND_STORE_WORD: u8 = 5;
const KIND_FETCH_REQ: u8 = 6;
const KIND_FETCH_RESP: u8 = 7;

/// Why an exporter refused an import.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Refusal {
    NoSuchExport = 1,
    PermissionDenied = 2,
    Closing = 3,
    Busy = 4,
}

/// A validated frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Frame {
    /// Importer → exporter, first frame on a connection, followed by the import key (with
    /// `key`) and then `greeting` bytes for the exporter's application (a connection request,
    /// say).
    ImportReq {
        export: ExportId,
        access: Access,
        greeting: u16,
        key: bool,
    },
    /// Exporter → importer: granted; the region has `len` bytes, the last `mirror` of which
    /// are mapped twice. On the shm backend the memfd and eventfd ride along with this frame.
    ImportOk { len: u64, mirror: u64 },
    /// Exporter → importer: refused; the connection closes.
    Refused { reason: Refusal },
    /// Importer → exporter, tcp only: `len` payload bytes to land at `offset`, then, with
    /// `word`, a trailer naming a control word to store after them.
    Deposit {
        offset: u64,
        len: u64,
        notify: bool,
        word: bool,
    },
    /// Importer → exporter, tcp only: store an 8-byte control word with release ordering.
    StoreWord {
        offset: u64,
        value: u64,
        notify: bool,
    },
    /// Importer → exporter, tcp only: send back `len` bytes from `offset`.
    FetchReq { offset: u64, len: u64 },
    /// Exporter → importer, tcp only: `len` payload bytes follow.
    FetchResp { len: u64 },
}

/// What is wrong with a header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum WireError {
    BadMagic(u32),
    UnknownKind(u8),
    BadFlags { kind: u8, flags: u8 },
    NonzeroReserved(u16),
    BadExportId(u64),
    GreetingTooLong(u64),
    BadAccess(u64),
    BadRefusal(u64),
    Misaligned(u64),
    TooLong(u64),
    NonzeroField { kind: u8 },
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WireError::BadMagic(m) => write!(f, "bad frame magic {m:#010x}"),
            WireError::UnknownKind(k) => write!(f, "unknown frame kind {k}"),
            WireError::BadFlags { kind, flags } => {
                write!(f, "flags {flags:#x} not valid for frame kind {kind}")
            }
            WireError::NonzeroReserved(r) => write!(f, "reserved header bits set ({r:#x})"),
            WireError::BadExportId(id) => write!(f, "export id {id} out of range"),
            WireError::GreetingTooLong(n) => write!(f, "greeting of {n} bytes is too long"),
            WireError::BadAccess(a) => write!(f, "access bits {a:#x} invalid"),
            WireError::BadRefusal(r) => write!(f, "unknown refusal reason {r}"),
            WireError::Misaligned(o) => write!(f, "control word offset {o} not 8-byte aligned"),
            WireError::TooLong(l) => write!(f, "length {l} beyond the largest region"),
            WireError::NonzeroField { kind } => write!(f, "unused field set in frame kind {kind}"),
        }
    }
}

impl Frame {
    /// Validates a header. Lengths are bounded by the largest region, offsets are checked
    /// against the actual region by the caller.
    pub(crate) fn parse(buf: &[u8; FRAME_LEN]) -> Result<Frame, WireError> {
        let u64_at = |i: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&buf[i..i + 8]);
            u64::from_le_bytes(b)
        };
        let magic = u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]);
        if magic != MAGIC {
            return Err(WireError::BadMagic(magic));
        }
        let kind = buf[4];
        let flags = buf[5];
        let reserved = u16::from_le_bytes([buf[6], buf[7]]);
        if reserved != 0 {
            return Err(WireError::NonzeroReserved(reserved));
        }
        let (a, b) = (u64_at(8), u64_at(16));
        let allowed_flags = match kind {
            KIND_DEPOSIT => FLAG_NOTIFY | FLAG_WORD,
            KIND_STORE_WORD => FLAG_NOTIFY,
            KIND_IMPORT_REQ => FLAG_KEY,
            _ => 0,
        };
        if flags & !allowed_flags != 0 {
            return Err(WireError::BadFlags { kind, flags });
        }
        let notify = flags & FLAG_NOTIFY != 0;
        let bounded = |len: u64| {
            if len > MAX_REGION_LEN {
                Err(WireError::TooLong(len))
            } else {
                Ok(len)
            }
        };
        let unused = |v: u64| {
            if v == 0 {
                Ok(())
            } else {
                Err(WireError::NonzeroField { kind })
            }
        };
        let frame = match kind {
            KIND_IMPORT_REQ => {
                let greeting = a >> 32;
                if greeting > MAX_GREETING_LEN as u64 {
                    return Err(WireError::GreetingTooLong(greeting));
                }
                Frame::ImportReq {
                    export: ExportId::new(a as u32).ok_or(WireError::BadExportId(a))?,
                    access: Access::from_bits(b).ok_or(WireError::BadAccess(b))?,
                    greeting: greeting as u16,
                    key: flags & FLAG_KEY != 0,
                }
            }
            KIND_IMPORT_OK => {
                let (len, mirror) = (bounded(b)?, bounded(a)?);
                if mirror > len {
                    return Err(WireError::TooLong(mirror));
                }
                Frame::ImportOk { len, mirror }
            }
            KIND_REFUSED => {
                unused(b)?;
                Frame::Refused {
                    reason: match a {
                        1 => Refusal::NoSuchExport,
                        2 => Refusal::PermissionDenied,
                        3 => Refusal::Closing,
                        4 => Refusal::Busy,
                        _ => return Err(WireError::BadRefusal(a)),
                    },
                }
            }
            KIND_DEPOSIT => Frame::Deposit {
                offset: bounded(a)?,
                len: bounded(b)?,
                notify,
                word: flags & FLAG_WORD != 0,
            },
            KIND_STORE_WORD => {
                if a % 8 != 0 {
                    return Err(WireError::Misaligned(a));
                }
                Frame::StoreWord {
                    offset: bounded(a)?,
                    value: b,
                    notify,
                }
            }
            KIND_FETCH_REQ => Frame::FetchReq {
                offset: bounded(a)?,
                len: bounded(b)?,
            },
            KIND_FETCH_RESP => {
                unused(a)?;
                Frame::FetchResp { len: bounded(b)? }
            }
            other => return Err(WireError::UnknownKind(other)),
        };
        Ok(frame)
    }

    /// The header bytes of this frame.
    pub(crate) fn emit(&self) -> [u8; FRAME_LEN] {
        let (kind, flags, a, b) = match *self {
            Frame::ImportReq {
                export,
                access,
                greeting,
                key,
            } => (
                KIND_IMPORT_REQ,
                if key { FLAG_KEY } else { 0 },
                u64::from(export.get()) | u64::from(greeting) << 32,
                u64::from(access.bits()),
            ),
            Frame::ImportOk { len, mirror } => (KIND_IMPORT_OK, 0, mirror, len),
            Frame::Refused { reason } => (KIND_REFUSED, 0, reason as u64, 0),
            Frame::Deposit {
                offset,
                len,
                notify,
                word,
            } => (
                KIND_DEPOSIT,
                notify_bit(notify) | if word { FLAG_WORD } else { 0 },
                offset,
                len,
            ),
            Frame::StoreWord {
                offset,
                value,
                notify,
            } => (KIND_STORE_WORD, notify_bit(notify), offset, value),
            Frame::FetchReq { offset, len } => (KIND_FETCH_REQ, 0, offset, len),
            Frame::FetchResp { len } => (KIND_FETCH_RESP, 0, 0, len),
        };
        let mut out = [0u8; FRAME_LEN];
        out[0..4].copy_from_slice(&MAGIC.to_le_bytes());
        out[4] = kind;
        out[5] = flags;
        out[8..16].copy_from_slice(&a.to_le_bytes());
        out[16..24].copy_from_slice(&b.to_le_bytes());
        out
    }
}

fn notify_bit(notify: bool) -> u8 {
    if notify {
        FLAG_NOTIFY
    } else {
        0
    }
}

/// Reads one frame header; `None` at a clean end of stream before it.
pub(crate) fn read_frame(r: &mut impl Read) -> io::Result<Option<[u8; FRAME_LEN]>> {
    let mut buf = [0u8; FRAME_LEN];
    let mut got = 0;
    while got < FRAME_LEN {
        match r.read(&mut buf[got..]) {
            Ok(0) if got == 0 => return Ok(None),
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(Some(buf))
}

/// The refusal an exporter sent before it closed, if that is what is waiting to be read.
pub(crate) fn refused_first(
    r: &mut impl Read,
    peer: &str,
    id: ExportId,
    access: Access,
) -> Option<Error> {
    match Frame::parse(&read_frame(r).ok()??).ok()? {
        Frame::Refused { reason } => Some(refusal_error(reason, peer, id, access)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all_frames() -> Vec<Frame> {
        vec![
            Frame::ImportReq {
                export: ExportId::new(9).unwrap(),
                access: Access::FETCH,
                greeting: 0,
                key: false,
            },
            Frame::ImportReq {
                export: ExportId::new(u32::MAX).unwrap(),
                access: Access::ALL,
                greeting: MAX_GREETING_LEN as u16,
                key: true,
            },
            Frame::ImportOk {
                len: 4096,
                mirror: 0,
            },
            Frame::ImportOk {
                len: 8192,
                mirror: 4096,
            },
            Frame::Refused {
                reason: Refusal::PermissionDenied,
            },
            Frame::Deposit {
                offset: 8,
                len: 100,
                notify: true,
                word: false,
            },
            Frame::Deposit {
                offset: 8,
                len: 100,
                notify: false,
                word: true,
            },
            Frame::StoreWord {
                offset: 16,
                value: u64::MAX,
                notify: false,
            },
            Frame::FetchReq { offset: 1, len: 2 },
            Frame::FetchResp { len: 2 },
        ]
    }

    #[test]
    fn frames_round_trip() {
        for f in all_frames() {
            assert_eq!(Frame::parse(&f.emit()), Ok(f));
        }
    }

    #[test]
    fn malformed_headers_are_rejected() {
        let good = Frame::Deposit {
            offset: 0,
            len: 1,
            notify: false,
            word: false,
        }
        .emit();
        let with = |i: usize, v: u8| {
            let mut b = good;
            b[i] = v;
            Frame::parse(&b)
        };
        assert!(matches!(with(0, 0), Err(WireError::BadMagic(_))));
        assert!(matches!(with(4, 0), Err(WireError::UnknownKind(0))));
        assert!(matches!(with(4, 200), Err(WireError::UnknownKind(200))));
        assert!(matches!(with(5, 4), Err(WireError::BadFlags { .. })));
        assert!(matches!(with(6, 1), Err(WireError::NonzeroReserved(1))));
        assert!(matches!(with(23, 0xff), Err(WireError::TooLong(_))));
        let mut req = Frame::ImportReq {
            export: ExportId::new(1).unwrap(),
            access: Access::ALL,
            greeting: 0,
            key: false,
        }
        .emit();
        req[5] = 2;
        assert!(matches!(
            Frame::parse(&req),
            Err(WireError::BadFlags { .. })
        ));
        req[5] = 0;
        req[8] = 0;
        assert!(matches!(Frame::parse(&req), Err(WireError::BadExportId(0))));
        req[8] = 1;
        req[13] = 0x10; // a greeting of 4096 bytes
        assert!(matches!(
            Frame::parse(&req),
            Err(WireError::GreetingTooLong(4096))
        ));
        req[13] = 0;
        req[16] = 4;
        assert!(matches!(Frame::parse(&req), Err(WireError::BadAccess(4))));
        let mut word = Frame::StoreWord {
            offset: 8,
            value: 0,
            notify: false,
        }
        .emit();
        word[8] = 9;
        assert!(matches!(Frame::parse(&word), Err(WireError::Misaligned(9))));
        let mut ok = Frame::ImportOk { len: 1, mirror: 0 }.emit();
        ok[8] = 2;
        assert!(matches!(Frame::parse(&ok), Err(WireError::TooLong(2))));
    }
}
