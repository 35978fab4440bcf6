//! The agent's TOML configuration. Everything that can be checked at load is
//! checked at load (regexes compiled, networks parsed, durations read), and
//! every error names the file, the line and the key.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use fleetban_engine::date::Zone;
use fleetban_engine::fail2ban::{options, read_filter, FilterDefinition, Located, Origin};

use crate::fsfiles::FsFiles;
use fleetban_engine::{Filter, FilterOptions, JailSettings};
use fleetban_proto::config::{self, ConfigError};
use fleetban_proto::{PortError, PortScope, Protocol};
use ipnet::IpNet;
use serde::Deserialize;

use crate::source::{journal::parse_journalmatch, Backend, Start};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AgentFile {
    #[serde(default)]
    agent: AgentSection,
    server: Option<ServerSection>,
    #[serde(default)]
    firewall: FirewallSection,
    #[serde(default)]
    jail: Vec<JailSection>,
    fail2ban: Option<Fail2banSection>,
}

/// An existing fail2ban configuration to run as it is.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Fail2banSection {
    /// fail2ban's directory (`jail.conf`, `jail.d`, `filter.d`).
    #[serde(default = "default_fail2ban_dir")]
    dir: PathBuf,
    /// Jails to take; default: every enabled jail.
    #[serde(default)]
    jails: Vec<String>,
}

fn default_fail2ban_dir() -> PathBuf {
    PathBuf::from("/etc/fail2ban")
}

fn default_filter_dirs() -> Vec<PathBuf> {
    vec![PathBuf::from("/etc/fail2ban/filter.d")]
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct AgentSection {
    /// How the server knows this host; default: the host name.
    id: Option<String>,
    /// Where source positions and journal cursors are kept.
    state_dir: Option<PathBuf>,
    /// `HOST:PORT` for the Prometheus metrics endpoint; off when unset.
    metrics_listen: Option<String>,
    /// Zone of log times that name none; default: the system's.
    timezone: Option<String>,
    /// The control socket of `fleetban-agent ban`/`unban`/`firewall`;
    /// default `<state_dir>/control.sock`.
    control_socket: Option<PathBuf>,
    /// Where `filter = "name"` looks for fail2ban filters.
    #[serde(default = "default_filter_dirs")]
    filter_dirs: Vec<PathBuf>,
    /// The agent group this host belongs to: jail policies and group
    /// decisions follow it. Default: none.
    #[serde(default)]
    group: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ServerSection {
    /// The server's gRPC endpoint, `https://HOST:PORT` (`http://` only for
    /// a plaintext development server on this host), or a list of the
    /// endpoints of several server replicas, tried in turn.
    url: ServerUrls,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum ServerUrls {
    One(String),
    Several(Vec<String>),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FirewallSection {
    #[serde(default = "default_backend")]
    backend: String,
    #[serde(default = "default_table")]
    table: String,
    #[serde(default = "default_verdict")]
    verdict: String,
    #[serde(default)]
    forward: bool,
    #[serde(default)]
    allowlist: Vec<String>,
    #[serde(default = "yes")]
    protect_ssh_client: bool,
    #[serde(default = "default_widest_v4")]
    widest_prefix_v4: u8,
    #[serde(default = "default_widest_v6")]
    widest_prefix_v6: u8,
    #[serde(default = "default_reconcile")]
    reconcile_interval: String,
}

impl Default for FirewallSection {
    fn default() -> Self {
        FirewallSection {
            backend: default_backend(),
            table: default_table(),
            verdict: default_verdict(),
            forward: false,
            allowlist: Vec::new(),
            protect_ssh_client: true,
            widest_prefix_v4: default_widest_v4(),
            widest_prefix_v6: default_widest_v6(),
            reconcile_interval: default_reconcile(),
        }
    }
}

fn default_verdict() -> String {
    "drop".into()
}

fn default_widest_v4() -> u8 {
    8
}

fn default_widest_v6() -> u8 {
    32
}

fn default_reconcile() -> String {
    "30s".into()
}

fn default_backend() -> String {
    "nftables".into()
}

fn default_table() -> String {
    "fleetban".into()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct JailSection {
    name: String,
    #[serde(default = "yes")]
    enabled: bool,
    #[serde(default)]
    logpath: Vec<PathBuf>,
    #[serde(default)]
    backend: Option<String>,
    #[serde(default)]
    journalmatch: Option<String>,
    #[serde(default)]
    start: Option<String>,
    /// A fail2ban filter by name or path, with options: `sshd[mode=aggressive]`.
    filter: Option<String>,
    /// `yes`/`warn`: resolve host names in failures; `no` (default).
    usedns: Option<String>,
    #[serde(default)]
    failregex: Vec<String>,
    #[serde(default)]
    ignoreregex: Vec<String>,
    #[serde(default = "default_maxretry")]
    maxretry: u32,
    #[serde(default = "default_findtime")]
    findtime: String,
    #[serde(default = "default_bantime")]
    bantime: String,
    #[serde(default)]
    ignoreip: Vec<String>,
    /// The jail's ports, fail2ban-style (`ssh`, `http,https`, `8000:8100`).
    port: Option<String>,
    /// `tcp` (default), `udp` or `all` (both).
    protocol: Option<String>,
    /// `jail`: a ban covers the jail's `port` only (the default when `port`
    /// is set); `all`: all traffic from the address.
    ban_ports: Option<String>,
}

fn yes() -> bool {
    true
}

fn default_maxretry() -> u32 {
    5
}

fn default_findtime() -> String {
    "10m".into()
}

fn default_bantime() -> String {
    "10m".into()
}

/// Where the block list is enforced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FirewallBackend {
    /// nftables: a table of fleetban's own with timed sets.
    Nftables { table: String },
    /// ipset + iptables/ip6tables: sets and a chain named after `prefix`.
    Ipset { prefix: String },
    /// Dry run: every change is logged, nothing is enforced.
    Log,
}

/// The `[firewall]` section, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FirewallConfig {
    pub backend: FirewallBackend,
    pub rules: crate::firewall::Rules,
    /// Networks never blocked, whatever a jail, the server or an operator says.
    pub allowlist: Vec<IpNet>,
    /// Never block the SSH client of the operator who runs `fleetban-agent
    /// ban`, nor the one the agent was started from.
    pub protect_ssh_client: bool,
    /// Widest prefixes allowed: shorter ones are refused.
    pub widest_prefix_v4: u8,
    pub widest_prefix_v6: u8,
    /// How often the kernel is read back and repaired.
    pub reconcile_interval: Duration,
}

impl FirewallConfig {
    /// nftables with the defaults of every key.
    pub fn with_backend(backend: FirewallBackend) -> Self {
        FirewallConfig {
            backend,
            rules: crate::firewall::Rules::default(),
            allowlist: Vec::new(),
            protect_ssh_client: true,
            widest_prefix_v4: default_widest_v4(),
            widest_prefix_v6: default_widest_v6(),
            reconcile_interval: Duration::from_secs(30),
        }
    }
}

/// One jail, ready to run.
#[derive(Debug, Clone)]
pub struct JailConfig {
    pub settings: JailSettings,
    pub logpaths: Vec<PathBuf>,
    /// The filter, checked (it compiles).
    pub filter: FilterDefinition,
    /// Resolve host names in failures (`usedns = "yes"` or `"warn"`).
    pub usedns: bool,
    /// How the log paths are read.
    pub source: SourceSettings,
    /// What a ban of this jail covers (all traffic when empty).
    pub ports: PortScope,
}

/// How a jail's logs are read: `backend`, `journalmatch`, `start`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SourceSettings {
    pub backend: Backend,
    /// `journalctl` match arguments (`FIELD=value`, `+`).
    pub journalmatch: Vec<String>,
    pub start: Start,
}

/// Whether `url` is `http://` to a loopback host (plaintext development).
fn plaintext_loopback(url: &str) -> bool {
    let Some(rest) = url.strip_prefix("http://") else {
        return false;
    };
    let authority = rest.split('/').next().unwrap_or("");
    let host = match authority.rsplit_once(':') {
        Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => authority,
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Default `[agent] state_dir`.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/fleetban/agent";

/// The agent's configuration, checked.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// The zone of log times that name none.
    pub zone: Zone,
    pub agent_id: String,
    /// `None`: standalone, no server. The first of `server_urls`.
    pub server_url: Option<String>,
    /// Every server replica to connect to, in order of preference.
    pub server_urls: Vec<String>,
    /// The agent group ('' for none).
    pub group: String,
    pub firewall: FirewallConfig,
    pub jails: Vec<JailConfig>,
    /// Where positions, cursors and the block list are saved.
    pub state_dir: PathBuf,
    /// The control socket (`fleetban-agent ban`, `unban`, `firewall`).
    pub control_socket: PathBuf,
    /// The Prometheus endpoint's address, if any.
    pub metrics_listen: Option<SocketAddr>,
}

impl AgentConfig {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let (file, source): (AgentFile, String) = config::load(path)?;
        Self::check(path, &source, file)
    }

    pub fn parse(path: &Path, source: &str) -> Result<Self, ConfigError> {
        let file: AgentFile = config::parse(path, source)?;
        Self::check(path, source, file)
    }

    fn check(path: &Path, source: &str, file: AgentFile) -> Result<Self, ConfigError> {
        let err = |key: &str, msg: String| ConfigError::key(path, source, key, msg);
        let agent_id = match file.agent.id {
            Some(id) => id,
            None => hostname::get()
                .map(|h| h.to_string_lossy().into_owned())
                .map_err(|e| {
                    err(
                        "agent.id",
                        format!("not set, and the host name is unknown: {e}"),
                    )
                })?,
        };
        if !valid_id(&agent_id) {
            return Err(err(
                "agent.id",
                format!("{agent_id:?}: expected 1 to 128 characters among letters, digits, '-', '_' and '.'"),
            ));
        }
        let server_urls = match file.server.map(|s| s.url) {
            Some(ServerUrls::One(u)) => vec![u],
            Some(ServerUrls::Several(list)) => {
                if list.is_empty() {
                    return Err(err(
                        "server.url",
                        "an empty list: expected at least one https://HOST:PORT".into(),
                    ));
                }
                list
            }
            None => Vec::new(),
        };
        for u in &server_urls {
            if !(u.starts_with("https://") || plaintext_loopback(u)) {
                return Err(err(
                    "server.url",
                    format!(
                        "{u:?}: expected https://HOST:PORT (http:// only for a server on this host)"
                    ),
                ));
            }
        }
        let server_url = server_urls.first().cloned();
        let group = file.agent.group.clone();
        if !group.is_empty() && !valid_id(&group) {
            return Err(err(
                "agent.group",
                format!("{group:?}: expected letters, digits, '-', '_' and '.'"),
            ));
        }
        let firewall = firewall_config(&file.firewall).map_err(|(k, m)| err(k, m))?;
        let zone = match &file.agent.timezone {
            Some(tz) => Zone::parse(tz).map_err(|e| err("agent.timezone", e))?,
            None => local_zone(),
        };
        let filter_dirs = if file.agent.filter_dirs.is_empty() {
            default_filter_dirs()
        } else {
            file.agent.filter_dirs.clone()
        };
        let mut jails = Vec::new();
        for (nth, j) in file.jail.into_iter().enumerate() {
            if !j.enabled {
                continue;
            }
            let err = |key: &str, msg: String| {
                ConfigError::key_in_table(path, source, Some(("jail", nth)), key, msg)
            };
            let in_jail = |msg: String| format!("jail {:?}: {msg}", j.name);
            if j.name.is_empty() || jails.iter().any(|k: &JailConfig| k.settings.name == j.name) {
                return Err(err("jail.name", in_jail("empty or used twice".into())));
            }
            let reading = source_settings(&j).map_err(|(k, m)| err(k, in_jail(m)))?;
            let filter = match (&j.filter, j.failregex.is_empty()) {
                (Some(_), false) => {
                    return Err(err(
                        "jail.filter",
                        in_jail("give either filter or failregex, not both".into()),
                    ));
                }
                (None, true) => {
                    return Err(err(
                        "jail.failregex",
                        in_jail("needs a filter or a failregex".into()),
                    ));
                }
                (Some(spec), true) => {
                    let mut def = fail2ban_filter(spec, &filter_dirs)
                        .map_err(|e| err("jail.filter", in_jail(e)))?;
                    def.ignoreregex
                        .extend(j.ignoreregex.iter().map(|r| Located {
                            value: r.clone(),
                            option: "ignoreregex".into(),
                            origin: None,
                        }));
                    def
                }
                (None, false) => {
                    let line = ConfigError::key_in_table(
                        path,
                        source,
                        Some(("jail", nth)),
                        "jail.failregex",
                        "",
                    )
                    .line;
                    let origin = Origin {
                        file: path.to_owned(),
                        line,
                    };
                    FilterDefinition::from_regexes(Some(origin), &j.failregex, &j.ignoreregex)
                }
            };
            let key = if j.filter.is_some() {
                "jail.filter"
            } else {
                "jail.failregex"
            };
            Filter::new(&filter, filter_options(&zone))
                .map_err(|e| err(key, in_jail(e.to_string())))?;
            let findtime = duration(&j.findtime).map_err(|e| err("jail.findtime", in_jail(e)))?;
            let bantime = duration(&j.bantime).map_err(|e| err("jail.bantime", in_jail(e)))?;
            if bantime.is_zero() {
                return Err(err(
                    "jail.bantime",
                    in_jail("must be longer than 0 s".into()),
                ));
            }
            let ignoreip = j
                .ignoreip
                .iter()
                .map(|s| {
                    fleetban_proto::parse_target(s)
                        .map_err(|e| err("jail.ignoreip", in_jail(e.to_string())))
                })
                .collect::<Result<Vec<IpNet>, _>>()?;
            let usedns =
                usedns_resolves(j.usedns.as_deref()).map_err(|e| err("jail.usedns", in_jail(e)))?;
            let ports = native_scope(&j).map_err(|(key, e)| err(key, in_jail(e)))?;
            jails.push(JailConfig {
                settings: JailSettings {
                    name: j.name,
                    maxretry: j.maxretry.max(1),
                    findtime_ms: millis(findtime),
                    bantime_ms: millis(bantime),
                    ignoreip,
                },
                logpaths: j.logpath,
                filter,
                source: reading,
                usedns,
                ports,
            });
        }
        let metrics_listen = match file.agent.metrics_listen {
            Some(a) => Some(a.parse::<SocketAddr>().map_err(|e| {
                err(
                    "agent.metrics_listen",
                    format!("{a:?}: {e}; expected HOST:PORT, e.g. 127.0.0.1:9095"),
                )
            })?),
            None => None,
        };
        if let Some(f2b) = &file.fail2ban {
            for jail in crate::fail2ban_import::import(&f2b.dir, &f2b.jails)? {
                if jails
                    .iter()
                    .any(|k: &JailConfig| k.settings.name == jail.settings.name)
                {
                    return Err(err(
                        "fail2ban.jails",
                        format!(
                            "jail {:?} is defined here and in {}",
                            jail.settings.name,
                            f2b.dir.display()
                        ),
                    ));
                }
                Filter::new(&jail.filter, filter_options(&zone)).map_err(|e| {
                    err(
                        "fail2ban.dir",
                        format!("jail {:?}: {e}", jail.settings.name),
                    )
                })?;
                jails.push(jail);
            }
        }
        let state_dir = file
            .agent
            .state_dir
            .unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_DIR));
        Ok(AgentConfig {
            zone,
            agent_id,
            server_url,
            server_urls,
            group,
            firewall,
            jails,
            control_socket: file
                .agent
                .control_socket
                .unwrap_or_else(|| state_dir.join("control.sock")),
            state_dir,
            metrics_listen,
        })
    }
}

/// What a native jail's bans cover: its `port` and `protocol` unless
/// `ban_ports = "all"`; an error is `(key, message)`.
fn native_scope(j: &JailSection) -> Result<PortScope, (&'static str, String)> {
    let scoped = match j.ban_ports.as_deref() {
        None | Some("jail") => true,
        Some("all") => false,
        Some(other) => {
            return Err((
                "jail.ban_ports",
                format!("{other:?}: expected \"jail\" (the jail's ports) or \"all\" (all traffic)"),
            ))
        }
    };
    if let Some(p) = &j.protocol {
        Protocol::parse(p).map_err(|e| ("jail.protocol", e.to_string()))?;
    }
    match (&j.port, scoped) {
        (Some(port), true) => {
            crate::services::jail_scope(port, j.protocol.as_deref()).map_err(|e| {
                let key = if matches!(e, PortError::Protocol(_)) {
                    "jail.protocol"
                } else {
                    "jail.port"
                };
                (key, format!("{port:?}: {e}"))
            })
        }
        (Some(port), false) => {
            // Still checked: a typo should not wait until the key matters.
            crate::services::jail_scope(port, j.protocol.as_deref())
                .map_err(|e| ("jail.port", format!("{port:?}: {e}")))?;
            Ok(PortScope::all())
        }
        (None, _) => Ok(PortScope::all()),
    }
}

/// Checks the `[firewall]` section; an error is `(key, message)`.
fn firewall_config(f: &FirewallSection) -> Result<FirewallConfig, (&'static str, String)> {
    let t = &f.table;
    let name_ok = |max: usize| {
        !t.is_empty() && t.len() <= max && t.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
    };
    let backend = match f.backend.as_str() {
        "nftables" => {
            if !name_ok(32) {
                return Err((
                    "firewall.table",
                    format!("{t:?}: expected up to 32 letters, digits or '_'"),
                ));
            }
            FirewallBackend::Nftables { table: t.clone() }
        }
        "ipset" => {
            // ipset names stop at 31 characters, iptables chains at 28.
            if !name_ok(24) {
                return Err((
                    "firewall.table",
                    format!(
                        "{t:?}: expected up to 24 letters, digits or '_' with the ipset backend"
                    ),
                ));
            }
            FirewallBackend::Ipset { prefix: t.clone() }
        }
        "log" => FirewallBackend::Log,
        other => {
            return Err((
                "firewall.backend",
                format!("{other:?}: expected \"nftables\", \"ipset\" or \"log\""),
            ));
        }
    };
    let verdict = match f.verdict.as_str() {
        "drop" => crate::firewall::Verdict::Drop,
        "reject" => crate::firewall::Verdict::Reject,
        other => {
            return Err((
                "firewall.verdict",
                format!("{other:?}: expected \"drop\" or \"reject\""),
            ))
        }
    };
    let allowlist = f
        .allowlist
        .iter()
        .map(|s| fleetban_proto::parse_target(s).map_err(|e| ("firewall.allowlist", e.to_string())))
        .collect::<Result<Vec<IpNet>, _>>()?;
    if !(1..=32).contains(&f.widest_prefix_v4) {
        return Err((
            "firewall.widest_prefix_v4",
            format!("{}: expected 1 to 32", f.widest_prefix_v4),
        ));
    }
    if !(1..=128).contains(&f.widest_prefix_v6) {
        return Err((
            "firewall.widest_prefix_v6",
            format!("{}: expected 1 to 128", f.widest_prefix_v6),
        ));
    }
    let reconcile_interval =
        duration(&f.reconcile_interval).map_err(|e| ("firewall.reconcile_interval", e))?;
    if reconcile_interval < Duration::from_secs(1) {
        return Err(("firewall.reconcile_interval", "must be at least 1 s".into()));
    }
    Ok(FirewallConfig {
        backend,
        rules: crate::firewall::Rules {
            verdict,
            forward: f.forward,
        },
        allowlist,
        protect_ssh_client: f.protect_ssh_client,
        widest_prefix_v4: f.widest_prefix_v4,
        widest_prefix_v6: f.widest_prefix_v6,
        reconcile_interval,
    })
}

/// Reads `backend`, `journalmatch`, `start` and checks `logpath`; an error
/// is `(key, message)`.
fn source_settings(j: &JailSection) -> Result<SourceSettings, (&'static str, String)> {
    let backend = match j.backend.as_deref().unwrap_or("auto") {
        "auto" => Backend::Auto,
        "polling" => Backend::Polling,
        "systemd" => Backend::Systemd,
        other => {
            return Err((
                "jail.backend",
                format!("{other:?}: expected \"auto\", \"polling\" or \"systemd\""),
            ))
        }
    };
    let start = match j.start.as_deref().unwrap_or("end") {
        "end" => Start::End,
        "beginning" => Start::Beginning,
        other => {
            return Err((
                "jail.start",
                format!("{other:?}: expected \"end\" or \"beginning\""),
            ))
        }
    };
    let journalmatch = match &j.journalmatch {
        Some(_) if backend != Backend::Systemd => {
            return Err(("jail.journalmatch", "only for backend = \"systemd\"".into()))
        }
        Some(m) => parse_journalmatch(m).map_err(|e| ("jail.journalmatch", e))?,
        None => Vec::new(),
    };
    if backend != Backend::Systemd {
        if j.logpath.is_empty() {
            return Err(("jail.logpath", "needs at least one log path".into()));
        }
        for p in &j.logpath {
            let s = p.to_string_lossy();
            if let Err(e) = glob::Pattern::new(&s) {
                return Err(("jail.logpath", format!("{s:?}: invalid glob: {e}")));
            }
        }
    }
    Ok(SourceSettings {
        backend,
        journalmatch,
        start,
    })
}

/// Whether `usedns` asks for host names to be resolved: `yes` and `warn`
/// (fail2ban's default in its jail.conf) do, `no` and `raw` do not.
pub fn usedns_resolves(v: Option<&str>) -> Result<bool, String> {
    match v.map(str::trim) {
        None | Some("no" | "raw") => Ok(false),
        Some("yes" | "warn") => Ok(true),
        Some(other) => Err(format!("usedns {other:?}: expected yes, warn, no or raw")),
    }
}

/// A fail2ban filter named in a jail: a path, or a name in `dirs`, with
/// options (`sshd[mode=aggressive]`).
fn fail2ban_filter(spec: &str, dirs: &[PathBuf]) -> Result<FilterDefinition, String> {
    let named = options::parse(spec).map_err(|e| e.to_string())?;
    let as_path = Path::new(&named.name);
    let base = if as_path.is_absolute() {
        as_path.with_extension("")
    } else {
        dirs.iter()
            .map(|d| d.join(&named.name))
            .find(|b| b.with_extension("conf").is_file() || b.with_extension("local").is_file())
            .ok_or_else(|| {
                let looked: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
                format!("no filter {:?} in {}", named.name, looked.join(", "))
            })?
    };
    read_filter(&FsFiles, &base, &named.options).map_err(|e| e.to_string())
}

/// The system's time zone (UTC if it cannot be told).
pub fn local_zone() -> Zone {
    iana_time_zone::get_timezone()
        .ok()
        .and_then(|name| Zone::parse(&name).ok())
        .unwrap_or_else(Zone::utc)
}

/// How the agent runs its filters: against live logs.
pub fn filter_options(zone: &Zone) -> FilterOptions {
    use chrono::Datelike;
    FilterOptions {
        zone: zone.clone(),
        now_year: chrono::Utc::now().year(),
        check_all: false,
        undated_is_now: true,
    }
}

fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// A duration as fail2ban writes it: seconds (`600`) or with units (`10m`,
/// `1h 30m`, `2d`, `1w`).
pub fn duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if let Ok(secs) = s.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    let d = humantime::parse_duration(s)
        .map_err(|e| format!("invalid duration {s:?} ({e}); examples: 600, 10m, 1h, 2d"))?;
    if d > Duration::from_secs(100 * 365 * 86_400) {
        return Err(format!("duration {s:?} is longer than 100 years"));
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[agent]
id = "web-1"

[server]
url = "http://127.0.0.1:50051"

[firewall]
backend = "log"

[[jail]]
name = "sshd"
logpath = ["/var/log/auth.log"]
failregex = ['Failed password for \S+ from <HOST>']
maxretry = 3
findtime = "10m"
bantime = "1h"
ignoreip = ["127.0.0.1/8", "::1"]

[[jail]]
name = "off"
enabled = false
logpath = ["/x"]
failregex = ["<HOST>"]
"#;

    fn parse(src: &str) -> Result<AgentConfig, ConfigError> {
        AgentConfig::parse(Path::new("agent.toml"), src)
    }

    #[test]
    fn a_good_config_loads() {
        let c = parse(GOOD).expect("loads");
        assert_eq!(c.agent_id, "web-1");
        assert_eq!(c.server_url.as_deref(), Some("http://127.0.0.1:50051"));
        assert_eq!(c.firewall.backend, FirewallBackend::Log);
        assert_eq!(c.jails.len(), 1);
        let s = &c.jails[0].settings;
        assert_eq!(
            (s.maxretry, s.findtime_ms, s.bantime_ms),
            (3, 600_000, 3_600_000)
        );
        assert_eq!(s.ignoreip.len(), 2);
    }

    #[test]
    fn several_servers_and_a_group() {
        let c = parse(
            &GOOD
                .replace(
                    "url = \"http://127.0.0.1:50051\"",
                    "url = [\"https://10.0.0.1:50051\", \"https://10.0.0.2:50051\"]",
                )
                .replace("id = \"web-1\"", "id = \"web-1\"\ngroup = \"web\""),
        )
        .expect("loads");
        assert_eq!(
            c.server_urls,
            ["https://10.0.0.1:50051", "https://10.0.0.2:50051"]
        );
        assert_eq!(c.server_url.as_deref(), Some("https://10.0.0.1:50051"));
        assert_eq!(c.group, "web");
        let e = parse(&GOOD.replace("url = \"http://127.0.0.1:50051\"", "url = []"))
            .expect_err("empty list");
        assert_eq!((e.key.as_str(), e.line), ("server.url", 6));
        let e = parse(&GOOD.replace(
            "url = \"http://127.0.0.1:50051\"",
            "url = [\"https://a:1\", \"b:2\"]",
        ))
        .expect_err("bad second url");
        assert!(e.message.contains("\"b:2\""), "{e}");
        let e = parse(&GOOD.replace("id = \"web-1\"", "id = \"web-1\"\ngroup = \"a b\""))
            .expect_err("bad group");
        assert_eq!(e.key, "agent.group");
    }

    #[test]
    fn defaults_apply() {
        let c = parse("[agent]\nid = \"h\"\n[[jail]]\nname = \"j\"\nlogpath = [\"/l\"]\nfailregex = [\"<HOST>\"]\n")
            .expect("loads");
        assert_eq!(c.server_url, None);
        assert_eq!(
            c.firewall,
            FirewallConfig::with_backend(FirewallBackend::Nftables {
                table: "fleetban".into()
            })
        );
        assert_eq!(
            c.control_socket,
            PathBuf::from(DEFAULT_STATE_DIR).join("control.sock")
        );
        let s = &c.jails[0].settings;
        assert_eq!(
            (s.maxretry, s.findtime_ms, s.bantime_ms),
            (5, 600_000, 600_000)
        );
    }

    #[test]
    fn jails_ban_their_ports_when_asked() {
        let c = parse(&GOOD.replace("maxretry = 3", "maxretry = 3\nport = \"ssh,2222\""))
            .expect("loads");
        assert_eq!(c.jails[0].ports.to_string(), "tcp/22,2222");
        let c = parse(&GOOD.replace(
            "maxretry = 3",
            "maxretry = 3\nport = \"domain\"\nprotocol = \"all\"",
        ))
        .expect("loads");
        assert_eq!(c.jails[0].ports.to_string(), "all/53");
        let c = parse(&GOOD.replace(
            "maxretry = 3",
            "maxretry = 3\nport = \"ssh\"\nban_ports = \"all\"",
        ))
        .expect("loads");
        assert!(c.jails[0].ports.is_all());
        // No port: all traffic, as before.
        assert!(parse(GOOD).expect("loads").jails[0].ports.is_all());
    }

    #[test]
    fn bad_ports_name_line_and_key() {
        let bad = |extra: &str| {
            parse(&GOOD.replace("maxretry = 3", &format!("maxretry = 3\n{extra}")))
                .expect_err("refused")
        };
        let e = bad("port = \"sshh\"");
        assert_eq!((e.key.as_str(), e.line), ("jail.port", 16));
        assert!(e.message.contains("unknown service \"sshh\""), "{e}");
        let e = bad("port = \"80:70\"");
        assert_eq!(e.key, "jail.port");
        assert!(e.message.contains("invalid port range"), "{e}");
        let e = bad("port = \"22\"\nprotocol = \"icmp\"");
        assert_eq!((e.key.as_str(), e.line), ("jail.protocol", 17));
        let e = bad("port = \"22\"\nban_ports = \"some\"");
        assert_eq!(e.key, "jail.ban_ports");
        let e = bad("port = \"sshh\"\nban_ports = \"all\"");
        assert_eq!(e.key, "jail.port");
        assert!(
            e.to_string().starts_with("agent.toml:16: key `jail.port`"),
            "{e}"
        );
    }

    #[test]
    fn errors_name_line_and_key() {
        let e = parse(&GOOD.replace("maxretry = 3", "maxretry = 3\nmaxretries = 4"))
            .expect_err("unknown key");
        assert_eq!(e.key, "jail.maxretries");
        assert_eq!(e.line, 16);
        let e = parse(&GOOD.replace("bantime = \"1h\"", "bantime = \"1 fortnight\""))
            .expect_err("bad duration");
        assert_eq!((e.key.as_str(), e.line), ("jail.bantime", 17));
        assert!(e.message.contains("invalid duration"), "{e}");
        let e = parse(&GOOD.replace("<HOST>']", "<HOST>(']")).expect_err("bad regex");
        assert_eq!((e.key.as_str(), e.line), ("jail.failregex", 14));
        let e = parse(&GOOD.replace("\"::1\"", "\"::1/200\"")).expect_err("bad ignoreip");
        assert_eq!(e.key, "jail.ignoreip");
        let e =
            parse(&GOOD.replace("backend = \"log\"", "backend = \"pf\"")).expect_err("bad backend");
        assert_eq!((e.key.as_str(), e.line), ("firewall.backend", 9));
        let e = parse(&GOOD.replace("http://127", "grpc://127")).expect_err("bad url");
        assert_eq!(e.key, "server.url");
        // Plaintext only to this host.
        let e =
            parse(&GOOD.replace("http://127.0.0.1", "http://198.18.1.1")).expect_err("plaintext");
        assert_eq!(e.key, "server.url");
        assert!(e.to_string().contains("https://"), "{e}");
        for ok in [
            "https://198.18.1.1:50051",
            "http://localhost:50051",
            "http://[::1]:50051",
        ] {
            let c = parse(&GOOD.replace("http://127.0.0.1:50051", ok)).expect(ok);
            assert_eq!(c.server_url.as_deref(), Some(ok));
        }
        let e = parse(&GOOD.replace("id = \"web-1\"", "id = \"web 1\"")).expect_err("bad id");
        assert_eq!(e.key, "agent.id");
        let e = parse(&GOOD.replace("maxretry = 3", "maxretry = \"three\"")).expect_err("bad type");
        assert_eq!((e.key.as_str(), e.line), ("jail.maxretry", 15));
        // An error in the second jail points into the second jail.
        let two = format!("{GOOD}\n[[jail]]\nname = \"b\"\nlogpath = [\"/y\"]\nfailregex = [\"<HOST>\"]\nbantime = \"x\"\n");
        let e = parse(&two).expect_err("bad second jail");
        assert_eq!((e.key.as_str(), e.line), ("jail.bantime", 30));
    }

    #[test]
    fn log_source_keys() {
        let c = parse(&GOOD.replace(
            "maxretry = 3",
            "maxretry = 3\nbackend = \"polling\"\nstart = \"beginning\"",
        ))
        .expect("loads");
        assert_eq!(c.jails[0].source.backend, Backend::Polling);
        assert_eq!(c.jails[0].source.start, Start::Beginning);
        assert_eq!(c.state_dir, PathBuf::from(DEFAULT_STATE_DIR));
        assert_eq!(c.metrics_listen, None);
        let j = "[agent]\nid = \"h\"\nstate_dir = \"/tmp/s\"\nmetrics_listen = \"127.0.0.1:9095\"\n[[jail]]\nname = \"j\"\nbackend = \"systemd\"\njournalmatch = \"_SYSTEMD_UNIT=sshd.service + _COMM=sshd\"\nfailregex = [\"<HOST>\"]\n";
        let c = parse(j).expect("journal jail without logpath");
        assert_eq!(c.jails[0].source.journalmatch.len(), 3);
        assert_eq!(c.state_dir, PathBuf::from("/tmp/s"));
        assert!(c.metrics_listen.is_some());
        let e = parse(&j.replace("_COMM=sshd", "comm")).expect_err("bad match");
        assert_eq!(e.key, "jail.journalmatch");
        let e = parse(&GOOD.replace("maxretry = 3", "maxretry = 3\nbackend = \"gamin\""))
            .expect_err("bad backend");
        assert_eq!(e.key, "jail.backend");
        let e = parse(&GOOD.replace("maxretry = 3", "maxretry = 3\nstart = \"middle\""))
            .expect_err("bad start");
        assert_eq!(e.key, "jail.start");
        let e = parse(&GOOD.replace("/var/log/auth.log", "/var/log/[a.log")).expect_err("bad glob");
        assert_eq!(e.key, "jail.logpath");
        let e = parse(&j.replace("127.0.0.1:9095", "nowhere")).expect_err("bad listen");
        assert_eq!(e.key, "agent.metrics_listen");
    }

    #[test]
    fn fail2ban_filters_and_jails_mix_with_native_ones() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::create_dir_all(d.join("filter.d")).unwrap();
        std::fs::write(
            d.join("filter.d/x.conf"),
            "[Definition]\nfailregex = ^<mode> <HOST>$\nmode = plain\n",
        )
        .unwrap();
        std::fs::write(
            d.join("jail.conf"),
            "[DEFAULT]\nfilter = %(__name__)s\n[x]\nenabled = true\nlogpath = /var/log/x.log\n",
        )
        .unwrap();
        let src = format!(
            "[agent]\nid = \"a\"\nfilter_dirs = [\"{fd}\"]\n[fail2ban]\ndir = \"{d}\"\n[[jail]]\nname = \"mine\"\nlogpath = [\"/l\"]\nfilter = \"x[mode=loud]\"\nignoreregex = [\"^loud 10\"]\n",
            fd = d.join("filter.d").display(),
            d = d.display()
        );
        let c = parse(&src).expect("loads");
        assert_eq!(c.jails.len(), 2);
        assert_eq!(c.jails[0].filter.failregex[0].value, "^loud <HOST>$");
        assert_eq!(c.jails[0].filter.ignoreregex.len(), 1);
        assert_eq!(c.jails[1].settings.name, "x");
        assert_eq!(c.jails[1].filter.failregex[0].value, "^plain <HOST>$");
        let e = parse(&src.replace("x[mode=loud]", "nosuch")).expect_err("unknown filter");
        assert_eq!(e.key, "jail.filter");
        assert!(e.message.contains("no filter \"nosuch\""), "{e}");
        let e = parse(&src.replace("name = \"mine\"", "name = \"x\"")).expect_err("duplicate");
        assert_eq!(e.key, "fail2ban.jails");
        let both = src.replace(
            "filter = \"x[mode=loud]\"",
            "filter = \"x\"\nfailregex = [\"<HOST>\"]",
        );
        assert_eq!(parse(&both).expect_err("both").key, "jail.filter");
    }

    #[test]
    fn firewall_keys() {
        let fw = GOOD.replace(
            "backend = \"log\"",
            "backend = \"ipset\"\nverdict = \"reject\"\nforward = true\nallowlist = [\"10.0.0.0/8\", \"::ffff:192.0.2.1\"]\nprotect_ssh_client = false\nwidest_prefix_v4 = 16\nwidest_prefix_v6 = 48\nreconcile_interval = \"2m\"",
        );
        let c = parse(&fw).expect("loads").firewall;
        assert_eq!(
            c.backend,
            FirewallBackend::Ipset {
                prefix: "fleetban".into()
            }
        );
        assert_eq!(c.rules.verdict, crate::firewall::Verdict::Reject);
        assert!(c.rules.forward && !c.protect_ssh_client);
        assert_eq!(c.allowlist[1].to_string(), "192.0.2.1/32");
        assert_eq!((c.widest_prefix_v4, c.widest_prefix_v6), (16, 48));
        assert_eq!(c.reconcile_interval, Duration::from_secs(120));
        for (bad, key) in [
            ("verdict = \"reject\"", "verdict = \"accept\""),
            (
                "allowlist = [\"10.0.0.0/8\", ",
                "allowlist = [\"10.0.0/33\", ",
            ),
            ("widest_prefix_v4 = 16", "widest_prefix_v4 = 0"),
            ("widest_prefix_v6 = 48", "widest_prefix_v6 = 129"),
            (
                "reconcile_interval = \"2m\"",
                "reconcile_interval = \"often\"",
            ),
        ] {
            let e = parse(&fw.replace(bad, key)).expect_err(key);
            let want = format!("firewall.{}", key.split(' ').next().unwrap_or_default());
            assert_eq!(e.key, want, "{e}");
        }
        let long = fw.replace(
            "[firewall]",
            "[firewall]\ntable = \"a_very_long_prefix_for_ipset\"",
        );
        assert_eq!(parse(&long).expect_err("long").key, "firewall.table");
    }

    #[test]
    fn durations() {
        assert_eq!(duration("600"), Ok(Duration::from_secs(600)));
        assert_eq!(duration("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(duration("1h 30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(duration("2d"), Ok(Duration::from_secs(172_800)));
        assert!(duration("soon").is_err());
        assert!(duration("-5").is_err());
        assert!(duration("1000y").is_err());
    }
}
