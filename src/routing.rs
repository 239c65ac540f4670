//! Route matching: listener, host and normalized path to a route, first match in file order.
//! Pure functions, no I/O.

pub mod normalize;

pub use normalize::PathError;
use normalize::{has_encoded_slash, normalize, Slashes};
use std::borrow::Cow;
use std::collections::HashMap;

/// A `hosts:` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostPattern {
    /// `www.contoso.com`, stored lower-case.
    Exact(String),
    /// `*.contoso.com`, stored as the suffix `.contoso.com`: matches one or more labels before it.
    Wildcard(String),
}

impl HostPattern {
    /// Parses a pattern; `None` when it is not a host name or a leading-label wildcard.
    pub fn parse(s: &str) -> Option<HostPattern> {
        let lower = s.trim_end_matches('.').to_ascii_lowercase();
        let (wild, name) = match lower.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, lower.as_str()),
        };
        let valid = !name.is_empty()
            && name.split('.').all(|label| {
                !label.is_empty()
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            });
        if !valid {
            return None;
        }
        Some(if wild {
            HostPattern::Wildcard(format!(".{name}"))
        } else {
            HostPattern::Exact(name.to_owned())
        })
    }

    /// Whether a lower-case host without port matches.
    pub fn matches(&self, host: &str) -> bool {
        match self {
            HostPattern::Exact(h) => h == host,
            HostPattern::Wildcard(suffix) => host.len() > suffix.len() && host.ends_with(suffix),
        }
    }
}

/// A `paths:` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathPattern {
    /// Matches this path only.
    Exact(String),
    /// `"/x/*"` (prefix `/x/`) or `"/x*"` (prefix `/x`).
    Prefix(String),
}

impl PathPattern {
    /// Parses a pattern; `None` unless it is absolute and has `*` only at its end.
    pub fn parse(s: &str) -> Option<PathPattern> {
        if !s.starts_with('/') {
            return None;
        }
        match s.strip_suffix('*') {
            Some(prefix) if !prefix.contains('*') => Some(PathPattern::Prefix(prefix.to_owned())),
            Some(_) => None,
            None if s.contains('*') => None,
            None => Some(PathPattern::Exact(s.to_owned())),
        }
    }

    /// Whether a normalized path matches.
    pub fn matches(&self, path: &str) -> bool {
        match self {
            PathPattern::Exact(p) => p == path,
            PathPattern::Prefix(p) => path.starts_with(p.as_str()),
        }
    }
}

/// Where a matched request goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// Proxy to the pool with this index.
    Pool(usize),
    /// Answer with a redirect.
    Redirect(Redirect),
}

/// A route's redirect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Redirect {
    /// Absolute URL (`https://host/path`) or absolute path on the same host.
    pub to: String,
    /// 301, 302, 303, 307 or 308.
    pub status: u16,
    /// Append the request path to `to`.
    pub keep_path: bool,
    /// Append the request query to `to`.
    pub keep_query: bool,
}

impl Redirect {
    /// The Location for a request with this normalized path and raw query.
    pub fn location(&self, path: &str, query: Option<&str>) -> String {
        let (base, to_query) = match self.to.split_once('?') {
            Some((b, q)) => (b, Some(q)),
            None => (self.to.as_str(), None),
        };
        let mut out = base.to_owned();
        if self.keep_path {
            if out.ends_with('/') {
                out.pop();
            }
            out.push_str(path);
        }
        let query = match (to_query, query.filter(|_| self.keep_query)) {
            (Some(a), Some(b)) => Some(format!("{a}&{b}")),
            (Some(a), None) => Some(a.to_owned()),
            (None, Some(b)) => Some(b.to_owned()),
            (None, None) => None,
        };
        if let Some(q) = query.filter(|q| !q.is_empty()) {
            out.push('?');
            out.push_str(&q);
        }
        out
    }
}

/// Header changes of a route: names removed, then names set.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeaderRewrite {
    /// Headers removed.
    pub remove: Vec<http::HeaderName>,
    /// Headers set (replacing any value).
    pub set: Vec<(http::HeaderName, http::HeaderValue)>,
}

impl HeaderRewrite {
    /// Whether there is nothing to do.
    pub fn is_empty(&self) -> bool {
        self.remove.is_empty() && self.set.is_empty()
    }
}

/// One entry of `routes:`, validated.
#[derive(Debug, Clone)]
pub struct Route {
    /// The route's name, for logs and metrics.
    pub name: String,
    /// Listener indices this route applies to; `None` means every listener.
    pub listeners: Option<Vec<usize>>,
    /// Host patterns; empty means any host.
    pub hosts: Vec<HostPattern>,
    /// Path patterns; empty means any path.
    pub paths: Vec<PathPattern>,
    /// What to do with a matching request.
    pub target: Target,
    /// Changes to the request sent to the backend.
    pub request_headers: HeaderRewrite,
    /// Changes to the response sent to the client.
    pub response_headers: HeaderRewrite,
    /// The route's own `max_body_bytes`: `None` keeps the listener's, `Some(None)` is
    /// unlimited.
    pub max_body_bytes: Option<Option<u64>>,
    /// Requests per client address over time, for the requests this route matches.
    pub rate_limit: Option<std::sync::Arc<crate::limits::rate::RateLimiter>>,
    /// Only clients with a verified certificate (`client_certificate: required`); 403 else.
    pub client_certificate_required: bool,
}

impl Route {
    fn matches(&self, host: &str, path: &str) -> bool {
        (self.hosts.is_empty() || self.hosts.iter().any(|h| h.matches(host)))
            && (self.paths.is_empty() || self.paths.iter().any(|p| p.matches(path)))
    }
}

/// The routes of one configuration, indexed by listener and host, so that matching costs the
/// same with 10,000 host routes as with one.
#[derive(Debug, Clone)]
pub struct RouteTable {
    routes: Vec<Route>,
    by_listener: Vec<HostIndex>,
}

/// One listener's routes by host pattern; every list is in file order.
#[derive(Debug, Clone, Default)]
struct HostIndex {
    /// Exact host -> routes naming it.
    exact: HashMap<String, Vec<usize>>,
    /// Wildcard suffix (`.contoso.com`) -> routes naming `*.contoso.com`.
    wildcard: HashMap<String, Vec<usize>>,
    /// Routes without `hosts`.
    any_host: Vec<usize>,
}

impl HostIndex {
    /// The candidate lists for `host`: exact, each wildcard suffix, any host.
    fn lists<'a>(&'a self, host: &str) -> Vec<&'a [usize]> {
        let mut lists = Vec::with_capacity(4);
        if let Some(v) = self.exact.get(host) {
            lists.push(v.as_slice());
        }
        if !self.wildcard.is_empty() {
            for (i, _) in host.match_indices('.').filter(|(i, _)| *i > 0) {
                if let Some(v) = host.get(i..).and_then(|suffix| self.wildcard.get(suffix)) {
                    lists.push(v.as_slice());
                }
            }
        }
        if !self.any_host.is_empty() {
            lists.push(self.any_host.as_slice());
        }
        lists
    }
}

/// The outcome of routing one request.
#[derive(Debug)]
pub enum Decision<'a, 'p> {
    /// A route matched; the backend gets `path` (normalized) plus the original query.
    Matched {
        /// The route's position in the file.
        index: usize,
        /// The route.
        route: &'a Route,
        /// The normalized path: borrowed from the request when it was already normal.
        path: Cow<'p, str>,
    },
    /// No route matched: 404.
    NotFound,
    /// The path cannot be normalized: 400.
    BadPath(PathError),
}

impl RouteTable {
    /// Builds the per-listener host indexes, keeping file order.
    pub fn new(routes: Vec<Route>, listener_count: usize) -> RouteTable {
        let by_listener = (0..listener_count)
            .map(|l| {
                let mut index = HostIndex::default();
                let on_listener = routes
                    .iter()
                    .enumerate()
                    .filter(|(_, r)| r.listeners.as_ref().is_none_or(|ls| ls.contains(&l)));
                for (i, r) in on_listener {
                    if r.hosts.is_empty() {
                        index.any_host.push(i);
                    }
                    for h in &r.hosts {
                        let list = match h {
                            HostPattern::Exact(name) => {
                                index.exact.entry(name.clone()).or_default()
                            }
                            HostPattern::Wildcard(suffix) => {
                                index.wildcard.entry(suffix.clone()).or_default()
                            }
                        };
                        if list.last() != Some(&i) {
                            list.push(i);
                        }
                    }
                }
                index
            })
            .collect();
        RouteTable {
            routes,
            by_listener,
        }
    }

    /// All routes in file order.
    pub fn routes(&self) -> &[Route] {
        &self.routes
    }

    /// Routes a request on `listener` for `authority` (a Host header value) and the raw path
    /// (without the query).
    pub fn decide<'p>(
        &self,
        listener: usize,
        authority: &str,
        raw_path: &'p str,
    ) -> Decision<'_, 'p> {
        let host = host_of(authority);
        let path = match normalize(raw_path, Slashes::KeepEncoded) {
            Ok(p) => p,
            Err(e) => return Decision::BadPath(e),
        };
        let found = self.first_match(listener, &host, &path);
        let found_index = found.map(|(i, _)| i);
        if has_encoded_slash(&path) {
            // A backend that decodes %2F before routing would see another path; refuse when that
            // path would have been routed differently, so an encoded slash never reaches a pool
            // the decoded path would not.
            match normalize(raw_path, Slashes::Decode) {
                Err(e) => return Decision::BadPath(e),
                Ok(decoded) => {
                    let other = self.first_match(listener, &host, &decoded);
                    if other.map(|(i, _)| i) != found_index {
                        return Decision::BadPath(PathError::AmbiguousSlash);
                    }
                }
            }
        }
        match found {
            Some((index, route)) => Decision::Matched { index, route, path },
            None => Decision::NotFound,
        }
    }

    /// The first route in file order among the host's candidates whose paths match: a merge
    /// of the (sorted) candidate lists, so nothing is sorted or allocated per candidate.
    fn first_match(&self, listener: usize, host: &str, path: &str) -> Option<(usize, &Route)> {
        let mut lists = self.by_listener.get(listener)?.lists(host);
        loop {
            let i = lists.iter().filter_map(|l| l.first().copied()).min()?;
            for l in lists.iter_mut() {
                if l.first() == Some(&i) {
                    *l = l.get(1..).unwrap_or_default();
                }
            }
            if let Some(r) = self.routes.get(i).filter(|r| r.matches(host, path)) {
                return Some((i, r));
            }
        }
    }
}

/// The lower-case host of a Host header or `:authority`, without port or trailing dot.
pub fn host_of(authority: &str) -> Cow<'_, str> {
    let a = authority.trim();
    let host = if let Some(rest) = a.strip_prefix('[') {
        // IPv6 literal: keep the brackets' content.
        rest.split(']').next().unwrap_or(rest)
    } else {
        a.rsplit_once(':').map_or(a, |(h, port)| {
            if port.bytes().all(|b| b.is_ascii_digit()) {
                h
            } else {
                a
            }
        })
    };
    let host = host.trim_end_matches('.');
    if host.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(host.to_ascii_lowercase())
    } else {
        Cow::Borrowed(host)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(name: &str, hosts: &[&str], paths: &[&str], listeners: Option<Vec<usize>>) -> Route {
        Route {
            max_body_bytes: None,
            rate_limit: None,
            client_certificate_required: false,
            name: name.into(),
            listeners,
            hosts: hosts
                .iter()
                .map(|h| HostPattern::parse(h).unwrap())
                .collect(),
            paths: paths
                .iter()
                .map(|p| PathPattern::parse(p).unwrap())
                .collect(),
            target: Target::Pool(0),
            request_headers: Default::default(),
            response_headers: Default::default(),
        }
    }

    fn name(d: Decision<'_, '_>) -> String {
        match d {
            Decision::Matched { route, .. } => route.name.clone(),
            Decision::NotFound => "404".into(),
            Decision::BadPath(_) => "400".into(),
        }
    }

    #[test]
    fn hosts_match_exactly_or_by_wildcard_ignoring_case_and_port() {
        let t = RouteTable::new(
            vec![
                route("www", &["www.contoso.com"], &[], None),
                route("wild", &["*.contoso.com"], &[], None),
            ],
            1,
        );
        assert_eq!(name(t.decide(0, "WWW.Contoso.com:8443", "/")), "www");
        assert_eq!(name(t.decide(0, "a.contoso.com", "/")), "wild");
        assert_eq!(name(t.decide(0, "a.b.contoso.com", "/")), "wild");
        assert_eq!(name(t.decide(0, "contoso.com", "/")), "404");
        assert_eq!(name(t.decide(0, "xcontoso.com", "/")), "404");
    }

    #[test]
    fn path_patterns_are_exact_or_prefix_and_first_match_wins() {
        let t = RouteTable::new(
            vec![
                route("slash", &[], &["/images/*"], None),
                route("star", &[], &["/images*"], None),
                route("exact", &[], &["/about"], None),
            ],
            1,
        );
        assert_eq!(name(t.decide(0, "h", "/images/a.png")), "slash");
        assert_eq!(name(t.decide(0, "h", "/images")), "star");
        assert_eq!(name(t.decide(0, "h", "/imagesX")), "star");
        assert_eq!(name(t.decide(0, "h", "/about")), "exact");
        assert_eq!(name(t.decide(0, "h", "/about/")), "404");
    }

    #[test]
    fn matching_uses_the_normalized_path() {
        let t = RouteTable::new(vec![route("b", &[], &["/b"], None)], 1);
        match t.decide(0, "h", "/a/../b") {
            Decision::Matched { route, path, .. } => {
                assert_eq!(route.name, "b");
                assert_eq!(path, "/b");
            }
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(name(t.decide(0, "h", "/../b")), "400");
    }

    #[test]
    fn file_order_holds_across_exact_wildcard_and_any_host_routes() {
        let t = RouteTable::new(
            vec![
                route("any-a", &[], &["/a"], None),
                route("exact-b", &["h.x"], &["/b"], None),
                route("wild", &["*.x"], &[], None),
                route("exact-all", &["h.x"], &[], None),
                route("any-all", &[], &[], None),
            ],
            1,
        );
        assert_eq!(name(t.decide(0, "h.x", "/a")), "any-a");
        assert_eq!(name(t.decide(0, "h.x", "/b")), "exact-b");
        assert_eq!(name(t.decide(0, "h.x", "/c")), "wild");
        assert_eq!(name(t.decide(0, "q.h.x", "/c")), "wild");
        assert_eq!(name(t.decide(0, "other", "/c")), "any-all");
        assert_eq!(name(t.decide(0, "x", "/c")), "any-all");
    }

    #[test]
    fn encoded_slash_that_would_change_the_route_is_refused() {
        let t = RouteTable::new(
            vec![
                route("admin", &[], &["/admin/*"], None),
                route("public", &[], &["/public/*"], None),
            ],
            1,
        );
        assert_eq!(name(t.decide(0, "h", "/public/..%2Fadmin/x")), "400");
        assert_eq!(name(t.decide(0, "h", "/public/a%2Fb")), "public");
    }

    #[test]
    fn routes_apply_only_to_their_listeners() {
        let t = RouteTable::new(vec![route("only1", &[], &[], Some(vec![1]))], 2);
        assert_eq!(name(t.decide(0, "h", "/")), "404");
        assert_eq!(name(t.decide(1, "h", "/")), "only1");
        assert_eq!(name(t.decide(7, "h", "/")), "404");
    }

    #[test]
    fn host_of_strips_ports_and_brackets() {
        assert_eq!(host_of("Example.COM:443"), "example.com");
        assert_eq!(host_of("[::1]:8443"), "::1");
        assert_eq!(host_of("example.com."), "example.com");
    }

    #[test]
    fn redirect_locations_keep_path_and_query_as_asked() {
        let r = |to: &str, keep_path, keep_query| Redirect {
            to: to.into(),
            status: 301,
            keep_path,
            keep_query,
        };
        assert_eq!(
            r("https://n/new/", false, true).location("/old/a", Some("q=1")),
            "https://n/new/?q=1"
        );
        assert_eq!(
            r("https://n/new/", true, true).location("/old/a", Some("q=1")),
            "https://n/new/old/a?q=1"
        );
        assert_eq!(
            r("https://n/x?a=1", false, true).location("/", Some("b=2")),
            "https://n/x?a=1&b=2"
        );
        assert_eq!(
            r("/elsewhere", false, false).location("/old", Some("q")),
            "/elsewhere"
        );
    }

    #[test]
    fn bad_patterns_are_rejected() {
        assert_eq!(HostPattern::parse("a*.b"), None);
        assert_eq!(HostPattern::parse(""), None);
        assert_eq!(PathPattern::parse("x/"), None);
        assert_eq!(PathPattern::parse("/a*/b"), None);
        assert_eq!(
            PathPattern::parse("/*"),
            Some(PathPattern::Prefix("/".into()))
        );
    }
}
