//! The binaries run to completion, as a person at a terminal would run them.

use std::io::Write;
use std::process::{Command, Output, Stdio};

pub const MNIST_API: &str = env!("CARGO_BIN_EXE_mnist-api");
pub const TRAIN: &str = env!("CARGO_BIN_EXE_train");

/// `bin args…` with `stdin` written to it, once it has exited.
pub fn run(bin: &str, args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(bin)
        .args(args)
        // No collector listens here: the default exporter would only log its failures.
        .env("OTEL_TRACES_EXPORTER", "none")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

/// Stdout then stderr, for assertions that do not care which one a message went to.
pub fn output_text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}
