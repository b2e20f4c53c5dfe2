//! Every answer of the directory, as a value of the published nym-api types (nym-api-requests
//! 1.21.6). Nothing here writes JSON by hand: the types' own serde impls do, so the shapes are
//! the ones nym-node and nym-sdk decode.
//!
//! The network is static: every node is always in the rewarded set with performance 100 %,
//! and the epoch clock is chosen so that the sphinx-key rotation never advances while a test
//! runs (a rotation would make the nodes' keys stop matching, docs/localnet.md §2). Mixnodes sit
//! on the layer they were given; the gateway is both the entry and the exit of every route, as in
//! the one-gateway network of the test suite.

#![allow(deprecated)] // HostKeysV1::x25519 is deprecated but still part of the wire format.

use std::net::IpAddr;
use std::time::Duration;

use nym_api_requests::models::described::type_translation::{
    AnnouncePortsV1, AuthenticatorDetailsV1, DeclaredRolesV1, HostInformationV1, HostKeysV1, IpPacketRouterDetailsV1,
    NetworkRequesterDetailsV1, NymNodeAuxiliaryDetailsV1, SphinxKeyV1, WebSocketsV1,
};
use nym_api_requests::models::described::v1::{DescribedNodeTypeV1, NymNodeDescriptionV1};
use nym_api_requests::models::described::v2::{NymNodeDataV2, NymNodeDescriptionV2};
use nym_api_requests::models::{
    BinaryBuildInformationOwned, KeyRotationDetails, KeyRotationInfoResponse, KeyRotationState,
    OffsetDateTimeJsonSchemaWrapper, RewardedSetResponse,
};
use nym_api_requests::nym_nodes::{
    BasicEntryInformation, NodeRole, NodesByAddressesResponse, NodesResponseMetadata, PaginatedCachedNodesResponseV2,
    SemiSkimmedNodeV1, SemiSkimmedNodeV3, SkimmedNodeV1,
};
use nym_api_requests::pagination::{PaginatedResponse, Pagination};
use nym_mixnet_contract_common::reward_params::Performance;
use time::OffsetDateTime;

use crate::nodes::{Kind, Node};

/// Length of one epoch of the stand-in's clock.
pub const EPOCH: Duration = Duration::from_secs(3600);
/// Epochs per key rotation: about 11 years of one-hour epochs, so no rotation during a run.
pub const VALIDITY_EPOCHS: u32 = 100_000;
/// The epoch the clock starts at: the first epoch of rotation 1. An odd rotation id with the
/// next rotation far away is what nym-node 1.31.0 accepts without complaint (docs/localnet.md §2).
pub const FIRST_EPOCH: u32 = VALIDITY_EPOCHS;
/// Page size when the client does not ask for one (nym-api's own default).
pub const DEFAULT_PER_PAGE: usize = 100;

/// The epoch clock: epoch [`FIRST_EPOCH`] started one minute before the directory did.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    pub genesis: OffsetDateTime,
}

impl Clock {
    pub fn starting_now() -> Self {
        Clock { genesis: OffsetDateTime::now_utc() - time::Duration::minutes(1) }
    }

    /// The current absolute epoch and when it started.
    pub fn epoch(&self, now: OffsetDateTime) -> (u32, OffsetDateTime) {
        let elapsed = (now - self.genesis).whole_seconds().max(0) as u64;
        let k = elapsed / EPOCH.as_secs();
        let epoch = FIRST_EPOCH.saturating_add(u32::try_from(k).unwrap_or(u32::MAX));
        (epoch, self.genesis + time::Duration::seconds((k * EPOCH.as_secs()) as i64))
    }

    pub fn rotation_state() -> KeyRotationState {
        KeyRotationState { validity_epochs: VALIDITY_EPOCHS, initial_epoch_id: 0 }
    }

    pub fn rotation_id(&self, now: OffsetDateTime) -> u32 {
        Self::rotation_state().key_rotation_id(self.epoch(now).0)
    }
}

/// `GET v1/epoch/key-rotation-info`.
pub fn key_rotation_info(clock: &Clock, now: OffsetDateTime) -> KeyRotationInfoResponse {
    let (epoch, start) = clock.epoch(now);
    KeyRotationDetails {
        key_rotation_state: Clock::rotation_state(),
        current_absolute_epoch_id: epoch,
        current_epoch_start: start,
        epoch_duration: EPOCH,
    }
    .into()
}

/// `GET v1/nym-nodes/rewarded-set`: every node, on its layer; the gateway as entry and exit.
pub fn rewarded_set(clock: &Clock, now: OffsetDateTime, nodes: &[Node]) -> RewardedSetResponse {
    let mut rs = RewardedSetResponse {
        epoch_id: clock.epoch(now).0,
        entry_gateways: vec![],
        exit_gateways: vec![],
        layer1: vec![],
        layer2: vec![],
        layer3: vec![],
        standby: vec![],
    };
    for n in nodes {
        match n.spec.kind {
            Kind::Gateway => {
                rs.entry_gateways.push(n.spec.id);
                rs.exit_gateways.push(n.spec.id);
            }
            Kind::Mixnode { layer: 1 } => rs.layer1.push(n.spec.id),
            Kind::Mixnode { layer: 2 } => rs.layer2.push(n.spec.id),
            Kind::Mixnode { .. } => rs.layer3.push(n.spec.id),
        }
    }
    rs
}

fn declared_roles(n: &Node) -> DeclaredRolesV1 {
    let gw = n.spec.kind == Kind::Gateway;
    DeclaredRolesV1 { mixnode: !gw, entry: gw, exit_nr: gw, exit_ipr: gw }
}

/// The sphinx-level view of one node (`SkimmedNodeV1`).
pub fn skimmed(n: &Node) -> SkimmedNodeV1 {
    let (role, entry) = match n.spec.kind {
        Kind::Mixnode { layer } => (NodeRole::Mixnode { layer }, None),
        Kind::Gateway => (
            NodeRole::EntryGateway,
            Some(BasicEntryInformation { hostname: n.spec.hostname.clone(), ws_port: n.spec.ws_port, wss_port: None }),
        ),
    };
    SkimmedNodeV1 {
        node_id: n.spec.id,
        ed25519_identity_pubkey: n.keys.identity,
        ip_addresses: vec![n.spec.ip],
        mix_port: n.spec.mix_port,
        x25519_sphinx_pubkey: n.keys.sphinx,
        role,
        supported_roles: declared_roles(n),
        entry,
        performance: Performance::hundred(),
    }
}

/// One page of `items`, as nym-api pages (`page` from 0).
pub fn page<T>(items: Vec<T>, page: u32, per_page: Option<usize>) -> PaginatedResponse<T> {
    let size = per_page.unwrap_or(DEFAULT_PER_PAGE).max(1);
    let total = items.len();
    let data: Vec<T> = items.into_iter().skip((page as usize).saturating_mul(size)).take(size).collect();
    PaginatedResponse { pagination: Pagination { total, page, size }, data }
}

/// The `v2/unstable/nym-nodes/{skimmed,semi-skimmed}/…` envelope.
pub fn cached<T>(clock: &Clock, now: OffsetDateTime, nodes: PaginatedResponse<T>) -> PaginatedCachedNodesResponseV2<T> {
    let (epoch, _) = clock.epoch(now);
    PaginatedCachedNodesResponseV2 {
        metadata: NodesResponseMetadata {
            status: None,
            absolute_epoch_id: epoch,
            rotation_id: clock.rotation_id(now),
            refreshed_at: now.into(),
        },
        nodes,
    }
}

pub fn semi_skimmed(n: &Node) -> SemiSkimmedNodeV1 {
    SemiSkimmedNodeV1 { basic: skimmed(n), x25519_noise_versioned_key: None }
}

pub fn semi_skimmed_v3(n: &Node, version: &str) -> SemiSkimmedNodeV3 {
    SemiSkimmedNodeV3 { basic: skimmed(n), noise_key: None, build_version: version.to_string(), lp: None }
}

/// The self-description nym-api relays for one node (`NymNodeDescriptionV2`): release,
/// ports, and for the gateway the Nym addresses of its IPR, network requester, authenticator.
pub fn described_v2(n: &Node, version: &str, now: OffsetDateTime) -> NymNodeDescriptionV2 {
    let gw = n.spec.kind == Kind::Gateway;
    let sphinx = SphinxKeyV1 { rotation_id: n.keys.sphinx_rotation, public_key: n.keys.sphinx };
    NymNodeDescriptionV2 {
        node_id: n.spec.id,
        contract_node_type: DescribedNodeTypeV1::NymNode,
        description: NymNodeDataV2 {
            last_polled: OffsetDateTimeJsonSchemaWrapper(now),
            host_information: HostInformationV1 {
                ip_address: vec![n.spec.ip],
                hostname: n.spec.hostname.clone(),
                keys: HostKeysV1 {
                    ed25519: n.keys.identity,
                    x25519: n.keys.sphinx,
                    current_x25519_sphinx_key: sphinx,
                    pre_announced_x25519_sphinx_key: None,
                    x25519_versioned_noise: None,
                },
            },
            declared_role: declared_roles(n),
            auxiliary_details: NymNodeAuxiliaryDetailsV1 {
                location: None,
                announce_ports: AnnouncePortsV1 { verloc_port: None, mix_port: Some(n.spec.mix_port) },
                accepted_operator_terms_and_conditions: true,
            },
            build_information: build_information(version),
            network_requester: gw
                .then(|| NetworkRequesterDetailsV1 { address: n.keys.nr_address.clone(), uses_exit_policy: true }),
            ip_packet_router: gw.then(|| IpPacketRouterDetailsV1 { address: n.keys.ipr_address.clone() }),
            authenticator: gw.then(|| AuthenticatorDetailsV1 { address: n.keys.authenticator_address.clone() }),
            wireguard: None,
            mixnet_websockets: WebSocketsV1 { ws_port: n.spec.ws_port, wss_port: None },
            lewes_protocol: None,
        },
    }
}

fn build_information(version: &str) -> BinaryBuildInformationOwned {
    BinaryBuildInformationOwned {
        binary_name: "nym-node".into(),
        build_timestamp: String::new(),
        build_version: version.into(),
        commit_sha: String::new(),
        commit_timestamp: String::new(),
        commit_branch: String::new(),
        rustc_version: String::new(),
        rustc_channel: String::new(),
        cargo_profile: "release".into(),
        cargo_triple: String::new(),
    }
}

/// `GET v1/nym-nodes/described` is what nym-node's verloc measurement reads: an empty list
/// ("nothing to measure") keeps two busy cores free of latency probes nobody reads here.
pub fn described_v1_empty() -> PaginatedResponse<NymNodeDescriptionV1> {
    page(Vec::new(), 0, None)
}

/// `POST v1/unstable/nym-nodes/by-addresses`: which node, if any, has each address.
pub fn by_addresses(nodes: &[Node], addresses: &[IpAddr]) -> NodesByAddressesResponse {
    let existence = addresses.iter().map(|a| (*a, nodes.iter().find(|n| n.spec.ip == *a).map(|n| n.spec.id))).collect();
    NodesByAddressesResponse { existence }
}
