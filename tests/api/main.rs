//! Black-box tests: the real server on 127.0.0.1:0, spoken to over HTTP.

#[path = "../common/mod.rs"]
mod common;
mod docs;
mod errors;
mod health;
mod login;
mod metrics;
mod predict;
mod shutdown;
