//! Bounds on client-supplied strings before they reach logs and span attributes.
//!
//! A 300 KB User-Agent written into every log line and span turns a few requests into megabytes
//! of log and, on the Jaeger agent path, a UDP datagram too big to send, which drops the whole
//! batch with it. Everything a client controls is cut to one limit first.

use std::sync::OnceLock;

/// Bytes kept of a client-supplied value when `OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT` is unset.
pub const DEFAULT_VALUE_LIMIT: usize = 256;

/// The limit: `OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT` (the OpenTelemetry SDKs' own variable), else
/// [`DEFAULT_VALUE_LIMIT`]. Read once per process.
pub fn value_limit() -> usize {
    static LIMIT: OnceLock<usize> = OnceLock::new();
    *LIMIT.get_or_init(|| {
        std::env::var("OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT")
            .ok()
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(DEFAULT_VALUE_LIMIT)
    })
}

/// `s` cut to at most [`value_limit`] bytes, on a character boundary.
pub fn clip(s: &str) -> &str {
    clip_to(s, value_limit())
}

/// `s` cut to at most `max` bytes, on a character boundary.
pub fn clip_to(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cuts_on_char_boundaries() {
        assert_eq!(clip_to("abc", 5), "abc");
        assert_eq!(clip_to("abcdef", 3), "abc");
        // 'é' is two bytes: cutting inside it backs off to before it.
        assert_eq!(clip_to("aé", 2), "a");
        assert_eq!(clip_to("", 0), "");
    }
}
