//! Signals, with a drain phase for load balancers in front.
//!
//! SIGTERM: `/healthz` answers 503 at once while everything keeps serving for `grace_period`,
//! so the balancer takes this instance out; then listeners close and in-flight requests get
//! `graceful_shutdown_timeout`. SIGQUIT: the graceful upgrade hand-over, at once (the new
//! process shares the sockets), with `/healthz` 503 here. SIGINT: stop now.

use crate::admin::Drain;
use async_trait::async_trait;
use log::{error, info};
use pingora::server::{ShutdownSignal, ShutdownSignalWatch};
use std::sync::Arc;
use std::time::Duration;
use tokio::signal::unix::{signal, SignalKind};

/// The shutdown signal watch handed to Pingora.
pub struct Signals {
    drain: Arc<Drain>,
    grace: Duration,
}

impl Signals {
    /// Watches signals, marking `drain` when a graceful stop begins.
    pub fn new(drain: Arc<Drain>, grace: Duration) -> Signals {
        Signals { drain, grace }
    }
}

#[async_trait]
impl ShutdownSignalWatch for Signals {
    async fn recv(&self) -> ShutdownSignal {
        let (Ok(mut term), Ok(mut quit), Ok(mut int)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::quit()),
            signal(SignalKind::interrupt()),
        ) else {
            error!("cannot install signal handlers; stopping");
            return ShutdownSignal::FastShutdown;
        };
        tokio::select! {
            _ = int.recv() => {
                info!("SIGINT: stopping now");
                ShutdownSignal::FastShutdown
            }
            _ = quit.recv() => {
                self.drain.start();
                info!("SIGQUIT: handing the listening sockets to the new process");
                ShutdownSignal::GracefulUpgrade
            }
            _ = term.recv() => {
                self.drain.start();
                info!(
                    "SIGTERM: draining for {}s (/healthz answers 503, requests are served)",
                    self.grace.as_secs()
                );
                tokio::select! {
                    _ = tokio::time::sleep(self.grace) => ShutdownSignal::GracefulTerminate,
                    _ = int.recv() => ShutdownSignal::FastShutdown,
                }
            }
        }
    }
}
