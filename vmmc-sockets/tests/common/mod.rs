//! Children that play one end of a vmmc-sockets connection, driven by the test.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::Shutdown;

use test_support::say;
pub use test_support::Peer;
use vmmc_sockets::{RingSize, StreamOptions, VmmcListener, VmmcStream};

const ENTRY: &str = "common::child_process";

pub use test_support::Backend;

pub use test_support::{fnv, pattern, FNV_START};

pub fn small_ring() -> StreamOptions {
    StreamOptions {
        ring: RingSize::new(64 * 1024).unwrap(),
        ..StreamOptions::default()
    }
}

/// A child listening at a fresh address; returns it and the address to connect to.
pub fn spawn_server(b: Backend, ring: u64) -> (Peer, String) {
    let (p, ready) = Peer::spawn(ENTRY, &["server", &b.fresh_addr(), &ring.to_string()]);
    let addr = ready
        .strip_prefix("READY ")
        .unwrap_or_else(|| panic!("server said {ready}"))
        .to_owned();
    (p, addr)
}

/// A child connected to `addr`.
pub fn spawn_client(addr: &str, ring: u64) -> (Peer, String) {
    Peer::spawn(ENTRY, &["client", addr, &ring.to_string()])
}

fn opts(ring: &str) -> StreamOptions {
    StreamOptions {
        ring: RingSize::new(ring.parse().unwrap()).unwrap(),
        ..StreamOptions::default()
    }
}

fn run(
    stream: &mut Option<VmmcStream>,
    listener: Option<&VmmcListener>,
    words: &[&str],
) -> Result<String, String> {
    let num = |i: usize| -> u64 { words.get(i).and_then(|w| w.parse().ok()).unwrap_or(0) };
    let e = |e: std::io::Error| format!("{:?}: {e}", e.kind());
    if words.first() == Some(&"accept") {
        let (s, who) = listener.ok_or("not a server")?.accept().map_err(e)?;
        *stream = Some(s);
        return Ok(format!("{who}"));
    }
    if words.first() == Some(&"close") {
        *stream = None;
        return Ok(String::new());
    }
    if words.first() == Some(&"handto") {
        use std::os::linux::net::SocketAddrExt;
        let s = stream.take().ok_or("no connection")?;
        let sa = std::os::unix::net::SocketAddr::from_abstract_name(words[1]).map_err(e)?;
        let via = std::os::unix::net::UnixStream::connect_addr(&sa).map_err(e)?;
        s.send_to(&via).map_err(e)?;
        return Ok(String::new());
    }
    let s = stream.as_ref().ok_or("no connection")?;
    match words.first().copied().unwrap_or("") {
        "send" => {
            (&*s)
                .write_all(&pattern(num(2), 0, num(1) as usize))
                .map_err(e)?;
        }
        "send-ptr" => {
            let data = pattern(num(2), 0, num(1) as usize);
            let mut at = 0;
            while at < data.len() {
                let mut slot = s.reserve(data.len() - at).map_err(e)?;
                let n = slot.len();
                slot.buf().map_err(e)?.copy_from(&data[at..at + n]);
                slot.commit(n).map_err(e)?;
                at += n;
            }
        }
        "recv" => {
            let mut buf = vec![0u8; num(1) as usize];
            (&*s).read_exact(&mut buf).map_err(e)?;
            return Ok(fnv(&buf, FNV_START).to_string());
        }
        "recv-ptr" => {
            let mut left = num(1) as usize;
            let mut h = FNV_START;
            while left > 0 {
                let slot = s.readable().map_err(e)?;
                if slot.is_empty() {
                    return Err("early EOF".into());
                }
                let n = slot.len().min(left);
                let got = slot.data().map_err(e)?.get(..n).map(|d| d.to_vec());
                h = fnv(&got.ok_or("a short slot")?, h);
                slot.consume(n).map_err(e)?;
                left -= n;
            }
            return Ok(h.to_string());
        }
        "drain" => {
            let mut all = Vec::new();
            (&*s).read_to_end(&mut all).map_err(e)?;
            return Ok(format!("{} {}", all.len(), fnv(&all, FNV_START)));
        }
        "echo" => {
            let mut buf = vec![0u8; 100_000];
            let mut total = 0;
            loop {
                let n = (&*s).read(&mut buf).map_err(e)?;
                if n == 0 {
                    break;
                }
                (&*s).write_all(&buf[..n]).map_err(e)?;
                total += n;
            }
            s.shutdown(Shutdown::Write).map_err(e)?;
            return Ok(total.to_string());
        }
        "shutdown" => {
            let how = match words.get(1).copied() {
                Some("rd") => Shutdown::Read,
                Some("wr") => Shutdown::Write,
                _ => Shutdown::Both,
            };
            s.shutdown(how).map_err(e)?;
        }
        "urgent" => s.send_urgent(num(1) as u8).map_err(e)?,
        "exit" => std::process::exit(0),
        other => return Err(format!("unknown command {other}")),
    }
    Ok(String::new())
}

fn run_child(role: &[String]) {
    let args: Vec<&str> = role.iter().map(String::as_str).collect();
    let mut stream = None;
    let listener = match args[..] {
        ["server", addr, ring] => match VmmcListener::bind_with(addr, opts(ring)) {
            Ok(l) => {
                say(format!("READY {}", l.local_addr()));
                Some(l)
            }
            Err(err) => return say(format!("ERR {err}")),
        },
        ["client", addr, ring] => match VmmcStream::connect_with(addr, &opts(ring)) {
            Ok(s) => {
                say("READY");
                stream = Some(s);
                None
            }
            Err(err) => return say(format!("ERR {:?}: {err}", err.kind())),
        },
        ["adopt", name] => {
            use std::os::linux::net::SocketAddrExt;
            let sa = std::os::unix::net::SocketAddr::from_abstract_name(name).unwrap();
            let l = std::os::unix::net::UnixListener::bind_addr(&sa).unwrap();
            say("READY");
            let (via, _) = l.accept().unwrap();
            match VmmcStream::receive_from(&via) {
                Ok(s) => {
                    stream = Some(s);
                    say("ADOPTED");
                }
                Err(err) => return say(format!("ERR {err}")),
            }
            None
        }
        _ => panic!("bad role {args:?}"),
    };
    for line in test_support::commands() {
        let words: Vec<&str> = line.split_whitespace().collect();
        match run(&mut stream, listener.as_ref(), &words) {
            Ok(out) => say(format!("OK {out}")),
            Err(err) => say(format!("ERR {err}")),
        }
    }
}

test_support::child_entry!(run_child);
