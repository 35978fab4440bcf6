//! `fleetban-server`: the command line of fleetban's central server.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use fleetban_server::config::{Overrides, ServerConfig};
use fleetban_server::{store, Listeners};
use tokio::net::TcpListener;
use tracing_subscriber::EnvFilter;

/// fleetban server: correlates the fleet's detections and pushes block lists
/// to every agent.
#[derive(Parser)]
#[command(name = "fleetban-server", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server: the agents' gRPC endpoint and the HTTP endpoint
    /// (/healthz, /metrics).
    Serve {
        /// TOML configuration file (keys: data_dir, database_url, http_listen,
        /// grpc_listen). Flags win over the file.
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// Directory of the embedded SQLite database (default /var/lib/fleetban).
        #[arg(long, value_name = "DIR")]
        data_dir: Option<PathBuf>,
        /// Database URL: postgres://USER:PASSWORD@HOST:PORT/DB for a fleet, or
        /// sqlite://PATH. Default: the embedded SQLite in the data dir.
        #[arg(
            long,
            value_name = "URL",
            env = "FLEETBAN_DATABASE_URL",
            hide_env_values = true
        )]
        database_url: Option<String>,
        /// Address of the HTTP endpoint (default 127.0.0.1:8080).
        #[arg(long, value_name = "ADDR")]
        http_listen: Option<SocketAddr>,
        /// Address of the agents' gRPC endpoint (default 127.0.0.1:50051).
        #[arg(long, value_name = "ADDR")]
        grpc_listen: Option<SocketAddr>,
    },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_env("FLEETBAN_LOG").unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("fleetban-server: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(dispatch(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("fleetban-server: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn dispatch(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve {
            config,
            data_dir,
            database_url,
            http_listen,
            grpc_listen,
        } => {
            let overrides = Overrides {
                data_dir,
                database_url,
                http_listen,
                grpc_listen,
            };
            serve(ServerConfig::load(config.as_deref(), overrides)?).await
        }
    }
}

async fn serve(config: ServerConfig) -> anyhow::Result<()> {
    if config.is_embedded() {
        std::fs::create_dir_all(&config.data_dir)
            .with_context(|| format!("cannot create data dir {}", config.data_dir.display()))?;
    }
    let store = store::open(&config.database_url).await?;
    let http = TcpListener::bind(config.http_listen)
        .await
        .with_context(|| format!("cannot listen on {} (http)", config.http_listen))?;
    let grpc = TcpListener::bind(config.grpc_listen)
        .await
        .with_context(|| format!("cannot listen on {} (grpc)", config.grpc_listen))?;
    let (http_addr, grpc_addr) = (http.local_addr()?, grpc.local_addr()?);
    println!(
        "fleetban-server listening: http=http://{http_addr} grpc=http://{grpc_addr} database={}",
        store::redact(&config.database_url)
    );
    let options = fleetban_server::RunOptions {
        event_retention: config.event_retention,
        policy: config.policy,
        ..Default::default()
    };
    fleetban_server::run(store, Listeners { http, grpc }, options, shutdown_signal()).await?;
    Ok(())
}

/// Completes on SIGINT or SIGTERM.
async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
