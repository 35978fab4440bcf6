//! Filter throughput beside fail2ban: a generated sshd log of 1,000,000
//! lines (varied addresses, users and messages) through fail2ban's own
//! `sshd` filter, read unchanged from /etc/fail2ban/filter.d, first by
//! fleetban's engine (one thread, failures as the agent reports them), then
//! by `fail2ban-regex -o id` on the same file. Prints lines/s for both, the
//! ratio, peak memory, and whether both found the same failures. Rates are
//! given by wall time and by CPU time (user + system, from /proc), the
//! latter steady on a busy machine.
//!
//! Run: `cargo bench -p fleetban-engine --bench filter_throughput`
//! (`FLEETBAN_BENCH_LINES` sets the line count; `FLEETBAN_BENCH_PEER=0`
//! skips fail2ban-regex).

use std::io::{BufRead, BufWriter, Write};
use std::path::Path;
use std::process::Command;
use std::time::Instant;

use fleetban_engine::date::Zone;
use fleetban_engine::fail2ban::read_filter;
use fleetban_engine::{Filter, FilterOptions};

#[path = "../tests/support/fs.rs"]
mod fs;

use fs::Fs;

/// A small deterministic generator (xorshift), so every run sees the same log.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn generate(path: &Path, lines: usize) -> std::io::Result<()> {
    let users = [
        "root", "admin", "test", "oracle", "ubuntu", "git", "postgres", "user", "guest", "pi",
    ];
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut out = BufWriter::new(std::fs::File::create(path)?);
    for i in 0..lines {
        let s = i / 20;
        let stamp = format!(
            "Nov {:2} {:02}:{:02}:{:02}",
            1 + s / 86_400 % 28,
            s / 3_600 % 24,
            s / 60 % 60,
            s % 60
        );
        let ip = format!(
            "{}.{}.{}.{}",
            1 + rng.below(223),
            rng.below(256),
            rng.below(256),
            1 + rng.below(254)
        );
        let pid = 1_000 + rng.below(64_000);
        let port = 1_024 + rng.below(64_000);
        let user = users[rng.below(users.len() as u64) as usize];
        let msg = match rng.below(100) {
            0..=24 => format!("Failed password for {user} from {ip} port {port} ssh2"),
            25..=34 => {
                format!("Failed password for invalid user {user} from {ip} port {port} ssh2")
            }
            35..=44 => format!("Invalid user {user} from {ip} port {port}"),
            45..=54 => format!(
                "Connection closed by authenticating user {user} {ip} port {port} [preauth]"
            ),
            55..=61 => format!("Received disconnect from {ip} port {port}:11: Bye Bye [preauth]"),
            62..=69 => format!(
                "Accepted publickey for {user} from {ip} port {port} ssh2: RSA SHA256:q1w2e3r4t5y6"
            ),
            70..=79 => format!(
                "pam_unix(sshd:session): session opened for user {user}(uid=1000) by (uid=0)"
            ),
            80..=89 => format!("pam_unix(sshd:session): session closed for user {user}"),
            _ => {
                writeln!(out, "{stamp} web1 CRON[{pid}]: pam_unix(cron:session): session opened for user root(uid=0) by (uid=0)")?;
                continue;
            }
        };
        writeln!(out, "{stamp} web1 sshd[{pid}]: {msg}")?;
    }
    out.flush()
}

/// CPU seconds (user + system) from a `/proc/.../stat` file: this thread's
/// own (`fields` 13 and 14, zero-based after the command name) or those of
/// the children waited for (15 and 16). Clock ticks are 1/100 s on Linux.
fn cpu_seconds(stat: &str, fields: [usize; 2]) -> f64 {
    let Ok(s) = std::fs::read_to_string(stat) else {
        return f64::NAN;
    };
    // The command name may hold spaces; fields start after its `)`.
    let rest = s.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let tick = |i: usize| {
        f.get(i - 2)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(f64::NAN)
    };
    (tick(fields[0]) + tick(fields[1])) / 100.0
}

fn thread_cpu() -> f64 {
    cpu_seconds("/proc/thread-self/stat", [13, 14])
}

fn children_cpu() -> f64 {
    cpu_seconds("/proc/self/stat", [15, 16])
}

fn peak_rss_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn main() {
    let filters = Path::new("/etc/fail2ban/filter.d");
    if !filters.join("sshd.conf").exists() {
        eprintln!("skipped: /etc/fail2ban/filter.d/sshd.conf not found (apt-get install fail2ban)");
        return;
    }
    let lines: usize = std::env::var("FLEETBAN_BENCH_LINES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let dir = std::env::temp_dir().join(format!("fleetban-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("bench dir");
    let log = dir.join("auth.log");
    generate(&log, lines).expect("generate log");
    let size = std::fs::metadata(&log).map(|m| m.len()).unwrap_or(0);
    println!(
        "log: {lines} lines, {:.1} MB, sshd filter from {}",
        size as f64 / 1e6,
        filters.display()
    );

    // fleetban: read, detect, collect each failure's host, as the agent does.
    let def = read_filter(&Fs, &filters.join("sshd"), &[]).expect("sshd filter");
    let zone = Zone::utc();
    let options = FilterOptions {
        zone: zone.clone(),
        now_year: 2026,
        check_all: false,
        undated_is_now: true,
    };
    let mut filter = Filter::new(&def, options).expect("compile");
    let now = 1_764_000_000;
    let started = Instant::now();
    let cpu_started = thread_cpu();
    let mut ours: Vec<String> = Vec::new();
    let mut reader =
        std::io::BufReader::with_capacity(1 << 20, std::fs::File::open(&log).expect("open log"));
    let mut n = 0usize;
    let mut line = String::new();
    loop {
        line.clear();
        if reader.read_line(&mut line).expect("read line") == 0 {
            break;
        }
        n += 1;
        for f in filter
            .process_line(line.trim_end_matches('\n'), now)
            .failures
        {
            if let Some(h) = f.host {
                ours.push(h);
            }
        }
    }
    let ours_s = started.elapsed().as_secs_f64();
    let ours_cpu = thread_cpu() - cpu_started;
    let ours_rate = n as f64 / ours_s;
    let ours_cpu_rate = n as f64 / ours_cpu;
    println!(
        "fleetban:       {n} lines in {ours_s:.3} s = {ours_rate:>10.0} lines/s; {ours_cpu:.2} CPU s = {ours_cpu_rate:>10.0} lines/CPU-s; {} failures, peak RSS {} kB",
        ours.len(),
        peak_rss_kb()
    );

    // fail2ban-regex on the same file, same filter.
    if std::env::var("FLEETBAN_BENCH_PEER").is_ok_and(|v| v == "0") {
        let _ = std::fs::remove_dir_all(&dir);
        return;
    }
    let started = Instant::now();
    let cpu_started = children_cpu();
    let out = Command::new("fail2ban-regex")
        .args(["-o", "id"])
        .arg(&log)
        .arg("sshd")
        .output();
    let f2b_s = started.elapsed().as_secs_f64();
    let f2b_cpu = children_cpu() - cpu_started;
    match out {
        Ok(o) if o.status.success() => {
            let theirs: Vec<String> = String::from_utf8_lossy(&o.stdout)
                .lines()
                .map(str::to_owned)
                .collect();
            let f2b_rate = n as f64 / f2b_s;
            let f2b_cpu_rate = n as f64 / f2b_cpu;
            println!(
                "fail2ban-regex: {n} lines in {f2b_s:.3} s = {f2b_rate:>10.0} lines/s; {f2b_cpu:.2} CPU s = {f2b_cpu_rate:>10.0} lines/CPU-s; {} failures",
                theirs.len()
            );
            println!(
                "ratio: fleetban is {:.1}x fail2ban-regex by wall time, {:.1}x by CPU time",
                ours_rate / f2b_rate,
                ours_cpu_rate / f2b_cpu_rate
            );
            let same = ours == theirs;
            let differ = ours.iter().zip(&theirs).filter(|(a, b)| a != b).count()
                + ours.len().abs_diff(theirs.len());
            println!(
                "same failures and hosts, in order: {}{}",
                if same { "yes" } else { "NO" },
                if same {
                    String::new()
                } else {
                    format!(" ({differ} differ)")
                }
            );
        }
        Ok(o) => println!(
            "fail2ban-regex failed: {}",
            String::from_utf8_lossy(&o.stderr)
        ),
        Err(e) => println!("fail2ban-regex not run: {e}"),
    }
    let _ = std::fs::remove_dir_all(&dir);
}
