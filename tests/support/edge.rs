//! A firewall agent process (`jpki-access agent`) applying to a test topology's router namespace, for
//! tests/agent.rs and tests/faults.rs.
#![allow(dead_code, clippy::unwrap_used, clippy::panic)]

use super::netns::{Probe, Topology};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

/// A running agent; stopped with SIGTERM (rules stay) when dropped.
pub struct Agent {
    pub child: Child,
    pub log: PathBuf,
}

impl Agent {
    /// An agent of the production environment (allowlist namespace jpki-system) applying in `router`; resync every
    /// 5 s; `extra` are added to its arguments.
    pub fn start(kubeconfig: &Path, router: &str, node: &str, extra: &[&str]) -> Agent {
        let log = std::env::temp_dir().join(format!("jpki-agent-{}-{node}.log", std::process::id()));
        let file = std::fs::OpenOptions::new().create(true).append(true).open(&log).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_jpki-access"))
            .args(["agent", "--environment", "production", "--namespace", "jpki-system", "--node", node, "--netns", router, "--resync-seconds", "5"])
            .args(extra)
            .env("KUBECONFIG", kubeconfig)
            .env("RUST_LOG", "warn,jpki_access=info")
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .unwrap();
        Agent { child, log }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// How many times the agent replaced the table.
    pub fn applies(&self) -> usize {
        self.log().lines().filter(|l| l.contains(": applied digest=")).count()
    }

    /// SIGKILL: no shutdown path at all.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        std::mem::forget(self);
    }

    /// Whether the process is still running (a process that exited is a zombie until reaped; ask /proc, since
    /// `Child::try_wait` needs `&mut`).
    pub fn running(&self) -> bool {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).unwrap_or_default();
        let state = stat.rsplit(')').next().and_then(|s| s.split_whitespace().next()).unwrap_or("Z");
        state != "Z"
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let _ = self.child.wait();
    }
}

/// Polls the probes (short timeout) until all outcomes match; returns how long it took.
pub fn wait_for(topo: &Topology, what: &str, probes: &[Probe], limit: Duration) -> Duration {
    let started = Instant::now();
    loop {
        let outcomes = topo.run_probes(probes, Duration::from_millis(300));
        if probes.iter().zip(&outcomes).all(|(p, o)| p.expect == *o) {
            return started.elapsed();
        }
        assert!(started.elapsed() < limit, "{what}: not within {limit:?}: {outcomes:?}\n{}", topo.list(&["ruleset"]));
    }
}
