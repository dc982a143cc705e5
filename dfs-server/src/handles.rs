//! Minting and resolving file handles.
//!
//! A handle is the kernel's own file handle for the inode (`name_to_handle_at`) plus a tag:
//! a keyed hash over the export's identity and the handle bytes. The key lives in a state
//! file, so handles survive a server restart, and a client can neither forge a handle for an
//! inode it was never given nor carry a handle from one export to another on the same file
//! system. Resolving (`open_by_handle_at`) needs `CAP_DAC_READ_SEARCH`; without it, or on a
//! file system that has no handles, the server falls back to *volatile* handles (a table in
//! memory), which a restart invalidates (clients then get `ESTALE`), and says so at start.
//!
//! # The subtree check
//!
//! A handle names an inode, wherever it is now: a local user on the server may have moved a
//! directory a client holds, or a file, out of the export. Every resolution therefore checks
//! that the inode is still beneath the export root, and answers `ESTALE` if not (NFS's
//! `subtree_check`, for every handle and every file system):
//! - **By the kernel**, where the export's file system makes *connectable* handles
//!   (`AT_HANDLE_CONNECTABLE`, Linux 6.13; ext4, xfs, btrfs, …): `open_by_handle_at` walks the
//!   decoded dentry's parents up to the directory of the descriptor it is given, the export
//!   root, and refuses a handle whose inode is not beneath it. A file's handle also records
//!   the directory it was reached in, through which the kernel reconnects it when its
//!   dentry is no longer cached; a directory is always reconnected. Costs a walk up the
//!   dentry tree, in the kernel.
//! - **By path** otherwise (tmpfs has no connectable handles, volatile handles, handles minted
//!   before connectable ones): the kernel's name for the resolved descriptor
//!   (`/proc/self/fd/N`) must lie beneath the root's own name, and the rest of it, opened
//!   from the root with `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_XDEV`, must be the
//!   very same inode. The name is only a hint; the confined lookup proves that the inode has
//!   a name inside the export right now. Anything that does not confirm is `ESTALE`. Costs a
//!   `readlinkat`, an `openat2` of the path, an `fstat` and a `close`.
//!
//! What remains, as with NFS:
//! - A request whose handle passed the check completes even if a local user moves the
//!   directory out while it runs; the next request fails.
//! - Opens (`OpenId`) do not go through handles: a file opened while it was inside stays
//!   usable through that open, as a local descriptor does.
//! - A file renamed into another directory keeps its handle while the server's dentry cache
//!   holds the file (a lookup, an open, a recent use); once the kernel has dropped it (memory
//!   pressure, a reboot), the handle is stale and the client must look the file up again.
//!   Checked by path (plain handles minted before connectable ones, on a disk file system),
//!   a file whose dentry is not cached is stale in the same way; so is, on any file system
//!   without connectable handles, a file deeper than `PATH_MAX` bytes from `/`.
//! - A file hard-linked from two directories has a handle through each (they record different
//!   parents); both name the same inode, and the FUSE client joins them into one node
//!   (`dfs-client/src/fuse/nodes.rs`).
//!
//! `HandleOptions::subtree_check` off (`dfs-server --no-subtree-check`) skips the check and
//! mints the plain handles of before, to measure what it costs. It is not safe.

use std::collections::HashMap;
use std::ffi::CString;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::sync::{Arc, Mutex, RwLock};

use dfs_proto::handle::FileHandle;
use dfs_proto::Errno;
use nix::fcntl::OFlag;
use nix::sys::stat::{fstat, FileStat};

use crate::sys;

const KERNEL: u8 = 1;
const VOLATILE: u8 = 2;
const TAG: usize = 16;

/// The kernel's flags in a handle's type (`FILEID_USER_FLAGS_MASK`): the handle is
/// connectable (`FILEID_IS_CONNECTABLE`) and of a directory (`FILEID_IS_DIR`).
const FILEID_USER_FLAGS: i32 = 0xffff_0000_u32 as i32;
const FILEID_IS_CONNECTABLE: i32 = 0x1_0000;

/// The longest name the kernel gives a descriptor (`PATH_MAX`, with its NUL).
const PATH_MAX: usize = libc::PATH_MAX as usize;

// The largest kernel handle (connectable ones record the parent too), framed and tagged,
// fits the protocol's handle.
const _: () = assert!(6 + sys::MAX_KERNEL_HANDLE + TAG <= dfs_proto::handle::MAX_HANDLE);

/// How handles are made on this export.
enum Scheme {
    /// Kernel handles; `root` is the export root's own (plain) handle, mixed into every tag;
    /// `connectable` says whether new handles are connectable (the kernel checks them).
    Kernel {
        root: Vec<u8>,
        mount_id: i32,
        connectable: bool,
    },
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

/// Which handles to make.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum HandleKind {
    /// The kernel's, connectable where the file system makes them (the kernel then does the
    /// subtree check), plain otherwise (the check goes by path); volatile where the server
    /// cannot open files by handle. What the server uses.
    #[default]
    Best,
    /// The kernel's, never connectable, as servers minted them before: the check always goes
    /// by path. For tests.
    Plain,
    /// Volatile, as for a server that does not run as root. For tests.
    Volatile,
}

/// How an export's handles are made and checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HandleOptions {
    /// Refuse (`ESTALE`) every handle whose file is no longer beneath the export root. Off
    /// only to measure what the check costs: a client holding a directory that a local user
    /// moves out of the export could then reach outside it.
    pub subtree_check: bool,
    /// Which handles to make.
    pub kind: HandleKind,
}

impl HandleOptions {
    /// The best handles, with the check on or off.
    pub const fn new(subtree_check: bool) -> HandleOptions {
        HandleOptions {
            subtree_check,
            kind: HandleKind::Best,
        }
    }
}

impl Default for HandleOptions {
    fn default() -> HandleOptions {
        HandleOptions::new(true)
    }
}

/// Who checks that a resolved handle's file is beneath the export.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SubtreeCheck {
    /// The kernel, for connectable handles; by path for older, plain ones.
    Kernel,
    /// The server, by path, for every handle.
    ByPath,
    /// Nobody (`--no-subtree-check`).
    Off,
}

/// Whether a handle is a connectable kernel handle, one that the kernel checks (for tests
/// and diagnostics; says nothing about its validity).
pub fn is_connectable(h: &FileHandle) -> bool {
    let b = h.as_bytes();
    b.first() == Some(&KERNEL)
        && b.get(1..5)
            .and_then(|k| k.try_into().ok())
            .map(i32::from_le_bytes)
            .is_some_and(|k| k & FILEID_IS_CONNECTABLE != 0)
}

/// The export's handle maker.
pub struct Handles {
    root_fd: Arc<OwnedFd>,
    dev: u64,
    root_ino: u64,
    key: [u8; 32],
    boot: u64,
    scheme: Scheme,
    subtree_check: bool,
    /// `/proc/self/fd`, where each descriptor's name is read.
    proc_fds: OwnedFd,
    /// The export root's name as the kernel gives it (read again when it seems to have
    /// moved: the export directory itself may be renamed).
    root_path: RwLock<Vec<u8>>,
}

impl std::fmt::Debug for Handles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handles")
            .field("stable", &self.is_stable())
            .field("subtree_check", &self.subtree_check())
            .finish()
    }
}

/// Errors of `open_by_handle_at` that mean the handle names nothing it may open: the file
/// is gone, the handle is not the file system's, or the file is not beneath the root.
fn decode_error(e: io::Error) -> Errno {
    match e.raw_os_error() {
        Some(libc::ENOENT | libc::EINVAL | libc::EACCES | libc::ESTALE | libc::ENOTDIR) => {
            Errno::ESTALE
        }
        _ => Errno::from(e),
    }
}

/// A descriptor's name in `/proc/self/fd`.
fn fd_name(fd: BorrowedFd<'_>) -> Result<CString, Errno> {
    // Digits only: never contains NUL.
    CString::new(fd.as_raw_fd().to_string()).map_err(|_| Errno::EIO)
}

/// `path` relative to `root`, if it lies beneath it (or is it: empty).
fn beneath<'p>(root: &[u8], path: &'p [u8]) -> Option<&'p [u8]> {
    if root == b"/" {
        return path.strip_prefix(b"/");
    }
    let rest = path.strip_prefix(root)?;
    if rest.is_empty() {
        return Some(rest);
    }
    rest.strip_prefix(b"/")
}

impl Handles {
    /// Handles for the export whose root is `root_fd` (a directory opened for reading, which
    /// `open_by_handle_at` needs), tagged with `key`. Tries kernel handles first.
    pub fn new(root_fd: OwnedFd, key: [u8; 32], options: HandleOptions) -> io::Result<Handles> {
        let root_st = fstat(root_fd.as_fd())?;
        let mut boot = [0u8; 8];
        getrandom::fill(&mut boot).map_err(io::Error::other)?;
        let proc_fds = nix::fcntl::open(
            "/proc/self/fd",
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )
        .map_err(|e| io::Error::other(format!("cannot open /proc/self/fd: {e}")))?;
        let scheme = if options.kind == HandleKind::Volatile {
            Scheme::Volatile(Mutex::default())
        } else {
            Handles::kernel_scheme(root_fd.as_fd(), &options)
        };
        let mut handles = Handles {
            root_fd: Arc::new(root_fd),
            dev: root_st.st_dev,
            root_ino: root_st.st_ino,
            key,
            boot: u64::from_le_bytes(boot),
            scheme,
            subtree_check: options.subtree_check,
            proc_fds,
            root_path: RwLock::new(Vec::new()),
        };
        *handles
            .root_path
            .get_mut()
            .unwrap_or_else(|p| p.into_inner()) =
            handles.read_root_path().map_err(io::Error::from)?;
        match handles.subtree_check() {
            SubtreeCheck::Off => tracing::warn!(
                "--no-subtree-check: handles are not checked against the export; a client \
                 holding a directory that a local user moves out of the export reaches \
                 outside it (for measuring only)"
            ),
            SubtreeCheck::ByPath => tracing::info!(
                "the export's file system has no connectable handles: the server checks \
                 every handle's path"
            ),
            SubtreeCheck::Kernel => {}
        }
        Ok(handles)
    }

    fn kernel_scheme(root: BorrowedFd<'_>, options: &HandleOptions) -> Scheme {
        let plain = match sys::name_to_handle(root, c"", libc::AT_EMPTY_PATH) {
            Ok(h) => h,
            Err(e) => {
                tracing::warn!("the export's file system has no file handles ({e}): handles will not survive a restart");
                return Scheme::Volatile(Mutex::default());
            }
        };
        if let Err(e) = sys::open_by_handle(root, plain.kind, &plain.bytes) {
            tracing::warn!("cannot open files by handle ({e}): handles will not survive a restart (run as root for stable handles)");
            return Scheme::Volatile(Mutex::default());
        }
        // The root by name ("."): a connectable handle cannot be asked for a descriptor.
        let connectable = options.subtree_check
            && options.kind == HandleKind::Best
            && sys::name_to_handle(root, c".", libc::AT_HANDLE_CONNECTABLE)
                .and_then(|h| sys::open_by_handle(root, h.kind, &h.bytes))
                .is_ok();
        let mut tagged = plain.kind.to_le_bytes().to_vec();
        tagged.extend_from_slice(&plain.bytes);
        Scheme::Kernel {
            root: tagged,
            mount_id: plain.mount_id,
            connectable,
        }
    }

    /// Whether handles survive a restart.
    pub fn is_stable(&self) -> bool {
        matches!(self.scheme, Scheme::Kernel { .. })
    }

    /// Who checks that handles stay beneath the export.
    pub fn subtree_check(&self) -> SubtreeCheck {
        match &self.scheme {
            _ if !self.subtree_check => SubtreeCheck::Off,
            Scheme::Kernel {
                connectable: true, ..
            } => SubtreeCheck::Kernel,
            _ => SubtreeCheck::ByPath,
        }
    }

    /// The export root.
    pub fn root(&self) -> BorrowedFd<'_> {
        self.root_fd.as_fd()
    }

    fn tag(&self, body: &[u8]) -> [u8; TAG] {
        let mut h = blake3::Hasher::new_keyed(&self.key);
        if let Scheme::Kernel { root, .. } = &self.scheme {
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

    /// Whether new kernel handles are connectable.
    fn connectable(&self) -> bool {
        matches!(
            self.scheme,
            Scheme::Kernel {
                connectable: true,
                ..
            }
        )
    }

    /// The handle of the file `fd` (an `O_PATH` descriptor the server reached by confined
    /// lookups, never one opened by handle).
    pub fn mint(&self, fd: &OwnedFd) -> Result<FileHandle, Errno> {
        match &self.scheme {
            Scheme::Kernel { .. } => {
                let h = if self.connectable() {
                    // Named through /proc/self/fd (AT_EMPTY_PATH cannot make a connectable
                    // handle): the magic link is the descriptor's own dentry, connected
                    // since it was reached by name.
                    sys::name_to_handle(
                        self.proc_fds.as_fd(),
                        &fd_name(fd.as_fd())?,
                        libc::AT_SYMLINK_FOLLOW | libc::AT_HANDLE_CONNECTABLE,
                    )?
                } else {
                    sys::name_to_handle(fd.as_fd(), c"", libc::AT_EMPTY_PATH)?
                };
                self.kernel_handle(h)
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
    /// by opening it `O_PATH` (volatile). A mount point's is `EXDEV`.
    pub fn mint_at(&self, dir: BorrowedFd<'_>, name: &[u8]) -> Result<FileHandle, Errno> {
        let cname = CString::new(name).map_err(|_| Errno::EINVAL)?;
        match &self.scheme {
            Scheme::Kernel { .. } => {
                let flags = if self.connectable() {
                    libc::AT_HANDLE_CONNECTABLE
                } else {
                    0
                };
                self.kernel_handle(sys::name_to_handle(dir, &cname, flags)?)
            }
            Scheme::Volatile(_) => {
                let fd = crate::fs::open_beneath(dir, name, crate::fs::PATH_FLAGS, 0)?;
                self.mint(&fd)
            }
        }
    }

    fn kernel_handle(&self, h: sys::KernelHandle) -> Result<FileHandle, Errno> {
        // A name may be a mount point, whose handle would be another file system's.
        if let Scheme::Kernel { mount_id, .. } = &self.scheme {
            if h.mount_id != *mount_id {
                return Err(Errno(libc::EXDEV));
            }
        }
        let mut body = vec![KERNEL];
        body.extend_from_slice(&h.kind.to_le_bytes());
        body.push(h.bytes.len() as u8);
        body.extend_from_slice(&h.bytes);
        self.seal(body)
    }

    /// The `O_PATH` descriptor a handle names. A handle whose tag does not verify (forged,
    /// from another export, from before a restart in volatile mode), whose file is gone or
    /// whose file is no longer beneath the export root is `ESTALE`.
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
                // A connectable handle makes the kernel check that the file is beneath the
                // root descriptor. Unchecked, it decodes as a plain one.
                let by_kernel = kind & FILEID_IS_CONNECTABLE != 0 && self.subtree_check;
                let decode = if self.subtree_check {
                    kind
                } else {
                    kind & !FILEID_USER_FLAGS
                };
                let fd =
                    sys::open_by_handle(self.root_fd.as_fd(), decode, raw).map_err(decode_error)?;
                // The kernel resolves on the export's file system only; a second look costs
                // one fstat and guards against a mount swapped under the export.
                // A removed file's inode may linger in the kernel's cache; its handle is
                // stale all the same (its opens still work: they do not go through here).
                let st = fstat(fd.as_fd()).map_err(|e| Errno(e as i32))?;
                if st.st_dev != self.dev || st.st_nlink == 0 {
                    return Err(Errno::ESTALE);
                }
                if self.subtree_check && !by_kernel {
                    self.confirm_beneath(fd.as_fd(), &st)?;
                }
                Ok(Arc::new(fd))
            }
            (Scheme::Volatile(table), Some(&VOLATILE)) => {
                let id = body
                    .get(1..9)
                    .and_then(|k| k.try_into().ok())
                    .map(u64::from_le_bytes)
                    .ok_or(Errno::ESTALE)?;
                let fd = {
                    let t = table.lock().unwrap_or_else(|p| p.into_inner());
                    t.by_id.get(&id).cloned().ok_or(Errno::ESTALE)?
                };
                if self.subtree_check {
                    let st = fstat(fd.as_fd()).map_err(|e| Errno(e as i32))?;
                    self.confirm_beneath(fd.as_fd(), &st)?;
                }
                Ok(fd)
            }
            _ => Err(Errno::ESTALE),
        }
    }

    /// The root's name, as the kernel gives it now.
    fn read_root_path(&self) -> Result<Vec<u8>, Errno> {
        let mut buf = [0u8; PATH_MAX];
        let n = sys::readlink_at(
            self.proc_fds.as_fd(),
            &fd_name(self.root_fd.as_fd())?,
            &mut buf,
        )?;
        Ok(buf[..n].to_vec())
    }

    /// The subtree check by path: `fd` (whose `fstat` is `st`) is the root, or the name the
    /// kernel gives it lies beneath the root's and leads, from the root and without leaving
    /// it, to the same inode. Anything else is `ESTALE`. A name that changed while it was
    /// being confirmed (a rename within the export) is read and confirmed once more.
    fn confirm_beneath(&self, fd: BorrowedFd<'_>, st: &FileStat) -> Result<(), Errno> {
        if (st.st_dev, st.st_ino) == (self.dev, self.root_ino) {
            return Ok(());
        }
        let name = fd_name(fd)?;
        let mut buf = [0u8; PATH_MAX];
        let mut tried: Option<Vec<u8>> = None;
        loop {
            // Too long a name, or no name at all: not provably inside.
            let n = sys::readlink_at(self.proc_fds.as_fd(), &name, &mut buf)
                .map_err(|_| Errno::ESTALE)?;
            let path = &buf[..n];
            if tried.as_deref() == Some(path) {
                return Err(Errno::ESTALE);
            }
            if self.path_confirms(path, st) {
                return Ok(());
            }
            if tried.is_some() {
                return Err(Errno::ESTALE);
            }
            tried = Some(path.to_vec());
        }
    }

    /// Whether `path`, the kernel's name of the inode `st`, lies beneath the root's name and
    /// leads from the root, by a confined lookup, to that very inode.
    fn path_confirms(&self, path: &[u8], st: &FileStat) -> bool {
        let known = beneath(
            &self.root_path.read().unwrap_or_else(|p| p.into_inner()),
            path,
        );
        let rel = match known {
            Some(rel) => rel,
            None => {
                // Perhaps the export directory itself was renamed: look once more.
                let Ok(now) = self.read_root_path() else {
                    return false;
                };
                let mut cached = self.root_path.write().unwrap_or_else(|p| p.into_inner());
                if *cached == now {
                    return false;
                }
                *cached = now;
                match beneath(&cached, path) {
                    Some(rel) => rel,
                    None => return false,
                }
            }
        };
        // Not the root itself (the caller checked), so some name is needed: "" is the root.
        if rel.is_empty() {
            return false;
        }
        let Ok(found) = crate::fs::open_beneath(self.root(), rel, crate::fs::PATH_FLAGS, 0) else {
            return false;
        };
        fstat(found.as_fd())
            .is_ok_and(|there| (there.st_dev, there.st_ino) == (st.st_dev, st.st_ino))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn beneath_needs_a_separator() {
        assert_eq!(beneath(b"/srv/x", b"/srv/x"), Some(&b""[..]));
        assert_eq!(beneath(b"/srv/x", b"/srv/x/a/b"), Some(&b"a/b"[..]));
        assert_eq!(beneath(b"/srv/x", b"/srv/xy/a"), None);
        assert_eq!(beneath(b"/srv/x", b"/srv"), None);
        assert_eq!(beneath(b"/srv/x", b"/"), None);
        assert_eq!(beneath(b"/srv/x", b"/other/srv/x/a"), None);
        assert_eq!(beneath(b"/", b"/a/b"), Some(&b"a/b"[..]));
        assert_eq!(beneath(b"/", b"/"), Some(&b""[..]));
        assert_eq!(beneath(b"/", b"anon_inode:[x]"), None);
        assert_eq!(
            beneath(b"/srv/x", b"/srv/x/gone (deleted)"),
            Some(&b"gone (deleted)"[..])
        );
    }

    #[test]
    fn connectable_flag_is_read_from_the_type() {
        let mut b = vec![KERNEL];
        b.extend_from_slice(&0x1_0002_i32.to_le_bytes());
        b.extend_from_slice(&[0; 20]);
        assert!(is_connectable(&FileHandle::new(b.clone()).unwrap()));
        b[1..5].copy_from_slice(&2_i32.to_le_bytes());
        assert!(!is_connectable(&FileHandle::new(b.clone()).unwrap()));
        b[0] = VOLATILE;
        assert!(!is_connectable(&FileHandle::new(b).unwrap()));
    }
}
