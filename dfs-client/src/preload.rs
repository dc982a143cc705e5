//! Starting programs under the kernel32 shim's preload library (`dfs run`, and the bench's
//! `dfs_shim` target): where the library is, and the variables it reads.
//!
//! The library (crate `kernel32-shim`) links this crate, so this crate cannot name it:
//! the two agree on the variables below, which the library documents in its `vars`.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The preload library's file name, as cargo builds it.
pub const LIB_NAME: &str = "libkernel32_shim.so";

/// Where the library may be: `DFS_SHIM_LIBRARY` if set; beside this program (a cargo
/// build, or copies installed side by side); in `../lib` (the quick start installs `dfs` in
/// `PREFIX/bin` and the library in `PREFIX/lib`); in `deps/` (where `cargo test` leaves it).
pub fn library() -> Result<PathBuf, String> {
    if let Some(p) = std::env::var_os("DFS_SHIM_LIBRARY") {
        let p = PathBuf::from(p);
        return if p.is_file() {
            std::path::absolute(&p).map_err(|e| e.to_string())
        } else {
            Err(format!("DFS_SHIM_LIBRARY={}: no such file", p.display()))
        };
    }
    let exe = std::env::current_exe().map_err(|e| format!("cannot find this program: {e}"))?;
    let dir = exe.parent().unwrap_or(Path::new("/"));
    let candidates = [
        dir.join(LIB_NAME),
        dir.join("../lib").join(LIB_NAME),
        dir.join("deps").join(LIB_NAME),
    ];
    for c in &candidates {
        if c.is_file() {
            return Ok(c.canonicalize().unwrap_or_else(|_| c.clone()));
        }
    }
    Err(format!(
        "cannot find {LIB_NAME} (looked in {} and {}; build it with `cargo build -p \
         kernel32-shim`, or name it with DFS_SHIM_LIBRARY)",
        candidates[0].display(),
        candidates[1].display()
    ))
}

/// A run's settings.
#[derive(Clone, Debug)]
pub struct Preload {
    /// The library.
    pub library: PathBuf,
    /// The server's address.
    pub addr: String,
    /// Where the DFS appears (absolute, clean: see [`clean_prefix`]).
    pub prefix: String,
    /// The secret's file (its path goes in the environment, never the secret).
    pub secret: Option<PathBuf>,
    /// How long a call waits for a server that went away, in seconds.
    pub timeout: Option<f64>,
    /// A directory for the lock files that stand for locks on DFS files (one per run).
    pub locks: PathBuf,
    /// Read files opened read-only from descriptors a server on this host lends, instead
    /// of through the rings.
    pub lend: bool,
}

impl Preload {
    /// Sets `cmd`'s environment so that it runs under the library: `LD_PRELOAD` (before
    /// whatever the caller preloads) and the library's variables, with any left from an
    /// enclosing run removed.
    pub fn apply(&self, cmd: &mut Command) {
        let mut preload: OsString = self.library.as_os_str().to_owned();
        if let Some(old) = std::env::var_os("LD_PRELOAD").filter(|v| !v.is_empty()) {
            preload.push(":");
            preload.push(old);
        }
        cmd.env("LD_PRELOAD", preload)
            .env("DFS_SHIM_ADDR", &self.addr)
            .env("DFS_SHIM_PREFIX", &self.prefix)
            .env("DFS_SHIM_LIB", &self.library)
            .env("DFS_SHIM_LOCKS", &self.locks);
        for v in [
            "DFS_SHIM_TABLE",
            "DFS_SHIM_SESSION",
            "DFS_SHIM_CWD",
            "DFS_SHIM_INHERIT",
        ] {
            cmd.env_remove(v);
        }
        match self.timeout {
            Some(t) => cmd.env("DFS_SHIM_TIMEOUT", t.to_string()),
            None => cmd.env_remove("DFS_SHIM_TIMEOUT"),
        };
        match &self.secret {
            Some(s) => cmd.env("DFS_SHIM_SECRET_FILE", s),
            None => cmd.env_remove("DFS_SHIM_SECRET_FILE"),
        };
        if self.lend {
            cmd.env_remove("DFS_SHIM_NO_LEND");
        } else {
            cmd.env("DFS_SHIM_NO_LEND", "1");
        }
    }
}

/// A private directory (mode 0700) for a run's lock files, removed when dropped.
#[derive(Debug)]
pub struct LockDir(pub PathBuf);

impl LockDir {
    /// Makes one in `XDG_RUNTIME_DIR` or the temporary directory.
    pub fn new() -> Result<LockDir, String> {
        use std::os::unix::fs::DirBuilderExt;
        let base = std::env::var_os("XDG_RUNTIME_DIR")
            .map(PathBuf::from)
            .filter(|d| d.is_dir())
            .unwrap_or_else(std::env::temp_dir);
        for _ in 0..16 {
            let mut r = [0u8; 8];
            getrandom::fill(&mut r).map_err(|e| e.to_string())?;
            let name: String = r.iter().map(|b| format!("{b:02x}")).collect();
            let d = base.join(format!("dfs-run-{name}"));
            match std::fs::DirBuilder::new().mode(0o700).create(&d) {
                Ok(()) => return Ok(LockDir(d)),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(format!("cannot make {}: {e}", d.display())),
            }
        }
        Err("cannot make a lock directory".into())
    }
}

impl Drop for LockDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The prefix as the library wants it: absolute, without `.`, `..` or a trailing slash.
pub fn clean_prefix(p: &str) -> Result<String, String> {
    if !p.starts_with('/') {
        return Err(format!(
            "the prefix {p:?} must be an absolute path (say /dfs)"
        ));
    }
    let mut parts: Vec<&str> = Vec::new();
    for c in p.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    if parts.is_empty() {
        return Err("the prefix cannot be / (the program needs its own files)".into());
    }
    Ok(format!("/{}", parts.join("/")))
}
