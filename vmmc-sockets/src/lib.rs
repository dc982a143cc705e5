//! Stream sockets on the emulated VMMC network interface, with a pointer-based extension.
//!
//! A connection is two rings, one per direction, each in its *receiver's* exported memory: a
//! send deposits bytes straight into the peer's ring and publishes the new send index in the
//! peer's header; the receiver gives credit back by publishing its receive index in the
//! sender's header. Each ring's tail is mapped twice, back to back, so any readable or
//! writable span is one slice, and the pointer API never splits a block at the wrap.
//!
//! ```
//! use std::io::{Read, Write};
//! use vmmc_sockets::{VmmcListener, VmmcStream};
//!
//! let listener = VmmcListener::bind(&format!("shm:doc-sockets-{}", std::process::id())).unwrap();
//! let addr = listener.local_addr().to_string();
//! let server = std::thread::spawn(move || {
//!     let (mut s, _who) = listener.accept().unwrap();
//!     let mut buf = [0u8; 5];
//!     s.read_exact(&mut buf).unwrap();
//!     s.write_all(&buf).unwrap();
//! });
//! let mut c = VmmcStream::connect(&addr).unwrap();
//! c.write_all(b"hello").unwrap();
//!
//! // The pointer API: the received bytes, in place in the ring. The peer could still write
//! // them, so they come as `SharedBytes`: copied out, or handed to a system call.
//! let slot = c.readable().unwrap();
//! assert_eq!(slot.data().unwrap().to_vec(), b"hello");
//! slot.consume(5).unwrap();
//! server.join().unwrap();
//! ```
//!
//! Everything the peer writes into this process's memory is untrusted: indices are checked by
//! [`ring`] before use, and a peer that lies breaks only its own connection.

#![deny(missing_docs)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

mod codes;
#[doc(hidden)]
pub mod fuzzing;
mod greeting;
mod layout;
mod listener;
mod options;
pub mod ring;
pub mod routes;
#[cfg(target_os = "linux")]
mod share;
mod stream;
pub mod table;
pub mod winsock;

pub use layout::{RingSize, DEFAULT_RING, MAX_RING, MIN_RING};
pub use listener::{VmmcListener, BACKLOG};
pub use options::{StreamOptions, DEFAULT_MAX_PEER_RING};
pub use stream::{Readiness, RecvSlot, SendSlot, VmmcStream};
/// The NIC's error, carried inside the `io::Error`s of this crate (`get_ref` and
/// `downcast_ref` tell a missing endpoint from a refusal, say).
pub use vmmc_nic::Error as NicError;
pub use vmmc_nic::{Counters, NodeAddr, PeerIdentity, SharedBytes, SharedBytesMut};
