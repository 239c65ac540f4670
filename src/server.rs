//! Assembles the Pingora server from a validated configuration and runs it until a signal.

pub mod control;
pub mod drain;
pub mod privileges;
pub mod reload;
mod signals;
mod watch;

use crate::access_log::AccessLogError;
use crate::admin::{Admin, Drain};
use crate::config::{Config, ServerSettings};
use crate::gateway::Gateway;
use crate::limits;
use crate::listener::caps::{BeforeTls, Caps};
use crate::listener::front::Front;
use crate::listener::proxy_protocol::ProxyProtocolGate;
use crate::listener::{self, BindIndex, ListenerError};
use crate::pool::{Prober, Resolver};
use crate::proxy::Proxy;
use pingora::apps::http_app::HttpServer;
use pingora::apps::HttpServerOptions;
use pingora::proxy::HttpProxy;
use pingora::server::configuration::{Opt, ServerConf};
use pingora::server::{RunArgs, Server};
use pingora::services::background::background_service;
use pingora::services::listening::Service;
use reload::Reloader;
use std::sync::Arc;

/// How the process was asked to run.
#[derive(Debug, Clone, Copy, Default)]
pub struct RunMode {
    /// Take over the listening sockets of a running instance (`-u`).
    pub upgrade: bool,
    /// Detach into the background (`-d`, or `server.daemon`).
    pub daemon: bool,
}

/// Errors starting the gateway.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A listener could not be set up.
    #[error(transparent)]
    Listener(#[from] ListenerError),
    /// The access log could not be opened.
    #[error(transparent)]
    AccessLog(#[from] AccessLogError),
    /// An address cannot be listened on (taken, or not this machine's).
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    /// `server.user` / `server.group` cannot be resolved.
    #[error(transparent)]
    Privileges(#[from] privileges::PrivilegeError),
    /// The PID file could not be written.
    #[error("cannot write the PID file {path}: {source}")]
    PidFile {
        path: String,
        source: std::io::Error,
    },
}

/// Pingora's own settings, from ours. Pingora never reads the YAML file itself.
///
/// pinion decides when draining ends and exits as soon as its connections are done
/// ([`drain`]); Pingora's own grace period is only the longest that could take.
pub fn pingora_conf(s: &ServerSettings, daemon: bool) -> ServerConf {
    let longest = s.grace_period
        + s.graceful_shutdown_timeout
        + drain::HANDOVER_OVERLAP
        + drain::LAST_ACCEPT_MARGIN;
    ServerConf {
        threads: s.threads,
        pid_file: s.pid_file.clone(),
        upgrade_sock: s.upgrade_sock.clone(),
        grace_period_seconds: Some(longest.as_secs()),
        graceful_shutdown_timeout_seconds: Some(1),
        daemon: daemon || s.daemon,
        error_log: s.error_log.clone(),
        // Not Pingora's: it switches when it forks, before any listener is bound, so a port
        // below 1024 could not be bound; and never in the foreground ([`privileges`]).
        user: None,
        group: None,
        // Timeouts of a second or more (every per-read backend timeout) on tokio's timer wheel
        // instead of Pingora's shared one, whose registration takes a lock, a clock read and a
        // B-tree lookup per read: about 3,900 fewer instructions per keep-alive request
        // (docs/benchmarks.md), and millisecond rather than 10 ms precision.
        fast_timeout_to_tokio_threshold_seconds: Some(0),
        ..ServerConf::default()
    }
}

/// Runs the gateway until it is stopped; returns after a graceful shutdown.
pub fn run(config: &Config, mode: RunMode) -> Result<(), StartError> {
    survive_hangup();
    raise_open_file_limit();
    let identity = privileges::Identity::resolve(
        config.server.user.as_deref(),
        config.server.group.as_deref(),
    )?;
    if !mode.upgrade {
        // The old process holds them during an upgrade.
        check_binds(config)?;
    }
    let conf = pingora_conf(&config.server, mode.daemon);
    let daemon = conf.daemon;
    let opt = Opt {
        upgrade: mode.upgrade,
        daemon,
        ..Opt::default()
    };
    let mut server = Server::new_with_opt_and_conf(opt, conf);
    let gateway = Arc::new(Gateway::new(config)?);
    let drain = Arc::new(Drain::default());
    let connections = Arc::new(drain::Connections::default());
    let reloader = Arc::new(Reloader::new(gateway.clone(), &config.file));
    let prober = background_service("health probes", Prober::new(gateway.clone()));
    let pin_watch = background_service(
        "pin warnings",
        crate::pool::pins::PinWatch::new(gateway.clone()),
    );
    let resolver = background_service("server names", Resolver::new(gateway.clone()));
    let control = background_service(
        "control socket",
        control::Control::new(reloader.clone(), &config.server.control_sock, mode.upgrade),
    );
    let watcher = background_service("file watch", watch::Watcher::new(reloader.clone()));

    let mut proxy = HttpProxy::new(
        Proxy::new(gateway.clone(), drain.clone()),
        server.configuration.clone(),
    );
    proxy.handle_init_modules();
    let mut options = HttpServerOptions::default();
    options.h2_idle_timeout = Some(crate::proxy::CLIENT_IDLE_TIMEOUT);
    proxy.server_options = Some(options);
    let mut h2 = pingora::protocols::http::v2::server::default_h2_options();
    h2.max_header_list_size(limits::h2_header_list_size(
        config.listeners.iter().map(|l| &l.limits),
    ));
    proxy.h2_options = Some(h2);
    let gate = ProxyProtocolGate::new(BindIndex::of(&config.listeners, |l| l.proxy_protocol));
    let caps = Caps::new(gateway.clone());
    let front = Front::new(
        proxy,
        gate.clone(),
        drain::Closer::new(gateway.clone(), drain.clone(), connections.clone()),
        caps.clone(),
        gateway.clone(),
    );
    let mut service = Service::new("pinion".to_owned(), front);
    // Always: caps may come with a reload, and a connection over one should cost no handshake.
    service
        .endpoints()
        .set_pre_tls_callback(Arc::new(BeforeTls::new(gate, caps)));
    listener::add_all(&mut service, &config.listeners, &gateway)?;

    server.bootstrap();
    server.add_service(prober);
    server.add_service(pin_watch);
    server.add_service(resolver);
    server.add_service(control);
    server.add_service(watcher);
    server.add_service(service);
    if let Some(identity) = identity {
        let dropper = privileges::Dropper::new(identity, addresses(config));
        server.add_service(background_service("privileges", dropper));
    }
    if let Some(addr) = config.admin {
        let app = Admin::new(gateway.clone(), drain.clone());
        let mut admin = Service::new("admin".to_owned(), HttpServer::new_app(app));
        admin.add_tcp(&addr.to_string());
        server.add_service(admin);
    }
    if !daemon {
        // Pingora writes it only when daemonizing; `pinion reload` needs it either way.
        let pid = std::process::id().to_string();
        std::fs::write(&config.server.pid_file, pid).map_err(|source| StartError::PidFile {
            path: config.server.pid_file.clone(),
            source,
        })?;
    }
    let signals = signals::Signals::new(drain, connections, gateway.clone(), reloader);
    server.run(RunArgs {
        shutdown_signal: Box::new(signals),
    });
    gateway.flush_access_log();
    Ok(())
}

/// Every address the process listens on: listeners and admin.
fn addresses(config: &Config) -> Vec<std::net::SocketAddr> {
    config
        .listeners
        .iter()
        .flat_map(|l| l.binds.iter().copied())
        .chain(config.admin)
        .collect()
}

/// Binds each address once and lets it go, so that a taken one stops start-up here, with its
/// name and exit code 1, before anything forks or answers: Pingora binds later, inside a
/// service's task, where a failure only panics that task and the rest would run on without
/// the listener (and a daemon's parent would already have exited 0).
fn check_binds(config: &Config) -> Result<(), StartError> {
    for addr in addresses(config) {
        bind_only(addr).map_err(|source| StartError::Bind { addr, source })?;
    }
    Ok(())
}

/// Binds a socket to `addr` without listening, then closes it: fails as the real bind would
/// when the address is taken, but never accepts a connection (a client that connected to a
/// listening check socket would be reset when it closes).
fn bind_only(addr: std::net::SocketAddr) -> std::io::Result<()> {
    use nix::sys::socket::{bind, setsockopt, socket, sockopt, AddressFamily, SockFlag};
    use nix::sys::socket::{SockType, SockaddrStorage};
    use std::os::fd::AsRawFd;
    let family = if addr.is_ipv4() {
        AddressFamily::Inet
    } else {
        AddressFamily::Inet6
    };
    let fd = socket(family, SockType::Stream, SockFlag::SOCK_CLOEXEC, None)?;
    // As the listener itself does: a port whose old connections linger in TIME_WAIT is free.
    setsockopt(&fd, sockopt::ReuseAddr, &true)?;
    bind(fd.as_raw_fd(), &SockaddrStorage::from(addr))?;
    Ok(())
}

/// Takes SIGHUP's default action (terminate) away from the start: the signal watch that
/// reloads on it runs only once the server is up, and a SIGHUP sent as soon as the listeners
/// answer, or by a closing terminal, must not kill the gateway. Registering a handler once is
/// enough: it stays for the life of the process (and across a daemon's fork), and signals
/// nobody waits for are dropped.
fn survive_hangup() {
    use tokio::signal::unix::{signal, SignalKind};
    let registered = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())
        .and_then(|rt| {
            rt.block_on(async { signal(SignalKind::hangup()).map(drop) })
                .map_err(|e| e.to_string())
        });
    if let Err(e) = registered {
        log::warn!("cannot catch SIGHUP until the server runs: {e}");
    }
}

/// Raises the soft open-file limit to the hard limit, as HAProxy does: every client and backend
/// connection is a descriptor, and the usual soft default (1,024) would refuse connections long
/// before the machine runs out of anything.
fn raise_open_file_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (soft, hard) = match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok(limits) => limits,
        Err(e) => return log::warn!("cannot read the open file limit: {e}"),
    };
    // An unlimited hard limit still stops at the kernel's fs.nr_open (1,048,576 by default).
    let raised = [hard, 1 << 20]
        .into_iter()
        .filter(|&target| target > soft)
        .find(|&target| setrlimit(Resource::RLIMIT_NOFILE, target, hard).is_ok());
    match raised {
        Some(target) => log::info!("open file limit raised from {soft} to {target}"),
        None if soft < hard => log::warn!("cannot raise the open file limit above {soft}"),
        None => log::info!("open file limit {soft}"),
    }
}
