//! The README's main job, `deploy/quickstart.sh`, start to stop, in a scratch directory.

mod common;

use std::path::Path;
use std::process::Command;

use common::*;

#[test]
fn quickstart_serves_mounts_and_stops() {
    let tmp = tempfile::tempdir().unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/quickstart.sh");
    let bin_dir = Path::new(DFS).parent().unwrap();
    server_bin();
    let mp = tmp.path().join("mnt");
    let _cleanup = UnmountOnDrop(mp.clone());
    let quick = |arg: Option<&str>| {
        let mut c = Command::new("bash");
        c.arg(&script);
        if let Some(a) = arg {
            c.arg(a);
        }
        c.env("DFS_EXPORT", tmp.path().join("export"))
            .env("DFS_MOUNT", &mp)
            .env("DFS_ADDR", fresh_addr())
            .env("DFS_STATE", tmp.path().join("run"))
            .env("DFS_SECRET", tmp.path().join("secret"))
            .env("DFS_BIN", bin_dir)
            // Never the machine's own /usr/local and /sbin.
            .env("DFS_PREFIX", tmp.path().join("prefix"))
            .env("DFS_SBIN", tmp.path().join("sbin"));
        run(&mut c)
    };
    let out = quick(None);
    let said =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{said}");
    assert!(
        said.contains("read back: written through the dfs mount"),
        "{said}"
    );
    assert!(said.contains("deploy/quickstart.sh stop"), "{said}");
    assert!(dfs_client::mount::is_dfs_mount(&mp));
    // It installed copies (not links into this clone) where the commands it prints find them.
    for p in ["prefix/bin/dfs", "prefix/bin/dfs-server", "sbin/mount.dfs"] {
        let md = std::fs::symlink_metadata(tmp.path().join(p)).unwrap();
        assert!(md.file_type().is_file(), "{p} is not a plain file");
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&md.permissions()) & 0o111,
            0o111,
            "{p} is not executable"
        );
    }
    assert!(
        said.contains(&format!("unmount with: dfs umount {}", mp.display())),
        "{said}"
    );
    assert!(
        std::fs::read_to_string(tmp.path().join("export/hello-from-dfs.txt"))
            .unwrap()
            .starts_with("written through")
    );
    // The secret it made is private.
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(tmp.path().join("secret"))
            .unwrap()
            .permissions(),
    );
    assert_eq!(mode & 0o077, 0);
    // Running it again finds everything up.
    let again = quick(None);
    assert!(
        String::from_utf8_lossy(&again.stdout).contains("already"),
        "{again:?}"
    );
    // The unmount it prints works as typed, with the installed `dfs` on the PATH; the
    // helper it installed mounts through mount(8)'s way of calling it.
    let path = format!(
        "{}:{}",
        tmp.path().join("prefix/bin").display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = run(Command::new("dfs")
        .env("PATH", &path)
        .arg("umount")
        .arg(&mp));
    assert!(out.status.success(), "{out:?}");
    assert!(!dfs_client::mount::is_fuse_mount(&mp));
    let secret = format!("secret={}", tmp.path().join("secret").display());
    let addr = std::fs::read_to_string(tmp.path().join("run/server.log"))
        .unwrap()
        .lines()
        .find_map(|l| {
            l.rsplit(" on ")
                .next()
                .filter(|_| l.contains("dfs-server: serving"))
        })
        .map(str::to_string)
        .expect("the server says where it serves");
    let out = run(Command::new(tmp.path().join("sbin/mount.dfs"))
        .arg(&addr)
        .arg(&mp)
        .args(["-o", &secret]));
    assert!(out.status.success(), "mount.dfs: {out:?}");
    assert!(dfs_client::mount::is_dfs_mount(&mp));
    let out = quick(Some("stop"));
    assert!(out.status.success(), "{out:?}");
    assert!(!dfs_client::mount::is_fuse_mount(&mp));
    let pid = tmp.path().join("run/server.pid");
    assert!(!pid.exists());
}

/// The suite's `run_within` drains a child's output while it runs: a child that writes far
/// more than a pipe holds finishes instead of waiting forever for a reader.
#[test]
fn a_chatty_child_is_not_left_waiting_on_a_full_pipe() {
    let out = run_within(
        Command::new("sh").args(["-c", "head -c 1000000 /dev/zero; echo done >&2"]),
        std::time::Duration::from_secs(30),
    );
    assert!(out.status.success());
    assert_eq!(out.stdout.len(), 1_000_000);
    assert_eq!(out.stderr, b"done\n");
}
