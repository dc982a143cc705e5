//! The one error type of the crate.
//!
//! Each variant names what went wrong in terms a user can act on; the messages are written to
//! be printed as they are.

use std::io;
use std::time::Duration;

use crate::access::Access;
use crate::addr::ExportId;

/// Shorthand for results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong on a VMMC endpoint.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An address string did not parse.
    #[error("invalid address {addr:?}: {why}")]
    BadAddress {
        /// The address as given.
        addr: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// An export id string did not parse or was zero.
    #[error("invalid export id {0:?}: expected a number from 1 to 4294967295")]
    BadExportId(String),
    /// Another endpoint already listens at this address.
    #[error("address {0} is already in use by another endpoint")]
    AddrInUse(String),
    /// Nothing listens at this address.
    #[error("no VMMC endpoint is listening at {0}")]
    NoEndpoint(String),
    /// The endpoint exists but has no such export (never had, or it was revoked).
    #[error("endpoint {addr} has no export {id}")]
    NoSuchExport {
        /// The endpoint asked.
        addr: String,
        /// The export asked for.
        id: ExportId,
    },
    /// The exporter's permissions do not grant the requested access to this process.
    #[error("endpoint {addr} refuses {access} access to export {id} for this peer")]
    PermissionDenied {
        /// The endpoint asked.
        addr: String,
        /// The export asked for.
        id: ExportId,
        /// The access that was requested.
        access: Access,
    },
    /// The operation needs an access right the import was not opened with.
    #[error("this operation needs {needed} access, but the import was opened for {have}")]
    NotImported {
        /// What the operation needs.
        needed: Access,
        /// What the import holds.
        have: Access,
    },
    /// The peer process exited, closed the connection, revoked the export or broke the protocol
    /// earlier; the import is dead for good.
    #[error("peer {0} is gone (it exited, revoked the export, or the connection broke)")]
    PeerGone(String),
    /// An offset and length that do not fit the region.
    #[error("range {offset}+{len} does not fit a region of {region_len} bytes")]
    OutOfRange {
        /// Start of the requested range.
        offset: u64,
        /// Length of the requested range.
        len: u64,
        /// Size of the region.
        region_len: u64,
    },
    /// A control word must be 8-byte aligned so that it can be stored atomically.
    #[error("control word offset {0} is not a multiple of 8")]
    Misaligned(u64),
    /// A region size of zero or beyond the supported maximum.
    #[error("invalid region size {0}: must be from 1 byte to 1 TiB")]
    BadSize(u64),
    /// A mirrored tail must be whole pages and fit the region.
    #[error("cannot mirror {mirror} bytes of a {len}-byte region: both must be multiples of the page size and the mirror no larger than the region")]
    BadMirror {
        /// Region size.
        len: u64,
        /// Requested mirror.
        mirror: u64,
    },
    /// The exporter has too many greetings waiting to be taken.
    #[error("endpoint {0} is busy: too many pending greetings")]
    Busy(String),
    /// A greeting longer than [`crate::MAX_GREETING_LEN`].
    #[error("a greeting of {0} bytes is longer than the limit")]
    GreetingTooLong(usize),
    /// The operation needs the peer's memory mapped here (shm backend only).
    #[error("{0} needs the shm backend")]
    NeedsSharedMemory(&'static str),
    /// A feature this system does not have yet (the shm backend on Windows): failing at
    /// once beats half-working.
    #[error("{0} is not implemented on this system yet")]
    NotImplemented(&'static str),

    /// A wait or a transfer did not finish in time.
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    /// The peer sent something that breaks the protocol; the connection is dropped.
    #[error("protocol violation by {peer}: {why}")]
    Protocol {
        /// Who sent it.
        peer: String,
        /// What was wrong.
        why: String,
    },
    /// A system call failed.
    #[error("{context}: {source}")]
    Io {
        /// What the crate was doing.
        context: &'static str,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
}

impl Error {
    pub(crate) fn io(context: &'static str) -> impl FnOnce(io::Error) -> Error {
        move |source| Error::Io { context, source }
    }
}
