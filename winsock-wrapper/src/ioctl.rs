//! The pointer-based requests of the seed's DFS, reached through `WSAIoctl` on a routed
//! socket: instead of `send`/`recv` copying through the program's buffers, the program gets a
//! pointer into the ring where its outgoing bytes will land, or to the received bytes in
//! place.
//!
//! All four take and return 64-bit little-endian words through `WSAIoctl`'s buffers:
//!
//! | request | in | out |
//! |---|---|---|
//! | [`SIO_VMMC_GET_SEND_POINTER`] | most bytes wanted | pointer, length (16 bytes) |
//! | [`SIO_VMMC_COMMIT_SEND`] | bytes written | nothing |
//! | [`SIO_VMMC_GET_RECV_POINTER`] | nothing | pointer, length (16 bytes) |
//! | [`SIO_VMMC_RELEASE_RECV`] | bytes consumed | nothing |
//!
//! A pointer stays valid until the matching commit or release. The receive pointer points
//! into memory the peer can still write: copy what you check before you trust it. Getting a
//! pointer never waits: with no data (or no room) yet it fails with `WSAEWOULDBLOCK`, and the
//! program waits in `select` or `WSAPoll` and asks again (tests/c/wsptr.c does).

/// `_WSAIORW(IOC_VENDOR, n)`: a vendor request that reads and writes buffers.
const fn vendor(n: u32) -> u32 {
    0x8000_0000 | 0x4000_0000 | 0x1800_0000 | n
}

/// Get a pointer into the peer's ring to write up to N bytes (the in-word) into.
pub const SIO_VMMC_GET_SEND_POINTER: u32 = vendor(0x5600 + 1);
/// Publish N bytes written through the send pointer.
pub const SIO_VMMC_COMMIT_SEND: u32 = vendor(0x5600 + 2);
/// Get a pointer to the bytes received, in place.
pub const SIO_VMMC_GET_RECV_POINTER: u32 = vendor(0x5600 + 3);
/// Release N bytes seen through the receive pointer.
pub const SIO_VMMC_RELEASE_RECV: u32 = vendor(0x5600 + 4);
