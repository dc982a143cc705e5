//! The shim's end-to-end helpers: dfs-client's servers and waits (reused as they are), and
//! programs run under `dfs run`, compared with the same programs on a local directory.
#![allow(dead_code)]

#[path = "../../../dfs-client/tests/common/mod.rs"]
mod dfs_common;
pub use dfs_common::*;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use test_support::TestUser;

/// How long one script of programs may take.
pub const LIMIT: Duration = Duration::from_secs(180);

/// `dfs` and the preload library copied into a directory anyone may read, so that `dfs
/// run` finds the library beside itself also when a test user cannot reach the target
/// directory.
pub struct Bins {
    _dir: tempfile::TempDir,
    pub dfs: PathBuf,
}

impl Bins {
    pub fn new() -> Bins {
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let lib = Path::new(DFS).with_file_name("libkernel32_shim.so");
        assert!(
            lib.exists(),
            "{} is missing: run `cargo build` (the workspace builds it)",
            lib.display()
        );
        let dfs = dir.path().join("dfs");
        std::fs::copy(DFS, &dfs).unwrap();
        std::fs::copy(&lib, dir.path().join("libkernel32_shim.so")).unwrap();
        for f in [&dfs, &dir.path().join("libkernel32_shim.so")] {
            std::fs::set_permissions(f, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        Bins { _dir: dir, dfs }
    }
}

/// A temporary directory anyone may enter (test users run in it).
pub fn open_tempdir() -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    tmp
}

/// `bash -euo pipefail -c SCRIPT` as `user` (root when `None`), with `$D` set to `dir`;
/// through `dfs run ADDR /dfs` when `addr` is given.
pub fn script(
    bins: &Bins,
    user: Option<&TestUser>,
    addr: Option<&str>,
    extra_run_args: &[&str],
    dir: &str,
    body: &str,
) -> Output {
    let mut argv: Vec<String> = Vec::new();
    if let Some(u) = user {
        argv.extend(
            [
                "setpriv",
                "--reuid",
                &u.uid.to_string(),
                "--regid",
                &u.gid.to_string(),
                "--clear-groups",
                "--inh-caps=-all",
                "--",
            ]
            .map(String::from),
        );
    }
    if let Some(a) = addr {
        argv.push(bins.dfs.to_string_lossy().into_owned());
        argv.push("run".into());
        argv.extend(extra_run_args.iter().map(|s| s.to_string()));
        argv.extend([a.to_string(), "/dfs".into(), "--".into()]);
    }
    argv.extend(["bash", "-euo", "pipefail", "-c", body].map(String::from));
    run_within(
        Command::new(&argv[0])
            .args(&argv[1..])
            .env("D", dir)
            .env("HOME", "/nonexistent")
            .env("LC_ALL", "C")
            .current_dir("/"),
        LIMIT,
    )
}

/// The output of a script that must succeed.
pub fn ok(out: Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what} failed ({})\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}
