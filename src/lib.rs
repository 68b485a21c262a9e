//! mnist-api: a small CNN trained on MNIST with candle and served over HTTP with warp.
//!
//! The library holds everything; `src/main.rs` (the server and the `predict` client) and
//! `train/main.rs` (the trainer) only wire these modules together.

pub mod atomic;
pub mod augment;
pub mod auth;
pub mod batch_norm;
pub mod client;
pub mod clip;
pub mod config;
pub mod console_spans;
pub mod conv;
pub mod data;
pub mod decode_pool;
pub mod ema;
pub mod error;
pub mod fold;
pub mod inference;
mod kernels;
pub mod linger;
pub mod login_throttle;
pub mod metrics;
pub mod model;
pub mod oip;
pub mod password_pool;
pub mod preprocess;
pub mod reload;
pub mod repository;
pub mod robustness;
pub mod routes;
pub mod sampling;
pub mod served;
pub mod server;
pub mod span_export;
pub mod startup;
pub mod telemetry;
pub mod tokens;
pub mod training;
pub mod upload;
pub mod user_admin;
pub mod users;
pub mod weights;
pub mod worker;

/// Returns memory freed by this thread to the operating system, when the program runs on
/// mimalloc (the binaries do; a no-op otherwise). Argon2 needs ~19 MiB per password check and
/// mimalloc would otherwise keep it resident for good.
pub fn release_freed_memory() {
    // SAFETY: mi_collect only walks and trims the calling thread's heap; it takes no pointers.
    unsafe { libmimalloc_sys::mi_collect(true) }
}
