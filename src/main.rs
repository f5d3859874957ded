//! The `kelp` binary: parse settings, start logging, run until SIGTERM.

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use kelp::config::{Config, ConfigError, ENV_LOG};

#[derive(Parser)]
#[command(name = "kelp", version, about = "Kafka protocol in front of SeaweedFS MQ")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve Kafka clients in front of an existing SeaweedFS (production mode).
    Serve(Config),
    /// Start a throw-away local SeaweedFS and serve Kafka in front of it.
    Dev(Config),
    /// Serve the Kubernetes admission webhook that injects kelp into pods which opt in.
    Webhook(kelp::config::WebhookConfig),
}

/// Exit code for bad configuration (EX_USAGE).
const EXIT_CONFIG: u8 = 64;

/// `kelp dev`: how long the local SeaweedFS processes may take to answer. A cold `weed`
/// needs 5-20 s before its broker configures topics; the rest is room for a slow machine.
const DEV_SEAWEEDFS_START: Duration = Duration::from_secs(90);

/// `kelp dev`: how long kelp's own client may then take to reach the broker and the filer.
const DEV_SEAWEEDFS_ANSWER: Duration = Duration::from_secs(60);

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) if e.use_stderr() => {
            let _ = e.print();
            return ExitCode::from(EXIT_CONFIG);
        }
        Err(e) => {
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env(ENV_LOG)
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    // Rules between settings, before `kelp dev` starts a SeaweedFS for nothing.
    if let Command::Serve(config) | Command::Dev(config) = &cli.command
        && let Err(e) = config.validate()
    {
        tracing::error!(error = %e, "bad configuration");
        return ExitCode::from(EXIT_CONFIG);
    }
    let runtime =
        tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
    let result = runtime.block_on(async {
        match cli.command {
            Command::Serve(config) => serve(config).await,
            Command::Dev(config) => dev(config).await,
            Command::Webhook(config) => kelp::webhook::run(config, kelp::shutdown::signal()).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // A setting found wrong once kelp looked further (e.g. an unreadable secret file).
        Err(e) if e.chain().any(|c| c.is::<ConfigError>()) => {
            tracing::error!(error = format!("{e:#}"), "bad configuration");
            ExitCode::from(EXIT_CONFIG)
        }
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "kelp stopped");
            ExitCode::FAILURE
        }
    }
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let running = kelp::start(config).await?;
    kelp::shutdown::signal().await;
    tracing::info!("shutting down");
    if !running.shutdown().await {
        tracing::warn!("grace period ended with connections still open");
    }
    Ok(())
}

async fn dev(mut config: Config) -> anyhow::Result<()> {
    let seaweedfs = kelp::embedded::SeaweedFs::start(DEV_SEAWEEDFS_START).await?;
    config.master = seaweedfs.addrs().master.clone();
    config.filer = Some(seaweedfs.addrs().filer.clone());
    tracing::info!(master = %config.master, filer = ?config.filer, "local SeaweedFS started");
    kelp::wait_for_seaweedfs(&config, DEV_SEAWEEDFS_ANSWER).await?;
    let result = serve(config).await;
    drop(seaweedfs);
    result
}
