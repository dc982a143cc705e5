//! Generates the export side of the DLL from `exports/ws2_32.txt` (every export of the system's
//! ws2_32.dll, with its ordinal): an index per name into the table of the real DLL's
//! functions, and for each name the DLL does not implement itself a `vmmc_NAME` stub that
//! jumps to the real function. `build.sh` makes the ws2_32.dll and wsock32.dll forwarders
//! from the same lists.

use std::fmt::Write as _;

/// The calls implemented here (in src/ffi.rs as `vmmc_NAME`); every other one is forwarded.
const IMPLEMENTED: &[&str] = &[
    "accept",
    "bind",
    "closesocket",
    "connect",
    "getpeername",
    "getsockname",
    "getsockopt",
    "ioctlsocket",
    "listen",
    "recv",
    "recvfrom",
    "select",
    "send",
    "sendto",
    "setsockopt",
    "shutdown",
    "WSAAccept",
    "WSAAsyncSelect",
    "WSAConnect",
    "WSADuplicateSocketA",
    "WSADuplicateSocketW",
    "WSAEventSelect",
    "WSAIoctl",
    "WSAPoll",
    "WSARecv",
    "WSASend",
];

fn main() {
    println!("cargo:rerun-if-changed=exports/ws2_32.txt");
    println!("cargo:rerun-if-changed=build.rs");
    let list = std::fs::read_to_string("exports/ws2_32.txt").expect("exports/ws2_32.txt");
    let names: Vec<&str> = list
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    for n in IMPLEMENTED {
        assert!(names.contains(n), "{n} is not a ws2_32 export");
    }
    let mut out = String::new();
    writeln!(out, "/// Every export of the system's ws2_32.dll.").unwrap();
    writeln!(out, "pub(crate) const NAMES: [&str; {}] = [", names.len()).unwrap();
    for n in &names {
        writeln!(out, "    {n:?},").unwrap();
    }
    writeln!(out, "];").unwrap();
    writeln!(out, "/// Where each export's real function is in [`REAL`].").unwrap();
    writeln!(out, "#[allow(non_upper_case_globals, dead_code)]").unwrap();
    writeln!(out, "pub(crate) mod idx {{").unwrap();
    for (i, n) in names.iter().enumerate() {
        writeln!(out, "    pub(crate) const {n}: usize = {i};").unwrap();
    }
    writeln!(out, "}}").unwrap();
    for (i, n) in names.iter().enumerate() {
        if IMPLEMENTED.contains(n) {
            continue;
        }
        writeln!(
            out,
            "/// `{n}`: the system's, untouched.\n\
             #[unsafe(naked)]\n\
             #[unsafe(no_mangle)]\n\
             #[allow(non_snake_case)]\n\
             pub extern \"system\" fn vmmc_{n}() {{\n    \
             core::arch::naked_asm!(\"jmp qword ptr [rip + {{t}} + {off}]\", t = sym REAL);\n\
             }}",
            off = i * 8
        )
        .unwrap();
    }
    let dir = std::env::var("OUT_DIR").expect("OUT_DIR");
    std::fs::write(format!("{dir}/exports.rs"), out).expect("writing exports.rs");
}
