//! `fleetban-agent`: the command line of fleetban's per-host agent.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use fleetban_agent::config::AgentConfig;
use fleetban_agent::control::{self, Request};
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
    /// Ban an address or prefix by hand, through the running agent (works
    /// without a server; reported to it when there is one).
    Ban {
        /// IP address or CIDR prefix.
        target: String,
        /// How long: 600, 10m, 1h, 2d, or `forever`.
        #[arg(long = "for", value_name = "DURATION", default_value = "1h")]
        duration: String,
        /// Why, kept with the ban.
        #[arg(long, default_value = "")]
        reason: String,
        /// Ban only these ports: 22, ssh, http,https, 8000:8100 (default:
        /// all traffic).
        #[arg(long, value_name = "PORTS")]
        port: Option<String>,
        /// The protocol of --port: tcp (default), udp or all.
        #[arg(long, value_name = "PROTOCOL")]
        protocol: Option<String>,
        #[command(flatten)]
        socket: SocketArgs,
    },
    /// Lift this agent's ban of an address or prefix (reported to the
    /// server, which revokes the decisions it made of it).
    Unban {
        /// IP address or CIDR prefix, as banned.
        target: String,
        #[command(flatten)]
        socket: SocketArgs,
    },
    /// What the firewall enforces, or remove it all.
    Firewall {
        #[command(subcommand)]
        command: FirewallCommand,
    },
}

#[derive(Subcommand)]
enum FirewallCommand {
    /// What is enforced, how the kernel compares (drift), and the bans.
    Status {
        /// One JSON object.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        socket: SocketArgs,
    },
    /// Remove everything fleetban added to the firewall and forget every
    /// ban (the fleet's come back from the server). Without a running
    /// agent, removes fleetban's table/sets/chain directly.
    Flush {
        #[command(flatten)]
        socket: SocketArgs,
    },
}

/// Where the running agent listens.
#[derive(clap::Args)]
struct SocketArgs {
    /// The agent's configuration (for its control socket and firewall).
    #[arg(long, value_name = "FILE", default_value = "/etc/fleetban/agent.toml")]
    config: PathBuf,
    /// The control socket, instead of the one the configuration names.
    #[arg(long, value_name = "PATH")]
    socket: Option<PathBuf>,
}

impl SocketArgs {
    /// The socket path, and the configuration when it was read.
    fn resolve(&self) -> Result<(PathBuf, Option<AgentConfig>), Box<dyn std::error::Error>> {
        match &self.socket {
            Some(p) => Ok((p.clone(), AgentConfig::load(&self.config).ok())),
            None => {
                let c = AgentConfig::load(&self.config)?;
                Ok((c.control_socket.clone(), Some(c)))
            }
        }
    }
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
        Command::Ban {
            target,
            duration,
            reason,
            port,
            protocol,
            socket,
        } => finish(client(
            ban_request(&target, &duration, reason, port, protocol),
            &socket,
            false,
        )),
        Command::Unban { target, socket } => finish(
            fleetban_proto::parse_target(&target)
                .map_err(|e| e.into())
                .and_then(|_| client(Ok(Request::Unban { target }), &socket, false)),
        ),
        Command::Firewall {
            command: FirewallCommand::Status { json, socket },
        } => finish(status(&socket, json)),
        Command::Firewall {
            command: FirewallCommand::Flush { socket },
        } => finish(flush(&socket)),
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

type CliResult = Result<(), Box<dyn std::error::Error>>;

fn finish(r: CliResult) -> ExitCode {
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(e.as_ref()),
    }
}

fn ban_request(
    target: &str,
    duration: &str,
    reason: String,
    port: Option<String>,
    protocol: Option<String>,
) -> Result<Request, Box<dyn std::error::Error>> {
    fleetban_proto::parse_target(target)?;
    match (&port, &protocol) {
        (None, Some(_)) => return Err("--protocol needs --port (the ports to ban)".into()),
        (Some(p), _) => {
            fleetban_agent::services::jail_scope(p, protocol.as_deref())
                .map_err(|e| format!("--port {p:?}: {e}"))?;
        }
        (None, None) => {}
    }
    let for_s = match duration.trim() {
        "forever" | "permanent" => None,
        d => {
            let d = fleetban_agent::config::duration(d)?;
            if d.is_zero() {
                return Err("--for must be longer than 0 s".into());
            }
            Some(d.as_secs().max(1))
        }
    };
    let ssh_client = ["SSH_CONNECTION", "SSH_CLIENT"].iter().find_map(|v| {
        std::env::var(v)
            .ok()
            .as_deref()
            .and_then(fleetban_agent::guard::ssh_client)
            .map(|ip| ip.to_string())
    });
    Ok(Request::Ban {
        target: target.to_owned(),
        for_s,
        reason,
        ssh_client,
        port,
        protocol,
    })
}

fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
}

/// Sends `req` to the running agent and prints its answer.
fn client(
    req: Result<Request, Box<dyn std::error::Error>>,
    socket: &SocketArgs,
    json: bool,
) -> CliResult {
    let req = req?;
    let (path, _) = socket.resolve()?;
    let answer = runtime()?.block_on(control::request(&path, &req))?;
    if !answer.ok {
        return Err(answer.message.into());
    }
    match answer.status {
        Some(status) if json => println!("{}", serde_json::to_string_pretty(&status)?),
        Some(status) => print_status(&status),
        None => println!("{}", answer.message),
    }
    Ok(())
}

/// The running agent's status; with no agent running, what the kernel
/// holds for fleetban, read directly.
fn status(socket: &SocketArgs, json: bool) -> CliResult {
    let (path, config) = socket.resolve()?;
    let rt = runtime()?;
    let err = match rt.block_on(control::request(&path, &Request::Status)) {
        Ok(a) if a.ok => {
            match a.status {
                Some(s) if json => println!("{}", serde_json::to_string_pretty(&s)?),
                Some(s) => print_status(&s),
                None => println!("{}", a.message),
            }
            return Ok(());
        }
        Ok(a) => return Err(a.message.into()),
        Err(e @ control::ControlError::Unreachable { .. }) => e,
        Err(e) => return Err(e.into()),
    };
    let Some(config) = config else {
        return Err(err.into());
    };
    if config.firewall.backend == fleetban_agent::config::FirewallBackend::Log {
        // A dry run holds nothing outside the agent.
        return Err(err.into());
    }
    let mut fw = fleetban_agent::firewall::from_config(&config.firewall);
    let read = rt.block_on(fw.read())?;
    const SHOWN: usize = 10_000;
    if json {
        let entries: Vec<serde_json::Value> = read
            .entries
            .iter()
            .take(SHOWN)
            .map(|(t, left)| serde_json::json!({"target": t.to_string(), "timeout_ms": left}))
            .collect();
        let ports: Vec<serde_json::Value> = read
            .ports
            .iter()
            .take(SHOWN)
            .map(|(k, left)| {
                serde_json::json!({
                    "target": k.target.to_string(),
                    "protocol": k.proto_name(),
                    "port": k.port,
                    "timeout_ms": left,
                })
            })
            .collect();
        let v = serde_json::json!({
            "agent_running": false,
            "backend": fw.name(),
            "intact": read.intact,
            "kernel": read.entries.len(),
            "kernel_ports": read.ports.len(),
            "entries": entries,
            "ports": ports,
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    println!("no running agent ({err})");
    println!(
        "backend: {}; the kernel holds {} entries; table and rules {}",
        fw.name(),
        read.entries.len(),
        if read.intact {
            "intact"
        } else if read.entries.is_empty() {
            "absent"
        } else {
            "NOT intact"
        }
    );
    for (t, left) in read.entries.iter().take(SHOWN) {
        match left {
            Some(ms) => println!("  {:<20} expires in {} s", t.to_string(), ms / 1_000),
            None => println!("  {:<20} no timeout", t.to_string()),
        }
    }
    if read.entries.len() > SHOWN {
        println!("  ... {} more", read.entries.len() - SHOWN);
    }
    if !read.ports.is_empty() {
        println!("port-scoped: {} elements", read.ports.len());
    }
    for (k, left) in read.ports.iter().take(SHOWN) {
        let what = format!("{} {}/{}", k.target, k.proto_name(), k.port);
        match left {
            Some(ms) => println!("  {what:<30} expires in {} s", ms / 1_000),
            None => println!("  {what:<30} no timeout"),
        }
    }
    Ok(())
}

fn flush(socket: &SocketArgs) -> CliResult {
    let (path, config) = socket.resolve()?;
    let rt = runtime()?;
    match rt.block_on(control::request(&path, &Request::Flush)) {
        Ok(a) if a.ok => {
            println!("{}", a.message);
            Ok(())
        }
        Ok(a) => Err(a.message.into()),
        Err(control::ControlError::Unreachable { .. }) => {
            // No agent: remove what fleetban added directly.
            let config = config
                .ok_or("no running agent, and no configuration to tell the firewall backend")?;
            let mut fw = fleetban_agent::firewall::from_config(&config.firewall);
            rt.block_on(fw.flush())?;
            println!(
                "no running agent; removed everything fleetban added to {}",
                fw.name()
            );
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}

fn print_status(s: &fleetban_agent::enforce::Status) {
    let counts = |d: &fleetban_agent::enforce::DriftCounts| {
        format!(
            "missing {}, extra {}, timeout {}, structure {}",
            d.missing, d.extra, d.timeout, d.structure
        )
    };
    println!(
        "backend: {}   fleet version: {}",
        s.backend, s.fleet_version
    );
    println!(
        "entries: {} to enforce, {} in the kernel; table and rules {}",
        s.desired,
        s.kernel.map_or("unreadable".into(), |k| k.to_string()),
        if s.intact { "intact" } else { "NOT intact" }
    );
    if s.desired_ports > 0 || s.kernel_ports.is_some_and(|k| k > 0) {
        println!(
            "port elements: {} to enforce, {} in the kernel",
            s.desired_ports,
            s.kernel_ports
                .map_or("unreadable".into(), |k| k.to_string()),
        );
    }
    if let Some(e) = &s.error {
        println!("error: {e}");
    }
    let none = fleetban_agent::enforce::DriftCounts::default();
    if s.drift_now == none {
        println!("drift now: none");
    } else {
        println!(
            "drift now: {} (repaired at the next read-back)",
            counts(&s.drift_now)
        );
    }
    println!("repaired since start: {}", counts(&s.drift_repaired));
    println!(
        "last read-back: {}",
        s.last_reconcile.as_deref().unwrap_or("not yet")
    );
    println!("bans: {}", s.bans_total);
    for b in &s.bans {
        println!(
            "  {:<20} until {:<25} {}{}{}{}",
            b.target,
            b.expires_at.as_deref().unwrap_or("unbanned"),
            b.origin,
            if b.ports.is_empty() {
                String::new()
            } else {
                format!(" ports={}", b.ports)
            },
            if b.jail.is_empty() {
                String::new()
            } else {
                format!(" jail={}", b.jail)
            },
            if b.reason.is_empty() {
                String::new()
            } else {
                format!(" reason={:?}", b.reason)
            },
        );
    }
    if s.bans.len() < s.bans_total {
        println!("  ... {} more", s.bans_total - s.bans.len());
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
