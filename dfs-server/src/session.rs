//! One client connection: the handshake, then requests answered in order. Whatever the
//! client sends is decoded once by `dfs-proto`; a malformed message ends this connection and
//! nothing else.

use std::io::{self, ErrorKind};
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dfs_proto::auth::proofs_match;
use dfs_proto::codec;
use dfs_proto::frame::{self, Arrival, FrameHeader, HEADER, MAX_DATA};
use dfs_proto::msg::{
    AuthMode, Body, ClientHello, ClientProof, Op, Reply, Request, ServerChallenge, ServerVerdict,
    MAGIC, NO_REPLY, PROTOCOL_VERSION,
};
use dfs_proto::Errno;
use serde::Serialize;
use vmmc_sockets::{PeerIdentity, RecvSlot, SendSlot, SharedBytes, VmmcStream};

use crate::creds::Trust;
use crate::opens::Session;
use crate::server::Shared;

/// How long a client has to complete the handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How often a waiting connection looks at the server's stop flag.
const POLL: Duration = Duration::from_millis(250);
/// Room for a read reply's meta part: `Reply { id, Ok(Body::Read { eof }) }` is far smaller.
const READ_META_ROOM: usize = 64;
/// After a read reply at least this large, the client spends longer copying it out than a
/// spin lasts before it sends anything more on the connection: the next wait does not spin.
const LONG_READ: usize = 256 << 10;

/// Why a connection ended.
#[derive(Debug, thiserror::Error)]
pub enum End {
    /// The client closed it.
    #[error("client closed the connection")]
    Closed,
    /// The server is stopping.
    #[error("server stopping")]
    Stopping,
    /// The client sent something the protocol does not allow.
    #[error("protocol violation: {0}")]
    Protocol(String),
    /// Authentication failed.
    #[error("authentication failed")]
    Refused,
    /// The connection failed.
    #[error("connection failed: {0}")]
    Io(#[from] io::Error),
    /// A subscription ended because its promise no longer holds.
    #[error("notices no longer cover local changes; the client subscribes again")]
    Resubscribe,
}

/// A whole frame at the head of the receive ring: its header and meta part copied out once,
/// its data part still in the ring.
struct Incoming<'s> {
    slot: RecvSlot<'s>,
    header: FrameHeader,
    meta: Vec<u8>,
}

impl Incoming<'_> {
    /// The data part, in place in the ring (which the client may still write: a write's
    /// bytes are taken as they are when `pwrite` copies them).
    fn data(&self) -> Result<SharedBytes<'_>, End> {
        let start = HEADER + self.header.meta_len as usize;
        self.slot
            .data()?
            .get(start..self.header.total())
            .ok_or_else(|| End::Protocol("frame vanished".into()))
    }

    /// Releases the frame's bytes to the client.
    fn consume(self) -> Result<(), End> {
        let n = self.header.total();
        self.slot.consume(n)?;
        Ok(())
    }
}

/// Waits for the next whole frame. `deadline` bounds the wait (the handshake); the stop flag
/// is looked at every [`POLL`].
fn next_frame<'s>(
    stream: &'s VmmcStream,
    shared: &Shared,
    deadline: Option<Instant>,
) -> Result<Incoming<'s>, End> {
    let mut need = HEADER;
    loop {
        match stream.readable_at_least(need) {
            Ok(slot) => {
                if slot.is_empty() {
                    return Err(End::Closed);
                }
                let seen = {
                    let bytes = slot.data()?;
                    frame::arrival(slot.len(), |at, dst| {
                        bytes.get(at..).map_or(0, |b| b.copy_to(dst))
                    })
                    .map_err(|e| End::Protocol(e.to_string()))?
                };
                let want = match seen {
                    Arrival::Whole { header, meta } => return Ok(Incoming { slot, header, meta }),
                    Arrival::Need(want) => want,
                };
                if slot.len() < need {
                    return Err(End::Protocol(format!(
                        "connection closed in the middle of a {need}-byte message"
                    )));
                }
                need = want;
            }
            Err(e) if matches!(e.kind(), ErrorKind::TimedOut | ErrorKind::WouldBlock) => {
                if shared.stop.load(Ordering::Relaxed) {
                    return Err(End::Stopping);
                }
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    return Err(End::Protocol("handshake timed out".into()));
                }
            }
            Err(e) if e.kind() == ErrorKind::InvalidInput => {
                return Err(End::Protocol(format!(
                    "a message of {need} bytes does not fit the ring"
                )))
            }
            Err(e) => return Err(End::Io(e)),
        }
    }
}

/// Decodes the meta part of a frame that carries no data, and consumes the frame.
fn take<T: serde::de::DeserializeOwned>(frame: Incoming<'_>) -> Result<T, End> {
    if frame.header.data_len != 0 {
        return Err(End::Protocol("unexpected data part".into()));
    }
    let value = codec::decode::<T>(&frame.meta).map_err(|e| End::Protocol(e.to_string()))?;
    frame.consume()?;
    Ok(value)
}

/// Sends a frame with no data part.
/// Waits for `total` bytes of room in the client's ring. A client that stops reading its
/// replies stalls only this connection, and not past the server's stop.
fn reserve<'s>(
    stream: &'s VmmcStream,
    stop: &AtomicBool,
    total: usize,
) -> Result<SendSlot<'s>, End> {
    loop {
        match stream.reserve_at_least(total, total) {
            Ok(slot) => return Ok(slot),
            Err(e) if matches!(e.kind(), ErrorKind::TimedOut | ErrorKind::WouldBlock) => {
                if stop.load(Ordering::Relaxed) {
                    return Err(End::Stopping);
                }
            }
            Err(e) => return Err(End::Io(e)),
        }
    }
}

fn send<T: Serialize>(stream: &VmmcStream, stop: &AtomicBool, msg: &T) -> Result<(), End> {
    let frame = codec::frame_to_vec(msg, &[]).map_err(|e| End::Protocol(e.to_string()))?;
    let mut slot = reserve(stream, stop, frame.len())?;
    if slot.buf()?.copy_from(&frame) != frame.len() {
        return Err(End::Protocol(
            "the reply's slot is shorter than asked".into(),
        ));
    }
    slot.commit(frame.len())?;
    Ok(())
}

fn random<const N: usize>() -> io::Result<[u8; N]> {
    let mut b = [0u8; N];
    getrandom::fill(&mut b).map_err(io::Error::other)?;
    Ok(b)
}

/// The handshake: version, then proof of the secret (if the server has one) both ways.
fn handshake(stream: &VmmcStream, shared: &Shared) -> Result<Session, End> {
    let deadline = Some(Instant::now() + HANDSHAKE_TIMEOUT);
    let hello: ClientHello = take(next_frame(stream, shared, deadline)?)?;
    if hello.magic != MAGIC {
        return Err(End::Protocol("not a DFS client".into()));
    }
    if !(hello.min_version..=hello.max_version).contains(&PROTOCOL_VERSION) {
        send(
            stream,
            &shared.stop,
            &ServerChallenge::Refused {
                errno: Errno(libc::EPROTONOSUPPORT),
                reason: format!(
                    "the server speaks protocol version {PROTOCOL_VERSION}, the client {}..={}",
                    hello.min_version, hello.max_version
                ),
            },
        )?;
        return Err(End::Protocol("no common protocol version".into()));
    }
    let server_nonce = random::<32>()?;
    let auth = if shared.secret.is_some() {
        AuthMode::Secret
    } else {
        AuthMode::None
    };
    send(
        stream,
        &shared.stop,
        &ServerChallenge::Challenge {
            version: PROTOCOL_VERSION,
            server_nonce,
            auth,
        },
    )?;
    let proof: ClientProof = take(next_frame(stream, shared, deadline)?)?;
    let server_proof =
        match &shared.secret {
            None => [0u8; 32],
            Some(secret) => {
                let want = secret.client_proof(&hello.client_nonce, &server_nonce, &hello.session);
                if !proofs_match(&want, &proof.proof) {
                    send(stream, &shared.stop,
                    &ServerVerdict::Refused {
                        errno: Errno::EACCES,
                        reason:
                            "authentication failed: the client does not know the server's secret"
                                .into(),
                    },
                )?;
                    return Err(End::Refused);
                }
                secret.server_proof(&hello.client_nonce, &server_nonce, &hello.session)
            }
        };
    send(
        stream,
        &shared.stop,
        &ServerVerdict::Welcome {
            root: shared.root.clone(),
            server_proof,
            read_only: shared.fs.read_only,
        },
    )?;
    Ok(hello.session)
}

/// What one connection's requests run with: the client session its opens belong to, and
/// what its peer may claim about its callers.
#[derive(Debug)]
pub struct Conn {
    /// The session, bound to the peer's principal.
    pub session: Session,
    /// Whose identity the peer's requests may run as.
    pub trust: Trust,
}

/// The session a connection's opens belong to: the client's own session id, bound to who
/// the peer is, so that knowing another client's session id (it travels in the hello) never
/// lets a peer use opens made with someone else's rights.
fn bind_session(client: &Session, peer: &PeerIdentity, trust: &Trust) -> Session {
    match (peer, trust) {
        (PeerIdentity::Local { uid, .. }, _) => bind_local_session(client, *uid),
        (PeerIdentity::Remote(_), Trust::Claims) => {
            binding(client, &[b"remote, entitled to claim"])
        }
        (PeerIdentity::Remote(_), _) => binding(client, &[b"remote, nobody"]),
    }
}

/// [`bind_session`] for a local peer, whose binding is its uid alone (also what the lending
/// socket, which knows its peer by uid, binds to).
pub(crate) fn bind_local_session(client: &Session, uid: u32) -> Session {
    binding(client, &[b"local", &uid.to_le_bytes()])
}

fn binding(client: &Session, parts: &[&[u8]]) -> Session {
    let mut h = blake3::Hasher::new_derive_key("vmmc-dfs 2026 session binding v1");
    h.update(client);
    for p in parts {
        h.update(p);
    }
    let mut s = [0u8; 16];
    s.copy_from_slice(&h.finalize().as_bytes()[..16]);
    s
}

/// Serves one connection until it ends; the reason is logged by the caller. `peer` is who
/// the kernel says is at the other end (its process on shm, its address on tcp).
pub fn serve(stream: VmmcStream, shared: Arc<Shared>, peer: PeerIdentity) -> End {
    if let Err(e) = stream
        .set_read_timeout(Some(POLL))
        .and_then(|()| stream.set_write_timeout(Some(POLL)))
    {
        return End::Io(e);
    }
    let client_session = match handshake(&stream, &shared) {
        Ok(s) => s,
        Err(e) => return e,
    };
    // The handshake refuses a peer without the secret when there is one.
    let trust = Trust::of(&peer, shared.secret.is_some(), shared.trusted_network);
    let conn = Conn {
        session: bind_session(&client_session, &peer, &trust),
        trust,
    };
    let _attached = Attached::new(&shared, conn.session, &peer);
    loop {
        let r = if shared.copy_path {
            copying::serve_one(&stream, &shared, &conn)
        } else {
            serve_one(&stream, &shared, &conn)
        };
        if let Err(e) = r {
            break e;
        }
    }
}

/// A connection's place in its session: while any connection of a session lives, its opens
/// stay. Detached on drop, so that even a connection thread that unwinds (a bug; no peer can
/// cause one) leaves no open files behind.
struct Attached<'a> {
    shared: &'a Shared,
    session: Session,
}

impl<'a> Attached<'a> {
    fn new(shared: &'a Shared, session: Session, peer: &PeerIdentity) -> Attached<'a> {
        shared
            .fs
            .opens
            .attach(session, crate::opens::Peer::of(peer));
        Attached { shared, session }
    }
}

impl Drop for Attached<'_> {
    fn drop(&mut self) {
        self.shared.fs.opens.detach(self.session);
    }
}

/// Reads one request and answers it.
fn serve_one(stream: &VmmcStream, shared: &Shared, conn: &Conn) -> Result<(), End> {
    let frame = next_frame(stream, shared, None)?;
    let req: Request = codec::decode(&frame.meta).map_err(|e| End::Protocol(e.to_string()))?;
    // A write's bytes are used where they lie, in this side's ring: `pwrite` from there.
    let reply = match &req.op {
        Op::Read { .. } if frame.header.data_len == 0 => None,
        Op::Subscribe if frame.header.data_len == 0 && req.id != NO_REPLY => {
            frame.consume()?;
            return serve_notices(stream, shared, conn, req.id);
        }
        op => {
            let data = frame.data()?;
            Some(execute(shared, conn, &req, op, data))
        }
    };
    frame.consume()?;
    match reply {
        // A request that asked for no reply (a release) has none, whatever its outcome.
        Some(_) if req.id == NO_REPLY => Ok(()),
        Some(result) => send(stream, &shared.stop, &Reply { id: req.id, result }),
        None => send_read(stream, shared, conn, &req),
    }
}

/// Runs a request (not a read) and tells the other clients what it changed.
fn execute(
    shared: &Shared,
    conn: &Conn,
    req: &Request,
    op: &Op,
    data: SharedBytes<'_>,
) -> Result<Body, Errno> {
    let result = shared
        .fs
        .caller(&conn.session, &conn.trust, &req.creds)
        .and_then(|c| shared.fs.execute(&c, op, data));
    if let Ok(body) = &result {
        shared.changed(&conn.session, op, body);
    }
    result
}

/// Serves a subscribed connection: the answer, then [`dfs_proto::msg::Notice`]s of what other clients and
/// local programs change, until the client closes it or the server stops. The client sends
/// nothing more on it.
fn serve_notices(stream: &VmmcStream, shared: &Shared, conn: &Conn, id: u64) -> Result<(), End> {
    // Subscribed before the answer, so that no change after it goes untold.
    let sub = shared.notices.subscribe(conn.session);
    let local_changes = shared.sees_local_changes();
    send(
        stream,
        &shared.stop,
        &Reply {
            id,
            result: Ok(Body::Subscribed { local_changes }),
        },
    )?;
    loop {
        if shared.stop.load(Ordering::Relaxed) {
            return Err(End::Stopping);
        }
        if sub.subscriber().is_closed() {
            return Err(End::Resubscribe);
        }
        let r = stream.readiness(false);
        if r.hangup || r.error {
            return Err(End::Closed);
        }
        if r.readable {
            let slot = stream.readable()?;
            return Err(if slot.is_empty() {
                End::Closed
            } else {
                End::Protocol("a request on a subscribed connection".into())
            });
        }
        if let Some(change) = sub.subscriber().next(POLL) {
            for notice in change.resolve(&shared.fs.handles).split() {
                send(stream, &shared.stop, &notice)?;
            }
        }
    }
}

/// Answers a read: the reply header, then the file's bytes straight into the client's ring
/// behind it (`pread` into the ring on shm; `sendfile` from the page cache on tcp, see
/// [`vmmc_sockets::SendSlot::fill_from_file`]).
fn send_read(stream: &VmmcStream, shared: &Shared, conn: &Conn, req: &Request) -> Result<(), End> {
    let Op::Read {
        handle,
        open,
        offset,
        len,
    } = &req.op
    else {
        return Err(End::Protocol("not a read".into()));
    };
    let room = (stream.send_buffer_size() as usize).saturating_sub(HEADER + READ_META_ROOM);
    let len = (*len as usize).min(MAX_DATA).min(room);
    let total = HEADER + READ_META_ROOM + len;
    let mut slot = reserve(stream, &shared.stop, total)?;
    // The header and meta are made here and copied in; the file's bytes go straight from the
    // page cache into the client's ring behind them.
    let mut head = [0u8; HEADER + READ_META_ROOM];
    let mut put_head = |slot: &mut SendSlot<'_>, result: Result<Body, Errno>, n: usize| {
        let start = codec::emit_head(&mut head, &Reply { id: req.id, result }, n)
            .map_err(|e| End::Protocol(e.to_string()))?;
        slot.buf()?.copy_from(&head[..start]);
        Ok::<usize, End>(start)
    };
    let start = put_head(&mut slot, Ok(Body::Read { eof: false }), len)?;
    let outcome = shared
        .fs
        .caller(&conn.session, &conn.trust, &req.creds)
        .and_then(|c| shared.fs.read_fd(&c, handle, *open))
        .and_then(|fd| {
            i64::try_from(*offset).map_err(|_| Errno::EINVAL)?;
            slot.fill_from_file(start, fd.as_fd(), *offset, len)
                .map_err(|e| crate::fs::errno_of(&e))
        });
    let used = match outcome {
        Ok(n) => {
            // `eof` is one byte either way, so the data part stays where it was read to.
            let again = put_head(&mut slot, Ok(Body::Read { eof: n < len }), n)?;
            debug_assert_eq!(again, start);
            start + n
        }
        Err(errno) => put_head(&mut slot, Err(errno), 0)?,
    };
    slot.commit(used)?;
    if len >= LONG_READ {
        // The client copies the block out of its ring before it sends anything more on this
        // connection: spinning for its next request would only take its core.
        stream.set_next_read_spin(Duration::ZERO);
    }
    Ok(())
}

/// The same service over the copying socket calls (`read`/`write`), for `dfs bench` to show
/// what the pointer path saves. Nothing else uses it.
mod copying {
    use std::io::{ErrorKind, Read, Write};
    use std::sync::atomic::Ordering;

    use dfs_proto::codec;
    use dfs_proto::frame::{FrameHeader, HEADER, MAX_DATA};
    use dfs_proto::msg::{Body, Op, Reply, Request};
    use vmmc_sockets::{SharedBytes, SharedBytesMut, VmmcStream};

    use super::{Conn, End};
    use crate::server::Shared;

    fn read_all(stream: &VmmcStream, shared: &Shared, buf: &mut [u8]) -> Result<(), End> {
        let mut got = 0;
        while got < buf.len() {
            match (&mut &*stream).read(&mut buf[got..]) {
                Ok(0) if got == 0 => return Err(End::Closed),
                Ok(0) => return Err(End::Protocol("connection closed mid-message".into())),
                Ok(n) => got += n,
                Err(e) if matches!(e.kind(), ErrorKind::TimedOut | ErrorKind::WouldBlock) => {
                    if shared.stop.load(Ordering::Relaxed) {
                        return Err(End::Stopping);
                    }
                }
                Err(e) => return Err(End::Io(e)),
            }
        }
        Ok(())
    }

    fn write_all(stream: &VmmcStream, shared: &Shared, buf: &[u8]) -> Result<(), End> {
        let mut put = 0;
        while put < buf.len() {
            match (&mut &*stream).write(&buf[put..]) {
                Ok(n) => put += n,
                Err(e) if matches!(e.kind(), ErrorKind::TimedOut | ErrorKind::WouldBlock) => {
                    if shared.stop.load(Ordering::Relaxed) {
                        return Err(End::Stopping);
                    }
                }
                Err(e) => return Err(End::Io(e)),
            }
        }
        Ok(())
    }

    fn frame(reply: &Reply, data: &[u8]) -> Result<Vec<u8>, End> {
        codec::frame_to_vec(reply, data).map_err(|e| End::Protocol(e.to_string()))
    }

    pub(super) fn serve_one(stream: &VmmcStream, shared: &Shared, conn: &Conn) -> Result<(), End> {
        let mut head = [0u8; HEADER];
        read_all(stream, shared, &mut head)?;
        let h = FrameHeader::parse(&head)
            .map_err(|e| End::Protocol(e.to_string()))?
            .ok_or_else(|| End::Protocol("short header".into()))?;
        let mut meta = vec![0u8; h.meta_len as usize];
        read_all(stream, shared, &mut meta)?;
        let mut data = vec![0u8; h.data_len as usize];
        read_all(stream, shared, &mut data)?;
        let req: Request = codec::decode(&meta).map_err(|e| End::Protocol(e.to_string()))?;
        let caller = shared.fs.caller(&conn.session, &conn.trust, &req.creds);
        let out = match &req.op {
            Op::Read {
                handle,
                open,
                offset,
                len,
            } if data.is_empty() => {
                let mut buf = vec![0u8; (*len as usize).min(MAX_DATA)];
                let mut into = SharedBytesMut::from(&mut buf[..]);
                match caller.and_then(|c| shared.fs.read(&c, handle, *open, *offset, &mut into)) {
                    Ok((n, eof)) => frame(
                        &Reply {
                            id: req.id,
                            result: Ok(Body::Read { eof }),
                        },
                        &buf[..n],
                    )?,
                    Err(e) => frame(
                        &Reply {
                            id: req.id,
                            result: Err(e),
                        },
                        &[],
                    )?,
                }
            }
            Op::Subscribe if data.is_empty() && req.id != dfs_proto::msg::NO_REPLY => {
                return super::serve_notices(stream, shared, conn, req.id);
            }
            op => {
                let result =
                    caller.and_then(|c| shared.fs.execute(&c, op, SharedBytes::from(&data[..])));
                if let Ok(body) = &result {
                    shared.changed(&conn.session, op, body);
                }
                if req.id == dfs_proto::msg::NO_REPLY {
                    return Ok(());
                }
                frame(&Reply { id: req.id, result }, &[])?
            }
        };
        write_all(stream, shared, &out)?;
        if out.len() >= super::LONG_READ {
            // As on the pointer path (see `send_read`).
            stream.set_next_read_spin(std::time::Duration::ZERO);
        }
        Ok(())
    }
}
