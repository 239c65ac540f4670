//! Certificates generated at run time, for the demo and for tests: never checked in, so they
//! never expire in the repository.

use openssl::asn1::Asn1Time;
use openssl::bn::{BigNum, MsbOption};
use openssl::ec::{EcGroup, EcKey};
use openssl::error::ErrorStack;
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{PKey, Private};
use openssl::ssl::{SslAcceptor, SslAcceptorBuilder, SslMethod};
use openssl::x509::extension::{BasicConstraints, KeyUsage, SubjectAlternativeName};
use openssl::x509::{X509Builder, X509Name, X509NameBuilder, X509};
use std::path::{Path, PathBuf};

/// Errors generating or writing certificates.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// OpenSSL failed.
    #[error("openssl: {0}")]
    OpenSsl(#[from] ErrorStack),
    /// Writing a file failed.
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A certificate needs at least one name.
    #[error("a certificate needs at least one name")]
    NoName,
}

/// A certificate and its private key.
#[derive(Clone)]
pub struct Identity {
    /// The certificate.
    pub cert: X509,
    /// Its private key (ECDSA P-256).
    pub key: PKey<Private>,
}

/// A private certificate authority.
pub struct Ca {
    /// The root certificate and key.
    pub identity: Identity,
}

impl Identity {
    /// A self-signed leaf for `names` (DNS names or IP addresses; the first is also the CN).
    pub fn self_signed(names: &[&str]) -> Result<Identity, CertError> {
        Identity::self_signed_between(
            names,
            Asn1Time::days_from_now(0)?,
            Asn1Time::days_from_now(30)?,
        )
    }

    /// A self-signed leaf for `names` valid from `not_before` to `not_after` (for tests of
    /// expired and expiring certificates).
    pub fn self_signed_between(
        names: &[&str],
        not_before: Asn1Time,
        not_after: Asn1Time,
    ) -> Result<Identity, CertError> {
        let key = new_key()?;
        let cn = names.first().ok_or(CertError::NoName)?;
        let subject = name(cn)?;
        let mut b = builder(&subject, &key)?;
        b.set_not_before(&not_before)?;
        b.set_not_after(&not_after)?;
        b.set_issuer_name(&subject)?;
        add_names(&mut b, names)?;
        b.sign(&key, MessageDigest::sha256())?;
        Ok(Identity {
            cert: b.build(),
            key,
        })
    }

    /// Writes `NAME.pem` and `NAME.key` into `dir`; returns their paths.
    pub fn write(&self, dir: &Path, name: &str) -> Result<(PathBuf, PathBuf), CertError> {
        let cert = dir.join(format!("{name}.pem"));
        let key = dir.join(format!("{name}.key"));
        write(&cert, &self.cert.to_pem()?)?;
        write(&key, &self.key.private_key_to_pem_pkcs8()?)?;
        Ok((cert, key))
    }

    /// A TLS server builder presenting this certificate (Mozilla intermediate settings).
    pub fn acceptor_builder(&self) -> Result<SslAcceptorBuilder, ErrorStack> {
        let mut b = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls())?;
        b.set_private_key(&self.key)?;
        b.set_certificate(&self.cert)?;
        Ok(b)
    }

    /// The pin of this certificate's key, as `pinion pin` prints it.
    pub fn pin(&self) -> Result<String, crate::tls::TlsError> {
        Ok(crate::tls::Pin::of_cert(&self.cert)?.to_string())
    }
}

impl Ca {
    /// A new root CA named `cn`.
    pub fn new(cn: &str) -> Result<Ca, CertError> {
        ca(cn, None)
    }

    /// An intermediate CA named `cn`, signed by this CA.
    pub fn intermediate(&self, cn: &str) -> Result<Ca, CertError> {
        ca(cn, Some(&self.identity))
    }

    /// A leaf for `names`, signed by this CA.
    pub fn issue(&self, names: &[&str]) -> Result<Identity, CertError> {
        let key = new_key()?;
        let subject = name(names.first().ok_or(CertError::NoName)?)?;
        let mut b = builder(&subject, &key)?;
        b.set_issuer_name(self.identity.cert.subject_name())?;
        add_names(&mut b, names)?;
        b.sign(&self.identity.key, MessageDigest::sha256())?;
        Ok(Identity {
            cert: b.build(),
            key,
        })
    }

    /// Writes the root certificate as `NAME.pem` into `dir`.
    pub fn write(&self, dir: &Path, name: &str) -> Result<PathBuf, CertError> {
        let path = dir.join(format!("{name}.pem"));
        write(&path, &self.identity.cert.to_pem()?)?;
        Ok(path)
    }
}

/// A CA certificate named `cn`, self-signed or signed by `issuer`.
fn ca(cn: &str, issuer: Option<&Identity>) -> Result<Ca, CertError> {
    let key = new_key()?;
    let subject = name(cn)?;
    let mut b = builder(&subject, &key)?;
    b.set_issuer_name(issuer.map_or(&*subject, |i| i.cert.subject_name()))?;
    b.append_extension(BasicConstraints::new().critical().ca().build()?)?;
    b.append_extension(
        KeyUsage::new()
            .critical()
            .key_cert_sign()
            .crl_sign()
            .build()?,
    )?;
    b.sign(issuer.map_or(&key, |i| &i.key), MessageDigest::sha256())?;
    Ok(Ca {
        identity: Identity {
            cert: b.build(),
            key,
        },
    })
}

fn write(path: &Path, bytes: &[u8]) -> Result<(), CertError> {
    std::fs::write(path, bytes).map_err(|source| CertError::Write {
        path: path.to_owned(),
        source,
    })
}

fn new_key() -> Result<PKey<Private>, ErrorStack> {
    let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1)?;
    PKey::from_ec_key(EcKey::generate(&group)?)
}

fn name(cn: &str) -> Result<X509Name, ErrorStack> {
    let mut n = X509NameBuilder::new()?;
    n.append_entry_by_text("CN", cn)?;
    Ok(n.build())
}

fn builder(subject: &X509Name, key: &PKey<Private>) -> Result<X509Builder, ErrorStack> {
    let mut b = X509Builder::new()?;
    b.set_version(2)?;
    let mut serial = BigNum::new()?;
    serial.rand(64, MsbOption::MAYBE_ZERO, false)?;
    let serial = serial.to_asn1_integer()?;
    b.set_serial_number(&serial)?;
    b.set_subject_name(subject)?;
    b.set_pubkey(key)?;
    let (from, until) = (Asn1Time::days_from_now(0)?, Asn1Time::days_from_now(30)?);
    b.set_not_before(&from)?;
    b.set_not_after(&until)?;
    Ok(b)
}

fn add_names(b: &mut X509Builder, names: &[&str]) -> Result<(), ErrorStack> {
    let mut san = SubjectAlternativeName::new();
    for n in names {
        if n.parse::<std::net::IpAddr>().is_ok() {
            san.ip(n);
        } else {
            san.dns(n);
        }
    }
    let ext = san.build(&b.x509v3_context(None, None))?;
    b.append_extension(ext)
}
