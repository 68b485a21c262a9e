//! What stands between the SDK's batch processors and the exporters, so that no client and no
//! collector outage can silence tracing unnoticed:
//!
//! - [`Clipped`] cuts every string value (attributes, event and link attributes, names, status
//!   descriptions) to `OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT` before export. The SDK 0.23 has no
//!   value length limit of its own, and one oversized span makes the Jaeger agent exporter
//!   fail the whole batch it is in.
//! - [`Bounded`] and [`Counted`] count every span that is lost, by reason: the queue was full,
//!   its batch failed or timed out, or the exporter was not available. The SDK only reports
//!   these as opaque error strings to a global handler.
//! - [`Lazy`] builds an exporter on first use and retries at most every [`RETRY_EVERY`], so an
//!   agent host name that does not resolve yet (compose or Kubernetes starting up) delays
//!   tracing instead of stopping the server.

use std::borrow::Cow;
use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use opentelemetry::trace::{Status, TraceError, TraceResult};
use opentelemetry::{Array, Context, KeyValue, StringValue, Value};
use opentelemetry_sdk::export::trace::{ExportResult, SpanData, SpanExporter};
use opentelemetry_sdk::trace::{Span, SpanProcessor};

use crate::clip::clip_to;

/// How often a [`Lazy`] exporter tries again to build its inner exporter.
pub const RETRY_EVERY: Duration = Duration::from_secs(5);

/// Why spans never reached a collector.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropReason {
    /// The batch processor's queue was full (the exporter is slower than the traffic).
    QueueFull,
    /// The exporter failed or timed out on the batch the span was in.
    ExportFailed,
    /// The exporter could not be built yet (e.g. the agent's name does not resolve).
    ExporterUnavailable,
}

impl DropReason {
    /// Every reason, in the order of [`DropReason::label`].
    pub const ALL: [DropReason; 3] = [
        DropReason::QueueFull,
        DropReason::ExportFailed,
        DropReason::ExporterUnavailable,
    ];

    /// The `reason` label of `otel_spans_dropped_total`.
    pub fn label(self) -> &'static str {
        match self {
            DropReason::QueueFull => "queue_full",
            DropReason::ExportFailed => "export_failed",
            DropReason::ExporterUnavailable => "exporter_unavailable",
        }
    }
}

static DROPPED: [AtomicU64; 3] = [AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0)];
static FAILED_EXPORTS: AtomicU64 = AtomicU64::new(0);

/// Spans lost for `reason` since start, over all exporters.
pub fn dropped_spans(reason: DropReason) -> u64 {
    DROPPED[reason as usize].load(Ordering::Relaxed)
}

/// Batches that were not delivered (failed, timed out, or no exporter yet) since start.
pub fn failed_exports() -> u64 {
    FAILED_EXPORTS.load(Ordering::Relaxed)
}

fn count_dropped(reason: DropReason, spans: usize) {
    DROPPED[reason as usize].fetch_add(spans as u64, Ordering::Relaxed);
    if reason == DropReason::QueueFull {
        // The other reasons are logged where they are known: with the exporter's error, or
        // once by the lazy exporter.
        warn_rarely("a span queue is full: the exporter cannot keep up");
    }
}

/// Logs exporter trouble with the drop counts, at most once every 30 s: with a collector down
/// this fires per batch or per span, and a log line per request would be worse than the outage.
pub fn warn_rarely(message: &str) {
    static LAST: OnceLock<Mutex<Option<Instant>>> = OnceLock::new();
    let mut last = LAST
        .get_or_init(|| Mutex::new(None))
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    if last.is_some_and(|t| t.elapsed() < Duration::from_secs(30)) {
        return;
    }
    *last = Some(Instant::now());
    tracing::warn!(
        queue_full = dropped_spans(DropReason::QueueFull),
        export_failed = dropped_spans(DropReason::ExportFailed),
        exporter_unavailable = dropped_spans(DropReason::ExporterUnavailable),
        failed_exports = failed_exports(),
        "trace export trouble (logged at most every 30 s, counted in otel_spans_dropped_total): {message}"
    );
}

/// The error a [`Lazy`] exporter returns while it has no inner exporter: typed, so counting
/// does not depend on the wording of a message.
#[derive(Debug)]
pub struct Unavailable;

impl fmt::Display for Unavailable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("span exporter not available yet")
    }
}

impl std::error::Error for Unavailable {}

/// Whether `err` is a [`Lazy`] exporter saying it is not available yet (already warned about).
pub fn is_unavailable(err: &TraceError) -> bool {
    matches!(err, TraceError::Other(e) if e.is::<Unavailable>())
}

/// A batch span processor whose queue is bounded here, where a drop can be counted, rather
/// than inside the SDK, where it only becomes an error message.
///
/// Pairs with a [`Counted`] exporter sharing its `queued` count: a span holds a slot from
/// `on_end` until the processor hands it to the exporter. Give the inner processor a queue
/// at least `capacity` long, so it never drops anything itself.
#[derive(Debug)]
pub struct Bounded<P> {
    inner: P,
    queued: Arc<AtomicUsize>,
    capacity: usize,
}

impl<P: SpanProcessor> Bounded<P> {
    /// Wraps `inner`, sharing `queued` with the [`Counted`] exporter behind it.
    pub fn new(inner: P, queued: Arc<AtomicUsize>, capacity: usize) -> Self {
        Bounded {
            inner,
            queued,
            capacity,
        }
    }
}

impl<P: SpanProcessor> SpanProcessor for Bounded<P> {
    fn on_start(&self, span: &mut Span, cx: &Context) {
        self.inner.on_start(span, cx);
    }

    fn on_end(&self, span: SpanData) {
        // The batch processor ignores these too; they must not take a slot.
        if !span.span_context.is_sampled() {
            return;
        }
        let capacity = self.capacity;
        let reserved = self
            .queued
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < capacity).then_some(n + 1)
            });
        if reserved.is_err() {
            count_dropped(DropReason::QueueFull, 1);
            return;
        }
        self.inner.on_end(span);
    }

    fn force_flush(&self) -> TraceResult<()> {
        self.inner.force_flush()
    }

    fn shutdown(&mut self) -> TraceResult<()> {
        self.inner.shutdown()
    }
}

/// Counts what its exporter fails to deliver, and frees [`Bounded`] queue slots.
#[derive(Debug)]
pub struct Counted<E> {
    inner: E,
    queued: Arc<AtomicUsize>,
}

impl<E: SpanExporter> Counted<E> {
    /// Wraps `inner`, sharing `queued` with the [`Bounded`] processor in front of it.
    pub fn new(inner: E, queued: Arc<AtomicUsize>) -> Self {
        Counted { inner, queued }
    }
}

/// Counts a batch as failed unless [`Outcome::settle`] says otherwise before it is dropped:
/// the batch processor abandons (drops) an export future that times out.
struct Outcome {
    spans: usize,
    reason: Option<DropReason>,
}

impl Outcome {
    fn settle(&mut self, result: &ExportResult) {
        self.reason = match result {
            Ok(()) => None,
            Err(e) if is_unavailable(e) => Some(DropReason::ExporterUnavailable),
            Err(_) => Some(DropReason::ExportFailed),
        };
    }
}

impl Drop for Outcome {
    fn drop(&mut self) {
        if let Some(reason) = self.reason {
            FAILED_EXPORTS.fetch_add(1, Ordering::Relaxed);
            count_dropped(reason, self.spans);
        }
    }
}

impl<E: SpanExporter> SpanExporter for Counted<E> {
    fn export(&mut self, batch: Vec<SpanData>) -> BoxFuture<'static, ExportResult> {
        let spans = batch.len();
        // Saturating: spans exported at shutdown may not have come through `Bounded`.
        let _ = self
            .queued
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                Some(n.saturating_sub(spans))
            });
        let mut outcome = Outcome {
            spans,
            reason: Some(DropReason::ExportFailed),
        };
        let export = self.inner.export(batch);
        Box::pin(async move {
            let result = export.await;
            outcome.settle(&result);
            result
        })
    }

    fn shutdown(&mut self) {
        self.inner.shutdown();
    }

    fn force_flush(&mut self) -> BoxFuture<'static, ExportResult> {
        self.inner.force_flush()
    }
}

/// Cuts every string value in the spans to `limit` bytes before `inner` sees them.
#[derive(Debug)]
pub struct Clipped<E> {
    inner: E,
    limit: usize,
}

impl<E: SpanExporter> Clipped<E> {
    /// Wraps `inner`; `limit` is usually [`crate::clip::value_limit`].
    pub fn new(inner: E, limit: usize) -> Self {
        Clipped { inner, limit }
    }
}

impl<E: SpanExporter> SpanExporter for Clipped<E> {
    fn export(&mut self, mut batch: Vec<SpanData>) -> BoxFuture<'static, ExportResult> {
        for span in &mut batch {
            clip_span(span, self.limit);
        }
        self.inner.export(batch)
    }

    fn shutdown(&mut self) {
        self.inner.shutdown();
    }

    fn force_flush(&mut self) -> BoxFuture<'static, ExportResult> {
        self.inner.force_flush()
    }
}

/// Cuts the string values of one span, allocating only for values over `limit`.
pub fn clip_span(span: &mut SpanData, limit: usize) {
    clip_cow(&mut span.name, limit);
    clip_attributes(&mut span.attributes, limit);
    for event in span.events.events.iter_mut() {
        clip_cow(&mut event.name, limit);
        clip_attributes(&mut event.attributes, limit);
    }
    for link in span.links.links.iter_mut() {
        clip_attributes(&mut link.attributes, limit);
    }
    if let Status::Error { description } = &mut span.status {
        clip_cow(description, limit);
    }
}

fn clip_cow(s: &mut Cow<'static, str>, limit: usize) {
    if s.len() > limit {
        *s = Cow::Owned(clip_to(s, limit).to_string());
    }
}

fn clip_attributes(attributes: &mut [KeyValue], limit: usize) {
    for kv in attributes {
        match &mut kv.value {
            Value::String(s) => clip_string(s, limit),
            Value::Array(Array::String(items)) => {
                for s in items {
                    clip_string(s, limit);
                }
            }
            _ => {}
        }
    }
}

fn clip_string(s: &mut StringValue, limit: usize) {
    if s.as_str().len() > limit {
        *s = StringValue::from(clip_to(s.as_str(), limit).to_string());
    }
}

/// Builds an exporter; [`Lazy`] calls it until it succeeds.
pub trait Connect: Send + Sync + fmt::Debug + 'static {
    /// What gets built.
    type Exporter: SpanExporter + 'static;
    /// One attempt; the error says why, for the log.
    fn connect(&self) -> BoxFuture<'static, Result<Self::Exporter, String>>;
}

/// An exporter built on first use, retried at most every `retry` while it cannot be built;
/// batches that arrive meanwhile are refused with [`Unavailable`] (and counted by [`Counted`]).
#[derive(Debug)]
pub struct Lazy<C: Connect> {
    shared: Arc<LazyShared<C>>,
}

#[derive(Debug)]
struct LazyShared<C: Connect> {
    connect: C,
    retry: Duration,
    state: tokio::sync::Mutex<LazyState<C::Exporter>>,
}

#[derive(Debug)]
struct LazyState<E> {
    exporter: Option<E>,
    next_try: Option<tokio::time::Instant>,
    warned: bool,
}

impl<C: Connect> Lazy<C> {
    /// Nothing is attempted until [`Lazy::start`] or the first export.
    pub fn new(connect: C, retry: Duration) -> Self {
        Lazy {
            shared: Arc::new(LazyShared {
                connect,
                retry,
                state: tokio::sync::Mutex::new(LazyState {
                    exporter: None,
                    next_try: None,
                    warned: false,
                }),
            }),
        }
    }

    /// Makes the first attempt now, in the background, so a bad endpoint is reported at
    /// start-up rather than with the first batch. Outside a tokio runtime it does nothing.
    pub fn start(&self) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let shared = self.shared.clone();
        runtime.spawn(async move {
            let mut state = shared.state.lock().await;
            shared.ready(&mut state).await;
        });
    }
}

impl<C: Connect> LazyShared<C> {
    /// Whether the inner exporter exists, building it if it is time to try again.
    async fn ready(&self, state: &mut LazyState<C::Exporter>) -> bool {
        if state.exporter.is_some() {
            return true;
        }
        let now = tokio::time::Instant::now();
        if state.next_try.is_some_and(|t| now < t) {
            return false;
        }
        match self.connect.connect().await {
            Ok(exporter) => {
                if state.warned {
                    tracing::info!(exporter = ?self.connect, "span exporter connected");
                }
                state.exporter = Some(exporter);
                true
            }
            Err(why) => {
                state.next_try = Some(now + self.retry);
                if !state.warned {
                    state.warned = true;
                    tracing::warn!(
                        exporter = ?self.connect,
                        retry_every = ?self.retry,
                        "span exporter not available, spans are dropped until it is: {why}"
                    );
                }
                false
            }
        }
    }
}

impl<C: Connect> SpanExporter for Lazy<C> {
    fn export(&mut self, batch: Vec<SpanData>) -> BoxFuture<'static, ExportResult> {
        let shared = self.shared.clone();
        Box::pin(async move {
            let mut state = shared.state.lock().await;
            if !shared.ready(&mut state).await {
                return Err(TraceError::Other(Box::new(Unavailable)));
            }
            let export = match state.exporter.as_mut() {
                Some(exporter) => exporter.export(batch),
                None => return Err(TraceError::Other(Box::new(Unavailable))),
            };
            drop(state);
            export.await
        })
    }

    fn shutdown(&mut self) {
        if let Ok(mut state) = self.shared.state.try_lock() {
            if let Some(exporter) = state.exporter.as_mut() {
                exporter.shutdown();
            }
        }
    }
}

/// The Jaeger agent exporter of opentelemetry-jaeger, for `host:port` resolved without
/// blocking (the crate itself resolves synchronously, once, and fails if that fails).
#[derive(Debug)]
pub struct JaegerAgent {
    /// `host:port` of the agent.
    pub endpoint: String,
    /// `service.name` of the process.
    pub service_name: String,
}

// The user asked for the agent protocol; OTLP is offered too.
#[allow(deprecated)]
impl Connect for JaegerAgent {
    type Exporter = opentelemetry_jaeger::Exporter;

    fn connect(&self) -> BoxFuture<'static, Result<Self::Exporter, String>> {
        let endpoint = self.endpoint.clone();
        let service_name = self.service_name.clone();
        Box::pin(async move {
            let addr: SocketAddr = tokio::net::lookup_host(&endpoint)
                .await
                .map_err(|e| format!("cannot resolve {endpoint}: {e}"))?
                .next()
                .ok_or_else(|| format!("{endpoint} resolves to no address"))?;
            // The synchronous uploader: the async one registers a blocking std socket with
            // tokio, which current tokio refuses (a panic at start-up). A UDP send to the
            // agent never blocks for long, and it runs on the batch task, not on requests.
            opentelemetry_jaeger::new_agent_pipeline()
                .with_endpoint(addr.to_string())
                .with_service_name(service_name)
                .with_auto_split_batch(true)
                // `otel.library.name` would repeat the service name on every span, and
                // each tag costs ~2,000 instructions in this exporter's encoder.
                .with_instrumentation_library_tags(false)
                .build_sync_agent_exporter()
                .map_err(|e| format!("Jaeger agent exporter to {endpoint} ({addr}): {e}"))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::trace::{
        Event, SpanContext, SpanId, SpanKind, TraceFlags, TraceId, TraceState,
    };
    use opentelemetry_sdk::testing::trace::InMemorySpanExporter;
    use opentelemetry_sdk::trace::{SpanEvents, SpanLinks};
    use std::sync::atomic::AtomicBool;
    use std::time::SystemTime;

    fn span(name: &str, attributes: Vec<KeyValue>) -> SpanData {
        SpanData {
            span_context: SpanContext::new(
                TraceId::from_u128(1),
                SpanId::from_u64(1),
                TraceFlags::SAMPLED,
                false,
                TraceState::default(),
            ),
            parent_span_id: SpanId::INVALID,
            span_kind: SpanKind::Internal,
            name: name.to_string().into(),
            start_time: SystemTime::UNIX_EPOCH,
            end_time: SystemTime::UNIX_EPOCH,
            attributes,
            dropped_attributes_count: 0,
            events: SpanEvents::default(),
            links: SpanLinks::default(),
            status: Status::Unset,
            resource: Cow::Owned(opentelemetry_sdk::Resource::empty()),
            instrumentation_lib: Default::default(),
        }
    }

    #[test]
    fn every_string_value_is_clipped_and_nothing_else_changes() {
        let mut s = span(
            &"n".repeat(10),
            vec![
                KeyValue::new("long", "é".repeat(10)),
                KeyValue::new("short", "ok"),
                KeyValue::new("number", 123_456_789_i64),
                KeyValue::new(
                    "list",
                    Value::Array(Array::String(vec!["abcdefgh".into(), "ab".into()])),
                ),
            ],
        );
        s.events.events.push(Event::new(
            "e".repeat(10),
            SystemTime::UNIX_EPOCH,
            vec![KeyValue::new("exception.message", "m".repeat(10))],
            0,
        ));
        s.status = Status::error("d".repeat(10));
        clip_span(&mut s, 5);
        assert_eq!(s.name, "nnnnn");
        // 'é' is two bytes: five bytes hold two of them.
        assert_eq!(s.attributes[0].value.as_str(), "éé");
        assert_eq!(s.attributes[1].value.as_str(), "ok");
        assert_eq!(s.attributes[2].value, Value::I64(123_456_789));
        assert_eq!(
            s.attributes[3].value,
            Value::Array(Array::String(vec!["abcde".into(), "ab".into()]))
        );
        assert_eq!(s.events.events[0].name, "eeeee");
        assert_eq!(s.events.events[0].attributes[0].value.as_str(), "mmmmm");
        assert_eq!(s.status, Status::error("ddddd"));
    }

    /// Succeeds once `up` is set, counting attempts.
    #[derive(Debug, Clone, Default)]
    struct Flaky {
        up: Arc<AtomicBool>,
        attempts: Arc<AtomicUsize>,
        exporter: InMemorySpanExporter,
    }

    impl Connect for Flaky {
        type Exporter = InMemorySpanExporter;
        fn connect(&self) -> BoxFuture<'static, Result<InMemorySpanExporter, String>> {
            self.attempts.fetch_add(1, Ordering::SeqCst);
            let result = if self.up.load(Ordering::SeqCst) {
                Ok(self.exporter.clone())
            } else {
                Err("not yet".to_string())
            };
            Box::pin(async move { result })
        }
    }

    #[tokio::test]
    async fn lazy_exporter_retries_no_more_often_than_asked_and_then_delivers() {
        // Real time (tokio's clock control needs a feature that rebuilds half the tree); long
        // enough that the second export below lands inside it on a loaded machine.
        let retry = Duration::from_secs(2);
        let flaky = Flaky::default();
        let queued = Arc::new(AtomicUsize::new(0));
        let mut exporter = Counted::new(Lazy::new(flaky.clone(), retry), queued);
        let unavailable = || dropped_spans(DropReason::ExporterUnavailable);
        let before = unavailable();

        let err = exporter.export(vec![span("a", vec![])]).await.unwrap_err();
        assert!(is_unavailable(&err), "{err}");
        assert_eq!(flaky.attempts.load(Ordering::SeqCst), 1);
        // Within the retry interval nothing is attempted, even once the agent is up.
        flaky.up.store(true, Ordering::SeqCst);
        assert!(exporter
            .export(vec![span("b", vec![]), span("c", vec![])])
            .await
            .is_err());
        assert_eq!(flaky.attempts.load(Ordering::SeqCst), 1);
        // Other tests in this process may count too, hence at least.
        assert!(unavailable() >= before + 3);

        tokio::time::sleep(retry).await;
        exporter.export(vec![span("d", vec![])]).await.unwrap();
        assert_eq!(flaky.attempts.load(Ordering::SeqCst), 2);
        exporter.export(vec![span("e", vec![])]).await.unwrap();
        // Built once, then reused.
        assert_eq!(flaky.attempts.load(Ordering::SeqCst), 2);
        let names: Vec<String> = flaky
            .exporter
            .get_finished_spans()
            .unwrap()
            .into_iter()
            .map(|s| s.name.into_owned())
            .collect();
        assert_eq!(names, ["d", "e"]);
    }

    /// An exporter that always fails.
    #[derive(Debug)]
    struct Broken;

    impl SpanExporter for Broken {
        fn export(&mut self, _: Vec<SpanData>) -> BoxFuture<'static, ExportResult> {
            Box::pin(async { Err(TraceError::from("collector down")) })
        }
    }

    /// An exporter that never finishes, as with a collector that accepts and never answers.
    #[derive(Debug)]
    struct Hung;

    impl SpanExporter for Hung {
        fn export(&mut self, _: Vec<SpanData>) -> BoxFuture<'static, ExportResult> {
            Box::pin(std::future::pending())
        }
    }

    #[tokio::test]
    async fn failed_and_abandoned_batches_are_counted_with_their_spans() {
        let failed = || dropped_spans(DropReason::ExportFailed);
        let (spans_before, batches_before) = (failed(), failed_exports());
        let queued = Arc::new(AtomicUsize::new(0));
        let mut broken = Counted::new(Broken, queued.clone());
        assert!(broken
            .export(vec![span("a", vec![]), span("b", vec![])])
            .await
            .is_err());
        let mut hung = Counted::new(Hung, queued);
        let abandoned = hung.export(vec![span("c", vec![])]);
        // What the batch processor does when its export timeout fires.
        drop(abandoned);
        assert!(failed() >= spans_before + 3);
        assert!(failed_exports() >= batches_before + 2);
    }

    /// Records what reaches it.
    #[derive(Debug, Default, Clone)]
    struct Sink(Arc<Mutex<Vec<String>>>);

    impl SpanProcessor for Sink {
        fn on_start(&self, _: &mut Span, _: &Context) {}
        fn on_end(&self, span: SpanData) {
            self.0.lock().unwrap().push(span.name.into_owned());
        }
        fn force_flush(&self) -> TraceResult<()> {
            Ok(())
        }
        fn shutdown(&mut self) -> TraceResult<()> {
            Ok(())
        }
    }

    #[tokio::test]
    async fn a_full_queue_drops_and_counts_and_exports_free_slots() {
        let full = || dropped_spans(DropReason::QueueFull);
        let before = full();
        let sink = Sink::default();
        let queued = Arc::new(AtomicUsize::new(0));
        let processor = Bounded::new(sink.clone(), queued.clone(), 2);
        for name in ["a", "b", "c"] {
            processor.on_end(span(name, vec![]));
        }
        assert_eq!(*sink.0.lock().unwrap(), ["a", "b"]);
        assert!(full() > before);
        // The exporter taking a batch frees its slots.
        let mut exporter = Counted::new(InMemorySpanExporter::default(), queued.clone());
        exporter
            .export(vec![span("a", vec![]), span("b", vec![])])
            .await
            .unwrap();
        assert_eq!(queued.load(Ordering::SeqCst), 0);
        processor.on_end(span("d", vec![]));
        assert_eq!(*sink.0.lock().unwrap(), ["a", "b", "d"]);
    }
}
