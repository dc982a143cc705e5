//! A fetch-only import on shm cannot be turned into a writable one.
//!
//! The importer of a fetch-only grant receives a read-only descriptor of the region's memfd.
//! A memfd's inode is created mode 0777, so without more care the importer could reopen
//! `/proc/self/fd/N` read-write and write the exporter's memory. The attacker here is a real
//! unprivileged user (`dfs-test-attacker`) in its own process, as a local stranger would be.
//!
//! What remains, by design: root (`CAP_DAC_OVERRIDE`) and processes of the exporter's own
//! user (which own the inode, and can ptrace the exporter anyway) are not kept out this way.

use std::time::Duration;

use test_support::{say, test_user, Peer};
use vmmc_nic::{Access, Endpoint, ExportId, Import, NodeAddr, PeerMatch, Permissions};

/// This binary's child entry.
const ENTRY: &str = "child_process";

/// The descriptors of memfds this process holds, from `/proc/self/fd`.
fn memfds() -> Vec<u32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc/self/fd").unwrap().flatten() {
        let Ok(target) = std::fs::read_link(e.path()) else {
            continue;
        };
        if target.to_string_lossy().starts_with("/memfd:") {
            if let Some(n) = e.file_name().to_str().and_then(|s| s.parse().ok()) {
                out.push(n);
            }
        }
    }
    out
}

/// The child: imports `id` for fetch, checks that fetching works, then tries to reopen every
/// memfd it holds read-write (and, should that work, to write through it). Answers one line:
/// `DENIED errno…` when every reopen failed, or `WROTE fd` when the hole is open.
fn run_child(role: &[String]) {
    let [what, addr, id] = role else {
        panic!("bad role {role:?}")
    };
    assert_eq!(what, "fetch-reopen");
    let addr: NodeAddr = addr.parse().unwrap();
    let id = ExportId::new(id.parse().unwrap()).unwrap();
    let imp = match Import::open(&addr, id, Access::FETCH) {
        Ok(i) => i,
        Err(e) => return say(format!("ERR import: {e}")),
    };
    let mut first = [0u8; 8];
    if let Err(e) = imp.read_at(0, &mut first) {
        return say(format!("ERR fetch: {e}"));
    }
    let fds = memfds();
    if fds.is_empty() {
        return say("ERR no memfd among my descriptors");
    }
    let mut denied = Vec::new();
    for fd in fds {
        let path = format!("/proc/self/fd/{fd}");
        match std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
        {
            Ok(f) => {
                use std::os::unix::fs::FileExt;
                return match f.write_at(b"pwned", 0) {
                    Ok(_) => say(format!("WROTE {fd}")),
                    Err(e) => say(format!("OPENED {fd} but no write: {e}")),
                };
            }
            Err(e) => denied.push(e.raw_os_error().unwrap_or(-1).to_string()),
        }
    }
    say(format!("DENIED {}", denied.join(" ")))
}

test_support::child_entry!(run_child);

#[test]
fn a_fetch_only_importer_cannot_reopen_the_region_writable() {
    let name = format!("shm:fetch-only-{}", std::process::id());
    let ep = Endpoint::bind(&name.parse().unwrap()).unwrap();
    // Anyone may fetch, no one may deposit: the accept region of every listener looks so.
    let x = ep
        .export(
            4096,
            Permissions::none().allow(Access::FETCH, PeerMatch::Any),
        )
        .unwrap();
    x.write_at(0, b"exporter").unwrap();
    let attacker = test_user("attacker");
    let (_child, answer) = Peer::spawn_as(
        &attacker,
        ENTRY,
        &[
            "fetch-reopen",
            &ep.addr().to_string(),
            &x.id().get().to_string(),
        ],
    );
    let mut got = [0u8; 8];
    x.read_at(0, &mut got).unwrap();
    assert_eq!(
        &got, b"exporter",
        "the fetch-only importer wrote the region"
    );
    assert_eq!(
        answer,
        format!("DENIED {}", libc::EACCES),
        "a fetch-only importer reopened the region read-write"
    );
    // Fetch access itself still works for that user, and deposits are still refused.
    assert!(matches!(
        Import::open_timeout(ep.addr(), x.id(), Access::DEPOSIT, Duration::from_secs(5)),
        Err(vmmc_nic::Error::PermissionDenied { .. })
    ));
}

#[test]
fn deposit_and_fetch_importers_still_work_after_a_fetch_only_grant() {
    let name = format!("shm:fetch-only-both-{}", std::process::id());
    let ep = Endpoint::bind(&name.parse().unwrap()).unwrap();
    let x = ep
        .export(
            8192,
            Permissions::none()
                .allow(Access::FETCH, PeerMatch::Any)
                .allow(Access::ALL, PeerMatch::current_user()),
        )
        .unwrap();
    let reader = Import::open(ep.addr(), x.id(), Access::FETCH).unwrap();
    let writer = Import::open(ep.addr(), x.id(), Access::ALL).unwrap();
    writer
        .write_at(100, b"after", vmmc_nic::Notify::No)
        .unwrap();
    let mut got = [0u8; 5];
    reader.read_at(100, &mut got).unwrap();
    assert_eq!(&got, b"after");
    x.read_at(100, &mut got).unwrap();
    assert_eq!(&got, b"after");
    // A second fetch-only grant after the first (the mode change is not a one-off).
    let again = Import::open(ep.addr(), x.id(), Access::FETCH).unwrap();
    again.read_at(100, &mut got).unwrap();
    assert_eq!(&got, b"after");
}
