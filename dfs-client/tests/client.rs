//! The client library against a real server in this process: typed calls, reads in place, a
//! server restart that the client rides out, and a server that stays gone.

use std::time::{Duration, Instant};

use dfs_client::{current_creds, Client, ConnectOptions};
use dfs_proto::msg::{OpenFlags, RenameMode};
use dfs_proto::name::Name;
use dfs_proto::Errno;
use dfs_server::{Config, Server, Squash};

fn config(export: &std::path::Path, addr: &str) -> Config {
    let mut c = Config::new(export, addr, [7u8; 32]);
    c.squash = Squash::None;
    c
}

fn n(s: &str) -> Name {
    Name::new(s.as_bytes()).unwrap()
}

#[test]
fn typed_calls_survive_a_server_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let addr = format!("shm:dfs-client-t-{}", std::process::id());
    let server = Server::bind(config(tmp.path(), &addr))
        .unwrap()
        .spawn()
        .unwrap();
    let mut opts = ConnectOptions::new().unwrap();
    opts.timeout = Duration::from_secs(3);
    let client = Client::connect(&addr, opts).unwrap();
    let me = current_creds();
    let root = client.root().clone();
    let d = client.mkdir(&me, &root, &n("d"), 0o755).unwrap();
    let rw = OpenFlags {
        read: true,
        write: true,
        ..Default::default()
    };
    let (f, open, made) = client.create(&me, &d.handle, &n("f"), 0o644, rw).unwrap();
    assert!(made, "a new name is made by the create");
    let (len, attr) = client
        .write(&me, &f.handle, Some(open), 0, false, b"0123456789")
        .unwrap();
    // The reply says what the write made of the file.
    assert_eq!((len, attr.size), (10, 10));
    let got = client
        .read_with(&me, &f.handle, Some(open), 2, 4, |data, eof| {
            (data.to_vec(), eof)
        })
        .unwrap();
    assert_eq!(got, (b"2345".to_vec(), false));
    client
        .rename(
            &me,
            &d.handle,
            &n("f"),
            &d.handle,
            &n("g"),
            RenameMode::NoReplace,
        )
        .unwrap();
    assert_eq!(
        client.lookup(&me, &d.handle, &n("f")).unwrap_err(),
        Errno::ENOENT
    );
    assert_eq!(
        client
            .readdir(&me, &d.handle, 0, 100)
            .unwrap()
            .entries
            .len(),
        3
    );

    // Restart: pooled connections are dead, the handles are not.
    server.stop().unwrap();
    let server = Server::bind(config(tmp.path(), &addr))
        .unwrap()
        .spawn()
        .unwrap();
    assert_eq!(
        client.read(&me, &f.handle, Some(open), 0, 100).unwrap(),
        b"0123456789"
    );
    assert_eq!(client.getattr(&me, &f.handle, None).unwrap().size, 10);
    // A write (not idempotent) on a connection that died before it was sent is safe to send
    // again on a new one.
    server.stop().unwrap();
    let server = Server::bind(config(tmp.path(), &addr))
        .unwrap()
        .spawn()
        .unwrap();
    assert_eq!(
        client
            .write(&me, &f.handle, None, 10, false, b"!")
            .unwrap()
            .0,
        1
    );
    assert_eq!(
        std::fs::read(tmp.path().join("d/g")).unwrap(),
        b"0123456789!"
    );

    // Gone for good: calls fail with ENOTCONN within the timeout, not never.
    server.stop().unwrap();
    let mut opts = ConnectOptions::new().unwrap();
    opts.timeout = Duration::from_secs(1);
    let start = Instant::now();
    assert_eq!(
        client.getattr(&me, &root, None).unwrap_err(),
        Errno::ENOTCONN
    );
    assert!(start.elapsed() < Duration::from_secs(15));
    assert!(Client::connect(&addr, opts).is_err());
}
