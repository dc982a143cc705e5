//! Send slots filled from files (`SendSlot::fill_from_file`), over both backends: the bytes
//! land where they belong around what the slot's own buffer holds, a file's end shortens
//! them, a file that shrinks meanwhile leaves the stream in step, and on shm nobody in this
//! process copies them.

use std::io::Write;
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use test_support::{pattern, Backend};
use vmmc_sockets::{Counters, VmmcListener, VmmcStream};

test_support::both_backends!(
    file_bytes_land_between_header_and_trailer,
    a_file_that_shrinks_meanwhile_leaves_the_stream_in_step,
    slots_filled_from_files_are_not_copied,
);

const HEAD: &[u8] = b"head:";
const TAIL: &[u8] = b":tail";

fn pair(b: Backend) -> (VmmcStream, VmmcStream) {
    let l = VmmcListener::bind(&b.fresh_addr()).unwrap();
    let addr = l.local_addr().to_string();
    let t = std::thread::spawn(move || l.accept().unwrap().0);
    let c = VmmcStream::connect(&addr).unwrap();
    let s = t.join().unwrap();
    for x in [&c, &s] {
        x.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        x.set_write_timeout(Some(Duration::from_secs(20))).unwrap();
    }
    (c, s)
}

fn file_with(name: &str, b: Backend, body: &[u8]) -> (PathBuf, std::fs::File) {
    let path =
        std::env::temp_dir().join(format!("vmmc-sockets-{name}-{}-{b:?}", std::process::id()));
    std::fs::write(&path, body).unwrap();
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    (path, f)
}

/// Sends `HEAD`, up to `len` bytes of `f` from `offset`, then `TAIL`, as one message; returns
/// how many came from the file.
fn send_message(s: &VmmcStream, f: &std::fs::File, offset: u64, len: usize) -> usize {
    let total = HEAD.len() + len + TAIL.len();
    let mut slot = s.reserve_at_least(total, total).unwrap();
    slot.buf().unwrap().copy_from(HEAD);
    let n = slot
        .fill_from_file(HEAD.len(), f.as_fd(), offset, len)
        .unwrap();
    assert!(n <= len);
    let mut tail = slot.buf().unwrap();
    let mut at = tail.get_mut(HEAD.len() + n..).unwrap();
    at.copy_from(TAIL);
    slot.commit(HEAD.len() + n + TAIL.len()).unwrap();
    n
}

/// Receives one message of `n` file bytes, in place; returns them.
fn recv_message(r: &VmmcStream, n: usize) -> Vec<u8> {
    let total = HEAD.len() + n + TAIL.len();
    let slot = r.readable_at_least(total).unwrap();
    let all = slot.data().unwrap().get(..total).unwrap().to_vec();
    slot.consume(total).unwrap();
    assert_eq!(&all[..HEAD.len()], HEAD);
    assert_eq!(&all[HEAD.len() + n..], TAIL);
    all[HEAD.len()..HEAD.len() + n].to_vec()
}

fn file_bytes_land_between_header_and_trailer(b: Backend) {
    let (c, s) = pair(b);
    let size = (3 << 20) + 123;
    let body = pattern(11, 0, size);
    let (path, f) = file_with("land", b, &body);
    // Whole blocks, odd offsets (the ring wraps between them), the end of the file, past it,
    // and an empty range.
    let cases = [
        (0, 1 << 20, 1 << 20),
        (7, 1 << 20, 1 << 20),
        ((2 << 20) + 5, 777_777, 777_777),
        (size as u64 - 100, 1 << 20, 100),
        (size as u64, 4096, 0),
        (size as u64 + 5000, 4096, 0),
        (123, 0, 0),
    ];
    for round in 0..3 {
        for &(offset, len, want) in &cases {
            let n = send_message(&s, &f, offset, len);
            assert_eq!(n, want, "round {round}: {offset} {len}");
            let got = recv_message(&c, n);
            let o = (offset as usize).min(size);
            assert!(got == body[o..o + n], "round {round}: bytes at {offset}");
        }
    }
    // A fill beyond the slot is refused and leaves it usable.
    let mut slot = s.reserve_at_least(100, 100).unwrap();
    assert!(slot.fill_from_file(50, f.as_fd(), 0, 51).is_err());
    slot.buf().unwrap().copy_from(b"still");
    slot.commit(5).unwrap();
    let r = c.readable_at_least(5).unwrap();
    assert_eq!(r.data().unwrap().get(..5).unwrap().to_vec(), b"still");
    r.consume(5).unwrap();
    // A descriptor that is not a regular file reads as it would with `pread`.
    let dir = std::fs::File::open(std::env::temp_dir()).unwrap();
    let mut slot = s.reserve_at_least(100, 100).unwrap();
    assert_eq!(
        slot.fill_from_file(0, dir.as_fd(), 0, 10)
            .unwrap_err()
            .raw_os_error(),
        Some(libc_eisdir())
    );
    drop(slot);
    let _ = std::fs::remove_file(path);
}

fn libc_eisdir() -> i32 {
    21
}

fn a_file_that_shrinks_meanwhile_leaves_the_stream_in_step(b: Backend) {
    let (c, s) = pair(b);
    let size = 2 << 20;
    let keep = 300_000;
    let body = pattern(12, 0, size);
    let (path, f) = file_with("shrink", b, &body);
    let stop = AtomicBool::new(false);
    std::thread::scope(|sc| {
        // Cuts the file to `keep` bytes and writes it back, again and again.
        sc.spawn(|| {
            let mut w = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
            while !stop.load(Ordering::Relaxed) {
                w.set_len(keep as u64).unwrap();
                std::thread::sleep(Duration::from_micros(200));
                use std::io::{Seek, SeekFrom};
                w.seek(SeekFrom::Start(keep as u64)).unwrap();
                w.write_all(&body[keep..]).unwrap();
                std::thread::sleep(Duration::from_millis(2));
            }
        });
        let mut short = 0;
        for i in 0..300 {
            let offset = (i * 4099) % 200_000;
            let n = send_message(&s, &f, offset as u64, 1 << 20);
            let got = recv_message(&c, n);
            if n < 1 << 20 {
                short += 1;
            }
            // The bytes below the cut never change (on tcp those above it may read as zeros
            // where the cut fell inside a page in flight; on shm they are the file's as the
            // `pread` saw them).
            let stable = n.min(keep - offset);
            assert!(
                got[..stable] == body[offset..offset + stable],
                "message {i} at {offset}"
            );
        }
        stop.store(true, Ordering::Relaxed);
        // Both lengths were seen (the race happened), unless the machine is very slow.
        eprintln!("{short} of 300 messages were cut short");
    });
    // Still in step afterwards.
    let n = send_message(&s, &f, 0, 1000);
    assert!(recv_message(&c, n) == body[..n]);
    let _ = std::fs::remove_file(path);
}

fn slots_filled_from_files_are_not_copied(b: Backend) {
    let (c, s) = pair(b);
    let body = pattern(13, 0, 4 << 20);
    let (path, f) = file_with("copies", b, &body);
    let before = Counters::now();
    let mut moved = 0u64;
    for i in 0..16u64 {
        let offset = (i % 4) << 20;
        let n = send_message(&s, &f, offset, 1 << 20);
        assert_eq!(n, 1 << 20);
        let got = recv_message(&c, n);
        assert!(got == body[offset as usize..offset as usize + n]);
        moved += n as u64;
    }
    let d = Counters::now() - before;
    // Every byte went through the NIC…
    assert!(d.bytes_deposited >= moved, "{d:?}");
    // …and none was copied by this process's CPU: the kernel moved them from the page cache
    // (`pread` into the peer's ring on shm, `sendfile` on tcp). Other tests of this binary
    // may run meanwhile; what they copy is far below a percent of this.
    assert!(d.bytes_copied < moved / 100, "{d:?}");
    let _ = std::fs::remove_file(path);
}
