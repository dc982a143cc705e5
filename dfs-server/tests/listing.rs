//! `ListDir`: directory pages with and without attributes, paging by count and by size, and
//! the directory's own attributes that come with each page.

mod common;

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;

use common::*;
use dfs_proto::attr::{Attr, FileKind};
use dfs_proto::handle::FileHandle;
use dfs_proto::msg::{Body, DirPage, Op, MAX_LIST_ENTRIES};

fn page(c: &mut Client, dir: &FileHandle, cookie: u64, max: u32, attrs: bool) -> (DirPage, Attr) {
    match c
        .op(Op::ListDir {
            dir: dir.clone(),
            cookie,
            max_entries: max,
            attrs,
        })
        .unwrap()
    {
        Body::Listing { page, dir } => (page, dir),
        other => panic!("not a listing: {other:?}"),
    }
}

/// Every entry but `.` and `..`, by name: (kind, inode number, whether it came with
/// attributes), read in pages of `max`; also how many pages it took.
fn all(
    c: &mut Client,
    dir: &FileHandle,
    max: u32,
    attrs: bool,
) -> (BTreeMap<String, (FileKind, u64, bool)>, usize) {
    let mut out = BTreeMap::new();
    let mut cookie = 0;
    let mut pages = 0;
    loop {
        let (p, _) = page(c, dir, cookie, max, attrs);
        pages += 1;
        assert!(p.entries.len() <= max as usize);
        for e in &p.entries {
            let n = String::from_utf8(e.name.clone()).unwrap();
            if n != "." && n != ".." {
                let had = out.insert(n.clone(), (e.kind, e.ino, e.entry.is_some()));
                assert!(had.is_none(), "{n} listed twice");
            }
            cookie = e.cookie;
        }
        if p.eof {
            return (out, pages);
        }
        assert!(!p.entries.is_empty());
    }
}

#[test]
fn pages_without_attributes_name_every_entry_once_with_its_kind() {
    let h = Harness::new();
    let d = h.export.join("d");
    std::fs::create_dir(&d).unwrap();
    for i in 0..500 {
        std::fs::write(d.join(format!("f{i:03}")), b"x").unwrap();
    }
    std::fs::create_dir(d.join("sub")).unwrap();
    std::os::unix::fs::symlink("f001", d.join("sym")).unwrap();
    let mut c = h.client();
    let dh = c.lookup(&c.root(), "d").unwrap().handle;
    for (max, attrs) in [
        (7, false),
        (4096, false),
        (7, true),
        (MAX_LIST_ENTRIES, true),
    ] {
        let (got, pages) = all(&mut c, &dh, max, attrs);
        assert_eq!(got.len(), 502, "pages of {max}");
        assert_eq!(pages, if max == 7 { 504_usize.div_ceil(7) } else { 1 });
        for (n, (kind, ino, with)) in &got {
            let m = std::fs::symlink_metadata(d.join(n)).unwrap();
            let want = if m.is_dir() {
                FileKind::Directory
            } else if m.file_type().is_symlink() {
                FileKind::Symlink
            } else {
                FileKind::Regular
            };
            assert_eq!((*kind, *ino, *with), (want, m.ino(), attrs), "{n}");
        }
    }
    // With attributes, an entry's handle and attributes are the lookup's.
    let (p, _) = page(&mut c, &dh, 0, 1000, true);
    let e = p.entries.iter().find(|e| e.name == b"sym").unwrap();
    let x = e.entry.as_ref().unwrap();
    let l = c.lookup(&dh, "sym").unwrap();
    assert_eq!((&x.handle, x.attr), (&l.handle, l.attr));
}

#[test]
fn pages_of_long_names_stop_short_of_the_size_limit() {
    let h = Harness::new();
    let d = h.export.join("long");
    std::fs::create_dir(&d).unwrap();
    for i in 0..3000 {
        std::fs::write(d.join(format!("{i:05}{}", "n".repeat(250))), b"").unwrap();
    }
    let mut c = h.client();
    let dh = c.lookup(&c.root(), "long").unwrap().handle;
    for attrs in [false, true] {
        let (got, pages) = all(&mut c, &dh, MAX_LIST_ENTRIES, attrs);
        assert_eq!(got.len(), 3000);
        assert!(pages > 1, "3000 long names fit no page");
    }
    // Asking for more than the most is asking for the most; zero is one.
    let (p, _) = page(&mut c, &dh, 0, u32::MAX, false);
    assert!(p.entries.len() > 100);
    let (p, _) = page(&mut c, &dh, 0, 0, false);
    assert_eq!(p.entries.len(), 1);
}

#[test]
fn a_page_carries_the_directory_as_it_was_before_it_was_read() {
    let h = Harness::new();
    let d = h.export.join("d");
    std::fs::create_dir(&d).unwrap();
    let mut c = h.client();
    let root = c.root();
    let dh = c.lookup(&root, "d").unwrap().handle;
    // (Listing it sets its access time, which the page does not show yet.)
    let state = |a: &Attr| (a.ino, a.ctime, a.mtime, a.size, a.mode);
    let (_, first) = page(&mut c, &dh, 0, 1, false);
    assert_eq!(state(&first), state(&c.getattr(&dh).unwrap()));
    let (_, again) = page(&mut c, &dh, 0, 1, false);
    assert_eq!(state(&first), state(&again));
    std::thread::sleep(std::time::Duration::from_millis(10));
    std::fs::write(d.join("new"), b"").unwrap();
    let (p, now) = page(&mut c, &dh, 0, 100, false);
    assert_ne!((first.ctime, first.mtime), (now.ctime, now.mtime));
    assert!(p.entries.iter().any(|e| e.name == b"new"));
    // The export's own `..` is the export: nothing outside is named.
    let (p, r) = page(&mut c, &root, 0, 100, false);
    let dotdot = p.entries.iter().find(|e| e.name == b"..").unwrap();
    assert_eq!(dotdot.ino, r.ino);
}
