//! `pins:` entries: of pools (`pools[].tls.pins`, with scope and window) and of listeners'
//! `client_auth` (leaf keys only).

use super::{Problem, Validator};
use crate::config::locate::KeyPath;
use crate::config::raw::RawPin;
use crate::tls::{parse_rfc3339, read_certificates, read_public_key, Pin, PinEntry, PinScope};
use openssl::x509::X509;

impl Validator<'_> {
    /// The whitelist entries of one pool `pins:` entry (a certificate file may hold several).
    pub(super) fn pool_pin(&mut self, raw: &RawPin, path: &KeyPath) -> Vec<PinEntry> {
        let scope = self.choice(
            path.key("scope"),
            raw.scope.as_deref(),
            &[("leaf", PinScope::Leaf), ("chain", PinScope::Chain)],
            PinScope::Leaf,
            "leaf or chain",
        );
        let mut instant = |key: &str, text: &Option<String>| {
            let text = text.as_deref()?;
            let parsed = parse_rfc3339(text);
            if parsed.is_none() {
                self.err(
                    path.key(key),
                    Problem::BadInstant {
                        value: text.to_owned(),
                    },
                );
            }
            parsed
        };
        let not_before = instant("not_before", &raw.not_before);
        let not_after = instant("not_after", &raw.not_after);
        if let (Some(a), Some(b)) = (not_before, not_after) {
            if b <= a {
                self.err(path.key("not_after"), Problem::EmptyWindow);
            }
        }
        self.pin_keys(raw, path)
            .into_iter()
            .map(|(pin, cert)| PinEntry {
                pin,
                scope,
                not_before,
                not_after,
                cert,
                cert_file: raw.cert.clone(),
            })
            .collect()
    }

    /// The pins of one `pins:` entry of a listener's `client_auth` (leaf keys, no windows).
    pub(super) fn pin(&mut self, raw: &RawPin, path: &KeyPath) -> Vec<Pin> {
        for (key, set) in [
            ("scope", raw.scope.is_some()),
            ("not_before", raw.not_before.is_some()),
            ("not_after", raw.not_after.is_some()),
        ] {
            if set {
                self.err(path.key(key), Problem::PoolPinOnly);
            }
        }
        self.pin_keys(raw, path)
            .into_iter()
            .map(|(pin, _)| pin)
            .collect()
    }

    /// The keys of a `pins:` entry, each with the certificate it was read from, if any.
    fn pin_keys(&mut self, raw: &RawPin, path: &KeyPath) -> Vec<(Pin, Option<X509>)> {
        match (&raw.cert, &raw.public_key, &raw.sha256) {
            (Some(file), None, None) => {
                let here = path.key("cert");
                let Some((full, bytes)) = self.read(&here, file) else {
                    return Vec::new();
                };
                let pins = read_certificates(&bytes).and_then(|certs| {
                    certs
                        .into_iter()
                        .map(|c| Pin::of_cert(&c).map(|p| (p, Some(c))))
                        .collect::<Result<Vec<_>, _>>()
                });
                pins.unwrap_or_else(|e| {
                    self.err(
                        here,
                        Problem::BadCertificate {
                            path: full,
                            reason: e.to_string(),
                        },
                    );
                    Vec::new()
                })
            }
            (None, Some(file), None) => {
                let here = path.key("public_key");
                let Some((full, bytes)) = self.read(&here, file) else {
                    return Vec::new();
                };
                match read_public_key(&bytes).and_then(|k| Pin::of_key(&k)) {
                    Ok(pin) => vec![(pin, None)],
                    Err(e) => {
                        self.err(
                            here,
                            Problem::BadPublicKey {
                                path: full,
                                reason: e.to_string(),
                            },
                        );
                        Vec::new()
                    }
                }
            }
            (None, None, Some(text)) => match Pin::from_base64(text) {
                Some(pin) => vec![(pin, None)],
                None => {
                    self.err(
                        path.key("sha256"),
                        Problem::BadPin {
                            value: text.clone(),
                        },
                    );
                    Vec::new()
                }
            },
            _ => {
                self.err(path.clone(), Problem::PinShape);
                Vec::new()
            }
        }
    }
}
