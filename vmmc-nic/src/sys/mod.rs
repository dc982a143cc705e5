//! Everything that differs between operating systems, one file per system.

#[cfg(target_os = "linux")]
mod linux;
#[cfg(target_os = "linux")]
pub(crate) use linux::*;
#[cfg(target_os = "linux")]
pub use linux::{SharedBytes, SharedBytesMut};
