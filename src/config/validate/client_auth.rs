//! `listeners[].tls.client_auth` rules.

use super::{Problem, Validator};
use crate::config::locate::KeyPath;
use crate::config::raw::RawClientAuth;
use crate::listener::client_auth::{ClientAuth, ClientAuthMode, DEFAULT_VERIFY_DEPTH};
use crate::tls::{read_certificates, PinSet};
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
        }))
    }
}
