//! The system's ws2_32.dll: loaded by full path from the system directory, its functions in a
//! table the forwarding stubs jump through, and this DLL's own imports of ws2_32 pointed at it.
//!
//! Under Wine (and wherever an application-local ws2_32.dll is honoured) the name
//! "ws2_32.dll" means the forwarder beside the program, which leads back here: the standard
//! library's sockets, and the tcp backend's, would call this wrapper's own `connect`. So at
//! load time this DLL rewrites its own import address table for ws2_32 to the system DLL's
//! functions: what it calls is always the system's.

use std::sync::atomic::{AtomicUsize, Ordering};

use windows_sys::core::PCSTR;
use windows_sys::Win32::Foundation::{HMODULE, MAX_PATH};
use windows_sys::Win32::Networking::WinSock::{WSASetLastError, SOCKET_ERROR};
use windows_sys::Win32::System::Diagnostics::Debug::{
    IMAGE_DIRECTORY_ENTRY_IMPORT, IMAGE_NT_HEADERS64,
};
use windows_sys::Win32::System::LibraryLoader::{GetProcAddress, LoadLibraryW};
use windows_sys::Win32::System::Memory::{VirtualProtect, PAGE_READWRITE};
use windows_sys::Win32::System::SystemInformation::GetSystemDirectoryW;
use windows_sys::Win32::System::SystemServices::{
    IMAGE_DOS_HEADER, IMAGE_IMPORT_BY_NAME, IMAGE_IMPORT_DESCRIPTOR,
};

use crate::flags::WSAEOPNOTSUPP;

include!(concat!(env!("OUT_DIR"), "/exports.rs"));

/// The system's function for each name in [`NAMES`] (or [`missing`]), filled in once, at
/// load time, before anything can call a stub.
pub(crate) static REAL: [AtomicUsize; NAMES.len()] = [const { AtomicUsize::new(0) }; NAMES.len()];

/// What a stub of a function the system DLL lacks runs: fails as a socket call does (every
/// WinSock call's caller cleans its own stack on x64, so the arguments do not matter).
extern "system" fn missing() -> i32 {
    // SAFETY: sets this thread's WinSock error; no preconditions.
    unsafe { WSASetLastError(WSAEOPNOTSUPP) };
    SOCKET_ERROR
}

/// Loads the system's ws2_32.dll and fills [`REAL`]; then points this DLL's own ws2_32
/// imports at it. Called once, from `DllMain`.
pub(crate) fn init(me: HMODULE) -> Result<(), String> {
    let sys = load_system_dll()?;
    for (i, name) in NAMES.iter().enumerate() {
        let cname = format!("{name}\0");
        // SAFETY: `sys` is a loaded module and `cname` a NUL-terminated name.
        let f = unsafe { GetProcAddress(sys, cname.as_ptr()) };
        let addr = f.map_or(missing as *const () as usize, |f| f as *const () as usize);
        REAL[i].store(addr, Ordering::Release);
    }
    // SAFETY: `me` is this DLL's own module handle, mapped as the loader laid it out.
    unsafe { patch_imports(me, sys) }
}

fn load_system_dll() -> Result<HMODULE, String> {
    let mut buf = [0u16; MAX_PATH as usize];
    // SAFETY: the buffer holds MAX_PATH UTF-16 units, as its length says.
    let n = unsafe { GetSystemDirectoryW(buf.as_mut_ptr(), buf.len() as u32) } as usize;
    if n == 0 || n >= buf.len() {
        return Err("cannot find the system directory".into());
    }
    let mut path: Vec<u16> = buf[..n].to_vec();
    path.extend("\\ws2_32.dll\0".encode_utf16());
    // SAFETY: `path` is a NUL-terminated UTF-16 path.
    let h = unsafe { LoadLibraryW(path.as_ptr()) };
    if h.is_null() {
        return Err(format!(
            "cannot load {}",
            String::from_utf16_lossy(&path[..path.len() - 1])
        ));
    }
    Ok(h)
}

/// Rewrites every import of this module from ws2_32.dll to `sys`'s function of that name
/// (or ordinal).
///
/// # Safety
/// `me` must be the base of this module's image, mapped by the loader.
unsafe fn patch_imports(me: HMODULE, sys: HMODULE) -> Result<(), String> {
    let base = me as usize;
    // SAFETY: a loaded image starts with its DOS header, whose e_lfanew locates the NT
    // headers; both lie in the image's first, always mapped, page(s).
    let nt = unsafe {
        let dos = &*(base as *const IMAGE_DOS_HEADER);
        &*((base + dos.e_lfanew as usize) as *const IMAGE_NT_HEADERS64)
    };
    let dir = nt.OptionalHeader.DataDirectory[IMAGE_DIRECTORY_ENTRY_IMPORT as usize];
    if dir.VirtualAddress == 0 {
        return Ok(());
    }
    let mut desc = (base + dir.VirtualAddress as usize) as *const IMAGE_IMPORT_DESCRIPTOR;
    loop {
        // SAFETY: the import directory is an array of descriptors ended by a zeroed one,
        // inside the image.
        let d = unsafe { &*desc };
        if d.Name == 0 {
            return Ok(());
        }
        // SAFETY: `Name` is the RVA of a NUL-terminated module name in the image.
        let name = unsafe { std::ffi::CStr::from_ptr((base + d.Name as usize) as *const i8) };
        if name.to_bytes().eq_ignore_ascii_case(b"ws2_32.dll") {
            // SAFETY: `d` is one of this image's import descriptors.
            unsafe { patch_descriptor(base, d, sys)? };
        }
        // SAFETY: the next descriptor of the array (the zeroed one ends the loop).
        desc = unsafe { desc.add(1) };
    }
}

/// # Safety
/// `d` must be an import descriptor of the image at `base`.
unsafe fn patch_descriptor(
    base: usize,
    d: &IMAGE_IMPORT_DESCRIPTOR,
    sys: HMODULE,
) -> Result<(), String> {
    // SAFETY: reading the union's RVA of the lookup table (0 when there is none).
    let lookup_rva = unsafe { d.Anonymous.OriginalFirstThunk };
    let lookup_rva = if lookup_rva == 0 {
        d.FirstThunk
    } else {
        lookup_rva
    };
    let mut lookup = (base + lookup_rva as usize) as *const u64;
    let mut iat = (base + d.FirstThunk as usize) as *mut usize;
    loop {
        // SAFETY: the lookup table is an array of 64-bit entries ended by 0, in the image.
        let entry = unsafe { *lookup };
        if entry == 0 {
            return Ok(());
        }
        let f = if entry & (1 << 63) != 0 {
            // By ordinal: GetProcAddress takes the ordinal in the low word of the "name".
            // SAFETY: an ordinal lookup; `sys` is loaded.
            unsafe { GetProcAddress(sys, (entry & 0xffff) as usize as PCSTR) }
        } else {
            // SAFETY: the entry is the RVA of a hint and a NUL-terminated name in the image.
            unsafe {
                let by_name =
                    (base + (entry & 0x7fff_ffff) as usize) as *const IMAGE_IMPORT_BY_NAME;
                GetProcAddress(sys, (*by_name).Name.as_ptr() as PCSTR)
            }
        };
        let f = f.ok_or("the system ws2_32.dll lacks a function this DLL imports")?;
        let mut old = 0;
        // SAFETY: `iat` is one entry of this image's import address table: made writable for
        // the store, then given its protection back.
        unsafe {
            if VirtualProtect(iat.cast(), 8, PAGE_READWRITE, &mut old) == 0 {
                return Err("cannot make the import table writable".into());
            }
            iat.write_volatile(f as usize);
            VirtualProtect(iat.cast(), 8, old, &mut old);
            lookup = lookup.add(1);
            iat = iat.add(1);
        }
    }
}
