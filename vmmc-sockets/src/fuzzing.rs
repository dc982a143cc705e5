//! Entry points shared by the `cargo fuzz` targets and the corpus regression test.
//! Not a stable API.

use crate::layout::RingSize;
use crate::ring::{RxState, TxState};

/// Drives one receive ring and one send ring with arbitrary peer-written control words and
/// arbitrary local operations, checking after every step that the state stays inside the
/// ring. Each 9-byte record is an operation byte and a little-endian value.
pub fn ring_ops(data: &[u8]) {
    let size = match data.first().map(|b| b % 4) {
        Some(0) => 4096,
        Some(1) => 8192,
        Some(2) => 65536,
        _ => 1 << 20,
    };
    let Some(size) = RingSize::new(size) else {
        return;
    };
    let cap = size.get();
    let mut rx = RxState::new(size);
    let mut tx = TxState::new(size);
    let mut broken = false;
    for rec in data.get(1..).unwrap_or(&[]).chunks_exact(9) {
        let mut v = [0u8; 8];
        v.copy_from_slice(&rec[1..]);
        let v = u64::from_le_bytes(v);
        match rec[0] % 6 {
            // The peer's send index and FIN word, as written into my header.
            0 => broken |= rx.observe(v, 0).is_err(),
            1 => broken |= rx.observe(rx.read_index() + v % (cap + 2), v % 3).is_err(),
            2 => broken |= rx.observe_urgent(v).is_err(),
            // I consume some of what is there.
            3 => rx.consume(v % (rx.available() + 1)),
            // The peer's credit.
            4 => broken |= tx.observe_credit(v).is_err(),
            // I send some of what fits.
            _ => tx.commit(v % (tx.space() + 1)),
        }
        assert!(rx.available() <= cap, "more ready than the ring holds");
        assert!(rx.read_offset() < cap);
        assert!(tx.space() <= cap, "more room than the ring holds");
        assert!(tx.write_offset() < cap);
        if let Some(n) = rx.until_mark() {
            assert!(n <= rx.available(), "urgent mark outside the data");
        }
    }
    let _ = broken;
}
