//! An emulated VMMC network interface.
//!
//! VMMC (Virtual Memory-Mapped Communication, from Princeton's SHRIMP project) lets a
//! receiver *export* a region of its memory and a sender *import* it once, after which the
//! sender *deposits* bytes straight into the receiver's memory: no receive call, no
//! intermediate buffer, no receiver CPU. VMMC-2 adds *remote fetch* and *notifications*.
//! This crate gives a process such an endpoint, with two backends behind one API, chosen by
//! address:
//!
//! * `shm:NAME` — processes on one host. A region is a size-sealed memfd passed to the
//!   importer with `SCM_RIGHTS` after the permission check; a deposit is exactly one
//!   `memcpy`, made by the sender (the emulated DMA).
//! * `tcp:HOST:PORT` — processes on different hosts. A deposit travels as one frame whose
//!   payload the exporter receives directly into the region.
//!
//! ```
//! use std::time::Duration;
//! use vmmc_nic::{Access, Endpoint, Import, Notify, Permissions, Wake};
//!
//! let addr = format!("shm:doc-example-{}", std::process::id()).parse().unwrap();
//! let receiver = Endpoint::bind(&addr).unwrap();
//! let region = receiver.export(1 << 20, Permissions::open()).unwrap();
//!
//! // Usually in another process:
//! let sender = Import::open(&addr, region.id(), Access::DEPOSIT).unwrap();
//! sender.write_at(0, b"block", Notify::No).unwrap();
//! sender.store_u64(4096, 5, Notify::Yes).unwrap(); // publish: 5 bytes are ready
//!
//! assert_eq!(region.wait(Duration::from_secs(5)).unwrap(), Wake::Notified);
//! assert_eq!(region.load_u64(4096).unwrap(), 5);
//! let mut got = [0u8; 5];
//! region.read_at(0, &mut got).unwrap();
//! assert_eq!(&got, b"block");
//! ```
//!
//! On Windows (`x86_64-pc-windows-gnu`) only the tcp backend exists so far: an `shm:` address
//! fails with [`Error::NotImplemented`]. What a thread waits on is a [`WaitHandle`]: a
//! descriptor on Linux, a socket on Windows (where `WSAPoll` waits on nothing else).
//!
//! Memory that another process can write is untrusted: every offset and length, local or from
//! a peer, is checked before it touches a region, a region received from an exporter must be
//! sealed against shrinking, and a peer that breaks the protocol loses its connection and
//! nothing else. Liveness is tracked per import: when the exporter goes away, operations fail
//! with [`Error::PeerGone`]; when an importer goes away, the exporter's waiters wake with
//! [`Wake::ImporterLeft`].

#![deny(missing_docs)]
// Handing exports and imports to another process, and the shm backend, exist on Linux only
// so far; elsewhere the parts of the shared code that only they use are idle.
#![cfg_attr(not(target_os = "linux"), allow(dead_code))]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

mod access;
mod addr;
mod buffer;
mod counters;
mod error;
mod export;
#[doc(hidden)]
pub mod fuzzing;
#[cfg(target_os = "linux")]
mod handover;
mod import;
mod notify;
mod serve;
mod shm;
mod span;
mod sys;
mod tcp;
#[cfg(target_os = "linux")]
mod tcp_file;
mod watch;
mod wire;

pub use access::{Access, ImportKey, PeerIdentity, PeerMatch, Permissions, KEY_LEN};
pub use addr::{ExportId, NodeAddr, ShmName, TcpAddr, MAX_SHM_NAME_LEN};
pub use buffer::LocalBuffer;
pub use counters::Counters;
pub use error::{Error, Result};
pub use export::{
    Endpoint, EndpointOptions, Export, Greeting, Waiter, Wake, MAX_PENDING_GREETINGS,
    MAX_PENDING_GREETINGS_PER_PEER,
};
#[cfg(target_os = "linux")]
pub use handover::{recv_handover, send_handover, ExportHandover, ImportHandover, Received};
pub use import::{Dialed, Import, ImportOptions, Notify, DEFAULT_TIMEOUT};
pub use notify::{poll_readable, Notifier as Event};
pub use span::MAX_REGION_LEN;
pub use sys::{AsWaitHandle, OwnedWaitHandle, SharedBytes, SharedBytesMut, WaitHandle};
pub use wire::MAX_GREETING_LEN;

#[cfg(test)]
mod tests {
    #[test]
    fn handles_can_be_shared_between_threads() {
        fn shareable<T: Send + Sync>() {}
        shareable::<crate::Endpoint>();
        shareable::<crate::Export>();
        shareable::<crate::Import>();
    }
}
