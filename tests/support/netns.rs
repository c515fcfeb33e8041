//! Network namespaces joined by veth pairs, and real TCP probes between them, for the tests of the nftables rules
//! (tests/nft_netns.rs) and of the firewall agent (tests/agent.rs). See tests/nft_netns.rs for the topology.
#![allow(dead_code, clippy::unwrap_used, clippy::panic)]

use ipnet::{Ipv4Net, Ipv6Net};
use jpki_access::api::environment::{FirewallPort, Protocol};
use std::net::{IpAddr, SocketAddr, TcpListener};
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

pub const TIMEOUT: Duration = Duration::from_millis(1500);
pub const ENV: &str = "production";

pub const C4_OK: &str = "198.51.100.10";
pub const C4_NO: &str = "198.51.100.20";
pub const C6_OK: &str = "2001:db8:1::10";
pub const C6_NO: &str = "2001:db8:1::20";
pub const R4: &str = "198.51.100.1";
pub const R6: &str = "2001:db8:1::1";
pub const S4: &str = "203.0.113.2";
pub const S6: &str = "2001:db8:2::2";

pub use jpki_oracle::netns as sys;

pub use sys::{Outcome, in_netns};

/// One client connect: from source address `src` in the client namespace to `dst:port`.
pub struct Probe {
    pub src: &'static str,
    pub dst: &'static str,
    pub port: u16,
    pub expect: Outcome,
}

pub fn probe(src: &'static str, dst: &'static str, port: u16, allowed: bool) -> Probe {
    Probe { src, dst, port, expect: if allowed { Outcome::Connected } else { Outcome::TimedOut } }
}

pub fn tool(name: &str) -> String {
    let sbin = format!("/usr/sbin/{name}");
    if Path::new(&sbin).exists() { sbin } else { name.to_string() }
}

pub fn output(args: &[&str]) -> Output {
    Command::new(tool(args[0])).args(&args[1..]).output().unwrap_or_else(|e| panic!("cannot run {args:?}: {e}"))
}

pub fn run(args: &[&str]) -> String {
    let out = output(args);
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{args:?} failed: {stderr}{stdout}");
    stdout.into_owned()
}

/// Root and nft are required: without them these tests fail rather than pass vacuously.
pub fn preflight() {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let euid = status.lines().find_map(|l| l.strip_prefix("Uid:")).and_then(|l| l.split_whitespace().nth(1));
    assert_eq!(euid, Some("0"), "tests/nft_netns.rs needs root (network namespaces, nftables): run scripts/test as root");
    let version = Command::new(tool("nft")).arg("--version").output();
    assert!(
        matches!(&version, Ok(o) if o.status.success()),
        "tests/nft_netns.rs needs nftables: `nft --version` failed ({version:?}); install the Debian package nftables"
    );
    assert!(Command::new(tool("ip")).arg("-V").output().is_ok(), "tests/nft_netns.rs needs `ip` (iproute2)");
}

/// Client, router and server namespaces joined by veth pairs; removed on drop.
pub struct Topology {
    pub client: String,
    pub router: String,
    pub server: String,
    pub listeners: Vec<TcpListener>,
    pub stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Topology {
    pub fn new(tag: &str) -> Topology {
        preflight();
        let name = |role: &str| format!("jnft{}{tag}{role}", std::process::id());
        let topo = Topology { client: name("c"), router: name("r"), server: name("s"), listeners: Vec::new(), stop: Default::default() };
        let (c, r, s) = (topo.client.as_str(), topo.router.as_str(), topo.server.as_str());
        for ns in [c, r, s] {
            let _ = output(&["ip", "netns", "del", ns]); // a leftover of a crashed run with the same pid
            run(&["ip", "netns", "add", ns]);
        }
        run(&["ip", "-n", r, "link", "add", "rc", "type", "veth", "peer", "name", "cr", "netns", c]);
        run(&["ip", "-n", r, "link", "add", "rs", "type", "veth", "peer", "name", "sr", "netns", s]);
        let addrs: [(&str, &str, &str); 10] = [
            (c, "cr", "198.51.100.10/24"),
            (c, "cr", "198.51.100.20/24"),
            (c, "cr", "2001:db8:1::10/64"),
            (c, "cr", "2001:db8:1::20/64"),
            (r, "rc", "198.51.100.1/24"),
            (r, "rc", "2001:db8:1::1/64"),
            (r, "rs", "203.0.113.1/24"),
            (r, "rs", "2001:db8:2::1/64"),
            (s, "sr", "203.0.113.2/24"),
            (s, "sr", "2001:db8:2::2/64"),
        ];
        for (ns, dev, addr) in addrs {
            let mut args = vec!["ip", "-n", ns, "addr", "add", addr, "dev", dev];
            if addr.contains(':') {
                args.push("nodad"); // usable at once, no duplicate address detection
            }
            run(&args);
        }
        for (ns, dev) in [(c, "cr"), (r, "rc"), (r, "rs"), (s, "sr"), (c, "lo"), (r, "lo"), (s, "lo")] {
            run(&["ip", "-n", ns, "link", "set", dev, "up"]);
        }
        for (ns, via) in [(c, "198.51.100.1"), (c, "2001:db8:1::1"), (s, "203.0.113.1"), (s, "2001:db8:2::1")] {
            run(&["ip", "-n", ns, "route", "add", "default", "via", via]);
        }
        // /proc/sys/net shows the sysctls of the reading thread's network namespace.
        for knob in ["ipv4/ip_forward", "ipv6/conf/all/forwarding"] {
            in_netns(r, || std::fs::write(format!("/proc/sys/net/{knob}"), "1")).unwrap();
        }
        topo
    }

    /// A listener in namespace `ns` on `addr:port`, open until the topology is dropped.
    ///
    /// Accepted connections are closed at once by a background thread: tests that poll (the agent's) make many
    /// connects, and a backlog that fills up would make every later connect time out for reasons unrelated to
    /// the firewall. The thread ends when the topology is dropped.
    pub fn listen(&mut self, ns: &str, addr: &str, port: u16) {
        let at = SocketAddr::new(addr.parse().unwrap(), port);
        let listener = in_netns(ns, || TcpListener::bind(at)).unwrap_or_else(|e| panic!("listen on {at} in {ns}: {e}"));
        let acceptor = listener.try_clone().unwrap();
        acceptor.set_nonblocking(true).unwrap();
        let stop = self.stop.clone();
        std::thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                match acceptor.accept() {
                    Ok((conn, _)) => drop(conn),
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        self.listeners.push(listener);
    }

    /// Listeners on :443 and :8443 in the server, and on :443 in the router itself (its input chain).
    pub fn with_listeners(mut self) -> Topology {
        let (r, s) = (self.router.clone(), self.server.clone());
        for (ns, addr, port) in [(&s, S4, 443), (&s, S6, 443), (&s, S4, 8443), (&s, S6, 8443)] {
            self.listen(ns, addr, port);
        }
        self.listen(&r, R4, 443);
        self.listen(&r, R6, 443);
        self
    }

    /// One more source address in the client namespace (a host address on its link), reachable from the router.
    pub fn add_source(&self, addr: &str) {
        let (host, extra) = if addr.contains(':') { (format!("{addr}/128"), Some("nodad")) } else { (format!("{addr}/32"), None) };
        let mut args = vec!["ip", "-n", &self.client, "addr", "add", &host, "dev", "cr"];
        args.extend(extra);
        run(&args);
        run(&["ip", "-n", &self.router, "route", "replace", &host, "dev", "rc"]);
    }

    pub fn nft(&self, args: &[&str]) -> Output {
        let nft = tool("nft");
        let mut full = vec!["ip", "netns", "exec", &self.router, &nft];
        full.extend_from_slice(args);
        output(&full)
    }

    /// Checks the text with `nft -c -f`, then applies it with `nft -f`, in the router.
    pub fn apply(&self, ruleset: &str) {
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), ruleset).unwrap();
        let path = file.path().to_str().unwrap();
        for args in [&["-c", "-f", path][..], &["-f", path][..]] {
            let out = self.nft(args);
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(out.status.success(), "nft {args:?} refused the ruleset: {stderr}\n{ruleset}");
        }
    }

    pub fn list(&self, what: &[&str]) -> String {
        let out = self.nft(&[&["list"][..], what].concat());
        assert!(out.status.success(), "nft list {what:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs all probes at once, each on its own thread in the client namespace.
    pub fn run_probes(&self, probes: &[Probe], timeout: Duration) -> Vec<Outcome> {
        std::thread::scope(|s| {
            let handles: Vec<_> = probes
                .iter()
                .map(|p| {
                    s.spawn(move || {
                        let dst = SocketAddr::new(p.dst.parse::<IpAddr>().unwrap(), p.port);
                        sys::connect_in(&self.client, p.src.parse().unwrap(), dst, timeout)
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        })
    }

    /// Runs the probes and checks every outcome.
    pub fn check(&self, when: &str, probes: &[Probe]) {
        let started = Instant::now();
        let outcomes = self.run_probes(probes, TIMEOUT);
        let wrong: Vec<String> = probes
            .iter()
            .zip(&outcomes)
            .filter(|(p, got)| p.expect != **got)
            .map(|(p, got)| format!("  {} -> {}:{}: expected {:?}, got {got:?}", p.src, p.dst, p.port, p.expect))
            .collect();
        let ruleset = self.list(&["ruleset"]);
        assert!(wrong.is_empty(), "{when}:\n{}\nruleset in the router:\n{ruleset}", wrong.join("\n"));
        assert!(started.elapsed() < TIMEOUT * 3, "{when}: probes took {:?}", started.elapsed());
    }

    /// Waits until every baseline connect works, then checks them once more with the normal timeout. Right after
    /// link-up the router misses the client's first IPv6 neighbour solicitation (about 1 s until the retry), so the
    /// first connects would fail for reasons that have nothing to do with nftables.
    pub fn settle(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.run_probes(&baseline(), Duration::from_millis(250)).iter().any(|o| *o != Outcome::Connected) {
            assert!(Instant::now() < deadline, "the topology did not come up within 10 s");
        }
        self.check("before any ruleset", &baseline());
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.listeners.clear();
        for ns in [&self.client, &self.router, &self.server] {
            let _ = output(&["ip", "netns", "del", ns]);
        }
    }
}

pub fn tcp(port: i32) -> FirewallPort {
    FirewallPort { protocol: Protocol::Tcp, port }
}

/// The ruleset of `jpki_access::planner::nft` for these sources and ports, judging forwarded traffic to the server's
/// addresses (S4, S6) as the environment's `forwardDestinations` would declare them.
pub fn ruleset_to_server(v4: &[Ipv4Net], v6: &[Ipv6Net], ports: &[FirewallPort]) -> String {
    let (f4, f6): (Vec<Ipv4Net>, Vec<Ipv6Net>) = (vec![format!("{S4}/32").parse().unwrap()], vec![format!("{S6}/128").parse().unwrap()]);
    let rules = jpki_access::planner::nft::Rules { allow_v4: v4, allow_v6: v6, ports, forward_v4: &f4, forward_v6: &f6, tag: None };
    jpki_access::planner::nft::render(ENV, &rules)
}

pub fn allow(v4: &str, v6: &str) -> (Vec<Ipv4Net>, Vec<Ipv6Net>) {
    (vec![format!("{v4}/32").parse().unwrap()], vec![format!("{v6}/128").parse().unwrap()])
}

/// Every connect of the tests, all expected to work: a broken topology fails here, not as a "working firewall".
pub fn baseline() -> Vec<Probe> {
    let mut probes = Vec::new();
    for src in [C4_OK, C4_NO] {
        probes.extend([probe(src, S4, 443, true), probe(src, S4, 8443, true), probe(src, R4, 443, true)]);
    }
    for src in [C6_OK, C6_NO] {
        probes.extend([probe(src, S6, 443, true), probe(src, S6, 8443, true), probe(src, R6, 443, true)]);
    }
    probes
}

/// Only `allowed` sources (one per family) reach :443 on the server (forward) and the router (input); :8443 stays
/// open to everyone.
pub fn expect_only(allowed: &[&str]) -> Vec<Probe> {
    let mut probes = Vec::new();
    for (src, server, router) in [(C4_OK, S4, R4), (C4_NO, S4, R4), (C6_OK, S6, R6), (C6_NO, S6, R6)] {
        let ok = allowed.contains(&src);
        probes.extend([probe(src, server, 443, ok), probe(src, server, 8443, true), probe(src, router, 443, ok)]);
    }
    probes
}
