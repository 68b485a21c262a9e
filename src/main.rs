//! `mnist-api`: the HTTP server (and its users subcommand). Only wiring lives here.

use clap::Parser;
use mnist_api::config::{Cli, Command, ServeArgs};
use mnist_api::startup::Application;
use mnist_api::{telemetry, user_admin};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let Some(Command::User { action }) = &cli.command {
        return user_admin::run(action, &cli.serve.users);
    }
    let exporters = telemetry::parse_exporters(&cli.serve.traces_exporter)?;
    let _telemetry = telemetry::init(&exporters)?;
    let app = Application::build(&cli.serve, ServeArgs::secret_from_env()).await?;
    tracing::info!(address = %app.local_addr(), "listening");
    app.run_until(shutdown_signal()).await;
    tracing::info!("stopped");
    Ok(())
}

/// Resolves on Ctrl-C or SIGTERM (what `docker stop` and Kubernetes send).
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}
