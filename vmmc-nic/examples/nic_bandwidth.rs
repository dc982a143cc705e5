//! Deposit bandwidth of both backends next to their physical baselines, measured in one run.
//!
//! `cargo run --release -p vmmc-nic --example nic_bandwidth [-- --rounds N --mib M]`
//!
//! * shm deposit vs `memcpy` of the same blocks into the same amount of memory: the emulated
//!   DMA is one copy, so the ratio should be close to 1;
//! * tcp deposit vs a plain kernel TCP loopback stream moving the same blocks into a buffer.
//!
//! Targets run interleaved over several rounds and the median is reported, because absolute
//! figures on a shared 2-core machine wander while ratios hold. The receiving side runs in a
//! thread of this process; on shm it does no work per deposit, on tcp it is the exporter's own
//! connection thread.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use vmmc_nic::{Access, Counters, Endpoint, Import, Notify, Permissions};

const BLOCK: usize = 1 << 20;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let opt = |name: &str, default: usize| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    if args.iter().any(|a| a == "--help" || a == "-h") {
        println!(
            "usage: nic_bandwidth [--rounds N (default 7)] [--mib M per round (default 1024)]"
        );
        return Ok(());
    }
    let rounds = opt("--rounds", 7);
    let total = opt("--mib", 1024) * BLOCK;
    let region_len = 64 * BLOCK;
    let block = vec![0xA5u8; BLOCK];

    // shm: one import into a 64 MiB region, written round-robin.
    let shm_ep = Endpoint::bind(&format!("shm:nic-bw-{}", std::process::id()).parse()?)?;
    let shm_x = shm_ep.export(region_len as u64, Permissions::open())?;
    let shm = Import::open(shm_ep.addr(), shm_x.id(), Access::DEPOSIT)?;
    // tcp: the same over loopback; the last deposit of a round notifies, so the round ends
    // when everything has landed.
    let tcp_ep = Endpoint::bind(&"tcp:127.0.0.1:0".parse()?)?;
    let tcp_x = tcp_ep.export(region_len as u64, Permissions::open())?;
    let tcp = Import::open(tcp_ep.addr(), tcp_x.id(), Access::DEPOSIT)?;
    let mut dst = vec![0u8; region_len];

    let mut memcpy_gbps = Vec::new();
    let mut shm_gbps = Vec::new();
    let mut tcp_gbps = Vec::new();
    let mut kernel_gbps = Vec::new();
    let mut shm_copies = Counters::default();
    for _ in 0..rounds {
        let t = Instant::now();
        for i in 0..total / BLOCK {
            let at = (i * BLOCK) % region_len;
            dst[at..at + BLOCK].copy_from_slice(std::hint::black_box(&block));
        }
        std::hint::black_box(&dst);
        memcpy_gbps.push(gbps(total, t.elapsed()));

        let before = Counters::now();
        let t = Instant::now();
        for i in 0..total / BLOCK {
            shm.write_at(((i * BLOCK) % region_len) as u64, &block, Notify::No)?;
        }
        shm_gbps.push(gbps(total, t.elapsed()));
        shm_copies = Counters::now() - before;

        let t = Instant::now();
        let n = total / BLOCK;
        for i in 0..n {
            let notify = if i + 1 == n { Notify::Yes } else { Notify::No };
            tcp.write_at(((i * BLOCK) % region_len) as u64, &block, notify)?;
        }
        tcp_x.wait(Duration::from_secs(60))?;
        tcp_gbps.push(gbps(total, t.elapsed()));

        kernel_gbps.push(kernel_tcp(total, &block)?);
    }
    let (m, s, t, k) = (
        median(&mut memcpy_gbps),
        median(&mut shm_gbps),
        median(&mut tcp_gbps),
        median(&mut kernel_gbps),
    );
    println!(
        "{rounds} rounds of {} MiB in 1 MiB blocks, medians:",
        total / BLOCK
    );
    println!("  memcpy               {m:6.2} GB/s");
    println!(
        "  vmmc shm deposit     {s:6.2} GB/s   ratio to memcpy      {:.2}",
        s / m
    );
    println!("  kernel TCP loopback  {k:6.2} GB/s");
    println!(
        "  vmmc tcp deposit     {t:6.2} GB/s   ratio to kernel TCP  {:.2}",
        t / k
    );
    println!(
        "  shm software copies per deposited byte: {:.3} ({} copied / {} deposited)",
        shm_copies.copies_per_byte(),
        shm_copies.bytes_copied,
        shm_copies.bytes_deposited
    );
    Ok(())
}

/// Streams `total` bytes over a fresh loopback connection into a 64 MiB buffer.
fn kernel_tcp(total: usize, block: &[u8]) -> std::io::Result<f64> {
    let l = TcpListener::bind("127.0.0.1:0")?;
    let addr = l.local_addr()?;
    let reader = std::thread::spawn(move || -> std::io::Result<()> {
        let (mut s, _) = l.accept()?;
        let mut buf = vec![0u8; 64 * BLOCK];
        let mut got = 0;
        while got < total {
            let at = got % buf.len();
            let end = buf.len().min(at + BLOCK);
            let n = s.read(&mut buf[at..end])?;
            if n == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            got += n;
        }
        s.write_all(b"k")
    });
    let mut s = TcpStream::connect(addr)?;
    s.set_nodelay(true)?;
    let t = Instant::now();
    for _ in 0..total / BLOCK {
        s.write_all(block)?;
    }
    let mut ack = [0u8; 1];
    s.read_exact(&mut ack)?;
    let elapsed = t.elapsed();
    reader
        .join()
        .map_err(|_| std::io::Error::other("reader panicked"))??;
    Ok(gbps(total, elapsed))
}

fn gbps(bytes: usize, d: Duration) -> f64 {
    bytes as f64 / d.as_secs_f64() / 1e9
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}
