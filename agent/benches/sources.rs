//! Log sources under load: `cargo bench -p fleetban-agent --bench sources`.
//!
//! A writer process (this binary, re-run with `FLEETBAN_BENCH_WRITER`)
//! appends sshd lines to a rotating log; the agent's real pipeline (the
//! sources of a 10-jail configuration, the bounded queue, `Detector` with an
//! sshd filter) reads them here. Printed: lines delivered per second (every
//! line checked to arrive once, in order), the p99 delay from write to
//! detection when not saturated, the peak RSS, and the memory after 200,000
//! failed logins from distinct addresses.
//!
//! `FLEETBAN_BENCH_SECONDS` (default 60) sets how long the writer writes at
//! full speed.

use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use fleetban_agent::config::AgentConfig;
use fleetban_agent::detect::{Detection, Detector};
use fleetban_agent::metrics::SourceMetrics;
use fleetban_agent::source::run::SourcePlan;
use fleetban_agent::source::{Batch, PositionStore};

/// Every line starts with this, then a 20-digit sequence number or
/// timestamp.
const PREFIX: &str = "Nov 25 10:00:00 host sshd[";
const ROTATE_BYTES: u64 = 256 << 20;
/// The number of a writer's last line, which says how many it wrote.
const END: u64 = u64::MAX - 1;
/// The number of lines that carry no sequence number.
const NONE: u64 = u64::MAX;

fn main() -> anyhow::Result<()> {
    if let Ok(mode) = std::env::var("FLEETBAN_BENCH_WRITER") {
        let args: Vec<String> = std::env::args().collect();
        let log = Path::new(args.last().map(String::as_str).unwrap_or_default());
        return match mode.as_str() {
            "flood" => flood(log),
            "paced" => paced(log),
            "distinct" => distinct(log),
            other => anyhow::bail!("unknown writer mode {other}"),
        };
    }
    if std::env::args().any(|a| a == "--list") {
        // `cargo test --benches` lists; nothing to list.
        return Ok(());
    }
    let dir = tempfile::tempdir()?;
    let log = dir.path().join("auth.log");
    std::fs::write(&log, "")?;
    let config = config(dir.path(), &log)?;
    let plan = SourcePlan::new(&config)?;
    let routes = plan.routes.clone();
    let store = PositionStore::open(&dir.path().join("state"))?;
    let metrics = Arc::new(SourceMetrics::default());
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Batch>(16);
    let sources = plan.spawn(&store, &tx, &metrics);
    drop(tx);
    let mut detector = Detector::new(&config.jails, routes, &config.zone)?;
    // The sources open their files at their end first.
    std::thread::sleep(Duration::from_millis(500));

    // 1. Throughput: the writer at full speed, rotating.
    let _writer = spawn_writer("flood", &log)?;
    let start = Instant::now();
    let mut next: u64 = 0;
    let mut failures: u64 = 0;
    let total = 'read: loop {
        let Some(b) = rx.blocking_recv() else {
            anyhow::bail!("sources stopped")
        };
        for line in &b.lines {
            match number(&line.text) {
                Some(END) => {
                    let written = end_count(&line.text)?;
                    anyhow::ensure!(next == written, "{next} lines delivered, {written} written");
                    break 'read next;
                }
                Some(n) => {
                    anyhow::ensure!(n == next, "line {n} delivered, {next} expected");
                    next += 1;
                }
                None => anyhow::bail!("unexpected line {:?}", line.text),
            }
            failures += count_failures(&detector.on_line(line, now_ms()));
        }
    };
    let elapsed = start.elapsed();
    println!(
        "throughput: {total} lines delivered once, in order, in {:.1} s: {:.0} lines/s ({failures} failures detected; writer wrote for {} s)",
        elapsed.as_secs_f64(),
        total as f64 / elapsed.as_secs_f64(),
        seconds()
    );
    println!("peak RSS so far: {} kB", vm_hwm());

    // Written data goes to disk first, so that the writer's writes are not
    // held up by the kernel flushing the flood's gigabytes.
    let _ = std::fs::remove_file(log.with_extension("log.1"));
    let _ = Command::new("sync").status();

    // 2. Latency: one line at a time, 2,000 lines/s, each stamped with the
    // time it was written.
    let _writer = spawn_writer("paced", &log)?;
    let mut delays = Vec::new();
    'paced: while let Some(b) = rx.blocking_recv() {
        for line in &b.lines {
            let Some(stamp) = number(&line.text) else {
                continue;
            };
            if stamp == END {
                let written = end_count(&line.text)?;
                anyhow::ensure!(
                    delays.len() as u64 == written,
                    "{} of {written} detected",
                    delays.len()
                );
                break 'paced;
            }
            if !detector.on_line(line, now_ms()).is_empty() {
                let d = now_ns().saturating_sub(stamp);
                if d > 10_000_000 && std::env::var("FLEETBAN_BENCH_DEBUG").is_ok() {
                    eprintln!("slow #{} {:.1} ms", delays.len(), d as f64 / 1e6);
                }
                delays.push(d);
            }
        }
    }
    anyhow::ensure!(!delays.is_empty(), "no line detected");
    delays.sort_unstable();
    let p =
        |q: f64| delays[((delays.len() as f64 * q) as usize).min(delays.len() - 1)] as f64 / 1e6;
    println!(
        "latency, write to detection ({} lines at 2,000/s): p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms",
        delays.len(),
        p(0.5),
        p(0.99),
        p(1.0)
    );
    println!("peak RSS (10 jails, after full load): {} kB", vm_hwm());

    // 3. 200,000 failed logins from 200,000 addresses.
    let rss_before = vm_rss();
    let _writer = spawn_writer("distinct", &log)?;
    let mut seen = 0u64;
    'distinct: while let Some(b) = rx.blocking_recv() {
        for line in &b.lines {
            if number(&line.text) == Some(END) {
                let written = end_count(&line.text)?;
                anyhow::ensure!(seen == written, "{seen} of {written} delivered");
                break 'distinct;
            }
            seen += 1;
            detector.on_line(line, now_ms());
        }
    }
    println!(
        "200,000 distinct addresses: {} tracked, RSS {} kB (was {rss_before} kB), peak {} kB",
        detector.tracked(),
        vm_rss(),
        vm_hwm()
    );
    detector.expire(now_ms() + 11 * 60 * 1000);
    println!(
        "after findtime (10 min) and bantime: {} tracked",
        detector.tracked()
    );
    let runtime = tokio::runtime::Builder::new_current_thread().build()?;
    drop(rx);
    runtime.block_on(sources.stop());
    Ok(())
}

fn config(dir: &Path, log: &Path) -> anyhow::Result<AgentConfig> {
    let mut text = format!(
        "[agent]\nid = \"bench\"\nstate_dir = \"{}\"\n[firewall]\nbackend = \"log\"\n",
        dir.join("state").display()
    );
    // fail2ban's own sshd filter where fail2ban is installed; else a
    // regex of the same kind (the date is cut from the line before matching).
    let sshd = if Path::new("/etc/fail2ban/filter.d/sshd.conf").is_file() {
        println!("filter: fail2ban's sshd (/etc/fail2ban/filter.d/sshd.conf)");
        r#"filter = "sshd""#
    } else {
        println!("filter: a native sshd regex (fail2ban is not installed)");
        r#"failregex = ['sshd\[\d+\]: Failed password for (?:invalid user )?\S+ from <HOST> port \d+ ssh2$']"#
    };
    text.push_str(&format!(
        "[[jail]]\nname = \"sshd\"\nlogpath = [\"{}\"]\n{sshd}\nmaxretry = 5\nfindtime = \"10m\"\nbantime = \"10m\"\n",
        log.display()
    ));
    // Nine more jails on logs of their own, quiet.
    for i in 1..10 {
        let other = dir.join(format!("other{i}.log"));
        std::fs::write(&other, "")?;
        text.push_str(&format!(
            "[[jail]]\nname = \"j{i}\"\nlogpath = [\"{}\"]\nfailregex = ['error from <HOST>']\n",
            other.display()
        ));
    }
    Ok(AgentConfig::parse(&dir.join("bench.toml"), &text)?)
}

fn seconds() -> u64 {
    std::env::var("FLEETBAN_BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60)
}

/// The number after the prefix: a sequence number or a timestamp.
fn number(line: &str) -> Option<u64> {
    line.get(PREFIX.len()..PREFIX.len() + 20)?.parse().ok()
}

fn count_failures(d: &[Detection]) -> u64 {
    d.iter()
        .filter(|d| matches!(d, Detection::Failure { .. }))
        .count() as u64
}

fn now_ms() -> i64 {
    i64::try_from(now_ns() / 1_000_000).unwrap_or(i64::MAX)
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

fn status_kb(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

fn vm_hwm() -> u64 {
    status_kb("VmHWM:")
}

fn vm_rss() -> u64 {
    status_kb("VmRSS:")
}

/// A writer process, killed when dropped.
struct Writer(std::process::Child);

impl Drop for Writer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn_writer(mode: &str, log: &Path) -> anyhow::Result<Writer> {
    let child = Command::new(std::env::current_exe()?)
        .env("FLEETBAN_BENCH_WRITER", mode)
        .arg(log)
        .spawn()?;
    Ok(Writer(child))
}

/// How many lines a writer's last line says it wrote.
fn end_count(line: &str) -> anyhow::Result<u64> {
    Ok(line.rsplit(' ').next().unwrap_or_default().parse()?)
}

fn write_end(out: &mut impl Write, n: u64) -> anyhow::Result<()> {
    writeln!(out, "{PREFIX}{END:020}]: end {n}")?;
    out.flush()?;
    Ok(())
}

fn open_log(log: &Path) -> anyhow::Result<std::io::BufWriter<std::fs::File>> {
    let f = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(log)?;
    Ok(std::io::BufWriter::with_capacity(64 * 1024, f))
}

/// Full speed for the configured seconds, rotating by rename every 256 MiB
/// (the old file is renamed to `.1`, replacing the previous one).
fn flood(log: &Path) -> anyhow::Result<()> {
    let end = Instant::now() + Duration::from_secs(seconds());
    let mut out = open_log(log)?;
    let mut size = 0u64;
    let mut n = 0u64;
    let rotated = log.with_extension("log.1");
    while Instant::now() < end {
        for _ in 0..10_000 {
            // 1,000 attacking addresses; the 200,000 distinct ones come later.
            let a = n % 10;
            let b = (n / 10) % 100;
            let written = if n.is_multiple_of(2) {
                writeln!(
                    out,
                    "{PREFIX}{n:020}]: Failed password for root from 10.9.{a}.{b} port 4{:04} ssh2",
                    n % 10_000
                )
            } else {
                writeln!(out, "{PREFIX}{n:020}]: Connection closed by authenticating user git 10.8.{a}.{b} port 5{:04} [preauth]", n % 10_000)
            };
            written?;
            size += 90;
            n += 1;
        }
        if size >= ROTATE_BYTES {
            out.flush()?;
            std::fs::rename(log, &rotated)?;
            out = open_log(log)?;
            size = 0;
        }
    }
    write_end(&mut out, n)
}

/// One line at a time, flushed, 2,000 a second for 10 s.
fn paced(log: &Path) -> anyhow::Result<()> {
    let mut f = std::fs::OpenOptions::new().append(true).open(log)?;
    let start = Instant::now();
    let lines = 20_000u64;
    for i in 0..lines {
        let due = start + Duration::from_micros(i * 500);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let a = i % 251;
        let line = format!(
            "{PREFIX}{:020}]: Failed password for root from 10.7.{a}.{} port 22 ssh2\n",
            now_ns(),
            i / 251
        );
        f.write_all(line.as_bytes())?;
    }
    write_end(&mut f, lines)
}

/// 200,000 failed logins, each from a different address.
fn distinct(log: &Path) -> anyhow::Result<()> {
    let mut out = open_log(log)?;
    let lines = 200_000u64;
    for i in 0..lines {
        writeln!(
            out,
            "{PREFIX}{:020}]: Failed password for root from 172.{}.{}.{} port 22 ssh2",
            NONE,
            16 + (i >> 16),
            (i >> 8) & 255,
            i & 255
        )?;
    }
    write_end(&mut out, lines)
}
