//! Listeners: the sockets pinion accepts on, their client-facing TLS, and which listener a
//! connection arrived on.

pub mod caps;
pub mod cidr;
pub mod client_auth;
pub mod front;
pub mod proxy_protocol;

pub use cidr::Cidr;

use crate::config::{CertKeyFiles, Listener, ListenerTls, TlsVersion};
use crate::gateway::{Gateway, Generation};
use crate::tls::name_matches;
use async_trait::async_trait;
use log::warn;
use openssl::error::ErrorStack;
use openssl::ssl::{select_next_proto, AlpnError, ClientHelloResponse, SslAlert};
use pingora::listeners::tls::TlsSettings;
use pingora::listeners::{ListenerConfig, TlsAccept};
use pingora::protocols::l4::stream::L4BufferSettings;
use pingora::services::listening::Service;
use pingora::tls::ext::{ssl_add_chain_cert, ssl_use_certificate, ssl_use_private_key};
use pingora::tls::ssl::{NameType, SslRef};
use pingora::tls::ssl::{SslMode, SslVersion};
use std::net::SocketAddr;
use std::sync::Arc;

/// Errors setting up a listener's sockets or TLS.
#[derive(Debug, thiserror::Error)]
pub enum ListenerError {
    /// OpenSSL could not create the socket's TLS acceptor.
    #[error("listener {listener}: cannot set up TLS: {source}")]
    Tls {
        listener: String,
        source: Box<pingora::Error>,
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

/// Adds every listener's sockets to the proxy service. TLS settings are read from the
/// generation serving at each handshake, so a reload in place changes certificates, versions,
/// ciphers and ALPN for every connection that starts after it.
pub fn add_all<A>(
    service: &mut Service<A>,
    listeners: &[Listener],
    gw: &Arc<Gateway>,
) -> Result<(), ListenerError> {
    for l in listeners {
        for bind in &l.binds {
            let addr = bind.to_string();
            let endpoint = ListenerConfig::tcp(addr).l4_buffer(L4_BUFFER);
            match &l.tls {
                Some(_) => service.add_listener(endpoint.tls(settings(&l.name, *bind, gw)?)),
                None => service.add_listener(endpoint),
            }
        }
    }
    Ok(())
}

/// Client sockets are read without Pingora's socket read buffer (64 KiB by default): that
/// buffer lives as long as the connection, idle or not, and was the largest part of an idle
/// keep-alive client's memory (docs/benchmarks.md). TLS reads go through OpenSSL's record
/// buffer instead, which reads ahead (one syscall for many records) and is given back while
/// the connection is idle; plain HTTP reads go straight into the request's header buffer.
const L4_BUFFER: L4BufferSettings = L4BufferSettings {
    read: Some(0),
    write: None,
};

/// TLS 1.2 ciphers when a listener names none: Mozilla's "intermediate" (version 5) list.
const INTERMEDIATE_CIPHERS: &str = "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:\
ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:\
ECDHE-RSA-CHACHA20-POLY1305:DHE-RSA-AES128-GCM-SHA256:DHE-RSA-AES256-GCM-SHA384";

/// OpenSSL acceptor settings for one TLS socket. Nothing of the listener's TLS configuration
/// is fixed here: the client-hello callback sets versions and ciphers, the certificate
/// callback installs the certificate SNI selects, and the ALPN callback offers h2 or not, each
/// from the generation serving when the handshake starts.
fn settings(
    listener: &str,
    bind: SocketAddr,
    gw: &Arc<Gateway>,
) -> Result<TlsSettings, ListenerError> {
    let live = LiveTls {
        gw: gw.clone(),
        bind,
    };
    let mut s = TlsSettings::with_callbacks(Box::new(live.clone())).map_err(|source| {
        ListenerError::Tls {
            listener: listener.to_owned(),
            source,
        }
    })?;
    let hello = live.clone();
    s.set_client_hello_callback(move |ssl, alert| hello.client_hello(ssl, alert));
    let alpn = live;
    s.set_alpn_select_callback(move |ssl, offered| alpn.select_alpn(ssl, offered));
    // Idle connections give their TLS record buffers back (about 34 KiB each); with no socket
    // buffer in front of OpenSSL, reading ahead keeps it at one read syscall per burst.
    s.set_mode(SslMode::RELEASE_BUFFERS);
    s.set_read_ahead(true);
    Ok(s)
}

/// What [`front`] learns of a client-certificate listener's handshake: whether the connection
/// may go on (with `require`, only a verified client), and who the client is.
#[derive(Debug)]
pub struct ClientGate {
    /// The connection may be served.
    pub admit: bool,
    /// Backends are told who the client is (`client_auth.headers`).
    pub headers: bool,
    /// ... in `X-Forwarded-Client-Cert` too (`client_auth.xfcc`).
    pub xfcc: bool,
    /// The client's certificate and its verdict.
    pub identity: client_auth::ClientIdentity,
}

/// One TLS socket's view of the live configuration.
#[derive(Clone)]
struct LiveTls {
    gw: Arc<Gateway>,
    bind: SocketAddr,
}

impl LiveTls {
    /// Counts client-certificate refusals on this socket's listener in `gen`'s metrics.
    fn reporter(&self, gen: &Arc<Generation>) -> client_auth::Report {
        let gen = gen.clone();
        let listener = gen.binds.lookup(self.bind);
        Arc::new(move |why| {
            if let Some(l) = listener {
                gen.metrics.client_auth_failure(l, why);
            }
        })
    }

    /// The TLS settings of the listener owning this socket, in `gen`.
    fn of<'g>(&self, gen: &'g Generation) -> Option<&'g ListenerTls> {
        let i = gen.binds.lookup(self.bind)?;
        gen.listeners.get(i)?.tls.as_ref()
    }

    fn client_hello(
        &self,
        ssl: &mut SslRef,
        alert: &mut SslAlert,
    ) -> Result<ClientHelloResponse, ErrorStack> {
        let gen = self.gw.current();
        let Some(tls) = self.of(&gen) else {
            *alert = SslAlert::HANDSHAKE_FAILURE;
            return Err(ErrorStack::get());
        };
        ssl.set_min_proto_version(Some(version(tls.min_version)))?;
        ssl.set_max_proto_version(Some(version(tls.max_version)))?;
        ssl.set_cipher_list(tls.ciphers.as_deref().unwrap_or(INTERMEDIATE_CIPHERS))?;
        Ok(ClientHelloResponse::SUCCESS)
    }

    fn select_alpn<'a>(&self, _ssl: &mut SslRef, offered: &'a [u8]) -> Result<&'a [u8], AlpnError> {
        let gen = self.gw.current();
        let h2 = self.of(&gen).is_some_and(|t| t.http2);
        let ours: &[u8] = if h2 {
            b"\x02h2\x08http/1.1"
        } else {
            b"\x08http/1.1"
        };
        select_next_proto(ours, offered).ok_or(AlpnError::NOACK)
    }
}

/// The certificate whose names cover the client's SNI (exact names first, then wildcards),
/// else the first.
fn pick<'c>(certificates: &'c [CertKeyFiles], sni: Option<&str>) -> Option<&'c CertKeyFiles> {
    let host = sni.map(|s| s.trim_end_matches('.').to_ascii_lowercase());
    let by = |wild: bool| {
        let host = host.as_deref()?;
        certificates.iter().find(|c| {
            c.names
                .iter()
                .any(|n| n.starts_with("*.") == wild && name_matches(n, host))
        })
    };
    by(false)
        .or_else(|| by(true))
        .or_else(|| certificates.first())
}

#[async_trait]
impl TlsAccept for LiveTls {
    async fn certificate_callback(&self, ssl: &mut SslRef) {
        let gen = self.gw.current();
        let Some(tls) = self.of(&gen) else { return };
        let sni = ssl.servername(NameType::HOST_NAME).map(str::to_owned);
        let Some(chosen) = pick(&tls.certificates, sni.as_deref()) else {
            return;
        };
        // The host name's own policy, else the listener's. The verify mode is set before
        // anything can fail: a client is never let in unchecked.
        if let Some(auth) = chosen.client_auth.as_ref().or(tls.client_auth.as_ref()) {
            let report = self.reporter(&gen);
            if let Err(e) = auth.apply(ssl, report) {
                warn!("cannot set up client certificate checks: {e}; clients are refused");
            }
        }
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

    async fn handshake_complete_callback(
        &self,
        ssl: &SslRef,
    ) -> Option<Arc<dyn std::any::Any + Send + Sync>> {
        let gen = self.gw.current();
        let tls = self.of(&gen)?;
        let chosen = pick(&tls.certificates, ssl.servername(NameType::HOST_NAME));
        let auth = chosen
            .and_then(|c| c.client_auth.as_ref())
            .or(tls.client_auth.as_ref())?;
        let identity = auth.identify(ssl);
        let require = auth.mode == client_auth::ClientAuthMode::Require;
        if let Some(why) = identity.refusal {
            // Without a certificate, a client of an `optional` listener has not failed.
            if require || identity.certificate.is_some() {
                (self.reporter(&gen))(why);
            }
            if require {
                log::info!("client refused after its handshake: {}", why.label());
            }
        }
        Some(Arc::new(ClientGate {
            admit: !require || identity.verified(),
            headers: auth.headers,
            xfcc: auth.xfcc,
            identity,
        }))
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
            limits: Default::default(),
            rate_limit: None,
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
