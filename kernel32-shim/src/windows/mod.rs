//! The Windows face: a DLL that hooks kernel32/kernelbase's file functions inside a process,
//! so that an unmodified program's calls on paths under a prefix (`M:` or
//! `\\server\share`) go to the DFS, as the seed's kernel32 wrapper did on NT.
//!
//! kernel32 cannot practically be replaced today (Windows and Wine both load it as part of
//! the system), so the face rewrites the first instructions of each file function in the
//! process (MinHook): every caller, kernelbase itself included, lands in the hook. The
//! launcher `dfs-run.exe` starts the program suspended and loads this DLL into it before its
//! first instruction, as Detours' withdll does. Handles for DFS files are real handles of
//! the process (events): a call the face does not serve fails on them, never succeeds.
//!
//! [`calls`] decides (safe code); [`ffi`] holds the hooks and every `unsafe`; the Win32
//! semantics themselves are [`crate::win32`]'s, which runs and is tested on Linux too.

pub mod calls;
pub mod ffi;
pub mod launch;

/// Whether this process asked for the face (the launcher sets the prefix): a DLL loaded by
/// anything else installs nothing.
pub fn wanted() -> bool {
    std::env::var_os(crate::win32::env::PREFIX).is_some()
}
