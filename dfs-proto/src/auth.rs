//! Challenge and response over a shared secret. Both sides derive a key from the secret
//! file's bytes; each proves that it knows the key by a keyed hash over both nonces and the
//! session, so the secret never crosses the wire, a recorded proof is worthless in another
//! session, and a client can tell the real server from an impostor.

/// A key derived from the shared secret. Its `Debug` does not show it.
#[derive(Clone)]
pub struct Secret([u8; 32]);

/// Fewest bytes a secret file must hold: shorter ones are guessable.
pub const MIN_SECRET: usize = 16;

/// Why a secret was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("a secret must hold at least {MIN_SECRET} bytes (not counting surrounding whitespace), this one holds {0}")]
pub struct WeakSecret(pub usize);

impl Secret {
    /// Derives the key from the content of a secret file. Surrounding whitespace (a trailing
    /// newline from an editor) is not part of the secret.
    pub fn from_file_bytes(bytes: &[u8]) -> Result<Secret, WeakSecret> {
        let trimmed = bytes.trim_ascii();
        if trimmed.len() < MIN_SECRET {
            return Err(WeakSecret(trimmed.len()));
        }
        Ok(Secret(blake3::derive_key(
            "vmmc-dfs 2026 shared secret v1",
            trimmed,
        )))
    }

    fn proof(
        &self,
        role: &[u8],
        client_nonce: &[u8; 32],
        server_nonce: &[u8; 32],
        session: &[u8; 16],
    ) -> [u8; 32] {
        let mut h = blake3::Hasher::new_keyed(&self.0);
        h.update(role);
        h.update(client_nonce);
        h.update(server_nonce);
        h.update(session);
        *h.finalize().as_bytes()
    }

    /// What the client sends.
    pub fn client_proof(
        &self,
        client_nonce: &[u8; 32],
        server_nonce: &[u8; 32],
        session: &[u8; 16],
    ) -> [u8; 32] {
        self.proof(b"client", client_nonce, server_nonce, session)
    }

    /// What the server sends back.
    pub fn server_proof(
        &self,
        client_nonce: &[u8; 32],
        server_nonce: &[u8; 32],
        session: &[u8; 16],
    ) -> [u8; 32] {
        self.proof(b"server", client_nonce, server_nonce, session)
    }

    /// A key for another purpose (the server's handle tags), derived so that it reveals
    /// nothing about the secret.
    pub fn derive(&self, purpose: &str) -> [u8; 32] {
        blake3::derive_key(purpose, &self.0)
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(…)")
    }
}

/// Compares two proofs in constant time, so that timing does not tell how much of a guess
/// was right.
pub fn proofs_match(a: &[u8; 32], b: &[u8; 32]) -> bool {
    blake3::Hash::from(*a) == blake3::Hash::from(*b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proofs_depend_on_secret_nonces_and_role() {
        let s = Secret::from_file_bytes(b"correct horse battery staple\n").unwrap();
        let t = Secret::from_file_bytes(b"correct horse battery stapler").unwrap();
        let (cn, sn, sess) = ([1u8; 32], [2u8; 32], [3u8; 16]);
        let p = s.client_proof(&cn, &sn, &sess);
        assert!(proofs_match(&p, &s.client_proof(&cn, &sn, &sess)));
        assert!(!proofs_match(&p, &t.client_proof(&cn, &sn, &sess)));
        assert!(!proofs_match(&p, &s.client_proof(&cn, &[9; 32], &sess)));
        assert!(!proofs_match(&p, &s.server_proof(&cn, &sn, &sess)));
        assert_eq!(
            Secret::from_file_bytes(b"  short \n").unwrap_err(),
            WeakSecret(5)
        );
        assert_eq!(format!("{s:?}"), "Secret(…)");
    }
}
