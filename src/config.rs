//! Configuration: the one YAML file, read once, checked completely, turned into typed values.
//!
//! ```text
//! file --read--> text --serde_yaml--> raw::RawConfig --validate--> Config
//!                  \______ on error: every problem, with line:column and key path ______/
//! ```
//! `load` is the only place YAML is parsed. Relative paths in the file are resolved against the
//! file's directory.

pub mod backend;
pub mod error;
pub mod locate;
pub mod raw;
mod validate;

use validate::Unparsed;

pub use backend::{Endpoint, Resolution, ResolveOnStart, ServerConfig, ServerEntry};
pub use error::{ConfigError, Diagnostic, Problem};
pub(crate) use validate::RESERVED_HEADERS;

use crate::listener::Cidr;
use crate::routing::RouteTable;
use crate::tls::Whitelist;
use locate::{key_position_of, parse_at, position_of, KeyPath, Position};
use openssl::pkey::{PKey, Private};
use openssl::x509::X509;
use pingora::utils::tls::CertKey;
use raw::RawConfig;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// A validated configuration.
#[derive(Debug)]
pub struct Config {
    /// The file it was read from.
    pub file: PathBuf,
    /// Lower-case hex SHA-256 of the file's bytes.
    pub sha256: String,
    /// The file itself and every file it names that was read (certificates, keys, CAs, pins,
    /// error pages), each with what its path resolved to just before it was read.
    pub files: Vec<(PathBuf, FileStamp)>,
    /// Process settings.
    pub server: ServerSettings,
    /// Listeners in file order.
    pub listeners: Vec<Listener>,
    /// Pools in file order; routes refer to them by index.
    pub pools: Vec<PoolConfig>,
    /// Routes in file order.
    pub routes: RouteTable,
    /// The admin listener's address, when configured.
    pub admin: Option<SocketAddr>,
    /// The bearer token every admin request must carry (`admin.token`), when set.
    pub admin_token: Option<crate::admin::AdminToken>,
    /// The access log, when configured.
    pub access_log: Option<AccessLogConfig>,
    /// The audit log of trust changes and refused keys, when configured.
    pub audit_log: Option<PathBuf>,
    /// What one lookup of each server name gave while loading (nothing in an offline check).
    pub answers: crate::dns::Answers,
}

/// Where and how requests are logged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessLogConfig {
    /// `None` for standard output.
    pub file: Option<PathBuf>,
    /// Line format.
    pub format: AccessLogFormat,
}

/// An access log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccessLogFormat {
    /// One JSON object per line.
    Json,
    /// The Apache/nginx combined format, followed by pinion's own fields.
    Combined,
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
    /// Socket on which the running gateway takes reload requests (default
    /// `/tmp/pinion_control.sock`).
    pub control_sock: String,
    /// Reload in place when the file or a file it names changes (default false).
    pub watch: bool,
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
    /// DNS servers for backend names; empty: `/etc/hosts`, then `/etc/resolv.conf`'s.
    pub resolvers: Vec<SocketAddr>,
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
    /// Answer every request with 308 to HTTPS on this port.
    pub redirect_to_https: Option<u16>,
    /// Bodies for gateway-generated errors, by status.
    pub error_pages: BTreeMap<u16, ErrorPage>,
    /// Expect a PROXY protocol v1/v2 header on every connection.
    pub proxy_protocol: bool,
    /// Peers whose X-Forwarded-* headers are kept and extended.
    pub trusted_proxies: Vec<Cidr>,
    /// Format of the X-Forwarded-For entry the gateway adds.
    pub forwarded_for: ForwardedFor,
    /// How large a request it accepts.
    pub limits: crate::limits::Limits,
    /// Requests per client address over time, for every request on the listener.
    pub rate_limit: Option<std::sync::Arc<crate::limits::rate::RateLimiter>>,
}

/// A custom body for a gateway-generated error.
#[derive(Debug, Clone)]
pub struct ErrorPage {
    /// The body.
    pub body: bytes::Bytes,
    /// Its content type, from the file's extension.
    pub content_type: &'static str,
}

/// What the gateway appends to X-Forwarded-For.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ForwardedFor {
    /// The client's address.
    Ip,
    /// The client's address and port (`192.0.2.1:50123`, `[2001:db8::1]:50123`).
    IpPort,
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
    /// Client certificates required of every client (`client_auth`).
    pub client_auth: Option<Arc<crate::listener::client_auth::ClientAuth>>,
}

/// A certificate chain and its key: where they were read from, and what they hold.
#[derive(Debug, Clone)]
pub struct CertKeyFiles {
    /// PEM certificate chain, leaf first.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
    /// The chain as read, leaf first.
    pub chain: Vec<X509>,
    /// The private key as read.
    pub private_key: PKey<Private>,
    /// Lower-case names SNI selects it by: its DNS SANs, else its CN.
    pub names: Vec<String>,
    /// The client certificate policy for the names it serves, instead of the listener's.
    pub client_auth: Option<Arc<crate::listener::client_auth::ClientAuth>>,
}

/// One pool.
#[derive(Debug, Clone)]
pub struct PoolConfig {
    /// Its name, referred to by routes.
    pub name: String,
    /// Its servers as configured.
    pub servers: Vec<ServerEntry>,
    /// How its server names are resolved.
    pub resolution: Resolution,
    /// End-to-end TLS settings; `None` for plain HTTP to the servers.
    pub tls: Option<Arc<UpstreamTls>>,
    /// Timeouts toward the servers.
    pub timeouts: Timeouts,
    /// How a server is chosen.
    pub balance: Balance,
    /// The Host header sent to the servers.
    pub host_header: HostHeader,
    /// Cookie-based session affinity; `None` when off.
    pub affinity: Option<Affinity>,
    /// Active health probe; `None` when `probe: false`.
    pub probe: Option<Probe>,
    /// Connection failures retried on another server (default 2).
    pub retries: u32,
    /// The HTTP version spoken to the servers, and streams per HTTP/2 connection.
    pub http: crate::upstream::UpstreamHttp,
}

/// Server selection algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Balance {
    /// Smooth weighted round robin (default).
    RoundRobin,
    /// Weighted random.
    Random,
    /// Fewest in-flight requests, weighted.
    LeastConnections,
    /// By client address (weighted rendezvous hashing).
    IpHash,
}

/// What the backend receives as Host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostHeader {
    /// The client's Host (default).
    Preserve,
    /// The server's DNS name (or SNI, or address).
    Backend,
    /// This literal value.
    Literal(String),
}

/// Cookie-based session affinity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Affinity {
    /// Cookie name (default `ApplicationGatewayAffinity`).
    pub cookie: String,
    /// `Max-Age`; zero means a session cookie (default).
    pub ttl: Duration,
    /// Add `Secure` on HTTPS listeners (default true).
    pub secure: bool,
    /// Add `HttpOnly` (default true).
    pub http_only: bool,
    /// `SameSite` attribute (default lax).
    pub same_site: SameSite,
    /// The key of the MAC that makes the cookie value (from `secret_file`).
    pub secret: AffinitySecret,
}

/// The affinity MAC key. Never printed: `Debug` shows only its length.
#[derive(Clone, PartialEq, Eq)]
pub struct AffinitySecret(Arc<[u8]>);

impl AffinitySecret {
    /// The fewest bytes a secret file must hold: 256 bits, the HMAC-SHA256 block strength.
    pub const MIN_LEN: usize = 32;

    /// A key from the bytes of a secret file.
    pub fn new(bytes: &[u8]) -> AffinitySecret {
        AffinitySecret(bytes.into())
    }

    /// The key bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.0
    }
}

impl std::fmt::Debug for AffinitySecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AffinitySecret({} bytes)", self.0.len())
    }
}

/// A cookie's `SameSite` attribute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SameSite {
    /// `SameSite=Lax`.
    Lax,
    /// `SameSite=Strict`.
    Strict,
    /// `SameSite=None` (requires `Secure`).
    None,
}

/// An active health probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    /// Request path (default `/`).
    pub path: String,
    /// Host header; default: as for requests, else the SNI or server name or address.
    pub host: Option<String>,
    /// Time between probes of one server (default 30 s).
    pub interval: Duration,
    /// A probe that takes longer fails (default 30 s).
    pub timeout: Duration,
    /// Consecutive failures that take a server out of rotation (default 3).
    pub unhealthy_threshold: u32,
    /// Consecutive successes that bring it back (default 1).
    pub healthy_threshold: u32,
    /// Healthy status ranges, inclusive (default 200-399).
    pub status: Vec<(u16, u16)>,
    /// The body must contain this (default: not checked).
    pub body_contains: Option<String>,
    /// Probe with the gRPC health-checking protocol for this service (`""`: the server as a
    /// whole) instead of `GET path`.
    pub grpc_service: Option<String>,
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
    pub pins: Whitelist,
    /// How many days ahead pin windows and certificate expiry warn (default 14).
    pub warn_days: u32,
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

/// Whether server names are looked up in DNS while validating.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolve {
    /// Resolve names (what running and `-t` do).
    Names,
    /// Never touch the network: names are not looked up (a pool that requires its names to
    /// resolve is then an error). For fuzzing and checks on machines without the production
    /// resolver.
    Offline,
}

/// Reads, parses and validates `file`, reporting every problem at once.
pub fn load(file: &Path) -> Result<Config, ConfigError> {
    load_with(file, Resolve::Names)
}

/// `load`, choosing whether server names are resolved.
pub fn load_with(file: &Path, resolve: Resolve) -> Result<Config, ConfigError> {
    load_inner(file, resolve, false)
}

/// `load`, plus what only the process that starts (or `-t`) must check: that `server.error_log`
/// can be opened for appending. A running gateway that reloads may no longer be root, and the
/// log it keeps was opened at start.
pub fn load_to_start(file: &Path) -> Result<Config, ConfigError> {
    load_inner(file, Resolve::Names, true)
}

fn load_inner(file: &Path, resolve: Resolve, open_logs: bool) -> Result<Config, ConfigError> {
    let fail = |diagnostics| ConfigError {
        file: file.to_owned(),
        diagnostics,
    };
    let own_stamp = stamp(file);
    let text = std::fs::read_to_string(file).map_err(|e| {
        fail(vec![Diagnostic {
            path: ".".into(),
            position: None,
            problem: Problem::Unreadable(e.to_string()),
        }])
    })?;
    // Absolute, so that the paths it names stay right after a daemon changes directory.
    let base = absolute(file)
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    let (raw, unparsed, mut diagnostics) = parse(&text);
    let Some(raw) = raw else {
        return Err(fail(diagnostics));
    };
    match validate::validate(raw, &base, file, &unparsed, resolve, open_logs) {
        Ok(mut config) if diagnostics.is_empty() => {
            config.sha256 = sha256_hex(text.as_bytes());
            config.files.insert(0, (absolute(file), own_stamp));
            Ok(config)
        }
        Ok(_) => Err(fail(diagnostics)),
        Err(problems) => {
            diagnostics.extend(problems.into_iter().map(|(path, problem)| {
                let path = unparsed.original(path);
                Diagnostic {
                    position: position_of(&text, &path),
                    path: path.to_string(),
                    problem,
                }
            }));
            diagnostics.sort_by_key(|d| d.position);
            diagnostics.dedup();
            Err(fail(diagnostics))
        }
    }
}

/// `file` as an absolute path, without resolving symbolic links: a Kubernetes ConfigMap mount
/// swaps the link target on every update, and the next reload must read the new target.
pub fn absolute(file: &Path) -> PathBuf {
    std::path::absolute(file).unwrap_or_else(|_| file.to_owned())
}

/// What a path resolves to now (device, inode, size, modification time), following symbolic
/// links; `None` while it cannot be read. A change of any part means the file changed, be it
/// edited in place or swapped by a Kubernetes `..data` link switch.
pub type FileStamp = Option<(u64, u64, u64, i64, i64)>;

/// The stamp of `path` now.
pub fn stamp(path: &Path) -> FileStamp {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path)
        .ok()
        .map(|m| (m.dev(), m.ino(), m.size(), m.mtime(), m.mtime_nsec()))
}

/// Lower-case hex SHA-256, as `sha256sum` prints it.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let digest = openssl::hash::hash(openssl::hash::MessageDigest::sha256(), bytes)
        .map(|d| d.to_vec())
        .unwrap_or_default();
    digest.iter().fold(String::with_capacity(64), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// Parses the text into the raw document. On a schema error, each section and list item is
/// parsed on its own: every broken item is reported, and the items that did parse are still
/// returned so that their rule violations are reported in the same run.
fn parse(text: &str) -> (Option<RawConfig>, Unparsed, Vec<Diagnostic>) {
    let first = match serde_yaml::from_str::<RawConfig>(text) {
        Ok(raw) => return (Some(raw), Unparsed::default(), Vec::new()),
        Err(e) => e,
    };
    let mut diags = vec![from_yaml_error(&first)];
    let Ok(serde_yaml::Value::Mapping(root)) = serde_yaml::from_str(text) else {
        return (None, Unparsed::default(), diags);
    };
    let mut raw = RawConfig::default();
    let mut unparsed = Unparsed::default();
    let root_path = KeyPath::default();
    for (key, value) in &root {
        let Some(key) = key.as_str() else { continue };
        let path = root_path.key(key);
        match key {
            "server" => raw.server = item(text, &path, value, &mut diags),
            "admin" => raw.admin = item(text, &path, value, &mut diags),
            "access_log" => raw.access_log = item(text, &path, value, &mut diags),
            "listeners" => {
                let (kept, list) = items(text, &path, value, &mut diags, &mut unparsed.listeners);
                unparsed.kept.insert(key.to_owned(), kept);
                raw.listeners = list;
            }
            "pools" => {
                let (kept, list) = items(text, &path, value, &mut diags, &mut unparsed.pools);
                unparsed.kept.insert(key.to_owned(), kept);
                raw.pools = list;
            }
            "routes" => {
                let (kept, list) = items(text, &path, value, &mut diags, &mut Vec::new());
                unparsed.kept.insert(key.to_owned(), kept);
                raw.routes = list;
            }
            unknown => diags.push(Diagnostic {
                position: key_position_of(text, &path),
                path: ".".into(),
                problem: Problem::Schema(format!(
                    "unknown field `{unknown}`, expected one of {}",
                    ROOT_KEYS.map(|k| format!("`{k}`")).join(", ")
                )),
            }),
        }
    }
    diags.sort_by_key(|d| d.position);
    diags.dedup();
    (Some(raw), unparsed, diags)
}

/// The keys of the document's root, in the order serde_yaml lists them in its own errors.
const ROOT_KEYS: [&str; 6] = [
    "server",
    "admin",
    "access_log",
    "listeners",
    "pools",
    "routes",
];

/// One section: `Some` when it parses, else its positioned error is recorded.
fn item<T: serde::de::DeserializeOwned>(
    text: &str,
    path: &KeyPath,
    value: &serde_yaml::Value,
    diags: &mut Vec<Diagnostic>,
) -> Option<T> {
    if value.is_null() {
        return None;
    }
    if let Ok(v) = serde_yaml::from_value::<T>(value.clone()) {
        return Some(v);
    }
    // Parse again from the text, so the error carries its key path and position.
    if let Some(Err(e)) = parse_at::<T>(text, path) {
        diags.push(from_yaml_error(&e));
    }
    None
}

/// A list section: the items that parse with their original indices; the names of those that
/// do not go to `broken`.
fn items<T: serde::de::DeserializeOwned>(
    text: &str,
    path: &KeyPath,
    value: &serde_yaml::Value,
    diags: &mut Vec<Diagnostic>,
    broken: &mut Vec<String>,
) -> (Vec<usize>, Vec<T>) {
    let serde_yaml::Value::Sequence(list) = value else {
        let all = item::<Vec<T>>(text, path, value, diags).unwrap_or_default();
        return ((0..all.len()).collect(), all);
    };
    let mut out = Vec::new();
    let mut kept = Vec::new();
    for (i, v) in list.iter().enumerate() {
        match item::<T>(text, &path.index(i), v, diags) {
            Some(t) => {
                kept.push(i);
                out.push(t);
            }
            None => broken.push(
                v.get("name")
                    .and_then(serde_yaml::Value::as_str)
                    .unwrap_or_default()
                    .to_owned(),
            ),
        }
    }
    (kept, out)
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
