//! Replays the `proto` fuzz corpus on the stable toolchain, and keeps its seeds honest: one
//! encoded example of every message kind.

use std::path::{Path, PathBuf};

use dfs_proto::attr::{Attr, Entry, SetAttr, SetTime, StatFs, Timestamp};
use dfs_proto::codec;
use dfs_proto::handle::{FileHandle, OpenId};
use dfs_proto::msg::*;
use dfs_proto::name::{LinkTarget, Name, XattrName};
use dfs_proto::Errno;

fn corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/proto")
}

/// One of every request and reply, as frames.
fn seeds() -> Vec<Vec<u8>> {
    let h = FileHandle::new(vec![1; 40]).unwrap();
    let n = Name::new(b"name").unwrap();
    let o = Some(OpenId(77));
    let attr = Attr {
        ino: 5,
        size: 6,
        blocks: 1,
        atime: Timestamp::default(),
        mtime: Timestamp { secs: -1, nanos: 5 },
        ctime: Timestamp::default(),
        mode: 0o100644,
        nlink: 1,
        uid: 1,
        gid: 2,
        rdev: 0,
        blksize: 4096,
    };
    let entry = Entry {
        handle: h.clone(),
        attr,
    };
    let ops = vec![
        Op::Lookup {
            dir: h.clone(),
            name: n.clone(),
        },
        Op::GetAttr {
            handle: h.clone(),
            open: o,
        },
        Op::SetAttr {
            handle: h.clone(),
            open: None,
            set: SetAttr {
                mode: Some(0o755),
                uid: Some(1),
                gid: None,
                size: Some(9),
                atime: Some(SetTime::Now),
                mtime: Some(SetTime::At(Timestamp { secs: 3, nanos: 4 })),
            },
        },
        Op::ReadDir {
            dir: h.clone(),
            cookie: 12,
            max_entries: 100,
        },
        Op::Open {
            handle: h.clone(),
            flags: OpenFlags {
                read: true,
                ..Default::default()
            },
        },
        Op::Create {
            dir: h.clone(),
            name: n.clone(),
            mode: 0o644,
            flags: OpenFlags {
                write: true,
                exclusive: true,
                ..Default::default()
            },
        },
        Op::Read {
            handle: h.clone(),
            open: o,
            offset: 4096,
            len: 1 << 20,
        },
        Op::Write {
            handle: h.clone(),
            open: o,
            offset: 0,
            append: true,
        },
        Op::Mkdir {
            dir: h.clone(),
            name: n.clone(),
            mode: 0o755,
        },
        Op::Mknod {
            dir: h.clone(),
            name: n.clone(),
            mode: 0o10644,
            rdev: 0,
        },
        Op::Unlink {
            dir: h.clone(),
            name: n.clone(),
        },
        Op::Rmdir {
            dir: h.clone(),
            name: n.clone(),
        },
        Op::Rename {
            from_dir: h.clone(),
            from: n.clone(),
            to_dir: h.clone(),
            to: n.clone(),
            mode: RenameMode::Exchange,
        },
        Op::Link {
            handle: h.clone(),
            dir: h.clone(),
            name: n.clone(),
        },
        Op::Symlink {
            dir: h.clone(),
            name: n.clone(),
            target: LinkTarget::new(b"../t").unwrap(),
        },
        Op::ReadLink { handle: h.clone() },
        Op::StatFs { handle: h.clone() },
        Op::Fsync {
            handle: h.clone(),
            open: o,
            datasync: true,
        },
        Op::Flush {
            handle: h.clone(),
            open: OpenId(1),
        },
        Op::Release { open: OpenId(1) },
        Op::Fallocate {
            handle: h.clone(),
            open: o,
            mode: 1,
            offset: 0,
            len: 10,
        },
        Op::GetXattr {
            handle: h.clone(),
            name: XattrName::new(b"user.a").unwrap(),
            size: 0,
        },
        Op::SetXattr {
            handle: h.clone(),
            name: XattrName::new(b"user.a").unwrap(),
            value: b"v".to_vec(),
            flags: 1,
        },
        Op::ListXattr {
            handle: h.clone(),
            size: 10,
        },
        Op::RemoveXattr {
            handle: h.clone(),
            name: XattrName::new(b"user.a").unwrap(),
        },
        Op::Stats,
        Op::ListDir {
            dir: h.clone(),
            cookie: 12,
            max_entries: 4096,
            attrs: false,
        },
    ];
    let bodies = vec![
        Ok(Body::Done),
        Ok(Body::Entry(entry.clone())),
        Ok(Body::Attr(attr)),
        Ok(Body::Dir(DirPage {
            entries: vec![
                DirEntry {
                    name: b"..".to_vec(),
                    kind: dfs_proto::attr::FileKind::Directory,
                    ino: 2,
                    cookie: 3,
                    entry: None,
                },
                DirEntry {
                    name: b"f".to_vec(),
                    kind: dfs_proto::attr::FileKind::Regular,
                    ino: 5,
                    cookie: 9,
                    entry: Some(entry.clone()),
                },
            ],
            eof: true,
        })),
        Ok(Body::Opened {
            open: OpenId(3),
            entry: Some(entry),
            created: true,
        }),
        Ok(Body::Read { eof: true }),
        Ok(Body::Written {
            len: 7,
            attr: dfs_proto::attr::Attr::default(),
        }),
        Ok(Body::Target(LinkTarget::new(b"/x").unwrap())),
        Ok(Body::StatFs(StatFs::default())),
        Ok(Body::XattrSize(5)),
        Ok(Body::XattrData(b"user.a\0".to_vec())),
        Ok(Body::Stats(TransferStats {
            deposited: 1,
            fetched: 2,
            copied: 3,
        })),
        Ok(Body::Listing {
            page: DirPage {
                entries: vec![DirEntry {
                    name: b"g".to_vec(),
                    kind: dfs_proto::attr::FileKind::Symlink,
                    ino: 6,
                    cookie: 11,
                    entry: None,
                }],
                eof: false,
            },
            dir: attr,
        }),
        Err(Errno::ESTALE),
    ];
    let frame = |meta: Vec<u8>, data: usize| {
        let mut f = vec![0u8; dfs_proto::frame::HEADER + meta.len()];
        codec::emit_head(&mut f, &RawMeta(meta), data).unwrap();
        f.extend(std::iter::repeat_n(0xab, data));
        f
    };
    let mut out = Vec::new();
    for (i, op) in ops.into_iter().enumerate() {
        let data = if matches!(op, Op::Write { .. }) {
            16
        } else {
            0
        };
        out.push(frame(
            codec::encode_to_vec(&Request {
                id: i as u64,
                creds: Creds {
                    uid: 1,
                    gid: 2,
                    groups: vec![3, 4],
                },
                op,
            })
            .unwrap(),
            data,
        ));
    }
    for (i, result) in bodies.into_iter().enumerate() {
        out.push(frame(
            codec::encode_to_vec(&Reply {
                id: i as u64,
                result,
            })
            .unwrap(),
            0,
        ));
    }
    out.push(frame(
        codec::encode_to_vec(&ClientHello {
            magic: MAGIC,
            min_version: 1,
            max_version: 3,
            client_nonce: [7; 32],
            session: [8; 16],
        })
        .unwrap(),
        0,
    ));
    out.push(frame(
        codec::encode_to_vec(&ServerChallenge::Challenge {
            version: 1,
            server_nonce: [9; 32],
            auth: AuthMode::Secret,
        })
        .unwrap(),
        0,
    ));
    out.push(frame(
        codec::encode_to_vec(&ServerChallenge::Refused {
            errno: Errno::EPROTO,
            reason: "no".into(),
        })
        .unwrap(),
        0,
    ));
    out.push(frame(
        codec::encode_to_vec(&ClientProof { proof: [1; 32] }).unwrap(),
        0,
    ));
    out.push(frame(
        codec::encode_to_vec(&ServerVerdict::Welcome {
            root: h,
            server_proof: [2; 32],
            read_only: true,
        })
        .unwrap(),
        0,
    ));
    out.push(frame(
        codec::encode_to_vec(&ServerVerdict::Refused {
            errno: Errno::EACCES,
            reason: "bad".into(),
        })
        .unwrap(),
        0,
    ));
    out
}

/// Already-encoded bytes, written as they are (the frame helper encodes its meta argument).
struct RawMeta(Vec<u8>);

impl serde::Serialize for RawMeta {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeTuple;
        let mut t = s.serialize_tuple(self.0.len())?;
        for b in &self.0 {
            t.serialize_element(b)?;
        }
        t.end()
    }
}

#[test]
fn every_seed_decodes_to_what_was_encoded() {
    for s in seeds() {
        dfs_proto::fuzzing::decode_any(&s);
        let f = dfs_proto::frame::Frame::parse(&s).unwrap().unwrap();
        assert_eq!(f.len(), s.len());
        let ok = codec::decode::<Request>(f.meta).is_ok()
            || codec::decode::<Reply>(f.meta).is_ok()
            || codec::decode::<ClientHello>(f.meta).is_ok()
            || codec::decode::<ServerChallenge>(f.meta).is_ok()
            || codec::decode::<ClientProof>(f.meta).is_ok()
            || codec::decode::<ServerVerdict>(f.meta).is_ok();
        assert!(ok, "a seed that decodes as nothing");
    }
}

/// Writes the seeds into the corpus directory (run by hand before fuzzing:
/// `cargo test -p dfs-proto --test fuzz_corpus -- --ignored`).
#[test]
#[ignore = "writes the seed corpus; run by hand"]
fn write_seed_corpus() {
    std::fs::create_dir_all(corpus()).unwrap();
    for (i, s) in seeds().into_iter().enumerate() {
        std::fs::write(corpus().join(format!("seed-{i:02}")), s).unwrap();
    }
}

#[test]
fn proto_corpus_replays_cleanly() {
    let dir = corpus();
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let data = std::fs::read(entry.unwrap().path()).unwrap();
        dfs_proto::fuzzing::decode_any(&data);
        n += 1;
    }
    assert!(n >= 20, "the corpus in {} is missing", dir.display());
}
