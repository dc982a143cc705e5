//! `kernel32-shim`: unmodified programs on vmmc-dfs, with no kernel file system in between.
//!
//! The seed's NT port wrapped `kernel32.dll` so that the file calls of unmodified programs
//! went straight to the DFS over VMMC sockets. This crate is that wrapper's descendant: one
//! platform-neutral core and a face per operating system.
//!
//! The core, with no operating system in it:
//! - [`path`]: which paths are the DFS's (a prefix such as `/dfs`), and the current directory;
//! - [`resolve`]: the walk below a prefix, component by component, following symbolic links
//!   as a kernel does (the server never follows one);
//! - [`table`]: the table of open file descriptions (handle, server open, flags, offset),
//!   in memory every process of a run shares, so that `dup`, `fork` and `exec` keep offsets
//!   shared as the kernel does; [`lock`] is its cross-process lock;
//! - [`dircache`]: the directories walks went through, kept for a second;
//! - [`dirs`]: directory streams over the server's paged listings;
//! - [`errno`]: error numbers, and their Win32 equivalents;
//! - [`fs`]: the calls into [`dfs_client::Client`], with reads copied once from the
//!   connection's ring into the program's buffer and writes once into the server's.
//!
//! The Linux face (`linux`, built into `libkernel32_shim.so`) interposes the C library's
//! file calls with `LD_PRELOAD`; `dfs run` starts a program under it. Its README section
//! says what is intercepted and what is not.

#![deny(missing_docs)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod dircache;
pub mod dirs;
pub mod errno;
pub mod fs;
pub mod lock;
pub mod path;
pub mod resolve;
pub mod table;
pub mod win32;

#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
pub mod linux;
#[cfg(windows)]
pub mod windows;
