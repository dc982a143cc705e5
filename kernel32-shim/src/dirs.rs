//! Directory streams: a listing read from the server a page at a time.
//!
//! The server lists a directory from a *cookie* (0 at the start, then the cookie of the last
//! entry seen), so a stream keeps the page it fetched and the cookie after the last entry it
//! handed out: that is its position (`telldir`, the directory descriptor's offset), and where
//! the next page starts. An entry taken but not used (a `getdents64` buffer that is full) is
//! put back.

use std::collections::VecDeque;

use dfs_proto::msg::{DirEntry, DirPage};
use dfs_proto::Errno;

/// Entries asked for per page: enough to amortise a round trip, small enough for a
/// program that reads only the first few.
pub const PAGE: u32 = 512;

/// A directory being read.
#[derive(Debug, Default)]
pub struct DirStream {
    page: VecDeque<DirEntry>,
    /// The cookie after the last entry handed out.
    pos: u64,
    /// The cookie the next page starts from.
    fetch_from: u64,
    /// The server said the directory ends after `page`.
    eof: bool,
}

impl DirStream {
    /// A stream from `cookie` (0: the start).
    pub fn at(cookie: u64) -> DirStream {
        DirStream {
            page: VecDeque::new(),
            pos: cookie,
            fetch_from: cookie,
            eof: false,
        }
    }

    /// The position: the cookie after the last entry handed out.
    pub fn position(&self) -> u64 {
        self.pos
    }

    /// Goes to `cookie` (`seekdir`, `rewinddir`, `lseek` on the descriptor).
    pub fn seek(&mut self, cookie: u64) {
        *self = DirStream::at(cookie);
    }

    /// The next entry, fetching a page from `fetch(cookie)` when needed; `None` at the end.
    pub fn next(
        &mut self,
        mut fetch: impl FnMut(u64) -> Result<DirPage, Errno>,
    ) -> Result<Option<DirEntry>, Errno> {
        while self.page.is_empty() {
            if self.eof {
                return Ok(None);
            }
            let page = fetch(self.fetch_from)?;
            self.eof = page.eof;
            match page.entries.last() {
                Some(last) => self.fetch_from = last.cookie,
                // A page with nothing that is not the end would loop for ever.
                None if !page.eof => return Err(Errno::EIO),
                None => {}
            }
            self.page = page.entries.into();
        }
        let e = self.page.pop_front();
        if let Some(e) = &e {
            self.pos = e.cookie;
        }
        Ok(e)
    }

    /// Puts back the entry just taken, which followed position `before`.
    pub fn unread(&mut self, e: DirEntry, before: u64) {
        self.page.push_front(e);
        self.pos = before;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dfs_proto::attr::FileKind;

    fn listing(n: u64) -> impl FnMut(u64) -> Result<DirPage, Errno> {
        move |from| {
            let entries: Vec<DirEntry> = (from + 1..=n)
                .take(3)
                .map(|i| DirEntry {
                    name: format!("e{i}").into_bytes(),
                    kind: FileKind::Regular,
                    ino: i,
                    cookie: i,
                    entry: None,
                })
                .collect();
            let eof = entries.last().is_none_or(|e| e.cookie == n);
            Ok(DirPage { entries, eof })
        }
    }

    #[test]
    fn pages_positions_and_seeks() {
        let mut s = DirStream::at(0);
        let mut f = listing(7);
        let mut names = Vec::new();
        while let Some(e) = s.next(&mut f).unwrap() {
            names.push(e.ino);
            if e.ino == 4 {
                assert_eq!(s.position(), 4);
            }
        }
        assert_eq!(names, (1..=7).collect::<Vec<_>>());
        s.seek(5);
        assert_eq!(s.next(&mut f).unwrap().unwrap().ino, 6);
        let before = s.position();
        let e = s.next(&mut f).unwrap().unwrap();
        s.unread(e, before);
        assert_eq!(s.position(), 6);
        assert_eq!(s.next(&mut f).unwrap().unwrap().ino, 7);
        assert!(s.next(&mut f).unwrap().is_none());
        let mut empty = DirStream::at(0);
        assert!(empty.next(listing(0)).unwrap().is_none());
    }
}
