//! The Win32 semantics of the Windows face, on Linux, against a real `dfs-server` over tcp
//! with a secret (as a Windows client reaches a Linux server): dispositions, share modes,
//! delete on close, the read-only attribute, directories, searches, moves, paths that try
//! to leave the export, and a server that dies. Each expected code is what a local NTFS
//! drive gives for the same call.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use common::ServerProc;
use dfs_proto::auth::Secret;
use kernel32_shim::win32::consts::*;
use kernel32_shim::win32::{Config, CreateParams, Prefix, Win32Fs};

/// The user the Windows program is on the server (believed: the client proves the secret).
const UID: u32 = 4321;

struct Setup {
    _tmp: tempfile::TempDir,
    server: ServerProc,
    fs: Win32Fs,
}

fn setup() -> Setup {
    let tmp = tempfile::tempdir().unwrap();
    let export = tmp.path().join("export");
    std::fs::create_dir(&export).unwrap();
    std::os::unix::fs::chown(&export, Some(UID), Some(UID)).unwrap();
    let secret_file = tmp.path().join("secret");
    std::fs::write(&secret_file, b"a secret of more than sixteen bytes").unwrap();
    std::fs::set_permissions(&secret_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let key = tmp.path().join("key");
    let server = ServerProc::launch(
        &[],
        "tcp:127.0.0.1:0",
        &export,
        &key,
        &[
            "--secret",
            secret_file.to_str().unwrap(),
            "--squash",
            "root",
        ],
    );
    let secret = Secret::from_file_bytes(&std::fs::read(&secret_file).unwrap()).unwrap();
    let fs = Win32Fs::connect(&Config {
        addr: server.addr.clone(),
        prefix: Prefix::parse("M:").unwrap(),
        secret: Some(secret),
        uid: UID,
        gid: UID,
        timeout: std::time::Duration::from_secs(3),
    })
    .unwrap();
    Setup {
        _tmp: tmp,
        server,
        fs,
    }
}

fn comps(fs: &Win32Fs, path: &str) -> Vec<String> {
    let w: Vec<u16> = path.encode_utf16().collect();
    fs.route(&w).expect("a DFS path").expect("a valid name")
}

fn params(access: u32, share: u32, disposition: u32) -> CreateParams {
    CreateParams {
        access,
        share,
        disposition,
        flags: 0,
    }
}

const RW: u32 = GENERIC_READ | GENERIC_WRITE;
const ALL_SHARE: u32 = FILE_SHARE_READ | FILE_SHARE_WRITE | FILE_SHARE_DELETE;

fn export(s: &Setup) -> &Path {
    &s.server.export
}

#[test]
fn dispositions_answer_as_a_local_drive() {
    let s = setup();
    let fs = &s.fs;
    let a = comps(fs, r"M:\a.txt");
    // OPEN_EXISTING of nothing; a missing directory on the way.
    let e = fs.create_file(&a, params(GENERIC_READ, 0, OPEN_EXISTING));
    assert_eq!(e.unwrap_err(), ERROR_FILE_NOT_FOUND);
    let deep = comps(fs, r"M:\no\such\file");
    let e = fs.create_file(&deep, params(RW, 0, CREATE_ALWAYS));
    assert_eq!(e.unwrap_err(), ERROR_PATH_NOT_FOUND);
    // CREATE_NEW makes it; again is ERROR_FILE_EXISTS.
    let c = fs.create_file(&a, params(RW, 0, CREATE_NEW)).unwrap();
    assert_eq!(c.last_error, ERROR_SUCCESS);
    assert_eq!(fs.write(&c.file, b"hello, world", None).unwrap(), 12);
    assert_eq!(fs.seek(&c.file, 7, FILE_BEGIN).unwrap(), 7);
    let mut buf = [0u8; 64];
    assert_eq!(fs.read(&c.file, &mut buf, None).unwrap(), 5);
    assert_eq!(&buf[..5], b"world");
    // At the end: a success with nothing read.
    assert_eq!(fs.read(&c.file, &mut buf, None).unwrap(), 0);
    assert_eq!(fs.seek(&c.file, -5, FILE_END).unwrap(), 7);
    assert_eq!(
        fs.seek(&c.file, -8, FILE_CURRENT).unwrap_err(),
        ERROR_NEGATIVE_SEEK
    );
    // An overlapped offset reads there and moves the pointer past it.
    assert_eq!(fs.read(&c.file, &mut buf[..5], Some(0)).unwrap(), 5);
    assert_eq!(&buf[..5], b"hello");
    assert_eq!(c.file.position(), 5);
    assert_eq!(fs.info(&c.file).unwrap().size, 12);
    drop(c);
    let e = fs.create_file(&a, params(RW, 0, CREATE_NEW));
    assert_eq!(e.unwrap_err(), ERROR_FILE_EXISTS);
    // OPEN_ALWAYS and CREATE_ALWAYS on an existing file say so; CREATE_ALWAYS truncates.
    let c = fs
        .create_file(&a, params(GENERIC_READ, 0, OPEN_ALWAYS))
        .unwrap();
    assert_eq!(c.last_error, ERROR_ALREADY_EXISTS);
    assert_eq!(fs.info(&c.file).unwrap().size, 12);
    drop(c);
    let c = fs.create_file(&a, params(RW, 0, CREATE_ALWAYS)).unwrap();
    assert_eq!(c.last_error, ERROR_ALREADY_EXISTS);
    assert_eq!(fs.info(&c.file).unwrap().size, 0);
    drop(c);
    // TRUNCATE_EXISTING empties the file even for a reader (as on Wine's drives), whose
    // handle still cannot write.
    let c = fs.create_file(&a, params(RW, 0, OPEN_EXISTING)).unwrap();
    fs.write(&c.file, b"0123", None).unwrap();
    drop(c);
    let c = fs
        .create_file(&a, params(GENERIC_READ, 0, TRUNCATE_EXISTING))
        .unwrap();
    assert_eq!(fs.info(&c.file).unwrap().size, 0);
    assert_eq!(
        fs.write(&c.file, b"x", None).unwrap_err(),
        ERROR_ACCESS_DENIED
    );
    drop(c);
    // A handle without read access cannot read; without write, cannot write.
    let c = fs
        .create_file(&a, params(GENERIC_WRITE, 0, OPEN_EXISTING))
        .unwrap();
    assert_eq!(
        fs.read(&c.file, &mut buf, None).unwrap_err(),
        ERROR_ACCESS_DENIED
    );
    drop(c);
    let c = fs
        .create_file(&a, params(GENERIC_READ, 0, OPEN_EXISTING))
        .unwrap();
    assert_eq!(
        fs.write(&c.file, b"x", None).unwrap_err(),
        ERROR_ACCESS_DENIED
    );
    drop(c);
    // An append-only handle (FILE_APPEND_DATA without FILE_WRITE_DATA, as Rust's
    // `OpenOptions::append` asks) writes at the end whatever its pointer says.
    let c = fs.create_file(&a, params(RW, 0, OPEN_EXISTING)).unwrap();
    fs.write(&c.file, b"one", None).unwrap();
    drop(c);
    let c = fs
        .create_file(&a, params(FILE_APPEND_DATA, 0, OPEN_EXISTING))
        .unwrap();
    assert_eq!(c.file.position(), 0);
    fs.write(&c.file, b", two", None).unwrap();
    drop(c);
    assert_eq!(
        std::fs::read(export(&s).join("a.txt")).unwrap(),
        b"one, two"
    );
    // The file is the server's, owned by the program's user.
    let meta = std::fs::metadata(export(&s).join("a.txt")).unwrap();
    assert_eq!(std::os::unix::fs::MetadataExt::uid(&meta), UID);
}

#[test]
fn share_modes_hold_between_handles() {
    let s = setup();
    let fs = &s.fs;
    let f = comps(fs, r"M:\shared");
    let first = fs
        .create_file(&f, params(GENERIC_READ, FILE_SHARE_READ, CREATE_NEW))
        .unwrap();
    // Another reader that shares reading: fine. A writer: refused.
    let reader = fs
        .create_file(&f, params(GENERIC_READ, FILE_SHARE_READ, OPEN_EXISTING))
        .unwrap();
    let e = fs.create_file(&f, params(GENERIC_WRITE, ALL_SHARE, OPEN_EXISTING));
    assert_eq!(e.unwrap_err(), ERROR_SHARING_VIOLATION);
    // A reader that would not share reading with the first: refused.
    let e = fs.create_file(&f, params(GENERIC_READ, 0, OPEN_EXISTING));
    assert_eq!(e.unwrap_err(), ERROR_SHARING_VIOLATION);
    // Attributes only (access 0) never conflict.
    fs.create_file(&f, params(0, 0, OPEN_EXISTING)).unwrap();
    // Deleting or renaming a file open without FILE_SHARE_DELETE: refused.
    assert_eq!(fs.delete_file(&f).unwrap_err(), ERROR_SHARING_VIOLATION);
    let g = comps(fs, r"M:\renamed");
    assert_eq!(
        fs.move_file(&f, &g, 0).unwrap_err(),
        ERROR_SHARING_VIOLATION
    );
    drop(first);
    drop(reader);
    // Once they are closed, a writer gets in.
    let w = fs
        .create_file(&f, params(GENERIC_WRITE, FILE_SHARE_DELETE, OPEN_EXISTING))
        .unwrap();
    // Open with FILE_SHARE_DELETE: the name goes at once, the handle still works.
    fs.delete_file(&f).unwrap();
    assert!(!export(&s).join("shared").exists());
    assert_eq!(fs.write(&w.file, b"still open", None).unwrap(), 10);
}

#[test]
fn delete_on_close_and_dispositions_by_handle() {
    let s = setup();
    let fs = &s.fs;
    let t = comps(fs, r"M:\temp.tmp");
    let c = fs
        .create_file(
            &t,
            CreateParams {
                access: RW,
                share: 0,
                disposition: CREATE_NEW,
                flags: FILE_FLAG_DELETE_ON_CLOSE,
            },
        )
        .unwrap();
    fs.write(&c.file, b"scratch", None).unwrap();
    assert!(export(&s).join("temp.tmp").exists());
    drop(c);
    assert!(!export(&s).join("temp.tmp").exists(), "deleted on close");
    // FileDispositionInfo on a handle opened with DELETE access.
    let d = comps(fs, r"M:\doomed");
    let c = fs
        .create_file(&d, params(RW | DELETE, 0, CREATE_NEW))
        .unwrap();
    fs.set_delete(&c.file, true, false).unwrap();
    assert!(fs.info(&c.file).unwrap().delete_pending);
    assert!(export(&s).join("doomed").exists(), "until the last close");
    drop(c);
    assert!(!export(&s).join("doomed").exists());
    // Without DELETE access: refused.
    let c = fs.create_file(&d, params(RW, 0, CREATE_NEW)).unwrap();
    assert_eq!(
        fs.set_delete(&c.file, true, false).unwrap_err(),
        ERROR_ACCESS_DENIED
    );
    // A rename by handle; the end of the file by handle.
    let c2 = fs.create_file(&d, params(DELETE | GENERIC_WRITE, ALL_SHARE, OPEN_EXISTING));
    assert_eq!(
        c2.unwrap_err(),
        ERROR_SHARING_VIOLATION,
        "the first shares nothing"
    );
    drop(c);
    let c = fs
        .create_file(&d, params(DELETE | GENERIC_WRITE, 0, OPEN_EXISTING))
        .unwrap();
    fs.rename_handle(&c.file, &comps(fs, r"M:\kept"), false)
        .unwrap();
    fs.set_size(&c.file, 4096).unwrap();
    drop(c);
    assert_eq!(
        std::fs::metadata(export(&s).join("kept")).unwrap().len(),
        4096
    );
    assert!(!export(&s).join("doomed").exists());
}

#[test]
fn the_read_only_attribute_refuses_writers_and_deleters() {
    let s = setup();
    let fs = &s.fs;
    let r = comps(fs, r"M:\ro");
    drop(fs.create_file(&r, params(RW, 0, CREATE_NEW)).unwrap());
    fs.set_attributes(&r, FILE_ATTRIBUTE_READONLY).unwrap();
    let info = fs.attributes(&r).unwrap();
    assert_eq!(
        info.attributes,
        FILE_ATTRIBUTE_ARCHIVE | FILE_ATTRIBUTE_READONLY
    );
    let e = fs.create_file(&r, params(GENERIC_WRITE, 0, OPEN_EXISTING));
    assert_eq!(e.unwrap_err(), ERROR_ACCESS_DENIED);
    assert_eq!(fs.delete_file(&r).unwrap_err(), ERROR_ACCESS_DENIED);
    fs.create_file(&r, params(GENERIC_READ, 0, OPEN_EXISTING))
        .unwrap();
    fs.set_attributes(&r, FILE_ATTRIBUTE_NORMAL).unwrap();
    assert_eq!(
        fs.attributes(&r).unwrap().attributes,
        FILE_ATTRIBUTE_ARCHIVE
    );
    fs.delete_file(&r).unwrap();
    assert_eq!(fs.attributes(&r).unwrap_err(), ERROR_FILE_NOT_FOUND);
    // A dot file is hidden, as Wine shows one on a Unix drive.
    let h = comps(fs, r"M:\.hidden");
    drop(fs.create_file(&h, params(RW, 0, CREATE_NEW)).unwrap());
    assert_eq!(
        fs.attributes(&h).unwrap().attributes,
        FILE_ATTRIBUTE_ARCHIVE | FILE_ATTRIBUTE_HIDDEN
    );
}

#[test]
fn directories_and_searches() {
    let s = setup();
    let fs = &s.fs;
    let d = comps(fs, r"M:\dir");
    fs.create_directory(&d).unwrap();
    assert_eq!(fs.create_directory(&d).unwrap_err(), ERROR_ALREADY_EXISTS);
    assert_eq!(
        fs.create_directory(&comps(fs, r"M:\no\sub")).unwrap_err(),
        ERROR_PATH_NOT_FOUND
    );
    for n in ["one.txt", "two.txt", "three.log"] {
        let p = comps(fs, &format!(r"M:\dir\{n}"));
        let c = fs.create_file(&p, params(RW, 0, CREATE_NEW)).unwrap();
        fs.write(&c.file, n.as_bytes(), None).unwrap();
    }
    assert_eq!(fs.remove_directory(&d).unwrap_err(), ERROR_DIR_NOT_EMPTY);
    assert_eq!(fs.delete_file(&d).unwrap_err(), ERROR_ACCESS_DENIED);
    let one = comps(fs, r"M:\dir\one.txt");
    assert_eq!(fs.remove_directory(&one).unwrap_err(), ERROR_DIRECTORY);
    // A directory opens only with FILE_FLAG_BACKUP_SEMANTICS.
    let e = fs.create_file(&d, params(GENERIC_READ, ALL_SHARE, OPEN_EXISTING));
    assert_eq!(e.unwrap_err(), ERROR_ACCESS_DENIED);
    let h = fs
        .create_file(
            &d,
            CreateParams {
                access: GENERIC_READ,
                share: ALL_SHARE,
                disposition: OPEN_EXISTING,
                flags: FILE_FLAG_BACKUP_SEMANTICS,
            },
        )
        .unwrap();
    assert!(h.file.is_directory());
    assert!(fs.info(&h.file).unwrap().directory);
    // Searches: `.` and `..` first in a subdirectory, then the matches; then no more.
    let mut f = fs.find_first(&d, "*").unwrap();
    let mut names = Vec::new();
    while let Ok(e) = f.next_entry() {
        names.push(e.name);
    }
    assert_eq!(&names[..2], [".", ".."]);
    let mut rest = names[2..].to_vec();
    rest.sort();
    assert_eq!(rest, ["one.txt", "three.log", "two.txt"]);
    assert_eq!(f.next_entry().unwrap_err(), ERROR_NO_MORE_FILES);
    let mut f = fs.find_first(&d, "*.TXT").unwrap();
    let mut txt = [f.next_entry().unwrap(), f.next_entry().unwrap()];
    txt.sort_by(|a, b| a.name.cmp(&b.name));
    assert_eq!(txt[0].name, "one.txt");
    assert_eq!(txt[0].info.size, 7);
    assert_eq!(txt[0].info.attributes, FILE_ATTRIBUTE_ARCHIVE);
    assert_eq!(f.next_entry().unwrap_err(), ERROR_NO_MORE_FILES);
    assert_eq!(
        fs.find_first(&d, "*.exe").unwrap_err(),
        ERROR_FILE_NOT_FOUND
    );
    assert_eq!(
        fs.find_first(&comps(fs, r"M:\nodir"), "*").unwrap_err(),
        ERROR_PATH_NOT_FOUND
    );
    // The drive's root lists no `.` or `..`.
    let mut f = fs.find_first(&[], "*").unwrap();
    assert_eq!(f.next_entry().unwrap().name, "dir");
    // Moves: onto an existing name only with MOVEFILE_REPLACE_EXISTING.
    let two = comps(fs, r"M:\dir\two.txt");
    assert_eq!(
        fs.move_file(&one, &two, 0).unwrap_err(),
        ERROR_ALREADY_EXISTS
    );
    fs.move_file(&one, &two, MOVEFILE_REPLACE_EXISTING).unwrap();
    assert_eq!(
        std::fs::read(export(&s).join("dir/two.txt")).unwrap(),
        b"one.txt"
    );
    assert_eq!(
        fs.move_file(&one, &two, 0).unwrap_err(),
        ERROR_FILE_NOT_FOUND
    );
    fs.move_file(&d, &comps(fs, r"M:\moved"), 0).unwrap();
    assert!(export(&s).join("moved/three.log").exists());
}

#[test]
fn paths_stay_inside_the_export() {
    let s = setup();
    let fs = &s.fs;
    // `..` never climbs above the drive's root.
    let up = comps(fs, r"M:\..\..\..\etc\passwd");
    assert_eq!(up, ["etc", "passwd"]);
    assert_eq!(fs.attributes(&up).unwrap_err(), ERROR_PATH_NOT_FOUND);
    // A link to an absolute path names the server's host: never followed.
    std::os::unix::fs::symlink("/etc/passwd", export(&s).join("out")).unwrap();
    let out = comps(fs, r"M:\out");
    let e = fs.create_file(&out, params(GENERIC_READ, ALL_SHARE, OPEN_EXISTING));
    assert_eq!(e.unwrap_err(), ERROR_PATH_NOT_FOUND);
    // A relative link that climbs stops at the export's root.
    std::fs::write(export(&s).join("inside"), b"in").unwrap();
    std::os::unix::fs::symlink("../../../inside", export(&s).join("climb")).unwrap();
    let c = fs
        .create_file(
            &comps(fs, r"M:\climb"),
            params(GENERIC_READ, 0, OPEN_EXISTING),
        )
        .unwrap();
    let mut buf = [0u8; 8];
    assert_eq!(fs.read(&c.file, &mut buf, None).unwrap(), 2);
    assert_eq!(&buf[..2], b"in");
    // Names Win32 refuses never reach the server.
    let bad: Vec<u16> = r"M:\a|b".encode_utf16().collect();
    assert_eq!(
        fs.route(&bad),
        Some(Err(kernel32_shim::win32::path::ERROR_INVALID_NAME))
    );
    // Other paths are not the DFS's.
    let c_drive: Vec<u16> = r"C:\windows".encode_utf16().collect();
    assert!(fs.route(&c_drive).is_none());
}

#[test]
fn a_server_that_dies_fails_the_call_and_loses_nothing_written_before() {
    let mut s = setup();
    let fs = s.fs.clone();
    let f = comps(&fs, r"M:\data");
    let c = fs.create_file(&f, params(RW, 0, CREATE_NEW)).unwrap();
    let block = vec![7u8; 256 << 10];
    fs.write(&c.file, &block, None).unwrap();
    s.server.kill();
    // The client waits out its reconnect time (3 s here) for a restart that does not come;
    // the call must then fail, never report success.
    let r = fs.write(&c.file, &block, None);
    assert!(r.is_err(), "a write to a dead server succeeded");
    assert_ne!(r.unwrap_err(), ERROR_SUCCESS);
    let on_disk = std::fs::read(export(&s).join("data")).unwrap();
    assert_eq!(on_disk.len(), 256 << 10);
    assert!(on_disk.iter().all(|&b| b == 7));
}

#[test]
fn large_reads_and_writes_in_parts_land_exactly() {
    let s = setup();
    let fs = &s.fs;
    let p = comps(fs, r"M:\big");
    let body: Vec<u8> = (0..(3 << 20) + 12_345u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let c = fs.create_file(&p, params(RW, 0, CREATE_NEW)).unwrap();
    // 3 MiB and a bit in one WriteFile: four parts at once, the last short.
    assert_eq!(fs.write(&c.file, &body, None).unwrap(), body.len());
    assert_eq!(c.file.position(), body.len() as u64);
    assert_eq!(std::fs::read(export(&s).join("big")).unwrap(), body);
    // Reads in parts from odd offsets, across the end of the file and past it.
    for (at, len) in [
        (0usize, 2 << 20),
        (4097, 1 << 20),
        (body.len() - 700_000, 2 << 20),
        (body.len() - 10, 1 << 20),
        (body.len(), 1 << 20),
    ] {
        let mut buf = vec![0u8; len];
        let n = fs.read(&c.file, &mut buf, Some(at as u64)).unwrap();
        let want = &body[at..(at + len).min(body.len())];
        assert_eq!(n, want.len(), "at {at}");
        assert!(buf[..n] == *want, "bytes at {at}");
        assert_eq!(c.file.position(), (at + n) as u64);
    }
}
