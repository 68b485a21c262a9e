//! mnist-api: a small CNN trained on MNIST with candle and served over HTTP with warp.
//!
//! The library holds everything; `src/main.rs` (the server and the `predict` client) and
//! `train/main.rs` (the trainer) only wire these modules together.

pub mod atomic;
pub mod augment;
pub mod auth;
pub mod awake;
pub mod batch_norm;
pub mod batches;
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

/// mimalloc's `mi_option_purge_delay` (its position in v2's `mi_option_t`, which
/// libmimalloc-sys does not name).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Tells mimalloc (when the program runs on it) to keep freed memory instead of returning it
/// to the operating system. Training frees and reallocates the same megabytes of activations
/// every step; by default mimalloc purged them after 10 ms and the kernel zeroed the pages
/// again on the next touch, which cost a batch-norm, elastic run about 15 % of its epoch. Only
/// for a program whose peak is its working set: the server wants the opposite.
pub fn keep_freed_memory() {
    // SAFETY: sets one integer option; mimalloc reads options atomically.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_purge_delay_option_is_the_one_set() {
        // SAFETY: reads and sets integer options.
        unsafe {
            // v2 documents purge_delay's default as 10 ms; a wrong index reads another option.
            assert_eq!(libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY), 10);
            keep_freed_memory();
            assert_eq!(libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY), -1);
        }
    }
}
