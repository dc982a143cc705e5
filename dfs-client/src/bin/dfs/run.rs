//! `dfs run`: a program with the kernel32 shim preloaded, so that paths under a prefix are
//! files of a DFS server, with no mount, no root and no `/dev/fuse`.
//!
//! This side only prepares: it checks that the server answers (so a wrong address or
//! secret is one clear line here, not an error from deep inside the program), finds the
//! library, makes the run's lock directory, and starts the program with the variables the
//! library reads. The library does the rest in every process of the run.

use std::ffi::OsString;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The preload library's file name, as cargo builds it.
pub const LIB_NAME: &str = "libkernel32_shim.so";

/// Where the library may be: beside this program (a cargo build, or `install`ed copies
/// side by side), or in `../lib` (the quick start installs `dfs` in `PREFIX/bin` and the
/// library in `PREFIX/lib`). `DFS_SHIM_LIBRARY` names another.
pub fn find_library() -> Result<PathBuf, String> {
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
    let candidates = [dir.join(LIB_NAME), dir.join("../lib").join(LIB_NAME)];
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

/// Removes the run's lock directory when the run ends.
struct LockDir(PathBuf);

impl Drop for LockDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn make_lock_dir() -> Result<LockDir, String> {
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

/// The prefix as the library wants it: absolute, without `.`, `..` or a trailing slash.
fn clean_prefix(p: &str) -> Result<String, String> {
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

/// Runs `command` under the shim and returns its exit status (128 + the signal that
/// killed it, as a shell says).
pub fn run_cmd(
    secret: Option<PathBuf>,
    timeout: Option<f64>,
    addr: String,
    prefix: String,
    command: Vec<OsString>,
) -> Result<u8, String> {
    let prefix = clean_prefix(&prefix)?;
    let lib = find_library()?;
    let secret = match secret {
        Some(s) => Some(std::path::absolute(&s).map_err(|e| e.to_string())?),
        None => None,
    };
    // One connection now, for a clear error if the server is not there or refuses us.
    let opts = dfs_client::mount::MountOptions {
        secret: secret.clone(),
        ..Default::default()
    };
    drop(dfs_client::mount::connect(&addr, &opts)?);
    let (program, args) = command
        .split_first()
        .ok_or("no command to run (dfs run ADDR PREFIX -- COMMAND ARGS…)")?;
    let locks = make_lock_dir()?;
    let mut preload = lib.as_os_str().to_owned();
    if let Some(old) = std::env::var_os("LD_PRELOAD").filter(|v| !v.is_empty()) {
        preload.push(":");
        preload.push(old);
    }
    let mut cmd = Command::new(program);
    cmd.args(args)
        .env("LD_PRELOAD", preload)
        .env("DFS_SHIM_ADDR", &addr)
        .env("DFS_SHIM_PREFIX", &prefix)
        .env("DFS_SHIM_LIB", &lib)
        .env("DFS_SHIM_LOCKS", &locks.0)
        .env_remove("DFS_SHIM_TABLE")
        .env_remove("DFS_SHIM_SESSION")
        .env_remove("DFS_SHIM_CWD")
        .env_remove("DFS_SHIM_INHERIT");
    match timeout {
        Some(t) => cmd.env("DFS_SHIM_TIMEOUT", t.to_string()),
        None => cmd.env_remove("DFS_SHIM_TIMEOUT"),
    };
    match &secret {
        Some(s) => cmd.env("DFS_SHIM_SECRET_FILE", s),
        None => cmd.env_remove("DFS_SHIM_SECRET_FILE"),
    };
    let mut child = cmd.spawn().map_err(|e| {
        format!(
            "cannot run {}: {}",
            Path::new(program).display(),
            dfs_proto::errno::plain(&e)
        )
    })?;
    // As a shell does: the terminal's Ctrl-C and Ctrl-\ are the program's to act on, and
    // this process waits for it to end either way.
    for sig in [nix::sys::signal::SIGINT, nix::sys::signal::SIGQUIT] {
        // SAFETY: SIG_IGN installs no handler code.
        let _ = unsafe { nix::sys::signal::signal(sig, nix::sys::signal::SigHandler::SigIgn) };
    }
    let status = child.wait().map_err(|e| e.to_string())?;
    Ok(match (status.code(), status.signal()) {
        (Some(c), _) => c as u8,
        (None, Some(s)) => 128u8.wrapping_add(s as u8),
        _ => 1,
    })
}
