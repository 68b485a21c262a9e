//! The draw-a-digit page at `/`: log in, draw or pick a digit, see the prediction, all ten
//! probabilities and a link to the request's trace in Jaeger. The page and its assets are
//! embedded in the binary (no CDN), so it works offline.

use std::sync::Arc;

use bytes::Bytes;
use sha2::{Digest, Sha256};
use warp::http::header::{
    HeaderValue, CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, ETAG, X_CONTENT_TYPE_OPTIONS,
};
use warp::http::StatusCode;
use warp::reply::Response;
use warp::{Filter, Reply};

use crate::startup::AppState;

const INDEX: &str = include_str!("../../assets/web/index.html");
const APP_JS: &str = include_str!("../../assets/web/app.js");
const STYLE_CSS: &str = include_str!("../../assets/web/style.css");

/// Where the page expects the Jaeger UI base URL.
const JAEGER_PLACEHOLDER: &str = "{{jaeger_ui_url}}";

/// The page runs only its own script and styles and talks only to this server; the preview of
/// the image sent is a `blob:` URL and the (empty) icon a `data:` one.
const CSP: &str =
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; \
                   connect-src 'self'; form-action 'none'; base-uri 'none'; frame-ancestors 'none'";

/// One embedded file, ready to serve. Assets are not fingerprinted, so browsers revalidate
/// every use (`no-cache`) and get an empty 304 while the ETag matches.
struct Asset {
    body: Bytes,
    content_type: &'static str,
    etag: String,
}

impl Asset {
    fn new(body: impl Into<Bytes>, content_type: &'static str) -> Self {
        let body = body.into();
        let digest = Sha256::digest(&body);
        let etag = format!("\"{}\"", hex::encode(&digest[..12]));
        Self {
            body,
            content_type,
            etag,
        }
    }

    fn reply(&self, if_none_match: Option<&str>) -> Response {
        let fresh = if_none_match.is_some_and(|v| etag_matches(v, &self.etag));
        let mut res = if fresh {
            let mut res = Response::new(Bytes::new().into());
            *res.status_mut() = StatusCode::NOT_MODIFIED;
            res
        } else {
            let mut res = Response::new(self.body.clone().into());
            res.headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static(self.content_type));
            res
        };
        let headers = res.headers_mut();
        headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
        if let Ok(v) = HeaderValue::from_str(&self.etag) {
            headers.insert(ETAG, v);
        }
        res
    }
}

/// `GET /` (the page), `GET /assets/app.js` and `GET /assets/style.css`.
pub fn route(
    state: AppState,
) -> impl Filter<Extract = (impl Reply,), Error = warp::Rejection> + Clone {
    let index = Arc::new(Asset::new(
        render_index(INDEX, state.jaeger_ui_url()),
        "text/html; charset=utf-8",
    ));
    let page =
        warp::path::end()
            .and(warp::get())
            .and(if_none_match())
            .map(move |inm: Option<String>| {
                let mut res = index.reply(inm.as_deref());
                res.headers_mut()
                    .insert(CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
                res
            });
    page.or(asset("app.js", APP_JS, "text/javascript; charset=utf-8"))
        .unify()
        .or(asset("style.css", STYLE_CSS, "text/css; charset=utf-8"))
        .unify()
}

/// `GET /assets/<name>`.
fn asset(
    name: &'static str,
    body: &'static str,
    content_type: &'static str,
) -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone {
    let asset = Arc::new(Asset::new(body, content_type));
    warp::path("assets")
        .and(warp::path(name))
        .and(warp::path::end())
        .and(warp::get())
        .and(if_none_match())
        .map(move |inm: Option<String>| asset.reply(inm.as_deref()))
}

fn if_none_match(
) -> impl Filter<Extract = (Option<String>,), Error = std::convert::Infallible> + Clone {
    warp::header::optional::<String>("if-none-match").or_else(|_| async { Ok((None,)) })
}

/// The page with the Jaeger UI base URL filled in (empty, so no links, unless it is http(s)).
fn render_index(template: &str, jaeger_ui_url: &str) -> String {
    let url = jaeger_ui_url.trim();
    let lower = url.to_ascii_lowercase();
    let url = if lower.starts_with("http://") || lower.starts_with("https://") {
        url
    } else {
        ""
    };
    template.replace(JAEGER_PLACEHOLDER, &escape_html(url))
}

/// Escapes text for an HTML attribute value or element content.
fn escape_html(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Whether an `If-None-Match` value names `etag` (weak comparison, as RFC 9110 asks for GET).
fn etag_matches(if_none_match: &str, etag: &str) -> bool {
    let strip = |t: &str| t.trim().trim_start_matches("W/").to_string();
    let etag = strip(etag);
    if_none_match
        .split(',')
        .any(|t| t.trim() == "*" || strip(t) == etag)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_gets_the_jaeger_url_escaped() {
        let html = render_index(INDEX, "http://jaeger.example:16686/?a=1&b=\"x\"");
        assert!(!html.contains(JAEGER_PLACEHOLDER));
        assert!(html.contains(
            r#"<meta name="jaeger-ui-url" content="http://jaeger.example:16686/?a=1&amp;b=&quot;x&quot;">"#
        ));
    }

    #[test]
    fn a_jaeger_url_that_is_not_http_is_left_out() {
        for bad in ["javascript:alert(1)", "data:text/html,x", "", "  "] {
            let html = render_index(INDEX, bad);
            assert!(
                html.contains(r#"<meta name="jaeger-ui-url" content="">"#),
                "{bad}"
            );
        }
        assert!(render_index(INDEX, "HTTPS://j.example").contains(r#"content="HTTPS://j.example""#));
    }

    #[test]
    fn the_page_uses_the_assets_this_module_serves() {
        assert!(INDEX.contains(r#"src="/assets/app.js""#));
        assert!(INDEX.contains(r#"href="/assets/style.css""#));
        assert!(INDEX.contains(r#"<canvas id="pad""#));
        // No external resources: everything must work offline.
        for text in [INDEX, APP_JS, STYLE_CSS] {
            assert!(
                !text.contains("https://"),
                "an external URL in an embedded asset"
            );
        }
    }

    #[test]
    fn a_matching_etag_gives_an_empty_304() {
        let asset = Asset::new("body", "text/plain; charset=utf-8");
        let res = asset.reply(None);
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(res.headers()[CONTENT_TYPE], "text/plain; charset=utf-8");
        assert_eq!(res.headers()[CACHE_CONTROL], "no-cache");
        let etag = res.headers()[ETAG].to_str().unwrap().to_string();
        assert!(etag.starts_with('"') && etag.ends_with('"') && etag.len() == 26);

        let res = asset.reply(Some(&format!("\"other\", W/{etag}")));
        assert_eq!(res.status(), StatusCode::NOT_MODIFIED);
        assert!(!res.headers().contains_key(CONTENT_TYPE));
        assert_eq!(res.headers()[ETAG], etag.as_str());

        assert_eq!(asset.reply(Some("\"other\"")).status(), StatusCode::OK);
        assert_eq!(asset.reply(Some("*")).status(), StatusCode::NOT_MODIFIED);
    }

    #[test]
    fn html_escaping_covers_quotes_and_markup() {
        assert_eq!(
            escape_html(r#"<a href='x'>&"#),
            "&lt;a href=&#39;x&#39;&gt;&amp;"
        );
        assert_eq!(escape_html("plain"), "plain");
    }
}
