//! mnist-api: a small CNN trained on MNIST with candle and served over HTTP with warp.
//!
//! The library holds everything; `src/main.rs` (the server) and `train/main.rs` (the trainer)
//! only wire these modules together.

pub mod atomic;
pub mod auth;
pub mod clip;
pub mod config;
pub mod conv;
pub mod data;
pub mod decode_pool;
pub mod error;
pub mod inference;
pub mod login_throttle;
pub mod metrics;
pub mod model;
pub mod password_pool;
pub mod preprocess;
pub mod routes;
pub mod server;
pub mod span_export;
pub mod startup;
pub mod state;
pub mod telemetry;
pub mod training;
pub mod upload;
pub mod user_admin;
pub mod weights;

/// candle allocates a fresh buffer for every intermediate tensor; with glibc's allocator each
/// large one is a new mmap whose pages fault in one by one, which made ReLU's backward pass 10x
/// slower than its arithmetic. mimalloc reuses the memory.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Returns memory freed by this thread to the operating system. Argon2 needs ~19 MiB per
/// password check and mimalloc would otherwise keep it resident for good.
pub fn release_freed_memory() {
    // SAFETY: mi_collect only walks and trims the calling thread's heap; it takes no pointers.
    unsafe { libmimalloc_sys::mi_collect(true) }
}
