//! The server's endpoints as the client calls them, each call inside a client span (HTTP
//! semantic conventions) whose context travels in the W3C `traceparent` header.

use std::time::Duration;

use bytes::Bytes;
use opentelemetry::propagation::Injector;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use reqwest::multipart::{Form, Part};
use reqwest::{Method, StatusCode, Url};
use serde::Deserialize;
use tracing::field::Empty;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use super::ClientError;

/// A running server's API.
pub struct Api {
    http: reqwest::Client,
    /// Ends in `/`, so endpoint paths join below it (a server behind a path prefix works).
    base: Url,
}

/// What `GET /model` says one `/predict` request may carry.
#[derive(Debug, Clone, Copy, Deserialize)]
pub struct Limits {
    /// Most images in one request.
    pub max_files: usize,
    /// Largest request body, bytes.
    pub max_body_bytes: u64,
}

/// One image's answer.
#[derive(Debug, Clone, Deserialize)]
pub struct Answer {
    /// The most probable digit.
    pub prediction: u8,
    /// Its probability.
    pub probability: f32,
    /// Probabilities of the digits 0–9.
    pub probabilities: Vec<f32>,
}

/// The server's error answer, `{"msg" (or "error"), "code"}`.
#[derive(Debug, Clone)]
pub struct Refusal {
    /// HTTP status.
    pub status: u16,
    /// The server's error code (`unknown` if the body had none).
    pub code: String,
    /// The server's sentence.
    pub msg: String,
}

impl Api {
    /// The API at `base` (plain http), each request limited to `timeout`.
    pub fn new(base: &Url, timeout: Duration) -> Result<Self, ClientError> {
        if base.scheme() != "http" {
            return Err(ClientError::Scheme(base.to_string()));
        }
        let mut base = base.clone();
        if !base.path().ends_with('/') {
            base.set_path(&format!("{}/", base.path()));
        }
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .user_agent(concat!("mnist-api-client/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ClientError::Unreachable {
                url: base.to_string(),
                cause: e.to_string(),
            })?;
        Ok(Self { http, base })
    }

    fn url(&self, path: &str) -> Url {
        self.base.join(path).expect("a relative path joins")
    }

    /// `GET /model`'s request limits; `None` from a server that does not publish them.
    pub async fn limits(&self) -> Result<Option<Limits>, ClientError> {
        #[derive(Deserialize)]
        struct Model {
            limits: Option<Limits>,
        }
        let req = self.http.get(self.url("model"));
        let (status, body) = self.call(req, "/model").await?;
        if status != StatusCode::OK {
            return Ok(None);
        }
        Ok(serde_json::from_slice::<Model>(&body)
            .ok()
            .and_then(|m| m.limits))
    }

    /// `POST /login`: a bearer token for `user`.
    pub async fn login(&self, user: &str, password: &str) -> Result<String, ClientError> {
        #[derive(Deserialize)]
        struct Token {
            access_token: String,
        }
        let url = self.url("login");
        let req = self.http.post(url.clone()).json(&serde_json::json!({
            "username": user,
            "password": password,
        }));
        let (status, body) = self.call(req, "/login").await?;
        if status == StatusCode::OK {
            return serde_json::from_slice::<Token>(&body)
                .map(|t| t.access_token)
                .map_err(|e| ClientError::Unexpected {
                    url: url.to_string(),
                    status: status.as_u16(),
                    msg: format!("no token in the answer ({e})"),
                });
        }
        let refusal = Refusal::of(status, &body);
        Err(match status {
            StatusCode::UNAUTHORIZED | StatusCode::BAD_REQUEST => ClientError::LoginRefused {
                user: user.to_string(),
                msg: refusal.msg,
            },
            _ => ClientError::Unexpected {
                url: url.to_string(),
                status: refusal.status,
                msg: refusal.msg,
            },
        })
    }

    /// `POST /predict` with `files` (name, bytes) as `file` parts: one answer per file, in
    /// order, or the server's refusal of the request.
    pub async fn predict(
        &self,
        token: Option<&str>,
        files: Vec<(String, Bytes)>,
    ) -> Result<Result<Vec<Answer>, Refusal>, ClientError> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Answers {
            Many { predictions: Vec<Answer> },
            One(Answer),
        }
        let expected = files.len();
        let mut form = Form::new();
        for (name, bytes) in files {
            let len = bytes.len() as u64;
            form = form.part("file", Part::stream_with_length(bytes, len).file_name(name));
        }
        let url = self.url("predict");
        let mut req = self.http.post(url.clone()).multipart(form);
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        let (status, body) = self.call(req, "/predict").await?;
        if status != StatusCode::OK {
            return Ok(Err(Refusal::of(status, &body)));
        }
        let answers = match serde_json::from_slice::<Answers>(&body) {
            Ok(Answers::Many { predictions }) => predictions,
            Ok(Answers::One(one)) => vec![one],
            Err(e) => {
                return Err(ClientError::Unexpected {
                    url: url.to_string(),
                    status: status.as_u16(),
                    msg: format!("an answer that is not predictions ({e})"),
                })
            }
        };
        if answers.len() != expected {
            return Err(ClientError::Unexpected {
                url: url.to_string(),
                status: status.as_u16(),
                msg: format!("{} answers for {expected} images", answers.len()),
            });
        }
        Ok(Ok(answers))
    }

    /// Sends `req` inside a client span named for `route` and reads the whole answer.
    async fn call(
        &self,
        req: reqwest::RequestBuilder,
        route: &'static str,
    ) -> Result<(StatusCode, Bytes), ClientError> {
        let mut req = req.build().map_err(|e| ClientError::Unreachable {
            url: self.base.to_string(),
            cause: e.to_string(),
        })?;
        let span = client_span(req.method(), req.url(), route);
        let cx = span.context();
        opentelemetry::global::get_text_map_propagator(|p| {
            p.inject_context(&cx, &mut Headers(req.headers_mut()))
        });
        let url = req.url().to_string();
        let result = async {
            let res = self.http.execute(req).await?;
            let status = res.status();
            Ok::<_, reqwest::Error>((status, res.bytes().await?))
        }
        .instrument(span.clone())
        .await;
        match result {
            Ok((status, body)) => {
                span.record("http.response.status_code", status.as_u16() as i64);
                if status.is_client_error() || status.is_server_error() {
                    span.record("error.type", status.as_str());
                    span.record("otel.status_code", "ERROR");
                }
                Ok((status, body))
            }
            Err(e) => {
                span.record("error.type", transport_error_type(&e));
                span.record("otel.status_code", "ERROR");
                Err(ClientError::Unreachable {
                    url,
                    cause: root_cause(&e),
                })
            }
        }
    }
}

/// A client span per the HTTP semantic conventions, named `{method} {route}`; the route is
/// the endpoint's fixed path, never a path built from data.
fn client_span(method: &Method, url: &Url, route: &'static str) -> tracing::Span {
    let mut shown = url.clone();
    // Credentials in the URL never reach a span (semconv: redact them).
    if !shown.username().is_empty() || shown.password().is_some() {
        let _ = shown.set_username("REDACTED");
        let _ = shown.set_password(Some("REDACTED"));
    }
    tracing::info_span!(
        "HTTP client request",
        otel.name = format!("{method} {route}"),
        otel.kind = "client",
        otel.status_code = Empty,
        http.request.method = method.as_str(),
        url.full = shown.as_str(),
        url.template = route,
        server.address = url.host_str().unwrap_or_default(),
        // i64 because tracing-opentelemetry turns unsigned fields into strings.
        server.port = url.port_or_known_default().map(i64::from),
        http.response.status_code = Empty,
        error.type = Empty,
    )
}

/// `error.type` for a request that got no answer: low-cardinality, per the conventions.
fn transport_error_type(e: &reqwest::Error) -> &'static str {
    if e.is_timeout() {
        "timeout"
    } else if e.is_connect() {
        "connect"
    } else if e.is_body() || e.is_decode() {
        "body"
    } else {
        "request"
    }
}

/// The innermost reason (connection refused, timed out, …): reqwest's own message only says
/// it could not send the request.
fn root_cause(e: &reqwest::Error) -> String {
    let mut cause: &dyn std::error::Error = e;
    while let Some(inner) = cause.source() {
        cause = inner;
    }
    cause.to_string()
}

impl Refusal {
    /// The error answer in `body`, whatever shape it has.
    fn of(status: StatusCode, body: &[u8]) -> Self {
        let json: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
        let text = |key: &str| json.get(key).and_then(|v| v.as_str()).map(str::to_string);
        Refusal {
            status: status.as_u16(),
            code: text("code").unwrap_or_else(|| "unknown".to_string()),
            msg: text("msg").or_else(|| text("error")).unwrap_or_else(|| {
                status
                    .canonical_reason()
                    .unwrap_or("no reason given")
                    .to_string()
            }),
        }
    }
}

/// Writes propagation headers into a request.
struct Headers<'a>(&'a mut HeaderMap);

impl Injector for Headers<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(key.as_bytes()),
            HeaderValue::from_str(&value),
        ) {
            self.0.insert(name, value);
        }
    }
}
