//! The proxy service's application around Pingora's: PROXY headers read on plain listeners
//! first, every client connection counted, HTTP/1.1 keep-alive served by a loop that holds
//! nothing but the socket while a client is idle, and idle connections kept open until the
//! drain lets them go.
//!
//! Pingora's own keep-alive loop creates the next request's session, its 4 KiB header buffer
//! and the whole boxed request future before the next request has sent a byte, and keeps them
//! for as long as the client stays idle: about 14 KB per idle connection, more than nginx
//! needs for all of one. Here the next session exists only once its first bytes are read.

use super::caps::Caps;
use super::client_auth::Refusal;
use super::proxy_protocol::ProxyProtocolGate;
use super::ClientGate;
use crate::gateway::Gateway;
use crate::proxy::CLIENT_IDLE_TIMEOUT;
use crate::server::drain::Closer;
use async_trait::async_trait;
use bytes::BytesMut;
use log::debug;
use pingora::apps::{HttpPersistentSettings, HttpServerApp, ServerApp};
use pingora::protocols::http::ServerSession;
use pingora::protocols::{Stream, ALPN};
use pingora::server::ShutdownWatch;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncReadExt;
use tokio::time::{Instant, Sleep};

/// How much of an idle connection's next request is read to learn that it has begun: most
/// request heads fit, and it stays small because the connection's future holds it while idle.
const FIRST_READ: usize = 512;
/// The header buffer a request is parsed in (Pingora's initial size, larger than
/// [`FIRST_READ`]; it grows when needed).
const HEADER_BUFFER: usize = 4096;
/// Pingora's keep-alive for a connection's first request; `proxy` caps it per request.
const FIRST_KEEPALIVE_SECONDS: u64 = 60;
const _: () = assert!(HEADER_BUFFER >= FIRST_READ);

/// The proxy service's application: `app` behind PROXY headers, counting and keep-alive.
pub struct Front<A> {
    app: Arc<A>,
    gate: ProxyProtocolGate,
    closer: Closer,
    caps: Caps,
    gw: Arc<Gateway>,
}

impl<A> Front<A> {
    /// Wraps `app`.
    pub fn new(
        app: A,
        gate: ProxyProtocolGate,
        closer: Closer,
        caps: Caps,
        gw: Arc<Gateway>,
    ) -> Front<A> {
        Front {
            app: Arc::new(app),
            gate,
            closer,
            caps,
            gw,
        }
    }
}

impl<A: HttpServerApp + Send + Sync + 'static> Front<A> {
    /// Serves one HTTP/1.x connection, request after request, as Pingora's loop does, except
    /// that between requests only the socket is kept.
    async fn serve_http1(&self, stream: Stream, shutdown: &ShutdownWatch) {
        let mut session = ServerSession::new_http1(stream);
        session.set_keepalive((!*shutdown.borrow()).then_some(FIRST_KEEPALIVE_SECONDS));
        session.set_keepalive_reuses_remaining(
            self.app
                .server_options()
                .and_then(|o| o.keepalive_request_limit),
        );
        let mut reused = self.app.process_new_http(session, shutdown).await;
        // Made at the connection's first wait and re-armed for each later one (see IdleWait).
        let mut idle = None;
        while let Some(done) = reused {
            let (mut stream, mut settings) = done.consume();
            let pipelined = settings
                .as_mut()
                .and_then(HttpPersistentSettings::take_pipelined_prefix)
                .filter(|bytes| !bytes.is_empty());
            let first = match pipelined {
                Some(bytes) => bytes,
                None => {
                    let idle_seconds = settings
                        .as_ref()
                        .and_then(HttpPersistentSettings::keepalive_timeout);
                    let wait =
                        idle.get_or_insert_with(|| IdleWait::new(self.closer.idle_closing()));
                    match wait.next_request(&mut stream, idle_seconds).await {
                        Some(bytes) => bytes,
                        None => return,
                    }
                }
            };
            let mut session = ServerSession::new_http1(stream);
            if let Some(settings) = settings {
                settings.apply_to_session(&mut session);
            }
            session.set_pipelined_prefix(first);
            reused = self.app.process_new_http(session, shutdown).await;
        }
    }
}

/// What a connection waiting for its next request waits on besides the socket: the keep-alive
/// timer and the drain's signal, made once per connection and re-armed for each wait (a later
/// deadline is one atomic store in tokio's timer). Made per wait, the timer and the
/// subscription were each registered and removed under a shared lock on every request. Boxed:
/// kept in the connection's future they made every idle connection 0.7-0.85 KB larger
/// (benches/idle_clients.py, 3,000 and 8,000 connections).
struct IdleWait<C> {
    timer: Pin<Box<Sleep>>,
    closing: Pin<Box<C>>,
}

impl<C: Future<Output = ()>> IdleWait<C> {
    fn new(closing: C) -> Self {
        IdleWait {
            timer: Box::pin(tokio::time::sleep(CLIENT_IDLE_TIMEOUT)),
            closing: Box::pin(closing),
        }
    }

    /// Waits, holding only the socket, for the first bytes of the connection's next request;
    /// `None` when the client closes, the keep-alive time passes or the drain closes idle
    /// connections.
    async fn next_request(
        &mut self,
        stream: &mut Stream,
        idle_seconds: Option<u64>,
    ) -> Option<BytesMut> {
        let idle = match idle_seconds {
            Some(seconds) if seconds > 0 => Duration::from_secs(seconds),
            _ => CLIENT_IDLE_TIMEOUT,
        };
        self.timer.as_mut().reset(Instant::now() + idle);
        let mut first = [0u8; FIRST_READ];
        let read = tokio::select! {
            biased;
            read = stream.read(&mut first) => read,
            () = self.closing.as_mut() => {
                debug!("closing idle connection {}: the process is leaving", stream.id());
                return None;
            }
            () = self.timer.as_mut() => {
                debug!("idle connection {} reached its keep-alive time", stream.id());
                return None;
            }
        };
        match read {
            Ok(n) if n > 0 => {
                let mut bytes = BytesMut::with_capacity(HEADER_BUFFER);
                bytes.extend_from_slice(first.get(..n)?);
                Some(bytes)
            }
            Ok(_) => None,
            Err(e) => {
                debug!("idle connection {} failed: {e}", stream.id());
                None
            }
        }
    }
}

#[async_trait]
impl<A: HttpServerApp + Send + Sync + 'static> ServerApp for Front<A> {
    async fn process_new(
        self: &Arc<Self>,
        mut stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let _counted = self.closer.connection();
        let digest = stream.get_ssl_digest();
        let tls = digest.is_some();
        // A client that `client_auth: require` refused after its handshake (a resumed session
        // skips the certificate exchange) is closed before anything is read.
        let gate = digest
            .as_ref()
            .and_then(|d| d.extension.get::<ClientGate>());
        if gate.is_some_and(|g| !g.admit) {
            return None;
        }
        // TLS streams had their header read before the handshake (PreTlsProcess).
        if !tls && self.gate.expects(stream.get_socket_digest()) {
            let fd = stream.id();
            if let Err(e) = self.gate.accept(&mut *stream, fd).await {
                debug!("closing connection: {e}");
                return None;
            }
        }
        // After the PROXY header, whose address is the client's.
        let (local, client) = super::caps::addresses(stream.get_socket_digest().as_deref());
        let Ok(_admitted) = self.caps.admit(local, client) else {
            return None;
        };
        let options = self.app.server_options();
        let h2c = !tls && options.is_some_and(|o| o.h2c);
        let custom = options.is_some_and(|o| o.force_custom);
        let alpn = stream.selected_alpn_proto();
        if h2c || custom || matches!(alpn, Some(ALPN::H2) | Some(ALPN::Custom(_))) {
            // HTTP/2 (and anything else) is Pingora's own loop.
            return self.app.process_new(stream, shutdown).await;
        }
        self.serve_http1(stream, shutdown).await;
        None
    }

    fn tls_handshake_failed(&self, listen: &str, error: &pingora::Error) {
        // OpenSSL refuses a client that sends no certificate to a `client_auth: require`
        // listener itself, before pinion's check runs: this is where pinion learns of it.
        if !error
            .to_string()
            .contains("peer did not return a certificate")
        {
            return;
        }
        let gen = self.gw.current();
        let listener = listen.parse().ok().and_then(|a| gen.binds.lookup(a));
        if let Some(l) = listener {
            gen.metrics.client_auth_failure(l, Refusal::NoCertificate);
        }
    }

    async fn cleanup(&self) {
        // Pingora calls this when it stops accepting; the wrapped proxy then drops every idle
        // keep-alive connection at once. Clients still get the grace period to use them.
        self.closer.wait_for_idle_close().await;
        self.closer.close_idle();
        self.app.http_cleanup().await;
    }
}
