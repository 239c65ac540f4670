//! Server names resolved again while pinion runs: one task per pool with names looks each name
//! up every `resolve_seconds` (sooner when the answer's TTL is shorter), off the request path,
//! and hands the pool the new addresses. A failed or empty answer keeps the last good ones.

use super::{Change, Pool};
use crate::dns::{Answer, Dns, DnsError};
use crate::gateway::{Gateway, Generation};
use async_trait::async_trait;
use log::{info, warn};
use pingora::connectors::http::Connector;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use pingora::upstreams::peer::Peer;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

/// The shortest time between two lookups of a name, whatever the TTL says (a TTL of 0 is common
/// for names meant to be asked every time).
const MIN_INTERVAL: Duration = Duration::from_millis(500);

/// How soon a name that has no address yet is asked again, at most.
const RETRY_UNRESOLVED: Duration = Duration::from_secs(5);

/// One server name of a pool and what it last resolved to. Carried across reloads while the
/// pool keeps the name, with its counters and its last good addresses.
#[derive(Debug)]
pub struct NameState {
    /// The name, lower-case.
    pub host: String,
    /// Lookups that gave at least one address.
    pub ok: AtomicU64,
    /// Lookups that failed or gave no address.
    pub failed: AtomicU64,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// The last good answer's addresses (empty until the name first resolves).
    addrs: Vec<IpAddr>,
    ttl: Option<Duration>,
    /// Why the last lookup failed, while it fails.
    error: Option<String>,
    resolved_at: Option<SystemTime>,
    failing_since: Option<SystemTime>,
}

/// A name's state for `/status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameReport {
    /// The addresses in use.
    pub addrs: Vec<IpAddr>,
    /// Why the last lookup failed, while it fails.
    pub error: Option<String>,
    /// When it last resolved.
    pub resolved_at: Option<SystemTime>,
    /// Since when it fails.
    pub failing_since: Option<SystemTime>,
}

impl NameState {
    /// A name not looked up yet.
    pub fn new(host: &str) -> NameState {
        NameState {
            host: host.to_owned(),
            ok: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            state: Mutex::new(State::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The addresses in use: the last good answer's.
    pub fn addresses(&self) -> Vec<IpAddr> {
        self.lock().addrs.clone()
    }

    /// A snapshot for `/status`.
    pub fn report(&self) -> NameReport {
        let s = self.lock();
        NameReport {
            addrs: s.addrs.clone(),
            error: s.error.clone(),
            resolved_at: s.resolved_at,
            failing_since: s.failing_since,
        }
    }

    /// `NAME does not resolve (why)` while the name has no address at all.
    pub fn unresolved(&self) -> Option<String> {
        let s = self.lock();
        if !s.addrs.is_empty() {
            return None;
        }
        let why = s.error.as_deref().unwrap_or("not looked up yet");
        Some(format!("{} does not resolve ({why})", self.host))
    }

    /// How long until the name should be asked again: half of `resolve_seconds` (or of a
    /// shorter TTL), so that a change, the lookup that sees it and the first probe of a new
    /// address all fit within `resolve_seconds` of the change, also on a loaded machine.
    fn next_lookup(&self, every: Duration) -> Duration {
        let s = self.lock();
        let wait = match (s.addrs.is_empty(), s.ttl) {
            (true, _) => every.min(RETRY_UNRESOLVED),
            (false, Some(ttl)) if s.error.is_none() => every.min(ttl),
            _ => every,
        };
        (wait / 2).max(MIN_INTERVAL)
    }

    /// Records a lookup of the name for pool `pool`: a good answer replaces the addresses, a
    /// failed or empty one keeps the last good ones. Logs once per change of state.
    pub fn record(&self, pool: &str, answer: Result<Answer, DnsError>) {
        let mut s = self.lock();
        let host = &self.host;
        match answer {
            Ok(mut answer) => {
                self.ok.fetch_add(1, Ordering::Relaxed);
                answer.addrs.sort_unstable();
                answer.addrs.dedup();
                let list = join(&answer.addrs);
                if s.error.take().is_some() {
                    s.failing_since = None;
                    info!("pool {pool}: {host} resolves again, to {list}");
                } else if s.addrs != answer.addrs {
                    if s.addrs.is_empty() {
                        info!("pool {pool}: {host} resolves to {list}");
                    } else {
                        info!(
                            "pool {pool}: {host} now resolves to {list} (was {})",
                            join(&s.addrs)
                        );
                    }
                }
                s.addrs = answer.addrs;
                s.ttl = answer.ttl;
                s.resolved_at = Some(SystemTime::now());
            }
            Err(e) => {
                self.failed.fetch_add(1, Ordering::Relaxed);
                if s.error.is_none() {
                    s.failing_since = Some(SystemTime::now());
                    if s.addrs.is_empty() {
                        warn!(
                            "pool {pool}: {host} does not resolve ({e}): the pool has no server \
                             for it, and answers 502 while it has no other; asked again every few \
                             seconds"
                        );
                    } else {
                        warn!(
                            "pool {pool}: {host} does not resolve ({e}): keeping its last \
                             address(es) {}",
                            join(&s.addrs)
                        );
                    }
                }
                s.error = Some(e.to_string());
            }
        }
    }
}

fn join(addrs: &[IpAddr]) -> String {
    let all: Vec<String> = addrs.iter().map(IpAddr::to_string).collect();
    all.join(", ")
}

/// The background service that re-resolves the names of every pool of the generation serving
/// now; a reload stops the tasks of the old generation and starts those of the new one (with
/// resolvers built anew from its `server.resolvers`, and `/etc/hosts` read again).
pub struct Resolver {
    gw: Arc<Gateway>,
}

impl Resolver {
    /// A resolver service over the gateway's pools.
    pub fn new(gw: Arc<Gateway>) -> Resolver {
        Resolver { gw }
    }
}

#[async_trait]
impl BackgroundService for Resolver {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut generations = self.gw.subscribe();
        loop {
            let gen = self.gw.current();
            let mut tasks = Vec::new();
            if gen.pools.iter().any(|p| !p.names.is_empty()) {
                let dns = Arc::new(Dns::new(&gen.server.resolvers));
                for p in (0..gen.pools.len()).filter(|&p| !gen.pools[p].names.is_empty()) {
                    let (gen, dns, gw) = (gen.clone(), dns.clone(), self.gw.clone());
                    tasks.push(tokio::spawn(async move {
                        refresh_loop(gen, p, &dns, &gw).await
                    }));
                }
            }
            let stop = tokio::select! {
                _ = shutdown.changed() => true,
                changed = generations.changed() => changed.is_err(),
            };
            for t in tasks {
                t.abort();
            }
            if stop {
                return;
            }
        }
    }
}

async fn refresh_loop(gen: Arc<Generation>, p: usize, dns: &Dns, gw: &Gateway) {
    let Some(pool) = gen.pools.get(p) else { return };
    let every = pool.resolution.every;
    // For the first probe of addresses that join; fresh connections, never pooled ones.
    let connector = Connector::new(None);
    // A steady cadence from the start of each round: a change is seen at most one period
    // after it happened, however long the lookups and first probes took.
    let mut round = tokio::time::Instant::now();
    loop {
        let wait = pool.names.iter().map(|n| n.next_lookup(every)).min();
        tokio::time::sleep_until(round + wait.unwrap_or(every)).await;
        round = tokio::time::Instant::now();
        let lookups = pool.names.iter().map(|n| async move {
            // The resolver gives up by itself; this bounds a lookup even if it did not.
            let limit = every.max(Duration::from_secs(10));
            let answer = tokio::time::timeout(limit, dns.lookup(&n.host))
                .await
                .unwrap_or(Err(DnsError::Timeout(limit.as_secs())));
            n.record(&pool.name, answer);
        });
        futures::future::join_all(lookups).await;
        let Some((set, change)) = pool.next_set() else {
            continue;
        };
        // Probed before they take requests, while the servers they replace still serve: a
        // whole answer that changes at once never leaves the pool without a server.
        let first = change
            .added
            .iter()
            .map(|s| super::probe_and_record(pool, s, &connector));
        futures::future::join_all(first).await;
        pool.install(set);
        log_change(pool, &change);
        gw.servers_changed();
        tokio::spawn(close_idle(gen.clone(), p, change.removed));
    }
}

fn log_change(pool: &Pool, change: &Change) {
    fn labels(list: &[Arc<super::Server>]) -> Vec<&str> {
        list.iter().map(|s| s.label.as_str()).collect()
    }
    let probed = if pool.probe.is_some() && !change.added.is_empty() {
        " (new ones join once their first probe passes)"
    } else {
        ""
    };
    info!(
        "pool {}: servers now {} (joined: {:?}, left: {:?}){probed}",
        pool.name,
        pool.servers().len(),
        labels(&change.added),
        labels(&change.removed),
    );
}

/// How often the idle connections of servers that left are looked for while requests still
/// run on them.
const CLOSE_POLL: Duration = Duration::from_millis(200);

/// Closes the idle pooled connections of servers that left pool `p`, now and as the requests
/// still running on them give their connections back, until none runs (or the address is the
/// pool's again).
async fn close_idle(gen: Arc<Generation>, p: usize, mut left: Vec<Arc<super::Server>>) {
    let Some(pool) = gen.pools.get(p) else { return };
    let mut closed = 0;
    while !left.is_empty() {
        let now = pool.servers();
        left.retain(|s| {
            !now.iter()
                .any(|n| n.peer.reuse_hash() == s.peer.reuse_hash())
        });
        // Read before closing: a request gives its connection back before it stops counting,
        // so a server idle now has nothing left to give back after this round.
        let idle: Vec<bool> = left
            .iter()
            .map(|s| s.in_flight.load(Ordering::Relaxed) == 0)
            .collect();
        for s in &left {
            closed += pingora::connectors::close_idle_connections(s.peer.reuse_hash());
        }
        let mut idle = idle.into_iter();
        left.retain(|_| !idle.next().unwrap_or(true));
        if !left.is_empty() {
            tokio::time::sleep(CLOSE_POLL).await;
        }
    }
    if closed > 0 {
        info!(
            "pool {}: closed {closed} idle connection(s) to servers that left",
            pool.name
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(addrs: &[&str], ttl: u64) -> Result<Answer, DnsError> {
        Ok(Answer {
            addrs: addrs.iter().map(|a| a.parse().unwrap()).collect(),
            ttl: Some(Duration::from_secs(ttl)),
        })
    }

    #[test]
    fn a_failed_or_empty_answer_keeps_the_last_good_addresses() {
        let n = NameState::new("api.internal");
        assert_eq!(
            n.unresolved().as_deref(),
            Some("api.internal does not resolve (not looked up yet)")
        );
        n.record("p", answer(&["10.0.0.1", "10.0.0.2"], 30));
        n.record("p", Err(DnsError::Timeout(2)));
        n.record("p", Err(DnsError::Empty));
        let r = n.report();
        assert_eq!(r.addrs.len(), 2);
        assert_eq!(
            r.error.as_deref(),
            Some("the answer holds no A or AAAA record")
        );
        assert!(r.failing_since.is_some());
        assert_eq!(n.unresolved(), None);
        assert_eq!(
            (
                n.ok.load(Ordering::Relaxed),
                n.failed.load(Ordering::Relaxed)
            ),
            (1, 2)
        );
        n.record("p", answer(&["10.0.0.3"], 30));
        let r = n.report();
        assert_eq!((r.addrs.len(), r.error, r.failing_since), (1, None, None));
    }

    #[test]
    fn the_next_lookup_is_half_the_sooner_of_resolve_seconds_and_the_ttl() {
        let every = Duration::from_secs(30);
        let n = NameState::new("api.internal");
        assert_eq!(
            n.next_lookup(every),
            RETRY_UNRESOLVED / 2,
            "nothing resolved yet"
        );
        n.record("p", answer(&["10.0.0.1"], 300));
        assert_eq!(n.next_lookup(every), Duration::from_secs(15));
        n.record("p", answer(&["10.0.0.1"], 10));
        assert_eq!(n.next_lookup(every), Duration::from_secs(5));
        n.record("p", answer(&["10.0.0.1"], 0));
        assert_eq!(n.next_lookup(every), MIN_INTERVAL);
        n.record("p", Err(DnsError::Timeout(2)));
        assert_eq!(
            n.next_lookup(every),
            Duration::from_secs(15),
            "a failing name with addresses"
        );
        assert_eq!(n.next_lookup(Duration::from_secs(1)), MIN_INTERVAL);
    }
}
