//! One end of a VMMC sockets connection, for tests and figures across systems (a Windows
//! build under Wine against a Linux one over tcp, say).
//!
//! ```text
//! echo_peer listen ADDR              serve connections one at a time, forever
//! echo_peer ping ADDR ROUNDS SIZE    ROUNDS round trips of SIZE bytes; prints "rtt_us X"
//! echo_peer bulk ADDR MIB            sends MIB MiB; prints "mib_per_s X"
//! ```
//!
//! `listen` prints `listening ADDR` (the real port for `tcp:...:0`) once it listens. A
//! client's first byte picks the service: `E` echoes every byte back; `S` swallows bytes up to
//! the end of the stream, then answers with their count and a hash of them, which the client
//! checks. Every failure is an error message and exit status 1.

use std::io::{Read, Write};
use std::time::Instant;

use vmmc_sockets::{VmmcListener, VmmcStream};

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

/// FNV-1a, enough to tell a byte out of place.
fn fnv(data: &[u8], mut h: u64) -> u64 {
    for b in data {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x100_0000_01b3);
    }
    h
}

const FNV_START: u64 = 0xcbf2_9ce4_8422_2325;

/// The byte at `i` of the bulk stream.
fn pattern(i: u64) -> u8 {
    (i.wrapping_mul(31) ^ (i >> 12)) as u8
}

fn serve(mut s: VmmcStream) -> Result<()> {
    let mut kind = [0u8; 1];
    s.read_exact(&mut kind)?;
    let mut buf = vec![0u8; 1 << 20];
    match kind[0] {
        b'E' => loop {
            let n = s.read(&mut buf)?;
            if n == 0 {
                return Ok(());
            }
            s.write_all(&buf[..n])?;
        },
        b'S' => {
            let (mut total, mut h) = (0u64, FNV_START);
            loop {
                let n = s.read(&mut buf)?;
                if n == 0 {
                    break;
                }
                h = fnv(&buf[..n], h);
                total += n as u64;
            }
            let mut answer = [0u8; 16];
            answer[..8].copy_from_slice(&total.to_le_bytes());
            answer[8..].copy_from_slice(&h.to_le_bytes());
            s.write_all(&answer)?;
            Ok(())
        }
        k => Err(format!("unknown service {k:#x}").into()),
    }
}

fn listen(addr: &str) -> Result<()> {
    let l = VmmcListener::bind(addr)?;
    println!("listening {}", l.local_addr());
    std::io::stdout().flush()?;
    loop {
        let (s, who) = l.accept()?;
        if let Err(e) = serve(s) {
            eprintln!("echo_peer: connection from {who}: {e}");
        }
    }
}

fn ping(addr: &str, rounds: u32, size: usize) -> Result<()> {
    let mut s = VmmcStream::connect(addr)?;
    s.write_all(b"E")?;
    let msg: Vec<u8> = (0..size as u64).map(pattern).collect();
    let mut back = vec![0u8; size];
    // One round first: connection set-up costs are not round trips.
    s.write_all(&msg)?;
    s.read_exact(&mut back)?;
    let start = Instant::now();
    for _ in 0..rounds {
        s.write_all(&msg)?;
        s.read_exact(&mut back)?;
    }
    let took = start.elapsed();
    if back != msg {
        return Err("the echo differs from what was sent".into());
    }
    println!(
        "rtt_us {:.2}",
        took.as_secs_f64() * 1e6 / f64::from(rounds.max(1))
    );
    Ok(())
}

fn bulk(addr: &str, mib: u64) -> Result<()> {
    let mut s = VmmcStream::connect(addr)?;
    s.write_all(b"S")?;
    let chunk: Vec<u8> = (0..1u64 << 20).map(pattern).collect();
    let start = Instant::now();
    let mut h = FNV_START;
    for _ in 0..mib {
        s.write_all(&chunk)?;
        h = fnv(&chunk, h);
    }
    s.shutdown(std::net::Shutdown::Write)?;
    let mut answer = [0u8; 16];
    s.read_exact(&mut answer)?;
    let took = start.elapsed();
    let total = u64::from_le_bytes(answer[..8].try_into()?);
    let their = u64::from_le_bytes(answer[8..].try_into()?);
    if total != mib << 20 || their != h {
        return Err(
            format!("the sink got {total} bytes (hash {their:#x}), not what was sent").into(),
        );
    }
    println!("mib_per_s {:.1}", mib as f64 / took.as_secs_f64());
    Ok(())
}

fn run(args: &[String]) -> Result<()> {
    let arg = |i: usize| args.get(i).map(String::as_str).ok_or("missing argument");
    match arg(1)? {
        "listen" => listen(arg(2)?),
        "ping" => ping(arg(2)?, arg(3)?.parse()?, arg(4)?.parse()?),
        "bulk" => bulk(arg(2)?, arg(3)?.parse()?),
        other => Err(format!("unknown command {other:?} (listen, ping, bulk)").into()),
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Err(e) = run(&args) {
        eprintln!("echo_peer: {e}");
        std::process::exit(1);
    }
}
