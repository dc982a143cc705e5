//! The vmmc-dfs client library.
//!
//! [`Connection`] speaks the protocol on one vmmc-sockets stream: the handshake, then one
//! request at a time. A read's bytes can be used in place, in the connection's receive ring
//! ([`Connection::read_in_place`]), so a consumer that hands them on (to the kernel, to an
//! application's buffer) makes the only copy on this side.

#![deny(missing_docs)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

mod conn;

pub use conn::{current_creds, CallError, ConnectError, ConnectOptions, Connection};
