//! `fleetban-agent`: the command line of fleetban's per-host agent.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use fleetban_agent::config::AgentConfig;
use tracing_subscriber::EnvFilter;

/// fleetban agent: follows logs, bans attackers locally at once, reports to
/// the fleetban server and enforces the fleet's block list.
#[derive(Parser)]
#[command(name = "fleetban-agent", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the agent.
    Run {
        /// TOML configuration file: [agent] id, [server] url, [firewall]
        /// backend/table and [[jail]] sections.
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Check a configuration file and exit: 0 if valid, 1 with the error.
    CheckConfig {
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
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
    match cli.command {
        Command::CheckConfig { config } => match AgentConfig::load(&config) {
            Ok(c) => {
                println!("{}: ok ({} jails)", config.display(), c.jails.len());
                ExitCode::SUCCESS
            }
            Err(e) => fail(&e),
        },
        Command::Run { config } => {
            let config = match AgentConfig::load(&config) {
                Ok(c) => c,
                Err(e) => return fail(&e),
            };
            let runtime = match tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
            {
                Ok(r) => r,
                Err(e) => return fail(&e),
            };
            let firewall = fleetban_agent::firewall::from_config(&config.firewall);
            match runtime.block_on(fleetban_agent::run(config, firewall, shutdown_signal())) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => fail(&e),
            }
        }
    }
}

fn fail(e: &dyn std::error::Error) -> ExitCode {
    let mut msg = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let s = c.to_string();
        if !msg.contains(&s) {
            msg.push_str(": ");
            msg.push_str(&s);
        }
        cur = c.source();
    }
    eprintln!("fleetban-agent: {msg}");
    ExitCode::FAILURE
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
