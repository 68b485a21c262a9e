//! `GET /openapi.json` (generated from the route and type annotations) and `GET /docs`, a
//! Swagger UI from embedded assets so the docs work offline.

use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};
use warp::http::header::{HeaderValue, CONTENT_SECURITY_POLICY, X_FRAME_OPTIONS};
use warp::reply::Response;
use warp::{Filter, Rejection};

use super::assets::{self, Asset};
use super::{health, login, metrics, model_info, predict};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "mnist-api",
        description = "Handwritten digit recognition with a CNN trained on MNIST. Every error \
            answers `{\"msg\", \"code\"}` (`{\"error\", \"code\"}` under `/v2`, the Open \
            Inference Protocol's routes); every response carries `x-trace-id` and \
            `traceresponse` headers naming its trace in Jaeger."
    ),
    paths(health::route, model_info::route, login::route, predict::route, metrics::route),
    components(schemas(crate::error::ErrorBody, predict::Many)),
    modifiers(&BearerAuth),
    tags(
        (name = "model", description = "Predictions"),
        (name = "auth", description = "Tokens for /predict"),
        (name = "service", description = "Health, model metadata and metrics"),
        (name = "inference protocol", description = "The Open Inference Protocol (KServe v2, Triton), model `mnist`"),
    )
)]
struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let mut scheme = Http::new(HttpAuthScheme::Bearer);
        scheme.bearer_format = Some("JWT".to_string());
        openapi
            .components
            .get_or_insert_with(Default::default)
            .add_security_scheme("bearer", SecurityScheme::Http(scheme));
    }
}

/// The API description, version taken from Cargo.
pub fn document() -> utoipa::openapi::OpenApi {
    let mut doc = ApiDoc::openapi();
    doc.merge(<super::v2_docs::V2Doc as OpenApi>::openapi());
    doc.info.version = env!("CARGO_PKG_VERSION").to_string();
    doc
}

const DOCS_PAGE: &str = r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>mnist-api — API docs</title>
<link rel="stylesheet" href="/docs/swagger-ui.css">
</head>
<body>
<div id="swagger-ui"></div>
<script src="/docs/swagger-ui-bundle.js"></script>
<script src="/docs/init.js"></script>
</body>
</html>
"#;

/// Swagger UI runs its own bundle, sets inline styles, draws its icons as `data:` images and
/// fetches the document from this server; nothing else is allowed, and no site may frame the
/// page (clickjacking on a page that holds a token).
const DOCS_CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
    img-src 'self' data:; connect-src 'self'; form-action 'none'; base-uri 'none'; \
    frame-ancestors 'none'";

/// Kept out of the page so a Content-Security-Policy without inline scripts still works.
const DOCS_INIT: &str =
    "window.ui = SwaggerUIBundle({ url: '/openapi.json', dom_id: '#swagger-ui' });\n";

const SWAGGER_JS: &str = include_str!("../../assets/swagger-ui/swagger-ui-bundle.js");
const SWAGGER_CSS: &str = include_str!("../../assets/swagger-ui/swagger-ui.css");

/// `GET /openapi.json`, `GET /docs` and the Swagger UI assets under `/docs/`.
pub fn route(
) -> impl Filter<Extract = (Response,), Error = Rejection> + Clone + Send + Sync + 'static {
    // Rendered once: the document cannot change while the process runs.
    let json = serde_json::to_string(&document()).unwrap_or_else(|_| "{}".to_string());
    let spec = super::route(
        "/openapi.json",
        "GET",
        warp::path!("openapi.json"),
        assets::serve(Asset::new(json, "application/json")),
    );
    let docs = assets::serve(Asset::new(DOCS_PAGE, "text/html; charset=utf-8")).map(
        |mut res: Response| {
            let headers = res.headers_mut();
            headers.insert(CONTENT_SECURITY_POLICY, HeaderValue::from_static(DOCS_CSP));
            headers.insert(X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
            res
        },
    );
    let page = super::route("/docs", "GET", warp::path!("docs"), docs);
    let js = "text/javascript; charset=utf-8";
    let css = "text/css; charset=utf-8";
    spec.or(page)
        .unify()
        .or(assets::file(
            "/docs/swagger-ui-bundle.js",
            ("docs", "swagger-ui-bundle.js"),
            SWAGGER_JS,
            js,
        ))
        .unify()
        .or(assets::file(
            "/docs/swagger-ui.css",
            ("docs", "swagger-ui.css"),
            SWAGGER_CSS,
            css,
        ))
        .unify()
        .or(assets::file(
            "/docs/init.js",
            ("docs", "init.js"),
            DOCS_INIT,
            js,
        ))
        .unify()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::TokenError;
    use crate::decode_pool::BudgetError;
    use crate::error::ApiError;
    use crate::inference::InferenceError;
    use crate::preprocess::ImageError;
    use crate::upload::UploadError;
    use crate::worker::WorkerError;

    /// The description of `status` under `method path`, if documented.
    fn response_description(
        doc: &serde_json::Value,
        method: &str,
        path: &str,
        status: u16,
    ) -> Option<String> {
        doc["paths"][path][method]["responses"][status.to_string()]["description"]
            .as_str()
            .map(str::to_string)
    }

    #[test]
    fn every_error_a_route_can_answer_is_documented_with_its_code() {
        let doc = serde_json::to_value(document()).unwrap();
        let image = |source| ApiError::Image {
            index: 0,
            name: None,
            source,
        };
        let predict = [
            TokenError::Missing.into(),
            TokenError::Invalid("x".into()).into(),
            TokenError::Expired.into(),
            TokenError::Revoked("x").into(),
            UploadError::NotMultipart("x".into()).into(),
            UploadError::BadMultipart("x".into()).into(),
            UploadError::NoFile.into(),
            UploadError::TooManyFiles(1).into(),
            UploadError::TooLarge(1).into(),
            UploadError::BadLength.into(),
            UploadError::Read("x".into()).into(),
            UploadError::Timeout(1).into(),
            UploadError::OverBudget.into(),
            ApiError::BadHeader("x".into()),
            ApiError::Overloaded,
            InferenceError::QueueFull.into(),
            WorkerError::Busy("decoder").into(),
            BudgetError::Busy(1).into(),
            image(ImageError::Empty),
            image(ImageError::UnsupportedFormat(String::new())),
            image(ImageError::Corrupt {
                format: "png".into(),
                detail: "x".into(),
            }),
            image(ImageError::ZeroSized),
            image(ImageError::TooLarge {
                width: 1,
                height: 1,
                max: 1,
            }),
            image(ImageError::TooMuchMemory(1)),
            image(ImageError::OverMemoryLimit {
                format: "png",
                width: 1,
                height: 1,
                color: image::ColorType::L8,
                need: 2,
                limit: 1,
            }),
            image(ImageError::Blank),
        ];
        let login = [
            ApiError::CredentialsRequired,
            ApiError::InvalidJson("x".into()),
            ApiError::BadCredentials,
            ApiError::TooManyAttempts { retry_after: 1 },
            UploadError::TooLarge(1).into(),
            UploadError::BadLength.into(),
            UploadError::Read("x".into()).into(),
            UploadError::Timeout(1).into(),
            UploadError::OverBudget.into(),
            WorkerError::Busy("password").into(),
        ];
        for (path, errors) in [("/predict", &predict[..]), ("/login", &login[..])] {
            for e in errors {
                let (status, code) = e.status_and_code();
                let text = response_description(&doc, "post", path, status.as_u16())
                    .unwrap_or_else(|| panic!("{path} does not document {status}"));
                assert!(
                    text.contains(&format!("`{code}`")),
                    "{path} {status}: `{code}` missing from {text:?}"
                );
            }
        }
    }

    #[test]
    fn operation_ids_are_unique() {
        let doc = serde_json::to_value(document()).unwrap();
        let mut ids: Vec<&str> = doc["paths"]
            .as_object()
            .unwrap()
            .values()
            .flat_map(|p| p.as_object().unwrap().values())
            .map(|op| op["operationId"].as_str().unwrap())
            .collect();
        let n = ids.len();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), n, "{ids:?}");
    }

    #[test]
    fn predict_documents_the_multipart_file_field_and_bearer_auth() {
        let doc = serde_json::to_value(document()).unwrap();
        let op = &doc["paths"]["/predict"]["post"];
        let form = &op["requestBody"]["content"]["multipart/form-data"]["schema"];
        assert!(!form.is_null(), "{op}");
        assert_eq!(op["security"][0]["bearer"], serde_json::json!([]));
        assert_eq!(
            doc["components"]["securitySchemes"]["bearer"]["scheme"],
            "bearer"
        );
    }
}
