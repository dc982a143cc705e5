//! The vmmc-dfs client library.
//!
//! [`Client`] is what every front end uses: the FUSE mount ([`fuse`], [`mount`]) now, an
//! interception library later. It keeps a pool of connections, retries idempotent calls on a
//! new connection after a server restart (the handles stay valid), and fails with `ENOTCONN`
//! when the server stays away longer than its timeout.
//!
//! [`Connection`] speaks the protocol on one vmmc-sockets stream: the handshake, then one
//! request at a time. A read's bytes can be used in place, in the connection's receive ring
//! ([`Connection::read_in_place`]), so a consumer that hands them on (to the kernel, to an
//! application's buffer) makes the only copy on this side.

#![deny(missing_docs)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

#[cfg(target_os = "linux")]
pub mod bench;
mod client;
mod conn;
mod creds;
#[cfg(target_os = "linux")]
pub mod fuse;
#[cfg(target_os = "linux")]
pub mod lend;
#[cfg(target_os = "linux")]
pub mod mount;
#[cfg(target_os = "linux")]
pub mod preload;
#[cfg(target_os = "linux")]
mod sys;

pub use client::Client;
pub use conn::{CallError, ConnectError, ConnectOptions, Connection, Notices};
pub use creds::current_creds;
