//! Stopping a run cleanly on SIGINT, SIGTERM or SIGHUP.
//!
//! The bench serves its own FUSE mounts from this very process and runs its workloads on them
//! from the main thread, so a signal must not end the process where it stands: its mounts and
//! servers would be left behind, and a thread caught in a FUSE call on a mount whose serving
//! threads are already gone sleeps uninterruptibly. So the signals are blocked before any
//! thread starts, and one thread waits for them (`sigwait`). It raises a flag that the
//! workloads check between operations; the run then tears down in order: I/O stopped, mounts
//! unmounted and their sessions joined, servers stopped. Should the I/O not stop within
//! [`GRACE`] (a call stuck on a server that does not answer), that thread aborts the bench's
//! FUSE connections (`/sys/fs/fuse/connections/N/abort`), which fails every call pending on
//! them at once. A second signal aborts them straight away.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard, Once};
use std::time::Duration;

use nix::sys::signal::{SigSet, Signal};

/// How long the workloads get to come out of the mounts after a signal.
pub const GRACE: Duration = Duration::from_secs(3);

/// The signals that stop a run.
const STOP_SIGNALS: [Signal; 3] = [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP];

static SIGNAL: AtomicI32 = AtomicI32::new(0);
static STATE: Mutex<State> = Mutex::new(State {
    io_busy: false,
    done: false,
    mounts: Vec::new(),
});
static CHANGED: Condvar = Condvar::new();
static INSTALL: Once = Once::new();

struct State {
    /// The workloads may be inside the mounts.
    io_busy: bool,
    /// The run is over and torn down: a signal now just ends the process.
    done: bool,
    /// The FUSE mounts this run made: mount point and `major:minor`.
    mounts: Vec<(PathBuf, String)>,
}

fn state() -> MutexGuard<'static, State> {
    STATE.lock().unwrap_or_else(|p| p.into_inner())
}

/// Blocks the stop signals in this thread (and so in every thread started after) and starts
/// the thread that takes them. Call it before any other thread starts; later calls do nothing.
pub fn install() -> Result<(), String> {
    let mut result = Ok(());
    INSTALL.call_once(|| {
        let mut set = SigSet::empty();
        for s in STOP_SIGNALS {
            set.add(s);
        }
        if let Err(e) = set.thread_block() {
            result = Err(format!("cannot block the stop signals: {e}"));
            return;
        }
        if let Err(e) = std::thread::Builder::new()
            .name("dfs-bench-signals".into())
            .spawn(move || waiter(set))
        {
            result = Err(format!("cannot start the signal thread: {e}"));
        }
    });
    result
}

fn waiter(set: SigSet) {
    loop {
        let Ok(sig) = set.wait() else { return };
        let first = SIGNAL
            .compare_exchange(0, sig as i32, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok();
        let st = state();
        if st.done {
            std::process::exit(128 + sig as i32);
        }
        if first {
            say(&format!(
                "{sig}: stopping (finishing the current operation, unmounting, stopping the servers)"
            ));
            let (st, waited) = CHANGED
                .wait_timeout_while(st, GRACE, |s| s.io_busy && !s.done)
                .unwrap_or_else(|p| p.into_inner());
            if waited.timed_out() {
                say(&format!(
                    "the workload is still in a mount after {GRACE:?}: aborting the FUSE connections"
                ));
                abort_all(&st);
            }
        } else {
            say(&format!("{sig} again: aborting the FUSE connections"));
            abort_all(&st);
        }
    }
}

/// The progress bar on the terminal, if one is shown: messages go above it.
static BAR: Mutex<Option<indicatif::ProgressBar>> = Mutex::new(None);

/// Shows this run's messages above `bar` (None: no bar any more).
pub fn set_bar(bar: Option<indicatif::ProgressBar>) {
    *BAR.lock().unwrap_or_else(|p| p.into_inner()) = bar;
}

fn say(what: &str) {
    use std::io::Write;
    let line = || {
        let _ = writeln!(io::stderr(), "dfs bench: {what}");
    };
    match BAR.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
        Some(bar) => bar.suspend(line),
        None => line(),
    }
}

/// The signal that stopped the run, if one did.
pub fn signal() -> Option<Signal> {
    Signal::try_from(SIGNAL.load(Ordering::SeqCst)).ok()
}

/// The error every operation returns once a stop signal came.
pub fn check() -> io::Result<()> {
    match signal() {
        Some(s) => Err(io::Error::other(format!("stopped by {s}"))),
        None => Ok(()),
    }
}

/// Marks the time the workloads may be inside the mounts; dropping it says they are out.
#[derive(Debug)]
pub struct IoPhase(());

impl IoPhase {
    /// The workloads are about to touch the mounts.
    pub fn begin() -> IoPhase {
        state().io_busy = true;
        IoPhase(())
    }
}

impl Drop for IoPhase {
    fn drop(&mut self) {
        state().io_busy = false;
        CHANGED.notify_all();
    }
}

/// The run is torn down: from now on a stop signal ends the process at once.
pub fn finish() {
    state().done = true;
    CHANGED.notify_all();
}

/// Remembers a FUSE mount of this run, so that a stuck run can abort its connection.
pub fn register_mount(mp: &Path) {
    if let Some(dev) = dev_of(mp) {
        state().mounts.push((mp.to_path_buf(), dev));
    }
}

/// Forgets a mount once it is gone (its connection number may then be reused by anyone).
pub fn unregister_mount(mp: &Path) {
    state().mounts.retain(|(p, _)| p != mp);
}

/// Aborts the FUSE connection of one of this run's mounts, if it is still mounted.
pub fn abort_mount(mp: &Path) {
    let st = state();
    for (p, dev) in &st.mounts {
        if p == mp {
            abort(p, dev);
        }
    }
}

fn abort_all(st: &State) {
    for (p, dev) in &st.mounts {
        abort(p, dev);
    }
}

/// Writes to `/sys/fs/fuse/connections/N/abort` (mounting fusectl there if needed), but only
/// while `mp` is still the mount with that device, so that nobody else's connection is hit.
fn abort(mp: &Path, dev: &str) {
    if dev_of(mp).as_deref() != Some(dev) {
        return;
    }
    let Some(minor) = dev.strip_prefix("0:") else {
        return;
    };
    let dir = Path::new("/sys/fs/fuse/connections");
    let file = dir.join(minor).join("abort");
    if !file.exists() {
        let _ = nix::mount::mount(
            Some("fusectl"),
            dir,
            Some("fusectl"),
            nix::mount::MsFlags::empty(),
            None::<&str>,
        );
    }
    if let Err(e) = std::fs::write(&file, "1") {
        say(&format!(
            "cannot abort the FUSE connection of {} ({}: {e})",
            mp.display(),
            file.display()
        ));
    }
}

/// The device of the topmost mount on `mp`, if anything is mounted there.
fn dev_of(mp: &Path) -> Option<String> {
    crate::mount::mountinfo()
        .into_iter()
        .filter(|(p, _, _)| p == mp)
        .map(|(_, dev, _)| dev)
        .next_back()
}

/// Whether anything is mounted on `mp`.
pub fn is_mounted(mp: &Path) -> bool {
    dev_of(mp).is_some()
}

/// The mount points at or below `dir`, deepest first.
pub fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = crate::mount::mountinfo()
        .into_iter()
        .map(|(p, _, _)| p)
        .filter(|p| p.starts_with(dir))
        .collect();
    v.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    v.dedup();
    v
}

/// Unmounts whatever is on `mp` (the bench's own mounts: the DFS, the in-memory file system,
/// sshfs); `lazy` detaches it even while busy. Not root: through fusermount3.
pub fn umount(mp: &Path, lazy: bool) -> io::Result<()> {
    let flags = if lazy {
        nix::mount::MntFlags::MNT_DETACH
    } else {
        nix::mount::MntFlags::empty()
    };
    match nix::mount::umount2(mp, flags) {
        Ok(()) => Ok(()),
        Err(nix::Error::EPERM) => {
            let st = std::process::Command::new("fusermount3")
                .arg(if lazy { "-uz" } else { "-u" })
                .arg(mp)
                .stdin(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status()?;
            if st.success() {
                Ok(())
            } else {
                Err(io::Error::other(format!(
                    "fusermount3 -u {}: {st}",
                    mp.display()
                )))
            }
        }
        Err(e) => Err(e.into()),
    }
}
