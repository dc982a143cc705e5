//! Unmodified programs through the shim, compared byte for byte with the same programs on a
//! local directory: what they print, and the files they leave (read back from the server's
//! export, so the bytes really went to the server). As root and as an ordinary user.

mod common;

use std::path::Path;

use common::*;
use test_support::{test_user, TestUser};

/// Everyday programs on `$D`. Everything printed must be the same on a local directory and
/// under the shim; so must the tree left behind (but for what holds times: the tar file and
/// git's objects).
const PROGRAMS: &str = r#"
mkdir -p $D/src/sub $D/out
for i in 1 2 3 4 5; do seq 1 $((i*1000)) > $D/src/f$i.txt; done
printf 'hello world\nfoo bar\n' > $D/src/sub/g.txt
ln -s f1.txt $D/src/link
echo "== cat"; cat $D/src/f1.txt $D/src/link | tail -3
echo "== dd"; dd if=/dev/zero bs=64k count=20 of=$D/out/zero status=none
dd if=$D/src/f5.txt of=$D/out/dd.txt bs=4k status=none; cmp $D/src/f5.txt $D/out/dd.txt && echo same
dd if=$D/src/f4.txt bs=1000 skip=3 count=2 status=none | md5sum
echo "== cp -a"; cp -a $D/src $D/copy; (cd $D && find copy | sort); diff -r $D/src $D/copy
echo "== sha256sum"; (cd $D/src && sha256sum f*.txt sub/g.txt)
echo "== tar"; (cd $D && tar cf out/t.tar src && mkdir -p x && tar xf out/t.tar -C x && diff -r src x/src && tar tf out/t.tar | sort)
echo "== find"; (cd $D && find src -type f -name '*.txt' | sort; find src -type l)
echo "== ls -l"; ls -l $D/src | awk '{print $1, $3, $5, $9, $10, $11}'; ls -la $D/src/sub | wc -l
echo "== grep -r"; (cd $D && grep -r 'hello' src; grep -rc '99' src | sort)
echo "== sort"; sort -r $D/src/f2.txt > $D/out/sorted; head -3 $D/out/sorted
(cd $D/out && sort -n sorted | tail -1 > last); cat $D/out/last
echo "== sqlite3"; sqlite3 $D/out/db.sqlite "create table t(a integer primary key, b text); with recursive c(x) as (select 1 union all select x+1 from c where x<20000) insert into t(b) select 'row'||x from c; select count(*), sum(length(b)) from t; pragma integrity_check;"
sqlite3 $D/out/db.sqlite "select b from t where a in (1, 9999, 20000);"
echo "== python3"; python3 -c "
import os, sys
d = sys.argv[1]
with open(d + '/out/py.txt', 'w') as f:
    for i in range(1000): f.write('line %d\n' % i)
with open(d + '/out/py.txt') as f: data = f.read()
print(len(data), data.count('\n'))
with open(d + '/out/py.txt', 'r+b') as f:
    f.seek(5); f.write(b'X'); f.seek(0); print(f.read(12))
os.rename(d + '/out/py.txt', d + '/out/py2.txt')
print(sorted(os.listdir(d + '/out')))
" $D
echo "== git"; (cd $D && mkdir repo && cd repo && git init -q && git config user.email t@example.invalid \
  && git config user.name t && cp ../src/f1.txt ../src/f2.txt . && git add . && git commit -qm one \
  && echo more >> f1.txt && git commit -qam two && git fsck --strict && git log --format=%s && git status --short)
echo "== cc"; (cd $D/out && printf '#include <stdio.h>\nint main(void){puts("hi");return 0;}\n' > hi.c && cc -O2 -o hi hi.c && test -x hi && echo compiled)
"#;

/// The tree under `dir` as `find` and `sha256sum` see it (modes, sizes, link targets and
/// contents), leaving out what holds times.
fn tree(dir: &Path) -> String {
    let out = run(std::process::Command::new("bash").arg("-c").arg(
        r#"cd "$1" && find . \( -path ./repo/.git -o -name t.tar \) -prune -o -printf '%y %m %s %p %l\n' | sort \
           && find . \( -path ./repo/.git -o -name t.tar \) -prune -o -type f -print0 | sort -z | xargs -0 sha256sum"#,
    ).arg("-").arg(dir));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// How the server is reached.
enum Via {
    Shm,
    /// tcp on loopback, with a shared secret (`dfs run --secret`).
    TcpWithSecret,
}

fn programs_match(user: Option<&TestUser>) {
    programs_match_via(user, Via::Shm)
}

fn programs_match_via(user: Option<&TestUser>, via: Via) {
    let tmp = open_tempdir();
    let bins = Bins::new();
    let export = tmp.path().join("export");
    let local = tmp.path().join("local");
    std::fs::create_dir(&export).unwrap();
    std::fs::create_dir(&local).unwrap();
    std::fs::create_dir(export.join("w")).unwrap();
    if let Some(u) = user {
        for d in [&local, &export.join("w")] {
            nix::unistd::chown(d, Some(u.uid.into()), Some(u.gid.into())).unwrap();
        }
    }
    let secret = tmp.path().join("secret");
    std::fs::write(&secret, "a-shared-secret-of-the-test-0123456789\n").unwrap();
    let secret_s = secret.to_string_lossy().into_owned();
    let (server, run_args) = match via {
        Via::Shm => (
            ServerProc::start(&export, &tmp.path().join("key"), &[]),
            vec![],
        ),
        Via::TcpWithSecret => (
            ServerProc::launch(
                &[],
                "tcp:127.0.0.1:0",
                &export,
                &tmp.path().join("key"),
                &["--squash", "none", "--secret", &secret_s],
            ),
            vec!["--secret", secret_s.as_str()],
        ),
    };
    let local_dir = local.to_string_lossy().into_owned();
    let on_local = ok(
        script(&bins, user, None, &[], &local_dir, PROGRAMS),
        "on a local directory",
    );
    let on_dfs = ok(
        script(
            &bins,
            user,
            Some(&server.addr),
            &run_args,
            "/dfs/w",
            PROGRAMS,
        ),
        "through the shim",
    );
    // Paths differ only in the directory's name.
    let on_dfs = on_dfs.replace("/dfs/w", &local_dir);
    assert_eq!(on_local, on_dfs, "the programs said different things");
    assert!(
        on_local.contains("ok\n"),
        "sqlite's integrity_check: {on_local}"
    );
    assert!(on_local.contains("compiled"), "{on_local}");
    assert_eq!(tree(&local), tree(&export.join("w")), "the trees differ");
    if let Some(u) = user {
        // What the user made is theirs on the server.
        let out = run(std::process::Command::new("find")
            .arg(export.join("w"))
            .args(["!", "-uid", &u.uid.to_string()]));
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "",
            "files not the user's"
        );
    }
}

#[test]
fn programs_match_a_local_directory_as_root() {
    programs_match(None);
}

#[test]
fn programs_match_a_local_directory_as_a_user() {
    programs_match(Some(&test_user("user")));
}

#[test]
fn programs_match_a_local_directory_over_tcp_with_a_secret() {
    programs_match_via(None, Via::TcpWithSecret);
}
