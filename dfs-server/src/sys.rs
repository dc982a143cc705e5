//! Every `unsafe` block of the server: the system calls that nix does not wrap (kernel file
//! handles, raw directory reads, extended attributes, per-thread supplementary groups, a
//! readlink into a caller's buffer).
//! Everything a call returns is checked here or by the safe code that parses it.

use std::ffi::CStr;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

/// The kernel's largest file handle (`MAX_HANDLE_SZ`).
pub const MAX_KERNEL_HANDLE: usize = 128;

/// `struct file_handle` with room for the largest handle, aligned as the kernel wants.
#[repr(C)]
struct RawHandle {
    handle_bytes: u32,
    handle_type: i32,
    f_handle: [u8; MAX_KERNEL_HANDLE],
}

fn cvt(r: libc::c_long) -> io::Result<usize> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r as usize)
    }
}

/// A kernel file handle and the mount it was made on.
#[derive(Debug)]
pub struct KernelHandle {
    /// `handle_type`, with the kernel's flags in its upper 16 bits (`FILEID_IS_CONNECTABLE`,
    /// `FILEID_IS_DIR`).
    pub kind: i32,
    /// `f_handle`.
    pub bytes: Vec<u8>,
    /// The mount the file was reached on.
    pub mount_id: i32,
}

/// The kernel's handle for `name` in `dir`, with `name_to_handle_at`'s `flags`
/// (`AT_EMPTY_PATH` for `dir` itself, `AT_HANDLE_CONNECTABLE`, `AT_SYMLINK_FOLLOW`).
///
/// A connectable handle must be asked for by name, never for a descriptor whose dentry may be
/// disconnected (one opened by a plain handle): the kernel warns in its log about those.
pub fn name_to_handle(dir: BorrowedFd<'_>, name: &CStr, flags: i32) -> io::Result<KernelHandle> {
    let mut h = RawHandle {
        handle_bytes: MAX_KERNEL_HANDLE as u32,
        handle_type: 0,
        f_handle: [0; MAX_KERNEL_HANDLE],
    };
    let mut mount_id: libc::c_int = 0;
    // SAFETY: `h` is a `struct file_handle` whose `handle_bytes` says how much room follows,
    // `name` is NUL-terminated and `mount_id` is a valid out-pointer; all live for the call.
    let r = unsafe {
        libc::name_to_handle_at(
            dir.as_raw_fd(),
            name.as_ptr(),
            (&mut h as *mut RawHandle).cast(),
            &mut mount_id,
            flags,
        )
    };
    cvt(r as libc::c_long)?;
    let n = (h.handle_bytes as usize).min(MAX_KERNEL_HANDLE);
    Ok(KernelHandle {
        kind: h.handle_type,
        bytes: h.f_handle[..n].to_vec(),
        mount_id,
    })
}

/// `readlinkat(dir, name)` into `buf`: the target's length. A target that fills `buf` may
/// have been cut short, so it is `ENAMETOOLONG`.
pub fn readlink_at(dir: BorrowedFd<'_>, name: &CStr, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: `name` is NUL-terminated; the kernel writes at most `buf.len()` bytes into
    // `buf`, which is live and exclusively borrowed for the call.
    let r = unsafe {
        libc::readlinkat(
            dir.as_raw_fd(),
            name.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    let n = cvt(r as libc::c_long)?;
    if n >= buf.len() {
        return Err(io::Error::from_raw_os_error(libc::ENAMETOOLONG));
    }
    Ok(n)
}

/// Opens the file a kernel handle names, on the file system of `mount`, with `O_PATH`.
/// Needs `CAP_DAC_READ_SEARCH`.
pub fn open_by_handle(mount: BorrowedFd<'_>, kind: i32, bytes: &[u8]) -> io::Result<OwnedFd> {
    if bytes.len() > MAX_KERNEL_HANDLE {
        return Err(io::Error::from_raw_os_error(libc::ESTALE));
    }
    let mut h = RawHandle {
        handle_bytes: bytes.len() as u32,
        handle_type: kind,
        f_handle: [0; MAX_KERNEL_HANDLE],
    };
    h.f_handle[..bytes.len()].copy_from_slice(bytes);
    // SAFETY: `h` is a valid `struct file_handle` holding `handle_bytes` bytes, alive for the
    // call; the kernel only reads it.
    let fd = unsafe {
        libc::open_by_handle_at(
            mount.as_raw_fd(),
            (&mut h as *mut RawHandle).cast(),
            libc::O_PATH | libc::O_CLOEXEC | libc::O_NOFOLLOW,
        )
    };
    cvt(fd as libc::c_long)?;
    // SAFETY: the call succeeded, so `fd` is a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Reads raw `linux_dirent64` records into `buf`; 0 at the end of the directory.
/// [`crate::dirents`] parses them.
pub fn getdents(dir: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: the kernel writes at most `buf.len()` bytes into `buf`, which is live and
    // exclusively borrowed for the call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_getdents64,
            dir.as_raw_fd(),
            buf.as_mut_ptr(),
            buf.len(),
        )
    };
    cvt(r).map(|n| n.min(buf.len()))
}

/// `getxattr` on `path`, following the `/proc/self/fd` magic link it names. An empty `buf`
/// asks for the size.
pub fn getxattr(path: &CStr, name: &CStr, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: both strings are NUL-terminated; the kernel writes at most `buf.len()` bytes
    // into `buf` (none for a null pointer with size 0).
    let r = unsafe {
        libc::getxattr(
            path.as_ptr(),
            name.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    cvt(r as libc::c_long)
}

/// `setxattr` on `path`.
pub fn setxattr(path: &CStr, name: &CStr, value: &[u8], flags: i32) -> io::Result<()> {
    // SAFETY: both strings are NUL-terminated and `value` is readable for its length.
    let r = unsafe {
        libc::setxattr(
            path.as_ptr(),
            name.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            flags,
        )
    };
    cvt(r as libc::c_long).map(drop)
}

/// `listxattr` on `path`. An empty `buf` asks for the size.
pub fn listxattr(path: &CStr, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: `path` is NUL-terminated; the kernel writes at most `buf.len()` bytes.
    let r = unsafe { libc::listxattr(path.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    cvt(r as libc::c_long)
}

/// `removexattr` on `path`.
pub fn removexattr(path: &CStr, name: &CStr) -> io::Result<()> {
    // SAFETY: both strings are NUL-terminated.
    let r = unsafe { libc::removexattr(path.as_ptr(), name.as_ptr()) };
    cvt(r as libc::c_long).map(drop)
}

/// Sets the supplementary groups of the *calling thread only*. glibc's `setgroups` changes
/// every thread of the process (it signals them all), which would hand one client's groups
/// to every other client's request; the raw system call does not.
pub fn set_thread_groups(groups: &[u32]) -> io::Result<()> {
    // SAFETY: `groups` is readable for `groups.len()` gid_t values (u32 on Linux).
    let r = unsafe { libc::syscall(libc::SYS_setgroups, groups.len(), groups.as_ptr()) };
    cvt(r).map(drop)
}

/// A fanotify group that reports directory file handles and names (`FAN_REPORT_DFID_NAME`),
/// non-blocking and close-on-exec. Needs `CAP_SYS_ADMIN`.
pub fn fanotify_init_dfid_name() -> io::Result<OwnedFd> {
    let flags =
        libc::FAN_CLASS_NOTIF | libc::FAN_CLOEXEC | libc::FAN_NONBLOCK | libc::FAN_REPORT_DFID_NAME;
    // SAFETY: fanotify_init takes two flag words and returns a new descriptor or -1.
    let fd = unsafe { libc::fanotify_init(flags, (libc::O_RDONLY | libc::O_CLOEXEC) as u32) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just made `fd` for us; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Adds `mask` to the marks of the directory `dir`. The mark names it as `"."` beneath it:
/// with no path, the kernel wants a descriptor open for I/O, which an `O_PATH` one is not.
pub fn fanotify_mark_dir(group: BorrowedFd<'_>, dir: BorrowedFd<'_>, mask: u64) -> io::Result<()> {
    // SAFETY: both descriptors are borrowed live ones and the path is NUL-terminated.
    let r = unsafe {
        libc::fanotify_mark(
            group.as_raw_fd(),
            libc::FAN_MARK_ADD | libc::FAN_MARK_ONLYDIR,
            mask,
            dir.as_raw_fd(),
            c".".as_ptr(),
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
