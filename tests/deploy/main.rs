//! The deployment files (`Dockerfile`, `.dockerignore`, `docker-compose.yml`, `deploy/k8s/`)
//! checked offline against the code. Docker and a cluster are not available where the tests
//! run, so every variable, port and path those files name is compared with what the server
//! really reads, listens on and ships, and the server binary is started with each file's
//! environment to show that it comes up, answers `/health`, and passes the image's
//! HEALTHCHECK.

#[path = "../common/mod.rs"]
mod common;
mod compose;
mod dockerfile;
mod env;
mod helpers;
mod images;
mod k8s;
mod memory;
mod paths;
mod ports;
mod runtime;
mod secrets;
mod spans;
