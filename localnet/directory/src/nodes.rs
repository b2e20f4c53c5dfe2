//! The nodes a directory lists: what the command line says about each (role, layer, address,
//! ports, version) plus the keys `nym-node node-details --output json` printed for it.
//!
//! A node's keys exist only after `nym-node run --init-only`, and init itself reads the
//! directory (key-rotation info), so the directory starts with node specs whose details files
//! may not exist yet. [`NodeSpec::load`] reads the file on every request; a missing one means
//! "not listed yet", a malformed one is an error that names the file.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use nym_crypto::asymmetric::{ed25519, x25519};
use serde::Deserialize;

/// What a node does in the network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A mixnode on one layer (1, 2 or 3).
    Mixnode { layer: u8 },
    /// An exit gateway: entry for clients, exit with the IPR and the network requester.
    Gateway,
}

/// One node as given on the command line, e.g.
/// `id=1,layer=1,ip=198.18.0.11,details=/tmp/mix1.json` or
/// `id=4,ip=198.18.0.14,ws-port=9000,details=/tmp/gw.json,version=1.29.0`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeSpec {
    pub id: u32,
    pub kind: Kind,
    pub ip: IpAddr,
    pub mix_port: u16,
    pub ws_port: u16,
    pub details: PathBuf,
    /// Overrides the directory-wide node version (tests play an old exit with it).
    pub version: Option<String>,
    /// A hostname the node announces besides its address (clients may dial it instead).
    pub hostname: Option<String>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SpecError {
    #[error("{spec:?}: {what}")]
    Bad { spec: String, what: String },
}

impl NodeSpec {
    /// Parses `key=value,…` for a mixnode (`layer` required) or a gateway (`layer` refused).
    pub fn parse(s: &str, gateway: bool) -> Result<Self, SpecError> {
        let bad = |what: &str| SpecError::Bad { spec: s.to_string(), what: what.to_string() };
        let (mut id, mut layer, mut ip, mut details, mut version) = (None, None, None, None, None);
        let mut hostname = None;
        let (mut mix_port, mut ws_port) = (1789u16, 9000u16);
        for kv in s.split(',') {
            let (k, v) = kv.split_once('=').ok_or_else(|| bad("expected key=value pairs separated by ','"))?;
            match k {
                "id" => id = Some(v.parse::<u32>().map_err(|_| bad("id is not a number"))?),
                "layer" => {
                    layer = Some(
                        v.parse::<u8>()
                            .ok()
                            .filter(|l| (1..=3).contains(l))
                            .ok_or_else(|| bad("layer must be 1, 2 or 3"))?,
                    )
                }
                "ip" => ip = Some(IpAddr::from_str(v).map_err(|_| bad("ip is not an IP address"))?),
                "details" => details = Some(PathBuf::from(v)),
                "version" => version = Some(v.to_string()),
                "hostname" => hostname = Some(v.to_string()),
                "mix-port" => mix_port = v.parse().map_err(|_| bad("mix-port is not a port"))?,
                "ws-port" => ws_port = v.parse().map_err(|_| bad("ws-port is not a port"))?,
                _ => return Err(bad(&format!("unknown key {k:?}"))),
            }
        }
        let kind = match (gateway, layer) {
            (false, Some(layer)) => Kind::Mixnode { layer },
            (false, None) => return Err(bad("a mixnode needs layer=1|2|3")),
            (true, None) => Kind::Gateway,
            (true, Some(_)) => return Err(bad("a gateway has no layer")),
        };
        Ok(NodeSpec {
            id: id.ok_or_else(|| bad("id= is missing"))?,
            kind,
            ip: ip.ok_or_else(|| bad("ip= is missing"))?,
            mix_port,
            ws_port,
            details: details.ok_or_else(|| bad("details= is missing"))?,
            version,
            hostname,
        })
    }

    /// The node with its keys, or `Ok(None)` while its details file does not exist yet.
    pub fn load(&self) -> Result<Option<Node>, DetailsError> {
        let text = match std::fs::read_to_string(&self.details) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(DetailsError::new(&self.details, e.to_string())),
        };
        let keys = Keys::parse(&text).map_err(|e| DetailsError::new(&self.details, e))?;
        Ok(Some(Node { spec: self.clone(), keys }))
    }
}

/// A node whose keys are known.
#[derive(Debug, Clone)]
pub struct Node {
    pub spec: NodeSpec,
    pub keys: Keys,
}

/// The keys and service addresses of one node.
#[derive(Debug, Clone, PartialEq)]
pub struct Keys {
    pub identity: ed25519::PublicKey,
    pub sphinx: x25519::PublicKey,
    /// The rotation the sphinx key was made for (it must match the directory's rotation).
    pub sphinx_rotation: u32,
    pub ipr_address: String,
    pub nr_address: String,
    pub authenticator_address: String,
}

#[derive(Debug, thiserror::Error)]
#[error("{}: {reason}", path.display())]
pub struct DetailsError {
    pub path: PathBuf,
    pub reason: String,
}

impl DetailsError {
    fn new(path: &Path, reason: String) -> Self {
        DetailsError { path: path.to_path_buf(), reason }
    }
}

/// The part of nym-node 1.31.0's `node-details --output json` we read (`DisplayDetails` in
/// nym-node's `node/helpers.rs`); other fields are ignored.
#[derive(Debug, Deserialize)]
struct DisplayDetails {
    ed25519_identity_key: String,
    x25519_primary_sphinx_key: DisplaySphinxKey,
    exit_ip_packet_router_address: String,
    exit_network_requester_address: String,
    exit_authenticator_address: String,
}

#[derive(Debug, Deserialize)]
struct DisplaySphinxKey {
    public_key: String,
    rotation_id: u32,
}

impl Keys {
    pub fn parse(json: &str) -> Result<Keys, String> {
        let d: DisplayDetails =
            serde_json::from_str(json).map_err(|e| format!("not nym-node node-details JSON: {e}"))?;
        Ok(Keys {
            identity: ed25519::PublicKey::from_base58_string(&d.ed25519_identity_key)
                .map_err(|e| format!("ed25519_identity_key: {e}"))?,
            sphinx: x25519::PublicKey::from_base58_string(&d.x25519_primary_sphinx_key.public_key)
                .map_err(|e| format!("x25519_primary_sphinx_key: {e}"))?,
            sphinx_rotation: d.x25519_primary_sphinx_key.rotation_id,
            ipr_address: d.exit_ip_packet_router_address,
            nr_address: d.exit_network_requester_address,
            authenticator_address: d.exit_authenticator_address,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_mixnode_and_gateway_specs() {
        let m = NodeSpec::parse("id=1,layer=2,ip=198.18.0.11,details=/x/m.json", false).unwrap();
        assert_eq!(m.kind, Kind::Mixnode { layer: 2 });
        assert_eq!((m.id, m.mix_port, m.version.as_deref()), (1, 1789, None));
        let g =
            NodeSpec::parse("id=4,ip=198.18.0.14,ws-port=9001,details=/x/g.json,version=1.29.0,hostname=gw.test", true)
                .unwrap();
        assert_eq!((g.kind, g.ws_port, g.version.as_deref()), (Kind::Gateway, 9001, Some("1.29.0")));
        assert_eq!(g.hostname.as_deref(), Some("gw.test"));
    }

    #[test]
    fn rejects_bad_specs_naming_the_problem() {
        for (s, gw, want) in [
            ("id=1,ip=198.18.0.11,details=/m", false, "layer"),
            ("id=1,layer=4,ip=198.18.0.11,details=/m", false, "layer must be"),
            ("id=4,layer=1,ip=198.18.0.14,details=/g", true, "no layer"),
            ("id=x,layer=1,ip=198.18.0.11,details=/m", false, "id is not"),
            ("id=1,layer=1,ip=nope,details=/m", false, "ip is not"),
            ("id=1,layer=1,details=/m", false, "ip= is missing"),
            ("id=1,layer=1,ip=198.18.0.11", false, "details= is missing"),
            ("id=1,layer=1,ip=198.18.0.11,details=/m,colour=red", false, "unknown key"),
            ("id:1", false, "key=value"),
        ] {
            let e = NodeSpec::parse(s, gw).unwrap_err().to_string();
            assert!(e.contains(want), "{s}: {e}");
        }
    }

    #[test]
    fn a_missing_details_file_is_not_listed_yet_and_a_bad_one_is_named() {
        let dir = std::env::temp_dir().join(format!("smx-dir-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let spec =
            NodeSpec::parse(&format!("id=1,layer=1,ip=192.0.2.1,details={}/m.json", dir.display()), false).unwrap();
        assert!(spec.load().unwrap().is_none());
        std::fs::write(&spec.details, "{\"ed25519_identity_key\": 1}").unwrap();
        let e = spec.load().unwrap_err().to_string();
        assert!(e.contains("m.json") && e.contains("not nym-node node-details JSON"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
