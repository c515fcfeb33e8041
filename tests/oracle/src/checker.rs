//! The checker of the fault tests: while a test runs it samples, a few times a second, what each watched source can
//! do, and at the end compares every sample with the test's [`Scenario`].
//!
//! Layers, each judged on its own:
//! - `connect local` and `connect forward`: real TCP connects from the source, in the client namespace, to the
//!   router itself and through it to the server: the ground truth of the edge;
//! - `nft local` and `nft forward`: the router's whole ruleset, read with `nft -j` and judged by [`crate::nft`];
//! - `networkPolicy`: every NetworkPolicy of the service namespace, judged by [`crate::netpol`] for the service pods;
//! - `allowlist`: the published set, read and verified by [`crate::allowlist`].
//!
//! For each layer and source, a sample is wrong when it admits a source the scenario refuses (an over-permit) or
//! refuses one it admits (an under-permit). A wrong episode starts at the declaration in force, or at the last
//! right sample after it, and ends at the next right sample or the next declaration; outages the scenario declares
//! do not count. An episode longer than the declaration's grace is a violation.

use crate::netns::{Outcome, connect_in};
use crate::netpol::Target;
use crate::nft::{Packet, Path, Ruleset, Verdict};
use crate::scenario::{Expect, Scenario};
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const LAYERS: [&str; 6] = ["connect local", "connect forward", "nft local", "nft forward", "networkPolicy", "allowlist"];

/// Where and what the checker reads.
#[derive(Debug, Clone)]
pub struct Setup {
    pub kubeconfig: std::path::PathBuf,
    /// The namespace the sources connect from, and the router (edge node) namespace.
    pub client_netns: String,
    pub router_netns: String,
    /// The router's own addresses and the server's behind it, IPv4 and IPv6.
    pub local: [IpAddr; 2],
    pub forwarded: [IpAddr; 2],
    /// The protected TCP port on both.
    pub port: u16,
    pub service_namespace: String,
    pub service_pod: Target,
    pub allowlist_namespace: String,
    pub environment: String,
    pub public_key: [u8; 32],
    pub every: Duration,
    pub connect_timeout: Duration,
}

/// One read of a layer for one source: admitted or not, `Err` when the oracle could not judge it.
type Reading = Result<bool, String>;

/// The readings of one layer, and when its read began and ended: a change declared in between may or may not be
/// in what was read, so a reading that matches the declaration in force at either end is right.
#[derive(Debug, Clone)]
struct Read {
    from: Instant,
    to: Instant,
    readings: BTreeMap<IpAddr, Reading>,
}

#[derive(Debug, Clone)]
struct Sample {
    at: Instant,
    /// A layer is absent when it could not be read (the API server is down).
    layers: BTreeMap<&'static str, Read>,
}

/// Figures of one kind of wrong (over- or under-permit) on one layer.
#[derive(Debug, Clone, Default)]
pub struct Wrong {
    pub episodes: usize,
    pub longest: Duration,
    pub total: Duration,
    /// Episodes longer than their grace: (source, duration, grace).
    pub violations: Vec<(IpAddr, Duration, Duration)>,
}

#[derive(Debug, Clone, Default)]
pub struct LayerReport {
    pub samples: usize,
    pub over: Wrong,
    pub under: Wrong,
    pub unjudged: Vec<String>,
    pub connect_errors: usize,
}

#[derive(Debug, Clone, Default)]
pub struct Report {
    pub samples: usize,
    pub revocations: usize,
    pub layers: BTreeMap<&'static str, LayerReport>,
}

impl Report {
    pub fn violations(&self) -> usize {
        self.layers.values().map(|l| l.over.violations.len() + l.under.violations.len()).sum()
    }

    /// One line per layer, for the test's output and the table in SECURITY.md.
    pub fn summary(&self) -> String {
        let mut out = format!("{} samples, {} revocations declared", self.samples, self.revocations);
        out.push_str("\n  layer            samples  over-permit longest/total (violations)  under-permit longest/total (violations)");
        for (name, l) in &self.layers {
            out.push_str(&format!(
                "\n  {name:16} {:7}  {:.1} s / {:.1} s ({})  {:.1} s / {:.1} s ({}){}{}",
                l.samples,
                l.over.longest.as_secs_f64(),
                l.over.total.as_secs_f64(),
                l.over.violations.len(),
                l.under.longest.as_secs_f64(),
                l.under.total.as_secs_f64(),
                l.under.violations.len(),
                if l.connect_errors > 0 { format!("  connect errors {}", l.connect_errors) } else { String::new() },
                l.unjudged.first().map(|e| format!("  unjudged {} e.g. {e}", l.unjudged.len())).unwrap_or_default(),
            ));
        }
        out
    }

    /// Enough samples, at least one revocation, every layer judged, and no episode longer than its grace.
    pub fn assert_holds(&self, test: &str) {
        eprintln!("oracle, {test}: {}", self.summary());
        assert!(self.samples >= 5, "{test}: the checker took only {} samples", self.samples);
        assert!(self.revocations >= 1, "{test}: the scenario revokes nothing (issue #19: every fault test revokes)");
        for (name, l) in &self.layers {
            assert!(l.unjudged.is_empty(), "{test}: layer {name} could not be judged: {:?}", &l.unjudged[..l.unjudged.len().min(3)]);
            assert!(l.over.violations.is_empty(), "{test}: over-permits on {name} beyond the bound: {:?}\n{}", l.over.violations, self.summary());
            assert!(l.under.violations.is_empty(), "{test}: under-permits on {name} beyond the bound: {:?}\n{}", l.under.violations, self.summary());
        }
    }
}

/// A running checker.
pub struct Checker {
    scenario: Scenario,
    stop: Arc<AtomicBool>,
    samples: Arc<Mutex<Vec<Sample>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Checker {
    /// Starts sampling on a thread and runtime of its own (a test blocks its runtime while it probes).
    pub fn start(setup: Setup, scenario: Scenario) -> Checker {
        let stop = Arc::new(AtomicBool::new(false));
        let samples = Arc::new(Mutex::new(Vec::new()));
        let (stop2, samples2, scenario2) = (stop.clone(), samples.clone(), scenario.clone());
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            runtime.block_on(async move {
                let kubeconfig = kube::config::Kubeconfig::read_from(&setup.kubeconfig).unwrap();
                let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await.unwrap();
                let mut config = config;
                config.read_timeout = Some(Duration::from_secs(2));
                config.connect_timeout = Some(Duration::from_secs(1));
                let client = kube::Client::try_from(config).unwrap();
                while !stop2.load(Ordering::SeqCst) {
                    let started = Instant::now();
                    let sample = take_sample(&client, &setup, &scenario2.sources()).await;
                    samples2.lock().unwrap().push(sample);
                    tokio::time::sleep(setup.every.saturating_sub(started.elapsed())).await;
                }
            });
        });
        Checker { scenario, stop, samples, thread: Some(thread) }
    }

    pub fn finish(mut self) -> Report {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            thread.join().unwrap();
        }
        let samples = self.samples.lock().unwrap().clone();
        evaluate(&samples, &self.scenario)
    }
}

/// A test that fails before `finish` drops its checker: the sampling thread stops too (the namespaces it probes
/// are about to go).
impl Drop for Checker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

async fn take_sample(client: &kube::Client, setup: &Setup, sources: &[IpAddr]) -> Sample {
    let at = Instant::now();
    let mut layers: BTreeMap<&'static str, Read> = BTreeMap::new();
    let read = |from: Instant, readings: BTreeMap<IpAddr, Reading>| Read { from, to: Instant::now(), readings };
    let mut connects: BTreeMap<&'static str, BTreeMap<IpAddr, Reading>> = BTreeMap::new();
    // Real connects first, all at once, each on its own thread.
    let probes: Vec<(&'static str, IpAddr, SocketAddr)> = sources
        .iter()
        .flat_map(|s| {
            let family = usize::from(s.is_ipv6());
            [
                ("connect local", *s, SocketAddr::new(setup.local[family], setup.port)),
                ("connect forward", *s, SocketAddr::new(setup.forwarded[family], setup.port)),
            ]
        })
        .collect();
    let outcomes: Vec<Outcome> = std::thread::scope(|scope| {
        let handles: Vec<_> =
            probes.iter().map(|(_, src, dst)| scope.spawn(move || connect_in(&setup.client_netns, *src, *dst, setup.connect_timeout))).collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for ((layer, src, _), outcome) in probes.iter().zip(outcomes) {
        let reading = match outcome {
            Outcome::Connected => Ok(true),
            Outcome::TimedOut => Ok(false),
            Outcome::Error(e) => Err(format!("connect error: {e}")),
        };
        connects.entry(layer).or_default().insert(*src, reading);
    }
    for (layer, readings) in connects {
        layers.insert(layer, read(at, readings));
    }
    let nft_from = Instant::now();
    // The router's whole ruleset.
    let listing = tokio::process::Command::new("ip").args(["netns", "exec", &setup.router_netns, "nft", "-j", "list", "ruleset"]).output().await;
    let ruleset = match listing {
        Ok(out) if out.status.success() => Ruleset::parse(&String::from_utf8_lossy(&out.stdout)),
        Ok(out) => Err(format!("nft -j list ruleset: {}", String::from_utf8_lossy(&out.stderr))),
        Err(e) => Err(format!("cannot run nft: {e}")),
    };
    for (layer, path, dsts) in [("nft local", Path::Local, setup.local), ("nft forward", Path::Forwarded, setup.forwarded)] {
        let readings = sources.iter().map(|s| {
            let packet = Packet { source: *s, destination: dsts[usize::from(s.is_ipv6())], port: setup.port, path };
            let verdict = ruleset.as_ref().map_err(Clone::clone).and_then(|r| r.verdict(&packet));
            (*s, verdict.map(|v| v == Verdict::Admitted))
        });
        layers.insert(layer, read(nft_from, readings.collect()));
    }
    // The API server's layers; absent when it cannot be read.
    let policies: kube::Api<k8s_openapi::api::networking::v1::NetworkPolicy> = kube::Api::namespaced(client.clone(), &setup.service_namespace);
    let from = Instant::now();
    if let Ok(list) = policies.list(&Default::default()).await {
        let readings = sources.iter().map(|s| (*s, crate::netpol::admits(&list.items, &setup.service_pod, *s)));
        layers.insert("networkPolicy", read(from, readings.collect()));
    }
    let from = Instant::now();
    // Not there yet, being rewritten, or unreadable: a reader keeps what it had, and so does this layer.
    if let Ok(set) = crate::allowlist::read(client, &setup.allowlist_namespace, &setup.environment, &setup.public_key).await {
        layers.insert("allowlist", read(from, sources.iter().map(|s| (*s, Ok(set.admits(*s, setup.port)))).collect()));
    }
    Sample { at, layers }
}

fn evaluate(samples: &[Sample], scenario: &Scenario) -> Report {
    let mut report = Report { samples: samples.len(), revocations: scenario.revocations(), ..Default::default() };
    for layer in LAYERS {
        let mut lr = LayerReport::default();
        for source in scenario.sources() {
            // (start, kind is over-permit, grace) of the open wrong episode.
            let mut open: Option<(Instant, bool, Duration)> = None;
            let mut last_right: Option<Instant> = None;
            let close = |lr: &mut LayerReport, (start, over, grace): (Instant, bool, Duration), end: Instant| {
                let took = end.saturating_duration_since(start).saturating_sub(scenario.paused(start, end));
                let w = if over { &mut lr.over } else { &mut lr.under };
                w.episodes += 1;
                w.longest = w.longest.max(took);
                w.total += took;
                if took > grace {
                    w.violations.push((source, took, grace));
                }
            };
            for s in samples {
                let Some(read) = s.layers.get(layer) else { continue };
                let Some(reading) = read.readings.get(&source) else { continue };
                let Some(declared) = scenario.at(source, read.to) else { continue };
                let before = scenario.at(source, read.from).map(|d| d.expect);
                lr.samples += 1;
                let admitted = match reading {
                    Ok(a) => *a,
                    Err(e) if e.starts_with("connect error") => {
                        lr.connect_errors += 1;
                        false
                    }
                    Err(e) => {
                        lr.unjudged.push(format!("{source}: {e}"));
                        continue;
                    }
                };
                let right = admitted == (declared.expect == Expect::Admit) || before.is_some_and(|b| admitted == (b == Expect::Admit));
                if right {
                    if let Some(episode) = open.take() {
                        close(&mut lr, episode, read.to);
                    }
                    last_right = Some(read.to);
                } else {
                    // A declaration made while an episode is open (a second disturbance, a revocation) ends the
                    // episode's claim there: the old one is judged up to it against its own grace, and the new
                    // one starts its own clock, as if a right sample had come in between (CI under load saw two
                    // rogue changes 0.1 s apart merged into one episode judged by the first one's grace).
                    if let Some(episode) = open.take_if(|(start, _, _)| *start < declared.at) {
                        close(&mut lr, episode, declared.at);
                    }
                    if open.is_none() {
                        let start = last_right.map_or(declared.at, |r| r.max(declared.at));
                        open = Some((start, admitted, declared.grace));
                    }
                }
            }
            if let (Some(episode), Some(end)) = (open, samples.last().map(|s| s.layers.values().map(|r| r.to).max().unwrap_or(s.at))) {
                close(&mut lr, episode, end);
            }
        }
        lr.unjudged.truncate(10);
        report.layers.insert(layer, lr);
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::Declared;

    /// A sample at `t` of one layer reading `admitted` for `source`.
    fn sample(t: Instant, source: IpAddr, admitted: bool) -> Sample {
        let readings = BTreeMap::from([(source, Ok(admitted))]);
        Sample { at: t, layers: BTreeMap::from([("connect local", Read { from: t, to: t, readings })]) }
    }

    #[test]
    fn a_second_disturbance_declared_before_any_right_sample_starts_its_own_episode() {
        // A source refused from the start is disturbed twice, 4 s each (grace 5 s), the second declared right after
        // the first was corrected, before the checker took a right sample: two episodes of 4 s, no violation.
        let scenario = Scenario::new(Duration::from_secs(5), Duration::from_secs(5));
        let source: IpAddr = "198.51.100.20".parse().unwrap();
        scenario.watch("198.51.100.20", Expect::Refuse);
        let t0 = Instant::now();
        std::thread::sleep(Duration::from_millis(5));
        scenario.disturbed(&["198.51.100.20"], Duration::from_secs(5));
        let first = scenario.at(source, Instant::now()).unwrap().at;
        // The second declaration, 4 s of samples later in the scenario's own terms.
        let second = first + Duration::from_secs(4);
        scenario.declare_at(source, Declared { at: second, expect: Expect::Refuse, grace: Duration::from_secs(5) });
        let at = |secs: f64| first + Duration::from_secs_f64(secs);
        let samples = vec![
            sample(t0 + Duration::from_millis(1), source, false),
            sample(at(0.5), source, true),
            sample(at(3.9), source, true),
            sample(at(4.5), source, true),
            sample(at(7.9), source, true),
            sample(at(8.2), source, false),
        ];
        let report = evaluate(&samples, &scenario);
        let over = &report.layers["connect local"].over;
        assert_eq!(over.episodes, 2, "{}", report.summary());
        assert!(over.violations.is_empty(), "{}", report.summary());
        assert!(over.longest <= Duration::from_secs_f64(4.3), "{}", report.summary());
    }
}
