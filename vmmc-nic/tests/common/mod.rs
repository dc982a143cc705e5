//! Test harness: real child processes that play one side of a VMMC exchange.
//!
//! The test binary re-executes itself to run [`child_process`], which reads commands on
//! stdin and answers on stdout with lines that start with `@@ ` (libtest prints its own
//! lines too). Every child is killed when its [`Peer`] is dropped, also when a test fails,
//! and every wait for an answer has a timeout.

#![allow(dead_code)]

use std::time::Duration;

use test_support::say;

use vmmc_nic::{
    Access, Counters, Endpoint, Export, Import, NodeAddr, Notify, PeerMatch, Permissions, Wake,
};

pub use test_support::Peer;

/// This module's child entry, as the test harness names it.
const ENTRY: &str = "common::child_process";

pub use test_support::Backend;

/// A fresh address for `b`, parsed.
pub fn fresh(b: Backend) -> NodeAddr {
    b.fresh_addr().parse().unwrap()
}

/// Spawns an exporting child; returns it with its address and export id.
pub fn spawn_exporter(
    backend: Backend,
    len: u64,
    perms: &str,
) -> (Peer, NodeAddr, vmmc_nic::ExportId) {
    spawn_mirrored_exporter(backend, len, 0, perms)
}

/// As [`spawn_exporter`], with the last `mirror` bytes mapped twice.
pub fn spawn_mirrored_exporter(
    backend: Backend,
    len: u64,
    mirror: u64,
    perms: &str,
) -> (Peer, NodeAddr, vmmc_nic::ExportId) {
    let addr = backend.fresh_addr();
    let (peer, ready) = Peer::spawn(
        ENTRY,
        &[
            "export",
            &addr,
            &len.to_string(),
            perms,
            &mirror.to_string(),
        ],
    );
    let mut parts = ready.split(' ');
    assert_eq!(parts.next(), Some("READY"), "exporter said {ready}");
    let addr = parts.next().unwrap().parse().unwrap();
    let id = parts.next().unwrap().parse().unwrap();
    (peer, addr, id)
}

/// Spawns an importing child; returns it and its first answer (`READY len` or `ERR ...`).
pub fn spawn_importer(addr: &NodeAddr, id: vmmc_nic::ExportId, access: &str) -> (Peer, String) {
    spawn_greeting_importer(addr, id, access, b"")
}

/// As [`spawn_importer`], attaching `greeting` to the import request.
pub fn spawn_greeting_importer(
    addr: &NodeAddr,
    id: vmmc_nic::ExportId,
    access: &str,
    greeting: &[u8],
) -> (Peer, String) {
    Peer::spawn(
        ENTRY,
        &[
            "import",
            &addr.to_string(),
            &id.get().to_string(),
            access,
            &hex_encode(greeting),
        ],
    )
}

pub use test_support::{fnv, pattern, FNV_START};

pub fn access_of(s: &str) -> Access {
    match s {
        "deposit" => Access::DEPOSIT,
        "fetch" => Access::FETCH,
        "all" => Access::ALL,
        other => panic!("unknown access {other}"),
    }
}

pub fn permissions_of(s: &str) -> Permissions {
    match s {
        "open" => Permissions::open(),
        "none" => Permissions::none(),
        "deposit" => Permissions::none().allow(Access::DEPOSIT, PeerMatch::Any),
        "fetch" => Permissions::none().allow(Access::FETCH, PeerMatch::Any),
        other => panic!("unknown permissions {other}"),
    }
}

/// The child's side of a test: an export or an import.
enum Side {
    Export(#[allow(dead_code)] Endpoint, Export),
    Import(Import),
    /// An export taken over from another process (no endpoint of its own).
    Adopted(Export),
}

const CHUNK: usize = 1 << 20;

/// Runs one command against the child's side; `Err` is printed as `ERR ...`.
fn run_command(side: &Side, words: &[&str]) -> Result<String, String> {
    let num = |i: usize| -> u64 { words.get(i).and_then(|w| w.parse().ok()).unwrap_or(0) };
    let notify = if words.last() == Some(&"n") {
        Notify::Yes
    } else {
        Notify::No
    };
    let e = |e: vmmc_nic::Error| e.to_string();
    match (words.first().copied().unwrap_or(""), side) {
        ("write", Side::Import(i)) => i
            .write_at(num(1), &hex_decode(words[2]), notify)
            .map_err(e)?,
        ("write", Side::Export(_, x) | Side::Adopted(x)) => {
            x.write_at(num(1), &hex_decode(words[2])).map_err(e)?
        }
        ("fill", side) => {
            let (off, len, seed) = (num(1), num(2), num(3));
            let mut at = off;
            while at < off + len {
                let n = CHUNK.min((off + len - at) as usize);
                let data = pattern(seed, at, n);
                match side {
                    Side::Import(i) => i.write_at(at, &data, Notify::No).map_err(e)?,
                    Side::Export(_, x) | Side::Adopted(x) => x.write_at(at, &data).map_err(e)?,
                }
                at += n as u64;
            }
            if let (Side::Import(i), Notify::Yes) = (side, notify) {
                i.write_at(0, &[], Notify::Yes).map_err(e)?;
            }
        }
        ("read", side) => {
            let mut buf = vec![0u8; num(2) as usize];
            match side {
                Side::Import(i) => i.read_at(num(1), &mut buf).map_err(e)?,
                Side::Export(_, x) | Side::Adopted(x) => x.read_at(num(1), &mut buf).map_err(e)?,
            }
            return Ok(hex_encode(&buf));
        }
        ("sum", side) => {
            let (off, len) = (num(1), num(2));
            let mut h = FNV_START;
            let mut at = off;
            let mut buf = vec![0u8; CHUNK];
            while at < off + len {
                let n = CHUNK.min((off + len - at) as usize);
                match side {
                    Side::Import(i) => i.read_at(at, &mut buf[..n]).map_err(e)?,
                    Side::Export(_, x) | Side::Adopted(x) => {
                        x.read_at(at, &mut buf[..n]).map_err(e)?
                    }
                }
                h = fnv(&buf[..n], h);
                at += n as u64;
            }
            return Ok(h.to_string());
        }
        ("depfile", Side::Import(i)) => {
            // depfile PATH FILE_OFFSET REGION_OFFSET LEN: bytes that came from the file.
            let f = std::fs::File::open(words[1]).map_err(|e| e.to_string())?;
            use std::os::fd::AsFd;
            return i
                .deposit_from_file(num(3), f.as_fd(), num(2), num(4) as usize)
                .map(|n| n.to_string())
                .map_err(e);
        }
        ("store", Side::Import(i)) => i.store_u64(num(1), num(2), notify).map_err(e)?,
        ("store", Side::Export(_, x) | Side::Adopted(x)) => {
            x.store_u64(num(1), num(2)).map_err(e)?
        }
        ("load", Side::Import(i)) => return i.load_u64(num(1)).map(|v| v.to_string()).map_err(e),
        ("load", Side::Export(_, x) | Side::Adopted(x)) => {
            return x.load_u64(num(1)).map(|v| v.to_string()).map_err(e)
        }
        ("wait", Side::Export(_, x) | Side::Adopted(x)) => {
            return match x.wait(Duration::from_millis(num(1))).map_err(e)? {
                Wake::Notified => Ok("notified".into()),
                Wake::ImporterLeft => Ok("left".into()),
            }
        }
        ("importers", Side::Export(_, x) | Side::Adopted(x)) => {
            return Ok(x.importers().to_string())
        }
        ("alive", Side::Import(i)) => return Ok(i.is_alive().to_string()),
        ("exporter", Side::Import(i)) => return Ok(format!("{:?}", i.exporter())),
        ("counters", _) => {
            let c = Counters::now();
            return Ok(format!(
                "{} {} {}",
                c.bytes_deposited, c.bytes_fetched, c.bytes_copied
            ));
        }
        ("deposit-until-error", Side::Import(i)) => {
            let data = vec![7u8; 4096.min(i.len() as usize)];
            let t0 = std::time::Instant::now();
            while t0.elapsed() < Duration::from_secs(30) {
                if let Err(err) = i.write_at(0, &data, Notify::No) {
                    return Err(err.to_string());
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            return Ok("still alive after 30 s".into());
        }
        ("exit", _) => std::process::exit(0),
        (other, _) => return Err(format!("unknown command {other}")),
    }
    Ok(String::new())
}

fn hex_decode(s: &str) -> Vec<u8> {
    (0..s.len() / 2)
        .map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap())
        .collect()
}

pub fn hex_encode(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn run_child(role: &[String]) {
    let args: Vec<&str> = role.iter().map(String::as_str).collect();
    let side = match args[..] {
        ["export", addr, len, perms, mirror] => {
            let ep = match Endpoint::bind(&addr.parse().unwrap()) {
                Ok(ep) => ep,
                Err(err) => return say(format!("ERR {err}")),
            };
            let x = ep
                .export_mirrored(
                    len.parse().unwrap(),
                    mirror.parse().unwrap(),
                    permissions_of(perms),
                )
                .unwrap();
            say(format!("READY {} {}", ep.addr(), x.id().get()));
            Side::Export(ep, x)
        }
        ["import", addr, id, access, greeting] | ["import", addr, id, access, greeting, _] => {
            let key = args.get(5).map(|k| {
                let mut b = [0u8; vmmc_nic::KEY_LEN];
                b.copy_from_slice(&hex_decode(k));
                vmmc_nic::ImportKey::from_bytes(b)
            });
            let opts = vmmc_nic::ImportOptions {
                greeting: hex_decode(greeting),
                key,
                ..Default::default()
            };
            match Import::open_with(
                &addr.parse().unwrap(),
                id.parse().unwrap(),
                access_of(access),
                &opts,
            ) {
                Ok(i) => {
                    say(format!("READY {}", i.len()));
                    Side::Import(i)
                }
                Err(err) => return say(format!("ERR {err}")),
            }
        }
        ["adopt", sock] => {
            // Take over whatever the parent hands this process, then serve commands on it.
            use std::os::linux::net::SocketAddrExt;
            let sa = std::os::unix::net::SocketAddr::from_abstract_name(sock).unwrap();
            let l = std::os::unix::net::UnixListener::bind_addr(&sa).unwrap();
            say("READY");
            let (s, _) = l.accept().unwrap();
            let (_, mut exports, mut imports) = vmmc_nic::recv_handover(&s).unwrap();
            let side = if let Some(x) = exports.pop() {
                Side::Adopted(Export::adopt(x).unwrap())
            } else {
                Side::Import(Import::adopt(imports.pop().unwrap()).unwrap())
            };
            say("ADOPTED");
            side
        }
        ["greet-flood", addr, id, n] => {
            // Imports carrying a greeting, held, until refused or `n` are held.
            let opts = vmmc_nic::ImportOptions {
                greeting: b"g".to_vec(),
                ..Default::default()
            };
            let addr: NodeAddr = addr.parse().unwrap();
            let mut held = Vec::new();
            let mut refusal = String::from("none");
            for _ in 0..n.parse::<usize>().unwrap() {
                match Import::open_with(&addr, id.parse().unwrap(), Access::DEPOSIT, &opts) {
                    Ok(i) => held.push(i),
                    Err(e) => {
                        refusal = format!("{e:?}");
                        break;
                    }
                }
            }
            say(format!("HELD {} {refusal}", held.len()));
            let _ = test_support::commands().count();
            return;
        }
        _ => panic!("bad child role {args:?}"),
    };
    for line in test_support::commands() {
        let words: Vec<&str> = line.split_whitespace().collect();
        match run_command(&side, &words) {
            Ok(out) => say(format!("OK {out}")),
            Err(err) => say(format!("ERR {err}")),
        }
    }
}

test_support::child_entry!(run_child);
