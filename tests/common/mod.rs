//! What every test crate shares: the server binary under test ([`Server`]), the requests the
//! tests make of it ([`Endpoint`]), the `predict` client run against it ([`ClientRun`]),
//! fixtures, the MNIST files, and running the binaries to completion. Included by each crate
//! with `mod common;` (or `#[path]` from a subdirectory).
//!
//! Set `TEST_LOG=1` to see the servers' logs.

// Each test crate uses its own part of the harness.
#![allow(dead_code, unused_imports)]

mod builder;
mod client;
mod commands;
mod endpoint;
mod fixtures;
mod in_process;
mod mnist;
mod server;

pub use builder::ServerBuilder;
pub use client::{predict_as_user, predict_command, shown, ClientRun};
pub use commands::{output_text, run, MNIST_API, TRAIN};
pub use endpoint::{error_of, Endpoint};
pub use fixtures::{digit, encode, png, weights_path, PASSWORD, SECRET, USER};
pub use in_process::InProcess;
pub use mnist::{digit_image, mnist_input, mnist_test};
pub use server::{spawn_app, Server};
