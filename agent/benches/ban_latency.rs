//! Log line to kernel: `cargo bench -p fleetban-agent --bench ban_latency`
//! (as root). This binary makes a network namespace of its own and re-runs
//! itself inside it; there it starts the real `fleetban-agent` (nftables
//! backend, one jail with `maxretry = 1`) and `nft monitor new elements`,
//! then 1,000 times appends one failed-login line from a new address to the
//! watched log and waits until nftables announces that address in the set.
//! Printed: median, p99 and maximum of the delay from the write to the
//! kernel's announcement (which is after the transaction committed).
//!
//! `FLEETBAN_BENCH_BURSTS` (default 1000) changes the count.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const INSIDE: &str = "FLEETBAN_BENCH_NETNS";
const WAIT: Duration = Duration::from_secs(10);

fn main() -> anyhow::Result<()> {
    if std::env::args().any(|a| a == "--list") {
        return Ok(());
    }
    if std::env::var_os(INSIDE).is_none() {
        return outside();
    }
    let bursts: u32 = std::env::var("FLEETBAN_BENCH_BURSTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000);
    let dir = tempfile::tempdir()?;
    let log = dir.path().join("auth.log");
    std::fs::write(&log, "")?;
    let cfg = dir.path().join("agent.toml");
    std::fs::write(
        &cfg,
        format!(
            r#"[agent]
id = "bench"
state_dir = "{state}"

[firewall]
backend = "nftables"

[[jail]]
name = "sshd"
logpath = ["{log}"]
failregex = ['Failed password for \S+ from <HOST> port \d+']
maxretry = 1
bantime = "1h"
"#,
            state = dir.path().join("state").display(),
            log = log.display()
        ),
    )?;

    let mut monitor = Command::new("nft")
        .args(["monitor", "new", "elements"])
        .stdout(Stdio::piped())
        .spawn()?;
    let (tx, rx) = mpsc::channel::<(Instant, String)>();
    let out = monitor
        .stdout
        .take()
        .ok_or_else(|| anyhow::anyhow!("no stdout"))?;
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines() {
            let Ok(line) = line else { break };
            if tx.send((Instant::now(), line)).is_err() {
                break;
            }
        }
    });

    let mut agent = Command::new(env!("CARGO_BIN_EXE_fleetban-agent"))
        .args(["run", "--config"])
        .arg(&cfg)
        .env("FLEETBAN_LOG", "warn")
        .spawn()?;
    // The agent is ready once its first ban shows up.
    let mut file = std::fs::OpenOptions::new().append(true).open(&log)?;
    let mut delays = Vec::with_capacity(bursts as usize);
    let result = (|| -> anyhow::Result<()> {
        let warm = "10.255.255.254";
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            writeln!(file, "{}", line(warm, 0))?;
            if wait_for(&rx, warm, Duration::from_millis(500)).is_some() {
                break;
            }
            anyhow::ensure!(Instant::now() < deadline, "the agent never banned");
        }
        for i in 0..bursts {
            let k = i + 1;
            let ip = format!("10.{}.{}.{}", (k >> 16) & 255, (k >> 8) & 255, k & 255);
            // Writes go out one at a time: the next waits for the kernel.
            let text = format!("{}\n", line(&ip, i));
            let start = Instant::now();
            file.write_all(text.as_bytes())?;
            let at = wait_for(&rx, &ip, WAIT)
                .ok_or_else(|| anyhow::anyhow!("{ip} not in the kernel after {WAIT:?}"))?;
            delays.push(at.saturating_duration_since(start));
        }
        Ok(())
    })();
    let _ = agent.kill();
    let _ = agent.wait();
    let _ = monitor.kill();
    let _ = monitor.wait();
    result?;
    delays.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1_000.0;
    println!(
        "log line -> address in the nftables set, {} bursts: median {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        delays.len(),
        ms(delays[delays.len() / 2]),
        ms(delays[delays.len() * 99 / 100]),
        ms(delays[delays.len() - 1])
    );
    Ok(())
}

fn line(ip: &str, n: u32) -> String {
    // Now, in the system's zone, as syslog writes it: an old time would fall
    // outside the jail's findtime.
    format!(
        "{} host sshd[{}]: Failed password for root from {ip} port {} ssh2",
        chrono::Local::now().format("%b %e %H:%M:%S"),
        1000 + n,
        40000 + n % 20000
    )
}

/// When the monitor announced an element holding `ip`, within `wait`.
fn wait_for(rx: &mpsc::Receiver<(Instant, String)>, ip: &str, wait: Duration) -> Option<Instant> {
    let deadline = Instant::now() + wait;
    let needle = format!(" {ip} ");
    loop {
        let left = deadline.checked_duration_since(Instant::now())?;
        let (at, line) = rx.recv_timeout(left).ok()?;
        if line.contains(&needle) {
            return Some(at);
        }
    }
}

/// Makes a namespace, runs this binary in it, removes the namespace.
fn outside() -> anyhow::Result<()> {
    let ns = format!("fblat{}", std::process::id());
    let status = Command::new("ip").args(["netns", "add", &ns]).status();
    if !status.is_ok_and(|s| s.success()) {
        println!("skipped: needs root, iproute2 and network namespaces");
        return Ok(());
    }
    let exe = std::env::current_exe()?;
    let run = Command::new("ip")
        .args(["netns", "exec", &ns])
        .arg(exe)
        .args(std::env::args().skip(1))
        .env(INSIDE, "1")
        .status();
    let _ = Command::new("ip").args(["netns", "del", &ns]).status();
    anyhow::ensure!(run?.success(), "the benchmark failed");
    Ok(())
}
