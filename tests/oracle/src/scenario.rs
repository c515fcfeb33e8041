//! What a fault test says, in its own words, about each source address it watches: from which instant the address
//! must be admitted and from which it must be refused, and when the path from the API server to the agent is down.
//! The truth of the checker comes from here, never from the code under test.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    Admit,
    Refuse,
}

/// One declaration: from `at` on, `expect`; `grace` is how long the data plane may still show the previous state.
#[derive(Debug, Clone, Copy)]
pub struct Declared {
    pub at: Instant,
    pub expect: Expect,
    pub grace: Duration,
}

#[derive(Debug, Default)]
struct State {
    subjects: BTreeMap<IpAddr, Vec<Declared>>,
    outages: Vec<(Instant, Option<Instant>)>,
}

/// The scenario of one test, shared by the test (which declares) and the checker (which reads).
#[derive(Debug, Clone)]
pub struct Scenario {
    state: Arc<Mutex<State>>,
    /// How long an admission and a revocation may take to reach the data plane.
    pub admit_within: Duration,
    pub refuse_within: Duration,
}

impl Scenario {
    pub fn new(admit_within: Duration, refuse_within: Duration) -> Scenario {
        Scenario { state: Arc::default(), admit_within, refuse_within }
    }

    /// Watches `source`, in state `expect` already (no grace: a source that must be refused from the start is an
    /// over-permit the first time it is admitted).
    pub fn watch(&self, source: &str, expect: Expect) {
        self.declare(source, expect, Duration::ZERO);
    }

    /// From now on `sources` must be admitted (within `admit_within`). Call it just before the write that admits.
    pub fn admit(&self, sources: &[&str]) {
        for s in sources {
            self.declare(s, Expect::Admit, self.admit_within);
        }
    }

    /// From now on `sources` must be refused (within `refuse_within`). Call it just before the write that revokes.
    pub fn refuse(&self, sources: &[&str]) {
        for s in sources {
            self.declare(s, Expect::Refuse, self.refuse_within);
        }
    }

    /// A fault the test causes itself (a rogue rule, say) may make `sources` wrong from now on: each must be right
    /// again, in the state already declared, within `grace`.
    pub fn disturbed(&self, sources: &[&str], grace: Duration) {
        for s in sources {
            let addr: IpAddr = s.parse().unwrap_or_else(|e| panic!("scenario: {s:?} is not an address: {e}"));
            let current = self.at(addr, Instant::now()).unwrap_or_else(|| panic!("scenario: {s} is not watched"));
            self.declare(s, current.expect, grace);
        }
    }

    fn declare(&self, source: &str, expect: Expect, grace: Duration) {
        let addr: IpAddr = source.parse().unwrap_or_else(|e| panic!("scenario: {source:?} is not an address: {e}"));
        let mut state = self.state.lock().unwrap();
        state.subjects.entry(addr).or_default().push(Declared { at: Instant::now(), expect, grace });
    }

    /// A declaration at a chosen instant, for the checker's unit tests (which cannot wait seconds).
    #[cfg(test)]
    pub(crate) fn declare_at(&self, source: IpAddr, declared: Declared) {
        self.state.lock().unwrap().subjects.entry(source).or_default().push(declared);
    }

    /// The path from the API server to the agents is down from now on (API server stopped, agent partitioned):
    /// nothing can propagate, so the clocks of pending changes pause.
    pub fn outage_begins(&self) {
        self.state.lock().unwrap().outages.push((Instant::now(), None));
    }

    pub fn outage_ends(&self) {
        if let Some(last) = self.state.lock().unwrap().outages.last_mut() {
            last.1.get_or_insert(Instant::now());
        }
    }

    pub fn sources(&self) -> Vec<IpAddr> {
        self.state.lock().unwrap().subjects.keys().copied().collect()
    }

    /// The declaration in force for `source` at `at`.
    pub fn at(&self, source: IpAddr, at: Instant) -> Option<Declared> {
        let state = self.state.lock().unwrap();
        state.subjects.get(&source)?.iter().rev().find(|d| d.at <= at).copied()
    }

    /// How much of `from..to` the path was down.
    pub fn paused(&self, from: Instant, to: Instant) -> Duration {
        let state = self.state.lock().unwrap();
        state
            .outages
            .iter()
            .map(|(a, b)| {
                let (a, b) = ((*a).max(from), b.unwrap_or(to).min(to));
                b.saturating_duration_since(a)
            })
            .sum()
    }

    /// Whether any revocation was declared (the suite requires one in every test).
    pub fn revocations(&self) -> usize {
        let state = self.state.lock().unwrap();
        let revoked = |d: &Vec<Declared>| d.windows(2).filter(|w| w[0].expect == Expect::Admit && w[1].expect == Expect::Refuse).count();
        state.subjects.values().map(revoked).sum()
    }
}
