//! The `tokengate` command: `serve`, `check` and `demo`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand, ValueEnum};
use tokengate::Gateway;
use tokengate::config;

#[derive(Parser)]
#[command(
    name = "tokengate",
    version,
    about = "A reverse proxy that lets only well-authenticated requests through"
)]
struct Cli {
    /// Log format; the level comes from RUST_LOG (default: info).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Pretty)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Json,
    Pretty,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway.
    Serve(ConfigArg),
    /// Validate a config and every file it points at; exit 1 with the reason if it is bad.
    Check(ConfigArg),
    /// A self-contained demo on loopback: an echo upstream, a sample config, ready curl lines.
    Demo,
}

#[derive(Args)]
struct ConfigArg {
    /// The YAML config file.
    #[arg(long, env = "TOKENGATE_CONFIG")]
    config: PathBuf,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    let result = match cli.command {
        Command::Check(arg) => check(&arg.config),
        Command::Serve(arg) => serve(&arg.config),
        Command::Demo => runtime().and_then(|rt| {
            rt.block_on(async {
                ignore_sighup();
                tokengate::demo::run(shutdown_signal()).await
            })
            .context("demo failed")
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn check(path: &std::path::Path) -> anyhow::Result<()> {
    let config = config::load(path)?;
    config::check_referenced_files(&config)?;
    tokengate::auth::check_key_files(&config)?;
    tokengate::revocation::check_files(&config)?;
    if let Some(files) = &config.server.tls {
        tokengate::server::tls::load(files)?;
    }
    println!(
        "{}: OK ({} routes, {} upstreams, {} issuers)",
        path.display(),
        config.routes.len(),
        config.upstreams.len(),
        config.issuers.len()
    );
    Ok(())
}

fn serve(path: &std::path::Path) -> anyhow::Result<()> {
    let config = config::load(path)?;
    config::check_referenced_files(&config)?;
    tokengate::auth::check_key_files(&config)?;
    runtime()?.block_on(async {
        let gateway = Gateway::bind(config).await?;
        let _reloader = tokengate::reload::spawn(gateway.state().clone(), path.to_owned());
        gateway.run(shutdown_signal()).await?;
        anyhow::Ok(())
    })
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// SIGHUP must not end the process (its default): say that a restart applies config changes.
fn ignore_sighup() {
    #[cfg(unix)]
    if let Ok(mut hangup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        tokio::spawn(async move {
            while hangup.recv().await.is_some() {
                tracing::warn!(
                    "SIGHUP received: this version does not reload its config; restart to apply changes"
                );
            }
        });
    }
}

/// Completes on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutdown requested");
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().flatten_event(true).init(),
        LogFormat::Pretty => builder.init(),
    }
}
