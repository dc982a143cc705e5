//! A Rust `std::net` program that knows nothing of VMMC: the wsping protocol (see
//! tests/c/wsping.c) over `TcpStream`, so the wrapper is tried on what Rust's standard library
//! calls (WSASocketW, connect, send, recv, setsockopt, shutdown) as well as on C programs.
//!
//! ```text
//! std_ping server PORT                 serve connections one at a time, forever
//! std_ping ping HOST:PORT ROUNDS SIZE  prints "rtt_us X"
//! std_ping bulk HOST:PORT MIB          prints "mib_per_s X"
//! ```

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::time::Instant;

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

fn pattern(i: u64) -> u8 {
    (i.wrapping_mul(31) ^ (i >> 12)) as u8
}

fn fnv(data: &[u8], mut h: u64) -> u64 {
    for b in data {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x100_0000_01b3);
    }
    h
}

const FNV_START: u64 = 0xcbf2_9ce4_8422_2325;

fn serve(mut s: TcpStream) -> Result<()> {
    let mut kind = [0u8; 1];
    s.read_exact(&mut kind)?;
    let mut buf = vec![0u8; 1 << 20];
    let (mut total, mut h) = (0u64, FNV_START);
    loop {
        let n = s.read(&mut buf)?;
        if n == 0 {
            break;
        }
        if kind[0] == b'E' {
            s.write_all(&buf[..n])?;
        } else {
            h = fnv(&buf[..n], h);
            total += n as u64;
        }
    }
    if kind[0] == b'S' {
        s.write_all(&[total.to_le_bytes(), h.to_le_bytes()].concat())?;
    }
    Ok(())
}

fn server(port: u16) -> Result<()> {
    let l = TcpListener::bind(("127.0.0.1", port))?;
    println!("listening {port}");
    std::io::stdout().flush()?;
    loop {
        let (s, _) = l.accept()?;
        if let Err(e) = serve(s) {
            eprintln!("std_ping: {e}");
        }
    }
}

fn dial(addr: &str) -> Result<TcpStream> {
    let s = TcpStream::connect(addr)?;
    s.set_nodelay(true)?;
    if s.peer_addr()?.to_string() != addr {
        return Err(format!("connected to {addr}, but the peer is {}", s.peer_addr()?).into());
    }
    Ok(s)
}

fn ping(addr: &str, rounds: u32, size: usize) -> Result<()> {
    let mut s = dial(addr)?;
    let msg: Vec<u8> = (0..size as u64).map(pattern).collect();
    let mut back = vec![0u8; size];
    s.write_all(b"E")?;
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
    let mut s = dial(addr)?;
    let chunk: Vec<u8> = (0..1u64 << 20).map(pattern).collect();
    s.write_all(b"S")?;
    let start = Instant::now();
    let mut h = FNV_START;
    for _ in 0..mib {
        s.write_all(&chunk)?;
        h = fnv(&chunk, h);
    }
    s.shutdown(Shutdown::Write)?;
    let mut answer = [0u8; 16];
    s.read_exact(&mut answer)?;
    let took = start.elapsed();
    let total = u64::from_le_bytes(answer[..8].try_into()?);
    let theirs = u64::from_le_bytes(answer[8..].try_into()?);
    if total != mib << 20 || theirs != h {
        return Err(format!("the sink got {total} bytes, not what was sent").into());
    }
    println!("mib_per_s {:.1}", mib as f64 / took.as_secs_f64());
    Ok(())
}

fn run(args: &[String]) -> Result<()> {
    let arg = |i: usize| args.get(i).map(String::as_str).ok_or("missing argument");
    match arg(1)? {
        "server" => server(arg(2)?.parse()?),
        "ping" => ping(arg(2)?, arg(3)?.parse()?, arg(4)?.parse()?),
        "bulk" => bulk(arg(2)?, arg(3)?.parse()?),
        other => Err(format!("unknown command {other:?} (server, ping, bulk)").into()),
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Err(e) = run(&args) {
        eprintln!("std_ping: {e}");
        std::process::exit(1);
    }
}
