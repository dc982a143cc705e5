//! `dfs bench` runs, small, and its table, JSON and plot come out with every target and the
//! keys its --help documents; through a pipe it writes one progress line per measurement.
//! (Signals: bench_signals.rs. The table, JSON and plot in detail: unit tests in
//! src/bench/report.rs.)

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
        "dfs_shim",
        "dfs_copy",
        "dfs_rings",
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
    // stderr is not a terminal: plain lines, one per measurement (12 workloads, 8 targets,
    // 2 rounds), none with a terminal's control characters.
    let err = String::from_utf8_lossy(&out.stderr);
    let measured: Vec<&str> = err.lines().filter(|l| l.contains("] round ")).collect();
    assert_eq!(measured.len(), 12 * 8 * 2, "{err}");
    assert!(
        measured[0].starts_with("dfs bench: 0:00:") && measured[0].contains("[1/192] round 1/2 "),
        "{err}"
    );
    assert!(
        measured
            .iter()
            .all(|l| l.ends_with("MB/s") || l.ends_with("ops/s") || l.ends_with("entries/s")),
        "{err}"
    );
    assert!(
        err.contains("preparing dfs_fuse: the data file (8 MiB)"),
        "{err}"
    );
    assert!(!err.contains('\r') && !err.contains('\x1b'), "{err:?}");
    assert!(text.contains("medians of 2 rounds; ±"), "{text}");
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    for k in ["config", "targets", "results", "ratios", "copies_per_byte"] {
        assert!(v.get(k).is_some(), "no {k} in the JSON");
    }
    // Typed config values.
    assert_eq!(v["config"]["size_bytes"].as_u64(), Some(8 << 20));
    assert_eq!(v["config"]["rounds"].as_u64(), Some(2));
    assert_eq!(v["config"]["files"].as_u64(), Some(20));
    assert_eq!(v["config"]["fsync"].as_bool(), Some(false));
    assert_eq!(v["config"]["cold"].as_bool(), Some(false));
    let results = v["results"].as_array().unwrap();
    assert_eq!(results.len(), 12 * 8, "12 workloads on 8 targets");
    for r in results {
        assert_eq!(r["runs"].as_array().unwrap().len(), 2);
        assert!(r["median"].as_f64().unwrap() > 0.0, "{r}");
    }
    let ratios = &v["ratios"]["seq_read_1m"];
    for k in [
        "dfs_fuse/fuse_ceiling",
        "dfs_fuse/local",
        "pointer/copy",
        "passthrough/rings",
        "dfs_tcp/dfs_fuse",
        "dfs_shim/local",
        "dfs_shim/dfs_fuse",
    ] {
        assert!(ratios[k].as_f64().unwrap() > 0.0, "{k}");
    }
    // Passthrough and the pointer path copy nothing in software; the copy path copies each
    // byte twice (out of the server's buffer into the ring, out of the ring into the mount's
    // buffer).
    assert!(v["copies_per_byte"]["dfs_fuse"].as_f64().unwrap() < 0.01);
    assert!(v["copies_per_byte"]["dfs_rings"].as_f64().unwrap() < 0.01);
    assert!((v["copies_per_byte"]["dfs_copy"].as_f64().unwrap() - 2.0).abs() < 0.05);
    let svg = std::fs::read_to_string(&plot).unwrap();
    assert!(
        svg.starts_with("<svg")
            && svg.contains("seq_read_1m (MB/s)")
            && svg.contains("fuse_ceiling")
    );
    assert!(svg.contains("MB/s (log scale)") && svg.contains("mine"));
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
    // makes its files first. One round: no spread to show, and a PNG plot.
    let png = tmp.path().join("bench.png");
    let ssh = run(Command::new(DFS)
        .args([
            "bench",
            "--with-sshfs",
            "--no-variants",
            "--size",
            "8M",
            "--rounds",
            "1",
            "--workloads",
            "stat",
            "--files",
            "5",
            "--plot",
        ])
        .arg(&png)
        .arg("--scratch")
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
    assert!(
        !table.contains('±') && table.contains("one round: no spread"),
        "{table}"
    );
    let png = std::fs::read(&png).unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    assert!(!tmp.path().join("s3").exists());
}
