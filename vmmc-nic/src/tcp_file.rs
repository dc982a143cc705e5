//! Deposits straight from a file on the tcp backend: the header, then the file's bytes by
//! `sendfile`, from the page cache to the socket with no copy by this process (Linux).

use std::io::{self, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};

use nix::sys::socket::MsgFlags;

use crate::error::{Error, Result};
use crate::export::lock;
use crate::tcp::TcpImport;
use crate::wire::Frame;

/// How a `sendfile` of a deposit's payload went.
enum FileSend {
    /// This many bytes came from the file (fewer than asked where it ended).
    Sent(usize),
    /// The file failed after this many bytes; the socket is sound.
    FileFailed(usize, nix::errno::Errno),
    /// The socket failed: the import is over.
    SocketFailed(nix::errno::Errno),
    /// The file cannot be sent this way; nothing was sent.
    Unsupported,
}

impl TcpImport {
    /// Sends a deposit frame of the bytes of `file` from `at` at `offset` of the region: the
    /// header, then the file's bytes by `sendfile` (from the page cache to the socket, no copy
    /// by this process). The frame is sized by what the file holds when the call starts, up
    /// to `len`; if it shrinks meanwhile, the frame is completed with zeros. Returns how many
    /// bytes came from the file. A file `sendfile` cannot send (a file system without splice
    /// support) is read into a buffer and sent from there instead.
    pub(crate) fn send_file(
        &self,
        offset: u64,
        file: BorrowedFd<'_>,
        at: i64,
        len: usize,
    ) -> Result<usize> {
        let st = nix::sys::stat::fstat(file).map_err(|e| Error::Io {
            context: "reading the file to deposit",
            source: e.into(),
        })?;
        if st.st_mode & libc::S_IFMT != libc::S_IFREG {
            return Err(Error::Io {
                context: "reading the file to deposit",
                source: io::Error::new(io::ErrorKind::InvalidInput, "not a regular file"),
            });
        }
        let len = (len as u64).min((st.st_size as u64).saturating_sub(at as u64)) as usize;
        self.send_file_sized(offset, file, at, len)
    }

    /// [`TcpImport::send_file`] of a frame of exactly `len` bytes, whatever the file holds.
    fn send_file_sized(
        &self,
        offset: u64,
        file: BorrowedFd<'_>,
        at: i64,
        len: usize,
    ) -> Result<usize> {
        if len == 0 {
            return Ok(0);
        }
        let frame = Frame::Deposit {
            offset,
            len: len as u64,
            notify: false,
            word: false,
        };
        let _guard = lock(self.send_lock());
        // The header waits for the payload behind it (`MSG_MORE`): one segment, not two.
        let hdr = frame.emit();
        let mut sent = 0;
        while sent < hdr.len() {
            match nix::sys::socket::send(
                self.stream().as_raw_fd(),
                &hdr[sent..],
                MsgFlags::MSG_NOSIGNAL | MsgFlags::from_bits_retain(libc::MSG_MORE),
            ) {
                Ok(n) => sent += n,
                Err(nix::errno::Errno::EINTR) => {}
                Err(e) => return Err(self.io_error(e.into())),
            }
        }
        let sock = self.stream().as_fd();
        // `sendfile` cannot be told `MSG_NOSIGNAL`: a peer that is gone must not kill the host
        // program with SIGPIPE.
        let sent = crate::sys::without_sigpipe(|| {
            use nix::errno::Errno as E;
            let mut pos = at;
            let mut done = 0usize;
            while done < len {
                match nix::sys::sendfile::sendfile64(sock, file, Some(&mut pos), len - done) {
                    Ok(0) => break,
                    Ok(n) => done += n,
                    Err(E::EINTR) => {}
                    Err(E::EINVAL | E::ENOSYS) if done == 0 => return FileSend::Unsupported,
                    Err(
                        e @ (E::EPIPE | E::ECONNRESET | E::EAGAIN | E::ETIMEDOUT | E::ENOTCONN),
                    ) => return FileSend::SocketFailed(e),
                    Err(e) => return FileSend::FileFailed(done, e),
                }
            }
            FileSend::Sent(done)
        });
        let mut s = self.stream();
        let unsupported = matches!(sent, FileSend::Unsupported);
        let (mut done, file_error) = match sent {
            FileSend::Sent(n) => (n, None),
            FileSend::FileFailed(n, e) => (n, Some(e)),
            FileSend::SocketFailed(e) => return Err(self.io_error(e.into())),
            FileSend::Unsupported => (0, None),
        };
        let mut file_error = file_error.map(io::Error::from);
        if unsupported {
            // Through a buffer, as a `pread` and a `send` would.
            let mut buf = vec![0u8; len.min(64 << 10)];
            while done < len {
                let want = (len - done).min(buf.len());
                match nix::sys::uio::pread(file, &mut buf[..want], at + done as i64) {
                    Ok(0) => break,
                    Ok(n) => {
                        s.write_all(&buf[..n]).map_err(|e| self.io_error(e))?;
                        done += n;
                    }
                    Err(nix::errno::Errno::EINTR) => {}
                    Err(e) => {
                        file_error = Some(e.into());
                        break;
                    }
                }
            }
        }
        // Whatever the file did not give completes the frame as zeros.
        let zeros = [0u8; 4096];
        let mut left = len - done;
        while left > 0 {
            let n = left.min(zeros.len());
            s.write_all(&zeros[..n]).map_err(|e| self.io_error(e))?;
            left -= n;
        }
        match file_error {
            Some(source) if done == 0 => Err(Error::Io {
                context: "reading the file to deposit",
                source,
            }),
            _ => Ok(done),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::{IoSlice, Write};
    use std::os::fd::AsFd;
    use std::time::Duration;

    use crate::{Access, Endpoint, ImportOptions, Permissions, Wake};

    /// A frame declared longer than the file (one that shrank after it was measured) is
    /// completed with zeros, and the connection stays in step: the next deposit lands.
    #[test]
    fn a_file_shorter_than_its_frame_is_padded_with_zeros() {
        let ep = Endpoint::bind(&"tcp:127.0.0.1:0".parse().unwrap()).unwrap();
        let x = ep.export(64 << 10, Permissions::open()).unwrap();
        let crate::addr::NodeAddr::Tcp(addr) = ep.addr().clone() else {
            panic!("not tcp")
        };
        let (t, _) = crate::tcp::dial(&addr, Duration::from_secs(5)).unwrap();
        let (t, _, _) = t
            .import(x.id(), Access::ALL, &ImportOptions::default())
            .unwrap();
        let mut f = std::fs::File::from(
            nix::sys::memfd::memfd_create(c"file", nix::sys::memfd::MFdFlags::MFD_CLOEXEC).unwrap(),
        );
        let body: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8 + 1).collect();
        f.write_all(&body).unwrap();
        // 10,000 bytes from 1,000 on hold 9,000: a 20,000-byte frame gets 11,000 zeros.
        assert_eq!(
            t.send_file_sized(100, f.as_fd(), 1000, 20_000).unwrap(),
            9_000
        );
        let after = crate::wire::Frame::Deposit {
            offset: 30_000,
            len: 5,
            notify: true,
            word: false,
        };
        t.send(&after, &[IoSlice::new(b"after")]).unwrap();
        assert_eq!(x.wait(Duration::from_secs(10)).unwrap(), Wake::Notified);
        let mut got = vec![0u8; 20_000];
        x.read_at(100, &mut got).unwrap();
        assert!(got[..9_000] == body[1000..], "the file's bytes");
        assert!(got[9_000..].iter().all(|&b| b == 0), "zeros after them");
        let mut tail = [0u8; 5];
        x.read_at(30_000, &mut tail).unwrap();
        assert_eq!(&tail, b"after");
        // As measured (the public path): the frame holds what the file has, no zeros.
        assert_eq!(t.send_file(200, f.as_fd(), 9_990, 4096).unwrap(), 10);
        assert_eq!(t.send_file(200, f.as_fd(), 20_000, 4096).unwrap(), 0);
    }
}
