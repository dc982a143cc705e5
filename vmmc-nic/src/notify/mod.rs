//! Notifications: what a waiter blocks on until a deposit asks to wake it, one file per
//! system (an eventfd on Linux, a loopback socket pair on Windows).

#[cfg(target_os = "linux")]
mod linux;
#[cfg(target_os = "linux")]
pub use linux::*;
#[cfg(windows)]
mod windows;
#[cfg(windows)]
pub use windows::*;
