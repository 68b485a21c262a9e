//! The Open Inference Protocol's REST routes (`/v2/...`), beside the API's own: health,
//! metadata, inference and model control for the one model, `mnist`. Errors answer
//! `{"error", "code"}` as the protocol's clients expect.

use std::sync::Arc;

use bytes::Bytes;
use serde::Serialize;
use tracing::Span;
use warp::http::header::{HeaderValue, CONTENT_TYPE};
use warp::path::FullPath;
use warp::reply::Response;
use warp::{Filter, Rejection, Reply};

use super::bearer::{with_admin, with_bearer};
use super::predict::{classify, decode, Predictor};
use crate::auth::Auth;
use crate::data::IMAGE_PIXELS;
use crate::error::{ApiError, ErrorShape};
use crate::oip::{self, Input, TensorMetadata};
use crate::preprocess::{self, Prepared};
use crate::repository::{ModelVersion, Reloaded, Repository, MODEL_NAME};
use crate::upload::read_limited;

/// The header carrying the JSON part's length when binary tensors follow it.
const HEADER_LENGTH: &str = "inference-header-content-length";

/// Every `/v2` route.
pub fn routes(
    predictor: Arc<Predictor>,
    repository: Arc<Repository>,
    auth: Arc<Auth>,
) -> impl Filter<Extract = (Response,), Error = Rejection> + Clone + Send + Sync + 'static {
    let repo = Arc::clone(&repository);
    let metadata = {
        let repo = Arc::clone(&repository);
        warp::get()
            .and(warp::path::full())
            .and_then(move |path: FullPath| {
                let repo = Arc::clone(&repo);
                async move { model_metadata(&path, &repo).map_err(Rejection::from) }
            })
    };
    let ready = {
        let repo = Arc::clone(&repository);
        warp::get()
            .and(warp::path::full())
            .and_then(move |path: FullPath| {
                let repo = Arc::clone(&repo);
                async move { model_ready(&path, &repo).map_err(Rejection::from) }
            })
    };
    let infer = {
        let predictor = Arc::clone(&predictor);
        warp::post()
            .and(with_bearer(Arc::clone(&auth)))
            .and(warp::path::full())
            .and(warp::header::optional::<String>(HEADER_LENGTH))
            .and(warp::header::optional::<String>("content-length"))
            .and(warp::body::stream())
            .and_then(
                move |path: FullPath,
                      header_length: Option<String>,
                      content_length: Option<String>,
                      body| {
                    let predictor = Arc::clone(&predictor);
                    async move {
                        let request = InferHttp {
                            path,
                            header_length,
                            content_length,
                        };
                        infer(request, body, &predictor)
                            .await
                            .map_err(Rejection::from)
                    }
                },
            )
    };
    let load = {
        let (repo, limits) = (Arc::clone(&repository), predictor.body.small_json());
        warp::post()
            .and(with_admin(Arc::clone(&auth)))
            .and(warp::path::full())
            .and(warp::header::optional::<String>("content-length"))
            .and(warp::body::stream())
            .and_then(
                move |path: FullPath, content_length: Option<String>, body| {
                    let (repo, limits) = (Arc::clone(&repo), limits.clone());
                    async move {
                        let result = async {
                            // Triton's load takes optional parameters; none apply here, but
                            // the body is read (bounded) so the connection stays usable.
                            read_limited(content_length.as_deref(), body, &limits).await?;
                            load(&path, &repo).await
                        };
                        result.await.map_err(Rejection::from)
                    }
                },
            )
    };
    let index = warp::post().map(move || json(&index(&repo)));

    v2_route(
        "/v2",
        "GET",
        warp::path!("v2"),
        warp::get().map(|| json(&server_metadata())),
    )
    .or(v2_route(
        "/v2/health/live",
        "GET",
        warp::path!("v2" / "health" / "live"),
        warp::get().map(|| json(&Live { live: true })),
    ))
    .unify()
    .or(v2_route(
        "/v2/health/ready",
        "GET",
        warp::path!("v2" / "health" / "ready"),
        warp::get().map(|| json(&Ready { ready: true })),
    ))
    .unify()
    .or(v2_route(
        "/v2/models/{model}",
        "GET",
        models().and(warp::path::end()),
        metadata.clone(),
    ))
    .unify()
    .or(v2_route(
        "/v2/models/{model}/versions/{version}",
        "GET",
        versions().and(warp::path::end()),
        metadata,
    ))
    .unify()
    .or(v2_route(
        "/v2/models/{model}/ready",
        "GET",
        models().and(warp::path!("ready")),
        ready.clone(),
    ))
    .unify()
    .or(v2_route(
        "/v2/models/{model}/versions/{version}/ready",
        "GET",
        versions().and(warp::path!("ready")),
        ready,
    ))
    .unify()
    .or(v2_route(
        "/v2/models/{model}/infer",
        "POST",
        models().and(warp::path!("infer")),
        infer.clone(),
    ))
    .unify()
    .or(v2_route(
        "/v2/models/{model}/versions/{version}/infer",
        "POST",
        versions().and(warp::path!("infer")),
        infer,
    ))
    .unify()
    .or(v2_route(
        "/v2/repository/index",
        "POST",
        warp::path!("v2" / "repository" / "index"),
        index,
    ))
    .unify()
    .or(v2_route(
        "/v2/repository/models/{model}/load",
        "POST",
        warp::path!("v2" / "repository" / "models" / String / "load")
            .map(|_: String| ())
            .untuple_one(),
        load,
    ))
    .unify()
}

/// A `/v2` route: as [`super::route`], errors in the protocol's shape.
fn v2_route<P, R>(
    template: &'static str,
    allow: &'static str,
    path: P,
    rest: R,
) -> impl Filter<Extract = (Response,), Error = Rejection> + Clone + Send + Sync + 'static
where
    P: Filter<Extract = (), Error = Rejection> + Clone + Send + Sync + 'static,
    R: Filter<Extract = (Response,), Error = Rejection> + Clone + Send + Sync + 'static,
{
    super::route_as(ErrorShape::V2, template, allow, path, rest)
}

/// `/v2/models/{model}`; the name is read again from the full path by the handler, which
/// answers an unknown one with the protocol's 404.
fn models() -> impl Filter<Extract = (), Error = Rejection> + Clone {
    warp::path("v2")
        .and(warp::path("models"))
        .and(warp::path::param::<String>())
        .map(|_: String| ())
        .untuple_one()
}

/// `/v2/models/{model}/versions/{version}`.
fn versions() -> impl Filter<Extract = (), Error = Rejection> + Clone {
    models()
        .and(warp::path("versions"))
        .and(warp::path::param::<String>())
        .map(|_: String| ())
        .untuple_one()
}

/// The model and version a `/v2/models/...` path names, checked against what is loaded.
fn resolve(path: &FullPath, repository: &Repository) -> Result<Arc<ModelVersion>, ApiError> {
    let mut segments = path.as_str().split('/').skip(3);
    let model = segments.next().unwrap_or_default();
    if model != MODEL_NAME {
        return Err(ApiError::UnknownModel(crate::clip::clip(model).to_string()));
    }
    match (segments.next(), segments.next()) {
        (Some("versions"), Some(version)) => Ok(repository.version(version)?),
        _ => Ok(repository.latest()),
    }
}

fn json(value: &impl Serialize) -> Response {
    warp::reply::json(value).into_response()
}

#[derive(Serialize)]
struct Live {
    live: bool,
}

#[derive(Serialize)]
struct Ready {
    ready: bool,
}

#[derive(Serialize)]
struct ServerMetadata {
    name: &'static str,
    version: &'static str,
    extensions: [&'static str; 2],
}

fn server_metadata() -> ServerMetadata {
    ServerMetadata {
        name: "mnist-api",
        version: env!("CARGO_PKG_VERSION"),
        extensions: ["binary_tensor_data", "model_repository"],
    }
}

#[derive(Serialize)]
struct ModelMetadata {
    name: &'static str,
    versions: Vec<String>,
    platform: &'static str,
    inputs: Vec<TensorMetadata>,
    outputs: Vec<TensorMetadata>,
}

fn model_metadata(path: &FullPath, repository: &Repository) -> Result<Response, ApiError> {
    resolve(path, repository)?;
    Ok(json(&ModelMetadata {
        name: MODEL_NAME,
        versions: repository
            .loaded_versions()
            .iter()
            .map(u64::to_string)
            .collect(),
        platform: "candle",
        inputs: oip::inputs(),
        outputs: oip::outputs(),
    }))
}

#[derive(Serialize)]
struct ModelReady {
    name: &'static str,
    ready: bool,
}

fn model_ready(path: &FullPath, repository: &Repository) -> Result<Response, ApiError> {
    // Loaded means ready: a version is only ever loaded whole, before it is served.
    resolve(path, repository)?;
    Ok(json(&ModelReady {
        name: MODEL_NAME,
        ready: true,
    }))
}

#[derive(Serialize)]
struct IndexEntry {
    name: &'static str,
    version: String,
    state: &'static str,
}

fn index(repository: &Repository) -> Vec<IndexEntry> {
    repository
        .loaded_versions()
        .into_iter()
        .map(|v| IndexEntry {
            name: MODEL_NAME,
            version: v.to_string(),
            state: "READY",
        })
        .collect()
}

#[derive(Serialize)]
struct LoadAnswer {
    name: &'static str,
    /// Whether new weights are now served.
    changed: bool,
    /// The version served by default.
    latest: String,
    /// Every loaded version, ascending.
    loaded_versions: Vec<String>,
}

async fn load(path: &FullPath, repository: &Arc<Repository>) -> Result<Response, ApiError> {
    let model = path.as_str().split('/').nth(4).unwrap_or_default();
    if model != MODEL_NAME {
        return Err(ApiError::UnknownModel(crate::clip::clip(model).to_string()));
    }
    let outcome = crate::reload::reload(repository, "request").await?;
    Ok(json(&LoadAnswer {
        name: MODEL_NAME,
        changed: matches!(outcome, Reloaded::Swapped { .. }),
        latest: repository.latest().version.to_string(),
        loaded_versions: repository
            .loaded_versions()
            .iter()
            .map(u64::to_string)
            .collect(),
    }))
}

struct InferHttp {
    path: FullPath,
    header_length: Option<String>,
    content_length: Option<String>,
}

async fn infer(
    request: InferHttp,
    body: impl futures_util::Stream<Item = Result<impl bytes::Buf, warp::Error>> + Send + 'static,
    predictor: &Predictor,
) -> Result<Response, ApiError> {
    // Pinned before the body is read, as /predict does: a reload meanwhile does not change
    // the weights that answer.
    let version = resolve(&request.path, &predictor.repository)?;
    let (body, _charge) =
        read_limited(request.content_length.as_deref(), body, &predictor.body).await?;
    let parsed = oip::parse(
        Bytes::from(body),
        request.header_length.as_deref(),
        predictor.max_files,
    )?;
    let _permit = Arc::clone(&predictor.in_flight)
        .try_acquire_owned()
        .map_err(|_| ApiError::Overloaded)?;
    let inputs = to_network_inputs(parsed.input, predictor).await?;
    let predictions = futures_util::future::try_join_all(
        inputs
            .into_iter()
            .enumerate()
            .map(|(index, input)| classify(&predictor.engine, &version, index, input, false)),
    )
    .await?;
    let encoded = oip::encode(
        MODEL_NAME,
        &version.model_ref().version,
        parsed.id.as_deref(),
        &parsed.outputs,
        &predictions,
    );
    let mut res = Response::new(encoded.body.into());
    let headers = res.headers_mut();
    match encoded.header_length {
        Some(n) => {
            headers.insert(
                CONTENT_TYPE,
                HeaderValue::from_static("application/octet-stream"),
            );
            headers.insert(HEADER_LENGTH, HeaderValue::from(n));
        }
        None => {
            headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        }
    }
    Ok(res)
}

/// Each image as the network takes it: normalised values pass through, raw pixels are
/// scaled as in training, and image files go through `/predict`'s decoding (its `decode`
/// spans, threads and memory budget), one at a time as there.
async fn to_network_inputs(input: Input, predictor: &Predictor) -> Result<Vec<Vec<f32>>, ApiError> {
    Ok(match input {
        Input::Normalized(values) => values
            .chunks_exact(IMAGE_PIXELS)
            .map(<[f32]>::to_vec)
            .collect(),
        Input::Pixels(pixels) => pixels
            .chunks_exact(IMAGE_PIXELS)
            .map(|image| {
                let mut out = vec![0.0; IMAGE_PIXELS];
                preprocess::normalize_into(image, &mut out);
                out
            })
            .collect(),
        Input::Images(files) => {
            let span = Span::current();
            let mut out = Vec::with_capacity(files.len());
            for (index, bytes) in files.into_iter().enumerate() {
                let prepared: Prepared = decode(
                    predictor,
                    &span,
                    index,
                    None,
                    bytes,
                    predictor.images,
                    false,
                )
                .await?;
                out.push(prepared.input);
            }
            out
        }
    })
}
