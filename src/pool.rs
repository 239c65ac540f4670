//! Backend pools at run time: servers with their prepared peers and health, and server
//! selection (balance algorithm, affinity, health, servers already tried).

mod health;
mod probe;
mod select;

pub use health::{Health, HealthReport};
pub use probe::{connect_and_check, Prober};

use crate::config::{Affinity, Balance, HostHeader, PoolConfig, Probe, UpstreamTls};
use crate::upstream;
use openssl::hash::{hash, MessageDigest};
use pingora::protocols::tls::HandshakeCompleteHook;
use pingora::upstreams::peer::HttpPeer;
use std::fmt::Write as _;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// One server of a pool, ready to connect to.
#[derive(Debug)]
pub struct Server {
    /// The address as written in the configuration, for logs.
    pub label: String,
    /// The peer template cloned for each request.
    pub peer: HttpPeer,
    /// Weight for every balance algorithm.
    pub weight: u32,
    /// The affinity cookie value naming this server: opaque, and the same on every instance
    /// with the same configuration.
    pub id: String,
    /// The name a probe or `host_header: backend` uses for this server.
    pub host_name: String,
    /// Health from probes; carried across reloads while address and trust are unchanged.
    pub health: Arc<Health>,
    /// Requests proxied to it right now (for least_connections), carried like `health`.
    pub in_flight: Arc<AtomicUsize>,
    /// The server's address and the pool's trust policy: what must stay the same for a reload
    /// to keep its health and pooled connections.
    carry_key: (std::net::SocketAddr, u64),
}

/// A pool: its servers, its settings and its round-robin position.
#[derive(Debug)]
pub struct Pool {
    /// The pool's name.
    pub name: String,
    /// Its servers, in configuration order.
    pub servers: Vec<Server>,
    /// End-to-end TLS settings; `None` for plain HTTP.
    pub tls: Option<Arc<UpstreamTls>>,
    /// How a server is chosen.
    pub balance: Balance,
    /// The Host header sent to servers.
    pub host_header: HostHeader,
    /// Cookie affinity, when on.
    pub affinity: Option<Affinity>,
    /// Active probe, when on.
    pub probe: Option<Probe>,
    /// Retries on another server after a connection failure.
    pub retries: u32,
    schedule: Vec<usize>,
    next: AtomicUsize,
}

/// What selection may use about the request.
#[derive(Debug, Default, Clone, Copy)]
pub struct SelectKey<'a> {
    /// The client's address (for ip_hash).
    pub client: Option<IpAddr>,
    /// The affinity cookie value the client sent.
    pub affinity: Option<&'a str>,
}

/// A chosen server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Choice {
    /// Index into `servers`.
    pub index: usize,
    /// Whether the client's affinity cookie chose it.
    pub by_affinity: bool,
}

impl Pool {
    /// Prepares a pool from its validated configuration.
    pub fn new(cfg: &PoolConfig, hook: &HandshakeCompleteHook) -> Pool {
        Pool::carried(cfg, hook, None).0
    }

    /// Prepares a pool, taking over the health and in-flight counts of the servers of
    /// `previous` (the same pool in the configuration before a reload) whose address and trust
    /// policy are unchanged; also returns how many servers did.
    pub fn carried(
        cfg: &PoolConfig,
        hook: &HandshakeCompleteHook,
        previous: Option<&Pool>,
    ) -> (Pool, usize) {
        let group = cfg
            .tls
            .as_deref()
            .map_or(0, |t| upstream::group_key(&cfg.name, t));
        let mut kept_count = 0;
        let servers = cfg
            .servers
            .iter()
            .map(|s| {
                let carry_key = (s.address, group);
                let kept =
                    previous.and_then(|p| p.servers.iter().find(|old| old.carry_key == carry_key));
                kept_count += usize::from(kept.is_some());
                Server {
                    label: s.label.clone(),
                    peer: upstream::peer(s, cfg.tls.as_deref(), &cfg.timeouts, group, hook),
                    weight: s.weight,
                    id: server_id(&cfg.name, &s.label, cfg.tls.as_deref()),
                    host_name: cfg
                        .tls
                        .as_ref()
                        .and_then(|t| t.sni.clone())
                        .or_else(|| s.host.clone())
                        .unwrap_or_else(|| s.address.to_string()),
                    health: kept.map_or_else(Arc::default, |k| k.health.clone()),
                    in_flight: kept.map_or_else(Arc::default, |k| k.in_flight.clone()),
                    carry_key,
                }
            })
            .collect();
        let weights: Vec<u32> = cfg.servers.iter().map(|s| s.weight).collect();
        let pool = Pool {
            name: cfg.name.clone(),
            servers,
            tls: cfg.tls.clone(),
            balance: cfg.balance,
            host_header: cfg.host_header.clone(),
            affinity: cfg.affinity.clone(),
            probe: cfg.probe.clone(),
            retries: cfg.retries,
            schedule: select::smooth_schedule(&weights),
            next: AtomicUsize::new(0),
        };
        (pool, kept_count)
    }

    /// Chooses a healthy server not in `tried`: the affinity cookie's server when it is
    /// usable, else by the balance algorithm. `None` when no server is left.
    pub fn select(&self, key: &SelectKey<'_>, tried: &[usize]) -> Option<Choice> {
        let usable = |i: usize| {
            !tried.contains(&i) && self.servers.get(i).is_some_and(|s| s.health.is_healthy())
        };
        if self.affinity.is_some() {
            if let Some(cookie) = key.affinity {
                if let Some(index) = self.servers.iter().position(|s| s.id == cookie) {
                    if usable(index) {
                        return Some(Choice {
                            index,
                            by_affinity: true,
                        });
                    }
                }
            }
        }
        let index = match self.balance {
            Balance::RoundRobin => {
                let start = self.next.fetch_add(1, Ordering::Relaxed);
                select::round_robin(&self.schedule, start, usable)
            }
            Balance::Random => select::random(&self.servers, usable),
            Balance::LeastConnections => select::least_connections(&self.servers, usable),
            Balance::IpHash => select::ip_hash(&self.servers, key.client, usable),
        }?;
        Some(Choice {
            index,
            by_affinity: false,
        })
    }

    /// Whether a healthy server not in `tried` remains (a retry has somewhere to go).
    pub fn has_candidate(&self, tried: &[usize]) -> bool {
        self.servers
            .iter()
            .enumerate()
            .any(|(i, s)| !tried.contains(&i) && s.health.is_healthy())
    }

    /// Why each unhealthy server is out of rotation, for the "no healthy server" log line.
    pub fn unhealthy_summary(&self) -> String {
        self.servers
            .iter()
            .map(|s| {
                let report = s.health.report();
                format!(
                    "{} ({})",
                    s.label,
                    report.reason.as_deref().unwrap_or("healthy, already tried")
                )
            })
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// The affinity id of a server: a SHA-256 over the pool name, the server as written and the
/// pool's trust material, so it names the server without revealing its address.
fn server_id(pool: &str, label: &str, tls: Option<&UpstreamTls>) -> String {
    let mut material = format!("pinion-affinity\0{pool}\0{label}\0").into_bytes();
    if let Some(tls) = tls {
        material.extend_from_slice(&upstream::group_key(pool, tls).to_le_bytes());
    }
    let digest = hash(MessageDigest::sha256(), &material)
        .map(|d| d.to_vec())
        .unwrap_or_default();
    let mut id = String::with_capacity(32);
    for b in digest.iter().take(16) {
        let _ = write!(id, "{b:02x}");
    }
    id
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_ids_are_stable_opaque_and_distinct() {
        let a = server_id("api", "10.0.1.4:443", None);
        assert_eq!(a, server_id("api", "10.0.1.4:443", None));
        assert_ne!(a, server_id("api", "10.0.1.5:443", None));
        assert_ne!(a, server_id("web", "10.0.1.4:443", None));
        assert_eq!(a.len(), 32);
        assert!(!a.contains("10.0"));
    }
}
