//! A LAN of network-namespace hosts for multi-host tests (root only): a bridge in a namespace of
//! its own, one namespace per host with an `eth0` on that bridge, and addresses (10.77.0.0/24)
//! that exist only inside those namespaces, so nothing of the machine's own network is touched
//! and two runs never share a name.
//!
//! ```text
//!   <p>-br:  br0 ── v1 ─ veth ─ eth0 of <p>-h1 (10.77.0.1)
//!                ├── v2 ─ veth ─ eth0 of <p>-h2 (10.77.0.2)      <p> = slan<pid>x<n>
//!                ├── ...
//!                └── vc ─ veth ─ eth0 of <p>-cl (10.77.0.100, the client host)
//! ```
//! Processes run on a host through `ip netns exec` ([`Lan::command`]); the test's own HTTP
//! client runs on the client host: [`Lan::run_on_client`] runs a future on a thread that entered
//! the client namespace, so every socket it opens is the client host's ([`Lan::spawn_on_host`]
//! does the same on a node's host, for the delay proxy). Faults are nftables rules inside a
//! host's namespace ([`Lan::partition`], [`Lan::heal`]); the delay proxy's redirect is a table of
//! its own there ([`Lan::redirect_sessions`]), which a heal leaves alone. Everything is removed
//! when the [`Lan`] is dropped, panics included; namespaces left by a run that was killed are
//! removed by the next run (their names carry the pid of a process that no longer exists).

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread::JoinHandle;

/// Prefix of every namespace this module creates.
const PREFIX: &str = "slan";

/// The nftables table a fault lives in (inside one host's namespace).
const FAULT_TABLE: &str = "senti_fault";

/// The nftables table of a delay proxy's redirect (inside one host's namespace; apart from
/// [`FAULT_TABLE`], so that healing a fault leaves the sessions on their path).
const REDIRECT_TABLE: &str = "senti_redirect";

/// The client host's address.
pub const CLIENT_ADDR: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 100);

/// A LAN of namespace hosts; dropped, it is gone.
pub struct Lan {
    prefix: String,
    hosts: usize,
    /// Namespaces created so far (removed on drop, in reverse).
    namespaces: Vec<String>,
}

/// Why a [`Lan`] cannot be built here.
#[derive(Debug)]
pub struct Unavailable(pub String);

impl std::fmt::Display for Unavailable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl Lan {
    /// Checks that this process can build namespace LANs (root, `ip`, `nft`); the error says what
    /// is missing and how to get it.
    pub fn check_prerequisites() -> Result<(), Unavailable> {
        if !nix::unistd::Uid::effective().is_root() {
            return Err(Unavailable(
                "the LAN suite creates network namespaces and needs root (CI runs as root; locally: sudo -E make lan-suite)"
                    .into(),
            ));
        }
        for (tool, package) in [("ip", "iproute2"), ("nft", "nftables")] {
            let found = Command::new(tool).arg("-V").stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok();
            if !found {
                return Err(Unavailable(format!(
                    "`{tool}` is missing: apt-get install -y {package} (make test installs it)"
                )));
            }
        }
        Ok(())
    }

    /// Builds a LAN of `hosts` hosts (10.77.0.1 ...) and the client host.
    pub fn new(hosts: usize) -> Result<Self, Unavailable> {
        Self::check_prerequisites()?;
        remove_leftovers();
        static RUNS: AtomicU32 = AtomicU32::new(0);
        let prefix = format!("{PREFIX}{}x{}", std::process::id(), RUNS.fetch_add(1, Ordering::Relaxed));
        let mut lan = Self { prefix, hosts, namespaces: Vec::new() };
        lan.build().map_err(Unavailable)?;
        Ok(lan)
    }

    fn build(&mut self) -> Result<(), String> {
        let bridge = format!("{}-br", self.prefix);
        self.add_namespace(&bridge)?;
        ip(&["-n", &bridge, "link", "add", "br0", "type", "bridge"])?;
        ip(&["-n", &bridge, "link", "set", "br0", "up"])?;
        let ends: Vec<(String, String, IpAddr)> = (1..=self.hosts)
            .map(|i| (self.host_ns(i), format!("v{i}"), self.addr(i)))
            .chain([(self.client_ns(), "vc".to_owned(), IpAddr::V4(CLIENT_ADDR))])
            .collect();
        for (ns, port, addr) in ends {
            self.add_namespace(&ns)?;
            ip(&["-n", &bridge, "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns", &ns])?;
            ip(&["-n", &bridge, "link", "set", &port, "master", "br0", "up"])?;
            ip(&["-n", &ns, "addr", "add", &format!("{addr}/24"), "dev", "eth0"])?;
            ip(&["-n", &ns, "link", "set", "eth0", "up"])?;
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
        }
        Ok(())
    }

    fn add_namespace(&mut self, name: &str) -> Result<(), String> {
        ip(&["netns", "add", name])?;
        self.namespaces.push(name.to_owned());
        Ok(())
    }

    /// This LAN's name (`slan<pid>x<n>`), the prefix of its namespaces.
    pub fn name(&self) -> &str {
        &self.prefix
    }

    /// Host `i`'s address (hosts count from 1).
    pub fn addr(&self, i: usize) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(10, 77, 0, i as u8))
    }

    /// Host `i`'s namespace.
    pub fn host_ns(&self, i: usize) -> String {
        format!("{}-h{i}", self.prefix)
    }

    fn client_ns(&self) -> String {
        format!("{}-cl", self.prefix)
    }

    /// `program` to be run on host `i` (`ip netns exec <ns> program`; `ip` execs it, so the
    /// child's pid is the program's).
    pub fn command(&self, i: usize, program: &Path) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &self.host_ns(i)]).arg(program);
        command
    }

    /// Cuts host `i` off the LAN in both directions: nftables drops everything through its
    /// `eth0`, as a pulled cable would (its own loopback keeps working).
    pub fn partition(&self, i: usize) -> Result<(), String> {
        let rules = format!(
            "table inet {FAULT_TABLE} {{\n\
             chain in {{ type filter hook input priority -10; policy accept; iifname \"eth0\" drop; }}\n\
             chain out {{ type filter hook output priority -10; policy accept; oifname \"eth0\" drop; }}\n\
             }}\n"
        );
        nft(&self.host_ns(i), &["-f", "-"], Some(&rules))
    }

    /// Cuts host `i` off one way: nftables drops everything arriving through its `eth0`, while
    /// what it sends still goes out (a broken receive path, a one-way firewall rule).
    pub fn drop_inbound(&self, i: usize) -> Result<(), String> {
        let rules = format!(
            "table inet {FAULT_TABLE} {{\n\
             chain in {{ type filter hook input priority -10; policy accept; iifname \"eth0\" drop; }}\n\
             }}\n"
        );
        nft(&self.host_ns(i), &["-f", "-"], Some(&rules))
    }

    /// Drops `percent`% of host `i`'s packets at random, both ways, on its `eth0` (nftables
    /// `numgen random`): a lossy link.
    pub fn lose(&self, i: usize, percent: u8) -> Result<(), String> {
        let rules = format!(
            "table inet {FAULT_TABLE} {{\n\
             chain in {{ type filter hook input priority -10; policy accept; iifname \"eth0\" numgen random mod 100 < {percent} drop; }}\n\
             chain out {{ type filter hook output priority -10; policy accept; oifname \"eth0\" numgen random mod 100 < {percent} drop; }}\n\
             }}\n"
        );
        nft(&self.host_ns(i), &["-f", "-"], Some(&rules))
    }

    /// Takes host `i`'s link down (`up` false) or up again, at the bridge's end of its cable: the
    /// host sees carrier loss, as when a switch port goes down.
    pub fn link(&self, i: usize, up: bool) -> Result<(), String> {
        ip(&["-n", &format!("{}-br", self.prefix), "link", "set", &format!("v{i}"), if up { "up" } else { "down" }])
    }

    /// Removes host `i`'s fault rules.
    pub fn heal(&self, i: usize) -> Result<(), String> {
        nft(&self.host_ns(i), &["delete", "table", "inet", FAULT_TABLE], None)
    }

    /// Sends host `i`'s TCP connections of port `port` through its local port `to`, both ways:
    /// those it opens to other hosts (nat output, to 127.0.0.1:`to`) except those of sockets
    /// marked `exempt_mark` (the proxy's own), and those other hosts open to it (nat prerouting,
    /// to its address:`to`). Connections already open keep their path (conntrack): redirect
    /// before they are made. The proxy finds where each was going with `SO_ORIGINAL_DST`.
    pub fn redirect_sessions(&self, i: usize, port: u16, to: u16, exempt_mark: u32) -> Result<(), String> {
        let rules = format!(
            "table inet {REDIRECT_TABLE} {{\n\
             chain out {{ type nat hook output priority -100; policy accept; oifname \"eth0\" tcp dport {port} meta mark != {exempt_mark} redirect to :{to}; }}\n\
             chain in {{ type nat hook prerouting priority -100; policy accept; iifname \"eth0\" tcp dport {port} redirect to :{to}; }}\n\
             }}\n"
        );
        nft(&self.host_ns(i), &["-f", "-"], Some(&rules))
    }

    /// Removes host `i`'s redirect (connections already redirected keep their path).
    pub fn remove_redirect(&self, i: usize) -> Result<(), String> {
        nft(&self.host_ns(i), &["delete", "table", "inet", REDIRECT_TABLE], None)
    }

    /// Runs the future `make` returns to completion on a thread inside the client host's
    /// namespace (every socket the future opens is the client host's; see [`spawn_in`]).
    pub fn run_on_client<M, F, T>(&self, make: M) -> T
    where
        M: FnOnce() -> F + Send + 'static,
        F: std::future::Future<Output = T>,
        T: Send + 'static,
    {
        match spawn_in(self.client_ns(), make).join() {
            Ok(value) => value,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }

    /// Runs the future `make` returns on a new thread inside host `i`'s namespace (every socket
    /// the future opens is that host's, as if a process of the host opened it; see [`spawn_in`]).
    pub fn spawn_on_host<M, F, T>(&self, i: usize, make: M) -> JoinHandle<T>
    where
        M: FnOnce() -> F + Send + 'static,
        F: std::future::Future<Output = T>,
        T: Send + 'static,
    {
        spawn_in(self.host_ns(i), make)
    }
}

/// A thread that enters namespace `ns` and runs the future `make` returns to completion on a
/// current-thread runtime of its own: a socket belongs to the namespace of the thread that
/// creates it, so every socket the future opens is inside `ns`. The future is made on that
/// thread, so it need not be `Send`.
fn spawn_in<M, F, T>(ns: String, make: M) -> JoinHandle<T>
where
    M: FnOnce() -> F + Send + 'static,
    F: std::future::Future<Output = T>,
    T: Send + 'static,
{
    let path = format!("/run/netns/{ns}");
    std::thread::spawn(move || {
        let ns = std::fs::File::open(&path).unwrap_or_else(|err| panic!("cannot open {path}: {err}"));
        nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWNET)
            .unwrap_or_else(|err| panic!("cannot enter the namespace {path}: {err}"));
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a current-thread runtime builds. This is a bug.");
        runtime.block_on(make())
    })
}

impl Drop for Lan {
    fn drop(&mut self) {
        for ns in self.namespaces.iter().rev() {
            if let Err(err) = ip(&["netns", "del", ns]) {
                eprintln!("netns: could not remove {ns}: {err}");
            }
        }
    }
}

/// Removes namespaces of earlier runs whose process is gone (a run killed before its drop).
fn remove_leftovers() {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else { return };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let name = line.split_whitespace().next().unwrap_or_default();
        let Some(pid) = name.strip_prefix(PREFIX).and_then(|rest| rest.split('x').next()) else { continue };
        let Ok(pid) = pid.parse::<u32>() else { continue };
        if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = ip(&["netns", "del", name]);
        }
    }
}

fn ip(args: &[&str]) -> Result<(), String> {
    checked(Command::new("ip").args(args).output(), &format!("ip {}", args.join(" ")))
}

fn nft(ns: &str, args: &[&str], stdin_opt: Option<&str>) -> Result<(), String> {
    let mut command = Command::new("ip");
    command.args(["netns", "exec", ns, "nft"]).args(args);
    let what = format!("nft {} (in {ns})", args.join(" "));
    let Some(stdin) = stdin_opt else {
        return checked(command.output(), &what);
    };
    use std::io::Write;
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|err| format!("{what}: {err}"))?;
    child
        .stdin
        .take()
        .expect("stdin is piped. This is a bug.")
        .write_all(stdin.as_bytes())
        .map_err(|err| format!("{what}: {err}"))?;
    checked(child.wait_with_output(), &what)
}

fn checked(output: std::io::Result<Output>, what: &str) -> Result<(), String> {
    let output = output.map_err(|err| format!("{what}: {err}"))?;
    if output.status.success() {
        return Ok(());
    }
    Err(format!("{what} failed: {}", String::from_utf8_lossy(&output.stderr).trim()))
}
