//! The gateway's elements to pinion's listeners, pools and routes.
//!
//! The cloud gateway takes a backend's port and TLS settings from the HTTP settings, not from
//! the address pool, so each (address pool, HTTP settings) pair that some rule uses becomes one
//! pinion pool. Listeners sharing a frontend port (multi-site) become one pinion listener whose
//! certificates SNI chooses from, and their host names move to the routes.

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
    Imported {
        yaml,
        files: cx.files,
        report: cx.report,
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
        let mut hosts: Vec<String> = prop(l, "hostNames")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default();
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

    fn routes(
        &mut self,
        rules: &[Rule],
        listeners: &BTreeMap<String, AzListener>,
        listeners_out: &mut [(String, Y)],
        pools: &mut Vec<PoolOut>,
        routes: &mut Vec<Y>,
    ) {
        // Pairs per address pool, to name pools after the address pool when it has one pair.
        let mut pairs: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        let mut note_pair = |v: &Value, pool_key: &str, settings_key: &str| {
            if let (Some(p), Some(s)) = (reference(v, pool_key), reference(v, settings_key)) {
                pairs
                    .entry(p.to_ascii_lowercase())
                    .or_default()
                    .insert(s.to_ascii_lowercase());
            }
        };
        for r in rules {
            note_pair(&r.props, "backendAddressPool", "backendHttpSettings");
        }
        for m in self.list("urlPathMaps") {
            note_pair(
                &m,
                "defaultBackendAddressPool",
                "defaultBackendHttpSettings",
            );
            for pr in prop(&m, "pathRules")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default()
            {
                note_pair(&pr, "backendAddressPool", "backendHttpSettings");
            }
        }
        let mut made: BTreeMap<(String, String), Option<String>> = BTreeMap::new();
        let mut used_rewrites = BTreeSet::new();
        for rule in rules {
            let element = format!("requestRoutingRules/{}", rule.name);
            let Some(listener) = rule
                .listener
                .as_ref()
                .and_then(|l| listeners.get(&l.to_ascii_lowercase()))
                .cloned()
            else {
                self.report
                    .not_mapped(element, "its HTTP listener was not mapped or not found");
                continue;
            };
            let kind = text(&rule.props, "ruleType").unwrap_or("Basic").to_owned();
            let mut targets = Vec::new();
            if kind.eq_ignore_ascii_case("PathBasedRouting") {
                let Some(map_name) = reference(&rule.props, "urlPathMap") else {
                    self.report
                        .not_mapped(element, "a path-based rule without a URL path map");
                    continue;
                };
                let Some(path_map) = self.find("urlPathMaps", &map_name) else {
                    self.report
                        .not_mapped(element, format!("URL path map {map_name} not found"));
                    continue;
                };
                for pr in prop(&path_map, "pathRules")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default()
                {
                    let paths: Vec<String> = prop(&pr, "paths")
                        .and_then(Value::as_array)
                        .map(|a| {
                            a.iter()
                                .filter_map(Value::as_str)
                                .map(str::to_owned)
                                .collect()
                        })
                        .unwrap_or_default();
                    targets.push((
                        format!("{}--{}", rule.name, name_of(&pr)),
                        format!("urlPathMaps/{map_name}/pathRules/{}", name_of(&pr)),
                        pr.clone(),
                        (
                            "backendAddressPool",
                            "backendHttpSettings",
                            "redirectConfiguration",
                            "rewriteRuleSet",
                        ),
                        Some(paths),
                    ));
                }
                targets.push((
                    format!("{}--default", rule.name),
                    format!("urlPathMaps/{map_name} (default)"),
                    path_map.clone(),
                    (
                        "defaultBackendAddressPool",
                        "defaultBackendHttpSettings",
                        "defaultRedirectConfiguration",
                        "defaultRewriteRuleSet",
                    ),
                    None,
                ));
                self.report
                    .mapped(element.clone(), format!("routes {}--*", clean(&rule.name)));
            } else {
                targets.push((
                    rule.name.clone(),
                    element.clone(),
                    rule.props.clone(),
                    (
                        "backendAddressPool",
                        "backendHttpSettings",
                        "redirectConfiguration",
                        "rewriteRuleSet",
                    ),
                    None,
                ));
            }
            for (route_name, target_element, v, keys, paths) in targets {
                let mut route = Mapping::new();
                let name = self.unique("route", &route_name);
                route.insert("name".into(), s(&name));
                route.insert("listeners".into(), Y::Sequence(vec![s(&listener.pinion)]));
                if !listener.hosts.is_empty() {
                    route.insert(
                        "hosts".into(),
                        Y::Sequence(listener.hosts.iter().map(|h| s(h)).collect()),
                    );
                }
                if let Some(paths) = &paths {
                    let mut ok = Vec::new();
                    for p in paths {
                        if p.starts_with('/') && !p[..p.len().saturating_sub(1)].contains('*') {
                            ok.push(s(p));
                        } else {
                            self.report.not_mapped(
                                format!("{target_element}.paths/{p}"),
                                "pinion paths are exact, `/x/*` or `/x*` (a `*` only at the end)",
                            );
                        }
                    }
                    if ok.is_empty() {
                        self.report.not_mapped(target_element, "no usable path");
                        continue;
                    }
                    route.insert("paths".into(), Y::Sequence(ok));
                }
                let (pool_key, settings_key, redirect_key, rewrite_key) = keys;
                if let Some(redirect) = reference(&v, redirect_key) {
                    match self.redirect(&redirect, &listener, listeners, &paths, rules.len()) {
                        Redirect::Route(r) => {
                            route.insert("redirect".into(), r);
                            routes.push(Y::Mapping(route));
                            self.report
                                .mapped(target_element, format!("routes/{name} (redirect)"));
                        }
                        Redirect::Listener(target, status) => {
                            for (n, l) in listeners_out.iter_mut() {
                                if *n == listener.pinion {
                                    if let Y::Mapping(m) = l {
                                        m.insert("redirect_to_https".into(), s(&target));
                                    }
                                }
                            }
                            self.report.differs(
                                target_element,
                                format!("listeners/{}.redirect_to_https: {target}", listener.pinion),
                                format!("every request on the listener is redirected, with status 308 (was {status}), path and query kept"),
                            );
                        }
                        Redirect::None(why) => self.report.not_mapped(target_element, why),
                    }
                    continue;
                }
                let (Some(pool), Some(settings)) =
                    (reference(&v, pool_key), reference(&v, settings_key))
                else {
                    self.report.not_mapped(
                        target_element,
                        "neither a backend (pool and HTTP settings) nor a redirect",
                    );
                    continue;
                };
                let key = (pool.to_ascii_lowercase(), settings.to_ascii_lowercase());
                let pinion_pool = match made.get(&key) {
                    Some(p) => p.clone(),
                    None => {
                        let shared = pairs.get(&key.0).is_some_and(|s| s.len() > 1);
                        let p = self.pool(&pool, &settings, shared, pools);
                        made.insert(key, p.clone());
                        p
                    }
                };
                let Some(pinion_pool) = pinion_pool else {
                    self.report.not_mapped(
                        target_element,
                        format!(
                            "its pool ({pool} with {settings}) could not be made; see its line"
                        ),
                    );
                    continue;
                };
                route.insert("pool".into(), s(&pinion_pool));
                if let Some(set) = reference(&v, rewrite_key) {
                    used_rewrites.insert(set.to_ascii_lowercase());
                    self.rewrite(&set, &mut route);
                }
                routes.push(Y::Mapping(route));
                if paths.is_some() || kind.eq_ignore_ascii_case("Basic") {
                    if paths.is_some() {
                        self.report.differs(
                            target_element,
                            format!("routes/{name}"),
                            "paths match case-sensitively in pinion (the gateway ignores case)",
                        );
                    } else {
                        self.report.mapped(target_element, format!("routes/{name}"));
                    }
                } else {
                    self.report.mapped(target_element, format!("routes/{name}"));
                }
            }
        }
        for set in self.list("rewriteRuleSets") {
            if !used_rewrites.contains(&name_of(&set).to_ascii_lowercase()) {
                self.report.not_mapped(
                    format!("rewriteRuleSets/{}", name_of(&set)),
                    "no rule uses it",
                );
            }
        }
        for r in self.list("redirectConfigurations") {
            let n = name_of(&r);
            let used = self
                .report
                .entries
                .iter()
                .any(|e| e.element == format!("redirectConfigurations/{n}"));
            if !used {
                self.report
                    .not_mapped(format!("redirectConfigurations/{n}"), "no rule uses it");
            }
        }
    }

    fn rewrite(&mut self, set_name: &str, route: &mut Mapping) {
        let element = format!("rewriteRuleSets/{set_name}");
        let Some(set) = self.find("rewriteRuleSets", set_name) else {
            self.report.not_mapped(element, "not found");
            return;
        };
        let mut request = (Mapping::new(), Vec::new());
        let mut response = (Mapping::new(), Vec::new());
        for rule in prop(&set, "rewriteRules")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
        {
            let rule_element = format!("{element}/{}", name_of(&rule));
            if prop(&rule, "conditions")
                .and_then(Value::as_array)
                .is_some_and(|c| !c.is_empty())
            {
                self.report.not_mapped(
                    rule_element,
                    "a conditional rewrite: pinion's header rewrites are unconditional per route; \
                     make a route for the condition (host/path) or leave it to the backend",
                );
                continue;
            }
            let Some(actions) = prop(&rule, "actionSet") else {
                continue;
            };
            if get(actions, "urlConfiguration").is_some_and(|u| !u.is_null()) {
                self.report.not_mapped(
                    format!("{rule_element}.urlConfiguration"),
                    "URL rewriting: pinion forwards the normalized path unchanged",
                );
            }
            for (key, side) in [
                ("requestHeaderConfigurations", &mut request),
                ("responseHeaderConfigurations", &mut response),
            ] {
                for h in get(actions, key)
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default()
                {
                    let name = get(&h, "headerName")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_owned();
                    let value = get(&h, "headerValue")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_owned();
                    let forbidden = [
                        "host",
                        "connection",
                        "upgrade",
                        "transfer-encoding",
                        "content-length",
                        "te",
                        "trailer",
                        "keep-alive",
                        "proxy-connection",
                    ];
                    let header_element = format!("{rule_element}.{key}/{name}");
                    if name.is_empty() || forbidden.contains(&name.to_ascii_lowercase().as_str()) {
                        self.report.not_mapped(header_element, "pinion routes may not rewrite Host or framing headers (use the pool's host_header for Host)");
                    } else if value.contains('{') {
                        self.report.not_mapped(header_element, format!("the value `{value}` uses server variables, which pinion has no equivalent of"));
                    } else if value.is_empty() {
                        side.1.push(s(&name));
                        self.report
                            .mapped(header_element, "routes[].*_headers.remove");
                    } else {
                        side.0.insert(s(&name), s(&value));
                        self.report.mapped(header_element, "routes[].*_headers.set");
                    }
                }
            }
        }
        for (key, (set, remove)) in [("request_headers", request), ("response_headers", response)] {
            if set.is_empty() && remove.is_empty() {
                continue;
            }
            let mut m = Mapping::new();
            if !set.is_empty() {
                m.insert("set".into(), Y::Mapping(set));
            }
            if !remove.is_empty() {
                m.insert("remove".into(), Y::Sequence(remove));
            }
            route.insert(key.into(), Y::Mapping(m));
        }
    }

    fn redirect(
        &mut self,
        name: &str,
        from: &AzListener,
        listeners: &BTreeMap<String, AzListener>,
        paths: &Option<Vec<String>>,
        rule_count: usize,
    ) -> Redirect {
        let element = format!("redirectConfigurations/{name}");
        let Some(r) = self.find("redirectConfigurations", name) else {
            return Redirect::None(format!("redirect configuration {name} not found"));
        };
        let status = match text(&r, "redirectType")
            .unwrap_or("Permanent")
            .to_ascii_lowercase()
            .as_str()
        {
            "found" => 302,
            "seeother" => 303,
            "temporary" => 307,
            _ => 301,
        };
        let include_path = flag(&r, "includePath").unwrap_or(false);
        let include_query = flag(&r, "includeQueryString").unwrap_or(false);
        let mut out = Mapping::new();
        if let Some(url) = text(&r, "targetUrl") {
            out.insert("to".into(), s(url));
        } else if let Some(target) = reference(&r, "targetListener") {
            let Some(t) = listeners.get(&target.to_ascii_lowercase()).cloned() else {
                self.report
                    .not_mapped(element, format!("target listener {target} not mapped"));
                return Redirect::None(format!("target listener {target} not mapped"));
            };
            if t.hosts.len() == 1 {
                let scheme = if t.https { "https" } else { "http" };
                let default_port = if t.https { 443 } else { 80 };
                let port = if t.port == default_port {
                    String::new()
                } else {
                    format!(":{}", t.port)
                };
                out.insert("to".into(), s(&format!("{scheme}://{}{port}", t.hosts[0])));
            } else if t.https && from.hosts.is_empty() && paths.is_none() && rule_count > 0 {
                self.report.differs(
                    element,
                    format!("listeners/{}.redirect_to_https", from.pinion),
                    "the target listener has no single host name: the whole listener \
                     redirects to the client's host with 308, keeping path and query",
                );
                return Redirect::Listener(t.pinion, status);
            } else {
                let why = "a redirect to a listener without one host name needs the request's \
                           host, which a pinion route redirect cannot use; write `redirect.to` \
                           by hand";
                self.report.not_mapped(element, why);
                return Redirect::None(why.into());
            }
        } else {
            self.report
                .not_mapped(element, "neither a target URL nor a target listener");
            return Redirect::None("empty redirect".into());
        }
        out.insert("status".into(), num(u64::from(status)));
        out.insert("keep_path".into(), Y::Bool(include_path));
        out.insert("keep_query".into(), Y::Bool(include_query));
        self.report.mapped(element, "routes[].redirect");
        Redirect::Route(Y::Mapping(out))
    }

    /// The pool for (address pool, HTTP settings); `None` when it cannot be made.
    fn pool(
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
        let name = if shared {
            self.unique("pool", &format!("{pool}--{settings}"))
        } else {
            self.unique("pool", pool)
        };
        let mut m = Mapping::new();
        m.insert("name".into(), s(&name));
        m.insert("servers".into(), Y::Sequence(servers));
        let host_name = text(&hs, "hostName").map(str::to_owned);
        if https {
            let tls = self.upstream_tls(&hs, &set_element, host_name.as_deref());
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

    fn upstream_tls(&mut self, hs: &Value, element: &str, host_name: Option<&str>) -> Mapping {
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
            let data = self
                .find("authenticationCertificates", &cert)
                .and_then(|c| text(&c, "data").map(str::to_owned));
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

    fn probe(&mut self, name: &str, https: bool) -> Option<Y> {
        let element = format!("probes/{name}");
        let Some(p) = self.find("probes", name) else {
            self.report
                .not_mapped(element, "not found; pinion's default probe applies");
            return None;
        };
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

    fn affinity_key(&mut self) -> String {
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

enum Redirect {
    Route(Y),
    Listener(String, u16),
    None(String),
}
