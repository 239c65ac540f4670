//! Certificates of the gateway: listener PFX bundles to PEM files, authentication
//! certificates to pins, trusted roots to CA files, and self-signed placeholders where the
//! template carries no usable certificate.

use crate::tls::Pin;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use openssl::asn1::Asn1Time;
use openssl::ec::{EcGroup, EcKey};
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkcs12::Pkcs12;
use openssl::pkey::PKey;
use openssl::x509::extension::SubjectAlternativeName;
use openssl::x509::{X509Name, X509};

/// A certificate chain and its private key, PEM.
pub struct PemPair {
    /// Leaf first, then the bundle's other certificates.
    pub chain: Vec<u8>,
    /// PKCS#8 private key.
    pub key: Vec<u8>,
}

/// Decodes base64 that may carry line breaks (as certificate data pasted into templates does).
pub fn decode_b64(data: &str) -> Result<Vec<u8>, String> {
    let clean: String = data.chars().filter(|c| !c.is_whitespace()).collect();
    B64.decode(clean).map_err(|e| format!("not base64: {e}"))
}

/// The PEM chain and key inside a base64 PFX.
pub fn from_pfx(data: &str, password: &str) -> Result<PemPair, String> {
    let der = decode_b64(data)?;
    let parsed = Pkcs12::from_der(&der)
        .and_then(|p| p.parse2(password))
        .map_err(|e| {
            format!(
                "the PFX cannot be read ({e}); a wrong password, or legacy encryption (convert \
                 it with `openssl pkcs12 -legacy -in F.pfx -nodes`)"
            )
        })?;
    let (Some(cert), Some(key)) = (parsed.cert, parsed.pkey) else {
        return Err("the PFX holds no certificate with its private key".into());
    };
    let mut chain = cert.to_pem().map_err(|e| e.to_string())?;
    for extra in parsed.ca.into_iter().flatten() {
        if extra.to_der().ok() != cert.to_der().ok() {
            chain.extend(extra.to_pem().map_err(|e| e.to_string())?);
        }
    }
    let key = key.private_key_to_pem_pkcs8().map_err(|e| e.to_string())?;
    Ok(PemPair { chain, key })
}

/// Certificates in base64 data: DER (a .cer) or base64 of PEM text.
pub fn certificates(data: &str) -> Result<Vec<X509>, String> {
    let bytes = decode_b64(data)?;
    let certs = crate::tls::read_certificates(&bytes).map_err(|e| e.to_string())?;
    if certs.is_empty() {
        return Err("no certificate in the data".into());
    }
    Ok(certs)
}

/// The pin (base64 SPKI SHA-256) of every certificate in base64 data.
pub fn pins(data: &str) -> Result<Vec<(String, String)>, String> {
    certificates(data)?
        .iter()
        .map(|c| {
            let pin = Pin::of_cert(c).map_err(|e| e.to_string())?;
            Ok((pin.to_string(), crate::tls::describe(c)))
        })
        .collect()
}

/// Certificates in base64 data as one PEM bundle.
pub fn pem_bundle(data: &str) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    for c in certificates(data)? {
        out.extend(c.to_pem().map_err(|e| e.to_string())?);
    }
    Ok(out)
}

/// A self-signed certificate (P-256, 90 days) for `names`, standing in for a certificate the
/// template does not carry, so that the configuration validates and starts.
pub fn placeholder(names: &[String]) -> Result<PemPair, String> {
    let build = || -> Result<PemPair, openssl::error::ErrorStack> {
        let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1)?;
        let key = PKey::from_ec_key(EcKey::generate(&group)?)?;
        let cn = names.first().map_or("placeholder.invalid", String::as_str);
        let mut name = X509Name::builder()?;
        name.append_entry_by_nid(Nid::COMMONNAME, cn)?;
        name.append_entry_by_nid(Nid::ORGANIZATIONNAME, "pinion import placeholder")?;
        let name = name.build();
        let mut b = X509::builder()?;
        b.set_version(2)?;
        let mut serial = openssl::bn::BigNum::new()?;
        serial.rand(64, openssl::bn::MsbOption::MAYBE_ZERO, false)?;
        let serial = serial.to_asn1_integer()?;
        b.set_serial_number(&serial)?;
        b.set_subject_name(&name)?;
        b.set_issuer_name(&name)?;
        b.set_pubkey(&key)?;
        let not_before = Asn1Time::days_from_now(0)?;
        b.set_not_before(&not_before)?;
        let not_after = Asn1Time::days_from_now(90)?;
        b.set_not_after(&not_after)?;
        let mut san = SubjectAlternativeName::new();
        let mut any = false;
        for n in names.iter().filter(|n| !n.is_empty()) {
            san.dns(n);
            any = true;
        }
        if !any {
            san.dns("placeholder.invalid");
        }
        let ext = san.build(&b.x509v3_context(None, None))?;
        b.append_extension(ext)?;
        b.sign(&key, MessageDigest::sha256())?;
        Ok(PemPair {
            chain: b.build().to_pem()?,
            key: key.private_key_to_pem_pkcs8()?,
        })
    };
    build().map_err(|e| e.to_string())
}
