//! The `console` exporter: every span as one line of OTLP JSON (an `ExportTraceServiceRequest`,
//! ids in hex, as the OTLP/JSON encoding and the collector's file exporter write it).
//!
//! opentelemetry-stdout 0.4, the release for the opentelemetry 0.23 family, never returns from
//! a batch of two spans or more: its `PartialEq for Value` calls itself for every value that is
//! not a float, so grouping the batch by resource loops for good (a core at 100 %, nothing
//! printed, the process unable to exit). The OTLP exporter's own types, from
//! opentelemetry-proto, convert and encode the same data.

use std::fmt;
use std::io::Write;

use futures_util::future::BoxFuture;
use opentelemetry::trace::TraceError;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::trace::v1::ResourceSpans;
use opentelemetry_sdk::export::trace::{ExportResult, SpanData, SpanExporter};

/// Writes spans to `W` (stdout for the `console` exporter).
pub struct Console<W> {
    out: W,
}

impl Console<std::io::Stdout> {
    pub fn stdout() -> Self {
        Self::new(std::io::stdout())
    }
}

impl<W> Console<W> {
    pub fn new(out: W) -> Self {
        Self { out }
    }
}

impl<W> fmt::Debug for Console<W> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Console")
    }
}

impl<W: Write + Send + Sync + 'static> SpanExporter for Console<W> {
    fn export(&mut self, batch: Vec<SpanData>) -> BoxFuture<'static, ExportResult> {
        let result = lines(batch).and_then(|text| {
            self.out
                .write_all(text.as_bytes())
                .and_then(|()| self.out.flush())
                .map_err(|e| TraceError::from(format!("console exporter: {e}")))
        });
        Box::pin(std::future::ready(result))
    }
}

fn lines(batch: Vec<SpanData>) -> Result<String, TraceError> {
    let mut text = String::new();
    for span in batch {
        let request = ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans::from(span)],
        };
        let line = serde_json::to_string(&request)
            .map_err(|e| TraceError::from(format!("console exporter: {e}")))?;
        text.push_str(&line);
        text.push('\n');
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use opentelemetry::KeyValue;
    use opentelemetry_sdk::testing::trace::new_test_export_span_data;
    use opentelemetry_sdk::Resource;

    use super::*;

    /// A shared buffer the test reads back.
    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl Write for Buffer {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().write(buf)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_batch_of_spans_is_written_as_otlp_json_lines() {
        // opentelemetry-stdout hung on exactly this: two spans sharing a resource with string
        // values.
        let resource = Resource::new([KeyValue::new("service.name", "mnist-api")]);
        let batch: Vec<SpanData> = ["prediction", "decode"]
            .into_iter()
            .map(|name| {
                let mut span = new_test_export_span_data();
                span.name = name.into();
                span.resource = Cow::Owned(resource.clone());
                span.attributes = vec![
                    KeyValue::new("model.version", "1"),
                    KeyValue::new("prediction", 7_i64),
                ];
                span
            })
            .collect();
        let buffer = Buffer::default();
        let mut exporter = Console::new(buffer.clone());
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(futures_util::FutureExt::now_or_never(
                exporter.export(batch),
            ));
        });
        let result = rx
            .recv_timeout(Duration::from_secs(10))
            .expect("export hung");
        result.expect("export is synchronous").unwrap();

        let text = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2, "{text}");
        let rs = &lines[1]["resourceSpans"][0];
        assert_eq!(
            rs["resource"]["attributes"][0]["value"]["stringValue"], "mnist-api",
            "{rs}"
        );
        let span = &rs["scopeSpans"][0]["spans"][0];
        assert_eq!(span["name"], "decode");
        assert_eq!(span["traceId"].as_str().unwrap().len(), 32, "{span}");
        let attrs = span["attributes"].as_array().unwrap();
        assert!(attrs.iter().any(|a| a["key"] == "prediction"), "{span}");
    }
}
