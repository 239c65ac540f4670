//! `pools:` rules, including the trust table of `pools[].tls`.

use super::{Problem, Validator};
use crate::config::locate::KeyPath;
use crate::config::raw::{
    RawPin, RawPool, RawPoolTls, RawProbeSetting, RawServerEntry, RawTimeouts,
};
use crate::config::{PinMode, PoolConfig, ServerConfig, Timeouts, UpstreamTls};
use crate::tls::{read_certificates, read_public_key, Pin, PinSet};
use pingora::utils::tls::CertKey;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

const POOLS_ISSUE: &str = "issue 3, backend pools";

impl Validator<'_> {
    pub(super) fn pools(&mut self, raw: &[RawPool], path: &KeyPath) -> Vec<PoolConfig> {
        self.names(path, raw.iter().map(|p| p.name.as_str()), "pools");
        raw.iter()
            .enumerate()
            .map(|(i, p)| self.pool(p, &path.index(i)))
            .collect()
    }

    fn pool(&mut self, raw: &RawPool, path: &KeyPath) -> PoolConfig {
        match raw.balance.as_deref() {
            None | Some("round_robin") => {}
            Some("random" | "least_connections" | "ip_hash") => {
                self.not_yet(path.key("balance"), "this balance algorithm", POOLS_ISSUE)
            }
            Some(other) => self.err(
                path.key("balance"),
                Problem::BadChoice {
                    value: other.to_owned(),
                    expected: "round_robin, random, least_connections or ip_hash",
                },
            ),
        }
        if raw.host_header.as_deref().is_some_and(|h| h != "preserve") {
            self.not_yet(
                path.key("host_header"),
                "rewriting the Host header",
                POOLS_ISSUE,
            );
        }
        if raw.affinity.is_some() {
            self.not_yet(path.key("affinity"), "session affinity", POOLS_ISSUE);
        }
        if !matches!(raw.probe, None | Some(RawProbeSetting::Enabled(false))) {
            self.not_yet(path.key("probe"), "active health probes", POOLS_ISSUE);
        }
        if raw.retries.is_some() {
            self.not_yet(
                path.key("retries"),
                "retries on another server",
                POOLS_ISSUE,
            );
        }
        let servers_path = path.key("servers");
        if raw.servers.is_empty() {
            self.err(servers_path.clone(), Problem::Empty("server"));
        }
        let servers: Vec<ServerConfig> = raw
            .servers
            .iter()
            .enumerate()
            .filter_map(|(i, s)| self.backend(s, &servers_path.index(i)))
            .collect();
        let tls = raw
            .tls
            .as_ref()
            .and_then(|t| self.pool_tls(t, &path.key("tls"), &servers, &servers_path));
        PoolConfig {
            name: raw.name.clone(),
            servers,
            tls,
            timeouts: self.timeouts(raw.timeouts.as_ref(), &path.key("timeouts")),
        }
    }

    fn backend(&mut self, raw: &RawServerEntry, path: &KeyPath) -> Option<ServerConfig> {
        let weight = self.number(
            path.key("weight"),
            raw.weight,
            1,
            1..=1000,
            "a weight from 1 to 1000",
        );
        let bad = |reason: &str| Problem::BadServer {
            address: raw.address.clone(),
            reason: reason.to_owned(),
        };
        let text = raw.address.trim();
        let (address, host) = if let Ok(addr) = text.parse::<SocketAddr>() {
            (addr, None)
        } else {
            let Some((host, port)) = text.rsplit_once(':') else {
                self.err(path.clone(), bad("no port"));
                return None;
            };
            let Ok(port) = port.parse::<u16>() else {
                self.err(
                    path.clone(),
                    bad("the port is not a number from 1 to 65535"),
                );
                return None;
            };
            let valid_name = !host.is_empty()
                && host.split('.').all(|l| {
                    !l.is_empty()
                        && l.bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                });
            if !valid_name {
                self.err(path.clone(), bad("not an IP address or a DNS name"));
                return None;
            }
            // Resolved once here, never on the request path (HttpPeer::new would block or panic).
            match (host, port).to_socket_addrs().map(|mut a| a.next()) {
                Ok(Some(addr)) => (addr, Some(host.to_ascii_lowercase())),
                Ok(None) => {
                    self.err(path.clone(), bad("the name resolves to no address"));
                    return None;
                }
                Err(e) => {
                    self.err(path.clone(), bad(&format!("cannot resolve the name ({e})")));
                    return None;
                }
            }
        };
        if address.port() == 0 {
            self.err(path.clone(), bad("port 0"));
            return None;
        }
        Some(ServerConfig {
            label: text.to_owned(),
            address,
            host,
            weight: u32::try_from(weight).unwrap_or(1),
        })
    }

    fn pool_tls(
        &mut self,
        raw: &RawPoolTls,
        path: &KeyPath,
        servers: &[ServerConfig],
        servers_path: &KeyPath,
    ) -> Option<Arc<UpstreamTls>> {
        let before = self.problems.len();
        let sni = raw.sni.as_ref().map(|s| s.trim().to_ascii_lowercase());
        if let Some(s) = &sni {
            if crate::routing::HostPattern::parse(s).is_none() || s.starts_with("*.") {
                self.err(path.key("sni"), Problem::BadHost(s.clone()));
            }
        }
        let mut pins = Vec::new();
        for (i, pin) in raw.pins.iter().enumerate() {
            pins.extend(self.pin(pin, &path.key("pins").index(i)));
        }
        let pin_mode = match raw.pin_mode.as_deref() {
            None | Some("enforce") => PinMode::Enforce,
            Some("report") => PinMode::Report,
            Some(other) => {
                self.err(
                    path.key("pin_mode"),
                    Problem::BadChoice {
                        value: other.to_owned(),
                        expected: "enforce or report",
                    },
                );
                PinMode::Enforce
            }
        };
        let ca = raw.ca.as_ref().and_then(|rel| {
            let (file, bytes) = self.read(&path.key("ca"), rel)?;
            match read_certificates(&bytes) {
                Ok(certs) => Some(Arc::new(certs.into_boxed_slice())),
                Err(e) => {
                    self.err(
                        path.key("ca"),
                        Problem::BadCertificate {
                            path: file,
                            reason: e.to_string(),
                        },
                    );
                    None
                }
            }
        });
        let pins_only = !raw.pins.is_empty() && raw.ca.is_none();
        if pins_only && raw.verify_hostname.is_some() {
            self.err(
                path.key("verify_hostname"),
                Problem::VerifyHostnameWithPinsOnly,
            );
        }
        if !pins_only {
            // Pingora turns verification off for an empty SNI, so a verifying mode needs a name.
            for (i, server) in servers.iter().enumerate() {
                if sni.is_none() && server.host.is_none() {
                    self.err(
                        servers_path.index(i),
                        Problem::NoNameToVerify {
                            server: server.label.clone(),
                        },
                    );
                }
            }
        }
        let client_certificate = raw.client_certificate.as_ref().and_then(|ck| {
            let (_, certs, key) = self.cert_key(ck, &path.key("client_certificate"))?;
            Some(Arc::new(CertKey::new(certs, key)))
        });
        if self.problems.len() != before {
            return None;
        }
        Some(Arc::new(UpstreamTls {
            sni,
            pins: PinSet::new(pins),
            pin_mode,
            ca,
            verify_hostname: raw.verify_hostname.unwrap_or(true),
            client_certificate,
        }))
    }

    /// The pins of one `pins:` entry (a certificate file may hold several).
    fn pin(&mut self, raw: &RawPin, path: &KeyPath) -> Vec<Pin> {
        match (&raw.cert, &raw.public_key, &raw.sha256) {
            (Some(file), None, None) => {
                let here = path.key("cert");
                let Some((full, bytes)) = self.read(&here, file) else {
                    return Vec::new();
                };
                let pins = read_certificates(&bytes).and_then(|certs| {
                    certs
                        .iter()
                        .map(|c| Pin::of_cert(c))
                        .collect::<Result<Vec<_>, _>>()
                });
                pins.unwrap_or_else(|e| {
                    self.err(
                        here,
                        Problem::BadCertificate {
                            path: full,
                            reason: e.to_string(),
                        },
                    );
                    Vec::new()
                })
            }
            (None, Some(file), None) => {
                let here = path.key("public_key");
                let Some((full, bytes)) = self.read(&here, file) else {
                    return Vec::new();
                };
                match read_public_key(&bytes).and_then(|k| Pin::of_key(&k)) {
                    Ok(pin) => vec![pin],
                    Err(e) => {
                        self.err(
                            here,
                            Problem::BadPublicKey {
                                path: full,
                                reason: e.to_string(),
                            },
                        );
                        Vec::new()
                    }
                }
            }
            (None, None, Some(text)) => match Pin::from_base64(text) {
                Some(pin) => vec![pin],
                None => {
                    self.err(
                        path.key("sha256"),
                        Problem::BadPin {
                            value: text.clone(),
                        },
                    );
                    Vec::new()
                }
            },
            _ => {
                self.err(path.clone(), Problem::PinShape);
                Vec::new()
            }
        }
    }

    fn timeouts(&mut self, raw: Option<&RawTimeouts>, path: &KeyPath) -> Timeouts {
        let range = "1 to 86400 seconds";
        let connect = self.number(
            path.key("connect_seconds"),
            raw.and_then(|t| t.connect_seconds),
            5,
            1..=86_400,
            range,
        );
        let request = self.number(
            path.key("request_seconds"),
            raw.and_then(|t| t.request_seconds),
            20,
            1..=86_400,
            range,
        );
        let idle = self.number(
            path.key("idle_seconds"),
            raw.and_then(|t| t.idle_seconds),
            60,
            0..=86_400,
            "0 (no pooling) to 86400 seconds",
        );
        Timeouts {
            connect: Duration::from_secs(connect),
            request: Duration::from_secs(request),
            idle: Duration::from_secs(idle),
        }
    }
}
