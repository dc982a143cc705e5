//! Passthrough on one host: files opened read-only are read by the kernel from the server's
//! file, and everything around it stays right: writers beside passed-through readers, mmap,
//! another client's writes, a server that lends nothing, and a server that lends only what
//! it must, to whom it must.

mod common;

use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::Duration;

use common::*;
use dfs_proto::msg::OpenFlags;
use dfs_proto::name::Name;

/// Bytes the server process has read with system calls so far.
fn read_by(pid: u32) -> u64 {
    let io = std::fs::read_to_string(format!("/proc/{pid}/io")).unwrap();
    io.lines()
        .find_map(|l| l.strip_prefix("rchar: "))
        .unwrap()
        .parse()
        .unwrap()
}

struct Setup {
    tmp: tempfile::TempDir,
    server: ServerProc,
}

fn setup(extra: &[&str]) -> Setup {
    let tmp = tempfile::tempdir().unwrap();
    let export = tmp.path().join("export");
    std::fs::create_dir(&export).unwrap();
    let server = ServerProc::launch(
        &[],
        &fresh_addr(),
        &export,
        &tmp.path().join("handle.key"),
        &[&["--squash", "none"], extra].concat(),
    );
    Setup { tmp, server }
}

impl Setup {
    fn mount(&self, name: &str, opts: &[&str]) -> MountProc {
        MountProc::start(&self.server.addr, &self.tmp.path().join(name), opts)
    }
    fn export(&self) -> &Path {
        &self.server.export
    }
}

const MIB: usize = 1 << 20;

#[test]
fn writers_beside_passed_through_readers_see_one_file() {
    let s = setup(&[]);
    let m = s.mount("mnt", &[]);
    let path = m.mp.join("f");
    std::fs::write(s.export().join("f"), vec![b'a'; 4 * MIB]).unwrap();
    let pid = s.server.child.id();

    // A reader passes through: the server reads nothing for it.
    let reader = std::fs::File::open(&path).unwrap();
    let before = read_by(pid);
    let mut buf = vec![0u8; 4 * MIB];
    reader.read_exact_at(&mut buf, 0).unwrap();
    assert!(buf.iter().all(|&b| b == b'a'));
    assert!(
        read_by(pid) - before < MIB as u64,
        "the server read the bytes"
    );

    // A writer beside it (passed through as well, as the kernel wants every open of the
    // inode): the reader sees each write at once, through the same open, and so does a
    // second reader.
    let mut writer = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    writer.seek(SeekFrom::Start(MIB as u64)).unwrap();
    writer.write_all(&[b'b'; 4096]).unwrap();
    reader.read_exact_at(&mut buf[..4096], MIB as u64).unwrap();
    assert_eq!(&buf[..4096], &[b'b'; 4096][..]);
    let second = std::fs::read(&path).unwrap();
    assert_eq!(&second[MIB..MIB + 4096], &[b'b'; 4096][..]);
    assert_eq!(&second[MIB - 1..MIB], b"a");

    // mmap of the passed-through file maps the server's file, with the write in it.
    let map = mmap_read(&path, 4 * MIB);
    assert_eq!(&map[MIB..MIB + 4096], &[b'b'; 4096][..]);
    assert_eq!(map[0], b'a');

    // The writer grows the file past its old end; the reader reads the new end.
    writer.seek(SeekFrom::Start(4 * MIB as u64)).unwrap();
    writer.write_all(b"tail").unwrap();
    let mut tail = [0u8; 4];
    reader.read_exact_at(&mut tail, 4 * MIB as u64).unwrap();
    assert_eq!(&tail, b"tail");
    // The server did not see that write as a request; stat still tells the new size and
    // mtime, while the writer is open and after it closes.
    let before_close = std::fs::metadata(&path).unwrap();
    assert_eq!(before_close.len(), 4 * MIB as u64 + 4);
    assert_eq!(
        before_close.modified().unwrap(),
        std::fs::metadata(s.export().join("f"))
            .unwrap()
            .modified()
            .unwrap()
    );
    drop((reader, writer));

    // All closed: a writer first (cached), then a reader beside it (cached too, since the
    // kernel holds the inode in one mode), both right; then a reader alone passes through
    // again and sees everything, with no stale page left from the cached opens.
    let mut w = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    w.write_all(b"cached").unwrap();
    let r = std::fs::read(&path).unwrap();
    assert_eq!(&r[..6], b"cached");
    drop(w);
    let mut direct = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    let r = std::fs::File::open(&path).unwrap();
    direct.write_all(b"DIRECT").unwrap();
    drop(direct);
    let mut all = Vec::new();
    (&r).read_to_end(&mut all).unwrap();
    assert_eq!(&all[..6], b"DIRECT");
    assert_eq!(all.len(), 4 * MIB + 4);
    assert_eq!(std::fs::read(s.export().join("f")).unwrap(), all);
    drop(r);
    m.umount();
}

/// Reads `len` bytes of the file at `path` through a read-only shared mapping made by
/// another program (Python's `mmap`), which opens the file itself.
fn mmap_read(path: &Path, len: usize) -> Vec<u8> {
    python(
        "import mmap,sys; f=open(sys.argv[1],'rb'); m=mmap.mmap(f.fileno(),int(sys.argv[2]),prot=mmap.PROT_READ); sys.stdout.buffer.write(m[:])",
        &[path.as_os_str(), len.to_string().as_ref()],
    )
}

#[test]
fn another_clients_writes_reach_a_passed_through_reader_at_once() {
    let s = setup(&[]);
    let a = s.mount("a", &[]);
    let b = s.mount("b", &[]);
    // Made on the server's side: through `a`, its create's release could still be on its
    // way when the reader opens, and the reader would then be cached (and hear of `b`'s
    // write by a notice, a moment later, as `coherence.rs` tests).
    std::fs::write(s.export().join("f"), vec![b'1'; MIB]).unwrap();
    let reader = std::fs::File::open(a.mp.join("f")).unwrap();
    let mut buf = vec![0u8; MIB];
    reader.read_exact_at(&mut buf, 0).unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(b.mp.join("f"))
        .unwrap()
        .write_all_at(&[b'2'; 100], 500)
        .unwrap();
    reader.read_exact_at(&mut buf, 0).unwrap();
    assert_eq!(&buf[500..600], &[b'2'; 100][..], "the other client's write");
    assert_eq!(buf[499], b'1');
    drop(reader);
    b.umount();
    a.umount();
}

#[test]
fn a_server_that_lends_nothing_still_serves_every_read() {
    let s = setup(&["--no-lend"]);
    let m = s.mount("mnt", &[]);
    let data: Vec<u8> = (0..3 * MIB).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(s.export().join("f"), &data).unwrap();
    let pid = s.server.child.id();
    let before = read_by(pid);
    for _ in 0..3 {
        let f = std::fs::File::open(m.mp.join("f")).unwrap();
        let mut got = Vec::new();
        (&f).read_to_end(&mut got).unwrap();
        assert!(got == data);
        let _ = nix::fcntl::posix_fadvise(
            std::os::fd::AsFd::as_fd(&f),
            0,
            0,
            nix::fcntl::PosixFadviseAdvice::POSIX_FADV_DONTNEED,
        );
    }
    assert!(
        read_by(pid) - before >= data.len() as u64,
        "read through the rings"
    );
    m.umount();
}

/// Sends one lending request on a new connection and returns the errno of the reply and
/// whether a descriptor came with it.
fn ask(addr: &str, session: [u8; 16], open: dfs_proto::handle::OpenId) -> (i32, bool) {
    use std::os::linux::net::SocketAddrExt;
    let name = dfs_proto::lend::socket_name(addr.strip_prefix("shm:").unwrap());
    let sa = std::os::unix::net::SocketAddr::from_abstract_name(name).unwrap();
    let mut s = std::os::unix::net::UnixStream::connect_addr(&sa).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(&dfs_proto::lend::LendRequest { session, open }.encode())
        .unwrap();
    let mut reply = [0u8; 4];
    let mut space = nix::cmsg_space!([i32; 1]);
    let mut iov = [std::io::IoSliceMut::new(&mut reply)];
    let msg = nix::sys::socket::recvmsg::<()>(
        s.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        nix::sys::socket::MsgFlags::MSG_CMSG_CLOEXEC,
    )
    .unwrap();
    let fds = msg.cmsgs().unwrap().count();
    assert_eq!(msg.bytes, 4);
    (i32::from_le_bytes(reply), fds > 0)
}

#[test]
fn the_server_lends_only_a_sessions_own_read_only_opens_to_their_user() {
    let s = setup(&[]);
    std::fs::write(s.export().join("f"), b"secret bytes").unwrap();
    let opts = dfs_client::ConnectOptions::new().unwrap();
    let session = opts.session;
    let c = dfs_client::Client::connect(&s.server.addr, opts).unwrap();
    let me = dfs_client::current_creds();
    let h = c
        .lookup(&me, c.root(), &Name::new(b"f").unwrap())
        .unwrap()
        .handle;
    let read_only = OpenFlags {
        read: true,
        ..OpenFlags::default()
    };
    let ro = c.open(&me, &h, read_only).unwrap();
    let rw = c
        .open(
            &me,
            &h,
            OpenFlags {
                read: true,
                write: true,
                ..OpenFlags::default()
            },
        )
        .unwrap();
    let addr = &s.server.addr;
    assert_eq!(ask(addr, session, ro), (0, true), "its own read-only open");
    assert_eq!(
        ask(addr, session, rw),
        (libc::EPERM, false),
        "a writable open grants more than reads"
    );
    let mut other = session;
    other[0] ^= 1;
    assert_eq!(
        ask(addr, other, ro),
        (libc::EBADF, false),
        "another session's open"
    );
    assert_eq!(
        ask(addr, session, dfs_proto::handle::OpenId(ro.0 ^ 1)),
        (libc::EBADF, false),
        "an open that does not exist"
    );
    // A set-user-ID file is not lent: a write with the mount's capabilities would keep the
    // bit that the writer's own would clear.
    std::fs::write(s.export().join("suid"), b"x").unwrap();
    std::fs::set_permissions(
        s.export().join("suid"),
        std::os::unix::fs::PermissionsExt::from_mode(0o4755),
    )
    .unwrap();
    let hs = c
        .lookup(&me, c.root(), &Name::new(b"suid").unwrap())
        .unwrap()
        .handle;
    let suid = c.open(&me, &hs, read_only).unwrap();
    assert_eq!(
        ask(addr, session, suid),
        (libc::EPERM, false),
        "a set-user-ID file"
    );
    // Garbage ends the connection without a reply.
    {
        use std::os::linux::net::SocketAddrExt;
        let name = dfs_proto::lend::socket_name(addr.strip_prefix("shm:").unwrap());
        let sa = std::os::unix::net::SocketAddr::from_abstract_name(name).unwrap();
        let mut g = std::os::unix::net::UnixStream::connect_addr(&sa).unwrap();
        g.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        g.write_all(&[0x55; 32]).unwrap();
        let mut r = Vec::new();
        assert_eq!(g.read_to_end(&mut r).unwrap_or(0), 0);
    }
    // An ordinary user on the host who knows the session and the open is told there is
    // no such open: the session it names is bound to its own uid, not root's.
    let attacker = test_support::test_user("attacker");
    assert_eq!(ask_as(&s, &attacker, session, ro), "4 0 9");
    // On a read-only server, ordinary users are not heard at all (a descriptor reopened
    // through /proc would be checked against their rights, not the export's).
    let ro_server = setup(&["--read-only"]);
    assert_eq!(ask_as(&ro_server, &attacker, session, ro), "dropped");
}

/// What `user` gets for one lending request to `s`'s server, asked by a Python program:
/// "BYTES FDS ERRNO" of the reply, or "dropped".
fn ask_as(
    s: &Setup,
    user: &test_support::TestUser,
    session: [u8; 16],
    open: dfs_proto::handle::OpenId,
) -> String {
    let name = dfs_proto::lend::socket_name(s.server.addr.strip_prefix("shm:").unwrap());
    let script = format!(
        "import socket,sys\n\
         s=socket.socket(socket.AF_UNIX,socket.SOCK_STREAM)\n\
         s.settimeout(10)\n\
         s.connect(b'\\0'+{name:?}.encode())\n\
         try:\n\
         \x20   s.sendall(bytes.fromhex('{req}'))\n\
         \x20   m=s.recvmsg(4,64)\n\
         \x20   print('dropped' if not m[0] else '%d %d %d' % (len(m[0]),len(m[1]),int.from_bytes(m[0],'little')))\n\
         except (BrokenPipeError,ConnectionResetError):\n\
         \x20   print('dropped')\n",
        name = String::from_utf8(name).unwrap(),
        req = dfs_proto::lend::LendRequest { session, open }
            .encode()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>(),
    );
    std::fs::write(s.tmp.path().join("ask.py"), script).unwrap();
    std::fs::set_permissions(
        s.tmp.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let out = sh_as(
        user,
        s.tmp.path(),
        "python3 ask.py 2>&1",
        Duration::from_secs(30),
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// `truncate(path)` and `open(O_TRUNC)` name no open; the mount passes one of the file's
/// opens along, and a reader's must not make them fail (`ftruncate` of a read-only
/// descriptor is `EINVAL`), whether the reader passes through or not.
#[test]
fn a_truncate_by_path_beside_a_reader_truncates() {
    let s = setup(&[]);
    for (name, opts) in [("pass", &[][..]), ("rings", &["nopassthrough"][..])] {
        let m = s.mount(name, opts);
        let path = m.mp.join(format!("t-{name}"));
        std::fs::write(&path, vec![b'z'; 10_000]).unwrap();
        let reader = std::fs::File::open(&path).unwrap();
        nix::unistd::truncate(&path, 100).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 100, "{name}");
        let mut w = std::fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(&path)
            .unwrap();
        w.write_all(b"new").unwrap();
        drop(w);
        let mut got = Vec::new();
        (&reader).read_to_end(&mut got).unwrap();
        assert_eq!(got, b"new", "{name}");
        drop(reader);
        m.umount();
    }
}
