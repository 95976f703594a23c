//! The browser client, served on the chat port.
//!
//! `GET /` gives a page that speaks the chat protocol end to end in the
//! browser (its page, style and icon are in `web/`; its modules in
//! `web/src/` are bundled into `web/dist/app.js`, which is committed so
//! `cargo build` needs no npm). The files are embedded in the
//! binary: nothing to deploy. Every answer carries a strict
//! Content-Security-Policy (own scripts, styles and WebSocket only: no
//! inline code, no CDN), an ETag and `Cache-Control: no-cache`, so a browser
//! revalidates and gets `304 Not Modified` while the binary is unchanged.

use std::net::SocketAddr;
use std::sync::OnceLock;

use sha2::{Digest, Sha256};

use crate::http::{Handler, RequestHead, Response};

/// What the page may load: itself, and WebSockets to any host (the page
/// connects to the host it came from, by name or address).
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; \
    style-src 'self'; img-src 'self'; connect-src 'self' ws: wss:; object-src 'none'; \
    base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// One embedded file.
struct Asset {
    path: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

const ASSETS: &[Asset] = &[
    Asset {
        path: "/index.html",
        content_type: "text/html; charset=utf-8",
        body: include_bytes!("../web/index.html"),
    },
    Asset {
        path: "/app.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../web/dist/app.js"),
    },
    Asset {
        path: "/style.css",
        content_type: "text/css; charset=utf-8",
        body: include_bytes!("../web/style.css"),
    },
    Asset {
        path: "/favicon.svg",
        content_type: "image/svg+xml",
        body: include_bytes!("../web/favicon.svg"),
    },
    Asset {
        path: "/LICENSES.txt",
        content_type: "text/plain; charset=utf-8",
        body: include_bytes!("../web/dist/LICENSES.txt"),
    },
];

/// Serves the embedded web client; answers only its own paths.
#[derive(Default)]
pub struct WebClient;

impl WebClient {
    pub fn new() -> WebClient {
        WebClient
    }
}

/// The ETags of [`ASSETS`], in the same order (hash of the content).
fn etags() -> &'static [String] {
    static ETAGS: OnceLock<Vec<String>> = OnceLock::new();
    ETAGS.get_or_init(|| {
        ASSETS
            .iter()
            .map(|asset| {
                let digest = Sha256::digest(asset.body);
                let hex: String = digest[..12].iter().map(|b| format!("{b:02x}")).collect();
                format!("\"{hex}\"")
            })
            .collect()
    })
}

/// Does an `If-None-Match` value name `etag` (or `*`)?
fn matches_etag(if_none_match: &str, etag: &str) -> bool {
    if_none_match.split(',').any(|tag| {
        let tag = tag.trim();
        tag == "*" || tag.trim_start_matches("W/") == etag
    })
}

impl Handler for WebClient {
    fn respond(&self, request: &RequestHead, _peer: SocketAddr) -> Option<Response> {
        let path = match request.path() {
            "/" => "/index.html",
            other => other,
        };
        let index = ASSETS.iter().position(|asset| asset.path == path)?;
        let asset = &ASSETS[index];
        let etag = &etags()[index];
        let not_modified = request
            .header("if-none-match")
            .is_some_and(|value| matches_etag(value, etag));
        let response = if not_modified {
            Response::new(304, asset.content_type, &[][..])
        } else {
            Response::new(200, asset.content_type, asset.body)
        };
        Some(
            response
                .with_header("ETag", etag.clone())
                .with_header("Cache-Control", "no-cache")
                .with_header("Content-Security-Policy", CONTENT_SECURITY_POLICY)
                .with_header("X-Frame-Options", "DENY"),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(target: &str, extra: &str) -> Option<Response> {
        let raw = format!("GET {target} HTTP/1.1\r\nHost: x\r\n{extra}\r\n");
        let head = RequestHead::parse(raw.as_bytes())
            .expect("valid")
            .expect("complete");
        WebClient::new().respond(&head, "127.0.0.1:1".parse().expect("address"))
    }

    fn header<'a>(response: &'a Response, name: &str) -> &'a str {
        response
            .headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_ref())
            .unwrap_or_default()
    }

    #[test]
    fn the_root_is_the_page_with_a_strict_policy() {
        let page = get("/", "").expect("served");
        assert_eq!(page.status, 200);
        assert_eq!(header(&page, "Content-Type"), "text/html; charset=utf-8");
        let body = String::from_utf8(page.body.to_vec()).expect("utf-8");
        assert!(body.contains("<script type=\"module\" src=\"app.js\">"));
        assert!(!body.contains("http://") && !body.contains("https://"));
        let policy = header(&page, "Content-Security-Policy");
        assert!(policy.contains("default-src 'self'"), "{policy}");
        assert!(!policy.contains("unsafe-inline") && !policy.contains("unsafe-eval"));
        assert_eq!(header(&page, "Cache-Control"), "no-cache");
    }

    #[test]
    fn each_asset_has_its_content_type() {
        for (path, kind) in [
            ("/app.js", "text/javascript; charset=utf-8"),
            ("/style.css", "text/css; charset=utf-8"),
            ("/favicon.svg", "image/svg+xml"),
            ("/LICENSES.txt", "text/plain; charset=utf-8"),
            ("/index.html?v=1", "text/html; charset=utf-8"),
        ] {
            let answer = get(path, "").expect(path);
            assert_eq!(answer.status, 200, "{path}");
            assert_eq!(header(&answer, "Content-Type"), kind, "{path}");
            assert!(!answer.body.is_empty(), "{path}");
        }
    }

    #[test]
    fn the_licences_of_the_bundled_crypto_are_served() {
        let text = get("/LICENSES.txt", "").expect("served");
        let text = String::from_utf8(text.body.to_vec()).expect("utf-8");
        for lib in ["@noble/curves", "@noble/hashes", "@noble/ciphers"] {
            assert!(text.contains(lib), "{lib}");
        }
        assert!(text.contains("MIT License"));
    }

    #[test]
    fn a_matching_etag_gets_304_without_a_body() {
        let first = get("/app.js", "").expect("served");
        let etag = header(&first, "ETag").to_string();
        assert!(etag.starts_with('"') && etag.len() > 10, "{etag}");
        let again = get("/app.js", &format!("If-None-Match: {etag}\r\n")).expect("served");
        assert_eq!(again.status, 304);
        assert!(again.body.is_empty());
        let stale = get("/app.js", "If-None-Match: \"other\"\r\n").expect("served");
        assert_eq!(stale.status, 200);
    }

    #[test]
    fn other_paths_are_left_to_other_handlers() {
        assert!(get("/healthz", "").is_none());
        assert!(get("/../Cargo.toml", "").is_none());
        assert!(get("/dist/app.js", "").is_none());
    }

    #[test]
    fn the_bundle_uses_no_webcrypto() {
        let bundle = get("/app.js", "").expect("served");
        let text = String::from_utf8_lossy(&bundle.body);
        assert!(!text.contains("crypto.subtle") && !text.contains(".subtle."));
        assert!(text.contains("getRandomValues"));
    }
}
