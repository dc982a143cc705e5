//! Telling clients what changed, so that they may cache for long.
//!
//! A client subscribes one connection of its session ([`dfs_proto::msg::Op::Subscribe`]);
//! from then on whatever changes a file it may hold in its caches is sent there as a
//! [`Notice`], and the client drops those entries from the kernel's caches. Changes come from
//! two places: the requests of other clients (the session that made a change is not told of
//! it: its kernel already knows), and programs on the server itself ([`crate::watch`]).
//!
//! A request's change is recorded as the handles it named ([`Change`]); the thread that
//! sends a client its notices turns handles into inode numbers, so that the request that
//! made the change pays for no lookup. What waits for one client is bounded: past
//! [`MAX_PENDING`] items it becomes "drop everything", which is always correct, only slower.

use std::os::fd::AsFd;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use dfs_proto::handle::FileHandle;
use dfs_proto::msg::{Body, Notice, Op};
use dfs_proto::name::Name;

use crate::handles::Handles;
use crate::opens::Session;

/// Items that may wait for one client before they are replaced by "drop everything".
pub const MAX_PENDING: usize = 4096;

/// What one change touched, as far as the clients' caches go.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Change {
    /// What is known by inode number already.
    pub notice: Notice,
    /// Files and directories whose attributes, data or listing changed, by handle.
    pub handles: Vec<FileHandle>,
    /// Names that changed, by the directory's handle.
    pub entries: Vec<(FileHandle, Name)>,
}

impl Change {
    /// Whether there is nothing to tell.
    pub fn is_empty(&self) -> bool {
        self.notice.is_empty() && self.handles.is_empty() && self.entries.is_empty()
    }

    fn len(&self) -> usize {
        self.notice.len() + self.handles.len() + self.entries.len()
    }

    fn merge(&mut self, other: &Change) {
        self.notice.everything |= other.notice.everything;
        self.notice.inodes.extend_from_slice(&other.notice.inodes);
        self.notice.entries.extend_from_slice(&other.notice.entries);
        self.handles.extend_from_slice(&other.handles);
        self.entries.extend_from_slice(&other.entries);
    }

    /// The notice to send: handles become inode numbers (a handle that no longer resolves
    /// names a file that is gone, which nobody can reach any more). Repeats are dropped.
    pub fn resolve(self, handles: &Handles) -> Notice {
        let mut n = self.notice;
        // Each handle resolved once: a directory is named by its entries and as itself.
        let mut seen: std::collections::HashMap<FileHandle, Option<u64>> = Default::default();
        let mut ino = |h: &FileHandle| {
            *seen.entry(h.clone()).or_insert_with(|| {
                let fd = handles.resolve(h).ok()?;
                nix::sys::stat::fstat(fd.as_fd()).ok().map(|st| st.st_ino)
            })
        };
        n.inodes.extend(self.handles.iter().filter_map(&mut ino));
        n.entries.extend(
            self.entries
                .into_iter()
                .filter_map(|(dir, name)| Some((ino(&dir)?, name))),
        );
        n.inodes.sort_unstable();
        n.inodes.dedup();
        n.entries
            .sort_unstable_by(|a, b| (a.0, a.1.as_bytes()).cmp(&(b.0, b.1.as_bytes())));
        n.entries.dedup();
        n
    }

    /// What a request that succeeded with `body` changed, if anything.
    pub fn of(op: &Op, body: &Body) -> Option<Change> {
        let mut c = Change::default();
        let name_in = |c: &mut Change, dir: &FileHandle, name: &Name| {
            c.entries.push((dir.clone(), name.clone()));
            c.handles.push(dir.clone());
        };
        match (op, body) {
            (Op::SetAttr { .. }, Body::Attr(a)) => c.notice.inodes.push(a.ino),
            (Op::Write { .. }, Body::Written { attr, .. }) => c.notice.inodes.push(attr.ino),
            (Op::Open { handle, flags }, _) if flags.truncate => c.handles.push(handle.clone()),
            (Op::Create { dir, name, .. }, Body::Opened { entry, .. }) => {
                name_in(&mut c, dir, name);
                // An existing file opened with O_TRUNC changed too.
                if let Some(e) = entry {
                    c.notice.inodes.push(e.attr.ino);
                }
            }
            (Op::Link { dir, name, .. }, Body::Entry(e)) => {
                name_in(&mut c, dir, name);
                c.notice.inodes.push(e.attr.ino);
            }
            (
                Op::Mkdir { dir, name, .. }
                | Op::Mknod { dir, name, .. }
                | Op::Symlink { dir, name, .. }
                | Op::Unlink { dir, name }
                | Op::Rmdir { dir, name },
                _,
            ) => name_in(&mut c, dir, name),
            (
                Op::Rename {
                    from_dir,
                    from,
                    to_dir,
                    to,
                    ..
                },
                _,
            ) => {
                name_in(&mut c, from_dir, from);
                name_in(&mut c, to_dir, to);
            }
            (
                Op::Fallocate { handle, .. }
                | Op::SetXattr { handle, .. }
                | Op::RemoveXattr { handle, .. },
                _,
            ) => c.handles.push(handle.clone()),
            _ => return None,
        }
        Some(c)
    }
}

/// The directories a request looks into or changes: those a client may now cache names of,
/// which [`crate::watch`] must watch for local changes.
pub fn dirs_of(op: &Op) -> [Option<&FileHandle>; 2] {
    match op {
        Op::Lookup { dir, .. }
        | Op::ReadDir { dir, .. }
        | Op::ListDir { dir, .. }
        | Op::Create { dir, .. }
        | Op::Mkdir { dir, .. }
        | Op::Mknod { dir, .. }
        | Op::Symlink { dir, .. }
        | Op::Link { dir, .. } => [Some(dir), None],
        Op::Rename {
            from_dir, to_dir, ..
        } => [Some(from_dir), Some(to_dir)],
        _ => [None, None],
    }
}

/// One subscribed connection.
#[derive(Debug)]
pub struct Subscriber {
    session: Session,
    pending: Mutex<Change>,
    ready: Condvar,
    closed: std::sync::atomic::AtomicBool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Subscriber {
    /// Whether the server ended this subscription (what it promised no longer holds).
    pub fn is_closed(&self) -> bool {
        self.closed.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Waits up to `timeout` for something to tell; takes it.
    pub fn next(&self, timeout: Duration) -> Option<Change> {
        let mut p = lock(&self.pending);
        if p.is_empty() {
            p = self
                .ready
                .wait_timeout(p, timeout)
                .map(|(g, _)| g)
                .unwrap_or_else(|e| e.into_inner().0);
        }
        (!p.is_empty()).then(|| std::mem::take(&mut *p))
    }
}

/// Every subscribed connection of the server.
#[derive(Debug, Default)]
pub struct Notices {
    subscribers: Mutex<Vec<Arc<Subscriber>>>,
}

/// A subscription, undone when dropped (the connection ended).
#[derive(Debug)]
pub struct Subscription<'a> {
    hub: &'a Notices,
    sub: Arc<Subscriber>,
}

impl Subscription<'_> {
    /// The subscriber's side.
    pub fn subscriber(&self) -> &Subscriber {
        &self.sub
    }
}

impl Drop for Subscription<'_> {
    fn drop(&mut self) {
        lock(&self.hub.subscribers).retain(|s| !Arc::ptr_eq(s, &self.sub));
    }
}

impl Notices {
    /// Subscribes a connection of `session`.
    pub fn subscribe(&self, session: Session) -> Subscription<'_> {
        let sub = Arc::new(Subscriber {
            session,
            pending: Mutex::new(Change::default()),
            ready: Condvar::new(),
            closed: std::sync::atomic::AtomicBool::new(false),
        });
        lock(&self.subscribers).push(sub.clone());
        Subscription { hub: self, sub }
    }

    /// Ends every subscription: each client drops what it caches and subscribes again.
    pub fn close_all(&self) {
        for s in lock(&self.subscribers).iter() {
            s.closed.store(true, std::sync::atomic::Ordering::Relaxed);
            s.ready.notify_one();
        }
    }

    /// Tells every subscriber but `origin`'s connections.
    pub fn publish(&self, origin: Option<&Session>, change: &Change) {
        if change.is_empty() {
            return;
        }
        let subs = lock(&self.subscribers);
        for s in subs.iter().filter(|s| origin != Some(&s.session)) {
            let mut p = lock(&s.pending);
            if p.notice.everything || p.len() + change.len() > MAX_PENDING {
                *p = Change::default();
                p.notice.everything = true;
            } else {
                p.merge(change);
            }
            s.ready.notify_one();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_origin_is_not_told_and_a_flood_becomes_everything() {
        let hub = Notices::default();
        let (a, b) = ([1u8; 16], [2u8; 16]);
        let sa = hub.subscribe(a);
        let sb = hub.subscribe(b);
        let mut c = Change::default();
        c.notice.inodes.push(7);
        hub.publish(Some(&a), &c);
        assert_eq!(sa.subscriber().next(Duration::ZERO), None);
        assert_eq!(sb.subscriber().next(Duration::ZERO), Some(c.clone()));
        for _ in 0..=MAX_PENDING {
            hub.publish(None, &c);
        }
        assert!(
            sa.subscriber()
                .next(Duration::ZERO)
                .unwrap()
                .notice
                .everything
        );
        drop(sb);
        assert_eq!(lock(&hub.subscribers).len(), 1);
    }
}
