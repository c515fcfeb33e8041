//! Data-plane benchmarks (issue #7): the nftables table of `planner::nft::render_ruleset` against the real kernel,
//! each figure next to a baseline measured in the same run (PERFORMANCE.md §5, T1–T3; results in BENCHMARKS.md).
//!
//! 1. **Per-packet cost.** 32-byte UDP datagrams from 127.0.0.1 to 127.0.0.1:[`PORT`] over `lo`, sent with
//!    `sendmmsg` (64 a call) for [`Config::sample`] per sample. The source matches no entry. Setups: no filter rules
//!    (baseline); our table with N random CIDRs and `udp` [`PORT`] as its port (so every packet is looked up in the
//!    interval set of the `input` chain, misses, and is dropped by our port rule); an `iptables-nft-restore` chain of
//!    10k `-A INPUT -s CIDR -j ACCEPT` rules (no packet matches any). So that every setup ends the packet the same
//!    way, a "sink" table drops the datagrams at `input` priority 100 in all of them (ours drops first, at priority
//!    0, and never reaches it); a "calibration" setup adds one more one-rule base chain and shows what skipping the
//!    sink saves ours; our table with an empty set shows the fixed cost of our rules. Each round loads every setup
//!    once and measures it; the added cost of a setup is its ns/packet minus the baseline's of the same round, and
//!    the figure is the median over the rounds. The ns/packet of a sample is the median over its `sendmmsg` calls.
//!    Every sample checks in `/proc/net/snmp` that all packets entered IP input and none reached a UDP socket.
//! 2. **Update cost at the largest size**, table loaded: a 1-CIDR change applied as the agent does it (render the
//!    full ruleset, pipe it to `nft -f -`: an atomic replace of the table) vs a full atomic reload of the same set
//!    (`nft -f` of the pre-rendered file of what is loaded), and `nft add element` of one CIDR (with a timeout).
//!    Then the agent's path since issue #22: the networks that differ, as one nfnetlink batch (`agent::delta`,
//!    `agent::netlink`), for a 1-CIDR and a 1,000-CIDR change, against the same full reload; and the `GETSETELEM`
//!    dumps that path sends (and the point queries of its tag), counted by attaching `strace` to this process.
//! 3. **Render plus load** of the largest set into an empty namespace (`render_ruleset` + `nft -f -`) vs a raw
//!    `nft -f` of the same pre-rendered file, and vs `iptables-nft-restore` of one rule per CIDR.
//!
//! CIDRs: deterministic random IPv4 prefixes /16–/32 (1% /16–/23, 99% /24–/32; a uniform /16–/32 mix covers the
//! address space long before 1M and aggregates to ~145k) outside 0/8, 10/8, 127/8 and 224/3, aggregated with
//! `Ipv4Net::aggregate` (nft refuses overlapping intervals); the counts after aggregation are reported.
//!
//! Run: `scripts/bench-dataplane` (root; it runs this binary under `unshare -n` with `JPKI_BENCH_NETNS=1`).
//! Environment: `JPKI_BENCH_QUICK=1` (sizes 1k/10k/100k instead of 10k/100k/1M), `JPKI_BENCH_OUT` (JSON result,
//! default `target/bench-dataplane.json`), `JPKI_BENCH_ADD_TIMEOUT` (s, default 120), `JPKI_BENCH_SAMPLE_SECS`
//! (default 1), `JPKI_BENCH_REPS` (rounds, default 3), `JPKI_BENCH_ONLY=update` (section 2 alone, without the
//! slow `nft add element`). Without `JPKI_BENCH_NETNS=1` it only says how to run it and
//! exits 0, so `cargo bench` and `cargo test --benches` stay harmless; with it, it refuses (exit 1) unless it is
//! root in a fresh network namespace (not the one of PID 1, only `lo`, empty ruleset).
#![allow(clippy::unwrap_used, clippy::panic)]

use ipnet::IpNet;
use ipnet::Ipv4Net;
use jpki_access::agent::{delta, netlink};
use jpki_access::api::environment::{FirewallPort, Protocol};
use jpki_access::planner::nft::{Rules, SET_V4, render, render_ruleset, table_name};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::io::Write as _;
use std::net::{Ipv4Addr, UdpSocket};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

/// Environment name given to `render_ruleset`: the table is `jpki_access_bench`.
const ENV: &str = "bench";
/// Destination port of the datagrams and the (only) port of our table.
const PORT: u16 = 47_000;
/// Datagrams per `sendmmsg` call.
const BATCH: usize = 64;
/// Payload bytes per datagram (as in PERFORMANCE.md §0).
const PAYLOAD: usize = 32;
/// Rules of the iptables-nft chain (PERFORMANCE.md T1 compares with a chain of 10k).
const IPT_RULES: usize = 10_000;

/// Drops the datagrams at the end of `input` in every setup, so no setup delivers them to a socket.
const SINK: &str = "table inet jpki_bench_sink {\n\tchain input {\n\t\ttype filter hook input priority 100; policy accept;\n\t\tudp dport 47000 drop\n\t}\n}\n";
/// One more base chain with one rule the datagrams do not match: about what ours saves by never reaching the sink.
const CALIBRATION: &str =
    "table inet jpki_bench_calib {\n\tchain input {\n\t\ttype filter hook input priority 50; policy accept;\n\t\tudp dport 47001 drop\n\t}\n}\n";

struct Config {
    quick: bool,
    /// Section 2 alone (`JPKI_BENCH_ONLY=update`).
    update_only: bool,
    sizes: [usize; 3],
    reps: usize,
    sample: Duration,
    add_timeout: Duration,
    out: PathBuf,
}

impl Config {
    fn from_env() -> Config {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let quick = var("JPKI_BENCH_QUICK").is_some_and(|v| v != "0");
        Config {
            quick,
            update_only: var("JPKI_BENCH_ONLY").as_deref() == Some("update"),
            sizes: if quick { [1_000, 10_000, 100_000] } else { [10_000, 100_000, 1_000_000] },
            reps: var("JPKI_BENCH_REPS").map_or(3, |v| v.parse().expect("JPKI_BENCH_REPS")),
            sample: Duration::from_secs_f64(var("JPKI_BENCH_SAMPLE_SECS").map_or(1.0, |v| v.parse().expect("JPKI_BENCH_SAMPLE_SECS"))),
            add_timeout: Duration::from_secs_f64(var("JPKI_BENCH_ADD_TIMEOUT").map_or(120.0, |v| v.parse().expect("JPKI_BENCH_ADD_TIMEOUT"))),
            out: var("JPKI_BENCH_OUT").map_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench-dataplane.json"), PathBuf::from),
        }
    }
}

fn main() -> ExitCode {
    if std::env::var("JPKI_BENCH_NETNS").as_deref() != Ok("1") {
        eprintln!("dataplane: skipped; it needs root in a fresh network namespace: run scripts/bench-dataplane");
        return ExitCode::SUCCESS;
    }
    if let Err(why) = check_fresh_netns() {
        eprintln!("dataplane: refusing to run: {why}");
        return ExitCode::FAILURE;
    }
    let cfg = Config::from_env();
    run(&cfg);
    ExitCode::SUCCESS
}

// ---------------------------------------------------------------------------------------------------------------
// Safety checks and small helpers

/// Root, a network namespace other than PID 1's, only `lo` in it, and an empty ruleset; then `lo` is brought up.
fn check_fresh_netns() -> Result<(), String> {
    if unsafe { sys::geteuid() } != 0 {
        return Err("not root".into());
    }
    let ours = std::fs::read_link("/proc/self/ns/net").map_err(|e| format!("/proc/self/ns/net: {e}"))?;
    // The caller (unshare execs us, so our parent is the shell that ran it) and PID 1 must be elsewhere; PID 1's
    // link may be unreadable in a container, and then the interface check below has to do.
    let parent = std::os::unix::process::parent_id();
    for pid in [parent, 1] {
        if let Ok(theirs) = std::fs::read_link(format!("/proc/{pid}/ns/net"))
            && theirs == ours
        {
            return Err(format!("in the network namespace of PID {pid} ({}); use unshare -n", ours.display()));
        }
    }
    let dev = std::fs::read_to_string("/proc/net/dev").map_err(|e| format!("/proc/net/dev: {e}"))?;
    let ifaces: Vec<&str> = dev.lines().skip(2).filter_map(|l| l.split(':').next()).map(str::trim).collect();
    if ifaces != ["lo"] {
        return Err(format!("the namespace has interfaces {ifaces:?}, expected only lo"));
    }
    let ruleset = output(Command::new("nft").args(["list", "ruleset"]))?;
    if !ruleset.trim().is_empty() {
        return Err("`nft list ruleset` is not empty".into());
    }
    output(Command::new("ip").args(["link", "set", "lo", "up"]))?;
    Ok(())
}

/// Runs a command to completion; its stdout, or an error with its stderr.
fn output(cmd: &mut Command) -> Result<String, String> {
    let out = cmd.output().map_err(|e| format!("{cmd:?}: {e}"))?;
    if !out.status.success() {
        return Err(format!("{cmd:?}: {}: {}", out.status, String::from_utf8_lossy(&out.stderr).trim()));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn must(cmd: &mut Command) -> String {
    output(cmd).unwrap_or_else(|e| panic!("{e}"))
}

/// Feeds `text` to `program args` on stdin and waits for success.
fn pipe_to(program: &str, args: &[&str], text: &str) {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{program} {args:?}: {}: {}", out.status, String::from_utf8_lossy(&out.stderr).trim());
}

/// Times a command to completion (it must succeed).
fn timed(cmd: &mut Command) -> Duration {
    let start = Instant::now();
    must(cmd);
    start.elapsed()
}

/// Times a command; kills it after `limit` and returns `None` then.
fn timed_with_limit(cmd: &mut Command, limit: Duration) -> Option<Duration> {
    let start = Instant::now();
    let mut child = cmd.stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let elapsed = start.elapsed();
            let out = child.wait_with_output().unwrap();
            assert!(status.success(), "{cmd:?}: {status}: {}", String::from_utf8_lossy(&out.stderr).trim());
            return Some(elapsed);
        }
        if start.elapsed() >= limit {
            child.kill().unwrap();
            child.wait().unwrap();
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Empties the ruleset and loads the sink again: the state between setups.
fn reset() {
    must(Command::new("nft").args(["flush", "ruleset"]));
    pipe_to("nft", &["-f", "-"], SINK);
}

fn median(xs: &[f64]) -> f64 {
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 }
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

// ---------------------------------------------------------------------------------------------------------------
// Data

/// Deterministic xorshift, so every run measures the same input.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// A random address outside 0/8, 10/8, 127/8 and 224/3.
    fn address(&mut self) -> u32 {
        loop {
            let addr = (self.next() >> 32) as u32;
            let first = addr >> 24;
            if !(first == 0 || first == 10 || first == 127 || first >= 224) {
                return addr;
            }
        }
    }
}

/// `n` random prefixes (1% /16–/23, 99% /24–/32), aggregated to disjoint sorted networks.
fn random_allowlist(n: usize, seed: u64) -> Vec<Ipv4Net> {
    let mut rng = Rng(seed);
    let mut raw = Vec::with_capacity(n);
    while raw.len() < n {
        let addr = rng.address();
        let pick = rng.next();
        let len = if pick.is_multiple_of(100) { 16 + ((pick >> 8) % 8) as u8 } else { 24 + ((pick >> 8) % 9) as u8 };
        raw.push(Ipv4Net::new(Ipv4Addr::from(addr), len).unwrap().trunc());
    }
    let mut nets = Ipv4Net::aggregate(&raw);
    nets.sort_unstable();
    for w in nets.windows(2) {
        assert!(w[0].broadcast() < w[1].network(), "not disjoint: {} {}", w[0], w[1]);
    }
    nets
}

fn covered(nets: &[Ipv4Net], addr: u32) -> bool {
    let i = nets.partition_point(|n| u32::from(n.network()) <= addr);
    i > 0 && u32::from(nets[i - 1].broadcast()) >= addr
}

/// A /32 that neither is in `nets` nor touches any of its networks, so adding it changes exactly one element.
fn new_host(nets: &[Ipv4Net], seed: u64) -> Ipv4Net {
    let mut rng = Rng(seed);
    loop {
        let a = rng.address();
        if !covered(nets, a.wrapping_sub(1)) && !covered(nets, a) && !covered(nets, a.wrapping_add(1)) {
            return Ipv4Net::new(Ipv4Addr::from(a), 32).unwrap();
        }
    }
}

fn with_host(nets: &[Ipv4Net], host: Ipv4Net) -> Vec<Ipv4Net> {
    let mut v = nets.to_vec();
    let at = v.partition_point(|n| n.network() < host.network());
    v.insert(at, host);
    v
}

fn iptables_restore_text(nets: &[Ipv4Net]) -> String {
    let mut s = String::with_capacity(64 + 32 * nets.len());
    s.push_str("*filter\n:INPUT ACCEPT [0:0]\n");
    for n in nets {
        s.push_str(&format!("-A INPUT -s {n} -j ACCEPT\n"));
    }
    s.push_str("COMMIT\n");
    s
}

// ---------------------------------------------------------------------------------------------------------------
// Packets

mod sys {
    //! `sendmmsg(2)` and `geteuid(2)`, which std does not offer; libc is linked by std anyway.
    use std::ffi::{c_int, c_uint, c_void};

    #[repr(C)]
    struct IoVec {
        base: *const c_void,
        len: usize,
    }
    #[repr(C)]
    struct MsgHdr {
        name: *mut c_void,
        namelen: u32,
        iov: *const IoVec,
        iovlen: usize,
        control: *mut c_void,
        controllen: usize,
        flags: c_int,
    }
    #[repr(C)]
    struct MMsgHdr {
        hdr: MsgHdr,
        len: c_uint,
    }
    unsafe extern "C" {
        fn sendmmsg(fd: c_int, msgvec: *mut MMsgHdr, vlen: c_uint, flags: c_int) -> c_int;
        pub fn geteuid() -> u32;
    }

    /// `count` copies of one payload for a connected socket (no destination address in the messages).
    pub struct Batch {
        _payload: Box<[u8]>,
        _iov: Box<IoVec>,
        msgs: Vec<MMsgHdr>,
    }

    impl Batch {
        pub fn new(payload: &[u8], count: usize) -> Batch {
            let payload: Box<[u8]> = payload.into();
            let iov = Box::new(IoVec { base: payload.as_ptr().cast(), len: payload.len() });
            let msgs = (0..count)
                .map(|_| MMsgHdr {
                    hdr: MsgHdr {
                        name: std::ptr::null_mut(),
                        namelen: 0,
                        iov: &raw const *iov,
                        iovlen: 1,
                        control: std::ptr::null_mut(),
                        controllen: 0,
                        flags: 0,
                    },
                    len: 0,
                })
                .collect();
            Batch { _payload: payload, _iov: iov, msgs }
        }

        /// One `sendmmsg`: the number of datagrams sent.
        pub fn send(&mut self, fd: c_int) -> std::io::Result<usize> {
            // The pointers in `msgs` point into the boxes owned by `self`, which do not move.
            let n = unsafe { sendmmsg(fd, self.msgs.as_mut_ptr(), self.msgs.len() as c_uint, 0) };
            if n < 0 { Err(std::io::Error::last_os_error()) } else { Ok(n as usize) }
        }
    }
}

/// Counters of `/proc/net/snmp` (this namespace's).
fn snmp() -> HashMap<String, u64> {
    let text = std::fs::read_to_string("/proc/net/snmp").unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let mut map = HashMap::new();
    for pair in lines.chunks(2) {
        let [names, values] = pair else { continue };
        let (proto, names) = names.split_once(':').unwrap();
        let values = values.split_once(':').unwrap().1;
        for (k, v) in names.split_whitespace().zip(values.split_whitespace()) {
            if let Ok(v) = v.parse::<u64>() {
                map.insert(format!("{proto}.{k}"), v);
            }
        }
    }
    map
}

/// Packets dropped by the backlog queues of all CPUs (second column of `/proc/net/softnet_stat`).
fn softnet_drops() -> u64 {
    let text = std::fs::read_to_string("/proc/net/softnet_stat").unwrap();
    text.lines().filter_map(|l| l.split_whitespace().nth(1)).map(|h| u64::from_str_radix(h, 16).unwrap()).sum()
}

struct Sender {
    socket: UdpSocket,
    batch: sys::Batch,
}

impl Sender {
    fn new() -> Sender {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket.connect(("127.0.0.1", PORT)).unwrap();
        Sender { socket, batch: sys::Batch::new(&[0x5a; PAYLOAD], BATCH) }
    }

    /// Sends for `duration`: the number of datagrams, the time it took, and ns per datagram of each `sendmmsg`.
    fn blast(&mut self, duration: Duration) -> (u64, Duration, Vec<f64>) {
        let fd = self.socket.as_raw_fd();
        let mut sent = 0u64;
        let mut per_call = Vec::with_capacity(1 << 14);
        let start = Instant::now();
        let mut last = start;
        loop {
            let n = self.batch.send(fd).unwrap_or_else(|e| panic!("sendmmsg: {e}"));
            sent += n as u64;
            let now = Instant::now();
            if n > 0 {
                per_call.push((now - last).as_nanos() as f64 / n as f64);
            }
            last = now;
            if now - start >= duration {
                return (sent, now - start, per_call);
            }
        }
    }

    /// One sample after a short warm-up, with the checks of the module documentation. Its figure is the median over
    /// the `sendmmsg` calls of ns per datagram: the machine is shared, and a call during which the scheduler ran
    /// something else is an outlier there, while it would inflate the plain mean (elapsed / datagrams, also kept).
    fn sample(&mut self, duration: Duration, label: &str) -> Value {
        self.blast(duration / 5);
        let (snmp0, drops0) = (snmp(), softnet_drops());
        let (sent, elapsed, per_call) = self.blast(duration);
        let (snmp1, drops1) = (snmp(), softnet_drops());
        let delta = |k: &str| snmp1[k] - snmp0[k];
        let (in_receives, delivered) = (delta("Ip.InReceives"), delta("Udp.InDatagrams") + delta("Udp.NoPorts") + delta("Udp.InErrors"));
        let backlog_drops = drops1 - drops0;
        if in_receives < sent || delivered > 0 || backlog_drops > 0 {
            eprintln!("dataplane: WARNING {label}: sent {sent}, IP InReceives {in_receives}, reached UDP {delivered}, backlog drops {backlog_drops}");
        }
        json!({"ns_per_packet": median(&per_call), "mean_ns_per_packet": elapsed.as_nanos() as f64 / sent as f64,
               "calls": per_call.len(), "packets": sent, "seconds": secs(elapsed),
               "ip_in_receives": in_receives, "udp_delivered": delivered, "backlog_drops": backlog_drops})
    }
}

// ---------------------------------------------------------------------------------------------------------------
// The run

fn ports() -> Vec<FirewallPort> {
    vec![FirewallPort { protocol: Protocol::Udp, port: i32::from(PORT) }]
}

/// Render plus `nft -f -`, as the agent applies a ruleset: (render time, total time).
fn render_and_load(nets: &[Ipv4Net]) -> (Duration, Duration) {
    let start = Instant::now();
    let text = render_ruleset(ENV, nets, &[], &ports());
    let rendered = start.elapsed();
    pipe_to("nft", &["-f", "-"], &text);
    (rendered, start.elapsed())
}

fn run(cfg: &Config) {
    let started = Instant::now();
    let [s0, s1, s2] = cfg.sizes;
    eprintln!("dataplane: generating random allowlists of {s0}, {s1}, {s2} prefixes");
    let lists: Vec<Vec<Ipv4Net>> = cfg.sizes.iter().zip(1u64..).map(|(&n, seed)| random_allowlist(n, 0x5eed_0000 + seed)).collect();
    let ipt_list = if s0 == IPT_RULES {
        lists[0].clone()
    } else if s1 == IPT_RULES {
        lists[1].clone()
    } else {
        random_allowlist(IPT_RULES, 0x5eed_0001)
    };
    let counts: Vec<usize> = lists.iter().map(Vec::len).collect();
    eprintln!("dataplane: after aggregation {counts:?}; iptables chain {} rules", ipt_list.len());

    let mut results = json!({
        "machine": machine(),
        "config": {"quick": cfg.quick, "sizes_drawn": cfg.sizes, "sizes_after_aggregation": counts, "iptables_rules": ipt_list.len(),
                   "rounds": cfg.reps, "sample_seconds": secs(cfg.sample), "add_element_timeout_seconds": secs(cfg.add_timeout),
                   "port": PORT, "payload_bytes": PAYLOAD, "batch": BATCH},
    });

    // 1. Per-packet cost.
    let mut sender = Sender::new();
    let ipt_text = iptables_restore_text(&ipt_list);
    let setups: Vec<String> = ["baseline".to_string(), "calibration".to_string(), "ours_0".to_string()]
        .into_iter()
        .chain(counts.iter().map(|n| format!("ours_{n}")))
        .chain([format!("iptables_nft_{}", ipt_list.len())])
        .collect();
    let mut samples: HashMap<&str, Vec<Value>> = HashMap::new();
    for round in 0..if cfg.update_only { 0 } else { cfg.reps } {
        for (i, setup) in setups.iter().enumerate() {
            reset();
            match i {
                0 => {}
                1 => pipe_to("nft", &["-f", "-"], CALIBRATION),
                2 => {
                    render_and_load(&[]);
                }
                3..=5 => {
                    render_and_load(&lists[i - 3]);
                }
                _ => pipe_to("iptables-nft-restore", &[], &ipt_text),
            }
            let s = sender.sample(cfg.sample, setup);
            eprintln!("dataplane: round {} {setup}: {:.0} ns/packet", round + 1, s["ns_per_packet"].as_f64().unwrap());
            samples.entry(setup.as_str()).or_default().push(s);
        }
    }
    reset();
    let ns = |setup: &str| -> Vec<f64> { samples[setup].iter().map(|s| s["ns_per_packet"].as_f64().unwrap()).collect() };
    if cfg.update_only {
        return run_update(cfg, &lists[2], results, started);
    }
    let base = ns("baseline");
    let mut packet = serde_json::Map::new();
    for setup in &setups {
        let v = ns(setup);
        let added: Vec<f64> = v.iter().zip(&base).map(|(x, b)| x - b).collect();
        packet.insert(
            setup.clone(),
            json!({"ns_per_packet": v, "median_ns_per_packet": median(&v),
            "added_ns_per_round": added, "median_added_ns": median(&added), "samples": samples[setup.as_str()]}),
        );
    }
    let added = |setup: &str| packet[setup]["median_added_ns"].as_f64().unwrap();
    let ipt_key = format!("iptables_nft_{}", ipt_list.len());
    let (ours_mid, ours_lo, ours_hi) = (added(&setups[4]), added(&setups[3]), added(&setups[5]));
    let t1_set_vs_chain = ours_mid / added(&ipt_key);
    let t1_growth = ours_hi / ours_lo;
    results["packet"] = json!({"setups": packet, "setup_order": setups, "ipt_key": ipt_key,
        "t1_ours_mid_over_iptables": t1_set_vs_chain, "t1_ours_mid_set": setups[4], "t1_target": 1.0 / 50.0,
        "t1_growth_largest_over_smallest": t1_growth, "t1_growth_target": 2.0});

    // 3. Render plus load of the largest set into an empty namespace vs raw nft -f vs iptables-nft-restore.
    let big = &lists[2];
    let dir = tempfile::tempdir().unwrap();
    let file_big = dir.path().join("big.nft");
    std::fs::write(&file_big, render_ruleset(ENV, big, &[], &ports())).unwrap();
    let ipt_big = iptables_restore_text(big);
    let (mut ours_load, mut ours_render, mut raw_load, mut ipt_load) = (vec![], vec![], vec![], vec![]);
    for round in 0..cfg.reps {
        reset();
        let (r, t) = render_and_load(big);
        ours_render.push(secs(r));
        ours_load.push(secs(t));
        reset();
        raw_load.push(secs(timed(Command::new("nft").arg("-f").arg(&file_big))));
        reset();
        let start = Instant::now();
        pipe_to("iptables-nft-restore", &[], &ipt_big);
        ipt_load.push(secs(start.elapsed()));
        eprintln!(
            "dataplane: round {} load of {}: render+nft {:.2} s (render {:.3} s), raw nft -f {:.2} s, iptables-nft-restore {:.2} s",
            round + 1,
            big.len(),
            ours_load[round],
            ours_render[round],
            raw_load[round],
            ipt_load[round]
        );
    }
    reset();
    let load = json!({"elements": big.len(), "render_and_nft_seconds": ours_load, "render_seconds": ours_render,
        "raw_nft_f_seconds": raw_load, "iptables_nft_restore_seconds": ipt_load,
        "median_render_and_nft": median(&ours_load), "median_render": median(&ours_render),
        "median_raw_nft_f": median(&raw_load), "median_iptables_nft_restore": median(&ipt_load),
        "t3_ratio_vs_raw": median(&ours_load) / median(&raw_load), "t3_target_vs_raw": 1.5,
        "t3_ratio_vs_iptables_nft": median(&ours_load) / median(&ipt_load), "t3_target_vs_iptables_nft": 1.0});
    results["load"] = load;

    run_update(cfg, big, results, started);
}

/// Section 2, and the end of the run.
fn run_update(cfg: &Config, big: &[Ipv4Net], mut results: Value, started: Instant) {
    let dir = tempfile::tempdir().unwrap();
    let file_big = dir.path().join("big.nft");
    std::fs::write(&file_big, render_ruleset(ENV, big, &[], &ports())).unwrap();
    // 2. Update cost with the largest set loaded.
    let host = new_host(big, 0x00ad_d000);
    let big_plus = with_host(big, host);
    let file_plus = dir.path().join("big-plus.nft");
    std::fs::write(&file_plus, render_ruleset(ENV, &big_plus, &[], &ports())).unwrap();
    render_and_load(big);
    let mut has_host = false;
    let (mut change, mut change_render, mut reload) = (vec![], vec![], vec![]);
    for round in 0..cfg.reps {
        let (r, t) = render_and_load(if has_host { big } else { &big_plus });
        has_host = !has_host;
        change.push(secs(t));
        change_render.push(secs(r));
        let file = if has_host { &file_plus } else { &file_big };
        reload.push(secs(timed(Command::new("nft").arg("-f").arg(file))));
        eprintln!(
            "dataplane: round {} update at {}: 1-CIDR change (render+replace) {:.2} s, full reload {:.2} s",
            round + 1,
            big.len(),
            change[round],
            reload[round]
        );
    }
    if has_host {
        render_and_load(big);
    }
    let table = table_name(ENV);
    results["netlink"] = netlink_updates(cfg, big, host, median(&reload));
    let element = format!("{{ {host} }}");
    let add_timeout = cfg.add_timeout;
    let add = if cfg.update_only {
        None
    } else {
        eprintln!("dataplane: nft add element of {host} into the loaded set of {} (limit {:.0} s)", big.len(), secs(add_timeout));
        let add = timed_with_limit(Command::new("nft").args(["add", "element", "inet", &table, SET_V4, &element]), add_timeout);
        eprintln!("dataplane: nft add element: {}", add.map_or(format!("> {:.0} s (killed)", secs(add_timeout)), |d| format!("{:.2} s", secs(d))));
        add
    };
    let start = Instant::now();
    reset();
    let teardown = start.elapsed();
    results["update"] = json!({"elements": big.len(), "cidr": host.to_string(),
        "change_render_and_replace_seconds": change, "change_render_seconds": change_render, "full_reload_seconds": reload,
        "median_change": median(&change), "median_change_render": median(&change_render), "median_full_reload": median(&reload),
        "t2_ratio_change_over_reload": median(&change) / median(&reload), "t2_target": 0.2,
        "add_element_seconds": add.map(secs), "add_element_timed_out": add.is_none(),
        "add_element_over_reload": add.map(|d| secs(d) / median(&reload)),
        "flush_after_add_seconds": secs(teardown)});
    results["total_seconds"] = json!(secs(started.elapsed()));

    std::fs::create_dir_all(cfg.out.parent().unwrap_or(Path::new("."))).unwrap();
    std::fs::write(&cfg.out, serde_json::to_string_pretty(&results).unwrap()).unwrap();
    print_summary(&results);
    println!("\nJSON: {}", cfg.out.display());
}

/// The agent's path for element changes (issue #22): the networks that differ between two lists, sent as one
/// nfnetlink batch with the tag's element replaced, timed from the two lists to the kernel's answer, for a 1-CIDR
/// and a 1,000-CIDR change, alternately adding and removing; and the GETSETELEM dumps it sends, counted by strace
/// attached to this process while it changes and asks for its tag.
fn netlink_updates(cfg: &Config, big: &[Ipv4Net], host: Ipv4Net, reload: f64) -> Value {
    let table = table_name(ENV);
    let ip = |nets: &[Ipv4Net]| nets.iter().map(|n| IpNet::V4(*n)).collect::<Vec<_>>();
    let mut hosts = Vec::with_capacity(1000);
    let mut with = big.to_vec();
    for seed in 0.. {
        if hosts.len() == 1000 {
            break;
        }
        let h = new_host(&with, 0x7000_0000 + seed);
        with = with_host(&with, h);
        hosts.push(h);
    }
    let (base, plus_one, plus_thousand) = (ip(big), ip(&with_host(big, host)), ip(&with));
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let link = netlink::Netlink { netns: None, timeout: Duration::from_secs(120) };
    let load_tagged = |tag: &str| {
        reset();
        pipe_to("nft", &["-f", "-"], &render(ENV, &Rules { allow_v4: big, ports: &ports(), tag: Some(tag), ..Rules::default() }));
    };
    let mut result = json!({});
    let mut tag_no = 0;
    for (key, other) in [("one", &plus_one), ("thousand", &plus_thousand)] {
        load_tagged(&format!("tag {tag_no}"));
        let mut times = Vec::new();
        let mut current = &base;
        for round in 0..2 * cfg.reps {
            let next = if round % 2 == 0 { other } else { &base };
            let (from_tag, to_tag) = (format!("tag {tag_no}"), format!("tag {}", tag_no + 1));
            let start = Instant::now();
            let changes = delta::changes(current, next, (&from_tag, &to_tag), usize::MAX).unwrap();
            rt.block_on(link.apply(&table, &changes)).unwrap();
            times.push(secs(start.elapsed()));
            eprintln!(
                "dataplane: netlink {key} change round {}: {:.4} s ({} elements)",
                round + 1,
                times[round],
                changes.iter().map(|c| c.elements.len()).sum::<usize>()
            );
            (current, tag_no) = (next, tag_no + 1);
        }
        assert!(rt.block_on(link.holds(&table, "applied", &delta::tag_element(&format!("tag {tag_no}")))).unwrap(), "the tag moved with the changes");
        result[key] = json!({"seconds": times, "median_seconds": median(&times), "ratio_over_reload": median(&times) / reload});
    }
    // GETSETELEM dumps on the path: strace attached to this process (all threads, -f for the netlink threads).
    let log = tempfile::NamedTempFile::new().unwrap();
    let strace = Command::new("strace")
        .args(["-f", "-qq", "-e", "trace=sendto,sendmsg", "-s", "64", "-o"])
        .arg(log.path())
        .args(["-p", &std::process::id().to_string()])
        .stderr(Stdio::null())
        .spawn();
    result["strace"] = match strace {
        Err(e) => json!({"error": format!("strace: {e}")}),
        Ok(mut child) => {
            std::thread::sleep(Duration::from_secs(1)); // attached
            let mut current = &base;
            for round in 0..4 {
                let next = if round % 2 == 0 { &plus_one } else { &base };
                let (from_tag, to_tag) = (format!("tag {tag_no}"), format!("tag {}", tag_no + 1));
                let changes = delta::changes(current, next, (&from_tag, &to_tag), usize::MAX).unwrap();
                rt.block_on(link.apply(&table, &changes)).unwrap();
                assert!(rt.block_on(link.holds(&table, "applied", &delta::tag_element(&to_tag))).unwrap());
                (current, tag_no) = (next, tag_no + 1);
            }
            std::thread::sleep(Duration::from_millis(500));
            let _ = Command::new("kill").args(["-INT", &child.id().to_string()]).status();
            let _ = child.wait();
            let text = std::fs::read_to_string(log.path()).unwrap_or_default();
            let count = |f: &dyn Fn(&str) -> bool| text.lines().filter(|l| f(l)).count();
            json!({
                "getsetelem_dumps": count(&|l| l.contains("NFT_MSG_GETSETELEM") && l.contains("NLM_F_DUMP")),
                "getsetelem_point_queries": count(&|l| l.contains("NFT_MSG_GETSETELEM") && !l.contains("NLM_F_DUMP")),
                "batches": count(&|l| l.contains("NFT_MSG_NEWSETELEM") || l.contains("NFT_MSG_DELSETELEM")),
                "lines": text.lines().count(),
            })
        }
    };
    result
}

fn machine() -> Value {
    let first_line = |cmd: &mut Command| output(cmd).map(|s| s.lines().next().unwrap_or("").trim().to_string()).unwrap_or_default();
    json!({
        "date_utc": jiff::Timestamp::now().to_string(),
        "kernel": std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim(),
        "cpus": std::thread::available_parallelism().map_or(0, |n| n.get()),
        "nft": first_line(Command::new("nft").arg("--version")),
        "iptables": first_line(Command::new("iptables-nft").arg("--version")),
    })
}

fn print_summary(r: &Value) {
    let f = |v: &Value| v.as_f64().unwrap();
    let met = |ok: bool| if ok { "met" } else { "NOT met" };
    if r.get("packet").is_some() {
        print_packet_summary(r);
    }
    let u = &r["update"];
    println!("\n== 2. update at {} elements (median s)", u["elements"]);
    println!("1-CIDR change, render + nft -f - replace: {:.2} (render {:.3})", f(&u["median_change"]), f(&u["median_change_render"]));
    println!("full atomic reload (nft -f file):         {:.2}", f(&u["median_full_reload"]));
    let t2 = f(&u["t2_ratio_change_over_reload"]);
    println!("T2 change / reload: {t2:.2} (target <= 0.2): {}", met(t2 <= 0.2));
    match u["add_element_seconds"].as_f64() {
        Some(a) => println!("nft add element (1 CIDR): {a:.2} s = {:.1}x the reload", a / f(&u["median_full_reload"])),
        None => println!("nft add element (1 CIDR): not run or > {} s (killed)", r["config"]["add_element_timeout_seconds"]),
    }
    let n = &r["netlink"];
    println!("\n== 2b. the agent's netlink path at {} elements (median s; issue #22 P4, P4b)", u["elements"]);
    for (label, key, target) in [("1-CIDR change", "one", 0.05), ("1,000-CIDR change", "thousand", 0.1)] {
        let ratio = f(&n[key]["ratio_over_reload"]);
        println!("{label}: {:.4} s = {ratio:.4}x the full reload (target <= {target}): {}", f(&n[key]["median_seconds"]), met(ratio <= target));
    }
    match n["strace"]["getsetelem_dumps"].as_u64() {
        Some(d) => println!(
            "GETSETELEM dumps on the path (strace): {d} (target 0): {}; point queries {}, batches {}",
            met(d == 0),
            n["strace"]["getsetelem_point_queries"],
            n["strace"]["batches"]
        ),
        None => println!("GETSETELEM dumps: not counted ({})", n["strace"]["error"]),
    }
    if r.get("load").is_some() {
        print_load_summary(r);
    }
}

fn print_packet_summary(r: &Value) {
    let f = |v: &Value| v.as_f64().unwrap();
    let met = |ok: bool| if ok { "met" } else { "NOT met" };
    let setups: Vec<String> = r["packet"]["setup_order"].as_array().unwrap().iter().map(|s| s.as_str().unwrap().to_string()).collect();
    let ipt_key = r["packet"]["ipt_key"].as_str().unwrap();
    let p = &r["packet"]["setups"];
    println!("\n== 1. per-packet cost (ns/packet, median of {} rounds; added = setup - baseline of the same round)", r["config"]["rounds"]);
    println!("{:<22} {:>12} {:>12}", "setup", "ns/packet", "added");
    for s in &setups {
        println!("{:<22} {:>12.0} {:>12.0}", s, f(&p[s.as_str()]["median_ns_per_packet"]), f(&p[s.as_str()]["median_added_ns"]));
    }
    let t1 = f(&r["packet"]["t1_ours_mid_over_iptables"]);
    let g = f(&r["packet"]["t1_growth_largest_over_smallest"]);
    println!("T1 {} / {ipt_key}: 1/{:.0} (target <= 1/50): {}", setups[4], 1.0 / t1, met((0.0..=1.0 / 50.0).contains(&t1)));
    println!("T1 {} / {}: {g:.2} (target <= 2.0): {}", setups[5], setups[3], met(g <= 2.0));
}

fn print_load_summary(r: &Value) {
    let f = |v: &Value| v.as_f64().unwrap();
    let met = |ok: bool| if ok { "met" } else { "NOT met" };
    let l = &r["load"];
    println!("\n== 3. load of {} elements into an empty namespace (median s)", l["elements"]);
    println!("render + nft -f -:     {:.2} (render {:.3})", f(&l["median_render_and_nft"]), f(&l["median_render"]));
    println!("raw nft -f file:       {:.2}", f(&l["median_raw_nft_f"]));
    println!("iptables-nft-restore:  {:.2}", f(&l["median_iptables_nft_restore"]));
    let t3 = f(&l["t3_ratio_vs_raw"]);
    let t3i = f(&l["t3_ratio_vs_iptables_nft"]);
    println!("T3 vs raw nft -f: {t3:.2} (target <= 1.5): {}", met(t3 <= 1.5));
    println!("T3 vs iptables-nft-restore: {t3i:.2} (target <= 1.0): {}", met(t3i <= 1.0));
}
