//! The YAML document as written: serde structs that mirror the SPEC schema key for key.
//!
//! Every struct denies unknown keys so a typo is an error, never silently ignored. Values stay
//! close to their YAML form here (strings, integers, lists); `validate` turns them into the typed
//! runtime model and reports every problem at once.

use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt;

/// The whole configuration file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default)]
    pub server: Option<RawServer>,
    #[serde(default)]
    pub admin: Option<RawAdmin>,
    #[serde(default)]
    pub access_log: Option<RawAccessLog>,
    #[serde(default)]
    pub listeners: Vec<RawListener>,
    #[serde(default)]
    pub pools: Vec<RawPool>,
    #[serde(default)]
    pub routes: Vec<RawRoute>,
    #[serde(default)]
    pub audit_log: Option<String>,
}

/// `server:` process settings.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawServer {
    pub threads: Option<u64>,
    pub pid_file: Option<String>,
    pub upgrade_sock: Option<String>,
    pub control_sock: Option<String>,
    pub watch: Option<bool>,
    pub grace_period_seconds: Option<u64>,
    pub graceful_shutdown_timeout_seconds: Option<u64>,
    pub daemon: Option<bool>,
    pub error_log: Option<String>,
    pub user: Option<String>,
    pub group: Option<String>,
    pub resolvers: Option<Vec<String>>,
}

/// `admin:` listener.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAdmin {
    pub bind: String,
    pub token: Option<String>,
}

/// `access_log:` settings.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAccessLog {
    pub path: Option<String>,
    pub format: Option<String>,
}

/// One entry of `listeners:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawListener {
    pub name: String,
    pub bind: OneOrMany,
    pub tls: Option<RawListenerTls>,
    pub proxy_protocol: Option<bool>,
    pub trusted_proxies: Option<Vec<String>>,
    pub forwarded_for: Option<String>,
    pub error_pages: Option<BTreeMap<u16, String>>,
    pub redirect_to_https: Option<String>,
    pub limits: Option<RawLimits>,
    pub rate_limit: Option<RawRateLimit>,
}

/// `rate_limit` of a listener or a route.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRateLimit {
    pub requests_per_second: Scalar,
    pub burst: Option<Scalar>,
    pub key: Option<String>,
    pub max_clients: Option<Scalar>,
}

/// `listeners[].limits`: how large a request the listener accepts.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLimits {
    pub max_header_bytes: Option<Scalar>,
    pub max_headers: Option<Scalar>,
    pub max_uri_bytes: Option<Scalar>,
    pub max_body_bytes: Option<Scalar>,
    pub max_connections: Option<Scalar>,
    pub max_connections_per_ip: Option<Scalar>,
}

/// `routes[].limits`: what a route may set differently from its listener.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRouteLimits {
    pub max_body_bytes: Option<Scalar>,
}

/// `listeners[].tls`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawListenerTls {
    pub certificates: Vec<RawListenerCert>,
    pub min_version: Option<Scalar>,
    pub max_version: Option<Scalar>,
    pub ciphers: Option<String>,
    pub http2: Option<bool>,
    pub client_auth: Option<RawClientAuth>,
}

/// `listeners[].tls.client_auth`: client certificates at the front door.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawClientAuth {
    pub mode: String,
    pub headers: Option<bool>,
    pub xfcc: Option<bool>,
    pub ca: Option<String>,
    #[serde(default)]
    pub pins: Vec<RawPin>,
    pub verify_depth: Option<u64>,
    pub crl: Option<String>,
}

/// One of `listeners[].tls.certificates`: a chain, its key, and optionally the client
/// certificate policy of the host names it serves.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawListenerCert {
    pub cert: String,
    pub key: String,
    pub client_auth: Option<RawClientAuth>,
}

/// A certificate chain file and its private key file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCertKey {
    pub cert: String,
    pub key: String,
}

/// One entry of `pools:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPool {
    pub name: String,
    pub servers: Vec<RawServerEntry>,
    pub balance: Option<String>,
    pub tls: Option<RawPoolTls>,
    pub host_header: Option<String>,
    pub affinity: Option<RawAffinity>,
    pub probe: Option<RawProbeSetting>,
    pub timeouts: Option<RawTimeouts>,
    pub retries: Option<u64>,
    pub h2c: Option<bool>,
    pub max_streams_per_connection: Option<u64>,
    pub resolve_seconds: Option<u64>,
    pub resolve_on_start: Option<String>,
}

/// A pool server: `host:port` shorthand or `{address, weight}`.
#[derive(Debug)]
pub struct RawServerEntry {
    pub address: String,
    pub weight: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServerFull {
    address: String,
    weight: Option<u64>,
}

impl<'de> Deserialize<'de> for RawServerEntry {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawServerEntry;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("\"HOST:PORT\" or a mapping with `address` and `weight`")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(RawServerEntry {
                    address: v.to_owned(),
                    weight: None,
                })
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                let full = RawServerFull::deserialize(de::value::MapAccessDeserializer::new(map))?;
                Ok(RawServerEntry {
                    address: full.address,
                    weight: full.weight,
                })
            }
        }
        d.deserialize_any(V)
    }
}

/// `pools[].tls`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPoolTls {
    pub sni: Option<String>,
    #[serde(default)]
    pub pins: Vec<RawPin>,
    pub pin_mode: Option<String>,
    pub ca: Option<String>,
    pub verify_hostname: Option<bool>,
    pub client_certificate: Option<RawCertKey>,
    pub warn_days: Option<u64>,
    pub http2: Option<BoolOrWord>,
}

/// One whitelist entry; exactly one of the three keys must be set.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPin {
    pub cert: Option<String>,
    pub public_key: Option<String>,
    pub sha256: Option<String>,
    pub scope: Option<String>,
    pub not_before: Option<String>,
    pub not_after: Option<String>,
}

/// `pools[].affinity`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAffinity {
    pub cookie: Option<String>,
    pub secret_file: Option<String>,
    pub ttl_seconds: Option<u64>,
    pub secure: Option<bool>,
    pub http_only: Option<bool>,
    pub same_site: Option<String>,
}

/// `probe: false` or a probe mapping.
#[derive(Debug)]
pub enum RawProbeSetting {
    Enabled(bool),
    Custom(RawProbe),
}

impl<'de> Deserialize<'de> for RawProbeSetting {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawProbeSetting;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("`false`, `true` or a probe mapping")
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
                Ok(RawProbeSetting::Enabled(v))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                RawProbe::deserialize(de::value::MapAccessDeserializer::new(map))
                    .map(RawProbeSetting::Custom)
            }
        }
        d.deserialize_any(V)
    }
}

/// `pools[].probe` as a mapping.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawProbe {
    pub path: Option<String>,
    pub host: Option<String>,
    pub interval_seconds: Option<u64>,
    pub timeout_seconds: Option<u64>,
    pub unhealthy_threshold: Option<u64>,
    pub healthy_threshold: Option<u64>,
    pub status: Option<Vec<Scalar>>,
    pub body_contains: Option<String>,
    pub grpc_service: Option<String>,
}

/// `pools[].timeouts`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTimeouts {
    pub connect_seconds: Option<u64>,
    pub request_seconds: Option<u64>,
    pub idle_seconds: Option<u64>,
}

/// One entry of `routes:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    pub name: String,
    pub listeners: Option<Vec<String>>,
    pub hosts: Option<Vec<String>>,
    pub paths: Option<Vec<String>>,
    pub pool: Option<String>,
    pub request_headers: Option<RawHeaderRewrite>,
    pub response_headers: Option<RawHeaderRewrite>,
    pub redirect: Option<RawRedirect>,
    pub limits: Option<RawRouteLimits>,
    pub rate_limit: Option<RawRateLimit>,
    pub client_certificate: Option<String>,
}

/// `set`/`remove` header rewrites.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHeaderRewrite {
    #[serde(default)]
    pub set: BTreeMap<String, String>,
    #[serde(default)]
    pub remove: Vec<String>,
}

/// `routes[].redirect`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRedirect {
    pub to: String,
    pub status: Option<u16>,
    pub keep_path: Option<bool>,
    pub keep_query: Option<bool>,
}

/// A string that may also be written as a bare YAML number (`min_version: 1.2`).
#[derive(Debug, Clone)]
pub struct Scalar(pub String);

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Scalar;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string or a number")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Scalar, E> {
                Ok(Scalar(v.to_owned()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

/// A string or a list of strings (`bind: 0.0.0.0:443` or `bind: [a, b]`).
#[derive(Debug)]
pub struct OneOrMany(pub Vec<String>);

impl<'de> Deserialize<'de> for OneOrMany {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = OneOrMany;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("\"ADDRESS:PORT\" or a list of them")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<OneOrMany, E> {
                Ok(OneOrMany(vec![v.to_owned()]))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<OneOrMany, A::Error> {
                let mut all = Vec::new();
                while let Some(s) = seq.next_element::<String>()? {
                    all.push(s);
                }
                Ok(OneOrMany(all))
            }
        }
        d.deserialize_any(V)
    }
}

/// `true`, `false` or a word (`tls.http2: auto`), kept as written.
#[derive(Debug)]
pub struct BoolOrWord(pub String);

impl<'de> Deserialize<'de> for BoolOrWord {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = BoolOrWord;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("true, false or a word")
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<BoolOrWord, E> {
                Ok(BoolOrWord(v.to_string()))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<BoolOrWord, E> {
                Ok(BoolOrWord(v.to_owned()))
            }
        }
        d.deserialize_any(V)
    }
}
