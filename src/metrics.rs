//! Prometheus metrics: one process-wide recorder, rendered as text at `GET /metrics`.
//!
//! Labels are bounded on purpose: routes outside the known set count as `other` and unusual
//! methods as `_OTHER`, so scanners probing random paths cannot grow the series without limit.

use std::sync::OnceLock;
use std::time::Duration;

use metrics::{
    counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram, Unit,
};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use warp::http::{Method, StatusCode};

use crate::span_export::{self, DropReason};

/// Latency buckets, seconds: loopback requests take ~0.1–5 ms, an overloaded or large-image
/// request up to seconds.
const SECONDS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];
/// Batch sizes are at most `--max-batch` (default 16).
const BATCH: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0];
/// Histograms keep raw samples until the next upkeep; this bounds that memory.
const UPKEEP: Duration = Duration::from_secs(5);

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the recorder on first use and returns the handle that renders it.
///
/// Tests start many servers in one process; they share this recorder, so counters are
/// process-wide and only ever move up.
pub fn handle() -> &'static PrometheusHandle {
    HANDLE.get_or_init(|| {
        let builder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS)
            .and_then(|b| {
                b.set_buckets_for_metric(Matcher::Full("inference_batch_size".into()), BATCH)
            })
            .expect("bucket lists are constant and non-empty");
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        if metrics::set_global_recorder(recorder).is_err() {
            tracing::warn!("another metrics recorder is installed; /metrics stays empty");
        }
        describe();
        let upkeep = handle.clone();
        let spawned = std::thread::Builder::new()
            .name("metrics-upkeep".into())
            .spawn(move || loop {
                std::thread::sleep(UPKEEP);
                upkeep.run_upkeep();
            });
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "metrics upkeep thread did not start");
        }
        handle
    })
}

fn describe() {
    describe_counter!(
        "http_requests_total",
        "HTTP requests answered, by method, route and status."
    );
    describe_histogram!(
        "http_request_duration_seconds",
        Unit::Seconds,
        "Time from request to response headers, by method and route."
    );
    describe_counter!(
        "predictions_total",
        "Images classified, by predicted digit."
    );
    describe_histogram!("inference_batch_size", "Images per forward pass.");
    describe_histogram!(
        "inference_forward_seconds",
        Unit::Seconds,
        "Wall time of one forward pass (a whole batch)."
    );
    describe_counter!(
        "otel_spans_dropped_total",
        "Spans that never reached a collector, by reason: queue_full (the exporter cannot keep \
         up), export_failed (their batch failed or timed out), exporter_unavailable (e.g. the \
         Jaeger agent's name does not resolve yet)."
    );
    describe_gauge!(
        "model_versions_loaded",
        "Model versions in memory (the newest is served by default)."
    );
    describe_counter!(
        "model_reloads_total",
        "Model reloads, by outcome: swapped (new weights served), unchanged (nothing new on \
         disk), failed (the new file was unusable; the previous model kept serving)."
    );
    describe_counter!(
        "otel_export_failures_total",
        "Span batches not delivered: failed, timed out, or no exporter available yet."
    );
}

/// The metrics in Prometheus text format.
pub fn render() -> String {
    for reason in DropReason::ALL {
        counter!("otel_spans_dropped_total", "reason" => reason.label())
            .absolute(span_export::dropped_spans(reason));
    }
    counter!("otel_export_failures_total").absolute(span_export::failed_exports());
    handle().render()
}

/// Counts one answered request and its latency.
pub fn record_request(
    method: &Method,
    route: Option<&'static str>,
    status: StatusCode,
    elapsed: Duration,
) {
    let method = method_label(method);
    let route = route.unwrap_or("other");
    counter!(
        "http_requests_total",
        "method" => method,
        "route" => route,
        "status" => status.as_u16().to_string()
    )
    .increment(1);
    histogram!("http_request_duration_seconds", "method" => method, "route" => route)
        .record(elapsed.as_secs_f64());
}

/// Counts one reload by its outcome (`swapped`, `unchanged`, `failed`).
pub fn record_reload(outcome: &'static str) {
    counter!("model_reloads_total", "outcome" => outcome).increment(1);
}

/// Sets how many model versions are loaded.
pub fn record_loaded_versions(n: usize) {
    gauge!("model_versions_loaded").set(n as f64);
}

/// Counts one classified image.
pub fn record_prediction(digit: u8) {
    const DIGITS: [&str; 10] = ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"];
    if let Some(d) = DIGITS.get(usize::from(digit)) {
        counter!("predictions_total", "digit" => *d).increment(1);
    }
}

/// Records one forward pass.
pub fn record_batch(size: usize, forward: Duration) {
    histogram!("inference_batch_size").record(size as f64);
    histogram!("inference_forward_seconds").record(forward.as_secs_f64());
}

fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::HEAD => "HEAD",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        Method::PATCH => "PATCH",
        _ => "_OTHER",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The value of the first sample line starting with `series`.
    fn sample(text: &str, series: &str) -> Option<f64> {
        text.lines()
            .find(|l| l.starts_with(series))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
    }

    #[test]
    fn recorded_requests_show_up_with_bounded_labels() {
        handle();
        let series = r#"http_requests_total{method="_OTHER",route="other",status="418"}"#;
        let before = sample(&render(), series).unwrap_or(0.0);
        let odd = Method::from_bytes(b"BREW").unwrap();
        record_request(
            &odd,
            None,
            StatusCode::IM_A_TEAPOT,
            Duration::from_millis(3),
        );
        let text = render();
        assert_eq!(sample(&text, series), Some(before + 1.0), "{text}");
        assert!(text.contains(
            "http_request_duration_seconds_bucket{method=\"_OTHER\",route=\"other\",le=\"0.005\"}"
        ));
        assert!(text.contains(r#"otel_spans_dropped_total{reason="queue_full"}"#));
        assert!(text.contains(r#"otel_spans_dropped_total{reason="export_failed"}"#));
        assert!(text.contains(r#"otel_spans_dropped_total{reason="exporter_unavailable"}"#));
        assert!(text.contains("otel_export_failures_total"));
    }

    #[test]
    fn predictions_are_counted_by_digit() {
        handle();
        let series = r#"predictions_total{digit="7"}"#;
        let before = sample(&render(), series).unwrap_or(0.0);
        record_prediction(7);
        record_prediction(7);
        record_prediction(200);
        assert_eq!(sample(&render(), series), Some(before + 2.0));
    }
}
