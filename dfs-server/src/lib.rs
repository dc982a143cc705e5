//! The vmmc-dfs file server: serves one export directory to DFS clients over vmmc-sockets.
//!
//! Each connection gets a thread that answers requests in order. A read is answered by
//! `pread`ing the file straight into the reply's place in the client's receive ring, and a
//! write by `pwrite`ing from the request's place in the server's ring: the file's bytes are
//! copied once, between the page cache and the ring, and by the kernel.
//!
//! Everything is confined beneath the export ([`fs`]); handles are unforgeable and survive a
//! restart ([`handles`]); callers act with their own credentials where configured
//! ([`creds`]).

#![deny(missing_docs)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod creds;
mod dirents;
pub mod fs;
pub mod handles;
mod lend;
pub mod notices;
pub mod opens;
pub mod server;
pub mod session;
mod sys;
pub mod watch;

pub use creds::{Squash, Trust};
pub use server::{load_or_create_key, Config, Running, Server, StartError};
