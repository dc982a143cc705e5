//! The wrapper's configuration, read from the environment once, on first need: the same
//! variables and format as the Linux preload's.
//!
//! `VMMC_ROUTES` holds routes inline (lines or `;`-separated) and `VMMC_ROUTES_FILE` names a
//! file of them, in the format of [`vmmc_sockets::routes`]; both may be set (the file's routes
//! come first). `VMMC_WINSOCK_DEBUG=1` logs each routing decision to stderr.

use std::sync::OnceLock;

use vmmc_sockets::routes::Routes;

/// The environment variable with inline routes.
pub const ROUTES_ENV: &str = "VMMC_ROUTES";
/// The environment variable naming a routes file.
pub const ROUTES_FILE_ENV: &str = "VMMC_ROUTES_FILE";
/// The environment variable that turns on decision logging.
pub const DEBUG_ENV: &str = "VMMC_WINSOCK_DEBUG";

/// Reads the routes from the environment: the file's first, then the inline ones.
pub fn load() -> Result<Routes, String> {
    let mut text = String::new();
    if let Some(path) = std::env::var_os(ROUTES_FILE_ENV) {
        text = std::fs::read_to_string(&path)
            .map_err(|e| format!("{ROUTES_FILE_ENV}={}: {e}", path.to_string_lossy()))?;
        text.push('\n');
    }
    if let Ok(inline) = std::env::var(ROUTES_ENV) {
        text.push_str(&inline);
    }
    Routes::parse(&text).map_err(|e| format!("{ROUTES_ENV}/{ROUTES_FILE_ENV}: {e}"))
}

/// The routes, host names resolved.
///
/// A configuration that does not parse stops the program with a message: running it on the
/// system's TCP instead would succeed silently where the user asked for VMMC.
pub fn routes() -> &'static Routes {
    static ROUTES: OnceLock<Routes> = OnceLock::new();
    ROUTES.get_or_init(|| match load() {
        Ok(mut r) => {
            r.resolve_names();
            r
        }
        Err(e) => {
            eprintln!("vmmc-winsock: {e}");
            std::process::exit(2)
        }
    })
}

/// Whether routing decisions are logged.
pub fn debug() -> bool {
    static DEBUG: OnceLock<bool> = OnceLock::new();
    *DEBUG.get_or_init(|| std::env::var_os(DEBUG_ENV).is_some_and(|v| v != "0"))
}
