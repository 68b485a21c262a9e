//! Black-box tests: the real server on 127.0.0.1:0, spoken to over HTTP.

mod docs;
mod errors;
mod health;
mod helpers;
mod login;
mod metrics;
mod predict;
mod shutdown;
