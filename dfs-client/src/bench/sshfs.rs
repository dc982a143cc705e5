//! A throwaway sshd on 127.0.0.1 with a throwaway key, for the sshfs baseline.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The running sshd; dropping it stops it.
pub struct Sshd {
    child: Child,
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
        let child = Command::new(sshd)
            .arg("-D")
            .arg("-e")
            .arg("-f")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("starting sshd: {e}"))?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > deadline {
                return Err("the throwaway sshd did not start".into());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(Sshd { child, port, key })
    }

    /// Mounts `remote` (a directory on this host, through sshd) on `mp`.
    pub fn mount(&self, remote: &Path, mp: &Path) -> Result<(), String> {
        let user = nix::unistd::User::from_uid(nix::unistd::geteuid())
            .ok()
            .flatten()
            .map_or("root".to_string(), |u| u.name);
        ok(
            Command::new("sshfs")
                .arg(format!("{user}@127.0.0.1:{}", remote.display()))
                .arg(mp)
                .args(["-p", &self.port.to_string()])
                .arg("-o")
                .arg(format!("IdentityFile={},StrictHostKeyChecking=no,UserKnownHostsFile=/dev/null,BatchMode=yes,LogLevel=ERROR", self.key.display())),
            "sshfs",
        )
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
