//! `fleetban-server`: the command line of fleetban's central server.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use fleetban_server::auth::{Accounts, AuthConfig, Role};
use fleetban_server::config::{Overrides, ServerConfig};
use fleetban_server::service::identity::{self as identity_service, Identities};
use fleetban_server::service::SystemClock;
use fleetban_server::{identity, store, GrpcTls, Listeners};
use std::sync::Arc;
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

/// Where the server's configuration and database are.
#[derive(clap::Args)]
struct Database {
    /// TOML configuration file (keys: data_dir, database_url, http_listen,
    /// grpc_listen, [policy], [tls]). Flags win over the file.
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
}

#[derive(Subcommand)]
enum Command {
    /// Run the server: the agents' gRPC endpoint and the HTTP endpoint
    /// (/healthz, /metrics).
    Serve {
        #[command(flatten)]
        db: Database,
        /// Address of the HTTP endpoint (default 127.0.0.1:8080).
        #[arg(long, value_name = "ADDR")]
        http_listen: Option<SocketAddr>,
        /// Address of the agents' gRPC endpoint (default 127.0.0.1:50051).
        #[arg(long, value_name = "ADDR")]
        grpc_listen: Option<SocketAddr>,
    },
    /// Enrollment tokens, which agents exchange for their certificate
    /// (fleetban-agent enroll).
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Enrolled agents.
    Agent {
        #[command(subcommand)]
        command: AgentCommand,
    },
    /// Manage the users of the REST API and console.
    User {
        #[command(subcommand)]
        command: UserCommand,
        #[command(flatten)]
        db: DbArgs,
    },
    /// Manage CrowdSec bouncer keys (X-Api-Key of /v1/decisions).
    Bouncer {
        #[command(subcommand)]
        command: BouncerCommand,
        #[command(flatten)]
        db: DbArgs,
    },
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Create a token and print it (its secret is shown only now).
    Create {
        /// How long the token can be used (`1h`, `7d`).
        #[arg(long, value_name = "DURATION", default_value = "1h")]
        ttl: humantime::Duration,
        /// How many agents may enroll with it.
        #[arg(long, value_name = "N", default_value_t = 1)]
        uses: u32,
        /// The agent group the enrolled agents join.
        #[arg(long, value_name = "GROUP")]
        group: Option<String>,
        #[command(flatten)]
        db: Database,
    },
    /// List tokens: id, group, uses, expiry (never their secret).
    List {
        #[command(flatten)]
        db: Database,
    },
}

#[derive(Subcommand)]
enum AgentCommand {
    /// List enrolled agents: id, group, enrollment, revocation.
    List {
        #[command(flatten)]
        db: Database,
    },
    /// Revoke an agent: its stream is closed within a second and it is
    /// refused from then on (until enrolled again with a new token).
    Revoke {
        /// The agent's id.
        id: String,
        #[command(flatten)]
        db: Database,
    },
}

/// Which database a management command works on (as `serve` finds it).
#[derive(clap::Args)]
struct DbArgs {
    #[arg(long, value_name = "FILE", global = true)]
    config: Option<PathBuf>,
    #[arg(long, value_name = "DIR", global = true)]
    data_dir: Option<PathBuf>,
    #[arg(
        long,
        value_name = "URL",
        env = "FLEETBAN_DATABASE_URL",
        hide_env_values = true,
        global = true
    )]
    database_url: Option<String>,
}

#[derive(Subcommand)]
enum UserCommand {
    /// Add a user. The password is read from stdin (first line), or asked
    /// for twice when stdin is a terminal; there is no default password.
    Add {
        /// admin, operator or viewer.
        #[arg(long)]
        role: String,
        name: String,
    },
    /// List users.
    List,
    /// Disable a user and end their sessions.
    Disable { name: String },
    /// Set a user's password (read as for `add`).
    Passwd { name: String },
}

#[derive(Subcommand)]
enum BouncerCommand {
    /// Add a bouncer and print its key (shown once).
    Add { name: String },
    /// List bouncers.
    List,
    /// Revoke a bouncer's key.
    Revoke { name: String },
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
            db,
            http_listen,
            grpc_listen,
        } => {
            let overrides = Overrides {
                data_dir: db.data_dir,
                database_url: db.database_url,
                http_listen,
                grpc_listen,
            };
            serve(ServerConfig::load(db.config.as_deref(), overrides)?).await
        }
        Command::Token {
            command:
                TokenCommand::Create {
                    ttl,
                    uses,
                    group,
                    db,
                },
        } => {
            let (config, store) = open(db).await?;
            let ca = authority(&config, store.as_ref()).await?;
            let ids = Identities::new(store, Arc::new(SystemClock), Some(Arc::new(ca))).await?;
            let ttl = chrono::Duration::from_std(ttl.into()).context("--ttl is too long")?;
            let t = ids
                .create_token(ttl, uses, group)
                .await
                .context("cannot create the token")?;
            println!("{}", t.token);
            eprintln!(
                "token {}: {} use(s), expires {}, group {}; CA fingerprint sha256:{}",
                t.id,
                t.max_uses,
                t.expires_at
                    .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                t.group.as_deref().unwrap_or("(none)"),
                t.token.ca_fingerprint
            );
            Ok(())
        }
        Command::Token {
            command: TokenCommand::List { db },
        } => {
            let (_, store) = open(db).await?;
            let now = chrono::Utc::now();
            println!(
                "{:<14} {:<16} {:>9}  {:<20}  state",
                "TOKEN", "GROUP", "USES", "EXPIRES"
            );
            for t in store.tokens().await? {
                let state = if t.uses >= t.max_uses {
                    "used up"
                } else if t.expires_at <= now {
                    "expired"
                } else {
                    "valid"
                };
                println!(
                    "{:<14} {:<16} {:>9}  {:<20}  {state}",
                    t.id,
                    t.group.as_deref().unwrap_or("-"),
                    format!("{}/{}", t.uses, t.max_uses),
                    t.expires_at
                        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                );
            }
            Ok(())
        }
        Command::Agent {
            command: AgentCommand::List { db },
        } => {
            let (_, store) = open(db).await?;
            println!(
                "{:<32} {:<16} {:<20}  {:<20}  TOKEN",
                "AGENT", "GROUP", "ENROLLED", "REVOKED"
            );
            let time = |t: chrono::DateTime<chrono::Utc>| {
                t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            };
            for e in store.enrollments().await? {
                println!(
                    "{:<32} {:<16} {:<20}  {:<20}  {}",
                    e.agent_id,
                    e.group.as_deref().unwrap_or("-"),
                    time(e.enrolled_at),
                    e.revoked_at.map(time).unwrap_or_else(|| "-".into()),
                    e.token_id
                );
            }
            Ok(())
        }
        Command::Agent {
            command: AgentCommand::Revoke { id, db },
        } => {
            let (_, store) = open(db).await?;
            let ids = Identities::new(store, Arc::new(SystemClock), None).await?;
            let e = ids
                .revoke_agent(&id)
                .await
                .with_context(|| format!("cannot revoke agent {id:?}"))?;
            println!(
                "agent {} revoked at {}",
                e.agent_id,
                e.revoked_at
                    .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
                    .unwrap_or_default()
            );
            Ok(())
        }
        Command::User { command, db } => user(command, db).await,
        Command::Bouncer { command, db } => bouncer(command, db).await,
    }
}

/// The configuration and the database named by `db`.
async fn open(db: Database) -> anyhow::Result<(ServerConfig, Arc<dyn store::Store>)> {
    let overrides = Overrides {
        data_dir: db.data_dir,
        database_url: db.database_url,
        ..Default::default()
    };
    let config = ServerConfig::load(db.config.as_deref(), overrides)?;
    if config.is_embedded() {
        std::fs::create_dir_all(&config.data_dir)
            .with_context(|| format!("cannot create data dir {}", config.data_dir.display()))?;
    }
    let store = store::open(&config.database_url).await?;
    Ok((config, store))
}

/// The CA in force: the operator's files, or the database's (created on
/// first use).
async fn authority(
    config: &ServerConfig,
    store: &dyn store::Store,
) -> anyhow::Result<identity::Authority> {
    if config.tls.plaintext {
        anyhow::bail!(
            "the server runs in plaintext mode ([tls] plaintext = true): enrollment needs TLS"
        );
    }
    let operator = match &config.tls.ca_files {
        Some((cert, key)) => {
            let read = |p: &PathBuf| {
                std::fs::read_to_string(p).with_context(|| format!("cannot read {}", p.display()))
            };
            Some(store::StoredCa {
                cert_pem: read(cert)?,
                key_pem: read(key)?,
            })
        }
        None => None,
    };
    identity_service::authority(store, operator)
        .await
        .context("certificate authority")
}

/// The database named by `db`, with the accounts of the REST API on it.
async fn open_accounts(db: DbArgs) -> anyhow::Result<(Arc<dyn store::Store>, Accounts)> {
    let (_, store) = open(Database {
        config: db.config,
        data_dir: db.data_dir,
        database_url: db.database_url,
    })
    .await?;
    let accounts = Accounts::new(
        store.clone(),
        std::sync::Arc::new(SystemClock),
        AuthConfig::default(),
    )
    .await?;
    Ok((store, accounts))
}

/// A new password: from a terminal, asked twice without echo; otherwise the
/// first line of stdin.
fn read_password() -> anyhow::Result<String> {
    if std::io::stdin().is_terminal() {
        let first = rpassword::prompt_password("password: ")?;
        let again = rpassword::prompt_password("password again: ")?;
        anyhow::ensure!(first == again, "the passwords differ");
        Ok(first)
    } else {
        let mut line = String::new();
        std::io::stdin()
            .read_line(&mut line)
            .context("cannot read the password from stdin")?;
        let pw = line.trim_end_matches(['\n', '\r']).to_owned();
        anyhow::ensure!(!pw.is_empty(), "no password on stdin");
        Ok(pw)
    }
}

async fn user(command: UserCommand, db: DbArgs) -> anyhow::Result<()> {
    let (store, accounts) = open_accounts(db).await?;
    match command {
        UserCommand::Add { role, name } => {
            let role = Role::parse(&role)
                .with_context(|| format!("role {role:?}: expected admin, operator or viewer"))?;
            let password = read_password()?;
            accounts
                .add_user(&name, &password, role, "cli", None)
                .await?;
            println!("user {name} added with role {role}");
        }
        UserCommand::List => {
            for u in store.users().await? {
                let state = if u.disabled_at.is_some() {
                    "disabled"
                } else {
                    "active"
                };
                println!("{}\t{}\t{state}", u.name, u.role);
            }
        }
        UserCommand::Disable { name } => {
            accounts.disable_user(&name, "cli", None).await?;
            println!("user {name} disabled");
        }
        UserCommand::Passwd { name } => {
            let password = read_password()?;
            accounts.set_password(&name, &password, "cli", None).await?;
            println!("password of {name} changed");
        }
    }
    Ok(())
}

async fn bouncer(command: BouncerCommand, db: DbArgs) -> anyhow::Result<()> {
    let (store, accounts) = open_accounts(db).await?;
    match command {
        BouncerCommand::Add { name } => {
            let key = accounts.add_bouncer(&name, "cli", None).await?;
            println!("{key}");
            eprintln!("bouncer {name} added; its key (above) is shown only once");
        }
        BouncerCommand::List => {
            for b in store.bouncers().await? {
                let state = if b.revoked_at.is_some() {
                    "revoked"
                } else {
                    "active"
                };
                let pulled = b
                    .last_pull_at
                    .map_or_else(|| "never".to_owned(), |t| t.to_rfc3339());
                println!("{}\t{state}\tlast pull {pulled}", b.name);
            }
        }
        BouncerCommand::Revoke { name } => {
            store.revoke_bouncer(&name, accounts.now()).await?;
            accounts
                .audit("cli", "bouncer.revoke", &name, serde_json::json!({}), None)
                .await;
            println!("bouncer {name} revoked");
        }
    }
    Ok(())
}

async fn serve(config: ServerConfig) -> anyhow::Result<()> {
    if config.is_embedded() {
        std::fs::create_dir_all(&config.data_dir)
            .with_context(|| format!("cannot create data dir {}", config.data_dir.display()))?;
    }
    let store = store::open(&config.database_url).await?;
    let tls = if config.tls.plaintext {
        tracing::warn!("plaintext gRPC: agents are not authenticated (development only)");
        None
    } else {
        let ca = authority(&config, store.as_ref()).await?;
        let setup =
            identity::tls::server_tls(&ca, &config.tls.names).context("server certificate")?;
        for n in &setup.skipped {
            tracing::warn!(name = %n, "not a host name or an address; left out of the server certificate");
        }
        println!(
            "fleetban-server CA fingerprint: sha256:{} (certificate names: {})",
            ca.fingerprint(),
            setup.names.join(", ")
        );
        Some(GrpcTls {
            config: setup.config,
            authority: Arc::new(ca),
        })
    };
    let scheme = if tls.is_some() { "https" } else { "http" };
    let http = TcpListener::bind(config.http_listen)
        .await
        .with_context(|| format!("cannot listen on {} (http)", config.http_listen))?;
    let grpc = TcpListener::bind(config.grpc_listen)
        .await
        .with_context(|| format!("cannot listen on {} (grpc)", config.grpc_listen))?;
    let (http_addr, grpc_addr) = (http.local_addr()?, grpc.local_addr()?);
    println!(
        "fleetban-server listening: http=http://{http_addr} grpc={scheme}://{grpc_addr} database={}",
        store::redact(&config.database_url)
    );
    let agent_url = tls
        .as_ref()
        .and_then(|_| identity::tls::agent_url(&config.tls.names, grpc_addr));
    let options = fleetban_server::RunOptions {
        event_retention: config.event_retention,
        policy: config.policy_seed,
        feeds: config.feeds,
        tls,
        agent_url,
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
