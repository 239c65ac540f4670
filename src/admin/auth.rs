//! `admin.token`: every admin path asks for it when set, as a bearer token or as the password
//! of HTTP basic authentication (which browsers prompt for and then send with every request of
//! the status page, as HAProxy's `stats auth` does).

use base64::Engine as _;

/// The admin listener's bearer token; its `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct AdminToken(pub String);

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminToken(…)")
    }
}

impl AdminToken {
    /// Whether an `Authorization` header value carries this token: `Bearer TOKEN`, or `Basic`
    /// credentials whose password is the token (any user name).
    pub fn accepts(&self, authorization: Option<&[u8]>) -> bool {
        let Some(value) = authorization.and_then(|v| std::str::from_utf8(v).ok()) else {
            return false;
        };
        let value = value.trim();
        let Some((scheme, rest)) = value.split_once(' ') else {
            return false;
        };
        let rest = rest.trim();
        if scheme.eq_ignore_ascii_case("bearer") {
            return same(rest.as_bytes(), self.0.as_bytes());
        }
        if scheme.eq_ignore_ascii_case("basic") {
            let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(rest) else {
                return false;
            };
            let password = match decoded.iter().position(|b| *b == b':') {
                Some(i) => decoded.get(i + 1..).unwrap_or_default(),
                None => return false,
            };
            return same(password, self.0.as_bytes());
        }
        false
    }
}

/// Compares in time that depends on the lengths only, so a wrong token's prefix cannot be
/// found by timing.
fn same(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The warning `pinion -t` prints when the admin listener binds a non-loopback address
/// without `admin.token`: anyone who reaches it reads the pools, pins and metrics.
pub fn exposed(config: &crate::config::Config) -> Option<String> {
    let addr = config.admin?;
    if addr.ip().is_loopback() || config.admin_token.is_some() {
        return None;
    }
    Some(format!(
        "admin.bind {addr} is not a loopback address and admin.token is not set: anyone who \
         can reach it reads /status and /metrics; set admin.token or bind 127.0.0.1"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token() -> AdminToken {
        AdminToken("0123456789abcdef0123".into())
    }

    #[test]
    fn bearer_and_basic_password_accepted_anything_else_refused() {
        let t = token();
        assert!(t.accepts(Some(b"Bearer 0123456789abcdef0123")));
        assert!(t.accepts(Some(b"bearer  0123456789abcdef0123 ")));
        let basic = base64::engine::general_purpose::STANDARD.encode("ops:0123456789abcdef0123");
        assert!(t.accepts(Some(format!("Basic {basic}").as_bytes())));
        let wrong = base64::engine::general_purpose::STANDARD.encode("0123456789abcdef0123:x");
        assert!(!t.accepts(Some(format!("Basic {wrong}").as_bytes())));
        assert!(!t.accepts(Some(b"Bearer 0123456789abcdef012")));
        assert!(!t.accepts(Some(b"Bearer 0123456789abcdef01234")));
        assert!(!t.accepts(Some(b"0123456789abcdef0123")));
        assert!(!t.accepts(Some(b"Token 0123456789abcdef0123")));
        assert!(!t.accepts(None));
    }

    #[test]
    fn debug_hides_the_token() {
        assert!(!format!("{:?}", token()).contains("0123"));
    }
}
