//! All of the crate's `unsafe`: one place where bytes in the receive ring become a slice, and
//! one where a descriptor received from the server becomes owned.
//!
//! fuser sends a read reply from a `&[u8]`, and the whole point of the data path is that the
//! kernel copies a file's bytes straight from the connection's receive ring into the reading
//! program's pages. The ring is memory the server may still write (`SharedBytes` says so and
//! hands out no reference); this is the one exception, and it is as narrow as it can be: the
//! slice lives for one call, which only builds an `iovec` from it and passes it to `writev`
//! on `/dev/fuse`. No code of this process reads through it. A server that rewrites the
//! bytes meanwhile changes what the kernel copies, which is its own reply to its own read:
//! nothing this process relies on.

use vmmc_sockets::SharedBytes;

/// Answers a FUSE read with `data`, in place in the receive ring.
pub(crate) fn reply_from_ring(reply: fuser::ReplyData, data: SharedBytes<'_>) {
    // SAFETY: `data` is `len` initialised bytes inside a mapping that stays valid for the
    // borrow `'_`, which outlives this call. The slice is handed straight to fuser, which only
    // turns it into an iovec for `writev(/dev/fuse)`: no Rust code reads the bytes, so another
    // process writing them concurrently cannot break any assumption made on them here.
    let bytes = unsafe { std::slice::from_raw_parts(data.as_ptr(), data.len()) };
    reply.data(bytes);
}

/// Takes ownership of a descriptor that arrived in an `SCM_RIGHTS` message.
pub(crate) fn received_fd(raw: std::os::fd::RawFd) -> std::os::fd::OwnedFd {
    use std::os::fd::FromRawFd;
    // SAFETY: the kernel installed `raw` in this process's table while receiving the message
    // that carried it; nothing else in the process knows the number, so this is its only
    // owner and closing it on drop closes nothing else.
    unsafe { std::os::fd::OwnedFd::from_raw_fd(raw) }
}
