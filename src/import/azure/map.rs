//! The gateway's elements to pinion's listeners, pools and routes.
//!
//! The cloud gateway takes a backend's port and TLS settings from the HTTP settings, not from
//! the address pool, so each (address pool, HTTP settings) pair that some rule uses becomes one
//! pinion pool. Listeners sharing a frontend port (multi-site) become one pinion listener whose
//! certificates SNI chooses from, and their host names move to the routes.

mod backend;
mod routes;

use super::arm::get;
use super::{certs, tls_policy};
use crate::import::{Imported, OutFile, Report};
use serde_json::Value;
use serde_yaml::{Mapping, Value as Y};
use std::collections::{BTreeMap, BTreeSet};

/// Elements of the gateway's `properties` this module reads.
const HANDLED: &[&str] = &[
    "frontendPorts",
    "httpListeners",
    "sslCertificates",
    "sslPolicy",
    "backendAddressPools",
    "backendHttpSettingsCollection",
    "authenticationCertificates",
    "trustedRootCertificates",
    "probes",
    "requestRoutingRules",
    "urlPathMaps",
    "redirectConfigurations",
    "rewriteRuleSets",
    "frontendIPConfigurations",
    "enableHttp2",
    "provisioningState",
    "resourceGuid",
    "operationalState",
    "gatewayIPConfigurations",
];

/// Why the elements pinion has no equivalent for are left out, and what to do instead.
const UNMAPPED: &[(&str, &str)] = &[
    ("sku", "instance size and tier: pinion's capacity is the machine it runs on and `server.threads`"),
    ("autoscaleConfiguration", "autoscale: run several pinion instances behind a load balancer, or scale the pinion deployment (e.g. a Kubernetes HPA); each instance is independent"),
    ("webApplicationFirewallConfiguration", "WAF: pinion has no web application firewall; put one in front (e.g. ModSecurity/Coraza) or keep the WAF at the edge (Front Door)"),
    ("firewallPolicy", "WAF policy: pinion has no web application firewall; put one in front"),
    ("forceFirewallPolicyAssociation", "WAF policy association: no WAF in pinion"),
    ("privateLinkConfigurations", "Private Link: expose pinion's listener through your network's own private endpoint or load balancer"),
    ("privateEndpointConnections", "Private Link: not a gateway setting in pinion"),
    ("sslProfiles", "SSL profiles: give per-host client certificate rules with `listeners[].tls.certificates[].client_auth` (see docs/configuration.md)"),
    ("trustedClientCertificates", "client CA chains: write them to a PEM file and name it in `listeners[].tls.client_auth.ca`"),
    ("customErrorConfigurations", "custom error pages are URLs in the gateway: save the pages as files and name them in `listeners[].error_pages`"),
    ("loadDistributionPolicies", "pinion's `balance` is per pool: round_robin, random, least_connections or ip_hash"),
    ("globalConfiguration", "request buffering settings: pinion streams request and response bodies"),
    ("backendSettingsCollection", "TCP/TLS proxy settings (layer 4): pinion proxies HTTP only"),
    ("listeners", "TCP/TLS listeners (layer 4): pinion proxies HTTP only"),
    ("routingRules", "TCP/TLS routing rules (layer 4): pinion proxies HTTP only"),
    ("enableFips", "FIPS mode: build pinion against a FIPS-validated OpenSSL"),
    ("defaultPredefinedSslPolicy", "see sslPolicy"),
];

struct Ctx<'a> {
    props: &'a Value,
    report: Report,
    files: Vec<OutFile>,
    certs_dir: String,
    names: BTreeSet<String>,
    affinity_key: Option<String>,
}

/// One Azure listener as the routes see it.
#[derive(Clone)]
struct AzListener {
    pinion: String,
    hosts: Vec<String>,
    port: u16,
    https: bool,
}

/// Maps a resolved gateway resource.
pub fn map(gateway: &Value, certs_dir: &str) -> Imported {
    let props = get(gateway, "properties").unwrap_or(gateway);
    let mut cx = Ctx {
        props,
        report: Report::default(),
        files: Vec::new(),
        certs_dir: certs_dir.trim_end_matches('/').to_owned(),
        names: BTreeSet::new(),
        affinity_key: None,
    };
    cx.unmapped_elements();
    let policy = tls_policy::map(get(props, "sslPolicy"), &mut cx.report);
    let (listeners, by_name) = cx.listeners(&policy);
    let rules = cx.rules(&by_name);
    let mut pools_out = Vec::new();
    let mut routes_out = Vec::new();
    let mut listeners = listeners;
    cx.routes(
        &rules,
        &by_name,
        &mut listeners,
        &mut pools_out,
        &mut routes_out,
    );
    cx.report_unused("backendAddressPools", &pools_out);
    let routes_count = routes_out.len();
    let redirects_listener = listeners
        .iter()
        .any(|(_, l)| l.get("redirect_to_https").is_some());
    let mut root = Mapping::new();
    root.insert(
        "listeners".into(),
        Y::Sequence(listeners.into_iter().map(|(_, l)| l).collect()),
    );
    root.insert(
        "pools".into(),
        Y::Sequence(pools_out.iter().map(|p: &PoolOut| p.yaml.clone()).collect()),
    );
    root.insert("routes".into(), Y::Sequence(routes_out));
    let body = serde_yaml::to_string(&Y::Mapping(root)).unwrap_or_default();
    let name = get(gateway, "name")
        .and_then(Value::as_str)
        .unwrap_or("gateway");
    let yaml = format!(
        "# Imported by `pinion import azure` from application gateway {}.\n\
         # Read the migration report before use; check with `pinion -t -c FILE`.\n{body}",
        serde_yaml::to_string(name).unwrap_or_default().trim_end()
    );
    let had_rules = !cx.list("requestRoutingRules").is_empty();
    let routes_anything = !had_rules || routes_count > 0 || redirects_listener;
    if !routes_anything {
        cx.report.not_mapped(
            "requestRoutingRules",
            "no rule could be mapped (see the lines above): the configuration would answer 404 \
             to every request",
        );
    }
    Imported {
        yaml,
        files: cx.files,
        report: cx.report,
        routes_anything,
    }
}

struct PoolOut {
    azure_pool: String,
    yaml: Y,
}

struct Rule {
    name: String,
    listener: Option<String>,
    props: Value,
    priority: Option<u64>,
    index: usize,
}

fn s(v: &str) -> Y {
    Y::String(v.to_owned())
}

fn num(v: u64) -> Y {
    Y::Number(v.into())
}

/// `item.properties.key`, or `item.key` as `az … show` prints it (properties flattened).
fn prop<'a>(item: &'a Value, key: &str) -> Option<&'a Value> {
    get(item, "properties")
        .and_then(|p| get(p, key))
        .or_else(|| get(item, key))
        .filter(|v| !v.is_null())
}

fn text<'a>(item: &'a Value, key: &str) -> Option<&'a str> {
    prop(item, key)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
}

/// The strings of the array `prop(item, key)` (empty when absent).
fn texts(item: &Value, key: &str) -> Vec<String> {
    prop(item, key)
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

fn number(item: &Value, key: &str) -> Option<u64> {
    match prop(item, key)? {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn flag(item: &Value, key: &str) -> Option<bool> {
    match prop(item, key)? {
        Value::Bool(b) => Some(*b),
        Value::String(s) => {
            Some(s.eq_ignore_ascii_case("true") || s.eq_ignore_ascii_case("enabled"))
        }
        _ => None,
    }
}

/// The name a sub-resource reference (`{"id": ".../collection/name"}`) points at.
fn reference(item: &Value, key: &str) -> Option<String> {
    let id = prop(item, key)
        .and_then(|r| get(r, "id"))
        .and_then(Value::as_str)?;
    id.trim_end_matches('/')
        .rsplit('/')
        .next()
        .map(str::to_owned)
}

fn name_of(item: &Value) -> String {
    get(item, "name")
        .and_then(Value::as_str)
        .unwrap_or("unnamed")
        .to_owned()
}

/// Pinion names: letters, digits, `-`, `_`, `.`.
fn clean(name: &str) -> String {
    let out: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '-'
            }
        })
        .collect();
    if out.is_empty() {
        "unnamed".into()
    } else {
        out
    }
}

impl Ctx<'_> {
    fn list(&self, key: &str) -> Vec<Value> {
        get(self.props, key)
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
    }

    /// The element of collection `key` named `name`, case-insensitively (templates mix cases).
    fn find(&self, key: &str, name: &str) -> Option<Value> {
        self.list(key)
            .into_iter()
            .find(|i| name_of(i).eq_ignore_ascii_case(name))
    }

    fn unique(&mut self, kind: &str, name: &str) -> String {
        let base = clean(name);
        let mut candidate = base.clone();
        let mut n = 2;
        while !self.names.insert(format!("{kind}/{candidate}")) {
            candidate = format!("{base}-{n}");
            n += 1;
        }
        candidate
    }

    fn file(&mut self, name: &str, bytes: Vec<u8>, secret: bool) -> String {
        self.files.push(OutFile {
            name: name.to_owned(),
            bytes,
            secret,
        });
        if self.certs_dir.is_empty() {
            name.to_owned()
        } else {
            format!("{}/{name}", self.certs_dir)
        }
    }

    fn unmapped_elements(&mut self) {
        let Some(obj) = self.props.as_object() else {
            return;
        };
        for (key, value) in obj {
            let empty = value.is_null()
                || value.as_array().is_some_and(Vec::is_empty)
                || value.as_object().is_some_and(|o| o.is_empty());
            if HANDLED.iter().any(|h| h.eq_ignore_ascii_case(key)) || empty {
                continue;
            }
            let why = UNMAPPED
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(key))
                .map_or(
                    "the importer has no pinion equivalent for it; review by hand",
                    |(_, w)| w,
                );
            if key.eq_ignore_ascii_case("sku") {
                self.report.differs(key.as_str(), "", why);
            } else {
                self.report.not_mapped(key.as_str(), why);
            }
        }
        if let Some(enabled) = get(self.props, "webApplicationFirewallConfiguration")
            .and_then(|w| get(w, "enabled"))
            .and_then(Value::as_bool)
        {
            if !enabled {
                self.report
                    .mapped("webApplicationFirewallConfiguration (disabled)", "");
            }
        }
        for ip in self.list("frontendIPConfigurations") {
            let name = name_of(&ip);
            let private = text(&ip, "privateIPAddress");
            let why = match private {
                Some(addr) => format!(
                    "listeners bind 0.0.0.0 (every address); to serve only the private address \
                     {addr}, change `bind` to `{addr}:PORT` on the machine that owns it"
                ),
                None => "listeners bind 0.0.0.0 (every address); the public IP address is \
                         the machine's or its load balancer's, outside pinion"
                    .to_owned(),
            };
            self.report.differs(
                format!("frontendIPConfigurations/{name}"),
                "listeners[].bind",
                why,
            );
        }
        for g in self.list("gatewayIPConfigurations") {
            self.report.not_mapped(
                format!("gatewayIPConfigurations/{}", name_of(&g)),
                "subnet placement: run pinion on a machine that reaches the backends",
            );
        }
    }

    /// One pinion listener per frontend port; the Azure listeners by name.
    fn listeners(
        &mut self,
        policy: &tls_policy::ListenerPolicy,
    ) -> (Vec<(String, Y)>, BTreeMap<String, AzListener>) {
        let http2 = get(self.props, "enableHttp2")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let mut ports: BTreeMap<u16, Vec<Value>> = BTreeMap::new();
        let mut order = Vec::new();
        for l in self.list("httpListeners") {
            let element = format!("httpListeners/{}", name_of(&l));
            let port_name = reference(&l, "frontendPort");
            let port = port_name
                .as_deref()
                .and_then(|p| self.find("frontendPorts", p))
                .and_then(|p| number(&p, "port"))
                .and_then(|p| u16::try_from(p).ok());
            let Some(port) = port else {
                self.report.not_mapped(
                    element,
                    format!(
                        "its frontend port {} was not found or has no port number",
                        port_name.unwrap_or_default()
                    ),
                );
                continue;
            };
            if !ports.contains_key(&port) {
                order.push(port);
            }
            ports.entry(port).or_default().push(l);
        }
        for p in self.list("frontendPorts") {
            let used = number(&p, "port").is_some_and(|n| ports.keys().any(|k| u64::from(*k) == n));
            if !used {
                self.report.not_mapped(
                    format!("frontendPorts/{}", name_of(&p)),
                    "no listener uses it",
                );
            }
        }
        let mut out = Vec::new();
        let mut by_name = BTreeMap::new();
        for port in order {
            let group = ports.remove(&port).unwrap_or_default();
            let https = group
                .iter()
                .any(|l| text(l, "protocol").is_some_and(|p| p.eq_ignore_ascii_case("https")));
            let pinion = if group.len() == 1 {
                self.unique("listener", &name_of(&group[0]))
            } else {
                self.unique("listener", &format!("port-{port}"))
            };
            let mut map = Mapping::new();
            map.insert("name".into(), s(&pinion));
            map.insert("bind".into(), s(&format!("0.0.0.0:{port}")));
            let mut certificates = Vec::new();
            let mut seen_certs = BTreeSet::new();
            for l in &group {
                let name = name_of(l);
                let element = format!("httpListeners/{name}");
                let hosts = self.hosts(l, &element);
                if https {
                    match reference(l, "sslCertificate") {
                        Some(cert) => {
                            if seen_certs.insert(cert.to_ascii_lowercase()) {
                                if let Some(pair) = self.certificate(&cert, &hosts) {
                                    certificates.push(pair);
                                }
                            }
                        }
                        None => self.report.not_mapped(
                            format!("{element}.sslCertificate"),
                            "an HTTPS listener without a certificate",
                        ),
                    }
                }
                for key in ["firewallPolicy", "sslProfile", "customErrorConfigurations"] {
                    if prop(l, key).is_some_and(|v| v.as_array().is_none_or(|a| !a.is_empty())) {
                        self.report.not_mapped(
                            format!("{element}.{key}"),
                            UNMAPPED
                                .iter()
                                .find(|(k, _)| {
                                    k.eq_ignore_ascii_case(key)
                                        || (key == "sslProfile" && *k == "sslProfiles")
                                })
                                .map_or("no pinion equivalent", |(_, w)| w),
                        );
                    }
                }
                let how = if group.len() > 1 {
                    format!("listeners/{pinion} (shared port {port}; host names on its routes)")
                } else {
                    format!("listeners/{pinion}")
                };
                if flag(l, "requireServerNameIndication") == Some(true) {
                    self.report.differs(
                        element.clone(),
                        how,
                        "requireServerNameIndication: pinion serves clients without SNI the \
                         listener's first certificate instead of refusing them",
                    );
                } else {
                    self.report.mapped(element.clone(), how);
                }
                by_name.insert(
                    name.to_ascii_lowercase(),
                    AzListener {
                        pinion: pinion.clone(),
                        hosts,
                        port,
                        https,
                    },
                );
            }
            if https {
                let mut tls = Mapping::new();
                tls.insert("certificates".into(), Y::Sequence(certificates));
                if let Some(v) = policy.min_version {
                    tls.insert("min_version".into(), s(v));
                }
                if let Some(c) = &policy.ciphers {
                    tls.insert("ciphers".into(), s(c));
                }
                tls.insert("http2".into(), Y::Bool(http2));
                map.insert("tls".into(), Y::Mapping(tls));
            }
            out.push((pinion, Y::Mapping(map)));
        }
        if get(self.props, "enableHttp2").is_some() {
            self.report.mapped("enableHttp2", "listeners[].tls.http2");
        }
        (out, by_name)
    }

    fn hosts(&mut self, l: &Value, element: &str) -> Vec<String> {
        let mut hosts = texts(l, "hostNames");
        if let Some(h) = text(l, "hostName") {
            hosts.insert(0, h.to_owned());
        }
        let mut out = Vec::new();
        for h in hosts {
            let h = h.trim().to_ascii_lowercase();
            let body = h.strip_prefix("*.").unwrap_or(&h);
            if body.contains('*') || body.contains('?') {
                self.report.not_mapped(
                    format!("{element}.hostNames/{h}"),
                    "pinion's host wildcards are `*.domain` only (one or more labels); write \
                     the names this pattern covers as separate hosts on the route",
                );
            } else if !out.contains(&h) {
                out.push(h);
            }
        }
        out
    }

    /// The `{cert, key}` entry for SSL certificate `name`, writing its files.
    fn certificate(&mut self, name: &str, hosts: &[String]) -> Option<Y> {
        let element = format!("sslCertificates/{name}");
        let cert = self.find("sslCertificates", name);
        let file = clean(name);
        let data = cert
            .as_ref()
            .and_then(|c| text(c, "data").map(str::to_owned));
        let password = cert.as_ref().and_then(|c| {
            prop(c, "password")
                .and_then(Value::as_str)
                .map(str::to_owned)
        });
        let key_vault = cert
            .as_ref()
            .and_then(|c| text(c, "keyVaultSecretId").map(str::to_owned));
        let pair = match (&data, &password) {
            (Some(d), Some(p)) => match certs::from_pfx(d, p) {
                Ok(pair) => {
                    let mut entry = Mapping::new();
                    entry.insert(
                        "cert".into(),
                        s(&self.file(&format!("{file}.crt.pem"), pair.chain, false)),
                    );
                    entry.insert(
                        "key".into(),
                        s(&self.file(&format!("{file}.key.pem"), pair.key, true)),
                    );
                    self.report.mapped(
                        element,
                        format!("{}/{file}.crt.pem, {file}.key.pem", self.certs_dir),
                    );
                    return Some(Y::Mapping(entry));
                }
                Err(e) => e,
            },
            _ if key_vault.is_some() => format!(
                "a Key Vault reference ({}): export the certificate with its key (`az keyvault \
                 secret download --encoding base64` gives the PFX) and convert it to PEM",
                key_vault.unwrap_or_default()
            ),
            _ if cert.is_none() => "not found in sslCertificates".to_owned(),
            _ => "the template carries no PFX data with its password (give them with \
                  --parameters to have them converted)"
                .to_owned(),
        };
        let placeholder = certs::placeholder(hosts).ok()?;
        let cert_path = self.file(
            &format!("placeholder-{file}.crt.pem"),
            placeholder.chain,
            false,
        );
        let key_path = self.file(
            &format!("placeholder-{file}.key.pem"),
            placeholder.key,
            true,
        );
        self.report.not_mapped(
            element,
            format!(
                "{pair}. A self-signed PLACEHOLDER was written ({cert_path}, {key_path}) so that \
                 the file validates: replace both files with the real certificate chain and key \
                 before serving clients"
            ),
        );
        let mut entry = Mapping::new();
        entry.insert("cert".into(), s(&cert_path));
        entry.insert("key".into(), s(&key_path));
        Some(Y::Mapping(entry))
    }

    /// Rules in the order the gateway evaluates them: by priority where given, then as listed,
    /// host-specific (multi-site) listeners before catch-all ones as v1 gateways do.
    fn rules(&mut self, listeners: &BTreeMap<String, AzListener>) -> Vec<Rule> {
        let mut rules: Vec<Rule> = self
            .list("requestRoutingRules")
            .into_iter()
            .enumerate()
            .map(|(index, r)| Rule {
                name: name_of(&r),
                listener: reference(&r, "httpListener"),
                priority: number(&r, "priority"),
                props: r,
                index,
            })
            .collect();
        let catch_all = |r: &Rule| {
            r.listener
                .as_ref()
                .and_then(|l| listeners.get(&l.to_ascii_lowercase()))
                .is_none_or(|l| l.hosts.is_empty())
        };
        rules.sort_by_key(|r| (r.priority.unwrap_or(u64::MAX), catch_all(r), r.index));
        if rules.iter().any(|r| r.priority.is_some()) {
            self.report.mapped(
                "requestRoutingRules[].priority",
                "routes in priority order (pinion: first match in file order)",
            );
        }
        rules
    }

    fn report_unused(&mut self, key: &str, pools: &[PoolOut]) {
        for p in self.list(key) {
            let n = name_of(&p);
            if !pools.iter().any(|o| o.azure_pool == n.to_ascii_lowercase())
                && self.report.about(&format!("{key}/{n}")).is_empty()
            {
                self.report
                    .not_mapped(format!("{key}/{n}"), "no rule uses it");
            }
        }
        for h in self.list("backendHttpSettingsCollection") {
            let element = format!("backendHttpSettingsCollection/{}", name_of(&h));
            if self.report.about(&element).is_empty() {
                self.report.not_mapped(element, "no rule uses it");
            }
        }
        for p in self.list("probes") {
            let element = format!("probes/{}", name_of(&p));
            if self.report.about(&element).is_empty() {
                self.report
                    .not_mapped(element, "no HTTP settings used by a rule names it");
            }
        }
        for c in self.list("authenticationCertificates") {
            let element = format!("authenticationCertificates/{}", name_of(&c));
            if self.report.about(&element).is_empty() {
                self.report
                    .not_mapped(element, "no HTTP settings used by a rule names it");
            }
        }
    }
}
