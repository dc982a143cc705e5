//! Directory listings through the mount: large directories against the export, directories
//! changing while they are listed, `telldir`/`seekdir`/`rewinddir`, the attributes a listing
//! hands the kernel, listings at once, and the kernel's cache of listings (kept only while
//! the directory is as it was, and never for a caller the server would refuse).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::{CStr, CString};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;

/// An export and a key in a directory every user may pass through (some tests list as an
/// ordinary user).
struct Setup {
    tmp: tempfile::TempDir,
}

impl Setup {
    fn new() -> Setup {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let export = tmp.path().join("export");
        std::fs::create_dir(&export).unwrap();
        std::fs::set_permissions(&export, std::fs::Permissions::from_mode(0o755)).unwrap();
        Setup { tmp }
    }
    fn export(&self) -> PathBuf {
        self.tmp.path().join("export")
    }
    fn server(&self, extra: &[&str]) -> ServerProc {
        ServerProc::start(&self.export(), &self.tmp.path().join("handle.key"), extra)
    }
    fn mount(&self, server: &ServerProc, name: &str, opts: &[&str]) -> MountProc {
        MountProc::start(&server.addr, &self.tmp.path().join(name), opts)
    }
}

/// Names and kinds (`d`, `f`, `l`) in `dir`, as `readdir` gives them.
fn listing(dir: &Path) -> BTreeMap<String, char> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let t = e.file_type().unwrap();
            let kind = if t.is_dir() {
                'd'
            } else if t.is_symlink() {
                'l'
            } else {
                'f'
            };
            (e.file_name().to_string_lossy().into_owned(), kind)
        })
        .collect()
}

/// The names in `dir`, each as often as `readdir` gave it.
fn names(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

/// Makes `n` empty files `{prefix}{i:05}` in `dir`.
fn fill(dir: &Path, prefix: &str, n: usize) {
    for i in 0..n {
        std::fs::File::create(dir.join(format!("{prefix}{i:05}"))).unwrap();
    }
}

#[test]
fn a_large_directory_lists_as_the_export_holds_it_and_follows_its_changes() {
    let s = Setup::new();
    let big = s.export().join("big");
    std::fs::create_dir(&big).unwrap();
    fill(&big, "entry-", 10_000);
    for i in 0..20 {
        std::fs::create_dir(big.join(format!("dir-{i}"))).unwrap();
        std::os::unix::fs::symlink("entry-00001", big.join(format!("link-{i}"))).unwrap();
    }
    // Names as long as names go, so that pages end at the protocol's size limit.
    for i in 0..2000 {
        let long = format!("{i:05}{}", "n".repeat(250));
        std::fs::File::create(big.join(long)).unwrap();
    }
    let server = s.server(&[]);
    let a = s.mount(&server, "a", &[]);
    let b = s.mount(&server, "b", &[]);
    let through = a.mp.join("big");
    let mut want = listing(&big);
    assert_eq!(want.len(), 12_040);
    // The first listings fill the kernel's cache, the later ones are served from it: all the
    // same, and nothing twice.
    for round in 0..4 {
        let got = names(&through);
        assert_eq!(
            got.len(),
            want.len(),
            "round {round}: an entry twice or missing"
        );
        assert_eq!(listing(&through), want, "round {round}");
    }
    // Changed on the server itself, through this mount, and through another mount: each is
    // seen by the next listing.
    std::fs::File::create(big.join("added-on-the-server")).unwrap();
    std::fs::remove_file(big.join("entry-00007")).unwrap();
    want.insert("added-on-the-server".into(), 'f');
    want.remove("entry-00007");
    assert_eq!(listing(&through), want);
    assert_eq!(listing(&through), want);
    std::fs::File::create(through.join("added-through-a")).unwrap();
    std::fs::remove_file(through.join("entry-00008")).unwrap();
    want.insert("added-through-a".into(), 'f');
    want.remove("entry-00008");
    assert_eq!(listing(&through), want);
    std::fs::create_dir(b.mp.join("big/added-through-b")).unwrap();
    std::fs::remove_file(b.mp.join("big/entry-00009")).unwrap();
    want.insert("added-through-b".into(), 'd');
    want.remove("entry-00009");
    assert_eq!(listing(&through), want);
    assert_eq!(listing(&b.mp.join("big")), want);
    assert_eq!(listing(&through), listing(&big));
    a.umount();
    b.umount();
}

#[test]
fn a_directory_changing_while_listed_lists_what_stays_once_and_nothing_twice() {
    let s = Setup::new();
    let dir = s.export().join("busy");
    std::fs::create_dir(&dir).unwrap();
    fill(&dir, "keep-", 3000);
    let server = s.server(&[]);
    let m = s.mount(&server, "m", &[]);
    let through = m.mp.join("busy");
    // Changed on the server and through the mount, between pages and while the kernel's
    // cache of the listing is filled and used.
    for round in 0..6 {
        let changes = if round % 2 == 0 { &dir } else { &through };
        fill(changes, &format!("gone-{round}-"), 500);
        let mut it = std::fs::read_dir(&through).unwrap();
        let mut seen: Vec<String> = Vec::new();
        for e in it.by_ref().take(1200) {
            seen.push(e.unwrap().file_name().to_string_lossy().into_owned());
        }
        for i in 0..500 {
            std::fs::remove_file(changes.join(format!("gone-{round}-{i:05}"))).unwrap();
            std::fs::File::create(changes.join(format!("new-{round}-{i:05}"))).unwrap();
        }
        for e in it {
            seen.push(e.unwrap().file_name().to_string_lossy().into_owned());
        }
        let once: BTreeSet<&String> = seen.iter().collect();
        assert_eq!(once.len(), seen.len(), "round {round}: a name listed twice");
        for i in 0..3000 {
            let keep = format!("keep-{i:05}");
            assert!(once.contains(&keep), "round {round}: {keep} missing");
        }
        for n in &once {
            let known = n.starts_with("keep-")
                || n.starts_with(&format!("gone-{round}-"))
                || n.starts_with("new-");
            assert!(known, "round {round}: {n} was never there");
        }
        // After the listing, the directory as it is.
        assert_eq!(listing(&through), listing(&dir), "round {round}");
    }
    m.umount();
}

/// A directory stream of libc's, to seek in.
struct Stream(*mut libc::DIR);

impl Stream {
    fn open(path: &Path) -> Stream {
        let c = CString::new(path.as_os_str().as_bytes()).unwrap();
        // SAFETY: `c` is a valid C string.
        let d = unsafe { libc::opendir(c.as_ptr()) };
        assert!(!d.is_null(), "opendir {}", path.display());
        Stream(d)
    }

    fn next(&mut self) -> Option<String> {
        // SAFETY: `self.0` is an open stream; the entry is read before the next call.
        unsafe {
            let e = libc::readdir(self.0);
            if e.is_null() {
                return None;
            }
            let name = CStr::from_ptr((*e).d_name.as_ptr());
            Some(name.to_string_lossy().into_owned())
        }
    }

    fn take(&mut self, n: usize) -> Vec<String> {
        (0..n).map_while(|_| self.next()).collect()
    }

    fn rest(&mut self) -> Vec<String> {
        std::iter::from_fn(|| self.next()).collect()
    }

    fn tell(&mut self) -> libc::c_long {
        // SAFETY: `self.0` is an open stream.
        unsafe { libc::telldir(self.0) }
    }

    fn seek(&mut self, at: libc::c_long) {
        // SAFETY: `self.0` is an open stream and `at` came from `telldir` on it.
        unsafe { libc::seekdir(self.0, at) }
    }

    fn rewind(&mut self) {
        // SAFETY: `self.0` is an open stream.
        unsafe { libc::rewinddir(self.0) }
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        // SAFETY: `self.0` is an open stream, closed once.
        unsafe { libc::closedir(self.0) };
    }
}

/// `telldir` positions, `seekdir` to them (in the page at hand, in one far behind, across
/// the kernel's cache) and `rewinddir`, in a directory small enough to be listed with
/// attributes and in one large enough to be cached by the kernel.
fn seeks_in(dir: &Path, through: &Path, n: usize) {
    for pass in 0..3 {
        let mut d = Stream::open(through);
        let all_before = d.take(n / 3);
        let near = d.tell();
        let after_near = d.take(20);
        d.take(n / 3);
        let far = d.tell();
        let after_far = d.take(20);
        let rest = d.rest();
        assert_eq!(
            all_before.len() + 40 + n / 3 + rest.len(),
            n + 2,
            "pass {pass}"
        );
        d.seek(near);
        assert_eq!(d.take(20), after_near, "pass {pass}");
        d.seek(far);
        assert_eq!(d.take(20), after_far, "pass {pass}");
        d.seek(near);
        assert_eq!(d.take(20), after_near, "pass {pass}");
        d.rewind();
        let again: BTreeSet<String> = d.rest().into_iter().collect();
        assert_eq!(again.len(), n + 2, "pass {pass}");
        // A rewind sees what this mount changed since.
        std::fs::File::create(through.join(format!("made-{pass}"))).unwrap();
        std::fs::remove_file(through.join("f-00000")).ok();
        d.rewind();
        let now: BTreeSet<String> = d.rest().into_iter().collect();
        assert!(now.contains(&format!("made-{pass}")), "pass {pass}");
        assert!(!now.contains("f-00000"), "pass {pass}");
        drop(d);
        std::fs::remove_file(dir.join(format!("made-{pass}"))).unwrap();
        std::fs::File::create(dir.join("f-00000")).unwrap();
    }
}

#[test]
fn telldir_seekdir_and_rewinddir_work_through_the_mount() {
    let s = Setup::new();
    let small = s.export().join("small");
    let large = s.export().join("large");
    std::fs::create_dir(&small).unwrap();
    std::fs::create_dir(&large).unwrap();
    fill(&small, "f-", 150);
    fill(&large, "f-", 6000);
    let server = s.server(&[]);
    let m = s.mount(&server, "m", &[]);
    seeks_in(&small, &m.mp.join("small"), 150);
    seeks_in(&large, &m.mp.join("large"), 6000);
    // A rewind of a small directory sees what changed on the server since.
    let mut d = Stream::open(&m.mp.join("small"));
    assert_eq!(d.rest().len(), 152);
    std::fs::File::create(small.join("from-the-server")).unwrap();
    d.rewind();
    assert!(d.rest().contains(&"from-the-server".to_string()));
    drop(d);
    m.umount();
}

#[test]
fn a_listing_hands_the_kernel_the_attributes_as_they_are() {
    let s = Setup::new();
    let dir = s.export().join("attrs");
    std::fs::create_dir(&dir).unwrap();
    for i in 0..100u32 {
        let p = dir.join(format!("f{i:03}"));
        std::fs::write(&p, vec![b'x'; i as usize * 37]).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600 | (i % 8) << 3))
            .unwrap();
        std::os::unix::fs::chown(&p, Some(1000 + i), Some(2000 + i)).unwrap();
    }
    std::fs::hard_link(dir.join("f001"), dir.join("hard")).unwrap();
    std::os::unix::fs::symlink("f002", dir.join("sym")).unwrap();
    std::fs::create_dir(dir.join("sub")).unwrap();
    let server = s.server(&[]);
    // Long timeouts: what `stat` says after the listing is what the listing said.
    let m = s.mount(&server, "m", &["attr_timeout=60", "entry_timeout=60"]);
    let through = m.mp.join("attrs");
    let check = |what: &str| {
        let listed = names(&through);
        assert_eq!(listed.len(), 103, "{what}");
        for n in listed {
            let want = std::fs::symlink_metadata(dir.join(&n)).unwrap();
            let got = std::fs::symlink_metadata(through.join(&n)).unwrap();
            let key = |m: &std::fs::Metadata| {
                (
                    m.len(),
                    m.mode(),
                    m.nlink(),
                    m.uid(),
                    m.gid(),
                    m.mtime(),
                    m.mtime_nsec(),
                )
            };
            assert_eq!(key(&got), key(&want), "{what}: {n}");
        }
    };
    check("first listing");
    // Changed on the server: the next listing hands the kernel the new attributes, although
    // what it had would have stayed valid for a minute.
    for i in 0..100u32 {
        let p = dir.join(format!("f{i:03}"));
        std::fs::write(&p, vec![b'y'; i as usize * 11 + 1]).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    std::fs::hard_link(dir.join("f003"), dir.join("hard2")).unwrap();
    std::fs::remove_file(dir.join("hard2")).unwrap();
    check("after changes on the server");
    m.umount();
}

#[test]
fn listings_at_once_of_one_directory_each_see_all_of_it() {
    let s = Setup::new();
    let dir = s.export().join("shared");
    std::fs::create_dir(&dir).unwrap();
    fill(&dir, "e-", 5000);
    let server = s.server(&[]);
    let m = s.mount(&server, "m", &[]);
    let want = listing(&dir);
    let through = m.mp.join("shared");
    std::thread::scope(|sc| {
        for t in 0..6 {
            let (through, want) = (&through, &want);
            sc.spawn(move || {
                for round in 0..8 {
                    let got = names(through);
                    assert_eq!(got.len(), want.len(), "thread {t} round {round}");
                    assert_eq!(&listing(through), want, "thread {t} round {round}");
                }
            });
        }
    });
    // And stat each name while others list (lookups and listings with attributes at once).
    std::thread::scope(|sc| {
        sc.spawn(|| {
            for n in want.keys() {
                std::fs::symlink_metadata(through.join(n)).unwrap();
            }
        });
        for _ in 0..3 {
            sc.spawn(|| {
                for _ in 0..4 {
                    assert_eq!(names(&through).len(), want.len());
                }
            });
        }
    });
    m.umount();
}

#[test]
fn the_kernel_cache_of_a_listing_serves_no_one_the_server_would_refuse() {
    let s = Setup::new();
    let owner = test_support::test_user("owner");
    let dir = s.export().join("private");
    std::fs::create_dir(&dir).unwrap();
    fill(&dir, "secret-", 2000);
    for e in std::fs::read_dir(&dir).unwrap() {
        std::os::unix::fs::chown(e.unwrap().path(), Some(owner.uid), Some(owner.gid)).unwrap();
    }
    std::os::unix::fs::chown(&dir, Some(owner.uid), Some(owner.gid)).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    // The default squash: root on the mount is nobody on the server.
    let server = ServerProc::launch(
        &[],
        &fresh_addr(),
        &s.export(),
        &s.tmp.path().join("handle.key"),
        &[],
    );
    let m = s.mount(&server, "m", &[]);
    // The owner lists it until the kernel's cache holds it.
    for _ in 0..4 {
        let out = sh_as(&owner, &m.mp, "ls private | wc -l", Duration::from_secs(60));
        assert!(out.status.success(), "{out:?}");
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "2000");
    }
    // Root passes the kernel's permission check, but the server refuses nobody.
    let e = std::fs::read_dir(m.mp.join("private")).map(|d| d.count());
    assert_eq!(
        e.map_err(|e| e.raw_os_error()),
        Err(Some(libc::EACCES)),
        "root (nobody on the server) listed a directory only its owner may"
    );
    m.umount();
}
