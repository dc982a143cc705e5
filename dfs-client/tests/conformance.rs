//! POSIX conformance (pjdfstest) and data integrity under random operations (fsx) through a
//! real mount. Both tools are installed into the clone by scripts/install-test-deps.sh.

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;

/// pjdfstest's users: it switches to them to test permissions.
const PJDFSTEST_CONFIG: &str = r#"
[features]
posix_fallocate = {}
utime_now = {}
utimensat = {}
rename_ctime = {}

[settings]
naptime = 0.05
allow_remount = false

[dummy_auth]
entries = [
  ["nobody", "nogroup"],
  ["daemon", "daemon"],
  ["bin", "bin"],
]
"#;

#[test]
fn pjdfstest_passes() {
    let tmp = tempfile::tempdir().unwrap();
    let export = tmp.path().join("export");
    std::fs::create_dir(&export).unwrap();
    let server = ServerProc::start(&export, &tmp.path().join("key"), &[]);
    let m = MountProc::start(&server.addr, &tmp.path().join("mnt"), &[]);
    let config = tmp.path().join("pjdfstest.toml");
    std::fs::write(&config, PJDFSTEST_CONFIG).unwrap();
    let dir = m.mp.join("pjdfstest");
    std::fs::create_dir(&dir).unwrap();
    let out = run_within(
        Command::new(tool("pjdfstest"))
            .arg("-c")
            .arg(&config)
            .arg("-p")
            .arg(&dir)
            .current_dir(&dir),
        Duration::from_secs(600),
    );
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    let summary = text
        .lines()
        .find(|l| l.starts_with("Summary:"))
        .unwrap_or_else(|| panic!("no summary from pjdfstest:\n{text}"));
    println!("pjdfstest on the dfs mount: {summary}");
    let failed: Vec<&str> = text
        .lines()
        .filter(|l| l.trim_end().ends_with("FAILED"))
        .collect();
    assert!(
        summary.starts_with("Summary: 0 failed"),
        "{summary}\n{failed:#?}\n{text}"
    );
    // The skipped ones need a remount, a second file system or 65000 links.
    let passed: u32 = summary
        .split(", ")
        .find_map(|p| p.strip_suffix(" passed"))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(passed >= 380, "{summary}");
    m.umount();
}

#[test]
fn fsx_finds_no_corruption() {
    let ops: u64 = std::env::var("DFS_FSX_OPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let tmp = tempfile::tempdir().unwrap();
    let export = tmp.path().join("export");
    std::fs::create_dir(&export).unwrap();
    let server = ServerProc::start(&export, &tmp.path().join("key"), &[]);
    let m = MountProc::start(&server.addr, &tmp.path().join("mnt"), &[]);
    let out = run_within(
        Command::new(tool("fsx"))
            .arg("-N")
            .arg(ops.to_string())
            .args(["-S", "20261125", "-P"])
            .arg(tmp.path())
            .arg(m.mp.join("fsx.data")),
        Duration::from_secs(1800),
    );
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && text.contains("All operations completed A-OK"),
        "fsx failed:\n{}",
        text.lines().rev().take(60).collect::<Vec<_>>().join("\n")
    );
    println!("fsx on the dfs mount: {ops} operations, no corruption");
    m.umount();
}
