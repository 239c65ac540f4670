//! Public-key pins: the SHA-256 of a certificate's DER SubjectPublicKeyInfo, and the files
//! they are read from.
//!
//! A pin names a key, not a certificate: a backend that renews its certificate with the same
//! key keeps its pin, which is what operators rotate on (HPKP, Envoy `verify_certificate_spki`).

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use openssl::hash::{hash, MessageDigest};
use openssl::pkey::{HasPublic, PKey, PKeyRef, Public};
use openssl::x509::{X509Ref, X509};
use std::fmt;

pub mod chain;
mod whitelist;

pub use whitelist::{
    parse_rfc3339, rfc3339, Match, Miss, PathKey, PinEntry, PinScope, PinState, PinWarning,
    Presented, Whitelist,
};

/// Errors reading keys and certificates.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The bytes hold no certificate in PEM or DER form.
    #[error("no certificate found ({0})")]
    NoCertificate(String),
    /// The bytes hold no public key in PEM or DER form.
    #[error("no public key found ({0})")]
    NoPublicKey(String),
    /// OpenSSL failed while encoding or hashing a key.
    #[error("cannot hash the public key: {0}")]
    Hash(#[from] openssl::error::ErrorStack),
}

/// The SHA-256 of a DER SubjectPublicKeyInfo.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Pin(pub [u8; 32]);

impl Pin {
    /// The pin of a public (or private) key.
    pub fn of_key<T: HasPublic>(key: &PKeyRef<T>) -> Result<Pin, TlsError> {
        let der = key.public_key_to_der()?;
        let digest = hash(MessageDigest::sha256(), &der)?;
        let mut out = [0u8; 32];
        out.copy_from_slice(&digest);
        Ok(Pin(out))
    }

    /// The pin of a certificate's public key.
    pub fn of_cert(cert: &X509Ref) -> Result<Pin, TlsError> {
        let key = cert.public_key()?;
        Pin::of_key(&key)
    }

    /// Parses the base64 form `pinion pin` prints; `None` unless it decodes to 32 bytes.
    pub fn from_base64(s: &str) -> Option<Pin> {
        let bytes = B64.decode(s.trim()).ok()?;
        let arr: [u8; 32] = bytes.try_into().ok()?;
        Some(Pin(arr))
    }
}

impl fmt::Display for Pin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&B64.encode(self.0))
    }
}

impl fmt::Debug for Pin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Pin({self})")
    }
}

/// A pool's whitelist of public keys.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PinSet(Vec<Pin>);

impl PinSet {
    /// A set from pins, duplicates removed, in a stable order.
    pub fn new(mut pins: Vec<Pin>) -> PinSet {
        pins.sort();
        pins.dedup();
        PinSet(pins)
    }

    /// Whether `pin` is whitelisted. Whitelists are short, so a scan beats hashing.
    pub fn contains(&self, pin: &Pin) -> bool {
        self.0.iter().any(|p| p == pin)
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The pins in sorted order.
    pub fn iter(&self) -> impl Iterator<Item = &Pin> {
        self.0.iter()
    }
}

/// Every certificate in `bytes`, which may be a PEM bundle or one DER certificate.
pub fn read_certificates(bytes: &[u8]) -> Result<Vec<X509>, TlsError> {
    if looks_like_pem(bytes) {
        let certs =
            X509::stack_from_pem(bytes).map_err(|e| TlsError::NoCertificate(e.to_string()))?;
        if certs.is_empty() {
            return Err(TlsError::NoCertificate(
                "the PEM file has no CERTIFICATE block".into(),
            ));
        }
        return Ok(certs);
    }
    X509::from_der(bytes)
        .map(|c| vec![c])
        .map_err(|e| TlsError::NoCertificate(format!("not PEM, and not DER: {e}")))
}

/// The public key in `bytes`: a PEM or DER SubjectPublicKeyInfo.
pub fn read_public_key(bytes: &[u8]) -> Result<PKey<Public>, TlsError> {
    if looks_like_pem(bytes) {
        return PKey::public_key_from_pem(bytes).map_err(|e| TlsError::NoPublicKey(e.to_string()));
    }
    PKey::public_key_from_der(bytes)
        .map_err(|e| TlsError::NoPublicKey(format!("not PEM, and not DER: {e}")))
}

fn looks_like_pem(bytes: &[u8]) -> bool {
    bytes.windows(11).any(|w| w == b"-----BEGIN ")
}

/// The lower-case names a certificate serves: its DNS subject alternative names, or its CN
/// when it has none.
pub fn names_of(cert: &X509Ref) -> Vec<String> {
    let sans: Vec<String> = cert
        .subject_alt_names()
        .map(|names| {
            names
                .iter()
                .filter_map(|n| n.dnsname().map(str::to_ascii_lowercase))
                .collect()
        })
        .unwrap_or_default();
    if !sans.is_empty() {
        return sans;
    }
    cert.subject_name()
        .entries_by_nid(openssl::nid::Nid::COMMONNAME)
        .filter_map(|e| e.data().to_string().ok())
        .map(|s| s.to_ascii_lowercase())
        .collect()
}

/// Whether a certificate name (`www.example.com` or `*.example.com`) covers `host`; a wildcard
/// stands for exactly one label, as in RFC 6125.
pub fn name_matches(pattern: &str, host: &str) -> bool {
    match pattern.strip_prefix("*.") {
        Some(suffix) => host
            .split_once('.')
            .is_some_and(|(label, rest)| !label.is_empty() && rest == suffix),
        None => pattern == host,
    }
}

/// A short human description of a certificate: its subject CN (or whole subject) and expiry.
pub fn describe(cert: &X509Ref) -> String {
    let subject = cert
        .subject_name()
        .entries()
        .map(|e| {
            let key = e.object().nid().short_name().unwrap_or("?");
            let value = e.data().to_string().unwrap_or_else(|_| "?".into());
            format!("{key}={value}")
        })
        .collect::<Vec<_>>()
        .join(", ");
    format!("subject \"{subject}\", expires {}", cert.not_after())
}

#[cfg(test)]
mod tests {
    use super::*;
    use openssl::ec::{EcGroup, EcKey};
    use openssl::nid::Nid;

    fn key() -> PKey<openssl::pkey::Private> {
        let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap();
        PKey::from_ec_key(EcKey::generate(&group).unwrap()).unwrap()
    }

    #[test]
    fn pin_round_trips_through_base64() {
        let pin = Pin::of_key(&key()).unwrap();
        let text = pin.to_string();
        assert_eq!(text.len(), 44);
        assert_eq!(Pin::from_base64(&text), Some(pin));
    }

    #[test]
    fn malformed_base64_pins_are_rejected() {
        assert_eq!(Pin::from_base64("abc"), None);
        assert_eq!(Pin::from_base64(&B64.encode([0u8; 31])), None);
        assert_eq!(Pin::from_base64("!!!!"), None);
    }

    #[test]
    fn public_key_files_pin_like_the_private_key() {
        let k = key();
        let pem = k.public_key_to_pem().unwrap();
        let der = k.public_key_to_der().unwrap();
        let want = Pin::of_key(&k).unwrap();
        assert_eq!(Pin::of_key(&read_public_key(&pem).unwrap()).unwrap(), want);
        assert_eq!(Pin::of_key(&read_public_key(&der).unwrap()).unwrap(), want);
    }

    #[test]
    fn wildcard_names_cover_exactly_one_label() {
        assert!(name_matches("*.example.com", "a.example.com"));
        assert!(!name_matches("*.example.com", "a.b.example.com"));
        assert!(!name_matches("*.example.com", "example.com"));
        assert!(name_matches("www.example.com", "www.example.com"));
        assert!(!name_matches("www.example.com", "api.example.com"));
    }

    #[test]
    fn pin_set_finds_only_its_members() {
        let a = Pin::of_key(&key()).unwrap();
        let b = Pin::of_key(&key()).unwrap();
        let set = PinSet::new(vec![a, a]);
        assert!(set.contains(&a));
        assert!(!set.contains(&b));
        assert_eq!(set.iter().count(), 1);
    }
}
