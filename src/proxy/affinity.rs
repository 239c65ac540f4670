//! The affinity cookie: reading it from requests and writing it on responses.

use crate::config::{Affinity, SameSite};
use pingora::http::RequestHeader;

/// The value of cookie `name` in the request's Cookie headers, if it looks like one of ours.
pub fn cookie(req: &RequestHeader, name: &str) -> Option<String> {
    req.headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim().trim_matches('"'))
        // Our ids are 32 hex digits; anything else is forged or stale and is ignored.
        .filter(|v| v.len() == 32 && v.bytes().all(|b| b.is_ascii_hexdigit()))
        .map(str::to_owned)
}

/// The Set-Cookie value naming server `id`.
pub fn set_cookie(a: &Affinity, id: &str, tls_listener: bool) -> String {
    let mut c = format!("{}={id}; Path=/", a.cookie);
    if a.ttl.as_secs() > 0 {
        c.push_str(&format!("; Max-Age={}", a.ttl.as_secs()));
    }
    if a.secure && tls_listener {
        c.push_str("; Secure");
    }
    if a.http_only {
        c.push_str("; HttpOnly");
    }
    c.push_str(match a.same_site {
        SameSite::Lax => "; SameSite=Lax",
        SameSite::Strict => "; SameSite=Strict",
        SameSite::None => "; SameSite=None",
    });
    c
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn affinity() -> Affinity {
        Affinity {
            cookie: "ApplicationGatewayAffinity".into(),
            ttl: Duration::ZERO,
            secure: true,
            http_only: true,
            same_site: SameSite::Lax,
            secret: crate::config::AffinitySecret::new(&[1; 32]),
        }
    }

    #[test]
    fn cookie_is_found_among_others_and_forgeries_are_ignored() {
        let id = "0123456789abcdef0123456789abcdef";
        let mut r = RequestHeader::build("GET", b"/", None).unwrap();
        r.append_header(
            "Cookie",
            format!("a=1; ApplicationGatewayAffinity={id}; b=2"),
        )
        .unwrap();
        assert_eq!(
            cookie(&r, "ApplicationGatewayAffinity").as_deref(),
            Some(id)
        );
        let mut r = RequestHeader::build("GET", b"/", None).unwrap();
        r.append_header("Cookie", "ApplicationGatewayAffinity=../../etc; x=y")
            .unwrap();
        assert_eq!(cookie(&r, "ApplicationGatewayAffinity"), None);
    }

    #[test]
    fn set_cookie_carries_the_configured_attributes() {
        let a = affinity();
        assert_eq!(
            set_cookie(&a, "ab", true),
            "ApplicationGatewayAffinity=ab; Path=/; Secure; HttpOnly; SameSite=Lax"
        );
        let b = Affinity {
            ttl: Duration::from_secs(60),
            same_site: SameSite::Strict,
            ..a
        };
        assert_eq!(
            set_cookie(&b, "ab", false),
            "ApplicationGatewayAffinity=ab; Path=/; Max-Age=60; HttpOnly; SameSite=Strict"
        );
    }
}
