//! Open files. An open id is random and bound to the client session that made it: another
//! client cannot use it, and one client's connections share it. When the last connection of
//! a session goes away, its opens are closed; a reconnecting client's requests still carry
//! the file handle, and the server reopens by handle.

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex};

use dfs_proto::handle::OpenId;

/// Most opens one session may hold, so that one client cannot exhaust the server's
/// descriptors.
pub const MAX_OPENS_PER_SESSION: usize = 4096;

/// A client session's identity (from its hello).
pub type Session = [u8; 16];

#[derive(Default)]
struct Table {
    opens: HashMap<u64, (Session, Arc<OwnedFd>)>,
    sessions: HashMap<Session, (usize, usize)>,
}

/// The server's open files.
#[derive(Default)]
pub struct Opens {
    table: Mutex<Table>,
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

    /// A connection of `session` starts.
    pub fn attach(&self, session: Session) {
        self.lock().sessions.entry(session).or_default().0 += 1;
    }

    /// A connection of `session` ends; the last one closes the session's opens.
    pub fn detach(&self, session: Session) {
        let mut t = self.lock();
        let last = match t.sessions.get_mut(&session) {
            Some(s) => {
                s.0 = s.0.saturating_sub(1);
                s.0 == 0
            }
            None => false,
        };
        if last {
            t.sessions.remove(&session);
            t.opens.retain(|_, (s, _)| *s != session);
        }
    }

    /// Records an open; `None` when the session holds too many.
    pub fn insert(&self, session: Session, fd: OwnedFd) -> Option<OpenId> {
        let mut t = self.lock();
        let s = t.sessions.entry(session).or_default();
        if s.1 >= MAX_OPENS_PER_SESSION {
            return None;
        }
        s.1 += 1;
        loop {
            let mut b = [0u8; 8];
            getrandom::fill(&mut b).ok()?;
            let id = u64::from_le_bytes(b);
            if id != 0 && !t.opens.contains_key(&id) {
                t.opens.insert(id, (session, Arc::new(fd)));
                return Some(OpenId(id));
            }
        }
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
                if let Some(s) = t.sessions.get_mut(session) {
                    s.1 = s.1.saturating_sub(1);
                }
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
