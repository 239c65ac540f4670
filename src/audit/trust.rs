//! What the audit log records of a configuration's trust: per pool, its pins (with scope and
//! window), its trusted CAs, its pin mode and name check; and what changed between two.

use crate::config::{PinMode, UpstreamTls};
use crate::pool::Pool;
use crate::tls::{rfc3339, PinScope};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// One whitelisted key as the audit log writes it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PinRecord {
    /// Base64 SHA-256 of the key.
    pub sha256: String,
    /// `leaf` or `chain`.
    pub scope: String,
    /// Start of its window (RFC 3339), if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub not_before: Option<String>,
    /// End of its window (RFC 3339), if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub not_after: Option<String>,
}

/// One trusted root as the audit log writes it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct CaRecord {
    /// Hex SHA-256 of the certificate's DER.
    pub sha256: String,
    /// Its subject.
    pub subject: String,
}

/// A pool's trust.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolTrust {
    /// End-to-end TLS to its servers.
    pub tls: bool,
    /// Its whitelist.
    pub pins: BTreeSet<PinRecord>,
    /// Its trusted roots (empty: none, or the system store when there are no pins).
    pub ca: BTreeSet<CaRecord>,
    /// `enforce` or `report`.
    pub pin_mode: String,
    /// Whether names are checked.
    pub verify_hostname: bool,
}

/// The trust of every pool, by name.
pub type Trust = BTreeMap<String, PoolTrust>;

/// The trust of `pools`.
pub fn of(pools: &[Pool]) -> Trust {
    pools
        .iter()
        .map(|p| (p.name.clone(), pool_trust(p.tls.as_deref())))
        .collect()
}

fn pool_trust(tls: Option<&UpstreamTls>) -> PoolTrust {
    let Some(tls) = tls else {
        return PoolTrust {
            tls: false,
            pins: BTreeSet::new(),
            ca: BTreeSet::new(),
            pin_mode: "enforce".into(),
            verify_hostname: false,
        };
    };
    let pins = tls
        .pins
        .iter()
        .map(|e| PinRecord {
            sha256: e.pin.to_string(),
            scope: e.scope.as_str().into(),
            not_before: e.not_before.map(rfc3339),
            not_after: e.not_after.map(rfc3339),
        })
        .collect();
    let ca = tls
        .ca
        .iter()
        .flat_map(|c| c.iter())
        .map(|c| CaRecord {
            sha256: crate::config::sha256_hex(&c.to_der().unwrap_or_default()),
            subject: crate::tls::chain::dn(c.subject_name()),
        })
        .collect();
    let chain_pins = tls.pins.iter().any(|e| e.scope == PinScope::Chain);
    PoolTrust {
        tls: true,
        pins,
        ca,
        pin_mode: match tls.pin_mode {
            PinMode::Enforce => "enforce".into(),
            PinMode::Report => "report".into(),
        },
        verify_hostname: tls.verify_hostname && (tls.verifies_chain() || chain_pins),
    }
}

/// What changed in one pool.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PoolChange {
    /// The pool.
    pub pool: String,
    /// `added`, `removed` or `changed`.
    pub change: &'static str,
    /// Pins added.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub pins_added: Vec<PinRecord>,
    /// Pins removed.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub pins_removed: Vec<PinRecord>,
    /// Roots added.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ca_added: Vec<CaRecord>,
    /// Roots removed.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ca_removed: Vec<CaRecord>,
    /// `[old, new]` pin mode, when it changed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pin_mode: Option<[String; 2]>,
    /// `[old, new]` name check, when it changed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verify_hostname: Option<[bool; 2]>,
    /// `[old, new]` TLS to the servers, when it changed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<[bool; 2]>,
}

/// Every pool whose trust differs between `old` and `new`, in name order.
pub fn diff(old: &Trust, new: &Trust) -> Vec<PoolChange> {
    let names: BTreeSet<&String> = old.keys().chain(new.keys()).collect();
    let empty = pool_trust(None);
    names
        .into_iter()
        .filter_map(|name| {
            let (a, b) = (old.get(name), new.get(name));
            let change = match (a, b) {
                (None, Some(_)) => "added",
                (Some(_), None) => "removed",
                _ => "changed",
            };
            let (a, b) = (a.unwrap_or(&empty), b.unwrap_or(&empty));
            let c = PoolChange {
                pool: name.clone(),
                change,
                pins_added: b.pins.difference(&a.pins).cloned().collect(),
                pins_removed: a.pins.difference(&b.pins).cloned().collect(),
                ca_added: b.ca.difference(&a.ca).cloned().collect(),
                ca_removed: a.ca.difference(&b.ca).cloned().collect(),
                pin_mode: (a.pin_mode != b.pin_mode && a.tls && b.tls)
                    .then(|| [a.pin_mode.clone(), b.pin_mode.clone()]),
                verify_hostname: (a.verify_hostname != b.verify_hostname && a.tls && b.tls)
                    .then_some([a.verify_hostname, b.verify_hostname]),
                tls: (a.tls != b.tls && change == "changed").then_some([a.tls, b.tls]),
            };
            let changed = change != "changed"
                || !c.pins_added.is_empty()
                || !c.pins_removed.is_empty()
                || !c.ca_added.is_empty()
                || !c.ca_removed.is_empty()
                || c.pin_mode.is_some()
                || c.verify_hostname.is_some()
                || c.tls.is_some();
            changed.then_some(c)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trust(pins: &[&str], mode: &str) -> PoolTrust {
        PoolTrust {
            tls: true,
            pins: pins
                .iter()
                .map(|p| PinRecord {
                    sha256: (*p).to_owned(),
                    scope: "leaf".into(),
                    not_before: None,
                    not_after: None,
                })
                .collect(),
            ca: BTreeSet::new(),
            pin_mode: mode.into(),
            verify_hostname: false,
        }
    }

    #[test]
    fn diff_names_added_and_removed_pins_and_mode_changes_only() {
        let old: Trust = [
            ("api".to_owned(), trust(&["A", "B"], "enforce")),
            ("same".to_owned(), trust(&["S"], "enforce")),
            ("gone".to_owned(), trust(&["G"], "enforce")),
        ]
        .into();
        let new: Trust = [
            ("api".to_owned(), trust(&["B", "C"], "report")),
            ("same".to_owned(), trust(&["S"], "enforce")),
        ]
        .into();
        let d = diff(&old, &new);
        assert_eq!(d.len(), 2);
        assert_eq!(d[0].pool, "api");
        assert_eq!(d[0].pins_added[0].sha256, "C");
        assert_eq!(d[0].pins_removed[0].sha256, "A");
        assert_eq!(d[0].pin_mode, Some(["enforce".into(), "report".into()]));
        assert_eq!((d[1].pool.as_str(), d[1].change), ("gone", "removed"));
        assert_eq!(d[1].pins_removed.len(), 1);
    }
}
