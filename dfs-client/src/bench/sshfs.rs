//! A throwaway sshd on 127.0.0.1 with a throwaway key, for the sshfs baseline.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The running sshd; dropping it stops it.
pub struct Sshd {
    child: Option<Child>,
    port: u16,
    key: PathBuf,
}

fn need(tool: &str) -> Result<PathBuf, String> {
    for dir in ["/usr/sbin", "/usr/bin", "/sbin", "/bin", "/usr/local/bin"] {
        let p = Path::new(dir).join(tool);
        if p.exists() {
            return Ok(p);
        }
    }
    Err(format!(
        "--with-sshfs needs {tool} (apt install sshfs openssh-server)"
    ))
}

fn ok(cmd: &mut Command, what: &str) -> Result<(), String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{what}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{what}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

impl Sshd {
    /// Makes keys and a config in `scratch/ssh` and starts sshd on a free loopback port.
    pub fn start(scratch: &Path) -> Result<Sshd, String> {
        let sshd = need("sshd")?;
        need("sshfs")?;
        let keygen = need("ssh-keygen")?;
        let dir = scratch.join("ssh");
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let host = dir.join("host_key");
        let key = dir.join("client_key");
        for k in [&host, &key] {
            if !k.exists() {
                ok(
                    Command::new(&keygen)
                        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
                        .arg(k),
                    "ssh-keygen",
                )?;
            }
        }
        std::fs::copy(key.with_extension("pub"), dir.join("authorized_keys"))
            .map_err(|e| e.to_string())?;
        // sshd wants its privilege-separation directory.
        let _ = std::fs::create_dir_all("/run/sshd");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .map_err(|e| e.to_string())?;
        let config = dir.join("sshd_config");
        std::fs::write(
            &config,
            format!(
                "Port {port}\nListenAddress 127.0.0.1\nHostKey {}\nAuthorizedKeysFile {}\nPidFile {}\nStrictModes no\nPermitRootLogin prohibit-password\nPasswordAuthentication no\nUsePAM no\nSubsystem sftp internal-sftp\n",
                host.display(),
                dir.join("authorized_keys").display(),
                dir.join("sshd.pid").display()
            ),
        )
        .map_err(|e| e.to_string())?;
        // In a process group of its own (as every child of the bench), so that a Ctrl-C on
        // the terminal reaches only the bench, which stops it after unmounting.
        let child = Command::new(sshd)
            .arg("-D")
            .arg("-e")
            .arg("-f")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .map_err(|e| format!("starting sshd: {e}"))?;
        let sshd = Sshd {
            child: Some(child),
            port,
            key,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            super::stop::check().map_err(|e| e.to_string())?;
            if Instant::now() > deadline {
                return Err("the throwaway sshd did not start".into());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(sshd)
    }

    /// Mounts `remote` (a directory on this host, through sshd) on `mp`: sshfs runs in the
    /// foreground as a child of ours (its log in `scratch/ssh/sshfs.log`), returned once the
    /// mount is there.
    pub fn mount(&self, remote: &Path, mp: &Path, scratch: &Path) -> Result<Child, String> {
        let user = nix::unistd::User::from_uid(nix::unistd::geteuid())
            .ok()
            .flatten()
            .map_or("root".to_string(), |u| u.name);
        let log_path = scratch.join("ssh").join("sshfs.log");
        let log =
            std::fs::File::create(&log_path).map_err(|e| format!("{}: {e}", log_path.display()))?;
        let mut child = Command::new(need("sshfs")?)
            .arg(format!("{user}@127.0.0.1:{}", remote.display()))
            .arg(mp)
            .arg("-f")
            .args(["-p", &self.port.to_string()])
            .arg("-o")
            .arg(format!("IdentityFile={},StrictHostKeyChecking=no,UserKnownHostsFile=/dev/null,BatchMode=yes,LogLevel=ERROR", self.key.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .process_group(0)
            .spawn()
            .map_err(|e| format!("sshfs: {e}"))?;
        let mut exited = None;
        let up = super::targets::wait_for(
            || {
                exited = child.try_wait().ok().flatten();
                exited.is_some() || super::stop::check().is_err() || crate::mount::is_fuse_mount(mp)
            },
            Duration::from_secs(20),
        );
        if up.is_ok() && exited.is_none() && super::stop::check().is_ok() {
            return Ok(child);
        }
        super::targets::stop_group(child);
        if let Err(e) = super::stop::check() {
            return Err(e.to_string());
        }
        let said = std::fs::read_to_string(&log_path).unwrap_or_default();
        Err(format!(
            "sshfs: {}",
            match (exited, said.trim()) {
                (Some(st), "") => format!("exited ({st})"),
                (Some(_), said) => said.to_string(),
                (None, _) => "the mount did not appear within 20 s".to_string(),
            }
        ))
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        if let Some(c) = self.child.take() {
            super::targets::stop_group(c);
        }
    }
}
