//! Every `unsafe` of the Windows face: the hooks themselves (`extern "system"` functions
//! that take the program's raw pointers), installing them, placeholder handles, and loading
//! the DLL into a new process for the launcher.
//!
//! Each hook turns its pointers into slices and values at once, asks [`super::calls`] (safe
//! code) what to do, and writes the answer back: a DFS path or handle is served there, any
//! other goes to the original function, reached through MinHook's trampoline. MinHook
//! rewrites the first instructions of the function itself, so kernelbase's calls to itself
//! (`CopyFileExW` opening its files with `CreateFileW`) reach the hooks too, which patching
//! import tables would miss.

#![allow(non_snake_case, clippy::missing_safety_doc)]

use std::ffi::c_void;
use std::sync::atomic::{AtomicUsize, Ordering};

use windows_sys::Win32::Foundation::{SetLastError, HANDLE, INVALID_HANDLE_VALUE};
use windows_sys::Win32::System::LibraryLoader::{GetModuleHandleW, GetProcAddress};
use windows_sys::Win32::System::Threading::{CreateEventW, GetCurrentProcess};

use super::calls::{self, Info};
use crate::win32::consts::*;
use crate::win32::{FindEntry, WinError};

type Bool = i32;
const TRUE: Bool = 1;
const FALSE: Bool = 0;

/// `FILETIME`.
#[repr(C)]
#[derive(Clone, Copy)]
struct FileTime {
    low: u32,
    high: u32,
}

fn ft(t: u64) -> FileTime {
    FileTime {
        low: t as u32,
        high: (t >> 32) as u32,
    }
}

/// `BY_HANDLE_FILE_INFORMATION`.
#[repr(C)]
struct ByHandleInfo {
    attributes: u32,
    creation: FileTime,
    access: FileTime,
    write: FileTime,
    volume_serial: u32,
    size_high: u32,
    size_low: u32,
    links: u32,
    index_high: u32,
    index_low: u32,
}

/// `WIN32_FILE_ATTRIBUTE_DATA`.
#[repr(C)]
struct AttributeData {
    attributes: u32,
    creation: FileTime,
    access: FileTime,
    write: FileTime,
    size_high: u32,
    size_low: u32,
}

/// `WIN32_FIND_DATAW`.
#[repr(C)]
struct FindData {
    attributes: u32,
    creation: FileTime,
    access: FileTime,
    write: FileTime,
    size_high: u32,
    size_low: u32,
    reserved0: u32,
    reserved1: u32,
    name: [u16; 260],
    alternate: [u16; 14],
}

/// `FILE_BASIC_INFO`.
#[repr(C)]
struct BasicInfo {
    creation: i64,
    access: i64,
    write: i64,
    change: i64,
    attributes: u32,
}

/// `FILE_STANDARD_INFO`.
#[repr(C)]
struct StandardInfo {
    allocation: i64,
    end_of_file: i64,
    links: u32,
    delete_pending: u8,
    directory: u8,
}

/// `FILE_ATTRIBUTE_TAG_INFO`.
#[repr(C)]
struct AttributeTagInfo {
    attributes: u32,
    reparse_tag: u32,
}

/// `FILE_ID_BOTH_DIR_INFO`, without its variable-length name.
#[repr(C)]
struct IdBothDirInfo {
    next: u32,
    index: u32,
    creation: i64,
    access: i64,
    write: i64,
    change: i64,
    end_of_file: i64,
    allocation: i64,
    attributes: u32,
    name_length: u32,
    ea_size: u32,
    short_name_length: i8,
    short_name: [u16; 12],
    file_id: i64,
}

/// `FILE_RENAME_INFO`, without its variable-length name.
#[repr(C)]
struct RenameInfo {
    flags: u32,
    root: HANDLE,
    name_length: u32,
}

/// The information classes of `GetFileInformationByHandleEx`/`SetFileInformationByHandle`.
const FILE_BASIC_INFO: i32 = 0;
const FILE_STANDARD_INFO: i32 = 1;
const FILE_NAME_INFO: i32 = 2;
const FILE_RENAME_INFO: i32 = 3;
const FILE_DISPOSITION_INFO: i32 = 4;
const FILE_ALLOCATION_INFO: i32 = 5;
const FILE_END_OF_FILE_INFO: i32 = 6;
const FILE_ATTRIBUTE_TAG_INFO: i32 = 9;
const FILE_ID_BOTH_DIRECTORY_INFO: i32 = 10;
const FILE_ID_BOTH_DIRECTORY_RESTART_INFO: i32 = 11;
const FILE_DISPOSITION_INFO_EX: i32 = 21;
const FILE_RENAME_INFO_EX: i32 = 22;
const FILE_TYPE_DISK: u32 = 1;
const DRIVE_REMOTE: u32 = 4;
const DUPLICATE_CLOSE_SOURCE: u32 = 1;

/// The hooked functions, named once: a trampoline slot for each (`orig::NAME`, where the
/// original is reached) and the table [`install`] walks (name, hook, slot); each hook is the
/// `extern "system"` function of the same name below.
macro_rules! originals {
    ($($name:ident),* $(,)?) => {
        #[allow(non_upper_case_globals)]
        mod orig {
            use std::sync::atomic::AtomicUsize;
            $(pub static $name: AtomicUsize = AtomicUsize::new(0);)*
        }

        fn hooks() -> Vec<(&'static str, usize, &'static AtomicUsize)> {
            vec![$((stringify!($name), $name as *const () as usize, &orig::$name)),*]
        }
    };
}

originals!(
    CreateFileW,
    ReadFile,
    WriteFile,
    CloseHandle,
    SetFilePointer,
    SetFilePointerEx,
    GetFileSize,
    GetFileSizeEx,
    GetFileType,
    GetFileInformationByHandle,
    GetFileInformationByHandleEx,
    SetFileInformationByHandle,
    SetEndOfFile,
    FlushFileBuffers,
    GetFileAttributesW,
    GetFileAttributesExW,
    SetFileAttributesW,
    FindFirstFileW,
    FindFirstFileExW,
    FindNextFileW,
    FindClose,
    CreateDirectoryW,
    RemoveDirectoryW,
    DeleteFileW,
    MoveFileExW,
    MoveFileWithProgressW,
    CopyFileW,
    CopyFileExW,
    GetFullPathNameW,
    DuplicateHandle,
    GetFileTime,
    SetFileTime,
    GetVolumeInformationW,
    GetDiskFreeSpaceExW,
    GetDriveTypeW,
    NtReadFile,
    NtWriteFile,
    NtCreateFile,
    NtOpenFile,
    CreateProcessW,
);

/// Calls the original of a hook through its trampoline.
macro_rules! original {
    ($name:ident : fn($($t:ty),*) -> $r:ty, $fail:expr) => {{
        let p = orig::$name.load(Ordering::Acquire);
        if p == 0 {
            // Not hooked after all: nothing to call. (Cannot happen: a hook runs only once
            // its trampoline is stored.)
            return fail(ERROR_INVALID_FUNCTION, $fail);
        }
        // SAFETY: `p` is the trampoline MinHook made for this very function, whose
        // signature the macro's caller states as Windows declares it.
        unsafe { std::mem::transmute::<usize, unsafe extern "system" fn($($t),*) -> $r>(p) }
    }};
}

/// The NUL-terminated wide string at `p` (`None` for a null pointer).
unsafe fn wide<'a>(p: *const u16) -> Option<&'a [u16]> {
    if p.is_null() {
        return None;
    }
    let mut n = 0;
    // SAFETY: the caller passed a NUL-terminated string, as the Win32 contract requires.
    while unsafe { *p.add(n) } != 0 {
        n += 1;
    }
    // SAFETY: the `n` units before the NUL were just read.
    Some(unsafe { std::slice::from_raw_parts(p, n) })
}

/// Writes `v` to `out` if the caller gave a place for it.
unsafe fn put<T>(out: *mut T, v: T) {
    if !out.is_null() {
        // SAFETY: a non-null out-pointer of a Win32 call points to room for its type.
        unsafe { out.write_unaligned(v) };
    }
}

fn fail<T>(e: WinError, v: T) -> T {
    // SAFETY: sets this thread's last-error value; no memory is touched.
    unsafe { SetLastError(e) };
    v
}

fn ok_bool(r: Result<(), WinError>) -> Bool {
    match r {
        Ok(()) => TRUE,
        Err(e) => fail(e, FALSE),
    }
}

/// A new placeholder: an event, a real handle of this process on which every file call the
/// face does not serve fails (`ReadFile` on an event is `ERROR_INVALID_HANDLE`), so nothing
/// unserved can succeed silently.
fn placeholder() -> Option<usize> {
    // SAFETY: creates an unnamed manual-reset event; null attributes and name are allowed.
    let h = unsafe { CreateEventW(std::ptr::null(), TRUE, FALSE, std::ptr::null()) };
    (!h.is_null()).then_some(h as usize)
}

/// Closes a placeholder (see [`close_any`]).
fn close_placeholder(h: usize) {
    close_any(h as HANDLE);
}

/// Registers `o` under a new placeholder and returns it, or fails as a full handle table.
fn hand_out(o: crate::win32::handles::Object) -> HANDLE {
    match placeholder() {
        Some(h) => {
            calls::handles().insert(h, o);
            h as HANDLE
        }
        None => fail(ERROR_NOT_ENOUGH_MEMORY, INVALID_HANDLE_VALUE),
    }
}

const ERROR_NOT_ENOUGH_MEMORY: u32 = 8;

// ---- The hooks. ----

unsafe extern "system" fn CreateFileW(
    name: *const u16,
    access: u32,
    share: u32,
    sa: *const c_void,
    disposition: u32,
    flags: u32,
    template: HANDLE,
) -> HANDLE {
    // SAFETY: `name` is the caller's file name.
    if let Some(r) = calls::route(unsafe { wide(name) }) {
        return match r.and_then(|c| calls::create_file(&c, access, share, disposition, flags)) {
            Ok((o, last)) => {
                let h = hand_out(o);
                if h != INVALID_HANDLE_VALUE {
                    fail(last, ());
                }
                h
            }
            Err(e) => fail(e, INVALID_HANDLE_VALUE),
        };
    }
    let f = original!(CreateFileW: fn(*const u16, u32, u32, *const c_void, u32, u32, HANDLE) -> HANDLE, INVALID_HANDLE_VALUE);
    // SAFETY: the caller's arguments, passed on unchanged.
    unsafe { f(name, access, share, sa, disposition, flags, template) }
}

/// The offset an `OVERLAPPED` gives (for a synchronous handle, where to read or write).
unsafe fn overlapped_offset(ov: *const c_void) -> Option<u64> {
    if ov.is_null() {
        return None;
    }
    // SAFETY: `OVERLAPPED` is { Internal, InternalHigh: usize, Offset, OffsetHigh: u32, … }.
    let base = ov as *const u8;
    // SAFETY: the caller's OVERLAPPED, whose Offset and OffsetHigh are at 16 and 20 on x64.
    let lo = unsafe { (base.add(16) as *const u32).read_unaligned() };
    // SAFETY: as above.
    let hi = unsafe { (base.add(20) as *const u32).read_unaligned() };
    Some(u64::from(lo) | (u64::from(hi) << 32))
}

unsafe extern "system" fn ReadFile(
    h: HANDLE,
    buf: *mut u8,
    len: u32,
    read: *mut u32,
    ov: *mut c_void,
) -> Bool {
    if let Some(f) = calls::handles().file(h as usize) {
        if buf.is_null() && len > 0 {
            return fail(ERROR_INVALID_PARAMETER, FALSE);
        }
        // SAFETY: the caller's buffer of `len` bytes; the overlapped structure if given.
        let dst = unsafe { slice_mut(buf, len as usize) };
        // SAFETY: the caller's OVERLAPPED, if any.
        let at = unsafe { overlapped_offset(ov) };
        return match calls::fs().and_then(|fs| fs.read(&f, dst, at)) {
            Ok(n) => {
                // SAFETY: `read` is the caller's out-parameter (may be null with overlapped).
                unsafe { put(read, n as u32) };
                TRUE
            }
            Err(e) => {
                // SAFETY: the caller's out-parameter.
                unsafe { put(read, 0) };
                fail(e, FALSE)
            }
        };
    }
    let f = original!(ReadFile: fn(HANDLE, *mut u8, u32, *mut u32, *mut c_void) -> Bool, FALSE);
    // SAFETY: the caller's arguments, passed on unchanged.
    unsafe { f(h, buf, len, read, ov) }
}

unsafe fn slice_mut<'a>(p: *mut u8, len: usize) -> &'a mut [u8] {
    if len == 0 || p.is_null() {
        return &mut [];
    }
    // SAFETY: the caller's buffer of `len` bytes, which it lends for the call.
    unsafe { std::slice::from_raw_parts_mut(p, len) }
}

unsafe fn slice<'a>(p: *const u8, len: usize) -> &'a [u8] {
    if len == 0 || p.is_null() {
        return &[];
    }
    // SAFETY: as `slice_mut`.
    unsafe { std::slice::from_raw_parts(p, len) }
}

unsafe extern "system" fn WriteFile(
    h: HANDLE,
    buf: *const u8,
    len: u32,
    written: *mut u32,
    ov: *mut c_void,
) -> Bool {
    if let Some(f) = calls::handles().file(h as usize) {
        if buf.is_null() && len > 0 {
            return fail(ERROR_INVALID_PARAMETER, FALSE);
        }
        // SAFETY: the caller's data; the overlapped structure if given.
        let src = unsafe { slice(buf, len as usize) };
        // SAFETY: the caller's OVERLAPPED, if any.
        let at = unsafe { overlapped_offset(ov) };
        return match calls::fs().and_then(|fs| fs.write(&f, src, at)) {
            Ok(n) => {
                // SAFETY: the caller's out-parameter.
                unsafe { put(written, n as u32) };
                TRUE
            }
            Err(e) => {
                // SAFETY: the caller's out-parameter.
                unsafe { put(written, 0) };
                fail(e, FALSE)
            }
        };
    }
    let f = original!(WriteFile: fn(HANDLE, *const u8, u32, *mut u32, *mut c_void) -> Bool, FALSE);
    // SAFETY: the caller's arguments, passed on unchanged.
    unsafe { f(h, buf, len, written, ov) }
}

unsafe extern "system" fn CloseHandle(h: HANDLE) -> Bool {
    if calls::handles().remove(h as usize).is_some() {
        close_placeholder(h as usize);
        return TRUE;
    }
    let f = original!(CloseHandle: fn(HANDLE) -> Bool, FALSE);
    // SAFETY: the caller's handle, passed on.
    unsafe { f(h) }
}

unsafe extern "system" fn FindClose(h: HANDLE) -> Bool {
    if calls::handles().remove(h as usize).is_some() {
        close_placeholder(h as usize);
        return TRUE;
    }
    let f = original!(FindClose: fn(HANDLE) -> Bool, FALSE);
    // SAFETY: the caller's handle, passed on.
    unsafe { f(h) }
}

unsafe extern "system" fn SetFilePointerEx(
    h: HANDLE,
    dist: i64,
    new: *mut i64,
    method: u32,
) -> Bool {
    if let Some(f) = calls::handles().file(h as usize) {
        return match calls::fs().and_then(|fs| fs.seek(&f, dist, method)) {
            Ok(p) => {
                // SAFETY: the caller's out-parameter.
                unsafe { put(new, p as i64) };
                TRUE
            }
            Err(e) => fail(e, FALSE),
        };
    }
    let f = original!(SetFilePointerEx: fn(HANDLE, i64, *mut i64, u32) -> Bool, FALSE);
    // SAFETY: the caller's arguments, passed on unchanged.
    unsafe { f(h, dist, new, method) }
}

unsafe extern "system" fn SetFilePointer(h: HANDLE, lo: i32, hi: *mut i32, method: u32) -> u32 {
    if let Some(f) = calls::handles().file(h as usize) {
        // Without a high part the distance is a signed 32-bit value; with one, 64 bits.
        let dist = if hi.is_null() {
            i64::from(lo)
        } else {
            // SAFETY: the caller's in-out high part.
            let high = unsafe { hi.read_unaligned() };
            (i64::from(high) << 32) | i64::from(lo as u32)
        };
        return match calls::fs().and_then(|fs| fs.seek(&f, dist, method)) {
            Ok(p) => {
                if !hi.is_null() {
                    // SAFETY: as above.
                    unsafe { hi.write_unaligned((p >> 32) as i32) };
                } else if p > u64::from(u32::MAX - 1) {
                    return fail(ERROR_INVALID_PARAMETER, u32::MAX);
                }
                fail(ERROR_SUCCESS, p as u32)
            }
            Err(e) => fail(e, u32::MAX),
        };
    }
    let f = original!(SetFilePointer: fn(HANDLE, i32, *mut i32, u32) -> u32, u32::MAX);
    // SAFETY: the caller's arguments, passed on unchanged.
    unsafe { f(h, lo, hi, method) }
}

unsafe extern "system" fn GetFileSizeEx(h: HANDLE, size: *mut i64) -> Bool {
    if let Some(f) = calls::handles().file(h as usize) {
        return match calls::fs().and_then(|fs| fs.info(&f)) {
            Ok(i) => {
                // SAFETY: the caller's out-parameter.
                unsafe { put(size, i.size as i64) };
                TRUE
            }
            Err(e) => fail(e, FALSE),
        };
    }
    let f = original!(GetFileSizeEx: fn(HANDLE, *mut i64) -> Bool, FALSE);
    // SAFETY: the caller's arguments, passed on unchanged.
    unsafe { f(h, size) }
}

unsafe extern "system" fn GetFileSize(h: HANDLE, high: *mut u32) -> u32 {
    if let Some(f) = calls::handles().file(h as usize) {
        return match calls::fs().and_then(|fs| fs.info(&f)) {
            Ok(i) => {
                // SAFETY: the caller's out-parameter.
                unsafe { put(high, (i.size >> 32) as u32) };
                fail(ERROR_SUCCESS, i.size as u32)
            }
            Err(e) => fail(e, u32::MAX),
        };
    }
    let f = original!(GetFileSize: fn(HANDLE, *mut u32) -> u32, u32::MAX);
    // SAFETY: the caller's arguments, passed on unchanged.
    unsafe { f(h, high) }
}

unsafe extern "system" fn GetFileType(h: HANDLE) -> u32 {
    if calls::handles().get(h as usize).is_some() {
        return FILE_TYPE_DISK;
    }
    let f = original!(GetFileType: fn(HANDLE) -> u32, 0);
    // SAFETY: the caller's handle, passed on.
    unsafe { f(h) }
}

fn by_handle(i: &Info) -> ByHandleInfo {
    ByHandleInfo {
        attributes: i.info.attributes,
        creation: ft(i.info.creation),
        access: ft(i.info.access),
        write: ft(i.info.write),
        volume_serial: i.volume_serial,
        size_high: (i.info.size >> 32) as u32,
        size_low: i.info.size as u32,
        links: i.info.links,
        index_high: (i.info.index >> 32) as u32,
        index_low: i.info.index as u32,
    }
}

unsafe extern "system" fn GetFileInformationByHandle(h: HANDLE, out: *mut c_void) -> Bool {
    if let Some(f) = calls::handles().file(h as usize) {
        if out.is_null() {
            return fail(ERROR_INVALID_PARAMETER, FALSE);
        }
        return match calls::info(&f) {
            Ok(i) => {
                // SAFETY: the caller's `BY_HANDLE_FILE_INFORMATION`.
                unsafe { put(out as *mut ByHandleInfo, by_handle(&i)) };
                TRUE
            }
            Err(e) => fail(e, FALSE),
        };
    }
    let f = original!(GetFileInformationByHandle: fn(HANDLE, *mut c_void) -> Bool, FALSE);
    // SAFETY: the caller's arguments, passed on unchanged.
    unsafe { f(h, out) }
}

/// Writes `v` into the caller's buffer of `size` bytes, or fails as too small.
unsafe fn put_sized<T>(out: *mut c_void, size: u32, v: T) -> Bool {
    if out.is_null() || (size as usize) < std::mem::size_of::<T>() {
        return fail(ERROR_INSUFFICIENT_BUFFER, FALSE);
    }
    // SAFETY: the caller's buffer holds at least `size_of::<T>()` bytes.
    unsafe { (out as *mut T).write_unaligned(v) };
    TRUE
}

unsafe extern "system" fn GetFileInformationByHandleEx(
    h: HANDLE,
    class: i32,
    out: *mut c_void,
    size: u32,
) -> Bool {
    if let Some(f) = calls::handles().file(h as usize) {
        if matches!(
            class,
            FILE_ID_BOTH_DIRECTORY_INFO | FILE_ID_BOTH_DIRECTORY_RESTART_INFO
        ) {
            // SAFETY: the caller's buffer of `size` bytes.
            let buf = unsafe { slice_mut(out as *mut u8, size as usize) };
            return ok_bool(list_into(
                &f,
                class == FILE_ID_BOTH_DIRECTORY_RESTART_INFO,
                buf,
            ));
        }
        let i = match calls::info(&f) {
            Ok(i) => i,
            Err(e) => return fail(e, FALSE),
        };
        let n = &i.info;
        // SAFETY (each arm): `put_sized` checks the caller's size for the class's struct.
        return match class {
            // SAFETY: `put_sized` checks the caller's size for FILE_BASIC_INFO.
            FILE_BASIC_INFO => unsafe {
                put_sized(
                    out,
                    size,
                    BasicInfo {
                        creation: n.creation as i64,
                        access: n.access as i64,
                        write: n.write as i64,
                        change: n.change as i64,
                        attributes: n.attributes,
                    },
                )
            },
            // SAFETY: `put_sized` checks the caller's size for FILE_STANDARD_INFO.
            FILE_STANDARD_INFO => unsafe {
                put_sized(
                    out,
                    size,
                    StandardInfo {
                        allocation: n.allocation as i64,
                        end_of_file: n.size as i64,
                        links: n.links,
                        delete_pending: u8::from(n.delete_pending),
                        directory: u8::from(n.directory),
                    },
                )
            },
            // SAFETY: `put_sized` checks the caller's size for FILE_ATTRIBUTE_TAG_INFO.
            FILE_ATTRIBUTE_TAG_INFO => unsafe {
                put_sized(
                    out,
                    size,
                    AttributeTagInfo {
                        attributes: n.attributes,
                        reparse_tag: 0,
                    },
                )
            },
            FILE_NAME_INFO => {
                // The path below the volume, as `\dir\file`.
                let name = i.volume_path;
                let bytes = name.len() * 2;
                if out.is_null() || (size as usize) < 4 + bytes {
                    return fail(ERROR_MORE_DATA, FALSE);
                }
                // SAFETY: room for the length and the name was just checked.
                unsafe {
                    (out as *mut u32).write_unaligned(bytes as u32);
                    std::ptr::copy_nonoverlapping(
                        name.as_ptr(),
                        (out as *mut u8).add(4) as *mut u16,
                        name.len(),
                    );
                }
                TRUE
            }
            _ => fail(ERROR_INVALID_PARAMETER, FALSE),
        };
    }
    let f =
        original!(GetFileInformationByHandleEx: fn(HANDLE, i32, *mut c_void, u32) -> Bool, FALSE);
    // SAFETY: the caller's arguments, passed on unchanged.
    unsafe { f(h, class, out, size) }
}

const ERROR_MORE_DATA: u32 = 234;

/// Packs as many `FILE_ID_BOTH_DIR_INFO` entries as fit into `buf`.
fn list_into(f: &crate::win32::WinFile, restart: bool, buf: &mut [u8]) -> Result<(), WinError> {
    let fixed = std::mem::size_of::<IdBothDirInfo>();
    let mut at = 0usize;
    let mut last: Option<usize> = None;
    let fs = calls::fs()?;
    let mut entries: Vec<FindEntry> = Vec::new();
    let mut room = buf.len();
    fs.list_handle(f, restart, |e| {
        let need = (fixed + e.name.encode_utf16().count() * 2 + 7) & !7;
        if need > room {
            return false;
        }
        room -= need;
        entries.push(e.clone());
        true
    })?;
    for e in &entries {
        let name: Vec<u16> = e.name.encode_utf16().collect();
        let need = (fixed + name.len() * 2 + 7) & !7;
        let entry = IdBothDirInfo {
            next: 0,
            index: 0,
            creation: e.info.creation as i64,
            access: e.info.access as i64,
            write: e.info.write as i64,
            change: e.info.change as i64,
            end_of_file: e.info.size as i64,
            allocation: e.info.allocation as i64,
            attributes: e.info.attributes,
            name_length: (name.len() * 2) as u32,
            ea_size: 0,
            short_name_length: 0,
            short_name: [0; 12],
            file_id: e.info.index as i64,
        };
        let Some(dst) = buf.get_mut(at..at + need) else {
            break;
        };
        dst.fill(0);
        // SAFETY: `dst` holds `need` bytes, at least the fixed part and the name; writes are
        // unaligned-safe.
        unsafe {
            (dst.as_mut_ptr() as *mut IdBothDirInfo).write_unaligned(entry);
            std::ptr::copy_nonoverlapping(
                name.as_ptr() as *const u8,
                dst.as_mut_ptr().add(fixed),
                name.len() * 2,
            );
        }
        if let Some(prev) = last {
            let off = (at - prev) as u32;
            buf[prev..prev + 4].copy_from_slice(&off.to_le_bytes());
        }
        last = Some(at);
        at += need;
    }
    Ok(())
}

unsafe extern "system" fn SetFileInformationByHandle(
    h: HANDLE,
    class: i32,
    data: *const c_void,
    size: u32,
) -> Bool {
    if let Some(f) = calls::handles().file(h as usize) {
        if data.is_null() {
            return fail(ERROR_INVALID_PARAMETER, FALSE);
        }
        let fs = match calls::fs() {
            Ok(fs) => fs,
            Err(e) => return fail(e, FALSE),
        };
        // SAFETY (each read): the caller's structure of `size` bytes, checked per class.
        let r = match class {
            FILE_END_OF_FILE_INFO if size >= 8 => {
                // SAFETY: the caller's FILE_END_OF_FILE_INFO, at least 8 bytes (checked).
                let end = unsafe { (data as *const i64).read_unaligned() };
                if end < 0 {
                    Err(ERROR_INVALID_PARAMETER)
                } else {
                    fs.set_size(&f, end as u64)
                }
            }
            FILE_ALLOCATION_INFO if size >= 8 => Ok(()),
            FILE_DISPOSITION_INFO if size >= 1 => {
                // SAFETY: the caller's FILE_DISPOSITION_INFO, at least 1 byte (checked).
                let delete = unsafe { (data as *const u8).read() } != 0;
                fs.set_delete(&f, delete, false)
            }
            FILE_DISPOSITION_INFO_EX if size >= 4 => {
                // SAFETY: the caller's FILE_DISPOSITION_INFO_EX, at least 4 bytes (checked).
                let flags = unsafe { (data as *const u32).read_unaligned() };
                fs.set_delete(&f, flags & 1 != 0, flags & 2 != 0)
            }
            FILE_BASIC_INFO if size as usize >= std::mem::size_of::<BasicInfo>() => {
                // SAFETY: the caller's FILE_BASIC_INFO, its size checked.
                let b = unsafe { (data as *const BasicInfo).read_unaligned() };
                fs.set_times(&f, b.access as u64, b.write as u64)
            }
            FILE_RENAME_INFO | FILE_RENAME_INFO_EX
                if size as usize >= std::mem::size_of::<RenameInfo>() =>
            {
                // SAFETY: the caller's FILE_RENAME_INFO, at least its fixed part (checked).
                let r = unsafe { (data as *const RenameInfo).read_unaligned() };
                let name_at = std::mem::offset_of!(RenameInfo, name_length) + 4;
                let units = r.name_length as usize / 2;
                if name_at + units * 2 > size as usize {
                    Err(ERROR_INVALID_PARAMETER)
                } else {
                    // SAFETY: the name's length was checked against the caller's size above.
                    let name = unsafe {
                        std::slice::from_raw_parts(
                            (data as *const u8).add(name_at) as *const u16,
                            units,
                        )
                    };
                    let replace = if class == FILE_RENAME_INFO {
                        r.flags & 0xff != 0
                    } else {
                        r.flags & 1 != 0
                    };
                    calls::rename_handle(&f, r.root as usize, name, replace)
                }
            }
            FILE_END_OF_FILE_INFO
            | FILE_ALLOCATION_INFO
            | FILE_DISPOSITION_INFO
            | FILE_DISPOSITION_INFO_EX
            | FILE_BASIC_INFO
            | FILE_RENAME_INFO
            | FILE_RENAME_INFO_EX => Err(ERROR_INVALID_PARAMETER),
            _ => Err(ERROR_NOT_SUPPORTED),
        };
        return ok_bool(r);
    }
    let f =
        original!(SetFileInformationByHandle: fn(HANDLE, i32, *const c_void, u32) -> Bool, FALSE);
    // SAFETY: the caller's arguments, passed on unchanged.
    unsafe { f(h, class, data, size) }
}

unsafe extern "system" fn SetEndOfFile(h: HANDLE) -> Bool {
    if let Some(f) = calls::handles().file(h as usize) {
        return ok_bool(calls::fs().and_then(|fs| fs.set_end_of_file(&f)));
    }
    let f = original!(SetEndOfFile: fn(HANDLE) -> Bool, FALSE);
    // SAFETY: the caller's handle, passed on.
    unsafe { f(h) }
}

unsafe extern "system" fn FlushFileBuffers(h: HANDLE) -> Bool {
    if let Some(f) = calls::handles().file(h as usize) {
        return ok_bool(calls::fs().and_then(|fs| fs.flush(&f)));
    }
    let f = original!(FlushFileBuffers: fn(HANDLE) -> Bool, FALSE);
    // SAFETY: the caller's handle, passed on.
    unsafe { f(h) }
}

unsafe extern "system" fn GetFileTime(
    h: HANDLE,
    c: *mut FileTime,
    a: *mut FileTime,
    w: *mut FileTime,
) -> Bool {
    if let Some(f) = calls::handles().file(h as usize) {
        return match calls::info(&f) {
            Ok(i) => {
                // SAFETY: the caller's out-parameters, each optional.
                unsafe {
                    put(c, ft(i.info.creation));
                    put(a, ft(i.info.access));
                    put(w, ft(i.info.write));
                }
                TRUE
            }
            Err(e) => fail(e, FALSE),
        };
    }
    let f = original!(GetFileTime: fn(HANDLE, *mut FileTime, *mut FileTime, *mut FileTime) -> Bool, FALSE);
    // SAFETY: the caller's arguments, passed on unchanged.
    unsafe { f(h, c, a, w) }
}

unsafe extern "system" fn SetFileTime(
    h: HANDLE,
    c: *const FileTime,
    a: *const FileTime,
    w: *const FileTime,
) -> Bool {
    if let Some(f) = calls::handles().file(h as usize) {
        // SAFETY: the caller's times, each optional.
        let get = |p: *const FileTime| unsafe {
            if p.is_null() {
                0
            } else {
                let t = p.read_unaligned();
                u64::from(t.low) | (u64::from(t.high) << 32)
            }
        };
        let _ = c;
        return ok_bool(calls::fs().and_then(|fs| fs.set_times(&f, get(a), get(w))));
    }
    let f = original!(SetFileTime: fn(HANDLE, *const FileTime, *const FileTime, *const FileTime) -> Bool, FALSE);
    // SAFETY: the caller's arguments, passed on unchanged.
    unsafe { f(h, c, a, w) }
}

unsafe extern "system" fn GetFileAttributesW(name: *const u16) -> u32 {
    // SAFETY: the caller's path.
    if let Some(r) = calls::route(unsafe { wide(name) }) {
        return match r.and_then(|c| calls::attributes(&c)) {
            Ok(i) => i.attributes,
            Err(e) => fail(e, INVALID_FILE_ATTRIBUTES),
        };
    }
    let f = original!(GetFileAttributesW: fn(*const u16) -> u32, INVALID_FILE_ATTRIBUTES);
    // SAFETY: the caller's argument, passed on.
    unsafe { f(name) }
}

unsafe extern "system" fn GetFileAttributesExW(
    name: *const u16,
    level: i32,
    out: *mut c_void,
) -> Bool {
    // SAFETY: the caller's path.
    if let Some(r) = calls::route(unsafe { wide(name) }) {
        if level != 0 {
            return fail(ERROR_INVALID_PARAMETER, FALSE);
        }
        return match r.and_then(|c| calls::attributes(&c)) {
            Ok(i) => {
                let d = AttributeData {
                    attributes: i.attributes,
                    creation: ft(i.creation),
                    access: ft(i.access),
                    write: ft(i.write),
                    size_high: (i.size >> 32) as u32,
                    size_low: i.size as u32,
                };
                // SAFETY: the caller's `WIN32_FILE_ATTRIBUTE_DATA`.
                unsafe { put(out as *mut AttributeData, d) };
                TRUE
            }
            Err(e) => fail(e, FALSE),
        };
    }
    let f = original!(GetFileAttributesExW: fn(*const u16, i32, *mut c_void) -> Bool, FALSE);
    // SAFETY: the caller's arguments, passed on unchanged.
    unsafe { f(name, level, out) }
}

unsafe extern "system" fn SetFileAttributesW(name: *const u16, attrs: u32) -> Bool {
    // SAFETY: the caller's path.
    if let Some(r) = calls::route(unsafe { wide(name) }) {
        return ok_bool(r.and_then(|c| calls::fs()?.set_attributes(&c, attrs)));
    }
    let f = original!(SetFileAttributesW: fn(*const u16, u32) -> Bool, FALSE);
    // SAFETY: the caller's arguments, passed on unchanged.
    unsafe { f(name, attrs) }
}

fn find_data(e: &FindEntry) -> FindData {
    let mut name = [0u16; 260];
    for (d, s) in name.iter_mut().zip(e.name.encode_utf16().take(259)) {
        *d = s;
    }
    FindData {
        attributes: e.info.attributes,
        creation: ft(e.info.creation),
        access: ft(e.info.access),
        write: ft(e.info.write),
        size_high: (e.info.size >> 32) as u32,
        size_low: e.info.size as u32,
        reserved0: 0,
        reserved1: 0,
        name,
        alternate: [0; 14],
    }
}

unsafe fn find_first(pattern: &[u16], out: *mut c_void) -> Option<HANDLE> {
    let r = calls::route_pattern(pattern)?;
    if out.is_null() {
        return Some(fail(ERROR_INVALID_PARAMETER, INVALID_HANDLE_VALUE));
    }
    Some(
        match r.and_then(|(dir, pat)| calls::fs()?.find_first(&dir, &pat)) {
            Ok(mut find) => match find.next_entry() {
                Ok(first) => {
                    // SAFETY: the caller's `WIN32_FIND_DATAW`.
                    unsafe { put(out as *mut FindData, find_data(&first)) };
                    hand_out(crate::win32::handles::Object::Find(std::sync::Mutex::new(
                        find,
                    )))
                }
                Err(e) => fail(e, INVALID_HANDLE_VALUE),
            },
            Err(e) => fail(e, INVALID_HANDLE_VALUE),
        },
    )
}

unsafe extern "system" fn FindFirstFileW(pattern: *const u16, out: *mut c_void) -> HANDLE {
    // SAFETY: the caller's pattern and out-structure.
    if let Some(p) = unsafe { wide(pattern) } {
        // SAFETY: the caller's pattern and WIN32_FIND_DATAW.
        if let Some(h) = unsafe { find_first(p, out) } {
            return h;
        }
    }
    let f = original!(FindFirstFileW: fn(*const u16, *mut c_void) -> HANDLE, INVALID_HANDLE_VALUE);
    // SAFETY: the caller's arguments, passed on unchanged.
    unsafe { f(pattern, out) }
}

unsafe extern "system" fn FindFirstFileExW(
    pattern: *const u16,
    level: i32,
    out: *mut c_void,
    op: i32,
    filter: *const c_void,
    flags: u32,
) -> HANDLE {
    // Both info levels (standard, basic) fill the same structure; the basic one leaves the
    // short name empty, which is all this face fills anyway. Every search op is served as a
    // name match: listing only directories is an optimisation a file system may ignore.
    // SAFETY: the caller's pattern and out-structure.
    if let Some(p) = unsafe { wide(pattern) } {
        // SAFETY: the caller's pattern and WIN32_FIND_DATAW.
        if let Some(h) = unsafe { find_first(p, out) } {
            return h;
        }
    }
    let f = original!(FindFirstFileExW: fn(*const u16, i32, *mut c_void, i32, *const c_void, u32) -> HANDLE, INVALID_HANDLE_VALUE);
    // SAFETY: the caller's arguments, passed on unchanged.
    unsafe { f(pattern, level, out, op, filter, flags) }
}

unsafe extern "system" fn FindNextFileW(h: HANDLE, out: *mut c_void) -> Bool {
    if let Some(o) = calls::handles().get(h as usize) {
        let crate::win32::handles::Object::Find(find) = o.as_ref() else {
            return fail(ERROR_INVALID_HANDLE, FALSE);
        };
        let next = find.lock().unwrap_or_else(|p| p.into_inner()).next_entry();
        return match next {
            Ok(e) => {
                // SAFETY: the caller's `WIN32_FIND_DATAW`.
                unsafe { put(out as *mut FindData, find_data(&e)) };
                TRUE
            }
            Err(e) => fail(e, FALSE),
        };
    }
    let f = original!(FindNextFileW: fn(HANDLE, *mut c_void) -> Bool, FALSE);
    // SAFETY: the caller's arguments, passed on unchanged.
    unsafe { f(h, out) }
}

macro_rules! path_call {
    ($hook:ident, $name:ident, |$c:ident| $body:expr) => {
        unsafe extern "system" fn $hook(name: *const u16, extra: *const c_void) -> Bool {
            // SAFETY: the caller's path.
            if let Some(r) = calls::route(unsafe { wide(name) }) {
                return ok_bool(r.and_then(|$c| $body));
            }
            let f = original!($name: fn(*const u16, *const c_void) -> Bool, FALSE);
            // SAFETY: the caller's arguments, passed on unchanged (the second is ignored by
            // the one-argument functions, as the calling convention allows).
            unsafe { f(name, extra) }
        }
    };
}

path_call!(CreateDirectoryW, CreateDirectoryW, |c| calls::fs()?
    .create_directory(&c));
path_call!(RemoveDirectoryW, RemoveDirectoryW, |c| calls::fs()?
    .remove_directory(&c));
path_call!(DeleteFileW, DeleteFileW, |c| calls::fs()?.delete_file(&c));

unsafe extern "system" fn MoveFileExW(from: *const u16, to: *const u16, flags: u32) -> Bool {
    // SAFETY: the caller's paths.
    let (a, b) = unsafe { (wide(from), wide(to)) };
    if let Some(r) = calls::move_file(a, b, flags, &copy_any) {
        return ok_bool(r);
    }
    let f = original!(MoveFileExW: fn(*const u16, *const u16, u32) -> Bool, FALSE);
    // SAFETY: the caller's arguments, passed on unchanged.
    unsafe { f(from, to, flags) }
}

unsafe extern "system" fn MoveFileWithProgressW(
    from: *const u16,
    to: *const u16,
    progress: *const c_void,
    data: *const c_void,
    flags: u32,
) -> Bool {
    // SAFETY: the caller's paths.
    let (a, b) = unsafe { (wide(from), wide(to)) };
    if let Some(r) = calls::move_file(a, b, flags, &copy_any) {
        return ok_bool(r);
    }
    let f = original!(MoveFileWithProgressW: fn(*const u16, *const u16, *const c_void, *const c_void, u32) -> Bool, FALSE);
    // SAFETY: the caller's arguments, passed on unchanged.
    unsafe { f(from, to, progress, data, flags) }
}

/// Copies `from` to `to` where either is the DFS's, through the hooks themselves (so each
/// side is served by whoever owns it): what `CopyFileExW` does, without its progress calls.
fn copy_any(from: &[u16], to: &[u16], fail_if_exists: bool) -> Result<(), WinError> {
    let z = |s: &[u16]| {
        let mut v = s.to_vec();
        v.push(0);
        v
    };
    let (from, to) = (z(from), z(to));
    // SAFETY: NUL-terminated paths; the handles are closed below on every path.
    unsafe {
        let src = CreateFileW(
            from.as_ptr(),
            GENERIC_READ,
            FILE_SHARE_READ,
            std::ptr::null(),
            OPEN_EXISTING,
            0,
            std::ptr::null_mut(),
        );
        if src == INVALID_HANDLE_VALUE {
            return Err(last_error());
        }
        let mut info: ByHandleInfo = std::mem::zeroed();
        if GetFileInformationByHandle(src, &mut info as *mut _ as *mut c_void) == FALSE {
            let e = last_error();
            CloseHandle(src);
            return Err(e);
        }
        let disposition = if fail_if_exists {
            CREATE_NEW
        } else {
            CREATE_ALWAYS
        };
        let dst = CreateFileW(
            to.as_ptr(),
            GENERIC_WRITE,
            0,
            std::ptr::null(),
            disposition,
            info.attributes & FILE_ATTRIBUTE_READONLY,
            std::ptr::null_mut(),
        );
        if dst == INVALID_HANDLE_VALUE {
            let e = last_error();
            CloseHandle(src);
            return Err(e);
        }
        let mut buf = vec![0u8; 1 << 20];
        let mut r = Ok(());
        loop {
            let mut n = 0u32;
            if ReadFile(
                src,
                buf.as_mut_ptr(),
                buf.len() as u32,
                &mut n,
                std::ptr::null_mut(),
            ) == FALSE
            {
                r = Err(last_error());
                break;
            }
            if n == 0 {
                break;
            }
            let mut w = 0u32;
            if WriteFile(dst, buf.as_ptr(), n, &mut w, std::ptr::null_mut()) == FALSE || w != n {
                r = Err(last_error());
                break;
            }
        }
        if r.is_ok() {
            // A copy keeps the source's last write time, as CopyFile does.
            SetFileTime(dst, std::ptr::null(), std::ptr::null(), &info.write);
        }
        CloseHandle(src);
        CloseHandle(dst);
        r
    }
}

fn last_error() -> WinError {
    // SAFETY: reads this thread's last-error value.
    unsafe { windows_sys::Win32::Foundation::GetLastError() }
}

unsafe extern "system" fn CopyFileExW(
    from: *const u16,
    to: *const u16,
    progress: *const c_void,
    data: *const c_void,
    cancel: *mut Bool,
    flags: u32,
) -> Bool {
    // SAFETY: the caller's paths.
    let (a, b) = unsafe { (wide(from), wide(to)) };
    if let (Some(a), Some(b)) = (a, b) {
        if calls::is_ours(a) || calls::is_ours(b) {
            // COPY_FILE_FAIL_IF_EXISTS is 1.
            return ok_bool(copy_any(a, b, flags & 1 != 0));
        }
    }
    let f = original!(CopyFileExW: fn(*const u16, *const u16, *const c_void, *const c_void, *mut Bool, u32) -> Bool, FALSE);
    // SAFETY: the caller's arguments, passed on unchanged.
    unsafe { f(from, to, progress, data, cancel, flags) }
}

unsafe extern "system" fn CopyFileW(
    from: *const u16,
    to: *const u16,
    fail_if_exists: Bool,
) -> Bool {
    // SAFETY: the caller's paths.
    let (a, b) = unsafe { (wide(from), wide(to)) };
    if let (Some(a), Some(b)) = (a, b) {
        if calls::is_ours(a) || calls::is_ours(b) {
            return ok_bool(copy_any(a, b, fail_if_exists != 0));
        }
    }
    let f = original!(CopyFileW: fn(*const u16, *const u16, Bool) -> Bool, FALSE);
    // SAFETY: the caller's arguments, passed on unchanged.
    unsafe { f(from, to, fail_if_exists) }
}

unsafe extern "system" fn GetFullPathNameW(
    name: *const u16,
    len: u32,
    buf: *mut u16,
    file_part: *mut *mut u16,
) -> u32 {
    // SAFETY: the caller's path.
    if let Some(r) = calls::route(unsafe { wide(name) }) {
        let full = match r.and_then(|c| calls::full_path(&c)) {
            Ok(p) => p,
            Err(e) => return fail(e, 0),
        };
        if (len as usize) < full.len() + 1 || buf.is_null() {
            // The size needed, the NUL included.
            return (full.len() + 1) as u32;
        }
        // SAFETY: the caller's buffer holds `len` units, more than the path and its NUL.
        unsafe {
            std::ptr::copy_nonoverlapping(full.as_ptr(), buf, full.len());
            buf.add(full.len()).write(0);
            let last = full.iter().rposition(|&c| c == b'\\' as u16);
            let part = match last {
                Some(i) if i + 1 < full.len() => buf.add(i + 1),
                _ => std::ptr::null_mut(),
            };
            put(file_part, part);
        }
        return full.len() as u32;
    }
    let f = original!(GetFullPathNameW: fn(*const u16, u32, *mut u16, *mut *mut u16) -> u32, 0);
    // SAFETY: the caller's arguments, passed on unchanged.
    unsafe { f(name, len, buf, file_part) }
}

unsafe extern "system" fn DuplicateHandle(
    src_process: HANDLE,
    src: HANDLE,
    dst_process: HANDLE,
    dst: *mut HANDLE,
    access: u32,
    inherit: Bool,
    options: u32,
) -> Bool {
    let f = original!(DuplicateHandle: fn(HANDLE, HANDLE, HANDLE, *mut HANDLE, u32, Bool, u32) -> Bool, FALSE);
    if calls::handles().get(src as usize).is_some() {
        // SAFETY: the pseudo-handle of this process.
        let me = unsafe { GetCurrentProcess() };
        if src_process != me || dst_process != me || dst.is_null() {
            // The open file lives in this process's connection: another process cannot
            // share it.
            return fail(ERROR_NOT_SUPPORTED, FALSE);
        }
        let mut new: HANDLE = std::ptr::null_mut();
        // SAFETY: duplicates the placeholder itself (without closing it here).
        let ok = unsafe {
            f(
                src_process,
                src,
                dst_process,
                &mut new,
                access,
                inherit,
                options & !DUPLICATE_CLOSE_SOURCE,
            )
        };
        if ok == FALSE {
            return FALSE;
        }
        calls::handles().duplicate(src as usize, new as usize);
        if options & DUPLICATE_CLOSE_SOURCE != 0 {
            calls::handles().remove(src as usize);
            close_placeholder(src as usize);
        }
        // SAFETY: the caller's out-parameter, checked non-null above.
        unsafe { put(dst, new) };
        return TRUE;
    }
    // SAFETY: the caller's arguments, passed on unchanged.
    unsafe { f(src_process, src, dst_process, dst, access, inherit, options) }
}

unsafe extern "system" fn GetVolumeInformationW(
    root: *const u16,
    name: *mut u16,
    name_len: u32,
    serial: *mut u32,
    max_component: *mut u32,
    flags: *mut u32,
    fs_name: *mut u16,
    fs_name_len: u32,
) -> Bool {
    // SAFETY: the caller's path.
    if let Some(r) = calls::route(unsafe { wide(root) }) {
        if let Err(e) = r {
            return fail(e, FALSE);
        }
        let label: Vec<u16> = "DFS".encode_utf16().collect();
        let fsn: Vec<u16> = "vmmc-dfs".encode_utf16().collect();
        // SAFETY: each out-parameter is optional; each buffer has its stated length.
        unsafe {
            for (buf, len, s) in [(name, name_len, &label), (fs_name, fs_name_len, &fsn)] {
                if !buf.is_null() {
                    if (len as usize) <= s.len() {
                        return fail(ERROR_MORE_DATA, FALSE);
                    }
                    std::ptr::copy_nonoverlapping(s.as_ptr(), buf, s.len());
                    buf.add(s.len()).write(0);
                }
            }
            put(serial, calls::volume_serial());
            put(max_component, 255);
            // Case-sensitive search, case-preserved names, Unicode names.
            put(flags, 0x7);
        }
        return TRUE;
    }
    let f = original!(GetVolumeInformationW: fn(*const u16, *mut u16, u32, *mut u32, *mut u32, *mut u32, *mut u16, u32) -> Bool, FALSE);
    // SAFETY: the caller's arguments, passed on unchanged.
    unsafe {
        f(
            root,
            name,
            name_len,
            serial,
            max_component,
            flags,
            fs_name,
            fs_name_len,
        )
    }
}

unsafe extern "system" fn GetDiskFreeSpaceExW(
    dir: *const u16,
    avail: *mut u64,
    total: *mut u64,
    free: *mut u64,
) -> Bool {
    // SAFETY: the caller's path.
    if let Some(r) = calls::route(unsafe { wide(dir) }) {
        return match r.and_then(|_| calls::fs()?.space()) {
            Ok((a, t, f)) => {
                // SAFETY: the caller's optional out-parameters.
                unsafe {
                    put(avail, a);
                    put(total, t);
                    put(free, f);
                }
                TRUE
            }
            Err(e) => fail(e, FALSE),
        };
    }
    let f =
        original!(GetDiskFreeSpaceExW: fn(*const u16, *mut u64, *mut u64, *mut u64) -> Bool, FALSE);
    // SAFETY: the caller's arguments, passed on unchanged.
    unsafe { f(dir, avail, total, free) }
}

unsafe extern "system" fn GetDriveTypeW(root: *const u16) -> u32 {
    // SAFETY: the caller's path.
    if let Some(Ok(_)) = calls::route(unsafe { wide(root) }) {
        return DRIVE_REMOTE;
    }
    let f = original!(GetDriveTypeW: fn(*const u16) -> u32, 0);
    // SAFETY: the caller's argument, passed on.
    unsafe { f(root) }
}

// ---- ntdll: what Rust's standard library calls directly. ----

/// `FILE_USE_FILE_POINTER_POSITION` in an offset's low part (with -1 high): no offset.
const USE_FILE_POINTER: i64 = -2;
const STATUS_SUCCESS: i32 = 0;
const STATUS_END_OF_FILE: i32 = 0xC000_0011_u32 as i32;

/// Writes an `IO_STATUS_BLOCK` (status, information).
unsafe fn io_status(iosb: *mut c_void, status: i32, info: usize) {
    if !iosb.is_null() {
        // SAFETY: IO_STATUS_BLOCK is { NTSTATUS/PVOID union (8 bytes), ULONG_PTR }.
        unsafe {
            (iosb as *mut usize).write_unaligned(status as u32 as usize);
            (iosb as *mut usize).add(1).write_unaligned(info);
        }
    }
}

/// The explicit offset of an Nt read or write, if any.
unsafe fn nt_offset(p: *const i64) -> Option<u64> {
    if p.is_null() {
        return None;
    }
    // SAFETY: the caller's LARGE_INTEGER.
    let v = unsafe { p.read_unaligned() };
    (v != USE_FILE_POINTER && v >= 0).then_some(v as u64)
}

/// Asynchronous I/O (a completion routine, as `ReadFileEx` passes, or an event to signal)
/// is not served on DFS handles: it fails at once with `STATUS_NOT_SUPPORTED` instead of
/// completing without the routine the program waits for.
unsafe fn asynchronous(event: HANDLE, apc: *const c_void, iosb: *mut c_void) -> Option<i32> {
    if apc.is_null() && event.is_null() {
        return None;
    }
    let st = calls::nt_status(ERROR_NOT_SUPPORTED);
    // SAFETY: the caller's status block.
    unsafe { io_status(iosb, st, 0) };
    Some(st)
}

unsafe extern "system" fn NtReadFile(
    h: HANDLE,
    event: HANDLE,
    apc: *const c_void,
    apc_ctx: *const c_void,
    iosb: *mut c_void,
    buf: *mut u8,
    len: u32,
    offset: *const i64,
    key: *const u32,
) -> i32 {
    if let Some(f) = calls::handles().file(h as usize) {
        // SAFETY: the caller's event, routine and status block.
        if let Some(st) = unsafe { asynchronous(event, apc, iosb) } {
            return st;
        }
        // SAFETY: the caller's buffer and offset.
        let dst = unsafe { slice_mut(buf, len as usize) };
        // SAFETY: the caller's offset, if any.
        let at = unsafe { nt_offset(offset) };
        let (st, n) = match calls::fs().and_then(|fs| fs.read(&f, dst, at)) {
            Ok(0) if len > 0 => (STATUS_END_OF_FILE, 0),
            Ok(n) => (STATUS_SUCCESS, n),
            Err(e) => (calls::nt_status(e), 0),
        };
        // SAFETY: the caller's status block.
        unsafe { io_status(iosb, st, n) };
        return st;
    }
    let f = original!(NtReadFile: fn(HANDLE, HANDLE, *const c_void, *const c_void, *mut c_void, *mut u8, u32, *const i64, *const u32) -> i32, calls::nt_status(ERROR_INVALID_FUNCTION));
    // SAFETY: the caller's arguments, passed on unchanged.
    unsafe { f(h, event, apc, apc_ctx, iosb, buf, len, offset, key) }
}

unsafe extern "system" fn NtWriteFile(
    h: HANDLE,
    event: HANDLE,
    apc: *const c_void,
    apc_ctx: *const c_void,
    iosb: *mut c_void,
    buf: *const u8,
    len: u32,
    offset: *const i64,
    key: *const u32,
) -> i32 {
    if let Some(f) = calls::handles().file(h as usize) {
        // SAFETY: the caller's event, routine and status block.
        if let Some(st) = unsafe { asynchronous(event, apc, iosb) } {
            return st;
        }
        // SAFETY: the caller's data and offset.
        let src = unsafe { slice(buf, len as usize) };
        // SAFETY: the caller's offset, if any.
        let at = unsafe { nt_offset(offset) };
        let (st, n) = match calls::fs().and_then(|fs| fs.write(&f, src, at)) {
            Ok(n) => (STATUS_SUCCESS, n),
            Err(e) => (calls::nt_status(e), 0),
        };
        // SAFETY: the caller's status block.
        unsafe { io_status(iosb, st, n) };
        return st;
    }
    let f = original!(NtWriteFile: fn(HANDLE, HANDLE, *const c_void, *const c_void, *mut c_void, *const u8, u32, *const i64, *const u32) -> i32, calls::nt_status(ERROR_INVALID_FUNCTION));
    // SAFETY: the caller's arguments, passed on unchanged.
    unsafe { f(h, event, apc, apc_ctx, iosb, buf, len, offset, key) }
}

/// The root directory and name of an `OBJECT_ATTRIBUTES`.
unsafe fn object_name<'a>(oa: *const c_void) -> Option<(usize, &'a [u16])> {
    if oa.is_null() {
        return None;
    }
    // SAFETY: OBJECT_ATTRIBUTES is { ULONG Length; HANDLE RootDirectory (at 8);
    // PUNICODE_STRING ObjectName (at 16); … }, UNICODE_STRING { USHORT Length (bytes);
    // USHORT MaximumLength; PWSTR Buffer (at 8) }.
    unsafe {
        let root = (oa as *const u8).add(8).cast::<usize>().read_unaligned();
        let us = (oa as *const u8)
            .add(16)
            .cast::<*const u8>()
            .read_unaligned();
        if us.is_null() {
            return None;
        }
        let bytes = us.cast::<u16>().read_unaligned() as usize;
        let buf = us.add(8).cast::<*const u16>().read_unaligned();
        if buf.is_null() {
            return Some((root, &[]));
        }
        Some((root, std::slice::from_raw_parts(buf, bytes / 2)))
    }
}

/// `NtCreateFile`/`NtOpenFile` of a DFS name: the new handle into `out`, the status.
unsafe fn nt_open(
    out: *mut HANDLE,
    access: u32,
    oa: *const c_void,
    iosb: *mut c_void,
    share: u32,
    disposition: u32,
    options: u32,
) -> Option<i32> {
    // SAFETY: the caller's object attributes.
    let (root, name) = unsafe { object_name(oa) }?;
    let comps = calls::nt_route(root, name)?;
    let r = comps.and_then(|c| calls::nt_create(&c, access, share, disposition, options));
    let st = match r {
        Ok((o, existed)) => {
            let h = hand_out(o);
            if h == INVALID_HANDLE_VALUE {
                calls::nt_status(ERROR_NOT_ENOUGH_MEMORY)
            } else {
                // SAFETY: the caller's out-handle and status block (FILE_OPENED 1,
                // FILE_CREATED 2).
                unsafe {
                    put(out, h);
                    io_status(iosb, STATUS_SUCCESS, if existed { 1 } else { 2 });
                }
                return Some(STATUS_SUCCESS);
            }
        }
        Err(e) => calls::nt_status(e),
    };
    // SAFETY: the caller's status block.
    unsafe { io_status(iosb, st, 0) };
    Some(st)
}

unsafe extern "system" fn NtCreateFile(
    out: *mut HANDLE,
    access: u32,
    oa: *const c_void,
    iosb: *mut c_void,
    alloc: *const i64,
    attrs: u32,
    share: u32,
    disposition: u32,
    options: u32,
    ea: *const c_void,
    ea_len: u32,
) -> i32 {
    // SAFETY: the caller's arguments.
    if let Some(st) = unsafe { nt_open(out, access, oa, iosb, share, disposition, options) } {
        return st;
    }
    let f = original!(NtCreateFile: fn(*mut HANDLE, u32, *const c_void, *mut c_void, *const i64, u32, u32, u32, u32, *const c_void, u32) -> i32, calls::nt_status(ERROR_INVALID_FUNCTION));
    // SAFETY: the caller's arguments, passed on unchanged.
    unsafe {
        f(
            out,
            access,
            oa,
            iosb,
            alloc,
            attrs,
            share,
            disposition,
            options,
            ea,
            ea_len,
        )
    }
}

unsafe extern "system" fn NtOpenFile(
    out: *mut HANDLE,
    access: u32,
    oa: *const c_void,
    iosb: *mut c_void,
    share: u32,
    options: u32,
) -> i32 {
    // SAFETY: the caller's arguments (FILE_OPEN is disposition 1).
    if let Some(st) = unsafe { nt_open(out, access, oa, iosb, share, 1, options) } {
        return st;
    }
    let f = original!(NtOpenFile: fn(*mut HANDLE, u32, *const c_void, *mut c_void, u32, u32) -> i32, calls::nt_status(ERROR_INVALID_FUNCTION));
    // SAFETY: the caller's arguments, passed on unchanged.
    unsafe { f(out, access, oa, iosb, share, options) }
}

// ---- Installing the hooks. ----

/// Installs every hook; returns the names that could not be hooked (absent from this
/// system's DLLs, or refused by MinHook).
pub fn install() -> Vec<&'static str> {
    let mut missing = Vec::new();
    let mut seen = Vec::new();
    for (name, detour, slot) in hooks() {
        let Some(target) = proc_address(name) else {
            missing.push(name);
            continue;
        };
        if seen.contains(&target) {
            // Two names for one function (a forwarder): hooked once.
            missing.push(name);
            continue;
        }
        seen.push(target);
        // SAFETY: `target` is the entry of the named system function and `detour` a hook
        // with the same signature; MinHook patches it and returns the trampoline.
        match unsafe { minhook::MinHook::create_hook(target as *mut c_void, detour as *mut c_void) }
        {
            Ok(tramp) => slot.store(tramp as usize, Ordering::Release),
            Err(_) => missing.push(name),
        }
    }
    // SAFETY: turns on every hook made above; their trampolines are stored already.
    if unsafe { minhook::MinHook::enable_all_hooks() }.is_err() {
        missing.push("(enabling the hooks)");
    }
    missing
}

/// Where `name` is: kernelbase first (where Windows and Wine implement the file API, and
/// where kernelbase's calls to itself go), then kernel32.
fn proc_address(name: &str) -> Option<usize> {
    let cname: Vec<u8> = name.bytes().chain([0]).collect();
    for dll in ["kernelbase.dll", "kernel32.dll", "ntdll.dll"] {
        let w: Vec<u16> = dll.encode_utf16().chain([0]).collect();
        // SAFETY: NUL-terminated names; both DLLs are loaded in every process.
        unsafe {
            let m = GetModuleHandleW(w.as_ptr());
            if m.is_null() {
                continue;
            }
            if let Some(p) = GetProcAddress(m, cname.as_ptr()) {
                return Some(p as usize);
            }
        }
    }
    None
}

/// Writes a line to the process's standard error (through the original `WriteFile`, so
/// that nothing here passes through the hooks).
pub fn warn(msg: &str) {
    let line = format!("dfs shim: {msg}\r\n");
    // SAFETY: STD_ERROR_HANDLE is a constant; the line outlives the call.
    unsafe {
        let h = windows_sys::Win32::System::Console::GetStdHandle(
            windows_sys::Win32::System::Console::STD_ERROR_HANDLE,
        );
        let mut n = 0u32;
        let p = orig::WriteFile.load(Ordering::Acquire);
        if p != 0 && !h.is_null() && h != INVALID_HANDLE_VALUE {
            std::mem::transmute::<
                usize,
                unsafe extern "system" fn(HANDLE, *const u8, u32, *mut u32, *mut c_void) -> Bool,
            >(p)(
                h,
                line.as_ptr(),
                line.len() as u32,
                &mut n,
                std::ptr::null_mut(),
            );
        }
    }
}

/// The DLL's entry point: hooks go in when the DLL is loaded. The connection waits for the
/// first DFS call (the loader lock is held here).
#[no_mangle]
pub extern "system" fn DllMain(_module: *mut c_void, reason: u32, _reserved: *mut c_void) -> Bool {
    const DLL_PROCESS_ATTACH: u32 = 1;
    if reason == DLL_PROCESS_ATTACH && super::wanted() {
        let missing = install();
        if !missing.is_empty() && std::env::var_os("DFS_SHIM_DEBUG").is_some() {
            warn(&format!("not hooked: {}", missing.join(", ")));
        }
        if let Some(p) = std::env::var_os("DFS_SHIM_DEBUG_FILE") {
            let _ = std::fs::write(p, format!("not hooked: {}", missing.join(", ")));
        }
    }
    TRUE
}

// ---- The launcher's side: loading the DLL into a new process. ----

/// Starts `cmdline` suspended, loads each of `dlls` into it (a remote `LoadLibraryW`, as
/// Detours' withdll does), lets it run, and returns its exit code.
pub fn spawn_with(cmdline: &str, dlls: &[std::path::PathBuf]) -> Result<u32, String> {
    use windows_sys::Win32::System::Threading::{
        CreateProcessW, GetExitCodeProcess, ResumeThread, TerminateProcess, WaitForSingleObject,
        CREATE_SUSPENDED, INFINITE, PROCESS_INFORMATION, STARTUPINFOW,
    };
    let mut line: Vec<u16> = cmdline.encode_utf16().chain([0]).collect();
    // SAFETY: zeroed STARTUPINFOW/PROCESS_INFORMATION are valid "nothing set" values; the
    // command line is a mutable NUL-terminated buffer, as CreateProcessW wants.
    unsafe {
        let mut si: STARTUPINFOW = std::mem::zeroed();
        si.cb = std::mem::size_of::<STARTUPINFOW>() as u32;
        let mut pi: PROCESS_INFORMATION = std::mem::zeroed();
        if CreateProcessW(
            std::ptr::null(),
            line.as_mut_ptr(),
            std::ptr::null(),
            std::ptr::null(),
            TRUE,
            CREATE_SUSPENDED,
            std::ptr::null(),
            std::ptr::null(),
            &si,
            &mut pi,
        ) == FALSE
        {
            return Err(format!("cannot start it (error {})", last_error()));
        }
        if let Err(e) = inject(pi.hProcess, dlls) {
            TerminateProcess(pi.hProcess, 1);
            close_any(pi.hThread);
            close_any(pi.hProcess);
            return Err(e);
        }
        ResumeThread(pi.hThread);
        WaitForSingleObject(pi.hProcess, INFINITE);
        let mut code = 1u32;
        GetExitCodeProcess(pi.hProcess, &mut code);
        close_any(pi.hThread);
        close_any(pi.hProcess);
        Ok(code)
    }
}

/// Closes a handle of the face's own with the original `CloseHandle` where it is hooked (the
/// hook would look it up in the table again), the system's before the hooks are in.
fn close_any(h: HANDLE) {
    let f = orig::CloseHandle.load(Ordering::Acquire);
    // SAFETY: `h` is a handle this face holds; the trampoline is CloseHandle's.
    unsafe {
        if f == 0 {
            windows_sys::Win32::Foundation::CloseHandle(h);
        } else {
            std::mem::transmute::<usize, unsafe extern "system" fn(HANDLE) -> Bool>(f)(h);
        }
    }
}

/// Loads each of `dlls`, in order, into the suspended process `process` with a remote
/// `LoadLibraryW` (the same address in every process of the session).
fn inject(process: HANDLE, dlls: &[std::path::PathBuf]) -> Result<(), String> {
    use windows_sys::Win32::System::Diagnostics::Debug::WriteProcessMemory;
    use windows_sys::Win32::System::Memory::{
        VirtualAllocEx, MEM_COMMIT, MEM_RESERVE, PAGE_READWRITE,
    };
    use windows_sys::Win32::System::Threading::{
        CreateRemoteThread, GetExitCodeThread, WaitForSingleObject,
    };
    let load_library = proc_address("LoadLibraryW").ok_or("no LoadLibraryW")?;
    for dll in dlls {
        let path: Vec<u16> = dll
            .as_os_str()
            .to_string_lossy()
            .encode_utf16()
            .chain([0])
            .collect();
        let bytes = path.len() * 2;
        // SAFETY: memory of the child's, written with the path; a thread of the child's
        // that runs LoadLibraryW on it (LoadLibraryW's signature fits a thread routine's).
        let loaded = unsafe {
            let mem = VirtualAllocEx(
                process,
                std::ptr::null(),
                bytes,
                MEM_COMMIT | MEM_RESERVE,
                PAGE_READWRITE,
            );
            let mut written = 0usize;
            if mem.is_null()
                || WriteProcessMemory(
                    process,
                    mem,
                    path.as_ptr() as *const c_void,
                    bytes,
                    &mut written,
                ) == FALSE
            {
                false
            } else {
                let start: unsafe extern "system" fn(*mut c_void) -> u32 =
                    std::mem::transmute(load_library);
                let th = CreateRemoteThread(
                    process,
                    std::ptr::null(),
                    0,
                    Some(start),
                    mem,
                    0,
                    std::ptr::null_mut(),
                );
                if th.is_null() {
                    false
                } else {
                    WaitForSingleObject(th, 30_000);
                    let mut code = 0u32;
                    GetExitCodeThread(th, &mut code);
                    close_any(th);
                    code != 0
                }
            }
        };
        if !loaded {
            return Err(format!("cannot load {} into it", dll.display()));
        }
    }
    Ok(())
}

/// The DLLs a child gets: the stub beside this DLL if there is one, then this DLL.
fn own_dlls() -> Vec<std::path::PathBuf> {
    use windows_sys::Win32::System::LibraryLoader::{
        GetModuleFileNameW, GetModuleHandleExW, GET_MODULE_HANDLE_EX_FLAG_FROM_ADDRESS,
        GET_MODULE_HANDLE_EX_FLAG_UNCHANGED_REFCOUNT,
    };
    let mut module = std::ptr::null_mut();
    let mut buf = [0u16; 1024];
    // SAFETY: the address of a function of this DLL names its module; the buffer's length
    // is passed.
    let n = unsafe {
        if GetModuleHandleExW(
            GET_MODULE_HANDLE_EX_FLAG_FROM_ADDRESS | GET_MODULE_HANDLE_EX_FLAG_UNCHANGED_REFCOUNT,
            DllMain as *const () as *const u16,
            &mut module,
        ) == FALSE
        {
            return Vec::new();
        }
        GetModuleFileNameW(module, buf.as_mut_ptr(), buf.len() as u32) as usize
    };
    let me = std::path::PathBuf::from(String::from_utf16_lossy(&buf[..n.min(buf.len())]));
    let mut v = Vec::new();
    if let Some(stub) = me.parent().map(|d| d.join("bcryptprimitives.dll")) {
        if stub.exists() {
            v.push(stub);
        }
    }
    v.push(me);
    v
}

/// Children inherit the face: started suspended, given the DLL, then let go (unless their
/// parent asked for them suspended).
unsafe extern "system" fn CreateProcessW(
    app: *const u16,
    cmdline: *mut u16,
    pattr: *const c_void,
    tattr: *const c_void,
    inherit: Bool,
    flags: u32,
    env: *const c_void,
    cwd: *const u16,
    si: *const c_void,
    pi: *mut [usize; 3],
) -> Bool {
    const CREATE_SUSPENDED: u32 = 0x4;
    let f = original!(CreateProcessW: fn(*const u16, *mut u16, *const c_void, *const c_void, Bool, u32, *const c_void, *const u16, *const c_void, *mut [usize; 3]) -> Bool, FALSE);
    // SAFETY: the caller's arguments, with CREATE_SUSPENDED added.
    let ok = unsafe {
        f(
            app,
            cmdline,
            pattr,
            tattr,
            inherit,
            flags | CREATE_SUSPENDED,
            env,
            cwd,
            si,
            pi,
        )
    };
    if ok == FALSE || pi.is_null() {
        return ok;
    }
    // SAFETY: PROCESS_INFORMATION { hProcess, hThread, dwProcessId, dwThreadId }: the first
    // two are handles, read after the call filled them.
    let (process, thread) = unsafe { ((*pi)[0] as HANDLE, (*pi)[1] as HANDLE) };
    if let Err(e) = inject(process, &own_dlls()) {
        warn(&format!("a child runs without the DFS: {e}"));
    }
    if flags & CREATE_SUSPENDED == 0 {
        // SAFETY: the child's main thread, suspended above.
        unsafe { windows_sys::Win32::System::Threading::ResumeThread(thread) };
    }
    ok
}
