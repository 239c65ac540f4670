//! Test-time certificates: the library's generator, unwrapped for brevity in tests.

use pinion::demo::certs as lib;
use std::ops::Deref;
use std::path::{Path, PathBuf};

/// A certificate and its key.
#[derive(Clone)]
pub struct Identity(pub lib::Identity);

impl Identity {
    pub fn self_signed(names: &[&str]) -> Identity {
        Identity(lib::Identity::self_signed(names).unwrap())
    }

    /// A self-signed certificate for `names` valid from `from_days` to `until_days` days from
    /// now (negative: in the past).
    pub fn self_signed_between(names: &[&str], from_days: i64, until_days: i64) -> Identity {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        let at = |days: i64| openssl::asn1::Asn1Time::from_unix(now + days * 86_400).unwrap();
        Identity(lib::Identity::self_signed_between(names, at(from_days), at(until_days)).unwrap())
    }

    /// Writes `NAME.pem` and `NAME.key` into `dir`.
    pub fn write(&self, dir: &Path, name: &str) -> (PathBuf, PathBuf) {
        self.0.write(dir, name).unwrap()
    }

    /// The pin as `pinion pin` prints it.
    pub fn pin(&self) -> String {
        self.0.pin().unwrap()
    }
}

impl Deref for Identity {
    type Target = lib::Identity;
    fn deref(&self) -> &lib::Identity {
        &self.0
    }
}

/// A private CA.
pub struct Ca(lib::Ca);

impl Ca {
    pub fn new(cn: &str) -> Ca {
        Ca(lib::Ca::new(cn).unwrap())
    }

    pub fn intermediate(&self, cn: &str) -> Ca {
        Ca(self.0.intermediate(cn).unwrap())
    }

    /// The CA's own certificate.
    pub fn cert(&self) -> &openssl::x509::X509 {
        &self.0.identity.cert
    }

    /// The CA's private key (to sign revocation lists in tests).
    pub fn key(&self) -> &openssl::pkey::PKey<openssl::pkey::Private> {
        &self.0.identity.key
    }

    /// The pin of the CA's own key.
    pub fn pin(&self) -> String {
        pinion::tls::Pin::of_cert(self.cert()).unwrap().to_string()
    }

    pub fn issue(&self, names: &[&str]) -> Identity {
        Identity(self.0.issue(names).unwrap())
    }

    pub fn write(&self, dir: &Path, name: &str) -> PathBuf {
        self.0.write(dir, name).unwrap()
    }
}
