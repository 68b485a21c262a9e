//! `mnist-api predict`: a command-line client of a running server, traced as a service of its
//! own (`mnist-api-client`), so one trace shows the client's requests and the server's work.
//!
//! A run expands its inputs ([`inputs`]), asks `GET /model` how many images one request may
//! carry, logs in, and sends the images in requests of up to that many, several in flight at
//! once ([`http`]); answers are printed in input order ([`output`]). Everything the run does
//! sits under one root span, `predict`, with one client span per HTTP request.

mod args;
mod error;
mod http;
mod inputs;
mod output;

use std::io::IsTerminal;
use std::num::NonZeroUsize;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use opentelemetry::trace::{TraceContextExt, TraceId};
use tracing::field::Empty;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

pub use args::{PredictArgs, Token};
pub use error::ClientError;
pub use inputs::IMAGE_EXTENSIONS;

use http::{Answer, Api, Limits};
use inputs::Input;
use output::Output;

/// The client's service name in its spans, unless `OTEL_SERVICE_NAME` says otherwise.
pub const SERVICE_NAME: &str = "mnist-api-client";

/// Multipart framing per image, besides its name: boundary, headers, line ends (~130 bytes
/// with reqwest's boundary), with room to spare.
const PART_OVERHEAD: u64 = 256;

/// Runs `mnist-api predict` and returns the process's exit code (see
/// [`ClientError::exit_code`]), having printed the answers, any errors, and the trace id.
pub async fn run(args: &PredictArgs) -> u8 {
    let root = tracing::info_span!(
        "predict",
        otel.status_code = Empty,
        files = Empty,
        requests = Empty,
        failed_files = Empty,
        error.type = Empty,
    );
    let output = Output::new(args.json);
    let result = predict(args, &root, &output).instrument(root.clone()).await;
    if let Err(e) = &result {
        root.record("error.type", error_type(e));
        root.record("otel.status_code", "ERROR");
    }
    let trace_id = root.context().span().span_context().trace_id();
    drop(root);
    let code = match result {
        Ok(()) => 0,
        Err(e) => {
            output.error(&e);
            e.exit_code()
        }
    };
    if trace_id != TraceId::INVALID {
        output.trace(trace_id, args.jaeger_ui_url.as_deref());
    }
    code
}

async fn predict(
    args: &PredictArgs,
    root: &tracing::Span,
    output: &Output,
) -> Result<(), ClientError> {
    let expanded = inputs::expand(&args.inputs)?;
    for note in &expanded.notes {
        output.note(note);
    }
    let files = expanded.files;
    root.record("files", files.len() as i64);
    let api = Api::new(&args.server, Duration::from_secs(args.timeout.max(1)))?;
    let limits = api.limits().await?;
    let token = match (&args.token, &args.user) {
        (Some(token), _) => Some(token.0.clone()),
        (None, Some(user)) => Some(api.login(user, &password(user)?).await?),
        (None, None) => None,
    };
    let batches = plan(files, limits, args.batch);
    root.record("requests", batches.len() as i64);
    let total = batches.iter().map(Vec::len).sum();
    let progress = output.progress(total);
    let mut failed = 0;
    let mut answers = futures_util::stream::iter(batches)
        .map(|batch| send(&api, token.as_deref(), batch))
        .buffered(args.concurrency.get());
    while let Some(batch) = answers.next().await {
        for (input, answer) in batch? {
            match answer {
                Ok(a) => progress.answer(&input.path, &a),
                Err(e) => {
                    failed += 1;
                    progress.failure(&input.path, &e);
                }
            }
        }
    }
    root.record("failed_files", failed as i64);
    if failed > 0 {
        return Err(ClientError::FilesFailed { failed, total });
    }
    Ok(())
}

/// `MNIST_API_PASSWORD`, else a prompt on the terminal.
fn password(user: &str) -> Result<String, ClientError> {
    if let Some(p) = std::env::var("MNIST_API_PASSWORD")
        .ok()
        .filter(|p| !p.is_empty())
    {
        return Ok(p);
    }
    let no_password = |source| ClientError::NoPassword {
        user: user.to_string(),
        source,
    };
    if !std::io::stdin().is_terminal() {
        return Err(no_password(std::io::Error::other(
            "stdin is not a terminal",
        )));
    }
    rpassword::prompt_password(format!("password for {user}: ")).map_err(no_password)
}

/// Splits `files`, in order, into requests the server accepts: at most its `max_files`
/// images (or `batch`, if smaller) and its `max_body_bytes`. A server that does not publish
/// its limits gets `batch` images per request, or one.
fn plan(files: Vec<Input>, limits: Option<Limits>, batch: Option<NonZeroUsize>) -> Vec<Vec<Input>> {
    let batch = batch.map(NonZeroUsize::get);
    let (max_files, max_bytes) = match limits {
        Some(l) => (
            batch.unwrap_or(usize::MAX).min(l.max_files),
            l.max_body_bytes,
        ),
        None => (batch.unwrap_or(1), u64::MAX),
    };
    let mut out: Vec<Vec<Input>> = Vec::new();
    let mut bytes = 0;
    for input in files {
        let cost = input.size + PART_OVERHEAD + 3 * part_name(&input.path).len() as u64;
        match out.last_mut() {
            // A file too large on its own still goes alone: the server's 413 names the limit.
            Some(last) if last.len() < max_files.max(1) && bytes + cost <= max_bytes => {
                bytes += cost;
                last.push(input);
            }
            _ => {
                bytes = PART_OVERHEAD + cost;
                out.push(vec![input]);
            }
        }
    }
    out
}

/// The name a file is sent under: its own name, never the local directories above it.
fn part_name(path: &std::path::Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Each file of `batch` with its answer or its failure, in order; `Err` when the run cannot
/// go on (server gone, token refused).
async fn send(
    api: &Api,
    token: Option<&str>,
    batch: Vec<Input>,
) -> Result<Vec<(Input, Result<Answer, ClientError>)>, ClientError> {
    let mut results: Vec<Option<Result<Answer, ClientError>>> = Vec::with_capacity(batch.len());
    let mut readable: Vec<(usize, Bytes)> = Vec::new();
    for (i, input) in batch.iter().enumerate() {
        match tokio::fs::read(&input.path).await {
            Ok(bytes) => {
                readable.push((i, Bytes::from(bytes)));
                results.push(None);
            }
            Err(source) => results.push(Some(Err(ClientError::Unreadable {
                path: input.path.clone(),
                source,
            }))),
        }
    }
    let mut groups = vec![readable];
    while let Some(group) = groups.pop() {
        if group.is_empty() {
            continue;
        }
        let parts = group
            .iter()
            .map(|(i, bytes)| (part_name(&batch[*i].path), bytes.clone()))
            .collect();
        match api.predict(token, parts).await? {
            Ok(answers) => {
                for ((i, _), answer) in group.iter().zip(answers) {
                    results[*i] = Some(Ok(answer));
                }
            }
            Err(refusal) if refusal.status == 401 => {
                return Err(match (token, refusal.code.as_str()) {
                    (None, _) | (_, "missing_token") => ClientError::LoginRequired,
                    _ => ClientError::TokenRefused {
                        code: refusal.code,
                        msg: refusal.msg,
                    },
                });
            }
            // One bad image refuses its whole request: send each alone to learn which, and
            // answer the others. Pushed in reverse, so they go in order.
            Err(refusal) if group.len() > 1 && matches!(refusal.status, 413 | 415 | 422) => {
                groups.extend(group.into_iter().rev().map(|one| vec![one]));
            }
            Err(refusal) => {
                for (i, _) in &group {
                    results[*i] = Some(Err(ClientError::Refused {
                        path: batch[*i].path.clone(),
                        status: refusal.status,
                        code: refusal.code.clone(),
                        msg: refusal.msg.clone(),
                    }));
                }
            }
        }
    }
    Ok(batch
        .into_iter()
        .zip(results)
        .map(|(input, r)| (input, r.expect("every file is answered or failed")))
        .collect())
}

/// `error.type` of the root span: the class of failure, as the exit code has it.
fn error_type(e: &ClientError) -> &'static str {
    match e.exit_code() {
        1 => "files_failed",
        2 => "bad_input",
        _ => "server_unusable",
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    fn files(sizes: &[u64]) -> Vec<Input> {
        sizes
            .iter()
            .enumerate()
            .map(|(i, &size)| Input {
                path: PathBuf::from(format!("d/{i}.png")),
                size,
            })
            .collect()
    }

    fn shape(batches: &[Vec<Input>]) -> Vec<usize> {
        batches.iter().map(Vec::len).collect()
    }

    #[test]
    fn requests_take_up_to_the_servers_file_limit_in_order() {
        let limits = Limits {
            max_files: 3,
            max_body_bytes: 1 << 20,
        };
        let batches = plan(files(&[10; 7]), Some(limits), None);
        assert_eq!(shape(&batches), [3, 3, 1]);
        let order: Vec<_> = batches.concat().into_iter().map(|f| f.path).collect();
        assert_eq!(
            order,
            files(&[10; 7])
                .into_iter()
                .map(|f| f.path)
                .collect::<Vec<_>>()
        );
        let smaller = NonZeroUsize::new(2);
        assert_eq!(
            shape(&plan(files(&[10; 5]), Some(limits), smaller)),
            [2, 2, 1]
        );
        let larger = NonZeroUsize::new(10);
        assert_eq!(shape(&plan(files(&[10; 5]), Some(limits), larger)), [3, 2]);
    }

    #[test]
    fn requests_stay_under_the_servers_body_limit() {
        let limits = Limits {
            max_files: 64,
            max_body_bytes: 3000,
        };
        // ~1,260 bytes per image with framing: two fit, a third does not; an image too large
        // for any request goes alone.
        let batches = plan(files(&[1000, 1000, 1000, 9000, 10]), Some(limits), None);
        assert_eq!(shape(&batches), [2, 1, 1, 1]);
    }

    #[test]
    fn a_server_without_published_limits_gets_the_batch_flag_or_one_image() {
        assert_eq!(shape(&plan(files(&[1; 3]), None, None)), [1, 1, 1]);
        let batch = NonZeroUsize::new(2);
        assert_eq!(shape(&plan(files(&[1; 3]), None, batch)), [2, 1]);
    }
}
