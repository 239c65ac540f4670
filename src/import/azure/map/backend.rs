//! (Address pool, HTTP settings) pairs to pinion pools: servers, end-to-end TLS (pins from
//! authentication certificates, CA files from trusted roots), affinity, timeouts and probes.

use super::{
    certs, clean, flag, get, name_of, num, number, prop, reference, s, text, Ctx, PoolOut,
};
use serde_json::Value;
use serde_yaml::{Mapping, Value as Y};

impl Ctx<'_> {
    /// The pool for (address pool, HTTP settings); `None` when it cannot be made.
    pub(super) fn pool(
        &mut self,
        pool: &str,
        settings: &str,
        shared: bool,
        out: &mut Vec<PoolOut>,
    ) -> Option<String> {
        let pool_element = format!("backendAddressPools/{pool}");
        let set_element = format!("backendHttpSettingsCollection/{settings}");
        let Some(addresses) = self.find("backendAddressPools", pool) else {
            self.report.not_mapped(pool_element, "not found");
            return None;
        };
        let Some(hs) = self.find("backendHttpSettingsCollection", settings) else {
            self.report.not_mapped(set_element, "not found");
            return None;
        };
        // Report lines name elements as they declare themselves (references may differ in case).
        let pool_element = format!("backendAddressPools/{}", name_of(&addresses));
        let set_element = format!("backendHttpSettingsCollection/{}", name_of(&hs));
        let https = text(&hs, "protocol").is_some_and(|p| p.eq_ignore_ascii_case("https"));
        let port = number(&hs, "port").unwrap_or(if https { 443 } else { 80 });
        let mut servers = Vec::new();
        for a in prop(&addresses, "backendAddresses")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
        {
            let host = get(&a, "ipAddress")
                .or_else(|| get(&a, "fqdn"))
                .and_then(Value::as_str);
            match host {
                Some(h) if h.contains(':') => servers.push(s(&format!("[{h}]:{port}"))),
                Some(h) if !h.is_empty() => servers.push(s(&format!("{h}:{port}"))),
                _ => self.report.not_mapped(
                    format!("{pool_element}.backendAddresses"),
                    "an address without ipAddress or fqdn (unresolved parameter?)",
                ),
            }
        }
        if servers.is_empty() {
            self.report.not_mapped(
                pool_element,
                "no backend addresses: the gateway answers 502 for it; pinion needs servers. \
                 Add the addresses (e.g. with --parameters) and import again",
            );
            return None;
        }
        // Named as the elements declare themselves, not as a reference happens to spell them.
        let (pool_name, settings_name) = (name_of(&addresses), name_of(&hs));
        let name = if shared {
            self.unique("pool", &format!("{pool_name}--{settings_name}"))
        } else {
            self.unique("pool", &pool_name)
        };
        let mut m = Mapping::new();
        m.insert("name".into(), s(&name));
        m.insert("servers".into(), Y::Sequence(servers));
        let host_name = text(&hs, "hostName").map(str::to_owned);
        if https {
            let tls = self.upstream_tls(&hs, &set_element, host_name.as_deref());
            // A chain-verifying pool needs a name for servers written as addresses: the
            // gateway would verify against the host name, which these settings do not give.
            let verifies = !tls.contains_key("pins");
            let by_address = m
                .get("servers")
                .and_then(Y::as_sequence)
                .into_iter()
                .flatten()
                .filter_map(Y::as_str)
                .any(|a| {
                    a.starts_with('[')
                        || a.split(':')
                            .next()
                            .is_some_and(|h| h.parse::<std::net::Ipv4Addr>().is_ok())
                });
            if verifies && by_address && !tls.contains_key("sni") {
                self.report.not_mapped(
                    format!("{set_element}.hostName"),
                    format!(
                        "pool {name} verifies its servers' certificates but reaches some by IP \
                         address and the settings give no host name: set `tls.sni` to the name \
                         in the backend certificates (pinion -t refuses the pool until then)"
                    ),
                );
            }
            m.insert("tls".into(), Y::Mapping(tls));
        }
        if let Some(h) = &host_name {
            m.insert("host_header".into(), s(h));
        } else if flag(&hs, "pickHostNameFromBackendAddress") == Some(true) {
            m.insert("host_header".into(), s("backend"));
        }
        if text(&hs, "cookieBasedAffinity").is_some_and(|c| c.eq_ignore_ascii_case("enabled")) {
            let key_path = self.affinity_key();
            let mut a = Mapping::new();
            a.insert(
                "cookie".into(),
                s(text(&hs, "affinityCookieName").unwrap_or("ApplicationGatewayAffinity")),
            );
            a.insert("secret_file".into(), s(&key_path));
            m.insert("affinity".into(), Y::Mapping(a));
            self.report.differs(
                format!("{set_element}.cookieBasedAffinity"),
                format!("pools/{name}.affinity"),
                "the cookie value is pinion's keyed HMAC (clients get a new cookie once); \
                 Secure and HttpOnly are set, SameSite=Lax instead of the gateway's extra \
                 `…CORS` cookie; the key file was generated: give every instance the same one",
            );
        }
        if let Some(t) = number(&hs, "requestTimeout") {
            let t = t.clamp(1, 86400);
            let mut timeouts = Mapping::new();
            timeouts.insert("request_seconds".into(), num(t));
            m.insert("timeouts".into(), Y::Mapping(timeouts));
        }
        if let Some(d) = prop(&hs, "connectionDraining") {
            if get(d, "enabled").and_then(Value::as_bool) == Some(true) {
                self.report.differs(
                    format!("{set_element}.connectionDraining"),
                    "",
                    "pinion always drains: a server leaving the pool (reload, DNS) finishes its \
                     running requests and gets no new ones; there is no drain timeout",
                );
            }
        }
        if text(&hs, "path").is_some() {
            self.report.not_mapped(
                format!("{set_element}.path"),
                "the backend path prefix override: pinion forwards the request path unchanged",
            );
        }
        match reference(&hs, "probe") {
            Some(probe) => {
                if let Some(p) = self.probe(&probe, https) {
                    m.insert("probe".into(), p);
                }
            }
            None => self.report.mapped(
                format!("{set_element} (default probe)"),
                format!("pools/{name}.probe: GET / every 30 s, timeout 30 s, 3 failures, 200-399"),
            ),
        }
        self.report.mapped(set_element, format!("pools/{name}"));
        self.report.mapped(pool_element, format!("pools/{name}"));
        out.push(PoolOut {
            azure_pool: pool.to_ascii_lowercase(),
            yaml: Y::Mapping(m),
        });
        Some(name)
    }

    pub(super) fn upstream_tls(
        &mut self,
        hs: &Value,
        element: &str,
        host_name: Option<&str>,
    ) -> Mapping {
        let mut tls = Mapping::new();
        if let Some(h) = host_name {
            tls.insert("sni".into(), s(h));
        }
        let mut pins = Vec::new();
        let refs = |key: &str| -> Vec<String> {
            prop(hs, key)
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(|r| get(r, "id").and_then(Value::as_str))
                        .filter_map(|id| {
                            id.trim_end_matches('/')
                                .rsplit('/')
                                .next()
                                .map(str::to_owned)
                        })
                        .collect()
                })
                .unwrap_or_default()
        };
        for cert in refs("authenticationCertificates") {
            let cert_element = format!("authenticationCertificates/{cert}");
            let found = self.find("authenticationCertificates", &cert);
            let cert_element = found.as_ref().map_or(cert_element, |c| {
                format!("authenticationCertificates/{}", name_of(c))
            });
            let data = found.and_then(|c| text(&c, "data").map(str::to_owned));
            match data.map(|d| certs::pins(&d)) {
                Some(Ok(found)) => {
                    for (pin, description) in found {
                        let mut p = Mapping::new();
                        p.insert("sha256".into(), s(&pin));
                        pins.push(Y::Mapping(p));
                        self.report.differs(
                            cert_element.clone(),
                            format!("pools[].tls.pins: {pin}"),
                            format!(
                                "{description}: the gateway matched the whole certificate; \
                                 pinion pins its public key, so a renewal with the same key \
                                 keeps working and a new key needs a new pin"
                            ),
                        );
                    }
                }
                Some(Err(e)) => self.report.not_mapped(cert_element, e),
                None => self
                    .report
                    .not_mapped(cert_element, "no certificate data (unresolved or missing)"),
            }
        }
        let mut bundle = Vec::new();
        let mut roots = Vec::new();
        for cert in refs("trustedRootCertificates") {
            let cert_element = format!("trustedRootCertificates/{cert}");
            let found = self.find("trustedRootCertificates", &cert);
            let cert_element = found.as_ref().map_or(cert_element, |c| {
                format!("trustedRootCertificates/{}", name_of(c))
            });
            let data = found
                .as_ref()
                .and_then(|c| text(c, "data").map(str::to_owned));
            match data.map(|d| certs::pem_bundle(&d)) {
                Some(Ok(pem)) => {
                    bundle.extend(pem);
                    roots.push(cert_element);
                }
                Some(Err(e)) => self.report.not_mapped(cert_element, e),
                None => {
                    let why = if found
                        .as_ref()
                        .and_then(|c| text(c, "keyVaultSecretId"))
                        .is_some()
                    {
                        "a Key Vault reference: download the root certificate and name it in the pool's `tls.ca`"
                    } else {
                        "no certificate data (unresolved or missing)"
                    };
                    self.report.not_mapped(cert_element, why);
                }
            }
        }
        let has_ca = !bundle.is_empty();
        if has_ca {
            let settings = clean(element.rsplit('/').next().unwrap_or("pool"));
            let path = self.file(&format!("{settings}-ca.pem"), bundle, false);
            tls.insert("ca".into(), s(&path));
            for r in roots {
                self.report.mapped(r, format!("pools[].tls.ca: {path}"));
            }
        }
        let has_pins = !pins.is_empty();
        if has_pins {
            tls.insert("pins".into(), Y::Sequence(pins));
        }
        if !has_pins && !has_ca {
            let validate = prop(hs, "validateCertChainAndExpiry").and_then(Value::as_bool);
            self.report.differs(
                format!("{element}.protocol"),
                "pools[].tls (system trust store)",
                if validate == Some(false) {
                    "the gateway skipped chain validation; pinion verifies the chain and name \
                     against the system trust store: add `tls.pins` (see `pinion pin --connect`) \
                     for self-signed backends"
                } else {
                    "well-known CA trust: the chain is verified against this machine's trust \
                     store and the name against the SNI"
                },
            );
        }
        if let Some(sni) = text(hs, "sniName") {
            tls.insert("sni".into(), s(sni));
        }
        if prop(hs, "validateSNI").and_then(Value::as_bool) == Some(false) && has_ca {
            tls.insert("verify_hostname".into(), Y::Bool(false));
        }
        tls
    }

    pub(super) fn probe(&mut self, name: &str, https: bool) -> Option<Y> {
        let element = format!("probes/{name}");
        let Some(p) = self.find("probes", name) else {
            self.report
                .not_mapped(element, "not found; pinion's default probe applies");
            return None;
        };
        let element = format!("probes/{}", name_of(&p));
        let mut m = Mapping::new();
        let mut differences = Vec::new();
        if let Some(path) = text(&p, "path") {
            m.insert("path".into(), s(path));
        }
        if flag(&p, "pickHostNameFromBackendHttpSettings") != Some(true) {
            if let Some(host) = text(&p, "host") {
                m.insert("host".into(), s(host));
            }
        }
        for (key, out, max) in [
            ("interval", "interval_seconds", 86400),
            ("timeout", "timeout_seconds", 86400),
            ("unhealthyThreshold", "unhealthy_threshold", 20),
        ] {
            if let Some(v) = number(&p, key) {
                let clamped = v.clamp(1, max);
                if clamped != v {
                    differences.push(format!("{key} {v} clamped to {clamped}"));
                }
                m.insert(out.into(), num(clamped));
            }
        }
        if let Some(matcher) = prop(&p, "match") {
            let codes: Vec<Y> = get(matcher, "statusCodes")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(Value::as_str)
                        .map(|c| s(c.trim()))
                        .collect()
                })
                .unwrap_or_default();
            if !codes.is_empty() {
                m.insert("status".into(), Y::Sequence(codes));
            }
            if let Some(body) = get(matcher, "body")
                .and_then(Value::as_str)
                .filter(|b| !b.is_empty())
            {
                m.insert("body_contains".into(), s(body));
            }
        }
        let protocol = text(&p, "protocol").unwrap_or(if https { "Https" } else { "Http" });
        if protocol.eq_ignore_ascii_case("https") != https {
            differences.push(format!(
                "protocol {protocol}: pinion probes with the pool's own protocol ({})",
                if https { "HTTPS" } else { "HTTP" }
            ));
        }
        if number(&p, "port").is_some() {
            differences.push("custom port: pinion probes each server on its own port".into());
        }
        if number(&p, "minServers").is_some_and(|n| n > 0) {
            differences.push(
                "minServers: pinion takes every failing server out (502 when none is left)".into(),
            );
        }
        if differences.is_empty() {
            self.report.mapped(element, "pools[].probe");
        } else {
            self.report
                .differs(element, "pools[].probe", differences.join("; "));
        }
        Some(Y::Mapping(m))
    }

    pub(super) fn affinity_key(&mut self) -> String {
        if let Some(k) = &self.affinity_key {
            return k.clone();
        }
        let mut bytes = [0u8; 32];
        let _ = openssl::rand::rand_bytes(&mut bytes);
        use base64::Engine as _;
        let text = format!(
            "{}\n",
            base64::engine::general_purpose::STANDARD.encode(bytes)
        );
        let path = self.file("affinity.key", text.into_bytes(), true);
        self.affinity_key = Some(path.clone());
        path
    }
}
