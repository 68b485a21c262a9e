//! `POST /predict`: multipart images in field `file` → digit and probabilities.
//!
//! One `file` part answers `{"prediction", "probability", "probabilities", "model"}` (the
//! original app's fields plus more); several answer `{"predictions": [...], "model"}` in the
//! order the parts were sent.

use std::sync::Arc;

use bytes::{Buf, Bytes};
use futures_util::Stream;
use serde::Serialize;
use tracing::field::Empty;
use tracing::Span;
use warp::{Filter, Rejection, Reply};

use tokio::sync::Semaphore;
use warp::reply::Response;

use crate::awake::Awake;
use crate::decode_pool::{DecodePool, MemoryBudget, MemoryShare};
use crate::error::{ApiError, ErrorBody};
use crate::inference::{Engine, Prediction};
use crate::preprocess::{self, ImageLimits, Prepared};
use crate::repository::{ModelVersion, Repository};
use crate::served::ModelRef;
use crate::upload::{self, BodyLimits};
use crate::worker::WorkerError;

/// Everything `/predict` uses: the model, the limits on what a request may send, and the
/// pools that share the machine between requests.
pub struct Predictor {
    /// The model workers.
    pub engine: Engine,
    /// The loaded versions; a request is answered by the newest when it started.
    pub repository: Arc<Repository>,
    /// Bounds on each request body.
    pub body: BodyLimits,
    /// Most `file` parts per request.
    pub max_files: usize,
    /// Bounds on each image.
    pub images: ImageLimits,
    /// Permits for requests past their body; none free means 503.
    pub in_flight: Arc<Semaphore>,
    /// How many permits `in_flight` started with.
    pub max_in_flight: usize,
    /// Whether a lone request may decode and run its image on its own thread.
    pub inline: bool,
    /// The image decoding threads.
    pub decoders: DecodePool,
    /// Memory shared by the images being decoded.
    pub decode_memory: Arc<MemoryBudget>,
    /// Keeps an executor thread polling after a lone request.
    pub awake: Arc<Awake>,
}

impl Predictor {
    /// Whether the request holding one `in_flight` permit is the only one past its body (and
    /// `--no-inline` is off). Such a request decodes and runs its image on its own thread:
    /// thread switches are most of its latency then. Under load the pools do the work, since executor threads busy
    /// with images read fewer requests and the model batches less (BENCHMARKS.md: inlining
    /// whenever possible lost a third of req/s at 64 connections).
    pub fn may_inline(&self) -> bool {
        self.inline && requests_in_flight(&self.in_flight, self.max_in_flight) <= 1
    }

    /// Whether two requests or more are past their body: the server is busy, and a thread
    /// staying awake for the next lone request ([`Awake`]) would only take time from them.
    pub fn busy(
        in_flight: Arc<Semaphore>,
        max_in_flight: usize,
    ) -> impl Fn() -> bool + Send + Sync {
        move || requests_in_flight(&in_flight, max_in_flight) >= 2
    }
}

/// Requests holding one of the `max` permits of `in_flight` right now.
fn requests_in_flight(in_flight: &Semaphore, max: usize) -> usize {
    max.saturating_sub(in_flight.available_permits())
}

/// `POST /predict`, `multipart/form-data`, image(s) in field `file`, bearer token required
/// unless the server runs with `--no-auth`.
#[utoipa::path(
    post,
    path = "/predict",
    operation_id = "predict",
    tag = "model",
    request_body(content = PredictForm, content_type = "multipart/form-data"),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "One image: `Single`; several `file` parts: `Many`", body = Single,
            headers(("x-trace-id" = String, description = "Trace id to search in Jaeger"))),
        (status = 400, description = "`missing_file`, `bad_multipart`, `bad_header`, `bad_body` (the connection failed mid-body)", body = ErrorBody),
        (status = 401, description = "`missing_token`, `invalid_token`, `token_expired`, `token_revoked` (its user was removed or changed password)", body = ErrorBody),
        (status = 408, description = "`body_timeout`: the body did not arrive in time; the connection is closed", body = ErrorBody),
        (status = 413, description = "`body_too_large`, `too_many_files`, `image_too_large`", body = ErrorBody),
        (status = 415, description = "`not_multipart`, `unsupported_format`", body = ErrorBody),
        (status = 422, description = "`empty_file`, `invalid_image`, `zero_sized_image`, `blank_image`", body = ErrorBody),
        (status = 503, description = "`overloaded`: retry after the `Retry-After` seconds", body = ErrorBody),
    )
)]
pub fn route(
    predictor: Arc<Predictor>,
    bearer: impl Filter<Extract = (), Error = Rejection> + Clone + Send + Sync + 'static,
) -> impl Filter<Extract = (Response,), Error = Rejection> + Clone + Send + Sync + 'static {
    let handler = warp::post()
        .and(bearer)
        .and(warp::header::optional::<String>("content-type"))
        .and(warp::header::optional::<String>("content-length"))
        .and(warp::body::stream())
        .and_then(
            move |content_type: Option<String>, content_length: Option<String>, body| {
                let predictor = Arc::clone(&predictor);
                async move {
                    let request = Request {
                        content_type,
                        content_length,
                    };
                    predict(request, body, &predictor)
                        .await
                        .map_err(Rejection::from)
                }
            },
        );
    super::route("/predict", "POST", warp::path!("predict"), handler)
}

struct Request {
    content_type: Option<String>,
    content_length: Option<String>,
}

/// One image's classification.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct Answer {
    /// The most probable digit.
    #[schema(minimum = 0, maximum = 9, example = 7)]
    prediction: u8,
    /// Its probability.
    #[schema(example = 0.998)]
    probability: f32,
    /// Probabilities of the digits 0–9, summing to 1.
    #[schema(value_type = Vec<f32>, min_items = 10, max_items = 10)]
    probabilities: [f32; 10],
}

impl From<&Prediction> for Answer {
    fn from(p: &Prediction) -> Self {
        Answer {
            prediction: p.digit,
            probability: p.probability,
            probabilities: p.probabilities,
        }
    }
}

/// The answer to a request with one image.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct Single<'a> {
    #[serde(flatten)]
    answer: Answer,
    /// The model that answered.
    #[schema(value_type = ModelRef)]
    model: &'a ModelRef,
}

/// The answer to a request with several images, in the order of the parts.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct Many<'a> {
    predictions: Vec<Answer>,
    /// The model that answered.
    #[schema(value_type = ModelRef)]
    model: &'a ModelRef,
}

/// The multipart form `/predict` reads. Other parts are skipped, but the document promises
/// none: a part whose headers multer cannot read is a 400, not an ignored extra.
#[derive(utoipa::ToSchema, serde::Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)] // Only describes the form for the API docs.
pub(crate) struct PredictForm {
    /// An image (PNG, JPEG, BMP, GIF, WebP, PNM); repeat the part for several images.
    #[schema(value_type = String, format = Binary)]
    file: Vec<u8>,
}

async fn predict(
    req: Request,
    body: impl Stream<Item = Result<impl Buf, warp::Error>> + Send + 'static,
    predictor: &Predictor,
) -> Result<Response, ApiError> {
    // Pinned before the body is read: a reload while the request is in flight does not change
    // the weights it is answered with.
    let version = predictor.repository.latest();
    // The body is read before an in-flight permit is taken: a client that stalls its upload
    // holds a connection and at most its own bytes of the body budget, never a permit that
    // others need.
    let (files, _charge) = upload::read_files(
        req.content_type.as_deref(),
        req.content_length.as_deref(),
        body,
        &predictor.body,
        predictor.max_files,
    )
    .await?;
    let _permit = Arc::clone(&predictor.in_flight)
        .try_acquire_owned()
        .map_err(|_| ApiError::Overloaded)?;

    let limits = predictor.images;
    let inline = files.len() == 1 && predictor.may_inline();
    let request_span = Span::current();
    // One image at a time, so a request holds at most one share of the decode memory budget
    // and never waits for a second while holding the first.
    let mut prepared: Vec<Prepared> = Vec::with_capacity(files.len());
    for (index, (name, bytes)) in files.into_iter().enumerate() {
        prepared.push(decode(predictor, &request_span, index, name, bytes, limits, inline).await?);
    }

    let predictions = futures_util::future::try_join_all(
        prepared
            .into_iter()
            .enumerate()
            .map(|(index, p)| classify(&predictor.engine, &version, index, p.input, inline)),
    )
    .await?;
    let model = version.model_ref();
    if inline {
        predictor.awake.after_lone_request();
    }

    let reply = if let [only] = predictions.as_slice() {
        warp::reply::json(&Single {
            answer: only.into(),
            model,
        })
    } else {
        warp::reply::json(&Many {
            predictions: predictions.iter().map(Answer::from).collect(),
            model,
        })
    };
    Ok(reply.into_response())
}

/// Decodes and normalises one image inside its own `decode` span, once its estimated cost
/// (from the header) is taken from the server's decode memory budget.
pub(super) async fn decode(
    predictor: &Predictor,
    parent: &Span,
    index: usize,
    name: Option<String>,
    bytes: Bytes,
    limits: ImageLimits,
    inline: bool,
) -> Result<Prepared, ApiError> {
    let span = tracing::info_span!(
        parent: parent,
        "decode",
        image.index = index as i64,
        image.bytes = bytes.len() as i64,
        image.format = Empty,
        image.width = Empty,
        image.height = Empty,
        image.inverted = Empty,
        image.decode_memory = Empty,
    );
    // Not entered: nothing inside logs except the error event, which names its parent, and
    // every enter and exit is a trip through the subscriber.
    let budget = Arc::clone(&predictor.decode_memory);
    // The common case takes one trip to the decoder threads: read the header, take the share
    // if it is free, decode. Only when the budget is short does the image wait, off the
    // decoder threads, and come back.
    let here = if inline {
        decode_here(&bytes, &budget, limits)
    } else {
        None
    };
    let first = match here {
        Some(outcome) => outcome?,
        None => {
            let (bytes, budget) = (bytes.clone(), Arc::clone(&budget));
            predictor
                .decoders
                .run(move || {
                    let header = preprocess::inspect(&bytes, limits)?;
                    Ok(match budget.try_take(header.need) {
                        Some(share) => {
                            Decoded::Done(header, decode_within(&bytes, &header, limits, share))
                        }
                        None => Decoded::Waiting(header),
                    })
                })
                .await?
        }
    };
    let outcome = match first {
        Ok(Decoded::Done(header, result)) => result.map(|p| (header, p)),
        Ok(Decoded::Waiting(header)) => {
            let share = budget.take(header.need).await?;
            predictor
                .decoders
                .run(move || decode_within(&bytes, &header, limits, share))
                .await?
                .map(|p| (header, p))
        }
        Err(e) => Err(e),
    };
    match outcome {
        Ok((header, p)) => {
            span.record("image.format", p.format);
            span.record("image.width", p.width as i64);
            span.record("image.height", p.height as i64);
            span.record("image.inverted", p.inverted);
            span.record("image.decode_memory", header.need as i64);
            Ok(p)
        }
        Err(source) => {
            tracing::info!(parent: &span, error = %source);
            Err(ApiError::Image {
                index,
                name,
                source,
            })
        }
    }
}

/// A file at most this large, of at most [`INLINE_PIXELS`], may be decoded on the request's
/// own thread (see [`Predictor::may_inline`]). A 28×28 PNG decodes in a few µs, less than the two
/// thread switches of a trip to the decoder threads; anything larger still goes to those
/// threads, which bound how many images decode at once.
const INLINE_BYTES: usize = 16 * 1024;
/// See [`INLINE_BYTES`]: 64×64 pixels, five times an MNIST digit, well under 100 µs to decode.
const INLINE_PIXELS: u64 = 64 * 64;

/// Decodes a digit-sized image right here; `None` sends it to the decoder threads (too large,
/// or its memory share is not free at once and it must wait for one).
fn decode_here(
    bytes: &[u8],
    budget: &MemoryBudget,
    limits: ImageLimits,
) -> Option<Result<Result<Decoded, preprocess::ImageError>, WorkerError>> {
    if bytes.len() > INLINE_BYTES {
        return None;
    }
    let header = match preprocess::inspect(bytes, limits) {
        Ok(header) => header,
        Err(e) => return Some(Ok(Err(e))),
    };
    if u64::from(header.width) * u64::from(header.height) > INLINE_PIXELS {
        return None;
    }
    let share = budget.try_take(header.need)?;
    // As on the decoder threads, a panic in a decoder costs this image, not the connection.
    Some(
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            Ok(Decoded::Done(
                header,
                decode_within(bytes, &header, limits, share),
            ))
        }))
        .map_err(|_| WorkerError::Panicked("image decoder")),
    )
}

enum Decoded {
    Done(preprocess::Header, Result<Prepared, preprocess::ImageError>),
    Waiting(preprocess::Header),
}

/// Above this estimate, freed decoder memory is handed back to the OS before the share is:
/// otherwise the allocator may keep it while the next image allocates afresh.
const RELEASE_ABOVE: u64 = 8 * 1024 * 1024;

fn decode_within(
    bytes: &[u8],
    header: &preprocess::Header,
    limits: preprocess::ImageLimits,
    share: MemoryShare,
) -> Result<Prepared, preprocess::ImageError> {
    let result = preprocess::prepare_inspected(bytes, header, limits);
    if header.need > RELEASE_ABOVE {
        crate::release_freed_memory();
    }
    drop(share);
    result
}

/// Runs one image through the model inside a `prediction` span carrying the answer.
pub(super) async fn classify(
    engine: &Engine,
    version: &ModelVersion,
    index: usize,
    input: Vec<f32>,
    inline: bool,
) -> Result<Prediction, ApiError> {
    let model = version.model_ref();
    let span = tracing::info_span!(
        "prediction",
        image.index = index as i64,
        prediction = Empty,
        probability = Empty,
        model.version = model.version.as_str(),
        model.sha256 = model.sha256.as_str(),
        inference.time_ms = Empty,
        inference.batch_size = Empty,
    );
    // The span is not entered while the image waits for its batch: it times from creation to
    // drop, and entering it on every poll would only add subscriber work.
    let result = engine.predict(&version.net, input, inline).await;
    match &result {
        Ok(p) => {
            crate::metrics::record_prediction(p.digit);
            span.record("prediction", p.digit as i64);
            span.record("probability", p.probability as f64);
            span.record("inference.time_ms", p.forward_time.as_secs_f64() * 1e3);
            span.record("inference.batch_size", p.batch_size as i64);
        }
        Err(e) => tracing::info!(parent: &span, error = %e),
    }
    Ok(result?)
}
