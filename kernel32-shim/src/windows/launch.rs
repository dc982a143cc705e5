//! `dfs-run.exe [--secret FILE] [--uid N] [--gid N] [--timeout SECS] ADDR PREFIX -- PROGRAM
//! ARGS…`: runs an unmodified Windows program with the face loaded, so that paths under
//! PREFIX are the DFS's at ADDR. The counterpart of `dfs run` on Linux.
//!
//! The configuration travels to the program in its environment (see
//! [`crate::win32::env`]); the secret stays in its file, whose name alone is passed.

use std::path::PathBuf;

use crate::win32::{env, Prefix};

const USAGE: &str = "usage: dfs-run [--secret FILE] [--uid N] [--gid N] [--timeout SECS] \
ADDR PREFIX -- PROGRAM [ARGS...]\n\
Runs PROGRAM with paths under PREFIX (a drive such as M: or a share such as \\\\dfs\\export)\n\
on the dfs-server at ADDR (tcp:HOST:PORT). --secret names the file with the server's\n\
shared secret; --uid and --gid are who the program is on the server (believed only with\n\
the secret; without it the server squashes every client), 65534 by default.";

/// Runs the launcher with these arguments (without the program's name) and returns the
/// exit code for the process: the program's, or 2 for a usage error, 1 for a failed start.
pub fn main(args: Vec<String>) -> i32 {
    match run(args) {
        Ok(code) => code as i32,
        Err((code, msg)) => {
            eprintln!("dfs-run: {msg}");
            code
        }
    }
}

fn run(args: Vec<String>) -> Result<u32, (i32, String)> {
    let usage = |m: &str| (2, format!("{m}\n{USAGE}"));
    let mut it = args.into_iter();
    let mut positional = Vec::new();
    let mut program = Vec::new();
    while let Some(a) = it.next() {
        let mut value = |name: &str| {
            it.next()
                .ok_or_else(|| usage(&format!("{name} needs a value")))
        };
        match a.as_str() {
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(0);
            }
            "--secret" => std::env::set_var(env::SECRET_FILE, value("--secret")?),
            "--uid" => std::env::set_var(env::UID, value("--uid")?),
            "--gid" => std::env::set_var(env::GID, value("--gid")?),
            "--timeout" => std::env::set_var(env::TIMEOUT, value("--timeout")?),
            "--" => {
                program = it.by_ref().collect();
                break;
            }
            s if s.starts_with("--") => return Err(usage(&format!("unknown option {s}"))),
            _ => positional.push(a),
        }
    }
    let [addr, prefix] =
        <[String; 2]>::try_from(positional).map_err(|_| usage("ADDR and PREFIX are needed"))?;
    Prefix::parse(&prefix).map_err(|e| usage(&e))?;
    if program.is_empty() {
        return Err(usage("no PROGRAM after --"));
    }
    std::env::set_var(env::ADDR, &addr);
    std::env::set_var(env::PREFIX, &prefix);
    // Everything the check of the configuration can say, said before the program starts.
    env::config().map_err(|e| (2, e))?;
    let here = std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(PathBuf::from))
        .ok_or((1, "cannot tell where dfs-run is".to_string()))?;
    let dll = here.join("kernel32_shim.dll");
    if !dll.exists() {
        return Err((
            1,
            format!("{} is missing (it comes beside dfs-run.exe)", dll.display()),
        ));
    }
    // Rust's std on Wine 8.0 needs `ProcessPrng`, which a stub beside the launcher provides:
    // loaded first, it is the one the shim's imports bind to.
    let mut dlls = Vec::new();
    let stub = here.join("bcryptprimitives.dll");
    if stub.exists() {
        dlls.push(stub);
    }
    dlls.push(dll);
    let line = program
        .iter()
        .map(|a| quote(a))
        .collect::<Vec<_>>()
        .join(" ");
    super::ffi::spawn_with(&line, &dlls).map_err(|e| (1, format!("{}: {e}", program[0])))
}

/// `a` quoted for a Windows command line as the C runtime parses one.
fn quote(a: &str) -> String {
    if !a.is_empty() && !a.contains([' ', '\t', '"', '\n']) {
        return a.to_string();
    }
    let mut out = String::from("\"");
    let mut slashes = 0;
    for c in a.chars() {
        match c {
            '\\' => slashes += 1,
            '"' => {
                out.extend(std::iter::repeat_n('\\', slashes * 2 + 1));
                out.push('"');
                slashes = 0;
                continue;
            }
            _ => {}
        }
        if c != '\\' {
            out.extend(std::iter::repeat_n('\\', slashes));
            slashes = 0;
            out.push(c);
        }
    }
    out.extend(std::iter::repeat_n('\\', slashes * 2));
    out.push('"');
    out
}
