//! Certificates generated at test time (never checked in, never expiring mid-test).

use openssl::asn1::Asn1Time;
use openssl::bn::{BigNum, MsbOption};
use openssl::ec::{EcGroup, EcKey};
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{PKey, Private};
use openssl::x509::extension::{BasicConstraints, KeyUsage, SubjectAlternativeName};
use openssl::x509::{X509Builder, X509NameBuilder, X509};
use std::path::{Path, PathBuf};

/// A certificate and its private key.
#[derive(Clone)]
pub struct Identity {
    pub cert: X509,
    pub key: PKey<Private>,
}

fn new_key() -> PKey<Private> {
    let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap();
    PKey::from_ec_key(EcKey::generate(&group).unwrap()).unwrap()
}

fn builder(cn: &str, key: &PKey<Private>) -> X509Builder {
    let mut name = X509NameBuilder::new().unwrap();
    name.append_entry_by_text("CN", cn).unwrap();
    let name = name.build();
    let mut b = X509Builder::new().unwrap();
    b.set_version(2).unwrap();
    let mut serial = BigNum::new().unwrap();
    serial.rand(64, MsbOption::MAYBE_ZERO, false).unwrap();
    b.set_serial_number(&serial.to_asn1_integer().unwrap())
        .unwrap();
    b.set_subject_name(&name).unwrap();
    b.set_pubkey(key).unwrap();
    b.set_not_before(&Asn1Time::days_from_now(0).unwrap())
        .unwrap();
    b.set_not_after(&Asn1Time::days_from_now(30).unwrap())
        .unwrap();
    b
}

fn add_names(b: &mut X509Builder, names: &[&str]) {
    let mut san = SubjectAlternativeName::new();
    for n in names {
        if n.parse::<std::net::IpAddr>().is_ok() {
            san.ip(n);
        } else {
            san.dns(n);
        }
    }
    let ext = san.build(&b.x509v3_context(None, None)).unwrap();
    b.append_extension(ext).unwrap();
}

impl Identity {
    /// A self-signed leaf for `names` (the first is also the CN).
    pub fn self_signed(names: &[&str]) -> Identity {
        let key = new_key();
        let mut b = builder(names[0], &key);
        let subject = {
            let mut n = X509NameBuilder::new().unwrap();
            n.append_entry_by_text("CN", names[0]).unwrap();
            n.build()
        };
        b.set_issuer_name(&subject).unwrap();
        add_names(&mut b, names);
        b.sign(&key, MessageDigest::sha256()).unwrap();
        Identity {
            cert: b.build(),
            key,
        }
    }

    /// Writes `NAME.pem` and `NAME.key` into `dir`; returns their paths.
    pub fn write(&self, dir: &Path, name: &str) -> (PathBuf, PathBuf) {
        let cert = dir.join(format!("{name}.pem"));
        let key = dir.join(format!("{name}.key"));
        std::fs::write(&cert, self.cert.to_pem().unwrap()).unwrap();
        std::fs::write(&key, self.key.private_key_to_pem_pkcs8().unwrap()).unwrap();
        (cert, key)
    }

    /// The pin `pinion pin` prints for this certificate.
    pub fn pin(&self) -> String {
        use base64::Engine as _;
        let der = self.cert.public_key().unwrap().public_key_to_der().unwrap();
        let digest = openssl::hash::hash(MessageDigest::sha256(), &der).unwrap();
        base64::engine::general_purpose::STANDARD.encode(digest)
    }
}

/// A private certificate authority.
pub struct Ca {
    pub identity: Identity,
}

impl Ca {
    /// A new root CA.
    pub fn new(cn: &str) -> Ca {
        let key = new_key();
        let mut b = builder(cn, &key);
        let subject = {
            let mut n = X509NameBuilder::new().unwrap();
            n.append_entry_by_text("CN", cn).unwrap();
            n.build()
        };
        b.set_issuer_name(&subject).unwrap();
        b.append_extension(BasicConstraints::new().critical().ca().build().unwrap())
            .unwrap();
        b.append_extension(
            KeyUsage::new()
                .critical()
                .key_cert_sign()
                .crl_sign()
                .build()
                .unwrap(),
        )
        .unwrap();
        b.sign(&key, MessageDigest::sha256()).unwrap();
        Ca {
            identity: Identity {
                cert: b.build(),
                key,
            },
        }
    }

    /// A leaf for `names`, signed by this CA.
    pub fn issue(&self, names: &[&str]) -> Identity {
        let key = new_key();
        let mut b = builder(names[0], &key);
        b.set_issuer_name(self.identity.cert.subject_name())
            .unwrap();
        add_names(&mut b, names);
        b.sign(&self.identity.key, MessageDigest::sha256()).unwrap();
        Identity {
            cert: b.build(),
            key,
        }
    }

    /// Writes the root certificate as `NAME.pem` into `dir`.
    pub fn write(&self, dir: &Path, name: &str) -> PathBuf {
        let path = dir.join(format!("{name}.pem"));
        std::fs::write(&path, self.identity.cert.to_pem().unwrap()).unwrap();
        path
    }
}
