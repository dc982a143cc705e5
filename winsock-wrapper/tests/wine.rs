//! Unmodified WinSock programs (tests/c/wsping.c, built for ws2_32 and for wsock32) under
//! Wine, with and without the wrapper, against Linux peers and each other.
//!
//! The programs and the wrapper's DLLs come from `scripts/build-windows.sh`; see
//! `test_support::wine` for how they run and when a missing build fails the tests.
#![cfg(target_os = "linux")]

use std::path::{Path, PathBuf};

use test_support::wine::{serve_echo_protocol, windows_build, WineProc, WINE_WAIT};
use vmmc_sockets::{VmmcListener, VmmcStream};

const WRAPPER_DLLS: [&str; 3] = ["vmmc_winsock.dll", "ws2_32.dll", "wsock32.dll"];

/// The wsping builds: (ws2_32 build, wsock32 build, Linux build).
fn programs() -> Option<(PathBuf, PathBuf, PathBuf)> {
    Some((
        windows_build("wsping/wsping.exe")?,
        windows_build("wsping/wsping32.exe")?,
        windows_build("wsping/wsping")?,
    ))
}

/// A directory holding `exe` and the wrapper's DLLs beside it: the program, wrapped.
fn wrapped(exe: &Path) -> Option<(tempfile::TempDir, PathBuf)> {
    let dir = tempfile::tempdir().unwrap();
    for dll in WRAPPER_DLLS {
        let built = windows_build(&format!("x86_64-pc-windows-gnu/debug/{dll}"))?;
        std::fs::copy(built, dir.path().join(dll)).unwrap();
    }
    let copy = dir.path().join(exe.file_name().unwrap());
    std::fs::copy(exe, &copy).unwrap();
    Some((dir, copy))
}

/// The environment of a wrapped program: the DLLs from its directory, and `routes`.
fn wrapped_env(routes: &str) -> [(&str, &str); 2] {
    [
        ("WINEDLLOVERRIDES", "wsock32,ws2_32=n,b"),
        ("VMMC_ROUTES", routes),
    ]
}

fn free_port() -> u16 {
    test_support::unused_port()
}

/// A VMMC listener in this process serving the echo protocol; counts what it served.
fn vmmc_peer(conns: usize) -> (String, std::thread::JoinHandle<usize>) {
    let l = VmmcListener::bind("tcp:127.0.0.1:0").unwrap();
    let addr = l.local_addr().to_string();
    let t = std::thread::spawn(move || {
        for _ in 0..conns {
            let (mut s, _) = l.accept().expect("accept");
            s.set_read_timeout(Some(WINE_WAIT)).expect("timeout");
            serve_echo_protocol(&mut s).expect("the protocol");
        }
        conns
    });
    (addr, t)
}

fn run_ok(p: WineProc, what: &str, expect: &str) -> String {
    let (st, out, err) = p.finish();
    assert!(st.success(), "{what}: {out} {err}");
    assert!(out.starts_with(expect), "{what}: {out} {err}");
    out
}

#[test]
fn unwrapped_programs_talk_to_a_linux_tcp_peer() {
    let Some((ws2, ws1, linux)) = programs() else {
        return;
    };
    let port = free_port().to_string();
    let mut server = WineProc::native(&linux, &["server", &port]);
    server.line_starting("listening ");
    for exe in [&ws2, &ws1] {
        let p = WineProc::start(exe, &["ping", "127.0.0.1", &port, "100", "64"], &[]);
        run_ok(p, "ping", "rtt_us ");
        let p = WineProc::start(exe, &["bulk", "127.0.0.1", &port, "16"], &[]);
        run_ok(p, "bulk", "mib_per_s ");
    }
}

#[test]
fn wrapped_ws2_32_and_wsock32_programs_reach_a_linux_vmmc_listener() {
    let Some((ws2, ws1, _)) = programs() else {
        return;
    };
    let (vmmc, served) = vmmc_peer(4);
    let port = free_port().to_string();
    let routes = format!("127.0.0.1:{port} {vmmc} strict");
    for exe in [&ws2, &ws1] {
        let Some((_dir, exe)) = wrapped(exe) else {
            return;
        };
        let env = wrapped_env(&routes);
        let p = WineProc::start(&exe, &["ping", "127.0.0.1", &port, "200", "1000"], &env);
        run_ok(p, "wrapped ping", "rtt_us ");
        let p = WineProc::start(&exe, &["bulk", "127.0.0.1", &port, "32"], &env);
        run_ok(p, "wrapped bulk", "mib_per_s ");
    }
    // Nothing listens on the program's own address: all four went to the VMMC listener.
    assert_eq!(served.join().unwrap(), 4);
}

#[test]
fn a_wrapped_rust_std_net_program_reaches_a_linux_vmmc_listener() {
    let Some(std_ping) = windows_build("x86_64-pc-windows-gnu/debug/examples/std_ping.exe") else {
        return;
    };
    let Some((_dir, exe)) = wrapped(&std_ping) else {
        return;
    };
    let (vmmc, served) = vmmc_peer(2);
    let port = free_port();
    let routes = format!("127.0.0.1:{port} {vmmc} strict");
    let env = wrapped_env(&routes);
    let to = format!("127.0.0.1:{port}");
    let p = WineProc::start(&exe, &["ping", &to, "200", "1000"], &env);
    run_ok(p, "wrapped std::net ping", "rtt_us ");
    let p = WineProc::start(&exe, &["bulk", &to, "32"], &env);
    run_ok(p, "wrapped std::net bulk", "mib_per_s ");
    assert_eq!(served.join().unwrap(), 2);
}

#[test]
fn two_wrapped_wine_programs_talk_over_vmmc() {
    let Some((ws2, ws1, _)) = programs() else {
        return;
    };
    let Some((_sdir, server_exe)) = wrapped(&ws2) else {
        return;
    };
    let Some((_cdir, client_exe)) = wrapped(&ws1) else {
        return;
    };
    let port = free_port().to_string();
    let vmmc = format!("tcp:127.0.0.1:{}", free_port());
    let routes = format!("127.0.0.1:{port} {vmmc} strict");
    let env = wrapped_env(&routes);
    let mut server = WineProc::start(&server_exe, &["server", &port], &env);
    server.line_starting("listening ");
    // The wrapped server listens on VMMC, not on its TCP port: a VMMC client reaches it.
    let mut s = VmmcStream::connect(&vmmc).unwrap();
    s.set_read_timeout(Some(WINE_WAIT)).unwrap();
    std::io::Write::write_all(&mut s, b"Ehello").unwrap();
    let mut back = [0u8; 5];
    std::io::Read::read_exact(&mut s, &mut back).unwrap();
    assert_eq!(&back, b"hello");
    drop(s);
    let p = WineProc::start(
        &client_exe,
        &["ping", "127.0.0.1", &port, "200", "64"],
        &env,
    );
    run_ok(p, "ping between wrapped programs", "rtt_us ");
    let p = WineProc::start(&client_exe, &["bulk", "127.0.0.1", &port, "32"], &env);
    run_ok(p, "bulk between wrapped programs", "mib_per_s ");
}

#[test]
fn a_routed_address_without_a_vmmc_listener_falls_back_unless_strict() {
    let Some((ws2, _, linux)) = programs() else {
        return;
    };
    let Some((_dir, exe)) = wrapped(&ws2) else {
        return;
    };
    let port = free_port().to_string();
    let mut server = WineProc::native(&linux, &["server", &port]);
    server.line_starting("listening ");
    let nowhere = format!("tcp:127.0.0.1:{}", free_port());

    let routes = format!("127.0.0.1:{port} {nowhere}");
    let p = WineProc::start(
        &exe,
        &["ping", "127.0.0.1", &port, "50", "64"],
        &wrapped_env(&routes),
    );
    run_ok(p, "fallback to the system's TCP", "rtt_us ");

    let routes = format!("127.0.0.1:{port} {nowhere} strict");
    let p = WineProc::start(
        &exe,
        &["ping", "127.0.0.1", &port, "50", "64"],
        &wrapped_env(&routes),
    );
    let (st, out, err) = p.finish();
    assert!(!st.success(), "a strict route connected: {out}");
    assert!(err.contains("connect failed (error 10061)"), "{err}");
}

#[test]
fn unrouted_sockets_of_a_wrapped_program_are_the_systems() {
    let Some((ws2, _, linux)) = programs() else {
        return;
    };
    let Some((_dir, exe)) = wrapped(&ws2) else {
        return;
    };
    let port = free_port().to_string();
    let mut server = WineProc::native(&linux, &["server", &port]);
    server.line_starting("listening ");
    // Routes for another port only.
    let routes = format!("127.0.0.1:{} tcp:127.0.0.1:1 strict", free_port());
    let env = wrapped_env(&routes);
    let p = WineProc::start(&exe, &["bulk", "127.0.0.1", &port, "16"], &env);
    run_ok(p, "unrouted bulk", "mib_per_s ");
}

#[test]
fn the_pointer_requests_reach_the_peers_ring_and_ours() {
    let Some(wsptr) = windows_build("wsping/wsptr.exe") else {
        return;
    };
    let Some((_dir, exe)) = wrapped(&wsptr) else {
        return;
    };
    let (vmmc, served) = vmmc_peer(1);
    let port = free_port().to_string();
    let routes = format!("127.0.0.1:{port} {vmmc} strict");
    let p = WineProc::start(
        &exe,
        &["127.0.0.1", &port, "written in place, read in place"],
        &wrapped_env(&routes),
    );
    run_ok(p, "pointer requests", "ok");
    assert_eq!(served.join().unwrap(), 1);
}
