//! Connections to backends: how each server's `HttpPeer` is set up, and the whitelist check
//! that runs on every request before a single request byte is written.
//!
//! Pingora has no per-peer verify callback for OpenSSL. The handshake-complete hook records
//! the leaf's SPKI hash in the connection's digest; `check` reads it back in
//! `connected_to_upstream`, for new and reused connections alike, and fails closed when it is
//! missing. See docs/architecture.md.

use crate::config::{PinMode, ServerConfig, Timeouts, UpstreamTls};
use crate::tls::chain::{self, ChainKey};
use crate::tls::{Match, Miss, PathKey, Pin, PinState, Presented};
use openssl::hash::{hash, MessageDigest};
use openssl::x509::X509;
use pingora::protocols::tls::HandshakeCompleteHook;
use pingora::protocols::tls::SslDigest;
use pingora::protocols::Digest;
use pingora::tls::ssl::SslRef;
use pingora::upstreams::peer::{HttpPeer, UpstreamConnectionFilter, ALPN};
use std::any::Any;
use std::sync::Arc;

/// The HTTP version a pool speaks to its servers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpVersion {
    /// HTTP/1.1 (default).
    H1,
    /// HTTP/2 only: ALPN `h2` over TLS, prior knowledge (h2c) on plain pools.
    H2,
    /// Offer ALPN `h2,http/1.1` and use what the server picks (TLS pools only).
    Auto,
}

/// How a pool's connections carry requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UpstreamHttp {
    /// The version.
    pub version: HttpVersion,
    /// Concurrent requests (streams) per HTTP/2 connection (default 100).
    pub max_streams: usize,
}

impl Default for UpstreamHttp {
    fn default() -> UpstreamHttp {
        UpstreamHttp {
            version: HttpVersion::H1,
            max_streams: 100,
        }
    }
}

impl UpstreamHttp {
    /// Whether connections may be HTTP/2.
    pub fn may_be_h2(&self) -> bool {
        self.version != HttpVersion::H1
    }
}

/// What the handshake hook learns about the backend's certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PresentedCert {
    /// The leaf's public-key pin.
    pub pin: Pin,
    /// The leaf's `notAfter`, as OpenSSL prints it.
    pub not_after: String,
    /// The same instant as seconds since the Unix epoch.
    pub not_after_unix: Option<i64>,
    /// The pool's chain pins that the presented chain verifies up to, with their depth; empty
    /// for pools without `scope: chain` pins.
    pub path: Vec<PathKey>,
    /// Whether the leaf's name matches the server's name, where a chain pin requires it.
    pub name_ok: bool,
    /// The chain as presented, leaf first, each `subject (issuer: ...)`. Read only by the
    /// diagnostic handshake after a failed chain or name check; empty on the request path.
    pub chain: Vec<String>,
    /// Every presented certificate with its key and depth on the verified path; filled by the
    /// diagnostic handshake only (preflight's proposals, status after a failure).
    pub keys: Vec<ChainKey>,
}

impl PresentedCert {
    /// What the whitelist judges.
    pub fn presented(&self) -> Presented<'_> {
        Presented {
            leaf: self.pin,
            path: &self.path,
            name_ok: self.name_ok,
        }
    }
}

/// Why a connection to a backend is refused after the handshake.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum PinError {
    /// Neither the leaf's key nor a key on its verified chain is on the pool's whitelist.
    #[error("certificate public key not whitelisted (presented pin {0})")]
    NotWhitelisted(Pin),
    /// The key is whitelisted only by pins outside their window.
    #[error("certificate public key whitelisted only by {1} pins (presented pin {0})")]
    Inactive(Pin, PinState),
    /// A chain pin verified, but the certificate does not carry the server's name.
    #[error("chain pin matched, but the certificate's names do not match the server name (presented pin {0})")]
    NameMismatch(Pin),
    /// No leaf information was recorded for this connection (no TLS, or no certificate).
    #[error("no certificate information for this connection")]
    NoCertificate,
}

impl PinError {
    /// The `/metrics` reason this failure is counted under.
    pub fn metric(&self) -> crate::metrics::TlsFailure {
        match self {
            PinError::NotWhitelisted(_) | PinError::Inactive(..) => {
                crate::metrics::TlsFailure::NotWhitelisted
            }
            PinError::NameMismatch(_) => crate::metrics::TlsFailure::CertificateInvalid,
            PinError::NoCertificate => crate::metrics::TlsFailure::NoCertificate,
        }
    }

    /// The key the backend presented, when it presented one.
    pub fn presented_pin(&self) -> Option<Pin> {
        match self {
            PinError::NotWhitelisted(p) | PinError::Inactive(p, _) | PinError::NameMismatch(p) => {
                Some(*p)
            }
            PinError::NoCertificate => None,
        }
    }

    /// A short reason for the audit log.
    pub fn reason(&self) -> &'static str {
        match self {
            PinError::NotWhitelisted(_) => "not_whitelisted",
            PinError::Inactive(_, PinState::Staged) => "pin_staged",
            PinError::Inactive(..) => "pin_expired",
            PinError::NameMismatch(_) => "name_mismatch",
            PinError::NoCertificate => "no_certificate",
        }
    }
}

/// The hook that records every upstream leaf's pin in the TLS digest. Built once, shared.
pub fn handshake_hook() -> HandshakeCompleteHook {
    Arc::new(|ssl: &SslRef| record(ssl, false, None))
}

/// The hook of a diagnostic handshake (probes and preflight, after the chain or name check
/// failed): records the chain as well, for the operator to see what the server sends.
pub fn diagnostic_hook() -> HandshakeCompleteHook {
    Arc::new(|ssl: &SslRef| record(ssl, true, None))
}

/// What a pool with chain pins checks in its handshakes besides the leaf's key.
struct ChainCheck {
    anchors: Vec<(Pin, Option<X509>)>,
    /// The name the leaf must carry for a chain pin to match (`None`: not checked here).
    name: Option<String>,
}

/// The hook of a server of a pool with `scope: chain` pins: verifies the presented chain up
/// to each chain pin once per handshake, so reused connections cost no more than a leaf pin.
fn chain_hook(tls: &UpstreamTls, server_name: Option<&str>) -> HandshakeCompleteHook {
    // With `ca`, Pingora checks the name in the handshake itself.
    let name = (tls.verify_hostname && tls.ca.is_none())
        .then(|| server_name.map(str::to_owned))
        .flatten();
    let check = Arc::new(ChainCheck {
        anchors: tls.pins.chain_anchors(),
        name,
    });
    Arc::new(move |ssl: &SslRef| record(ssl, false, Some(&check)))
}

fn record(
    ssl: &SslRef,
    diagnostic: bool,
    chain_check: Option<&ChainCheck>,
) -> Option<Arc<dyn Any + Send + Sync>> {
    let cert = ssl.peer_certificate()?;
    let der = cert.public_key().ok()?.public_key_to_der().ok()?;
    let digest = hash(MessageDigest::sha256(), &der).ok()?;
    let pin: [u8; 32] = digest.as_ref().try_into().ok()?;
    let peer_chain = ssl.peer_cert_chain();
    let (path, name_ok) = match chain_check {
        Some(c) => (
            chain::verified_anchors(&cert, peer_chain, &c.anchors),
            c.name.as_deref().is_none_or(|n| chain::name_ok(&cert, n)),
        ),
        None => (Vec::new(), true),
    };
    let (chain, keys) = match peer_chain {
        Some(list) if diagnostic => (
            list.iter()
                .map(|c| {
                    format!(
                        "{} (issuer: {})",
                        chain::dn(c.subject_name()),
                        chain::dn(c.issuer_name())
                    )
                })
                .collect(),
            chain::describe(&cert, peer_chain),
        ),
        _ => (Vec::new(), Vec::new()),
    };
    let presented = PresentedCert {
        pin: Pin(pin),
        not_after: cert.not_after().to_string(),
        not_after_unix: unix_time(cert.not_after()),
        path,
        name_ok,
        chain,
        keys,
    };
    Some(Arc::new(presented) as Arc<dyn Any + Send + Sync>)
}

/// An ASN.1 time as seconds since the Unix epoch.
pub fn unix_time(t: &openssl::asn1::Asn1TimeRef) -> Option<i64> {
    let epoch = openssl::asn1::Asn1Time::from_unix(0).ok()?;
    let d = epoch.diff(t).ok()?;
    Some(i64::from(d.days) * 86_400 + i64::from(d.secs))
}

/// The leaf information recorded for a connection, if any.
pub fn presented(digest: Option<&Digest>) -> Option<&PresentedCert> {
    digest?
        .ssl_digest
        .as_ref()?
        .extension
        .get::<PresentedCert>()
}

/// Seconds since the Unix epoch, now.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// Checks a connection (new or reused) against the pool's whitelist at this instant (a pin
/// whose window closed refuses a pooled connection too). `Ok` for pools trusted by CA only:
/// their chain was verified during the handshake.
pub fn check(tls: &UpstreamTls, digest: Option<&Digest>) -> Result<(), PinError> {
    if tls.pins.is_empty() {
        return Ok(());
    }
    let seen = presented(digest).ok_or(PinError::NoCertificate)?;
    judge(tls, seen).map(|_| ())
}

/// The pin that accepts `seen`, or why none does.
pub fn judge(tls: &UpstreamTls, seen: &PresentedCert) -> Result<Match, PinError> {
    tls.pins
        .judge(seen.presented(), unix_now)
        .map_err(|miss| match miss {
            Miss::NotWhitelisted => PinError::NotWhitelisted(seen.pin),
            Miss::Inactive(state) => PinError::Inactive(seen.pin, state),
            Miss::NameMismatch => PinError::NameMismatch(seen.pin),
        })
}

/// The whitelist's refusal inside a connection error, when the connection was refused by the
/// filter of [`peer`] as it was established.
pub fn pin_refusal(e: &pingora::Error) -> Option<&PinError> {
    e.root_cause().downcast_ref::<PinError>()
}

/// The filter that judges a new connection of an HTTP/2-capable pinned pool before Pingora
/// pools it: an HTTP/2 connection enters the shared in-use pool as soon as it is established,
/// before `connected_to_upstream` runs, so a refused one must never get that far.
fn connection_filter(tls: &UpstreamTls) -> UpstreamConnectionFilter {
    let tls = tls.clone();
    Arc::new(move |digest: Option<&SslDigest>| {
        let seen = digest.and_then(|d| d.extension.get::<PresentedCert>());
        let verdict = match seen {
            Some(seen) => judge(&tls, seen).map(|_| ()),
            None => Err(PinError::NoCertificate),
        };
        verdict.map_err(|e| {
            pingora::Error::because(pingora::ErrorType::InvalidCert, "pinion whitelist", e)
        })
    })
}

/// Whether a failed check refuses the connection.
pub fn enforced(tls: &UpstreamTls) -> bool {
    tls.pin_mode == PinMode::Enforce
}

/// The peer template for one server; cloned for every request.
pub fn peer(
    server: &ServerConfig,
    tls: Option<&UpstreamTls>,
    (timeouts, http): (&Timeouts, &UpstreamHttp),
    group_key: u64,
    hook: &HandshakeCompleteHook,
) -> HttpPeer {
    let sni = tls
        .and_then(|t| t.sni.clone())
        .or_else(|| server.host.clone())
        .unwrap_or_default();
    let mut peer = HttpPeer::new(server.address, tls.is_some(), sni);
    let o = &mut peer.options;
    o.connection_timeout = Some(timeouts.connect);
    o.total_connection_timeout = Some(timeouts.connect);
    o.read_timeout = Some(timeouts.request);
    o.idle_timeout = Some(timeouts.idle);
    o.alpn = match (http.version, tls.is_some()) {
        (HttpVersion::H1, _) => ALPN::H1,
        (HttpVersion::H2, _) => ALPN::H2,
        (HttpVersion::Auto, true) => ALPN::H2H1,
        (HttpVersion::Auto, false) => ALPN::H1,
    };
    o.max_h2_streams = http.max_streams;
    if let Some(tls) = tls {
        if http.may_be_h2() && enforced(tls) && !tls.pins.is_empty() {
            o.upstream_connection_filter = Some(connection_filter(tls));
        }
        let verify = tls.verifies_chain();
        o.verify_cert = verify;
        o.verify_hostname = verify && tls.verify_hostname;
        o.ca = tls.ca.clone();
        o.upstream_tls_handshake_complete_hook = Some(if tls.pins.has_chain() {
            chain_hook(tls, Some(peer.sni.as_str()).filter(|s| !s.is_empty()))
        } else {
            hook.clone()
        });
        peer.client_cert_key = tls.client_certificate.clone();
        // ca, pins and the hook are not part of Pingora's reuse hash: isolate per pool policy.
        peer.group_key = group_key;
    }
    peer
}

/// A stable key for a pool's trust policy, so pooled connections are never handed to a pool
/// that would have judged the handshake differently; a reload keeps the connections and health
/// of a server only while this key stays the same.
pub fn group_key(pool_name: &str, tls: &UpstreamTls) -> u64 {
    let mut material = Vec::new();
    material.extend_from_slice(pool_name.as_bytes());
    material.push(0);
    material.extend_from_slice(tls.sni.as_deref().unwrap_or_default().as_bytes());
    material.push(0);
    if let Some(client) = &tls.client_certificate {
        for cert in std::iter::once(client.leaf()).chain(client.intermediates()) {
            if let Ok(der) = cert.to_der() {
                material.extend_from_slice(&der);
            }
        }
        if let Ok(key) = client.key().public_key_to_der() {
            material.extend_from_slice(&key);
        }
    }
    material.push(0);
    for pin in tls.pins.iter() {
        material.extend_from_slice(&pin.pin.0);
        material.push(pin.scope as u8);
        for t in [pin.not_before, pin.not_after] {
            material.extend_from_slice(&t.unwrap_or(i64::MIN).to_le_bytes());
        }
    }
    material.push(u8::from(tls.verify_hostname));
    material.push(u8::from(tls.pin_mode == PinMode::Enforce));
    for cert in tls.ca.iter().flat_map(|c| c.iter()) {
        if let Ok(der) = cert.to_der() {
            material.extend_from_slice(&der);
        }
    }
    let digest = hash(MessageDigest::sha256(), &material)
        .map(|d| d.to_vec())
        .unwrap_or_default();
    digest
        .get(..8)
        .and_then(|b| <[u8; 8]>::try_from(b).ok())
        .map_or(0, u64::from_le_bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::Whitelist;

    fn tls(pins: Vec<Pin>) -> UpstreamTls {
        UpstreamTls {
            sni: None,
            pins: Whitelist::of_leaves(pins),
            warn_days: 14,
            pin_mode: PinMode::Enforce,
            ca: None,
            verify_hostname: true,
            client_certificate: None,
        }
    }

    #[test]
    fn pinned_pool_without_certificate_information_fails_closed() {
        assert_eq!(
            check(&tls(vec![Pin([1; 32])]), None),
            Err(PinError::NoCertificate)
        );
    }

    #[test]
    fn a_missing_certificate_is_counted_under_its_own_reason() {
        use crate::metrics::TlsFailure;
        assert_eq!(PinError::NoCertificate.metric(), TlsFailure::NoCertificate);
        assert_eq!(
            PinError::NotWhitelisted(Pin([1; 32])).metric(),
            TlsFailure::NotWhitelisted
        );
    }

    #[test]
    fn ca_only_pool_needs_no_pin() {
        assert_eq!(check(&tls(vec![]), None), Ok(()));
    }

    #[test]
    fn group_keys_differ_by_pool_and_pins() {
        let a = group_key("a", &tls(vec![Pin([1; 32])]));
        assert_eq!(a, group_key("a", &tls(vec![Pin([1; 32])])));
        assert_ne!(a, group_key("b", &tls(vec![Pin([1; 32])])));
        assert_ne!(a, group_key("a", &tls(vec![Pin([2; 32])])));
    }
}
