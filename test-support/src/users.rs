//! Real unprivileged accounts, so that tests run attacks and everyday use as the users who
//! would make them, not as root with everything trusted.
//!
//! Accounts are made once per machine with `useradd --system` (no home, no login shell) and
//! kept: creating and deleting them around every test would race between test binaries.
//! Their names start with `dfs-test-`.

use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

/// A local account the tests act as.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TestUser {
    /// Its login name (`dfs-test-…`).
    pub name: String,
    /// Its user id.
    pub uid: u32,
    /// Its primary group id.
    pub gid: u32,
}

fn lookup(name: &str) -> Option<TestUser> {
    let out = Command::new("getent")
        .args(["passwd", name])
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let line = String::from_utf8(out.stdout).ok()?;
    let f: Vec<&str> = line.trim().split(':').collect();
    Some(TestUser {
        name: name.to_owned(),
        uid: f.get(2)?.parse().ok()?,
        gid: f.get(3)?.parse().ok()?,
    })
}

/// The account `dfs-test-{role}`, created if it does not exist yet. Needs root.
pub fn test_user(role: &str) -> TestUser {
    static MAKING: Mutex<()> = Mutex::new(());
    let name = format!("dfs-test-{role}");
    let _one_at_a_time = MAKING.lock().unwrap_or_else(|p| p.into_inner());
    for attempt in 0..50 {
        if let Some(u) = lookup(&name) {
            return u;
        }
        // Another test binary may hold the passwd lock: try again shortly.
        let out = Command::new("useradd")
            .args([
                "--system",
                "--no-create-home",
                "--home-dir",
                "/nonexistent",
                "--shell",
                "/usr/sbin/nologin",
                "--user-group",
                &name,
            ])
            .output()
            .expect("useradd (package passwd) is needed to run tests as other users");
        if out.status.success() {
            continue;
        }
        if attempt == 49 {
            panic!(
                "useradd {name} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    lookup(&name).expect("the account just made")
}

/// A copy of this test binary that any user may run, made once per process.
pub(crate) fn shared_exe() -> PathBuf {
    static EXE: OnceLock<PathBuf> = OnceLock::new();
    EXE.get_or_init(|| {
        use std::os::unix::fs::PermissionsExt;
        let me = std::env::current_exe().unwrap();
        let dir = std::env::temp_dir().join(format!("dfs-test-exe-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        let copy = dir.join(me.file_name().unwrap());
        std::fs::copy(&me, &copy).unwrap();
        std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o755)).unwrap();
        cleanup_at_exit(dir);
        copy
    })
    .clone()
}

/// Removes the copied binary's folder when the test process exits (libtest exits without
/// dropping statics, so a plain guard would never run).
fn cleanup_at_exit(dir: PathBuf) {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    let _ = DIR.set(dir);
    extern "C" fn remove() {
        if let Some(d) = DIR.get() {
            let _ = std::fs::remove_dir_all(d);
        }
    }
    // SAFETY: `remove` is a plain `extern "C" fn()` that touches only a OnceLock set before
    // registration; atexit handlers run once, on the main thread, at exit.
    unsafe {
        libc_atexit(remove);
    }
}

extern "C" {
    #[link_name = "atexit"]
    fn libc_atexit(f: extern "C" fn()) -> i32;
}

/// Runs a shell-free command as `user` (no groups, no capabilities) and returns its output.
pub fn run_as(user: &TestUser, program: &str, args: &[&str]) -> Output {
    Command::new("setpriv")
        .args([
            "--reuid",
            &user.uid.to_string(),
            "--regid",
            &user.gid.to_string(),
            "--clear-groups",
            "--inh-caps=-all",
            "--",
            program,
        ])
        .args(args)
        .current_dir("/")
        .env("HOME", "/")
        .output()
        .unwrap_or_else(|e| panic!("running {program} as {}: {e}", user.name))
}
