//! Records the commit the programs are built from: `dfs bench` puts it in its table and JSON,
//! so that every figure says what code made it.

use std::path::Path;
use std::process::Command;

fn main() {
    let commit = Command::new("git")
        .args(["describe", "--always", "--dirty", "--abbrev=12"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=DFS_COMMIT={commit}");
    // Built again when HEAD moves (a commit, a checkout) or the index changes.
    for p in ["../.git/HEAD", "../.git/logs/HEAD", "../.git/index"] {
        if Path::new(p).exists() {
            println!("cargo:rerun-if-changed={p}");
        }
    }
    println!("cargo:rerun-if-changed=build.rs");
}
