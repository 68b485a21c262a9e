//! The draw-a-digit page at `/`: log in, draw or pick a digit, see the prediction, all ten
//! probabilities and a link to the request's trace in Jaeger. The page and its assets are
//! embedded in the binary (no CDN), so it works offline.

use warp::http::header::{HeaderValue, CONTENT_SECURITY_POLICY, X_FRAME_OPTIONS};
use warp::reply::Response;
use warp::Filter;

use super::assets::{self, Asset};

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

/// `GET /` (the page), `GET /assets/app.js` and `GET /assets/style.css`.
pub fn route(
    jaeger_ui_url: &str,
) -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone + Send + Sync + 'static {
    let index = Asset::new(
        render_index(INDEX, jaeger_ui_url),
        "text/html; charset=utf-8",
    );
    let page = assets::serve(index).map(|mut res: Response| {
        let headers = res.headers_mut();
        headers.insert(CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
        headers.insert(X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
        res
    });
    super::route("/", "GET", warp::path::end(), page)
        .or(assets::file(
            "/assets/app.js",
            ("assets", "app.js"),
            APP_JS,
            "text/javascript; charset=utf-8",
        ))
        .unify()
        .or(assets::file(
            "/assets/style.css",
            ("assets", "style.css"),
            STYLE_CSS,
            "text/css; charset=utf-8",
        ))
        .unify()
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
    fn html_escaping_covers_quotes_and_markup() {
        assert_eq!(
            escape_html(r#"<a href='x'>&"#),
            "&lt;a href=&#39;x&#39;&gt;&amp;"
        );
        assert_eq!(escape_html("plain"), "plain");
    }
}
