//! The preload's configuration, read from the environment once, on first need.
//!
//! `VMMC_ROUTES` holds routes inline (lines or `;`-separated) and `VMMC_ROUTES_FILE` names a
//! file of them, in the format of [`vmmc_sockets::routes`]; both may be set (the file's
//! routes come first). `VMMC_SPIN_US` bounds how long `poll`, `select` and `epoll_wait` spin
//! on VMMC sockets before they sleep (default 50, as the streams' own waits),
//! `VMMC_RING_BYTES` sets the receive ring of routed sockets (default vmmc-sockets' 4 MiB),
//! and `VMMC_PRELOAD_DEBUG=1` logs each routing decision to stderr.

use std::cell::Cell;
use std::sync::OnceLock;
use std::time::Duration;

use vmmc_sockets::routes::Routes;

/// The environment variable with inline routes.
pub const ROUTES_ENV: &str = "VMMC_ROUTES";
/// The environment variable naming a routes file.
pub const ROUTES_FILE_ENV: &str = "VMMC_ROUTES_FILE";
/// The environment variable with the poll spin in microseconds.
pub const SPIN_ENV: &str = "VMMC_SPIN_US";
/// The environment variable with the receive ring size of routed sockets, in bytes.
pub const RING_ENV: &str = "VMMC_RING_BYTES";
/// The environment variable that turns on decision logging.
pub const DEBUG_ENV: &str = "VMMC_PRELOAD_DEBUG";

thread_local! {
    /// Set while this thread resolves the routes' host names: the resolver's own sockets
    /// must not ask for routes that are still being made.
    static RESOLVING: Cell<bool> = const { Cell::new(false) };
}

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

/// The routes, or `None` while this thread is resolving them (its sockets go to the kernel).
///
/// A configuration that does not parse stops the program with a message: running it on
/// kernel TCP instead would succeed silently where the user asked for VMMC.
pub fn routes() -> Option<&'static Routes> {
    static ROUTES: OnceLock<Routes> = OnceLock::new();
    if RESOLVING.with(Cell::get) {
        return None;
    }
    Some(ROUTES.get_or_init(|| match load() {
        Ok(mut r) => {
            RESOLVING.with(|c| c.set(true));
            r.resolve_names();
            RESOLVING.with(|c| c.set(false));
            r
        }
        Err(e) => {
            eprintln!("vmmc-preload: {e}");
            std::process::exit(2)
        }
    }))
}

/// How long waits spin on VMMC sockets before sleeping.
pub fn spin() -> Duration {
    static SPIN: OnceLock<Duration> = OnceLock::new();
    *SPIN.get_or_init(|| {
        let us = std::env::var(SPIN_ENV)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(50);
        Duration::from_micros(us)
    })
}

/// The receive ring size routed sockets start with (`SO_RCVBUF` before `connect`/`listen`
/// still overrides it); `None` keeps vmmc-sockets' default.
pub fn ring() -> Option<u64> {
    static RING: OnceLock<Option<u64>> = OnceLock::new();
    *RING.get_or_init(|| std::env::var(RING_ENV).ok().and_then(|v| v.parse().ok()))
}

/// Whether routing decisions are logged.
pub fn debug() -> bool {
    static DEBUG: OnceLock<bool> = OnceLock::new();
    *DEBUG.get_or_init(|| std::env::var_os(DEBUG_ENV).is_some_and(|v| v != "0"))
}
