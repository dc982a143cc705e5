//! A chaos peer against one `VmmcStream`: whatever the peer does to the connection's rings,
//! indices and imports, the stream's calls return (data, or an `io::Error`) within their
//! timeouts and never panic, and the listener's other connections notice nothing.
//!
//! The peer speaks the connect handshake by hand with raw vmmc-nic calls (as
//! `hostile_ring.rs` does), then, at random moments: gives honest credit and sends honest
//! data, rewrites the words of the victim's ring header with adversarial values, scribbles
//! into the victim's ring, drops its import of the victim's ring and imports it again with
//! the key, and revokes its own ring (the one the victim sends into) while the victim is in
//! the middle of a reservation. The victim runs every kind of call in a loop, each one inside
//! `catch_unwind`, with short timeouts. A seeded PRNG drives both sides; the seed is printed
//! (`CHAOS_SEED=…` repeats the choices, not the timing).

use std::io::{ErrorKind, Read, Write};
use std::net::Shutdown;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, Once};
use std::time::{Duration, Instant};

use test_support::Backend;
use vmmc_nic::{
    Access, Endpoint, Export, ExportId, Import, ImportKey, ImportOptions, NodeAddr, Notify,
    Permissions,
};
use vmmc_sockets::{RecvSlot, SendSlot, VmmcListener, VmmcStream};

const HEADER: u64 = 4096;
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
/// The chaos peer's ring: what the victim sends into.
const RING: u64 = 64 * 1024;
/// The victim's timeouts, and what a call may take beyond them.
const TIMEOUT: Duration = Duration::from_millis(100);
const MARGIN: Duration = Duration::from_secs(2);
/// How long each backend's chaos lasts.
const CHAOS: Duration = Duration::from_secs(5);

/// Panics in the stream's own background threads (named `vmmc-*`), which would otherwise
/// pass unseen.
static BACKGROUND_PANICS: AtomicU64 = AtomicU64::new(0);

fn watch_background_panics() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if std::thread::current()
                .name()
                .is_some_and(|n| n.starts_with("vmmc-"))
            {
                BACKGROUND_PANICS.fetch_add(1, Ordering::SeqCst);
            }
            default(info);
        }));
    });
}

/// xorshift64*, seeded through splitmix64.
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

fn spin(us: u64) {
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_micros(us) {
        std::hint::spin_loop();
    }
}

fn seed() -> u64 {
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

// ---- The chaos peer. ----

fn request(endpoint: &NodeAddr, ring_export: ExportId, ring: u64) -> Vec<u8> {
    let (port, name) = match endpoint {
        NodeAddr::Shm(n) => (0u16, n.as_str().as_bytes().to_vec()),
        NodeAddr::Tcp(t) => (t.port(), Vec::new()),
    };
    let mut b = b"VSK1".to_vec();
    b.extend_from_slice(&2u16.to_le_bytes());
    b.extend_from_slice(&0u16.to_le_bytes());
    b.extend_from_slice(&ring_export.get().to_le_bytes());
    b.extend_from_slice(&ring.to_le_bytes());
    b.extend_from_slice(&port.to_le_bytes());
    b.extend_from_slice(&(name.len() as u16).to_le_bytes());
    b.extend_from_slice(&[0x5a; 32]);
    b.extend_from_slice(&name);
    b
}

/// A client by hand. Every call is best effort: the victim may have given up on us.
struct Chaos {
    /// My ring, where the victim sends.
    ring: Option<Export>,
    /// The victim's ring, where I send.
    victim: Option<Import>,
    listener: NodeAddr,
    victim_id: ExportId,
    victim_ring: u64,
    key: [u8; 32],
    /// Bytes I published into the victim's ring.
    sent: u64,
    _ep: Endpoint,
}

impl Chaos {
    fn connect(b: Backend, listener: &NodeAddr) -> Chaos {
        let ep = Endpoint::bind(&b.fresh_addr().parse().unwrap()).unwrap();
        let ring = ep
            .export_mirrored(HEADER + RING, RING, Permissions::open())
            .unwrap();
        let opts = ImportOptions {
            greeting: request(ep.addr(), ring.id(), RING),
            ..Default::default()
        };
        let _knock =
            Import::open_with(listener, ExportId::new(1).unwrap(), Access::FETCH, &opts).unwrap();
        let t0 = Instant::now();
        while ring.load_u64(ACCEPT_STATE).unwrap() != 1 {
            assert!(t0.elapsed() < Duration::from_secs(10), "never accepted");
            let _ = ring.wait(Duration::from_millis(20));
        }
        let victim_id = ExportId::new(ring.load_u64(ACCEPT_EXPORT).unwrap() as u32).unwrap();
        let victim_ring = ring.load_u64(ACCEPT_RING).unwrap();
        let mut key = [0u8; 32];
        for (i, w) in key.chunks_exact_mut(8).enumerate() {
            let v = ring.load_u64(ACCEPT_KEY + 8 * i as u64).unwrap();
            w.copy_from_slice(&v.to_le_bytes());
        }
        let mut c = Chaos {
            ring: Some(ring),
            victim: None,
            listener: listener.clone(),
            victim_id,
            victim_ring,
            key,
            sent: 0,
            _ep: ep,
        };
        c.import_victim();
        assert!(c.victim.is_some(), "cannot import the victim's ring");
        c
    }

    fn import_victim(&mut self) {
        let opts = ImportOptions {
            key: Some(ImportKey::from_bytes(self.key)),
            timeout: Duration::from_secs(2),
            ..Default::default()
        };
        self.victim =
            Import::open_with(&self.listener, self.victim_id, Access::DEPOSIT, &opts).ok();
    }

    fn poke(&self, word: u64, value: u64) {
        if let Some(v) = &self.victim {
            let _ = v.store_u64(word, value, Notify::Yes);
        }
    }

    /// Honest credit for everything the victim sent me.
    fn give_credit(&self) {
        if let Some(r) = &self.ring {
            if let Ok(w) = r.load_u64(PEER_WRITE) {
                self.poke(PEER_CREDIT, w);
            }
        }
    }

    /// Honest data, if the victim's ring has room by the credit it gave me.
    fn send_data(&mut self, rng: &mut Rng) {
        let (Some(r), Some(v)) = (&self.ring, &self.victim) else {
            return;
        };
        let Ok(credit) = r.load_u64(PEER_CREDIT) else {
            return;
        };
        let room = self
            .victim_ring
            .saturating_sub(self.sent.saturating_sub(credit));
        let n = rng.below(room.min(16 * 1024) + 1);
        if n == 0 {
            return;
        }
        let at = HEADER + self.sent % self.victim_ring;
        if v.write_at(at, &rng.bytes(n as usize), Notify::No).is_ok() {
            self.sent += n;
            self.poke(PEER_WRITE, self.sent);
        }
    }

    fn step(&mut self, rng: &mut Rng, honest: bool) {
        let roll = if honest {
            rng.below(50)
        } else {
            rng.below(100)
        };
        match roll {
            0..=29 => self.give_credit(),
            30..=49 => self.send_data(rng),
            50..=64 => {
                let word = rng.pick(&[
                    PEER_WRITE,
                    PEER_FIN,
                    PEER_CREDIT,
                    PEER_RDSHUT,
                    PEER_WAITING,
                    PEER_URGENT,
                ]);
                let s = self.sent;
                let value = rng.pick(&[
                    0,
                    1,
                    u64::MAX,
                    1 << 63,
                    s.wrapping_sub(1),
                    s + 1,
                    s + self.victim_ring,
                    s + self.victim_ring + 1,
                    RING + 1,
                    1 << 40,
                ]);
                let value = if rng.chance(20) { rng.next() } else { value };
                self.poke(word, value);
            }
            65..=74 => {
                if let Some(v) = &self.victim {
                    let n = 1 + rng.below(4096);
                    let at = rng.below(HEADER + 2 * self.victim_ring - n);
                    let _ = v.write_at(at, &rng.bytes(n as usize), Notify::Yes);
                }
            }
            75..=82 => {
                self.victim = None;
                spin(rng.below(500));
                if rng.chance(80) {
                    self.import_victim();
                }
            }
            83..=86 => {
                // My ring goes away: the victim's sends (and reservations) lose their target.
                self.ring = None;
            }
            _ => std::thread::sleep(Duration::from_micros(rng.below(2000))),
        }
    }
}

// ---- The victim. ----

/// Fills a send slot by copy.
fn fill(slot: &mut SendSlot<'_>, bytes: &[u8]) -> std::io::Result<usize> {
    Ok(slot.buf()?.copy_from(bytes))
}

/// Copies a receive slot's bytes out.
fn take(slot: &RecvSlot<'_>, out: &mut [u8]) -> std::io::Result<usize> {
    Ok(slot.data()?.copy_to(out))
}

/// One call of any kind on the victim stream.
fn victim_op(s: &VmmcStream, rng: &mut Rng, buf: &mut [u8]) -> std::io::Result<()> {
    match rng.below(18) {
        0 | 1 => {
            let n = 1 + rng.below(buf.len() as u64) as usize;
            (&*s).write(&buf[..n]).map(drop)
        }
        2 | 3 => (&*s).read(buf).map(drop),
        4..=8 => {
            let mut slot = s.reserve(1 + rng.below(RING) as usize)?;
            let len = slot.len().min(buf.len());
            // An application makes its data while it holds the slot (a `pread`, say).
            spin(rng.below(1000));
            let n = fill(&mut slot, &buf[..len])?;
            slot.commit(n)
        }
        9 => {
            let min = 1 + rng.below(RING) as usize;
            let mut slot = s.reserve_at_least(min, min + rng.below(1000) as usize)?;
            let len = slot.len().min(buf.len());
            // An application makes its data while it holds the slot (a `pread`, say).
            spin(rng.below(1000));
            let n = fill(&mut slot, &buf[..len])?;
            slot.commit(n)
        }
        10 | 11 => {
            let slot = s.readable()?;
            let n = take(&slot, buf)?;
            slot.consume(n)
        }
        12 => {
            let slot = s.readable_at_least(1 + rng.below(4096) as usize)?;
            let n = take(&slot, buf)?;
            slot.consume(n)
        }
        13 => s.peek(buf).map(drop),
        14 => {
            let _ = s.readiness(rng.chance(50));
            s.bytes_readable().map(drop)
        }
        15 => {
            s.at_mark()?;
            s.recv_urgent().map(drop)
        }
        _ => {
            if rng.chance(10) {
                s.shutdown(rng.pick(&[Shutdown::Read, Shutdown::Write]))
            } else {
                s.send_urgent(rng.next() as u8)
            }
        }
    }
}

#[derive(Default)]
struct Tally {
    ops: AtomicU64,
    errors: AtomicU64,
    panics: Mutex<Vec<String>>,
    slowest: Mutex<Duration>,
}

/// Runs calls on `s` until `stop`, each inside `catch_unwind` and timed.
fn victim(s: &VmmcStream, seed: u64, stop: &AtomicBool, tally: &Tally) {
    let mut rng = Rng::new(seed);
    let mut buf = vec![0u8; 2 * RING as usize];
    while !stop.load(Ordering::Relaxed) {
        let t0 = Instant::now();
        let r = catch_unwind(AssertUnwindSafe(|| victim_op(s, &mut rng, &mut buf)));
        let took = t0.elapsed();
        tally.ops.fetch_add(1, Ordering::Relaxed);
        {
            let mut slowest = tally.slowest.lock().unwrap();
            *slowest = (*slowest).max(took);
        }
        match r {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tally.errors.fetch_add(1, Ordering::Relaxed);
                if e.kind() == ErrorKind::TimedOut || e.kind() == ErrorKind::WouldBlock {
                    continue;
                }
                // A broken connection fails at once from now on: look less often.
                std::thread::sleep(Duration::from_micros(200));
            }
            Err(p) => {
                let what = p
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                tally.panics.lock().unwrap().push(what);
            }
        }
    }
}

/// An honest connection on the same listener, echoing all along.
fn honest_echo(l: &VmmcListener, stop: &AtomicBool) -> Result<u64, String> {
    let c = VmmcStream::connect(&l.local_addr().to_string()).map_err(|e| e.to_string())?;
    let (s, _) = l.accept().map_err(|e| e.to_string())?;
    for x in [&c, &s] {
        x.set_read_timeout(Some(Duration::from_secs(10)))
            .and_then(|()| x.set_write_timeout(Some(Duration::from_secs(10))))
            .map_err(|e| e.to_string())?;
    }
    let mut n = 0u64;
    let mut got = vec![0u8; 4096];
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let msg = test_support::pattern(n, 0, 1 + (n as usize * 7919) % 4096);
        (&c).write_all(&msg)
            .map_err(|e| format!("honest write: {e}"))?;
        let got = &mut got[..msg.len()];
        (&s).read_exact(got)
            .map_err(|e| format!("honest read: {e}"))?;
        (&s).write_all(got)
            .map_err(|e| format!("honest echo: {e}"))?;
        (&c).read_exact(got)
            .map_err(|e| format!("honest read back: {e}"))?;
        if *got != msg[..] {
            return Err(format!("honest message {n} came back changed"));
        }
    }
    Ok(n)
}

fn chaos_against_a_stream(b: Backend) {
    watch_background_panics();
    let seed = seed();
    eprintln!("chaos seed {seed} ({b:?}); CHAOS_SEED={seed} repeats its choices");
    let mut rng = Rng::new(seed);
    let l = VmmcListener::bind(&b.fresh_addr()).unwrap();
    let addr = l.local_addr().clone();
    let tally = Tally::default();
    let stop_honest = AtomicBool::new(false);
    let until = Instant::now() + CHAOS;
    let mut rounds = 0;
    let honest = std::thread::scope(|sc| {
        let honest = sc.spawn(|| honest_echo(&l, &stop_honest));
        // The honest pair connects first, so that every later accept is a chaos peer's.
        std::thread::sleep(Duration::from_millis(200));
        while Instant::now() < until {
            rounds += 1;
            let mut chaos = Chaos::connect(b, &addr);
            let (s, _) = l.accept().unwrap();
            s.set_read_timeout(Some(TIMEOUT)).unwrap();
            s.set_write_timeout(Some(TIMEOUT)).unwrap();
            let stop = AtomicBool::new(false);
            let victim_seed = rng.next();
            std::thread::scope(|round| {
                round.spawn(|| victim(&s, victim_seed, &stop, &tally));
                // Honest for a while (the victim's calls succeed), then, in half the
                // rounds, anything.
                let honest_steps = rng.below(200);
                let steps = honest_steps + if rng.chance(50) { rng.below(100) } else { 0 };
                for i in 0..steps {
                    chaos.step(&mut rng, i < honest_steps);
                    spin(rng.below(200));
                }
                // The end: my ring goes away (while the victim holds a slot in it, with
                // luck), or I just stop answering (and leave in one piece after the round).
                if rng.chance(70) {
                    chaos.ring = None;
                }
                std::thread::sleep(Duration::from_millis(rng.below(50)));
                stop.store(true, Ordering::Relaxed);
            });
            drop(chaos);
        }
        stop_honest.store(true, Ordering::Relaxed);
        honest.join().unwrap()
    });
    let ops = tally.ops.load(Ordering::Relaxed);
    let errors = tally.errors.load(Ordering::Relaxed);
    let slowest = *tally.slowest.lock().unwrap();
    eprintln!("{rounds} rounds, {ops} calls, {errors} errors, the slowest took {slowest:?}");
    let panics = tally.panics.lock().unwrap().clone();
    assert!(
        panics.is_empty(),
        "the victim panicked {} times (seed {seed}): {:?}",
        panics.len(),
        &panics[..panics.len().min(5)]
    );
    assert_eq!(
        BACKGROUND_PANICS.load(Ordering::SeqCst),
        0,
        "a vmmc thread panicked (see above)"
    );
    assert!(
        slowest < TIMEOUT + MARGIN,
        "a call took {slowest:?} with timeouts of {TIMEOUT:?} (seed {seed})"
    );
    assert!(errors > 0, "the chaos never reached the victim");
    let honest = honest.unwrap_or_else(|e| panic!("the honest connection was hurt: {e}"));
    assert!(honest > 0);
    // The listener still takes new connections.
    let c = VmmcStream::connect(&addr.to_string()).unwrap();
    let (s, _) = l.accept().unwrap();
    (&c).write_all(b"after").unwrap();
    let mut five = [0u8; 5];
    (&s).read_exact(&mut five).unwrap();
    assert_eq!(&five, b"after");
}

test_support::both_backends!(chaos_against_a_stream);
