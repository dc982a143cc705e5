//! `dfs-run.exe`: runs an unmodified Windows program on the DFS (see
//! `kernel32_shim::windows::launch`). On Linux, `dfs run` does the same with the preload
//! library.

#[cfg(windows)]
fn main() {
    std::process::exit(kernel32_shim::windows::launch::main(
        std::env::args().skip(1).collect(),
    ));
}

#[cfg(not(windows))]
fn main() {
    eprintln!("dfs-run is the Windows launcher; on Linux, `dfs run` runs a program on the DFS");
    std::process::exit(2);
}
