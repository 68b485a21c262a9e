//! The server inside the test process, for the tests that read its spans from an in-memory
//! exporter: spans cannot be read back from another process's memory.

use std::ffi::OsString;
use std::ops::Deref;

use clap::Parser;
use mnist_api::auth::Secret;
use mnist_api::config::Cli;
use mnist_api::startup::Application;
use tempfile::TempDir;
use tokio::sync::oneshot;

use super::builder::ServerBuilder;
use super::endpoint::Endpoint;
use super::fixtures::SECRET;

/// A server task of this process, stopped on drop. Derefs to its [`Endpoint`].
pub struct InProcess {
    endpoint: Endpoint,
    _stop: oneshot::Sender<()>,
    _dir: TempDir,
}

impl ServerBuilder {
    /// Starts the server as a task of the test's runtime, with the same flags the binary
    /// would get.
    pub async fn start_in_process(self) -> InProcess {
        assert!(
            self.flags_only(),
            "environment and limits apply to a process of its own"
        );
        if std::env::var_os("TEST_LOG").is_some() {
            mnist_api::telemetry::install(None);
        }
        let dir = tempfile::tempdir().unwrap();
        let mut argv = vec![OsString::from("mnist-api")];
        argv.extend(self.flags(dir.path()));
        let cli = Cli::try_parse_from(argv).unwrap();
        let app = Application::build(&cli.serve, Some(Secret::new(SECRET.to_vec())))
            .await
            .unwrap();
        let endpoint = Endpoint::new(app.local_addr());
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(app.run_until(async {
            let _ = stopped.await;
        }));
        InProcess {
            endpoint,
            _stop: stop,
            _dir: dir,
        }
    }
}

impl Deref for InProcess {
    type Target = Endpoint;

    fn deref(&self) -> &Endpoint {
        &self.endpoint
    }
}
