//! The workloads, each run against one target directory with plain file calls, as an
//! application would.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::Instant;

use super::stop::check;

/// One measurement.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Workload {
    /// Sequential write of the whole file in blocks of this many bytes.
    SeqWrite(usize),
    /// Sequential read of the whole file in blocks of this many bytes.
    SeqRead(usize),
    /// Random 4 KiB reads.
    RandRead,
    /// Random 4 KiB writes.
    RandWrite,
    /// Creating small files (1 KiB each).
    Create,
    /// `stat` of each of them.
    Stat,
    /// Unlinking them.
    Unlink,
    /// Listing a large directory.
    Readdir,
}

/// Every workload, in the order a round runs them (create before stat before unlink).
pub const ALL: [Workload; 12] = [
    Workload::SeqWrite(4096),
    Workload::SeqWrite(128 << 10),
    Workload::SeqWrite(1 << 20),
    Workload::SeqRead(4096),
    Workload::SeqRead(128 << 10),
    Workload::SeqRead(1 << 20),
    Workload::RandRead,
    Workload::RandWrite,
    Workload::Create,
    Workload::Stat,
    Workload::Unlink,
    Workload::Readdir,
];

fn bs_name(bs: usize) -> String {
    if bs >= 1 << 20 {
        format!("{}m", bs >> 20)
    } else {
        format!("{}k", bs >> 10)
    }
}

impl Workload {
    /// Its key in the table and the JSON.
    pub fn key(&self) -> String {
        match self {
            Workload::SeqWrite(bs) => format!("seq_write_{}", bs_name(*bs)),
            Workload::SeqRead(bs) => format!("seq_read_{}", bs_name(*bs)),
            Workload::RandRead => "rand_read_4k".into(),
            Workload::RandWrite => "rand_write_4k".into(),
            Workload::Create => "create".into(),
            Workload::Stat => "stat".into(),
            Workload::Unlink => "unlink".into(),
            Workload::Readdir => "readdir".into(),
        }
    }

    /// What its figure counts.
    pub fn unit(&self) -> &'static str {
        match self {
            Workload::SeqWrite(_) | Workload::SeqRead(_) => "MB/s",
            Workload::Readdir => "entries/s",
            _ => "ops/s",
        }
    }
}

/// How big and how many.
#[derive(Clone, Copy, Debug)]
pub struct Params {
    /// Bytes in the sequential file.
    pub size: u64,
    /// Small files for create, stat and unlink.
    pub files: usize,
    /// Entries in the large directory.
    pub dir_entries: usize,
    /// Random operations per run.
    pub random_ops: usize,
    /// `fsync` after writing (included in the time).
    pub fsync: bool,
    /// Drop the page cache before each read (root only).
    pub cold: bool,
}

/// Lays out what the reads need (untimed): the data file and the large directory.
pub fn prepare(dir: &Path, p: &Params) -> io::Result<()> {
    let data = dir.join("data");
    if std::fs::metadata(&data).map(|m| m.len()).ok() != Some(p.size) {
        let mut f = File::create(&data)?;
        let block = pattern(1 << 20);
        let mut left = p.size;
        while left > 0 {
            check()?;
            let n = left.min(block.len() as u64) as usize;
            f.write_all(&block[..n])?;
            left -= n as u64;
        }
        f.sync_all()?;
    }
    let big = dir.join("big-dir");
    let have = std::fs::read_dir(&big).map(|d| d.count()).unwrap_or(0);
    if have != p.dir_entries {
        let _ = std::fs::remove_dir_all(&big);
        std::fs::create_dir_all(&big)?;
        for i in 0..p.dir_entries {
            check()?;
            File::create(big.join(format!("entry-{i:06}")))?;
        }
    }
    Ok(())
}

fn pattern(n: usize) -> Vec<u8> {
    (0..n)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect()
}

/// Drops the kernel's caches (the `cold` option).
pub fn drop_caches() -> io::Result<()> {
    nix::unistd::sync();
    std::fs::write("/proc/sys/vm/drop_caches", "3")
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// Runs `w` in `dir` once and returns its figure (in `w.unit()`) and the file bytes moved.
pub fn run(w: Workload, dir: &Path, p: &Params, round: usize) -> io::Result<(f64, u64)> {
    let meta = dir.join(format!("meta-{round}"));
    let files = || (0..p.files).map(|i| meta.join(format!("f{i:05}")));
    let rand_span = p.size.clamp(4096, 256 << 20) / 4096;
    if p.cold && matches!(w, Workload::SeqRead(_) | Workload::RandRead) {
        drop_caches()?;
    }
    // stat and unlink run on what create made; run alone, they make it first, untimed.
    if matches!(w, Workload::Stat | Workload::Unlink) && !meta.exists() {
        run(Workload::Create, dir, p, round)?;
    }
    let t = Instant::now();
    let (count, bytes) = match w {
        Workload::SeqWrite(bs) => {
            let path = dir.join("w");
            let block = pattern(bs);
            let mut f = File::create(&path)?;
            let mut left = p.size;
            while left > 0 {
                check()?;
                let n = left.min(bs as u64) as usize;
                f.write_all(&block[..n])?;
                left -= n as u64;
            }
            if p.fsync {
                f.sync_all()?;
            }
            drop(f);
            let secs = t.elapsed().as_secs_f64();
            std::fs::remove_file(&path)?;
            return Ok((p.size as f64 / 1e6 / secs, p.size));
        }
        Workload::SeqRead(bs) => {
            let mut f = File::open(dir.join("data"))?;
            let mut buf = vec![0u8; bs];
            let mut total = 0u64;
            loop {
                check()?;
                let n = f.read(&mut buf)?;
                if n == 0 {
                    break;
                }
                total += n as u64;
            }
            if total != p.size {
                return Err(io::Error::other(format!(
                    "read {total} bytes of a {}-byte file",
                    p.size
                )));
            }
            (total as f64 / 1e6, total)
        }
        Workload::RandRead => {
            let f = File::open(dir.join("data"))?;
            let mut buf = [0u8; 4096];
            let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ round as u64);
            for _ in 0..p.random_ops {
                check()?;
                f.read_exact_at(&mut buf, (rng.next() % rand_span) * 4096)?;
            }
            (p.random_ops as f64, p.random_ops as u64 * 4096)
        }
        Workload::RandWrite => {
            let f = OpenOptions::new().write(true).open(dir.join("data"))?;
            let buf = pattern(4096);
            let mut rng = Rng(0x2545_f491_4f6c_dd1d ^ round as u64);
            for _ in 0..p.random_ops {
                check()?;
                f.write_all_at(&buf, (rng.next() % rand_span) * 4096)?;
            }
            if p.fsync {
                f.sync_all()?;
            }
            (p.random_ops as f64, p.random_ops as u64 * 4096)
        }
        Workload::Create => {
            std::fs::create_dir_all(&meta)?;
            let body = pattern(1024);
            for path in files() {
                check()?;
                let mut f = File::create(path)?;
                f.write_all(&body)?;
                if p.fsync {
                    f.sync_all()?;
                }
            }
            (p.files as f64, 0)
        }
        Workload::Stat => {
            for path in files() {
                check()?;
                std::fs::metadata(path)?;
            }
            (p.files as f64, 0)
        }
        Workload::Unlink => {
            for path in files() {
                check()?;
                std::fs::remove_file(path)?;
            }
            std::fs::remove_dir(&meta)?;
            (p.files as f64, 0)
        }
        Workload::Readdir => {
            let mut n = 0usize;
            for e in std::fs::read_dir(dir.join("big-dir"))? {
                check()?;
                e?;
                n += 1;
            }
            (n as f64, 0)
        }
    };
    Ok((count / t.elapsed().as_secs_f64(), bytes))
}
