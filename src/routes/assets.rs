//! Embedded static files (the web page, the API docs) served with an ETag, so browsers
//! revalidate cheaply and never run a stale copy.

use std::sync::Arc;

use bytes::Bytes;
use sha2::{Digest, Sha256};
use warp::http::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE, ETAG, X_CONTENT_TYPE_OPTIONS};
use warp::http::StatusCode;
use warp::reply::Response;
use warp::Filter;

/// One embedded file, ready to serve. Assets are not fingerprinted, so browsers revalidate
/// every use (`no-cache`) and get an empty 304 while the ETag matches.
pub(super) struct Asset {
    body: Bytes,
    content_type: &'static str,
    etag: String,
}

impl Asset {
    /// Prepares `body`, computing its ETag once.
    pub(super) fn new(body: impl Into<Bytes>, content_type: &'static str) -> Self {
        let body = body.into();
        let digest = Sha256::digest(&body);
        let etag = format!("\"{}\"", hex::encode(&digest[..12]));
        Self {
            body,
            content_type,
            etag,
        }
    }

    /// The response to a GET carrying `if_none_match` (if any).
    pub(super) fn reply(&self, if_none_match: Option<&str>) -> Response {
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

/// `GET /<dir>/<name>` serving `body`, as the route `template` (`/<dir>/<name>`).
pub(super) fn file(
    template: &'static str,
    (dir, name): (&'static str, &'static str),
    body: &'static str,
    content_type: &'static str,
) -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone + Send + Sync + 'static {
    super::route(
        template,
        "GET",
        warp::path(dir).and(warp::path(name)).and(warp::path::end()),
        serve(Asset::new(body, content_type)),
    )
}

/// Answers a GET with `asset` (or a 304); put a path filter in front.
pub(super) fn serve(
    asset: Asset,
) -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone + Send + Sync + 'static {
    let asset = Arc::new(asset);
    warp::get()
        .and(if_none_match())
        .map(move |inm: Option<String>| asset.reply(inm.as_deref()))
}

/// The `If-None-Match` header, if any.
fn if_none_match(
) -> impl Filter<Extract = (Option<String>,), Error = std::convert::Infallible> + Clone {
    warp::header::optional::<String>("if-none-match").or_else(|_| async { Ok((None,)) })
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
}
