//! The gateway's SSL policy as a pinion listener's `min_version` and `ciphers`.

use super::arm::get;
use crate::import::Report;
use serde_json::Value;

/// What the policy becomes on every HTTPS listener.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ListenerPolicy {
    /// `tls.min_version`.
    pub min_version: Option<&'static str>,
    /// `tls.ciphers` (OpenSSL names, `:`-separated).
    pub ciphers: Option<String>,
}

/// IANA cipher suite names the gateway accepts, and OpenSSL's names for them.
const SUITES: &[(&str, &str)] = &[
    (
        "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
        "ECDHE-ECDSA-AES128-GCM-SHA256",
    ),
    (
        "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
        "ECDHE-ECDSA-AES256-GCM-SHA384",
    ),
    (
        "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
        "ECDHE-RSA-AES128-GCM-SHA256",
    ),
    (
        "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
        "ECDHE-RSA-AES256-GCM-SHA384",
    ),
    (
        "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA",
        "ECDHE-ECDSA-AES128-SHA",
    ),
    (
        "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA",
        "ECDHE-ECDSA-AES256-SHA",
    ),
    (
        "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256",
        "ECDHE-ECDSA-AES128-SHA256",
    ),
    (
        "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA384",
        "ECDHE-ECDSA-AES256-SHA384",
    ),
    ("TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA", "ECDHE-RSA-AES128-SHA"),
    ("TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA", "ECDHE-RSA-AES256-SHA"),
    (
        "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256",
        "ECDHE-RSA-AES128-SHA256",
    ),
    (
        "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA384",
        "ECDHE-RSA-AES256-SHA384",
    ),
    (
        "TLS_DHE_RSA_WITH_AES_128_GCM_SHA256",
        "DHE-RSA-AES128-GCM-SHA256",
    ),
    (
        "TLS_DHE_RSA_WITH_AES_256_GCM_SHA384",
        "DHE-RSA-AES256-GCM-SHA384",
    ),
    ("TLS_DHE_RSA_WITH_AES_128_CBC_SHA", "DHE-RSA-AES128-SHA"),
    ("TLS_DHE_RSA_WITH_AES_256_CBC_SHA", "DHE-RSA-AES256-SHA"),
    ("TLS_RSA_WITH_AES_128_GCM_SHA256", "AES128-GCM-SHA256"),
    ("TLS_RSA_WITH_AES_256_GCM_SHA384", "AES256-GCM-SHA384"),
    ("TLS_RSA_WITH_AES_128_CBC_SHA256", "AES128-SHA256"),
    ("TLS_RSA_WITH_AES_256_CBC_SHA256", "AES256-SHA256"),
    ("TLS_RSA_WITH_AES_128_CBC_SHA", "AES128-SHA"),
    ("TLS_RSA_WITH_AES_256_CBC_SHA", "AES256-SHA"),
    ("TLS_RSA_WITH_3DES_EDE_CBC_SHA", "DES-CBC3-SHA"),
];

/// The predefined policy that allows only ECDHE with AES-GCM.
const STRICT_2022: &str = "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:\
                           ECDHE-RSA-AES128-GCM-SHA256:ECDHE-RSA-AES256-GCM-SHA384";

/// Maps `sslPolicy` (absent: the gateway's default), recording the outcome.
pub fn map(policy: Option<&Value>, report: &mut Report) -> ListenerPolicy {
    let element = "sslPolicy";
    let Some(policy) = policy.filter(|p| !p.is_null()) else {
        report.differs(
            element,
            "listeners[].tls",
            "absent: the gateway's default policy (TLS 1.0+ on older API versions); pinion's \
             default is TLS 1.2+ with Mozilla's intermediate cipher list",
        );
        return ListenerPolicy::default();
    };
    let text = |k: &str| get(policy, k).and_then(Value::as_str).unwrap_or_default();
    let kind = text("policyType");
    let name = text("policyName");
    if get(policy, "disabledSslProtocols")
        .is_some_and(|v| v.as_array().is_some_and(|a| !a.is_empty()))
    {
        report.differs(
            format!("{element}.disabledSslProtocols"),
            "listeners[].tls.min_version",
            "pinion never offers TLS 1.0 or 1.1; the protocols left enabled above 1.1 stay on",
        );
    }
    if kind.eq_ignore_ascii_case("Predefined") || (!name.is_empty() && kind.is_empty()) {
        return predefined(name, report);
    }
    if kind.eq_ignore_ascii_case("Custom") || kind.eq_ignore_ascii_case("CustomV2") {
        return custom(policy, report);
    }
    report.differs(
        element,
        "listeners[].tls",
        format!("policy type `{kind}` unknown; pinion's default (TLS 1.2+, Mozilla intermediate)"),
    );
    ListenerPolicy::default()
}

fn predefined(name: &str, report: &mut Report) -> ListenerPolicy {
    let element = format!("sslPolicy/{name}");
    let min = Some("1.2");
    match name.to_ascii_lowercase().as_str() {
        "appgwsslpolicy20220101s" => {
            report.mapped(
                element,
                "listeners[].tls: min_version 1.2, ECDHE AES-GCM ciphers",
            );
            ListenerPolicy {
                min_version: min,
                ciphers: Some(STRICT_2022.to_owned()),
            }
        }
        "appgwsslpolicy20220101" | "appgwsslpolicy20170401s" => {
            report.differs(
                element,
                "listeners[].tls.min_version: 1.2",
                "TLS 1.2 minimum as in the policy; the TLS 1.2 cipher list is pinion's \
                 default (Mozilla intermediate: ECDHE with AES-GCM and ChaCha20), without the \
                 policy's CBC suites",
            );
            ListenerPolicy {
                min_version: min,
                ciphers: None,
            }
        }
        _ => {
            report.differs(
                element,
                "listeners[].tls.min_version: 1.2",
                "the policy allows TLS 1.0/1.1, which pinion never offers: clients need TLS \
                 1.2 or later; ciphers are pinion's default (Mozilla intermediate)",
            );
            ListenerPolicy {
                min_version: min,
                ciphers: None,
            }
        }
    }
}

fn custom(policy: &Value, report: &mut Report) -> ListenerPolicy {
    let min = get(policy, "minProtocolVersion")
        .and_then(Value::as_str)
        .unwrap_or("TLSv1_2");
    let min_version = match min.to_ascii_uppercase().as_str() {
        "TLSV1_3" => "1.3",
        "TLSV1_2" => {
            report.mapped(
                "sslPolicy.minProtocolVersion",
                "listeners[].tls.min_version: 1.2",
            );
            "1.2"
        }
        _ => {
            report.differs(
                "sslPolicy.minProtocolVersion",
                "listeners[].tls.min_version: 1.2",
                format!("{min} raised to TLS 1.2: pinion never offers TLS 1.0 or 1.1"),
            );
            "1.2"
        }
    };
    if min_version == "1.3" {
        report.mapped(
            "sslPolicy.minProtocolVersion",
            "listeners[].tls.min_version: 1.3",
        );
    }
    let mut ciphers = Vec::new();
    let suites = get(policy, "cipherSuites")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    for suite in suites.iter().filter_map(Value::as_str) {
        if let Some((_, ossl)) = SUITES
            .iter()
            .find(|(iana, _)| iana.eq_ignore_ascii_case(suite))
        {
            ciphers.push(*ossl);
        } else if suite.starts_with("TLS_AES_") || suite.starts_with("TLS_CHACHA20_") {
            report.differs(
                format!("sslPolicy.cipherSuites/{suite}"),
                "",
                "a TLS 1.3 suite: pinion offers OpenSSL's TLS 1.3 suites, not configurable",
            );
        } else {
            report.not_mapped(
                format!("sslPolicy.cipherSuites/{suite}"),
                "no OpenSSL equivalent enabled in pinion's builds (DSS/3DES-era suite); left out",
            );
        }
    }
    if ciphers.is_empty() {
        if !suites.is_empty() {
            report.differs(
                "sslPolicy.cipherSuites",
                "listeners[].tls.ciphers",
                "none of the suites maps to a TLS 1.2 cipher; pinion's default list applies",
            );
        }
        return ListenerPolicy {
            min_version: Some(min_version),
            ciphers: None,
        };
    }
    report.mapped(
        "sslPolicy.cipherSuites",
        format!(
            "listeners[].tls.ciphers ({} suites, same order)",
            ciphers.len()
        ),
    );
    ListenerPolicy {
        min_version: Some(min_version),
        ciphers: Some(ciphers.join(":")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn custom_policy_maps_to_openssl_names() {
        let mut r = Report::default();
        let p = map(
            Some(
                &json!({"policyType": "Custom", "minProtocolVersion": "TLSv1_1",
                "cipherSuites": ["TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256", "TLS_RSA_WITH_AES_128_CBC_SHA",
                                 "TLS_DHE_DSS_WITH_AES_128_CBC_SHA"]}),
            ),
            &mut r,
        );
        assert_eq!(p.min_version, Some("1.2"));
        assert_eq!(
            p.ciphers.as_deref(),
            Some("ECDHE-RSA-AES128-GCM-SHA256:AES128-SHA")
        );
        assert!(r.entries.iter().any(|e| e.element.contains("DHE_DSS")));
    }

    #[test]
    fn predefined_strict_policy() {
        let mut r = Report::default();
        let p = map(
            Some(&json!({"policyType": "Predefined", "policyName": "AppGwSslPolicy20220101S"})),
            &mut r,
        );
        assert_eq!(p.ciphers.as_deref(), Some(STRICT_2022));
    }
}
