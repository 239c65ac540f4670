//! The floor of the load benchmark: the smallest Pingora proxy doing the same job as pinion
//! (TLS in, TLS 1.3, one fixed TLS backend with keep-alive, X-Forwarded-For), without
//! pinion's routing, pin check, metrics or header handling. `benches/load.sh` runs it beside
//! pinion to show which part of the cost is Pingora's and OpenSSL's.
//!
//! `cargo run --release --example pingora_floor -- LISTEN_PORT BACKEND_PORT CERT KEY`

use async_trait::async_trait;
use pingora::proxy::{http_proxy_service, ProxyHttp, Session};
use pingora::server::configuration::ServerConf;
use pingora::server::Server;
use pingora::upstreams::peer::HttpPeer;
use std::sync::Arc;

struct Floor {
    peer: HttpPeer,
}

#[async_trait]
impl ProxyHttp for Floor {
    type CTX = ();
    fn new_ctx(&self) {}

    async fn upstream_peer(&self, _s: &mut Session, _c: &mut ()) -> pingora::Result<Box<HttpPeer>> {
        Ok(Box::new(self.peer.clone()))
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        req: &mut pingora::http::RequestHeader,
        _c: &mut (),
    ) -> pingora::Result<()> {
        if let Some(ip) = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip())
        {
            req.insert_header("X-Forwarded-For", ip.to_string())?;
        }
        Ok(())
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let (listen, backend, cert, key, threads) = match args.as_slice() {
        [_, l, b, c, k] => (l, b, c, k, 1),
        [_, l, b, c, k, t] => (l, b, c, k, t.parse()?),
        _ => return Err("usage: pingora_floor LISTEN_PORT BACKEND_PORT CERT KEY [THREADS]".into()),
    };
    let conf = ServerConf {
        threads,
        pid_file: format!("/tmp/pingora_floor_{listen}.pid"),
        upgrade_sock: format!("/tmp/pingora_floor_{listen}.sock"),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    let backend: std::net::SocketAddr = format!("127.0.0.1:{backend}").parse()?;
    let mut peer = HttpPeer::new(backend, true, "backend.local".to_owned());
    // The backend's certificate is the trusted root, as for nginx and HAProxy.
    let ca = openssl::x509::X509::stack_from_pem(&std::fs::read(format!(
        "{}/backend.pem",
        std::path::Path::new(cert)
            .parent()
            .map_or(".".into(), |p| p.display().to_string())
    ))?)?;
    peer.options.ca = Some(Arc::new(ca.into_boxed_slice()));
    let mut service = http_proxy_service(&server.configuration, Floor { peer });
    let mut tls = pingora::listeners::tls::TlsSettings::intermediate(cert, key)?;
    tls.set_min_proto_version(Some(pingora::tls::ssl::SslVersion::TLS1_3))?;
    service.add_tls_with_settings(&format!("127.0.0.1:{listen}"), None, tls);
    server.add_service(service);
    server.run_forever()
}
