//! Open directories: the entries fetched from the server ahead of the kernel's requests, and
//! when the kernel may keep its own cached listing of a directory.
//!
//! The kernel reads a directory in requests of its reader's buffer size (32 KiB for glibc's
//! `readdir`: some 800 names, or some 200 entries with attributes), each starting at the
//! cookie of the last entry it took. An open directory keeps the last page it fetched, so a
//! request is served from it while it follows on, and the server is asked again only past
//! its end, after a seek outside it, or at the start (`rewinddir` must see the directory as
//! it is now).
//!
//! Pages come in two kinds. A plain `READDIR` wants names, kinds and inode numbers only, and
//! gets them from pages without attributes (no `stat` and no handle per entry on the server),
//! large ones. A `READDIRPLUS` makes the kernel hold the entries it takes, with their
//! attributes, so it gets entries with handles and attributes, in pages about its size, and
//! only from a page young enough: what the kernel caches expires at the entry timeout counted
//! from when the server took the attributes, not from when the kernel got them.
//!
//! A directory of more than one page is listed into the kernel's own cache
//! (`FOPEN_CACHE_DIR`) from its second open on, and an open keeps that cache
//! (`FOPEN_KEEP_CACHE`) if the directory is as it was (see [`Stamp`]). Such an open asks the
//! server for the directory's stamp as its caller, so the kernel's cache serves only those
//! the server lets list the directory. A listing vouches for the kernel's cache only when it
//! read the directory from its start to its end, the directory did not change meanwhile, and
//! no other open handed the kernel entries of another moment. Other directories cost an open
//! nothing (an open to `fsync` a directory stays free), and are not cached by the kernel:
//! they list in one page with attributes, which spares `ls -l` a lookup per entry.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use dfs_proto::attr::{Attr, Timestamp};
use dfs_proto::msg::{DirEntry, DirPage};
use dfs_proto::Errno;
use fuser::FopenFlags;

/// Entries asked of the server per page for a plain listing (its meta limit may cut a page
/// of long names shorter).
pub const NAMES_PAGE: u32 = 4096;
/// Entries asked per page with attributes: about what one 32 KiB `READDIRPLUS` takes. A
/// directory that fits in one such page is not cached by the kernel.
pub const PLUS_PAGE: u32 = 256;
/// Large directories whose records are kept; past it they are all dropped (each is then
/// listed as a small one once).
const MAX_RECORDS: usize = 4096;
/// Lookups in a large directory between two opens that say its readers look at the entries
/// they list, so it is listed with attributes again instead of from the kernel's cache.
const LOOKUPS_FOR_ATTRS: u32 = 64;

/// What a request needs of the entries it is answered with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Want {
    /// Names, kinds, inode numbers (`READDIR`).
    Names,
    /// Handles and attributes too, at most this old (`READDIRPLUS`).
    Attrs(Duration),
}

/// A directory's state as far as its entries go: a change of entries changes its change time
/// and modification time (which nobody can set back to what they were: the change time is
/// set by the kernel only), and on the server's kernel a change after anyone looked gets a
/// time of its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stamp {
    ino: u64,
    ctime: Timestamp,
    mtime: Timestamp,
    size: u64,
}

impl Stamp {
    /// The stamp of a directory with attributes `a`.
    pub fn of(a: &Attr) -> Stamp {
        Stamp {
            ino: a.ino,
            ctime: a.ctime,
            mtime: a.mtime,
            size: a.size,
        }
    }
}

/// The page an open directory holds.
#[derive(Debug, Default)]
pub struct Stream {
    /// The cookie its first entry follows.
    start: u64,
    entries: Vec<DirEntry>,
    /// Whether the entries carry handles and attributes.
    attrs: bool,
    /// When the server read them (`None`: nothing fetched yet).
    fetched: Option<Instant>,
    /// The directory's stamp when they were read.
    stamp: Option<Stamp>,
    /// Whether the directory ends after them.
    eof: bool,
    /// The index of the entry after the last one handed out: where a request that follows
    /// on starts.
    next: usize,
    /// The open lets the kernel cache the listing (`FOPEN_CACHE_DIR`).
    caching: bool,
    /// The kernel asked for attributes past the start of the listing: its reader looks at
    /// the entries as it lists them (`ls -l`).
    attrs_past_start: bool,
}

impl Stream {
    /// The index of the entry that follows position `offset`, if the page holds it.
    fn find(&self, offset: u64) -> Option<usize> {
        self.fetched?;
        if offset == self.start {
            return Some(0);
        }
        // A request that follows on from the last reply (the usual case); two entries with one
        // cookie (a hash collision) are then still told apart.
        if let Some(prev) = self.next.checked_sub(1) {
            if self.entries.get(prev).is_some_and(|e| e.cookie == offset) {
                return Some(self.next);
            }
        }
        self.entries
            .iter()
            .position(|e| e.cookie == offset)
            .map(|i| i + 1)
    }

    fn age(&self) -> Duration {
        self.fetched.map_or(Duration::MAX, |t| t.elapsed())
    }

    fn serves(&self, want: Want) -> bool {
        match want {
            Want::Names => true,
            Want::Attrs(max_age) => self.attrs && self.age() < max_age,
        }
    }

    fn fill(&mut self, start: u64, page: DirPage, stamp: Stamp, attrs: bool, at: Instant) {
        self.start = start;
        // A page with no entries ends the directory whatever it says, so that a server that
        // keeps answering empty pages cannot keep a request going.
        self.eof = page.eof || page.entries.is_empty();
        self.entries = page.entries;
        self.attrs = attrs;
        self.fetched = Some(at);
        self.stamp = Some(stamp);
        self.next = 0;
    }

    /// Whether everything was handed out and the directory ends there.
    fn at_end(&self) -> bool {
        self.eof && self.next >= self.entries.len()
    }

    /// Answers one request for the entries after position `offset` (0: the start). `fetch`
    /// reads a page from a cookie (with attributes or not); `each` is handed entries in order,
    /// with the age of their page, until it says the reply is full (that entry is not taken).
    /// Returns how many entries `each` took. A failure after some entries were taken ends the
    /// reply early instead (the kernel asks again from there).
    pub fn serve(
        &mut self,
        offset: u64,
        want: Want,
        mut fetch: impl FnMut(u64, bool) -> Result<(DirPage, Attr), Errno>,
        mut each: impl FnMut(&DirEntry, Duration) -> bool,
    ) -> Result<usize, Errno> {
        let attrs = matches!(want, Want::Attrs(_));
        let mut taken = 0;
        // The start is always read anew: `rewinddir` sees the directory as it is now.
        let found = (offset != 0).then(|| self.find(offset)).flatten();
        let mut at = match found {
            Some(i) if self.serves(want) => i,
            _ => {
                let t = Instant::now();
                let (page, dir) = fetch(offset, attrs)?;
                self.fill(offset, page, Stamp::of(&dir), attrs, t);
                0
            }
        };
        loop {
            let age = self.age();
            while let Some(e) = self.entries.get(at) {
                if each(e, age) {
                    self.next = at;
                    return Ok(taken);
                }
                at += 1;
                taken += 1;
            }
            self.next = at;
            if self.eof {
                return Ok(taken);
            }
            let Some(cookie) = self.entries.last().map(|e| e.cookie) else {
                return Ok(taken);
            };
            let t = Instant::now();
            match fetch(cookie, attrs) {
                Ok((page, dir)) => self.fill(cookie, page, Stamp::of(&dir), attrs, t),
                Err(_) if taken > 0 => return Ok(taken),
                Err(e) => return Err(e),
            }
            at = 0;
        }
    }
}

/// What this client knows of the kernel's cached listing of a directory of more than one
/// page.
#[derive(Debug, Default)]
struct Record {
    /// The directory's stamp when a listing that vouches for the kernel's cache ended.
    complete: Option<Stamp>,
    /// The listing under way that may vouch for it: the open reading from the start, and
    /// the directory's stamp then.
    filling: Option<(u64, Stamp)>,
    /// Its readers look at the entries they list: the kernel asked for attributes past the
    /// start of the last listing that reached the end (the kernel's readdirplus-auto sign of
    /// lookups following a listing), or many names were looked up in it since the last open.
    /// Such a directory is not cached by the kernel, whose cache holds names only: each entry
    /// would cost a lookup.
    attrs_wanted: bool,
    /// Names looked up in it since its last open.
    lookups: u32,
}

impl Record {
    /// Open `fh` read a page at `cookie` of the directory as it was at `stamp`; `caching`:
    /// the open lets the kernel cache what it reads.
    fn fetched(&mut self, fh: u64, caching: bool, cookie: u64, stamp: Stamp) {
        if self.complete != Some(stamp) {
            self.complete = None;
        }
        // Only what an open that lets the kernel cache reads can reach the kernel's cache.
        if caching {
            if cookie == 0 {
                self.filling = Some((fh, stamp));
            } else {
                self.mixed(stamp);
            }
        }
    }

    /// The kernel was handed entries of the directory as it was at `stamp`: a listing under
    /// way at another moment no longer vouches for the kernel's cache.
    fn mixed(&mut self, stamp: Stamp) {
        if self.filling.is_some_and(|(_, s)| s != stamp) {
            self.filling = None;
        }
    }
}

/// A page fetched for a request: where, the directory's stamp, whether it ended there.
type Fetched = (u64, Stamp, bool);

/// The open directories, by the handle the kernel was given for each, and the records of the
/// large directories, by node.
#[derive(Debug, Default)]
pub struct Dirs {
    open: Mutex<HashMap<u64, Arc<Mutex<Stream>>>>,
    records: Mutex<HashMap<u64, Record>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Dirs {
    /// Whether an open of node `dir` lets the kernel cache its listing: a directory of more
    /// than one page whose readers want names only. Such an open asks the server for the
    /// directory's stamp (see [`Dirs::opened`]); others cost nothing ([`Dirs::opened_small`]).
    pub fn cached_open(&self, dir: u64) -> bool {
        let mut records = lock(&self.records);
        let Some(r) = records.get_mut(&dir) else {
            return false;
        };
        if r.lookups >= LOOKUPS_FOR_ATTRS {
            r.attrs_wanted = true;
        }
        r.lookups = 0;
        !r.attrs_wanted
    }

    /// A name in node `dir` was looked up.
    pub fn looked_up_in(&self, dir: u64) {
        if let Some(r) = lock(&self.records).get_mut(&dir) {
            r.lookups = r.lookups.saturating_add(1);
        }
    }

    /// The large directory node `dir` was opened as `fh`, and the server said its stamp is
    /// `stamp`: returns the flags of the open (the kernel caches the listing, and keeps what
    /// it has if that is the directory as it is).
    pub fn opened(&self, dir: u64, fh: u64, stamp: Stamp) -> FopenFlags {
        let keep = {
            let mut records = lock(&self.records);
            let r = records.entry(dir).or_default();
            let keep = r.complete == Some(stamp);
            if !keep {
                r.complete = None;
            }
            keep
        };
        let stream = Stream {
            caching: true,
            ..Stream::default()
        };
        lock(&self.open).insert(fh, Arc::new(Mutex::new(stream)));
        if keep {
            FopenFlags::FOPEN_CACHE_DIR | FopenFlags::FOPEN_KEEP_CACHE
        } else {
            FopenFlags::FOPEN_CACHE_DIR
        }
    }

    /// Any other directory was opened as `fh` (not cached by the kernel).
    pub fn opened_small(&self, fh: u64) -> FopenFlags {
        lock(&self.open).insert(fh, Arc::default());
        FopenFlags::empty()
    }

    /// Drops the open directory `fh`.
    pub fn release(&self, fh: u64) {
        lock(&self.open).remove(&fh);
    }

    /// Answers a request of open `fh` of node `dir` (see [`Stream::serve`]); an open the
    /// kernel never made here gets a page of its own for this request.
    pub fn serve(
        &self,
        dir: u64,
        fh: u64,
        offset: u64,
        want: Want,
        mut fetch: impl FnMut(u64, bool) -> Result<(DirPage, Attr), Errno>,
        each: impl FnMut(&DirEntry, Duration) -> bool,
    ) -> Result<usize, Errno> {
        let stream = lock(&self.open).get(&fh).cloned().unwrap_or_default();
        let mut stream = lock(&stream);
        if offset == 0 {
            stream.attrs_past_start = false;
        } else if matches!(want, Want::Attrs(_)) {
            stream.attrs_past_start = true;
        }
        let mut fetched: Vec<Fetched> = Vec::new();
        let r = stream.serve(
            offset,
            want,
            |cookie, attrs| {
                let (page, a) = fetch(cookie, attrs)?;
                let eof = page.eof || page.entries.is_empty();
                fetched.push((cookie, Stamp::of(&a), eof));
                Ok((page, a))
            },
            each,
        );
        let mut records = lock(&self.records);
        for (cookie, stamp, eof) in fetched {
            if cookie == 0 && eof {
                // A directory of one page (again).
                records.remove(&dir);
                continue;
            }
            if records.len() >= MAX_RECORDS && !records.contains_key(&dir) {
                records.clear();
            }
            let rec = records.entry(dir).or_default();
            rec.fetched(fh, stream.caching, cookie, stamp);
        }
        let (Some(rec), Some(s)) = (records.get_mut(&dir), stream.stamp) else {
            return r;
        };
        // The kernel gets an empty reply: the end of the listing.
        let end = r == Ok(0) && stream.at_end();
        if end {
            rec.attrs_wanted = stream.attrs_past_start;
        }
        if stream.caching {
            rec.mixed(s);
            if end && rec.filling == Some((fh, s)) {
                rec.complete = Some(s);
                rec.filling = None;
            }
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dfs_proto::attr::FileKind;
    use std::cell::{Cell, RefCell};

    /// A directory of `n` entries named by number, whose cookies are 10 apart (a fake of the
    /// server's paging), changed when `version` changes.
    struct Dir {
        names: RefCell<Vec<(u64, String)>>,
        fetches: RefCell<Vec<(u64, bool)>>,
        page: usize,
        version: Cell<i64>,
    }

    impl Dir {
        fn new(n: u64, page: usize) -> Dir {
            Dir {
                names: RefCell::new((1..=n).map(|i| (i * 10, format!("e{i}"))).collect()),
                fetches: RefCell::new(Vec::new()),
                page,
                version: Cell::new(1),
            }
        }

        fn attr(&self) -> Attr {
            let t = Timestamp {
                secs: self.version.get(),
                nanos: 0,
            };
            Attr {
                ino: 1,
                ctime: t,
                mtime: t,
                mode: 0o40755,
                ..Attr::default()
            }
        }

        fn fetch(&self, cookie: u64, attrs: bool) -> Result<(DirPage, Attr), Errno> {
            self.fetches.borrow_mut().push((cookie, attrs));
            let names = self.names.borrow();
            let rest: Vec<_> = names.iter().filter(|(c, _)| *c > cookie).collect();
            let entries = rest
                .iter()
                .take(self.page)
                .map(|(c, n)| DirEntry {
                    name: n.clone().into_bytes(),
                    kind: FileKind::Regular,
                    ino: *c,
                    cookie: *c,
                    entry: None,
                })
                .collect();
            let page = DirPage {
                entries,
                eof: rest.len() <= self.page,
            };
            Ok((page, self.attr()))
        }
    }

    /// Reads the whole directory through `fh` in requests of `per` entries, as the kernel
    /// does.
    fn list(dirs: &Dirs, fh: u64, d: &Dir, per: usize, want: Want) -> Vec<String> {
        let mut out = Vec::new();
        let mut offset = 0;
        loop {
            let mut got = Vec::new();
            dirs.serve(
                1,
                fh,
                offset,
                want,
                |c, a| d.fetch(c, a),
                |e, _| {
                    if got.len() == per {
                        return true;
                    }
                    got.push((e.cookie, String::from_utf8_lossy(&e.name).into_owned()));
                    false
                },
            )
            .unwrap();
            let Some(&(last, _)) = got.last() else {
                return out;
            };
            offset = last;
            out.extend(got.into_iter().map(|(_, n)| n));
        }
    }

    /// Opens node 1 as `fh` as the FUSE front end does.
    fn open(dirs: &Dirs, fh: u64, d: &Dir) -> FopenFlags {
        if dirs.cached_open(1) {
            dirs.opened(1, fh, Stamp::of(&d.attr()))
        } else {
            dirs.opened_small(fh)
        }
    }

    #[test]
    fn a_listing_is_served_from_few_pages() {
        let d = Dir::new(1000, 300);
        let dirs = Dirs::default();
        open(&dirs, 1, &d);
        let names = list(&dirs, 1, &d, 70, Want::Names);
        assert_eq!(names.len(), 1000);
        assert_eq!(names[999], "e1000");
        // 4 pages (300 each), not one per request.
        assert_eq!(d.fetches.borrow().len(), 4);
        // Rewinding reads anew.
        list(&dirs, 1, &d, 70, Want::Names);
        assert_eq!(d.fetches.borrow().len(), 8);
        assert_eq!(d.fetches.borrow()[4], (0, false));
    }

    #[test]
    fn a_seek_inside_the_page_is_served_and_outside_it_fetched() {
        let d = Dir::new(100, 50);
        let mut s = Stream::default();
        let first = |s: &mut Stream, offset| {
            let mut name = None;
            s.serve(
                offset,
                Want::Names,
                |c, a| d.fetch(c, a),
                |e, _| {
                    if name.is_some() {
                        return true;
                    }
                    name = Some(String::from_utf8_lossy(&e.name).into_owned());
                    false
                },
            )
            .unwrap();
            name
        };
        assert_eq!(first(&mut s, 0).as_deref(), Some("e1"));
        assert_eq!(first(&mut s, 200).as_deref(), Some("e21"));
        assert_eq!(first(&mut s, 100).as_deref(), Some("e11"));
        assert_eq!(d.fetches.borrow().len(), 1);
        // Past the page: fetched from that cookie.
        assert_eq!(first(&mut s, 700).as_deref(), Some("e71"));
        assert_eq!(d.fetches.borrow()[1], (700, false));
        // A cookie the directory never gave: whatever the server says follows it.
        assert_eq!(first(&mut s, 705).as_deref(), Some("e71"));
        // The end.
        assert_eq!(first(&mut s, 1000), None);
    }

    #[test]
    fn attributes_come_from_pages_with_attributes_young_enough() {
        let d = Dir::new(100, 1000);
        let mut s = Stream::default();
        let young = Want::Attrs(Duration::from_secs(60));
        let fetch = |c, a| d.fetch(c, a);
        // A plain page does not serve a request for attributes.
        s.serve(0, Want::Names, fetch, |_, _| false).unwrap();
        assert_eq!(d.fetches.borrow().as_slice(), &[(0, false)]);
        s.serve(30, young, fetch, |_, _| false).unwrap();
        assert_eq!(d.fetches.borrow()[1], (30, true));
        // A page with attributes serves both kinds.
        s.serve(50, young, fetch, |_, _| false).unwrap();
        s.serve(50, Want::Names, fetch, |_, _| false).unwrap();
        assert_eq!(d.fetches.borrow().len(), 2);
        // Too old: fetched again.
        let old = Want::Attrs(Duration::ZERO);
        s.serve(50, old, fetch, |_, _| false).unwrap();
        assert_eq!(d.fetches.borrow()[2], (50, true));
    }

    #[test]
    fn a_failure_after_some_entries_ends_the_reply_early() {
        let d = Dir::new(100, 10);
        let mut s = Stream::default();
        let mut calls = 0;
        let r = s.serve(
            0,
            Want::Names,
            |c, a| {
                calls += 1;
                if calls > 1 {
                    Err(Errno::EIO)
                } else {
                    d.fetch(c, a)
                }
            },
            |_, _| false,
        );
        assert_eq!(r, Ok(10));
        let r = s.serve(100, Want::Names, |_, _| Err(Errno::EIO), |_, _| false);
        assert_eq!(r, Err(Errno::EIO));
    }

    #[test]
    fn an_empty_page_ends_the_directory() {
        let d = Dir::new(0, 10);
        let mut s = Stream::default();
        let mut calls = 0;
        let r = s.serve(
            0,
            Want::Names,
            |_, _| {
                calls += 1;
                let page = DirPage {
                    entries: Vec::new(),
                    eof: false,
                };
                Ok((page, d.attr()))
            },
            |_, _| false,
        );
        assert_eq!(r, Ok(0));
        assert_eq!(calls, 1);
    }

    #[test]
    fn small_directories_cost_an_open_nothing_and_are_not_cached() {
        let d = Dir::new(100, 1000);
        let dirs = Dirs::default();
        assert_eq!(open(&dirs, 7, &d), FopenFlags::empty());
        assert_eq!(list(&dirs, 7, &d, 30, Want::Names).len(), 100);
        assert_eq!(d.fetches.borrow().len(), 1);
        dirs.release(7);
        assert!(!dirs.cached_open(1));
        assert_eq!(open(&dirs, 8, &d), FopenFlags::empty());
    }

    #[test]
    fn the_kernel_keeps_a_listing_only_while_the_directory_is_as_it_was() {
        let d = Dir::new(1000, 300);
        let dirs = Dirs::default();
        let fill = FopenFlags::FOPEN_CACHE_DIR;
        let keep = FopenFlags::FOPEN_CACHE_DIR | FopenFlags::FOPEN_KEEP_CACHE;
        // Listed once, it is known to be large...
        assert_eq!(open(&dirs, 1, &d), FopenFlags::empty());
        assert_eq!(list(&dirs, 1, &d, 70, Want::Names).len(), 1000);
        assert!(dirs.cached_open(1));
        // ... so the next open lists it into the kernel's cache, which the opens after keep
        // while nothing changed.
        assert_eq!(open(&dirs, 2, &d), fill);
        assert_eq!(list(&dirs, 2, &d, 70, Want::Names).len(), 1000);
        assert_eq!(open(&dirs, 3, &d), keep);
        assert_eq!(open(&dirs, 4, &d), keep);
        // A change: the cache is dropped and filled again.
        d.version.set(2);
        assert_eq!(open(&dirs, 5, &d), fill);
        assert_eq!(list(&dirs, 5, &d, 70, Want::Names).len(), 1000);
        assert_eq!(open(&dirs, 6, &d), keep);
        // A listing the directory changed under does not vouch for the cache.
        d.version.set(3);
        assert_eq!(open(&dirs, 7, &d), fill);
        let offset = request(&dirs, 7, &d, 0, 400);
        d.version.set(4);
        list_rest(&dirs, 7, &d, offset);
        assert_eq!(open(&dirs, 8, &d), fill);
        // Nor one while another open handed the kernel entries of another moment.
        for interleaved in [true, false] {
            d.version.set(d.version.get() + 1);
            assert_eq!(open(&dirs, 10, &d), fill);
            let other = request(&dirs, 10, &d, 0, 10);
            d.version.set(d.version.get() + 1);
            assert_eq!(open(&dirs, 11, &d), fill);
            let offset = request(&dirs, 11, &d, 0, 100);
            if interleaved {
                request(&dirs, 10, &d, other, 10);
            }
            list_rest(&dirs, 11, &d, offset);
            let expect = if interleaved { fill } else { keep };
            assert_eq!(open(&dirs, 12, &d), expect);
        }
        // Shrunk to one page, it is small again.
        d.names.borrow_mut().truncate(10);
        d.version.set(d.version.get() + 1);
        assert_eq!(open(&dirs, 13, &d), fill);
        assert_eq!(list(&dirs, 13, &d, 70, Want::Names).len(), 10);
        assert!(!dirs.cached_open(1));
    }

    #[test]
    fn a_directory_whose_readers_look_at_its_entries_is_listed_with_attributes() {
        let d = Dir::new(1000, 300);
        let dirs = Dirs::default();
        let fill = FopenFlags::FOPEN_CACHE_DIR;
        let plus = Want::Attrs(Duration::from_secs(60));
        assert_eq!(open(&dirs, 1, &d), FopenFlags::empty());
        list(&dirs, 1, &d, 70, Want::Names);
        assert_eq!(open(&dirs, 2, &d), fill);
        // The kernel asks for attributes past the start (`ls -l`): not cached any more.
        assert_eq!(list(&dirs, 2, &d, 70, plus).len(), 1000);
        assert_eq!(open(&dirs, 3, &d), FopenFlags::empty());
        assert_eq!(open(&dirs, 3, &d), FopenFlags::empty());
        // A reader of names only again: cached again (the kernel kept what open 2 listed).
        assert_eq!(list(&dirs, 3, &d, 70, Want::Names).len(), 1000);
        let keep = FopenFlags::FOPEN_CACHE_DIR | FopenFlags::FOPEN_KEEP_CACHE;
        assert_eq!(open(&dirs, 5, &d), keep);
        // Listed from the kernel's cache, it is seen only by the lookups that follow.
        for _ in 0..LOOKUPS_FOR_ATTRS - 1 {
            dirs.looked_up_in(1);
        }
        assert_eq!(open(&dirs, 6, &d), keep);
        for _ in 0..LOOKUPS_FOR_ATTRS {
            dirs.looked_up_in(1);
        }
        assert_eq!(open(&dirs, 7, &d), FopenFlags::empty());
    }

    /// One request through `fh` from `offset` that takes `n` entries; returns the last one's
    /// cookie.
    fn request(dirs: &Dirs, fh: u64, d: &Dir, offset: u64, n: usize) -> u64 {
        let mut last = offset;
        let mut got = 0;
        let fetch = |c, a| d.fetch(c, a);
        dirs.serve(1, fh, offset, Want::Names, fetch, |e, _| {
            if got == n {
                return true;
            }
            got += 1;
            last = e.cookie;
            false
        })
        .unwrap();
        last
    }

    /// Reads on from `offset` through `fh` to the end.
    fn list_rest(dirs: &Dirs, fh: u64, d: &Dir, mut offset: u64) {
        loop {
            let mut last = None;
            dirs.serve(
                1,
                fh,
                offset,
                Want::Names,
                |c, a| d.fetch(c, a),
                |e, _| {
                    last = Some(e.cookie);
                    false
                },
            )
            .unwrap();
            match last {
                Some(l) => offset = l,
                None => return,
            }
        }
    }
}
