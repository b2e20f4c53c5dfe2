//! The directory's answers, read by the decoders of the programs that use it: nym-node's and
//! nym-sdk's nym-api client (nym-validator-client 1.21.6), nym-sdk's IPR discovery, the
//! topology a client routes with, and smolmix's own `exits`. A shape one of them rejects
//! fails here rather than in a live run of the local network.

use std::net::IpAddr;
use std::sync::Arc;

use nym_crypto::asymmetric::{ed25519, x25519};
use nym_sdk::ip_packet_client::discovery as sdk;
use nym_topology::{NymTopology, NymTopologyMetadata, RoutingNode};
use nym_validator_client::nym_api::NymApiClientExt;
use smolmix_directory::nodes::NodeSpec;
use smolmix_directory::responses::Clock;
use smolmix_directory::{serve, Directory};

const IPR: &str = "D1rrpsysCGCYXy9saP8y3kmNpGtJZUXN9SvFoUcqAsM9.9Ssso1ea5NfkbMASdiseDSjTN1fSWda5SgEVjdSN4CvV@";

struct Net {
    url: String,
    identities: Vec<ed25519::PublicKey>,
    ipr: String,
    _dir: TempDir,
}

struct TempDir(std::path::PathBuf);
impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Four nodes with real keys (three mixnodes, one gateway), as `node-details` prints them.
async fn start(gateway_version: Option<&str>) -> Net {
    let dir = std::env::temp_dir().join(format!("smx-dir-{}-{}", std::process::id(), rand::random::<u32>()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut specs = Vec::new();
    let mut identities = Vec::new();
    let mut ipr = String::new();
    for i in 1u8..=4 {
        let id_key = ed25519::PublicKey::from(&ed25519::PrivateKey::from_bytes(&[i; 32]).unwrap());
        let sphinx = x25519::PublicKey::from(&x25519::PrivateKey::from_bytes(&[i + 10; 32]).unwrap());
        identities.push(id_key);
        // The IPR's Nym address ends in its gateway's identity.
        let addr = format!("{IPR}{}", id_key.to_base58_string());
        if i == 4 {
            ipr = addr.clone();
        }
        let details = serde_json::json!({
            "current_modes": {}, "description": {},
            "ed25519_identity_key": id_key.to_base58_string(),
            "x25519_primary_sphinx_key": { "public_key": sphinx.to_base58_string(), "rotation_id": 1 },
            "x25519_secondary_sphinx_key": null, "x25519_noise_key": "", "x25519_wireguard_key": "",
            "exit_network_requester_address": addr, "exit_ip_packet_router_address": addr,
            "exit_authenticator_address": addr,
        });
        let path = dir.join(format!("n{i}.json"));
        std::fs::write(&path, details.to_string()).unwrap();
        let spec = if i < 4 {
            format!("id={i},layer={i},ip=198.18.0.1{i},details={}", path.display())
        } else {
            let v = gateway_version.map(|v| format!(",version={v}")).unwrap_or_default();
            format!("id=4,ip=198.18.0.14,ws-port=9000,details={}{v}", path.display())
        };
        specs.push(NodeSpec::parse(&spec, i == 4).unwrap());
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    let d = Directory { specs, node_version: "1.31.0".into(), clock: Clock::starting_now() };
    tokio::spawn(serve(listener, Arc::new(d)));
    Net { url, identities, ipr, _dir: TempDir(dir) }
}

fn client(url: &str) -> nym_http_api_client::Client {
    let urls = vec![nym_network_defaults::ApiUrl { url: url.to_string(), front_hosts: None }];
    sdk::create_nym_api_client(urls).unwrap()
}

#[tokio::test]
async fn node_side_decoders_accept_every_answer() {
    let net = start(None).await;
    let c = client(&net.url);
    let rot = c.get_key_rotation_info().await.unwrap();
    assert_eq!(rot.progress.current_key_rotation_id, 1, "odd rotation, stable for the run");
    assert!(rot.progress.current_rotation_ending_epoch > rot.details.current_absolute_epoch_id + 1000);
    let rs = c.get_rewarded_set().await.unwrap();
    assert_eq!((rs.layer1, rs.layer2, rs.layer3), (vec![1], vec![2], vec![3]));
    assert_eq!((rs.entry_gateways, rs.exit_gateways), (vec![4], vec![4]));
    let semi = c.get_all_expanded_nodes().await.unwrap();
    assert_eq!(semi.nodes.len(), 4);
    assert_eq!(semi.metadata.rotation_id, 1);
    let gw = semi.nodes.iter().find(|n| n.basic.node_id == 4).unwrap();
    assert_eq!(gw.basic.ed25519_identity_pubkey, net.identities[3]);
    assert_eq!(gw.basic.entry.as_ref().map(|e| e.ws_port), Some(9000));
    let ip: IpAddr = "198.18.0.12".parse().unwrap();
    let other: IpAddr = "192.0.2.1".parse().unwrap();
    let known = c.nodes_by_addresses(vec![ip, other]).await.unwrap();
    assert_eq!(known.existence.get(&ip), Some(&Some(2)));
    assert_eq!(known.existence.get(&other), Some(&None));
    #[allow(deprecated)]
    let v1 = c.get_all_described_nodes().await.unwrap();
    assert!(v1.is_empty(), "verloc has nothing to measure");
}

#[tokio::test]
async fn client_side_decoders_find_the_exit_and_a_route() {
    let net = start(None).await;
    let c = client(&net.url);
    // nym-sdk's IPR discovery (described v2 + skimmed exit gateways).
    let exits = sdk::retrieve_exit_nodes_with_performance(c.clone()).await.unwrap();
    assert_eq!(exits.len(), 1);
    assert_eq!(exits[0].address.to_string(), net.ipr);
    assert_eq!(exits[0].version.to_string(), "1.31.0");
    assert_eq!(exits[0].performance, 100);
    let v = sdk::lookup_node_version(&c, net.identities[3]).await.unwrap();
    assert_eq!(v.to_string(), "1.31.0");

    // The topology a client sends with: three layers and the gateway as egress.
    let rs = c.get_rewarded_set().await.unwrap();
    let nodes = c.get_all_basic_nodes_with_metadata().await.unwrap();
    let entry = c.get_all_basic_entry_assigned_nodes_with_metadata().await.unwrap();
    let mixing = c.get_all_basic_active_mixing_assigned_nodes_with_metadata().await.unwrap();
    assert_eq!((nodes.nodes.len(), entry.nodes.len(), mixing.nodes.len()), (4, 1, 3));
    let routing: Vec<RoutingNode> = nodes.nodes.iter().map(|n| RoutingNode::try_from(n).unwrap()).collect();
    let meta = NymTopologyMetadata::new(
        nodes.metadata.rotation_id,
        nodes.metadata.absolute_epoch_id,
        time::OffsetDateTime::now_utc(),
    );
    let epoch_rs: nym_mixnet_contract_common::EpochRewardedSet = rs.into();
    let topo = NymTopology::new(meta, epoch_rs, routing);
    topo.ensure_minimally_routable().unwrap();
    let route = topo.random_route_to_egress(&mut rand::rngs::OsRng, net.identities[3], false).unwrap();
    assert_eq!(route.len(), 4);
}

#[tokio::test]
async fn smolmix_exits_lists_the_exit_with_its_protocol() {
    let net = start(None).await;
    let opts = smolmix::transport::mixnet::MixnetOptions { nym_api_urls: vec![net.url.clone()], ..Default::default() };
    let exits = smolmix::transport::mixnet::list_exits(&opts).await.unwrap();
    assert_eq!(exits.len(), 1);
    assert_eq!(
        (exits[0].address.as_str(), exits[0].version.as_str(), exits[0].ipr_protocol),
        (net.ipr.as_str(), "1.31.0", Some(9))
    );

    // An exit that reports a release without LP framing is listed by nobody.
    let old = start(Some("1.29.0")).await;
    let opts = smolmix::transport::mixnet::MixnetOptions { nym_api_urls: vec![old.url.clone()], ..Default::default() };
    assert!(smolmix::transport::mixnet::list_exits(&opts).await.unwrap().is_empty());
}
