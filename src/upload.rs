//! Reading request bodies within three bounds: size per request, time per request, and bytes
//! held by all requests together; and pulling the `file` parts out of a multipart form.
//!
//! The shared byte budget exists because the per-request size limit alone multiplies: 512
//! connections each uploading 16 MiB would hold 8 GiB. A request charges the budget as its bytes
//! arrive and gives them back when it finishes; one that would go over is refused with 503.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Buf, Bytes};
use futures_util::{Stream, StreamExt, TryStreamExt};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Why a request body was not read. Messages say what to send instead where that helps.
#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    /// Declared or streamed beyond the size limit.
    #[error("request body exceeds the limit of {0} bytes")]
    TooLarge(u64),
    /// `Content-Length` is not a number.
    #[error("invalid Content-Length")]
    BadLength,
    /// The whole body did not arrive within the timeout (seconds).
    #[error("request body not received within {0} s: send the whole body promptly")]
    Timeout(u64),
    /// The shared body budget is taken; retrying later can succeed.
    #[error("server busy: the memory for request bodies is in use, retry shortly")]
    OverBudget,
    /// The connection failed mid-body (reset, bad chunked encoding).
    #[error("reading the body failed: {0}")]
    Read(String),
    /// Not `multipart/form-data`; says what came instead.
    #[error("expected a multipart/form-data body with the image in field `file`, got {0}")]
    NotMultipart(String),
    /// The multipart body could not be parsed.
    #[error("malformed multipart body: {0}")]
    BadMultipart(String),
    /// No part named `file`.
    #[error("no `file` field in the form: send the image as multipart field `file`")]
    NoFile,
    /// More `file` parts than allowed.
    #[error("too many files: at most {0} images per request")]
    TooManyFiles(usize),
}

/// Bounds on one request body.
#[derive(Clone, Debug)]
pub struct BodyLimits {
    /// Largest body, bytes (declared or streamed).
    pub max_bytes: u64,
    /// Time allowed for the whole body to arrive.
    pub timeout: Duration,
    /// Bytes all bodies in memory may hold together, one permit per byte.
    pub budget: Arc<Semaphore>,
}

/// Largest small JSON body: `/login`'s credentials, the model-control endpoint's parameters.
pub const SMALL_JSON_BYTES: u64 = 16 * 1024;

impl BodyLimits {
    /// The same timeout and shared budget, for a body of at most [`SMALL_JSON_BYTES`].
    pub fn small_json(&self) -> Self {
        Self {
            max_bytes: SMALL_JSON_BYTES,
            ..self.clone()
        }
    }

    /// Limits with a budget of their own (room for two whole bodies), for tests and fuzzing.
    pub fn standalone(max_bytes: u64, timeout: Duration) -> Self {
        let budget = usize::try_from(max_bytes.saturating_mul(2))
            .unwrap_or(usize::MAX)
            .min(Semaphore::MAX_PERMITS);
        Self {
            max_bytes,
            timeout,
            budget: Arc::new(Semaphore::new(budget)),
        }
    }
}

/// Bytes charged to the shared budget; returned to it when dropped.
#[derive(Debug, Default)]
pub struct Charge(Option<OwnedSemaphorePermit>);

impl Charge {
    fn add(&mut self, permit: OwnedSemaphorePermit) {
        match &mut self.0 {
            Some(held) => held.merge(permit),
            None => self.0 = Some(permit),
        }
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.0.as_ref().map_or(0, OwnedSemaphorePermit::num_permits)
    }
}

/// Why a body could not be read; the stream's own error stays inside.
#[derive(Debug, thiserror::Error)]
enum ReadError {
    #[error("the server's memory for request bodies is in use")]
    OverBudget,
    #[error("{0}")]
    Stream(Box<dyn std::error::Error + Send + Sync>),
}

/// The chunks of `body` as `Bytes`, each charged to `budget` as it arrives.
fn charged<B, E>(
    body: impl Stream<Item = Result<B, E>> + Send + 'static,
    budget: Arc<Semaphore>,
    charge: Arc<Mutex<Charge>>,
) -> impl Stream<Item = Result<Bytes, ReadError>> + Send + 'static
where
    B: Buf,
    E: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    body.map(move |chunk| {
        let mut chunk = chunk.map_err(|e| ReadError::Stream(e.into()))?;
        let n = u32::try_from(chunk.remaining()).map_err(|_| ReadError::OverBudget)?;
        let permit = Arc::clone(&budget)
            .try_acquire_many_owned(n)
            .map_err(|_| ReadError::OverBudget)?;
        charge.lock().unwrap_or_else(|p| p.into_inner()).add(permit);
        Ok(chunk.copy_to_bytes(chunk.remaining()))
    })
}

fn read_error(e: ReadError) -> UploadError {
    match e {
        ReadError::OverBudget => UploadError::OverBudget,
        ReadError::Stream(e) => UploadError::Read(e.to_string()),
    }
}

fn take(charge: &Arc<Mutex<Charge>>) -> Charge {
    std::mem::take(&mut *charge.lock().unwrap_or_else(|p| p.into_inner()))
}

/// Refuses a declared `Content-Length` over the limit before a byte is read.
fn check_declared(content_length: Option<&str>, max: u64) -> Result<(), UploadError> {
    match content_length.map(|v| v.trim().parse::<u64>()) {
        None => Ok(()),
        Some(Ok(n)) if n > max => Err(UploadError::TooLarge(max)),
        Some(Ok(_)) => Ok(()),
        Some(Err(_)) => Err(UploadError::BadLength),
    }
}

/// Reads a whole body of at most `limits.max_bytes`, refusing larger ones as soon as they
/// cross the limit (declared or streamed), so nothing big is ever buffered.
pub async fn read_limited<B, E>(
    content_length: Option<&str>,
    body: impl Stream<Item = Result<B, E>> + Send + 'static,
    limits: &BodyLimits,
) -> Result<(Vec<u8>, Charge), UploadError>
where
    B: Buf,
    E: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    check_declared(content_length, limits.max_bytes)?;
    let charge = Arc::new(Mutex::new(Charge::default()));
    let stream = charged(body, Arc::clone(&limits.budget), Arc::clone(&charge));
    let max = limits.max_bytes;
    let read = async move {
        let mut out = Vec::new();
        futures_util::pin_mut!(stream);
        while let Some(chunk) = stream.try_next().await.map_err(read_error)? {
            if out.len() as u64 + chunk.len() as u64 > max {
                return Err(UploadError::TooLarge(max));
            }
            out.extend_from_slice(&chunk);
        }
        Ok(out)
    };
    let out = tokio::time::timeout(limits.timeout, read)
        .await
        .map_err(|_| UploadError::Timeout(limits.timeout.as_secs()))??;
    Ok((out, take(&charge)))
}

/// One uploaded file: the part's filename, if any, and its bytes.
pub type FilePart = (Option<String>, Bytes);

/// Streams a `multipart/form-data` body and keeps its `file` parts, within the body limits
/// and at most `max_files` parts. The bytes stay charged to the budget until the [`Charge`]
/// is dropped.
pub async fn read_files<B, E>(
    content_type: Option<&str>,
    content_length: Option<&str>,
    body: impl Stream<Item = Result<B, E>> + Send + 'static,
    limits: &BodyLimits,
    max_files: usize,
) -> Result<(Vec<FilePart>, Charge), UploadError>
where
    B: Buf,
    E: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let content_type = content_type.unwrap_or("");
    let mime = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if mime != "multipart/form-data" {
        let got = if content_type.is_empty() {
            "no Content-Type".to_string()
        } else {
            format!("Content-Type `{}`", crate::clip::clip(content_type))
        };
        return Err(UploadError::NotMultipart(got));
    }
    let boundary = multer::parse_boundary(content_type)
        .map_err(|e| UploadError::BadMultipart(e.to_string()))?;
    let max = limits.max_bytes;
    check_declared(content_length, max)?;
    let charge = Arc::new(Mutex::new(Charge::default()));
    let stream = charged(body, Arc::clone(&limits.budget), Arc::clone(&charge));
    let constraints =
        multer::Constraints::new().size_limit(multer::SizeLimit::new().whole_stream(max));
    let mut multipart = multer::Multipart::with_constraints(stream, boundary, constraints);
    let read = async move {
        let mut files = Vec::new();
        while let Some(field) = multipart.next_field().await.map_err(multer_error(max))? {
            if field.name() != Some("file") {
                continue;
            }
            if files.len() == max_files {
                return Err(UploadError::TooManyFiles(max_files));
            }
            let name = field
                .file_name()
                .map(|n| crate::clip::clip_to(n, 255).to_string());
            let bytes = field.bytes().await.map_err(multer_error(max))?;
            files.push((name, bytes));
        }
        if files.is_empty() {
            return Err(UploadError::NoFile);
        }
        Ok(files)
    };
    let files = tokio::time::timeout(limits.timeout, read)
        .await
        .map_err(|_| UploadError::Timeout(limits.timeout.as_secs()))??;
    Ok((files, take(&charge)))
}

fn multer_error(max: u64) -> impl Fn(multer::Error) -> UploadError {
    move |e| match e {
        multer::Error::StreamSizeExceeded { .. } | multer::Error::FieldSizeExceeded { .. } => {
            UploadError::TooLarge(max)
        }
        multer::Error::StreamReadFailed(inner) => match inner.downcast::<ReadError>() {
            Ok(read) => read_error(*read),
            Err(other) => UploadError::Read(other.to_string()),
        },
        other => UploadError::BadMultipart(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(parts: &[&'static [u8]]) -> impl Stream<Item = Result<Bytes, std::io::Error>> {
        futures_util::stream::iter(
            parts
                .iter()
                .map(|p| Ok(Bytes::from_static(p)))
                .collect::<Vec<_>>(),
        )
    }

    const FORM: &[u8] = b"--X\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.png\"\r\n\r\nPNGDATA\r\n--X--\r\n";

    #[tokio::test]
    async fn files_come_out_and_the_charge_is_returned_on_drop() {
        let limits = BodyLimits::standalone(1024, Duration::from_secs(5));
        let (files, charge) = read_files(
            Some("multipart/form-data; boundary=X"),
            None,
            body(&[FORM]),
            &limits,
            4,
        )
        .await
        .unwrap();
        assert_eq!(files.len(), 1);
        assert_eq!(files[0].0.as_deref(), Some("a.png"));
        assert_eq!(&files[0].1[..], b"PNGDATA");
        assert_eq!(charge.bytes(), FORM.len());
        assert_eq!(limits.budget.available_permits(), 2048 - FORM.len());
        drop(charge);
        assert_eq!(limits.budget.available_permits(), 2048);
    }

    #[tokio::test]
    async fn a_body_over_the_shared_budget_is_overloaded_not_too_large() {
        let limits = BodyLimits {
            budget: Arc::new(Semaphore::new(10)),
            ..BodyLimits::standalone(1024, Duration::from_secs(5))
        };
        let r = read_limited(None, body(&[b"0123456789abc"]), &limits).await;
        assert!(matches!(r, Err(UploadError::OverBudget)), "{r:?}");
        assert_eq!(
            limits.budget.available_permits(),
            10,
            "nothing stays charged"
        );
    }

    #[tokio::test]
    async fn a_stalled_body_times_out() {
        let limits = BodyLimits::standalone(1024, Duration::from_millis(50));
        let stalled = futures_util::stream::pending::<Result<Bytes, std::io::Error>>();
        let r = read_limited(None, stalled, &limits).await;
        assert!(matches!(r, Err(UploadError::Timeout(_))), "{r:?}");
    }

    #[tokio::test]
    async fn declared_and_streamed_sizes_are_both_enforced() {
        let limits = BodyLimits::standalone(4, Duration::from_secs(5));
        let r = read_limited(Some("5"), body(&[b"x"]), &limits).await;
        assert!(matches!(r, Err(UploadError::TooLarge(4))), "{r:?}");
        let r = read_limited(None, body(&[b"xyz", b"zy"]), &limits).await;
        assert!(matches!(r, Err(UploadError::TooLarge(4))), "{r:?}");
        let r = read_limited(Some("nan"), body(&[b"x"]), &limits).await;
        assert!(matches!(r, Err(UploadError::BadLength)), "{r:?}");
    }
}
