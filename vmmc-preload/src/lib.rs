//! Unmodified Linux programs on VMMC sockets: an `LD_PRELOAD` library, started by
//! `vmmc-run`.
//!
//! The library stands in front of the C library's socket calls. A stream socket that
//! connects to, or binds, an address the routes send to VMMC (see
//! [`vmmc_sockets::routes`] for the format, [`config`] for where it is read) becomes a
//! socket of the process-wide [`vmmc_sockets::table::SocketTable`], behind its own kernel
//! descriptor as a placeholder; every other descriptor, and every call on one, goes to the
//! C library unchanged. What is taken over, and what is not, is listed in the crate's
//! README.
//!
//! The traps of an interposer, and how this one avoids them:
//! - the VMMC code itself calls `read`, `close`, `poll` on its own descriptors, which land
//!   here: the "is this a VMMC socket" question is one lock-free load ([`fdmap`]), and the
//!   answer for those descriptors is no;
//! - the C library calls itself internally without going through these symbols (its
//!   resolver's sockets, for one), which is what we want: those stay kernel sockets;
//! - `fcntl` and `ioctl` are variadic (see [`ffi`]);
//! - any thread may call anything: the table is thread-safe, and no lock here is held
//!   across a call that waits;
//! - `fork` copies memory but a VMMC connection cannot be shared ([`fork`]).

#![deny(missing_docs)]
// Unsafe code lives in `ffi` only.
#![deny(unsafe_code)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod config;
pub mod errno;
pub mod fdmap;
#[allow(unsafe_code)]
pub mod ffi;
pub mod fork;
pub mod prespin;
pub mod sock;
pub mod wait;
