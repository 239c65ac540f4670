//! Backend pools at run time: servers with their prepared peers and health, and server
//! selection (balance algorithm, affinity, health, servers already tried).
//!
//! A pool's servers form a [`ServerSet`] that can change while the pool serves: a name given as
//! a server stands for every address it resolves to, and `pool::resolve` swaps in a new set
//! when the answer changes. A request keeps the set it started with to its end.

mod health;
pub mod pins;
mod probe;
pub mod resolve;
mod select;

pub use health::{Health, HealthReport};
use probe::probe_and_record;
pub use probe::{connect_and_check, diagnose, Prober};
pub use resolve::{NameState, Resolver};

use crate::config::{
    Affinity, AffinitySecret, Balance, HostHeader, PoolConfig, Probe, Resolution, ServerConfig,
    ServerEntry, Timeouts, UpstreamTls,
};
use crate::metrics::ServerCounters;
use crate::upstream;
use arc_swap::ArcSwap;
use openssl::hash::MessageDigest;
use openssl::pkey::PKey;
use openssl::sign::Signer;
use pingora::protocols::tls::HandshakeCompleteHook;
use pingora::upstreams::peer::HttpPeer;
use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// What must stay the same for a server to keep its health, in-flight count and pooled
/// connections: its address, the name it is verified and addressed by, the pool's trust policy.
type CarryKey = (SocketAddr, Option<String>, u64);

/// One server of a pool, ready to connect to.
#[derive(Debug)]
pub struct Server {
    /// The address as written (`name:port (address)` for an address of a name), for logs and
    /// metrics labels.
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
    /// Its connection and trust-check counters for `/metrics`, carried while its label stays.
    pub counters: Arc<ServerCounters>,
    carry_key: CarryKey,
}

impl Server {
    /// A bare plain-HTTP server for unit tests of the balance algorithms.
    #[cfg(test)]
    pub(crate) fn for_test(label: &str, address: SocketAddr, weight: u32) -> Server {
        Server {
            label: label.to_owned(),
            peer: HttpPeer::new(address, false, String::new()),
            weight,
            id: format!("id-{label}"),
            host_name: String::new(),
            health: Arc::default(),
            in_flight: Arc::default(),
            counters: Arc::default(),
            carry_key: (address, None, 0),
        }
    }
}

/// The servers of a pool at one moment, and their round-robin schedule.
#[derive(Debug, Default)]
pub struct ServerSet {
    servers: Vec<Arc<Server>>,
    schedule: Vec<usize>,
}

impl ServerSet {
    fn new(servers: Vec<Arc<Server>>) -> ServerSet {
        let weights: Vec<u32> = servers.iter().map(|s| s.weight).collect();
        ServerSet {
            schedule: select::smooth_schedule(&weights),
            servers,
        }
    }
}

impl std::ops::Deref for ServerSet {
    type Target = [Arc<Server>];
    fn deref(&self) -> &[Arc<Server>] {
        &self.servers
    }
}

/// A pool: its settings, its servers and its round-robin position.
pub struct Pool {
    /// The pool's name.
    pub name: String,
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
    /// How its names are re-resolved.
    pub resolution: Resolution,
    /// Each distinct server name of the pool, with what it last resolved to.
    pub names: Vec<Arc<NameState>>,
    /// Keys seen that the whitelist does not accept (`pin_mode: report`), carried across
    /// reloads.
    pub unlisted: Arc<pins::Unlisted>,
    entries: Vec<ServerEntry>,
    timeouts: Timeouts,
    http: crate::upstream::UpstreamHttp,
    group: u64,
    hook: HandshakeCompleteHook,
    set: ArcSwap<ServerSet>,
    next: AtomicUsize,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("name", &self.name)
            .field("servers", &self.servers().len())
            .finish_non_exhaustive()
    }
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
    /// Index into the set it was chosen from.
    pub index: usize,
    /// Whether the client's affinity cookie chose it.
    pub by_affinity: bool,
}

/// How a pool's servers change when its names resolve to other addresses.
#[derive(Debug, Default)]
pub struct Change {
    /// Servers that joined.
    pub added: Vec<Arc<Server>>,
    /// Servers that left: no new request goes to them.
    pub removed: Vec<Arc<Server>>,
}

impl Pool {
    /// Prepares a pool from its validated configuration, with the names' addresses of
    /// `answers` (a name without an answer has no server yet).
    pub fn new(
        cfg: &PoolConfig,
        hook: &HandshakeCompleteHook,
        answers: &crate::dns::Answers,
    ) -> Pool {
        Pool::carried(cfg, hook, None, answers).0
    }

    /// Prepares a pool, taking over from `previous` (the same pool in the configuration before
    /// a reload) the health and in-flight counts of servers whose address, name and trust
    /// policy are unchanged, the counters of servers whose label is unchanged, and each name's
    /// state (its last good addresses when `answers` has none for it); also returns how many
    /// servers kept their health.
    pub fn carried(
        cfg: &PoolConfig,
        hook: &HandshakeCompleteHook,
        previous: Option<&Pool>,
        answers: &crate::dns::Answers,
    ) -> (Pool, usize) {
        let group = cfg
            .tls
            .as_deref()
            .map_or(0, |t| upstream::group_key(&cfg.name, t));
        let mut hosts: Vec<&str> = cfg.servers.iter().filter_map(ServerEntry::host).collect();
        hosts.sort_unstable();
        hosts.dedup();
        let names = hosts
            .into_iter()
            .map(|host| {
                let kept = previous.and_then(|p| p.names.iter().find(|n| n.host == host));
                let state = kept
                    .cloned()
                    .unwrap_or_else(|| Arc::new(NameState::new(host)));
                if let Some(answer) = answers.get(host) {
                    state.record(&cfg.name, answer.clone());
                }
                state
            })
            .collect();
        let mut pool = Pool {
            name: cfg.name.clone(),
            tls: cfg.tls.clone(),
            balance: cfg.balance,
            host_header: cfg.host_header.clone(),
            affinity: cfg.affinity.clone(),
            probe: cfg.probe.clone(),
            retries: cfg.retries,
            resolution: cfg.resolution,
            names,
            unlisted: previous.map_or_else(Arc::default, |p| p.unlisted.clone()),
            entries: cfg.servers.clone(),
            timeouts: cfg.timeouts,
            http: cfg.http,
            group,
            hook: hook.clone(),
            set: ArcSwap::default(),
            next: AtomicUsize::new(0),
        };
        let old = previous.map(Pool::servers);
        let old = old.as_deref().map_or(&[][..], |s| &s[..]);
        let mut kept_count = 0;
        let servers = pool
            .wanted()
            .iter()
            .map(|s| {
                let key = pool.carry_key(s);
                let kept = old.iter().find(|o| o.carry_key == key);
                kept_count += usize::from(kept.is_some());
                let counters = old
                    .iter()
                    .find(|o| o.label == s.label)
                    .map_or_else(Arc::default, |o| o.counters.clone());
                Arc::new(pool.server(
                    s,
                    kept.map_or_else(Arc::default, |k| k.health.clone()),
                    kept.map_or_else(Arc::default, |k| k.in_flight.clone()),
                    counters,
                ))
            })
            .collect();
        pool.set = ArcSwap::from_pointee(ServerSet::new(servers));
        (pool, kept_count)
    }

    /// The servers now: what a request chooses from (and keeps for its retries).
    pub fn servers(&self) -> Arc<ServerSet> {
        self.set.load_full()
    }

    /// The server set the names' current addresses call for, when it differs from the one
    /// serving: servers that stay are kept as they are (health, connections, probes); servers
    /// that join are out of rotation until their first probe passes when the pool has a probe.
    /// Nothing changes until [`Pool::install`].
    pub fn next_set(&self) -> Option<(ServerSet, Change)> {
        let now = self.servers();
        let wanted = self.wanted();
        let same = wanted.len() == now.len()
            && wanted
                .iter()
                .zip(now.iter())
                .all(|(w, s)| self.carry_key(w) == s.carry_key);
        if same {
            return None;
        }
        let mut change = Change::default();
        let servers: Vec<Arc<Server>> = wanted
            .iter()
            .map(|s| {
                let key = self.carry_key(s);
                if let Some(kept) = now.iter().find(|o| o.carry_key == key) {
                    return kept.clone();
                }
                let health = match self.probe {
                    Some(_) => Arc::new(Health::pending()),
                    None => Arc::default(),
                };
                let joined = Arc::new(self.server(s, health, Arc::default(), Arc::default()));
                change.added.push(joined.clone());
                joined
            })
            .collect();
        change.removed = now
            .iter()
            .filter(|o| !servers.iter().any(|s| s.carry_key == o.carry_key))
            .cloned()
            .collect();
        Some((ServerSet::new(servers), change))
    }

    /// Makes `set` the servers every request that starts from now on chooses from.
    pub fn install(&self, set: ServerSet) {
        self.set.store(Arc::new(set));
    }

    /// The servers the configuration and the names' current addresses call for, in
    /// configuration order (a name's addresses in sorted order).
    fn wanted(&self) -> Vec<ServerConfig> {
        let mut out = Vec::new();
        for entry in &self.entries {
            match entry.host() {
                None => out.extend(entry.server()),
                Some(host) => {
                    let addrs = self
                        .names
                        .iter()
                        .find(|n| n.host == host)
                        .map(|n| n.addresses())
                        .unwrap_or_default();
                    out.extend(addrs.into_iter().filter_map(|ip| entry.at(ip)));
                }
            }
        }
        out
    }

    fn carry_key(&self, s: &ServerConfig) -> CarryKey {
        (s.address, s.host.clone(), self.group)
    }

    fn server(
        &self,
        s: &ServerConfig,
        health: Arc<Health>,
        in_flight: Arc<AtomicUsize>,
        counters: Arc<ServerCounters>,
    ) -> Server {
        Server {
            label: s.label.clone(),
            peer: upstream::peer(
                s,
                self.tls.as_deref(),
                (&self.timeouts, &self.http),
                self.group,
                &self.hook,
            ),
            weight: s.weight,
            id: self
                .affinity
                .as_ref()
                .map(|a| server_id(&a.secret, &self.name, &s.label))
                .unwrap_or_default(),
            host_name: self
                .tls
                .as_ref()
                .and_then(|t| t.sni.clone())
                .or_else(|| s.host.clone())
                .unwrap_or_else(|| s.address.to_string()),
            health,
            in_flight,
            counters,
            carry_key: self.carry_key(s),
        }
    }

    /// Chooses a healthy server of `set` not in `tried`: the affinity cookie's server when it
    /// is usable, else by the balance algorithm. `None` when no server is left.
    pub fn select(&self, set: &ServerSet, key: &SelectKey<'_>, tried: &[usize]) -> Option<Choice> {
        let usable =
            |i: usize| !tried.contains(&i) && set.get(i).is_some_and(|s| s.health.is_healthy());
        if self.affinity.is_some() {
            if let Some(cookie) = key.affinity {
                if let Some(index) = set.iter().position(|s| s.id == cookie) {
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
                select::round_robin(&set.schedule, start, usable)
            }
            Balance::Random => select::random(set, usable),
            Balance::LeastConnections => select::least_connections(set, usable),
            Balance::IpHash => select::ip_hash(set, key.client, usable),
        }?;
        Some(Choice {
            index,
            by_affinity: false,
        })
    }

    /// Server `index` of `set` once more, when it is still healthy: the replay of a request its
    /// connection (not the server) refused, with no other server left.
    pub fn again(&self, set: &ServerSet, key: &SelectKey<'_>, index: usize) -> Option<Choice> {
        let server = set.get(index).filter(|s| s.health.is_healthy())?;
        Some(Choice {
            index,
            by_affinity: self.affinity.is_some() && key.affinity == Some(server.id.as_str()),
        })
    }

    /// Why no server of `set` is left, for the "no healthy server" log line: each unhealthy
    /// server's reason, and each name that resolves to nothing.
    pub fn unhealthy_summary(&self, set: &ServerSet) -> String {
        let servers = set.iter().map(|s| {
            let report = s.health.report();
            format!(
                "{} ({})",
                s.label,
                report.reason.as_deref().unwrap_or("healthy, already tried")
            )
        });
        let names = self.names.iter().filter_map(|n| n.unresolved());
        let all: Vec<String> = servers.chain(names).collect();
        if all.is_empty() {
            return "no server".to_owned();
        }
        all.join(", ")
    }
}

/// Whether a healthy server of `set` not in `tried` remains (a retry has somewhere to go).
pub fn has_candidate(set: &ServerSet, tried: &[usize]) -> bool {
    set.iter()
        .enumerate()
        .any(|(i, s)| !tried.contains(&i) && s.health.is_healthy())
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
