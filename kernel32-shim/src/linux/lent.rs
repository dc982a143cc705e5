//! Reads from the server's own descriptor of a file, on one host.
//!
//! Through the rings a read costs two copies (the server's `pread` into the ring, ours out
//! of it) and a round trip. A server on this host (`shm:`) lends the descriptor of a
//! read-only open to the user who made it ([`dfs_client::lend`]); this process then
//! `preadv`s the program's buffers straight from the server's page cache: one copy, by the
//! kernel, and no request at all. The server's file is the only copy of the bytes, so what
//! any client writes through the server is what the next read sees.
//!
//! A lent descriptor is an ordinary number in this process, which the program could close
//! by accident (`close_range`, a raw system call) and then reuse for a file of its own. So
//! each read first checks that the number still names the file it was lent for (device and
//! inode), and a number that no longer does is forgotten, never closed again: the read goes
//! through the rings instead. Borrowed descriptors are close-on-exec; a program after `exec`
//! borrows anew.

use std::collections::HashMap;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::{Arc, Mutex};

use dfs_client::lend::Lender;
use dfs_proto::handle::OpenId;
use dfs_proto::msg::Creds;
use dfs_proto::Errno;

use super::ffi::{self, BufMut};
use super::{Open, Shim};
use crate::path::MountId;

fn errno_io(e: Errno) -> std::io::Error {
    std::io::Error::from_raw_os_error(e.0)
}

/// Most descriptors kept at once; beyond, the oldest are given back (reads borrow again).
const MAX_KEPT: usize = 1024;

/// What is known of one open in this process.
#[derive(Debug)]
enum State {
    /// Its descriptor, and the file (device, inode) it was lent for.
    Lent(Arc<OwnedFd>, (u64, u64)),
    /// The server would not lend it (or cannot): reads go through the rings.
    Refused,
}

/// Whose lender: (process, mount, user).
type LenderKey = (u32, MountId, u32);

/// The lenders and descriptors of this process.
#[derive(Debug, Default)]
pub(crate) struct Lent {
    /// One per (process, mount, user): the server binds a lending connection to the user
    /// who made it, and a forked child must not share its parent's.
    lenders: Mutex<HashMap<LenderKey, Arc<Option<Lender>>>>,
    opens: Mutex<HashMap<(u32, OpenId), State>>,
}

impl Lent {
    /// Reads `o` at `off` into `dest` from the lent descriptor, if there is one (`None`: go
    /// through the rings).
    pub fn read(
        &self,
        shim: &Shim,
        o: &Open,
        creds: &Creds,
        dest: &[(BufMut<'_>, usize)],
        off: u64,
    ) -> Option<Result<usize, Errno>> {
        let open = o.open?;
        let pid = shim.pid.load(std::sync::atomic::Ordering::Relaxed);
        let fd = self.descriptor(shim, o, creds, pid, open)?;
        let off = i64::try_from(off).ok()?;
        let n = ffi::preadv_into(fd.as_raw_fd(), dest, off);
        if n < 0 {
            // The rings say what the server thinks of it (and fail as it fails).
            return None;
        }
        Some(Ok(n as usize))
    }

    /// The open's lent descriptor, borrowed on first use; `None` if refused or if the
    /// number no longer names the file.
    fn descriptor(
        &self,
        shim: &Shim,
        o: &Open,
        creds: &Creds,
        pid: u32,
        open: OpenId,
    ) -> Option<Arc<OwnedFd>> {
        let key = (pid, open);
        let kept = match self
            .opens
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
        {
            Some(State::Refused) => return None,
            Some(State::Lent(fd, id)) => Some((fd.clone(), *id)),
            None => None,
        };
        if let Some((fd, id)) = kept {
            return match ffi::fstat_id(fd.as_raw_fd()) {
                Some((dev, ino, _)) if (dev, ino) == id => Some(fd),
                _ => {
                    // Closed behind our back, perhaps reused: not ours to close any more.
                    // This clone is never dropped, so the descriptor is never closed.
                    std::mem::forget(fd);
                    self.set(key, State::Refused);
                    None
                }
            };
        }
        let lender = self.lender(shim, o.mount, creds, pid);
        let state = match (*lender)
            .as_ref()
            .map(|l| self.borrow(shim, l, o, creds, open))
        {
            Some(Ok(fd)) => match ffi::fstat_id(fd.as_raw_fd()) {
                Some((dev, ino, _)) => State::Lent(Arc::new(fd), (dev, ino)),
                None => State::Refused,
            },
            _ => State::Refused,
        };
        let fd = match &state {
            State::Lent(fd, _) => Some(fd.clone()),
            State::Refused => None,
        };
        self.set(key, state);
        fd
    }

    /// The descriptor of `open`, or else of a read-only open made for the purpose: the
    /// server lends only a session's live read-only opens, and a description opened for
    /// writing too, or whose opener's exec ended the session's last connection (`cmd <
    /// file | …`), has none.
    fn borrow(
        &self,
        shim: &Shim,
        lender: &Lender,
        o: &Open,
        creds: &Creds,
        open: OpenId,
    ) -> std::io::Result<OwnedFd> {
        match lender.borrow(open) {
            Err(e) if matches!(e.raw_os_error(), Some(libc::EBADF | libc::EPERM)) => {
                let client = shim.dfs.client(o.mount, creds).map_err(errno_io)?;
                let read_only = dfs_proto::msg::OpenFlags {
                    read: true,
                    ..Default::default()
                };
                let fresh = client.open(creds, &o.handle, read_only).map_err(errno_io)?;
                let lent = lender.borrow(fresh);
                // The lent descriptor is this process's own: the server's may go.
                let _ = client.release(creds, fresh);
                lent
            }
            r => r,
        }
    }

    fn set(&self, key: (u32, OpenId), state: State) {
        let mut opens = self.opens.lock().unwrap_or_else(|p| p.into_inner());
        if opens.len() >= MAX_KEPT {
            opens.retain(|_, s| matches!(s, State::Refused));
            if opens.len() >= MAX_KEPT {
                opens.clear();
            }
        }
        opens.insert(key, state);
    }

    fn lender(&self, shim: &Shim, mount: MountId, creds: &Creds, pid: u32) -> Arc<Option<Lender>> {
        let key = (pid, mount, creds.uid);
        if let Some(l) = self
            .lenders
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
        {
            return l.clone();
        }
        let lender = Arc::new(
            shim.dfs
                .client(mount, creds)
                .ok()
                .and_then(|c| Lender::new(c.addr(), c.session())),
        );
        self.lenders
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(key)
            .or_insert(lender)
            .clone()
    }

    /// Gives back what is kept for `open`, whose description was freed: its descriptor is
    /// closed if the number still names the lent file (else it is the program's now).
    pub fn forget(&self, open: OpenId) {
        let gone: Vec<State> = {
            let mut opens = self.opens.lock().unwrap_or_else(|p| p.into_inner());
            let keys: Vec<_> = opens.keys().filter(|(_, o)| *o == open).copied().collect();
            keys.iter().filter_map(|k| opens.remove(k)).collect()
        };
        for s in gone {
            if let State::Lent(fd, id) = s {
                let still = ffi::fstat_id(fd.as_raw_fd()).is_some_and(|(d, i, _)| (d, i) == id);
                if !still {
                    std::mem::forget(fd);
                }
            }
        }
    }
}
