//! Helpers for multi-process tests: find the `senti` binary, start it on a free loopback port,
//! wait until it is ready, and stop it. `make test` builds the binary before running these.
//! Every test that starts a cluster takes its gossip key file from [`new_key_file`] (or
//! [`shared_key_file`], which the [`loopback`] helpers use): a node refuses to join a cluster
//! without one.
//! [`loopback`] starts a small cluster of them; [`netns`] builds a LAN of network-namespace
//! hosts to run them on (root only), and [`delay`] delays one such host's sessions (a proxy, for
//! the LAN suite's delay fault); [`promql`] reads PromQL expressions and
//! `/metrics` pages for the monitoring tests (dashboard and Prometheus).
#![forbid(unsafe_code)]

pub mod delay;
pub mod loopback;
pub mod netns;
pub mod promql;

use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ is inside the repo. This is a bug.").to_owned()
}

/// `SENTI_BIN`, else target/debug/senti, else target/release/senti.
pub fn senti_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("SENTI_BIN") {
        return PathBuf::from(bin);
    }
    let root = repo_root();
    for profile in ["debug", "release"] {
        let candidate = root.join("target").join(profile).join("senti");
        if candidate.is_file() {
            return candidate;
        }
    }
    panic!("no senti binary: run `cargo build -p senti-node` first (make test does)");
}

/// A directory of this test process for files its nodes read (key files), under target/tmp.
pub fn test_dir() -> PathBuf {
    let dir = repo_root().join("target").join("tmp").join(format!("senti-tests-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap_or_else(|err| panic!("cannot create {}: {err}", dir.display()));
    dir
}

/// A new gossip key file (`cluster.key_file`) in `dir`, made by `senti cluster keygen --out`
/// (mode 600, one fresh key); each call makes another file with another key.
pub fn new_key_file(dir: &Path) -> PathBuf {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let path = dir.join(format!("cluster-{}.key", NEXT.fetch_add(1, Ordering::Relaxed)));
    let _ = std::fs::remove_file(&path);
    senti_cluster_command(&["keygen", "--out"], &path);
    path
}

/// Runs `senti cluster <args> <path>` and panics with its stderr if it fails.
fn senti_cluster_command(args: &[&str], path: &Path) {
    let output = Command::new(senti_bin())
        .arg("cluster")
        .args(args)
        .arg(path)
        .stdin(Stdio::null())
        .output()
        .expect("run senti cluster");
    assert!(output.status.success(), "senti cluster {args:?} failed: {}", String::from_utf8_lossy(&output.stderr));
}

/// The key file every cluster of this test process shares unless it asks for another one (made
/// on first use). Clusters of one process are kept apart by their seeds, not by their keys.
pub fn shared_key_file() -> &'static Path {
    static SHARED: OnceLock<PathBuf> = OnceLock::new();
    SHARED.get_or_init(|| new_key_file(&test_dir()))
}

/// A session TLS folder (`cluster.tls_dir`) every cluster of this test process that asks for TLS
/// shares, made by `senti cluster tls --out` on first use.
pub fn shared_tls_dir() -> &'static Path {
    static SHARED: OnceLock<PathBuf> = OnceLock::new();
    SHARED.get_or_init(|| {
        let dir = test_dir().join("cluster-tls");
        let _ = std::fs::remove_dir_all(&dir);
        senti_cluster_command(&["tls", "--out"], &dir);
        dir
    })
}

/// A cookie (`cluster.cookie`) long enough for senti, for test clusters.
pub const TEST_COOKIE: &str = "senti-test-cookie-3f09a1c2";

/// A loopback port for a node to listen on, TCP or UDP: one this process has not handed out
/// before, free for both protocols right now, and below the kernel's ephemeral range. A port
/// from `bind(0)`, released for the node to bind, can be taken in between as the source port of
/// any outgoing connection or UDP socket on the machine (tests run many at once); the kernel
/// never picks those below the range. Each test process starts at its own offset (from its pid).
pub fn free_port() -> u16 {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let (floor, end) = (10_000usize, ephemeral_ports_start());
    let span = end.saturating_sub(floor).max(1);
    let offset = std::process::id() as usize * 7_919;
    loop {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        assert!(n < span, "no free loopback port left between {floor} and {end}");
        let port = (floor + (offset + n) % span) as u16;
        let free = TcpListener::bind(("127.0.0.1", port)).is_ok() && UdpSocket::bind(("127.0.0.1", port)).is_ok();
        if free {
            return port;
        }
    }
}

/// The first port of the kernel's ephemeral range (`net.ipv4.ip_local_port_range`; 32768 if it
/// cannot be read or leaves fewer than 1,000 ports below it above 10,000).
fn ephemeral_ports_start() -> usize {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse().ok())
        .filter(|&start: &usize| start >= 11_000)
        .unwrap_or(32_768)
}

/// One `senti serve` process.
pub struct Server {
    /// The process.
    pub child: Child,
    /// Where it listens.
    pub addr: SocketAddr,
}

impl Server {
    /// Starts `senti serve` on a free port with extra arguments and environment, and waits up to
    /// 60 s for /readyz.
    pub async fn start(args: &[&str], env: &[(&str, &str)]) -> Server {
        let port = free_port();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let mut command = Command::new(senti_bin());
        command
            .current_dir(repo_root())
            .arg("serve")
            .arg("--listen")
            .arg(addr.to_string())
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        for (k, v) in env {
            command.env(k, v);
        }
        let child = command.spawn().expect("spawn senti");
        let mut server = Server { child, addr };
        server.wait_started(Duration::from_secs(60)).await;
        server
    }

    /// Waits up to `limit` for /readyz to answer 200; panics at once if the process exits first
    /// (its stderr, inherited, says why).
    async fn wait_started(&mut self, limit: Duration) {
        let client = reqwest::Client::new();
        let (url, until) = (self.url("/readyz"), Instant::now() + limit);
        loop {
            if let Some(status) = self.child.try_wait().expect("poll the senti process") {
                panic!("senti exited before it became ready ({status}); its stderr above says why");
            }
            let last = match client.get(&url).send().await {
                Ok(response) if response.status().is_success() => return,
                Ok(response) => format!("/readyz answered {}", response.status()),
                Err(err) => format!("/readyz: {err}"),
            };
            assert!(Instant::now() < until, "senti was not ready within {limit:?}; last: {last}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `http://addr`
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// The sum of a counter's series on its `/metrics` whose labels include `label` (e.g.
    /// `reason="unknown_key"`).
    pub async fn counter(&self, name: &str, label: &str) -> f64 {
        let text = reqwest::get(self.url("/metrics")).await.unwrap().text().await.unwrap();
        text.lines()
            .filter(|line| line.starts_with(&format!("{name}{{")) && line.contains(label))
            .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    /// Waits up to `limit` for /readyz to answer 200 (for a server started some other way).
    pub async fn wait_ready(&self, limit: Duration) {
        let client = reqwest::Client::new();
        let url = self.url("/readyz");
        wait_until(limit, "senti to become ready", || {
            let client = client.clone();
            let url = url.clone();
            async move { client.get(&url).send().await.is_ok_and(|r| r.status().is_success()) }
        })
        .await;
    }

    /// Sends a signal to the process.
    pub fn signal(&self, signal: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.child.id() as i32), signal).unwrap();
    }

    /// Waits for the process to exit (at most `limit`) and returns its exit code.
    pub async fn wait_exit(&mut self, limit: Duration) -> Option<i32> {
        let until = Instant::now() + limit;
        while Instant::now() < until {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("senti did not exit within {limit:?}");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub use senti_engine::testsuite::{wait_until, wait_until_ok};

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn free_ports_are_distinct_below_the_ephemeral_range_and_free_for_tcp_and_udp() {
        let ports: Vec<u16> = (0..200).map(|_| free_port()).collect();
        assert_eq!(ports.iter().collect::<HashSet<_>>().len(), ports.len(), "a port handed out twice: {ports:?}");
        let end = ephemeral_ports_start();
        for port in ports {
            assert!((10_000..end).contains(&usize::from(port)), "{port} outside 10000..{end}");
            TcpListener::bind(("127.0.0.1", port)).unwrap_or_else(|err| panic!("TCP {port}: {err}"));
            UdpSocket::bind(("127.0.0.1", port)).unwrap_or_else(|err| panic!("UDP {port}: {err}"));
        }
    }
}
