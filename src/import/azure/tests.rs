//! The mapping on small hand-written gateways: loose case, priorities, redirects, rewrites,
//! the `az … show` shape, and validation by pinion's own loader.

use super::{import, Options};
use serde_json::{json, Value};

fn run(gateway: Value, parameters: Option<Value>) -> crate::import::Imported {
    let template = json!({"parameters": {"port": {"type": "int", "defaultValue": 8443}},
        "resources": [gateway]});
    import(
        &template,
        &Options {
            parameters,
            certs_dir: "certs".into(),
        },
    )
    .unwrap_or_else(|e| panic!("{e}"))
}

fn id(kind: &str, name: &str) -> Value {
    json!({"id": format!("[concat(resourceId('Microsoft.Network/applicationGateways', 'gw'), '/{kind}/{name}')]")})
}

fn gateway(extra: Value) -> Value {
    let mut props = json!({
        "frontendPorts": [{"name": "p80", "properties": {"Port": 80}}],
        "backendAddressPools": [{"name": "Web", "properties": {"BackendAddresses": [
            {"IpAddress": "127.0.0.1"}, {"fqdn": "app.internal"}]}}],
        "backendHttpSettingsCollection": [{"name": "Plain", "properties": {
            "Port": 8080, "Protocol": "Http", "CookieBasedAffinity": "Enabled",
            "affinityCookieName": "Sticky", "requestTimeout": 45,
            "pickHostNameFromBackendAddress": true}}],
        "httpListeners": [
            {"name": "catchall", "properties": {"FrontendPort": id("frontendPorts", "P80"), "Protocol": "Http"}},
            {"name": "site", "properties": {"frontendPort": id("frontendPorts", "p80"), "protocol": "Http",
                "hostNames": ["*.contoso.test", "contoso.test"]}}
        ]
    });
    for (k, v) in extra.as_object().into_iter().flatten() {
        props[k] = v.clone();
    }
    json!({"type": "microsoft.network/applicationgateways", "name": "gw", "properties": props})
}

fn rule(name: &str, listener: &str, priority: u64) -> Value {
    json!({"name": name, "properties": {"ruleType": "Basic", "priority": priority,
        "httpListener": id("httpListeners", listener),
        "backendAddressPool": id("backendAddressPools", "web"),
        "backendHttpSettings": id("backendHttpSettingsCollection", "plain"),
        "rewriteRuleSet": id("rewriteRuleSets", "rewriteRuleSet1")}})
}

#[test]
fn loose_case_priorities_affinity_and_rewrites() {
    let imported = run(
        gateway(json!({
            "requestRoutingRules": [rule("last", "catchall", 200), rule("first", "site", 100)],
            "rewriteRuleSets": [{"name": "RewriteRuleSet1", "properties": {"rewriteRules": [
                {"name": "hsts", "ruleSequence": 100, "actionSet": {
                    "responseHeaderConfigurations": [
                        {"headerName": "Strict-Transport-Security", "headerValue": "max-age=31536000"},
                        {"headerName": "Server", "headerValue": ""}],
                    "requestHeaderConfigurations": [
                        {"headerName": "X-Client", "headerValue": "{var_client_ip}"}]}},
                {"name": "conditional", "conditions": [{"variable": "http_req_Accept"}],
                 "actionSet": {"requestHeaderConfigurations": [{"headerName": "A", "headerValue": "b"}]}}
            ]}}]
        })),
        None,
    );
    let doc: serde_yaml::Value = serde_yaml::from_str(&imported.yaml).unwrap_or_default();
    let routes = &doc["routes"];
    assert_eq!(routes[0]["name"], "first", "{}", imported.yaml);
    assert_eq!(routes[0]["hosts"][0], "*.contoso.test");
    assert_eq!(routes[1]["name"], "last");
    assert!(routes[1]["hosts"].is_null());
    assert_eq!(
        routes[0]["response_headers"]["set"]["Strict-Transport-Security"],
        "max-age=31536000"
    );
    assert_eq!(routes[0]["response_headers"]["remove"][0], "Server");
    let pool = &doc["pools"][0];
    assert_eq!(pool["servers"][0], "127.0.0.1:8080");
    assert_eq!(pool["servers"][1], "app.internal:8080");
    assert_eq!(pool["affinity"]["cookie"], "Sticky");
    assert_eq!(pool["affinity"]["secret_file"], "certs/affinity.key");
    assert_eq!(pool["timeouts"]["request_seconds"], 45);
    assert_eq!(pool["host_header"], "backend");
    let report = imported.report.markdown("t");
    assert!(report.contains("var_client_ip"), "{report}");
    assert!(
        report.contains("rewriteRuleSets/rewriteRuleSet1/conditional"),
        "{report}"
    );
    assert!(imported
        .files
        .iter()
        .any(|f| f.name == "affinity.key" && f.secret));
}

#[test]
fn redirects_map_to_routes_and_listeners() {
    let imported = run(
        gateway(json!({
            "frontendPorts": [{"name": "p80", "properties": {"Port": 80}},
                              {"name": "p443", "properties": {"port": "[parameters('port')]"}}],
            "sslCertificates": [{"name": "c", "properties": {}}],
            "httpListeners": [
                {"name": "http", "properties": {"frontendPort": id("frontendPorts", "p80"), "protocol": "Http"}},
                {"name": "https", "properties": {"frontendPort": id("frontendPorts", "p443"), "protocol": "Https",
                    "sslCertificate": id("sslCertificates", "c"), "hostName": "www.contoso.test"}}
            ],
            "redirectConfigurations": [
                {"name": "toHttps", "properties": {"redirectType": "Permanent",
                    "targetListener": id("httpListeners", "https"), "includePath": true, "includeQueryString": true}},
                {"name": "away", "properties": {"redirectType": "Temporary", "targetUrl": "https://example.test/"}}
            ],
            "requestRoutingRules": [
                {"name": "r1", "properties": {"ruleType": "Basic", "httpListener": id("httpListeners", "http"),
                    "redirectConfiguration": id("redirectConfigurations", "TOHTTPS")}},
                {"name": "r2", "properties": {"ruleType": "Basic", "httpListener": id("httpListeners", "https"),
                    "redirectConfiguration": id("redirectConfigurations", "away")}}
            ]
        })),
        None,
    );
    let doc: serde_yaml::Value = serde_yaml::from_str(&imported.yaml).unwrap_or_default();
    assert_eq!(doc["listeners"][1]["bind"], "0.0.0.0:8443");
    let route = |name: &str| {
        doc["routes"]
            .as_sequence()
            .and_then(|s| s.iter().find(|r| r["name"] == name))
            .cloned()
            .unwrap_or_else(|| panic!("no route {name}: {}", imported.yaml))
    };
    let r1 = &route("r1")["redirect"];
    assert_eq!(
        r1["to"], "https://www.contoso.test:8443",
        "{}",
        imported.yaml
    );
    assert_eq!(r1["status"], 301);
    assert_eq!(r1["keep_path"], true);
    let r2 = &route("r2")["redirect"];
    assert_eq!(r2["to"], "https://example.test/");
    assert_eq!(r2["status"], 307);
    // The certificate had no data: a placeholder, reported.
    let report = imported.report.markdown("t");
    assert!(report.contains("placeholder-c.crt.pem"), "{report}");
}

#[test]
fn az_show_output_with_flattened_properties() {
    let shown = json!({
        "name": "gw", "type": "Microsoft.Network/applicationGateways",
        "frontendPorts": [{"name": "p", "port": 80, "id": "/subscriptions/s/resourceGroups/g/providers/Microsoft.Network/applicationGateways/gw/frontendPorts/p"}],
        "backendAddressPools": [{"name": "b", "backendAddresses": [{"ipAddress": "127.0.0.1"}]}],
        "backendHttpSettingsCollection": [{"name": "s", "port": 80, "protocol": "Http"}],
        "httpListeners": [{"name": "l", "protocol": "Http",
            "frontendPort": {"id": "/subscriptions/s/resourceGroups/g/providers/Microsoft.Network/applicationGateways/gw/frontendPorts/p"}}],
        "requestRoutingRules": [{"name": "r", "ruleType": "Basic",
            "httpListener": {"id": ".../httpListeners/l"},
            "backendAddressPool": {"id": ".../backendAddressPools/b"},
            "backendHttpSettings": {"id": ".../backendHttpSettingsCollection/s"}}]
    });
    let imported = import(
        &shown,
        &Options {
            parameters: None,
            certs_dir: "certs".into(),
        },
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let doc: serde_yaml::Value = serde_yaml::from_str(&imported.yaml).unwrap_or_default();
    assert_eq!(doc["routes"][0]["pool"], "b", "{}", imported.yaml);
    assert_eq!(doc["listeners"][0]["bind"], "0.0.0.0:80");
}

#[test]
fn the_output_validates_with_pinions_loader_and_quotes_values() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let mut g = gateway(json!({
        "requestRoutingRules": [rule("r: with # odd 'chars'", "site", 1)]
    }));
    g["properties"]["backendHttpSettingsCollection"][0]["properties"]["CookieBasedAffinity"] =
        json!("Disabled");
    let imported = run(g, None);
    for f in &imported.files {
        let path = dir.path().join("certs");
        std::fs::create_dir_all(&path).unwrap_or_default();
        std::fs::write(path.join(&f.name), &f.bytes).unwrap_or_default();
    }
    let file = dir.path().join("out.yaml");
    std::fs::write(&file, &imported.yaml).unwrap_or_default();
    let loaded = crate::config::load_with(&file, crate::config::Resolve::Offline);
    assert!(
        loaded.is_ok(),
        "{:?}\n{}",
        loaded.err().map(|e| e.to_string()),
        imported.yaml
    );
}

#[test]
fn no_gateway_is_an_error() {
    let r = import(
        &json!({"resources": [{"type": "Microsoft.Network/virtualNetworks"}]}),
        &Options {
            parameters: None,
            certs_dir: String::new(),
        },
    );
    assert!(r.is_err());
}

#[test]
fn trusted_roots_become_a_ca_file_and_authentication_certificates_pins() {
    use base64::Engine as _;
    let root = crate::demo::certs::Ca::new("Backend Root").unwrap_or_else(|e| panic!("{e}"));
    let leaf = crate::demo::certs::Identity::self_signed(&["api.internal"])
        .unwrap_or_else(|e| panic!("{e}"));
    let b64 = |c: &openssl::x509::X509| {
        base64::engine::general_purpose::STANDARD.encode(c.to_der().unwrap_or_default())
    };
    let g = gateway(json!({
        "trustedRootCertificates": [{"name": "Root", "properties": {"data": b64(&root.identity.cert)}}],
        "authenticationCertificates": [{"name": "Leaf", "properties": {"data": b64(&leaf.cert)}}],
        "backendHttpSettingsCollection": [
            {"name": "v2", "properties": {"port": 443, "protocol": "Https", "hostName": "api.internal",
                "trustedRootCertificates": [id("trustedRootCertificates", "root")]}},
            {"name": "v1", "properties": {"port": 8443, "protocol": "Https",
                "authenticationCertificates": [id("authenticationCertificates", "leaf")]}}
        ],
        "requestRoutingRules": [
            {"name": "a", "properties": {"ruleType": "Basic", "httpListener": id("httpListeners", "site"),
                "backendAddressPool": id("backendAddressPools", "web"),
                "backendHttpSettings": id("backendHttpSettingsCollection", "v2")}},
            {"name": "b", "properties": {"ruleType": "Basic", "httpListener": id("httpListeners", "catchall"),
                "backendAddressPool": id("backendAddressPools", "web"),
                "backendHttpSettings": id("backendHttpSettingsCollection", "v1")}}
        ]
    }));
    let imported = run(g, None);
    let doc: serde_yaml::Value = serde_yaml::from_str(&imported.yaml).unwrap_or_default();
    // One address pool with two HTTP settings: two pinion pools.
    let v2 = &doc["pools"][0];
    assert_eq!(v2["name"], "Web--v2", "{}", imported.yaml);
    assert_eq!(v2["tls"]["ca"], "certs/v2-ca.pem");
    assert_eq!(v2["tls"]["sni"], "api.internal");
    assert_eq!(v2["host_header"], "api.internal");
    let ca = imported.files.iter().find(|f| f.name == "v2-ca.pem");
    let ca = ca.map(|f| openssl::x509::X509::from_pem(&f.bytes));
    assert!(matches!(ca, Some(Ok(c)) if c.to_der().ok() == root.identity.cert.to_der().ok()));
    let v1 = &doc["pools"][1];
    assert_eq!(v1["name"], "Web--v1");
    assert_eq!(v1["servers"][0], "127.0.0.1:8443");
    let pin = crate::tls::Pin::of_cert(&leaf.cert)
        .map(|p| p.to_string())
        .unwrap_or_default();
    assert_eq!(v1["tls"]["pins"][0]["sha256"], pin.as_str());
    // References spelled in another case still count as uses, under the declared names.
    let report = imported.report.markdown("t");
    assert!(!report.contains("no rule uses it"), "{report}");
    assert!(report.contains("| `authenticationCertificates/Leaf` | mapped with a difference"));
    assert!(
        report.contains("| `trustedRootCertificates/Root` | mapped |"),
        "{report}"
    );
}

#[test]
fn a_verifying_pool_by_address_without_a_name_is_reported() {
    let g = gateway(json!({
        "backendHttpSettingsCollection": [{"name": "tls", "properties": {"port": 443, "protocol": "Https"}}],
        "requestRoutingRules": [{"name": "a", "properties": {"ruleType": "Basic",
            "httpListener": id("httpListeners", "site"),
            "backendAddressPool": id("backendAddressPools", "web"),
            "backendHttpSettings": id("backendHttpSettingsCollection", "tls")}}]
    }));
    let imported = run(g, None);
    let report = imported.report.markdown("t");
    assert!(
        report.contains("| `backendHttpSettingsCollection/tls.hostName` | **not mapped**"),
        "{report}"
    );
    assert!(report.contains("system trust store"), "{report}");
}
