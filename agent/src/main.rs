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
    /// Run a filter over a log, as fail2ban-regex does: each failure's line,
    /// host, time and user, then a summary (lines matched, ignored, missed).
    TestFilter {
        /// The log file to read.
        log: PathBuf,
        /// A filter file (`/etc/fail2ban/filter.d/sshd.conf`), a filter name
        /// (`sshd`, looked up in the filter directories), either with options
        /// (`sshd[mode=aggressive]`), or a regex with `<HOST>`.
        filter: String,
        /// An extra ignoreregex.
        ignoreregex: Option<String>,
        /// Print one JSON object per failure, then a summary object.
        #[arg(long)]
        json: bool,
        /// Directory of filters by name (repeatable); default /etc/fail2ban/filter.d.
        #[arg(long = "filter-dir", value_name = "DIR")]
        filter_dirs: Vec<PathBuf>,
        /// Zone of times without one in the log (default: the system's).
        #[arg(long, value_name = "ZONE")]
        timezone: Option<String>,
    },
    /// Enroll this agent with the server: exchange an enrollment token (from
    /// `fleetban-server token create`) for a client certificate, saved in the
    /// state dir with the server's CA.
    Enroll {
        /// The agent's configuration: its id and state dir (and the server
        /// URL, unless --server is given).
        #[arg(long, value_name = "FILE", default_value = "/etc/fleetban/agent.toml")]
        config: PathBuf,
        /// The server's gRPC URL, https://HOST:PORT (default: [server] url).
        #[arg(long, value_name = "URL")]
        server: Option<String>,
        /// The enrollment token.
        #[arg(
            long,
            value_name = "TOKEN",
            env = "FLEETBAN_ENROLL_TOKEN",
            hide_env_values = true
        )]
        token: String,
        /// SHA-256 fingerprint of the server's CA, if not taken from the
        /// token (both must agree when both are given).
        #[arg(long, value_name = "SHA256")]
        ca_fingerprint: Option<String>,
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
                let enrolled = match &c.server_url {
                    Some(u) if u.starts_with("https://") => {
                        match fleetban_agent::identity::Credential::load(&c.state_dir) {
                            Ok(_) => "; enrolled".to_owned(),
                            Err(e) => format!("; {e}"),
                        }
                    }
                    _ => String::new(),
                };
                println!(
                    "{}: ok ({} jails){enrolled}",
                    config.display(),
                    c.jails.len()
                );
                ExitCode::SUCCESS
            }
            Err(e) => fail(&e),
        },
        Command::Enroll {
            config,
            server,
            token,
            ca_fingerprint,
        } => {
            let config = match AgentConfig::load(&config) {
                Ok(c) => c,
                Err(e) => return fail(&e),
            };
            let Some(server_url) = server.or(config.server_url.clone()) else {
                eprintln!("fleetban-agent: no server: give --server https://HOST:PORT or set [server] url");
                return ExitCode::FAILURE;
            };
            let options = fleetban_agent::enroll::EnrollOptions {
                server_url,
                token,
                ca_fingerprint,
                agent_id: config.agent_id.clone(),
                hostname: hostname::get()
                    .map(|h| h.to_string_lossy().into_owned())
                    .unwrap_or_default(),
                state_dir: config.state_dir.clone(),
            };
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(r) => r,
                Err(e) => return fail(&e),
            };
            match runtime.block_on(fleetban_agent::enroll::enroll(&options)) {
                Ok(e) => {
                    println!(
                        "enrolled as agent {} (group {}); server CA sha256:{}; credential in {}",
                        e.agent_id,
                        if e.group.is_empty() {
                            "(none)"
                        } else {
                            &e.group
                        },
                        e.ca_fingerprint,
                        fleetban_agent::identity::dir(&options.state_dir).display()
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => fail(&e),
            }
        }
        Command::TestFilter {
            log,
            filter,
            ignoreregex,
            json,
            filter_dirs,
            timezone,
        } => {
            match test_filter(
                &log,
                &filter,
                ignoreregex.as_deref(),
                json,
                filter_dirs,
                timezone.as_deref(),
            ) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => fail(e.as_ref()),
            }
        }
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

fn test_filter(
    log: &std::path::Path,
    filter: &str,
    ignoreregex: Option<&str>,
    json: bool,
    mut dirs: Vec<PathBuf>,
    timezone: Option<&str>,
) -> Result<(), Box<dyn std::error::Error>> {
    use fleetban_agent::test_filter as tf;
    if dirs.is_empty() {
        dirs.push(PathBuf::from("/etc/fail2ban/filter.d"));
    }
    let zone = match timezone {
        Some(z) => fleetban_engine::date::Zone::parse(z)?,
        None => fleetban_agent::config::local_zone(),
    };
    let spec = tf::resolve(filter, &dirs)?;
    let def = tf::definition(&spec, ignoreregex)?;
    let mut compiled = fleetban_engine::Filter::new(&def, tf::options(&zone))?;
    let file = std::fs::File::open(log).map_err(|source| tf::TestFilterError::Log {
        path: log.to_owned(),
        source,
    })?;
    let mut reader = std::io::BufReader::with_capacity(1 << 20, file);
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let now = chrono::Utc::now().timestamp();
    let started = std::time::Instant::now();
    let summary = tf::run(&mut compiled, &zone, &mut reader, now, json, &mut out)
        .map_err(tf::TestFilterError::Output)?;
    if !json {
        use std::io::Write;
        match &spec {
            tf::FilterSpec::File { base, .. } => writeln!(out, "Filter: {}", base.display())?,
            tf::FilterSpec::Regex(r) => writeln!(out, "Filter: regex {r}")?,
        }
        tf::report(&compiled, &summary, &mut out)?;
        let secs = started.elapsed().as_secs_f64();
        writeln!(
            out,
            "Time: {:.3} s, {:.0} lines/s",
            secs,
            summary.lines as f64 / secs.max(1e-9)
        )?;
    }
    Ok(())
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
