//! DNS lookups of backend names: every A and AAAA record of a name, through `/etc/hosts` and then
//! the name servers of `/etc/resolv.conf`, or the servers named in `server.resolvers`.
//!
//! Below both `config` (which looks names up once while loading, to report them and for
//! `resolve_on_start: required`) and `pool::resolve` (which re-resolves them while running).

use hickory_resolver::config::{
    LookupIpStrategy, NameServerConfig, ResolveHosts, ResolverConfig, ResolverOpts,
};
use hickory_resolver::name_server::TokioConnectionProvider;
use hickory_resolver::proto::xfer::Protocol;
use hickory_resolver::TokioResolver;
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

/// The longest a lookup made while loading the configuration may take: a DNS outage delays a
/// start or a reload by this much at most, never blocks it.
pub const LOAD_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a name gave no address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DnsError {
    /// The system's resolver configuration cannot be read.
    #[error("cannot read the resolver configuration: {0}")]
    Config(String),
    /// The resolver failed (no answer, refused, a name that does not exist, ...).
    #[error("{0}")]
    Lookup(String),
    /// The answer held no A or AAAA record.
    #[error("the answer holds no A or AAAA record")]
    Empty,
    /// No answer in time.
    #[error("no answer within {0} s")]
    Timeout(u64),
}

/// The addresses of a name, and how long the answer may be kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// Every address, sorted, without duplicates; never empty.
    pub addrs: Vec<IpAddr>,
    /// The shortest TTL of the records, when the resolver reports one.
    pub ttl: Option<Duration>,
}

/// What one lookup of each name gave, by lower-case name.
pub type Answers = BTreeMap<String, Result<Answer, DnsError>>;

/// A resolver for backend names.
pub struct Dns {
    resolver: TokioResolver,
}

impl std::fmt::Debug for Dns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dns").finish_non_exhaustive()
    }
}

impl Dns {
    /// A resolver asking `servers` (UDP, and TCP for long answers), or the system's name
    /// servers when `servers` is empty. `/etc/hosts` is read first either way.
    pub fn new(servers: &[SocketAddr]) -> Result<Dns, DnsError> {
        let (config, mut opts) = if servers.is_empty() {
            hickory_resolver::system_conf::read_system_conf()
                .map_err(|e| DnsError::Config(e.to_string()))?
        } else {
            let mut config = ResolverConfig::new();
            for s in servers {
                config.add_name_server(NameServerConfig::new(*s, Protocol::Udp));
                config.add_name_server(NameServerConfig::new(*s, Protocol::Tcp));
            }
            // Servers named here are expected to be near: give up on one sooner than the
            // resolv.conf default (5 s), as HAProxy's resolvers do, so an outage is seen soon.
            let mut opts = ResolverOpts::default();
            opts.timeout = Duration::from_secs(2);
            opts.attempts = 2;
            (config, opts)
        };
        opts.ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
        opts.use_hosts_file = ResolveHosts::Always;
        // Re-resolution decides how often to ask (`resolve_seconds`, or a shorter TTL); a cache
        // would answer from memory until the TTL ran out, however long that is.
        opts.cache_size = 0;
        let resolver =
            TokioResolver::builder_with_config(config, TokioConnectionProvider::default())
                .with_options(opts)
                .build();
        Ok(Dns { resolver })
    }

    /// Every A and AAAA address of `host`.
    pub async fn lookup(&self, host: &str) -> Result<Answer, DnsError> {
        self.resolver.clear_cache();
        // A trailing dot: the name is complete, no search domain is tried.
        let fqdn = format!("{}.", host.trim_end_matches('.'));
        let lookup = self
            .resolver
            .lookup_ip(fqdn.as_str())
            .await
            .map_err(|e| DnsError::Lookup(e.to_string()))?;
        let mut addrs: Vec<IpAddr> = lookup.iter().collect();
        addrs.sort();
        addrs.dedup();
        if addrs.is_empty() {
            return Err(DnsError::Empty);
        }
        let ttl = lookup
            .valid_until()
            .checked_duration_since(Instant::now())
            .unwrap_or_default();
        Ok(Answer {
            addrs,
            ttl: Some(ttl),
        })
    }
}

/// Looks every name up once, all at the same time, within [`LOAD_TIMEOUT`]: for code that does
/// not run on an asynchronous runtime (loading the configuration). Runs on a thread of its own,
/// so it may be called from anywhere, a runtime's blocking pool included.
pub fn lookup_all_blocking(servers: &[SocketAddr], names: &[String]) -> Answers {
    if names.is_empty() {
        return Answers::new();
    }
    let failed = |e: DnsError| names.iter().map(|n| (n.clone(), Err(e.clone()))).collect();
    std::thread::scope(|scope| {
        let worker = scope.spawn(|| {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| DnsError::Config(e.to_string()))?;
            rt.block_on(async {
                let dns = Dns::new(servers)?;
                let all = names.iter().map(|name| async {
                    let answer = tokio::time::timeout(LOAD_TIMEOUT, dns.lookup(name)).await;
                    let answer =
                        answer.unwrap_or_else(|_| Err(DnsError::Timeout(LOAD_TIMEOUT.as_secs())));
                    (name.clone(), answer)
                });
                Ok(futures::future::join_all(all)
                    .await
                    .into_iter()
                    .collect::<Answers>())
            })
        });
        match worker.join() {
            Ok(Ok(answers)) => answers,
            Ok(Err(e)) => failed(e),
            Err(_) => failed(DnsError::Lookup("the lookup thread failed".into())),
        }
    })
}
