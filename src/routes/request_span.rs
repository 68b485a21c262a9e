//! One server span per HTTP request, named and attributed per the OpenTelemetry HTTP semantic
//! conventions, joined to the caller's trace (W3C `traceparent`), and echoed back to the caller
//! as `traceresponse` / `x-trace-id` so the trace can be found in Jaeger.

use std::convert::Infallible;
use std::net::SocketAddr;

use opentelemetry::propagation::Extractor;
use opentelemetry::trace::{SpanContext, TraceId};
use tracing::field::Empty;
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use warp::http::{HeaderMap, HeaderValue, Method};
use warp::reply::Response;
use warp::trace::Info;
use warp::Filter;

use crate::clip::clip;

struct Headers<'a>(&'a HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }
    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

/// Creates the server span for a request (used with `warp::trace`).
///
/// Method (extension methods are free text), path, host and user agent come from the client:
/// each is cut to the attribute value limit here, so neither the span nor the log lines that
/// carry its fields grow with what a client sends.
pub fn start(info: Info<'_>) -> Span {
    let method = clip(info.method().as_str());
    let path = clip(info.path());
    let host = clip(info.host().unwrap_or(""));
    let (server_address, server_port) = match host.rsplit_once(':') {
        // i64 because tracing-opentelemetry turns unsigned fields into strings.
        Some((h, p)) if p.parse::<u16>().is_ok() => (h, p.parse::<i64>().ok()),
        _ => (host, None),
    };
    let span = tracing::info_span!(
        "HTTP request",
        // Named by the route that matches (see `at`), or by the method alone in `finish`, so
        // unknown paths cannot blow up the number of distinct span names.
        otel.name = Empty,
        otel.kind = "server",
        otel.status_code = Empty,
        http.request.method = method,
        http.route = Empty,
        url.path = path,
        http.response.status_code = Empty,
        server.address = server_address,
        server.port = server_port,
        client.address = Empty,
        user_agent.original = info.user_agent().map(clip),
        error.type = Empty,
        trace_id = Empty,
    );
    let parent = opentelemetry::global::get_text_map_propagator(|p| {
        p.extract(&Headers(info.request_headers()))
    });
    span.set_parent(parent);
    // Recorded as a field so every log line inside the request carries it.
    let sc = crate::sampling::settle(&span);
    if sc.trace_id() != TraceId::INVALID {
        span.record("trace_id", TraceIds::of(&sc).trace_id());
    }
    span
}

/// A span context written out as W3C Trace Context has it. std's formatting of a `u128` in
/// hex costs more than everything else a request does with its trace ids, so the `hex` crate
/// writes them once into a fixed buffer.
struct TraceIds([u8; 55]);

impl TraceIds {
    fn of(sc: &SpanContext) -> Self {
        let mut b = *b"00-00000000000000000000000000000000-0000000000000000-00";
        // The slices have exactly twice the ids' byte lengths, so neither call can fail.
        let _ = hex::encode_to_slice(sc.trace_id().to_bytes(), &mut b[3..35]);
        let _ = hex::encode_to_slice(sc.span_id().to_bytes(), &mut b[36..52]);
        if sc.is_sampled() {
            b[54] = b'1';
        }
        Self(b)
    }

    /// `version-traceid-spanid-flags`, the `traceparent` / `traceresponse` value.
    fn header(&self) -> &str {
        std::str::from_utf8(&self.0).unwrap_or_default()
    }

    fn trace_id(&self) -> &str {
        &self.header()[3..35]
    }
}

/// Records the route a request matched on its span: `http.route` and the span name, as the
/// HTTP semantic conventions have them (`{method} {route}`).
pub fn at(template: &'static str) -> impl Filter<Extract = (), Error = Infallible> + Clone {
    warp::method()
        .map(move |method: Method| {
            let span = Span::current();
            span.record("http.route", template);
            span.record(
                "otel.name",
                format!("{} {template}", clip(method.as_str())).as_str(),
            );
        })
        .untuple_one()
}

/// Records the peer address on the request span (warp's trace `Info` does not carry it).
pub fn record_client() -> impl Filter<Extract = (), Error = Infallible> + Clone {
    crate::server::client_addr()
        .map(|addr: Option<SocketAddr>| {
            if let Some(a) = addr {
                Span::current().record("client.address", tracing::field::display(a.ip()));
            }
        })
        .untuple_one()
}

/// Records the status on the current request span (and its name, when no route matched) and
/// returns its trace id to the caller.
pub fn finish(mut res: Response, method: &Method, routed: bool) -> Response {
    let span = Span::current();
    if !routed {
        span.record("otel.name", clip(method.as_str()));
    }
    let status = res.status();
    span.record("http.response.status_code", status.as_u16() as i64);
    if status.is_server_error() {
        span.record("otel.status_code", "ERROR");
        // The rejection handler records the error's `code` (`overloaded`, `internal`...),
        // which says more than the status; the status is only the fallback.
        if !crate::telemetry::error_type_recorded(&span) {
            span.record("error.type", status.as_str());
        }
    }
    let sc = crate::sampling::span_context(&span);
    if sc.is_valid() {
        let ids = TraceIds::of(&sc);
        if let Ok(v) = HeaderValue::from_str(ids.header()) {
            res.headers_mut().insert("traceresponse", v);
        }
        if let Ok(v) = HeaderValue::from_str(ids.trace_id()) {
            res.headers_mut().insert("x-trace-id", v);
        }
    }
    res
}

#[cfg(test)]
mod tests {
    use opentelemetry::trace::{SpanId, TraceFlags, TraceState};

    use super::*;

    #[test]
    fn trace_ids_are_written_as_std_formats_them() {
        let trace = TraceId::from_hex("0af7651916cd43dd8448eb211c80319c").unwrap();
        let span = SpanId::from_hex("00f067aa0ba902b7").unwrap();
        for (flags, digit) in [(TraceFlags::SAMPLED, "01"), (TraceFlags::default(), "00")] {
            let sc = SpanContext::new(trace, span, flags, true, TraceState::default());
            let ids = TraceIds::of(&sc);
            assert_eq!(ids.header(), format!("00-{trace}-{span}-{digit}"));
            assert_eq!(ids.trace_id(), trace.to_string());
        }
    }
}
