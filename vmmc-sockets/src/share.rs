//! Handing a connection to another process.
//!
//! The original VMMC sockets lost their sockets across `fork`/`exec`. Here a connection is
//! its two rings and their connections, all descriptors, plus a few counters: the owner
//! packs them up and sends them over a Unix socket with `SCM_RIGHTS`, and the receiving
//! process carries on exactly where the sender stopped. The peer notices nothing; the sender
//! may exit.

use std::io;
use std::os::unix::net::UnixStream;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use vmmc_nic::{Export, Import, NodeAddr};

use crate::layout::RingSize;
use crate::options::StreamOptions;
use crate::ring::{RxState, TxState};
use crate::stream::{nic_error, Parts, VmmcStream};

const MAGIC: &[u8; 4] = b"VSS1";

fn bad(why: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("bad connection handover: {why}"),
    )
}

impl VmmcStream {
    /// Hands this connection to the process at the other end of `via`, which takes it with
    /// [`VmmcStream::receive_from`]. This must be the only handle on the connection (no clones
    /// alive); afterwards this process has nothing of it and may exit. On an error the
    /// connection is closed, as dropping it would.
    pub fn send_to(self, via: &UnixStream) -> io::Result<()> {
        if Arc::strong_count(&self.inner) != 2 || Arc::strong_count(&self._closer) != 1 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "other handles on this connection are alive; drop them before handing it over",
            ));
        }
        {
            let c = self.inner.core.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((_, why)) = &c.broken {
                return Err(io::Error::new(io::ErrorKind::InvalidInput, why.clone()));
            }
        }
        self.inner.handed.store(true, Ordering::Release);
        let VmmcStream { inner, _closer } = self;
        drop(_closer);
        let inner = Arc::try_unwrap(inner)
            .map_err(|_| io::Error::other("the connection is still shared"))?;
        let timeouts = (
            *inner.read_timeout.lock().unwrap_or_else(|p| p.into_inner()),
            *inner
                .write_timeout
                .lock()
                .unwrap_or_else(|p| p.into_inner()),
        );
        let mut app = MAGIC.to_vec();
        let c = inner.core.into_inner().unwrap_or_else(|p| p.into_inner());
        for v in [
            c.rx.read_index(),
            c.tx.sent(),
            c.tx.credit(),
            inner.rx_ring.get(),
            inner.tx_ring.get(),
            inner.spin.as_nanos() as u64,
            timeouts.0.map_or(0, |d| d.as_nanos() as u64),
            timeouts.1.map_or(0, |d| d.as_nanos() as u64),
            u64::from(inner.nonblocking.load(Ordering::Relaxed)),
            u64::from(c.shut_wr) | u64::from(c.shut_rd) << 1 | u64::from(c.peer_left) << 2,
        ] {
            app.extend_from_slice(&v.to_le_bytes());
        }
        for a in [&inner.peer, &inner.local] {
            let s = a.to_string();
            app.extend_from_slice(&(s.len() as u32).to_le_bytes());
            app.extend_from_slice(s.as_bytes());
        }
        let export = c.rx_export.hand_over().map_err(nic_error)?;
        let import = c.tx_import.hand_over().map_err(nic_error)?;
        vmmc_nic::send_handover(via, &app, vec![export], vec![import]).map_err(nic_error)
    }

    /// Takes over a connection another process handed over with [`VmmcStream::send_to`].
    pub fn receive_from(via: &UnixStream) -> io::Result<VmmcStream> {
        let (app, mut exports, mut imports) = vmmc_nic::recv_handover(via).map_err(nic_error)?;
        let (Some(export), Some(import), true, true) = (
            exports.pop(),
            imports.pop(),
            exports.is_empty(),
            imports.is_empty(),
        ) else {
            return Err(bad("expected one ring export and one ring import"));
        };
        let mut r = app
            .strip_prefix(MAGIC)
            .ok_or_else(|| bad("not a connection"))?;
        let mut n = || -> io::Result<u64> {
            let (head, rest) = r.split_first_chunk::<8>().ok_or_else(|| bad("truncated"))?;
            r = rest;
            Ok(u64::from_le_bytes(*head))
        };
        let (read, sent, credit) = (n()?, n()?, n()?);
        let rx_ring = RingSize::new(n()?).ok_or_else(|| bad("receive ring size"))?;
        let tx_ring = RingSize::new(n()?).ok_or_else(|| bad("send ring size"))?;
        let spin = Duration::from_nanos(n()?);
        let timeout = |ns: u64| (ns > 0).then(|| Duration::from_nanos(ns));
        let (rt, wt) = (timeout(n()?), timeout(n()?));
        let nonblocking = n()? != 0;
        let flags = n()?;
        let mut addr = || -> io::Result<NodeAddr> {
            let (len, rest) = r.split_first_chunk::<4>().ok_or_else(|| bad("truncated"))?;
            let len = u32::from_le_bytes(*len) as usize;
            let s = rest.get(..len).ok_or_else(|| bad("truncated"))?;
            r = &rest[len..];
            std::str::from_utf8(s)
                .ok()
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| bad("address"))
        };
        let (peer, local) = (addr()?, addr()?);
        let tx = TxState::resume(tx_ring, sent, credit).ok_or_else(|| bad("send indices"))?;
        let rx = RxState::resume(rx_ring, read);
        let parts = Parts {
            rx_export: Export::adopt(export).map_err(nic_error)?,
            rx_ring,
            tx_import: Import::adopt(import).map_err(nic_error)?,
            tx_ring,
            peer,
            local,
            endpoint: None,
            ticket: None,
        };
        let opts = StreamOptions {
            ring: rx_ring,
            spin,
            ..StreamOptions::default()
        };
        let stream = VmmcStream::resume(parts, &opts, rx, tx)?;
        {
            let mut c = stream.inner.core.lock().unwrap_or_else(|p| p.into_inner());
            c.shut_wr = flags & 1 != 0;
            c.shut_rd = flags & 2 != 0;
            c.peer_left = flags & 4 != 0;
        }
        stream.set_nonblocking(nonblocking)?;
        stream.set_read_timeout(rt)?;
        stream.set_write_timeout(wt)?;
        Ok(stream)
    }
}
