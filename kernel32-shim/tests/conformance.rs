//! pjdfstest and fsx through the shim, as dfs-client's conformance tests run them through
//! the mount. The figures are printed (`cargo test -- --nocapture`) for the README.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::*;
use test_support::test_user;

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

/// Cases that cannot pass through an `LD_PRELOAD` library, whatever it does: a Unix
/// socket's node is made by `bind`, which makes a socket too (a DFS name is no socket
/// the kernel could bind); `ETXTBSY` needs the kernel to execute a DFS file; `EBUSY` needs
/// a mount on a DFS directory.
fn cannot_pass(name: &str) -> bool {
    name.ends_with("::socket")
        || name.ends_with("::socket_error")
        || name.ends_with("::etxtbsy")
        || name == "rmdir::ebusy"
}

/// Runs pjdfstest as root or as `user` under `dfs run`; returns the summary and the
/// failed cases.
fn pjdfstest(user: Option<&test_support::TestUser>) -> (String, Vec<String>) {
    let tmp = open_tempdir();
    let bins = Bins::new();
    let export = tmp.path().join("export");
    std::fs::create_dir(&export).unwrap();
    std::fs::create_dir(export.join("p")).unwrap();
    std::fs::set_permissions(export.join("p"), std::fs::Permissions::from_mode(0o777)).unwrap();
    let conf = tmp.path().join("pjdfstest.toml");
    std::fs::write(&conf, PJDFSTEST_CONFIG).unwrap();
    std::fs::set_permissions(&conf, std::fs::Permissions::from_mode(0o644)).unwrap();
    let bin = tmp.path().join("pjdfstest");
    std::fs::copy(tool("pjdfstest"), &bin).unwrap();
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    let log = tmp.path().join("pjdfstest.log");
    std::fs::write(&log, "").unwrap();
    std::fs::set_permissions(&log, std::fs::Permissions::from_mode(0o666)).unwrap();
    let server = ServerProc::start(&export, &tmp.path().join("key"), &[]);
    let out = script(
        &bins,
        user,
        Some(&server.addr),
        &[],
        "/dfs/p",
        // Into a file: its report is longer than a pipe holds, and the test reads the
        // pipe only once the script is over.
        &format!(
            "cd /dfs/p && {} -c {} -p /dfs/p > {} 2>&1 || true",
            bin.display(),
            conf.display(),
            log.display()
        ),
    );
    let text = String::from_utf8_lossy(&std::fs::read(&log).unwrap_or_default()).into_owned();
    let summary = text
        .lines()
        .find(|l| l.starts_with("Summary:"))
        .unwrap_or_else(|| {
            panic!(
                "no summary from pjdfstest:\n{text}\n{}",
                String::from_utf8_lossy(&out.stderr)
            )
        })
        .to_owned();
    let failed = text
        .lines()
        .filter(|l| l.trim_end().ends_with("FAILED"))
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .collect();
    (summary, failed)
}

#[test]
fn pjdfstest_through_the_shim() {
    let (summary, failed) = pjdfstest(None);
    println!("pjdfstest through the shim, as root: {summary}");
    let unexpected: Vec<&String> = failed.iter().filter(|f| !cannot_pass(f)).collect();
    assert!(unexpected.is_empty(), "{summary}\n{unexpected:#?}");
    let passed: u32 = summary
        .split(", ")
        .find_map(|p| p.strip_suffix(" passed"))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(passed >= 330, "{summary}");
}

#[test]
fn pjdfstest_through_the_shim_as_a_user() {
    let (summary, failed) = pjdfstest(Some(&test_user("user")));
    println!("pjdfstest through the shim, as an ordinary user: {summary}");
    let unexpected: Vec<&String> = failed.iter().filter(|f| !cannot_pass(f)).collect();
    assert!(unexpected.is_empty(), "{summary}\n{unexpected:#?}");
}

/// fsx's operations but its maps: it maps `MAP_SHARED`, which the shim refuses
/// (`ENODEV`: a shared map of a server's file cannot be kept coherent). Private maps are
/// served and tested in `behaviour.rs`.
const FSX_CONFIG: &str = "[weights]
mapread = 0
mapwrite = 0
close_open = 1
fsync = 1
fdatasync = 1
posix_fallocate = 1
punch_hole = 1
sendfile = 1
copy_file_range = 1
";

#[test]
fn fsx_through_the_shim_finds_no_corruption() {
    let ops: u64 = std::env::var("DFS_FSX_OPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(30_000);
    let tmp = open_tempdir();
    let bins = Bins::new();
    let export = tmp.path().join("export");
    std::fs::create_dir(&export).unwrap();
    let conf = tmp.path().join("fsx.toml");
    std::fs::write(&conf, FSX_CONFIG).unwrap();
    let server = ServerProc::start(&export, &tmp.path().join("key"), &[]);
    let out = run_within(
        Command::new(&bins.dfs)
            .args(["run", &server.addr, "/dfs", "--"])
            .arg(tool("fsx"))
            .arg("-f")
            .arg(&conf)
            .arg("-N")
            .arg(ops.to_string())
            .args(["-S", "20261202", "-P"])
            .arg(tmp.path())
            .arg("/dfs/fsx.data"),
        Duration::from_secs(600),
    );
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && text.contains("All operations completed A-OK"),
        "{text}"
    );
    assert!(Path::new(&export.join("fsx.data")).exists());
    println!("fsx through the shim: {ops} operations, no corruption");
}
