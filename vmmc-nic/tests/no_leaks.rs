//! A killed process leaves nothing behind: no file in /dev/shm, no control socket, and no
//! process anywhere still holding the region.

mod common;

use std::collections::BTreeSet;
use std::os::unix::fs::MetadataExt;
use std::time::{Duration, Instant};

use common::*;

fn dev_shm() -> BTreeSet<String> {
    std::fs::read_dir("/dev/shm")
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// (device, inode) of every region memfd a process holds open.
fn region_inodes(pid: u32) -> BTreeSet<(u64, u64)> {
    let mut out = BTreeSet::new();
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return out;
    };
    for e in dir.filter_map(|e| e.ok()) {
        let is_region = std::fs::read_link(e.path())
            .map(|l| l.to_string_lossy().starts_with("/memfd:vmmc-region"))
            .unwrap_or(false);
        if is_region {
            if let Ok(m) = std::fs::metadata(e.path()) {
                out.insert((m.dev(), m.ino()));
            }
        }
    }
    out
}

/// Processes on this machine holding any of `inodes`, by fd or by mapping.
fn holders(inodes: &BTreeSet<(u64, u64)>) -> Vec<u32> {
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().filter_map(|e| e.ok()) {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let by_fd = !region_inodes(pid).is_disjoint(inodes);
        let by_map = std::fs::read_to_string(format!("/proc/{pid}/maps"))
            .map(|maps| {
                maps.lines().any(|l| {
                    let f: Vec<&str> = l.split_whitespace().collect();
                    f.len() >= 6
                        && f[5].starts_with("/memfd:vmmc-region")
                        && inodes.iter().any(|(_, ino)| f[4] == ino.to_string())
                })
            })
            .unwrap_or(false);
        if by_fd || by_map {
            found.push(pid);
        }
    }
    found
}

fn control_socket_listed(name: &str) -> bool {
    std::fs::read_to_string("/proc/net/unix")
        .unwrap()
        .lines()
        .any(|l| l.ends_with(&format!("@vmmc-nic/{name}")))
}

#[test]
fn sigkilled_exporter_and_importer_leave_nothing_behind() {
    let shm_before = dev_shm();
    let (mut exporter, addr, id) = spawn_exporter(Backend::Shm, 8 << 20, "open");
    let (mut importer, ready) = spawn_importer(&addr, id, "all");
    assert_eq!(ready, format!("READY {}", 8 << 20));
    importer.ok("fill 0 8388608 1 n");
    assert_eq!(exporter.ok("wait 10000"), "notified");

    let name = addr.to_string().trim_start_matches("shm:").to_owned();
    assert!(
        control_socket_listed(&name),
        "the control socket should be listed while alive"
    );
    let inodes = region_inodes(exporter.pid());
    assert_eq!(
        inodes.len(),
        1,
        "the exporter should hold exactly one region memfd"
    );
    assert_eq!(
        region_inodes(importer.pid()),
        inodes,
        "the importer holds the same region"
    );

    exporter.kill();
    importer.kill();

    let t0 = Instant::now();
    loop {
        let left = holders(&inodes);
        let sock = control_socket_listed(&name);
        if left.is_empty() && !sock {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "after SIGKILL: region still held by {left:?}, control socket listed: {sock}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(dev_shm(), shm_before, "something appeared in /dev/shm");
}

#[test]
fn a_killed_importer_does_not_pin_the_region_of_a_live_exporter() {
    let (mut exporter, addr, id) = spawn_exporter(Backend::Shm, 1 << 20, "open");
    let (mut importer, _) = spawn_importer(&addr, id, "all");
    let inodes = region_inodes(exporter.pid());
    importer.kill();
    assert_eq!(exporter.ok("wait 10000"), "left");
    assert_eq!(holders(&inodes), vec![exporter.pid()]);
}
