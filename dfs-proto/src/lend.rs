//! Lending an open file's descriptor to the mount on the same host.
//!
//! On one host, the fastest read is none of ours: the kernel copying a file's bytes from the
//! server's page cache straight into the reading program (FUSE passthrough, Linux 6.9+). For
//! that the mount needs the server's descriptor of the open file, which travels with
//! `SCM_RIGHTS` over a Unix socket of its own: VMMC rings carry bytes, not descriptors.
//!
//! The exchange is fixed-size and stateless. The mount sends a [`LendRequest`] naming its
//! session and one of that session's opens; the server answers with four bytes, an errno
//! (zero when the descriptor comes with them). The server lends only to the process's own
//! principal (the session binding of the main protocol applies), only descriptors open for
//! reading alone, and only to peers whose requests run as themselves (see `dfs-server`'s
//! `lend` module).

use crate::handle::OpenId;

/// The length of a request on the wire.
pub const REQUEST_LEN: usize = 32;
/// The length of a reply on the wire (with the descriptor, if any, in its control message).
pub const REPLY_LEN: usize = 4;

/// Identifies the exchange and its version, so that a stray connection is refused early.
const MAGIC: [u8; 8] = *b"dfslend1";

/// The abstract Unix socket name a server reachable at `shm:NAME` lends descriptors on.
pub fn socket_name(shm_name: &str) -> Vec<u8> {
    format!("dfs-server/{shm_name}/lend").into_bytes()
}

/// "Lend me the descriptor of this open of my session."
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LendRequest {
    /// The client's own session id, as in its hello.
    pub session: [u8; 16],
    /// One of that session's opens.
    pub open: OpenId,
}

/// A request that is not one.
#[derive(Debug, PartialEq, Eq)]
pub struct NotALendRequest;

impl LendRequest {
    /// The request's bytes.
    pub fn encode(&self) -> [u8; REQUEST_LEN] {
        let mut b = [0u8; REQUEST_LEN];
        b[..8].copy_from_slice(&MAGIC);
        b[8..24].copy_from_slice(&self.session);
        b[24..].copy_from_slice(&self.open.0.to_le_bytes());
        b
    }

    /// Reads a request; anything without the magic is refused.
    pub fn decode(b: &[u8; REQUEST_LEN]) -> Result<LendRequest, NotALendRequest> {
        if b[..8] != MAGIC {
            return Err(NotALendRequest);
        }
        let mut session = [0u8; 16];
        session.copy_from_slice(&b[8..24]);
        let mut open = [0u8; 8];
        open.copy_from_slice(&b[24..]);
        Ok(LendRequest {
            session,
            open: OpenId(u64::from_le_bytes(open)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip_and_strays_are_refused() {
        let r = LendRequest {
            session: [7; 16],
            open: OpenId(0x0123_4567_89ab_cdef),
        };
        assert_eq!(LendRequest::decode(&r.encode()), Ok(r));
        let mut stray = r.encode();
        stray[0] ^= 1;
        assert_eq!(LendRequest::decode(&stray), Err(NotALendRequest));
        assert_eq!(socket_name("dfs"), b"dfs-server/dfs/lend");
    }
}
