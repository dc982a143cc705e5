//! The vmmc-dfs wire protocol: what a client and a file server say to each other over a
//! byte stream, and nothing about how the bytes travel.
//!
//! Every message is a [frame](frame): an 8-byte header, a small *meta* part encoded with
//! bincode (requests, replies, handshake), then an optional raw *data* part. File data is
//! never serialized: a read reply carries the block after its meta part, written there by a
//! `pread` straight into the receiver's ring, and a write request carries it the same way,
//! so the data's only copy is the one into or out of the page cache.
//!
//! Bytes from the network are validated once, here, at the edge: a decoded
//! [`Request`](msg::Request) holds only well-formed [names](name::Name), bounded vectors and
//! known enum values, so the server never sees an invalid state.
//!
//! ```
//! use dfs_proto::{codec, frame::Frame, msg::*, name::Name, handle::FileHandle};
//!
//! let req = Request {
//!     id: 7,
//!     creds: Creds { uid: 1000, gid: 1000, groups: vec![] },
//!     op: Op::Lookup { dir: FileHandle::new(vec![1; 16]).unwrap(), name: Name::new(b"a.txt").unwrap() },
//! };
//! let mut buf = vec![0u8; 256];
//! let n = codec::emit_head(&mut buf, &req, 0).unwrap();
//! let frame = Frame::parse(&buf[..n]).unwrap().unwrap();
//! let back: Request = codec::decode(frame.meta).unwrap();
//! assert_eq!(back, req);
//! ```

#![deny(missing_docs)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod attr;
pub mod auth;
pub mod codec;
pub mod errno;
pub mod frame;
#[doc(hidden)]
pub mod fuzzing;
pub mod handle;
pub mod lend;
pub mod msg;
pub mod name;

pub use errno::Errno;
