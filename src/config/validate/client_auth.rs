//! `listeners[].tls.client_auth` rules.

use super::{Problem, Validator};
use crate::config::locate::KeyPath;
use crate::config::raw::RawClientAuth;
use crate::listener::client_auth::{ClientAuth, ClientAuthMode, DEFAULT_VERIFY_DEPTH};
use crate::tls::PinSet;
use openssl::x509::X509Crl;
use std::sync::Arc;

impl Validator<'_> {
    /// A listener's client-certificate policy: `mode: require`, and a CA, pins or both.
    pub(super) fn client_auth(
        &mut self,
        raw: &RawClientAuth,
        path: &KeyPath,
    ) -> Option<Arc<ClientAuth>> {
        let before = self.problems.len();
        let mode = match raw.mode.as_str() {
            "require" => ClientAuthMode::Require,
            "optional" => ClientAuthMode::Optional,
            other => {
                self.err(
                    path.key("mode"),
                    Problem::BadChoice {
                        value: other.to_owned(),
                        expected: "require or optional",
                    },
                );
                ClientAuthMode::Require
            }
        };
        let ca = raw
            .ca
            .as_ref()
            .and_then(|rel| self.ca_bundle(rel, &path.key("ca")));
        let pins: Vec<_> = raw
            .pins
            .iter()
            .enumerate()
            .flat_map(|(i, p)| self.pin(p, &path.key("pins").index(i)))
            .collect();
        if raw.ca.is_none() && raw.pins.is_empty() {
            self.err(path.clone(), Problem::ClientAuthWithoutTrust);
        }
        let verify_depth = match raw.verify_depth {
            None => DEFAULT_VERIFY_DEPTH,
            Some(d @ 0..=16) => u32::try_from(d).unwrap_or(DEFAULT_VERIFY_DEPTH),
            Some(d) => {
                self.err(
                    path.key("verify_depth"),
                    Problem::OutOfRange {
                        value: d,
                        expected: "0 to 16 certificates between the client's and the CA",
                    },
                );
                DEFAULT_VERIFY_DEPTH
            }
        };
        let crls = raw
            .crl
            .as_ref()
            .map(|rel| self.crls(rel, &path.key("crl")))
            .unwrap_or_default();
        if self.problems.len() != before {
            return None;
        }
        Some(Arc::new(ClientAuth {
            mode,
            headers: raw.headers.unwrap_or(true),
            xfcc: raw.xfcc.unwrap_or(false),
            ca,
            pins: PinSet::new(pins),
            verify_depth,
            crls,
        }))
    }

    /// The revocation lists of a PEM file (one or more `X509 CRL` blocks).
    fn crls(&mut self, rel: &str, path: &KeyPath) -> Vec<X509Crl> {
        let Some((file, bytes)) = self.read(path, rel) else {
            return Vec::new();
        };
        const BEGIN: &[u8] = b"-----BEGIN X509 CRL-----";
        let starts: Vec<usize> = (0..bytes.len())
            .filter(|&i| bytes.get(i..).is_some_and(|rest| rest.starts_with(BEGIN)))
            .collect();
        let parsed: Result<Vec<X509Crl>, String> = starts
            .iter()
            .enumerate()
            .map(|(n, &start)| {
                let end = starts.get(n + 1).copied().unwrap_or(bytes.len());
                let block = bytes.get(start..end).unwrap_or_default();
                X509Crl::from_pem(block).map_err(|e| e.to_string())
            })
            .collect();
        match parsed {
            Ok(crls) if !crls.is_empty() => crls,
            result => {
                let reason = result
                    .err()
                    .unwrap_or_else(|| "no X509 CRL block".to_owned());
                self.err(
                    path.clone(),
                    Problem::BadFile {
                        path: file,
                        reason: format!("{reason}; expected PEM certificate revocation lists"),
                    },
                );
                Vec::new()
            }
        }
    }
}
