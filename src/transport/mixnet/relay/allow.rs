//! The hosts the directory relay connects to: the directory's own, and nothing else
//! (docs/directory-relay.md §4). Pure: a list in, a verdict per sniffed target out.
//!
//! Entries are (host, port) pairs as the directory URLs give them, hosts normalised as the
//! sniffer normalises what it reads ([`normalize_host`]), so `Validator.NymTech.net.` and
//! `validator.nymtech.net` are one host and `[2001:db8::1]` and `2001:db8:0::1` one address.
//!
//! - A plain HTTP request must name an entry exactly: its `Host` host and port (80 when it
//!   has none).
//! - A TLS ClientHello names no port. Among the entries for its server name, 443 is taken if
//!   listed, else the only one; two or more other ports are ambiguous and refused.

use crate::transport::sniff::{normalize_host, SniffError, Target};

/// Entries in one allowlist: a few directory URLs and their fronts.
pub const MAX_ENTRIES: usize = 32;

/// A list that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AllowError {
    /// An entry's host is not a host name or IP address.
    #[error("{host:?} cannot be allowed: {why}")]
    BadHost {
        /// The host as given.
        host: String,
        /// Why it is not a host.
        why: SniffError,
    },
    /// Port 0.
    #[error("{0:?} cannot be allowed on port 0")]
    PortZero(String),
    /// Nothing allowed: the relay would refuse everything.
    #[error("no directory host to allow")]
    Empty,
    /// More than [`MAX_ENTRIES`].
    #[error("more than 32 directory hosts")]
    TooMany,
}

/// Why a connection is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The host (and port) is not on the list.
    #[error("{host}{} is not a directory host", .port.map(|p| format!(" port {p}")).unwrap_or_default())]
    NotAllowed {
        /// The host asked for.
        host: String,
        /// Its port, for plain HTTP.
        port: Option<u16>,
    },
    /// A TLS server name listed with several ports, none of them 443.
    #[error("{0} is listed with several ports, and TLS does not say which")]
    Ambiguous(String),
}

/// The (host, port) pairs the relay may connect to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allowlist {
    entries: Vec<(String, u16)>,
}

impl Allowlist {
    /// Normalises and de-duplicates `entries`; an empty list, or one entry that is not a host,
    /// is an error (a relay that can reach nothing, or not what was meant, is not started).
    pub fn new(entries: impl IntoIterator<Item = (String, u16)>) -> Result<Allowlist, AllowError> {
        let mut out: Vec<(String, u16)> = Vec::new();
        for (host, port) in entries {
            let normal = normalize_host(&host).map_err(|why| AllowError::BadHost { host: host.clone(), why })?;
            if port == 0 {
                return Err(AllowError::PortZero(host));
            }
            if !out.contains(&(normal.clone(), port)) {
                if out.len() == MAX_ENTRIES {
                    return Err(AllowError::TooMany);
                }
                out.push((normal, port));
            }
        }
        if out.is_empty() {
            return Err(AllowError::Empty);
        }
        Ok(Allowlist { entries: out })
    }

    /// The entries, normalised.
    pub fn entries(&self) -> &[(String, u16)] {
        &self.entries
    }

    /// Whether some entry is a name rather than an address (so a resolver is needed).
    pub fn has_names(&self) -> bool {
        self.entries.iter().any(|(h, _)| h.parse::<std::net::IpAddr>().is_err())
    }

    /// Where a connection for `target` may go: (host, port), or why not.
    pub fn admit(&self, target: &Target) -> Result<(String, u16), Refusal> {
        match target {
            Target::Http { host, port } => {
                let port = port.unwrap_or(80);
                match self.entries.iter().any(|(h, p)| h == host && *p == port) {
                    true => Ok((host.clone(), port)),
                    false => Err(Refusal::NotAllowed { host: host.clone(), port: Some(port) }),
                }
            }
            Target::Tls { host } => {
                let ports: Vec<u16> = self.entries.iter().filter(|(h, _)| h == host).map(|(_, p)| *p).collect();
                match ports.as_slice() {
                    [] => Err(Refusal::NotAllowed { host: host.clone(), port: None }),
                    _ if ports.contains(&443) => Ok((host.clone(), 443)),
                    [only] => Ok((host.clone(), *only)),
                    _ => Err(Refusal::Ambiguous(host.clone())),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(v: &[(&str, u16)]) -> Allowlist {
        Allowlist::new(v.iter().map(|(h, p)| (h.to_string(), *p))).unwrap()
    }

    fn tls(host: &str) -> Target {
        Target::Tls { host: host.to_string() }
    }

    fn http(host: &str, port: Option<u16>) -> Target {
        Target::Http { host: host.to_string(), port }
    }

    #[test]
    fn normalises_and_deduplicates() {
        let a = list(&[("Validator.NymTech.net.", 443), ("validator.nymtech.net", 443), ("[2001:DB8::1]", 8080)]);
        assert_eq!(a.entries(), [("validator.nymtech.net".to_string(), 443), ("2001:db8::1".to_string(), 8080)]);
        assert!(a.has_names());
        assert!(!list(&[("198.18.0.20", 8000)]).has_names());
        let bad = |v: Vec<(String, u16)>| Allowlist::new(v).unwrap_err();
        assert!(matches!(bad(vec![("a b".into(), 443)]), AllowError::BadHost { .. }));
        assert_eq!(bad(vec![("a".into(), 0)]), AllowError::PortZero("a".into()));
        assert_eq!(bad(vec![]), AllowError::Empty);
        assert_eq!(bad((0..=MAX_ENTRIES as u16).map(|p| ("a".to_string(), 1000 + p)).collect()), AllowError::TooMany);
    }

    #[test]
    fn http_must_match_host_and_port() {
        let a = list(&[("198.18.0.20", 8000), ("nym-api.example", 80)]);
        assert_eq!(a.admit(&http("198.18.0.20", Some(8000))), Ok(("198.18.0.20".into(), 8000)));
        assert_eq!(a.admit(&http("nym-api.example", None)), Ok(("nym-api.example".into(), 80)));
        assert_eq!(a.admit(&http("nym-api.example", Some(80))), Ok(("nym-api.example".into(), 80)));
        for (host, port) in [("198.18.0.20", None), ("198.18.0.20", Some(8001)), ("9.9.9.9", Some(8000))] {
            assert_eq!(
                a.admit(&http(host, port)),
                Err(Refusal::NotAllowed { host: host.into(), port: Some(port.unwrap_or(80)) })
            );
        }
    }

    #[test]
    fn tls_takes_443_or_the_only_port() {
        let a = list(&[
            ("validator.nymtech.net", 443),
            ("validator.nymtech.net", 8443),
            ("alt.example", 8443),
            ("two.example", 8443),
            ("two.example", 9443),
        ]);
        assert_eq!(a.admit(&tls("validator.nymtech.net")), Ok(("validator.nymtech.net".into(), 443)));
        assert_eq!(a.admit(&tls("alt.example")), Ok(("alt.example".into(), 8443)));
        assert_eq!(a.admit(&tls("two.example")), Err(Refusal::Ambiguous("two.example".into())));
        assert_eq!(
            a.admit(&tls("quad9.example")),
            Err(Refusal::NotAllowed { host: "quad9.example".into(), port: None })
        );
        // A suffix or a prefix of a listed name is another name.
        assert!(a.admit(&tls("nymtech.net")).is_err());
        assert!(a.admit(&tls("evil.validator.nymtech.net")).is_err());
    }
}
