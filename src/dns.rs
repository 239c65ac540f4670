//! DNS lookups of backend names: every A and AAAA record of a name, through `/etc/hosts` and then
//! the name servers of `/etc/resolv.conf`, or the servers named in `server.resolvers`.
//!
//! Below both `config` (which looks names up once while loading, to report them and for
//! `resolve_on_start: required`) and `pool::resolve` (which re-resolves them while running).

use hickory_resolver::config::{
    LookupIpStrategy, NameServerConfig, ResolveHosts, ResolverConfig, ResolverOpts,
};
use hickory_resolver::name_server::TokioConnectionProvider;
use hickory_resolver::proto::op::Query;
use hickory_resolver::proto::rr::{Name, RData, RecordType};
use hickory_resolver::proto::xfer::Protocol;
use hickory_resolver::{Hosts, TokioResolver};
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

/// The longest a lookup made while loading the configuration may take: a DNS outage delays a
/// start or a reload by this much at most, never blocks it.
pub const LOAD_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a name gave no address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DnsError {
    /// There is no name server to ask: the system's configuration cannot be read.
    #[error("no name server to ask ({0}), and /etc/hosts does not name it")]
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
    /// `/etc/hosts` as read when the resolver was made.
    hosts: Hosts,
    /// Why there is no name server to ask (`/etc/resolv.conf` unreadable): names then resolve
    /// through `/etc/hosts` only.
    no_servers: Option<String>,
}

impl std::fmt::Debug for Dns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dns").finish_non_exhaustive()
    }
}

impl Dns {
    /// A resolver asking `servers` (UDP, and TCP for long answers), or the system's name
    /// servers when `servers` is empty. `/etc/hosts` is read first either way.
    pub fn new(servers: &[SocketAddr]) -> Dns {
        let mut no_servers = None;
        let (config, mut opts) = if servers.is_empty() {
            hickory_resolver::system_conf::read_system_conf().unwrap_or_else(|e| {
                no_servers = Some(format!("/etc/resolv.conf: {e}"));
                (ResolverConfig::new(), ResolverOpts::default())
            })
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
        // Read here instead, so a name found there is never asked of a name server (as the C
        // library's `files` before `dns`): `localhost` has no AAAA query leave the machine.
        opts.use_hosts_file = ResolveHosts::Never;
        // Re-resolution decides how often to ask (`resolve_seconds`, or a shorter TTL); a cache
        // would answer from memory until the TTL ran out, however long that is.
        opts.cache_size = 0;
        let resolver =
            TokioResolver::builder_with_config(config, TokioConnectionProvider::default())
                .with_options(opts)
                .build();
        // A missing or unreadable /etc/hosts is an empty one, as for the C library.
        let hosts = Hosts::from_system().unwrap_or_default();
        Dns {
            resolver,
            hosts,
            no_servers,
        }
    }

    /// The addresses `/etc/hosts` gives `fqdn`, if it names it.
    fn in_hosts(&self, fqdn: &str) -> Option<Answer> {
        let name = Name::from_ascii(fqdn).ok()?;
        let mut addrs: Vec<IpAddr> = [RecordType::A, RecordType::AAAA]
            .into_iter()
            .filter_map(|t| {
                self.hosts
                    .lookup_static_host(&Query::query(name.clone(), t))
            })
            .flat_map(|lookup| {
                lookup
                    .record_iter()
                    .filter_map(|r| match r.data() {
                        RData::A(a) => Some(IpAddr::V4(a.0)),
                        RData::AAAA(a) => Some(IpAddr::V6(a.0)),
                        _ => None,
                    })
                    .collect::<Vec<_>>()
            })
            .collect();
        addrs.sort();
        addrs.dedup();
        (!addrs.is_empty()).then_some(Answer { addrs, ttl: None })
    }

    /// Every A and AAAA address of `host`.
    pub async fn lookup(&self, host: &str) -> Result<Answer, DnsError> {
        self.resolver.clear_cache();
        // A trailing dot: the name is complete, no search domain is tried.
        let fqdn = format!("{}.", host.trim_end_matches('.'));
        if let Some(answer) = self.in_hosts(&fqdn) {
            return Ok(answer);
        }
        if let Some(why) = &self.no_servers {
            return Err(DnsError::Config(why.clone()));
        }
        let lookup = self.resolver.lookup_ip(fqdn.as_str()).await.map_err(|e| {
            if e.is_nx_domain() {
                DnsError::Lookup("no such name (NXDOMAIN)".into())
            } else if e.is_no_records_found() {
                DnsError::Empty
            } else {
                DnsError::Lookup(e.to_string())
            }
        })?;
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
                .map_err(|e| DnsError::Lookup(format!("cannot start the lookups: {e}")))?;
            rt.block_on(async {
                let dns = Dns::new(servers);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_in_the_hosts_file_is_answered_from_it_without_asking_a_server() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            // Nothing answers on port 9: a query to the server would time out, not answer.
            let mut dns = Dns::new(&["127.0.0.1:9".parse().unwrap()]);
            let mut hosts = Hosts::default();
            hosts
                .read_hosts_conf("127.0.0.7 api.internal\n::7 api.internal\n".as_bytes())
                .unwrap();
            dns.hosts = hosts;
            let started = Instant::now();
            let answer = dns.lookup("api.internal").await.unwrap();
            let want: Vec<IpAddr> = vec!["127.0.0.7".parse().unwrap(), "::7".parse().unwrap()];
            assert_eq!(answer.addrs, want);
            assert!(started.elapsed() < Duration::from_secs(1));
        });
    }

    #[test]
    fn names_are_looked_up_together_and_each_failure_is_its_own() {
        // A server that does not answer: every name fails, by timeout, within the load limit.
        let started = Instant::now();
        let names = vec!["a.pinion.test".to_owned(), "b.pinion.test".to_owned()];
        let answers = lookup_all_blocking(&["127.0.0.1:9".parse().unwrap()], &names);
        assert_eq!(answers.len(), 2);
        assert!(answers.values().all(Result::is_err), "{answers:?}");
        assert!(started.elapsed() < LOAD_TIMEOUT + Duration::from_secs(2));
    }
}
