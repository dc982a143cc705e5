//! Reads the kernel serves itself, from the server's page cache, on one host (FUSE
//! passthrough, Linux 6.9+).
//!
//! Through the rings, a block read through the mount is copied three times: by the server
//! from its page cache into this process's ring, by the kernel from the ring into the mount's
//! page cache, and by the kernel again into the reading program. When the server is on this
//! host (`shm:`), it can lend the mount its descriptor of a read-only open
//! ([`dfs_proto::lend`]); registered as the open's backing file, the kernel copies each byte
//! once, from the server's page cache into the program, and this process never sees the
//! read. The server's page cache is the file's only cache, so what another client writes
//! through the server is what the next read sees.
//!
//! The kernel holds each inode in one I/O mode at a time: while any open of it goes
//! through a backing file, every open of it must, with the same backing file (the kernel
//! fails the open with `EIO` otherwise), and while any open of it uses the mount's page
//! cache, none may pass through. So this keeps each inode's mode: an open that only reads
//! starts passing through when no cached open is live; any open of a file being passed
//! through passes through too, writers included; anything else is cached as before. The
//! kernel leaves an inode's mode before it sends the release that tells us, so what is
//! recorded here is never less than what the kernel holds, and the decisions stay valid.
//!
//! A writer that passes through writes the server's file from its own kernel, with the
//! mount's credentials, and the server does not see the write as a request: so the mount
//! asks the server for such a file's attributes every time (its kept copy could be older
//! than the write), and the server lends no set-user-ID or set-group-ID file, whose bits a
//! write by an unprivileged caller clears but one with the mount's capabilities would not.
//! Other clients hear of such writes through the server's watch of the export, as they
//! hear of any local program's.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use dfs_proto::handle::OpenId;
use fuser::{BackingId, ReplyOpen};

use crate::lend::Lender;

/// How one open of the mount is served.
#[derive(Clone, Debug)]
pub(super) enum Io {
    /// Through the mount's page cache and the rings.
    Cached,
    /// By the kernel, on the server's file; `true` if the open may write.
    Through(Arc<BackingId>, bool),
}

/// An inode's mode, with the opens that hold it.
#[derive(Debug)]
enum Mode {
    Cached(usize),
    Through {
        backing: Arc<BackingId>,
        opens: usize,
        writers: usize,
    },
}

impl Mode {
    /// Counts one more open in this mode, and says how it is served.
    fn join(&mut self, writes: bool) -> Io {
        match self {
            Mode::Cached(n) => {
                *n += 1;
                Io::Cached
            }
            Mode::Through {
                backing,
                opens,
                writers,
            } => {
                *opens += 1;
                *writers += usize::from(writes);
                Io::Through(backing.clone(), writes)
            }
        }
    }
}

/// Joins the mode `ino` is in, or starts it cached.
fn join_or_cache(modes: &mut HashMap<u64, Mode>, ino: u64, writes: bool) -> Io {
    modes.entry(ino).or_insert(Mode::Cached(0)).join(writes)
}

/// Borrows descriptors from a server on this host and keeps each inode's I/O mode.
#[derive(Debug)]
pub(super) struct Passthrough {
    lender: Lender,
    modes: Mutex<HashMap<u64, Mode>>,
}

impl Passthrough {
    /// For a server at `addr` (only `shm:` servers are on this host), whose opens belong to
    /// `session`.
    pub(super) fn new(addr: &str, session: [u8; 16]) -> Option<Passthrough> {
        Some(Passthrough {
            lender: Lender::new(addr, session)?,
            modes: Mutex::new(HashMap::new()),
        })
    }

    /// Decides how a new open of `ino` is served: an open that only reads starts passing
    /// through when no cached open is live and the server lends `open`'s descriptor; any
    /// open of a file already passing through joins it; anything else is cached, as before
    /// passthrough existed.
    pub(super) fn open(&self, ino: u64, open: OpenId, writes: bool, reply: &ReplyOpen) -> Io {
        {
            let mut modes = self.modes();
            if writes || modes.contains_key(&ino) {
                return join_or_cache(&mut modes, ino, writes);
            }
        }
        // Borrowed without the lock; another open may have decided meanwhile, and then the
        // borrowed file is given back.
        let backing = self
            .lender
            .borrow(open)
            .and_then(|fd| reply.open_backing(&fd))
            .map_err(|e| tracing::debug!("passthrough: open {open:?} stays cached: {e}"))
            .ok();
        let mut modes = self.modes();
        match backing {
            Some(b) => modes
                .entry(ino)
                .or_insert_with(|| Mode::Through {
                    backing: Arc::new(b),
                    opens: 0,
                    writers: 0,
                })
                .join(writes),
            None => join_or_cache(&mut modes, ino, writes),
        }
    }

    /// A create's open: cached, unless the name was an existing file being passed through;
    /// counted as a writer either way.
    pub(super) fn created(&self, ino: u64) -> Io {
        join_or_cache(&mut self.modes(), ino, true)
    }

    fn modes(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Mode>> {
        self.modes.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether an open passing through may be writing `ino` behind the server's back: its
    /// attributes must then come from the server, not from what the mount kept.
    pub(super) fn written_through(&self, ino: u64) -> bool {
        matches!(
            self.modes().get(&ino),
            Some(Mode::Through { writers, .. }) if *writers > 0
        )
    }

    /// The release of an open of `ino` served as `io`.
    pub(super) fn released(&self, ino: u64, io: &Io) {
        let mut modes = self.modes();
        let last = match (modes.get_mut(&ino), io) {
            (Some(Mode::Cached(n)), Io::Cached) => {
                *n = n.saturating_sub(1);
                *n == 0
            }
            (Some(Mode::Through { opens, writers, .. }), Io::Through(_, wrote)) => {
                *opens = opens.saturating_sub(1);
                *writers = writers.saturating_sub(usize::from(*wrote));
                *opens == 0
            }
            _ => false,
        };
        if last {
            // Dropping the last reference unregisters the backing file; the kernel keeps
            // its own for files still open.
            modes.remove(&ino);
        }
    }
}
