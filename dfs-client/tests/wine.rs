//! The stack built for Windows, run under Wine, against Linux peers over tcp: VMMC sockets
//! both ways (a Windows client of a Linux listener, a Linux client of a Windows listener) and
//! the client library against a Linux `dfs-server`.
//!
//! The Windows programs are the workspace's own examples built for `x86_64-pc-windows-gnu`
//! by `scripts/build-windows.sh` (which scripts/test.sh runs); see `test_support::wine` for
//! how they run and when a missing build fails the tests.

mod common;

use std::io::{Read, Write};

use common::ServerProc;
use test_support::wine::{echo_pattern, serve_echo_protocol, windows_build, WineProc, WINE_WAIT};
use test_support::{fnv, FNV_START};
use vmmc_sockets::{VmmcListener, VmmcStream};

fn example(name: &str) -> Option<std::path::PathBuf> {
    windows_build(&format!("x86_64-pc-windows-gnu/debug/examples/{name}.exe"))
}

/// echo_peer's services, in this process, for `conns` connections.
fn serve(l: VmmcListener, conns: usize) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        for _ in 0..conns {
            let (mut s, _) = l.accept().expect("accept");
            s.set_read_timeout(Some(WINE_WAIT)).expect("timeout");
            serve_echo_protocol(&mut s).expect("the protocol");
        }
    })
}

#[test]
fn a_wine_client_talks_to_a_linux_listener_over_tcp() {
    let Some(exe) = example("echo_peer") else {
        return;
    };
    let l = VmmcListener::bind("tcp:127.0.0.1:0").unwrap();
    let addr = l.local_addr().to_string();
    let server = serve(l, 2);
    let (st, out, err) = WineProc::start(&exe, &["ping", &addr, "200", "1000"], &[]).finish();
    assert!(st.success(), "ping under Wine failed: {out} {err}");
    assert!(out.starts_with("rtt_us "), "{out}");
    let (st, out, err) = WineProc::start(&exe, &["bulk", &addr, "32"], &[]).finish();
    assert!(st.success(), "bulk under Wine failed: {out} {err}");
    assert!(out.starts_with("mib_per_s "), "{out}");
    server.join().unwrap();
}

#[test]
fn a_linux_client_talks_to_a_wine_listener_over_tcp() {
    let Some(exe) = example("echo_peer") else {
        return;
    };
    let mut peer = WineProc::start(&exe, &["listen", "tcp:127.0.0.1:0"], &[]);
    let addr = peer.line_starting("listening ");

    let mut s = VmmcStream::connect(&addr).unwrap();
    s.set_read_timeout(Some(WINE_WAIT)).unwrap();
    s.write_all(b"E").unwrap();
    for round in 0..100u64 {
        let msg: Vec<u8> = (0..3000).map(|i| echo_pattern(i + round)).collect();
        s.write_all(&msg).unwrap();
        let mut back = vec![0u8; msg.len()];
        s.read_exact(&mut back).unwrap();
        assert_eq!(back, msg, "round {round}");
    }
    drop(s);

    let mut s = VmmcStream::connect(&addr).unwrap();
    s.set_read_timeout(Some(WINE_WAIT)).unwrap();
    s.write_all(b"S").unwrap();
    let chunk: Vec<u8> = (0..1u64 << 20).map(echo_pattern).collect();
    let mut h = FNV_START;
    for _ in 0..32 {
        s.write_all(&chunk).unwrap();
        h = fnv(&chunk, h);
    }
    s.shutdown(std::net::Shutdown::Write).unwrap();
    let mut answer = [0u8; 16];
    s.read_exact(&mut answer).unwrap();
    assert_eq!(
        u64::from_le_bytes(answer[..8].try_into().unwrap()),
        32 << 20
    );
    assert_eq!(u64::from_le_bytes(answer[8..].try_into().unwrap()), h);
}

#[test]
fn the_client_library_under_wine_uses_a_linux_server_over_tcp() {
    let Some(exe) = example("dfs_smoke") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let export = tmp.path().join("export");
    std::fs::create_dir(&export).unwrap();
    // The Windows client claims nobody's ids (it has no Unix ones): let it write.
    std::fs::set_permissions(&export, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    let secret = tmp.path().join("secret");
    std::fs::write(&secret, "0123456789abcdef0123456789abcdef").unwrap();
    let secret = secret.to_str().unwrap();
    let server = ServerProc::launch(
        &[],
        "tcp:127.0.0.1:0",
        &export,
        &tmp.path().join("handle.key"),
        &["--squash", "none", "--secret", secret],
    );
    let (st, out, err) =
        WineProc::start(&exe, &[&server.addr, secret, "from-wine", "8"], &[]).finish();
    assert!(st.success(), "dfs_smoke under Wine failed: {out} {err}");
    assert!(out.starts_with("ok "), "{out}");
    // It cleaned up after itself, through the server.
    assert_eq!(std::fs::read_dir(&export).unwrap().count(), 0);
}

#[test]
fn an_shm_address_on_windows_fails_saying_it_is_not_implemented() {
    let Some(exe) = example("echo_peer") else {
        return;
    };
    let (st, out, err) = WineProc::start(&exe, &["listen", "shm:wine-test"], &[]).finish();
    assert!(!st.success(), "{out}");
    assert!(err.contains("not implemented"), "{err}");
}
