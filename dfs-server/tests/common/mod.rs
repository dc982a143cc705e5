//! The in-process harness: a real server on a fresh shm address over a temporary export, and
//! protocol clients with chosen credentials. Deterministic: no mount, no timing.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use dfs_client::{ConnectError, ConnectOptions, Connection};
use dfs_proto::attr::Entry;
use dfs_proto::handle::{FileHandle, OpenId};
use dfs_proto::msg::{Body, Creds, Op, OpenFlags};
use dfs_proto::name::Name;
use dfs_proto::Errno;
use dfs_server::{Config, Running, Server, Squash};

pub fn fresh_shm() -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "shm:dfs-t-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

pub fn name(s: &str) -> Name {
    Name::new(s.as_bytes()).unwrap()
}

pub const ROOT: Creds = Creds {
    uid: 0,
    gid: 0,
    groups: Vec::new(),
};

pub fn user(uid: u32) -> Creds {
    Creds {
        uid,
        gid: uid,
        groups: vec![],
    }
}

pub const RW: OpenFlags = OpenFlags {
    read: true,
    write: true,
    append: false,
    truncate: false,
    exclusive: false,
    sync: false,
};
pub const RO: OpenFlags = OpenFlags {
    read: true,
    write: false,
    append: false,
    truncate: false,
    exclusive: false,
    sync: false,
};

pub struct Harness {
    pub tmp: tempfile::TempDir,
    /// The export directory.
    pub export: PathBuf,
    /// A directory beside the export, which nothing may ever reach.
    pub outside: PathBuf,
    pub config: Config,
    pub server: Option<Running>,
    pub addr: String,
}

impl Harness {
    /// A server with `--squash none` (tests pick their credentials) and no secret.
    pub fn new() -> Harness {
        Harness::with(|_| {})
    }

    pub fn with(tweak: impl FnOnce(&mut Config)) -> Harness {
        Harness::on(&std::env::temp_dir(), tweak)
    }

    /// A server whose export and outside are in a fresh directory under `base` (a tmpfs the
    /// test mounted, say).
    pub fn on(base: &Path, tweak: impl FnOnce(&mut Config)) -> Harness {
        let tmp = tempfile::tempdir_in(base).unwrap();
        let export = tmp.path().join("export");
        let outside = tmp.path().join("outside");
        std::fs::create_dir(&export).unwrap();
        std::fs::create_dir(&outside).unwrap();
        std::fs::write(outside.join("secret.txt"), b"outside the export").unwrap();
        let mut key = [0u8; 32];
        key[0] = 42;
        let mut config = Config::new(&export, fresh_shm(), key);
        config.squash = Squash::None;
        tweak(&mut config);
        let server = Server::bind(config.clone()).unwrap();
        assert!(
            server.stable_handles(),
            "the tests run as root, where handles are the kernel's"
        );
        let addr = server.local_addr();
        Harness {
            tmp,
            export,
            outside,
            config,
            server: Some(server.spawn().unwrap()),
            addr,
        }
    }

    pub fn connect(&self, opts: &ConnectOptions) -> Result<Connection, ConnectError> {
        Connection::connect(&self.addr, opts)
    }

    pub fn client(&self) -> Client {
        self.client_as(ROOT)
    }

    pub fn client_as(&self, creds: Creds) -> Client {
        let conn = self.connect(&ConnectOptions::new().unwrap()).unwrap();
        Client { conn, creds }
    }

    /// Stops the server and starts a new one on the same export, key and address.
    pub fn restart(&mut self) {
        self.server.take().unwrap().stop().unwrap();
        let mut config = self.config.clone();
        config.listen = self.addr.clone();
        self.server = Some(Server::bind(config).unwrap().spawn().unwrap());
    }

    /// A second server, with the same key, that exports the directory holding both the export
    /// and the outside: it can name (and change) what ours must never reach.
    pub fn parent_server(&self) -> (Running, Client) {
        let mut config = self.config.clone();
        config.export = self.tmp.path().to_path_buf();
        config.listen = fresh_shm();
        let parent = Server::bind(config).unwrap().spawn().unwrap();
        let conn = Connection::connect(parent.addr(), &ConnectOptions::new().unwrap()).unwrap();
        (parent, Client { conn, creds: ROOT })
    }

    /// The outside file's content is what the test put there: nothing wrote it.
    pub fn outside_untouched(&self) {
        assert_eq!(
            std::fs::read(self.outside.join("secret.txt")).unwrap(),
            b"outside the export"
        );
        let names: Vec<_> = std::fs::read_dir(&self.outside)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(
            names.len(),
            1,
            "something was created outside the export: {names:?}"
        );
    }
}

/// A tmpfs mounted on a fresh temporary directory for one test, unmounted when dropped.
pub struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    /// The mount. The tests run as root, where this cannot fail but for a broken machine: a
    /// test that skipped its tmpfs case would prove nothing about it.
    pub fn mount() -> Tmpfs {
        let dir = tempfile::tempdir().unwrap();
        let mounted = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", "mode=0755,size=64m", "dfs-test"])
            .arg(dir.path())
            .status();
        assert!(
            mounted.is_ok_and(|s| s.success()),
            "cannot mount a tmpfs on {}: the tmpfs cases need one (run the tests as root)",
            dir.path().display()
        );
        Tmpfs { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

pub struct Client {
    pub conn: Connection,
    pub creds: Creds,
}

impl Client {
    pub fn root(&self) -> FileHandle {
        self.conn.root().clone()
    }

    pub fn op(&mut self, op: Op) -> Result<Body, Errno> {
        self.conn.call(&self.creds, op, &[]).unwrap().result
    }

    pub fn entry(&mut self, op: Op) -> Result<Entry, Errno> {
        match self.op(op)? {
            Body::Entry(e) => Ok(e),
            other => panic!("not an entry: {other:?}"),
        }
    }

    pub fn lookup(&mut self, dir: &FileHandle, n: &str) -> Result<Entry, Errno> {
        self.entry(Op::Lookup {
            dir: dir.clone(),
            name: name(n),
        })
    }

    pub fn create(
        &mut self,
        dir: &FileHandle,
        n: &str,
        mode: u32,
        flags: OpenFlags,
    ) -> Result<(Entry, OpenId), Errno> {
        match self.op(Op::Create {
            dir: dir.clone(),
            name: name(n),
            mode,
            flags,
        })? {
            Body::Opened {
                open,
                entry: Some(e),
                ..
            } => Ok((e, open)),
            other => panic!("not a create reply: {other:?}"),
        }
    }

    pub fn open(&mut self, h: &FileHandle, flags: OpenFlags) -> Result<OpenId, Errno> {
        match self.op(Op::Open {
            handle: h.clone(),
            flags,
        })? {
            Body::Opened {
                open, entry: None, ..
            } => Ok(open),
            other => panic!("not an open reply: {other:?}"),
        }
    }

    pub fn mkdir(&mut self, dir: &FileHandle, n: &str, mode: u32) -> Result<Entry, Errno> {
        self.entry(Op::Mkdir {
            dir: dir.clone(),
            name: name(n),
            mode,
        })
    }

    pub fn write(
        &mut self,
        h: &FileHandle,
        open: Option<OpenId>,
        offset: u64,
        data: &[u8],
    ) -> Result<u32, Errno> {
        let op = Op::Write {
            handle: h.clone(),
            open,
            offset,
            append: false,
        };
        match self.conn.call(&self.creds, op, data).unwrap().result? {
            Body::Written { len, .. } => Ok(len),
            other => panic!("not a write reply: {other:?}"),
        }
    }

    pub fn read(
        &mut self,
        h: &FileHandle,
        open: Option<OpenId>,
        offset: u64,
        len: u32,
    ) -> Result<(Vec<u8>, bool), Errno> {
        self.conn
            .read_in_place(
                &self.creds,
                h.clone(),
                open,
                offset,
                len,
                |reply, data| match reply.result? {
                    Body::Read { eof } => Ok((data.to_vec(), eof)),
                    other => panic!("not a read reply: {other:?}"),
                },
            )
            .unwrap()
    }

    pub fn getattr(&mut self, h: &FileHandle) -> Result<dfs_proto::attr::Attr, Errno> {
        match self.op(Op::GetAttr {
            handle: h.clone(),
            open: None,
        })? {
            Body::Attr(a) => Ok(a),
            other => panic!("not attributes: {other:?}"),
        }
    }

    /// Every name in a directory, page by page with `page` entries at a time.
    pub fn list(&mut self, dir: &FileHandle, page: u32) -> Result<Vec<String>, Errno> {
        let mut names = Vec::new();
        let mut cookie = 0;
        loop {
            let Body::Dir(p) = self.op(Op::ReadDir {
                dir: dir.clone(),
                cookie,
                max_entries: page,
            })?
            else {
                panic!("not a directory page");
            };
            assert!(p.entries.len() <= page as usize);
            for e in &p.entries {
                let n = String::from_utf8(e.name.clone()).unwrap();
                if n != "." && n != ".." {
                    let entry = e.entry.as_ref().expect("entries carry attributes");
                    assert_eq!(entry.attr.ino, e.ino);
                    names.push(n);
                }
                cookie = e.cookie;
            }
            if p.eof {
                break;
            }
        }
        names.sort();
        Ok(names)
    }
}

/// The bytes of a request frame, as a client that skips our `Connection` would send them.
pub fn raw_frame(meta: &[u8]) -> Vec<u8> {
    let mut fr = vec![0u8; dfs_proto::frame::HEADER];
    dfs_proto::frame::FrameHeader {
        meta_len: meta.len() as u32,
        data_len: 0,
    }
    .emit(&mut fr);
    fr.extend_from_slice(meta);
    fr
}

/// Sends `frame` on a client's stream without waiting for an answer.
pub fn send_raw(c: &Client, frame: &[u8]) {
    use std::io::Write;
    let mut s: &vmmc_sockets::VmmcStream = c.conn.stream();
    s.write_all(frame).unwrap();
}

/// A read request of `len` bytes, encoded.
pub fn read_request(id: u64, handle: &FileHandle, len: u32) -> Vec<u8> {
    let op = Op::Read {
        handle: handle.clone(),
        open: None,
        offset: 0,
        len,
    };
    raw_frame(
        &dfs_proto::codec::encode_to_vec(&dfs_proto::msg::Request {
            id,
            creds: ROOT,
            op,
        })
        .unwrap(),
    )
}

/// A server on loopback tcp that wants `key` as its secret, and root's client that knows it.
pub fn tcp_with_secret(key: &str) -> (Harness, Client) {
    let secret = || dfs_proto::auth::Secret::from_file_bytes(key.as_bytes()).unwrap();
    let h = Harness::with(|c| {
        c.listen = "tcp:127.0.0.1:0".into();
        c.secret = Some(secret());
    });
    let opts = ConnectOptions {
        secret: Some(secret()),
        ..ConnectOptions::new().unwrap()
    };
    let c = Client {
        conn: h.connect(&opts).unwrap(),
        creds: ROOT,
    };
    (h, c)
}
