//! A program written against Rust's `std::fs` and nothing else, for the Windows face's
//! tests: it builds a tree under the directory it is given, copies, lists, renames, reads,
//! appends, truncates and removes it all, printing what it sees. The tests run it on a local
//! Wine drive and on the DFS through `dfs-run.exe` and compare the two outputs.

use std::fs::{self, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

fn walk(dir: &Path, base: &Path, out: &mut Vec<String>) -> std::io::Result<()> {
    for e in fs::read_dir(dir)? {
        let e = e?;
        let p = e.path();
        let rel = p.strip_prefix(base).unwrap_or(&p).display().to_string();
        let m = e.metadata()?;
        if m.is_dir() {
            out.push(format!("{rel}/ dir"));
            walk(&p, base, out)?;
        } else {
            out.push(format!("{rel} {} bytes", m.len()));
        }
    }
    Ok(())
}

fn run(base: &Path) -> std::io::Result<()> {
    let root = base.join("tree");
    fs::create_dir_all(root.join("a").join("b").join("c"))?;
    fs::write(root.join("a").join("one.txt"), "one")?;
    let big: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    fs::write(root.join("a").join("b").join("two.bin"), &big)?;
    let n = fs::copy(
        root.join("a").join("b").join("two.bin"),
        root.join("a").join("b").join("c").join("three.bin"),
    )?;
    println!("copied {n} bytes");
    let back = fs::read(root.join("a").join("b").join("c").join("three.bin"))?;
    println!("copy is the same: {}", back == big);
    fs::rename(
        root.join("a").join("one.txt"),
        root.join("a").join("uno.txt"),
    )?;
    println!(
        "renamed: {}",
        fs::read_to_string(root.join("a").join("uno.txt"))?
    );
    let mut f = OpenOptions::new()
        .append(true)
        .open(root.join("a").join("uno.txt"))?;
    f.write_all(b", dos")?;
    drop(f);
    println!(
        "appended: {}",
        fs::read_to_string(root.join("a").join("uno.txt"))?
    );
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(root.join("a").join("b").join("two.bin"))?;
    f.seek(SeekFrom::Start(1000))?;
    let mut chunk = [0u8; 8];
    f.read_exact(&mut chunk)?;
    println!("at 1000: {chunk:?}");
    f.set_len(4096)?;
    println!("set_len: {}", f.metadata()?.len());
    drop(f);
    let m = fs::metadata(root.join("a"))?;
    println!(
        "a is a dir: {}, read-only: {}",
        m.is_dir(),
        m.permissions().readonly()
    );
    println!(
        "missing: {:?}",
        fs::metadata(root.join("missing")).map_err(|e| e.kind())
    );
    let mut listing = Vec::new();
    walk(&root, &root, &mut listing)?;
    listing.sort();
    for l in &listing {
        println!("  {}", l.replace('\\', "/"));
    }
    fs::remove_file(root.join("a").join("uno.txt"))?;
    println!(
        "remove_dir on a full dir: {:?}",
        fs::remove_dir(root.join("a")).map_err(|e| e.raw_os_error())
    );
    fs::remove_dir_all(&root)?;
    println!("removed all: {}", !root.exists());
    Ok(())
}

fn main() {
    let Some(base) = std::env::args_os().nth(1).map(PathBuf::from) else {
        eprintln!("usage: std_fs DIR");
        std::process::exit(2);
    };
    if let Err(e) = run(&base) {
        println!("error: {e}");
        std::process::exit(1);
    }
}
