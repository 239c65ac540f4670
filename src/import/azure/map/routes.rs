//! Rules, URL path maps, redirects and rewrite sets to pinion routes.

use super::{
    clean, flag, get, name_of, num, prop, reference, s, text, texts, AzListener, Ctx, PoolOut, Rule,
};
use serde_json::Value;
use serde_yaml::{Mapping, Value as Y};
use std::collections::{BTreeMap, BTreeSet};

impl Ctx<'_> {
    pub(super) fn routes(
        &mut self,
        rules: &[Rule],
        listeners: &BTreeMap<String, AzListener>,
        listeners_out: &mut [(String, Y)],
        pools: &mut Vec<PoolOut>,
        routes: &mut Vec<Y>,
    ) {
        // Pairs per address pool, to name pools after the address pool when it has one pair.
        let mut pairs: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        let mut note_pair = |v: &Value, pool_key: &str, settings_key: &str| {
            if let (Some(p), Some(s)) = (reference(v, pool_key), reference(v, settings_key)) {
                pairs
                    .entry(p.to_ascii_lowercase())
                    .or_default()
                    .insert(s.to_ascii_lowercase());
            }
        };
        for r in rules {
            note_pair(&r.props, "backendAddressPool", "backendHttpSettings");
        }
        for m in self.list("urlPathMaps") {
            note_pair(
                &m,
                "defaultBackendAddressPool",
                "defaultBackendHttpSettings",
            );
            for pr in prop(&m, "pathRules")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default()
            {
                note_pair(&pr, "backendAddressPool", "backendHttpSettings");
            }
        }
        let mut made: BTreeMap<(String, String), Option<String>> = BTreeMap::new();
        let mut used_rewrites = BTreeSet::new();
        for rule in rules {
            let element = format!("requestRoutingRules/{}", rule.name);
            let Some(listener) = rule
                .listener
                .as_ref()
                .and_then(|l| listeners.get(&l.to_ascii_lowercase()))
                .cloned()
            else {
                self.report
                    .not_mapped(element, "its HTTP listener was not mapped or not found");
                continue;
            };
            let kind = text(&rule.props, "ruleType").unwrap_or("Basic").to_owned();
            let mut targets = Vec::new();
            if kind.eq_ignore_ascii_case("PathBasedRouting") {
                let Some(map_name) = reference(&rule.props, "urlPathMap") else {
                    self.report
                        .not_mapped(element, "a path-based rule without a URL path map");
                    continue;
                };
                let Some(path_map) = self.find("urlPathMaps", &map_name) else {
                    self.report
                        .not_mapped(element, format!("URL path map {map_name} not found"));
                    continue;
                };
                for pr in prop(&path_map, "pathRules")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default()
                {
                    let paths = texts(&pr, "paths");
                    targets.push((
                        format!("{}--{}", rule.name, name_of(&pr)),
                        format!("urlPathMaps/{map_name}/pathRules/{}", name_of(&pr)),
                        pr.clone(),
                        (
                            "backendAddressPool",
                            "backendHttpSettings",
                            "redirectConfiguration",
                            "rewriteRuleSet",
                        ),
                        Some(paths),
                    ));
                }
                targets.push((
                    format!("{}--default", rule.name),
                    format!("urlPathMaps/{map_name} (default)"),
                    path_map.clone(),
                    (
                        "defaultBackendAddressPool",
                        "defaultBackendHttpSettings",
                        "defaultRedirectConfiguration",
                        "defaultRewriteRuleSet",
                    ),
                    None,
                ));
                self.report
                    .mapped(element.clone(), format!("routes {}--*", clean(&rule.name)));
            } else {
                targets.push((
                    rule.name.clone(),
                    element.clone(),
                    rule.props.clone(),
                    (
                        "backendAddressPool",
                        "backendHttpSettings",
                        "redirectConfiguration",
                        "rewriteRuleSet",
                    ),
                    None,
                ));
            }
            for (route_name, target_element, v, keys, paths) in targets {
                let mut route = Mapping::new();
                let name = self.unique("route", &route_name);
                route.insert("name".into(), s(&name));
                route.insert("listeners".into(), Y::Sequence(vec![s(&listener.pinion)]));
                if !listener.hosts.is_empty() {
                    route.insert(
                        "hosts".into(),
                        Y::Sequence(listener.hosts.iter().map(|h| s(h)).collect()),
                    );
                }
                if let Some(paths) = &paths {
                    let mut ok = Vec::new();
                    for p in paths {
                        if p.starts_with('/') && !p[..p.len().saturating_sub(1)].contains('*') {
                            ok.push(s(p));
                        } else {
                            self.report.not_mapped(
                                format!("{target_element}.paths/{p}"),
                                "pinion paths are exact, `/x/*` or `/x*` (a `*` only at the end)",
                            );
                        }
                    }
                    if ok.is_empty() {
                        self.report.not_mapped(target_element, "no usable path");
                        continue;
                    }
                    route.insert("paths".into(), Y::Sequence(ok));
                }
                let (pool_key, settings_key, redirect_key, rewrite_key) = keys;
                if let Some(redirect) = reference(&v, redirect_key) {
                    match self.redirect(&redirect, &listener, listeners, &paths, rules.len()) {
                        Redirect::Route(r) => {
                            route.insert("redirect".into(), r);
                            routes.push(Y::Mapping(route));
                            self.report
                                .mapped(target_element, format!("routes/{name} (redirect)"));
                        }
                        Redirect::Listener(target, status) => {
                            for (n, l) in listeners_out.iter_mut() {
                                if *n == listener.pinion {
                                    if let Y::Mapping(m) = l {
                                        m.insert("redirect_to_https".into(), s(&target));
                                    }
                                }
                            }
                            self.report.differs(
                                target_element,
                                format!("listeners/{}.redirect_to_https: {target}", listener.pinion),
                                format!("every request on the listener is redirected, with status 308 (was {status}), path and query kept"),
                            );
                        }
                        Redirect::None(why) => self.report.not_mapped(target_element, why),
                    }
                    continue;
                }
                let (Some(pool), Some(settings)) =
                    (reference(&v, pool_key), reference(&v, settings_key))
                else {
                    self.report.not_mapped(
                        target_element,
                        "neither a backend (pool and HTTP settings) nor a redirect",
                    );
                    continue;
                };
                let key = (pool.to_ascii_lowercase(), settings.to_ascii_lowercase());
                let pinion_pool = match made.get(&key) {
                    Some(p) => p.clone(),
                    None => {
                        let shared = pairs.get(&key.0).is_some_and(|s| s.len() > 1);
                        let p = self.pool(&pool, &settings, shared, pools);
                        made.insert(key, p.clone());
                        p
                    }
                };
                let Some(pinion_pool) = pinion_pool else {
                    self.report.not_mapped(
                        target_element,
                        format!(
                            "its pool ({pool} with {settings}) could not be made; see its line"
                        ),
                    );
                    continue;
                };
                route.insert("pool".into(), s(&pinion_pool));
                if let Some(set) = reference(&v, rewrite_key) {
                    used_rewrites.insert(set.to_ascii_lowercase());
                    self.rewrite(&set, &mut route);
                }
                routes.push(Y::Mapping(route));
                if paths.is_some() || kind.eq_ignore_ascii_case("Basic") {
                    if paths.is_some() {
                        self.report.differs(
                            target_element,
                            format!("routes/{name}"),
                            "paths match case-sensitively in pinion (the gateway ignores case)",
                        );
                    } else {
                        self.report.mapped(target_element, format!("routes/{name}"));
                    }
                } else {
                    self.report.mapped(target_element, format!("routes/{name}"));
                }
            }
        }
        for set in self.list("rewriteRuleSets") {
            if !used_rewrites.contains(&name_of(&set).to_ascii_lowercase()) {
                self.report.not_mapped(
                    format!("rewriteRuleSets/{}", name_of(&set)),
                    "no rule uses it",
                );
            }
        }
        for r in self.list("redirectConfigurations") {
            let n = name_of(&r);
            let used = self
                .report
                .entries
                .iter()
                .any(|e| e.element == format!("redirectConfigurations/{n}"));
            if !used {
                self.report
                    .not_mapped(format!("redirectConfigurations/{n}"), "no rule uses it");
            }
        }
    }

    pub(super) fn rewrite(&mut self, set_name: &str, route: &mut Mapping) {
        let element = format!("rewriteRuleSets/{set_name}");
        let Some(set) = self.find("rewriteRuleSets", set_name) else {
            self.report.not_mapped(element, "not found");
            return;
        };
        let mut request = (Mapping::new(), Vec::new());
        let mut response = (Mapping::new(), Vec::new());
        for rule in prop(&set, "rewriteRules")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
        {
            let rule_element = format!("{element}/{}", name_of(&rule));
            if prop(&rule, "conditions")
                .and_then(Value::as_array)
                .is_some_and(|c| !c.is_empty())
            {
                self.report.not_mapped(
                    rule_element,
                    "a conditional rewrite: pinion's header rewrites are unconditional per route; \
                     make a route for the condition (host/path) or leave it to the backend",
                );
                continue;
            }
            let Some(actions) = prop(&rule, "actionSet") else {
                continue;
            };
            if get(actions, "urlConfiguration").is_some_and(|u| !u.is_null()) {
                self.report.not_mapped(
                    format!("{rule_element}.urlConfiguration"),
                    "URL rewriting: pinion forwards the normalized path unchanged",
                );
            }
            for (key, side) in [
                ("requestHeaderConfigurations", &mut request),
                ("responseHeaderConfigurations", &mut response),
            ] {
                for h in get(actions, key)
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default()
                {
                    let name = get(&h, "headerName")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_owned();
                    let value = get(&h, "headerValue")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_owned();
                    let forbidden = crate::config::RESERVED_HEADERS;
                    let header_element = format!("{rule_element}.{key}/{name}");
                    if name.is_empty() || forbidden.contains(&name.to_ascii_lowercase().as_str()) {
                        self.report.not_mapped(header_element, "pinion routes may not rewrite Host or framing headers (use the pool's host_header for Host)");
                    } else if value.contains('{') {
                        self.report.not_mapped(header_element, format!("the value `{value}` uses server variables, which pinion has no equivalent of"));
                    } else if value.is_empty() {
                        side.1.push(s(&name));
                        self.report
                            .mapped(header_element, "routes[].*_headers.remove");
                    } else {
                        side.0.insert(s(&name), s(&value));
                        self.report.mapped(header_element, "routes[].*_headers.set");
                    }
                }
            }
        }
        for (key, (set, remove)) in [("request_headers", request), ("response_headers", response)] {
            if set.is_empty() && remove.is_empty() {
                continue;
            }
            let mut m = Mapping::new();
            if !set.is_empty() {
                m.insert("set".into(), Y::Mapping(set));
            }
            if !remove.is_empty() {
                m.insert("remove".into(), Y::Sequence(remove));
            }
            route.insert(key.into(), Y::Mapping(m));
        }
    }

    pub(super) fn redirect(
        &mut self,
        name: &str,
        from: &AzListener,
        listeners: &BTreeMap<String, AzListener>,
        paths: &Option<Vec<String>>,
        rule_count: usize,
    ) -> Redirect {
        let element = format!("redirectConfigurations/{name}");
        let Some(r) = self.find("redirectConfigurations", name) else {
            return Redirect::None(format!("redirect configuration {name} not found"));
        };
        let status = match text(&r, "redirectType")
            .unwrap_or("Permanent")
            .to_ascii_lowercase()
            .as_str()
        {
            "found" => 302,
            "seeother" => 303,
            "temporary" => 307,
            _ => 301,
        };
        // Both default to true in the gateway's API.
        let include_path = flag(&r, "includePath").unwrap_or(true);
        let include_query = flag(&r, "includeQueryString").unwrap_or(true);
        let mut out = Mapping::new();
        if let Some(url) = text(&r, "targetUrl") {
            out.insert("to".into(), s(url));
        } else if let Some(target) = reference(&r, "targetListener") {
            let Some(t) = listeners.get(&target.to_ascii_lowercase()).cloned() else {
                self.report
                    .not_mapped(element, format!("target listener {target} not mapped"));
                return Redirect::None(format!("target listener {target} not mapped"));
            };
            if t.hosts.len() == 1 {
                let scheme = if t.https { "https" } else { "http" };
                let default_port = if t.https { 443 } else { 80 };
                let port = if t.port == default_port {
                    String::new()
                } else {
                    format!(":{}", t.port)
                };
                out.insert("to".into(), s(&format!("{scheme}://{}{port}", t.hosts[0])));
            } else if t.https && from.hosts.is_empty() && paths.is_none() && rule_count > 0 {
                self.report.differs(
                    element,
                    format!("listeners/{}.redirect_to_https", from.pinion),
                    format!(
                        "the target listener has no single host name: the whole listener \
                         redirects to the client's host with 308 (was {status}), keeping path \
                         and query (includePath {include_path}, includeQueryString \
                         {include_query})"
                    ),
                );
                return Redirect::Listener(t.pinion, status);
            } else {
                let why = "a redirect to a listener without one host name needs the request's \
                           host, which a pinion route redirect cannot use; write `redirect.to` \
                           by hand";
                self.report.not_mapped(element, why);
                return Redirect::None(why.into());
            }
        } else {
            self.report
                .not_mapped(element, "neither a target URL nor a target listener");
            return Redirect::None("empty redirect".into());
        }
        out.insert("status".into(), num(u64::from(status)));
        out.insert("keep_path".into(), Y::Bool(include_path));
        out.insert("keep_query".into(), Y::Bool(include_query));
        self.report.mapped(element, "routes[].redirect");
        Redirect::Route(Y::Mapping(out))
    }
}

pub(super) enum Redirect {
    Route(Y),
    Listener(String, u16),
    None(String),
}
