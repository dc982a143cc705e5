//! Tells the integration tests where cargo puts the workspace's binaries: they reuse
//! dfs-client's end-to-end helpers (`dfs-client/tests/common`), which find `dfs` and
//! `dfs-server` through `CARGO_BIN_EXE_dfs`, a variable cargo sets only for dfs-client's
//! own tests. The path is the profile directory above this build script's `OUT_DIR`.

fn main() {
    let Some(out) = std::env::var_os("OUT_DIR") else {
        return;
    };
    let out = std::path::PathBuf::from(out);
    // OUT_DIR is PROFILE/build/kernel32-shim-HASH/out.
    if let Some(profile) = out.ancestors().nth(3) {
        println!(
            "cargo:rustc-env=CARGO_BIN_EXE_dfs={}",
            profile.join("dfs").display()
        );
    }
    println!("cargo:rerun-if-changed=build.rs");
}
