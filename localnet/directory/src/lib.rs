//! `smolmix-directory`: a stand-in for nym-api, the Nym directory, for a local offline network
//! of real `nym-node` processes (`scripts/localnet.sh`). For tests and demos only.
//!
//! nym-node cannot start without a nym-api, and the real nym-api needs a blockchain; nym-sdk
//! clients read the same directory to find gateways, mixnodes and IPR exits. This serves the
//! endpoints both read (docs/localnet.md §2 lists them), for a fixed set of nodes:
//!
//! - [`nodes`]: the node specs from the command line, and the keys `nym-node node-details`
//!   printed for each (re-read on every request: nodes exist before their keys do);
//! - [`responses`]: each answer, built as a value of the published nym-api types at 1.21.6;
//! - [`serve`] (this file): HTTP/1.1 routing of nym-api paths to those answers.
//!
//! Paths are matched by their tail, so the directory works under any base URL
//! (`http://HOST:PORT/` or `http://HOST:PORT/api/`). Query parameters other than `page` and
//! `per_page` are ignored; clients ask for `output=bincode` but decode by Content-Type, so
//! JSON is always fine. An unknown path is a 404 and a warning in the log, so that an endpoint
//! a new node or SDK release reads shows up at once.

pub mod nodes;
pub mod responses;

use std::convert::Infallible;
use std::net::IpAddr;
use std::sync::Arc;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use nym_api_requests::nym_nodes::NodesByAddressesRequestBody;
use time::OffsetDateTime;
use tokio::net::TcpListener;

use nodes::{Kind, Node, NodeSpec};
use responses::Clock;

/// Largest request body read (a by-addresses query is a few hundred bytes).
const MAX_BODY: usize = 64 * 1024;

/// The directory: its nodes and its epoch clock.
#[derive(Debug)]
pub struct Directory {
    pub specs: Vec<NodeSpec>,
    /// The release every node reports unless its spec overrides it.
    pub node_version: String,
    pub clock: Clock,
}

/// A reply: status and JSON body.
pub type Reply = (StatusCode, Vec<u8>);

impl Directory {
    /// The nodes whose keys are known now. A malformed details file is logged and skipped.
    pub fn nodes(&self) -> Vec<Node> {
        self.specs
            .iter()
            .filter_map(|s| {
                s.load().unwrap_or_else(|e| {
                    tracing::warn!(%e, "node not listed");
                    None
                })
            })
            .collect()
    }

    fn version_of<'a>(&'a self, n: &'a Node) -> &'a str {
        n.spec.version.as_deref().unwrap_or(&self.node_version)
    }

    /// Answers one request: `path` without the query string, `query` as sent, `body` for POST.
    pub fn answer(&self, method: &Method, path: &str, query: &str, body: &[u8], now: OffsetDateTime) -> Reply {
        let p = path.trim_end_matches('/');
        let nodes = self.nodes();
        let (page_no, per_page) = paging(query);
        let only = |f: fn(&Node) -> bool| nodes.iter().filter(|n| f(n)).cloned().collect::<Vec<_>>();
        let skimmed = |list: Vec<Node>| {
            let items = list.iter().map(responses::skimmed).collect();
            json(&responses::cached(&self.clock, now, responses::page(items, page_no, per_page)))
        };
        let is_gateway = |n: &Node| n.spec.kind == Kind::Gateway;
        let is_mixnode = |n: &Node| n.spec.kind != Kind::Gateway;
        match *method {
            Method::GET if p.ends_with("/v1/epoch/key-rotation-info") => {
                json(&responses::key_rotation_info(&self.clock, now))
            }
            Method::GET if p.ends_with("/v1/nym-nodes/rewarded-set") => {
                json(&responses::rewarded_set(&self.clock, now, &nodes))
            }
            Method::GET if p.ends_with("/v2/unstable/nym-nodes/skimmed") => skimmed(nodes.clone()),
            Method::GET
                if p.ends_with("/v2/unstable/nym-nodes/skimmed/entry-gateways")
                    || p.ends_with("/v2/unstable/nym-nodes/skimmed/exit-gateways") =>
            {
                skimmed(only(is_gateway))
            }
            Method::GET if p.contains("/v2/unstable/nym-nodes/skimmed/mixnodes") => skimmed(only(is_mixnode)),
            Method::GET if p.ends_with("/v2/unstable/nym-nodes/semi-skimmed") => {
                let items = nodes.iter().map(responses::semi_skimmed).collect();
                json(&responses::cached(&self.clock, now, responses::page(items, page_no, per_page)))
            }
            Method::GET if p.ends_with("/v3/unstable/nym-nodes/semi-skimmed") => {
                let items = nodes.iter().map(|n| responses::semi_skimmed_v3(n, self.version_of(n))).collect();
                json(&responses::cached(&self.clock, now, responses::page(items, page_no, per_page)))
            }
            Method::GET if p.ends_with("/v2/nym-nodes/described") => {
                let items = nodes.iter().map(|n| responses::described_v2(n, self.version_of(n), now)).collect();
                json(&responses::page(items, page_no, per_page))
            }
            Method::GET if p.ends_with("/v1/nym-nodes/described") => json(&responses::described_v1_empty()),
            // No upgrade mode: the attestation is absent (JSON null).
            Method::GET if p.ends_with("/upgrade-mode-attestation") => json(&Option::<()>::None),
            Method::POST if p.ends_with("/v1/unstable/nym-nodes/by-addresses") => {
                match serde_json::from_slice::<NodesByAddressesRequestBody>(body) {
                    Ok(req) => json(&responses::by_addresses(&nodes, &req.addresses)),
                    Err(e) => error(StatusCode::BAD_REQUEST, &format!("not a by-addresses request: {e}")),
                }
            }
            // Nodes ask nym-api to re-read their self-description; there is nothing to refresh.
            Method::POST if p.ends_with("/v1/nym-nodes/refresh-described") => json(&Option::<()>::None),
            _ => {
                tracing::warn!(%method, path, "not served by the local directory");
                error(StatusCode::NOT_FOUND, &format!("not served by the local directory: {method} {path}"))
            }
        }
    }
}

fn json<T: serde::Serialize>(v: &T) -> Reply {
    match serde_json::to_vec(v) {
        Ok(body) => (StatusCode::OK, body),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}

/// nym-api's error body shape (`{"message": …}`).
fn error(status: StatusCode, message: &str) -> Reply {
    (status, serde_json::json!({ "message": message }).to_string().into_bytes())
}

/// `page` and `per_page` from a query string; anything unparsable is ignored.
pub fn paging(query: &str) -> (u32, Option<usize>) {
    let mut page = 0;
    let mut per_page = None;
    for kv in query.split('&') {
        match kv.split_once('=') {
            Some(("page", v)) => page = v.parse().unwrap_or(0),
            Some(("per_page", v)) => per_page = v.parse().ok(),
            _ => {}
        }
    }
    (page, per_page)
}

/// Serves `dir` on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, dir: Arc<Directory>) -> std::io::Result<()> {
    loop {
        let (stream, peer) = listener.accept().await?;
        let dir = dir.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| handle(dir.clone(), peer.ip(), req));
            let io = hyper_util::rt::TokioIo::new(stream);
            if let Err(e) = hyper::server::conn::http1::Builder::new().serve_connection(io, svc).await {
                tracing::debug!(%e, %peer, "connection ended with an error");
            }
        });
    }
}

async fn handle(
    dir: Arc<Directory>,
    peer: IpAddr,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or("").to_string();
    let (status, body) = match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(b) => dir.answer(&method, &path, &query, &b.to_bytes(), OffsetDateTime::now_utc()),
        Err(e) => error(StatusCode::PAYLOAD_TOO_LARGE, &e.to_string()),
    };
    tracing::info!(%peer, %method, path, status = status.as_u16(), bytes = body.len(), "request");
    let resp = Response::builder()
        .status(status)
        .header("Content-Type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .unwrap_or_default();
    Ok(resp)
}
