//! Open files. An open id is random and bound to the client session that made it: another
//! client cannot use it, and one client's connections share it. When the last connection of
//! a session goes away, its opens are closed; a reconnecting client's requests still carry
//! the file handle, and the server reopens by handle.
//!
//! Each open holds a descriptor, so opens are limited in all, per session and per peer (a
//! local user, or a remote address; local root, a mount serving everyone, only by the
//! total): one user opening files by the thousand cannot take the descriptors the others
//! need.

use std::collections::HashMap;
use std::net::IpAddr;
use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex};

use dfs_proto::handle::OpenId;
use vmmc_sockets::PeerIdentity;

/// Most opens one session may hold unless the descriptor limit calls for fewer.
pub const MAX_OPENS_PER_SESSION: usize = 4096;

/// A client session's identity (from its hello, bound to its peer).
pub type Session = [u8; 16];

/// Whose budget an open counts against.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Peer {
    /// A local user.
    Uid(u32),
    /// A remote address.
    Ip(IpAddr),
}

impl Peer {
    /// The budget of a peer as the kernel reported it; `None` (the total only) for local root.
    pub fn of(id: &PeerIdentity) -> Option<Peer> {
        match id {
            PeerIdentity::Local { uid: 0, .. } => None,
            PeerIdentity::Local { uid, .. } => Some(Peer::Uid(*uid)),
            PeerIdentity::Remote(sa) => Some(Peer::Ip(sa.ip())),
        }
    }
}

/// How many opens may be held.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OpenLimits {
    /// In all.
    pub total: usize,
    /// By one peer (see [`Peer`]).
    pub per_peer: usize,
    /// By one session.
    pub per_session: usize,
}

impl Default for OpenLimits {
    fn default() -> OpenLimits {
        OpenLimits {
            total: 1 << 20,
            per_peer: 1 << 18,
            per_session: MAX_OPENS_PER_SESSION,
        }
    }
}

struct SessionState {
    conns: usize,
    opens: usize,
    peer: Option<Peer>,
}

#[derive(Default)]
struct Table {
    opens: HashMap<u64, (Session, Arc<OwnedFd>)>,
    sessions: HashMap<Session, SessionState>,
    by_peer: HashMap<Peer, usize>,
}

impl Table {
    /// Forgets one open of `session` in the counts.
    fn uncount(&mut self, session: &Session) {
        let Some(s) = self.sessions.get_mut(session) else {
            return;
        };
        s.opens = s.opens.saturating_sub(1);
        if let Some(p) = s.peer {
            if let Some(n) = self.by_peer.get_mut(&p) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    self.by_peer.remove(&p);
                }
            }
        }
    }
}

/// The server's open files.
#[derive(Default)]
pub struct Opens {
    table: Mutex<Table>,
    limits: OpenLimits,
}

impl std::fmt::Debug for Opens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Opens").finish_non_exhaustive()
    }
}

impl Opens {
    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// An open-file table with these limits.
    pub fn with_limits(limits: OpenLimits) -> Opens {
        Opens {
            table: Mutex::default(),
            limits,
        }
    }

    /// The limits in force.
    pub fn limits(&self) -> OpenLimits {
        self.limits
    }

    /// A connection of `session`, from `peer`'s budget, starts.
    pub fn attach(&self, session: Session, peer: Option<Peer>) {
        self.lock()
            .sessions
            .entry(session)
            .or_insert(SessionState {
                conns: 0,
                opens: 0,
                peer,
            })
            .conns += 1;
    }

    /// A connection of `session` ends; the last one closes the session's opens.
    pub fn detach(&self, session: Session) {
        let mut t = self.lock();
        let last = match t.sessions.get_mut(&session) {
            Some(s) => {
                s.conns = s.conns.saturating_sub(1);
                s.conns == 0
            }
            None => false,
        };
        if last {
            let ids: Vec<u64> = t
                .opens
                .iter()
                .filter(|(_, (s, _))| *s == session)
                .map(|(id, _)| *id)
                .collect();
            for id in ids {
                t.opens.remove(&id);
                t.uncount(&session);
            }
            t.sessions.remove(&session);
        }
    }

    /// Records an open; `None` when a limit is reached (the session's, its peer's, or the
    /// total).
    pub fn insert(&self, session: Session, fd: OwnedFd) -> Option<OpenId> {
        let mut t = self.lock();
        if t.opens.len() >= self.limits.total {
            return None;
        }
        let (opens, peer) = match t.sessions.get(&session) {
            Some(s) => (s.opens, s.peer),
            None => (0, None),
        };
        if opens >= self.limits.per_session {
            return None;
        }
        if let Some(p) = peer {
            if t.by_peer.get(&p).copied().unwrap_or(0) >= self.limits.per_peer {
                return None;
            }
        }
        let id = loop {
            let mut b = [0u8; 8];
            getrandom::fill(&mut b).ok()?;
            let id = u64::from_le_bytes(b);
            if id != 0 && !t.opens.contains_key(&id) {
                break id;
            }
        };
        if let Some(p) = peer {
            *t.by_peer.entry(p).or_default() += 1;
        }
        t.sessions
            .entry(session)
            .or_insert(SessionState {
                conns: 0,
                opens: 0,
                peer,
            })
            .opens += 1;
        t.opens.insert(id, (session, Arc::new(fd)));
        Some(OpenId(id))
    }

    /// The open's descriptor, if `session` made it.
    pub fn get(&self, session: &Session, id: OpenId) -> Option<Arc<OwnedFd>> {
        let t = self.lock();
        match t.opens.get(&id.0) {
            Some((s, fd)) if s == session => Some(fd.clone()),
            _ => None,
        }
    }

    /// Forgets an open; whether `session` had it.
    pub fn remove(&self, session: &Session, id: OpenId) -> bool {
        let mut t = self.lock();
        match t.opens.get(&id.0) {
            Some((s, _)) if s == session => {
                t.opens.remove(&id.0);
                t.uncount(session);
                true
            }
            _ => false,
        }
    }

    /// Open files held, for tests and logs.
    pub fn len(&self) -> usize {
        self.lock().opens.len()
    }

    /// Whether no file is open.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
