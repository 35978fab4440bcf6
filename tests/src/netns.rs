//! A lab of network namespaces for end-to-end tests, removed on drop.
//!
//! ```text
//!   namespace a                root namespace               namespace b            namespace x
//!   198.18.1.2/24 ─── veth ─── 198.18.1.1/24
//!                              198.18.2.1/24 ─── veth ─── 198.18.2.2/24
//!                                                          198.19.0.1/24 ─ veth ─ 198.19.0.10/24
//!                                                                                 198.19.0.11/24
//! ```
//!
//! The server runs in the root namespace, agents in `a` and `b` (default
//! route towards the root), and `x` is an attacker that reaches only `b`.
//! Only these benchmarking-range addresses are used, all on links the lab
//! made, so no traffic ever leaves the machine. Because the root side's
//! addresses are fixed, one lab exists at a time on the machine: `Lab::new`
//! waits for any other lab (in this or another test process) to be dropped.

use std::ffi::OsStr;
use std::net::Ipv4Addr;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixListener};
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::privileges::{run, tool};

/// Root namespace's address on the link to `a`.
pub const ROOT_A_ADDR: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 1);
/// `a`'s address; its default route goes via [`ROOT_A_ADDR`].
pub const A_ADDR: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 2);
/// Root namespace's address on the link to `b`.
pub const ROOT_B_ADDR: Ipv4Addr = Ipv4Addr::new(198, 18, 2, 1);
/// `b`'s address towards the root; its default route goes via [`ROOT_B_ADDR`].
pub const B_ADDR: Ipv4Addr = Ipv4Addr::new(198, 18, 2, 2);
/// `b`'s address on the link to the attacker `x`.
pub const B_X_ADDR: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 1);
/// The attacker's two addresses, so that a test can ban one and not the other.
pub const X_ADDRS: [Ipv4Addr; 2] = [Ipv4Addr::new(198, 19, 0, 10), Ipv4Addr::new(198, 19, 0, 11)];

/// Longest interface name Linux accepts.
const IFNAME_MAX: usize = 15;
/// Abstract unix socket held by the live lab; the kernel frees it when its
/// process dies, so a crashed test never blocks the next one.
const LOCK_NAME: &[u8] = b"fleetban-tests-netns-lab";
/// Prefix of every lab namespace; stale ones are removed by the next lab.
const NS_PREFIX: &str = "fbl-";
const LOCK_WAIT: Duration = Duration::from_secs(600);
const LINK_WAIT: Duration = Duration::from_secs(5);

/// A namespace of the lab.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Host {
    /// An agent's host, linked to the root namespace.
    A,
    /// An agent's host, linked to the root namespace and to `X`.
    B,
    /// The attacker, linked to `B` only.
    X,
}

impl Host {
    /// Every namespace of the lab.
    pub const ALL: [Host; 3] = [Host::A, Host::B, Host::X];

    fn index(self) -> usize {
        match self {
            Host::A => 0,
            Host::B => 1,
            Host::X => 2,
        }
    }

    fn letter(self) -> char {
        ['a', 'b', 'x'][self.index()]
    }
}

/// Namespaces `a`, `b` and `x` linked as in the module docs; dropping it
/// kills what still runs inside and deletes the namespaces and links.
pub struct Lab {
    ip: PathBuf,
    nft: PathBuf,
    namespaces: [String; 3],
    /// Start of every interface name of this lab, e.g. `fb4242n0`.
    prefix: String,
    /// Dropped last, after the cleanup in `Drop::drop`.
    _lock: UnixListener,
}

// No `Default`: building a lab changes the machine, which `new` makes visible.
#[allow(clippy::new_without_default)]
impl Lab {
    /// Builds the lab. Call [`crate::privileges::require_netns`] first; this
    /// panics with the failing command if the lab cannot be built.
    pub fn new() -> Lab {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let ip = tool("ip").expect("`ip` not found; call privileges::require_netns first");
        let nft = tool("nft").expect("`nft` not found; call privileges::require_netns first");
        let lock = acquire_lock();
        let pid = std::process::id();
        let n = NEXT.fetch_add(1, Ordering::Relaxed) % 1000;
        let prefix = format!("fb{pid}n{n}");
        assert!(
            prefix.len() + 2 <= IFNAME_MAX,
            "interface prefix {prefix} too long"
        );
        let lab = Lab {
            namespaces: Host::ALL.map(|h| format!("{NS_PREFIX}{pid}-{n}-{}", h.letter())),
            ip,
            nft,
            prefix,
            _lock: lock,
        };
        // Holding the lock, any other lab namespace is a crashed run's leftover.
        lab.remove_stale();
        // On a panic the half-built lab is dropped, which cleans up.
        lab.build()
            .unwrap_or_else(|e| panic!("cannot build the netns lab: {e}"));
        lab
    }

    /// The namespace's name, for `ip netns exec` and friends.
    pub fn ns_name(&self, host: Host) -> &str {
        &self.namespaces[host.index()]
    }

    /// `ip netns exec <ns> <program>`: add arguments, then spawn or run it.
    pub fn command(&self, host: Host, program: impl AsRef<OsStr>) -> Command {
        let mut cmd = Command::new(&self.ip);
        cmd.args(["netns", "exec", self.ns_name(host)]).arg(program);
        cmd
    }

    /// `nft list ruleset` inside the namespace; panics if nft fails.
    pub fn nft_list_ruleset(&self, host: Host) -> String {
        let mut cmd = self.command(host, &self.nft);
        cmd.args(["list", "ruleset"]);
        run(&mut cmd).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Cuts (`up == false`) or restores the host's link: for `A` and `B` the
    /// link to the root namespace, for `X` the link to `B`.
    pub fn set_link_up(&self, host: Host, up: bool) {
        let state = if up { "up" } else { "down" };
        let result = match host {
            Host::A | Host::B => {
                run(Command::new(&self.ip).args(["link", "set", &self.ifname(host, 0), state]))
            }
            Host::X => run(Command::new(&self.ip).args([
                "-n",
                self.ns_name(Host::B),
                "link",
                "set",
                &self.ifname(Host::X, 0),
                state,
            ])),
        };
        result.unwrap_or_else(|e| panic!("{e}"));
    }

    /// Interface names: `<prefix><host letter><side>`; side 0 is the root's
    /// end (for `x`: `b`'s end), side 1 the host's.
    fn ifname(&self, host: Host, side: u8) -> String {
        format!("{}{}{side}", self.prefix, host.letter())
    }

    fn ip(&self, args: &[&str]) -> Result<String, String> {
        run(Command::new(&self.ip).args(args))
    }

    fn build(&self) -> Result<(), String> {
        for ns in &self.namespaces {
            self.ip(&["netns", "add", ns])?;
            self.ip(&["-n", ns, "link", "set", "lo", "up"])?;
        }
        let uplinks = [
            (Host::A, ROOT_A_ADDR, A_ADDR),
            (Host::B, ROOT_B_ADDR, B_ADDR),
        ];
        for (host, root_addr, host_addr) in uplinks {
            let (ns, outer, inner) = (
                self.ns_name(host),
                self.ifname(host, 0),
                self.ifname(host, 1),
            );
            self.ip(&[
                "link", "add", &outer, "type", "veth", "peer", "name", &inner, "netns", ns,
            ])?;
            self.ip(&["addr", "add", &format!("{root_addr}/24"), "dev", &outer])?;
            self.ip(&["link", "set", &outer, "up"])?;
            self.ip(&[
                "-n",
                ns,
                "addr",
                "add",
                &format!("{host_addr}/24"),
                "dev",
                &inner,
            ])?;
            self.ip(&["-n", ns, "link", "set", &inner, "up"])?;
            self.ip(&[
                "-n",
                ns,
                "route",
                "add",
                "default",
                "via",
                &root_addr.to_string(),
            ])?;
        }
        let (b, x) = (self.ns_name(Host::B), self.ns_name(Host::X));
        let (b_end, x_end) = (self.ifname(Host::X, 0), self.ifname(Host::X, 1));
        self.ip(&[
            "-n", b, "link", "add", &b_end, "type", "veth", "peer", "name", &x_end, "netns", x,
        ])?;
        self.ip(&[
            "-n",
            b,
            "addr",
            "add",
            &format!("{B_X_ADDR}/24"),
            "dev",
            &b_end,
        ])?;
        self.ip(&["-n", b, "link", "set", &b_end, "up"])?;
        for addr in X_ADDRS {
            self.ip(&["-n", x, "addr", "add", &format!("{addr}/24"), "dev", &x_end])?;
        }
        self.ip(&["-n", x, "link", "set", &x_end, "up"])?;
        self.wait_for_carrier()
    }

    /// veth ends come up asynchronously; wait (bounded) until all carry.
    fn wait_for_carrier(&self) -> Result<(), String> {
        let ends = [
            (None, self.ifname(Host::A, 0)),
            (Some(Host::A), self.ifname(Host::A, 1)),
            (None, self.ifname(Host::B, 0)),
            (Some(Host::B), self.ifname(Host::B, 1)),
            (Some(Host::B), self.ifname(Host::X, 0)),
            (Some(Host::X), self.ifname(Host::X, 1)),
        ];
        let deadline = Instant::now() + LINK_WAIT;
        for (host, ifname) in ends {
            loop {
                let shown = match host {
                    Some(h) => self.ip(&["-n", self.ns_name(h), "link", "show", &ifname])?,
                    None => self.ip(&["link", "show", &ifname])?,
                };
                if shown.contains("LOWER_UP") {
                    break;
                }
                if Instant::now() > deadline {
                    return Err(format!(
                        "{ifname} has no carrier after {LINK_WAIT:?}: {shown}"
                    ));
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        Ok(())
    }

    /// Removes namespaces and root-side links left by labs whose process died.
    fn remove_stale(&self) {
        let listed = self.ip(&["netns", "list"]).unwrap_or_default();
        for ns in listed.lines().filter_map(|l| l.split_whitespace().next()) {
            if ns.starts_with(NS_PREFIX) {
                eprintln!("removing stale lab namespace {ns}");
                self.remove_namespace(ns);
            }
        }
        let links = self.ip(&["-o", "link", "show"]).unwrap_or_default();
        for name in links.lines().filter_map(|l| l.split(':').nth(1)) {
            let name = name.trim().split('@').next().unwrap_or_default();
            if is_lab_uplink(name) {
                eprintln!("removing stale lab link {name}");
                let _ = self.ip(&["link", "del", name]);
            }
        }
    }

    /// Kills what still runs in the namespace, then deletes it.
    fn remove_namespace(&self, ns: &str) {
        let pids = self.ip(&["netns", "pids", ns]).unwrap_or_default();
        let pids: Vec<&str> = pids.split_whitespace().collect();
        if !pids.is_empty() {
            let _ = Command::new("sh")
                .args(["-c", "kill -KILL \"$@\" 2>/dev/null", "sh"])
                .args(&pids)
                .status();
        }
        let _ = self.ip(&["netns", "del", ns]);
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for ns in &self.namespaces {
            self.remove_namespace(ns);
        }
        // Deleting the root ends frees the root's addresses even if a
        // namespace lingers; usually they are already gone with their peers.
        for host in [Host::A, Host::B] {
            let name = self.ifname(host, 0);
            if self.ip(&["link", "show", &name]).is_ok() {
                let _ = self.ip(&["link", "del", &name]);
            }
        }
    }
}

/// Whether `name` looks like a lab's root-side interface: `fb<pid>n<n>a0` or
/// `fb<pid>n<n>b0`.
fn is_lab_uplink(name: &str) -> bool {
    let Some(rest) = name.strip_prefix("fb") else {
        return false;
    };
    let Some(rest) = rest.strip_suffix("a0").or_else(|| rest.strip_suffix("b0")) else {
        return false;
    };
    let Some((pid, n)) = rest.split_once('n') else {
        return false;
    };
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    digits(pid) && digits(n)
}

fn acquire_lock() -> UnixListener {
    let addr = SocketAddr::from_abstract_name(LOCK_NAME).expect("valid abstract socket name");
    let deadline = Instant::now() + LOCK_WAIT;
    let mut told = false;
    loop {
        match UnixListener::bind_addr(&addr) {
            Ok(listener) => return listener,
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && Instant::now() < deadline => {
                if !told {
                    eprintln!("waiting for another netns lab to be dropped");
                    told = true;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(e) => panic!("cannot take the netns lab lock: {e}"),
        }
    }
}

/// A TCP service listening in `B` on its link to `X` (`fleetban-netcheck
/// listen`), stopped on drop.
pub struct Service {
    child: std::process::Child,
    /// `address:port` it listens on.
    pub addr: String,
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Lab {
    /// Starts a TCP service in `B`, reachable from `X`; panics if it cannot.
    pub fn service_in_b(&self) -> Service {
        use std::io::{BufRead, BufReader};
        let mut child = self
            .command(Host::B, crate::bins::bin("fleetban-netcheck"))
            .args(["listen", &format!("{B_X_ADDR}:0"), "--for", "120"])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("start listener");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("listening line");
        let addr = line
            .trim()
            .strip_prefix("listening ")
            .expect("listening <addr>")
            .to_owned();
        Service { child, addr }
    }

    /// Whether a TCP connection from `from` (an address of `X`) to
    /// `service` succeeds within 1.5 s.
    pub fn connects(&self, service: &Service, from: &str) -> bool {
        let out = self
            .command(Host::X, crate::bins::bin("fleetban-netcheck"))
            .args([
                "connect",
                &service.addr,
                "--from",
                from,
                "--timeout",
                "1500",
            ])
            .output()
            .expect("run netcheck");
        match out.status.code() {
            Some(0) => true,
            Some(1) => false,
            _ => panic!("netcheck failed: {}", String::from_utf8_lossy(&out.stderr)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::is_lab_uplink;

    #[test]
    fn recognises_only_lab_uplinks() {
        assert!(is_lab_uplink("fb4242n0a0"));
        assert!(is_lab_uplink("fb1n999b0"));
        assert!(!is_lab_uplink("fb4242n0x0"));
        assert!(!is_lab_uplink("fb4242n0a1"));
        assert!(!is_lab_uplink("fbn0a0"));
        assert!(!is_lab_uplink("eth0"));
        assert!(!is_lab_uplink("fb12xn0a0"));
    }
}
