//! The one-host backend on Windows: not implemented yet, and saying so.
//!
//! Windows has what it needs (pagefile-backed sections shared by handle duplication, events,
//! a named pipe whose server asks `GetNamedPipeClientProcessId` who connected), but until it
//! is built an `shm:` address fails at once with [`Error::NotImplemented`], at `bind` and at
//! `dial` alike, instead of half-working. The types below exist so the backend-neutral code
//! compiles unchanged; they cannot be constructed.

use std::time::Duration;

use crate::access::{Access, PeerIdentity};
use crate::addr::{ExportId, NodeAddr, ShmName};
use crate::error::{Error, Result};
use crate::export::Listener;
use crate::import::ImportOptions;
use crate::sys::Region;

const WHAT: &str = "the shm backend (shared memory between processes) on Windows";

/// A value that cannot exist: what stands for a shm connection here.
#[derive(Debug)]
pub(crate) enum Never {}

impl std::os::windows::io::AsSocket for Never {
    fn as_socket(&self) -> std::os::windows::io::BorrowedSocket<'_> {
        match *self {}
    }
}

/// Stands for the exporter's notifier in a shm import.
#[derive(Debug)]
pub(crate) struct RemoteNotifier(Never);

impl RemoteNotifier {
    pub(crate) fn signal(&self) {
        match self.0 {}
    }
}

/// A shm import; never built on Windows.
#[derive(Debug)]
pub(crate) struct ShmImport {
    pub(crate) region: Region,
    pub(crate) notifier: RemoteNotifier,
    pub(crate) conn: Never,
}

/// A dialed shm connection; never built on Windows.
#[derive(Debug)]
pub(crate) struct ShmDial(Never);

impl ShmDial {
    pub(crate) fn import(
        self,
        _: ExportId,
        _: Access,
        _: &ImportOptions,
    ) -> Result<(ShmImport, u64, u64)> {
        match self.0 {}
    }
}

pub(crate) fn listen(_: &ShmName) -> Result<(Listener, NodeAddr)> {
    Err(Error::NotImplemented(WHAT))
}

pub(crate) fn dial(_: &ShmName, _: Duration) -> Result<(ShmDial, PeerIdentity)> {
    Err(Error::NotImplemented(WHAT))
}
