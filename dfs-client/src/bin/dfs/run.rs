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

use dfs_client::preload::{self, LockDir, Preload};

/// Runs `command` under the shim and returns its exit status (128 + the signal that
/// killed it, as a shell says).
pub fn run_cmd(
    secret: Option<PathBuf>,
    timeout: Option<f64>,
    lend: bool,
    addr: String,
    prefix: String,
    command: Vec<OsString>,
) -> Result<u8, String> {
    let prefix = preload::clean_prefix(&prefix)?;
    let library = preload::library()?;
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
    let locks = LockDir::new()?;
    let mut cmd = Command::new(program);
    cmd.args(args);
    Preload {
        library,
        addr,
        prefix,
        secret,
        timeout,
        locks: locks.0.clone(),
        lend,
    }
    .apply(&mut cmd);
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
