//! Borrowing the server's descriptors of this session's opens, on one host (see
//! [`dfs_proto::lend`]): the FUSE mount registers them for passthrough, and `dfs run`'s
//! library reads from them, so that a file's bytes are copied once, by the reader's kernel,
//! from the server's page cache.

use std::io::{self, IoSliceMut, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixStream};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use dfs_proto::handle::OpenId;
use dfs_proto::lend::{socket_name, LendRequest, REPLY_LEN};
use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};

/// How long a borrow may take before the caller goes through the rings instead.
const BORROW_TIMEOUT: Duration = Duration::from_secs(2);
/// How long after a failed connect the next borrow tries again: a server that lends
/// nothing (`--no-lend`) costs one refused connect per interval, not one per open.
const RETRY: Duration = Duration::from_secs(5);

/// The connection to a server's lending socket.
#[derive(Debug, Default)]
struct Conn {
    stream: Option<UnixStream>,
    retry_at: Option<Instant>,
}

/// Borrows descriptors of one session's opens from a server on this host. The server
/// binds the session to the user who connects (as on its main socket), so a lender must be
/// used by the process, and the user, that made the opens.
#[derive(Debug)]
pub struct Lender {
    name: Vec<u8>,
    session: [u8; 16],
    conn: Mutex<Conn>,
}

impl Lender {
    /// For the server at `addr`, whose opens belong to `session`; `None` unless the server
    /// is on this host (`shm:`).
    pub fn new(addr: &str, session: [u8; 16]) -> Option<Lender> {
        Some(Lender {
            name: socket_name(addr.strip_prefix("shm:")?),
            session,
            conn: Mutex::default(),
        })
    }

    /// The server's descriptor of `open`, over the lending socket (connected on first use,
    /// again after the connection failed). It is close-on-exec.
    pub fn borrow(&self, open: OpenId) -> io::Result<OwnedFd> {
        let mut conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        if conn.stream.is_none() {
            if conn.retry_at.is_some_and(|t| Instant::now() < t) {
                return Err(io::ErrorKind::ConnectionRefused.into());
            }
            let connected = UnixStream::connect_addr(&SocketAddr::from_abstract_name(&self.name)?)
                .and_then(|s| {
                    s.set_read_timeout(Some(BORROW_TIMEOUT))?;
                    s.set_write_timeout(Some(BORROW_TIMEOUT))?;
                    Ok(s)
                });
            match connected {
                Ok(s) => conn.stream = Some(s),
                Err(e) => {
                    conn.retry_at = Some(Instant::now() + RETRY);
                    return Err(e);
                }
            }
        }
        let Some(s) = conn.stream.as_mut() else {
            return Err(io::ErrorKind::NotConnected.into());
        };
        match exchange(s, self.session, open) {
            Ok(refused_or_lent) => refused_or_lent.map_err(io::Error::from_raw_os_error),
            Err(e) => {
                conn.stream = None;
                Err(e)
            }
        }
    }
}

/// One exchange: the outer error is the connection's, the inner the server's refusal.
fn exchange(
    s: &mut UnixStream,
    session: [u8; 16],
    open: OpenId,
) -> io::Result<Result<OwnedFd, i32>> {
    s.write_all(&LendRequest { session, open }.encode())?;
    let mut reply = [0u8; REPLY_LEN];
    let mut space = nix::cmsg_space!([std::os::fd::RawFd; 1]);
    let mut iov = [IoSliceMut::new(&mut reply)];
    let msg = recvmsg::<()>(
        s.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )?;
    let mut fd = None;
    for c in msg.cmsgs()? {
        if let ControlMessageOwned::ScmRights(raw) = c {
            for r in raw {
                // Every descriptor received is ours to close, even one too many.
                let owned = crate::sys::received_fd(r);
                fd.get_or_insert(owned);
            }
        }
    }
    if msg.bytes != REPLY_LEN {
        return Err(io::Error::other("the server's lending reply was cut short"));
    }
    Ok(match (i32::from_le_bytes(reply), fd) {
        (0, Some(fd)) => Ok(fd),
        (0, None) => return Err(io::Error::other("the server lent no descriptor")),
        (code, _) => Err(code),
    })
}
