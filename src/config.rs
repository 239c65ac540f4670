//! Configuration: the one YAML file, read once, checked completely, turned into typed values.
//!
//! ```text
//! file --read--> text --serde_yaml--> raw::RawConfig --validate--> Config
//!                  \______ on error: every problem, with line:column and key path ______/
//! ```
//! `load` is the only place YAML is parsed. Relative paths in the file are resolved against the
//! file's directory.

pub mod error;
pub mod locate;
pub mod raw;
mod validate;

pub use error::{ConfigError, Diagnostic, Problem};

use crate::routing::RouteTable;
use crate::tls::PinSet;
use locate::{parse_at, position_of, KeyPath, Position};
use openssl::x509::X509;
use pingora::utils::tls::CertKey;
use raw::RawConfig;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// A validated configuration.
#[derive(Debug)]
pub struct Config {
    /// The file it was read from.
    pub file: PathBuf,
    /// Process settings.
    pub server: ServerSettings,
    /// Listeners in file order.
    pub listeners: Vec<Listener>,
    /// Pools in file order; routes refer to them by index.
    pub pools: Vec<PoolConfig>,
    /// Routes in file order.
    pub routes: RouteTable,
}

/// `server:` settings with their defaults applied.
#[derive(Debug, Clone)]
pub struct ServerSettings {
    /// Worker threads (default 2).
    pub threads: usize,
    /// PID file (default `/tmp/pinion.pid`).
    pub pid_file: String,
    /// Socket for the graceful-upgrade hand-over (default `/tmp/pinion_upgrade.sock`).
    pub upgrade_sock: String,
    /// How long to keep serving after SIGTERM/SIGQUIT (default 30 s).
    pub grace_period: Duration,
    /// How long runtimes get to stop after the grace period (default 10 s).
    pub graceful_shutdown_timeout: Duration,
    /// Run in the background (default false).
    pub daemon: bool,
    /// Log file when daemonized.
    pub error_log: Option<String>,
    /// User to switch to after binding.
    pub user: Option<String>,
    /// Group to switch to after binding.
    pub group: Option<String>,
}

/// One listener.
#[derive(Debug, Clone)]
pub struct Listener {
    /// Its name, referred to by routes.
    pub name: String,
    /// The sockets it listens on.
    pub binds: Vec<SocketAddr>,
    /// TLS settings; `None` for a plain-HTTP listener.
    pub tls: Option<ListenerTls>,
}

/// A TLS protocol version a listener accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum TlsVersion {
    /// TLS 1.2.
    V1_2,
    /// TLS 1.3.
    V1_3,
}

/// A listener's TLS settings.
#[derive(Debug, Clone)]
pub struct ListenerTls {
    /// Certificate chain and key files; the first is the default.
    pub certificates: Vec<CertKeyFiles>,
    /// Lowest accepted version (default 1.2).
    pub min_version: TlsVersion,
    /// Highest accepted version (default 1.3).
    pub max_version: TlsVersion,
    /// OpenSSL cipher string for TLS 1.2 (`None`: Mozilla intermediate).
    pub ciphers: Option<String>,
    /// Offer HTTP/2 by ALPN (default true).
    pub http2: bool,
}

/// Absolute paths of a certificate chain and its key.
#[derive(Debug, Clone)]
pub struct CertKeyFiles {
    /// PEM certificate chain, leaf first.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
}

/// One pool.
#[derive(Debug, Clone)]
pub struct PoolConfig {
    /// Its name, referred to by routes.
    pub name: String,
    /// Its servers.
    pub servers: Vec<ServerConfig>,
    /// End-to-end TLS settings; `None` for plain HTTP to the servers.
    pub tls: Option<Arc<UpstreamTls>>,
    /// Timeouts toward the servers.
    pub timeouts: Timeouts,
}

/// One server of a pool.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// The address as written, for logs.
    pub label: String,
    /// The resolved socket address.
    pub address: SocketAddr,
    /// The DNS name it was written with, if any.
    pub host: Option<String>,
    /// Weight for round robin (default 1).
    pub weight: u32,
}

/// What a failed pin check does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PinMode {
    /// Refuse the connection (default).
    Enforce,
    /// Log and allow.
    Report,
}

/// How a pool's servers are trusted (the SPEC trust table).
#[derive(Debug, Clone)]
pub struct UpstreamTls {
    /// Explicit SNI; else each server's DNS name, none for IP addresses.
    pub sni: Option<String>,
    /// The whitelist; empty when the pool trusts by CA only.
    pub pins: PinSet,
    /// What a pin mismatch does.
    pub pin_mode: PinMode,
    /// Trusted roots; `None` means the system store when there are no pins.
    pub ca: Option<Arc<Box<[X509]>>>,
    /// Check the certificate name against the SNI (with `ca` or with neither).
    pub verify_hostname: bool,
    /// Client certificate for mutual TLS.
    pub client_certificate: Option<Arc<CertKey>>,
}

impl UpstreamTls {
    /// Whether the chain is verified (with `ca`, or with neither pins nor `ca`).
    pub fn verifies_chain(&self) -> bool {
        self.ca.is_some() || self.pins.is_empty()
    }
}

/// Timeouts toward a pool's servers.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// TCP connect plus TLS handshake (default 5 s).
    pub connect: Duration,
    /// No response headers by then: 504 (default 20 s).
    pub request: Duration,
    /// Keep-alive of pooled connections (default 60 s; 0 disables pooling).
    pub idle: Duration,
}

/// Reads, parses and validates `file`, reporting every problem at once.
pub fn load(file: &Path) -> Result<Config, ConfigError> {
    let fail = |diagnostics| ConfigError {
        file: file.to_owned(),
        diagnostics,
    };
    let text = std::fs::read_to_string(file).map_err(|e| {
        fail(vec![Diagnostic {
            path: ".".into(),
            position: None,
            problem: Problem::Unreadable(e.to_string()),
        }])
    })?;
    let raw = parse(&text).map_err(fail)?;
    let base = file
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    validate::validate(raw, &base, file).map_err(|problems| {
        let mut diagnostics: Vec<Diagnostic> = problems
            .into_iter()
            .map(|(path, problem)| Diagnostic {
                position: position_of(&text, &path),
                path: path.to_string(),
                problem,
            })
            .collect();
        diagnostics.sort_by_key(|d| d.position);
        fail(diagnostics)
    })
}

/// Parses the text into the raw document. On a schema error, re-checks each section and list
/// item on its own so that every broken item is reported, not only the first.
fn parse(text: &str) -> Result<RawConfig, Vec<Diagnostic>> {
    let first = match serde_yaml::from_str::<RawConfig>(text) {
        Ok(raw) => return Ok(raw),
        Err(e) => e,
    };
    let mut diags = vec![from_yaml_error(&first)];
    if let Ok(serde_yaml::Value::Mapping(root)) = serde_yaml::from_str(text) {
        let root_path = KeyPath::default();
        for (key, value) in &root {
            let Some(key) = key.as_str() else { continue };
            let path = root_path.key(key);
            match key {
                "server" => check::<raw::RawServer>(text, &path, value, &mut diags),
                "admin" => check::<raw::RawAdmin>(text, &path, value, &mut diags),
                "access_log" => check::<raw::RawAccessLog>(text, &path, value, &mut diags),
                "listeners" => check_list::<raw::RawListener>(text, &path, value, &mut diags),
                "pools" => check_list::<raw::RawPool>(text, &path, value, &mut diags),
                "routes" => check_list::<raw::RawRoute>(text, &path, value, &mut diags),
                _ => {}
            }
        }
    }
    diags.sort_by_key(|d| d.position);
    diags.dedup();
    Err(diags)
}

fn check<T: serde::de::DeserializeOwned>(
    text: &str,
    path: &KeyPath,
    value: &serde_yaml::Value,
    diags: &mut Vec<Diagnostic>,
) {
    if value.is_null() || serde_yaml::from_value::<T>(value.clone()).is_ok() {
        return;
    }
    if let Some(Err(e)) = parse_at::<T>(text, path) {
        diags.push(from_yaml_error(&e));
    }
}

fn check_list<T: serde::de::DeserializeOwned>(
    text: &str,
    path: &KeyPath,
    value: &serde_yaml::Value,
    diags: &mut Vec<Diagnostic>,
) {
    match value {
        serde_yaml::Value::Sequence(items) => {
            for (i, item) in items.iter().enumerate() {
                check::<T>(text, &path.index(i), item, diags);
            }
        }
        other => check::<Vec<T>>(text, path, other, diags),
    }
}

/// Splits serde_yaml's "path: message at line L column C" into its parts.
fn from_yaml_error(e: &serde_yaml::Error) -> Diagnostic {
    let position = e.location().map(|l| Position {
        line: l.line(),
        column: l.column(),
    });
    let mut text = e.to_string();
    if let Some(i) = text.rfind(" at line ") {
        text.truncate(i);
    }
    let (path, message) = match text.split_once(": ") {
        Some((p, m)) if !p.contains(' ') => (p.to_owned(), m.to_owned()),
        _ => (".".to_owned(), text),
    };
    Diagnostic {
        path,
        position,
        problem: Problem::Schema(message),
    }
}
