//! Everything `unsafe` in the Linux face, in one place.
//!
//! - **Pointers from C.** An interposed function receives raw pointers from its caller: a
//!   path, a buffer and its length, a `struct stat` to fill. They arrive as the newtypes
//!   below (`#[repr(transparent)]`, so the C ABI is unchanged), whose fields are private to
//!   this module: safe code elsewhere can pass them on or ask this module to read or write
//!   through them, never make one up. Each such access relies on the C contract of the
//!   function that received the pointer (`read(fd, buf, n)` promises `n` writable bytes at
//!   `buf`), and the callers in [`super::calls`] pair every buffer with the length C gave
//!   beside it.
//! - **The real functions**, found with `dlsym(RTLD_NEXT, name)`: the next definition after
//!   this library, normally the C library's own. Each is called with the prototype of the
//!   C function of that name, and with arguments that are either the caller's own or made
//!   valid here (a `CString`, a structure on our stack).
//! - **Variadic functions.** `open`, `openat`, `fcntl` and `ioctl` are variadic in C, and
//!   stable Rust cannot define a variadic function. On x86_64 System V the variadic
//!   argument is passed exactly as a fixed one would be (in the next integer register), so
//!   the interposers declare it as a fixed parameter and use it only when the call's flags
//!   say it was passed (`O_CREAT`/`O_TMPFILE` for a mode, the commands that take one for
//!   `fcntl`). The whole face is built only for `target_arch = "x86_64"` for that reason.
//!   Calling the real variadic functions is ordinary stable Rust.
//! - **The C library's state**: `errno`, the `stdin`/`stdout`/`stderr` variables (which
//!   glibc documents as assignable), `fopencookie` streams, `atexit`, `malloc` for what a
//!   caller frees.

use std::ffi::{c_char, c_int, c_uint, c_ulong, c_void, CStr};
use std::marker::PhantomData;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use vmmc_sockets::SharedBytes;

use super::abi;

pub use libc::{mode_t, off_t, size_t, ssize_t};

// ---------------------------------------------------------------------------------------
// errno

/// Sets the calling thread's `errno`.
pub fn set_errno(e: i32) {
    // SAFETY: `__errno_location` returns the address of the calling thread's errno, valid
    // for the thread's life.
    unsafe { *libc::__errno_location() = e }
}

/// The calling thread's `errno`.
pub fn errno() -> i32 {
    // SAFETY: as in `set_errno`.
    unsafe { *libc::__errno_location() }
}

// ---------------------------------------------------------------------------------------
// Pointers from C

/// Whether an address may be a user-space pointer at all (x86_64: the first page is never
/// mapped, and user space ends below 2^47). Other bad pointers fault as they would in the
/// C library's own functions.
fn plausible(addr: usize) -> bool {
    (4096..1 << 47).contains(&addr)
}

/// A NUL-terminated string a C caller passed (a path, an xattr name), or null.
#[repr(transparent)]
#[derive(Clone, Copy, Debug)]
pub struct CStrPtr<'a>(*const c_char, PhantomData<&'a CStr>);

impl<'a> CStrPtr<'a> {
    /// The string's bytes without the NUL, `None` for a null pointer.
    pub fn bytes(&self) -> Option<&'a [u8]> {
        if !plausible(self.0 as usize) {
            // Null, the first page, or the kernel's half: not a string a caller could own.
            // `None` sends the call to the C library, whose system call says `EFAULT`.
            return None;
        }
        // SAFETY: a non-null `const char *` from the C caller of a libc function that takes a
        // path or name: a NUL-terminated string, valid for the call.
        Some(unsafe { CStr::from_ptr(self.0) }.to_bytes())
    }

    /// Points at a string of ours.
    pub fn of(s: &'a CStr) -> CStrPtr<'a> {
        CStrPtr(s.as_ptr(), PhantomData)
    }
}

/// A buffer a C caller passed to be read (`write`'s data).
#[repr(transparent)]
#[derive(Clone, Copy, Debug)]
pub struct Buf<'a>(*const c_void, PhantomData<&'a [u8]>);

impl<'a> Buf<'a> {
    /// The `len` bytes it holds (`len` being the length its caller gave with it).
    pub fn slice(&self, len: usize) -> &'a [u8] {
        if self.0.is_null() || len == 0 {
            return &[];
        }
        // SAFETY: the C caller promised `len` readable bytes at this address for the
        // call's duration (write, pwrite, an iovec entry). A program that changes them
        // meanwhile gets whatever bytes the copy sees, as with the kernel.
        unsafe { std::slice::from_raw_parts(self.0.cast::<u8>(), len) }
    }

    /// Our own bytes, to pass to a real function.
    pub fn of(b: &'a [u8]) -> Buf<'a> {
        Buf(b.as_ptr().cast(), PhantomData)
    }
}

/// A buffer a C caller passed to be filled (`read`'s).
#[repr(transparent)]
#[derive(Clone, Copy, Debug)]
pub struct BufMut<'a>(*mut c_void, PhantomData<&'a mut [u8]>);

impl<'a> BufMut<'a> {
    /// Copies `data` to `at` in the buffer, once, from the connection's ring; `len` is the
    /// buffer's length as its caller gave it (nothing lands beyond it).
    pub fn put_shared(&self, len: usize, at: usize, data: &SharedBytes<'_>) -> usize {
        let n = data.len().min(len.saturating_sub(at));
        if self.0.is_null() || n == 0 {
            return 0;
        }
        // SAFETY: the caller promised `len` writable bytes here; `at + n <= len`. The
        // source is the ring, which the server may still write: the copy takes whatever
        // bytes it sees (no reference to either side is formed).
        unsafe {
            std::ptr::copy_nonoverlapping(data.as_ptr(), self.0.cast::<u8>().add(at), n);
        }
        n
    }

    /// Copies `data` to `at` (within `len`, as [`BufMut::put_shared`]).
    pub fn put(&self, len: usize, at: usize, data: &[u8]) -> usize {
        let n = data.len().min(len.saturating_sub(at));
        if self.0.is_null() || n == 0 {
            return 0;
        }
        // SAFETY: as in `put_shared`, from a slice of ours.
        unsafe {
            std::ptr::copy_nonoverlapping(data.as_ptr(), self.0.cast::<u8>().add(at), n);
        }
        n
    }

    /// Our own buffer, to pass to a real function.
    pub fn of(b: &'a mut [u8]) -> BufMut<'a> {
        BufMut(b.as_mut_ptr().cast(), PhantomData)
    }
}

/// An array of `struct iovec` a C caller passed (`readv`, `writev`).
#[repr(transparent)]
#[derive(Clone, Copy, Debug)]
pub struct IoVecs<'a>(*const libc::iovec, PhantomData<&'a libc::iovec>);

impl<'a> IoVecs<'a> {
    /// Its `n` entries as buffers with their lengths (`n` as the caller gave it; at most
    /// `IOV_MAX`, else `None`).
    pub fn entries(&self, n: c_int) -> Option<Vec<(BufMut<'a>, usize)>> {
        if !(0..=1024).contains(&n) || (self.0.is_null() && n > 0) {
            return None;
        }
        // SAFETY: the caller promised `n` readable `struct iovec`s here.
        let v = unsafe { std::slice::from_raw_parts(self.0, n as usize) };
        Some(
            v.iter()
                .map(|e| (BufMut(e.iov_base, PhantomData), e.iov_len))
                .collect(),
        )
    }

    /// The same entries as buffers to read from (`writev`).
    pub fn entries_in(&self, n: c_int) -> Option<Vec<&'a [u8]>> {
        Some(
            self.entries(n)?
                .into_iter()
                .map(|(b, len)| Buf(b.0, PhantomData).slice(len))
                .collect(),
        )
    }
}

/// A pointer a C caller passed for a result to be written (`struct stat *`, `off_t *`).
#[repr(transparent)]
#[derive(Debug)]
pub struct Out<'a, T>(*mut T, PhantomData<&'a mut T>);

impl<T> Clone for Out<'_, T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for Out<'_, T> {}

impl<'a, T: Copy> Out<'a, T> {
    /// Writes `v`; `false` for a null pointer.
    pub fn set(&self, v: T) -> bool {
        if self.0.is_null() {
            return false;
        }
        // SAFETY: the caller passed a pointer to a `T` to be filled; unaligned writes are
        // allowed for (a caller may pass a packed buffer).
        unsafe { self.0.write_unaligned(v) };
        true
    }

    /// Reads the value there (for in-out parameters such as `off_t *`).
    pub fn get(&self) -> Option<T> {
        if self.0.is_null() {
            return None;
        }
        // SAFETY: as in `set`; the caller's `T` is initialised for in-out parameters.
        Some(unsafe { self.0.read_unaligned() })
    }

    /// Our own variable, to pass to a real function.
    pub fn of(v: &'a mut T) -> Out<'a, T> {
        Out(v, PhantomData)
    }

    /// The address (to compare, never to dereference elsewhere).
    pub fn addr(&self) -> usize {
        self.0 as usize
    }
}

/// A pointer a C caller passed to a value to be read (`const struct timespec *`).
#[repr(transparent)]
#[derive(Debug)]
pub struct In<'a, T>(*const T, PhantomData<&'a T>);

impl<T> Clone for In<'_, T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for In<'_, T> {}

impl<'a, T: Copy> In<'a, T> {
    /// The value, `None` for a null pointer.
    pub fn get(&self) -> Option<T> {
        if self.0.is_null() {
            return None;
        }
        // SAFETY: the caller passed a pointer to a readable `T`.
        Some(unsafe { self.0.read_unaligned() })
    }

    /// The `n` values of an array (`const struct timespec times[2]`).
    pub fn array(&self, n: usize) -> Option<Vec<T>> {
        if self.0.is_null() {
            return None;
        }
        // SAFETY: the caller passed an array of at least `n` readable `T` (the function's
        // contract fixes `n`).
        Some(
            (0..n)
                .map(|i| unsafe { self.0.add(i).read_unaligned() })
                .collect(),
        )
    }
}

/// A null-terminated array of strings (`argv`, `envp`).
#[repr(transparent)]
#[derive(Clone, Copy, Debug)]
pub struct StrArray<'a>(*const *const c_char, PhantomData<&'a CStr>);

impl<'a> StrArray<'a> {
    /// Its strings (at most a million, a bound against an unterminated array).
    pub fn strings(&self) -> Vec<&'a [u8]> {
        let mut out = Vec::new();
        if self.0.is_null() {
            return out;
        }
        for i in 0..1_000_000 {
            // SAFETY: the caller passed a NULL-terminated array of C strings; we stop at the
            // NULL.
            let p = unsafe { *self.0.add(i) };
            if p.is_null() {
                break;
            }
            // SAFETY: each entry is a NUL-terminated string.
            out.push(unsafe { CStr::from_ptr(p) }.to_bytes());
        }
        out
    }

    /// An array of ours (kept alive by `holder`).
    pub fn of(holder: &'a StrArrayOwned) -> StrArray<'a> {
        StrArray(holder.ptrs.as_ptr(), PhantomData)
    }
}

/// Strings laid out as a C `char *[]` (for `envp` we build).
#[derive(Debug)]
pub struct StrArrayOwned {
    _strings: Vec<std::ffi::CString>,
    ptrs: Vec<*const c_char>,
}

impl StrArrayOwned {
    /// From strings (an interior NUL cuts a string short).
    pub fn new(items: &[Vec<u8>]) -> StrArrayOwned {
        let strings: Vec<std::ffi::CString> = items
            .iter()
            .map(|s| {
                let cut = s.split(|&b| b == 0).next().unwrap_or_default();
                std::ffi::CString::new(cut).unwrap_or_default()
            })
            .collect();
        let mut ptrs: Vec<*const c_char> = strings.iter().map(|s| s.as_ptr()).collect();
        ptrs.push(std::ptr::null());
        StrArrayOwned {
            _strings: strings,
            ptrs,
        }
    }
}

/// A `DIR *`: the C library's, or one of ours (whose address this face hands out and looks
/// up; it is never dereferenced as the C library's).
#[repr(transparent)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DirPtr(*mut c_void);

impl DirPtr {
    /// Its address.
    pub fn addr(&self) -> usize {
        self.0 as usize
    }
    /// The pointer to hand out for one of our streams at `addr`.
    pub fn ours(addr: usize) -> DirPtr {
        DirPtr(addr as *mut c_void)
    }
    /// Null (`opendir`'s failure).
    pub fn null() -> DirPtr {
        DirPtr(std::ptr::null_mut())
    }
}

/// A `FILE *`, as [`DirPtr`].
#[repr(transparent)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FilePtr(*mut c_void);

// SAFETY: a `FILE *` is only an address here: this crate never dereferences it, and the C
// library's stream functions it is passed to lock the stream themselves (POSIX requires
// stdio to be thread-safe), so it may be kept and used from any thread.
unsafe impl Send for FilePtr {}
// SAFETY: as for `Send`.
unsafe impl Sync for FilePtr {}

impl FilePtr {
    /// Its address.
    pub fn addr(&self) -> usize {
        self.0 as usize
    }
    /// Null (`fopen`'s failure).
    pub fn null() -> FilePtr {
        FilePtr(std::ptr::null_mut())
    }
}

/// A `struct dirent64 *` we hand out from `readdir`: the address of a buffer of ours.
#[repr(transparent)]
#[derive(Clone, Copy, Debug)]
pub struct DirentPtr(*mut c_void);

impl DirentPtr {
    /// Points at `d`, which the caller reads until the next `readdir` on its stream.
    pub fn of(d: &mut abi::Dirent64) -> DirentPtr {
        DirentPtr((d as *mut abi::Dirent64).cast())
    }
    /// Null: the end of the stream, or an error.
    pub fn null() -> DirentPtr {
        DirentPtr(std::ptr::null_mut())
    }
}

/// An address returned by `mmap`, or `MAP_FAILED`.
#[repr(transparent)]
#[derive(Clone, Copy, Debug)]
pub struct MapPtr(*mut c_void);

impl MapPtr {
    /// `MAP_FAILED`.
    pub fn failed() -> MapPtr {
        MapPtr(libc::MAP_FAILED)
    }
    /// Whether it is `MAP_FAILED`.
    pub fn is_failed(&self) -> bool {
        self.0 == libc::MAP_FAILED
    }
}

/// A template a caller passed to `mkstemp` and the like: a NUL-terminated string that the
/// function fills in place.
#[repr(transparent)]
#[derive(Clone, Copy, Debug)]
pub struct Template<'a>(*mut c_char, PhantomData<&'a mut CStr>);

impl<'a> Template<'a> {
    /// Its bytes now (`None` for a null pointer).
    pub fn bytes(&self) -> Option<Vec<u8>> {
        CStrPtr(self.0, PhantomData).bytes().map(<[u8]>::to_vec)
    }

    /// Overwrites bytes from `at` on, within the string (`false` if they would reach or
    /// pass its NUL).
    pub fn overwrite(&self, at: usize, with: &[u8]) -> bool {
        let Some(len) = self.bytes().map(|b| b.len()) else {
            return false;
        };
        if at.checked_add(with.len()).is_none_or(|end| end > len) {
            return false;
        }
        // SAFETY: the caller passed a writable NUL-terminated string of `len` bytes (the
        // function's contract), and `at + with.len() <= len`.
        unsafe { std::ptr::copy_nonoverlapping(with.as_ptr().cast(), self.0.add(at), with.len()) };
        true
    }

    /// The same string, to pass where a path is read.
    pub fn as_path(&self) -> CStrPtr<'a> {
        CStrPtr(self.0, PhantomData)
    }

    /// The same string as a function's result (`mkdtemp` returns its template).
    pub fn as_result(&self) -> CharPtr {
        CharPtr(self.0)
    }
}

/// A string for a caller to `free` (`getcwd(NULL, 0)`, `realpath(p, NULL)`), or the
/// caller's own buffer filled.
#[repr(transparent)]
#[derive(Clone, Copy, Debug)]
pub struct CharPtr(*mut c_char);

impl CharPtr {
    /// Null.
    pub fn null() -> CharPtr {
        CharPtr(std::ptr::null_mut())
    }
    /// Whether it is null.
    pub fn is_null(&self) -> bool {
        self.0.is_null()
    }
    /// Copies `s` and a NUL into the caller's buffer of `size` bytes (`ERANGE` if it does
    /// not fit), returning the buffer; with a null buffer, into `malloc`ed memory of at
    /// least `size` bytes the caller frees.
    pub fn fill(self, size: usize, s: &[u8]) -> Result<CharPtr, i32> {
        if self.0.is_null() {
            let n = (s.len() + 1).max(size);
            // SAFETY: plain malloc; checked for null below.
            let p = unsafe { libc::malloc(n) }.cast::<c_char>();
            if p.is_null() {
                return Err(libc::ENOMEM);
            }
            // SAFETY: `p` has `n >= s.len() + 1` bytes.
            unsafe {
                std::ptr::copy_nonoverlapping(s.as_ptr().cast(), p, s.len());
                *p.add(s.len()) = 0;
            }
            return Ok(CharPtr(p));
        }
        if s.len() + 1 > size {
            return Err(libc::ERANGE);
        }
        // SAFETY: the caller promised `size` writable bytes; `s.len() + 1 <= size`.
        unsafe {
            std::ptr::copy_nonoverlapping(s.as_ptr().cast(), self.0, s.len());
            *self.0.add(s.len()) = 0;
        }
        Ok(self)
    }
    /// `realpath`'s buffer: `PATH_MAX` bytes when not null.
    pub fn fill_path_max(self, s: &[u8]) -> Result<CharPtr, i32> {
        if s.len() + 1 > libc::PATH_MAX as usize {
            return Err(libc::ENAMETOOLONG);
        }
        self.fill(libc::PATH_MAX as usize, s)
    }
}

/// `scandir`'s filter: a C function of the program, called with a dirent of ours.
pub type ScanFilter = Option<extern "C" fn(*const abi::Dirent64) -> c_int>;
/// `scandir`'s comparison: a C function of the program, called with two pointers to
/// pointers to dirents of ours.
pub type ScanCompar =
    Option<extern "C" fn(*const *const abi::Dirent64, *const *const abi::Dirent64) -> c_int>;

/// Builds `scandir`'s result: each entry in `malloc`ed memory (the caller `free`s each and
/// the array), filtered and sorted by the program's own functions; stores the array in
/// `out` and returns the count.
pub fn scandir_result(
    entries: Vec<abi::Dirent64>,
    filter: ScanFilter,
    compar: ScanCompar,
    out: Out<'_, *mut *mut abi::Dirent64>,
) -> Result<c_int, i32> {
    let mut kept: Vec<*mut abi::Dirent64> = Vec::new();
    let free_all = |v: &[*mut abi::Dirent64]| {
        for p in v {
            // SAFETY: each came from malloc below and was not handed out.
            unsafe { libc::free(p.cast()) };
        }
    };
    for e in entries {
        if let Some(f) = filter {
            if f(&e) == 0 {
                continue;
            }
        }
        // SAFETY: plain malloc of one dirent, checked for null.
        let p =
            unsafe { libc::malloc(std::mem::size_of::<abi::Dirent64>()) }.cast::<abi::Dirent64>();
        if p.is_null() {
            free_all(&kept);
            return Err(libc::ENOMEM);
        }
        // SAFETY: `p` is fresh memory for one dirent.
        unsafe { p.write(e) };
        kept.push(p);
    }
    if let Some(c) = compar {
        kept.sort_by(|a, b| {
            let (a, b): (*const abi::Dirent64, *const abi::Dirent64) = (*a, *b);
            c(&a, &b).cmp(&0)
        });
    }
    let bytes = std::mem::size_of::<*mut abi::Dirent64>() * kept.len().max(1);
    // SAFETY: plain malloc, checked for null.
    let arr = unsafe { libc::malloc(bytes) }.cast::<*mut abi::Dirent64>();
    if arr.is_null() {
        free_all(&kept);
        return Err(libc::ENOMEM);
    }
    // SAFETY: `arr` holds `kept.len()` pointers.
    unsafe { std::ptr::copy_nonoverlapping(kept.as_ptr(), arr, kept.len()) };
    if !out.set(arr) {
        free_all(&kept);
        // SAFETY: from malloc above, never handed out.
        unsafe { libc::free(arr.cast()) };
        return Err(libc::EFAULT);
    }
    Ok(kept.len() as c_int)
}

// ---------------------------------------------------------------------------------------
// The real functions

/// The next definition of `name` after this library (the C library's), cached in `slot`.
fn next_symbol(slot: &AtomicUsize, name: &CStr) -> Option<usize> {
    let p = slot.load(Ordering::Relaxed);
    if p != 0 {
        return Some(p);
    }
    // SAFETY: dlsym with a NUL-terminated name; RTLD_NEXT searches the objects loaded after
    // this one.
    let p = unsafe { libc::dlsym(libc::RTLD_NEXT, name.as_ptr()) } as usize;
    if p == 0 {
        return None;
    }
    slot.store(p, Ordering::Relaxed);
    Some(p)
}

/// The real functions with fixed arguments: `name = "symbol"(args) -> ret, on_missing`.
macro_rules! real {
    ($( $name:ident = $sym:literal ( $($arg:ident : $ty:ty),* ) -> $ret:ty, $fail:expr; )*) => { $(
        #[doc = concat!("The C library's `", $sym, "`.")]
        #[allow(clippy::too_many_arguments)]
        pub fn $name($($arg: $ty),*) -> $ret {
            static SLOT: AtomicUsize = AtomicUsize::new(0);
            match next_symbol(&SLOT, &$crate::linux::ffi::cstr(concat!($sym, "\0"))) {
                Some(p) => {
                    // SAFETY: `p` is the address of the C library's `$sym`, whose C
                    // prototype this is (pointer newtypes are `repr(transparent)` over the
                    // C pointer types). Pointer arguments come from our own C caller under
                    // the same contract, or are ours and valid for the call.
                    let f = unsafe {
                        std::mem::transmute::<usize, unsafe extern "C" fn($($ty),*) -> $ret>(p)
                    };
                    // SAFETY: as above.
                    unsafe { f($($arg),*) }
                }
                None => {
                    set_errno(libc::ENOSYS);
                    $fail
                }
            }
        }
    )* };
}

/// A `&CStr` from a literal that ends in NUL.
pub(crate) fn cstr(s: &'static str) -> &'static CStr {
    CStr::from_bytes_with_nul(s.as_bytes()).unwrap_or_default()
}

type P<'a> = CStrPtr<'a>;
type St<'a> = Out<'a, abi::Stat>;

real! {
    read = "read"(fd: c_int, buf: BufMut<'_>, n: size_t) -> ssize_t, -1;
    write = "write"(fd: c_int, buf: Buf<'_>, n: size_t) -> ssize_t, -1;
    pread64 = "pread64"(fd: c_int, buf: BufMut<'_>, n: size_t, off: off_t) -> ssize_t, -1;
    pwrite64 = "pwrite64"(fd: c_int, buf: Buf<'_>, n: size_t, off: off_t) -> ssize_t, -1;
    readv = "readv"(fd: c_int, iov: IoVecs<'_>, n: c_int) -> ssize_t, -1;
    writev = "writev"(fd: c_int, iov: IoVecs<'_>, n: c_int) -> ssize_t, -1;
    preadv64 = "preadv64"(fd: c_int, iov: IoVecs<'_>, n: c_int, off: off_t) -> ssize_t, -1;
    pwritev64 = "pwritev64"(fd: c_int, iov: IoVecs<'_>, n: c_int, off: off_t) -> ssize_t, -1;
    preadv64v2 = "preadv64v2"(fd: c_int, iov: IoVecs<'_>, n: c_int, off: off_t, flags: c_int) -> ssize_t, -1;
    pwritev64v2 = "pwritev64v2"(fd: c_int, iov: IoVecs<'_>, n: c_int, off: off_t, flags: c_int) -> ssize_t, -1;
    lseek64 = "lseek64"(fd: c_int, off: off_t, whence: c_int) -> off_t, -1;
    close = "close"(fd: c_int) -> c_int, -1;
    fsync = "fsync"(fd: c_int) -> c_int, -1;
    fdatasync = "fdatasync"(fd: c_int) -> c_int, -1;
    syncfs = "syncfs"(fd: c_int) -> c_int, -1;
    ftruncate64 = "ftruncate64"(fd: c_int, len: off_t) -> c_int, -1;
    fallocate64 = "fallocate64"(fd: c_int, mode: c_int, off: off_t, len: off_t) -> c_int, -1;
    posix_fallocate64 = "posix_fallocate64"(fd: c_int, off: off_t, len: off_t) -> c_int, libc::ENOSYS;
    posix_fadvise64 = "posix_fadvise64"(fd: c_int, off: off_t, len: off_t, advice: c_int) -> c_int, libc::ENOSYS;
    readahead = "readahead"(fd: c_int, off: off_t, len: size_t) -> ssize_t, -1;
    sendfile64 = "sendfile64"(out: c_int, inp: c_int, off: Out<'_, off_t>, n: size_t) -> ssize_t, -1;
    splice = "splice"(fin: c_int, offin: Out<'_, off_t>, fout: c_int, offout: Out<'_, off_t>, n: size_t, flags: c_uint) -> ssize_t, -1;
    copy_file_range = "copy_file_range"(fin: c_int, offin: Out<'_, off_t>, fout: c_int, offout: Out<'_, off_t>, n: size_t, flags: c_uint) -> ssize_t, -1;
    dup = "dup"(fd: c_int) -> c_int, -1;
    dup2 = "dup2"(fd: c_int, to: c_int) -> c_int, -1;
    dup3 = "dup3"(fd: c_int, to: c_int, flags: c_int) -> c_int, -1;
    isatty = "isatty"(fd: c_int) -> c_int, 0;
    flock = "flock"(fd: c_int, op: c_int) -> c_int, -1;
    mmap64 = "mmap64"(addr: MapPtr, len: size_t, prot: c_int, flags: c_int, fd: c_int, off: off_t) -> MapPtr, MapPtr::failed();
    __open64_2 = "__open64_2"(path: P<'_>, flags: c_int) -> c_int, -1;
    __openat64_2 = "__openat64_2"(dirfd: c_int, path: P<'_>, flags: c_int) -> c_int, -1;
    creat64 = "creat64"(path: P<'_>, mode: mode_t) -> c_int, -1;
    stat64 = "stat64"(path: P<'_>, st: St<'_>) -> c_int, -1;
    lstat64 = "lstat64"(path: P<'_>, st: St<'_>) -> c_int, -1;
    fstat64 = "fstat64"(fd: c_int, st: St<'_>) -> c_int, -1;
    fstatat64 = "fstatat64"(dirfd: c_int, path: P<'_>, st: St<'_>, flags: c_int) -> c_int, -1;
    __xstat64 = "__xstat64"(ver: c_int, path: P<'_>, st: St<'_>) -> c_int, -1;
    __lxstat64 = "__lxstat64"(ver: c_int, path: P<'_>, st: St<'_>) -> c_int, -1;
    __fxstat64 = "__fxstat64"(ver: c_int, fd: c_int, st: St<'_>) -> c_int, -1;
    __fxstatat64 = "__fxstatat64"(ver: c_int, dirfd: c_int, path: P<'_>, st: St<'_>, flags: c_int) -> c_int, -1;
    statx = "statx"(dirfd: c_int, path: P<'_>, flags: c_int, mask: c_uint, st: Out<'_, abi::Statx>) -> c_int, -1;
    access = "access"(path: P<'_>, mode: c_int) -> c_int, -1;
    faccessat = "faccessat"(dirfd: c_int, path: P<'_>, mode: c_int, flags: c_int) -> c_int, -1;
    euidaccess = "euidaccess"(path: P<'_>, mode: c_int) -> c_int, -1;
    truncate64 = "truncate64"(path: P<'_>, len: off_t) -> c_int, -1;
    mkdir = "mkdir"(path: P<'_>, mode: mode_t) -> c_int, -1;
    mkdirat = "mkdirat"(dirfd: c_int, path: P<'_>, mode: mode_t) -> c_int, -1;
    rmdir = "rmdir"(path: P<'_>) -> c_int, -1;
    unlink = "unlink"(path: P<'_>) -> c_int, -1;
    unlinkat = "unlinkat"(dirfd: c_int, path: P<'_>, flags: c_int) -> c_int, -1;
    rename = "rename"(from: P<'_>, to: P<'_>) -> c_int, -1;
    renameat = "renameat"(fd1: c_int, from: P<'_>, fd2: c_int, to: P<'_>) -> c_int, -1;
    renameat2 = "renameat2"(fd1: c_int, from: P<'_>, fd2: c_int, to: P<'_>, flags: c_uint) -> c_int, -1;
    link = "link"(from: P<'_>, to: P<'_>) -> c_int, -1;
    linkat = "linkat"(fd1: c_int, from: P<'_>, fd2: c_int, to: P<'_>, flags: c_int) -> c_int, -1;
    symlink = "symlink"(target: P<'_>, path: P<'_>) -> c_int, -1;
    symlinkat = "symlinkat"(target: P<'_>, dirfd: c_int, path: P<'_>) -> c_int, -1;
    readlink = "readlink"(path: P<'_>, buf: BufMut<'_>, n: size_t) -> ssize_t, -1;
    readlinkat = "readlinkat"(dirfd: c_int, path: P<'_>, buf: BufMut<'_>, n: size_t) -> ssize_t, -1;
    chmod = "chmod"(path: P<'_>, mode: mode_t) -> c_int, -1;
    fchmod = "fchmod"(fd: c_int, mode: mode_t) -> c_int, -1;
    fchmodat = "fchmodat"(dirfd: c_int, path: P<'_>, mode: mode_t, flags: c_int) -> c_int, -1;
    chown = "chown"(path: P<'_>, uid: u32, gid: u32) -> c_int, -1;
    lchown = "lchown"(path: P<'_>, uid: u32, gid: u32) -> c_int, -1;
    fchown = "fchown"(fd: c_int, uid: u32, gid: u32) -> c_int, -1;
    fchownat = "fchownat"(dirfd: c_int, path: P<'_>, uid: u32, gid: u32, flags: c_int) -> c_int, -1;
    utime = "utime"(path: P<'_>, t: In<'_, abi::Utimbuf>) -> c_int, -1;
    utimes = "utimes"(path: P<'_>, t: In<'_, abi::Timeval>) -> c_int, -1;
    lutimes = "lutimes"(path: P<'_>, t: In<'_, abi::Timeval>) -> c_int, -1;
    futimes = "futimes"(fd: c_int, t: In<'_, abi::Timeval>) -> c_int, -1;
    futimesat = "futimesat"(dirfd: c_int, path: P<'_>, t: In<'_, abi::Timeval>) -> c_int, -1;
    futimens = "futimens"(fd: c_int, t: In<'_, abi::Timespec>) -> c_int, -1;
    utimensat = "utimensat"(dirfd: c_int, path: P<'_>, t: In<'_, abi::Timespec>, flags: c_int) -> c_int, -1;
    getxattr = "getxattr"(path: P<'_>, name: P<'_>, v: BufMut<'_>, n: size_t) -> ssize_t, -1;
    lgetxattr = "lgetxattr"(path: P<'_>, name: P<'_>, v: BufMut<'_>, n: size_t) -> ssize_t, -1;
    fgetxattr = "fgetxattr"(fd: c_int, name: P<'_>, v: BufMut<'_>, n: size_t) -> ssize_t, -1;
    setxattr = "setxattr"(path: P<'_>, name: P<'_>, v: Buf<'_>, n: size_t, flags: c_int) -> c_int, -1;
    lsetxattr = "lsetxattr"(path: P<'_>, name: P<'_>, v: Buf<'_>, n: size_t, flags: c_int) -> c_int, -1;
    fsetxattr = "fsetxattr"(fd: c_int, name: P<'_>, v: Buf<'_>, n: size_t, flags: c_int) -> c_int, -1;
    listxattr = "listxattr"(path: P<'_>, v: BufMut<'_>, n: size_t) -> ssize_t, -1;
    llistxattr = "llistxattr"(path: P<'_>, v: BufMut<'_>, n: size_t) -> ssize_t, -1;
    flistxattr = "flistxattr"(fd: c_int, v: BufMut<'_>, n: size_t) -> ssize_t, -1;
    removexattr = "removexattr"(path: P<'_>, name: P<'_>) -> c_int, -1;
    lremovexattr = "lremovexattr"(path: P<'_>, name: P<'_>) -> c_int, -1;
    fremovexattr = "fremovexattr"(fd: c_int, name: P<'_>) -> c_int, -1;
    mknod = "mknod"(path: P<'_>, mode: mode_t, dev: u64) -> c_int, -1;
    mknodat = "mknodat"(dirfd: c_int, path: P<'_>, mode: mode_t, dev: u64) -> c_int, -1;
    mkfifo = "mkfifo"(path: P<'_>, mode: mode_t) -> c_int, -1;
    mkfifoat = "mkfifoat"(dirfd: c_int, path: P<'_>, mode: mode_t) -> c_int, -1;
    statfs64 = "statfs64"(path: P<'_>, st: Out<'_, abi::Statfs>) -> c_int, -1;
    fstatfs64 = "fstatfs64"(fd: c_int, st: Out<'_, abi::Statfs>) -> c_int, -1;
    statvfs64 = "statvfs64"(path: P<'_>, st: Out<'_, abi::Statvfs>) -> c_int, -1;
    fstatvfs64 = "fstatvfs64"(fd: c_int, st: Out<'_, abi::Statvfs>) -> c_int, -1;
    chdir = "chdir"(path: P<'_>) -> c_int, -1;
    fchdir = "fchdir"(fd: c_int) -> c_int, -1;
    getcwd = "getcwd"(buf: CharPtr, n: size_t) -> CharPtr, CharPtr::null();
    get_current_dir_name = "get_current_dir_name"() -> CharPtr, CharPtr::null();
    realpath = "realpath"(path: P<'_>, out: CharPtr) -> CharPtr, CharPtr::null();
    canonicalize_file_name = "canonicalize_file_name"(path: P<'_>) -> CharPtr, CharPtr::null();
    opendir = "opendir"(path: P<'_>) -> DirPtr, DirPtr::null();
    fdopendir = "fdopendir"(fd: c_int) -> DirPtr, DirPtr::null();
    readdir64 = "readdir64"(d: DirPtr) -> DirentPtr, DirentPtr::null();
    readdir64_r = "readdir64_r"(d: DirPtr, e: Out<'_, abi::Dirent64>, r: Out<'_, *mut abi::Dirent64>) -> c_int, libc::ENOSYS;
    closedir = "closedir"(d: DirPtr) -> c_int, -1;
    rewinddir = "rewinddir"(d: DirPtr) -> (), ();
    telldir = "telldir"(d: DirPtr) -> libc::c_long, -1;
    seekdir = "seekdir"(d: DirPtr, pos: libc::c_long) -> (), ();
    dirfd = "dirfd"(d: DirPtr) -> c_int, -1;
    scandir64 = "scandir64"(path: P<'_>, list: Out<'_, *mut *mut abi::Dirent64>, f: ScanFilter, c: ScanCompar) -> c_int, -1;
    scandirat64 = "scandirat64"(dirfd: c_int, path: P<'_>, list: Out<'_, *mut *mut abi::Dirent64>, f: ScanFilter, c: ScanCompar) -> c_int, -1;
    getdents64 = "getdents64"(fd: c_int, buf: BufMut<'_>, n: size_t) -> ssize_t, -1;
    fopen64 = "fopen64"(path: P<'_>, mode: P<'_>) -> FilePtr, FilePtr::null();
    freopen64 = "freopen64"(path: P<'_>, mode: P<'_>, f: FilePtr) -> FilePtr, FilePtr::null();
    fdopen = "fdopen"(fd: c_int, mode: P<'_>) -> FilePtr, FilePtr::null();
    fileno = "fileno"(f: FilePtr) -> c_int, -1;
    fileno_unlocked = "fileno_unlocked"(f: FilePtr) -> c_int, -1;
    fork = "fork"() -> c_int, -1;
    posix_spawn = "posix_spawn"(pid: Out<'_, c_int>, path: P<'_>, fa: Opaque, attr: Opaque, argv: StrArray<'_>, envp: StrArray<'_>) -> c_int, libc::ENOSYS;
    posix_spawnp = "posix_spawnp"(pid: Out<'_, c_int>, path: P<'_>, fa: Opaque, attr: Opaque, argv: StrArray<'_>, envp: StrArray<'_>) -> c_int, libc::ENOSYS;
    execve = "execve"(path: P<'_>, argv: StrArray<'_>, envp: StrArray<'_>) -> c_int, -1;
    execvpe = "execvpe"(path: P<'_>, argv: StrArray<'_>, envp: StrArray<'_>) -> c_int, -1;
    mkostemps64 = "mkostemps64"(t: Template<'_>, suffix: c_int, flags: c_int) -> c_int, -1;
    mkdtemp = "mkdtemp"(t: Template<'_>) -> CharPtr, CharPtr::null();
    pathconf = "pathconf"(path: P<'_>, name: c_int) -> libc::c_long, -1;
    fpathconf = "fpathconf"(fd: c_int, name: c_int) -> libc::c_long, -1;
    syscall = "syscall"(n: libc::c_long, a: libc::c_long, b: libc::c_long, c: libc::c_long, d: libc::c_long, e: libc::c_long, f: libc::c_long) -> libc::c_long, -1;
    fexecve = "fexecve"(fd: c_int, argv: StrArray<'_>, envp: StrArray<'_>) -> c_int, -1;
    _exit = "_exit"(code: c_int) -> (), ();
    umask = "umask"(mask: mode_t) -> mode_t, 0o022;
    close_range = "close_range"(first: c_uint, last: c_uint, flags: c_int) -> c_int, -1;
    closefrom = "closefrom"(first: c_int) -> (), ();
}

/// An opaque pointer passed through unchanged (`posix_spawn`'s file actions and
/// attributes).
#[repr(transparent)]
#[derive(Clone, Copy, Debug)]
pub struct Opaque(*const c_void);

/// The variadic real functions, called with the optional argument their flags ask for.
fn variadic<F: Copy>(slot: &AtomicUsize, name: &'static str) -> Option<F> {
    let p = next_symbol(slot, cstr(name))?;
    debug_assert_eq!(std::mem::size_of::<F>(), std::mem::size_of::<usize>());
    // SAFETY: `F` is the variadic C prototype of the function named `name` (see callers),
    // `p` its address; a function pointer has the size of an address.
    Some(unsafe { std::mem::transmute_copy::<usize, F>(&p) })
}

type OpenFn = unsafe extern "C" fn(*const c_char, c_int, ...) -> c_int;
type OpenatFn = unsafe extern "C" fn(c_int, *const c_char, c_int, ...) -> c_int;
type FcntlFn = unsafe extern "C" fn(c_int, c_int, ...) -> c_int;
type IoctlFn = unsafe extern "C" fn(c_int, c_ulong, ...) -> c_int;

/// The C library's `open64(path, flags, mode)`.
pub fn open64(path: P<'_>, flags: c_int, mode: mode_t) -> c_int {
    static SLOT: AtomicUsize = AtomicUsize::new(0);
    match variadic::<OpenFn>(&SLOT, "open64\0") {
        // SAFETY: the real `open64`; `path` is the caller's string or ours; the mode is
        // passed as the variadic argument (ignored by open unless it creates).
        Some(f) => unsafe { f(path.0, flags, mode as c_uint) },
        None => {
            set_errno(libc::ENOSYS);
            -1
        }
    }
}

/// The C library's `openat64(dirfd, path, flags, mode)`.
pub fn openat64(dirfd: c_int, path: P<'_>, flags: c_int, mode: mode_t) -> c_int {
    static SLOT: AtomicUsize = AtomicUsize::new(0);
    match variadic::<OpenatFn>(&SLOT, "openat64\0") {
        // SAFETY: as in `open64`.
        Some(f) => unsafe { f(dirfd, path.0, flags, mode as c_uint) },
        None => {
            set_errno(libc::ENOSYS);
            -1
        }
    }
}

/// The C library's `fcntl64(fd, cmd, arg)`: `arg` is the caller's third argument as it
/// arrived (an integer or a pointer), passed on unchanged.
pub fn fcntl64(fd: c_int, cmd: c_int, arg: c_ulong) -> c_int {
    static SLOT: AtomicUsize = AtomicUsize::new(0);
    match variadic::<FcntlFn>(&SLOT, "fcntl64\0") {
        // SAFETY: the real `fcntl64` with the caller's own arguments (a pointer argument
        // is the caller's, under fcntl's contract for `cmd`).
        Some(f) => unsafe { f(fd, cmd, arg) },
        None => {
            set_errno(libc::ENOSYS);
            -1
        }
    }
}

/// `fcntl` with a lock structure of ours (for the lock files).
pub fn fcntl_lock(fd: c_int, cmd: c_int, lock: &mut abi::Flock) -> c_int {
    fcntl64(fd, cmd, lock as *mut abi::Flock as c_ulong)
}

/// The `struct flock *` that `fcntl`'s lock commands take as their third argument.
pub fn flock_arg<'a>(arg: c_ulong) -> Out<'a, abi::Flock> {
    // A pointer as the caller passed it, under fcntl's contract for the lock commands
    // (null reads as absent: `Out` checks).
    Out(arg as usize as *mut abi::Flock, PhantomData)
}

/// A pointer argument of `syscall(2)`, as the caller passed it (an integer register).
pub fn syscall_ptr<'a, T>(arg: libc::c_long) -> Out<'a, T> {
    Out(arg as usize as *mut T, PhantomData)
}

/// The C library's `ioctl(fd, request, arg)`, the caller's arguments passed on.
pub fn ioctl(fd: c_int, req: c_ulong, arg: c_ulong) -> c_int {
    static SLOT: AtomicUsize = AtomicUsize::new(0);
    match variadic::<IoctlFn>(&SLOT, "ioctl\0") {
        // SAFETY: the real `ioctl` with the caller's own arguments.
        Some(f) => unsafe { f(fd, req, arg) },
        None => {
            set_errno(libc::ENOSYS);
            -1
        }
    }
}

// ---------------------------------------------------------------------------------------
// Memory

/// Maps the run's shared table (a memfd of `words` 64-bit words) read-write and shared;
/// the mapping lives as long as the process.
pub fn map_table(fd: c_int, words: usize) -> Option<&'static [AtomicU64]> {
    let len = words.checked_mul(8)?;
    // SAFETY: a fresh shared mapping of `len` bytes of `fd`; the address is checked.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            fd,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return None;
    }
    // SAFETY: the mapping is `len` bytes, page-aligned (so aligned for u64), never
    // unmapped, and its file is sealed against shrinking (checked by the caller), so it
    // stays valid. Other processes write it concurrently, which atomics allow.
    Some(unsafe { std::slice::from_raw_parts(p.cast::<AtomicU64>(), words) })
}

/// An anonymous private mapping for `mmap` of a DFS file: `len` bytes, writable until
/// [`protect`], at `addr` if the flags say so. Returns its address.
pub fn map_anonymous(addr: MapPtr, len: usize, flags: c_int) -> MapPtr {
    let flags = (flags & !(libc::MAP_SHARED | libc::MAP_SHARED_VALIDATE))
        | libc::MAP_PRIVATE
        | libc::MAP_ANONYMOUS;
    mmap64(addr, len, libc::PROT_READ | libc::PROT_WRITE, flags, -1, 0)
}

/// The mapping at `p` as a buffer to fill (we made it, `len` bytes, writable).
pub fn mapping_buf(p: MapPtr) -> BufMut<'static> {
    BufMut(p.0, PhantomData)
}

/// Gives a mapping of ours the protection the program asked for.
pub fn protect(p: MapPtr, len: usize, prot: c_int) -> bool {
    // SAFETY: `p`/`len` are a mapping we made.
    unsafe { libc::mprotect(p.0, len, prot) == 0 }
}

/// Unmaps a mapping of ours that could not be filled.
pub fn unmap(p: MapPtr, len: usize) {
    // SAFETY: `p`/`len` are a mapping we made and never handed out.
    unsafe { libc::munmap(p.0, len) };
}

// ---------------------------------------------------------------------------------------
// Processes and threads

/// The calling thread's id.
pub fn gettid() -> u64 {
    // SAFETY: no arguments, cannot fail.
    u64::from(unsafe { libc::gettid() } as u32)
}

/// Whether the process or thread `id` exists (a permission refusal counts as existing).
pub fn alive(id: u64) -> bool {
    let Ok(id) = i32::try_from(id) else {
        return false;
    };
    if id <= 0 {
        return false;
    }
    // SAFETY: signal 0 only checks for existence.
    unsafe { libc::kill(id, 0) == 0 || errno() == libc::EPERM }
}

/// Effective user, effective group and supplementary groups.
pub fn ids() -> (u32, u32, Vec<u32>) {
    // SAFETY: no arguments, cannot fail.
    let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
    let mut groups = vec![0 as libc::gid_t; 64];
    // SAFETY: `groups` has room for 64 entries.
    let n = unsafe { libc::getgroups(64, groups.as_mut_ptr()) };
    groups.truncate(n.max(0) as usize);
    (uid, gid, groups)
}

/// The real user and group (for `access`).
pub fn real_ids() -> (u32, u32) {
    // SAFETY: no arguments, cannot fail.
    unsafe { (libc::getuid(), libc::getgid()) }
}

/// Registers `f` to run at `exit`.
pub fn at_exit(f: extern "C" fn()) {
    // SAFETY: `f` is a plain function that stays loaded (this library is never unloaded:
    // it is preloaded).
    unsafe { libc::atexit(f) };
}

/// Makes a memfd (for placeholders and the table).
pub fn memfd(name: &CStr, flags: c_uint) -> c_int {
    // SAFETY: a NUL-terminated name.
    unsafe { libc::memfd_create(name.as_ptr(), flags) }
}

/// `preadv` of `fd` at `off` into buffers a C caller passed, through the real function.
pub fn preadv_into(fd: c_int, dest: &[(BufMut<'_>, usize)], off: off_t) -> ssize_t {
    let iov: Vec<libc::iovec> = dest
        .iter()
        .map(|(b, len)| libc::iovec {
            iov_base: b.0,
            iov_len: *len,
        })
        .collect();
    let Ok(n) = c_int::try_from(iov.len()) else {
        return -1;
    };
    // The iovecs point at the caller's buffers, which it promised writable for their
    // lengths for the call's duration; the kernel writes them as it would for the caller.
    preadv64(fd, IoVecs(iov.as_ptr(), PhantomData), n, off)
}

/// The inode number and device of an open descriptor, through the real `fstat`.
pub fn fstat_id(fd: c_int) -> Option<(u64, u64, i64)> {
    let mut st = abi::Stat::default();
    (fstat64(fd, Out::of(&mut st)) == 0).then_some((st.st_dev, st.st_ino, st.st_size))
}

// ---------------------------------------------------------------------------------------
// stdio

/// `cookie_io_functions_t`.
#[repr(C)]
struct CookieIo {
    read: Option<extern "C" fn(*mut c_void, *mut c_char, size_t) -> ssize_t>,
    write: Option<extern "C" fn(*mut c_void, *const c_char, size_t) -> ssize_t>,
    seek: Option<extern "C" fn(*mut c_void, *mut i64, c_int) -> c_int>,
    close: Option<extern "C" fn(*mut c_void) -> c_int>,
}

extern "C" {
    fn fopencookie(cookie: *mut c_void, mode: *const c_char, io: CookieIo) -> *mut c_void;
    static mut stdin: *mut c_void;
    static mut stdout: *mut c_void;
    static mut stderr: *mut c_void;
}

/// What a stream of ours does with its bytes: the face's functions for the descriptor in
/// the cookie.
#[derive(Clone, Copy, Debug)]
pub struct StreamOps {
    /// Reads into a buffer.
    pub read: fn(c_int, BufMut<'_>, usize) -> isize,
    /// Writes a buffer.
    pub write: fn(c_int, &[u8]) -> isize,
    /// Seeks (`lseek`), returning the new offset or -1.
    pub seek: fn(c_int, i64, c_int) -> i64,
    /// Closes the descriptor.
    pub close: fn(c_int) -> c_int,
}

/// The cookie of a stream of ours: its descriptor (-1 once detached: the stream then
/// closes nothing) and its functions.
#[derive(Debug)]
struct Cookie {
    fd: std::sync::atomic::AtomicI32,
    ops: StreamOps,
}

fn cookie<'a>(c: *mut c_void) -> Option<&'a Cookie> {
    // SAFETY: glibc hands back the cookie we gave `fopencookie`: a leaked `Box<Cookie>`,
    // freed only by `cookie_close` after which glibc never calls us with it again.
    unsafe { c.cast::<Cookie>().as_ref() }
}

extern "C" fn cookie_read(c: *mut c_void, buf: *mut c_char, n: size_t) -> ssize_t {
    match cookie(c) {
        Some(k) => (k.ops.read)(
            k.fd.load(Ordering::Relaxed),
            BufMut(buf.cast(), PhantomData),
            n,
        ),
        None => -1,
    }
}

extern "C" fn cookie_write(c: *mut c_void, buf: *const c_char, n: size_t) -> ssize_t {
    match cookie(c) {
        // glibc passes its stream buffer with the length to write.
        Some(k) => (k.ops.write)(
            k.fd.load(Ordering::Relaxed),
            Buf(buf.cast(), PhantomData).slice(n),
        ),
        None => -1,
    }
}

extern "C" fn cookie_seek(c: *mut c_void, off: *mut i64, whence: c_int) -> c_int {
    let Some(k) = cookie(c) else { return -1 };
    let pos = Out::<i64>(off, PhantomData);
    let Some(want) = pos.get() else { return -1 };
    let r = (k.ops.seek)(k.fd.load(Ordering::Relaxed), want, whence);
    if r < 0 {
        return -1;
    }
    pos.set(r);
    0
}

extern "C" fn cookie_close(c: *mut c_void) -> c_int {
    if c.is_null() {
        return 0;
    }
    // SAFETY: the leaked box from `stream_on`; glibc calls close once, last.
    let k = unsafe { Box::from_raw(c.cast::<Cookie>()) };
    let fd = k.fd.load(Ordering::Relaxed);
    if fd < 0 {
        return 0;
    }
    (k.ops.close)(fd)
}

/// A stream (`FILE *`) over the descriptor `fd` whose I/O goes to `ops`, opened with the
/// stdio `mode` (`"r"`, `"w+"`, …). Returns it, and a handle to detach it from `fd`.
pub fn stream_on(fd: c_int, mode: &CStr, ops: StreamOps) -> Option<(FilePtr, StreamHandle)> {
    let c = Box::into_raw(Box::new(Cookie {
        fd: std::sync::atomic::AtomicI32::new(fd),
        ops,
    }));
    let io = CookieIo {
        read: Some(cookie_read),
        write: Some(cookie_write),
        seek: Some(cookie_seek),
        close: Some(cookie_close),
    };
    // SAFETY: a NUL-terminated mode and a cookie our functions understand.
    let f = unsafe { fopencookie(c.cast(), mode.as_ptr(), io) };
    if f.is_null() {
        // SAFETY: not handed to glibc after all.
        drop(unsafe { Box::from_raw(c) });
        return None;
    }
    Some((FilePtr(f), StreamHandle(c as usize)))
}

/// A stream of ours, to detach from its descriptor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StreamHandle(usize);

impl StreamHandle {
    /// From now on the stream closes nothing (its descriptor was taken over: `dup2` onto
    /// it, or the program closed it directly). The stream itself stays valid.
    pub fn detach(&self) {
        // SAFETY: the cookie lives until glibc closes the stream; a detached stream whose
        // cookie was freed is never detached again (the face forgets the handle at close).
        if let Some(k) = unsafe { (self.0 as *const Cookie).as_ref() } {
            k.fd.store(-1, Ordering::Relaxed);
        }
    }
}

/// Which standard stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Std {
    /// `stdin`.
    In,
    /// `stdout`.
    Out,
    /// `stderr`.
    Err,
}

/// The current value of a standard stream variable.
pub fn std_stream(s: Std) -> FilePtr {
    // SAFETY: reading a C library variable; the face changes it only from one thread at a
    // time (under its descriptor lock), as glibc allows for these variables.
    FilePtr(unsafe {
        match s {
            Std::In => stdin,
            Std::Out => stdout,
            Std::Err => stderr,
        }
    })
}

/// Points a standard stream variable at `f` (glibc: "stdin, stdout, and stderr are normal
/// variables which you can set").
pub fn set_std_stream(s: Std, f: FilePtr) {
    // SAFETY: as in `std_stream`.
    unsafe {
        match s {
            Std::In => stdin = f.0,
            Std::Out => stdout = f.0,
            Std::Err => stderr = f.0,
        }
    }
}

/// `fflush(f)` (`None`: every stream).
pub fn fflush(f: Option<FilePtr>) {
    // SAFETY: a stream the C library gave out, or NULL for all.
    unsafe { libc::fflush(f.map_or(std::ptr::null_mut(), |f| f.0.cast())) };
}

/// `fclose(f)`.
pub fn fclose(f: FilePtr) -> c_int {
    // SAFETY: a stream the C library gave out, closed once by its owner's request.
    unsafe { libc::fclose(f.0.cast()) }
}

/// Makes a stream unbuffered (`stderr`) or fully buffered.
pub fn set_buffering(f: FilePtr, unbuffered: bool) {
    let mode = if unbuffered {
        libc::_IONBF
    } else {
        libc::_IOFBF
    };
    // SAFETY: a fresh stream of ours, before any I/O; glibc allocates the buffer.
    unsafe { libc::setvbuf(f.0.cast(), std::ptr::null_mut(), mode, 0) };
}
