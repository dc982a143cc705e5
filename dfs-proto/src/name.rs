//! Names that can cross the wire: validated once on decode, so that no operation on the
//! server ever sees a path. A [`Name`] is one component; a [`LinkTarget`] is symlink content
//! (stored, never followed by the server); an [`XattrName`] names an extended attribute.

use serde::{Deserialize, Serialize};

/// Longest file name (Linux's `NAME_MAX`).
pub const MAX_NAME: usize = 255;
/// Longest symlink target (Linux's `PATH_MAX`, less the terminating NUL).
pub const MAX_TARGET: usize = 4095;
/// Longest xattr name (Linux's `XATTR_NAME_MAX`).
pub const MAX_XATTR_NAME: usize = 255;
/// Largest xattr value (Linux's `XATTR_SIZE_MAX`).
pub const MAX_XATTR_VALUE: usize = 64 * 1024;

/// Why bytes are not a valid name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// Empty.
    #[error("empty name")]
    Empty,
    /// Longer than the limit.
    #[error("name of {0} bytes is too long")]
    TooLong(usize),
    /// Contains `/` (a path, not a component) or NUL.
    #[error("name contains '/' or NUL")]
    BadByte,
    /// `.` or `..`: they would step outside the directory the name is looked up in.
    #[error("'.' and '..' are not names")]
    Dot,
}

impl NameError {
    /// The errno a server answers with.
    pub fn errno(&self) -> crate::Errno {
        match self {
            NameError::TooLong(_) => crate::Errno::ENAMETOOLONG,
            _ => crate::Errno::EINVAL,
        }
    }
}

/// One path component: no `/`, no NUL, not `.` or `..`, 1 to 255 bytes.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "Vec<u8>", into = "Vec<u8>")]
pub struct Name(Vec<u8>);

impl Name {
    /// Checks `bytes` and makes a name of them.
    pub fn new(bytes: &[u8]) -> Result<Name, NameError> {
        Name::try_from(bytes.to_vec())
    }

    /// The name's bytes (never containing `/` or NUL).
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl TryFrom<Vec<u8>> for Name {
    type Error = NameError;
    fn try_from(v: Vec<u8>) -> Result<Name, NameError> {
        if v.is_empty() {
            return Err(NameError::Empty);
        }
        if v.len() > MAX_NAME {
            return Err(NameError::TooLong(v.len()));
        }
        if v.iter().any(|&b| b == b'/' || b == 0) {
            return Err(NameError::BadByte);
        }
        if v == b"." || v == b".." {
            return Err(NameError::Dot);
        }
        Ok(Name(v))
    }
}

impl From<Name> for Vec<u8> {
    fn from(n: Name) -> Vec<u8> {
        n.0
    }
}

impl std::fmt::Debug for Name {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", String::from_utf8_lossy(&self.0))
    }
}

/// The content of a symbolic link: any bytes but NUL, 1 to 4095 of them. The server stores
/// it and hands it back; it never resolves it (the client's kernel does, in its own
/// namespace).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "Vec<u8>", into = "Vec<u8>")]
pub struct LinkTarget(Vec<u8>);

impl LinkTarget {
    /// Checks `bytes` and makes a target of them.
    pub fn new(bytes: &[u8]) -> Result<LinkTarget, NameError> {
        LinkTarget::try_from(bytes.to_vec())
    }

    /// The target's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl TryFrom<Vec<u8>> for LinkTarget {
    type Error = NameError;
    fn try_from(v: Vec<u8>) -> Result<LinkTarget, NameError> {
        if v.is_empty() {
            return Err(NameError::Empty);
        }
        if v.len() > MAX_TARGET {
            return Err(NameError::TooLong(v.len()));
        }
        if v.contains(&0) {
            return Err(NameError::BadByte);
        }
        Ok(LinkTarget(v))
    }
}

impl From<LinkTarget> for Vec<u8> {
    fn from(n: LinkTarget) -> Vec<u8> {
        n.0
    }
}

impl std::fmt::Debug for LinkTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", String::from_utf8_lossy(&self.0))
    }
}

/// An extended attribute's name, such as `user.comment`: no NUL, 1 to 255 bytes.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "Vec<u8>", into = "Vec<u8>")]
pub struct XattrName(Vec<u8>);

impl XattrName {
    /// Checks `bytes` and makes an xattr name of them.
    pub fn new(bytes: &[u8]) -> Result<XattrName, NameError> {
        XattrName::try_from(bytes.to_vec())
    }

    /// The name's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl TryFrom<Vec<u8>> for XattrName {
    type Error = NameError;
    fn try_from(v: Vec<u8>) -> Result<XattrName, NameError> {
        if v.is_empty() {
            return Err(NameError::Empty);
        }
        if v.len() > MAX_XATTR_NAME {
            return Err(NameError::TooLong(v.len()));
        }
        if v.contains(&0) {
            return Err(NameError::BadByte);
        }
        Ok(XattrName(v))
    }
}

impl From<XattrName> for Vec<u8> {
    fn from(n: XattrName) -> Vec<u8> {
        n.0
    }
}

impl std::fmt::Debug for XattrName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", String::from_utf8_lossy(&self.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_would_leave_the_directory_are_refused() {
        assert_eq!(Name::new(b"..").unwrap_err(), NameError::Dot);
        assert_eq!(Name::new(b".").unwrap_err(), NameError::Dot);
        assert_eq!(Name::new(b"a/b").unwrap_err(), NameError::BadByte);
        assert_eq!(Name::new(b"/etc").unwrap_err(), NameError::BadByte);
        assert_eq!(Name::new(b"a\0").unwrap_err(), NameError::BadByte);
        assert_eq!(Name::new(b"").unwrap_err(), NameError::Empty);
        assert_eq!(
            Name::new(&[b'x'; 256]).unwrap_err().errno(),
            crate::Errno::ENAMETOOLONG
        );
        assert!(Name::new(b"...").is_ok());
        assert!(Name::new(&[b'x'; 255]).is_ok());
        assert!(LinkTarget::new(b"/etc/passwd").is_ok());
        assert!(LinkTarget::new(b"a\0b").is_err());
    }

    #[test]
    fn decoding_validates() {
        let bad = crate::codec::encode_to_vec(&b"..".to_vec()).unwrap();
        assert!(crate::codec::decode::<Name>(&bad).is_err());
        let good = crate::codec::encode_to_vec(&b"ok".to_vec()).unwrap();
        assert_eq!(
            crate::codec::decode::<Name>(&good).unwrap(),
            Name::new(b"ok").unwrap()
        );
    }
}
