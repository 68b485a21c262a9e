//! Tracing, end to end: span trees in memory, and the real binary's spans on the wire (Jaeger
//! agent over UDP, OTLP over gRPC), propagation of the caller's trace (the `predict` client's
//! included), and collector outages.

mod client;
#[path = "../common/mod.rs"]
mod common;
mod helpers;
mod in_memory;
mod jaeger_wire;
mod otlp_wire;
mod outage;
