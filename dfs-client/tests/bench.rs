//! `dfs bench` runs, small, and its table, JSON and plot come out with every target and the
//! keys its --help documents.

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;

#[test]
fn a_small_bench_run_reports_every_target() {
    server_bin();
    let tmp = tempfile::tempdir().unwrap();
    let json = tmp.path().join("bench.json");
    let plot = tmp.path().join("bench.svg");
    let extra = tmp.path().join("extra");
    std::fs::create_dir(&extra).unwrap();
    let out = run_within(
        Command::new(DFS)
            .args([
                "bench",
                "--size",
                "8M",
                "--rounds",
                "2",
                "--files",
                "20",
                "--dir-entries",
                "50",
                "--random-ops",
                "100",
            ])
            .arg("--target")
            .arg(format!("mine={}", extra.display()))
            .arg("--json")
            .arg(&json)
            .arg("--plot")
            .arg(&plot)
            .arg("--scratch")
            .arg(tmp.path().join("scratch")),
        Duration::from_secs(600),
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for t in [
        "dfs_fuse",
        "dfs_copy",
        "dfs_tcp",
        "local",
        "fuse_ceiling",
        "mine",
    ] {
        assert!(
            text.lines().next().unwrap_or("").contains(t),
            "{t} missing from the table:\n{text}"
        );
    }
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    for k in ["config", "targets", "results", "ratios", "copies_per_byte"] {
        assert!(v.get(k).is_some(), "no {k} in the JSON");
    }
    let results = v["results"].as_array().unwrap();
    assert_eq!(results.len(), 12 * 6, "12 workloads on 6 targets");
    for r in results {
        assert_eq!(r["runs"].as_array().unwrap().len(), 2);
        assert!(r["median"].as_f64().unwrap() > 0.0, "{r}");
    }
    let ratios = &v["ratios"]["seq_read_1m"];
    for k in [
        "dfs_fuse/fuse_ceiling",
        "dfs_fuse/local",
        "pointer/copy",
        "dfs_tcp/dfs_fuse",
    ] {
        assert!(ratios[k].as_f64().unwrap() > 0.0, "{k}");
    }
    // The pointer path copies nothing in software; the copy path copies each byte twice
    // (out of the server's buffer into the ring, out of the ring into the mount's buffer).
    assert!(v["copies_per_byte"]["dfs_fuse"].as_f64().unwrap() < 0.01);
    assert!((v["copies_per_byte"]["dfs_copy"].as_f64().unwrap() - 2.0).abs() < 0.05);
    let svg = std::fs::read_to_string(&plot).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("seq_read_1m") && svg.contains("fuse_ceiling"));
    // Nothing is left mounted or running.
    assert!(!dfs_client::mount::is_fuse_mount(
        &tmp.path().join("scratch/mnt-dfs")
    ));
    assert!(
        !tmp.path().join("scratch").exists(),
        "the scratch directory it made is removed"
    );
    // Bad requests are one clear line.
    let bad = run(Command::new(DFS)
        .args([
            "bench",
            "--workloads",
            "nothing",
            "--size",
            "8M",
            "--scratch",
        ])
        .arg(tmp.path().join("s2")));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("no workload matches"));
    // sshfs over a throwaway sshd (scripts/install-test-deps.sh installs both); stat alone
    // makes its files first.
    let ssh = run(Command::new(DFS)
        .args([
            "bench",
            "--with-sshfs",
            "--no-variants",
            "--size",
            "8M",
            "--workloads",
            "stat",
            "--files",
            "5",
            "--scratch",
        ])
        .arg(tmp.path().join("s3")));
    assert!(
        ssh.status.success(),
        "{}",
        String::from_utf8_lossy(&ssh.stderr)
    );
    let table = String::from_utf8_lossy(&ssh.stdout);
    assert!(
        table.lines().next().unwrap_or("").contains("sshfs"),
        "{table}"
    );
    assert!(table.contains("dfs_fuse/sshfs"), "{table}");
}
