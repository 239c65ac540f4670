//! `pinion import azure`: real public quickstart templates convert, validate with `pinion -t`
//! and report what became of each element; a template with v1 authentication certificates
//! becomes a running gateway that serves the whitelisted backend and refuses an impostor.

use crate::harness::{get, pinion, Backend, Env, Identity};
use base64::Engine as _;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/azure")
        .join(name)
        .join("azuredeploy.json")
}

/// A base64 PFX of `identity` protected by `password`, as a template's `data` carries it.
fn pfx(identity: &Identity, password: &str) -> String {
    let p12 = openssl::pkcs12::Pkcs12::builder()
        .name("front")
        .pkey(&identity.key)
        .cert(&identity.cert)
        .build2(password)
        .unwrap();
    base64::engine::general_purpose::STANDARD.encode(p12.to_der().unwrap())
}

fn params(values: Value) -> Value {
    let obj = values.as_object().unwrap();
    json!({"parameters": obj.iter().map(|(k, v)| (k.clone(), json!({"value": v}))).collect::<serde_json::Map<_, _>>()})
}

struct Imported {
    out: Output,
    yaml: String,
    report: String,
    file: PathBuf,
}

/// Runs `pinion import azure` on `template` with `parameters` into `dir`.
fn import(dir: &Path, template: &Path, parameters: Option<Value>) -> Imported {
    let file = dir.join("imported.yaml");
    let report = dir.join("report.md");
    let mut cmd = pinion();
    cmd.args(["import", "azure"])
        .arg(template)
        .arg("-o")
        .arg(&file);
    cmd.arg("--report").arg(&report);
    if let Some(p) = parameters {
        let path = dir.join("params.json");
        std::fs::write(&path, p.to_string()).unwrap();
        cmd.arg("--parameters").arg(path);
    }
    let out = cmd.stdin(Stdio::null()).output().unwrap();
    Imported {
        yaml: std::fs::read_to_string(&file).unwrap_or_default(),
        report: std::fs::read_to_string(&report).unwrap_or_default(),
        out,
        file,
    }
}

/// `pinion -t` on the imported file: exit status and output.
fn check(file: &Path) -> (bool, String) {
    let out = pinion()
        .arg("-t")
        .arg("-c")
        .arg(file)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn converts(name: &str, parameters: Option<Value>) -> (Imported, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let imported = import(dir.path(), &fixture(name), parameters);
    assert!(
        imported.out.status.success(),
        "{name}: import failed: {}\n{}",
        String::from_utf8_lossy(&imported.out.stderr),
        imported.report
    );
    let (ok, text) = check(&imported.file);
    assert!(
        ok,
        "{name}: pinion -t refused the import: {text}\n{}",
        imported.yaml
    );
    (imported, dir)
}

fn line<'a>(report: &'a str, element: &str) -> &'a str {
    report
        .lines()
        .find(|l| l.starts_with(&format!("| `{element}`")))
        .unwrap_or_else(|| panic!("no report line for {element}:\n{report}"))
}

#[test]
fn url_path_based_routing_converts() {
    let (i, _dir) = converts(
        "application-gateway-url-path-based-routing",
        Some(params(json!({
            "backendIpAddressDefault": "127.0.0.1",
            "backendIpAddressForPathRule1": "127.0.0.2",
            "backendIpAddressForPathRule2": "127.0.0.3",
            "pathMatch1": "/images/*",
            "pathMatch2": "/video/*"
        }))),
    );
    let doc: serde_yaml::Value = serde_yaml::from_str(&i.yaml).unwrap();
    let routes = doc["routes"].as_sequence().unwrap();
    let names: Vec<_> = routes.iter().map(|r| r["name"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        ["rule1--pathRule1", "rule1--pathRule2", "rule1--default"]
    );
    assert_eq!(routes[0]["paths"][0], "/images/*");
    assert_eq!(routes[0]["pool"], "appGatewayBackendPool1");
    assert_eq!(routes[2]["pool"], "appGatewayBackendPoolDefault");
    assert!(line(&i.report, "urlPathMaps/urlPathMap1/pathRules/pathRule1").contains("case"));
    assert!(line(&i.report, "requestRoutingRules/rule1").contains("| mapped |"));
}

#[test]
fn multihosting_converts_with_its_certificates() {
    let one = Identity::self_signed(&["www.contoso.test"]);
    let two = Identity::self_signed(&["www.fabrikam.test"]);
    let (i, dir) = converts(
        "application-gateway-multihosting",
        Some(params(json!({
            "backendIpAddress1": "127.0.0.1",
            "backendIpAddress2": "127.0.0.2",
            "hostName1": "www.contoso.test",
            "hostName2": "www.fabrikam.test",
            "certData1": pfx(&one, "secret-1"),
            "certPassword1": "secret-1",
            "certData2": pfx(&two, "secret-2"),
            "certPassword2": "secret-2"
        }))),
    );
    let doc: serde_yaml::Value = serde_yaml::from_str(&i.yaml).unwrap();
    let listeners = doc["listeners"].as_sequence().unwrap();
    assert_eq!(listeners.len(), 2, "{}", i.yaml);
    assert_eq!(listeners[0]["bind"], "0.0.0.0:443");
    assert_eq!(doc["routes"][0]["hosts"][0], "www.contoso.test");
    assert_eq!(doc["routes"][1]["hosts"][0], "www.fabrikam.test");
    // The PFX became the same certificate, in PEM.
    let cert = std::fs::read(dir.path().join("certs/appGatewaySslCert1.crt.pem")).unwrap();
    let cert = openssl::x509::X509::from_pem(&cert).unwrap();
    assert_eq!(cert.to_der().unwrap(), one.cert.to_der().unwrap());
    assert!(line(&i.report, "sslCertificates/appGatewaySslCert1").contains("| mapped |"));
    assert!(line(&i.report, "httpListeners/appGatewayHttpListener1")
        .contains("requireServerNameIndication"));
}

#[test]
fn multihosting_without_certificates_gets_named_placeholders() {
    let (i, _dir) = converts(
        "application-gateway-multihosting",
        Some(params(json!({
            "backendIpAddress1": "127.0.0.1",
            "backendIpAddress2": "127.0.0.2",
            "hostName1": "www.contoso.test",
            "hostName2": "www.fabrikam.test"
        }))),
    );
    assert!(
        i.yaml
            .contains("certs/placeholder-appGatewaySslCert1.crt.pem"),
        "{}",
        i.yaml
    );
    let l = line(&i.report, "sslCertificates/appGatewaySslCert1");
    assert!(l.contains("not mapped") && l.contains("PLACEHOLDER"), "{l}");
    // Every unresolved parameter is named by its JSON path.
    assert!(i
        .report
        .contains("expression $.resources[2].properties.sslCertificates[0].properties.data"));
}

#[test]
fn probe_template_converts_every_probe_field() {
    let (i, _dir) = converts(
        "application-gateway-probe",
        Some(params(json!({
            "backend1": "127.0.0.1",
            "healthyStatusCodes": "200-299",
            "probeHost": "health.contoso.test",
            "probePath": "/healthz",
            "probeIntervalInSeconds": 7,
            "probeTimeoutInSeconds": 3,
            "probeUnhealthyThreshold": 4,
            "probePickHostNameFromBackendHttpSettings": false,
            "probeMinServersAvailable": 0
        }))),
    );
    let doc: serde_yaml::Value = serde_yaml::from_str(&i.yaml).unwrap();
    let probe = &doc["pools"][0]["probe"];
    assert_eq!(probe["path"], "/healthz");
    assert_eq!(probe["host"], "health.contoso.test");
    assert_eq!(probe["interval_seconds"], 7);
    assert_eq!(probe["timeout_seconds"], 3);
    assert_eq!(probe["unhealthy_threshold"], 4);
    assert_eq!(probe["status"][0], "200-299");
    assert!(line(&i.report, "probes/Probe1").contains("| mapped |"));
}

#[test]
fn v2_autoscale_converts_and_reports_autoscale() {
    // The address list is an array parameter (its default names private addresses; tests use
    // loopback only, so it is given).
    let (i, _dir) = converts(
        "application-gateway-v2-autoscale-create",
        Some(params(json!({
            "backendIPAddresses": [{"IpAddress": "127.0.0.4"}, {"IpAddress": "127.0.0.5"}],
            "backendPort": 8080
        }))),
    );
    let doc: serde_yaml::Value = serde_yaml::from_str(&i.yaml).unwrap();
    assert_eq!(doc["pools"][0]["servers"][0], "127.0.0.4:8080");
    assert_eq!(doc["pools"][0]["servers"][1], "127.0.0.5:8080");
    assert_eq!(doc["listeners"][0]["bind"], "0.0.0.0:80");
    assert!(line(&i.report, "autoscaleConfiguration").contains("not mapped"));
}

#[test]
fn custom_ssl_policy_converts() {
    let front = Identity::self_signed(&["www.contoso.test"]);
    let (i, _dir) = converts(
        "application-gateway-sslpolicy-custom",
        Some(params(json!({
            "backendIpAddress1": "127.0.0.1",
            "backendIpAddress2": "127.0.0.2",
            "certData": pfx(&front, "pw"),
            "certPassword": "pw"
        }))),
    );
    let doc: serde_yaml::Value = serde_yaml::from_str(&i.yaml).unwrap();
    let tls = &doc["listeners"][0]["tls"];
    assert_eq!(tls["min_version"], "1.2");
    assert!(tls["ciphers"]
        .as_str()
        .unwrap()
        .starts_with("ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:"));
    assert!(line(&i.report, "sslPolicy.minProtocolVersion").contains("TLSv1_1 raised to TLS 1.2"));
}

#[test]
fn usage_errors_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.json");
    let out = pinion()
        .args(["import", "azure"])
        .arg(&missing)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let help = pinion()
        .args(["import", "azure", "--help"])
        .output()
        .unwrap();
    assert!(help.status.success());
    assert!(String::from_utf8_lossy(&help.stdout).contains("--certs-dir"));
}

/// A v1 gateway with end-to-end TLS: two sites on one HTTPS port, each backend whitelisted by
/// an authentication certificate; the impostor presents a different key for the same name.
#[test]
fn authentication_certificates_become_pins_that_refuse_an_impostor() {
    let env = Env::new();
    let front = Identity::self_signed(&["good.test", "bad.test"]);
    let good = Identity::self_signed(&["backend.test"]);
    let impostor = Identity::self_signed(&["backend.test"]);
    let good_backend = Backend::https("good", &good);
    let bad_backend = Backend::https("bad", &impostor);
    let b64 = |c: &openssl::x509::X509| {
        base64::engine::general_purpose::STANDARD.encode(c.to_der().unwrap())
    };
    let id = |kind: &str, name: &str| {
        format!("[resourceId('Microsoft.Network/applicationGateways/{kind}', variables('gw'), '{name}')]")
    };
    let site = |name: &str, host: &str| {
        json!({"name": name, "properties": {
            "frontendPort": {"id": id("frontendPorts", "https")},
            "protocol": "Https",
            "hostName": host,
            "sslCertificate": {"id": id("sslCertificates", "Front")}
        }})
    };
    let settings = |name: &str, port: &str| {
        json!({"name": name, "properties": {
            "Port": format!("[parameters('{port}')]"),
            "Protocol": "Https",
            "authenticationCertificates": [{"id": id("authenticationCertificates", "backendcert")}]
        }})
    };
    let rule = |name: &str, listener: &str, pool: &str, settings: &str| {
        json!({"name": name, "properties": {
            "ruleType": "Basic",
            "httpListener": {"id": id("httpListeners", listener)},
            "backendAddressPool": {"id": id("backendAddressPools", pool)},
            "backendHttpSettings": {"id": id("backendHttpSettingsCollection", settings)}
        }})
    };
    let template = json!({
        "parameters": {
            "frontPort": {"type": "int"}, "goodPort": {"type": "int"}, "badPort": {"type": "int"},
            "frontData": {"type": "securestring"}, "frontPassword": {"type": "securestring"},
            "backendCer": {"type": "string"}
        },
        "variables": {"gw": "gw-v1"},
        "resources": [{
            "type": "Microsoft.Network/applicationGateways",
            "name": "[variables('gw')]",
            "properties": {
                "sku": {"name": "Standard_Medium", "tier": "Standard"},
                "sslCertificates": [{"name": "front", "properties": {
                    "data": "[parameters('frontData')]", "password": "[parameters('frontPassword')]"}}],
                "authenticationCertificates": [{"name": "BackendCert",
                    "properties": {"data": "[parameters('backendCer')]"}}],
                "frontendPorts": [{"name": "https", "properties": {"port": "[parameters('frontPort')]"}}],
                "backendAddressPools": [
                    {"name": "good", "properties": {"backendAddresses": [{"ipAddress": "127.0.0.1"}]}},
                    {"name": "bad", "properties": {"backendAddresses": [{"ipAddress": "127.0.0.1"}]}}
                ],
                "backendHttpSettingsCollection": [settings("to-good", "goodPort"), settings("to-bad", "badPort")],
                "httpListeners": [site("good-site", "good.test"), site("bad-site", "bad.test")],
                "requestRoutingRules": [
                    rule("good-rule", "good-site", "good", "to-good"),
                    rule("bad-rule", "bad-site", "bad", "to-bad")
                ]
            }
        }]
    });
    let template_file = env.path().join("template.json");
    std::fs::write(&template_file, template.to_string()).unwrap();
    let imported = import(
        env.path(),
        &template_file,
        Some(params(json!({
            "frontPort": env.port,
            "goodPort": good_backend.port,
            "badPort": bad_backend.port,
            "frontData": pfx(&front, "front-pw"),
            "frontPassword": "front-pw",
            "backendCer": b64(&good.cert)
        }))),
    );
    assert!(
        imported.out.status.success(),
        "{}",
        String::from_utf8_lossy(&imported.out.stderr)
    );
    assert!(imported.yaml.contains(&good.pin()), "{}", imported.yaml);
    assert!(line(&imported.report, "authenticationCertificates/BackendCert").contains(&good.pin()));
    // The test listens on loopback only.
    let yaml = imported.yaml.replace("0.0.0.0:", "127.0.0.1:");
    let gw = env.start(&yaml);
    let ok = get(gw.port(), "good.test", "/");
    assert_eq!(ok.status, 200, "whitelisted backend: {ok:?}");
    let refused = get(gw.port(), "bad.test", "/");
    assert_eq!(refused.status, 502, "impostor: {refused:?}");
    assert!(
        bad_backend.requests().is_empty(),
        "the impostor received a request"
    );
}

#[test]
fn redirect_template_converts() {
    let front = Identity::self_signed(&["www.contoso.test"]);
    let (i, _dir) = converts(
        "application-gateway-redirect-basic",
        Some(params(json!({
            "virtualNetworkName": "vnet",
            "backendIpAddress1": "127.0.0.1",
            "backendIpAddress2": "127.0.0.2",
            "certData": pfx(&front, "pw"),
            "certPassword": "pw"
        }))),
    );
    let doc: serde_yaml::Value = serde_yaml::from_str(&i.yaml).unwrap();
    let listeners = doc["listeners"].as_sequence().unwrap();
    // Port 80 to the HTTPS listener (no host name): the whole listener redirects.
    assert_eq!(listeners[0]["bind"], "0.0.0.0:80");
    assert_eq!(
        listeners[0]["redirect_to_https"],
        "appGatewayHttpsListener1"
    );
    let routes = doc["routes"].as_sequence().unwrap();
    let away = routes.iter().find(|r| r["name"] == "rule3").unwrap();
    assert_eq!(away["redirect"]["to"], "http://www.bing.com");
    assert_eq!(away["redirect"]["status"], 307);
    assert_eq!(away["redirect"]["keep_path"], true);
    assert_eq!(away["listeners"][0], "appGatewayHttpListener2");
    let served = routes.iter().find(|r| r["name"] == "rule2").unwrap();
    assert_eq!(served["pool"], "appGatewayBackendPool1");
    assert!(line(&i.report, "redirectConfigurations/redirectConfig1").contains("308 (was 301)"));
    assert!(
        line(&i.report, "backendAddressPools/appGatewayBackendPool2").contains("no rule uses it")
    );
}

#[test]
fn a_template_whose_rules_cannot_be_mapped_exits_1_naming_what_is_missing() {
    // No --parameters: the backend addresses and paths have no default.
    let dir = tempfile::tempdir().unwrap();
    let i = import(
        dir.path(),
        &fixture("application-gateway-url-path-based-routing"),
        None,
    );
    assert_eq!(
        i.out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&i.out.stderr)
    );
    assert!(i
        .report
        .contains("parameter `backendIpAddressDefault` has no default value"));
    assert!(line(&i.report, "requestRoutingRules").contains("404"));
}
