//! Lends read-only opens' descriptors to the mount on the same host, for FUSE passthrough
//! (see [`dfs_proto::lend`]).
//!
//! A lent descriptor lets the mount's kernel read the file's pages where the server's kernel
//! keeps them (FUSE passthrough), and `dfs run`'s library `pread` them, with no copy of ours.
//! What it may lend is narrow: the open must belong to the peer's own session under the main
//! protocol's binding (to the user the kernel says the peer is), it must be open for reading
//! alone, and the peer must be one whose requests run as itself: local root (who could open
//! the file anyway), or an ordinary user on a server that is root (so it ran the open as
//! that user), squashes nobody into nobody (`--squash all`) and is not read-only. A
//! descriptor reopened through `/proc/self/fd` is checked against the user's own rights,
//! which are then the rights the server would have applied; on a read-only export they
//! would not be.
//! (The mount's kernel opens the file anew for each open that passes through, with that
//! open's flags, so later writers of a file being passed through need no descriptor.)

use std::collections::HashMap;
use std::io::{self, IoSlice, Read};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixListener, UnixStream};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dfs_proto::lend::{socket_name, LendRequest, REQUEST_LEN};
use nix::fcntl::OFlag;
use nix::sys::socket::{getsockopt, sendmsg, sockopt, ControlMessage, MsgFlags};
use nix::sys::stat::{fstat, SFlag};

use crate::server::Shared;

/// Most lending connections at once, and from one user: one per mount or per process
/// under `dfs run` that reads.
const MAX_CONNECTIONS: usize = 256;
const MAX_PER_USER: usize = 64;
/// How often an idle connection looks whether the server is stopping.
const POLL: Duration = Duration::from_millis(250);

/// The listener of a server reachable at `shm:NAME`.
pub fn listen(shm_name: &str) -> io::Result<UnixListener> {
    let l = UnixListener::bind_addr(&SocketAddr::from_abstract_name(socket_name(shm_name))?)?;
    l.set_nonblocking(true)?;
    Ok(l)
}

/// Counts the lending connections being served, by user.
#[derive(Debug, Default)]
pub struct Lending {
    by_user: Mutex<HashMap<u32, usize>>,
}

impl Lending {
    /// Takes every connection waiting on `l`; each one admitted is served on a thread.
    pub fn accept_all(self: &Arc<Self>, l: &UnixListener, shared: &Arc<Shared>) {
        loop {
            let stream = match l.accept() {
                Ok((s, _)) => s,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) => {
                    tracing::warn!("lending: accept failed: {e}");
                    return;
                }
            };
            let uid = match getsockopt(&stream, sockopt::PeerCredentials) {
                Ok(c) => c.uid(),
                Err(_) => continue,
            };
            if !may_borrow(&shared.fs, uid) {
                // Dropped: its opens may carry rights it does not have itself.
                tracing::debug!("lending: refused uid {uid} on this server's settings");
                continue;
            }
            if !self.admit(uid) {
                tracing::debug!("lending: uid {uid} holds its share of connections");
                continue;
            }
            let (me, shared) = (self.clone(), shared.clone());
            let spawned = std::thread::Builder::new()
                .name("dfs-lend".into())
                .spawn(move || {
                    if let Err(e) = serve(stream, &shared, uid) {
                        tracing::debug!("lending connection ended: {e}");
                    }
                    me.leave(uid);
                });
            if let Err(e) = spawned {
                self.leave(uid);
                tracing::error!("cannot start a thread for lending: {e}");
            }
        }
    }
}

impl Lending {
    /// Counts one more connection of `uid`, if within the limits.
    fn admit(&self, uid: u32) -> bool {
        let mut by = self.by_user.lock().unwrap_or_else(|p| p.into_inner());
        let serving: usize = by.values().sum();
        let mine = by.entry(uid).or_insert(0);
        if *mine >= MAX_PER_USER || serving >= MAX_CONNECTIONS {
            return false;
        }
        *mine += 1;
        true
    }

    fn leave(&self, uid: u32) {
        let mut by = self.by_user.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = by.get_mut(&uid) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                by.remove(&uid);
            }
        }
    }
}

/// Whether a local peer running as `uid` may borrow (see the module's documentation).
fn may_borrow(fs: &crate::fs::Fs, uid: u32) -> bool {
    uid == 0
        || (!fs.read_only
            && fs.squash != crate::Squash::All
            && (fs.can_switch || nix::unistd::geteuid().as_raw() == uid))
}

/// Answers requests until the peer goes or the server stops.
fn serve(mut s: UnixStream, shared: &Shared, uid: u32) -> io::Result<()> {
    s.set_nonblocking(false)?;
    s.set_read_timeout(Some(POLL))?;
    loop {
        let mut buf = [0u8; REQUEST_LEN];
        let mut got = 0;
        while got < REQUEST_LEN {
            if shared.stop.load(Ordering::Relaxed) {
                return Ok(());
            }
            match s.read(&mut buf[got..]) {
                Ok(0) => return Ok(()),
                Ok(n) => got += n,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock
                            | io::ErrorKind::TimedOut
                            | io::ErrorKind::Interrupted
                    ) => {}
                Err(e) => return Err(e),
            }
        }
        let Ok(req) = LendRequest::decode(&buf) else {
            return Err(io::Error::other("not a lending request"));
        };
        // The binding the peer's own connections got: its opens, no one else's.
        let session = crate::session::bind_local_session(&req.session, uid);
        let lent = shared
            .fs
            .opens
            .get(&session, req.open)
            .ok_or(libc::EBADF)
            .and_then(|fd| lendable(&fd).map(|()| fd));
        let (code, fd) = match &lent {
            Ok(fd) => (0i32, Some(fd.as_raw_fd())),
            Err(e) => {
                tracing::debug!("lending: uid {uid}, open {:?}: errno {e}", req.open);
                (*e, None)
            }
        };
        let reply = code.to_le_bytes();
        let iov = [IoSlice::new(&reply)];
        let fds: Vec<i32> = fd.into_iter().collect();
        let cmsg: Vec<ControlMessage> = if fds.is_empty() {
            Vec::new()
        } else {
            vec![ControlMessage::ScmRights(&fds)]
        };
        sendmsg::<()>(s.as_raw_fd(), &iov, &cmsg, MsgFlags::MSG_NOSIGNAL, None)?;
    }
}

/// Whether `fd` may be lent: a regular file open for reading alone (errno otherwise).
fn lendable(fd: &OwnedFd) -> Result<(), i32> {
    if crate::fs::access_mode(fd.as_fd()).map_err(|e| e as i32)? != OFlag::O_RDONLY {
        return Err(libc::EPERM);
    }
    let st = fstat(fd.as_fd()).map_err(|e| e as i32)?;
    if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT != SFlag::S_IFREG {
        return Err(libc::EINVAL);
    }
    // Writes through a lent file run with the mount's capabilities, which keep the set-id
    // bits that a caller's own write would clear.
    let setgid_exec = libc::S_ISGID | libc::S_IXGRP;
    if st.st_mode & libc::S_ISUID != 0 || st.st_mode & setgid_exec == setgid_exec {
        return Err(libc::EPERM);
    }
    Ok(())
}
