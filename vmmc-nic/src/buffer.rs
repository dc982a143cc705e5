//! Private buffers for building data that is then deposited.

use crate::error::{Error, Result};
use crate::sys::PrivateMap;

/// Memory of this process alone, in its own mapping: where a sender builds bytes in place
/// before depositing them over a backend that cannot write the peer's memory directly (tcp).
///
/// It is a mapping rather than a `Vec` so that dropping it returns the pages to the system
/// immediately: buffers as large as a peer's ring, made and dropped per connection, would
/// otherwise stay in the allocator's arenas after the connections are gone.
#[derive(Debug)]
pub struct LocalBuffer {
    map: PrivateMap,
    len: usize,
}

impl LocalBuffer {
    /// `len` zeroed bytes; pages cost memory only once written.
    pub fn new(len: usize) -> Result<LocalBuffer> {
        let map = PrivateMap::new(len).map_err(Error::io("mapping a local buffer"))?;
        Ok(LocalBuffer { map, len })
    }

    /// The buffer's size in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the buffer has no bytes.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The bytes.
    pub fn as_slice(&self) -> &[u8] {
        &self.map.as_slice()[..self.len]
    }

    /// The bytes, to write in place.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        &mut self.map.as_mut_slice()[..self.len]
    }
}

#[cfg(test)]
mod tests {
    use super::LocalBuffer;

    #[test]
    fn buffers_are_zeroed_and_writable() {
        let mut b = LocalBuffer::new(3 << 20).unwrap();
        assert_eq!(b.len(), 3 << 20);
        assert!(b.as_slice().iter().all(|&x| x == 0));
        b.as_mut_slice()[(3 << 20) - 1] = 7;
        assert_eq!(b.as_slice()[(3 << 20) - 1], 7);
        assert!(LocalBuffer::new(0).unwrap().is_empty());
    }
}
