//! Raw document to typed `Config`: every rule, every problem collected with its key path.

mod admin;
mod client_auth;
mod limits;
mod listener;
mod logs;
mod names;
mod pins;
mod pool;
mod protocol;

use super::error::Problem;
use super::locate::KeyPath;
use super::raw::{RawConfig, RawHeaderRewrite, RawRedirect, RawRoute, RawServer};
use super::{Config, ServerSettings};
use crate::routing::{
    HeaderRewrite, HostPattern, PathPattern, Redirect, Route, RouteTable, Target,
};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Headers a route may not rewrite: framing and hop-by-hop headers the proxy manages, and Host
/// (set it with the pool's `host_header`).
pub(crate) const RESERVED_HEADERS: [&str; 9] = [
    "host",
    "connection",
    "upgrade",
    "transfer-encoding",
    "content-length",
    "te",
    "trailer",
    "keep-alive",
    "proxy-connection",
];

/// Problems found, each with where it is.
pub(super) type Problems = Vec<(KeyPath, Problem)>;

/// Items that failed the schema check: their names still count for references, so a broken
/// pool yields its own error but no "unknown pool" error at every route that uses it.
#[derive(Debug, Default)]
pub(super) struct Unparsed {
    /// Names of listener items that did not parse (or "" when they have no name).
    pub listeners: Vec<String>,
    /// Names of pool items that did not parse.
    pub pools: Vec<String>,
    /// For each list section with broken items, the original index of every kept item: the
    /// validator counts only kept items, and its key paths are mapped back with this.
    pub kept: std::collections::BTreeMap<String, Vec<usize>>,
}

impl Unparsed {
    /// `path` with the index into a section with dropped items mapped back to the file's.
    pub fn original(&self, mut path: KeyPath) -> KeyPath {
        use super::locate::Seg;
        if let [Seg::Key(section), Seg::Index(i), ..] = path.0.as_mut_slice() {
            if let Some(&orig) = self.kept.get(section.as_str()).and_then(|k| k.get(*i)) {
                *i = orig;
            }
        }
        path
    }
}

/// Validates the whole document; `Err` lists every problem.
pub(super) fn validate(
    raw: RawConfig,
    base: &Path,
    file: &Path,
    unparsed: &Unparsed,
    resolve: super::Resolve,
    open_logs: bool,
) -> Result<Config, Problems> {
    let mut v = Validator {
        base,
        unparsed,
        resolve,
        open_logs,
        problems: Vec::new(),
        files: Vec::new(),
    };
    let root = KeyPath::default();
    let (admin, admin_token) = v.admin(raw.admin.as_ref(), &root.key("admin"));
    let access_log = raw
        .access_log
        .as_ref()
        .map(|a| v.access_log(a, &root.key("access_log")));
    let audit_log = raw
        .audit_log
        .as_deref()
        .and_then(|a| v.log_file(a, &root.key("audit_log")));
    let server = v.server(raw.server.unwrap_or_default(), &root.key("server"));
    let listeners = v.listeners(&raw.listeners, &root.key("listeners"));
    if let Some(a) = admin {
        let clash = listeners.iter().find(|l| {
            l.binds.iter().any(|b| {
                b.port() == a.port()
                    && (b.ip() == a.ip() || b.ip().is_unspecified() || a.ip().is_unspecified())
            })
        });
        if let Some(l) = clash {
            v.err(
                root.key("admin").key("bind"),
                Problem::BindTaken(a.to_string(), l.name.clone()),
            );
        }
    }
    let pools = v.pools(&raw.pools, &root.key("pools"));
    let answers = v.look_up(&pools, &server.resolvers, &root.key("pools"));
    let listener_names: Vec<&str> = raw.listeners.iter().map(|l| l.name.as_str()).collect();
    let pool_names: Vec<&str> = raw.pools.iter().map(|p| p.name.as_str()).collect();
    let routes = v.routes(
        &raw.routes,
        &root.key("routes"),
        &listener_names,
        &pool_names,
    );
    if !v.problems.is_empty() {
        return Err(v.problems);
    }
    Ok(Config {
        file: file.to_owned(),
        sha256: String::new(),
        files: v.files,
        server,
        routes: RouteTable::new(routes, listeners.len()),
        listeners,
        pools,
        admin,
        admin_token,
        access_log,
        audit_log,
        answers,
    })
}

struct Validator<'a> {
    base: &'a Path,
    unparsed: &'a Unparsed,
    resolve: super::Resolve,
    /// Open `server.error_log` for appending, as the starting process will ([`super::load_to_start`]).
    open_logs: bool,
    problems: Problems,
    /// Every file read, for `server.watch`.
    files: Vec<(PathBuf, super::FileStamp)>,
}

/// Opens `log` for appending as the log will be, removing it again when this created it.
fn open_for_append(log: &Path) -> Result<(), String> {
    let existed = log.exists();
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(|e| e.to_string())?;
    if !existed {
        let _ = std::fs::remove_file(log);
    }
    Ok(())
}

impl Validator<'_> {
    fn err(&mut self, path: KeyPath, problem: Problem) {
        self.problems.push((path, problem));
    }

    /// One of a fixed set of words: `default` when absent; an error naming `expected` (and
    /// `default` in its place) when not one of `options`.
    fn choice<T: Copy>(
        &mut self,
        path: KeyPath,
        value: Option<&str>,
        options: &[(&str, T)],
        default: T,
        expected: &'static str,
    ) -> T {
        let Some(word) = value else { return default };
        if let Some((_, v)) = options.iter().find(|(w, _)| *w == word) {
            return *v;
        }
        self.err(
            path,
            Problem::BadChoice {
                value: word.to_owned(),
                expected,
            },
        );
        default
    }

    /// A path from the file, resolved against the file's directory.
    fn resolve(&self, p: &str) -> PathBuf {
        let p = Path::new(p);
        if p.is_absolute() {
            p.to_owned()
        } else {
            self.base.join(p)
        }
    }

    /// [`Self::resolve`] for the settings Pingora takes as strings. YAML strings are UTF-8, so
    /// nothing is lost.
    fn resolve_string(&self, p: &str) -> String {
        self.resolve(p).to_string_lossy().into_owned()
    }

    /// `server.error_log`: its directory must exist; when starting, the file must open for
    /// appending (Pingora opens it only after forking, where a failure is a panic nobody sees).
    fn error_log(&mut self, log: &Path, path: &KeyPath) {
        let reason = match log.parent() {
            Some(d) if !d.as_os_str().is_empty() && !d.is_dir() => {
                Some("its directory does not exist".to_owned())
            }
            _ if self.open_logs => open_for_append(log).err(),
            _ => None,
        };
        if let Some(reason) = reason {
            self.err(
                path.clone(),
                Problem::Unwritable {
                    path: log.to_owned(),
                    reason,
                },
            );
        }
    }

    /// Reads a file the configuration refers to.
    fn read(&mut self, path: &KeyPath, rel: &str) -> Option<(PathBuf, Vec<u8>)> {
        let full = self.resolve(rel);
        self.files.push((full.clone(), super::stamp(&full)));
        match std::fs::read(&full) {
            Ok(bytes) => Some((full, bytes)),
            Err(e) => {
                self.err(
                    path.clone(),
                    Problem::BadFile {
                        path: full,
                        reason: e.to_string(),
                    },
                );
                None
            }
        }
    }

    /// A number within `range`, or `default` when absent.
    fn number(
        &mut self,
        path: KeyPath,
        value: Option<u64>,
        default: u64,
        range: std::ops::RangeInclusive<u64>,
        expected: &'static str,
    ) -> u64 {
        let n = value.unwrap_or(default);
        if !range.contains(&n) {
            self.err(path, Problem::OutOfRange { value: n, expected });
            return default;
        }
        n
    }

    /// Checks names for shape and uniqueness within one list.
    fn names<'n>(
        &mut self,
        path: &KeyPath,
        names: impl Iterator<Item = &'n str>,
        what: &'static str,
    ) {
        let mut seen = HashMap::new();
        for (i, name) in names.enumerate() {
            let here = path.index(i).key("name");
            let ok = !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
            if !ok {
                self.err(here, Problem::BadName(name.to_owned()));
            } else if seen.insert(name, i).is_some() {
                self.err(
                    here,
                    Problem::Duplicate {
                        name: name.to_owned(),
                        what,
                    },
                );
            }
        }
    }

    fn server(&mut self, raw: RawServer, path: &KeyPath) -> ServerSettings {
        let threads = self.number(
            path.key("threads"),
            raw.threads,
            2,
            1..=1024,
            "1 to 1024 worker threads",
        );
        let grace = self.number(
            path.key("grace_period_seconds"),
            raw.grace_period_seconds,
            30,
            0..=86_400,
            "0 to 86400 seconds",
        );
        let shutdown = self.number(
            path.key("graceful_shutdown_timeout_seconds"),
            raw.graceful_shutdown_timeout_seconds,
            10,
            0..=86_400,
            "0 to 86400 seconds",
        );
        let resolvers = raw
            .resolvers
            .iter()
            .flatten()
            .enumerate()
            .filter_map(|(i, r)| {
                let parsed = r.trim().parse::<SocketAddr>().ok();
                if parsed.is_none() {
                    self.err(
                        path.key("resolvers").index(i),
                        Problem::BadResolver(r.clone()),
                    );
                }
                parsed
            })
            .collect();
        let error_log = raw.error_log.map(|p| self.resolve_string(&p));
        if let Some(log) = &error_log {
            self.error_log(Path::new(log), &path.key("error_log"));
        }
        ServerSettings {
            threads: usize::try_from(threads).unwrap_or(2),
            pid_file: self.resolve_string(raw.pid_file.as_deref().unwrap_or("/tmp/pinion.pid")),
            upgrade_sock: self.resolve_string(
                raw.upgrade_sock
                    .as_deref()
                    .unwrap_or("/tmp/pinion_upgrade.sock"),
            ),
            control_sock: self.resolve_string(
                raw.control_sock
                    .as_deref()
                    .unwrap_or("/tmp/pinion_control.sock"),
            ),
            watch: raw.watch.unwrap_or(false),
            grace_period: Duration::from_secs(grace),
            graceful_shutdown_timeout: Duration::from_secs(shutdown),
            daemon: raw.daemon.unwrap_or(false),
            error_log,
            user: raw.user,
            group: raw.group,
            resolvers,
        }
    }

    fn routes(
        &mut self,
        raw: &[RawRoute],
        path: &KeyPath,
        listeners: &[&str],
        pools: &[&str],
    ) -> Vec<Route> {
        self.names(path, raw.iter().map(|r| r.name.as_str()), "routes");
        raw.iter()
            .enumerate()
            .filter_map(|(i, r)| self.route(r, &path.index(i), listeners, pools))
            .collect()
    }

    fn route(
        &mut self,
        raw: &RawRoute,
        path: &KeyPath,
        listeners: &[&str],
        pools: &[&str],
    ) -> Option<Route> {
        let route_listeners = raw.listeners.as_ref().map(|names| {
            names
                .iter()
                .enumerate()
                .filter_map(|(i, name)| {
                    let found = listeners.iter().position(|l| l == name);
                    if found.is_none() && !self.unparsed.listeners.contains(name) {
                        self.err(
                            path.key("listeners").index(i),
                            Problem::UnknownListener {
                                name: name.clone(),
                                known: listeners.join(", "),
                            },
                        );
                    }
                    found
                })
                .collect::<Vec<_>>()
        });
        let hosts = self.patterns(raw.hosts.as_deref(), &path.key("hosts"), |h| {
            HostPattern::parse(h).ok_or_else(|| Problem::BadHost(h.to_owned()))
        });
        let paths = self.patterns(raw.paths.as_deref(), &path.key("paths"), |p| {
            PathPattern::parse(p).ok_or_else(|| Problem::BadPath(p.to_owned()))
        });
        let target = match (&raw.pool, &raw.redirect) {
            (Some(_), Some(_)) => {
                self.err(path.key("redirect"), Problem::PoolAndRedirect);
                None
            }
            (None, Some(r)) => self
                .redirect(r, &path.key("redirect"))
                .map(Target::Redirect),
            (Some(name), None) => match pools.iter().position(|p| p == name) {
                Some(i) => Some(Target::Pool(i)),
                None if self.unparsed.pools.contains(name) => None,
                None => {
                    self.err(
                        path.key("pool"),
                        Problem::UnknownPool {
                            name: name.clone(),
                            known: pools.join(", "),
                        },
                    );
                    None
                }
            },
            (None, None) => {
                self.err(path.clone(), Problem::NoTarget);
                None
            }
        };
        let request_headers =
            self.rewrite(raw.request_headers.as_ref(), &path.key("request_headers"));
        let response_headers =
            self.rewrite(raw.response_headers.as_ref(), &path.key("response_headers"));
        let max_body_bytes = raw
            .limits
            .as_ref()
            .and_then(|l| l.max_body_bytes.as_ref())
            .and_then(|v| self.body_limit(v, &path.key("limits").key("max_body_bytes")));
        let rate_limit = raw
            .rate_limit
            .as_ref()
            .and_then(|r| self.rate_limit(r, &path.key("rate_limit")));
        let client_certificate_required = match raw.client_certificate.as_deref() {
            None | Some("optional") => false,
            Some("required") => true,
            Some(other) => {
                self.err(
                    path.key("client_certificate"),
                    Problem::BadChoice {
                        value: other.to_owned(),
                        expected: "required or optional",
                    },
                );
                false
            }
        };
        Some(Route {
            name: raw.name.clone(),
            listeners: route_listeners,
            hosts,
            paths,
            target: target?,
            request_headers,
            response_headers,
            max_body_bytes,
            rate_limit,
            client_certificate_required,
        })
    }

    fn redirect(&mut self, raw: &RawRedirect, path: &KeyPath) -> Option<Redirect> {
        let status = raw.status.unwrap_or(302);
        if ![301, 302, 303, 307, 308].contains(&status) {
            self.err(
                path.key("status"),
                Problem::BadChoice {
                    value: status.to_string(),
                    expected: "301, 302, 303, 307 or 308",
                },
            );
            return None;
        }
        let to = raw.to.trim();
        let absolute = to.parse::<http::Uri>().ok().is_some_and(|u| {
            matches!(u.scheme_str(), Some("http" | "https")) && u.host().is_some()
        });
        let local = to.starts_with('/') && !to.starts_with("//") && to.parse::<http::Uri>().is_ok();
        if !(absolute || local) {
            self.err(
                path.key("to"),
                Problem::BadChoice {
                    value: to.to_owned(),
                    expected: "an absolute http(s) URL such as https://www.contoso.com/new/, or a path such as /new/",
                },
            );
            return None;
        }
        Some(Redirect {
            to: to.to_owned(),
            status,
            keep_path: raw.keep_path.unwrap_or(false),
            keep_query: raw.keep_query.unwrap_or(true),
        })
    }

    fn rewrite(&mut self, raw: Option<&RawHeaderRewrite>, path: &KeyPath) -> HeaderRewrite {
        let Some(raw) = raw else {
            return HeaderRewrite::default();
        };
        let mut out = HeaderRewrite::default();
        for (i, name) in raw.remove.iter().enumerate() {
            if let Some(n) = self.header_name(name, &path.key("remove").index(i)) {
                out.remove.push(n);
            }
        }
        for (name, value) in &raw.set {
            let here = path.key("set").key(name);
            let Some(n) = self.header_name(name, &here) else {
                continue;
            };
            match http::HeaderValue::from_str(value) {
                Ok(v) => out.set.push((n, v)),
                Err(_) => self.err(
                    here,
                    Problem::BadChoice {
                        value: value.clone(),
                        expected: "a header value of visible ASCII characters, spaces and tabs",
                    },
                ),
            }
        }
        out
    }

    fn header_name(&mut self, name: &str, path: &KeyPath) -> Option<http::HeaderName> {
        let Ok(n) = http::HeaderName::from_bytes(name.as_bytes()) else {
            self.err(
                path.clone(),
                Problem::BadChoice {
                    value: name.to_owned(),
                    expected: "a header name (letters, digits and !#$%&'*+-.^_`|~)",
                },
            );
            return None;
        };
        if RESERVED_HEADERS.contains(&n.as_str()) {
            self.err(path.clone(), Problem::ReservedHeader(name.to_owned()));
            return None;
        }
        Some(n)
    }

    fn patterns<T>(
        &mut self,
        raw: Option<&[String]>,
        path: &KeyPath,
        parse: impl Fn(&str) -> Result<T, Problem>,
    ) -> Vec<T> {
        raw.unwrap_or_default()
            .iter()
            .enumerate()
            .filter_map(|(i, s)| match parse(s) {
                Ok(p) => Some(p),
                Err(problem) => {
                    self.err(path.index(i), problem);
                    None
                }
            })
            .collect()
    }
}
