//! A round of file operations against a `dfs-server`, through the client library alone: what
//! a Windows build under Wine runs against a Linux server to show the stack works there.
//!
//! ```text
//! dfs_smoke ADDR SECRET_FILE NAME MIB
//! ```
//!
//! Makes directory NAME under the export's root, writes MIB MiB into a file there, reads it
//! back in place and compares, lists the directory, then removes both. Prints
//! `ok write_mib_per_s X read_mib_per_s Y` and exits 0, or says what failed and exits 1.

use std::time::Instant;

use dfs_client::{current_creds, Client, ConnectOptions};
use dfs_proto::auth::Secret;
use dfs_proto::frame::MAX_DATA;
use dfs_proto::msg::OpenFlags;
use dfs_proto::name::Name;

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

fn pattern(i: u64) -> u8 {
    (i.wrapping_mul(7) ^ (i >> 10)) as u8
}

fn errno(what: &'static str) -> impl Fn(dfs_proto::Errno) -> Box<dyn std::error::Error> {
    move |e| format!("{what}: {e:?}").into()
}

fn run(addr: &str, secret: &str, name: &str, mib: u64) -> Result<(f64, f64)> {
    let mut opts = ConnectOptions::new()?;
    opts.secret = Some(Secret::from_file_bytes(&std::fs::read(secret)?)?);
    let client = Client::connect(addr, opts)?;
    let creds = current_creds();
    let root = client.root().clone();
    let dir_name = Name::new(name.as_bytes())?;
    let dir = client
        .mkdir(&creds, &root, &dir_name, 0o755)
        .map_err(errno("mkdir"))?;
    let file_name = Name::new(b"data")?;
    let flags = OpenFlags {
        read: true,
        write: true,
        ..OpenFlags::default()
    };
    let (file, open, _) = client
        .create(&creds, &dir.handle, &file_name, 0o644, flags)
        .map_err(errno("create"))?;
    let total = mib << 20;
    let chunk: Vec<u8> = (0..MAX_DATA as u64).map(pattern).collect();

    let start = Instant::now();
    let mut at = 0u64;
    while at < total {
        let (n, _) = client
            .write(&creds, &file.handle, Some(open), at, false, &chunk)
            .map_err(errno("write"))?;
        if n as usize != chunk.len() {
            return Err(format!("a write took {n} of {} bytes", chunk.len()).into());
        }
        at += u64::from(n);
    }
    let wrote = start.elapsed();

    let start = Instant::now();
    let mut at = 0u64;
    while at < total {
        let same = client
            .read_with(
                &creds,
                &file.handle,
                Some(open),
                at,
                MAX_DATA as u32,
                |data, _eof| {
                    let mut got = vec![0u8; data.len()];
                    data.copy_to(&mut got);
                    got == chunk[..got.len()] && got.len() == chunk.len()
                },
            )
            .map_err(errno("read"))?;
        if !same {
            return Err(format!("the bytes read at {at} differ from those written").into());
        }
        at += MAX_DATA as u64;
    }
    let read = start.elapsed();

    let (page, _) = client
        .list_dir(&creds, &dir.handle, 0, 100, false)
        .map_err(errno("list"))?;
    if !page.entries.iter().any(|e| e.name == b"data") {
        return Err("the listing does not show the file".into());
    }
    client.release(&creds, open).map_err(errno("release"))?;
    client
        .unlink(&creds, &dir.handle, &file_name)
        .map_err(errno("unlink"))?;
    client
        .rmdir(&creds, &root, &dir_name)
        .map_err(errno("rmdir"))?;
    let mibs = mib as f64;
    Ok((mibs / wrote.as_secs_f64(), mibs / read.as_secs_f64()))
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, addr, secret, name, mib] = &args[..] else {
        eprintln!("usage: dfs_smoke ADDR SECRET_FILE NAME MIB");
        std::process::exit(2);
    };
    let outcome = mib
        .parse::<u64>()
        .map_err(Into::into)
        .and_then(|mib| run(addr, secret, name, mib));
    match outcome {
        Ok((w, r)) => println!("ok write_mib_per_s {w:.1} read_mib_per_s {r:.1}"),
        Err(e) => {
            eprintln!("dfs_smoke: {e}");
            std::process::exit(1);
        }
    }
}
