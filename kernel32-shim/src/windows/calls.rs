//! What the hooks ask: is this path or handle the DFS's, and what is the answer. Safe code:
//! the hooks in [`super::ffi`] have turned every pointer into a slice or value before they
//! get here.

use std::sync::{Arc, OnceLock};

use crate::win32::consts::*;
use crate::win32::handles::{Handles, Object};
use crate::win32::path::{is_sep, ERROR_INVALID_NAME};
use crate::win32::{env, CreateParams, FileInfo, Prefix, Win32Fs, WinError, WinFile, WinResult};

/// `ERROR_BAD_NETPATH`: what a call on the DFS gets when the server cannot be reached.
const ERROR_BAD_NETPATH: u32 = 53;

static HANDLES: OnceLock<Handles> = OnceLock::new();
static PREFIX: OnceLock<Option<Prefix>> = OnceLock::new();
static FS: OnceLock<Result<Win32Fs, String>> = OnceLock::new();

/// The process's table of DFS handles.
pub fn handles() -> &'static Handles {
    HANDLES.get_or_init(Handles::new)
}

/// The configured prefix (none: the face serves nothing).
pub fn prefix() -> Option<&'static Prefix> {
    PREFIX
        .get_or_init(|| match env::prefix() {
            Some(Ok(p)) => Some(p),
            Some(Err(e)) => {
                super::ffi::warn(&e);
                None
            }
            None => None,
        })
        .as_ref()
}

/// The connection to the server, made at the first call that needs it. A failure is said
/// once on standard error and makes every DFS call fail with `ERROR_BAD_NETPATH`.
pub fn fs() -> WinResult<&'static Win32Fs> {
    let r = FS.get_or_init(|| {
        let r = env::config().and_then(|c| Win32Fs::connect(&c));
        if let Err(e) = &r {
            super::ffi::warn(e);
        }
        r
    });
    r.as_ref().map_err(|_| ERROR_BAD_NETPATH)
}

/// The components of `path` below the prefix, if it is the DFS's.
pub fn route(path: Option<&[u16]>) -> Option<WinResult<Vec<String>>> {
    prefix()?.components(path?)
}

/// Whether `path` is the DFS's.
pub fn is_ours(path: &[u16]) -> bool {
    route(Some(path)).is_some()
}

/// A `FindFirstFileW` pattern of the DFS: its directory's components and the wildcard
/// pattern of its last component (`*` when it names the directory itself with a trailing
/// separator).
pub fn route_pattern(pattern: &[u16]) -> Option<WinResult<(Vec<String>, String)>> {
    let p = prefix()?;
    // The directory part goes through the prefix's normalisation; the last component may
    // hold wildcards, which a name may not.
    let cut = pattern.iter().rposition(|&c| is_sep(c));
    let (dir, pat) = match cut {
        Some(i) => (&pattern[..=i], &pattern[i + 1..]),
        None => (pattern, &[][..]),
    };
    // `M:*.txt`: the drive's root, with the pattern after the colon.
    let (dir, pat) = match (cut, p) {
        (None, Prefix::Drive(_)) if pattern.len() >= 2 => (&pattern[..2], &pattern[2..]),
        _ => (dir, pat),
    };
    let comps = p.components(dir)?;
    Some(comps.and_then(|c| {
        let pat = String::from_utf16(pat).map_err(|_| ERROR_INVALID_NAME)?;
        Ok((c, if pat.is_empty() { "*".to_string() } else { pat }))
    }))
}

/// `CreateFileW`: the object to hand out and the last-error value to leave.
pub fn create_file(
    comps: &[String],
    access: u32,
    share: u32,
    disposition: u32,
    flags: u32,
) -> WinResult<(Object, WinError)> {
    let c = fs()?.create_file(
        comps,
        CreateParams {
            access,
            share,
            disposition,
            flags,
        },
    )?;
    Ok((Object::File(c.file), c.last_error))
}

/// What `GetFileInformationByHandle` and its kin report.
#[derive(Debug)]
pub struct Info {
    /// The file's attributes.
    pub info: FileInfo,
    /// The volume's serial number.
    pub volume_serial: u32,
    /// The path below the volume (`\dir\file`), for `FileNameInfo`.
    pub volume_path: Vec<u16>,
}

/// The volume serial number of the DFS: the same for every file of one prefix.
pub fn volume_serial() -> u32 {
    let p = prefix().map(|p| p.display()).unwrap_or_default();
    p.iter().fold(0x811c_9dc5u32, |h, &c| {
        (h ^ u32::from(c)).wrapping_mul(0x0100_0193)
    })
}

/// The attributes of an open file.
pub fn info(f: &Arc<WinFile>) -> WinResult<Info> {
    let fs = fs()?;
    let info = fs.info(f)?;
    let mut volume_path = Vec::new();
    for c in fs.path_of(f) {
        volume_path.push(b'\\' as u16);
        volume_path.extend(c.encode_utf16());
    }
    if volume_path.is_empty() {
        volume_path.push(b'\\' as u16);
    }
    Ok(Info {
        info,
        volume_serial: volume_serial(),
        volume_path,
    })
}

/// `GetFileAttributesExW` of a DFS path.
pub fn attributes(comps: &[String]) -> WinResult<FileInfo> {
    fs()?.attributes(comps)
}

/// `GetFullPathNameW` of a DFS path.
pub fn full_path(comps: &[String]) -> WinResult<Vec<u16>> {
    Ok(prefix().ok_or(ERROR_INVALID_NAME)?.full_path(comps))
}

/// `FileRenameInfo`: to a full DFS path, to a name in the file's own directory, or to a
/// name relative to the directory handle `root`.
pub fn rename_handle(f: &Arc<WinFile>, root: usize, name: &[u16], replace: bool) -> WinResult<()> {
    let fs = fs()?;
    let to = if root != 0 {
        let dir = handles().file(root).ok_or(ERROR_INVALID_HANDLE)?;
        fs.below(&dir, name)?
    } else if let Some(r) = route(Some(name)) {
        r?
    } else if name.iter().any(|&c| is_sep(c) || c == b':' as u16) {
        // A path elsewhere: a rename cannot leave the volume.
        return Err(ERROR_NOT_SAME_DEVICE);
    } else {
        let mut comps = fs.path_of(f);
        comps.pop();
        comps.push(String::from_utf16(name).map_err(|_| ERROR_INVALID_NAME)?);
        comps
    };
    fs.rename_handle(f, &to, replace)
}

/// Copies a file (from, to, fail if it exists), for moves across volumes.
pub type CopyFn = dyn Fn(&[u16], &[u16], bool) -> WinResult<()>;

/// `MoveFileExW` where either path is the DFS's (`None`: neither is; the system moves it).
/// Between the DFS and another volume it copies and deletes with `MOVEFILE_COPY_ALLOWED`,
/// as Windows does, else fails with `ERROR_NOT_SAME_DEVICE`.
pub fn move_file(
    from: Option<&[u16]>,
    to: Option<&[u16]>,
    flags: u32,
    copy: &CopyFn,
) -> Option<WinResult<()>> {
    let (from, to) = (from?, to?);
    match (route(Some(from)), route(Some(to))) {
        (None, None) => None,
        (Some(a), Some(b)) => Some((|| fs()?.move_file(&a?, &b?, flags))()),
        (a, _) => Some((|| {
            if flags & MOVEFILE_COPY_ALLOWED == 0 {
                return Err(ERROR_NOT_SAME_DEVICE);
            }
            copy(from, to, flags & MOVEFILE_REPLACE_EXISTING == 0)?;
            match a {
                Some(c) => fs()?.delete_file(&c?),
                // The source is another volume's: the system deletes it (through the hook,
                // which passes it on).
                None => Err(ERROR_NOT_SUPPORTED),
            }
        })()),
    }
}

/// The `NTSTATUS` for a Win32 error, for the hooks of ntdll's calls (Rust's standard
/// library reads and writes with `NtReadFile`/`NtWriteFile`, and `remove_dir_all` opens with
/// `NtOpenFile`): the status the system maps back to the same error.
pub fn nt_status(e: WinError) -> i32 {
    let s: u32 = match e {
        ERROR_FILE_NOT_FOUND => 0xC000_0034,
        ERROR_PATH_NOT_FOUND => 0xC000_003A,
        ERROR_ACCESS_DENIED => 0xC000_0022,
        ERROR_INVALID_HANDLE => 0xC000_0008,
        ERROR_SHARING_VIOLATION => 0xC000_0043,
        ERROR_FILE_EXISTS | ERROR_ALREADY_EXISTS => 0xC000_0035,
        ERROR_DIR_NOT_EMPTY => 0xC000_0101,
        ERROR_INVALID_PARAMETER | ERROR_NEGATIVE_SEEK => 0xC000_000D,
        ERROR_INVALID_NAME => 0xC000_0033,
        ERROR_NOT_SUPPORTED => 0xC000_00BB,
        ERROR_DIRECTORY => 0xC000_0103,
        ERROR_INVALID_FUNCTION => 0xC000_0010,
        ERROR_NOT_SAME_DEVICE => 0xC000_00D4,
        ERROR_BAD_NETPATH => 0xC000_00BE,
        112 => 0xC000_007F, // ERROR_DISK_FULL: STATUS_DISK_FULL
        19 => 0xC000_00A2,  // ERROR_WRITE_PROTECT: STATUS_MEDIA_WRITE_PROTECTED
        _ => 0xC000_0001,   // STATUS_UNSUCCESSFUL
    };
    s as i32
}

/// `NtCreateFile`/`NtOpenFile` of a DFS name: `rel` relative to the DFS directory `root`,
/// or an absolute `\??\M:\…` name. `None`: not the DFS's.
pub fn nt_route(root: usize, name: &[u16]) -> Option<WinResult<Vec<String>>> {
    if root != 0 {
        let dir = handles().file(root)?;
        return Some(fs().and_then(|fs| fs.below(&dir, name)));
    }
    let nt: Vec<u16> = r"\??\".encode_utf16().collect();
    route(Some(name.strip_prefix(&nt[..])?))
}

/// `NtCreateFile` of a DFS name: its disposition and options mapped to `CreateFileW`'s.
/// The object and whether the file was there before.
pub fn nt_create(
    comps: &[String],
    access: u32,
    share: u32,
    disposition: u32,
    options: u32,
) -> WinResult<(Object, bool)> {
    const FILE_DIRECTORY_FILE: u32 = 0x1;
    const FILE_NON_DIRECTORY_FILE: u32 = 0x40;
    const FILE_DELETE_ON_CLOSE: u32 = 0x1000;
    const FILE_OPEN_REPARSE_POINT: u32 = 0x0020_0000;
    let disposition = match disposition {
        0 | 5 => CREATE_ALWAYS, // FILE_SUPERSEDE, FILE_OVERWRITE_IF
        1 => OPEN_EXISTING,     // FILE_OPEN
        2 => CREATE_NEW,        // FILE_CREATE
        3 => OPEN_ALWAYS,       // FILE_OPEN_IF
        4 => TRUNCATE_EXISTING, // FILE_OVERWRITE
        _ => return Err(ERROR_INVALID_PARAMETER),
    };
    if options & FILE_DIRECTORY_FILE != 0 && disposition != OPEN_EXISTING {
        // Directories are made with CreateDirectoryW here.
        return Err(ERROR_NOT_SUPPORTED);
    }
    let mut flags = FILE_FLAG_BACKUP_SEMANTICS;
    if options & FILE_DELETE_ON_CLOSE != 0 {
        flags |= FILE_FLAG_DELETE_ON_CLOSE;
    }
    if options & FILE_OPEN_REPARSE_POINT != 0 {
        flags |= FILE_FLAG_OPEN_REPARSE_POINT;
    }
    let c = fs()?.create_file(
        comps,
        CreateParams {
            access,
            share,
            disposition,
            flags,
        },
    )?;
    if options & FILE_DIRECTORY_FILE != 0 && !c.file.is_directory() {
        return Err(ERROR_DIRECTORY);
    }
    if options & FILE_NON_DIRECTORY_FILE != 0 && c.file.is_directory() {
        return Err(ERROR_ACCESS_DENIED);
    }
    let existed = c.last_error == ERROR_ALREADY_EXISTS || disposition == OPEN_EXISTING;
    Ok((Object::File(c.file), existed))
}
