//! Which socket addresses go to VMMC: the route table of the socket wrappers.
//!
//! Unmodified programs name their peers with IP addresses and ports; VMMC names listeners
//! `shm:NAME` or `tcp:HOST:PORT`. The wrappers (the Linux preload, the Windows wsock32/ws2_32
//! DLL) read one configuration in this format, so it is parsed here, with no OS in it:
//!
//! ```text
//! # comment; blank lines are ignored. One route a line (or separated by ';').
//! 127.0.0.1:5201   shm:iperf             # one address and port
//! [::1]:5201       shm:iperf
//! *:7000           shm:svc-{port}        # any address, this port; {port} is substituted
//! localhost        shm:local-{port}      # a host name (resolved once), every port
//! 10.0.0.2:9000    tcp:10.0.0.2:19000    strict
//! ```
//!
//! The first matching route wins. A trailing `strict` makes a connect with no VMMC listener
//! fail with `ECONNREFUSED`; without it the connect falls back to the kernel's TCP at the
//! original address (which may refuse too). A bind to a wildcard address (`0.0.0.0`, `::`)
//! takes the first route with its port, since such a socket would also receive connections
//! for that route's address.

use std::fmt;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};

/// What a route's left side matches.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Pattern {
    /// One address and port.
    Exact(SocketAddr),
    /// Any address with this port (`*:PORT`).
    Port(u16),
    /// One address, every port (a literal IP without a port).
    Host(IpAddr),
    /// A host name, every port or one (`NAME` or `NAME:PORT`); matched through
    /// [`Routes::resolve_names`].
    Name(String, Option<u16>),
}

/// One line of the configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    /// What it matches.
    pub pattern: Pattern,
    /// The VMMC address, possibly with `{port}` in it.
    pub target: String,
    /// No fallback to kernel TCP when nothing listens on VMMC.
    pub strict: bool,
}

/// Where a routed address goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// The VMMC address (`shm:NAME` or `tcp:HOST:PORT`), `{port}` substituted.
    pub addr: String,
    /// See [`Route::strict`].
    pub strict: bool,
}

/// A configuration error, with the line it is on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteError {
    /// 1-based line (or `;`-separated entry) number.
    pub line: usize,
    /// What is wrong.
    pub why: String,
}

impl fmt::Display for RouteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "route {}: {}", self.line, self.why)
    }
}

impl std::error::Error for RouteError {}

/// The route table.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Routes {
    routes: Vec<Route>,
    /// Host names resolved to addresses, in route order: (route index, address).
    resolved: Vec<(usize, IpAddr)>,
}

impl Routes {
    /// Parses the configuration text. Nothing is resolved yet: see [`Routes::resolve_names`].
    pub fn parse(text: &str) -> Result<Routes, RouteError> {
        let mut routes = Vec::new();
        for (i, line) in text.split(['\n', ';']).enumerate() {
            let line = line.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let err = |why: String| RouteError { line: i + 1, why };
            let mut words = line.split_whitespace();
            let (Some(from), Some(to)) = (words.next(), words.next()) else {
                return Err(err(format!("`{line}`: expected `ADDRESS TARGET`")));
            };
            let strict = match words.next() {
                None => false,
                Some("strict") => true,
                Some(w) => return Err(err(format!("unknown option `{w}`"))),
            };
            if let Some(w) = words.next() {
                return Err(err(format!("unexpected `{w}`")));
            }
            check_target(to).map_err(err)?;
            routes.push(Route {
                pattern: parse_pattern(from).map_err(err)?,
                target: to.to_owned(),
                strict,
            });
        }
        Ok(Routes {
            routes,
            resolved: Vec::new(),
        })
    }

    /// The routes, in order.
    pub fn routes(&self) -> &[Route] {
        &self.routes
    }

    /// Whether there is no route at all (the wrappers then stay out of the way entirely).
    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }

    /// Resolves the host-name patterns with the system resolver. Done once, when the wrapper
    /// first needs a route, by the caller (which must make sure its own socket wrappers pass
    /// the resolver's sockets through). A name that does not resolve matches nothing.
    pub fn resolve_names(&mut self) {
        self.resolved.clear();
        for (i, r) in self.routes.iter().enumerate() {
            if let Pattern::Name(name, _) = &r.pattern {
                if let Ok(addrs) = (name.as_str(), 0).to_socket_addrs() {
                    for a in addrs {
                        self.resolved.push((i, a.ip()));
                    }
                }
            }
        }
    }

    /// Where a `connect` to `addr` goes, if anywhere.
    pub fn for_connect(&self, addr: SocketAddr) -> Option<Target> {
        self.find(addr, false)
    }

    /// Where a `bind` to `addr` listens, if on VMMC. A wildcard address matches by port.
    pub fn for_bind(&self, addr: SocketAddr) -> Option<Target> {
        if addr.port() == 0 {
            return None;
        }
        self.find(addr, addr.ip().is_unspecified())
    }

    fn find(&self, addr: SocketAddr, any_host: bool) -> Option<Target> {
        let ip = canonical(addr.ip());
        let port = addr.port();
        let hit = self
            .routes
            .iter()
            .enumerate()
            .find(|(i, r)| match &r.pattern {
                Pattern::Exact(a) => a.port() == port && (any_host || canonical(a.ip()) == ip),
                Pattern::Port(p) => *p == port,
                Pattern::Host(h) => any_host || canonical(*h) == ip,
                Pattern::Name(_, p) => {
                    p.is_none_or(|p| p == port)
                        && (any_host
                            || self
                                .resolved
                                .iter()
                                .any(|(j, a)| j == i && canonical(*a) == ip))
                }
            })?;
        Some(Target {
            addr: hit.1.target.replace("{port}", &port.to_string()),
            strict: hit.1.strict,
        })
    }
}

/// `::ffff:127.0.0.1` and `127.0.0.1` are one address to a dual-stack program.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

fn parse_pattern(s: &str) -> Result<Pattern, String> {
    if let Some(port) = s.strip_prefix("*:") {
        return port
            .parse()
            .map(Pattern::Port)
            .map_err(|_| format!("bad port in `{s}`"));
    }
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Ok(Pattern::Exact(a));
    }
    if let Ok(ip) = s.trim_matches(['[', ']']).parse::<IpAddr>() {
        return Ok(Pattern::Host(ip));
    }
    let (name, port) = match s.rsplit_once(':') {
        Some((n, p)) => (
            n,
            Some(p.parse::<u16>().map_err(|_| format!("bad port in `{s}`"))?),
        ),
        None => (s, None),
    };
    let ok = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.' || c == '_');
    if !ok {
        return Err(format!("`{s}` is not an address, `*:PORT` or a host name"));
    }
    Ok(Pattern::Name(name.to_owned(), port))
}

fn check_target(s: &str) -> Result<(), String> {
    let probe = s.replace("{port}", "1");
    probe
        .parse::<vmmc_nic::NodeAddr>()
        .map(|_| ())
        .map_err(|e| format!("target `{s}`: {e} (expected shm:NAME or tcp:HOST:PORT)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn first_match_wins_and_ports_substitute() {
        let r = Routes::parse(
            "# c\n127.0.0.1:5201 shm:a ; *:7000 shm:b-{port} strict\n[::1]:80 tcp:10.0.0.1:8080\n10.1.1.1 shm:h-{port}",
        )
        .unwrap();
        assert_eq!(r.routes().len(), 4);
        let t = r.for_connect(sa("127.0.0.1:5201")).unwrap();
        assert_eq!((t.addr.as_str(), t.strict), ("shm:a", false));
        assert_eq!(
            r.for_connect(sa("[::ffff:127.0.0.1]:5201")).unwrap().addr,
            "shm:a"
        );
        let t = r.for_connect(sa("192.168.1.1:7000")).unwrap();
        assert_eq!((t.addr.as_str(), t.strict), ("shm:b-7000", true));
        assert_eq!(
            r.for_connect(sa("[::1]:80")).unwrap().addr,
            "tcp:10.0.0.1:8080"
        );
        assert_eq!(r.for_connect(sa("10.1.1.1:22")).unwrap().addr, "shm:h-22");
        assert_eq!(r.for_connect(sa("127.0.0.1:5202")), None);
        assert_eq!(r.for_connect(sa("127.0.0.2:5201")), None);
    }

    #[test]
    fn binds_to_wildcards_match_by_port_and_port_zero_never() {
        let r = Routes::parse("127.0.0.1:5201 shm:a").unwrap();
        assert_eq!(r.for_bind(sa("0.0.0.0:5201")).unwrap().addr, "shm:a");
        assert_eq!(r.for_bind(sa("[::]:5201")).unwrap().addr, "shm:a");
        assert_eq!(r.for_bind(sa("127.0.0.1:5201")).unwrap().addr, "shm:a");
        assert_eq!(r.for_bind(sa("10.0.0.1:5201")), None);
        assert_eq!(r.for_bind(sa("0.0.0.0:0")), None);
        assert_eq!(r.for_connect(sa("0.0.0.0:5201")), None);
    }

    #[test]
    fn names_match_what_they_resolve_to() {
        let mut r = Routes::parse("localhost:9 shm:l\nno-such-host.invalid shm:x").unwrap();
        assert_eq!(r.for_connect(sa("127.0.0.1:9")), None);
        r.resolve_names();
        assert_eq!(r.for_connect(sa("127.0.0.1:9")).unwrap().addr, "shm:l");
        assert_eq!(r.for_connect(sa("127.0.0.1:10")), None);
    }

    #[test]
    fn errors_name_the_line() {
        for (text, line) in [
            ("127.0.0.1:1 shm:a\nfoo", 2),
            ("127.0.0.1:1 udp:x", 1),
            ("127.0.0.1:1 shm:a loose", 1),
            ("*:x shm:a", 1),
            ("a/b shm:a", 1),
            ("x:1 shm:a strict extra", 1),
        ] {
            let e = Routes::parse(text).unwrap_err();
            assert_eq!(e.line, line, "{text}: {e}");
        }
        assert!(Routes::parse("  \n# only a comment\n").unwrap().is_empty());
    }
}
