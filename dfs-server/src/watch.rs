//! Noticing what programs on the server change in the export, for the clients' caches.
//!
//! Every directory a client looks into is marked with fanotify (`FAN_EVENT_ON_CHILD`,
//! reporting the directory's file handle and the child's name), so that a file created,
//! removed, renamed, written or changed by anything on the server becomes a [`Notice`] for
//! the subscribed clients ([`crate::notices`]). Events this server caused itself are skipped
//! by their pid: its requests are told to the other clients precisely, by the session that
//! served them.
//!
//! An ordinary user may do this too (Linux 5.13 on: inode marks with file ids, the
//! originator's pid shown only for the listener's own events, which is all that is needed).
//! Where fanotify is refused (an older kernel, the per-user limits of
//! `/proc/sys/fs/fanotify`) or turned off (`dfs-server --no-watch`), nothing is watched, the
//! server says so in its `Subscribed` answer, and clients keep their short cache times.

use std::collections::{HashMap, HashSet};
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use dfs_proto::handle::FileHandle;
use dfs_proto::msg::Notice;
use dfs_proto::name::Name;
use nix::fcntl::AtFlags;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

use crate::handles::Handles;
use crate::notices::{Change, Notices};
use crate::sys;

/// What a directory's mark asks to hear: its entries created, removed and renamed, and its
/// children (and itself) written or changed.
const MASK: u64 = libc::FAN_CREATE
    | libc::FAN_DELETE
    | libc::FAN_MOVED_FROM
    | libc::FAN_MOVED_TO
    | libc::FAN_ATTRIB
    | libc::FAN_MODIFY
    | libc::FAN_CLOSE_WRITE
    | libc::FAN_ONDIR
    | libc::FAN_EVENT_ON_CHILD;

/// Most directories marked; beyond, the server stops promising: new directories are not
/// watched and the events of marked ones still flow. (The kernel's own limit is per user.)
const MAX_MARKS: usize = 100_000;

/// The kernel's file handle of a directory, as fanotify reports it: type, then bytes.
type Fid = (i32, Vec<u8>);

/// The fanotify group and the directories it marks.
#[derive(Debug)]
pub struct Watch {
    group: OwnedFd,
    /// Client handles of the directories marked (or being marked), for the fast path.
    marked: Mutex<HashSet<FileHandle>>,
    /// A marked directory's kernel file handle → the handle clients know it by, and its
    /// inode number.
    by_fid: Mutex<HashMap<Fid, (FileHandle, u64)>>,
    /// Set when the mark limit was reached: local changes may go unnoticed from then on.
    full: AtomicBool,
}

/// How long the watch waits after an event for others to join it.
const BATCH: Duration = Duration::from_millis(2);

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Watch {
    /// A watch, or why there is none.
    pub fn new() -> io::Result<Watch> {
        Ok(Watch {
            group: sys::fanotify_init_dfid_name()?,
            marked: Mutex::default(),
            by_fid: Mutex::default(),
            full: AtomicBool::new(false),
        })
    }

    /// Whether local changes are still all noticed (no mark was refused).
    pub fn complete(&self) -> bool {
        !self.full.load(Ordering::Relaxed)
    }

    /// Marks the directory `dir` (its client handle) unless it is marked already. Costs a
    /// hash lookup once it is. Returns `false` once a directory could not be marked (the mark
    /// limit, the kernel's per-user limits, a directory this server may not read): local
    /// changes may go unnoticed from then on, and clients must be told to cache briefly.
    pub fn watch_dir(&self, handles: &Handles, dir: &FileHandle) -> bool {
        {
            let mut m = lock(&self.marked);
            if m.contains(dir) {
                return self.complete();
            }
            if m.len() >= MAX_MARKS {
                return self.give_up(format_args!("more than {MAX_MARKS} directories"));
            }
            m.insert(dir.clone());
        }
        let marked = handles.resolve(dir).map_err(|e| e.0).and_then(|fd| {
            let fid = sys::name_to_handle(fd.as_fd(), c"", libc::AT_EMPTY_PATH)
                .map_err(|e| e.raw_os_error().unwrap_or(libc::EIO))?;
            let ino = nix::sys::stat::fstat(fd.as_fd())
                .map_err(|e| e as i32)?
                .st_ino;
            sys::fanotify_mark_dir(self.group.as_fd(), fd.as_fd(), MASK)
                .map_err(|e| e.raw_os_error().unwrap_or(libc::EIO))?;
            Ok(((fid.kind, fid.bytes), ino))
        });
        match marked {
            Ok((fid, ino)) => {
                lock(&self.by_fid).insert(fid, (dir.clone(), ino));
                self.complete()
            }
            Err(errno) => {
                lock(&self.marked).remove(dir);
                if matches!(errno, libc::ENOENT | libc::ESTALE | libc::ENOTDIR) {
                    // Gone meanwhile: nobody can cache what is in it.
                    self.complete()
                } else {
                    let e = std::io::Error::from_raw_os_error(errno);
                    self.give_up(format_args!("{}", dfs_proto::errno::plain(&e)))
                }
            }
        }
    }

    /// Stops promising that local changes are seen; says why, once.
    fn give_up(&self, why: std::fmt::Arguments<'_>) -> bool {
        if !self.full.swap(true, Ordering::Relaxed) {
            tracing::warn!("cannot watch every directory clients look into ({why}): changes local programs make may go unnoticed, so clients now cache for their short times only");
        }
        false
    }

    /// Reads events and publishes them until `stop` is set (looked at every quarter second).
    pub fn run(&self, handles: &Handles, hub: &Notices, stop: &AtomicBool) {
        let me = std::process::id() as i32;
        let mut buf = vec![0u8; 64 * 1024];
        while !stop.load(Ordering::Relaxed) {
            let mut fds = [PollFd::new(self.group.as_fd(), PollFlags::POLLIN)];
            match poll(&mut fds, PollTimeout::from(250u16)) {
                Ok(0) | Err(nix::Error::EINTR) => continue,
                Err(e) => {
                    tracing::error!("watching the export stopped: {e}");
                    self.full.store(true, Ordering::Relaxed);
                    return;
                }
                Ok(_) => {}
            }
            // Events come in bursts while clients work (this server's own requests cause
            // most of them, to be skipped below): a pause lets a burst gather, so this thread
            // wakes once per burst rather than once per request, on machines with few cores
            // where each wake-up takes the core from a connection thread. Programs' changes
            // reach the clients that much later, far below any cache time.
            std::thread::sleep(BATCH);
            let n = match nix::unistd::read(self.group.as_fd(), &mut buf) {
                Ok(n) => n,
                Err(nix::Error::EAGAIN | nix::Error::EINTR) => continue,
                Err(e) => {
                    tracing::error!("reading fanotify events: {e}");
                    continue;
                }
            };
            let mut change = Change::default();
            for ev in parse(&buf[..n]) {
                if ev.pid == me {
                    continue;
                }
                self.apply(&ev, handles, &mut change.notice);
            }
            hub.publish(None, &change);
        }
    }

    /// What one event means for the clients' caches.
    fn apply(&self, ev: &Event<'_>, handles: &Handles, notice: &mut Notice) {
        if ev.mask & libc::FAN_Q_OVERFLOW != 0 {
            notice.everything = true;
            return;
        }
        let Some((dir, dir_ino)) = ev
            .dir
            .as_ref()
            .and_then(|fid| lock(&self.by_fid).get(fid).cloned())
        else {
            return;
        };
        let child = ev.name.filter(|n| !n.is_empty() && *n != b".");
        let Some(child) = child else {
            // The directory itself changed.
            notice.inodes.push(dir_ino);
            return;
        };
        let Ok(name) = Name::new(child) else {
            return;
        };
        if ev.mask
            & (libc::FAN_CREATE | libc::FAN_DELETE | libc::FAN_MOVED_FROM | libc::FAN_MOVED_TO)
            != 0
        {
            notice.entries.push((dir_ino, name.clone()));
            notice.inodes.push(dir_ino);
        }
        if ev.mask
            & (libc::FAN_ATTRIB | libc::FAN_MODIFY | libc::FAN_CLOSE_WRITE | libc::FAN_MOVED_TO)
            != 0
        {
            if let Some(ino) = child_ino(handles, &dir, child) {
                notice.inodes.push(ino);
            }
        }
    }
}

/// The inode number of `name` in the directory `dir` right now, if it is there.
fn child_ino(handles: &Handles, dir: &FileHandle, name: &[u8]) -> Option<u64> {
    let fd = handles.resolve(dir).ok()?;
    let st = nix::sys::stat::fstatat(
        fd.as_fd(),
        std::ffi::OsStr::from_bytes(name),
        AtFlags::AT_SYMLINK_NOFOLLOW,
    )
    .ok()?;
    Some(st.st_ino)
}

/// One event, as far as the clients care.
#[derive(Debug, PartialEq, Eq)]
struct Event<'a> {
    mask: u64,
    pid: i32,
    /// The directory's kernel file handle (type, bytes).
    dir: Option<Fid>,
    /// The child's name (or "." for the directory itself).
    name: Option<&'a [u8]>,
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_ne_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

/// The events in a buffer `read` from a fanotify group. The kernel wrote it, but it is
/// parsed with every length checked all the same: a malformed record ends the parse.
fn parse(buf: &[u8]) -> Vec<Event<'_>> {
    // struct fanotify_event_metadata: event_len u32, vers u8, reserved u8,
    // metadata_len u16, mask u64, fd i32, pid i32.
    const META: usize = 24;
    let mut out = Vec::new();
    let mut at = 0;
    while at + META <= buf.len() {
        let Some(len) = u32_at(buf, at).map(|l| l as usize) else {
            break;
        };
        let meta_len = u16_at(buf, at + 6).map_or(META, usize::from);
        if len < META || meta_len < META || at + len > buf.len() {
            break;
        }
        let ev = &buf[at..at + len];
        let mask = u64_at(ev, 8).unwrap_or(0);
        let pid = u32_at(ev, 20).unwrap_or(0) as i32;
        let (dir, name) = info(&ev[meta_len.min(len)..]);
        out.push(Event {
            mask,
            pid,
            dir,
            name,
        });
        at += len;
    }
    out
}

/// The first directory-fid record of an event's info part: the handle and the name.
fn info(mut rec: &[u8]) -> (Option<Fid>, Option<&[u8]>) {
    // struct fanotify_event_info_header: info_type u8, pad u8, len u16; then for the fid
    // types: fsid (8 bytes), struct file_handle (handle_bytes u32, handle_type i32, bytes),
    // and for DFID_NAME the NUL-terminated name.
    while rec.len() >= 4 {
        let kind = rec[0];
        let len = u16_at(rec, 2).map_or(0, usize::from);
        if len < 4 || len > rec.len() {
            break;
        }
        let body = &rec[4..len];
        let dfid =
            kind == libc::FAN_EVENT_INFO_TYPE_DFID_NAME || kind == libc::FAN_EVENT_INFO_TYPE_DFID;
        if dfid {
            let parsed = (|| {
                let hb = u32_at(body, 8)? as usize;
                let ht = u32_at(body, 12)? as i32;
                let bytes = body.get(16..16 + hb)?;
                let rest = body.get(16 + hb..)?;
                let name = (kind == libc::FAN_EVENT_INFO_TYPE_DFID_NAME).then(|| {
                    let end = rest.iter().position(|&c| c == 0).unwrap_or(rest.len());
                    &rest[..end]
                });
                Some(((ht, bytes.to_vec()), name))
            })();
            if let Some((fid, name)) = parsed {
                return (Some(fid), name);
            }
        }
        rec = &rec[len..];
    }
    (None, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(mask: u64, pid: i32, ht: i32, handle: &[u8], name: &[u8]) -> Vec<u8> {
        let mut info = vec![libc::FAN_EVENT_INFO_TYPE_DFID_NAME, 0, 0, 0];
        info.extend_from_slice(&[0u8; 8]);
        info.extend_from_slice(&(handle.len() as u32).to_ne_bytes());
        info.extend_from_slice(&ht.to_ne_bytes());
        info.extend_from_slice(handle);
        info.extend_from_slice(name);
        info.push(0);
        while info.len() % 4 != 0 {
            info.push(0);
        }
        let il = info.len() as u16;
        info[2..4].copy_from_slice(&il.to_ne_bytes());
        let mut ev = Vec::new();
        ev.extend_from_slice(&((24 + info.len()) as u32).to_ne_bytes());
        ev.extend_from_slice(&[3, 0]);
        ev.extend_from_slice(&24u16.to_ne_bytes());
        ev.extend_from_slice(&mask.to_ne_bytes());
        ev.extend_from_slice(&(-1i32).to_ne_bytes());
        ev.extend_from_slice(&pid.to_ne_bytes());
        ev.extend_from_slice(&info);
        ev
    }

    #[test]
    fn events_parse_and_garbage_ends_the_parse() {
        let mut buf = record(libc::FAN_CREATE, 42, 1, b"abcdefgh", b"new");
        buf.extend(record(libc::FAN_MODIFY, 7, 1, b"abcdefgh", b"f"));
        let evs = parse(&buf);
        assert_eq!(evs.len(), 2);
        assert_eq!(evs[0].mask, libc::FAN_CREATE);
        assert_eq!(evs[0].pid, 42);
        assert_eq!(evs[0].dir, Some((1, b"abcdefgh".to_vec())));
        assert_eq!(evs[0].name, Some(&b"new"[..]));
        assert_eq!(evs[1].name, Some(&b"f"[..]));
        // A length running past the buffer, a zero length, random bytes: no panic.
        let mut bad = buf.clone();
        bad[0] = 0xff;
        assert!(parse(&bad).is_empty());
        assert!(parse(&[0u8; 24]).is_empty());
        assert!(parse(&buf[..30]).len() <= 1);
        for cut in 0..buf.len() {
            let _ = parse(&buf[..cut]);
        }
    }

    #[test]
    fn a_group_can_be_made_as_root() {
        if !nix::unistd::geteuid().is_root() {
            return;
        }
        let w = Watch::new().unwrap();
        assert!(w.complete());
    }
}
