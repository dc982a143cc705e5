//! Read replies on both transports: the file's bytes go from the page cache to the client's
//! ring (`pread` into the ring on shm, `sendfile` on tcp) and arrive exact, short at the end
//! of the file, and in step with the protocol while the file shrinks under them.

mod common;

use std::io::{Seek, SeekFrom, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::*;

fn body(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i.wrapping_mul(131) >> 5) as u8).collect()
}

fn reads_end_exactly(h: &Harness, c: &mut Client) {
    let size = (3 << 20) + 123;
    let data = body(size);
    std::fs::write(h.export.join("f"), &data).unwrap();
    let top = c.root();
    let f = c.lookup(&top, "f").unwrap();
    let open = c.open(&f.handle, RO).unwrap();
    // (offset, asked, bytes, eof)
    let cases = [
        (0, 1 << 20, 1 << 20, false),
        ((1 << 20) + 3, 1 << 20, 1 << 20, false),
        (size - (1 << 20), 1 << 20, 1 << 20, false),
        (size - 100, 1 << 20, 100, true),
        (size, 4096, 0, true),
        (size + 10, 10, 0, true),
    ];
    for (offset, asked, bytes, eof) in cases {
        for via in [Some(open), None] {
            let (got, at_end) = c.read(&f.handle, via, offset as u64, asked).unwrap();
            assert_eq!(
                (got.len(), at_end),
                (bytes, eof),
                "{offset} {asked} {via:?}"
            );
            let o = offset.min(size);
            assert!(got == data[o..o + bytes], "bytes at {offset}");
        }
    }
    // A directory has no bytes to read, as with `pread`.
    let d = c.mkdir(&top, "d", 0o755).unwrap();
    assert_eq!(
        c.read(&d.handle, None, 0, 4096).unwrap_err(),
        dfs_proto::Errno(21)
    );
    shrinking(h, c);
}

/// A file cut short and written back, again and again, while it is read: every reply is
/// whole and the connection in step; the bytes below the cut are the file's.
fn shrinking(h: &Harness, c: &mut Client) {
    let size = 2 << 20;
    let keep = 300_000;
    let data = body(size);
    let path = h.export.join("g");
    std::fs::write(&path, &data).unwrap();
    let top = c.root();
    let g = c.lookup(&top, "g").unwrap();
    let open = c.open(&g.handle, RO).unwrap();
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| {
            let mut w = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
            while !stop.load(Ordering::Relaxed) {
                w.set_len(keep as u64).unwrap();
                std::thread::sleep(Duration::from_micros(300));
                w.seek(SeekFrom::Start(keep as u64)).unwrap();
                w.write_all(&data[keep..]).unwrap();
                std::thread::sleep(Duration::from_millis(2));
            }
        });
        for i in 0..200 {
            let offset = (i * 4099) % 200_000;
            let (got, eof) = c
                .read(&g.handle, Some(open), offset as u64, 1 << 20)
                .unwrap();
            assert!(got.len() <= 1 << 20);
            assert!(
                eof || got.len() == 1 << 20,
                "a short read is the end of the file"
            );
            let stable = got.len().min(keep - offset);
            assert!(got[..stable] == data[offset..offset + stable], "read {i}");
        }
        stop.store(true, Ordering::Relaxed);
    });
    assert_eq!(c.getattr(&g.handle).unwrap().size, size as u64);
}

#[test]
fn reads_end_exactly_over_shm() {
    let h = Harness::new();
    let mut c = h.client();
    reads_end_exactly(&h, &mut c);
}

#[test]
fn reads_end_exactly_over_tcp() {
    let (h, mut c) = tcp_with_secret("a shared secret for the read test");
    reads_end_exactly(&h, &mut c);
}
