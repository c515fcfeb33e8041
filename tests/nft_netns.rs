//! The rendered nftables ruleset against the real kernel: real packets between network namespaces.
//!
//! Topology, built per test (names carry the pid and a tag, removed in `Drop` even when a test panics):
//!
//! ```text
//!   client C                         router R (agent)                    server S
//!   198.51.100.10 (allowed) ─┐      198.51.100.1 │ 203.0.113.1      203.0.113.2
//!   198.51.100.20 (refused) ─┴ veth ─ 2001:db8:1::1 │ 2001:db8:2::1 ─ veth ─ 2001:db8:2::2
//!   2001:db8:1::10 / ::20            forwarding on, ruleset here        listeners :443, :8443
//! ```
//!
//! The ruleset goes into R with `ip netns exec R nft -f`; its forward chain judges C → S, its input chain C → R.
//!
//! Sockets: the test enters a namespace from a fresh thread with `setns(2)` (network namespaces are per thread) and
//! creates its sockets there, so listeners and clients are plain in-process sockets: no helper processes or extra
//! tools (python3 is not installed by `scripts/test`), and a listener ends when the test drops it. std cannot bind
//! a client socket to a chosen source address before `connect`, so a few lines of FFI to libc (which std links
//! anyway) do `socket`/`bind`/`connect` with `SO_SNDTIMEO` as the connect timeout. Listeners never `accept`: the
//! kernel completes the handshake into the backlog, which is all a connect needs.
//!
//! "Refused" means the SYN is dropped: the connect times out. A reset or an error is a failure of the test, as is
//! any connect failing before the ruleset is applied (a broken topology must not pass as a working firewall).
#![cfg(feature = "cluster-tests")]
#![cfg(target_os = "linux")]
#![allow(clippy::unwrap_used, clippy::panic)]

use ipnet::{Ipv4Net, Ipv6Net};
use jpki_access::api::environment::{FirewallPort, Protocol};
use jpki_access::planner::nft::{render_removal, render_ruleset, table_name};
use std::net::{IpAddr, SocketAddr, TcpListener};
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

const TIMEOUT: Duration = Duration::from_millis(1500);
const ENV: &str = "production";

const C4_OK: &str = "198.51.100.10";
const C4_NO: &str = "198.51.100.20";
const C6_OK: &str = "2001:db8:1::10";
const C6_NO: &str = "2001:db8:1::20";
const R4: &str = "198.51.100.1";
const R6: &str = "2001:db8:1::1";
const S4: &str = "203.0.113.2";
const S6: &str = "2001:db8:2::2";

mod sys {
    //! The few libc calls std does not offer: entering a network namespace, and connecting from a chosen source.
    use std::ffi::{c_int, c_long, c_void};
    use std::io::{Error, Result};
    use std::net::SocketAddr;
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    use std::time::Duration;

    unsafe extern "C" {
        fn setns(fd: c_int, nstype: c_int) -> c_int;
        fn socket(domain: c_int, ty: c_int, protocol: c_int) -> c_int;
        fn bind(fd: c_int, addr: *const c_void, len: u32) -> c_int;
        fn connect(fd: c_int, addr: *const c_void, len: u32) -> c_int;
        fn setsockopt(fd: c_int, level: c_int, name: c_int, value: *const c_void, len: u32) -> c_int;
    }
    const CLONE_NEWNET: c_int = 0x4000_0000;
    const SOCK_STREAM: c_int = 1;
    const SOCK_CLOEXEC: c_int = 0o2_000_000;
    const SOL_SOCKET: c_int = 1;
    const SO_SNDTIMEO: c_int = 21; // asm-generic value (x86_64, aarch64, riscv64); bounds a blocking connect

    fn check(rc: c_int) -> Result<c_int> {
        if rc < 0 { Err(Error::last_os_error()) } else { Ok(rc) }
    }

    /// Moves the calling thread into the network namespace `ip netns add` created.
    pub fn enter_netns(name: &str) -> Result<()> {
        let file = std::fs::File::open(format!("/run/netns/{name}"))?;
        check(unsafe { setns(file.as_raw_fd(), CLONE_NEWNET) }).map(drop)
    }

    /// `struct sockaddr_in` / `sockaddr_in6` as bytes (family in host order, port and address in network order).
    fn sockaddr(addr: SocketAddr) -> (c_int, Vec<u8>) {
        let mut raw = Vec::with_capacity(28);
        match addr {
            SocketAddr::V4(a) => {
                raw.extend(2u16.to_ne_bytes());
                raw.extend(a.port().to_be_bytes());
                raw.extend(a.ip().octets());
                raw.extend([0; 8]);
                (2, raw)
            }
            SocketAddr::V6(a) => {
                raw.extend(10u16.to_ne_bytes());
                raw.extend(a.port().to_be_bytes());
                raw.extend([0; 4]);
                raw.extend(a.ip().octets());
                raw.extend([0; 4]);
                (10, raw)
            }
        }
    }

    /// A TCP connect from `src` (port chosen by the kernel) to `dst`, giving up after `timeout`.
    pub fn connect_from(src: SocketAddr, dst: SocketAddr, timeout: Duration) -> Result<()> {
        let (family, src) = sockaddr(src);
        let (_, dst) = sockaddr(dst);
        let fd = check(unsafe { socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0) })?;
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let tv: [c_long; 2] = [timeout.as_secs() as c_long, timeout.subsec_micros() as c_long];
        let tv_len = std::mem::size_of_val(&tv) as u32;
        check(unsafe { setsockopt(fd.as_raw_fd(), SOL_SOCKET, SO_SNDTIMEO, tv.as_ptr().cast(), tv_len) })?;
        check(unsafe { bind(fd.as_raw_fd(), src.as_ptr().cast(), src.len() as u32) })?;
        check(unsafe { connect(fd.as_raw_fd(), dst.as_ptr().cast(), dst.len() as u32) }).map(drop)
    }
}

/// Runs `f` on a fresh thread inside network namespace `ns`.
fn in_netns<T: Send>(ns: &str, f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| {
        s.spawn(|| {
            sys::enter_netns(ns).unwrap_or_else(|e| panic!("setns into {ns}: {e}"));
            f()
        })
        .join()
        .unwrap()
    })
}

#[derive(Debug, PartialEq)]
enum Outcome {
    Connected,
    TimedOut,
    Error(String),
}

/// One client connect: from source address `src` in the client namespace to `dst:port`.
struct Probe {
    src: &'static str,
    dst: &'static str,
    port: u16,
    expect: Outcome,
}

fn probe(src: &'static str, dst: &'static str, port: u16, allowed: bool) -> Probe {
    Probe { src, dst, port, expect: if allowed { Outcome::Connected } else { Outcome::TimedOut } }
}

fn tool(name: &str) -> String {
    let sbin = format!("/usr/sbin/{name}");
    if Path::new(&sbin).exists() { sbin } else { name.to_string() }
}

fn output(args: &[&str]) -> Output {
    Command::new(tool(args[0]))
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("cannot run {args:?}: {e}"))
}

fn run(args: &[&str]) -> String {
    let out = output(args);
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{args:?} failed: {stderr}{stdout}");
    stdout.into_owned()
}

/// Root and nft are required: without them these tests fail rather than pass vacuously.
fn preflight() {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let euid = status.lines().find_map(|l| l.strip_prefix("Uid:")).and_then(|l| l.split_whitespace().nth(1));
    assert_eq!(
        euid,
        Some("0"),
        "tests/nft_netns.rs needs root (network namespaces, nftables): run scripts/test as root"
    );
    let version = Command::new(tool("nft")).arg("--version").output();
    assert!(
        matches!(&version, Ok(o) if o.status.success()),
        "tests/nft_netns.rs needs nftables: `nft --version` failed ({version:?}); install the Debian package nftables"
    );
    assert!(Command::new(tool("ip")).arg("-V").output().is_ok(), "tests/nft_netns.rs needs `ip` (iproute2)");
}

/// Client, router and server namespaces joined by veth pairs; removed on drop.
struct Topology {
    client: String,
    router: String,
    server: String,
    listeners: Vec<TcpListener>,
}

impl Topology {
    fn new(tag: &str) -> Topology {
        preflight();
        let name = |role: &str| format!("jnft{}{tag}{role}", std::process::id());
        let topo = Topology { client: name("c"), router: name("r"), server: name("s"), listeners: Vec::new() };
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
    fn listen(&mut self, ns: &str, addr: &str, port: u16) {
        let at = SocketAddr::new(addr.parse().unwrap(), port);
        let listener = in_netns(ns, || TcpListener::bind(at)).unwrap_or_else(|e| panic!("listen on {at} in {ns}: {e}"));
        self.listeners.push(listener);
    }

    /// Listeners on :443 and :8443 in the server, and on :443 in the router itself (its input chain).
    fn with_listeners(mut self) -> Topology {
        let (r, s) = (self.router.clone(), self.server.clone());
        for (ns, addr, port) in [(&s, S4, 443), (&s, S6, 443), (&s, S4, 8443), (&s, S6, 8443)] {
            self.listen(ns, addr, port);
        }
        self.listen(&r, R4, 443);
        self.listen(&r, R6, 443);
        self
    }

    fn nft(&self, args: &[&str]) -> Output {
        let nft = tool("nft");
        let mut full = vec!["ip", "netns", "exec", &self.router, &nft];
        full.extend_from_slice(args);
        output(&full)
    }

    /// Checks the text with `nft -c -f`, then applies it with `nft -f`, in the router.
    fn apply(&self, ruleset: &str) {
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), ruleset).unwrap();
        let path = file.path().to_str().unwrap();
        for args in [&["-c", "-f", path][..], &["-f", path][..]] {
            let out = self.nft(args);
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(out.status.success(), "nft {args:?} refused the ruleset: {stderr}\n{ruleset}");
        }
    }

    fn list(&self, what: &[&str]) -> String {
        let out = self.nft(&[&["list"][..], what].concat());
        assert!(out.status.success(), "nft list {what:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs all probes at once, each on its own thread in the client namespace.
    fn run_probes(&self, probes: &[Probe], timeout: Duration) -> Vec<Outcome> {
        std::thread::scope(|s| {
            let handles: Vec<_> = probes
                .iter()
                .map(|p| {
                    s.spawn(move || {
                        let src = SocketAddr::new(p.src.parse().unwrap(), 0);
                        let dst = SocketAddr::new(p.dst.parse::<IpAddr>().unwrap(), p.port);
                        in_netns(&self.client, || match sys::connect_from(src, dst, timeout) {
                            Ok(()) => Outcome::Connected,
                            // Linux reports a connect cut short by SO_SNDTIMEO as EINPROGRESS.
                            Err(e) if matches!(e.raw_os_error(), Some(115 | 110 | 11)) => Outcome::TimedOut,
                            Err(e) => Outcome::Error(e.to_string()),
                        })
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        })
    }

    /// Runs the probes and checks every outcome.
    fn check(&self, when: &str, probes: &[Probe]) {
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
    fn settle(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.run_probes(&baseline(), Duration::from_millis(250)).iter().any(|o| *o != Outcome::Connected) {
            assert!(Instant::now() < deadline, "the topology did not come up within 10 s");
        }
        self.check("before any ruleset", &baseline());
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        self.listeners.clear();
        for ns in [&self.client, &self.router, &self.server] {
            let _ = output(&["ip", "netns", "del", ns]);
        }
    }
}

fn tcp(port: i32) -> FirewallPort {
    FirewallPort { protocol: Protocol::Tcp, port }
}

fn allow(v4: &str, v6: &str) -> (Vec<Ipv4Net>, Vec<Ipv6Net>) {
    (vec![format!("{v4}/32").parse().unwrap()], vec![format!("{v6}/128").parse().unwrap()])
}

/// Every connect of the tests, all expected to work: a broken topology fails here, not as a "working firewall".
fn baseline() -> Vec<Probe> {
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
fn expect_only(allowed: &[&str]) -> Vec<Probe> {
    let mut probes = Vec::new();
    for (src, server, router) in [(C4_OK, S4, R4), (C4_NO, S4, R4), (C6_OK, S6, R6), (C6_NO, S6, R6)] {
        let ok = allowed.contains(&src);
        probes.extend([probe(src, server, 443, ok), probe(src, server, 8443, true), probe(src, router, 443, ok)]);
    }
    probes
}

#[test]
fn allowlist_filters_forwarded_and_local_tcp_443_only() {
    let topo = Topology::new("a").with_listeners();
    topo.settle();

    let (v4, v6) = allow(C4_OK, C6_OK);
    let ruleset = render_ruleset(ENV, &v4, &v6, &[tcp(443)]);
    topo.apply(&ruleset); // the first apply: the table does not exist yet, the delete must not fail
    let table = topo.list(&["table", "inet", &table_name(ENV)]);
    assert!(table.contains(C4_OK) && table.contains(C6_OK) && !table.contains(C4_NO), "{table}");
    assert!(table.contains("hook forward") && table.contains("hook input"), "{table}");

    topo.check("allowlist .10 / ::10 on tcp 443", &expect_only(&[C4_OK, C6_OK]));
}

#[test]
fn replacing_the_ruleset_is_atomic_and_flips_access() {
    let topo = Topology::new("b").with_listeners();
    topo.settle();
    let t = table_name(ENV);

    let (v4, v6) = allow(C4_OK, C6_OK);
    topo.apply(&render_ruleset(ENV, &v4, &v6, &[tcp(443)]));
    topo.check("allowlist .10 / ::10", &expect_only(&[C4_OK, C6_OK]));

    let (v4, v6) = allow(C4_NO, C6_NO);
    let swapped = render_ruleset(ENV, &v4, &v6, &[tcp(443)]);
    topo.apply(&swapped);
    topo.apply(&swapped); // applying the same text again is harmless
    assert_eq!(topo.list(&["tables"]), format!("table inet {t}\n"), "exactly one table after replacing");
    let set = topo.list(&["set", "inet", &t, "allow_v4"]);
    assert!(set.contains(C4_NO) && !set.contains(C4_OK), "the replaced set still holds old elements:\n{set}");
    topo.check("swapped to .20 / ::20", &expect_only(&[C4_NO, C6_NO]));

    // A file nft refuses (port out of range) changes nothing: the transaction is all or nothing.
    let before = topo.list(&["table", "inet", &t]);
    let bad = render_ruleset(ENV, &[], &[], &[tcp(443), tcp(70000)]);
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), &bad).unwrap();
    let out = topo.nft(&["-f", file.path().to_str().unwrap()]);
    assert!(!out.status.success(), "nft accepted port 70000:\n{bad}");
    assert_eq!(topo.list(&["table", "inet", &t]), before, "a refused file changed the live table");

    topo.apply(&render_ruleset(ENV, &[], &[], &[tcp(443)]));
    topo.check("empty allowlist", &expect_only(&[]));

    topo.apply(&render_ruleset(ENV, &[], &[], &[]));
    topo.check("no ports: nothing filtered", &baseline());

    let removal = render_removal(ENV);
    topo.apply(&removal);
    topo.apply(&removal); // removing a table that is not there succeeds too
    assert_eq!(topo.list(&["tables"]), "", "the table is still there after removal");
}

/// `jpki-access render --format nft`, the command a person runs, from forms on disk: its output loaded into the
/// router passes the approved source and drops the other, in both families.
#[test]
fn the_rendered_ruleset_of_forms_filters_real_packets() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = tempfile::tempdir().unwrap();
    for file in ["00-namespaces.yaml", "environments.yaml", "sapporo-city/verifier.yaml"] {
        let target = dir.path().join(file.replace('/', "-"));
        std::fs::copy(root.join("examples").join(file), target).unwrap();
    }
    let registration = format!(
        "apiVersion: access.jpki.dev/v1alpha1\nkind: AccessRegistration\nmetadata: {{name: netns-probe, namespace: verifier-sapporo}}\n\
         spec:\n  verifierRef: sapporo-city\n  environment: Production\n  connectionMethod: Internet\n  sourceCidrs: [\"{C4_OK}/32\", \"{C6_OK}/128\"]\n  \
         accessStartDate: \"2026-04-01\"\n  provisionMethods: {{signing: Ocsp, userAuthentication: Crl}}\n  officialSealAffixed: true\n"
    );
    let reg_path = dir.path().join("registration.yaml");
    std::fs::write(&reg_path, registration).unwrap();
    let cli = env!("CARGO_BIN_EXE_jpki-access");
    let approval = std::process::Command::new(cli).args(["approve", reg_path.to_str().unwrap(), "--by", "approver@j-lis"]).output().unwrap();
    assert!(approval.status.success(), "{}", String::from_utf8_lossy(&approval.stderr));
    std::fs::write(dir.path().join("approval.yaml"), approval.stdout).unwrap();
    let rendered = std::process::Command::new(cli)
        .args(["render", dir.path().to_str().unwrap(), "--env", "production", "--format", "nft", "--at", "2026-05-01T00:00:00+09:00"])
        .output()
        .unwrap();
    assert!(rendered.status.success(), "{}", String::from_utf8_lossy(&rendered.stderr));
    let ruleset = String::from_utf8(rendered.stdout).unwrap();
    assert!(ruleset.contains(C4_OK) && ruleset.contains("table inet jpki_access_production {"), "{ruleset}");

    let topo = Topology::new("c").with_listeners();
    topo.settle();
    topo.apply(&ruleset);
    topo.check("rendered from forms: .10 / ::10 approved", &expect_only(&[C4_OK, C6_OK]));
}
