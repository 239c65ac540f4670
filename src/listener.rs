//! Listeners: the sockets pinion accepts on, their client-facing TLS, and which listener a
//! connection arrived on.

pub mod cidr;
pub mod proxy_protocol;

pub use cidr::Cidr;

use crate::config::{CertKeyFiles, Listener, ListenerTls, TlsVersion};
use crate::tls::name_matches;
use async_trait::async_trait;
use log::warn;
use pingora::listeners::tls::TlsSettings;
use pingora::listeners::{ListenerConfig, TlsAccept};
use pingora::protocols::l4::stream::L4BufferSettings;
use pingora::services::listening::Service;
use pingora::tls::ext::{ssl_add_chain_cert, ssl_use_certificate, ssl_use_private_key};
use pingora::tls::ssl::{NameType, SslRef};
use pingora::tls::ssl::{SslMode, SslVersion};
use std::net::SocketAddr;

/// Errors setting up a listener's sockets or TLS.
#[derive(Debug, thiserror::Error)]
pub enum ListenerError {
    /// The certificate or key could not be loaded into OpenSSL.
    #[error("listener {listener}: cannot load certificate {cert}: {source}")]
    Certificate {
        listener: String,
        cert: String,
        source: Box<pingora::Error>,
    },
    /// OpenSSL refused a TLS setting.
    #[error("listener {listener}: {what}: {source}")]
    Setting {
        listener: String,
        what: &'static str,
        source: openssl::error::ErrorStack,
    },
}

/// Finds the listener of a connection from the local address it arrived on.
#[derive(Debug, Clone, Default)]
pub struct BindIndex(Vec<(SocketAddr, usize)>);

impl BindIndex {
    /// Indexes every bind address of every listener.
    pub fn new(listeners: &[Listener]) -> BindIndex {
        BindIndex::of(listeners, |_| true)
    }

    /// Indexes the bind addresses of the listeners that `include` selects.
    pub fn of(listeners: &[Listener], include: impl Fn(&Listener) -> bool) -> BindIndex {
        BindIndex(
            listeners
                .iter()
                .enumerate()
                .filter(|(_, l)| include(l))
                .flat_map(|(i, l)| l.binds.iter().map(move |b| (*b, i)))
                .collect(),
        )
    }

    /// Whether no address is indexed.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The listener that owns `local`: an exact bind first, then a wildcard bind on its port.
    pub fn lookup(&self, local: SocketAddr) -> Option<usize> {
        let local = canonical(local);
        self.0
            .iter()
            .find(|(b, _)| *b == local)
            .or_else(|| {
                self.0
                    .iter()
                    .find(|(b, _)| b.ip().is_unspecified() && b.port() == local.port())
            })
            .map(|(_, i)| *i)
    }
}

/// IPv4-mapped IPv6 addresses (from a `[::]` socket) as plain IPv4.
fn canonical(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(v4.into(), v6.port()),
            None => addr,
        },
        v4 => v4,
    }
}

/// Adds every listener's sockets to the proxy service.
pub fn add_all<A>(service: &mut Service<A>, listeners: &[Listener]) -> Result<(), ListenerError> {
    for l in listeners {
        for bind in &l.binds {
            let addr = bind.to_string();
            let endpoint = ListenerConfig::tcp(addr).l4_buffer(L4_BUFFER);
            match &l.tls {
                Some(tls) => service.add_listener(endpoint.tls(settings(&l.name, tls)?)),
                None => service.add_listener(endpoint),
            }
        }
    }
    Ok(())
}

/// Client sockets read through a 16 KiB buffer, one full TLS record, instead of Pingora's
/// 64 KiB: the buffer lives as long as the connection, and 48 KiB less of it per idle
/// keep-alive client is most of a connection's memory (docs/benchmarks.md).
const L4_BUFFER: L4BufferSettings = L4BufferSettings {
    read: Some(16 * 1024),
    write: None,
};

/// OpenSSL acceptor settings for one TLS listener. One certificate is configured on the
/// context; several are chosen per handshake by SNI.
fn settings(listener: &str, tls: &ListenerTls) -> Result<TlsSettings, ListenerError> {
    let first = tls.certificates.first();
    let (cert, key) = first
        .map(|c| (c.cert.display().to_string(), c.key.display().to_string()))
        .unwrap_or_default();
    let built = if tls.certificates.len() > 1 {
        TlsSettings::with_callbacks(Box::new(SniCertificates(tls.certificates.clone())))
    } else {
        TlsSettings::intermediate(&cert, &key)
    };
    let mut s = built.map_err(|source| ListenerError::Certificate {
        listener: listener.to_owned(),
        cert: cert.clone(),
        source,
    })?;
    let setting = |what| {
        move |source| ListenerError::Setting {
            listener: listener.to_owned(),
            what,
            source,
        }
    };
    s.set_min_proto_version(Some(version(tls.min_version)))
        .map_err(setting("min_version"))?;
    s.set_max_proto_version(Some(version(tls.max_version)))
        .map_err(setting("max_version"))?;
    if let Some(ciphers) = &tls.ciphers {
        s.set_cipher_list(ciphers).map_err(setting("ciphers"))?;
    }
    if tls.http2 {
        s.enable_h2();
    }
    // Idle connections give their TLS record buffers back (about 34 KiB each).
    s.set_mode(SslMode::RELEASE_BUFFERS);
    Ok(s)
}

/// Several certificates on one listener: the one whose names cover the client's SNI (exact
/// names first, then wildcards), else the first.
struct SniCertificates(Vec<CertKeyFiles>);

impl SniCertificates {
    fn pick(&self, sni: Option<&str>) -> Option<&CertKeyFiles> {
        let host = sni.map(|s| s.trim_end_matches('.').to_ascii_lowercase());
        let by = |wild: bool| {
            let host = host.as_deref()?;
            self.0.iter().find(|c| {
                c.names
                    .iter()
                    .any(|n| n.starts_with("*.") == wild && name_matches(n, host))
            })
        };
        by(false).or_else(|| by(true)).or_else(|| self.0.first())
    }
}

#[async_trait]
impl TlsAccept for SniCertificates {
    async fn certificate_callback(&self, ssl: &mut SslRef) {
        let sni = ssl.servername(NameType::HOST_NAME).map(str::to_owned);
        let Some(chosen) = self.pick(sni.as_deref()) else {
            return;
        };
        let Some((leaf, intermediates)) = chosen.chain.split_first() else {
            return;
        };
        let installed = ssl_use_certificate(ssl, leaf)
            .and_then(|()| ssl_use_private_key(ssl, &chosen.private_key))
            .and_then(|()| {
                intermediates
                    .iter()
                    .try_for_each(|c| ssl_add_chain_cert(ssl, c))
            });
        if let Err(e) = installed {
            // The handshake then fails for want of a certificate; nothing else to do here.
            warn!("cannot install certificate {}: {e}", chosen.cert.display());
        }
    }
}

fn version(v: TlsVersion) -> SslVersion {
    match v {
        TlsVersion::V1_2 => SslVersion::TLS1_2,
        TlsVersion::V1_3 => SslVersion::TLS1_3,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listener(binds: &[&str]) -> Listener {
        Listener {
            name: "l".into(),
            binds: binds.iter().map(|b| b.parse().unwrap()).collect(),
            tls: None,
            redirect_to_https: None,
            error_pages: Default::default(),
            proxy_protocol: false,
            trusted_proxies: Vec::new(),
            forwarded_for: crate::config::ForwardedFor::Ip,
        }
    }

    #[test]
    fn exact_binds_win_over_wildcards() {
        let idx = BindIndex::new(&[listener(&["0.0.0.0:443"]), listener(&["127.0.0.1:8443"])]);
        assert_eq!(idx.lookup("10.1.2.3:443".parse().unwrap()), Some(0));
        assert_eq!(idx.lookup("127.0.0.1:8443".parse().unwrap()), Some(1));
        assert_eq!(idx.lookup("127.0.0.1:9999".parse().unwrap()), None);
    }

    #[test]
    fn mapped_ipv4_addresses_find_their_listener() {
        let idx = BindIndex::new(&[listener(&["127.0.0.1:8443"])]);
        assert_eq!(
            idx.lookup("[::ffff:127.0.0.1]:8443".parse().unwrap()),
            Some(0)
        );
    }
}
