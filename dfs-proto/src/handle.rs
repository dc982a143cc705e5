//! File handles: opaque to the client, minted and checked by the server. A server builds them
//! from the kernel's own file handles plus a keyed tag, so they survive a server restart (as
//! NFS handles do) and a client cannot forge one for a file it was never given.

use serde::{Deserialize, Serialize};

/// Longest handle: the kernel's `MAX_HANDLE_SZ` (128) plus the server's framing and tag.
pub const MAX_HANDLE: usize = 192;

/// An opaque file handle, 1 to [`MAX_HANDLE`] bytes.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "Vec<u8>", into = "Vec<u8>")]
pub struct FileHandle(Vec<u8>);

/// A handle of the wrong size.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a file handle must be 1 to {MAX_HANDLE} bytes, not {0}")]
pub struct HandleLenError(pub usize);

impl FileHandle {
    /// Wraps handle bytes (the server's business what they mean).
    pub fn new(bytes: Vec<u8>) -> Result<FileHandle, HandleLenError> {
        FileHandle::try_from(bytes)
    }

    /// The handle's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl TryFrom<Vec<u8>> for FileHandle {
    type Error = HandleLenError;
    fn try_from(v: Vec<u8>) -> Result<FileHandle, HandleLenError> {
        if v.is_empty() || v.len() > MAX_HANDLE {
            return Err(HandleLenError(v.len()));
        }
        Ok(FileHandle(v))
    }
}

impl From<FileHandle> for Vec<u8> {
    fn from(h: FileHandle) -> Vec<u8> {
        h.0
    }
}

impl std::fmt::Debug for FileHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "FileHandle(")?;
        for b in self.0.iter().take(12) {
            write!(f, "{b:02x}")?;
        }
        if self.0.len() > 12 {
            write!(f, "…")?;
        }
        write!(f, ")")
    }
}

/// An open file on the server: what `open` and `create` return and read, write, flush and
/// release name. It is random per open and bound to the client session that made it; after
/// a server restart it is unknown, and the server falls back to the file handle the request
/// also carries.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
pub struct OpenId(pub u64);
