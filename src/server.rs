//! Assembles the Pingora server from a validated configuration and runs it.

use crate::config::{Config, ServerSettings};
use crate::listener::proxy_protocol::{Front, ProxyProtocolGate};
use crate::listener::BindIndex;
use crate::listener::{self, ListenerError};
use crate::pool::Prober;
use crate::proxy::{Gateway, Proxy};
use pingora::proxy::HttpProxy;
use pingora::server::configuration::{Opt, ServerConf};
use pingora::server::Server;
use pingora::services::background::background_service;
use pingora::services::listening::Service;
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
}

/// Pingora's own settings, from ours. Pingora never reads the YAML file itself.
pub fn pingora_conf(s: &ServerSettings, daemon: bool) -> ServerConf {
    ServerConf {
        threads: s.threads,
        pid_file: s.pid_file.clone(),
        upgrade_sock: s.upgrade_sock.clone(),
        grace_period_seconds: Some(s.grace_period.as_secs()),
        graceful_shutdown_timeout_seconds: Some(s.graceful_shutdown_timeout.as_secs()),
        daemon: daemon || s.daemon,
        error_log: s.error_log.clone(),
        user: s.user.clone(),
        group: s.group.clone(),
        ..ServerConf::default()
    }
}

/// Starts the gateway; returns only on a start-up error (Pingora exits the process itself).
pub fn run(config: &Config, mode: RunMode) -> Result<(), StartError> {
    let conf = pingora_conf(&config.server, mode.daemon);
    let opt = Opt {
        upgrade: mode.upgrade,
        daemon: conf.daemon,
        ..Opt::default()
    };
    let mut server = Server::new_with_opt_and_conf(opt, conf);
    let gateway = Arc::new(Gateway::new(config));
    let prober = background_service("health probes", Prober::new(gateway.pools()));
    let mut proxy = HttpProxy::new(Proxy::new(gateway), server.configuration.clone());
    proxy.handle_init_modules();
    let gate = ProxyProtocolGate::new(BindIndex::of(&config.listeners, |l| l.proxy_protocol));
    let expects_headers = !gate.is_empty();
    let mut service = Service::new("pinion".to_owned(), Front::new(proxy, gate.clone()));
    if expects_headers {
        service.endpoints().set_pre_tls_callback(Arc::new(gate));
    }
    listener::add_all(&mut service, &config.listeners)?;
    server.bootstrap();
    server.add_service(prober);
    server.add_service(service);
    server.run_forever()
}
