//! POSIX conformance (pjdfstest) and data integrity under random operations (fsx) through a
//! real mount. Both tools are installed into the clone by scripts/install-test-deps.sh.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::*;
use test_support::{test_user, TestUser};

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

/// The same, with other users than `nobody` to switch to: on a server that squashes root,
/// root's own files belong to nobody, and a test that expects "another user" to be refused
/// on them would be asking nobody about nobody's files.
fn config_without_nobody() -> String {
    PJDFSTEST_CONFIG.replace(r#"["nobody", "nogroup"],"#, r#"["sys", "sys"],"#)
}

/// Runs pjdfstest in `dir` (as `user`, or root), and returns its summary line, the names of
/// the tests that failed, and the counts of (failed, passed).
fn pjdfstest(
    tmp: &Path,
    dir: &Path,
    config: &str,
    user: Option<&TestUser>,
) -> (String, Vec<String>, u32, u32) {
    let conf = tmp.join("pjdfstest.toml");
    std::fs::write(&conf, config).unwrap();
    std::fs::set_permissions(&conf, std::fs::Permissions::from_mode(0o644)).unwrap();
    // A copy any user may run: the clone may sit where they cannot look (/root).
    let bin = tmp.join("pjdfstest");
    std::fs::copy(tool("pjdfstest"), &bin).unwrap();
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut cmd = match user {
        None => Command::new(&bin),
        Some(u) => {
            let mut c = Command::new("setpriv");
            c.args([
                "--reuid",
                &u.uid.to_string(),
                "--regid",
                &u.gid.to_string(),
                "--clear-groups",
                "--inh-caps=-all",
                "--",
            ])
            .arg(&bin);
            c
        }
    };
    // Into a file: failures come with backtraces, more than a pipe holds.
    let log = tmp.join("pjdfstest.log");
    let mut child = cmd
        .arg("-c")
        .arg(&conf)
        .arg("-p")
        .arg(dir)
        .current_dir(dir)
        .stdin(std::process::Stdio::null())
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(std::fs::File::options().append(true).open(&log).unwrap())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(600);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("pjdfstest took longer than 600 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let text = String::from_utf8_lossy(&std::fs::read(&log).unwrap()).into_owned();
    let summary = text
        .lines()
        .find(|l| l.starts_with("Summary:"))
        .unwrap_or_else(|| panic!("no summary from pjdfstest:\n{text}"))
        .to_owned();
    let count = |what: &str| -> u32 {
        summary
            .trim_start_matches("Summary: ")
            .split(", ")
            .find_map(|p| p.strip_suffix(what))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or(0)
    };
    let failed: Vec<String> = text
        .lines()
        .filter(|l| l.trim_end().ends_with("FAILED"))
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .collect();
    (summary.clone(), failed, count(" failed"), count(" passed"))
}

/// A temporary directory every user may pass through.
fn open_tempdir() -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    tmp
}

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

/// Why a pjdfstest case run by root fails on a server that squashes root (the default), if
/// squashing explains it: root acts as nobody there, so what only root may do is refused, as
/// it is to nobody on a local disk.
fn squashing_explains(test: &str) -> Option<&'static str> {
    if test.ends_with("::char") || test.ends_with("::block") {
        // Making device nodes needs CAP_MKNOD.
        return Some("device nodes");
    }
    if test.ends_with("::uid_gid_eq_euid_egid") {
        // The test's root makes a file and expects to own it; it belongs to nobody.
        return Some("root's new files are nobody's");
    }
    if test == "chmod::clear_isgid_bit" || test.starts_with("link::share_metadata::") {
        // They give a file to another user first: chown needs CAP_CHOWN.
        return Some("chown to another user");
    }
    None
}

#[test]
fn pjdfstest_with_root_squashed_fails_only_where_root_is_nobody() {
    let tmp = open_tempdir();
    let export = tmp.path().join("export");
    std::fs::create_dir(&export).unwrap();
    let server = ServerProc::launch(&[], &fresh_addr(), &export, &tmp.path().join("key"), &[]);
    let m = MountProc::start(&server.addr, &tmp.path().join("mnt"), &[]);
    // A directory nobody (root, squashed) may write in.
    std::fs::create_dir(export.join("pjdfstest")).unwrap();
    std::fs::set_permissions(
        export.join("pjdfstest"),
        std::fs::Permissions::from_mode(0o1777),
    )
    .unwrap();
    let dir = m.mp.join("pjdfstest");
    let (summary, failed, _, passed) = pjdfstest(tmp.path(), &dir, &config_without_nobody(), None);
    let mut why = std::collections::BTreeMap::<&str, u32>::new();
    let mut unexplained = Vec::new();
    for t in &failed {
        match squashing_explains(t) {
            Some(w) => *why.entry(w).or_default() += 1,
            None => unexplained.push(t.as_str()),
        }
    }
    println!("pjdfstest as root on a default-squash mount: {summary}; failures: {why:?}");
    assert!(
        unexplained.is_empty(),
        "{summary}: failures that squashing does not explain: {unexplained:#?}"
    );
    assert!(passed >= 285, "{summary}");
    m.umount();
}

#[test]
fn pjdfstest_as_an_ordinary_user_passes() {
    let user = test_user("user");
    let tmp = open_tempdir();
    let export = tmp.path().join("export");
    std::fs::create_dir(&export).unwrap();
    let server = ServerProc::launch(&[], &fresh_addr(), &export, &tmp.path().join("key"), &[]);
    let m = MountProc::start(&server.addr, &tmp.path().join("mnt"), &[]);
    std::fs::create_dir(export.join("pjdfstest")).unwrap();
    std::os::unix::fs::chown(export.join("pjdfstest"), Some(user.uid), Some(user.gid)).unwrap();
    let dir = m.mp.join("pjdfstest");
    // The tests that need root (to switch users, make device nodes, chown) skip themselves.
    let (summary, failed, nfailed, passed) =
        pjdfstest(tmp.path(), &dir, PJDFSTEST_CONFIG, Some(&user));
    println!(
        "pjdfstest as {} on a default-squash mount: {summary}",
        user.name
    );
    assert!(nfailed == 0 && failed.is_empty(), "{summary}: {failed:#?}");
    assert!(passed >= 250, "{summary}");
    m.umount();
}

/// fsx's operation count: `DFS_FSX_OPS`, else `default`, at most `most`.
fn fsx_ops(default: u64, most: u64) -> u64 {
    std::env::var("DFS_FSX_OPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
        .min(most)
}

/// Runs fsx for `ops` operations with `seed` on `file`, keeping its good copies in `keep`;
/// fails the test with fsx's last lines unless it says all went well.
fn fsx(file: &Path, keep: &Path, ops: u64, seed: &str) {
    let out = run_within(
        Command::new(tool("fsx"))
            .arg("-N")
            .arg(ops.to_string())
            .args(["-S", seed, "-P"])
            .arg(keep)
            .arg(file),
        Duration::from_secs(1800),
    );
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && text.contains("All operations completed A-OK"),
        "fsx failed:\n{}",
        text.lines().rev().take(60).collect::<Vec<_>>().join("\n")
    );
}

#[test]
fn fsx_finds_no_corruption() {
    let ops = fsx_ops(100_000, u64::MAX);
    let tmp = tempfile::tempdir().unwrap();
    let export = tmp.path().join("export");
    std::fs::create_dir(&export).unwrap();
    let server = ServerProc::start(&export, &tmp.path().join("key"), &[]);
    let m = MountProc::start(&server.addr, &tmp.path().join("mnt"), &[]);
    fsx(&m.mp.join("fsx.data"), tmp.path(), ops, "20261125");
    println!("fsx on the dfs mount: {ops} operations, no corruption");
    m.umount();
}

/// fsx on a file that another process holds open for reading, so that the file passes
/// through to the server's (see `dfs_client::fuse`'s passthrough): every open of fsx, its
/// writes, truncations and shared mappings then go to the server's file from this kernel.
#[test]
fn fsx_finds_no_corruption_on_a_file_passed_through() {
    let ops = fsx_ops(30_000, 30_000);
    let tmp = tempfile::tempdir().unwrap();
    let export = tmp.path().join("export");
    std::fs::create_dir(&export).unwrap();
    let server = ServerProc::start(&export, &tmp.path().join("key"), &[]);
    let m = MountProc::start(&server.addr, &tmp.path().join("mnt"), &[]);
    let data = m.mp.join("fsx.data");
    std::fs::write(&data, b"").unwrap();
    let held = std::fs::File::open(&data).unwrap();
    fsx(&data, tmp.path(), ops, "20261202");
    // The held open sees what fsx left, byte for byte, as the server's file has it.
    let mut seen = Vec::new();
    std::io::Read::read_to_end(&mut &held, &mut seen).unwrap();
    assert!(seen == std::fs::read(export.join("fsx.data")).unwrap());
    println!("fsx on a passed-through file: {ops} operations, no corruption");
    drop(held);
    m.umount();
}
