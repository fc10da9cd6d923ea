//! Global distribution transport: listeners, connections to other
//! datacenters, and MongooseIM's wire format on both.
//!
//! Endpoints of a remote datacenter are set by the caller (from the session
//! table); each gets `connections_per_endpoint` connections. A sender passes
//! an affinity (a hash of its pid) so that one sender always uses the same
//! connection to a host, which keeps its messages in order.

pub mod credit;
pub mod frame;
pub mod listener;
pub mod metrics;
pub mod outgoing;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};

use crate::error::{Error, Result};
use frame::encode_data;
use listener::now_us;
use metrics::Metrics;
use outgoing::{Dialer, Outgoing};

pub struct Transport {
    dialer: Arc<Dialer>,
    per_endpoint: usize,
    peers: RwLock<HashMap<String, Vec<Outgoing>>>,
    pub metrics: Arc<Metrics>,
}

impl Transport {
    pub fn new(dialer: Dialer, per_endpoint: usize) -> Transport {
        let metrics = dialer.metrics.clone();
        Transport {
            dialer: Arc::new(dialer),
            per_endpoint: per_endpoint.max(1),
            peers: RwLock::new(HashMap::new()),
            metrics,
        }
    }

    /// Sets a host's endpoints: `enabled` ones get `per_endpoint`
    /// connections (opened lazily) and carry new stanzas; `disabled` ones keep
    /// the connections they have, which finish their queues but get nothing
    /// new; connections to endpoints in neither list close once drained.
    pub fn set_endpoints(&self, host: &str, enabled: &[SocketAddr], disabled: &[SocketAddr]) {
        let Ok(mut peers) = self.peers.write() else {
            return;
        };
        let old = peers.remove(host).unwrap_or_default();
        let mut kept: Vec<Outgoing> = old
            .into_iter()
            .filter(|c| enabled.contains(&c.endpoint) || disabled.contains(&c.endpoint))
            .collect();
        for c in &mut kept {
            c.enabled = enabled.contains(&c.endpoint);
        }
        for &e in enabled {
            let have = kept.iter().filter(|c| c.endpoint == e).count();
            for _ in have..self.per_endpoint {
                kept.push(Outgoing::open(host, e, self.dialer.clone()));
            }
        }
        if !kept.is_empty() {
            peers.insert(host.to_string(), kept);
        }
    }

    /// Drops every connection; queued frames are still written first.
    pub fn stop(&self) {
        if let Ok(mut peers) = self.peers.write() {
            peers.clear();
        }
    }

    /// The enabled endpoints of `host`.
    pub fn endpoints(&self, host: &str) -> Vec<SocketAddr> {
        self.endpoints_where(host, true)
    }

    /// The disabled endpoints of `host` whose connections are still kept.
    pub fn disabled_endpoints(&self, host: &str) -> Vec<SocketAddr> {
        self.endpoints_where(host, false)
    }

    fn endpoints_where(&self, host: &str, enabled: bool) -> Vec<SocketAddr> {
        let peers = self.peers.read().ok();
        let mut eps: Vec<_> = peers
            .as_ref()
            .and_then(|p| p.get(host))
            .map(|conns| {
                conns
                    .iter()
                    .filter(|c| c.enabled == enabled)
                    .map(|c| c.endpoint)
                    .collect()
            })
            .unwrap_or_default();
        eps.sort();
        eps.dedup();
        eps
    }

    /// Queues `term` (a `term_to_binary` of `{From, To, Acc, Packet}`) for `host`.
    pub fn send(&self, host: &str, affinity: u64, key: &[u8], term: &[u8]) -> Result<()> {
        let mut frame = Vec::new();
        encode_data(&mut frame, now_us() as u64, key, term)
            .map_err(|e| Error::BadRequest(e.to_string()))?;
        let peers = self
            .peers
            .read()
            .map_err(|_| Error::Internal("poisoned".into()))?;
        let conns = peers.get(host).map(Vec::as_slice).unwrap_or_default();
        let enabled = conns.iter().filter(|c| c.enabled).count();
        let conn = conns
            .iter()
            .filter(|c| c.enabled)
            .nth((affinity % enabled.max(1) as u64) as usize)
            .ok_or_else(|| Error::NoConnection(format!("no enabled endpoint known for {host}")))?;
        conn.send(frame)
            .map_err(|e| Error::NoConnection(format!("{host}: {e}")))
    }
}

#[cfg(test)]
#[path = "transport_tests.rs"]
mod tests;
