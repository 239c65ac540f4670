//! `pools:` rules, including the trust table of `pools[].tls`.

use super::{Problem, Validator};
use crate::config::locate::KeyPath;
use crate::config::raw::{
    RawAffinity, RawPool, RawPoolTls, RawProbe, RawProbeSetting, RawServerEntry, RawTimeouts,
};
use crate::config::{
    Affinity, AffinitySecret, Balance, Endpoint, HostHeader, PinMode, PoolConfig, Probe, SameSite,
    ServerEntry, Timeouts, UpstreamTls,
};
use crate::tls::{read_certificates, PinEntry, PinScope, Whitelist};
use pingora::utils::tls::CertKey;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

impl Validator<'_> {
    pub(super) fn pools(&mut self, raw: &[RawPool], path: &KeyPath) -> Vec<PoolConfig> {
        self.names(path, raw.iter().map(|p| p.name.as_str()), "pools");
        raw.iter()
            .enumerate()
            .map(|(i, p)| self.pool(p, &path.index(i)))
            .collect()
    }

    fn pool(&mut self, raw: &RawPool, path: &KeyPath) -> PoolConfig {
        let balance = match raw.balance.as_deref() {
            None | Some("round_robin") => Balance::RoundRobin,
            Some("random") => Balance::Random,
            Some("least_connections") => Balance::LeastConnections,
            Some("ip_hash") => Balance::IpHash,
            Some(other) => {
                self.err(
                    path.key("balance"),
                    Problem::BadChoice {
                        value: other.to_owned(),
                        expected: "round_robin, random, least_connections or ip_hash",
                    },
                );
                Balance::RoundRobin
            }
        };
        let host_header = match raw.host_header.as_deref().map(str::trim) {
            None | Some("preserve") => HostHeader::Preserve,
            Some("backend") => HostHeader::Backend,
            Some(literal) if is_host_value(literal) => HostHeader::Literal(literal.to_owned()),
            Some(other) => {
                self.err(path.key("host_header"), Problem::BadHost(other.to_owned()));
                HostHeader::Preserve
            }
        };
        let affinity = raw
            .affinity
            .as_ref()
            .map(|a| self.affinity(a, &path.key("affinity")));
        let probe = match &raw.probe {
            Some(RawProbeSetting::Enabled(false)) => None,
            None | Some(RawProbeSetting::Enabled(true)) => Some(default_probe()),
            Some(RawProbeSetting::Custom(p)) => Some(self.probe(p, &path.key("probe"))),
        };
        let retries = self.number(
            path.key("retries"),
            raw.retries,
            2,
            0..=20,
            "0 to 20 retries",
        );
        let servers_path = path.key("servers");
        if raw.servers.is_empty() {
            self.err(servers_path.clone(), Problem::Empty("server"));
        }
        let servers: Vec<ServerEntry> = raw
            .servers
            .iter()
            .enumerate()
            .filter_map(|(i, s)| self.backend(s, &servers_path.index(i)))
            .collect();
        let tls = raw
            .tls
            .as_ref()
            .and_then(|t| self.pool_tls(t, &path.key("tls"), &servers, &servers_path));
        let http = self.upstream_http(raw, path);
        if probe.as_ref().is_some_and(|p| p.grpc_service.is_some())
            && http.version != crate::upstream::HttpVersion::H2
        {
            self.err(
                path.key("probe").key("grpc_service"),
                Problem::GrpcProbeWithoutH2,
            );
        }
        PoolConfig {
            name: raw.name.clone(),
            servers,
            tls,
            timeouts: self.timeouts(raw.timeouts.as_ref(), &path.key("timeouts")),
            balance,
            host_header,
            affinity,
            probe,
            retries: u32::try_from(retries).unwrap_or(2),
            http,
            resolution: self.resolution(raw, path),
        }
    }

    fn backend(&mut self, raw: &RawServerEntry, path: &KeyPath) -> Option<ServerEntry> {
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
        let endpoint = if let Ok(addr) = text.parse::<SocketAddr>() {
            Endpoint::Address(addr)
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
            // Never looked up on the request path: once while loading, then by the
            // re-resolution task (HttpPeer::new would block, or panic on a failure).
            Endpoint::Name {
                host: host.to_ascii_lowercase(),
                port,
            }
        };
        let port = match &endpoint {
            Endpoint::Address(a) => a.port(),
            Endpoint::Name { port, .. } => *port,
        };
        if port == 0 {
            self.err(path.clone(), bad("port 0"));
            return None;
        }
        Some(ServerEntry {
            label: text.to_owned(),
            endpoint,
            weight: u32::try_from(weight).unwrap_or(1),
        })
    }

    fn pool_tls(
        &mut self,
        raw: &RawPoolTls,
        path: &KeyPath,
        servers: &[ServerEntry],
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
            pins.extend(self.pool_pin(pin, &path.key("pins").index(i)));
        }
        let chain_pins = pins.iter().any(|p: &PinEntry| p.scope == PinScope::Chain);
        let pin_mode = self.choice(
            path.key("pin_mode"),
            raw.pin_mode.as_deref(),
            &[("enforce", PinMode::Enforce), ("report", PinMode::Report)],
            PinMode::Enforce,
            "enforce or report",
        );
        let ca = raw
            .ca
            .as_ref()
            .and_then(|rel| self.ca_bundle(rel, &path.key("ca")));
        let pins_only = !raw.pins.is_empty() && raw.ca.is_none();
        // A chain pin may name a public CA: without a name check it would accept any
        // certificate that CA ever issued, so the name is checked as with `ca`.
        let names_checked = !pins_only || chain_pins;
        if !names_checked && raw.verify_hostname.is_some() {
            self.err(
                path.key("verify_hostname"),
                Problem::VerifyHostnameWithPinsOnly,
            );
        }
        if names_checked && raw.verify_hostname != Some(false) || !pins_only {
            // Pingora turns verification off for an empty SNI, so a verifying mode needs a name.
            for (i, server) in servers.iter().enumerate() {
                if sni.is_none() && server.host().is_none() {
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
            pins: Whitelist::new(pins),
            warn_days: u32::try_from(self.number(
                path.key("warn_days"),
                raw.warn_days,
                14,
                0..=365,
                "0 to 365 days",
            ))
            .unwrap_or(14),
            pin_mode,
            ca,
            verify_hostname: raw.verify_hostname.unwrap_or(true),
            client_certificate,
        }))
    }

    /// A PEM bundle of trusted roots (`ca:` of pools and of `client_auth`).
    pub(super) fn ca_bundle(
        &mut self,
        rel: &str,
        path: &KeyPath,
    ) -> Option<Arc<Box<[openssl::x509::X509]>>> {
        let (file, bytes) = self.read(path, rel)?;
        match read_certificates(&bytes) {
            Ok(certs) => Some(Arc::new(certs.into_boxed_slice())),
            Err(e) => {
                self.err(
                    path.clone(),
                    Problem::BadCertificate {
                        path: file,
                        reason: e.to_string(),
                    },
                );
                None
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

impl Validator<'_> {
    fn affinity(&mut self, raw: &RawAffinity, path: &KeyPath) -> Affinity {
        let cookie = raw
            .cookie
            .clone()
            .unwrap_or_else(|| "ApplicationGatewayAffinity".to_owned());
        // RFC 6265 cookie-name: a token.
        let token = !cookie.is_empty()
            && cookie
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
        if !token {
            self.err(
                path.key("cookie"),
                Problem::BadChoice {
                    value: cookie.clone(),
                    expected: "a cookie name: letters, digits and !#$%&'*+-.^_`|~",
                },
            );
        }
        let ttl = self.number(
            path.key("ttl_seconds"),
            raw.ttl_seconds,
            0,
            0..=31_536_000,
            "0 (session cookie) to 31536000 seconds",
        );
        let secure = raw.secure.unwrap_or(true);
        let same_site = match raw
            .same_site
            .as_deref()
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            None | Some("lax") => SameSite::Lax,
            Some("strict") => SameSite::Strict,
            Some("none") => SameSite::None,
            Some(other) => {
                self.err(
                    path.key("same_site"),
                    Problem::BadChoice {
                        value: other.to_owned(),
                        expected: "lax, strict or none",
                    },
                );
                SameSite::Lax
            }
        };
        if same_site == SameSite::None && !secure {
            self.err(
                path.key("same_site"),
                Problem::BadChoice {
                    value: "none".into(),
                    expected: "lax or strict when `secure: false` (browsers drop SameSite=None cookies without Secure)",
                },
            );
        }
        Affinity {
            cookie,
            ttl: Duration::from_secs(ttl),
            secure,
            http_only: raw.http_only.unwrap_or(true),
            same_site,
            secret: self.affinity_secret(raw, path),
        }
    }

    /// The affinity key. Required: a key of our own choosing would differ between instances and
    /// across restarts (breaking stickiness), and a key derived from the configuration could be
    /// recomputed by anyone who guesses it (revealing the servers).
    fn affinity_secret(&mut self, raw: &RawAffinity, path: &KeyPath) -> AffinitySecret {
        let Some(rel) = raw.secret_file.as_deref() else {
            self.err(path.clone(), Problem::NoAffinitySecret);
            return AffinitySecret::new(&[]);
        };
        let here = path.key("secret_file");
        let Some((full, bytes)) = self.read(&here, rel) else {
            return AffinitySecret::new(&[]);
        };
        // One final line break (as an editor or `echo` adds) is not part of the key, so every
        // instance gets the same key however its file was written; binary keys keep their bytes.
        let key = bytes.strip_suffix(b"\n").unwrap_or(&bytes);
        let key = key.strip_suffix(b"\r").unwrap_or(key);
        if key.len() < AffinitySecret::MIN_LEN {
            self.err(
                here,
                Problem::ShortSecret {
                    path: full,
                    len: key.len(),
                },
            );
        }
        AffinitySecret::new(key)
    }

    fn probe(&mut self, raw: &RawProbe, path: &KeyPath) -> Probe {
        let d = default_probe();
        let seconds = "1 to 86400 seconds";
        let interval = self.number(
            path.key("interval_seconds"),
            raw.interval_seconds,
            30,
            1..=86_400,
            seconds,
        );
        let timeout = self.number(
            path.key("timeout_seconds"),
            raw.timeout_seconds,
            30,
            1..=86_400,
            seconds,
        );
        let threshold = "a threshold from 1 to 20";
        let unhealthy = self.number(
            path.key("unhealthy_threshold"),
            raw.unhealthy_threshold,
            3,
            1..=20,
            threshold,
        );
        let healthy = self.number(
            path.key("healthy_threshold"),
            raw.healthy_threshold,
            1,
            1..=20,
            threshold,
        );
        let probe_path = raw.path.clone().unwrap_or(d.path);
        if !probe_path.starts_with('/') || probe_path.bytes().any(|b| b <= b' ' || b == 0x7f) {
            self.err(path.key("path"), Problem::BadPath(probe_path.clone()));
        }
        if let Some(host) = &raw.host {
            if !is_host_value(host) {
                self.err(path.key("host"), Problem::BadHost(host.to_string()));
            }
        }
        let status = match &raw.status {
            None => d.status,
            Some(list) if list.is_empty() => {
                self.err(path.key("status"), Problem::Empty("status range"));
                d.status
            }
            Some(list) => list
                .iter()
                .enumerate()
                .filter_map(|(i, s)| {
                    let range = parse_status_range(&s.0);
                    if range.is_none() {
                        self.err(
                            path.key("status").index(i),
                            Problem::BadChoice {
                                value: s.0.clone(),
                                expected: "a status such as \"200\" or a range such as \"200-399\", within 100-599",
                            },
                        );
                    }
                    range
                })
                .collect(),
        };
        Probe {
            path: probe_path,
            host: raw.host.clone(),
            interval: Duration::from_secs(interval),
            timeout: Duration::from_secs(timeout),
            unhealthy_threshold: u32::try_from(unhealthy).unwrap_or(3),
            healthy_threshold: u32::try_from(healthy).unwrap_or(1),
            status,
            body_contains: raw.body_contains.clone(),
            grpc_service: raw.grpc_service.clone(),
        }
    }
}

/// The probe the SPEC prescribes when `probe` is absent (the cloud gateway's defaults).
fn default_probe() -> Probe {
    Probe {
        path: "/".into(),
        host: None,
        interval: Duration::from_secs(30),
        timeout: Duration::from_secs(30),
        unhealthy_threshold: 3,
        healthy_threshold: 1,
        status: vec![(200, 399)],
        body_contains: None,
        grpc_service: None,
    }
}

fn parse_status_range(s: &str) -> Option<(u16, u16)> {
    let (lo, hi) = match s.trim().split_once('-') {
        Some((lo, hi)) => (lo.trim().parse().ok()?, hi.trim().parse().ok()?),
        None => {
            let n = s.trim().parse().ok()?;
            (n, n)
        }
    };
    ((100..=599).contains(&lo) && (100..=599).contains(&hi) && lo <= hi).then_some((lo, hi))
}

/// A value usable as a Host header: a host name or address, optionally with a port.
fn is_host_value(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._:[]".contains(&b))
}
