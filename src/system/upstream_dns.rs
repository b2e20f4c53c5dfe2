//! The host's own upstream nameservers, read before `up` points DNS at the tunnel: the servers
//! the directory relay's marked resolver asks (docs/directory-relay.md §5).
//!
//! Contract of [`upstream_nameservers`]:
//! - `nameserver` lines of `/etc/resolv.conf` (resolv.conf(5): keyword, whitespace, one IPv4
//!   or IPv6 address; `#` and `;` start comments; an IPv6 zone `%eth0` is dropped with the
//!   server, as we cannot route to it by mark), in order, de-duplicated, at most
//!   [`MAX_UPSTREAM`];
//! - when they are all systemd-resolved's stub listeners (127.0.0.53, 127.0.0.54), the stub
//!   would forward our query with *its* sockets, unmarked, and the kill switch would drop it;
//!   resolved writes the uplink servers of every link to `/run/systemd/resolve/resolv.conf`,
//!   which is read instead, stubs removed;
//! - a file we wrote ([`super::files::MARKER`]: a crashed `up` left it) names the tunnel's
//!   servers, which are reached only through the tunnel: an error, never an answer;
//! - no server at all is an error: the caller must not start a relay that can resolve nothing.
//!
//! Loopback servers other than the stub (dnsmasq, unbound on 127.0.0.1) are returned as they
//! are: they forward with their own, unmarked sockets, so lookups through them fail closed
//! while the kill switch is up, which the relay reports.

use std::fs;
use std::io;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

use super::files::MARKER;

/// Servers returned; a resolver asks this many at most.
pub const MAX_UPSTREAM: usize = 4;
/// resolved's stub listeners: 127.0.0.53 (the stub) and 127.0.0.54 (the proxy stub).
pub const RESOLVED_STUBS: [IpAddr; 2] =
    [IpAddr::V4(Ipv4Addr::new(127, 0, 0, 53)), IpAddr::V4(Ipv4Addr::new(127, 0, 0, 54))];
/// A resolv.conf larger than this is not one.
const MAX_FILE: u64 = 64 * 1024;

/// Where to read; injectable so tests run in a temp dir.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamPaths {
    /// The host's resolver file (`/etc/resolv.conf`).
    pub resolv_conf: PathBuf,
    /// systemd-resolved's list of uplink servers (`/run/systemd/resolve/resolv.conf`).
    pub resolved_uplink: PathBuf,
}

impl Default for UpstreamPaths {
    fn default() -> Self {
        UpstreamPaths {
            resolv_conf: PathBuf::from("/etc/resolv.conf"),
            resolved_uplink: PathBuf::from("/run/systemd/resolve/resolv.conf"),
        }
    }
}

/// Why the upstream servers are not known.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// A file could not be read (or is too large to be a resolv.conf).
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The resolver file is the one `up` writes: the host's own servers are in its backup.
    #[error("{} is smolmix-vpn's own (a previous run was not cleaned up; run `smolmix-vpn down`)", .0.display())]
    Ours(PathBuf),
    /// No usable `nameserver` line.
    #[error("no upstream nameserver in {}", .0.display())]
    NoServers(PathBuf),
}

/// The `nameserver` addresses of a resolv.conf text, in order, de-duplicated, at most
/// [`MAX_UPSTREAM`]. Lines that do not parse are skipped, as the C library skips them.
pub fn parse_nameservers(text: &str) -> Vec<IpAddr> {
    let mut out: Vec<IpAddr> = Vec::new();
    for line in text.lines() {
        let line = line.split(['#', ';']).next().unwrap_or_default();
        let mut words = line.split_ascii_whitespace();
        if words.next() != Some("nameserver") {
            continue;
        }
        let Some(Ok(ip)) = words.next().map(str::parse::<IpAddr>) else { continue };
        if !ip.is_unspecified() && !out.contains(&ip) && out.len() < MAX_UPSTREAM {
            out.push(ip);
        }
    }
    out
}

/// The host's upstream nameservers; see the module docs.
pub fn upstream_nameservers(paths: &UpstreamPaths) -> Result<Vec<IpAddr>, UpstreamError> {
    let text = read(&paths.resolv_conf)?;
    if text.starts_with(MARKER) {
        return Err(UpstreamError::Ours(paths.resolv_conf.clone()));
    }
    let servers = parse_nameservers(&text);
    if !servers.is_empty() && servers.iter().all(|ip| RESOLVED_STUBS.contains(ip)) {
        let uplink: Vec<IpAddr> = parse_nameservers(&read(&paths.resolved_uplink)?)
            .into_iter()
            .filter(|ip| !RESOLVED_STUBS.contains(ip))
            .collect();
        if uplink.is_empty() {
            return Err(UpstreamError::NoServers(paths.resolved_uplink.clone()));
        }
        return Ok(uplink);
    }
    if servers.is_empty() {
        return Err(UpstreamError::NoServers(paths.resolv_conf.clone()));
    }
    Ok(servers)
}

fn read(path: &Path) -> Result<String, UpstreamError> {
    let err = |source| UpstreamError::Read { path: path.to_path_buf(), source };
    let len = fs::metadata(path).map_err(err)?.len();
    if len > MAX_FILE {
        return Err(err(io::Error::new(io::ErrorKind::InvalidData, "larger than 64 KiB")));
    }
    let bytes = fs::read(path).map_err(err)?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ips(v: &[&str]) -> Vec<IpAddr> {
        v.iter().map(|s| s.parse().unwrap()).collect()
    }

    fn tree(tag: &str) -> (PathBuf, UpstreamPaths) {
        let root = std::env::temp_dir().join(format!("smolmix-upstream-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        fs::create_dir_all(&root).unwrap();
        let paths = UpstreamPaths { resolv_conf: root.join("resolv.conf"), resolved_uplink: root.join("uplink.conf") };
        (root, paths)
    }

    #[test]
    fn parses_nameserver_lines() {
        let text = "# Generated by NetworkManager\nsearch lan corp.example\n\
            nameserver 192.0.2.53 # the router\n\tnameserver\t2001:db8::53\n\
            nameserver 192.0.2.53\nnameserver fe80::1%eth0\nnameserver not-an-ip\nnameservers 192.0.2.9\n\
            ; nameserver 192.0.2.10\noptions edns0 trust-ad\nnameserver 0.0.0.0\nnameserver 198.51.100.1;x\n";
        assert_eq!(parse_nameservers(text), ips(&["192.0.2.53", "2001:db8::53", "198.51.100.1"]));
        let many: String = (1..=9).map(|i| format!("nameserver 192.0.2.{i}\n")).collect();
        assert_eq!(parse_nameservers(&many).len(), MAX_UPSTREAM);
        assert!(parse_nameservers("").is_empty());
        assert!(parse_nameservers("nameserver\n").is_empty());
    }

    #[test]
    fn reads_the_file_or_resolveds_uplink_list() {
        let (root, p) = tree("files");
        fs::write(&p.resolv_conf, "nameserver 192.0.2.53\nnameserver 127.0.0.53\n").unwrap();
        assert_eq!(upstream_nameservers(&p).unwrap(), ips(&["192.0.2.53", "127.0.0.53"]), "not only the stub");

        // The stub: resolved's uplink list instead (its own stub, if listed there, dropped).
        fs::write(&p.resolv_conf, "nameserver 127.0.0.53\noptions edns0 trust-ad\nsearch .\n").unwrap();
        assert!(matches!(upstream_nameservers(&p), Err(UpstreamError::Read { .. })), "no uplink file");
        fs::write(&p.resolved_uplink, "nameserver 127.0.0.54\n").unwrap();
        assert!(matches!(upstream_nameservers(&p), Err(UpstreamError::NoServers(f)) if f == p.resolved_uplink));
        fs::write(&p.resolved_uplink, "nameserver 198.51.100.1\nnameserver 2001:db8::1\nnameserver 127.0.0.54\n")
            .unwrap();
        assert_eq!(upstream_nameservers(&p).unwrap(), ips(&["198.51.100.1", "2001:db8::1"]));

        // Ours, none, too large, missing.
        fs::write(&p.resolv_conf, format!("{MARKER}\nnameserver 9.9.9.9\n")).unwrap();
        assert!(matches!(upstream_nameservers(&p), Err(UpstreamError::Ours(_))));
        fs::write(&p.resolv_conf, "search lan\n").unwrap();
        assert!(matches!(upstream_nameservers(&p), Err(UpstreamError::NoServers(f)) if f == p.resolv_conf));
        fs::write(&p.resolv_conf, "#".repeat(65 * 1024)).unwrap();
        assert!(matches!(upstream_nameservers(&p), Err(UpstreamError::Read { .. })));
        fs::remove_file(&p.resolv_conf).unwrap();
        assert!(matches!(upstream_nameservers(&p), Err(UpstreamError::Read { .. })));
        fs::remove_dir_all(root).unwrap();
    }
}
