//! The table of open file descriptions, in memory that every process of a run shares.
//!
//! A *description* is what an open of a DFS file makes: the file's handle, the server's
//! open, the access flags and the file offset. As in a kernel, descriptors refer to
//! descriptions and several descriptors (after `dup`, or in a child after `fork`) share one,
//! offset and flags included: `(echo a; echo b) > /dfs/f` writes "a\nb\n" because the
//! subshell's two commands move one offset. So descriptions live here, in a region of
//! 64-bit words that the face maps shared into every process of the run (a memfd on Linux;
//! ordinary memory for a face without `fork`).
//!
//! Who holds a description is counted per *owner* (a process id, or a token that stands for
//! a child being made, see [`Table::temp_owner`]), in a hash table of (owner, slot) →
//! count: a process that replaces itself (`exec`) says again what it holds
//! ([`Table::set_holdings`]), one that exits gives up what it held
//! ([`Table::drop_owner`]), and one that died without a word is found out by
//! [`Table::gc`]. A description whose count falls to zero is freed, and its server open is
//! the caller's to release.
//!
//! Every process of the run writes this memory: every index and length read from it is
//! checked before use, and a malformed slot reads as a closed descriptor (`EBADF`), never as
//! an out-of-bounds access or a panic.

use std::sync::atomic::{AtomicU64, Ordering};

use dfs_proto::handle::{FileHandle, OpenId, MAX_HANDLE};
use dfs_proto::Errno;

use crate::errno::{EBADF, EMFILE};
use crate::lock::{Held, SharedLock};

/// "K32SHIM" and the layout version.
const MAGIC: u64 = 0x4b33_3253_4849_4d02;
/// Header words.
const HEADER: usize = 16;
const H_MAGIC: usize = 0;
const H_LAYOUT: usize = 1;
const H_SESSION: usize = 2; // and 3
const H_LOCK: usize = 4;
const H_TOKENS: usize = 5;
const H_LAST_GC: usize = 6;
const H_HINT: usize = 7;
const H_NAMES: usize = 8;

/// Words per holding: owner (0 for an empty bucket), then slot (low 32) and count (high 32).
const HOLD_WORDS: usize = 2;

/// Longest path a description keeps (Linux's `PATH_MAX`).
pub const MAX_PATH: usize = 4096;
const S_STATE: usize = 0; // generation << 32 | state
const S_LOCK: usize = 1;
const S_OFFSET: usize = 2;
const S_FLAGS: usize = 3; // flags | kind << 32
const S_OPEN: usize = 4;
const S_OPEN_BITS: usize = 5; // bit 0: has an open, bit 1: the open appends
const S_REFS: usize = 6;
const S_PLACEHOLDER: usize = 7;
const S_INO: usize = 8;
const S_LENS: usize = 9; // handle length | path length << 32
const S_HANDLE: usize = 10;
const S_PATH: usize = S_HANDLE + MAX_HANDLE / 8;
/// Words per slot.
const SLOT_WORDS: usize = S_PATH + MAX_PATH / 8;

const FREE: u32 = 0;
const MAKING: u32 = 1;
const LIVE: u32 = 2;

/// Owners at or above this are tokens for children being made, not process ids.
const TEMP: u64 = 1 << 63;

/// What a description opens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A regular file (or another file the server opened for I/O).
    File,
    /// A directory (read by listing it; no server open).
    Dir,
    /// A name only (`O_PATH`): for `*at` calls and `fstat`, no I/O.
    Path,
}

impl Kind {
    fn code(self) -> u64 {
        match self {
            Kind::File => 1,
            Kind::Dir => 2,
            Kind::Path => 3,
        }
    }
    fn of(code: u64) -> Option<Kind> {
        match code {
            1 => Some(Kind::File),
            2 => Some(Kind::Dir),
            3 => Some(Kind::Path),
            _ => None,
        }
    }
}

/// A slot and the generation it had when it was handed out: a slot freed and reused since
/// is a different description.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SlotId {
    /// Its index.
    pub index: u32,
    /// Its generation.
    pub gen: u32,
}

/// Who holds descriptions: a process id, or a token from [`Table::temp_owner`].
pub type Owner = u64;

/// A new description.
#[derive(Debug)]
pub struct NewDesc<'b> {
    /// What it opens.
    pub kind: Kind,
    /// The open flags the face keeps (its own encoding; `F_GETFL` and `F_SETFL` on Linux).
    pub flags: u32,
    /// The file.
    pub handle: &'b FileHandle,
    /// The server's open, if any.
    pub open: Option<OpenId>,
    /// Whether the server's open appends.
    pub open_append: bool,
    /// The file's inode number on the server.
    pub ino: u64,
    /// Its absolute path as the program named it, resolved (for `getcwd` after `fchdir`,
    /// and `..` from an open directory).
    pub path: &'b [u8],
    /// What identifies the face's placeholder for it (an inode number on Linux).
    pub placeholder: u64,
}

/// A description as read back: everything but the offset and flags, which change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Desc {
    /// Its slot.
    pub id: SlotId,
    /// What it opens.
    pub kind: Kind,
    /// The file.
    pub handle: FileHandle,
    /// The server's open.
    pub open: Option<OpenId>,
    /// Whether the server's open appends.
    pub open_append: bool,
    /// The file's inode number on the server.
    pub ino: u64,
    /// Its path.
    pub path: Vec<u8>,
    /// Its placeholder's identity.
    pub placeholder: u64,
}

/// The table over a region of words.
#[derive(Debug, Clone, Copy)]
pub struct Table<'a> {
    w: &'a [AtomicU64],
    slots: u32,
    holds: u32,
}

fn mix(owner: Owner, slot: u32) -> u64 {
    let mut x = owner ^ (u64::from(slot) << 17) ^ 0x9e37_79b9_7f4a_7c15;
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x
}

impl<'a> Table<'a> {
    /// Words a region needs for `slots` descriptions and `holds` holdings.
    pub const fn words(slots: u32, holds: u32) -> usize {
        HEADER + holds as usize * HOLD_WORDS + slots as usize * SLOT_WORDS
    }

    /// The table in `w`: set up with `session` (the client session every process of the run
    /// connects with) if the region is fresh (all zero), else checked. Of two processes
    /// setting up at once, one wins and both see its header.
    pub fn attach(
        w: &'a [AtomicU64],
        slots: u32,
        holds: u32,
        session: [u8; 16],
    ) -> Result<Table<'a>, Errno> {
        if slots == 0 || holds == 0 || w.len() < Self::words(slots, holds) {
            return Err(Errno::EINVAL);
        }
        let t = Table { w, slots, holds };
        let layout = u64::from(slots) | u64::from(holds) << 32;
        // Claim the header with the layout word, fill it, then publish the magic.
        if w[H_LAYOUT]
            .compare_exchange(0, layout, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            w[H_SESSION].store(
                u64::from_le_bytes(session[..8].try_into().unwrap_or_default()),
                Ordering::Relaxed,
            );
            w[H_SESSION + 1].store(
                u64::from_le_bytes(session[8..].try_into().unwrap_or_default()),
                Ordering::Relaxed,
            );
            w[H_MAGIC].store(MAGIC, Ordering::Release);
        } else {
            // Another process is setting it up: its magic follows within microseconds.
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
            while w[H_MAGIC].load(Ordering::Acquire) != MAGIC {
                if std::time::Instant::now() > deadline {
                    return Err(Errno::EINVAL);
                }
                std::thread::yield_now();
            }
            if w[H_LAYOUT].load(Ordering::Acquire) != layout {
                return Err(Errno::EINVAL);
            }
        }
        Ok(t)
    }

    /// The client session of the run.
    pub fn session(&self) -> [u8; 16] {
        let mut s = [0u8; 16];
        s[..8].copy_from_slice(&self.w[H_SESSION].load(Ordering::Relaxed).to_le_bytes());
        s[8..].copy_from_slice(&self.w[H_SESSION + 1].load(Ordering::Relaxed).to_le_bytes());
        s
    }

    /// A counter every process of the run moves when it renames or removes a directory
    /// or changes attributes: what the others remember of directories is then old (see
    /// [`crate::dircache`]).
    pub fn names_changed(&self) -> &'a AtomicU64 {
        &self.w[H_NAMES]
    }

    /// The number of slots.
    pub fn slots(&self) -> u32 {
        self.slots
    }

    /// Takes the table's lock (for allocations and holdings) as the thread `me`.
    pub fn lock(&self, me: u64, alive: impl Fn(u64) -> bool) -> Held<'a> {
        SharedLock::new(&self.w[H_LOCK]).lock(me, alive)
    }

    fn slot_base(&self, index: u32) -> Option<usize> {
        (index < self.slots)
            .then(|| HEADER + self.holds as usize * HOLD_WORDS + index as usize * SLOT_WORDS)
    }

    fn sw(&self, index: u32, word: usize) -> Option<&'a AtomicU64> {
        self.w.get(self.slot_base(index)? + word)
    }

    fn state(&self, index: u32) -> (u32, u32) {
        let v = self
            .sw(index, S_STATE)
            .map_or(0, |w| w.load(Ordering::Acquire));
        ((v >> 32) as u32, v as u32)
    }

    fn put_bytes(&self, index: u32, at: usize, bytes: &[u8]) {
        for (i, chunk) in bytes.chunks(8).enumerate() {
            let mut b = [0u8; 8];
            b[..chunk.len()].copy_from_slice(chunk);
            if let Some(w) = self.sw(index, at + i) {
                w.store(u64::from_le_bytes(b), Ordering::Relaxed);
            }
        }
    }

    fn get_bytes(&self, index: u32, at: usize, len: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(len + 8);
        for i in 0..len.div_ceil(8) {
            let v = self
                .sw(index, at + i)
                .map_or(0, |w| w.load(Ordering::Relaxed));
            out.extend_from_slice(&v.to_le_bytes());
        }
        out.truncate(len);
        out
    }

    /// Makes a description, held once by `owner`; `EMFILE` when the table is full.
    pub fn alloc(&self, _g: &Held<'_>, owner: Owner, d: &NewDesc<'_>) -> Result<SlotId, Errno> {
        let path = d.path.get(..MAX_PATH).unwrap_or(d.path);
        let start = self.w[H_HINT].load(Ordering::Relaxed) as u32 % self.slots;
        for k in 0..self.slots {
            let index = (start + k) % self.slots;
            let Some(st) = self.sw(index, S_STATE) else {
                continue;
            };
            let v = st.load(Ordering::Acquire);
            if v as u32 != FREE {
                continue;
            }
            let gen = ((v >> 32) as u32).wrapping_add(1);
            let making = u64::from(gen) << 32 | u64::from(MAKING);
            if st
                .compare_exchange(v, making, Ordering::AcqRel, Ordering::Relaxed)
                .is_err()
            {
                continue;
            }
            let set = |word, val| {
                if let Some(w) = self.sw(index, word) {
                    w.store(val, Ordering::Relaxed)
                }
            };
            set(S_LOCK, 0);
            set(S_OFFSET, 0);
            set(S_FLAGS, u64::from(d.flags) | d.kind.code() << 32);
            set(S_OPEN, d.open.map_or(0, |o| o.0));
            set(
                S_OPEN_BITS,
                u64::from(d.open.is_some()) | u64::from(d.open_append) << 1,
            );
            set(S_REFS, 0);
            set(S_PLACEHOLDER, d.placeholder);
            set(S_INO, d.ino);
            let h = d.handle.as_bytes();
            set(S_LENS, h.len() as u64 | (path.len() as u64) << 32);
            self.put_bytes(index, S_HANDLE, h);
            self.put_bytes(index, S_PATH, path);
            st.store(u64::from(gen) << 32 | u64::from(LIVE), Ordering::Release);
            self.w[H_HINT].store(u64::from(index + 1), Ordering::Relaxed);
            let id = SlotId { index, gen };
            self.hold(_g, owner, id, 1);
            return Ok(id);
        }
        Err(EMFILE)
    }

    /// The live description `id`, read whole (`EBADF` if it was freed, or is malformed).
    pub fn desc(&self, id: SlotId) -> Result<Desc, Errno> {
        let live = |s: (u32, u32)| s == (id.gen, LIVE);
        if !live(self.state(id.index)) {
            return Err(EBADF);
        }
        let word = |w| {
            self.sw(id.index, w)
                .map_or(0, |w: &AtomicU64| w.load(Ordering::Relaxed))
        };
        let kind = Kind::of(word(S_FLAGS) >> 32).ok_or(EBADF)?;
        let lens = word(S_LENS);
        let (hlen, plen) = ((lens & 0xffff_ffff) as usize, (lens >> 32) as usize);
        if hlen == 0 || hlen > MAX_HANDLE || plen > MAX_PATH {
            return Err(EBADF);
        }
        let handle =
            FileHandle::new(self.get_bytes(id.index, S_HANDLE, hlen)).map_err(|_| EBADF)?;
        let bits = word(S_OPEN_BITS);
        let d = Desc {
            id,
            kind,
            handle,
            open: (bits & 1 != 0).then(|| OpenId(word(S_OPEN))),
            open_append: bits & 2 != 0,
            ino: word(S_INO),
            path: self.get_bytes(id.index, S_PATH, plen),
            placeholder: word(S_PLACEHOLDER),
        };
        // Freed (and perhaps reused) while it was read: not the description asked for.
        if !live(self.state(id.index)) {
            return Err(EBADF);
        }
        Ok(d)
    }

    /// The live slot `index`, if it is in generation `gen` (`None` for an index out of range,
    /// a free slot or another generation: a stale or forged reference).
    pub fn find(&self, index: u32, gen: u32) -> Option<SlotId> {
        (self.state(index) == (gen, LIVE)).then_some(SlotId { index, gen })
    }

    /// The live description in slot `index`, whatever its generation (`None` if free).
    pub fn live(&self, index: u32) -> Option<SlotId> {
        match self.state(index) {
            (gen, LIVE) => Some(SlotId { index, gen }),
            _ => None,
        }
    }

    fn word_of(&self, id: SlotId, w: usize) -> Result<&'a AtomicU64, Errno> {
        if self.state(id.index) != (id.gen, LIVE) {
            return Err(EBADF);
        }
        self.sw(id.index, w).ok_or(EBADF)
    }

    /// The description's file offset (for a directory, where its listing goes on).
    pub fn offset(&self, id: SlotId) -> Result<&'a AtomicU64, Errno> {
        self.word_of(id, S_OFFSET)
    }

    /// The description's flags.
    pub fn flags(&self, id: SlotId) -> Result<u32, Errno> {
        Ok(self.word_of(id, S_FLAGS)?.load(Ordering::Relaxed) as u32)
    }

    /// Changes the description's flags (its kind stays).
    pub fn set_flags(&self, id: SlotId, flags: u32) -> Result<(), Errno> {
        let w = self.word_of(id, S_FLAGS)?;
        let _ = w.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| {
            Some(v & !0xffff_ffff | u64::from(flags))
        });
        Ok(())
    }

    /// The lock that makes a read or write and its offset update one step, as the kernel's
    /// per-file position lock does.
    pub fn offset_lock(&self, id: SlotId) -> Result<SharedLock<'a>, Errno> {
        Ok(SharedLock::new(self.word_of(id, S_LOCK)?))
    }

    /// Holders of `id` in all.
    pub fn refs(&self, id: SlotId) -> u64 {
        self.word_of(id, S_REFS)
            .map_or(0, |w| w.load(Ordering::Relaxed))
    }

    // --- holdings -------------------------------------------------------------------

    fn hw(&self, bucket: u32) -> (&'a AtomicU64, &'a AtomicU64) {
        let i = HEADER + bucket as usize * HOLD_WORDS;
        (&self.w[i], &self.w[i + 1])
    }

    fn home(&self, owner: Owner, slot: u32) -> u32 {
        (mix(owner, slot) % u64::from(self.holds)) as u32
    }

    /// The bucket of (owner, slot), or the empty bucket where it would go (`None` when the
    /// table is full and it is not there).
    fn probe(&self, owner: Owner, slot: u32) -> (Option<u32>, bool) {
        let mut b = self.home(owner, slot);
        for _ in 0..self.holds {
            let (o, v) = self.hw(b);
            let o = o.load(Ordering::Relaxed);
            if o == 0 {
                return (Some(b), false);
            }
            if o == owner && v.load(Ordering::Relaxed) as u32 == slot {
                return (Some(b), true);
            }
            b = (b + 1) % self.holds;
        }
        (None, false)
    }

    /// Empties bucket `b`, moving later entries of its probe run back (linear probing's
    /// deletion without tombstones).
    fn remove_bucket(&self, mut b: u32) {
        let mut j = b;
        // At most once around: a table that other processes filled with garbage (no empty
        // bucket anywhere) must not hold this one in a loop.
        for _ in 0..self.holds {
            j = (j + 1) % self.holds;
            let (oj, vj) = self.hw(j);
            let o = oj.load(Ordering::Relaxed);
            if o == 0 {
                break;
            }
            let v = vj.load(Ordering::Relaxed);
            let k = self.home(o, v as u32);
            let stays = if b <= j {
                b < k && k <= j
            } else {
                b < k || k <= j
            };
            if stays {
                continue;
            }
            let (ob, vb) = self.hw(b);
            ob.store(o, Ordering::Relaxed);
            vb.store(v, Ordering::Relaxed);
            b = j;
        }
        let (ob, vb) = self.hw(b);
        ob.store(0, Ordering::Relaxed);
        vb.store(0, Ordering::Relaxed);
    }

    fn count(&self, owner: Owner, slot: u32) -> u32 {
        match self.probe(owner, slot) {
            (Some(b), true) => (self.hw(b).1.load(Ordering::Relaxed) >> 32) as u32,
            _ => 0,
        }
    }

    /// Sets `owner`'s count of `slot`, keeping the slot's total; returns the new total.
    fn set_count(&self, owner: Owner, slot: u32, n: u32) -> u64 {
        let old = self.count(owner, slot);
        match self.probe(owner, slot) {
            (Some(b), true) if n == 0 => self.remove_bucket(b),
            (Some(b), _) if n > 0 => {
                let (o, v) = self.hw(b);
                o.store(owner, Ordering::Relaxed);
                v.store(u64::from(slot) | u64::from(n) << 32, Ordering::Relaxed);
            }
            // The holdings are full: this one goes unrecorded but still counts in the
            // total, so the description is never freed early (it leaks instead).
            _ => {}
        }
        let refs = match self.sw(slot, S_REFS) {
            Some(r) => r,
            None => return 0,
        };
        let total = refs.load(Ordering::Relaxed);
        let total = (total + u64::from(n)).saturating_sub(u64::from(old));
        refs.store(total, Ordering::Relaxed);
        total
    }

    /// Frees a slot whose total fell to zero; returns what it described.
    fn free(&self, index: u32) -> Option<Desc> {
        let (gen, state) = self.state(index);
        if state != LIVE {
            return None;
        }
        let d = self.desc(SlotId { index, gen }).ok();
        if let Some(st) = self.sw(index, S_STATE) {
            st.store(u64::from(gen) << 32 | u64::from(FREE), Ordering::Release);
        }
        d
    }

    /// Changes `owner`'s holding of `id` by `delta`; returns the description if that freed
    /// it (its server open is then the caller's to release).
    pub fn hold(&self, _g: &Held<'_>, owner: Owner, id: SlotId, delta: i64) -> Option<Desc> {
        if self.state(id.index) != (id.gen, LIVE) {
            return None;
        }
        let old = i64::from(self.count(owner, id.index));
        let n = (old + delta).clamp(0, i64::from(u32::MAX)) as u32;
        let total = self.set_count(owner, id.index, n);
        if total == 0 {
            return self.free(id.index);
        }
        None
    }

    /// Moves `from`'s holdings of `slots` to `to` (a child made with a token now has a
    /// process id). What `from` does not hold is skipped, so both parent and child may do it.
    pub fn rekey(&self, _g: &Held<'_>, from: Owner, to: Owner, slots: &[SlotId]) {
        for id in slots {
            let n = self.count(from, id.index);
            if n == 0 {
                continue;
            }
            let have = self.count(to, id.index);
            self.set_count(from, id.index, 0);
            self.set_count(to, id.index, have + n);
        }
    }

    /// Makes `owner`'s holdings exactly `counts` (a process that was replaced by `exec`
    /// says what its new image holds); returns the descriptions this freed.
    pub fn set_holdings(&self, _g: &Held<'_>, owner: Owner, counts: &[(SlotId, u32)]) -> Vec<Desc> {
        let mut touched: Vec<u32> = Vec::new();
        let mut freed = Vec::new();
        for (id, n) in counts {
            if self.state(id.index) == (id.gen, LIVE) {
                if self.set_count(owner, id.index, *n) == 0 {
                    freed.extend(self.free(id.index));
                }
                touched.push(id.index);
            }
        }
        for (slot, _) in self.holdings_of(owner) {
            if !touched.contains(&slot) && self.set_count(owner, slot, 0) == 0 {
                freed.extend(self.free(slot));
            }
        }
        freed
    }

    /// Every (slot, count) `owner` holds (a scan of the whole table).
    fn holdings_of(&self, owner: Owner) -> Vec<(u32, u32)> {
        (0..self.holds)
            .filter_map(|b| {
                let (o, v) = self.hw(b);
                (o.load(Ordering::Relaxed) == owner).then(|| {
                    let v = v.load(Ordering::Relaxed);
                    (v as u32, (v >> 32) as u32)
                })
            })
            .collect()
    }

    /// Gives up everything `owner` holds; returns the descriptions this freed.
    pub fn drop_owner(&self, _g: &Held<'_>, owner: Owner) -> Vec<Desc> {
        let mut freed = Vec::new();
        for (slot, _) in self.holdings_of(owner) {
            if self.set_count(owner, slot, 0) == 0 {
                freed.extend(self.free(slot));
            }
        }
        freed
    }

    /// A token to hold descriptions for a child that has no process id yet (between the
    /// snapshot of the parent's descriptors and `fork` returning), stamped with `now_secs`
    /// so that [`Table::gc`] can tell a forgotten one.
    pub fn temp_owner(&self, now_secs: u64) -> Owner {
        let n = self.w[H_TOKENS].fetch_add(1, Ordering::Relaxed) & 0xff_ffff_ffff;
        TEMP | (now_secs & 0x7fff) << 40 | n
    }

    /// Whether `owner` is a token rather than a process id.
    pub fn is_temp(owner: Owner) -> bool {
        owner & TEMP != 0
    }

    /// Whether a collection is due (at most one a second, whoever asks).
    pub fn gc_due(&self, now_secs: u64) -> bool {
        let last = self.w[H_LAST_GC].load(Ordering::Relaxed);
        now_secs > last
            && self.w[H_LAST_GC]
                .compare_exchange(last, now_secs, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
    }

    /// Gives up the holdings of processes that `alive` says are gone and of tokens older
    /// than a minute; returns the descriptions this freed.
    pub fn gc(&self, g: &Held<'_>, now_secs: u64, alive: impl Fn(u64) -> bool) -> Vec<Desc> {
        let mut owners: Vec<Owner> = (0..self.holds)
            .map(|b| self.hw(b).0.load(Ordering::Relaxed))
            .filter(|&o| o != 0)
            .collect();
        owners.sort_unstable();
        owners.dedup();
        let mut freed = Vec::new();
        for o in owners {
            let gone = if Self::is_temp(o) {
                let stamp = (o >> 40) & 0x7fff;
                (now_secs & 0x7fff).wrapping_sub(stamp) & 0x7fff > 60
            } else {
                !alive(o)
            };
            if gone {
                freed.extend(self.drop_owner(g, o));
            }
        }
        freed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn region(slots: u32, holds: u32) -> Vec<AtomicU64> {
        (0..Table::words(slots, holds))
            .map(|_| AtomicU64::new(0))
            .collect()
    }

    fn h(n: u8) -> FileHandle {
        FileHandle::new(vec![n; 40]).unwrap()
    }

    fn new<'b>(handle: &'b FileHandle, path: &'b [u8]) -> NewDesc<'b> {
        NewDesc {
            kind: Kind::File,
            flags: 2,
            handle,
            open: Some(OpenId(42)),
            open_append: false,
            ino: 7,
            path,
            placeholder: 99,
        }
    }

    #[test]
    fn descriptions_round_trip_and_die_with_their_last_holder() {
        let r = region(8, 64);
        let t = Table::attach(&r, 8, 64, [5; 16]).unwrap();
        assert_eq!(t.session(), [5; 16]);
        // A second attach sees the same header and keeps its session.
        let t2 = Table::attach(&r, 8, 64, [6; 16]).unwrap();
        assert_eq!(t2.session(), [5; 16]);
        assert!(Table::attach(&r, 8, 32, [6; 16]).is_err());
        let g = t.lock(1, |_| true);
        let handle = h(3);
        let id = t.alloc(&g, 100, &new(&handle, b"/dfs/x")).unwrap();
        let d = t.desc(id).unwrap();
        assert_eq!(d.handle, handle);
        assert_eq!(d.open, Some(OpenId(42)));
        assert_eq!(d.path, b"/dfs/x");
        assert_eq!((d.kind, d.ino, d.placeholder), (Kind::File, 7, 99));
        t.offset(id).unwrap().store(10, Ordering::Relaxed);
        assert!(t.hold(&g, 100, id, 1).is_none()); // dup
        assert!(t.hold(&g, 200, id, 1).is_none()); // a child
        assert_eq!(t.refs(id), 3);
        assert!(t.hold(&g, 100, id, -2).is_none());
        let freed = t.hold(&g, 200, id, -1).unwrap();
        assert_eq!(freed.open, Some(OpenId(42)));
        assert_eq!(t.desc(id).unwrap_err(), EBADF);
        // The slot comes back in a new generation: the old id stays dead.
        let id2 = t.alloc(&g, 100, &new(&handle, b"/dfs/y")).unwrap();
        assert_ne!(id2, id);
        assert_eq!(t.desc(id).unwrap_err(), EBADF);
        assert_eq!(t.find(id2.index, id2.gen), Some(id2));
        assert_eq!(t.find(id2.index, id2.gen + 1), None);
        assert_eq!(t.find(1000, 1), None);
    }

    #[test]
    fn a_full_table_says_emfile() {
        let r = region(2, 16);
        let t = Table::attach(&r, 2, 16, [0; 16]).unwrap();
        let g = t.lock(1, |_| true);
        let handle = h(1);
        t.alloc(&g, 1, &new(&handle, b"/a")).unwrap();
        t.alloc(&g, 1, &new(&handle, b"/b")).unwrap();
        assert_eq!(t.alloc(&g, 1, &new(&handle, b"/c")).unwrap_err(), EMFILE);
    }

    #[test]
    fn fork_exec_exit_and_the_dead() {
        let r = region(16, 64);
        let t = Table::attach(&r, 16, 64, [0; 16]).unwrap();
        let g = t.lock(1, |_| true);
        let handle = h(1);
        let a = t.alloc(&g, 10, &new(&handle, b"/a")).unwrap();
        let b = t.alloc(&g, 10, &new(&handle, b"/b")).unwrap();
        // fork: the parent holds both for the child under a token, then it becomes pid 11.
        let tok = t.temp_owner(1000);
        assert!(Table::is_temp(tok));
        t.hold(&g, tok, a, 1);
        t.hold(&g, tok, b, 1);
        t.rekey(&g, tok, 11, &[a, b]);
        t.rekey(&g, tok, 11, &[a, b]); // the other side does it too: no effect
        assert_eq!((t.refs(a), t.refs(b)), (2, 2));
        // The child execs; its new image finds only `a` (b was close-on-exec).
        let freed = t.set_holdings(&g, 11, &[(a, 1)]);
        assert!(freed.is_empty());
        assert_eq!((t.refs(a), t.refs(b)), (2, 1));
        // The parent exits: b goes.
        let freed = t.drop_owner(&g, 10);
        assert_eq!(freed.len(), 1);
        assert_eq!(freed[0].id, b);
        // The child dies without a word: the collection frees a.
        let freed = t.gc(&g, 1001, |pid| pid != 11);
        assert_eq!(freed.len(), 1);
        assert_eq!(freed[0].id, a);
        // A forgotten token is collected after a minute.
        let c = t.alloc(&g, 12, &new(&handle, b"/c")).unwrap();
        let tok = t.temp_owner(2000);
        t.hold(&g, tok, c, 1);
        t.drop_owner(&g, 12);
        assert!(t.gc(&g, 2010, |_| true).is_empty());
        assert_eq!(t.gc(&g, 2100, |_| true).len(), 1);
    }

    #[test]
    fn holdings_survive_many_owners_and_deletions() {
        let r = region(64, 256);
        let t = Table::attach(&r, 64, 256, [0; 16]).unwrap();
        let g = t.lock(1, |_| true);
        let handle = h(1);
        let ids: Vec<SlotId> = (0..40)
            .map(|i| t.alloc(&g, 1000 + i, &new(&handle, b"/x")).unwrap())
            .collect();
        for (i, id) in ids.iter().enumerate() {
            for o in 0..4u64 {
                t.hold(&g, o + 1, *id, (i % 3) as i64 + 1);
            }
        }
        for (i, id) in ids.iter().enumerate() {
            assert_eq!(t.refs(*id), 1 + 4 * ((i % 3) as u64 + 1));
        }
        for o in 1..=4u64 {
            t.drop_owner(&g, o);
        }
        for (i, id) in ids.iter().enumerate() {
            assert_eq!(t.refs(*id), 1);
            assert_eq!(t.count(1000 + i as u64, id.index), 1);
        }
    }

    #[test]
    fn malformed_slots_read_as_closed() {
        let r = region(4, 16);
        let t = Table::attach(&r, 4, 16, [0; 16]).unwrap();
        let g = t.lock(1, |_| true);
        let handle = h(1);
        let id = t.alloc(&g, 1, &new(&handle, b"/x")).unwrap();
        let base = t.slot_base(id.index).unwrap();
        // Another process scribbles a handle length past the limit, then a bad kind.
        r[base + S_LENS].store(u64::MAX, Ordering::Relaxed);
        assert_eq!(t.desc(id).unwrap_err(), EBADF);
        r[base + S_LENS].store(40, Ordering::Relaxed);
        r[base + S_FLAGS].store(9 << 32, Ordering::Relaxed);
        assert_eq!(t.desc(id).unwrap_err(), EBADF);
    }
    #[test]
    fn a_table_full_of_garbage_does_not_hang_or_panic() {
        let r = region(4, 8);
        let t = Table::attach(&r, 4, 8, [1; 16]).unwrap();
        let handle = h(1);
        let g = t.lock(1, |_| true);
        let id = t.alloc(&g, 100, &new(&handle, b"/dfs/x")).unwrap();
        // Another process scribbles every holding bucket and every slot word.
        for w in &r[HEADER..] {
            w.store(0xdead_beef_dead_beef, Ordering::Relaxed);
        }
        assert!(t.hold(&g, 100, id, -1).is_none());
        assert!(t.desc(id).is_err());
        assert!(t.drop_owner(&g, 100).is_empty());
        assert!(t.gc(&g, 1_000_000, |_| false).len() <= 4);
        let _ = t.alloc(&g, 100, &new(&handle, b"/dfs/y"));
    }
}
