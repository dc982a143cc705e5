//! Who may import: keys, exact processes, the exporter's identity before asking, and the
//! per-peer limits, with importers in other processes, some of them real unprivileged users.

mod common;

use std::time::Duration;

use common::*;
use test_support::{test_user, Peer};
use vmmc_nic::{
    Access, Endpoint, EndpointOptions, Error, Import, ImportKey, ImportOptions, PeerIdentity,
    PeerMatch, Permissions, MAX_PENDING_GREETINGS_PER_PEER,
};

const ENTRY: &str = "common::child_process";
const WAIT: Duration = Duration::from_secs(10);

test_support::both_backends!(
    a_keyed_export_admits_only_the_key_holder,
    dialing_tells_who_exports_before_anything_is_asked,
);

fn import_child(addr: &str, id: u32, key: Option<&ImportKey>) -> String {
    let mut role = vec![
        "import".to_string(),
        addr.to_string(),
        id.to_string(),
        "deposit".to_string(),
        String::new(),
    ];
    if let Some(k) = key {
        role.push(hex_encode(k.as_bytes()));
    }
    let role: Vec<&str> = role.iter().map(String::as_str).collect();
    let (_child, answer) = Peer::spawn(ENTRY, &role);
    answer
}

fn a_keyed_export_admits_only_the_key_holder(b: Backend) {
    let ep = Endpoint::bind(&fresh(b)).unwrap();
    let key = ImportKey::random().unwrap();
    let x = ep
        .export(
            4096,
            Permissions::none()
                .allow(Access::DEPOSIT, PeerMatch::Any)
                .with_key(key.clone()),
        )
        .unwrap();
    let addr = ep.addr().to_string();
    let id = x.id().get();
    let refused = import_child(&addr, id, None);
    assert!(refused.contains("refuses deposit access"), "{refused}");
    let wrong = import_child(&addr, id, Some(&ImportKey::random().unwrap()));
    assert!(wrong.contains("refuses deposit access"), "{wrong}");
    assert_eq!(import_child(&addr, id, Some(&key)), "READY 4096");
}

fn dialing_tells_who_exports_before_anything_is_asked(b: Backend) {
    let ep = Endpoint::bind(&fresh(b)).unwrap();
    let x = ep.export(4096, Permissions::open()).unwrap();
    let d = Import::dial(ep.addr(), WAIT).unwrap();
    match (d.exporter(), b) {
        (
            PeerIdentity::Local {
                pid, uid, groups, ..
            },
            Backend::Shm,
        ) => {
            assert_eq!(*pid as u32, std::process::id());
            assert_eq!(*uid, nix::unistd::geteuid().as_raw());
            let mine: Vec<u32> = nix::unistd::getgroups()
                .unwrap()
                .into_iter()
                .map(|g| g.as_raw())
                .collect();
            assert_eq!(groups, &mine, "the kernel's supplementary groups");
        }
        (PeerIdentity::Remote(sa), Backend::Tcp) => assert!(sa.ip().is_loopback()),
        other => panic!("unexpected exporter {other:?}"),
    }
    // Nothing was asked yet: no importer, no greeting.
    assert_eq!(x.importers(), 0);
    let imp = d
        .import(x.id(), Access::DEPOSIT, &ImportOptions::default())
        .unwrap();
    imp.write_at(0, b"dialed", vmmc_nic::Notify::Yes).unwrap();
    assert_eq!(x.wait(WAIT).unwrap(), vmmc_nic::Wake::Notified);
    let mut got = [0u8; 6];
    x.read_at(0, &mut got).unwrap();
    assert_eq!(&got, b"dialed");
}

#[test]
fn a_process_rule_admits_that_process_alone() {
    let ep = Endpoint::bind(&fresh(Backend::Shm)).unwrap();
    let me = PeerMatch::Process {
        pid: std::process::id() as i32,
        uid: nix::unistd::geteuid().as_raw(),
    };
    let x = ep
        .export(4096, Permissions::none().allow(Access::DEPOSIT, me))
        .unwrap();
    // The same user in another process is refused...
    let other = import_child(&ep.addr().to_string(), x.id().get(), None);
    assert!(other.contains("refuses deposit access"), "{other}");
    // ...this process is not.
    Import::open(ep.addr(), x.id(), Access::DEPOSIT).unwrap();
}

#[test]
fn one_users_greetings_cannot_crowd_out_another() {
    let ep = Endpoint::bind(&fresh(Backend::Shm)).unwrap();
    let x = ep.export(4096, Permissions::open()).unwrap();
    let n = (MAX_PENDING_GREETINGS_PER_PEER * 4).to_string();
    let (_flood, held) = Peer::spawn_as(
        &test_user("attacker"),
        ENTRY,
        &[
            "greet-flood",
            &ep.addr().to_string(),
            &x.id().get().to_string(),
            &n,
        ],
    );
    assert!(
        held.starts_with(&format!("HELD {MAX_PENDING_GREETINGS_PER_PEER} Busy")),
        "{held}"
    );
    // Another user (here root, who is not limited; any other uid has its own share) still
    // gets its greeting through.
    let opts = ImportOptions {
        greeting: b"mine".to_vec(),
        ..Default::default()
    };
    let _mine = Import::open_with(ep.addr(), x.id(), Access::DEPOSIT, &opts).unwrap();
    // It is queued once its grant is out: wait for it.
    let t0 = std::time::Instant::now();
    let from_root = loop {
        if let Some(g) = std::iter::from_fn(|| x.take_greeting()).find(|g| g.bytes == b"mine") {
            break g;
        }
        assert!(t0.elapsed() < WAIT, "root's greeting never arrived");
        let _ = x.wait(Duration::from_millis(50));
    };
    assert!(matches!(from_root.peer, PeerIdentity::Local { uid: 0, .. }));
}

#[test]
fn one_users_connections_are_limited() {
    let ep = Endpoint::bind_with(
        &fresh(Backend::Shm),
        EndpointOptions {
            max_connections: 100,
            max_connections_per_peer: 3,
        },
    )
    .unwrap();
    let x = ep.export(4096, Permissions::open()).unwrap();
    let (_flood, held) = Peer::spawn_as(
        &test_user("attacker"),
        ENTRY,
        &[
            "greet-flood",
            &ep.addr().to_string(),
            &x.id().get().to_string(),
            "20",
        ],
    );
    assert!(held.starts_with("HELD 3 Busy"), "{held}");
    // Root is not one of the limited peers.
    let mine: Vec<Import> = (0..10)
        .map(|_| Import::open(ep.addr(), x.id(), Access::DEPOSIT).unwrap())
        .collect();
    assert_eq!(mine.len(), 10);
    assert!(matches!(
        Import::open(&fresh(Backend::Shm), x.id(), Access::DEPOSIT).unwrap_err(),
        Error::NoEndpoint(_)
    ));
}
