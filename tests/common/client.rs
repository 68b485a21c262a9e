//! `mnist-api predict`, the command-line client, run against a test server.

use std::path::Path;
use std::process::{Command, Output, Stdio};

use super::commands::MNIST_API;
use super::fixtures::{PASSWORD, USER};

/// `mnist-api predict --server URL`, exporting no spans and ignoring the `MNIST_API_*`
/// settings of whoever runs the tests; add inputs and flags with `.arg()`.
pub fn predict_command(server: &str) -> Command {
    let mut cmd = Command::new(MNIST_API);
    cmd.args(["predict", "--server", server])
        .env("OTEL_TRACES_EXPORTER", "none")
        .env_remove("RUST_LOG")
        .env_remove("JAEGER_UI_URL")
        .stdin(Stdio::null());
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("MNIST_API_") {
            cmd.env_remove(key);
        }
    }
    cmd
}

/// [`predict_command`] logged in as [`USER`], the password in the environment.
pub fn predict_as_user(server: &str) -> Command {
    let mut cmd = predict_command(server);
    cmd.args(["--user", USER])
        .env("MNIST_API_PASSWORD", PASSWORD);
    cmd
}

/// What a client run printed and how it ended.
#[derive(Debug)]
pub struct ClientRun {
    /// The exit code (`None`: killed by a signal).
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl ClientRun {
    /// Runs `cmd` to completion.
    pub fn of(cmd: &mut Command) -> Self {
        Self::from(cmd.output().unwrap())
    }

    /// The `file<TAB>digit<TAB>probability` lines, as (file, digit).
    pub fn answers(&self) -> Vec<(String, u8)> {
        self.stdout
            .lines()
            .map(|l| {
                let fields: Vec<&str> = l.split('\t').collect();
                assert_eq!(fields.len(), 3, "{l:?} in {self:#?}");
                let p: f32 = fields[2].parse().unwrap();
                assert!((0.0..=1.0).contains(&p), "{l:?}");
                (fields[0].to_string(), fields[1].parse().unwrap())
            })
            .collect()
    }

    /// The `--json` lines.
    pub fn json_lines(&self) -> Vec<serde_json::Value> {
        self.stdout
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}")))
            .collect()
    }

    /// The trace id printed on stderr, if any.
    pub fn trace_id(&self) -> Option<String> {
        self.stderr
            .lines()
            .find_map(|l| l.strip_prefix("trace: "))
            .map(|t| t.rsplit('/').next().unwrap().to_string())
    }

    /// Asserts the exit code, and that the client failed the way a program should: a
    /// sentence, no panic, no backtrace.
    pub fn assert_exit(&self, code: i32) -> &Self {
        assert_eq!(self.code, Some(code), "{self:#?}");
        assert!(
            !self.stderr.contains("panicked") && !self.stderr.contains("Backtrace"),
            "{self:#?}"
        );
        self
    }
}

impl From<Output> for ClientRun {
    fn from(o: Output) -> Self {
        Self {
            code: o.status.code(),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

/// `path` as the client prints it.
pub fn shown(path: &Path) -> String {
    path.display().to_string()
}
