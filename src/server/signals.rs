//! Signals, with a drain phase for load balancers in front.
//!
//! SIGHUP: reload the configuration in place (nginx's habit, systemd's `ExecReload`); the
//! process never dies of it. SIGTERM: `/healthz` answers 503 at once while everything keeps
//! serving for `grace_period`, so the balancer takes this instance out; then listeners close
//! and in-flight requests get `graceful_shutdown_timeout`. SIGQUIT: the graceful upgrade
//! hand-over, at once (the new process shares the sockets), with `/healthz` 503 here and the
//! drain of [`super::drain`]. SIGINT: stop now.

use super::drain::{self, Connections};
use super::reload::Reloader;
use crate::admin::Drain;
use crate::gateway::Gateway;
use async_trait::async_trait;
use log::{error, info};
use pingora::server::{ShutdownSignal, ShutdownSignalWatch};
use std::sync::Arc;
use tokio::signal::unix::{signal, SignalKind};

/// The shutdown signal watch handed to Pingora.
pub struct Signals {
    drain: Arc<Drain>,
    connections: Arc<Connections>,
    gw: Arc<Gateway>,
    reloader: Arc<Reloader>,
}

impl Signals {
    /// Watches signals, marking `drain` when a graceful stop begins.
    pub fn new(
        drain: Arc<Drain>,
        connections: Arc<Connections>,
        gw: Arc<Gateway>,
        reloader: Arc<Reloader>,
    ) -> Signals {
        Signals {
            drain,
            connections,
            gw,
            reloader,
        }
    }

    fn begin_drain(&self) {
        self.drain.start();
        drain::exit_when_done(self.gw.clone(), self.connections.clone());
    }
}

#[async_trait]
impl ShutdownSignalWatch for Signals {
    async fn recv(&self) -> ShutdownSignal {
        let (Ok(mut term), Ok(mut quit), Ok(mut int), Ok(mut hup)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::quit()),
            signal(SignalKind::interrupt()),
            signal(SignalKind::hangup()),
        ) else {
            error!("cannot install signal handlers; stopping");
            return ShutdownSignal::FastShutdown;
        };
        loop {
            tokio::select! {
                _ = hup.recv() => {
                    info!("SIGHUP: reloading the configuration in place");
                    // The outcome is logged by the reloader; the process keeps serving either way.
                    let _ = self.reloader.reload(None).await;
                }
                _ = int.recv() => {
                    info!("SIGINT: stopping now");
                    return ShutdownSignal::FastShutdown;
                }
                _ = quit.recv() => {
                    self.begin_drain();
                    info!(
                        "SIGQUIT: handing the listening sockets to the new process; open \
                         connections are served for {}s, each response closing its connection",
                        self.gw.current().server.grace_period.as_secs()
                    );
                    return ShutdownSignal::GracefulUpgrade;
                }
                _ = term.recv() => {
                    self.begin_drain();
                    let grace = self.gw.current().server.grace_period;
                    info!(
                        "SIGTERM: draining for {}s (/healthz answers 503, requests are served)",
                        grace.as_secs()
                    );
                    return tokio::select! {
                        _ = tokio::time::sleep(grace) => ShutdownSignal::GracefulTerminate,
                        _ = int.recv() => ShutdownSignal::FastShutdown,
                    };
                }
            }
        }
    }
}
