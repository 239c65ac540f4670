//! Request path normalization (RFC 3986 §6.2.2): what routes match on and what backends receive.

use std::borrow::Cow;

/// Why a path cannot be normalized; each is answered with 400.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// The path does not start with `/`.
    #[error("path is not absolute")]
    NotAbsolute,
    /// A `%` not followed by two hex digits.
    #[error("malformed percent-encoding")]
    BadEncoding,
    /// `%00` anywhere in the path.
    #[error("encoded NUL in path")]
    EncodedNul,
    /// A `..` segment that climbs above the root.
    #[error("path climbs above the root")]
    AboveRoot,
    /// An encoded `/` whose decoding would route the request elsewhere.
    #[error("encoded '/' changes the route")]
    AmbiguousSlash,
}

/// How `%2F` is treated while normalizing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slashes {
    /// Keep `%2F` encoded: it is data inside one segment (what the backend receives).
    KeepEncoded,
    /// Decode `%2F` to `/`: what a backend that decodes before routing would see.
    Decode,
}

/// Normalizes an origin-form path (without the query): decodes percent-encoded unreserved
/// characters, upper-cases the remaining escapes, merges repeated slashes (as nginx does by
/// default) and resolves `.` and `..` segments. A path that is already normal (nearly every
/// request's) is returned as it is, without allocating.
pub fn normalize(path: &str, slashes: Slashes) -> Result<Cow<'_, str>, PathError> {
    if is_normal(path) {
        Ok(Cow::Borrowed(path))
    } else {
        rebuild(path, slashes).map(Cow::Owned)
    }
}

/// Absolute, no escapes, no empty segment but the last, no `.` or `..` segment: `rebuild`
/// would return it unchanged.
fn is_normal(path: &str) -> bool {
    let Some(rest) = path.strip_prefix('/') else {
        return false;
    };
    !path.contains('%')
        && !path.contains("//")
        && rest.split('/').all(|seg| seg != "." && seg != "..")
}

fn rebuild(path: &str, slashes: Slashes) -> Result<String, PathError> {
    if !path.starts_with('/') {
        return Err(PathError::NotAbsolute);
    }
    let decoded = decode_unreserved(path, slashes)?;
    let ends_with_dir =
        decoded.ends_with('/') || decoded.ends_with("/.") || decoded.ends_with("/..");
    let mut segments: Vec<&str> = Vec::new();
    for seg in decoded.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                if segments.pop().is_none() {
                    return Err(PathError::AboveRoot);
                }
            }
            s => segments.push(s),
        }
    }
    let mut out = String::with_capacity(decoded.len());
    for s in &segments {
        out.push('/');
        out.push_str(s);
    }
    if out.is_empty() || ends_with_dir {
        out.push('/');
    }
    Ok(out)
}

fn decode_unreserved(path: &str, slashes: Slashes) -> Result<String, PathError> {
    if !path.contains('%') {
        return Ok(path.to_owned());
    }
    let bytes = path.as_bytes();
    let mut out = String::with_capacity(path.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b != b'%' {
            // Copy the run up to the next escape as a str slice so multi-byte UTF-8 stays whole.
            let end = path[i..].find('%').map_or(path.len(), |n| i + n);
            out.push_str(&path[i..end]);
            i = end;
            continue;
        }
        let (Some(h), Some(l)) = (
            bytes.get(i + 1).and_then(|c| hex(*c)),
            bytes.get(i + 2).and_then(|c| hex(*c)),
        ) else {
            return Err(PathError::BadEncoding);
        };
        let value = (h << 4) | l;
        match value {
            0 => return Err(PathError::EncodedNul),
            b'/' if slashes == Slashes::Decode => out.push('/'),
            v if is_unreserved(v) => out.push(char::from(v)),
            v => {
                out.push('%');
                out.push(char::from(HEX[usize::from(v >> 4)]));
                out.push(char::from(HEX[usize::from(v & 0xf)]));
            }
        }
        i += 3;
    }
    Ok(out)
}

const HEX: &[u8; 16] = b"0123456789ABCDEF";

fn hex(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

fn is_unreserved(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~')
}

/// Whether the path holds an encoded slash (which `Slashes::Decode` would change).
pub fn has_encoded_slash(path: &str) -> bool {
    path.as_bytes()
        .windows(3)
        .any(|w| w[0] == b'%' && w[1] == b'2' && (w[2] == b'f' || w[2] == b'F'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(p: &str) -> Result<String, PathError> {
        normalize(p, Slashes::KeepEncoded).map(Cow::into_owned)
    }

    #[test]
    fn normal_paths_are_borrowed_and_equal_to_a_rebuild() {
        for p in ["/", "/a", "/a/b/", "/a.b/c..d/.e", "/é/x", "/a/b/c/d/e/f"] {
            let got = normalize(p, Slashes::KeepEncoded).unwrap();
            assert!(matches!(got, Cow::Borrowed(_)), "{p}");
            assert_eq!(got, rebuild(p, Slashes::KeepEncoded).unwrap(), "{p}");
        }
        for p in ["//a", "/a/./b", "/a/..", "/%61", "/a//", "/.", "a"] {
            assert!(!is_normal(p), "{p}");
        }
    }

    #[test]
    fn dot_segments_are_resolved() {
        assert_eq!(n("/a/../b").unwrap(), "/b");
        assert_eq!(n("/a/./b/").unwrap(), "/a/b/");
        assert_eq!(n("/a/b/..").unwrap(), "/a/");
        assert_eq!(n("/").unwrap(), "/");
        assert_eq!(n("/..").unwrap_err(), PathError::AboveRoot);
        assert_eq!(n("/a/../../b").unwrap_err(), PathError::AboveRoot);
    }

    #[test]
    fn unreserved_escapes_are_decoded_and_others_uppercased() {
        assert_eq!(n("/%61%2e%2E/x").unwrap(), "/a../x");
        assert_eq!(n("/a/%2e%2e/b").unwrap(), "/b");
        assert_eq!(n("/a%20b%3f").unwrap(), "/a%20b%3F");
        assert_eq!(n("/a%2fb").unwrap(), "/a%2Fb");
        assert_eq!(n("/é%7e").unwrap(), "/é~");
    }

    #[test]
    fn repeated_slashes_are_merged() {
        assert_eq!(n("//a///b").unwrap(), "/a/b");
    }

    #[test]
    fn bad_escapes_nul_and_relative_paths_are_errors() {
        assert_eq!(n("/a%2").unwrap_err(), PathError::BadEncoding);
        assert_eq!(n("/a%zz").unwrap_err(), PathError::BadEncoding);
        assert_eq!(n("/a%00b").unwrap_err(), PathError::EncodedNul);
        assert_eq!(n("a/b").unwrap_err(), PathError::NotAbsolute);
        assert_eq!(n("*").unwrap_err(), PathError::NotAbsolute);
    }

    #[test]
    fn decoding_slashes_exposes_hidden_traversal() {
        assert_eq!(normalize("/a%2F..%2Fb", Slashes::Decode).unwrap(), "/b");
        assert_eq!(
            normalize("/%2F..%2F..", Slashes::Decode).unwrap_err(),
            PathError::AboveRoot
        );
        assert!(has_encoded_slash("/a%2fb"));
        assert!(!has_encoded_slash("/a%20b"));
    }
}
