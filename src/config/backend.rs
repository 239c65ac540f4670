//! A pool's servers as configured: addresses, and DNS names that stand for every address they
//! resolve to (re-resolved while running, see `pool::resolve`).

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

/// One entry of a pool's `servers:`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerEntry {
    /// The entry as written, for logs.
    pub label: String,
    /// What it names.
    pub endpoint: Endpoint,
    /// Weight of each server it stands for (default 1).
    pub weight: u32,
}

/// An address or a name with a port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// One server at this address.
    Address(SocketAddr),
    /// One server per A/AAAA address of the (lower-case) name.
    Name {
        /// The DNS name: also the SNI, the `host_header: backend` value and the name verified.
        host: String,
        /// The port of every address.
        port: u16,
    },
}

impl ServerEntry {
    /// The DNS name, for entries given by name.
    pub fn host(&self) -> Option<&str> {
        match &self.endpoint {
            Endpoint::Name { host, .. } => Some(host),
            Endpoint::Address(_) => None,
        }
    }

    /// The server of an address entry; `None` for a name.
    pub fn server(&self) -> Option<ServerConfig> {
        match self.endpoint {
            Endpoint::Address(address) => Some(ServerConfig {
                label: self.label.clone(),
                address,
                host: None,
                weight: self.weight,
            }),
            Endpoint::Name { .. } => None,
        }
    }

    /// The server a name entry stands for at `ip`, labelled `name:port (ip)`; `None` for an
    /// address entry.
    pub fn at(&self, ip: IpAddr) -> Option<ServerConfig> {
        match &self.endpoint {
            Endpoint::Name { host, port } => Some(ServerConfig {
                label: format!("{} ({ip})", self.label),
                address: SocketAddr::new(ip, *port),
                host: Some(host.clone()),
                weight: self.weight,
            }),
            Endpoint::Address(_) => None,
        }
    }
}

/// One server: one address of a pool.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// The address as written, or `name:port (address)` for an address of a name.
    pub label: String,
    /// The socket address.
    pub address: SocketAddr,
    /// The DNS name it was written with, if any.
    pub host: Option<String>,
    /// Weight for round robin (default 1).
    pub weight: u32,
}

/// What a name that does not resolve when the configuration is loaded does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResolveOnStart {
    /// pinion starts (or reloads); the name's servers join once it resolves (default).
    Optional,
    /// A configuration error.
    Required,
}

/// How a pool's names are resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resolution {
    /// How often names are looked up again (`resolve_seconds`, default 30 s); a shorter TTL
    /// in the answer is respected.
    pub every: Duration,
    /// What a name that does not resolve at load does.
    pub on_start: ResolveOnStart,
}
