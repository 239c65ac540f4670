//! Configuration errors: one variant per rule, each saying what would be accepted.

use super::locate::Position;
use std::fmt;
use std::path::PathBuf;

/// What is wrong with one value of the configuration.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum Problem {
    /// The file could not be read.
    #[error("cannot read the file: {0}")]
    Unreadable(String),
    /// YAML syntax or schema error reported by the parser (its text already names what fits).
    #[error("{0}")]
    Schema(String),
    /// A list that must not be empty.
    #[error("must list at least one {0}")]
    Empty(&'static str),
    /// Two items with the same name.
    #[error("duplicate name {name:?}: names must be unique among {what}")]
    Duplicate { name: String, what: &'static str },
    /// A name that is not usable.
    #[error("invalid name {0:?}: use letters, digits, '-', '_' and '.'")]
    BadName(String),
    /// A listening address that does not parse.
    #[error("invalid address {0:?}: expected IP:PORT, e.g. 0.0.0.0:443 or [::]:443")]
    BadBind(String),
    /// The same socket is bound twice.
    #[error("address {0} is already bound by listener {1:?}")]
    BindTaken(String, String),
    /// A backend address that does not parse or resolve.
    #[error("invalid server address {address:?}: {reason}; expected HOST:PORT, e.g. 10.0.1.4:443 or api.internal:443")]
    BadServer { address: String, reason: String },
    /// A DNS server address that does not parse.
    #[error("invalid resolver {0:?}: expected IP:PORT, e.g. 10.0.0.2:53 or [fd00::53]:53")]
    BadResolver(String),
    /// A name of a pool with `resolve_on_start: required` that did not resolve.
    #[error("{name} does not resolve ({reason}); with `resolve_on_start: required` a name must resolve when the configuration is loaded (the default, `optional`, starts and answers 502 for the pool until it does)")]
    Unresolved { name: String, reason: String },
    /// A number out of range.
    #[error("{value} is out of range: expected {expected}")]
    OutOfRange { value: u64, expected: &'static str },
    /// A value not among the allowed words.
    #[error("invalid value {value:?}: expected {expected}")]
    BadChoice {
        value: String,
        expected: &'static str,
    },
    /// A file referenced by the configuration is missing or unreadable.
    #[error("cannot read {path}: {reason}")]
    BadFile { path: PathBuf, reason: String },
    /// A file the process must write cannot be opened for writing.
    #[error("cannot write {path}: {reason}; expected a file in an existing directory this process may write")]
    Unwritable { path: PathBuf, reason: String },
    /// A certificate file that holds no usable certificate.
    #[error("{path}: {reason}; expected PEM or DER X.509 certificates")]
    BadCertificate { path: PathBuf, reason: String },
    /// A private key file that does not parse or does not match its certificate.
    #[error("{path}: {reason}")]
    BadKey { path: PathBuf, reason: String },
    /// A pin whose value is malformed.
    #[error("invalid pin {value:?}: expected the base64 SHA-256 of a DER SubjectPublicKeyInfo (44 characters ending in '='), as `pinion pin` prints")]
    BadPin { value: String },
    /// A pin entry with not exactly one of cert/public_key/sha256.
    #[error("a pin needs exactly one of `cert`, `public_key` or `sha256`")]
    PinShape,
    /// A pin window bound that is not an RFC 3339 instant.
    #[error("invalid instant {value:?}: expected an RFC 3339 date and time such as \"2027-03-01T00:00:00Z\"")]
    BadInstant { value: String },
    /// A pin window that ends before it starts.
    #[error("`not_after` must be later than `not_before`")]
    EmptyWindow,
    /// `scope`, `not_before` or `not_after` on a client certificate pin.
    #[error("only pins of pools (`pools[].tls.pins`) take `scope`, `not_before` and `not_after`")]
    PoolPinOnly,
    /// A gRPC health probe on a pool that may not speak HTTP/2.
    #[error("a gRPC health probe needs HTTP/2 to the servers: set `tls.http2: true` (or `h2c: true` on a pool without `tls`)")]
    GrpcProbeWithoutH2,
    /// `h2c` on a pool with `tls`.
    #[error("`h2c` is HTTP/2 without TLS, for pools without `tls`; with `tls`, set `tls.http2: true` (or `auto`)")]
    H2cWithTls,
    /// A public key file that does not parse.
    #[error("{path}: {reason}; expected a PEM or DER public key (SubjectPublicKeyInfo)")]
    BadPublicKey { path: PathBuf, reason: String },
    /// A reference to a pool that does not exist.
    #[error("unknown pool {name:?}; defined pools: {known}")]
    UnknownPool { name: String, known: String },
    /// A reference to a listener that does not exist.
    #[error("unknown listener {name:?}; defined listeners: {known}")]
    UnknownListener { name: String, known: String },
    /// `client_auth` with nothing to trust a client certificate by.
    #[error(
        "client_auth needs `ca` (a PEM bundle of trusted roots), `pins` (the keys let in), or both"
    )]
    ClientAuthWithoutTrust,
    /// A backend whose certificate could not be verified by name.
    #[error("server {server} has no host name to verify its certificate against: set `tls.sni` to the name in its certificate, or whitelist its key in `tls.pins` (with only leaf and chain pins and no `ca`, `verify_hostname: false` also works)")]
    NoNameToVerify { server: String },
    /// A key that only has meaning in another trust mode.
    #[error("`verify_hostname` applies only with `ca`, with a `scope: chain` pin, or without `pins`: with leaf pins alone only the public key is checked")]
    VerifyHostnameWithPinsOnly,
    /// min_version above max_version.
    #[error("min_version {min} is above max_version {max}")]
    VersionOrder { min: String, max: String },
    /// An OpenSSL cipher string OpenSSL rejects.
    #[error("invalid cipher string {0:?}: no cipher matches; expected an OpenSSL cipher list such as \"ECDHE+AESGCM:ECDHE+CHACHA20\"")]
    BadCiphers(String),
    /// A host pattern that is not usable.
    #[error("invalid host {0:?}: expected a host name such as www.contoso.com or a wildcard such as *.contoso.com")]
    BadHost(String),
    /// A path pattern that is not usable.
    #[error("invalid path {0:?}: expected an absolute path (\"/x\"), a prefix (\"/x/*\" or \"/x*\") or \"/*\"")]
    BadPath(String),
    /// A route with both a pool and a redirect.
    #[error("a route has either `pool` or `redirect`, not both")]
    PoolAndRedirect,
    /// A header a route may not rewrite.
    #[error(
        "{0:?} cannot be rewritten: the proxy manages it (use the pool's `host_header` for Host)"
    )]
    ReservedHeader(String),
    /// Affinity without the key its cookie values are made with.
    #[error("affinity needs `secret_file`: a file of at least 32 random bytes, the same on every instance (e.g. made with `openssl rand -base64 32 > affinity.key`)")]
    NoAffinitySecret,
    /// An affinity secret file too short to be a key.
    #[error("{path} holds {len} bytes; an affinity secret needs at least 32 random bytes (e.g. `openssl rand -base64 32`)")]
    ShortSecret { path: PathBuf, len: usize },
    /// A route without a target.
    #[error("a route needs `pool` (or `redirect`)")]
    NoTarget,
}

/// One problem at one place in one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// Where in the document, e.g. `pools[0].servers[1]`.
    pub path: String,
    /// Line and column, when the path exists in the file.
    pub position: Option<Position>,
    /// What is wrong.
    pub problem: Problem,
}

/// Every problem found in a configuration file.
#[derive(Debug, thiserror::Error)]
pub struct ConfigError {
    /// The file as given on the command line.
    pub file: PathBuf,
    /// All problems, in file order.
    pub diagnostics: Vec<Diagnostic>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.diagnostics.len();
        for (i, d) in self.diagnostics.iter().enumerate() {
            write!(f, "{}", self.file.display())?;
            if let Some(p) = d.position {
                write!(f, ":{}:{}", p.line, p.column)?;
            }
            write!(f, ": {}: {}", d.path, d.problem)?;
            if i + 1 < n {
                writeln!(f)?;
            }
        }
        Ok(())
    }
}
