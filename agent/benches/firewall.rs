//! Block-list loading: `cargo bench -p fleetban-agent --bench firewall`
//! (as root). This binary makes a network namespace of its own and re-runs
//! itself inside it (`ip netns exec`), so the tools it times start as the
//! agent starts them.
//!
//! Printed, for nftables and for ipset: a full sync of 1,000,000 mixed
//! entries (IPv4 and IPv6 hosts, some prefixes, overlapping ones merged
//! first as the agent does), the kernel memory it took (`Slab` in
//! /proc/meminfo, before and after), one delta of 1 entry (median and p99
//! of 50) and one of 1,000 entries, and port-scoped bans beside them (one
//! `tcp/22` ban, median and p99 of 50, and one `tcp/8000:8100` ban of 101
//! elements); then fail2ban's way, one `iptables -I`
//! process per address, for 5,000 addresses, beside fleetban's sync of the
//! same 5,000, with the ratio.
//!
//! `FLEETBAN_BENCH_ENTRIES` (default 1000000) changes the list's size.

use std::process::Command;
use std::time::{Duration, Instant};

use fleetban_agent::blocklist::Changes;
use fleetban_agent::firewall::{Entry, Firewall, IpsetFirewall, NftablesFirewall};
use ipnet::IpNet;

const INSIDE: &str = "FLEETBAN_BENCH_NETNS";

fn main() -> anyhow::Result<()> {
    if std::env::args().any(|a| a == "--list") {
        return Ok(());
    }
    if std::env::var_os(INSIDE).is_none() {
        return outside();
    }
    let n: usize = std::env::var("FLEETBAN_BENCH_ENTRIES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    agent_update(n);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let entries = list(n, 1);
    let hosts = entries
        .iter()
        .filter(|(t, _)| t.prefix_len() == t.max_prefix_len())
        .count();
    println!(
        "{} entries after merging: {} IPv4, {} IPv6; {} hosts, {} prefixes",
        entries.len(),
        entries
            .iter()
            .filter(|(t, _)| matches!(t, IpNet::V4(_)))
            .count(),
        entries
            .iter()
            .filter(|(t, _)| matches!(t, IpNet::V6(_)))
            .count(),
        hosts,
        entries.len() - hosts
    );
    let backends: Vec<Box<dyn Firewall>> = vec![
        Box::new(NftablesFirewall::new("fleetban".into())),
        Box::new(IpsetFirewall::new("fleetban".into())),
    ];
    for mut fw in backends {
        rt.block_on(bench_backend(fw.as_mut(), &entries))?;
    }
    rt.block_on(fail2ban_way())?;
    Ok(())
}

/// Makes a namespace, runs this binary in it, removes the namespace.
fn outside() -> anyhow::Result<()> {
    let ns = format!("fbbench{}", std::process::id());
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

/// A deterministic pseudo-random source (xorshift64*).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

/// `n` bans: 89% IPv4 hosts, 10% IPv6 hosts, 1% prefixes (IPv4 /16 to /28,
/// IPv6 /48 to /64), with timeouts of 1 to 24 hours, merged as the agent
/// merges them.
fn list(n: usize, seed: u64) -> Vec<Entry> {
    let (bans, now) = block_list(n, seed);
    bans.desired(now)
        .into_iter()
        .map(|(t, u)| (t, u.map(|u| u - now)))
        .collect()
}

fn block_list(n: usize, seed: u64) -> (fleetban_agent::blocklist::BlockList, i64) {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ seed);
    let now = 0;
    let mut bans = fleetban_agent::blocklist::BlockList::default();
    for i in 0..n {
        let r = rng.next();
        let target: IpNet = match i % 100 {
            0 if r & 1 == 0 => {
                let len = 16 + (r >> 8) as u8 % 13;
                IpNet::new(std::net::Ipv4Addr::from((r >> 32) as u32).into(), len)
                    .expect("prefix")
                    .trunc()
            }
            0 => IpNet::new(
                std::net::Ipv6Addr::from(u128::from(r) << 64 | 0x2001_0db8 << 96).into(),
                48 + (r >> 8) as u8 % 17,
            )
            .expect("prefix")
            .trunc(),
            1..=10 => IpNet::from(std::net::IpAddr::from(std::net::Ipv6Addr::from(
                (0x2001_0db8_u128 << 96) | u128::from(r),
            ))),
            _ => IpNet::from(std::net::IpAddr::from(std::net::Ipv4Addr::from(
                (r >> 32) as u32,
            ))),
        };
        let ttl = 3_600_000 + (rng.next() % 82_800_000) as i64;
        bans.add_local(fleetban_agent::blocklist::LocalBan {
            target,
            expires_ms: Some(now + ttl),
            origin: "local".into(),
            jail: "bench".into(),
            reason: String::new(),
            ports: Default::default(),
        });
    }
    (bans, now)
}

/// The agent's own work for one ban with `n` entries held: updating what
/// the firewall should hold (before any firewall call).
fn agent_update(n: usize) {
    use fleetban_agent::blocklist::{update, Enforced, LocalBan};
    let (mut bans, now) = block_list(n, 2);
    let mut applied = Enforced::new();
    let mut nets = Vec::new();
    let t = Instant::now();
    update(&mut bans, &mut applied, &mut nets, now);
    let full = t.elapsed();
    let mut times = Vec::new();
    for i in 0..1_000u32 {
        bans.add_local(LocalBan {
            target: IpNet::from(std::net::IpAddr::from(std::net::Ipv4Addr::from(
                0xc633_6400 + i,
            ))),
            expires_ms: Some(now + 600_000),
            origin: "local".into(),
            jail: "bench".into(),
            reason: String::new(),
            ports: Default::default(),
        });
        let t = Instant::now();
        let c = update(&mut bans, &mut applied, &mut nets, now);
        times.push(t.elapsed());
        assert_eq!(c.add.len(), 1);
    }
    times.sort();
    println!(
        "agent: block list of {} entries computed in {:.0} ms; one more ban: median {:.1} us, p99 {:.1} us (1,000 bans)",
        applied.len(),
        ms(full),
        times[times.len() / 2].as_secs_f64() * 1e6,
        times[times.len() * 99 / 100].as_secs_f64() * 1e6
    );
}

fn slab_kb() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("Slab:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// CPU seconds (user + system) of this process and of the children it has
/// reaped: what the agent's code, the kernel work done on its behalf
/// (netlink) and nft or ipset spent, apart from waiting for a busy machine.
fn cpu_s() -> f64 {
    std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            // Fields after the command name (which may hold spaces): state is
            // field 3; utime, stime, cutime and cstime are fields 14 to 17.
            let rest = s.rsplit_once(')')?.1;
            let f: Vec<&str> = rest.split_whitespace().collect();
            let mut ticks = 0.0;
            for i in 11..=14 {
                ticks += f.get(i)?.parse::<f64>().ok()?;
            }
            Some(ticks / 100.0)
        })
        .unwrap_or(0.0)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1_000.0
}

async fn bench_backend(fw: &mut dyn Firewall, entries: &[Entry]) -> anyhow::Result<()> {
    fw.flush().await?;
    let slab = slab_kb();
    let cpu = cpu_s();
    let t = Instant::now();
    fw.sync(entries, &[]).await?;
    let load = t.elapsed();
    let cpu = cpu_s() - cpu;
    let slab_after = slab_kb();
    // Right after a bulk load the kernel may still be rehashing a set in
    // the background; a dump taken meanwhile can miss elements (lookups do
    // not), so the read-back is retried for a few seconds.
    let mut held = fw.list().await?.len();
    let mut settled = Duration::ZERO;
    let waited = Instant::now();
    while held != entries.len() && waited.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(200)).await;
        held = fw.list().await?.len();
        settled = waited.elapsed();
    }
    anyhow::ensure!(
        held == entries.len(),
        "{} holds {held} of {}",
        fw.name(),
        entries.len()
    );
    println!(
        "{}: full sync of {} entries in {:.2} s ({:.2} s of CPU: agent, kernel for it, tools); kernel slab +{} MB{}",
        fw.name(),
        entries.len(),
        load.as_secs_f64(),
        cpu,
        slab_after.saturating_sub(slab) / 1024,
        if settled.is_zero() {
            String::new()
        } else {
            format!(
                "; a dump held all of them {:.1} s after the read-back began",
                settled.as_secs_f64()
            )
        }
    );
    // The same list again over the loaded one: every element replaced in
    // one transaction (a restart, or a repair after drift).
    let t = Instant::now();
    fw.sync(entries, &[]).await?;
    println!(
        "{}: full sync replacing a loaded list of {} entries in {:.2} s",
        fw.name(),
        entries.len(),
        t.elapsed().as_secs_f64()
    );

    let mut one = Vec::new();
    for i in 0..50u32 {
        let target = IpNet::from(std::net::IpAddr::from(std::net::Ipv4Addr::new(
            198,
            18,
            (i / 250) as u8,
            (i % 250) as u8 + 1,
        )));
        let changes = Changes {
            add: vec![(target, Some(600_000))],
            ..Changes::default()
        };
        let t = Instant::now();
        fw.apply(&changes).await?;
        one.push(t.elapsed());
    }
    one.sort();
    let thousand: Vec<Entry> = (0..1_000u32)
        .map(|i| {
            (
                IpNet::from(std::net::IpAddr::from(std::net::Ipv4Addr::from(
                    0xc613_0000 + i, // 198.19.0.0 and up
                ))),
                Some(600_000),
            )
        })
        .collect();
    let t = Instant::now();
    fw.apply(&Changes {
        add: thousand,
        ..Changes::default()
    })
    .await?;
    let batch = t.elapsed();
    println!(
        "{}: delta of 1 entry: median {:.2} ms, p99 {:.2} ms (50 runs); delta of 1,000 entries: {:.2} ms",
        fw.name(),
        ms(one[one.len() / 2]),
        ms(one[one.len() * 99 / 100]),
        ms(batch)
    );

    // Port-scoped bans beside the full list: one `tcp/22` ban (one
    // element), and one `tcp/8000:8100` ban (101 elements, one per port).
    let port_ban = |i: u32, ports: std::ops::RangeInclusive<u16>| {
        let target = IpNet::from(std::net::IpAddr::from(std::net::Ipv4Addr::from(
            0xc613_1000 + i,
        )));
        Changes {
            ports: fleetban_agent::blocklist::Delta {
                add: ports
                    .map(|port| {
                        (
                            fleetban_agent::blocklist::PortKey {
                                target,
                                proto: 6,
                                port,
                            },
                            Some(600_000),
                        )
                    })
                    .collect(),
                remove: vec![],
            },
            ..Changes::default()
        }
    };
    let mut scoped = Vec::new();
    for i in 0..50u32 {
        let c = port_ban(i, 22..=22);
        let t = Instant::now();
        fw.apply(&c).await?;
        scoped.push(t.elapsed());
    }
    scoped.sort();
    let c = port_ban(100, 8000..=8100);
    let t = Instant::now();
    fw.apply(&c).await?;
    let range = t.elapsed();
    let read = fw.read().await?;
    anyhow::ensure!(
        read.ports.len() == 50 + 101,
        "{} holds {} port elements of 151",
        fw.name(),
        read.ports.len()
    );
    println!(
        "{}: port-scoped ban (tcp/22, 1 element): median {:.2} ms, p99 {:.2} ms (50 runs); tcp/8000:8100 (101 elements): {:.2} ms",
        fw.name(),
        ms(scoped[scoped.len() / 2]),
        ms(scoped[scoped.len() * 99 / 100]),
        ms(range)
    );
    fw.flush().await?;
    Ok(())
}

/// One `iptables -I INPUT -s IP -j DROP` per address, as fail2ban's
/// iptables actions do, against fleetban's one batch for the same list.
async fn fail2ban_way() -> anyhow::Result<()> {
    const N: u32 = 5_000;
    let t = Instant::now();
    for i in 0..N {
        let ip = std::net::Ipv4Addr::from(0xc612_0000 + i).to_string();
        let ok = tokio::process::Command::new("iptables")
            .args(["-w", "-I", "INPUT", "-s", &ip, "-j", "DROP"])
            .status()
            .await?
            .success();
        anyhow::ensure!(ok, "iptables -I failed");
    }
    let theirs = t.elapsed();
    let _ = tokio::process::Command::new("iptables")
        .args(["-F", "INPUT"])
        .status()
        .await?;
    let entries: Vec<Entry> = (0..N)
        .map(|i| {
            (
                IpNet::from(std::net::IpAddr::from(std::net::Ipv4Addr::from(
                    0xc612_0000 + i,
                ))),
                Some(600_000),
            )
        })
        .collect();
    let mut fw = NftablesFirewall::new("fleetban".into());
    let t = Instant::now();
    fw.sync(&entries, &[]).await?;
    let ours = t.elapsed();
    fw.flush().await?;
    println!(
        "fail2ban's way (one iptables -I per address): {N} addresses in {:.2} s; fleetban (nftables, one batch): {:.1} ms; ratio {:.0}x",
        theirs.as_secs_f64(),
        ms(ours),
        theirs.as_secs_f64() / ours.as_secs_f64()
    );
    Ok(())
}
