//! The live state of a running gateway: one [`Generation`] per loaded configuration, behind one
//! atomic pointer. A request takes the current generation once, when it starts, and keeps it to
//! its end; a reload builds the next generation beside it and swaps the pointer. The request
//! path never takes a lock to read the configuration.

use crate::access_log::{AccessLog, AccessLogError};
use crate::config::{AccessLogConfig, Config, Listener, ServerSettings};
use crate::listener::BindIndex;
use crate::metrics::{ConfigMetrics, Metrics};
use crate::pool::Pool;
use crate::routing::RouteTable;
use crate::upstream;
use arc_swap::ArcSwap;
use pingora::protocols::tls::HandshakeCompleteHook;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

/// Everything a request needs, built once from one validated configuration.
pub struct Generation {
    /// 1 for the configuration the process started with, one more per applied reload.
    pub number: u64,
    /// The file it was loaded from.
    pub file: PathBuf,
    /// Hex SHA-256 of that file.
    pub sha256: String,
    /// When it was loaded.
    pub loaded_at: SystemTime,
    /// The files it was built from, the configuration first, as they were when read (for
    /// `server.watch`).
    pub files: Vec<(PathBuf, crate::config::FileStamp)>,
    /// Process settings; those that need a new process are compared in [`Generation::needs_handover`].
    pub server: ServerSettings,
    /// Listeners in file order.
    pub listeners: Vec<Listener>,
    /// The listener of each bound address.
    pub binds: BindIndex,
    /// Routes.
    pub routes: RouteTable,
    /// Pools, with their servers' health.
    pub pools: Vec<Pool>,
    /// Counters, shared with earlier generations where the labels match.
    pub metrics: Metrics,
    /// The access log, shared with the previous generation when its settings are unchanged.
    pub access_log: Option<Arc<AccessLog>>,
    access_log_config: Option<AccessLogConfig>,
    /// The audit log file, when configured.
    pub audit_log: Option<PathBuf>,
    admin: Option<SocketAddr>,
    /// The bearer token admin requests must carry (`admin.token`), when set.
    pub admin_token: Option<crate::admin::AdminToken>,
}

impl std::fmt::Debug for Generation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Generation")
            .field("number", &self.number)
            .field("file", &self.file)
            .finish_non_exhaustive()
    }
}

/// What a socket is, as far as a reload in place is concerned.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Socket {
    addr: SocketAddr,
    tls: bool,
    proxy_protocol: bool,
}

/// Every socket of `listeners`, in a stable order.
fn sockets(listeners: &[Listener]) -> Vec<Socket> {
    let mut out: Vec<Socket> = listeners
        .iter()
        .flat_map(|l| {
            l.binds.iter().map(|addr| Socket {
                addr: *addr,
                tls: l.tls.is_some(),
                proxy_protocol: l.proxy_protocol,
            })
        })
        .collect();
    out.sort();
    out
}

impl Generation {
    /// Why `next` cannot replace this generation inside the running process, if it cannot:
    /// its listening sockets or process settings differ. `None` when a reload in place applies
    /// all of it.
    pub fn needs_handover(&self, next: &Config) -> Option<String> {
        if sockets(&next.listeners) != sockets(&self.listeners) {
            return Some("the listening sockets (bind, tls or proxy_protocol)".into());
        }
        if next.admin != self.admin {
            return Some("admin.bind".into());
        }
        let (a, b) = (&self.server, &next.server);
        let changed = [
            ("server.threads", a.threads != b.threads),
            ("server.pid_file", a.pid_file != b.pid_file),
            ("server.upgrade_sock", a.upgrade_sock != b.upgrade_sock),
            ("server.control_sock", a.control_sock != b.control_sock),
            ("server.daemon", a.daemon != b.daemon),
            ("server.error_log", a.error_log != b.error_log),
            ("server.user", a.user != b.user),
            ("server.group", a.group != b.group),
        ];
        let keys: Vec<&str> = changed
            .iter()
            .filter(|(_, c)| *c)
            .map(|(k, _)| *k)
            .collect();
        (!keys.is_empty()).then(|| keys.join(", "))
    }
}

/// Counts of reloads in place.
#[derive(Debug, Default)]
struct Reloads {
    ok: AtomicU64,
    failed: AtomicU64,
}

/// The gateway: the current generation and what outlives generations.
pub struct Gateway {
    current: ArcSwap<Generation>,
    reloads: Reloads,
    hook: HandshakeCompleteHook,
    /// The number of the generation installed last, for tasks that follow reloads.
    installed: tokio::sync::watch::Sender<u64>,
    /// Bumped when a pool's servers change while running (its names resolved anew).
    members: tokio::sync::watch::Sender<u64>,
}

/// A generation built and ready to be installed.
pub struct Prepared {
    next: Generation,
    /// Servers that took over the health and pooled connections of the previous generation.
    pub kept_servers: usize,
    /// All servers of the new generation.
    pub servers: usize,
}

impl Gateway {
    /// The gateway serving `config` as generation 1.
    pub fn new(config: &Config) -> Result<Gateway, AccessLogError> {
        let hook = upstream::handshake_hook();
        let first = build(config, 1, None, &hook)?;
        crate::audit::start(
            config.audit_log.as_deref(),
            &config.sha256,
            &first.next.file,
            &crate::audit::trust::of(&first.next.pools),
        );
        Ok(Gateway {
            current: ArcSwap::from_pointee(first.next),
            reloads: Reloads::default(),
            hook,
            installed: tokio::sync::watch::Sender::new(1),
            members: tokio::sync::watch::Sender::new(0),
        })
    }

    /// The generation serving now; holding it keeps it alive.
    pub fn current(&self) -> Arc<Generation> {
        self.current.load_full()
    }

    /// Builds the generation that would serve `config`, carrying over what may be carried.
    /// Nothing changes until [`Gateway::install`].
    pub fn prepare(&self, config: &Config) -> Result<Prepared, AccessLogError> {
        let now = self.current.load();
        build(config, now.number + 1, Some(&now), &self.hook)
    }

    /// Makes `prepared` the generation for every request that starts from now on.
    pub fn install(&self, prepared: Prepared) -> Arc<Generation> {
        let next = Arc::new(prepared.next);
        let old = self.current.swap(next.clone());
        crate::audit::reload(
            next.audit_log.as_deref(),
            (&old.sha256, &crate::audit::trust::of(&old.pools)),
            (&next.sha256, &crate::audit::trust::of(&next.pools)),
        );
        self.reloads.ok.fetch_add(1, Ordering::Relaxed);
        self.installed.send_replace(next.number);
        next
    }

    /// Tells when a new generation is installed.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.installed.subscribe()
    }

    /// Tells when a pool of the current generation changes its servers.
    pub fn subscribe_servers(&self) -> tokio::sync::watch::Receiver<u64> {
        self.members.subscribe()
    }

    /// Announces that a pool of the current generation changed its servers.
    pub fn servers_changed(&self) {
        self.members.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Counts a reload that changed nothing.
    pub fn refused(&self) {
        self.reloads.failed.fetch_add(1, Ordering::Relaxed);
    }

    /// The configuration's own metrics.
    pub fn config_metrics(&self) -> ConfigMetrics {
        ConfigMetrics {
            generation: self.current.load().number,
            reloads_ok: self.reloads.ok.load(Ordering::Relaxed),
            reloads_failed: self.reloads.failed.load(Ordering::Relaxed),
            access_log_dropped: self
                .current
                .load()
                .access_log
                .as_ref()
                .map_or(0, |log| log.dropped()),
        }
    }

    /// Writes out queued access log lines (at shutdown).
    pub fn flush_access_log(&self) {
        if let Some(log) = &self.current.load().access_log {
            log.flush(std::time::Duration::from_secs(5));
        }
    }
}

fn build(
    config: &Config,
    number: u64,
    previous: Option<&Generation>,
    hook: &HandshakeCompleteHook,
) -> Result<Prepared, AccessLogError> {
    let access_log = match previous {
        Some(p) if p.access_log_config == config.access_log => p.access_log.clone(),
        _ => config
            .access_log
            .as_ref()
            .map(AccessLog::open)
            .transpose()?
            .map(Arc::new),
    };
    let mut kept_servers = 0;
    let pools: Vec<Pool> = config
        .pools
        .iter()
        .map(|cfg| {
            let old = previous.and_then(|p| p.pools.iter().find(|o| o.name == cfg.name));
            let (pool, kept) = Pool::carried(cfg, hook, old, &config.answers);
            kept_servers += kept;
            pool
        })
        .collect();
    let servers = pools.iter().map(|p| p.servers().len()).sum();
    let next = Generation {
        number,
        file: crate::config::absolute(&config.file),
        sha256: config.sha256.clone(),
        loaded_at: SystemTime::now(),
        files: config.files.clone(),
        server: config.server.clone(),
        listeners: config.listeners.clone(),
        binds: BindIndex::new(&config.listeners),
        routes: config.routes.clone(),
        pools,
        metrics: Metrics::carried(config, previous.map(|p| &p.metrics)),
        access_log,
        access_log_config: config.access_log.clone(),
        audit_log: config.audit_log.clone(),
        admin: config.admin,
        admin_token: config.admin_token.clone(),
    };
    Ok(Prepared {
        next,
        kept_servers,
        servers,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{load_with, Resolve};
    use crate::dns::{Answer, DnsError};

    const PIN_A: &str = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
    const PIN_B: &str = "BBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBA=";

    /// A configuration with one plain listener on `port`, a pinned pool `api` of two servers
    /// trusting `pin`, and a route `all`.
    fn config(dir: &tempfile::TempDir, port: u16, pin: &str, route: &str) -> Config {
        let yaml = format!(
            "listeners:\n  - name: web\n    bind: 127.0.0.1:{port}\npools:\n  - name: api\n    probe: false\n    servers: [127.0.0.1:9001, 127.0.0.1:9002]\n    tls:\n      pins: [{{sha256: \"{pin}\"}}]\nroutes:\n  - name: {route}\n    pool: api\n"
        );
        let file = dir.path().join("pinion.yaml");
        std::fs::write(&file, yaml).unwrap();
        load_with(&file, Resolve::Offline).unwrap()
    }

    /// A pool `api` of the name `api.test` on port 9001, with `answer` as its one lookup.
    fn named(dir: &tempfile::TempDir, answer: Result<&[&str], DnsError>) -> Config {
        let yaml = "listeners:\n  - name: web\n    bind: 127.0.0.1:8080\npools:\n  - name: api\n    probe: false\n    servers: [\"api.test:9001\"]\nroutes:\n  - name: all\n    pool: api\n";
        let file = dir.path().join("pinion.yaml");
        std::fs::write(&file, yaml).unwrap();
        let mut config = load_with(&file, Resolve::Offline).unwrap();
        let answer = answer.map(|addrs| Answer {
            addrs: addrs.iter().map(|a| a.parse().unwrap()).collect(),
            ttl: None,
        });
        config.answers.insert("api.test".into(), answer);
        config
    }

    #[test]
    fn a_name_is_a_server_per_address_and_a_reload_during_an_outage_keeps_them() {
        let dir = tempfile::tempdir().unwrap();
        let gw = Gateway::new(&named(&dir, Ok(&["127.0.0.3", "127.0.0.2"]))).unwrap();
        let first = gw.current();
        let labels: Vec<String> = first.pools[0]
            .servers()
            .iter()
            .map(|s| s.label.clone())
            .collect();
        assert_eq!(
            labels,
            ["api.test:9001 (127.0.0.2)", "api.test:9001 (127.0.0.3)"]
        );
        assert_eq!(first.pools[0].servers()[0].host_name, "api.test");
        first.pools[0].servers()[1]
            .health
            .record(Err("refused".into()), 1, 1);

        let outage = gw.prepare(&named(&dir, Err(DnsError::Timeout(5)))).unwrap();
        assert_eq!((outage.kept_servers, outage.servers), (2, 2));
        let second = gw.install(outage);
        assert!(!second.pools[0].servers()[1].health.is_healthy());
        assert!(Arc::ptr_eq(
            &first.pools[0].names[0],
            &second.pools[0].names[0]
        ));
        assert!(second.pools[0].next_set().is_none(), "nothing changed");

        second.pools[0].names[0].record(
            "api",
            Ok(Answer {
                addrs: vec!["127.0.0.3".parse().unwrap(), "127.0.0.4".parse().unwrap()],
                ttl: None,
            }),
        );
        let (set, change) = second.pools[0].next_set().unwrap();
        assert_eq!(change.added.len(), 1);
        assert_eq!(change.removed[0].label, "api.test:9001 (127.0.0.2)");
        assert!(
            Arc::ptr_eq(&set[0], &second.pools[0].servers()[1]),
            "the address that stays is the same server, health and all"
        );
        assert!(
            set[1].health.is_healthy(),
            "no probe: a new address serves at once"
        );
    }

    #[test]
    fn route_and_pin_changes_apply_in_place_but_new_sockets_need_a_new_process() {
        let dir = tempfile::tempdir().unwrap();
        let gw = Gateway::new(&config(&dir, 8080, PIN_A, "all")).unwrap();
        let now = gw.current();
        assert_eq!(
            now.needs_handover(&config(&dir, 8080, PIN_B, "other")),
            None
        );
        assert_eq!(
            now.needs_handover(&config(&dir, 8081, PIN_A, "all"))
                .as_deref(),
            Some("the listening sockets (bind, tls or proxy_protocol)")
        );
    }

    #[test]
    fn servers_keep_health_and_counters_only_while_their_trust_is_unchanged() {
        let dir = tempfile::tempdir().unwrap();
        let gw = Gateway::new(&config(&dir, 8080, PIN_A, "all")).unwrap();
        let first = gw.current();
        let server = first.pools[0].servers()[0].clone();
        server.health.record(Err("refused".into()), 1, 1);
        first.metrics.request(0, Some(0), 200);

        let same_trust = gw.prepare(&config(&dir, 8080, PIN_A, "all")).unwrap();
        assert_eq!((same_trust.kept_servers, same_trust.servers), (2, 2));
        let second = gw.install(same_trust);
        assert_eq!(second.number, 2);
        assert!(!second.pools[0].servers()[0].health.is_healthy());
        assert!(Arc::ptr_eq(
            &server.in_flight,
            &second.pools[0].servers()[0].in_flight
        ));
        let config_metrics = gw.config_metrics();
        let text = second.metrics.render(&second.pools, 0, &config_metrics);
        assert!(
            text.contains("route=\"all\",pool=\"api\",status_class=\"2xx\"} 1"),
            "{text}"
        );
        assert!(text.contains("pinion_config_generation 2"), "{text}");

        let other_pin = gw.prepare(&config(&dir, 8080, PIN_B, "all")).unwrap();
        assert_eq!(other_pin.kept_servers, 0);
        let third = gw.install(other_pin);
        assert!(third.pools[0].servers()[0].health.is_healthy());
        assert_ne!(
            first.pools[0].servers()[0].peer.group_key,
            third.pools[0].servers()[0].peer.group_key,
            "connections pooled under the old whitelist are never reused"
        );
    }
}
