//! The API server's storage going back in time: etcd restored from a snapshot taken before a revocation brings the
//! revoked approval back, and the controller, planning from what the API server shows, would publish it again with
//! a newer serial that every agent accepts. The revocation would come back silently.
//!
//! What gives it away is the published allowlist: the restore puts back an index older than the one this replica
//! published (or than the serial an agent reports enforcing), which `published::Guard` finds as `replayed`. From
//! then on the environment is **held**: it publishes at most what this replica published last (the plan
//! intersected with it), so a decision the restore brought back reaches neither the edge nor the NetworkPolicies,
//! while revocations still do. Without a memory of what it published (a controller started after the restore) it
//! publishes nothing new at all. A person ends the hold once every decision made since the snapshot is in place
//! again, by annotating the AccessEnvironment with [`ACCEPT_ROLLBACK_ANNOTATION`] = the newer serial the message
//! names. SECURITY.md states what this covers and what it does not.

use super::published::Tampering;
use crate::api::AccessEnvironment;
use ipnet::IpNet;
use std::collections::BTreeMap;

/// The reason shown (condition `AllowlistIntact`) while an environment is held after a rollback.
pub const HELD: &str = "held-after-rollback";

/// Annotation on the AccessEnvironment that ends a hold after a rollback: its value is the newer serial.
pub const ACCEPT_ROLLBACK_ANNOTATION: &str = "access.jpki.dev/accept-rollback";

/// An environment held after its published set went back in time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held {
    /// The serial published before the rollback (what the acceptance names).
    pub newer_serial: i64,
    /// The most it may publish: what this replica last published; None: nothing is written at all.
    pub cap: Option<Vec<IpNet>>,
    /// What was found, for the status and logs.
    pub message: String,
}

#[derive(Default)]
pub struct Rollbacks {
    held: BTreeMap<String, Held>,
    /// The newer serial a person accepted, per environment: a replay at or below it is the one accepted.
    accepted: BTreeMap<String, i64>,
}

impl Rollbacks {
    /// Ends the holds a person confirmed; returns the environments released.
    pub fn accept(&mut self, environments: &[&AccessEnvironment]) -> Vec<String> {
        let mut released = Vec::new();
        for env in environments {
            let name = env.metadata.name.clone().unwrap_or_default();
            let Some(held) = self.held.get(&name) else { continue };
            let confirmed = env.metadata.annotations.as_ref().and_then(|a| a.get(ACCEPT_ROLLBACK_ANNOTATION));
            if confirmed.is_some_and(|v| v.trim() == held.newer_serial.to_string()) {
                self.accepted.insert(name.clone(), held.newer_serial);
                self.held.remove(&name);
                released.push(name);
            }
        }
        released
    }

    /// A finding of the tamper guard; true when it starts a hold (`last_published`: what this replica last wrote).
    pub fn found(&mut self, t: &Tampering, last_published: Option<&Vec<IpNet>>) -> bool {
        let Some(newer_serial) = t.newer_serial else { return false };
        if self.held.contains_key(&t.environment) || self.accepted.get(&t.environment).is_some_and(|a| *a >= newer_serial) {
            return false;
        }
        let message = format!(
            "{} Held: nothing is published beyond what was published before. Once every decision made since is in place again \
             (revocations first), annotate AccessEnvironment {} with {ACCEPT_ROLLBACK_ANNOTATION}={newer_serial}",
            t.message, t.environment
        );
        self.held.insert(t.environment.clone(), Held { newer_serial, cap: last_published.cloned(), message });
        true
    }

    /// The caps of the held environments that have one (the planner's `caps`).
    pub fn caps(&self) -> BTreeMap<String, Vec<IpNet>> {
        self.held.iter().filter_map(|(name, h)| Some((name.clone(), h.cap.clone()?))).collect()
    }

    /// Held with no cap: nothing of the environment is written.
    pub fn frozen(&self, environment: &str) -> bool {
        self.held.get(environment).is_some_and(|h| h.cap.is_none())
    }

    pub fn held(&self) -> &BTreeMap<String, Held> {
        &self.held
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn replayed(newer: i64) -> Tampering {
        Tampering { environment: "production".into(), reason: super::super::published::REPLAYED, message: "older".into(), newer_serial: Some(newer) }
    }

    fn env(annotation: Option<&str>) -> AccessEnvironment {
        let mut e: AccessEnvironment = serde_json::from_value(serde_json::json!({
            "apiVersion": "access.jpki.dev/v1alpha1", "kind": "AccessEnvironment", "metadata": {"name": "production"},
            "spec": {"environment": "Production", "serviceNamespace": "jpki-production", "podSelector": {}, "endpoints": []}
        }))
        .unwrap();
        if let Some(a) = annotation {
            e.metadata.annotations = Some([(ACCEPT_ROLLBACK_ANNOTATION.to_string(), a.to_string())].into());
        }
        e
    }

    #[test]
    fn a_replay_holds_the_environment_at_its_last_set_until_a_person_names_the_newer_serial() {
        let mut r = Rollbacks::default();
        let last: Vec<IpNet> = vec!["192.0.2.0/24".parse().unwrap()];
        assert!(r.found(&replayed(7), Some(&last)));
        assert!(!r.found(&replayed(7), Some(&last)), "held once");
        assert_eq!(r.caps()["production"], last);
        assert!(r.held()["production"].message.contains(&format!("{ACCEPT_ROLLBACK_ANNOTATION}=7")));
        assert!(r.accept(&[&env(Some("6"))]).is_empty(), "another serial does not release");
        assert!(r.accept(&[&env(None)]).is_empty());
        assert_eq!(r.accept(&[&env(Some("7"))]), ["production"]);
        assert!(r.caps().is_empty());
        assert!(!r.found(&replayed(7), Some(&last)), "the accepted replay is not held again");
        assert!(r.found(&replayed(9), None), "a later one is");
        assert!(r.frozen("production"), "with no memory of the last set: frozen");
    }

    #[test]
    fn other_tampering_holds_nothing() {
        let mut r = Rollbacks::default();
        let mut t = replayed(3);
        t.newer_serial = None;
        assert!(!r.found(&t, None));
        assert!(r.held().is_empty());
    }
}
