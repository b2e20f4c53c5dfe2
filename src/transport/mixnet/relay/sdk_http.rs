//! Points every HTTP client nym-http-api-client 1.21.6 builds at the relay's Unix socket
//! (docs/directory-relay.md §2).
//!
//! The crate builds each reqwest client from `registry::default_builder()`, which applies the
//! `inventory`-collected `registry::ConfigRecord`s in ascending priority. Ours has the highest,
//! so it runs last, after the crate's own defaults (priority -100: timeout, user agent,
//! compression), and sets `ClientBuilder::unix_socket`: reqwest 0.13 then sends every
//! connection of that client over the socket, TLS still end to end for https, with no DNS and
//! no proxy (reqwest 0.13.4 connect.rs, `ConnectorService::call`, checks `unix_socket` before
//! either). The SDK's shared client (`SHARED_CLIENT`) adds a DNS resolver after
//! `default_builder()`; it is never asked, because the socket path is taken first.
//!
//! Until [`route_through`] sets a path the record changes nothing (the library, per-app mode,
//! `exits`). The path is process-wide and set once: the shared client is built once per
//! process, so a client built before the path was set would keep dialling directly, unmarked,
//! for the life of the process. Every such build is counted, and [`route_through`] refuses to
//! start routing after one: the caller must set the path before the first directory request.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use nym_http_api_client::registry::ConfigRecord;
use nym_http_api_client::ReqwestClientBuilder;

/// The routing state; one lock so that a client build and [`route_through`] cannot interleave
/// (a build that saw no path is always counted before the path can be set).
#[derive(Debug)]
struct State {
    path: Option<PathBuf>,
    built_direct: u64,
}

static STATE: Mutex<State> = Mutex::new(State { path: None, built_direct: 0 });

impl State {
    /// A client is being built: the path to give it, if any (counted when there is none).
    fn build(&mut self) -> Option<PathBuf> {
        if self.path.is_none() {
            self.built_direct += 1;
        }
        self.path.clone()
    }

    fn route(&mut self, path: &Path) -> Result<(), RouteError> {
        match &self.path {
            Some(current) if current == path => Ok(()),
            Some(current) => Err(RouteError::AlreadyRouted(current.clone())),
            None if self.built_direct > 0 => Err(RouteError::BuiltBefore(self.built_direct)),
            None => {
                self.path = Some(path.to_path_buf());
                Ok(())
            }
        }
    }
}

nym_http_api_client::inventory::submit! {
    ConfigRecord { priority: i32::MAX, apply: through_relay }
}

/// The record's function: the relay's socket if one is set, else the builder unchanged.
fn through_relay(builder: ReqwestClientBuilder) -> ReqwestClientBuilder {
    // A panic while the lock was held cannot leave `State` half-written (two plain fields).
    let path = STATE.lock().unwrap_or_else(PoisonError::into_inner).build();
    match path {
        Some(path) => builder.unix_socket(path),
        None => builder,
    }
}

/// Why the SDK's HTTP cannot be routed through a relay.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    /// Another socket path is already in use by this process.
    #[error("the SDK's HTTP already goes through {}", .0.display())]
    AlreadyRouted(PathBuf),
    /// HTTP clients were built before the path was set: they connect directly, for good.
    #[error(
        "{0} nym-api HTTP client(s) were built before the directory relay started: they would \
         bypass it for the life of the process"
    )]
    BuiltBefore(u64),
}

/// From now on, every HTTP client nym-http-api-client builds connects through `path`. Setting
/// the same path again is a no-op; another path, or any client built before, is an error.
pub fn route_through(path: &Path) -> Result<(), RouteError> {
    STATE.lock().unwrap_or_else(PoisonError::into_inner).route(path)
}

/// The socket path the SDK's HTTP goes through, if one is set.
pub fn routed_path() -> Option<PathBuf> {
    STATE.lock().unwrap_or_else(PoisonError::into_inner).path.clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    // The process-wide STATE is exercised by tests/directory_relay.rs, a process of its own:
    // here, other tests build SDK clients in the same process, in any order.
    #[test]
    fn routes_once_and_only_before_any_direct_client() {
        let (a, b) = (Path::new("/run/a/directory.sock"), Path::new("/run/b/directory.sock"));
        let mut s = State { path: None, built_direct: 0 };
        s.route(a).unwrap();
        assert_eq!(s.build().as_deref(), Some(a));
        assert_eq!(s.route(a), Ok(()), "the same path again");
        assert_eq!(s.route(b), Err(RouteError::AlreadyRouted(a.to_path_buf())));
        assert_eq!(s.build().as_deref(), Some(a), "a refused path changes nothing");
        assert_eq!(s.built_direct, 0);

        let mut late = State { path: None, built_direct: 0 };
        assert_eq!(late.build(), None);
        assert_eq!(late.build(), None);
        assert_eq!(late.route(a), Err(RouteError::BuiltBefore(2)));
        assert_eq!(late.build(), None, "still direct: the caller must not go on");
    }

    /// Linked in and applied last: the only record at the highest priority (the crate's own
    /// defaults are at -100). Without the `submit!` the count is 0.
    #[test]
    fn the_record_is_registered_last() {
        let records = nym_http_api_client::registry::inspect_registered_configs();
        assert_eq!(records.iter().filter(|r| r.0 == i32::MAX).count(), 1, "{records:?}");
        assert_eq!(records.last().map(|r| r.0), Some(i32::MAX));
    }
}
