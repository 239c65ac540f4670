//! Active health probes: one task per server, so a slow or hanging server never delays the
//! probes of others or any request. A probe makes the same TLS checks as a request (chain and
//! name per trust mode, then the pin), then sends `GET path` and checks status and body.

use super::health::Transition;
use super::{Pool, Server};
use crate::config::{PinMode, Probe};
use crate::gateway::Gateway;
use crate::upstream::{self, PinError, PresentedCert};
use async_trait::async_trait;
use log::{info, warn};
use pingora::connectors::http::Connector;
use pingora::connectors::TransportConnector;
use pingora::http::RequestHeader;
use pingora::protocols::http::client::HttpSession;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;

/// Most bytes of a probe response body searched for `body_contains`.
const BODY_LIMIT: usize = 64 * 1024;

/// The background service that probes every server of every pool with a probe, in the
/// configuration generation serving now: a reload stops the probes of the old generation and
/// starts those of the new one (servers it kept keep their health and thresholds' counts); a
/// server that joins a pool while running is probed at once, one that leaves is no longer.
pub struct Prober {
    gw: Arc<Gateway>,
}

impl Prober {
    /// A prober over the gateway's pools.
    pub fn new(gw: Arc<Gateway>) -> Prober {
        Prober { gw }
    }
}

#[async_trait]
impl BackgroundService for Prober {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let connector = Arc::new(Connector::new(None));
        let mut generations = self.gw.subscribe();
        let mut members = self.gw.subscribe_servers();
        let mut running: Vec<(Arc<Server>, JoinHandle<()>)> = Vec::new();
        loop {
            let gen = self.gw.current();
            let mut next = Vec::new();
            for (p, pool) in gen.pools.iter().enumerate() {
                if pool.probe.is_none() {
                    continue;
                }
                for server in pool.servers().iter() {
                    if let Some(i) = running.iter().position(|(s, _)| Arc::ptr_eq(s, server)) {
                        next.push(running.swap_remove(i));
                        continue;
                    }
                    let (gen, server, connector) = (gen.clone(), server.clone(), connector.clone());
                    let task = tokio::spawn({
                        let server = server.clone();
                        async move { probe_loop(&gen.pools, p, &server, &connector).await }
                    });
                    next.push((server, task));
                }
            }
            for (_, task) in running.drain(..) {
                task.abort();
            }
            running = next;
            let stop = tokio::select! {
                _ = shutdown.changed() => true,
                changed = generations.changed() => changed.is_err(),
                changed = members.changed() => changed.is_err(),
            };
            if stop {
                for (_, task) in running {
                    task.abort();
                }
                return;
            }
        }
    }
}

async fn probe_loop(pools: &[Pool], p: usize, server: &Server, connector: &Connector) {
    let Some(pool) = pools.get(p) else { return };
    let Some(probe) = pool.probe.as_ref() else {
        return;
    };
    loop {
        probe_and_record(pool, server, connector).await;
        tokio::time::sleep(probe.interval).await;
    }
}

/// Probes `server` once (when the pool has a probe), records the result in its health and
/// logs a change of rotation state.
pub(super) async fn probe_and_record(pool: &Pool, server: &Server, connector: &Connector) {
    let Some(probe) = pool.probe.as_ref() else {
        return;
    };
    let result =
        match tokio::time::timeout(probe.timeout, probe_once(pool, server, probe, connector)).await
        {
            Ok(r) => r,
            Err(_) => Err(format!(
                "probe timed out after {}s",
                probe.timeout.as_secs()
            )),
        };
    let transition = server.health.record(
        result.clone(),
        probe.unhealthy_threshold,
        probe.healthy_threshold,
    );
    match (transition, result) {
        (Some(Transition::Down), Err(reason)) => warn!(
            "pool {} server {}: unhealthy after {} failed probe(s): {reason}",
            pool.name, server.label, probe.unhealthy_threshold
        ),
        (Some(Transition::Up), _) => info!(
            "pool {} server {}: healthy again after {} successful probe(s)",
            pool.name, server.label, probe.healthy_threshold
        ),
        (Some(Transition::Joined), _) => info!(
            "pool {} server {}: in rotation, its first probe passed",
            pool.name, server.label
        ),
        (None, Err(reason)) if !server.health.is_healthy() => {
            // A new address failing its first probes stays out; say why once per reason.
            log::debug!("pool {} server {}: {reason}", pool.name, server.label);
        }
        _ => {}
    }
}

/// Opens a fresh connection to `server` with the pool's TLS settings and makes the trust checks
/// (chain and name in the handshake, then the pin); records the certificate it presented.
/// `Err` carries the reason shown in logs, status and preflight.
pub async fn connect_and_check(
    pool: &Pool,
    server: &Server,
    connector: &Connector,
) -> Result<(HttpSession, Option<PresentedCert>), String> {
    let mut peer = server.peer.clone();
    // A fresh connection every time, never one from the request pool (one stream per HTTP/2
    // connection keeps it out of the connector's shared pool).
    peer.options.idle_timeout = Some(Duration::ZERO);
    peer.options.max_h2_streams = 1;
    let session = match connector.get_http_session(&peer).await {
        Ok((session, _)) => session,
        Err(e) => {
            if let Some(refusal) = upstream::pin_refusal(&e) {
                // Refused by the whitelist as the connection was made (HTTP/2 pools).
                super::pins::refused(pool, &server.label, refusal);
                if let Some(cert) = diagnose(server, connector).await {
                    server.health.presented(&cert);
                }
                return Err(refusal.to_string());
            }
            if *e.etype() == pingora::ErrorType::InvalidCert {
                // The handshake was refused before pinion could record the certificate; the
                // operator still needs to see which key and chain the server presents.
                if let Some(cert) = diagnose(server, connector).await {
                    server.health.presented(&cert);
                }
            }
            return Err(format!("{}{}", e.etype().as_str(), detail(&e)));
        }
    };
    let seen = upstream::presented(session.digest()).cloned();
    if let Some(cert) = &seen {
        server.health.presented(cert);
    }
    if let Some(tls) = &pool.tls {
        match upstream::check(tls, session.digest()) {
            Ok(()) => {}
            Err(e) => {
                super::pins::refused(pool, &server.label, &e);
                if tls.pin_mode == PinMode::Report && e != PinError::NoCertificate {
                    warn!(
                        "pool {} server {}: {e} (pin_mode: report)",
                        pool.name, server.label
                    );
                } else {
                    return Err(e.to_string());
                }
            }
        }
    }
    Ok((session, seen))
}

/// What a server presents (its whole chain, each key with its depth), read by a handshake that
/// verifies nothing: after its chain or name failed verification, and for pin proposals. Only
/// TCP and TLS: the connection is closed without an application byte written (no HTTP/2
/// preface either).
pub async fn diagnose(server: &Server, _connector: &Connector) -> Option<PresentedCert> {
    static TRANSPORT: std::sync::OnceLock<TransportConnector> = std::sync::OnceLock::new();
    let transport = TRANSPORT.get_or_init(|| TransportConnector::new(None));
    let mut peer = server.peer.clone();
    peer.options.idle_timeout = Some(Duration::ZERO);
    peer.options.upstream_connection_filter = None;
    peer.options.verify_cert = false;
    peer.options.verify_hostname = false;
    peer.options.upstream_tls_handshake_complete_hook = Some(upstream::diagnostic_hook());
    let stream = transport.new_stream(&peer).await.ok()?;
    let digest = stream.get_ssl_digest()?;
    digest.extension.get::<PresentedCert>().cloned()
}

/// One probe; `Err` carries the reason shown in logs and status.
async fn probe_once(
    pool: &Pool,
    server: &Server,
    probe: &Probe,
    connector: &Connector,
) -> Result<(), String> {
    let (mut session, _) = connect_and_check(pool, server, connector).await?;
    let host = probe
        .host
        .clone()
        .unwrap_or_else(|| match &pool.host_header {
            crate::config::HostHeader::Literal(h) => h.clone(),
            _ => server.host_name.clone(),
        });
    let h2 = session.as_http2().is_some();
    let target = match &probe.grpc_service {
        Some(_) => crate::grpc::HEALTH_CHECK_PATH,
        None => probe.path.as_str(),
    };
    let method = if probe.grpc_service.is_some() {
        "POST"
    } else {
        "GET"
    };
    let mut req =
        RequestHeader::build(method, target.as_bytes(), None).map_err(|e| e.to_string())?;
    let mut headers = vec![("Host", host.as_str()), ("User-Agent", "pinion-probe")];
    if !h2 {
        headers.push(("Connection", "close"));
    }
    if probe.grpc_service.is_some() {
        headers.extend([("Content-Type", "application/grpc"), ("TE", "trailers")]);
    }
    for (name, value) in headers {
        req.insert_header(name, value).map_err(|e| e.to_string())?;
    }

    session
        .write_request_header(Box::new(req))
        .await
        .map_err(|e| format!("cannot send the probe: {e}"))?;
    if let Some(service) = &probe.grpc_service {
        session
            .write_request_body(crate::grpc::health_check_request(service), true)
            .await
            .map_err(|e| format!("cannot send the probe: {e}"))?;
    }
    session
        .finish_request_body()
        .await
        .map_err(|e| format!("cannot send the probe: {e}"))?;
    session
        .read_response_header()
        .await
        .map_err(|e| format!("no valid response: {e}"))?;
    if let Some(service) = &probe.grpc_service {
        return grpc_health(&mut session, service).await;
    }
    let status = session.response_header().map_or(0, |h| h.status.as_u16());
    if !probe
        .status
        .iter()
        .any(|(lo, hi)| (*lo..=*hi).contains(&status))
    {
        let ranges: Vec<String> = probe
            .status
            .iter()
            .map(|(lo, hi)| format!("{lo}-{hi}"))
            .collect();
        return Err(format!("status {status}, expected {}", ranges.join(" or ")));
    }
    if let Some(needle) = &probe.body_contains {
        let mut body = Vec::new();
        while body.len() < BODY_LIMIT {
            match session.read_response_body().await {
                Ok(Some(chunk)) => body.extend_from_slice(&chunk),
                Ok(None) => break,
                Err(e) => return Err(format!("cannot read the body: {e}")),
            }
        }
        if !String::from_utf8_lossy(&body).contains(needle.as_str()) {
            return Err(format!("body does not contain {needle:?}"));
        }
    }
    Ok(())
}

/// Reads a gRPC health check's answer: `Ok` only for `SERVING` with `grpc-status: 0`.
async fn grpc_health(session: &mut HttpSession, service: &str) -> Result<(), String> {
    let header = session
        .response_header()
        .ok_or("no response header")?
        .clone();
    let what = if service.is_empty() {
        "the server".to_owned()
    } else {
        format!("service {service:?}")
    };
    if header.status.as_u16() != 200 {
        return Err(format!(
            "gRPC health check: HTTP status {}",
            header.status.as_u16()
        ));
    }
    let mut body = Vec::new();
    while body.len() < BODY_LIMIT {
        match session.read_response_body().await {
            Ok(Some(chunk)) => body.extend_from_slice(&chunk),
            Ok(None) => break,
            Err(e) => return Err(format!("cannot read the health response: {e}")),
        }
    }
    let trailers = match session {
        HttpSession::H2(h2) => h2.read_trailers().await.ok().flatten(),
        _ => None,
    };
    // A trailers-only answer carries grpc-status in the header block.
    let status = trailers
        .as_ref()
        .and_then(|t| t.get("grpc-status"))
        .or_else(|| header.headers.get("grpc-status"))
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if status != "0" {
        let message = trailers
            .as_ref()
            .and_then(|t| t.get("grpc-message"))
            .or_else(|| header.headers.get("grpc-message"))
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        return Err(format!(
            "gRPC health check of {what}: grpc-status {} {message}",
            if status.is_empty() { "missing" } else { status }
        ));
    }
    match crate::grpc::health_check_status(&body)? {
        1 => Ok(()),
        other => Err(format!(
            "gRPC health check of {what}: {}",
            crate::grpc::serving_status_name(other)
        )),
    }
}

fn detail(e: &pingora::Error) -> String {
    let text = e.to_string();
    // Pingora's message ends with the innermost cause, the useful part for an operator.
    let cause = text.rsplit("cause: ").next().unwrap_or(&text).trim();
    if cause.is_empty() {
        String::new()
    } else {
        format!(" ({cause})")
    }
}
