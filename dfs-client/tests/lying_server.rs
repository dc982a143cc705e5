//! A server that answers a read with more bytes than were asked for: the client must not
//! hand them to its caller (whose buffer was sized by what it asked), and the call fails.
//! It also sends notices larger than the protocol allows, which end the notice channel.
//!
//! The lying server is built here on a `VmmcListener`: it speaks the DFS handshake
//! (no secret) and answers every read of `len` bytes with a well-formed reply whose data
//! part is longer than `len`.

use std::io::{ErrorKind, Read, Write};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dfs_client::{CallError, Client, ConnectOptions, Connection};
use dfs_proto::codec;
use dfs_proto::frame::{FrameHeader, HEADER};
use dfs_proto::handle::FileHandle;
use dfs_proto::msg::{
    AuthMode, Body, ClientHello, ClientProof, Creds, Notice, Op, Reply, Request, ServerChallenge,
    ServerVerdict, MAX_NOTICE_ITEMS, PROTOCOL_VERSION,
};
use dfs_proto::Errno;
use vmmc_sockets::{VmmcListener, VmmcStream};

/// How long a call may take here (the clients' timeouts are shorter).
const LIMIT: Duration = Duration::from_secs(15);

fn read_frame(s: &VmmcStream) -> std::io::Result<(Vec<u8>, Vec<u8>)> {
    let mut r: &VmmcStream = s;
    let mut head = [0u8; HEADER];
    r.read_exact(&mut head)?;
    let h = FrameHeader::parse(&head)
        .map_err(|e| std::io::Error::new(ErrorKind::InvalidData, e))?
        .ok_or(ErrorKind::InvalidData)?;
    let mut meta = vec![0u8; h.meta_len as usize];
    r.read_exact(&mut meta)?;
    let mut data = vec![0u8; h.data_len as usize];
    r.read_exact(&mut data)?;
    Ok((meta, data))
}

fn write_frame<T: serde::Serialize>(s: &VmmcStream, msg: &T, data: &[u8]) -> std::io::Result<()> {
    let f = codec::frame_to_vec(msg, data).map_err(std::io::Error::other)?;
    let mut w: &VmmcStream = s;
    w.write_all(&f)
}

fn decode<T: serde::de::DeserializeOwned>(meta: &[u8]) -> std::io::Result<T> {
    codec::decode(meta).map_err(|e| std::io::Error::new(ErrorKind::InvalidData, e))
}

/// One connection: the handshake, then reads answered with `extra(len)` bytes.
fn serve(s: VmmcStream, extra: fn(u32) -> usize) -> std::io::Result<()> {
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    let (meta, _) = read_frame(&s)?;
    let _hello: ClientHello = decode(&meta)?;
    let challenge = ServerChallenge::Challenge {
        version: PROTOCOL_VERSION,
        server_nonce: [3; 32],
        auth: AuthMode::None,
    };
    write_frame(&s, &challenge, &[])?;
    let (meta, _) = read_frame(&s)?;
    let _proof: ClientProof = decode(&meta)?;
    let welcome = ServerVerdict::Welcome {
        root: FileHandle::new(vec![1; 8]).map_err(|_| ErrorKind::InvalidData)?,
        server_proof: [0; 32],
        read_only: false,
    };
    write_frame(&s, &welcome, &[])?;
    loop {
        let (meta, _) = read_frame(&s)?;
        let req: Request = decode(&meta)?;
        let (result, data) = match req.op {
            Op::Read { len, .. } => {
                let n = extra(len);
                (Ok(Body::Read { eof: false }), vec![0xEE; n])
            }
            Op::Subscribe => {
                let ok = Body::Subscribed {
                    local_changes: true,
                };
                write_frame(
                    &s,
                    &Reply {
                        id: req.id,
                        result: Ok(ok),
                    },
                    &[],
                )?;
                // A notice of more items than the protocol allows.
                let flood = Notice {
                    inodes: (0..MAX_NOTICE_ITEMS as u64 + 1).collect(),
                    ..Notice::default()
                };
                write_frame(&s, &flood, &[])?;
                continue;
            }
            _ => (Err(Errno(libc::ENOSYS)), vec![]),
        };
        write_frame(&s, &Reply { id: req.id, result }, &data)?;
    }
}

/// A lying server on a fresh address, answering until dropped.
struct Liar {
    addr: String,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Liar {
    fn start(extra: fn(u32) -> usize) -> Liar {
        static N: AtomicU32 = AtomicU32::new(0);
        let addr = format!(
            "shm:dfs-liar-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        let l = VmmcListener::bind(&addr).unwrap();
        l.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match l.accept() {
                        Ok((s, _)) => {
                            std::thread::spawn(move || {
                                let _ = serve(s, extra);
                            });
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(5)),
                    }
                }
            })
        };
        Liar {
            addr,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Liar {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn creds() -> Creds {
    Creds {
        uid: 0,
        gid: 0,
        groups: vec![],
    }
}

fn opts(copy_path: bool) -> ConnectOptions {
    let mut o = ConnectOptions::new().unwrap();
    o.timeout = Duration::from_secs(2);
    o.copy_path = copy_path;
    o
}

/// Ways to answer a read of `len` bytes with more.
const LIES: [fn(u32) -> usize; 3] = [
    |len| len as usize + 1,
    |len| 2 * len as usize + 7,
    |len| if len == 0 { 3 } else { 1 << 20 },
];

#[test]
fn a_connection_refuses_a_read_reply_longer_than_asked() {
    for (i, extra) in LIES.into_iter().enumerate() {
        let liar = Liar::start(extra);
        for copy_path in [false, true] {
            let mut c = Connection::connect(&liar.addr, &opts(copy_path)).unwrap();
            let root = c.root().clone();
            let mut handed = None;
            let t0 = Instant::now();
            let r = c.read_in_place(&creds(), root, None, 0, 100, |_, d| {
                handed = Some(d.len());
            });
            assert!(t0.elapsed() < LIMIT, "the read took {:?}", t0.elapsed());
            assert!(
                handed.is_none_or(|n| n <= 100),
                "lie {i} (copy path {copy_path}): {} bytes handed to the caller of a 100-byte read",
                handed.unwrap_or(0)
            );
            assert!(
                matches!(r, Err(CallError::Protocol(_))),
                "lie {i} (copy path {copy_path}): the read gave {r:?}"
            );
            assert!(c.is_broken(), "a connection that lied stays in use");
        }
    }
}

#[test]
fn a_client_read_answered_with_more_than_asked_fails_with_eio() {
    let liar = Liar::start(LIES[1]);
    let mut client = Client::connect(&liar.addr, opts(false)).unwrap();
    // A protocol error is not a server gone away: nothing to wait out.
    client.set_reconnect_for(Duration::from_secs(2));
    let root = client.root().clone();
    let mut most = 0;
    let t0 = Instant::now();
    let r = client.read_with(&creds(), &root, None, 0, 100, |d, _eof| {
        most = most.max(d.len());
        d.len()
    });
    let took = t0.elapsed();
    assert!(took < LIMIT, "the read took {took:?}");
    assert!(
        most <= 100,
        "{most} bytes handed to the caller of a 100-byte read"
    );
    assert_eq!(r, Err(Errno::EIO), "after {took:?}");
    // The copying form, as used by every caller that wants a vector.
    assert_eq!(
        client.read(&creds(), &root, None, 0, 100).map(|v| v.len()),
        Err(Errno::EIO)
    );
}

#[test]
fn replies_of_at_most_the_asked_length_still_pass() {
    // The check is not off by one: exactly the asked length, and less, are fine.
    let liar = Liar::start(|len| len as usize);
    let mut c = Connection::connect(&liar.addr, &opts(false)).unwrap();
    let root = c.root().clone();
    let n = c
        .read_in_place(&creds(), root, None, 0, 100, |_, d| d.len())
        .unwrap();
    assert_eq!(n, 100);
    let short = Liar::start(|len| (len as usize).saturating_sub(1));
    let mut c = Connection::connect(&short.addr, &opts(true)).unwrap();
    let root = c.root().clone();
    let n = c
        .read_in_place(&creds(), root, None, 0, 100, |_, d| d.len())
        .unwrap();
    assert_eq!(n, 99);
}

#[test]
fn a_notice_larger_than_the_protocol_allows_ends_the_channel() {
    let liar = Liar::start(LIES[0]);
    let client = Client::connect(&liar.addr, opts(false)).unwrap();
    let notices = client.subscribe().unwrap();
    assert!(notices.local_changes());
    let t0 = Instant::now();
    let r = notices.next();
    assert!(t0.elapsed() < LIMIT);
    assert!(matches!(r, Err(CallError::Protocol(_))), "{r:?}");
}
