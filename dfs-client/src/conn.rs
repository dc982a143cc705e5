//! One connection to a server.

use std::io::{self, ErrorKind};
use std::time::Duration;

use crate::creds::current_creds;
use dfs_proto::auth::{proofs_match, Secret};
use dfs_proto::codec;
use dfs_proto::frame::{self, Arrival, FrameHeader, HEADER};
use dfs_proto::handle::{FileHandle, OpenId};
use dfs_proto::msg::{
    AuthMode, Body, ClientHello, ClientProof, Creds, Notice, Op, Reply, Request, ServerChallenge,
    ServerVerdict, MAGIC, NO_REPLY, PROTOCOL_VERSION,
};
use dfs_proto::Errno;
use serde::Serialize;
use vmmc_sockets::{RecvSlot, RingSize, SharedBytes, StreamOptions, VmmcStream};

/// Reads at least this large are answered later than a spin lasts (the server copies the
/// block first): their reply is waited for without spinning.
const LONG_READ: u32 = 256 << 10;

/// How to connect.
#[derive(Clone, Debug)]
pub struct ConnectOptions {
    /// The shared secret, if the server wants one.
    pub secret: Option<Secret>,
    /// This client's session: connections with the same session share opens.
    pub session: [u8; 16],
    /// Receive ring (at least [`dfs_proto::frame::MAX_FRAME`]).
    pub ring: RingSize,
    /// How long any one reply may take before the call fails with `TimedOut`.
    pub timeout: Duration,
    /// Move file data with the copying socket calls instead of reading it in place: only for
    /// measuring what the copies cost (`dfs bench`).
    pub copy_path: bool,
}

impl ConnectOptions {
    /// No secret, a fresh random session, 4 MiB ring, 30 s timeout.
    pub fn new() -> io::Result<ConnectOptions> {
        let mut session = [0u8; 16];
        getrandom::fill(&mut session).map_err(io::Error::other)?;
        Ok(ConnectOptions {
            secret: None,
            session,
            ring: RingSize::default(),
            timeout: Duration::from_secs(30),
            copy_path: false,
        })
    }
}

/// Why a connection could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The transport failed (nothing listening, …).
    #[error("{0}")]
    Io(#[from] io::Error),
    /// The server refused us.
    #[error("the server refused the connection: {reason}")]
    Refused {
        /// Its errno (`EACCES` for a wrong secret).
        errno: Errno,
        /// Its words.
        reason: String,
    },
    /// The server wants a secret and we have none.
    #[error("the server requires a secret (--secret FILE)")]
    NeedSecret,
    /// The server could not prove that it knows the secret: an impostor.
    #[error("the server did not prove that it knows the secret")]
    NotAuthentic,
    /// The server broke the protocol.
    #[error("protocol error: {0}")]
    Protocol(String),
}

/// Why a call failed (an errno from the server is not a failure of the call).
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The connection failed or timed out; it cannot be used any more.
    #[error("{0}")]
    Io(#[from] io::Error),
    /// The connection failed before the request left: the server never saw it, so it may
    /// be sent again on another connection whatever it was.
    #[error("{0}")]
    NotSent(io::Error),
    /// The server sent something malformed; the connection cannot be used any more.
    #[error("protocol error: {0}")]
    Protocol(String),
}

impl CallError {
    /// Whether the request surely never reached the server.
    pub fn unsent(&self) -> bool {
        matches!(self, CallError::NotSent(_))
    }

    /// The errno a file-system caller should see.
    pub fn errno(&self) -> Errno {
        match self {
            CallError::Io(e) if e.kind() == ErrorKind::TimedOut => Errno(libc_etimedout()),
            CallError::Io(_) | CallError::NotSent(_) => Errno::ENOTCONN,
            CallError::Protocol(_) => Errno::EIO,
        }
    }
}

fn libc_etimedout() -> i32 {
    110
}

/// Request ids nobody else can predict: a keyed hash of a counter, with a key from the
/// operating system's CSPRNG. A reply is matched to its request by id, so an id someone could
/// guess would let a peer that can write replies but not read requests plant one that is
/// believed.
struct RequestIds {
    key: [u8; 32],
    n: u64,
}

impl RequestIds {
    fn new() -> io::Result<RequestIds> {
        let mut key = [0u8; 32];
        getrandom::fill(&mut key).map_err(io::Error::other)?;
        Ok(RequestIds { key, n: 0 })
    }

    fn next(&mut self) -> u64 {
        loop {
            self.n += 1;
            let h = blake3::keyed_hash(&self.key, &self.n.to_le_bytes());
            let mut id = [0u8; 8];
            id.copy_from_slice(&h.as_bytes()[..8]);
            // 0 asks for no reply.
            match u64::from_le_bytes(id) {
                NO_REPLY => continue,
                id => return id,
            }
        }
    }
}

impl std::fmt::Debug for RequestIds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequestIds").field("n", &self.n).finish()
    }
}

/// A connection to a server, after the handshake.
#[derive(Debug)]
pub struct Connection {
    stream: VmmcStream,
    ids: RequestIds,
    root: FileHandle,
    read_only: bool,
    broken: bool,
    copy_path: bool,
}

fn proto(e: impl std::fmt::Display) -> ConnectError {
    ConnectError::Protocol(e.to_string())
}

impl Connection {
    /// Connects to `addr` and completes the handshake.
    pub fn connect(addr: &str, opts: &ConnectOptions) -> Result<Connection, ConnectError> {
        let sopts = StreamOptions {
            ring: opts.ring,
            connect_timeout: opts.timeout,
            ..StreamOptions::default()
        };
        let stream = VmmcStream::connect_with(addr, &sopts)?;
        stream.set_read_timeout(Some(opts.timeout))?;
        stream.set_write_timeout(Some(opts.timeout))?;
        let mut client_nonce = [0u8; 32];
        getrandom::fill(&mut client_nonce).map_err(io::Error::other)?;
        send(
            &stream,
            &ClientHello {
                magic: MAGIC,
                min_version: PROTOCOL_VERSION,
                max_version: PROTOCOL_VERSION,
                client_nonce,
                session: opts.session,
            },
            &[],
        )
        .map_err(proto)?;
        let challenge: ServerChallenge = recv(&stream).map_err(proto)?;
        let (server_nonce, auth) = match challenge {
            ServerChallenge::Challenge {
                server_nonce, auth, ..
            } => (server_nonce, auth),
            ServerChallenge::Refused { errno, reason } => {
                return Err(ConnectError::Refused { errno, reason })
            }
        };
        let proof = match (auth, &opts.secret) {
            // A client that holds a secret expects the server to prove it knows it too; a
            // server that asks for nothing cannot.
            (AuthMode::None, Some(_)) => return Err(ConnectError::NotAuthentic),
            (AuthMode::None, None) => [0u8; 32],
            (AuthMode::Secret, Some(s)) => {
                s.client_proof(&client_nonce, &server_nonce, &opts.session)
            }
            (AuthMode::Secret, None) => return Err(ConnectError::NeedSecret),
        };
        send(&stream, &ClientProof { proof }, &[]).map_err(proto)?;
        match recv::<ServerVerdict>(&stream).map_err(proto)? {
            ServerVerdict::Welcome {
                root,
                server_proof,
                read_only,
            } => {
                if let (AuthMode::Secret, Some(s)) = (auth, &opts.secret) {
                    let want = s.server_proof(&client_nonce, &server_nonce, &opts.session);
                    if !proofs_match(&want, &server_proof) {
                        return Err(ConnectError::NotAuthentic);
                    }
                }
                Ok(Connection {
                    stream,
                    ids: RequestIds::new()?,
                    root,
                    read_only,
                    broken: false,
                    copy_path: opts.copy_path,
                })
            }
            ServerVerdict::Refused { errno, reason } => {
                Err(ConnectError::Refused { errno, reason })
            }
        }
    }

    /// The export's root directory.
    pub fn root(&self) -> &FileHandle {
        &self.root
    }

    /// Whether the server refuses every change.
    pub fn read_only(&self) -> bool {
        self.read_only
    }

    /// Whether a call on this connection failed: it cannot be used any more.
    pub fn is_broken(&self) -> bool {
        self.broken
    }

    /// The stream underneath (for tests that misbehave on purpose).
    pub fn stream(&self) -> &VmmcStream {
        &self.stream
    }

    fn check(&self) -> Result<(), CallError> {
        if self.broken {
            return Err(CallError::Io(io::Error::new(
                ErrorKind::NotConnected,
                "the connection failed earlier",
            )));
        }
        Ok(())
    }

    fn fail<T>(&mut self, e: CallError) -> Result<T, CallError> {
        self.broken = true;
        Err(e)
    }

    /// Sends `op` and does not wait: the server answers nothing and drops whatever it fails
    /// with ([`NO_REPLY`]). For what nothing waits on, such as a release: no round trip.
    pub fn send_only(&mut self, creds: &Creds, op: Op) -> Result<(), CallError> {
        self.check()?;
        let req = Request {
            id: NO_REPLY,
            creds: creds.clone(),
            op,
        };
        let sent = if self.copy_path {
            copying::send(&self.stream, &req)
        } else {
            send(&self.stream, &req, &[])
        };
        sent.or_else(|e| self.fail(not_sent(e)))
    }

    /// Sends `op` (with `data` as a write's data part) and waits for its reply.
    pub fn call(&mut self, creds: &Creds, op: Op, data: &[u8]) -> Result<Reply, CallError> {
        self.exchange(creds, op, data, |reply, _data| Ok(reply))
    }

    /// Reads and hands the bytes to `f` where they arrived, in the receive ring: no copy on
    /// this side unless `f` makes one. `f` gets the reply (an errno, or `eof`) and the bytes,
    /// as [`SharedBytes`]: the server may still write them. A reply with more bytes than asked
    /// for is a protocol error (the caller's buffer was sized by what it asked).
    pub fn read_in_place<R>(
        &mut self,
        creds: &Creds,
        handle: FileHandle,
        open: Option<OpenId>,
        offset: u64,
        len: u32,
        f: impl FnOnce(Reply, SharedBytes<'_>) -> R,
    ) -> Result<R, CallError> {
        let op = Op::Read {
            handle,
            open,
            offset,
            len,
        };
        if len >= LONG_READ {
            // The server takes longer to copy the block than a spin lasts: the core is
            // better left to it (and to the other requests in flight).
            self.stream.set_next_read_spin(Duration::ZERO);
        }
        self.exchange(creds, op, &[], |reply, data| {
            if data.len() > len as usize {
                return Err(CallError::Protocol(format!(
                    "the server answered a read of {len} bytes with {}",
                    data.len()
                )));
            }
            Ok(f(reply, data))
        })
    }

    /// Sends a read and returns at once; [`Connection::finish_read`] takes its reply. Two
    /// connections can each have one in flight, so that the server reads the second part of
    /// a large read while the caller copies out the first. Not on the copy path.
    pub fn start_read(
        &mut self,
        creds: &Creds,
        handle: FileHandle,
        open: Option<OpenId>,
        offset: u64,
        len: u32,
    ) -> Result<StartedRead, CallError> {
        self.check()?;
        if self.copy_path {
            return Err(CallError::NotSent(io::Error::new(
                ErrorKind::Unsupported,
                "reads in flight need the pointer path",
            )));
        }
        let id = self.ids.next();
        let req = Request {
            id,
            creds: creds.clone(),
            op: Op::Read {
                handle,
                open,
                offset,
                len,
            },
        };
        if let Err(e) = send(&self.stream, &req, &[]) {
            return self.fail(not_sent(e));
        }
        Ok(StartedRead { id, len })
    }

    /// The reply to a read [`Connection::start_read`] sent, handed to `f` in place as
    /// [`Connection::read_in_place`] does.
    pub fn finish_read<R>(
        &mut self,
        started: StartedRead,
        f: impl FnOnce(Reply, SharedBytes<'_>) -> R,
    ) -> Result<R, CallError> {
        let len = started.len;
        recv_reply(&self.stream, started.id, |reply, data| {
            if data.len() > len as usize {
                return Err(CallError::Protocol(format!(
                    "the server answered a read of {len} bytes with {}",
                    data.len()
                )));
            }
            Ok(f(reply, data))
        })
        .or_else(|e| self.fail(e))
    }

    /// One request and its reply, whose data part `f` gets in place (or, on the copy path,
    /// from a buffer). A failure breaks the connection.
    fn exchange<R>(
        &mut self,
        creds: &Creds,
        op: Op,
        data: &[u8],
        f: impl FnOnce(Reply, SharedBytes<'_>) -> Result<R, CallError>,
    ) -> Result<R, CallError> {
        self.check()?;
        let id = self.ids.next();
        let req = Request {
            id,
            creds: creds.clone(),
            op,
        };
        if self.copy_path {
            let r = copying::call(&self.stream, &req, data)
                .and_then(|(reply, data)| f(reply, SharedBytes::from(&data[..])));
            return r.or_else(|e| self.fail(e));
        }
        if let Err(e) = send(&self.stream, &req, data) {
            return self.fail(not_sent(e));
        }
        recv_reply(&self.stream, id, f).or_else(|e| self.fail(e))
    }
}

/// A read in flight on a connection (see [`Connection::start_read`]); its reply must be
/// taken before the connection is used for anything else.
#[derive(Debug)]
#[must_use]
pub struct StartedRead {
    id: u64,
    len: u32,
}

/// How long [`Notices::next`] waits before it says there was nothing.
pub const NOTICE_WAIT: Duration = Duration::from_millis(250);

/// A connection the server sends its [`Notice`]s on (see [`Connection::subscribe`]).
#[derive(Debug)]
pub struct Notices {
    stream: VmmcStream,
    local_changes: bool,
}

impl Connection {
    /// Makes this connection its session's notice channel: from now on the server tells it
    /// what other clients and local programs change, and it carries nothing else.
    pub fn subscribe(mut self) -> Result<Notices, CallError> {
        let reply = self.call(&current_creds(), Op::Subscribe, &[])?;
        match reply.result {
            Ok(Body::Subscribed { local_changes }) => {
                self.stream.set_read_timeout(Some(NOTICE_WAIT))?;
                Ok(Notices {
                    stream: self.stream,
                    local_changes,
                })
            }
            Ok(other) => Err(CallError::Protocol(format!(
                "a subscription answered with {other:?}"
            ))),
            Err(e) => Err(CallError::Io(io::Error::from_raw_os_error(e.0))),
        }
    }
}

impl Notices {
    /// Whether the server notices what local programs change in the export too (else only
    /// what its clients change).
    pub fn local_changes(&self) -> bool {
        self.local_changes
    }

    /// The stream underneath (for tests that misbehave on purpose).
    pub fn stream(&self) -> &VmmcStream {
        &self.stream
    }

    /// The next notice, or `None` after [`NOTICE_WAIT`] without one. A malformed notice or
    /// one larger than the protocol allows ends the channel with an error.
    pub fn next(&self) -> Result<Option<Notice>, CallError> {
        let (slot, header, meta) = match next_frame(&self.stream) {
            Ok(f) => f,
            Err(CallError::Io(e))
                if matches!(e.kind(), ErrorKind::TimedOut | ErrorKind::WouldBlock) =>
            {
                return Ok(None)
            }
            Err(e) => return Err(e),
        };
        if header.data_len != 0 {
            return Err(CallError::Protocol("a notice with a data part".into()));
        }
        let n: Notice = codec::decode(&meta).map_err(|e| CallError::Protocol(e.to_string()))?;
        if !n.is_valid() {
            return Err(CallError::Protocol(format!(
                "a notice of {} items, more than the protocol allows",
                n.len()
            )));
        }
        slot.consume(header.total())?;
        Ok(Some(n))
    }
}

/// A send that failed on a dead connection left nothing behind: the ring never took the
/// frame, or it died with the connection.
fn not_sent(e: CallError) -> CallError {
    match e {
        CallError::Io(e) => CallError::NotSent(e),
        e => e,
    }
}

/// Sends a frame: header, meta, then `data` copied into place (a write from a caller's buffer
/// is this one copy).
fn send<T: Serialize>(stream: &VmmcStream, msg: &T, data: &[u8]) -> Result<(), CallError> {
    let meta = codec::encode_to_vec(msg).map_err(|e| CallError::Protocol(e.to_string()))?;
    let total = HEADER + meta.len() + data.len();
    let mut slot = stream.reserve_at_least(total, total)?;
    let mut head = [0u8; HEADER];
    FrameHeader {
        meta_len: meta.len() as u32,
        data_len: data.len() as u32,
    }
    .emit(&mut head);
    {
        let mut buf = slot.buf()?;
        let placed = [&head[..], &meta, data]
            .iter()
            .try_fold(0usize, |at, part| {
                let mut to = buf.get_mut(at..at + part.len())?;
                (to.copy_from(part) == part.len()).then_some(at + part.len())
            });
        if placed != Some(total) {
            return Err(CallError::Io(io::Error::other(
                "the send slot is shorter than asked",
            )));
        }
    }
    slot.commit(total)?;
    Ok(())
}

/// Waits for a whole frame; returns it with its header and meta part copied out (once: the
/// server may still write the ring), its data part in place.
fn next_frame(stream: &VmmcStream) -> Result<(RecvSlot<'_>, FrameHeader, Vec<u8>), CallError> {
    let mut need = HEADER;
    loop {
        let slot = stream.readable_at_least(need)?;
        if slot.is_empty() {
            return Err(CallError::Io(io::Error::new(
                ErrorKind::UnexpectedEof,
                "the server closed the connection",
            )));
        }
        let seen = {
            let bytes = slot.data()?;
            frame::arrival(slot.len(), |at, dst| {
                bytes.get(at..).map_or(0, |b| b.copy_to(dst))
            })
            .map_err(|e| CallError::Protocol(e.to_string()))?
        };
        let want = match seen {
            Arrival::Whole { header, meta } => return Ok((slot, header, meta)),
            Arrival::Need(want) => want,
        };
        if slot.len() < need {
            return Err(CallError::Io(io::Error::new(
                ErrorKind::UnexpectedEof,
                "the server closed the connection mid-message",
            )));
        }
        need = want;
    }
}

fn recv<T: serde::de::DeserializeOwned>(stream: &VmmcStream) -> Result<T, CallError> {
    let (slot, header, meta) = next_frame(stream)?;
    let v = codec::decode::<T>(&meta).map_err(|e| CallError::Protocol(e.to_string()))?;
    slot.consume(header.total())?;
    Ok(v)
}

fn recv_reply<R>(
    stream: &VmmcStream,
    id: u64,
    f: impl FnOnce(Reply, SharedBytes<'_>) -> Result<R, CallError>,
) -> Result<R, CallError> {
    let (slot, header, meta) = next_frame(stream)?;
    let reply: Reply = codec::decode(&meta).map_err(|e| CallError::Protocol(e.to_string()))?;
    if reply.id != id {
        return Err(CallError::Protocol(format!(
            "reply {} to request {id}",
            reply.id
        )));
    }
    let r = {
        let data = slot
            .data()?
            .get(HEADER + header.meta_len as usize..header.total())
            .ok_or_else(|| CallError::Protocol("frame vanished".into()))?;
        f(reply, data)?
    };
    slot.consume(header.total())?;
    Ok(r)
}

/// The same calls over the copying socket calls (`write` of a whole frame, `read_exact` of
/// the reply into buffers), for `dfs bench` to show what reading in place saves.
mod copying {
    use std::io::{Read, Write};

    use dfs_proto::codec;
    use dfs_proto::frame::{FrameHeader, HEADER};
    use dfs_proto::msg::{Reply, Request};
    use vmmc_sockets::VmmcStream;

    use super::CallError;

    /// Writes a request whose reply nobody waits for.
    pub(super) fn send(stream: &VmmcStream, req: &Request) -> Result<(), CallError> {
        let frame =
            codec::frame_to_vec(req, &[]).map_err(|e| CallError::Protocol(e.to_string()))?;
        let mut s: &VmmcStream = stream;
        s.write_all(&frame).map_err(CallError::NotSent)
    }

    pub(super) fn call(
        stream: &VmmcStream,
        req: &Request,
        data: &[u8],
    ) -> Result<(Reply, Vec<u8>), CallError> {
        let frame =
            codec::frame_to_vec(req, data).map_err(|e| CallError::Protocol(e.to_string()))?;
        let mut s: &VmmcStream = stream;
        s.write_all(&frame).map_err(CallError::NotSent)?;
        let mut head = [0u8; HEADER];
        s.read_exact(&mut head)?;
        let h = FrameHeader::parse(&head)
            .map_err(|e| CallError::Protocol(e.to_string()))?
            .ok_or_else(|| CallError::Protocol("short header".into()))?;
        let mut meta = vec![0u8; h.meta_len as usize];
        s.read_exact(&mut meta)?;
        let mut data = vec![0u8; h.data_len as usize];
        s.read_exact(&mut data)?;
        let reply: Reply = codec::decode(&meta).map_err(|e| CallError::Protocol(e.to_string()))?;
        if reply.id != req.id {
            return Err(CallError::Protocol(format!(
                "reply {} to request {}",
                reply.id, req.id
            )));
        }
        Ok((reply, data))
    }
}
