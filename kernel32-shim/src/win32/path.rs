//! Which Windows paths are the DFS's, and their components, as Win32 normalises them.
//!
//! A prefix is a drive (`M:`) or a UNC share (`\\dfs\export`). `GetFullPathNameW` rules
//! apply: either slash separates, `\\?\` is taken off, `.` is dropped and `..` goes back one
//! component (never above the prefix's root), and trailing dots and spaces are trimmed from
//! each component. A drive-relative path (`M:name`) is taken from the drive's root: the DFS
//! drive's current directory is always its root, since no process can `cd` into a drive the
//! system does not know.

/// Characters Win32 refuses in a file name (besides the separators and control characters).
const FORBIDDEN: &[u16] = &[
    b'<' as u16,
    b'>' as u16,
    b':' as u16,
    b'"' as u16,
    b'|' as u16,
    b'?' as u16,
    b'*' as u16,
];

/// A configured prefix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Prefix {
    /// A drive letter, upper case.
    Drive(u16),
    /// `\\server\share`, its two parts lower case (matching is case-insensitive).
    Unc(Vec<u16>, Vec<u16>),
}

/// Why a path is not a usable DFS path, as the Win32 code a local drive gives.
pub const ERROR_INVALID_NAME: u32 = 123;

impl Prefix {
    /// Parses `M:` or `\\server\share` (either slash).
    pub fn parse(s: &str) -> Result<Prefix, String> {
        let w: Vec<u16> = s.encode_utf16().collect();
        if w.len() == 2 && w[1] == b':' as u16 && is_letter(w[0]) {
            return Ok(Prefix::Drive(upper(w[0])));
        }
        if w.len() > 2 && is_sep(w[0]) && is_sep(w[1]) {
            let parts: Vec<&[u16]> = w[2..].split(|&c| is_sep(c)).collect();
            if let [server, share] = parts[..] {
                if !server.is_empty() && !share.is_empty() {
                    return Ok(Prefix::Unc(lower(server), lower(share)));
                }
            }
        }
        Err(format!(
            "{s:?} is not a drive (M:) or a share (\\\\server\\share)"
        ))
    }

    /// The prefix as Win32 writes it (`M:` or `\\server\share`).
    pub fn display(&self) -> Vec<u16> {
        match self {
            Prefix::Drive(d) => vec![*d, b':' as u16],
            Prefix::Unc(server, share) => {
                let mut v = vec![b'\\' as u16, b'\\' as u16];
                v.extend_from_slice(server);
                v.push(b'\\' as u16);
                v.extend_from_slice(share);
                v
            }
        }
    }

    /// The components below the prefix if `path` is under it (`None` if it is not, so the
    /// system's call serves it); an `Err` is a DFS path with a name Win32 refuses.
    pub fn components(&self, path: &[u16]) -> Option<Result<Vec<String>, u32>> {
        let path = strip_verbatim(path);
        let path = &path[..];
        let rest = match self {
            Prefix::Drive(d) => {
                if path.len() < 2 || upper(path[0]) != *d || path[1] != b':' as u16 {
                    return None;
                }
                &path[2..]
            }
            Prefix::Unc(server, share) => {
                if path.len() < 2 || !is_sep(path[0]) || !is_sep(path[1]) {
                    return None;
                }
                let mut parts = path[2..].splitn(3, |&c| is_sep(c));
                let s = parts.next()?;
                let sh = parts.next()?;
                if lower(s) != *server || lower(sh) != *share {
                    return None;
                }
                let used = 2 + s.len() + 1 + sh.len();
                &path[used.min(path.len())..]
            }
        };
        Some(normalise(rest))
    }

    /// The full path of `components` (what `GetFullPathNameW` returns for a DFS path).
    pub fn full_path(&self, components: &[String]) -> Vec<u16> {
        let mut v = self.display();
        if components.is_empty() {
            v.push(b'\\' as u16);
        }
        for c in components {
            v.push(b'\\' as u16);
            v.extend(c.encode_utf16());
        }
        v
    }
}

/// The components of a path below its prefix, `.` and `..` applied.
fn normalise(rest: &[u16]) -> Result<Vec<String>, u32> {
    let mut out: Vec<String> = Vec::new();
    for raw in rest.split(|&c| is_sep(c)) {
        if raw == [b'.' as u16, b'.' as u16] {
            out.pop();
            continue;
        }
        // `a\b`, `.`, and components of dots and spaces only, which trim to nothing.
        let c = trim_dots_and_spaces(raw);
        if c.is_empty() {
            continue;
        }
        if c.iter().any(|&x| x < 0x20 || FORBIDDEN.contains(&x)) {
            return Err(ERROR_INVALID_NAME);
        }
        out.push(String::from_utf16(c).map_err(|_| ERROR_INVALID_NAME)?);
    }
    Ok(out)
}

/// Win32 drops trailing dots and spaces from a component (`"name. "` is `"name"`).
fn trim_dots_and_spaces(c: &[u16]) -> &[u16] {
    let mut end = c.len();
    while end > 0 && (c[end - 1] == b'.' as u16 || c[end - 1] == b' ' as u16) {
        end -= 1;
    }
    &c[..end]
}

/// `p` without a `\\?\` or `\\.\` prefix; `\\?\UNC\server\share` becomes
/// `\\server\share`.
fn strip_verbatim(p: &[u16]) -> std::borrow::Cow<'_, [u16]> {
    let verbatim: Vec<u16> = r"\\?\".encode_utf16().collect();
    let device: Vec<u16> = r"\\.\".encode_utf16().collect();
    if !(p.starts_with(&verbatim) || p.starts_with(&device)) {
        return p.into();
    }
    let rest = &p[4..];
    let unc: Vec<u16> = r"UNC\".encode_utf16().collect();
    if rest.len() >= 4 && rest[..4].iter().map(|&c| upper(c)).eq(unc.iter().copied()) {
        let mut v = vec![b'\\' as u16, b'\\' as u16];
        v.extend_from_slice(&rest[4..]);
        return v.into();
    }
    rest.into()
}

/// Whether `c` separates components.
pub fn is_sep(c: u16) -> bool {
    c == b'\\' as u16 || c == b'/' as u16
}

fn is_letter(c: u16) -> bool {
    (b'a' as u16..=b'z' as u16).contains(&c) || (b'A' as u16..=b'Z' as u16).contains(&c)
}

fn upper(c: u16) -> u16 {
    if (b'a' as u16..=b'z' as u16).contains(&c) {
        c - 32
    } else {
        c
    }
}

fn lower(s: &[u16]) -> Vec<u16> {
    s.iter()
        .map(|&c| {
            if (b'A' as u16..=b'Z' as u16).contains(&c) {
                c + 32
            } else {
                c
            }
        })
        .collect()
}

/// Whether `name` matches the `FindFirstFileW` pattern `pat` (`*`, `?`; case-insensitive for
/// ASCII, as NTFS compares names). `*.*` matches every name, as it does on Windows.
pub fn matches(pat: &str, name: &str) -> bool {
    if pat == "*" || pat == "*.*" {
        return true;
    }
    let p: Vec<char> = pat.chars().map(|c| c.to_ascii_lowercase()).collect();
    let n: Vec<char> = name.chars().map(|c| c.to_ascii_lowercase()).collect();
    // Iterative wildcard matching with one backtrack point.
    let (mut i, mut j) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while j < n.len() {
        if i < p.len() && (p[i] == '?' || p[i] == n[j]) {
            i += 1;
            j += 1;
        } else if i < p.len() && p[i] == '*' {
            star = Some(i);
            mark = j;
            i += 1;
        } else if let Some(s) = star {
            i = s + 1;
            mark += 1;
            j = mark;
        } else {
            return false;
        }
    }
    while i < p.len() && p[i] == '*' {
        i += 1;
    }
    i == p.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(s: &str) -> Vec<u16> {
        s.encode_utf16().collect()
    }

    fn comps(p: &Prefix, s: &str) -> Option<Result<Vec<String>, u32>> {
        p.components(&w(s))
    }

    #[test]
    fn drives_match_case_insensitively_and_normalise() {
        let m = Prefix::parse("m:").unwrap();
        assert_eq!(m, Prefix::Drive(b'M' as u16));
        assert_eq!(comps(&m, r"M:\a\b"), Some(Ok(vec!["a".into(), "b".into()])));
        assert_eq!(
            comps(&m, r"m:/a/./b/../c"),
            Some(Ok(vec!["a".into(), "c".into()]))
        );
        assert_eq!(comps(&m, r"M:\..\..\x"), Some(Ok(vec!["x".into()])));
        assert_eq!(comps(&m, r"M:"), Some(Ok(vec![])));
        assert_eq!(comps(&m, r"M:name"), Some(Ok(vec!["name".into()])));
        assert_eq!(comps(&m, r"\\?\M:\a"), Some(Ok(vec!["a".into()])));
        assert_eq!(comps(&m, r"M:\file. . "), Some(Ok(vec!["file".into()])));
        assert_eq!(comps(&m, r"M:\a?"), Some(Err(ERROR_INVALID_NAME)));
        assert_eq!(comps(&m, r"C:\a"), None);
        assert_eq!(comps(&m, r"relative\a"), None);
        assert_eq!(comps(&m, r"\\srv\share\a"), None);
    }

    #[test]
    fn shares_match_whole_components() {
        let u = Prefix::parse(r"\\DFS\Export").unwrap();
        assert_eq!(comps(&u, r"\\dfs\export\a"), Some(Ok(vec!["a".into()])));
        assert_eq!(comps(&u, r"//DFS/EXPORT"), Some(Ok(vec![])));
        assert_eq!(
            comps(&u, r"\\?\UNC\dfs\export\x\y"),
            Some(Ok(vec!["x".into(), "y".into()]))
        );
        assert_eq!(comps(&u, r"\\dfs\exports\a"), None);
        assert_eq!(comps(&u, r"\\dfs"), None);
        assert_eq!(
            String::from_utf16(&u.full_path(&["a".into()])).unwrap(),
            r"\\dfs\export\a"
        );
        assert!(Prefix::parse("M").is_err());
        assert!(Prefix::parse(r"\\only").is_err());
    }

    #[test]
    fn wildcards_match_as_find_first_file_does() {
        assert!(matches("*", "anything"));
        assert!(matches("*.*", "noext"));
        assert!(matches("*.TXT", "a.txt"));
        assert!(matches("a?c", "abc"));
        assert!(!matches("a?c", "ac"));
        assert!(matches("*b*", "abc"));
        assert!(!matches("*.txt", "a.txt.bak"));
        assert!(matches("name", "NAME"));
    }
}
