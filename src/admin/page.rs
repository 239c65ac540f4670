//! The status page: one HTML document, its stylesheet and script, compiled into the binary.
//! Nothing is inline and nothing comes from elsewhere, so the page runs under a
//! `Content-Security-Policy` that allows only this origin's script, style and `fetch`.

/// The policy every admin response carries.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
                       connect-src 'self'; img-src 'self' data:; base-uri 'none'; \
                       form-action 'none'; frame-ancestors 'none'";

/// The asset at `path`, with its content type, if it is one of the page's.
pub fn asset(path: &str) -> Option<(&'static str, &'static [u8])> {
    match path {
        "/" | "/index.html" => Some((
            "text/html; charset=utf-8",
            include_str!("page/index.html").as_bytes(),
        )),
        "/page.css" => Some((
            "text/css; charset=utf-8",
            include_str!("page/page.css").as_bytes(),
        )),
        "/page.js" => Some((
            "text/javascript; charset=utf-8",
            include_str!("page/page.js").as_bytes(),
        )),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn page_has_no_inline_script_or_style_and_nothing_from_elsewhere() {
        let html = include_str!("page/index.html");
        assert!(html.contains(r#"<script src="/page.js""#));
        assert!(!html.contains("<script>"));
        assert!(!html.contains("<style"));
        assert!(!html.contains(" style="));
        assert!(!html.contains("http://") && !html.contains("https://"));
        // The SVG namespace is a name, not an address anything is fetched from.
        let js = include_str!("page/page.js").replace("\"http://www.w3.org/2000/svg\"", "");
        assert!(!js.contains("innerHTML"));
        assert!(!js.contains("http://") && !js.contains("https://"));
        assert!(!js.contains("eval("));
    }
}
