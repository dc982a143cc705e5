//! Real child processes for integration tests.
//!
//! A test binary re-executes itself to run one `#[ignore]`d entry test (the *child entry*),
//! which reads commands on stdin and answers on stdout with lines that start with `@@ `
//! (libtest prints its own lines too). Every child is killed when its [`Peer`] is dropped,
//! also when a test fails, and every wait for an answer has a timeout.

#![deny(missing_docs)]

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::time::Duration;

use std::sync::atomic::{AtomicU32, Ordering};

mod ports;
pub use ports::unused_port;

// The Windows build under Wine, against Linux peers.
#[cfg(unix)]
pub mod wine;

// Unprivileged accounts for the attack tests: Unix's.
#[cfg(unix)]
mod users;
#[cfg(unix)]
pub use users::{run_as, test_user, TestUser};

/// The two backends every behavioural test runs against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// `shm:NAME`, one host.
    Shm,
    /// `tcp:127.0.0.1:PORT`, across hosts (here: loopback).
    Tcp,
}

impl Backend {
    /// An address where nothing listens: a fresh shm name, or a loopback port just released.
    pub fn nowhere(self) -> String {
        match self {
            Backend::Shm => self.fresh_addr(),
            Backend::Tcp => {
                let port = std::net::TcpListener::bind("127.0.0.1:0")
                    .and_then(|l| l.local_addr())
                    .map(|a| a.port())
                    .unwrap_or(9);
                format!("tcp:127.0.0.1:{port}")
            }
        }
    }

    /// A fresh address to bind: a unique shm name, or an ephemeral loopback port (the bound
    /// address tells which).
    pub fn fresh_addr(self) -> String {
        static N: AtomicU32 = AtomicU32::new(0);
        match self {
            Backend::Shm => format!(
                "shm:t-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ),
            Backend::Tcp => "tcp:127.0.0.1:0".into(),
        }
    }
}

/// Runs each named `fn(Backend)` twice, as the tests `shm::NAME` and `tcp::NAME`: one
/// behavioural suite for both backends.
#[macro_export]
macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {
        mod shm {
            $(#[test] fn $name() { super::$name($crate::Backend::Shm) })*
        }
        mod tcp {
            $(#[test] fn $name() { super::$name($crate::Backend::Tcp) })*
        }
    };
}

/// Defines the child entry of a test binary: an ignored test that, when this binary is started
/// by [`Peer::spawn`], runs `$run` with the child's role and exits.
#[macro_export]
macro_rules! child_entry {
    ($run:path) => {
        /// Not a test: the entry point of the child processes the other tests spawn.
        #[test]
        #[ignore = "entry point of child processes spawned by the other tests"]
        fn child_process() {
            if let Some(role) = $crate::child_role() {
                $run(&role);
                std::process::exit(0);
            }
        }
    };
}

/// The environment variable that carries a child's role.
pub const ROLE_VAR: &str = "VMMC_TEST_CHILD";

/// How long a test waits for any single answer from a child.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(60);

/// A child process running the command loop.
#[derive(Debug)]
pub struct Peer {
    child: Child,
    stdin: ChildStdin,
    lines: Receiver<String>,
    role: String,
}

impl Peer {
    /// Starts this test binary again running the test `entry` (the child entry, a path
    /// like `common::child_process`) in `role`, and waits for its first answer.
    pub fn spawn(entry: &str, role: &[&str]) -> (Peer, String) {
        let exe = std::env::current_exe().unwrap();
        Peer::start(Command::new(exe), entry, role)
    }

    /// As [`Peer::spawn`], with the child running as `user`: its real, effective and saved
    /// ids, no supplementary groups, no capabilities. The binary is run from a copy anyone
    /// may execute, since the clone may sit where the user cannot look (`/root`).
    #[cfg(unix)]
    pub fn spawn_as(user: &TestUser, entry: &str, role: &[&str]) -> (Peer, String) {
        let mut cmd = Command::new("setpriv");
        cmd.args([
            "--reuid",
            &user.uid.to_string(),
            "--regid",
            &user.gid.to_string(),
            "--clear-groups",
            "--inh-caps=-all",
            "--",
        ])
        .arg(users::shared_exe())
        .current_dir("/")
        .env("HOME", "/");
        Peer::start(cmd, entry, role)
    }

    fn start(mut cmd: Command, entry: &str, role: &[&str]) -> (Peer, String) {
        let mut child = cmd
            .args([
                entry,
                "--exact",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(ROLE_VAR, role.join("\u{1f}"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                // libtest may print "test name ... " on the same line before ours.
                if let Some(at) = line.find("@@ ") {
                    if tx.send(line[at + 3..].trim_end().to_owned()).is_err() {
                        break;
                    }
                }
            }
        });
        let mut peer = Peer {
            child,
            stdin,
            lines: rx,
            role: role.join(" "),
        };
        let ready = peer.recv();
        (peer, ready)
    }

    /// The next answer, or a panic naming the child after [`ANSWER_TIMEOUT`].
    pub fn recv(&mut self) -> String {
        self.lines
            .recv_timeout(ANSWER_TIMEOUT)
            .unwrap_or_else(|e| panic!("child `{}` gave no answer: {e}", self.role))
    }

    /// Sends a command and returns its answer.
    pub fn cmd(&mut self, line: &str) -> String {
        writeln!(self.stdin, "{line}").unwrap();
        self.stdin.flush().unwrap();
        self.recv()
    }

    /// Sends a command whose answer must start with `OK`; returns the rest.
    pub fn ok(&mut self, line: &str) -> String {
        let answer = self.cmd(line);
        assert!(
            answer.starts_with("OK"),
            "`{line}` to `{}` answered {answer}",
            self.role
        );
        answer.trim_start_matches("OK").trim().to_owned()
    }

    /// The child's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL, then reap.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        self.kill();
    }
}

impl Peer {
    /// Sends a command without waiting; read the answer later with [`Peer::recv`].
    pub fn cmd_nowait(&mut self, line: &str) -> std::io::Result<()> {
        writeln!(self.stdin, "{line}")?;
        self.stdin.flush()
    }
}

/// The role this process was started in, if it is a child.
pub fn child_role() -> Option<Vec<String>> {
    let role = std::env::var(ROLE_VAR).ok()?;
    Some(role.split('\u{1f}').map(str::to_owned).collect())
}

/// Answers the parent.
pub fn say(line: impl AsRef<str>) {
    println!("@@ {}", line.as_ref());
    let _ = std::io::stdout().flush();
}

/// Reads the parent's commands, one per line, until stdin closes.
pub fn commands() -> impl Iterator<Item = String> {
    std::io::stdin().lock().lines().map_while(Result::ok)
}

/// The byte a pattern fill puts at absolute offset `i`: data whose every position is checkable
/// without keeping a copy.
pub fn pattern_byte(seed: u64, i: u64) -> u8 {
    (i.wrapping_mul(0x9E37_79B9).wrapping_add(seed) >> 3) as u8
}

/// `len` pattern bytes starting at absolute offset `offset`.
pub fn pattern(seed: u64, offset: u64, len: usize) -> Vec<u8> {
    (0..len as u64)
        .map(|i| pattern_byte(seed, offset + i))
        .collect()
}

/// FNV-1a, continuing from `h`: compares large ranges across a process boundary by one line.
pub fn fnv(data: &[u8], mut h: u64) -> u64 {
    for b in data {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x100_0000_01b3);
    }
    h
}

/// The FNV-1a offset basis, where every hash starts.
pub const FNV_START: u64 = 0xcbf2_9ce4_8422_2325;
