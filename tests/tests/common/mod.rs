//! Helpers shared by the end-to-end tests: child processes whose output goes
//! to files (so a test can wait for a line), killed when dropped.

#![allow(dead_code)]

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running child process with its stdout and stderr in files.
pub struct Proc {
    pub name: String,
    child: Child,
    pub stdout: PathBuf,
    pub stderr: PathBuf,
}

impl Proc {
    /// Spawns `cmd`, its output going to `<dir>/<name>.{out,err}` (appended,
    /// so a restarted process keeps one log).
    pub fn spawn(name: &str, dir: &Path, mut cmd: Command) -> Proc {
        let stdout = dir.join(format!("{name}.out"));
        let stderr = dir.join(format!("{name}.err"));
        let open = |p: &Path| {
            File::options()
                .create(true)
                .append(true)
                .open(p)
                .expect("log file")
        };
        let child = cmd
            .stdin(Stdio::null())
            .stdout(open(&stdout))
            .stderr(open(&stderr))
            .env(
                "FLEETBAN_LOG",
                "info,fleetban_agent=debug,fleetban_server=debug",
            )
            .env("NO_COLOR", "1")
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        Proc {
            name: name.to_owned(),
            child,
            stdout,
            stderr,
        }
    }

    pub fn output(&self) -> String {
        let out = std::fs::read_to_string(&self.stdout).unwrap_or_default();
        let err = std::fs::read_to_string(&self.stderr).unwrap_or_default();
        format!(
            "--- {} stdout\n{out}--- {} stderr\n{err}",
            self.name, self.name
        )
    }

    /// Waits until stdout or stderr holds `needle` `count` times.
    pub fn wait_for(&mut self, needle: &str, count: usize, timeout: Duration) {
        let ok = wait_until(timeout, || self.output().matches(needle).count() >= count);
        if !ok {
            let status = self.child.try_wait().ok().flatten();
            panic!(
                "{} did not print {needle:?} x{count} within {timeout:?} (exit: {status:?})\n{}",
                self.name,
                self.output()
            );
        }
    }

    /// Stops the process with SIGTERM (SIGKILL after 5 s).
    pub fn stop(&mut self) {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let stopped = wait_until(Duration::from_secs(5), || {
            matches!(self.child.try_wait(), Ok(Some(_)))
        });
        if !stopped {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }

    /// Kills the process at once (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `cond` every 20 ms until it holds or `timeout` passes.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The addresses a server printed: `(http, grpc)` as `host:port`.
pub fn server_addrs(server: &mut Proc) -> (String, String) {
    server.wait_for("fleetban-server listening:", 1, Duration::from_secs(60));
    let out = std::fs::read_to_string(&server.stdout).expect("server stdout");
    let line = out
        .lines()
        .rev()
        .find(|l| l.starts_with("fleetban-server listening:"))
        .expect("listening line");
    let field = |k: &str| {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(k))
            .map(|v| {
                v.trim_start_matches("http://")
                    .trim_start_matches("https://")
                    .to_owned()
            })
            .unwrap_or_else(|| panic!("no {k} in {line:?}"))
    };
    (field("http="), field("grpc="))
}

/// Appends lines to a log file, as a daemon would.
pub fn append(path: &Path, lines: &[String]) {
    let mut f = File::options()
        .create(true)
        .append(true)
        .open(path)
        .expect("open log");
    for l in lines {
        writeln!(f, "{l}").expect("write log");
    }
    f.flush().expect("flush log");
}

/// Runs `cmd` to its end: `(success, stdout + stderr)`.
pub fn run(cmd: &mut Command) -> (bool, String, String) {
    let out = cmd.output().expect("run command");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Creates an enrollment token with `fleetban-server token create`, on the
/// database the server's flags `db` name (`--database-url URL`,
/// `--data-dir DIR` or `--config FILE`), with `extra` flags (`--uses`,
/// `--ttl`, `--group`).
pub fn create_token(db: &[&std::ffi::OsStr], extra: &[&str]) -> String {
    let mut cmd = Command::new(fleetban_tests::bins::bin("fleetban-server"));
    cmd.args(["token", "create"]).args(db).args(extra);
    let (ok, out, err) = run(&mut cmd);
    assert!(ok, "token create failed:\n{out}{err}");
    out.trim().to_owned()
}

/// Enrolls the agent of `config` with the server at `grpc` (`host:port`)
/// using `token`; `agent` is the agent binary's command (in a namespace if
/// need be), with `extra` flags of `enroll`. Returns `(success, output)`.
pub fn try_enroll(
    mut agent: Command,
    config: &Path,
    grpc: &str,
    token: &str,
    extra: &[&str],
) -> (bool, String) {
    agent
        .arg("enroll")
        .arg("--config")
        .arg(config)
        .args(["--server", &format!("https://{grpc}"), "--token", token])
        .args(extra);
    let (ok, out, err) = run(&mut agent);
    (ok, format!("{out}{err}"))
}

/// Creates a one-use token on the server's database (flags `db`) and
/// enrolls the agent of `config` with it; panics if either fails.
pub fn enroll(db: &[&std::ffi::OsStr], agent: Command, config: &Path, grpc: &str) {
    let token = create_token(db, &[]);
    let (ok, out) = try_enroll(agent, config, grpc, &token, &[]);
    assert!(ok, "enrollment of {} failed:\n{out}", config.display());
    assert!(out.contains("enrolled as agent"), "{out}");
}

/// sshd's line for a failed password.
pub fn failed_login(ip: &str, n: usize) -> String {
    format!(
        "Nov 25 10:00:{:02} host sshd[{}]: Failed password for root from {ip} port {} ssh2",
        n % 60,
        1000 + n,
        40000 + n
    )
}

/// An agent configuration with one sshd jail on `log`.
pub fn agent_config(
    dir: &Path,
    id: &str,
    server: Option<&str>,
    firewall: &str,
    log: &Path,
) -> PathBuf {
    let server = server
        .map(|s| format!("[server]\nurl = \"https://{s}\"\n"))
        .unwrap_or_default();
    let text = format!(
        r#"[agent]
id = "{id}"
state_dir = "{state}"

{server}
[firewall]
backend = "{firewall}"

[[jail]]
name = "sshd"
logpath = ["{log}"]
failregex = ['Failed password for (?:invalid user )?\S+ from <HOST> port \d+']
maxretry = 3
findtime = "10m"
bantime = "1h"
"#,
        log = log.display(),
        state = dir.join(format!("{id}-state")).display()
    );
    let path = dir.join(format!("{id}.toml"));
    std::fs::write(&path, text).expect("write agent config");
    std::fs::write(log, "").expect("create log");
    path
}

/// A minimal HTTP GET over loopback; returns the body.
pub fn http_get(addr: &str, path: &str) -> String {
    use std::io::Read;
    let mut s = std::net::TcpStream::connect(addr).expect("connect http");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .expect("request");
    let mut resp = String::new();
    s.read_to_string(&mut resp).expect("response");
    resp.split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default()
}
