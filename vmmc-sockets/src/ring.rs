//! The deterministic core of a connection: the bookkeeping of one send ring and one receive
//! ring, fed with the control words the peer wrote. No I/O, no clock: everything the peer
//! says is checked here, and the fuzz target drives exactly this code.

use std::io;

use crate::layout::{violation, RingSize};

/// My receive side: the peer writes, I consume.
#[derive(Clone, Debug)]
pub struct RxState {
    cap: u64,
    read: u64,
    write: u64,
    fin: Option<u64>,
    urgent: u64,
}

impl RxState {
    /// An empty ring of `size`.
    pub fn new(size: RingSize) -> RxState {
        RxState {
            cap: size.get(),
            read: 0,
            write: 0,
            fin: None,
            urgent: 0,
        }
    }

    /// A ring resumed in another process at receive index `read`; the rest is re-read from
    /// the header the peer keeps writing.
    pub fn resume(size: RingSize, read: u64) -> RxState {
        RxState {
            cap: size.get(),
            read,
            write: read,
            fin: None,
            urgent: 0,
        }
    }

    /// Takes in the peer's send index and FIN word. The index may only grow, never past what
    /// fits the ring, and never past a FIN once one is announced.
    pub fn observe(&mut self, write: u64, fin_word: u64) -> io::Result<()> {
        if write < self.write {
            return Err(violation(format!(
                "send index went back from {} to {write}",
                self.write
            )));
        }
        if write - self.read > self.cap {
            return Err(violation(format!(
                "send index {write} is more than a ring of {} ahead of {}",
                self.cap, self.read
            )));
        }
        let fin = match fin_word {
            0 => None,
            f => Some(f - 1),
        };
        match (self.fin, fin) {
            (Some(old), new) if new != Some(old) => {
                return Err(violation("the final index changed after shutdown"))
            }
            _ => {}
        }
        if let Some(f) = fin {
            if write > f {
                return Err(violation(format!(
                    "send index {write} past the final index {f}"
                )));
            }
        }
        self.write = write;
        self.fin = fin;
        Ok(())
    }

    /// Takes in the peer's urgent word; a mark must lie within what was sent.
    pub fn observe_urgent(&mut self, word: u64) -> io::Result<()> {
        if word > self.write {
            return Err(violation("urgent mark beyond the sent data"));
        }
        self.urgent = word;
        Ok(())
    }

    /// The ring's size.
    pub fn capacity(&self) -> u64 {
        self.cap
    }

    /// Bytes ready to consume.
    pub fn available(&self) -> u64 {
        self.write - self.read
    }

    /// Whether every byte before the peer's shutdown has been consumed.
    pub fn at_eof(&self) -> bool {
        self.fin == Some(self.read)
    }

    /// Ring offset (relative to the ring start) of the next byte to consume.
    pub fn read_offset(&self) -> u64 {
        self.read % self.cap
    }

    /// The total consumed, published to the peer as its credit.
    pub fn read_index(&self) -> u64 {
        self.read
    }

    /// Consumes `n` ready bytes.
    pub fn consume(&mut self, n: u64) {
        debug_assert!(n <= self.available());
        self.read += n.min(self.available());
    }

    /// Bytes to consume before reaching the urgent byte (0: the next byte is it), or `None`
    /// without a pending mark: the `SIOCATMARK` question.
    pub fn until_mark(&self) -> Option<u64> {
        let mark = self.urgent.checked_sub(1)?;
        mark.checked_sub(self.read)
    }

    /// Stream index of the pending urgent byte, if any.
    pub fn mark(&self) -> Option<u64> {
        let mark = self.urgent.checked_sub(1)?;
        (mark >= self.read).then_some(mark)
    }
}

/// My send side: I write into the peer's ring, the peer gives credit back.
#[derive(Clone, Debug)]
pub struct TxState {
    cap: u64,
    sent: u64,
    credit: u64,
}

impl TxState {
    /// Nothing sent into a peer ring of `size`.
    pub fn new(size: RingSize) -> TxState {
        TxState {
            cap: size.get(),
            sent: 0,
            credit: 0,
        }
    }

    /// A send side resumed in another process; `None` if the numbers cannot be true.
    pub fn resume(size: RingSize, sent: u64, credit: u64) -> Option<TxState> {
        (credit <= sent && sent - credit <= size.get()).then_some(TxState {
            cap: size.get(),
            sent,
            credit,
        })
    }

    /// Takes in the peer's receive index: it may only grow, and never past what I sent.
    pub fn observe_credit(&mut self, credit: u64) -> io::Result<()> {
        if credit < self.credit || credit > self.sent {
            return Err(violation(format!(
                "credit {credit} outside {}..={}",
                self.credit, self.sent
            )));
        }
        self.credit = credit;
        Ok(())
    }

    /// Bytes I may write now.
    pub fn space(&self) -> u64 {
        self.cap - (self.sent - self.credit)
    }

    /// Ring offset (relative to the ring start) where the next byte goes.
    pub fn write_offset(&self) -> u64 {
        self.sent % self.cap
    }

    /// The total sent, published to the peer as my send index.
    pub fn sent(&self) -> u64 {
        self.sent
    }

    /// The peer's receive index as last seen.
    pub fn credit(&self) -> u64 {
        self.credit
    }

    /// Whether everything I sent has been consumed.
    pub fn drained(&self) -> bool {
        self.sent == self.credit
    }

    /// Records `n` bytes written into the space.
    pub fn commit(&mut self, n: u64) {
        debug_assert!(n <= self.space());
        self.sent += n.min(self.space());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn size() -> RingSize {
        RingSize::new(4096).unwrap()
    }

    #[test]
    fn receive_indices_are_validated() {
        let mut rx = RxState::new(size());
        rx.observe(100, 0).unwrap();
        assert_eq!(rx.available(), 100);
        rx.consume(60);
        assert_eq!((rx.read_offset(), rx.available()), (60, 40));
        assert!(rx.observe(99, 0).is_err(), "index went back");
        assert!(rx.observe(60 + 4097, 0).is_err(), "more than a ring ahead");
        rx.observe(60 + 4096, 0).unwrap();
        rx.consume(4096);
        assert_eq!(rx.read_offset(), 60);
        assert!(!rx.at_eof());
        rx.observe(4156, 4157).unwrap();
        assert!(rx.at_eof());
        assert!(rx.observe(4157, 4157).is_err(), "past the final index");
        assert!(rx.observe(4156, 0).is_err(), "final index withdrawn");
        assert!(rx.observe(4156, 4160).is_err(), "final index moved");
    }

    #[test]
    fn credit_is_validated() {
        let mut tx = TxState::new(size());
        assert_eq!(tx.space(), 4096);
        tx.commit(4000);
        assert_eq!(tx.space(), 96);
        assert!(
            tx.observe_credit(4001).is_err(),
            "credit for bytes never sent"
        );
        tx.observe_credit(1000).unwrap();
        assert_eq!(tx.space(), 1096);
        assert!(tx.observe_credit(999).is_err(), "credit went back");
        tx.observe_credit(4000).unwrap();
        assert!(tx.drained());
        tx.commit(4096);
        assert_eq!((tx.space(), tx.write_offset()), (0, 4000));
    }

    #[test]
    fn urgent_marks_stay_inside_the_data() {
        let mut rx = RxState::new(size());
        rx.observe(10, 0).unwrap();
        assert!(rx.observe_urgent(12).is_err());
        rx.observe_urgent(6).unwrap(); // mark after byte 5
        assert_eq!(rx.until_mark(), Some(5));
        rx.consume(5);
        assert_eq!(rx.until_mark(), Some(0));
        rx.consume(1);
        assert_eq!(rx.until_mark(), None);
    }
}
