//! The OpenAPI description of the inference protocol's routes (`routes/v2.rs`): the shapes
//! its clients send and read, for `/openapi.json` and the docs page.
#![allow(dead_code)] // The structs and functions here only describe; v2.rs does the work.

use std::collections::BTreeMap;

use serde_json::Value;
use utoipa::ToSchema;

use crate::error::V2ErrorBody;

/// Server metadata.
#[derive(ToSchema)]
pub(crate) struct ServerMetadata {
    #[schema(example = "mnist-api")]
    name: String,
    version: String,
    /// `binary_tensor_data` (Triton's binary extension) and `model_repository` (load).
    extensions: Vec<String>,
}

/// One tensor of the model's metadata; `-1` marks the batch dimension.
#[derive(ToSchema)]
pub(crate) struct TensorMetadata {
    name: String,
    datatype: String,
    shape: Vec<i64>,
}

/// Model metadata: the three input forms (send exactly one) and the two outputs.
#[derive(ToSchema)]
pub(crate) struct ModelMetadata {
    #[schema(example = "mnist")]
    name: String,
    /// Loaded versions, ascending.
    versions: Vec<String>,
    #[schema(example = "candle")]
    platform: String,
    inputs: Vec<TensorMetadata>,
    outputs: Vec<TensorMetadata>,
}

/// Liveness.
#[derive(ToSchema)]
pub(crate) struct Live {
    live: bool,
}

/// Readiness.
#[derive(ToSchema)]
pub(crate) struct Ready {
    ready: bool,
}

/// A model's readiness.
#[derive(ToSchema)]
pub(crate) struct ModelReady {
    name: String,
    ready: bool,
}

/// One input tensor: `input` (FP32 `[N,1,28,28]`, MNIST-normalised), `pixels` (UINT8
/// `[N,28,28]`, light digit on dark) or `image` (BYTES `[N]`, encoded image files). Data in
/// `data` (flat or nested, row-major), or in the binary section after the JSON with
/// `parameters.binary_data_size` (Triton's extension; then send the JSON's length in
/// `Inference-Header-Content-Length`).
#[derive(ToSchema)]
pub(crate) struct InferInput {
    #[schema(example = "pixels")]
    name: String,
    #[schema(example = json!([1, 28, 28]))]
    shape: Vec<i64>,
    #[schema(example = "UINT8")]
    datatype: String,
    parameters: Option<BTreeMap<String, Value>>,
    #[schema(value_type = Vec<Object>)]
    data: Option<Value>,
}

/// An output to return: `probabilities` or `prediction`; `parameters.binary_data: true` puts
/// it in the binary section.
#[derive(ToSchema)]
pub(crate) struct InferOutputRequest {
    #[schema(example = "prediction")]
    name: String,
    parameters: Option<BTreeMap<String, Value>>,
}

/// An inference request. Unknown parameters are ignored; `binary_data_output: true` asks for
/// every output in binary form.
#[derive(ToSchema)]
pub(crate) struct InferRequest {
    /// Echoed in the response.
    id: Option<String>,
    parameters: Option<BTreeMap<String, Value>>,
    /// Exactly one input.
    inputs: Vec<InferInput>,
    /// Default: both outputs.
    outputs: Option<Vec<InferOutputRequest>>,
}

/// One output tensor: `probabilities` (FP32 `[N,10]`) or `prediction` (INT64 `[N]`), with
/// `data`, or `parameters.binary_data_size` when it follows in binary.
#[derive(ToSchema)]
pub(crate) struct InferOutput {
    name: String,
    datatype: String,
    shape: Vec<i64>,
    parameters: Option<BTreeMap<String, Value>>,
    #[schema(value_type = Vec<Object>)]
    data: Option<Value>,
}

/// An inference response; `model_version` names the weights that answered.
#[derive(ToSchema)]
pub(crate) struct InferResponse {
    #[schema(example = "mnist")]
    model_name: String,
    #[schema(example = "1")]
    model_version: String,
    id: Option<String>,
    outputs: Vec<InferOutput>,
}

/// A loaded repository entry.
#[derive(ToSchema)]
pub(crate) struct IndexEntry {
    name: String,
    version: String,
    #[schema(example = "READY")]
    state: String,
}

/// What a load did.
#[derive(ToSchema)]
pub(crate) struct LoadAnswer {
    name: String,
    /// Whether new weights are now served.
    changed: bool,
    /// The version served by default.
    latest: String,
    loaded_versions: Vec<String>,
}

#[utoipa::path(get, path = "/v2", tag = "inference protocol", operation_id = "v2_server_metadata",
    responses((status = 200, description = "Server metadata", body = ServerMetadata)))]
fn server_metadata() {}

#[utoipa::path(get, path = "/v2/health/live", tag = "inference protocol", operation_id = "v2_live",
    responses((status = 200, description = "The process is up", body = Live)))]
fn live() {}

#[utoipa::path(get, path = "/v2/health/ready", tag = "inference protocol", operation_id = "v2_ready",
    responses((status = 200, description = "A model is loaded and served", body = Ready)))]
fn ready() {}

#[utoipa::path(get, path = "/v2/models/{model}", tag = "inference protocol", operation_id = "v2_model_metadata",
    params(("model" = String, Path, description = "`mnist`")),
    responses(
        (status = 200, description = "Model metadata", body = ModelMetadata),
        (status = 404, description = "`unknown_model`", body = V2ErrorBody)))]
fn model_metadata() {}

#[utoipa::path(get, path = "/v2/models/{model}/versions/{version}", tag = "inference protocol",
    operation_id = "v2_model_version_metadata",
    params(("model" = String, Path, description = "`mnist`"),
           ("version" = String, Path, description = "A loaded version, e.g. `1`")),
    responses(
        (status = 200, description = "Model metadata", body = ModelMetadata),
        (status = 404, description = "`unknown_model`, `unknown_version`", body = V2ErrorBody)))]
fn model_version_metadata() {}

#[utoipa::path(get, path = "/v2/models/{model}/ready", tag = "inference protocol", operation_id = "v2_model_ready",
    params(("model" = String, Path, description = "`mnist`")),
    responses(
        (status = 200, description = "Ready", body = ModelReady),
        (status = 404, description = "`unknown_model`", body = V2ErrorBody)))]
fn model_ready() {}

#[utoipa::path(get, path = "/v2/models/{model}/versions/{version}/ready", tag = "inference protocol",
    operation_id = "v2_model_version_ready",
    params(("model" = String, Path, description = "`mnist`"),
           ("version" = String, Path, description = "A loaded version, e.g. `1`")),
    responses(
        (status = 200, description = "Ready", body = ModelReady),
        (status = 404, description = "`unknown_model`, `unknown_version`", body = V2ErrorBody)))]
fn model_version_ready() {}

#[utoipa::path(post, path = "/v2/models/{model}/infer", tag = "inference protocol", operation_id = "v2_infer",
    params(("model" = String, Path, description = "`mnist`")),
    request_body = InferRequest,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Predictions of the newest version (`application/octet-stream` with `Inference-Header-Content-Length` when outputs are binary)", body = InferResponse),
        (status = 400, description = "`invalid_request`, `invalid_tensor`, `unknown_tensor`, `bad_header`, `bad_body`", body = V2ErrorBody),
        (status = 401, description = "`missing_token`, `invalid_token`, `token_expired`, `token_revoked`", body = V2ErrorBody),
        (status = 404, description = "`unknown_model`", body = V2ErrorBody),
        (status = 408, description = "`body_timeout`", body = V2ErrorBody),
        (status = 413, description = "`body_too_large`, `too_many_images`, `image_too_large`", body = V2ErrorBody),
        (status = 415, description = "`unsupported_format`: a BYTES element is not an image format we decode", body = V2ErrorBody),
        (status = 422, description = "`empty_file`, `invalid_image`, `zero_sized_image`, `blank_image`", body = V2ErrorBody),
        (status = 503, description = "`overloaded`: retry after the `Retry-After` seconds", body = V2ErrorBody)))]
fn infer() {}

#[utoipa::path(post, path = "/v2/models/{model}/versions/{version}/infer", tag = "inference protocol",
    operation_id = "v2_infer_version",
    params(("model" = String, Path, description = "`mnist`"),
           ("version" = String, Path, description = "A loaded version, e.g. `1`")),
    request_body = InferRequest,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Predictions of that version", body = InferResponse),
        (status = 400, description = "`invalid_request`, `invalid_tensor`, `unknown_tensor`, `bad_header`, `bad_body`", body = V2ErrorBody),
        (status = 401, description = "`missing_token`, `invalid_token`, `token_expired`, `token_revoked`", body = V2ErrorBody),
        (status = 404, description = "`unknown_model`, `unknown_version`", body = V2ErrorBody),
        (status = 408, description = "`body_timeout`", body = V2ErrorBody),
        (status = 413, description = "`body_too_large`, `too_many_images`, `image_too_large`", body = V2ErrorBody),
        (status = 415, description = "`unsupported_format`", body = V2ErrorBody),
        (status = 422, description = "`empty_file`, `invalid_image`, `zero_sized_image`, `blank_image`", body = V2ErrorBody),
        (status = 503, description = "`overloaded`", body = V2ErrorBody)))]
fn infer_version() {}

#[utoipa::path(post, path = "/v2/repository/index", tag = "inference protocol", operation_id = "v2_repository_index",
    responses((status = 200, description = "The loaded versions", body = Vec<IndexEntry>)))]
fn repository_index() {}

#[utoipa::path(post, path = "/v2/repository/models/{model}/load", tag = "inference protocol",
    operation_id = "v2_repository_load",
    params(("model" = String, Path, description = "`mnist`")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The repository was read again; new weights are served if it changed", body = LoadAnswer),
        (status = 400, description = "`load_failed`: the newest version's file is unusable; the model served before still is", body = V2ErrorBody),
        (status = 401, description = "`missing_token`, `invalid_token`, `token_expired`, `token_revoked`", body = V2ErrorBody),
        (status = 403, description = "`forbidden`: the user is not an admin", body = V2ErrorBody),
        (status = 404, description = "`unknown_model`", body = V2ErrorBody),
        (status = 408, description = "`body_timeout`", body = V2ErrorBody),
        (status = 413, description = "`body_too_large`", body = V2ErrorBody),
        (status = 503, description = "`overloaded`", body = V2ErrorBody)))]
fn repository_load() {}

/// The operations above, for the document.
#[derive(utoipa::OpenApi)]
#[openapi(paths(
    server_metadata,
    live,
    ready,
    model_metadata,
    model_version_metadata,
    model_ready,
    model_version_ready,
    infer,
    infer_version,
    repository_index,
    repository_load
))]
pub(crate) struct V2Doc;
