//! The web console: the single-page app from `web/`, embedded into the
//! binary at build time (see `build.rs`) and served at `/`. Hashed assets
//! under `/assets/` are cached for a year; `index.html` is revalidated on
//! every load so a new server version brings its console with it. Client
//! routes (`/decisions`, `/ips/192.0.2.1`…) get `index.html`, which routes
//! in the browser. Files that the build pre-compressed (`x.js.gz`) are sent
//! gzipped to browsers that accept it.

use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;

mod embedded {
    include!(concat!(env!("OUT_DIR"), "/console_files.rs"));
}

/// Serves the console for every path no other route claims.
pub fn router() -> Router {
    Router::new().fallback(serve)
}

/// Paths that belong to the API or the server, never to the console: an
/// unknown one is a 404, not the app.
const RESERVED: &[&str] = &["/api/", "/v1/", "/healthz", "/metrics"];

const INDEX: &str = "index.html";

/// What a request path resolves to.
#[derive(Debug, PartialEq, Eq)]
enum Resolved {
    /// A built file, by its name in the table.
    File(&'static str),
    NotFound,
    /// The server was built without the console.
    NotBuilt,
}

/// The console's files, sorted by name.
struct Files(&'static [(&'static str, &'static [u8])]);

impl Files {
    fn get(&self, name: &str) -> Option<(&'static str, &'static [u8])> {
        self.0
            .binary_search_by(|(n, _)| (*n).cmp(name))
            .ok()
            .map(|i| self.0[i])
    }

    /// Which file answers `path`.
    fn resolve(&self, path: &str) -> Resolved {
        if RESERVED
            .iter()
            .any(|r| path.starts_with(r) || path == r.trim_end_matches('/'))
        {
            return Resolved::NotFound;
        }
        if self.get(INDEX).is_none() {
            return Resolved::NotBuilt;
        }
        let name = path.trim_start_matches('/');
        // Never serve the pre-compressed copies under their own names.
        if !name.is_empty() && !name.ends_with(".gz") {
            if let Some((n, _)) = self.get(name) {
                return Resolved::File(n);
            }
        }
        // A missing asset is an error; anything else is a client route.
        if name.starts_with("assets/") || name.contains("..") {
            return Resolved::NotFound;
        }
        Resolved::File(INDEX)
    }
}

/// The content type for a file name, by its extension.
fn content_type(name: &str) -> &'static str {
    match name.rsplit_once('.').map(|(_, ext)| ext) {
        Some("html") => "text/html; charset=utf-8",
        Some("js" | "mjs") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("json" | "map") => "application/json",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("ico") => "image/x-icon",
        Some("webmanifest") => "application/manifest+json",
        Some("woff2") => "font/woff2",
        Some("txt") => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

/// Whether an `Accept-Encoding` header allows gzip.
fn accepts_gzip(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|item| {
            let mut parts = item.split(';').map(str::trim);
            let coding = parts.next().unwrap_or_default();
            let refused = parts.any(|p| {
                p.strip_prefix("q=")
                    .and_then(|q| q.parse::<f32>().ok())
                    .is_some_and(|q| q == 0.0)
            });
            (coding.eq_ignore_ascii_case("gzip") || coding == "*") && !refused
        })
}

/// Only the app's own origin: no inline scripts, no third parties.
const CSP: &str = "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; \
                   connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

async fn serve(method: Method, uri: Uri, headers: HeaderMap) -> Response {
    if method != Method::GET && method != Method::HEAD {
        return (
            StatusCode::METHOD_NOT_ALLOWED,
            [(header::ALLOW, "GET, HEAD")],
            "the console only answers GET and HEAD\n",
        )
            .into_response();
    }
    let files = Files(embedded::FILES);
    match files.resolve(uri.path()) {
        Resolved::NotFound => (StatusCode::NOT_FOUND, "not found\n").into_response(),
        Resolved::NotBuilt => (
            StatusCode::OK,
            [
                (header::CONTENT_TYPE, "text/html; charset=utf-8"),
                (header::CACHE_CONTROL, "no-store"),
            ],
            NOT_BUILT,
        )
            .into_response(),
        Resolved::File(name) => file_response(&files, name, accepts_gzip(&headers)),
    }
}

fn file_response(files: &Files, name: &'static str, gzip: bool) -> Response {
    let compressed = files.get(&format!("{name}.gz"));
    let (body, encoding) = match (compressed, gzip) {
        (Some((_, gz)), true) => (gz, Some("gzip")),
        _ => (files.get(name).map(|(_, b)| b).unwrap_or_default(), None),
    };
    let cache = if name.starts_with("assets/") {
        "public, max-age=31536000, immutable"
    } else {
        "no-cache"
    };
    let mut response = (StatusCode::OK, body).into_response();
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(content_type(name)),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    if name == INDEX {
        h.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CSP),
        );
    }
    if compressed.is_some() {
        h.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
    }
    if let Some(e) = encoding {
        h.insert(header::CONTENT_ENCODING, HeaderValue::from_static(e));
    }
    response
}

const NOT_BUILT: &str = r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>fleetban</title>
<meta name="viewport" content="width=device-width, initial-scale=1"></head>
<body style="font-family: system-ui, sans-serif; max-width: 40rem; margin: 3rem auto; padding: 0 1rem">
<h1>fleetban</h1>
<p>This server was built without its web console. The REST API is at
<a href="/api/v1/docs">/api/v1/docs</a>.</p>
<p>To add the console, build it (needs Node.js 20 and npm) and rebuild the server:</p>
<pre>scripts/build-web
cargo build --release -p fleetban-server</pre>
<p><code>scripts/quickstart</code> does both.</p>
</body></html>
"#;

#[cfg(test)]
mod tests {
    use super::*;

    static BUILT: &[(&str, &[u8])] = &[
        ("assets/app-1a2b.js", b"js"),
        ("assets/app-1a2b.js.gz", b"gz"),
        ("favicon.svg", b"<svg/>"),
        ("index.html", b"<html>"),
    ];

    #[test]
    fn files_and_client_routes() {
        let f = Files(BUILT);
        assert_eq!(f.resolve("/"), Resolved::File("index.html"));
        assert_eq!(f.resolve("/favicon.svg"), Resolved::File("favicon.svg"));
        assert_eq!(
            f.resolve("/assets/app-1a2b.js"),
            Resolved::File("assets/app-1a2b.js")
        );
        assert_eq!(f.resolve("/decisions"), Resolved::File("index.html"));
        assert_eq!(f.resolve("/ips/192.0.2.1"), Resolved::File("index.html"));
    }

    #[test]
    fn missing_assets_reserved_paths_and_compressed_copies_are_not_found() {
        let f = Files(BUILT);
        assert_eq!(f.resolve("/assets/gone-0000.js"), Resolved::NotFound);
        assert_eq!(f.resolve("/api/v1/nothing"), Resolved::NotFound);
        assert_eq!(f.resolve("/v1/decisions/nothing"), Resolved::NotFound);
        assert_eq!(f.resolve("/metrics"), Resolved::NotFound);
        assert_eq!(f.resolve("/../etc/passwd"), Resolved::NotFound);
        // The .gz copy is only sent as an encoding of its original.
        assert_eq!(f.resolve("/assets/app-1a2b.js.gz"), Resolved::NotFound);
    }

    #[test]
    fn without_a_build_every_page_explains() {
        let f = Files(&[]);
        assert_eq!(f.resolve("/"), Resolved::NotBuilt);
        assert_eq!(f.resolve("/decisions"), Resolved::NotBuilt);
        assert_eq!(f.resolve("/api/v1/x"), Resolved::NotFound);
    }

    #[test]
    fn content_types() {
        assert_eq!(content_type("index.html"), "text/html; charset=utf-8");
        assert_eq!(content_type("a/b.js"), "text/javascript; charset=utf-8");
        assert_eq!(content_type("x.css"), "text/css; charset=utf-8");
        assert_eq!(content_type("x.svg"), "image/svg+xml");
        assert_eq!(content_type("noext"), "application/octet-stream");
    }

    #[test]
    fn gzip_negotiation() {
        let with = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::ACCEPT_ENCODING, HeaderValue::from_str(v).unwrap());
            accepts_gzip(&h)
        };
        assert!(with("gzip, deflate, br"));
        assert!(with("br;q=1.0, gzip;q=0.8"));
        assert!(with("*"));
        assert!(!with("gzip;q=0"));
        assert!(!with("br, deflate"));
        assert!(!accepts_gzip(&HeaderMap::new()));
    }

    #[tokio::test]
    async fn the_router_answers_only_reads_and_leaves_the_api_alone() {
        use axum::body::Body;
        use axum::http::Request;
        use tower::ServiceExt;

        let call = |method: &str, path: &str| {
            let req = Request::builder()
                .method(method)
                .uri(path)
                .body(Body::empty())
                .unwrap();
            router().oneshot(req)
        };
        let r = call("POST", "/decisions").await.unwrap();
        assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(r.headers()[header::ALLOW], "GET, HEAD");
        let r = call("GET", "/api/v1/nothing").await.unwrap();
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
        // Built or not, a client route answers with a page.
        let r = call("GET", "/decisions").await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(
            r.headers()[header::CONTENT_TYPE],
            "text/html; charset=utf-8"
        );
    }

    #[test]
    fn headers_of_assets_and_index() {
        let f = Files(BUILT);
        let r = file_response(&f, "assets/app-1a2b.js", true);
        assert_eq!(r.headers()[header::CONTENT_ENCODING], "gzip");
        assert_eq!(
            r.headers()[header::CACHE_CONTROL],
            "public, max-age=31536000, immutable"
        );
        assert_eq!(r.headers()[header::VARY], "accept-encoding");
        let r = file_response(&f, "assets/app-1a2b.js", false);
        assert!(r.headers().get(header::CONTENT_ENCODING).is_none());
        let r = file_response(&f, "index.html", true);
        assert_eq!(r.headers()[header::CACHE_CONTROL], "no-cache");
        assert!(r.headers().get(header::CONTENT_SECURITY_POLICY).is_some());
        assert!(r.headers().get(header::VARY).is_none());
    }
}
