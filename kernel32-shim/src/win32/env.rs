//! The configuration a launcher hands the Windows face in its environment. The secret itself
//! is never in the environment (any process of the user could read it there): only the name
//! of the file that holds it.

use std::time::Duration;

use dfs_proto::auth::Secret;

use super::{Config, Prefix};

/// The server's address (`tcp:HOST:PORT`).
pub const ADDR: &str = "DFS_SHIM_ADDR";
/// The paths that are the DFS's (`M:` or `\\server\share`).
pub const PREFIX: &str = "DFS_SHIM_PREFIX";
/// The file holding the server's shared secret.
pub const SECRET_FILE: &str = "DFS_SHIM_SECRET_FILE";
/// The user id the program acts as (believed only from a client that proves the secret).
pub const UID: &str = "DFS_SHIM_UID";
/// The group id, likewise.
pub const GID: &str = "DFS_SHIM_GID";
/// How long a call waits for the server, in seconds (default 30).
pub const TIMEOUT: &str = "DFS_SHIM_TIMEOUT";

/// The prefix alone, or `None` where the environment names none (the face then stays out of
/// the way entirely).
pub fn prefix() -> Option<Result<Prefix, String>> {
    let p = std::env::var(PREFIX).ok()?;
    Some(Prefix::parse(&p).map_err(|e| format!("{PREFIX}: {e}")))
}

/// The whole configuration, with a message naming the variable at fault.
pub fn config() -> Result<Config, String> {
    let addr = std::env::var(ADDR).map_err(|_| format!("{ADDR} is not set"))?;
    let prefix = prefix().ok_or_else(|| format!("{PREFIX} is not set"))??;
    let secret = match std::env::var_os(SECRET_FILE) {
        None => None,
        Some(f) => {
            let bytes = std::fs::read(&f)
                .map_err(|e| format!("{SECRET_FILE}: cannot read {}: {e}", f.to_string_lossy()))?;
            Some(Secret::from_file_bytes(&bytes).map_err(|e| format!("{SECRET_FILE}: {e}"))?)
        }
    };
    let id = |var: &str| -> Result<u32, String> {
        match std::env::var(var) {
            Err(_) => Ok(65534),
            Ok(v) => v
                .parse()
                .map_err(|_| format!("{var}: {v:?} is not a number")),
        }
    };
    let timeout = match std::env::var(TIMEOUT) {
        Err(_) => Duration::from_secs(30),
        Ok(v) => Duration::from_secs(
            v.parse()
                .map_err(|_| format!("{TIMEOUT}: {v:?} is not a number of seconds"))?,
        ),
    };
    Ok(Config {
        addr,
        prefix,
        secret,
        uid: id(UID)?,
        gid: id(GID)?,
        timeout,
    })
}
