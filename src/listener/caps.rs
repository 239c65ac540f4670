//! Connection caps: `limits.max_connections` (per listener) and `limits.max_connections_per_ip`
//! (per listener and client address). A connection beyond a cap is closed as soon as the
//! gateway holds it, before any request is read; refusals are counted in `/metrics` and
//! logged at most once a second, not per connection, so a flood cannot flood the log too.

use super::proxy_protocol::ProxyProtocolGate;
use crate::gateway::Gateway;
use async_trait::async_trait;
use log::{debug, warn};
use pingora::listeners::PreTlsProcess;
use pingora::protocols::l4::socket::SocketAddr as PingoraAddr;
use pingora::protocols::l4::stream::Stream as L4Stream;
use pingora::protocols::{GetSocketDigest, SocketDigest};
use pingora::{Error, ErrorType};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

/// Why a connection was refused, as the metric's `reason`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CapRefusal {
    /// The listener holds `max_connections` already.
    Listener,
    /// The client's address holds `max_connections_per_ip` on this listener already.
    Client,
}

impl CapRefusal {
    /// Every reason, in the order of the metric's slots.
    pub const ALL: [CapRefusal; 2] = [CapRefusal::Listener, CapRefusal::Client];

    /// The `reason` label.
    pub fn label(self) -> &'static str {
        match self {
            CapRefusal::Listener => "max_connections",
            CapRefusal::Client => "max_connections_per_ip",
        }
    }
}

/// A listener's name, and a client address for a per-client count (`None`: the listener's).
type Key = (Arc<str>, Option<IpAddr>);

/// Open connections by listener and by listener and client, across configuration generations
/// (a reload changes the caps, not the connections already open).
#[derive(Default)]
struct Table {
    open: Mutex<HashMap<Key, u64>>,
    /// Refusals not yet logged, and the second of the last log line.
    unlogged: AtomicU64,
    logged_second: AtomicU64,
}

/// Admits connections under their listener's caps.
#[derive(Clone)]
pub struct Caps {
    gw: Arc<Gateway>,
    table: Arc<Table>,
}

/// Holds a connection's place under the caps until dropped.
pub struct Admitted {
    table: Arc<Table>,
    listener: Arc<str>,
    client: Option<IpAddr>,
}

impl Caps {
    /// Caps read from the gateway's current generation at each connection.
    pub fn new(gw: Arc<Gateway>) -> Caps {
        Caps {
            gw,
            table: Arc::default(),
        }
    }

    /// Refuses (counted and logged) a connection that its listener's caps have no room for,
    /// without taking a place: asked before the TLS handshake, so that a refused connection
    /// costs none. [`Caps::admit`] takes the place once the connection is established.
    pub fn check(
        &self,
        local: Option<SocketAddr>,
        client: Option<IpAddr>,
    ) -> Result<(), CapRefusal> {
        self.decide(local, client, false).map(|_| ())
    }

    /// Admits a connection on `local` from `client`, or refuses it (counted and logged). `None`
    /// inside `Ok` when its listener has no cap: nothing to hold.
    pub fn admit(
        &self,
        local: Option<SocketAddr>,
        client: Option<IpAddr>,
    ) -> Result<Option<Admitted>, CapRefusal> {
        self.decide(local, client, true)
    }

    fn decide(
        &self,
        local: Option<SocketAddr>,
        client: Option<IpAddr>,
        reserve: bool,
    ) -> Result<Option<Admitted>, CapRefusal> {
        let gen = self.gw.current();
        let Some((index, listener)) = local
            .and_then(|a| gen.binds.lookup(a))
            .and_then(|i| Some((i, gen.listeners.get(i)?)))
        else {
            return Ok(None);
        };
        let limits = &listener.limits;
        if limits.max_connections.is_none() && limits.max_connections_per_ip.is_none() {
            return Ok(None);
        }
        let name: Arc<str> = Arc::from(listener.name.as_str());
        let per_client = limits.max_connections_per_ip.and(client);
        let refused = {
            let mut open = self.table.open.lock().unwrap_or_else(|p| p.into_inner());
            let total = open.get(&(name.clone(), None)).copied().unwrap_or(0);
            let mine = per_client
                .map(|ip| open.get(&(name.clone(), Some(ip))).copied().unwrap_or(0))
                .unwrap_or(0);
            if limits.max_connections.is_some_and(|max| total >= max) {
                Some(CapRefusal::Listener)
            } else if limits.max_connections_per_ip.is_some_and(|max| mine >= max) {
                Some(CapRefusal::Client)
            } else if !reserve {
                return Ok(None);
            } else {
                *open.entry((name.clone(), None)).or_insert(0) += 1;
                if let Some(ip) = per_client {
                    *open.entry((name.clone(), Some(ip))).or_insert(0) += 1;
                }
                None
            }
        };
        if let Some(why) = refused {
            gen.metrics.connection_refused(index, why);
            self.log_refusal(&listener.name, why);
            return Err(why);
        }
        Ok(Some(Admitted {
            table: self.table.clone(),
            listener: name,
            client: per_client,
        }))
    }

    /// Logs refusals at most once a second, with how many there were since the last line.
    fn log_refusal(&self, listener: &str, why: CapRefusal) {
        let count = self.table.unlogged.fetch_add(1, Ordering::Relaxed) + 1;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let last = self.table.logged_second.load(Ordering::Relaxed);
        if now > last
            && self
                .table
                .logged_second
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            self.table.unlogged.fetch_sub(count, Ordering::Relaxed);
            warn!(
                "listener {listener}: refused {count} connection(s) over limits.{} (and any other cap) since the last such line",
                why.label()
            );
        }
    }
}

/// A connection's addresses: the local one (which listener) and the client's (after a PROXY
/// header, its address).
pub fn addresses(digest: Option<&SocketDigest>) -> (Option<SocketAddr>, Option<IpAddr>) {
    let local = digest
        .and_then(|d| d.local_addr())
        .and_then(PingoraAddr::as_inet)
        .copied();
    let client = digest
        .and_then(|d| d.peer_addr())
        .and_then(PingoraAddr::as_inet)
        .map(|a| a.ip());
    (local, client)
}

/// What runs on every new connection before its TLS handshake: the PROXY header where one is
/// expected (its address is the client's), then the connection caps.
pub struct BeforeTls {
    gate: ProxyProtocolGate,
    caps: Caps,
}

impl BeforeTls {
    /// The gate, then the caps.
    pub fn new(gate: ProxyProtocolGate, caps: Caps) -> BeforeTls {
        BeforeTls { gate, caps }
    }
}

#[async_trait]
impl PreTlsProcess for BeforeTls {
    async fn process(&self, stream: &mut L4Stream) -> pingora::Result<()> {
        self.gate.process(stream).await?;
        let digest = stream.get_socket_digest();
        let (local, client) = addresses(digest.as_deref());
        self.caps.check(local, client).map_err(|why| {
            debug!(
                "closing connection from {client:?}: over limits.{}",
                why.label()
            );
            Error::explain(ErrorType::ConnectRefused, "over a connection cap").into_down()
        })
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let mut open = self.table.open.lock().unwrap_or_else(|p| p.into_inner());
        let keys = [
            Some((self.listener.clone(), None)),
            self.client.map(|ip| (self.listener.clone(), Some(ip))),
        ];
        for key in keys.into_iter().flatten() {
            if let Some(n) = open.get_mut(&key) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    open.remove(&key);
                }
            }
        }
    }
}
