//! Processes: `fork`, `exec`, `posix_spawn`, exit, and the descriptor sweeps programs make
//! before `exec` (`close_range`, `closefrom`).
//!
//! Descriptions are counted per holder in the run's table, so every way a process comes
//! or goes says what it holds:
//! - **fork**: the parent's holdings are given to a *token* before the fork and moved to
//!   the child's pid after it (by whichever of the two gets there first), so a child that
//!   exits at once never gives up what was not recorded yet. The child forgets the
//!   parent's connections (their rings are the parent's shared memory) and connects anew.
//!   `vfork` is served as `fork` (always allowed: a `vfork` child may only `exec` or exit).
//! - **exec**: the new image finds its inherited placeholders at start-up and says what it
//!   holds. The program's `envp` may have lost the run's variables (`env -i`, a build
//!   tool's clean environment): they are put back, `LD_PRELOAD` included, so the new image
//!   is under the shim too. `execl*` and `execv`/`execvp` in glibc call `execve`
//!   internally, past this library, with the process's own environment, which has them.
//! - **posix_spawn**: as fork, with the token passed in the child's environment.
//! - **exit**: streams of DFS files are flushed (atexit handlers run before glibc flushes
//!   stdio) and the process's holdings given up; `_exit` gives them up without flushing.
//!   A process that dies without either is found out by the table's collection, which any
//!   process of the run runs at most once a second when it opens a file.

use std::ffi::{c_int, c_uint};
use std::sync::atomic::Ordering;

use super::ffi::{self, CStrPtr, Opaque, Out, StrArray, StrArrayOwned};
use super::{enter, inside, vars, Shim, SHIM};
use crate::table::SlotId;

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Gives up the holdings of processes of the run that are gone, at most once a second.
pub(crate) fn collect(shim: &Shim) {
    let now = now_secs();
    if !shim.table.gc_due(now) {
        return;
    }
    let freed = {
        let g = shim.lock();
        shim.table.gc(&g, now, ffi::alive)
    };
    shim.release(freed);
}

/// Holds everything this process holds once more, under a fresh token (for a child about
/// to be made). Only descriptors the child inherits count when `inheritable_only`.
fn hold_for_child(shim: &Shim, inheritable_only: bool) -> (u64, Vec<SlotId>) {
    let token = shim.table.temp_owner(now_secs());
    let mut counts: std::collections::HashMap<SlotId, u32> = Default::default();
    for (fd, o) in shim.fds.all() {
        if inheritable_only {
            let f = ffi::fcntl64(fd, libc::F_GETFD, 0);
            if f < 0 || f & libc::FD_CLOEXEC != 0 {
                continue;
            }
        }
        *counts.entry(o.id).or_default() += 1;
    }
    let g = shim.lock();
    for (id, n) in &counts {
        shim.table.hold(&g, token, *id, i64::from(*n));
    }
    (token, counts.into_keys().collect())
}

/// Gives up a token's holdings (the child was not made).
fn drop_token(shim: &Shim, token: u64) {
    let freed = {
        let g = shim.lock();
        shim.table.drop_owner(&g, token)
    };
    shim.release(freed);
}

/// `fork(2)`.
#[no_mangle]
pub extern "C" fn fork() -> c_int {
    let Some(e) = enter() else { return ffi::fork() };
    let shim = e.shim;
    // Other threads' shim calls finish first, and none starts until the fork is done: the
    // child must not inherit a half-made table update or a connection mid-request.
    drop(e);
    let gate = inside(|| shim.gate.write().unwrap_or_else(|p| p.into_inner()));
    let (token, slots) = inside(|| hold_for_child(shim, false));
    let pid = ffi::fork();
    let err = ffi::errno();
    inside(|| match pid {
        0 => {
            let me = std::process::id();
            shim.pid.store(me, Ordering::Relaxed);
            shim.dfs.forget_clients_after_fork();
            let g = shim.lock();
            shim.table.rekey(&g, token, u64::from(me), &slots);
        }
        p if p > 0 => {
            let g = shim.lock();
            shim.table.rekey(&g, token, p as u64, &slots);
        }
        _ => drop_token(shim, token),
    });
    drop(gate);
    ffi::set_errno(err);
    pid
}

/// `vfork(2)`, served as `fork`.
#[no_mangle]
pub extern "C" fn vfork() -> c_int {
    fork()
}

/// The run's variables, as this process has them now, for a program's environment.
fn run_vars(shim: &Shim) -> Vec<(&'static str, Option<Vec<u8>>)> {
    use std::os::unix::ffi::OsStringExt;
    let get = |k: &str| std::env::var_os(k).map(|v| v.into_vec());
    let mut out: Vec<(&'static str, Option<Vec<u8>>)> = [
        vars::ADDR,
        vars::PREFIX,
        vars::SECRET_FILE,
        vars::TABLE,
        vars::SESSION,
        vars::CWD,
        vars::LIB,
        vars::LOCKS,
        vars::TIMEOUT,
    ]
    .into_iter()
    .map(|k| (k, get(k)))
    .collect();
    let lib = shim.env.lib.clone().map(String::into_bytes);
    out.push(("LD_PRELOAD", lib));
    out
}

/// `envp` with the run's variables put back (and `extra` added).
fn fixed_env(shim: &Shim, envp: StrArray<'_>, extra: &[(&str, Vec<u8>)]) -> StrArrayOwned {
    let ours = run_vars(shim);
    let mut items: Vec<Vec<u8>> = Vec::new();
    let mut preload: Option<Vec<u8>> = None;
    for s in envp.strings() {
        let name = s.split(|&b| b == b'=').next().unwrap_or_default();
        if name == b"LD_PRELOAD" {
            preload = Some(s.get(11..).unwrap_or_default().to_vec());
            continue;
        }
        if name == vars::INHERIT.as_bytes()
            || ours.iter().any(|(k, _)| k.as_bytes() == name)
            || extra.iter().any(|(k, _)| k.as_bytes() == name)
        {
            continue;
        }
        items.push(s.to_vec());
    }
    for (k, v) in ours {
        let Some(v) = v else { continue };
        if k == "LD_PRELOAD" {
            // Ours first, then whatever else the program preloads.
            let mut p = v.clone();
            if let Some(old) = preload.take() {
                for part in old.split(|&b| b == b':' || b == b' ') {
                    if !part.is_empty() && part != v.as_slice() {
                        p.push(b':');
                        p.extend_from_slice(part);
                    }
                }
            }
            items.push([b"LD_PRELOAD=".as_slice(), &p].concat());
            continue;
        }
        items.push([k.as_bytes(), b"=", &v].concat());
    }
    if let Some(old) = preload {
        items.push([b"LD_PRELOAD=".as_slice(), &old].concat());
    }
    for (k, v) in extra {
        items.push([k.as_bytes(), b"=", v].concat());
    }
    StrArrayOwned::new(&items)
}

/// `execve(2)`.
#[no_mangle]
pub extern "C" fn execve(path: CStrPtr<'_>, argv: StrArray<'_>, envp: StrArray<'_>) -> c_int {
    let Some(e) = enter() else {
        return ffi::execve(path, argv, envp);
    };
    let env = fixed_env(e.shim, envp, &[]);
    drop(e);
    ffi::execve(path, argv, StrArray::of(&env))
}

/// `execvpe(3)`.
#[no_mangle]
pub extern "C" fn execvpe(file: CStrPtr<'_>, argv: StrArray<'_>, envp: StrArray<'_>) -> c_int {
    let Some(e) = enter() else {
        return ffi::execvpe(file, argv, envp);
    };
    let env = fixed_env(e.shim, envp, &[]);
    drop(e);
    ffi::execvpe(file, argv, StrArray::of(&env))
}

/// `fexecve(3)`: a DFS descriptor cannot be executed (its placeholder is no program; the
/// kernel says so), a local one is run with the run's variables.
#[no_mangle]
pub extern "C" fn fexecve(fd: c_int, argv: StrArray<'_>, envp: StrArray<'_>) -> c_int {
    let Some(e) = enter() else {
        return ffi::fexecve(fd, argv, envp);
    };
    let env = fixed_env(e.shim, envp, &[]);
    drop(e);
    ffi::fexecve(fd, argv, StrArray::of(&env))
}

fn spawn(
    pid: Out<'_, c_int>,
    argv: StrArray<'_>,
    envp: StrArray<'_>,
    real: impl FnOnce(StrArray<'_>) -> c_int,
) -> c_int {
    let Some(e) = enter() else { return real(envp) };
    let shim = e.shim;
    let (token, _) = hold_for_child(shim, true);
    let env = fixed_env(
        shim,
        envp,
        &[(vars::INHERIT, token.to_string().into_bytes())],
    );
    drop(e);
    let _ = (pid, argv);
    let r = real(StrArray::of(&env));
    if r != 0 {
        inside(|| drop_token(shim, token));
    }
    r
}

/// `posix_spawn(3)`.
#[no_mangle]
pub extern "C" fn posix_spawn(
    pid: Out<'_, c_int>,
    path: CStrPtr<'_>,
    fa: Opaque,
    attr: Opaque,
    argv: StrArray<'_>,
    envp: StrArray<'_>,
) -> c_int {
    spawn(pid, argv, envp, |env| {
        ffi::posix_spawn(pid, path, fa, attr, argv, env)
    })
}

/// `posix_spawnp(3)`.
#[no_mangle]
pub extern "C" fn posix_spawnp(
    pid: Out<'_, c_int>,
    file: CStrPtr<'_>,
    fa: Opaque,
    attr: Opaque,
    argv: StrArray<'_>,
    envp: StrArray<'_>,
) -> c_int {
    spawn(pid, argv, envp, |env| {
        ffi::posix_spawnp(pid, file, fa, attr, argv, env)
    })
}

/// Gives up what this process holds (at exit).
fn give_up_all(shim: &Shim) {
    let freed = {
        let g = shim.lock();
        shim.table.drop_owner(&g, shim.me())
    };
    shim.release(freed);
}

/// Registered with `atexit` at start-up: the streams of DFS files are flushed while the
/// descriptions are still held, then the process lets go of them.
pub(crate) extern "C" fn at_exit() {
    let Some(shim) = SHIM.get() else { return };
    if super::stdio::any_ours(shim) {
        ffi::fflush(None);
    }
    if let Some(_e) = enter() {
        give_up_all(shim);
    }
}

/// `_exit(2)`: the holdings are given up (no streams are flushed, as `_exit` promises).
#[no_mangle]
pub extern "C" fn _exit(code: c_int) -> ! {
    if let Some(e) = enter() {
        give_up_all(e.shim);
    }
    ffi::_exit(code);
    // The C library's `_exit` does not return; if it could not be found, nothing may run on.
    std::process::abort()
}

/// `_Exit(2)`.
#[no_mangle]
pub extern "C" fn _Exit(code: c_int) -> ! {
    _exit(code)
}

/// Moves the run's table to another descriptor number: the program wants its number
/// (`dup2` onto it). The variable that tells children where it is follows.
pub(crate) fn move_table(shim: &Shim) {
    let old = shim.env.table_fd.load(Ordering::Relaxed);
    if old < 0 {
        return;
    }
    let new = ffi::fcntl64(old, libc::F_DUPFD, 512);
    if new < 0 {
        // Nowhere to move it: the program's dup2 replaces it, and this process's children
        // find the table through the keeper (if there is one).
        shim.env.table_fd.store(-1, Ordering::Relaxed);
        return;
    }
    shim.env.table_fd.store(new, Ordering::Relaxed);
    let rest = std::env::var(vars::TABLE)
        .ok()
        .and_then(|v| v.split_once(':').map(|(_, r)| r.to_string()));
    let value = match rest {
        Some(r) => format!("{new}:{r}"),
        None => new.to_string(),
    };
    std::env::set_var(vars::TABLE, value);
}

/// Closes DFS descriptors in `first..=last` as `close` would, and returns the ranges of
/// numbers left for the C library (the table's number taken out).
fn sweep(shim: &Shim, first: c_uint, last: c_uint, only_cloexec: bool) -> Vec<(c_uint, c_uint)> {
    if !only_cloexec {
        for (fd, o) in shim.fds.all() {
            if let Ok(u) = c_uint::try_from(fd) {
                if (first..=last).contains(&u) {
                    shim.close_fd(fd, o);
                }
            }
        }
    }
    let t = shim.env.table_fd.load(Ordering::Relaxed);
    match c_uint::try_from(t) {
        Ok(t) if (first..=last).contains(&t) => {
            let mut v = Vec::new();
            if t > first {
                v.push((first, t - 1));
            }
            if t < last {
                v.push((t + 1, last));
            }
            v
        }
        _ => vec![(first, last)],
    }
}

/// `close_range(2)`: DFS descriptors in the range are closed as `close` closes them, and
/// the run's table stays open.
#[no_mangle]
pub extern "C" fn close_range(first: c_uint, last: c_uint, flags: c_int) -> c_int {
    let Some(e) = enter() else {
        return ffi::close_range(first, last, flags);
    };
    if first > last {
        return ffi::close_range(first, last, flags);
    }
    let cloexec = flags & libc::CLOSE_RANGE_CLOEXEC as c_int != 0;
    let ranges = sweep(e.shim, first, last, cloexec);
    for (a, b) in ranges {
        let r = ffi::close_range(a, b, flags);
        if r != 0 {
            return r;
        }
    }
    0
}

/// `closefrom(3)`.
#[no_mangle]
pub extern "C" fn closefrom(first: c_int) {
    let Some(e) = enter() else {
        return ffi::closefrom(first);
    };
    let Ok(first) = c_uint::try_from(first) else {
        return;
    };
    for (a, b) in sweep(e.shim, first, c_uint::MAX, false) {
        ffi::close_range(a, b, 0);
    }
}

/// `umask(2)`: the shim applies the mask to the modes of DFS files it creates, so it
/// keeps a copy.
#[no_mangle]
pub extern "C" fn umask(mask: ffi::mode_t) -> ffi::mode_t {
    let old = ffi::umask(mask);
    if let Some(shim) = SHIM.get() {
        shim.umask.store(mask & 0o777, Ordering::Relaxed);
    }
    old
}
