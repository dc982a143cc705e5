//! Chaos peers against a real `dfs-server`: no peer action may panic the server, hang it,
//! leak what a connection held, or hurt any other connection.
//!
//! The victim is the `dfs-server` binary serving an export. Honest clients
//! ([`dfs_client::Connection`]) run requests all along (create, write, read back, readdir,
//! getattr, release, unlink) and check every answer. Chaos peers, in child processes, connect
//! as clients do, speaking the vmmc-sockets connect handshake and the DFS protocol by hand
//! with raw vmmc-nic calls, and then, at random moments: rewrite the indices in the server's
//! ring header with adversarial values, scribble into the server's ring, send partial and
//! malformed frames, drop their import of the server's ring and import it again (with the
//! key), revoke their own ring (also while the server holds a reservation in it, waiting to
//! write a reply), stop reading replies, and SIGKILL themselves mid-request; the test starts
//! a new chaos peer whenever one dies.
//!
//! What must hold: the server stays up and stops cleanly (exit 0 on SIGTERM) with no
//! "panicked" on its stderr; every honest request succeeds within a timeout; once the chaos
//! peers are gone, the files the server holds open in the export, its threads and its
//! descriptors come back to what the honest clients account for.
//!
//! A seeded PRNG drives every choice; the seed is printed (`CHAOS_SEED=… cargo test …`
//! repeats the same choices; timing still varies). `CHAOS_SECS` changes how long the chaos
//! lasts.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{channel, Receiver};
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

use dfs_client::{ConnectOptions, Connection};
use dfs_proto::codec;
use dfs_proto::frame::{FrameHeader, HEADER as FRAME_HEADER, MAX_DATA, MAX_META};
use dfs_proto::handle::{FileHandle, OpenId};
use dfs_proto::msg::{
    Body, ClientHello, ClientProof, Creds, Op, OpenFlags, Reply, Request, ServerChallenge,
    ServerVerdict, MAGIC, PROTOCOL_VERSION,
};
use dfs_proto::name::Name;
use test_support::Backend;
use vmmc_nic::{
    Access, Endpoint, Export, ExportId, Import, ImportKey, ImportOptions, NodeAddr, Notify,
    Permissions,
};

// ---- The ring layout and connect request, as vmmc-sockets documents them. ----

const RING_HEADER: u64 = 4096;
const PEER_WRITE: u64 = 0;
const PEER_FIN: u64 = 8;
const PEER_CREDIT: u64 = 16;
const PEER_RDSHUT: u64 = 24;
const PEER_WAITING: u64 = 32;
const PEER_URGENT: u64 = 40;
const ACCEPT_STATE: u64 = 64;
const ACCEPT_EXPORT: u64 = 72;
const ACCEPT_RING: u64 = 80;
const ACCEPT_KEY: u64 = 88;
const ACCEPTED: u64 = 1;

/// How long the chaos lasts, unless `CHAOS_SECS` says otherwise.
const CHAOS: Duration = Duration::from_secs(12);
/// Chaos peers at once.
const CHAOS_PEERS: usize = 3;
/// Honest clients at once.
const HONEST: usize = 2;
/// Longest an honest request may take (their connections time out at this too).
const OP_LIMIT: Duration = Duration::from_secs(10);
/// How long the server has to let go of what the chaos peers held. A peer that dies after
/// the listener accepted it but before it imported the server's ring holds its connection
/// until the server's handshake timeout (10 s): the server's reads look for departures from
/// its own ring, and there never was an importer to depart.
const SETTLE: Duration = Duration::from_secs(15);

/// This binary's child entry.
const ENTRY: &str = "child_process";

/// xorshift64*, seeded through splitmix64: small, and the same everywhere.
#[derive(Clone, Debug)]
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        Rng((z ^ (z >> 31)) | 1)
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next() % n
        }
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len() as u64) as usize]
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

fn name(s: &str) -> Name {
    Name::new(s.as_bytes()).unwrap()
}

fn root_creds() -> Creds {
    Creds {
        uid: 0,
        gid: 0,
        groups: vec![],
    }
}

/// Busy-waits `us` microseconds: the gaps that decide races are shorter than a sleep.
fn spin(us: u64) {
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_micros(us) {
        std::hint::spin_loop();
    }
}

// ---- The chaos peer: a client by hand, in a child process. ----

type Res<T> = Result<T, String>;

/// How long a chaos peer waits for an answer or for room before it gives up on the round:
/// after some of its lies the server rightly waits for ever (for the rest of a frame, say).
const PATIENCE: Duration = Duration::from_millis(500);

fn e(x: impl std::fmt::Display) -> String {
    x.to_string()
}

/// One connection to the server, built from raw NIC calls.
struct RawClient {
    /// My receive ring: the server deposits its replies here.
    ring: Option<Export>,
    size: u64,
    /// The server's receive ring, where my requests go.
    server: Option<Import>,
    listener: NodeAddr,
    server_id: ExportId,
    server_ring: u64,
    key: [u8; 32],
    /// Bytes I wrote into the server's ring.
    sent: u64,
    /// Bytes I consumed from my ring.
    read: u64,
    /// Replies owed: requests sent and not yet answered.
    owed: usize,
    opens: Vec<OpenId>,
    root: Option<FileHandle>,
    /// My endpoint (fields drop in order: this one last).
    _ep: Endpoint,
}

fn connect_request(me: &NodeAddr, ring: ExportId, size: u64) -> Vec<u8> {
    let (port, name) = match me {
        NodeAddr::Shm(n) => (0u16, n.as_str().as_bytes().to_vec()),
        NodeAddr::Tcp(t) => (t.port(), Vec::new()),
    };
    let mut b = b"VSK1".to_vec();
    b.extend_from_slice(&2u16.to_le_bytes());
    b.extend_from_slice(&0u16.to_le_bytes());
    b.extend_from_slice(&ring.get().to_le_bytes());
    b.extend_from_slice(&size.to_le_bytes());
    b.extend_from_slice(&port.to_le_bytes());
    b.extend_from_slice(&(name.len() as u16).to_le_bytes());
    // The key my ring requires: it requires none, any will do.
    b.extend_from_slice(&[0x5a; 32]);
    b.extend_from_slice(&name);
    b
}

impl RawClient {
    /// Connects; with `vanish`, dies (SIGKILL) once accepted, before importing the server's
    /// ring.
    fn connect(backend: Backend, listener: &NodeAddr, size: u64, vanish: bool) -> Res<RawClient> {
        let ep = Endpoint::bind(&backend.fresh_addr().parse().map_err(e)?).map_err(e)?;
        let ring = ep
            .export_mirrored(RING_HEADER + size, size, Permissions::open())
            .map_err(e)?;
        let opts = ImportOptions {
            greeting: connect_request(ep.addr(), ring.id(), size),
            timeout: Duration::from_secs(5),
            ..Default::default()
        };
        let knock = Import::open_with(
            listener,
            ExportId::new(1).ok_or("id")?,
            Access::FETCH,
            &opts,
        )
        .map_err(e)?;
        let t0 = Instant::now();
        loop {
            match ring.load_u64(ACCEPT_STATE).map_err(e)? {
                ACCEPTED => break,
                0 => {}
                other => return Err(format!("refused ({other})")),
            }
            if t0.elapsed() > Duration::from_secs(10) {
                return Err("never accepted".into());
            }
            let _ = ring.wait(Duration::from_millis(20));
        }
        if vanish {
            die();
        }
        drop(knock);
        let server_id =
            ExportId::new(ring.load_u64(ACCEPT_EXPORT).map_err(e)? as u32).ok_or("zero id")?;
        let server_ring = ring.load_u64(ACCEPT_RING).map_err(e)?;
        let mut key = [0u8; 32];
        for (i, w) in key.chunks_exact_mut(8).enumerate() {
            let v = ring.load_u64(ACCEPT_KEY + 8 * i as u64).map_err(e)?;
            w.copy_from_slice(&v.to_le_bytes());
        }
        let mut c = RawClient {
            ring: Some(ring),
            size,
            server: None,
            listener: listener.clone(),
            server_id,
            server_ring,
            key,
            sent: 0,
            read: 0,
            owed: 0,
            opens: Vec::new(),
            root: None,
            _ep: ep,
        };
        c.import_server()?;
        Ok(c)
    }

    fn import_server(&mut self) -> Res<()> {
        let opts = ImportOptions {
            key: Some(ImportKey::from_bytes(self.key)),
            timeout: Duration::from_secs(5),
            ..Default::default()
        };
        let imp =
            Import::open_with(&self.listener, self.server_id, Access::DEPOSIT, &opts).map_err(e)?;
        // Ask to be notified after every publish: no flag dance needed on this side.
        imp.store_u64(PEER_WAITING, 1, Notify::No).map_err(e)?;
        self.server = Some(imp);
        Ok(())
    }

    fn server(&self) -> Res<&Import> {
        self.server.as_ref().ok_or_else(|| "no import".into())
    }

    fn ring(&self) -> Res<&Export> {
        self.ring.as_ref().ok_or_else(|| "no ring".into())
    }

    fn poke(&self, word: u64, value: u64) -> Res<()> {
        self.server()?
            .store_u64(word, value, Notify::Yes)
            .map_err(e)
    }

    /// Writes `bytes` into the server's ring at my send index, and publishes `publish` of
    /// them (all, for an honest send).
    fn send_partly(&mut self, bytes: &[u8], publish: usize) -> Res<()> {
        let cap = self.server_ring;
        if bytes.len() as u64 > cap {
            return Err("larger than the ring".into());
        }
        let t0 = Instant::now();
        loop {
            let credit = self.ring()?.load_u64(PEER_CREDIT).map_err(e)?;
            if self.sent.saturating_sub(credit) + bytes.len() as u64 <= cap {
                break;
            }
            if t0.elapsed() > PATIENCE {
                return Err("no room in the server's ring".into());
            }
            let _ = self.ring()?.wait(Duration::from_millis(20));
        }
        let at = RING_HEADER + self.sent % cap;
        self.server()?.write_at(at, bytes, Notify::No).map_err(e)?;
        self.sent += publish.min(bytes.len()) as u64;
        self.poke(PEER_WRITE, self.sent)
    }

    fn send(&mut self, bytes: &[u8]) -> Res<()> {
        self.send_partly(bytes, bytes.len())
    }

    fn available(&self) -> Res<u64> {
        let w = self.ring()?.load_u64(PEER_WRITE).map_err(e)?;
        Ok(w.wrapping_sub(self.read))
    }

    fn wait_for(&self, n: u64, limit: Duration) -> Res<()> {
        let t0 = Instant::now();
        while self.available()? < n {
            if t0.elapsed() > limit {
                return Err(format!("no {n} bytes from the server"));
            }
            if self.server.as_ref().is_some_and(|s| !s.is_alive()) {
                return Err("the server's ring went away".into());
            }
            let _ = self.ring()?.wait(Duration::from_millis(20));
        }
        Ok(())
    }

    /// The next frame from the server: meta and data. Gives credit for it.
    fn recv_frame(&mut self, limit: Duration) -> Res<(Vec<u8>, Vec<u8>)> {
        self.wait_for(FRAME_HEADER as u64, limit)?;
        let at = RING_HEADER + self.read % self.size;
        let mut head = [0u8; FRAME_HEADER];
        self.ring()?.read_at(at, &mut head).map_err(e)?;
        let h = FrameHeader::parse(&head)
            .map_err(e)?
            .ok_or("short header")?;
        let total = h.total() as u64;
        if total > self.size {
            return Err("a frame larger than my ring".into());
        }
        self.wait_for(total, limit)?;
        let mut all = vec![0u8; total as usize];
        self.ring()?.read_at(at, &mut all).map_err(e)?;
        self.read += total;
        self.poke(PEER_CREDIT, self.read)?;
        let meta = all[FRAME_HEADER..FRAME_HEADER + h.meta_len as usize].to_vec();
        let data = all[FRAME_HEADER + h.meta_len as usize..].to_vec();
        Ok((meta, data))
    }

    fn handshake(&mut self, rng: &mut Rng) -> Res<()> {
        let mut session = [0u8; 16];
        session.copy_from_slice(&rng.bytes(16));
        let mut client_nonce = [0u8; 32];
        client_nonce.copy_from_slice(&rng.bytes(32));
        let hello = ClientHello {
            magic: MAGIC,
            min_version: PROTOCOL_VERSION,
            max_version: PROTOCOL_VERSION,
            client_nonce,
            session,
        };
        self.send(&codec::frame_to_vec(&hello, &[]).map_err(e)?)?;
        let (meta, _) = self.recv_frame(Duration::from_secs(5))?;
        match codec::decode::<ServerChallenge>(&meta).map_err(e)? {
            ServerChallenge::Challenge { .. } => {}
            other => return Err(format!("{other:?}")),
        }
        let proof = ClientProof { proof: [0; 32] };
        self.send(&codec::frame_to_vec(&proof, &[]).map_err(e)?)?;
        let (meta, _) = self.recv_frame(Duration::from_secs(5))?;
        match codec::decode::<ServerVerdict>(&meta).map_err(e)? {
            ServerVerdict::Welcome { root, .. } => self.root = Some(root),
            other => return Err(format!("{other:?}")),
        }
        Ok(())
    }

    fn request(&mut self, rng: &mut Rng, op: Op, data: &[u8]) -> Res<()> {
        let req = Request {
            id: rng.next(),
            creds: root_creds(),
            op,
        };
        self.send(&codec::frame_to_vec(&req, data).map_err(e)?)?;
        self.owed += 1;
        Ok(())
    }

    fn reply(&mut self) -> Res<(Reply, Vec<u8>)> {
        let (meta, data) = self.recv_frame(PATIENCE)?;
        self.owed = self.owed.saturating_sub(1);
        Ok((codec::decode::<Reply>(&meta).map_err(e)?, data))
    }

    fn call(&mut self, rng: &mut Rng, op: Op, data: &[u8]) -> Res<(Reply, Vec<u8>)> {
        self.request(rng, op, data)?;
        self.reply()
    }

    fn root(&self) -> Res<FileHandle> {
        self.root.clone().ok_or_else(|| "no root".into())
    }

    /// Opens (creating if need be) one of this peer's few files; the open stays with the
    /// session, so a server that loses the session's end leaks it.
    fn open_one(&mut self, rng: &mut Rng, slot: &str) -> Res<()> {
        let op = Op::Create {
            dir: self.root()?,
            name: name(&format!("chaos-{slot}-{}", rng.below(3))),
            mode: 0o644,
            flags: OpenFlags {
                read: true,
                write: true,
                ..Default::default()
            },
        };
        if let (
            Reply {
                result: Ok(Body::Opened { open, .. }),
                ..
            },
            _,
        ) = self.call(rng, op, &[])?
        {
            self.opens.push(open);
        }
        Ok(())
    }

    /// A request a client may make, chosen at random.
    fn honest_op(&mut self, rng: &mut Rng, slot: &str) -> Res<Op> {
        let root = self.root()?;
        let open = if self.opens.is_empty() {
            None
        } else {
            Some(self.opens[rng.below(self.opens.len() as u64) as usize])
        };
        let file = name(&format!("chaos-{slot}-{}", rng.below(3)));
        Ok(match rng.below(6) {
            0 => Op::ReadDir {
                dir: root,
                cookie: 0,
                max_entries: 1 + rng.below(1024) as u32,
            },
            1 => Op::GetAttr {
                handle: root,
                open: None,
            },
            2 => Op::Lookup {
                dir: root,
                name: file,
            },
            3 => Op::StatFs { handle: root },
            4 => Op::Create {
                dir: root,
                name: file,
                mode: 0o644,
                flags: OpenFlags {
                    read: true,
                    write: true,
                    ..Default::default()
                },
            },
            _ => match open {
                Some(open) => Op::Release { open },
                None => Op::Stats,
            },
        })
    }
}

/// What a chaos peer does with its connection, one step.
fn chaos_step(c: &mut RawClient, rng: &mut Rng, slot: &str) -> Res<()> {
    match rng.below(100) {
        // Honest requests, answered or left unanswered for a while.
        0..=24 => {
            let op = c.honest_op(rng, slot)?;
            c.request(rng, op, &[])?;
            if rng.chance(70) {
                while c.owed > 0 {
                    let (reply, _) = c.reply()?;
                    if let Ok(Body::Opened { open, .. }) = reply.result {
                        c.opens.push(open);
                    }
                }
            }
        }
        // A write through one of my opens, or a read of up to 1 MiB (the server preads
        // straight into my ring).
        25..=34 => {
            let Some(&open) = c.opens.first() else {
                return c.open_one(rng, slot);
            };
            let handle = c.root()?;
            if rng.chance(50) {
                let n = 1 + rng.below(64 * 1024) as usize;
                let data = rng.bytes(n);
                let op = Op::Write {
                    handle,
                    open: Some(open),
                    offset: rng.below(1 << 20),
                    append: false,
                };
                c.request(rng, op, &data)?;
            } else {
                let op = Op::Read {
                    handle,
                    open: Some(open),
                    offset: 0,
                    len: rng.pick(&[1, 4096, 1 << 20, u32::MAX]),
                };
                c.request(rng, op, &[])?;
            }
        }
        // Lies in the server's ring header.
        35..=49 => {
            let word = rng.pick(&[
                PEER_WRITE,
                PEER_FIN,
                PEER_CREDIT,
                PEER_RDSHUT,
                PEER_WAITING,
                PEER_URGENT,
            ]);
            let sent = c.sent;
            let cap = c.server_ring;
            let value = rng.pick(&[
                0,
                1,
                u64::MAX,
                1 << 63,
                sent.wrapping_sub(1),
                sent + 1,
                sent + cap,
                sent + cap + 1,
                c.read + 1,
                c.read.wrapping_sub(1),
                c.read + (1 << 40),
            ]);
            let value = if rng.chance(20) { rng.next() } else { value };
            c.poke(word, value)?;
        }
        // Garbage in the server's ring: published or not, over my pending frames or not.
        50..=59 => {
            let n = 1 + rng.below(8192) as usize;
            let span = RING_HEADER + 2 * c.server_ring - n as u64;
            let at = if rng.chance(50) {
                RING_HEADER + (c.sent.saturating_sub(rng.below(256)) % c.server_ring)
            } else {
                rng.below(span)
            };
            let bytes = rng.bytes(n);
            c.server()?.write_at(at, &bytes, Notify::No).map_err(e)?;
            if rng.chance(50) {
                c.sent += rng.below(n as u64 + 1);
                c.poke(PEER_WRITE, c.sent)?;
            }
        }
        // Partial and malformed frames.
        60..=69 => {
            let frame = match rng.below(5) {
                // A header that promises more than will ever come.
                0 => {
                    let mut h = vec![0u8; FRAME_HEADER];
                    FrameHeader {
                        meta_len: rng.below(MAX_META as u64) as u32,
                        data_len: rng.below(MAX_DATA as u64) as u32,
                    }
                    .emit(&mut h);
                    h
                }
                // Beyond the limits.
                1 => {
                    let mut h = vec![0u8; FRAME_HEADER];
                    h[..4].copy_from_slice(&(MAX_META as u32 + 1).to_le_bytes());
                    h[4..].copy_from_slice(&u32::MAX.to_le_bytes());
                    h
                }
                // A valid header around garbage.
                2 => {
                    let m = 1 + rng.below(512) as usize;
                    let mut f = vec![0u8; FRAME_HEADER];
                    FrameHeader {
                        meta_len: m as u32,
                        data_len: 0,
                    }
                    .emit(&mut f);
                    f.extend(rng.bytes(m));
                    f
                }
                // A real request cut short.
                3 => {
                    let op = c.honest_op(rng, slot)?;
                    let req = Request {
                        id: rng.next(),
                        creds: root_creds(),
                        op,
                    };
                    let f = codec::frame_to_vec(&req, &[]).map_err(e)?;
                    let cut = rng.below(f.len() as u64) as usize;
                    f[..cut].to_vec()
                }
                // A write whose data part is shorter than announced.
                _ => {
                    let req = Request {
                        id: rng.next(),
                        creds: root_creds(),
                        op: Op::Write {
                            handle: c.root()?,
                            open: c.opens.first().copied(),
                            offset: 0,
                            append: false,
                        },
                    };
                    let f = codec::frame_to_vec(&req, &rng.bytes(4096)).map_err(e)?;
                    f[..f.len() - 1 - rng.below(4000) as usize].to_vec()
                }
            };
            let publish = if rng.chance(70) {
                frame.len()
            } else {
                rng.below(frame.len() as u64 + 1) as usize
            };
            c.send_partly(&frame, publish)?;
        }
        // Let go of the server's ring, and take it again with the key.
        70..=77 => {
            c.server = None;
            spin(rng.below(2000));
            if rng.chance(80) {
                c.import_server()?;
            }
        }
        // Stop reading replies for a while, then take them all.
        78..=84 => {
            for _ in 0..rng.below(40) {
                let op = c.honest_op(rng, slot)?;
                if c.request(rng, op, &[]).is_err() {
                    break;
                }
            }
            std::thread::sleep(Duration::from_millis(rng.below(300)));
            while c.owed > 0 {
                c.reply()?;
            }
        }
        // Nothing for a moment.
        _ => std::thread::sleep(Duration::from_millis(rng.below(50))),
    }
    Ok(())
}

/// Queues a thousand or more cheap requests on each connection, then revokes the rings at
/// a random moment while the server answers them one after another: each answer takes room
/// in my ring and then writes into it, and a revocation may land in between (the window is
/// narrow, so several connections try at once).
fn revoke_while_answering(cs: &mut [RawClient], rng: &mut Rng) -> Res<()> {
    let mut most = 0;
    for c in cs.iter_mut() {
        // Enough that the server is still answering when the revocation reaches it (the
        // answers, 26 bytes each, fit my ring).
        let n = 500 + rng.below(1500);
        let stats = codec::frame_to_vec(
            &Request {
                id: rng.next(),
                creds: root_creds(),
                op: Op::Stats,
            },
            &[],
        )
        .map_err(e)?;
        let batch: Vec<u8> = (0..n).flat_map(|_| stats.iter().copied()).collect();
        c.send(&batch)?;
        most = most.max(n);
    }
    // Once the answers flow (a revocation before that is seen before the first one).
    let first = (1 + rng.below(40)) * 20;
    let t0 = Instant::now();
    while cs[0].available()? < first && t0.elapsed() < Duration::from_millis(100) {
        std::hint::spin_loop();
    }
    spin(rng.below(200));
    for c in cs.iter_mut() {
        c.ring = None;
    }
    if std::env::var_os("CHAOS_VERBOSE").is_some() {
        eprintln!(
            "race: {} connections revoked after {:?}",
            cs.len(),
            t0.elapsed()
        );
    }
    Ok(())
}

/// Makes the server wait for room in my (one-page) ring with a reply in hand, then gives it
/// the room and revokes the ring a few microseconds apart, in either order: at the right gap
/// the server's reservation succeeds and the ring is gone by the time it writes there.
fn revoke_under_reservation(c: &mut RawClient, rng: &mut Rng, slot: &str) -> Res<()> {
    let open = match c.opens.first() {
        Some(&o) => o,
        None => return Err("no open".into()),
    };
    let handle = c.root()?;
    // A page of data to read back: its reply fills my ring.
    let write = Op::Write {
        handle: handle.clone(),
        open: Some(open),
        offset: 0,
        append: false,
    };
    c.call(rng, write, &[0x5a; 4096])?;
    let fill = Op::Read {
        handle: handle.clone(),
        open: Some(open),
        offset: 0,
        len: 4096,
    };
    c.request(rng, fill, &[])?;
    c.wait_for(c.size / 2, PATIENCE)?;
    // The next reply does not fit: the server holds it until room comes.
    let op = c.honest_op(rng, slot)?;
    c.request(rng, op, &[])?;
    // Sometimes while it spins, mostly once it sleeps (it sets my PEER_WAITING first).
    let t0 = Instant::now();
    if rng.chance(70) {
        while c.ring()?.load_u64(PEER_WAITING).map_err(e)? == 0
            && t0.elapsed() < Duration::from_millis(200)
        {
            std::hint::spin_loop();
        }
    } else {
        spin(rng.below(100));
    }
    // The server notices a revocation some tens to thousands of microseconds after it
    // (its watcher thread must run), and room at once if it spins, or after a wake-up.
    let gap = match rng.below(3) {
        0 => rng.below(30),
        1 => rng.below(200),
        _ => rng.below(1500),
    };
    let all = c.read + c.available()?;
    if rng.chance(15) {
        c.poke(PEER_CREDIT, all)?;
        spin(gap);
        c.ring = None;
    } else {
        c.ring = None;
        spin(gap);
        let _ = c.poke(PEER_CREDIT, all);
    }
    Ok(())
}

/// SIGKILL, now.
fn die() -> ! {
    let _ = nix::sys::signal::kill(nix::unistd::Pid::this(), nix::sys::signal::Signal::SIGKILL);
    std::process::abort()
}

/// One chaos round: a new connection, misbehaviour, and an end.
fn chaos_round(backend: Backend, listener: &NodeAddr, rng: &mut Rng, slot: &str) -> Res<()> {
    let mode = rng.below(100);
    let size = match mode {
        0..=44 => 65536,
        45..=52 => 4096,
        _ => rng.pick(&[4096, 65536, 2 << 20, 4 << 20]),
    };
    let born = Instant::now();
    let mut c = RawClient::connect(backend, listener, size, rng.chance(2))?;
    let connected = born.elapsed();
    if rng.chance(5) {
        // Garbage instead of a hello, or a hello cut short.
        let n = 1 + rng.below(300) as usize;
        let junk = rng.bytes(n);
        c.send(&junk)?;
        std::thread::sleep(Duration::from_millis(rng.below(100)));
        return Ok(());
    }
    c.handshake(rng)?;
    for _ in 0..1 + rng.below(3) {
        c.open_one(rng, slot)?;
    }
    if std::env::var_os("CHAOS_VERBOSE").is_some() {
        eprintln!("connected in {connected:?}, ready in {:?}", born.elapsed());
    }
    match mode {
        // My ring goes away while the server answers a stream of requests: somewhere
        // between taking room for a reply and writing it, with luck.
        0..=44 => {
            let mut cs = vec![c];
            for _ in 0..1 + rng.below(5) {
                let mut more = RawClient::connect(backend, listener, size, false)?;
                more.handshake(rng)?;
                more.open_one(rng, slot)?;
                cs.push(more);
            }
            revoke_while_answering(&mut cs, rng)
        }
        // The server waits for room in my ring with a reply in hand; the ring goes away as
        // the room comes.
        45..=52 => revoke_under_reservation(&mut c, rng, slot),
        // My ring goes away right after a request.
        53..=62 => {
            let op = c.honest_op(rng, slot)?;
            c.request(rng, op, &[])?;
            spin(rng.below(300));
            c.ring = None;
            Ok(())
        }
        // Killed mid-request.
        63..=66 => {
            let op = c.honest_op(rng, slot)?;
            c.request(rng, op, &[])?;
            spin(rng.below(300));
            die()
        }
        // Anything, for a while; the rest goes with `c`, in whatever order fields drop.
        _ => {
            for _ in 0..rng.below(30) {
                chaos_step(&mut c, rng, slot)?;
            }
            Ok(())
        }
    }
}

fn run_child(role: &[String]) {
    let [what, backend, listener, slot, seed, ms] = role else {
        panic!("bad role {role:?}")
    };
    assert_eq!(what, "chaos");
    let backend = if backend == "tcp" {
        Backend::Tcp
    } else {
        Backend::Shm
    };
    let listener: NodeAddr = listener.parse().unwrap();
    let mut rng = Rng::new(seed.parse().unwrap());
    let until = Instant::now() + Duration::from_millis(ms.parse().unwrap());
    let mut rounds = 0u64;
    let mut failed = 0u64;
    test_support::say("READY");
    while Instant::now() < until {
        rounds += 1;
        let t0 = Instant::now();
        let r = chaos_round(backend, &listener, &mut rng, slot);
        if std::env::var_os("CHAOS_VERBOSE").is_some() {
            eprintln!(
                "chaos peer {slot}: round {rounds} ({:?}): {r:?}",
                t0.elapsed()
            );
        }
        if r.is_err() {
            failed += 1;
        }
    }
    test_support::say(format!("DONE {rounds} rounds, {failed} ended in errors"));
}

test_support::child_entry!(run_child);

/// A chaos peer process, killed when dropped.
struct ChaosProc {
    child: Child,
}

impl ChaosProc {
    fn spawn(role: &[String]) -> ChaosProc {
        let child = Command::new(std::env::current_exe().unwrap())
            .args([
                ENTRY,
                "--exact",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(test_support::ROLE_VAR, role.join("\u{1f}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        ChaosProc { child }
    }

    fn exited(&mut self) -> bool {
        !matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for ChaosProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---- The victim and what it holds. ----

/// A `dfs-server` process whose stderr is kept.
struct ServerProc {
    child: Child,
    addr: String,
    stderr: Arc<Mutex<Vec<String>>>,
}

impl ServerProc {
    fn start(backend: Backend, export: &Path, key: &Path) -> ServerProc {
        let listen = match backend {
            Backend::Shm => common::fresh_addr(),
            Backend::Tcp => "tcp:127.0.0.1:0".to_string(),
        };
        let mut cmd = Command::new(common::server_bin());
        cmd.arg("--export")
            .arg(export)
            .args(["--listen", &listen])
            .arg("--handle-key")
            .arg(key)
            .args(["--squash", "none"]);
        if backend == Backend::Tcp {
            cmd.arg("--trust-network");
        }
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let err = child.stderr.take().unwrap();
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = channel();
        {
            let stderr = stderr.clone();
            std::thread::spawn(move || {
                for l in BufReader::new(err).lines().map_while(Result::ok) {
                    if l.contains("panicked") {
                        eprintln!("dfs-server: {l}");
                    }
                    let _ = tx.send(l.clone());
                    stderr.lock().unwrap().push(l);
                }
            });
        }
        let addr = wait_serving(&rx);
        ServerProc {
            child,
            addr,
            stderr,
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    fn panics(&self) -> Vec<String> {
        let lines = self.stderr.lock().unwrap();
        lines
            .iter()
            .filter(|l| l.contains("panicked"))
            .cloned()
            .collect()
    }

    fn tail(&self) -> String {
        let lines = self.stderr.lock().unwrap();
        let from = lines.len().saturating_sub(30);
        lines[from..].join("\n")
    }

    /// SIGTERM, and the exit status within [`common::WAIT`].
    fn terminate(&mut self) -> ExitStatus {
        let pid = nix::unistd::Pid::from_raw(self.pid() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let t0 = Instant::now();
        loop {
            if let Ok(Some(st)) = self.child.try_wait() {
                return st;
            }
            assert!(
                t0.elapsed() < common::WAIT,
                "dfs-server did not stop on SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for ServerProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn wait_serving(rx: &Receiver<String>) -> String {
    let deadline = Instant::now() + common::WAIT;
    loop {
        match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(l) if l.contains("serving") => {
                return l.rsplit(" on ").next().unwrap_or_default().to_string()
            }
            Ok(_) => {}
            Err(_) => panic!("dfs-server did not start"),
        }
    }
}

/// What a process holds, as `/proc` tells.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Held {
    /// Descriptors on files inside the export (not the export's root itself).
    export_files: usize,
    descriptors: usize,
    threads: usize,
}

fn held(pid: u32, export: &Path) -> Held {
    let mut export_files = 0;
    let mut descriptors = 0;
    let inside = format!("{}/", export.display());
    if let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) {
        for e in dir.flatten() {
            descriptors += 1;
            if let Ok(t) = std::fs::read_link(e.path()) {
                if t.to_string_lossy().starts_with(&inside) {
                    export_files += 1;
                }
            }
        }
    }
    let threads = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0);
    Held {
        export_files,
        descriptors,
        threads,
    }
}

// ---- Honest clients. ----

#[derive(Default)]
struct Honest {
    ops: AtomicU64,
    failures: Mutex<Vec<String>>,
    slowest: Mutex<Duration>,
}

impl Honest {
    fn took(&self, d: Duration) {
        self.ops.fetch_add(1, Ordering::Relaxed);
        let mut slowest = self.slowest.lock().unwrap();
        *slowest = (*slowest).max(d);
    }

    fn fail(&self, what: String) {
        eprintln!("honest client: {what}");
        self.failures.lock().unwrap().push(what);
    }
}

/// One honest request, timed and checked: the body of a successful reply.
fn call(
    c: &mut Connection,
    stats: &Honest,
    me: &Creds,
    op: Op,
    data: &[u8],
) -> Result<Body, String> {
    let t0 = Instant::now();
    let r = c.call(me, op.clone(), data);
    stats.took(t0.elapsed());
    if t0.elapsed() > OP_LIMIT {
        return Err(format!("{op:?} took {:?}", t0.elapsed()));
    }
    match r {
        Ok(Reply { result: Ok(b), .. }) => Ok(b),
        Ok(Reply { result: Err(e), .. }) => Err(format!("{op:?}: errno {e:?}")),
        Err(err) => Err(format!("{op:?}: {err}")),
    }
}

/// An honest read, in place, timed: the reply and a copy of the bytes.
fn read(
    c: &mut Connection,
    stats: &Honest,
    me: &Creds,
    handle: &FileHandle,
    open: OpenId,
    len: usize,
) -> Result<Vec<u8>, String> {
    let t0 = Instant::now();
    let r = c.read_in_place(me, handle.clone(), Some(open), 0, len as u32, |r, d| {
        (r, d.to_vec())
    });
    stats.took(t0.elapsed());
    if t0.elapsed() > OP_LIMIT {
        return Err(format!("a read took {:?}", t0.elapsed()));
    }
    match r {
        Ok((
            Reply {
                result: Ok(Body::Read { .. }),
                ..
            },
            d,
        )) => Ok(d),
        Ok((r, _)) => Err(format!("read answered {:?}", r.result)),
        Err(err) => Err(format!("read: {err}")),
    }
}

fn create(dir: &FileHandle, file: &str, flags: OpenFlags) -> Op {
    Op::Create {
        dir: dir.clone(),
        name: name(file),
        mode: 0o644,
        flags,
    }
}

/// What the honest clients wait on, in order.
struct Phases {
    /// Passed once every client holds its long-lived open and the test has looked.
    go: Barrier,
    /// Requests run while this is set.
    run: AtomicBool,
    /// Passed once every client has stopped (holding its long-lived open).
    settled: Barrier,
    /// Passed once the test has looked again: clients release and leave.
    finish: Barrier,
}

/// One honest client: holds `keep-N` open all along, and runs requests (create, write, read
/// back, readdir, getattr, release, unlink, read of `keep-N`) while the chaos lasts.
fn honest_client(addr: String, n: usize, stats: Arc<Honest>, phases: Arc<Phases>) {
    let mut opts = ConnectOptions::new().unwrap();
    opts.timeout = OP_LIMIT;
    let me = root_creds();
    let rw = OpenFlags {
        read: true,
        write: true,
        ..Default::default()
    };
    let stats = &*stats;
    let setup = (|| -> Result<_, String> {
        let mut c = Connection::connect(&addr, &opts).map_err(|e| format!("connect: {e}"))?;
        let root = c.root().clone();
        let keep = format!("keep-{n}");
        let (handle, open) = match call(&mut c, stats, &me, create(&root, &keep, rw), &[])? {
            Body::Opened {
                open,
                entry: Some(entry),
                ..
            } => (entry.handle, open),
            other => return Err(format!("creating {keep}: {other:?}")),
        };
        let data = test_support::pattern(n as u64, 0, 4096);
        let write = Op::Write {
            handle: handle.clone(),
            open: Some(open),
            offset: 0,
            append: false,
        };
        call(&mut c, stats, &me, write, &data)?;
        Ok((c, root, handle, open, data))
    })();
    let (mut c, root, keep, keep_open, keep_data) = match setup {
        Ok(s) => s,
        Err(why) => {
            stats.fail(format!("client {n}: {why}"));
            phases.go.wait();
            phases.settled.wait();
            phases.finish.wait();
            return;
        }
    };
    phases.go.wait();
    let mut i = 0u64;
    while phases.run.load(Ordering::Relaxed) {
        i += 1;
        let file = format!("h{n}-{i}");
        let mut one_round = || -> Result<(), String> {
            let excl = OpenFlags {
                exclusive: true,
                ..rw
            };
            let (h, open) = match call(&mut c, stats, &me, create(&root, &file, excl), &[])? {
                Body::Opened {
                    open,
                    entry: Some(entry),
                    ..
                } => (entry.handle, open),
                other => return Err(format!("create answered {other:?}")),
            };
            let data = test_support::pattern(i, 0, 64 * 1024 + (i as usize % 4096));
            let write = Op::Write {
                handle: h.clone(),
                open: Some(open),
                offset: 0,
                append: false,
            };
            match call(&mut c, stats, &me, write, &data)? {
                Body::Written { len, .. } if len as usize == data.len() => {}
                other => return Err(format!("write answered {other:?}")),
            }
            if read(&mut c, stats, &me, &h, open, data.len())? != data {
                return Err(format!("{file} read back wrong"));
            }
            let readdir = Op::ReadDir {
                dir: root.clone(),
                cookie: 0,
                max_entries: 1024,
            };
            match call(&mut c, stats, &me, readdir, &[])? {
                Body::Dir(page) if page.entries.iter().any(|d| d.name == file.as_bytes()) => {}
                other => return Err(format!("readdir without {file}: {other:?}")),
            }
            let getattr = Op::GetAttr {
                handle: h.clone(),
                open: Some(open),
            };
            match call(&mut c, stats, &me, getattr, &[])? {
                Body::Attr(a) if a.size == data.len() as u64 => {}
                other => return Err(format!("getattr answered {other:?}")),
            }
            call(&mut c, stats, &me, Op::Release { open }, &[])?;
            let unlink = Op::Unlink {
                dir: root.clone(),
                name: name(&file),
            };
            call(&mut c, stats, &me, unlink, &[])?;
            if read(&mut c, stats, &me, &keep, keep_open, 4096)? != keep_data {
                return Err(format!("keep-{n} changed"));
            }
            Ok(())
        };
        if let Err(why) = one_round() {
            stats.fail(format!("client {n}, round {i}: {why}"));
            break;
        }
    }
    // Idle, holding `keep-N` open, while the test looks at what the server holds.
    phases.settled.wait();
    phases.finish.wait();
    if let Err(why) = call(&mut c, stats, &me, Op::Release { open: keep_open }, &[]) {
        stats.fail(format!("client {n}: the last release: {why}"));
    }
}

fn chaos_seed() -> u64 {
    std::env::var("CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            let t = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default();
            t.as_nanos() as u64 ^ u64::from(std::process::id()) << 32
        })
}

fn chaos_time() -> Duration {
    std::env::var("CHAOS_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .map(Duration::from_secs)
        .unwrap_or(CHAOS)
}

/// Polls until `f` holds or [`SETTLE`] passes; the last value either way.
fn settle<T: std::fmt::Debug>(mut look: impl FnMut() -> T, ok: impl Fn(&T) -> bool) -> T {
    let t0 = Instant::now();
    let mut said = Duration::ZERO;
    loop {
        let v = look();
        if ok(&v) || t0.elapsed() > SETTLE {
            return v;
        }
        if t0.elapsed() > said + Duration::from_secs(1) {
            said = t0.elapsed();
            eprintln!("after {said:?}: {v:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn chaos_against_the_server(backend: Backend) {
    let seed = chaos_seed();
    eprintln!("chaos seed {seed} ({backend:?}); CHAOS_SEED={seed} repeats its choices");
    let tmp = tempfile::tempdir().unwrap();
    let export: PathBuf = std::fs::canonicalize(tmp.path()).unwrap().join("export");
    std::fs::create_dir(&export).unwrap();
    let key = tmp.path().join("handle.key");
    let mut server = ServerProc::start(backend, &export, &key);
    let pid = server.pid();

    // Honest clients connect and open their long-lived files; then the baseline.
    let stats = Arc::new(Honest::default());
    let phases = Arc::new(Phases {
        go: Barrier::new(HONEST + 1),
        run: AtomicBool::new(true),
        settled: Barrier::new(HONEST + 1),
        finish: Barrier::new(HONEST + 1),
    });
    let honest: Vec<_> = (0..HONEST)
        .map(|n| {
            let (addr, stats, phases) = (server.addr.clone(), stats.clone(), phases.clone());
            std::thread::spawn(move || honest_client(addr, n, stats, phases))
        })
        .collect();
    // Wait for every client to hold its open (they then wait at `go`).
    let t0 = Instant::now();
    while held(pid, &export).export_files < HONEST && t0.elapsed() < common::WAIT {
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(300));
    let before = held(pid, &export);
    eprintln!("before the chaos: {before:?}");
    assert_eq!(before.export_files, HONEST, "the honest clients' opens");
    phases.go.wait();

    // Chaos, with a new peer whenever one dies.
    let chaos = chaos_time();
    let until = Instant::now() + chaos;
    let mut rng = Rng::new(seed);
    let mut peers: Vec<Option<ChaosProc>> = (0..CHAOS_PEERS).map(|_| None).collect();
    let mut spawned = 0u64;
    let backend_word = match backend {
        Backend::Shm => "shm",
        Backend::Tcp => "tcp",
    };
    while Instant::now() < until {
        assert!(
            server.alive(),
            "dfs-server died during the chaos (seed {seed}):\n{}",
            server.tail()
        );
        for (slot, p) in peers.iter_mut().enumerate() {
            if p.as_mut().is_none_or(|p| p.exited()) {
                let left = until.saturating_duration_since(Instant::now());
                let role: Vec<String> = vec![
                    "chaos".into(),
                    backend_word.into(),
                    server.addr.clone(),
                    format!("{slot}"),
                    rng.next().to_string(),
                    left.as_millis().to_string(),
                ];
                *p = Some(ChaosProc::spawn(&role));
                spawned += 1;
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(peers);
    phases.run.store(false, Ordering::Relaxed);
    let ops = stats.ops.load(Ordering::Relaxed);
    eprintln!(
        "{spawned} chaos peers in {chaos:?}; {ops} honest requests, the slowest took {:?}",
        *stats.slowest.lock().unwrap()
    );
    assert!(server.alive(), "dfs-server died:\n{}", server.tail());

    // What the chaos peers held goes back; what the honest clients hold stays.
    phases.settled.wait();
    let after = settle(
        || held(pid, &export),
        |h| {
            h.export_files == before.export_files
                && h.threads <= before.threads + 2
                && h.descriptors <= before.descriptors + 4
        },
    );
    eprintln!("after the chaos: {after:?}");
    phases.finish.wait();
    for h in honest {
        h.join().unwrap();
    }
    let failures = stats.failures.lock().unwrap().clone();
    let status = server.terminate();
    let panics = server.panics();

    assert!(
        panics.is_empty(),
        "dfs-server panicked (seed {seed}):\n{}",
        panics.join("\n")
    );
    assert!(
        failures.is_empty(),
        "honest requests failed (seed {seed}):\n{}",
        failures.join("\n")
    );
    assert!(ops > 0, "the honest clients never ran");
    assert_eq!(
        after.export_files, before.export_files,
        "files the chaos peers opened are still open in the server (seed {seed}): {after:?} against {before:?}"
    );
    assert!(
        after.threads <= before.threads + 2 && after.descriptors <= before.descriptors + 4,
        "the server still holds what the chaos peers cost (seed {seed}): {after:?} against {before:?}"
    );
    assert!(
        status.success(),
        "dfs-server exited with {status} on SIGTERM:\n{}",
        server.tail()
    );
}

#[test]
fn shm_chaos_peers_cost_the_server_nothing_but_their_connections() {
    chaos_against_the_server(Backend::Shm);
}

#[test]
fn tcp_chaos_peers_cost_the_server_nothing_but_their_connections() {
    chaos_against_the_server(Backend::Tcp);
}
