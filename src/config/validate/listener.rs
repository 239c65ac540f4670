//! `listeners:` rules.

use super::{Problem, Validator};
use crate::config::locate::KeyPath;
use crate::config::raw::{RawCertKey, RawListener, RawListenerTls, Scalar};
use crate::config::{CertKeyFiles, ErrorPage, ForwardedFor, Listener, ListenerTls, TlsVersion};
use crate::listener::Cidr;
use crate::tls::read_certificates;
use openssl::pkey::{PKey, Private};
use openssl::ssl::{SslAcceptor, SslMethod};
use openssl::x509::X509;
use std::collections::HashMap;
use std::net::SocketAddr;

/// Statuses pinion itself answers with, which an error page may replace.
const ERROR_PAGE_CODES: [u16; 11] = [400, 403, 404, 413, 414, 429, 431, 500, 502, 503, 504];
const MAX_ERROR_PAGE: usize = 1024 * 1024;

impl Validator<'_> {
    pub(super) fn listeners(&mut self, raw: &[RawListener], path: &KeyPath) -> Vec<Listener> {
        if raw.is_empty() && self.unparsed.listeners.is_empty() {
            self.err(path.clone(), Problem::Empty("listener"));
        }
        self.names(path, raw.iter().map(|l| l.name.as_str()), "listeners");
        let mut bound: HashMap<SocketAddr, String> = HashMap::new();
        let mut listeners: Vec<Listener> = raw
            .iter()
            .enumerate()
            .map(|(i, l)| self.listener(l, &path.index(i), &mut bound))
            .collect();
        // redirect_to_https names another listener: resolved once all are known.
        for (i, l) in raw.iter().enumerate() {
            let Some(target) = &l.redirect_to_https else {
                continue;
            };
            let here = path.index(i).key("redirect_to_https");
            let found = raw.iter().position(|o| &o.name == target);
            let port = found
                .and_then(|t| listeners.get(t))
                .filter(|t| t.tls.is_some())
                .and_then(|t| t.binds.first())
                .map(SocketAddr::port);
            match (found, port) {
                (_, Some(port)) => {
                    if let Some(me) = listeners.get_mut(i) {
                        me.redirect_to_https = Some(port);
                    }
                }
                (Some(_), None) => self.err(
                    here,
                    Problem::BadChoice {
                        value: target.clone(),
                        expected: "the name of a listener with `tls`",
                    },
                ),
                (None, _) if self.unparsed.listeners.contains(target) => {}
                (None, _) => self.err(
                    here,
                    Problem::UnknownListener {
                        name: target.clone(),
                        known: raw
                            .iter()
                            .map(|l| l.name.as_str())
                            .collect::<Vec<_>>()
                            .join(", "),
                    },
                ),
            }
        }
        listeners
    }

    fn listener(
        &mut self,
        raw: &RawListener,
        path: &KeyPath,
        bound: &mut HashMap<SocketAddr, String>,
    ) -> Listener {
        let forwarded_for = match raw.forwarded_for.as_deref() {
            None | Some("ip") => ForwardedFor::Ip,
            Some("ip_port") => ForwardedFor::IpPort,
            Some(other) => {
                self.err(
                    path.key("forwarded_for"),
                    Problem::BadChoice {
                        value: other.to_owned(),
                        expected: "ip or ip_port",
                    },
                );
                ForwardedFor::Ip
            }
        };
        let trusted_proxies = raw
            .trusted_proxies
            .iter()
            .flatten()
            .enumerate()
            .filter_map(|(i, c)| {
                let parsed = Cidr::parse(c);
                if parsed.is_none() {
                    self.err(
                        path.key("trusted_proxies").index(i),
                        Problem::BadChoice {
                            value: c.clone(),
                            expected: "an address or CIDR range, e.g. 10.0.0.0/8 or 2001:db8::/32",
                        },
                    );
                }
                parsed
            })
            .collect();
        let error_pages = raw
            .error_pages
            .iter()
            .flatten()
            .filter_map(|(code, file)| {
                let here = path.key("error_pages").key(&code.to_string());
                self.error_page(*code, file, &here)
                    .map(|page| (*code, page))
            })
            .collect();
        let binds = self.binds(&raw.bind.0, &raw.name, &path.key("bind"), bound);
        let tls = raw
            .tls
            .as_ref()
            .and_then(|t| self.listener_tls(t, &path.key("tls")));
        Listener {
            name: raw.name.clone(),
            binds,
            tls,
            redirect_to_https: None,
            error_pages,
            proxy_protocol: raw.proxy_protocol.unwrap_or(false),
            trusted_proxies,
            forwarded_for,
            limits: self.limits(raw.limits.as_ref(), &path.key("limits")),
            rate_limit: raw
                .rate_limit
                .as_ref()
                .and_then(|r| self.rate_limit(r, &path.key("rate_limit"))),
        }
    }

    fn error_page(&mut self, code: u16, file: &str, path: &KeyPath) -> Option<ErrorPage> {
        if !ERROR_PAGE_CODES.contains(&code) {
            self.err(
                path.clone(),
                Problem::BadChoice {
                    value: code.to_string(),
                    expected: "a status the gateway generates: 400, 403, 404, 413, 414, 429, 431, 500, 502, 503 or 504",
                },
            );
            return None;
        }
        let (full, bytes) = self.read(path, file)?;
        if bytes.len() > MAX_ERROR_PAGE {
            self.err(
                path.clone(),
                Problem::BadFile {
                    path: full,
                    reason: format!("{} bytes; error pages are limited to 1 MiB", bytes.len()),
                },
            );
            return None;
        }
        let extension = full
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase);
        let content_type = match extension.as_deref() {
            Some("html" | "htm") => "text/html; charset=utf-8",
            Some("json") => "application/json",
            Some("xml") => "application/xml",
            _ => "text/plain; charset=utf-8",
        };
        Some(ErrorPage {
            body: bytes.into(),
            content_type,
        })
    }

    fn binds(
        &mut self,
        raw: &[String],
        name: &str,
        path: &KeyPath,
        bound: &mut HashMap<SocketAddr, String>,
    ) -> Vec<SocketAddr> {
        if raw.is_empty() {
            self.err(path.clone(), Problem::Empty("bind address"));
        }
        let many = raw.len() > 1;
        let mut out = Vec::new();
        for (i, text) in raw.iter().enumerate() {
            let here = if many { path.index(i) } else { path.clone() };
            let Ok(addr) = text.trim().parse::<SocketAddr>() else {
                self.err(here, Problem::BadBind(text.clone()));
                continue;
            };
            let clash = bound.iter().find(|(b, _)| {
                b.port() == addr.port()
                    && (b.ip() == addr.ip()
                        || b.ip().is_unspecified()
                        || addr.ip().is_unspecified())
                    && b.is_ipv4() == addr.is_ipv4()
            });
            if let Some((b, owner)) = clash.filter(|_| addr.port() != 0) {
                self.err(here, Problem::BindTaken(b.to_string(), owner.clone()));
                continue;
            }
            bound.insert(addr, name.to_owned());
            out.push(addr);
        }
        out
    }

    fn listener_tls(&mut self, raw: &RawListenerTls, path: &KeyPath) -> Option<ListenerTls> {
        let certs_path = path.key("certificates");
        if raw.certificates.is_empty() {
            self.err(certs_path.clone(), Problem::Empty("certificate"));
        }
        let certificates: Vec<CertKeyFiles> = raw
            .certificates
            .iter()
            .enumerate()
            .filter_map(|(i, c)| {
                let here = certs_path.index(i);
                let ck = RawCertKey {
                    cert: c.cert.clone(),
                    key: c.key.clone(),
                };
                let client_auth = c
                    .client_auth
                    .as_ref()
                    .and_then(|a| self.client_auth(a, &here.key("client_auth")));
                let (files, ..) = self.cert_key(&ck, &here)?;
                Some(CertKeyFiles {
                    client_auth,
                    ..files
                })
            })
            .collect();
        let min_version = self.version(
            raw.min_version.as_ref(),
            &path.key("min_version"),
            TlsVersion::V1_2,
        );
        let max_version = self.version(
            raw.max_version.as_ref(),
            &path.key("max_version"),
            TlsVersion::V1_3,
        );
        if min_version > max_version {
            self.err(
                path.key("min_version"),
                Problem::VersionOrder {
                    min: version_name(min_version).into(),
                    max: version_name(max_version).into(),
                },
            );
        }
        if let Some(ciphers) = &raw.ciphers {
            let accepted = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls())
                .and_then(|mut b| b.set_cipher_list(ciphers))
                .is_ok();
            if !accepted {
                self.err(path.key("ciphers"), Problem::BadCiphers(ciphers.clone()));
            }
        }
        let client_auth = raw
            .client_auth
            .as_ref()
            .and_then(|c| self.client_auth(c, &path.key("client_auth")));
        if certificates.len() != raw.certificates.len() {
            return None;
        }
        Some(ListenerTls {
            certificates,
            min_version,
            max_version,
            ciphers: raw.ciphers.clone(),
            http2: raw.http2.unwrap_or(true),
            client_auth,
        })
    }

    fn version(&mut self, raw: Option<&Scalar>, path: &KeyPath, default: TlsVersion) -> TlsVersion {
        match raw.map(|s| s.0.as_str()) {
            None => default,
            Some("1.2") => TlsVersion::V1_2,
            Some("1.3") => TlsVersion::V1_3,
            Some(other) => {
                self.err(
                    path.clone(),
                    Problem::BadChoice {
                        value: other.to_owned(),
                        expected: "\"1.2\" or \"1.3\"",
                    },
                );
                default
            }
        }
    }

    /// Reads a certificate chain and its key and checks that they belong together.
    pub(super) fn cert_key(
        &mut self,
        raw: &RawCertKey,
        path: &KeyPath,
    ) -> Option<(CertKeyFiles, Vec<X509>, PKey<Private>)> {
        let certs = self
            .read(&path.key("cert"), &raw.cert)
            .and_then(|(file, bytes)| match read_certificates(&bytes) {
                Ok(certs) => Some((file, certs)),
                Err(e) => {
                    self.err(
                        path.key("cert"),
                        Problem::BadCertificate {
                            path: file,
                            reason: e.to_string(),
                        },
                    );
                    None
                }
            });
        let key = self
            .read(&path.key("key"), &raw.key)
            .and_then(|(file, bytes)| match PKey::private_key_from_pem(&bytes) {
                Ok(k) => Some((file, k)),
                Err(e) => {
                    self.err(
                        path.key("key"),
                        Problem::BadKey {
                            path: file,
                            reason: format!("not a PEM private key ({e})"),
                        },
                    );
                    None
                }
            });
        let ((cert_file, certs), (key_file, key)) = (certs?, key?);
        let matches = certs
            .first()
            .and_then(|leaf| leaf.public_key().ok())
            .is_some_and(|public| public.public_eq(&key));
        if !matches {
            self.err(
                path.key("key"),
                Problem::BadKey {
                    path: key_file,
                    reason: format!(
                        "this private key does not belong to the first certificate in {}",
                        cert_file.display()
                    ),
                },
            );
            return None;
        }
        let names = certs
            .first()
            .map(|c| crate::tls::names_of(c))
            .unwrap_or_default();
        let files = CertKeyFiles {
            cert: cert_file,
            key: key_file,
            chain: certs.clone(),
            private_key: key.clone(),
            names,
            client_auth: None,
        };
        Some((files, certs, key))
    }
}

fn version_name(v: TlsVersion) -> &'static str {
    match v {
        TlsVersion::V1_2 => "1.2",
        TlsVersion::V1_3 => "1.3",
    }
}
