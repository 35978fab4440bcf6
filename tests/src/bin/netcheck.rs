//! fleetban-netcheck: a small TCP probe that end-to-end tests run inside the
//! lab's namespaces to see whether packets from an address get through.
//!
//! `listen ADDR --for SECS` prints `listening <addr>` once bound, answers
//! every connection with `ok\n` (printing `accepted <peer>`), and exits after
//! SECS. `connect ADDR [--from IP] --timeout MS` makes one connection from
//! source IP and exits 0 when it got `ok`, 1 when it did not (timeout,
//! refused, ...), 2 on a usage or local error; it prints which.

use std::io::Write;
use std::net::{IpAddr, SocketAddr, TcpListener};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use tokio::io::AsyncReadExt;

const USAGE: &str = "usage:
  fleetban-netcheck listen ADDR:PORT --for SECS
  fleetban-netcheck connect ADDR:PORT [--from IP] --timeout MS";
/// Upper bound of both durations: the probe always ends by itself.
const MAX_WAIT: Duration = Duration::from_secs(3600);

#[derive(Debug)]
enum Cmd {
    Listen {
        addr: SocketAddr,
        duration: Duration,
    },
    Connect {
        addr: SocketAddr,
        from: Option<IpAddr>,
        timeout: Duration,
    },
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match parse(&args) {
        Ok(Cmd::Listen { addr, duration }) => listen(addr, duration),
        Ok(Cmd::Connect {
            addr,
            from,
            timeout,
        }) => connect(addr, from, timeout),
        Err(msg) => {
            eprintln!("fleetban-netcheck: {msg}\n{USAGE}");
            ExitCode::from(2)
        }
    }
}

fn parse(args: &[String]) -> Result<Cmd, String> {
    let (command, rest) = args.split_first().ok_or("missing command")?;
    let (addr, flags) = rest.split_first().ok_or("missing ADDR:PORT")?;
    let addr: SocketAddr = addr
        .parse()
        .map_err(|e| format!("bad address {addr:?}: {e}"))?;
    let mut pairs = Vec::new();
    let mut it = flags.iter();
    while let Some(flag) = it.next() {
        let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        if pairs.iter().any(|(f, _)| f == flag) {
            return Err(format!("{flag} given twice"));
        }
        pairs.push((flag.as_str(), value.as_str()));
    }
    let take = |name: &str| pairs.iter().find(|(f, _)| *f == name).map(|(_, v)| *v);
    let allowed: &[&str] = match command.as_str() {
        "listen" => &["--for"],
        "connect" => &["--from", "--timeout"],
        other => return Err(format!("unknown command {other:?}")),
    };
    if let Some((flag, _)) = pairs.iter().find(|(f, _)| !allowed.contains(f)) {
        return Err(format!("unknown option {flag} for {command}"));
    }
    match command.as_str() {
        "listen" => {
            let secs = take("--for").ok_or("listen needs --for SECS")?;
            let secs: f64 = secs
                .parse()
                .map_err(|_| format!("--for wants seconds, got {secs:?}"))?;
            Ok(Cmd::Listen {
                addr,
                duration: bounded(secs, "--for")?,
            })
        }
        _ => {
            let ms = take("--timeout").ok_or("connect needs --timeout MS")?;
            let ms: f64 = ms
                .parse()
                .map_err(|_| format!("--timeout wants milliseconds, got {ms:?}"))?;
            let from = take("--from")
                .map(|ip| ip.parse().map_err(|e| format!("bad --from {ip:?}: {e}")))
                .transpose()?;
            Ok(Cmd::Connect {
                addr,
                from,
                timeout: bounded(ms / 1000.0, "--timeout")?,
            })
        }
    }
}

fn bounded(secs: f64, flag: &str) -> Result<Duration, String> {
    if !(secs > 0.0 && secs <= MAX_WAIT.as_secs_f64()) {
        return Err(format!("{flag} must be above 0 and at most {MAX_WAIT:?}"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// Prints a line for the test reading our stdout; a reader that went away is
/// not our problem.
fn say(line: std::fmt::Arguments<'_>) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

fn listen(addr: SocketAddr, duration: Duration) -> ExitCode {
    let deadline = Instant::now() + duration;
    let listener = match TcpListener::bind(addr) {
        Ok(listener) => listener,
        Err(e) => {
            eprintln!("fleetban-netcheck: cannot listen on {addr}: {e}");
            return ExitCode::from(2);
        }
    };
    if let Err(e) = listener.set_nonblocking(true) {
        eprintln!("fleetban-netcheck: {e}");
        return ExitCode::from(2);
    }
    let local = listener.local_addr().unwrap_or(addr);
    say(format_args!("listening {local}"));
    while Instant::now() < deadline {
        match listener.accept() {
            Ok((mut stream, peer)) => {
                let _ = stream.set_nonblocking(false);
                let _ = stream.set_write_timeout(Some(Duration::from_secs(1)));
                let _ = stream.write_all(b"ok\n");
                let _ = stream.shutdown(std::net::Shutdown::Write);
                say(format_args!("accepted {peer}"));
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => {
                eprintln!("fleetban-netcheck: accept failed: {e}");
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }
    ExitCode::SUCCESS
}

fn connect(addr: SocketAddr, from: Option<IpAddr>, timeout: Duration) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("fleetban-netcheck: cannot start tokio: {e}");
            return ExitCode::from(2);
        }
    };
    runtime.block_on(async move {
        let deadline = tokio::time::Instant::now() + timeout;
        let socket = match addr {
            SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4(),
            SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6(),
        };
        let socket = match socket {
            Ok(socket) => socket,
            Err(e) => {
                eprintln!("fleetban-netcheck: cannot make a socket: {e}");
                return ExitCode::from(2);
            }
        };
        if let Some(ip) = from {
            if let Err(e) = socket.bind(SocketAddr::new(ip, 0)) {
                eprintln!("fleetban-netcheck: cannot bind to {ip}: {e}");
                return ExitCode::from(2);
            }
        }
        let mut stream = match tokio::time::timeout_at(deadline, socket.connect(addr)).await {
            Err(_) => {
                say(format_args!("timeout after {} ms", timeout.as_millis()));
                return ExitCode::from(1);
            }
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                say(format_args!("refused"));
                return ExitCode::from(1);
            }
            Ok(Err(e)) => {
                say(format_args!("failed: {e}"));
                return ExitCode::from(1);
            }
            Ok(Ok(stream)) => stream,
        };
        let mut greeting = Vec::new();
        let mut limited = (&mut stream).take(16);
        match tokio::time::timeout_at(deadline, limited.read_to_end(&mut greeting)).await {
            Ok(Ok(_)) if greeting.starts_with(b"ok") => {
                say(format_args!("connected"));
                ExitCode::SUCCESS
            }
            Ok(Ok(_)) => {
                say(format_args!(
                    "connected but got {:?} instead of ok",
                    String::from_utf8_lossy(&greeting)
                ));
                ExitCode::from(1)
            }
            Ok(Err(e)) => {
                say(format_args!("connected but reading failed: {e}"));
                ExitCode::from(1)
            }
            Err(_) => {
                say(format_args!(
                    "connected but no greeting within {} ms",
                    timeout.as_millis()
                ));
                ExitCode::from(1)
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::{parse, Cmd};
    use std::time::Duration;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_owned).collect()
    }

    #[test]
    fn parses_listen_and_connect() {
        match parse(&args("listen 198.19.0.1:0 --for 2.5")) {
            Ok(Cmd::Listen { addr, duration }) => {
                assert_eq!(addr.to_string(), "198.19.0.1:0");
                assert_eq!(duration, Duration::from_millis(2500));
            }
            other => panic!("unexpected {other:?}"),
        }
        match parse(&args(
            "connect 198.19.0.1:80 --timeout 300 --from 198.19.0.10",
        )) {
            Ok(Cmd::Connect { from, timeout, .. }) => {
                assert_eq!(
                    from.map(|ip| ip.to_string()).as_deref(),
                    Some("198.19.0.10")
                );
                assert_eq!(timeout, Duration::from_millis(300));
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn rejects_bad_usage() {
        for bad in [
            "",
            "listen",
            "listen 198.19.0.1:1",
            "listen nowhere --for 1",
            "listen 198.19.0.1:1 --for 0",
            "listen 198.19.0.1:1 --for 99999",
            "listen 198.19.0.1:1 --for 1 --for 2",
            "listen 198.19.0.1:1 --for 1 --from 1.2.3.4",
            "connect 198.19.0.1:1",
            "connect 198.19.0.1:1 --timeout",
            "connect 198.19.0.1:1 --timeout 10 --from me",
            "ping 198.19.0.1:1 --timeout 10",
        ] {
            assert!(parse(&args(bad)).is_err(), "{bad:?} should be rejected");
        }
    }
}
