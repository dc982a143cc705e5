//! Mounting and unmounting: mount options, the foreground FUSE daemon, the background start
//! that `dfs mount` does by default, and a clean unmount (also of a mount whose daemon died).

use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dfs_proto::auth::Secret;
use fuser::{Config, MountOption, SessionACL};
use nix::sys::signal::{SigSet, Signal};

use crate::fuse::{CacheTimes, DfsFuse};
use crate::{Client, ConnectError, ConnectOptions};

/// What `-o` can say.
#[derive(Clone, Debug)]
pub struct MountOptions {
    /// Mount read-only (`ro`).
    pub read_only: bool,
    /// Kernel cache timeouts (`attr_timeout=SECS`, `entry_timeout=SECS` without notices from
    /// the server, `cache_timeout=SECS` with them).
    pub times: CacheTimes,
    /// Let users other than the one who mounted in (`allow_other`). On by default when root
    /// mounts, as for any system mount: the kernel checks permissions against the files' modes
    /// (`default_permissions`) and the server runs each request as its caller.
    pub allow_other: bool,
    /// The shared secret's file (`secret=FILE`, or `--secret`).
    pub secret: Option<PathBuf>,
    /// How long a call waits for the server, also across a restart (`timeout=SECS`); then
    /// it fails with `ENOTCONN`.
    pub timeout: Duration,
    /// Threads serving the kernel (`threads=N`).
    pub threads: usize,
    /// Let the kernel keep a file's cached pages across opens while the file is unchanged
    /// (`keep_cache`, the default; `nokeep_cache` re-reads from the server at every open).
    pub keep_cache: bool,
    /// Use the copying socket calls instead of reading in place (`copy_path`; for measuring).
    pub copy_path: bool,
    /// Let the kernel read files opened read-only from the server's page cache itself when
    /// the server is on this host (`passthrough`, the default; `nopassthrough` brings every
    /// read through the rings). Needs root and Linux 6.9 or later; otherwise reads come
    /// through the rings.
    pub passthrough: bool,
    /// Kernel readahead in KiB (`readahead=KIB`, default 4096): with the kernel's default
    /// of 128 KiB, sequential reads would arrive in 128 KiB requests instead of 1 MiB ones,
    /// and with 1024 one at a time; 4096 keeps about four 1 MiB requests in flight, so that
    /// the server copies one block while this side hands the previous one to the kernel.
    pub readahead_kib: u32,
    /// Options passed to the kernel as they are (`nosuid`, `nodev`, `noexec`, `noatime`, …).
    pub kernel: Vec<MountOption>,
}

impl Default for MountOptions {
    fn default() -> MountOptions {
        MountOptions {
            read_only: false,
            times: CacheTimes::default(),
            allow_other: nix::unistd::geteuid().is_root(),
            secret: None,
            timeout: Duration::from_secs(30),
            threads: 4,
            readahead_kib: 4096,
            keep_cache: true,
            copy_path: false,
            passthrough: true,
            kernel: Vec::new(),
        }
    }
}

fn seconds(key: &str, v: &str) -> Result<Duration, String> {
    v.parse::<f64>()
        .ok()
        .filter(|s| s.is_finite() && *s >= 0.0 && *s < 1e9)
        .map(Duration::from_secs_f64)
        .ok_or_else(|| format!("{key}={v}: not a number of seconds"))
}

impl MountOptions {
    /// Adds the options of one `-o` argument (comma separated).
    pub fn parse_into(&mut self, list: &str) -> Result<(), String> {
        for opt in list.split(',').map(str::trim).filter(|o| !o.is_empty()) {
            let (key, val) = match opt.split_once('=') {
                Some((k, v)) => (k, Some(v)),
                None => (opt, None),
            };
            match (key, val) {
                ("ro", None) => self.read_only = true,
                ("rw", None) => self.read_only = false,
                ("allow_other", None) => self.allow_other = true,
                ("owner_only", None) => self.allow_other = false,
                ("keep_cache", None) => self.keep_cache = true,
                ("nokeep_cache", None) => self.keep_cache = false,
                ("copy_path", None) => self.copy_path = true,
                ("passthrough", None) => self.passthrough = true,
                ("nopassthrough", None) => self.passthrough = false,
                ("attr_timeout", Some(v)) => self.times.attr = seconds(key, v)?,
                ("entry_timeout", Some(v)) => self.times.entry = seconds(key, v)?,
                ("cache_timeout", Some(v)) => self.times.coherent = seconds(key, v)?,
                ("timeout", Some(v)) => {
                    self.timeout = seconds(key, v)?.max(Duration::from_millis(100))
                }
                ("secret", Some(v)) => self.secret = Some(PathBuf::from(v)),
                ("threads", Some(v)) => {
                    self.threads = v
                        .parse()
                        .ok()
                        .filter(|n| (1..=64).contains(n))
                        .ok_or_else(|| format!("threads={v}: 1 to 64"))?
                }
                ("readahead", Some(v)) => {
                    self.readahead_kib = v
                        .parse()
                        .ok()
                        .filter(|n| (4..=65536).contains(n))
                        .ok_or_else(|| format!("readahead={v}: 4 to 65536 KiB"))?
                }
                ("nosuid", None) => self.kernel.push(MountOption::NoSuid),
                ("suid", None) => self.kernel.push(MountOption::Suid),
                ("nodev", None) => self.kernel.push(MountOption::NoDev),
                ("dev", None) => self.kernel.push(MountOption::Dev),
                ("noexec", None) => self.kernel.push(MountOption::NoExec),
                ("exec", None) => self.kernel.push(MountOption::Exec),
                ("noatime", None) => self.kernel.push(MountOption::NoAtime),
                ("atime", None) => self.kernel.push(MountOption::Atime),
                ("sync", None) => self.kernel.push(MountOption::Sync),
                ("async", None) => self.kernel.push(MountOption::Async),
                ("dirsync", None) => self.kernel.push(MountOption::DirSync),
                // What mount(8) and fstab say to themselves.
                (
                    "defaults" | "auto" | "noauto" | "user" | "nouser" | "users" | "_netdev"
                    | "nofail",
                    None,
                ) => {}
                (k, _) if k.starts_with("x-") || k == "comment" => {}
                _ => {
                    return Err(format!(
                        "unknown mount option {opt:?} (see dfs mount --help)"
                    ))
                }
            }
        }
        Ok(())
    }
}

/// The subtype of a dfs mount: `/proc/mounts` shows its type as `fuse.dfs`, and that is how
/// `dfs umount` and everything else here tell a dfs mount from any other.
pub const SUBTYPE: &str = "dfs";

/// The kernel-side FUSE configuration every mount of ours uses (the bench's in-memory file
/// system too, under a subtype of its own, so that both are measured alike).
pub fn fuse_config(fsname: &str, subtype: &str, read_only: bool, opts: &MountOptions) -> Config {
    // fuser mounts by itself as root and gives the kernel only kernel options, where the
    // subtype must then go; through fusermount3 (not root) the subtype option does it.
    let subtype = if nix::unistd::geteuid().is_root() {
        MountOption::CUSTOM(format!("subtype={subtype}"))
    } else {
        MountOption::Subtype(subtype.into())
    };
    let mut mount_options = vec![
        MountOption::FSName(fsname.to_string()),
        subtype,
        MountOption::DefaultPermissions,
        if read_only {
            MountOption::RO
        } else {
            MountOption::RW
        },
    ];
    mount_options.extend(opts.kernel.iter().cloned());
    let mut config = Config::default();
    config.mount_options = mount_options;
    config.acl = if opts.allow_other {
        SessionACL::All
    } else {
        SessionACL::Owner
    };
    config.n_threads = Some(opts.threads);
    config.clone_fd = true;
    config
}

/// Connects to `addr` as the mount options say (secret, timeout, copy path).
pub fn connect(addr: &str, opts: &MountOptions) -> Result<Client, String> {
    let mut copts = ConnectOptions::new().map_err(|e| e.to_string())?;
    copts.timeout = opts.timeout;
    copts.copy_path = opts.copy_path;
    if let Some(p) = &opts.secret {
        let bytes = std::fs::read(p).map_err(|e| {
            format!(
                "cannot read the secret {}: {}",
                p.display(),
                dfs_proto::errno::plain(&e)
            )
        })?;
        copts.secret =
            Some(Secret::from_file_bytes(&bytes).map_err(|e| format!("{}: {e}", p.display()))?);
    }
    Client::connect(addr, copts)
        .map_err(|e| format!("cannot connect to {addr}: {}", why_not_connected(&e)))
}

/// What a user should know about a failed connection, and what to check.
fn why_not_connected(e: &ConnectError) -> String {
    let ConnectError::Io(io) = e else {
        return e.to_string();
    };
    let nic = io
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<vmmc_sockets::NicError>());
    if matches!(nic, Some(vmmc_sockets::NicError::NoEndpoint(_))) {
        return "no dfs-server is listening there (is it running? see dfs-server --help)".into();
    }
    if io.kind() == io::ErrorKind::TimedOut {
        return "the server did not answer in time (is the address right? is it overloaded?)"
            .into();
    }
    dfs_proto::errno::plain(io)
}

/// Mounts `client`'s export on `mountpoint` (the session serves it once run or spawned).
pub fn mount_session(
    client: Arc<Client>,
    addr: &str,
    mountpoint: &Path,
    opts: &MountOptions,
) -> Result<fuser::Session<DfsFuse>, String> {
    check_mountpoint(mountpoint)?;
    let ro = opts.read_only || client.read_only();
    let config = fuse_config(addr, SUBTYPE, ro, opts);
    let fs = DfsFuse::new(client, opts.times, opts.keep_cache)
        .with_passthrough(opts.passthrough && !opts.copy_path);
    let worker = fs.notice_worker();
    let session = fuser::Session::new(fs, mountpoint, &config)
        .map_err(|e| format!("cannot mount on {}: {e}", mountpoint.display()))?;
    if let Err(e) = worker.spawn(session.notifier()) {
        tracing::warn!("cannot start the thread for the server's notices: {e}; caching briefly");
    }
    if let Err(e) = set_readahead(mountpoint, opts.readahead_kib) {
        tracing::warn!(
            "cannot raise the readahead of {}: {e}",
            mountpoint.display()
        );
    }
    Ok(session)
}

/// Mounts `addr`'s export on `mountpoint` and serves it until it is unmounted or the process
/// gets SIGINT, SIGTERM or SIGHUP (which unmount it).
pub fn run_foreground(addr: &str, mountpoint: &Path, opts: &MountOptions) -> Result<(), String> {
    check_mountpoint(mountpoint)?;
    let client = connect(addr, opts)?;
    // Block the stop signals before any thread starts, so that only the waiter below takes them.
    let mut stop = SigSet::empty();
    for s in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        stop.add(s);
    }
    stop.thread_block()
        .map_err(|e| format!("cannot block signals: {e}"))?;
    let mut session = mount_session(Arc::new(client), addr, mountpoint, opts)?;
    let mut unmounter = session.unmount_callable();
    let mp = mountpoint.to_path_buf();
    std::thread::Builder::new()
        .name("dfs-signals".into())
        .spawn(move || {
            if let Ok(sig) = stop.wait() {
                tracing::info!("{sig:?}: unmounting {}", mp.display());
                if let Err(e) = unmounter.unmount() {
                    tracing::warn!("unmounting {}: {e}; trying a lazy unmount", mp.display());
                    let _ = umount(&mp, true);
                }
            }
        })
        .map_err(|e| e.to_string())?;
    eprintln!("dfs: {addr} mounted on {}", mountpoint.display());
    session
        .run()
        .map_err(|e| format!("the FUSE session ended: {e}"))
}

/// Refuses a mount point that is missing, not a directory, or already a FUSE mount.
pub fn check_mountpoint(mp: &Path) -> Result<(), String> {
    let md = std::fs::metadata(mp).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => format!("mount point {} does not exist", mp.display()),
        _ => format!(
            "mount point {}: {}",
            mp.display(),
            dfs_proto::errno::plain(&e)
        ),
    })?;
    if !md.is_dir() {
        return Err(format!("mount point {} is not a directory", mp.display()));
    }
    if is_fuse_mount(mp) {
        return Err(format!(
            "{} is already a FUSE mount point (dfs umount it first)",
            mp.display()
        ));
    }
    Ok(())
}

/// The `major:minor` of the file system mounted on `mp`, from `/proc/self/mountinfo` (so
/// that nothing touches the mount itself, which may not answer yet).
fn mount_dev(mp: &Path) -> Option<String> {
    mounts_on(mp).pop().map(|(dev, _)| dev)
}

/// The `(major:minor, fstype)` of every mount on `mp` in `/proc/self/mountinfo`, the topmost
/// last. A mount whose daemon died cannot be resolved, so its path is taken as it is.
fn mounts_on(mp: &Path) -> Vec<(String, String)> {
    let Ok(want) = std::fs::canonicalize(mp).or_else(|_| std::path::absolute(mp)) else {
        return Vec::new();
    };
    mountinfo()
        .into_iter()
        .filter(|(point, _, _)| *point == want)
        .map(|(_, dev, fstype)| (dev, fstype))
        .collect()
}

/// `(mount point, major:minor, fstype)` of every mount in this process's namespace, from
/// `/proc/self/mountinfo` (which touches no file system, so no FUSE daemon can stall it).
pub fn mountinfo() -> Vec<(PathBuf, String, String)> {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    info.lines()
        .filter_map(|l| {
            let (left, right) = l.split_once(" - ")?;
            let f: Vec<&str> = left.split(' ').collect();
            Some((
                PathBuf::from(unescape(f.get(4)?)),
                f.get(2)?.to_string(),
                right.split(' ').next().unwrap_or("").to_string(),
            ))
        })
        .collect()
}

/// Sets the kernel readahead of the mount's backing device (`/sys/class/bdi/M:N`).
pub fn set_readahead(mp: &Path, kib: u32) -> io::Result<()> {
    let dev = mount_dev(mp).ok_or_else(|| io::Error::other("not in /proc/self/mountinfo"))?;
    std::fs::write(
        format!("/sys/class/bdi/{dev}/read_ahead_kb"),
        kib.to_string(),
    )
}

/// Undoes the octal escapes `/proc/self/mountinfo` uses for spaces and such.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Whether a FUSE file system (any: ours, another, or the remains of one whose daemon died)
/// is mounted on `mp`, according to `/proc/self/mountinfo`.
pub fn is_fuse_mount(mp: &Path) -> bool {
    mounts_on(mp)
        .iter()
        .any(|(_, fstype)| fstype == "fuse" || fstype.starts_with("fuse."))
}

/// Whether the topmost mount on `mp` is a dfs mount (type `fuse.dfs`, also one whose daemon
/// died), according to `/proc/self/mountinfo`.
pub fn is_dfs_mount(mp: &Path) -> bool {
    mounts_on(mp)
        .last()
        .is_some_and(|(_, fstype)| fstype == &format!("fuse.{SUBTYPE}"))
}

/// Starts the daemon in the background (this program again, with `--foreground`), waits until
/// the mount is there, and returns; if the daemon fails first, returns what it said.
pub fn run_background(
    args: &[String],
    mountpoint: &Path,
    log: &Path,
    wait: Duration,
) -> Result<(), String> {
    if let Some(dir) = log.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    let logf = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(|e| format!("log {}: {e}", log.display()))?;
    let start_len = logf.metadata().map(|m| m.len()).unwrap_or(0);
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    // Named `dfs` whatever this copy is called (`mount.dfs`, for mount(8)), so that the daemon
    // reads its arguments as `dfs mount`.
    let mut child = Command::new(exe)
        .arg0("dfs")
        .args(args)
        .arg("--foreground")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(logf)
        .process_group(0)
        .spawn()
        .map_err(|e| format!("cannot start the mount daemon: {e}"))?;
    let deadline = Instant::now() + wait;
    loop {
        if is_dfs_mount(mountpoint) {
            return Ok(());
        }
        if let Ok(Some(status)) = child.try_wait() {
            let said = std::fs::read(log)
                .ok()
                .map(|b| {
                    String::from_utf8_lossy(&b[(start_len as usize).min(b.len())..])
                        .trim()
                        .to_string()
                })
                .unwrap_or_default();
            // The daemon ends with `dfs: error: …`: the caller says `dfs: error:` itself.
            let said = said
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .map(|l| l.trim_start_matches("dfs: error: ").to_string())
                .unwrap_or_default();
            return Err(if said.is_empty() {
                format!("the mount daemon exited ({status})")
            } else {
                said
            });
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            return Err(format!(
                "{} did not appear within {wait:?} (log: {})",
                mountpoint.display(),
                log.display()
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

use std::os::unix::process::CommandExt;

/// Unmounts a dfs mount; `lazy` detaches it even while it is busy. Works when the daemon
/// is dead too (the kernel then answers every access with `ENOTCONN` until this runs).
/// Anything else mounted there is refused: this is not a general `umount`.
pub fn umount(mp: &Path, lazy: bool) -> io::Result<()> {
    if !is_dfs_mount(mp) {
        let what = match mounts_on(mp).last() {
            Some((_, fstype)) => format!("{} is a {fstype} mount, not a dfs one", mp.display()),
            None => format!("{} is not mounted", mp.display()),
        };
        return Err(io::Error::other(format!(
            "{what}; dfs umount unmounts only dfs mounts"
        )));
    }
    let flags = if lazy {
        nix::mount::MntFlags::MNT_DETACH
    } else {
        nix::mount::MntFlags::empty()
    };
    match nix::mount::umount2(mp, flags) {
        Ok(()) => Ok(()),
        Err(nix::Error::EPERM) => {
            // Not root: fusermount3 (package fuse3) unmounts FUSE mounts for their owner.
            let st = Command::new("fusermount3")
                .arg(if lazy { "-uz" } else { "-u" })
                .arg(mp)
                .status()?;
            if st.success() {
                Ok(())
            } else {
                Err(io::Error::other(format!(
                    "fusermount3 -u {} failed ({st})",
                    mp.display()
                )))
            }
        }
        Err(nix::Error::EBUSY) => Err(io::Error::other(format!(
            "{} is busy (something has files open there); dfs umount --lazy detaches it anyway",
            mp.display()
        ))),
        Err(nix::Error::EINVAL) => {
            Err(io::Error::other(format!("{} is not mounted", mp.display())))
        }
        Err(e) => Err(io::Error::other(format!(
            "{}: {}",
            mp.display(),
            dfs_proto::errno::plain(&e.into())
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options() {
        let mut o = MountOptions::default();
        o.parse_into("ro,attr_timeout=0.5,entry_timeout=2,nosuid,defaults,_netdev,secret=/etc/dfs.key,timeout=5").unwrap();
        assert!(o.read_only);
        assert_eq!(o.times.attr, Duration::from_millis(500));
        assert_eq!(o.times.entry, Duration::from_secs(2));
        assert_eq!(o.kernel, vec![MountOption::NoSuid]);
        assert_eq!(o.secret.as_deref(), Some(Path::new("/etc/dfs.key")));
        assert_eq!(o.timeout, Duration::from_secs(5));
        assert!(o
            .parse_into("bogus")
            .unwrap_err()
            .contains("unknown mount option"));
        assert!(o.parse_into("attr_timeout=x").is_err());
        assert!(o.parse_into("threads=0").is_err());
        assert_eq!(unescape("/mnt/a\\040b"), "/mnt/a b");
        assert!(!is_fuse_mount(Path::new("/")));
    }
}
