//! Parsing the kernel's `linux_dirent64` records. The bytes come from our own kernel, but
//! they are parsed with the same care as anything else: a record that does not fit ends the
//! batch instead of reading past it.

/// One directory entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawEntry<'a> {
    /// Inode number.
    pub ino: u64,
    /// The directory position after this entry (the cookie to resume from).
    pub next: u64,
    /// `DT_*` type.
    pub dtype: u8,
    /// The name, without its NUL.
    pub name: &'a [u8],
}

/// The records in `buf[..len]`, in order.
pub fn parse(buf: &[u8]) -> impl Iterator<Item = RawEntry<'_>> {
    let mut at = 0usize;
    std::iter::from_fn(move || {
        // d_ino u64, d_off i64, d_reclen u16, d_type u8, d_name[].
        let head = buf.get(at..at + 19)?;
        let ino = u64::from_ne_bytes(head[0..8].try_into().ok()?);
        let next = u64::from_ne_bytes(head[8..16].try_into().ok()?);
        let reclen = u16::from_ne_bytes([head[16], head[17]]) as usize;
        let dtype = head[18];
        if reclen < 19 {
            return None;
        }
        let rec = buf.get(at..at + reclen)?;
        let raw = &rec[19..];
        let name = &raw[..raw.iter().position(|&b| b == 0).unwrap_or(raw.len())];
        at += reclen;
        Some(RawEntry {
            ino,
            next,
            dtype,
            name,
        })
    })
}

/// The protocol's file kind for a `DT_*` value.
pub fn kind(dtype: u8) -> dfs_proto::attr::FileKind {
    use dfs_proto::attr::FileKind;
    match dtype {
        libc::DT_REG => FileKind::Regular,
        libc::DT_DIR => FileKind::Directory,
        libc::DT_LNK => FileKind::Symlink,
        libc::DT_FIFO => FileKind::Fifo,
        libc::DT_SOCK => FileKind::Socket,
        libc::DT_CHR => FileKind::CharDevice,
        libc::DT_BLK => FileKind::BlockDevice,
        _ => FileKind::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(ino: u64, off: u64, t: u8, name: &[u8]) -> Vec<u8> {
        let len = (19 + name.len() + 1).next_multiple_of(8);
        let mut v = Vec::new();
        v.extend_from_slice(&ino.to_ne_bytes());
        v.extend_from_slice(&off.to_ne_bytes());
        v.extend_from_slice(&(len as u16).to_ne_bytes());
        v.push(t);
        v.extend_from_slice(name);
        v.resize(len, 0);
        v
    }

    #[test]
    fn records_parse_and_a_torn_one_ends_the_batch() {
        let mut b = rec(5, 10, libc::DT_REG, b"a");
        b.extend(rec(6, 20, libc::DT_DIR, b"longer-name"));
        let all: Vec<_> = parse(&b).collect();
        assert_eq!(all.len(), 2);
        assert_eq!(all[1].name, b"longer-name");
        assert_eq!(all[1].next, 20);
        assert_eq!(parse(&b[..b.len() - 1]).count(), 1);
        let mut zero = b.clone();
        zero[16] = 0;
        zero[17] = 0;
        assert_eq!(parse(&zero).count(), 0);
    }
}
