//! How a process that is leaving (SIGTERM, or SIGQUIT in a hand-over) lets go of its client
//! connections without losing a request.
//!
//! From the signal on, every HTTP/1.1 response says `Connection: close` (see `proxy`), so
//! clients that send reconnect to the new process or another instance. Pingora stops accepting
//! and sends HTTP/2 GOAWAY when it broadcasts its shutdown; left to itself it would also drop
//! every idle keep-alive connection at that moment, racing clients that are just sending on
//! them. [`Closer`] holds that back until the grace period has passed since the signal. Once
//! idle connections are closed, the process waits for the last open connection (at most
//! `graceful_shutdown_timeout`) and exits.

use crate::admin::Drain;
use crate::gateway::Gateway;
use log::info;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// How long Pingora keeps accepting beside the new process after handing the sockets over
/// (its `CLOSE_TIMEOUT`).
pub const HANDOVER_OVERLAP: Duration = Duration::from_secs(5);

/// How long a connection accepted just before the process stopped accepting gets to finish its
/// TLS handshake and send its first request (answered with `Connection: close`) before idle
/// connections are closed: with a grace period shorter than Pingora's accepting overlap, the
/// last connections would otherwise be closed before their first request.
pub const LAST_ACCEPT_MARGIN: Duration = Duration::from_secs(3);

/// Open client connections of the proxy service, and whether idle ones were closed.
#[derive(Debug)]
pub struct Connections {
    open: AtomicUsize,
    /// Becomes true when connections waiting for their next request are to close; from then
    /// on only requests in flight remain.
    close_idle: watch::Sender<bool>,
}

impl Default for Connections {
    fn default() -> Connections {
        Connections {
            open: AtomicUsize::new(0),
            close_idle: watch::Sender::new(false),
        }
    }
}

impl Connections {
    /// Client connections open now.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::SeqCst)
    }
}

/// Counts one client connection while it lives.
#[derive(Debug)]
pub struct ConnectionGuard(Arc<Connections>);

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::SeqCst);
    }
}

/// What the proxy service's application wrapper asks at each connection and at shutdown.
#[derive(Clone)]
pub struct Closer {
    gw: Arc<Gateway>,
    drain: Arc<Drain>,
    connections: Arc<Connections>,
}

impl Closer {
    /// A closer over the gateway's drain state.
    pub fn new(gw: Arc<Gateway>, drain: Arc<Drain>, connections: Arc<Connections>) -> Closer {
        Closer {
            gw,
            drain,
            connections,
        }
    }

    /// Counts a client connection until the guard is dropped.
    pub fn connection(&self) -> ConnectionGuard {
        self.connections.open.fetch_add(1, Ordering::SeqCst);
        ConnectionGuard(self.connections.clone())
    }

    /// Waits until idle connections may be closed: the grace period after the drain began, and
    /// not before [`LAST_ACCEPT_MARGIN`] after accepting stopped (which is now: Pingora asks
    /// for the cleanup once its accept loops have ended).
    pub async fn wait_for_idle_close(&self) {
        let mut until = Instant::now() + LAST_ACCEPT_MARGIN;
        if let Some(since) = self.drain.since() {
            until = until.max(since + self.gw.current().server.grace_period);
        }
        tokio::time::sleep_until(until.into()).await;
    }

    /// Tells connections waiting for their next request to close now; only requests in flight
    /// remain after that.
    pub fn close_idle(&self) {
        self.connections.close_idle.send_replace(true);
    }

    /// Resolves when connections waiting for their next request are to close.
    pub fn idle_closing(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut closing = self.connections.close_idle.subscribe();
        async move {
            // An error means the sender is gone, which happens only when the process ends.
            let _ = closing.wait_for(|close| *close).await;
        }
    }
}

/// Exits the process once idle connections are closed and the last connection is done, or
/// `graceful_shutdown_timeout` after idle connections were closed, whichever comes first.
/// Pingora alone would sit out its whole grace period even with nothing left to serve.
pub fn exit_when_done(gw: Arc<Gateway>, connections: Arc<Connections>) {
    let spawned = std::thread::Builder::new()
        .name("pinion-exit".into())
        .spawn(move || {
            while !*connections.close_idle.borrow() {
                std::thread::sleep(Duration::from_millis(50));
            }
            let deadline = Instant::now() + gw.current().server.graceful_shutdown_timeout;
            while connections.open() > 0 && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            let left = connections.open();
            gw.flush_access_log();
            info!("draining done ({left} connection(s) left): exiting");
            std::process::exit(0);
        });
    if let Err(e) = spawned {
        log::warn!("cannot watch the drain ({e}); exiting after Pingora's grace period");
    }
}
