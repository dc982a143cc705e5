//! Minting and resolving file handles.
//!
//! A handle is the kernel's own file handle for the inode (`name_to_handle_at`) plus a tag:
//! a keyed hash over the export's identity and the handle bytes. The key lives in a state
//! file, so handles survive a server restart, and a client can neither forge a handle for an
//! inode it was never given nor carry a handle from one export to another on the same file
//! system. Resolving (`open_by_handle_at`) needs `CAP_DAC_READ_SEARCH`; without it, or on a
//! file system that has no handles, the server falls back to *volatile* handles (a table in
//! memory), which a restart invalidates (clients then get `ESTALE`), and says so at start.

use std::collections::HashMap;
use std::ffi::CString;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::{Arc, Mutex};

use dfs_proto::handle::FileHandle;
use dfs_proto::Errno;
use nix::sys::stat::fstat;

use crate::sys;

const KERNEL: u8 = 1;
const VOLATILE: u8 = 2;
const TAG: usize = 16;

/// How handles are made on this export.
enum Scheme {
    /// Kernel handles; `root` is the export root's own handle, mixed into every tag.
    Kernel { root: Vec<u8> },
    /// A table of descriptors, valid until the server stops.
    Volatile(Mutex<VolatileTable>),
}

#[derive(Default)]
struct VolatileTable {
    by_id: HashMap<u64, Arc<OwnedFd>>,
    by_inode: HashMap<(u64, u64), u64>,
}

/// Most entries a volatile table holds before it refuses to mint more (`ENFILE`): each holds
/// an open descriptor.
const MAX_VOLATILE: usize = 200_000;

/// The export's handle maker.
pub struct Handles {
    root_fd: Arc<OwnedFd>,
    dev: u64,
    key: [u8; 32],
    boot: u64,
    scheme: Scheme,
}

impl std::fmt::Debug for Handles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handles")
            .field("stable", &self.is_stable())
            .finish()
    }
}

impl Handles {
    /// Handles for the export whose root is `root_fd` (a directory opened for reading, which
    /// `open_by_handle_at` needs), tagged with `key`. Tries kernel handles first.
    pub fn new(root_fd: OwnedFd, key: [u8; 32]) -> io::Result<Handles> {
        let dev = fstat(root_fd.as_fd())?.st_dev;
        let mut boot = [0u8; 8];
        getrandom::fill(&mut boot).map_err(io::Error::other)?;
        let scheme = match sys::name_to_handle(root_fd.as_fd(), c"") {
            Ok((kind, bytes)) => match sys::open_by_handle(root_fd.as_fd(), kind, &bytes) {
                Ok(_) => {
                    let mut root = kind.to_le_bytes().to_vec();
                    root.extend_from_slice(&bytes);
                    Scheme::Kernel { root }
                }
                Err(e) => {
                    tracing::warn!("cannot open files by handle ({e}): handles will not survive a restart (run as root for stable handles)");
                    Scheme::Volatile(Mutex::default())
                }
            },
            Err(e) => {
                tracing::warn!("the export's file system has no file handles ({e}): handles will not survive a restart");
                Scheme::Volatile(Mutex::default())
            }
        };
        Ok(Handles {
            root_fd: Arc::new(root_fd),
            dev,
            key,
            boot: u64::from_le_bytes(boot),
            scheme,
        })
    }

    /// Whether handles survive a restart.
    pub fn is_stable(&self) -> bool {
        matches!(self.scheme, Scheme::Kernel { .. })
    }

    /// The export root.
    pub fn root(&self) -> BorrowedFd<'_> {
        self.root_fd.as_fd()
    }

    fn tag(&self, body: &[u8]) -> [u8; TAG] {
        let mut h = blake3::Hasher::new_keyed(&self.key);
        if let Scheme::Kernel { root } = &self.scheme {
            h.update(root);
        }
        h.update(&self.boot.to_le_bytes()[..if self.is_stable() { 0 } else { 8 }]);
        h.update(body);
        let mut t = [0u8; TAG];
        t.copy_from_slice(&h.finalize().as_bytes()[..TAG]);
        t
    }

    fn seal(&self, mut body: Vec<u8>) -> Result<FileHandle, Errno> {
        let t = self.tag(&body);
        body.extend_from_slice(&t);
        FileHandle::new(body).map_err(|_| Errno::EIO)
    }

    /// The handle of the file `fd` (an `O_PATH` descriptor the server reached by confined
    /// lookups).
    pub fn mint(&self, fd: &OwnedFd) -> Result<FileHandle, Errno> {
        match &self.scheme {
            Scheme::Kernel { .. } => {
                let (kind, bytes) = sys::name_to_handle(fd.as_fd(), c"")?;
                self.kernel_handle(kind, &bytes)
            }
            Scheme::Volatile(table) => {
                let st = fstat(fd.as_fd()).map_err(|e| Errno(e as i32))?;
                let mut t = table.lock().unwrap_or_else(|p| p.into_inner());
                let key = (st.st_dev, st.st_ino);
                let id = match t.by_inode.get(&key) {
                    Some(&id) => id,
                    None => {
                        if t.by_id.len() >= MAX_VOLATILE {
                            return Err(Errno(libc::ENFILE));
                        }
                        let id = t.by_id.len() as u64 + 1;
                        let dup = fd.try_clone()?;
                        t.by_id.insert(id, Arc::new(dup));
                        t.by_inode.insert(key, id);
                        id
                    }
                };
                let mut body = vec![VOLATILE];
                body.extend_from_slice(&id.to_le_bytes());
                self.seal(body)
            }
        }
    }

    /// The handle of `name` in the directory `dir`, without opening it (kernel handles), or
    /// by opening it `O_PATH` (volatile).
    pub fn mint_at(&self, dir: BorrowedFd<'_>, name: &[u8]) -> Result<FileHandle, Errno> {
        let cname = CString::new(name).map_err(|_| Errno::EINVAL)?;
        match &self.scheme {
            Scheme::Kernel { .. } => {
                let (kind, bytes) = sys::name_to_handle(dir, &cname)?;
                self.kernel_handle(kind, &bytes)
            }
            Scheme::Volatile(_) => {
                let fd = crate::fs::open_beneath(dir, name, crate::fs::PATH_FLAGS, 0)?;
                self.mint(&fd)
            }
        }
    }

    fn kernel_handle(&self, kind: i32, bytes: &[u8]) -> Result<FileHandle, Errno> {
        let mut body = vec![KERNEL];
        body.extend_from_slice(&kind.to_le_bytes());
        body.push(bytes.len() as u8);
        body.extend_from_slice(bytes);
        self.seal(body)
    }

    /// The `O_PATH` descriptor a handle names. A handle whose tag does not verify (forged,
    /// from another export, from before a restart in volatile mode) or whose file is gone
    /// is `ESTALE`.
    pub fn resolve(&self, h: &FileHandle) -> Result<Arc<OwnedFd>, Errno> {
        let bytes = h.as_bytes();
        let Some(split) = bytes.len().checked_sub(TAG) else {
            return Err(Errno::ESTALE);
        };
        let (body, tag) = bytes.split_at(split);
        let want = self.tag(body);
        if !dfs_proto::auth::proofs_match(&pad(&want), &pad_slice(tag)) {
            return Err(Errno::ESTALE);
        }
        match (&self.scheme, body.first()) {
            (Scheme::Kernel { .. }, Some(&KERNEL)) => {
                let kind = body
                    .get(1..5)
                    .and_then(|k| k.try_into().ok())
                    .map(i32::from_le_bytes)
                    .ok_or(Errno::ESTALE)?;
                let len = *body.get(5).ok_or(Errno::ESTALE)? as usize;
                let raw = body.get(6..6 + len).ok_or(Errno::ESTALE)?;
                if body.len() != 6 + len {
                    return Err(Errno::ESTALE);
                }
                let fd =
                    sys::open_by_handle(self.root_fd.as_fd(), kind, raw).map_err(|e| {
                        match e.raw_os_error() {
                            Some(libc::ENOENT) | Some(libc::EINVAL) => Errno::ESTALE,
                            _ => Errno::from(e),
                        }
                    })?;
                // The kernel resolves on the export's file system only; a second look costs
                // one fstat and guards against a mount swapped under the export.
                // A removed file's inode may linger in the kernel's cache; its handle is
                // stale all the same (its opens still work: they do not go through here).
                let st = fstat(fd.as_fd()).map_err(|e| Errno(e as i32))?;
                if st.st_dev != self.dev || st.st_nlink == 0 {
                    return Err(Errno::ESTALE);
                }
                Ok(Arc::new(fd))
            }
            (Scheme::Volatile(table), Some(&VOLATILE)) => {
                let id = body
                    .get(1..9)
                    .and_then(|k| k.try_into().ok())
                    .map(u64::from_le_bytes)
                    .ok_or(Errno::ESTALE)?;
                let t = table.lock().unwrap_or_else(|p| p.into_inner());
                t.by_id.get(&id).cloned().ok_or(Errno::ESTALE)
            }
            _ => Err(Errno::ESTALE),
        }
    }
}

fn pad(t: &[u8; TAG]) -> [u8; 32] {
    pad_slice(t)
}

fn pad_slice(t: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    let n = t.len().min(32);
    out[..n].copy_from_slice(&t[..n]);
    out
}
