//! Bytes in shared memory, lent without Rust references; the same on every system.

#[cfg(unix)]
use std::io;
use std::marker::PhantomData;
use std::ops::{Bound, RangeBounds};
#[cfg(unix)]
use std::os::fd::{AsRawFd, BorrowedFd};
use std::ptr::NonNull;

/// Bytes in memory another process may write at any moment: a span of a shared region,
/// lent for the life `'a` of a borrow of its owner (or private bytes lent the same way).
///
/// Never a Rust reference: a `&[u8]` promises the compiler that the bytes stay as they are
/// while it lives, which a peer can break at will (a length checked, then loaded again and
/// used with the peer's new value). Bytes leave by copy ([`SharedBytes::copy_to`]), and system
/// calls get the address ([`SharedBytes::pwrite_to`], [`SharedBytes::as_ptr`]): the kernel
/// copies from it as from any user memory. A peer that writes meanwhile can tear data bytes,
/// which the protocols above accept and validate, never memory safety.
#[derive(Clone, Copy)]
pub struct SharedBytes<'a> {
    pub(super) ptr: NonNull<u8>,
    pub(super) len: usize,
    pub(super) _life: PhantomData<&'a [u8]>,
}

/// Bytes in memory another process may read or write at any moment, to fill in place: the
/// writable counterpart of [`SharedBytes`]. Bytes enter by copy ([`SharedBytesMut::copy_from`])
/// or from system calls ([`SharedBytesMut::pread_from`], [`SharedBytesMut::as_mut_ptr`]).
pub struct SharedBytesMut<'a> {
    pub(super) ptr: NonNull<u8>,
    pub(super) len: usize,
    pub(super) _life: PhantomData<&'a mut [u8]>,
}

impl std::fmt::Debug for SharedBytes<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedBytes")
            .field("len", &self.len)
            .finish()
    }
}

impl std::fmt::Debug for SharedBytesMut<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedBytesMut")
            .field("len", &self.len)
            .finish()
    }
}

/// `range` of a span of `len` bytes as (start, end), or `None` if it does not fit.
fn sub_range(len: usize, range: impl RangeBounds<usize>) -> Option<(usize, usize)> {
    let start = match range.start_bound() {
        Bound::Included(&s) => s,
        Bound::Excluded(&s) => s.checked_add(1)?,
        Bound::Unbounded => 0,
    };
    let end = match range.end_bound() {
        Bound::Included(&e) => e.checked_add(1)?,
        Bound::Excluded(&e) => e,
        Bound::Unbounded => len,
    };
    (start <= end && end <= len).then_some((start, end))
}

#[cfg(unix)]
/// Repeats a system call on EINTR; a negative result is the error in errno.
fn retry(mut call: impl FnMut() -> isize) -> io::Result<usize> {
    loop {
        let n = call();
        if n >= 0 {
            return Ok(n as usize);
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

impl<'a> SharedBytes<'a> {
    /// How many bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The bytes in `range`, or `None` if it does not fit.
    pub fn get(&self, range: impl RangeBounds<usize>) -> Option<SharedBytes<'a>> {
        let (start, end) = sub_range(self.len, range)?;
        Some(SharedBytes {
            // SAFETY: `start <= len`, so the pointer stays inside (or one past) the span.
            ptr: unsafe { NonNull::new_unchecked(self.ptr.as_ptr().add(start)) },
            len: end - start,
            _life: PhantomData,
        })
    }

    /// Copies the first `dst.len()` bytes (or all, if fewer) into `dst`; returns how many.
    pub fn copy_to(&self, dst: &mut [u8]) -> usize {
        let n = self.len.min(dst.len());
        // SAFETY: `n` bytes from `ptr` lie inside the lent span, which stays mapped for `'a`;
        // `dst` is our own exclusive memory and cannot overlap a shared mapping. The copy reads
        // through a raw pointer, never a reference, so a concurrent writer can only tear bytes.
        unsafe { std::ptr::copy_nonoverlapping(self.ptr.as_ptr(), dst.as_mut_ptr(), n) };
        n
    }

    /// A copy of all the bytes.
    pub fn to_vec(&self) -> Vec<u8> {
        let mut v = vec![0u8; self.len];
        self.copy_to(&mut v);
        v
    }

    /// The address of the first byte, for a system call that reads `len()` bytes from it.
    /// Valid while `'a` lasts; never turn it into a reference.
    pub fn as_ptr(&self) -> *const u8 {
        self.ptr.as_ptr()
    }

    #[cfg(unix)]
    /// One `pwrite` of the bytes to `fd` at `offset`; returns how many were written.
    pub fn pwrite_to(&self, fd: BorrowedFd<'_>, offset: i64) -> io::Result<usize> {
        retry(|| {
            // SAFETY: the kernel reads at most `len` bytes from inside the lent span, which stays
            // mapped for the call.
            unsafe { libc::pwrite(fd.as_raw_fd(), self.ptr.as_ptr().cast(), self.len, offset) }
        })
    }
}

impl<'a> From<&'a [u8]> for SharedBytes<'a> {
    /// Private bytes lent as shared ones, for code that serves both (a copying path, a test).
    fn from(b: &'a [u8]) -> SharedBytes<'a> {
        SharedBytes {
            ptr: NonNull::from(b).cast(),
            len: b.len(),
            _life: PhantomData,
        }
    }
}

impl<'a> SharedBytesMut<'a> {
    /// How many bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The bytes in `range`, or `None` if it does not fit.
    pub fn get_mut(&mut self, range: impl RangeBounds<usize>) -> Option<SharedBytesMut<'_>> {
        let (start, end) = sub_range(self.len, range)?;
        Some(SharedBytesMut {
            // SAFETY: `start <= len`, so the pointer stays inside (or one past) the span.
            ptr: unsafe { NonNull::new_unchecked(self.ptr.as_ptr().add(start)) },
            len: end - start,
            _life: PhantomData,
        })
    }

    /// The bytes to read back (what this process wrote, or what a peer changed since).
    pub fn as_shared(&self) -> SharedBytes<'_> {
        SharedBytes {
            ptr: self.ptr,
            len: self.len,
            _life: PhantomData,
        }
    }

    /// Copies `src` (or as much as fits) to the start; returns how many bytes.
    pub fn copy_from(&mut self, src: &[u8]) -> usize {
        let n = self.len.min(src.len());
        // SAFETY: `n` bytes from `ptr` lie inside the lent writable span; `src` is our own
        // memory and cannot overlap a shared mapping.
        unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), self.ptr.as_ptr(), n) };
        n
    }

    /// The address of the first byte, for a system call that writes at most `len()` bytes
    /// there. Valid while `'a` lasts; never turn it into a reference.
    pub fn as_mut_ptr(&mut self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    #[cfg(unix)]
    /// One `pread` from `fd` at `offset` into the bytes; returns how many were read (0 at the
    /// end of the file).
    pub fn pread_from(&mut self, fd: BorrowedFd<'_>, offset: i64) -> io::Result<usize> {
        retry(|| {
            // SAFETY: the kernel writes at most `len` bytes inside the lent writable span, which
            // stays mapped for the call.
            unsafe { libc::pread(fd.as_raw_fd(), self.ptr.as_ptr().cast(), self.len, offset) }
        })
    }
}

impl<'a> From<&'a mut [u8]> for SharedBytesMut<'a> {
    /// Private bytes lent as shared ones, for code that serves both (a copying path, a test).
    fn from(b: &'a mut [u8]) -> SharedBytesMut<'a> {
        let len = b.len();
        SharedBytesMut {
            ptr: NonNull::from(b).cast(),
            len,
            _life: PhantomData,
        }
    }
}
