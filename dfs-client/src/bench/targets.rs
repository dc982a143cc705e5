//! What `dfs bench` measures: the DFS mounted in this process (pointer path, copy path, tcp),
//! the export read directly, the in-memory FUSE ceiling, sshfs, and any named directory.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::mount::{self, MountOptions};
use crate::Client;

/// One thing to measure: a directory, and whatever keeps it alive.
pub struct Target {
    /// Its name in the report (`dfs_fuse`, `local`, …).
    pub name: String,
    /// Where its files go.
    pub dir: PathBuf,
    /// For DFS targets: the client, to read the server's counters.
    pub client: Option<Arc<Client>>,
    /// Mounts and processes, torn down in order when dropped.
    keep: Vec<Keep>,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target")
            .field("name", &self.name)
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

enum Keep {
    Session(fuser::BackgroundSession),
    Process(Child),
    Unmount(PathBuf),
    Sshd(super::sshfs::Sshd),
}

impl Drop for Target {
    fn drop(&mut self) {
        for k in self.keep.drain(..) {
            match k {
                Keep::Session(s) => {
                    if let Err(e) = s.umount_and_join() {
                        tracing::warn!("unmounting: {e}");
                    }
                }
                Keep::Process(mut c) => {
                    let _ = c.kill();
                    let _ = c.wait();
                }
                Keep::Unmount(p) => {
                    let _ = mount::umount(&p, true);
                }
                Keep::Sshd(s) => drop(s),
            }
        }
    }
}

impl Target {
    /// A plain directory (the export itself, or a user's `--target NAME=PATH`).
    pub fn dir(name: &str, dir: PathBuf) -> Result<Target, String> {
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        Ok(Target {
            name: name.into(),
            dir,
            client: None,
            keep: Vec::new(),
        })
    }

    /// A `dfs-server` on `export` (listening on `listen`), mounted in this process on `mp`.
    pub fn dfs(
        name: &str,
        export: &Path,
        listen: &str,
        key: &Path,
        secret: &Path,
        mp: &Path,
        copy_path: bool,
    ) -> Result<Target, String> {
        let (child, addr) = start_server(export, listen, key, secret, copy_path)?;
        let mut t = Target {
            name: name.into(),
            dir: mp.join("dfs-bench"),
            client: None,
            keep: vec![Keep::Process(child)],
        };
        std::fs::create_dir_all(mp).map_err(|e| format!("{}: {e}", mp.display()))?;
        let opts = MountOptions {
            keep_cache: false,
            copy_path,
            secret: Some(secret.to_path_buf()),
            ..MountOptions::default()
        };
        let client = Arc::new(mount::connect(&addr, &opts)?);
        let session = mount::mount_session(client.clone(), &addr, mp, &opts)?;
        let bg = session
            .spawn()
            .map_err(|e| format!("serving the mount: {e}"))?;
        t.keep.insert(0, Keep::Session(bg));
        t.client = Some(client);
        std::fs::create_dir_all(&t.dir).map_err(|e| format!("{}: {e}", t.dir.display()))?;
        Ok(t)
    }

    /// The in-memory FUSE file system on `mp`.
    pub fn memfs(name: &str, mp: &Path) -> Result<Target, String> {
        std::fs::create_dir_all(mp).map_err(|e| format!("{}: {e}", mp.display()))?;
        mount::check_mountpoint(mp)?;
        let opts = MountOptions::default();
        let config = mount::fuse_config("memfs", "dfs-ceiling", false, &opts);
        let session = fuser::Session::new(super::memfs::MemFs::default(), mp, &config)
            .map_err(|e| format!("mounting the in-memory file system: {e}"))?;
        let _ = mount::set_readahead(mp, opts.readahead_kib);
        let bg = session.spawn().map_err(|e| e.to_string())?;
        let dir = mp.join("dfs-bench");
        // The first access waits for the kernel's INIT to be answered.
        wait_for(
            || std::fs::create_dir_all(&dir).is_ok(),
            Duration::from_secs(10),
        )
        .map_err(|_| "the in-memory file system did not answer".to_string())?;
        Ok(Target {
            name: name.into(),
            dir,
            client: None,
            keep: vec![Keep::Session(bg)],
        })
    }

    /// sshfs of `export` over a throwaway sshd on loopback, on `mp`.
    pub fn sshfs(name: &str, export: &Path, mp: &Path, scratch: &Path) -> Result<Target, String> {
        std::fs::create_dir_all(mp).map_err(|e| format!("{}: {e}", mp.display()))?;
        let sshd = super::sshfs::Sshd::start(scratch)?;
        sshd.mount(export, mp)?;
        let dir = mp.join("dfs-bench");
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        Ok(Target {
            name: name.into(),
            dir,
            client: None,
            keep: vec![Keep::Unmount(mp.to_path_buf()), Keep::Sshd(sshd)],
        })
    }
}

fn wait_for(mut ok: impl FnMut() -> bool, limit: Duration) -> Result<(), ()> {
    let deadline = Instant::now() + limit;
    while !ok() {
        if Instant::now() > deadline {
            return Err(());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(())
}

/// `dfs-server` from beside this program.
fn server_bin() -> Result<PathBuf, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let p = exe.with_file_name("dfs-server");
    if p.exists() {
        Ok(p)
    } else {
        Err(format!(
            "{} is missing (cargo build -p dfs-server)",
            p.display()
        ))
    }
}

/// Starts a server and returns it with the address it listens on (the real port for tcp).
/// Makes the shared secret the bench's servers and mounts use, as a deployment would (on
/// tcp, callers' uids count only from a client that proved it).
pub fn make_secret(path: &Path) -> Result<(), String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| e.to_string())?;
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    f.write_all(hex.as_bytes())
        .map_err(|e| format!("{}: {e}", path.display()))
}

fn start_server(
    export: &Path,
    listen: &str,
    key: &Path,
    secret: &Path,
    copy_path: bool,
) -> Result<(Child, String), String> {
    let mut cmd = Command::new(server_bin()?);
    cmd.arg("--export")
        .arg(export)
        .args(["--listen", listen, "--squash", "none"])
        .arg("--handle-key")
        .arg(key)
        .arg("--secret")
        .arg(secret);
    if copy_path {
        cmd.arg("--copy-path");
    }
    let mut child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("starting dfs-server: {e}"))?;
    let err = child.stderr.take().ok_or("no stderr")?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for l in BufReader::new(err).lines().map_while(Result::ok) {
            let _ = tx.send(l);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(l) => {
                if let Some(addr) = l
                    .strip_prefix("dfs-server: serving ")
                    .and_then(|r| r.rsplit(" on ").next())
                {
                    let addr = addr.to_string();
                    std::thread::spawn(move || for _ in rx {});
                    return Ok((child, addr));
                }
                if l.contains("error") {
                    let _ = child.kill();
                    return Err(l);
                }
            }
            Err(_) => {
                let _ = child.kill();
                return Err("dfs-server did not start".into());
            }
        }
    }
}
