//! Backend pools at run time: servers with their prepared peers and health, and server
//! selection (balance algorithm, affinity, health, servers already tried).

mod health;
pub mod pins;
mod probe;
mod select;

pub use health::{Health, HealthReport};
pub use probe::{connect_and_check, diagnose, Prober};

use crate::config::{
    Affinity, AffinitySecret, Balance, HostHeader, PoolConfig, Probe, UpstreamTls,
};
use crate::upstream;
use openssl::hash::MessageDigest;
use openssl::pkey::PKey;
use openssl::sign::Signer;
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
    /// The affinity cookie value naming this server (empty when affinity is off): opaque, the
    /// same on every instance with the same secret, and unchanged by trust settings.
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
    /// Keys seen that the whitelist does not accept (`pin_mode: report`), carried across
    /// reloads.
    pub unlisted: Arc<pins::Unlisted>,
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
                    peer: upstream::peer(
                        s,
                        cfg.tls.as_deref(),
                        (&cfg.timeouts, &cfg.http),
                        group,
                        hook,
                    ),
                    weight: s.weight,
                    id: cfg
                        .affinity
                        .as_ref()
                        .map(|a| server_id(&a.secret, &cfg.name, &s.label))
                        .unwrap_or_default(),
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
            unlisted: previous.map_or_else(Arc::default, |p| p.unlisted.clone()),
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

/// The affinity id of a server: HMAC-SHA256 under the operator's secret over the pool name and
/// the server as written, truncated to 128 bits. Without the secret nobody can tell which
/// address a cookie names (an unkeyed hash of `ip:port` falls to a search of the address
/// space); pins, CA and other trust settings are left out so rotating them keeps sessions.
fn server_id(secret: &AffinitySecret, pool: &str, label: &str) -> String {
    let mac = PKey::hmac(secret.bytes()).and_then(|key| {
        let mut signer = Signer::new(MessageDigest::sha256(), &key)?;
        for part in [b"pinion-affinity", pool.as_bytes(), label.as_bytes()] {
            // Length-prefixed, so no two (pool, server) pairs feed the MAC the same bytes.
            signer.update(&(part.len() as u64).to_be_bytes())?;
            signer.update(part)?;
        }
        signer.sign_to_vec()
    });
    // OpenSSL fails here only without memory; an empty id then matches no cookie, so clients
    // are balanced as if affinity were off rather than all sent to one server.
    let digest = mac.unwrap_or_default();
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
        let key = AffinitySecret::new(&[7; 32]);
        let a = server_id(&key, "api", "10.0.1.4:443");
        assert_eq!(a, server_id(&key, "api", "10.0.1.4:443"));
        assert_ne!(a, server_id(&key, "api", "10.0.1.5:443"));
        assert_ne!(a, server_id(&key, "web", "10.0.1.4:443"));
        assert_ne!(
            a,
            server_id(&key, "api1", "0.0.1.4:443"),
            "parts are delimited"
        );
        assert_eq!(a.len(), 32);
        assert!(a.bytes().all(|b| b.is_ascii_hexdigit()));
    }

    #[test]
    fn server_ids_depend_on_the_secret_and_are_no_plain_hash_of_the_address() {
        let (pool, label) = ("api", "10.0.1.4:443");
        let a = server_id(&AffinitySecret::new(&[7; 32]), pool, label);
        assert_ne!(a, server_id(&AffinitySecret::new(&[8; 32]), pool, label));
        // Whoever knows pool and address cannot recompute the id without the key: no unkeyed
        // digest of them, in any of the ways the pieces could be joined, gives it.
        for material in [
            format!("pinion-affinity\0{pool}\0{label}\0"),
            format!("{pool}{label}"),
            label.to_owned(),
        ] {
            let plain = openssl::hash::hash(MessageDigest::sha256(), material.as_bytes()).unwrap();
            let plain: String = plain.iter().take(16).map(|b| format!("{b:02x}")).collect();
            assert_ne!(a, plain, "{material:?}");
        }
    }
}
