//! `vmmc-run [--routes FILE] [--route 'ADDR TARGET']... [--debug] -- PROGRAM [ARGS...]`
//!
//! Runs PROGRAM with the VMMC socket preload: its stream sockets to routed addresses go over
//! VMMC, everything else over the kernel as before. The routes are checked here first, so a
//! mistake is reported before the program starts, not at its first connect.

#![deny(missing_docs)]

use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, ExitCode};

use vmmc_sockets::routes::Routes;

const USAGE: &str =
    "usage: vmmc-run [--routes FILE] [--route 'ADDR TARGET']... [--debug] -- PROGRAM [ARGS...]

Runs PROGRAM with libvmmc_preload.so preloaded. Routes map ADDR (IP:PORT, *:PORT, a host
name, or NAME:PORT) to TARGET (shm:NAME or tcp:HOST:PORT; {port} is replaced by the port);
a trailing `strict` refuses instead of falling back to kernel TCP when nothing listens on
VMMC. The routes are passed on as VMMC_ROUTES_FILE and VMMC_ROUTES.
Environment: VMMC_PRELOAD_LIB (the library; default: beside this program),
VMMC_SPIN_US (poll spin, default 50), VMMC_PRELOAD_DEBUG=1 (log routing decisions).";

fn fail(msg: &str) -> ExitCode {
    eprintln!("vmmc-run: {msg}");
    ExitCode::from(2)
}

/// The library: `VMMC_PRELOAD_LIB`, else beside this executable (as `cargo build` leaves
/// them), else in `../lib` (as installed under a prefix), else in `deps/` (where `cargo test`
/// alone leaves it).
fn library() -> Result<PathBuf, String> {
    if let Some(p) = std::env::var_os("VMMC_PRELOAD_LIB") {
        return Ok(PathBuf::from(p));
    }
    let exe = std::env::current_exe().map_err(|e| format!("cannot find myself: {e}"))?;
    let dir = exe.parent().map(PathBuf::from).unwrap_or_default();
    for cand in [
        dir.join("libvmmc_preload.so"),
        dir.join("../lib/libvmmc_preload.so"),
        dir.join("deps/libvmmc_preload.so"),
    ] {
        if cand.exists() {
            return cand
                .canonicalize()
                .map_err(|e| format!("{}: {e}", cand.display()));
        }
    }
    Err(format!(
        "libvmmc_preload.so is not beside {} nor in ../lib or deps/; build it (cargo build -p vmmc-preload) or set VMMC_PRELOAD_LIB",
        exe.display()
    ))
}

fn main() -> ExitCode {
    let mut args = std::env::args_os().skip(1);
    let mut file: Option<OsString> = None;
    let mut inline: Vec<String> = Vec::new();
    let mut debug = false;
    let mut program: Vec<OsString> = Vec::new();
    while let Some(a) = args.next() {
        match a.to_str() {
            Some("--") => {
                program.extend(args.by_ref());
                break;
            }
            Some("--routes") => match args.next() {
                Some(f) => file = Some(f),
                None => return fail("--routes needs a file"),
            },
            Some("--route") => match args.next().and_then(|r| r.into_string().ok()) {
                Some(r) => inline.push(r),
                None => return fail("--route needs 'ADDR TARGET'"),
            },
            Some("--debug") => debug = true,
            Some("-h" | "--help") => {
                println!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            _ => {
                // No `--`: the first unknown word starts the program.
                program.push(a);
                program.extend(args.by_ref());
                break;
            }
        }
    }
    let Some((prog, rest)) = program.split_first() else {
        return fail(&format!("no program to run\n{USAGE}"));
    };
    let mut text = String::new();
    if let Some(f) = &file {
        match std::fs::read_to_string(f) {
            Ok(t) => text = t + "\n",
            Err(e) => return fail(&format!("{}: {e}", PathBuf::from(f).display())),
        }
    }
    let inline = inline.join("\n");
    text.push_str(&inline);
    if let Err(e) = Routes::parse(&text) {
        return fail(&e.to_string());
    }
    let lib = match library() {
        Ok(l) => l,
        Err(e) => return fail(&e),
    };
    let mut preload = lib.into_os_string();
    if let Some(old) = std::env::var_os("LD_PRELOAD").filter(|o| !o.is_empty()) {
        preload.push(":");
        preload.push(old);
    }
    let mut cmd = Command::new(prog);
    cmd.args(rest).env("LD_PRELOAD", preload);
    if let Some(f) = file {
        let abs = std::path::absolute(&f).unwrap_or_else(|_| PathBuf::from(&f));
        cmd.env("VMMC_ROUTES_FILE", abs);
    }
    if !inline.is_empty() {
        cmd.env("VMMC_ROUTES", inline);
    }
    if debug {
        cmd.env("VMMC_PRELOAD_DEBUG", "1");
    }
    let e = cmd.exec();
    fail(&format!("{}: {e}", PathBuf::from(prog).display()))
}
