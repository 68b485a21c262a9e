//! `mnist-api`: the HTTP server, its users subcommand and the `predict` client. Only wiring
//! lives here.

use clap::Parser;
use mnist_api::client::{self, PredictArgs};
use mnist_api::config::{Cli, Command, ServeArgs};
use mnist_api::startup::Application;
use mnist_api::{telemetry, user_admin};

/// candle allocates a fresh buffer for every intermediate tensor; with glibc's allocator each
/// large one is a new mmap whose pages fault in one by one, which made ReLU's backward pass 10x
/// slower than its arithmetic. mimalloc reuses the memory. Set here, not in the library, so
/// the choice stays with the program.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match &cli.command {
        Some(Command::User { action }) => return user_admin::run(action, &cli.serve.users),
        Some(Command::Predict(args)) => {
            let code = tokio::runtime::Runtime::new()?
                .block_on(predict(args))
                .unwrap_or_else(|e| {
                    // Tracing settings are flags too: a bad one is a usage error.
                    eprintln!("error: {e:#}");
                    2
                });
            // After the runtime and the telemetry guard are gone: the last spans are out.
            std::process::exit(code.into());
        }
        None => {}
    }
    // Each model worker runs its batch on one core: candle's intra-op threading costs more
    // than it gains on MNIST-sized matrices, and several workers already use the cores.
    // candle reads this variable on every matmul; it must be set before any thread starts.
    if std::env::var_os("RAYON_NUM_THREADS").is_none() {
        std::env::set_var("RAYON_NUM_THREADS", "1");
    }
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(serve(cli.serve))
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let exporters = telemetry::parse_exporters(&args.traces_exporter)?;
    let _telemetry = telemetry::init(&exporters, telemetry::SERVICE_NAME)?;
    let shutdown = shutdown_signal()?;
    let app = Application::build(&args, ServeArgs::secret_from_env()).await?;
    tracing::info!(address = %app.local_addr(), "listening");
    app.run_until(shutdown).await;
    tracing::info!("stopped");
    Ok(())
}

/// The client's run; the telemetry guard flushes its spans before the exit code returns.
async fn predict(args: &PredictArgs) -> anyhow::Result<u8> {
    let exporters = telemetry::parse_exporters(&args.traces_exporter)?;
    let _telemetry = telemetry::init(&exporters, client::SERVICE_NAME)?;
    Ok(client::run(args).await)
}

/// Resolves on Ctrl-C or SIGTERM (what `docker stop` and Kubernetes send). The handlers are
/// installed here, before the port opens: installed on first poll, a SIGTERM that came right
/// after start-up found none and killed the process instead of stopping it.
fn shutdown_signal() -> std::io::Result<impl std::future::Future<Output = ()>> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate())?;
        let mut interrupt = signal(SignalKind::interrupt())?;
        Ok(async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = interrupt.recv() => {}
            }
        })
    }
    #[cfg(not(unix))]
    Ok(async {
        let _ = tokio::signal::ctrl_c().await;
    })
}
