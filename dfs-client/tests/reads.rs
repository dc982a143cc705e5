//! Reads through the mount with many requests in flight (the kernel's readahead keeps several
//! 1 MiB requests going per reader, and several readers at once add theirs), over shm and
//! tcp, and passed through to the server's file on one host: every byte at every offset is
//! the file's, however the reads are cut.

mod common;

use std::os::fd::AsFd;
use std::os::unix::fs::FileExt;
use std::path::Path;

use common::*;

fn body(len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect()
}

/// Forgets the file's cached pages, so that the next reads go to the server again.
fn drop_cached(f: &std::fs::File) {
    let _ = nix::fcntl::posix_fadvise(
        f.as_fd(),
        0,
        0,
        nix::fcntl::PosixFadviseAdvice::POSIX_FADV_DONTNEED,
    );
}

/// Where the readers' bytes come from.
#[derive(PartialEq)]
enum Via {
    /// The server reads the file for them (the rings).
    Server,
    /// Their own kernel reads the server's file (passthrough): the server reads nothing.
    Kernel,
}

fn concurrent_reads(listen: &str, opts: &[&str], via: Via) {
    let tmp = tempfile::tempdir().unwrap();
    let export = tmp.path().join("export");
    std::fs::create_dir(&export).unwrap();
    let secret = tmp.path().join("secret");
    std::fs::write(&secret, "0123456789abcdef0123456789abcdef").unwrap();
    let secret = secret.to_str().unwrap();
    let server = ServerProc::launch(
        &[],
        listen,
        &export,
        &tmp.path().join("handle.key"),
        &["--squash", "none", "--secret", secret],
    );
    let m = MountProc::start(
        &server.addr,
        &tmp.path().join("mnt"),
        &[&[format!("secret={secret}").as_str()], opts].concat(),
    );
    let size = (9 << 20) + 4321;
    let data = body(size);
    std::fs::write(export.join("f"), &data).unwrap();
    let path = m.mp.join("f");
    let read_by_server = || -> u64 {
        let io = std::fs::read_to_string(format!("/proc/{}/io", server.child.id())).unwrap();
        io.lines()
            .find_map(|l| l.strip_prefix("rchar: "))
            .unwrap()
            .parse()
            .unwrap()
    };
    let before = read_by_server();
    let check = |path: &Path, k: usize| {
        // Reader k walks the whole file in pieces of its own odd size from an odd start,
        // then back from its start to 0, so that pieces straddle every request boundary.
        let f = std::fs::File::open(path).unwrap();
        let piece = ((k * 37) % 300 + 1) * 4096 + k * 13 + 1;
        let start = (k * 99_991) % size;
        for pass in 0..2 {
            drop_cached(&f);
            let mut at = start;
            let mut buf = vec![0u8; piece];
            loop {
                let n = f.read_at(&mut buf, at as u64).unwrap();
                let want = piece.min(size - at);
                assert_eq!(n, want, "reader {k} pass {pass} at {at}");
                assert!(
                    buf[..n] == data[at..at + n],
                    "reader {k} pass {pass}: bytes at {at}..{}",
                    at + n
                );
                if n == 0 {
                    break;
                }
                at += n;
            }
            assert_eq!(at, size, "reader {k} ended early");
            let mut at = 0;
            while at < start {
                let n = f.read_at(&mut buf, at as u64).unwrap();
                assert!(
                    n > 0 && buf[..n] == data[at..at + n],
                    "reader {k}: bytes at {at}"
                );
                at += n;
            }
        }
    };
    std::thread::scope(|s| {
        for k in 0..6 {
            let path = &path;
            s.spawn(move || check(path, k));
        }
        // Sequential whole-file readers alongside (large reads, readahead in full swing).
        for _ in 0..2 {
            s.spawn(|| {
                for _ in 0..3 {
                    let f = std::fs::File::open(&path).unwrap();
                    drop_cached(&f);
                    drop(f);
                    assert!(
                        std::fs::read(&path).unwrap() == data,
                        "a whole read differs"
                    );
                }
            });
        }
    });
    let moved = read_by_server() - before;
    eprintln!("the server read {} MiB", moved >> 20);
    match via {
        // The readers' bytes came from the server (the cache was dropped between passes),
        // not only from the kernel's cache.
        Via::Server => assert!(
            moved >= 4 * size as u64,
            "the server read only {moved} bytes"
        ),
        // None of them came through the server, whose own reads are the protocol's.
        Via::Kernel => assert!(
            moved < size as u64 / 4,
            "the server read {moved} bytes of a passed-through file"
        ),
    }
    m.umount();
}

#[test]
fn concurrent_reads_return_the_files_bytes_over_shm() {
    concurrent_reads(&fresh_addr(), &["nopassthrough"], Via::Server);
}

#[test]
fn concurrent_reads_return_the_files_bytes_passed_through() {
    concurrent_reads(&fresh_addr(), &[], Via::Kernel);
}

#[test]
fn concurrent_reads_return_the_files_bytes_over_tcp() {
    concurrent_reads("tcp:127.0.0.1:0", &[], Via::Server);
}
